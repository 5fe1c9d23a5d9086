//! `iesp-test interop linux`: the Linux kernel initiator (iscsistart) in
//! a qemu guest against our target (a file LUN) and tgt (LUN 1, behind
//! its controller LUN 0); and a target that corrupts bulk reads, which the
//! guest's verify must catch.

mod common;
mod interop_support;

use interop_support::{cache_or_skip, check, outcomes, step};

const STEPS: [&str; 10] = [
    "initramfs",
    "boot",
    "modules",
    "login",
    "disk",
    "verify-write",
    "verify-check",
    "dd-direct",
    "mkfs.ext4",
    "e2fsck",
];

fn assert_all_pass(run: &common::Run, report: &serde_json::Value, lun: u16) {
    assert_eq!(run.code, 0, "{}", run.text());
    let want: Vec<(String, bool)> = STEPS.iter().map(|s| ((*s).to_owned(), true)).collect();
    assert_eq!(outcomes(report), want, "{}", run.text());
    let disk = step(report, "disk")["detail"].as_str().unwrap().to_owned();
    assert!(disk.starts_with(&format!("LUN {lun} is /dev/sd")), "{disk}");
    assert!(
        step(report, "verify-check")["detail"]
            .as_str()
            .unwrap()
            .contains("PASS"),
        "{report:#}"
    );
}

#[test]
fn linux_keeps_data_on_our_file_lun() {
    let Some(cache) = cache_or_skip(&["qemu", "guest"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target =
        iesp_testsupport::BlockingTarget::with_file_lun(&dir.path().join("lun.img"), 32 << 20);
    let (run, report) = check("linux", &cache, &target.url(0), &["--seed", "7"]);
    assert_all_pass(&run, &report, 0);
    // The file system the guest made is in the file behind the target.
    let sb = common::read_block(&dir.path().join("lun.img"), 512, 2);
    assert_eq!(&sb[56..58], &[0x53, 0xef], "no ext4 superblock magic");
}

#[test]
fn linux_keeps_data_on_tgt() {
    let Some(cache) = cache_or_skip(&["qemu", "guest"]) else {
        return;
    };
    let Some(_) = iesp_testsupport::peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
        return;
    };
    let (_tgtd, url) = iesp_testsupport::peers::tgt::Tgtd::with_file_lun(32 << 20).unwrap();
    let (run, report) = check("linux", &cache, &url, &[]);
    assert_all_pass(&run, &report, 1);
}

#[test]
fn corrupted_reads_fail_the_guests_verify() {
    let Some(cache) = cache_or_skip(&["qemu", "guest"]) else {
        return;
    };
    let f = interop_support::corrupting_target(32 << 20);
    let (run, report) = check("linux", &cache, &f.url, &["--timeout", "30s"]);
    assert_eq!(run.code, 1, "{}", run.text());
    assert_eq!(step(&report, "login")["ok"], true, "{report:#}");
    let check = step(&report, "verify-check");
    assert_eq!(check["ok"], false, "{report:#}");
    assert!(
        check["detail"].as_str().unwrap().contains("FAIL")
            || check["detail"].as_str().unwrap().contains("mismatch"),
        "{check:#}"
    );
    assert!(report["console_tail"].is_string(), "{report:#}");
}
