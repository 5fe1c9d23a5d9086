//! One block-device abstraction for the tools that read and write storage
//! (verify today; fsx and bench next): a regular file, a local block device
//! or an iSCSI logical unit, addressed in logical blocks.
//!
//! - [`local`] — files and block devices: `O_DIRECT` with aligned buffers
//!   where the file system allows it (buffered I/O otherwise, said so in
//!   [`DeviceInfo::notes`]), geometry from `BLKSSZGET`/`BLKGETSIZE64`,
//!   trim by `fallocate(PUNCH_HOLE)` or `BLKDISCARD`, `fdatasync`.
//! - [`iscsi`] — a LUN through our initiator: geometry and provisioning from
//!   READ CAPACITY (16) (SBC-4 §5.17), trim by UNMAP (SBC-4 §5.31) when
//!   LBPME=1, SYNCHRONIZE CACHE.
//! - [`safety`] — what makes a device unsafe to overwrite: mounted, in use,
//!   holding a partition table or a file system signature.
//! - [`buf`] — aligned buffers.
//!
//! Every operation takes `&self`, so one [`Device`] shared by many tasks has
//! that many commands in flight: local I/O runs on tokio's blocking pool
//! (one thread per outstanding command), iSCSI commands are pipelined on
//! one session. Buffers are passed by value and handed back, so a worker
//! reuses its buffers and the steady state allocates nothing.

pub mod buf;
mod ioctl;
pub mod iscsi;
pub mod local;
pub mod safety;

use std::fmt;
use std::io;

pub use buf::AlignedBuf;

/// Initiator name used when none is given.
pub const DEFAULT_INITIATOR: &str = "iqn.2026-11.org.iesp-test:verify";

/// What kind of storage a [`Device`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    File,
    BlockDevice,
    IscsiLun,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "regular file",
            Kind::BlockDevice => "block device",
            Kind::IscsiLun => "iSCSI LUN",
        })
    }
}

/// How a device deallocates blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrimMethod {
    /// `fallocate(FALLOC_FL_PUNCH_HOLE)` on a regular file.
    PunchHole,
    /// `BLKDISCARD` on a block device.
    Discard,
    /// SCSI UNMAP.
    Unmap,
    /// Not available; [`TrimSupport::reason`] says why.
    None,
}

/// Whether and how trims work, and what a trimmed block reads back as.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrimSupport {
    pub method: TrimMethod,
    /// Trimmed blocks are promised to read back as zeros (LBPRZ=1, a hole
    /// in a file); otherwise their content is unspecified.
    pub zeroes: bool,
    /// A sentence for the output: why not, or what the promise rests on.
    pub reason: String,
}

/// Geometry and capabilities, known once the device is open.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    /// The path or URL (password masked).
    pub name: String,
    pub kind: Kind,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Number of logical blocks.
    pub blocks: u64,
    /// Local I/O bypasses the page cache (`O_DIRECT`).
    pub direct_io: bool,
    /// The most bytes one command may carry.
    pub max_io_bytes: u32,
    /// Buffer alignment the device needs.
    pub align: usize,
    pub trim: TrimSupport,
    /// Things the user should know (fallbacks, ignored tails, limits).
    pub notes: Vec<String>,
    /// Login answers outside the legal range that were clamped (lenient
    /// login, iSCSI LUNs only).
    pub negotiation_warnings: Vec<NegotiationWarning>,
}

/// A login key the target answered outside the legal range (RFC 7143
/// §6.2), and the value used instead.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NegotiationWarning {
    pub key: String,
    pub offered: String,
    pub answered: String,
    pub used: String,
    pub reason: String,
}

impl std::fmt::Display for NegotiationWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the target answered {}={} to our offer {}: {}; using {}",
            self.key, self.answered, self.offered, self.reason, self.used
        )
    }
}

impl DeviceInfo {
    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// How to open a device.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Open for writing (and apply the safety checks unless `force`).
    pub write: bool,
    /// Skip the safety checks and the exclusive open.
    pub force: bool,
    /// Block size for a regular file (devices and LUNs report their own).
    pub file_block_size: Option<u32>,
    /// Create a missing regular file of this many bytes (sparse).
    pub create_size: Option<u64>,
    /// Use `O_DIRECT` when possible (the default).
    pub direct: bool,
    /// iSCSI initiator name.
    pub initiator_name: String,
    /// iSCSI: how long the TCP connect may take.
    pub connect_timeout: std::time::Duration,
    /// iSCSI: fail the login on an answer outside the legal range instead
    /// of clamping it with a warning.
    pub strict_negotiation: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            write: false,
            force: false,
            file_block_size: None,
            create_size: None,
            direct: true,
            initiator_name: DEFAULT_INITIATOR.to_owned(),
            connect_timeout: iesp_initiator::DEFAULT_CONNECT_TIMEOUT,
            strict_negotiation: false,
        }
    }
}

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The target string or an option does not fit this device.
    #[error("{target}: {reason}")]
    Usage { target: String, reason: String },
    /// The device could not be opened or logged in to.
    #[error("cannot open {target}: {reason}")]
    Open { target: String, reason: String },
    /// The safety checks found something; nothing was written.
    #[error("refusing to write to {target}: {}; use --force to write anyway", reasons.join("; "))]
    Refused {
        target: String,
        reasons: Vec<String>,
    },
    /// A read, write, trim or flush failed.
    #[error("{op} at LBA {lba} ({blocks} blocks): {reason}")]
    Io {
        op: &'static str,
        lba: u64,
        blocks: u64,
        reason: String,
    },
    /// This device cannot trim (any more); the reason is for the output.
    #[error("trim not available: {0}")]
    TrimUnsupported(String),
}

impl DeviceError {
    fn io(op: &'static str, lba: u64, blocks: u64, e: impl fmt::Display) -> DeviceError {
        DeviceError::Io {
            op,
            lba,
            blocks,
            reason: e.to_string(),
        }
    }
}

/// An open file, block device or LUN.
#[derive(Debug)]
pub enum Device {
    Local(local::LocalDevice),
    Iscsi(iscsi::IscsiDevice),
}

impl Device {
    /// Opens `target`: an `iscsi://` URL, or a path to a regular file or a
    /// block device. For writing without `force`, also runs the
    /// [`safety`] checks and refuses with [`DeviceError::Refused`].
    pub async fn open(target: &str, opts: &OpenOptions) -> Result<Device, DeviceError> {
        let dev = if target.starts_with("iscsi://") {
            if opts.file_block_size.is_some() || opts.create_size.is_some() {
                return Err(DeviceError::Usage {
                    target: target.to_owned(),
                    reason:
                        "--block-size and --size apply to regular files only; a LUN reports its own"
                            .into(),
                });
            }
            Device::Iscsi(iscsi::IscsiDevice::open(target, opts).await?)
        } else {
            let path = std::path::PathBuf::from(target);
            let opts = opts.clone();
            let dev = tokio::task::spawn_blocking(move || local::LocalDevice::open(&path, &opts))
                .await
                .map_err(|e| DeviceError::Open {
                    target: target.to_owned(),
                    reason: e.to_string(),
                })??;
            Device::Local(dev)
        };
        if opts.write && !opts.force {
            let found = safety::signatures_on(&dev).await?;
            if !found.is_empty() {
                return Err(DeviceError::Refused {
                    target: dev.info().name.clone(),
                    reasons: found,
                });
            }
        }
        Ok(dev)
    }

    pub fn info(&self) -> &DeviceInfo {
        match self {
            Device::Local(d) => d.info(),
            Device::Iscsi(d) => d.info(),
        }
    }

    /// Reads `buf.len()` bytes (whole blocks) from `lba` into `buf`.
    pub async fn read(&self, lba: u64, buf: AlignedBuf) -> (AlignedBuf, Result<(), DeviceError>) {
        match self {
            Device::Local(d) => d.read(lba, buf).await,
            Device::Iscsi(d) => d.read(lba, buf).await,
        }
    }

    /// Writes `buf` (whole blocks) at `lba`.
    pub async fn write(&self, lba: u64, buf: AlignedBuf) -> (AlignedBuf, Result<(), DeviceError>) {
        match self {
            Device::Local(d) => d.write(lba, buf).await,
            Device::Iscsi(d) => d.write(lba, buf).await,
        }
    }

    /// Deallocates `blocks` blocks at `lba`. [`DeviceError::TrimUnsupported`]
    /// when the device cannot (then or from now on): the blocks are
    /// unchanged and the caller should count the trim as skipped.
    pub async fn trim(&self, lba: u64, blocks: u64) -> Result<(), DeviceError> {
        match self {
            Device::Local(d) => d.trim(lba, blocks).await,
            Device::Iscsi(d) => d.trim(lba, blocks).await,
        }
    }

    /// Why trims are skipped, once they are.
    pub fn trim_skip_reason(&self) -> Option<String> {
        match self {
            Device::Local(d) => d.trim_skip_reason(),
            Device::Iscsi(d) => d.trim_skip_reason(),
        }
    }

    /// Makes completed writes durable: `fdatasync` or SYNCHRONIZE CACHE.
    pub async fn flush(&self) -> Result<(), DeviceError> {
        match self {
            Device::Local(d) => d.flush().await,
            Device::Iscsi(d) => d.flush().await,
        }
    }

    /// Drops cached pages of a buffered local device so the next reads
    /// come from the medium; nothing to do for `O_DIRECT` or a LUN.
    pub async fn drop_cache(&self) -> Result<(), DeviceError> {
        match self {
            Device::Local(d) => d.drop_cache().await,
            Device::Iscsi(_) => Ok(()),
        }
    }

    /// Closes the device (logs out of an iSCSI session).
    pub async fn close(self) -> Result<(), DeviceError> {
        match self {
            Device::Local(_) => Ok(()),
            Device::Iscsi(d) => d.close().await,
        }
    }
}

/// Keeps the first trim refusal, for the output.
#[derive(Debug, Default)]
struct TrimGate {
    off: std::sync::atomic::AtomicBool,
    reason: std::sync::Mutex<Option<String>>,
}

impl TrimGate {
    fn open(&self) -> bool {
        !self.off.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn close(&self, reason: String) -> DeviceError {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason.clone());
        }
        self.off.store(true, std::sync::atomic::Ordering::Relaxed);
        DeviceError::TrimUnsupported(r.clone().unwrap_or(reason))
    }

    fn reason(&self) -> Option<String> {
        if self.open() {
            None
        } else {
            self.reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        }
    }
}

/// An errno from nix as an io::Error, for messages.
fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}
