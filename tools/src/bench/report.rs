//! bench's outputs: the terminal table, the JSON report in the common
//! envelope (`iesp-test/bench/1`), the per-second CSV (fio's log column
//! order first, [`iesp_plots::input::CSV_HEADER`]), the legacy
//! tab-separated `bs threads value` `.dat` lines, and the `--compare`
//! ratios.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use comfy_table::{CellAlignment, Table, presets::UTF8_BORDERS_ONLY};
use iesp_plots::data::{BenchBody, Point, Ratio};
use iesp_plots::input::{CSV_HEADER, CsvRow, DatRow};
use iesp_plots::render::bs_name;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar over `total` points on stderr, only when asked and
/// stderr is a terminal.
pub fn progress(wanted: bool, total: u64) -> Option<ProgressBar> {
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("bench [{bar:30}] {pos}/{len} points, {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    Some(bar)
}

/// Each other target's IOPS and p99 over `baseline`'s, point by point.
pub fn ratios(points: &[Point], baseline: Option<&str>) -> Vec<Ratio> {
    let Some(base) = baseline else {
        return Vec::new();
    };
    let key = |p: &Point| (p.bs, p.qd, p.jobs, p.sync);
    let bases: BTreeMap<_, &Point> = points
        .iter()
        .filter(|p| p.target == base)
        .map(|p| (key(p), p))
        .collect();
    points
        .iter()
        .filter(|p| p.target != base)
        .filter_map(|p| {
            let b = bases.get(&key(p))?;
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            Some(Ratio {
                bs: p.bs,
                qd: p.qd,
                jobs: p.jobs,
                target: p.target.clone(),
                baseline: base.to_owned(),
                iops_ratio: div(p.iops, b.iops),
                p99_ratio: div(p.latency_us.p99, b.latency_us.p99),
            })
        })
        .collect()
}

fn us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The human-readable table of points (and floor, and ratios).
pub fn table(body: &BenchBody) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    let many = body.targets.len() > 1 || !body.merged_from.is_empty();
    let mut header = vec![];
    if many {
        header.push("target");
    }
    header.extend([
        "bs",
        "qd",
        "jobs",
        "IOPS",
        "MiB/s",
        "min µs",
        "mean µs",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max µs",
        "CPU µs/IO",
        "errors",
    ]);
    t.set_header(header.clone());
    for p in &body.points {
        let mut row = vec![];
        if many {
            row.push(p.target.clone());
        }
        let jobs = if p.sync {
            format!("{} sync", p.jobs)
        } else {
            p.jobs.to_string()
        };
        let l = &p.latency_us;
        row.extend([
            bs_name(p.bs),
            p.qd.to_string(),
            jobs,
            format!("{:.0}", p.iops),
            format!("{:.1}", p.mib_s),
            us(l.min),
            us(l.mean),
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p99_9),
            us(l.p99_99),
            us(l.max),
            format!("{:.1}", p.cpu_us_per_io),
            p.errors.to_string(),
        ]);
        t.add_row(row);
    }
    for (i, _) in header.iter().enumerate().skip(usize::from(many)) {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut s = format!(
        "bench: {} for {:.1} s per point (ramp {:.1} s) on {}\n{t}\n",
        body.rw,
        body.runtime_s,
        body.ramp_s,
        body.targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if crate::signal::received().is_some() {
        s.push_str("interrupted: the points above are those measured before the signal\n");
    }
    if let Some(f) = body.floor {
        let qd1: Vec<String> = body
            .points
            .iter()
            .filter(|p| p.qd == 1 && p.jobs == 1)
            .map(|p| {
                format!(
                    "{} {} {:.0}% of it",
                    p.target,
                    bs_name(p.bs),
                    p.iops * 100.0 / f.round_trips_per_s
                )
            })
            .collect();
        s.push_str(&format!(
            "floor: bare TCP ping-pong over loopback {:.0} round trips/s ({:.1} µs){}{}\n",
            f.round_trips_per_s,
            f.rtt_us,
            if qd1.is_empty() { "" } else { "; QD 1: " },
            qd1.join(", ")
        ));
    }
    for r in &body.ratios {
        s.push_str(&format!(
            "compare: {} / {} at bs {} qd {} jobs {}: IOPS {:.2}x, p99 {:.2}x\n",
            r.target,
            r.baseline,
            bs_name(r.bs),
            r.qd,
            r.jobs,
            r.iops_ratio,
            r.p99_ratio
        ));
    }
    s
}

/// The `--csv` text: a header, then one row per second of each point;
/// `time_ms` runs on across a target's points (a timeline of the sweep).
pub fn csv(body: &BenchBody) -> String {
    let mut s = CSV_HEADER.join(",");
    s.push('\n');
    let ddir = u8::from(body.rw == "randwrite" || body.rw == "write");
    let mut clock: BTreeMap<&str, u64> = BTreeMap::new();
    for p in &body.points {
        let t0 = clock.entry(p.target.as_str()).or_insert(0);
        for sec in &p.series {
            let row = CsvRow {
                time_ms: (*t0 + u64::from(sec.t) + 1) * 1000,
                iops: sec.iops(p.elapsed_s),
                ddir,
                bs: p.bs,
                lat_mean_us: sec.mean_us,
                lat_p99_us: sec.p99_us,
                mib_s: sec.mib_s(p.elapsed_s),
                target: p.target.clone(),
                qd: p.qd,
                jobs: p.jobs,
            };
            s.push_str(&row.to_line());
            s.push('\n');
        }
        *t0 += p.series.len() as u64;
    }
    s
}

/// The `--dat` text: `bs<TAB>threads<TAB>IOPS` per point, threads being
/// the commands in flight (jobs × queue depth), as plot.sh read.
/// With several targets, a `# target NAME` comment line (which the old
/// format's readers skip) starts each target's lines.
pub fn dat(body: &BenchBody) -> String {
    let mut s = String::new();
    let many = body.targets.len() > 1;
    let mut names: Vec<&str> = Vec::new();
    for p in &body.points {
        if !names.contains(&p.target.as_str()) {
            names.push(&p.target);
        }
    }
    for name in names {
        if many {
            s.push_str(&format!("# target {name}\n"));
        }
        for p in body.points.iter().filter(|p| p.target == name) {
            let row = DatRow {
                bs: p.bs,
                threads: p.jobs.saturating_mul(p.qd),
                value: p.iops,
            };
            s.push_str(&row.to_line());
            s.push('\n');
        }
    }
    s
}
