//! The SNMP agent read by net-snmp's `snmpget`/`snmpwalk` after a known
//! workload (N writes, one refused login), a wrong community and a SET
//! refused; and malformed datagrams (truncated BER, huge lengths, wrong
//! types, random bytes) that never stop the agent or the iSCSI portal.

use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use iesp_initiator::{LoginOptions, Session};
use iesp_proto::negotiation::Digest;
use proptest::prelude::*;

const ALLOWED: &str = "iqn.2026-11.org.iesp-test:snmp-ok";
const REFUSED: &str = "iqn.2026-11.org.iesp-test:snmp-refused";
const WRITES: u64 = 3;
const ACCEPTS: &str = ".1.3.6.1.2.1.142.1.6.2.1.1.1.1";
const AUTHORIZE_FAILS: &str = ".1.3.6.1.2.1.142.1.6.2.1.4.1.1";
const LU_WRITES: &str = ".1.3.6.1.4.1.32473.15.1.2.1.4.1";

/// net-snmp's tools, or `None` outside CI when they are missing (under
/// CI=true a missing tool fails the test).
fn snmp_tools() -> Option<()> {
    let ok = Command::new("snmpget").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "snmpget missing under CI (Debian package snmp)"
        );
        eprintln!("skipped: snmpget not installed (apt-get install snmp)");
        return None;
    }
    Some(())
}

#[path = "common/in_process.rs"]
mod in_process;
use in_process::InProcess;

/// A target with its iSCSI portal and SNMP agent (community `lab`), both
/// on ephemeral loopback ports.
struct Running {
    iscsi: SocketAddr,
    snmp: SocketAddr,
    iqn: String,
    t: InProcess,
}

async fn start() -> Running {
    let t = InProcess::start(ALLOWED).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let snmp = sock.local_addr().unwrap();
    tokio::spawn(iesp_target::snmp::serve_snmp(
        sock,
        t.target.clone(),
        "lab".into(),
        t.stopped(),
    ));
    Running {
        iscsi: t.iscsi,
        snmp,
        iqn: t.iqn.clone(),
        t,
    }
}

/// Runs a net-snmp tool with numeric OIDs and no MIB; returns (success,
/// stdout + stderr).
async fn tool(name: &str, args: Vec<String>) -> (bool, String) {
    let mut all: Vec<String> = ["-On", "-M", "", "-m", ""].map(String::from).to_vec();
    all.extend(args);
    tool_raw(name, all).await
}

/// Runs a net-snmp tool through docs/mib/IESP-TARGET-MIB.txt (with
/// stand-ins for the two IETF modules it imports, which Debian lacks).
async fn tool_mib(name: &str, args: Vec<String>) -> (bool, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let dirs = format!("{root}/../docs/mib:{root}/tests/mib-stubs");
    let mut all: Vec<String> = vec!["-M".into(), dirs, "-m".into(), "IESP-TARGET-MIB".into()];
    all.extend(args);
    tool_raw(name, all).await
}

async fn tool_raw(name: &str, args: Vec<String>) -> (bool, String) {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&name)
            .args(["-v2c", "-t", "1", "-r", "0"])
            .args(&args)
            .output()
            .expect("run net-snmp tool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpget_and_snmpwalk_read_the_counters() {
    if snmp_tools().is_none() {
        return;
    }
    let t = start().await;
    let session = Session::login(t.iscsi, LoginOptions::new(ALLOWED, Some(&t.iqn)))
        .await
        .expect("login");
    let lu = session.logical_unit(0).await.expect("LUN 0");
    for i in 0..WRITES {
        lu.write(i * 8, Bytes::from(vec![1u8; 4096]))
            .await
            .expect("write");
    }
    // The refused login on a connection of our own, to know its port.
    let refused = LoginOptions::new(REFUSED, Some(&t.iqn));
    let mut raw = iesp_initiator::login::connect(t.iscsi, &refused)
        .await
        .expect("connect");
    let refused_port = raw.local_addr().port();
    assert!(
        iesp_initiator::login::login(&mut raw, &refused)
            .await
            .is_err()
    );
    drop(raw);
    let agent = t.snmp.to_string();
    let args = |c: &str, oids: &[&str]| -> Vec<String> {
        let mut v = vec!["-c".to_owned(), c.to_owned(), agent.clone()];
        v.extend(oids.iter().map(|s| (*s).to_owned()));
        v
    };

    let (ok, out) = tool(
        "snmpget",
        args("lab", &[ACCEPTS, AUTHORIZE_FAILS, LU_WRITES]),
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{ACCEPTS} = Counter32: 1")), "{out}");
    assert!(
        out.contains(&format!("{AUTHORIZE_FAILS} = Counter32: 1")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{LU_WRITES} = Counter64: {WRITES}")),
        "{out}"
    );

    let (ok, out) = tool("snmpwalk", args("lab", &[".1.3.6.1.4.1.32473.15"])).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(".1.3.6.1.4.1.32473.15.1.1.1.0 = Gauge32: 1"),
        "one connection: {out}"
    );
    assert!(
        out.contains(&format!(
            ".1.3.6.1.4.1.32473.15.1.2.1.2.1 = STRING: \"{}/0\"",
            t.iqn
        )),
        "{out}"
    );
    let (ok, out) = tool("snmpwalk", args("lab", &[".1.3.6.1.2.1.142"])).await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{ACCEPTS} = Counter32: 1")), "{out}");
    // The session's row (instance 1, node 1, iscsiSsnIndex = TSIH): its
    // initiator, and its SCSI commands so far (LUN open + the writes).
    let ssn = out
        .lines()
        .find(|l| l.starts_with(".1.3.6.1.2.1.142.1.10.1.1.4.1.1."))
        .unwrap_or_else(|| panic!("no iscsiSsnInitiatorName: {out}"));
    assert!(ssn.ends_with(&format!("STRING: \"{ALLOWED}\"")), "{ssn}");
    let tsih = ssn
        .split(" = ")
        .next()
        .and_then(|o| o.rsplit('.').next())
        .unwrap();
    let cmds = format!(".1.3.6.1.2.1.142.1.10.2.1.1.1.1.{tsih} = Counter32: ");
    let n: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix(&cmds))
        .unwrap_or_else(|| panic!("no iscsiSsnCmdPDUs: {out}"))
        .parse()
        .unwrap();
    assert!(n > WRITES, "{n} commands");
    attribute_tables_match_the_configuration(&out, &t, &session, tsih);
    failure_authorization_and_times(&out, tsih, refused_port);
    // sysUpTime, the origin of those TimeStamps, is outside mib-2.142.
    let (ok, up) = tool("snmpget", args("lab", &[".1.3.6.1.2.1.1.3.0"])).await;
    assert!(ok, "{up}");
    let up = up
        .trim()
        .strip_prefix(".1.3.6.1.2.1.1.3.0 = Timeticks: (")
        .and_then(|r| r.split(')').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("sysUpTime: {up}"));
    let last_failure: u64 = walked(&out, ".1.3.6.1.2.1.142.1.6.1.1.2.1.1")
        .strip_prefix("Timeticks: (")
        .and_then(|r| r.split(')').next())
        .and_then(|v| v.parse().ok())
        .expect("iscsiTgtLastFailureTime");
    assert!(last_failure <= up, "failure at {last_failure}, now {up}");
    // The identity the authorization row points at: IPS-AUTH-MIB's
    // instance 1, identity 1, whose one name is the ACL's initiator.
    let (ok, auth) = tool("snmpwalk", args("lab", &[".1.3.6.1.2.1.141"])).await;
    assert!(ok, "{auth}");
    let expect_auth = [
        (
            ".1.3.6.1.2.1.141.1.2.2.1.2.1",
            "STRING: \"iesp-target initiator ACLs\"".to_owned(),
        ),
        (".1.3.6.1.2.1.141.1.2.2.1.3.1", "INTEGER: 5".to_owned()),
        (
            ".1.3.6.1.2.1.141.1.3.1.1.2.1.1",
            format!("STRING: \"initiator {ALLOWED}\""),
        ),
        (".1.3.6.1.2.1.141.1.3.1.1.3.1.1", "INTEGER: 1".to_owned()),
        (".1.3.6.1.2.1.141.1.3.1.1.4.1.1", "INTEGER: 5".to_owned()),
        (
            ".1.3.6.1.2.1.141.1.4.1.1.2.1.1.1",
            format!("STRING: \"{ALLOWED}\""),
        ),
        (".1.3.6.1.2.1.141.1.4.1.1.3.1.1.1", "INTEGER: 1".to_owned()),
        (".1.3.6.1.2.1.141.1.4.1.1.4.1.1.1", "INTEGER: 5".to_owned()),
    ];
    for (oid, want) in &expect_auth {
        assert_eq!(walked(&auth, oid), want, "{oid}");
    }
    assert_eq!(
        auth.lines()
            .filter(|l| l.starts_with(".1.3.6.1.2.1.141."))
            .count(),
        expect_auth.len(),
        "nothing else under IPS-AUTH-MIB: {auth}"
    );

    // Through the MIB file: names in, names out.
    let (ok, out) = tool_mib(
        "snmpget",
        args(
            "lab",
            &[
                "IESP-TARGET-MIB::iespLuWrites.1",
                "IESP-TARGET-MIB::iespLoginFailures.0",
            ],
        ),
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "IESP-TARGET-MIB::iespLuWrites.1 = Counter64: {WRITES}"
        )),
        "{out}"
    );
    assert!(
        out.contains("IESP-TARGET-MIB::iespLoginFailures.0 = Counter64: 1"),
        "{out}"
    );
    let (ok, out) = tool_mib("snmpwalk", args("lab", &["IESP-TARGET-MIB::iespLuTable"])).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "IESP-TARGET-MIB::iespLuName.1 = STRING: \"{}/0\"",
            t.iqn
        )),
        "{out}"
    );
    assert!(
        out.contains("IESP-TARGET-MIB::iespLuInFlight.1 = Gauge32: 0"),
        "{out}"
    );

    // Counting off and on again: a discontinuity of the instance's and
    // the session's counters, at the same moment; none for the node's.
    t.t.target.set_statistics(false);
    t.t.target.set_statistics(true);
    let inst = ".1.3.6.1.2.1.142.1.1.1.1.13.1";
    let ssn = format!(".1.3.6.1.2.1.142.1.10.1.1.21.1.1.{tsih}");
    let node = ".1.3.6.1.2.1.142.1.5.1.1.17.1.1";
    let (ok, out) = tool("snmpget", args("lab", &[inst, &ssn, node])).await;
    assert!(ok, "{out}");
    let at = walked(&out, inst);
    assert_ne!(at, "Timeticks: (0) 0:00:00.00", "{out}");
    assert_eq!(walked(&out, &ssn), at, "{out}");
    assert_eq!(walked(&out, node), "Timeticks: (0) 0:00:00.00", "{out}");

    // A wrong community gets no answer at all.
    let (ok, out) = tool("snmpget", args("public", &[ACCEPTS])).await;
    assert!(!ok && out.contains("Timeout"), "{out}");
    // SET is refused.
    let mut set = args("lab", &[LU_WRITES]);
    set.extend(["i".to_owned(), "5".to_owned()]);
    let (ok, out) = tool("snmpset", set).await;
    assert!(!ok && out.contains("noAccess"), "{out}");
    session.logout().await.expect("logout");
}

/// The value net-snmp printed for exactly `oid` in a walk, trimmed.
fn walked<'a>(out: &'a str, oid: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(oid)?.strip_prefix(" = "))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {oid} in the walk:\n{out}"))
}

/// RFC 4544's portal, target-portal, node and connection attribute rows
/// in the walk `out` of mib-2.142, against the target's configuration and
/// the session's own view of its connection.
fn attribute_tables_match_the_configuration(out: &str, t: &Running, session: &Session, tsih: &str) {
    let l = &t.t.target.limits;
    let truth = |b: bool| format!("INTEGER: {}", if b { 1 } else { 2 });
    let g = |v: u32| format!("Gauge32: {v}");
    let loopback = "Hex-STRING: 7F 00 00 01";
    let (primary, secondary) = if l.digests { (4, 3) } else { (3, 1) };
    // iscsiInstPortalNumber: one portal.
    assert_eq!(walked(out, ".1.3.6.1.2.1.142.1.1.1.1.7.1"), g(1));
    // iscsiPortalAttributesEntry, instance 1, portal 1.
    let portal = |col: u32| walked(out, &format!(".1.3.6.1.2.1.142.1.2.1.1.{col}.1.1"));
    let expect_portal = [
        (2, "INTEGER: 1".to_owned()),     // RowStatus active
        (3, "Hex-STRING: 80".to_owned()), // Roles: targetTypePortal
        (4, "INTEGER: 1".to_owned()),     // ipv4
        (5, loopback.to_owned()),
        (6, g(6)), // TCP
        (7, g(l.max_recv_data_segment_length)),
        (8, format!("INTEGER: {primary}")),
        (9, format!("INTEGER: {primary}")),
        (10, format!("INTEGER: {secondary}")),
        (11, format!("INTEGER: {secondary}")),
        (12, truth(false)),
        (13, "INTEGER: 5".to_owned()), // StorageType readOnly
        (14, format!("STRING: \"iSCSI portal {}\"", t.iscsi)),
    ];
    for (col, want) in expect_portal {
        assert_eq!(portal(col), want, "iscsiPortalAttributesEntry column {col}");
    }
    // iscsiTgtPortalAttributesEntry: port and portal group tag, node 0.
    let tgt_portal = |col: u32| walked(out, &format!(".1.3.6.1.2.1.142.1.3.1.1.{col}.1.1.0"));
    assert_eq!(tgt_portal(2), g(u32::from(t.iscsi.port())));
    assert_eq!(tgt_portal(3), g(u32::from(t.t.target.portal_group_tag)));
    // iscsiNodeAttributesEntry, instance 1, node 1.
    let node = |col: u32| walked(out, &format!(".1.3.6.1.2.1.142.1.5.1.1.{col}.1.1"));
    let expect_node = [
        (2, format!("STRING: \"{}\"", t.iqn)),
        (3, "STRING: \"endpoint test\"".to_owned()),
        (4, "Hex-STRING: 80".to_owned()), // Roles: targetTypeNode
        (6, truth(l.initial_r2t)),
        (7, truth(l.immediate_data)),
        (8, g(l.max_outstanding_r2t)),
        (9, g(l.first_burst_length)),
        (10, g(l.max_burst_length)),
        (11, g(u32::from(l.max_connections_per_session))),
        (12, truth(true)),
        (13, truth(true)),
        (14, g(2)),
        (15, g(20)),
        (16, g(0)),
        (18, "INTEGER: 5".to_owned()),
    ];
    for (col, want) in expect_node {
        assert_eq!(node(col), want, "iscsiNodeAttributesEntry column {col}");
    }
    // iscsiConnectionAttributesEntry: instance 1, node 1, the session
    // (iscsiSsnIndex = TSIH), connection 1.
    let outcome = session.login_outcome();
    assert_eq!(tsih, outcome.tsih.to_string());
    let p = session.params();
    let digest = |d: Digest| format!("INTEGER: {}", if d == Digest::Crc32c { 4 } else { 3 });
    let cxn = |col: u32| {
        walked(
            out,
            &format!(".1.3.6.1.2.1.142.1.11.1.1.{col}.1.1.{tsih}.1"),
        )
    };
    let expect_cxn = [
        (2, g(u32::from(outcome.cid))),
        (3, "INTEGER: 2".to_owned()), // full feature phase
        (4, "INTEGER: 1".to_owned()),
        (5, loopback.to_owned()),
        (6, g(6)),
        (7, g(u32::from(t.iscsi.port()))),
        (8, loopback.to_owned()),
        (9, g(u32::from(session.local_addr().port()))),
        (10, g(p.target_mrdsl)),
        (11, g(p.initiator_mrdsl)),
        (12, digest(p.header_digest)),
        (13, digest(p.data_digest)),
        (14, truth(false)),
        (15, truth(false)),
        (16, g(0)),
    ];
    for (col, want) in expect_cxn {
        assert_eq!(
            cxn(col),
            want,
            "iscsiConnectionAttributesEntry column {col}"
        );
    }
}

/// The RFC 4544 objects beyond the attribute tables, in the walk `out` of
/// mib-2.142 after one accepted and one refused login (initiator REFUSED
/// from local port `refused_port`), and the IPS-AUTH-MIB identity the
/// authorization row points at.
fn failure_authorization_and_times(out: &str, tsih: &str, refused_port: u16) {
    let zero_dot_zero = "OID: .0.0";
    // iscsiNodeTransportType: no SCSI-MIB row to point at.
    assert_eq!(walked(out, ".1.3.6.1.2.1.142.1.5.1.1.5.1.1"), zero_dot_zero);
    // Discontinuities: statistics were never turned off, so the instance
    // and the node have none, and the session's is its login.
    assert_eq!(
        walked(out, ".1.3.6.1.2.1.142.1.1.1.1.13.1"),
        "Timeticks: (0) 0:00:00.00"
    );
    assert_eq!(
        walked(out, ".1.3.6.1.2.1.142.1.5.1.1.17.1.1"),
        "Timeticks: (0) 0:00:00.00"
    );
    let ssn = walked(out, &format!(".1.3.6.1.2.1.142.1.10.1.1.21.1.1.{tsih}"));
    assert!(ssn.starts_with("Timeticks: ("), "{ssn}");
    // iscsiTargetAttributesEntry, node 1: one failure, an authorization
    // failure by REFUSED from 127.0.0.1:refused_port.
    let tgt = |col: u32| walked(out, &format!(".1.3.6.1.2.1.142.1.6.1.1.{col}.1.1"));
    assert_eq!(tgt(1), "Counter32: 1");
    assert!(tgt(2).starts_with("Timeticks: ("), "{}", tgt(2));
    // The OID of iscsiTgtLoginAuthorizeFails.
    assert_eq!(tgt(3), "OID: .1.3.6.1.2.1.142.1.6.2.1.4");
    assert_eq!(tgt(4), format!("STRING: \"{REFUSED}\""));
    assert_eq!(tgt(5), "INTEGER: 1");
    assert_eq!(tgt(6), "Hex-STRING: 7F 00 00 01");
    assert_eq!(tgt(7), format!("Gauge32: {refused_port}"));
    // iscsiTgtAuthAttributesEntry: node 1's one ACL entry, active,
    // pointing at IPS-AUTH-MIB's ipsAuthIdentDescription.1.1.
    let auth = |col: u32| walked(out, &format!(".1.3.6.1.2.1.142.1.7.1.1.{col}.1.1.1"));
    assert_eq!(auth(2), "INTEGER: 1");
    assert_eq!(auth(3), "OID: .1.3.6.1.2.1.141.1.3.1.1.2.1.1");
    assert_eq!(auth(4), "INTEGER: 5");
    assert!(
        !out.contains(".1.3.6.1.2.1.142.1.7.1.1.2.1.1.2 "),
        "one ACL entry, one row: {out}"
    );
}

/// A valid GetRequest for `oid` with community `lab`.
fn get_request() -> Vec<u8> {
    use iesp_target::snmp::ber;
    let mut vb = Vec::new();
    ber::put(
        &mut vb,
        ber::OID,
        &ber::oid_bytes(&[1, 3, 6, 1, 2, 1, 142, 1, 6, 2, 1, 1, 1, 1]),
    );
    ber::put(&mut vb, ber::NULL, &[]);
    let mut list = Vec::new();
    ber::put(&mut list, ber::SEQUENCE, &vb);
    let mut pdu = Vec::new();
    for v in [7i64, 0, 0] {
        ber::put(&mut pdu, ber::INTEGER, &ber::int_bytes(v));
    }
    ber::put(&mut pdu, ber::SEQUENCE, &list);
    let mut msg = Vec::new();
    ber::put(&mut msg, ber::INTEGER, &[1]);
    ber::put(&mut msg, ber::OCTETS, b"lab");
    ber::put(&mut msg, 0xa0, &pdu);
    let mut out = Vec::new();
    ber::put(&mut out, ber::SEQUENCE, &msg);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Truncations, byte flips and random bytes: `answer` never panics.
    #[test]
    fn malformed_packets_never_panic(
        cut in 0usize..64,
        flips in proptest::collection::vec((0usize..64, any::<u8>()), 0..6),
        junk in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let mut p = get_request();
        for (at, b) in flips {
            let n = p.len();
            p[at % n] = b;
        }
        p.truncate(p.len().saturating_sub(cut % 8));
        let _ = iesp_target::snmp::answer(&p, "lab", Vec::new);
        let _ = iesp_target::snmp::answer(&junk, "lab", Vec::new);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_leave_the_agent_and_iscsi_serving() {
    let t = start().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let good = get_request();
    let mut packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x30],
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        vec![0x30, 0x80, 0, 0],
        vec![0x02, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        vec![0xff; 1500],
    ];
    for n in 0..good.len() {
        packets.push(good[..n].to_vec());
    }
    let mut wrong_type = good.clone();
    wrong_type[2] = 0x04; // version as OCTET STRING
    packets.push(wrong_type);
    for p in &packets {
        sock.send_to(p, t.snmp).await.unwrap();
    }
    // The agent still answers a valid request ...
    sock.send_to(&good, t.snmp).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("the agent answers after the garbage")
        .unwrap();
    assert_eq!(buf[0], 0x30, "a response message");
    assert!(n > 20);
    // ... and the target still serves iSCSI.
    let session = Session::login(t.iscsi, LoginOptions::new(ALLOWED, Some(&t.iqn)))
        .await
        .expect("login after the garbage");
    let lu = session.logical_unit(0).await.expect("LUN 0");
    lu.read(0, 8).await.expect("read");
    session.logout().await.expect("logout");
}
