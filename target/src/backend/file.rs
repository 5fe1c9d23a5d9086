//! A regular file or a block device as a logical unit.
//!
//! Positional I/O (`pread`/`pwrite`) on one shared descriptor: thread-safe
//! without a lock; READs and WRITEs of a regular file copy from and into a
//! mapping of it instead ([`super::mapped`]). A missing file is created
//! sparse at the requested size.
//!
//! ## Thin provisioning
//!
//! - **Regular file**: discard punches a hole (`fallocate(PUNCH_HOLE)`),
//!   which reads back as zeroes on every Linux file system that supports
//!   it, so LBPRZ=1; where the file system refuses, the range is written
//!   with zeroes instead, which keeps the promise. The unmap granularity is
//!   the file system block (`st_blksize`). GET LBA STATUS asks the file
//!   system with `SEEK_DATA`/`SEEK_HOLE`. Zeroing without deallocating
//!   (WRITE SAME of zeroes) is `fallocate(ZERO_RANGE)`: the space stays
//!   reserved as unwritten extents, which ext4 and XFS report to
//!   `SEEK_DATA` as holes, so such blocks show as deallocated in GET LBA
//!   STATUS — they read as zeroes either way.
//! - **Block device**: what the device can do is read from sysfs
//!   (`queue/write_zeroes_max_bytes`, `queue/discard_max_bytes`) when it is
//!   opened. A device with a write-zeroes operation is discarded with
//!   `fallocate(PUNCH_HOLE)` on the device, which the kernel turns into a
//!   write-zeroes request that may deallocate and guarantees zeroes
//!   afterwards: LBPRZ=1. A device that only discards (`BLKDISCARD`) makes
//!   no promise about what reads return afterwards — the kernel's
//!   `BLKDISCARDZEROES` has answered 0 for every device since Linux 4.12 —
//!   so the logical unit reports LBPRZ=0. A device that does neither is
//!   fully provisioned. GET LBA STATUS reports "mapped or unknown": a block
//!   device does not say what it has deallocated.
//!
//! PRE-FETCH asks the kernel to read ahead (`POSIX_FADV_WILLNEED`); whether
//! the pages are still cached when the command ends is not known, so it is
//! never reported as CONDITION MET.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, PosixFadviseAdvice, fallocate, posix_fadvise};
use nix::unistd::{Whence, lseek};

use super::mapped::Mapping;
use super::splice::{Pending, Spliced};
use super::{Backend, Extent, MapState, Provisioning, write_repeated};

/// How discard is done, decided when the file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Discard {
    /// Regular file: punch a hole.
    PunchHole,
    /// Block device with write-zeroes: `fallocate(PUNCH_HOLE)` on the
    /// device, aligned to its logical block size.
    ZeroingFallocate { align: u64 },
    /// Block device with discard only: the `BLKDISCARD` ioctl, aligned
    /// inwards.
    Ioctl { align: u64 },
    /// Nothing.
    None,
}

pub struct FileBackend {
    /// Shared with the zero-copy reads still being sent.
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    block_device: bool,
    discard: Discard,
    /// Unmap granularity in bytes.
    granularity: u64,
    /// Zero-copy reads not yet sent, detached before any change
    /// ([`super::splice`]).
    pending: Pending,
    /// Regular files: READs and WRITEs copy from and into a mapping of the
    /// file instead of a `pread` or `pwrite` each ([`super::mapped`]).
    map: Option<Mapping>,
    /// Whether the log said the mapping faulted.
    fault_reported: std::sync::atomic::AtomicBool,
}

impl FileBackend {
    /// Opens `path`; a regular file that does not exist is created with
    /// `size` bytes (sparse). An existing file smaller than `size` is
    /// extended; without `size` an existing file or device is used whole.
    pub fn open(path: &Path, size: Option<u64>, read_only: bool) -> io::Result<FileBackend> {
        let exists = path.exists();
        if !exists && size.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} does not exist; give a size to create it",
                    path.display()
                ),
            ));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .create(!read_only && !exists)
            .truncate(false)
            .open(path)?;
        let meta = file.metadata()?;
        let block_device = meta.file_type().is_block_device();
        let mut actual = file.seek(SeekFrom::End(0))?;
        if let Some(want) = size {
            if want > actual {
                if block_device || read_only {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} holds {actual} bytes, fewer than the {want} asked for",
                            path.display()
                        ),
                    ));
                }
                file.set_len(want)?;
            }
            actual = want;
        }
        let (discard, granularity) = if block_device {
            device_discard(meta.rdev())
        } else {
            (Discard::PunchHole, meta.blksize().max(512))
        };
        let map = if block_device {
            None
        } else {
            Mapping::new(&file, actual, !read_only)
        };
        Ok(FileBackend {
            file: Arc::new(file),
            path: path.to_owned(),
            size: actual,
            block_device,
            discard,
            granularity,
            pending: Pending::default(),
            map,
            fault_reported: Default::default(),
        })
    }

    /// Says once, in the log, that the mapping faulted and the LU goes on
    /// with `pread`/`pwrite`.
    fn report_fault(&self, m: &Mapping) {
        if m.faulted()
            && !self
                .fault_reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                path = %self.path.display(),
                "the file's mapping faulted (the file was truncated, or the file system is full): \
                 reads and writes go through pread/pwrite from now on"
            );
        }
    }

    /// `fallocate` over a byte range.
    fn fallocate(&self, flags: FallocateFlags, offset: u64, len: u64) -> nix::Result<()> {
        let off = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let len = i64::try_from(len).map_err(|_| Errno::EINVAL)?;
        fallocate(&self.file, flags, off, len)
    }

    /// Zeroes `[offset, offset+len)` of a device through `fallocate(mode)`
    /// on the part aligned to `align`, writing zeroes at the unaligned
    /// edges (the device refuses unaligned requests).
    fn device_fallocate(
        &self,
        mode: FallocateFlags,
        align: u64,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let end = offset + len;
        let start = offset.next_multiple_of(align).min(end);
        let stop = (end / align * align).max(start);
        if start > offset {
            write_repeated(self, &[0u8; 512], offset, start - offset)?;
        }
        if stop > start {
            self.fallocate(mode, start, stop - start)
                .map_err(io::Error::from)?;
        }
        if end > stop {
            write_repeated(self, &[0u8; 512], stop, end - stop)?;
        }
        Ok(())
    }
}

/// sysfs says what a block device can do; reads one number.
fn sysfs_number(dir: &Path, name: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join("queue").join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How to discard on the block device `rdev`, and the granularity.
fn device_discard(rdev: u64) -> (Discard, u64) {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let dev = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    // A partition has no queue directory of its own; its disk's applies.
    let dir = if dev.join("queue").exists() {
        dev
    } else {
        dev.join("..")
    };
    let align = sysfs_number(&dir, "logical_block_size")
        .filter(|a| a.is_power_of_two())
        .unwrap_or(512);
    let granularity = sysfs_number(&dir, "discard_granularity")
        .filter(|g| *g > 0)
        .unwrap_or(align);
    if sysfs_number(&dir, "write_zeroes_max_bytes").unwrap_or(0) > 0 {
        (Discard::ZeroingFallocate { align }, granularity)
    } else if sysfs_number(&dir, "discard_max_bytes").unwrap_or(0) > 0 {
        (Discard::Ioctl { align }, granularity)
    } else {
        (Discard::None, granularity)
    }
}

/// `BLKDISCARD` (linux/fs.h: `_IO(0x12, 119)`), which takes the byte range
/// as `u64[2]`.
#[allow(unsafe_code)]
mod ioctl {
    nix::ioctl_write_ptr_bad!(blkdiscard, 0x1277, [u64; 2]);

    /// Discards `[offset, offset+len)` of the block device `file`.
    pub fn discard(file: &std::fs::File, offset: u64, len: u64) -> nix::Result<()> {
        use std::os::fd::AsRawFd;
        let range = [offset, len];
        // SAFETY: `file` is an open descriptor for the duration of the
        // call and `range` is a live, correctly sized `u64[2]` the kernel
        // only reads.
        unsafe { blkdiscard(file.as_raw_fd(), &range) }.map(|_| ())
    }
}

impl Backend for FileBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// A copy from the file's mapping ([`super::mapped`]); else, or once
    /// the file shrank under it, `pread` straight into the buffer's spare
    /// capacity: no zero-fill.
    fn read_into(&self, buf: &mut bytes::BytesMut, offset: u64, len: usize) -> io::Result<()> {
        if let Some(m) = &self.map {
            if m.copy_into(buf, offset, len) {
                return Ok(());
            }
            self.report_fault(m);
        }
        let start = buf.len();
        buf.reserve(len);
        while buf.len() - start < len {
            let done = buf.len() - start;
            let at = offset + done as u64;
            // rustix reads into uninitialised memory and returns the part
            // it filled.
            match rustix::io::pread(&self.file, &mut buf.spare_capacity_mut()[..len - done], at)
                .map(|(filled, _)| filled.len())
                .map_err(io::Error::from)
            {
                Ok(0) => {
                    buf.truncate(start);
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                // SAFETY: `pread` initialised the first `n` bytes of the
                // spare capacity (n <= its length).
                #[allow(unsafe_code)]
                Ok(n) => unsafe { buf.set_len(buf.len() + n) },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Regular files only: a block device's page cache can change under
    /// us from outside (another opener of the device).
    fn splice_read(&self, offset: u64, len: usize) -> Option<Spliced> {
        if self.block_device {
            return None;
        }
        Some(self.pending.register(&self.file, offset, len))
    }

    /// Into the file's mapping; else, or once it faulted, `pwrite`.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.pending.detach(offset, data.len() as u64)?;
        if let Some(m) = &self.map {
            if m.copy_from(data, offset) {
                return Ok(());
            }
            self.report_fault(m);
        }
        self.file.write_all_at(data, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn provisioning(&self) -> Option<Provisioning> {
        let zeroes = match self.discard {
            Discard::PunchHole | Discard::ZeroingFallocate { .. } => true,
            Discard::Ioctl { .. } => false,
            Discard::None => return None,
        };
        Some(Provisioning {
            zeroes,
            granularity: self.granularity,
        })
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.pending.detach(offset, len)?;
        match self.discard {
            Discard::PunchHole => {
                let flags =
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
                match self.fallocate(flags, offset, len) {
                    // The file system cannot punch holes: zeroes keep the
                    // LBPRZ promise, without giving space back.
                    Err(Errno::EOPNOTSUPP) => self.write_zeroes(offset, len),
                    other => other.map_err(io::Error::from),
                }
            }
            Discard::ZeroingFallocate { align } => {
                let flags =
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
                self.device_fallocate(flags, align, offset, len)
            }
            Discard::Ioctl { align } => {
                // LBPRZ=0: the unaligned edges may keep their data.
                let start = offset.next_multiple_of(align);
                let stop = (offset + len) / align * align;
                if stop > start {
                    ioctl::discard(&self.file, start, stop - start).map_err(io::Error::from)?;
                }
                Ok(())
            }
            Discard::None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the device cannot discard",
            )),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.pending.detach(offset, len)?;
        let flags = FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        let done = if self.block_device {
            // On a device ZERO_RANGE is a write-zeroes that keeps the
            // blocks mapped (BLKDEV_ZERO_NOUNMAP); the kernel writes zero
            // pages itself when the device has no such operation.
            let align = match self.discard {
                Discard::ZeroingFallocate { align } | Discard::Ioctl { align } => align,
                _ => 512,
            };
            self.device_fallocate(flags, align, offset, len).is_ok()
        } else {
            self.fallocate(flags, offset, len).is_ok()
        };
        if done {
            Ok(())
        } else {
            write_repeated(self, &[0u8; 4096], offset, len)
        }
    }

    fn mapping(&self, offset: u64, len: u64) -> io::Result<Extent> {
        let len = len.max(1);
        let unknown = Extent {
            state: MapState::Unknown,
            len,
        };
        if self.block_device {
            return Ok(unknown);
        }
        let at = i64::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let end = offset.saturating_add(len);
        // lseek moves the shared file offset, which nothing else uses (all
        // I/O is positional), so concurrent calls cannot disturb each other.
        match lseek(&self.file, at, Whence::SeekData) {
            // No data at or after `offset`: a hole to the end of the file.
            Err(Errno::ENXIO) => Ok(Extent {
                state: MapState::Deallocated,
                len,
            }),
            // SEEK_DATA unsupported: say nothing.
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => Ok(unknown),
            Err(e) => Err(e.into()),
            Ok(data) if data as u64 > offset => Ok(Extent {
                state: MapState::Deallocated,
                len: (data as u64).min(end) - offset,
            }),
            Ok(_) => {
                let hole = lseek(&self.file, at, Whence::SeekHole).map_err(io::Error::from)?;
                Ok(Extent {
                    state: MapState::Mapped,
                    len: (hole as u64).min(end).saturating_sub(offset).max(1),
                })
            }
        }
    }

    fn prefetch(&self, offset: u64, len: u64) -> io::Result<bool> {
        let off = i64::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let len = i64::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        posix_fadvise(
            &self.file,
            off,
            len,
            PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        )?;
        Ok(false)
    }

    fn write_cache(&self) -> bool {
        true
    }

    /// A block device's reads reach the disk; a regular file is served
    /// from the page cache in the common case, where a hand-off would cost
    /// more than it saves.
    fn may_block(&self) -> bool {
        self.block_device
    }

    fn describe(&self) -> String {
        let kind = if self.block_device { "dev" } else { "file" };
        format!("{kind}:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_sparse_file_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        let b = FileBackend::open(&path, Some(1 << 20), false).unwrap();
        assert_eq!(b.size(), 1 << 20);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        b.write_at(&[0xab; 4096], 8192).unwrap();
        let mut buf = [0u8; 4096];
        b.read_at(&mut buf, 8192).unwrap();
        assert!(buf.iter().all(|x| *x == 0xab));
        b.discard(8192, 4096).unwrap();
        b.read_at(&mut buf, 8192).unwrap();
        assert!(buf.iter().all(|x| *x == 0));
    }

    #[test]
    fn read_into_appends_without_zero_filling_and_stops_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        let b = FileBackend::open(&path, Some(1 << 20), false).unwrap();
        let data: Vec<u8> = (0..(256 << 10)).map(|i: u32| (i % 253) as u8).collect();
        b.write_at(&data, 4096).unwrap();
        let mut buf = bytes::BytesMut::from(&b"xy"[..]);
        b.read_into(&mut buf, 4096, data.len()).unwrap();
        assert_eq!(&buf[..2], b"xy");
        assert_eq!(&buf[2..], &data[..]);
        // Past the end of the file: an error, and the buffer unchanged.
        let mut short = bytes::BytesMut::new();
        assert!(b.read_into(&mut short, (1 << 20) - 512, 4096).is_err());
        assert!(short.is_empty());
    }

    /// READs of a regular file come from its mapping; when someone else
    /// truncates the file they fail (as `pread` reports it), the process
    /// lives on, and the LU keeps serving what is left through `pread`.
    #[test]
    fn reads_of_a_file_truncated_under_the_lu_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        let b = FileBackend::open(&path, Some(1 << 20), false).unwrap();
        assert!(b.map.is_some(), "a regular file is mapped");
        b.write_at(&[0x5a; 8192], 512 << 10).unwrap();
        let mut buf = bytes::BytesMut::new();
        b.read_into(&mut buf, 512 << 10, 8192).unwrap();
        assert!(buf.iter().all(|&x| x == 0x5a));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(64 << 10)
            .unwrap();
        let mut gone = bytes::BytesMut::new();
        let err = b.read_into(&mut gone, 512 << 10, 8192).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(gone.is_empty());
        b.write_at(&[0x77; 512], 0).unwrap();
        b.read_into(&mut gone, 0, 512).unwrap();
        assert!(gone.iter().all(|&x| x == 0x77));
    }

    #[test]
    fn missing_file_without_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileBackend::open(&dir.path().join("nope"), None, false)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn existing_file_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        FileBackend::open(&path, Some(65536), false)
            .unwrap()
            .write_at(b"persist", 512)
            .unwrap();
        let again = FileBackend::open(&path, None, false).unwrap();
        assert_eq!(again.size(), 65536);
        let mut buf = [0u8; 7];
        again.read_at(&mut buf, 512).unwrap();
        assert_eq!(&buf, b"persist");
    }

    #[test]
    fn holes_are_reported_and_punched_and_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        let b = FileBackend::open(&path, Some(1 << 20), false).unwrap();
        let p = b.provisioning().expect("a file is thin");
        assert!(p.zeroes);
        assert!(p.granularity >= 512);
        let g = p.granularity;
        // A new sparse file is one hole.
        let e = b.mapping(0, 1 << 20).unwrap();
        assert_eq!((e.state, e.len), (MapState::Deallocated, 1 << 20));
        // Data in [4g, 6g): a hole, then data, then a hole again.
        b.write_at(&vec![1u8; 2 * g as usize], 4 * g).unwrap();
        let e = b.mapping(0, 1 << 20).unwrap();
        assert_eq!((e.state, e.len), (MapState::Deallocated, 4 * g));
        let e = b.mapping(4 * g, 1 << 19).unwrap();
        assert_eq!((e.state, e.len), (MapState::Mapped, 2 * g));
        // The run is cut at what was asked for.
        assert_eq!(b.mapping(4 * g, 10).unwrap().len, 10);
        // Punch the first block of data back out.
        b.discard(4 * g, g).unwrap();
        assert_eq!(b.mapping(4 * g, g).unwrap().state, MapState::Deallocated);
        assert_eq!(b.mapping(5 * g, g).unwrap().state, MapState::Mapped);
        // Zeroing reads back as zeroes (the extent state it leaves is the
        // file system's business; see the module docs).
        b.write_zeroes(5 * g, g).unwrap();
        let mut buf = vec![9u8; 2 * g as usize];
        b.read_at(&mut buf, 4 * g).unwrap();
        assert!(buf.iter().all(|x| *x == 0));
        assert!(!b.prefetch(0, 4096).unwrap());
    }
}
