//! Reports of a run: a terminal summary ([`terminal`]), JUnit XML
//! ([`junit`]), TAP 14 ([`tap`]) and JSON lines ([`jsonl`]); and, from the
//! suite alone, the traceability table from spec section to case ids
//! ([`traceability`]).
//!
//! Machine-readable outputs carry a format version ([`FORMAT_VERSION`] in
//! JSON lines, the TAP version line, the JUnit dialect of the Jenkins xUnit
//! `junit-10.xsd`), so tools reading them can tell when they change.

pub mod jsonl;
pub mod junit;
pub mod tap;
pub mod terminal;
pub mod traceability;

/// The version of the JSON lines format (bump on incompatible changes).
pub const FORMAT_VERSION: u32 = 1;

/// Per-suite counts, in the order suites first appear.
pub fn suite_counts(results: &[super::CaseResult]) -> Vec<(String, [usize; 4])> {
    let mut out: Vec<(String, [usize; 4])> = Vec::new();
    for r in results {
        let s = r.suite();
        let i = match out.iter().position(|(n, _)| *n == s) {
            Some(i) => i,
            None => {
                out.push((s, [0; 4]));
                out.len() - 1
            }
        };
        out[i].1[r.outcome.kind() as usize] += 1;
    }
    out
}
