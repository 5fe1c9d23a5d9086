//! Sequential mode: write the whole range, flush, read it all back and
//! compare; repeat with the next generation for more passes.
//!
//! Each of the `workers` sweeps its own contiguous stripe with `queue
//! depth` commands in flight. When a limit stops the writing, what was
//! written is still read back and verified.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use iesp_blockio::Device;

use crate::verify::engine::{Counter, Ctx, Expect, Stripe, SweepOp, stripes, sweep};
use crate::verify::state::{BlockState, Extent, StateKind};

/// What a sequential run left on the device.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// The generation of the last pass that wrote anything.
    pub generation: Option<u64>,
    /// The blocks that pass wrote, per stripe (a prefix of each).
    pub stripes: Vec<Stripe>,
    /// Chunks whose write failed in that pass.
    pub failed: Vec<(u64, u64)>,
}

impl Written {
    /// The state extents of `first_lba..first_lba + blocks` after this run:
    /// unique blocks of `generation` where written, unknown elsewhere
    /// (never written, or the write failed). Built from the stripes, so it
    /// costs nothing per block.
    pub fn extents(&self, first_lba: u64, blocks: u64, generation: u64) -> Vec<Extent> {
        // Written intervals, minus the failed chunks.
        let mut failed = self.failed.clone();
        failed.sort_unstable();
        let mut unique: Vec<(u64, u64)> = Vec::new();
        for s in self.stripes.iter().filter(|s| s.blocks > 0) {
            let (mut at, end) = (s.first, s.first + s.blocks);
            for &(f, n) in failed.iter().filter(|&&(f, _)| f >= s.first && f < end) {
                if f > at {
                    unique.push((at, f));
                }
                at = at.max(f + n);
            }
            if at < end {
                unique.push((at, end));
            }
        }
        unique.sort_unstable();
        let mut out: Vec<Extent> = Vec::new();
        let mut push = |lba: u64, end: u64, kind: StateKind, generation: u64| {
            if end <= lba {
                return;
            }
            match out.last_mut() {
                Some(e)
                    if e.kind == kind && e.generation == generation && e.lba + e.count == lba =>
                {
                    e.count += end - lba
                }
                _ => out.push(Extent {
                    lba,
                    count: end - lba,
                    kind,
                    generation,
                }),
            }
        };
        let mut at = first_lba;
        for (a, b) in unique {
            push(at, a, StateKind::Unknown, 0);
            push(a, b, StateKind::Unique, generation);
            at = b;
        }
        push(at, first_lba + blocks, StateKind::Unknown, 0);
        out
    }
}

/// Runs up to `passes` passes, the first writing `first_generation`.
pub async fn run(ctx: &Arc<Ctx>, passes: u64, first_generation: u64) -> Written {
    let all = stripes(ctx.first_lba, ctx.blocks, ctx.workers, ctx.io_blocks);
    let total = ctx.blocks * ctx.bs() as u64;
    let mut written = Written::default();
    for p in 0..passes {
        if !ctx.keep_going(&ctx.stats.bytes_written) {
            break;
        }
        let generation = first_generation + p;
        let label = if passes == u64::MAX {
            format!("{}", p + 1)
        } else {
            format!("{}/{passes}", p + 1)
        };
        ctx.set_phase(&format!("write {label}"), total, Counter::Written);
        let t = Instant::now();
        let w = sweep(ctx, SweepOp::Write { generation }, &all, &[]).await;
        let done: Vec<Stripe> = all
            .iter()
            .zip(&w.done_blocks)
            .map(|(s, &d)| Stripe {
                first: s.first,
                blocks: d,
            })
            .collect();
        let done_blocks: u64 = done.iter().map(|s| s.blocks).sum();
        if done_blocks == 0 {
            break;
        }
        if let Err(e) = ctx.dev.flush().await {
            ctx.io_error(&e);
        }
        if let Err(e) = ctx.dev.drop_cache().await {
            ctx.io_error(&e);
        }
        add_time(&ctx.write_nanos, t);
        written = Written {
            generation: Some(generation),
            stripes: done.clone(),
            failed: w.failed.clone(),
        };
        ctx.set_phase(
            &format!("read {label}"),
            done_blocks * ctx.bs() as u64,
            Counter::Read,
        );
        let expect = Expect::Uniform(BlockState::new(StateKind::Unique, generation));
        let t = Instant::now();
        sweep(
            ctx,
            SweepOp::Verify {
                expect,
                limited: false,
                count_distinct: p == 0,
            },
            &done,
            &w.failed,
        )
        .await;
        add_time(&ctx.read_nanos, t);
        if ctx.aborted() {
            break;
        }
    }
    written
}

/// Check mode: read the range and compare with `expect`, no writes.
pub async fn check(ctx: &Arc<Ctx>, expect: Expect) {
    let all = stripes(ctx.first_lba, ctx.blocks, ctx.workers, ctx.io_blocks);
    ctx.set_phase("check", ctx.blocks * ctx.bs() as u64, Counter::Read);
    let t = Instant::now();
    sweep(
        ctx,
        SweepOp::Verify {
            expect,
            limited: true,
            count_distinct: true,
        },
        &all,
        &[],
    )
    .await;
    add_time(&ctx.read_nanos, t);
}

fn add_time(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(
        u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn e(lba: u64, count: u64, kind: StateKind, generation: u64) -> Extent {
        Extent {
            lba,
            count,
            kind,
            generation,
        }
    }

    #[test]
    fn extents_of_a_partial_striped_pass() {
        // Two stripes of 100 blocks from LBA 10; the first wrote 60 blocks
        // with a failed chunk at 30..40, the second all of its 100.
        let w = Written {
            generation: Some(3),
            stripes: vec![
                Stripe {
                    first: 10,
                    blocks: 60,
                },
                Stripe {
                    first: 110,
                    blocks: 100,
                },
            ],
            failed: vec![(30, 10)],
        };
        assert_eq!(
            w.extents(10, 200, 3),
            vec![
                e(10, 20, StateKind::Unique, 3),
                e(30, 10, StateKind::Unknown, 0),
                e(40, 30, StateKind::Unique, 3),
                e(70, 40, StateKind::Unknown, 0),
                e(110, 100, StateKind::Unique, 3),
            ]
        );
        let whole = Written {
            generation: Some(1),
            stripes: vec![Stripe {
                first: 0,
                blocks: 8,
            }],
            failed: vec![],
        };
        assert_eq!(whole.extents(0, 8, 1), vec![e(0, 8, StateKind::Unique, 1)]);
    }
}
