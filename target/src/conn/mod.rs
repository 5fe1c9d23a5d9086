//! One iSCSI connection: the tokio driver around the sans-socket login
//! ([`login`]) and full feature phase ([`ffp`]) state machines.
//!
//! The driver reads into one large buffer, frames every complete PDU in it
//! ([`iesp_proto::framing`]), lets the state machine handle each, and then
//! writes everything queued with one vectored write. A burst of pipelined
//! commands thus costs one `read` and one `writev`, and no lock is held
//! across any socket I/O. Nagle is off: responses leave as soon as a batch
//! is done.

pub mod ffp;
pub mod login;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iesp_proto::framing::{self, Frame, FrameConfig, FrameError};
use iesp_proto::pdu::{AsyncEvent, RejectReason};
use iesp_proto::scsi::{Asc, Sense, SenseKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::scsi::NexusEnd;
use crate::server::Target;
use ffp::{After, FullFeature};
use iesp_proto::outbox::{self, Outbox};
use login::{Login, LoginStep};

/// Read buffer size: room for several large PDUs per read.
const READ_BUF: usize = 512 * 1024;

/// How long a login may stay silent before the connection is dropped.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one connection to completion.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    portal: SocketAddr,
    target: Arc<Target>,
    mut stop: watch::Receiver<bool>,
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
    let mut login = Login::new(target.clone(), portal);
    let outcome = loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(LOGIN_TIMEOUT, next_frame(&mut rd, &mut rbuf, &login_cfg)) => match f {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "login timed out")),
            },
            _ = stop.changed() => return Ok(()),
        };
        let step = login.handle(frame, &mut out);
        flush(&mut wr, &mut out).await?;
        match step {
            LoginStep::Continue => {}
            LoginStep::Failed => return Ok(()),
            LoginStep::Done(outcome) => break outcome,
        }
    };

    // ---- Full feature phase.
    let cfg = FrameConfig {
        header_digest: outcome.header_digest,
        data_digest: outcome.data_digest,
        max_data_segment: outcome.params.target_mrdsl,
    };
    tracing::info!(%peer, initiator = %outcome.nexus.initiator_name, target = %outcome.nexus.target_name,
        kind = ?outcome.kind, "login complete");
    let kill = outcome.session.as_ref().map(|s| s.kill.clone());
    let mut ffp = FullFeature::new(
        outcome.params,
        outcome.neg,
        outcome.kind,
        outcome.nexus,
        outcome.luns,
        outcome.discovery,
        outcome.cid,
        Outbox::new(cfg),
        outcome.stat_sn,
        outcome.exp_cmd_sn,
        target.limits.command_window,
    );
    let killed = async {
        match &kill {
            Some(k) => k.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(killed);
    // Whether the session ended with a Logout (a clean end of the I_T
    // nexus) rather than a dropped connection, a reinstatement or shutdown.
    let mut logged_out = false;
    // Commands run in this task. On LUs whose backend may wait (NBD, block
    // devices) that wait must not stall the other connections this worker
    // thread serves: `block_in_place` hands them to another thread first.
    // It needs the multi-thread runtime; embedded targets on a current-thread
    // runtime run inline.
    let may_block = ffp.may_block()
        && tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
    let result = async {
        // Keep-alive (§11.19): after `nop_interval` of silence, ping with a
        // NOP-In that asks for an answer; no answer within `nop_timeout`
        // means the initiator is gone.
        let keepalive = target.limits.nop_interval;
        let period = keepalive.map_or(Duration::from_secs(3600), |i| (i / 4).max(Duration::from_millis(10)));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rx = tokio::time::Instant::now();
        let mut ping_sent: Option<tokio::time::Instant> = None;
        loop {
            if rbuf.capacity() - rbuf.len() < READ_BUF / 4 {
                rbuf.reserve(READ_BUF);
            }
            tokio::select! {
                n = rd.read_buf(&mut rbuf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                    last_rx = tokio::time::Instant::now();
                }
                () = &mut killed => {
                    tracing::info!(%peer, "session reinstated by a new login: closing the old connection");
                    return Ok(());
                }
                _ = stop.changed() => {
                    // Finish what already arrived, fail what is still
                    // waiting for data, tell the initiator, flush.
                    let _ = run_commands(&mut ffp, &cfg, &mut rbuf, may_block);
                    ffp.abort_pending(&Sense::new(SenseKey::NOT_READY, Asc(0x0412)));
                    ffp.async_message(AsyncEvent::CONNECTION_DROP, 2, 0);
                    flush(&mut wr, &mut ffp.out).await?;
                    return Ok(());
                }
                now = tick.tick(), if keepalive.is_some() => {
                    let interval = keepalive.unwrap_or(period);
                    if !ffp.ping_outstanding() {
                        ping_sent = None;
                    }
                    match ping_sent {
                        Some(sent) if now - sent >= target.limits.nop_timeout => {
                            tracing::info!(%peer, "no answer to NOP-In within {:?}: dropping the connection", target.limits.nop_timeout);
                            return Ok(());
                        }
                        None if now - last_rx >= interval => {
                            ffp.ping();
                            ping_sent = Some(now);
                            flush(&mut wr, &mut ffp.out).await?;
                        }
                        _ => {}
                    }
                    continue;
                }
            }
            let after = run_commands(&mut ffp, &cfg, &mut rbuf, may_block);
            flush(&mut wr, &mut ffp.out).await?;
            match after {
                Ok(After::Continue) => {}
                Ok(After::Close) => {
                    logged_out = ffp.logged_out();
                    return Ok(());
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }
    .await;
    let _ = wr.shutdown().await;
    ffp.end_of_nexus(if logged_out {
        NexusEnd::Logout
    } else {
        NexusEnd::Lost
    });
    drop(outcome.session);
    result
}

/// [`process`], in place of a blocking section when the backend may block.
fn run_commands(
    ffp: &mut FullFeature,
    cfg: &FrameConfig,
    rbuf: &mut BytesMut,
    may_block: bool,
) -> Result<After, ffp::Fatal> {
    if may_block {
        tokio::task::block_in_place(|| process(ffp, cfg, rbuf))
    } else {
        process(ffp, cfg, rbuf)
    }
}

/// Handles every whole frame in the buffer.
fn process(
    ffp: &mut FullFeature,
    cfg: &FrameConfig,
    rbuf: &mut BytesMut,
) -> Result<After, ffp::Fatal> {
    loop {
        match framing::decode(cfg, rbuf) {
            Ok(Some(frame)) => {
                if ffp.handle(frame)? == After::Close {
                    return Ok(After::Close);
                }
            }
            Ok(None) => return Ok(After::Continue),
            Err(FrameError::DataDigest { frame, .. }) => ffp.data_digest_error(&frame),
            Err(FrameError::HeaderDigest { bhs, .. }) => {
                // The stream cannot be resynchronised (§7.8): drop.
                return Err(ffp::Fatal::Protocol(format!(
                    "header digest error on {bhs:?}"
                )));
            }
            Err(FrameError::DataSegmentTooLong { bhs, len, max }) => {
                ffp.reject(RejectReason::PROTOCOL_ERROR, &bhs);
                return Err(ffp::Fatal::Protocol(format!(
                    "data segment of {len} bytes exceeds {max}"
                )));
            }
        }
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

/// Writes everything queued, with as few syscalls as the kernel allows.
async fn flush(wr: &mut OwnedWriteHalf, out: &mut Outbox) -> io::Result<()> {
    let mut chunks: VecDeque<Bytes> = out.take();
    while !chunks.is_empty() {
        let mut slices = [IoSlice::new(&[]); 64];
        let mut used = 0;
        for (slot, c) in slices.iter_mut().zip(chunks.iter()) {
            *slot = IoSlice::new(c);
            used += 1;
        }
        let n = wr.write_vectored(&slices[..used]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        outbox::consume(&mut chunks, n);
    }
    Ok(())
}
