//! Login limits (issue 13): the whole-login deadline, the caps on
//! connections still logging in (in total and per source address), on all
//! connections and on sessions per target, with a logged-in session working
//! throughout. Each test runs the target embedded with small limits.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iesp_initiator::{LoginError, LoginOptions, RawConnection, Received, Session};
use iesp_proto::pdu::{Isid, LoginRequest, LoginStatus, Pdu, Stage};
use iesp_target::config::{Limits, TargetConfig};
use iesp_target::embedded::EmbeddedTarget;
use tokio::net::{TcpSocket, TcpStream};

fn config(limits: Limits) -> TargetConfig {
    TargetConfig {
        limits,
        ..TargetConfig::default()
    }
}

fn opts(name: &str) -> LoginOptions {
    LoginOptions::new(
        &format!("iqn.2026-11.org.iesp-test:{name}"),
        Some(iesp_target::DEFAULT_IQN),
    )
}

/// A session that logs in, writes and reads back: the target still serves.
async fn works(addr: SocketAddr, name: &str) -> Session {
    let s = Session::login(addr, opts(name)).await.expect("login");
    let lu = s.logical_unit(0).await.expect("LUN 0");
    let data = Bytes::from(vec![0xa5u8; 4096]);
    lu.write(8, data.clone()).await.expect("write");
    assert_eq!(lu.read(8, 8).await.expect("read"), data);
    s
}

/// An idle TCP connection from `source` (any 127.0.0.0/8 address).
async fn idle_from(source: IpAddr, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(source, 0)).unwrap();
    sock.connect(to).await.expect("connect")
}

/// How many of `conns` the target has not closed.
fn open(conns: &[TcpStream]) -> usize {
    let mut buf = [0u8; 16];
    conns
        .iter()
        .filter(|c| match c.try_read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        })
        .count()
}

/// Waits until exactly `want` of `conns` are open (the target closes the
/// excess as it accepts them), failing after 10 s.
async fn settle(conns: &[TcpStream], want: usize, what: &str) {
    let t0 = Instant::now();
    loop {
        let n = open(conns);
        if n == want {
            // Stays so: nothing more is closed.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(open(conns), want, "{what}: changed after settling");
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: {n} open, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Raises this process's descriptor limit to its hard limit (2000
/// connections need 2000 client and up to the cap server descriptors).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_unauthenticated_connections_are_capped_while_a_session_works() {
    // 2000 connections, the figure: 2000 client descriptors and
    // at most the cap on the target's side.
    let nofile = raise_nofile();
    assert!(
        nofile >= 2600,
        "RLIMIT_NOFILE {nofile} too small for 2000 connections"
    );
    let limits = Limits {
        max_unauthenticated: 200,
        max_unauthenticated_per_address: 8,
        // The idle connections must outlive the test: only the caps close them.
        login_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let t = EmbeddedTarget::start(config(limits)).await.unwrap();
    let before = works(t.addr, "before").await;

    // 1000 from 10 addresses, 100 each: 8 per address stay.
    let mut flood = Vec::new();
    for i in 0..1000u32 {
        let source = IpAddr::from([127, 0, 1, (i % 10) as u8 + 1]);
        flood.push(idle_from(source, t.addr).await);
    }
    settle(&flood, 80, "per-address cap").await;
    // A new session from another address logs in meanwhile and works; the
    // one logged in before still works.
    let during = works(t.addr, "during").await;
    let lu = before.logical_unit(0).await.unwrap();
    lu.read(0, 1)
        .await
        .expect("the earlier session still reads");

    // 1000 more from 100 other addresses, 10 each (under the per-address
    // cap): the total cap of 200 holds.
    for i in 0..1000u32 {
        let source = IpAddr::from([127, 0, 2, (i % 100) as u8 + 1]);
        flood.push(idle_from(source, t.addr).await);
    }
    settle(&flood, 200, "total unauthenticated cap").await;
    // Logged-in sessions do not count against it and keep working.
    let lu = during.logical_unit(0).await.unwrap();
    lu.read(0, 1).await.expect("the session still reads");
    let lu = before.logical_unit(0).await.unwrap();
    lu.read(0, 1)
        .await
        .expect("the earlier session still reads");

    // Closing the idle ones frees their places.
    drop(flood);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(works(t.addr, "after").await);
    drop((before, during));
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_kept_alive_by_a_pdu_now_and_then_is_dropped_at_the_deadline() {
    let deadline = Duration::from_millis(1500);
    let limits = Limits {
        login_timeout: deadline,
        ..Limits::default()
    };
    let t = EmbeddedTarget::start(config(limits)).await.unwrap();
    let mut raw = RawConnection::connect(t.addr).await.unwrap();
    let t0 = Instant::now();
    let isid = Isid::random(7);
    // A login text that never ends: one small C=1 part every 300 ms, each
    // acknowledged, which a per-PDU timeout would allow forever.
    let mut closed_at = None;
    for n in 0..40u32 {
        let req = LoginRequest {
            continue_bit: true,
            csg: Stage::SECURITY,
            nsg: Stage::SECURITY,
            isid,
            itt: n,
            cmd_sn: 1,
            exp_stat_sn: n,
            ..LoginRequest::default()
        };
        let part = if n == 0 {
            "InitiatorName=iqn.2026-11.org.iesp-test:slow\0".to_owned()
        } else {
            format!("X-com.example.pad{n}=")
        };
        if raw
            .send_pdu(&Pdu::LoginRequest(req), Bytes::from(part))
            .await
            .is_err()
        {
            closed_at = Some(t0.elapsed());
            break;
        }
        match raw.recv(Duration::from_millis(300)).await {
            Received::Frame(f) => match f.pdu() {
                Pdu::LoginResponse(r) => assert_eq!(r.status, LoginStatus::SUCCESS),
                other => panic!("unexpected {other:?}"),
            },
            Received::Timeout => {}
            Received::Closed | Received::Malformed(_) => {
                closed_at = Some(t0.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let at = closed_at.expect("the trickling login was never dropped");
    assert!(
        at >= deadline - Duration::from_millis(100),
        "dropped early, at {at:?}"
    );
    assert!(
        at < deadline * 4,
        "dropped at {at:?}, long after the deadline"
    );
    // Keep-alive within the deadline is not affected: a normal login works.
    drop(works(t.addr, "normal").await);
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_target_and_total_connections_are_capped() {
    let limits = Limits {
        max_sessions: 2,
        max_connections: 4,
        ..Limits::default()
    };
    let t = EmbeddedTarget::start(config(limits)).await.unwrap();
    let a = works(t.addr, "a").await;
    let b = works(t.addr, "b").await;
    match Session::login(t.addr, opts("c")).await {
        Err(LoginError::Refused(status)) => assert_eq!(status, LoginStatus::OUT_OF_RESOURCES),
        Err(e) => panic!("third session: expected Out of Resources, got {e}"),
        Ok(_) => panic!("third session accepted over max_sessions = 2"),
    }
    // A logout frees a place.
    a.logout().await.expect("logout");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = works(t.addr, "c").await;

    // Two sessions plus two idle connections reach max_connections = 4:
    // the fifth connection is closed on accept.
    let local = IpAddr::from([127, 0, 0, 1]);
    let mut idle = vec![
        idle_from(local, t.addr).await,
        idle_from(local, t.addr).await,
    ];
    settle(&idle, 2, "under max_connections").await;
    idle.push(idle_from(local, t.addr).await);
    settle(&idle, 2, "max_connections").await;
    drop((b, c, idle));
    t.shutdown().await.unwrap();
}
