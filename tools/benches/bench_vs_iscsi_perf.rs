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
//! the recorded time) is printed beside it. bench runs twice per round: as
//! a user runs it (tokio's default workers) and on one worker thread
//! (`TOKIO_WORKER_THREADS=1`), which shows what the wake-ups between the
//! session's reader and the slots on the other worker cost the client.
//!
//! Is the target saturated? During every client run the target process's
//! threads are sampled from `/proc/PID/task/*/stat` (tgtd's pid; for our
//! target, this process, whose other threads only wait): all threads, the
//! main thread (tgtd's event loop) and the busiest thread, in % of one
//! core, with the whole machine's busy share of all CPUs (`/proc/stat`).
//! A target thread near 100% with both clients: the target sets the
//! figure. The machine near 100% busy: everything competes for CPU, and a
//! client that spends more per I/O leaves less to the target.
//!
//! `cargo bench --profile release -p iesp-tools --bench bench_vs_iscsi_perf`.
//! Knobs: `IESP_BENCH_SECONDS` (per run, default 5), `IESP_BENCH_ROUNDS`
//! (default 3), `IESP_BENCH_QD` (32), `IESP_BENCH_NO_TGT=1`.
//! Figures are reported, never asserted: the machine is shared and noisy.
//! Figures measured: README, "bench vs iscsi-perf".

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use iesp_target::config::Backing;
use iesp_testsupport::BlockingTarget;
use iesp_testsupport::bench::{fill, median};
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

/// Fills a LUN file with pseudo-random data (no holes: reads hit data).
/// CPU seconds (user + system) of reaped children so far.
fn children_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux
/// whatever the kernel's HZ).
const USER_HZ: f64 = 100.0;

/// The CPU ticks (user + system) of every thread of process `pid` so far,
/// by thread id, with the thread's name.
fn thread_ticks(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.filter_map(Result::ok) {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `tid (comm) state ppid …`: comm may hold spaces and parentheses,
        // so fields are counted from the last ')'; utime and stime are
        // fields 14 and 15 of the whole line.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.insert(tid, (name, tick(11) + tick(12)));
    }
    out
}

/// The machine's (busy, total) ticks so far over all CPUs, from the first
/// line of `/proc/stat` (idle and iowait are not busy).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The target process's CPU over one client run, from its threads' ticks.
#[derive(Clone, Debug, Default)]
struct TargetCpu {
    /// All its threads, in % of one core.
    total: f64,
    /// The busiest thread, in % of one core, and its name.
    busiest: f64,
    busiest_name: String,
    /// The main thread (tid = pid), in % of one core: tgtd's event loop,
    /// which decodes every PDU (its 16 backing-store threads do the reads).
    main: f64,
    /// The whole machine's busy share of all its CPUs, in %: near 100, the
    /// processes compete for CPU and none of them alone sets the figure.
    machine: f64,
}

/// Samples the threads of the target process around one client run.
struct CpuWatch {
    pid: u32,
    start: HashMap<u32, (String, u64)>,
    machine: (u64, u64),
    t0: Instant,
}

impl CpuWatch {
    fn start(pid: u32) -> CpuWatch {
        CpuWatch {
            pid,
            start: thread_ticks(pid),
            machine: machine_ticks(),
            t0: Instant::now(),
        }
    }

    /// Thread ticks since `start` (a thread born meanwhile from 0; one that
    /// ended meanwhile is not seen).
    fn stop(self) -> TargetCpu {
        let wall = self.t0.elapsed().as_secs_f64();
        let mut cpu = TargetCpu::default();
        let (busy, total) = machine_ticks();
        let (b0, t0) = self.machine;
        cpu.machine =
            busy.saturating_sub(b0) as f64 * 100.0 / total.saturating_sub(t0).max(1) as f64;
        for (tid, (name, ticks)) in thread_ticks(self.pid) {
            let before = self.start.get(&tid).map_or(0, |s| s.1);
            let pct = ticks.saturating_sub(before) as f64 / USER_HZ / wall * 100.0;
            cpu.total += pct;
            if tid == self.pid {
                cpu.main = pct;
            }
            if pct > cpu.busiest {
                cpu.busiest = pct;
                cpu.busiest_name = name;
            }
        }
        cpu
    }
}

/// One client run: IOPS, CPU µs per I/O (rusage), bench's own figure, and
/// the target's CPU meanwhile.
#[derive(Clone, Debug)]
struct Run {
    iops: f64,
    cpu_us: f64,
    own_cpu_us: f64,
    target: TargetCpu,
}

/// `iesp-test bench` on `url`; `one_worker` runs it on one tokio worker
/// thread (`TOKIO_WORKER_THREADS=1`), where the session's reader and the 32
/// slots share a thread and no completion wakes another thread.
fn bench_run(url: &str, target_pid: u32, qd: u32, secs: u32, one_worker: bool) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iesp-test"));
    if one_worker {
        cmd.env("TOKIO_WORKER_THREADS", "1");
    } else {
        cmd.env_remove("TOKIO_WORKER_THREADS");
    }
    let c0 = children_cpu();
    let watch = CpuWatch::start(target_pid);
    let out = cmd
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
    let target = watch.stop();
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
        target,
    }
}

fn perf_run(url: &str, target_pid: u32, qd: u32, secs: u32) -> Run {
    let c0 = children_cpu();
    let watch = CpuWatch::start(target_pid);
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
    let target = watch.stop();
    let cpu = children_cpu() - c0;
    let ops = r.iops * f64::from(secs);
    Run {
        iops: r.iops,
        cpu_us: if ops > 0.0 { cpu * 1e6 / ops } else { 0.0 },
        own_cpu_us: f64::NAN,
        target,
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
    fill(&file, LUN_BYTES);
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
    // Our target runs in this process, which otherwise only waits for its
    // children: its threads' CPU is the target's.
    let mut targets = vec![("iesp-target".to_owned(), ours.url(0), std::process::id())];
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
        fill(&backing, LUN_BYTES);
        targets.push(("tgt".to_owned(), url, t.pid()));
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
    for (name, url, pid) in &targets {
        let pid = *pid;
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Each client goes first, second and third in turn.
            for k in 0..3 {
                match (round + k) % 3 {
                    0 => a.push(bench_run(url, pid, qd, secs, false)),
                    1 => b.push(perf_run(url, pid, qd, secs)),
                    _ => c.push(bench_run(url, pid, qd, secs, true)),
                }
            }
        }
        let m = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
        let (ai, bi, ci) = (m(&a, |r| r.iops), m(&b, |r| r.iops), m(&c, |r| r.iops));
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
        println!(
            "  bench on one tokio worker: {ci:.0} IOPS ({:.2}x iscsi-perf), client CPU {:.1} µs \
             per I/O; runs {:?}",
            ci / bi,
            m(&c, |r| r.cpu_us),
            c.iter().map(|r| r.iops.round()).collect::<Vec<_>>()
        );
        for (client, runs) in [("bench", &a), ("iscsi-perf", &b), ("bench, 1 worker", &c)] {
            let busiest = runs
                .iter()
                .map(|r| format!("{:.0}% {}", r.target.busiest, r.target.busiest_name))
                .collect::<Vec<_>>();
            // Our target's process is this one: its main thread only waits.
            let main = if pid == std::process::id() {
                String::new()
            } else {
                format!(", main thread {:.0}%", m(runs, |r| r.target.main))
            };
            println!(
                "  {name} CPU during {client} (% of one core, medians): all threads {:.0}%{main}; \
                 busiest thread per run {busiest:?}; machine busy {:.0}% of all CPUs",
                m(runs, |r| r.target.total),
                m(runs, |r| r.target.machine)
            );
        }
    }
    println!("goal: bench / iscsi-perf ≥ 1.50 (the client is never the bottleneck)");
    println!(
        "a target thread near 100% of a core with both clients: the target, not the client, \
         sets the figure; the machine near 100% busy: CPU contention does"
    );
    drop(tgtd);
    ours.stop();
}
