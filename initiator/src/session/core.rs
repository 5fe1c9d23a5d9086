//! A full feature phase session that keeps many commands in flight
//! (RFC 7143 §3.2, §4.2, §11), error recovery level 0.
//!
//! [`Session`] is a cheap handle (`Clone`); its `&self` methods may be
//! called from many tasks at once. Behind it, two tasks own the socket: a
//! reader that frames and handles everything the target sends, and a
//! writer that sends whatever is queued with one vectored write per batch.
//! The protocol state — CmdSN window, tasks by ITT, sequence numbers,
//! queued output — is a plain struct (`Core`) behind a mutex that neither
//! task holds across I/O.
//!
//! What the session does for each command:
//!
//! - **Ordering**: CmdSN from the login's, advanced per non-immediate
//!   request; a request whose CmdSN would pass MaxCmdSN waits in a local
//!   queue until a response opens the window. ExpCmdSN/MaxCmdSN are taken
//!   from every response that carries them, in serial arithmetic, and
//!   ignored when MaxCmdSN < ExpCmdSN − 1 (§4.2.2.1). ExpStatSN acknowledges
//!   every StatSN-consuming response (§4.2.2.2).
//! - **ITTs**: never 0xffffffff, never one still in use (§11.2.1.8).
//! - **Write data** (§4.2.3, §11.7): immediate data up to
//!   min(FirstBurstLength, the target's MaxRecvDataSegmentLength, EDTL) when
//!   ImmediateData=Yes; with InitialR2T=No, unsolicited Data-Out (TTT
//!   0xffffffff) up to FirstBurstLength, F on the last; then Data-Out for
//!   each R2T: segments ≤ the target's MaxRecvDataSegmentLength, DataSN from
//!   0 per R2T, F on the last, TTT echoed. Data segments are not copied:
//!   they go to the socket as slices of the caller's buffer.
//! - **Read data** (§11.7.4): Data-In placed by BufferOffset; a single
//!   Data-In covering the transfer is handed over without copying; status
//!   may arrive in the last Data-In (S bit) or in a SCSI Response, with
//!   residuals (§11.4.5) and sense data (§11.4.7).
//! - **Target pings**: a NOP-In with a TTT gets a NOP-Out echo (§11.19).
//! - **Failure**: when the connection drops, every outstanding and queued
//!   request fails at once with [`CommandError::Closed`]. A target that
//!   breaks a rule for one task (a DataSN out of order, an R2T beyond the
//!   write data) fails that task with [`CommandError::Protocol`]; its ITT
//!   stays reserved until the target finishes it.
//!
//! Task management ([`Session::task_management`]) completes the tasks it
//! aborts with [`CommandError::Aborted`], since the target sends no status
//! for them (SAM-5 §7.1.1).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use iesp_proto::bhs::{Bhs, Lun, Opcode, RESERVED_TAG};
use iesp_proto::framing::{self, Frame, FrameConfig, FrameError};
use iesp_proto::negotiation::SessionParams;
use iesp_proto::outbox;
use iesp_proto::pdu::ahs::{self, AhsType};
use iesp_proto::pdu::{
    self, AsyncMessage, DataIn, DataOut, LogoutReason, LogoutRequest, LogoutResponse, NopIn,
    NopOut, Pdu, R2t, Reject, RejectReason, Residual, ScsiCommand, ScsiResponse, ScsiResponseCode,
    TaskAttr, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, TmfFunction,
    TmfResponse,
};
use iesp_proto::scsi::{ScsiStatus, Sense};
use iesp_proto::serial;
use iesp_proto::text::{self, KeyValue};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;

use crate::login::{self, LoginError, LoginOptions, LoginOutcome};
use crate::raw::{Direction, RawConnection, Trace, TraceEvent};
use crate::url::IscsiUrl;

/// Read buffer: room for several large PDUs per read.
const READ_BUF: usize = 512 * 1024;

/// The longest CDB a SCSI Command can carry: 16 bytes in the BHS plus an
/// Extended CDB AHS (AHSLength is 16 bits, §11.2.2.3).
pub const MAX_CDB_LEN: usize = 16 + 65_531;

/// Asynchronous messages and rejects kept for [`Session::events`].
const EVENT_LIMIT: usize = 256;

/// The outcome of a SCSI command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResult {
    /// The SCSI status (SAM-5 §5.3.1).
    pub status: ScsiStatus,
    /// The iSCSI Response field: whether the target completed the command
    /// (§11.4.3).
    pub response: ScsiResponseCode,
    /// Data-In, as placed by BufferOffset, up to the highest byte received.
    pub data: Bytes,
    /// Sense data of a CHECK CONDITION, decoded when it decodes.
    pub sense: Option<Sense>,
    /// The sense bytes as received (empty when there were none).
    pub sense_data: Bytes,
    /// The residual (§11.4.5).
    pub residual: Residual,
}

impl ScsiResult {
    /// Status GOOD and the command completed at the target.
    pub fn is_good(&self) -> bool {
        self.status == ScsiStatus::GOOD && self.response == ScsiResponseCode::COMMAND_COMPLETED
    }
}

/// Why a request did not get its answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The session ended (connection dropped, logged out, handle dropped).
    #[error("session closed: {0}")]
    Closed(String),
    /// No answer within the timeout. The task stays outstanding at the target.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A task management function ended the task.
    #[error("aborted by {0}")]
    Aborted(TmfFunction),
    /// The target rejected the request PDU (§11.17).
    #[error("rejected by the target: {0}")]
    Rejected(RejectReason),
    /// The target broke a rule of the protocol for this task.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request cannot be sent as asked.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Something the target sent that belongs to no request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// An Asynchronous Message (§11.9) and its data segment.
    Async(AsyncMessage, Bytes),
    /// A Reject (§11.17) of a PDU that is not a request (e.g. a Data-Out),
    /// with the rejected header when it was carried.
    Reject(Reject, Option<Bhs>),
}

/// Sequence numbers and queue depths at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionStats {
    /// CmdSN of the next non-immediate request.
    pub cmd_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// Requests sent and not yet answered.
    pub in_flight: usize,
    /// Requests waiting for the CmdSN window.
    pub queued: usize,
}

/// A handle on a logged-in session; clones share the session.
#[derive(Clone)]
pub struct Session {
    handle: Arc<Handle>,
}

/// Owns the two socket tasks; dropping the last [`Session`] stops them.
struct Handle {
    shared: Arc<Shared>,
    outcome: LoginOutcome,
    peer: SocketAddr,
    reader: AbortHandle,
    writer: AbortHandle,
    /// Default per-request timeout in nanoseconds; 0 = none.
    timeout_ns: AtomicU64,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared
            .fail_all("the session handle was dropped".to_owned());
        self.reader.abort();
        self.writer.abort();
    }
}

struct Shared {
    core: Mutex<Core>,
    /// The sending half. Whoever holds the send token ([`Sending`]) writes
    /// to it, without blocking; the writer task waits for room when the
    /// socket is full.
    wr: OwnedWriteHalf,
    /// Hands the send token to the writer task, or tells it the session
    /// closed.
    wake_writer: Notify,
}

/// Who may write to the socket now: nobody, a task that queued output
/// (non-blocking writes from its own context, the fast path), or the
/// writer task (the socket was full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    Idle,
    Direct,
    Writer,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // The core is consistent between statements (no await, no panic
        // paths on peer input), so a poisoned lock is still usable.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail_all(&self, reason: String) {
        let done = {
            let mut core = self.lock();
            core.close(reason);
            std::mem::take(&mut core.done)
        };
        deliver(done);
        self.wake_writer.notify_one();
    }

    /// Sends the queued output now unless someone else is sending: the
    /// caller takes the token and writes without blocking, picking up what
    /// others queue meanwhile (one syscall per batch); what the socket does
    /// not take at once goes to the writer task with the token.
    fn flush(&self, mut core: MutexGuard<'_, Core>) {
        if core.sending != Sending::Idle || !core.out.has_output() {
            return;
        }
        core.sending = Sending::Direct;
        let mut chunks = core.out.take();
        drop(core);
        loop {
            if let Err(e) = try_write_chunks(&self.wr, &mut chunks) {
                self.lock().sending = Sending::Idle;
                self.fail_all(format!("write error: {e}"));
                return;
            }
            let mut core = self.lock();
            if !chunks.is_empty() {
                core.out.requeue_front(chunks);
                core.sending = Sending::Writer;
                drop(core);
                self.wake_writer.notify_one();
                return;
            }
            if !core.out.has_output() {
                core.sending = Sending::Idle;
                return;
            }
            chunks = core.out.take();
        }
    }
}

/// Writes `chunks` without blocking until they are all written or the
/// socket is full; what is left stays in `chunks`.
fn try_write_chunks(wr: &OwnedWriteHalf, chunks: &mut VecDeque<Bytes>) -> io::Result<()> {
    while !chunks.is_empty() {
        let mut slices = [IoSlice::new(&[]); 64];
        let mut n = 0;
        for (slot, c) in slices.iter_mut().zip(chunks.iter()) {
            *slot = IoSlice::new(c);
            n += 1;
        }
        let written = match wr.try_write_vectored(&slices[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        outbox::consume(chunks, written);
    }
    Ok(())
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.handle.peer)
            .field("tsih", &self.handle.outcome.tsih)
            .finish_non_exhaustive()
    }
}

/// A command on its way: the ITT is known at once, the answer later.
#[derive(Debug)]
pub struct CommandHandle {
    itt: u32,
    rx: oneshot::Receiver<Result<ScsiResult, CommandError>>,
}

impl CommandHandle {
    /// The Initiator Task Tag, for ABORT TASK.
    pub fn itt(&self) -> u32 {
        self.itt
    }

    /// Waits for the outcome.
    pub async fn wait(self) -> Result<ScsiResult, CommandError> {
        await_reply(self.rx).await
    }

    /// Waits at most `timeout`.
    pub async fn wait_timeout(self, timeout: Duration) -> Result<ScsiResult, CommandError> {
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(r) => r,
            Err(_) => Err(CommandError::Timeout(timeout)),
        }
    }
}

async fn await_reply<T>(rx: oneshot::Receiver<Result<T, CommandError>>) -> Result<T, CommandError> {
    rx.await.unwrap_or_else(|_| {
        Err(CommandError::Closed(
            "the session ended before the answer".to_owned(),
        ))
    })
}

impl Session {
    /// Connects to `addr`, logs in and starts the session.
    pub async fn login(addr: SocketAddr, opts: LoginOptions) -> Result<Session, LoginError> {
        let mut conn = RawConnection::connect(addr).await?;
        let outcome = login::login(&mut conn, &opts).await?;
        Ok(Session::from_login(conn, outcome))
    }

    /// Logs in to the target a URL names, with its credentials.
    pub async fn login_url(url: &IscsiUrl, initiator_name: &str) -> Result<Session, LoginError> {
        if url.target.is_none() {
            return Err(LoginError::Protocol(format!(
                "{url} names no target (a discovery URL)"
            )));
        }
        let addr = url.resolve().await?;
        Session::login(addr, LoginOptions::from_url(url, initiator_name)).await
    }

    /// Takes over a connection logged in by hand with [`login::login`].
    /// Must be called inside a tokio runtime.
    pub fn from_login(conn: RawConnection, outcome: LoginOutcome) -> Session {
        let peer = conn.peer_addr();
        let (stream, rbuf, cfg, trace) = conn.into_parts();
        let (rd, wr) = stream.into_split();
        let core = Core::new(&outcome, cfg, trace);
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            wr,
            wake_writer: Notify::new(),
        });
        let reader = tokio::spawn(run_reader(shared.clone(), rd, rbuf, cfg)).abort_handle();
        let writer = tokio::spawn(run_writer(shared.clone())).abort_handle();
        Session {
            handle: Arc::new(Handle {
                shared,
                outcome,
                peer,
                reader,
                writer,
                timeout_ns: AtomicU64::new(0),
            }),
        }
    }

    /// What the login established.
    pub fn login_outcome(&self) -> &LoginOutcome {
        &self.handle.outcome
    }

    /// The negotiated parameters.
    pub fn params(&self) -> &SessionParams {
        &self.handle.outcome.params
    }

    /// The target's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.handle.peer
    }

    /// A default timeout for every request of this session (`None`: wait
    /// for ever, the default).
    pub fn set_default_timeout(&self, timeout: Option<Duration>) {
        let ns = timeout.map_or(0, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        self.handle.timeout_ns.store(ns, Ordering::Relaxed);
    }

    fn default_timeout(&self) -> Option<Duration> {
        match self.handle.timeout_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    async fn wait<T>(
        &self,
        rx: oneshot::Receiver<Result<T, CommandError>>,
    ) -> Result<T, CommandError> {
        match self.default_timeout() {
            None => await_reply(rx).await,
            Some(t) => match tokio::time::timeout(t, await_reply(rx)).await {
                Ok(r) => r,
                Err(_) => Err(CommandError::Timeout(t)),
            },
        }
    }

    fn submit_task(
        &self,
        f: impl FnOnce(&mut Core) -> Result<(), CommandError>,
    ) -> Result<(), CommandError> {
        let shared = &self.handle.shared;
        let mut core = shared.lock();
        f(&mut core)?;
        shared.flush(core);
        Ok(())
    }

    /// Sends a SCSI command and returns at once with its handle.
    ///
    /// `data_out` is the write data (W bit, ExpectedDataTransferLength);
    /// `expected_in` the read buffer size (R bit). With both, the command
    /// is bidirectional and the read length goes in an AHS (§11.2.2.4).
    pub fn submit(
        &self,
        lun: Lun,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
    ) -> Result<CommandHandle, CommandError> {
        if cdb.is_empty() || cdb.len() > MAX_CDB_LEN {
            return Err(CommandError::Invalid(format!(
                "a CDB of {} bytes (1 to {MAX_CDB_LEN} allowed)",
                cdb.len()
            )));
        }
        if u32::try_from(data_out.len()).is_err() {
            return Err(CommandError::Invalid(format!(
                "{} bytes of write data exceed ExpectedDataTransferLength's 32 bits",
                data_out.len()
            )));
        }
        let (tx, rx) = oneshot::channel();
        let mut itt = 0;
        self.submit_task(|core| {
            itt = core.submit_scsi(lun, cdb, data_out, expected_in, tx)?;
            Ok(())
        })?;
        Ok(CommandHandle { itt, rx })
    }

    /// Sends a SCSI command and waits for its outcome.
    pub async fn command(
        &self,
        lun: Lun,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
    ) -> Result<ScsiResult, CommandError> {
        let h = self.submit(lun, cdb, data_out, expected_in)?;
        self.wait(h.rx).await
    }

    /// [`Session::command`] with its own timeout.
    pub async fn command_timeout(
        &self,
        lun: Lun,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
        timeout: Duration,
    ) -> Result<ScsiResult, CommandError> {
        self.submit(lun, cdb, data_out, expected_in)?
            .wait_timeout(timeout)
            .await
    }

    /// Pings the target (immediate NOP-Out, §11.18) and returns the echoed data.
    pub async fn nop(&self, data: Bytes) -> Result<Bytes, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.submit_task(|core| core.submit_nop(data, tx))?;
        self.wait(rx).await
    }

    /// Sends a task management function (immediate, §11.5). ABORT TASK and
    /// QUERY TASK take the ITT of the task they refer to.
    pub async fn task_management(
        &self,
        function: TmfFunction,
        lun: Lun,
        referenced_itt: Option<u32>,
    ) -> Result<TmfResponse, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.submit_task(|core| core.submit_tmf(function, lun, referenced_itt, tx))?;
        self.wait(rx).await
    }

    /// A Text Request exchange in full feature phase (§11.10): sends
    /// `pairs`, follows the target's continuations (C bit, TTT) and returns
    /// the whole answer.
    pub async fn text(&self, pairs: &[KeyValue]) -> Result<Vec<KeyValue>, CommandError> {
        let payload = Bytes::from(text::encode_to_vec(pairs));
        let (tx, rx) = oneshot::channel();
        self.submit_task(|core| core.submit_text(payload, tx))?;
        let whole = self.wait(rx).await?;
        text::decode(&whole).map_err(|e| CommandError::Protocol(format!("Text Response: {e}")))
    }

    /// Logs the session out (reason "close the session", §11.14) after the
    /// requests already queued, and closes the connection.
    pub async fn logout(self) -> Result<LogoutResponse, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.submit_task(|core| core.submit_logout(LogoutReason::CLOSE_SESSION, tx))?;
        let r = self.wait(rx).await;
        self.handle.shared.fail_all("logged out".to_owned());
        r
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.shared.lock().closed.is_some()
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<String> {
        self.handle.shared.lock().closed.clone()
    }

    /// Sequence numbers and queue depths now.
    pub fn stats(&self) -> SessionStats {
        let core = self.handle.shared.lock();
        SessionStats {
            cmd_sn: core.cmd_sn,
            exp_cmd_sn: core.exp_cmd_sn,
            max_cmd_sn: core.max_cmd_sn,
            exp_stat_sn: core.exp_stat_sn,
            in_flight: core.tasks.len().saturating_sub(core.waiting.len()),
            queued: core.waiting.len(),
        }
    }

    /// Asynchronous messages and rejects received since the last call.
    pub fn events(&self) -> Vec<SessionEvent> {
        self.handle.shared.lock().events.drain(..).collect()
    }

    /// The last PDUs sent and received (a copy).
    pub fn trace(&self) -> Trace {
        self.handle.shared.lock().out.trace.clone()
    }

    /// How many PDUs the trace keeps (0 turns tracing off).
    pub fn set_trace_capacity(&self, capacity: usize) {
        self.handle.shared.lock().out.trace.set_capacity(capacity);
    }
}

/// Delivers completions outside the lock.
fn deliver(done: Vec<Done>) {
    for d in done {
        d.deliver();
    }
}

async fn run_reader(
    shared: Arc<Shared>,
    mut rd: OwnedReadHalf,
    mut rbuf: BytesMut,
    cfg: FrameConfig,
) {
    let reason = loop {
        let (done, fatal) = {
            let mut core = shared.lock();
            let mut fatal = None;
            loop {
                match framing::decode(&cfg, &mut rbuf) {
                    Ok(Some(frame)) => core.on_frame(frame),
                    Ok(None) => break,
                    Err(FrameError::DataDigest { frame, .. }) => core.on_data_digest_error(&frame),
                    Err(e) => {
                        // A bad header digest or an oversized segment: the
                        // stream cannot be trusted any further (§7.8).
                        fatal = Some(format!("unusable stream from the target: {e}"));
                        break;
                    }
                }
                if core.closed.is_some() {
                    break;
                }
            }
            let done = std::mem::take(&mut core.done);
            let fatal = fatal.or_else(|| core.closed.clone());
            // Data-Out for R2Ts and ping answers leave before the
            // completions wake anyone.
            shared.flush(core);
            (done, fatal)
        };
        deliver(done);
        if let Some(reason) = fatal {
            break reason;
        }
        if rbuf.capacity() - rbuf.len() < 16 * 1024 {
            rbuf.reserve(READ_BUF);
        }
        match rd.read_buf(&mut rbuf).await {
            Ok(0) if rbuf.is_empty() => break "the target closed the connection".to_owned(),
            Ok(0) => {
                break format!(
                    "the target closed the connection inside a PDU ({} bytes buffered)",
                    rbuf.len()
                );
            }
            Ok(_) => {}
            Err(e) => break format!("read error: {e}"),
        }
    };
    {
        let mut core = shared.lock();
        core.out.trace.record(
            Direction::Received,
            TraceEvent::Closed {
                partial: rbuf.len(),
                error: Some(reason.clone()),
            },
        );
    }
    shared.fail_all(reason);
}

/// Finishes writes the socket could not take at once (see [`Shared::flush`]).
async fn run_writer(shared: Arc<Shared>) {
    loop {
        shared.wake_writer.notified().await;
        loop {
            let mut chunks = {
                let mut core = shared.lock();
                if core.sending != Sending::Writer {
                    break;
                }
                if !core.out.has_output() {
                    core.sending = Sending::Idle;
                    break;
                }
                core.out.take()
            };
            while !chunks.is_empty() {
                let r = match shared.wr.writable().await {
                    Ok(()) => try_write_chunks(&shared.wr, &mut chunks),
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    shared.lock().sending = Sending::Idle;
                    shared.fail_all(format!("write error: {e}"));
                    return;
                }
            }
        }
        let core = shared.lock();
        if core.closed.is_some() && core.sending != Sending::Writer {
            return;
        }
    }
}

// ---- the protocol core ------------------------------------------------------

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

type TaskMap = HashMap<u32, Task, BuildHasherDefault<TagHasher>>;

/// A finished request, delivered after the lock is released.
enum Done {
    Scsi(
        oneshot::Sender<Result<ScsiResult, CommandError>>,
        Result<ScsiResult, CommandError>,
    ),
    Bytes(
        oneshot::Sender<Result<Bytes, CommandError>>,
        Result<Bytes, CommandError>,
    ),
    Tmf(
        oneshot::Sender<Result<TmfResponse, CommandError>>,
        Result<TmfResponse, CommandError>,
    ),
    Logout(
        oneshot::Sender<Result<LogoutResponse, CommandError>>,
        Result<LogoutResponse, CommandError>,
    ),
}

impl Done {
    fn deliver(self) {
        // A dropped receiver (the caller timed out or went away) is fine.
        match self {
            Done::Scsi(tx, r) => drop(tx.send(r)),
            Done::Bytes(tx, r) => drop(tx.send(r)),
            Done::Tmf(tx, r) => drop(tx.send(r)),
            Done::Logout(tx, r) => drop(tx.send(r)),
        }
    }
}

/// Data-In collected so far.
enum ReadBuf {
    Empty,
    /// One segment at offset 0: handed over as is if nothing else comes.
    Single(Bytes),
    /// Several segments, copied into place.
    Assembled(BytesMut),
}

impl ReadBuf {
    /// Places `data` at `offset`; the caller has checked it fits `expected`.
    fn put(&mut self, offset: usize, data: Bytes, expected: usize) {
        if let ReadBuf::Empty = self {
            if offset == 0 {
                *self = ReadBuf::Single(data);
                return;
            }
        }
        let mut buf = match std::mem::replace(self, ReadBuf::Empty) {
            ReadBuf::Empty => BytesMut::with_capacity(expected),
            ReadBuf::Single(first) => {
                let mut b = BytesMut::with_capacity(expected.max(first.len()));
                b.put_slice(&first);
                b
            }
            ReadBuf::Assembled(b) => b,
        };
        let end = offset + data.len();
        if buf.len() < offset {
            // A gap (out of order): zero-filled until its data arrives.
            buf.resize(offset, 0);
        }
        if buf.len() == offset {
            buf.put_slice(&data);
        } else {
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[offset..end].copy_from_slice(&data);
        }
        *self = ReadBuf::Assembled(buf);
    }

    fn into_bytes(self) -> Bytes {
        match self {
            ReadBuf::Empty => Bytes::new(),
            ReadBuf::Single(b) => b,
            ReadBuf::Assembled(b) => b.freeze(),
        }
    }
}

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

struct ScsiTask {
    /// `None` once the outcome was delivered early (protocol error); the
    /// task then only waits for the target to finish it.
    tx: Option<oneshot::Sender<Result<ScsiResult, CommandError>>>,
    lun: Lun,
    cdb: CdbBuf,
    data_out: Bytes,
    expected_in: u32,
    /// Assigned when sent.
    cmd_sn: Option<u32>,
    read: ReadBuf,
    next_data_sn: u32,
}

enum Task {
    Scsi(ScsiTask),
    Nop {
        tx: oneshot::Sender<Result<Bytes, CommandError>>,
    },
    Tmf {
        tx: oneshot::Sender<Result<TmfResponse, CommandError>>,
        function: TmfFunction,
        lun: Lun,
        referenced: u32,
    },
    Text {
        tx: oneshot::Sender<Result<Bytes, CommandError>>,
        acc: BytesMut,
        /// Parts of our request not sent yet.
        unsent: VecDeque<Bytes>,
    },
    Logout {
        tx: oneshot::Sender<Result<LogoutResponse, CommandError>>,
        reason: LogoutReason,
        sent: bool,
    },
}

impl Task {
    fn fail(self, err: CommandError, done: &mut Vec<Done>) {
        match self {
            Task::Scsi(t) => {
                if let Some(tx) = t.tx {
                    done.push(Done::Scsi(tx, Err(err)));
                }
            }
            Task::Nop { tx } | Task::Text { tx, .. } => done.push(Done::Bytes(tx, Err(err))),
            Task::Tmf { tx, .. } => done.push(Done::Tmf(tx, Err(err))),
            Task::Logout { tx, .. } => done.push(Done::Logout(tx, Err(err))),
        }
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

    fn has_output(&self) -> bool {
        !self.queue.is_empty()
    }

    fn requeue_front(&mut self, rest: VecDeque<Bytes>) {
        self.queue.requeue_front(rest);
    }

    fn take(&mut self) -> VecDeque<Bytes> {
        self.queue.take()
    }
}

/// The session's protocol state (sans-IO): requests in, PDUs out, frames
/// in, completions out.
struct Core {
    out: Outbox,
    tasks: TaskMap,
    /// ITTs of non-immediate requests waiting for the CmdSN window, in order.
    waiting: VecDeque<u32>,
    done: Vec<Done>,
    events: VecDeque<SessionEvent>,
    closed: Option<String>,
    sending: Sending,

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
}

impl Core {
    fn new(outcome: &LoginOutcome, cfg: FrameConfig, trace: Trace) -> Core {
        let p = &outcome.params;
        Core {
            out: Outbox {
                queue: outbox::Outbox::new(cfg),
                trace,
            },
            tasks: TaskMap::default(),
            waiting: VecDeque::new(),
            done: Vec::new(),
            events: VecDeque::new(),
            closed: None,
            sending: Sending::Idle,
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
        }
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

    // ---- requests ----

    fn submit_scsi(
        &mut self,
        lun: Lun,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
        tx: oneshot::Sender<Result<ScsiResult, CommandError>>,
    ) -> Result<u32, CommandError> {
        self.check_open()?;
        let itt = self.alloc_itt();
        let task = ScsiTask {
            tx: Some(tx),
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

    fn submit_nop(
        &mut self,
        data: Bytes,
        tx: oneshot::Sender<Result<Bytes, CommandError>>,
    ) -> Result<(), CommandError> {
        self.check_open()?;
        if data.len() > self.target_mrdsl as usize {
            return Err(CommandError::Invalid(format!(
                "{} bytes of ping data exceed the target's MaxRecvDataSegmentLength {}",
                data.len(),
                self.target_mrdsl
            )));
        }
        let itt = self.alloc_itt();
        let nop = NopOut {
            immediate: true,
            lun: Lun(0),
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.out.push(Pdu::NopOut(nop).encode(), &[], data);
        self.tasks.insert(itt, Task::Nop { tx });
        Ok(())
    }

    fn submit_tmf(
        &mut self,
        function: TmfFunction,
        lun: Lun,
        referenced_itt: Option<u32>,
        tx: oneshot::Sender<Result<TmfResponse, CommandError>>,
    ) -> Result<(), CommandError> {
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
                tx,
                function,
                lun,
                referenced,
            },
        );
        Ok(())
    }

    fn submit_text(
        &mut self,
        payload: Bytes,
        tx: oneshot::Sender<Result<Bytes, CommandError>>,
    ) -> Result<(), CommandError> {
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
                tx,
                acc: BytesMut::new(),
                unsent,
            },
        );
        Ok(())
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

    fn submit_logout(
        &mut self,
        reason: LogoutReason,
        tx: oneshot::Sender<Result<LogoutResponse, CommandError>>,
    ) -> Result<(), CommandError> {
        self.check_open()?;
        let itt = self.alloc_itt();
        self.tasks.insert(
            itt,
            Task::Logout {
                tx,
                reason,
                sent: false,
            },
        );
        self.waiting.push_back(itt);
        self.drain_waiting();
        Ok(())
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

    fn on_frame(&mut self, frame: Frame) {
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
                if let Some(Task::Logout { tx, .. }) =
                    self.take_task(r.itt, Opcode::LOGOUT_RESPONSE)
                {
                    self.done.push(Done::Logout(tx, Ok(r)));
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
    fn take_task(&mut self, itt: u32, op: Opcode) -> Option<Task> {
        let matches = match self.tasks.get(&itt) {
            Some(Task::Scsi(_)) => matches!(op, Opcode::SCSI_RESPONSE | Opcode::DATA_IN),
            Some(Task::Nop { .. }) => op == Opcode::NOP_IN,
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
            if let Some(tx) = t.tx.take() {
                self.done
                    .push(Done::Scsi(tx, Err(CommandError::Protocol(msg))));
            }
        }
    }

    fn on_data_in(&mut self, d: DataIn, data: Bytes) {
        let Some(Task::Scsi(t)) = self.tasks.get_mut(&d.itt) else {
            tracing::debug!(itt = d.itt, "Data-In for no SCSI task: ignored");
            return;
        };
        let mut problem = None;
        if t.tx.is_some() {
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
                t.read
                    .put(d.buffer_offset as usize, data, t.expected_in as usize);
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
        let Some(tx) = t.tx else {
            return;
        };
        let sense_data = match pdu::scsi::decode_sense_segment(&segment) {
            Ok(Some(s)) => segment.slice_ref(s),
            Ok(None) => Bytes::new(),
            Err(e) => {
                self.done
                    .push(Done::Scsi(tx, Err(CommandError::Protocol(e.to_string()))));
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
            data: t.read.into_bytes(),
            sense,
            sense_data,
            residual,
        };
        self.done.push(Done::Scsi(tx, Ok(result)));
    }

    fn on_r2t(&mut self, r: R2t) {
        let Some(Task::Scsi(t)) = self.tasks.get(&r.itt) else {
            tracing::debug!(itt = r.itt, "R2T for no SCSI task: ignored");
            return;
        };
        if t.tx.is_none() {
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
            if let Some(Task::Nop { tx }) = self.take_task(n.itt, Opcode::NOP_IN) {
                self.done.push(Done::Bytes(tx, Ok(data)));
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
            tx,
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
            let in_scope = |t: &ScsiTask| -> bool {
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
                    task.fail(CommandError::Aborted(function), &mut self.done);
                }
            }
        }
        self.done.push(Done::Tmf(tx, Ok(r.response)));
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
                task.fail(CommandError::Protocol(msg), &mut self.done);
            }
            return;
        }
        if r.final_bit {
            if let Some(Task::Text { tx, acc, .. }) = self.take_task(r.itt, Opcode::TEXT_RESPONSE) {
                self.done.push(Done::Bytes(tx, Ok(acc.freeze())));
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
        match request.and_then(|h| self.tasks.remove(&h.itt())) {
            Some(task) => task.fail(CommandError::Rejected(r.reason), &mut self.done),
            None => self.push_event(SessionEvent::Reject(r, header)),
        }
    }

    /// A PDU whose data digest failed (§7.8): at error recovery level 0
    /// its data is lost, so the task it belongs to fails.
    fn on_data_digest_error(&mut self, frame: &Frame) {
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
                    task.fail(
                        CommandError::Protocol(format!(
                            "data digest error on {:?}",
                            frame.bhs.opcode()
                        )),
                        &mut self.done,
                    );
                }
            }
            None => {}
        }
    }

    /// Ends the session: every request fails with `reason`.
    fn close(&mut self, reason: String) {
        if self.closed.is_none() {
            self.closed = Some(reason.clone());
        }
        let reason = self.closed.clone().unwrap_or(reason);
        self.waiting.clear();
        for (_, task) in self.tasks.drain() {
            task.fail(CommandError::Closed(reason.clone()), &mut self.done);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The core alone, in memory: requests in, frames out, frames in.
    use super::*;
    use iesp_proto::pdu::Isid;
    use pretty_assertions::assert_eq;

    fn outcome(params: SessionParams, cmd_sn: u32, max_cmd_sn: u32) -> LoginOutcome {
        LoginOutcome {
            params,
            isid: Isid::default(),
            tsih: 1,
            cid: 0,
            cmd_sn,
            exp_stat_sn: 100,
            exp_cmd_sn: cmd_sn,
            max_cmd_sn,
            target_alias: None,
            target_portal_group_tag: None,
            declared: Vec::new(),
            auth_method: "None".to_owned(),
            warnings: Vec::new(),
            exchanges: 1,
        }
    }

    fn core(params: SessionParams, window: u32) -> Core {
        let o = outcome(params, 10, 10 + window - 1);
        Core::new(&o, FrameConfig::default(), Trace::new(16))
    }

    /// Everything the core queued, framed again.
    fn sent(core: &mut Core) -> Vec<Frame> {
        let mut wire = BytesMut::new();
        for c in core.out.take() {
            wire.put_slice(&c);
        }
        let mut frames = Vec::new();
        while let Some(f) = framing::decode(&FrameConfig::default(), &mut wire).unwrap() {
            frames.push(f);
        }
        assert!(wire.is_empty());
        frames
    }

    fn data_out(f: &Frame) -> (DataOut, usize) {
        match f.pdu() {
            Pdu::DataOut(d) => (d, f.data.len()),
            other => panic!("expected a Data-Out, got {other:?}"),
        }
    }

    #[test]
    fn write_data_immediate_unsolicited_then_solicited() {
        let params = SessionParams {
            immediate_data: true,
            initial_r2t: false,
            first_burst_length: 8192,
            target_mrdsl: 4096,
            ..SessionParams::default()
        };
        let mut c = core(params, 8);
        let data = Bytes::from((0..20_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let (tx, _rx) = oneshot::channel();
        let itt = c
            .submit_scsi(Lun(0), &[0x2a; 10], data.clone(), 0, tx)
            .unwrap();
        let frames = sent(&mut c);
        assert_eq!(frames.len(), 2);
        let Pdu::ScsiCommand(cmd) = frames[0].pdu() else {
            panic!("not a command")
        };
        // Immediate data: min(FirstBurstLength, MRDSL, EDTL) = 4096; F=0
        // because unsolicited Data-Out follows up to FirstBurstLength.
        assert_eq!((cmd.write, cmd.read, cmd.final_bit), (true, false, false));
        assert_eq!(cmd.expected_data_transfer_length, 20_000);
        assert_eq!((cmd.cmd_sn, cmd.exp_stat_sn, cmd.itt), (10, 100, itt));
        assert_eq!(&cmd.cdb[..10], &[0x2a; 10]);
        assert_eq!(frames[0].data, data.slice(..4096));
        let (d, len) = data_out(&frames[1]);
        assert_eq!(
            (d.ttt, d.data_sn, d.buffer_offset, d.final_bit, len),
            (RESERVED_TAG, 0, 4096, true, 4096)
        );
        // An R2T for the rest: two segments of at most MRDSL, DataSN from 0.
        let r2t = R2t {
            lun: Lun(0),
            itt,
            ttt: 0x55,
            stat_sn: 100,
            exp_cmd_sn: 11,
            max_cmd_sn: 20,
            r2t_sn: 0,
            buffer_offset: 8192,
            desired_data_transfer_length: 11_808,
        };
        c.on_frame(Frame::new(&Pdu::R2t(r2t)));
        let frames = sent(&mut c);
        let got: Vec<(u32, u32, u32, bool, usize)> = frames
            .iter()
            .map(|f| {
                let (d, len) = data_out(f);
                (d.ttt, d.data_sn, d.buffer_offset, d.final_bit, len)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0x55, 0, 8192, false, 4096),
                (0x55, 1, 12288, false, 4096),
                (0x55, 2, 16384, true, 3616),
            ]
        );
        assert_eq!(frames[2].data, data.slice(16384..));
        assert_eq!(c.max_cmd_sn, 20, "the R2T's MaxCmdSN counts");
    }

    #[test]
    fn initial_r2t_without_immediate_data_sends_the_command_alone() {
        let params = SessionParams {
            immediate_data: false,
            initial_r2t: true,
            ..SessionParams::default()
        };
        let mut c = core(params, 8);
        let (tx, _rx) = oneshot::channel();
        c.submit_scsi(Lun(0), &[0x2a; 10], Bytes::from(vec![1u8; 512]), 0, tx)
            .unwrap();
        let frames = sent(&mut c);
        assert_eq!(frames.len(), 1);
        let Pdu::ScsiCommand(cmd) = frames[0].pdu() else {
            panic!()
        };
        assert!(cmd.final_bit && frames[0].data.is_empty());
    }

    #[test]
    fn large_data_segments_are_not_copied() {
        let params = SessionParams {
            target_mrdsl: 65536,
            ..SessionParams::default()
        };
        let mut c = core(params, 8);
        let data = Bytes::from(vec![7u8; 32768]);
        let (tx, _rx) = oneshot::channel();
        c.submit_scsi(Lun(0), &[0x2a; 10], data.clone(), 0, tx)
            .unwrap();
        let chunks = c.out.take();
        assert!(
            chunks
                .iter()
                .any(|ch| ch.as_ptr() == data.as_ptr() && ch.len() == data.len()),
            "the immediate data went out as a copy"
        );
    }

    #[test]
    fn single_data_in_is_handed_over_without_a_copy() {
        let mut c = core(SessionParams::default(), 8);
        let (tx, mut rx) = oneshot::channel();
        let itt = c
            .submit_scsi(Lun(0), &[0x28; 10], Bytes::new(), 4096, tx)
            .unwrap();
        sent(&mut c);
        let payload = Bytes::from(vec![9u8; 4096]);
        let d = DataIn {
            final_bit: true,
            status: Some(0),
            itt,
            ttt: RESERVED_TAG,
            stat_sn: 100,
            exp_cmd_sn: 11,
            max_cmd_sn: 20,
            ..DataIn::default()
        };
        c.on_frame(Frame::with_data(&Pdu::DataIn(d), payload.clone()));
        assert_eq!(c.exp_stat_sn, 101);
        deliver(std::mem::take(&mut c.done));
        let r = rx.try_recv().unwrap().unwrap();
        assert!(r.is_good());
        assert_eq!(r.data.as_ptr(), payload.as_ptr());
        assert!(c.tasks.is_empty());
    }

    #[test]
    fn cmd_sn_window_queues_and_drains() {
        let mut c = core(SessionParams::default(), 1);
        let mut rxs = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = oneshot::channel();
            c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, tx).unwrap();
            rxs.push(rx);
        }
        let frames = sent(&mut c);
        assert_eq!(frames.len(), 1, "a window of one command");
        assert_eq!(c.waiting.len(), 2);
        // MaxCmdSN < ExpCmdSN - 1: both ignored (§4.2.2.1).
        let nop = |exp: u32, max: u32| NopIn {
            lun: Lun(0),
            itt: RESERVED_TAG,
            ttt: RESERVED_TAG,
            stat_sn: 100,
            exp_cmd_sn: exp,
            max_cmd_sn: max,
        };
        c.on_frame(Frame::new(&Pdu::NopIn(nop(11, 5))));
        assert_eq!((c.exp_cmd_sn, c.max_cmd_sn), (10, 10));
        assert!(sent(&mut c).is_empty());
        // A stale (smaller) MaxCmdSN does not shrink the window either.
        c.on_frame(Frame::new(&Pdu::NopIn(nop(11, 12))));
        let frames = sent(&mut c);
        let sns: Vec<u32> = frames.iter().map(|f| f.bhs.u32_at(24)).collect();
        assert_eq!(sns, vec![11, 12]);
        c.on_frame(Frame::new(&Pdu::NopIn(nop(11, 11))));
        assert_eq!(c.max_cmd_sn, 12);
        assert_eq!(c.cmd_sn, 13);
        // A ping-less NOP-In is not answered and consumes no StatSN.
        assert!(sent(&mut c).is_empty());
        assert_eq!(c.exp_stat_sn, 100);
    }

    #[test]
    fn itts_skip_the_reserved_tag_and_tags_in_use() {
        let mut c = core(SessionParams::default(), 8);
        c.next_itt = RESERVED_TAG - 1;
        let (tx, _rx1) = oneshot::channel();
        let a = c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, tx).unwrap();
        let (tx, _rx2) = oneshot::channel();
        let b = c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, tx).unwrap();
        assert_eq!((a, b), (RESERVED_TAG - 1, 0));
        c.next_itt = RESERVED_TAG - 1;
        let (tx, _rx3) = oneshot::channel();
        let d = c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, tx).unwrap();
        assert_eq!(d, 1, "tags in use are skipped");
    }

    #[test]
    fn close_fails_everything_and_refuses_new_work() {
        let mut c = core(SessionParams::default(), 1);
        let mut rxs = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = oneshot::channel();
            c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, tx).unwrap();
            rxs.push(rx);
        }
        c.close("gone".to_owned());
        deliver(std::mem::take(&mut c.done));
        for mut rx in rxs {
            assert_eq!(
                rx.try_recv().unwrap(),
                Err(CommandError::Closed("gone".to_owned()))
            );
        }
        let (tx, _rx) = oneshot::channel();
        assert!(matches!(
            c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, tx),
            Err(CommandError::Closed(_))
        ));
    }

    #[test]
    fn read_buf_places_by_offset() {
        let mut r = ReadBuf::Empty;
        r.put(0, Bytes::from_static(b"abcd"), 12);
        r.put(8, Bytes::from_static(b"ijkl"), 12);
        r.put(4, Bytes::from_static(b"efgh"), 12);
        assert_eq!(&r.into_bytes()[..], b"abcdefghijkl");
    }
}
