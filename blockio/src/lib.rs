//! `iesp-blockio`: the one block-I/O layer under the tools that read and
//! write storage — `verify`, `fsx` and `bench` in `iesp-tools`, and the
//! conformance suite's data workloads in `iesp-testsuite`. It exists so that
//! there is one device abstraction, one seeded data generator, one block
//! format and one queue-depth loop, not a copy per tool.
//!
//! Dependencies point one way: this crate uses `iesp-proto` (CDBs, sense
//! data) and `iesp-initiator` (iSCSI sessions); `iesp-tools` and
//! `iesp-testsuite` use it. Nothing here manages peers or parses a command
//! line.
//!
//! ## Layout
//!
//! - [`Device`] — the trait: READ, WRITE (±FUA), SYNCHRONIZE CACHE, UNMAP
//!   (several ranges), WRITE SAME (±UNMAP), COMPARE AND WRITE, geometry
//!   ([`DeviceInfo`]), [`Limits`] and [`Capabilities`]; errors are
//!   [`DeviceError`], which keeps a CHECK CONDITION's sense data
//!   ([`DeviceError::Check`], e.g. MISCOMPARE with its offset, SBC-4 §5.3)
//!   apart from transport and system errors.
//! - [`AnyDevice`] — a device chosen at run time (path, `iscsi://` URL, or an
//!   in-memory device), dispatching without allocation.
//! - [`local`] — regular files and block devices: `O_DIRECT`
//!   `pread`/`pwrite` on aligned buffers, `BLKDISCARD`, `BLKZEROOUT`,
//!   `fallocate`, `fdatasync`.
//! - [`iscsi`] — a LUN through our initiator (SBC-4 commands).
//! - [`mem`] — an in-memory device with fault injection (dropped and
//!   misdirected writes, flipped bits, stale reads, failed commands), for
//!   tests that need neither a socket nor a file.
//! - [`safety`] — what makes a device unsafe to overwrite.
//! - [`pattern`] — the seeded, position-addressed data generator.
//! - [`block`] — the self-describing block format and mismatch classes.
//! - [`engine`] — the load engine: N commands in flight over a device,
//!   driven by a [`engine::Workload`], with each command's latency.
//! - [`buf`] — aligned buffers.
//!
//! ## Why a generic trait, not `dyn Device`
//!
//! [`Device`]'s operations return `impl Future + Send` (async functions in
//! traits). Such a trait is not object safe; an object-safe one would box
//! every command's future, one allocation per I/O on the data path that
//! `bench` measures. Code that picks a device at run time uses the
//! [`AnyDevice`] enum, which implements [`Device`] by matching.
//!
//! ## Concurrency
//!
//! Every operation takes `&self`, so one device shared by many tasks has
//! that many commands in flight: local I/O runs on tokio's blocking pool
//! (one thread per outstanding command), iSCSI commands are pipelined on
//! one session, the in-memory device copies under a short lock. Buffers are
//! passed by value and handed back ([`IoResult`]), so a caller reuses its
//! buffers and the steady state allocates nothing.

pub mod block;
pub mod buf;
pub mod engine;
mod ioctl;
pub mod iscsi;
pub mod local;
pub mod mem;
pub mod pattern;
pub mod safety;

use std::fmt;
use std::future::Future;
use std::io;

pub use buf::AlignedBuf;
pub use iesp_proto::scsi::Sense;

/// Initiator name used when none is given.
pub const DEFAULT_INITIATOR: &str = "iqn.2026-11.org.iesp-test:verify";

/// A data command's outcome, with the buffer handed back.
pub type IoResult = (AlignedBuf, Result<(), DeviceError>);

/// What kind of storage a [`Device`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    File,
    BlockDevice,
    IscsiLun,
    Memory,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "regular file",
            Kind::BlockDevice => "block device",
            Kind::IscsiLun => "iSCSI LUN",
            Kind::Memory => "in-memory device",
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
    /// The in-memory device's own.
    Memory,
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

/// What a device can do natively. Operations it cannot do natively are
/// still available through [`Device`] where they can be emulated (said
/// here); otherwise they fail with [`DeviceError::Unsupported`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// WRITE with FUA is native (else: the write, then a flush).
    pub fua: bool,
    /// UNMAP (or its local equivalent) deallocates.
    pub unmap: bool,
    /// Unmapped blocks read back as zeros (LBPRZ=1, SBC-4 §5.17).
    pub unmap_zeroes: bool,
    /// WRITE SAME is native (else: emulated with writes).
    pub write_same: bool,
    /// WRITE SAME with UNMAP may deallocate.
    pub write_same_unmap: bool,
    /// COMPARE AND WRITE is available.
    pub compare_and_write: bool,
    /// COMPARE AND WRITE is atomic against every other writer (a SCSI
    /// target's); an emulation is atomic only against other compare and
    /// writes through the same handle.
    pub compare_and_write_atomic: bool,
}

/// Size limits of one command (0: no limit given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes one READ or WRITE carries (also
    /// [`DeviceInfo::max_io_bytes`]).
    pub max_transfer_bytes: u32,
    /// The most blocks one UNMAP descriptor covers (0: any).
    pub max_unmap_blocks: u32,
    /// The most descriptors in one UNMAP command (larger lists are split).
    pub max_unmap_descriptors: u32,
    /// The most blocks one WRITE SAME covers (0: any; larger are split).
    pub max_write_same_blocks: u64,
    /// The most blocks one COMPARE AND WRITE compares (0: unsupported).
    pub max_compare_and_write_blocks: u32,
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
    /// The LUN's device identification (VPD page 0x83, hex), when it has
    /// one: what a state file records so it is never checked against
    /// another LUN (not in the reports).
    #[serde(skip)]
    pub identity: Option<String>,
    /// Per-command limits (not in the reports: their schema predates them).
    #[serde(skip)]
    pub limits: Limits,
    /// What is native (not in the reports either).
    #[serde(skip)]
    pub caps: Capabilities,
    /// Login answers outside the legal range that were clamped (lenient
    /// login, iSCSI LUNs only).
    pub negotiation_warnings: Vec<NegotiationWarning>,
}

/// A login key the target answered outside the legal range (RFC 7143
/// §6.2), and the value used instead: the initiator's own record.
pub use iesp_initiator::NegotiationWarning;

impl DeviceInfo {
    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }

    /// Checks that `lba..lba + blocks` lies inside the device.
    pub fn check_range(&self, op: &'static str, lba: u64, blocks: u64) -> Result<(), DeviceError> {
        if lba.checked_add(blocks).is_none_or(|end| end > self.blocks) {
            return Err(DeviceError::io(
                op,
                lba,
                blocks,
                format!("beyond the end of the device ({} blocks)", self.blocks),
            ));
        }
        Ok(())
    }

    /// The whole number of blocks in `len` bytes at `lba`, inside the
    /// device, or an error naming `op`.
    pub fn blocks_in(&self, op: &'static str, lba: u64, len: usize) -> Result<u64, DeviceError> {
        let bs = self.block_size as usize;
        let blocks = (len / bs.max(1)) as u64;
        if len % bs.max(1) != 0 {
            return Err(DeviceError::io(
                op,
                lba,
                blocks,
                format!("{len} bytes is not a whole number of {bs}-byte blocks"),
            ));
        }
        self.check_range(op, lba, blocks)?;
        Ok(blocks)
    }
}

/// A range of logical blocks (an UNMAP descriptor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LbaRange {
    pub lba: u64,
    pub blocks: u64,
}

impl LbaRange {
    pub fn new(lba: u64, blocks: u64) -> LbaRange {
        LbaRange { lba, blocks }
    }

    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.lba.saturating_add(self.blocks)
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
    /// iSCSI: busy-poll budget of the session's reader in microseconds
    /// (`LoginOptions::poll_us`); 0 is off.
    pub poll_us: u32,
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
            poll_us: 0,
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
    /// The command ended in CHECK CONDITION: the device answered, and
    /// said no (e.g. MISCOMPARE of a COMPARE AND WRITE, with the offset of
    /// the first differing byte in [`Sense::information`]).
    #[error("{op} at LBA {lba} ({blocks} blocks): CHECK CONDITION: {sense}")]
    Check {
        op: &'static str,
        lba: u64,
        blocks: u64,
        sense: Sense,
    },
    /// A read, write, trim or flush failed in transport or in the system
    /// (errno, lost session, timeout, other SCSI status).
    #[error("{op} at LBA {lba} ({blocks} blocks): {reason}")]
    Io {
        op: &'static str,
        lba: u64,
        blocks: u64,
        reason: String,
    },
    /// This device cannot do `op` (any more); the reason is for the
    /// output. Nothing changed on the device.
    #[error("{op} not available: {reason}")]
    Unsupported { op: &'static str, reason: String },
}

impl DeviceError {
    /// An [`DeviceError::Io`].
    pub fn io(op: &'static str, lba: u64, blocks: u64, e: impl fmt::Display) -> DeviceError {
        DeviceError::Io {
            op,
            lba,
            blocks,
            reason: e.to_string(),
        }
    }

    /// The operation that failed ("open" for open-time errors).
    pub fn op(&self) -> &'static str {
        match self {
            DeviceError::Check { op, .. }
            | DeviceError::Io { op, .. }
            | DeviceError::Unsupported { op, .. } => op,
            _ => "open",
        }
    }

    /// The sense data of a CHECK CONDITION.
    pub fn sense(&self) -> Option<&Sense> {
        match self {
            DeviceError::Check { sense, .. } => Some(sense),
            _ => None,
        }
    }

    /// The byte offset of the first miscompare, when this is a MISCOMPARE
    /// (SBC-4 §5.3: INFORMATION holds the offset from the start of the
    /// compared data).
    pub fn miscompare_offset(&self) -> Option<u64> {
        self.sense()
            .filter(|s| s.key == iesp_proto::scsi::SenseKey::MISCOMPARE)
            .map(|s| s.information.unwrap_or(0))
    }

    /// Whether this is [`DeviceError::Unsupported`].
    pub fn is_unsupported(&self) -> bool {
        matches!(self, DeviceError::Unsupported { .. })
    }
}

/// A block device: a file, a local block device, an iSCSI LUN or memory,
/// addressed in logical blocks of [`DeviceInfo::block_size`].
///
/// Data buffers hold whole blocks and are handed back with the outcome.
/// Ranges outside the device fail with [`DeviceError::Io`] before anything
/// is sent.
pub trait Device: Send + Sync {
    /// Geometry, limits and capabilities.
    fn info(&self) -> &DeviceInfo;

    /// READ: `buf.len()` bytes from `lba` into `buf`.
    fn read(&self, lba: u64, buf: AlignedBuf) -> impl Future<Output = IoResult> + Send;

    /// WRITE of `buf` at `lba`; with `fua` the data is durable when this
    /// completes (SBC-4 §5.40 FUA; emulated with a flush where not native).
    fn write(&self, lba: u64, buf: AlignedBuf, fua: bool) -> impl Future<Output = IoResult> + Send;

    /// SYNCHRONIZE CACHE / `fdatasync`: completed writes become durable.
    fn flush(&self) -> impl Future<Output = Result<(), DeviceError>> + Send;

    /// UNMAP of several ranges (split to the device's limits).
    /// [`DeviceError::Unsupported`] when the device cannot deallocate (then
    /// or from now on): the blocks are unchanged.
    fn unmap(&self, ranges: &[LbaRange]) -> impl Future<Output = Result<(), DeviceError>> + Send;

    /// WRITE SAME: `block` (one logical block) written to `blocks` blocks
    /// from `lba`. With `unmap` the device may deallocate instead where the
    /// data is what an unmapped block reads as (zeros with LBPRZ).
    fn write_same(
        &self,
        lba: u64,
        blocks: u64,
        block: AlignedBuf,
        unmap: bool,
    ) -> impl Future<Output = IoResult> + Send;

    /// COMPARE AND WRITE: `buf` holds `2n` blocks, the verify data then the
    /// write data. When the `n` blocks at `lba` equal the verify data they
    /// are replaced by the write data; otherwise nothing is written and the
    /// result is [`DeviceError::Check`] with MISCOMPARE and the offset of
    /// the first differing byte ([`DeviceError::miscompare_offset`]).
    fn compare_and_write(
        &self,
        lba: u64,
        buf: AlignedBuf,
        fua: bool,
    ) -> impl Future<Output = IoResult> + Send;

    /// Why unmaps are skipped, once they are.
    fn unmap_skip_reason(&self) -> Option<String> {
        None
    }

    /// Drops cached pages of a buffered local device so the next reads
    /// come from the medium; nothing to do elsewhere.
    fn drop_cache(&self) -> impl Future<Output = Result<(), DeviceError>> + Send {
        async { Ok(()) }
    }

    /// Closes the device (logs out of an iSCSI session it opened).
    fn close(self) -> impl Future<Output = Result<(), DeviceError>> + Send
    where
        Self: Sized,
    {
        async { Ok(()) }
    }
}

/// A device picked at run time.
#[derive(Debug)]
pub enum AnyDevice {
    Local(local::LocalDevice),
    Iscsi(iscsi::IscsiDevice),
    Memory(mem::MemDevice),
}

impl From<mem::MemDevice> for AnyDevice {
    fn from(d: mem::MemDevice) -> AnyDevice {
        AnyDevice::Memory(d)
    }
}

impl AnyDevice {
    /// A local device runs its system calls on the calling thread when
    /// `inline` (see [`local::LocalDevice::set_inline`]): for callers with
    /// one command in flight. Other devices ignore it.
    pub fn set_inline(&mut self, inline: bool) {
        if let AnyDevice::Local(d) = self {
            d.set_inline(inline);
        }
    }

    /// Opens `target`: an `iscsi://` URL, or a path to a regular file or a
    /// block device. For writing without `force`, also runs the
    /// [`safety`] checks and refuses with [`DeviceError::Refused`].
    pub async fn open(target: &str, opts: &OpenOptions) -> Result<AnyDevice, DeviceError> {
        // A mistyped URL (`iscsi:/x`, `http://…`) that is no file is a
        // usage error, not "no such file" (the text is not echoed: a URL
        // may carry a password).
        if !target.starts_with("iscsi://")
            && (target.contains("://") || target.starts_with("iscsi:"))
            && !std::path::Path::new(target).exists()
        {
            return Err(DeviceError::Usage {
                target: "TARGET".into(),
                reason: "neither a file nor an iscsi:// URL (iscsi://[user[%password]@]host[:port]/target-iqn/lun)".into(),
            });
        }
        let dev = if target.starts_with("iscsi://") {
            if opts.file_block_size.is_some() || opts.create_size.is_some() {
                return Err(DeviceError::Usage {
                    target: target.to_owned(),
                    reason:
                        "--block-size and --size apply to regular files only; a LUN reports its own"
                            .into(),
                });
            }
            AnyDevice::Iscsi(iscsi::IscsiDevice::open(target, opts).await?)
        } else {
            let path = std::path::PathBuf::from(target);
            let opts = opts.clone();
            let dev = tokio::task::spawn_blocking(move || local::LocalDevice::open(&path, &opts))
                .await
                .map_err(|e| DeviceError::Open {
                    target: target.to_owned(),
                    reason: e.to_string(),
                })??;
            AnyDevice::Local(dev)
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
}

macro_rules! each {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            AnyDevice::Local($d) => $e,
            AnyDevice::Iscsi($d) => $e,
            AnyDevice::Memory($d) => $e,
        }
    };
}

impl Device for AnyDevice {
    fn info(&self) -> &DeviceInfo {
        each!(self, d => d.info())
    }

    async fn read(&self, lba: u64, buf: AlignedBuf) -> IoResult {
        each!(self, d => d.read(lba, buf).await)
    }

    async fn write(&self, lba: u64, buf: AlignedBuf, fua: bool) -> IoResult {
        each!(self, d => d.write(lba, buf, fua).await)
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        each!(self, d => d.flush().await)
    }

    async fn unmap(&self, ranges: &[LbaRange]) -> Result<(), DeviceError> {
        each!(self, d => d.unmap(ranges).await)
    }

    async fn write_same(&self, lba: u64, blocks: u64, block: AlignedBuf, unmap: bool) -> IoResult {
        each!(self, d => d.write_same(lba, blocks, block, unmap).await)
    }

    async fn compare_and_write(&self, lba: u64, buf: AlignedBuf, fua: bool) -> IoResult {
        each!(self, d => d.compare_and_write(lba, buf, fua).await)
    }

    fn unmap_skip_reason(&self) -> Option<String> {
        each!(self, d => d.unmap_skip_reason())
    }

    async fn drop_cache(&self) -> Result<(), DeviceError> {
        each!(self, d => d.drop_cache().await)
    }

    async fn close(self) -> Result<(), DeviceError> {
        each!(self, d => d.close().await)
    }
}

/// Checks a WRITE SAME's arguments: one block of data, a range inside.
fn check_write_same(
    info: &DeviceInfo,
    lba: u64,
    blocks: u64,
    block: &[u8],
) -> Result<(), DeviceError> {
    if block.len() != info.block_size as usize {
        return Err(DeviceError::io(
            "WRITE SAME",
            lba,
            blocks,
            format!(
                "{} bytes of data: one {}-byte block needed",
                block.len(),
                info.block_size
            ),
        ));
    }
    info.check_range("WRITE SAME", lba, blocks)
}

/// The operation a WRITE SAME's errors name: with or without the UNMAP bit.
fn write_same_op(unmap: bool) -> &'static str {
    if unmap {
        "WRITE SAME (UNMAP)"
    } else {
        "WRITE SAME"
    }
}

/// `blocks` blocks from `lba` in pieces of at most `per` (at least 1)
/// blocks, in order: `(first LBA, blocks)`. The range must not overflow
/// (a checked range never does).
fn pieces(lba: u64, blocks: u64, per: u64) -> impl Iterator<Item = (u64, u64)> {
    let (end, per) = (lba.saturating_add(blocks), per.max(1));
    (lba..end)
        .step_by(usize::try_from(per).unwrap_or(usize::MAX))
        .map(move |at| (at, per.min(end - at)))
}

/// Checks a COMPARE AND WRITE's buffer: `2n` whole blocks, `n > 0`, inside
/// the device and the limit. Returns `n`.
fn check_compare_and_write(info: &DeviceInfo, lba: u64, len: usize) -> Result<u64, DeviceError> {
    let bs = info.block_size as usize;
    if len == 0 || len % (2 * bs) != 0 {
        return Err(DeviceError::io(
            "COMPARE AND WRITE",
            lba,
            0,
            format!("{len} bytes: not 2n whole {bs}-byte blocks"),
        ));
    }
    let n = (len / (2 * bs)) as u64;
    let max = u64::from(info.limits.max_compare_and_write_blocks);
    if max > 0 && n > max {
        return Err(DeviceError::io(
            "COMPARE AND WRITE",
            lba,
            n,
            format!("more than the device's {max} blocks per command"),
        ));
    }
    info.check_range("COMPARE AND WRITE", lba, n)?;
    Ok(n)
}

/// The first differing byte of two equally long slices.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Keeps the first unmap refusal, for the output.
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
        DeviceError::Unsupported {
            op: "UNMAP",
            reason: r.clone().unwrap_or(reason),
        }
    }

    fn refusal(&self) -> DeviceError {
        DeviceError::Unsupported {
            op: "UNMAP",
            reason: self.reason().unwrap_or_default(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range_in_order() {
        let v: Vec<_> = pieces(10, 7, 3).collect();
        assert_eq!(v, vec![(10, 3), (13, 3), (16, 1)]);
        assert_eq!(pieces(5, 0, 3).count(), 0);
        assert_eq!(pieces(0, 4, 0).count(), 4, "per 0 counts as 1");
        let big: Vec<_> = pieces(u64::MAX - 2, 2, u64::MAX).collect();
        assert_eq!(big, vec![(u64::MAX - 2, 2)]);
    }
}
