//! # iesp-initiator — a minimal, fast async iSCSI initiator that can bend the rules
//!
//! A tokio driver around `iesp-proto`: a raw connection that sends any PDU
//! in any order (the conformance suite's footing), a login that follows
//! RFC 7143 §6 and reports what the target got wrong, and a full feature
//! phase session that keeps many commands in flight (the benchmarks' load
//! generator).
//!
//! ## Layout
//!
//! - [`url`] — `iscsi://[user[%password]@]host[:port]/target-iqn/lun`, the
//!   libiscsi URL form, parsed and printed (password masked).
//! - [`raw`] — [`RawConnection`]: framing, digests, timeouts as outcomes,
//!   and a trace of the last PDUs; enforces nothing.
//! - [`chap`] — CHAP MD5, one-way and mutual, initiator side (RFC 7143
//!   §12.1.3, RFC 1994).
//! - [`mod@login`] — the login phase on a raw connection, driving the
//!   negotiation engine: [`LoginOptions`] in, [`LoginOutcome`] out.
//! - [`session`] — [`Session`]: CmdSN window, ITTs, immediate/unsolicited/
//!   solicited write data, Data-In reassembly, NOP and keep-alive, task
//!   management, text, logout. A sans-IO core ([`session::SessionCore`]),
//!   a tokio driver (one reader and one writer task per connection) and
//!   the handle.
//! - [`lun`] — [`LogicalUnit`]: capacity, block read/write, FUA, flush,
//!   INQUIRY, with readable sense in errors.
//! - [`discovery`] — SendTargets discovery over a discovery session.
//! - [`entropy`] — random bytes for ISIDs and CHAP challenges that never
//!   block, even before the kernel's random pool is ready.
//!
//! ## Quick start
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use iesp_initiator::{LoginOptions, Session};
//! let addr = "127.0.0.1:3260".parse()?;
//! let opts = LoginOptions::new("iqn.2026-11.org.example:init", Some("iqn.2026-11.org.iesp-test:target0"));
//! let session = Session::login(addr, opts).await?;
//! let lu = session.logical_unit(0).await?;
//! lu.write(0, bytes::Bytes::from(vec![0xab; 512])).await?;
//! assert_eq!(lu.read(0, 1).await?[0], 0xab);
//! session.logout().await?;
//! # Ok(()) }
//! ```

pub mod chap;
pub mod discovery;
pub mod entropy;
pub mod login;
pub mod lun;
pub mod raw;
pub mod session;
pub mod url;

pub use chap::ChapCredentials;
pub use discovery::{DiscoveredTarget, TargetAddress, discover};
pub use login::{
    DEFAULT_CONNECT_TIMEOUT, LoginError, LoginOptions, LoginOutcome, NegotiationPolicy,
    NegotiationWarning, login,
};
pub use lun::{LogicalUnit, LunError};
pub use raw::{RawConnection, Received, Trace};
pub use session::{
    CommandError, CommandHandle, KeepAlive, ScsiResult, Session, SessionEvent, SessionStats,
};
pub use url::IscsiUrl;
