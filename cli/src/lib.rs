//! # iesp-cli — one set of command-line conventions for both binaries
//!
//! `iesp-test` and `iesp-target` are used side by side (often in the same
//! CI script), so a size, a duration, a log setting or an exit code means
//! the same thing in both. This crate is where those conventions live; it
//! exists as a crate of its own because the two binaries share nothing
//! else at this level (the target must not depend on the tools, nor the
//! tools on the target's internals). docs/cli.md is the user-facing
//! statement of the same rules.
//!
//! ## Layout
//!
//! - [`units`] — the size grammar (`512`, `512B`, `4k`, `4KiB`, `1.5G`,
//!   `1T`) and the duration grammar (`500ms`, `3`, `1s`, `2m`, `1h30m`),
//!   for clap flags and for TOML values alike ([`units::Size`],
//!   [`units::Secs`]).
//! - [`log`] — one log environment variable ([`log::ENV`]), `-v/-vv/-q`,
//!   colour only on a terminal and never with `NO_COLOR`.
//! - [`exit`] — the documented exit codes.
//! - [`seed`] — a run's seed when none is given: from the OS with a
//!   bounded wait, never a hang.
//! - [`envelope`] — the versioned JSON envelope (`schema`, `tool_version`,
//!   `started_at`, `seed`, `args`, `interrupted`) of every machine-readable
//!   output, and writing an output to a file or to stdout (`-`).

pub mod envelope;
pub mod exit;
pub mod log;
pub mod seed;
pub mod units;
