//! Shared helpers for the integration tests: the initiator name, login
//! options and test data. The reference target on a loopback port is
//! `iesp_testsupport::TestTarget`.
#![allow(dead_code)]

use iesp_initiator::LoginOptions;
use iesp_target::DEFAULT_IQN;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub const INITIATOR: &str = "iqn.2026-11.org.iesp-test:initiator-tests";

/// Login options for the default target.
pub fn opts() -> LoginOptions {
    LoginOptions::new(INITIATOR, Some(DEFAULT_IQN))
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}
