//! Our initiator against our target over loopback TCP: discovery, login and
//! a 64 MiB seeded write/read-back at queue depth 1 and 32, for every
//! ImmediateData × InitialR2T combination, digests off and on, and initiator
//! MaxRecvDataSegmentLength 512 and 262144. The data must come back
//! identical, the negotiated values must be the ones asked for, and the
//! session must see no Reject or asynchronous event.

use std::sync::Arc;

use iesp_initiator::{LoginOptions, Session, discover};
use iesp_proto::negotiation::Digest;
use iesp_target::embedded::EmbeddedTarget;
use iesp_testsuite::workload::write_read_verify;

const LUN_BYTES: u64 = 64 << 20;
const INITIATOR: &str = "iqn.2026-11.org.iesp-test:matrix";

async fn matrix(digests: bool, mrdsl: u32) {
    let target = EmbeddedTarget::start_ram(LUN_BYTES, 512).await.expect("start target");
    let found = discover(target.addr, INITIATOR).await.expect("discovery");
    assert!(found.iter().any(|t| t.name == target.iqn), "discovery lists {}: {found:?}", target.iqn);

    let digest = if digests { Digest::Crc32c } else { Digest::None };
    let mut run = 0u64;
    for immediate_data in [false, true] {
        for initial_r2t in [false, true] {
            for depth in [1usize, 32] {
                run += 1;
                let mut opts = LoginOptions::new(INITIATOR, Some(&target.iqn));
                opts.immediate_data = immediate_data;
                opts.initial_r2t = initial_r2t;
                opts.header_digest = vec![digest];
                opts.data_digest = vec![digest];
                opts.max_recv_data_segment_length = mrdsl;
                let what = format!(
                    "ImmediateData={immediate_data} InitialR2T={initial_r2t} digests={digests} MRDSL={mrdsl} QD={depth}"
                );
                let session = Session::login(target.addr, opts).await.unwrap_or_else(|e| panic!("{what}: login: {e}"));
                let p = session.params().clone();
                assert_eq!(p.immediate_data, immediate_data, "{what}: negotiated ImmediateData");
                assert_eq!(p.initial_r2t, initial_r2t, "{what}: negotiated InitialR2T");
                assert_eq!(p.header_digest, digest, "{what}: negotiated HeaderDigest");
                assert_eq!(p.data_digest, digest, "{what}: negotiated DataDigest");
                assert_eq!(p.initiator_mrdsl, mrdsl, "{what}: declared MaxRecvDataSegmentLength");

                let lu = Arc::new(session.logical_unit(0).await.unwrap_or_else(|e| panic!("{what}: LUN 0: {e}")));
                assert_eq!(lu.capacity(), LUN_BYTES, "{what}: capacity");
                let seed = u64::from(mrdsl) << 8 | u64::from(digests) << 4 | run;
                let times = write_read_verify(&lu, LUN_BYTES, depth, 256 * 1024, seed)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e:#}"));
                eprintln!("{what}: write {:?}, read {:?}", times.write, times.read);
                assert!(session.events().is_empty(), "{what}: unexpected events {:?}", session.events());
                session.logout().await.unwrap_or_else(|e| panic!("{what}: logout: {e}"));
            }
        }
    }
    target.shutdown().await.expect("target shutdown");
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
