//! Baselines: the expected outcome of each case instance on one target,
//! with a note, so CI fails only on a regression.
//!
//! A baseline is a TOML file:
//!
//! ```toml
//! # iesp-test conformance baseline
//! format = 1
//! target = "tgt 1.0.85, file LUN 1"
//!
//! [cases]
//! "iSCSI.Login.BasicNormal" = { outcome = "pass" }
//! "iSCSI.Keys.DuplicateKey" = { outcome = "fail", note = "answers the second offer instead of refusing" }
//! ```
//!
//! Comparing a run with it ([`compare`]): the run **fails** on any error,
//! on a fail where the baseline says pass or skip, and on a skip where it
//! says pass (a case missing from the baseline is expected to pass). A pass
//! where the baseline says fail or skip is reported as "fixed — update the
//! baseline" and does not fail the run. Cases the run did not select are
//! ignored. [`Baseline::from_run`] writes a new one, keeping the notes of
//! entries whose outcome did not change.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::runner::{CaseResult, OutcomeKind};

/// The baseline file format version.
pub const FORMAT: u32 = 1;

/// The committed baseline of the reference target (`iesp-target`), for
/// `iesp-test selftest`.
pub const REFERENCE: &str = include_str!("../../baselines/iesp-target.toml");

/// One expected outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub outcome: OutcomeKind,
    pub note: Option<String>,
}

/// Expected outcomes by instance id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    pub target: Option<String>,
    pub cases: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    outcome: String,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: u32,
    target: Option<String>,
    #[serde(default)]
    cases: BTreeMap<String, FileEntry>,
}

/// A baseline that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("baseline {origin}: {message}")]
pub struct BaselineError {
    pub origin: String,
    pub message: String,
}

impl Baseline {
    /// Parses a baseline file.
    pub fn parse(origin: &str, src: &str) -> Result<Baseline, BaselineError> {
        let err = |message: String| BaselineError {
            origin: origin.to_owned(),
            message,
        };
        let f: File = toml::from_str(src).map_err(|e| err(e.to_string()))?;
        if f.format != FORMAT {
            return Err(err(format!(
                "format {} is not supported (this tool writes format {FORMAT})",
                f.format
            )));
        }
        let mut cases = BTreeMap::new();
        for (id, e) in f.cases {
            let outcome = OutcomeKind::parse(&e.outcome)
                .filter(|k| !matches!(k, OutcomeKind::Error | OutcomeKind::NotRun))
                .ok_or_else(|| {
                    err(format!(
                        "{id}: outcome is pass, fail or skip, not {:?}",
                        e.outcome
                    ))
                })?;
            cases.insert(
                id,
                Entry {
                    outcome,
                    note: e.note,
                },
            );
        }
        Ok(Baseline {
            target: f.target,
            cases,
        })
    }

    /// A baseline from a run; `previous` lends its notes (and the entries
    /// of cases the run did not select).
    pub fn from_run(
        results: &[CaseResult],
        previous: Option<&Baseline>,
        target: Option<String>,
    ) -> Baseline {
        let mut cases = previous.map(|p| p.cases.clone()).unwrap_or_default();
        for r in results {
            let id = r.instance();
            let kind = match r.outcome.kind() {
                // An error is never expected: record it as a failure to fix.
                OutcomeKind::Error => OutcomeKind::Fail,
                // A case the run did not reach says nothing about the target.
                OutcomeKind::NotRun => continue,
                k => k,
            };
            let old = previous.and_then(|p| p.cases.get(&id));
            let note = match (kind, old) {
                (k, Some(o)) if o.outcome == k && o.note.is_some() => o.note.clone(),
                (OutcomeKind::Pass, _) => None,
                _ => Some(first_line(&r.outcome.message())),
            };
            cases.insert(
                id,
                Entry {
                    outcome: kind,
                    note,
                },
            );
        }
        Baseline {
            target: target.or_else(|| previous.and_then(|p| p.target.clone())),
            cases,
        }
    }

    /// The file text.
    pub fn to_toml(&self) -> String {
        let mut s = String::from(
            "# iesp-test conformance baseline: the expected outcome of each case on one target.\n\
             # Written by `iesp-test conformance --update-baseline`; notes are kept across updates.\n",
        );
        let _ = writeln!(s, "format = {FORMAT}");
        if let Some(t) = &self.target {
            let _ = writeln!(s, "target = {}", quote(t));
        }
        s.push_str("\n[cases]\n");
        for (id, e) in &self.cases {
            let _ = write!(s, "{} = {{ outcome = \"{}\"", quote(id), e.outcome.as_str());
            if let Some(n) = &e.note {
                let _ = write!(s, ", note = {}", quote(n));
            }
            s.push_str(" }\n");
        }
        s
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("").trim();
    if l.chars().count() > 160 {
        format!("{}…", l.chars().take(160).collect::<String>())
    } else {
        l.to_owned()
    }
}

/// How one result compares with its baseline entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As the baseline says.
    Expected,
    /// Passes where the baseline expects fail or skip: "fixed — update
    /// the baseline". Does not fail the run.
    Fixed,
    /// Skips where the baseline expects a failure: not a regression, noted.
    NowSkipped,
    /// A regression: fails the run.
    Unexpected,
}

/// One compared result.
#[derive(Clone, Debug)]
pub struct Compared {
    pub instance: String,
    pub expected: Option<OutcomeKind>,
    pub actual: OutcomeKind,
    pub verdict: Verdict,
    pub note: Option<String>,
}

/// A run against a baseline.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub entries: Vec<Compared>,
}

impl Comparison {
    /// True when nothing unexpected happened.
    pub fn ok(&self) -> bool {
        self.entries
            .iter()
            .all(|e| e.verdict != Verdict::Unexpected)
    }

    pub fn unexpected(&self) -> impl Iterator<Item = &Compared> {
        self.entries
            .iter()
            .filter(|e| e.verdict == Verdict::Unexpected)
    }

    pub fn fixed(&self) -> impl Iterator<Item = &Compared> {
        self.entries.iter().filter(|e| e.verdict == Verdict::Fixed)
    }

    /// The lines the terminal report prints.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let exp = |e: &Compared| {
            e.expected
                .map_or("pass (not in the baseline)", |k| k.as_str())
        };
        for e in self.unexpected() {
            let _ = writeln!(
                s,
                "UNEXPECTED {}: {} where the baseline expects {}",
                e.instance,
                e.actual.as_str(),
                exp(e)
            );
        }
        for e in self.fixed() {
            let _ = writeln!(
                s,
                "fixed — update the baseline: {} now passes (baseline: {})",
                e.instance,
                exp(e)
            );
        }
        for e in self
            .entries
            .iter()
            .filter(|e| e.verdict == Verdict::NowSkipped)
        {
            let _ = writeln!(
                s,
                "note: {} skipped where the baseline expects a failure",
                e.instance
            );
        }
        let n = self.unexpected().count();
        let _ = writeln!(
            s,
            "baseline: {} as expected, {} unexpected, {} fixed",
            self.entries
                .iter()
                .filter(|e| e.verdict == Verdict::Expected)
                .count(),
            n,
            self.fixed().count()
        );
        s
    }
}

/// Compares results with a baseline (see the module docs for the rules).
pub fn compare(results: &[CaseResult], baseline: &Baseline) -> Comparison {
    use OutcomeKind::*;
    let entries = results
        .iter()
        .map(|r| {
            let instance = r.instance();
            let entry = baseline.cases.get(&instance);
            let expected = entry.map(|e| e.outcome);
            let actual = r.outcome.kind();
            let verdict = match (expected.unwrap_or(Pass), actual) {
                (_, Error) => Verdict::Unexpected,
                (e, a) if e == a => Verdict::Expected,
                (Fail | Skip, Pass) => Verdict::Fixed,
                (Fail, Skip) => Verdict::NowSkipped,
                _ => Verdict::Unexpected,
            };
            Compared {
                instance,
                expected,
                actual,
                verdict,
                note: entry.and_then(|e| e.note.clone()),
            }
        })
        .collect();
    Comparison { entries }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::case::{CaseId, Level};
    use crate::conformance::exec::Failure;
    use crate::conformance::runner::Outcome;
    use std::time::Duration;

    fn r(name: &str, profile: &'static str, outcome: Outcome) -> CaseResult {
        CaseResult {
            id: CaseId::new("iSCSI", "T", name),
            profile,
            section: "s".into(),
            level: Level::Must,
            summary: "x".into(),
            outcome,
            duration: Duration::ZERO,
            trace: vec![],
            notes: vec![],
        }
    }

    fn fail(msg: &str) -> Outcome {
        Outcome::Fail(Failure {
            message: msg.into(),
            mismatches: vec![],
        })
    }

    #[test]
    fn round_trip_and_notes_kept() {
        let results = vec![
            r("A", "default", Outcome::Pass),
            r("B", "digests", fail("StatSN 7 where 6 was due\nmore")),
            r("C", "default", Outcome::Skip("needs CHAP".into())),
        ];
        let b = Baseline::from_run(&results, None, Some("demo \"target\"".into()));
        let text = b.to_toml();
        assert!(text.contains("\"iSCSI.T.B@digests\" = { outcome = \"fail\", note = \"StatSN 7 where 6 was due\" }"), "{text}");
        let back = Baseline::parse("b.toml", &text).unwrap();
        assert_eq!(back, b);
        // An edited note survives an update with the same outcome.
        let mut edited = back.clone();
        edited.cases.get_mut("iSCSI.T.B@digests").unwrap().note = Some("known: tgt bug".into());
        let again = Baseline::from_run(&results, Some(&edited), None);
        assert_eq!(
            again.cases["iSCSI.T.B@digests"].note.as_deref(),
            Some("known: tgt bug")
        );
        assert_eq!(again.target.as_deref(), Some("demo \"target\""));
    }

    #[test]
    fn comparison_rules() {
        let mut b = Baseline::default();
        let e = |o| Entry {
            outcome: o,
            note: None,
        };
        b.cases.insert("iSCSI.T.P".into(), e(OutcomeKind::Pass));
        b.cases.insert("iSCSI.T.F".into(), e(OutcomeKind::Fail));
        b.cases.insert("iSCSI.T.S".into(), e(OutcomeKind::Skip));
        b.cases.insert("iSCSI.T.G".into(), e(OutcomeKind::Fail));
        let results = vec![
            r("P", "default", fail("x")),                 // regression
            r("F", "default", Outcome::Pass),             // fixed
            r("S", "default", Outcome::Skip("s".into())), // as expected
            r("G", "default", Outcome::Skip("s".into())), // now skipped
            r("N", "default", Outcome::Pass),             // new, passes
            r("M", "default", Outcome::Skip("s".into())), // new, skips: regression
            r("E", "default", Outcome::Error("boom".into())),
        ];
        let c = compare(&results, &b);
        let v: Vec<Verdict> = c.entries.iter().map(|x| x.verdict).collect();
        assert_eq!(
            v,
            vec![
                Verdict::Unexpected,
                Verdict::Fixed,
                Verdict::Expected,
                Verdict::NowSkipped,
                Verdict::Expected,
                Verdict::Unexpected,
                Verdict::Unexpected
            ]
        );
        assert!(!c.ok());
        let d = c.describe();
        assert!(
            d.contains("fixed — update the baseline: iSCSI.T.F now passes"),
            "{d}"
        );
        assert!(
            d.contains("UNEXPECTED iSCSI.T.P: fail where the baseline expects pass"),
            "{d}"
        );
        assert!(
            d.contains(
                "UNEXPECTED iSCSI.T.M: skip where the baseline expects pass (not in the baseline)"
            ),
            "{d}"
        );
        assert!(compare(&results[1..5], &b).ok());
    }

    #[test]
    fn bad_baselines_are_refused() {
        assert!(
            Baseline::parse("x", "format = 2\n")
                .unwrap_err()
                .to_string()
                .contains("format 2")
        );
        let e = Baseline::parse(
            "x",
            "format = 1\n[cases]\n\"a.b.c\" = { outcome = \"error\" }\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("pass, fail or skip"), "{e}");
        assert!(Baseline::parse("x", "format = 1\ncolour = 1\n").is_err());
    }
}
