//! The target's statistics: lock-free counters the data path bumps, read
//! by the Prometheus endpoint ([`crate::metrics`]) and the SNMP agent.
//!
//! Three levels, each a plain struct of relaxed atomics:
//!
//! - [`LuStats`], one per logical unit (held by [`crate::scsi::LogicalUnit`]):
//!   commands by type, bytes read and written, errors by sense key, blocks
//!   unmapped, commands executing, and a latency histogram
//!   ([`LatencyHistogram`], fixed buckets fit for Prometheus);
//! - [`ConnStats`], one per connection in full feature phase (a session may
//!   have several, with the same TSIH and their own CIDs): who logged in,
//!   ISID/TSIH/CID, digests,
//!   login time, and PDUs, bytes, digest errors, Rejects and NOP timeouts;
//! - [`TargetStats`], one per process ([`crate::server::Target::stats`]):
//!   login outcomes by reason, logouts, the live connections, and the
//!   counters of connections already closed (so target totals never go
//!   down when a connection ends).
//!
//! Updating a counter is one `fetch_add(Relaxed)` on a cache line the
//! connection's own task mostly owns; registering a connection takes a
//! mutex, but only at login and at close, never per command.
//!
//! Statistics can be turned off ([`crate::server::Target::set_statistics`],
//! `iesp-target --statistics off`): then the data path does one relaxed
//! load of a flag per counter site ([`LuStats::enabled`],
//! [`ConnStats::counting`]) and bumps nothing. Login outcomes are still
//! counted (once per login, never per command) and connections still
//! register, so the endpoints keep listing who is logged in.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iesp_proto::pdu::LoginStatus;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in nanoseconds (10 µs to 10 s; a
/// last, unbounded bucket takes the rest).
pub const LATENCY_BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram of fixed buckets: one atomic add per bucket hit,
/// plus the sum. Buckets are stored per interval; the count is their sum,
/// added up when read.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        self.observe_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    #[inline]
    pub fn observe_ns(&self, ns: u64) {
        let i = LATENCY_BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far. Read bucket by bucket while commands complete,
    /// it may lag the sum by the commands completing meanwhile.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed))
    }

    /// `(upper bound in seconds, observations in this bucket only)`, the
    /// last bound `+Inf` (prometheus-client's encoder makes them cumulative).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            let acc = b.load(Ordering::Relaxed);
            let bound = LATENCY_BOUNDS_NS
                .get(i)
                .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
            out.push((bound, acc));
        }
        out
    }
}

/// What kind of command a CDB is, for the per-LU command counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Read,
    Write,
    Unmap,
    SyncCache,
    Other,
}

impl CommandKind {
    pub const ALL: [CommandKind; 5] = [
        CommandKind::Read,
        CommandKind::Write,
        CommandKind::Unmap,
        CommandKind::SyncCache,
        CommandKind::Other,
    ];

    /// The kind of the command whose operation code is `opcode`.
    pub fn of(opcode: u8) -> CommandKind {
        match opcode {
            0x08 | 0x28 | 0xa8 | 0x88 => CommandKind::Read,
            // WRITE(6/10/12/16), WRITE AND VERIFY(10/16), WRITE SAME(10/16),
            // COMPARE AND WRITE.
            0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0x8e | 0x41 | 0x93 | 0x89 => CommandKind::Write,
            0x42 => CommandKind::Unmap,
            0x35 | 0x91 => CommandKind::SyncCache,
            _ => CommandKind::Other,
        }
    }

    /// The label value: `read`, `write`, `unmap`, `sync_cache`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Read => "read",
            CommandKind::Write => "write",
            CommandKind::Unmap => "unmap",
            CommandKind::SyncCache => "sync_cache",
            CommandKind::Other => "other",
        }
    }
}

/// The names of the sixteen sense keys (SPC-4 Table 49), for labels.
pub const SENSE_KEY_NAMES: [&str; 16] = [
    "no_sense",
    "recovered_error",
    "not_ready",
    "medium_error",
    "hardware_error",
    "illegal_request",
    "unit_attention",
    "data_protect",
    "blank_check",
    "vendor_specific",
    "copy_aborted",
    "aborted_command",
    "reserved_0c",
    "volume_overflow",
    "miscompare",
    "completed",
];

/// CLOCK_MONOTONIC in nanoseconds, the latency clock: one clock read
/// (rustix's vDSO call) and a multiply-add. `Instant::elapsed` reads the
/// same clock, but its checked `Duration` arithmetic costs about as much
/// again as the read (the `stats_instructions` bench counts both).
#[inline]
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// When a command started executing, from [`LuStats::start`].
#[derive(Clone, Copy, Debug)]
pub struct Started(u64);

/// Counters of one logical unit.
#[derive(Debug, Default)]
pub struct LuStats {
    /// Commands completed, by [`CommandKind`] (index = position in
    /// [`CommandKind::ALL`]).
    pub commands: [Counter; 5],
    /// Data-In bytes of READ commands that completed with GOOD status.
    pub read_bytes: Counter,
    /// Data-Out bytes of WRITE commands that completed with GOOD status.
    pub written_bytes: Counter,
    /// CHECK CONDITIONs by sense key.
    pub errors_by_sense_key: [Counter; 16],
    /// Other non-GOOD statuses (RESERVATION CONFLICT, BUSY, ...).
    pub other_status: Counter,
    /// Blocks in the descriptors of UNMAP commands that succeeded.
    pub unmapped_blocks: Counter,
    /// Commands executing right now.
    pub in_flight: AtomicU64,
    /// Time from the start of execution (all data in) to completion.
    pub latency: LatencyHistogram,
    /// Set to stop counting (the bench's "off" side).
    disabled: AtomicBool,
}

impl LuStats {
    /// Whether commands are counted (the default).
    #[inline]
    pub fn enabled(&self) -> bool {
        !self.disabled.load(Ordering::Relaxed)
    }

    /// Turns counting on or off.
    pub fn set_enabled(&self, on: bool) {
        self.disabled.store(!on, Ordering::Relaxed);
    }

    /// A command starts executing: returns the clock to give [`finish`](Self::finish).
    #[inline]
    pub fn start(&self) -> Started {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Started(monotonic_ns())
    }

    /// A command finished: `cdb` as received, `data_out` its write data,
    /// `data_in` how many bytes of Data-In it produced for the initiator,
    /// `status` the SCSI status and `sense` the encoded sense data.
    #[inline]
    pub fn finish(
        &self,
        started: Started,
        cdb: &[u8],
        data_out: &[u8],
        data_in: usize,
        status: u8,
        sense: Option<&[u8]>,
    ) {
        self.latency
            .observe_ns(monotonic_ns().saturating_sub(started.0));
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let kind = CommandKind::of(cdb.first().copied().unwrap_or(0xff));
        self.commands[kind as usize].inc();
        if status == 0 && sense.is_none() {
            match kind {
                CommandKind::Read => self.read_bytes.add(data_in as u64),
                CommandKind::Write => self.written_bytes.add(data_out.len() as u64),
                CommandKind::Unmap => self.unmapped_blocks.add(unmap_blocks(data_out)),
                _ => {}
            }
        } else if let Some(key) = sense.and_then(sense_key) {
            self.errors_by_sense_key[usize::from(key)].inc();
        } else if status != 0 {
            self.other_status.inc();
        }
    }

    pub fn commands(&self, kind: CommandKind) -> u64 {
        self.commands[kind as usize].get()
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// CHECK CONDITIONs of every sense key, and other bad statuses.
    pub fn errors(&self) -> u64 {
        self.errors_by_sense_key
            .iter()
            .map(Counter::get)
            .sum::<u64>()
            + self.other_status.get()
    }
}

/// The sense key of encoded sense data, fixed (70h/71h) or descriptor
/// (72h/73h) format.
pub fn sense_key(sense: &[u8]) -> Option<u8> {
    match sense.first()? & 0x7f {
        0x70 | 0x71 => sense.get(2).map(|b| b & 0x0f),
        0x72 | 0x73 => sense.get(1).map(|b| b & 0x0f),
        _ => None,
    }
}

/// Blocks named by an UNMAP parameter list (SBC-4 §5.30.2): 8 bytes of
/// header, then 16-byte descriptors whose bytes 8..12 are the block count.
pub fn unmap_blocks(params: &[u8]) -> u64 {
    let Some(len) = params.get(2..4) else {
        return 0;
    };
    let descriptors = usize::from(u16::from_be_bytes([len[0], len[1]]));
    params
        .get(8..8 + descriptors.min(params.len().saturating_sub(8)))
        .unwrap_or_default()
        .chunks_exact(16)
        .map(|d| u64::from(u32::from_be_bytes([d[8], d[9], d[10], d[11]])))
        .sum()
}

/// The counters of one connection that add up into the target's totals.
#[derive(Debug, Default)]
pub struct ConnCounters {
    pub pdus_in: Counter,
    pub pdus_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub header_digest_errors: Counter,
    pub data_digest_errors: Counter,
    /// Reject PDUs this target sent.
    pub rejects: Counter,
    /// Connections dropped because a NOP-In ping went unanswered.
    pub nop_timeouts: Counter,
    /// SCSI Command PDUs received.
    pub commands: Counter,
}

impl ConnCounters {
    fn add_from(&self, o: &ConnCounters) {
        self.pdus_in.add(o.pdus_in.get());
        self.pdus_out.add(o.pdus_out.get());
        self.bytes_in.add(o.bytes_in.get());
        self.bytes_out.add(o.bytes_out.get());
        self.header_digest_errors.add(o.header_digest_errors.get());
        self.data_digest_errors.add(o.data_digest_errors.get());
        self.rejects.add(o.rejects.get());
        self.nop_timeouts.add(o.nop_timeouts.get());
        self.commands.add(o.commands.get());
    }
}

/// Who a connection is: fixed at login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnInfo {
    pub initiator: String,
    pub target: String,
    /// ISID as 12 hex digits.
    pub isid: String,
    pub tsih: u16,
    pub cid: u16,
    pub discovery: bool,
    pub header_digest: bool,
    pub data_digest: bool,
    pub local: String,
    pub peer: String,
    /// MaxRecvDataSegmentLength this target declared (the most it receives
    /// in one PDU).
    pub max_recv_data_segment: u32,
    /// MaxRecvDataSegmentLength the initiator declared (the most this
    /// target sends in one PDU).
    pub max_xmit_data_segment: u32,
}

/// One connection in full feature phase.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub info: ConnInfo,
    /// Seconds since the Unix epoch when the login completed.
    pub login_time: u64,
    /// When the login completed, as [`TargetStats::uptime`] then.
    pub login_uptime: Duration,
    /// Read through [`counting`](Self::counting), which honours the
    /// on/off switch.
    counters: ConnCounters,
    /// Set while statistics are off; next to the counters, so checking it
    /// touches the cache line the bump would.
    disabled: AtomicBool,
}

impl ConnStats {
    /// The counters to bump, or `None` while statistics are off: one
    /// relaxed load. Call sites read `if let Some(c) = s.counting() {…}`.
    #[inline]
    pub fn counting(&self) -> Option<&ConnCounters> {
        if self.disabled.load(Ordering::Relaxed) {
            None
        } else {
            Some(&self.counters)
        }
    }

    /// The counters, for reading (the endpoints).
    pub fn counters(&self) -> &ConnCounters {
        &self.counters
    }

    fn set_enabled(&self, on: bool) {
        self.disabled.store(!on, Ordering::Relaxed);
    }
}

/// Login outcomes (RFC 4544 iscsiTgtLoginStats).
#[derive(Debug, Default)]
pub struct LoginStats {
    pub accepts: Counter,
    pub authentication_failures: Counter,
    pub authorization_failures: Counter,
    pub negotiation_failures: Counter,
    pub other_failures: Counter,
    pub logouts_normal: Counter,
    pub logouts_other: Counter,
    /// The most recent refused login (RFC 4544 iscsiTargetAttributesEntry).
    last_failure: Mutex<Option<LastFailure>>,
}

/// The most recent refused login: when, why, and from whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastFailure {
    pub at: Instant,
    pub reason: LoginFailure,
    /// The InitiatorName the initiator declared, empty when it declared none.
    pub initiator: String,
    pub peer: Option<SocketAddr>,
}

/// Why a login failed, from its Login Response status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginFailure {
    Authentication,
    Authorization,
    Negotiation,
    Other,
}

impl LoginFailure {
    pub fn of(status: LoginStatus) -> LoginFailure {
        match status {
            LoginStatus::AUTHENTICATION_FAILURE => LoginFailure::Authentication,
            LoginStatus::AUTHORIZATION_FAILURE => LoginFailure::Authorization,
            LoginStatus::INITIATOR_ERROR
            | LoginStatus::UNSUPPORTED_VERSION
            | LoginStatus::MISSING_PARAMETER
            | LoginStatus::SESSION_TYPE_NOT_SUPPORTED => LoginFailure::Negotiation,
            _ => LoginFailure::Other,
        }
    }
}

impl LoginStats {
    /// A Login Response left with `status`: counts the failures.
    pub fn responded(&self, status: LoginStatus) {
        if status == LoginStatus::SUCCESS {
            return;
        }
        match LoginFailure::of(status) {
            LoginFailure::Authentication => self.authentication_failures.inc(),
            LoginFailure::Authorization => self.authorization_failures.inc(),
            LoginFailure::Negotiation => self.negotiation_failures.inc(),
            LoginFailure::Other => self.other_failures.inc(),
        }
    }

    /// A Login Response left with `status` for `initiator` at `peer`:
    /// counts a failure as [`LoginStats::responded`] does, and remembers it
    /// as the most recent one.
    pub fn responded_to(&self, status: LoginStatus, initiator: &str, peer: Option<SocketAddr>) {
        self.responded(status);
        if status != LoginStatus::SUCCESS {
            *lock(&self.last_failure) = Some(LastFailure {
                at: Instant::now(),
                reason: LoginFailure::of(status),
                initiator: initiator.to_owned(),
                peer,
            });
        }
    }

    /// The most recent refused login, if any.
    pub fn last_failure(&self) -> Option<LastFailure> {
        lock(&self.last_failure).clone()
    }

    /// A connection ended: by a Logout, or otherwise.
    pub fn logged_out(&self, normal: bool) {
        if normal {
            self.logouts_normal.inc();
        } else {
            self.logouts_other.inc();
        }
    }

    pub fn failures(&self) -> u64 {
        self.authentication_failures.get()
            + self.authorization_failures.get()
            + self.negotiation_failures.get()
            + self.other_failures.get()
    }
}

/// When the statistics started: the origin of [`TargetStats::uptime`].
#[derive(Debug)]
pub struct Origin(pub Instant);

impl Default for Origin {
    fn default() -> Origin {
        Origin(Instant::now())
    }
}

/// The process-wide statistics.
#[derive(Debug, Default)]
pub struct TargetStats {
    pub login: LoginStats,
    /// When these statistics began (the SNMP agent's sysUpTime 0).
    pub origin: Origin,
    /// The last time counting was turned on or off: the per-connection
    /// and per-LU counters missed what happened while it was off.
    toggled: Mutex<Option<Instant>>,
    /// Counters of connections that have closed.
    closed: ConnCounters,
    live: Mutex<Vec<Weak<ConnStats>>>,
    /// When the target started, seconds since the Unix epoch.
    pub started: u64,
    /// Set while statistics are off: new connections start off too.
    disabled: AtomicBool,
    /// The portals [`crate::server::serve`] listens on now, in start order.
    portals: Mutex<Vec<SocketAddr>>,
}

/// A portal being served; dropping it removes it from
/// [`TargetStats::portals`].
pub struct PortalRegistration {
    target: Arc<TargetStats>,
    addr: SocketAddr,
}

impl Drop for PortalRegistration {
    fn drop(&mut self) {
        let mut p = lock(&self.target.portals);
        if let Some(i) = p.iter().position(|a| *a == self.addr) {
            p.remove(i);
        }
    }
}

/// A live connection's registration; dropping it adds the connection's
/// counters to the closed totals.
pub struct ConnRegistration {
    target: Arc<TargetStats>,
    pub stats: Arc<ConnStats>,
}

impl Drop for ConnRegistration {
    fn drop(&mut self) {
        let mut live = lock(&self.target.live);
        live.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), &*self.stats));
        self.target.closed.add_from(&self.stats.counters);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // One push or retain per critical section: a poisoned lock is still
    // consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TargetStats {
    pub fn new() -> TargetStats {
        TargetStats {
            started: unix_now(),
            ..TargetStats::default()
        }
    }

    /// Turns the per-connection counters of the live connections, and of
    /// those logging in later, on or off.
    pub fn set_enabled(&self, on: bool) {
        let live = lock(&self.live);
        if self.disabled.swap(!on, Ordering::Relaxed) == on {
            *lock(&self.toggled) = Some(Instant::now());
        }
        for c in live.iter().filter_map(Weak::upgrade) {
            c.set_enabled(on);
        }
    }

    /// Time since these statistics began.
    pub fn uptime(&self) -> Duration {
        self.origin.0.elapsed()
    }

    /// `at` as time since these statistics began.
    pub fn since_origin(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin.0)
    }

    /// When counting was last turned on or off, as time since the
    /// statistics began; `None` if it never changed.
    pub fn last_toggle(&self) -> Option<Duration> {
        lock(&self.toggled).map(|at| self.since_origin(at))
    }

    /// Whether per-connection counters are on (the default).
    pub fn enabled(&self) -> bool {
        !self.disabled.load(Ordering::Relaxed)
    }

    /// A login completed: counts it and registers the connection.
    pub fn connection_up(self: &Arc<Self>, info: ConnInfo) -> ConnRegistration {
        self.login.accepts.inc();
        let stats = Arc::new(ConnStats {
            info,
            login_time: unix_now(),
            login_uptime: self.uptime(),
            counters: ConnCounters::default(),
            disabled: AtomicBool::new(false),
        });
        // Under the lock, so a concurrent `set_enabled` cannot miss it.
        let mut live = lock(&self.live);
        stats.set_enabled(self.enabled());
        live.push(Arc::downgrade(&stats));
        drop(live);
        ConnRegistration {
            target: self.clone(),
            stats,
        }
    }

    /// A portal starts listening on `addr`.
    pub fn portal_up(self: &Arc<Self>, addr: SocketAddr) -> PortalRegistration {
        lock(&self.portals).push(addr);
        PortalRegistration {
            target: self.clone(),
            addr,
        }
    }

    /// The portals listening now, in the order they started.
    pub fn portals(&self) -> Vec<SocketAddr> {
        lock(&self.portals).clone()
    }

    /// The connections in full feature phase now, in login order.
    pub fn connections(&self) -> Vec<Arc<ConnStats>> {
        lock(&self.live).iter().filter_map(Weak::upgrade).collect()
    }

    /// Target-wide totals: closed connections plus the live ones.
    pub fn totals(&self) -> ConnCounters {
        let t = ConnCounters::default();
        t.add_from(&self.closed);
        for c in self.connections() {
            t.add_from(&c.counters);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_end_in_inf() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(11));
        h.observe(Duration::from_secs(60));
        let c = h.buckets();
        assert_eq!(c[0], (10e-6, 2));
        assert_eq!(c[1], (25e-6, 1));
        assert_eq!(c.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn finish_counts_by_kind_bytes_and_sense_key() {
        let s = LuStats::default();
        let t = s.start();
        s.finish(t, &[0x28; 10], &[], 4096, 0, None);
        let t = s.start();
        s.finish(t, &[0x2a; 10], &[0; 512], 0, 0, None);
        let t = s.start();
        // CHECK CONDITION, MEDIUM ERROR in fixed format.
        s.finish(
            t,
            &[0x28; 10],
            &[],
            0,
            2,
            Some(&[0x70, 0, 3, 0, 0, 0, 0, 10]),
        );
        let mut unmap = vec![0, 22, 0, 16, 0, 0, 0, 0];
        unmap.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 7, 0, 0, 0, 0]);
        let t = s.start();
        s.finish(t, &[0x42; 10], &unmap, 0, 0, None);
        assert_eq!(s.commands(CommandKind::Read), 2);
        assert_eq!(s.commands(CommandKind::Write), 1);
        assert_eq!(s.read_bytes.get(), 4096);
        assert_eq!(s.written_bytes.get(), 512);
        assert_eq!(s.errors_by_sense_key[3].get(), 1);
        assert_eq!(s.unmapped_blocks.get(), 7);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.latency.count(), 4);
    }

    #[test]
    fn closed_connections_stay_in_the_totals() {
        let t = Arc::new(TargetStats::new());
        let a = t.connection_up(ConnInfo::default());
        a.stats.counting().unwrap().pdus_in.add(3);
        let b = t.connection_up(ConnInfo::default());
        b.stats.counting().unwrap().pdus_in.add(4);
        assert_eq!(t.connections().len(), 2);
        drop(a);
        assert_eq!(t.connections().len(), 1);
        assert_eq!(t.totals().pdus_in.get(), 7);
        assert_eq!(t.login.accepts.get(), 2);
        t.login.responded(LoginStatus::AUTHORIZATION_FAILURE);
        t.login.responded(LoginStatus::SUCCESS);
        assert_eq!(t.login.failures(), 1);
        assert_eq!(t.login.last_failure(), None);
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        t.login
            .responded_to(LoginStatus::AUTHENTICATION_FAILURE, "iqn.x", Some(peer));
        t.login.responded_to(LoginStatus::SUCCESS, "iqn.y", None);
        let last = t.login.last_failure().expect("a failure");
        assert_eq!(last.reason, LoginFailure::Authentication);
        assert_eq!((last.initiator.as_str(), last.peer), ("iqn.x", Some(peer)));
        assert_eq!(t.login.failures(), 2);
        // Turning counting on when it is on is no discontinuity.
        t.set_enabled(true);
        assert_eq!(t.last_toggle(), None);
    }

    #[test]
    fn off_reaches_live_and_later_connections_and_back_on() {
        let t = Arc::new(TargetStats::new());
        let live = t.connection_up(ConnInfo::default());
        t.set_enabled(false);
        assert!(live.stats.counting().is_none());
        let later = t.connection_up(ConnInfo::default());
        assert!(later.stats.counting().is_none());
        let off_at = t.last_toggle().expect("off is a discontinuity");
        t.set_enabled(true);
        assert!(t.last_toggle().unwrap() >= off_at);
        assert!(live.stats.counting().is_some());
        assert!(later.stats.counting().is_some());
        assert!(
            t.connection_up(ConnInfo::default())
                .stats
                .counting()
                .is_some()
        );
    }
}
