//! The session against a scripted fake target on loopback: the cases a
//! well-behaved target does not produce on demand (a dropped connection
//! with commands outstanding, target pings, a closed CmdSN window, aborted
//! tasks, broken R2Ts and Data-In sequences), scripted with
//! `iesp_testsupport::FakeTarget`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::opts;
use iesp_initiator::Session;
use iesp_initiator::session::CommandError;
use iesp_proto::bhs::{Lun, RESERVED_TAG};
use iesp_proto::pdu::{
    DataIn, NopIn, Pdu, R2t, Residual, TaskMgmtResponse, TmfFunction, TmfResponse,
};
use iesp_proto::scsi::{Cdb, CdbSize, ScsiStatus};
use iesp_proto::text::{self, KeyValue};
use iesp_testsupport::fake::{FakeConn, FakeTarget, LoginAnswers};

const T: Duration = Duration::from_secs(5);

/// Starts a fake target running `script` after the login (window
/// `window`, MaxRecvDataSegmentLength=512 declared so that long requests
/// go in parts), and a session logged in to it with `o`.
async fn setup<F, Fut>(
    o: iesp_initiator::LoginOptions,
    window: u32,
    script: F,
) -> (Session, FakeTarget)
where
    F: FnOnce(FakeConn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (s, server) = setup_with(o, window, LoginAnswers::new(), script).await;
    (s.unwrap(), server)
}

/// [`setup`] with a fake that gives `answers` whatever is offered, and
/// the login's result as it is.
async fn setup_with<F, Fut>(
    o: iesp_initiator::LoginOptions,
    window: u32,
    answers: LoginAnswers,
    script: F,
) -> (Result<Session, iesp_initiator::LoginError>, FakeTarget)
where
    F: FnOnce(FakeConn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let fake = FakeTarget::start(move |mut f| async move {
        f.window = window;
        f.login_with(&answers.declare("MaxRecvDataSegmentLength", "512"))
            .await;
        script(f).await;
    })
    .await;
    let session = Session::login(fake.addr(), o).await;
    (session, fake)
}

fn read_cdb(blocks: u32) -> Vec<u8> {
    Cdb::read(CdbSize::Ten, 0, blocks).encode().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drop_fails_outstanding_commands_promptly() {
    let (s, server) = setup(opts(), 64, |mut f| async move {
        for _ in 0..8 {
            f.recv_command().await;
        }
        // Drop the connection with all eight outstanding.
    })
    .await;
    let handles: Vec<_> = (0..8)
        .map(|_| s.submit(Lun(0), &read_cdb(8), Bytes::new(), 4096).unwrap())
        .collect();
    server.join().await;
    let t0 = Instant::now();
    for h in handles {
        let r = h.wait_timeout(T).await;
        assert!(matches!(r, Err(CommandError::Closed(_))), "{r:?}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    assert!(s.is_closed());
    let r = s.command(Lun(0), &read_cdb(1), Bytes::new(), 512).await;
    assert!(matches!(r, Err(CommandError::Closed(_))), "{r:?}");
}

#[tokio::test]
async fn target_ping_is_answered() {
    let (pinged, ping_done) = tokio::sync::oneshot::channel::<()>();
    let (s, server) = setup(opts(), 64, |mut f| async move {
        let ping = NopIn {
            lun: Lun::from_index(3),
            itt: RESERVED_TAG,
            ttt: 0xabc,
            stat_sn: f.stat_sn,
            exp_cmd_sn: f.exp_cmd_sn,
            max_cmd_sn: f.max_cmd_sn(),
        };
        f.send(Pdu::NopIn(ping), Bytes::from_static(b"echo me"))
            .await;
        let answer = f.recv().await;
        let Pdu::NopOut(n) = answer.pdu() else {
            panic!("expected a NOP-Out, got {:?}", answer.bhs.opcode());
        };
        assert!(n.immediate);
        assert_eq!(
            (n.itt, n.ttt, n.lun),
            (RESERVED_TAG, 0xabc, Lun::from_index(3))
        );
        assert_eq!(
            n.cmd_sn, f.exp_cmd_sn,
            "a ping answer does not take a CmdSN"
        );
        assert_eq!(n.exp_stat_sn, f.stat_sn);
        assert_eq!(&answer.data[..], b"echo me");
        pinged.send(()).unwrap();
        // The session still works.
        let c = f.recv_command().await;
        assert_eq!(c.exp_stat_sn, f.stat_sn);
        f.respond(c.itt, ScsiStatus::GOOD, Residual::None).await;
    })
    .await;
    ping_done.await.unwrap();
    let r = s.command(Lun(0), &[0u8; 6], Bytes::new(), 0).await.unwrap();
    assert!(r.is_good());
    server.join().await;
}

/// A login that leaves the window closed (MaxCmdSN = ExpCmdSN − 1): the
/// command waits until a NOP-In opens it.
#[tokio::test]
async fn closed_window_holds_commands_until_opened() {
    let (s, server) = setup(opts(), 0, |mut f| async move {
        // Nothing may arrive while the window is closed.
        assert!(matches!(
            f.conn.recv(Duration::from_millis(100)).await,
            iesp_initiator::Received::Timeout
        ));
        f.window = 4;
        let open = NopIn {
            lun: Lun(0),
            itt: RESERVED_TAG,
            ttt: RESERVED_TAG,
            stat_sn: f.stat_sn,
            exp_cmd_sn: f.exp_cmd_sn,
            max_cmd_sn: f.max_cmd_sn(),
        };
        f.send(Pdu::NopIn(open), Bytes::new()).await;
        let c = f.recv_command().await;
        f.respond(c.itt, ScsiStatus::GOOD, Residual::None).await;
    })
    .await;
    let h = s.submit(Lun(0), &[0u8; 6], Bytes::new(), 0).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.stats().queued, 1);
    assert!(h.wait_timeout(T).await.unwrap().is_good());
    server.join().await;
}

#[tokio::test]
async fn abort_task_completes_the_aborted_command() {
    let (s, server) = setup(opts(), 64, |mut f| async move {
        let c = f.recv_command().await;
        let tmf = f.recv().await;
        let Pdu::TaskMgmtRequest(t) = tmf.pdu() else {
            panic!("expected a TMF request");
        };
        assert!(t.immediate);
        assert_eq!(t.function, TmfFunction::ABORT_TASK);
        assert_eq!(t.referenced_task_tag, c.itt);
        assert_eq!(t.ref_cmd_sn, c.cmd_sn);
        let rsp = TaskMgmtResponse {
            response: TmfResponse::FUNCTION_COMPLETE,
            itt: t.itt,
            stat_sn: f.next_stat_sn(),
            exp_cmd_sn: f.exp_cmd_sn,
            max_cmd_sn: f.max_cmd_sn(),
        };
        f.send(Pdu::TaskMgmtResponse(rsp), Bytes::new()).await;
    })
    .await;
    let h = s.submit(Lun(0), &read_cdb(8), Bytes::new(), 4096).unwrap();
    let itt = h.itt();
    let r = s
        .task_management(TmfFunction::ABORT_TASK, Lun(0), Some(itt))
        .await
        .unwrap();
    assert_eq!(r, TmfResponse::FUNCTION_COMPLETE);
    assert_eq!(
        h.wait_timeout(T).await,
        Err(CommandError::Aborted(TmfFunction::ABORT_TASK))
    );
    server.join().await;
}

/// An R2T beyond the write data fails that command at once; its ITT stays
/// reserved until the target finishes the task, and the session goes on.
#[tokio::test]
async fn r2t_beyond_the_write_data_fails_the_command() {
    let mut o = opts();
    o.immediate_data = false;
    o.initial_r2t = true;
    let (s, server) = setup(o, 64, |mut f| async move {
        let c = f.recv_command().await;
        assert!(c.write && c.final_bit);
        assert_eq!(c.expected_data_transfer_length, 4096);
        let r2t = R2t {
            lun: c.lun,
            itt: c.itt,
            ttt: 7,
            stat_sn: f.stat_sn,
            exp_cmd_sn: f.exp_cmd_sn,
            max_cmd_sn: f.max_cmd_sn(),
            r2t_sn: 0,
            buffer_offset: 0,
            desired_data_transfer_length: 8192,
        };
        f.send(Pdu::R2t(r2t), Bytes::new()).await;
        let next = f.recv_command().await;
        assert_ne!(next.itt, c.itt, "the failed task's ITT was reused");
        f.respond(c.itt, ScsiStatus::GOOD, Residual::None).await;
        f.respond(next.itt, ScsiStatus::GOOD, Residual::None).await;
    })
    .await;
    let cdb = Cdb::write(CdbSize::Ten, 0, 8, false).encode();
    let r = s
        .command(Lun(0), &cdb, Bytes::from(vec![1u8; 4096]), 0)
        .await;
    assert!(
        matches!(&r, Err(CommandError::Protocol(m)) if m.contains("R2T asks for bytes 0..8192")),
        "{r:?}"
    );
    let r = s.command(Lun(0), &[0u8; 6], Bytes::new(), 0).await.unwrap();
    assert!(r.is_good());
    server.join().await;
}

/// Data-In in several parts with the status in a SCSI Response carrying
/// an underflow; then a Data-In sequence with a DataSN gap.
#[tokio::test]
async fn data_in_reassembly_residuals_and_datasn_checks() {
    let (s, server) = setup(opts(), 64, |mut f| async move {
        let c = f.recv_command().await;
        assert!(c.read && !c.write);
        for (sn, (off, fill)) in [(0u32, 0xaau8), (2048, 0xbb)].into_iter().enumerate() {
            let d = DataIn {
                itt: c.itt,
                ttt: RESERVED_TAG,
                stat_sn: f.stat_sn,
                exp_cmd_sn: f.exp_cmd_sn,
                max_cmd_sn: f.max_cmd_sn(),
                data_sn: sn as u32,
                buffer_offset: off,
                ..DataIn::default()
            };
            f.send(
                Pdu::DataIn(d),
                Bytes::from(vec![fill; if off == 0 { 2048 } else { 1024 }]),
            )
            .await;
        }
        f.respond(c.itt, ScsiStatus::GOOD, Residual::Underflow(1024))
            .await;

        let c = f.recv_command().await;
        let d = DataIn {
            final_bit: true,
            status: Some(0),
            itt: c.itt,
            ttt: RESERVED_TAG,
            stat_sn: f.next_stat_sn(),
            exp_cmd_sn: f.exp_cmd_sn,
            max_cmd_sn: f.max_cmd_sn(),
            data_sn: 1,
            buffer_offset: 0,
            ..DataIn::default()
        };
        f.send(Pdu::DataIn(d), Bytes::from(vec![0u8; 512])).await;
    })
    .await;
    let r = s
        .command(Lun(0), &read_cdb(8), Bytes::new(), 4096)
        .await
        .unwrap();
    assert!(r.is_good());
    assert_eq!(r.residual, Residual::Underflow(1024));
    assert_eq!(r.data.len(), 3072);
    assert!(r.data[..2048].iter().all(|b| *b == 0xaa));
    assert!(r.data[2048..].iter().all(|b| *b == 0xbb));
    let r = s.command(Lun(0), &read_cdb(1), Bytes::new(), 512).await;
    assert!(
        matches!(&r, Err(CommandError::Protocol(m)) if m.contains("DataSN 1 where 0")),
        "{r:?}"
    );
    server.join().await;
}

/// A long Text Request in parts and a long answer in parts: each
/// continuation echoes the target's TTT (RFC 7143 §11.10.4, §11.11.4).
#[tokio::test]
async fn text_continuations_both_ways() {
    let (s, server) = setup(opts(), 64, |mut f| async move {
        // Request part 1 (C=1, TTT 0xffffffff).
        let p1 = f.recv().await;
        let Pdu::TextRequest(r1) = p1.pdu() else {
            panic!("expected a Text Request");
        };
        assert!(r1.continue_bit && !r1.final_bit);
        assert_eq!(r1.ttt, RESERVED_TAG);
        let ack = iesp_proto::pdu::TextResponse {
            final_bit: false,
            continue_bit: false,
            lun: Lun(0),
            itt: r1.itt,
            ttt: 0x77,
            stat_sn: f.next_stat_sn(),
            exp_cmd_sn: f.exp_cmd_sn,
            max_cmd_sn: f.max_cmd_sn(),
        };
        f.send(Pdu::TextResponse(ack.clone()), Bytes::new()).await;
        // Request part 2 echoes the TTT and ends the request.
        let p2 = f.recv().await;
        let Pdu::TextRequest(r2) = p2.pdu() else {
            panic!("expected a Text Request");
        };
        assert_eq!((r2.ttt, r2.continue_bit, r2.final_bit), (0x77, false, true));
        let mut whole = p1.data.to_vec();
        whole.extend_from_slice(&p2.data);
        let asked = text::decode(&whole).unwrap();
        assert_eq!(asked.len(), 4);
        // Answer in two parts: C=1 with a TTT, then the rest.
        let answer: Vec<KeyValue> = asked
            .iter()
            .map(|kv| KeyValue::new(kv.key.clone(), "NotUnderstood"))
            .collect();
        let bytes = text::encode_to_vec(&answer);
        let (a, b) = bytes.split_at(bytes.len() / 2 + 3);
        let first = iesp_proto::pdu::TextResponse {
            continue_bit: true,
            ttt: 0x78,
            stat_sn: f.next_stat_sn(),
            ..ack.clone()
        };
        f.send(Pdu::TextResponse(first), Bytes::copy_from_slice(a))
            .await;
        let p3 = f.recv().await;
        let Pdu::TextRequest(r3) = p3.pdu() else {
            panic!("expected a Text Request");
        };
        assert_eq!((r3.ttt, r3.final_bit), (0x78, true));
        assert!(p3.data.is_empty());
        let last = iesp_proto::pdu::TextResponse {
            final_bit: true,
            ttt: RESERVED_TAG,
            stat_sn: f.next_stat_sn(),
            ..ack
        };
        f.send(Pdu::TextResponse(last), Bytes::copy_from_slice(b))
            .await;
    })
    .await;
    assert_eq!(s.params().target_mrdsl, 512);
    let keys: Vec<KeyValue> = (0..4)
        .map(|i| KeyValue::new(format!("X-test-{i}"), "v".repeat(200)))
        .collect();
    let answer = s.text(&keys).await.unwrap();
    let names: Vec<&str> = answer.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(names, ["X-test-0", "X-test-1", "X-test-2", "X-test-3"]);
    server.join().await;
}

/// iESP's answer whatever is offered.
fn iesp_bursts() -> LoginAnswers {
    LoginAnswers::new()
        .answer("FirstBurstLength", "268435456")
        .answer("MaxBurstLength", "268435456")
}

#[tokio::test]
async fn strict_login_fails_on_an_out_of_range_answer_naming_the_key() {
    let (s, server) = setup_with(opts(), 64, iesp_bursts(), |_| async {}).await;
    let err = s.expect_err("a strict login accepted FirstBurstLength=268435456");
    let msg = err.to_string();
    let iesp_initiator::LoginError::OutOfRange(answers) = &err else {
        panic!("expected OutOfRange, got {err:?}");
    };
    let keys: Vec<&str> = answers.iter().map(|w| w.key.as_str()).collect();
    assert!(keys.contains(&"FirstBurstLength"), "{keys:?}");
    assert!(
        msg.contains("FirstBurstLength=268435456") && msg.contains("MaxBurstLength=268435456"),
        "{msg}"
    );
    server.join().await;
}

#[tokio::test]
async fn lenient_login_clamps_warns_and_the_session_uses_the_clamped_burst() {
    const FBL: usize = 4096;
    const WRITE: usize = 16384;
    let mut o = opts().lenient();
    o.first_burst_length = FBL as u32;
    let payload = Bytes::from((0..WRITE).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    let expected = payload.clone();
    let (s, server) = setup_with(o, 64, iesp_bursts(), move |mut f| async move {
        // WRITE: immediate data and unsolicited Data-Out stop at the
        // clamped FirstBurstLength, not at the target's 268435456.
        let cmd = f.recv().await;
        let Pdu::ScsiCommand(c) = cmd.pdu() else {
            panic!("expected a SCSI Command, got {:?}", cmd.bhs.opcode());
        };
        f.exp_cmd_sn = c.cmd_sn.wrapping_add(1);
        let mut got = cmd.data.to_vec();
        let mut last = c.final_bit;
        while !last {
            let d = f.recv().await;
            let Pdu::DataOut(h) = d.pdu() else {
                panic!("expected a Data-Out, got {:?}", d.bhs.opcode());
            };
            assert_eq!(h.ttt, RESERVED_TAG, "unsolicited");
            assert_eq!(h.buffer_offset as usize, got.len());
            got.extend_from_slice(&d.data);
            last = h.final_bit;
        }
        assert_eq!(
            got.len(),
            FBL,
            "unsolicited data beyond the clamped FirstBurstLength"
        );
        let r2t = R2t {
            lun: Lun(0),
            itt: c.itt,
            ttt: 0x77,
            stat_sn: f.stat_sn,
            exp_cmd_sn: f.exp_cmd_sn,
            max_cmd_sn: f.max_cmd_sn(),
            r2t_sn: 0,
            buffer_offset: FBL as u32,
            desired_data_transfer_length: (WRITE - FBL) as u32,
        };
        f.send(Pdu::R2t(r2t), Bytes::new()).await;
        while got.len() < WRITE {
            let d = f.recv().await;
            let Pdu::DataOut(h) = d.pdu() else {
                panic!("expected a Data-Out, got {:?}", d.bhs.opcode());
            };
            assert_eq!((h.ttt, h.buffer_offset as usize), (0x77, got.len()));
            got.extend_from_slice(&d.data);
        }
        assert_eq!(&got[..], &expected[..]);
        f.respond(c.itt, ScsiStatus::GOOD, Residual::None).await;
        // READ it back.
        let c = f.recv_command().await;
        assert_eq!(c.expected_data_transfer_length as usize, WRITE);
        let d = DataIn {
            final_bit: true,
            status: Some(ScsiStatus::GOOD.0),
            itt: c.itt,
            ttt: RESERVED_TAG,
            stat_sn: f.next_stat_sn(),
            exp_cmd_sn: f.exp_cmd_sn,
            max_cmd_sn: f.max_cmd_sn(),
            ..DataIn::default()
        };
        f.send(Pdu::DataIn(d), Bytes::from(got)).await;
    })
    .await;
    let s = s.expect("a lenient login");
    let w = &s.login_outcome().negotiation_warnings;
    let fbl = w
        .iter()
        .find(|w| w.key == "FirstBurstLength")
        .expect("a FirstBurstLength warning");
    assert_eq!(
        (fbl.answered.as_str(), fbl.used.as_str()),
        ("268435456", "4096")
    );
    assert!(
        fbl.to_string().contains("FirstBurstLength=268435456"),
        "{fbl}"
    );
    assert!(
        w.iter()
            .any(|w| w.key == "MaxBurstLength" && w.answered == "268435456")
    );
    assert_eq!(s.params().first_burst_length as usize, FBL);
    assert!(
        s.login_outcome()
            .warnings
            .iter()
            .any(|t| t.contains("FirstBurstLength")),
        "{:?}",
        s.login_outcome().warnings
    );
    let write = Cdb::write(CdbSize::Ten, 0, (WRITE / 512) as u32, false).encode();
    let r = s.command(Lun(0), &write, payload.clone(), 0).await.unwrap();
    assert!(r.is_good(), "{r:?}");
    let r = s
        .command(
            Lun(0),
            &read_cdb((WRITE / 512) as u32),
            Bytes::new(),
            WRITE as u32,
        )
        .await
        .unwrap();
    assert!(r.is_good());
    assert_eq!(r.data, payload);
    server.join().await;
}

#[tokio::test]
async fn keep_alive_pings_an_idle_target_and_closes_when_it_stays_silent() {
    let mut o = opts();
    o.keep_alive = Some(iesp_initiator::KeepAlive {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(300),
    });
    let (answered_tx, answered_rx) = tokio::sync::oneshot::channel::<()>();
    let (s, server) = setup(o, 64, |mut f| async move {
        // The first ping is answered, the second is not.
        let t0 = Instant::now();
        let p = f.recv().await;
        let Pdu::NopOut(n) = p.pdu() else {
            panic!("expected a NOP-Out ping, got {:?}", p.bhs.opcode());
        };
        assert!(
            t0.elapsed() >= Duration::from_millis(100),
            "pinged too early"
        );
        assert!(n.immediate && n.itt != RESERVED_TAG && n.ttt == RESERVED_TAG);
        let pong = NopIn {
            lun: Lun(0),
            itt: n.itt,
            ttt: RESERVED_TAG,
            stat_sn: f.next_stat_sn(),
            exp_cmd_sn: f.exp_cmd_sn,
            max_cmd_sn: f.max_cmd_sn(),
        };
        f.send(Pdu::NopIn(pong), p.data.clone()).await;
        answered_tx.send(()).unwrap();
        let p = f.recv().await;
        assert!(matches!(p.pdu(), Pdu::NopOut(_)), "{:?}", p.bhs.opcode());
        // Stay silent with the connection open until the initiator drops it.
        let _ = f.conn.recv(T).await;
    })
    .await;
    answered_rx.await.unwrap();
    assert!(!s.is_closed(), "closed after an answered ping");
    let t0 = Instant::now();
    while !s.is_closed() {
        assert!(t0.elapsed() < T, "the session outlived an unanswered ping");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reason = s.close_reason().unwrap();
    assert!(reason.contains("keep-alive"), "{reason}");
    let r = s.command(Lun(0), &read_cdb(1), Bytes::new(), 512).await;
    assert!(matches!(r, Err(CommandError::Closed(_))), "{r:?}");
    drop(s);
    server.join().await;
}

/// A session's default timeout answers a command the target leaves
/// unanswered with `Timeout` (the session's watchdog, not a timer per
/// command); the late answer that follows is dropped quietly, its ITT was
/// not reused meanwhile, and the next command completes as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_timeout_answers_an_unanswered_command() {
    let (late_tx, late_rx) = tokio::sync::oneshot::channel::<()>();
    let (s, server) = setup(opts(), 64, |mut f| async move {
        let first = f.recv_command().await;
        // Answer only after the initiator gave up on it.
        late_rx.await.unwrap();
        let second = f.recv_command().await;
        assert_ne!(
            second.itt, first.itt,
            "the ITT of a timed-out task is reused"
        );
        f.respond(first.itt, ScsiStatus::GOOD, Residual::None).await;
        f.respond(second.itt, ScsiStatus::GOOD, Residual::None)
            .await;
    })
    .await;
    let timeout = Duration::from_millis(100);
    s.set_default_timeout(Some(timeout));
    let t0 = Instant::now();
    let r = s.command(Lun(0), &read_cdb(1), Bytes::new(), 0).await;
    let waited = t0.elapsed();
    assert_eq!(r, Err(CommandError::Timeout(timeout)));
    assert!(waited >= timeout, "answered after {waited:?}");
    late_tx.send(()).unwrap();
    let r = tokio::time::timeout(T, s.command(Lun(0), &read_cdb(1), Bytes::new(), 0))
        .await
        .expect("the second command is answered");
    assert!(r.unwrap().is_good());
    server.join().await;
}
