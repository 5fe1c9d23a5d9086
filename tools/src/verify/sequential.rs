//! Sequential mode: write the whole range, flush, read it all back and
//! compare; repeat with the next generation for more passes.
//!
//! Each of the `workers` sweeps its own contiguous stripe with `queue
//! depth` commands in flight. When a limit stops the writing, what was
//! written is still read back and verified.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::verify::engine::{Ctx, Expect, Stripe, SweepOp, stripes, sweep};
use crate::verify::state::{BlockState, StateKind};

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
        ctx.set_phase(&format!("write {label}"), total, true);
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
            false,
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
    ctx.set_phase("check", ctx.blocks * ctx.bs() as u64, false);
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
