//! Soak (issue 13): 64 sessions x QD32 of mixed 4 KiB reads and writes on
//! the `iesp-target` binary, with the target's RSS sampled throughout.
//! Reports errors (goal 0), RSS min/max and IOPS per interval; fails on any
//! error or on RSS growing past the memory budget.
//!
//! Two kinds of load share the LUN, each on its own blocks:
//! - 60 sessions of the test's own workers: every read is checked against
//!   what its slot last wrote;
//! - 4 sessions of the real `iesp-test verify` binary, one process each,
//!   random mode (read-verify then rewrite 4 KiB ranges, QD32), saving its
//!   state with `--state-out`. When the soak ends each region is read back
//!   by `iesp-test verify --check --state-in`: 0 mismatches required. Then
//!   one block of the first area is overwritten and its check must fail
//!   (exit 1, a mismatch), so the check is shown able to fail.
//!
//! `iesp-test` is looked up next to `iesp-target` in cargo's output
//! directory (`cargo test --workspace` builds both; `IESP_TEST_BIN`
//! overrides). When it is missing the test fails under `CI=true` and
//! otherwise runs all 64 sessions as its own workers, saying so.
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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iesp_initiator::{LoginOptions, Session};

const SESSIONS: u64 = 64;
/// Of the 64, the sessions of `iesp-test verify` processes (one each).
const VERIFY_SESSIONS: u64 = 4;
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
    let tool = iesp_test_bin();
    let verifiers = if tool.is_some() { VERIFY_SESSIONS } else { 0 };
    let own = SESSIONS - verifiers;
    let dir = tempfile::tempdir().unwrap();
    // One area of QD x SLOT_BLOCKS blocks per session: the test's own
    // sessions first, then one per verify process.
    let area = QD * SLOT_BLOCKS * 4096;
    let lun_bytes = SESSIONS * area;
    let lun = format!(
        "file:{},size={},bs=4096",
        dir.path().join("soak.img").display(),
        lun_bytes
    );
    let running = common::start(&["--lun", &lun, "--log", "warn"]);
    let pid = running.child.id();
    let addr = running.addr;
    let url = format!("iscsi://{addr}/{}/0", iesp_target::DEFAULT_IQN);

    let mut sessions = Vec::new();
    for s in 0..own {
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
    let runs: Vec<VerifyRun> = match &tool {
        Some(tool) => (0..verifiers)
            .map(|i| VerifyRun::start(tool, &url, dir.path(), i, (own + i) * area, area, secs))
            .collect(),
        None => Vec::new(),
    };

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
                "soak t={:>4}s IOPS {:>7.0} ({own} sessions) RSS {} MiB errors {} mismatches {}",
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
    // The verify processes stop at their --duration, save their state and
    // log out; then each region is checked from its state file while the
    // test's sessions are still logged in.
    let written: Vec<Outcome> = tokio::task::spawn_blocking(move || {
        runs.into_iter()
            .map(|r| r.finish(Duration::from_secs(secs + 120)))
            .collect()
    })
    .await
    .unwrap();
    let checked: Vec<Outcome> = match &tool {
        Some(tool) => {
            let tool = tool.clone();
            let (url, d) = (url.clone(), dir.path().to_owned());
            tokio::task::spawn_blocking(move || {
                (0..verifiers)
                    .map(|i| VerifyRun::check(&tool, &url, &d, i, "check"))
                    .collect()
            })
            .await
            .unwrap()
        }
        None => Vec::new(),
    };
    let verify_ios: u64 = written.iter().map(|o| o.ios).sum();
    eprintln!(
        "soak: {SESSIONS} sessions x QD{QD}, {secs}s: {own} test sessions {ios} I/Os \
         ({:.0} IOPS), {errors} errors, {mismatches} mismatches; RSS baseline {} MiB \
         min {} MiB max {} MiB",
        ios as f64 / secs as f64,
        baseline / MIB,
        lo / MIB,
        hi / MIB
    );
    for (w, c) in written.iter().zip(&checked) {
        eprintln!(
            "soak: {}: {} I/Os, {} mismatches, {} I/O errors; {}: {} blocks verified, \
             {} mismatches, {} I/O errors",
            w.what,
            w.ios,
            w.mismatches,
            w.io_errors,
            c.what,
            c.blocks_verified,
            c.mismatches,
            c.io_errors
        );
    }
    if tool.is_some() {
        eprintln!(
            "soak: all {SESSIONS} sessions: {} I/Os ({:.0} IOPS)",
            ios + verify_ios,
            (ios + verify_ios) as f64 / secs as f64
        );
    }
    assert_eq!(errors, 0, "I/O errors during the soak");
    assert_eq!(mismatches, 0, "reads that did not return the last write");
    assert!(ios > own * QD, "the soak barely ran: {ios} I/Os");
    for o in written.iter().chain(&checked) {
        o.assert_clean();
    }
    for o in &checked {
        o.assert_whole_area();
    }
    if let Some(tool) = &tool {
        // The check can fail: one block of verify #0's area overwritten
        // behind its back is a mismatch (exit 1).
        let lu = sessions[0].logical_unit(0).await.expect("LUN 0");
        let block = own * area / 4096;
        lu.write(block, Bytes::from(vec![0xa5u8; 4096]))
            .await
            .expect("overwrite one block");
        let (tool, url, d) = (tool.clone(), url.clone(), dir.path().to_owned());
        let o =
            tokio::task::spawn_blocking(move || VerifyRun::check(&tool, &url, &d, 0, "recheck"))
                .await
                .unwrap();
        assert_eq!(o.code, Some(1), "{} after an overwrite:\n{}", o.what, o.log);
        assert!(
            (1..u64::MAX).contains(&o.mismatches),
            "{}: the overwritten block was not reported:\n{}",
            o.what,
            o.log
        );
        eprintln!(
            "soak: {}: {} mismatch after overwriting LBA {block} (expected)",
            o.what, o.mismatches
        );
    }
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
    report(&samples, own);
}

/// `iesp-test` next to `iesp-target` in cargo's output directory, or
/// `$IESP_TEST_BIN`; `None` (outside CI) when it has not been built.
fn iesp_test_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IESP_TEST_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "IESP_TEST_BIN={} is not a file", p.display());
        return Some(p);
    }
    let p = Path::new(env!("CARGO_BIN_EXE_iesp-target")).with_file_name("iesp-test");
    if p.is_file() {
        return Some(p);
    }
    let hint = "build it with `cargo build --release -p iesp-tools --bin iesp-test` \
                (`cargo test --workspace` does)";
    assert!(
        std::env::var_os("CI").is_none_or(|v| v != "true"),
        "soak: {} is missing: {hint}",
        p.display()
    );
    eprintln!(
        "soak: SKIPPING the iesp-test verify part: {} is missing; {hint}",
        p.display()
    );
    None
}

/// One `iesp-test verify --write --mode random` process on its own area.
struct VerifyRun {
    child: Child,
    what: String,
    log: PathBuf,
    json: PathBuf,
}

/// What one verify process reported (its `--json`) and how it exited.
struct Outcome {
    what: String,
    code: Option<i32>,
    log: String,
    ios: u64,
    blocks_verified: u64,
    /// Distinct blocks verified, and the blocks of the range.
    distinct: (u64, u64),
    mismatches: u64,
    io_errors: u64,
}

impl VerifyRun {
    fn start(
        tool: &Path,
        url: &str,
        dir: &Path,
        i: u64,
        offset: u64,
        length: u64,
        secs: u64,
    ) -> VerifyRun {
        let what = format!("verify --write #{i}");
        let log = dir.join(format!("verify{i}.log"));
        let json = dir.join(format!("verify{i}.json"));
        let seed = (13_000 + i).to_string();
        let (off, len, dur) = (offset.to_string(), length.to_string(), format!("{secs}s"));
        let name = format!("iqn.2026-11.org.iesp-test:soak-verify{i}");
        let state = dir.join(format!("verify{i}.state"));
        #[rustfmt::skip]
        let args = [
            "verify", "--write", "--force", "--mode", "random", "--seed", &seed,
            "--workers", "1", "--qd", &QD.to_string(), "--io-size", "4k", "--max-blocks", "1",
            "--mix", "u=90,d=10", "--duration", &dur, "--offset", &off, "--length", &len,
            "--initiator-name", &name, "--progress", "quiet",
        ];
        let child = spawn(tool, &args, &state, &json, &log, url);
        VerifyRun {
            child,
            what,
            log,
            json,
        }
    }

    /// Waits (at most `limit`) for the process and reads its report.
    fn finish(mut self, limit: Duration) -> Outcome {
        let t0 = Instant::now();
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("wait for verify") {
                break status.code();
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Outcome::read(self.what, code, &self.log, &self.json)
    }

    /// `iesp-test verify --check --state-in` over area `i` (its state file
    /// gives the range), run to completion; `tag` names its log and report.
    fn check(tool: &Path, url: &str, dir: &Path, i: u64, tag: &str) -> Outcome {
        let what = format!("verify --check #{i} ({tag})");
        let log = dir.join(format!("{tag}{i}.log"));
        let json = dir.join(format!("{tag}{i}.json"));
        let name = format!("iqn.2026-11.org.iesp-test:soak-check{i}");
        let state = dir.join(format!("verify{i}.state"));
        #[rustfmt::skip]
        let args = ["verify", "--check", "--initiator-name", &name, "--progress", "quiet"];
        let mut child = Command::new(tool)
            .args(args)
            .arg("--state-in")
            .arg(&state)
            .arg("--json")
            .arg(&json)
            .arg(url)
            .env("IESP_LOG", "warn")
            .stdout(std::fs::File::create(&log).expect("check log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn iesp-test verify --check");
        let code = child.wait().expect("wait for verify --check").code();
        Outcome::read(what, code, &log, &json)
    }
}

fn spawn(tool: &Path, args: &[&str], state: &Path, json: &Path, log: &Path, url: &str) -> Child {
    Command::new(tool)
        .args(args)
        .arg("--state-out")
        .arg(state)
        .arg("--json")
        .arg(json)
        .arg(url)
        .env("IESP_LOG", "warn")
        .stdout(std::fs::File::create(log).expect("verify log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn iesp-test verify")
}

impl Outcome {
    fn read(what: String, code: Option<i32>, log: &Path, json: &Path) -> Outcome {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let r: serde_json::Value = std::fs::read(json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let n = |k: &str| r[k].as_u64().unwrap_or(u64::MAX);
        Outcome {
            what,
            code,
            log,
            ios: (n("bytes_read") + n("bytes_written")) / 4096,
            blocks_verified: n("blocks_verified"),
            distinct: (n("distinct_verified"), n("blocks")),
            mismatches: n("mismatch_count"),
            io_errors: n("io_error_count"),
        }
    }

    /// A check read every block of its area, none left unverifiable.
    fn assert_whole_area(&self) {
        let w = &self.what;
        assert_eq!(
            self.distinct.0, self.distinct.1,
            "{w}: not every block checked:\n{}",
            self.log
        );
        assert_eq!(
            self.distinct.1,
            QD * SLOT_BLOCKS,
            "{w}: the wrong range:\n{}",
            self.log
        );
    }

    fn assert_clean(&self) {
        let w = &self.what;
        assert_eq!(
            self.code,
            Some(0),
            "{w} exited {:?}:\n{}",
            self.code,
            self.log
        );
        assert_eq!(self.mismatches, 0, "{w}: mismatches:\n{}", self.log);
        assert_eq!(self.io_errors, 0, "{w}: I/O errors:\n{}", self.log);
        assert!(
            self.blocks_verified > 0 && self.blocks_verified != u64::MAX,
            "{w} verified nothing:\n{}",
            self.log
        );
    }
}

/// Writes the series as bench CSV and draws IOPS and RSS over time; the
/// CSV is read back with plot's reader, so `iesp-test plot` can redraw it.
fn report(samples: &[(f64, f64, f64)], own: u64) {
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
            target: format!("iesp-target soak ({own} test sessions, 50% writes)"),
            qd: QD as u32,
            jobs: own as u32,
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
        let label = if pick == 1 {
            format!("{own} of {SESSIONS} sessions x QD{QD}, 4 KiB mixed")
        } else {
            format!("iesp-target, {SESSIONS} sessions x QD{QD}, 4 KiB mixed")
        };
        let series = [Series { label, points }];
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
