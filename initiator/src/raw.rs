//! The low-level connection: one TCP connection that frames PDUs and
//! enforces nothing.
//!
//! [`RawConnection`] is what the conformance suite is built on. It sends any
//! PDU, with any field values, in any order — well-formed frames
//! ([`RawConnection::send`], lengths computed from the segments), frames
//! whose header lies about its lengths ([`RawConnection::send_verbatim`]) or
//! arbitrary bytes ([`RawConnection::send_bytes`]) — and receives whatever
//! the peer sends, reporting a timeout, a closed connection or a stream that
//! cannot be framed as outcomes rather than errors ([`Received`]). Framing
//! follows RFC 7143 §11.2 via [`iesp_proto::framing`]; digests and the
//! receive limit come from the [`FrameConfig`] the caller sets (login
//! switches it to the negotiated digests, §13.1).
//!
//! Every PDU sent and received is also recorded in a small ring ([`Trace`])
//! with its direction and time, so a failing test can print what happened
//! just before.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iesp_proto::bhs::{Bhs, RESERVED_TAG};
use iesp_proto::framing::{self, Frame, FrameConfig, FrameError};
use iesp_proto::pdu::Pdu;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How many PDUs the trace keeps by default.
pub const DEFAULT_TRACE_LEN: usize = 64;

/// Bytes of each data segment kept in the trace.
pub const TRACE_DATA_PREFIX: usize = 32;

/// Initial read buffer size: a few large PDUs.
const READ_BUF: usize = 256 * 1024;

/// How long a TCP connect may take unless told otherwise: a portal that
/// drops SYNs would otherwise hold the caller for the kernel's retries
/// (over two minutes on Linux).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`RawConnection::recv`] found.
#[derive(Debug)]
pub enum Received {
    /// A whole PDU.
    Frame(Frame),
    /// Nothing complete arrived in time. Bytes of a partial PDU stay
    /// buffered for the next call.
    Timeout,
    /// The peer closed the connection (or reset it). Bytes of a partial
    /// PDU, if any, are reported in the trace.
    Closed,
    /// The stream could not be framed. A header digest error or an
    /// oversized segment leaves the bytes in place (the stream cannot be
    /// resynchronised; drop the connection); a data digest error consumed
    /// the PDU, whose header is trustworthy (RFC 7143 §7.8).
    Malformed(FrameError),
}

impl Received {
    /// The frame, if one arrived.
    pub fn frame(self) -> Option<Frame> {
        match self {
            Received::Frame(f) => Some(f),
            _ => None,
        }
    }
}

/// Which way a traced PDU went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// What a trace entry records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A PDU, with the header as it went over the wire.
    Pdu {
        bhs: Bhs,
        ahs_len: usize,
        data_len: usize,
        /// The first [`TRACE_DATA_PREFIX`] bytes of the data segment.
        data_prefix: Bytes,
    },
    /// Raw bytes from [`RawConnection::send_bytes`].
    Bytes { len: usize, prefix: Bytes },
    /// A framing error on receive.
    Malformed(String),
    /// The connection closed (with the number of bytes of an unfinished
    /// PDU, and the error if it was not a clean end of stream).
    Closed {
        partial: usize,
        error: Option<String>,
    },
}

/// One entry of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    pub direction: Direction,
    /// Time since the connection was opened.
    pub at: Duration,
    pub event: TraceEvent,
}

impl fmt::Display for TraceEntry {
    /// `+12.345ms → ScsiCommand ITT=0x1 dsl=512 [0102…]`, one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.direction {
            Direction::Sent => "→",
            Direction::Received => "←",
        };
        write!(f, "+{:>9.3}ms {arrow} ", self.at.as_secs_f64() * 1000.0)?;
        match &self.event {
            TraceEvent::Pdu {
                bhs,
                ahs_len,
                data_len,
                data_prefix,
            } => {
                write!(f, "{:?}", bhs.opcode())?;
                if bhs.itt() != RESERVED_TAG {
                    write!(f, " ITT={:#x}", bhs.itt())?;
                }
                if *ahs_len > 0 {
                    write!(f, " ahs={ahs_len}")?;
                }
                write!(f, " dsl={data_len} {bhs:?}")?;
                if !data_prefix.is_empty() {
                    f.write_str(" data=")?;
                    for b in data_prefix.iter() {
                        write!(f, "{b:02x}")?;
                    }
                    if data_prefix.len() < *data_len {
                        f.write_str("…")?;
                    }
                }
                Ok(())
            }
            TraceEvent::Bytes { len, prefix } => {
                write!(f, "{len} raw bytes ")?;
                for b in prefix.iter() {
                    write!(f, "{b:02x}")?;
                }
                if prefix.len() < *len {
                    f.write_str("…")?;
                }
                Ok(())
            }
            TraceEvent::Malformed(e) => write!(f, "malformed: {e}"),
            TraceEvent::Closed { partial, error } => {
                f.write_str("connection closed")?;
                if *partial > 0 {
                    write!(f, " inside a PDU ({partial} bytes buffered)")?;
                }
                if let Some(e) = error {
                    write!(f, ": {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// A ring of the last N PDUs of a connection.
#[derive(Clone, Debug)]
pub struct Trace {
    start: Instant,
    capacity: usize,
    entries: VecDeque<TraceEntry>,
}

impl Trace {
    /// An empty trace keeping `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> Trace {
        Trace {
            start: Instant::now(),
            capacity,
            entries: VecDeque::with_capacity(capacity.min(1024)),
        }
    }

    /// Records an event now.
    pub fn record(&mut self, direction: Direction, event: TraceEvent) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(TraceEntry {
            direction,
            at: self.start.elapsed(),
            event,
        });
    }

    /// Records a PDU.
    pub fn record_pdu(&mut self, direction: Direction, bhs: &Bhs, ahs_len: usize, data: &Bytes) {
        if self.capacity == 0 {
            return;
        }
        let event = TraceEvent::Pdu {
            bhs: *bhs,
            ahs_len,
            data_len: data.len(),
            data_prefix: data.slice(..data.len().min(TRACE_DATA_PREFIX)),
        };
        self.record(direction, event);
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &TraceEntry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Changes how many entries are kept, dropping the oldest if needed.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        while self.entries.len() > capacity {
            self.entries.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

impl fmt::Display for Trace {
    /// One line per entry, oldest first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

/// One iSCSI connection that sends and receives anything.
pub struct RawConnection {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    cfg: FrameConfig,
    trace: Trace,
    local: SocketAddr,
    peer: SocketAddr,
}

impl fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConnection")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl RawConnection {
    /// Connects with TCP_NODELAY on (small PDUs must not wait for Nagle)
    /// and the default [`FrameConfig`] (no digests, any segment size),
    /// within [`DEFAULT_CONNECT_TIMEOUT`].
    pub async fn connect(addr: SocketAddr) -> io::Result<RawConnection> {
        RawConnection::connect_timeout(addr, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// [`RawConnection::connect`] within `timeout`: a connect that does not
    /// complete in time fails with [`io::ErrorKind::TimedOut`].
    pub async fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<RawConnection> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TCP connect to {addr} timed out after {timeout:?}"),
                ));
            }
        };
        RawConnection::from_stream(stream)
    }

    /// Wraps an established stream.
    pub fn from_stream(stream: TcpStream) -> io::Result<RawConnection> {
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let peer = stream.peer_addr()?;
        Ok(RawConnection {
            stream,
            rbuf: BytesMut::with_capacity(READ_BUF),
            wbuf: BytesMut::with_capacity(64 * 1024),
            cfg: FrameConfig::default(),
            trace: Trace::new(DEFAULT_TRACE_LEN),
            local,
            peer,
        })
    }

    /// Digests and receive limit from now on (both directions).
    pub fn set_frame_config(&mut self, cfg: FrameConfig) {
        self.cfg = cfg;
    }

    pub fn frame_config(&self) -> FrameConfig {
        self.cfg
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The last PDUs sent and received.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    pub fn trace_mut(&mut self) -> &mut Trace {
        &mut self.trace
    }

    /// Sends one frame; TotalAHSLength and DataSegmentLength are set from
    /// the segments, padding and digests added per the frame config.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.send_batch(std::slice::from_ref(frame)).await
    }

    /// Sends several frames in one write (one TCP segment when they fit).
    pub async fn send_batch(&mut self, frames: &[Frame]) -> io::Result<()> {
        self.wbuf.clear();
        for frame in frames {
            framing::encode(&self.cfg, frame, &mut self.wbuf);
            let mut bhs = frame.bhs;
            bhs.set_total_ahs_words(frame.ahs.len().div_ceil(4).min(255) as u8);
            bhs.set_data_segment_len(frame.data.len() as u32);
            self.trace
                .record_pdu(Direction::Sent, &bhs, frame.ahs.len(), &frame.data);
        }
        self.flush().await
    }

    /// Sends a frame exactly as its header describes it: lengths are not
    /// corrected, so the header may lie about the segments that follow.
    pub async fn send_verbatim(&mut self, frame: &Frame) -> io::Result<()> {
        self.wbuf.clear();
        framing::encode_verbatim(&self.cfg, frame, &mut self.wbuf);
        self.trace
            .record_pdu(Direction::Sent, &frame.bhs, frame.ahs.len(), &frame.data);
        self.flush().await
    }

    /// Sends arbitrary bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.trace.record(
            Direction::Sent,
            TraceEvent::Bytes {
                len: bytes.len(),
                prefix: Bytes::copy_from_slice(&bytes[..bytes.len().min(TRACE_DATA_PREFIX)]),
            },
        );
        self.stream.write_all(bytes).await
    }

    /// Sends a typed PDU with a data segment.
    pub async fn send_pdu(&mut self, pdu: &Pdu, data: Bytes) -> io::Result<()> {
        self.send(&Frame::with_data(pdu, data)).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        let r = self.stream.write_all(&self.wbuf).await;
        self.wbuf.clear();
        r
    }

    /// Waits up to `timeout` for the next PDU.
    pub async fn recv(&mut self, timeout: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match framing::decode(&self.cfg, &mut self.rbuf) {
                Ok(Some(frame)) => {
                    self.trace.record_pdu(
                        Direction::Received,
                        &frame.bhs,
                        frame.ahs.len(),
                        &frame.data,
                    );
                    return Received::Frame(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    self.trace
                        .record(Direction::Received, TraceEvent::Malformed(e.to_string()));
                    return Received::Malformed(e);
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(READ_BUF);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf));
            let error = match read.await {
                Err(_) => return Received::Timeout,
                Ok(Ok(0)) => None,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => Some(e.to_string()),
            };
            self.trace.record(
                Direction::Received,
                TraceEvent::Closed {
                    partial: self.rbuf.len(),
                    error,
                },
            );
            return Received::Closed;
        }
    }

    /// Waits up to `timeout` for a PDU, skipping NOP-Ins that only ask
    /// for a ping answer (TTT ≠ 0xffffffff, ITT = 0xffffffff): a helper
    /// for scripted exchanges that do not want to handle target pings. The
    /// pings are not answered.
    pub async fn recv_skipping_pings(&mut self, timeout: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Received::Frame(f)
                    if f.bhs.opcode() == iesp_proto::bhs::Opcode::NOP_IN
                        && f.bhs.itt() == RESERVED_TAG =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.rbuf.len()
    }

    /// Closes our sending side (TCP FIN); the peer may still send.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// Drops the connection with a TCP RST instead of a FIN.
    pub fn reset(self) -> io::Result<()> {
        self.stream.set_zero_linger()?;
        drop(self.stream);
        Ok(())
    }

    /// The parts, for a driver that takes over the connection (see
    /// [`crate::session`]): the stream, bytes already read but not framed,
    /// the frame config and the trace.
    pub fn into_parts(self) -> (TcpStream, BytesMut, FrameConfig, Trace) {
        (self.stream, self.rbuf, self.cfg, self.trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iesp_proto::bhs::{Lun, Opcode};
    use iesp_proto::pdu::NopOut;
    use tokio::net::TcpListener;

    fn nop(itt: u32) -> Pdu {
        Pdu::NopOut(NopOut {
            immediate: true,
            lun: Lun(0),
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: 1,
            exp_stat_sn: 1,
        })
    }

    async fn pair() -> (RawConnection, RawConnection) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(RawConnection::connect(addr), l.accept());
        (
            a.unwrap(),
            RawConnection::from_stream(b.unwrap().0).unwrap(),
        )
    }

    #[tokio::test]
    async fn frames_cross_with_digests_and_are_traced() {
        let (mut a, mut b) = pair().await;
        let cfg = FrameConfig {
            header_digest: true,
            data_digest: true,
            ..FrameConfig::default()
        };
        a.set_frame_config(cfg);
        b.set_frame_config(cfg);
        a.send_batch(&[
            Frame::with_data(&nop(1), Bytes::from_static(b"ping")),
            Frame::new(&nop(2)),
        ])
        .await
        .unwrap();
        let f1 = b.recv(Duration::from_secs(5)).await.frame().unwrap();
        let f2 = b.recv(Duration::from_secs(5)).await.frame().unwrap();
        assert_eq!((f1.bhs.itt(), &f1.data[..]), (1, &b"ping"[..]));
        assert_eq!(f1.bhs.data_segment_len(), 4);
        assert_eq!(f2.bhs.itt(), 2);
        assert!(matches!(
            b.recv(Duration::from_millis(20)).await,
            Received::Timeout
        ));
        let sent: Vec<String> = a.trace().entries().map(|e| e.to_string()).collect();
        assert_eq!(sent.len(), 2);
        assert!(sent[0].contains("→ NopOut ITT=0x1 dsl=4"), "{}", sent[0]);
        assert!(sent[0].contains("data=70696e67"), "{}", sent[0]);
        assert_eq!(b.trace().len(), 2);
        assert!(b.trace().to_string().contains("← NopOut ITT=0x2 dsl=0"));
    }

    #[tokio::test]
    async fn lying_lengths_and_raw_bytes_reach_the_peer_as_sent() {
        let (mut a, mut b) = pair().await;
        // The header claims 8 data bytes; only 4 follow.
        let mut f = Frame::with_data(&nop(3), Bytes::from_static(b"abcd"));
        f.bhs.set_data_segment_len(8);
        a.send_verbatim(&f).await.unwrap();
        assert!(matches!(
            b.recv(Duration::from_millis(50)).await,
            Received::Timeout
        ));
        assert_eq!(b.buffered(), 48 + 4);
        a.send_bytes(b"efgh").await.unwrap();
        let got = b.recv(Duration::from_secs(5)).await.frame().unwrap();
        assert_eq!(&got.data[..], b"abcdefgh");
        assert!(a.trace().to_string().contains("4 raw bytes 65666768"));
    }

    #[tokio::test]
    async fn digest_errors_and_close_are_outcomes() {
        let (mut a, mut b) = pair().await;
        b.set_frame_config(FrameConfig {
            header_digest: true,
            ..FrameConfig::default()
        });
        // Sent without a digest: the receiver reads garbage where the digest goes.
        a.send_pdu(&nop(4), Bytes::from_static(b"12345678"))
            .await
            .unwrap();
        a.send_bytes(&[0; 4]).await.unwrap();
        assert!(matches!(
            b.recv(Duration::from_secs(5)).await,
            Received::Malformed(FrameError::HeaderDigest { .. })
        ));
        b.set_frame_config(FrameConfig::default());
        assert!(b.recv(Duration::from_secs(5)).await.frame().is_some());
        a.send_bytes(&[0u8; 10]).await.unwrap();
        a.shutdown().await.unwrap();
        assert!(matches!(
            b.recv(Duration::from_secs(5)).await,
            Received::Closed
        ));
        assert!(
            b.trace()
                .to_string()
                .contains("closed inside a PDU (14 bytes buffered)")
        );
    }

    #[tokio::test]
    async fn reset_is_seen_as_closed() {
        let (a, mut b) = pair().await;
        a.reset().unwrap();
        assert!(matches!(
            b.recv(Duration::from_secs(5)).await,
            Received::Closed
        ));
    }

    #[test]
    fn trace_ring_keeps_the_last_entries() {
        let mut t = Trace::new(3);
        for i in 0..5u32 {
            let bhs = nop(i).encode();
            t.record_pdu(Direction::Sent, &bhs, 0, &Bytes::new());
        }
        let itts: Vec<u32> = t
            .entries()
            .map(|e| match &e.event {
                TraceEvent::Pdu { bhs, .. } => bhs.itt(),
                _ => u32::MAX,
            })
            .collect();
        assert_eq!(itts, vec![2, 3, 4]);
        t.set_capacity(1);
        assert_eq!(t.len(), 1);
        assert_eq!(Opcode::NOP_OUT, nop(0).opcode());
    }
}
