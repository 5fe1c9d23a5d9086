//! CDB usage maps (SPC-4 §6.35.3): for each command [`crate::scsi::Cdb`]
//! decodes, which CDB bits a device server evaluates.
//!
//! One table, two uses:
//!
//! - REPORT SUPPORTED OPERATION CODES, one-command format, returns the map
//!   as CDB USAGE DATA ([`CommandUsage::usage_data`]).
//! - [`check_reserved`] uses it as a mask: a bit set in the CDB where the
//!   map has a zero is a reserved (or obsolete, unsupported) bit, and the
//!   command is rejected with INVALID FIELD IN CDB pointing at the first
//!   such bit, scanning bytes in order and bits from the most significant.
//!   This matches what devices that implement REPORT SUPPORTED OPERATION
//!   CODES observably do. SPC-4 §3.5 lets a recipient check reserved bits
//!   but does not require it; a strict target does.
//!
//! Choices, per command (all reviewable in the table below):
//!
//! - CONTROL byte: only NACA (bit 2) is in the map; LINK (bit 0, obsolete
//!   since SAM-4) and the vendor bits are rejected. Whether NACA=1 is
//!   accepted is the target's decision (NORMACA in INQUIRY).
//! - Obsolete bits that old initiators still set and that are harmless are
//!   accepted: FUA_NV (READ/WRITE/COMPARE AND WRITE byte 1 bit 1), SYNC_NV
//!   (SYNCHRONIZE CACHE byte 1 bit 2), READ CAPACITY's LBA and PMI.
//!   RELADR (byte 1 bit 0 of 10/12-byte commands), INQUIRY's CMDDT and
//!   WRITE SAME's PBDATA/LBDATA are rejected.
//! - GROUP NUMBER is taken as six bits (SBC-4); the DLD bits of READ(16)/
//!   WRITE(16) and RARC of READ are accepted.

use super::cdb::{CdbError, ScsiOpcode};
use super::wire::u8_at;

/// The usage map of one command (one operation code, or operation code and
/// service action).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandUsage {
    /// Operation code.
    pub opcode: ScsiOpcode,
    /// Service action, for operation codes that have them.
    pub service_action: Option<u16>,
    /// The command name.
    pub name: &'static str,
    /// One byte per CDB byte: 1 bits are evaluated. Byte 0 is 0xff and the
    /// SERVICE ACTION bits are set, as the fields are evaluated.
    pub mask: &'static [u8],
}

impl CommandUsage {
    /// CDB length in bytes.
    pub fn cdb_len(&self) -> usize {
        self.mask.len()
    }

    /// The CDB USAGE DATA field of REPORT SUPPORTED OPERATION CODES
    /// (SPC-4 §6.35.3): byte 0 is the operation code, the SERVICE ACTION
    /// field holds the service action, the rest is the map.
    pub fn usage_data(&self) -> Vec<u8> {
        let mut v = self.mask.to_vec();
        if let Some(b0) = v.first_mut() {
            *b0 = self.opcode.0;
        }
        if let (Some(sa), Some(b1)) = (self.service_action, v.get_mut(1)) {
            *b1 = (*b1 & !0x1f) | (sa as u8 & 0x1f);
        }
        v
    }
}

const C: u8 = 0x04; // CONTROL: NACA only
const FF: u8 = 0xff;

macro_rules! usage {
    ($op:ident, $sa:expr, $name:literal, [$($b:expr),* $(,)?]) => {
        CommandUsage {
            opcode: ScsiOpcode::$op,
            service_action: $sa,
            name: $name,
            mask: &[$($b),*],
        }
    };
}

/// Every command [`crate::scsi::Cdb::parse`] decodes, with its usage map.
#[rustfmt::skip]
pub static COMMANDS: &[CommandUsage] = &[
    usage!(TEST_UNIT_READY, None, "TEST UNIT READY", [FF, 0, 0, 0, 0, C]),
    usage!(REQUEST_SENSE, None, "REQUEST SENSE", [FF, 0x01, 0, 0, FF, C]),
    usage!(READ_6, None, "READ(6)", [FF, 0x1f, FF, FF, FF, C]),
    usage!(WRITE_6, None, "WRITE(6)", [FF, 0x1f, FF, FF, FF, C]),
    usage!(INQUIRY, None, "INQUIRY", [FF, 0x01, FF, FF, FF, C]),
    usage!(MODE_SELECT_6, None, "MODE SELECT(6)", [FF, 0x11, 0, 0, FF, C]),
    usage!(RESERVE_6, None, "RESERVE(6)", [FF, 0, 0, 0, 0, C]),
    usage!(RELEASE_6, None, "RELEASE(6)", [FF, 0, 0, 0, 0, C]),
    usage!(MODE_SENSE_6, None, "MODE SENSE(6)", [FF, 0x08, FF, FF, FF, C]),
    usage!(START_STOP_UNIT, None, "START STOP UNIT", [FF, 0x01, 0, 0x0f, 0xf7, C]),
    usage!(PREVENT_ALLOW_MEDIUM_REMOVAL, None, "PREVENT ALLOW MEDIUM REMOVAL", [FF, 0, 0, 0, 0x03, C]),
    usage!(READ_CAPACITY_10, None, "READ CAPACITY(10)", [FF, 0, FF, FF, FF, FF, 0, 0, 0x01, C]),
    usage!(READ_10, None, "READ(10)", [FF, 0xfe, FF, FF, FF, FF, 0x3f, FF, FF, C]),
    usage!(WRITE_10, None, "WRITE(10)", [FF, 0xfa, FF, FF, FF, FF, 0x3f, FF, FF, C]),
    usage!(WRITE_AND_VERIFY_10, None, "WRITE AND VERIFY(10)", [FF, 0xf6, FF, FF, FF, FF, 0x3f, FF, FF, C]),
    usage!(VERIFY_10, None, "VERIFY(10)", [FF, 0xf6, FF, FF, FF, FF, 0x3f, FF, FF, C]),
    usage!(PRE_FETCH_10, None, "PRE-FETCH(10)", [FF, 0x02, FF, FF, FF, FF, 0x3f, FF, FF, C]),
    usage!(SYNCHRONIZE_CACHE_10, None, "SYNCHRONIZE CACHE(10)", [FF, 0x06, FF, FF, FF, FF, 0x3f, FF, FF, C]),
    usage!(READ_DEFECT_DATA_10, None, "READ DEFECT DATA(10)", [FF, 0, 0x1f, 0, 0, 0, 0, FF, FF, C]),
    usage!(WRITE_SAME_10, None, "WRITE SAME(10)", [FF, 0xf8, FF, FF, FF, FF, 0x3f, FF, FF, C]),
    usage!(UNMAP, None, "UNMAP", [FF, 0x01, 0, 0, 0, 0, 0x3f, FF, FF, C]),
    usage!(SANITIZE, Some(0x01), "SANITIZE (OVERWRITE)", [FF, 0xbf, 0, 0, 0, 0, 0, FF, FF, C]),
    usage!(SANITIZE, Some(0x02), "SANITIZE (BLOCK ERASE)", [FF, 0xbf, 0, 0, 0, 0, 0, FF, FF, C]),
    usage!(SANITIZE, Some(0x03), "SANITIZE (CRYPTOGRAPHIC ERASE)", [FF, 0xbf, 0, 0, 0, 0, 0, FF, FF, C]),
    usage!(SANITIZE, Some(0x1f), "SANITIZE (EXIT FAILURE MODE)", [FF, 0xbf, 0, 0, 0, 0, 0, FF, FF, C]),
    usage!(MODE_SELECT_10, None, "MODE SELECT(10)", [FF, 0x11, 0, 0, 0, 0, 0, FF, FF, C]),
    usage!(MODE_SENSE_10, None, "MODE SENSE(10)", [FF, 0x18, FF, FF, 0, 0, 0, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_IN, Some(0x00), "PERSISTENT RESERVE IN (READ KEYS)", [FF, 0x1f, 0, 0, 0, 0, 0, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_IN, Some(0x01), "PERSISTENT RESERVE IN (READ RESERVATION)", [FF, 0x1f, 0, 0, 0, 0, 0, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_IN, Some(0x02), "PERSISTENT RESERVE IN (REPORT CAPABILITIES)", [FF, 0x1f, 0, 0, 0, 0, 0, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_IN, Some(0x03), "PERSISTENT RESERVE IN (READ FULL STATUS)", [FF, 0x1f, 0, 0, 0, 0, 0, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_OUT, Some(0x00), "PERSISTENT RESERVE OUT (REGISTER)", [FF, 0x1f, FF, 0, 0, FF, FF, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_OUT, Some(0x01), "PERSISTENT RESERVE OUT (RESERVE)", [FF, 0x1f, FF, 0, 0, FF, FF, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_OUT, Some(0x02), "PERSISTENT RESERVE OUT (RELEASE)", [FF, 0x1f, FF, 0, 0, FF, FF, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_OUT, Some(0x03), "PERSISTENT RESERVE OUT (CLEAR)", [FF, 0x1f, FF, 0, 0, FF, FF, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_OUT, Some(0x04), "PERSISTENT RESERVE OUT (PREEMPT)", [FF, 0x1f, FF, 0, 0, FF, FF, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_OUT, Some(0x05), "PERSISTENT RESERVE OUT (PREEMPT AND ABORT)", [FF, 0x1f, FF, 0, 0, FF, FF, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_OUT, Some(0x06), "PERSISTENT RESERVE OUT (REGISTER AND IGNORE EXISTING KEY)", [FF, 0x1f, FF, 0, 0, FF, FF, FF, FF, C]),
    usage!(PERSISTENT_RESERVE_OUT, Some(0x07), "PERSISTENT RESERVE OUT (REGISTER AND MOVE)", [FF, 0x1f, FF, 0, 0, FF, FF, FF, FF, C]),
    usage!(EXTENDED_COPY, Some(0x00), "EXTENDED COPY (LID1)", [FF, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(EXTENDED_COPY, Some(0x01), "EXTENDED COPY (LID4)", [FF, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(RECEIVE_COPY_RESULTS, Some(0x00), "RECEIVE COPY STATUS (LID1)", [FF, 0x1f, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(RECEIVE_COPY_RESULTS, Some(0x01), "RECEIVE COPY DATA (LID1)", [FF, 0x1f, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(RECEIVE_COPY_RESULTS, Some(0x03), "RECEIVE COPY OPERATING PARAMETERS", [FF, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(RECEIVE_COPY_RESULTS, Some(0x04), "RECEIVE COPY FAILURE DETAILS (LID1)", [FF, 0x1f, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(RECEIVE_COPY_RESULTS, Some(0x05), "RECEIVE COPY STATUS (LID4)", [FF, 0x1f, FF, FF, FF, FF, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(RECEIVE_COPY_RESULTS, Some(0x06), "RECEIVE COPY DATA (LID4)", [FF, 0x1f, FF, FF, FF, FF, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(RECEIVE_COPY_RESULTS, Some(0x07), "RECEIVE ROD TOKEN INFORMATION", [FF, 0x1f, FF, FF, FF, FF, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(READ_16, None, "READ(16)", [FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, C]),
    usage!(COMPARE_AND_WRITE, None, "COMPARE AND WRITE", [FF, 0xfa, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, 0, FF, 0x3f, C]),
    usage!(WRITE_16, None, "WRITE(16)", [FF, 0xfb, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, C]),
    usage!(ORWRITE_16, None, "ORWRITE(16)", [FF, 0xfa, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(WRITE_AND_VERIFY_16, None, "WRITE AND VERIFY(16)", [FF, 0xf6, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(VERIFY_16, None, "VERIFY(16)", [FF, 0xf6, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(PRE_FETCH_16, None, "PRE-FETCH(16)", [FF, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(SYNCHRONIZE_CACHE_16, None, "SYNCHRONIZE CACHE(16)", [FF, 0x06, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(WRITE_SAME_16, None, "WRITE SAME(16)", [FF, 0xf9, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(WRITE_ATOMIC_16, None, "WRITE ATOMIC(16)", [FF, 0xf8, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(SERVICE_ACTION_IN_16, Some(0x10), "READ CAPACITY(16)", [FF, 0x1f, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x01, C]),
    usage!(SERVICE_ACTION_IN_16, Some(0x12), "GET LBA STATUS", [FF, 0x1f, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x03, C]),
    usage!(REPORT_LUNS, None, "REPORT LUNS", [FF, 0, FF, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(MAINTENANCE_IN, Some(0x0a), "REPORT TARGET PORT GROUPS", [FF, FF, 0, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(MAINTENANCE_IN, Some(0x0c), "REPORT SUPPORTED OPERATION CODES", [FF, 0x1f, 0x87, FF, FF, FF, FF, FF, FF, FF, 0, C]),
    usage!(MAINTENANCE_IN, Some(0x0d), "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", [FF, 0x1f, 0x80, 0, 0, 0, FF, FF, FF, FF, 0, C]),
    usage!(READ_12, None, "READ(12)", [FF, 0xfe, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(WRITE_12, None, "WRITE(12)", [FF, 0xfa, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(WRITE_AND_VERIFY_12, None, "WRITE AND VERIFY(12)", [FF, 0xf6, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(VERIFY_12, None, "VERIFY(12)", [FF, 0xf6, FF, FF, FF, FF, FF, FF, FF, FF, 0x3f, C]),
    usage!(READ_DEFECT_DATA_12, None, "READ DEFECT DATA(12)", [FF, 0x1f, FF, FF, FF, FF, FF, FF, FF, FF, 0, C]),
];

/// The usage map for an operation code (and service action, for operation
/// codes that have them).
pub fn lookup(opcode: ScsiOpcode, service_action: Option<u16>) -> Option<&'static CommandUsage> {
    COMMANDS
        .iter()
        .find(|u| u.opcode == opcode && u.service_action == service_action)
}

/// The usage map for the command a CDB carries, service action included.
pub fn lookup_cdb(cdb: &[u8]) -> Option<&'static CommandUsage> {
    let opcode = ScsiOpcode(*cdb.first()?);
    let sa = opcode
        .has_service_action()
        .then(|| u16::from(u8_at(cdb, 1) & 0x1f));
    lookup(opcode, sa)
}

/// Rejects a CDB with a bit set outside its usage map, pointing at the
/// first such bit (lowest byte, then most significant bit). `Ok(())` for
/// commands not in [`COMMANDS`]: their fate (INVALID COMMAND OPERATION CODE,
/// or INVALID FIELD IN CDB for an unknown service action) is decided
/// elsewhere. Bytes beyond the CDB length (iSCSI padding) are not checked.
pub fn check_reserved(cdb: &[u8]) -> Result<(), CdbError> {
    let Some(usage) = lookup_cdb(cdb) else {
        return Ok(());
    };
    if cdb.len() < usage.mask.len() {
        return Err(CdbError::TooShort {
            opcode: usage.opcode,
            needed: usage.mask.len(),
            got: cdb.len(),
        });
    }
    for (i, (&b, &m)) in cdb.iter().zip(usage.mask).enumerate().skip(1) {
        let extra = b & !m;
        if extra != 0 {
            return Err(CdbError::InvalidField {
                byte: i as u16,
                bit: Some(7 - extra.leading_zeros() as u8),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::{Cdb, CdbSize};
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    #[test]
    fn table_is_consistent() {
        for u in COMMANDS {
            assert_eq!(u.mask.first(), Some(&0xff), "{}", u.name);
            assert_eq!(Some(u.cdb_len()), u.opcode.cdb_len(), "{}", u.name);
            assert_eq!(
                u.service_action.is_some(),
                u.opcode.has_service_action(),
                "{}",
                u.name
            );
            assert_eq!(u.mask.last(), Some(&C), "{}", u.name);
            // No duplicates.
            assert_eq!(
                COMMANDS
                    .iter()
                    .filter(|v| v.opcode == u.opcode && v.service_action == u.service_action)
                    .count(),
                1,
                "{}",
                u.name
            );
        }
    }

    #[test]
    fn every_table_entry_parses_to_a_decoded_command() {
        for u in COMMANDS {
            let mut cdb = vec![0u8; u.cdb_len()];
            cdb[0] = u.opcode.0;
            if let Some(sa) = u.service_action {
                cdb[1] = sa as u8;
            }
            let parsed = Cdb::parse(&cdb);
            assert!(
                !matches!(
                    parsed,
                    Ok(Cdb::Unknown { .. }) | Ok(Cdb::UnsupportedServiceAction { .. }) | Err(_)
                ),
                "{}: {parsed:?}",
                u.name
            );
            assert_eq!(check_reserved(&cdb), Ok(()), "{}", u.name);
        }
    }

    #[test]
    fn reserved_bits_are_reported_with_a_field_pointer() {
        let mut read10 = Cdb::read(CdbSize::Ten, 0, 1).encode();
        assert_eq!(check_reserved(&read10), Ok(()));
        read10[1] |= 0x01; // obsolete RELADR
        assert_eq!(
            check_reserved(&read10),
            Err(CdbError::InvalidField {
                byte: 1,
                bit: Some(0)
            })
        );
        let mut read10 = Cdb::read(CdbSize::Ten, 0, 1).encode();
        read10[1] |= 0x02; // obsolete FUA_NV: accepted
        assert_eq!(check_reserved(&read10), Ok(()));
        read10[9] = 0x01; // LINK
        assert_eq!(
            check_reserved(&read10),
            Err(CdbError::InvalidField {
                byte: 9,
                bit: Some(0)
            })
        );
        read10[9] = 0x04; // NACA: left to the target
        assert_eq!(check_reserved(&read10), Ok(()));

        let mut inquiry = Cdb::inquiry(None, 36).encode();
        inquiry[1] = 0x02; // CMDDT
        assert_eq!(
            check_reserved(&inquiry),
            Err(CdbError::InvalidField {
                byte: 1,
                bit: Some(1)
            })
        );
        // Highest offending bit of the first offending byte.
        let mut tur = Cdb::TestUnitReady.encode();
        tur[3] = 0x30;
        tur[2] = 0x01;
        assert_eq!(
            check_reserved(&tur),
            Err(CdbError::InvalidField {
                byte: 2,
                bit: Some(0)
            })
        );
        // Unknown commands are not judged here.
        assert_eq!(check_reserved(&[0xc0, 0xff]), Ok(()));
        assert_eq!(check_reserved(&[0x9e, 0x11, 0xff]), Ok(()));
    }

    #[test]
    fn usage_data_carries_opcode_and_service_action() {
        let rc16 = lookup(ScsiOpcode::SERVICE_ACTION_IN_16, Some(0x10));
        let data = rc16.map(CommandUsage::usage_data);
        assert_eq!(
            data,
            Some(vec![
                0x9e, 0x10, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x01, C
            ])
        );
        let rtpg = lookup(ScsiOpcode::MAINTENANCE_IN, Some(0x0a)).map(CommandUsage::usage_data);
        assert_eq!(rtpg.map(|d| d[1]), Some(0xea));
    }

    proptest! {
        /// Every CDB the encoder produces passes the reserved-bit check: the
        /// usage maps cover every field the codec knows.
        #[test]
        fn encoded_cdbs_have_no_reserved_bits(
            lba in any::<u32>(), blocks in any::<u16>(), flags in any::<(bool, bool, bool)>(), protect in 0u8..8,
            group in 0u8..0x40, size in prop_oneof![Just(CdbSize::Ten), Just(CdbSize::Twelve), Just(CdbSize::Sixteen)],
        ) {
            let cdbs = [
                Cdb::Read { size, lba: lba.into(), blocks: blocks.into(), dpo: flags.0, fua: flags.1, rarc: flags.2, rdprotect: protect, group },
                Cdb::Write { size, lba: lba.into(), blocks: blocks.into(), dpo: flags.0, fua: flags.1, wrprotect: protect, group },
                Cdb::Verify { size, lba: lba.into(), blocks: blocks.into(), dpo: flags.0, bytchk: protect & 3, vrprotect: protect, group },
                Cdb::WriteSame { size: CdbSize::Sixteen, lba: lba.into(), blocks: blocks.into(), wrprotect: protect, anchor: flags.0, unmap: flags.1, ndob: flags.2, group },
                Cdb::CompareAndWrite { lba: lba.into(), blocks: blocks as u8, wrprotect: protect, dpo: flags.0, fua: flags.1, group },
                Cdb::ModeSense { size: CdbSize::Ten, dbd: flags.0, llbaa: flags.1, pc: protect & 3, page_code: group, subpage_code: blocks as u8, allocation_length: blocks },
                Cdb::ReportSupportedOpCodes { rctd: flags.0, reporting_options: protect, opcode: ScsiOpcode(group), service_action: blocks, allocation_length: lba },
                Cdb::GetLbaStatus { lba: lba.into(), allocation_length: lba, report_type: protect & 3 },
            ];
            for c in cdbs {
                prop_assert_eq!(check_reserved(&c.encode()), Ok(()), "{:?}", c);
            }
        }

        #[test]
        fn check_never_panics(b in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = check_reserved(&b);
        }
    }
}
