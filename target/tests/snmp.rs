//! The SNMP agent read by net-snmp's `snmpget`/`snmpwalk` after a known
//! workload (N writes, one refused login), a wrong community and a SET
//! refused; and malformed datagrams (truncated BER, huge lengths, wrong
//! types, random bytes) that never stop the agent or the iSCSI portal.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use iesp_initiator::{LoginOptions, Session};
use iesp_target::config::TargetConfig;
use iesp_target::server::{Target, serve};
use proptest::prelude::*;

const ALLOWED: &str = "iqn.2026-11.org.iesp-test:snmp-ok";
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

struct Running {
    iscsi: SocketAddr,
    snmp: SocketAddr,
    iqn: String,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn start() -> Running {
    let mut cfg = TargetConfig::default();
    cfg.targets[0].acl = vec![ALLOWED.to_owned()];
    let iqn = cfg.targets[0].iqn.clone();
    let target: Arc<Target> = Target::from_config(&cfg).expect("target");
    let portal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (iscsi, snmp) = (portal.local_addr().unwrap(), sock.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut s1 = stopped.clone();
    tokio::spawn(serve(portal, target.clone(), async move {
        let _ = s1.wait_for(|s| *s).await;
    }));
    let mut s2 = stopped;
    tokio::spawn(iesp_target::snmp::serve_snmp(
        sock,
        target,
        "lab".into(),
        async move {
            let _ = s2.wait_for(|s| *s).await;
        },
    ));
    Running {
        iscsi,
        snmp,
        iqn,
        _stop: stop,
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
    assert!(
        Session::login(
            t.iscsi,
            LoginOptions::new("iqn.2026-11.org.iesp-test:snmp-refused", Some(&t.iqn))
        )
        .await
        .is_err()
    );
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
