//! `iesp-target --config FILE`: the shipped sample serves its targets (the
//! ACL-protected one hidden from initiators outside its ACL, CHAP
//! enforced), bad files are refused with a message naming the key, and
//! `--help` documents every flag.

mod common;

use std::process::Command;

use iesp_initiator::{ChapCredentials, LoginError, LoginOptions, Session, discover};
use iesp_proto::pdu::LoginStatus;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/iesp-target.sample.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_config_serves_its_targets() {
    let running = common::start(&["--config", SAMPLE]);
    let addr = running.addr;
    let outsider = "iqn.2026-11.org.iesp-test:outsider";
    let insider = "iqn.1993-08.org.debian:01:initiator1";
    let seen: Vec<String> = discover(addr, outsider)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(seen, vec!["iqn.2026-11.org.iesp-test:target0"]);
    assert_eq!(discover(addr, insider).await.unwrap().len(), 2);

    let protected = "iqn.2026-11.org.iesp-test:protected";
    let mut opts = LoginOptions::new(insider, Some(protected));
    assert!(matches!(
        Session::login(addr, opts.clone()).await.err(),
        Some(LoginError::Refused(LoginStatus::AUTHENTICATION_FAILURE))
    ));
    opts.chap = Some(ChapCredentials::new(
        "initiator1",
        b"initiator-secret-1".to_vec(),
    ));
    opts.mutual_chap = Some(ChapCredentials::new(
        "protected",
        b"target-secret-22".to_vec(),
    ));
    let s = Session::login(addr, opts)
        .await
        .expect("mutual CHAP with the sample's credentials");
    let lu = s.logical_unit(0).await.unwrap();
    assert_eq!(lu.capacity(), 32 << 20);
    s.logout().await.unwrap();
    let s = Session::login(
        addr,
        LoginOptions::new(outsider, Some("iqn.2026-11.org.iesp-test:target0")),
    )
    .await
    .unwrap();
    assert_eq!(s.logical_unit(1).await.unwrap().block_size(), 4096);
    s.logout().await.unwrap();

    drop(running);
}

#[test]
fn bad_config_files_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expect) in [
        ("[[target]]\nipn = \"x\"\n", "unknown field `ipn`"),
        (
            "[[target]]\niqn = \"iqn.2026-11.a:b\"\nluns = [\"ram:1X\"]\n",
            "target[0].luns[0]: invalid LUN",
        ),
        (
            "[limits]\nfirst_burst_length = 4096\nmax_burst_length = 1024\n[[target]]\niqn = \"iqn.2026-11.a:b\"\nluns = [\"ram:1M\"]\n",
            "limits.first_burst_length",
        ),
        ("listen = 5\n", "listen"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_iesp-target"))
            .args(["--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{text:?}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_iesp-target"))
        .args(["--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("iesp-target: cannot read /nonexistent.toml")
    );
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_iesp-target"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--iqn",
        "--lun",
        "--block-size",
        "--read-only",
        "--max-recv-data-segment-length",
        "--command-window",
        "--no-immediate-data",
        "--initial-r2t",
        "--no-digests",
        "--nop-interval",
        "--nop-timeout",
        "--acl",
        "--chap-user",
        "--chap-secret",
        "--mutual-chap-user",
        "--mutual-chap-secret",
        "--log",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing"));
        let idx = help.find(line).unwrap();
        let doc = help[idx + line.len()..].lines().next().unwrap_or("");
        assert!(
            line.len() > flag.len() + 4 || !doc.trim().is_empty(),
            "{flag} has no description"
        );
    }
}
