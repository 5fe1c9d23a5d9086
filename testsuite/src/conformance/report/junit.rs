//! JUnit XML in the dialect of the Jenkins xUnit plugin's `junit-10.xsd`,
//! the schema CI servers (Jenkins, GitLab, GitHub test reporters) agree
//! on: one `<testsuite>` per `Family.Suite` and profile
//! (`iSCSI.R2T@digests`), one `<testcase>` per case with `classname` the
//! suite, `<failure>` / `<error>` with the first line as `message` and the
//! details and PDU trace as text, `<skipped message>` with the reason. The
//! spec section and level go to the case's `<system-out>` (the schema
//! allows no properties on a test case). Each `<testsuite>` carries the
//! run's envelope as `<properties>`: `seed`, `schema`, `tool_version`,
//! `started_at`, `args`, `interrupted` and `target`; then `probable_killer`
//! when the target died during the run, and the run's notes (`note.1`, …:
//! profiles, exclusions, tolerated login answers). A case the run did not
//! reach is `<skipped message="NOT RUN: …">`.
//!
//! The document model and XML escaping are `quick-junit`'s (it also drops
//! characters XML 1.0 cannot carry and ANSI escapes). One adjustment:
//! quick-junit always writes a `skipped` count on the root `<testsuites>`,
//! an attribute `junit-10.xsd` does not define there (skips are counted
//! per `<testsuite>`), so it is taken off the root tag.
//! `testsuite/schemas/junit-10.xsd` restates the schema's rules; a test
//! validates the output against it with `xmllint`.

use std::time::Duration;

use iesp_cli::envelope::Envelope;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::super::runner::RunReport;
use super::super::{CaseResult, Outcome};
use super::terminal::detail;

/// The name of the root element.
const REPORT_NAME: &str = "iesp-test conformance";

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn case(r: &CaseResult) -> TestCase {
    let status = match &r.outcome {
        Outcome::Pass => TestCaseStatus::success(),
        Outcome::Skip(why) => {
            let mut st = TestCaseStatus::skipped();
            st.set_message(why.as_str());
            st
        }
        Outcome::Fail(f) => {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
            st.set_message(first_line(&f.message))
                .set_type(format!("{} {}", r.level, r.section))
                .set_description(detail(r));
            st
        }
        Outcome::Error(e) => {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
            st.set_message(first_line(e))
                .set_type("harness error")
                .set_description(detail(r));
            st
        }
        // JUnit has no "not run": a skip whose message says so.
        Outcome::NotRun(why) => {
            let mut st = TestCaseStatus::skipped();
            st.set_message(format!("NOT RUN: {}", first_line(why)));
            st
        }
    };
    let mut tc = TestCase::new(r.id.name.as_str(), status);
    tc.set_classname(r.suite())
        .set_time(r.duration)
        .set_system_out(format!("{} {}: {}", r.level, r.section, r.summary));
    tc
}

/// The envelope as JUnit properties.
fn properties(report: &RunReport, envelope: &Envelope) -> Vec<Property> {
    let mut p = Vec::with_capacity(7);
    if let Some(seed) = envelope.seed {
        p.push(Property::new("seed", seed.to_string()));
    }
    p.extend([
        Property::new("schema", envelope.schema.as_str()),
        Property::new("tool_version", envelope.tool_version.as_str()),
        Property::new("started_at", envelope.started_at_string()),
        Property::new("args", envelope.args.join(" ")),
        Property::new("interrupted", envelope.interrupted.to_string()),
        Property::new("target", report.target.as_str()),
    ]);
    if let Some(k) = &report.killer {
        p.push(Property::new("probable_killer", k.as_str()));
    }
    for (i, n) in report.notes.iter().enumerate() {
        p.push(Property::new(format!("note.{}", i + 1), n.as_str()));
    }
    p
}

/// The report as a quick-junit document.
pub fn document(report: &RunReport, envelope: &Envelope) -> Report {
    let mut order: Vec<String> = Vec::new();
    for r in &report.results {
        let name = r.suite();
        if !order.contains(&name) {
            order.push(name);
        }
    }
    let props = properties(report, envelope);
    let stamp = chrono::DateTime::<chrono::Utc>::from(report.started);
    let mut doc = Report::new(REPORT_NAME);
    doc.set_time(report.duration);
    for name in order {
        let mut suite = TestSuite::new(name.as_str());
        suite
            .set_timestamp(stamp)
            .add_properties(props.iter().cloned());
        let mut time = Duration::ZERO;
        for r in report.results.iter().filter(|r| r.suite() == name) {
            time += r.duration;
            suite.add_test_case(case(r));
        }
        suite.set_time(time);
        doc.add_test_suite(suite);
    }
    doc
}

/// The report as XML.
pub fn render(report: &RunReport, envelope: &Envelope) -> String {
    // Serializing a document built from strings into memory cannot fail;
    // an empty report would be caught by the schema tests.
    let xml = document(report, envelope).to_string().unwrap_or_default();
    strip_root_skipped(xml)
}

/// Removes the `skipped="N"` attribute of the root `<testsuites>` start tag.
fn strip_root_skipped(mut xml: String) -> String {
    let Some(start) = xml.find("<testsuites") else {
        return xml;
    };
    let end = xml[start..].find('>').map_or(xml.len(), |e| start + e);
    if let Some(at) = xml[start..end].find(" skipped=\"") {
        let at = start + at;
        let value = at + " skipped=\"".len();
        if let Some(close) = xml[value..end].find('"') {
            xml.replace_range(at..value + close + 1, "");
        }
    }
    xml
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::case::{CaseId, Level};
    use crate::conformance::exec::Failure;
    use std::time::UNIX_EPOCH;

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
            killer: None,
            notes: Vec::new(),
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
        let env = crate::conformance::report::envelope(
            report.started,
            4242,
            vec![
                "iesp-test".into(),
                "conformance".into(),
                "--embedded".into(),
            ],
            false,
        );
        let xml = render(&report, &env);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"iesp-test conformance\" tests=\"4\" failures=\"1\" errors=\"1\" time=\"0.009\">"), "{xml}");
        assert!(
            xml.contains("<testsuite name=\"iSCSI.Nop\" tests=\"3\" skipped=\"1\" errors=\"1\" failures=\"0\" timestamp=\"2026-11-21T13:57:29.000+00:00\" time=\"0.006\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<property name=\"seed\" value=\"4242\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<property name=\"args\" value=\"iesp-test conformance --embedded\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<property name=\"schema\" value=\"iesp-test/conformance-jsonl/3\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<testsuite name=\"iSCSI.Nop@digests\" tests=\"1\" skipped=\"0\" errors=\"0\" failures=\"1\""),
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
    fn only_the_root_skipped_count_goes() {
        let xml = "<?xml?>\n<testsuites name=\"a\" tests=\"1\" skipped=\"12\" failures=\"0\">\n  <testsuite skipped=\"3\">".to_owned();
        assert_eq!(
            strip_root_skipped(xml),
            "<?xml?>\n<testsuites name=\"a\" tests=\"1\" failures=\"0\">\n  <testsuite skipped=\"3\">"
        );
    }
}
