//! The tokio socket driver of one connection, around the sans-IO login
//! ([`super::login`]) and full feature phase ([`super::ffp`]) cores.
//!
//! In the full feature phase a connection is two tasks:
//!
//! - the **reader/executor** reads into one large buffer, lets the core
//!   frame and handle every complete PDU in it ([`FullFeature::receive`]):
//!   SCSI commands run there, backend reads included; what the core queued
//!   goes to the writer as one batch;
//! - the **writer** ([`write_loop`]) writes each batch (headers and data
//!   segments, zero-copy `Bytes`) with vectored writes, joining the batches
//!   already waiting into one `writev`; read data left in a backing file
//!   ([`super::output::Piece::File`]) goes with `sendfile(2)`, waiting for
//!   the socket's writable readiness when it is full.
//!
//! The batches travel through a bounded channel ([`WRITE_QUEUE`] batches):
//! while command N's Data-In is being copied into the socket on one core,
//! command N+1's backend read runs on the other; a writer that falls behind
//! holds the reader back. A burst of pipelined commands still costs one
//! `read` and, usually, one `writev`; no lock is held across socket I/O.
//! Nagle is off. On LUs whose backend may block, commands run inside
//! `block_in_place`.
//!
//! Time reaches the core only as the `now` the driver passes: one timer,
//! armed at [`FullFeature::poll_timeout`] and re-armed when it fires (the
//! deadline never moves earlier, so a read does not have to touch it).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use iesp_proto::framing::{self, Frame, FrameConfig};
use iesp_proto::outbox::Outbox;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use super::deferred::Deferred;
use super::ffp::{After, FfpSetup, FullFeature, KeepAlive};
use super::login::{self, Login, LoginStep};
use super::output::{self, Batch, Output, Piece};
use crate::admission::ConnPermit;
use crate::memory::SessionMemory;
use crate::scsi::NexusEnd;
use crate::server::Target;
use crate::stats::ConnInfo;

/// Read buffer size: room for several large PDUs per read.
const READ_BUF: usize = 512 * 1024;

/// Batches of PDUs queued for the writer task before the reader waits: one
/// being written, more being prepared.
const WRITE_QUEUE: usize = 4;

/// A timer far enough away to mean "never" when keep-alive is off.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// Runs one connection to completion. `permit` is its place under the
/// connection caps ([`crate::admission`]), released as it ends.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    portal: SocketAddr,
    target: Arc<Target>,
    mut stop: watch::Receiver<bool>,
    mut permit: ConnPermit,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut rbuf = BytesMut::with_capacity(READ_BUF);

    // ---- Login phase: no digests yet; login PDUs are small.
    let login_cfg = FrameConfig {
        header_digest: false,
        data_digest: false,
        max_data_segment: login::MAX_LOGIN_SEGMENT,
    };
    let mut out = Outbox::new(login_cfg);
    let mut login = Login::new(target.clone(), portal).with_peer(peer);
    // One deadline for the whole login, however often the initiator sends
    // (a PDU every few seconds must not keep a connection unauthenticated).
    let deadline = tokio::time::Instant::now() + target.limits.login_timeout;
    let timed_out = || {
        tracing::info!(%peer, "login not complete within {:?}: dropping the connection",
            target.limits.login_timeout);
        io::Error::new(io::ErrorKind::TimedOut, "login timed out")
    };
    let outcome = loop {
        let frame = tokio::select! {
            f = tokio::time::timeout_at(deadline, next_frame(&mut rd, &mut rbuf, &login_cfg)) => match f {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(timed_out()),
            },
            _ = stop.changed() => return Ok(()),
        };
        let step = login.handle(frame, &mut out);
        if let Some(until) = login.take_hold() {
            // Authentication back-off: the answer waits, within the deadline.
            let until = tokio::time::Instant::from_std(until);
            if until >= deadline {
                tokio::time::sleep_until(deadline).await;
                return Err(timed_out());
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
        flush(&mut wr, &mut out).await?;
        match step {
            LoginStep::Continue => {}
            LoginStep::Failed => return Ok(()),
            LoginStep::Done(outcome) => break outcome,
        }
    };
    permit.authenticated();

    // ---- Full feature phase.
    let tsih = outcome.session.as_ref().map_or(0, |s| s.tsih);
    let isid = hex(&outcome.nexus.isid.0);
    tracing::info!(%peer, initiator = %outcome.nexus.initiator_name, target = %outcome.nexus.target_name,
        kind = ?outcome.kind, %isid, tsih, header_digest = %digest_name(outcome.header_digest),
        data_digest = %digest_name(outcome.data_digest), "login complete");
    let initiator = outcome.nexus.initiator_name.clone();
    let login::LoginOutcome {
        kind,
        neg,
        params,
        header_digest,
        data_digest,
        nexus,
        luns,
        discovery,
        cid,
        stat_sn,
        exp_cmd_sn,
        mut session,
    } = *outcome;
    let frame = FrameConfig {
        header_digest,
        data_digest,
        max_data_segment: params.target_mrdsl,
    };
    let conn_info = ConnInfo {
        initiator: nexus.initiator_name.to_string(),
        target: nexus.target_name.to_string(),
        isid: nexus.isid.0.iter().map(|b| format!("{b:02x}")).collect(),
        tsih: session.as_ref().map_or(0, |s| s.tsih),
        cid,
        discovery: kind == super::ffp::SessionKind::Discovery,
        header_digest,
        data_digest,
        local: portal.to_string(),
        peer: peer.to_string(),
        max_recv_data_segment: params.target_mrdsl,
        max_xmit_data_segment: params.initiator_mrdsl,
    };
    let limits = &target.limits;
    let setup = FfpSetup {
        params,
        neg,
        kind,
        nexus,
        luns,
        discovery,
        cid,
        frame,
        stat_sn,
        exp_cmd_sn,
        command_window: limits.command_window,
        keepalive: limits.nop_interval.map(|interval| KeepAlive {
            interval,
            timeout: limits.nop_timeout,
        }),
    };
    // One share for the whole session, whichever connection its data
    // comes on.
    let new_share = || SessionMemory::new(target.memory.clone(), limits.session_memory);
    let memory = match &session {
        Some(s) => s.shared.memory(new_share),
        None => new_share(),
    };
    let mut ffp =
        FullFeature::new(setup, Instant::now()).with_memory(memory, Some(limits.data_out_timeout));
    if let Some(s) = &session {
        // The session's command window (RFC 7143 §4.2.2.1), shared by its
        // connections ([`crate::session`]).
        ffp = ffp.with_session(s.shared.clone(), s.conn_id);
    }
    let registration = target.stats.connection_up(conn_info);
    let stats = registration.stats.clone();
    ffp.set_stats(stats.clone());
    let kill = session.as_ref().map(|s| s.kill.clone());
    let killed = async {
        match &kill {
            Some(k) => k.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(killed);
    // Another connection of the session moved ExpCmdSN: commands held here
    // may be next.
    let wake = session.as_ref().map(|s| s.wake.clone());
    // Commands run in this task. On LUs whose backend may wait (NBD, block
    // devices) that wait must not stall the other connections this worker
    // thread serves: `block_in_place` hands them to another thread first.
    // It needs the multi-thread runtime; embedded targets on a current-thread
    // runtime run inline.
    let may_block = ffp.may_block()
        && tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
    // READ and WRITE on those LUs overlap on the runtime's blocking
    // threads, up to `io_workers` per session ([`super::deferred`]).
    let finished = Arc::new(tokio::sync::Notify::new());
    if may_block {
        let handle = tokio::runtime::Handle::current();
        let wake = finished.clone();
        ffp = ffp.with_deferred(Deferred::new(
            limits.io_workers,
            Box::new(move |job| {
                handle.spawn_blocking(job);
            }),
            Arc::new(move || wake.notify_one()),
        ));
    }
    let deadline = |ffp: &FullFeature| {
        let at = ffp.poll_timeout().unwrap_or_else(|| Instant::now() + FAR);
        tokio::time::Instant::from_std(at)
    };
    let timer = tokio::time::sleep_until(deadline(&ffp));
    tokio::pin!(timer);
    let (tx, rx) = mpsc::channel::<Batch>(WRITE_QUEUE);
    let writer = tokio::spawn(write_loop(wr, rx, stats.clone()));
    let mut busy = iesp_netpoll::BusyPoll::new(rd.as_ref(), limits.poll_us);
    let result = async {
        loop {
            if rbuf.capacity() - rbuf.len() < READ_BUF / 4 {
                rbuf.reserve(READ_BUF);
            }
            let after = tokio::select! {
                n = busy.read_buf(&mut rd, &mut rbuf) => {
                    let n = n?;
                    if let Some(c) = stats.counting() {
                        c.bytes_in.add(n as u64);
                    }
                    if n == 0 {
                        return Ok("closed by the initiator");
                    }
                    let after = receive(&mut ffp, &mut rbuf, may_block);
                    // A new write task may bring its Data-Out deadline, or a
                    // wait for memory its retry, before the armed one.
                    timer.as_mut().reset(deadline(&ffp));
                    after
                }
                () = &mut killed => {
                    let why = session.as_ref().map_or("closed by the session", |s| s.close_reason());
                    tracing::info!(%peer, %initiator, %isid, tsih, cid, "{why}: closing the connection");
                    return Ok(why);
                }
                () = async {
                    match &wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = Instant::now();
                    let after = blocking(may_block, || ffp.resume(now));
                    timer.as_mut().reset(deadline(&ffp));
                    after
                }
                _ = stop.changed() => {
                    // Finish what already arrived, fail what is still
                    // waiting for data, tell the initiator, flush.
                    let _ = receive(&mut ffp, &mut rbuf, may_block);
                    blocking(may_block, || ffp.drain_deferred());
                    ffp.shutdown();
                    let pdus_out = ffp.outbox().take_pdu_count();
    if let Some(c) = stats.counting() {
        c.pdus_out.add(pdus_out);
    }
                    send(&tx, ffp.outbox()).await?;
                    return Ok("target shutting down");
                }
                () = tx.closed() => return Err(writer_gone()),
                () = finished.notified() => {
                    ffp.poll_deferred();
                    Ok(After::Continue)
                }
                () = &mut timer => {
                    let after = ffp.handle_timeout(Instant::now());
                    timer.as_mut().reset(deadline(&ffp));
                    Ok(after)
                }
            };
            let pdus_out = ffp.outbox().take_pdu_count();
            if let Some(c) = stats.counting() {
                c.pdus_out.add(pdus_out);
            }
            send(&tx, ffp.outbox()).await?;
            match after {
                Ok(After::Continue) => {}
                Ok(After::Close) if ffp.logged_out() => return Ok("logout"),
                Ok(After::Close) if ffp.ping_outstanding() => return Ok("no answer to NOP-In"),
                Ok(After::Close) => return Ok("target reset"),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }
    .await;
    // Commands still on workers finish before the nexus ends (their
    // answers are sent if the connection still stands).
    blocking(may_block, || ffp.drain_deferred());
    // Commands held for CmdSN order end with the connection; the other
    // connections of the session go on past them.
    ffp.release_held();
    let pdus_out = ffp.outbox().take_pdu_count();
    if let Some(c) = stats.counting() {
        c.pdus_out.add(pdus_out);
    }
    let last = ffp.outbox().take();
    if !last.is_empty() {
        // Never waits: a writer that is stuck must not hold the end up.
        let _ = tx.try_send(last);
    }
    // The writer sends what is queued (a Logout Response, the last
    // Data-In), then shuts the socket down. Its error, if any, is the real
    // cause of a reader that found it gone.
    drop(tx);
    let written = writer
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("writer task: {e}"))));
    let result = match (result, written) {
        (Err(e), Err(w)) if e.kind() == io::ErrorKind::BrokenPipe => Err(w),
        (Ok(_), Err(w)) => Err(w),
        (r, _) => r,
    };
    tracing::debug!(%peer, logged_out = ffp.logged_out(), result = ?result, "connection closed");
    match &result {
        Ok(_) if ffp.logged_out() => {
            tracing::info!(%peer, %initiator, %isid, tsih, "logout");
        }
        Ok(reason) => {
            tracing::info!(%peer, %initiator, %isid, tsih, pending = ffp.pending_tasks(), "connection lost: {reason}");
        }
        Err(e) => {
            tracing::info!(%peer, %initiator, %isid, tsih, pending = ffp.pending_tasks(), "connection lost: {e}");
        }
    }
    let result = result.map(|_| ());
    target.stats.login.logged_out(ffp.logged_out());
    drop(registration);
    // The nexus ends with the last connection serving it (a discovery
    // session has no registration and no nexus).
    let last = session.as_mut().is_none_or(|s| s.leave());
    if last {
        ffp.end_of_nexus(if ffp.logged_out() {
            NexusEnd::Logout
        } else {
            NexusEnd::Lost
        });
    }
    drop(session);
    result
}

fn digest_name(on: bool) -> &'static str {
    if on { "CRC32C" } else { "None" }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `f`, in a blocking section when the backend may block.
fn blocking<R>(may_block: bool, f: impl FnOnce() -> R) -> R {
    if may_block {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// [`FullFeature::receive`], in a blocking section when the backend may
/// block.
fn receive(
    ffp: &mut FullFeature,
    rbuf: &mut BytesMut,
    may_block: bool,
) -> Result<After, super::ffp::Fatal> {
    if may_block {
        tokio::task::block_in_place(|| ffp.receive(rbuf, Instant::now()))
    } else {
        ffp.receive(rbuf, Instant::now())
    }
}

/// Reads until one whole frame is buffered; `None` on a clean EOF.
async fn next_frame(
    rd: &mut OwnedReadHalf,
    rbuf: &mut BytesMut,
    cfg: &FrameConfig,
) -> io::Result<Option<Frame>> {
    loop {
        match framing::decode(cfg, rbuf) {
            Ok(Some(frame)) => return Ok(Some(frame)),
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(READ_BUF);
        }
        if rd.read_buf(rbuf).await? == 0 {
            return if rbuf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a PDU",
                ))
            };
        }
    }
}

fn writer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection's writer stopped")
}

/// Hands everything queued in `out` to the writer task, waiting while its
/// queue is full.
async fn send(tx: &mpsc::Sender<Batch>, out: &mut Output) -> io::Result<()> {
    let batch = out.take();
    if batch.is_empty() {
        return Ok(());
    }
    tx.send(batch).await.map_err(|_| writer_gone())
}

/// The writer task of a connection in full feature phase: writes every
/// batch in order, joining the batches already queued into one vectored
/// write, until the reader drops its end; then shuts the socket down. A
/// failed write ends it (the reader sees the channel close).
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Batch>,
    stats: Arc<crate::stats::ConnStats>,
) -> io::Result<()> {
    let mut result = Ok(());
    while let Some(mut chunks) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            chunks.extend(more);
        }
        match write_chunks(&mut wr, chunks).await {
            Ok(sent) => {
                if let Some(c) = stats.counting() {
                    c.bytes_out.add(sent as u64);
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    drop(rx);
    let _ = wr.shutdown().await;
    result
}

/// Writes everything queued, with as few syscalls as the kernel allows.
async fn flush(wr: &mut OwnedWriteHalf, out: &mut Outbox) -> io::Result<usize> {
    write_chunks(wr, out.take().into_iter().map(Piece::Bytes).collect()).await
}

/// Writes `chunks` in order: runs of in-memory pieces with vectored writes
/// of up to 64 slices, file pieces with `sendfile`.
async fn write_chunks(wr: &mut OwnedWriteHalf, mut chunks: Batch) -> io::Result<usize> {
    let total = chunks.iter().map(Piece::len).sum();
    while let Some(front) = chunks.front_mut() {
        if let Piece::File(file) = front {
            send_file(wr, file).await?;
            chunks.pop_front();
            continue;
        }
        let mut slices = [IoSlice::new(&[]); 64];
        let mut used = 0;
        for (slot, c) in slices.iter_mut().zip(chunks.iter()) {
            let Piece::Bytes(b) = c else { break };
            *slot = IoSlice::new(b);
            used += 1;
        }
        let n = wr.write_vectored(&slices[..used]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        output::consume(&mut chunks, n);
    }
    Ok(total)
}

/// Sends a file piece whole: `sendfile` while the socket takes it, then
/// waits for room.
async fn send_file(wr: &mut OwnedWriteHalf, file: &mut crate::backend::Spliced) -> io::Result<()> {
    use std::os::fd::AsFd;
    let sock: &TcpStream = wr.as_ref();
    while !file.is_empty() {
        match sock.try_io(tokio::io::Interest::WRITABLE, || {
            file.send_some(sock.as_fd())
        }) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
