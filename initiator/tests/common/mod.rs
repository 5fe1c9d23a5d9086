//! Shared helpers for the integration tests: the initiator name, login
//! options and test data. The reference target on a loopback port is
//! `iesp_testsupport::TestTarget`.
#![allow(dead_code)]

use iesp_initiator::LoginOptions;
use iesp_target::DEFAULT_IQN;

pub const INITIATOR: &str = "iqn.2026-11.org.iesp-test:initiator-tests";

/// Login options for the default target.
pub fn opts() -> LoginOptions {
    LoginOptions::new(INITIATOR, Some(DEFAULT_IQN))
}

/// `len` pseudo-random bytes from `seed`: the one seeded generator of the
/// workspace, [`iesp_blockio::pattern`].
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    iesp_blockio::pattern::generate(seed, 0, len)
}
