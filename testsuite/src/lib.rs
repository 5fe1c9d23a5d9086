//! # iesp-testsuite — the conformance suite
//!
//! ## Layout
//!
//! - [`conformance`] — the protocol-level conformance suite behind
//!   `iesp-test conformance`: scripted and Rust cases, runner, reports,
//!   baselines.
//! - [`proxy`] — a deliberately wrong peer: a rewriting proxy that breaks
//!   one protocol rule per mode, to show that every conformance case can fail.
//! - [`workload`] — seeded write/read-back data-integrity passes through
//!   our initiator, on the shared block-I/O layer ([`iesp_blockio`]: its
//!   pattern generator and load engine).
//!
//! Starting and driving peers for tests (tgt, libiscsi, qemu-nbd, our own
//! target, fakes, loop devices) is not here but in the `iesp-testsupport`
//! dev-dependency, so the `iesp-test` binary, which links this library for
//! `conformance`, carries no peer-management code.

pub mod conformance;
pub mod proxy;
pub mod workload;
