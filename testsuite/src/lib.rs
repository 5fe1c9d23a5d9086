//! # iesp-testsuite — conformance suite and real-peer harness
//!
//! ## Layout
//!
//! - [`peers`] — start and drive real peers on loopback for interop tests:
//!   tgt's `tgtd` with a temporary file LUN, libiscsi's command-line tools.
//! - [`workload`] — seeded write/read-back data-integrity passes through
//!   our initiator.
//!
//! The scripted protocol-level conformance suite (`iesp-test conformance`)
//! lands here too.

pub mod peers;
pub mod workload;
