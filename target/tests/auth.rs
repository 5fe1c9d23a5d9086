//! Authentication that cannot be brute-forced (issue 13): failed CHAP is
//! slowed exponentially per source address and per initiator name, up to a
//! configured rate, and the right secret still logs in afterwards; CHAP
//! challenges shorter than 16 bytes are refused; discovery sessions can
//! require CHAP (`--discovery-chap`, `[discovery.chap]`).
//!
//! The delays are configured small (2 ms doubling to 20 ms) so the tests
//! take seconds. The assertions are lower bounds on elapsed time, which a
//! loaded machine cannot break: 100 failures cannot be answered faster
//! than the sum of their delays.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Parser;
use iesp_initiator::discovery::discover_with;
use iesp_initiator::login::login;
use iesp_initiator::{ChapCredentials, LoginError, LoginOptions, RawConnection};
use iesp_proto::pdu::LoginStatus;
use iesp_proto::text;
use iesp_target::config::{ChapAuth, Limits, TargetConfig};
use iesp_target::embedded::EmbeddedTarget;
use iesp_testsupport::chap_login::{self, chap_response, login_status, security_step};
use tokio::net::TcpSocket;

const USER: &str = "alice";
const SECRET: &str = "Right-s3cret-42";
const TARGET_SECRET: &str = "T4rget-s3cret-88";
const STEP: Duration = Duration::from_millis(2);
const MAX: Duration = Duration::from_millis(20);

fn chap_target() -> TargetConfig {
    let mut cfg = TargetConfig {
        limits: Limits {
            auth_fail_delay: STEP,
            auth_fail_delay_max: MAX,
            ..Limits::default()
        },
        ..TargetConfig::default()
    };
    cfg.targets[0].chap = Some(ChapAuth {
        initiator: ChapCredentials::new(USER, SECRET.as_bytes().to_vec()),
        target: Some(ChapCredentials::new(
            "target0",
            TARGET_SECRET.as_bytes().to_vec(),
        )),
    });
    cfg
}

fn opts(initiator: &str, secret: &str) -> LoginOptions {
    let mut o = LoginOptions::new(initiator, Some(iesp_target::DEFAULT_IQN));
    o.chap = Some(ChapCredentials::new(USER, secret.as_bytes().to_vec()));
    o
}

/// One login attempt from `source`.
async fn attempt(to: SocketAddr, source: IpAddr, o: &LoginOptions) -> Result<(), LoginError> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = sock.connect(to).await.expect("connect");
    let mut raw = RawConnection::from_stream(stream).unwrap();
    login(&mut raw, o).await.map(|_| ())
}

/// The least time `n` failures in a row can take: the sum of their delays.
fn least(n: u32) -> Duration {
    (0..n).map(|i| (STEP * (1 << i.min(20))).min(MAX)).sum()
}

async fn wrong_then_right(rotate_names: bool) {
    let t = EmbeddedTarget::start(chap_target()).await.unwrap();
    let t0 = Instant::now();
    let mut answered = Vec::new();
    for i in 0..100u32 {
        // Per address: one source, a new initiator name each time. Per
        // name: one name, a new source address each time.
        let (source, name) = if rotate_names {
            (
                IpAddr::from([127, 0, 4, 1]),
                format!("iqn.2026-11.org.iesp-test:guess{i}"),
            )
        } else {
            (
                IpAddr::from([127, 0, 5, (i % 250) as u8 + 1]),
                "iqn.2026-11.org.iesp-test:guesser".to_owned(),
            )
        };
        let r = attempt(t.addr, source, &opts(&name, &format!("Wr0ng-guess-{i:04}"))).await;
        assert!(
            matches!(
                r,
                Err(LoginError::Refused(LoginStatus::AUTHENTICATION_FAILURE))
            ),
            "attempt {i}: {r:?}"
        );
        answered.push(t0.elapsed());
    }
    let total = t0.elapsed();
    // The configured rate holds: at most one answer per 20 ms once the
    // delay reached its maximum, so 100 take at least the sum of delays.
    assert!(
        total >= least(100),
        "100 failures answered in {total:?}, faster than {:?}",
        least(100)
    );
    let first_second = answered
        .iter()
        .filter(|a| **a < Duration::from_secs(1))
        .count();
    assert!(
        first_second <= 1 + (1000 / MAX.as_millis() as usize) + 4,
        "{first_second} failures answered in the first second"
    );
    eprintln!(
        "100 wrong CHAP responses ({}) answered in {total:?}: {:.0}/s",
        if rotate_names {
            "one address, new names"
        } else {
            "one name, new addresses"
        },
        100.0 / total.as_secs_f64()
    );
    // The right secret still logs in, from the same address and name.
    let (source, name) = if rotate_names {
        (IpAddr::from([127, 0, 4, 1]), "iqn.2026-11.org.iesp-test:ok")
    } else {
        (
            IpAddr::from([127, 0, 5, 7]),
            "iqn.2026-11.org.iesp-test:guesser",
        )
    };
    attempt(t.addr, source, &opts(name, SECRET))
        .await
        .expect("the right secret logs in after the failures");
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_chap_from_one_address_is_slowed_and_the_right_secret_still_works() {
    wrong_then_right(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_chap_for_one_initiator_name_is_slowed_from_any_address() {
    wrong_then_right(false).await;
}

/// Answers the target's challenge correctly, offering `ours` as the mutual
/// challenge; returns the login status.
async fn mutual_with_challenge(addr: SocketAddr, ours: &[u8]) -> LoginStatus {
    let mut c = chap_login::challenged(
        addr,
        "iqn.2026-11.org.iesp-test:mutual",
        iesp_target::DEFAULT_IQN,
    )
    .await;
    let r = chap_response(c.id, SECRET.as_bytes(), &c.challenge);
    let c_hex = text::encode_hex(ours);
    let f = security_step(
        &mut c.conn,
        &[
            ("CHAP_N", USER),
            ("CHAP_R", &r),
            ("CHAP_I", "3"),
            ("CHAP_C", &c_hex),
        ],
        true,
    )
    .await;
    login_status(&f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_chap_challenge_shorter_than_16_bytes_is_refused() {
    let t = EmbeddedTarget::start(chap_target()).await.unwrap();
    for short in [1usize, 8, 15] {
        assert_eq!(
            mutual_with_challenge(t.addr, &vec![0x5a; short]).await,
            LoginStatus::AUTHENTICATION_FAILURE,
            "a {short}-byte challenge"
        );
    }
    // 16 bytes is enough: the same exchange succeeds.
    assert_eq!(
        mutual_with_challenge(t.addr, &[0x5a; 16]).await,
        LoginStatus::SUCCESS
    );
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_chap_from_the_flag_is_required() {
    // The flag gives discovery the target's CHAP settings.
    let args = iesp_target::cli::Args::try_parse_from([
        "iesp-target",
        "--chap-user",
        USER,
        "--chap-secret",
        SECRET,
        "--discovery-chap",
    ])
    .unwrap();
    let mut cfg = args.flags_config().unwrap();
    assert!(cfg.discovery_chap.is_some());
    cfg.limits.auth_fail_delay = STEP;
    cfg.limits.auth_fail_delay_max = MAX;
    let t = EmbeddedTarget::start(cfg).await.unwrap();
    let name = "iqn.2026-11.org.iesp-test:discoverer";
    let open = LoginOptions::discovery(name);
    assert!(
        discover_with(t.addr, &open).await.is_err(),
        "discovery without CHAP accepted"
    );
    let mut wrong = LoginOptions::discovery(name);
    wrong.chap = Some(ChapCredentials::new(USER, b"Wr0ng-s3cret-00".to_vec()));
    assert!(discover_with(t.addr, &wrong).await.is_err());
    let mut right = LoginOptions::discovery(name);
    right.chap = Some(ChapCredentials::new(USER, SECRET.as_bytes().to_vec()));
    let found = discover_with(t.addr, &right)
        .await
        .expect("discovery with CHAP");
    assert_eq!(found.len(), 1);
    // Without the flag discovery stays open.
    let args = iesp_target::cli::Args::try_parse_from([
        "iesp-target",
        "--chap-user",
        USER,
        "--chap-secret",
        SECRET,
    ])
    .unwrap();
    assert!(args.flags_config().unwrap().discovery_chap.is_none());
    t.shutdown().await.unwrap();
}
