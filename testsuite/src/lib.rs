//! # iesp-testsuite — conformance suite and real-peer harness
//!
//! ## Layout
//!
//! - [`peers`] — start and drive real peers on loopback for interop tests:
//!   tgt's `tgtd` with a temporary file LUN, libiscsi's command-line tools.
//! - [`conformance`] — the protocol-level conformance suite behind
//!   `iesp-test conformance`: scripted and Rust cases, runner, reports,
//!   baselines.
//! - [`proxy`] — a deliberately wrong peer: a rewriting proxy that breaks
//!   one protocol rule per mode, to show that every conformance case can fail.
//! - [`workload`] — seeded write/read-back data-integrity passes through
//!   our initiator, on the shared block-I/O layer ([`iesp_blockio`]: its
//!   pattern generator and load engine).

pub mod conformance;
pub mod peers;
pub mod proxy;
pub mod workload;
