//! JUnit XML in the dialect of the Jenkins xUnit plugin's `junit-10.xsd`
//! (what GitLab, GitHub annotations and Jenkins read): one `<testsuite>`
//! per `Family.Suite` and profile (`iSCSI.R2T@digests`), one `<testcase>`
//! per case with `classname` the suite, `<failure>`/`<error>` with the first
//! line as message and the details and PDU trace as text, `<skipped
//! message>` with the reason. The spec section and level go to the case's
//! `<system-out>` (the schema allows no properties on a test case).

use std::collections::BTreeMap;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::super::runner::RunReport;
use super::super::{CaseResult, Outcome};
use super::terminal::detail;

fn case(r: &CaseResult) -> TestCase {
    let status = match &r.outcome {
        Outcome::Pass => TestCaseStatus::success(),
        Outcome::Skip(why) => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(why.as_str());
            s
        }
        Outcome::Fail(f) => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(f.message.lines().next().unwrap_or(""));
            s.set_type(format!("{} {}", r.level, r.section));
            s.set_description(detail(r));
            s
        }
        Outcome::Error(e) => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(e.lines().next().unwrap_or(""));
            s.set_type("harness error");
            s.set_description(detail(r));
            s
        }
    };
    let mut tc = TestCase::new(r.id.name.as_str(), status);
    tc.set_classname(r.suite());
    tc.set_time(r.duration);
    tc.set_system_out(format!("{} {}: {}\n", r.level, r.section, r.summary));
    tc
}

/// The report as XML.
pub fn render(report: &RunReport) -> String {
    let mut suites: BTreeMap<usize, TestSuite> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for r in &report.results {
        let name = r.suite();
        let i = match order.iter().position(|n| *n == name) {
            Some(i) => i,
            None => {
                order.push(name.clone());
                order.len() - 1
            }
        };
        suites
            .entry(i)
            .or_insert_with(|| TestSuite::new(name.as_str()))
            .add_test_case(case(r));
    }
    let mut rep = Report::new("iesp-test conformance");
    rep.set_time(report.duration);
    for (_, mut s) in suites {
        let t: std::time::Duration = report
            .results
            .iter()
            .filter(|r| r.suite() == s.name.as_str())
            .map(|r| r.duration)
            .sum();
        s.set_time(t);
        rep.add_test_suite(s);
    }
    rep.to_string()
        .unwrap_or_else(|e| format!("<!-- cannot serialize the JUnit report: {e} -->\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::case::{CaseId, Level};
    use crate::conformance::exec::Failure;
    use std::time::{Duration, SystemTime};

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
            trace: vec!["+0.1ms → NopOut".into()],
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
            started: SystemTime::now(),
            duration: Duration::from_millis(9),
            target: "t".into(),
        };
        let xml = render(&report);
        assert!(
            xml.contains("<testsuite name=\"iSCSI.Nop\" tests=\"3\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testsuite name=\"iSCSI.Nop@digests\" tests=\"1\""),
            "{xml}"
        );
        assert!(xml.contains("<skipped message=\"needs CHAP\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"bad &lt;echo&gt;\""),
            "{xml}"
        );
        assert!(xml.contains("<error message=\"cannot connect\""), "{xml}");
        assert!(xml.contains("classname=\"iSCSI.Nop@digests\""), "{xml}");
        assert!(xml.contains("echo &lt;data&gt; &amp;"), "{xml}");
    }
}
