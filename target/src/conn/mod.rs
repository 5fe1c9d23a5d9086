//! One iSCSI connection, in six files:
//!
//! - [`login`] — the login phase (RFC 7143 §6, §11.12, §11.13): a sans-IO
//!   state machine from the first Login Request to a [`login::LoginOutcome`];
//! - [`ffp`] — the full feature phase core (§3.2, §4.2, §11): sans-IO,
//!   bytes in, PDUs out, the keep-alive clock driven by the `now` it is
//!   given; one file per step of a command (received, executed, answered);
//! - [`fence`] — holds the writes that arrive behind a READ sent with
//!   `sendfile` until the initiator has read it;
//! - [`output`] — the PDUs queued for the initiator, with read data that
//!   stays in a backing file until the writer sends it (`sendfile`);
//! - [`deferred`] — the commands of a session that run on I/O worker
//!   threads (blocking backends), and what waits for what;
//! - [`driver`] — the tokio socket driver around both ([`run`]): a reader/
//!   executor task and a writer task, shutdown and reinstatement.

pub mod deferred;
pub mod driver;
pub mod fence;
pub mod ffp;
pub mod login;
pub mod output;

pub use driver::run;
