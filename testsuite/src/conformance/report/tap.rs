//! TAP version 14 (testanything.org), streamed as cases finish: `ok N - id`
//! for a pass, `ok N - id # SKIP reason` for a skip, `not ok N - id` for a
//! fail or an error with a YAML diagnostic block (outcome, section, level,
//! message, PDU trace). The run's seed and start time follow the plan as
//! comments (`# seed: N`, `# started_at: …`), so a TAP log says how to
//! repeat its run; an interrupted run ends with `# interrupted: true`.

use std::fmt::Write as _;
use std::io::Write;

use iesp_cli::envelope::Envelope;

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
        Outcome::NotRun(why) => {
            let _ = writeln!(
                s,
                "ok {n} - {id} # SKIP NOT RUN: {}",
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

/// The version line, the plan and the run comments.
fn head(planned: usize, envelope: &Envelope) -> String {
    let mut s = format!("{HEADER}\n1..{planned}\n");
    if let Some(seed) = envelope.seed {
        let _ = writeln!(s, "# seed: {seed}");
    }
    let _ = writeln!(s, "# started_at: {}", envelope.started_at_string());
    let _ = writeln!(s, "# tool_version: {}", envelope.tool_version);
    s
}

/// A whole report as TAP.
pub fn render(report: &RunReport, envelope: &Envelope) -> String {
    let mut s = head(report.results.len(), envelope);
    for n in &report.notes {
        let _ = writeln!(s, "# note: {}", n.replace('\n', " "));
    }
    for (i, r) in report.results.iter().enumerate() {
        s.push_str(&point(i + 1, r));
    }
    if let Some(k) = &report.killer {
        let _ = writeln!(s, "# probable killer: {k}");
    }
    if envelope.interrupted {
        s.push_str("# interrupted: true\n");
    }
    s
}

/// Streams TAP to a writer.
pub struct TapStream<W: Write + Send> {
    out: W,
    n: usize,
    envelope: Envelope,
}

impl<W: Write + Send> TapStream<W> {
    /// `envelope` gives the seed and start time written after the plan.
    pub fn new(out: W, envelope: Envelope) -> TapStream<W> {
        TapStream {
            out,
            n: 0,
            envelope,
        }
    }
}

impl<W: Write + Send> Listener for TapStream<W> {
    fn started(&mut self, plan: &[Planned], _suite: &Suite) {
        let _ = write!(self.out, "{}", head(plan.len(), &self.envelope));
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
            killer: None,
            notes: Vec::new(),
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
        let env = crate::conformance::report::envelope(
            std::time::UNIX_EPOCH + Duration::from_secs(1_795_269_449),
            99,
            vec![],
            false,
        );
        let t = render(&report, &env);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "TAP version 14");
        assert_eq!(lines[1], "1..3");
        assert_eq!(lines[2], "# seed: 99");
        assert_eq!(lines[3], "# started_at: 2026-11-21T13:57:29.000Z");
        assert!(lines[4].starts_with("# tool_version: "));
        assert_eq!(lines[5], "ok 1 - iSCSI.Nop.A");
        assert_eq!(lines[6], "ok 2 - iSCSI.Nop.A # SKIP needs \\# CHAP");
        assert_eq!(lines[7], "not ok 3 - iSCSI.Nop.A");
        assert!(t.contains("  message: \"no\\necho\"\n"), "{t}");
        assert!(t.contains("    - \"+0.1ms → NopOut \\\"x\\\"\"\n"), "{t}");
        assert!(t.ends_with("  ...\n"));
        let t = render(&report, &env.interrupted(true));
        assert!(t.ends_with("  ...\n# interrupted: true\n"), "{t}");
    }
}
