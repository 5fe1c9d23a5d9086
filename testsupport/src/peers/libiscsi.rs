//! libiscsi's command-line tools (Debian package `libiscsi-bin`, 1.19) as an
//! independent initiator: discovery, INQUIRY, READ CAPACITY(16), the
//! `iscsi-test-cu` conformance suite and the `iscsi-perf` IOPS meter.
//!
//! URLs use libiscsi's form, which ours follows:
//! `iscsi://[user[%password]@]host[:port]/target-iqn/lun`.
//!
//! # iscsi-test-cu (libiscsi 1.19)
//!
//! `iscsi-test-cu [OPTIONS] URL [MULTIPATH-URL]`, options used here:
//!
//! - `-d/--dataloss`: allow tests that write (most of the suite needs it);
//!   `-S/--allow-sanitize` additionally allows SANITIZE.
//! - `-t/--test=LIST`: comma-separated `FAMILY[.SUITE[.TEST]]` patterns,
//!   matched with `fnmatch` (`ALL.Read*`), or the path of a file with one
//!   pattern per line. Families: `ALL` (every test: 230 in 51 suites), `SCSI`,
//!   `iSCSI`, `LINUX`; the other families are subsets of `ALL`.
//!   `--list` prints every name (`ALL`, `ALL.Read10`, `ALL.Read10.Simple`, …).
//!   A pattern that matches nothing runs 0 tests and exits 0.
//! - `-i/--initiator-name=IQN` (default
//!   `iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test`) names the first
//!   session. `-I/--initiator-name-2=IQN` (default `…:iscsi-test-2`) names
//!   the second I_T nexus that the reservation tests (Reserve6, Prout*,
//!   Prin*) log in by cloning the first URL, and the session on the second
//!   URL.
//! - Multipath: a second URL (at most two) naming the same LU through
//!   another path; the tool first checks both report the same device
//!   identifier ("Found matching LU device identifier for all (2) paths"),
//!   then `ALL.MultipathIO.*` use both. Without it those tests are skipped
//!   ("Multipath unavailable"). Use [`iscsi_test_cu_multipath`].
//! - Output modes `-s/--silent`, `-n/--normal`, `-v/--verbose` (default),
//!   `-x/--xml` (CUnit's automated mode, writes `CUnitAutomated-*.xml` in the
//!   working directory). The parser needs verbose mode, the only one that
//!   names each test, so the wrappers refuse the others.
//! - `-V/--Verbose-scsi` logs every SCSI command; harmless to the parser.
//! - `-g/--ignore` (default), `-f/--fail`, `-A/--abort`: CUnit error action.
//!
//! Exit status: 0 when no assertion failed, 1 otherwise; anything else (or a
//! missing "Run Summary") means the run did not complete: login failed
//! (255, "Failed to connect to SCSI device 0"), usage error (10), leftover
//! persistent reservations, a crash.
//!
//! Verbose output: `Suite: Read10`, then per test `  Test: Simple ...`,
//! the test's own messages, then `passed` or `FAILED` (on the same line when
//! the test printed nothing), then for failures numbered CUnit assertions
//! (`    1. test_x.c:38  - CU_ASSERT_EQUAL(_r,0)`). A test that cannot run
//! prints `[SKIPPED] reason` and **passes** as far as CUnit counts; libiscsi
//! also prints `[FAILED] reason` messages inside tests that still pass
//! (informational checks). [`TestCuReport`] therefore reports CUnit's
//! counts *and* each test's own outcome: skipped tests are listed apart.

use std::collections::BTreeSet;
use std::fmt;
use std::process::Command;
use std::time::Duration;

use super::{PeerError, ToolOutput, require_tool, run_captured, run_tool};

/// Timeout for the quick tools (ls, inq, readcapacity16).
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(30);

/// The family every test belongs to; names in [`TestCuReport`] are
/// `ALL.<suite>.<test>`, which `-t` accepts back.
const ALL_FAMILY: &str = "ALL";

/// Messages kept per test case: a failing stress test can print thousands of
/// identical assertion lines.
const MAX_MESSAGES_PER_CASE: usize = 32;

/// Options that change iscsi-test-cu's output away from verbose mode.
const NON_VERBOSE_FLAGS: &[&str] = &[
    "-s", "--silent", "-n", "--normal", "-x", "--xml", "-l", "--list",
];

/// `iscsi-ls -s URL`: SendTargets discovery on the portal of `url`
/// (`iscsi://host:port`), listing each target's LUNs.
pub fn iscsi_ls(url: &str) -> Result<ToolOutput, PeerError> {
    run_tool("iscsi-ls", &["-s", url], QUICK_TIMEOUT)
}

/// `iscsi-inq URL`: standard INQUIRY data of the LUN at `url`.
pub fn iscsi_inq(url: &str) -> Result<ToolOutput, PeerError> {
    run_tool("iscsi-inq", &[url], QUICK_TIMEOUT)
}

/// `iscsi-readcapacity16 URL`; see [`ReadCapacity16::parse`].
pub fn iscsi_readcapacity16(url: &str) -> Result<ToolOutput, PeerError> {
    run_tool("iscsi-readcapacity16", &[url], QUICK_TIMEOUT)
}

/// One target from `iscsi-ls -s` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsTarget {
    pub iqn: String,
    /// As printed: `127.0.0.1:3260,1` (address, port, portal group tag).
    pub portal: String,
    /// `(lun, type)`, e.g. `(1, "DIRECT_ACCESS (Size:63M)")`.
    pub luns: Vec<(u64, String)>,
}

/// Parses `iscsi-ls -s` output: `Target:IQN Portal:ADDR,TPGT` lines, each
/// followed by `Lun:N    Type:…` lines.
pub fn parse_iscsi_ls(stdout: &str) -> Vec<LsTarget> {
    let mut targets: Vec<LsTarget> = Vec::new();
    for line in stdout.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Target:") {
            let (iqn, portal) = match rest.split_once(" Portal:") {
                Some((iqn, portal)) => (iqn, portal),
                None => (rest, ""),
            };
            targets.push(LsTarget {
                iqn: iqn.trim().to_owned(),
                portal: portal.trim().to_owned(),
                luns: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("Lun:") {
            let Some(target) = targets.last_mut() else {
                continue;
            };
            let (lun, ty) = rest.split_once("Type:").unwrap_or((rest, ""));
            if let Ok(lun) = lun.trim().parse() {
                target.luns.push((lun, ty.trim().to_owned()));
            }
        }
    }
    targets
}

/// READ CAPACITY(16) as printed by `iscsi-readcapacity16` (SBC-4 §5.20.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCapacity16 {
    /// Last LBA.
    pub returned_lba: u64,
    pub block_length: u32,
    /// `(returned_lba + 1) * block_length`, as the tool prints it.
    pub total_size: u64,
}

impl ReadCapacity16 {
    /// Parses `RETURNED LOGICAL BLOCK ADDRESS:`, `LOGICAL BLOCK LENGTH IN
    /// BYTES:` and `Total size:` lines.
    pub fn parse(stdout: &str) -> Option<Self> {
        let field = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some(Self {
            returned_lba: field("RETURNED LOGICAL BLOCK ADDRESS:")?,
            block_length: u32::try_from(field("LOGICAL BLOCK LENGTH IN BYTES:")?).ok()?,
            total_size: field("Total size:")?,
        })
    }
}

/// How one iscsi-test-cu test ended, from the test's own output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Printed `[SKIPPED]` and passed: CUnit counts it as passed.
    Skipped,
    Failed,
}

/// One test of an iscsi-test-cu run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    /// `ALL.<suite>.<test>`, e.g. `ALL.Read10.Simple`.
    pub name: String,
    pub outcome: Outcome,
    /// The test's messages and, for failures, CUnit's assertion lines
    /// (at most 32).
    pub messages: Vec<String>,
}

/// The parsed result of an iscsi-test-cu run.
///
/// `run`, `passed`, `failed` and `inactive` are CUnit's "tests" row of the
/// Run Summary; `passed` includes skipped tests. `skipped` and `failures`
/// come from the per-test output.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCuReport {
    pub run: usize,
    pub passed: usize,
    pub failed: usize,
    pub inactive: usize,
    /// Names of tests that printed `[SKIPPED]` and did not fail.
    pub skipped: Vec<String>,
    /// Names of failed tests.
    pub failures: Vec<String>,
    /// Suites whose set-up or clean-up failed (CUnit "WARNING - Suite …").
    pub suite_errors: Vec<String>,
    /// Assertions failed (CUnit "asserts" row).
    pub asserts_failed: usize,
    pub cases: Vec<TestCase>,
    /// Where the per-test output disagrees with the summary; empty normally.
    pub notes: Vec<String>,
    /// Wall-clock time of the run (zero when only parsed).
    pub elapsed: Duration,
    /// Exit code (None when only parsed, or killed by a signal).
    pub exit_code: Option<i32>,
    /// The complete output, stdout and stderr interleaved.
    pub raw: String,
}

impl TestCuReport {
    /// Parses verbose-mode output. Fails when the CUnit Run Summary is
    /// missing, i.e. the run did not complete.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut p = Parser::default();
        for line in raw.split(['\n', '\r']) {
            p.line(line);
        }
        p.finish(raw)
    }

    /// Tests that passed without skipping.
    pub fn really_passed(&self) -> usize {
        self.passed.saturating_sub(self.skipped.len())
    }

    /// One line for CI logs, e.g. `iscsi-test-cu: 230 run, 160 passed,
    /// 62 skipped, 8 failed (1.9 s); failed: ALL.GetLBAStatus.BeyondEol, …`.
    pub fn summary_line(&self) -> String {
        let mut line = format!(
            "iscsi-test-cu: {} run, {} passed, {} skipped, {} failed",
            self.run,
            self.really_passed(),
            self.skipped.len(),
            self.failed
        );
        if self.inactive > 0 {
            line.push_str(&format!(", {} inactive", self.inactive));
        }
        if !self.elapsed.is_zero() {
            line.push_str(&format!(" ({:.1} s)", self.elapsed.as_secs_f64()));
        }
        if !self.failures.is_empty() {
            line.push_str("; failed: ");
            line.push_str(&self.failures.join(", "));
        }
        if !self.suite_errors.is_empty() {
            line.push_str("; suite errors: ");
            line.push_str(&self.suite_errors.join(", "));
        }
        line
    }
}

impl fmt::Display for TestCuReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary_line())
    }
}

/// Line-by-line state of the verbose-output parser.
#[derive(Default)]
struct Parser {
    suite: Option<String>,
    /// The test whose `passed`/`FAILED` has not been seen yet.
    open: Option<(String, bool, Vec<String>)>,
    cases: Vec<TestCase>,
    suite_errors: Vec<String>,
    notes: Vec<String>,
    in_summary: bool,
    tests_row: Option<[usize; 5]>,
    asserts_failed: usize,
}

impl Parser {
    fn line(&mut self, line: &str) {
        let t = line.trim();
        if t.is_empty() {
            return;
        }
        if t.starts_with("Run Summary:") {
            self.close_unfinished();
            self.in_summary = true;
            return;
        }
        if self.in_summary {
            self.summary_row(t);
            return;
        }
        if let Some(name) = t.strip_prefix("Suite: ") {
            self.close_unfinished();
            self.suite = Some(name.trim().to_owned());
            return;
        }
        if let Some(rest) = t.strip_prefix("WARNING - Suite ") {
            // "initialization failed for 'X'." / "cleanup failed for 'X'."
            self.suite_errors
                .push(rest.trim_end_matches('.').to_owned());
            return;
        }
        if let Some(rest) = t.strip_prefix("Test: ") {
            self.close_unfinished();
            let (name, after) = rest.split_once(" ...").unwrap_or((rest, ""));
            let suite = self.suite.as_deref().unwrap_or("?");
            let full = format!("{ALL_FAMILY}.{suite}.{}", name.trim());
            self.open = Some((full, false, Vec::new()));
            self.content(after.trim());
            return;
        }
        self.content(t);
    }

    /// A line (or the rest of a `Test:` line) inside or after a test.
    fn content(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        if let Some((name, skipped, messages)) = self.open.take() {
            // The status word may be followed by what the suite's clean-up
            // prints on the same line ("passed    [FAILED] PRIN command…"
            // from clearing reservations); that text is not the test's.
            let outcome = match t.split_whitespace().next() {
                Some("passed") if skipped => Some(Outcome::Skipped),
                Some("passed") => Some(Outcome::Passed),
                Some("FAILED") => Some(Outcome::Failed),
                _ => None,
            };
            match outcome {
                Some(outcome) => self.cases.push(TestCase {
                    name,
                    outcome,
                    messages,
                }),
                None => {
                    let skipped = skipped || t.contains("[SKIPPED]");
                    let mut messages = messages;
                    push_message(&mut messages, t);
                    self.open = Some((name, skipped, messages));
                }
            }
            return;
        }
        // After a test: CUnit's numbered assertion lines belong to the
        // failed test just closed; anything else (set-up chatter) is dropped.
        if let Some(last) = self.cases.last_mut() {
            if last.outcome == Outcome::Failed && is_assertion_line(t) {
                push_message(&mut last.messages, t);
            }
        }
    }

    fn close_unfinished(&mut self) {
        if let Some((name, _, _)) = self.open.take() {
            self.notes
                .push(format!("{name}: no passed/FAILED line (counted as failed)"));
            self.cases.push(TestCase {
                name,
                outcome: Outcome::Failed,
                messages: Vec::new(),
            });
        }
    }

    /// `tests 230 230 222 8 0` (Total Ran Passed Failed Inactive) and
    /// `asserts 55284 55284 55273 11 n/a`.
    fn summary_row(&mut self, t: &str) {
        let mut cols = t.split_whitespace();
        let kind = cols.next();
        let nums: Vec<Option<usize>> = cols.map(|c| c.parse().ok()).collect();
        match (kind, nums.as_slice()) {
            (Some("tests"), [Some(a), Some(b), Some(c), Some(d), Some(e)]) => {
                self.tests_row = Some([*a, *b, *c, *d, *e]);
            }
            (Some("asserts"), [_, _, _, Some(failed), ..]) => self.asserts_failed = *failed,
            _ => {}
        }
    }

    fn finish(mut self, raw: &str) -> Result<TestCuReport, String> {
        self.close_unfinished();
        let Some([_total, run, passed, failed, inactive]) = self.tests_row else {
            return Err("no CUnit Run Summary: iscsi-test-cu did not complete".into());
        };
        let names = |o: Outcome| -> Vec<String> {
            self.cases
                .iter()
                .filter(|c| c.outcome == o)
                .map(|c| c.name.clone())
                .collect()
        };
        let skipped = names(Outcome::Skipped);
        let failures = names(Outcome::Failed);
        let mut notes = self.notes;
        if self.cases.len() != run {
            notes.push(format!(
                "summary says {run} tests ran, output names {}",
                self.cases.len()
            ));
        }
        if failures.len() != failed {
            notes.push(format!(
                "summary says {failed} failed, output names {}",
                failures.len()
            ));
        }
        let distinct: BTreeSet<&String> = self.cases.iter().map(|c| &c.name).collect();
        if distinct.len() != self.cases.len() {
            notes.push("some test names repeat".into());
        }
        Ok(TestCuReport {
            run,
            passed,
            failed,
            inactive,
            skipped,
            failures,
            suite_errors: self.suite_errors,
            asserts_failed: self.asserts_failed,
            cases: self.cases,
            notes,
            elapsed: Duration::ZERO,
            exit_code: None,
            raw: raw.to_owned(),
        })
    }
}

fn push_message(messages: &mut Vec<String>, t: &str) {
    if messages.len() < MAX_MESSAGES_PER_CASE {
        messages.push(t.to_owned());
    }
}

/// `1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)`.
fn is_assertion_line(t: &str) -> bool {
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && t[digits..].starts_with(". ")
}

/// Runs `iscsi-test-cu --dataloss -t TESTS [EXTRA_ARGS] URL` with a timeout
/// and parses its output.
///
/// `tests` is a comma-separated pattern list (`ALL`, `ALL.Read10`,
/// `ALL.Inquiry,ALL.Read10.Simple`). `extra_args` may name initiators
/// (`-i IQN`, `-I IQN`) or add `-V`; output-mode flags are refused.
/// A completed run is `Ok` even when tests failed; see
/// [`TestCuReport::failures`].
pub fn iscsi_test_cu(
    url: &str,
    tests: &str,
    extra_args: &[&str],
    timeout: Duration,
) -> Result<TestCuReport, PeerError> {
    run_test_cu(&[url], tests, extra_args, timeout)
}

/// [`iscsi_test_cu`] with two URLs for the same LU (two paths), which
/// enables `ALL.MultipathIO.*`. The first path logs in with `-i`, the second
/// with `-I`.
pub fn iscsi_test_cu_multipath(
    urls: [&str; 2],
    tests: &str,
    extra_args: &[&str],
    timeout: Duration,
) -> Result<TestCuReport, PeerError> {
    run_test_cu(&urls, tests, extra_args, timeout)
}

fn run_test_cu(
    urls: &[&str],
    tests: &str,
    extra_args: &[&str],
    timeout: Duration,
) -> Result<TestCuReport, PeerError> {
    const TOOL: &str = "iscsi-test-cu";
    if let Some(flag) = extra_args.iter().find(|a| NON_VERBOSE_FLAGS.contains(a)) {
        return Err(PeerError::InvalidArgument {
            tool: TOOL.into(),
            reason: format!("{flag} changes the output format; the parser needs verbose mode"),
        });
    }
    let mut cmd = Command::new(require_tool(TOOL)?);
    cmd.args(["--dataloss", "-t", tests])
        .args(extra_args)
        .args(urls);
    let out = run_captured(TOOL, cmd, timeout, true)?;
    let mut report = TestCuReport::parse(&out.stdout).map_err(|reason| PeerError::Parse {
        tool: TOOL.into(),
        reason: format!("{reason} ({})", out.status),
        raw: out.stdout.clone(),
    })?;
    report.elapsed = out.elapsed;
    report.exit_code = out.status.code();
    match report.exit_code {
        Some(0) | Some(1) => {}
        _ => report
            .notes
            .push(format!("unexpected exit status {}", out.status)),
    }
    Ok(report)
}

/// What `iscsi-perf` should do; it issues READ(16) only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfOptions {
    /// `-m`: commands kept in flight (queue depth).
    pub queue_depth: u32,
    /// `-b`: blocks per READ(16).
    pub blocks: u32,
    /// `-t`: run time in seconds (0 would run forever, so at least 1).
    pub seconds: u32,
    /// `-r`: random LBAs instead of sequential.
    pub random: bool,
    /// `-i`: initiator name.
    pub initiator_name: Option<String>,
}

impl Default for PerfOptions {
    /// 4 KiB random reads (8 × 512-byte blocks) at QD 8 for 3 s.
    fn default() -> Self {
        Self {
            queue_depth: 8,
            blocks: 8,
            seconds: 3,
            random: true,
            initiator_name: None,
        }
    }
}

/// An `iscsi-perf` result.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfResult {
    /// Average IOPS over the run (the tool prints an integer).
    pub iops: f64,
    /// Average throughput in MiB/s (the tool's "MB/s" is bytes >> 20).
    pub mib_per_s: f64,
    /// From "performing … READ with N parallel requests".
    pub queue_depth: Option<u32>,
    /// From "FIXED transfer size of N blocks (B byte)".
    pub transfer_bytes: Option<u64>,
    pub raw: String,
}

impl PerfResult {
    /// Parses iscsi-perf output. Progress lines are separated by `\r`; the
    /// final `iops average N (M MB/s)` (without `in_flight`) is the result,
    /// and only a run that printed `finished.` counts.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let segments: Vec<&str> = raw.split(['\r', '\n']).map(str::trim).collect();
        if !segments.contains(&"finished.") {
            return Err("no \"finished.\": the run aborted".into());
        }
        let last = segments
            .iter()
            .rev()
            .find(|s| s.starts_with("iops average ") && !s.contains("in_flight"))
            .ok_or("no final \"iops average\" line")?;
        let rest = last.trim_start_matches("iops average ");
        let (iops, rest) = rest.split_once(" (").ok_or("malformed iops average")?;
        let mib = rest.split_whitespace().next().ok_or("malformed MB/s")?;
        let iops: f64 = iops.trim().parse().map_err(|_| "iops is not a number")?;
        let mib_per_s: f64 = mib.parse().map_err(|_| "MB/s is not a number")?;
        let queue_depth = segments.iter().find_map(|s| {
            let s = s.strip_prefix("performing ")?;
            let (_, n) = s.split_once(" with ")?;
            n.split_whitespace().next()?.parse().ok()
        });
        let transfer_bytes = segments.iter().find_map(|s| {
            let s = s.strip_prefix("FIXED transfer size of ")?;
            let (_, b) = s.split_once('(')?;
            b.split_whitespace().next()?.parse().ok()
        });
        Ok(Self {
            iops,
            mib_per_s,
            queue_depth,
            transfer_bytes,
            raw: raw.to_owned(),
        })
    }
}

/// Runs `iscsi-perf` against `url` and parses the result. The timeout is
/// the run time plus 30 s for login and shutdown.
pub fn iscsi_perf(url: &str, options: &PerfOptions) -> Result<PerfResult, PeerError> {
    const TOOL: &str = "iscsi-perf";
    if options.seconds == 0 || options.queue_depth == 0 || options.blocks == 0 {
        return Err(PeerError::InvalidArgument {
            tool: TOOL.into(),
            reason: "seconds, queue_depth and blocks must be at least 1".into(),
        });
    }
    let mut args = vec![
        "-m".to_owned(),
        options.queue_depth.to_string(),
        "-b".to_owned(),
        options.blocks.to_string(),
        "-t".to_owned(),
        options.seconds.to_string(),
    ];
    if options.random {
        args.push("-r".into());
    }
    if let Some(name) = &options.initiator_name {
        args.push("-i".into());
        args.push(name.clone());
    }
    args.push(url.to_owned());
    let mut cmd = Command::new(require_tool(TOOL)?);
    cmd.args(&args);
    let timeout = Duration::from_secs(u64::from(options.seconds) + 30);
    let out = run_captured(TOOL, cmd, timeout, false)?.ensure_success()?;
    PerfResult::parse(&out.stdout).map_err(|reason| PeerError::Parse {
        tool: TOOL.into(),
        reason,
        raw: out.combined(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// `iscsi-test-cu --dataloss -t ALL` against tgt 1.0.85 with a 64 MiB
    /// file LUN, libiscsi 1.19, captured on a 2-core Debian 12 machine.
    const ALL_TGT: &str = include_str!("fixtures/test_cu_all_tgt_1.0.85.txt");

    /// `iscsi-perf -r -m 8 -b 8 -t 3` against tgt, `\r` progress included.
    const PERF_TGT: &str = include_str!("fixtures/iscsi_perf_tgt.txt");

    /// Two-path run (`-i A -I B URL URL`), assertion list shortened.
    const MULTIPATH_TGT: &str = "Found matching LU device identifier for all (2) paths



     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: MultipathIO
  Test: Simple ...passed
  Test: Reset ...passed
  Test: CompareAndWrite ...    [SKIPPED] COMPAREANDWRITE is not implemented.
    [SKIPPED] COMPAREANDWRITE is not implemented.
passed
  Test: CompareAndWriteAsync ...FAILED
    1. test_multipathio_async_caw.c:45  - CU_ASSERT_EQUAL(atask->sense.key,SCSI_SENSE_MISCOMPARE)
    2. test_multipathio_async_caw.c:46  - CU_ASSERT_EQUAL(atask->sense.ascq,SCSI_SENSE_ASCQ_MISCOMPARE_DURING_VERIFY)

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      1      1    n/a      0        0
               tests      4      4      3      1        0
             asserts     13     13     11      2      n/a

Elapsed time =    0.209 seconds
Tests completed with return value: 0
";

    #[test]
    fn parses_a_full_run_against_tgt() {
        let r = TestCuReport::parse(ALL_TGT).unwrap();
        assert_eq!((r.run, r.passed, r.failed, r.inactive), (230, 222, 8, 0));
        assert_eq!(r.asserts_failed, 11);
        assert_eq!(r.cases.len(), 230);
        assert_eq!(r.notes, Vec::<String>::new());
        assert_eq!(
            r.failures,
            [
                "ALL.GetLBAStatus.BeyondEol",
                "ALL.PrinServiceactionRange.Range",
                "ALL.ProutReserve.OwnershipEA",
                "ALL.ProutReserve.OwnershipWE",
                "ALL.ProutReserve.OwnershipEARO",
                "ALL.ProutReserve.OwnershipWERO",
                "ALL.Reserve6.2Initiators",
                "ALL.iSCSIdatasn.iSCSIDataSnInvalid",
            ]
        );
        // Tests are counted once however many [SKIPPED] lines they print.
        assert_eq!(r.skipped.len(), 62);
        assert!(r.skipped.contains(&"ALL.Inquiry.BlockLimits".to_owned()));
        assert!(r.skipped.contains(&"ALL.MultipathIO.Simple".to_owned()));
        assert_eq!(r.really_passed(), 222 - 62);
        assert_eq!(r.run, r.passed + r.failed);
    }

    #[test]
    fn failure_details_stay_with_their_test() {
        let r = TestCuReport::parse(ALL_TGT).unwrap();
        let case = |name: &str| r.cases.iter().find(|c| c.name == name).unwrap();
        let datasn = case("ALL.iSCSIdatasn.iSCSIDataSnInvalid");
        assert_eq!(datasn.outcome, Outcome::Failed);
        assert_eq!(datasn.messages.len(), 4);
        assert!(datasn.messages[0].starts_with("1. test_iscsi_datasn_invalid.c:98"));
        let reserve = case("ALL.Reserve6.2Initiators");
        assert!(
            reserve
                .messages
                .iter()
                .any(|m| m.starts_with("[FAILED] MODESENSE6 successful"))
        );
        assert!(
            reserve
                .messages
                .last()
                .unwrap()
                .starts_with("1. test_reserve6_2initiators.c:70")
        );
        // An informational [FAILED] inside a passing test does not fail it.
        let unmap_vpd = case("ALL.WriteSame10.UnmapVPD");
        assert_eq!(unmap_vpd.outcome, Outcome::Passed);
        assert_eq!(case("ALL.Read10.Simple").outcome, Outcome::Passed);
        // "passed    [FAILED] PRIN command…": suite clean-up text after the
        // status word does not turn the test into a failure.
        assert_eq!(case("ALL.Reserve6.LUNReset").outcome, Outcome::Passed);
        assert_eq!(case("ALL.Read10.Simple").messages, Vec::<String>::new());
    }

    #[test]
    fn summary_line_names_failures() {
        let mut r = TestCuReport::parse(MULTIPATH_TGT).unwrap();
        r.elapsed = Duration::from_millis(1500);
        assert_eq!(
            r.summary_line(),
            "iscsi-test-cu: 4 run, 2 passed, 1 skipped, 1 failed (1.5 s); \
             failed: ALL.MultipathIO.CompareAndWriteAsync"
        );
        assert_eq!(r.skipped, ["ALL.MultipathIO.CompareAndWrite"]);
    }

    #[test]
    fn incomplete_run_is_an_error() {
        let cut = &ALL_TGT[..ALL_TGT.find("Run Summary").unwrap()];
        assert!(TestCuReport::parse(cut).is_err());
        let login_failed = "Login Failed. Failed to log in to target. Status: Target not found(515)\n\
                            Failed to connect to SCSI device 0\n";
        assert!(TestCuReport::parse(login_failed).is_err());
    }

    #[test]
    fn test_without_result_counts_as_failed_and_is_noted() {
        let raw = "Suite: Read10\n  Test: Simple ...passed\n  Test: Hang ...\n\
                   Run Summary:    Type  Total    Ran Passed Failed Inactive\n\
                   tests      2      2      1      1        0\n";
        let r = TestCuReport::parse(raw).unwrap();
        assert_eq!(r.failures, ["ALL.Read10.Hang"]);
        assert_eq!(r.notes.len(), 1);
    }

    #[test]
    fn disagreement_with_the_summary_is_noted() {
        let raw = "Suite: Read10\n  Test: Simple ...passed\n\
                   Run Summary:    Type  Total    Ran Passed Failed Inactive\n\
                   tests      2      2      1      1        0\n";
        let r = TestCuReport::parse(raw).unwrap();
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
    }

    #[test]
    fn refuses_output_modes_the_parser_cannot_read() {
        for flag in ["-n", "--xml", "-s"] {
            let err = iscsi_test_cu("iscsi://127.0.0.1:1/iqn.x/1", "ALL", &[flag], QUICK_TIMEOUT)
                .unwrap_err();
            assert!(matches!(err, PeerError::InvalidArgument { .. }), "{err}");
        }
    }

    #[test]
    fn parses_iscsi_perf() {
        let r = PerfResult::parse(PERF_TGT).unwrap();
        assert_eq!(r.iops, 23799.0);
        assert_eq!(r.mib_per_s, 92.0);
        assert_eq!(r.queue_depth, Some(8));
        assert_eq!(r.transfer_bytes, Some(4096));
        let aborted = PERF_TGT.replace("finished.", "ABORTED!");
        assert!(PerfResult::parse(&aborted).is_err());
    }

    #[test]
    fn parses_iscsi_ls() {
        let out = "Target:iqn.2026-11.test:t1 Portal:127.0.0.1:13271,1\n\
                   Lun:0    Type:STORAGE_ARRAY_CONTROLLER\n\
                   Lun:1    Type:DIRECT_ACCESS (Size:63M)\n\
                   Target:iqn.2026-11.test:t2 Portal:127.0.0.1:13271,1\n";
        let t = parse_iscsi_ls(out);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].iqn, "iqn.2026-11.test:t1");
        assert_eq!(t[0].portal, "127.0.0.1:13271,1");
        assert_eq!(
            t[0].luns,
            [
                (0, "STORAGE_ARRAY_CONTROLLER".to_owned()),
                (1, "DIRECT_ACCESS (Size:63M)".to_owned())
            ]
        );
        assert!(t[1].luns.is_empty());
    }

    #[test]
    fn parses_readcapacity16() {
        let out = "RETURNED LOGICAL BLOCK ADDRESS:131071\nLOGICAL BLOCK LENGTH IN BYTES:512\n\
                   P_TYPE:0 PROT_EN:0\nTotal size:67108864\n";
        assert_eq!(
            ReadCapacity16::parse(out),
            Some(ReadCapacity16 {
                returned_lba: 131071,
                block_length: 512,
                total_size: 67108864
            })
        );
        assert_eq!(ReadCapacity16::parse("Total size:1\n"), None);
    }
}
