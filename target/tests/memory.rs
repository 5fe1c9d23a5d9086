//! The memory budget (issue 13), measured on the `iesp-target` binary's
//! RSS from /proc/PID/status:
//!
//! - a session with a full window of 8 MiB WRITEs whose Data-Out stops
//!   halfway keeps the target within budget + a fixed overhead: R2Ts stop
//!   once its share is charged, the Data-Out deadline aborts the stalled
//!   tasks (CHECK CONDITION, 4Bh/06h) and frees them for the next;
//! - after the sessions close, RSS returns close to the baseline;
//! - 4 such sessions together stay within the global budget, while writes
//!   of 4 well-behaved sessions complete and read back correctly.
//!
//! A file LUN keeps written blocks in the page cache, out of the RSS.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iesp_initiator::login::login;
use iesp_initiator::{LoginOptions, RawConnection, Received, Session};
use iesp_proto::bhs::Lun;
use iesp_proto::pdu::{DataOut, Pdu, ScsiCommand};
use iesp_proto::scsi::{Cdb, CdbSize, Sense, SenseKey};

const MIB: u64 = 1 << 20;
const WRITE: u32 = 8 << 20;
/// What the target may hold besides its budget: runtime, threads, read
/// buffers, the page tables of freed arenas.
const OVERHEAD: u64 = 40 * MIB;

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Samples the RSS of `pid` every 20 ms until `stop`.
fn sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut lo, mut hi) = (u64::MAX, 0);
        while !stop.load(Ordering::Relaxed) {
            let r = rss(pid);
            lo = lo.min(r);
            hi = hi.max(r);
            std::thread::sleep(Duration::from_millis(20));
        }
        (lo, hi)
    })
}

fn opts(name: &str) -> LoginOptions {
    LoginOptions::new(
        &format!("iqn.2026-11.org.iesp-test:{name}"),
        Some(iesp_target::DEFAULT_IQN),
    )
}

/// What a stalling session saw.
#[derive(Debug, Default)]
struct Stalled {
    /// R2Ts received before the first task was aborted.
    r2ts_before_abort: usize,
    /// Tasks aborted for their missing data (ABORTED COMMAND, 4Bh/06h).
    aborted: usize,
}

/// Logs in and sends `window` 8 MiB WRITEs with no immediate data; each
/// R2T gets half its data and then nothing. Runs for `run`.
async fn stall(addr: std::net::SocketAddr, name: &str, window: u32, run: Duration) -> Stalled {
    let mut raw = RawConnection::connect(addr).await.unwrap();
    let mut o = opts(name);
    o.immediate_data = false;
    o.initial_r2t = true;
    let out = login(&mut raw, &o).await.expect("login");
    let blocks = WRITE / 512;
    let mut frames = Vec::new();
    for i in 0..window {
        let mut cmd = ScsiCommand {
            write: true,
            final_bit: true,
            lun: Lun(0),
            itt: 0x100 + i,
            expected_data_transfer_length: WRITE,
            cmd_sn: out.cmd_sn.wrapping_add(i),
            exp_stat_sn: out.exp_stat_sn,
            ..Default::default()
        };
        let lba = u64::from(i) * u64::from(blocks);
        cmd.set_cdb(
            Cdb::write(CdbSize::Sixteen, lba, blocks, false)
                .encode()
                .as_ref(),
        );
        frames.push(iesp_proto::framing::Frame::with_data(
            &Pdu::ScsiCommand(cmd),
            Bytes::new(),
        ));
    }
    raw.send_batch(&frames).await.unwrap();
    let mut seen = Stalled::default();
    let seg = out.params.target_mrdsl.min(256 * 1024);
    let chunk = Bytes::from(vec![0x33u8; seg as usize]);
    let t0 = Instant::now();
    while t0.elapsed() < run {
        match raw.recv(Duration::from_millis(50)).await {
            Received::Frame(f) => match f.pdu() {
                Pdu::R2t(r) => {
                    if seen.aborted == 0 {
                        seen.r2ts_before_abort += 1;
                    }
                    let half = r.desired_data_transfer_length / 2;
                    let mut off = 0;
                    let mut data_sn = 0;
                    while off < half {
                        let n = seg.min(half - off);
                        let d = DataOut {
                            final_bit: false,
                            lun: Lun(0),
                            itt: r.itt,
                            ttt: r.ttt,
                            exp_stat_sn: 0,
                            data_sn,
                            buffer_offset: r.buffer_offset + off,
                        };
                        raw.send_pdu(&Pdu::DataOut(d), chunk.slice(..n as usize))
                            .await
                            .unwrap();
                        off += n;
                        data_sn += 1;
                    }
                }
                Pdu::ScsiResponse(r) => {
                    assert_eq!(r.status, 0x02, "a stalled write cannot succeed");
                    let sense = iesp_proto::pdu::scsi::decode_sense_segment(&f.data)
                        .unwrap()
                        .expect("sense");
                    let sense = Sense::parse(sense).unwrap();
                    assert_eq!(sense.key, SenseKey::ABORTED_COMMAND);
                    assert_eq!(sense.asc.0, 0x4b06, "initiator response timeout");
                    seen.aborted += 1;
                }
                Pdu::NopIn(_) => {}
                other => panic!("unexpected {other:?}"),
            },
            Received::Timeout => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
    seen
}

/// Well-behaved writes of distinct patterns, read back.
async fn verify_writes(addr: std::net::SocketAddr, n: u8) {
    let s = Session::login(addr, opts(&format!("verify{n}")))
        .await
        .expect("login");
    let lu = s.logical_unit(0).await.unwrap();
    for k in 0..3u8 {
        let data = Bytes::from(vec![n.wrapping_mul(16).wrapping_add(k); 2 << 20]);
        // Far from the stalled writes' LBAs.
        let lba = (200 << 11) + u64::from(n) * (8 << 11) + u64::from(k) * (2 << 11);
        lu.write(lba, data.clone()).await.expect("verified write");
        assert_eq!(lu.read(lba, 4096).await.expect("read back"), data);
    }
    s.logout().await.unwrap();
}

fn start(dir: &tempfile::TempDir, budget: &str, share: &str) -> common::Running {
    let lun = format!("file:{},size=320M", dir.path().join("lun.img").display());
    common::start(&[
        "--lun",
        &lun,
        "--memory-budget",
        budget,
        "--session-memory",
        share,
        "--data-out-timeout",
        "1s",
        "--command-window",
        "32",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalled_session_stays_within_its_share_and_rss_falls_after() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&dir, "64M", "32M");
    let pid = running.child.id();
    verify_writes(running.addr, 9).await;
    let baseline = rss(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = sampler(pid, stop.clone());
    // 32 x 8 MiB asked for; the 32 MiB share admits 4 at a time.
    let seen = stall(running.addr, "stall", 32, Duration::from_millis(3500)).await;
    stop.store(true, Ordering::Relaxed);
    let (_, peak) = sampling.join().unwrap();
    eprintln!(
        "one stalled session: baseline {} MiB, peak {} MiB, {seen:?}",
        baseline / MIB,
        peak / MIB
    );
    assert!(
        seen.r2ts_before_abort <= 4,
        "R2Ts beyond the 32 MiB share: {seen:?}"
    );
    assert!(
        seen.aborted >= 4,
        "the Data-Out deadline aborted nothing: {seen:?}"
    );
    assert!(
        peak <= baseline + 32 * MIB + OVERHEAD,
        "peak RSS {} MiB over baseline {} MiB + share 32 MiB + {} MiB",
        peak / MIB,
        baseline / MIB,
        OVERHEAD / MIB
    );
    // Disconnected: RSS returns near the baseline.
    let t0 = Instant::now();
    loop {
        let now = rss(pid);
        if now <= baseline + 8 * MIB {
            eprintln!("after disconnect: {} MiB", now / MIB);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "RSS stayed at {} MiB after disconnect (baseline {} MiB)",
            now / MIB,
            baseline / MIB
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_stalled_sessions_stay_within_the_global_budget_and_good_writes_verify() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&dir, "64M", "32M");
    let pid = running.child.id();
    verify_writes(running.addr, 8).await;
    let baseline = rss(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = sampler(pid, stop.clone());
    let addr = running.addr;
    let mut stalls = Vec::new();
    for n in 0..4 {
        stalls.push(tokio::spawn(async move {
            stall(addr, &format!("stall{n}"), 16, Duration::from_secs(4)).await
        }));
    }
    let verified = Arc::new(Mutex::new(0));
    let mut good = Vec::new();
    for n in 0..4u8 {
        let verified = verified.clone();
        good.push(tokio::spawn(async move {
            verify_writes(addr, n).await;
            *verified.lock().unwrap() += 1;
        }));
    }
    for g in good {
        g.await.expect("a verifying session failed");
    }
    let mut aborted = 0;
    for s in stalls {
        aborted += s.await.unwrap().aborted;
    }
    stop.store(true, Ordering::Relaxed);
    let (_, peak) = sampling.join().unwrap();
    eprintln!(
        "four stalled sessions: baseline {} MiB, peak {} MiB, {aborted} tasks aborted, {} sessions verified",
        baseline / MIB,
        peak / MIB,
        verified.lock().unwrap()
    );
    assert_eq!(*verified.lock().unwrap(), 4);
    assert!(
        aborted >= 8,
        "the Data-Out deadline aborted {aborted} tasks"
    );
    assert!(
        peak <= baseline + 64 * MIB + OVERHEAD,
        "peak RSS {} MiB over baseline {} MiB + budget 64 MiB + {} MiB",
        peak / MIB,
        baseline / MIB,
        OVERHEAD / MIB
    );
}
