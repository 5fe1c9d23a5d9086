//! # iesp-testsupport — what the workspace's tests share
//!
//! Every integration test, bench and test harness in the workspace that
//! needs a target, a peer or a device gets it from here, so there is one
//! copy of each helper and one missing-peer policy. It is a
//! **dev-dependency only**: no shipped binary (`iesp-test`, `iesp-target`)
//! links it, and the libraries' own `#[cfg(test)]` unit tests inside
//! `iesp-initiator` and `iesp-target` must not use it (that would link a
//! second copy of the crate under test); their `tests/` directories may.
//!
//! ## Layout
//!
//! - [`embedded`] — our reference target on an ephemeral loopback port:
//!   [`TestTarget`] (async, on the caller's runtime) and [`BlockingTarget`]
//!   (on a private runtime, for synchronous tests), plus one-LUN
//!   configurations. Both wrap `iesp_target::embedded::EmbeddedTarget`,
//!   which `iesp-test selftest` uses at run time.
//! - [`chap_login`] — a CHAP login driven by hand, step by step, for
//!   tests that answer the target's challenge themselves.
//! - [`fake`] — [`FakeTarget`]: a scripted fake target on loopback that
//!   answers the login with chosen keys (e.g. `FirstBurstLength=268435456`)
//!   and then plays whatever full-feature PDUs a test scripts; and
//!   [`BlackholePortal`], a loopback portal that never answers a connect
//!   (for connect-timeout tests).
//! - [`loopdev`] — [`LoopDevice`]: a loop device over an image file,
//!   detached on drop.
//! - [`ordered`] — [`ordered::join_in_order`]: futures started in a fixed
//!   order (commands sent back to back) and awaited together.
//! - [`peers`] — real, independent peers on loopback: tgt's `tgtd`
//!   ([`peers::tgt::Tgtd`]), libiscsi's tools ([`peers::libiscsi`]), QEMU's
//!   NBD server and client ([`peers::qemu`]); running external programs
//!   with timeouts ([`peers::run_tool`]); and the missing-peer policy
//!   ([`peers::tool_or_skip`]): a missing peer fails the test under
//!   `CI=true` and is skipped with a `SKIPPED:` line elsewhere.

pub mod bench;
pub mod chap_login;
pub mod embedded;
pub mod fake;
pub mod loopdev;
pub mod ordered;
pub mod peers;

pub use embedded::{BlockingTarget, TestTarget};
pub use fake::{BlackholePortal, FakeConn, FakeTarget, LoginAnswers};
pub use loopdev::LoopDevice;
pub use peers::{tool_or_skip, tools_or_skip};
