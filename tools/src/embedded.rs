//! The reference target run in-process on loopback, for `selftest`: the
//! target crate's [`iesp_target::embedded`], re-exported.

pub use iesp_target::embedded::EmbeddedTarget;
