//! What an operator reads in the target's log at the default level (info),
//! issue 13: a line per login (initiator name, ISID, TSIH, digests), per
//! logout, per lost connection with its reason, per session reinstatement,
//! and one line per refusal cause however many connections it refuses.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iesp_initiator::login::login;
use iesp_initiator::{LoginOptions, RawConnection, Session};
use iesp_proto::pdu::Isid;

fn start(log: &Path, args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iesp-target"))
        .args(["--listen", "127.0.0.1:0", "--lun", "ram:1M"])
        .args(args)
        .env_remove("IESP_LOG")
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("log file"))
        .spawn()
        .expect("spawn iesp-target");
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.strip_prefix("iesp-target: listening on "))
        {
            return (child, addr.trim().parse().expect("address"));
        }
        if t0.elapsed() > Duration::from_secs(10) || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("iesp-target did not start; log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the log has a line containing every one of `needles`.
fn wait_for_line(log: &Path, needles: &[&str]) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_owned();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no line with {needles:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn opts(name: &str, isid: Isid) -> LoginOptions {
    let mut o = LoginOptions::new(
        &format!("iqn.2026-11.org.iesp-test:{name}"),
        Some(iesp_target::DEFAULT_IQN),
    );
    o.isid = isid;
    o
}

#[test]
fn logins_logouts_losses_reinstatements_and_refusals_are_logged_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("target.log");
    let (mut child, addr) = start(
        &log,
        &[
            "--max-unauthenticated-per-address",
            "2",
            "--max-connections-per-session",
            "2",
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Login and logout.
        let isid = Isid([0x80, 0x12, 0x34, 0x56, 0x00, 0x01]);
        let s = Session::login(addr, opts("alpha", isid).with_digests())
            .await
            .expect("login");
        let line = wait_for_line(&log, &["login complete", "iqn.2026-11.org.iesp-test:alpha"]);
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains("isid=801234560001"), "{line}");
        assert!(line.contains("tsih="), "{line}");
        assert!(line.contains("header_digest=CRC32C"), "{line}");
        assert!(line.contains("data_digest=CRC32C"), "{line}");
        s.logout().await.expect("logout");
        wait_for_line(&log, &["logout", "iqn.2026-11.org.iesp-test:alpha"]);

        // A connection dropped by the initiator.
        let mut raw = RawConnection::connect(addr).await.unwrap();
        login(&mut raw, &opts("beta", Isid([0x80, 0, 0, 0, 0, 2])))
            .await
            .expect("login");
        drop(raw);
        wait_for_line(&log, &["connection lost: closed by the initiator", "beta"]);

        // Session reinstatement: the same initiator name and ISID again.
        let same = Isid([0x80, 0, 0, 0, 0, 3]);
        let first = Session::login(addr, opts("gamma", same)).await.unwrap();
        let second = Session::login(addr, opts("gamma", same)).await.unwrap();
        wait_for_line(&log, &["session reinstatement", "gamma"]);
        wait_for_line(&log, &["session reinstated by a new login", "gamma"]);
        drop(first);
        second.logout().await.unwrap();

        // A second connection joins a session (MC/S); five more beyond its
        // MaxConnections are refused with 0x0206: one line for the cause.
        let isid = Isid([0x80, 0, 0, 0, 0, 4]);
        let mut o = opts("delta", isid);
        o.max_connections = 2;
        let mut lead = RawConnection::connect(addr).await.unwrap();
        let first = login(&mut lead, &o).await.expect("leading login");
        o.tsih = first.tsih;
        o.cmd_sn = first.cmd_sn;
        o.cid = 1;
        let mut second = RawConnection::connect(addr).await.unwrap();
        login(&mut second, &o).await.expect("second connection");
        wait_for_line(&log, &["connection added to the session", "delta", "cid=1"]);
        for cid in 2..7 {
            o.cid = cid;
            let mut over = RawConnection::connect(addr).await.unwrap();
            match login(&mut over, &o).await {
                Err(iesp_initiator::LoginError::Refused(s))
                    if s == iesp_proto::pdu::LoginStatus::TOO_MANY_CONNECTIONS => {}
                other => panic!("CID {cid}: {:?}", other.map(|o| o.tsih)),
            }
        }
        drop((lead, second));

        // Ten refused connections from one address: one line for the cause.
        let mut idle = Vec::new();
        for _ in 0..12 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(idle);
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let refusals = text
        .lines()
        .filter(|l| l.contains("refusing: too many connections logging in from one address"))
        .count();
    assert_eq!(
        refusals, 1,
        "one line per cause, not per connection:\n{text}"
    );
    let too_many = text
        .lines()
        .filter(|l| l.contains("refusing: too many connections in one session"))
        .count();
    assert_eq!(too_many, 1, "one line for five refused joins:\n{text}");
    let _ = child.kill();
    let _ = child.wait();
}
