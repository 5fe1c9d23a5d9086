//! Storage behind a logical unit: RAM, a file, or a block device.
//!
//! A backend is a byte-addressed store with positional, thread-safe reads
//! and writes — no seek state, no lock held by callers across I/O. Calls are
//! synchronous: the RAM backend is a memcpy, and file/device I/O through the
//! page cache costs microseconds, less than a hand-off to a blocking thread.
//! The SCSI layer ([`crate::scsi`]) converts LBAs to byte offsets and checks
//! ranges before calling in.

use std::io;

pub mod file;
pub mod ram;

pub use file::FileBackend;
pub use ram::RamBackend;

/// A byte-addressed store.
pub trait Backend: Send + Sync + 'static {
    /// Capacity in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from `offset`. The range is within `size()`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes `data` at `offset`. The range is within `size()`.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;

    /// Makes completed writes durable (SYNCHRONIZE CACHE, FUA).
    fn flush(&self) -> io::Result<()>;

    /// Deallocates a byte range (UNMAP, WRITE SAME with UNMAP). After it the
    /// range reads as zeroes when [`Backend::discard_zeroes`] is true.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Whether a discarded range reads back as zeroes (LBPRZ).
    fn discard_zeroes(&self) -> bool;

    /// Whether a byte range is allocated (mapped): for GET LBA STATUS. The
    /// default says everything is.
    fn is_mapped(&self, _offset: u64, _len: u64) -> io::Result<bool> {
        Ok(true)
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
