//! verify's state file under crashes: written periodically and on
//! SIGTERM, so that `--check --state-in` after SIGTERM or SIGKILL during a
//! random run finds no false mismatch; an existing `--state-out` is
//! refused without `--force`; a state file of another target is refused.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{iesp_test, image, mismatches, read_json, verify};

/// A random run on `img` saving its state every 200 ms; `sig` after 1.5 s.
fn random_run_signalled(img: &str, state: &str, sig: nix::sys::signal::Signal) -> Option<i32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iesp-test"))
        .args([
            "verify",
            "--write",
            "--mode",
            "random",
            "--seed",
            "5",
            "--block-size",
            "512",
            "--qd",
            "8",
            "--duration",
            "2m",
            "--flush-every",
            "64",
            "--mix",
            "u=70,d=15,t=15,fua=20",
            "--progress",
            "quiet",
            "--state-out",
            state,
            "--state-every",
            "200ms",
            img,
        ])
        .env("IESP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "verify ended early");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
    let t0 = Instant::now();
    let status = child.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(30), "slow to stop");
    status.code()
}

#[test]
fn sigterm_and_sigkill_leave_a_state_that_checks_clean() {
    use nix::sys::signal::Signal;
    for (sig, code) in [(Signal::SIGTERM, Some(143)), (Signal::SIGKILL, None)] {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "r.img", 8 << 20);
        let state = dir.path().join("state.json");
        let st = state.to_str().unwrap();
        assert_eq!(random_run_signalled(&img, st, sig), code, "{sig}");
        let s = read_json(&state);
        // SIGTERM writes the final state; after SIGKILL the last periodic
        // one is what is left (provisional: the run went on after it).
        assert_eq!(s["interrupted"], sig == Signal::SIGTERM, "{sig}");
        assert_eq!(s["provisional"], sig == Signal::SIGKILL, "{sig}");
        assert!(!s["durable_extents"].as_array().unwrap().is_empty());
        let json = dir.path().join("c.json");
        let (run, r) = verify(&["--check", "--state-in", st, &img], &json);
        assert_eq!(run.code, 0, "{sig}: {}", run.text());
        assert_eq!(mismatches(&r), vec![], "{sig}");
        assert!(r["blocks_verified"].as_u64().unwrap() > 0, "{sig}: {r}");
    }
}

#[test]
fn an_existing_state_out_is_refused_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "r.img", 1 << 20);
    let state = dir.path().join("state.json");
    let st = state.to_str().unwrap();
    let json = dir.path().join("r.json");
    let args = [
        "--write",
        "--mode",
        "random",
        "--block-size",
        "512",
        "--state-out",
        st,
    ];
    let mut a = args.to_vec();
    a.push(&img);
    let (run, _) = verify(&a, &json);
    assert_eq!(run.code, 0, "{}", run.text());
    let before = std::fs::read_to_string(&state).unwrap();
    let (run, _) = verify(&a, &json);
    assert_eq!(run.code, 2, "{}", run.text());
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.text());
    assert!(run.stderr.contains("exists"), "{}", run.text());
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        before,
        "untouched"
    );
    a.insert(0, "--force");
    let (run, _) = verify(&a, &json);
    assert_eq!(run.code, 0, "{}", run.text());
}

#[test]
fn a_stale_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a_img = image(dir.path(), "a.img", 1 << 20);
    let b_img = image(dir.path(), "b.img", 2 << 20);
    let state = dir.path().join("state.json");
    let st = state.to_str().unwrap();
    let json = dir.path().join("r.json");
    let (run, _) = verify(
        &[
            "--write",
            "--mode",
            "random",
            "--block-size",
            "512",
            "--state-out",
            st,
            &a_img,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    // Another file: refused, one line, nothing compared.
    let out = iesp_test(&["verify", "--check", "--state-in", st, &b_img]);
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(
        out.stderr
            .contains("refusing a state file of another target"),
        "{}",
        out.text()
    );
    // The same file grown since: refused too.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&a_img)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let out = iesp_test(&["verify", "--check", "--state-in", st, &a_img]);
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(out.stderr.contains("blocks"), "{}", out.text());
}
