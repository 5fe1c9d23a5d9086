//! # The protocol-level conformance suite (`iesp-test conformance URL`)
//!
//! Cases that check what an iSCSI target does on the wire — login stages,
//! key syntax, negotiation, digests, CHAP, SendTargets, the CmdSN window,
//! StatSN, ITTs, R2T, Data-Out, Data-In, residuals, task management, NOP,
//! logout, text, Reject (RFC 7143) — and, after them, the SCSI commands a
//! disk LUN answers (SPC-4, SBC-4) that other suites leave out. Every case
//! runs against any target reachable over TCP.
//!
//! ## Layout
//!
//! - [`case`] — a case's identity (`Family.Suite.Case`), spec section,
//!   level, gates, destructive flag, profiles; its body is a script or Rust.
//! - [`script`] — the TOML script format (the module docs are its
//!   reference), its loader and interpreter. Built-in scripts live in
//!   `testsuite/cases/<Family>/<Suite>.toml`; `--scripts DIR` adds a user's.
//! - [`cases`] — the Rust cases, for what a script cannot express.
//! - [`exec`] — the executor both drive: connections, automatic CmdSN /
//!   ExpStatSN / ITT, PDU templates with field overrides, expectations.
//! - [`transfer`] — the SCSI shorthand's engine: a command with its data
//!   moved as negotiated and every Data-In, R2T and response checked.
//! - [`matchers`], [`value`], [`cdb`] — field matchers, `${…}` values, the
//!   CDB shorthand.
//! - [`profile`] — negotiation profiles, each run a separate suite.
//! - [`runner`] — selection, gates, time limits, the four outcomes.
//! - [`report`] — terminal summary, JUnit XML, TAP, JSON lines, the
//!   traceability table.
//! - [`baseline`] — expected outcomes per target, for CI regression checks.

pub mod baseline;
pub mod case;
pub mod cases;
pub mod cdb;
pub mod exec;
pub mod matchers;
pub mod profile;
pub mod report;
pub mod runner;
pub mod script;
pub mod transfer;
pub mod value;

use std::collections::BTreeSet;
use std::path::Path;

pub use case::{Case, CaseId, Level};
pub use exec::{Ctx, Fail, TargetSpec, Timing};
pub use runner::{CaseResult, Outcome, OutcomeKind, RunOptions, RunReport};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_scripts.rs"));
}

/// A set of cases with unique ids.
#[derive(Clone, Debug, Default)]
pub struct Suite {
    pub cases: Vec<Case>,
}

/// Why a suite could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error(transparent)]
    Script(#[from] script::ScriptError),
    #[error("case {0} is defined twice ({1} and {2})")]
    Duplicate(String, String, String),
    #[error("cannot read scripts in {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl Suite {
    /// The built-in suite: the scripts under `testsuite/cases/` and the
    /// Rust cases, ordered by family and suite.
    pub fn builtin() -> Result<Suite, SuiteError> {
        let mut s = Suite::default();
        for (path, src) in builtin::SCRIPTS {
            s.add(script::load(&format!("testsuite/cases/{path}"), src)?)?;
        }
        s.add(cases::all())?;
        s.sort();
        Ok(s)
    }

    /// Adds the scripts of a directory (recursively, `*.toml`).
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), SuiteError> {
        let mut files = Vec::new();
        collect(dir, &mut files).map_err(|error| SuiteError::Io {
            path: dir.display().to_string(),
            error,
        })?;
        files.sort();
        for f in files {
            let src = std::fs::read_to_string(&f).map_err(|error| SuiteError::Io {
                path: f.display().to_string(),
                error,
            })?;
            self.add(script::load(&f.display().to_string(), &src)?)?;
        }
        self.sort();
        Ok(())
    }

    fn add(&mut self, cases: Vec<Case>) -> Result<(), SuiteError> {
        for c in cases {
            if let Some(old) = self.cases.iter().find(|o| o.meta.id == c.meta.id) {
                return Err(SuiteError::Duplicate(
                    c.meta.id.to_string(),
                    old.meta.origin.clone(),
                    c.meta.origin.clone(),
                ));
            }
            self.cases.push(c);
        }
        Ok(())
    }

    /// iSCSI before SCSI, then other families; suites by name; cases in
    /// definition order (scripts, then Rust cases) within a suite.
    fn sort(&mut self) {
        let family_rank = |f: &str| match f {
            "iSCSI" => 0u8,
            "SCSI" => 1,
            _ => 2,
        };
        let mut ranked: Vec<(u8, String, usize, Case)> = self
            .cases
            .drain(..)
            .enumerate()
            .map(|(i, c)| (family_rank(&c.meta.id.family), c.meta.id.suite_name(), i, c))
            .collect();
        ranked.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        self.cases = ranked.into_iter().map(|(_, _, _, c)| c).collect();
    }

    /// The `Family.Suite` names, in order.
    pub fn suite_names(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.cases
            .iter()
            .map(|c| c.meta.id.suite_name())
            .filter(|s| seen.insert(s.clone()))
            .collect()
    }

    /// A case by id.
    pub fn get(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.meta.id.to_string() == id)
    }
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_suite_loads_with_unique_ids() {
        let s = Suite::builtin().unwrap();
        let ids: BTreeSet<String> = s.cases.iter().map(|c| c.meta.id.to_string()).collect();
        assert_eq!(ids.len(), s.cases.len());
        assert!(!s.cases.is_empty());
        // iSCSI first.
        assert_eq!(s.cases[0].meta.id.family, "iSCSI");
    }

    /// At least 150 cases, at least 100 at the iSCSI level, and every group
    /// of the protocol the suite promises to cover has cases.
    #[test]
    fn coverage_of_the_builtin_suite() {
        let s = Suite::builtin().unwrap();
        let iscsi = s
            .cases
            .iter()
            .filter(|c| c.meta.id.family == "iSCSI")
            .count();
        assert!(s.cases.len() >= 150, "{} cases", s.cases.len());
        assert!(iscsi >= 100, "{iscsi} iSCSI-level cases");
        let groups = [
            ("login stages and T/C bits", "iSCSI.Login"),
            ("key syntax", "iSCSI.Keys"),
            ("negotiation results and ranges", "iSCSI.Negotiation"),
            ("status classes", "iSCSI.LoginStatus"),
            ("session/connection reinstatement", "iSCSI.Reinstatement"),
            ("digests", "iSCSI.Digest"),
            ("CHAP", "iSCSI.CHAP"),
            ("SendTargets", "iSCSI.Discovery"),
            ("CmdSN window", "iSCSI.CmdSN"),
            ("StatSN", "iSCSI.StatSN"),
            ("ITT", "iSCSI.ITT"),
            ("R2T", "iSCSI.R2T"),
            ("Data-Out", "iSCSI.DataOut"),
            ("Data-In segmentation", "iSCSI.DataIn"),
            ("residuals", "iSCSI.Residual"),
            ("TMF", "iSCSI.TMF"),
            ("NOP", "iSCSI.Nop"),
            ("logout", "iSCSI.Logout"),
            ("text in full feature phase", "iSCSI.Text"),
            ("Reject of malformed PDUs", "iSCSI.Reject"),
        ];
        for (what, suite) in groups {
            let n = s
                .cases
                .iter()
                .filter(|c| c.meta.id.suite_name() == suite)
                .count();
            assert!(n >= 4, "{what} ({suite}) has {n} cases");
        }
        // Every case names its section and a summary.
        for c in &s.cases {
            assert!(
                !super::report::traceability::sections(&c.meta.section).is_empty(),
                "{}",
                c.meta.id
            );
        }
    }

    #[test]
    fn user_scripts_add_to_the_suite_and_clash_loudly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("x")).unwrap();
        let src = "family = \"Vendor\"\nsuite = \"Mine\"\n[[case]]\nname = \"Ping\"\nsection = \"RFC 7143 §11.18\"\nlevel = \"MUST\"\nsummary = \"p\"\n[[case.step]]\nping = 8\n";
        std::fs::write(dir.path().join("x/mine.toml"), src).unwrap();
        let mut s = Suite::builtin().unwrap();
        let n = s.cases.len();
        s.add_dir(dir.path()).unwrap();
        assert_eq!(s.cases.len(), n + 1);
        assert_eq!(
            s.cases.last().unwrap().meta.id.to_string(),
            "Vendor.Mine.Ping"
        );
        let e = s.add_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("Vendor.Mine.Ping is defined twice"), "{e}");
        assert!(s.add_dir(&dir.path().join("missing")).is_err());
    }
}
