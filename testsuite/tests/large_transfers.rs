//! Large transfers through the connection's reader/writer split and the
//! I/O workers of blocking backends (issue 16), over real TCP on loopback.
//!
//! One target serves an NBD LUN (qemu-nbd; a backend that may block, so
//! its READs and WRITEs run on I/O workers and overlap within a session)
//! and a file LUN (inline execution, the writer task only). Against each,
//! with digests off and then CRC32C header and data digests on, one session
//! writes 1 MiB chunks of a seeded pattern eight at a time (R2Ts after the
//! first burst), each eight followed by a SYNCHRONIZE CACHE, reads every
//! chunk back eight at a time, and checks:
//!
//! - every byte read is the byte written;
//! - a SYNCHRONIZE CACHE sent right after eight 64 KiB writes completes
//!   after all of them: their SCSI Responses arrive first, as the session's
//!   trace of received PDUs shows (not when the test's futures happen to be
//!   polled, which a multi-thread runtime can reorder). Their data comes as
//!   immediate data with the command, so when the cache sync arrives they
//!   are running on workers: it must wait for them;
//! - a 64 KiB WRITE and a READ of the same blocks sent back to back see each
//!   other in the order sent (the read after the write returns the new
//!   data, the read before it the old), although both are SIMPLE commands
//!   that the target could otherwise run at once.

use std::sync::Arc;

use bytes::Bytes;
use iesp_initiator::raw::{Direction, TraceEvent};
use iesp_initiator::{LogicalUnit, LoginOptions, Session, Trace};
use iesp_proto::bhs::Opcode;
use iesp_proto::negotiation::Digest;
use iesp_target::config::{Backing, LunSpec, TargetConfig};
use iesp_testsupport::BlockingTarget;
use iesp_testsupport::ordered::{Ordered, join_in_order};
use iesp_testsupport::peers::qemu::QemuNbd;
use iesp_testsupport::peers::{create_sparse_file, tools_or_skip};

const CHUNK: usize = 1 << 20;
/// Small enough to travel as immediate data (FirstBurstLength 256 KiB).
const SMALL: usize = 64 << 10;
const CHUNKS: u64 = 16;
const QD: usize = 8;
const LUN_BYTES: u64 = 32 << 20;

type Task<'a> = Ordered<'a, ()>;

/// Checks, in a trace of one round, that the target answered the
/// SYNCHRONIZE CACHE sent there after each of the `writes` WRITEs sent
/// before it: the position of its SCSI Response among the received PDUs
/// is after theirs.
fn sync_answered_after_the_writes(trace: &Trace, writes: usize) -> Result<(), String> {
    const WRITE_10: u8 = 0x2a;
    const WRITE_16: u8 = 0x8a;
    const SYNC_10: u8 = 0x35;
    const SYNC_16: u8 = 0x91;
    let mut write_itts = Vec::new();
    let mut sync_itt = None;
    let mut answered = Vec::new();
    for e in trace.entries() {
        let TraceEvent::Pdu { bhs, .. } = &e.event else {
            continue;
        };
        match (e.direction, bhs.opcode()) {
            (Direction::Sent, Opcode::SCSI_COMMAND) => match bhs.0[32] {
                WRITE_10 | WRITE_16 if sync_itt.is_none() => write_itts.push(bhs.itt()),
                SYNC_10 | SYNC_16 => sync_itt = Some(bhs.itt()),
                _ => {}
            },
            (Direction::Received, Opcode::SCSI_RESPONSE) => answered.push(bhs.itt()),
            _ => {}
        }
    }
    let sync = sync_itt.ok_or("no SYNCHRONIZE CACHE in the trace")?;
    if write_itts.len() != writes {
        return Err(format!(
            "{} WRITEs before the cache sync in the trace, not {writes}",
            write_itts.len()
        ));
    }
    let at = |itt: u32| answered.iter().position(|a| *a == itt);
    let sync_at = at(sync).ok_or("no SCSI Response to the cache sync in the trace")?;
    for itt in write_itts {
        match at(itt) {
            Some(w) if w < sync_at => {}
            Some(w) => {
                return Err(format!(
                    "SYNCHRONIZE CACHE answered before a write sent ahead of it \
                     (response {sync_at} vs the write's {w}, ITT {itt:#x})"
                ));
            }
            None => return Err(format!("no SCSI Response to the write with ITT {itt:#x}")),
        }
    }
    Ok(())
}

/// The chunk `i` of generation `generation`: every 8 bytes different.
fn pattern(seed: u64, i: u64, generation: u64) -> Bytes {
    let mut state = seed ^ (i << 32) ^ (generation << 56) ^ 0x9e37_79b9_7f4a_7c15;
    let mut v = vec![0u8; CHUNK];
    for c in v.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        c.copy_from_slice(&state.to_le_bytes());
    }
    Bytes::from(v)
}

fn lba(lu: &LogicalUnit, chunk: u64) -> u64 {
    chunk * CHUNK as u64 / u64::from(lu.block_size())
}

fn blocks(lu: &LogicalUnit) -> u32 {
    (CHUNK / lu.block_size() as usize) as u32
}

async fn exercise(target: &BlockingTarget, lun: u16, digests: bool, seed: u64) {
    let what = format!("LUN {lun}, digests {digests}");
    let mut opts = LoginOptions::new("iqn.2026-11.org.iesp-test:large", Some(target.iqn()));
    let digest = if digests {
        Digest::Crc32c
    } else {
        Digest::None
    };
    opts.header_digest = vec![digest];
    opts.data_digest = vec![digest];
    let session = Session::login(target.addr(), opts).await.expect("login");
    let p = &session.login_outcome().params;
    assert_eq!((p.header_digest, p.data_digest), (digest, digest), "{what}");
    let lu = Arc::new(session.logical_unit(lun).await.expect("LUN"));

    // Writes, eight at a time, each eight followed by a cache sync.
    for first in (0..CHUNKS).step_by(QD) {
        let mut tasks: Vec<Task<'_>> = Vec::new();
        for i in first..first + QD as u64 {
            let lu = &lu;
            tasks.push(Box::pin(async move {
                lu.write(lba(lu, i), pattern(seed, i, 0))
                    .await
                    .unwrap_or_else(|e| panic!("write chunk {i}: {e}"));
            }));
        }
        let lu2 = &lu;
        tasks.push(Box::pin(async move {
            lu2.flush().await.expect("SYNCHRONIZE CACHE");
        }));
        join_in_order(tasks).await;
    }

    // Read back, eight at a time.
    for first in (0..CHUNKS).step_by(QD) {
        let mut tasks: Vec<Task<'_>> = Vec::new();
        for i in first..first + QD as u64 {
            let lu = &lu;
            let what = &what;
            tasks.push(Box::pin(async move {
                let got = lu
                    .read(lba(lu, i), blocks(lu))
                    .await
                    .unwrap_or_else(|e| panic!("read chunk {i}: {e}"));
                assert!(
                    got == pattern(seed, i, 0),
                    "{what}: chunk {i} reads back different data"
                );
            }));
        }
        join_in_order(tasks).await;
    }

    // Eight small writes, complete on arrival, then a cache sync.
    let small_lba = |lu: &LogicalUnit, i: u64| lba(lu, CHUNKS) + i * (SMALL as u64 / 512);
    let small = |i: u64, generation: u64| pattern(seed, 100 + i, generation).slice(..SMALL);
    for round in 0..4u64 {
        // The order of completion is read off the wire, from the session's
        // trace of received PDUs (cleared here, large enough for the
        // round): when this task polls its futures says nothing, as the
        // reader may complete the cache sync while it is between two.
        session.set_trace_capacity(0);
        session.set_trace_capacity(4096);
        let mut tasks: Vec<Task<'_>> = Vec::new();
        for i in 0..QD as u64 {
            let lu = &lu;
            tasks.push(Box::pin(async move {
                lu.write(small_lba(lu, i), small(i, round))
                    .await
                    .unwrap_or_else(|e| panic!("small write {i}: {e}"));
            }));
        }
        let lu2 = &lu;
        tasks.push(Box::pin(async move {
            lu2.flush().await.expect("SYNCHRONIZE CACHE");
        }));
        join_in_order(tasks).await;
        if let Err(e) = sync_answered_after_the_writes(&session.trace(), QD) {
            panic!("{what}, round {round}: {e}");
        }
    }
    session.set_trace_capacity(iesp_initiator::raw::DEFAULT_TRACE_LEN);

    // A write then a read of small block run 0, a read then a write of
    // run 1, each pair sent back to back.
    let small_blocks = (SMALL / 512) as u32;
    let (lu0, lu1) = (&lu, &lu);
    let read_after = Arc::new(std::sync::Mutex::new(Bytes::new()));
    let read_before = Arc::new(std::sync::Mutex::new(Bytes::new()));
    let (ra, rb) = (read_after.clone(), read_before.clone());
    let tasks: Vec<Task<'_>> = vec![
        Box::pin(async move {
            lu0.write(small_lba(lu0, 0), small(0, 9))
                .await
                .expect("rewrite run 0");
        }),
        Box::pin(async move {
            *ra.lock().unwrap() = lu0
                .read(small_lba(lu0, 0), small_blocks)
                .await
                .expect("read 0");
        }),
        Box::pin(async move {
            *rb.lock().unwrap() = lu1
                .read(small_lba(lu1, 1), small_blocks)
                .await
                .expect("read 1");
        }),
        Box::pin(async move {
            lu1.write(small_lba(lu1, 1), small(1, 9))
                .await
                .expect("rewrite run 1");
        }),
    ];
    join_in_order(tasks).await;
    assert!(
        *read_after.lock().unwrap() == small(0, 9),
        "{what}: a read sent after a write of the same blocks missed it"
    );
    assert!(
        *read_before.lock().unwrap() == small(1, 3),
        "{what}: a read sent before a write of the same blocks saw it"
    );
    drop(lu);
    session.logout().await.expect("logout");
}

#[test]
fn large_reads_and_writes_stay_exact_and_ordered_with_digests_off_and_on() {
    if tools_or_skip(&["qemu-nbd"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = create_sparse_file(dir.path(), LUN_BYTES).unwrap();
    let nbd = QemuNbd::serve(&image, "large").expect("qemu-nbd");
    let file_dir = tempfile::tempdir().unwrap();
    let file = create_sparse_file(file_dir.path(), LUN_BYTES).unwrap();
    let mut cfg = TargetConfig::default();
    cfg.targets[0].luns = vec![
        LunSpec {
            backing: Backing::Nbd {
                addr: nbd.addr(),
                export: nbd.export().to_owned(),
            },
            block_size: 512,
            read_only: false,
        },
        LunSpec {
            backing: Backing::File {
                path: file,
                size: None,
            },
            block_size: 512,
            read_only: false,
        },
    ];
    // Fewer workers than the queue depth: the ninth command waits for one.
    cfg.limits.io_workers = 4;
    // The target on its own two-worker runtime (NBD commands then go to
    // I/O workers), the initiator on the test's.
    let target = BlockingTarget::start(cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (n, (lun, digests)) in [(0, false), (0, true), (1, false), (1, true)]
        .into_iter()
        .enumerate()
    {
        rt.block_on(exercise(&target, lun, digests, 0x5eed_0000 + n as u64));
    }
    drop(target);
}

/// The wire-order check itself: it passes the right order and fails a cache
/// sync answered before a write sent ahead of it, or a missing answer.
#[test]
fn the_order_check_tells_a_sync_answered_too_early() {
    use iesp_proto::bhs::Bhs;
    let pdu = |op: Opcode, itt: u32, cdb0: u8| {
        let mut b = Bhs::new(op);
        b.set_itt(itt);
        b.0[32] = cdb0;
        b
    };
    let trace_of = |answers: &[u32]| {
        let mut t = Trace::new(64);
        for (itt, cdb0) in [(1, 0x2a), (2, 0x2a), (3, 0x35)] {
            let b = pdu(Opcode::SCSI_COMMAND, itt, cdb0);
            t.record_pdu(Direction::Sent, &b, 0, &Bytes::new());
        }
        for &itt in answers {
            let b = pdu(Opcode::SCSI_RESPONSE, itt, 0);
            t.record_pdu(Direction::Received, &b, 0, &Bytes::new());
        }
        t
    };
    assert_eq!(
        sync_answered_after_the_writes(&trace_of(&[2, 1, 3]), 2),
        Ok(())
    );
    let early = sync_answered_after_the_writes(&trace_of(&[1, 3, 2]), 2).unwrap_err();
    assert!(early.contains("answered before a write"), "{early}");
    let missing = sync_answered_after_the_writes(&trace_of(&[1, 3]), 2).unwrap_err();
    assert!(
        missing.contains("no SCSI Response to the write"),
        "{missing}"
    );
    assert!(sync_answered_after_the_writes(&trace_of(&[1, 2, 3]), 3).is_err());
}
