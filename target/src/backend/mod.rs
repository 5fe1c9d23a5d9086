//! Storage behind a logical unit: RAM, a file, a block device, or an NBD
//! export.
//!
//! A backend is a byte-addressed store with positional, thread-safe reads
//! and writes — no seek state, no lock held by callers across I/O. Calls are
//! synchronous: the RAM backend is a memcpy, and file/device I/O through the
//! page cache costs microseconds, less than a hand-off to a blocking thread.
//! The NBD client blocks on its socket for one round trip (see
//! [`nbd`]). The SCSI layer ([`crate::scsi`]) converts LBAs to byte offsets
//! and checks ranges before calling in.
//!
//! ## Thin provisioning (SBC-4 §4.7)
//!
//! A backend that can give space back reports [`Provisioning`]: the logical
//! unit is then thin provisioned (LBPME=1) and UNMAP / WRITE SAME with the
//! UNMAP bit call [`Backend::discard`]. Whether a discarded range reads back
//! as zeroes is the backend's promise ([`Provisioning::zeroes`], reported as
//! LBPRZ); a backend that cannot keep it says so rather than lie.
//! [`Backend::mapping`] answers GET LBA STATUS.

use std::io;

use bytes::BytesMut;

pub mod file;
pub mod mapped;
pub mod nbd;
pub mod ram;
pub mod splice;

pub use file::FileBackend;
pub use nbd::NbdBackend;
pub use ram::RamBackend;
pub use splice::Spliced;

/// What a thin-provisioning backend promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provisioning {
    /// A discarded range reads back as zeroes (LBPRZ).
    pub zeroes: bool,
    /// The unit in which space is given back, in bytes (the optimal unmap
    /// granularity): a discard of less, or unaligned, still zeroes (when
    /// `zeroes`) but may not free anything.
    pub granularity: u64,
}

/// The allocation state of a byte range, for GET LBA STATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapState {
    /// Backed by storage.
    Mapped,
    /// Deallocated: reads return zeroes (when LBPRZ) without storage.
    Deallocated,
    /// The backend cannot tell.
    Unknown,
}

/// A run of bytes in one [`MapState`], starting where it was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub state: MapState,
    /// Length in bytes, at least 1 and at most what was asked for.
    pub len: u64,
}

/// A byte-addressed store.
pub trait Backend: Send + Sync + 'static {
    /// Capacity in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from `offset`. The range is within `size()`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Appends `len` bytes read from `offset` to `buf`: the read path's
    /// buffer, which is then sent as is. The range is within `size()`. On
    /// an error `buf` is left as it was. The default zero-fills the new
    /// bytes and calls [`Backend::read_at`]; backends that can fill
    /// uninitialised memory themselves (a file's `pread`, the RAM
    /// backend's copy) override it and skip the memset.
    fn read_into(&self, buf: &mut BytesMut, offset: u64, len: usize) -> io::Result<()> {
        let start = buf.len();
        buf.resize(start + len, 0);
        let r = self.read_at(&mut buf[start..], offset);
        if r.is_err() {
            buf.truncate(start);
        }
        r
    }

    /// A zero-copy read of `len` bytes at `offset` ([`splice`]): `Some`
    /// when this backend can leave the data in its file for the
    /// connection's writer to send with `sendfile`, keeping what the read
    /// returns exact against later writes. The default cannot (`None`: the
    /// caller reads with [`Backend::read_into`]).
    fn splice_read(&self, _offset: u64, _len: usize) -> Option<Spliced> {
        None
    }

    /// Writes `data` at `offset`. The range is within `size()`.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;

    /// Makes completed writes durable (SYNCHRONIZE CACHE, FUA).
    fn flush(&self) -> io::Result<()>;

    /// Thin provisioning support; `None` (the default) for a backend that
    /// cannot deallocate, which makes the logical unit fully provisioned.
    fn provisioning(&self) -> Option<Provisioning> {
        None
    }

    /// Deallocates a byte range (UNMAP, WRITE SAME with UNMAP). Called only
    /// when [`Backend::provisioning`] is `Some`; afterwards the range reads
    /// as zeroes if [`Provisioning::zeroes`].
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this backend cannot deallocate",
        ))
    }

    /// Writes zeroes over a byte range, leaving it allocated (WRITE SAME of
    /// a zero block without UNMAP). The default writes a zeroed buffer in
    /// large pieces; backends with a cheaper way override it.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        write_repeated(self, &[0u8; 4096], offset, len)
    }

    /// The allocation state of the range starting at `offset`, up to `len`
    /// bytes (at least one). The default knows nothing.
    fn mapping(&self, _offset: u64, len: u64) -> io::Result<Extent> {
        Ok(Extent {
            state: MapState::Unknown,
            len: len.max(1),
        })
    }

    /// Asks for a range to be brought into the backend's cache (PRE-FETCH).
    /// `Ok(true)` when the range is, on return, held in memory — the
    /// PRE-FETCH CONDITION MET case; `Ok(false)` when the backend cannot
    /// promise that (the default).
    fn prefetch(&self, _offset: u64, _len: u64) -> io::Result<bool> {
        Ok(false)
    }

    /// Whether a call may wait on something slow — a network server, a
    /// disk read that misses the cache — rather than finish in memory. The
    /// connection driver then runs commands on this LU so that the wait
    /// does not hold up other sessions (`tokio::task::block_in_place`).
    fn may_block(&self) -> bool {
        false
    }

    /// Whether completed writes may sit in a volatile cache until
    /// [`Backend::flush`] (the page cache of a file or device): reported as
    /// WCE in the Caching mode page.
    fn write_cache(&self) -> bool {
        false
    }

    /// A short description for logs: `ram:64MiB`, `file:/path`.
    fn describe(&self) -> String;
}

/// The largest buffer [`write_repeated`] builds: big enough that a
/// multi-gigabyte WRITE SAME is a few thousand `pwrite`s, small enough to
/// stay in cache.
const REPEAT_BUFFER: usize = 1 << 20;

/// Writes `pattern` (a whole number of times) over `[offset, offset+len)`,
/// through a buffer of up to 1 MiB so no call is per block. `len` must be a
/// multiple of the pattern length.
pub fn write_repeated<B: Backend + ?Sized>(
    backend: &B,
    pattern: &[u8],
    offset: u64,
    len: u64,
) -> io::Result<()> {
    if pattern.is_empty() || len == 0 {
        return Ok(());
    }
    let unit = pattern.len();
    let copies = (REPEAT_BUFFER / unit).max(1);
    let buf_len = usize::try_from(len).map_or(copies * unit, |l| l.min(copies * unit));
    let buf: Vec<u8> = pattern.iter().copied().cycle().take(buf_len).collect();
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        backend.write_at(&buf[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_repeated_covers_the_range_exactly() {
        let ram = RamBackend::new(4 << 20);
        let pattern: Vec<u8> = (0..512u32).map(|i| (i % 251) as u8).collect();
        // 3 MiB + 1 block: several full buffers and a short tail.
        let len = (3 << 20) + 512;
        write_repeated(&ram, &pattern, 512, len).unwrap();
        let mut back = vec![0u8; len as usize + 1024];
        ram.read_at(&mut back, 0).unwrap();
        assert!(back[..512].iter().all(|b| *b == 0), "before the range");
        for chunk in back[512..512 + len as usize].chunks(512) {
            assert_eq!(chunk, &pattern[..]);
        }
        assert!(back[512 + len as usize..].iter().all(|b| *b == 0), "after");
    }

    /// A backend with only the required methods, to exercise the defaults.
    struct Plain(RamBackend);

    impl Backend for Plain {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.0.read_at(buf, offset)
        }
        fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
            self.0.write_at(data, offset)
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "plain".into()
        }
    }

    #[test]
    fn defaults_zero_by_writing_and_claim_nothing() {
        let plain = Plain(RamBackend::new(1 << 20));
        plain.write_at(&[7u8; 8192], 0).unwrap();
        plain.write_zeroes(512, 4096).unwrap();
        let mut back = [0u8; 8192];
        plain.read_at(&mut back, 0).unwrap();
        assert!(back[..512].iter().all(|b| *b == 7));
        assert!(back[512..4608].iter().all(|b| *b == 0));
        assert!(back[4608..].iter().all(|b| *b == 7));
        assert_eq!(
            plain.mapping(0, 10).unwrap(),
            Extent {
                state: MapState::Unknown,
                len: 10
            }
        );
        assert!(plain.provisioning().is_none());
        assert!(plain.discard(0, 512).is_err());
        assert!(!plain.prefetch(0, 512).unwrap());
        assert!(!plain.write_cache());
        // The default read_into appends, and leaves the buffer alone on
        // an error.
        let mut buf = BytesMut::from(&b"head"[..]);
        plain.read_into(&mut buf, 0, 600).unwrap();
        assert_eq!(&buf[..4], b"head");
        assert!(buf[4..516].iter().all(|b| *b == 7));
        assert!(buf[516..].iter().all(|b| *b == 0));
        assert_eq!(buf.len(), 604);
    }
}
