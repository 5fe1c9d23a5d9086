//! `--target-metrics URL` on `verify` and `bench`: the reference target's
//! counters read before and after a run against it, shown next to the
//! client's results and written into the JSON reports (`target_metrics`,
//! validated against docs/schemas); an endpoint that cannot be read is
//! exit 3.

mod common;
#[path = "../../testsuite/tests/support/json_schema.rs"]
mod json_schema;

use std::net::SocketAddr;
use std::sync::Arc;

use common::iesp_test;
use iesp_target::config::{Backing, LunSpec, TargetConfig};
use iesp_target::server::{Target, serve};

/// A target with a 4 MiB RAM LUN and its metrics endpoint, on a private
/// runtime; returns the LUN's URL and the metrics URL.
fn start(rt: &tokio::runtime::Runtime) -> (String, String) {
    rt.block_on(async {
        let mut cfg = TargetConfig::default();
        cfg.targets[0].luns = vec![LunSpec {
            backing: Backing::Ram { size: 4 << 20 },
            ..LunSpec::default()
        }];
        let iqn = cfg.targets[0].iqn.clone();
        let target: Arc<Target> = Target::from_config(&cfg).expect("target");
        let portal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (p, m): (SocketAddr, SocketAddr) =
            (portal.local_addr().unwrap(), metrics.local_addr().unwrap());
        tokio::spawn(iesp_target::metrics::serve_metrics(
            metrics,
            target.clone(),
            std::future::pending(),
        ));
        tokio::spawn(serve(portal, target, std::future::pending()));
        (
            format!("iscsi://{p}/{iqn}/0"),
            format!("http://{m}/metrics"),
        )
    })
}

#[test]
fn verify_and_bench_show_the_targets_counters() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (lun, metrics) = start(&rt);
    let dir = tempfile::tempdir().unwrap();
    let verify_json = dir.path().join("verify.json");
    let bench_json = dir.path().join("bench.json");

    // 1 MiB written, then read back.
    let run = iesp_test(&[
        "verify",
        "--write",
        "--seed",
        "3",
        "--length",
        "1M",
        "--json",
        verify_json.to_str().unwrap(),
        "--target-metrics",
        &metrics,
        &lun,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let out = &run.stdout;
    assert!(
        out.contains(&format!("target side ({metrics}):")),
        "{}",
        run.text()
    );
    assert!(out.contains("1048576 bytes written"), "{}", run.text());
    assert!(out.contains(" bytes read, "), "{}", run.text());
    assert!(
        out.contains("target-side errors: 0 (CHECK CONDITION by sense key"),
        "{}",
        run.text()
    );

    let doc = report(&verify_json, "verify.schema.json", &metrics);
    let d = &doc["target_metrics"]["difference"];
    assert_eq!(d["written_bytes"], 1 << 20, "{doc:#}");
    // verify also reads the first blocks before writing (is the target in
    // use?), so the target sent at least what the report counts.
    let read = doc["bytes_read"].as_i64().unwrap();
    assert!(read >= 1 << 20, "{doc:#}");
    assert!(
        d["read_bytes"].as_i64().unwrap() >= read,
        "the target sent less than verify read: {doc:#}"
    );

    let run = iesp_test(&[
        "bench",
        "--runtime",
        "300ms",
        "--qd",
        "2",
        "--bs",
        "4k",
        "--json",
        bench_json.to_str().unwrap(),
        "--target-metrics",
        &metrics,
        &lun,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("target-side errors: 0"),
        "{}",
        run.text()
    );
    assert!(run.stdout.contains("bytes read"), "{}", run.text());
    let doc = report(&bench_json, "bench.schema.json", &metrics);
    let d = &doc["target_metrics"]["difference"];
    let client_bytes: i64 = doc["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes"].as_i64().unwrap())
        .sum();
    // The client counts the measured window only (after the ramp), the
    // target every command: the target saw at least what the client did.
    assert!(client_bytes > 0, "{doc:#}");
    assert!(
        d["read_bytes"].as_i64().unwrap() >= client_bytes,
        "target {} < client {client_bytes}: {doc:#}",
        d["read_bytes"]
    );
}

/// Reads and validates a JSON report; checks that its `target_metrics`
/// names `url`, has no warning and no target-side error, and that its
/// difference is `after - before` for every counter.
fn report(path: &std::path::Path, schema: &str, url: &str) -> serde_json::Value {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json_schema::assert_valid(&json_schema::validator(schema), schema, &doc);
    let t = &doc["target_metrics"];
    assert_eq!(t["url"], url, "{doc:#}");
    assert!(t["warning"].is_null(), "{doc:#}");
    assert_eq!(t["target_errors"], 0, "{doc:#}");
    for k in [
        "commands",
        "read_bytes",
        "written_bytes",
        "rejects",
        "header_digest_errors",
        "data_digest_errors",
        "login_failures",
        "nop_timeouts",
    ] {
        let (b, a, d) = (
            t["before"][k].as_i64().unwrap(),
            t["after"][k].as_i64().unwrap(),
            t["difference"][k].as_i64().unwrap(),
        );
        assert_eq!(a - b, d, "{k}: {doc:#}");
    }
    assert!(t["difference"]["commands"].as_i64().unwrap() > 0, "{doc:#}");
    doc
}

#[test]
fn an_unreadable_endpoint_is_an_io_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let img = common::image(dir.path(), "f.img", 1 << 20);
    let run = iesp_test(&["verify", "--write", "--target-metrics", &url, &img]);
    assert_eq!(run.code, 3, "{}", run.text());
    assert!(run.stderr.contains("--target-metrics"), "{}", run.text());
    let run = iesp_test(&[
        "verify",
        "--write",
        "--target-metrics",
        "https://x/metrics",
        &img,
    ]);
    assert_eq!(run.code, 3, "{}", run.text());
}
