//! Reports of a run: a terminal summary ([`terminal`]), JUnit XML
//! ([`junit`]), TAP 14 ([`tap`]) and JSON lines ([`jsonl`]); and, from the
//! suite alone, the traceability table from spec section to case ids
//! ([`traceability`]).
//!
//! Machine-readable outputs carry the run's envelope
//! ([`iesp_cli::envelope::Envelope`]: schema and tool version, start time,
//! seed, command line, whether the run was interrupted): JSON lines as the
//! header line ([`JSONL_OUTPUT`] at [`JSONL_VERSION`], schema
//! `docs/schemas/conformance-jsonl.schema.json`), JUnit as `<properties>`
//! of each `<testsuite>`, TAP as `# seed: N` and `# started_at: …`
//! comments after the plan. So every report says how to repeat its run.

use std::time::SystemTime;

use iesp_cli::envelope::Envelope;

pub mod jsonl;
pub mod junit;
pub mod tap;
pub mod terminal;
pub mod traceability;

/// The output name in the JSON lines' `schema` (`iesp-test/conformance-jsonl/N`).
pub const JSONL_OUTPUT: &str = "conformance-jsonl";
/// The version of the JSON lines format (bump on incompatible changes).
/// 2: the header line is the common envelope (was `format_version` 1).
/// 3: outcome `not-run`; the header's `notes`; the summary's `not_run`,
/// `killer` and `unclean`.
pub const JSONL_VERSION: u32 = 3;

/// The envelope of a conformance run's reports (the JSON lines schema).
pub fn envelope(started: SystemTime, seed: u64, args: Vec<String>, interrupted: bool) -> Envelope {
    Envelope::new(JSONL_OUTPUT, JSONL_VERSION, Some(seed), args)
        .started_at(started)
        .interrupted(interrupted)
}

/// Per-suite counts, in the order suites first appear.
pub fn suite_counts(results: &[super::CaseResult]) -> Vec<(String, [usize; 5])> {
    let mut out: Vec<(String, [usize; 5])> = Vec::new();
    for r in results {
        let s = r.suite();
        let i = match out.iter().position(|(n, _)| *n == s) {
            Some(i) => i,
            None => {
                out.push((s, [0; 5]));
                out.len() - 1
            }
        };
        out[i].1[r.outcome.kind() as usize] += 1;
    }
    out
}
