//! Counters, mismatch and I/O error records, the final summary and its JSON
//! form.
//!
//! The JSON report (`--json FILE`, `-` for stdout) is the common envelope
//! ([`iesp_cli::envelope`]: `schema` `iesp-test/verify/2`, `tool_version`,
//! `started_at`, `seed`, `args`, `interrupted`) followed by the
//! [`Summary`]; fields are only ever added within a schema version.
//! `docs/schemas/verify.schema.json` describes it and a test validates real
//! output against it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use iesp_cli::envelope::Envelope;
use serde::Serialize;

use crate::block::{self, Class, Expected, Header, Verdict};
use crate::device::{DeviceInfo, TrimSupport};
use crate::output;

/// The output name in the JSON report's `schema` (`iesp-test/verify/N`).
pub const REPORT_OUTPUT: &str = "verify";
/// The JSON report's schema version. 2: the common envelope replaced
/// `format`, `format_version` and `tool_version` (version 1).
pub const REPORT_VERSION: u32 = 2;

/// Mismatches kept with full detail (all are counted).
pub const MAX_MISMATCH_RECORDS: usize = 10_000;
/// I/O errors kept with full detail.
pub const MAX_IO_ERROR_RECORDS: usize = 100;
/// Bytes of hex dump shown around the first difference.
const HEX_BYTES: usize = 16;

/// Live counters, updated by every worker.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_written: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Block comparisons that matched.
    pub blocks_verified: AtomicU64,
    /// Distinct blocks verified at least once.
    pub distinct_verified: AtomicU64,
    /// Blocks read but not compared (content unknown or unspecified).
    pub blocks_unverifiable: AtomicU64,
    pub mismatches: AtomicU64,
    pub by_class: [AtomicU64; 6],
    pub io_errors: AtomicU64,
    pub trims: AtomicU64,
    pub blocks_trimmed: AtomicU64,
    pub trims_skipped: AtomicU64,
    pub writes_unique: AtomicU64,
    pub writes_duplicate: AtomicU64,
    /// Check: blocks holding their durable content, not a later unflushed
    /// write (a power loss may lose those: a notice, not a failure).
    pub legally_lost: AtomicU64,
    /// Check: mismatching blocks whose expected content was durable.
    pub lost_flushed: AtomicU64,
    /// Check of a provisional state: blocks holding a newer write of the
    /// same run (made after the state was saved).
    pub rewritten_after_save: AtomicU64,
}

fn class_index(c: Class) -> usize {
    Class::ALL
        .iter()
        .position(|&x| x == c)
        .unwrap_or(Class::ALL.len() - 1)
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn count_class(&self, c: Class) {
        Self::add(&self.mismatches, 1);
        Self::add(&self.by_class[class_index(c)], 1);
    }

    pub fn class_count(&self, c: Class) -> u64 {
        Self::get(&self.by_class[class_index(c)])
    }
}

/// One mismatching block, in detail.
#[derive(Clone, Debug, Serialize)]
pub struct MismatchRecord {
    pub lba: u64,
    pub class: Class,
    pub reason: String,
    /// What was expected, in words.
    pub expected: String,
    pub expected_header: Option<Header>,
    pub found_header: Option<Header>,
    /// Offset in the block of the first differing byte.
    pub first_difference: Option<usize>,
    /// Hex dumps of 16 bytes from the 16-byte line holding the first difference.
    pub expected_bytes: String,
    pub found_bytes: String,
}

impl MismatchRecord {
    pub fn new(
        lba: u64,
        expected: &Expected,
        verdict: Verdict,
        expected_block: &[u8],
        found_block: &[u8],
    ) -> Self {
        let first = block::first_difference(expected_block, found_block);
        let at = first.map_or(0, |d| d / HEX_BYTES * HEX_BYTES);
        let window = |b: &[u8]| {
            output::hex_line(
                at,
                b.get(at..(at + HEX_BYTES).min(b.len())).unwrap_or_default(),
            )
        };
        MismatchRecord {
            lba,
            class: verdict.class,
            reason: verdict.reason,
            expected: expected.to_string(),
            expected_header: Header::parse(expected_block),
            found_header: verdict.found,
            first_difference: first,
            expected_bytes: window(expected_block),
            found_bytes: window(found_block),
        }
    }
}

/// One failed operation.
#[derive(Clone, Debug, Serialize)]
pub struct IoErrorRecord {
    pub op: String,
    pub message: String,
}

/// Records kept for the summary.
#[derive(Debug, Default)]
pub struct Report {
    pub mismatches: Vec<MismatchRecord>,
    pub io_errors: Vec<IoErrorRecord>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Everything compared matched.
    Pass,
    /// At least one block differed (wins over I/O errors).
    Mismatch,
    /// An operation failed; no mismatch.
    IoError,
    /// SIGINT or SIGTERM stopped the run before a verdict; no mismatch in
    /// what was compared until then.
    Interrupted,
}

/// The whole run, as printed and, inside the envelope, written to `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub target: DeviceInfo,
    pub mode: &'static str,
    /// In the envelope, not repeated in the body.
    #[serde(skip)]
    pub seed: u64,
    /// The generation a sequential run wrote last / a check expected.
    pub generation: Option<u64>,
    pub first_lba: u64,
    pub blocks: u64,
    pub io_size: u64,
    pub workers: usize,
    pub queue_depth: usize,
    pub elapsed_s: f64,
    /// Why the run stopped, when a limit or an error stopped it.
    pub stopped_by: Option<String>,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub write_mib_s: f64,
    pub read_mib_s: f64,
    pub blocks_verified: u64,
    pub distinct_verified: u64,
    pub verified_percent: f64,
    pub blocks_unverifiable: u64,
    pub writes_unique: u64,
    pub writes_duplicate: u64,
    pub trims: u64,
    pub blocks_trimmed: u64,
    pub trims_skipped: u64,
    pub trim: TrimSupport,
    /// Why trims were skipped, if they were.
    pub trim_skip_reason: Option<String>,
    pub mismatch_count: u64,
    pub mismatches_by_class: std::collections::BTreeMap<&'static str, u64>,
    pub mismatches: Vec<MismatchRecord>,
    pub io_error_count: u64,
    pub io_errors: Vec<IoErrorRecord>,
    /// SIGINT or SIGTERM stopped the run (`stopped_by` says which); the
    /// figures cover what was done until then. In the JSON report it is the
    /// envelope's `interrupted`, not a body field.
    #[serde(skip)]
    pub interrupted: bool,
    /// Login answers outside the legal range, clamped (lenient login;
    /// `--strict` fails instead).
    pub negotiation_warnings: Vec<crate::device::NegotiationWarning>,
    pub outcome: Outcome,
    pub exit_code: u8,
    /// A command that checks this run's data later, when there is one.
    pub check_command: Option<String>,
    /// Check: blocks that lost an unflushed write and hold their durable
    /// content (legal on a write-back device after a power loss).
    pub legally_lost: u64,
    /// Check: mismatches where the expected write had been flushed (or
    /// written with FUA): the device lost a write it promised to keep.
    pub lost_flushed_writes: u64,
    /// Check of a provisional (periodic or SIGKILLed) state: blocks that
    /// hold a newer write of the same run.
    pub rewritten_after_save: u64,
    /// Random mode: flushes and blocks whose last write was not flushed
    /// when the run ended.
    pub flushes: u64,
    pub unflushed_blocks: u64,
    /// `--target-metrics`: the target's counters before and after the
    /// run and their difference; absent without the flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_metrics: Option<crate::target_metrics::TargetMetricsReport>,
}

/// A percentage rounded down to 0.1, so that 99.99 does not read 100.0.
fn percent(p: f64) -> String {
    format!("{:.1}", (p * 10.0).floor() / 10.0)
}

impl Summary {
    /// The envelope of this run's JSON report: its seed, `args`, a start
    /// time `elapsed_s` before now.
    pub fn envelope(&self, args: Vec<String>, interrupted: bool) -> Envelope {
        let started = Duration::try_from_secs_f64(self.elapsed_s)
            .ok()
            .and_then(|d| SystemTime::now().checked_sub(d))
            .unwrap_or_else(SystemTime::now);
        Envelope::new(REPORT_OUTPUT, REPORT_VERSION, Some(self.seed), args)
            .started_at(started)
            .interrupted(interrupted)
    }

    /// Writes the JSON report to `path` (`-` is stdout) with this process's
    /// command line; `interrupted` when a signal stopped the run.
    pub fn write_json(&self, path: &Path, interrupted: bool) -> std::io::Result<()> {
        self.envelope(iesp_cli::envelope::process_args(), interrupted)
            .write(path, self)
    }

    /// The human-readable summary; `show` mismatches in detail.
    pub fn render(&self, show: usize) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let t = &self.target;
        let _ = writeln!(
            s,
            "{} in {:.1} s{}",
            self.mode,
            self.elapsed_s,
            self.stopped_by
                .as_ref()
                .map(|r| format!(" (stopped: {r})"))
                .unwrap_or_default()
        );
        if self.bytes_written > 0 {
            let _ = writeln!(
                s,
                "  written   {} ({:.1} MiB/s)",
                output::bytes(self.bytes_written),
                self.write_mib_s
            );
        }
        let _ = writeln!(
            s,
            "  read      {} ({:.1} MiB/s)",
            output::bytes(self.bytes_read),
            self.read_mib_s
        );
        let _ = writeln!(
            s,
            "  verified  {} block reads; {} distinct blocks, {}% of the {} blocks of {} bytes",
            self.blocks_verified,
            self.distinct_verified,
            percent(self.verified_percent),
            self.blocks,
            t.block_size
        );
        if self.blocks_unverifiable > 0 {
            let _ = writeln!(
                s,
                "  not compared: {} blocks (content unknown or unspecified after a trim)",
                self.blocks_unverifiable
            );
        }
        if self.writes_duplicate > 0 || self.trims > 0 || self.trims_skipped > 0 {
            let _ = writeln!(
                s,
                "  mix       {} unique, {} duplicate-content block writes; {} trims ({} blocks), {} skipped",
                self.writes_unique,
                self.writes_duplicate,
                self.trims,
                self.blocks_trimmed,
                self.trims_skipped
            );
        }
        if let Some(r) = &self.trim_skip_reason {
            let _ = writeln!(s, "  trims skipped: {r}");
        }
        if self.flushes > 0 || self.unflushed_blocks > 0 {
            let _ = writeln!(
                s,
                "  flushes   {} (blocks not flushed at the end: {})",
                self.flushes, self.unflushed_blocks
            );
        }
        if self.legally_lost > 0 {
            let _ = writeln!(
                s,
                "  notice: {} blocks legally lost (an unflushed write is missing, the flushed content is there: allowed after a power loss of a write-back device)",
                self.legally_lost
            );
        }
        if self.rewritten_after_save > 0 {
            let _ = writeln!(
                s,
                "  notice: {} blocks hold a newer write of the same run than the state file (saved while the run went on)",
                self.rewritten_after_save
            );
        }
        if self.lost_flushed_writes > 0 {
            let _ = writeln!(
                s,
                "  LOST FLUSHED WRITES: {} (the device lost writes it had flushed or written with FUA)",
                self.lost_flushed_writes
            );
        }
        if self.mismatch_count == 0 {
            let _ = writeln!(s, "  mismatches: none");
        } else {
            let classes: Vec<String> = self
                .mismatches_by_class
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| format!("{n} {c}"))
                .collect();
            let _ = writeln!(
                s,
                "  MISMATCHES: {} ({})",
                self.mismatch_count,
                classes.join(", ")
            );
            for m in self.mismatches.iter().take(show) {
                let _ = writeln!(s, "    LBA {}: {} — {}", m.lba, m.class, m.reason);
                let _ = writeln!(
                    s,
                    "      expected {}",
                    m.expected_header
                        .map_or_else(|| m.expected.clone(), |h| h.to_string())
                );
                let _ = writeln!(
                    s,
                    "      found    {}",
                    m.found_header
                        .map_or_else(|| "no header".to_owned(), |h| h.to_string())
                );
                if let Some(d) = m.first_difference {
                    let _ = writeln!(s, "      first difference at byte {d}:");
                    let _ = writeln!(s, "        expected {}", m.expected_bytes);
                    let _ = writeln!(s, "        found    {}", m.found_bytes);
                }
            }
            if self.mismatch_count as usize > show {
                let _ = writeln!(
                    s,
                    "    … {} more (all in --json, up to {MAX_MISMATCH_RECORDS})",
                    self.mismatch_count as usize - show.min(self.mismatches.len())
                );
            }
        }
        if self.io_error_count > 0 {
            let _ = writeln!(s, "  I/O ERRORS: {}", self.io_error_count);
            for e in self.io_errors.iter().take(show.max(1)) {
                let _ = writeln!(s, "    {}", e.message);
            }
        }
        let verdict = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Mismatch => "FAIL: data mismatch",
            Outcome::IoError => "FAIL: I/O error",
            Outcome::Interrupted => "INTERRUPTED before a verdict, no mismatch so far",
        };
        let _ = writeln!(s, "verify: {verdict} (exit code {})", self.exit_code);
        if let Some(c) = &self.check_command {
            let _ = writeln!(s, "check this data later with: {c}");
        }
        s
    }
}
