//! `iesp-test plot` on what `iesp-test bench --compare` wrote against two
//! of our targets (embedded, RAM LUNs, on two loopback ports): one
//! heatmap per target from the `.dat` and the JSON of a `--matrix` run,
//! and a malformed bench CSV refused in one line naming the file, the
//! line and the format, exit 2.

mod common;

use std::path::Path;

use common::iesp_test;
use iesp_plots::render::safe_name;
use iesp_testsupport::BlockingTarget;

/// The heatmap files `plot` wrote into `dir`, sorted.
fn heatmaps(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("heatmap"))
        .collect();
    v.sort();
    v
}

fn sorted(mut v: [String; 2]) -> [String; 2] {
    v.sort();
    v
}

#[test]
fn plot_keeps_the_targets_of_a_compare_run_apart() {
    let (a, b) = (
        BlockingTarget::ram(16 << 20, 512),
        BlockingTarget::ram(16 << 20, 512),
    );
    let (ua, ub) = (a.url(0), b.url(0));
    assert_ne!(ua, ub);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let sweep = iesp_test(&[
        "bench",
        "--qd",
        "1,2,4",
        "--runtime",
        "200ms",
        "--seed",
        "1",
        "--dat",
        &p("c.dat"),
        &ua,
        "--compare",
        &ub,
    ]);
    assert_eq!(sweep.code, 0, "{}", sweep.text());
    let matrix = iesp_test(&[
        "bench",
        "--matrix",
        "--bs",
        "4k",
        "--jobs",
        "1,2",
        "--runtime",
        "200ms",
        "--dat",
        &p("m.dat"),
        "--json",
        &p("m.json"),
        &ua,
        "--compare",
        &ub,
    ]);
    assert_eq!(matrix.code, 0, "{}", matrix.text());
    a.stop();
    b.stop();
    let (fa, fb) = (safe_name(&ua), safe_name(&ub));

    // The sweep's .dat: lines and a heatmap per target.
    let run = iesp_test(&["plot", &p("c.dat"), "-o", &p("c")]);
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(dir.path().join("c/iops-vs-qd.png").exists());
    assert_eq!(
        heatmaps(&dir.path().join("c")),
        sorted([
            format!("heatmap-c_dat-{fa}.png"),
            format!("heatmap-c_dat-{fb}.png")
        ])
    );
    // The matrix, as .dat and as JSON: two heatmaps each.
    for (input, out) in [("m.dat", "md"), ("m.json", "mj")] {
        let run = iesp_test(&["plot", &p(input), "-o", &p(out)]);
        assert_eq!(run.code, 0, "{}", run.text());
        let stem = input.replace('.', "_");
        assert_eq!(
            heatmaps(&dir.path().join(out)),
            sorted([
                format!("heatmap-{stem}-{fa}.png"),
                format!("heatmap-{stem}-{fb}.png")
            ]),
            "{input}"
        );
    }
}

#[test]
fn a_malformed_bench_csv_is_one_line_naming_file_line_and_format() {
    let t = BlockingTarget::ram(16 << 20, 512);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let run = iesp_test(&[
        "bench",
        "--qd",
        "1,2",
        "--runtime",
        "1100ms",
        "--csv",
        &p("c.csv"),
        &t.url(0),
    ]);
    assert_eq!(run.code, 0, "{}", run.text());
    t.stop();
    let run = iesp_test(&["plot", &p("c.csv"), "-o", &p("good")]);
    assert_eq!(run.code, 0, "the CSV as bench wrote it: {}", run.text());

    // Its third line broken: one line naming the file, line 3 and the
    // CSV format.
    let text = std::fs::read_to_string(p("c.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 4, "{text}");
    let broken = lines[2].replacen(',', ",x", 1);
    lines[2] = &broken;
    std::fs::write(p("bad.csv"), lines.join("\n")).unwrap();
    let run = iesp_test(&["plot", &p("bad.csv"), "-o", &p("bad")]);
    assert_eq!(run.code, 2, "{}", run.text());
    let want = format!("iesp-test: error: {}:3: bench CSV: iops `x", p("bad.csv"));
    assert!(run.stderr.starts_with(&want), "{}", run.text());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.text());
    // A renamed header column is a CSV error on line 1, not a .dat one.
    let header = text.replacen("iops", "IOPS", 1);
    std::fs::write(p("header.csv"), header).unwrap();
    let run = iesp_test(&["plot", &p("header.csv"), "-o", &p("bad")]);
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr
            .contains("header.csv:1: bench CSV: the header is not")
            && run.stderr.contains("column 2 is `IOPS`"),
        "{}",
        run.text()
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.text());
    assert!(!dir.path().join("bad").exists(), "nothing written");
}
