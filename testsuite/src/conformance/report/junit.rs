//! JUnit XML in the dialect of the Jenkins xUnit plugin's `junit-10.xsd`,
//! the schema CI servers (Jenkins, GitLab, GitHub test reporters) agree
//! on: one `<testsuite>` per `Family.Suite` and profile
//! (`iSCSI.R2T@digests`), one `<testcase>` per case with `classname` the
//! suite, `<failure>` / `<error>` with the first line as `message` and the
//! details and PDU trace as text, `<skipped message>` with the reason. The
//! spec section and level go to the case's `<system-out>` (the schema
//! allows no properties on a test case).
//!
//! Written here rather than with `quick-junit`, which always adds a
//! `disabled` attribute to `<testsuite>` that `junit-10.xsd` does not
//! allow. `testsuite/schemas/junit-10.xsd` restates the schema's rules; a
//! test validates the output against it with `xmllint`.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::super::runner::{OutcomeKind, RunReport};
use super::super::{CaseResult, Outcome};
use super::terminal::detail;

/// Escapes text for an XML attribute or element, dropping characters XML
/// 1.0 cannot carry (control characters other than tab, CR and LF).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn case(s: &mut String, r: &CaseResult) {
    let _ = writeln!(
        s,
        "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\">",
        escape(&r.id.name),
        escape(&r.suite()),
        secs(r.duration)
    );
    match &r.outcome {
        Outcome::Pass => {}
        Outcome::Skip(why) => {
            let _ = writeln!(s, "      <skipped message=\"{}\"/>", escape(why));
        }
        Outcome::Fail(f) => {
            let _ = writeln!(
                s,
                "      <failure message=\"{}\" type=\"{}\">{}</failure>",
                escape(f.message.lines().next().unwrap_or("")),
                escape(&format!("{} {}", r.level, r.section)),
                escape(&detail(r))
            );
        }
        Outcome::Error(e) => {
            let _ = writeln!(
                s,
                "      <error message=\"{}\" type=\"harness error\">{}</error>",
                escape(e.lines().next().unwrap_or("")),
                escape(&detail(r))
            );
        }
    }
    let _ = writeln!(
        s,
        "      <system-out>{}</system-out>",
        escape(&format!("{} {}: {}", r.level, r.section, r.summary))
    );
    s.push_str("    </testcase>\n");
}

/// The report as XML.
pub fn render(report: &RunReport) -> String {
    let mut order: Vec<String> = Vec::new();
    for r in &report.results {
        let name = r.suite();
        if !order.contains(&name) {
            order.push(name);
        }
    }
    let n = |k: OutcomeKind| report.count(k);
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"iesp-test conformance\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{}\">",
        report.results.len(),
        n(OutcomeKind::Fail),
        n(OutcomeKind::Error),
        secs(report.duration)
    );
    let stamp = report
        .started
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for name in order {
        let rs: Vec<&CaseResult> = report
            .results
            .iter()
            .filter(|r| r.suite() == name)
            .collect();
        let count = |k: OutcomeKind| rs.iter().filter(|r| r.outcome.kind() == k).count();
        let time: Duration = rs.iter().map(|r| r.duration).sum();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\" timestamp=\"{}\">",
            escape(&name),
            rs.len(),
            count(OutcomeKind::Fail),
            count(OutcomeKind::Error),
            count(OutcomeKind::Skip),
            secs(time),
            iso8601(stamp)
        );
        if report.interrupted {
            s.push_str("    <properties>\n      <property name=\"interrupted\" value=\"true\"/>\n    </properties>\n");
        }
        for r in rs {
            case(&mut s, r);
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

/// `2026-11-21T13:57:29` (UTC) from Unix seconds, without a date crate.
fn iso8601(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::case::{CaseId, Level};
    use crate::conformance::exec::Failure;

    #[test]
    fn suites_cases_and_statuses() {
        let mk = |name: &str, profile: &'static str, outcome| CaseResult {
            id: CaseId::new("iSCSI", "Nop", name),
            profile,
            section: "RFC 7143 §11.18".into(),
            level: Level::Must,
            summary: "echo <data> & \"tags\"".into(),
            outcome,
            duration: Duration::from_millis(2),
            trace: vec!["+0.1ms → NopOut\u{1}".into()],
            notes: vec![],
        };
        let report = RunReport {
            results: vec![
                mk("A", "default", Outcome::Pass),
                mk("B", "default", Outcome::Skip("needs CHAP".into())),
                mk(
                    "A",
                    "digests",
                    Outcome::Fail(Failure {
                        message: "bad <echo>".into(),
                        mismatches: vec![],
                    }),
                ),
                mk("C", "default", Outcome::Error("cannot connect".into())),
            ],
            started: UNIX_EPOCH + Duration::from_secs(1_795_269_449),
            duration: Duration::from_millis(9),
            interrupted: false,
            target: "t".into(),
        };
        let xml = render(&report);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"iesp-test conformance\" tests=\"4\" failures=\"1\" errors=\"1\" time=\"0.009\">"), "{xml}");
        assert!(
            xml.contains("<testsuite name=\"iSCSI.Nop\" tests=\"3\" failures=\"0\" errors=\"1\" skipped=\"1\" time=\"0.006\" timestamp=\"2026-11-21T13:57:29\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<testsuite name=\"iSCSI.Nop@digests\" tests=\"1\" failures=\"1\""),
            "{xml}"
        );
        assert!(xml.contains("<skipped message=\"needs CHAP\"/>"), "{xml}");
        assert!(
            xml.contains("<failure message=\"bad &lt;echo&gt;\" type=\"MUST RFC 7143 §11.18\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<error message=\"cannot connect\" type=\"harness error\">"),
            "{xml}"
        );
        assert!(xml.contains("classname=\"iSCSI.Nop@digests\""), "{xml}");
        assert!(
            xml.contains("echo &lt;data&gt; &amp; &quot;tags&quot;"),
            "{xml}"
        );
        assert!(!xml.contains('\u{1}'), "control characters are dropped");
    }

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(iso8601(1_795_269_449), "2026-11-21T13:57:29");
    }
}
