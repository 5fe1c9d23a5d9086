//! The Prometheus endpoint after a known workload: N reads, M writes, one
//! data digest error and one refused login, caused on purpose; then the
//! exact counter values over HTTP. Also the endpoint's bad input (address
//! in use, non-loopback without the flag: exit 2) and its HTTP errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use iesp_initiator::login::login;
use iesp_initiator::{LoginOptions, RawConnection, Received, Session};
use iesp_proto::bhs::{Lun, RESERVED_TAG};
use iesp_proto::framing::Frame;
use iesp_proto::negotiation::Digest;
use iesp_proto::pdu::{NopOut, Pdu, Reject, RejectReason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READS: u64 = 7;
const WRITES: u64 = 5;
const ALLOWED: &str = "iqn.2026-11.org.iesp-test:metrics-ok";
const REFUSED: &str = "iqn.2026-11.org.iesp-test:metrics-refused";

#[path = "common/in_process.rs"]
mod in_process;
use in_process::InProcess;

/// A target with its iSCSI portal and metrics endpoint, both on ephemeral
/// loopback ports.
struct Running {
    iscsi: SocketAddr,
    metrics: SocketAddr,
    iqn: String,
    t: InProcess,
}

async fn start() -> Running {
    let t = InProcess::start(ALLOWED).await;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = metrics.local_addr().unwrap();
    tokio::spawn(iesp_target::metrics::serve_metrics(
        metrics,
        t.target.clone(),
        t.stopped(),
    ));
    Running {
        iscsi: t.iscsi,
        metrics: maddr,
        iqn: t.iqn.clone(),
        t,
    }
}

/// One HTTP/1.1 request; returns the status line and the body.
async fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The samples of an exposition, `name{labels}` to value.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends in # EOF");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("numeric sample")))
        .collect()
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have {:?}", m.keys()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_a_known_workload() {
    let t = start().await;
    let lu_labels = format!("target=\"{}\",lun=\"0\"", t.iqn);

    // N reads and M writes of 8 blocks.
    let session = Session::login(t.iscsi, LoginOptions::new(ALLOWED, Some(&t.iqn)))
        .await
        .expect("login");
    let lu = session.logical_unit(0).await.expect("LUN 0");
    for i in 0..WRITES {
        lu.write(i * 8, Bytes::from(vec![i as u8; 4096]))
            .await
            .expect("write");
    }
    for i in 0..READS {
        lu.read(i * 8, 8).await.expect("read");
    }

    // One login refused: the ACL does not name this initiator.
    assert!(
        Session::login(t.iscsi, LoginOptions::new(REFUSED, Some(&t.iqn)))
            .await
            .is_err()
    );

    // One data digest error: a NOP-Out whose data digest is wrong.
    let mut raw = RawConnection::connect(t.iscsi).await.unwrap();
    let mut opts = LoginOptions::new(ALLOWED, Some(&t.iqn));
    opts.header_digest = vec![Digest::Crc32c];
    opts.data_digest = vec![Digest::Crc32c];
    let out = login(&mut raw, &opts).await.expect("digest login");
    let nop = NopOut {
        immediate: true,
        lun: Lun(0),
        itt: 0x31,
        ttt: RESERVED_TAG,
        cmd_sn: out.cmd_sn,
        exp_stat_sn: out.exp_stat_sn,
    };
    let mut wire = bytes::BytesMut::new();
    iesp_proto::framing::encode(
        &raw.frame_config(),
        &Frame::with_data(&Pdu::NopOut(nop), Bytes::from_static(b"data")),
        &mut wire,
    );
    let last = wire.len() - 1;
    wire[last] ^= 0xff;
    raw.send_bytes(&wire).await.unwrap();
    match raw.recv_skipping_pings(Duration::from_secs(5)).await {
        Received::Frame(f) => assert!(
            matches!(f.pdu(), Pdu::Reject(Reject { reason, .. }) if reason == RejectReason::DATA_DIGEST_ERROR),
            "expected a Reject, got {:?}",
            f.pdu()
        ),
        other => panic!("expected a Reject, got {other:?}"),
    }

    // While both sessions are up.
    let m = scrape(t.metrics).await;
    assert_eq!(get(&m, "iesp_target_connections"), 2.0);
    assert_eq!(get(&m, "iesp_target_sessions"), 2.0);
    let conns = m
        .keys()
        .filter(|k| k.starts_with("iesp_target_connection_info{"))
        .count();
    assert_eq!(conns, 2, "one info sample per connection");

    session.logout().await.expect("logout");
    drop(raw);
    // The connections' counters move to the closed totals once their
    // tasks end.
    let mut m = scrape(t.metrics).await;
    for _ in 0..100 {
        if get(&m, "iesp_target_connections") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = scrape(t.metrics).await;
    }
    assert_eq!(get(&m, "iesp_target_connections"), 0.0);

    let lu_key = |name: &str, extra: &str| format!("{name}{{{lu_labels}{extra}}}");
    assert_eq!(
        get(
            &m,
            &lu_key("iesp_target_lu_commands_total", ",type=\"read\"")
        ),
        READS as f64
    );
    assert_eq!(
        get(
            &m,
            &lu_key("iesp_target_lu_commands_total", ",type=\"write\"")
        ),
        WRITES as f64
    );
    assert_eq!(
        get(&m, &lu_key("iesp_target_lu_read_bytes_total", "")),
        (READS * 4096) as f64
    );
    assert_eq!(
        get(&m, &lu_key("iesp_target_lu_written_bytes_total", "")),
        (WRITES * 4096) as f64
    );
    assert_eq!(
        get(&m, &lu_key("iesp_target_lu_inflight_commands", "")),
        0.0
    );
    assert_eq!(
        get(
            &m,
            &lu_key("iesp_target_lu_errors_total", ",sense_key=\"medium_error\"")
        ),
        0.0
    );
    let count = get(
        &m,
        &lu_key("iesp_target_lu_command_latency_seconds_count", ""),
    );
    let inf = get(
        &m,
        &format!("iesp_target_lu_command_latency_seconds_bucket{{le=\"+Inf\",{lu_labels}}}"),
    );
    assert_eq!(count, inf, "the +Inf bucket holds every command");
    assert!(count >= (READS + WRITES) as f64);

    assert_eq!(get(&m, "iesp_target_login_accepts_total"), 2.0);
    assert_eq!(
        get(
            &m,
            "iesp_target_login_failures_total{reason=\"authorization\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "iesp_target_login_failures_total{reason=\"authentication\"}"
        ),
        0.0
    );
    assert_eq!(
        get(
            &m,
            "iesp_target_login_failures_total{reason=\"negotiation\"}"
        ),
        0.0
    );
    assert_eq!(
        get(&m, "iesp_target_connection_ends_total{kind=\"normal\"}"),
        1.0
    );
    assert_eq!(
        get(&m, "iesp_target_connection_ends_total{kind=\"other\"}"),
        1.0
    );
    assert_eq!(get(&m, "iesp_target_data_digest_errors_total"), 1.0);
    assert_eq!(get(&m, "iesp_target_header_digest_errors_total"), 0.0);
    assert_eq!(get(&m, "iesp_target_rejects_sent_total"), 1.0);
    assert_eq!(get(&m, "iesp_target_nop_timeouts_total"), 0.0);
    // Every command the LU counted arrived as a SCSI Command PDU.
    assert_eq!(get(&m, "iesp_target_scsi_commands_total"), count);
    assert!(get(&m, "iesp_target_received_bytes_total") >= (WRITES * 4096) as f64);
    assert!(get(&m, "iesp_target_sent_bytes_total") >= (READS * 4096) as f64);
}

#[tokio::test]
async fn http_errors_are_answered_and_the_endpoint_keeps_serving() {
    let t = start().await;
    let (s, _) = http(t.metrics, "GET /nope HTTP/1.1\r\n\r\n").await;
    assert_eq!(s, "HTTP/1.1 404 Not Found");
    let (s, _) = http(t.metrics, "POST /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(s, "HTTP/1.1 405 Method Not Allowed");
    let (s, _) = http(t.metrics, "garbage\r\n\r\n").await;
    assert_eq!(s, "HTTP/1.1 400 Bad Request");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let (s, _) = http(t.metrics, &huge).await;
    assert_eq!(s, "HTTP/1.1 431 Request Header Fields Too Large");
    let m = scrape(t.metrics).await;
    assert_eq!(get(&m, "iesp_target_connections"), 0.0);
}

#[test]
fn metrics_address_in_use_is_a_usage_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iesp-target"))
        .args(["--listen", "127.0.0.1:0", "--metrics", &addr])
        .output()
        .expect("run iesp-target");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("--metrics {addr}: address already in use")),
        "{err}"
    );
    // Nothing announced before the failure: one line, no banner.
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn non_loopback_endpoints_need_the_flag() {
    for flag in ["--metrics", "--snmp"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_iesp-target"))
            .args(["--listen", "127.0.0.1:0", flag, "0.0.0.0:1"])
            .output()
            .expect("run iesp-target");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--allow-remote-endpoints"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn snmp_address_in_use_is_a_usage_error() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iesp-target"))
        .args(["--listen", "127.0.0.1:0", "--snmp", &addr])
        .output()
        .expect("run iesp-target");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("--snmp {addr}: address already in use")),
        "{err}"
    );
    // Nothing announced before the failure: one line, no banner.
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_off_counts_nothing_and_on_resumes_on_a_live_connection() {
    let t = start().await;
    t.t.target.set_statistics(false);
    let lu_reads = format!(
        "iesp_target_lu_commands_total{{target=\"{}\",lun=\"0\",type=\"read\"}}",
        t.iqn
    );
    let session = Session::login(t.iscsi, LoginOptions::new(ALLOWED, Some(&t.iqn)))
        .await
        .expect("login");
    let lu = session.logical_unit(0).await.expect("LUN 0");
    for i in 0..READS {
        lu.read(i * 8, 8).await.expect("read");
    }
    let m = scrape(t.metrics).await;
    // The login is counted (once per login) and the connection listed ...
    assert_eq!(get(&m, "iesp_target_login_accepts_total"), 1.0);
    assert_eq!(get(&m, "iesp_target_connections"), 1.0);
    // ... but no command, PDU or byte.
    assert_eq!(get(&m, &lu_reads), 0.0);
    for name in [
        "iesp_target_pdus_received_total",
        "iesp_target_pdus_sent_total",
        "iesp_target_received_bytes_total",
        "iesp_target_sent_bytes_total",
        "iesp_target_scsi_commands_total",
    ] {
        assert_eq!(get(&m, name), 0.0, "{name} while statistics are off");
    }
    // Back on: the same connection counts again.
    t.t.target.set_statistics(true);
    for i in 0..READS {
        lu.read(i * 8, 8).await.expect("read");
    }
    let m = scrape(t.metrics).await;
    assert_eq!(get(&m, &lu_reads), READS as f64);
    assert_eq!(get(&m, "iesp_target_scsi_commands_total"), READS as f64);
    assert!(get(&m, "iesp_target_pdus_received_total") >= READS as f64);
    session.logout().await.expect("logout");
}
