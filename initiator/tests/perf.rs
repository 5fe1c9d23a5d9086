//! Throughput of the session against the reference target: 4 KiB random
//! reads at queue depth 1 and 32. Ignored by default (timing, not
//! correctness); run with
//! `cargo test --release -p iesp-initiator --test perf -- --ignored --nocapture`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::opts;
use iesp_initiator::Session;
use iesp_target::config::TargetConfig;
use iesp_target::{Target, serve};

/// The reference target on its own thread and runtime, as a separate
/// process would be; returns its address and a stop switch.
fn target_thread() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(l.local_addr().unwrap()).unwrap();
            let target = Target::from_config(&TargetConfig::default()).unwrap();
            serve(l, target, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    (addr_rx.recv().unwrap(), stop)
}

async fn iops(session: &Session, depth: usize, secs: u64) -> f64 {
    let lu = session.logical_unit(0).await.unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut jobs = tokio::task::JoinSet::new();
    for w in 0..depth {
        let lu = lu.clone();
        let done = done.clone();
        jobs.spawn(async move {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w as u64;
            while Instant::now() < stop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let lba = (x % (lu.blocks() / 8)) * 8;
                lu.read(lba, 8).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let t0 = Instant::now();
    while jobs.join_next().await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore = "timing: run by hand"]
async fn read_4k_iops() {
    let (addr, stop) = target_thread();
    let s = Session::login(addr, opts()).await.unwrap();
    s.set_trace_capacity(0);
    for depth in [1, 8, 32] {
        let r = iops(&s, depth, 2).await;
        println!("4 KiB random read, QD{depth}: {r:.0} IOPS");
    }
    s.logout().await.unwrap();
    let _ = stop.send(());
}
