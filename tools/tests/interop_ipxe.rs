//! `iesp-test interop ipxe`: iPXE sanboot in qemu from our target (a file
//! LUN) and from tgt, the iBFT fields matching the URL; and the negative
//! path: no boot sector gives "no marker" with the console tail.

mod common;
mod interop_support;

use interop_support::{cache_or_skip, check, outcomes, step};

const STEPS: [&str; 5] = [
    "write boot sector",
    "boot sector runs",
    "iBFT found",
    "iBFT checksum",
    "iBFT fields",
];

fn assert_boots(run: &common::Run, report: &serde_json::Value, iqn: &str, port: u16, lun: u16) {
    assert_eq!(run.code, 0, "{}", run.text());
    let want: Vec<(String, bool)> = STEPS.iter().map(|s| ((*s).to_owned(), true)).collect();
    assert_eq!(outcomes(report), want, "{}", run.text());
    let fields = step(report, "iBFT fields")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        fields.contains(&format!("target {iqn} at 10.0.2.100:{port} LUN {lun}")),
        "{fields}"
    );
    assert!(
        fields.contains("initiator iqn.2010-04.org.ipxe:iesp-test"),
        "{fields}"
    );
}

#[test]
fn boots_from_our_file_lun_with_a_matching_ibft() {
    let Some(cache) = cache_or_skip(&["qemu"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target =
        iesp_testsupport::BlockingTarget::with_file_lun(&dir.path().join("lun.img"), 16 << 20);
    let (run, report) = check("ipxe", &cache, &target.url(0), &[]);
    assert_boots(&run, &report, target.iqn(), target.addr().port(), 0);
}

#[test]
fn boots_from_tgt_with_a_matching_ibft() {
    let Some(cache) = cache_or_skip(&["qemu"]) else {
        return;
    };
    let Some(_) = iesp_testsupport::peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
        return;
    };
    let (tgtd, url) = iesp_testsupport::peers::tgt::Tgtd::with_file_lun(16 << 20).unwrap();
    let iqn = format!("iqn.2026-11.test.iesp:tgt-{}", tgtd.portal().port());
    let (run, report) = check("ipxe", &cache, &url, &["--nic", "virtio"]);
    assert_boots(&run, &report, &iqn, tgtd.portal().port(), 1);
}

#[test]
fn no_boot_sector_is_no_marker_with_the_console_tail() {
    let Some(cache) = cache_or_skip(&["qemu"]) else {
        return;
    };
    let target = iesp_testsupport::BlockingTarget::ram(16 << 20, 512);
    let (run, report) = check(
        "ipxe",
        &cache,
        &target.url(0),
        &["--skip-boot-sector", "--timeout", "40s"],
    );
    assert_eq!(run.code, 1, "{}", run.text());
    let boot = step(&report, "boot sector runs");
    assert_eq!(boot["ok"], false, "{report:#}");
    let why = boot["detail"].as_str().unwrap();
    assert!(
        why.starts_with("no marker \"IESP-BOOT-SECTOR\" within 40 s"),
        "{why}"
    );
    // The tail shows what iPXE did: it logged in and found no boot sector.
    let tail = report["console_tail"].as_str().unwrap_or("");
    assert!(tail.contains("SAN device"), "{tail}");
    assert!(
        run.stdout.contains("--- console tail ---"),
        "{}",
        run.text()
    );
}
