//! SCSI command execution: where a CDB becomes backend I/O and a status.
//!
//! The transport ([`crate::conn`]) parses each CDB once, when the command
//! arrives ([`LunTable::prepare`] → a typed [`Command`], see `command`),
//! and asks two things of it:
//!
//! 1. [`Command::transfer`] — from the CDB alone, which way data flows and
//!    how much the command wants (the SCSI transfer length, SPDTL). The
//!    transport uses it to solicit write data with R2Ts and to compute
//!    residuals against the initiator's ExpectedDataTransferLength. A
//!    command the logical unit will reject from its CDB alone (unsupported,
//!    invalid field, LBA out of range, write-protected, too long) reports
//!    [`Transfer::NONE`], so no write data is solicited only to be dropped.
//! 2. [`LunTable::run`] — run the command with the write data received
//!    (possibly shorter than SPDTL when the initiator's EDTL was shorter) and
//!    the initiator's Expected Data Transfer Length, and return status
//!    (GOOD, CHECK CONDITION, RESERVATION CONFLICT, CONDITION MET), read
//!    data (the full SPDTL: the transport truncates to EDTL and reports the
//!    overflow) and sense data. EDTL matters to COMPARE AND WRITE, whose
//!    Data-Out buffer must be exactly its two halves.
//!
//! It also tells this layer about task management and nexus events, which
//! establish unit attention conditions (SAM-5 §5.14, §6.3):
//! [`LunTable::logical_unit_reset`], [`LunTable::target_reset`] and
//! [`LunTable::nexus_loss`].
//!
//! Execution is synchronous: backends are memory, positional file I/O or
//! one NBD round trip (see [`crate::backend`]). A LUN number without a logical unit still
//! answers INQUIRY (peripheral qualifier 3), REPORT LUNS and REQUEST SENSE;
//! anything else gets LOGICAL UNIT NOT SUPPORTED (SPC-4 §4.6.4, SAM-5 §5.9).
//!
//! ([`LunTable::transfer`] and [`LunTable::execute`] do the same from CDB
//! bytes, for tests and the fuzz target.)
//!
//! ## Layout
//!
//! - `command` — [`Command`]: a CDB parsed once, with its checks and
//!   transfer.
//! - `lu` — [`LogicalUnit`]: geometry, per-LU state behind one mutex, and
//!   the command dispatcher with the checks every command goes through.
//! - `ua` — per-I_T-nexus state: unit attention queues (SAM-5 §5.14).
//! - `sense` — CHECK CONDITION helpers, backend error mapping.
//! - `inquiry` — standard INQUIRY data and VPD pages (SPC-4 §6.6, §7.8;
//!   SBC-4 §6.6).
//! - `mode` — MODE SENSE(6)/(10), MODE SELECT(6)/(10) and the mode page
//!   values (SPC-4 §6.11–§6.14, §7.5; SBC-4 §6.5).
//! - `rw` — READ, WRITE, VERIFY, WRITE AND VERIFY, COMPARE AND WRITE,
//!   ORWRITE, PRE-FETCH, SYNCHRONIZE CACHE, READ CAPACITY, READ DEFECT DATA
//!   (SBC-4 §5).
//! - `provisioning` — thin provisioning: WRITE SAME, UNMAP, GET LBA STATUS
//!   (SBC-4 §4.7).
//! - `pr` — PERSISTENT RESERVE IN/OUT, RESERVE(6)/RELEASE(6) and
//!   reservation conflicts (SPC-4 §5.14, SPC-2 §5.5).
//! - `xcopy` — EXTENDED COPY (LID1) between the target's logical units and
//!   RECEIVE COPY RESULTS (SPC-4 §6.4, §6.20).
//! - `luns` — REPORT LUNS and the commands a LUN without a logical unit
//!   answers (SPC-4 §6.33).
//! - `opcodes` — the supported command set and REPORT SUPPORTED OPERATION
//!   CODES (SPC-4 §6.35).

use std::sync::Arc;

use bytes::Bytes;
use iesp_proto::bhs::Lun;
use iesp_proto::pdu::Isid;
use iesp_proto::scsi::{Asc, ScsiStatus, Sense};

use crate::backend::Spliced;

mod command;
mod inquiry;
mod lu;
mod luns;
mod mode;
mod opcodes;
mod pr;
mod provisioning;
mod rw;
pub use rw::READ_ARENA_BYTES;
mod sense;
mod ua;
mod xcopy;

pub use command::{Command, RawCdb};
pub use lu::LogicalUnit;

/// The I_T nexus a command arrives on: who is asking, through which session.
///
/// The initiator port (initiator name + ISID) and the target port (target
/// name + portal group tag) identify the nexus (RFC 7143 §4.4.2); the
/// session id does not, so a reinstated session continues its nexus.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nexus {
    pub initiator_name: Arc<str>,
    pub isid: Isid,
    pub target_name: Arc<str>,
    pub portal_group_tag: u16,
    /// Unique per session within this process.
    pub session_id: u64,
}

/// How an I_T nexus ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NexusEnd {
    /// Logout: the initiator closed the session itself.
    Logout,
    /// Connection loss, session reinstatement, reset, shutdown.
    Lost,
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
    pub const NONE: Transfer = Transfer {
        direction: Direction::None,
        length: 0,
    };
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
    /// Instead of `data` (then empty): read data the connection's writer
    /// sends straight from the backing file ([`crate::backend::splice`]),
    /// for commands that allowed it ([`Command::allow_splice`]).
    pub spliced: Option<Spliced>,
}

impl Completion {
    pub fn good(data: Bytes) -> Completion {
        Completion {
            status: ScsiStatus::GOOD.0,
            data,
            sense: None,
            spliced: None,
        }
    }

    /// GOOD with data left in the backing file.
    pub fn spliced(data: Spliced) -> Completion {
        Completion {
            status: ScsiStatus::GOOD.0,
            data: Bytes::new(),
            sense: None,
            spliced: Some(data),
        }
    }

    /// Bytes of Data-In the command produced.
    pub fn data_len(&self) -> usize {
        self.spliced.as_ref().map_or(self.data.len(), Spliced::len)
    }

    /// A status without data or sense: RESERVATION CONFLICT, CONDITION MET.
    pub fn status(status: ScsiStatus) -> Completion {
        Completion {
            status: status.0,
            data: Bytes::new(),
            sense: None,
            spliced: None,
        }
    }

    /// CHECK CONDITION with fixed-format sense data (the transport's own
    /// failures; logical units honour D_SENSE through
    /// [`Completion::check_condition_in`]).
    pub fn check_condition(sense: &Sense) -> Completion {
        Completion::check_condition_in(sense, false)
    }

    /// CHECK CONDITION with sense data in descriptor format when
    /// `descriptor` (the D_SENSE bit of the Control mode page, SPC-4 §7.5.8),
    /// fixed format otherwise.
    pub fn check_condition_in(sense: &Sense, descriptor: bool) -> Completion {
        Completion {
            status: ScsiStatus::CHECK_CONDITION.0,
            data: Bytes::new(),
            sense: Some(Bytes::from(sense.encode(descriptor))),
            spliced: None,
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

    /// Parses `cdb` for the unit at `lun`, once: the typed command that
    /// [`LunTable::run`] executes, with its [`Transfer`].
    pub fn prepare(&self, lun: Lun, cdb: RawCdb) -> Command {
        match self.get(lun) {
            Some(lu) => {
                let (parsed, transfer) = lu.parse(cdb.as_slice());
                Command {
                    lun,
                    raw: cdb,
                    parsed,
                    transfer,
                    splice: false,
                }
            }
            None => Command {
                lun,
                transfer: luns::transfer_without_lu(cdb.as_slice()),
                raw: cdb,
                parsed: command::Parsed::NoLu,
                splice: false,
            },
        }
    }

    /// [`LunTable::prepare`] from a CDB slice (copied into the command).
    pub fn prepare_slice(&self, lun: Lun, cdb: &[u8]) -> Command {
        // Any length other than the BHS field's is kept as it is, so a
        // truncated CDB is still reported as one.
        let raw = match <[u8; 16]>::try_from(cdb) {
            Ok(b) => RawCdb::Header(b),
            Err(_) => RawCdb::Extended(cdb.into()),
        };
        self.prepare(lun, raw)
    }

    /// What `cdb` will transfer on `lun`.
    pub fn transfer(&self, lun: Lun, cdb: &[u8]) -> Transfer {
        self.prepare_slice(lun, cdb).transfer()
    }

    /// Runs `cdb` on `lun` with the write data received; `expected_length`
    /// is the initiator's Expected Data Transfer Length. (Parses, then
    /// [`LunTable::run`].)
    pub fn execute(
        &self,
        nexus: &Nexus,
        lun: Lun,
        cdb: &[u8],
        data_out: &[u8],
        expected_length: u32,
    ) -> Completion {
        let command = self.prepare_slice(lun, cdb);
        self.run(nexus, &command, data_out, expected_length)
    }

    /// Runs a prepared command with the write data received;
    /// `expected_length` is the initiator's Expected Data Transfer Length.
    pub fn run(
        &self,
        nexus: &Nexus,
        command: &Command,
        data_out: &[u8],
        expected_length: u32,
    ) -> Completion {
        let Some(lu) = self.get(command.lun) else {
            return luns::execute_without_lu(command.raw(), self);
        };
        if matches!(command.parsed, command::Parsed::NoLu) {
            // Prepared before this unit existed: parse for it now.
            let fresh = self.prepare(command.lun, command.raw.clone());
            return self.run(nexus, &fresh, data_out, expected_length);
        }
        if lu.stats.enabled() {
            let started = lu.stats.start();
            let c = lu.execute(nexus, command, data_out, expected_length, self);
            let data_in = c.data_len().min(expected_length as usize);
            let sense = c.sense.as_deref();
            lu.stats
                .finish(started, command.raw(), data_out, data_in, c.status, sense);
            c
        } else {
            lu.execute(nexus, command, data_out, expected_length, self)
        }
    }

    /// The LUN numbers in use, for REPORT LUNS.
    pub fn lun_list(&self) -> Vec<Lun> {
        (0..self.luns.len())
            .map(|i| Lun::from_index(i as u16))
            .collect()
    }

    /// LOGICAL UNIT RESET (SAM-5 §6.3.3, RFC 7143 §11.5.1): the logical unit
    /// returns its mode parameters to their defaults (nothing is saveable),
    /// releases a RESERVE(6) reservation (persistent reservations stay,
    /// SPC-4 §5.14.1) and establishes BUS DEVICE RESET FUNCTION OCCURRED for
    /// every I_T nexus, the issuer's included. Aborting the tasks is the transport's
    /// part. False if no logical unit is at `lun`.
    pub fn logical_unit_reset(&self, lun: Lun) -> bool {
        match self.get(lun) {
            Some(lu) => {
                lu.reset(Asc::BUS_DEVICE_RESET);
                true
            }
            None => false,
        }
    }

    /// TARGET WARM RESET / TARGET COLD RESET (RFC 7143 §11.5.1, a hard
    /// reset in SAM-5 §6.3.2): every logical unit is reset as by
    /// [`LunTable::logical_unit_reset`], with POWER ON, RESET, OR BUS DEVICE
    /// RESET OCCURRED as the unit attention.
    pub fn target_reset(&self) {
        for lu in &self.luns {
            lu.reset(Asc::POWER_ON_RESET);
        }
    }

    /// The session of `nexus` ended: its I_T nexus is gone (SAM-5 §6.3.4).
    /// Whatever SPC ties to the nexus is released either way (RESERVE(6)
    /// reservations); an abnormal end (connection loss, reinstatement,
    /// cold reset — the initiator may not know what became of its commands)
    /// also establishes I_T NEXUS LOSS OCCURRED, reported when the same
    /// initiator port logs in again. A Logout is a clean end.
    pub fn nexus_loss(&self, nexus: &Nexus, end: NexusEnd) {
        for lu in &self.luns {
            lu.nexus_loss(nexus, end);
        }
    }

    /// Whether any LU's backend may block (see `Backend::may_block`).
    pub fn may_block(&self) -> bool {
        self.luns.iter().any(|lu| lu.may_block())
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

/// Fixtures shared by the unit tests of the submodules: a RAM LU in a
/// table, a nexus, and a shorthand to run a typed CDB.
#[cfg(test)]
pub(crate) mod testutil {
    use std::sync::Arc;

    use iesp_proto::bhs::Lun;
    use iesp_proto::pdu::Isid;
    use iesp_proto::scsi::{Cdb, ScsiStatus, Sense};

    use super::{Completion, LogicalUnit, LunTable, Nexus};
    use crate::backend::RamBackend;

    pub const IQN: &str = "iqn.2026-11.org.iesp-test:target0";

    pub fn nexus(isid_last: u8) -> Nexus {
        Nexus {
            initiator_name: "iqn.2026-11.org.iesp-test:init".into(),
            isid: Isid([0x80, 0, 0, 0, 0, isid_last]),
            target_name: IQN.into(),
            portal_group_tag: 1,
            session_id: u64::from(isid_last),
        }
    }

    /// A table with one RAM LU of `blocks` blocks of `block_size` bytes.
    pub fn table(blocks: u64, block_size: u32, read_only: bool) -> LunTable {
        let ram = RamBackend::new(blocks * u64::from(block_size));
        let lu = LogicalUnit::new(Box::new(ram), block_size, read_only, "IESP000000ab".into());
        LunTable::new(vec![Arc::new(lu)])
    }

    /// Runs a CDB on LUN 0 after clearing the power-on unit attention.
    pub struct Harness {
        pub table: LunTable,
        pub nexus: Nexus,
    }

    impl Harness {
        pub fn new(blocks: u64, block_size: u32, read_only: bool) -> Harness {
            let h = Harness {
                table: table(blocks, block_size, read_only),
                nexus: nexus(1),
            };
            let first = h.run(&Cdb::TestUnitReady, &[]);
            assert_eq!(
                first.status,
                ScsiStatus::CHECK_CONDITION.0,
                "power-on UA expected"
            );
            h
        }

        pub fn ram(blocks: u64) -> Harness {
            Harness::new(blocks, 512, false)
        }

        pub fn run(&self, cdb: &Cdb, data_out: &[u8]) -> Completion {
            self.raw(&cdb.encode(), data_out)
        }

        /// Runs with an Expected Data Transfer Length equal to the data
        /// sent (what an initiator writing `data_out` says).
        pub fn raw(&self, cdb: &[u8], data_out: &[u8]) -> Completion {
            self.table.execute(
                &self.nexus,
                Lun::from_index(0),
                cdb,
                data_out,
                data_out.len() as u32,
            )
        }

        /// Runs and expects GOOD; returns the data.
        pub fn good(&self, cdb: &Cdb, data_out: &[u8]) -> Vec<u8> {
            let c = self.run(cdb, data_out);
            assert_eq!(c.status, ScsiStatus::GOOD.0, "{cdb:?}: {:?}", sense_of(&c));
            c.data.to_vec()
        }

        /// Runs and expects CHECK CONDITION; returns the parsed sense.
        pub fn check(&self, cdb: &Cdb, data_out: &[u8]) -> Sense {
            check_of(&self.run(cdb, data_out))
        }

        pub fn check_raw(&self, cdb: &[u8], data_out: &[u8]) -> Sense {
            check_of(&self.raw(cdb, data_out))
        }
    }

    pub fn sense_of(c: &Completion) -> Option<Sense> {
        c.sense
            .as_deref()
            .map(|s| Sense::parse(s).expect("sense parses"))
    }

    pub fn check_of(c: &Completion) -> Sense {
        assert_eq!(
            c.status,
            ScsiStatus::CHECK_CONDITION.0,
            "expected CHECK CONDITION, data {:?}",
            c.data
        );
        assert!(c.data.is_empty());
        sense_of(c).expect("CHECK CONDITION carries sense")
    }
}

#[cfg(test)]
mod tests {
    use iesp_proto::bhs::Lun;
    use iesp_proto::scsi::{Asc, Cdb, CdbSize, SenseKey};

    use super::testutil::{Harness, check_of, nexus, table};
    use super::*;

    #[test]
    fn power_on_unit_attention_once_per_nexus() {
        let t = table(64, 512, false);
        let a = nexus(1);
        let b = nexus(2);
        let tur = Cdb::TestUnitReady.encode();
        let s = check_of(&t.execute(&a, Lun::from_index(0), &tur, &[], 0));
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::UNIT_ATTENTION, Asc::POWER_ON_RESET)
        );
        assert_eq!(t.execute(&a, Lun::from_index(0), &tur, &[], 0).status, 0);
        // Another ISID is another I_T nexus with its own condition.
        let s = check_of(&t.execute(&b, Lun::from_index(0), &tur, &[], 0));
        assert_eq!(s.asc, Asc::POWER_ON_RESET);
        // A reinstated session (new session id, same initiator port) is the
        // same nexus.
        let a2 = Nexus {
            session_id: 99,
            ..a.clone()
        };
        assert_eq!(t.execute(&a2, Lun::from_index(0), &tur, &[], 0).status, 0);
    }

    #[test]
    fn logical_unit_reset_reaches_every_nexus_and_restores_defaults() {
        let h = Harness::ram(64);
        let other = nexus(7);
        let tur = Cdb::TestUnitReady.encode();
        let _ = h.table.execute(&other, Lun::from_index(0), &tur, &[], 0);
        assert!(h.table.logical_unit_reset(Lun::from_index(0)));
        assert!(!h.table.logical_unit_reset(Lun::from_index(3)));
        for n in [&h.nexus, &other] {
            let s = check_of(&h.table.execute(n, Lun::from_index(0), &tur, &[], 0));
            assert_eq!(s.asc, Asc::BUS_DEVICE_RESET);
            assert_eq!(
                h.table.execute(n, Lun::from_index(0), &tur, &[], 0).status,
                0
            );
        }
        // INQUIRY neither reports nor clears a unit attention (SAM-5 §5.14).
        h.table.target_reset();
        h.good(&Cdb::inquiry(None, 36), &[]);
        assert_eq!(
            h.check(&Cdb::read(CdbSize::Ten, 0, 1), &[]).asc,
            Asc::POWER_ON_RESET
        );
        h.good(&Cdb::read(CdbSize::Ten, 0, 1), &[]);
    }

    #[test]
    fn nexus_loss_is_reported_after_relogin() {
        let h = Harness::ram(64);
        h.table.nexus_loss(&h.nexus, NexusEnd::Lost);
        let s = h.check(&Cdb::TestUnitReady, &[]);
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::UNIT_ATTENTION, Asc::I_T_NEXUS_LOSS)
        );
        h.good(&Cdb::TestUnitReady, &[]);
    }

    #[test]
    fn unknown_lun_answers_only_inquiry_report_luns_request_sense() {
        let h = Harness::ram(64);
        let lun9 = Lun::from_index(9);
        let c = h
            .table
            .execute(&h.nexus, lun9, &Cdb::TestUnitReady.encode(), &[], 0);
        assert_eq!(check_of(&c).asc, Asc::LOGICAL_UNIT_NOT_SUPPORTED);
        let c = h.table.execute(
            &h.nexus,
            lun9,
            &Cdb::read(CdbSize::Ten, 0, 1).encode(),
            &[],
            0,
        );
        assert_eq!(check_of(&c).asc, Asc::LOGICAL_UNIT_NOT_SUPPORTED);
        assert_eq!(
            h.table
                .transfer(lun9, &Cdb::read(CdbSize::Ten, 0, 1).encode()),
            Transfer::NONE
        );
        let c = h
            .table
            .execute(&h.nexus, lun9, &Cdb::report_luns(16).encode(), &[], 0);
        assert_eq!(c.status, 0);
        assert_eq!(
            h.table.transfer(lun9, &Cdb::inquiry(None, 96).encode()),
            Transfer {
                direction: Direction::Read,
                length: 96
            }
        );
    }

    #[test]
    fn transfer_reports_direction_and_spdtl() {
        let t = table(1000, 512, false);
        let lun = Lun::from_index(0);
        let w = |c: Cdb| t.transfer(lun, &c.encode());
        assert_eq!(
            w(Cdb::write(CdbSize::Ten, 0, 8, false)),
            Transfer {
                direction: Direction::Write,
                length: 4096
            }
        );
        assert_eq!(
            w(Cdb::read(CdbSize::Six, 0, 256)),
            Transfer {
                direction: Direction::Read,
                length: 256 * 512
            }
        );
        assert_eq!(
            w(Cdb::read(CdbSize::Sixteen, 0, 0)),
            Transfer {
                direction: Direction::Read,
                length: 0
            }
        );
        assert_eq!(w(Cdb::TestUnitReady), Transfer::NONE);
        // Rejected from the CDB alone: nothing is solicited.
        assert_eq!(w(Cdb::write(CdbSize::Ten, 999, 2, false)), Transfer::NONE);
        assert_eq!(
            w(Cdb::write(CdbSize::Sixteen, 0, 1 << 30, false)),
            Transfer::NONE
        );
        assert_eq!(t.transfer(lun, &[0xc1; 16]), Transfer::NONE);
        let ro = table(1000, 512, true);
        assert_eq!(
            ro.transfer(lun, &Cdb::write(CdbSize::Ten, 0, 1, false).encode()),
            Transfer::NONE
        );
    }
}
