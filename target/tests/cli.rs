//! The `iesp-target` command-line conventions (docs/cli.md):
//!
//! - one size grammar and one duration grammar, run as a table across every
//!   flag and every TOML key that takes a size or a duration;
//! - a bad value, flag or file gives exit 2 and one line on stderr; a port
//!   that cannot be bound or a backing that cannot be opened gives exit 3;
//! - `--help` documents the exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use clap::Parser;
use iesp_target::cli::Args;
use iesp_target::config::{Backing, TargetConfig};
use iesp_target::config_file;
use pretty_assertions::assert_eq;

/// Every size spelling the grammar promises, with its value.
const SIZES: [(&str, u64); 7] = [
    ("512", 512),
    ("512B", 512),
    ("512b", 512),
    ("4k", 4096),
    ("4KiB", 4096),
    ("1.5G", 3 << 29),
    ("1T", 1 << 40),
];

/// Every duration spelling the grammar promises, with its value.
const DURATIONS: [(&str, Duration); 6] = [
    ("500ms", Duration::from_millis(500)),
    ("3", Duration::from_secs(3)),
    ("1.5", Duration::from_millis(1500)),
    ("1s", Duration::from_secs(1)),
    ("2m", Duration::from_secs(120)),
    ("1h30m", Duration::from_secs(5400)),
];

const BAD_SIZES: [&str; 4] = ["12Q", "-4k", "", "4 kilo bytes"];
const BAD_DURATIONS: [&str; 4] = ["3x", "-1s", "", "soon"];

fn flags(args: &[String]) -> Result<TargetConfig, String> {
    let parsed =
        Args::try_parse_from(std::iter::once("iesp-target".to_owned()).chain(args.iter().cloned()))
            .map_err(|e| e.to_string())?;
    parsed.flags_config().map_err(|e| e.to_string())
}

fn toml(body: &str) -> Result<TargetConfig, String> {
    let text =
        format!("{body}\n[[target]]\niqn = \"iqn.2026-11.org.iesp-test:t\"\nluns = [\"ram:1M\"]\n");
    config_file::parse(&text)
        .map(|l| l.config)
        .map_err(|e| e.to_string())
}

fn toml_lun(lun: &str) -> Result<TargetConfig, String> {
    let text = format!("[[target]]\niqn = \"iqn.2026-11.org.iesp-test:t\"\nluns = [\"{lun}\"]\n");
    config_file::parse(&text)
        .map(|l| l.config)
        .map_err(|e| e.to_string())
}

/// What one row reads back out of a configuration.
type Get<T> = fn(&TargetConfig) -> T;

fn ram_size(c: &TargetConfig) -> u64 {
    match c.targets[0].luns[0].backing {
        Backing::Ram { size } => size,
        ref other => panic!("not a RAM LUN: {other:?}"),
    }
}

fn file_size(c: &TargetConfig) -> u64 {
    match c.targets[0].luns[0].backing {
        Backing::File {
            size: Some(size), ..
        } => size,
        ref other => panic!("not a sized file LUN: {other:?}"),
    }
}

fn block_size(c: &TargetConfig) -> u64 {
    u64::from(c.targets[0].luns[0].block_size)
}

/// Which sizes a key accepts: any, or a block size, or a segment length.
fn size_ok(kind: &str, n: u64) -> bool {
    match kind {
        "any" => true,
        "block" => n.is_power_of_two() && (512..=65536).contains(&n),
        "segment" => (512..=16_777_215).contains(&n),
        _ => unreachable!(),
    }
}

#[test]
fn every_size_flag_and_key_takes_the_size_grammar() {
    // (where, accepted sizes, how to build it, what to read back)
    type Build = Box<dyn Fn(&str) -> Result<TargetConfig, String>>;
    let rows: Vec<(&str, &str, Build, Get<u64>)> = vec![
        (
            "--lun ram:SIZE",
            "any",
            Box::new(|v| flags(&["--lun".into(), format!("ram:{v}")])),
            ram_size,
        ),
        (
            "--lun file:PATH,size=SIZE",
            "any",
            Box::new(|v| flags(&["--lun".into(), format!("file:/tmp/x.img,size={v}")])),
            file_size,
        ),
        (
            "--lun ram:1M,bs=SIZE",
            "block",
            Box::new(|v| flags(&["--lun".into(), format!("ram:1M,bs={v}")])),
            block_size,
        ),
        (
            "--block-size SIZE",
            "block",
            Box::new(|v| flags(&["--block-size".into(), v.into()])),
            block_size,
        ),
        (
            "--max-recv-data-segment-length SIZE",
            "segment",
            Box::new(|v| flags(&["--max-recv-data-segment-length".into(), v.into()])),
            |c| u64::from(c.limits.max_recv_data_segment_length),
        ),
        (
            "luns = [\"ram:SIZE\"]",
            "any",
            Box::new(|v| toml_lun(&format!("ram:{v}"))),
            ram_size,
        ),
        (
            "luns = [\"file:PATH,size=SIZE\"]",
            "any",
            Box::new(|v| toml_lun(&format!("file:/tmp/x.img,size={v}"))),
            file_size,
        ),
        (
            "luns = [\"ram:1M,bs=SIZE\"]",
            "block",
            Box::new(|v| toml_lun(&format!("ram:1M,bs={v}"))),
            block_size,
        ),
        (
            "limits.max_recv_data_segment_length",
            "segment",
            Box::new(|v| toml(&format!("[limits]\nmax_recv_data_segment_length = \"{v}\""))),
            |c| u64::from(c.limits.max_recv_data_segment_length),
        ),
        (
            "limits.max_burst_length",
            "segment",
            Box::new(|v| {
                toml(&format!(
                    "[limits]\nfirst_burst_length = 512\nmax_burst_length = \"{v}\""
                ))
            }),
            |c| u64::from(c.limits.max_burst_length),
        ),
        (
            "limits.first_burst_length",
            "segment",
            Box::new(|v| {
                toml(&format!(
                    "[limits]\nmax_burst_length = \"16777215\"\nfirst_burst_length = \"{v}\""
                ))
            }),
            |c| u64::from(c.limits.first_burst_length),
        ),
    ];
    let mut checked = 0;
    for (what, kind, build, get) in &rows {
        for (text, value) in SIZES {
            match build(text) {
                Ok(cfg) if size_ok(kind, value) => {
                    assert_eq!(get(&cfg), value, "{what} with {text:?}");
                    checked += 1;
                }
                Ok(cfg) => panic!("{what} accepted {text:?} as {}", get(&cfg)),
                Err(e) if size_ok(kind, value) => panic!("{what} refused {text:?}: {e}"),
                Err(e) => assert!(!e.is_empty(), "{what}: {text:?} refused without a reason"),
            }
        }
        for text in BAD_SIZES {
            assert!(build(text).is_err(), "{what} accepted {text:?}");
        }
    }
    assert!(checked >= 40, "only {checked} accepted cases ran");
    // TOML integers stay bytes.
    let c = toml("[limits]\nmax_recv_data_segment_length = 65536").expect("integer");
    assert_eq!(c.limits.max_recv_data_segment_length, 65536);
}

#[test]
fn every_duration_flag_and_key_takes_the_duration_grammar() {
    type Build = Box<dyn Fn(&str) -> Result<TargetConfig, String>>;
    let rows: Vec<(&str, Build, Get<Duration>)> = vec![
        (
            "--nop-interval",
            Box::new(|v| flags(&["--nop-interval".into(), v.into()])),
            |c| c.limits.nop_interval.expect("keep-alive on"),
        ),
        (
            "--nop-timeout",
            Box::new(|v| flags(&["--nop-timeout".into(), v.into()])),
            |c| c.limits.nop_timeout,
        ),
        (
            "--login-timeout",
            Box::new(|v| flags(&["--login-timeout".into(), v.into()])),
            |c| c.limits.login_timeout,
        ),
        (
            "limits.nop_interval",
            Box::new(|v| toml(&format!("[limits]\nnop_interval = \"{v}\""))),
            |c| c.limits.nop_interval.expect("keep-alive on"),
        ),
        (
            "limits.nop_timeout",
            Box::new(|v| toml(&format!("[limits]\nnop_timeout = \"{v}\""))),
            |c| c.limits.nop_timeout,
        ),
        (
            "limits.login_timeout",
            Box::new(|v| toml(&format!("[limits]\nlogin_timeout = \"{v}\""))),
            |c| c.limits.login_timeout,
        ),
    ];
    for (what, build, get) in &rows {
        for (text, value) in DURATIONS {
            let cfg = build(text).unwrap_or_else(|e| panic!("{what} refused {text:?}: {e}"));
            assert_eq!(get(&cfg), value, "{what} with {text:?}");
        }
        for text in BAD_DURATIONS {
            assert!(build(text).is_err(), "{what} accepted {text:?}");
        }
    }
    // TOML numbers are seconds; zero turns keep-alive off but is no timeout.
    let c =
        toml("[limits]\nnop_interval = 0\nnop_timeout = 2.5\nlogin_timeout = 7").expect("numbers");
    assert_eq!(c.limits.nop_interval, None);
    assert_eq!(c.limits.nop_timeout, Duration::from_millis(2500));
    assert_eq!(c.limits.login_timeout, Duration::from_secs(7));
    assert_eq!(
        flags(&["--nop-interval".into(), "0s".into()])
            .unwrap()
            .limits
            .nop_interval,
        None
    );
    for zero in ["--nop-timeout", "--login-timeout"] {
        assert!(
            flags(&[zero.into(), "0".into()]).is_err(),
            "{zero} 0 accepted"
        );
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iesp-target"))
        .args(args)
        .env_remove("IESP_LOG")
        .output()
        .expect("run iesp-target")
}

/// Exit status `code` and exactly one line on stderr, starting
/// `iesp-target: ` and containing `needle`.
fn assert_one_line(out: &Output, code: i32, needle: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {err}");
    assert!(lines[0].starts_with("iesp-target: "), "{what}: {err}");
    assert!(lines[0].contains(needle), "{what}: {needle:?} not in {err}");
}

#[test]
fn poll_us_flag_and_key_set_the_busy_poll_budget() {
    assert_eq!(flags(&[]).expect("defaults").limits.poll_us, 0);
    for (v, us) in [("0", 0), ("50", 50), ("1000", 1000)] {
        let c = flags(&["--poll-us".into(), v.into()]).expect(v);
        assert_eq!(c.limits.poll_us, us);
        let c = toml(&format!("[limits]\npoll_us = {v}\n")).expect(v);
        assert_eq!(c.limits.poll_us, us);
    }
    assert!(flags(&["--poll-us".into(), "1001".into()]).is_err());
    assert!(toml("[limits]\npoll_us = 1001\n").is_err());
}

#[test]
fn max_connections_per_session_flag_and_key_set_the_cap() {
    let default = flags(&[]).expect("defaults").limits;
    assert_eq!(default.max_connections_per_session, 8);
    for (v, n) in [("1", 1u16), ("2", 2), ("65535", 65_535)] {
        let c = flags(&["--max-connections-per-session".into(), v.into()]).expect(v);
        assert_eq!(c.limits.max_connections_per_session, n);
        let c = toml(&format!("[limits]\nmax_connections_per_session = {v}\n")).expect(v);
        assert_eq!(c.limits.max_connections_per_session, n);
    }
    for bad in ["0", "65536"] {
        assert!(toml(&format!("[limits]\nmax_connections_per_session = {bad}\n")).is_err());
    }
    for bad in ["0", "65536", "-1", "two", ""] {
        let out = run(&[&format!("--max-connections-per-session={bad}")]);
        assert_one_line(
            &out,
            2,
            "--max-connections-per-session",
            &format!("--max-connections-per-session {bad}"),
        );
    }
}

#[test]
fn bad_values_exit_2_with_one_line() {
    let size_flags = [
        ("--lun", "ram:"),
        ("--lun", "file:/tmp/x.img,size="),
        ("--lun", "ram:1M,bs="),
        ("--block-size", ""),
        ("--max-recv-data-segment-length", ""),
    ];
    for (flag, prefix) in size_flags {
        for bad in ["12Q", "1000"] {
            // 1000 is a size, but no block size and not a RAM disk of whole
            // blocks; it is a fine segment length and file size.
            let value = format!("{prefix}{bad}");
            if bad == "1000"
                && (flag == "--max-recv-data-segment-length" || prefix.starts_with("file:"))
            {
                continue;
            }
            let out = run(&[flag, &value]);
            assert_one_line(&out, 2, flag, &format!("{flag} {value}"));
        }
    }
    for flag in ["--nop-interval", "--nop-timeout", "--login-timeout"] {
        for bad in ["3x", "-1s"] {
            let out = run(&[&format!("{flag}={bad}")]);
            assert_one_line(&out, 2, flag, &format!("{flag} {bad}"));
        }
    }
    for bad in ["1001", "-1", "5us", "", "4294967296"] {
        let out = run(&[&format!("--poll-us={bad}")]);
        assert_one_line(&out, 2, "--poll-us", &format!("--poll-us {bad}"));
    }
    for (args, needle) in [
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--listen", "nowhere"], "--listen"),
        (
            &["--config", "/nonexistent.toml"],
            "cannot read /nonexistent.toml",
        ),
        (&["--lun", "disk:1"], "--lun"),
        (&["-q", "-v"], "--quiet"),
    ] {
        assert_one_line(&run(args), 2, needle, &format!("{args:?}"));
    }
}

#[test]
fn a_bad_config_file_exits_2_with_one_line_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "[[target]]\nipn = \"x\"\n",
            "line 2 (`ipn = \"x\"`): unknown field `ipn`",
        ),
        ("[limits]\nnop_timeout = \"soon\"\n", "line 2"),
        ("[limits]\nmax_burst_length = \"12Q\"\n", "12Q"),
        ("[limits]\npoll_us = 1001\n", "poll_us"),
        ("[limits]\npoll_us = -5\n", "poll_us"),
        ("listen = [\n", "line"),
    ] {
        let path: PathBuf = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = run(&["--config", path.to_str().unwrap()]);
        assert_one_line(&out, 2, needle, text);
    }
}

#[test]
fn an_invalid_iesp_log_filter_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_iesp-target"))
        .env("IESP_LOG", "iesp_target=loud")
        .output()
        .unwrap();
    assert_one_line(&out, 2, "IESP_LOG", "IESP_LOG=iesp_target=loud");
}

#[test]
fn a_ram_disk_larger_than_the_machine_is_a_usage_error_not_an_abort() {
    let out = run(&["--listen", "127.0.0.1:0", "--lun", "ram:64T"]);
    assert_one_line(&out, 2, "larger than this machine", "ram:64T");
}

#[test]
fn a_port_in_use_exits_3() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = run(&["--listen", &addr]);
    assert_one_line(&out, 3, &format!("cannot listen on {addr}"), "port in use");
}

#[test]
fn a_backing_that_cannot_be_opened_exits_3() {
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--lun",
        "file:/nonexistent/dir/disk.img",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn help_documents_the_exit_codes_and_the_grammar() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Exit status:",
        "  2 ",
        "  3 ",
        "SIGTERM",
        "1h30m",
        "4KiB",
        "IESP_LOG",
        "NO_COLOR",
        "-v",
        "-q",
    ] {
        assert!(help.contains(needle), "{needle:?} not in --help:\n{help}");
    }
    let version = run(&["--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("iesp-target "));
}

#[test]
fn the_command_is_reachable_from_the_library() {
    let cmd = iesp_target::cli::command();
    assert_eq!(cmd.get_name(), "iesp-target");
    let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    for flag in [
        "lun",
        "nop-interval",
        "login-timeout",
        "verbose",
        "quiet",
        "log",
    ] {
        assert!(longs.contains(&flag), "--{flag} missing from {longs:?}");
    }
}
