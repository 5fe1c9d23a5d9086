//! File LUNs are read and written through a shared mapping of the file
//! (`backend/mapped.rs`). A write fault the file system cannot back raises
//! SIGBUS; here the target runs on a 1 MiB tmpfs (in a mount namespace of
//! its own, `unshare -m`) serving a 16 MiB sparse file, and writes go on
//! until the file system is full: the first write that does not fit gets
//! CHECK CONDITION (DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT),
//! the process lives, what was written reads back, and blocks that have
//! their space can still be rewritten.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iesp_initiator::{LoginOptions, LunError, Session};
use iesp_proto::scsi::{Asc, SenseKey};

/// Starts `iesp-target` on a fresh 1 MiB tmpfs at `dir` (its own mount
/// namespace) serving `dir/lun.img`; returns it and its address.
fn start_on_tmpfs(dir: &std::path::Path, log: &std::path::Path) -> (Child, std::net::SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let script = format!(
        "mount -t tmpfs -o size=1m iesp-test-full {d} && exec {bin} --listen {port} --lun file:{d}/lun.img,size=16M",
        d = dir.display(),
        bin = env!("CARGO_BIN_EXE_iesp-target"),
    );
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("unshare (util-linux) runs the target in a mount namespace");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(port).is_err() {
        if t0.elapsed() > Duration::from_secs(10) || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!(
                "iesp-target on a tmpfs did not start (needs root for unshare -m and mount); log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

#[test]
fn a_full_file_system_costs_the_write_not_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = dir.path().join("target.log");
    let (mut child, addr) = start_on_tmpfs(&mnt, &log);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = Session::login(
            addr,
            LoginOptions::new(
                "iqn.2026-11.org.iesp-test:mapped-test",
                Some(iesp_target::DEFAULT_IQN),
            ),
        )
        .await
        .expect("login");
        let lu = s.logical_unit(0).await.expect("LUN 0");
        let block = |i: u64| Bytes::from(vec![(i % 251) as u8 + 1; 4096]);
        // 4 KiB (8 blocks) at a time over the 16 MiB: the 1 MiB file system
        // fills long before the end.
        let mut written = 0u64;
        let full = loop {
            assert!(written < 4096, "16 MiB written to a 1 MiB file system");
            match lu.write(written * 8, block(written)).await {
                Ok(()) => written += 1,
                Err(e) => break e,
            }
        };
        match &full {
            LunError::Status {
                sense: Some(sense), ..
            } => {
                assert_eq!(sense.key, SenseKey::DATA_PROTECT, "{full}");
                assert_eq!(
                    sense.asc,
                    Asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
                    "{full}"
                );
            }
            other => panic!("the write that did not fit: {other}"),
        }
        assert!(written > 16, "only {written} writes fit");
        // The target lives: what was written reads back, a block with its
        // space can be rewritten, and a block never written reads as zeroes.
        for i in [0, written / 2, written - 1] {
            let data = lu.read(i * 8, 8).await.expect("read back");
            assert_eq!(data, block(i), "block {i}");
        }
        lu.write(0, block(7))
            .await
            .expect("rewrite of a backed block");
        assert_eq!(lu.read(0, 8).await.unwrap(), block(7));
        let hole = lu.read(4000 * 8, 8).await.expect("read of a hole");
        assert!(hole.iter().all(|&b| b == 0));
        lu.flush().await.expect("SYNCHRONIZE CACHE");
        s.logout().await.expect("logout");
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the target exited; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        text.matches("mapping faulted").count(),
        1,
        "the log says once that the LU left its mapping:\n{text}"
    );
}
