//! Reservations: persistent reservations (PERSISTENT RESERVE IN/OUT, SPC-4
//! §5.14, §6.15, §6.16) and the older RESERVE(6)/RELEASE(6) (SPC-2 §7.21,
//! §7.17), kept per logical unit in [`Reservations`] under the LU's state
//! lock.
//!
//! ## Persistent reservations
//!
//! Registrations are per I_T nexus ([`NexusKey`]: initiator port = name +
//! ISID, target port = portal group tag). All six reservation types are
//! supported; for the "all registrants" types every registrant holds the
//! reservation and READ RESERVATION reports key 0.
//!
//! - REGISTER / REGISTER AND IGNORE EXISTING KEY register, change the key,
//!   or (SERVICE ACTION RESERVATION KEY 0) unregister. ALL_TG_PT is
//!   accepted: the target has one target port per target, so a
//!   registration through "all" target ports is the registration through
//!   this one (ATP_C=1). SPEC_I_PT is not supported (SIP_C=0: INVALID FIELD
//!   IN PARAMETER LIST), nor is APTPL (PTPL_C=0: INVALID FIELD IN PARAMETER
//!   LIST) — registrations and reservations live in memory and end with
//!   the process, as after a power loss.
//! - RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT AND ABORT and REGISTER AND
//!   MOVE follow SPC-4 §5.14.9–§5.14.12, with RESERVATION CONFLICT for an
//!   unregistered I_T nexus or a wrong RESERVATION KEY. PREEMPT AND ABORT
//!   preempts like PREEMPT; the tasks of the preempted I_T nexuses it would
//!   abort do not exist at the logical unit, which runs each command to
//!   completion as it arrives — a write still collecting data on another
//!   connection meets the new reservation when it runs.
//! - PRGENERATION counts every successful REGISTER, REGISTER AND IGNORE
//!   EXISTING KEY, CLEAR, PREEMPT, PREEMPT AND ABORT and REGISTER AND MOVE
//!   that changed something (SPC-4 §6.15.2).
//! - Unit attentions (SPC-4 §5.14.11): REGISTRATIONS PREEMPTED to every
//!   I_T nexus a PREEMPT unregistered (but the preempting one);
//!   RESERVATIONS PREEMPTED to every other registrant on CLEAR; RESERVATIONS
//!   RELEASED to the other registrants when a registrants-only or
//!   all-registrants reservation is released (RELEASE, or the holder
//!   unregistering) and when a PREEMPT changes the type.
//! - Registrations persist across I_T nexus loss and resets (SPC-4
//!   §5.14.1); they end with CLEAR, PREEMPT or the process. At most
//!   [`MAX_REGISTRATIONS`] per logical unit (INSUFFICIENT REGISTRATION
//!   RESOURCES beyond).
//!
//! Which commands conflict with a reservation held by another I_T nexus is
//! [`access`] (SPC-4 table 64 and SBC-4 table 13, §4.17): commands that
//! only report (INQUIRY, REPORT LUNS, REQUEST SENSE, TEST UNIT READY, READ
//! CAPACITY, PERSISTENT RESERVE IN) never do; commands that read the
//! medium or mode and log state conflict under Exclusive Access types;
//! commands that change anything conflict under every type, except from a
//! registrant of a registrants-only or all-registrants reservation.
//! REPORT CAPABILITIES says so with ALLOW COMMANDS 011b.
//!
//! ## RESERVE(6) / RELEASE(6)
//!
//! One I_T nexus may hold the logical unit. Another I_T nexus gets
//! RESERVATION CONFLICT for everything but INQUIRY, REPORT LUNS, REQUEST
//! SENSE, PERSISTENT RESERVE IN and RELEASE(6), which completes GOOD
//! without releasing. The reservation ends with RELEASE(6) from the holder,
//! the holder's I_T nexus loss, a logical unit reset or a target reset
//! (SPC-2 §5.5.1). The two kinds exclude each other (CRH=0, SPC-4 §5.14.3):
//! RESERVE(6)/RELEASE(6) conflict while any registration exists, and
//! PERSISTENT RESERVE OUT conflicts while a RESERVE(6) reservation exists.

use bytes::Bytes;
use iesp_proto::pdu::Isid;
use iesp_proto::scsi::pr::{
    FullStatusDescriptor, LU_SCOPE, PrOutParameters, ReadFullStatus, ReadKeys, ReadReservation,
    RegisterAndMoveParameters, ReportCapabilities, Reservation,
};
use iesp_proto::scsi::{
    Asc, Cdb, PrInServiceAction, PrOutServiceAction, PrType, Sense, TransportId, truncate,
};

use super::sense::{Fault, Outcome};
use super::ua::{NexusKey, NexusTable};

/// How a command is treated while another I_T nexus holds a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Never conflicts.
    Always,
    /// Reads: allowed through Write Exclusive types.
    Read,
    /// Changes the medium or the logical unit's state.
    Write,
    /// Decides for itself (PERSISTENT RESERVE OUT, RESERVE, RELEASE).
    Own,
}

/// The class of `cdb` (see the module docs).
pub fn access(cdb: &Cdb) -> Access {
    match *cdb {
        Cdb::TestUnitReady
        | Cdb::Inquiry { .. }
        | Cdb::ReportLuns { .. }
        | Cdb::RequestSense { .. }
        | Cdb::PersistentReserveIn { .. }
        | Cdb::ReadCapacity10 { .. }
        | Cdb::ReadCapacity16 { .. } => Access::Always,
        // SBC-4 table 13: starting the unit is harmless; stopping it or
        // changing its power condition is not.
        Cdb::StartStopUnit {
            start: true,
            power_condition: 0,
            ..
        } => Access::Always,
        Cdb::Read { .. }
        | Cdb::Verify { .. }
        | Cdb::PreFetch { .. }
        | Cdb::GetLbaStatus { .. }
        | Cdb::ModeSense { .. }
        | Cdb::ReportSupportedOpCodes { .. }
        | Cdb::ReportSupportedTmfs { .. }
        | Cdb::ReadDefectData { .. }
        | Cdb::ReceiveCopyResults { .. } => Access::Read,
        Cdb::PersistentReserveOut { .. } | Cdb::Reserve6 | Cdb::Release6 => Access::Own,
        _ => Access::Write,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Registration {
    nexus: NexusKey,
    key: u64,
    all_tg_pt: bool,
}

/// The persistent reservation. For the all-registrants types `holder` is
/// the I_T nexus that created it, kept only for bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Persistent {
    holder: NexusKey,
    pr_type: PrType,
}

/// The reservation state of a logical unit.
#[derive(Debug, Default)]
pub struct Reservations {
    /// PRGENERATION.
    generation: u32,
    registrations: Vec<Registration>,
    persistent: Option<Persistent>,
    /// The RESERVE(6) holder.
    legacy: Option<NexusKey>,
}

/// The parts of a PERSISTENT RESERVE OUT CDB the service actions use.
#[derive(Clone, Copy, Debug)]
pub struct PrOut {
    pub service_action: PrOutServiceAction,
    pub scope: u8,
    pub pr_type: PrType,
    pub parameter_list_length: u32,
}

/// Registrations a logical unit keeps: one per I_T nexus, so this bounds
/// what initiators logging in with ever new ISIDs can make it hold. Beyond
/// it REGISTER is ILLEGAL REQUEST, INSUFFICIENT REGISTRATION RESOURCES
/// (SPC-4 §5.14.7).
pub const MAX_REGISTRATIONS: usize = 1024;

/// The largest PERSISTENT RESERVE OUT parameter list accepted: the basic
/// list is 24 bytes, REGISTER AND MOVE adds one TransportID (at most 4 +
/// 224 bytes of iSCSI name and ISID, SPC-4 §7.6.4.6).
pub const MAX_PR_OUT_LIST: u32 = 24 + 4 + 256;

/// RESERVE(6) from `me`.
pub fn reserve6(res: &mut Reservations, me: &NexusKey) -> Result<(), Fault> {
    if !res.registrations.is_empty() {
        return Err(Fault::Conflict);
    }
    match &res.legacy {
        Some(holder) if holder != me => Err(Fault::Conflict),
        _ => {
            res.legacy = Some(me.clone());
            Ok(())
        }
    }
}

/// RELEASE(6) from `me`: releases only the holder's reservation.
pub fn release6(res: &mut Reservations, me: &NexusKey) -> Result<(), Fault> {
    if !res.registrations.is_empty() {
        return Err(Fault::Conflict);
    }
    if res.legacy.as_ref() == Some(me) {
        res.legacy = None;
    }
    Ok(())
}

/// The type is one of the six SPC-4 defines.
fn valid_type(t: PrType) -> bool {
    PrType::ALL.contains(&t)
}

/// Registrants-only and all-registrants types, whose release is announced
/// to the other registrants.
fn shared_type(t: PrType) -> bool {
    t.is_all_registrants()
        || t == PrType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY
        || t == PrType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY
}

fn isid_of(v: u64) -> Isid {
    let b = v.to_be_bytes();
    Isid([b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl Reservations {
    fn registration(&self, n: &NexusKey) -> Option<&Registration> {
        self.registrations.iter().find(|r| r.nexus == *n)
    }

    fn is_holder(&self, n: &NexusKey) -> bool {
        match &self.persistent {
            Some(p) if p.pr_type.is_all_registrants() => self.registration(n).is_some(),
            Some(p) => p.holder == *n,
            None => false,
        }
    }

    /// The RESERVATION KEY of the reservation (0 for all registrants).
    fn reservation_key(&self) -> Option<u64> {
        let p = self.persistent.as_ref()?;
        if p.pr_type.is_all_registrants() {
            return Some(0);
        }
        self.registration(&p.holder).map(|r| r.key)
    }

    /// Whether `cdb` from `me` conflicts with a reservation (module docs).
    pub fn conflict(&self, me: &NexusKey, cdb: &Cdb) -> bool {
        if let Some(holder) = &self.legacy
            && holder != me
        {
            return !matches!(
                cdb,
                Cdb::Inquiry { .. }
                    | Cdb::ReportLuns { .. }
                    | Cdb::RequestSense { .. }
                    | Cdb::PersistentReserveIn { .. }
                    | Cdb::Release6
            );
        }
        let Some(p) = &self.persistent else {
            return false;
        };
        let class = access(cdb);
        if matches!(class, Access::Always | Access::Own) || self.is_holder(me) {
            return false;
        }
        let registered = self.registration(me).is_some();
        match p.pr_type {
            PrType::WRITE_EXCLUSIVE => class == Access::Write,
            PrType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY | PrType::WRITE_EXCLUSIVE_ALL_REGISTRANTS => {
                !registered && class == Access::Write
            }
            PrType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY
            | PrType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS => !registered,
            // EXCLUSIVE ACCESS (and nothing else can be stored).
            _ => true,
        }
    }

    /// I_T nexus loss: a RESERVE(6) reservation of that nexus ends;
    /// persistent registrations stay.
    pub fn nexus_loss(&mut self, n: &NexusKey) {
        if self.legacy.as_ref() == Some(n) {
            self.legacy = None;
        }
    }

    /// Logical unit or target reset: RESERVE(6) reservations end,
    /// persistent ones stay (SPC-4 §5.14.1).
    pub fn reset(&mut self) {
        self.legacy = None;
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Removes `n`'s registration; a reservation it held ends (module
    /// docs for the unit attentions).
    fn unregister(&mut self, n: &NexusKey, uas: &mut NexusTable) {
        self.registrations.retain(|r| r.nexus != *n);
        let Some(p) = &self.persistent else { return };
        let ends = if p.pr_type.is_all_registrants() {
            self.registrations.is_empty()
        } else {
            p.holder == *n
        };
        if ends {
            let announce = shared_type(p.pr_type);
            self.persistent = None;
            if announce {
                self.announce(n, Asc::RESERVATIONS_RELEASED, uas);
            }
        }
    }

    /// Establishes `asc` for every registrant but `except`.
    fn announce(&self, except: &NexusKey, asc: Asc, uas: &mut NexusTable) {
        for r in self.registrations.iter().filter(|r| r.nexus != *except) {
            uas.establish(&r.nexus, asc);
        }
    }
}

/// PERSISTENT RESERVE IN (SPC-4 §6.15).
pub fn persistent_reserve_in(
    res: &Reservations,
    service_action: PrInServiceAction,
    allocation_length: u16,
) -> Outcome {
    let data = match service_action {
        PrInServiceAction::READ_KEYS => ReadKeys {
            generation: res.generation,
            keys: res.registrations.iter().map(|r| r.key).collect(),
        }
        .encode(),
        PrInServiceAction::READ_RESERVATION => ReadReservation {
            generation: res.generation,
            reservation: res.persistent.as_ref().map(|p| Reservation {
                key: res.reservation_key().unwrap_or(0),
                scope: LU_SCOPE,
                pr_type: p.pr_type,
            }),
        }
        .encode(),
        PrInServiceAction::REPORT_CAPABILITIES => ReportCapabilities {
            rlr_c: false,
            crh: false,
            sip_c: false,
            atp_c: true,
            ptpl_c: false,
            tmv: true,
            // 011b: TEST UNIT READY and the reading commands of SPC-4
            // table 195 are allowed through Write Exclusive types.
            allow_commands: 0b011,
            ptpl_a: false,
            type_mask: PrType::ALL.iter().fold(0, |m, t| m | t.type_mask_bit()),
        }
        .encode(),
        PrInServiceAction::READ_FULL_STATUS => ReadFullStatus {
            generation: res.generation,
            descriptors: res
                .registrations
                .iter()
                .map(|r| {
                    let holder = res.is_holder(&r.nexus);
                    FullStatusDescriptor {
                        key: r.key,
                        all_tg_pt: r.all_tg_pt,
                        r_holder: holder,
                        scope: LU_SCOPE,
                        pr_type: match (&res.persistent, holder) {
                            (Some(p), true) => p.pr_type,
                            _ => PrType(0),
                        },
                        // As VPD page 83h reports it (0 is reserved).
                        relative_target_port: r.nexus.portal_group_tag().max(1),
                        transport_id: TransportId::iscsi_port(
                            r.nexus.initiator_name(),
                            r.nexus.isid().to_u64(),
                        ),
                    }
                })
                .collect(),
        }
        .encode(),
        // The dispatcher admits only the four service actions above.
        _ => return Err(Sense::invalid_field_in_cdb(1, Some(4))),
    };
    Ok(Bytes::from(truncate(data, u32::from(allocation_length))))
}

/// PERSISTENT RESERVE OUT (SPC-4 §6.16) from `me`, with the parameter
/// list received (`data`, possibly shorter than the CDB says when the
/// initiator sent less).
pub fn persistent_reserve_out(
    res: &mut Reservations,
    uas: &mut NexusTable,
    me: &NexusKey,
    cdb: PrOut,
    data: &[u8],
) -> Result<(), Fault> {
    if res.legacy.is_some() {
        return Err(Fault::Conflict);
    }
    let pll = usize::try_from(cdb.parameter_list_length).unwrap_or(usize::MAX);
    let Some(list) = data.get(..pll) else {
        return Err(Sense::parameter_list_length_error().into());
    };
    let sa = cdb.service_action;
    if matches!(
        sa,
        PrOutServiceAction::RESERVE
            | PrOutServiceAction::RELEASE
            | PrOutServiceAction::PREEMPT
            | PrOutServiceAction::PREEMPT_AND_ABORT
    ) {
        if cdb.scope != LU_SCOPE {
            return Err(Sense::invalid_field_in_cdb(2, Some(7)).into());
        }
        if !valid_type(cdb.pr_type) {
            return Err(Sense::invalid_field_in_cdb(2, Some(3)).into());
        }
    }
    if sa == PrOutServiceAction::REGISTER_AND_MOVE {
        let p = RegisterAndMoveParameters::parse(list).map_err(|e| e.sense())?;
        return register_and_move(res, me, &p);
    }
    let p = PrOutParameters::parse(list).map_err(|e| e.sense())?;
    if p.spec_i_pt {
        return Err(Sense::invalid_field_in_parameter_list(20, Some(3)).into());
    }
    let registering = matches!(
        sa,
        PrOutServiceAction::REGISTER | PrOutServiceAction::REGISTER_AND_IGNORE_EXISTING_KEY
    );
    if registering && p.aptpl {
        return Err(Sense::invalid_field_in_parameter_list(20, Some(0)).into());
    }
    let mine = res.registration(me).map(|r| r.key);
    match sa {
        PrOutServiceAction::REGISTER | PrOutServiceAction::REGISTER_AND_IGNORE_EXISTING_KEY => {
            let ignore = sa == PrOutServiceAction::REGISTER_AND_IGNORE_EXISTING_KEY;
            match mine {
                None if !ignore && p.reservation_key != 0 => Err(Fault::Conflict),
                None if p.service_action_reservation_key == 0 => Ok(()),
                None if res.registrations.len() >= MAX_REGISTRATIONS => {
                    Err(Sense::illegal_request(Asc::INSUFFICIENT_REGISTRATION_RESOURCES).into())
                }
                None => {
                    res.registrations.push(Registration {
                        nexus: me.clone(),
                        key: p.service_action_reservation_key,
                        all_tg_pt: p.all_tg_pt,
                    });
                    res.bump();
                    Ok(())
                }
                Some(key) if !ignore && key != p.reservation_key => Err(Fault::Conflict),
                Some(_) if p.service_action_reservation_key == 0 => {
                    res.unregister(me, uas);
                    res.bump();
                    Ok(())
                }
                Some(_) => {
                    for r in res.registrations.iter_mut().filter(|r| r.nexus == *me) {
                        r.key = p.service_action_reservation_key;
                    }
                    res.bump();
                    Ok(())
                }
            }
        }
        // Everything else needs the caller's registration and key.
        _ if mine != Some(p.reservation_key) => Err(Fault::Conflict),
        PrOutServiceAction::RESERVE => match &res.persistent {
            None => {
                res.persistent = Some(Persistent {
                    holder: me.clone(),
                    pr_type: cdb.pr_type,
                });
                Ok(())
            }
            Some(cur) if cur.pr_type == cdb.pr_type && res.is_holder(me) => Ok(()),
            Some(_) => Err(Fault::Conflict),
        },
        PrOutServiceAction::RELEASE => match &res.persistent {
            Some(cur) if res.is_holder(me) => {
                if cur.pr_type != cdb.pr_type {
                    return Err(Sense::illegal_request(
                        Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
                    )
                    .into());
                }
                let announce = shared_type(cur.pr_type);
                res.persistent = None;
                if announce {
                    res.announce(me, Asc::RESERVATIONS_RELEASED, uas);
                }
                Ok(())
            }
            // No reservation, or someone else's: nothing to do.
            _ => Ok(()),
        },
        PrOutServiceAction::CLEAR => {
            res.announce(me, Asc::RESERVATIONS_PREEMPTED, uas);
            res.registrations.clear();
            res.persistent = None;
            res.bump();
            Ok(())
        }
        PrOutServiceAction::PREEMPT | PrOutServiceAction::PREEMPT_AND_ABORT => {
            preempt(res, uas, me, cdb.pr_type, p.service_action_reservation_key)
        }
        // The dispatcher admits only the service actions above.
        _ => Err(Sense::invalid_field_in_cdb(1, Some(4)).into()),
    }
}

/// PREEMPT / PREEMPT AND ABORT (SPC-4 §5.14.11.4) by a registered `me`.
fn preempt(
    res: &mut Reservations,
    uas: &mut NexusTable,
    me: &NexusKey,
    new_type: PrType,
    sark: u64,
) -> Result<(), Fault> {
    let all_registrants = res
        .persistent
        .as_ref()
        .is_some_and(|p| p.pr_type.is_all_registrants());
    let preempts_reservation = match res.reservation_key() {
        // All registrants: a key of zero preempts the reservation.
        Some(0) if all_registrants => sark == 0,
        Some(key) => sark == key,
        None => false,
    };
    if sark == 0 && !preempts_reservation {
        return Err(Sense::invalid_field_in_parameter_list(8, None).into());
    }
    // Who loses their registration: everyone with the key (all other
    // registrants, for all registrants with key zero), but never the
    // preempting nexus when the reservation is preempted.
    let removed: Vec<NexusKey> = res
        .registrations
        .iter()
        .filter(|r| {
            let matches = (all_registrants && sark == 0) || r.key == sark;
            matches && !(preempts_reservation && r.nexus == *me)
        })
        .map(|r| r.nexus.clone())
        .collect();
    if !preempts_reservation && removed.is_empty() {
        return Err(Fault::Conflict);
    }
    res.registrations.retain(|r| !removed.contains(&r.nexus));
    for n in removed.iter().filter(|n| *n != me) {
        uas.establish(n, Asc::REGISTRATIONS_PREEMPTED);
    }
    if preempts_reservation {
        let changed = res
            .persistent
            .as_ref()
            .is_some_and(|p| p.pr_type != new_type);
        res.persistent = Some(Persistent {
            holder: me.clone(),
            pr_type: new_type,
        });
        if changed {
            res.announce(me, Asc::RESERVATIONS_RELEASED, uas);
        }
    } else if all_registrants && res.registrations.is_empty() {
        res.persistent = None;
    }
    res.bump();
    Ok(())
}

/// REGISTER AND MOVE (SPC-4 §5.14.8) by `me`.
fn register_and_move(
    res: &mut Reservations,
    me: &NexusKey,
    p: &RegisterAndMoveParameters,
) -> Result<(), Fault> {
    if res.registration(me).map(|r| r.key) != Some(p.reservation_key) {
        return Err(Fault::Conflict);
    }
    match &res.persistent {
        Some(cur) if !cur.pr_type.is_all_registrants() && cur.holder == *me => {}
        _ => return Err(Fault::Conflict),
    }
    if p.aptpl {
        return Err(Sense::invalid_field_in_parameter_list(17, Some(0)).into());
    }
    if p.service_action_reservation_key == 0 {
        return Err(Sense::invalid_field_in_parameter_list(8, None).into());
    }
    // The destination must be an initiator port (name and ISID) on our
    // target port.
    let TransportId::Iscsi {
        name,
        isid: Some(isid),
    } = &p.transport_id
    else {
        return Err(Sense::invalid_field_in_parameter_list(24, None).into());
    };
    if p.relative_target_port != me.portal_group_tag().max(1) {
        return Err(Sense::invalid_field_in_parameter_list(18, None).into());
    }
    let dest = NexusKey::new(name, isid_of(*isid), me.portal_group_tag());
    if dest == *me {
        return Err(Sense::invalid_field_in_parameter_list(24, None).into());
    }
    let pr_type = res
        .persistent
        .as_ref()
        .map(|c| c.pr_type)
        .unwrap_or_default();
    let full = res.registrations.len() >= MAX_REGISTRATIONS;
    match res.registrations.iter_mut().find(|r| r.nexus == dest) {
        Some(r) => r.key = p.service_action_reservation_key,
        None if full => {
            return Err(Sense::illegal_request(Asc::INSUFFICIENT_REGISTRATION_RESOURCES).into());
        }
        None => res.registrations.push(Registration {
            nexus: dest.clone(),
            key: p.service_action_reservation_key,
            all_tg_pt: false,
        }),
    }
    res.persistent = Some(Persistent {
        holder: dest,
        pr_type,
    });
    if p.unreg {
        res.registrations.retain(|r| r.nexus != *me);
    }
    res.bump();
    Ok(())
}

#[cfg(test)]
mod tests {
    use iesp_proto::bhs::Lun;
    use iesp_proto::scsi::pr::ReportCapabilities;
    use iesp_proto::scsi::{CdbSize, ScsiStatus, SenseKey};

    use super::*;
    use crate::scsi::testutil::{Harness, check_of, nexus, sense_of};
    use crate::scsi::{Completion, Nexus};

    const K1: u64 = 0x1111;
    const K2: u64 = 0x2222;

    /// A harness and three more I_T nexuses: `b` of another initiator,
    /// `c` another port (ISID) of the first, and `o`, which never
    /// registers and reads the state (no unit attention comes its way).
    struct Pr {
        h: Harness,
        b: Nexus,
        c: Nexus,
        o: Nexus,
    }

    impl Pr {
        fn new() -> Pr {
            let h = Harness::ram(64);
            let mut b = nexus(2);
            b.initiator_name = "iqn.2026-11.org.iesp-test:other".into();
            let c = nexus(3);
            let o = nexus(9);
            let pr = Pr { h, b, c, o };
            // Clear the power-on unit attentions.
            for n in [&pr.b, &pr.c, &pr.o] {
                pr.tur(n);
            }
            pr
        }

        fn a(&self) -> &Nexus {
            &self.h.nexus
        }

        fn exec(&self, n: &Nexus, cdb: &Cdb, data: &[u8]) -> Completion {
            self.h.table.execute(
                n,
                Lun::from_index(0),
                &cdb.encode(),
                data,
                data.len() as u32,
            )
        }

        fn tur(&self, n: &Nexus) -> Completion {
            self.exec(n, &Cdb::TestUnitReady, &[])
        }

        fn out(
            &self,
            n: &Nexus,
            sa: PrOutServiceAction,
            t: PrType,
            rk: u64,
            sark: u64,
        ) -> Completion {
            let list = PrOutParameters {
                reservation_key: rk,
                service_action_reservation_key: sark,
                ..Default::default()
            }
            .encode();
            self.out_raw(n, sa, t, &list)
        }

        fn out_raw(&self, n: &Nexus, sa: PrOutServiceAction, t: PrType, list: &[u8]) -> Completion {
            let cdb = Cdb::PersistentReserveOut {
                service_action: sa,
                scope: 0,
                pr_type: t,
                parameter_list_length: list.len() as u32,
            };
            self.exec(n, &cdb, list)
        }

        fn ok(&self, n: &Nexus, sa: PrOutServiceAction, t: PrType, rk: u64, sark: u64) {
            let c = self.out(n, sa, t, rk, sark);
            assert_eq!(c.status, 0, "{sa:?} {t:?}: {:?}", sense_of(&c));
        }

        fn conflict(&self, n: &Nexus, sa: PrOutServiceAction, t: PrType, rk: u64, sark: u64) {
            let c = self.out(n, sa, t, rk, sark);
            assert_eq!(
                (c.status, c.sense.is_none()),
                (ScsiStatus::RESERVATION_CONFLICT.0, true),
                "{sa:?} {t:?}"
            );
        }

        fn register(&self, n: &Nexus, key: u64) {
            self.ok(n, PrOutServiceAction::REGISTER, PrType(0), 0, key);
        }

        fn pr_in(&self, n: &Nexus, sa: PrInServiceAction) -> Vec<u8> {
            let c = self.exec(
                n,
                &Cdb::PersistentReserveIn {
                    service_action: sa,
                    allocation_length: 4096,
                },
                &[],
            );
            assert_eq!(c.status, 0, "{:?}", sense_of(&c));
            c.data.to_vec()
        }

        fn keys(&self) -> ReadKeys {
            ReadKeys::parse(&self.pr_in(&self.o, PrInServiceAction::READ_KEYS)).unwrap()
        }

        fn reservation(&self) -> ReadReservation {
            ReadReservation::parse(&self.pr_in(&self.o, PrInServiceAction::READ_RESERVATION))
                .unwrap()
        }

        fn read(&self, n: &Nexus) -> u8 {
            self.exec(n, &Cdb::read(CdbSize::Ten, 1, 1), &[]).status
        }

        fn write(&self, n: &Nexus) -> u8 {
            self.exec(n, &Cdb::write(CdbSize::Ten, 1, 1, false), &[0xa5; 512])
                .status
        }

        fn ua(&self, n: &Nexus) -> Option<Asc> {
            let c = self.tur(n);
            (c.status != 0).then(|| check_of(&c).asc)
        }
    }

    const GOOD: u8 = 0;
    const CONFLICT: u8 = 0x18;

    #[test]
    fn register_replace_unregister_and_generation() {
        let t = Pr::new();
        assert_eq!(t.keys(), ReadKeys::default());
        t.register(t.a(), K1);
        assert_eq!(t.keys().keys, vec![K1]);
        // Re-registering without the current key conflicts (libiscsi
        // ProutRegister.Simple); with it, the key is replaced.
        t.conflict(t.a(), PrOutServiceAction::REGISTER, PrType(0), 0, K2);
        t.conflict(t.a(), PrOutServiceAction::REGISTER, PrType(0), K2, K2);
        t.ok(t.a(), PrOutServiceAction::REGISTER, PrType(0), K1, K2);
        // REGISTER AND IGNORE EXISTING KEY ignores it.
        t.ok(
            t.a(),
            PrOutServiceAction::REGISTER_AND_IGNORE_EXISTING_KEY,
            PrType(0),
            0x9999,
            K1,
        );
        let k = t.keys();
        assert_eq!((k.keys, k.generation), (vec![K1], 3));
        // An unregistered nexus with a non-zero key conflicts; unregistering
        // what is not registered is a no-op that changes nothing.
        t.conflict(&t.b, PrOutServiceAction::REGISTER, PrType(0), K1, K2);
        t.ok(&t.b, PrOutServiceAction::REGISTER, PrType(0), 0, 0);
        assert_eq!(t.keys().generation, 3);
        // Another port of the same initiator is another I_T nexus.
        t.register(&t.c, K1);
        t.ok(t.a(), PrOutServiceAction::REGISTER, PrType(0), K1, 0);
        let k = t.keys();
        assert_eq!((k.keys, k.generation), (vec![K1], 5));
    }

    #[test]
    fn every_type_reserves_reports_and_releases() {
        for ty in PrType::ALL {
            let t = Pr::new();
            t.register(t.a(), K1);
            t.ok(t.a(), PrOutServiceAction::RESERVE, ty, K1, 0);
            // Reserving again with the same type is harmless.
            t.ok(t.a(), PrOutServiceAction::RESERVE, ty, K1, 0);
            let r = t.reservation().reservation.expect("reserved");
            let key = if ty.is_all_registrants() { 0 } else { K1 };
            assert_eq!((r.key, r.scope, r.pr_type), (key, 0, ty));
            // RESERVE and RELEASE do not count.
            assert_eq!(t.reservation().generation, 1);
            // Releasing with another type is an invalid release.
            let other = if ty == PrType::WRITE_EXCLUSIVE {
                PrType::EXCLUSIVE_ACCESS
            } else {
                PrType::WRITE_EXCLUSIVE
            };
            let s = check_of(&t.out(t.a(), PrOutServiceAction::RELEASE, other, K1, 0));
            assert_eq!(s.asc, Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
            t.ok(t.a(), PrOutServiceAction::RELEASE, ty, K1, 0);
            assert_eq!(t.reservation().reservation, None);
        }
    }

    #[test]
    fn reserve_and_release_need_the_registered_key() {
        let t = Pr::new();
        let ea = PrType::EXCLUSIVE_ACCESS;
        t.conflict(t.a(), PrOutServiceAction::RESERVE, ea, 0, 0);
        t.register(t.a(), K1);
        t.conflict(t.a(), PrOutServiceAction::RESERVE, ea, K2, 0);
        t.ok(t.a(), PrOutServiceAction::RESERVE, ea, K1, 0);
        // Another registrant cannot reserve, nor change the type.
        t.register(&t.b, K2);
        t.conflict(&t.b, PrOutServiceAction::RESERVE, ea, K2, 0);
        t.conflict(
            t.a(),
            PrOutServiceAction::RESERVE,
            PrType::WRITE_EXCLUSIVE,
            K1,
            0,
        );
        // A non-holder's RELEASE is a no-op; an unregistered one conflicts.
        t.ok(&t.b, PrOutServiceAction::RELEASE, ea, K2, 0);
        assert!(t.reservation().reservation.is_some());
        t.conflict(&t.c, PrOutServiceAction::RELEASE, ea, 0, 0);
        // Scope and type are checked.
        let list = PrOutParameters {
            reservation_key: K1,
            ..Default::default()
        }
        .encode();
        let bad_scope = Cdb::PersistentReserveOut {
            service_action: PrOutServiceAction::RESERVE,
            scope: 1,
            pr_type: ea,
            parameter_list_length: 24,
        };
        assert_eq!(
            check_of(&t.exec(t.a(), &bad_scope, &list)).asc,
            Asc::INVALID_FIELD_IN_CDB
        );
        let s = check_of(&t.out(t.a(), PrOutServiceAction::RESERVE, PrType(2), K1, 0));
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
    }

    /// libiscsi's ProutReserve.Access* matrix: (registered reads, registered
    /// writes, unregistered reads, unregistered writes) of another
    /// initiator while `a` holds the reservation.
    #[test]
    fn access_matrix_per_type() {
        let matrix = [
            (
                PrType::EXCLUSIVE_ACCESS,
                [CONFLICT, CONFLICT, CONFLICT, CONFLICT],
            ),
            (PrType::WRITE_EXCLUSIVE, [GOOD, CONFLICT, GOOD, CONFLICT]),
            (
                PrType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
                [GOOD, GOOD, CONFLICT, CONFLICT],
            ),
            (
                PrType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
                [GOOD, GOOD, GOOD, CONFLICT],
            ),
            (
                PrType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
                [GOOD, GOOD, CONFLICT, CONFLICT],
            ),
            (
                PrType::WRITE_EXCLUSIVE_ALL_REGISTRANTS,
                [GOOD, GOOD, GOOD, CONFLICT],
            ),
        ];
        for (ty, expect) in matrix {
            let t = Pr::new();
            t.register(t.a(), K1);
            t.register(&t.b, K2);
            t.ok(t.a(), PrOutServiceAction::RESERVE, ty, K1, 0);
            assert_eq!((t.read(t.a()), t.write(t.a())), (GOOD, GOOD), "{ty:?}");
            let registered = [t.read(&t.b), t.write(&t.b)];
            t.ok(&t.b, PrOutServiceAction::REGISTER, PrType(0), K2, 0);
            let unregistered = [t.read(&t.b), t.write(&t.b)];
            assert_eq!(
                [registered, unregistered].concat(),
                expect.to_vec(),
                "{ty:?}"
            );
            // Reporting commands never conflict.
            for cdb in [
                Cdb::TestUnitReady,
                Cdb::inquiry(None, 36),
                Cdb::read_capacity16(),
                Cdb::report_luns(64),
            ] {
                assert_eq!(t.exec(&t.b, &cdb, &[]).status, GOOD, "{ty:?} {cdb:?}");
            }
            // MODE SENSE reads: allowed through Write Exclusive only.
            let ms = t.exec(&t.b, &Cdb::mode_sense(CdbSize::Six, 0x3f, 0, 255), &[]);
            let we = ty == PrType::WRITE_EXCLUSIVE
                || ty == PrType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY
                || ty == PrType::WRITE_EXCLUSIVE_ALL_REGISTRANTS;
            assert_eq!(ms.status == GOOD, we, "{ty:?}");
        }
    }

    #[test]
    fn holder_unregistering_ends_its_reservation() {
        // libiscsi ProutReserve.Ownership*: the reservation goes with the
        // holder, except for all-registrants types.
        for ty in PrType::ALL {
            let t = Pr::new();
            t.register(t.a(), K1);
            t.register(&t.b, K2);
            t.ok(t.a(), PrOutServiceAction::RESERVE, ty, K1, 0);
            t.ok(t.a(), PrOutServiceAction::REGISTER, PrType(0), K1, 0);
            let left = t.reservation().reservation;
            if ty.is_all_registrants() {
                assert_eq!(left.map(|r| r.key), Some(0), "{ty:?}");
                t.ok(&t.b, PrOutServiceAction::RELEASE, ty, K2, 0);
            } else {
                assert_eq!(left, None, "{ty:?}");
            }
            // Registrants-only: the others hear RESERVATIONS RELEASED. (An
            // all-registrants reservation outlived the unregistration, and
            // its release by `b` has nobody else to tell.)
            let expected = (ty == PrType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY
                || ty == PrType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY)
                .then_some(Asc::RESERVATIONS_RELEASED);
            assert_eq!(t.ua(&t.b), expected, "{ty:?}");
            assert_eq!(t.ua(&t.b), None);
        }
    }

    #[test]
    fn clear_removes_everything_and_tells_the_others() {
        let t = Pr::new();
        t.register(t.a(), K1);
        t.register(&t.b, K2);
        t.ok(
            t.a(),
            PrOutServiceAction::RESERVE,
            PrType::EXCLUSIVE_ACCESS,
            K1,
            0,
        );
        let generation = t.keys().generation;
        t.conflict(&t.c, PrOutServiceAction::CLEAR, PrType(0), 0, 0);
        t.conflict(&t.b, PrOutServiceAction::CLEAR, PrType(0), K1, 0);
        t.ok(&t.b, PrOutServiceAction::CLEAR, PrType(0), K2, 0);
        let k = t.keys();
        assert_eq!((k.keys.len(), k.generation), (0, generation + 1));
        assert_eq!(t.reservation().reservation, None);
        assert_eq!(t.ua(t.a()), Some(Asc::RESERVATIONS_PREEMPTED));
        assert_eq!(t.ua(&t.b), None, "not the issuer");
    }

    #[test]
    fn preempt_removes_registrations_and_takes_the_reservation() {
        // Without a reservation (libiscsi ProutPreempt.RemoveRegistration).
        let t = Pr::new();
        t.register(t.a(), K1);
        t.register(&t.b, K2);
        let generation = t.keys().generation;
        t.ok(
            &t.b,
            PrOutServiceAction::PREEMPT,
            PrType::EXCLUSIVE_ACCESS,
            K2,
            K1,
        );
        let k = t.keys();
        assert_eq!((k.keys, k.generation), (vec![K2], generation + 1));
        assert_eq!(t.reservation().reservation, None);
        assert_eq!(t.ua(t.a()), Some(Asc::REGISTRATIONS_PREEMPTED));
        // A key nobody holds conflicts; zero is invalid without a
        // reservation.
        t.conflict(
            &t.b,
            PrOutServiceAction::PREEMPT,
            PrType::EXCLUSIVE_ACCESS,
            K2,
            0x77,
        );
        let s = check_of(&t.out(
            &t.b,
            PrOutServiceAction::PREEMPT,
            PrType::EXCLUSIVE_ACCESS,
            K2,
            0,
        ));
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);

        // Preempting the holder: its reservation moves with a new type; the
        // remaining registrants hear of the change.
        let t = Pr::new();
        t.register(t.a(), K1);
        t.register(&t.b, K2);
        t.register(&t.c, 0x3333);
        t.ok(
            t.a(),
            PrOutServiceAction::RESERVE,
            PrType::WRITE_EXCLUSIVE,
            K1,
            0,
        );
        t.ok(
            &t.b,
            PrOutServiceAction::PREEMPT_AND_ABORT,
            PrType::EXCLUSIVE_ACCESS,
            K2,
            K1,
        );
        let r = t.reservation().reservation.expect("reserved");
        assert_eq!((r.key, r.pr_type), (K2, PrType::EXCLUSIVE_ACCESS));
        assert_eq!(t.keys().keys, vec![K2, 0x3333]);
        assert_eq!(t.ua(t.a()), Some(Asc::REGISTRATIONS_PREEMPTED));
        assert_eq!(t.ua(&t.c), Some(Asc::RESERVATIONS_RELEASED));
        assert_eq!(t.ua(&t.b), None);
        assert_eq!(t.write(t.a()), CONFLICT);

        // All registrants, key zero: everyone else goes.
        let t = Pr::new();
        t.register(t.a(), K1);
        t.register(&t.b, K2);
        t.ok(
            t.a(),
            PrOutServiceAction::RESERVE,
            PrType::WRITE_EXCLUSIVE_ALL_REGISTRANTS,
            K1,
            0,
        );
        t.ok(
            &t.b,
            PrOutServiceAction::PREEMPT,
            PrType::WRITE_EXCLUSIVE,
            K2,
            0,
        );
        assert_eq!(t.keys().keys, vec![K2]);
        let r = t.reservation().reservation.expect("reserved");
        assert_eq!((r.key, r.pr_type), (K2, PrType::WRITE_EXCLUSIVE));
    }

    #[test]
    fn register_and_move_hands_over_the_reservation() {
        let t = Pr::new();
        t.register(t.a(), K1);
        t.ok(
            t.a(),
            PrOutServiceAction::RESERVE,
            PrType::WRITE_EXCLUSIVE,
            K1,
            0,
        );
        let mv = |unreg: bool, tid: TransportId, rtp: u16| {
            RegisterAndMoveParameters {
                reservation_key: K1,
                service_action_reservation_key: K2,
                unreg,
                aptpl: false,
                relative_target_port: rtp,
                transport_id: tid,
            }
            .encode()
        };
        let b_port = TransportId::iscsi_port(&t.b.initiator_name, t.b.isid.to_u64());
        // A device TransportID (no ISID) names no I_T nexus.
        let c = t.out_raw(
            t.a(),
            PrOutServiceAction::REGISTER_AND_MOVE,
            PrType::WRITE_EXCLUSIVE,
            &mv(false, TransportId::iscsi(&t.b.initiator_name), 1),
        );
        assert_eq!(check_of(&c).asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
        // Another target port.
        let c = t.out_raw(
            t.a(),
            PrOutServiceAction::REGISTER_AND_MOVE,
            PrType::WRITE_EXCLUSIVE,
            &mv(false, b_port.clone(), 9),
        );
        assert_eq!(check_of(&c).asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
        let c = t.out_raw(
            t.a(),
            PrOutServiceAction::REGISTER_AND_MOVE,
            PrType::WRITE_EXCLUSIVE,
            &mv(true, b_port, 1),
        );
        assert_eq!(c.status, GOOD, "{:?}", sense_of(&c));
        assert_eq!(t.keys().keys, vec![K2]);
        let r = t.reservation().reservation.expect("moved");
        assert_eq!((r.key, r.pr_type), (K2, PrType::WRITE_EXCLUSIVE));
        assert_eq!(t.write(&t.b), GOOD);
        assert_eq!(t.write(t.a()), CONFLICT);
        // Only the holder may move.
        t.register(t.a(), K1);
        let c = t.out_raw(
            t.a(),
            PrOutServiceAction::REGISTER_AND_MOVE,
            PrType::WRITE_EXCLUSIVE,
            &mv(false, TransportId::iscsi_port("iqn.x", 5), 1),
        );
        assert_eq!(c.status, CONFLICT);
    }

    #[test]
    fn parameter_list_errors() {
        let t = Pr::new();
        let base = PrOutParameters {
            service_action_reservation_key: K1,
            ..Default::default()
        };
        let mut short = base.encode();
        short.truncate(20);
        let s = check_of(&t.out_raw(t.a(), PrOutServiceAction::REGISTER, PrType(0), &short));
        assert_eq!(s.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        let aptpl = PrOutParameters {
            aptpl: true,
            ..base.clone()
        };
        let s = check_of(&t.out_raw(
            t.a(),
            PrOutServiceAction::REGISTER,
            PrType(0),
            &aptpl.encode(),
        ));
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
        let spec = PrOutParameters {
            spec_i_pt: true,
            transport_ids: vec![TransportId::iscsi("iqn.x")],
            ..base.clone()
        };
        let s = check_of(&t.out_raw(
            t.a(),
            PrOutServiceAction::REGISTER,
            PrType(0),
            &spec.encode(),
        ));
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
        // Data-Out shorter than PARAMETER LIST LENGTH.
        let cdb = Cdb::PersistentReserveOut {
            service_action: PrOutServiceAction::REGISTER,
            scope: 0,
            pr_type: PrType(0),
            parameter_list_length: 24,
        };
        let s = check_of(&t.exec(t.a(), &cdb, &base.encode()[..12]));
        assert_eq!(s.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        // An absurd length is refused from the CDB alone: no data is
        // solicited for it.
        let huge = Cdb::PersistentReserveOut {
            service_action: PrOutServiceAction::REGISTER,
            scope: 0,
            pr_type: PrType(0),
            parameter_list_length: u32::MAX,
        };
        assert_eq!(
            t.h.table.transfer(Lun::from_index(0), &huge.encode()),
            crate::scsi::Transfer::NONE
        );
        let s = check_of(&t.exec(t.a(), &huge, &[]));
        assert_eq!(s.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        assert!(t.keys().keys.is_empty());
    }

    #[test]
    fn pr_in_data_and_service_action_range() {
        let t = Pr::new();
        t.register(t.a(), K1);
        t.register(&t.b, K2);
        t.ok(
            t.a(),
            PrOutServiceAction::RESERVE,
            PrType::EXCLUSIVE_ACCESS,
            K1,
            0,
        );
        let caps =
            ReportCapabilities::parse(&t.pr_in(&t.b, PrInServiceAction::REPORT_CAPABILITIES))
                .unwrap();
        assert!(caps.tmv && caps.atp_c && !caps.sip_c && !caps.ptpl_c && !caps.crh);
        assert_eq!(caps.allow_commands, 3);
        assert_eq!(caps.type_mask, 0xea01);
        let full =
            ReadFullStatus::parse(&t.pr_in(&t.b, PrInServiceAction::READ_FULL_STATUS)).unwrap();
        assert_eq!(full.descriptors.len(), 2);
        let d = &full.descriptors[0];
        assert_eq!(
            (d.key, d.r_holder, d.pr_type, d.relative_target_port),
            (K1, true, PrType::EXCLUSIVE_ACCESS, 1)
        );
        assert_eq!(
            d.transport_id,
            TransportId::iscsi_port(&t.a().initiator_name, t.a().isid.to_u64())
        );
        assert!(!full.descriptors[1].r_holder);
        // ADDITIONAL LENGTH is not cut by the allocation length.
        let c = t.exec(
            t.a(),
            &Cdb::PersistentReserveIn {
                service_action: PrInServiceAction::READ_KEYS,
                allocation_length: 8,
            },
            &[],
        );
        assert_eq!(&c.data[4..8], &[0, 0, 0, 16]);
        for sa in 4..0x20 {
            let c = t.exec(
                t.a(),
                &Cdb::PersistentReserveIn {
                    service_action: PrInServiceAction(sa),
                    allocation_length: 64,
                },
                &[],
            );
            assert_eq!(check_of(&c).asc, Asc::INVALID_FIELD_IN_CDB, "{sa}");
        }
    }

    #[test]
    fn registrations_are_bounded() {
        let t = Pr::new();
        let mut n = nexus(0);
        for i in 0..MAX_REGISTRATIONS as u32 {
            n.isid = Isid([0x80, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0x42]);
            let _ = t.tur(&n);
            t.register(&n, u64::from(i) + 1);
        }
        // (So many nexuses overflow the unit attention table, which then
        // tells the old ones of a power on again.)
        let _ = t.ua(&t.o);
        let _ = t.ua(t.a());
        let data = t.pr_in(&t.o, PrInServiceAction::READ_KEYS);
        assert_eq!(
            iesp_proto::scsi::pr::announced_len(&data),
            Some(8 + 8 * MAX_REGISTRATIONS)
        );
        let s = check_of(&t.out(t.a(), PrOutServiceAction::REGISTER, PrType(0), 0, K1));
        assert_eq!(s.asc, Asc::INSUFFICIENT_REGISTRATION_RESOURCES);
        // Changing an existing registration still works.
        t.ok(
            &n,
            PrOutServiceAction::REGISTER,
            PrType(0),
            MAX_REGISTRATIONS as u64,
            7,
        );
    }

    #[test]
    fn registrations_survive_nexus_loss_and_resets() {
        let t = Pr::new();
        t.register(t.a(), K1);
        t.ok(
            t.a(),
            PrOutServiceAction::RESERVE,
            PrType::EXCLUSIVE_ACCESS,
            K1,
            0,
        );
        t.h.table.nexus_loss(t.a(), crate::scsi::NexusEnd::Lost);
        t.h.table.logical_unit_reset(Lun::from_index(0));
        t.h.table.target_reset();
        assert_eq!(t.ua(t.a()), Some(Asc::POWER_ON_RESET));
        assert_eq!(t.ua(&t.o), Some(Asc::POWER_ON_RESET));
        assert_eq!(t.keys().keys, vec![K1]);
        assert!(t.reservation().reservation.is_some());
    }

    #[test]
    fn reserve6_excludes_others_and_ends_with_the_nexus() {
        let t = Pr::new();
        let ok = |n: &Nexus, cdb: &Cdb| t.exec(n, cdb, &[]).status;
        assert_eq!(ok(t.a(), &Cdb::Reserve6), GOOD);
        assert_eq!(
            ok(t.a(), &Cdb::Reserve6),
            GOOD,
            "the holder may reserve again"
        );
        assert_eq!(ok(&t.b, &Cdb::Reserve6), CONFLICT);
        assert_eq!(ok(&t.b, &Cdb::Release6), GOOD, "a no-op");
        assert_eq!(
            ok(&t.b, &Cdb::mode_sense(CdbSize::Six, 0x3f, 0, 255)),
            CONFLICT
        );
        assert_eq!(ok(&t.b, &Cdb::TestUnitReady), CONFLICT);
        assert_eq!(ok(&t.b, &Cdb::inquiry(None, 36)), GOOD);
        assert_eq!(ok(&t.b, &Cdb::report_luns(64)), GOOD);
        assert_eq!(t.write(t.a()), GOOD);
        // PERSISTENT RESERVE OUT conflicts while RESERVE(6) holds.
        t.conflict(t.a(), PrOutServiceAction::REGISTER, PrType(0), 0, K1);
        assert_eq!(ok(t.a(), &Cdb::Release6), GOOD);
        assert_eq!(ok(&t.b, &Cdb::Reserve6), GOOD);
        // Released when the holder's nexus ends, even by a clean Logout.
        t.h.table.nexus_loss(&t.b, crate::scsi::NexusEnd::Logout);
        assert_eq!(ok(t.a(), &Cdb::Reserve6), GOOD);
        // And by a logical unit reset.
        t.h.table.logical_unit_reset(Lun::from_index(0));
        let _ = t.ua(&t.b);
        assert_eq!(ok(&t.b, &Cdb::Reserve6), GOOD);
        t.h.table.target_reset();
        let _ = t.ua(t.a());
        let _ = t.ua(&t.b);
        assert_eq!(ok(t.a(), &Cdb::Reserve6), GOOD);
        assert_eq!(ok(t.a(), &Cdb::Release6), GOOD);
        // Registrations exclude RESERVE(6).
        t.register(&t.b, K2);
        assert_eq!(ok(t.a(), &Cdb::Reserve6), CONFLICT);
        assert_eq!(ok(t.a(), &Cdb::Release6), CONFLICT);
        let s = check_of(&t.exec(t.a(), &Cdb::read(CdbSize::Ten, 64, 1), &[]));
        assert_eq!(s.key, SenseKey::ILLEGAL_REQUEST);
    }
}
