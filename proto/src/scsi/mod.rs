//! # SCSI wire layer (SAM-5, SPC-4, SBC-4)
//!
//! What travels inside iSCSI SCSI Command / Data / Response PDUs: CDBs,
//! status, sense data and the parameter data of the commands a block target
//! implements. Sans-IO like the rest of the crate: bytes in, typed values
//! out, and back.
//!
//! ## Layout
//!
//! - [`status`] — [`ScsiStatus`] (SAM-5 §5.3.1).
//! - [`sense`] — [`SenseKey`], [`Asc`], [`Sense`] in fixed and descriptor
//!   format (SPC-4 §4.5).
//! - [`cdb`] — [`ScsiOpcode`], the typed [`Cdb`] with [`Cdb::parse`] and
//!   [`Cdb::encode`] covering every command a disk LUN answers (SPC-4 §6,
//!   SBC-4 §5), semantic checks in [`Cdb::validate`].
//! - [`usage`] — the CDB usage map of each command (SPC-4 §6.35.3): the bits
//!   a device server evaluates. One table serves REPORT SUPPORTED OPERATION
//!   CODES and [`usage::check_reserved`], the reserved-bit check.
//! - [`inquiry`] — standard INQUIRY data and the VPD pages 0x00, 0x80, 0x83,
//!   0xB0, 0xB1, 0xB2 (SPC-4 §6.6, §7.8; SBC-4 §6.6).
//! - [`capacity`] — READ CAPACITY (10)/(16) and GET LBA STATUS data
//!   (SBC-4 §5.16, §5.17, §5.7).
//! - [`defect`] — READ DEFECT DATA parameter data (SBC-4 §5.19, §5.20).
//! - [`mode`] — mode parameter headers, block descriptors and the caching,
//!   control and informational exceptions pages (SPC-4 §7.5, SBC-4 §6.5).
//! - [`report_luns`] — REPORT LUNS data (SPC-4 §6.33).
//! - [`pr`] — PERSISTENT RESERVE IN data and OUT parameter lists, TransportIDs
//!   (SPC-4 §6.15, §6.16, §7.6.4).
//! - [`unmap`] — the UNMAP parameter list (SBC-4 §5.32.2).
//! - [`opcodes`] — REPORT SUPPORTED OPERATION CODES data (SPC-4 §6.35).
//! - [`xcopy`] — EXTENDED COPY (LID1) parameter lists and RECEIVE COPY
//!   RESULTS data (SPC-4 §6.4, §6.20).
//!
//! ## Conventions
//!
//! - Wire values are newtypes with named constants; unknown values survive a
//!   round trip and print as hex.
//! - Payload structs are plain data with public fields. `encode` cannot fail
//!   and produces the *full* payload; `parse` never panics.
//! - **Allocation length.** SPC-4 §4.2.5.6: a device server returns
//!   `min(allocation length, payload length)` bytes and the length fields
//!   keep describing the whole payload. Encoders ignore the allocation
//!   length; the target cuts with [`truncate`]. Parsers of data-in payloads
//!   accept such truncated buffers: a list yields the entries that arrived
//!   whole, and each list type has an `announced_len`-style helper to learn
//!   how much to ask for next time.
//! - Parameter lists a target receives (MODE SELECT, PERSISTENT RESERVE OUT,
//!   UNMAP) fail with [`DataError`], whose [`DataError::sense`] is the
//!   CHECK CONDITION SPC-4 prescribes (PARAMETER LIST LENGTH ERROR or
//!   INVALID FIELD IN PARAMETER LIST with a field pointer).

pub mod capacity;
pub mod cdb;
pub mod defect;
pub mod inquiry;
pub mod mode;
pub mod opcodes;
pub mod pr;
pub mod report_luns;
pub mod sense;
pub mod status;
pub mod unmap;
pub mod usage;
mod wire;
pub mod xcopy;

pub use capacity::{LbaStatusData, LbaStatusDescriptor, ReadCapacity10Data, ReadCapacity16Data};
pub use cdb::{Cdb, CdbBytes, CdbError, CdbSize, DataDirection, ScsiOpcode};
pub use inquiry::{Designator, Peripheral, PeripheralDeviceType, StandardInquiry, Vpd, VpdPage};
pub use mode::{ModePage, ModeParameters};
pub use pr::{PrInServiceAction, PrOutServiceAction, PrType, TransportId};
pub use report_luns::ReportLunsData;
pub use sense::{Asc, Sense, SenseKey, SenseKeySpecific};
pub use status::ScsiStatus;
pub use unmap::UnmapParameters;

/// Cuts a full payload to the ALLOCATION LENGTH of the CDB (SPC-4 §4.2.5.6).
/// Length fields inside the payload are left as they are: they describe the
/// data available, not the data sent.
pub fn truncate(mut payload: Vec<u8>, allocation_length: u32) -> Vec<u8> {
    let limit = usize::try_from(allocation_length).unwrap_or(usize::MAX);
    payload.truncate(limit);
    payload
}

/// Why parameter data (data-in payload or data-out parameter list) could not
/// be decoded. Byte offsets are from the start of the buffer passed in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The buffer ends before a part that must be there.
    #[error("{what}: need {needed} bytes, got {got}")]
    TooShort {
        /// Which structure.
        what: &'static str,
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The length of a parameter list is wrong for its content (SPC-4 rules
    /// such as "PERSISTENT RESERVE OUT lists are 24 bytes unless SPEC_I_PT").
    #[error("{what}: parameter list length {len} is invalid")]
    ListLength {
        /// Which structure.
        what: &'static str,
        /// The length received.
        len: usize,
    },
    /// A field holds a value that cannot be decoded.
    #[error("{what}: invalid field at byte {byte}{}", bit.map(|b| format!(" bit {b}")).unwrap_or_default())]
    InvalidField {
        /// Which structure.
        what: &'static str,
        /// Offset of the first byte of the field.
        byte: usize,
        /// The most significant bit of the field, if it does not start at
        /// bit 7.
        bit: Option<u8>,
    },
}

impl DataError {
    /// The CHECK CONDITION a device server returns when this error is in a
    /// parameter list it received: PARAMETER LIST LENGTH ERROR for length
    /// problems, INVALID FIELD IN PARAMETER LIST with a field pointer
    /// otherwise (SPC-4 §4.5.2.4.2, C/D = 0).
    pub fn sense(&self) -> Sense {
        match *self {
            DataError::TooShort { .. } | DataError::ListLength { .. } => {
                Sense::parameter_list_length_error()
            }
            DataError::InvalidField { byte, bit, .. } => {
                Sense::invalid_field_in_parameter_list(u16::try_from(byte).unwrap_or(u16::MAX), bit)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_allocation_length() {
        assert_eq!(truncate(vec![1, 2, 3, 4], 2), vec![1, 2]);
        assert_eq!(truncate(vec![1, 2], 200), vec![1, 2]);
        assert_eq!(truncate(vec![1, 2], 0), Vec::<u8>::new());
    }

    #[test]
    fn data_error_maps_to_parameter_list_sense() {
        let e = DataError::InvalidField {
            what: "test",
            byte: 20,
            bit: Some(3),
        };
        let s = e.sense();
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
        assert_eq!(
            s.sense_key_specific,
            Some(SenseKeySpecific::FieldPointer {
                cd: false,
                bit: Some(3),
                field: 20
            })
        );
        let e = DataError::TooShort {
            what: "test",
            needed: 24,
            got: 3,
        };
        assert_eq!(e.sense().asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        assert_eq!(e.to_string(), "test: need 24 bytes, got 3");
    }
}
