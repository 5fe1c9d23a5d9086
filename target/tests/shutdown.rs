//! The `iesp-target` binary shuts down gracefully on SIGTERM and SIGINT:
//! a write still waiting for its data fails with CHECK CONDITION (not a
//! silent drop), the initiator is told with an Asynchronous Message, the
//! connection closes, the process exits 0, and completed writes to a file
//! LUN are on disk.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Running, start};
use iesp_initiator::login::login;
use iesp_initiator::{LoginOptions, RawConnection, Received, Session};
use iesp_proto::bhs::Lun;
use iesp_proto::pdu::{AsyncEvent, Pdu, ScsiCommand};
use iesp_proto::scsi::{Cdb, CdbSize, Sense, SenseKey};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(5);

fn wait_exit(r: &mut Running) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = r.child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "iesp-target did not exit after the signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_pending_writes_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("lun0.img");
    let lun = format!("file:{},size=16M", img.display());
    let mut running = start(&["--lun", &lun, "--initial-r2t", "--no-immediate-data"]);

    // A completed write through a normal session.
    let session = Session::login(
        running.addr,
        LoginOptions::new(
            "iqn.2026-11.org.iesp-test:sd1",
            Some(iesp_target::DEFAULT_IQN),
        ),
    )
    .await
    .expect("login");
    let lu = session.logical_unit(0).await.expect("LUN 0");
    lu.write(10, Bytes::from(vec![0x5a; 4096]))
        .await
        .expect("write");

    // A raw session with a WRITE waiting for its data (we never answer the R2T).
    let mut raw = RawConnection::connect(running.addr).await.unwrap();
    let out = login(
        &mut raw,
        &LoginOptions::new(
            "iqn.2026-11.org.iesp-test:sd2",
            Some(iesp_target::DEFAULT_IQN),
        ),
    )
    .await
    .expect("raw login");
    let mut cmd = ScsiCommand {
        write: true,
        lun: Lun(0),
        itt: 0x10,
        expected_data_transfer_length: 4096,
        cmd_sn: out.cmd_sn,
        exp_stat_sn: out.exp_stat_sn,
        ..Default::default()
    };
    cmd.set_cdb(Cdb::write(CdbSize::Ten, 0, 8, false).encode().as_ref());
    raw.send_pdu(&Pdu::ScsiCommand(cmd), Bytes::new())
        .await
        .unwrap();
    match raw.recv_skipping_pings(T).await {
        Received::Frame(f) => assert!(
            matches!(f.pdu(), Pdu::R2t(_)),
            "expected an R2T, got {:?}",
            f.pdu()
        ),
        other => panic!("expected an R2T, got {other:?}"),
    }

    kill(Pid::from_raw(running.child.id() as i32), Signal::SIGTERM).unwrap();

    // The pending write fails with CHECK CONDITION, then the async message,
    // then the close.
    let mut failed = false;
    let mut told = false;
    loop {
        match raw.recv(T).await {
            Received::Frame(f) => match f.pdu() {
                Pdu::ScsiResponse(r) if r.itt == 0x10 => {
                    assert_eq!(r.status, 0x02, "CHECK CONDITION");
                    let sense = iesp_proto::pdu::scsi::decode_sense_segment(&f.data)
                        .unwrap()
                        .expect("sense data");
                    let sense = Sense::parse(sense).unwrap();
                    assert_eq!(sense.key, SenseKey::NOT_READY);
                    failed = true;
                }
                Pdu::AsyncMessage(m) => {
                    assert_eq!(m.event, AsyncEvent::CONNECTION_DROP);
                    told = true;
                }
                Pdu::NopIn(_) => {}
                other => panic!("unexpected {other:?} during shutdown"),
            },
            Received::Closed => break,
            other => panic!("expected the shutdown sequence, got {other:?}"),
        }
    }
    assert!(failed, "the pending write was not failed");
    assert!(told, "no Asynchronous Message before the close");
    let status = wait_exit(&mut running);
    assert!(status.success(), "iesp-target exited with {status}");
    drop(session);

    // The completed write is in the file.
    let bytes = std::fs::read(&img).unwrap();
    assert!(
        bytes[10 * 512..10 * 512 + 4096].iter().all(|b| *b == 0x5a),
        "completed write not on disk"
    );
    assert!(
        bytes[..4096].iter().all(|b| *b == 0),
        "the failed write must not have been applied"
    );
}

#[test]
fn sigint_exits_cleanly_when_idle() {
    let mut running = start(&[]);
    kill(Pid::from_raw(running.child.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_exit(&mut running);
    assert!(status.success(), "iesp-target exited with {status}");
}

#[test]
fn bad_arguments_get_one_line_and_nonzero_exit() {
    for args in [
        &["--lun", "disk:1"][..],
        &["--block-size", "1000"],
        &["--listen", "nowhere"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_iesp-target"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines()
                .next()
                .is_some_and(|l| l.contains("error") || l.contains("invalid")),
            "{args:?}: {err}"
        );
    }
}
