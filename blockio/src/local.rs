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
//! system calls in flight, a real queue depth. A caller that never has
//! more than one command in flight (fsx at queue depth 1) sets
//! [`LocalDevice::set_inline`]: the system calls then run on the calling
//! thread, without a hand-off to the pool and back (two thread wake-ups
//! per command, which cost more than a page-cache `pread`).
//!
//! Commands: READ and WRITE are `pread`/`pwrite`; FUA is the write then
//! `fdatasync`; UNMAP is `fallocate(PUNCH_HOLE)` on a file (reads zeros)
//! and `BLKDISCARD` on a block device (no promise of zeros); WRITE SAME of
//! zeros is `fallocate(PUNCH_HOLE)` (with UNMAP) or `fallocate(ZERO_RANGE)`
//! on a file and `BLKZEROOUT` on a block device, any other pattern is
//! written out in chunks; COMPARE AND WRITE is a read, a compare and a
//! write under a lock — atomic only against other compare and writes
//! through the same handle ([`Capabilities::compare_and_write_atomic`] is
//! false).

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use iesp_proto::scsi::Sense;
use nix::fcntl::{FallocateFlags, OFlag, PosixFadviseAdvice, fallocate, posix_fadvise};

use crate::{
    AlignedBuf, Capabilities, Device, DeviceError, DeviceInfo, IoResult, Kind, LbaRange, Limits,
    OpenOptions, TrimGate, TrimMethod, TrimSupport, check_compare_and_write, check_write_same,
    errno, first_difference, ioctl, pieces, safety,
};

/// Block size of a regular file unless given: the page size, and the block
/// size of most file systems.
pub const DEFAULT_FILE_BLOCK_SIZE: u32 = 4096;

/// Largest transfer per call; the kernel splits it for the device.
const MAX_IO_BYTES: u32 = 64 << 20;

/// Largest emulated COMPARE AND WRITE, in blocks (SCSI's field is a byte).
const MAX_COMPARE_AND_WRITE_BLOCKS: u32 = 255;

/// Bytes per write of an emulated WRITE SAME.
const WRITE_SAME_CHUNK: usize = 1 << 20;

/// A regular file or block device.
#[derive(Debug)]
pub struct LocalDevice {
    file: Arc<File>,
    info: DeviceInfo,
    trim: TrimGate,
    /// Serialises emulated COMPARE AND WRITEs.
    caw: tokio::sync::Mutex<()>,
    /// Run system calls on the calling thread, not the blocking pool.
    inline: bool,
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
                // Only a writing run can create the file.
                _ if opts.write => {
                    return Err(open_error(
                        path,
                        "no such file or device (give --size to create a file)",
                    ));
                }
                _ => return Err(open_error(path, "no such file or device")),
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
        let align = (block_size as usize).max(crate::buf::DEFAULT_ALIGN);
        let caps = Capabilities {
            fua: false,
            unmap: true,
            unmap_zeroes: trim.zeroes,
            write_same: kind == Kind::BlockDevice,
            write_same_unmap: true,
            compare_and_write: true,
            compare_and_write_atomic: false,
        };
        let limits = Limits {
            max_transfer_bytes: MAX_IO_BYTES.max(block_size),
            max_unmap_blocks: 0,
            max_unmap_descriptors: u32::MAX,
            max_write_same_blocks: 0,
            max_compare_and_write_blocks: MAX_COMPARE_AND_WRITE_BLOCKS,
        };
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
                identity: None,
                limits,
                caps,
                negotiation_warnings: Vec::new(),
            },
            trim: TrimGate::default(),
            caw: tokio::sync::Mutex::new(()),
            inline: false,
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

    /// Runs the system calls on the calling thread (`true`) or on tokio's
    /// blocking pool (`false`, the default). Inline, a command blocks the
    /// thread that awaits it: for callers with one command in flight.
    pub fn set_inline(&mut self, inline: bool) {
        self.inline = inline;
    }

    /// Runs `f` with the file: inline, or on the blocking pool.
    async fn on_file<T: Send + 'static>(
        &self,
        f: impl FnOnce(&File) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        if self.inline {
            return Ok(f(&self.file));
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || f(&file)).await
    }

    /// Runs `f` with the file and the buffer, inline or on the blocking
    /// pool, and hands the buffer back.
    async fn with_buf<T: Send + 'static>(
        &self,
        mut buf: AlignedBuf,
        f: impl FnOnce(&File, &mut AlignedBuf) -> io::Result<T> + Send + 'static,
    ) -> (AlignedBuf, io::Result<T>) {
        if self.inline {
            let r = f(&self.file, &mut buf);
            return (buf, r);
        }
        let file = self.file.clone();
        blocking(buf, self.info.align, move |buf| f(&file, buf)).await
    }

    fn offset(&self, lba: u64) -> u64 {
        lba.saturating_mul(u64::from(self.info.block_size))
    }

    /// Runs a blocking system call on the pool; `what` names it in errors.
    async fn sys<T: Send + 'static>(
        &self,
        op: &'static str,
        lba: u64,
        blocks: u64,
        f: impl FnOnce(&File) -> io::Result<T> + Send + 'static,
    ) -> Result<T, DeviceError> {
        self.on_file(f)
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| DeviceError::io(op, lba, blocks, e))
    }

    /// Punches a hole (file) or discards (block device); `Ok(false)` when
    /// the system does not support it here.
    async fn deallocate(&self, lba: u64, blocks: u64) -> Result<bool, DeviceError> {
        let off = self.offset(lba);
        let len = blocks.saturating_mul(u64::from(self.info.block_size));
        let kind = self.info.kind;
        let r = self
            .on_file(move |file| match kind {
                Kind::BlockDevice => ioctl::discard(file.as_fd(), off, len),
                _ => fallocate(
                    file.as_fd(),
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    i64::try_from(off).unwrap_or(i64::MAX),
                    i64::try_from(len).unwrap_or(i64::MAX),
                ),
            })
            .await
            .map_err(|e| DeviceError::io("UNMAP", lba, blocks, e))?;
        match r {
            Ok(()) => Ok(true),
            Err(nix::Error::EOPNOTSUPP | nix::Error::ENOTTY | nix::Error::EINVAL) => Ok(false),
            Err(e) => Err(DeviceError::io("UNMAP", lba, blocks, errno(e))),
        }
    }

    /// Zeroes a range without writing data: `BLKZEROOUT`, or
    /// `fallocate(ZERO_RANGE)` / `PUNCH_HOLE`; `Ok(false)` when the system
    /// cannot, and the caller writes zeros.
    async fn zero_range(&self, lba: u64, blocks: u64, unmap: bool) -> Result<bool, DeviceError> {
        let off = self.offset(lba);
        let len = blocks.saturating_mul(u64::from(self.info.block_size));
        let kind = self.info.kind;
        let r = self
            .on_file(move |file| match kind {
                Kind::BlockDevice => ioctl::zero_out(file.as_fd(), off, len),
                _ => fallocate(
                    file.as_fd(),
                    if unmap {
                        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
                    } else {
                        FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE
                    },
                    i64::try_from(off).unwrap_or(i64::MAX),
                    i64::try_from(len).unwrap_or(i64::MAX),
                ),
            })
            .await
            .map_err(|e| DeviceError::io("WRITE SAME", lba, blocks, e))?;
        match r {
            Ok(()) => Ok(true),
            Err(nix::Error::EOPNOTSUPP | nix::Error::ENOTTY | nix::Error::EINVAL) => Ok(false),
            Err(e) => Err(DeviceError::io("WRITE SAME", lba, blocks, errno(e))),
        }
    }
}

impl Device for LocalDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    async fn read(&self, lba: u64, buf: AlignedBuf) -> IoResult {
        let blocks = match self.info.blocks_in("read", lba, buf.len()) {
            Ok(b) => b,
            Err(e) => return (buf, Err(e)),
        };
        let off = self.offset(lba);
        let (buf, r) = self
            .with_buf(buf, move |file, buf| file.read_exact_at(buf, off))
            .await;
        (buf, r.map_err(|e| DeviceError::io("read", lba, blocks, e)))
    }

    async fn write(&self, lba: u64, buf: AlignedBuf, fua: bool) -> IoResult {
        let op = if fua { "write (FUA)" } else { "write" };
        let blocks = match self.info.blocks_in(op, lba, buf.len()) {
            Ok(b) => b,
            Err(e) => return (buf, Err(e)),
        };
        let off = self.offset(lba);
        let (buf, r) = self
            .with_buf(buf, move |file, buf| {
                file.write_all_at(buf, off)?;
                if fua { file.sync_data() } else { Ok(()) }
            })
            .await;
        (buf, r.map_err(|e| DeviceError::io(op, lba, blocks, e)))
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        self.sys("fdatasync", 0, 0, |f| f.sync_data()).await
    }

    fn unmap_skip_reason(&self) -> Option<String> {
        self.trim.reason()
    }

    async fn unmap(&self, ranges: &[LbaRange]) -> Result<(), DeviceError> {
        if !self.trim.open() {
            return Err(self.trim.refusal());
        }
        for r in ranges {
            self.info.check_range("UNMAP", r.lba, r.blocks)?;
        }
        for r in ranges.iter().filter(|r| r.blocks > 0) {
            if !self.deallocate(r.lba, r.blocks).await? {
                let what = if self.info.kind == Kind::BlockDevice {
                    "BLKDISCARD"
                } else {
                    "fallocate(PUNCH_HOLE)"
                };
                return Err(self.trim.close(format!("{what} is not supported here")));
            }
        }
        Ok(())
    }

    async fn write_same(&self, lba: u64, blocks: u64, block: AlignedBuf, unmap: bool) -> IoResult {
        if let Err(e) = check_write_same(&self.info, lba, blocks, &block) {
            return (block, Err(e));
        }
        if blocks == 0 {
            return (block, Ok(()));
        }
        if block.iter().all(|&b| b == 0) {
            match self.zero_range(lba, blocks, unmap).await {
                Ok(true) => return (block, Ok(())),
                Ok(false) => {}
                Err(e) => return (block, Err(e)),
            }
        }
        // Written out: the block repeated over a chunk, chunk after chunk.
        let bs = self.info.block_size as usize;
        let per = (WRITE_SAME_CHUNK / bs).max(1) as u64;
        let mut chunk = AlignedBuf::new((per.min(blocks) as usize) * bs, self.info.align);
        for b in chunk.chunks_exact_mut(bs) {
            b.copy_from_slice(&block);
        }
        for (at, n) in pieces(lba, blocks, per) {
            chunk.set_len(n as usize * bs);
            let (c, r) = self.write(at, chunk, false).await;
            chunk = c;
            if let Err(e) = r {
                return (block, Err(e));
            }
        }
        (block, Ok(()))
    }

    async fn compare_and_write(&self, lba: u64, buf: AlignedBuf, fua: bool) -> IoResult {
        let n = match check_compare_and_write(&self.info, lba, buf.len()) {
            Ok(n) => n,
            Err(e) => return (buf, Err(e)),
        };
        let _one_at_a_time = self.caw.lock().await;
        let half = buf.len() / 2;
        let off = self.offset(lba);
        let align = self.info.align;
        let (buf, r) = self
            .with_buf(buf, move |file, buf| {
                let mut current = AlignedBuf::new(half, align);
                file.read_exact_at(&mut current, off)?;
                if let Some(i) = first_difference(&current, &buf[..half]) {
                    return Ok(Some(i));
                }
                file.write_all_at(&buf[half..], off)?;
                if fua {
                    file.sync_data()?;
                }
                Ok(None)
            })
            .await;
        let r = match r {
            Ok(None) => Ok(()),
            Ok(Some(i)) => Err(DeviceError::Check {
                op: "COMPARE AND WRITE",
                lba,
                blocks: n,
                sense: Sense::miscompare(i as u64),
            }),
            Err(e) => Err(DeviceError::io("COMPARE AND WRITE", lba, n, e)),
        };
        (buf, r)
    }

    async fn drop_cache(&self) -> Result<(), DeviceError> {
        if self.info.direct_io {
            return Ok(());
        }
        self.sys("posix_fadvise(DONTNEED)", 0, 0, |file| {
            file.sync_data()?;
            posix_fadvise(file.as_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
                .map_err(errno)
        })
        .await
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
async fn blocking<T: Send + 'static>(
    buf: AlignedBuf,
    align: usize,
    f: impl FnOnce(&mut AlignedBuf) -> io::Result<T> + Send + 'static,
) -> (AlignedBuf, io::Result<T>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: usize, v: u8) -> AlignedBuf {
        let mut b = AlignedBuf::new(n, 4096);
        b.fill(v);
        b
    }

    /// Every command on a real file (O_DIRECT where the file system has it).
    #[test]
    fn commands_on_a_real_file() {
        let dir =
            tempfile::tempdir_in(std::env::var_os("TMPDIR").unwrap_or("/var/tmp".into())).unwrap();
        let path = dir.path().join("dev.img");
        let opts = OpenOptions {
            write: true,
            force: true,
            create_size: Some(64 * 4096),
            ..OpenOptions::default()
        };
        let dev = LocalDevice::open(&path, &opts).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let bs = 4096;
            assert_eq!((dev.info().block_size, dev.info().blocks), (4096, 64));
            dev.write(0, filled(8 * bs, 0x11), true).await.1.unwrap();
            let (b, r) = dev.read(0, AlignedBuf::new(8 * bs, 4096)).await;
            r.unwrap();
            assert!(b.iter().all(|&x| x == 0x11));
            // WRITE SAME of a pattern, then of zeros with and without UNMAP.
            dev.write_same(8, 10, filled(bs, 0x5a), false)
                .await
                .1
                .unwrap();
            let (b, _) = dev.read(8, AlignedBuf::new(10 * bs, 4096)).await;
            assert!(b.iter().all(|&x| x == 0x5a));
            dev.write_same(0, 2, filled(bs, 0), true).await.1.unwrap();
            dev.write_same(2, 2, filled(bs, 0), false).await.1.unwrap();
            let (b, _) = dev.read(0, AlignedBuf::new(5 * bs, 4096)).await;
            assert!(b[..4 * bs].iter().all(|&x| x == 0));
            assert!(b[4 * bs..].iter().all(|&x| x == 0x11));
            // UNMAP of two ranges: holes read as zeros.
            dev.unmap(&[LbaRange::new(4, 1), LbaRange::new(9, 2)])
                .await
                .unwrap();
            let (b, _) = dev.read(8, AlignedBuf::new(4 * bs, 4096)).await;
            assert!(b[..bs].iter().all(|&x| x == 0x5a));
            assert!(b[bs..3 * bs].iter().all(|&x| x == 0));
            // COMPARE AND WRITE: a match writes, a mismatch names the byte.
            let mut caw = AlignedBuf::new(2 * bs, 4096);
            caw[..bs].fill(0x5a);
            caw[bs..].fill(0x77);
            dev.compare_and_write(8, caw, false).await.1.unwrap();
            let mut caw = AlignedBuf::new(2 * bs, 4096);
            caw[..bs].fill(0x77);
            caw[123] = 0;
            let (_, r) = dev.compare_and_write(8, caw, true).await;
            assert_eq!(r.unwrap_err().miscompare_offset(), Some(123));
            let (b, _) = dev.read(8, AlignedBuf::new(bs, 4096)).await;
            assert!(b.iter().all(|&x| x == 0x77));
            // Outside the device: refused before any I/O.
            let (_, r) = dev.write(63, filled(2 * bs, 1), false).await;
            assert!(r.is_err());
            dev.flush().await.unwrap();
        });
    }
}
