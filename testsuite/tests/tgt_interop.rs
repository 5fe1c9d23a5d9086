//! Our initiator against tgt (tgtd started here on a loopback port with a
//! temporary file LUN): the same checks as against our own target — login
//! for every ImmediateData × InitialR2T combination, digests off and on,
//! initiator MaxRecvDataSegmentLength 512 and 262144, and a 64 MiB seeded
//! write/read-back at queue depth 1 and 32, data identical, no Reject or
//! asynchronous event.

use std::sync::Arc;

use iesp_initiator::{IscsiUrl, LoginOptions, Session, discover};
use iesp_proto::negotiation::Digest;
use iesp_testsuite::peers::tgt::Tgtd;
use iesp_testsuite::peers::tools_or_skip;
use iesp_testsuite::workload::write_read_verify;

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

    let digest = if digests {
        Digest::Crc32c
    } else {
        Digest::None
    };
    let mut run = 0u64;
    for immediate_data in [false, true] {
        for initial_r2t in [false, true] {
            for depth in [1usize, 32] {
                run += 1;
                let mut opts = LoginOptions::new(INITIATOR, Some(&target.name));
                opts.immediate_data = immediate_data;
                opts.initial_r2t = initial_r2t;
                opts.header_digest = vec![digest];
                opts.data_digest = vec![digest];
                opts.max_recv_data_segment_length = mrdsl;
                let what = format!(
                    "tgt: ImmediateData={immediate_data} InitialR2T={initial_r2t} digests={digests} MRDSL={mrdsl} QD={depth}"
                );
                let session = Session::login(addr, opts)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: login: {e}"));
                let p = session.params().clone();
                assert_eq!(
                    p.immediate_data, immediate_data,
                    "{what}: negotiated ImmediateData"
                );
                assert_eq!(p.initial_r2t, initial_r2t, "{what}: negotiated InitialR2T");
                assert_eq!(
                    (p.header_digest, p.data_digest),
                    (digest, digest),
                    "{what}: negotiated digests"
                );
                assert_eq!(
                    p.initiator_mrdsl, mrdsl,
                    "{what}: declared MaxRecvDataSegmentLength"
                );

                let lu = Arc::new(
                    session
                        .logical_unit(target.lun)
                        .await
                        .unwrap_or_else(|e| panic!("{what}: LUN {}: {e}", target.lun)),
                );
                assert_eq!(lu.capacity(), LUN_BYTES, "{what}: capacity");
                let seed = 0x7467_7400 | u64::from(mrdsl) << 16 | u64::from(digests) << 8 | run;
                let times = write_read_verify(&lu, LUN_BYTES, depth, 256 * 1024, seed)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", tgtd.log()));
                eprintln!("{what}: write {:?}, read {:?}", times.write, times.read);
                assert!(
                    session.events().is_empty(),
                    "{what}: unexpected events {:?}",
                    session.events()
                );
                session
                    .logout()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: logout: {e}"));
            }
        }
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
