//! The Rust cases: what a script cannot express (loops over R2Ts, timing
//! of several connections, choices depending on what the target answered).
//! Each module registers its cases in [`all`].

use super::case::Case;

/// Every Rust case.
pub fn all() -> Vec<Case> {
    Vec::new()
}
