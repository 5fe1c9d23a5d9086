//! Acceptance: libiscsi's whole `iscsi-test-cu` suite against the reference
//! target, and the same command against tgt in the same run, side by side.
//!
//! `iscsi-test-cu --dataloss -t ALL -i A -I B URL URL` — a file-backed,
//! thin-provisioned LUN, a second initiator name (the reservation suites
//! log in as both) and the same LUN as a second path (the MultipathIO
//! suite). Our target must fail nothing, skip fewer tests than tgt, and skip
//! only what [`EXPECTED_SKIPS`] lists — each a deliberate non-feature
//! documented in the README's conformance section. A skip that appears or
//! disappears fails the test: the list and the README follow the target.
//!
//! A second pass runs the `ReadOnly` suite, which needs a write-protected
//! unit, against a read-only LUN of the same target.

use std::collections::BTreeMap;
use std::time::Duration;

use iesp_target::config::{Backing, LunSpec, TargetConfig};
use iesp_testsupport::TestTarget;
use iesp_testsupport::peers::libiscsi::{self, Outcome, TestCuReport};
use iesp_testsupport::peers::tgt::Tgtd;
use iesp_testsupport::peers::{self, create_sparse_file};

const MIB: u64 = 1 << 20;
const LUN_BYTES: u64 = 128 * MIB;
const INITIATOR_1: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";
const INITIATOR_2: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2";
const OUR_TIMEOUT: Duration = Duration::from_secs(600);
const TGT_TIMEOUT: Duration = Duration::from_secs(900);

/// The tests our target skips on purpose, by reason (README, "Conformance").
const EXPECTED_SKIPS: &[(&str, &[&str])] = &[
    (
        "the medium is not removable (RMB=0)",
        &[
            "ALL.PreventAllow.Simple",
            "ALL.PreventAllow.Eject",
            "ALL.PreventAllow.ITNexusLoss",
            "ALL.PreventAllow.Logout",
            "ALL.PreventAllow.WarmReset",
            "ALL.PreventAllow.ColdReset",
            "ALL.PreventAllow.LUNReset",
            "ALL.PreventAllow.2ITNexuses",
            "ALL.StartStopUnit.Simple",
        ],
    ),
    (
        "SANITIZE is not implemented (and needs --allow-sanitize)",
        &[
            "ALL.Sanitize.BlockErase",
            "ALL.Sanitize.BlockEraseReserved",
            "ALL.Sanitize.CryptoErase",
            "ALL.Sanitize.CryptoEraseReserved",
            "ALL.Sanitize.ExitFailureMode",
            "ALL.Sanitize.InvalidServiceAction",
            "ALL.Sanitize.Overwrite",
            "ALL.Sanitize.OverwriteReserved",
            "ALL.Sanitize.Readonly",
            "ALL.Sanitize.Reservations",
            "ALL.Sanitize.Reset",
        ],
    ),
    (
        "WRITE ATOMIC(16) is not implemented",
        &[
            "ALL.WriteAtomic16.Simple",
            "ALL.WriteAtomic16.BeyondEol",
            "ALL.WriteAtomic16.ZeroBlocks",
            "ALL.WriteAtomic16.WriteProtect",
            "ALL.WriteAtomic16.DpoFua",
            "ALL.WriteAtomic16.VPD",
        ],
    ),
    (
        "one logical block per physical block (LBPPBE=0)",
        &[
            "ALL.CompareAndWrite.InvalidDataOutSize",
            "ALL.WriteSame10.UnmapUnaligned",
            "ALL.WriteSame10.InvalidDataOutSize",
            "ALL.WriteSame16.UnmapUnaligned",
            "ALL.WriteSame16.InvalidDataOutSize",
        ],
    ),
    (
        "needs a write-protected LU: run in the second pass",
        &["ALL.ReadOnly.ReadOnlySBC"],
    ),
];

/// The first `[SKIPPED]` message of a case: libiscsi's own reason.
fn skip_reason(report: &TestCuReport, name: &str) -> String {
    report
        .cases
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.messages.iter().find(|m| m.contains("[SKIPPED]")))
        .map(|m| m.split("[SKIPPED]").nth(1).unwrap_or(m).trim().to_owned())
        .unwrap_or_default()
}

/// Runs the suite on a blocking thread (the target runs in this process).
async fn test_cu(urls: [String; 2], tests: &'static str, timeout: Duration) -> TestCuReport {
    tokio::task::spawn_blocking(move || {
        libiscsi::iscsi_test_cu_multipath(
            [&urls[0], &urls[1]],
            tests,
            &["-i", INITIATOR_1, "-I", INITIATOR_2],
            timeout,
        )
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("iscsi-test-cu did not complete: {e}"))
}

fn side_by_side(ours: &TestCuReport, tgt: &TestCuReport) -> String {
    let mut t = String::new();
    t.push_str(&format!("{:<14}{:>14}{:>14}\n", "", "iesp-target", "tgt"));
    for (label, a, b) in [
        ("tests run", ours.run, tgt.run),
        ("passed", ours.really_passed(), tgt.really_passed()),
        ("skipped", ours.skipped.len(), tgt.skipped.len()),
        ("failed", ours.failed, tgt.failed),
    ] {
        t.push_str(&format!("{label:<14}{a:>14}{b:>14}\n"));
    }
    t.push_str(&format!(
        "{:<14}{:>13.1}s{:>13.1}s\n",
        "time",
        ours.elapsed.as_secs_f64(),
        tgt.elapsed.as_secs_f64()
    ));
    t.push_str(&format!("iesp-target: {}\n", ours.summary_line()));
    t.push_str(&format!("tgt:         {}\n", tgt.summary_line()));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iscsi_test_cu_all_against_our_target_and_tgt() {
    let Some(_) = peers::tools_or_skip(&["iscsi-test-cu", "tgtd", "tgtadm"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ro_image = create_sparse_file(dir.path(), 16 * MIB).expect("read-only image");
    let mut cfg = TargetConfig::default();
    cfg.targets[0].luns = vec![
        LunSpec {
            backing: Backing::File {
                path: dir.path().join("lun0.img"),
                size: Some(LUN_BYTES),
            },
            block_size: 512,
            read_only: false,
        },
        LunSpec {
            backing: Backing::File {
                path: ro_image,
                size: None,
            },
            block_size: 512,
            read_only: true,
        },
    ];
    let target = TestTarget::start(cfg).await;
    let (lun0, lun1) = (target.url(0), target.url(1));

    let ours = test_cu([lun0.clone(), lun0], "ALL", OUR_TIMEOUT).await;
    let read_only = test_cu([lun1.clone(), lun1], "ALL.ReadOnly", OUR_TIMEOUT).await;
    target.stop().await;

    let (tgtd, tgt_url) = tokio::task::spawn_blocking(|| Tgtd::with_file_lun(LUN_BYTES))
        .await
        .expect("join")
        .expect("tgtd with a file LUN");
    let tgt = test_cu([tgt_url.clone(), tgt_url], "ALL", TGT_TIMEOUT).await;
    drop(tgtd);

    let mut summary = String::from(
        "==== iscsi-test-cu --dataloss -t ALL (two initiator names, two paths) ====\n",
    );
    summary.push_str(&side_by_side(&ours, &tgt));
    summary.push_str(&format!(
        "\n==== iesp-target: [SKIPPED] tests ({}) ====\n",
        ours.skipped.len()
    ));
    for name in &ours.skipped {
        summary.push_str(&format!("  {name}: {}\n", skip_reason(&ours, name)));
    }
    summary.push_str(&format!(
        "\n==== iesp-target, read-only LUN: {} ====\n",
        read_only.summary_line()
    ));
    eprint!("\n{summary}");
    // Test output is captured when the test passes; CI prints this file so
    // the comparison is in its log either way.
    let report = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("libiscsi-all-summary.txt");
    std::fs::write(&report, &summary).expect("write the summary for the CI log");

    // Our target: complete, clean, nothing failed.
    assert_eq!(ours.exit_code, Some(0), "{}", ours.raw);
    assert!(ours.notes.is_empty(), "{:?}", ours.notes);
    assert!(ours.suite_errors.is_empty(), "{:?}", ours.suite_errors);
    assert_eq!(
        (ours.failed, ours.asserts_failed),
        (0, 0),
        "{}",
        ours.summary_line()
    );
    assert!(ours.run >= 230, "the whole suite ran: {}", ours.run);
    // Every skip is a documented one, and every documented one happens.
    let expected: BTreeMap<&str, &str> = EXPECTED_SKIPS
        .iter()
        .flat_map(|(why, names)| names.iter().map(move |n| (*n, *why)))
        .collect();
    let unexpected: Vec<&String> = ours
        .skipped
        .iter()
        .filter(|n| !expected.contains_key(n.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "skips not in EXPECTED_SKIPS (and the README): {unexpected:?}"
    );
    let fixed: Vec<&&str> = expected
        .keys()
        .filter(|n| !ours.skipped.iter().any(|s| s == *n))
        .collect();
    assert!(
        fixed.is_empty(),
        "no longer skipped, update EXPECTED_SKIPS and the README: {fixed:?}"
    );
    // Fewer skips than tgt, measured in the same run.
    assert!(
        ours.skipped.len() < tgt.skipped.len(),
        "ours {} skips, tgt {}",
        ours.skipped.len(),
        tgt.skipped.len()
    );
    // The second pass ran the read-only test for real.
    assert_eq!(read_only.failed, 0, "{}", read_only.raw);
    let ro_case = read_only
        .cases
        .iter()
        .find(|c| c.name == "ALL.ReadOnly.ReadOnlySBC")
        .expect("ReadOnlySBC ran");
    assert_eq!(ro_case.outcome, Outcome::Passed, "{:?}", ro_case.messages);
}
