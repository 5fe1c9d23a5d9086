//! # iesp-target — the reference iSCSI target
//!
//! A fast, strict iSCSI target (RFC 7143) serving RAM, file and block-device
//! LUNs, used as the yardstick other targets are compared with. The wire
//! format comes from `iesp-proto`; this crate adds the target's state
//! machines, SCSI execution and a tokio driver.
//!
//! ## Layout
//!
//! - [`config`] — targets, LUN specs (`ram:64M`, `file:PATH,size=1G`,
//!   `nbd:HOST:PORT/EXPORT`), protocol limits; the defaults serve at once.
//! - [`cli`] — the `iesp-target` command line ([`cli::command`] for man
//!   pages and completions), exit codes, the shared size/duration grammar.
//! - [`config_file`] — the TOML file for several targets, ACLs and CHAP.
//! - [`server`] — the accept loop ([`server::serve`] takes a bound listener
//!   and a shutdown future), the session registry, graceful shutdown.
//! - [`conn`] — one connection, in three files: the sans-IO login state
//!   machine ([`conn::login`]), the sans-IO full feature phase core
//!   ([`conn::ffp`]: CmdSN window, R2T/Data-Out, Data-In, TMF, NOP and the
//!   keep-alive clock, Text, Logout, Reject; transcript-tested), and the
//!   tokio socket driver ([`conn::driver`], [`conn::run`]); beside them the
//!   output queue with file-backed Data-In ([`conn::output`]) and the fence
//!   that holds writes behind such a READ ([`conn::fence`]).
//! - [`session`] — what the connections of one session share (MC/S): the
//!   session-wide command window and the list of its connections.
//! - [`scsi`] — SCSI command execution on a logical unit (SPC-4, SBC-4).
//! - [`backend`] — where blocks live: RAM, file, block device, NBD export;
//!   zero-copy reads of file LUNs ([`backend::splice`]).
//! - [`embedded`] — run the target inside another program (tools, tests).
//!
//! ## Running one in a test
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use iesp_target::{config::TargetConfig, server::{Target, serve}};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let target = Target::from_config(&TargetConfig::default())?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! tokio::spawn(serve(listener, target, async { let _ = stopped.await; }));
//! // ... connect to the listener's address ...
//! let _ = stop.send(());
//! # Ok(()) }
//! ```

pub mod admission;
pub mod backend;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod conn;
pub mod embedded;
pub mod endpoints;
mod fast_map;
pub mod memory;
pub mod metrics;
pub mod scsi;
pub mod server;
pub mod session;
pub mod snmp;
pub mod stats;

pub use config::{DEFAULT_IQN, TargetConfig};
pub use server::{Target, serve};
