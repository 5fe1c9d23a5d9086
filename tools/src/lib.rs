//! `iesp-tools`: the library behind the `iesp-test` command (its binary,
//! src/main.rs, parses the command line and calls in here), so that tests,
//! benches and later tools reuse what the command does.
//!
//! ## Layout
//!
//! - [`selftest`] — the whole stack against the embedded reference target.
//! - [`verify`] — write/read-verify of files, block devices and LUNs.
//! - [`conformance`] — the protocol-level conformance suite against any target.
//! - [`output`] — progress, human-readable figures, JSON files.
//! - [`exit`] — exit codes and the error that carries one.
//! - [`device`], [`block`], [`pattern`] — re-exports of the shared
//!   block-I/O layer, [`iesp_blockio`]: the [`device::Device`] trait and its
//!   file, block device, iSCSI and in-memory implementations, the
//!   self-describing block format, the seeded data generator. The load
//!   engine verify runs on is [`iesp_blockio::engine`].
//!
//! verify's benchmark against fio and iscsi-perf is not part of the
//! command: it is the `verify_vs_fio` bench of this package
//! (`cargo bench --profile release -p iesp-tools --bench verify_vs_fio`).

pub use iesp_blockio as device;
pub use iesp_blockio::{block, pattern};

pub mod conformance;
pub mod output;
pub mod selftest;
pub mod verify;

/// Exit codes shared by the tools.
pub mod exit {
    /// The check ran and found a problem (mismatch, protocol error).
    pub const FAILED: u8 = 1;
    /// Bad command line (clap uses 2 as well).
    pub const USAGE: u8 = 2;

    /// An error that carries the process exit code.
    #[derive(Debug, thiserror::Error)]
    #[error("{error:#}")]
    pub struct Coded {
        pub code: u8,
        pub error: anyhow::Error,
    }

    /// The exit code for an error: its own if it has one, else [`FAILED`].
    pub fn code_of(e: &anyhow::Error) -> u8 {
        e.downcast_ref::<Coded>().map_or(FAILED, |c| c.code)
    }
}
