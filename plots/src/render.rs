//! From loaded inputs to the PNG files of `iesp-test plot`: which chart
//! each input feeds, one line per input and target (several inputs on one
//! chart compare side by side).
//!
//! | file | from |
//! | --- | --- |
//! | `iops-vs-qd.png` | bench JSON/CSV points (x: queue depth); `.dat` (x: threads) |
//! | `latency-cdf.png` | bench JSON histograms (x: µs, log) |
//! | `iops-over-time.png`, `p99-over-time.png` | bench JSON series, bench CSV rows |
//! | `heatmap[-LABEL[-TARGET]].png` | `--matrix` points (synchronous jobs), `.dat` |
//!
//! An input holding several targets (`bench --compare`, in JSON or in a
//! `.dat` with `# target NAME` lines) gives one line per target and block
//! size, and one heatmap per target. Queue-depth charts have an x tick at
//! every measured x value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::charts::{Heatmap, heatmap, log_x_line_chart};
use crate::data::Point;
use crate::input::Input;
use crate::{LineChart, PlotError, Series, line_chart};

/// IOPS by `(block size, jobs)`.
type Matrix = BTreeMap<(u64, u32), f64>;

/// Chart size in pixels.
pub const SIZE: (u32, u32) = (900, 560);
/// Most lines on the CDF chart (the highest queue depths are kept).
pub const MAX_CDF_LINES: usize = 12;

/// What [`render`] wrote, and what it left out and why.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    pub files: Vec<PathBuf>,
    /// The legend of each line chart written (heatmaps: their title).
    pub legends: Vec<(PathBuf, Vec<String>)>,
    pub notes: Vec<String>,
}

/// `text` as a file-name part: runs of anything but ASCII letters,
/// digits, `-` and `_` become one `_` (how a target's label appears in
/// the names of its charts).
pub fn safe_name(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

/// One heatmap to draw: its title's subject, its file-name part, the data.
struct MapEntry {
    title: String,
    name: String,
    matrix: Matrix,
}

impl MapEntry {
    /// Input `label`'s matrix of `target` (named when the input holds
    /// several).
    fn new(label: &str, target: Option<&str>, matrix: Matrix) -> MapEntry {
        match target {
            Some(t) => MapEntry {
                title: format!("{t} ({label})"),
                name: format!("{}-{}", safe_name(label), safe_name(t)),
                matrix,
            },
            None => MapEntry {
                title: label.to_owned(),
                name: safe_name(label),
                matrix,
            },
        }
    }
}

/// `4k`-style block size.
pub fn bs_name(bs: u64) -> String {
    match bs {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}k", b >> 10),
        b => b.to_string(),
    }
}

fn point_label(prefix: &str, p: &Point, with_qd: bool) -> String {
    let mut s = format!("{prefix}{} {}", p.target, bs_name(p.bs));
    if p.jobs > 1 {
        s.push_str(&format!(" ×{}", p.jobs));
    }
    if with_qd {
        s.push_str(&format!(" qd{}", p.qd));
    }
    s
}

/// Renders every chart the inputs have data for into `dir` (which must
/// exist and be writable).
pub fn render(inputs: &[(String, Input)], dir: &Path) -> Result<Rendered, PlotError> {
    let prefix = |label: &str| {
        if inputs.len() > 1 {
            format!("{label}: ")
        } else {
            String::new()
        }
    };
    let mut qd_lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut dat_x = false;
    let mut cdf: Vec<(u32, Series)> = Vec::new();
    let mut iops_t: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut p99_t: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut maps: Vec<MapEntry> = Vec::new();
    let mut notes = Vec::new();

    for (label, input) in inputs {
        let pre = prefix(label);
        match input {
            Input::Bench(body) => {
                let mut clock: BTreeMap<String, f64> = BTreeMap::new();
                // Per target, in the order the points name them.
                let mut matrices: Vec<(String, Matrix)> = Vec::new();
                for p in &body.points {
                    if p.sync {
                        let i = match matrices.iter().position(|m| m.0 == p.target) {
                            Some(i) => i,
                            None => {
                                matrices.push((p.target.clone(), Matrix::new()));
                                matrices.len() - 1
                            }
                        };
                        matrices[i].1.insert((p.bs, p.jobs), p.iops);
                    } else {
                        qd_lines
                            .entry(point_label(&pre, p, false))
                            .or_default()
                            .push((f64::from(p.qd), p.iops));
                    }
                    match p.latency() {
                        Ok(h) if h.count() > 0 => cdf.push((
                            p.qd,
                            Series {
                                label: point_label(&pre, p, true),
                                points: h.cdf(),
                            },
                        )),
                        Ok(_) => {}
                        Err(e) => notes.push(format!("{label}: {}: {e}", point_label("", p, true))),
                    }
                    let key = format!("{pre}{}", p.target);
                    let t0 = clock.entry(key.clone()).or_insert(0.0);
                    for s in &p.series {
                        let t = *t0 + f64::from(s.t) + 1.0;
                        iops_t
                            .entry(key.clone())
                            .or_default()
                            .push((t, s.iops(p.elapsed_s)));
                        p99_t.entry(key.clone()).or_default().push((t, s.p99_us));
                    }
                    *t0 += p.series.len() as f64;
                }
                let several = matrices.len() > 1;
                for (target, matrix) in matrices {
                    maps.push(MapEntry::new(label, several.then_some(&*target), matrix));
                }
            }
            Input::Csv(rows) => {
                let mut sums: BTreeMap<(String, u32), (f64, f64)> = BTreeMap::new();
                for r in rows {
                    let key = format!("{pre}{} {}", r.target, bs_name(r.bs));
                    let key = if r.jobs > 1 {
                        format!("{key} ×{}", r.jobs)
                    } else {
                        key
                    };
                    let e = sums.entry((key.clone(), r.qd)).or_default();
                    e.0 += r.iops;
                    e.1 += 1.0;
                    let t = r.time_ms as f64 / 1000.0;
                    let tk = format!("{pre}{}", r.target);
                    iops_t.entry(tk.clone()).or_default().push((t, r.iops));
                    p99_t.entry(tk).or_default().push((t, r.lat_p99_us));
                }
                for ((key, qd), (sum, n)) in sums {
                    qd_lines
                        .entry(key)
                        .or_default()
                        .push((f64::from(qd), sum / n));
                }
            }
            Input::Dat(sets) => {
                dat_x = true;
                let several = sets.len() > 1;
                for set in sets {
                    let who = set
                        .target
                        .as_deref()
                        .map_or(String::new(), |t| format!("{t} "));
                    let mut matrix = Matrix::new();
                    for r in &set.rows {
                        qd_lines
                            .entry(format!("{pre}{who}{}", bs_name(r.bs)))
                            .or_default()
                            .push((f64::from(r.threads), r.value));
                        matrix.insert((r.bs, r.threads), r.value);
                    }
                    let target = set.target.as_deref().filter(|_| several);
                    maps.push(MapEntry::new(label, target, matrix));
                }
            }
        }
    }

    let mut files = Vec::new();
    let mut legends = Vec::new();
    let legend = |s: &[Series]| s.iter().map(|s| s.label.clone()).collect::<Vec<_>>();
    let to_series = |m: BTreeMap<String, Vec<(f64, f64)>>| -> Vec<Series> {
        m.into_iter()
            .map(|(label, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series { label, points }
            })
            .collect()
    };

    let lines = to_series(qd_lines);
    if lines.is_empty() {
        notes.push("iops-vs-qd.png: no sweep points in the inputs".into());
    } else {
        let p = dir.join("iops-vs-qd.png");
        let x_label = if dat_x {
            "queue depth (threads for .dat)"
        } else {
            "queue depth (per job)"
        };
        log_x_line_chart(
            &p,
            &LineChart {
                title: "IOPS against queue depth",
                x_label,
                y_label: "IOPS",
                series: &lines,
                size: SIZE,
            },
        )?;
        legends.push((p.clone(), legend(&lines)));
        files.push(p);
    }

    if cdf.is_empty() {
        notes.push(
            "latency-cdf.png: no latency histograms in the inputs (bench JSON has them)".into(),
        );
    } else {
        if cdf.len() > MAX_CDF_LINES {
            cdf.sort_by_key(|c| std::cmp::Reverse(c.0));
            notes.push(format!(
                "latency-cdf.png: {} points, the {MAX_CDF_LINES} with the highest queue depth drawn",
                cdf.len()
            ));
            cdf.truncate(MAX_CDF_LINES);
        }
        let series: Vec<Series> = cdf.into_iter().map(|c| c.1).collect();
        let p = dir.join("latency-cdf.png");
        log_x_line_chart(
            &p,
            &LineChart {
                title: "Latency CDF",
                x_label: "latency (µs, log scale)",
                y_label: "commands at or below (%)",
                series: &series,
                size: SIZE,
            },
        )?;
        legends.push((p.clone(), legend(&series)));
        files.push(p);
    }

    for (name, title, y, m) in [
        ("iops-over-time.png", "IOPS over time", "IOPS", iops_t),
        (
            "p99-over-time.png",
            "p99 latency over time",
            "p99 latency (µs)",
            p99_t,
        ),
    ] {
        let series = to_series(m);
        if series.is_empty() {
            notes.push(format!("{name}: no per-second series in the inputs"));
            continue;
        }
        let p = dir.join(name);
        line_chart(
            &p,
            &LineChart {
                title,
                x_label: "time (s)",
                y_label: y,
                series: &series,
                size: SIZE,
            },
        )?;
        legends.push((p.clone(), legend(&series)));
        files.push(p);
    }

    if maps.is_empty() {
        notes.push(
            "heatmap.png: no block size × jobs matrix (bench --matrix or .dat) in the inputs"
                .into(),
        );
    }
    let many = maps.len() > 1;
    for MapEntry {
        title,
        name,
        matrix: m,
    } in maps
    {
        let mut bss: Vec<u64> = m.keys().map(|k| k.0).collect();
        let mut jobs: Vec<u32> = m.keys().map(|k| k.1).collect();
        bss.sort_unstable();
        bss.dedup();
        jobs.sort_unstable();
        jobs.dedup();
        let title = format!("IOPS, block size × jobs: {title}");
        let map = Heatmap {
            title: &title,
            x_label: "jobs (threads)",
            y_label: "block size",
            columns: jobs.iter().map(u32::to_string).collect(),
            rows: bss.iter().map(|&b| bs_name(b)).collect(),
            cells: bss
                .iter()
                .map(|b| jobs.iter().map(|j| m.get(&(*b, *j)).copied()).collect())
                .collect(),
            size: SIZE,
        };
        let file = if many {
            format!("heatmap-{name}.png")
        } else {
            "heatmap.png".into()
        };
        let p = dir.join(file);
        heatmap(&p, &map)?;
        legends.push((p.clone(), vec![title]));
        files.push(p);
    }
    Ok(Rendered {
        files,
        legends,
        notes,
    })
}
