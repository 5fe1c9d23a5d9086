//! The machinery every verify mode shares: the run context (device, stamp,
//! counters, limits, stop flags), comparing a range read back against what
//! it should hold, and the striped sweep that writes or reads a range with
//! `workers × queue depth` commands in flight — a [`Workload`] of the
//! shared load engine, [`iesp_blockio::engine`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::verify::report::{
    IoErrorRecord, MAX_IO_ERROR_RECORDS, MAX_MISMATCH_RECORDS, MismatchRecord, Report, Stats,
};
use crate::verify::state::{BlockState, StateKind, StateTable};
use iesp_blockio::block::{self, Expected, Stamp};
use iesp_blockio::engine::{self, Completion, Op, Workload};
use iesp_blockio::{AlignedBuf, AnyDevice, Device, DeviceError};

/// When to stop.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub duration: Option<Duration>,
    /// Bytes written (read, in check mode).
    pub bytes: Option<u64>,
    pub verified_percent: Option<f64>,
    /// I/O errors after which the run gives up.
    pub max_io_errors: u64,
}

/// Everything a worker needs, shared.
pub struct Ctx {
    /// Shared with the engine's slot tasks.
    pub dev: Arc<AnyDevice>,
    pub stamp: Stamp,
    pub first_lba: u64,
    pub blocks: u64,
    /// Blocks per command.
    pub io_blocks: u32,
    pub workers: usize,
    pub queue_depth: usize,
    /// Trimmed blocks read as zeros on this device.
    pub trim_zeroes: bool,
    /// The rendered duplicate-content blocks, by variant.
    pub duplicates: Vec<Vec<u8>>,
    pub stats: Stats,
    pub report: Mutex<Report>,
    pub limits: Limits,
    pub started: Instant,
    /// Time spent in write and read phases of sequential passes and checks
    /// (random mode mixes both: it uses the elapsed time).
    pub write_nanos: AtomicU64,
    pub read_nanos: AtomicU64,
    stop_writing: AtomicBool,
    abort: AtomicBool,
    stop_reason: Mutex<Option<String>>,
    /// Current phase for the progress display: name, total bytes, and the
    /// byte counters at its start.
    pub phase: Mutex<Phase>,
}

#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub name: String,
    /// Bytes the phase covers.
    pub total: u64,
    /// What its progress counts.
    pub counter: Counter,
    /// The counter's value at the start.
    pub base: u64,
}

/// What a phase's progress counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Counter {
    #[default]
    Written,
    Read,
    /// Bytes of distinct blocks verified (random mode).
    Verified,
}

/// Where a block's expectation comes from.
#[derive(Clone)]
pub enum Expect {
    /// The same for every block.
    Uniform(BlockState),
    /// Per block.
    Table(Arc<StateTable>),
    /// Per block, with what was durable (a check after a possible power
    /// loss); `provisional` when the state was saved while the run went on.
    Durable {
        current: Arc<StateTable>,
        durable: Arc<StateTable>,
        provisional: bool,
    },
}

impl Expect {
    pub fn get(&self, lba: u64) -> BlockState {
        match self {
            Expect::Uniform(s) => *s,
            Expect::Table(t) => t.get(lba),
            Expect::Durable { current, .. } => current.get(lba),
        }
    }
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dev: AnyDevice,
        stamp: Stamp,
        first_lba: u64,
        blocks: u64,
        io_blocks: u32,
        workers: usize,
        queue_depth: usize,
        limits: Limits,
    ) -> Ctx {
        let bs = stamp.block_size as usize;
        let duplicates = (0..block::DUPLICATE_VARIANTS)
            .map(|v| {
                let mut b = vec![0u8; bs];
                block::render_duplicate(&stamp, v, &mut b);
                b
            })
            .collect();
        let trim_zeroes = dev.info().trim.zeroes;
        Ctx {
            dev: Arc::new(dev),
            stamp,
            first_lba,
            blocks,
            io_blocks: io_blocks.max(1),
            workers: workers.max(1),
            queue_depth: queue_depth.max(1),
            trim_zeroes,
            duplicates,
            stats: Stats::default(),
            report: Mutex::new(Report::default()),
            limits,
            started: Instant::now(),
            write_nanos: AtomicU64::new(0),
            read_nanos: AtomicU64::new(0),
            stop_writing: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            stop_reason: Mutex::new(None),
            phase: Mutex::new(Phase::default()),
        }
    }

    pub fn bs(&self) -> usize {
        self.stamp.block_size as usize
    }

    pub fn io_bytes(&self) -> usize {
        self.io_blocks as usize * self.bs()
    }

    /// A buffer for one command.
    pub fn buffer(&self) -> AlignedBuf {
        AlignedBuf::new(self.io_bytes(), self.dev.info().align)
    }

    pub fn set_phase(&self, name: &str, total: u64, counter: Counter) {
        let base = self.count(counter);
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = Phase {
            name: name.to_owned(),
            total,
            counter,
            base,
        };
    }

    /// The value of a progress counter now.
    pub fn count(&self, counter: Counter) -> u64 {
        match counter {
            Counter::Written => Stats::get(&self.stats.bytes_written),
            Counter::Read => Stats::get(&self.stats.bytes_read),
            Counter::Verified => Stats::get(&self.stats.distinct_verified) * self.bs() as u64,
        }
    }

    fn stop(&self, flag: &AtomicBool, reason: String) {
        let mut r = self.stop_reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        flag.store(true, Ordering::Relaxed);
    }

    /// Stops everything (Ctrl-C, too many errors).
    pub fn abort(&self, reason: String) {
        self.stop(&self.abort, reason);
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    pub fn stop_reason(&self) -> Option<String> {
        self.stop_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn verified_percent(&self) -> f64 {
        if self.blocks == 0 {
            return 0.0;
        }
        Stats::get(&self.stats.distinct_verified) as f64 * 100.0 / self.blocks as f64
    }

    /// Whether to start another write (or, in check mode, another read):
    /// false once aborted or a limit is reached, which it records.
    pub fn keep_going(&self, counted: &AtomicU64) -> bool {
        if self.aborted() || self.stop_writing.load(Ordering::Relaxed) {
            return false;
        }
        let l = &self.limits;
        let reason = if l.duration.is_some_and(|d| self.started.elapsed() >= d) {
            Some(format!(
                "--duration {:?} reached",
                l.duration.unwrap_or_default()
            ))
        } else if l.bytes.is_some_and(|b| Stats::get(counted) >= b) {
            Some(format!("--bytes {} reached", l.bytes.unwrap_or_default()))
        } else if l
            .verified_percent
            .is_some_and(|p| self.verified_percent() >= p)
        {
            Some(format!(
                "--verified-percent {} reached",
                l.verified_percent.unwrap_or_default()
            ))
        } else {
            None
        };
        match reason {
            Some(r) => {
                self.stop(&self.stop_writing, r);
                false
            }
            None => true,
        }
    }

    /// Counts an I/O error and keeps its message; aborts after too many.
    pub fn io_error(&self, e: &DeviceError) {
        let n = self.stats.io_errors.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
            if r.io_errors.len() < MAX_IO_ERROR_RECORDS {
                r.io_errors.push(IoErrorRecord {
                    op: e.op().to_owned(),
                    message: e.to_string(),
                });
            }
        }
        if n >= self.limits.max_io_errors.max(1) {
            self.abort(format!("{n} I/O errors"));
        }
    }

    /// Renders into `expected` what blocks `lba..` should hold and compares
    /// them with `found`, block by block: counts matches, records
    /// mismatches, and calls `on_verified` for each matching block.
    pub fn compare(
        &self,
        lba: u64,
        found: &[u8],
        expected: &mut [u8],
        expect: &Expect,
        mut on_verified: impl FnMut(u64),
    ) {
        let bs = self.bs();
        let n = found.len() / bs;
        // Fast path: one generation over the whole range, checked without
        // rendering it.
        if let Expect::Uniform(st) = expect
            && st.kind() == StateKind::Unique
        {
            if block::is_unique_run(&self.stamp, lba, st.generation(), found) {
                Stats::add(&self.stats.blocks_verified, n as u64);
                (0..n as u64).for_each(|i| on_verified(lba + i));
                return;
            }
            block::render_unique(&self.stamp, lba, st.generation(), expected);
        } else {
            self.render_expected(lba, expected, expect);
        }
        for i in 0..n {
            let at = lba + i as u64;
            let Some(want) = expect.get(at).expected(at, self.trim_zeroes) else {
                Stats::add(&self.stats.blocks_unverifiable, 1);
                continue;
            };
            let (e, f) = (
                &expected[i * bs..(i + 1) * bs],
                &found[i * bs..(i + 1) * bs],
            );
            if e == f {
                Stats::add(&self.stats.blocks_verified, 1);
                on_verified(at);
            } else if let Expect::Durable {
                current,
                durable,
                provisional,
            } = expect
            {
                self.durable_mismatch(at, &want, e, f, current, durable, *provisional);
            } else {
                self.mismatch(at, &want, e, f);
            }
        }
    }

    /// A block that is not its latest write, judged by the durability
    /// model: its durable content (legally lost), a newer write of this run
    /// than a provisional state knows (rewritten after the save), or a
    /// mismatch — of a flushed write when the latest write was durable.
    #[allow(clippy::too_many_arguments)]
    fn durable_mismatch(
        &self,
        at: u64,
        want: &Expected,
        e: &[u8],
        f: &[u8],
        current: &StateTable,
        durable: &StateTable,
        provisional: bool,
    ) {
        let (cur, dur) = (current.get(at).content(), durable.get(at).content());
        if dur != cur && dur.kind() == StateKind::Unknown {
            // Never flushed: what the block held before the run (unknown
            // here) may legally be back.
            Stats::add(&self.stats.legally_lost, 1);
            return;
        }
        if dur != cur && dur.expected(at, self.trim_zeroes).is_some() {
            let mut d = vec![0u8; f.len()];
            self.render_expected(at, &mut d, &Expect::Uniform(dur));
            if d == f {
                Stats::add(&self.stats.legally_lost, 1);
                return;
            }
        }
        // Duplicate content carries no per-block generation: under a
        // provisional state a duplicate block of this run may be a later
        // write (so a stale duplicate is not caught there).
        if provisional
            && let Some(h) = block::Header::parse(f)
            && block::is_valid(f)
            && h.run == self.stamp.seed
            && (h.is_duplicate() || (h.lba == at && h.generation > cur.generation()))
        {
            Stats::add(&self.stats.rewritten_after_save, 1);
            return;
        }
        if provisional && f.iter().all(|&b| b == 0) {
            // A trim after the save, on a device that zeroes.
            Stats::add(&self.stats.rewritten_after_save, 1);
            return;
        }
        if dur == cur {
            Stats::add(&self.stats.lost_flushed, 1);
        }
        self.mismatch(at, want, e, f);
    }

    /// Fills `buf` with the content blocks `lba..` should have; blocks with
    /// no expectation are left as they are.
    pub fn render_expected(&self, lba: u64, buf: &mut [u8], expect: &Expect) {
        let bs = self.bs();
        let n = buf.len() / bs;
        let mut i = 0;
        while i < n {
            let at = lba + i as u64;
            match expect.get(at).expected(at, self.trim_zeroes) {
                Some(Expected::Unique { generation }) => {
                    // Extend over following blocks of the same generation.
                    let mut j = i + 1;
                    while j < n
                        && expect
                            .get(lba + j as u64)
                            .expected(lba + j as u64, self.trim_zeroes)
                            == Some(Expected::Unique { generation })
                    {
                        j += 1;
                    }
                    block::render_unique(&self.stamp, at, generation, &mut buf[i * bs..j * bs]);
                    i = j;
                    continue;
                }
                Some(Expected::Duplicate { variant, .. }) => {
                    if let Some(d) = self.duplicates.get(variant as usize) {
                        buf[i * bs..(i + 1) * bs].copy_from_slice(d);
                    }
                }
                Some(Expected::Zeros { .. }) => buf[i * bs..(i + 1) * bs].fill(0),
                None => {}
            }
            i += 1;
        }
    }

    fn mismatch(&self, lba: u64, want: &Expected, expected: &[u8], found: &[u8]) {
        let verdict = block::classify(&self.stamp, lba, want, found);
        self.stats.count_class(verdict.class);
        let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
        if r.mismatches.len() < MAX_MISMATCH_RECORDS {
            r.mismatches
                .push(MismatchRecord::new(lba, want, verdict, expected, found));
        }
    }
}

/// A contiguous part of the range one worker sweeps, in chunks of
/// `io_blocks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stripe {
    pub first: u64,
    pub blocks: u64,
}

/// Splits `blocks` from `first` into `n` stripes of whole chunks (the last
/// stripes may be shorter or empty).
pub fn stripes(first: u64, blocks: u64, n: usize, io_blocks: u32) -> Vec<Stripe> {
    let chunk = u64::from(io_blocks.max(1));
    let chunks = blocks.div_ceil(chunk);
    let per = chunks.div_ceil(n.max(1) as u64) * chunk;
    (0..n.max(1) as u64)
        .map(|i| {
            let start = (i * per).min(blocks);
            let end = ((i + 1) * per).min(blocks);
            Stripe {
                first: first + start,
                blocks: end - start,
            }
        })
        .collect()
}

/// What a sweep does to each chunk.
#[derive(Clone)]
pub enum SweepOp {
    /// Write unique blocks of one generation.
    Write { generation: u64 },
    /// Read and compare; `limited` applies the limits to reads (check
    /// mode); `count_distinct` counts matches toward the verified
    /// percentage (the first pass over the range).
    Verify {
        expect: Expect,
        limited: bool,
        count_distinct: bool,
    },
}

/// What a sweep did per stripe.
#[derive(Clone, Debug, Default)]
pub struct SweepResult {
    /// Blocks at the start of each stripe that were handled (the rest was
    /// not started because of a stop).
    pub done_blocks: Vec<u64>,
    /// Chunks whose command failed: (lba, blocks).
    pub failed: Vec<(u64, u64)>,
}

/// Runs `op` over `stripes` with `queue_depth` commands in flight per
/// stripe, on the load engine. Chunks listed in `skip` are left out (they
/// failed to write).
pub async fn sweep(
    ctx: &Arc<Ctx>,
    op: SweepOp,
    stripes: &[Stripe],
    skip: &[(u64, u64)],
) -> SweepResult {
    let work = Arc::new(Sweep {
        ctx: ctx.clone(),
        chunk: u64::from(ctx.io_blocks),
        op,
        stripes: stripes.to_vec(),
        next: stripes.iter().map(|_| AtomicU64::new(0)).collect(),
        skip: skip.to_vec(),
        failed: Mutex::new(Vec::new()),
    });
    let slots = stripes.len() * ctx.queue_depth;
    let summary = engine::run(ctx.dev.clone(), work.clone(), slots).await;
    if let Some(p) = summary.panics.first() {
        ctx.abort(format!("a worker failed: {p}"));
    }
    let done_blocks = work
        .next
        .iter()
        .zip(&work.stripes)
        .map(|(c, s)| (c.load(Ordering::Relaxed) * work.chunk).min(s.blocks))
        .collect();
    let failed = std::mem::take(&mut *work.failed.lock().unwrap_or_else(|p| p.into_inner()));
    SweepResult {
        done_blocks,
        failed,
    }
}

/// A sweep as a workload: `queue_depth` slots per stripe share the
/// stripe's chunk counter.
struct Sweep {
    ctx: Arc<Ctx>,
    chunk: u64,
    op: SweepOp,
    stripes: Vec<Stripe>,
    /// Next chunk of each stripe.
    next: Vec<AtomicU64>,
    skip: Vec<(u64, u64)>,
    failed: Mutex<Vec<(u64, u64)>>,
}

/// One slot of a sweep.
struct SweepSlot {
    stripe: usize,
    /// The command buffer, while not lent to the device.
    buf: Option<AlignedBuf>,
    /// What a read should have found (verify sweeps).
    expected: Option<AlignedBuf>,
}

impl Workload for Sweep {
    type Slot = SweepSlot;

    fn slot(&self, index: usize) -> SweepSlot {
        SweepSlot {
            stripe: index / self.ctx.queue_depth,
            buf: Some(self.ctx.buffer()),
            expected: None,
        }
    }

    fn next(&self, slot: &mut SweepSlot) -> Option<Op> {
        let ctx = &self.ctx;
        let s = self.stripes.get(slot.stripe).copied()?;
        let counter = self.next.get(slot.stripe)?;
        let n_chunks = s.blocks.div_ceil(self.chunk);
        loop {
            let go = match &self.op {
                SweepOp::Write { .. } => ctx.keep_going(&ctx.stats.bytes_written),
                SweepOp::Verify { limited: true, .. } => ctx.keep_going(&ctx.stats.bytes_read),
                SweepOp::Verify { limited: false, .. } => !ctx.aborted(),
            };
            if !go {
                return None;
            }
            let i = counter.fetch_add(1, Ordering::Relaxed);
            if i >= n_chunks {
                return None;
            }
            let lba = s.first + i * self.chunk;
            let n = self.chunk.min(s.blocks - i * self.chunk);
            if self.skip.iter().any(|&(l, _)| l == lba) {
                continue;
            }
            let mut buf = slot.buf.take().unwrap_or_else(|| ctx.buffer());
            buf.set_len(n as usize * ctx.bs());
            return Some(match &self.op {
                SweepOp::Write { generation } => {
                    block::render_unique(&ctx.stamp, lba, *generation, &mut buf);
                    Op::Write {
                        lba,
                        buf,
                        fua: false,
                    }
                }
                SweepOp::Verify { .. } => Op::Read { lba, buf },
            });
        }
    }

    fn complete(&self, slot: &mut SweepSlot, done: Completion) {
        let ctx = &self.ctx;
        let bytes = done.buf.len();
        let (lba, n) = (done.lba, done.blocks);
        match (&self.op, &done.result) {
            (SweepOp::Write { .. }, Ok(())) => {
                Stats::add(&ctx.stats.bytes_written, bytes as u64);
                Stats::add(&ctx.stats.writes_unique, n);
            }
            (
                SweepOp::Verify {
                    expect,
                    count_distinct,
                    ..
                },
                Ok(()),
            ) => {
                Stats::add(&ctx.stats.bytes_read, bytes as u64);
                let e = slot.expected.get_or_insert_with(|| ctx.buffer());
                e.set_len(bytes);
                let mut matched = 0;
                ctx.compare(lba, &done.buf, e, expect, |_| matched += 1);
                if *count_distinct {
                    Stats::add(&ctx.stats.distinct_verified, matched);
                }
            }
            (_, Err(e)) => {
                ctx.io_error(e);
                self.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((lba, n));
            }
        }
        slot.buf = Some(done.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_cover_the_range_in_whole_chunks() {
        let s = stripes(100, 1000, 3, 64);
        assert_eq!(s.iter().map(|s| s.blocks).sum::<u64>(), 1000);
        assert_eq!(
            s[0],
            Stripe {
                first: 100,
                blocks: 384
            }
        );
        assert_eq!(s[1].first, 484);
        assert!(
            s.iter()
                .all(|x| x.first >= 100 && (x.first - 100) % 64 == 0)
        );
        let s = stripes(0, 10, 4, 64);
        assert_eq!(
            s[0],
            Stripe {
                first: 0,
                blocks: 10
            }
        );
        assert!(s[1..].iter().all(|x| x.blocks == 0));
    }
}
