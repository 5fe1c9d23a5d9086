//! The caller's side of a session: [`Session`], a cheap handle (`Clone`)
//! whose `&self` methods may be called from many tasks at once, and
//! [`CommandHandle`] for a command in flight. Each request goes to the
//! [`SessionCore`](super::SessionCore) with a oneshot as its token; the
//! driver resolves it from the core's completion (see `driver`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use iesp_proto::bhs::Lun;
use iesp_proto::negotiation::SessionParams;
use iesp_proto::pdu::{LogoutReason, LogoutResponse, TmfFunction, TmfResponse};
use iesp_proto::text::{self, KeyValue};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::core::KeepAlive;
use super::driver::{self, Core, Reply, ScsiReply, Shared};
use super::{CommandError, MAX_CDB_LEN, ScsiResult, SessionEvent, SessionStats};
use crate::login::{self, LoginError, LoginOptions, LoginOutcome};
use crate::raw::{RawConnection, Trace};
use crate::url::IscsiUrl;

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
    local: SocketAddr,
    reader: AbortHandle,
    writer: AbortHandle,
    /// Default per-request timeout in nanoseconds; 0 = none.
    timeout_ns: AtomicU64,
    /// The watchdog's period in nanoseconds while it runs; 0 = none (a
    /// default timeout is then a timer per request).
    watchdog_ns: AtomicU64,
    /// The watchdog task and its period.
    watchdog: Mutex<Option<(Duration, AbortHandle)>>,
}

/// How often the watchdog checks a default timeout: a sixteenth of it,
/// from 1 ms to 1 s (a 60 s timeout fires within 62 s).
fn watchdog_period(timeout: Duration) -> Duration {
    (timeout / 16).clamp(Duration::from_millis(1), Duration::from_secs(1))
}

impl Handle {
    /// Starts, restarts or stops the watchdog for `timeout`. Outside a
    /// tokio runtime there is none, and requests fall back to a timer each.
    fn set_watchdog(&self, timeout: Option<Duration>) {
        let mut w = self.watchdog.lock().unwrap_or_else(|p| p.into_inner());
        let period = timeout.map(watchdog_period);
        if w.as_ref().map(|(p, _)| *p) == period {
            return;
        }
        self.watchdog_ns.store(0, Ordering::Relaxed);
        if let Some((_, task)) = w.take() {
            task.abort();
        }
        if let (Some(p), Ok(rt)) = (period, tokio::runtime::Handle::try_current()) {
            let task = rt
                .spawn(driver::run_watchdog(self.shared.clone(), p))
                .abort_handle();
            *w = Some((p, task));
            let ns = u64::try_from(p.as_nanos()).unwrap_or(u64::MAX);
            self.watchdog_ns.store(ns, Ordering::Relaxed);
        }
    }

    fn watchdog_period(&self) -> Option<Duration> {
        match self.watchdog_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared
            .fail_all("the session handle was dropped".to_owned());
        self.reader.abort();
        self.writer.abort();
        if let Some((_, task)) = self.watchdog.get_mut().ok().and_then(|w| w.take()) {
            task.abort();
        }
    }
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
    /// Connects to `addr` (within [`LoginOptions::connect_timeout`]), logs
    /// in with `opts` and starts the session, with the keep-alive clock of
    /// [`LoginOptions::keep_alive`].
    pub async fn login(addr: SocketAddr, opts: LoginOptions) -> Result<Session, LoginError> {
        let mut conn = login::connect(addr, &opts).await?;
        let outcome = login::login(&mut conn, &opts).await?;
        Ok(Session::start(conn, outcome, opts.keep_alive, opts.poll_us))
    }

    /// Logs in to the target a URL names, with its credentials and
    /// otherwise default options.
    pub async fn login_url(url: &IscsiUrl, initiator_name: &str) -> Result<Session, LoginError> {
        Session::login_url_with(url, LoginOptions::from_url(url, initiator_name)).await
    }

    /// Logs in to the target a URL names with `opts`, usually
    /// [`LoginOptions::from_url`] adjusted (negotiation policy, connect
    /// timeout, keep-alive, …).
    pub async fn login_url_with(url: &IscsiUrl, opts: LoginOptions) -> Result<Session, LoginError> {
        if url.target.is_none() {
            return Err(LoginError::Protocol(format!(
                "{url} names no target (a discovery URL)"
            )));
        }
        let addr = url.resolve().await?;
        Session::login(addr, opts).await
    }

    /// Takes over a connection logged in by hand with [`login::login`].
    /// Must be called inside a tokio runtime.
    pub fn from_login(conn: RawConnection, outcome: LoginOutcome) -> Session {
        Session::from_login_with(conn, outcome, None)
    }

    /// [`Session::from_login`] with a keep-alive clock.
    pub fn from_login_with(
        conn: RawConnection,
        outcome: LoginOutcome,
        keep_alive: Option<KeepAlive>,
    ) -> Session {
        Session::start(conn, outcome, keep_alive, 0)
    }

    /// Starts the driver; `poll_us` is [`LoginOptions::poll_us`].
    fn start(
        conn: RawConnection,
        outcome: LoginOutcome,
        keep_alive: Option<KeepAlive>,
        poll_us: u32,
    ) -> Session {
        let peer = conn.peer_addr();
        let local = conn.local_addr();
        let running = driver::start(conn, &outcome, keep_alive, poll_us);
        Session {
            handle: Arc::new(Handle {
                shared: running.shared,
                outcome,
                peer,
                local,
                reader: running.reader,
                writer: running.writer,
                timeout_ns: AtomicU64::new(0),
                watchdog_ns: AtomicU64::new(0),
                watchdog: Mutex::new(None),
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

    /// This side's address of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local
    }

    /// A default timeout for every request of this session (`None`: wait
    /// for ever, the default). [`Session::command`] is watched by the
    /// session's watchdog task (started here, inside a tokio runtime),
    /// which answers an overdue command within `timeout` plus two of its
    /// periods (a sixteenth of the timeout each, 1 ms to 1 s).
    pub fn set_default_timeout(&self, timeout: Option<Duration>) {
        let ns = timeout.map_or(0, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        self.handle.timeout_ns.store(ns, Ordering::Relaxed);
        self.handle.set_watchdog(timeout);
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
        f: impl FnOnce(&mut Core) -> Result<u32, CommandError>,
    ) -> Result<u32, CommandError> {
        self.handle.shared.submit(f)
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
        self.submit_due(lun, cdb, data_out, expected_in, None)
    }

    /// [`Session::submit`]; `due`: the watchdog's deadline.
    fn submit_due(
        &self,
        lun: Lun,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
        due: Option<(u64, Duration)>,
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
        let itt = self.submit_task(|core| {
            core.submit_scsi(lun, cdb, data_out, expected_in, ScsiReply::reply(tx, due))
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
        let timeout = self.default_timeout();
        let due = timeout
            .zip(self.handle.watchdog_period())
            .map(|(t, p)| self.handle.shared.due(t, p));
        let h = self.submit_due(lun, cdb, data_out, expected_in, due)?;
        if due.is_some() {
            // The watchdog answers it if the target does not in time.
            return await_reply(h.rx).await;
        }
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
        self.submit_task(|core| core.submit_nop(data, Reply::Bytes(tx)))?;
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
        self.submit_task(|core| core.submit_tmf(function, lun, referenced_itt, Reply::Tmf(tx)))?;
        self.wait(rx).await
    }

    /// A Text Request exchange in full feature phase (§11.10): sends
    /// `pairs`, follows the target's continuations (C bit, TTT) and returns
    /// the whole answer.
    pub async fn text(&self, pairs: &[KeyValue]) -> Result<Vec<KeyValue>, CommandError> {
        let payload = Bytes::from(text::encode_to_vec(pairs));
        let (tx, rx) = oneshot::channel();
        self.submit_task(|core| core.submit_text(payload, Reply::Bytes(tx)))?;
        let whole = self.wait(rx).await?;
        text::decode(&whole).map_err(|e| CommandError::Protocol(format!("Text Response: {e}")))
    }

    /// Logs the session out (reason "close the session", §11.14) after the
    /// requests already queued, and closes the connection.
    pub async fn logout(self) -> Result<LogoutResponse, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.submit_task(|core| {
            core.submit_logout(LogoutReason::CLOSE_SESSION, Reply::Logout(tx))
        })?;
        let r = self.wait(rx).await;
        self.handle.shared.fail_all("logged out".to_owned());
        r
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.shared.lock().core.close_reason().is_some()
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<String> {
        self.handle
            .shared
            .lock()
            .core
            .close_reason()
            .map(str::to_owned)
    }

    /// Sequence numbers and queue depths now.
    pub fn stats(&self) -> SessionStats {
        self.handle.shared.lock().core.stats()
    }

    /// Asynchronous messages and rejects received since the last call.
    pub fn events(&self) -> Vec<SessionEvent> {
        self.handle.shared.lock().core.take_session_events()
    }

    /// The last PDUs sent and received (a copy).
    pub fn trace(&self) -> Trace {
        self.handle.shared.lock().core.trace().clone()
    }

    /// How many PDUs the trace keeps (0 turns tracing off).
    pub fn set_trace_capacity(&self, capacity: usize) {
        self.handle
            .shared
            .lock()
            .core
            .trace_mut()
            .set_capacity(capacity);
    }
}
