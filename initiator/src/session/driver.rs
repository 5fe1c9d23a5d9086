//! The tokio driver of a [`SessionCore`]: it owns the socket, feeds the
//! core and resolves the callers' oneshots from the core's completions.
//!
//! - The **reader task** frames what the target sends
//!   ([`iesp_proto::framing`]), hands each frame to the core with the time
//!   of the read, sends the output the frames produced (Data-Out for R2Ts,
//!   ping echoes) before it wakes anyone, then delivers the completions.
//!   Between reads it sleeps until [`SessionCore::poll_timeout`] and calls
//!   [`SessionCore::handle_timeout`] (the keep-alive clock); with no
//!   keep-alive it only reads.
//! - **Writes**: whoever queued output (a caller submitting, the reader)
//!   takes the send token and writes without blocking, picking up what
//!   others queue meanwhile (one vectored write per batch); what the socket
//!   does not take at once goes to the **writer task** with the token.
//! - The core and the send token sit behind one mutex that nobody holds
//!   across I/O or while delivering completions.
//! - When the connection ends (EOF, an error, an unusable stream, the
//!   handle dropped) the core is closed and every outstanding request
//!   fails at once.
//! - The **watchdog task** (when the session has a default timeout) ticks
//!   at a fraction of it and answers every SCSI command that is overdue
//!   with [`CommandError::Timeout`]: one periodic task for the session
//!   instead of a timer armed and cancelled per command. The command stays
//!   outstanding in the core (its ITT reserved) until the target answers.

use iesp_netpoll::BusyPoll;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iesp_proto::framing::{self, FrameConfig, FrameError};
use iesp_proto::outbox;
use iesp_proto::pdu::{LogoutResponse, TmfResponse};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;

use super::core::{Completion, Event, KeepAlive, SessionCore};
use super::{CommandError, ScsiResult};
use crate::login::LoginOutcome;
use crate::raw::{Direction, RawConnection, TraceEvent};

/// Read buffer: room for several large PDUs per read; at least
/// [`FRAMES_PER_BUF`] of the largest the session accepts.
const READ_BUF: usize = 512 * 1024;

/// The read buffer holds at least this many of the largest PDUs: a PDU
/// that straddles the end of one buffer is copied into the next, so with
/// 1 MiB segments in a 512 KiB buffer every one was copied (issue 16).
/// Up to [`READ_BUF_MAX`]: a session that accepts 16 MiB segments does
/// not take 64 MiB buffers.
const FRAMES_PER_BUF: usize = 4;

/// The most [`FRAMES_PER_BUF`] makes a read buffer.
const READ_BUF_MAX: usize = 8 << 20;

/// The token the driver gives the core with each request: where its
/// answer goes.
pub(super) enum Reply {
    Scsi(ScsiReply),
    Bytes(oneshot::Sender<Result<Bytes, CommandError>>),
    Tmf(oneshot::Sender<Result<TmfResponse, CommandError>>),
    Logout(oneshot::Sender<Result<LogoutResponse, CommandError>>),
}

/// Where a SCSI command's answer goes, and when the watchdog gives up on
/// it.
pub(super) struct ScsiReply {
    /// `None` once the watchdog answered it with a timeout.
    tx: Option<oneshot::Sender<Result<ScsiResult, CommandError>>>,
    /// The watchdog tick at which it is overdue, and the timeout it
    /// reports; `None`: no deadline.
    due: Option<(u64, Duration)>,
}

impl ScsiReply {
    /// The [`Reply`] of a SCSI command answered on `tx`.
    pub(super) fn reply(
        tx: oneshot::Sender<Result<ScsiResult, CommandError>>,
        due: Option<(u64, Duration)>,
    ) -> Reply {
        Reply::Scsi(ScsiReply { tx: Some(tx), due })
    }
}

pub(super) type Core = SessionCore<Reply>;

/// Who may write to the socket now: nobody, a task that queued output
/// (non-blocking writes from its own context, the fast path), or the
/// writer task (the socket was full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    Idle,
    Direct,
    Writer,
}

/// What the mutex guards.
pub(super) struct State {
    pub(super) core: Core,
    sending: Sending,
}

/// Shared by the handle and the two tasks.
pub(super) struct Shared {
    state: Mutex<State>,
    /// The sending half. Whoever holds the send token writes to it,
    /// without blocking; the writer task waits for room when it is full.
    wr: OwnedWriteHalf,
    /// Hands the send token to the writer task, or tells it the session
    /// closed.
    wake_writer: Notify,
    /// Watchdog ticks so far (see [`run_watchdog`]).
    tick: AtomicU64,
}

/// The running driver of one session.
pub(super) struct Running {
    pub(super) shared: Arc<Shared>,
    pub(super) reader: AbortHandle,
    pub(super) writer: AbortHandle,
}

/// Takes over a logged-in connection and starts its tasks (inside a tokio
/// runtime).
pub(super) fn start(
    conn: RawConnection,
    outcome: &LoginOutcome,
    keep_alive: Option<KeepAlive>,
    poll_us: u32,
) -> Running {
    let (stream, rbuf, cfg, trace) = conn.into_parts();
    let busy = BusyPoll::new(&stream, poll_us);
    let (rd, wr) = stream.into_split();
    let core = SessionCore::new(outcome, cfg, trace, keep_alive, Instant::now());
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            core,
            sending: Sending::Idle,
        }),
        wr,
        wake_writer: Notify::new(),
        tick: AtomicU64::new(0),
    });
    let reader = tokio::spawn(run_reader(shared.clone(), rd, rbuf, cfg, busy)).abort_handle();
    let writer = tokio::spawn(run_writer(shared.clone())).abort_handle();
    Running {
        shared,
        reader,
        writer,
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // The core is consistent between statements (no await, no panic
        // paths on peer input), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a request on the core, sends what it queued and delivers any
    /// completion it produced.
    pub(super) fn submit<R>(
        &self,
        f: impl FnOnce(&mut Core) -> Result<R, CommandError>,
    ) -> Result<R, CommandError> {
        let mut st = self.lock();
        let r = f(&mut st.core)?;
        let mut events = Vec::new();
        st.core.drain_events(&mut events);
        self.flush(st);
        deliver(&mut events);
        Ok(r)
    }

    /// The watchdog tick by which a command submitted now, with timeout
    /// `timeout` checked every `period`, is overdue: the tick now may have
    /// begun up to a period ago, so one more than the whole periods in
    /// the timeout (it fires within `timeout + 2 × period`).
    pub(super) fn due(&self, timeout: Duration, period: Duration) -> (u64, Duration) {
        let p = period.as_nanos().max(1);
        let periods = u64::try_from(timeout.as_nanos().div_ceil(p)).unwrap_or(u64::MAX);
        let now = self.tick.load(Ordering::Relaxed);
        (now.saturating_add(1).saturating_add(periods), timeout)
    }

    /// Closes the session: every request fails with `reason`.
    pub(super) fn fail_all(&self, reason: String) {
        let mut events = Vec::new();
        {
            let mut st = self.lock();
            st.core.close(reason);
            st.core.drain_events(&mut events);
        }
        deliver(&mut events);
        self.wake_writer.notify_one();
    }

    /// Sends the queued output now unless someone else is sending (see the
    /// module docs).
    fn flush(&self, mut st: MutexGuard<'_, State>) {
        if st.sending != Sending::Idle {
            return;
        }
        let Some(chunks) = st.core.poll_transmit() else {
            return;
        };
        st.sending = Sending::Direct;
        drop(st);
        self.send_holding(chunks);
    }

    /// Takes the send token if nobody holds it, so that what others queue
    /// meanwhile waits for [`Shared::release`]; whether it was taken.
    fn hold(&self, st: &mut MutexGuard<'_, State>) -> bool {
        if st.sending != Sending::Idle {
            return false;
        }
        st.sending = Sending::Direct;
        true
    }

    /// Sends what was queued while the token was held (see
    /// [`Shared::hold`]) and lets the token go.
    fn release(&self) {
        let mut st = self.lock();
        match st.core.poll_transmit() {
            Some(chunks) => {
                drop(st);
                self.send_holding(chunks);
            }
            None => st.sending = Sending::Idle,
        }
    }

    /// Writes `chunks` and whatever is queued meanwhile, holding the send
    /// token (`Sending::Direct`); hands it to the writer task if the socket
    /// fills up, else lets it go.
    fn send_holding(&self, mut chunks: VecDeque<Bytes>) {
        loop {
            if let Err(e) = try_write_chunks(&self.wr, &mut chunks) {
                self.lock().sending = Sending::Idle;
                self.fail_all(format!("write error: {e}"));
                return;
            }
            let mut st = self.lock();
            if !chunks.is_empty() {
                st.core.requeue_transmit(chunks);
                st.sending = Sending::Writer;
                drop(st);
                self.wake_writer.notify_one();
                return;
            }
            match st.core.poll_transmit() {
                Some(more) => chunks = more,
                None => {
                    st.sending = Sending::Idle;
                    return;
                }
            }
        }
    }
}

/// Resolves the callers' oneshots (outside the lock). A dropped receiver
/// (the caller timed out or went away) is fine.
fn deliver(events: &mut Vec<Event<Reply>>) {
    for e in events.drain(..) {
        let Event::Completed { token, result, .. } = e else {
            continue;
        };
        // The core answers each request with the kind it was submitted
        // as; a mismatch cannot happen, and would drop the sender (the
        // caller then sees the session end).
        match (token, result) {
            (Reply::Scsi(ScsiReply { tx: Some(tx), .. }), Completion::Scsi(r)) => {
                drop(tx.send(r));
            }
            (Reply::Bytes(tx), Completion::Bytes(r)) => drop(tx.send(r)),
            (Reply::Tmf(tx), Completion::Tmf(r)) => drop(tx.send(r)),
            (Reply::Logout(tx), Completion::Logout(r)) => drop(tx.send(r)),
            _ => {}
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

async fn run_reader(
    shared: Arc<Shared>,
    mut rd: OwnedReadHalf,
    mut rbuf: BytesMut,
    cfg: FrameConfig,
    mut busy: BusyPoll,
) {
    // Reused for every batch: no allocation per read.
    let mut events = Vec::new();
    let read_buf = READ_BUF.max((FRAMES_PER_BUF * framing::frame_len_max(&cfg)).min(READ_BUF_MAX));
    let reason = loop {
        let (fatal, deadline, held) = {
            let mut st = shared.lock();
            let now = Instant::now();
            let mut fatal = None;
            loop {
                match framing::decode(&cfg, &mut rbuf) {
                    Ok(Some(frame)) => st.core.handle_frame(now, frame),
                    Ok(None) => break,
                    Err(FrameError::DataDigest { frame, .. }) => {
                        st.core.handle_data_digest_error(now, &frame);
                    }
                    Err(e) => {
                        // A bad header digest or an oversized segment: the
                        // stream cannot be trusted any further (§7.8).
                        fatal = Some(format!("unusable stream from the target: {e}"));
                        break;
                    }
                }
                if st.core.close_reason().is_some() {
                    break;
                }
            }
            st.core.drain_events(&mut events);
            let fatal = fatal.or_else(|| st.core.close_reason().map(str::to_owned));
            let deadline = st.core.poll_timeout();
            // Data-Out for R2Ts and ping answers leave before the
            // completions wake anyone.
            shared.flush(st);
            // The commands the completions' callers submit next are
            // written together: the reader holds the send token while they
            // run (it yields to them), then sends them in one write.
            let held = !events.is_empty() && fatal.is_none() && {
                let mut st = shared.lock();
                shared.hold(&mut st)
            };
            (fatal, deadline, held)
        };
        deliver(&mut events);
        if held {
            tokio::task::yield_now().await;
            shared.release();
        }
        if let Some(reason) = fatal {
            break reason;
        }
        if rbuf.capacity() - rbuf.len() < 16 * 1024 {
            rbuf.reserve(read_buf);
        }
        let read = match deadline {
            None => busy.read_buf(&mut rd, &mut rbuf).await,
            Some(at) => {
                tokio::select! {
                    r = busy.read_buf(&mut rd, &mut rbuf) => r,
                    () = tokio::time::sleep_until(at.into()) => {
                        let closed = {
                            let mut st = shared.lock();
                            st.core.handle_timeout(Instant::now());
                            st.core.drain_events(&mut events);
                            let closed = st.core.close_reason().map(str::to_owned);
                            shared.flush(st);
                            closed
                        };
                        deliver(&mut events);
                        match closed {
                            Some(reason) => break reason,
                            None => continue,
                        }
                    }
                }
            }
        };
        match read {
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
    shared.lock().core.trace_mut().record(
        Direction::Received,
        TraceEvent::Closed {
            partial: rbuf.len(),
            error: Some(reason.clone()),
        },
    );
    shared.fail_all(reason);
}

/// Finishes writes the socket could not take at once (see [`Shared::flush`]).
async fn run_writer(shared: Arc<Shared>) {
    loop {
        shared.wake_writer.notified().await;
        loop {
            let mut chunks = {
                let mut st = shared.lock();
                if st.sending != Sending::Writer {
                    break;
                }
                match st.core.poll_transmit() {
                    Some(c) => c,
                    None => {
                        st.sending = Sending::Idle;
                        break;
                    }
                }
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
        let st = shared.lock();
        if st.core.close_reason().is_some() && st.sending != Sending::Writer {
            return;
        }
    }
}

/// The session's command watchdog: every `period`, answers the SCSI
/// commands whose tick of [`Shared::due`] has come with a timeout. Ends
/// with the session.
pub(super) async fn run_watchdog(shared: Arc<Shared>, period: Duration) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    let mut overdue = Vec::new();
    loop {
        every.tick().await;
        let now = shared.tick.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut st = shared.lock();
            if st.core.close_reason().is_some() {
                return;
            }
            for token in st.core.scsi_tokens_mut() {
                if let Reply::Scsi(r) = token
                    && let Some((due, timeout)) = r.due
                    && now >= due
                    && let Some(tx) = r.tx.take()
                {
                    overdue.push((tx, timeout));
                }
            }
        }
        for (tx, timeout) in overdue.drain(..) {
            drop(tx.send(Err(CommandError::Timeout(timeout))));
        }
    }
}
