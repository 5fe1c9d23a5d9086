//! A full feature phase session that keeps many commands in flight
//! (RFC 7143 §3.2, §4.2, §11), error recovery level 0.
//!
//! ## Layout
//!
//! - [`core`] — [`SessionCore`], the protocol state, sans-IO: requests and
//!   decoded frames in, PDU bytes and completion events out, time passed
//!   in (`handle_timeout(now)` / `poll_timeout()` for the keep-alive
//!   clock). No tokio types; tested by transcripts at the bottom of the file.
//! - `driver` — the tokio side: a reader task that frames what the target
//!   sends, feeds the core and sleeps until its next timeout; a writer
//!   task for what the socket could not take at once; the callers'
//!   oneshots resolved from the core's completions. The core sits behind a
//!   mutex that nobody holds across I/O; a caller that queues output
//!   writes it itself, without blocking (one vectored write per batch).
//! - `handle` — [`Session`] (a cheap `Clone` handle whose `&self` methods
//!   may be called from many tasks at once) and [`CommandHandle`].
//!
//! What the session does for each command:
//!
//! - **Ordering**: CmdSN from the login's, advanced per non-immediate
//!   request; a request whose CmdSN would pass MaxCmdSN waits in a local
//!   queue until a response opens the window. ExpCmdSN/MaxCmdSN are taken
//!   from every response that carries them, in serial arithmetic, and
//!   ignored when MaxCmdSN < ExpCmdSN − 1 (§4.2.2.1). ExpStatSN acknowledges
//!   every StatSN-consuming response (§4.2.2.2).
//! - **ITTs**: never 0xffffffff, never one still in use (§11.2.1.8).
//! - **Write data** (§4.2.3, §11.7): immediate data up to
//!   min(FirstBurstLength, the target's MaxRecvDataSegmentLength, EDTL) when
//!   ImmediateData=Yes; with InitialR2T=No, unsolicited Data-Out (TTT
//!   0xffffffff) up to FirstBurstLength, F on the last; then Data-Out for
//!   each R2T: segments ≤ the target's MaxRecvDataSegmentLength, DataSN from
//!   0 per R2T, F on the last, TTT echoed. Data segments are not copied:
//!   they go to the socket as slices of the caller's buffer.
//! - **Read data** (§11.7.4): Data-In placed by BufferOffset; a single
//!   Data-In covering the transfer is handed over without copying; status
//!   may arrive in the last Data-In (S bit) or in a SCSI Response, with
//!   residuals (§11.4.5) and sense data (§11.4.7).
//! - **Target pings**: a NOP-In with a TTT gets a NOP-Out echo (§11.19).
//! - **Failure**: when the connection drops, every outstanding and queued
//!   request fails at once with [`CommandError::Closed`]. A target that
//!   breaks a rule for one task (a DataSN out of order, an R2T beyond the
//!   write data) fails that task with [`CommandError::Protocol`]; its ITT
//!   stays reserved until the target finishes it.
//!
//! Task management ([`Session::task_management`]) completes the tasks it
//! aborts with [`CommandError::Aborted`], since the target sends no status
//! for them (SAM-5 §7.1.1).

pub mod core;
mod driver;
mod handle;
mod read_buf;

use std::time::Duration;

use bytes::Bytes;
use iesp_proto::bhs::Bhs;
use iesp_proto::pdu::{
    AsyncMessage, Reject, RejectReason, Residual, ScsiResponseCode, TmfFunction,
};
use iesp_proto::scsi::{ScsiStatus, Sense};

pub use self::core::{Completion, Event, KeepAlive, SessionCore};
pub use self::handle::{CommandHandle, Session};
pub use iesp_netpoll::MAX_POLL_US;

/// The longest CDB a SCSI Command can carry: 16 bytes in the BHS plus an
/// Extended CDB AHS (AHSLength is 16 bits, §11.2.2.3).
pub const MAX_CDB_LEN: usize = 16 + 65_531;

/// The outcome of a SCSI command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResult {
    /// The SCSI status (SAM-5 §5.3.1).
    pub status: ScsiStatus,
    /// The iSCSI Response field: whether the target completed the command
    /// (§11.4.3).
    pub response: ScsiResponseCode,
    /// Data-In, as placed by BufferOffset, up to the highest byte received.
    pub data: Bytes,
    /// Sense data of a CHECK CONDITION, decoded when it decodes.
    pub sense: Option<Sense>,
    /// The sense bytes as received (empty when there were none).
    pub sense_data: Bytes,
    /// The residual (§11.4.5).
    pub residual: Residual,
}

impl ScsiResult {
    /// Status GOOD and the command completed at the target.
    pub fn is_good(&self) -> bool {
        self.status == ScsiStatus::GOOD && self.response == ScsiResponseCode::COMMAND_COMPLETED
    }
}

/// Why a request did not get its answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The session ended (connection dropped, logged out, handle dropped).
    #[error("session closed: {0}")]
    Closed(String),
    /// No answer within the timeout. The task stays outstanding at the target.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A task management function ended the task.
    #[error("aborted by {0}")]
    Aborted(TmfFunction),
    /// The target rejected the request PDU (§11.17).
    #[error("rejected by the target: {0}")]
    Rejected(RejectReason),
    /// The target broke a rule of the protocol for this task.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request cannot be sent as asked.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Something the target sent that belongs to no request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// An Asynchronous Message (§11.9) and its data segment.
    Async(AsyncMessage, Bytes),
    /// A Reject (§11.17) of a PDU that is not a request (e.g. a Data-Out),
    /// with the rejected header when it was carried.
    Reject(Reject, Option<Bhs>),
}

/// Sequence numbers and queue depths at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionStats {
    /// CmdSN of the next non-immediate request.
    pub cmd_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// Requests sent and not yet answered.
    pub in_flight: usize,
    /// Requests waiting for the CmdSN window.
    pub queued: usize,
}
