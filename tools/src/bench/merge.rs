//! `iesp-test bench merge A.json B.json …`: one report from runs of the
//! same sweep on several hosts (each with `--worker I/N`, so that together
//! they cover the device once). Points with the same target, rw, block
//! size, queue depth and jobs are merged ([`Point::merge`]): their HDR
//! histograms add exactly, so the merged percentiles are those of all the
//! commands; IOPS and MiB/s add (the workers ran at the same time).
//! Orchestration — starting the runs together — is left to existing
//! tools (ssh, pdsh, Ansible).

use std::path::{Path, PathBuf};

use iesp_plots::data::{BenchBody, Point, bench_schema};

use super::Failure;

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
        if b.rw != out.rw {
            return Err(Failure::usage(format!(
                "{}: rw {} differs from the first input's {}",
                path.display(),
                b.rw,
                out.rw
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
