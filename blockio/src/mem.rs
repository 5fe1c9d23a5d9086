//! An in-memory block device with fault injection, for tests that need
//! neither a socket nor a file.
//!
//! It does every [`Device`] operation (READ, WRITE ±FUA, SYNCHRONIZE CACHE,
//! UNMAP with configurable zeroing, WRITE SAME ±UNMAP, COMPARE AND WRITE
//! with MISCOMPARE sense and offset as SBC-4 §5.3 has it), and can be told
//! to misbehave the ways real storage does, by [`FaultRule`]s:
//!
//! - [`Fault::DropWrite`] — acknowledge a write, store nothing (a lost
//!   write: the block keeps its old content);
//! - [`Fault::Misdirect`] — store a write at another LBA;
//! - [`Fault::FlipOnStore`] / [`Fault::FlipOnRead`] — flip one bit of the
//!   stored or of the returned data;
//! - [`Fault::StaleRead`] — return a block's previous content (what it held
//!   before its latest write);
//! - [`Fault::Fail`] — fail the command with CHECK CONDITION (any sense) or
//!   an I/O error, storing nothing;
//! - [`Fault::WriteSameUnmapIgnored`] — a WRITE SAME with the UNMAP bit is
//!   acknowledged and does nothing: the blocks keep their old content
//!   (neither deallocated to zeros, which LBPRZ promises, nor written);
//! - [`Fault::CompareAndWriteOnMiscompare`] — a COMPARE AND WRITE that
//!   miscompares reports MISCOMPARE but writes its data anyway.
//!
//! A rule applies to commands of its [`OpClass`] that overlap its LBA range,
//! optionally only the `nth` such command or every `every`-th, at most
//! `times` times; data faults touch only the blocks inside the range. Each
//! rule counts how often it fired ([`MemDevice::fired`]).
//!
//! Data is copied under one short lock per command; nothing here does
//! system I/O, so the lock is never held across I/O.
//!
//! ## Write-back cache and power loss
//!
//! [`MemDevice::write_back`] gives the device a volatile write cache (a
//! disk with WCE=1): writes, WRITE SAMEs and UNMAPs are acknowledged into
//! the cache and reach the media on SYNCHRONIZE CACHE, a FUA write goes to
//! the media at once. [`MemDevice::power_loss`] throws the cache away (every
//! block reads what the media holds) and fails every later command with an
//! I/O error until [`MemDevice::restore_power`];
//! [`MemDevice::power_loss_after_writes`] makes it happen by itself after
//! that many writes. [`MemDevice::lie_about_flush`] makes SYNCHRONIZE
//! CACHE succeed without writing anything to the media: a lying flush.
//! [`MemDevice::handle`] is a second handle on the same device, for a test
//! that gives the device away and pulls the plug from outside.

use std::ops::Range;
use std::sync::Mutex;

use iesp_proto::scsi::Sense;

use crate::{
    AlignedBuf, Capabilities, Device, DeviceError, DeviceInfo, IoResult, Kind, LbaRange, Limits,
    TrimMethod, TrimSupport, check_compare_and_write, check_write_same, first_difference,
    write_same_op,
};

/// What a rule does when it fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The write is acknowledged and not stored (blocks in the range).
    DropWrite,
    /// The whole write is stored at `to_lba` instead (if it fits).
    Misdirect { to_lba: u64 },
    /// Bit `bit` (modulo the block's bits) of the first block in the range
    /// is flipped before it is stored.
    FlipOnStore { bit: u64 },
    /// The same bit is flipped in the data returned by a read.
    FlipOnRead { bit: u64 },
    /// Reads of blocks in the range return their previous content.
    StaleRead,
    /// The command fails and changes nothing.
    Fail(Failure),
    /// A WRITE SAME with UNMAP is acknowledged and changes nothing (a
    /// target that drops the command when it sees the UNMAP bit). On a
    /// device with LBPRZ both a zero and a non-zero pattern must then read
    /// back as written, so a tester sees the old data.
    WriteSameUnmapIgnored,
    /// A COMPARE AND WRITE that miscompares stores its write data anyway
    /// (and still reports MISCOMPARE).
    CompareAndWriteOnMiscompare,
}

/// How a failed command fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// CHECK CONDITION with this sense data.
    Check(Sense),
    /// A transport or system error with this message.
    Io(String),
}

impl Fault {
    /// The commands this fault applies to unless the rule says otherwise.
    fn default_class(&self) -> OpClass {
        match self {
            Fault::DropWrite
            | Fault::Misdirect { .. }
            | Fault::FlipOnStore { .. }
            | Fault::WriteSameUnmapIgnored
            | Fault::CompareAndWriteOnMiscompare => OpClass::Write,
            Fault::FlipOnRead { .. } | Fault::StaleRead => OpClass::Read,
            Fault::Fail(_) => OpClass::Any,
        }
    }
}

/// Which commands a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    Read,
    /// WRITE, WRITE SAME, and the write of a COMPARE AND WRITE.
    Write,
    Flush,
    Unmap,
    /// Every command.
    Any,
}

/// When and where a [`Fault`] fires.
#[derive(Clone, Debug)]
pub struct FaultRule {
    pub fault: Fault,
    pub class: OpClass,
    /// LBAs the command must overlap (all when `None`).
    pub lbas: Option<Range<u64>>,
    /// Fire on the nth matching command only (1-based).
    pub nth: Option<u64>,
    /// Fire on every nth matching command.
    pub every: Option<u64>,
    /// Fire at most this many times.
    pub times: Option<u64>,
    seen: u64,
    fired: u64,
}

impl FaultRule {
    /// `fault` on every command of its natural class (reads for read
    /// faults, writes for write faults, any for failures).
    pub fn new(fault: Fault) -> FaultRule {
        FaultRule {
            class: fault.default_class(),
            fault,
            lbas: None,
            nth: None,
            every: None,
            times: None,
            seen: 0,
            fired: 0,
        }
    }

    /// Only commands that overlap `lbas`.
    pub fn lbas(mut self, lbas: Range<u64>) -> FaultRule {
        self.lbas = Some(lbas);
        self
    }

    /// Only commands of `class`.
    pub fn on(mut self, class: OpClass) -> FaultRule {
        self.class = class;
        self
    }

    /// Only the nth matching command (1-based).
    pub fn nth(mut self, n: u64) -> FaultRule {
        self.nth = Some(n);
        self
    }

    /// Every nth matching command.
    pub fn every(mut self, n: u64) -> FaultRule {
        self.every = Some(n.max(1));
        self
    }

    /// At most `n` times.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.times = Some(n);
        self
    }

    /// Whether the rule fires for this command (and counts it).
    fn fires(&mut self, class: OpClass, lba: u64, blocks: u64) -> bool {
        if self.class != OpClass::Any && self.class != class {
            return false;
        }
        if let Some(r) = &self.lbas
            && !(lba < r.end && r.start < lba.saturating_add(blocks.max(1)))
        {
            return false;
        }
        self.seen += 1;
        let due = self.nth.is_none_or(|n| n == self.seen)
            && self.every.is_none_or(|n| self.seen % n == 0)
            && self.times.is_none_or(|t| self.fired < t);
        if due {
            self.fired += 1;
        }
        due
    }

    /// The blocks of `lba..lba + blocks` inside the rule's range.
    fn span(&self, lba: u64, blocks: u64) -> Range<u64> {
        let end = lba + blocks;
        match &self.lbas {
            Some(r) => lba.max(r.start)..end.min(r.end),
            None => lba..end,
        }
    }
}

/// Shape and behaviour of a [`MemDevice`].
#[derive(Clone, Debug)]
pub struct MemOptions {
    pub block_size: u32,
    pub blocks: u64,
    /// Unmapped blocks read as zeros (LBPRZ=1); otherwise they keep their
    /// content (which a tester must then not rely on).
    pub unmap_zeroes: bool,
    /// The most bytes per READ or WRITE.
    pub max_io_bytes: u32,
    /// The most blocks one COMPARE AND WRITE compares.
    pub max_compare_and_write_blocks: u32,
}

impl Default for MemOptions {
    fn default() -> Self {
        MemOptions {
            block_size: 512,
            blocks: 2048,
            unmap_zeroes: true,
            max_io_bytes: 1 << 20,
            max_compare_and_write_blocks: 255,
        }
    }
}

#[derive(Debug)]
struct State {
    data: Vec<u8>,
    /// Each block's content before its latest write.
    previous: Vec<u8>,
    rules: Vec<FaultRule>,
    flushes: u64,
    /// The write-back model: what the media holds (`data` is what reads
    /// see, cache included); `None` for a write-through device.
    media: Option<Vec<u8>>,
    /// SYNCHRONIZE CACHE acknowledges without writing the cache back.
    lying_flush: bool,
    /// The power is off: every command fails.
    powered_off: bool,
    /// Writes left before the power fails by itself.
    power_loss_in: Option<u64>,
}

/// The in-memory device.
#[derive(Debug)]
pub struct MemDevice {
    info: DeviceInfo,
    state: std::sync::Arc<Mutex<State>>,
}

impl MemDevice {
    /// A zeroed device of `blocks` blocks of `block_size` bytes.
    pub fn new(blocks: u64, block_size: u32) -> MemDevice {
        MemDevice::with_options(MemOptions {
            blocks,
            block_size,
            ..MemOptions::default()
        })
    }

    pub fn with_options(o: MemOptions) -> MemDevice {
        let bs = o.block_size.max(1);
        let bytes = usize::try_from(o.blocks.saturating_mul(u64::from(bs))).unwrap_or(usize::MAX);
        let max_io = (o.max_io_bytes / bs).max(1) * bs;
        MemDevice {
            info: DeviceInfo {
                name: format!("memory:{}x{bs}", o.blocks),
                kind: Kind::Memory,
                block_size: bs,
                blocks: o.blocks,
                direct_io: false,
                max_io_bytes: max_io,
                align: crate::buf::DEFAULT_ALIGN,
                trim: TrimSupport {
                    method: TrimMethod::Memory,
                    zeroes: o.unmap_zeroes,
                    reason: if o.unmap_zeroes {
                        "in memory: unmapped blocks read as zeros".into()
                    } else {
                        "in memory: unmapped blocks keep unspecified content".into()
                    },
                },
                notes: Vec::new(),
                identity: None,
                limits: Limits {
                    max_transfer_bytes: max_io,
                    max_unmap_blocks: 0,
                    max_unmap_descriptors: u32::MAX,
                    max_write_same_blocks: 0,
                    max_compare_and_write_blocks: o.max_compare_and_write_blocks,
                },
                caps: Capabilities {
                    fua: true,
                    unmap: true,
                    unmap_zeroes: o.unmap_zeroes,
                    write_same: true,
                    write_same_unmap: true,
                    compare_and_write: o.max_compare_and_write_blocks > 0,
                    compare_and_write_atomic: true,
                },
                negotiation_warnings: Vec::new(),
            },
            state: std::sync::Arc::new(Mutex::new(State {
                data: vec![0; bytes],
                previous: vec![0; bytes],
                rules: Vec::new(),
                flushes: 0,
                media: None,
                lying_flush: false,
                powered_off: false,
                power_loss_in: None,
            })),
        }
    }

    /// A second handle on the same device (same data, rules and power).
    pub fn handle(&self) -> MemDevice {
        MemDevice {
            info: self.info.clone(),
            state: self.state.clone(),
        }
    }

    /// Gives the device a volatile write cache (see the module docs); what
    /// it holds now is on the media.
    pub fn write_back(self) -> MemDevice {
        {
            let mut s = self.lock();
            s.media = Some(s.data.clone());
        }
        self
    }

    /// SYNCHRONIZE CACHE succeeds without writing the cache to the media.
    pub fn lie_about_flush(&self, lie: bool) {
        self.lock().lying_flush = lie;
    }

    /// The power fails: the cache is lost (blocks read what the media
    /// holds) and every command fails until [`MemDevice::restore_power`].
    pub fn power_loss(&self) {
        Self::lose_power(&mut self.lock());
    }

    fn lose_power(s: &mut State) {
        if let Some(m) = &s.media {
            s.data.copy_from_slice(m);
        }
        s.powered_off = true;
        s.power_loss_in = None;
    }

    /// The power fails by itself after `writes` more writes are stored.
    pub fn power_loss_after_writes(&self, writes: u64) {
        self.lock().power_loss_in = Some(writes);
    }

    /// The power is back: commands work again, on what the media held.
    pub fn restore_power(&self) {
        self.lock().powered_off = false;
    }

    /// Whether the power is off.
    pub fn powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// An I/O error while the power is off.
    fn no_power(s: &State, op: &'static str, lba: u64, blocks: u64) -> Option<DeviceError> {
        s.powered_off
            .then(|| DeviceError::io(op, lba, blocks, "the device lost power"))
    }

    /// A write of `blocks` at `lba` was stored: counts down to a power
    /// loss; a FUA write also reaches the media.
    fn after_write(&self, s: &mut State, lba: u64, blocks: u64, fua: bool) {
        if fua {
            let r = self.bytes(lba, blocks);
            let State { data, media, .. } = s;
            if let Some(m) = media.as_mut() {
                m[r.clone()].copy_from_slice(&data[r]);
            }
        }
        if let Some(n) = s.power_loss_in.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                Self::lose_power(s);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule; returns its index for [`MemDevice::fired`].
    pub fn inject(&self, rule: FaultRule) -> usize {
        let mut s = self.lock();
        s.rules.push(rule);
        s.rules.len() - 1
    }

    /// Removes every rule.
    pub fn clear_faults(&self) {
        self.lock().rules.clear();
    }

    /// How often rule `index` fired.
    pub fn fired(&self, index: usize) -> u64 {
        self.lock().rules.get(index).map_or(0, |r| r.fired)
    }

    /// SYNCHRONIZE CACHEs so far.
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// The stored bytes of `blocks` blocks at `lba`, bypassing faults.
    pub fn peek(&self, lba: u64, blocks: u64) -> Vec<u8> {
        let r = self.bytes(lba, blocks);
        self.lock()
            .data
            .get(r)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// Stores `data` (whole blocks) at `lba`, bypassing faults and history.
    pub fn poke(&self, lba: u64, data: &[u8]) {
        let bs = self.info.block_size as usize;
        let r = self.bytes(lba, (data.len() / bs) as u64);
        if let Some(d) = self.lock().data.get_mut(r) {
            d.copy_from_slice(&data[..d.len()]);
        }
    }

    fn bytes(&self, lba: u64, blocks: u64) -> Range<usize> {
        let bs = self.info.block_size as usize;
        let a = usize::try_from(lba)
            .unwrap_or(usize::MAX)
            .saturating_mul(bs);
        let n = usize::try_from(blocks)
            .unwrap_or(usize::MAX)
            .saturating_mul(bs);
        a..a.saturating_add(n)
    }

    /// The first failure rule that fires for this command, as an error.
    fn failure(
        s: &mut State,
        op: &'static str,
        class: OpClass,
        lba: u64,
        blocks: u64,
    ) -> Option<DeviceError> {
        let mut out = None;
        for r in s.rules.iter_mut() {
            if let Fault::Fail(f) = &r.fault {
                let f = f.clone();
                if r.fires(class, lba, blocks) && out.is_none() {
                    out = Some(match f {
                        Failure::Check(sense) => DeviceError::Check {
                            op,
                            lba,
                            blocks,
                            sense,
                        },
                        Failure::Io(reason) => DeviceError::Io {
                            op,
                            lba,
                            blocks,
                            reason,
                        },
                    });
                }
            }
        }
        out
    }

    /// Whether a rule with exactly `fault` fires for this command.
    fn special(s: &mut State, fault: &Fault, lba: u64, blocks: u64) -> bool {
        let mut any = false;
        for r in s.rules.iter_mut().filter(|r| &r.fault == fault) {
            any |= r.fires(OpClass::Write, lba, blocks);
        }
        any
    }

    /// Stores `data` at `lba` through the write faults.
    fn store(&self, s: &mut State, lba: u64, data: &[u8]) {
        let bs = self.info.block_size as usize;
        let blocks = (data.len() / bs) as u64;
        let mut target = lba;
        let mut dropped: Vec<Range<u64>> = Vec::new();
        let mut flips: Vec<(u64, u64)> = Vec::new();
        for r in s.rules.iter_mut() {
            if matches!(
                r.fault,
                Fault::Fail(_)
                    | Fault::FlipOnRead { .. }
                    | Fault::StaleRead
                    | Fault::WriteSameUnmapIgnored
                    | Fault::CompareAndWriteOnMiscompare
            ) {
                continue;
            }
            if !r.fires(OpClass::Write, lba, blocks) {
                continue;
            }
            match r.fault {
                Fault::DropWrite => dropped.push(r.span(lba, blocks)),
                Fault::Misdirect { to_lba }
                    if to_lba
                        .checked_add(blocks)
                        .is_some_and(|e| e <= self.info.blocks) =>
                {
                    target = to_lba;
                }
                Fault::FlipOnStore { bit } => flips.push((r.span(lba, blocks).start, bit)),
                _ => {}
            }
        }
        for i in 0..blocks {
            if dropped.iter().any(|d| d.contains(&(lba + i))) {
                continue;
            }
            let at = self.bytes(target + i, 1);
            let src = &data[i as usize * bs..(i as usize + 1) * bs];
            let State { data, previous, .. } = s;
            if let (Some(p), Some(d)) = (previous.get_mut(at.clone()), data.get_mut(at)) {
                p.copy_from_slice(d);
                d.copy_from_slice(src);
                if let Some(&(_, bit)) = flips.iter().find(|&&(b, _)| b == lba + i) {
                    flip(d, bit);
                }
            }
        }
    }
}

/// Flips bit `bit` (modulo its bits) of `block`.
fn flip(block: &mut [u8], bit: u64) {
    let bits = (block.len() as u64) * 8;
    if bits == 0 {
        return;
    }
    let b = bit % bits;
    if let Some(byte) = block.get_mut((b / 8) as usize) {
        *byte ^= 1 << (b % 8);
    }
}

impl Device for MemDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    async fn read(&self, lba: u64, mut buf: AlignedBuf) -> IoResult {
        let blocks = match self.info.blocks_in("READ", lba, buf.len()) {
            Ok(b) => b,
            Err(e) => return (buf, Err(e)),
        };
        let bs = self.info.block_size as usize;
        let mut s = self.lock();
        if let Some(e) = Self::no_power(&s, "READ", lba, blocks) {
            return (buf, Err(e));
        }
        if let Some(e) = Self::failure(&mut s, "READ", OpClass::Read, lba, blocks) {
            return (buf, Err(e));
        }
        let r = self.bytes(lba, blocks);
        buf.copy_from_slice(&s.data[r]);
        let State {
            rules, previous, ..
        } = &mut *s;
        for rule in rules.iter_mut() {
            let fault = rule.fault.clone();
            if !matches!(fault, Fault::StaleRead | Fault::FlipOnRead { .. })
                || !rule.fires(OpClass::Read, lba, blocks)
            {
                continue;
            }
            let span = rule.span(lba, blocks);
            match fault {
                Fault::StaleRead => {
                    for b in span {
                        let i = (b - lba) as usize;
                        buf[i * bs..(i + 1) * bs].copy_from_slice(&previous[self.bytes(b, 1)]);
                    }
                }
                Fault::FlipOnRead { bit } => {
                    let i = (span.start - lba) as usize;
                    flip(&mut buf[i * bs..(i + 1) * bs], bit);
                }
                _ => {}
            }
        }
        (buf, Ok(()))
    }

    async fn write(&self, lba: u64, buf: AlignedBuf, fua: bool) -> IoResult {
        let blocks = match self.info.blocks_in("WRITE", lba, buf.len()) {
            Ok(b) => b,
            Err(e) => return (buf, Err(e)),
        };
        if buf.len() > self.info.max_io_bytes as usize {
            let e = DeviceError::io(
                "WRITE",
                lba,
                blocks,
                "larger than the device's transfer limit",
            );
            return (buf, Err(e));
        }
        let mut s = self.lock();
        if let Some(e) = Self::no_power(&s, "WRITE", lba, blocks) {
            return (buf, Err(e));
        }
        if let Some(e) = Self::failure(&mut s, "WRITE", OpClass::Write, lba, blocks) {
            return (buf, Err(e));
        }
        self.store(&mut s, lba, &buf);
        self.after_write(&mut s, lba, blocks, fua);
        drop(s);
        (buf, Ok(()))
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        let mut s = self.lock();
        if let Some(e) = Self::no_power(&s, "SYNCHRONIZE CACHE", 0, 0) {
            return Err(e);
        }
        if let Some(e) = Self::failure(&mut s, "SYNCHRONIZE CACHE", OpClass::Flush, 0, 0) {
            return Err(e);
        }
        s.flushes += 1;
        if !s.lying_flush {
            let State { data, media, .. } = &mut *s;
            if let Some(m) = media.as_mut() {
                m.copy_from_slice(data);
            }
        }
        Ok(())
    }

    async fn unmap(&self, ranges: &[LbaRange]) -> Result<(), DeviceError> {
        for r in ranges {
            self.info.check_range("UNMAP", r.lba, r.blocks)?;
        }
        let mut s = self.lock();
        if let Some(e) = Self::no_power(&s, "UNMAP", 0, 0) {
            return Err(e);
        }
        for r in ranges {
            if let Some(e) = Self::failure(&mut s, "UNMAP", OpClass::Unmap, r.lba, r.blocks) {
                return Err(e);
            }
        }
        if self.info.trim.zeroes {
            for r in ranges {
                let at = self.bytes(r.lba, r.blocks);
                let State { data, previous, .. } = &mut *s;
                previous[at.clone()].copy_from_slice(&data[at.clone()]);
                data[at].fill(0);
            }
        }
        Ok(())
    }

    async fn write_same(&self, lba: u64, blocks: u64, block: AlignedBuf, unmap: bool) -> IoResult {
        if let Err(e) = check_write_same(&self.info, lba, blocks, &block) {
            return (block, Err(e));
        }
        let op = write_same_op(unmap);
        let mut s = self.lock();
        if let Some(e) = Self::failure(&mut s, op, OpClass::Write, lba, blocks) {
            return (block, Err(e));
        }
        if unmap && Self::special(&mut s, &Fault::WriteSameUnmapIgnored, lba, blocks) {
            return (block, Ok(()));
        }
        // Block by block through the write faults (each block one store).
        for i in 0..blocks {
            self.store(&mut s, lba + i, &block);
        }
        drop(s);
        (block, Ok(()))
    }

    async fn compare_and_write(&self, lba: u64, buf: AlignedBuf, _fua: bool) -> IoResult {
        let n = match check_compare_and_write(&self.info, lba, buf.len()) {
            Ok(n) => n,
            Err(e) => return (buf, Err(e)),
        };
        let half = buf.len() / 2;
        let mut s = self.lock();
        if let Some(e) = Self::failure(&mut s, "COMPARE AND WRITE", OpClass::Write, lba, n) {
            return (buf, Err(e));
        }
        let diff = first_difference(&s.data[self.bytes(lba, n)], &buf[..half]);
        if let Some(i) = diff {
            if Self::special(&mut s, &Fault::CompareAndWriteOnMiscompare, lba, n) {
                self.store(&mut s, lba, &buf[half..]);
            }
            return (
                buf,
                Err(DeviceError::Check {
                    op: "COMPARE AND WRITE",
                    lba,
                    blocks: n,
                    sense: Sense::miscompare(i as u64),
                }),
            );
        }
        self.store(&mut s, lba, &buf[half..]);
        drop(s);
        (buf, Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iesp_proto::scsi::{Asc, SenseKey};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn filled(n: usize, v: u8) -> AlignedBuf {
        let mut b = AlignedBuf::new(n, 512);
        b.fill(v);
        b
    }

    #[test]
    fn reads_back_what_was_written() {
        rt().block_on(async {
            let d = MemDevice::new(16, 512);
            let (_, r) = d.write(3, filled(1024, 7), false).await;
            r.unwrap();
            let (b, r) = d.read(2, AlignedBuf::new(2048, 512)).await;
            r.unwrap();
            assert!(b[..512].iter().all(|&x| x == 0));
            assert!(b[512..1536].iter().all(|&x| x == 7));
            let (_, r) = d.read(15, AlignedBuf::new(1024, 512)).await;
            assert!(matches!(r, Err(DeviceError::Io { .. })), "{r:?}");
            d.flush().await.unwrap();
            assert_eq!(d.flushes(), 1);
        });
    }

    #[test]
    fn each_fault_does_what_it_says() {
        rt().block_on(async {
            let d = MemDevice::new(16, 512);
            d.write(0, filled(512 * 4, 1), false).await.1.unwrap();
            // Dropped write of block 1 only.
            let i = d.inject(FaultRule::new(Fault::DropWrite).lbas(1..2).nth(1));
            d.write(0, filled(512 * 4, 2), false).await.1.unwrap();
            assert_eq!(d.fired(i), 1);
            assert_eq!(d.peek(0, 1), vec![2; 512]);
            assert_eq!(d.peek(1, 1), vec![1; 512]);
            // Stale read of block 2: its previous content.
            d.clear_faults();
            d.inject(FaultRule::new(Fault::StaleRead).lbas(2..3));
            let (b, r) = d.read(2, AlignedBuf::new(1024, 512)).await;
            r.unwrap();
            assert!(b[..512].iter().all(|&x| x == 1) && b[512..].iter().all(|&x| x == 2));
            // Bit flips, on read and on store.
            d.clear_faults();
            d.inject(FaultRule::new(Fault::FlipOnRead { bit: 9 }));
            let (b, _) = d.read(0, AlignedBuf::new(512, 512)).await;
            assert_eq!(b[1], 2 ^ 2);
            assert_eq!(d.peek(0, 1)[1], 2);
            d.clear_faults();
            d.inject(FaultRule::new(Fault::FlipOnStore { bit: 0 }).lbas(5..6));
            d.write(4, filled(1024, 4), false).await.1.unwrap();
            assert_eq!(d.peek(4, 1)[0], 4);
            assert_eq!(d.peek(5, 1)[0], 5);
            // Misdirected.
            d.clear_faults();
            d.inject(FaultRule::new(Fault::Misdirect { to_lba: 10 }).nth(1));
            d.write(8, filled(512, 9), false).await.1.unwrap();
            assert_eq!(d.peek(8, 1), vec![0; 512]);
            assert_eq!(d.peek(10, 1), vec![9; 512]);
            // Failures: CHECK CONDITION and I/O error, nothing stored.
            d.clear_faults();
            let sense = Sense::medium_error(Asc(0x0c00), 12);
            d.inject(FaultRule::new(Fault::Fail(Failure::Check(sense.clone()))).lbas(12..13));
            let (_, r) = d.write(12, filled(512, 3), false).await;
            assert_eq!(r.unwrap_err().sense(), Some(&sense));
            assert_eq!(d.peek(12, 1), vec![0; 512]);
            d.clear_faults();
            d.inject(FaultRule::new(Fault::Fail(Failure::Io("gone".into()))).on(OpClass::Flush));
            assert!(matches!(d.flush().await, Err(DeviceError::Io { .. })));
            // every/times.
            d.clear_faults();
            let i = d.inject(FaultRule::new(Fault::DropWrite).every(2).times(2));
            for _ in 0..6 {
                d.write(0, filled(512, 1), false).await.1.unwrap();
            }
            assert_eq!(d.fired(i), 2);
        });
    }

    #[test]
    fn unmap_write_same_compare_and_write() {
        rt().block_on(async {
            let d = MemDevice::new(32, 512);
            d.write(0, filled(512 * 8, 5), false).await.1.unwrap();
            d.unmap(&[LbaRange::new(0, 2), LbaRange::new(4, 1)])
                .await
                .unwrap();
            assert_eq!(d.peek(1, 1), vec![0; 512]);
            assert_eq!(d.peek(2, 1), vec![5; 512]);
            assert_eq!(d.peek(4, 1), vec![0; 512]);
            d.write_same(10, 5, filled(512, 0xaa), false)
                .await
                .1
                .unwrap();
            assert_eq!(d.peek(10, 5), vec![0xaa; 512 * 5]);
            assert_eq!(d.peek(15, 1), vec![0; 512]);
            // Matching compare: written.
            let mut b = AlignedBuf::new(1024, 512);
            b[..512].fill(0xaa);
            b[512..].fill(0xbb);
            d.compare_and_write(10, b, false).await.1.unwrap();
            assert_eq!(d.peek(10, 1), vec![0xbb; 512]);
            // Mismatch at byte 100: MISCOMPARE, offset 100, nothing written.
            let mut b = AlignedBuf::new(1024, 512);
            b[..512].fill(0xaa);
            b[100] = 0;
            b[512..].fill(0xcc);
            let (_, r) = d.compare_and_write(11, b, false).await;
            let e = r.unwrap_err();
            assert_eq!(e.sense().map(|s| s.key), Some(SenseKey::MISCOMPARE));
            assert_eq!(e.miscompare_offset(), Some(100));
            assert_eq!(d.peek(11, 1), vec![0xaa; 512]);
            // Bad shapes.
            let (_, r) = d
                .compare_and_write(0, AlignedBuf::new(512, 512), false)
                .await;
            assert!(r.is_err());
            let (_, r) = d.write_same(0, 2, AlignedBuf::new(1024, 512), false).await;
            assert!(r.is_err());
        });
    }

    #[test]
    fn write_same_unmap_and_compare_and_write_faults() {
        rt().block_on(async {
            let d = MemDevice::new(16, 512);
            d.write(0, filled(512 * 4, 5), false).await.1.unwrap();
            let i = d.inject(FaultRule::new(Fault::WriteSameUnmapIgnored).lbas(1..2));
            // Ignored with UNMAP (the whole command), applied without.
            d.write_same(0, 2, filled(512, 0), true).await.1.unwrap();
            assert_eq!(d.peek(0, 2), vec![5; 1024]);
            d.write_same(2, 1, filled(512, 0), true).await.1.unwrap();
            assert_eq!(d.peek(2, 1), vec![0; 512], "outside the rule's range");
            d.write_same(0, 2, filled(512, 7), false).await.1.unwrap();
            assert_eq!(d.peek(0, 2), vec![7; 1024]);
            assert_eq!(d.fired(i), 1);
            d.clear_faults();
            let i = d.inject(FaultRule::new(Fault::CompareAndWriteOnMiscompare));
            let mut b = AlignedBuf::new(1024, 512);
            b[..512].fill(1);
            b[512..].fill(9);
            let (_, r) = d.compare_and_write(0, b, false).await;
            assert_eq!(r.unwrap_err().miscompare_offset(), Some(0));
            assert_eq!(d.peek(0, 1), vec![9; 512], "written despite the miscompare");
            assert_eq!(d.fired(i), 1);
        });
    }

    #[test]
    fn unmap_without_zeroing_keeps_content() {
        rt().block_on(async {
            let d = MemDevice::with_options(MemOptions {
                blocks: 4,
                unmap_zeroes: false,
                ..MemOptions::default()
            });
            d.write(0, filled(512, 5), false).await.1.unwrap();
            d.unmap(&[LbaRange::new(0, 1)]).await.unwrap();
            assert_eq!(d.peek(0, 1), vec![5; 512]);
            assert!(!d.info().trim.zeroes);
        });
    }
}
