//! Zero-copy Data-In (issue 16): READs of a file LUN whose data the target
//! sends with `sendfile(2)` from the page cache, over real TCP on loopback.
//!
//! - **Integrity.** The LUN file holds a seeded random pattern; reads of
//!   seeded random lengths (odd block counts from one block to 3 MiB, most
//!   above the 64 KiB splice threshold) at random offsets, eight at a time,
//!   must return exactly the file's bytes. The initiator declares a
//!   MaxRecvDataSegmentLength of 8 KiB + 512 (so Data-In segments end at
//!   offsets that are not page multiples) and of 256 KiB, with digests off,
//!   a header digest only (still spliced), and header and data digests
//!   (the copy path).
//! - **Order.** A 1 MiB READ and a WRITE of the same blocks sent right
//!   behind it, many times over: the READ must return what the blocks held
//!   before the WRITE — its data may still sit in the socket as page-cache
//!   pages when the WRITE arrives, which is what the target's splice fence
//!   is for — and a READ after the WRITE (which arrives complete, as
//!   immediate data) the new data.

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use iesp_initiator::{LoginOptions, Session};
use iesp_proto::negotiation::Digest;
use iesp_target::config::{Backing, LunSpec, TargetConfig};
use iesp_testsupport::BlockingTarget;
use iesp_testsupport::ordered::{Ordered, join_in_order};
use iesp_testsupport::peers::create_sparse_file;

const LUN_BYTES: u64 = 32 << 20;
const BLOCK: u64 = 512;

type Task<'a> = Ordered<'a, ()>;

/// xorshift64: the test's own sequence, stable across crate upgrades.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = vec![0u8; len];
    for c in v.chunks_mut(8) {
        let x = rng.next().to_le_bytes();
        c.copy_from_slice(&x[..c.len()]);
    }
    v
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))
}

fn target_with_file(dir: &std::path::Path) -> (BlockingTarget, std::path::PathBuf) {
    let file = create_sparse_file(dir, LUN_BYTES).unwrap();
    let mut cfg = TargetConfig::default();
    cfg.targets[0].luns = vec![LunSpec {
        backing: Backing::File {
            path: file.clone(),
            size: None,
        },
        block_size: BLOCK as u32,
        read_only: false,
    }];
    (BlockingTarget::start(cfg), file)
}

async fn login(target: &BlockingTarget, header: Digest, data: Digest, mrdsl: u32) -> Session {
    let mut opts = LoginOptions::new("iqn.2026-11.org.iesp-test:sendfile", Some(target.iqn()));
    opts.header_digest = vec![header];
    opts.data_digest = vec![data];
    opts.max_recv_data_segment_length = mrdsl;
    let session = Session::login(target.addr(), opts).await.expect("login");
    let p = &session.login_outcome().params;
    assert_eq!((p.header_digest, p.data_digest), (header, data));
    session
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn spliced_reads_return_the_files_bytes_with_every_digest_and_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let (target, file) = target_with_file(dir.path());
    let content = random_bytes(0x5eed_f11e, LUN_BYTES as usize);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all_at(&content, 0)
        .unwrap();
    let content = Arc::new(content);
    let rt = runtime();
    let cases = [
        (Digest::None, Digest::None, 8192 + 512),
        (Digest::None, Digest::None, 262_144),
        (Digest::Crc32c, Digest::None, 8192 + 512),
        (Digest::Crc32c, Digest::None, 262_144),
        (Digest::Crc32c, Digest::Crc32c, 8192 + 512),
        (Digest::Crc32c, Digest::Crc32c, 262_144),
    ];
    for (n, (header, data, mrdsl)) in cases.into_iter().enumerate() {
        rt.block_on(async {
            let what = format!("header {header:?}, data {data:?}, MRDSL {mrdsl}");
            let session = login(&target, header, data, mrdsl).await;
            let lu = session.logical_unit(0).await.expect("LUN");
            let mut rng = Rng(0x1234_5678 + n as u64);
            for _ in 0..6 {
                let mut tasks: Vec<Task<'_>> = Vec::new();
                for _ in 0..8 {
                    // Odd block counts: lengths of every alignment to pages
                    // and segments; one in four below the splice threshold.
                    let blocks = if rng.next() % 4 == 0 {
                        1 + 2 * (rng.next() % 60)
                    } else {
                        1 + 2 * (rng.next() % 3072)
                    } as u32;
                    let lba = rng.next() % (LUN_BYTES / BLOCK - u64::from(blocks));
                    let (lu, content, what) = (&lu, &content, &what);
                    tasks.push(Box::pin(async move {
                        let got = lu.read(lba, blocks).await.expect("read");
                        let at = (lba * BLOCK) as usize;
                        let want = &content[at..at + blocks as usize * BLOCK as usize];
                        assert!(
                            got[..] == want[..],
                            "{what}: READ of {blocks} blocks at LBA {lba} differs from the file at byte {:?}",
                            first_difference(&got, want)
                        );
                    }));
                }
                join_in_order(tasks).await;
            }
            drop(lu);
            session.logout().await.expect("logout");
        });
    }
    drop(target);
}

#[test]
fn a_write_behind_a_spliced_read_does_not_change_what_the_read_returns() {
    const READ: usize = 1 << 20;
    const MID: std::ops::Range<usize> = READ / 2..READ / 2 + (128 << 10);
    let dir = tempfile::tempdir().unwrap();
    let (target, _file) = target_with_file(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let session = login(&target, Digest::None, Digest::None, 262_144).await;
        let lu = session.logical_unit(0).await.expect("LUN");
        let blocks = (READ as u64 / BLOCK) as u32;
        for round in 0..24u64 {
            // Each round on its own 1 MiB, rewritten first.
            let lba = (round % 16) * u64::from(blocks);
            let old = Bytes::from(random_bytes(round * 2 + 1, READ));
            let new = Bytes::from(random_bytes(round * 2 + 2, READ));
            lu.write(lba, old.clone()).await.expect("write old");
            let (before, after) = (Mutex::new(Bytes::new()), Mutex::new(Bytes::new()));
            let lu = &lu;
            let (b, a, n) = (&before, &after, &new);
            join_in_order(vec![
                Box::pin(async move {
                    *b.lock().unwrap() = lu.read(lba, blocks).await.expect("read before");
                }),
                // 128 KiB from the middle (the read's later Data-Ins), small
                // enough to come as immediate data: the WRITE is complete
                // on arrival, so a READ behind it must see it.
                Box::pin(async move {
                    lu.write(lba + u64::from(blocks / 2), n.slice(MID))
                        .await
                        .expect("write");
                }),
                Box::pin(async move {
                    *a.lock().unwrap() = lu.read(lba, blocks).await.expect("read after");
                }),
            ])
            .await;
            let before = before.into_inner().unwrap();
            assert!(
                before == old,
                "round {round}: a READ sent before a WRITE of the same blocks saw it (first difference at byte {:?})",
                first_difference(&before, &old)
            );
            let after = after.into_inner().unwrap();
            assert!(
                after[..MID.start] == old[..MID.start]
                    && after[MID] == new[MID]
                    && after[MID.end..] == old[MID.end..],
                "round {round}: a READ sent after a WRITE of the same blocks missed it"
            );
        }
        drop(lu);
        session.logout().await.expect("logout");
    });
    drop(target);
}
