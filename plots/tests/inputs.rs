//! Inputs with several targets, and malformed CSV files.
//!
//! `compare.dat`, `compare-matrix.dat` and `compare-matrix.json` are what
//! `iesp-test bench --compare` wrote against two `iesp-target` processes
//! on loopback (`--qd 1,2,4,8 --dat`, and `--matrix --bs 4k,16k --jobs 1,2
//! --dat --json`): each holds two targets, the `.dat` files with a
//! `# target NAME` line before each target's lines. plot must draw one
//! line per target (not one line zig-zagging between them), one heatmap
//! per target (not the last target's only), and a tick at every queue
//! depth.
//!
//! A malformed bench CSV must be reported as a bench CSV error (not as a
//! `.dat` one) at its real 1-based line.

use std::path::{Path, PathBuf};

use iesp_plots::input::{Input, InputError, Loaded, load};
use iesp_plots::render::render;
use plotters::style::{Color, Palette, Palette99};

const T1: &str = "iscsi://127.0.0.1:13261/iqn.2026-11.org.iesp-test:target0/0";
const T2: &str = "iscsi://127.0.0.1:13262/iqn.2026-11.org.iesp-test:target0/0";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn input(path: &Path) -> (String, Input) {
    match load(path).unwrap_or_else(|e| panic!("{e}")) {
        Loaded::Data { label, input } => (label, input),
        Loaded::Skipped(why) => panic!("skipped: {why}"),
    }
}

/// An RGB image's pixels, row by row.
struct Image {
    w: usize,
    h: usize,
    px: Vec<[u8; 3]>,
}

impl Image {
    fn read(path: &Path) -> Image {
        let mut r = png::Decoder::new(std::fs::File::open(path).unwrap())
            .read_info()
            .unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        let bpp = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("{other:?}"),
        };
        let px = buf[..info.buffer_size()]
            .chunks(bpp)
            .map(|c| [c[0], c[1], c[2]])
            .collect();
        Image {
            w: info.width as usize,
            h: info.height as usize,
            px,
        }
    }

    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.px[y * self.w + x]
    }

    /// Pixels of exactly colour `c`.
    fn count(&self, c: [u8; 3]) -> usize {
        self.px.iter().filter(|&&p| p == c).count()
    }

    /// The x axis: the lowest row that is dark over most of the width.
    fn x_axis_row(&self) -> usize {
        (0..self.h)
            .rev()
            .find(|&y| {
                (0..self.w)
                    .filter(|&x| self.at(x, y).iter().all(|&v| v < 100))
                    .count()
                    > self.w / 2
            })
            .expect("an x axis")
    }

    /// Groups of inked columns in rows `y0..y1`, gaps of more than 5 px
    /// apart: the separate tick labels under an axis.
    fn text_groups(&self, y0: usize, y1: usize) -> usize {
        let inked: Vec<bool> = (0..self.w)
            .map(|x| (y0..y1).any(|y| self.at(x, y).iter().any(|&v| v < 160)))
            .collect();
        let (mut groups, mut gap) = (0, usize::MAX);
        for i in inked {
            if i {
                if gap > 5 {
                    groups += 1;
                }
                gap = 0;
            } else {
                gap = gap.saturating_add(1);
            }
        }
        groups
    }
}

fn colour(i: usize) -> [u8; 3] {
    let c = Palette99::pick(i).to_rgba();
    [c.0, c.1, c.2]
}

#[test]
fn a_compare_dat_draws_one_line_and_one_heatmap_per_target() {
    let (label, dat) = input(&data("compare.dat"));
    let Input::Dat(sets) = &dat else {
        panic!("{dat:?}")
    };
    let targets: Vec<_> = sets.iter().map(|s| s.target.as_deref()).collect();
    assert_eq!(targets, [Some(T1), Some(T2)]);
    assert!(sets.iter().all(|s| s.rows.len() == 4), "{sets:?}");

    let dir = tempfile::tempdir().unwrap();
    let done = render(&[(label, dat)], dir.path()).unwrap();
    let qd = dir.path().join("iops-vs-qd.png");
    let legend = &done.legends.iter().find(|l| l.0 == qd).unwrap().1;
    assert_eq!(legend, &[format!("{T1} 4k"), format!("{T2} 4k")]);
    // Both lines are in the picture, in the first two palette colours.
    let img = Image::read(&qd);
    for i in 0..2 {
        assert!(img.count(colour(i)) > 200, "line {i}: {qd:?}");
    }
    // A tick label at each of the four thread counts (1, 2, 4, 8), not
    // plotters' single "1".
    let axis = img.x_axis_row();
    assert_eq!(img.text_groups(axis + 6, axis + 22), 4, "{qd:?}");

    let heatmaps: Vec<String> = done
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("heatmap"))
        .collect();
    assert_eq!(
        heatmaps,
        [
            "heatmap-compare_dat-iscsi_127_0_0_1_13261_iqn_2026-11_org_iesp-test_target0_0.png",
            "heatmap-compare_dat-iscsi_127_0_0_1_13262_iqn_2026-11_org_iesp-test_target0_0.png"
        ]
    );
}

#[test]
fn a_compare_matrix_has_a_heatmap_per_target_in_dat_and_json() {
    for name in ["compare-matrix.dat", "compare-matrix.json"] {
        let dir = tempfile::tempdir().unwrap();
        let done = render(&[input(&data(name))], dir.path()).unwrap();
        let maps: Vec<&PathBuf> = done
            .files
            .iter()
            .filter(|p| p.to_string_lossy().contains("heatmap"))
            .collect();
        assert_eq!(maps.len(), 2, "{name}: {:?}", done.files);
        let titles: Vec<&String> = done
            .legends
            .iter()
            .filter(|l| maps.contains(&&l.0))
            .flat_map(|l| &l.1)
            .collect();
        assert!(
            titles[0].contains(T1) && titles[1].contains(T2),
            "{name}: {titles:?}"
        );
        // Different measurements, different pictures.
        assert_ne!(
            std::fs::read(maps[0]).unwrap(),
            std::fs::read(maps[1]).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_single_queue_depth_still_has_its_tick() {
    let dir = tempfile::tempdir().unwrap();
    let dat = dir.path().join("one.dat");
    std::fs::write(&dat, "4096\t1\t1000\n65536\t1\t400\n").unwrap();
    let done = render(&[input(&dat)], dir.path()).unwrap();
    let img = Image::read(&done.files[0]);
    let axis = img.x_axis_row();
    assert_eq!(img.text_groups(axis + 6, axis + 22), 1);
}

/// Writes `text` to `name` and loads it, expecting an error.
fn bad(dir: &Path, name: &str, text: &str) -> InputError {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    load(&p).expect_err(name)
}

#[test]
fn a_malformed_csv_names_its_line_and_the_csv_format() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(data("sweep.csv")).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let with_line = |n: usize, new: &str| {
        let mut l = lines.clone();
        l[n - 1] = new;
        l.join("\n") + "\n"
    };
    let check = |e: InputError, line: usize, what: &str| {
        let text = e.to_string();
        assert_eq!(e.line, Some(line), "{text}");
        assert!(
            text.contains(&format!(":{line}: bench CSV: ")) && text.contains(what),
            "{text}"
        );
        assert!(!text.contains(".dat") && !text.contains('\n'), "{text}");
    };
    // A bad number on line 4.
    let e = bad(
        dir.path(),
        "num.csv",
        &with_line(4, "1000,abc,0,4096,0,0,1,2,3,t,1,1"),
    );
    check(e, 4, "iops `abc`");
    // A header column renamed (a spreadsheet's edit): the header's line.
    let e = bad(
        dir.path(),
        "header.csv",
        &with_line(1, &lines[0].replace("iops", "IOPS")),
    );
    check(e, 1, "column 2 is `IOPS`, `iops` expected");
    // The same without the .csv name: the commas say CSV.
    let e = bad(
        dir.path(),
        "header.txt",
        &with_line(1, &lines[0].replace("iops", "IOPS")),
    );
    check(e, 1, "column 2 is `IOPS`");
    // Blank lines before the header: the bad row's real line.
    let text = format!("\n\n{}", with_line(3, "1000,5,0"));
    check(
        bad(dir.path(), "blank.csv", &text),
        5,
        "3 fields, 12 expected",
    );
    // A byte-order mark is not part of the header.
    let text = format!("\u{feff}{}", with_line(2, "x,1,0,4096,0,0,1,2,3,t,1,1"));
    check(bad(dir.path(), "bom.csv", &text), 2, "time_ms `x`");
    // A quoted target holding a line break (bench quotes such names): the
    // row after it is on line 4, and the bad one after that on line 5.
    let text = format!(
        "{}\n1000,5.0,0,4096,0,0,1.0,2.0,3.0,\"a\nb\",1,1\n2000,5.0,0,4096,0,0,1.0,2.0,3.0,t,1,1\n2000,5.0,0,4096,0,0,1.0,2.0,3.0,t,1\n",
        lines[0]
    );
    check(
        bad(dir.path(), "quoted.csv", &text),
        5,
        "11 fields, 12 expected",
    );
    // Good files still load: the sample, and the quoted line break.
    assert!(matches!(input(&data("sweep.csv")).1, Input::Csv(r) if r.len() == lines.len() - 1));
    let ok = format!(
        "{}\n1000,5.0,0,4096,0,0,1.0,2.0,3.0,\"a\nb\",1,1\n",
        lines[0]
    );
    let p = dir.path().join("ok.csv");
    std::fs::write(&p, ok).unwrap();
    match input(&p).1 {
        Input::Csv(r) => assert_eq!(r[0].target, "a\nb"),
        other => panic!("{other:?}"),
    }
}
