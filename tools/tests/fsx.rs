//! `iesp-test fsx` from the command line: it passes against a file, a loop
//! device, our target (with reconnects, ABORT TASK and LUN RESET) and tgt
//! (where the ops it lacks are reported as not run); a failure of the
//! in-memory self-test target is shrunk to a log that `--replay`
//! reproduces; bad input is a one-line error with exit 2.

mod common;

use std::path::Path;

use common::{Run, iesp_test, image, read_json};
use iesp_testsupport::BlockingTarget;

/// Runs `iesp-test fsx --write --progress quiet --json J ARGS`; the run
/// and the report (`Null` if none).
fn fsx(args: &[&str], json: &Path) -> (Run, serde_json::Value) {
    let _ = std::fs::remove_file(json);
    let mut all = vec![
        "fsx",
        "--write",
        "--progress",
        "quiet",
        "--json",
        json.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let run = iesp_test(&all);
    let report = if json.exists() {
        read_json(json)
    } else {
        serde_json::Value::Null
    };
    (run, report)
}

fn count(r: &serde_json::Value, op: &str) -> u64 {
    r["per_op"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["op"] == op))
        .and_then(|x| x["count"].as_u64())
        .unwrap_or(0)
}

fn not_run(r: &serde_json::Value) -> Vec<String> {
    r["ops_not_run"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["op"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_file_passes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "f.img", 8 << 20);
    let json = dir.path().join("r.json");
    let (run, r) = fsx(&["--seed", "3", "--ops", "3000", "--qd", "8", &img], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["outcome"], "pass");
    assert_eq!(r["schema"], "iesp-test/fsx/1");
    for op in [
        "read",
        "write",
        "unmap",
        "write-same",
        "compare-and-write",
        "flush",
    ] {
        assert!(count(&r, op) > 0, "{op}: {r}");
    }
    assert_eq!(not_run(&r), ["reconnect", "abort-task", "lun-reset"]);
    assert!(run.stdout.contains("p99"), "{}", run.text());
}

#[test]
fn a_loop_device_passes() {
    let dir = tempfile::tempdir().unwrap();
    let backing = image(dir.path(), "loop.img", 8 << 20);
    let Some(dev) = iesp_testsupport::LoopDevice::attach_or_skip(Path::new(&backing)) else {
        return;
    };
    let json = dir.path().join("r.json");
    let (run, r) = fsx(&["--seed", "4", "--ops", "2000", dev.as_str()], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["target"]["kind"], "block-device");
    assert!(
        count(&r, "unmap") > 0 && count(&r, "compare-and-write-miscompare") > 0,
        "{r}"
    );
}

#[test]
fn our_target_passes_with_task_management_and_reconnects() {
    let target = BlockingTarget::ram(8 << 20, 512);
    let url = target.url(0);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let log = dir.path().join("ops.jsonl");
    let (run, r) = fsx(
        &[
            "--seed",
            "5",
            "--ops",
            "1500",
            "--qd",
            "8",
            "--weights",
            "reconnect=2,abort_task=6,lun_reset=2",
            "--log",
            log.to_str().unwrap(),
            &url,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["target"]["kind"], "iscsi-lun");
    for op in [
        "read",
        "write-fua",
        "write-same",
        "compare-and-write",
        "compare-and-write-miscompare",
        "reconnect",
        "abort-task",
        "lun-reset",
    ] {
        assert!(count(&r, op) > 0, "{op}: {r}");
    }
    // Determinism: the same seed at QD 8 gives the same op log.
    let log2 = dir.path().join("ops2.jsonl");
    let (run, _) = fsx(
        &[
            "--seed",
            "5",
            "--ops",
            "1500",
            "--qd",
            "8",
            "--weights",
            "reconnect=2,abort_task=6,lun_reset=2",
            "--log",
            log2.to_str().unwrap(),
            &url,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    let ops = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect()
    };
    assert!(ops(&log) == ops(&log2), "the op logs differ");
}

#[test]
fn tgt_passes_and_reports_what_did_not_run() {
    let Some(_) = iesp_testsupport::peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
        return;
    };
    let (tgtd, url) = iesp_testsupport::peers::tgt::Tgtd::with_file_lun(8 << 20).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let (run, r) = fsx(&["--seed", "6", "--ops", "1500", "--qd", "4", &url], &json);
    assert_eq!(run.code, 0, "{}\n{}", run.text(), tgtd.log());
    let skipped = not_run(&r);
    assert!(
        skipped.contains(&"compare-and-write".to_owned()),
        "tgt has no COMPARE AND WRITE: {r}"
    );
    assert!(
        run.stdout.contains("not run: compare-and-write"),
        "{}",
        run.text()
    );
    assert!(count(&r, "read") > 0 && count(&r, "write") > 0 && count(&r, "abort-task") > 0);
}

#[test]
fn a_failure_shrinks_to_a_log_that_replays() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let shrunk = dir.path().join("min.jsonl");
    let (run, r) = fsx(
        &[
            "--seed",
            "8",
            "--ops",
            "20000",
            "--fault",
            "drop-write@100",
            "--shrink-log",
            shrunk.to_str().unwrap(),
            "memory:512",
        ],
        &json,
    );
    assert_eq!(run.code, 1, "{}", run.text());
    assert_eq!(r["outcome"], "mismatch");
    assert_eq!(r["failure"]["lba"], 100);
    assert!(r["failure"]["history"].as_array().unwrap().len() > 1, "{r}");
    assert!(run.stdout.contains("expected header"), "{}", run.text());
    assert!(
        r["failure"]["difference"]
            .as_str()
            .is_some_and(|d| d.contains("first difference at byte")),
        "{r}"
    );
    let n = r["reproducer"]["ops"].as_u64().unwrap();
    assert!(n <= 20 && r["reproducer"]["reproduces"] == true, "{r}");
    let lines = std::fs::read_to_string(&shrunk).unwrap().lines().count();
    assert_eq!(lines as u64, n + 1, "header + ops");
    let s = shrunk.to_str().unwrap();
    let (run, r) = fsx(
        &["--replay", s, "--fault", "drop-write@100", "memory:512"],
        &json,
    );
    assert_eq!(run.code, 1, "{}", run.text());
    assert_eq!(r["failure"]["lba"], 100);
    let (run, _) = fsx(&["--replay", s, "memory:512"], &json);
    assert_eq!(
        run.code,
        0,
        "the same ops pass without the fault: {}",
        run.text()
    );
    // A replay names the log and its seed, and no other seed.
    let seeds: Vec<&str> = run.stdout.lines().filter(|l| l.contains("seed")).collect();
    assert_eq!(
        seeds.first().copied(),
        Some(format!("fsx: replaying {s} ({n} ops), seed 8 from its header").as_str()),
        "{}",
        run.text()
    );
    assert!(
        seeds
            .iter()
            .all(|l| !l.contains("seed ") || l.contains("seed 8")),
        "{seeds:?}"
    );
    // A log from another LUN size.
    let (run, _) = fsx(&["--replay", s, "memory:1024"], &json);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("512 blocks"), "{}", run.text());
}

/// `-q` is errors only on stderr: the ops left out on a regular file are
/// in the summary's "not run" lines, not repeated as notices.
#[test]
fn quiet_leaves_stderr_empty() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let img = img.to_str().unwrap();
    let run = iesp_test(&["-q", "fsx", "--write", "--ops", "50", "--seed", "2", img]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(run.stderr, "", "{}", run.text());
    assert!(run.stdout.contains("not run: reconnect"), "{}", run.text());
    let run = iesp_test(&["fsx", "--write", "--ops", "50", "--seed", "2", img]);
    assert!(
        run.stderr.contains("leaving out reconnect"),
        "{}",
        run.text()
    );
}

#[test]
fn bad_input_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let cfg = dir.path().join("fsx.toml");
    let expect = |args: &[&str], needle: &str| {
        let (run, _) = fsx(args, &json);
        assert_eq!(run.code, 2, "{args:?}: {}", run.text());
        let first = run
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        assert!(
            first.contains(needle),
            "{args:?}: want {needle:?} on the first line: {}",
            run.text()
        );
    };
    let c = cfg.to_str().unwrap();
    std::fs::write(&cfg, "seed = 1\n[weights]\nread = 1\nwirte = 3\n").unwrap();
    expect(&["--config", c, "memory:64"], "line 4");
    std::fs::write(&cfg, "seed = 1\n[weights]\nread = -1\n").unwrap();
    expect(&["--config", c, "memory:64"], "line 3");
    std::fs::write(&cfg, "[weights]\nread = 0\nwrite = 0\nwrite_fua = 0\nunmap = 0\nwrite_same = 0\nwrite_same_unmap = 0\ncompare_and_write = 0\ncompare_and_write_miscompare = 0\nflush = 0\nreconnect = 0\nabort_task = 0\nlun_reset = 0\n").unwrap();
    expect(&["--config", c, "memory:64"], "sum to 0");
    expect(
        &["--lba-start", "60", "--lba-count", "8", "memory:64"],
        "outside",
    );
    expect(&["--weights", "reed=3", "memory:64"], "unknown op");
    let img = image(dir.path(), "f.img", 1 << 20);
    expect(&["--lba-start", "256", &img], "outside");
    let run = iesp_test(&["fsx", "memory:64"]);
    assert_eq!(run.code, 2, "without --write: {}", run.text());
}

#[test]
fn the_sample_config_runs() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/fsx.sample.toml");
    let (run, r) = fsx(&["--config", sample, "--ops", "500", "memory:2048"], &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["seed"], 42);
    assert_eq!(r["qd"], 8);
}

#[test]
fn sigint_stops_with_exit_130_and_an_interrupted_report() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "i.img", 8 << 20);
    let json = dir.path().join("r.json");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_iesp-test"))
        .args([
            "fsx",
            "--write",
            "--progress",
            "quiet",
            "--duration",
            "60s",
            "--json",
        ])
        .arg(&json)
        .arg(&img)
        .env("IESP_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20), "slow to stop");
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(130), "{all}");
    assert!(
        !all.contains("PASS") && all.contains("INTERRUPTED"),
        "{all}"
    );
    let r = read_json(&json);
    assert_eq!(
        (r["interrupted"].as_bool(), r["exit_code"].as_u64()),
        (Some(true), Some(130))
    );
    assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn a_write_protected_lun_is_refused() {
    let mut cfg = iesp_testsupport::embedded::ram_lun(1 << 20, 512);
    cfg.targets[0].luns[0].read_only = true;
    let target = BlockingTarget::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = fsx(&["--ops", "10", &target.url(0)], &dir.path().join("r.json"));
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("write protected"), "{}", run.text());
}
