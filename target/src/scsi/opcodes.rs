//! The command set a logical unit implements, and REPORT SUPPORTED
//! OPERATION CODES (SPC-4 §6.35).
//!
//! [`SUPPORTED`] is the single list: the dispatcher admits exactly these
//! commands (anything else is INVALID COMMAND OPERATION CODE, or INVALID
//! FIELD IN CDB for an unsupported service action of a supported operation
//! code), and REPORT SUPPORTED OPERATION CODES reports exactly these, with
//! the CDB usage maps of [`usage`] — the same maps the reserved-bit check
//! enforces, so what we report and what we do cannot disagree.
//!
//! Reporting options (SPC-4 §6.35.1, table 256): 000b all commands; 001b one
//! command by operation code, INVALID FIELD IN CDB if it has service
//! actions; 010b by operation code and service action, INVALID FIELD IN CDB
//! if it has none; 011b by operation code, plus the service action when it
//! has them. An unsupported command in the one-command forms is SUPPORT
//! 001b, not an error. With RCTD each descriptor carries a command timeouts
//! descriptor: no nominal time is claimed, 30 s is recommended.

use bytes::Bytes;
use iesp_proto::scsi::opcodes::{AllCommands, CommandTimeouts, OneCommand};
use iesp_proto::scsi::{ScsiOpcode, Sense, truncate, usage};

use super::sense::Outcome;

/// Operation code and service action of every command a disk LU executes,
/// ascending; [`THIN_ONLY`] ones only on a thin provisioned unit.
pub const SUPPORTED: &[(ScsiOpcode, Option<u16>)] = &[
    (ScsiOpcode::TEST_UNIT_READY, None),
    (ScsiOpcode::REQUEST_SENSE, None),
    (ScsiOpcode::READ_6, None),
    (ScsiOpcode::WRITE_6, None),
    (ScsiOpcode::INQUIRY, None),
    (ScsiOpcode::MODE_SELECT_6, None),
    (ScsiOpcode::RESERVE_6, None),
    (ScsiOpcode::RELEASE_6, None),
    (ScsiOpcode::MODE_SENSE_6, None),
    (ScsiOpcode::START_STOP_UNIT, None),
    (ScsiOpcode::READ_CAPACITY_10, None),
    (ScsiOpcode::READ_10, None),
    (ScsiOpcode::WRITE_10, None),
    (ScsiOpcode::WRITE_AND_VERIFY_10, None),
    (ScsiOpcode::VERIFY_10, None),
    (ScsiOpcode::PRE_FETCH_10, None),
    (ScsiOpcode::SYNCHRONIZE_CACHE_10, None),
    (ScsiOpcode::READ_DEFECT_DATA_10, None),
    (ScsiOpcode::WRITE_SAME_10, None),
    (ScsiOpcode::UNMAP, None),
    (ScsiOpcode::MODE_SELECT_10, None),
    (ScsiOpcode::MODE_SENSE_10, None),
    (ScsiOpcode::PERSISTENT_RESERVE_IN, Some(0x00)), // READ KEYS
    (ScsiOpcode::PERSISTENT_RESERVE_IN, Some(0x01)), // READ RESERVATION
    (ScsiOpcode::PERSISTENT_RESERVE_IN, Some(0x02)), // REPORT CAPABILITIES
    (ScsiOpcode::PERSISTENT_RESERVE_IN, Some(0x03)), // READ FULL STATUS
    (ScsiOpcode::PERSISTENT_RESERVE_OUT, Some(0x00)), // REGISTER
    (ScsiOpcode::PERSISTENT_RESERVE_OUT, Some(0x01)), // RESERVE
    (ScsiOpcode::PERSISTENT_RESERVE_OUT, Some(0x02)), // RELEASE
    (ScsiOpcode::PERSISTENT_RESERVE_OUT, Some(0x03)), // CLEAR
    (ScsiOpcode::PERSISTENT_RESERVE_OUT, Some(0x04)), // PREEMPT
    (ScsiOpcode::PERSISTENT_RESERVE_OUT, Some(0x05)), // PREEMPT AND ABORT
    (ScsiOpcode::PERSISTENT_RESERVE_OUT, Some(0x06)), // REGISTER AND IGNORE EXISTING KEY
    (ScsiOpcode::PERSISTENT_RESERVE_OUT, Some(0x07)), // REGISTER AND MOVE
    (ScsiOpcode::EXTENDED_COPY, Some(0x00)),         // EXTENDED COPY (LID1)
    (ScsiOpcode::RECEIVE_COPY_RESULTS, Some(0x00)),  // RECEIVE COPY STATUS (LID1)
    (ScsiOpcode::RECEIVE_COPY_RESULTS, Some(0x03)),  // RECEIVE COPY OPERATING PARAMETERS
    (ScsiOpcode::READ_16, None),
    (ScsiOpcode::COMPARE_AND_WRITE, None),
    (ScsiOpcode::WRITE_16, None),
    (ScsiOpcode::ORWRITE_16, None),
    (ScsiOpcode::WRITE_AND_VERIFY_16, None),
    (ScsiOpcode::VERIFY_16, None),
    (ScsiOpcode::PRE_FETCH_16, None),
    (ScsiOpcode::SYNCHRONIZE_CACHE_16, None),
    (ScsiOpcode::WRITE_SAME_16, None),
    (ScsiOpcode::SERVICE_ACTION_IN_16, Some(0x10)), // READ CAPACITY(16)
    (ScsiOpcode::SERVICE_ACTION_IN_16, Some(0x12)), // GET LBA STATUS
    (ScsiOpcode::REPORT_LUNS, None),
    (ScsiOpcode::MAINTENANCE_IN, Some(0x0c)), // REPORT SUPPORTED OPERATION CODES
    (ScsiOpcode::READ_12, None),
    (ScsiOpcode::WRITE_12, None),
    (ScsiOpcode::WRITE_AND_VERIFY_12, None),
    (ScsiOpcode::VERIFY_12, None),
    (ScsiOpcode::READ_DEFECT_DATA_12, None),
];

/// Commands of [`SUPPORTED`] a fully provisioned unit does not have.
pub const THIN_ONLY: &[(ScsiOpcode, Option<u16>)] = &[(ScsiOpcode::UNMAP, None)];

/// The command set of a unit, thin provisioned or not.
pub fn command_set(thin: bool) -> Vec<(ScsiOpcode, Option<u16>)> {
    SUPPORTED
        .iter()
        .filter(|c| thin || !THIN_ONLY.contains(c))
        .copied()
        .collect()
}

/// What a LUN without a logical unit answers (SPC-4 §4.6.4).
pub const WITHOUT_LU: &[(ScsiOpcode, Option<u16>)] = &[
    (ScsiOpcode::REQUEST_SENSE, None),
    (ScsiOpcode::INQUIRY, None),
    (ScsiOpcode::REPORT_LUNS, None),
];

/// Whether a CDB's command is in a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Yes,
    /// The operation code is not implemented at all.
    NoOpcode,
    /// The operation code is, this service action is not.
    NoServiceAction,
}

fn support_in(list: &[(ScsiOpcode, Option<u16>)], cdb: &[u8]) -> Support {
    let Some(&op) = cdb.first() else {
        return Support::NoOpcode;
    };
    let op = ScsiOpcode(op);
    let sa = op
        .has_service_action()
        .then(|| u16::from(cdb.get(1).copied().unwrap_or(0) & 0x1f));
    if list.contains(&(op, sa)) {
        Support::Yes
    } else if list.iter().any(|(o, _)| *o == op) {
        Support::NoServiceAction
    } else {
        Support::NoOpcode
    }
}

/// Support of a CDB on a logical unit, thin provisioned or not.
pub fn supported(cdb: &[u8], thin: bool) -> Support {
    let unsupported_here = !thin
        && cdb
            .first()
            .is_some_and(|op| THIN_ONLY.iter().any(|(o, _)| o.0 == *op));
    if unsupported_here {
        return Support::NoOpcode;
    }
    support_in(SUPPORTED, cdb)
}

/// Support of a CDB on a LUN without a logical unit.
pub fn supported_without_lu(cdb: &[u8]) -> Support {
    support_in(WITHOUT_LU, cdb)
}

/// REPORT SUPPORTED OPERATION CODES over `list` (see the module docs).
/// Reporting options above 011b were rejected by `Cdb::validate`.
pub fn report(
    list: &[(ScsiOpcode, Option<u16>)],
    rctd: bool,
    reporting_options: u8,
    opcode: ScsiOpcode,
    service_action: u16,
    allocation_length: u32,
) -> Outcome {
    let timeouts = rctd.then_some(CommandTimeouts {
        command_specific: 0,
        nominal: 0,
        recommended: 30,
    });
    let one = |sa: Option<u16>| {
        let usage = list
            .contains(&(opcode, sa))
            .then(|| usage::lookup(opcode, sa))
            .flatten();
        match usage {
            Some(u) => OneCommand::supported(u, timeouts),
            None => OneCommand::not_supported(),
        }
        .encode()
    };
    let has_sa = opcode.has_service_action();
    let data = match reporting_options {
        0 => AllCommands::from_usages(
            list.iter().filter_map(|(op, sa)| usage::lookup(*op, *sa)),
            timeouts,
        )
        .encode(),
        1 if has_sa => return Err(Sense::invalid_field_in_cdb(2, Some(2))),
        2 if !has_sa => return Err(Sense::invalid_field_in_cdb(2, Some(2))),
        1 => one(None),
        2 => one(Some(service_action)),
        _ => one(has_sa.then_some(service_action)),
    };
    Ok(Bytes::from(truncate(data, allocation_length)))
}

#[cfg(test)]
mod tests {
    use iesp_proto::scsi::opcodes::Support as Sup;
    use iesp_proto::scsi::{Asc, Cdb, CdbSize};

    use super::*;
    use crate::scsi::testutil::Harness;

    fn rsoc(reporting_options: u8, opcode: ScsiOpcode, service_action: u16, rctd: bool) -> Cdb {
        Cdb::ReportSupportedOpCodes {
            rctd,
            reporting_options,
            opcode,
            service_action,
            allocation_length: 4096,
        }
    }

    #[test]
    fn every_listed_command_has_a_usage_map() {
        for (op, sa) in SUPPORTED.iter().chain(WITHOUT_LU) {
            assert!(usage::lookup(*op, *sa).is_some(), "{op:?}/{sa:?}");
        }
    }

    #[test]
    fn all_commands_round_trip() {
        let h = Harness::ram(64);
        let data = h.good(&rsoc(0, ScsiOpcode(0), 0, false), &[]);
        let all = AllCommands::parse(&data).expect("parses");
        let listed: Vec<_> = all
            .descriptors
            .iter()
            .map(|d| (d.opcode, d.service_action))
            .collect();
        assert_eq!(listed, SUPPORTED.to_vec());
        assert!(
            SUPPORTED.windows(2).all(|w| w[0] < w[1]),
            "ascending, no duplicates"
        );
        assert!(all.descriptors.iter().all(|d| d.timeouts.is_none()));
        let read10 = all
            .descriptors
            .iter()
            .find(|d| d.opcode == ScsiOpcode::READ_10)
            .map(|d| d.cdb_length);
        assert_eq!(read10, Some(10));
        let data = h.good(&rsoc(0, ScsiOpcode(0), 0, true), &[]);
        let all = AllCommands::parse(&data).expect("parses");
        assert!(
            all.descriptors
                .iter()
                .all(|d| d.timeouts.is_some_and(|t| t.recommended == 30))
        );
    }

    #[test]
    fn one_command_forms() {
        let h = Harness::ram(64);
        let data = h.good(&rsoc(1, ScsiOpcode::READ_10, 0, false), &[]);
        let one = OneCommand::parse(&data).expect("parses");
        assert_eq!(one.support, Sup::STANDARD);
        // DPO and FUA are usable: the MODE SENSE DPOFUA bit says so too.
        assert_eq!(one.usage_data.get(1).map(|b| b & 0x18), Some(0x18));
        assert_eq!(one.usage_data.len(), 10);
        let data = h.good(&rsoc(2, ScsiOpcode::SERVICE_ACTION_IN_16, 0x10, false), &[]);
        assert_eq!(
            OneCommand::parse(&data).map(|o| o.usage_data[..2].to_vec()),
            Ok(vec![0x9e, 0x10])
        );
        let data = h.good(&rsoc(3, ScsiOpcode::WRITE_16, 0x55, false), &[]);
        assert_eq!(
            OneCommand::parse(&data).map(|o| o.support),
            Ok(Sup::STANDARD)
        );
        // Unsupported: reported as such, not an error.
        for c in [
            rsoc(1, ScsiOpcode::WRITE_ATOMIC_16, 0, false),
            rsoc(2, ScsiOpcode::SERVICE_ACTION_IN_16, 0x11, false),
            rsoc(1, ScsiOpcode::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, false),
        ] {
            let data = h.good(&c, &[]);
            assert_eq!(
                OneCommand::parse(&data).map(|o| o.support),
                Ok(Sup::NOT_SUPPORTED)
            );
        }
        // Wrong form for the opcode.
        assert_eq!(
            h.check(&rsoc(1, ScsiOpcode::MAINTENANCE_IN, 0x0c, false), &[])
                .asc,
            Asc::INVALID_FIELD_IN_CDB
        );
        assert_eq!(
            h.check(&rsoc(2, ScsiOpcode::READ_16, 0, false), &[]).asc,
            Asc::INVALID_FIELD_IN_CDB
        );
        assert_eq!(
            h.check(&rsoc(5, ScsiOpcode::READ_16, 0, false), &[]).asc,
            Asc::INVALID_FIELD_IN_CDB
        );
        // Timeouts in the one-command form.
        let data = h.good(&rsoc(1, ScsiOpcode::READ_10, 0, true), &[]);
        assert!(OneCommand::parse(&data).is_ok_and(|o| o.timeouts.is_some()));
    }

    #[test]
    fn support_lookup() {
        assert_eq!(
            supported(&Cdb::read(CdbSize::Twelve, 0, 1).encode(), false),
            Support::Yes
        );
        assert_eq!(supported(&[0x9e, 0x10], true), Support::Yes);
        assert_eq!(supported(&[0x9e, 0x11], true), Support::NoServiceAction);
        assert_eq!(supported(&[0x9c], true), Support::NoOpcode);
        assert_eq!(supported(&[], true), Support::NoOpcode);
        // UNMAP only where it can deallocate.
        assert_eq!(supported(&[0x42], true), Support::Yes);
        assert_eq!(supported(&[0x42], false), Support::NoOpcode);
        assert_eq!(command_set(false).len(), SUPPORTED.len() - 1);
        assert_eq!(supported_without_lu(&[0x12]), Support::Yes);
        assert_eq!(supported_without_lu(&[0x00]), Support::NoOpcode);
    }
}
