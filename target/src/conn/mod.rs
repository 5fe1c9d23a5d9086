//! One iSCSI connection, in three files:
//!
//! - [`login`] — the login phase (RFC 7143 §6, §11.12, §11.13): a sans-IO
//!   state machine from the first Login Request to a [`login::LoginOutcome`];
//! - [`ffp`] — the full feature phase core (§3.2, §4.2, §11): sans-IO,
//!   bytes in, PDUs out, the keep-alive clock driven by the `now` it is
//!   given;
//! - [`driver`] — the tokio socket driver around both ([`run`]): one read
//!   buffer, one vectored write per batch, shutdown and reinstatement.

pub mod driver;
pub mod ffp;
pub mod login;
pub mod poll;

pub use driver::run;
