//! Our initiator as a load generator against libiscsi's `iscsi-perf`, side
//! by side on the same target in one run: 4 KiB random reads at queue
//! depth 1 and 32, median of several rounds, and the ratio.
//!
//! `cargo bench -p iesp-testsuite --bench initiator_vs_iscsi_perf`
//! (`IESP_BENCH_SECONDS`, default 5; `IESP_BENCH_ROUNDS`, default 3).
//! Both clients are single-threaded: our session runs on a current-thread
//! runtime, as iscsi-perf runs one event loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iesp_initiator::{LoginOptions, Session};
use iesp_testsupport::BlockingTarget;
use iesp_testsupport::bench::{env_u32, median};
use iesp_testsupport::peers::libiscsi::{PerfOptions, iscsi_perf};
use iesp_testsupport::peers::tools_or_skip;

/// 4 KiB random READs with `depth` in flight for `secs`, on its own
/// single-threaded runtime; returns IOPS.
fn ours(addr: std::net::SocketAddr, iqn: &str, depth: usize, secs: u32) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let session = Session::login(
            addr,
            LoginOptions::new("iqn.2026-11.org.iesp-test:bench", Some(iqn)),
        )
        .await
        .expect("login");
        session.set_trace_capacity(0);
        let lu = Arc::new(session.logical_unit(0).await.expect("LUN 0"));
        let done = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs(u64::from(secs));
        let mut jobs = tokio::task::JoinSet::new();
        for w in 0..depth {
            let (lu, done) = (lu.clone(), done.clone());
            jobs.spawn(async move {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64).wrapping_mul(0x1234_5678_9abc);
                let slots = lu.blocks() / 8;
                while Instant::now() < stop {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    lu.read((x % slots) * 8, 8).await.expect("READ");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let t0 = Instant::now();
        while jobs.join_next().await.is_some() {}
        let iops = done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
        session.logout().await.expect("logout");
        iops
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if tools_or_skip(&["iscsi-perf"]).is_none() {
        return;
    }
    let seconds = env_u32("IESP_BENCH_SECONDS", 5).max(1);
    let rounds = env_u32("IESP_BENCH_ROUNDS", 3).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let target = BlockingTarget::with_file_lun(&dir.path().join("lun0.img"), 64 << 20);
    let url = target.url(0);
    println!(
        "4 KiB random READ against iesp-target, {seconds} s per run, median of {rounds} rounds"
    );
    println!(
        "{:>4}  {:>14}  {:>14}  {:>7}",
        "QD", "iesp initiator", "iscsi-perf", "ratio"
    );
    for qd in [1u32, 32] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let perf = || {
                let opts = PerfOptions {
                    queue_depth: qd,
                    blocks: 8,
                    seconds,
                    random: true,
                    initiator_name: None,
                };
                iscsi_perf(&url, &opts).expect("iscsi-perf").iops
            };
            if round % 2 == 0 {
                a.push(ours(target.addr(), target.iqn(), qd as usize, seconds));
                b.push(perf());
            } else {
                b.push(perf());
                a.push(ours(target.addr(), target.iqn(), qd as usize, seconds));
            }
        }
        let (ma, mb) = (median(a.clone()), median(b.clone()));
        println!("{qd:>4}  {ma:>14.0}  {mb:>14.0}  {:>6.2}x", ma / mb);
        println!("  runs: iesp {a:?}  iscsi-perf {b:?}");
    }
}
