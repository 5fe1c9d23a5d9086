//! Session reinstatement (RFC 7143 §6.3.5): a new leading login with the
//! same InitiatorName and ISID (TSIH 0) replaces the live session — the
//! old connection is closed, the new session works — while a session with
//! a different ISID is left alone.

use std::time::{Duration, Instant};

use bytes::Bytes;
use iesp_initiator::{LoginOptions, Session};
use iesp_proto::pdu::Isid;
use iesp_testsupport::TestTarget;

const INITIATOR: &str = "iqn.2026-11.org.iesp-test:reinstate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_isid_replaces_the_session() {
    let target = TestTarget::ram(16 << 20, 512).await;
    let with_isid = |isid: Isid| {
        let mut o = LoginOptions::new(INITIATOR, Some(target.iqn()));
        o.isid = isid;
        o
    };
    let first = Session::login(target.addr(), with_isid(Isid::random(1)))
        .await
        .expect("first login");
    let other = Session::login(target.addr(), with_isid(Isid::random(2)))
        .await
        .expect("other ISID");
    first.nop(Bytes::new()).await.expect("first session works");
    let first_tsih = first.login_outcome().tsih;

    let second = Session::login(target.addr(), with_isid(Isid::random(1)))
        .await
        .expect("reinstating login");
    assert_ne!(
        second.login_outcome().tsih,
        first_tsih,
        "a new session, a new TSIH"
    );
    let t0 = Instant::now();
    while !first.is_closed() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the reinstated session's connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        first.nop(Bytes::new()).await.is_err(),
        "the old session is gone"
    );
    second
        .nop(Bytes::from_static(b"x"))
        .await
        .expect("the new session works");
    other
        .nop(Bytes::new())
        .await
        .expect("a session with another ISID is untouched");
    second.logout().await.unwrap();
    other.logout().await.unwrap();
    target.stop().await;
}
