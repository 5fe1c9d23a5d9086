//! A logical unit: a backend, its block geometry, its state, and the order
//! in which a command is checked before it runs (SAM-5 §5, SPC-4 §4, §6;
//! SBC-4 §4, §5).
//!
//! ## Command processing order
//!
//! 1. Unit attention (SAM-5 §5.14): a pending condition of the I_T nexus is
//!    reported with CHECK CONDITION and cleared, unless the command is
//!    INQUIRY or REPORT LUNS (which neither report nor clear it) or REQUEST
//!    SENSE (which returns it as its data).
//! 2. Decoding ([`decode`]): an unknown or unsupported operation code is
//!    INVALID COMMAND OPERATION CODE, an unsupported service action INVALID
//!    FIELD IN CDB; then reserved bits ([`usage::check_reserved`]), NACA=1
//!    (we report NORMACA=0, SAM-5 §5.10) and [`Cdb::validate`] — each INVALID
//!    FIELD IN CDB with a field pointer.
//! 3. Reservations (SPC-4 §5.14, SPC-2 §5.5.1; see [`super::pr`]): a command
//!    another I_T nexus's reservation excludes ends in RESERVATION
//!    CONFLICT.
//! 4. Capability and range checks of the command family ([`precheck`]:
//!    protection fields, MAXIMUM TRANSFER LENGTH and the other Block Limits,
//!    LBA range, write protect, parameter list lengths).
//! 5. Execution. Backend I/O happens without the state lock held.
//!
//! [`LunTable::prepare`](super::LunTable::prepare) runs steps 2 and 4 (the
//! CDB-only ones) once, when the command arrives, so a command that will be
//! rejected solicits no data; execution reuses their outcome and repeats
//! step 4 only if write protection changed since.
//!
//! ## State
//!
//! [`LuState`] holds what commands can change and what is per I_T nexus:
//! the current mode page values, the unit attention queues and the
//! reservations. One mutex guards it, taken once per command to register
//! the nexus, take a unit attention, decide a reservation conflict and copy
//! the few values the command needs; MODE SELECT and the reservation
//! commands do their whole (in-memory) work under it. It is never held
//! across backend I/O.
//!
//! ## The I/O gate
//!
//! COMPARE AND WRITE and ORWRITE read, then write depending on what they
//! read; no other write may land in between, from any session. Every path
//! that writes the medium (WRITE, WRITE AND VERIFY, WRITE SAME, UNMAP,
//! EXTENDED COPY into this unit) holds a read-write lock shared for the
//! duration of its backend write;
//! COMPARE AND WRITE and ORWRITE hold it exclusively from their read to
//! their write. Writes thus still run in parallel with each other, and
//! wait only while one of the two read-modify-write commands runs. Reads do
//! not take it. This is the only lock held across backend I/O.
//!
//! ## START STOP UNIT (SBC-4 §5.25)
//!
//! The medium is virtual and never spins down: the unit stays in the active
//! power condition and ready whatever START, LOEJ or POWER CONDITION say
//! (valid values are accepted, reserved ones rejected). A stop (START=0,
//! POWER CONDITION 0h) without NO_FLUSH writes the cache to the medium
//! first, as a real disk does before spinning down. The medium is not
//! removable (RMB=0), so LOEJ has nothing to eject and PREVENT ALLOW
//! MEDIUM REMOVAL is not implemented.
//!
//! ## Write cache (SBC-4 §4.15, Caching mode page WCE)
//!
//! A file, block device or NBD backend (with flush) completes writes into a
//! cache: WCE=1, and FUA, SYNCHRONIZE CACHE and WRITE AND VERIFY flush;
//! MODE SELECT may clear WCE, which makes every write write through. The
//! RAM backend is its own medium: WCE=0, a write is as durable as it will
//! ever be when it completes.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use iesp_proto::scsi::{Asc, Cdb, ScsiOpcode, Sense, usage};

use super::NexusEnd;
use super::command::{Checked, Command, Parsed};
use super::mode::ModeValues;
use super::opcodes::{self, Support};
use super::pr::{self, Reservations};
use super::sense::{Fault, IoOp, Outcome, io_error, respond, respond_fault};
use super::ua::{NexusKey, NexusTable};
use super::{
    Completion, Direction, LunTable, Nexus, Transfer, inquiry, luns, mode, provisioning, rw, xcopy,
};
use crate::backend::{Backend, Provisioning};

/// The largest transfer a command may ask for, in bytes: MAXIMUM TRANSFER
/// LENGTH of the Block Limits VPD page is this over the block size. Data is
/// buffered whole per command, so this bounds memory per command.
pub const MAX_TRANSFER_BYTES: u32 = 8 << 20;

/// A disk LUN.
pub struct LogicalUnit {
    backend: Box<dyn Backend>,
    block_size: u32,
    blocks: u64,
    read_only: bool,
    /// Unit serial number (VPD 0x80) and the basis of the NAA designator.
    serial: String,
    /// Completed writes may sit in a volatile cache until flushed.
    write_cache: bool,
    /// Thin provisioning, as the backend offers it.
    provisioning: Option<Provisioning>,
    state: Mutex<LuState>,
    /// The I/O gate (module docs).
    gate: RwLock<()>,
    /// Counters of this LU ([`crate::stats`]).
    pub stats: crate::stats::LuStats,
}

/// What commands change, and what is per I_T nexus (see the module docs).
#[derive(Debug)]
pub struct LuState {
    /// Current mode page values.
    pub mode: ModeValues,
    /// Known I_T nexuses and their unit attention queues.
    pub nexuses: NexusTable,
    /// Persistent and RESERVE(6) reservations.
    pub reservations: Reservations,
    /// Outcomes of EXTENDED COPY for RECEIVE COPY STATUS.
    pub copies: xcopy::CopyResults,
}

/// What a command needs from [`LuState`], copied under the lock.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    /// D_SENSE: descriptor-format sense data.
    pub descriptor_sense: bool,
    /// WCE: writes are cached until flushed.
    pub write_cache: bool,
    /// SWP: software write protect.
    pub software_write_protect: bool,
    /// The command allows a READ's data to stay in the backing file
    /// ([`Command::allow_splice`]).
    pub splice: bool,
}

impl LogicalUnit {
    pub fn new(
        backend: Box<dyn Backend>,
        block_size: u32,
        read_only: bool,
        serial: String,
    ) -> LogicalUnit {
        let blocks = backend.size() / u64::from(block_size);
        let write_cache = backend.write_cache();
        let provisioning = backend.provisioning();
        LogicalUnit {
            backend,
            block_size,
            blocks,
            read_only,
            serial,
            write_cache,
            provisioning,
            state: Mutex::new(LuState {
                mode: ModeValues::defaults(write_cache),
                nexuses: NexusTable::default(),
                reservations: Reservations::default(),
                copies: xcopy::CopyResults::default(),
            }),
            gate: RwLock::new(()),
            stats: crate::stats::LuStats::default(),
        }
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Whether commands on this LU may wait on a slow backend.
    pub fn may_block(&self) -> bool {
        self.backend.may_block()
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.backend.flush()
    }

    pub(super) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// MAXIMUM TRANSFER LENGTH in blocks.
    pub fn max_transfer_blocks(&self) -> u32 {
        (MAX_TRANSFER_BYTES / self.block_size).max(1)
    }

    /// Whether the backend caches writes (the default WCE).
    pub fn write_cache(&self) -> bool {
        self.write_cache
    }

    /// Thin provisioning (LBPME) and its promises, if any.
    pub fn provisioning(&self) -> Option<Provisioning> {
        self.provisioning
    }

    /// The state, even if a panic poisoned the lock: every update leaves it
    /// consistent, so the data is still good.
    pub(super) fn lock(&self) -> MutexGuard<'_, LuState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The I/O gate taken shared, by a path that writes the medium (module
    /// docs). A panic while it was held left no state behind it.
    pub(super) fn shared_io(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The I/O gate taken exclusively, by COMPARE AND WRITE and ORWRITE.
    pub(super) fn exclusive_io(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }

    fn supported(&self) -> impl Fn(&[u8]) -> Support + use<> {
        let thin = self.provisioning.is_some();
        move |cdb: &[u8]| opcodes::supported(cdb, thin)
    }

    /// Steps 2 and 4 of the processing order (the CDB-only ones), once per
    /// command: the decoded CDB, the checks' outcome and the transfer.
    pub(super) fn parse(&self, cdb: &[u8]) -> (Parsed, Transfer) {
        let decoded = decode(cdb, self.supported());
        let Ok(parsed) = &decoded else {
            return (
                Parsed::Lu {
                    decoded,
                    checked: None,
                },
                Transfer::NONE,
            );
        };
        // SWP is looked up only for commands that could write.
        let write_protected =
            writes_medium(parsed) && (self.read_only || self.lock().mode.control.swp);
        let outcome = precheck(self, parsed, write_protected);
        let transfer = if outcome.is_ok() {
            transfer_of(parsed, self.block_size)
        } else {
            Transfer::NONE
        };
        let checked = Some(Checked {
            write_protected,
            outcome,
        });
        (Parsed::Lu { decoded, checked }, transfer)
    }

    /// Runs a command parsed by [`LogicalUnit::parse`] (steps 1, 3 and 5;
    /// step 4 again only if write protection changed since).
    pub(super) fn execute(
        &self,
        nexus: &Nexus,
        command: &Command,
        data_out: &[u8],
        expected_length: u32,
        table: &LunTable,
    ) -> Completion {
        let Parsed::Lu { decoded, checked } = &command.parsed else {
            // LunTable::run parses for the unit first.
            return respond(Err(Sense::invalid_command_operation_code()), false);
        };
        let key = NexusKey::of(nexus);
        let opcode = ScsiOpcode(command.opcode());
        let (pending, conflict, snapshot) = {
            let mut st = self.lock();
            let pending = match opcode {
                ScsiOpcode::INQUIRY | ScsiOpcode::REPORT_LUNS | ScsiOpcode::REQUEST_SENSE => {
                    st.nexuses.touch(&key);
                    None
                }
                _ => st.nexuses.take(&key),
            };
            let conflict = decoded
                .as_ref()
                .is_ok_and(|c| st.reservations.conflict(&key, c));
            let snapshot = Snapshot {
                descriptor_sense: st.mode.control.d_sense,
                write_cache: st.mode.caching.wce,
                software_write_protect: st.mode.control.swp,
                splice: command.splice,
            };
            (pending, conflict, snapshot)
        };
        let d_sense = snapshot.descriptor_sense;
        if let Some(ua) = pending {
            return respond(Err(ua), d_sense);
        }
        let parsed = match decoded {
            Ok(parsed) => parsed,
            Err(sense) => return respond(Err(sense.clone()), d_sense),
        };
        if conflict {
            return respond_fault(Err(Fault::Conflict), d_sense);
        }
        let wp = writes_medium(parsed) && (self.read_only || snapshot.software_write_protect);
        let recheck;
        let outcome = match checked {
            Some(c) if c.write_protected == wp => &c.outcome,
            _ => {
                recheck = precheck(self, parsed, wp);
                &recheck
            }
        };
        if let Err(sense) = outcome {
            return respond(Err(sense.clone()), d_sense);
        }
        self.run(
            nexus,
            &key,
            parsed,
            data_out,
            expected_length,
            table,
            snapshot,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        nexus: &Nexus,
        key: &NexusKey,
        cdb: &Cdb,
        data_out: &[u8],
        expected_length: u32,
        table: &LunTable,
        snap: Snapshot,
    ) -> Completion {
        let d_sense = snap.descriptor_sense;
        let outcome: Outcome = match *cdb {
            Cdb::TestUnitReady => Ok(Bytes::new()),
            Cdb::RequestSense {
                desc,
                allocation_length,
            } => self.request_sense(key, desc, allocation_length),
            Cdb::Inquiry {
                evpd,
                page_code,
                allocation_length,
            } => inquiry::inquiry(Some((self, nexus)), evpd, page_code, allocation_length),
            Cdb::ReportLuns {
                select_report,
                allocation_length,
            } => luns::report_luns(table, select_report, allocation_length),
            Cdb::ReportSupportedOpCodes {
                rctd,
                reporting_options,
                opcode,
                service_action,
                allocation_length,
            } => opcodes::report(
                &opcodes::command_set(self.provisioning.is_some()),
                rctd,
                reporting_options,
                opcode,
                service_action,
                allocation_length,
            ),
            Cdb::ModeSense {
                size,
                dbd,
                llbaa,
                pc,
                page_code,
                subpage_code,
                allocation_length,
            } => {
                let current = self.lock().mode.clone();
                let request = mode::Request {
                    size,
                    dbd,
                    llbaa,
                    pc,
                    page_code,
                    subpage_code,
                    allocation_length,
                };
                mode::mode_sense(self, &current, &request, snap)
            }
            Cdb::ModeSelect {
                size,
                pf,
                sp,
                parameter_list_length,
            } => {
                let req = mode::Select {
                    size,
                    pf,
                    sp,
                    parameter_list_length,
                };
                let mut st = self.lock();
                mode::mode_select(self, &st.mode, &req, data_out).map(|changed| {
                    if let Some(new) = changed {
                        st.mode = new;
                        st.nexuses
                            .establish_others(key, Asc::MODE_PARAMETERS_CHANGED);
                    }
                    Bytes::new()
                })
            }
            Cdb::StartStopUnit {
                power_condition_modifier,
                power_condition,
                no_flush,
                start,
                ..
            } => self.start_stop_unit(power_condition, power_condition_modifier, no_flush, start),
            Cdb::ReadCapacity10 { .. } => Ok(rw::read_capacity_10(self)),
            Cdb::ReadCapacity16 {
                allocation_length, ..
            } => Ok(rw::read_capacity_16(self, allocation_length)),
            Cdb::PreFetch { lba, blocks, .. } => {
                return match rw::prefetch(self, lba, blocks) {
                    Ok(status) => Completion::status(status),
                    Err(sense) => respond(Err(sense), d_sense),
                };
            }
            Cdb::Read { .. } if snap.splice => match rw::read_spliced(self, cdb, snap) {
                Ok(Some(data)) => return Completion::spliced(data),
                Ok(None) => rw::execute(self, cdb, data_out, expected_length, snap),
                Err(sense) => Err(sense),
            },
            Cdb::Read { .. }
            | Cdb::Write { .. }
            | Cdb::WriteAndVerify { .. }
            | Cdb::Verify { .. }
            | Cdb::CompareAndWrite { .. }
            | Cdb::OrWrite { .. }
            | Cdb::ReadDefectData { .. }
            | Cdb::SynchronizeCache { .. } => {
                rw::execute(self, cdb, data_out, expected_length, snap)
            }
            Cdb::WriteSame { .. } => provisioning::write_same(self, cdb, data_out, snap),
            Cdb::Unmap {
                parameter_list_length,
                ..
            } => provisioning::unmap(self, parameter_list_length, data_out, snap),
            Cdb::GetLbaStatus {
                lba,
                allocation_length,
                report_type,
            } => provisioning::get_lba_status(self, lba, allocation_length, report_type),
            Cdb::PersistentReserveIn {
                service_action,
                allocation_length,
            } => pr::persistent_reserve_in(
                &self.lock().reservations,
                service_action,
                allocation_length,
            ),
            Cdb::PersistentReserveOut {
                service_action,
                scope,
                pr_type,
                parameter_list_length,
            } => {
                let req = pr::PrOut {
                    service_action,
                    scope,
                    pr_type,
                    parameter_list_length,
                };
                let mut st = self.lock();
                let LuState {
                    reservations,
                    nexuses,
                    ..
                } = &mut *st;
                let r = pr::persistent_reserve_out(reservations, nexuses, key, req, data_out);
                return respond_fault(r.map(|()| Bytes::new()), d_sense);
            }
            Cdb::Reserve6 => {
                let r = pr::reserve6(&mut self.lock().reservations, key);
                return respond_fault(r.map(|()| Bytes::new()), d_sense);
            }
            Cdb::ExtendedCopy {
                parameter_list_length,
                ..
            } => {
                let r = xcopy::extended_copy(self, nexus, table, parameter_list_length, data_out);
                return respond_fault(r, d_sense);
            }
            Cdb::ReceiveCopyResults {
                service_action,
                list_identifier,
                allocation_length,
            } => xcopy::receive_copy_results(
                self,
                nexus,
                service_action,
                list_identifier,
                allocation_length,
            ),
            Cdb::Release6 => {
                let r = pr::release6(&mut self.lock().reservations, key);
                return respond_fault(r.map(|()| Bytes::new()), d_sense);
            }
            // decode() admits only what opcodes::SUPPORTED lists; a command
            // listed there but not handled here is caught by a unit test.
            _ => Err(Sense::invalid_command_operation_code()),
        };
        respond(outcome, d_sense)
    }

    /// REQUEST SENSE (SPC-4 §6.39): a pending unit attention, else NO SENSE.
    fn request_sense(&self, key: &NexusKey, desc: bool, allocation_length: u8) -> Outcome {
        let sense = self.lock().nexuses.take(key).unwrap_or_else(no_sense);
        Ok(Bytes::from(iesp_proto::scsi::truncate(
            sense.encode(desc),
            u32::from(allocation_length),
        )))
    }

    /// START STOP UNIT: see the module docs.
    fn start_stop_unit(
        &self,
        power_condition: u8,
        modifier: u8,
        no_flush: bool,
        start: bool,
    ) -> Outcome {
        // POWER CONDITION values and the modifiers each allows (SBC-4
        // table 105): START_VALID, ACTIVE, IDLE (a..c), STANDBY (y, z),
        // LU_CONTROL, FORCE_IDLE_0, FORCE_STANDBY_0.
        let max_modifier = match power_condition {
            0x0 | 0x1 | 0x7 => 0,
            0x2 | 0xa => 2,
            0x3 | 0xb => 1,
            _ => return Err(Sense::invalid_field_in_cdb(4, Some(7))),
        };
        if modifier > max_modifier {
            return Err(Sense::invalid_field_in_cdb(3, Some(3)));
        }
        if power_condition == 0 && !start && !no_flush {
            self.backend
                .flush()
                .map_err(|e| io_error(IoOp::Flush, 0, &e))?;
        }
        Ok(Bytes::new())
    }

    /// LOGICAL UNIT RESET or a target reset: defaults back, RESERVE(6)
    /// released, `asc` for all.
    pub(super) fn reset(&self, asc: Asc) {
        let mut st = self.lock();
        st.mode = ModeValues::defaults(self.write_cache);
        st.reservations.reset();
        st.nexuses.establish_all(asc);
    }

    /// I_T nexus loss: I_T NEXUS LOSS OCCURRED for that nexus, and its
    /// RESERVE(6) reservation ends.
    pub(super) fn nexus_loss(&self, nexus: &Nexus, end: NexusEnd) {
        let key = NexusKey::of(nexus);
        let mut st = self.lock();
        st.reservations.nexus_loss(&key);
        if end == NexusEnd::Lost {
            st.nexuses.establish(&key, Asc::I_T_NEXUS_LOSS);
        }
    }
}

/// Whether `cdb` writes the medium, so write protection applies.
fn writes_medium(cdb: &Cdb) -> bool {
    matches!(
        cdb,
        Cdb::Write { .. }
            | Cdb::WriteAndVerify { .. }
            | Cdb::WriteSame { .. }
            | Cdb::Unmap { .. }
            | Cdb::CompareAndWrite { .. }
            | Cdb::OrWrite { .. }
    )
}

/// Step 4 of the processing order: the CDB-only checks of every command
/// family. `write_protected`: the LU is read-only or SWP is set.
pub(super) fn precheck(lu: &LogicalUnit, cdb: &Cdb, write_protected: bool) -> Result<(), Sense> {
    match *cdb {
        Cdb::WriteSame { .. } | Cdb::Unmap { .. } | Cdb::GetLbaStatus { .. } => {
            provisioning::precheck(lu, cdb, write_protected)
        }
        Cdb::ExtendedCopy { .. } => xcopy::precheck(cdb),
        // A length no valid list has: refused before any data is asked for.
        Cdb::PersistentReserveOut {
            parameter_list_length,
            ..
        } if parameter_list_length > pr::MAX_PR_OUT_LIST => {
            Err(Sense::parameter_list_length_error())
        }
        _ => rw::precheck(lu, cdb, write_protected),
    }
}

/// NO SENSE, NO ADDITIONAL SENSE INFORMATION.
fn no_sense() -> Sense {
    Sense::new(
        iesp_proto::scsi::SenseKey::NO_SENSE,
        Asc::NO_ADDITIONAL_SENSE,
    )
}

/// Step 2 of the processing order: parse and the checks every device server
/// makes. `supported` says which commands this LUN implements.
pub(super) fn decode(raw: &[u8], supported: impl Fn(&[u8]) -> Support) -> Result<Cdb, Sense> {
    match supported(raw) {
        Support::Yes => {}
        Support::NoServiceAction => return Err(Sense::invalid_field_in_cdb(1, Some(4))),
        Support::NoOpcode => return Err(Sense::invalid_command_operation_code()),
    }
    let cdb = Cdb::parse(raw).map_err(|e| e.sense())?;
    usage::check_reserved(raw).map_err(|e| e.sense())?;
    // NACA=1 needs ACA support, which NORMACA=0 says we lack (SAM-5 §5.10).
    let control_at = cdb
        .opcode()
        .cdb_len()
        .unwrap_or(raw.len())
        .saturating_sub(1);
    if raw.get(control_at).is_some_and(|c| c & 0x04 != 0) {
        return Err(Sense::invalid_field_in_cdb(control_at as u16, Some(2)));
    }
    cdb.validate().map_err(|e| e.sense())?;
    Ok(cdb)
}

/// Direction and SPDTL of a decoded, admissible command.
pub(super) fn transfer_of(cdb: &Cdb, block_size: u32) -> Transfer {
    use iesp_proto::scsi::DataDirection;
    let length = u32::try_from(cdb.data_length(block_size)).unwrap_or(u32::MAX);
    match cdb.data_direction() {
        DataDirection::NoData => Transfer::NONE,
        DataDirection::In => Transfer {
            direction: Direction::Read,
            length,
        },
        DataDirection::Out => Transfer {
            direction: Direction::Write,
            length,
        },
    }
}

#[cfg(test)]
mod tests {
    use iesp_proto::scsi::{CdbSize, ScsiStatus, SenseKey, SenseKeySpecific};

    use super::*;
    use crate::scsi::testutil::Harness;

    fn field(byte: u16, bit: Option<u8>) -> Option<SenseKeySpecific> {
        Some(SenseKeySpecific::FieldPointer {
            cd: true,
            bit,
            field: byte,
        })
    }

    #[test]
    fn unknown_opcodes_and_service_actions() {
        let h = Harness::ram(64);
        for op in [0x02u8, 0x1e, 0x3b, 0x48, 0x8c, 0x9c, 0xc0, 0xff] {
            let mut cdb = [0u8; 16];
            cdb[0] = op;
            let s = h.check_raw(&cdb, &[]);
            assert_eq!(
                (s.key, s.asc),
                (
                    SenseKey::ILLEGAL_REQUEST,
                    Asc::INVALID_COMMAND_OPERATION_CODE
                ),
                "{op:#x}"
            );
        }
        // An unknown service action of a supported opcode.
        let s = h.check_raw(
            &[0x9e, 0x13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            &[],
        );
        assert_eq!(
            (s.asc, s.sense_key_specific),
            (Asc::INVALID_FIELD_IN_CDB, field(1, Some(4)))
        );
        let s = h.check_raw(&[], &[]);
        assert_eq!(s.asc, Asc::INVALID_COMMAND_OPERATION_CODE);
    }

    #[test]
    fn reserved_bits_and_naca_are_invalid_fields() {
        let h = Harness::ram(64);
        let mut read10 = Cdb::read(CdbSize::Ten, 0, 1).encode();
        read10[1] |= 0x01; // RELADR
        let s = h.check_raw(&read10, &[]);
        assert_eq!(
            (s.asc, s.sense_key_specific),
            (Asc::INVALID_FIELD_IN_CDB, field(1, Some(0)))
        );
        let mut tur = Cdb::TestUnitReady.encode();
        tur[5] = 0x04; // NACA
        assert_eq!(h.check_raw(&tur, &[]).sense_key_specific, field(5, Some(2)));
        tur[5] = 0x01; // LINK
        assert_eq!(h.check_raw(&tur, &[]).sense_key_specific, field(5, Some(0)));
        // Padding beyond the CDB length (the 16-byte iSCSI field) is ignored.
        let mut padded = [0u8; 16];
        padded[..6].copy_from_slice(&Cdb::TestUnitReady.encode());
        padded[10] = 0xff;
        assert_eq!(h.raw(&padded, &[]).status, ScsiStatus::GOOD.0);
    }

    #[test]
    fn request_sense_reports_and_clears_unit_attention_in_either_format() {
        let h = Harness::ram(64);
        h.table
            .logical_unit_reset(iesp_proto::bhs::Lun::from_index(0));
        let data = h.good(
            &Cdb::RequestSense {
                desc: true,
                allocation_length: 252,
            },
            &[],
        );
        assert_eq!(data[0], 0x72);
        let s = Sense::parse(&data).expect("parses");
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::UNIT_ATTENTION, Asc::BUS_DEVICE_RESET)
        );
        let data = h.good(
            &Cdb::RequestSense {
                desc: false,
                allocation_length: 252,
            },
            &[],
        );
        assert_eq!(data.len(), 18);
        assert_eq!(
            Sense::parse(&data).map(|s| (s.key, s.asc)),
            Ok((SenseKey::NO_SENSE, Asc::NO_ADDITIONAL_SENSE))
        );
        // Allocation length cuts the data.
        assert_eq!(
            h.good(
                &Cdb::RequestSense {
                    desc: false,
                    allocation_length: 8
                },
                &[]
            )
            .len(),
            8
        );
        // Nothing was left pending.
        h.good(&Cdb::TestUnitReady, &[]);
    }

    #[test]
    fn start_stop_unit_accepts_valid_power_conditions_and_stays_ready() {
        let h = Harness::ram(64);
        let ssu = |pc: u8, modifier: u8, start: bool| Cdb::StartStopUnit {
            immed: false,
            power_condition_modifier: modifier,
            power_condition: pc,
            no_flush: false,
            loej: false,
            start,
        };
        for (pc, m) in [(0, 0), (1, 0), (2, 2), (3, 1), (7, 0), (0xa, 0), (0xb, 1)] {
            h.good(&ssu(pc, m, false), &[]);
            h.good(&Cdb::TestUnitReady, &[]);
            h.good(&Cdb::read(CdbSize::Ten, 0, 1), &[]);
        }
        h.good(&ssu(0, 0, true), &[]);
        assert_eq!(
            h.check(&ssu(5, 0, true), &[]).sense_key_specific,
            field(4, Some(7))
        );
        assert_eq!(
            h.check(&ssu(1, 1, true), &[]).sense_key_specific,
            field(3, Some(3))
        );
    }

    #[test]
    fn descriptor_sense_when_d_sense_is_set() {
        let h = Harness::ram(64);
        h.table
            .iter()
            .for_each(|lu| lu.lock().mode.control.d_sense = true);
        let c = h.run(&Cdb::read(CdbSize::Sixteen, 1 << 40, 1), &[]);
        let raw = c.sense.clone().expect("sense");
        assert_eq!(raw[0], 0x72);
        let s = Sense::parse(&raw).expect("parses");
        // Descriptor format carries a 64-bit INFORMATION field.
        assert_eq!(
            (s.asc, s.information),
            (Asc::LBA_OUT_OF_RANGE, Some(1 << 40))
        );
    }

    #[test]
    fn every_supported_command_is_dispatched() {
        let h = Harness::ram(64);
        for (op, sa) in opcodes::SUPPORTED {
            let Some(u) = usage::lookup(*op, *sa) else {
                panic!("{op:?} has no usage map")
            };
            let mut cdb = u.usage_data();
            // A zeroed CDB with the opcode and service action: valid for all.
            for b in cdb.iter_mut().skip(if sa.is_some() { 2 } else { 1 }) {
                *b = 0;
            }
            if let Some(sa) = sa {
                cdb[1] = *sa as u8;
            }
            if *op == ScsiOpcode::REPORT_LUNS {
                cdb[9] = 16; // allocation length of at least 16
            }
            let c = h.raw(&cdb, &[]);
            let asc = super::super::testutil::sense_of(&c).map(|s| s.asc);
            assert_ne!(
                asc,
                Some(Asc::INVALID_COMMAND_OPERATION_CODE),
                "{op:?}/{sa:?}"
            );
        }
    }
}
