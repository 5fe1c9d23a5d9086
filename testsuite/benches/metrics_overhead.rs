//! What the target's statistics cost: 4 KiB random-read IOPS at QD 32
//! against two targets in this process, one counting (per-LU counters and
//! latency histogram on, the Prometheus endpoint up and scraped every
//! second) and one not (`Target::set_statistics(false)`), side by side.
//!
//! `cargo bench -p iesp-testsuite --bench metrics_overhead`
//!
//! libiscsi's `iscsi-perf -r -b 8 -m 32` runs against each in turn,
//! alternating which goes first; each figure is the median of several
//! rounds and the result is the on/off ratio of one run. The goal is a
//! difference of at most 2 %. The "off" side still bumps the per-PDU
//! connection counters (two relaxed adds per command); what it skips is the
//! per-command LU accounting (two clock reads, the histogram, the in-flight
//! gauge, the command and byte counters). Because the loopback path on a
//! shared machine is noisier than 2 %, the bench also times that
//! accounting alone in a tight loop and prints it as a share of the time
//! one command takes at the measured rate. Environment: `IESP_BENCH_SECONDS`
//! (per run, default 5), `IESP_BENCH_ROUNDS` (default 5).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iesp_target::config::{Backing, LunSpec, TargetConfig};
use iesp_target::server::{Target, serve};
use iesp_testsupport::peers::libiscsi::{PerfOptions, iscsi_perf};
use iesp_testsupport::peers::tools_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Starts a target with a 64 MiB RAM LUN; returns its portal and, when
/// `metrics`, the address of its metrics endpoint.
async fn start(statistics: bool, metrics: bool) -> (SocketAddr, Option<SocketAddr>, String) {
    let mut cfg = TargetConfig::default();
    cfg.targets[0].luns = vec![LunSpec {
        backing: Backing::Ram { size: 64 << 20 },
        ..LunSpec::default()
    }];
    let iqn = cfg.targets[0].iqn.clone();
    let target: Arc<Target> = Target::from_config(&cfg).expect("target");
    target.set_statistics(statistics);
    let portal = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = portal.local_addr().expect("addr");
    let mut endpoint = None;
    if metrics {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        endpoint = Some(l.local_addr().expect("addr"));
        tokio::spawn(iesp_target::metrics::serve_metrics(
            l,
            target.clone(),
            std::future::pending(),
        ));
    }
    tokio::spawn(serve(portal, target, std::future::pending()));
    (addr, endpoint, iqn)
}

/// Scrapes `addr` once a second, as Prometheus would.
async fn scraper(addr: SocketAddr) {
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if tools_or_skip(&["iscsi-perf"]).is_none() {
        return;
    }
    let seconds = env_u32("IESP_BENCH_SECONDS", 5).max(1);
    let rounds = env_u32("IESP_BENCH_ROUNDS", 5).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (on, off) = rt.block_on(async {
        let (on, endpoint, iqn) = start(true, true).await;
        let (off, _, _) = start(false, false).await;
        if let Some(e) = endpoint {
            tokio::spawn(scraper(e));
        }
        (
            format!("iscsi://{on}/{iqn}/0"),
            format!("iscsi://{off}/{iqn}/0"),
        )
    });
    let opts = PerfOptions {
        queue_depth: 32,
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
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            a.push(run(&on));
            b.push(run(&off));
        } else {
            b.push(run(&off));
            a.push(run(&on));
        }
    }
    let (ma, mb) = (median(a.clone()), median(b.clone()));
    println!(
        "iscsi-perf -r -b 8 -m 32 (4 KiB random READ16, QD 32), {seconds} s per run, median of {rounds} rounds"
    );
    println!("statistics on + metrics scraped: {ma:.0} IOPS");
    println!("statistics off:                  {mb:.0} IOPS");
    println!(
        "on/off: {:.3} ({:+.1} %; goal: within 2 %)",
        ma / mb,
        (ma / mb - 1.0) * 100.0
    );
    println!("  runs: on {a:?}  off {b:?}");
    // The accounting alone, without the noise of the network path: what
    // one command's start/finish costs, against what one command takes at
    // the measured rate (both cores busy).
    let ns = accounting_ns();
    let per_command_ns = 1e9 / mb;
    println!(
        "per-command accounting: {ns:.0} ns, {:.2} % of the {:.1} us one command takes at {mb:.0} IOPS",
        ns * 100.0 / per_command_ns,
        per_command_ns / 1000.0
    );
    drop(rt);
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
