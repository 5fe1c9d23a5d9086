//! NOP-In keep-alive (RFC 7143 §11.19): after a quiet interval the target
//! pings with a NOP-In that asks for an answer; an initiator that answers
//! keeps its connection, one that does not is dropped after the timeout,
//! and other sessions are not affected.

use std::time::{Duration, Instant};

use bytes::Bytes;
use iesp_initiator::login::login;
use iesp_initiator::{LoginOptions, RawConnection, Received, Session};
use iesp_proto::bhs::RESERVED_TAG;
use iesp_proto::pdu::Pdu;
use iesp_target::config::TargetConfig;
use iesp_testsupport::TestTarget;

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_initiators_are_pinged_then_dropped() {
    let mut cfg = TargetConfig::default();
    cfg.limits.nop_interval = Some(INTERVAL);
    cfg.limits.nop_timeout = TIMEOUT;
    let target = TestTarget::start(cfg).await;
    let opts = |name: &str| LoginOptions::new(name, Some(target.iqn()));

    // A session whose initiator answers pings (ours does) stays up.
    let alive = Session::login(target.addr(), opts("iqn.2026-11.org.iesp-test:alive"))
        .await
        .expect("login");

    // A raw connection that never answers.
    let mut silent = RawConnection::connect(target.addr()).await.unwrap();
    login(&mut silent, &opts("iqn.2026-11.org.iesp-test:silent"))
        .await
        .expect("login");
    let t0 = Instant::now();
    let ping = match silent.recv(Duration::from_secs(5)).await {
        Received::Frame(f) => match f.pdu() {
            Pdu::NopIn(n) => n,
            other => panic!("expected a NOP-In ping, got {other:?}"),
        },
        other => panic!("expected a NOP-In ping, got {other:?}"),
    };
    assert_eq!(
        ping.itt, RESERVED_TAG,
        "a target ping carries ITT 0xffffffff"
    );
    assert_ne!(ping.ttt, RESERVED_TAG, "and a TTT that asks for an answer");
    assert!(t0.elapsed() >= INTERVAL / 2, "pinged before the interval");
    loop {
        match silent.recv(Duration::from_secs(5)).await {
            Received::Closed => break,
            Received::Frame(_) => continue,
            other => panic!("expected the target to drop the silent connection, got {other:?}"),
        }
    }
    assert!(t0.elapsed() >= TIMEOUT, "dropped before the timeout");

    // Several intervals later the answering session still works.
    tokio::time::sleep(INTERVAL * 4).await;
    let echo = alive
        .nop(Bytes::from_static(b"still here"))
        .await
        .expect("NOP on the live session");
    assert_eq!(&echo[..], b"still here");
    alive.logout().await.expect("logout");
    target.stop().await;
}
