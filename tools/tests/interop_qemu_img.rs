//! `iesp-test interop qemu-img`: qemu's iSCSI block driver against our
//! target (a file LUN) and tgt, a corrupting target reported as a
//! mismatch, and a missing asset named by its package.

mod common;
mod interop_support;

use interop_support::{cache_or_skip, check, outcomes, step};

const STEPS: [&str; 8] = [
    "info",
    "convert in",
    "convert out",
    "compare",
    "qemu-io write",
    "flush",
    "qemu-io read",
    "negative control",
];

fn assert_all_pass(run: &common::Run, report: &serde_json::Value) {
    assert_eq!(run.code, 0, "{}", run.text());
    let got = outcomes(report);
    let want: Vec<(String, bool)> = STEPS.iter().map(|s| ((*s).to_owned(), true)).collect();
    assert_eq!(got, want, "{}", run.text());
    assert_eq!(report["schema"], "iesp-test/interop/1");
    assert_eq!(report["passed"], true);
}

#[test]
fn passes_against_our_file_lun() {
    let Some(cache) = cache_or_skip(&["qemu"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target =
        iesp_testsupport::BlockingTarget::with_file_lun(&dir.path().join("lun.img"), 64 << 20);
    let (run, report) = check("qemu-img", &cache, &target.url(0), &[]);
    assert_all_pass(&run, &report);
    // The data went through the target: the file holds the head pattern.
    let head = common::read_block(&dir.path().join("lun.img"), 512, 0);
    assert!(head.iter().all(|&b| b == 0xa5), "{:x?}", &head[..16]);
}

#[test]
fn passes_against_tgt() {
    let Some(cache) = cache_or_skip(&["qemu"]) else {
        return;
    };
    let Some(_) = iesp_testsupport::peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
        return;
    };
    let (_tgtd, url) = iesp_testsupport::peers::tgt::Tgtd::with_file_lun(64 << 20).unwrap();
    let (run, report) = check("qemu-img", &cache, &url, &[]);
    assert_all_pass(&run, &report);
}

#[test]
fn corrupted_reads_are_reported_as_a_mismatch() {
    let Some(cache) = cache_or_skip(&["qemu"]) else {
        return;
    };
    let f = interop_support::corrupting_target(16 << 20);
    let (run, report) = check("qemu-img", &cache, &f.url, &[]);
    assert_eq!(run.code, 1, "{}", run.text());
    assert_eq!(report["passed"], false, "{report:#}");
    assert_eq!(step(&report, "info")["ok"], true, "{report:#}");
    assert_eq!(step(&report, "convert out")["ok"], false, "{report:#}");
    let read = step(&report, "qemu-io read");
    assert_eq!(read["ok"], false, "{report:#}");
    assert!(
        read["detail"].as_str().unwrap().starts_with("mismatch"),
        "{read:#}"
    );
    assert!(run.stderr.contains("failed: "), "{}", run.text());
}

#[test]
fn a_missing_asset_names_its_package() {
    let empty = tempfile::tempdir().unwrap();
    let (run, _) = check(
        "qemu-img",
        empty.path(),
        "iscsi://127.0.0.1:9/iqn.2026-11.test:none/0",
        &[],
    );
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(
        run.stderr.contains("Debian package qemu-block-extra"),
        "{}",
        run.text()
    );
    assert!(
        run.stderr.contains("iesp-test interop fetch"),
        "{}",
        run.text()
    );
}

#[test]
fn refuses_to_run_without_write() {
    let r = common::iesp_test(&[
        "interop",
        "qemu-img",
        "iscsi://127.0.0.1:9/iqn.2026-11.test:none/0",
    ]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stderr.contains("add --write"), "{}", r.text());
}
