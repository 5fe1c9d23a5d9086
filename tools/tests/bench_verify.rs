//! A short `iesp-test bench-verify`: the benchmark runs end to end (fio on
//! a file, iscsi-perf on our target) and reports every figure. Timings are
//! printed, never asserted: the machine is shared and noisy.

mod common;

use common::iesp_test;

#[test]
fn short_benchmark_reports_both_comparisons() {
    let Some(_) = iesp_testsupport::peers::tools_or_skip(&["fio", "iscsi-perf"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let run = iesp_test(&[
        "bench-verify",
        "--size",
        "16M",
        "--io-size",
        "256K",
        "--queue-depth",
        "4",
        "--rounds",
        "1",
        "--lun-size",
        "16M",
        "--seconds",
        "1",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    print!("{}", run.stdout);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["format"], "iesp-test/bench-verify");
    assert_eq!(r["format_version"], 1);
    for side in ["fio", "verify"] {
        for k in ["write_mib_s", "read_mib_s", "write_read_mib_s"] {
            assert!(
                r["file"][side][k].as_f64().unwrap() > 0.0,
                "file.{side}.{k}: {r}"
            );
        }
    }
    assert!(r["file"]["ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(r["file"]["io_size"], 256 << 10);
    assert!(
        r["iscsi"]["iscsi_perf_read_mib_s"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(
        r["iscsi"]["verify"]["read_mib_s"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(run.stdout.contains("verify / fio:"), "{}", run.text());
    assert!(run.stdout.contains("iscsi-perf   read"), "{}", run.text());
}
