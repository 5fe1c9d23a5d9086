//! The fsx run loop: ops issued strictly in stream order, up to `qd` in
//! flight, each waiting (with every op behind it) until no op in flight
//! overlaps its blocks ([`super::reserve`]); every completion is checked
//! against and applied to the [`Model`].
//!
//! Because the stream is generated without looking at results, an op only
//! starts when all earlier ops on its blocks are done, and the model of
//! those blocks is final by then, the same seed gives the same ops and the
//! same model whatever the timing. Ops that replace or reset the session
//! (reconnect, LUN reset) are barriers: everything in flight finishes
//! first.
//!
//! READ and WRITE buffers are recycled ([`BufPool`]): a fresh buffer is
//! zeroed memory, and zeroing it cost more than the read or the render
//! that overwrites it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use iesp_blockio::block::Stamp;
use iesp_blockio::iscsi::InterruptedWrite;
use iesp_blockio::{AlignedBuf, AnyDevice, Device, DeviceError, OpenOptions};
use iesp_proto::scsi::SenseKey;

use super::log::LogWriter;
use super::model::{Content, Model, Wrong};
use super::ops::{Generator, Kind, Op};
use super::report::{FailureReport, Stats, progress_line};
use super::reserve::Reservations;

/// What kind of failure stopped a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// A read showed content the model does not allow.
    Mismatch,
    /// A COMPARE AND WRITE answered wrongly (miscompare where it matched,
    /// success or a wrong offset where it did not).
    Miscompare,
    /// An op the target advertised was rejected (ILLEGAL REQUEST,
    /// unsupported).
    Rejected,
    /// An I/O or connection error.
    Io,
}

impl FailKind {
    pub fn name(self) -> &'static str {
        match self {
            FailKind::Mismatch => "mismatch",
            FailKind::Miscompare => "miscompare",
            FailKind::Rejected => "rejected",
            FailKind::Io => "io",
        }
    }

    /// Data failures are exit 1; I/O errors exit 3.
    pub fn exit_code(self) -> u8 {
        match self {
            FailKind::Io => iesp_cli::exit::IO,
            _ => iesp_cli::exit::FAILED,
        }
    }
}

/// The failure that stopped a run.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailKind,
    pub op: Op,
    pub message: String,
    pub wrong: Option<Box<Wrong>>,
    pub history: Vec<String>,
}

impl Failure {
    pub fn report(&self) -> FailureReport {
        let w = self.wrong.as_deref();
        FailureReport {
            kind: self.kind.name(),
            op: self.op.i,
            op_kind: self.op.op.name(),
            message: self.message.clone(),
            lba: w.map(|w| w.lba),
            expected: w.map(|w| {
                w.expected
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            }),
            expected_header: w.and_then(|w| w.expected_header.map(|h| h.to_string())),
            found_header: w.map(|w| {
                w.found_header
                    .map_or_else(|| "none (no block header)".to_owned(), |h| h.to_string())
            }),
            difference: w.and_then(|w| w.difference.clone()),
            history: self.history.clone(),
        }
    }
}

/// How to open the device again (reconnect).
#[derive(Clone, Debug)]
pub struct Reopen {
    pub target: String,
    pub open: OpenOptions,
}

/// What a run is set up with.
#[derive(Clone, Debug)]
pub struct Setup {
    pub stamp: Stamp,
    pub first: u64,
    pub blocks: u64,
    pub qd: usize,
    pub unmap_zeroes: bool,
    pub reopen: Option<Reopen>,
    /// Progress lines on stderr this often.
    pub progress: Option<Duration>,
    /// Stop on SIGINT/SIGTERM (the command line).
    pub interruptible: bool,
}

/// Where the ops come from.
pub enum Source {
    /// The seeded stream, up to `ops` ops or `duration`.
    Stream {
        generator: Box<Generator>,
        ops: Option<u64>,
        duration: Option<Duration>,
    },
    /// A given list (replay, shrinking).
    List(std::vec::IntoIter<Op>),
}

impl Source {
    fn next(&mut self, done: u64, start: Instant) -> Option<Op> {
        match self {
            Source::Stream {
                generator,
                ops,
                duration,
            } => {
                if ops.is_some_and(|n| done >= n) || duration.is_some_and(|d| start.elapsed() >= d)
                {
                    None
                } else {
                    Some(generator.next_op())
                }
            }
            Source::List(it) => it.next(),
        }
    }
}

/// The most recent ops kept in memory (for histories and shrinking; the
/// op log has them all). Shrinking a window is sound: a fresh model takes
/// whatever the device holds as "anything, then stable".
pub const OPS_KEPT: usize = 1 << 19;

/// How a run ended.
pub struct Outcome {
    /// The ops issued, in order (the last [`OPS_KEPT`]).
    pub ops: Vec<Op>,
    pub failure: Option<Failure>,
    pub stats: Stats,
    pub elapsed: Duration,
    pub touched: u64,
    pub interrupted: Option<crate::signal::Signal>,
}

/// An op in flight.
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>;

/// A finished op.
struct Done {
    op: Op,
    result: Result<(), DeviceError>,
    /// Data read: a READ's, or what a COMPARE AND WRITE read first.
    read: Option<AlignedBuf>,
    interrupted: Option<InterruptedWrite>,
    /// A buffer the op is done with (a write's), for the pool.
    spare: Option<AlignedBuf>,
    latency: Duration,
}

/// Buffers of finished READs and WRITEs, handed to the next ones. Their
/// contents are stale: a read or a render overwrites all of it.
struct BufPool {
    free: Vec<AlignedBuf>,
    keep: usize,
}

impl BufPool {
    fn new(qd: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            keep: qd + 1,
        }
    }

    fn give(&mut self, b: AlignedBuf) {
        if self.free.len() < self.keep && b.capacity() > 0 {
            self.free.push(b);
        }
    }

    /// A buffer for `op`'s data, if it is a READ or WRITE and one is free.
    fn take(&mut self, op: &Op) -> Option<AlignedBuf> {
        matches!(op.op, Kind::Read | Kind::Write | Kind::WriteFua)
            .then(|| self.free.pop())
            .flatten()
    }
}

/// Runs the ops of `source` on `dev`, checking each against a fresh
/// model; returns the device (a reconnect replaces it) and the outcome.
pub async fn run(
    mut dev: Arc<AnyDevice>,
    setup: &Setup,
    mut source: Source,
    mut log: Option<&mut LogWriter>,
) -> (Arc<AnyDevice>, Outcome) {
    let start = Instant::now();
    let mut st = State {
        model: Model::new(setup.first, setup.blocks, setup.stamp, setup.unmap_zeroes),
        stats: Stats::default(),
        ops: std::collections::VecDeque::new(),
        issued: 0,
        failure: None,
        pool: BufPool::new(setup.qd.max(1)),
    };
    // Polled in this task: no hand-off to another worker per op.
    let mut tasks: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut busy = Reservations::new();
    let mut interrupted = None;
    let mut last_progress = Instant::now();
    let qd = setup.qd.max(1);
    'issue: loop {
        if st.failure.is_some() {
            break;
        }
        if setup.interruptible
            && let Some(s) = crate::signal::received()
        {
            interrupted = Some(s);
            break;
        }
        if let Some(every) = setup.progress
            && last_progress.elapsed() >= every
        {
            last_progress = Instant::now();
            eprintln!(
                "{}",
                progress_line(&st.stats, start.elapsed(), st.model.touched(), setup.blocks)
            );
        }
        let Some(op) = source.next(st.issued, start) else {
            break;
        };
        if op.op.is_barrier() {
            while let Some(done) = tasks.next().await {
                busy.release(done.op.i);
                st.complete(done);
            }
            if st.failure.is_some() {
                break;
            }
            if let Some(l) = log.as_deref_mut() {
                l.op(&op);
            }
            st.keep(&op);
            dev = st.barrier(dev, setup, op).await;
            continue;
        }
        let spans = op.spans();
        while tasks.len() >= qd || busy.overlaps(&spans) {
            let Some(done) = tasks.next().await else {
                break;
            };
            busy.release(done.op.i);
            st.complete(done);
            if st.failure.is_some() {
                break 'issue;
            }
        }
        // The model of these blocks is final now: render what a matching
        // compare expects, if it is known exactly.
        let expect = if matches!(
            op.op,
            Kind::CompareAndWrite | Kind::CompareAndWriteMiscompare
        ) {
            (op.lba..op.lba + op.blocks)
                .map(|b| st.model.exact(b).filter(|c| c.renderable()))
                .collect::<Option<Vec<Content>>>()
        } else {
            None
        };
        if let Some(l) = log.as_deref_mut() {
            l.op(&op);
        }
        st.keep(&op);
        busy.take(op.i, &spans);
        let buf = st.pool.take(&op);
        tasks.push(Box::pin(exec(dev.clone(), op, setup.stamp, expect, buf)));
    }
    while let Some(done) = tasks.next().await {
        st.complete(done);
    }
    if let Some(l) = log {
        l.flush();
    }
    let touched = st.model.touched();
    (
        dev,
        Outcome {
            ops: st.ops.into(),
            failure: st.failure,
            stats: st.stats,
            elapsed: start.elapsed(),
            touched,
            interrupted,
        },
    )
}

/// The model, figures and ops of a run in progress.
struct State {
    model: Model,
    stats: Stats,
    ops: std::collections::VecDeque<Op>,
    issued: u64,
    failure: Option<Failure>,
    pool: BufPool,
}

impl State {
    fn keep(&mut self, op: &Op) {
        if self.ops.len() == OPS_KEPT {
            self.ops.pop_front();
        }
        self.ops.push_back(op.clone());
        self.issued += 1;
    }

    fn fail(&mut self, kind: FailKind, op: &Op, message: String, wrong: Option<Box<Wrong>>) {
        if self.failure.is_some() {
            return;
        }
        let lba = wrong.as_ref().map_or(op.lba, |w| w.lba);
        let history = self
            .ops
            .iter()
            .filter(|o| o.touches(lba))
            .map(Op::describe)
            .collect::<Vec<_>>();
        let skip = history.len().saturating_sub(20);
        self.failure = Some(Failure {
            kind,
            op: op.clone(),
            message,
            wrong,
            history: history[skip..].to_vec(),
        });
    }

    fn error(&mut self, op: &Op, e: &DeviceError) {
        let rejected = e.is_unsupported()
            || e.sense()
                .is_some_and(|s| s.key == SenseKey::ILLEGAL_REQUEST);
        if rejected {
            self.fail(
                FailKind::Rejected,
                op,
                format!(
                    "{}: the target advertised it and rejected it: {e}",
                    op.describe()
                ),
                None,
            );
        } else {
            self.fail(FailKind::Io, op, format!("{}: {e}", op.describe()), None);
        }
    }

    fn check_read(&mut self, op: &Op, buf: &AlignedBuf) -> bool {
        match self.model.check(op.lba, buf) {
            Ok(()) => true,
            Err(w) => {
                let msg = format!(
                    "{}: LBA {} is {} ({})",
                    op.describe(),
                    w.lba,
                    w.class,
                    w.reason
                );
                self.fail(FailKind::Mismatch, op, msg, Some(w));
                false
            }
        }
    }

    fn complete(&mut self, mut d: Done) {
        self.check_and_apply(&d);
        for b in [d.read.take(), d.spare.take()].into_iter().flatten() {
            self.pool.give(b);
        }
    }

    fn check_and_apply(&mut self, d: &Done) {
        let bs = u64::from(self.model.stamp.block_size);
        self.stats
            .record(d.op.op, d.latency, d.op.data_blocks() * bs);
        if self.failure.is_some() {
            return;
        }
        let op = &d.op;
        let g = op.generation();
        // A COMPARE AND WRITE's preliminary read is checked like a READ.
        if op.op != Kind::Read
            && let Some(b) = &d.read
            && !self.check_read(op, b)
        {
            return;
        }
        match (op.op, &d.result) {
            (Kind::Read, Ok(())) => {
                if let Some(b) = &d.read {
                    self.check_read(op, b);
                }
            }
            (Kind::Write | Kind::WriteFua, Ok(())) => {
                self.model.set(op.lba, op.blocks, Content::Unique(g));
            }
            (Kind::Unmap, Ok(())) => {
                let c = self.model.unmapped();
                for (s, e) in op.spans() {
                    self.model.set(s, e - s, c);
                }
            }
            (Kind::WriteSame | Kind::WriteSameUnmap, Ok(())) => {
                match op.zero {
                    Some(true) if op.op == Kind::WriteSameUnmap => {
                        let c = self.model.unmapped();
                        self.model.set(op.lba, op.blocks, c);
                    }
                    Some(true) => self.model.set(op.lba, op.blocks, Content::Zero),
                    // SBC-4 has the device write a block unmapped blocks
                    // would not read as; our target deallocates anyway.
                    // Either is accepted; old data is not.
                    _ if op.op == Kind::WriteSameUnmap => {
                        let u = self.model.unmapped();
                        self.model
                            .set_either(op.lba, op.blocks, Content::Same(g), u);
                    }
                    _ => self.model.set(op.lba, op.blocks, Content::Same(g)),
                }
            }
            (Kind::CompareAndWrite, Ok(())) => {
                self.model.set(op.lba, op.blocks, Content::Unique(g));
            }
            (Kind::CompareAndWrite, Err(e)) if e.miscompare_offset().is_some() => {
                let msg = format!(
                    "{}: MISCOMPARE at byte {} although the compared data is what the blocks hold",
                    op.describe(),
                    e.miscompare_offset().unwrap_or(0)
                );
                self.fail(FailKind::Miscompare, op, msg, None);
            }
            (Kind::CompareAndWriteMiscompare, Ok(())) => {
                let msg = format!(
                    "{}: GOOD although the compared data differs at byte {}",
                    op.describe(),
                    op.miscompare_at.unwrap_or(0)
                );
                self.fail(FailKind::Miscompare, op, msg, None);
            }
            (Kind::CompareAndWriteMiscompare, Err(e)) if e.miscompare_offset().is_some() => {
                let got = e.miscompare_offset();
                if got != op.miscompare_at {
                    let msg = format!(
                        "{}: MISCOMPARE at byte {} where the first difference is at byte {}",
                        op.describe(),
                        got.unwrap_or(0),
                        op.miscompare_at.unwrap_or(0)
                    );
                    self.fail(FailKind::Miscompare, op, msg, None);
                }
                // The blocks are unchanged: the model too.
            }
            (Kind::AbortTask, Ok(())) => self.interrupted_write(op, d.interrupted.as_ref()),
            (Kind::Flush, Ok(())) => {}
            (_, Err(e)) => self.error(op, e),
            (_, Ok(())) => {}
        }
    }

    /// A write that an ABORT TASK or LUN RESET met: written if it came
    /// back GOOD, else old or new.
    fn interrupted_write(&mut self, op: &Op, w: Option<&InterruptedWrite>) {
        let new = Content::Unique(op.generation());
        match w {
            Some(InterruptedWrite { write: Ok(()), .. }) => {
                self.model.set(op.lba, op.blocks, new);
            }
            _ => self.model.either(op.lba, op.blocks, new),
        }
    }

    /// A reconnect or LUN reset, with nothing else in flight.
    async fn barrier(&mut self, dev: Arc<AnyDevice>, setup: &Setup, op: Op) -> Arc<AnyDevice> {
        let t = Instant::now();
        match op.op {
            Kind::Reconnect => {
                let Some(reopen) = &setup.reopen else {
                    self.fail(
                        FailKind::Rejected,
                        &op,
                        "reconnect: this target cannot be reopened".into(),
                        None,
                    );
                    return dev;
                };
                let dev = match Arc::try_unwrap(dev) {
                    Ok(d) => {
                        if let Err(e) = d.close().await {
                            self.fail(FailKind::Io, &op, format!("reconnect: logout: {e}"), None);
                        }
                        let mut open = reopen.open.clone();
                        open.force = true;
                        match AnyDevice::open(&reopen.target, &open).await {
                            Ok(d) => Arc::new(d),
                            Err(e) => {
                                self.fail(FailKind::Io, &op, format!("reconnect: {e}"), None);
                                return Arc::new(AnyDevice::from(
                                    iesp_blockio::mem::MemDevice::new(1, 512),
                                ));
                            }
                        }
                    }
                    Err(d) => d,
                };
                self.stats.record(op.op, t.elapsed(), 0);
                dev
            }
            Kind::LunReset => {
                let (data, r) = {
                    let mut buf = data_buf(&dev, op.blocks);
                    render(&self.model.stamp, &op, &mut buf);
                    let r = match &*dev {
                        AnyDevice::Iscsi(d) => d.write_then_interrupt(op.lba, &buf, true).await,
                        _ => Err(DeviceError::Unsupported {
                            op: "LUN RESET",
                            reason: "not an iSCSI LUN".into(),
                        }),
                    };
                    (buf, r)
                };
                drop(data);
                self.stats.record(
                    op.op,
                    t.elapsed(),
                    op.blocks * u64::from(self.model.stamp.block_size),
                );
                match r {
                    Ok(w) => self.interrupted_write(&op, Some(&w)),
                    Err(e) => self.error(&op, &e),
                }
                dev
            }
            _ => dev,
        }
    }
}

fn data_buf(dev: &AnyDevice, blocks: u64) -> AlignedBuf {
    let info = dev.info();
    AlignedBuf::new(
        (blocks.max(1) * u64::from(info.block_size)) as usize,
        info.align,
    )
}

/// `reuse` cut to `blocks` if it is large enough, else a fresh buffer.
fn data_buf_from(reuse: Option<AlignedBuf>, dev: &AnyDevice, blocks: u64) -> AlignedBuf {
    let len = (blocks.max(1) * u64::from(dev.info().block_size)) as usize;
    match reuse {
        Some(mut b) if b.capacity() >= len => {
            b.set_len(len);
            b
        }
        _ => data_buf(dev, blocks),
    }
}

/// The unique data an op writes (generation `i + 1`).
fn render(stamp: &Stamp, op: &Op, buf: &mut [u8]) {
    iesp_blockio::block::render_unique(stamp, op.lba, op.generation(), buf);
}

/// Runs one op on the device.
/// `reuse`: a pooled buffer for a READ's or WRITE's data.
async fn exec(
    dev: Arc<AnyDevice>,
    op: Op,
    stamp: Stamp,
    expect: Option<Vec<Content>>,
    reuse: Option<AlignedBuf>,
) -> Done {
    let t = Instant::now();
    let bs = stamp.block_size as usize;
    let mut read = None;
    let mut spare = None;
    let mut interrupted = None;
    let result = match op.op {
        Kind::Read => {
            let (b, r) = dev
                .read(op.lba, data_buf_from(reuse, &dev, op.blocks))
                .await;
            read = Some(b);
            r
        }
        Kind::Write | Kind::WriteFua => {
            let mut b = data_buf_from(reuse, &dev, op.blocks);
            render(&stamp, &op, &mut b);
            let (b, r) = dev.write(op.lba, b, op.op == Kind::WriteFua).await;
            spare = Some(b);
            r
        }
        Kind::Unmap => {
            let ranges: Vec<_> = op
                .spans()
                .iter()
                .map(|&(s, e)| iesp_blockio::LbaRange::new(s, e - s))
                .collect();
            dev.unmap(&ranges).await
        }
        Kind::WriteSame | Kind::WriteSameUnmap => {
            let mut b = data_buf(&dev, 1);
            if op.zero == Some(true) {
                b.fill(0);
            } else {
                super::model::same_block(&stamp, op.generation(), &mut b);
            }
            dev.write_same(op.lba, op.blocks, b, op.op == Kind::WriteSameUnmap)
                .await
                .1
        }
        Kind::CompareAndWrite | Kind::CompareAndWriteMiscompare => {
            let n = op.blocks as usize;
            let mut b = data_buf(&dev, 2 * op.blocks);
            let mut pre = Ok(());
            match expect {
                Some(cs) => {
                    for (k, c) in cs.iter().enumerate() {
                        c.render(&stamp, op.lba + k as u64, &mut b[k * bs..(k + 1) * bs]);
                    }
                }
                None => {
                    let (r, res) = dev.read(op.lba, data_buf(&dev, op.blocks)).await;
                    if res.is_ok() {
                        b[..n * bs].copy_from_slice(&r);
                        read = Some(r);
                    }
                    pre = res;
                }
            }
            match pre {
                Ok(()) => {
                    if let Some(m) = op.miscompare_at
                        && let Some(x) = b.get_mut(m as usize)
                    {
                        *x ^= 0x01;
                    }
                    render(&stamp, &op, &mut b[n * bs..]);
                    dev.compare_and_write(op.lba, b, false).await.1
                }
                Err(e) => Err(e),
            }
        }
        Kind::Flush => dev.flush().await,
        Kind::AbortTask => {
            let mut b = data_buf(&dev, op.blocks);
            render(&stamp, &op, &mut b);
            match &*dev {
                AnyDevice::Iscsi(d) => match d.write_then_interrupt(op.lba, &b, false).await {
                    Ok(w) => {
                        interrupted = Some(w);
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                _ => Err(DeviceError::Unsupported {
                    op: "ABORT TASK",
                    reason: "not an iSCSI LUN".into(),
                }),
            }
        }
        Kind::Reconnect | Kind::LunReset => Ok(()),
    };
    Done {
        op,
        result,
        read,
        interrupted,
        spare,
        latency: t.elapsed(),
    }
}
