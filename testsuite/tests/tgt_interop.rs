//! Our initiator against tgt (tgtd started here on a loopback port with a
//! temporary file LUN): the same checks as against our own target — login
//! for every ImmediateData × InitialR2T combination, digests off and on,
//! initiator MaxRecvDataSegmentLength 512 and 262144, and a 64 MiB seeded
//! write/read-back at queue depth 1 and 32, data identical, no Reject or
//! asynchronous event.

use iesp_initiator::{IscsiUrl, discover};
use iesp_testsuite::workload::{matrix_cases, verify_case};
use iesp_testsupport::peers::tgt::Tgtd;
use iesp_testsupport::peers::tools_or_skip;

const LUN_BYTES: u64 = 64 << 20;
const INITIATOR: &str = "iqn.2026-11.org.iesp-test:tgt-interop";

/// tgtd with one 64 MiB file LUN, configured to accept every combination
/// the matrix asks for (its defaults force InitialR2T=Yes and no digests).
fn tgt() -> Option<(Tgtd, IscsiUrl)> {
    tools_or_skip(&["tgtd", "tgtadm"])?;
    let (tgtd, url) = Tgtd::with_file_lun(LUN_BYTES).expect("start tgtd");
    for (name, value) in [
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("HeaderDigest", "CRC32C,None"),
        ("DataDigest", "CRC32C,None"),
        ("MaxRecvDataSegmentLength", "262144"),
    ] {
        tgtd.update_target_param(1, name, value)
            .unwrap_or_else(|e| panic!("tgtadm {name}={value}: {e}"));
    }
    let url: IscsiUrl = url.parse().expect("tgt URL");
    Some((tgtd, url))
}

async fn matrix(digests: bool, mrdsl: u32) {
    let Some((tgtd, url)) = tgt() else { return };
    let addr = url.socket_addr().expect("tgt address");
    let target = url.target.clone().expect("URL names the target");
    let found = discover(addr, INITIATOR).await.expect("discovery");
    assert!(
        found.iter().any(|t| t.name == target.name),
        "tgt lists {}: {found:?}",
        target.name
    );

    for (n, case) in matrix_cases(digests, mrdsl).into_iter().enumerate() {
        let seed = 0x7467_7400 | u64::from(mrdsl) << 16 | u64::from(digests) << 8 | n as u64;
        let times = verify_case(
            addr,
            &target.name,
            target.lun,
            INITIATOR,
            case,
            LUN_BYTES,
            seed,
        )
        .await
        .unwrap_or_else(|e| panic!("tgt: {case}: {e:#}\n{}", tgtd.log()));
        eprintln!(
            "tgt: {case}: write {:?}, read {:?}",
            times.write, times.read
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_digests_mrdsl_512() {
    matrix(false, 512).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_digests_mrdsl_262144() {
    matrix(false, 262_144).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc32c_digests_mrdsl_512() {
    matrix(true, 512).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc32c_digests_mrdsl_262144() {
    matrix(true, 262_144).await;
}
