//! A SCSI command parsed once: the typed form the transport and the logical
//! unit share.
//!
//! The transport needs the CDB when the command arrives (which way data
//! flows, how much to solicit) and again when all its data is in (to run
//! it). [`LunTable::prepare`](super::LunTable::prepare) parses the CDB then,
//! once, into a [`Command`]: the decoded [`Cdb`] (or the sense data a
//! malformed one earns), the result of the CDB-only checks
//! ([`super::lu`]'s step 4) and the [`Transfer`]. Execution
//! ([`LunTable::run`](super::LunTable::run)) works from that; it repeats
//! the CDB-only checks only if write protection changed in between (a
//! MODE SELECT of SWP on another session), since that is the one input of
//! those checks that is not in the CDB or fixed at LU creation.
//!
//! Nothing here allocates for a CDB that fits the 16-byte BHS field; only an
//! extended CDB (Additional Header Segment, RFC 7143 §11.3.3) is kept on
//! the heap.

use iesp_proto::bhs::Lun;
use iesp_proto::scsi::{Cdb, Sense};

use super::Transfer;

/// The CDB bytes as received: the BHS field, or the BHS field followed by
/// an extended-CDB AHS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawCdb {
    /// The 16-byte field of the BHS (shorter CDBs are zero-padded).
    Header([u8; 16]),
    /// Longer than 16 bytes (rare: no supported command needs it).
    Extended(Box<[u8]>),
}

impl RawCdb {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            RawCdb::Header(b) => b,
            RawCdb::Extended(b) => b,
        }
    }
}

/// Where the CDB-only checks of a decoded command stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Checked {
    /// The write protection the checks ran with (only commands that write
    /// the medium look at it; false for the others).
    pub write_protected: bool,
    /// Their outcome.
    pub outcome: Result<(), Sense>,
}

/// What parsing found, for the unit at the command's LUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// A logical unit is there: its decode (step 2) and, when that
    /// succeeded, the CDB-only checks (step 4).
    Lu {
        decoded: Result<Cdb, Sense>,
        checked: Option<Checked>,
    },
    /// No logical unit at this LUN: the few commands it answers are decoded
    /// when they run ([`super::luns`]).
    NoLu,
}

/// A SCSI command, parsed for the logical unit at its LUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub(super) lun: Lun,
    pub(super) raw: RawCdb,
    pub(super) parsed: Parsed,
    pub(super) transfer: Transfer,
    /// A READ of enough data may leave it in the backing file
    /// ([`Command::allow_splice`]).
    pub(super) splice: bool,
}

impl Command {
    /// Lets a READ's data stay in the backing file, for the connection's
    /// writer to send with `sendfile` ([`crate::backend::splice`]): the
    /// connection's business, as only it knows there is no data digest
    /// to compute over the bytes.
    pub fn allow_splice(&mut self) {
        self.splice = true;
    }

    /// The LUN the command addresses.
    pub fn lun(&self) -> Lun {
        self.lun
    }

    /// The CDB as received.
    pub fn raw(&self) -> &[u8] {
        self.raw.as_slice()
    }

    /// The operation code (0xff for an empty CDB, which no table lists).
    pub fn opcode(&self) -> u8 {
        self.raw().first().copied().unwrap_or(0xff)
    }

    /// The decoded CDB, when a logical unit is there and the CDB is valid.
    pub fn cdb(&self) -> Option<&Cdb> {
        match &self.parsed {
            Parsed::Lu {
                decoded: Ok(cdb), ..
            } => Some(cdb),
            _ => None,
        }
    }

    /// Which way data flows and how much the command wants (SPDTL);
    /// [`Transfer::NONE`] for a command that will be rejected from its CDB
    /// alone.
    pub fn transfer(&self) -> Transfer {
        self.transfer
    }
}

#[cfg(test)]
mod tests {
    use iesp_proto::bhs::Lun;
    use iesp_proto::scsi::{Asc, CdbSize, ScsiOpcode, SenseKey, SenseKeySpecific, usage};
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::scsi::opcodes::SUPPORTED;
    use crate::scsi::testutil::{Harness, check_of};
    use crate::scsi::{Direction, Transfer};

    fn padded(cdb: &[u8]) -> RawCdb {
        let mut b = [0u8; 16];
        b[..cdb.len()].copy_from_slice(cdb);
        RawCdb::Header(b)
    }

    /// A CDB of the opcode and service action with every other field
    /// zero: valid for every supported command (REPORT LUNS needs an
    /// allocation length of 16 at execution, not to parse).
    fn zeroed(op: ScsiOpcode, sa: Option<u16>) -> Vec<u8> {
        let u = usage::lookup(op, sa).expect("every supported command has a usage map");
        let mut cdb = u.usage_data().to_vec();
        for b in cdb.iter_mut().skip(1) {
            *b = 0;
        }
        if let Some(sa) = sa {
            cdb[1] = sa as u8;
        }
        cdb
    }

    #[test]
    fn every_supported_command_parses_once_and_round_trips() {
        let h = Harness::ram(1024);
        for &(op, sa) in SUPPORTED {
            let raw = zeroed(op, sa);
            let command = h.table.prepare(Lun::from_index(0), padded(&raw));
            assert_eq!(command.opcode(), op.0);
            let cdb = command
                .cdb()
                .unwrap_or_else(|| panic!("{op:?}/{sa:?} does not decode: {:?}", command.parsed))
                .clone();
            assert_eq!(cdb.opcode(), op, "{op:?}/{sa:?}");
            // The typed command encodes back to the bytes it came from,
            // and those parse to the same command.
            let encoded = cdb.encode();
            assert_eq!(&encoded[..], &raw[..], "{op:?}/{sa:?}");
            let again = h
                .table
                .prepare(Lun::from_index(0), RawCdb::Header(encoded.padded()));
            assert_eq!(again.cdb(), Some(&cdb), "{op:?}/{sa:?}");
            assert_eq!(again.transfer(), command.transfer(), "{op:?}/{sa:?}");
        }
    }

    #[test]
    fn typed_fields_survive_the_round_trip() {
        let h = Harness::ram(1 << 20);
        for cdb in [
            Cdb::read(CdbSize::Six, 0x1f_ffff, 7),
            Cdb::read(CdbSize::Ten, 0xdead, 128),
            Cdb::read(CdbSize::Twelve, 0xbeef, 9),
            Cdb::read(CdbSize::Sixteen, 0xf_0000, 16),
            Cdb::write(CdbSize::Ten, 77, 3, true),
            Cdb::write(CdbSize::Sixteen, 0xe_0000, 2048, false),
            Cdb::inquiry(Some(0x83), 255),
            Cdb::report_luns(64),
        ] {
            let command = h
                .table
                .prepare(Lun::from_index(0), RawCdb::Header(cdb.encode().padded()));
            assert_eq!(command.cdb(), Some(&cdb));
        }
        let r = h.table.prepare(
            Lun::from_index(0),
            RawCdb::Header(Cdb::read(CdbSize::Sixteen, 8, 8).encode().padded()),
        );
        assert_eq!(
            r.transfer(),
            Transfer {
                direction: Direction::Read,
                length: 4096
            }
        );
    }

    fn field(byte: u16, bit: Option<u8>) -> Option<SenseKeySpecific> {
        Some(SenseKeySpecific::FieldPointer {
            cd: true,
            bit,
            field: byte,
        })
    }

    /// Malformed CDBs earn the sense data they always did (the values the
    /// per-family tests pin), whether parsed once and run, or run from the
    /// bytes; and none solicits data.
    #[test]
    fn malformed_cdbs_keep_their_sense() {
        let h = Harness::ram(1000);
        let mut reladr = Cdb::read(CdbSize::Ten, 0, 1).encode();
        reladr[1] |= 0x01;
        let mut naca = Cdb::write(CdbSize::Ten, 0, 1, false).encode();
        naca[9] = 0x04;
        let mut rdprotect = Cdb::read(CdbSize::Sixteen, 0, 1).encode();
        rdprotect[1] |= 0x20;
        let cases: Vec<(Vec<u8>, SenseKey, Asc, Option<SenseKeySpecific>)> = vec![
            (
                vec![0xc1; 16],
                SenseKey::ILLEGAL_REQUEST,
                Asc::INVALID_COMMAND_OPERATION_CODE,
                None,
            ),
            (
                vec![0x9e, 0x13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                SenseKey::ILLEGAL_REQUEST,
                Asc::INVALID_FIELD_IN_CDB,
                field(1, Some(4)),
            ),
            (
                reladr.to_vec(),
                SenseKey::ILLEGAL_REQUEST,
                Asc::INVALID_FIELD_IN_CDB,
                field(1, Some(0)),
            ),
            (
                naca.to_vec(),
                SenseKey::ILLEGAL_REQUEST,
                Asc::INVALID_FIELD_IN_CDB,
                field(9, Some(2)),
            ),
            (
                rdprotect.to_vec(),
                SenseKey::ILLEGAL_REQUEST,
                Asc::INVALID_FIELD_IN_CDB,
                field(1, Some(7)),
            ),
            (
                Cdb::write(CdbSize::Sixteen, 0, 1 << 30, false)
                    .encode()
                    .to_vec(),
                SenseKey::ILLEGAL_REQUEST,
                Asc::INVALID_FIELD_IN_CDB,
                field(10, None),
            ),
            (
                Cdb::write(CdbSize::Ten, 999, 2, false).encode().to_vec(),
                SenseKey::ILLEGAL_REQUEST,
                Asc::LBA_OUT_OF_RANGE,
                None,
            ),
            (
                Cdb::read(CdbSize::Sixteen, 1 << 40, 1).encode().to_vec(),
                SenseKey::ILLEGAL_REQUEST,
                Asc::LBA_OUT_OF_RANGE,
                None,
            ),
        ];
        for (raw, key, asc, sks) in cases {
            let command = h.table.prepare(Lun::from_index(0), padded(&raw));
            assert_eq!(command.transfer(), Transfer::NONE, "{raw:02x?}");
            let run = check_of(&h.table.run(&h.nexus, &command, &[], 0));
            assert_eq!((run.key, run.asc), (key, asc), "{raw:02x?}");
            if sks.is_some() {
                assert_eq!(run.sense_key_specific, sks, "{raw:02x?}");
            }
            let from_bytes = h.check_raw(&raw, &[]);
            assert_eq!(from_bytes, run, "{raw:02x?}");
        }
        // A CDB shorter than its group: parsed from the slice as it is.
        let short = h.check_raw(&[0x28, 0, 0], &[]);
        assert_eq!(short.key, SenseKey::ILLEGAL_REQUEST);
        assert_eq!(
            h.table.transfer(Lun::from_index(0), &[0x28, 0, 0]),
            Transfer::NONE,
            "a short CDB solicits nothing"
        );
    }

    /// Write protection is the one input of the CDB-only checks that can
    /// change between parse and execution (MODE SELECT of SWP by another
    /// session): the checks run again then, both ways.
    #[test]
    fn write_protection_changed_after_parse_is_rechecked() {
        let h = Harness::ram(64);
        let write = Cdb::write(CdbSize::Ten, 0, 1, false);
        let data = [0x5a; 512];
        let before = h
            .table
            .prepare(Lun::from_index(0), RawCdb::Header(write.encode().padded()));
        assert_eq!(before.transfer().direction, Direction::Write);
        h.table
            .iter()
            .for_each(|lu| lu.lock().mode.control.swp = true);
        let s = check_of(&h.table.run(&h.nexus, &before, &data, 512));
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED)
        );
        let during = h
            .table
            .prepare(Lun::from_index(0), RawCdb::Header(write.encode().padded()));
        assert_eq!(during.transfer(), Transfer::NONE);
        h.table
            .iter()
            .for_each(|lu| lu.lock().mode.control.swp = false);
        let c = h.table.run(&h.nexus, &during, &data, 512);
        assert_eq!(c.status, 0, "{:?}", c.sense);
        assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 0, 1), &[]), data.to_vec());
    }

    #[test]
    fn a_lun_without_a_unit_still_answers_inquiry() {
        let h = Harness::ram(64);
        let command = h.table.prepare(
            Lun::from_index(4),
            RawCdb::Header(Cdb::inquiry(None, 36).encode().padded()),
        );
        assert_eq!(command.cdb(), None);
        assert_eq!(command.transfer().length, 36);
        assert_eq!(h.table.run(&h.nexus, &command, &[], 36).status, 0);
    }
}
