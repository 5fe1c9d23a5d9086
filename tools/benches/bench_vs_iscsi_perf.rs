//! Is `iesp-test bench` ever the bottleneck of what it measures? Its 4 KiB
//! random-read IOPS at queue depth 32 beside libiscsi's `iscsi-perf`
//! (`-r -b 8 -m 32`, READ(16)), against the same target in one run: our
//! reference target (in this process, on its own runtime, a 64 MiB file
//! LUN) and tgt (a 64 MiB file LUN), alternating which client goes first,
//! median of several rounds. Goal: bench ≥ 1.5× iscsi-perf.
//!
//! Both clients run as child processes (the `iesp-test` binary of this
//! package, `iesp-test bench --qd 32 --bs 4k --json -`), so each one's CPU
//! time is measured the same way: `getrusage(RUSAGE_CHILDREN)` around the
//! run, over the commands it completed (µs per I/O, whole process
//! lifetime: login included). bench's own figure (its process CPU over
//! the recorded time) is printed beside it.
//!
//! `cargo bench --profile release -p iesp-tools --bench bench_vs_iscsi_perf`.
//! Knobs: `IESP_BENCH_SECONDS` (per run, default 5), `IESP_BENCH_ROUNDS`
//! (default 3), `IESP_BENCH_QD` (32), `IESP_BENCH_NO_TGT=1`.
//! Figures are reported, never asserted: the machine is shared and noisy.
//! Last measured (README, a shared 2-core machine): 1.92-2.11× on our
//! target, 0.70-1.04× on tgt (tgt-bound); bench's client CPU 3.3-3.4 and
//! 11-15 µs per I/O against iscsi-perf's 6.0-6.1 and 10-15.

use std::io::Write;
use std::process::Command;

use iesp_target::config::Backing;
use iesp_testsupport::BlockingTarget;
use iesp_testsupport::embedded::one_lun;
use iesp_testsupport::peers::libiscsi::{PerfOptions, iscsi_perf};
use iesp_testsupport::peers::tgt::Tgtd;
use iesp_testsupport::peers::{create_sparse_file, tools_or_skip};

const LUN_BYTES: u64 = 64 << 20;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Fills a LUN file with pseudo-random data (no holes: reads hit data).
fn fill(path: &std::path::Path) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open LUN file");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..LUN_BYTES >> 20 {
        for c in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).expect("fill");
    }
    f.sync_all().expect("sync");
}

/// CPU seconds (user + system) of reaped children so far.
fn children_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// One client run: IOPS, CPU µs per I/O (rusage), and bench's own figure.
#[derive(Clone, Copy, Debug)]
struct Run {
    iops: f64,
    cpu_us: f64,
    own_cpu_us: f64,
}

fn bench_run(url: &str, qd: u32, secs: u32) -> Run {
    let c0 = children_cpu();
    let out = Command::new(env!("CARGO_BIN_EXE_iesp-test"))
        .args([
            "-q",
            "bench",
            "--qd",
            &qd.to_string(),
            "--bs",
            "4k",
            "--seed",
            "1",
        ])
        .args(["--runtime", &format!("{secs}s"), "--json", "-", url])
        .env("IESP_LOG", "error")
        .output()
        .expect("run iesp-test bench");
    let cpu = children_cpu() - c0;
    assert!(
        out.status.success(),
        "iesp-test bench {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench JSON");
    let p = &doc["points"][0];
    let (iops, ops) = (
        p["iops"].as_f64().unwrap_or(0.0),
        p["ops"].as_f64().unwrap_or(0.0),
    );
    Run {
        iops,
        cpu_us: if ops > 0.0 { cpu * 1e6 / ops } else { 0.0 },
        own_cpu_us: p["cpu_us_per_io"].as_f64().unwrap_or(0.0),
    }
}

fn perf_run(url: &str, qd: u32, secs: u32) -> Run {
    let c0 = children_cpu();
    let r = iscsi_perf(
        url,
        &PerfOptions {
            queue_depth: qd,
            blocks: 8,
            seconds: secs,
            random: true,
            initiator_name: Some("iqn.2026-11.org.iesp-test:bench-perf".into()),
        },
    )
    .unwrap_or_else(|e| panic!("iscsi-perf {url}: {e}"));
    let cpu = children_cpu() - c0;
    let ops = r.iops * f64::from(secs);
    Run {
        iops: r.iops,
        cpu_us: if ops > 0.0 { cpu * 1e6 / ops } else { 0.0 },
        own_cpu_us: f64::NAN,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let no_tgt = std::env::var("IESP_BENCH_NO_TGT").is_ok_and(|v| v == "1");
    let needed: &[&str] = if no_tgt {
        &["iscsi-perf"]
    } else {
        &["iscsi-perf", "tgtd", "tgtadm"]
    };
    if tools_or_skip(needed).is_none() {
        return;
    }
    let secs = env_u32("IESP_BENCH_SECONDS", 5);
    let rounds = env_u32("IESP_BENCH_ROUNDS", 3);
    let qd = env_u32("IESP_BENCH_QD", 32);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = create_sparse_file(dir.path(), LUN_BYTES).expect("LUN file");
    fill(&file);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ours = BlockingTarget::start_on(
        rt,
        one_lun(
            Backing::File {
                path: file,
                size: None,
            },
            512,
        ),
    );
    let mut targets = vec![("iesp-target".to_owned(), ours.url(0))];
    let tgtd = if no_tgt {
        None
    } else {
        let (t, url) = Tgtd::with_file_lun(LUN_BYTES).expect("tgtd");
        let backing = std::fs::read_dir(t.dir())
            .expect("tgtd dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "img"))
            .expect("tgt backing file");
        fill(&backing);
        targets.push(("tgt".to_owned(), url));
        Some(t)
    };

    println!(
        "4 KiB random READ at QD {qd}: iesp-test bench vs iscsi-perf, {secs} s per run, median of {rounds} rounds"
    );
    println!(
        "{:<12} {:>12} {:>12} {:>7}  {:>14} {:>14} {:>14}",
        "target",
        "bench IOPS",
        "perf IOPS",
        "ratio",
        "bench CPU µs",
        "(own, window)",
        "perf CPU µs"
    );
    for (name, url) in &targets {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            if round % 2 == 0 {
                a.push(bench_run(url, qd, secs));
                b.push(perf_run(url, qd, secs));
            } else {
                b.push(perf_run(url, qd, secs));
                a.push(bench_run(url, qd, secs));
            }
        }
        let m = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
        let (ai, bi) = (m(&a, |r| r.iops), m(&b, |r| r.iops));
        println!(
            "{name:<12} {ai:>12.0} {bi:>12.0} {:>6.2}x  {:>14.1} {:>14.1} {:>14.1}",
            ai / bi,
            m(&a, |r| r.cpu_us),
            m(&a, |r| r.own_cpu_us),
            m(&b, |r| r.cpu_us)
        );
        println!(
            "  runs: bench {:?}  iscsi-perf {:?}",
            a.iter().map(|r| r.iops.round()).collect::<Vec<_>>(),
            b.iter().map(|r| r.iops.round()).collect::<Vec<_>>()
        );
    }
    println!("goal: bench / iscsi-perf ≥ 1.50 (the client is never the bottleneck)");
    drop(tgtd);
    ours.stop();
}
