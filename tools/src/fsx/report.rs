//! fsx's figures and output: counts and latency percentiles per op
//! (HdrHistogram), the progress line on stderr, the summary on stdout and
//! the `--json` report (schema `iesp-test/fsx/1`, docs/schemas/fsx.json).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::ops::Kind;

/// Counts and latencies of one kind of op.
pub struct KindStats {
    pub count: u64,
    pub hist: Histogram<u64>,
}

impl KindStats {
    fn new() -> KindStats {
        KindStats {
            count: 0,
            // 1 µs .. 1 h, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }
}

/// What a run did.
#[derive(Default)]
pub struct Stats {
    pub kinds: BTreeMap<Kind, KindStats>,
    pub ops: u64,
    pub bytes: u64,
}

impl Stats {
    /// Records one completed op.
    pub fn record(&mut self, kind: Kind, latency: Duration, bytes: u64) {
        let k = self.kinds.entry(kind).or_insert_with(KindStats::new);
        k.count += 1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let _ = k.hist.record(us.clamp(1, 3_600_000_000));
        self.ops += 1;
        self.bytes += bytes;
    }

    /// Per-op rows for the report.
    pub fn rows(&self) -> Vec<OpRow> {
        self.kinds
            .iter()
            .map(|(k, s)| OpRow {
                op: k.name(),
                count: s.count,
                p50_us: s.hist.value_at_quantile(0.50),
                p99_us: s.hist.value_at_quantile(0.99),
                p999_us: s.hist.value_at_quantile(0.999),
                max_us: s.hist.max(),
            })
            .collect()
    }
}

/// One op kind in the report.
#[derive(Clone, Debug, Serialize)]
pub struct OpRow {
    pub op: &'static str,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// The progress line: ops, ops/s, MiB/s, model coverage.
pub fn progress_line(stats: &Stats, elapsed: Duration, touched: u64, blocks: u64) -> String {
    let s = elapsed.as_secs_f64().max(1e-9);
    format!(
        "fsx: {} ops, {:.0} ops/s, {:.1} MiB/s, coverage {:.1}%",
        stats.ops,
        stats.ops as f64 / s,
        stats.bytes as f64 / s / (1 << 20) as f64,
        100.0 * touched as f64 / blocks.max(1) as f64
    )
}

/// The summary printed at the end, and the `--json` report's body.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// `pass`, `mismatch`, `io-error` or `interrupted`.
    pub outcome: String,
    pub exit_code: u8,
    pub target: TargetInfo,
    pub first_lba: u64,
    pub blocks: u64,
    pub qd: usize,
    pub ops: u64,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    pub mib_per_s: f64,
    /// Share of the range's blocks the run wrote, unmapped or read.
    pub coverage_percent: f64,
    /// The op kinds that ran (weight > 0 and supported).
    pub ops_run: Vec<&'static str>,
    /// Op kinds left out, with why.
    pub ops_not_run: Vec<NotRun>,
    pub per_op: Vec<OpRow>,
    pub notes: Vec<String>,
    pub failure: Option<FailureReport>,
    /// The shrunk reproducer, when a failure was shrunk.
    pub reproducer: Option<Reproducer>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    pub name: String,
    pub kind: iesp_blockio::Kind,
    pub block_size: u32,
    pub blocks: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct NotRun {
    pub op: &'static str,
    pub reason: String,
}

/// The first failure.
#[derive(Clone, Debug, Serialize)]
pub struct FailureReport {
    /// `mismatch`, `miscompare`, `rejected` or `io`.
    pub kind: &'static str,
    pub op: u64,
    pub op_kind: &'static str,
    pub message: String,
    pub lba: Option<u64>,
    pub expected: Option<String>,
    pub expected_header: Option<String>,
    pub found_header: Option<String>,
    /// The first differing bytes, when the expected content is exact.
    pub difference: Option<String>,
    /// The ops that touched the block, oldest first.
    pub history: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Reproducer {
    pub ops: usize,
    pub path: Option<String>,
    pub reproduces: bool,
}

impl Summary {
    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let t = &self.target;
        s.push_str(&format!(
            "fsx: {} ({}, {} blocks of {} bytes), LBA {}..{}, QD {}\n",
            t.name,
            t.kind,
            t.blocks,
            t.block_size,
            self.first_lba,
            self.first_lba + self.blocks,
            self.qd
        ));
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        s.push_str(&format!("ops run: {}\n", self.ops_run.join(", ")));
        for n in &self.ops_not_run {
            s.push_str(&format!("not run: {} ({})\n", n.op, n.reason));
        }
        s.push_str(&format!(
            "{} ops in {:.2}s: {:.0} ops/s, {:.1} MiB/s, coverage {:.1}%\n",
            self.ops, self.elapsed_s, self.ops_per_s, self.mib_per_s, self.coverage_percent
        ));
        s.push_str(&format!(
            "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "op", "count", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
        ));
        for r in &self.per_op {
            s.push_str(&format!(
                "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                r.op, r.count, r.p50_us, r.p99_us, r.p999_us, r.max_us
            ));
        }
        if let Some(f) = &self.failure {
            s.push_str(&format!("FAIL ({}): {}\n", f.kind, f.message));
            if let Some(l) = f.lba {
                s.push_str(&format!("  op {} ({}) at LBA {l}\n", f.op, f.op_kind));
            }
            if let Some(e) = &f.expected {
                s.push_str(&format!("  expected: {e}\n"));
            }
            if let Some(h) = &f.expected_header {
                s.push_str(&format!("  expected header: {h}\n"));
            }
            if let Some(h) = &f.found_header {
                s.push_str(&format!("  found header:    {h}\n"));
            }
            if let Some(d) = &f.difference {
                s.push_str(&format!("  {d}\n"));
            }
            if !f.history.is_empty() {
                s.push_str("  history of the block:\n");
                for h in &f.history {
                    s.push_str(&format!("    {h}\n"));
                }
            }
        }
        if let Some(r) = &self.reproducer {
            s.push_str(&format!(
                "shrunk reproducer: {} ops{}{}\n",
                r.ops,
                r.path
                    .as_ref()
                    .map(|p| format!(", written to {p}"))
                    .unwrap_or_default(),
                if r.reproduces {
                    ""
                } else {
                    " (did not reproduce on re-run)"
                }
            ));
        }
        s.push_str(&format!("{}\n", self.outcome.to_uppercase()));
        s
    }
}
