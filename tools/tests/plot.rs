//! `iesp-test plot` on what `iesp-test bench --compare` wrote against two
//! of our targets (embedded, RAM LUNs, on two loopback ports): one
//! heatmap per target from the `.dat` and the JSON of a `--matrix` run.

mod common;

use std::path::Path;

use common::iesp_test;
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

/// `url` as plot puts it in a file name.
fn file_part(url: &str) -> String {
    let mut s = String::new();
    for c in url.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            s.push(c);
        } else if !s.ends_with('_') {
            s.push('_');
        }
    }
    s.trim_matches('_').to_owned()
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
    let (fa, fb) = (file_part(&ua), file_part(&ub));

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
