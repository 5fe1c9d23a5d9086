//! libiscsi's tools against our target (file LUN): `iscsi-ls -s`,
//! `iscsi-inq` and `iscsi-readcapacity16` succeed and report what the target
//! serves, and `iscsi-test-cu --dataloss` over the foundation suites reports
//! 0 failed. CUnit counts a `[SKIPPED]` test as passed, so skips are counted
//! and listed separately.

use std::time::Duration;

use iesp_testsupport::BlockingTarget;
use iesp_testsupport::peers::libiscsi::{
    ReadCapacity16, iscsi_inq, iscsi_ls, iscsi_readcapacity16, iscsi_test_cu, parse_iscsi_ls,
};
use iesp_testsupport::peers::tools_or_skip;

const LUN_BYTES: u64 = 64 << 20;

/// The libiscsi suites the foundation issue requires to pass.
const FOUNDATION_SUITES: &str = "ALL.Inquiry,ALL.TestUnitReady,ALL.ReadCapacity10,ALL.ReadCapacity16,\
ALL.Read6,ALL.Read10,ALL.Read16,ALL.Write10,ALL.Write16,ALL.iSCSIcmdsn,ALL.iSCSIResiduals";

fn target(dir: &tempfile::TempDir) -> BlockingTarget {
    BlockingTarget::with_file_lun(&dir.path().join("lun0.img"), LUN_BYTES)
}

#[test]
fn iscsi_ls_inq_readcapacity16() {
    if tools_or_skip(&["iscsi-ls", "iscsi-inq", "iscsi-readcapacity16"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = target(&dir);

    let ls = iscsi_ls(&t.portal_url())
        .expect("iscsi-ls")
        .ensure_success()
        .expect("iscsi-ls exit status");
    let listed = parse_iscsi_ls(&ls.stdout);
    let ours = listed
        .iter()
        .find(|l| l.iqn == t.iqn())
        .unwrap_or_else(|| panic!("iscsi-ls lists no {}:\n{}", t.iqn(), ls.stdout));
    assert_eq!(
        ours.portal,
        format!("{},1", t.addr()),
        "portal and group tag"
    );
    assert_eq!(ours.luns.len(), 1, "{:?}", ours.luns);
    assert!(
        ours.luns[0].1.starts_with("DIRECT_ACCESS"),
        "{:?}",
        ours.luns
    );

    let inq = iscsi_inq(&t.url(0))
        .expect("iscsi-inq")
        .ensure_success()
        .expect("iscsi-inq exit status");
    assert!(
        inq.stdout.contains("Peripheral Device Type:DIRECT_ACCESS"),
        "{}",
        inq.stdout
    );
    assert!(inq.stdout.contains("Vendor:IESP"), "{}", inq.stdout);

    let rc = iscsi_readcapacity16(&t.url(0))
        .expect("iscsi-readcapacity16")
        .ensure_success()
        .expect("exit status");
    let cap =
        ReadCapacity16::parse(&rc.stdout).unwrap_or_else(|| panic!("unparsable:\n{}", rc.stdout));
    assert_eq!(
        cap,
        ReadCapacity16 {
            returned_lba: LUN_BYTES / 512 - 1,
            block_length: 512,
            total_size: LUN_BYTES
        }
    );
}

#[test]
fn iscsi_test_cu_foundation_suites() {
    if tools_or_skip(&["iscsi-test-cu"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = target(&dir);
    let report = iscsi_test_cu(&t.url(0), FOUNDATION_SUITES, &[], Duration::from_secs(600))
        .expect("iscsi-test-cu");
    println!(
        "iscsi-test-cu against iesp-target: {}",
        report.summary_line()
    );
    println!("[SKIPPED] lines: {}", report.skipped.len());
    for s in &report.skipped {
        println!("  skipped: {s}");
    }
    assert!(
        report.run > 40,
        "too few tests ran ({}): the suite selection is wrong\n{}",
        report.run,
        report.raw
    );
    assert!(
        report.failed == 0 && report.failures.is_empty() && report.suite_errors.is_empty(),
        "iscsi-test-cu failures: {:?} {:?}\n{}",
        report.failures,
        report.suite_errors,
        report.raw
    );
}
