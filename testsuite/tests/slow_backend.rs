//! A backend that stalls does not stall the target. With qemu-nbd stopped
//! (SIGSTOP) under an NBD LUN, three sessions wait on reads of it — more
//! than the runtime has worker threads — while a fourth session on a RAM LUN
//! of the same target keeps writing and verifying data. Once the NBD server
//! continues, the waiting reads complete with the right data.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iesp_initiator::{LoginOptions, Session};
use iesp_target::config::{Backing, LunSpec, TargetConfig};
use iesp_testsuite::workload::write_read_verify;
use iesp_testsupport::BlockingTarget;
use iesp_testsupport::peers::qemu::QemuNbd;
use iesp_testsupport::peers::{create_sparse_file, tools_or_skip};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The target runs on its own two-worker runtime, the initiators on the
/// test's: if the target stalled, the test's timeouts still fire.
#[test]
fn a_stalled_nbd_server_does_not_stall_other_sessions() {
    if tools_or_skip(&["qemu-nbd"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = create_sparse_file(dir.path(), 4 << 20).unwrap();
    std::fs::write(&image, vec![0x6e; 4 << 20]).unwrap();
    let nbd = QemuNbd::serve(&image, "slow").expect("qemu-nbd");
    let mut cfg = TargetConfig::default();
    cfg.targets[0].luns = vec![
        LunSpec {
            backing: Backing::Ram { size: 16 << 20 },
            block_size: 512,
            read_only: false,
        },
        LunSpec {
            backing: Backing::Nbd {
                addr: nbd.addr(),
                export: nbd.export().to_owned(),
            },
            block_size: 512,
            read_only: false,
        },
    ];
    let target = BlockingTarget::start(cfg);
    let (addr, iqn) = (target.addr(), target.iqn().to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(clients(addr, &iqn, &nbd));
    drop(target);
}

async fn clients(addr: std::net::SocketAddr, iqn: &str, nbd: &QemuNbd) {
    let login = |n: usize| {
        let opts = LoginOptions::new(&format!("iqn.2026-11.org.iesp-test:slow-{n}"), Some(iqn));
        Session::login(addr, opts)
    };
    let healthy = login(0).await.expect("login");
    let ram = Arc::new(healthy.logical_unit(0).await.expect("LUN 0"));
    let mut waiting = Vec::new();
    let mut stalled_luns = Vec::new();
    for n in 1..=3 {
        let s = login(n).await.expect("login");
        stalled_luns.push(Arc::new(s.logical_unit(1).await.expect("LUN 1 (NBD)")));
        waiting.push(s);
    }

    let pid = Pid::from_raw(nbd.pid().expect("qemu-nbd pid") as i32);
    kill(pid, Signal::SIGSTOP).expect("stop qemu-nbd");
    let reads: Vec<_> = stalled_luns
        .iter()
        .enumerate()
        .map(|(i, lu)| {
            let lu = lu.clone();
            tokio::spawn(async move { lu.read(i as u64 * 8, 8).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        reads.iter().all(|r| !r.is_finished()),
        "the NBD reads should wait while the server is stopped"
    );

    // Meanwhile the RAM LUN serves.
    let verified = tokio::time::timeout(
        Duration::from_secs(10),
        write_read_verify(&ram, 2 << 20, 8, 64 * 1024, 7),
    )
    .await;
    kill(pid, Signal::SIGCONT).expect("continue qemu-nbd");
    verified
        .expect("the RAM LUN stalled behind the stopped NBD server")
        .expect("RAM LUN data");

    for r in reads {
        let data = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("NBD read after SIGCONT")
            .unwrap()
            .unwrap();
        assert!(data.iter().all(|b| *b == 0x6e), "NBD data");
    }
    healthy.nop(Bytes::new()).await.unwrap();
    for s in waiting {
        s.logout().await.unwrap();
    }
    healthy.logout().await.unwrap();
}
