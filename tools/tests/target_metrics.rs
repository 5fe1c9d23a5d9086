//! `--target-metrics URL` on `verify` and `bench`: the reference target's
//! counters read before and after a run against it, shown next to the
//! client's results; an endpoint that cannot be read is exit 3.

mod common;

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

    // 1 MiB written, then read back.
    let run = iesp_test(&[
        "verify",
        "--write",
        "--seed",
        "3",
        "--length",
        "1M",
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

    let run = iesp_test(&[
        "bench",
        "--runtime",
        "300ms",
        "--qd",
        "2",
        "--bs",
        "4k",
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
