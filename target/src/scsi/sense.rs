//! How command outcomes become completions, and which sense a backend
//! failure earns (SPC-4 §4.5; SBC-4 §4.14, §4.7.3.6).
//!
//! Command handlers return [`Outcome`]: the Data-In payload, or the sense
//! of the CHECK CONDITION. [`respond`] encodes the sense in the format the
//! Control mode page's D_SENSE bit selects. The few commands that can end
//! in RESERVATION CONFLICT without sense (persistent reservations) fail
//! with a [`Fault`].
//!
//! Backend errors never panic and never close the connection: a failed read
//! is MEDIUM ERROR / UNRECOVERED READ ERROR, a failed write or flush MEDIUM
//! ERROR / WRITE ERROR, each with the command's starting LBA in INFORMATION.
//! A write that fails because the file system is out of space is DATA
//! PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT, as SBC-4 prescribes for
//! a thin provisioned LU that cannot allocate (§4.7.3.6).

use std::io;

use bytes::Bytes;
use iesp_proto::scsi::{Asc, ScsiStatus, Sense};

use super::Completion;

/// A command's result: Data-In bytes (possibly empty) or the CHECK
/// CONDITION sense.
pub type Outcome = Result<Bytes, Sense>;

/// GOOD with `data`, or CHECK CONDITION in fixed or descriptor format.
pub fn respond(outcome: Outcome, descriptor: bool) -> Completion {
    match outcome {
        Ok(data) => Completion::good(data),
        Err(sense) => Completion::check_condition_in(&sense, descriptor),
    }
}

/// Why a command did not complete with GOOD: CHECK CONDITION with sense
/// data, or RESERVATION CONFLICT, which has none (SAM-5 §5.3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Check(Sense),
    Conflict,
}

impl From<Sense> for Fault {
    fn from(s: Sense) -> Fault {
        Fault::Check(s)
    }
}

/// GOOD with `data`, CHECK CONDITION, or RESERVATION CONFLICT.
pub fn respond_fault(outcome: Result<Bytes, Fault>, descriptor: bool) -> Completion {
    match outcome {
        Ok(data) => Completion::good(data),
        Err(Fault::Check(sense)) => Completion::check_condition_in(&sense, descriptor),
        Err(Fault::Conflict) => Completion::status(ScsiStatus::RESERVATION_CONFLICT),
    }
}

/// What was being done when the backend failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    Read,
    Write,
    Flush,
    /// Deallocation (UNMAP, WRITE SAME with UNMAP): reported as a write.
    Unmap,
}

/// The sense for a backend error during `op` of a command starting at `lba`.
pub fn io_error(op: IoOp, lba: u64, e: &io::Error) -> Sense {
    tracing::error!(?op, lba, "backend I/O failed: {e}");
    let out_of_space =
        e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(nix::libc::EDQUOT);
    match op {
        IoOp::Write | IoOp::Flush | IoOp::Unmap if out_of_space => {
            Sense::data_protect(Asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT)
        }
        IoOp::Read => Sense::medium_error(Asc::UNRECOVERED_READ_ERROR, lba),
        IoOp::Write | IoOp::Flush | IoOp::Unmap => Sense::medium_error(Asc::WRITE_ERROR, lba),
    }
}

#[cfg(test)]
mod tests {
    use iesp_proto::scsi::{ScsiStatus, SenseKey};

    use super::*;

    #[test]
    fn io_errors_map_to_medium_error_or_space_exhaustion() {
        let eio = io::Error::from_raw_os_error(nix::libc::EIO);
        let s = io_error(IoOp::Read, 77, &eio);
        assert_eq!(
            (s.key, s.asc, s.information),
            (
                SenseKey::MEDIUM_ERROR,
                Asc::UNRECOVERED_READ_ERROR,
                Some(77)
            )
        );
        let s = io_error(IoOp::Write, 5, &eio);
        assert_eq!(
            (s.key, s.asc, s.information),
            (SenseKey::MEDIUM_ERROR, Asc::WRITE_ERROR, Some(5))
        );
        let full = io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let s = io_error(IoOp::Write, 5, &full);
        assert_eq!(
            (s.key, s.asc),
            (
                SenseKey::DATA_PROTECT,
                Asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT
            )
        );
        // A read never reports space exhaustion.
        assert_eq!(io_error(IoOp::Read, 0, &full).key, SenseKey::MEDIUM_ERROR);
    }

    #[test]
    fn respond_honours_the_sense_format() {
        let s = Sense::lba_out_of_range(9);
        let fixed = respond(Err(s.clone()), false);
        let desc = respond(Err(s.clone()), true);
        assert_eq!(fixed.status, ScsiStatus::CHECK_CONDITION.0);
        assert_eq!(fixed.sense.as_deref().map(|b| b[0] & 0x7f), Some(0x70));
        assert_eq!(desc.sense.as_deref().map(|b| b[0] & 0x7f), Some(0x72));
        for c in [fixed.clone(), desc] {
            assert_eq!(c.sense.as_deref().map(Sense::parse), Some(Ok(s.clone())));
        }
        let conflict = respond_fault(Err(Fault::Conflict), true);
        assert_eq!(
            (conflict.status, conflict.sense, conflict.data.len()),
            (ScsiStatus::RESERVATION_CONFLICT.0, None, 0)
        );
        let check = respond_fault(Err(Fault::from(s.clone())), false);
        assert_eq!(check, fixed);
        let good = respond(Ok(Bytes::from_static(b"x")), true);
        assert_eq!(
            (good.status, good.sense, &good.data[..]),
            (0, None, &b"x"[..])
        );
    }
}
