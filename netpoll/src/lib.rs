//! Busy-poll before sleeping, for both ends of an iSCSI connection: the
//! target's `--poll-us` and the initiator's `LoginOptions::poll_us`
//! (`iesp-test bench --poll-us`).
//!
//! Why a crate of its own: the wire layer (`iesp-proto`) is sans-IO and must
//! stay free of sockets, and the target and the initiator depend on no
//! common I/O crate; this one piece of socket code is the same on both
//! sides, so it lives here once instead of as two copies.
//!
//! At queue depth 1 the next PDU arrives a few microseconds after the last
//! one left, and a task that sleeps in the runtime for it pays the machine's
//! wake-up latency (often tens of µs on a virtual machine) on every command.
//!
//! [`BusyPoll::read_buf`] first spins for up to the budget trying a
//! non-blocking `read` on the socket (yielding to the runtime's other
//! tasks between tries), and only then waits in the runtime as usual.
//! The spin reads through a duplicate of the socket's descriptor,
//! because tokio's own `try_read` answers from readiness it caches between
//! reactor turns and would never see data arrive while we spin. The
//! duplicate shares the open file description (already non-blocking), so
//! both see one byte stream; the reactor's edge-triggered readiness stays
//! correct, since a `read` that finds nothing clears it.
//!
//! The cost: while it spins, the reading task's worker thread is busy,
//! whether data comes or not. An idle connection burns up to the budget
//! after each batch it reads, then sleeps; a connection at queue depth 1
//! keeps about one core busy.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// The largest budget, in microseconds (`--poll-us` accepts 0 to this): beyond a
/// millisecond spinning costs far more than any wake-up it could save.
pub const MAX_POLL_US: u32 = 1000;

/// What one spin can read at once; more waits for the next read.
const SPIN_CHUNK: usize = 64 * 1024;

/// The busy-poll state of one connection's reader (see the crate docs).
pub struct BusyPoll {
    /// A duplicate of the connection's descriptor; `None`: polling is off.
    sock: Option<std::net::TcpStream>,
    budget: Duration,
    /// Where a spin reads to (initialised once, reused).
    scratch: Vec<u8>,
}

impl BusyPoll {
    /// Polling off.
    pub fn off() -> BusyPoll {
        BusyPoll {
            sock: None,
            budget: Duration::ZERO,
            scratch: Vec::new(),
        }
    }

    /// Spins up to `poll_us` microseconds (at most [`MAX_POLL_US`]) before
    /// each sleep on `stream`;
    /// 0 is [`BusyPoll::off`]. If the descriptor cannot be duplicated
    /// (out of descriptors) the connection runs without polling.
    pub fn new(stream: &TcpStream, poll_us: u32) -> BusyPoll {
        if poll_us == 0 {
            return BusyPoll::off();
        }
        let sock = std::os::fd::AsFd::as_fd(stream)
            .try_clone_to_owned()
            .map(std::net::TcpStream::from);
        match sock {
            Ok(sock) => BusyPoll {
                sock: Some(sock),
                budget: Duration::from_micros(u64::from(poll_us.min(MAX_POLL_US))),
                scratch: vec![0; SPIN_CHUNK],
            },
            Err(e) => {
                tracing::warn!("busy-poll off for this connection: {e}");
                BusyPoll::off()
            }
        }
    }

    /// Reads into `rbuf` as `read_buf` does: bytes read, 0 at end of
    /// stream. Spins first (crate docs), then waits in the runtime.
    ///
    /// Between two tries the spin yields to the runtime, so the tasks this
    /// one just woke (the command's submitter, other connections on the
    /// same worker) run instead of waiting out the budget behind it.
    pub async fn read_buf(
        &mut self,
        rd: &mut OwnedReadHalf,
        rbuf: &mut BytesMut,
    ) -> io::Result<usize> {
        if self.sock.is_some() {
            let start = Instant::now();
            loop {
                if let Some(n) = self.try_read(rbuf)? {
                    return Ok(n);
                }
                if start.elapsed() >= self.budget {
                    break;
                }
                // The peer may be waiting for this very core (a shared
                // machine): give it up for a moment, then let this
                // worker's other tasks run.
                std::thread::yield_now();
                tokio::task::yield_now().await;
            }
        }
        rd.read_buf(rbuf).await
    }

    /// One non-blocking read: `Some(n)` when it returned (n = 0 at end of
    /// stream), `None` when nothing was there.
    fn try_read(&mut self, rbuf: &mut BytesMut) -> io::Result<Option<usize>> {
        let Some(sock) = self.sock.as_mut() else {
            return Ok(None);
        };
        loop {
            match sock.read(&mut self.scratch) {
                Ok(n) => {
                    rbuf.extend_from_slice(&self.scratch[..n]);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    #[tokio::test]
    async fn spinning_reads_the_same_stream_as_the_runtime() {
        let (mut tx, rx) = pair().await;
        let mut poll = BusyPoll::new(&rx, 200);
        let (mut rd, _wr) = rx.into_split();
        let mut rbuf = BytesMut::new();
        // Nothing sent: nothing to read without waiting.
        assert_eq!(poll.try_read(&mut rbuf).expect("try"), None);
        tx.write_all(b"first").await.expect("write");
        let mut got = 0;
        while got < 5 {
            got += poll.read_buf(&mut rd, &mut rbuf).await.expect("read");
        }
        tx.write_all(b" second").await.expect("write");
        while rbuf.len() < 12 {
            poll.read_buf(&mut rd, &mut rbuf).await.expect("read");
        }
        assert_eq!(&rbuf[..], b"first second");
        drop(tx);
        let mut off = BusyPoll::off();
        assert_eq!(off.read_buf(&mut rd, &mut rbuf).await.expect("eof"), 0);
        assert_eq!(poll.read_buf(&mut rd, &mut rbuf).await.expect("eof"), 0);
    }
}
