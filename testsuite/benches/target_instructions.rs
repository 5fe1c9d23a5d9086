//! What one 4 KiB READ costs the target, in instructions (issue 16): an
//! `iesp-target` process under valgrind's callgrind serving a 64 MiB file
//! LUN (the LUN `engine_iops_vs_tgt` measures), driven by our initiator
//! with an exact number of 4 KiB READ(10)s at random LBAs, 32 in flight.
//!
//! `cargo bench --profile release -p iesp-testsuite --bench target_instructions`
//!
//! Instruction counts do not depend on what else the machine runs, so this
//! is the figure to compare changes of the target's per-command path with
//! on a shared machine, where the wall-clock CPU µs per I/O of
//! `engine_iops_vs_tgt` move with the load. They count the target's user
//! space only: the kernel's work for its `pread`, `recvfrom`, `writev` and
//! `epoll_wait` is not in them.
//!
//! Method (as `stats_instructions`): the process logs in once and reads a
//! warm-up; then, every round, the bench zeroes the counters
//! (`callgrind_control -z`), issues N/4 reads, dumps (`-d`), zeroes,
//! issues N reads, dumps. What happens once per interval cancels out of
//! the difference: one READ costs `(Ir(N) - Ir(N/4)) / (3N/4)`. The target
//! runs with one runtime worker thread and keep-alive off (see
//! `common/target_process.rs`). Under callgrind the target is the slow
//! side, so the initiator keeps all 32 commands queued and the target takes
//! them in bursts, as a saturated target does.
//!
//! With `IESP_BASELINE_BIN=PATH` a second binary (say, `iesp-target` built
//! from an older commit) is measured the same way in the same run, rounds
//! alternating which goes first, and the ratio of the medians is printed.
//! Nothing is asserted.
//!
//! Environment: `IESP_BENCH_READS` (N, default 20000), `IESP_BENCH_ROUNDS`
//! (default 3), `IESP_BENCH_QD` (default 32), `IESP_BENCH_LUN` (`file`, the
//! default, or `ram`), `IESP_BENCH_KEEP` (keep the dumps for
//! `callgrind_annotate`), `IESP_TARGET_BIN`, `IESP_BASELINE_BIN`.

use std::path::{Path, PathBuf};

use iesp_testsupport::bench::{env_u32, fill, median};
use iesp_testsupport::peers::{create_sparse_file, tools_or_skip};

#[path = "common/callgrind.rs"]
mod callgrind;
#[path = "common/target_process.rs"]
mod target_process;
use callgrind::{Side, list, reads};
use target_process::{spawn_target_lun, target_binary};

const LUN_BYTES: u64 = 64 << 20;

async fn start(name: &'static str, bin: &Path, lun: &str, dir: &Path) -> Side {
    let out = dir.join(format!("{name}.out"));
    let target = spawn_target_lun(bin, lun, true, false, Some(&out));
    Side::login(
        name,
        target,
        out,
        "iqn.2026-11.org.iesp-test:target-instructions",
    )
    .await
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if tools_or_skip(&["valgrind", "callgrind_control"]).is_none() {
        return;
    }
    let n = u64::from(env_u32("IESP_BENCH_READS", 20_000).max(8));
    let rounds = env_u32("IESP_BENCH_ROUNDS", 3).max(1);
    let qd = u64::from(env_u32("IESP_BENCH_QD", 32).clamp(1, 128));
    let bin = target_binary();
    let baseline = std::env::var_os("IESP_BASELINE_BIN").map(PathBuf::from);
    let dir = std::env::temp_dir().join(format!("iesp-target-cg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let lun = match std::env::var("IESP_BENCH_LUN").as_deref() {
        Ok("ram") => "ram:64M".to_owned(),
        Ok("file") | Err(_) => {
            let file = create_sparse_file(&dir, LUN_BYTES).expect("LUN file");
            fill(&file, LUN_BYTES);
            format!("file:{}", file.display())
        }
        Ok(other) => panic!("IESP_BENCH_LUN={other}: file or ram"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let sides = local.block_on(&rt, async {
        let mut sides = vec![start("this", &bin, &lun, &dir).await];
        if let Some(b) = &baseline {
            sides.push(start("baseline", b, &lun, &dir).await);
        }
        // Warm-up: the LUN's pages, buffer pools and maps grown.
        for side in &sides {
            reads(&side.lu, n / 4, qd, 99).await;
        }
        for round in 0..rounds {
            if round % 2 == 1 {
                sides.reverse();
            }
            for side in sides.iter_mut() {
                let label = side.name;
                side.round(round, n, qd, label).await;
            }
        }
        sides.sort_by_key(|s| s.name != "this");
        sides
    });
    println!(
        "callgrind, target instructions per 4 KiB READ(10) at QD {qd} on a 64 MiB {} LUN, {rounds} rounds of {n} reads minus {} reads:",
        lun.split(':').next().unwrap_or("?"),
        n / 4
    );
    let medians: Vec<f64> = sides.iter().map(|s| median(s.per_read.clone())).collect();
    for (side, m) in sides.iter().zip(&medians) {
        println!(
            "{:<9} {}: median {m:.0} (rounds: {})",
            side.name,
            if side.name == "this" {
                bin.display().to_string()
            } else {
                baseline
                    .as_deref()
                    .map(|b| b.display().to_string())
                    .unwrap_or_default()
            },
            list(&side.per_read)
        );
    }
    if let [this, base] = medians[..] {
        println!(
            "this/baseline: {:.3} ({:+.1} %, {:+.0} instructions per read)",
            this / base,
            (this / base - 1.0) * 100.0,
            this - base
        );
    }
    drop(sides);
    if std::env::var_os("IESP_BENCH_KEEP").is_some() {
        println!("callgrind dumps kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
