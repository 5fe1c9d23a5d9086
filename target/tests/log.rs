//! The target's log, redirected to a file as a service manager or a CI
//! script would: plain text with no ANSI escape byte whatever the terminal
//! variables say, the lines an operator looks for, one log variable
//! (`IESP_LOG`; `RUST_LOG` means nothing) and `-q`/`-v` in between.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iesp_initiator::{LoginOptions, Session};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const ESC: u8 = 0x1b;

/// Starts the binary with stderr going to `log`; returns it and its port.
/// With `-q` there is no "listening on" line to read the port from, so
/// the port is picked here (bound and released) and polled for.
fn start(log: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, std::net::SocketAddr) {
    let quiet = args.contains(&"-q");
    let picked = quiet.then(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    });
    let listen = picked.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iesp-target"));
    cmd.args(["--listen", &listen, "--lun", "ram:1M"])
        .args(args)
        .env_remove("IESP_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn iesp-target");
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let up = match picked {
            Some(a) => std::net::TcpStream::connect(a).is_ok().then_some(a),
            None => text
                .lines()
                .find_map(|l| l.strip_prefix("iesp-target: listening on "))
                .map(|a| a.trim().parse().expect("address")),
        };
        if let Some(addr) = up {
            return (child, addr);
        }
        if t0.elapsed() > Duration::from_secs(10) || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("iesp-target did not start on {listen}; log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Logs in and out once, then stops the target with SIGTERM; returns the
/// log's bytes.
fn session_then_sigterm(log: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    let (mut child, addr) = start(log, args, env);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = Session::login(
            addr,
            LoginOptions::new(
                "iqn.2026-11.org.iesp-test:log-test",
                Some(iesp_target::DEFAULT_IQN),
            ),
        )
        .await
        .expect("login");
        s.logical_unit(0).await.expect("LUN 0");
        s.logout().await.expect("logout");
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
    std::fs::read(log).unwrap()
}

#[test]
fn a_redirected_log_has_no_escape_bytes_and_the_expected_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("target.log");
    // Variables that make some programs colour their output anyway.
    let bytes = session_then_sigterm(
        &log,
        &[],
        &[
            ("TERM", "xterm-256color"),
            ("CLICOLOR_FORCE", "1"),
            ("COLORTERM", "truecolor"),
        ],
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(!bytes.contains(&ESC), "ESC byte in the log:\n{text}");
    for line in [
        "iesp-target: listening on 127.0.0.1:",
        "iesp-target: serving iqn.2026-11.org.iesp-test:target0",
        "login complete",
        "iqn.2026-11.org.iesp-test:log-test",
        "iesp-target: stopped",
    ] {
        assert!(text.contains(line), "{line:?} not in the log:\n{text}");
    }
    assert!(
        text.contains(" INFO "),
        "no INFO level tag in the log:\n{text}"
    );
}

#[test]
fn iesp_log_wins_and_rust_log_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    // IESP_LOG=warn silences the info lines even with -v.
    let log = dir.path().join("warn.log");
    let text =
        String::from_utf8(session_then_sigterm(&log, &["-v"], &[("IESP_LOG", "warn")])).unwrap();
    assert!(!text.contains("login complete"), "{text}");
    assert!(text.contains("iesp-target: stopped"), "{text}");
    // RUST_LOG is not read: the default (info) still applies.
    let log = dir.path().join("rust_log.log");
    let text =
        String::from_utf8(session_then_sigterm(&log, &[], &[("RUST_LOG", "error")])).unwrap();
    assert!(text.contains("login complete"), "{text}");
    // -q: errors only.
    let log = dir.path().join("quiet.log");
    let text = String::from_utf8(session_then_sigterm(&log, &["-q"], &[])).unwrap();
    assert!(!text.contains("login complete"), "{text}");
    assert_eq!(text, "", "-q: no banner, nothing but errors");
    // -v: debug lines appear.
    let log = dir.path().join("debug.log");
    let text = String::from_utf8(session_then_sigterm(&log, &["-v"], &[])).unwrap();
    assert!(text.contains(" DEBUG "), "no DEBUG line with -v:\n{text}");
}
