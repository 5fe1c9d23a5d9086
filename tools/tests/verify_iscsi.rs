//! `iesp-test verify` over iSCSI: against our reference target (a
//! file-backed LUN, restarted between the write and the check to prove
//! persistence, with damage done to the backing file meanwhile), against
//! tgt, and as part of `selftest`.

mod common;

use common::{damage, iesp_test, iesp_test_env, mismatches, read_block, verify};
use iesp_testsupport::BlockingTarget;
use iesp_testsupport::embedded::file_lun;

const BS: u64 = 512;

#[test]
fn our_target_passes_persists_and_shows_damage() {
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    let json = dir.path().join("r.json");
    let cfg = file_lun(&lun, 8 << 20, BS as u32);

    let target = BlockingTarget::start(cfg.clone());
    let url = target.url(0);
    let (run, r) = verify(
        &[
            "--write", "--seed", "9", "--length", "4M", "--qd", "16", &url,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());
    assert_eq!(r["target"]["kind"], "iscsi-lun");
    assert_eq!(r["target"]["block_size"], 512);
    assert_eq!(r["target"]["blocks"], 16384, "READ CAPACITY");
    assert_eq!(r["distinct_verified"], 8192);
    let old_40 = read_block(&lun, BS, 40);
    let (run, _) = verify(
        &[
            "--write",
            "--seed",
            "9",
            "--generation",
            "2",
            "--length",
            "4M",
            &url,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}", run.text());

    // Random mode on the other half; trims use UNMAP only if the LUN is
    // thin provisioned, and the output says when they are skipped.
    let args = [
        "--write",
        "--mode",
        "random",
        "--offset",
        "4M",
        "-w",
        "2",
        "--qd",
        "4",
        "--verified-percent",
        "50",
        "--duration",
        "60s",
        &url,
    ];
    let (run, r) = verify(&args, &json);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(r["writes_duplicate"].as_u64().unwrap() > 0, "{r}");
    if r["trim"]["method"] == "none" {
        assert!(r["trims_skipped"].as_u64().unwrap() > 0, "{r}");
        assert!(
            run.stdout.contains("trims are skipped") && run.stdout.contains("LBPME=0"),
            "{}",
            run.text()
        );
    } else {
        assert_eq!(r["trim"]["method"], "unmap");
        assert!(r["trims"].as_u64().unwrap() > 0, "{r}");
    }
    target.stop();

    // Behind the target's back, then a fresh target on the same file.
    let want = damage(&lun, BS, &old_40);
    let target = BlockingTarget::start(cfg);
    let url = target.url(0);
    let (run, r) = verify(&["--check", "--seed", "9", "--length", "4M", &url], &json);
    assert_eq!(run.code, 1, "{}", run.text());
    assert_eq!(r["generation"], 2);
    assert_eq!(mismatches(&r), want);
    assert_eq!(r["blocks_verified"], 8192 - 5);
    target.stop();
}

#[test]
fn tgt_passes() {
    let Some(_) = iesp_testsupport::peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
        return;
    };
    let (tgtd, url) = iesp_testsupport::peers::tgt::Tgtd::with_file_lun(16 << 20).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let (run, r) = verify(
        &[
            "--write",
            "--seed",
            "4",
            "--qd",
            "8",
            "--io-size",
            "256K",
            &url,
        ],
        &json,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.text(), tgtd.log());
    assert_eq!(r["target"]["blocks"], 32768);
    let args = [
        "--write",
        "--mode",
        "random",
        "--length",
        "2M",
        "-w",
        "2",
        "--qd",
        "4",
        "--verified-percent",
        "60",
        "--duration",
        "60s",
        &url,
    ];
    let (run, r) = verify(&args, &json);
    assert_eq!(run.code, 0, "{}\n{}", run.text(), tgtd.log());
    assert!(r["verified_percent"].as_f64().unwrap() >= 60.0, "{r}");
    // Blocks past the random range still hold the sequential image.
    let (run, r) = verify(&["--check", "--seed", "4", "--offset", "2M", &url], &json);
    assert_eq!(run.code, 0, "{}\n{}", run.text(), tgtd.log());
    assert_eq!(r["distinct_verified"], 32768 - 4096);
}

#[test]
fn selftest_runs_verify() {
    // IESP_LOG unset: the default log level, as a user runs it.
    let run = iesp_test_env(
        &["selftest", "--size", "16M", "--qd", "1,8", "--seed", "3"],
        &[("IESP_LOG", "")],
    );
    assert_eq!(run.code, 0, "{}", run.text());
    for line in [
        "verify:    sequential",
        "verify:    random",
        "verify:    check",
        "conformance: ",
        "selftest: PASS",
    ] {
        assert!(run.stdout.contains(line), "no {line:?}:\n{}", run.text());
    }
    // The warnings the suite provokes from the embedded target on purpose
    // are not shown: a passing selftest is quiet on stderr.
    assert!(!run.stderr.contains("WARN"), "{}", run.text());
}

/// A LUN smaller than the suite's writes, or with large blocks, is no
/// reason for a false FAIL: the cases that cannot run on it skip (saying
/// why), selftest counts those skips apart from regressions and ends
/// with its verdict line.
#[test]
fn selftest_small_luns_and_large_blocks_pass() {
    for args in [
        &["--size", "1M"][..],
        &["--size", "4M", "--block-size", "4k"],
        &["--size", "8M", "--block-size", "64k"],
    ] {
        let run = iesp_test(&[&["selftest", "--qd", "4", "--seed", "5"], args].concat());
        assert_eq!(run.code, 0, "{args:?}: {}", run.text());
        assert!(run.stdout.contains(" 0 fail, "), "{args:?}: {}", run.text());
        assert!(
            run.stdout.contains("skip on this one"),
            "{args:?}: no geometry note:\n{}",
            run.text()
        );
        assert_eq!(
            run.stdout.lines().last(),
            Some("selftest: PASS"),
            "{args:?}: {}",
            run.text()
        );
    }
}

/// The README's quick start, exactly as written: `iesp-test selftest` with
/// no arguments (64 MiB LUN, QD 1/8/32, verify, the conformance suite).
#[test]
fn quick_start_selftest_with_defaults() {
    let run = iesp_test(&["selftest"]);
    assert_eq!(run.code, 0, "{}", run.text());
    for line in [
        "discovery: ok",
        "qd   1:",
        "qd  32:",
        "verify:    sequential",
        "verify:    random",
        "verify:    check",
        "conformance: ",
        " 0 fail, ",
        "0 unexpected against the baseline",
        "selftest: PASS",
    ] {
        assert!(run.stdout.contains(line), "no {line:?}:\n{}", run.text());
    }
}

/// tgt with `thin_provisioning=1` reports LBPME=1: random mode's trims
/// become UNMAP commands (and tgt punches holes in its file).
#[test]
fn tgt_thin_provisioned_gets_unmap() {
    let Some(tools) = iesp_testsupport::peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
        return;
    };
    let (tgtd, url) = iesp_testsupport::peers::tgt::Tgtd::with_file_lun(8 << 20).unwrap();
    // Tgtd has no helper for LU parameters; its control socket lives under
    // its directory as "ipc" (see Tgtd::start_with).
    let out = std::process::Command::new(&tools[1])
        .env("TGT_IPC_SOCKET", tgtd.dir().join("ipc"))
        .args(["-C", &tgtd.control_port().to_string()])
        .args([
            "--lld",
            "iscsi",
            "--mode",
            "logicalunit",
            "--op",
            "update",
            "--tid",
            "1",
            "--lun",
            "1",
        ])
        .args(["--params", "thin_provisioning=1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tgtadm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let args = [
        "--write",
        "--mode",
        "random",
        "--length",
        "1M",
        "-w",
        "2",
        "--qd",
        "2",
        "--mix",
        "unique=60,duplicate=10,trim=30",
        "--verified-percent",
        "70",
        "--duration",
        "60s",
        &url,
    ];
    let (run, r) = verify(&args, &json);
    assert_eq!(run.code, 0, "{}\n{}", run.text(), tgtd.log());
    assert_eq!(r["trim"]["method"], "unmap", "{r}");
    assert!(r["trims"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["trims_skipped"], 0, "{r}");
    eprintln!(
        "tgt thin: LBPRZ -> trimmed blocks compared as zeros: {}",
        r["trim"]["zeroes"]
    );
}

/// A LUN that advertises UNMAP (our thin RAM LUN: LBPME=1) and then
/// answers it with ILLEGAL REQUEST (a proxy turns the opcode into one the
/// target lacks): verify stops with an I/O error, exit 3, naming UNMAP and
/// the sense data, where it once turned trims off and passed.
#[test]
fn an_advertised_unmap_the_lun_rejects_is_exit_3_naming_it() {
    let f = common::faulty(iesp_testsuite::proxy::Fault::RejectUnmap);
    let run_on = |url: &str| {
        iesp_test(&[
            "verify",
            "--write",
            "--mode",
            "random",
            "--mix",
            "unique=50,duplicate=0,trim=50",
            "--seed",
            "5",
            "--length",
            "2M",
            url,
        ])
    };
    let run = run_on(&f.url);
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(run.stdout.contains("UNMAP at LBA"), "{}", run.text());
    assert!(run.stdout.contains("ILLEGAL REQUEST"), "{}", run.text());
    assert!(!run.stdout.contains("PASS"), "{}", run.text());

    // The same run straight to the target passes: the trims are real UNMAPs.
    let run = run_on(&f.target.url(0));
    assert_eq!(run.code, 0, "{}", run.text());
}
