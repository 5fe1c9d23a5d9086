//! The load engine: keeps N commands in flight over a [`Device`] and
//! reports each one's latency.
//!
//! A [`Workload`] says what to do; the engine does it. The engine runs
//! `slots` tasks (for verify, `workers × queue depth`; for bench, the queue
//! depth); each task owns one slot state ([`Workload::Slot`]: its buffers,
//! its PRNG, where it is) and loops: ask the workload for the slot's next
//! [`Op`], run it on the device, hand the [`Completion`] — kind, LBA,
//! blocks, start, latency, result and the buffer — back to the workload.
//! A slot whose workload says `None` ends; the run ends when every slot has.
//! So at most `slots` commands are outstanding, and exactly that many while
//! the workload has work.
//!
//! The engine allocates nothing per command: buffers travel inside the op
//! and come back in the completion. Latency is measured around the device
//! call only (not the workload's rendering or comparing); a workload that
//! wants a histogram records [`Completion::latency`] into one.
//!
//! Used by verify's sweeps, the suite's write/read/verify workload, and
//! the fsx and bench tools.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{AlignedBuf, Device, DeviceError, LbaRange};

/// One command.
#[derive(Debug)]
pub enum Op {
    /// READ into `buf` (its length: whole blocks).
    Read { lba: u64, buf: AlignedBuf },
    /// WRITE of `buf`, with FUA or not.
    Write {
        lba: u64,
        buf: AlignedBuf,
        fua: bool,
    },
    /// SYNCHRONIZE CACHE.
    Flush,
    /// UNMAP of several ranges.
    Unmap { ranges: Vec<LbaRange> },
    /// WRITE SAME of the one block in `buf`, with UNMAP or not.
    WriteSame {
        lba: u64,
        blocks: u64,
        buf: AlignedBuf,
        unmap: bool,
    },
    /// COMPARE AND WRITE: `buf` is verify data then write data.
    CompareAndWrite {
        lba: u64,
        buf: AlignedBuf,
        fua: bool,
    },
}

/// What an [`Op`] was, for records and histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Read,
    Write,
    WriteFua,
    Flush,
    Unmap,
    WriteSame,
    WriteSameUnmap,
    CompareAndWrite,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::WriteFua => "write-fua",
            OpKind::Flush => "flush",
            OpKind::Unmap => "unmap",
            OpKind::WriteSame => "write-same",
            OpKind::WriteSameUnmap => "write-same-unmap",
            OpKind::CompareAndWrite => "compare-and-write",
        }
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Completion {
    pub kind: OpKind,
    /// First LBA (of the first range, for UNMAP; 0 for a flush).
    pub lba: u64,
    /// Blocks the command covered (compared, for COMPARE AND WRITE; the
    /// sum of the ranges, for UNMAP).
    pub blocks: u64,
    /// When it was sent.
    pub started: Instant,
    /// How long the device took.
    pub latency: Duration,
    pub result: Result<(), DeviceError>,
    /// The op's buffer, handed back (empty for ops without one).
    pub buf: AlignedBuf,
}

/// Runs one op on `dev`, timing it.
pub async fn execute<D: Device + ?Sized>(dev: &D, op: Op) -> Completion {
    let bs = u64::from(dev.info().block_size.max(1));
    let blocks_of = |b: &AlignedBuf| b.len() as u64 / bs;
    let started = Instant::now();
    let (kind, lba, blocks, (buf, result)) = match op {
        Op::Read { lba, buf } => {
            let n = blocks_of(&buf);
            (OpKind::Read, lba, n, dev.read(lba, buf).await)
        }
        Op::Write { lba, buf, fua } => {
            let n = blocks_of(&buf);
            let kind = if fua { OpKind::WriteFua } else { OpKind::Write };
            (kind, lba, n, dev.write(lba, buf, fua).await)
        }
        Op::Flush => (
            OpKind::Flush,
            0,
            0,
            (AlignedBuf::default(), dev.flush().await),
        ),
        Op::Unmap { ranges } => {
            let lba = ranges.first().map_or(0, |r| r.lba);
            let n = ranges.iter().map(|r| r.blocks).sum();
            (
                OpKind::Unmap,
                lba,
                n,
                (AlignedBuf::default(), dev.unmap(&ranges).await),
            )
        }
        Op::WriteSame {
            lba,
            blocks,
            buf,
            unmap,
        } => {
            let kind = if unmap {
                OpKind::WriteSameUnmap
            } else {
                OpKind::WriteSame
            };
            (
                kind,
                lba,
                blocks,
                dev.write_same(lba, blocks, buf, unmap).await,
            )
        }
        Op::CompareAndWrite { lba, buf, fua } => {
            let n = blocks_of(&buf) / 2;
            (
                OpKind::CompareAndWrite,
                lba,
                n,
                dev.compare_and_write(lba, buf, fua).await,
            )
        }
    };
    Completion {
        kind,
        lba,
        blocks,
        started,
        latency: started.elapsed(),
        result,
        buf,
    }
}

/// What to run: the next op of each slot, and what to do with its result.
///
/// `next` and `complete` run on the slot's task, between commands; they
/// should be quick (render, compare, count) and must not block.
pub trait Workload: Send + Sync + 'static {
    /// Per-slot state: buffers, PRNG, position.
    type Slot: Send + 'static;

    /// The state of slot `index` (0..slots).
    fn slot(&self, index: usize) -> Self::Slot;

    /// The slot's next command, or `None`: this slot is done.
    fn next(&self, slot: &mut Self::Slot) -> Option<Op>;

    /// A command of this slot finished.
    fn complete(&self, slot: &mut Self::Slot, done: Completion);
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Commands completed.
    pub ops: u64,
    /// Of which failed.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Slot tasks that panicked (a bug in the workload), with the message.
    pub panics: Vec<String>,
}

/// Runs `work` over `dev` with `slots` commands in flight (at least 1)
/// until every slot is done.
pub async fn run<D, W>(dev: Arc<D>, work: Arc<W>, slots: usize) -> RunSummary
where
    D: Device + 'static,
    W: Workload,
{
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..slots.max(1) {
        let (dev, work) = (dev.clone(), work.clone());
        tasks.spawn(async move {
            let mut slot = work.slot(index);
            let (mut ops, mut errors) = (0u64, 0u64);
            while let Some(op) = work.next(&mut slot) {
                let done = execute(&*dev, op).await;
                ops += 1;
                errors += u64::from(done.result.is_err());
                work.complete(&mut slot, done);
            }
            (ops, errors)
        });
    }
    let mut summary = RunSummary::default();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((ops, errors)) => {
                summary.ops += ops;
                summary.errors += errors;
            }
            Err(e) => summary.panics.push(e.to_string()),
        }
    }
    summary.elapsed = t.elapsed();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{Failure, Fault, FaultRule, MemDevice};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// Writes then reads `chunks` chunks of one block, tracking the most
    /// commands ever in flight.
    struct Probe {
        chunks: u64,
        next: AtomicU64,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        records: Mutex<Vec<(OpKind, u64, bool)>>,
    }

    impl Workload for Probe {
        type Slot = Option<AlignedBuf>;

        fn slot(&self, _: usize) -> Self::Slot {
            Some(AlignedBuf::new(512, 512))
        }

        fn next(&self, slot: &mut Self::Slot) -> Option<Op> {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= 2 * self.chunks {
                return None;
            }
            let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            self.max_in_flight.fetch_max(n, Ordering::Relaxed);
            let buf = slot.take().unwrap_or_default();
            Some(if i < self.chunks {
                Op::Write {
                    lba: i,
                    buf,
                    fua: i % 2 == 0,
                }
            } else {
                Op::Read {
                    lba: i - self.chunks,
                    buf,
                }
            })
        }

        fn complete(&self, slot: &mut Self::Slot, done: Completion) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.records
                .lock()
                .unwrap()
                .push((done.kind, done.lba, done.result.is_ok()));
            *slot = Some(done.buf);
        }
    }

    #[test]
    fn keeps_n_in_flight_and_records_every_command() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let dev = Arc::new(MemDevice::new(64, 512));
            dev.inject(
                FaultRule::new(Fault::Fail(Failure::Io("boom".into())))
                    .lbas(7..8)
                    .on(crate::mem::OpClass::Read),
            );
            let work = Arc::new(Probe {
                chunks: 64,
                next: AtomicU64::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                records: Mutex::new(Vec::new()),
            });
            let s = run(dev, work.clone(), 4).await;
            assert_eq!(s.ops, 128);
            assert_eq!(s.errors, 1);
            assert!(s.panics.is_empty());
            assert!(work.max_in_flight.load(Ordering::Relaxed) <= 4);
            let r = work.records.lock().unwrap();
            assert_eq!(r.iter().filter(|x| x.0 == OpKind::WriteFua).count(), 32);
            assert_eq!(r.iter().filter(|x| x.0 == OpKind::Read).count(), 64);
            assert!(r.contains(&(OpKind::Read, 7, false)));
        });
    }

    #[test]
    fn execute_times_each_kind() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let dev = MemDevice::new(8, 512);
            let c = execute(
                &dev,
                Op::Unmap {
                    ranges: vec![LbaRange::new(1, 2), LbaRange::new(5, 1)],
                },
            )
            .await;
            assert_eq!((c.kind, c.lba, c.blocks), (OpKind::Unmap, 1, 3));
            assert!(c.result.is_ok());
            let c = execute(
                &dev,
                Op::WriteSame {
                    lba: 0,
                    blocks: 8,
                    buf: AlignedBuf::new(512, 512),
                    unmap: true,
                },
            )
            .await;
            assert_eq!((c.kind, c.blocks), (OpKind::WriteSameUnmap, 8));
            let c = execute(
                &dev,
                Op::CompareAndWrite {
                    lba: 0,
                    buf: AlignedBuf::new(2048, 512),
                    fua: false,
                },
            )
            .await;
            assert_eq!((c.kind, c.blocks), (OpKind::CompareAndWrite, 2));
            assert!(c.result.is_ok());
            assert_eq!(execute(&dev, Op::Flush).await.kind, OpKind::Flush);
        });
    }
}
