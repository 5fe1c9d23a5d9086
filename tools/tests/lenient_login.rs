//! Lenient login end to end (issue 9, item 5), against a target that
//! answers FirstBurstLength = MaxBurstLength = 268435456 whatever is
//! offered, as iESP does: our reference target behind the rewriting proxy
//! with [`Fault::OversizeBurstAnswers`], on loopback.
//!
//! - `verify` is lenient by default: it passes, warns naming the key and
//!   the value, and records the clamp in its `--json` report; `--strict`
//!   fails with exit 3 and one line naming the key.
//! - `conformance` is strict: the negotiation case fails by name, the
//!   cases that log in fail on the one cause and the run names it once;
//!   `--tolerate-negotiation` runs the rest of the suite on the clamped
//!   session, with the answers noted in the report.
//! - A control through [`Fault::Passthrough`] shows the warnings come from
//!   the fault, not from the target.
//!
//! Also here: SIGINT during a conformance run (exit 130, JUnit and JSONL
//! written and marked interrupted, no PASS), and the preflight connect
//! (a closed port is exit 3 with one line).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, iesp_test_env, json_lines, read_json};
use iesp_testsuite::proxy::{Fault, OVERSIZE_BURST};
use serde_json::Value;

/// Runs `iesp-test ARGS` with errors only in the log and no colour.
fn iesp_test(args: &[&str]) -> Run {
    iesp_test_env(args, &[("IESP_LOG", "error"), ("NO_COLOR", "1")])
}

fn cases<'a>(lines: &'a [Value], outcome: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l["type"] == "case" && l["outcome"] == outcome)
        .filter_map(|l| l["instance"].as_str())
        .collect()
}

fn summary(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("a summary line")
}

const BURST: &str = "268435456";

#[test]
fn verify_is_lenient_by_default_and_strict_on_request() {
    assert_eq!(OVERSIZE_BURST.to_string(), BURST);
    let f = common::faulty(Fault::OversizeBurstAnswers);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let run = iesp_test(&[
        "verify",
        "--write",
        "--seed",
        "3",
        "--length",
        "2M",
        "--progress",
        "quiet",
        "--json",
        json.to_str().unwrap(),
        &f.url,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let warning = run
        .stderr
        .lines()
        .find(|l| l.contains("warning") && l.contains("FirstBurstLength"))
        .unwrap_or_else(|| panic!("no warning naming FirstBurstLength: {}", run.text()));
    assert!(warning.contains(BURST), "{warning}");
    assert!(warning.contains("--strict"), "{warning}");
    assert!(!run.stdout.contains("warning"), "warnings go to stderr");
    let r = read_json(&json);
    let ws = r["negotiation_warnings"].as_array().expect("recorded");
    let fbl = ws
        .iter()
        .find(|w| w["key"] == "FirstBurstLength")
        .unwrap_or_else(|| panic!("no FirstBurstLength in {r}"));
    assert_eq!(fbl["answered"], BURST, "{fbl}");
    // Clamped to the offer: the legal value, at most what was offered.
    let offered: u64 = fbl["offered"].as_str().unwrap().parse().unwrap();
    let used: u64 = fbl["used"].as_str().unwrap().parse().unwrap();
    assert!(used <= offered && used < u64::from(OVERSIZE_BURST), "{fbl}");
    assert!(ws.iter().any(|w| w["key"] == "MaxBurstLength"), "{r}");

    // --strict: the login fails, exit 3, one line naming the key.
    let run = iesp_test(&[
        "verify",
        "--check",
        "--strict",
        "--progress",
        "quiet",
        &f.url,
    ]);
    assert_eq!(run.code, 3, "{}", run.text());
    let lines: Vec<&str> = run.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.text());
    assert!(lines[0].starts_with("iesp-test: error: "), "{}", run.text());
    assert!(lines[0].contains("FirstBurstLength"), "{}", run.text());
    assert!(lines[0].contains(BURST), "{}", run.text());
    assert!(!run.stdout.contains("PASS"), "{}", run.text());
}

#[test]
fn verify_through_a_faithful_proxy_has_no_negotiation_warning() {
    let f = common::faulty(Fault::Passthrough);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let run = iesp_test(&[
        "verify",
        "--write",
        "--strict",
        "--seed",
        "4",
        "--length",
        "1M",
        "--progress",
        "quiet",
        "--json",
        json.to_str().unwrap(),
        &f.url,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(!run.stderr.contains("FirstBurstLength"), "{}", run.text());
    let r = read_json(&json);
    assert_eq!(r["negotiation_warnings"], serde_json::json!([]), "{r}");
}

/// `conformance URL` on the default profile with a JSON lines report.
fn conformance(url: &str, jsonl: &Path, extra: &[&str]) -> (Run, Vec<Value>) {
    let mut args = vec![
        "conformance",
        "--format",
        "quiet",
        "--profile",
        "default",
        "--dataloss",
        "--jsonl",
        jsonl.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let run = iesp_test(&args);
    let lines = json_lines(jsonl);
    (run, lines)
}

#[test]
fn conformance_is_strict_and_tolerates_on_request() {
    const CASE: &str = "iSCSI.Negotiation.FirstBurstLengthIsMinimum";
    let f = common::faulty(Fault::OversizeBurstAnswers);
    let dir = tempfile::tempdir().unwrap();

    // Strict: the negotiation case fails by name, the cases that log in
    // fail on the answer, and the run names the one cause once.
    let (strict, s_lines) = conformance(&f.url, &dir.path().join("strict.jsonl"), &[]);
    assert_eq!(strict.code, 1, "{}", strict.text());
    let s_fail = cases(&s_lines, "fail");
    assert!(s_fail.contains(&CASE), "{s_fail:?}");
    let setup = s_lines
        .iter()
        .find(|l| l["instance"] == "iSCSI.Nop.PingEchoesData")
        .expect("a case that logs in");
    assert_eq!(setup["outcome"], "fail", "{setup}");
    let msg = setup["message"].as_str().unwrap();
    assert!(
        msg.contains("FirstBurstLength=268435456") && msg.contains("--tolerate-negotiation"),
        "{msg}"
    );
    let cause: Vec<&str> = strict
        .stderr
        .lines()
        .filter(|l| l.contains("failed at login on answers outside the legal range"))
        .collect();
    assert_eq!(cause.len(), 1, "{}", strict.text());
    assert!(
        strict.stderr.contains("FirstBurstLength=268435456"),
        "{}",
        strict.text()
    );

    // Tolerant: the rest of the suite runs on the clamped session.
    let (lenient, l_lines) = conformance(
        &f.url,
        &dir.path().join("lenient.jsonl"),
        &["--tolerate-negotiation"],
    );
    assert_eq!(lenient.code, 1, "{}", lenient.text());
    let l_fail = cases(&l_lines, "fail");
    assert!(l_fail.contains(&CASE), "{l_fail:?}");
    let (s_pass, l_pass) = (
        summary(&s_lines)["pass"].as_u64().unwrap(),
        summary(&l_lines)["pass"].as_u64().unwrap(),
    );
    let total = summary(&l_lines)["cases"].as_u64().unwrap();
    assert!(
        l_pass >= 3 * s_pass.max(1) && l_pass * 10 >= total * 7,
        "strict {s_pass} pass, tolerant {l_pass} of {total}"
    );
    // Only the cases that check the burst answers themselves still fail.
    assert!(
        l_fail.iter().all(|c| c.starts_with("iSCSI.Negotiation.")
            || c.starts_with("iSCSI.Login.")
            || c.starts_with("iSCSI.Keys.")),
        "{l_fail:?}"
    );
    // The clamp is recorded on the cases that logged in, and named once
    // on stderr.
    let noted = l_lines
        .iter()
        .find(|l| l["instance"] == "iSCSI.Nop.PingEchoesData")
        .expect("a case that logs in");
    assert_eq!(noted["outcome"], "pass", "{noted}");
    let notes: Vec<&str> = noted["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("FirstBurstLength=268435456") && n.contains("tolerated")),
        "{notes:?}"
    );
    assert!(
        lenient.stderr.contains("warning: tolerated login answers"),
        "{}",
        lenient.text()
    );
    assert!(
        lenient.stderr.contains("FirstBurstLength=268435456"),
        "{}",
        lenient.text()
    );
}

#[test]
fn sigint_during_conformance_writes_interrupted_reports_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("r.xml");
    let jsonl = dir.path().join("r.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_iesp-test"))
        .args([
            "conformance",
            "--embedded",
            "--seed",
            "77",
            "--junit",
            junit.to_str().unwrap(),
            "--jsonl",
            jsonl.to_str().unwrap(),
        ])
        .env("IESP_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until cases are finishing (progress lines on stdout), then SIGINT.
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut stdout = String::new();
    let mut progress = 0;
    while progress < 10 {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(n > 0, "the run ended before the signal:\n{stdout}");
        progress += usize::from(line.starts_with('['));
        stdout.push_str(&line);
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let t0 = Instant::now();
    std::io::Read::read_to_string(&mut reader, &mut stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20), "slow to stop");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert_eq!(out.status.code(), Some(130), "{all}");
    assert!(stderr.contains("interrupted by SIGINT"), "{all}");
    // No verdict: the summary counts cases, it does not say PASS.
    let verdict = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| !l.starts_with('['))
        .find(|l| l.contains("PASS"));
    assert!(verdict.is_none(), "{verdict:?}\n{all}");

    let lines = json_lines(&jsonl);
    assert_eq!(lines[0]["interrupted"], true, "{}", lines[0]);
    assert_eq!(summary(&lines)["interrupted"], true);
    let run = summary(&lines)["cases"].as_u64().unwrap();
    assert!(run >= 10, "{run} cases in the report, 10 seen finishing");
    assert!(run < 400, "the run was not cut short ({run} cases)");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<property name=\"interrupted\" value=\"true\"/>"),
        "{xml}"
    );
}

#[test]
fn conformance_against_a_closed_port_is_one_line_and_exit_3() {
    let port: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("iscsi://{port}/iqn.2026-11.org.iesp-test:none/0");
    let t0 = Instant::now();
    let run = iesp_test(&["conformance", &url]);
    assert!(t0.elapsed() < Duration::from_secs(5), "{}", run.text());
    assert_eq!(run.code, 3, "{}", run.text());
    let lines: Vec<&str> = run.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.text());
    assert!(
        lines[0].starts_with("iesp-test: error: conformance: cannot connect to"),
        "{}",
        run.text()
    );
    assert!(!run.stdout.contains("ERROR"), "{}", run.text());
}
