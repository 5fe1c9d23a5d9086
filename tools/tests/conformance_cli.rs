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
