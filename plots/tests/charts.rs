//! Every chart kind rendered from the committed sample inputs in
//! tests/data (a bench sweep with two targets, a bench --matrix run, a
//! bench CSV, a legacy block-speed-randread.py .dat), decoded with the
//! `png` crate and checked: its size, that it is not blank (pixel
//! variance), that text is drawn in the title and axis-label regions; and
//! one small chart against a committed golden PNG, per pixel with a
//! tolerance (`IESP_UPDATE_GOLDEN=1` rewrites it).

use std::path::{Path, PathBuf};

use iesp_plots::input::{Input, Loaded, load};
use iesp_plots::render::{SIZE, render};
use iesp_plots::{LineChart, Series, line_chart};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn input(name: &str) -> (String, Input) {
    match load(&data(name)).unwrap_or_else(|e| panic!("{e}")) {
        Loaded::Data { label, input } => (label, input),
        Loaded::Skipped(why) => panic!("{name} skipped: {why}"),
    }
}

/// An RGB(A) image: width, height, bytes per pixel, pixels.
struct Image {
    w: u32,
    h: u32,
    bpp: usize,
    px: Vec<u8>,
}

impl Image {
    fn read(path: &Path) -> Image {
        let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut r = dec.read_info().unwrap();
        let mut px = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut px).unwrap();
        px.truncate(info.buffer_size());
        let bpp = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("{}: colour type {other:?}", path.display()),
        };
        Image {
            w: info.width,
            h: info.height,
            bpp,
            px,
        }
    }

    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.w as usize + x as usize) * self.bpp;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }

    /// Variance of the grey levels.
    fn variance(&self) -> f64 {
        let n = (self.w * self.h) as f64;
        let grey = |p: [u8; 3]| (f64::from(p[0]) + f64::from(p[1]) + f64::from(p[2])) / 3.0;
        let (mut s, mut s2) = (0.0, 0.0);
        for y in 0..self.h {
            for x in 0..self.w {
                let g = grey(self.pixel(x, y));
                s += g;
                s2 += g * g;
            }
        }
        s2 / n - (s / n) * (s / n)
    }

    /// Pixels that are not white in the rectangle.
    fn ink(&self, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
        let mut n = 0;
        for y in y0..y1.min(self.h) {
            for x in x0..x1.min(self.w) {
                if self.pixel(x, y) != [255, 255, 255] {
                    n += 1;
                }
            }
        }
        n
    }
}

/// Size, not blank, and text in the title strip, under the x axis (its
/// description) and left of the y axis.
fn check_chart(path: &Path) {
    let img = Image::read(path);
    let name = path.display();
    assert_eq!((img.w, img.h), SIZE, "{name}");
    assert!(
        img.variance() > 100.0,
        "{name}: blank? variance {}",
        img.variance()
    );
    let (w, h) = (img.w, img.h);
    assert!(img.ink(w / 4, 0, w * 3 / 4, 30) > 100, "{name}: no title");
    assert!(
        img.ink(w / 3, h - 22, w * 2 / 3, h) > 50,
        "{name}: no x-axis label"
    );
    assert!(
        img.ink(0, h / 4, 30, h * 3 / 4) > 50,
        "{name}: no y-axis label"
    );
}

#[test]
fn every_chart_kind_from_the_sample_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = vec![
        input("sweep.json"),
        input("matrix.json"),
        input("sweep.csv"),
        input("legacy.dat"),
    ];
    let done = render(&inputs, dir.path()).unwrap();
    let names: Vec<String> = done
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "iops-vs-qd.png",
        "latency-cdf.png",
        "iops-over-time.png",
        "p99-over-time.png",
        "heatmap-matrix_json.png",
        "heatmap-legacy_dat.png",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    for f in &done.files {
        check_chart(f);
    }
}

#[test]
fn a_legacy_dat_alone_draws_lines_and_a_heatmap() {
    let dir = tempfile::tempdir().unwrap();
    let (label, dat) = input("legacy.dat");
    match &dat {
        Input::Dat(sets) => assert_eq!((sets.len(), sets[0].rows.len()), (1, 24)),
        other => panic!("{other:?}"),
    }
    let done = render(&[(label, dat)], dir.path()).unwrap();
    let names: Vec<_> = done
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["iops-vs-qd.png", "heatmap.png"]);
    for f in &done.files {
        check_chart(f);
    }
    assert!(
        done.notes.iter().any(|n| n.contains("latency-cdf.png")),
        "{:?}",
        done.notes
    );
}

#[test]
fn bad_inputs_name_the_file_and_line() {
    let e = load(&data("bad-line2.dat")).unwrap_err();
    assert_eq!(e.line, Some(2));
    let text = e.to_string();
    assert!(
        text.contains("bad-line2.dat:2:") && text.contains("threads `four`"),
        "{text}"
    );
    let e = load(&data("no-such-file.json")).unwrap_err();
    assert!(
        e.to_string().contains("no-such-file.json: cannot read"),
        "{e}"
    );
    assert!(matches!(load(&data("verify.json")), Ok(Loaded::Skipped(_))));
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        "{\n  \"schema\": \"iesp-test/bench/1\",\n  \"points\": [\n",
    )
    .unwrap();
    let e = load(&broken).unwrap_err();
    assert!(
        e.line.is_some() && e.to_string().contains("broken.json:"),
        "{e}"
    );
}

fn golden_chart(path: &Path) {
    let series = vec![
        Series {
            label: "ours".into(),
            points: vec![(1.0, 10.0), (2.0, 18.0), (4.0, 30.0), (8.0, 41.0)],
        },
        Series {
            label: "tgt".into(),
            points: vec![(1.0, 8.0), (2.0, 14.0), (4.0, 22.0), (8.0, 26.0)],
        },
    ];
    line_chart(
        path,
        &LineChart {
            title: "golden",
            x_label: "qd",
            y_label: "kIOPS",
            series: &series,
            size: (240, 160),
        },
    )
    .unwrap();
}

#[test]
fn a_small_chart_matches_its_golden_png() {
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("golden.png");
    golden_chart(&got);
    let golden = data("golden-line.png");
    if std::env::var_os("IESP_UPDATE_GOLDEN").is_some() {
        std::fs::copy(&got, &golden).unwrap();
    }
    let (a, b) = (Image::read(&got), Image::read(&golden));
    assert_eq!((a.w, a.h), (b.w, b.h));
    // Tolerance: anti-aliasing and font rasterisation may move a few
    // pixels a little; at most 0.5% of pixels may differ by more than 48
    // in a channel.
    let mut off = 0;
    for y in 0..a.h {
        for x in 0..a.w {
            let (p, q) = (a.pixel(x, y), b.pixel(x, y));
            if p.iter().zip(q).any(|(u, v)| u.abs_diff(v) > 48) {
                off += 1;
            }
        }
    }
    let limit = (a.w * a.h) as usize / 200;
    assert!(off <= limit, "{off} pixels differ (limit {limit})");
    assert!(a.ink(0, 0, a.w, a.h) > 1000, "the golden chart has content");
}
