//! Shrinking a failing op sequence, in the way of delta debugging: drop
//! chunks of ops (halves, quarters, … single ops) while the failure stays,
//! then narrow the ranges of the ops left (halves of a range, single UNMAP
//! descriptors). Every candidate is re-run from a fresh model — on a fresh
//! device where there is one to make (the in-memory device), else on the
//! same device, whose content the fresh model then takes as "anything,
//! then stable".

use std::sync::Arc;

use iesp_blockio::AnyDevice;

use super::engine::{self, FailKind, Outcome, Setup, Source};
use super::ops::{Kind, Op};

/// Makes a fresh device for each re-run.
pub type Factory = Box<dyn Fn() -> AnyDevice + Send + Sync>;

/// Re-runs candidate sequences.
pub struct Rerunner {
    /// The device re-runs use without `fresh` (a reconnect replaces it).
    pub dev: Arc<AnyDevice>,
    pub fresh: Option<Factory>,
    pub setup: Setup,
    pub runs: usize,
}

impl Rerunner {
    pub fn new(dev: Arc<AnyDevice>, fresh: Option<Factory>, setup: &Setup) -> Rerunner {
        let mut setup = setup.clone();
        setup.progress = None;
        setup.interruptible = false;
        Rerunner {
            dev,
            fresh,
            setup,
            runs: 0,
        }
    }

    /// Runs `ops` from a fresh model; the outcome.
    pub async fn run(&mut self, ops: &[Op]) -> Outcome {
        self.runs += 1;
        let list: Vec<Op> = ops.to_vec();
        let source = Source::List(list.into_iter());
        match &self.fresh {
            Some(f) => {
                engine::run(Arc::new(f()), &self.setup, source, None)
                    .await
                    .1
            }
            None => {
                // Lent, not shared: a reconnect needs the only reference.
                let placeholder =
                    Arc::new(AnyDevice::from(iesp_blockio::mem::MemDevice::new(1, 512)));
                let dev = std::mem::replace(&mut self.dev, placeholder);
                let (dev, out) = engine::run(dev, &self.setup, source, None).await;
                self.dev = dev;
                out
            }
        }
    }

    async fn fails(&mut self, ops: &[Op], kind: FailKind) -> bool {
        self.run(ops).await.failure.is_some_and(|f| f.kind == kind)
    }
}

/// The ops up to and including the failing one.
pub fn up_to_failure(ops: &[Op], failing: u64) -> Vec<Op> {
    match ops.iter().position(|o| o.i == failing) {
        Some(p) => ops[..=p].to_vec(),
        None => ops.to_vec(),
    }
}

/// Shrinks `ops` (which fail with `kind`) within `budget` re-runs.
pub async fn shrink(r: &mut Rerunner, ops: Vec<Op>, kind: FailKind, budget: usize) -> Vec<Op> {
    let mut cur = ops;
    let stop = r.runs + budget;
    // 1. Drop chunks.
    let mut n = 2usize;
    while cur.len() >= 2 && r.runs < stop {
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        let mut start = 0;
        while start < cur.len() && r.runs < stop {
            let mut cand = cur[..start].to_vec();
            cand.extend_from_slice(&cur[(start + chunk).min(cur.len())..]);
            if !cand.is_empty() && r.fails(&cand, kind).await {
                cur = cand;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
            start += chunk;
        }
        if !reduced {
            if n >= cur.len() {
                break;
            }
            n = (2 * n).min(cur.len());
        }
    }
    // 2. Narrow ranges, until nothing narrows.
    let bs = u64::from(r.setup.stamp.block_size);
    let mut changed = true;
    while changed && r.runs < stop {
        changed = false;
        for j in 0..cur.len() {
            for cand_op in narrower(&cur[j], bs) {
                if r.runs >= stop {
                    break;
                }
                let mut cand = cur.clone();
                cand[j] = cand_op;
                if r.fails(&cand, kind).await {
                    cur = cand;
                    changed = true;
                    break;
                }
            }
        }
    }
    cur
}

/// Smaller versions of an op: each half of its range; for an UNMAP, each
/// descriptor alone.
fn narrower(op: &Op, bs: u64) -> Vec<Op> {
    let mut out = Vec::new();
    if let Some(r) = &op.ranges {
        if r.len() > 1 {
            for d in r {
                let mut o = op.clone();
                o.ranges = Some(vec![*d]);
                o.lba = d[0];
                o.blocks = d[1];
                out.push(o);
            }
        } else if let Some(&[l, n]) = r.first()
            && n > 1
        {
            for (a, b) in [(l, n / 2), (l + n / 2, n - n / 2)] {
                let mut o = op.clone();
                o.ranges = Some(vec![[a, b]]);
                o.lba = a;
                o.blocks = b;
                out.push(o);
            }
        }
        return out;
    }
    if !op.op.has_range() || op.blocks < 2 || op.op == Kind::Flush {
        return out;
    }
    let n = op.blocks;
    for (a, b) in [(op.lba, n / 2), (op.lba + n / 2, n - n / 2)] {
        let mut o = op.clone();
        o.lba = a;
        o.blocks = b;
        if let Some(m) = op.miscompare_at {
            // Keep the differing byte inside the compared data.
            let shift = (a - op.lba) * bs;
            if m < shift || m - shift >= b * bs {
                continue;
            }
            o.miscompare_at = Some(m - shift);
        }
        out.push(o);
    }
    out
}
