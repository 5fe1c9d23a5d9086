//! The terminal report: one line per case as it finishes, then failures in
//! detail (expected against actual, field by field, and the PDU trace),
//! counts per suite and a total.

use std::fmt::Write as _;
use std::io::Write;

use comfy_table::{CellAlignment, ContentArrangement, Table};

use super::super::runner::{Listener, OutcomeKind, Planned, RunReport};
use super::super::{CaseResult, Outcome, Suite};

/// Prints progress lines to a writer.
pub struct Progress<W: Write + Send> {
    out: W,
    total: usize,
    done: usize,
    /// Print failure details as they happen.
    pub verbose: bool,
    /// Cases not run so far: only the first gets a line.
    not_run: usize,
}

impl<W: Write + Send> Progress<W> {
    pub fn new(out: W, verbose: bool) -> Progress<W> {
        Progress {
            out,
            total: 0,
            done: 0,
            verbose,
            not_run: 0,
        }
    }
}

impl<W: Write + Send> Listener for Progress<W> {
    fn started(&mut self, plan: &[Planned], _suite: &Suite) {
        self.total = plan.len();
    }

    fn finished(&mut self, r: &CaseResult) {
        self.done += 1;
        if let Outcome::NotRun(_) = r.outcome {
            self.not_run += 1;
            if self.not_run > 1 {
                return;
            }
            let _ = writeln!(
                self.out,
                "{} (and every later case: see the summary)",
                line(r, self.done, self.total)
            );
            let _ = self.out.flush();
            return;
        }
        for n in r
            .notes
            .iter()
            .filter(|n| n.starts_with("the target stopped answering"))
        {
            let _ = writeln!(self.out, "  note: {n}");
        }
        let _ = writeln!(self.out, "{}", line(r, self.done, self.total));
        if self.verbose && !matches!(r.outcome, Outcome::Pass | Outcome::Skip(_)) {
            let _ = write!(self.out, "{}", detail(r));
        }
        let _ = self.out.flush();
    }
}

fn tag(k: OutcomeKind) -> &'static str {
    match k {
        OutcomeKind::Pass => "PASS ",
        OutcomeKind::Fail => "FAIL ",
        OutcomeKind::Skip => "SKIP ",
        OutcomeKind::Error => "ERROR",
        OutcomeKind::NotRun => "NOT RUN",
    }
}

/// `[ 12/170] PASS  iSCSI.Login.BasicNormal (3 ms)`.
pub fn line(r: &CaseResult, n: usize, total: usize) -> String {
    let w = total.to_string().len();
    let mut s = format!(
        "[{n:>w$}/{total}] {} {}",
        tag(r.outcome.kind()),
        r.instance()
    );
    match &r.outcome {
        Outcome::Pass => {
            let _ = write!(s, " ({:.1} ms)", r.duration.as_secs_f64() * 1000.0);
        }
        Outcome::Skip(why) => {
            let _ = write!(s, " — {why}");
        }
        Outcome::Fail(f) => {
            let _ = write!(
                s,
                " — {} {}: {}",
                r.level,
                r.section,
                f.message.lines().next().unwrap_or("")
            );
        }
        Outcome::Error(e) | Outcome::NotRun(e) => {
            let _ = write!(s, " — {}", e.lines().next().unwrap_or(""));
        }
    }
    s
}

/// A failure or error in full.
pub fn detail(r: &CaseResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  {} ({} {}): {}",
        r.instance(),
        r.level,
        r.section,
        r.summary
    );
    for l in r.outcome.message().lines() {
        let _ = writeln!(s, "    {l}");
    }
    for n in &r.notes {
        let _ = writeln!(s, "    note: {n}");
    }
    if !r.trace.is_empty() {
        let _ = writeln!(s, "    PDU trace (oldest first):");
        for t in &r.trace {
            let _ = writeln!(s, "      {t}");
        }
    }
    s
}

/// Counts per suite, as a table.
pub fn suite_table(report: &RunReport) -> Table {
    let not_run = report.count(OutcomeKind::NotRun) > 0;
    let mut header = vec!["suite", "pass", "fail", "skip", "error"];
    if not_run {
        header.push("not run");
    }
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.clone());
    if let Some(c) = t.column_mut(0) {
        c.set_padding((0, 1));
    }
    for (name, c) in super::suite_counts(&report.results) {
        let mut row = vec![name];
        row.extend(c[..header.len() - 1].iter().map(ToString::to_string));
        t.add_row(row);
    }
    for i in 1..header.len() {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// The planned case instances (`conformance --list`), one row each.
pub fn plan_table(suite: &Suite, plan: &[Planned]) -> Table {
    let mut t = table(["instance", "level", "section", "summary"]);
    for p in plan {
        let Some(c) = suite.cases.get(p.case) else {
            continue;
        };
        let m = &c.meta;
        let flags = if m.destructive { " [destructive]" } else { "" };
        t.add_row([
            p.instance.clone(),
            m.level.to_string(),
            m.section.clone(),
            format!("{}{flags}", m.summary),
        ]);
    }
    t
}

/// A borderless table with a header line, sized to its content (never
/// wrapped: reports are read in logs as often as on terminals).
fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    if let Some(c) = t.column_mut(0) {
        c.set_padding((0, 1));
    }
    t
}

/// The run's notes (seed, profiles, exclusions, tolerated login answers,
/// the probable killer), one per line: what the terminal prints first and
/// every report carries at its top.
pub fn notes(report: &RunReport) -> String {
    let mut s = String::new();
    for n in &report.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// Failures in detail, counts per suite, the total.
pub fn summary(report: &RunReport) -> String {
    let mut s = String::new();
    if !report.notes.is_empty() {
        let _ = write!(s, "\n{}", notes(report));
    }
    let bad: Vec<&CaseResult> = report
        .results
        .iter()
        .filter(|r| matches!(r.outcome.kind(), OutcomeKind::Fail | OutcomeKind::Error))
        .collect();
    if !bad.is_empty() {
        let _ = writeln!(s, "\nFailures and errors:");
        for r in &bad {
            s.push_str(&detail(r));
        }
    }
    let _ = writeln!(s, "\n{}", suite_table(report));
    let n = |k| report.count(k);
    let _ = writeln!(
        s,
        "\n{} case instances against {}: {} pass, {} fail, {} skip, {} error in {:.1} s",
        report.results.len(),
        report.target,
        n(OutcomeKind::Pass),
        n(OutcomeKind::Fail),
        n(OutcomeKind::Skip),
        n(OutcomeKind::Error),
        report.duration.as_secs_f64()
    );
    if let Some(u) = report.unclean_summary(report.results.len()) {
        let _ = writeln!(s, "{u}");
    }
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
    fn lines_and_summary() {
        let fail = CaseResult {
            id: CaseId::new("iSCSI", "R2T", "DesiredLength"),
            profile: "small-mrdsl",
            section: "RFC 7143 §11.8.4".into(),
            level: Level::Must,
            summary: "R2T lengths stay within MaxBurstLength".into(),
            outcome: Outcome::Fail(Failure {
                message: "step 2 (expect R2t): expected R2t, got R2t".into(),
                mismatches: vec![Mismatch {
                    what: "R2t.DesiredDataTransferLength".into(),
                    expected: "≤ 4096".into(),
                    actual: "8192 (0x2000)".into(),
                }],
            }),
            duration: Duration::from_millis(4),
            trace: vec!["+0.1ms → ScsiCommand".into()],
            notes: vec![],
        };
        let l = line(&fail, 3, 120);
        assert_eq!(
            l,
            "[  3/120] FAIL  iSCSI.R2T.DesiredLength@small-mrdsl — MUST RFC 7143 §11.8.4: step 2 (expect R2t): expected R2t, got R2t"
        );
        let pass = CaseResult {
            outcome: Outcome::Pass,
            profile: "default",
            ..fail.clone()
        };
        let report = RunReport {
            killer: None,
            notes: Vec::new(),
            results: vec![pass, fail],
            started: SystemTime::now(),
            duration: Duration::from_millis(1500),
            target: "t".into(),
            interrupted: false,
        };
        let s = summary(&report);
        assert!(
            s.contains("R2t.DesiredDataTransferLength: expected ≤ 4096, got 8192 (0x2000)"),
            "{s}"
        );
        assert!(s.contains("PDU trace"), "{s}");
        assert!(s.contains("iSCSI.R2T@small-mrdsl"), "{s}");
        let table: Vec<&str> = s
            .lines()
            .skip_while(|l| !l.starts_with("suite"))
            .take(3)
            .map(str::trim_end)
            .collect();
        assert_eq!(
            table,
            [
                "suite                  pass  fail  skip  error",
                "iSCSI.R2T                 1     0     0      0",
                "iSCSI.R2T@small-mrdsl     0     1     0      0",
            ]
        );
        assert!(
            s.contains("2 case instances against t: 1 pass, 1 fail, 0 skip, 0 error in 1.5 s"),
            "{s}"
        );
    }
}
