//! JSON lines: one object per line. The first is the run header: the
//! common envelope (`schema` `iesp-test/conformance-jsonl/3`,
//! `tool_version`, `started_at`, `seed`, `args`, `interrupted`, see
//! [`iesp_cli::envelope`]) followed by `"type": "run"` and the target;
//! then one `"type": "case"` per case instance, then a `"type": "summary"`.
//! Field names are stable within a schema version; every line validates
//! against `docs/schemas/conformance-jsonl.schema.json`.

use iesp_cli::envelope::Envelope;
use serde_json::{Value, json};

use super::super::runner::{OutcomeKind, RunReport};
use super::super::{CaseResult, Outcome};

/// The header line: the envelope, then the run.
pub fn header(report: &RunReport, envelope: &Envelope) -> String {
    envelope
        .to_line(&json!({
            "type": "run",
            "tool": "iesp-test conformance",
            "target": report.target,
            "notes": report.notes,
        }))
        // A map of strings and numbers always serializes.
        .unwrap_or_default()
}

/// One case line.
pub fn case(r: &CaseResult) -> Value {
    let mismatches: Vec<Value> = match &r.outcome {
        Outcome::Fail(f) => f
            .mismatches
            .iter()
            .map(|m| json!({"what": m.what, "expected": m.expected, "actual": m.actual}))
            .collect(),
        _ => Vec::new(),
    };
    json!({
        "type": "case",
        "id": r.id.to_string(),
        "instance": r.instance(),
        "suite": r.suite(),
        "profile": r.profile,
        "section": r.section,
        "level": r.level.as_str(),
        "summary": r.summary,
        "outcome": r.outcome.kind().as_str(),
        "message": r.outcome.message(),
        "mismatches": mismatches,
        "duration_ms": r.duration.as_secs_f64() * 1000.0,
        "trace": r.trace,
        "notes": r.notes,
    })
}

/// The whole report, newline-terminated lines.
pub fn render(report: &RunReport, envelope: &Envelope) -> String {
    let mut lines = vec![header(report, envelope)];
    lines.extend(report.results.iter().map(|r| case(r).to_string()));
    lines.push(
        json!({
            "type": "summary",
            "cases": report.results.len(),
            "pass": report.count(OutcomeKind::Pass),
            "fail": report.count(OutcomeKind::Fail),
            "skip": report.count(OutcomeKind::Skip),
            "error": report.count(OutcomeKind::Error),
            "not_run": report.count(OutcomeKind::NotRun),
            "killer": report.killer,
            "unclean": report.unclean_summary(report.results.len()),
            "duration_ms": report.duration.as_secs_f64() * 1000.0,
            "interrupted": envelope.interrupted,
        })
        .to_string(),
    );
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::case::{CaseId, Level};
    use crate::conformance::exec::Failure;
    use crate::conformance::matchers::Mismatch;
    use std::time::{Duration, SystemTime};

    #[test]
    fn every_line_parses_and_the_header_is_the_envelope() {
        let report = RunReport {
            killer: None,
            notes: Vec::new(),
            results: vec![CaseResult {
                id: CaseId::new("iSCSI", "StatSN", "Increments"),
                profile: "digests",
                section: "RFC 7143 §4.2.2.2".into(),
                level: Level::Must,
                summary: "+1".into(),
                outcome: Outcome::Fail(Failure {
                    message: "m".into(),
                    mismatches: vec![Mismatch {
                        what: "NopIn.StatSN".into(),
                        expected: "5".into(),
                        actual: "6".into(),
                    }],
                }),
                duration: Duration::from_micros(1500),
                trace: vec!["a".into()],
                notes: vec![],
            }],
            started: SystemTime::now(),
            duration: Duration::from_millis(3),
            interrupted: false,
            target: "t".into(),
        };
        let env = crate::conformance::report::envelope(
            report.started,
            7,
            vec!["iesp-test".into(), "conformance".into()],
            false,
        );
        let text = render(&report, &env);
        let values: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(values.len(), 3);
        assert_eq!(values[0]["type"], "run");
        assert_eq!(values[0]["schema"], "iesp-test/conformance-jsonl/3");
        assert_eq!(values[0]["seed"], 7);
        assert_eq!(values[0]["args"][1], "conformance");
        assert_eq!(values[0]["interrupted"], false);
        assert!(text.starts_with("{\"schema\":"), "the envelope comes first");
        assert_eq!(values[1]["instance"], "iSCSI.StatSN.Increments@digests");
        assert_eq!(values[1]["mismatches"][0]["actual"], "6");
        assert_eq!(values[1]["duration_ms"], 1.5);
        assert_eq!(values[2]["fail"], 1);
    }
}
