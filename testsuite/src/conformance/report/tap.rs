//! TAP version 14 (testanything.org), streamed as cases finish: `ok N - id`
//! for a pass, `ok N - id # SKIP reason` for a skip, `not ok N - id` for a
//! fail or an error with a YAML diagnostic block (outcome, section, level,
//! message, PDU trace).

use std::fmt::Write as _;
use std::io::Write;

use super::super::runner::{Listener, Planned, RunReport};
use super::super::{CaseResult, Outcome, Suite};

/// The version line.
pub const HEADER: &str = "TAP version 14";

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The lines of one test point.
pub fn point(n: usize, r: &CaseResult) -> String {
    let id = r.instance();
    let mut s = String::new();
    match &r.outcome {
        Outcome::Pass => {
            let _ = writeln!(s, "ok {n} - {id}");
        }
        Outcome::Skip(why) => {
            let _ = writeln!(
                s,
                "ok {n} - {id} # SKIP {}",
                why.replace('#', "\\#").replace('\n', " ")
            );
        }
        Outcome::Fail(_) | Outcome::Error(_) => {
            let _ = writeln!(s, "not ok {n} - {id}");
            let _ = writeln!(s, "  ---");
            let _ = writeln!(s, "  outcome: {}", r.outcome.kind().as_str());
            let _ = writeln!(s, "  section: {}", yaml_str(&r.section));
            let _ = writeln!(s, "  level: {}", r.level);
            let _ = writeln!(s, "  message: {}", yaml_str(&r.outcome.message()));
            if !r.trace.is_empty() {
                let _ = writeln!(s, "  trace:");
                for t in &r.trace {
                    let _ = writeln!(s, "    - {}", yaml_str(t));
                }
            }
            let _ = writeln!(s, "  ...");
        }
    }
    s
}

/// A whole report as TAP.
pub fn render(report: &RunReport) -> String {
    let mut s = format!("{HEADER}\n1..{}\n", report.results.len());
    for (i, r) in report.results.iter().enumerate() {
        s.push_str(&point(i + 1, r));
    }
    if report.interrupted {
        // TAP's way to say the run stopped early.
        s.push_str("Bail out! interrupted\n");
    }
    s
}

/// Streams TAP to a writer.
pub struct TapStream<W: Write + Send> {
    out: W,
    n: usize,
}

impl<W: Write + Send> TapStream<W> {
    pub fn new(out: W) -> TapStream<W> {
        TapStream { out, n: 0 }
    }
}

impl<W: Write + Send> Listener for TapStream<W> {
    fn started(&mut self, plan: &[Planned], _suite: &Suite) {
        let _ = writeln!(self.out, "{HEADER}\n1..{}", plan.len());
    }

    fn finished(&mut self, r: &CaseResult) {
        self.n += 1;
        let _ = write!(self.out, "{}", point(self.n, r));
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::case::{CaseId, Level};
    use crate::conformance::exec::Failure;
    use std::time::{Duration, SystemTime};

    #[test]
    fn tap_points() {
        let mk = |outcome| CaseResult {
            id: CaseId::new("iSCSI", "Nop", "A"),
            profile: "default",
            section: "RFC 7143 §11.18".into(),
            level: Level::Must,
            summary: "x".into(),
            outcome,
            duration: Duration::ZERO,
            trace: vec!["+0.1ms → NopOut \"x\"".into()],
            notes: vec![],
        };
        let report = RunReport {
            results: vec![
                mk(Outcome::Pass),
                mk(Outcome::Skip("needs # CHAP".into())),
                mk(Outcome::Fail(Failure {
                    message: "no\necho".into(),
                    mismatches: vec![],
                })),
            ],
            started: SystemTime::now(),
            duration: Duration::ZERO,
            interrupted: false,
            target: "t".into(),
        };
        let t = render(&report);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "TAP version 14");
        assert_eq!(lines[1], "1..3");
        assert_eq!(lines[2], "ok 1 - iSCSI.Nop.A");
        assert_eq!(lines[3], "ok 2 - iSCSI.Nop.A # SKIP needs \\# CHAP");
        assert_eq!(lines[4], "not ok 3 - iSCSI.Nop.A");
        assert!(t.contains("  message: \"no\\necho\"\n"), "{t}");
        assert!(t.contains("    - \"+0.1ms → NopOut \\\"x\\\"\"\n"), "{t}");
        assert!(t.ends_with("  ...\n"));
    }
}
