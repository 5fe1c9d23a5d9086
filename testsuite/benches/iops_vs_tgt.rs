//! Random-read IOPS of the reference target against tgt, side by side.
//!
//! `cargo bench -p iesp-testsuite --bench iops_vs_tgt`
//!
//! Both targets serve a 64 MiB file LUN filled with the same data; libiscsi's
//! `iscsi-perf -r -b 8` (4 KiB random READ(16)) runs against each in turn,
//! alternating which goes first, at queue depth 1 and 32. The machine is
//! shared and noisy, so each figure is the median of several rounds and the
//! comparison is a ratio measured in one run. Environment:
//! `IESP_BENCH_SECONDS` (per run, default 5), `IESP_BENCH_ROUNDS` (default 3).
//!
//! At queue depth 1 every command is one round trip through the kernel and
//! two thread wake-ups, so the figure is bounded by the machine, not only
//! by the target. Each QD 1 round therefore also measures that bound: a bare
//! 48-byte TCP ping-pong between two threads over loopback, no iSCSI at all.

use iesp_target::config::Backing;
use iesp_testsupport::BlockingTarget;
use iesp_testsupport::bench::{env_u32, fill, loopback_ping_pong, median};
use iesp_testsupport::embedded::one_lun;
use iesp_testsupport::peers::libiscsi::{PerfOptions, iscsi_perf};
use iesp_testsupport::peers::tgt::Tgtd;
use iesp_testsupport::peers::{create_sparse_file, tools_or_skip};

const LUN_BYTES: u64 = 64 << 20;

/// Round trips per second of a bare 48-byte TCP ping-pong over loopback
/// between two blocking threads: what no QD 1 target can beat here.
fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too
    // with no time to spare: do nothing then.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if tools_or_skip(&["tgtd", "tgtadm", "iscsi-perf"]).is_none() {
        return;
    }
    let seconds = env_u32("IESP_BENCH_SECONDS", 5).max(1);
    let rounds = env_u32("IESP_BENCH_ROUNDS", 3).max(1);

    // Ours, in this process, on a file LUN like tgt's.
    let dir = tempfile::tempdir().expect("tempdir");
    let our_file = create_sparse_file(dir.path(), LUN_BYTES).expect("LUN file");
    fill(&our_file, LUN_BYTES);
    // On a default runtime (a worker per core), as `iesp-target` runs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let target = BlockingTarget::start_on(
        rt,
        one_lun(
            Backing::File {
                path: our_file,
                size: None,
            },
            512,
        ),
    );
    let ours = target.url(0);

    // tgt, with the same data.
    let (tgtd, tgt_url) = Tgtd::with_file_lun(LUN_BYTES).expect("tgtd");
    let tgt_file = std::fs::read_dir(tgtd.dir())
        .expect("tgtd dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "img"))
        .expect("tgt backing file");
    fill(&tgt_file, LUN_BYTES);

    println!(
        "iscsi-perf -r -b 8 (4 KiB random READ16), {seconds} s per run, median of {rounds} rounds"
    );
    println!(
        "{:>4}  {:>12}  {:>12}  {:>7}",
        "QD", "iesp IOPS", "tgt IOPS", "ratio"
    );
    for qd in [1u32, 32] {
        let (mut a, mut b, mut floor) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            if qd == 1 {
                floor.push(loopback_ping_pong(seconds));
            }
            let opts = PerfOptions {
                queue_depth: qd,
                blocks: 8,
                seconds,
                random: true,
                initiator_name: None,
            };
            let run = |url: &str| {
                iscsi_perf(url, &opts)
                    .unwrap_or_else(|e| panic!("iscsi-perf {url}: {e}"))
                    .iops
            };
            if round % 2 == 0 {
                a.push(run(&ours));
                b.push(run(&tgt_url));
            } else {
                b.push(run(&tgt_url));
                a.push(run(&ours));
            }
        }
        let (ma, mb) = (median(a.clone()), median(b.clone()));
        println!("{qd:>4}  {ma:>12.0}  {mb:>12.0}  {:>6.2}x", ma / mb);
        println!("  runs: iesp {a:?}  tgt {b:?}");
        if !floor.is_empty() {
            let mf = median(floor.clone());
            println!(
                "  QD 1 bound: bare TCP ping-pong {mf:.0} round trips/s ({:.0} us); iesp reaches {:.0}% of it, tgt {:.0}%",
                1e6 / mf,
                ma * 100.0 / mf,
                mb * 100.0 / mf
            );
            println!("  runs: ping-pong {floor:?}");
        }
    }
    drop(tgtd);
    target.stop();
}
