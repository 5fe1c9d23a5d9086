//! Regular files and local block devices.
//!
//! Opened with `O_DIRECT` so that reads come from the device, not the page
//! cache; a file system that rejects it (tmpfs, some FUSE) gets buffered
//! I/O instead, said so in the notes, and [`LocalDevice::drop_cache`]
//! (`posix_fadvise(DONTNEED)` after `fdatasync`) before reading back. A
//! block device opened for writing is opened `O_EXCL` unless forced: the
//! kernel then refuses it while mounted or held exclusively by anyone else,
//! and keeps others from mounting it while we write.
//!
//! Geometry: a block device reports its logical block size (`BLKSSZGET`)
//! and size (`BLKGETSIZE64`); a regular file has the block size the user
//! chose (default [`DEFAULT_FILE_BLOCK_SIZE`]) and its length, whole blocks
//! only. Each call runs on tokio's blocking pool: N calls in flight are N
//! system calls in flight, a real queue depth.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{FallocateFlags, OFlag, PosixFadviseAdvice, fallocate, posix_fadvise};

use super::{
    AlignedBuf, DeviceError, DeviceInfo, Kind, OpenOptions, TrimGate, TrimMethod, TrimSupport,
    errno, ioctl, safety,
};

/// Block size of a regular file unless given: the page size, and the block
/// size of most file systems.
pub const DEFAULT_FILE_BLOCK_SIZE: u32 = 4096;

/// Largest transfer per call; the kernel splits it for the device.
const MAX_IO_BYTES: u32 = 64 << 20;

/// A regular file or block device.
#[derive(Debug)]
pub struct LocalDevice {
    file: Arc<File>,
    info: DeviceInfo,
    trim: TrimGate,
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> DeviceError {
    DeviceError::Open {
        target: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl LocalDevice {
    /// Opens `path` (blocking).
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<LocalDevice, DeviceError> {
        let name = path.display().to_string();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match opts.create_size {
                Some(size) if opts.write => {
                    let f = File::create_new(path).map_err(|e| open_error(path, e))?;
                    f.set_len(size).map_err(|e| open_error(path, e))?;
                    f.metadata().map_err(|e| open_error(path, e))?
                }
                _ => {
                    return Err(open_error(
                        path,
                        "no such file or device (give --size to create a file)",
                    ));
                }
            },
            Err(e) => return Err(open_error(path, e)),
        };
        let ft = meta.file_type();
        let kind = if ft.is_block_device() {
            Kind::BlockDevice
        } else if ft.is_file() {
            Kind::File
        } else {
            return Err(DeviceError::Usage {
                target: name,
                reason: "not a regular file or a block device".into(),
            });
        };
        if kind == Kind::BlockDevice && opts.file_block_size.is_some() {
            return Err(DeviceError::Usage {
                target: name,
                reason: "--block-size applies to regular files; a block device reports its own"
                    .into(),
            });
        }
        if opts.create_size.is_some_and(|s| s != meta.len()) && kind == Kind::File && opts.write {
            // An existing file keeps its size: say so rather than truncate.
            tracing::debug!("{name} exists; --size ignored");
        }

        let mut reasons = Vec::new();
        let exclusive = kind == Kind::BlockDevice && opts.write && !opts.force;
        if exclusive {
            reasons.extend(safety::block_device_in_use(meta.rdev()));
        }
        let mut notes = Vec::new();
        let mut direct = opts.direct;
        let file = match open_file(path, opts.write, direct, exclusive) {
            Ok(f) => f,
            Err(e) if direct && e.raw_os_error() == Some(nix::libc::EINVAL) => {
                direct = false;
                notes.push(format!("O_DIRECT is not supported here ({e}): buffered I/O, page cache dropped before reading back"));
                open_file(path, opts.write, false, exclusive).map_err(|e| open_error(path, e))?
            }
            Err(e) if exclusive && e.raw_os_error() == Some(nix::libc::EBUSY) => {
                // A mount found above explains the EBUSY already.
                if reasons.is_empty() {
                    reasons.push("it is in use: the exclusive open failed with EBUSY (held open exclusively by another program)".into());
                }
                return Err(DeviceError::Refused {
                    target: name,
                    reasons,
                });
            }
            Err(e) => return Err(open_error(path, e)),
        };
        if !reasons.is_empty() {
            return Err(DeviceError::Refused {
                target: name,
                reasons,
            });
        }
        if !opts.direct {
            notes.push("buffered I/O (--buffered): page cache dropped before reading back".into());
        }

        let (block_size, bytes) = match kind {
            Kind::BlockDevice => {
                let bs = ioctl::logical_block_size(file.as_fd())
                    .map_err(|e| open_error(path, format!("BLKSSZGET: {}", errno(e))))?;
                let size = ioctl::size_bytes(file.as_fd())
                    .map_err(|e| open_error(path, format!("BLKGETSIZE64: {}", errno(e))))?;
                (bs, size)
            }
            _ => (
                opts.file_block_size.unwrap_or(DEFAULT_FILE_BLOCK_SIZE),
                meta.len(),
            ),
        };
        if block_size == 0 || !block_size.is_power_of_two() {
            return Err(DeviceError::Usage {
                target: name,
                reason: format!("block size {block_size} is not a power of two"),
            });
        }
        let blocks = bytes / u64::from(block_size);
        if blocks == 0 {
            return Err(DeviceError::Usage {
                target: name,
                reason: format!("{bytes} bytes: smaller than one {block_size}-byte block"),
            });
        }
        if bytes % u64::from(block_size) != 0 {
            notes.push(format!(
                "the last {} bytes (less than a block) are not used",
                bytes % u64::from(block_size)
            ));
        }
        let trim = match kind {
            Kind::BlockDevice => TrimSupport {
                method: TrimMethod::Discard,
                zeroes: false,
                reason: "BLKDISCARD; Linux does not promise zeros after a discard, so trimmed blocks are not compared".into(),
            },
            _ => TrimSupport {
                method: TrimMethod::PunchHole,
                zeroes: true,
                reason: "fallocate(PUNCH_HOLE): a hole reads back as zeros".into(),
            },
        };
        let align = (block_size as usize).max(super::buf::DEFAULT_ALIGN);
        let mut dev = LocalDevice {
            file: Arc::new(file),
            info: DeviceInfo {
                name,
                kind,
                block_size,
                blocks,
                direct_io: direct,
                max_io_bytes: MAX_IO_BYTES.max(block_size),
                align,
                trim,
                notes,
                negotiation_warnings: Vec::new(),
            },
            trim: TrimGate::default(),
        };
        if direct {
            dev.probe_direct(path, opts, exclusive)?;
        }
        Ok(dev)
    }

    /// Some file systems accept `O_DIRECT` at open and refuse the first
    /// read; find out now and fall back.
    fn probe_direct(
        &mut self,
        path: &Path,
        opts: &OpenOptions,
        exclusive: bool,
    ) -> Result<(), DeviceError> {
        let mut buf = AlignedBuf::new(self.info.block_size as usize, self.info.align);
        match self.file.read_exact_at(&mut buf, 0) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                let file = open_file(path, opts.write, false, exclusive)
                    .map_err(|e| open_error(path, e))?;
                self.file = Arc::new(file);
                self.info.direct_io = false;
                self.info.notes.push(format!("O_DIRECT reads fail here ({e}): buffered I/O, page cache dropped before reading back"));
                Ok(())
            }
            Err(e) => Err(open_error(path, format!("reading the first block: {e}"))),
        }
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn offset(&self, lba: u64) -> u64 {
        lba.saturating_mul(u64::from(self.info.block_size))
    }

    fn check_range(&self, op: &'static str, lba: u64, len: usize) -> Result<u64, DeviceError> {
        let bs = self.info.block_size as usize;
        let blocks = (len / bs) as u64;
        if len % bs != 0
            || lba
                .checked_add(blocks)
                .is_none_or(|end| end > self.info.blocks)
        {
            return Err(DeviceError::io(
                op,
                lba,
                blocks,
                format!("{len} bytes is not a whole number of blocks inside the device"),
            ));
        }
        Ok(blocks)
    }

    pub async fn read(&self, lba: u64, buf: AlignedBuf) -> (AlignedBuf, Result<(), DeviceError>) {
        let blocks = match self.check_range("read", lba, buf.len()) {
            Ok(b) => b,
            Err(e) => return (buf, Err(e)),
        };
        let (file, off) = (self.file.clone(), self.offset(lba));
        let (buf, r) = blocking(buf, self.info.align, move |buf| {
            file.read_exact_at(buf, off)
        })
        .await;
        (buf, r.map_err(|e| DeviceError::io("read", lba, blocks, e)))
    }

    pub async fn write(&self, lba: u64, buf: AlignedBuf) -> (AlignedBuf, Result<(), DeviceError>) {
        let blocks = match self.check_range("write", lba, buf.len()) {
            Ok(b) => b,
            Err(e) => return (buf, Err(e)),
        };
        let (file, off) = (self.file.clone(), self.offset(lba));
        let (buf, r) = blocking(buf, self.info.align, move |buf| file.write_all_at(buf, off)).await;
        (buf, r.map_err(|e| DeviceError::io("write", lba, blocks, e)))
    }

    pub fn trim_skip_reason(&self) -> Option<String> {
        self.trim.reason()
    }

    pub async fn trim(&self, lba: u64, blocks: u64) -> Result<(), DeviceError> {
        if !self.trim.open() {
            return Err(DeviceError::TrimUnsupported(
                self.trim.reason().unwrap_or_default(),
            ));
        }
        if lba
            .checked_add(blocks)
            .is_none_or(|end| end > self.info.blocks)
        {
            return Err(DeviceError::io(
                "trim",
                lba,
                blocks,
                "beyond the end of the device",
            ));
        }
        let (file, off) = (self.file.clone(), self.offset(lba));
        let len = blocks.saturating_mul(u64::from(self.info.block_size));
        let kind = self.info.kind;
        let r = tokio::task::spawn_blocking(move || match kind {
            Kind::BlockDevice => ioctl::discard(file.as_fd(), off, len),
            _ => fallocate(
                file.as_fd(),
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                i64::try_from(off).unwrap_or(i64::MAX),
                i64::try_from(len).unwrap_or(i64::MAX),
            ),
        })
        .await
        .map_err(|e| DeviceError::io("trim", lba, blocks, e))?;
        match r {
            Ok(()) => Ok(()),
            Err(e @ (nix::Error::EOPNOTSUPP | nix::Error::ENOTTY | nix::Error::EINVAL)) => {
                let what = if kind == Kind::BlockDevice {
                    "BLKDISCARD"
                } else {
                    "fallocate(PUNCH_HOLE)"
                };
                Err(self
                    .trim
                    .close(format!("{what} is not supported here ({})", errno(e))))
            }
            Err(e) => Err(DeviceError::io("trim", lba, blocks, errno(e))),
        }
    }

    pub async fn flush(&self) -> Result<(), DeviceError> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| DeviceError::io("fdatasync", 0, 0, e))
    }

    pub async fn drop_cache(&self) -> Result<(), DeviceError> {
        if self.info.direct_io {
            return Ok(());
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            posix_fadvise(file.as_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
                .map_err(errno)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(|e| DeviceError::io("posix_fadvise(DONTNEED)", 0, 0, e))
    }
}

fn open_file(path: &Path, write: bool, direct: bool, exclusive: bool) -> io::Result<File> {
    let mut flags = OFlag::empty();
    if direct {
        flags |= OFlag::O_DIRECT;
    }
    if exclusive {
        // O_EXCL without O_CREAT on a block device: exclusive open (open(2)).
        flags |= OFlag::O_EXCL;
    }
    FsOpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(flags.bits())
        .open(path)
}

/// Runs `f` on the blocking pool with the buffer, and hands the buffer back.
async fn blocking(
    buf: AlignedBuf,
    align: usize,
    f: impl FnOnce(&mut AlignedBuf) -> io::Result<()> + Send + 'static,
) -> (AlignedBuf, io::Result<()>) {
    // The buffer travels with the closure; if the task is lost (runtime
    // shutting down) a fresh one of the same shape goes back instead.
    let (len, cap) = (buf.len(), buf.capacity());
    match tokio::task::spawn_blocking(move || {
        let mut buf = buf;
        let r = f(&mut buf);
        (buf, r)
    })
    .await
    {
        Ok(pair) => pair,
        Err(e) => {
            let mut b = AlignedBuf::new(cap, align);
            b.set_len(len);
            (b, Err(io::Error::other(e)))
        }
    }
}
