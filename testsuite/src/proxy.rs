//! A deliberately wrong peer: a rewriting proxy between an initiator and a
//! target, on loopback, that breaks one rule of RFC 7143 (or SPC/SBC) per
//! [`Fault`].
//!
//! The conformance suite's claim "every case can fail" is tested by running
//! each case through this proxy in front of the reference target with the
//! fault that breaks the rule the case checks, and requiring the case to
//! fail. A proxy keeps such misbehaviour out of the target itself.
//!
//! ## How it works
//!
//! Each accepted connection gets its own upstream connection. PDUs from the
//! target are framed (RFC 7143 §11.2), rewritten by the fault and sent on;
//! PDUs from the initiator are framed too, so faults can rewrite or answer
//! them, but they are forwarded byte for byte unless changed — a bad digest
//! or lying length sent by a test reaches the target as sent. The proxy
//! follows the login to switch both directions to the negotiated digests.
//! Whatever it cannot frame it forwards raw.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use iesp_proto::bhs::{Bhs, Opcode, RESERVED_TAG};
use iesp_proto::framing::{self, Frame, FrameConfig, FrameError};
use iesp_proto::pdu::{Pdu, Residual, ScsiResponse, ScsiResponseCode, fields};
use iesp_proto::text::{self, KeyValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// How long a new connection waits, under [`Fault::CrashOnMalformed`], for
/// older connections to notice the malformed PDU that "crashes" the target.
const CRASH_SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// The rule the proxy breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Forward everything unchanged (the control).
    Passthrough,
    // ---- sequence numbers (§4.2.2) ----
    /// StatSN skips: each status-bearing PDU's StatSN grows by one more.
    StatSnSkip,
    /// ExpCmdSN and MaxCmdSN one ahead of the truth.
    ExpCmdSnAhead,
    /// MaxCmdSN = ExpCmdSN − 2: a negative window.
    WindowNegative,
    /// Non-immediate commands outside (or ahead in) the window are renumbered
    /// to the next expected CmdSN, so the target executes them.
    ExecuteOutOfWindow,
    /// Commands acknowledging an old StatSN are swallowed.
    StrictExpStatSn,
    // ---- tags and answers ----
    /// Every ITT in a response is changed.
    IttMangled,
    /// Every fourth status-bearing response is dropped.
    DropEveryFourth,
    /// Reject PDUs are dropped.
    NoReject,
    /// When the target closes a connection, the initiator's side stays open.
    HoldOpen,
    /// PDUs that must not be answered get an answer (NOP-Out with ITT
    /// 0xffffffff, Data-Out for no task).
    AnswerStrayPdus,
    /// NOP-In data is dropped.
    NopNoEcho,
    // ---- digests (§13.1) ----
    /// Header digests of target PDUs are wrong.
    BadHeaderDigest,
    /// Data digests of target PDUs are wrong.
    BadDataDigest,
    /// The target's digest answers become None.
    RefuseDigests,
    // ---- login (§6.3, §11.13) ----
    /// Every Login Response carries status 0x0300 (target error).
    RefuseLogins,
    /// Every failing Login Response carries 0x0300 instead of its status.
    LoginStatusClass3,
    /// Login Responses always have T=1.
    TransitAlways,
    /// Login Responses carry a wrong ITT and ISID.
    LoginEcho,
    /// The final Login Response carries TSIH 0.
    ZeroTsih,
    // ---- text (§6, §11.10, §11.11) ----
    /// Every key of a Login or Text Response becomes NotUnderstood.
    NotUnderstoodEverything,
    /// NotUnderstood, Reject and Irrelevant answers become Yes.
    AnswersYes,
    /// Login and Text Responses lose their text.
    DropAnswers,
    /// Login Responses echo declarations (InitiatorAlias, InitiatorName).
    EchoDeclarations,
    /// Text Responses gain a bogus target, an address without portal
    /// group tag and 600 bytes of padding.
    ExtraTextKeys,
    /// Text Responses: F flipped, TTT 0xffffffff on continuations and not
    /// on final responses.
    TextFlags,
    // ---- task management, logout ----
    /// TMF responses: 0 becomes 1, anything else 0.
    TmfResponseFlipped,
    /// Logout responses: 0 becomes 1, anything else 0.
    LogoutResponseFlipped,
    // ---- R2T (§11.8) ----
    R2tSnWrong,
    R2tTttReserved,
    R2tOffsetShift,
    /// The initiator's MaxOutstandingR2T offer reaches the target as 8,
    /// the answer comes back as the original offer.
    SkewMaxOutstandingR2T,
    /// The same for MaxBurstLength (262144 upstream).
    SkewMaxBurstLength,
    /// Login Responses answer FirstBurstLength and MaxBurstLength with
    /// 268435456 whatever was offered, as iESP does: an answer above the
    /// offer, which RFC 7143 §13.13/§13.14 (min) rules out. Tools test
    /// their lenient login against it.
    OversizeBurstAnswers,
    /// The initiator's MaxRecvDataSegmentLength reaches the target as
    /// 262144 (also when not declared, and in full feature phase).
    SkewMaxRecvDataSegmentLength,
    /// Immediate data is removed from SCSI Commands.
    StripImmediateData,
    // ---- Data-In (§11.7) ----
    DataSnWrong,
    DataInOffsetShift,
    /// A read's Data-In PDUs are merged into one.
    CoalesceDataIn,
    /// Data-In with S=1 loses its F bit.
    StatusWithoutFinal,
    /// CHECK CONDITION (without sense) is sent in a Data-In.
    CollapseCheckCondition,
    /// Status in a Data-In is moved to a SCSI Response with a wrong ExpDataSN.
    SeparateStatus,
    // ---- SCSI results ----
    /// GOOD becomes CHECK CONDITION and back.
    StatusFlip,
    /// Read data is corrupted.
    CorruptReadData,
    /// Residual flags and counts are cleared.
    ResidualCleared,
    /// An underflow of 512 is reported where there is none.
    ResidualInvented,
    // ---- sessions ----
    /// A completed login closes every other connection of the proxy.
    ReinstateAlways,
    /// After an undefined opcode, or a connection closed inside a PDU, the
    /// "target" accepts no more connections.
    CrashOnMalformed,
    /// READ CAPACITY(16) parameter data says LOGICAL BLOCK LENGTH 0.
    MalformedReadCapacity16,
    /// UNMAP commands reach the target with an unsupported opcode, so a
    /// LUN that advertises UNMAP answers it with ILLEGAL REQUEST.
    RejectUnmap,
}

/// What [`Fault::OversizeBurstAnswers`] answers: 256 MiB.
pub const OVERSIZE_BURST: u32 = 268_435_456;

/// Shared across the proxy's connections.
#[derive(Default)]
struct Shared {
    crashed: AtomicBool,
    next_id: AtomicU64,
}

/// A running proxy; stopped on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    pub faults: Vec<Fault>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (any port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr, fault: Fault) -> io::Result<Proxy> {
        Proxy::start_with(upstream, &[fault]).await
    }

    /// A proxy breaking several rules at once.
    pub async fn start_with(upstream: SocketAddr, faults: &[Fault]) -> io::Result<Proxy> {
        let faults = faults.to_vec();
        let fs = faults.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let shared = Arc::new(Shared::default());
        let (logins, _) = broadcast::channel::<u64>(64);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    acc = listener.accept() => {
                        let Ok((client, _)) = acc else { continue };
                        if shared.crashed.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                        let (shared, logins, fs) = (shared.clone(), logins.clone(), fs.clone());
                        conns.spawn(async move {
                            // A client that closes a connection inside a PDU
                            // and reconnects at once races the old
                            // connection's task to the `crashed` flag: let
                            // the older tasks see their FIN before this
                            // connection is let through.
                            if fs.contains(&Fault::CrashOnMalformed) {
                                tokio::time::sleep(CRASH_SETTLE).await;
                                if shared.crashed.load(Ordering::SeqCst) {
                                    return;
                                }
                            }
                            if let Ok(up) = TcpStream::connect(upstream).await {
                                let _ = Conn::new(fs, id, shared, logins).run(client, up).await;
                            }
                        });
                    }
                }
            }
            conns.shutdown().await;
        });
        Ok(Proxy {
            addr,
            faults,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops accepting and closes every connection.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// What to do with one PDU.
enum Out {
    /// Send these bytes (the original PDU).
    Raw(Bytes),
    /// Send this frame, encoded afresh.
    Frame(Frame),
}

/// Per-connection state.
struct Conn {
    faults: Vec<Fault>,
    id: u64,
    shared: Arc<Shared>,
    logins: broadcast::Sender<u64>,
    cfg: FrameConfig,
    logged_in: bool,
    login_keys: Vec<KeyValue>,
    /// How many StatSNs have been skipped so far.
    stat_skew: u32,
    /// Status-bearing responses seen (DropEveryFourth).
    responses: u64,
    /// The next CmdSN the target expects, as the proxy sees it.
    next_cmd_sn: Option<u32>,
    /// The last StatSN sent to the initiator.
    last_stat_sn: Option<u32>,
    /// ITTs of SCSI Commands seen.
    tasks: HashSet<u32>,
    /// The initiator's own offers, by key, rewritten upstream.
    skewed: HashMap<String, String>,
    /// CoalesceDataIn: Data-In being merged, by ITT.
    merging: HashMap<u32, (Bhs, BytesMut)>,
    /// SeparateStatus: Data-In PDUs per ITT.
    data_ins: HashMap<u32, u32>,
    /// Stop forwarding from the target (HoldOpen after its close).
    upstream_closed: bool,
    /// ITTs of READ CAPACITY(16) commands (MalformedReadCapacity16).
    rc16: HashSet<u32>,
}

impl Conn {
    fn new(
        faults: Vec<Fault>,
        id: u64,
        shared: Arc<Shared>,
        logins: broadcast::Sender<u64>,
    ) -> Conn {
        Conn {
            faults,
            id,
            shared,
            logins,
            cfg: FrameConfig::default(),
            logged_in: false,
            login_keys: Vec::new(),
            stat_skew: 0,
            responses: 0,
            next_cmd_sn: None,
            last_stat_sn: None,
            tasks: HashSet::new(),
            skewed: HashMap::new(),
            merging: HashMap::new(),
            data_ins: HashMap::new(),
            upstream_closed: false,
            rc16: HashSet::new(),
        }
    }

    fn has(&self, f: Fault) -> bool {
        self.faults.contains(&f)
    }

    async fn run(mut self, mut client: TcpStream, mut up: TcpStream) -> io::Result<()> {
        client.set_nodelay(true)?;
        up.set_nodelay(true)?;
        let mut logins = self.logins.subscribe();
        let (mut cbuf, mut ubuf) = (
            BytesMut::with_capacity(1 << 16),
            BytesMut::with_capacity(1 << 16),
        );
        let (mut craw, mut uraw) = (false, false);
        loop {
            let mut to_up = BytesMut::new();
            let mut to_client = BytesMut::new();
            tokio::select! {
                n = client.read_buf(&mut cbuf) => {
                    if n? == 0 {
                        if !cbuf.is_empty() && self.has(Fault::CrashOnMalformed) {
                            self.shared.crashed.store(true, Ordering::SeqCst);
                        }
                        let _ = up.shutdown().await;
                        return Ok(());
                    }
                    self.on_initiator_bytes(&mut cbuf, &mut craw, &mut to_up, &mut to_client);
                }
                n = up.read_buf(&mut ubuf), if !self.upstream_closed => {
                    if n? == 0 {
                        if self.has(Fault::HoldOpen) {
                            self.upstream_closed = true;
                            continue;
                        }
                        let _ = client.shutdown().await;
                        return Ok(());
                    }
                    self.on_target_bytes(&mut ubuf, &mut uraw, &mut to_client);
                }
                msg = logins.recv() => {
                    if let Ok(other) = msg && other != self.id && self.has(Fault::ReinstateAlways) {
                        return Ok(());
                    }
                }
            }
            if !to_up.is_empty() && !self.upstream_closed {
                up.write_all(&to_up).await?;
            }
            if !to_client.is_empty() {
                client.write_all(&to_client).await?;
            }
        }
    }

    /// Frames what the initiator sent; forwards (or rewrites, or answers) it.
    fn on_initiator_bytes(
        &mut self,
        buf: &mut BytesMut,
        raw: &mut bool,
        to_up: &mut BytesMut,
        to_client: &mut BytesMut,
    ) {
        loop {
            if *raw {
                to_up.extend_from_slice(&buf.split());
                return;
            }
            // A header with an undefined opcode "crashes" the target as soon
            // as it arrives, whatever length it announces.
            if self.has(Fault::CrashOnMalformed)
                && let Some(bhs) = Bhs::from_slice(buf)
                && bhs.opcode().name().is_none()
            {
                self.shared.crashed.store(true, Ordering::SeqCst);
            }
            let Some((frame, bytes)) = next_frame(&self.cfg, buf, raw) else {
                if *raw {
                    continue;
                }
                return;
            };
            for out in self.initiator_pdu(frame, bytes, to_client) {
                self.emit(out, to_up, false);
            }
        }
    }

    fn on_target_bytes(&mut self, buf: &mut BytesMut, raw: &mut bool, to_client: &mut BytesMut) {
        loop {
            if *raw {
                to_client.extend_from_slice(&buf.split());
                return;
            }
            let Some((frame, bytes)) = next_frame(&self.cfg, buf, raw) else {
                if *raw {
                    continue;
                }
                return;
            };
            let was_login = frame.bhs.opcode() == Opcode::LOGIN_RESPONSE;
            let outs = self.target_pdu(frame, bytes);
            for out in outs {
                self.emit(out, to_client, true);
            }
            if was_login && self.logged_in {
                // Both directions use the negotiated digests from now on.
                let key = |k: &str| {
                    self.login_keys
                        .iter()
                        .rev()
                        .find(|kv| kv.key == k)
                        .map(|kv| kv.value.clone())
                };
                self.cfg.header_digest = key("HeaderDigest").as_deref() == Some("CRC32C");
                self.cfg.data_digest = key("DataDigest").as_deref() == Some("CRC32C");
                if self.has(Fault::RefuseDigests) {
                    self.cfg.header_digest = false;
                    self.cfg.data_digest = false;
                }
            }
        }
    }

    fn emit(&self, out: Out, to: &mut BytesMut, towards_initiator: bool) {
        match out {
            Out::Raw(b) => to.extend_from_slice(&b),
            Out::Frame(f) => {
                let start = to.len();
                framing::encode(&self.cfg, &f, to);
                if towards_initiator && self.has(Fault::BadHeaderDigest) && self.cfg.header_digest {
                    let at = start + 48 + f.ahs.len().div_ceil(4) * 4;
                    to[at] ^= 0x5a;
                }
                if towards_initiator
                    && self.has(Fault::BadDataDigest)
                    && self.cfg.data_digest
                    && !f.data.is_empty()
                {
                    let n = to.len();
                    to[n - 1] ^= 0x5a;
                }
            }
        }
    }

    // ---- initiator → target ------------------------------------------------

    fn initiator_pdu(&mut self, mut f: Frame, bytes: Bytes, to_client: &mut BytesMut) -> Vec<Out> {
        let op = f.bhs.opcode();
        let set = |b: &mut Bhs, name: &str, v: u64| {
            if let Some(fl) = fields::lookup(op, name) {
                fl.write(b, v);
            }
        };
        if op == Opcode::SCSI_COMMAND {
            self.tasks.insert(f.bhs.itt());
            if f.bhs.0[32] == 0x9e && f.bhs.0[33] & 0x1f == 0x10 {
                self.rc16.insert(f.bhs.itt());
            }
        }
        for fault in self.faults.clone() {
            match fault {
                Fault::ExecuteOutOfWindow
                    if self.logged_in && carries_cmd_sn(op) && !f.bhs.immediate() =>
                {
                    if let Some(next) = self.next_cmd_sn {
                        set(&mut f.bhs, "CmdSN", u64::from(next));
                        self.next_cmd_sn = Some(next.wrapping_add(1));
                        return vec![Out::Frame(f)];
                    }
                }
                Fault::StrictExpStatSn if self.logged_in && op == Opcode::NOP_OUT => {
                    let exp = f.bhs.u32_at(28);
                    if self.last_stat_sn.is_some_and(|s| exp != s.wrapping_add(1)) {
                        return Vec::new();
                    }
                }
                Fault::AnswerStrayPdus => {
                    let stray_nop = op == Opcode::NOP_OUT && f.bhs.itt() == RESERVED_TAG;
                    let stray_data = op == Opcode::DATA_OUT && !self.tasks.contains(&f.bhs.itt());
                    if self.logged_in && (stray_nop || stray_data) {
                        let mut bhs = Bhs::new(if stray_nop {
                            Opcode::NOP_IN
                        } else {
                            Opcode::SCSI_RESPONSE
                        });
                        bhs.set_final(true);
                        bhs.set_itt(if stray_nop { 0 } else { f.bhs.itt() });
                        bhs.set_u32_at(20, RESERVED_TAG);
                        bhs.set_u32_at(24, self.last_stat_sn.map_or(0, |s| s.wrapping_add(1)));
                        framing::encode(
                            &self.cfg,
                            &Frame {
                                bhs,
                                ..Frame::default()
                            },
                            to_client,
                        );
                    }
                }
                // UNMAP (SBC-4 §5.31) becomes a vendor-specific opcode the
                // target does not implement.
                Fault::RejectUnmap if op == Opcode::SCSI_COMMAND && f.bhs.0[32] == 0x42 => {
                    f.bhs.0[32] = 0xc7;
                    return vec![Out::Frame(f)];
                }
                Fault::StripImmediateData if op == Opcode::SCSI_COMMAND && !f.data.is_empty() => {
                    f.data = Bytes::new();
                    f.bhs.set_final(true);
                    return vec![Out::Frame(f)];
                }
                Fault::SkewMaxOutstandingR2T
                | Fault::SkewMaxBurstLength
                | Fault::SkewMaxRecvDataSegmentLength
                    if matches!(op, Opcode::LOGIN_REQUEST | Opcode::TEXT_REQUEST) =>
                {
                    if let Some(data) = self.skew_offers(op, &f.data) {
                        f.data = data;
                        return vec![Out::Frame(f)];
                    }
                }
                _ => {}
            }
        }
        vec![Out::Raw(bytes)]
    }

    /// Rewrites the initiator's offers upstream; returns the new text.
    fn skew_offers(&mut self, op: Opcode, data: &[u8]) -> Option<Bytes> {
        let mut pairs = text::decode(data).ok()?;
        let (key, upstream) = if self.has(Fault::SkewMaxOutstandingR2T) {
            ("MaxOutstandingR2T", "8")
        } else if self.has(Fault::SkewMaxBurstLength) {
            ("MaxBurstLength", "262144")
        } else {
            ("MaxRecvDataSegmentLength", "262144")
        };
        let mut found = false;
        for kv in pairs.iter_mut().filter(|kv| kv.key == key) {
            self.skewed.insert(kv.key.clone(), kv.value.clone());
            kv.value = upstream.to_owned();
            found = true;
        }
        // An initiator that does not declare MaxRecvDataSegmentLength gets
        // one declared for it, at the first operational-stage request.
        let operational = op == Opcode::LOGIN_REQUEST && data.windows(9).any(|w| w == b"Initiator");
        if !found && key == "MaxRecvDataSegmentLength" && operational {
            pairs.push(KeyValue::new(key, upstream));
            found = true;
        }
        found.then(|| Bytes::from(text::encode_to_vec(&pairs)))
    }

    // ---- target → initiator --------------------------------------------------

    fn target_pdu(&mut self, mut f: Frame, bytes: Bytes) -> Vec<Out> {
        let op = f.bhs.opcode();
        let orig = f.bhs;
        let orig_data = f.data.clone();
        self.track(&f);
        let status_bearing = is_status_bearing(&f.bhs);
        let set = |b: &mut Bhs, name: &str, v: u64| {
            if let Some(fl) = fields::lookup(op, name) {
                fl.write(b, v);
            }
        };
        let get = |b: &Bhs, name: &str| fields::lookup(op, name).map_or(0, |fl| fl.read(b));
        for fault in self.faults.clone() {
            match fault {
                Fault::StatSnSkip if status_bearing && self.logged_in => {
                    self.stat_skew += 1;
                    let sn = get(&f.bhs, "StatSN") as u32;
                    set(
                        &mut f.bhs,
                        "StatSN",
                        u64::from(sn.wrapping_add(self.stat_skew)),
                    );
                }
                Fault::StatSnSkip if op == Opcode::LOGIN_RESPONSE => {
                    self.stat_skew += 1;
                    let sn = get(&f.bhs, "StatSN") as u32;
                    set(
                        &mut f.bhs,
                        "StatSN",
                        u64::from(sn.wrapping_add(self.stat_skew)),
                    );
                }
                Fault::ExpCmdSnAhead => {
                    for k in ["ExpCmdSN", "MaxCmdSN"] {
                        let v = get(&f.bhs, k) as u32;
                        set(&mut f.bhs, k, u64::from(v.wrapping_add(1)));
                    }
                }
                Fault::WindowNegative if self.logged_in || op == Opcode::LOGIN_RESPONSE => {
                    let e = get(&f.bhs, "ExpCmdSN") as u32;
                    set(&mut f.bhs, "MaxCmdSN", u64::from(e.wrapping_sub(2)));
                }
                Fault::IttMangled
                    if f.bhs.itt() != RESERVED_TAG && op != Opcode::LOGIN_RESPONSE =>
                {
                    f.bhs.set_itt(f.bhs.itt() ^ 0x0080_0000);
                }
                Fault::DropEveryFourth if status_bearing && self.logged_in => {
                    self.responses += 1;
                    if self.responses % 4 == 0 {
                        return Vec::new();
                    }
                }
                Fault::NoReject if op == Opcode::REJECT => return Vec::new(),
                Fault::NopNoEcho if op == Opcode::NOP_IN && !f.data.is_empty() => {
                    f.data = Bytes::new()
                }
                Fault::RefuseDigests
                | Fault::NotUnderstoodEverything
                | Fault::AnswersYes
                | Fault::DropAnswers
                | Fault::EchoDeclarations
                | Fault::SkewMaxOutstandingR2T
                | Fault::SkewMaxBurstLength
                | Fault::OversizeBurstAnswers
                    if matches!(op, Opcode::LOGIN_RESPONSE | Opcode::TEXT_RESPONSE) =>
                {
                    if let Some(d) = self.rewrite_answers(fault, op, &f.data) {
                        f.data = d;
                    }
                }
                Fault::ExtraTextKeys if op == Opcode::TEXT_RESPONSE && f.bhs.0[1] & 0x40 == 0 => {
                    let mut d = f.data.to_vec();
                    d.extend_from_slice(b"TargetName=iqn.2026-11.invalid.iesp-test:proxy-extra\0TargetAddress=192.0.2.1:3260\0X-org.iesp-test.Pad=");
                    d.extend(std::iter::repeat_n(b'x', 600));
                    d.push(0);
                    f.data = Bytes::from(d);
                }
                Fault::TextFlags if op == Opcode::TEXT_RESPONSE => {
                    let fin = f.bhs.final_bit();
                    f.bhs.set_final(!fin);
                    set(
                        &mut f.bhs,
                        "TTT",
                        if fin { 0x7e57 } else { u64::from(RESERVED_TAG) },
                    );
                }
                Fault::RefuseLogins if op == Opcode::LOGIN_RESPONSE => {
                    f.bhs.set_u16_at(36, 0x0300);
                    f.bhs.0[1] &= !0x80;
                }
                Fault::LoginStatusClass3
                    if op == Opcode::LOGIN_RESPONSE && f.bhs.u16_at(36) != 0 =>
                {
                    f.bhs.set_u16_at(36, 0x0300);
                }
                Fault::TransitAlways if op == Opcode::LOGIN_RESPONSE => {
                    f.bhs.0[1] = (f.bhs.0[1] | 0x80) & !0x40;
                    if f.bhs.0[1] & 0x03 == 0 {
                        f.bhs.0[1] |= 0x01;
                    }
                }
                Fault::LoginEcho if op == Opcode::LOGIN_RESPONSE => {
                    f.bhs.set_itt(f.bhs.itt() ^ 1);
                    f.bhs.0[13] ^= 1;
                }
                Fault::ZeroTsih if op == Opcode::LOGIN_RESPONSE => f.bhs.set_u16_at(14, 0),
                Fault::TmfResponseFlipped if op == Opcode::TASK_MGMT_RESPONSE => {
                    f.bhs.0[2] = if f.bhs.0[2] == 0 { 1 } else { 0 };
                }
                Fault::LogoutResponseFlipped if op == Opcode::LOGOUT_RESPONSE => {
                    f.bhs.0[2] = if f.bhs.0[2] == 0 { 1 } else { 0 };
                }
                Fault::R2tSnWrong if op == Opcode::R2T => {
                    let v = get(&f.bhs, "R2TSN");
                    set(&mut f.bhs, "R2TSN", v + 1);
                }
                Fault::R2tTttReserved if op == Opcode::R2T => {
                    set(&mut f.bhs, "TTT", u64::from(RESERVED_TAG))
                }
                Fault::R2tOffsetShift if op == Opcode::R2T => {
                    let v = get(&f.bhs, "BufferOffset");
                    set(&mut f.bhs, "BufferOffset", v + 512);
                }
                Fault::DataSnWrong if op == Opcode::DATA_IN => {
                    let v = get(&f.bhs, "DataSN");
                    set(&mut f.bhs, "DataSN", v + 1);
                }
                Fault::DataInOffsetShift if op == Opcode::DATA_IN => {
                    let v = get(&f.bhs, "BufferOffset");
                    set(&mut f.bhs, "BufferOffset", v + 512);
                }
                Fault::CoalesceDataIn if op == Opcode::DATA_IN => {
                    let itt = f.bhs.itt();
                    let entry = self
                        .merging
                        .entry(itt)
                        .or_insert_with(|| (f.bhs, BytesMut::new()));
                    entry.1.extend_from_slice(&f.data);
                    if f.bhs.0[1] & 0x01 == 0 {
                        return Vec::new();
                    }
                    let (mut first, data) = self
                        .merging
                        .remove(&itt)
                        .unwrap_or((f.bhs, BytesMut::new()));
                    // The merged PDU: the first one's offset and DataSN, the
                    // last one's flags, status and sequence numbers.
                    first.0[1] = f.bhs.0[1];
                    first.0[3] = f.bhs.0[3];
                    first.0[24..36].copy_from_slice(&f.bhs.0[24..36]);
                    first.0[44..48].copy_from_slice(&f.bhs.0[44..48]);
                    return vec![Out::Frame(Frame {
                        bhs: first,
                        ahs: Bytes::new(),
                        data: data.freeze(),
                    })];
                }
                Fault::StatusWithoutFinal if op == Opcode::DATA_IN && f.bhs.0[1] & 0x01 != 0 => {
                    f.bhs.0[1] &= !0x80
                }
                Fault::CollapseCheckCondition
                    if op == Opcode::SCSI_RESPONSE && f.bhs.0[3] == 0x02 =>
                {
                    let mut b = Bhs::new(Opcode::DATA_IN);
                    b.0[1] = 0x81;
                    b.0[3] = 0x02;
                    b.set_lun(f.bhs.lun());
                    b.set_itt(f.bhs.itt());
                    b.set_u32_at(20, RESERVED_TAG);
                    b.0[24..36].copy_from_slice(&f.bhs.0[24..36]);
                    return vec![Out::Frame(Frame {
                        bhs: b,
                        ..Frame::default()
                    })];
                }
                Fault::SeparateStatus if op == Opcode::DATA_IN => {
                    let n = self.data_ins.entry(f.bhs.itt()).or_default();
                    *n += 1;
                    let count = *n;
                    if f.bhs.0[1] & 0x01 != 0 {
                        let Pdu::DataIn(d) = Pdu::decode(&f.bhs) else {
                            return vec![Out::Raw(bytes)];
                        };
                        let rsp = ScsiResponse {
                            itt: d.itt,
                            response: ScsiResponseCode::COMMAND_COMPLETED,
                            status: d.status.unwrap_or(0),
                            residual: d.residual,
                            bidi_residual: Residual::None,
                            snack_tag: 0,
                            stat_sn: d.stat_sn,
                            exp_cmd_sn: d.exp_cmd_sn,
                            max_cmd_sn: d.max_cmd_sn,
                            exp_data_sn: count + 1,
                        };
                        f.bhs.0[1] &= !0x07;
                        f.bhs.0[3] = 0;
                        f.bhs.set_u32_at(44, 0);
                        return vec![
                            Out::Frame(f),
                            Out::Frame(Frame::new(&Pdu::ScsiResponse(rsp))),
                        ];
                    }
                }
                Fault::StatusFlip
                    if op == Opcode::SCSI_RESPONSE
                        || (op == Opcode::DATA_IN && f.bhs.0[1] & 0x01 != 0) =>
                {
                    f.bhs.0[3] = match f.bhs.0[3] {
                        0x00 => 0x02,
                        0x02 => 0x00,
                        s => s,
                    };
                    if op == Opcode::SCSI_RESPONSE && f.bhs.0[3] == 0 {
                        f.data = Bytes::new();
                    }
                }
                Fault::MalformedReadCapacity16
                    if op == Opcode::DATA_IN
                        && f.data.len() >= 12
                        && self.rc16.contains(&f.bhs.itt()) =>
                {
                    let mut d = f.data.to_vec();
                    d[8..12].fill(0);
                    f.data = Bytes::from(d);
                }
                Fault::CorruptReadData if op == Opcode::DATA_IN && !f.data.is_empty() => {
                    let mut d = f.data.to_vec();
                    d[0] ^= 0xff;
                    f.data = Bytes::from(d);
                }
                Fault::ResidualCleared
                    if op == Opcode::SCSI_RESPONSE
                        || (op == Opcode::DATA_IN && f.bhs.0[1] & 0x01 != 0) =>
                {
                    f.bhs.0[1] &= !0x06;
                    f.bhs.set_u32_at(44, 0);
                }
                Fault::ResidualInvented
                    if (op == Opcode::SCSI_RESPONSE
                        || (op == Opcode::DATA_IN && f.bhs.0[1] & 0x01 != 0))
                        && f.bhs.0[1] & 0x06 == 0 =>
                {
                    f.bhs.0[1] |= 0x02;
                    f.bhs.set_u32_at(44, 512);
                }
                _ => {}
            }
        }
        if op == Opcode::LOGIN_RESPONSE && self.logged_in && self.has(Fault::ReinstateAlways) {
            let _ = self.logins.send(self.id);
        }
        // Digest faults need every PDU encoded afresh (after login).
        let digest_fault =
            (self.has(Fault::BadHeaderDigest) || self.has(Fault::BadDataDigest)) && self.logged_in;
        if f.bhs != orig || f.data != orig_data || digest_fault {
            vec![Out::Frame(f)]
        } else {
            vec![Out::Raw(bytes)]
        }
    }

    /// Rewrites the keys of a Login or Text Response; `None` leaves it.
    fn rewrite_answers(&self, fault: Fault, op: Opcode, data: &[u8]) -> Option<Bytes> {
        let mut pairs = text::decode(data).ok()?;
        match fault {
            Fault::RefuseDigests => {
                for kv in pairs
                    .iter_mut()
                    .filter(|kv| kv.key == "HeaderDigest" || kv.key == "DataDigest")
                {
                    kv.value = "None".to_owned();
                }
            }
            Fault::NotUnderstoodEverything => {
                for kv in &mut pairs {
                    kv.value = "NotUnderstood".to_owned();
                }
            }
            Fault::AnswersYes => {
                for kv in pairs.iter_mut().filter(|kv| {
                    matches!(kv.value.as_str(), "NotUnderstood" | "Reject" | "Irrelevant")
                }) {
                    kv.value = "Yes".to_owned();
                }
            }
            Fault::DropAnswers => pairs.clear(),
            Fault::EchoDeclarations if op == Opcode::LOGIN_RESPONSE => {
                pairs.push(KeyValue::new("InitiatorAlias", "echo"));
                pairs.push(KeyValue::new(
                    "InitiatorName",
                    "iqn.2026-11.invalid.iesp-test:echo",
                ));
            }
            Fault::OversizeBurstAnswers if op == Opcode::LOGIN_RESPONSE => {
                let mut found = false;
                for kv in pairs
                    .iter_mut()
                    .filter(|kv| kv.key == "FirstBurstLength" || kv.key == "MaxBurstLength")
                {
                    kv.value = OVERSIZE_BURST.to_string();
                    found = true;
                }
                if !found {
                    return None;
                }
            }
            Fault::SkewMaxOutstandingR2T | Fault::SkewMaxBurstLength => {
                for kv in &mut pairs {
                    if let Some(orig) = self.skewed.get(&kv.key) {
                        kv.value = orig.clone();
                    }
                }
            }
            _ => return None,
        }
        Some(Bytes::from(text::encode_to_vec(&pairs)))
    }

    /// Follows the login and the window.
    fn track(&mut self, f: &Frame) {
        let op = f.bhs.opcode();
        if op == Opcode::LOGIN_RESPONSE {
            if let Ok(p) = text::decode(&f.data) {
                self.login_keys.extend(p);
            }
            let final_ok =
                f.bhs.0[1] & 0x80 != 0 && f.bhs.0[1] & 0x03 == 3 && f.bhs.u16_at(36) == 0;
            if final_ok {
                self.logged_in = true;
            }
        }
        if let Some(fl) = fields::lookup(op, "ExpCmdSN") {
            let e = fl.read(&f.bhs) as u32;
            let ahead = self
                .next_cmd_sn
                .is_some_and(|n| iesp_proto::serial::gt(n, e));
            if !ahead {
                self.next_cmd_sn = Some(e);
            }
        }
        if is_status_bearing(&f.bhs) {
            self.last_stat_sn = Some(f.bhs.u32_at(24));
        }
    }
}

fn carries_cmd_sn(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::NOP_OUT
            | Opcode::SCSI_COMMAND
            | Opcode::TASK_MGMT_REQUEST
            | Opcode::TEXT_REQUEST
            | Opcode::LOGOUT_REQUEST
    )
}

fn is_status_bearing(b: &Bhs) -> bool {
    let op = b.opcode();
    matches!(
        op,
        Opcode::SCSI_RESPONSE
            | Opcode::TASK_MGMT_RESPONSE
            | Opcode::TEXT_RESPONSE
            | Opcode::LOGOUT_RESPONSE
            | Opcode::REJECT
            | Opcode::ASYNC_MESSAGE
    ) || (op == Opcode::NOP_IN && b.itt() != RESERVED_TAG)
        || (op == Opcode::DATA_IN && b.0[1] & 0x01 != 0)
}

/// The next whole PDU and its bytes; `None` when more bytes are needed, or
/// (with `raw` set) when the stream cannot be framed any more.
fn next_frame(cfg: &FrameConfig, buf: &mut BytesMut, raw: &mut bool) -> Option<(Frame, Bytes)> {
    let bhs = Bhs::from_slice(buf)?;
    let len = framing::frame_len(cfg, &bhs);
    if buf.len() < len {
        return None;
    }
    let bytes = Bytes::copy_from_slice(&buf[..len]);
    match framing::decode(cfg, buf) {
        Ok(Some(f)) => Some((f, bytes)),
        Ok(None) => None,
        // A bad data digest: the header is sound, pass the bytes on as they are.
        Err(FrameError::DataDigest { frame, .. }) => Some((frame, bytes)),
        Err(_) => {
            *raw = true;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iesp_initiator::raw::{RawConnection, Received};
    use iesp_proto::pdu::NopOut;
    use iesp_testsupport::FakeTarget;
    use std::time::Duration;

    /// A fake target that answers every PDU with a NOP-In echo of its
    /// ITT and data; it never logs in.
    async fn echo_target() -> FakeTarget {
        FakeTarget::serve(|mut t| async move {
            while let Received::Frame(f) = t.conn.recv(Duration::from_secs(5)).await {
                let nop = iesp_proto::pdu::NopIn {
                    lun: iesp_proto::bhs::Lun(0),
                    itt: f.bhs.itt(),
                    ttt: RESERVED_TAG,
                    stat_sn: t.next_stat_sn(),
                    exp_cmd_sn: 1,
                    max_cmd_sn: 9,
                };
                t.send(Pdu::NopIn(nop), f.data.clone()).await;
            }
        })
        .await
    }

    fn nop(itt: u32) -> Pdu {
        Pdu::NopOut(NopOut {
            immediate: true,
            lun: iesp_proto::bhs::Lun(0),
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: 1,
            exp_stat_sn: 0,
        })
    }

    async fn roundtrip(fault: Fault) -> Vec<Frame> {
        let echo = echo_target().await;
        let p = Proxy::start(echo.addr(), fault).await.unwrap();
        let mut c = RawConnection::connect(p.addr).await.unwrap();
        let mut out = Vec::new();
        for i in 1..=4 {
            c.send_pdu(&nop(i), Bytes::from_static(b"ping"))
                .await
                .unwrap();
            if let Received::Frame(f) = c.recv(Duration::from_millis(300)).await {
                out.push(f);
            }
        }
        p.stop().await;
        out
    }

    #[tokio::test]
    async fn forwards_unchanged_without_a_fault() {
        let got = roundtrip(Fault::Passthrough).await;
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|f| &f.data[..] == b"ping"));
        assert_eq!(
            got.iter().map(|f| f.bhs.itt()).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }

    #[tokio::test]
    async fn faults_change_what_the_initiator_sees() {
        // The echo target's NOP-Ins are status-bearing only after login,
        // which it never does: use the faults that apply regardless.
        let got = roundtrip(Fault::NopNoEcho).await;
        assert!(
            got.iter().all(|f| f.data.is_empty()),
            "NopNoEcho strips the echo"
        );
        let got = roundtrip(Fault::IttMangled).await;
        assert!(got.iter().all(|f| f.bhs.itt() & 0x0080_0000 != 0));
        let got = roundtrip(Fault::ExpCmdSnAhead).await;
        assert!(
            got.iter()
                .all(|f| f.bhs.u32_at(28) == 2 && f.bhs.u32_at(32) == 10)
        );
    }
}
