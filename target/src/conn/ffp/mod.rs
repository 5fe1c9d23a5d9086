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
//! The core is one struct, [`FullFeature`], whose methods are spread over
//! files along the path of a PDU:
//! - here: the state, its setup, the read loop ([`FullFeature::receive`]),
//!   the keep-alive and Data-Out clocks, the first split by opcode
//!   ([`FullFeature::handle`]) and Reject;
//! - `window.rs`: the CmdSN window (§4.2.2.1), session-wide: where an
//!   ordered PDU waits for its turn before it is dispatched;
//! - `scsi_cmd.rs`: a SCSI Command is *received*: checked, its CDB parsed
//!   once, a write task opened or the command executed;
//! - `data_out.rs`: write data collection: immediate data, unsolicited
//!   Data-Out, R2Ts (§4.2.3, §11.7, §11.8) and the memory budget;
//! - `execute.rs`: a command is *executed*: inline on the LU, or on an I/O
//!   worker ([`super::deferred`]);
//! - `respond.rs`: a command is *answered*: Data-In segmentation with GOOD
//!   status collapsed into the last Data-In (§11.7.4), SCSI Response and
//!   residuals (§11.4.5);
//! - `tasks.rs` (task management), `nop.rs`, `text_exchange.rs` (SendTargets,
//!   negotiation), `logout.rs`.
//!
//! The transcript tests (`ffp/transcripts.rs`) encode request PDUs with
//! `iesp_proto`, feed the bytes in and decode what comes out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iesp_proto::bhs::{Bhs, Lun, Opcode, RESERVED_TAG};
use iesp_proto::framing::{self, Frame, FrameConfig, FrameError};
use iesp_proto::negotiation::{Negotiator, Phase};
use iesp_proto::pdu::{self, Pdu, Reject, RejectReason};
use iesp_proto::scsi::{Asc, Sense, SenseKey};

use super::deferred::Deferred;
use super::fence::SpliceFence;
use super::output::Output;
use crate::fast_map::FastMap;
use crate::memory::SessionMemory;
use crate::scsi::{LunTable, Nexus, NexusEnd};
use crate::session::SessionShared;
use crate::stats::ConnStats;
use data_out::WriteTask;
use text_exchange::TextOut;

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
    held: FastMap<u32, Frame>,
    /// The session's command window and connections
    /// ([`crate::session`]); `exp_cmd_sn` caches its ExpCmdSN.
    session: Arc<SessionShared>,
    /// This connection's identity in `session`.
    conn_id: u64,
    tasks: FastMap<u32, WriteTask>,
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
            held: FastMap::default(),
            session: SessionShared::new(exp_cmd_sn, 1),
            conn_id: 0,
            tasks: FastMap::default(),
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

mod data_out;
mod execute;
mod logout;
mod nop;
mod respond;
mod scsi_cmd;
mod tasks;
mod text_exchange;
mod window;

#[cfg(test)]
mod transcripts;
