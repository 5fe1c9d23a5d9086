//! `iesp-test bench merge A.json B.json …`: one report from runs of the
//! same sweep on several hosts (each with `--worker I/N`, so that together
//! they cover the device once). Points with the same target, rw, block
//! size, queue depth and jobs are merged ([`Point::merge`]): their HDR
//! histograms add exactly, so the merged percentiles are those of all the
//! commands; IOPS and MiB/s add (the workers ran at the same time).
//! Orchestration — starting the runs together — is left to existing
//! tools (ssh, pdsh, Ansible).
//!
//! Inputs that are not parts of one sweep are refused before anything is
//! added: [`check`] refuses the same file (path, hard link, identical
//! contents or body, or the same run by its envelope's `started_at`,
//! `seed` and `args`) given twice and the same `--worker I/N` share
//! twice; [`merge`] refuses runs whose sweeps differ (targets, rw, rwmix,
//! runtime, ramp, block sizes, queue depths, jobs, `--matrix`, worker
//! counts). Adding those would double the IOPS or mix unrelated points.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use iesp_plots::data::{BenchBody, Point, bench_schema};
use iesp_plots::render::bs_name;

use super::Failure;

/// One input of a merge: the report and what identifies its run.
#[derive(Clone, Debug)]
pub struct Report {
    pub path: PathBuf,
    pub body: BenchBody,
    /// The file's bytes.
    bytes: Vec<u8>,
    /// The envelope's `started_at`, `seed` and `args`, when all are there
    /// (a seed chosen at random makes them one run's).
    run: Option<(String, u64, String)>,
}

/// Reads one bench report for a merge.
pub fn read_report(path: &Path) -> Result<Report, Failure> {
    let body = read(path)?;
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", path.display())))?;
    let run = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            Some((
                v.get("started_at")?.as_str()?.to_owned(),
                v.get("seed")?.as_u64()?,
                v.get("args")?.to_string(),
            ))
        });
    Ok(Report {
        path: path.to_owned(),
        body,
        bytes,
        run,
    })
}

/// `a` and `b` are one file (the same path, or hard links).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// `values` as a sorted, comma-separated list.
fn list<T: Ord + Copy>(values: impl Iterator<Item = T>, show: impl Fn(T) -> String) -> String {
    let set: BTreeSet<T> = values.collect();
    set.into_iter().map(show).collect::<Vec<_>>().join(",")
}

/// What differs between two sweeps, `None` when they are the same sweep.
fn sweep_difference(a: &BenchBody, b: &BenchBody) -> Option<String> {
    let names = |x: &BenchBody| x.targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let bss = |x: &BenchBody| list(x.points.iter().map(|p| p.bs), bs_name);
    let qds = |x: &BenchBody| list(x.points.iter().map(|p| p.qd), |q| q.to_string());
    let jobs = |x: &BenchBody| list(x.points.iter().map(|p| p.jobs), |j| j.to_string());
    let shape = |x: &BenchBody| {
        list(x.points.iter().map(|p| p.sync), |sync| {
            if sync {
                "--matrix"
            } else {
                "queue-depth sweep"
            }
            .to_owned()
        })
    };
    // The read percentage matters under randrw only.
    let mix = |x: &BenchBody| match x.rw.as_str() {
        "randrw" => format!("{}%", x.rwmix_read),
        _ => String::new(),
    };
    let checks: [(&str, String, String); 9] = [
        ("targets", names(a).join(" "), names(b).join(" ")),
        ("rw", a.rw.clone(), b.rw.clone()),
        ("rwmix", mix(a), mix(b)),
        (
            "runtime",
            format!("{} s", a.runtime_s),
            format!("{} s", b.runtime_s),
        ),
        ("ramp", format!("{} s", a.ramp_s), format!("{} s", b.ramp_s)),
        ("block sizes", bss(a), bss(b)),
        ("queue depths", qds(a), qds(b)),
        ("jobs", jobs(a), jobs(b)),
        ("kind", shape(a), shape(b)),
    ];
    if let Some((what, x, y)) = checks.into_iter().find(|c| c.1 != c.2) {
        return Some(format!("{what} {x} vs {y}"));
    }
    let keys = |x: &BenchBody| x.points.iter().map(Point::key).collect::<BTreeSet<_>>();
    let (ka, kb) = (keys(a), keys(b));
    if let Some(k) = ka.symmetric_difference(&kb).next() {
        let side = if ka.contains(k) {
            "only the first"
        } else {
            "only the second"
        };
        return Some(format!(
            "the point {} bs {} qd {} jobs {} is in {side}",
            k.0,
            bs_name(k.2),
            k.3,
            k.4
        ));
    }
    match (a.worker, b.worker) {
        (Some(x), Some(y)) if x.count != y.count => Some(format!(
            "workers {}/{} vs {}/{}",
            x.index, x.count, y.index, y.count
        )),
        _ => None,
    }
}

/// Refuses an input given twice (see the module's documentation): one
/// line naming both files. [`merge`] refuses sweeps that differ.
pub fn check(reports: &[Report]) -> Result<(), Failure> {
    for (j, b) in reports.iter().enumerate() {
        for a in &reports[..j] {
            let (pa, pb) = (a.path.display(), b.path.display());
            let twice = if same_file(&a.path, &b.path) {
                Some("the same file")
            } else if a.bytes == b.bytes || a.body == b.body {
                Some("the same run (identical contents)")
            } else if a.run.is_some() && a.run == b.run {
                Some("the same run (same started_at, seed and args)")
            } else {
                None
            };
            if let Some(why) = twice {
                return Err(Failure::usage(format!(
                    "bench merge: {pa} and {pb} are {why}, given twice: merging would count its commands twice"
                )));
            }
            if let (Some(x), Some(y)) = (a.body.worker, b.body.worker) {
                if x == y {
                    return Err(Failure::usage(format!(
                        "bench merge: {pa} and {pb} are both worker {}/{}: that share given twice",
                        x.index, x.count
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Reads one bench report.
pub fn read(path: &Path) -> Result<BenchBody, Failure> {
    match iesp_plots::input::load(path) {
        Ok(iesp_plots::input::Loaded::Data {
            input: iesp_plots::input::Input::Bench(b),
            ..
        }) => Ok(b),
        Ok(_) => Err(Failure::usage(format!(
            "{}: not a bench JSON report ({})",
            path.display(),
            bench_schema()
        ))),
        Err(e) => Err(Failure::usage(e)),
    }
}

/// Merges the reports, in order.
pub fn merge(inputs: &[(PathBuf, BenchBody)]) -> Result<BenchBody, Failure> {
    let Some((_, first)) = inputs.first() else {
        return Err(Failure::usage("bench merge: no input"));
    };
    let mut out = first.clone();
    out.worker = None;
    out.ratios.clear();
    for (path, b) in &inputs[1..] {
        if let Some(what) = sweep_difference(first, b) {
            return Err(Failure::usage(format!(
                "bench merge: {} and {} are not runs of the same sweep: {what}",
                inputs[0].0.display(),
                path.display()
            )));
        }
        for t in &b.targets {
            if !out.targets.iter().any(|x| x.name == t.name) {
                out.targets.push(t.clone());
            }
        }
        out.runtime_s = out.runtime_s.max(b.runtime_s);
        for p in &b.points {
            match out.points.iter_mut().find(|x| x.key() == p.key()) {
                Some(x) => x
                    .merge(p)
                    .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?,
                None => out.points.push(p.clone()),
            }
        }
    }
    out.merged_from = inputs
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    out.ratios = super::report::ratios(
        &out.points,
        out.targets
            .first()
            .map(|t| t.name.as_str())
            .filter(|_| out.targets.len() > 1),
    );
    Ok(out)
}

/// Points of `a` and `b` are the same measurement (a merge's check).
pub fn same_points(a: &[Point], b: &[Point]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.key() == y.key())
}
