//! The session's protocol core, sans-IO (RFC 7143 §3.2, §4.2, §11, error
//! recovery level 0): no sockets, no tasks, no channels, no clock.
//!
//! [`SessionCore`] is driven from outside, in quinn-proto's shape:
//!
//! - requests in: [`SessionCore::submit_scsi`], [`SessionCore::submit_nop`],
//!   [`SessionCore::submit_tmf`], [`SessionCore::submit_text`],
//!   [`SessionCore::submit_logout`]; each takes a caller token `T` (the
//!   driver's reply channel, a test's marker) that comes back with the
//!   request's completion;
//! - frames in: [`SessionCore::handle_frame`] (decoded by
//!   [`iesp_proto::framing`]) and [`SessionCore::handle_data_digest_error`];
//! - bytes out: [`SessionCore::poll_transmit`] gives the queued PDUs as
//!   chunks for one vectored write (data segments are slices of the
//!   caller's buffers, never copies); what the socket did not take goes
//!   back with [`SessionCore::requeue_transmit`];
//! - completions out: [`SessionCore::poll_event`] yields
//!   [`Event::Completed`] with the token and the [`Completion`], and
//!   [`Event::Closed`] once when the session ends;
//! - time in: every input that needs the time takes `now`; the core never
//!   reads a clock. [`SessionCore::poll_timeout`] says when
//!   [`SessionCore::handle_timeout`] must be called next (the keep-alive
//!   clock, [`KeepAlive`]).
//!
//! What the core owns: the CmdSN window (§4.2.2.1), ExpStatSN (§4.2.2.2),
//! ITT allocation (§11.2.1.8), immediate/unsolicited/solicited write data
//! (§4.2.3, §11.7, §11.8), Data-In reassembly (§11.7.4), target pings and
//! keep-alive pings (§11.18, §11.19), task management scope (§11.5),
//! text continuations (§11.10) and logout (§11.14). The rules are listed in
//! the [`crate::session`] module docs.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use iesp_proto::bhs::{Bhs, Lun, Opcode, RESERVED_TAG};
use iesp_proto::framing::{Frame, FrameConfig};
use iesp_proto::outbox;
use iesp_proto::pdu::ahs::{self, AhsType};
use iesp_proto::pdu::{
    self, DataIn, DataOut, LogoutReason, LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu, R2t,
    Reject, Residual, ScsiCommand, ScsiResponse, ScsiResponseCode, TaskAttr, TaskMgmtRequest,
    TaskMgmtResponse, TextRequest, TextResponse, TmfFunction, TmfResponse,
};
use iesp_proto::scsi::{ScsiStatus, Sense};
use iesp_proto::serial;
use iesp_proto::text;

use super::read_buf::{ReadBuf, ReadPool};
use super::{CommandError, ScsiResult, SessionEvent, SessionStats};
use crate::login::LoginOutcome;
use crate::raw::{Direction, Trace, TraceEvent};

/// Asynchronous messages and rejects kept for [`SessionCore::take_session_events`].
const EVENT_LIMIT: usize = 256;

/// The keep-alive clock: a NOP-Out ping (§11.18) after `interval` with
/// nothing received, and the session closes when its NOP-In does not come
/// within `timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// Silence from the target before a ping.
    pub interval: Duration,
    /// How long the ping's answer may take.
    pub timeout: Duration,
}

/// The answer to one request, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// A SCSI command.
    Scsi(Result<ScsiResult, CommandError>),
    /// A NOP-Out ping (the echoed data) or a Text Request (the whole text).
    Bytes(Result<Bytes, CommandError>),
    /// A task management function.
    Tmf(Result<TmfResponse, CommandError>),
    /// A logout.
    Logout(Result<LogoutResponse, CommandError>),
}

/// What the core hands to its driver.
#[derive(Debug)]
pub enum Event<T> {
    /// A request finished: its ITT, the token it was submitted with, and
    /// the answer (of the kind the request asked for).
    Completed {
        itt: u32,
        token: T,
        result: Completion,
    },
    /// The session ended; every request failed (their completions come
    /// before this event). Sent once.
    Closed { reason: String },
}

/// Hashes ITTs (sequential u32s) by Fibonacci multiplication, which spreads
/// them over the high bits the hash table probes with.
#[derive(Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type TaskMap<T> = HashMap<u32, Task<T>, BuildHasherDefault<TagHasher>>;

/// The CDB of a queued command: up to 16 bytes inline.
enum CdbBuf {
    Short([u8; 16], u8),
    Long(Vec<u8>),
}

impl CdbBuf {
    fn new(cdb: &[u8]) -> CdbBuf {
        if cdb.len() <= 16 {
            let mut b = [0u8; 16];
            b[..cdb.len()].copy_from_slice(cdb);
            CdbBuf::Short(b, cdb.len() as u8)
        } else {
            CdbBuf::Long(cdb.to_vec())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            CdbBuf::Short(b, n) => &b[..usize::from(*n)],
            CdbBuf::Long(v) => v,
        }
    }
}

struct ScsiTask<T> {
    /// `None` once the outcome was delivered early (protocol error); the
    /// task then only waits for the target to finish it.
    token: Option<T>,
    lun: Lun,
    cdb: CdbBuf,
    data_out: Bytes,
    expected_in: u32,
    /// Assigned when sent.
    cmd_sn: Option<u32>,
    read: ReadBuf,
    next_data_sn: u32,
}

enum Task<T> {
    Scsi(ScsiTask<T>),
    Nop {
        token: T,
    },
    /// The keep-alive ping: nobody waits for it but the clock.
    KeepAlive,
    Tmf {
        token: T,
        function: TmfFunction,
        lun: Lun,
        referenced: u32,
    },
    Text {
        token: T,
        acc: BytesMut,
        /// Parts of our request not sent yet.
        unsent: VecDeque<Bytes>,
    },
    Logout {
        token: T,
        reason: LogoutReason,
        sent: bool,
    },
}

impl<T> Task<T> {
    /// The completion event for this task failing with `err`; `None` for a
    /// task nobody waits for.
    fn failed(self, itt: u32, err: CommandError) -> Option<Event<T>> {
        let (token, result) = match self {
            Task::Scsi(t) => (t.token?, Completion::Scsi(Err(err))),
            Task::KeepAlive => return None,
            Task::Nop { token } | Task::Text { token, .. } => (token, Completion::Bytes(Err(err))),
            Task::Tmf { token, .. } => (token, Completion::Tmf(Err(err))),
            Task::Logout { token, .. } => (token, Completion::Logout(Err(err))),
        };
        Some(Event::Completed { itt, token, result })
    }
}

/// Outgoing PDUs queued as byte chunks for one vectored write, each
/// recorded in the session's trace as it is queued.
struct Outbox {
    queue: outbox::Outbox,
    trace: Trace,
}

impl Outbox {
    fn push(&mut self, bhs: Bhs, ahs: &[u8], data: Bytes) {
        let sent = self.queue.push_with_ahs(bhs, ahs, data.clone());
        self.trace
            .record_pdu(Direction::Sent, &sent, ahs.len(), &data);
    }
}

/// The session's protocol state, sans-IO: requests and frames in, PDU
/// bytes and completions out (see the module docs). `T` is the caller's
/// per-request token, handed back in [`Event::Completed`].
pub struct SessionCore<T> {
    out: Outbox,
    tasks: TaskMap<T>,
    /// ITTs of non-immediate requests waiting for the CmdSN window, in order.
    waiting: VecDeque<u32>,
    /// Completions and the close, for [`SessionCore::poll_event`].
    done: VecDeque<Event<T>>,
    events: VecDeque<SessionEvent>,
    closed: Option<String>,

    cmd_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    exp_stat_sn: u32,
    next_itt: u32,
    cid: u16,

    immediate_data: bool,
    initial_r2t: bool,
    first_burst_length: u32,
    /// The most we may send in one data segment.
    target_mrdsl: u32,

    keep_alive: Option<KeepAlive>,
    /// When the target was last heard from (or the session started).
    last_heard: Instant,
    /// The keep-alive ping in flight: its ITT and the answer's deadline.
    ping: Option<(u32, Instant)>,
    /// Reused buffers of multi-PDU reads.
    read_pool: Arc<ReadPool>,
}

impl<T> SessionCore<T> {
    /// The core of a session the login `outcome` established; `cfg` is
    /// the connection's frame config (digests), `trace` its PDU trace.
    /// `now` starts the keep-alive clock.
    pub fn new(
        outcome: &LoginOutcome,
        cfg: FrameConfig,
        trace: Trace,
        keep_alive: Option<KeepAlive>,
        now: Instant,
    ) -> SessionCore<T> {
        let p = &outcome.params;
        SessionCore {
            out: Outbox {
                queue: outbox::Outbox::new(cfg),
                trace,
            },
            tasks: TaskMap::default(),
            waiting: VecDeque::new(),
            done: VecDeque::new(),
            events: VecDeque::new(),
            closed: None,
            cmd_sn: outcome.cmd_sn,
            exp_cmd_sn: outcome.exp_cmd_sn,
            max_cmd_sn: outcome.max_cmd_sn,
            exp_stat_sn: outcome.exp_stat_sn,
            next_itt: 1,
            cid: outcome.cid,
            immediate_data: p.immediate_data,
            initial_r2t: p.initial_r2t,
            first_burst_length: p.first_burst_length,
            target_mrdsl: p.target_mrdsl.max(1),
            keep_alive,
            last_heard: now,
            ping: None,
            read_pool: Arc::default(),
        }
    }

    // ---- output and state ----

    /// The PDUs queued since the last call, as chunks for one vectored
    /// write; `None` when there is nothing to send.
    pub fn poll_transmit(&mut self) -> Option<VecDeque<Bytes>> {
        if self.out.queue.is_empty() {
            None
        } else {
            Some(self.out.queue.take())
        }
    }

    /// Whether [`SessionCore::poll_transmit`] has something.
    pub fn has_transmit(&self) -> bool {
        !self.out.queue.is_empty()
    }

    /// Puts back the chunks a write did not take, ahead of newer output.
    pub fn requeue_transmit(&mut self, rest: VecDeque<Bytes>) {
        self.out.queue.requeue_front(rest);
    }

    /// The next completion or the close.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.done.pop_front()
    }

    /// Moves every pending event to `into` (one lock hold, one pass).
    pub fn drain_events(&mut self, into: &mut Vec<Event<T>>) {
        into.extend(self.done.drain(..));
    }

    /// When [`SessionCore::handle_timeout`] is due: the keep-alive ping or
    /// its deadline. `None` with no keep-alive or once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ka = self.keep_alive?;
        if self.closed.is_some() {
            return None;
        }
        Some(match self.ping {
            Some((_, deadline)) => deadline,
            None => self.last_heard + ka.interval,
        })
    }

    /// Runs the keep-alive clock: pings the target after the idle interval
    /// (an immediate NOP-Out with an ITT, §11.18), and closes the session
    /// when the ping's answer is late.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(ka) = self.keep_alive else { return };
        if self.closed.is_some() {
            return;
        }
        match self.ping {
            Some((itt, deadline)) => {
                if now >= deadline {
                    self.close(format!(
                        "no answer to the keep-alive NOP-Out (ITT {itt:#x}) within {:?}",
                        ka.timeout
                    ));
                }
            }
            None => {
                if now >= self.last_heard + ka.interval {
                    let itt = self.alloc_itt();
                    self.push_nop_out(itt, Bytes::new());
                    self.tasks.insert(itt, Task::KeepAlive);
                    self.ping = Some((itt, now + ka.timeout));
                }
            }
        }
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Sequence numbers and queue depths now.
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            cmd_sn: self.cmd_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            in_flight: self.tasks.len().saturating_sub(self.waiting.len()),
            queued: self.waiting.len(),
        }
    }

    /// Asynchronous messages and rejects received since the last call.
    pub fn take_session_events(&mut self) -> Vec<SessionEvent> {
        self.events.drain(..).collect()
    }

    /// The PDU trace.
    pub fn trace(&self) -> &Trace {
        &self.out.trace
    }

    /// The PDU trace, to resize or clear.
    pub fn trace_mut(&mut self) -> &mut Trace {
        &mut self.out.trace
    }

    /// The tokens of the SCSI commands sent or queued whose outcome is not
    /// delivered yet: a watchdog looks for overdue ones among them.
    pub fn scsi_tokens_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.tasks.values_mut().filter_map(|t| match t {
            Task::Scsi(s) => s.token.as_mut(),
            _ => None,
        })
    }

    fn check_open(&self) -> Result<(), CommandError> {
        match &self.closed {
            Some(reason) => Err(CommandError::Closed(reason.clone())),
            None => Ok(()),
        }
    }

    /// A free ITT: never 0xffffffff, never one in use.
    fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) {
                return itt;
            }
        }
    }

    fn window_open(&self) -> bool {
        serial::le(self.cmd_sn, self.max_cmd_sn)
    }

    fn complete(&mut self, itt: u32, token: T, result: Completion) {
        self.done.push_back(Event::Completed { itt, token, result });
    }

    fn fail_task(&mut self, itt: u32, task: Task<T>, err: CommandError) {
        if let Some(e) = task.failed(itt, err) {
            self.done.push_back(e);
        }
    }

    // ---- requests ----

    /// Queues a SCSI command (sent at once when the CmdSN window allows)
    /// and returns its ITT. `data_out` is the write data, `expected_in`
    /// the read length; the caller has checked the CDB length (1 to
    /// [`super::MAX_CDB_LEN`]) and that `data_out` fits 32 bits.
    pub fn submit_scsi(
        &mut self,
        lun: Lun,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
        token: T,
    ) -> Result<u32, CommandError> {
        self.check_open()?;
        let itt = self.alloc_itt();
        let task = ScsiTask {
            token: Some(token),
            lun,
            cdb: CdbBuf::new(cdb),
            data_out,
            expected_in,
            cmd_sn: None,
            read: ReadBuf::Empty,
            next_data_sn: 0,
        };
        self.tasks.insert(itt, Task::Scsi(task));
        self.waiting.push_back(itt);
        self.drain_waiting();
        Ok(itt)
    }

    /// Pings the target: an immediate NOP-Out with an ITT (§11.18); the
    /// echoed data completes it ([`Completion::Bytes`]).
    pub fn submit_nop(&mut self, data: Bytes, token: T) -> Result<u32, CommandError> {
        self.check_open()?;
        if data.len() > self.target_mrdsl as usize {
            return Err(CommandError::Invalid(format!(
                "{} bytes of ping data exceed the target's MaxRecvDataSegmentLength {}",
                data.len(),
                self.target_mrdsl
            )));
        }
        let itt = self.alloc_itt();
        self.push_nop_out(itt, data);
        self.tasks.insert(itt, Task::Nop { token });
        Ok(itt)
    }

    fn push_nop_out(&mut self, itt: u32, data: Bytes) {
        let nop = NopOut {
            immediate: true,
            lun: Lun(0),
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.out.push(Pdu::NopOut(nop).encode(), &[], data);
    }

    /// Sends a task management function (immediate, §11.5); ABORT TASK and
    /// QUERY TASK name the task by `referenced_itt`.
    pub fn submit_tmf(
        &mut self,
        function: TmfFunction,
        lun: Lun,
        referenced_itt: Option<u32>,
        token: T,
    ) -> Result<u32, CommandError> {
        self.check_open()?;
        let referenced = referenced_itt.unwrap_or(RESERVED_TAG);
        // RefCmdSN: the referenced task's CmdSN when known (§11.5.5).
        let ref_cmd_sn = match self.tasks.get(&referenced) {
            Some(Task::Scsi(t)) => t.cmd_sn.unwrap_or(self.cmd_sn),
            _ => self.cmd_sn,
        };
        let itt = self.alloc_itt();
        let req = TaskMgmtRequest {
            immediate: true,
            function,
            lun,
            itt,
            referenced_task_tag: referenced,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ref_cmd_sn,
            exp_data_sn: 0,
        };
        self.out
            .push(Pdu::TaskMgmtRequest(req).encode(), &[], Bytes::new());
        self.tasks.insert(
            itt,
            Task::Tmf {
                token,
                function,
                lun,
                referenced,
            },
        );
        Ok(itt)
    }

    /// Sends a Text Request (immediate, §11.10) with the encoded `payload`,
    /// in parts when it exceeds the target's MaxRecvDataSegmentLength; the
    /// whole answer completes it ([`Completion::Bytes`]).
    pub fn submit_text(&mut self, payload: Bytes, token: T) -> Result<u32, CommandError> {
        self.check_open()?;
        let itt = self.alloc_itt();
        // Immediate: text needs no CmdSN slot, and continuations follow
        // at once. A payload beyond the target's MRDSL goes in parts with
        // C=1; the target acknowledges each part with an empty response,
        // which sends the next (§11.10.2).
        let mut unsent: VecDeque<Bytes> =
            text::split_for_segments(&payload, self.target_mrdsl as usize)
                .into_iter()
                .map(|s| payload.slice_ref(s))
                .collect();
        let first = unsent.pop_front().unwrap_or_default();
        self.send_text_request(itt, RESERVED_TAG, !unsent.is_empty(), first);
        self.tasks.insert(
            itt,
            Task::Text {
                token,
                acc: BytesMut::new(),
                unsent,
            },
        );
        Ok(itt)
    }

    fn send_text_request(&mut self, itt: u32, ttt: u32, cont: bool, data: Bytes) {
        let req = TextRequest {
            immediate: true,
            final_bit: !cont,
            continue_bit: cont,
            lun: Lun(0),
            itt,
            ttt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.out.push(Pdu::TextRequest(req).encode(), &[], data);
    }

    /// Queues a Logout Request (non-immediate, §11.14) behind the requests
    /// already queued.
    pub fn submit_logout(&mut self, reason: LogoutReason, token: T) -> Result<u32, CommandError> {
        self.check_open()?;
        let itt = self.alloc_itt();
        self.tasks.insert(
            itt,
            Task::Logout {
                token,
                reason,
                sent: false,
            },
        );
        self.waiting.push_back(itt);
        self.drain_waiting();
        Ok(itt)
    }

    /// Sends queued non-immediate requests while the window allows.
    fn drain_waiting(&mut self) {
        while self.window_open() {
            let Some(itt) = self.waiting.pop_front() else {
                return;
            };
            let cmd_sn = self.cmd_sn;
            self.cmd_sn = self.cmd_sn.wrapping_add(1);
            let exp_stat_sn = self.exp_stat_sn;
            match self.tasks.get_mut(&itt) {
                Some(Task::Scsi(t)) => {
                    t.cmd_sn = Some(cmd_sn);
                    let (lun, data_out, expected_in) = (t.lun, t.data_out.clone(), t.expected_in);
                    let cdb = std::mem::replace(&mut t.cdb, CdbBuf::Short([0; 16], 0));
                    self.send_scsi(itt, cmd_sn, lun, cdb.as_slice(), data_out, expected_in);
                }
                Some(Task::Logout { reason, sent, .. }) => {
                    *sent = true;
                    let req = LogoutRequest {
                        immediate: false,
                        reason: *reason,
                        itt,
                        cid: self.cid,
                        cmd_sn,
                        exp_stat_sn,
                    };
                    self.out
                        .push(Pdu::LogoutRequest(req).encode(), &[], Bytes::new());
                }
                // Gone (failed) meanwhile: give the CmdSN back.
                _ => self.cmd_sn = cmd_sn,
            }
        }
    }

    /// Encodes a SCSI Command with its immediate data and unsolicited
    /// Data-Out (§4.2.3 rules in the module docs).
    fn send_scsi(
        &mut self,
        itt: u32,
        cmd_sn: u32,
        lun: Lun,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
    ) {
        let write_len = data_out.len() as u32;
        let write = write_len > 0;
        let read = expected_in > 0;
        let edtl = if write { write_len } else { expected_in };
        let immediate = if write && self.immediate_data {
            write_len
                .min(self.first_burst_length)
                .min(self.target_mrdsl)
        } else {
            0
        };
        let unsolicited_end = if write && !self.initial_r2t {
            write_len.min(self.first_burst_length).max(immediate)
        } else {
            immediate
        };
        let mut header_cdb = [0u8; 16];
        let n = cdb.len().min(16);
        header_cdb[..n].copy_from_slice(&cdb[..n]);
        let cmd = ScsiCommand {
            immediate: false,
            final_bit: unsolicited_end == immediate,
            read,
            write,
            attr: TaskAttr::SIMPLE,
            lun,
            itt,
            expected_data_transfer_length: edtl,
            cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: header_cdb,
        };
        let mut area = BytesMut::new();
        if cdb.len() > 16 {
            ahs::encode(&mut area, AhsType::EXTENDED_CDB, 0, &cdb[16..]);
        }
        if read && write {
            ahs::encode(
                &mut area,
                AhsType::BIDI_READ_EDTL,
                0,
                &expected_in.to_be_bytes(),
            );
        }
        let imm = data_out.slice(..immediate as usize);
        self.out.push(Pdu::ScsiCommand(cmd).encode(), &area, imm);
        self.send_data_out(
            itt,
            lun,
            RESERVED_TAG,
            &data_out,
            immediate,
            unsolicited_end,
        );
    }

    /// Data-Out PDUs covering `[from, to)` of `data`, DataSN from 0, F on
    /// the last.
    fn send_data_out(&mut self, itt: u32, lun: Lun, ttt: u32, data: &Bytes, from: u32, to: u32) {
        let mut offset = from;
        let mut data_sn = 0u32;
        while offset < to {
            let len = (to - offset).min(self.target_mrdsl);
            let d = DataOut {
                final_bit: offset + len == to,
                lun,
                itt,
                ttt,
                exp_stat_sn: self.exp_stat_sn,
                data_sn,
                buffer_offset: offset,
            };
            let seg = data.slice(offset as usize..(offset + len) as usize);
            self.out.push(Pdu::DataOut(d).encode(), &[], seg);
            offset += len;
            data_sn = data_sn.wrapping_add(1);
        }
    }

    // ---- responses ----

    /// Takes ExpCmdSN/MaxCmdSN from a response (§4.2.2.1).
    fn update_window(&mut self, exp: u32, max: u32) {
        if serial::lt(max, exp.wrapping_sub(1)) {
            return;
        }
        if serial::gt(exp, self.exp_cmd_sn) {
            self.exp_cmd_sn = exp;
        }
        if serial::gt(max, self.max_cmd_sn) {
            self.max_cmd_sn = max;
        }
    }

    /// Acknowledges a StatSN-consuming response.
    fn ack_stat_sn(&mut self, stat_sn: u32) {
        let next = stat_sn.wrapping_add(1);
        if serial::gt(next, self.exp_stat_sn) {
            self.exp_stat_sn = next;
        }
    }

    fn push_event(&mut self, e: SessionEvent) {
        if self.events.len() == EVENT_LIMIT {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Handles one frame from the target (decoded by
    /// [`iesp_proto::framing::decode`] with the connection's config).
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        self.last_heard = now;
        if self.closed.is_some() {
            return;
        }
        self.out.trace.record_pdu(
            Direction::Received,
            &frame.bhs,
            frame.ahs.len(),
            &frame.data,
        );
        match frame.pdu() {
            Pdu::DataIn(d) => {
                self.update_window(d.exp_cmd_sn, d.max_cmd_sn);
                if d.status.is_some() {
                    self.ack_stat_sn(d.stat_sn);
                }
                self.on_data_in(d, frame.data);
            }
            Pdu::ScsiResponse(r) => {
                self.update_window(r.exp_cmd_sn, r.max_cmd_sn);
                self.ack_stat_sn(r.stat_sn);
                self.on_scsi_response(r, frame.data);
            }
            Pdu::R2t(r) => {
                self.update_window(r.exp_cmd_sn, r.max_cmd_sn);
                self.on_r2t(r);
            }
            Pdu::NopIn(n) => {
                self.update_window(n.exp_cmd_sn, n.max_cmd_sn);
                self.on_nop_in(n, frame.data);
            }
            Pdu::TaskMgmtResponse(r) => {
                self.update_window(r.exp_cmd_sn, r.max_cmd_sn);
                self.ack_stat_sn(r.stat_sn);
                self.on_tmf_response(r);
            }
            Pdu::TextResponse(r) => {
                self.update_window(r.exp_cmd_sn, r.max_cmd_sn);
                self.ack_stat_sn(r.stat_sn);
                self.on_text_response(r, frame.data);
            }
            Pdu::LogoutResponse(r) => {
                self.update_window(r.exp_cmd_sn, r.max_cmd_sn);
                self.ack_stat_sn(r.stat_sn);
                if let Some(Task::Logout { token, .. }) =
                    self.take_task(r.itt, Opcode::LOGOUT_RESPONSE)
                {
                    self.complete(r.itt, token, Completion::Logout(Ok(r)));
                }
            }
            Pdu::AsyncMessage(m) => {
                self.update_window(m.exp_cmd_sn, m.max_cmd_sn);
                self.ack_stat_sn(m.stat_sn);
                self.push_event(SessionEvent::Async(m, frame.data));
            }
            Pdu::Reject(r) => {
                self.update_window(r.exp_cmd_sn, r.max_cmd_sn);
                self.ack_stat_sn(r.stat_sn);
                self.on_reject(r, &frame.data);
            }
            _ => {
                // An initiator opcode or one RFC 7143 does not define: the
                // target is not speaking iSCSI to us.
                self.close(format!(
                    "unexpected {:?} from the target",
                    frame.bhs.opcode()
                ));
                return;
            }
        }
        self.drain_waiting();
    }

    /// Removes the task `itt` when it is of the kind `op` answers; tasks of
    /// another kind stay (the response is misaddressed and ignored).
    fn take_task(&mut self, itt: u32, op: Opcode) -> Option<Task<T>> {
        let matches = match self.tasks.get(&itt) {
            Some(Task::Scsi(_)) => matches!(op, Opcode::SCSI_RESPONSE | Opcode::DATA_IN),
            Some(Task::Nop { .. } | Task::KeepAlive) => op == Opcode::NOP_IN,
            Some(Task::Tmf { .. }) => op == Opcode::TASK_MGMT_RESPONSE,
            Some(Task::Text { .. }) => op == Opcode::TEXT_RESPONSE,
            Some(Task::Logout { .. }) => op == Opcode::LOGOUT_RESPONSE,
            None => false,
        };
        if matches {
            self.tasks.remove(&itt)
        } else {
            tracing::debug!(itt, ?op, "response for no matching request: ignored");
            None
        }
    }

    /// Delivers a protocol error for a SCSI task now; the task stays (ITT
    /// reserved) until the target finishes it.
    fn fail_scsi_early(&mut self, itt: u32, msg: String) {
        if let Some(Task::Scsi(t)) = self.tasks.get_mut(&itt) {
            if let Some(token) = t.token.take() {
                self.complete(
                    itt,
                    token,
                    Completion::Scsi(Err(CommandError::Protocol(msg))),
                );
            }
        }
    }

    fn on_data_in(&mut self, d: DataIn, data: Bytes) {
        let Some(Task::Scsi(t)) = self.tasks.get_mut(&d.itt) else {
            tracing::debug!(itt = d.itt, "Data-In for no SCSI task: ignored");
            return;
        };
        let mut problem = None;
        if t.token.is_some() {
            let end = u64::from(d.buffer_offset) + data.len() as u64;
            if d.data_sn != t.next_data_sn {
                problem = Some(format!(
                    "Data-In DataSN {} where {} was expected (RFC 7143 §11.7.5)",
                    d.data_sn, t.next_data_sn
                ));
            } else if end > u64::from(t.expected_in) {
                problem = Some(format!(
                    "Data-In bytes {}..{end} beyond the expected {} (RFC 7143 §11.7.4)",
                    d.buffer_offset, t.expected_in
                ));
            } else if d.status.is_some() && !d.final_bit {
                problem = Some("Data-In with S but not F (RFC 7143 §11.7.1)".to_owned());
            } else if !data.is_empty() {
                t.read.put(
                    d.buffer_offset as usize,
                    data,
                    t.expected_in as usize,
                    &self.read_pool,
                );
            }
            t.next_data_sn = d.data_sn.wrapping_add(1);
        }
        if let Some(msg) = problem {
            self.fail_scsi_early(d.itt, msg);
        }
        if let Some(status) = d.status {
            self.finish_scsi(
                d.itt,
                ScsiStatus(status),
                ScsiResponseCode::COMMAND_COMPLETED,
                d.residual,
                Bytes::new(),
            );
        }
    }

    fn on_scsi_response(&mut self, r: ScsiResponse, data: Bytes) {
        self.finish_scsi(r.itt, ScsiStatus(r.status), r.response, r.residual, data);
    }

    /// Completes a SCSI task with its status; `segment` is the SCSI
    /// Response data segment (sense data).
    fn finish_scsi(
        &mut self,
        itt: u32,
        status: ScsiStatus,
        response: ScsiResponseCode,
        residual: Residual,
        segment: Bytes,
    ) {
        let Some(Task::Scsi(t)) = self.take_task(itt, Opcode::SCSI_RESPONSE) else {
            return;
        };
        let Some(token) = t.token else {
            return;
        };
        let sense_data = match pdu::scsi::decode_sense_segment(&segment) {
            Ok(Some(s)) => segment.slice_ref(s),
            Ok(None) => Bytes::new(),
            Err(e) => {
                let err = CommandError::Protocol(e.to_string());
                self.complete(itt, token, Completion::Scsi(Err(err)));
                return;
            }
        };
        let sense = if sense_data.is_empty() {
            None
        } else {
            Sense::parse(&sense_data).ok()
        };
        let result = ScsiResult {
            status,
            response,
            data: t.read.into_bytes(&self.read_pool),
            sense,
            sense_data,
            residual,
        };
        self.complete(itt, token, Completion::Scsi(Ok(result)));
    }

    fn on_r2t(&mut self, r: R2t) {
        let Some(Task::Scsi(t)) = self.tasks.get(&r.itt) else {
            tracing::debug!(itt = r.itt, "R2T for no SCSI task: ignored");
            return;
        };
        if t.token.is_none() {
            return;
        }
        let total = t.data_out.len() as u64;
        let end = u64::from(r.buffer_offset) + u64::from(r.desired_data_transfer_length);
        let problem = if r.ttt == RESERVED_TAG {
            Some("R2T with TTT 0xffffffff (RFC 7143 §11.8.3)".to_owned())
        } else if r.desired_data_transfer_length == 0 {
            Some("R2T asking for 0 bytes (RFC 7143 §11.8.5)".to_owned())
        } else if end > total {
            Some(format!(
                "R2T asks for bytes {}..{end} of a {total}-byte write (RFC 7143 §11.8.4)",
                r.buffer_offset
            ))
        } else {
            None
        };
        if let Some(msg) = problem {
            self.fail_scsi_early(r.itt, msg);
            return;
        }
        let (lun, data) = (t.lun, t.data_out.clone());
        self.send_data_out(r.itt, lun, r.ttt, &data, r.buffer_offset, end as u32);
    }

    fn on_nop_in(&mut self, n: NopIn, data: Bytes) {
        if n.itt != RESERVED_TAG {
            // The answer to our ping; it consumes a StatSN.
            self.ack_stat_sn(n.stat_sn);
            match self.take_task(n.itt, Opcode::NOP_IN) {
                Some(Task::Nop { token }) => {
                    self.complete(n.itt, token, Completion::Bytes(Ok(data)));
                }
                Some(Task::KeepAlive) if self.ping.is_some_and(|(itt, _)| itt == n.itt) => {
                    self.ping = None;
                }
                _ => {}
            }
            return;
        }
        if n.ttt == RESERVED_TAG {
            // An unsolicited sequence-number update; nothing to answer.
            return;
        }
        // The target's ping: echo it (§11.18.1, §11.19.1).
        let echo = data.slice(..data.len().min(self.target_mrdsl as usize));
        let nop = NopOut {
            immediate: true,
            lun: n.lun,
            itt: RESERVED_TAG,
            ttt: n.ttt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.out.push(Pdu::NopOut(nop).encode(), &[], echo);
    }

    fn on_tmf_response(&mut self, r: TaskMgmtResponse) {
        let Some(Task::Tmf {
            token,
            function,
            lun,
            referenced,
        }) = self.take_task(r.itt, Opcode::TASK_MGMT_RESPONSE)
        else {
            return;
        };
        if r.response == TmfResponse::FUNCTION_COMPLETE {
            // The target sends nothing more for the tasks it aborted;
            // whatever is still outstanding in scope was aborted.
            let in_scope = |t: &ScsiTask<T>| -> bool {
                t.cmd_sn.is_some()
                    && match function {
                        TmfFunction::ABORT_TASK_SET
                        | TmfFunction::CLEAR_TASK_SET
                        | TmfFunction::LOGICAL_UNIT_RESET => t.lun == lun,
                        TmfFunction::TARGET_WARM_RESET
                        | TmfFunction::TARGET_COLD_RESET
                        | TmfFunction::I_T_NEXUS_RESET => true,
                        _ => false,
                    }
            };
            let mut aborted: Vec<u32> = self
                .tasks
                .iter()
                .filter_map(|(itt, task)| match task {
                    Task::Scsi(t) if in_scope(t) => Some(*itt),
                    _ => None,
                })
                .collect();
            if function == TmfFunction::ABORT_TASK
                && matches!(self.tasks.get(&referenced), Some(Task::Scsi(t)) if t.cmd_sn.is_some())
            {
                aborted.push(referenced);
            }
            for itt in aborted {
                if let Some(task) = self.tasks.remove(&itt) {
                    self.fail_task(itt, task, CommandError::Aborted(function));
                }
            }
        }
        self.complete(r.itt, token, Completion::Tmf(Ok(r.response)));
    }

    fn on_text_response(&mut self, r: TextResponse, data: Bytes) {
        let Some(Task::Text { acc, unsent, .. }) = self.tasks.get_mut(&r.itt) else {
            tracing::debug!(itt = r.itt, "Text Response for no Text Request: ignored");
            return;
        };
        // Parts of our own request still to send go first: this response
        // acknowledged the previous one.
        if let Some(part) = unsent.pop_front() {
            let more = !unsent.is_empty();
            self.send_text_request(r.itt, r.ttt, more, part);
            return;
        }
        acc.put_slice(&data);
        let problem = if acc.len() > text::DEFAULT_TEXT_LIMIT {
            Some(format!(
                "Text Response longer than {} bytes",
                text::DEFAULT_TEXT_LIMIT
            ))
        } else if !r.final_bit && r.ttt == RESERVED_TAG {
            Some("Text Response continues (F=0) without a TTT (RFC 7143 §11.11.4)".to_owned())
        } else {
            None
        };
        if let Some(msg) = problem {
            if let Some(task) = self.tasks.remove(&r.itt) {
                self.fail_task(r.itt, task, CommandError::Protocol(msg));
            }
            return;
        }
        if r.final_bit {
            if let Some(Task::Text { token, acc, .. }) =
                self.take_task(r.itt, Opcode::TEXT_RESPONSE)
            {
                self.complete(r.itt, token, Completion::Bytes(Ok(acc.freeze())));
            }
            return;
        }
        // Fetch the rest with an empty request echoing the TTT (§11.10.4).
        self.send_text_request(r.itt, r.ttt, false, Bytes::new());
    }

    fn on_reject(&mut self, r: Reject, data: &Bytes) {
        let header = Bhs::from_slice(data);
        let request = header.filter(|h| {
            matches!(
                h.opcode(),
                Opcode::SCSI_COMMAND
                    | Opcode::NOP_OUT
                    | Opcode::TASK_MGMT_REQUEST
                    | Opcode::TEXT_REQUEST
                    | Opcode::LOGOUT_REQUEST
            ) && h.itt() != RESERVED_TAG
        });
        let itt = request.map_or(RESERVED_TAG, |h| h.itt());
        match self.tasks.remove(&itt) {
            Some(task) => self.fail_task(itt, task, CommandError::Rejected(r.reason)),
            None => self.push_event(SessionEvent::Reject(r, header)),
        }
    }

    /// A PDU whose data digest failed (§7.8): at error recovery level 0
    /// its data is lost, so the task it belongs to fails.
    pub fn handle_data_digest_error(&mut self, now: Instant, frame: &Frame) {
        self.last_heard = now;
        self.out.trace.record(
            Direction::Received,
            TraceEvent::Malformed("data digest error".to_owned()),
        );
        let itt = frame.bhs.itt();
        match self.tasks.get(&itt) {
            Some(Task::Scsi(_)) => self.fail_scsi_early(
                itt,
                format!("data digest error on {:?}", frame.bhs.opcode()),
            ),
            Some(_) => {
                if let Some(task) = self.tasks.remove(&itt) {
                    let msg = format!("data digest error on {:?}", frame.bhs.opcode());
                    self.fail_task(itt, task, CommandError::Protocol(msg));
                }
            }
            None => {}
        }
    }

    /// Ends the session (the connection is gone or unusable): every
    /// request fails with `reason`, then [`Event::Closed`]. Later calls
    /// keep the first reason.
    pub fn close(&mut self, reason: String) {
        if self.closed.is_some() {
            return;
        }
        self.waiting.clear();
        self.ping = None;
        let tasks: Vec<(u32, Task<T>)> = self.tasks.drain().collect();
        for (itt, task) in tasks {
            self.fail_task(itt, task, CommandError::Closed(reason.clone()));
        }
        self.closed = Some(reason.clone());
        self.done.push_back(Event::Closed { reason });
    }
}

#[cfg(test)]
mod transcripts;
