//! Helpers for the `iesp-test interop` tests: the asset cache the checks
//! run from, and one run of a check with its JSON report.
#![allow(dead_code)]

use std::path::PathBuf;

use super::common::{Run, iesp_test_env};

#[path = "../../../testsuite/tests/support/json_schema.rs"]
mod json_schema;

/// The cache `.ci/run` fetches into: `$IESP_CACHE`, else
/// `~/.cache/iesp-test`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IESP_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
        .join(".cache/iesp-test")
}

/// The cache when every asset set of `sets` (`qemu` or `guest`) was fetched; else
/// `None` after a SKIPPED line, or a panic under CI (never a silent pass).
pub fn cache_or_skip(sets: &[&str]) -> Option<PathBuf> {
    let dir = cache_dir();
    for set in sets {
        let stamp = dir.join("interop").join(set).join("complete");
        if !stamp.is_file() {
            let msg = format!(
                "interop assets ({set}) missing in {}: run `iesp-test interop fetch --cache {}` (or .ci/run)",
                dir.display(),
                dir.display()
            );
            if iesp_testsupport::peers::in_ci() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            return None;
        }
    }
    Some(dir)
}

/// `iesp-test interop CHECK --write --cache DIR --json FILE ARGS… URL`:
/// the run and its report (`Null` when none was written).
pub fn check(
    check: &str,
    cache: &std::path::Path,
    url: &str,
    args: &[&str],
) -> (Run, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let mut all = vec![
        "interop",
        check,
        "--write",
        "--cache",
        cache.to_str().expect("utf-8 cache path"),
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    all.push(url);
    let run = iesp_test_env(&all, &[]);
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    // Every report a check writes is valid against its JSON Schema.
    if !report.is_null() {
        json_schema::assert_valid(
            &json_schema::validator("interop.schema.json"),
            &format!("interop {check} --json"),
            &report,
        );
    }
    (run, report)
}

/// The step named `name` of a report.
pub fn step<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {report:#}"))
}

/// Every step's name and whether it passed.
pub fn outcomes(report: &serde_json::Value) -> Vec<(String, bool)> {
    report["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or("?").to_owned(),
                        s["ok"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Our target (a RAM LUN, digests off) behind a proxy that corrupts the
/// data of every Data-In PDU of 4 KiB or more: logins, INQUIRY, READ
/// CAPACITY and MODE SENSE get through intact, bulk reads do not. The
/// scripted fault the negative paths use.
pub struct CorruptingTarget {
    pub target: iesp_testsupport::BlockingTarget,
    pub addr: std::net::SocketAddr,
    pub url: String,
}

/// Data-In (RFC 7143 §11.7).
const DATA_IN: u8 = 0x25;
/// Segments at least this long are corrupted.
const CORRUPT_FROM: usize = 4096;

pub fn corrupting_target(size: u64) -> CorruptingTarget {
    let mut cfg = iesp_testsupport::embedded::ram_lun(size, 512);
    cfg.limits.digests = false;
    let target = iesp_testsupport::BlockingTarget::start(cfg);
    let upstream = target.addr();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { return };
            let Ok(up) = std::net::TcpStream::connect(upstream) else {
                continue;
            };
            let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d2, &mut u2);
                let _ = u2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || corrupt_data_in(up, down));
        }
    });
    let url = format!("iscsi://{addr}/{}/0", target.iqn());
    CorruptingTarget { target, addr, url }
}

/// Copies target PDUs to the initiator, flipping one byte in the middle of
/// each large Data-In segment.
fn corrupt_data_in(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut bhs = [0u8; 48];
    while from.read_exact(&mut bhs).is_ok() {
        let ahs = usize::from(bhs[4]) * 4;
        let dsl = usize::from(bhs[5]) << 16 | usize::from(bhs[6]) << 8 | usize::from(bhs[7]);
        let mut rest = vec![0u8; ahs + dsl.div_ceil(4) * 4];
        if from.read_exact(&mut rest).is_err() {
            break;
        }
        if bhs[0] & 0x3f == DATA_IN && dsl >= CORRUPT_FROM {
            rest[ahs + dsl / 2] ^= 0xff;
        }
        if to
            .write_all(&bhs)
            .and_then(|()| to.write_all(&rest))
            .is_err()
        {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
