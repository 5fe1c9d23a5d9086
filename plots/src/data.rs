//! The result data of `iesp-test bench`, which bench writes and plot
//! reads: the JSON body (inside the common envelope, schema
//! `iesp-test/bench/1`, docs/schemas/bench.schema.json), one [`Point`] per
//! measured combination of target, block size, queue depth and jobs, each
//! with its serialised latency histogram ([`crate::hist`]) and per-second
//! series; and the [`Recorder`] that builds a point's figures from
//! individual completions.
//!
//! Points merge ([`Point::merge`]): runs of the same sweep on several
//! hosts (`--worker I/N`) add their histograms, operations and bytes, and
//! their IOPS (the workers ran at the same time).

use serde::{Deserialize, Serialize};

use crate::hist::{HistError, Latency, LatencyStats};

/// The output name in the envelope's `schema`.
pub const BENCH_OUTPUT: &str = "bench";
/// Its version.
pub const BENCH_VERSION: u32 = 1;

/// A target as bench saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Path or URL (password masked).
    pub name: String,
    /// `file`, `block-device`, `iscsi-lun` or `memory`.
    pub kind: String,
    pub block_size: u32,
    pub blocks: u64,
    pub direct_io: bool,
}

/// This run's share of the LBA space (`--worker I/N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub index: u32,
    pub count: u32,
}

/// The bare-TCP ping-pong bound (`--floor`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    /// Round trips per second of a 48-byte ping-pong over loopback.
    pub round_trips_per_s: f64,
    /// Its mean round trip, microseconds.
    pub rtt_us: f64,
}

/// One second of a point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the point's measurement started (0-based).
    pub t: u32,
    pub ops: u64,
    pub bytes: u64,
    /// Mean latency in this second, µs.
    pub mean_us: f64,
    /// 99th percentile in this second, µs (merged runs: the largest of
    /// the runs', an upper bound).
    pub p99_us: f64,
}

/// One measured combination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Which target (its name, or the label of a merged input).
    pub target: String,
    /// randread, randwrite, read, write or randrw.
    pub rw: String,
    /// Bytes per command.
    pub bs: u64,
    /// Commands in flight per job.
    pub qd: u32,
    /// Jobs (sessions or synchronous jobs) running at once.
    pub jobs: u32,
    /// Each job synchronous on its own thread (`--matrix`).
    pub sync: bool,
    /// Measured time, seconds (after the ramp).
    pub elapsed_s: f64,
    pub ops: u64,
    pub reads: u64,
    pub writes: u64,
    pub bytes: u64,
    pub errors: u64,
    pub iops: f64,
    pub mib_s: f64,
    pub latency_us: LatencyStats,
    /// Client CPU time (user + system, the whole process) over the
    /// measured time.
    pub cpu_s: f64,
    /// `cpu_s` per command, µs.
    pub cpu_us_per_io: f64,
    /// Every command's latency: HdrHistogram V2, base64, nanoseconds.
    pub histogram: String,
    pub series: Vec<Second>,
}

/// What a bench run wrote (the body inside the envelope).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchBody {
    pub targets: Vec<TargetInfo>,
    pub rw: String,
    /// Percentage of reads under randrw.
    pub rwmix_read: u32,
    pub runtime_s: f64,
    pub ramp_s: f64,
    pub worker: Option<Worker>,
    pub floor: Option<Floor>,
    pub points: Vec<Point>,
    /// `--compare`: each other target's IOPS over the first's, per point.
    #[serde(default)]
    pub ratios: Vec<Ratio>,
    /// Inputs of `bench merge` (empty for a run).
    #[serde(default)]
    pub merged_from: Vec<String>,
}

/// One comparison figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub bs: u64,
    pub qd: u32,
    pub jobs: u32,
    /// The target compared with the first one.
    pub target: String,
    pub baseline: String,
    /// `target`'s IOPS over `baseline`'s.
    pub iops_ratio: f64,
    /// `target`'s p99 over `baseline`'s.
    pub p99_ratio: f64,
}

impl Point {
    /// The key two runs' points are merged under.
    pub fn key(&self) -> (String, String, u64, u32, u32, bool) {
        (
            self.target.clone(),
            self.rw.clone(),
            self.bs,
            self.qd,
            self.jobs,
            self.sync,
        )
    }

    /// The decoded latency histogram.
    pub fn latency(&self) -> Result<Latency, HistError> {
        Latency::decode(&self.histogram)
    }

    /// Adds another run of the same point (same key), measured at the same
    /// time on another host: counts, histograms and rates add; the
    /// elapsed time is the longer; the CPU per command is the total CPU
    /// over the total commands; per-second rows add by second.
    pub fn merge(&mut self, other: &Point) -> Result<(), HistError> {
        let mut h = self.latency()?;
        h.merge(&other.latency()?);
        self.elapsed_s = self.elapsed_s.max(other.elapsed_s);
        self.ops += other.ops;
        self.reads += other.reads;
        self.writes += other.writes;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.iops += other.iops;
        self.mib_s += other.mib_s;
        self.cpu_s += other.cpu_s;
        self.cpu_us_per_io = per_io_us(self.cpu_s, self.ops);
        self.latency_us = h.stats();
        self.histogram = h.encode();
        for s in &other.series {
            match self.series.iter_mut().find(|x| x.t == s.t) {
                Some(x) => {
                    let n = x.ops + s.ops;
                    if n > 0 {
                        x.mean_us =
                            (x.mean_us * x.ops as f64 + s.mean_us * s.ops as f64) / n as f64;
                    }
                    x.ops = n;
                    x.bytes += s.bytes;
                    x.p99_us = x.p99_us.max(s.p99_us);
                }
                None => self.series.push(*s),
            }
        }
        self.series.sort_by_key(|s| s.t);
        Ok(())
    }
}

impl Second {
    /// Commands per second in this second: a point's last second may be
    /// partial (a runtime that is not whole seconds), and counts as the
    /// part of it that was measured.
    pub fn iops(&self, elapsed_s: f64) -> f64 {
        let covered = (elapsed_s - f64::from(self.t)).clamp(1e-3, 1.0);
        self.ops as f64 / covered
    }

    /// MiB/s in this second (see [`Second::iops`]).
    pub fn mib_s(&self, elapsed_s: f64) -> f64 {
        self.iops(elapsed_s) * self.bytes as f64 / self.ops.max(1) as f64 / f64::from(1u32 << 20)
    }
}

/// CPU seconds per command, in µs (0 without commands).
pub fn per_io_us(cpu_s: f64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        cpu_s * 1e6 / ops as f64
    }
}

/// One second's accumulator.
#[derive(Clone, Debug)]
struct SecondAcc {
    ops: u64,
    bytes: u64,
    sum_ns: u128,
    hist: Latency,
}

/// Builds a point's figures from completions: the whole histogram and
/// one accumulator per second.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    total: Latency,
    reads: u64,
    writes: u64,
    bytes: u64,
    errors: u64,
    seconds: Vec<SecondAcc>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// A command that completed `second` seconds into the measurement,
    /// after `ns` nanoseconds, moving `bytes`.
    pub fn record(&mut self, second: u32, ns: u64, bytes: u64, write: bool, ok: bool) {
        self.total.record_ns(ns);
        if write {
            self.writes += 1;
        } else {
            self.reads += 1;
        }
        self.errors += u64::from(!ok);
        self.bytes += bytes;
        let i = second as usize;
        while self.seconds.len() <= i {
            self.seconds.push(SecondAcc {
                ops: 0,
                bytes: 0,
                sum_ns: 0,
                hist: Latency::with_sigfig(2),
            });
        }
        let s = &mut self.seconds[i];
        s.ops += 1;
        s.bytes += bytes;
        s.sum_ns += u128::from(ns);
        s.hist.record_ns(ns);
    }

    /// Adds another recorder's completions.
    pub fn merge(&mut self, other: &Recorder) {
        self.total.merge(&other.total);
        self.reads += other.reads;
        self.writes += other.writes;
        self.bytes += other.bytes;
        self.errors += other.errors;
        for (i, s) in other.seconds.iter().enumerate() {
            if i >= self.seconds.len() {
                self.seconds.push(s.clone());
            } else {
                let x = &mut self.seconds[i];
                x.ops += s.ops;
                x.bytes += s.bytes;
                x.sum_ns += s.sum_ns;
                x.hist.merge(&s.hist);
            }
        }
    }

    /// Commands recorded.
    pub fn ops(&self) -> u64 {
        self.total.count()
    }

    /// The point: `meta` with the figures of what was recorded over
    /// `elapsed_s` seconds and `cpu_s` of client CPU.
    pub fn finish(&self, meta: PointMeta, elapsed_s: f64, cpu_s: f64) -> Point {
        let ops = self.ops();
        let secs = elapsed_s.max(1e-9);
        Point {
            target: meta.target,
            rw: meta.rw,
            bs: meta.bs,
            qd: meta.qd,
            jobs: meta.jobs,
            sync: meta.sync,
            elapsed_s,
            ops,
            reads: self.reads,
            writes: self.writes,
            bytes: self.bytes,
            errors: self.errors,
            iops: ops as f64 / secs,
            mib_s: self.bytes as f64 / f64::from(1u32 << 20) / secs,
            latency_us: self.total.stats(),
            cpu_s,
            cpu_us_per_io: per_io_us(cpu_s, ops),
            histogram: self.total.encode(),
            series: self
                .seconds
                .iter()
                .enumerate()
                .map(|(t, s)| Second {
                    t: t as u32,
                    ops: s.ops,
                    bytes: s.bytes,
                    mean_us: if s.ops == 0 {
                        0.0
                    } else {
                        s.sum_ns as f64 / s.ops as f64 / 1000.0
                    },
                    p99_us: s.hist.percentile_us(99.0),
                })
                .collect(),
        }
    }
}

/// What a point is, before it is measured.
#[derive(Clone, Debug, PartialEq)]
pub struct PointMeta {
    pub target: String,
    pub rw: String,
    pub bs: u64,
    pub qd: u32,
    pub jobs: u32,
    pub sync: bool,
}

/// The envelope `schema` value of a bench report.
pub fn bench_schema() -> String {
    format!("iesp-test/{BENCH_OUTPUT}/{BENCH_VERSION}")
}
