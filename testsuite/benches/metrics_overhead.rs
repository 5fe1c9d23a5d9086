//! What the target's statistics cost: two `iesp-target` processes, one
//! counting (`--statistics on`, the default, with `--metrics` up and
//! scraped every second) and one not (`--statistics off`: no per-LU or
//! per-connection counter is bumped), each with a 64 MiB RAM LUN, driven in
//! turn by libiscsi's `iscsi-perf -r -b 8 -m 32` (4 KiB random READ(16) at
//! QD 32).
//!
//! `cargo bench -p iesp-testsuite --bench metrics_overhead`
//!
//! A 2-core machine shared with other work is far noisier than the 2 %
//! goal, so the bench does not compare two long runs. It runs many short
//! rounds; each round runs both sides back to back, alternating which goes
//! first, and yields two paired ratios, on/off:
//!
//! - **IOPS**, as iscsi-perf reports it;
//! - **target CPU per I/O**: the CPU time the serving target process used
//!   during its run (the sum of `/proc/PID/task/*/schedstat`, nanoseconds;
//!   `/proc/PID/stat` utime+stime, in clock ticks, is printed beside it as
//!   a cross-check), divided by the I/Os done. CPU per I/O barely moves
//!   when a neighbour steals the cores: it counts what the target did, not
//!   how long it waited.
//!
//! It prints the median of each kind of paired ratio and their range, and
//! the per-command LU accounting timed alone in a tight loop. Nothing is
//! asserted: the figures go into docs/observability.md.
//!
//! With `IESP_BENCH_CALLGRIND=1` it then runs each side once more under
//! valgrind's callgrind and prints the instructions the target executed
//! per I/O, on and off, and their ratio: the least noisy figure, since it
//! does not depend on what else the machine runs.
//!
//! Environment: `IESP_BENCH_ROUNDS` (default 12), `IESP_BENCH_SECONDS`
//! (per run, default 2), `IESP_BENCH_CALLGRIND`, `IESP_TARGET_BIN` (the
//! `iesp-target` binary; default: built with `cargo build --release -p
//! iesp-target` and taken from beside this bench's own executable).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use iesp_testsupport::bench::env_u32;
use iesp_testsupport::peers::libiscsi::{PerfOptions, iscsi_perf};
use iesp_testsupport::peers::tools_or_skip;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

/// The `iesp-target` binary: `IESP_TARGET_BIN`, or built now (so it is
/// never older than the library this bench linked) and found in the
/// profile directory, the parent of this executable's `deps/`.
fn target_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IESP_TARGET_BIN") {
        return PathBuf::from(p);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "iesp-target",
            "--bin",
            "iesp-target",
        ])
        .status();
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("iesp-target"))
        .expect("profile directory");
    match built {
        Ok(s) if s.success() => {}
        other => eprintln!(
            "warning: cargo build -p iesp-target: {other:?}; using {}",
            bin.display()
        ),
    }
    assert!(bin.exists(), "no iesp-target at {}", bin.display());
    bin
}

/// A spawned target; killed when dropped.
struct Spawned {
    child: Child,
    portal: SocketAddr,
    metrics: Option<SocketAddr>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `iesp-target` with a 64 MiB RAM LUN on an ephemeral loopback
/// port, statistics on (with the metrics endpoint when `metrics`) or off;
/// under `valgrind --tool=callgrind --callgrind-out-file=FILE` when
/// `callgrind` names FILE.
fn spawn_target(
    bin: &PathBuf,
    statistics: bool,
    metrics: bool,
    callgrind: Option<&PathBuf>,
) -> Spawned {
    let mut cmd = match callgrind {
        Some(out) => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--lun",
        "ram:64M",
        "--log",
        "warn",
    ]);
    if !statistics {
        cmd.args(["--statistics", "off"]);
    } else if metrics {
        cmd.args(["--metrics", "127.0.0.1:0"]);
    }
    let metrics = statistics && metrics;
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iesp-target");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    // Reads the addresses, then keeps draining stderr so the child never
    // blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = line.strip_prefix("iesp-target: listening on ") {
                let _ = tx.send(("portal", a.trim().to_owned()));
            } else if let Some(a) = line.strip_prefix("iesp-target: metrics on http://") {
                let _ = tx.send(("metrics", a.trim_end_matches("/metrics").to_owned()));
            } else if line.contains("error") {
                eprintln!("iesp-target: {line}");
            }
        }
    });
    let (mut portal, mut endpoint) = (None, None);
    while portal.is_none() || (metrics && endpoint.is_none()) {
        let (kind, addr) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("iesp-target did not report its addresses");
        let addr: SocketAddr = addr.parse().expect("address");
        if kind == "portal" {
            portal = Some(addr);
        } else {
            endpoint = Some(addr);
        }
    }
    Spawned {
        child,
        portal: portal.unwrap(),
        metrics: endpoint,
    }
}

/// Nanoseconds on a CPU of every thread of `pid` (schedstat's first field).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of `pid` in clock ticks (`/proc/PID/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces; fields count from after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    get(11) + get(12)
}

/// Scrapes `addr` once a second, as Prometheus would, for ever.
fn scraper(addr: SocketAddr) {
    std::thread::spawn(move || {
        loop {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n");
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

/// One iscsi-perf run against `t`: IOPS, target CPU ns per I/O, target
/// clock ticks.
struct Run {
    iops: f64,
    ns_per_io: f64,
    ticks: u64,
}

fn run(t: &Spawned, opts: &PerfOptions) -> Run {
    let url = format!("iscsi://{}/{}/0", t.portal, iesp_target::DEFAULT_IQN);
    let pid = t.child.id();
    let (ns0, ticks0) = (cpu_ns(pid), cpu_ticks(pid));
    let r = iscsi_perf(&url, opts).unwrap_or_else(|e| panic!("iscsi-perf {url}: {e}"));
    let (ns1, ticks1) = (cpu_ns(pid), cpu_ticks(pid));
    let ios = (r.iops * f64::from(opts.seconds)).max(1.0);
    Run {
        iops: r.iops,
        ns_per_io: (ns1 - ns0) as f64 / ios,
        ticks: ticks1 - ticks0,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if tools_or_skip(&["iscsi-perf"]).is_none() {
        return;
    }
    let seconds = env_u32("IESP_BENCH_SECONDS", 2).max(1);
    let rounds = env_u32("IESP_BENCH_ROUNDS", 12).max(1);
    let bin = target_binary();
    let off = spawn_target(&bin, false, false, None);
    let on = spawn_target(&bin, true, true, None);
    scraper(on.metrics.expect("metrics endpoint"));
    let opts = PerfOptions {
        queue_depth: 32,
        blocks: 8,
        seconds,
        random: true,
        initiator_name: None,
    };
    // One warm-up run each (page faults of the RAM LUN, first logins).
    let mut warm = opts.clone();
    warm.seconds = 1;
    run(&on, &warm);
    run(&off, &warm);
    let (mut iops_ratio, mut cpu_ratio) = (Vec::new(), Vec::new());
    let (mut on_runs, mut off_runs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = run(&on, &opts);
            (a, run(&off, &opts))
        } else {
            let b = run(&off, &opts);
            (run(&on, &opts), b)
        };
        iops_ratio.push(a.iops / b.iops);
        cpu_ratio.push(a.ns_per_io / b.ns_per_io);
        eprintln!(
            "round {round}: on {:.0} IOPS {:.0} ns/IO ({} ticks), off {:.0} IOPS {:.0} ns/IO ({} ticks)",
            a.iops, a.ns_per_io, a.ticks, b.iops, b.ns_per_io, b.ticks
        );
        on_runs.push(a);
        off_runs.push(b);
    }
    let med = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
    let ticks = |v: &[Run]| v.iter().map(|r| r.ticks).sum::<u64>();
    println!(
        "iscsi-perf -r -b 8 -m 32 (4 KiB random READ16, QD 32) against two iesp-target processes, \
         {rounds} alternating rounds of {seconds} s"
    );
    println!(
        "statistics on (+ metrics scraped): median {:.0} IOPS, {:.0} ns target CPU per I/O",
        med(&on_runs, |r| r.iops),
        med(&on_runs, |r| r.ns_per_io)
    );
    println!(
        "statistics off:                    median {:.0} IOPS, {:.0} ns target CPU per I/O",
        med(&off_runs, |r| r.iops),
        med(&off_runs, |r| r.ns_per_io)
    );
    let (lo, hi) = range(&cpu_ratio);
    let m = median(cpu_ratio.clone());
    println!(
        "target CPU per I/O, on/off: median of paired ratios {m:.4} ({:+.2} %), range {lo:.3}..{hi:.3}",
        (m - 1.0) * 100.0
    );
    let (lo, hi) = range(&iops_ratio);
    let m = median(iops_ratio.clone());
    println!(
        "IOPS, on/off:               median of paired ratios {m:.4} ({:+.2} %), range {lo:.3}..{hi:.3}  (goal: within 2 %)",
        (m - 1.0) * 100.0
    );
    println!(
        "cross-check, /proc/PID/stat utime+stime over all rounds: on {} ticks, off {} ticks",
        ticks(&on_runs),
        ticks(&off_runs)
    );
    let ns = accounting_ns();
    println!("per-command LU accounting alone (tight loop): {ns:.0} ns");
    drop((on, off));
    if std::env::var("IESP_BENCH_CALLGRIND").as_deref() == Ok("1") {
        callgrind(&bin, &opts);
    }
}

/// Instructions the target executes per I/O, on and off, under callgrind:
/// one target at a time, counters zeroed after a warm-up run and dumped
/// after a measured run (`callgrind_control -z` / `-d`). No metrics
/// endpoint on either side: this is the counting alone. At QD 1, so that
/// every I/O is one wake-up of the target: at higher depths the
/// instructions per I/O follow how commands batch, which follows the rate
/// valgrind happens to get on a shared machine.
fn callgrind(bin: &PathBuf, opts: &PerfOptions) {
    let opts = &PerfOptions {
        queue_depth: 1,
        ..opts.clone()
    };
    if tools_or_skip(&["valgrind", "callgrind_control"]).is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("iesp-metrics-cg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut warm = opts.clone();
    warm.seconds = 1;
    let mut ir = Vec::new();
    for statistics in [true, false] {
        let name = if statistics { "on.out" } else { "off.out" };
        let out = dir.join(name);
        let t = spawn_target(bin, statistics, false, Some(&out));
        let url = format!("iscsi://{}/{}/0", t.portal, iesp_target::DEFAULT_IQN);
        let pid = t.child.id().to_string();
        let control = |flag: &str| {
            Command::new("callgrind_control")
                .args([flag, pid.as_str()])
                .stdout(Stdio::null())
                .status()
                .expect("callgrind_control")
        };
        iscsi_perf(&url, &warm).expect("iscsi-perf warm-up");
        control("-z");
        let r = iscsi_perf(&url, opts).expect("iscsi-perf");
        control("-d");
        drop(t);
        // The first dump is FILE.1; its `totals:` line is the Ir count.
        let dump = std::fs::read_to_string(dir.join(format!("{name}.1"))).expect("callgrind dump");
        let total: f64 = dump
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("totals line");
        let ios = r.iops * f64::from(opts.seconds);
        println!(
            "callgrind, QD 1, statistics {}: {total:.0} instructions over {ios:.0} I/Os ({:.0} IOPS under valgrind): {:.0} per I/O",
            if statistics { "on" } else { "off" },
            r.iops,
            total / ios
        );
        ir.push(total / ios);
    }
    println!(
        "callgrind instructions per I/O, on/off: {:.4} ({:+.2} %)",
        ir[0] / ir[1],
        (ir[0] / ir[1] - 1.0) * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Nanoseconds per [`LuStats::start`] + [`LuStats::finish`] of a 4 KiB
/// READ(16) that succeeded, in a tight loop.
fn accounting_ns() -> f64 {
    let stats = iesp_target::stats::LuStats::default();
    let cdb = [0x88u8; 16];
    let n = 2_000_000u32;
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        let started = stats.start();
        stats.finish(started, std::hint::black_box(&cdb), &[], 4096, 0, None);
    }
    let ns = t0.elapsed().as_nanos() as f64 / f64::from(n);
    assert_eq!(stats.read_bytes.get(), u64::from(n) * 4096);
    ns
}
