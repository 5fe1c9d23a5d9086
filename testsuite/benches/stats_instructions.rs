//! What the target's statistics cost, in instructions: two `iesp-target`
//! processes under valgrind's callgrind, one counting (`--statistics on`,
//! the default) and one not (`--statistics off`), each with a 64 MiB RAM
//! LUN, driven in turn by our initiator with an exact number of 4 KiB
//! READ(10)s at random LBAs (the same sequence for both).
//!
//! `cargo bench -p iesp-testsuite --bench stats_instructions`
//!
//! Instruction counts do not depend on what else the machine runs, so
//! this is the figure for the "≤ 2 %" goal that wall-clock IOPS on a shared
//! machine cannot give (`metrics_overhead` measures those). Each process
//! logs in once and reads a warm-up; then, for every round, the bench
//! zeroes the process's counters (`callgrind_control -z`), issues N/4
//! reads, dumps (`callgrind_control -d`), zeroes, issues N reads, dumps.
//! What the target does once per interval (waking up for the control
//! command, the first wake-up of the session) is in both dumps and
//! cancels out of the difference, so one READ costs
//! `(Ir(N) - Ir(N/4)) / (3N/4)` instructions. Rounds alternate between the
//! two processes; the bench prints every round's figure, the medians, and
//! the on/off ratio of the medians and of each round's pair. Nothing is
//! asserted.
//!
//! The targets run with one runtime worker thread and keep-alive off (see
//! `common/target_process.rs`); the metrics endpoint is not started: this
//! is the counting on the data path alone (a scrape reads the counters
//! and costs nothing per command).
//!
//! Environment: `IESP_BENCH_READS` (N, default 4000), `IESP_BENCH_ROUNDS`
//! (default 3), `IESP_BENCH_QD` (reads in flight, default 1: every READ is
//! then one wake-up of the target; at higher depths the instructions per
//! READ follow how commands batch, which follows timing),
//! `IESP_BENCH_KEEP` (keep the dumps, `on.out.K` / `off.out.K`, for
//! `callgrind_annotate`), `IESP_TARGET_BIN`.

use std::path::Path;

use iesp_testsupport::bench::{env_u32, median};
use iesp_testsupport::peers::tools_or_skip;

#[path = "common/callgrind.rs"]
mod callgrind;
#[path = "common/target_process.rs"]
mod target_process;
use callgrind::{Side, list, reads};
use target_process::{spawn_target, target_binary};

async fn start(bin: &Path, dir: &Path, statistics: bool) -> Side {
    let name = if statistics { "on" } else { "off" };
    let out = dir.join(format!("{name}.out"));
    let target = spawn_target(bin, statistics, false, Some(&out));
    Side::login(
        name,
        target,
        out,
        "iqn.2026-11.org.iesp-test:stats-instructions",
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
    let n = u64::from(env_u32("IESP_BENCH_READS", 4000).max(8));
    let rounds = env_u32("IESP_BENCH_ROUNDS", 3).max(1);
    let qd = u64::from(env_u32("IESP_BENCH_QD", 1).clamp(1, 128));
    let bin = target_binary();
    let dir = std::env::temp_dir().join(format!("iesp-stats-cg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let (on, off) = local.block_on(&rt, async {
        let mut on = start(&bin, &dir, true).await;
        let mut off = start(&bin, &dir, false).await;
        // Warm-up: first touches of the LUN's pages, buffer pools grown.
        reads(&on.lu, n / 4, qd, 99).await;
        reads(&off.lu, n / 4, qd, 99).await;
        for round in 0..rounds {
            let order: [&mut Side; 2] = if round % 2 == 0 {
                [&mut on, &mut off]
            } else {
                [&mut off, &mut on]
            };
            for side in order {
                let label = format!("statistics {}", side.name);
                side.round(round, n, qd, &label).await;
            }
        }
        (on, off)
    });
    let (m_on, m_off) = (median(on.per_read.clone()), median(off.per_read.clone()));
    let pairs: Vec<f64> = on
        .per_read
        .iter()
        .zip(&off.per_read)
        .map(|(a, b)| a / b)
        .collect();
    let (lo, hi) = pairs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        });
    println!(
        "callgrind, target instructions per 4 KiB READ(10) at QD {qd}, {rounds} rounds of {} reads minus {} reads:",
        n,
        n / 4
    );
    println!(
        "statistics on:  median {m_on:.0} (rounds: {})",
        list(&on.per_read)
    );
    println!(
        "statistics off: median {m_off:.0} (rounds: {})",
        list(&off.per_read)
    );
    println!(
        "on/off: {:.4} ({:+.2} %, {:.0} instructions per read); paired rounds {lo:.4}..{hi:.4}  (goal: within 2 %)",
        m_on / m_off,
        (m_on / m_off - 1.0) * 100.0,
        m_on - m_off
    );
    drop((on, off));
    if std::env::var_os("IESP_BENCH_KEEP").is_some() {
        println!("callgrind dumps kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
