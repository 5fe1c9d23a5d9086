//! fsx's operations and the seeded generator of the op stream.
//!
//! An [`Op`] is everything needed to repeat a command: its kind, range and
//! number (the number is also the write generation of the data it writes,
//! so a replayed or shrunk op writes the same bytes). The [`Generator`]
//! draws op after op from one xoshiro stream: kind by weight, range by the
//! kind's size distribution. It never looks at results or at the model, so
//! one seed gives one op stream whatever the timing or the queue depth.

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// The kinds of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Read,
    Write,
    WriteFua,
    Unmap,
    WriteSame,
    WriteSameUnmap,
    CompareAndWrite,
    CompareAndWriteMiscompare,
    Flush,
    Reconnect,
    AbortTask,
    LunReset,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Read,
        Kind::Write,
        Kind::WriteFua,
        Kind::Unmap,
        Kind::WriteSame,
        Kind::WriteSameUnmap,
        Kind::CompareAndWrite,
        Kind::CompareAndWriteMiscompare,
        Kind::Flush,
        Kind::Reconnect,
        Kind::AbortTask,
        Kind::LunReset,
    ];

    /// The name in configs, logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::WriteFua => "write-fua",
            Kind::Unmap => "unmap",
            Kind::WriteSame => "write-same",
            Kind::WriteSameUnmap => "write-same-unmap",
            Kind::CompareAndWrite => "compare-and-write",
            Kind::CompareAndWriteMiscompare => "compare-and-write-miscompare",
            Kind::Flush => "flush",
            Kind::Reconnect => "reconnect",
            Kind::AbortTask => "abort-task",
            Kind::LunReset => "lun-reset",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        let s = s.replace('_', "-");
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Ops that need every other op finished first (they replace or reset
    /// the session).
    pub fn is_barrier(self) -> bool {
        matches!(self, Kind::Reconnect | Kind::LunReset)
    }

    /// Ops with a data range.
    pub fn has_range(self) -> bool {
        !matches!(self, Kind::Flush | Kind::Reconnect)
    }

    /// Ops only an iSCSI LUN can do.
    pub fn iscsi_only(self) -> bool {
        matches!(self, Kind::Reconnect | Kind::AbortTask | Kind::LunReset)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One operation, as the op log has it (one JSON line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    /// The op's number in the original stream (0-based); the data it
    /// writes is generation `i + 1`.
    pub i: u64,
    pub op: Kind,
    /// First block (0 for ops without a range).
    #[serde(default)]
    pub lba: u64,
    /// Blocks (0 for ops without a range).
    #[serde(default)]
    pub blocks: u64,
    /// WRITE SAME: the zero pattern (else a non-zero block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero: Option<bool>,
    /// UNMAP: the descriptors, `[lba, blocks]` each (then `lba`/`blocks`
    /// are the first one's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<[u64; 2]>>,
    /// Mismatching COMPARE AND WRITE: the byte offset, in the compared
    /// data, of the one byte made to differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miscompare_at: Option<u64>,
}

impl Op {
    /// A plain op of `kind` on `lba..lba + blocks`.
    pub fn new(i: u64, op: Kind, lba: u64, blocks: u64) -> Op {
        Op {
            i,
            op,
            lba,
            blocks,
            zero: None,
            ranges: None,
            miscompare_at: None,
        }
    }

    /// The write generation of its data.
    pub fn generation(&self) -> u64 {
        self.i + 1
    }

    /// The block ranges it touches, `(start, end)`.
    pub fn spans(&self) -> Vec<(u64, u64)> {
        match &self.ranges {
            Some(r) => r.iter().map(|&[l, n]| (l, l + n)).collect(),
            None if self.op.has_range() && self.blocks > 0 => {
                vec![(self.lba, self.lba + self.blocks)]
            }
            None => Vec::new(),
        }
    }

    /// Whether it touches `lba`.
    pub fn touches(&self, lba: u64) -> bool {
        self.spans().iter().any(|&(s, e)| (s..e).contains(&lba))
    }

    /// Blocks moved (for MiB/s): read or written.
    pub fn data_blocks(&self) -> u64 {
        match self.op {
            Kind::Read | Kind::Write | Kind::WriteFua | Kind::AbortTask | Kind::LunReset => {
                self.blocks
            }
            Kind::CompareAndWrite | Kind::CompareAndWriteMiscompare => 2 * self.blocks,
            Kind::WriteSame | Kind::WriteSameUnmap => 1,
            _ => 0,
        }
    }

    /// A short description for histories and messages.
    pub fn describe(&self) -> String {
        let mut s = format!("op {} {}", self.i, self.op);
        if let Some(r) = &self.ranges {
            let list: Vec<String> = r.iter().map(|[l, n]| format!("{l}+{n}")).collect();
            s.push_str(&format!(" [{}]", list.join(", ")));
        } else if self.op.has_range() {
            s.push_str(&format!(" LBA {}+{}", self.lba, self.blocks));
        }
        if let Some(z) = self.zero {
            s.push_str(if z { " zero" } else { " pattern" });
        }
        if let Some(m) = self.miscompare_at {
            s.push_str(&format!(" miscompare at byte {m}"));
        }
        s
    }
}

/// How block counts are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dist {
    /// Every count from min to max equally likely.
    Uniform,
    /// Log-uniform: each power of two equally likely (small ops common,
    /// large ones still drawn).
    Log,
}

/// A size distribution in blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    pub min: u64,
    pub max: u64,
    pub dist: Dist,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            min: 1,
            max: 64,
            dist: Dist::Log,
        }
    }
}

/// What the generator needs to know about the range and the device.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Blocks `first..end` are tested.
    pub first: u64,
    pub end: u64,
    /// The most blocks one READ/WRITE carries.
    pub max_io_blocks: u64,
    /// The most blocks one COMPARE AND WRITE compares.
    pub max_caw_blocks: u64,
    /// The most blocks one UNMAP descriptor covers (0: any).
    pub max_unmap_blocks: u64,
    pub block_size: u32,
}

/// The seeded op stream.
pub struct Generator {
    rng: Xoshiro256PlusPlus,
    /// Cumulative weights, by kind.
    table: Vec<(u64, Kind)>,
    total: u64,
    sizes: Vec<(Kind, Sizes)>,
    default_sizes: Sizes,
    shape: Shape,
    next: u64,
}

impl Generator {
    /// A stream from `seed`; `weights` must not all be 0.
    pub fn new(
        seed: u64,
        weights: &[(Kind, u32)],
        sizes: &[(Kind, Sizes)],
        default_sizes: Sizes,
        shape: Shape,
    ) -> Generator {
        let mut table = Vec::new();
        let mut total = 0u64;
        for &(k, w) in weights {
            if w > 0 {
                total += u64::from(w);
                table.push((total, k));
            }
        }
        Generator {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6673_782d_6f70_7321),
            table,
            total,
            sizes: sizes.to_vec(),
            default_sizes,
            shape,
            next: 0,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        if n <= 1 { 0 } else { self.rng.next_u64() % n }
    }

    fn sizes_of(&self, k: Kind) -> Sizes {
        self.sizes
            .iter()
            .find(|(x, _)| *x == k)
            .map_or(self.default_sizes, |&(_, s)| s)
    }

    fn count(&mut self, s: Sizes, cap: u64) -> u64 {
        let (min, max) = (s.min.max(1).min(cap.max(1)), s.max.max(1).min(cap.max(1)));
        let max = max.max(min);
        match s.dist {
            Dist::Uniform => min + self.below(max - min + 1),
            Dist::Log => {
                let lo = 63 - min.leading_zeros() as u64;
                let hi = 63 - max.leading_zeros() as u64;
                let e = lo + self.below(hi - lo + 1);
                let base = 1u64 << e;
                (base + self.below(base)).clamp(min, max)
            }
        }
    }

    /// A range of a drawn size at a uniform position inside the tested range.
    fn range(&mut self, s: Sizes, cap: u64) -> (u64, u64) {
        let span = self.shape.end - self.shape.first;
        let n = self.count(s, cap.min(span));
        let lba = self.shape.first + self.below(span - n + 1);
        (lba, n)
    }

    /// The next op.
    pub fn next_op(&mut self) -> Op {
        let i = self.next;
        self.next += 1;
        let pick = self.below(self.total);
        let kind = self
            .table
            .iter()
            .find(|(c, _)| pick < *c)
            .map_or(Kind::Read, |&(_, k)| k);
        let s = self.sizes_of(kind);
        let io = self.shape.max_io_blocks;
        match kind {
            Kind::Flush | Kind::Reconnect => Op::new(i, kind, 0, 0),
            Kind::Unmap => {
                let cap = match self.shape.max_unmap_blocks {
                    0 => u64::MAX,
                    n => n,
                };
                let want = 1 + self.below(4);
                let mut ranges: Vec<[u64; 2]> = Vec::new();
                for _ in 0..want {
                    let (l, n) = self.range(s, cap);
                    if ranges.iter().all(|&[a, b]| l + n <= a || a + b <= l) {
                        ranges.push([l, n]);
                    }
                }
                ranges.sort_unstable();
                let mut op = Op::new(i, kind, ranges[0][0], ranges[0][1]);
                op.ranges = Some(ranges);
                op
            }
            Kind::WriteSame | Kind::WriteSameUnmap => {
                let (l, n) = self.range(s, u64::MAX);
                let mut op = Op::new(i, kind, l, n);
                op.zero = Some(self.below(2) == 0);
                op
            }
            Kind::CompareAndWrite | Kind::CompareAndWriteMiscompare => {
                let cap = self.shape.max_caw_blocks.min((io / 2).max(1));
                let (l, n) = self.range(s, cap);
                let mut op = Op::new(i, kind, l, n);
                if kind == Kind::CompareAndWriteMiscompare {
                    op.miscompare_at = Some(self.below(n * u64::from(self.shape.block_size)));
                }
                op
            }
            _ => {
                let (l, n) = self.range(s, io);
                Op::new(i, kind, l, n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            first: 10,
            end: 1010,
            max_io_blocks: 128,
            max_caw_blocks: 8,
            max_unmap_blocks: 0,
            block_size: 512,
        }
    }

    #[test]
    fn ops_stay_in_range_and_repeat() {
        let w: Vec<_> = Kind::ALL.iter().map(|&k| (k, 1)).collect();
        let mut a = Generator::new(5, &w, &[], Sizes::default(), shape());
        let mut b = Generator::new(5, &w, &[], Sizes::default(), shape());
        for _ in 0..5000 {
            let op = a.next_op();
            assert_eq!(op, b.next_op());
            for (s, e) in op.spans() {
                assert!(s >= 10 && e <= 1010 && s < e, "{op:?}");
            }
            if matches!(op.op, Kind::Read | Kind::Write) {
                assert!(op.blocks <= 64);
            }
            if op.op == Kind::CompareAndWrite {
                assert!(op.blocks <= 8);
            }
        }
        let line = serde_json::to_string(&a.next_op()).unwrap();
        let back: Op = serde_json::from_str(&line).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), line);
    }
}
