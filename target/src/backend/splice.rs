//! Zero-copy reads (issue 16): the data of a READ on a file LU stays in the
//! page cache until the connection's writer sends it with `sendfile(2)`,
//! instead of a `pread` into a buffer and a `write` of that buffer.
//!
//! ## What a spliced read returns
//!
//! A READ's data must be what the medium held when the READ ran, even
//! though the bytes leave the file later. Commands of one session run in
//! order, so a WRITE that arrives after a READ runs while the READ's Data-In
//! may still be queued or half sent. Every read handed out as a [`Spliced`]
//! is therefore registered with its backend's [`Pending`] list, and every
//! path of that backend that changes the medium (write, discard, write
//! zeroes) calls [`Pending::detach`] first: the unsent rest of each
//! registered read overlapping the range is copied into memory (what the
//! copy path would have held) before the write goes ahead, and the writer
//! sends that copy instead of the file. The writer holds a read's lock only
//! for one non-blocking `sendfile` call, so the copy never sees a
//! half-updated position. Reads of other sessions get the same guarantee.
//!
//! Which bytes the copy covers: from the first byte not yet handed to the
//! kernel to the end of the read. Bytes already sent were read from the
//! file before the write started, so they are what the READ returned too.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

/// Reads of one backend not yet completely sent.
#[derive(Default)]
pub struct Pending {
    reads: Mutex<Vec<Weak<Segment>>>,
}

/// One registered read: `[next, end)` of the file is still to be sent
/// from the file, or, once detached, from a copy.
struct Segment {
    file: Arc<File>,
    state: Mutex<State>,
}

enum State {
    /// Still in the file; bytes before `next` were handed to the kernel.
    InFile { next: u64, end: u64 },
    /// Copied before a write changed the file: `data` holds the file's
    /// bytes from offset `from` to the end of the read.
    Copied { from: u64, data: Bytes },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pending {
    /// Registers a read of `len` bytes at `offset` of `file`.
    pub fn register(&self, file: &Arc<File>, offset: u64, len: usize) -> Spliced {
        let seg = Arc::new(Segment {
            file: file.clone(),
            state: Mutex::new(State::InFile {
                next: offset,
                end: offset + len as u64,
            }),
        });
        let mut reads = lock(&self.reads);
        reads.retain(|w| w.strong_count() > 0);
        reads.push(Arc::downgrade(&seg));
        drop(reads);
        Spliced { seg, offset, len }
    }

    /// Before `[offset, offset+len)` of the file changes: copies the unsent
    /// rest of every registered read that overlaps it.
    pub fn detach(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut reads = lock(&self.reads);
        if reads.is_empty() {
            return Ok(());
        }
        reads.retain(|w| w.strong_count() > 0);
        let stop = offset.saturating_add(len);
        for seg in reads.iter().filter_map(Weak::upgrade) {
            let mut st = lock(&seg.state);
            if let State::InFile { next, end } = *st {
                if next < end && next < stop && offset < end {
                    let mut data = vec![0u8; (end - next) as usize];
                    seg.file.read_exact_at(&mut data, next)?;
                    *st = State::Copied {
                        from: next,
                        data: Bytes::from(data),
                    };
                }
            }
        }
        Ok(())
    }

    /// Registered reads still alive (for tests).
    #[cfg(test)]
    fn live(&self) -> usize {
        lock(&self.reads)
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// Read data that the connection's writer sends from the file (or from
/// the copy made when a write overlapped it): a range of a registered read.
#[derive(Clone)]
pub struct Spliced {
    seg: Arc<Segment>,
    /// File offset of the first byte still to send.
    offset: u64,
    len: usize,
}

impl std::fmt::Debug for Spliced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spliced({} bytes at {})", self.len, self.offset)
    }
}

/// The same range of the same read.
impl PartialEq for Spliced {
    fn eq(&self, other: &Spliced) -> bool {
        Arc::ptr_eq(&self.seg, &other.seg) && self.offset == other.offset && self.len == other.len
    }
}

impl Eq for Spliced {}

impl Spliced {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes `range` of this one (within its length).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Spliced {
        debug_assert!(range.start <= range.end && range.end <= self.len);
        Spliced {
            seg: self.seg.clone(),
            offset: self.offset + range.start as u64,
            len: range.end - range.start,
        }
    }

    /// Sends what it can of the rest to the non-blocking socket `sock`
    /// without waiting, and drops what was sent from the front. `Ok(0)`
    /// only when nothing is left; `WouldBlock` when the socket is full.
    /// The pieces of one read must be sent in order.
    pub fn send_some(&mut self, sock: BorrowedFd<'_>) -> io::Result<usize> {
        if self.len == 0 {
            return Ok(0);
        }
        let mut st = lock(&self.seg.state);
        let n = match &mut *st {
            State::InFile { next, .. } => {
                let mut at = self.offset;
                let n = rustix::fs::sendfile(sock, &*self.seg.file, Some(&mut at), self.len)?;
                if n == 0 {
                    // The file shrank under the LU: nothing sensible to send.
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                *next = self.offset + n as u64;
                n
            }
            State::Copied { from, data } => {
                let bytes = copied(*from, data, self.offset, self.len)?;
                drop(st);
                let n = rustix::io::write(sock, &bytes)?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                n
            }
        };
        self.offset += n as u64;
        self.len -= n;
        Ok(n)
    }

    /// The bytes, read now (tests and the digest fallback).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        let st = lock(&self.seg.state);
        match &*st {
            State::Copied { from, data } => copied(*from, data, self.offset, self.len),
            State::InFile { .. } => {
                let mut data = vec![0u8; self.len];
                self.seg.file.read_exact_at(&mut data, self.offset)?;
                Ok(Bytes::from(data))
            }
        }
    }
}

/// `len` bytes at file offset `offset` of a copy that starts at `from`;
/// an error (never a panic) if the piece is not inside it, which would
/// mean pieces of one read were sent out of order.
fn copied(from: u64, data: &Bytes, offset: u64, len: usize) -> io::Result<Bytes> {
    let start = offset
        .checked_sub(from)
        .and_then(|s| usize::try_from(s).ok())
        .filter(|s| s.checked_add(len).is_some_and(|end| end <= data.len()));
    match start {
        Some(s) => Ok(data.slice(s..s + len)),
        None => Err(io::Error::other("spliced read sent out of order")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn file_with(data: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().write_all_at(data, 0).unwrap();
        let file = Arc::new(f.reopen().unwrap());
        (f, file)
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// Sends `s` whole over a socket pair and returns what arrived.
    fn send_all(mut s: Spliced) -> Vec<u8> {
        let (a, mut b) = UnixStream::pair().unwrap();
        let want = s.len();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; want];
            b.read_exact(&mut got).unwrap();
            got
        });
        while !s.is_empty() {
            s.send_some(a.as_fd()).unwrap();
        }
        reader.join().unwrap()
    }

    #[test]
    fn a_slice_sends_its_bytes_of_the_file() {
        let data = pattern(300_000, 7);
        let (_t, file) = file_with(&data);
        let pending = Pending::default();
        let s = pending.register(&file, 1000, 200_001);
        assert!(send_all(s.slice(5..150_003)) == data[1005..151_003]);
        assert!(s.to_bytes().unwrap() == data[1000..201_001]);
    }

    /// A write after the read (detach first, then the write) does not change
    /// what the read has still to send; one outside its range copies
    /// nothing. (Bytes handed to the kernel are the fence's business,
    /// `conn::fence`: here the receiver reads them before the write.)
    #[test]
    fn a_detached_read_sends_what_the_file_held_before_the_write() {
        let old = pattern(1 << 20, 1);
        let (_t, file) = file_with(&old);
        let pending = Pending::default();
        let s = pending.register(&file, 4096, 512 * 1024);
        let mut first = s.slice(0..65536);
        let rest = s.slice(65536..512 * 1024);
        drop(s);
        // Part of the first piece goes out (and is read) before the write.
        let (a, mut b) = UnixStream::pair().unwrap();
        let sent = first.send_some(a.as_fd()).unwrap();
        assert!(sent > 0);
        let mut early = vec![0u8; sent];
        b.read_exact(&mut early).unwrap();
        pending.detach(900 * 1024, 4096).unwrap(); // no overlap
        assert!(matches!(*lock(&first.seg.state), State::InFile { .. }));
        pending.detach(8192, 512 * 1024).unwrap();
        file.write_all_at(&vec![0xeeu8; 512 * 1024], 8192).unwrap();
        assert!(matches!(*lock(&first.seg.state), State::Copied { .. }));
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 512 * 1024 - sent];
            b.read_exact(&mut got).unwrap();
            got
        });
        for mut piece in [first, rest] {
            while !piece.is_empty() {
                piece.send_some(a.as_fd()).unwrap();
            }
        }
        let mut got = early;
        got.extend(reader.join().unwrap());
        let want = &old[4096..4096 + 512 * 1024];
        assert!(
            got == want,
            "first difference at {:?}",
            got.iter().zip(want).position(|(a, b)| a != b)
        );
        assert_eq!(pending.live(), 0, "sent reads are no longer registered");
    }
}
