//! An NBD export as a logical unit: iesp-target as an iSCSI-to-NBD proxy
//! (the NBD protocol: <https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>).
//!
//! ## Handshake
//!
//! Fixed newstyle only: the server's `NBDMAGIC`/`IHAVEOPT` greeting with
//! `NBD_FLAG_FIXED_NEWSTYLE`, then `NBD_OPT_GO` for the export name asking
//! for `NBD_INFO_BLOCK_SIZE`; a server that answers `NBD_REP_ERR_UNSUP` is
//! asked again with the older `NBD_OPT_EXPORT_NAME`. Structured replies are
//! not requested, so every reply is a simple reply.
//!
//! ## Transmission: one connection, pipelined
//!
//! The backend trait is synchronous and is called from the runtime threads
//! that execute SCSI commands, several at once. Each call takes a fresh
//! handle, registers a one-shot slot for the reply, writes its request
//! under a mutex that only serialises the bytes of requests (not their
//! round trips), and blocks on its slot. One reader thread owns the
//! receiving half of the socket: it reads each reply header, the payload of
//! a READ (whose length it knows from the slot), and hands the result to the
//! waiting caller. So requests from different sessions are in flight on the
//! one connection at the same time and the server may answer them in any
//! order; a caller blocks for one round trip, never for another caller's.
//! Requests larger than the server's maximum payload (`NBD_INFO_BLOCK_SIZE`,
//! 32 MiB when not given) are split.
//!
//! What this buys: the transport runs one command at a time per
//! connection, so one iSCSI session waits one NBD round trip per command;
//! sessions (and multipath connections) proceed in parallel on the one NBD
//! connection, up to the runtime's worker threads. TCP_NODELAY is set, and
//! a request and its data of up to 64 KiB leave in one write.
//!
//! ## Mapping to the backend contract
//!
//! - flush: `NBD_CMD_FLUSH` when the export has `NBD_FLAG_SEND_FLUSH`, which
//!   also makes the write cache visible (WCE=1); otherwise writes are taken
//!   to be durable on reply.
//! - discard: with `NBD_FLAG_SEND_WRITE_ZEROES`, a write-zeroes request
//!   without `NBD_CMD_FLAG_NO_HOLE` — the server may punch a hole, and reads
//!   return zeroes afterwards (LBPRZ=1). With only `NBD_FLAG_SEND_TRIM`,
//!   `NBD_CMD_TRIM`, after which the protocol leaves the contents undefined
//!   (LBPRZ=0). With neither the logical unit is fully provisioned.
//! - write zeroes without deallocating: `NBD_CMD_WRITE_ZEROES` with
//!   `NBD_CMD_FLAG_NO_HOLE`, or written zero buffers.
//! - GET LBA STATUS would need `NBD_CMD_BLOCK_STATUS`, which needs
//!   structured replies: extents are reported "mapped or unknown".
//! - A read-only export (`NBD_FLAG_READ_ONLY`) can only back a read-only
//!   LUN; [`NbdBackend::read_only`] lets the caller check.
//!
//! Errors the server reports map to the errno of the same value (the
//! protocol's `NBD_EIO`, `NBD_ENOSPC`… are Linux's). A lost connection
//! fails every outstanding and later request with an I/O error (MEDIUM
//! ERROR to the initiator); there is no reconnection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Backend, Provisioning};

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const FLAG_NO_ZEROES: u16 = 1 << 1;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_FLAG_ERROR: u32 = 1 << 31;
const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags (per export).
const TFLAG_READ_ONLY: u16 = 1 << 1;
const TFLAG_SEND_FLUSH: u16 = 1 << 2;
const TFLAG_SEND_TRIM: u16 = 1 << 5;
const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_WRITE_ZEROES: u16 = 6;
const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Payload limit when the server does not give one (the protocol's
/// recommendation).
const DEFAULT_MAX_PAYLOAD: u64 = 32 << 20;
/// The largest TRIM / WRITE_ZEROES we send in one request (the length field
/// is 32 bits; stay well below and block aligned).
const MAX_EFFECT_LENGTH: u64 = 1 << 30;
/// Bound on option reply data during the handshake.
const MAX_OPTION_REPLY: u32 = 64 << 10;
/// Bound on connecting and on the whole handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an NBD export could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("NBD handshake with {addr}: {reason}")]
    Handshake { addr: String, reason: String },
}

impl From<NbdError> for io::Error {
    fn from(e: NbdError) -> io::Error {
        let kind = match &e {
            NbdError::Connect { source, .. } => source.kind(),
            NbdError::Handshake { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// A reply handed from the reader thread to a waiting caller.
type Reply = io::Result<Vec<u8>>;

/// A caller waiting for its reply.
struct Waiter {
    /// Payload bytes that follow a successful reply (READ).
    read_len: usize,
    slot: SyncSender<Reply>,
}

/// Requests in flight, or why no more can be sent.
#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Waiter>,
    broken: Option<String>,
}

/// What the caller threads and the reader thread share.
struct Shared {
    /// The sending half; held only while one request's bytes are written.
    writer: Mutex<TcpStream>,
    pending: Mutex<Pending>,
    next_handle: AtomicU64,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Updates are single inserts/removals; a poisoned map is still
        // consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection dead and fails everything waiting.
    fn fail_all(&self, why: &str) {
        let mut p = self.pending();
        if p.broken.is_none() {
            p.broken = Some(why.to_owned());
        }
        for (_, w) in p.waiters.drain() {
            let _ = w.slot.try_send(Err(connection_lost(why)));
        }
    }
}

fn connection_lost(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        format!("NBD connection lost: {why}"),
    )
}

/// An open NBD export.
pub struct NbdBackend {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    addr: String,
    export: String,
    size: u64,
    transmission_flags: u16,
    max_payload: u64,
    /// Preferred block size, the unmap granularity.
    preferred_block: u64,
}

/// What the handshake learned.
struct Negotiated {
    size: u64,
    flags: u16,
    max_payload: u64,
    preferred_block: u64,
}

impl NbdBackend {
    /// Connects to `addr` (`host:port`) and opens `export` (`""` is the
    /// server's default export).
    pub fn connect(addr: &str, export: &str) -> Result<NbdBackend, NbdError> {
        let connect_err = |source| NbdError::Connect {
            addr: addr.to_owned(),
            source,
        };
        let target = addr
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(io::Error::other("no address")))?;
        let mut stream =
            TcpStream::connect_timeout(&target, HANDSHAKE_TIMEOUT).map_err(connect_err)?;
        let handshake_err = |reason: String| NbdError::Handshake {
            addr: addr.to_owned(),
            reason,
        };
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| handshake_err(e.to_string()))?;
        let n = handshake(&mut stream, export).map_err(handshake_err)?;
        stream
            .set_read_timeout(None)
            .and_then(|()| stream.set_write_timeout(None))
            .map_err(|e| handshake_err(e.to_string()))?;
        let receiver = stream
            .try_clone()
            .map_err(|e| handshake_err(e.to_string()))?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(stream),
            pending: Mutex::new(Pending::default()),
            next_handle: AtomicU64::new(1),
        });
        let for_reader = shared.clone();
        let reader = std::thread::Builder::new()
            .name(format!("nbd-reader {addr}"))
            .spawn(move || read_replies(receiver, &for_reader))
            .map_err(|e| handshake_err(format!("cannot start the reader thread: {e}")))?;
        Ok(NbdBackend {
            shared,
            reader: Some(reader),
            addr: addr.to_owned(),
            export: export.to_owned(),
            size: n.size,
            transmission_flags: n.flags,
            max_payload: n.max_payload,
            preferred_block: n.preferred_block,
        })
    }

    /// The export refuses writes (`NBD_FLAG_READ_ONLY`).
    pub fn read_only(&self) -> bool {
        self.transmission_flags & TFLAG_READ_ONLY != 0
    }

    fn has(&self, flag: u16) -> bool {
        self.transmission_flags & flag != 0
    }

    /// Sends one request and waits for its reply; returns the READ payload.
    fn request(
        &self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
        data: &[u8],
    ) -> io::Result<Vec<u8>> {
        let handle = self.shared.next_handle.fetch_add(1, Ordering::Relaxed);
        let (slot, reply) = sync_channel(1);
        {
            let mut p = self.shared.pending();
            if let Some(why) = &p.broken {
                return Err(connection_lost(why));
            }
            let read_len = if command == CMD_READ {
                length as usize
            } else {
                0
            };
            p.waiters.insert(handle, Waiter { read_len, slot });
        }
        let mut header = Vec::with_capacity(28 + data.len().min(64 << 10));
        header.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        header.extend_from_slice(&flags.to_be_bytes());
        header.extend_from_slice(&command.to_be_bytes());
        header.extend_from_slice(&handle.to_be_bytes());
        header.extend_from_slice(&offset.to_be_bytes());
        header.extend_from_slice(&length.to_be_bytes());
        let sent = {
            let mut w = self.shared.writer.lock().unwrap_or_else(|e| e.into_inner());
            if data.len() <= 64 << 10 {
                // Small requests go out as one segment.
                header.extend_from_slice(data);
                w.write_all(&header)
            } else {
                w.write_all(&header).and_then(|()| w.write_all(data))
            }
        };
        if let Err(e) = sent {
            // A partial request desynchronises the stream: nothing after it
            // can be trusted. Shutting down ends the reader, which fails
            // every waiter, this one included.
            self.shared.pending().waiters.remove(&handle);
            self.shared.fail_all(&format!("sending a request: {e}"));
            if let Ok(w) = self.shared.writer.lock() {
                let _ = w.shutdown(Shutdown::Both);
            }
            return Err(e);
        }
        reply
            .recv()
            .unwrap_or_else(|_| Err(connection_lost("reader stopped")))
    }

    /// Runs `command` over `[offset, offset+len)` in pieces of at most
    /// `piece` bytes.
    fn in_pieces(
        &self,
        command: u16,
        flags: u16,
        offset: u64,
        len: u64,
        piece: u64,
    ) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(piece);
            let n32 = u32::try_from(n).map_err(|_| io::Error::other("request too large"))?;
            self.request(command, flags, offset + done, n32, &[])?;
            done += n;
        }
        Ok(())
    }
}

/// The fixed-newstyle handshake up to transmission (module docs).
fn handshake(s: &mut TcpStream, export: &str) -> Result<Negotiated, String> {
    let magic = read_u64(s)?;
    if magic != NBDMAGIC {
        return Err(format!("not an NBD server (greeting {magic:#018x})"));
    }
    let style = read_u64(s)?;
    if style != IHAVEOPT {
        return Err("the server speaks oldstyle NBD; only fixed newstyle is supported".into());
    }
    let hflags = read_u16(s)?;
    if hflags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err("the server does not offer fixed newstyle negotiation".into());
    }
    let no_zeroes = hflags & FLAG_NO_ZEROES != 0;
    let client_flags = u32::from(FLAG_FIXED_NEWSTYLE) | if no_zeroes { 2 } else { 0 };
    write(s, &client_flags.to_be_bytes())?;

    // NBD_OPT_GO: name, then one information request (block sizes).
    let name = export.as_bytes();
    let name_len = u32::try_from(name.len()).map_err(|_| "export name too long".to_string())?;
    let mut data = Vec::with_capacity(8 + name.len());
    data.extend_from_slice(&name_len.to_be_bytes());
    data.extend_from_slice(name);
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, OPT_GO, &data)?;

    let mut size_flags = None;
    let mut max_payload = DEFAULT_MAX_PAYLOAD;
    let mut preferred_block = 4096;
    loop {
        let magic = read_u64(s)?;
        if magic != OPT_REPLY_MAGIC {
            return Err(format!("bad option reply magic {magic:#x}"));
        }
        let _option = read_u32(s)?;
        let kind = read_u32(s)?;
        let len = read_u32(s)?;
        if len > MAX_OPTION_REPLY {
            return Err(format!("option reply of {len} bytes"));
        }
        let mut body = vec![0u8; len as usize];
        read_exact(s, &mut body)?;
        match kind {
            REP_ACK => break,
            REP_INFO => {
                let info = be16(&body, 0);
                if info == INFO_EXPORT && body.len() >= 12 {
                    size_flags = Some((be64(&body, 2), be16(&body, 10)));
                } else if info == INFO_BLOCK_SIZE && body.len() >= 14 {
                    let preferred = u64::from(be32(&body, 6));
                    let max = u64::from(be32(&body, 10));
                    if preferred > 0 {
                        preferred_block = preferred;
                    }
                    if max > 0 {
                        max_payload = max.min(DEFAULT_MAX_PAYLOAD);
                    }
                }
            }
            REP_ERR_UNSUP => {
                // A server without NBD_OPT_GO: the older option answers
                // with the export data directly.
                send_option(s, OPT_EXPORT_NAME, name)?;
                let size = read_u64(s)?;
                let flags = read_u16(s)?;
                if !no_zeroes {
                    let mut zeroes = [0u8; 124];
                    read_exact(s, &mut zeroes)?;
                }
                return Ok(Negotiated {
                    size,
                    flags,
                    max_payload,
                    preferred_block,
                });
            }
            k if k & REP_FLAG_ERROR != 0 => {
                let text = String::from_utf8_lossy(&body);
                return Err(format!(
                    "export `{export}` refused (error {:#x}){}{text}",
                    k & !REP_FLAG_ERROR,
                    if text.is_empty() { "" } else { ": " }
                ));
            }
            // Other replies (unrequested information) are ignored.
            _ => {}
        }
    }
    let (size, flags) = size_flags.ok_or("the server sent no export information")?;
    Ok(Negotiated {
        size,
        flags,
        max_payload,
        preferred_block,
    })
}

fn send_option(s: &mut TcpStream, option: u32, data: &[u8]) -> Result<(), String> {
    let len = u32::try_from(data.len()).map_err(|_| "option too long".to_string())?;
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(data);
    write(s, &b)
}

fn write(s: &mut TcpStream, b: &[u8]) -> Result<(), String> {
    s.write_all(b).map_err(|e| e.to_string())
}

fn read_exact(s: &mut TcpStream, b: &mut [u8]) -> Result<(), String> {
    s.read_exact(b).map_err(|e| e.to_string())
}

fn read_u16(s: &mut TcpStream) -> Result<u16, String> {
    let mut b = [0u8; 2];
    read_exact(s, &mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(s: &mut TcpStream) -> Result<u32, String> {
    let mut b = [0u8; 4];
    read_exact(s, &mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(s: &mut TcpStream) -> Result<u64, String> {
    let mut b = [0u8; 8];
    read_exact(s, &mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn be16(b: &[u8], at: usize) -> u16 {
    let mut x = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        x.copy_from_slice(s);
    }
    u16::from_be_bytes(x)
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        x.copy_from_slice(s);
    }
    u32::from_be_bytes(x)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        x.copy_from_slice(s);
    }
    u64::from_be_bytes(x)
}

/// The reader thread: demultiplexes replies to waiting callers until the
/// connection ends.
fn read_replies(mut s: TcpStream, shared: &Shared) {
    let why = loop {
        let mut h = [0u8; 16];
        if let Err(e) = s.read_exact(&mut h) {
            break format!("reading a reply: {e}");
        }
        let magic = be32(&h, 0);
        if magic != SIMPLE_REPLY_MAGIC {
            break format!("bad reply magic {magic:#x}");
        }
        let error = be32(&h, 4);
        let handle = be64(&h, 8);
        let Some(waiter) = shared.pending().waiters.remove(&handle) else {
            break format!("reply for unknown handle {handle}");
        };
        let reply = if error != 0 {
            Err(io::Error::from_raw_os_error(
                i32::try_from(error).unwrap_or(nix::libc::EIO),
            ))
        } else {
            let mut data = vec![0u8; waiter.read_len];
            if let Err(e) = s.read_exact(&mut data) {
                let _ = waiter.slot.try_send(Err(connection_lost(&e.to_string())));
                break format!("reading data: {e}");
            }
            Ok(data)
        };
        let _ = waiter.slot.try_send(reply);
    };
    tracing::debug!("NBD reader stopped: {why}");
    shared.fail_all(&why);
}

impl Backend for NbdBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let piece = usize::try_from(self.max_payload).unwrap_or(usize::MAX);
        let mut at = offset;
        for chunk in buf.chunks_mut(piece.max(1)) {
            let len = u32::try_from(chunk.len()).map_err(|_| io::Error::other("read too large"))?;
            let data = self.request(CMD_READ, 0, at, len, &[])?;
            if data.len() != chunk.len() {
                return Err(io::Error::other("short NBD read"));
            }
            chunk.copy_from_slice(&data);
            at += chunk.len() as u64;
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let piece = usize::try_from(self.max_payload).unwrap_or(usize::MAX);
        let mut at = offset;
        for chunk in data.chunks(piece.max(1)) {
            let len =
                u32::try_from(chunk.len()).map_err(|_| io::Error::other("write too large"))?;
            self.request(CMD_WRITE, 0, at, len, chunk)?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        if self.has(TFLAG_SEND_FLUSH) {
            self.request(CMD_FLUSH, 0, 0, 0, &[])?;
        }
        Ok(())
    }

    fn provisioning(&self) -> Option<Provisioning> {
        let zeroes = if self.has(TFLAG_SEND_WRITE_ZEROES) {
            true
        } else if self.has(TFLAG_SEND_TRIM) {
            false
        } else {
            return None;
        };
        Some(Provisioning {
            zeroes,
            granularity: self.preferred_block.max(512),
        })
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.has(TFLAG_SEND_WRITE_ZEROES) {
            // No NO_HOLE flag: the server may deallocate.
            self.in_pieces(CMD_WRITE_ZEROES, 0, offset, len, MAX_EFFECT_LENGTH)
        } else if self.has(TFLAG_SEND_TRIM) {
            self.in_pieces(CMD_TRIM, 0, offset, len, MAX_EFFECT_LENGTH)
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the export cannot trim",
            ))
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.has(TFLAG_SEND_WRITE_ZEROES) {
            self.in_pieces(
                CMD_WRITE_ZEROES,
                CMD_FLAG_NO_HOLE,
                offset,
                len,
                MAX_EFFECT_LENGTH,
            )
        } else {
            super::write_repeated(self, &[0u8; 4096], offset, len)
        }
    }

    fn write_cache(&self) -> bool {
        self.has(TFLAG_SEND_FLUSH)
    }

    fn may_block(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("nbd:{}/{}", self.addr, self.export)
    }
}

impl Drop for NbdBackend {
    fn drop(&mut self) {
        // NBD_CMD_DISC has no reply; then the reader sees end of file.
        let mut disc = Vec::with_capacity(28);
        disc.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        disc.extend_from_slice(&0u16.to_be_bytes());
        disc.extend_from_slice(&CMD_DISC.to_be_bytes());
        disc.extend_from_slice(&[0u8; 20]);
        if let Ok(mut w) = self.shared.writer.lock() {
            let _ = w.write_all(&disc);
            let _ = w.shutdown(Shutdown::Both);
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against an in-process fake server that speaks just enough NBD, so
    //! the client's framing, pipelining and error paths are tested without
    //! qemu-nbd (the interop test in the testsuite uses the real one).
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Options of the fake server.
    #[derive(Clone, Copy)]
    struct Fake {
        size: u64,
        flags: u16,
        /// Answer NBD_OPT_GO with NBD_REP_ERR_UNSUP.
        no_go: bool,
        /// Reply to requests in reverse order, two at a time.
        reorder: bool,
    }

    /// Serves one client on a loopback port; the disk is in memory.
    fn serve(fake: Fake) -> (String, Arc<Mutex<Vec<u8>>>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let disk = Arc::new(Mutex::new(vec![0u8; fake.size as usize]));
        let trims = Arc::new(AtomicUsize::new(0));
        let (disk2, trims2) = (disk.clone(), trims.clone());
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = fake_session(&mut s, fake, &disk2, &trims2);
        });
        (addr, disk, trims)
    }

    fn fake_session(
        s: &mut TcpStream,
        fake: Fake,
        disk: &Mutex<Vec<u8>>,
        trims: &AtomicUsize,
    ) -> Result<(), String> {
        write(s, &NBDMAGIC.to_be_bytes())?;
        write(s, &IHAVEOPT.to_be_bytes())?;
        write(s, &(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
        let client = read_u32(s)?;
        assert_eq!(client & 1, 1, "client must use fixed newstyle");
        loop {
            assert_eq!(read_u64(s)?, IHAVEOPT);
            let opt = read_u32(s)?;
            let len = read_u32(s)?;
            let mut data = vec![0u8; len as usize];
            read_exact(s, &mut data)?;
            let reply = |s: &mut TcpStream, kind: u32, body: &[u8]| {
                let mut b = OPT_REPLY_MAGIC.to_be_bytes().to_vec();
                b.extend_from_slice(&opt.to_be_bytes());
                b.extend_from_slice(&kind.to_be_bytes());
                b.extend_from_slice(&(body.len() as u32).to_be_bytes());
                b.extend_from_slice(body);
                write(s, &b)
            };
            match opt {
                OPT_GO if fake.no_go => reply(s, REP_ERR_UNSUP, &[])?,
                OPT_GO => {
                    let name_len = be32(&data, 0) as usize;
                    if &data[4..4 + name_len] != b"disk" {
                        reply(s, REP_FLAG_ERROR | 6, b"no such export")?;
                        continue;
                    }
                    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                    info.extend_from_slice(&fake.size.to_be_bytes());
                    info.extend_from_slice(&fake.flags.to_be_bytes());
                    reply(s, REP_INFO, &info)?;
                    let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                    // A small maximum payload forces splitting.
                    for v in [1u32, 4096, 8192] {
                        bs.extend_from_slice(&v.to_be_bytes());
                    }
                    reply(s, REP_INFO, &bs)?;
                    reply(s, REP_ACK, &[])?;
                    break;
                }
                OPT_EXPORT_NAME => {
                    write(s, &fake.size.to_be_bytes())?;
                    write(s, &fake.flags.to_be_bytes())?;
                    break;
                }
                _ => reply(s, REP_ERR_UNSUP, &[])?,
            }
        }
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            // A held reply waits for the next request only briefly: the
            // client may have nothing else to send until it is answered.
            if !held.is_empty() {
                s.set_read_timeout(Some(std::time::Duration::from_millis(20)))
                    .map_err(|e| e.to_string())?;
                let next = s.peek(&mut [0u8; 1]);
                s.set_read_timeout(None).map_err(|e| e.to_string())?;
                if next.is_err() {
                    for r in held.drain(..) {
                        write(s, &r)?;
                    }
                }
            }
            let mut h = [0u8; 28];
            read_exact(s, &mut h)?;
            assert_eq!(be32(&h, 0), REQUEST_MAGIC);
            let cmd = be16(&h, 6);
            let handle = be64(&h, 8);
            let off = be64(&h, 16) as usize;
            let len = be32(&h, 24) as usize;
            let mut out = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
            let mut error = 0u32;
            let mut payload = Vec::new();
            match cmd {
                CMD_READ => payload = disk.lock().unwrap()[off..off + len].to_vec(),
                CMD_WRITE => {
                    let mut d = vec![0u8; len];
                    read_exact(s, &mut d)?;
                    if off + len > fake.size as usize {
                        error = nix::libc::ENOSPC as u32;
                    } else {
                        disk.lock().unwrap()[off..off + len].copy_from_slice(&d);
                    }
                }
                CMD_TRIM | CMD_WRITE_ZEROES => {
                    trims.fetch_add(1, Ordering::SeqCst);
                    disk.lock().unwrap()[off..off + len].fill(0);
                }
                CMD_FLUSH => {}
                CMD_DISC => return Ok(()),
                _ => error = nix::libc::EINVAL as u32,
            }
            out.extend_from_slice(&error.to_be_bytes());
            out.extend_from_slice(&handle.to_be_bytes());
            if error == 0 {
                out.extend_from_slice(&payload);
            }
            if fake.reorder {
                held.push(out);
                if held.len() == 2 {
                    for r in held.drain(..).rev() {
                        write(s, &r)?;
                    }
                }
            } else {
                write(s, &out)?;
            }
        }
    }

    fn fake(flags: u16) -> Fake {
        Fake {
            size: 1 << 20,
            flags,
            no_go: false,
            reorder: false,
        }
    }

    #[test]
    fn handshake_read_write_split_and_flags() {
        let flags = 1 | TFLAG_SEND_FLUSH | TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_TRIM;
        let (addr, disk, trims) = serve(fake(flags));
        let b = NbdBackend::connect(&addr, "disk").unwrap();
        assert_eq!(b.size(), 1 << 20);
        assert!(!b.read_only() && b.write_cache());
        assert_eq!(
            b.provisioning(),
            Some(Provisioning {
                zeroes: true,
                granularity: 4096
            })
        );
        // 20000 bytes with an 8 KiB maximum payload: three requests.
        let data: Vec<u8> = (0..20000u32).map(|i| (i % 253) as u8).collect();
        b.write_at(&data, 4096).unwrap();
        assert_eq!(&disk.lock().unwrap()[4096..24096], &data[..]);
        let mut back = vec![0u8; 20000];
        b.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
        b.flush().unwrap();
        b.discard(4096, 8192).unwrap();
        b.write_zeroes(12288, 4096).unwrap();
        assert_eq!(trims.load(Ordering::SeqCst), 2);
        assert!(disk.lock().unwrap()[4096..16384].iter().all(|x| *x == 0));
        assert_eq!(b.describe(), format!("nbd:{addr}/disk"));
    }

    #[test]
    fn server_errors_are_io_errors_and_the_connection_survives() {
        let (addr, _disk, _) = serve(fake(1));
        let b = NbdBackend::connect(&addr, "disk").unwrap();
        // The fake refuses writes past its end with ENOSPC.
        let e = b.write_at(&[1u8; 512], (1 << 20) - 256).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC));
        b.write_at(&[2u8; 512], 0).unwrap();
        // No trim, no write zeroes: fully provisioned, zeroes are written.
        assert_eq!(b.provisioning(), None);
        assert!(b.discard(0, 512).is_err());
        b.write_zeroes(0, 512).unwrap();
        let mut back = [9u8; 512];
        b.read_at(&mut back, 0).unwrap();
        assert_eq!(back, [0u8; 512]);
        // No SEND_FLUSH: nothing to flush, no write cache.
        assert!(!b.write_cache());
        b.flush().unwrap();
    }

    #[test]
    fn concurrent_callers_get_their_own_replies_in_any_order() {
        let mut f = fake(1);
        f.reorder = true;
        let (addr, disk, _) = serve(f);
        for (i, chunk) in disk.lock().unwrap().chunks_mut(4096).enumerate() {
            chunk.fill(i as u8);
        }
        let b = Arc::new(NbdBackend::connect(&addr, "disk").unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for round in 0..25u64 {
                        let block = (t * 25 + round) % 256;
                        let mut buf = [0u8; 4096];
                        b.read_at(&mut buf, block * 4096).unwrap();
                        assert!(buf.iter().all(|x| u64::from(*x) == block), "block {block}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn export_name_fallback_and_refusals() {
        let mut f = fake(1 | TFLAG_READ_ONLY | TFLAG_SEND_TRIM);
        f.no_go = true;
        let (addr, _, _) = serve(f);
        let b = NbdBackend::connect(&addr, "anything").unwrap();
        assert!(b.read_only());
        assert_eq!(b.provisioning().map(|p| p.zeroes), Some(false));
        drop(b);

        let (addr, _, _) = serve(fake(1));
        let err = NbdBackend::connect(&addr, "nope").err().unwrap();
        assert!(err.to_string().contains("no such export"), "{err}");

        // Not an NBD server at all.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        let err = NbdBackend::connect(&addr, "").err().unwrap();
        assert!(err.to_string().contains("not an NBD server"), "{err}");
    }

    #[test]
    fn a_lost_connection_fails_requests_instead_of_hanging() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Handshake, then hang up on the first request.
            let f = fake(1);
            write(&mut s, &NBDMAGIC.to_be_bytes()).unwrap();
            write(&mut s, &IHAVEOPT.to_be_bytes()).unwrap();
            write(&mut s, &FLAG_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
            read_u32(&mut s).unwrap();
            read_u64(&mut s).unwrap();
            read_u32(&mut s).unwrap();
            let len = read_u32(&mut s).unwrap();
            let mut d = vec![0u8; len as usize];
            read_exact(&mut s, &mut d).unwrap();
            let mut info = OPT_REPLY_MAGIC.to_be_bytes().to_vec();
            info.extend_from_slice(&OPT_GO.to_be_bytes());
            info.extend_from_slice(&REP_INFO.to_be_bytes());
            info.extend_from_slice(&12u32.to_be_bytes());
            info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
            info.extend_from_slice(&f.size.to_be_bytes());
            info.extend_from_slice(&f.flags.to_be_bytes());
            write(&mut s, &info).unwrap();
            let mut ack = OPT_REPLY_MAGIC.to_be_bytes().to_vec();
            ack.extend_from_slice(&OPT_GO.to_be_bytes());
            ack.extend_from_slice(&REP_ACK.to_be_bytes());
            ack.extend_from_slice(&0u32.to_be_bytes());
            write(&mut s, &ack).unwrap();
            let mut h = [0u8; 28];
            let _ = s.read_exact(&mut h);
        });
        let b = NbdBackend::connect(&addr, "").unwrap();
        let mut buf = [0u8; 512];
        assert!(b.read_at(&mut buf, 0).is_err());
        // And every later request fails at once.
        assert!(b.write_at(&buf, 0).is_err());
    }
}
