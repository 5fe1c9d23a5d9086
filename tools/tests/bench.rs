//! `iesp-test bench` for real: against our target (embedded, RAM LUN),
//! against tgt, on a file (mixed reads and writes, --matrix), and on the
//! in-memory device through the library. Checks the JSON against
//! docs/schemas/bench.schema.json, the CSV's column order (fio's log
//! columns first), that `.dat` output is the old `bs<TAB>threads<TAB>value`
//! format, that `bench merge` of two runs equals one run over both halves,
//! and that bad input fails before any I/O with a clear message and exit 2.

mod common;

#[path = "../../testsuite/tests/support/json_schema.rs"]
mod json_schema;

use std::path::Path;
use std::sync::Arc;

use common::{iesp_test, image, read_json};
use iesp_testsupport::BlockingTarget;

/// Short points: the CI budget is small.
const RUNTIME: &str = "300ms";

fn validate(doc: &serde_json::Value, what: &str) {
    json_schema::assert_valid(&json_schema::validator("bench.schema.json"), what, doc);
}

/// The old format: each line `bs<TAB>threads<TAB>value`, three numbers.
fn parse_dat(path: &Path) -> Vec<(u64, u32, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "not `bs\\tthreads\\tvalue`: {l:?}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn our_target_json_csv_and_dat() {
    let target = BlockingTarget::ram(16 << 20, 512);
    let url = target.url(0);
    let dir = tempfile::tempdir().unwrap();
    let (json, csv, dat) = (
        dir.path().join("r.json"),
        dir.path().join("r.csv"),
        dir.path().join("r.dat"),
    );
    let run = iesp_test(&[
        "bench",
        "--qd",
        "1,8",
        "--bs",
        "512,4k",
        "--runtime",
        RUNTIME,
        "--floor",
        "--seed",
        "5",
        "--json",
        json.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--dat",
        dat.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.stdout.contains("IOPS") && run.stdout.contains("floor: bare TCP"),
        "{}",
        run.text()
    );
    let doc = read_json(&json);
    validate(&doc, "bench --json against our target");
    assert_eq!(doc["schema"], "iesp-test/bench/1");
    assert_eq!(doc["seed"], 5);
    assert_eq!(
        run.stdout.lines().next(),
        Some("bench: seed 5"),
        "the seed comes first: {}",
        run.text()
    );
    assert_eq!(doc["targets"][0]["kind"], "iscsi-lun");
    let points = doc["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    for p in points {
        assert!(p["ops"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["errors"], 0);
        let l = &p["latency_us"];
        let v = |k: &str| l[k].as_f64().unwrap();
        assert!(
            v("min") <= v("p50") && v("p50") <= v("p99") && v("p99") <= v("max"),
            "{l}"
        );
        assert!(p["cpu_us_per_io"].as_f64().unwrap() > 0.0);
        assert!(!p["series"].as_array().unwrap().is_empty());
    }
    assert_eq!(
        (points[1]["bs"].as_u64(), points[1]["qd"].as_u64()),
        (Some(512), Some(8))
    );
    assert!(doc["floor"]["round_trips_per_s"].as_f64().unwrap() > 0.0);

    // CSV: fio's log columns first, in fio's order, then ours.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "time_ms,iops,ddir,bs,offset,prio,lat_mean_us,lat_p99_us,mib_s,target,qd,jobs"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.len() >= 4, "{text}");
    let mut last = 0u64;
    for r in &rows {
        assert_eq!(r.len(), 12, "{r:?}");
        let t: u64 = r[0].parse().unwrap();
        assert!(t > last && t % 1000 == 0, "time_ms runs on: {text}");
        last = t;
        assert!(r[1].parse::<f64>().unwrap() > 0.0);
        assert_eq!(r[2], "0", "reads are fio's direction 0");
        assert!(r[3] == "512" || r[3] == "4096");
        assert_eq!((r[4], r[5]), ("0", "0"));
    }

    // .dat: the old format, one line per point, threads = jobs × qd.
    let d = parse_dat(&dat);
    assert_eq!(
        d.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        [(512, 1), (512, 8), (4096, 1), (4096, 8)]
    );
    assert!(d.iter().all(|r| r.2 > 0.0));
    // and plot reads it as a legacy file.
    let charts = dir.path().join("charts");
    let run = iesp_test(&[
        "plot",
        dat.to_str().unwrap(),
        json.to_str().unwrap(),
        csv.to_str().unwrap(),
        "-o",
        charts.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    for f in [
        "iops-vs-qd.png",
        "latency-cdf.png",
        "iops-over-time.png",
        "p99-over-time.png",
        "heatmap.png",
    ] {
        assert!(charts.join(f).exists(), "{f}: {}", run.text());
    }
    target.stop();
}

#[test]
fn tgt_and_compare_with_our_target() {
    let Some(_) = iesp_testsupport::peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
        return;
    };
    let (tgtd, tgt_url) = iesp_testsupport::peers::tgt::Tgtd::with_file_lun(16 << 20).unwrap();
    let ours = BlockingTarget::ram(16 << 20, 512);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("c.json");
    // The sessions of both targets on the command's runtime (the default
    // is a thread per session: the other tests).
    let run = iesp_test(&[
        "bench",
        "--shared-runtime",
        "--qd",
        "4",
        "--sessions",
        "2",
        "--runtime",
        RUNTIME,
        "--seed",
        "1",
        "--json",
        json.to_str().unwrap(),
        &ours.url(0),
        "--compare",
        &tgt_url,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let doc = read_json(&json);
    validate(&doc, "bench --compare tgt");
    assert_eq!(doc["targets"].as_array().unwrap().len(), 2);
    let points = doc["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert!(
        points
            .iter()
            .all(|p| p["ops"].as_u64().unwrap() > 0 && p["jobs"] == 2 && p["errors"] == 0)
    );
    assert!(
        points[1]["target"].as_str().unwrap().contains("tgt"),
        "{}",
        points[1]["target"]
    );
    let r = &doc["ratios"][0];
    assert!(r["iops_ratio"].as_f64().unwrap() > 0.0, "{r}");
    assert!(run.stdout.contains("compare:"), "{}", run.text());
    drop(tgtd);
    ours.stop();
}

#[test]
fn a_file_with_mixed_writes_and_the_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "f.img", 8 << 20);
    let json = dir.path().join("w.json");
    // Writes need --write.
    let run = iesp_test(&["bench", "--rw", "randrw", "--runtime", RUNTIME, &img]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("--write"), "{}", run.text());
    let run = iesp_test(&[
        "bench",
        "--rw",
        "randrw",
        "--rwmix",
        "70",
        "--write",
        "--qd",
        "4",
        "--threads",
        "--sessions",
        "2",
        "--runtime",
        RUNTIME,
        "--json",
        json.to_str().unwrap(),
        &img,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let doc = read_json(&json);
    validate(&doc, "bench randrw on a file");
    let p = &doc["points"][0];
    assert_eq!(doc["targets"][0]["kind"], "file");
    let (r, w) = (p["reads"].as_u64().unwrap(), p["writes"].as_u64().unwrap());
    assert!(r > w && w > 0, "70% reads: {r} reads, {w} writes");
    // What bench wrote is iesp-test's own data: a second write run needs
    // no --force. Bytes of anyone else's are refused, untouched.
    let again = [
        "bench",
        "--rw",
        "randwrite",
        "--write",
        "--runtime",
        RUNTIME,
    ];
    let run = iesp_test(&[&again[..], &[&img]].concat());
    assert_eq!(run.code, 0, "{}", run.text());
    let foreign = dir.path().join("foreign.img");
    std::fs::write(&foreign, vec![0x5a; 1 << 20]).unwrap();
    let run = iesp_test(&[&again[..], &[foreign.to_str().unwrap()]].concat());
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("holds data"), "{}", run.text());
    assert_eq!(std::fs::read(&foreign).unwrap(), vec![0x5a; 1 << 20]);

    // The old script's shape: block size × synchronous jobs.
    let dat = dir.path().join("m.dat");
    let run = iesp_test(&[
        "bench",
        "--matrix",
        "--bs",
        "4k,16k",
        "--jobs",
        "1,2",
        "--runtime",
        "200ms",
        "--dat",
        dat.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        &img,
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let d = parse_dat(&dat);
    assert_eq!(
        d.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        [(4096, 1), (4096, 2), (16384, 1), (16384, 2)]
    );
    let doc = read_json(&json);
    validate(&doc, "bench --matrix");
    assert!(
        doc["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["sync"] == true && p["qd"] == 1)
    );
}

#[test]
fn the_in_memory_device_through_the_library() {
    use iesp_blockio::AnyDevice;
    use iesp_blockio::mem::MemDevice;
    use iesp_tools::bench::{Options, Rw, run_on};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dev = Arc::new(AnyDevice::from(MemDevice::new(4096, 512)));
    let mut opts = Options {
        qds: vec![1, 16],
        bss: vec![4096],
        runtime: std::time::Duration::from_millis(200),
        seed: 3,
        ..Options::default()
    };
    let body = rt
        .block_on(run_on(&opts, vec![("mem".into(), vec![dev.clone()])]))
        .unwrap();
    assert_eq!(body.targets[0].kind, "memory");
    assert_eq!(body.points.len(), 2);
    assert!(
        body.points
            .iter()
            .all(|p| p.ops > 0 && p.errors == 0 && p.target == "mem")
    );
    assert!(body.points[1].latency().unwrap().count() == body.points[1].ops);
    // Threads per job, writes.
    opts.threads = true;
    opts.sessions = 2;
    opts.rw = Rw::RandWrite;
    assert!(
        rt.block_on(run_on(&opts, vec![("mem".into(), vec![dev.clone()])]))
            .is_err(),
        "writes need open.write"
    );
    opts.open.write = true;
    let body = rt
        .block_on(run_on(&opts, vec![("mem".into(), vec![dev])]))
        .unwrap();
    assert!(
        body.points
            .iter()
            .all(|p| p.writes == p.ops && p.ops > 0 && p.jobs == 2)
    );
}

/// Runs recorded in two halves and merged equal one run over both.
#[test]
fn merge_of_two_halves_equals_one_run() {
    use iesp_plots::data::{BenchBody, PointMeta, Recorder, TargetInfo};
    let lat: Vec<u64> = (0..20_000u64)
        .map(|i| 30_000 + (i * 104_729) % 900_000)
        .collect();
    let (mut a, mut b, mut all) = (Recorder::new(), Recorder::new(), Recorder::new());
    for (i, &ns) in lat.iter().enumerate() {
        let sec = (i % 3) as u32;
        if i < lat.len() / 2 {
            a.record(sec, ns, 4096, false, true)
        } else {
            b.record(sec, ns, 4096, false, true)
        }
        all.record(sec, ns, 4096, false, true);
    }
    let meta = PointMeta {
        target: "t".into(),
        rw: "randread".into(),
        bs: 4096,
        qd: 8,
        jobs: 1,
        sync: false,
    };
    let body = |p| BenchBody {
        targets: vec![TargetInfo {
            name: "t".into(),
            kind: "memory".into(),
            block_size: 512,
            blocks: 1 << 20,
            direct_io: false,
        }],
        rw: "randread".into(),
        rwmix_read: 50,
        runtime_s: 3.0,
        ramp_s: 0.0,
        worker: None,
        floor: None,
        points: vec![p],
        ratios: vec![],
        merged_from: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let env = iesp_cli::envelope::Envelope::new("bench", 1, None, vec![]);
    let (pa, pb, pm) = (
        dir.path().join("a.json"),
        dir.path().join("b.json"),
        dir.path().join("m.json"),
    );
    env.write(&pa, &body(a.finish(meta.clone(), 3.0, 0.5)))
        .unwrap();
    env.write(&pb, &body(b.finish(meta.clone(), 3.0, 0.25)))
        .unwrap();
    let run = iesp_test(&[
        "bench",
        "merge",
        pa.to_str().unwrap(),
        pb.to_str().unwrap(),
        "--json",
        pm.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let doc = read_json(&pm);
    validate(&doc, "bench merge");
    let merged: iesp_plots::data::Point = serde_json::from_value(doc["points"][0].clone()).unwrap();
    let one = all.finish(meta, 3.0, 0.75);
    assert_eq!(merged.ops, one.ops);
    assert_eq!(merged.bytes, one.bytes);
    assert_eq!(merged.latency_us, one.latency_us);
    assert_eq!(merged.latency().unwrap(), one.latency().unwrap());
    assert_eq!(merged.histogram, one.histogram);
    assert!(
        (merged.iops - one.iops).abs() < 1e-6,
        "{} {}",
        merged.iops,
        one.iops
    );
    assert!((merged.cpu_us_per_io - one.cpu_us_per_io).abs() < 1e-9);
    assert_eq!(
        merged
            .series
            .iter()
            .map(|s| (s.t, s.ops, s.bytes))
            .collect::<Vec<_>>(),
        one.series
            .iter()
            .map(|s| (s.t, s.ops, s.bytes))
            .collect::<Vec<_>>()
    );
    for (m, o) in merged.series.iter().zip(&one.series) {
        assert!((m.mean_us - o.mean_us).abs() < 1e-6, "{m:?} {o:?}");
    }
    assert_eq!(doc["merged_from"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_input_fails_before_any_io() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "b.img", 1 << 20);
    // QD 0.
    let run = iesp_test(&["bench", "--qd", "0", &img]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("--qd") && run.stderr.contains('0'),
        "{}",
        run.text()
    );
    // --matrix always has a thread per job.
    let run = iesp_test(&["bench", "--matrix", "--shared-runtime", &img]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("--shared-runtime"), "{}", run.text());
    // A busy-poll budget out of range, or not a number.
    for bad in ["1001", "-1", "fast", "4294967296"] {
        let run = iesp_test(&["bench", &format!("--poll-us={bad}"), &img]);
        assert_eq!(run.code, 2, "--poll-us {bad}: {}", run.text());
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains("--poll-us"),
            "--poll-us {bad}: {}",
            run.text()
        );
    }
    // A block size that is not a multiple of the LUN's.
    let target = BlockingTarget::ram(4 << 20, 4096);
    let run = iesp_test(&["bench", "--bs", "512", "--runtime", RUNTIME, &target.url(0)]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("--bs 512: not a multiple of")
            && run.stderr.contains("4096-byte blocks"),
        "{}",
        run.text()
    );
    assert!(
        !run.stdout.contains("IOPS"),
        "nothing measured: {}",
        run.text()
    );
    target.stop();
    // An output that cannot be written (its directory is a file).
    let bad = format!("{img}/r.json");
    let run = iesp_test(&["bench", "--json", &bad, &img]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("--json"), "{}", run.text());
    // Plot: an unreadable input, a wrong-format input (file and line), an
    // output directory that cannot be written.
    let out = dir.path().join("charts");
    let run = iesp_test(&["plot", "/nonexistent/x.json", "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr.contains("/nonexistent/x.json: cannot read"),
        "{}",
        run.text()
    );
    let junk = dir.path().join("junk.dat");
    std::fs::write(&junk, "4096\t1\t100\n4096\t2\n").unwrap();
    let run = iesp_test(&["plot", junk.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("junk.dat:2:"), "{}", run.text());
    let good = dir.path().join("good.dat");
    std::fs::write(&good, "4096\t1\t100\n4096\t2\t180\n").unwrap();
    let run = iesp_test(&[
        "plot",
        good.to_str().unwrap(),
        "-o",
        &format!("{img}/charts"),
    ]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(run.stderr.contains("-o "), "{}", run.text());
    assert!(!out.exists(), "nothing written");
}

/// `bench merge` adds only halves of one sweep: real `--worker 0/2` and
/// `1/2` runs merge; a run of another sweep (queue depths, block sizes,
/// rw, target), the same file twice (by path, a copy, the same JSON
/// rewritten) and the same worker share twice are refused with one line
/// naming both files and what differs, exit 2, before anything is written.
#[test]
fn merge_refuses_other_sweeps_and_the_same_run_twice() {
    let (t, other) = (
        BlockingTarget::ram(16 << 20, 512),
        BlockingTarget::ram(16 << 20, 512),
    );
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let bench = |name: &str, qd: &str, extra: &[&str], url: &str| {
        let json = p(name);
        let base = ["bench", "--runtime", "200ms", "--qd", qd, "--json", &json];
        let run = iesp_test(&[&base[..], extra, &[url]].concat());
        assert_eq!(run.code, 0, "{name}: {}", run.text());
    };
    let url = t.url(0);
    let half = ["--worker", "1/2"];
    bench("a.json", "1,4", &["--worker", "0/2"], &url);
    bench("b.json", "1,4", &half, &url);
    bench("b-again.json", "1,4", &half, &url);
    bench("qd.json", "1,8", &half, &url);
    bench(
        "bs.json",
        "1,4",
        &[&half[..], &["--bs", "8k"]].concat(),
        &url,
    );
    let rw = ["--rw", "randwrite", "--write"];
    bench("rw.json", "1,4", &[&half[..], &rw].concat(), &url);
    bench("tgt.json", "1,4", &half, &other.url(0));
    t.stop();
    other.stop();

    // The legitimate merge: the halves' commands add up.
    let run = iesp_test(&[
        "bench",
        "merge",
        &p("a.json"),
        &p("b.json"),
        "--json",
        &p("m.json"),
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    let ops = |f: &str| -> Vec<u64> {
        read_json(Path::new(&p(f)))["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["ops"].as_u64().unwrap())
            .collect()
    };
    let (a, b, m) = (ops("a.json"), ops("b.json"), ops("m.json"));
    assert_eq!(m, [a[0] + b[0], a[1] + b[1]]);

    // A copy, and the same document rewritten (other bytes, same run).
    std::fs::copy(p("a.json"), p("copy.json")).unwrap();
    let doc = read_json(Path::new(&p("a.json")));
    std::fs::write(p("compact.json"), serde_json::to_string(&doc).unwrap()).unwrap();
    let dot = format!("{}/./a.json", dir.path().display());
    let refused = |x: &str, y: &str, what: &str| {
        let out = p("never.json");
        let run = iesp_test(&["bench", "merge", x, y, "--json", &out]);
        assert_eq!(run.code, 2, "{x} {y}: {}", run.text());
        let line = run.stderr.trim_end();
        assert!(
            line.starts_with("iesp-test: error: bench merge: ")
                && line.contains(x)
                && line.contains(y)
                && line.contains(what),
            "{x} {y}: want {what:?}: {}",
            run.text()
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.text());
        assert!(!Path::new(&out).exists(), "nothing written");
        assert!(!run.stdout.contains("IOPS"), "{}", run.text());
    };
    let (pa, pb) = (p("a.json"), p("b.json"));
    refused(&pa, &pa, "the same file, given twice");
    refused(&pa, &dot, "the same file, given twice");
    refused(
        &pa,
        &p("copy.json"),
        "the same run (identical contents), given twice",
    );
    refused(&pa, &p("compact.json"), "given twice");
    refused(&pb, &p("b-again.json"), "both worker 1/2");
    refused(
        &pa,
        &p("qd.json"),
        "not runs of the same sweep: queue depths 1,4 vs 1,8",
    );
    refused(&pa, &p("bs.json"), "block sizes 4k vs 8k");
    refused(&pa, &p("rw.json"), "rw randread vs randwrite");
    refused(&pa, &p("tgt.json"), "targets ");
}
