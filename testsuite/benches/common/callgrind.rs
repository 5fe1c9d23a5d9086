//! A target under callgrind, logged in, and its instructions per 4 KiB
//! READ: what `stats_instructions` and `target_instructions` share.
//!
//! The method: zero the counters (`callgrind_control -z`), issue N/4
//! reads, dump (`-d`), zero, issue N reads, dump. What happens once per
//! interval cancels out of the difference: one READ costs
//! `(Ir(N) - Ir(N/4)) / (3N/4)` ([`Side::round`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iesp_initiator::{LogicalUnit, LoginOptions, Session};

use super::target_process::Spawned;

/// 4 KiB in 512-byte blocks.
pub const BLOCKS: u32 = 8;
/// 4 KiB slots in a 64 MiB LUN.
pub const SLOTS: u64 = (64 << 20) / 4096;

/// One target under callgrind (started with its dumps at `out`), logged
/// in.
pub struct Side {
    pub name: &'static str,
    target: Spawned,
    out: PathBuf,
    dumps: u32,
    pub lu: LogicalUnit,
    _session: Session,
    /// Instructions per read, one entry per round.
    pub per_read: Vec<f64>,
}

impl Side {
    pub async fn login(name: &'static str, target: Spawned, out: PathBuf, initiator: &str) -> Side {
        let opts = LoginOptions::new(initiator, Some(iesp_target::DEFAULT_IQN));
        let session = Session::login(target.portal, opts)
            .await
            .unwrap_or_else(|e| panic!("login to the {name} target: {e}"));
        let lu = session.logical_unit(0).await.expect("LUN 0");
        Side {
            name,
            target,
            out,
            dumps: 0,
            lu,
            _session: session,
            per_read: Vec::new(),
        }
    }

    fn control(&self, flag: &str) {
        let pid = self.target.child.id().to_string();
        let status = Command::new("callgrind_control")
            .args([flag, pid.as_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("callgrind_control");
        assert!(status.success(), "callgrind_control {flag} {pid}: {status}");
    }

    /// Zeroes the counters, issues `n` reads, dumps: the instructions the
    /// target executed meanwhile.
    async fn interval(&mut self, n: u64, qd: u64, seed: u64) -> u64 {
        self.control("-z");
        reads(&self.lu, n, qd, seed).await;
        self.control("-d");
        self.dumps += 1;
        let dump = PathBuf::from(format!("{}.{}", self.out.display(), self.dumps));
        totals(&dump)
    }

    /// One round: N/4 reads, then N; records and returns the instructions
    /// per read, and logs the round on stderr under `label`.
    pub async fn round(&mut self, round: u32, n: u64, qd: u64, label: &str) -> f64 {
        let seed = u64::from(round) + 1;
        let small = n / 4;
        let a = self.interval(small, qd, seed).await;
        let b = self.interval(n, qd, seed + 1000).await;
        let per = (b as f64 - a as f64) / (n - small) as f64;
        eprintln!(
            "round {round}, {label}: {a} instructions over {small} reads, {b} over {n}: {per:.0} per read"
        );
        self.per_read.push(per);
        per
    }
}

/// The `totals:` (instructions) line of a callgrind dump, waiting a little
/// for the file to be complete.
fn totals(dump: &Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(dump)
            && let Some(v) = text.lines().find_map(|l| l.strip_prefix("totals:"))
        {
            return v.trim().parse().expect("totals value");
        }
        assert!(Instant::now() < deadline, "no totals in {}", dump.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` 4 KiB reads at xorshift-random 4 KiB-aligned LBAs from `seed`,
/// `qd` at a time (each of `qd` tasks reads its share in turn); every
/// read's length is checked.
pub async fn reads(lu: &LogicalUnit, n: u64, qd: u64, seed: u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for q in 0..qd {
        let lu = lu.clone();
        let share = n / qd + u64::from(q < n % qd);
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (q + 1);
        tasks.spawn_local(async move {
            for _ in 0..share {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let lba = (x % SLOTS) * u64::from(BLOCKS);
                let data = lu.read(lba, BLOCKS).await.expect("READ");
                assert_eq!(data.len(), 4096);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("reader task");
    }
}

/// Per-round figures as a list.
pub fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
