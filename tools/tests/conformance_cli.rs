//! `iesp-test conformance` as a user runs it: listing, a run against the
//! embedded target with every report, the baseline workflow (write, fixed,
//! regression) and one-line messages for command-line mistakes.

mod common;

use common::iesp_test;

#[test]
fn list_names_every_case_instance() {
    let out = iesp_test(&["conformance", "--list"]);
    assert!(out.code == 0, "{}", out.stderr);
    let stdout = &out.stdout;
    let last = stdout.lines().last().unwrap_or_default();
    let cases: usize = last
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected last line {last:?}"));
    assert!(cases >= 150, "{last}");
    assert!(stdout.contains("iSCSI.Login.NormalSession"), "{stdout}");
    assert!(
        stdout.contains("iSCSI.R2T.R2tSnIncrements@small-mrdsl"),
        "{stdout}"
    );
    let some = iesp_test(&[
        "conformance",
        "--list",
        "-t",
        "iSCSI.Nop.*",
        "--profile",
        "default",
    ]);
    let stdout = &some.stdout;
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("5 case instances"),
        "{stdout}"
    );
}

#[test]
fn embedded_run_reports_and_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let (junit, tap, jsonl, base) = (p("r.xml"), p("r.tap"), p("r.jsonl"), p("base.toml"));
    let args = [
        "conformance",
        "--embedded",
        "-t",
        "iSCSI.Nop.*",
        "--profile",
        "default",
    ];

    // Write a baseline from a run, with every report.
    let mut a = args.to_vec();
    a.extend([
        "--junit",
        &junit,
        "--tap",
        &tap,
        "--jsonl",
        &jsonl,
        "--baseline",
        &base,
        "--update-baseline",
    ]);
    let out = iesp_test(&a);
    assert!(out.code == 0, "{}{}", out.stdout, out.stderr);
    let b = std::fs::read_to_string(&base).unwrap();
    assert_eq!(b.matches("outcome = \"pass\"").count(), 5, "{b}");
    assert!(
        std::fs::read_to_string(&junit)
            .unwrap()
            .contains("<testsuite name=\"iSCSI.Nop\"")
    );
    assert!(
        std::fs::read_to_string(&tap)
            .unwrap()
            .starts_with("TAP version 14\n1..5\n")
    );
    assert_eq!(std::fs::read_to_string(&jsonl).unwrap().lines().count(), 7);

    // A case the baseline expects to fail now passes: reported, not fatal.
    std::fs::write(
        &base,
        b.replace(
            "\"iSCSI.Nop.PingEchoesData\" = { outcome = \"pass\" }",
            "\"iSCSI.Nop.PingEchoesData\" = { outcome = \"fail\", note = \"old\" }",
        ),
    )
    .unwrap();
    let mut a = args.to_vec();
    a.extend(["--baseline", &base]);
    let out = iesp_test(&a);
    let stdout = &out.stdout;
    assert!(out.code == 0, "{stdout}");
    assert!(
        stdout.contains("fixed — update the baseline: iSCSI.Nop.PingEchoesData"),
        "{stdout}"
    );

    // A user script that fails where the baseline expects a pass: a regression.
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    std::fs::write(
        scripts.join("wrong.toml"),
        "family = \"User\"\nsuite = \"Wrong\"\n[[case]]\nname = \"EchoOfTheWrongTag\"\nsection = \"RFC 7143 §11.19\"\nlevel = \"MUST\"\nsummary = \"deliberately wrong\"\n[[case.step]]\nsend = \"NopOut\"\nas = \"p\"\n[[case.step]]\nexpect = \"NopIn\"\nfields = { ITT = \"${p.ITT + 1}\" }\n",
    )
    .unwrap();
    let out = iesp_test(&[
        "conformance",
        "--embedded",
        "-t",
        "User.*",
        "--scripts",
        scripts.to_str().unwrap(),
        "--baseline",
        &base,
    ]);
    let stdout = &out.stdout;
    assert_eq!(out.code, 1, "{stdout}");
    assert!(
        stdout.contains(
            "UNEXPECTED User.Wrong.EchoOfTheWrongTag: fail where the baseline expects pass"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("NopIn.ITT: expected"),
        "the failure shows the field: {stdout}"
    );
    assert!(stdout.contains("PDU trace"), "{stdout}");
}

#[test]
fn mistakes_get_one_line_messages() {
    for (args, wanted) in [
        (
            vec!["conformance", "--embedded", "-t", "["],
            "invalid pattern",
        ),
        (
            vec!["conformance", "--embedded", "--profile", "fast"],
            "unknown profile \"fast\"",
        ),
        (
            vec!["conformance", "iscsi://127.0.0.1:1"],
            "the URL names no target",
        ),
        (
            vec!["conformance", "--embedded", "-t", "Nothing.Matches.*"],
            "no case matches the selection",
        ),
        (
            vec!["conformance", "--embedded", "--chap", "nocolon"],
            "--chap takes USER:SECRET",
        ),
    ] {
        let out = iesp_test(&args);
        let stderr = &out.stderr;
        assert_eq!(out.code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

// ---- telling the truth about the target (issue 12) -------------------------

use common::faulty;
use iesp_testsuite::proxy::Fault;
use iesp_testsupport::BlockingTarget;

#[test]
fn a_closed_port_runs_no_case() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("r.jsonl");
    let url = format!("iscsi://{port}/iqn.2026-11.org.iesp-test:none/0");
    let out = iesp_test(&["conformance", "--jsonl", jsonl.to_str().unwrap(), &url]);
    assert_eq!(out.code, 3, "{}", out.text());
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.text());
    assert!(lines[0].contains("cannot connect to"), "{}", out.text());
    assert!(!jsonl.exists(), "no case ran, no report");
    assert!(!out.stdout.contains("PASS") && !out.stdout.contains("ERROR"));
}

#[test]
fn a_wrong_iqn_is_one_line_and_exit_3() {
    let t = BlockingTarget::ram(1 << 20, 512);
    let url = format!("iscsi://{}/iqn.2026-11.org.iesp-test:wrong/0", t.addr());
    let out = iesp_test(&["conformance", "-t", "iSCSI.Nop.*", &url]);
    assert_eq!(out.code, 3, "{}", out.text());
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.text());
    assert!(
        lines[0].contains("cannot log in to iqn.2026-11.org.iesp-test:wrong")
            && lines[0].contains("target not found"),
        "{}",
        out.text()
    );
    assert!(!out.stdout.contains("PASS"), "{}", out.text());
    // A LUN the target lacks is one line too.
    let url = format!("iscsi://{}/{}/7", t.addr(), t.iqn());
    let out = iesp_test(&["conformance", "-t", "iSCSI.Nop.*", &url]);
    assert_eq!(out.code, 3, "{}", out.text());
    assert!(out.stderr.contains("LUN 7"), "{}", out.text());
}

/// The "target" dies on an undefined opcode (iSCSI.Reject.UnknownOpcode
/// sends one): that case is named in every report, the cases after it are
/// NOT RUN, not ERROR.
#[test]
fn a_target_that_dies_names_its_killer_in_every_report() {
    const KILLER: &str = "iSCSI.Reject.UnknownOpcode";
    let f = faulty(Fault::CrashOnMalformed);
    let dir = tempfile::tempdir().unwrap();
    let (jsonl, junit) = (dir.path().join("r.jsonl"), dir.path().join("r.xml"));
    let out = iesp_test(&[
        "conformance",
        "--profile",
        "default",
        "-t",
        "iSCSI.Nop.PingEchoesData",
        "-t",
        KILLER,
        "-t",
        "iSCSI.Text.*",
        "--jsonl",
        jsonl.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        &f.url,
    ]);
    assert_eq!(out.code, 1, "{}", out.text());
    assert!(
        out.stdout
            .contains(&format!("stopped answering after {KILLER}")),
        "{}",
        out.text()
    );
    assert!(out.stdout.contains("NOT RUN"), "{}", out.text());
    assert!(!out.stdout.contains("ERROR "), "{}", out.text());
    assert!(
        out.stderr.contains("unclean run:") && out.stderr.contains("not run"),
        "{}",
        out.text()
    );
    let lines = common::json_lines(&jsonl);
    assert_eq!(lines[0]["schema"], "iesp-test/conformance-jsonl/3");
    let summary = lines.last().unwrap();
    assert_eq!(summary["killer"], KILLER, "{summary}");
    let not_run: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["outcome"] == "not-run").collect();
    assert!(!not_run.is_empty(), "{lines:?}");
    assert_eq!(summary["not_run"], not_run.len());
    assert!(
        not_run
            .iter()
            .all(|l| l["instance"].as_str().unwrap().starts_with("iSCSI.Text.")),
        "{not_run:?}"
    );
    assert!(lines.iter().all(|l| l["outcome"] != "error"), "{lines:?}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(&format!(
            "<property name=\"probable_killer\" value=\"{KILLER}\"/>"
        )),
        "{xml}"
    );
    assert!(xml.contains("NOT RUN: "), "{xml}");
}

/// READ CAPACITY(16) answered with a block length of 0: an ERROR naming
/// the command and the setup step, never a quiet READ CAPACITY(10).
#[test]
fn a_malformed_read_capacity_16_is_an_error_naming_it() {
    let f = faulty(Fault::MalformedReadCapacity16);
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("r.jsonl");
    let out = iesp_test(&[
        "conformance",
        "--profile",
        "default",
        "-t",
        "SCSI.Commands.TestUnitReady",
        "--jsonl",
        jsonl.to_str().unwrap(),
        &f.url,
    ]);
    assert_eq!(out.code, 1, "{}", out.text());
    let lines = common::json_lines(&jsonl);
    let case = lines
        .iter()
        .find(|l| l["type"] == "case")
        .expect("a case line");
    assert_eq!(case["outcome"], "error", "{case}");
    let msg = case["message"].as_str().unwrap();
    assert!(
        msg.starts_with("setup failed at READ CAPACITY: READ CAPACITY(16)")
            && msg.contains("malformed")
            && msg.contains("LOGICAL BLOCK LENGTH IN BYTES 0"),
        "{msg}"
    );
    assert!(
        !case["notes"].to_string().contains("READ CAPACITY(10)"),
        "no fallback: {case}"
    );
    drop(f.target);
}

/// Every report starts with the run's notes: seed, profiles, exclusions.
#[test]
fn reports_state_seed_profile_and_exclusions() {
    let dir = tempfile::tempdir().unwrap();
    let (jsonl, tap) = (dir.path().join("r.jsonl"), dir.path().join("r.tap"));
    let out = iesp_test(&[
        "conformance",
        "--embedded",
        "--seed",
        "77",
        "--profile",
        "default",
        "-t",
        "iSCSI.Nop.*",
        "-x",
        "iSCSI.Nop.PingEchoesData",
        "--jsonl",
        jsonl.to_str().unwrap(),
        "--tap",
        tap.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.text());
    for want in [
        "seed 77",
        "profiles: default",
        "exclusions: iSCSI.Nop.PingEchoesData",
    ] {
        assert!(out.stdout.contains(want), "{want}: {}", out.text());
        let t = std::fs::read_to_string(&tap).unwrap();
        assert!(t.contains("# note: ") && t.contains(want), "{t}");
    }
    let lines = common::json_lines(&jsonl);
    let notes = lines[0]["notes"].to_string();
    assert!(
        notes.contains("seed 77") && notes.contains("exclusions: iSCSI.Nop.PingEchoesData"),
        "{notes}"
    );
}
