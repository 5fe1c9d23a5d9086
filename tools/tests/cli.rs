//! The command-line conventions of docs/cli.md, run as a user runs them:
//! streams and `-`, one-line usage errors with exit 2, output paths checked
//! before any I/O, SIGINT/SIGTERM (exit 130/143, reports marked
//! interrupted, never PASS, a state file that a later check accepts),
//! completions and man pages, and the TCP connect timeout (exit 3) against
//! a loopback listener whose accept queue is full.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{iesp_test, image, read_json};

#[test]
fn verify_json_to_stdout_is_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img", 4 << 20);
    let run = iesp_test(&[
        "verify",
        "--write",
        "--seed",
        "4",
        "--json",
        "-",
        "--progress",
        "lines",
        &img,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let v: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", run.text()));
    assert_eq!(v["seed"], 4);
    assert_eq!(v["interrupted"], false);
    // The human summary went to stderr instead.
    assert!(run.stderr.contains("verify: seed 4"), "{}", run.text());
    assert!(run.stderr.contains("verify: PASS"), "{}", run.text());
    assert!(!Path::new("-").exists() && !dir.path().join("-").exists());
}

#[test]
fn conformance_jsonl_to_stdout_creates_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iesp-test"))
        .args([
            "conformance",
            "--embedded",
            "-t",
            "iSCSI.Nop.*",
            "--profile",
            "default",
            "--jsonl",
            "-",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!dir.path().join("-").exists(), "a file named - was created");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{stdout}")))
        .collect();
    assert_eq!(lines.first().map(|l| l["type"].clone()), Some("run".into()));
    assert_eq!(
        lines.last().map(|l| l["type"].clone()),
        Some("summary".into())
    );
    assert!(stderr.contains("conformance: seed"), "{stderr}");
}

#[test]
fn mistakes_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "m.img", 1 << 20);
    let dirname = dir.path().to_str().unwrap().to_owned();
    let under_file = format!("{img}/x.json");
    // Our own validation: exactly one line on stderr.
    let ours: Vec<(Vec<&str>, &str)> = vec![
        (vec!["verify", &img], "add --write"),
        (
            vec![
                "verify",
                "--write",
                "--json",
                "/nonexistent/dir/x.json",
                &img,
            ],
            "--json /nonexistent/dir/x.json",
        ),
        (
            vec!["verify", "--write", "--json", &dirname, &img],
            "is a directory",
        ),
        (
            vec!["verify", "--write", "--state-out", &under_file, &img],
            "--state-out",
        ),
        (
            vec!["verify", "--write", "--json", "-", "--state-out", "-", &img],
            "only one document",
        ),
        (vec!["verify", "--write", "iscsi://"], "iSCSI URL"),
        (
            vec!["conformance", "iscsi://127.0.0.1:1"],
            "the URL names no target",
        ),
        (
            vec!["conformance", "--embedded", "--junit", "/nonexistent/r.xml"],
            "--junit /nonexistent/r.xml",
        ),
        (
            vec!["conformance", "--embedded", "--junit", "-", "--tap", "-"],
            "only one document",
        ),
    ];
    for (args, wanted) in ours {
        let run = iesp_test(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.text());
        assert!(run.stderr.contains(wanted), "{args:?}: {}", run.text());
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            run.text()
        );
        assert!(
            run.stderr.starts_with("iesp-test: error: "),
            "{}",
            run.text()
        );
    }
    // clap's own: exit 2, the message first (a usage block may follow).
    let clap: Vec<Vec<&str>> = vec![
        vec!["verify", "--write", "--size", "4x", &img],
        vec!["verify", "--write", "--duration", "5 parsecs", &img],
        vec!["verify", "--write", "--progress-interval", "-1s", &img],
        vec!["verify", "--write", "--qd", "0", &img],
        vec!["verify", "--write", "-q", "8", &img],
        vec!["verify", "--bogus", &img],
        vec!["verify"],
        vec!["verify", "--write", "--check", &img],
        vec!["conformance"],
        vec!["conformance", "--embedded", "--timeout", "soon"],
        vec!["selftest", "--block-size", "1000"],
        vec!["completions", "tcsh"],
        vec!["-v", "-q", "selftest"],
    ];
    for args in clap {
        let run = iesp_test(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.text());
        assert!(
            run.stderr.starts_with("error: "),
            "{args:?}: {}",
            run.text()
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.text());
    }
}

/// A mistyped URL is a usage error saying what a URL looks like, in one
/// line without repeating itself, and never echoes the text (a URL may
/// carry a password); it is not "no such file".
#[test]
fn a_mistyped_url_is_one_clear_line() {
    for url in ["http://u%sekrit@x/y/0", "iscsi:/u%sekrit@x/y/0"] {
        for pre in [
            &["verify", "--check", "--seed", "1"][..],
            &["bench"],
            &["fsx", "--write"],
            &["conformance"],
        ] {
            let run = iesp_test(&[pre, &[url]].concat());
            let what = format!("{pre:?} {url}");
            assert_eq!(run.code, 2, "{what}: {}", run.text());
            let err = run.stderr.trim_end();
            assert_eq!(err.lines().count(), 1, "{what}: {err}");
            assert!(
                err.contains("iscsi://[user[%password]@]host"),
                "{what}: {err}"
            );
            assert!(!err.contains("sekrit"), "{what}: echoes the URL: {err}");
            assert!(!err.contains("no such file"), "{what}: {err}");
            assert!(
                err.matches("iSCSI URL").count() <= 1,
                "{what}: said twice: {err}"
            );
        }
    }
}

#[test]
fn a_bad_output_path_fails_before_any_io() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("never.img");
    let run = iesp_test(&[
        "verify",
        "--write",
        "--size",
        "1M",
        "--json",
        "/nonexistent/dir/x.json",
        img.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        !img.exists(),
        "the target was created before the path check"
    );
}

/// Starts a long verify, sends `sig` once it is writing, and returns the
/// exit code, stdout and stderr.
fn verify_signalled(
    sig: nix::sys::signal::Signal,
    img: &str,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iesp-test"))
        .args([
            "verify",
            "--write",
            "--seed",
            "21",
            "--duration",
            "2m",
            "--io-size",
            "64k",
            "--progress",
            "lines",
            "--progress-interval",
            "200ms",
        ])
        .args(extra)
        .arg(img)
        .env("IESP_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "verify ended early");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(30), "slow to stop");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sigint_exits_130_with_an_interrupted_report_and_no_pass() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "i.img", 256 << 20);
    let json = dir.path().join("r.json");
    let (code, stdout, stderr) = verify_signalled(
        nix::sys::signal::Signal::SIGINT,
        &img,
        &["--json", json.to_str().unwrap()],
    );
    let all = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert_eq!(code, Some(130), "{all}");
    assert!(!all.contains("PASS"), "{all}");
    assert!(all.contains("INTERRUPTED"), "{all}");
    let r: serde_json::Value = read_json(&json);
    assert_eq!(r["interrupted"], true, "{r}");
    assert_eq!(r["exit_code"], 130);
    assert_eq!(r["outcome"], "interrupted");
    assert!(r["bytes_written"].as_u64().unwrap_or(0) > 0, "{r}");
}

#[test]
fn sigterm_exits_143_and_saves_a_state_file_a_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "t.img", 256 << 20);
    let state = dir.path().join("state.json");
    let json = dir.path().join("r.json");
    let (code, stdout, stderr) = verify_signalled(
        nix::sys::signal::Signal::SIGTERM,
        &img,
        &[
            "--state-out",
            state.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    let all = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert_eq!(code, Some(143), "{all}");
    assert!(!all.contains("PASS"), "{all}");
    let r: serde_json::Value = read_json(&json);
    assert_eq!(r["interrupted"], true);
    assert!(state.exists(), "no state file: {all}");
    let run = iesp_test(&[
        "verify",
        "--check",
        "--progress",
        "quiet",
        "--state-in",
        state.to_str().unwrap(),
        &img,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(run.stdout.contains("verify: PASS"), "{}", run.text());
}

#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let run = iesp_test(&["completions", shell]);
        assert_eq!(run.code, 0, "{}", run.text());
        for w in ["verify", "conformance", "selftest", "connect-timeout"] {
            assert!(run.stdout.contains(w), "{shell}: no {w}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let run = iesp_test(&["man", "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.text());
    for page in [
        "iesp-test.1",
        "iesp-test-verify.1",
        "iesp-test-conformance.1",
    ] {
        let text = std::fs::read_to_string(out.join(page)).unwrap_or_default();
        assert!(text.starts_with(".ie"), "{page}: {text:.200}");
        assert!(text.contains(".SH"), "{page}");
    }
    let run = iesp_test(&["man"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains(".TH iesp-test"), "{}", run.text());
}

/// A loopback listener that never accepts, its accept queue full: a SYN
/// to it is dropped, as by a portal behind a firewall.
fn black_hole() -> (
    socket2::Socket,
    std::net::SocketAddr,
    Vec<std::net::TcpStream>,
) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => fillers.push(c),
            Err(_) => return (s, addr, fillers),
        }
    }
    panic!("the accept queue of a backlog-0 listener never filled");
}

#[test]
fn a_portal_that_never_answers_gives_exit_3_within_the_timeout() {
    let (_l, addr, _fillers) = black_hole();
    let url = format!("iscsi://{addr}/iqn.2026-11.org.iesp-test:none/0");
    for args in [
        vec!["verify", "--check", "--connect-timeout", "700ms", &url],
        vec![
            "conformance",
            "--connect-timeout",
            "700ms",
            "-t",
            "iSCSI.Login.NormalSession",
            &url,
        ],
    ] {
        let t0 = Instant::now();
        let run = iesp_test(&args);
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(700), "{args:?}: {took:?}");
        assert!(took < Duration::from_secs(8), "{args:?}: {took:?}");
        if args[0] == "verify" {
            assert_eq!(run.code, 3, "{}", run.text());
            assert!(run.stderr.contains("timed out"), "{}", run.text());
        } else {
            // The suite reports the unreachable target as erroring cases.
            assert_ne!(run.code, 0, "{}", run.text());
        }
    }
}
