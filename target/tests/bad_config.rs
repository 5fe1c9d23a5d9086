//! Bad configuration never aborts the target (issue 13): every LUN spec and
//! configuration value is checked before a port is bound, and a bad one is
//! one line on stderr and exit 2, with no panic message or backtrace, even
//! with `RUST_BACKTRACE=1`.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iesp-target"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("IESP_LOG")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run iesp-target")
}

/// Exit 2, one line on stderr naming `needle`, nothing on stdout, and no
/// sign of a panic or a backtrace anywhere.
fn assert_usage(out: &Output, needle: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for text in [&err, &stdout] {
        for bad in ["panicked", "backtrace", "stack backtrace", "RUST_BACKTRACE"] {
            assert!(!text.contains(bad), "{what}: {bad:?} in output: {text}");
        }
    }
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {err}");
    assert!(lines[0].starts_with("iesp-target: "), "{what}: {err}");
    assert!(lines[0].contains(needle), "{what}: {needle:?} not in {err}");
    assert!(
        !lines[0].contains("listening"),
        "{what}: bound a port: {err}"
    );
}

#[test]
fn a_ram_disk_larger_than_memory_exits_2() {
    assert_usage(&run(&["--lun", "ram:64T"]), "larger than", "ram:64T");
}

#[test]
fn dev_on_a_regular_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let spec = format!("dev:{}", path.display());
    assert_usage(&run(&["--lun", &spec]), "not a block device", &spec);
}

#[test]
fn short_or_repeated_chap_secrets_exit_2() {
    let short = run(&["--chap-user", "u", "--chap-secret", "abc"]);
    assert_usage(&short, "--chap-secret", "--chap-secret abc");
    assert!(!String::from_utf8_lossy(&short.stderr).contains("abc"));
    let short_mutual = run(&[
        "--chap-user",
        "u",
        "--chap-secret",
        "initiator-secret-1",
        "--mutual-chap-user",
        "t",
        "--mutual-chap-secret",
        "tgt",
    ]);
    assert_usage(&short_mutual, "--mutual-chap-secret", "short mutual");
    let same = run(&[
        "--chap-user",
        "u",
        "--chap-secret",
        "the-same-secret",
        "--mutual-chap-user",
        "t",
        "--mutual-chap-secret",
        "the-same-secret",
    ]);
    assert_usage(&same, "must differ", "mutual == one-way");
}

#[test]
fn an_unknown_config_key_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[[target]]\niqn = \"iqn.2026-11.org.iesp-test:t\"\nluns = [\"ram:1M\"]\n";
    for (text, needle) in [
        (
            format!("[limits]\nno_such_limit = 3\n{base}"),
            "no_such_limit",
        ),
        (format!("bogus = 1\n{base}"), "bogus"),
        (format!("{base}colour = \"blue\"\n"), "colour"),
        (
            format!("{base}[target.chap]\nuser = \"u\"\nsecret = \"short\"\n"),
            "at least 12",
        ),
        (base.replace("ram:1M", "ram:64T"), "larger than"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_iesp-target"))
            .args(["--config", path.to_str().unwrap()])
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_usage(&out, needle, &text);
    }
}

#[test]
fn bad_limits_exit_2() {
    for (args, needle) in [
        (&["--memory-budget", "1M"][..], "--memory-budget"),
        (
            &["--memory-budget", "64M", "--session-memory", "128M"],
            "exceeds memory_budget",
        ),
        (&["--max-connections", "0"], "--max-connections"),
        (
            &["--auth-fail-delay", "2s", "--auth-fail-delay-max", "1s"],
            "auth_fail_delay_max",
        ),
        (&["--data-out-timeout", "0"], "--data-out-timeout"),
        (&["--discovery-chap"], "--chap-user"),
    ] {
        assert_usage(&run(args), needle, &format!("{args:?}"));
    }
}

/// `--iqn` must be an iSCSI name: a target named `notaniqn` would be
/// refused by every strict initiator at login, long after it started.
#[test]
fn a_bad_target_name_exits_2() {
    let long = format!("iqn.2026-11.org.x:{}", "a".repeat(220));
    for bad in ["notaniqn", "iqn.", "iqn.2026-11.org.x:has space", &long] {
        assert_usage(&run(&["--iqn", bad]), "not an iSCSI name", bad);
    }
}

/// `--io-workers` and `limits.io_workers` (issue 16): 0, too many or not a
/// number is one line and exit 2; a good value starts the target.
#[test]
fn a_bad_io_workers_count_exits_2() {
    for bad in ["0", "257", "many", "-1"] {
        let out = run(&[&format!("--io-workers={bad}")]);
        assert_usage(&out, "--io-workers", &format!("--io-workers {bad}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let base = "[[target]]\niqn = \"iqn.2026-11.org.iesp-test:t\"\nluns = [\"ram:1M\"]\n";
    for bad in ["0", "1000"] {
        let text = format!("[limits]\nio_workers = {bad}\n{base}");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_iesp-target"))
            .args(["--config", path.to_str().unwrap()])
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_usage(&out, "io_workers", &text);
    }
    // The same key with a good value is taken.
    let good = format!("[limits]\nio_workers = 3\n{base}");
    let loaded = iesp_target::config_file::parse(&good).expect("io_workers = 3");
    assert_eq!(loaded.config.limits.io_workers, 3);
}
