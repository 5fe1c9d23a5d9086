//! Our initiator against our target over loopback TCP: discovery, login and
//! a 64 MiB seeded write/read-back at queue depth 1 and 32, for every
//! ImmediateData × InitialR2T combination, digests off and on, and initiator
//! MaxRecvDataSegmentLength 512 and 262144. The data must come back
//! identical, the negotiated values must be the ones asked for, and the
//! session must see no Reject or asynchronous event.

use iesp_initiator::{LoginOptions, Session, discover};
use iesp_testsuite::workload::{matrix_cases, verify_case};
use iesp_testsupport::TestTarget;

const LUN_BYTES: u64 = 64 << 20;
const INITIATOR: &str = "iqn.2026-11.org.iesp-test:matrix";

async fn matrix(digests: bool, mrdsl: u32) {
    let target = TestTarget::ram(LUN_BYTES, 512).await;
    let found = discover(target.addr(), INITIATOR).await.expect("discovery");
    assert!(
        found.iter().any(|t| t.name == target.iqn()),
        "discovery lists {}: {found:?}",
        target.iqn()
    );
    for (n, case) in matrix_cases(digests, mrdsl).into_iter().enumerate() {
        let seed = u64::from(mrdsl) << 8 | u64::from(digests) << 4 | n as u64;
        let times = verify_case(
            target.addr(),
            target.iqn(),
            0,
            INITIATOR,
            case,
            LUN_BYTES,
            seed,
        )
        .await
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
        eprintln!("{case}: write {:?}, read {:?}", times.write, times.read);
    }
    target.stop().await;
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

/// Sixteen sessions at once on a target with three LUNs of different sizes
/// and block sizes: REPORT LUNS lists them, each session verifies its own
/// region of each LUN, and no write lands anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_on_several_luns() {
    use iesp_target::config::{Backing, LunSpec, TargetConfig};
    let mut cfg = TargetConfig::default();
    cfg.targets[0].luns = vec![
        LunSpec {
            backing: Backing::Ram { size: 32 << 20 },
            block_size: 512,
            read_only: false,
        },
        LunSpec {
            backing: Backing::Ram { size: 16 << 20 },
            block_size: 4096,
            read_only: false,
        },
        LunSpec {
            backing: Backing::Ram { size: 8 << 20 },
            block_size: 512,
            read_only: false,
        },
    ];
    let target = TestTarget::start(cfg).await;
    const SESSIONS: u64 = 16;
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..SESSIONS {
        let (addr, iqn) = (target.addr(), target.iqn().to_owned());
        tasks.spawn(async move {
            let name = format!("iqn.2026-11.org.iesp-test:many-{s}");
            let session = Session::login(addr, LoginOptions::new(&name, Some(&iqn)))
                .await
                .expect("login");
            let report = session
                .command(
                    iesp_proto::bhs::Lun(0),
                    iesp_proto::scsi::Cdb::report_luns(4096).encode().as_ref(),
                    bytes::Bytes::new(),
                    4096,
                )
                .await
                .expect("REPORT LUNS");
            let luns =
                iesp_proto::scsi::ReportLunsData::parse(&report.data).expect("REPORT LUNS data");
            assert_eq!(luns.luns.len(), 3, "session {s}: {luns:?}");
            for n in 0..3u16 {
                let lu = session.logical_unit(n).await.expect("LUN");
                let region = lu.capacity() / SESSIONS;
                let blocks = (region / u64::from(lu.block_size())) as u32;
                let lba = s * u64::from(blocks);
                let data =
                    iesp_blockio::pattern::generate(s * 10 + u64::from(n), 0, region as usize);
                lu.write(lba, bytes::Bytes::from(data.clone()))
                    .await
                    .expect("write region");
                tokio::task::yield_now().await;
                let back = lu.read(lba, blocks).await.expect("read region");
                assert!(back == data, "session {s} LUN {n}: region data differs");
            }
            session.logout().await.expect("logout");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("session task");
    }
    // Afterwards every region still holds its own session's data.
    let session = Session::login(
        target.addr(),
        LoginOptions::new(INITIATOR, Some(target.iqn())),
    )
    .await
    .expect("login");
    for n in 0..3u16 {
        let lu = session.logical_unit(n).await.expect("LUN");
        let region = lu.capacity() / SESSIONS;
        let blocks = (region / u64::from(lu.block_size())) as u32;
        for s in 0..SESSIONS {
            let back = lu.read(s * u64::from(blocks), blocks).await.expect("read");
            let want = iesp_blockio::pattern::generate(s * 10 + u64::from(n), 0, region as usize);
            assert!(
                back == want,
                "LUN {n} region {s} overwritten by another session"
            );
        }
    }
    session.logout().await.expect("logout");
    target.stop().await;
}
