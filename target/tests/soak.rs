//! Soak (issue 13): 64 sessions x QD32 of mixed 4 KiB reads and writes on
//! the `iesp-target` binary, every read checked against what its slot last
//! wrote, with the target's RSS sampled throughout. Reports errors (goal 0),
//! RSS min/max and IOPS per interval; fails on any error or on RSS growing
//! past the memory budget.
//!
//! The series is written as bench CSV (`soak.csv`, which `iesp-test plot`
//! reads) and drawn as two charts, `soak-iops.png` and `soak-rss.png`, in
//! `$IESP_SOAK_OUT` (default: `soak/` under cargo's target tmpdir).
//!
//! CI runs 60 s. The 10-minute soak is the same test with
//! `IESP_SOAK_SECS=600`:
//!
//! ```sh
//! IESP_SOAK_SECS=600 cargo test --release -p iesp-target --test soak -- --nocapture
//! ```

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iesp_initiator::{LoginOptions, Session};

const SESSIONS: u64 = 64;
const QD: u64 = 32;
/// 4 KiB blocks each in-flight slot owns: slots never share a block, so
/// every read has one right answer.
const SLOT_BLOCKS: u64 = 8;
const MIB: u64 = 1 << 20;

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// The 4 KiB a slot writes for `generation` of `block` (0: never written).
fn pattern(block: u64, generation: u32) -> Bytes {
    if generation == 0 {
        return Bytes::from(vec![0u8; 4096]);
    }
    let mut v = vec![0u8; 4096];
    for (i, w) in v.chunks_mut(8).enumerate() {
        let x = block
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(u64::from(generation) << 32 | i as u64);
        w.copy_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

#[derive(Default)]
struct Counters {
    ios: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_sessions_at_qd32_mixed_4k_for_a_minute() {
    let secs: u64 = std::env::var("IESP_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let lun_bytes = SESSIONS * QD * SLOT_BLOCKS * 4096;
    let lun = format!(
        "file:{},size={},bs=4096",
        dir.path().join("soak.img").display(),
        lun_bytes
    );
    let running = common::start(&["--lun", &lun, "--log", "warn"]);
    let pid = running.child.id();
    let addr = running.addr;

    let mut sessions = Vec::new();
    for s in 0..SESSIONS {
        let o = LoginOptions::new(
            &format!("iqn.2026-11.org.iesp-test:soak{s}"),
            Some(iesp_target::DEFAULT_IQN),
        );
        sessions.push(Session::login(addr, o).await.expect("login"));
    }
    let baseline = rss(pid);
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (s, session) in sessions.iter().enumerate() {
        let lu = session.logical_unit(0).await.expect("LUN 0");
        assert_eq!(lu.block_size(), 4096);
        for q in 0..QD {
            let lu = lu.clone();
            let counters = counters.clone();
            let stop = stop.clone();
            let first = (s as u64 * QD + q) * SLOT_BLOCKS;
            workers.push(tokio::spawn(async move {
                let mut generations = [0u32; SLOT_BLOCKS as usize];
                let mut rng = first.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let k = (rng % SLOT_BLOCKS) as usize;
                    let block = first + k as u64;
                    let ok = if rng & (1 << 40) != 0 {
                        generations[k] += 1;
                        lu.write(block, pattern(block, generations[k]))
                            .await
                            .is_ok()
                    } else {
                        match lu.read(block, 1).await {
                            Ok(data) => {
                                if data != pattern(block, generations[k]) {
                                    counters.mismatches.fetch_add(1, Ordering::Relaxed);
                                }
                                true
                            }
                            Err(_) => false,
                        }
                    };
                    if !ok {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.ios.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }

    let t0 = Instant::now();
    let (mut lo, mut hi) = (u64::MAX, 0);
    let mut last_ios = 0;
    let mut last = t0;
    let interval = Duration::from_secs((secs / 12).clamp(1, 10));
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let mut next_report = t0 + interval;
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = rss(pid);
        lo = lo.min(r);
        hi = hi.max(r);
        if Instant::now() >= next_report {
            let ios = counters.ios.load(Ordering::Relaxed);
            let dt = last.elapsed().as_secs_f64();
            let iops = (ios - last_ios) as f64 / dt;
            samples.push((t0.elapsed().as_secs_f64(), iops, r as f64 / MIB as f64));
            eprintln!(
                "soak t={:>4}s IOPS {:>7.0} RSS {} MiB errors {} mismatches {}",
                t0.elapsed().as_secs(),
                iops,
                r / MIB,
                counters.errors.load(Ordering::Relaxed),
                counters.mismatches.load(Ordering::Relaxed)
            );
            last_ios = ios;
            last = Instant::now();
            next_report += interval;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let ios = counters.ios.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let mismatches = counters.mismatches.load(Ordering::Relaxed);
    eprintln!(
        "soak: {SESSIONS} sessions x QD{QD}, {secs}s: {ios} I/Os ({:.0} IOPS), {errors} errors, \
         {mismatches} mismatches, RSS baseline {} MiB min {} MiB max {} MiB",
        ios as f64 / secs as f64,
        baseline / MIB,
        lo / MIB,
        hi / MIB
    );
    assert_eq!(errors, 0, "I/O errors during the soak");
    assert_eq!(mismatches, 0, "reads that did not return the last write");
    assert!(ios > SESSIONS * QD, "the soak barely ran: {ios} I/Os");
    // Bounded by the memory budget (256 MiB default) plus a fixed overhead:
    // nothing accumulates per command.
    assert!(
        hi <= baseline + 256 * MIB + 64 * MIB,
        "RSS grew to {} MiB from {} MiB",
        hi / MIB,
        baseline / MIB
    );
    for s in sessions {
        s.logout().await.expect("logout");
    }
    report(&samples);
}

/// Writes the series as bench CSV and draws IOPS and RSS over time; the
/// CSV is read back with plot's reader, so `iesp-test plot` can redraw it.
fn report(samples: &[(f64, f64, f64)]) {
    use iesp_plots::input::{CSV_HEADER, CsvRow, Loaded, load};
    use iesp_plots::{LineChart, Series, line_chart};
    let out = std::env::var_os("IESP_SOAK_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak"));
    std::fs::create_dir_all(&out).expect("soak output directory");
    let mut csv = CSV_HEADER.join(",") + "\n";
    for &(t, iops, _) in samples {
        let row = CsvRow {
            time_ms: (t * 1000.0) as u64,
            iops,
            ddir: 0,
            bs: 4096,
            lat_mean_us: 0.0,
            lat_p99_us: 0.0,
            mib_s: iops * 4096.0 / MIB as f64,
            target: "iesp-target soak (64 sessions, 50% writes)".into(),
            qd: QD as u32,
            jobs: SESSIONS as u32,
        };
        csv += &(row.to_line() + "\n");
    }
    let csv_path = out.join("soak.csv");
    std::fs::write(&csv_path, csv).expect("write soak.csv");
    match load(&csv_path).expect("plot reads soak.csv") {
        Loaded::Data { .. } => {}
        other => panic!("plot does not take soak.csv as input: {other:?}"),
    }
    for (file, title, y_label, pick) in [
        ("soak-iops.png", "Soak: IOPS over time", "IOPS", 1),
        ("soak-rss.png", "Soak: target RSS over time", "RSS (MiB)", 2),
    ] {
        let points = samples
            .iter()
            .map(|s| (s.0, if pick == 1 { s.1 } else { s.2 }))
            .collect();
        let series = [Series {
            label: format!("{SESSIONS} sessions x QD{QD}, 4 KiB mixed"),
            points,
        }];
        let png = out.join(file);
        line_chart(
            &png,
            &LineChart {
                title,
                x_label: "time (s)",
                y_label,
                series: &series,
                size: (1000, 600),
            },
        )
        .expect("draw the soak chart");
        let bytes = std::fs::read(&png).expect("chart written");
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            png.display()
        );
        eprintln!("soak: {}", png.display());
    }
    eprintln!("soak: {}", csv_path.display());
}
