//! The real-peer harness against real tgt and libiscsi: two private tgtd
//! instances at once, discovery and INQUIRY through libiscsi's tools,
//! iscsi-test-cu's report, and clean shutdown (no process left behind).
//!
//! Missing tools follow the harness policy: fail under CI, skip elsewhere.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use iesp_testsupport::peers::libiscsi::{self, ReadCapacity16};
use iesp_testsupport::peers::tgt::Tgtd;
use iesp_testsupport::peers::{self, create_sparse_file};

const MIB: u64 = 1 << 20;

/// Whether `pid` still exists (a zombie counts: it was not reaped).
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits briefly for `pid` to disappear: a process we did not spawn
/// ourselves (the watchdog's) is reaped by the harness synchronously, but
/// give the kernel a moment anyway.
fn gone_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !process_exists(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !process_exists(pid)
}

#[test]
fn two_tgtd_instances_serve_their_own_targets_and_stop_cleanly() {
    let Some(_) = peers::tools_or_skip(&["tgtd", "tgtadm", "iscsi-ls", "iscsi-inq"]) else {
        return;
    };

    let mut a = Tgtd::start().expect("start tgtd A");
    let mut b = Tgtd::start().expect("start tgtd B");
    assert_ne!(a.portal(), b.portal());
    assert_ne!(a.control_port(), b.control_port());
    assert!(a.portal().ip().is_loopback() && b.portal().ip().is_loopback());

    let iqn_a = "iqn.2026-11.test.iesp:peers-a";
    let iqn_b = "iqn.2026-11.test.iesp:peers-b";
    for (t, iqn, size) in [(&mut a, iqn_a, 8 * MIB), (&mut b, iqn_b, 16 * MIB)] {
        let file = create_sparse_file(t.dir(), size).expect("backing file");
        t.add_target(1, iqn).expect("add target");
        t.add_file_lun(1, 1, &file).expect("add LUN 1");
        t.bind_all(1).expect("bind");
    }

    // Discovery on each portal lists exactly that instance's target.
    for (t, iqn) in [(&a, iqn_a), (&b, iqn_b)] {
        let out = libiscsi::iscsi_ls(&t.portal_url())
            .and_then(|o| o.ensure_success())
            .unwrap_or_else(|e| panic!("iscsi-ls: {e}\n--- tgtd log ---\n{}", t.log()));
        let targets = libiscsi::parse_iscsi_ls(&out.stdout);
        assert_eq!(targets.len(), 1, "{}", out.stdout);
        assert_eq!(targets[0].iqn, iqn);
        assert!(targets[0].portal.starts_with(&t.portal().to_string()));
        let luns: Vec<u64> = targets[0].luns.iter().map(|(l, _)| *l).collect();
        assert_eq!(luns, [0, 1], "LUN 0 is tgt's controller, the disk is 1");
        assert!(targets[0].luns[1].1.starts_with("DIRECT_ACCESS"));

        let inq = libiscsi::iscsi_inq(&t.url(iqn, 1))
            .unwrap()
            .ensure_success()
            .unwrap();
        assert!(
            inq.stdout.contains("Peripheral Device Type:DIRECT_ACCESS"),
            "{}",
            inq.stdout
        );
        assert!(inq.stdout.contains("Vendor:IET"), "{}", inq.stdout);
    }

    // Each instance serves only its own IQN: the other one is refused.
    let crossed = libiscsi::iscsi_inq(&a.url(iqn_b, 1)).unwrap();
    assert!(
        !crossed.success(),
        "A must not know B's target: {}",
        crossed.combined()
    );

    // The LUN sizes tell the instances apart too.
    let cap_b = libiscsi::iscsi_readcapacity16(&b.url(iqn_b, 1))
        .unwrap()
        .ensure_success()
        .unwrap();
    let cap_b = ReadCapacity16::parse(&cap_b.stdout).expect("readcapacity16 output");
    assert_eq!((cap_b.block_length, cap_b.total_size), (512, 16 * MIB));

    // Dropping stops and reaps tgtd and its watchdog, frees the portal and
    // removes the private directory (socket, lock, log, backing file).
    let mut pids = vec![a.pid(), b.pid()];
    pids.extend(a.watchdog_pid());
    pids.extend(b.watchdog_pid());
    let dirs = [a.dir().to_path_buf(), b.dir().to_path_buf()];
    let portals = [a.portal(), b.portal()];
    assert!(pids.iter().all(|p| process_exists(*p)));
    let started = Instant::now();
    drop(a);
    drop(b);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "graceful stop took {:?}",
        started.elapsed()
    );
    for pid in pids {
        assert!(gone_soon(pid), "process {pid} survived the drop");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    for portal in portals {
        assert!(
            TcpStream::connect_timeout(&portal, Duration::from_secs(1)).is_err(),
            "{portal} still accepts connections"
        );
    }
}

#[test]
fn iscsi_test_cu_inquiry_against_tgt() {
    let Some(_) = peers::tools_or_skip(&["tgtd", "tgtadm", "iscsi-test-cu"]) else {
        return;
    };
    let (tgtd, url) = Tgtd::with_file_lun(64 * MIB).expect("tgtd with a file LUN");

    let report = libiscsi::iscsi_test_cu(&url, "ALL.Inquiry", &[], Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("iscsi-test-cu: {e}\n--- tgtd log ---\n{}", tgtd.log()));
    eprintln!("{}", report.summary_line());

    assert!(report.run > 0, "no test ran:\n{}", report.raw);
    assert_eq!(report.run, report.passed + report.failed, "{}", report.raw);
    assert_eq!(report.cases.len(), report.run, "{}", report.raw);
    assert_eq!(report.failures.len(), report.failed);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    assert!(report.skipped.len() <= report.passed);
    assert!(
        report
            .cases
            .iter()
            .all(|c| c.name.starts_with("ALL.Inquiry."))
    );
    assert!(
        report
            .cases
            .iter()
            .any(|c| c.name == "ALL.Inquiry.Standard")
    );
    // tgt passes standard INQUIRY; a failure here means the harness is off.
    assert!(
        !report.failures.iter().any(|n| n == "ALL.Inquiry.Standard"),
        "{}",
        report.raw
    );
    assert_eq!(
        report.exit_code,
        Some(if report.failed == 0 { 0 } else { 1 })
    );
}

#[test]
fn iscsi_test_cu_reports_a_failed_login_as_an_error() {
    let Some(_) = peers::tools_or_skip(&["tgtd", "tgtadm", "iscsi-test-cu"]) else {
        return;
    };
    let tgtd = Tgtd::start().expect("start tgtd");
    // No such target: login fails before any test runs.
    let url = tgtd.url("iqn.2026-11.test.iesp:no-such-target", 1);
    let err = libiscsi::iscsi_test_cu(&url, "ALL.Inquiry", &[], Duration::from_secs(60))
        .expect_err("a run without login must not look like a report");
    assert!(
        matches!(err, peers::PeerError::Parse { .. }),
        "unexpected error: {err}"
    );
}

#[test]
fn iscsi_perf_measures_tgt() {
    let Some(_) = peers::tools_or_skip(&["tgtd", "tgtadm", "iscsi-perf"]) else {
        return;
    };
    let (_tgtd, url) = Tgtd::with_file_lun(16 * MIB).expect("tgtd with a file LUN");
    let options = libiscsi::PerfOptions {
        seconds: 1,
        ..Default::default()
    };
    let r = libiscsi::iscsi_perf(&url, &options).expect("iscsi-perf");
    eprintln!("iscsi-perf against tgt, QD8 4 KiB random: {} IOPS", r.iops);
    assert!(r.iops > 0.0, "{}", r.raw);
    assert_eq!(r.queue_depth, Some(8));
    assert_eq!(r.transfer_bytes, Some(4096));
}
