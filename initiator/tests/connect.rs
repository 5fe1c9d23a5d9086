//! The TCP connect timeout, against a loopback listener whose accept queue
//! is full: it never accepts, and Linux drops further SYNs, so a connect
//! hangs as it would on a portal behind a firewall that drops them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iesp_initiator::{LoginError, LoginOptions, RawConnection, Session};
use tokio::net::{TcpSocket, TcpStream};

/// A listener with backlog 0 and its accept queue filled. The returned
/// streams must stay open for the queue to stay full.
async fn black_hole() -> (tokio::net::TcpListener, SocketAddr, Vec<TcpStream>) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            // A connect that hangs: the queue is full.
            Err(_) => return (listener, addr, fillers),
        }
    }
    panic!("the accept queue of a backlog-0 listener never filled (16 connections)");
}

#[tokio::test]
async fn connect_to_a_portal_that_never_answers_times_out() {
    let (_listener, addr, _fillers) = black_hole().await;
    let timeout = Duration::from_millis(300);

    let t0 = Instant::now();
    let err = RawConnection::connect_timeout(addr, timeout)
        .await
        .expect_err("connected to a full accept queue");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(t0.elapsed() >= timeout, "gave up early: {:?}", t0.elapsed());

    let mut opts = LoginOptions::new("iqn.2026-11.org.iesp-test:init", Some("iqn.x:t"));
    opts.connect_timeout = timeout;
    let t0 = Instant::now();
    let err = Session::login(addr, opts)
        .await
        .expect_err("logged in to a full accept queue");
    let elapsed = t0.elapsed();
    match &err {
        LoginError::ConnectTimeout { addr: a, after } => {
            assert_eq!((*a, *after), (addr, timeout));
        }
        other => panic!("expected ConnectTimeout, got {other:?}"),
    }
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
        "took {elapsed:?}"
    );
}

#[test]
fn the_default_connect_timeout_is_ten_seconds() {
    assert_eq!(
        iesp_initiator::DEFAULT_CONNECT_TIMEOUT,
        Duration::from_secs(10)
    );
    let o = LoginOptions::new("iqn.2026-11.org.iesp-test:init", None);
    assert_eq!(o.connect_timeout, Duration::from_secs(10));
    assert_eq!(o.negotiation, iesp_initiator::NegotiationPolicy::Strict);
}
