//! `iesp-tools`: the library behind the `iesp-test` command (its binary,
//! src/main.rs, parses the command line and calls in here), so that tests,
//! benches and later tools reuse what the command does.
//!
//! ## Layout
//!
//! - [`selftest`] — the whole stack against the embedded reference target.
//! - [`verify`] — write/read-verify of files, block devices and LUNs.
//! - [`fsx`] — seeded random SCSI ops against a per-block model, with
//!   replay and shrinking.
//! - [`bench`] — IOPS and latency sweeps (and `bench merge`).
//! - [`plot`] — PNG charts of bench results (over [`iesp_plots`]).
//! - [`conformance`] — the protocol-level conformance suite against any target.
//! - [`interop`] — real initiators (qemu, iPXE, Linux) as test drivers.
//! - [`output`] — progress, human-readable figures, output paths, JSON files.
//! - [`exit`] — exit codes (docs/cli.md) and the error that carries one.
//! - [`signal`] — SIGINT/SIGTERM as a stop request.
//! - [`target_args`] — the TARGET flags verify, fsx and bench share.
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

pub mod bench;
pub mod conformance;
pub mod fsx;
pub mod interop;
pub mod output;
pub mod plot;
pub mod selftest;
pub mod signal;
pub mod target_args;
pub mod target_metrics;
pub mod verify;

/// Exit codes and the error that carries one.
pub mod exit {
    pub use iesp_cli::exit::{FAILED, IO, PASS, SIGINT, SIGTERM, USAGE};

    /// An error that carries the process exit code.
    #[derive(Debug, thiserror::Error)]
    #[error("{error:#}")]
    pub struct Coded {
        pub code: u8,
        pub error: anyhow::Error,
    }

    /// A usage error (exit 2): a one-line message.
    pub fn usage(msg: impl std::fmt::Display) -> anyhow::Error {
        Coded {
            code: USAGE,
            error: anyhow::anyhow!("{msg}"),
        }
        .into()
    }

    /// A data or conformance failure (exit 1).
    pub fn failed(error: anyhow::Error) -> anyhow::Error {
        Coded {
            code: FAILED,
            error,
        }
        .into()
    }

    /// An I/O or connection error (exit 3).
    pub fn io(error: anyhow::Error) -> anyhow::Error {
        Coded { code: IO, error }.into()
    }

    /// The exit code for an error: its own if it has one, else [`IO`]
    /// (the check could not run to a verdict).
    pub fn code_of(e: &anyhow::Error) -> u8 {
        e.downcast_ref::<Coded>().map_or(IO, |c| c.code)
    }
}
