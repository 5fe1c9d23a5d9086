//! # iesp-testsuite — conformance suite and real-peer harness
//!
//! ## Layout
//!
//! - [`peers`] — start and drive real peers on loopback for interop tests:
//!   tgt's `tgtd` with a temporary file LUN, libiscsi's command-line tools.
//!
//! The scripted protocol-level conformance suite (`iesp-test conformance`)
//! lands here too.

pub mod peers;
