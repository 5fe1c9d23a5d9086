//! Large-transfer throughput of the reference target against tgt and a
//! bare loopback TCP stream, side by side (issue 16).
//!
//! `cargo bench -p iesp-testsuite --bench throughput_vs_tgt`
//!
//! Both targets serve a 64 MiB file LUN filled with the same data. The
//! client is our own initiator's load engine (`iesp_blockio::engine` over an
//! `IscsiDevice`, as `iesp-test bench` uses), one session, 1 MiB sequential
//! READs at queue depth 8, then 1 MiB sequential WRITEs at queue depth 8.
//! Each round also measures what loopback TCP itself moves: two threads,
//! one writing 1 MiB chunks, the other reading them. Runs alternate which
//! target goes first; each figure is the median of `IESP_BENCH_ROUNDS`
//! rounds (default 3) of `IESP_BENCH_SECONDS` (default 5) per run.
//!
//! CPU: the target runs in this process on its own runtime, whose threads
//! are named `iesp-target`; the client is one thread named `bench-client`
//! with a current-thread runtime (as `iesp-test bench` runs a session). Per run
//! the bench reads `/proc/self/task/*/stat` (and tgtd's `/proc/PID/stat`)
//! and prints CPU milliseconds per MiB moved, for the client and for each
//! target: a client near 1000 ms/s of CPU would be the bottleneck.
//!
//! Nothing is asserted about speed; the figures are printed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iesp_blockio::engine::{Completion, Op, Workload};
use iesp_blockio::iscsi::IscsiDevice;
use iesp_blockio::{AlignedBuf, Device, OpenOptions};
use iesp_target::config::Backing;
use iesp_testsupport::BlockingTarget;
use iesp_testsupport::bench::{env_u32, fill, median};
use iesp_testsupport::embedded::one_lun;
use iesp_testsupport::peers::tgt::Tgtd;
use iesp_testsupport::peers::{create_sparse_file, tools_or_skip};

const LUN_BYTES: u64 = 64 << 20;
const IO_BYTES: usize = 1 << 20;
const QD: usize = 8;
const BLOCK: u64 = 512;

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

/// CPU seconds (user + system) of `/proc/.../stat` contents.
fn stat_cpu(stat: &str) -> f64 {
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 overall, 12 and 13 after it.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ is 100 on every Linux this runs on.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU seconds used so far by this process's threads named `prefix*`.
fn threads_cpu(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .map(|t| stat_cpu(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
        .sum()
}

fn pid_cpu(pid: u32) -> f64 {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// 1 MiB sequential reads or writes over the whole LUN, wrapping, until the
/// deadline.
struct Sequential {
    write: bool,
    chunks: u64,
    next: AtomicU64,
    deadline: Instant,
    bytes: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Workload for Sequential {
    type Slot = Option<AlignedBuf>;

    fn slot(&self, index: usize) -> Self::Slot {
        let mut buf = AlignedBuf::new(IO_BYTES, 4096);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8) ^ (index as u8);
        }
        Some(buf)
    }

    fn next(&self, slot: &mut Self::Slot) -> Option<Op> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let buf = slot.take()?;
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.chunks;
        let lba = n * IO_BYTES as u64 / BLOCK;
        Some(if self.write {
            Op::Write {
                lba,
                buf,
                fua: false,
            }
        } else {
            Op::Read { lba, buf }
        })
    }

    fn complete(&self, slot: &mut Self::Slot, done: Completion) {
        match done.result {
            Ok(()) => {
                self.bytes.fetch_add(IO_BYTES as u64, Ordering::Relaxed);
            }
            Err(e) => self
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string()),
        }
        let mut buf = done.buf;
        // A read lends the received data; the next op needs the buffer
        // back at full length.
        buf.set_len(IO_BYTES);
        *slot = Some(buf);
    }
}

/// One measured run against `dev`.
struct Run {
    mib_s: f64,
    /// CPU ms per MiB: the client threads, the target.
    client_ms: f64,
    target_ms: f64,
}

fn run_once(
    client: &tokio::runtime::Runtime,
    dev: &Arc<IscsiDevice>,
    write: bool,
    seconds: u32,
    target_cpu: &dyn Fn() -> f64,
) -> Run {
    let work = Arc::new(Sequential {
        write,
        chunks: LUN_BYTES / IO_BYTES as u64,
        next: AtomicU64::new(0),
        deadline: Instant::now() + Duration::from_secs(u64::from(seconds)),
        bytes: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let (c0, t0) = (threads_cpu("bench-client"), target_cpu());
    let summary = client.block_on(iesp_blockio::engine::run(dev.clone(), work.clone(), QD));
    let (c1, t1) = (threads_cpu("bench-client"), target_cpu());
    let errors = work.errors.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        errors.is_empty() && summary.panics.is_empty(),
        "the run failed: {:?} {:?}",
        errors.first(),
        summary.panics
    );
    let mib = work.bytes.load(Ordering::Relaxed) as f64 / f64::from(1 << 20);
    Run {
        mib_s: mib / summary.elapsed.as_secs_f64(),
        client_ms: (c1 - c0) * 1000.0 / mib,
        target_ms: (t1 - t0) * 1000.0 / mib,
    }
}

/// MiB/s a bare loopback TCP stream moves: one thread writes 1 MiB
/// chunks, another reads them.
fn bare_stream(seconds: u32) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limit = Duration::from_secs(u64::from(seconds));
    let sender = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let chunk = vec![0x5au8; IO_BYTES];
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    let mut buf = vec![0u8; IO_BYTES];
    let t0 = Instant::now();
    let mut total = 0u64;
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let rate = total as f64 / f64::from(1 << 20) / t0.elapsed().as_secs_f64();
    let _ = sender.join();
    rate
}

fn open(client: &tokio::runtime::Runtime, url: &str) -> Arc<IscsiDevice> {
    let opts = OpenOptions {
        write: true,
        force: true,
        ..OpenOptions::default()
    };
    Arc::new(
        client
            .block_on(IscsiDevice::open(url, &opts))
            .unwrap_or_else(|e| panic!("open {url}: {e}")),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too
    // with no time to spare: do nothing then.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if tools_or_skip(&["tgtd", "tgtadm"]).is_none() {
        return;
    }
    let seconds = env_u32("IESP_BENCH_SECONDS", 5).max(1);
    let rounds = env_u32("IESP_BENCH_ROUNDS", 3).max(1);

    let dir = tempfile::tempdir().expect("tempdir");
    let our_file = create_sparse_file(dir.path(), LUN_BYTES).expect("LUN file");
    fill(&our_file, LUN_BYTES);
    // On a default runtime (a worker per core), as `iesp-target` runs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("iesp-target")
        .enable_all()
        .build()
        .expect("runtime");
    let target = BlockingTarget::start_on(
        rt,
        one_lun(
            Backing::File {
                path: our_file,
                size: None,
            },
            BLOCK as u32,
        ),
    );
    let (tgtd, tgt_url) = Tgtd::with_file_lun(LUN_BYTES).expect("tgtd");
    let tgt_file = std::fs::read_dir(tgtd.dir())
        .expect("tgtd dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "img"))
        .expect("tgt backing file");
    fill(&tgt_file, LUN_BYTES);
    let tgt_pid = tgtd.pid();

    // The client: the sessions and the engine on one thread with a
    // current-thread runtime, as `iesp-test bench` runs each session.
    let target_url = target.url(0);
    std::thread::scope(|scope| {
        let client_thread = std::thread::Builder::new()
            .name("bench-client".into())
            .spawn_scoped(scope, || {
            let client = tokio::runtime::Builder::new_current_thread()
                .thread_name("bench-client")
                .enable_all()
                .build()
                .expect("client runtime");
            let ours = open(&client, &target_url);
            let theirs = open(&client, &tgt_url);
            let our_cpu = || threads_cpu("iesp-target");
            let tgt_cpu = move || pid_cpu(tgt_pid);

            println!(
                "1 MiB sequential I/O, QD {QD}, one session, our initiator's engine; {seconds} s per run, median of {rounds} rounds"
            );
            let mut stream = Vec::new();
            for write in [false, true] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for round in 0..rounds {
                    if !write {
                        stream.push(bare_stream(seconds));
                    }
                    let run_ours = || run_once(&client, &ours, write, seconds, &our_cpu);
                    if round % 2 == 0 {
                        a.push(run_ours());
                        b.push(run_once(&client, &theirs, write, seconds, &tgt_cpu));
                    } else {
                        b.push(run_once(&client, &theirs, write, seconds, &tgt_cpu));
                        a.push(run_ours());
                    }
                }
                let rate = |v: &[Run]| v.iter().map(|r| r.mib_s).collect::<Vec<_>>();
                let (ra, rb) = (rate(&a), rate(&b));
                let (ma, mb) = (median(ra.clone()), median(rb.clone()));
                let name = if write { "write" } else { "read" };
                println!(
                    "{name:>5}: iesp {ma:.0} MiB/s ({}), tgt {mb:.0} MiB/s ({}), ratio iesp/tgt {:.2}x",
                    range(&ra),
                    range(&rb),
                    ma / mb
                );
                if !write {
                    let ms = median(stream.clone());
                    println!(
                        "       bare loopback TCP stream {ms:.0} MiB/s ({}); iesp reaches {:.0}% of it, tgt {:.0}%",
                        range(&stream),
                        ma * 100.0 / ms,
                        mb * 100.0 / ms
                    );
                }
                let cpu = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
                println!(
                    "       CPU ms per MiB: iesp target {:.2}, tgtd {:.2}; client {:.2} against iesp, {:.2} against tgt",
                    cpu(&a, |r| r.target_ms),
                    cpu(&b, |r| r.target_ms),
                    cpu(&a, |r| r.client_ms),
                    cpu(&b, |r| r.client_ms),
                );
                println!(
                    "       client CPU use: {:.0}% of one core against iesp, {:.0}% against tgt",
                    cpu(&a, |r| r.client_ms) * ma / 10.0,
                    cpu(&b, |r| r.client_ms) * mb / 10.0,
                );
            }
            if let Ok(d) = Arc::try_unwrap(ours) {
                let _ = client.block_on(d.close());
            }
            if let Ok(d) = Arc::try_unwrap(theirs) {
                let _ = client.block_on(d.close());
            }
            })
            .expect("client thread");
        client_thread.join().expect("the client thread panicked");
    });
    drop(tgtd);
    target.stop();
}
