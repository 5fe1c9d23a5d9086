//! SCSI command execution: where a CDB becomes backend I/O and a status.
//!
//! The transport ([`crate::conn`]) asks two things of this layer:
//!
//! 1. [`LunTable::transfer`] — from the CDB alone, which way data flows and
//!    how much the command wants (the SCSI transfer length, SPDTL). The
//!    transport uses it to solicit write data with R2Ts and to compute
//!    residuals against the initiator's ExpectedDataTransferLength.
//! 2. [`LunTable::execute`] — run the command with the write data received
//!    (possibly shorter than SPDTL when the initiator's EDTL was shorter) and
//!    return status, read data (the full SPDTL: the transport truncates to
//!    EDTL and reports the overflow) and sense data.
//!
//! Execution is synchronous: backends are memory or positional file I/O
//! (see [`crate::backend`]). A LUN number without a logical unit still
//! answers INQUIRY (peripheral qualifier 3), REPORT LUNS and REQUEST SENSE,
//! as SPC-4 §4.6 requires.

use std::sync::Arc;

use bytes::Bytes;
use iesp_proto::bhs::Lun;
use iesp_proto::pdu::Isid;

mod lu;

pub use lu::LogicalUnit;

/// The I_T nexus a command arrives on: who is asking, through which session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nexus {
    pub initiator_name: Arc<str>,
    pub isid: Isid,
    pub target_name: Arc<str>,
    pub portal_group_tag: u16,
    /// Unique per session within this process.
    pub session_id: u64,
}

/// Which way a command moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    None,
    /// Data-In: target to initiator.
    Read,
    /// Data-Out: initiator to target.
    Write,
}

/// What a command will transfer, from its CDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub direction: Direction,
    /// Bytes the command wants to move (SPDTL).
    pub length: u32,
}

impl Transfer {
    pub const NONE: Transfer = Transfer { direction: Direction::None, length: 0 };
}

/// The outcome of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// SCSI status byte (SAM-5 §5.3).
    pub status: u8,
    /// Data-In payload; may exceed the initiator's EDTL.
    pub data: Bytes,
    /// Sense data, already encoded, for CHECK CONDITION.
    pub sense: Option<Bytes>,
}

impl Completion {
    pub fn good(data: Bytes) -> Completion {
        Completion { status: iesp_proto::scsi::ScsiStatus::GOOD.0, data, sense: None }
    }

    pub fn check_condition(sense: &iesp_proto::scsi::Sense) -> Completion {
        Completion {
            status: iesp_proto::scsi::ScsiStatus::CHECK_CONDITION.0,
            data: Bytes::new(),
            sense: Some(Bytes::from(sense.encode_fixed())),
        }
    }
}

/// The logical units of one target, indexed by LUN number.
#[derive(Default)]
pub struct LunTable {
    luns: Vec<Arc<LogicalUnit>>,
}

impl LunTable {
    pub fn new(luns: Vec<Arc<LogicalUnit>>) -> LunTable {
        LunTable { luns }
    }

    pub fn get(&self, lun: Lun) -> Option<&Arc<LogicalUnit>> {
        self.luns.get(usize::from(lun.index()?))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<LogicalUnit>> {
        self.luns.iter()
    }

    pub fn len(&self) -> usize {
        self.luns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.luns.is_empty()
    }

    /// What `cdb` will transfer on `lun`.
    pub fn transfer(&self, lun: Lun, cdb: &[u8]) -> Transfer {
        match self.get(lun) {
            Some(lu) => lu.transfer(cdb),
            None => lu::transfer_without_lu(cdb),
        }
    }

    /// Runs `cdb` on `lun` with the write data received.
    pub fn execute(&self, nexus: &Nexus, lun: Lun, cdb: &[u8], data_out: &[u8]) -> Completion {
        match self.get(lun) {
            Some(lu) => lu.execute(nexus, cdb, data_out, self),
            None => lu::execute_without_lu(cdb, self),
        }
    }

    /// The LUN numbers in use, for REPORT LUNS.
    pub fn lun_list(&self) -> Vec<Lun> {
        (0..self.luns.len()).map(|i| Lun::from_index(i as u16)).collect()
    }

    /// Makes every LU's completed writes durable (shutdown).
    pub fn flush_all(&self) {
        for lu in &self.luns {
            if let Err(e) = lu.flush() {
                tracing::warn!(lu = %lu.describe(), "flush at shutdown failed: {e}");
            }
        }
    }
}
