//! Full feature phase of one connection (RFC 7143 §3.2, §4.2, §11).
//!
//! The sans-IO core of a logged-in connection: bytes in, PDUs out, no
//! sockets, no tokio, no clock of its own. The socket driver
//! ([`super::driver`]) and the tests feed it the same way:
//!
//! - [`FullFeature::new`] takes an [`FfpSetup`] (the login's outcome and the
//!   target's limits) and the current time;
//! - [`FullFeature::receive`] takes the read buffer and `now`, frames every
//!   whole PDU in it and handles each ([`FullFeature::handle`] for one
//!   decoded frame): SCSI commands execute synchronously on the LUN (see
//!   [`crate::scsi`]), and every response is queued in the
//!   [`outbox`](FullFeature::outbox), which the driver writes out in one
//!   vectored write per batch; data segments are zero-copy slices of the
//!   LU's completion;
//! - [`FullFeature::poll_timeout`] / [`FullFeature::handle_timeout`] run
//!   the keep-alive clock (§11.18, §11.19) on the time the caller passes;
//! - [`After::Close`] (Logout, TARGET COLD RESET, unanswered ping) and
//!   [`Fatal`] tell the driver to flush and close.
//!
//! The transcript tests at the bottom (`ffp/transcripts.rs`) encode request
//! PDUs with `iesp_proto`, feed the bytes in and decode what comes out.
//!
//! What lives here:
//! - the CmdSN window (§4.2.2.1): commands run in CmdSN order, commands that
//!   arrive early wait, commands outside [ExpCmdSN, MaxCmdSN] are silently
//!   ignored, immediate commands bypass ordering. The window is the
//!   session's ([`crate::session::SessionShared`], shared by its
//!   connections): numbering and dispatch happen under its ordering lock,
//!   and a command held here runs when another connection moves ExpCmdSN
//!   to it ([`FullFeature::resume`]);
//! - write data collection: immediate data, unsolicited Data-Out up to
//!   FirstBurstLength, then R2Ts of at most MaxBurstLength with at most
//!   MaxOutstandingR2T outstanding per task (§4.2.3, §11.7, §11.8); DataSN,
//!   BufferOffset and TTT are checked and a broken sequence fails the task;
//! - Data-In segmentation to the initiator's MaxRecvDataSegmentLength and
//!   MaxBurstLength, with GOOD status collapsed into the last Data-In
//!   (§11.7.4) and residuals against ExpectedDataTransferLength (§11.4.5);
//! - NOP-Out/NOP-In, task management, Text (SendTargets), Logout, Reject.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iesp_proto::bhs::{Bhs, Lun, Opcode, RESERVED_TAG};
use iesp_proto::framing::{self, Frame, FrameConfig, FrameError};
use iesp_proto::negotiation::{Negotiator, Phase};
use iesp_proto::pdu::{
    self, DataIn, DataOut, LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode, NopIn,
    NopOut, Pdu, R2t, Reject, RejectReason, Residual, ScsiCommand, ScsiResponse, ScsiResponseCode,
    TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, TmfFunction, TmfResponse,
};
use iesp_proto::scsi::{Asc, ScsiStatus, Sense, SenseKey};
use iesp_proto::serial;
use iesp_proto::text;

use super::deferred::{Access, Deferred, Running};
use super::fence::SpliceFence;
use super::output::Output;
use crate::memory::{Charge, SessionMemory};
use crate::scsi::{Command, Completion, Direction, LunTable, Nexus, NexusEnd, RawCdb};
use crate::session::SessionShared;
use crate::stats::ConnStats;

/// Negotiated values the full feature phase works with (§13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FfpParams {
    /// The initiator's MaxRecvDataSegmentLength: our Data-In/Text limit.
    pub initiator_mrdsl: u32,
    /// Our MaxRecvDataSegmentLength: what the initiator may send per PDU.
    pub target_mrdsl: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub max_outstanding_r2t: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
}

impl Default for FfpParams {
    /// The RFC 7143 §13 defaults.
    fn default() -> Self {
        FfpParams {
            initiator_mrdsl: 8192,
            target_mrdsl: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            max_outstanding_r2t: 1,
            initial_r2t: true,
            immediate_data: true,
        }
    }
}

/// Discovery sessions only answer Text (SendTargets) and Logout (§4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    Discovery,
    Normal,
}

/// One entry of a SendTargets answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryEntry {
    pub target_name: String,
    /// `ip:port,tpgt` strings.
    pub addresses: Vec<String>,
}

/// A condition after which the connection must close.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fatal {
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What the driver should do after a batch of frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Keep going.
    Continue,
    /// Flush the outbox, then close (logout, cold reset).
    Close,
}

/// A write command collecting its data.
struct WriteTask {
    lun: Lun,
    /// The command, parsed once when it arrived.
    command: Command,
    /// ExpectedDataTransferLength.
    edtl: u32,
    /// SCSI transfer length from the CDB (SPDTL).
    spdtl: u32,
    /// Bytes we keep: min(EDTL, SPDTL) when the CDB writes, else 0.
    needed: u32,
    buf: BytesMut,
    /// End of the unsolicited range: immediate data, plus unsolicited
    /// Data-Out up to FirstBurstLength when the command's F bit was 0.
    unsolicited_end: u32,
    /// Offset of the next unsolicited byte expected.
    unsolicited_next: u32,
    unsolicited_data_sn: u32,
    unsolicited_done: bool,
    /// Start of the next range to solicit with an R2T.
    next_r2t_offset: u32,
    next_r2t_sn: u32,
    r2ts: Vec<OutstandingR2t>,
    /// The bytes this task holds in the memory budget: its unsolicited
    /// data from the start, the rest once admitted.
    charge: Charge,
    /// Whether the solicited part is charged, so R2Ts may leave.
    admitted: bool,
    /// SIMPLE task attribute: may run beside others ([`super::deferred`]).
    simple: bool,
    /// When data last arrived for it (or it was admitted): the Data-Out
    /// deadline counts from here.
    last_data: Instant,
}

impl WriteTask {
    /// Whether the task waits for the initiator (unsolicited data or an
    /// answered R2T's data), not for memory.
    fn waits_for_initiator(&self) -> bool {
        !self.unsolicited_done || !self.r2ts.is_empty()
    }
}

/// How often write tasks waiting for memory retry while another session
/// holds it.
const MEMORY_RETRY: Duration = Duration::from_millis(20);

struct OutstandingR2t {
    ttt: u32,
    offset: u32,
    len: u32,
    received: u32,
    next_data_sn: u32,
}

/// A continuing Text Response too long for one PDU (§11.11, C bit).
struct TextOut {
    itt: u32,
    ttt: u32,
    rest: Bytes,
}

/// Keep-alive (§11.18, §11.19): after `interval` without a byte from the
/// initiator, ping it with a NOP-In that asks for an answer; no answer
/// within `timeout` means it is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Everything the full feature phase starts from: the login's outcome and
/// the target's limits. Built by the driver from a
/// [`LoginOutcome`](super::login::LoginOutcome), or by hand in tests.
pub struct FfpSetup {
    /// Negotiated values.
    pub params: FfpParams,
    /// The login's negotiation engine, for text negotiation in full
    /// feature phase.
    pub neg: Negotiator,
    pub kind: SessionKind,
    pub nexus: Nexus,
    pub luns: Arc<LunTable>,
    /// What SendTargets may answer.
    pub discovery: Vec<DiscoveryEntry>,
    /// This connection's CID (Logout of a connection names it).
    pub cid: u16,
    /// Digests and our receive limit, as negotiated.
    pub frame: FrameConfig,
    /// StatSN and ExpCmdSN continue from the login.
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    /// Commands the initiator may have queued (MaxCmdSN - ExpCmdSN + 1).
    pub command_window: u32,
    /// `None` disables keep-alive pings.
    pub keepalive: Option<KeepAlive>,
}

/// The full feature phase state of one connection.
pub struct FullFeature {
    params: FfpParams,
    /// The login's negotiation engine, for text negotiation in full
    /// feature phase.
    neg: Negotiator,
    kind: SessionKind,
    nexus: Nexus,
    luns: Arc<LunTable>,
    discovery: Vec<DiscoveryEntry>,
    cid: u16,
    frame_cfg: FrameConfig,
    out: Output,
    stat_sn: u32,
    exp_cmd_sn: u32,
    window: u32,
    /// Commands that arrived on this connection ahead of ExpCmdSN, by
    /// CmdSN.
    held: HashMap<u32, Frame>,
    /// The session's command window and connections
    /// ([`crate::session`]); `exp_cmd_sn` caches its ExpCmdSN.
    session: Arc<SessionShared>,
    /// This connection's identity in `session`.
    conn_id: u64,
    tasks: HashMap<u32, WriteTask>,
    next_ttt: u32,
    text_in: Vec<u8>,
    /// TTT we acknowledged a partial (C=1) Text Request with.
    text_in_ttt: Option<u32>,
    text_out: Option<TextOut>,
    /// TTT of our outstanding NOP-In ping, if any.
    ping: Option<u32>,
    keepalive: Option<KeepAlive>,
    /// When the last bytes arrived from the initiator.
    last_rx: Instant,
    /// When the outstanding ping left.
    ping_sent: Option<Instant>,
    logged_out: bool,
    /// The memory budget write data is charged to.
    memory: SessionMemory,
    /// Abort a write task whose data stops coming this long.
    data_out_timeout: Option<Duration>,
    /// Write tasks waiting for memory before their R2Ts, oldest first.
    starved: VecDeque<u32>,
    /// MaxCmdSN held here while memory is short (the window shrinks as
    /// ExpCmdSN advances); `None` while it follows ExpCmdSN.
    frozen_max: Option<u32>,
    /// When starved tasks next retry.
    retry_at: Option<Instant>,
    /// The latest time the driver gave.
    now: Instant,
    /// This connection's counters ([`crate::stats`]).
    stats: Arc<ConnStats>,
    /// Commands running on I/O workers ([`super::deferred`]); `None`: every
    /// command runs inline.
    deferred: Option<Deferred>,
    /// Writes held behind a READ sent with `sendfile` ([`super::fence`]).
    fence: SpliceFence,
}

/// Text payloads we are willing to reassemble (C bit).
const TEXT_LIMIT: usize = 64 * 1024;

impl FullFeature {
    /// Enters full feature phase at `now`.
    pub fn new(setup: FfpSetup, now: Instant) -> FullFeature {
        let FfpSetup {
            params,
            mut neg,
            kind,
            nexus,
            luns,
            discovery,
            cid,
            frame,
            stat_sn,
            exp_cmd_sn,
            command_window,
            keepalive,
        } = setup;
        neg.set_phase(Phase::FullFeature);
        FullFeature {
            params,
            neg,
            kind,
            nexus,
            luns,
            discovery,
            cid,
            frame_cfg: frame,
            out: Output::new(frame),
            stat_sn,
            exp_cmd_sn,
            window: command_window.max(1),
            held: HashMap::new(),
            session: SessionShared::new(exp_cmd_sn, 1),
            conn_id: 0,
            tasks: HashMap::new(),
            next_ttt: 1,
            text_in: Vec::new(),
            text_in_ttt: None,
            text_out: None,
            ping: None,
            keepalive,
            last_rx: now,
            ping_sent: None,
            logged_out: false,
            memory: SessionMemory::unlimited(),
            data_out_timeout: None,
            starved: VecDeque::new(),
            frozen_max: None,
            retry_at: None,
            now,
            stats: Arc::default(),
            deferred: None,
            fence: SpliceFence::default(),
        }
    }

    /// Makes this connection `conn_id` of `session`: its command window
    /// is the session's (RFC 7143 §4.2.2.1, multiple connections per
    /// session). The default is a session of its own.
    pub fn with_session(mut self, session: Arc<SessionShared>, conn_id: u64) -> FullFeature {
        self.exp_cmd_sn = session.exp_cmd_sn();
        self.session = session;
        self.conn_id = conn_id;
        self
    }

    /// Another connection of the session moved ExpCmdSN at `now`: runs the
    /// commands held here that are now next in CmdSN order.
    pub fn resume(&mut self, now: Instant) -> Result<After, Fatal> {
        self.now = now;
        if self.held.is_empty() {
            self.exp_cmd_sn = self.session.exp_cmd_sn();
            return Ok(After::Continue);
        }
        self.in_turn(Self::drain)
    }

    /// The connection ends: the commands it holds ahead of ExpCmdSN are
    /// terminated with it (RFC 7143 §6.3.4: its tasks end with it). Their
    /// CmdSNs count as received, so that the session's other connections
    /// are not left waiting for them.
    pub fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let _ = self.in_turn(|this| {
            for (sn, _) in this.held.drain() {
                this.session.mark_consumed(sn);
            }
            this.drain()
        });
    }

    /// Runs `f` holding the session's ordering lock, with ExpCmdSN taken
    /// from the session and given back to it; wakes the other connections
    /// when it moved.
    fn in_turn(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<After, Fatal>,
    ) -> Result<After, Fatal> {
        let session = self.session.clone();
        let _turn = session.turn();
        let before = session.exp_cmd_sn();
        self.exp_cmd_sn = before;
        let result = f(self);
        if self.exp_cmd_sn != before {
            session.set_exp_cmd_sn(self.exp_cmd_sn);
            session.wake_others(self.conn_id);
        }
        result
    }

    /// Takes the session's ExpCmdSN (other connections may have moved it).
    fn refresh_window(&mut self) {
        let sn = self.session.exp_cmd_sn();
        if serial::gt(sn, self.exp_cmd_sn) {
            self.exp_cmd_sn = sn;
        }
    }

    /// Runs READ and WRITE on LUs whose backend may block on worker
    /// threads, as [`super::deferred`] describes.
    pub fn with_deferred(mut self, deferred: Deferred) -> FullFeature {
        self.deferred = Some(deferred);
        self
    }

    /// Charges write data to `memory` (the default is unlimited) and
    /// aborts write tasks whose data stops coming for `data_out_timeout`.
    pub fn with_memory(
        mut self,
        memory: SessionMemory,
        data_out_timeout: Option<Duration>,
    ) -> FullFeature {
        self.memory = memory;
        self.data_out_timeout = data_out_timeout;
        self
    }

    /// Write tasks waiting for memory before their R2Ts.
    pub fn starved_tasks(&self) -> usize {
        self.starved.len()
    }

    /// Counts this connection's PDUs and errors into `stats`.
    pub fn set_stats(&mut self, stats: Arc<ConnStats>) {
        self.stats = stats;
    }

    /// This connection's counters.
    pub fn stats(&self) -> &Arc<ConnStats> {
        &self.stats
    }

    /// The PDUs queued for the initiator; the driver writes them out.
    pub fn outbox(&mut self) -> &mut Output {
        &mut self.out
    }

    /// The framing this connection negotiated.
    pub fn frame_config(&self) -> &FrameConfig {
        &self.frame_cfg
    }

    /// Bytes arrived at `now`: handles every whole PDU in `rbuf` and leaves
    /// a partial one there for the next call. Responses are queued in the
    /// [`outbox`](Self::outbox). An error means the stream cannot go on
    /// (header digest error, oversized data segment): close it.
    pub fn receive(&mut self, rbuf: &mut BytesMut, now: Instant) -> Result<After, Fatal> {
        self.last_rx = now;
        self.now = now;
        self.refresh_window();
        loop {
            match framing::decode(&self.frame_cfg, rbuf) {
                Ok(Some(frame)) => {
                    if self.admit(frame)? == After::Close {
                        return Ok(After::Close);
                    }
                }
                Ok(None) => {
                    self.admit_starved();
                    return Ok(After::Continue);
                }
                Err(FrameError::DataDigest { frame, .. }) => self.data_digest_error(&frame),
                Err(FrameError::HeaderDigest { bhs, .. }) => {
                    if let Some(c) = self.stats.counting() {
                        c.header_digest_errors.inc();
                    }
                    // The stream cannot be resynchronised (§7.8): drop.
                    return Err(Fatal::Protocol(format!("header digest error on {bhs:?}")));
                }
                Err(FrameError::DataSegmentTooLong { bhs, len, max }) => {
                    self.reject(RejectReason::PROTOCOL_ERROR, &bhs);
                    return Err(Fatal::Protocol(format!(
                        "data segment of {len} bytes exceeds {max}"
                    )));
                }
            }
        }
    }

    /// Handles `frame` unless the splice fence holds it ([`super::fence`]),
    /// then whatever the fence lets go.
    fn admit(&mut self, frame: Frame) -> Result<After, Fatal> {
        self.fence.saw(&frame);
        if let Some(frame) = self.fence.admit(frame) {
            if self.handle(frame)? == After::Close {
                return Ok(After::Close);
            }
        }
        while let Some(frame) = self.fence.release() {
            if self.handle(frame)? == After::Close {
                return Ok(After::Close);
            }
        }
        if self.fence.waiting() {
            // An answer carries the ExpStatSN that lets them go (false:
            // one is already on its way). Unanswered, keep-alive's timeout
            // drops the connection.
            if self.ping() {
                self.ping_sent = Some(self.now);
            }
        }
        Ok(After::Continue)
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work: the end
    /// of the silence after which we ping, or of the wait for the ping's
    /// answer. `None` without keep-alive. The deadline only ever moves
    /// later, so a driver may arm a timer once and re-arm it when it fires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keepalive = self.keepalive.map(|k| match (self.ping, self.ping_sent) {
            (Some(_), Some(sent)) => sent + k.timeout,
            _ => self.last_rx + k.interval,
        });
        let data_out = self.data_out_timeout.and_then(|t| {
            self.tasks
                .values()
                .filter(|task| task.waits_for_initiator())
                .map(|task| task.last_data + t)
                .min()
        });
        [keepalive, data_out, self.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The keep-alive clock at `now`: queues a NOP-In ping after
    /// `interval` of silence; [`After::Close`] when a ping went unanswered
    /// for `timeout` (the initiator is gone).
    pub fn handle_timeout(&mut self, now: Instant) -> After {
        self.now = now;
        self.refresh_window();
        self.expire_data_out(now);
        self.retry_at = None;
        self.admit_starved();
        let Some(k) = self.keepalive else {
            return After::Continue;
        };
        if self.ping.is_none() {
            self.ping_sent = None;
        }
        match self.ping_sent {
            Some(sent) if now.saturating_duration_since(sent) >= k.timeout => {
                if let Some(c) = self.stats.counting() {
                    c.nop_timeouts.inc();
                }
                tracing::info!(
                    initiator = %self.nexus.initiator_name,
                    "no answer to NOP-In within {:?}: dropping the connection",
                    k.timeout
                );
                After::Close
            }
            None if now.saturating_duration_since(self.last_rx) >= k.interval => {
                self.ping();
                self.ping_sent = Some(now);
                After::Continue
            }
            _ => After::Continue,
        }
    }

    /// The target stops: fails every write task still waiting for data
    /// (NOT READY, LOGICAL UNIT NOT READY, OFFLINE: 04h/12h) and announces the drop of the connection with an Asynchronous Message
    /// (§11.9.1, AsyncEvent 2, Parameter2 Time2Wait = 2 s).
    pub fn shutdown(&mut self) {
        self.abort_pending(&Sense::new(SenseKey::NOT_READY, Asc(0x0412)));
        self.async_message(pdu::AsyncEvent::CONNECTION_DROP, 2, 0);
    }

    fn max_cmd_sn(&self) -> u32 {
        self.frozen_max
            .unwrap_or_else(|| self.exp_cmd_sn.wrapping_add(self.window - 1))
    }

    /// Aborts write tasks whose data has not come for the Data-Out
    /// deadline: CHECK CONDITION, ABORTED COMMAND, INITIATOR RESPONSE
    /// TIMEOUT (4Bh/06h); their buffers and budget are freed.
    fn expire_data_out(&mut self, now: Instant) {
        let Some(timeout) = self.data_out_timeout else {
            return;
        };
        let expired: Vec<(u32, Lun)> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.waits_for_initiator() && now.saturating_duration_since(t.last_data) >= timeout
            })
            .map(|(itt, t)| (*itt, t.lun))
            .collect();
        if !expired.is_empty() {
            tracing::info!(
                initiator = %self.nexus.initiator_name,
                tasks = expired.len(),
                "write data did not come within {timeout:?}: aborting the tasks"
            );
        }
        for (itt, lun) in expired {
            self.tasks.remove(&itt);
            self.fail_task(itt, lun, &Sense::aborted_command(Asc(0x4b06)));
        }
    }

    /// Charges the solicited part of a write task if memory allows, in
    /// arrival order: a task behind others waiting for memory waits too.
    fn try_admit(&mut self, itt: u32) -> bool {
        let first_in_line = self.starved.front().is_none_or(|f| *f == itt);
        let Some(task) = self.tasks.get_mut(&itt) else {
            return false;
        };
        if task.admitted {
            return true;
        }
        if first_in_line {
            let rest = u64::from(task.needed - task.unsolicited_end.min(task.needed));
            if let Some(c) = self.memory.try_charge(rest) {
                task.charge.absorb(c);
                task.admitted = true;
                task.last_data = self.now;
                if self.starved.front() == Some(&itt) {
                    self.starved.pop_front();
                }
                return true;
            }
        }
        if !self.starved.contains(&itt) {
            self.starved.push_back(itt);
        }
        false
    }

    /// Lets tasks waiting for memory go on while it allows, then sets the
    /// command window: while memory is short MaxCmdSN stops advancing.
    fn admit_starved(&mut self) {
        while let Some(&itt) = self.starved.front() {
            if !self.tasks.contains_key(&itt) {
                self.starved.pop_front();
                continue;
            }
            if !self.try_admit(itt) {
                break;
            }
            self.progress(itt);
        }
        let short = !self.starved.is_empty() || self.memory.exhausted();
        match (short, self.frozen_max) {
            (true, None) => self.frozen_max = Some(self.max_cmd_sn()),
            (false, Some(_)) => self.frozen_max = None,
            _ => {}
        }
        self.retry_at = (!self.starved.is_empty()).then(|| self.now + MEMORY_RETRY);
    }

    fn next_stat_sn(&mut self) -> u32 {
        let sn = self.stat_sn;
        self.stat_sn = sn.wrapping_add(1);
        sn
    }

    fn new_ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        t
    }

    /// The session's I_T nexus ended, by Logout or otherwise (SAM-5
    /// §6.3.4); see [`LunTable::nexus_loss`].
    pub fn end_of_nexus(&self, end: NexusEnd) {
        if self.kind == SessionKind::Normal {
            self.luns.nexus_loss(&self.nexus, end);
        }
    }

    /// Whether commands of this session may wait on a slow backend.
    pub fn may_block(&self) -> bool {
        self.luns.may_block()
    }

    /// Whether a Logout was answered with success.
    pub fn logged_out(&self) -> bool {
        self.logged_out
    }

    /// Write tasks still waiting for data.
    pub fn pending_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Handles one frame from the initiator.
    pub fn handle(&mut self, frame: Frame) -> Result<After, Fatal> {
        if let Some(c) = self.stats.counting() {
            c.pdus_in.inc();
        }
        let op = frame.bhs.opcode();
        match op {
            Opcode::NOP_OUT
            | Opcode::SCSI_COMMAND
            | Opcode::TASK_MGMT_REQUEST
            | Opcode::TEXT_REQUEST
            | Opcode::LOGOUT_REQUEST => self.ordered(frame),
            Opcode::DATA_OUT => {
                self.data_out(&frame);
                Ok(After::Continue)
            }
            // SNACK needs ErrorRecoveryLevel > 0, which we never agree to.
            Opcode::SNACK_REQUEST | Opcode::LOGIN_REQUEST => {
                self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
                Ok(After::Continue)
            }
            _ if !op.is_initiator() => {
                self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
                Ok(After::Continue)
            }
            _ => {
                self.reject(RejectReason::COMMAND_NOT_SUPPORTED, &frame.bhs);
                Ok(After::Continue)
            }
        }
    }

    /// A frame whose data digest failed (the header is sound): Reject it
    /// (§7.8). A write task losing Data-Out this way cannot complete at
    /// ErrorRecoveryLevel 0, so it fails.
    pub fn data_digest_error(&mut self, frame: &Frame) {
        if let Some(c) = self.stats.counting() {
            c.data_digest_errors.inc();
        }
        self.reject(RejectReason::DATA_DIGEST_ERROR, &frame.bhs);
        if frame.bhs.opcode() == Opcode::DATA_OUT {
            let itt = frame.bhs.itt();
            if let Some(task) = self.tasks.remove(&itt) {
                self.fail_task(itt, task.lun, &Sense::aborted_command(Asc(0x4701)));
            }
        }
    }

    /// CmdSN ordering (§4.2.2.1, §3.2.2.1), session-wide: under the
    /// session's ordering lock.
    fn ordered(&mut self, frame: Frame) -> Result<After, Fatal> {
        self.in_turn(|this| this.ordered_in_turn(frame))
    }

    fn ordered_in_turn(&mut self, frame: Frame) -> Result<After, Fatal> {
        if frame.bhs.immediate() {
            return self.dispatch(frame);
        }
        let cmd_sn = frame.bhs.u32_at(24);
        if cmd_sn != self.exp_cmd_sn {
            if serial::in_window(cmd_sn, self.exp_cmd_sn, self.max_cmd_sn())
                && !self.held.contains_key(&cmd_sn)
            {
                self.held.insert(cmd_sn, frame);
            } else {
                tracing::debug!(
                    cmd_sn,
                    exp = self.exp_cmd_sn,
                    "CmdSN outside the window: ignored"
                );
            }
            return Ok(After::Continue);
        }
        let after = self.advance_and_dispatch(frame)?;
        if after == After::Continue {
            self.drain()
        } else {
            Ok(after)
        }
    }

    /// Runs what waited for ExpCmdSN to advance: CmdSNs marked consumed are
    /// skipped, held commands run in order.
    fn drain(&mut self) -> Result<After, Fatal> {
        loop {
            if self.session.take_consumed(self.exp_cmd_sn) {
                self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
                continue;
            }
            match self.held.remove(&self.exp_cmd_sn) {
                Some(next) => {
                    let after = self.advance_and_dispatch(next)?;
                    if after != After::Continue {
                        return Ok(after);
                    }
                }
                None => return Ok(After::Continue),
            }
        }
    }

    fn advance_and_dispatch(&mut self, frame: Frame) -> Result<After, Fatal> {
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        self.dispatch(frame)
    }

    fn dispatch(&mut self, frame: Frame) -> Result<After, Fatal> {
        let op = frame.bhs.opcode();
        if op != Opcode::SCSI_COMMAND && op != Opcode::NOP_OUT {
            // Task management, Text, Logout: after every running command.
            self.drain_deferred();
        }
        match Pdu::decode(&frame.bhs) {
            Pdu::ScsiCommand(cmd) => self.scsi_command(cmd, &frame),
            Pdu::NopOut(nop) => self.nop_out(nop, frame.data),
            Pdu::TaskMgmtRequest(tmf) => return self.task_management(tmf),
            Pdu::TextRequest(req) => self.text_request(req, &frame.data),
            Pdu::LogoutRequest(req) => return Ok(self.logout(req)),
            _ => self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs),
        }
        Ok(After::Continue)
    }

    // ---- SCSI commands ----------------------------------------------------

    fn scsi_command(&mut self, cmd: ScsiCommand, frame: &Frame) {
        if let Some(c) = self.stats.counting() {
            c.commands.inc();
        }
        if self.kind == SessionKind::Discovery {
            self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            return;
        }
        if cmd.itt == RESERVED_TAG || self.tasks.contains_key(&cmd.itt) || self.is_running(cmd.itt)
        {
            self.reject(RejectReason::TASK_IN_PROGRESS, &frame.bhs);
            return;
        }
        // The CDB stays in the BHS's 16 bytes unless an AHS extends it.
        let cdb = if frame.ahs.is_empty() {
            RawCdb::Header(cmd.cdb)
        } else {
            match pdu::ahs::full_cdb(&cmd.cdb, &frame.ahs) {
                Ok(cdb) => RawCdb::Extended(cdb.into()),
                Err(_) => {
                    self.reject(RejectReason::INVALID_PDU_FIELD, &frame.bhs);
                    return;
                }
            }
        };
        let edtl = cmd.expected_data_transfer_length;
        // Parsed once: the transfer now, the same command runs later.
        let mut command = self.luns.prepare(cmd.lun, cdb);
        if !self.frame_cfg.data_digest && self.session.max_connections == 1 {
            // A READ's data may then go from the file to the socket. Not in
            // a session that may have several connections: the fence that
            // holds a later WRITE until the READ's data has left the page
            // cache watches one connection, and a WRITE on another one
            // could change bytes the first is still sending.
            command.allow_splice();
        }
        let transfer = command.transfer();
        let immediate = frame.data.len() as u32;
        if immediate > 0
            && (!cmd.write
                || !self.params.immediate_data
                || immediate > edtl
                || immediate > self.params.first_burst_length)
        {
            // Immediate data the session did not allow, or more than the
            // command or first burst can hold (§11.3.4, §13.13).
            self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            return;
        }
        if !cmd.final_bit && (!cmd.write || self.params.initial_r2t) {
            // F=0 announces unsolicited Data-Out, which InitialR2T=Yes forbids.
            self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            return;
        }
        if cmd.write && edtl > 0 {
            let needed = if transfer.direction == Direction::Write {
                edtl.min(transfer.length)
            } else {
                0
            };
            let unsolicited_end = if cmd.final_bit {
                immediate
            } else {
                edtl.min(self.params.first_burst_length).max(immediate)
            };
            if !self.memory.can_ever_fit(u64::from(needed)) {
                // More than the session's share of memory: it could never
                // be admitted (INSUFFICIENT RESOURCES, 55h/03h).
                tracing::info!(
                    itt = cmd.itt,
                    needed,
                    "write larger than the session's memory share: refused"
                );
                let sense = Sense::new(SenseKey::ILLEGAL_REQUEST, Asc(0x5503));
                self.fail_task(cmd.itt, cmd.lun, &sense);
                return;
            }
            // The unsolicited part has come or will come unasked: charged
            // now, past the budget if need be (the window shrinks then).
            let unsolicited = unsolicited_end.min(needed);
            let charge = self.memory.force_charge(u64::from(unsolicited));
            let keep = immediate.min(needed) as usize;
            let mut buf = BytesMut::with_capacity(unsolicited as usize);
            buf.extend_from_slice(&frame.data[..keep]);
            let task = WriteTask {
                lun: cmd.lun,
                command,
                edtl,
                spdtl: transfer.length,
                needed,
                buf,
                unsolicited_end,
                unsolicited_next: immediate,
                unsolicited_data_sn: 0,
                unsolicited_done: cmd.final_bit,
                next_r2t_offset: unsolicited_end,
                next_r2t_sn: 0,
                r2ts: Vec::new(),
                charge,
                admitted: needed <= unsolicited_end,
                simple: cmd.attr == pdu::TaskAttr::SIMPLE,
                last_data: self.now,
            };
            self.tasks.insert(cmd.itt, task);
            self.progress(cmd.itt);
        } else {
            let wanted = if transfer.direction == Direction::Write {
                transfer.length
            } else {
                0
            };
            let simple = cmd.attr == pdu::TaskAttr::SIMPLE;
            if let Some(access) = self.may_defer(cmd.lun, command.raw(), simple) {
                let run = Running {
                    lun: cmd.lun,
                    edtl,
                    read: cmd.read,
                    wanted_out: wanted,
                    r2ts: 0,
                    access,
                    charge: None,
                };
                self.defer(cmd.itt, command, Bytes::new(), run);
                return;
            }
            let completion = self.luns.run(&self.nexus, &command, &[], edtl);
            self.complete(cmd.itt, cmd.lun, edtl, cmd.read, wanted, 0, completion);
        }
    }

    /// Issues R2Ts while allowed and runs the command once all its data is in.
    fn progress(&mut self, itt: u32) {
        let Some(task) = self.tasks.get(&itt) else {
            return;
        };
        let done =
            task.unsolicited_done && task.r2ts.is_empty() && task.next_r2t_offset >= task.needed;
        if done {
            let Some(mut task) = self.tasks.remove(&itt) else {
                return;
            };
            if task.buf.len() < task.needed as usize {
                task.buf.resize(task.needed as usize, 0);
            }
            if let Some(access) = self.may_defer(task.lun, task.command.raw(), task.simple) {
                let run = Running {
                    lun: task.lun,
                    edtl: task.edtl,
                    read: false,
                    wanted_out: task.spdtl,
                    r2ts: task.next_r2t_sn,
                    access,
                    charge: Some(task.charge),
                };
                self.defer(itt, task.command, task.buf.freeze(), run);
                return;
            }
            let completion = self
                .luns
                .run(&self.nexus, &task.command, &task.buf, task.edtl);
            let wanted = task.spdtl;
            self.complete(
                itt,
                task.lun,
                task.edtl,
                false,
                wanted,
                task.next_r2t_sn,
                completion,
            );
            return;
        }
        if !self.try_admit(itt) {
            // No memory for its data yet: no R2T until there is.
            return;
        }
        let max_burst = self.params.max_burst_length;
        let max_out = self.params.max_outstanding_r2t as usize;
        let (exp, max) = (self.exp_cmd_sn, self.max_cmd_sn());
        let mut issue = Vec::new();
        {
            let Some(task) = self.tasks.get_mut(&itt) else {
                return;
            };
            while task.r2ts.len() + issue.len() < max_out && task.next_r2t_offset < task.needed {
                let len = (task.needed - task.next_r2t_offset).min(max_burst);
                issue.push((task.next_r2t_offset, len, task.next_r2t_sn, task.lun));
                task.next_r2t_offset += len;
                task.next_r2t_sn += 1;
            }
            // Room for the data just asked for, as it is asked for.
            let want = task.next_r2t_offset.min(task.needed) as usize;
            if task.buf.capacity() < want {
                task.buf.reserve(want - task.buf.len());
            }
        }
        for (offset, len, r2t_sn, lun) in issue {
            let ttt = self.new_ttt();
            let r2t = R2t {
                lun,
                itt,
                ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                r2t_sn,
                buffer_offset: offset,
                desired_data_transfer_length: len,
            };
            self.out.push(Pdu::R2t(r2t).encode(), Bytes::new());
            if let Some(task) = self.tasks.get_mut(&itt) {
                task.r2ts.push(OutstandingR2t {
                    ttt,
                    offset,
                    len,
                    received: 0,
                    next_data_sn: 0,
                });
            }
        }
    }

    fn data_out(&mut self, frame: &Frame) {
        let d = DataOut::decode(&frame.bhs);
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            // Data for a task that failed or never existed (§11.7): nothing
            // to attach it to. Dropping it keeps the session usable.
            tracing::debug!(itt = d.itt, "Data-Out for no pending task: dropped");
            return;
        };
        let len = frame.data.len() as u32;
        let check = if d.ttt == RESERVED_TAG {
            if task.unsolicited_done {
                Err(Asc(0x4b02)) // TOO MUCH WRITE DATA
            } else if d.data_sn != task.unsolicited_data_sn {
                Err(Asc(0x4b00)) // DATA PHASE ERROR
            } else if d.buffer_offset != task.unsolicited_next {
                Err(Asc(0x4b05)) // DATA OFFSET ERROR
            } else if d
                .buffer_offset
                .checked_add(len)
                .is_none_or(|end| end > task.unsolicited_end)
            {
                Err(Asc(0x4b02))
            } else {
                task.unsolicited_data_sn += 1;
                task.unsolicited_next += len;
                if d.final_bit {
                    if task.unsolicited_next != task.unsolicited_end {
                        Err(Asc(0x4b00))
                    } else {
                        task.unsolicited_done = true;
                        Ok(())
                    }
                } else {
                    Ok(())
                }
            }
        } else {
            match task.r2ts.iter().position(|r| r.ttt == d.ttt) {
                None => Err(Asc(0x4b01)), // INVALID TARGET PORT TRANSFER TAG RECEIVED
                Some(i) => {
                    let r = &mut task.r2ts[i];
                    if d.data_sn != r.next_data_sn {
                        Err(Asc(0x4b00))
                    } else if d.buffer_offset != r.offset + r.received {
                        Err(Asc(0x4b05))
                    } else if r.received + len > r.len {
                        Err(Asc(0x4b02))
                    } else {
                        r.received += len;
                        r.next_data_sn += 1;
                        if d.final_bit {
                            if r.received != r.len {
                                Err(Asc(0x4b00))
                            } else {
                                task.r2ts.remove(i);
                                Ok(())
                            }
                        } else {
                            Ok(())
                        }
                    }
                }
            }
        };
        match check {
            Ok(()) => {
                // Keep the bytes below `needed`; past it (EDTL > SPDTL) the
                // initiator's data is surplus and dropped.
                let start = d.buffer_offset as usize;
                let end = (start + frame.data.len()).min(task.needed as usize);
                if start < end {
                    if task.buf.len() < end {
                        task.buf.resize(end, 0);
                    }
                    task.buf[start..end].copy_from_slice(&frame.data[..end - start]);
                }
                task.last_data = self.now;
                self.progress(d.itt);
            }
            Err(asc) => {
                tracing::debug!(itt = d.itt, ?asc, "Data-Out sequence error: task fails");
                if let Some(task) = self.tasks.remove(&d.itt) {
                    self.fail_task(d.itt, task.lun, &Sense::aborted_command(asc));
                }
            }
        }
    }

    fn fail_task(&mut self, itt: u32, lun: Lun, sense: &Sense) {
        self.complete(itt, lun, 0, false, 0, 0, Completion::check_condition(sense));
    }

    /// Sends a command's data and status. `r2ts` is how many R2Ts the
    /// command's data took: with the Data-Ins sent here, its ExpDataSN
    /// (§11.4.8).
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &mut self,
        itt: u32,
        lun: Lun,
        edtl: u32,
        read: bool,
        wanted_out: u32,
        r2ts: u32,
        c: Completion,
    ) {
        let data_len = c.data_len() as u32;
        let send = if read { data_len.min(edtl) } else { 0 };
        // Residual against what the command wanted to move: read data it
        // produced, or write data its CDB asked for.
        let wanted = if read || data_len > 0 {
            data_len
        } else {
            wanted_out
        };
        let residual = Residual::of(edtl, wanted);
        let good = c.status == ScsiStatus::GOOD.0 && c.sense.is_none();
        if c.spliced.is_some() && send > 0 {
            // Its status is the next StatSN (in the last Data-In or the
            // response below): acknowledged once ExpStatSN passes it.
            self.fence.spliced(self.stat_sn.wrapping_add(1));
        }
        let mut offset = 0u32;
        let mut data_sn = 0u32;
        let mut burst_left = self.params.max_burst_length;
        while offset < send {
            let seg = (send - offset)
                .min(self.params.initiator_mrdsl)
                .min(burst_left);
            let last = offset + seg == send;
            burst_left -= seg;
            let end_of_burst = last || burst_left == 0;
            if burst_left == 0 {
                burst_left = self.params.max_burst_length;
            }
            let collapse = last && good;
            let din = DataIn {
                final_bit: end_of_burst,
                acknowledge: false,
                status: collapse.then_some(c.status),
                residual: if collapse { residual } else { Residual::None },
                lun,
                itt,
                ttt: RESERVED_TAG,
                stat_sn: if collapse {
                    self.next_stat_sn()
                } else {
                    self.stat_sn
                },
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                data_sn,
                buffer_offset: offset,
            };
            let range = offset as usize..(offset + seg) as usize;
            match &c.spliced {
                None => self
                    .out
                    .push(Pdu::DataIn(din).encode(), c.data.slice(range)),
                Some(file) => {
                    if let Err(e) = self
                        .out
                        .push_spliced(Pdu::DataIn(din).encode(), file.slice(range))
                    {
                        // Only with a data digest, which never splices.
                        tracing::warn!(itt, "read data lost from the backing file: {e}");
                    }
                }
            }
            offset += seg;
            data_sn += 1;
            if collapse {
                return;
            }
        }
        let rsp = ScsiResponse {
            itt,
            response: ScsiResponseCode::COMMAND_COMPLETED,
            status: c.status,
            residual,
            bidi_residual: Residual::None,
            snack_tag: 0,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            exp_data_sn: data_sn + r2ts,
        };
        let data = c
            .sense
            .as_deref()
            .map(pdu::scsi::encode_sense_segment)
            .unwrap_or_default();
        self.out.push(Pdu::ScsiResponse(rsp).encode(), data);
    }

    // ---- Deferred execution ([`super::deferred`]) ---------------------------

    /// Whether `itt` is running on a worker.
    fn is_running(&self, itt: u32) -> bool {
        self.deferred
            .as_ref()
            .is_some_and(|d| d.running.contains_key(&itt))
    }

    /// Whether the command may go to a worker: `Some(range)` once it may
    /// start (after waiting for a conflicting command or a free worker).
    /// `None`: it runs inline, after every running command has completed.
    fn may_defer(&mut self, lun: Lun, cdb: &[u8], simple: bool) -> Option<Access> {
        let d = self.deferred.as_ref()?;
        let access = Access::of(lun, cdb)
            .filter(|_| simple && self.luns.get(lun).is_some_and(|lu| lu.may_block()));
        let Some(access) = access else {
            if d.running() > 0 {
                self.drain_deferred();
            }
            return None;
        };
        if d.conflicts(&access) {
            self.drain_deferred();
        }
        while self
            .deferred
            .as_ref()
            .is_some_and(|d| d.running() >= d.workers)
        {
            self.wait_one();
        }
        Some(access)
    }

    /// Sends a command to a worker.
    fn defer(&mut self, itt: u32, command: Command, data: Bytes, run: Running) {
        let (luns, nexus) = (self.luns.clone(), self.nexus.clone());
        let Some(d) = self.deferred.as_mut() else {
            return;
        };
        let edtl = run.edtl;
        d.running.insert(itt, run);
        let (done, wake) = (d.done_tx.clone(), d.wake.clone());
        (d.spawn)(Box::new(move || {
            let c = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                luns.run(&nexus, &command, &data, edtl)
            }))
            .unwrap_or_else(|_| {
                tracing::error!(itt, "a command panicked on its I/O worker");
                // INTERNAL TARGET FAILURE (44h/00h).
                Completion::check_condition(&Sense::new(SenseKey::HARDWARE_ERROR, Asc(0x4400)))
            });
            let _ = done.send((itt, c));
            wake();
        }));
    }

    /// Answers a command a worker finished.
    fn finish_deferred(&mut self, itt: u32, c: Completion) {
        let Some(run) = self.deferred.as_mut().and_then(|d| d.running.remove(&itt)) else {
            return;
        };
        self.complete(
            itt,
            run.lun,
            run.edtl,
            run.read,
            run.wanted_out,
            run.r2ts,
            c,
        );
        drop(run.charge);
    }

    /// Blocks until one running command finishes, and answers it.
    fn wait_one(&mut self) {
        // The sender lives in `self`: `recv` never fails.
        let got = self.deferred.as_ref().map(|d| d.done_rx.recv());
        if let Some(Ok((itt, c))) = got {
            self.finish_deferred(itt, c);
        }
    }

    /// Answers every command the workers have finished; does not block.
    pub fn poll_deferred(&mut self) {
        self.refresh_window();
        loop {
            let got = self.deferred.as_ref().map(|d| d.done_rx.try_recv());
            match got {
                Some(Ok((itt, c))) => self.finish_deferred(itt, c),
                _ => return,
            }
        }
    }

    /// Blocks until every running command has finished, and answers them.
    pub fn drain_deferred(&mut self) {
        while self.deferred.as_ref().is_some_and(|d| d.running() > 0) {
            self.wait_one();
        }
    }

    // ---- NOP --------------------------------------------------------------

    fn nop_out(&mut self, nop: NopOut, data: Bytes) {
        if nop.itt == RESERVED_TAG {
            // No reply wanted; with a TTT it answers our ping (§11.18).
            if nop.ttt != RESERVED_TAG && self.ping == Some(nop.ttt) {
                self.ping = None;
            }
            return;
        }
        let rsp = NopIn {
            lun: nop.lun,
            itt: nop.itt,
            ttt: RESERVED_TAG,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        // The ping data comes back as it came (§11.19), within the
        // initiator's receive limit.
        let echo = data.slice(..data.len().min(self.params.initiator_mrdsl as usize));
        self.out.push(Pdu::NopIn(rsp).encode(), echo);
    }

    /// Whether our last NOP-In ping is still unanswered.
    pub fn ping_outstanding(&self) -> bool {
        self.ping.is_some()
    }

    /// Queues a NOP-In ping asking for an answer; returns false if the
    /// previous ping is still unanswered (the peer is gone).
    fn ping(&mut self) -> bool {
        if self.ping.is_some() {
            return false;
        }
        let ttt = self.new_ttt();
        self.ping = Some(ttt);
        let nop = NopIn {
            lun: Lun(0),
            itt: RESERVED_TAG,
            ttt,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.out.push(Pdu::NopIn(nop).encode(), Bytes::new());
        true
    }

    // ---- Task management (§11.5, §4.2.3) ----------------------------------

    fn task_management(&mut self, tmf: TaskMgmtRequest) -> Result<After, Fatal> {
        let mut after = After::Continue;
        let lun_exists = self.luns.get(tmf.lun).is_some();
        let response = match tmf.function {
            _ if self.kind == SessionKind::Discovery => TmfResponse::FUNCTION_REJECTED,
            TmfFunction::ABORT_TASK => {
                let r = tmf.referenced_task_tag;
                if self.tasks.remove(&r).is_some() {
                    TmfResponse::FUNCTION_COMPLETE
                } else if let Some(sn) = self
                    .held
                    .iter()
                    .find(|(_, f)| f.bhs.itt() == r)
                    .map(|(sn, _)| *sn)
                {
                    self.held.remove(&sn);
                    self.session.mark_consumed(sn);
                    TmfResponse::FUNCTION_COMPLETE
                } else if serial::in_window(tmf.ref_cmd_sn, self.exp_cmd_sn, self.max_cmd_sn())
                    && serial::lt(tmf.ref_cmd_sn, tmf.cmd_sn)
                {
                    // Never received but inside the window: consider it
                    // received so the window does not stall (§11.5.1).
                    self.session.mark_consumed(tmf.ref_cmd_sn);
                    TmfResponse::FUNCTION_COMPLETE
                } else {
                    TmfResponse::TASK_DOES_NOT_EXIST
                }
            }
            TmfFunction::ABORT_TASK_SET
            | TmfFunction::CLEAR_TASK_SET
            | TmfFunction::LOGICAL_UNIT_RESET
                if !lun_exists =>
            {
                TmfResponse::LUN_DOES_NOT_EXIST
            }
            TmfFunction::ABORT_TASK_SET | TmfFunction::CLEAR_TASK_SET => {
                self.tasks.retain(|_, t| t.lun != tmf.lun);
                TmfResponse::FUNCTION_COMPLETE
            }
            TmfFunction::LOGICAL_UNIT_RESET => {
                self.tasks.retain(|_, t| t.lun != tmf.lun);
                self.luns.logical_unit_reset(tmf.lun);
                TmfResponse::FUNCTION_COMPLETE
            }
            TmfFunction::I_T_NEXUS_RESET => {
                self.tasks.clear();
                self.luns.nexus_loss(&self.nexus, NexusEnd::Lost);
                TmfResponse::FUNCTION_COMPLETE
            }
            TmfFunction::TARGET_WARM_RESET | TmfFunction::TARGET_COLD_RESET => {
                // Tasks of other sessions that still wait for write data
                // complete when it arrives; the LUs' reset and unit
                // attentions reach every nexus.
                self.tasks.clear();
                self.luns.target_reset();
                if tmf.function == TmfFunction::TARGET_COLD_RESET {
                    after = After::Close;
                }
                TmfResponse::FUNCTION_COMPLETE
            }
            TmfFunction::QUERY_TASK => {
                if self.tasks.contains_key(&tmf.referenced_task_tag) {
                    TmfResponse::FUNCTION_SUCCEEDED
                } else {
                    TmfResponse::FUNCTION_COMPLETE
                }
            }
            TmfFunction::QUERY_TASK_SET => {
                if self.tasks.values().any(|t| t.lun == tmf.lun) {
                    TmfResponse::FUNCTION_SUCCEEDED
                } else {
                    TmfResponse::FUNCTION_COMPLETE
                }
            }
            TmfFunction::TASK_REASSIGN => TmfResponse::REASSIGNMENT_NOT_SUPPORTED,
            _ => TmfResponse::FUNCTION_NOT_SUPPORTED,
        };
        // A CmdSN marked consumed may be the one the window waits for.
        if after == After::Continue {
            after = self.drain()?;
        }
        let rsp = TaskMgmtResponse {
            response,
            itt: tmf.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.out
            .push(Pdu::TaskMgmtResponse(rsp).encode(), Bytes::new());
        Ok(after)
    }

    // ---- Text (§11.10, §11.11) ---------------------------------------------

    fn text_request(&mut self, req: TextRequest, data: &[u8]) {
        let reject = |this: &mut Self, reason| {
            let mut bhs = Pdu::TextRequest(req.clone()).encode();
            bhs.set_data_segment_len(data.len() as u32);
            this.reject(reason, &bhs);
        };
        if req.ttt == RESERVED_TAG {
            // A new exchange; one in progress is abandoned (§11.10.4).
            self.text_in.clear();
            self.text_in_ttt = None;
            self.text_out = None;
        } else if let Some(t) = self
            .text_out
            .take_if(|t| t.ttt == req.ttt && t.itt == req.itt)
        {
            // The initiator fetches the rest of our long answer.
            self.send_text(req.itt, req.lun, t.rest);
            return;
        } else if self.text_in_ttt != Some(req.ttt) {
            reject(self, RejectReason::INVALID_PDU_FIELD);
            return;
        }
        if self.text_in.len() + data.len() > TEXT_LIMIT {
            self.text_in.clear();
            self.text_in_ttt = None;
            reject(self, RejectReason::PROTOCOL_ERROR);
            return;
        }
        self.text_in.extend_from_slice(data);
        if req.continue_bit {
            // More to come: acknowledge with an empty response whose TTT
            // the next part carries (§11.10.2).
            let ttt = self.new_ttt();
            self.text_in_ttt = Some(ttt);
            let rsp = TextResponse {
                final_bit: false,
                continue_bit: false,
                lun: req.lun,
                itt: req.itt,
                ttt,
                stat_sn: self.next_stat_sn(),
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
            };
            self.out.push(Pdu::TextResponse(rsp).encode(), Bytes::new());
            return;
        }
        self.text_in_ttt = None;
        let payload = std::mem::take(&mut self.text_in);
        match self.answer_text(&payload) {
            Ok(answer) => self.send_text(req.itt, req.lun, answer),
            Err(reason) => reject(self, reason),
        }
    }

    /// Answers a complete text payload (§6.5, §11.10): SendTargets here,
    /// every other key through the login's negotiation engine (unknown keys
    /// get NotUnderstood, login-only keys Reject).
    fn answer_text(&mut self, payload: &[u8]) -> Result<Bytes, RejectReason> {
        let pairs = text::decode(payload).map_err(|_| RejectReason::PROTOCOL_ERROR)?;
        self.neg.start_text_negotiation();
        let reply = self
            .neg
            .receive(&pairs)
            .map_err(|_| RejectReason::PROTOCOL_ERROR)?;
        let mut out = Vec::new();
        for kv in reply.delegated.iter().filter(|kv| kv.key == "SendTargets") {
            self.send_targets(&kv.value, &mut out);
        }
        text::encode(&reply.answers, &mut out);
        // MaxRecvDataSegmentLength may be re-declared in full feature phase;
        // only a declaration changes it.
        if pairs.iter().any(|kv| kv.key == "MaxRecvDataSegmentLength") {
            self.params.initiator_mrdsl = self.neg.params().initiator_mrdsl;
        }
        Ok(Bytes::from(out))
    }

    /// SendTargets (RFC 7143 Appendix C): `All` lists every target, an empty
    /// value the session's own target, an iSCSI name that target if it
    /// exists. Anything else is not a valid value: Reject.
    fn send_targets(&self, value: &str, out: &mut Vec<u8>) {
        let is_name = ["iqn.", "eui.", "naa."]
            .iter()
            .any(|p| value.starts_with(p));
        if value != "All" && !value.is_empty() && !is_name {
            out.extend_from_slice(b"SendTargets=Reject\0");
            return;
        }
        for entry in &self.discovery {
            let wanted = match value {
                "All" => true,
                "" => *entry.target_name == *self.nexus.target_name,
                name => name == entry.target_name,
            };
            if wanted {
                out.extend_from_slice(format!("TargetName={}\0", entry.target_name).as_bytes());
                for a in &entry.addresses {
                    out.extend_from_slice(format!("TargetAddress={a}\0").as_bytes());
                }
            }
        }
    }

    /// Sends a text answer, split with C=1 when it exceeds the initiator's
    /// MaxRecvDataSegmentLength (§11.11.2).
    fn send_text(&mut self, itt: u32, lun: Lun, answer: Bytes) {
        let limit = self.params.initiator_mrdsl as usize;
        let (now, rest) = if answer.len() > limit {
            (answer.slice(..limit), Some(answer.slice(limit..)))
        } else {
            (answer, None)
        };
        let ttt = if rest.is_some() {
            self.new_ttt()
        } else {
            RESERVED_TAG
        };
        let rsp = TextResponse {
            final_bit: rest.is_none(),
            continue_bit: rest.is_some(),
            lun,
            itt,
            ttt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.out.push(Pdu::TextResponse(rsp).encode(), now);
        if let Some(rest) = rest {
            self.text_out = Some(TextOut { itt, ttt, rest });
        }
    }

    // ---- Logout (§11.14) ----------------------------------------------------

    /// Reason 0 closes the session: every connection of it; reason 1 one
    /// connection, this one or (named by its CID) another of the session,
    /// which is told to close while this one goes on.
    fn logout(&mut self, req: LogoutRequest) -> After {
        let (response, after) = match req.reason {
            LogoutReason::CLOSE_SESSION => {
                self.session
                    .close_all(self.conn_id, "session logged out on another connection");
                (LogoutResponseCode::SUCCESS, After::Close)
            }
            LogoutReason::CLOSE_CONNECTION if req.cid == self.cid => {
                (LogoutResponseCode::SUCCESS, After::Close)
            }
            LogoutReason::CLOSE_CONNECTION
                if self.session.close_cid(
                    req.cid,
                    self.conn_id,
                    "logged out from another connection of the session",
                ) =>
            {
                (LogoutResponseCode::SUCCESS, After::Continue)
            }
            LogoutReason::CLOSE_CONNECTION => (LogoutResponseCode::CID_NOT_FOUND, After::Continue),
            // Connection recovery needs ErrorRecoveryLevel 2.
            _ => (LogoutResponseCode::RECOVERY_NOT_SUPPORTED, After::Continue),
        };
        if after == After::Close {
            self.tasks.clear();
            self.logged_out = true;
        }
        let rsp = LogoutResponse {
            response,
            itt: req.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            time2wait: 0,
            time2retain: 0,
        };
        self.out
            .push(Pdu::LogoutResponse(rsp).encode(), Bytes::new());
        after
    }

    // ---- Reject (§11.17) ------------------------------------------------------

    /// Rejects a PDU, carrying its header back.
    pub fn reject(&mut self, reason: RejectReason, bhs: &Bhs) {
        if let Some(c) = self.stats.counting() {
            c.rejects.inc();
        }
        let rej = Reject {
            reason,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            data_sn: 0,
        };
        self.out.push(
            Pdu::Reject(rej).encode(),
            Bytes::copy_from_slice(bhs.as_bytes()),
        );
    }

    /// Fails every write task still waiting for data (shutdown).
    pub fn abort_pending(&mut self, sense: &Sense) {
        let pending: Vec<(u32, Lun)> = self.tasks.iter().map(|(itt, t)| (*itt, t.lun)).collect();
        self.tasks.clear();
        for (itt, lun) in pending {
            self.fail_task(itt, lun, sense);
        }
    }

    /// Current (StatSN, ExpCmdSN, MaxCmdSN), for async messages.
    pub fn sequence(&self) -> (u32, u32, u32) {
        (self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn())
    }

    /// Queues an Asynchronous Message (§11.9).
    pub fn async_message(&mut self, event: pdu::AsyncEvent, p2: u16, p3: u16) {
        let msg = pdu::AsyncMessage {
            lun: Lun(0),
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            event,
            vcode: 0,
            parameter1: 0,
            parameter2: p2,
            parameter3: p3,
        };
        self.out.push(Pdu::AsyncMessage(msg).encode(), Bytes::new());
    }
}

#[cfg(test)]
mod transcripts;
