//! The reference target's SCSI layer over real connections and real
//! backends:
//!
//! - two sessions racing COMPARE AND WRITE on one LBA: exactly one wins
//!   each round, the other gets MISCOMPARE, and the medium holds the
//!   winner's data;
//! - the NBD backend against `qemu-nbd`: what is written through iSCSI is
//!   read back through the export with `qemu-io`, and back; UNMAP and WRITE
//!   SAME reach the export;
//! - a block device (a loop device over a sparse file): UNMAP through iSCSI
//!   gives the space back and reads back zeroes.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use iesp_initiator::{LogicalUnit, LoginOptions, Session};
use iesp_proto::scsi::inquiry::{Vpd, VpdPage};
use iesp_proto::scsi::unmap::{UnmapDescriptor, UnmapParameters};
use iesp_proto::scsi::{Asc, Cdb, CdbSize, ReadCapacity16Data, ScsiStatus, SenseKey};
use iesp_target::config::Backing;
use iesp_testsupport::embedded::one_lun;
use iesp_testsupport::peers::qemu::QemuNbd;
use iesp_testsupport::peers::{self, create_sparse_file};
use iesp_testsupport::{LoopDevice, TestTarget};

const MIB: u64 = 1 << 20;

async fn open(target: &TestTarget, initiator: &str) -> (Session, Arc<LogicalUnit>) {
    let opts = LoginOptions::new(initiator, Some(target.iqn()));
    let session = Session::login(target.addr(), opts)
        .await
        .unwrap_or_else(|e| panic!("{initiator}: login: {e}"));
    let lu = session
        .logical_unit(0)
        .await
        .unwrap_or_else(|e| panic!("{initiator}: LUN 0: {e}"));
    (session, Arc::new(lu))
}

fn caw(lba: u64) -> Vec<u8> {
    Cdb::CompareAndWrite {
        lba,
        blocks: 1,
        wrprotect: 0,
        dpo: false,
        fua: false,
        group: 0,
    }
    .encode()
    .to_vec()
}

/// The block a session writes in a round: round number, then who.
fn block(round: usize, who: u8) -> Vec<u8> {
    let mut b = vec![who; 512];
    b[..4].copy_from_slice(&(round as u32).to_be_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_racing_compare_and_write_have_one_winner_each_round() {
    const ROUNDS: usize = 200;
    const LBA: u64 = 77;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = TestTarget::start(one_lun(
        Backing::File {
            path: dir.path().join("caw.img"),
            size: Some(16 * MIB),
        },
        512,
    ))
    .await;
    let (s1, lu1) = open(&target, "iqn.2026-11.org.iesp-test:caw-a").await;
    let (s2, lu2) = open(&target, "iqn.2026-11.org.iesp-test:caw-b").await;
    let mut current = block(usize::MAX, 0);
    lu1.write(LBA, Bytes::from(current.clone()))
        .await
        .expect("initial write");
    let cdb = caw(LBA);
    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let (mine1, mine2) = (block(round, 1), block(round, 2));
        let d1 = Bytes::from([current.clone(), mine1.clone()].concat());
        let d2 = Bytes::from([current.clone(), mine2.clone()].concat());
        let (r1, r2) = tokio::join!(lu1.raw(&cdb, d1, 0), lu2.raw(&cdb, d2, 0));
        let (r1, r2) = (r1.expect("CAW 1"), r2.expect("CAW 2"));
        let (winner, loser, data) = match (r1.is_good(), r2.is_good()) {
            (true, false) => (0, r2, mine1),
            (false, true) => (1, r1, mine2),
            (a, b) => panic!("round {round}: session 1 good={a}, session 2 good={b}"),
        };
        wins[winner] += 1;
        assert_eq!(loser.status, ScsiStatus::CHECK_CONDITION, "round {round}");
        // The loser compared the old block with the winner's: INFORMATION
        // is the first byte where they differ.
        let first_difference = current.iter().zip(&data).position(|(a, b)| a != b);
        let sense = loser.sense.expect("sense data");
        assert_eq!(
            (sense.key, sense.asc, sense.information),
            (
                SenseKey::MISCOMPARE,
                Asc::MISCOMPARE_DURING_VERIFY,
                first_difference.map(|i| i as u64)
            ),
            "round {round}"
        );
        let back = lu2.read(LBA, 1).await.expect("read back");
        assert_eq!(&back[..], &data[..], "round {round}: the winner's data");
        current = data;
    }
    eprintln!("COMPARE AND WRITE race: {ROUNDS} rounds, wins {wins:?}");
    s1.logout().await.expect("logout 1");
    s2.logout().await.expect("logout 2");
    target.stop().await;
}

/// `qemu-io` over the export, which must succeed (pattern checks fail the
/// run).
async fn qemu_io(nbd: &Arc<QemuNbd>, commands: &[&str]) {
    let nbd = nbd.clone();
    let commands: Vec<String> = commands.iter().map(|c| c.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let c: Vec<&str> = commands.iter().map(String::as_str).collect();
        nbd.qemu_io(&c)
    })
    .await
    .expect("join")
    .expect("qemu-io runs");
    assert!(out.success(), "qemu-io failed:\n{}", out.combined());
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(73).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbd_backend_round_trips_through_qemu_nbd() {
    let Some(_) = peers::tools_or_skip(&["qemu-nbd", "qemu-io"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let image = create_sparse_file(dir.path(), 64 * MIB).expect("image");
    let nbd = Arc::new(QemuNbd::serve(&image, "lun0").expect("qemu-nbd"));
    let target = TestTarget::start(one_lun(
        Backing::Nbd {
            addr: nbd.addr(),
            export: nbd.export().to_owned(),
        },
        512,
    ))
    .await;
    let (session, lu) = open(&target, "iqn.2026-11.org.iesp-test:nbd").await;
    assert_eq!(lu.capacity(), 64 * MIB);

    // qemu-nbd offers WRITE_ZEROES: thin, reading back zeroes.
    let rc = lu
        .raw(&Cdb::read_capacity16().encode(), Bytes::new(), 32)
        .await
        .expect("READ CAPACITY(16)");
    let rc = ReadCapacity16Data::parse(&rc.data).expect("parses");
    assert!(rc.lbpme && rc.lbprz, "{rc:?}");
    let vpd = lu
        .raw(&Cdb::inquiry(Some(0xb2), 64).encode(), Bytes::new(), 64)
        .await
        .expect("VPD B2h");
    assert!(matches!(
        Vpd::parse(&vpd.data).map(|v| v.page),
        Ok(VpdPage::LogicalBlockProvisioning(p)) if p.lbpu && p.lbprz == 1
    ));

    // iSCSI → NBD: a uniform 1 MiB at 0 (checked by qemu-io) and a
    // pattern at 8 MiB (checked in the image file qemu-nbd wrote).
    lu.write(0, Bytes::from(vec![0xa5; MIB as usize]))
        .await
        .expect("write 0xa5");
    let seeded = pattern(2 * MIB as usize, 7);
    lu.write(8 * MIB / 512, Bytes::from(seeded.clone()))
        .await
        .expect("write pattern");
    lu.flush().await.expect("SYNCHRONIZE CACHE");
    qemu_io(&nbd, &["read -P 0xa5 0 1M", "read -P 0 1M 1M"]).await;
    let file = std::fs::read(image.clone()).expect("read image");
    assert!(
        file[8 * MIB as usize..10 * MIB as usize] == seeded[..],
        "the image holds what was written through iSCSI"
    );

    // NBD → iSCSI.
    qemu_io(&nbd, &["write -P 0x5a 4M 1M"]).await;
    let back = lu.read(4 * MIB / 512, 2048).await.expect("read 4M");
    assert!(back.iter().all(|b| *b == 0x5a));
    let back = lu.read(8 * MIB / 512, 4096).await.expect("read 8M");
    assert!(back[..] == seeded[..], "the pattern reads back through NBD");

    // UNMAP and WRITE SAME reach the export.
    let list = UnmapParameters {
        descriptors: vec![UnmapDescriptor {
            lba: 0,
            blocks: 1024,
        }],
    }
    .encode();
    let unmap = Cdb::Unmap {
        anchor: false,
        group: 0,
        parameter_list_length: list.len() as u16,
    };
    let r = lu
        .raw(&unmap.encode(), Bytes::from(list), 0)
        .await
        .expect("UNMAP");
    assert!(r.is_good(), "UNMAP: {:?}", r.sense);
    let ws = Cdb::WriteSame {
        size: CdbSize::Sixteen,
        lba: 12 * MIB / 512,
        blocks: 2048,
        wrprotect: 0,
        anchor: false,
        unmap: false,
        ndob: false,
        group: 0,
    };
    let r = lu
        .raw(&ws.encode(), Bytes::from(vec![0x3c; 512]), 0)
        .await
        .expect("WRITE SAME");
    assert!(r.is_good(), "WRITE SAME: {:?}", r.sense);
    qemu_io(
        &nbd,
        &[
            "read -P 0 0 512k",
            "read -P 0xa5 512k 512k",
            "read -P 0x3c 12M 1M",
        ],
    )
    .await;

    session.logout().await.expect("logout");
    target.stop().await;
}

/// Blocks of `path` really allocated, in bytes.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_device_unmap_discards_and_reads_zeroes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = create_sparse_file(dir.path(), 32 * MIB).expect("image");
    let Some(dev) = LoopDevice::attach_or_skip(&image) else {
        return;
    };
    let target = TestTarget::start(one_lun(
        Backing::Device {
            path: dev.path().to_owned(),
        },
        512,
    ))
    .await;
    let (session, lu) = open(&target, "iqn.2026-11.org.iesp-test:loop").await;
    assert_eq!(lu.capacity(), 32 * MIB);
    let rc = lu
        .raw(&Cdb::read_capacity16().encode(), Bytes::new(), 32)
        .await
        .expect("READ CAPACITY(16)");
    let rc = ReadCapacity16Data::parse(&rc.data).expect("parses");
    // A loop device over a file can write zeroes (by punching the file):
    // thin, reading back zeroes.
    assert!(rc.lbpme && rc.lbprz, "{rc:?}");

    lu.write(0, Bytes::from(vec![0xee; 8 * MIB as usize]))
        .await
        .expect("write 8 MiB");
    lu.flush().await.expect("flush");
    let before = allocated(&image);
    assert!(before >= 8 * MIB, "{before} bytes allocated");
    let list = UnmapParameters {
        descriptors: vec![UnmapDescriptor {
            lba: 1,
            blocks: 8 * 2048 - 1,
        }],
    }
    .encode();
    let unmap = Cdb::Unmap {
        anchor: false,
        group: 0,
        parameter_list_length: list.len() as u16,
    };
    let r = lu
        .raw(&unmap.encode(), Bytes::from(list), 0)
        .await
        .expect("UNMAP");
    assert!(r.is_good(), "UNMAP: {:?}", r.sense);
    lu.flush().await.expect("flush");
    let back = lu.read(0, 2 * 2048).await.expect("read back");
    assert!(back[..512].iter().all(|b| *b == 0xee), "block 0 kept");
    assert!(
        back[512..].iter().all(|b| *b == 0),
        "unmapped blocks read zero"
    );
    let after = allocated(&image);
    assert!(
        after + 4 * MIB <= before,
        "space given back: {before} -> {after} bytes"
    );
    session.logout().await.expect("logout");
    target.stop().await;
}
