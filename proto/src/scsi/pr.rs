//! Persistent reservations: PERSISTENT RESERVE IN parameter data (SPC-4
//! §6.15), PERSISTENT RESERVE OUT parameter lists (§6.16.3, §6.16.4) and
//! TransportIDs (§7.6.4, iSCSI: §7.6.4.6).
//!
//! The target encodes the PR IN payloads and parses the PR OUT lists; the
//! initiator does the reverse. PR OUT parse errors are [`DataError`]s whose
//! [`DataError::sense`] is the CHECK CONDITION SPC-4 requires (PARAMETER
//! LIST LENGTH ERROR, or INVALID FIELD IN PARAMETER LIST with a pointer).

use std::fmt;

use super::DataError;
use super::inquiry::ProtocolId;
use super::wire::{be16, be32, be64, bit, need, nul_padded4, u8_at, until_nul};

/// PERSISTENT RESERVE IN service actions (SPC-4 §6.15.1, table 182).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PrInServiceAction(pub u8);

impl PrInServiceAction {
    /// READ KEYS.
    pub const READ_KEYS: PrInServiceAction = PrInServiceAction(0x00);
    /// READ RESERVATION.
    pub const READ_RESERVATION: PrInServiceAction = PrInServiceAction(0x01);
    /// REPORT CAPABILITIES.
    pub const REPORT_CAPABILITIES: PrInServiceAction = PrInServiceAction(0x02);
    /// READ FULL STATUS.
    pub const READ_FULL_STATUS: PrInServiceAction = PrInServiceAction(0x03);

    /// The SPC-4 name.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            PrInServiceAction::READ_KEYS => "READ KEYS",
            PrInServiceAction::READ_RESERVATION => "READ RESERVATION",
            PrInServiceAction::REPORT_CAPABILITIES => "REPORT CAPABILITIES",
            PrInServiceAction::READ_FULL_STATUS => "READ FULL STATUS",
            _ => return None,
        })
    }
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 §6.16.2, table 199).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PrOutServiceAction(pub u8);

impl PrOutServiceAction {
    /// REGISTER.
    pub const REGISTER: PrOutServiceAction = PrOutServiceAction(0x00);
    /// RESERVE.
    pub const RESERVE: PrOutServiceAction = PrOutServiceAction(0x01);
    /// RELEASE.
    pub const RELEASE: PrOutServiceAction = PrOutServiceAction(0x02);
    /// CLEAR.
    pub const CLEAR: PrOutServiceAction = PrOutServiceAction(0x03);
    /// PREEMPT.
    pub const PREEMPT: PrOutServiceAction = PrOutServiceAction(0x04);
    /// PREEMPT AND ABORT.
    pub const PREEMPT_AND_ABORT: PrOutServiceAction = PrOutServiceAction(0x05);
    /// REGISTER AND IGNORE EXISTING KEY.
    pub const REGISTER_AND_IGNORE_EXISTING_KEY: PrOutServiceAction = PrOutServiceAction(0x06);
    /// REGISTER AND MOVE (uses [`RegisterAndMoveParameters`]).
    pub const REGISTER_AND_MOVE: PrOutServiceAction = PrOutServiceAction(0x07);
    /// REPLACE LOST RESERVATION (SPC-5).
    pub const REPLACE_LOST_RESERVATION: PrOutServiceAction = PrOutServiceAction(0x08);

    /// The SPC name.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            PrOutServiceAction::REGISTER => "REGISTER",
            PrOutServiceAction::RESERVE => "RESERVE",
            PrOutServiceAction::RELEASE => "RELEASE",
            PrOutServiceAction::CLEAR => "CLEAR",
            PrOutServiceAction::PREEMPT => "PREEMPT",
            PrOutServiceAction::PREEMPT_AND_ABORT => "PREEMPT AND ABORT",
            PrOutServiceAction::REGISTER_AND_IGNORE_EXISTING_KEY => {
                "REGISTER AND IGNORE EXISTING KEY"
            }
            PrOutServiceAction::REGISTER_AND_MOVE => "REGISTER AND MOVE",
            PrOutServiceAction::REPLACE_LOST_RESERVATION => "REPLACE LOST RESERVATION",
            _ => return None,
        })
    }
}

/// A persistent reservation TYPE (SPC-4 §6.15.3.4, table 187).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PrType(pub u8);

impl PrType {
    /// Write Exclusive.
    pub const WRITE_EXCLUSIVE: PrType = PrType(0x1);
    /// Exclusive Access.
    pub const EXCLUSIVE_ACCESS: PrType = PrType(0x3);
    /// Write Exclusive – Registrants Only.
    pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: PrType = PrType(0x5);
    /// Exclusive Access – Registrants Only.
    pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: PrType = PrType(0x6);
    /// Write Exclusive – All Registrants.
    pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: PrType = PrType(0x7);
    /// Exclusive Access – All Registrants.
    pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: PrType = PrType(0x8);

    /// The six defined types.
    pub const ALL: [PrType; 6] = [
        PrType::WRITE_EXCLUSIVE,
        PrType::EXCLUSIVE_ACCESS,
        PrType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
        PrType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
        PrType::WRITE_EXCLUSIVE_ALL_REGISTRANTS,
        PrType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
    ];

    /// The SPC-4 name.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            PrType::WRITE_EXCLUSIVE => "Write Exclusive",
            PrType::EXCLUSIVE_ACCESS => "Exclusive Access",
            PrType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY => "Write Exclusive - Registrants Only",
            PrType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY => "Exclusive Access - Registrants Only",
            PrType::WRITE_EXCLUSIVE_ALL_REGISTRANTS => "Write Exclusive - All Registrants",
            PrType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS => "Exclusive Access - All Registrants",
            _ => return None,
        })
    }

    /// This type's bit in the PERSISTENT RESERVATION TYPE MASK of REPORT
    /// CAPABILITIES (bytes 4..6 read as a big-endian u16, §6.15.4 table
    /// 195); 0 for undefined types.
    pub fn type_mask_bit(self) -> u16 {
        match self {
            PrType::WRITE_EXCLUSIVE_ALL_REGISTRANTS => 0x8000,
            PrType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY => 0x4000,
            PrType::WRITE_EXCLUSIVE_REGISTRANTS_ONLY => 0x2000,
            PrType::EXCLUSIVE_ACCESS => 0x0800,
            PrType::WRITE_EXCLUSIVE => 0x0200,
            PrType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS => 0x0001,
            _ => 0,
        }
    }

    /// True for the "All Registrants" types, where every registrant is a
    /// reservation holder (§5.12.10).
    pub fn is_all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WRITE_EXCLUSIVE_ALL_REGISTRANTS | PrType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS
        )
    }
}

macro_rules! debug_by_name {
    ($t:ty, $label:literal) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, concat!($label, "({:#04x})"), self.0),
                }
            }
        }
    };
}

debug_by_name!(PrInServiceAction, "PrInServiceAction");
debug_by_name!(PrOutServiceAction, "PrOutServiceAction");
debug_by_name!(PrType, "PrType");

/// The SCOPE value for a logical-unit reservation, the only one SPC-4
/// defines.
pub const LU_SCOPE: u8 = 0x0;

/// A TransportID (SPC-4 §7.6.4): who an initiator port is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TransportId {
    /// iSCSI (protocol identifier 5, §7.6.4.6): format 00b carries the
    /// initiator name; format 01b adds the ISID, which names the initiator
    /// port (`name,i,0x<ISID>`).
    Iscsi {
        /// The iSCSI name (UTF-8).
        name: String,
        /// The 48-bit ISID, if format 01b.
        isid: Option<u64>,
    },
    /// Any other protocol, kept raw. In a PR OUT list these are 24 bytes
    /// (all SPC-4 fixed-size formats); in READ FULL STATUS their length is
    /// given by the descriptor.
    Other {
        /// FORMAT CODE (2 bits).
        format: u8,
        /// PROTOCOL IDENTIFIER.
        protocol: ProtocolId,
        /// Bytes 1.. of the TransportID.
        data: Vec<u8>,
    },
}

const ISID_SEPARATOR: &str = ",i,0x";

impl TransportId {
    /// An iSCSI initiator-device TransportID (format 00b).
    pub fn iscsi(name: &str) -> TransportId {
        TransportId::Iscsi {
            name: name.to_owned(),
            isid: None,
        }
    }

    /// An iSCSI initiator-port TransportID (format 01b).
    pub fn iscsi_port(name: &str, isid: u64) -> TransportId {
        TransportId::Iscsi {
            name: name.to_owned(),
            isid: Some(isid & 0xffff_ffff_ffff),
        }
    }

    /// Encodes; iSCSI names are NUL-terminated and padded to a multiple of
    /// four bytes, at least 20 (§7.6.4.6).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            TransportId::Iscsi { name, isid } => {
                let text = match isid {
                    Some(i) => format!("{name}{ISID_SEPARATOR}{:012x}", i & 0xffff_ffff_ffff),
                    None => name.clone(),
                };
                let body = nul_padded4(text.as_bytes(), 20);
                let format = if isid.is_some() { 0x40 } else { 0x00 };
                let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
                let mut b = vec![format | ProtocolId::ISCSI.0, 0];
                b.extend_from_slice(&len.to_be_bytes());
                b.extend_from_slice(&body);
                b
            }
            TransportId::Other {
                format,
                protocol,
                data,
            } => {
                let mut b = vec![(format & 0x03) << 6 | (protocol.0 & 0x0f)];
                b.extend_from_slice(data);
                b
            }
        }
    }

    /// Decodes one TransportID at the start of `b` and returns it with the
    /// number of bytes it occupies. `offset` is where `b` starts in the
    /// enclosing parameter list, for error field pointers. Non-iSCSI
    /// TransportIDs are taken to be 24 bytes.
    pub fn parse(b: &[u8], offset: usize) -> Result<(TransportId, usize), DataError> {
        TransportId::parse_inner(b, offset, false)
    }

    /// Decodes a TransportID that fills `b` exactly (READ FULL STATUS).
    fn parse_inner(
        b: &[u8],
        offset: usize,
        whole: bool,
    ) -> Result<(TransportId, usize), DataError> {
        const WHAT: &str = "TransportID";
        let invalid = |byte: usize, bit: Option<u8>| DataError::InvalidField {
            what: WHAT,
            byte: offset + byte,
            bit,
        };
        let b0 = *b.first().ok_or(DataError::TooShort {
            what: WHAT,
            needed: offset + 4,
            got: offset,
        })?;
        let format = b0 >> 6;
        let protocol = ProtocolId(b0 & 0x0f);
        if protocol != ProtocolId::ISCSI {
            let len = if whole { b.len() } else { 24 };
            need(b, len, WHAT).map_err(|_| DataError::TooShort {
                what: WHAT,
                needed: offset + len,
                got: offset + b.len(),
            })?;
            let data = b.get(1..len).unwrap_or_default().to_vec();
            return Ok((
                TransportId::Other {
                    format,
                    protocol,
                    data,
                },
                len,
            ));
        }
        need(b, 4, WHAT).map_err(|_| DataError::TooShort {
            what: WHAT,
            needed: offset + 4,
            got: offset + b.len(),
        })?;
        let add_len = usize::from(be16(b, 2));
        if add_len < 20 || add_len % 4 != 0 {
            return Err(invalid(2, None));
        }
        let total = 4 + add_len;
        let body = b.get(4..total).ok_or(DataError::TooShort {
            what: WHAT,
            needed: offset + total,
            got: offset + b.len(),
        })?;
        let text = until_nul(body);
        if text.len() == body.len() {
            return Err(invalid(4, None)); // no NUL terminator
        }
        let text = std::str::from_utf8(text).map_err(|_| invalid(4, None))?;
        let id = match format {
            0 => TransportId::Iscsi {
                name: text.to_owned(),
                isid: None,
            },
            1 => {
                let lower = text.to_ascii_lowercase();
                let at = lower.rfind(ISID_SEPARATOR).ok_or(invalid(4, None))?;
                let hex = text.get(at + ISID_SEPARATOR.len()..).unwrap_or_default();
                let isid = (hex.len() == 12)
                    .then(|| u64::from_str_radix(hex, 16).ok())
                    .flatten()
                    .ok_or(invalid(4 + at, None))?;
                TransportId::Iscsi {
                    name: text.get(..at).unwrap_or_default().to_owned(),
                    isid: Some(isid),
                }
            }
            _ => return Err(invalid(0, Some(7))),
        };
        Ok((id, total))
    }
}

/// READ KEYS parameter data (SPC-4 §6.15.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReadKeys {
    /// PRGENERATION.
    pub generation: u32,
    /// The registered reservation keys.
    pub keys: Vec<u64>,
}

impl ReadKeys {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = header(self.generation, self.keys.len() * 8);
        for k in &self.keys {
            b.extend_from_slice(&k.to_be_bytes());
        }
        b
    }

    /// Decodes the keys that arrived whole.
    pub fn parse(b: &[u8]) -> Result<ReadKeys, DataError> {
        let body = body(b, "READ KEYS data")?;
        Ok(ReadKeys {
            generation: be32(b, 0),
            keys: body.chunks_exact(8).map(|c| be64(c, 0)).collect(),
        })
    }
}

/// PRGENERATION + ADDITIONAL LENGTH header shared by the PR IN payloads.
fn header(generation: u32, additional: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + additional);
    b.extend_from_slice(&generation.to_be_bytes());
    b.extend_from_slice(&u32::try_from(additional).unwrap_or(u32::MAX).to_be_bytes());
    b
}

/// The bytes after an 8-byte PR IN header, bounded by ADDITIONAL LENGTH and
/// by the buffer.
fn body<'a>(b: &'a [u8], what: &'static str) -> Result<&'a [u8], DataError> {
    need(b, 8, what)?;
    let add = usize::try_from(be32(b, 4)).unwrap_or(usize::MAX);
    let rest = b.get(8..).unwrap_or_default();
    Ok(rest.get(..add.min(rest.len())).unwrap_or_default())
}

/// The total length a PR IN header announces (ADDITIONAL LENGTH + 8), for
/// READ KEYS, READ RESERVATION and READ FULL STATUS.
pub fn announced_len(b: &[u8]) -> Option<usize> {
    (b.len() >= 8).then(|| {
        usize::try_from(be32(b, 4))
            .unwrap_or(usize::MAX)
            .saturating_add(8)
    })
}

/// The reservation reported by READ RESERVATION.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// RESERVATION KEY of the holder.
    pub key: u64,
    /// SCOPE.
    pub scope: u8,
    /// TYPE.
    pub pr_type: PrType,
}

/// READ RESERVATION parameter data (SPC-4 §6.15.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReadReservation {
    /// PRGENERATION.
    pub generation: u32,
    /// The reservation, if any (ADDITIONAL LENGTH 0x10 vs 0).
    pub reservation: Option<Reservation>,
}

impl ReadReservation {
    /// Encodes: 8 bytes without a reservation, 24 with.
    pub fn encode(&self) -> Vec<u8> {
        match self.reservation {
            None => header(self.generation, 0),
            Some(r) => {
                let mut b = header(self.generation, 16);
                b.extend_from_slice(&r.key.to_be_bytes());
                b.extend_from_slice(&[0; 4]); // obsolete
                b.push(0);
                b.push((r.scope & 0x0f) << 4 | (r.pr_type.0 & 0x0f));
                b.extend_from_slice(&[0; 2]); // obsolete
                b
            }
        }
    }

    /// Decodes; a reservation counts only if all 16 bytes arrived.
    pub fn parse(b: &[u8]) -> Result<ReadReservation, DataError> {
        let body = body(b, "READ RESERVATION data")?;
        let reservation = (body.len() >= 16).then(|| Reservation {
            key: be64(body, 0),
            scope: u8_at(body, 13) >> 4,
            pr_type: PrType(u8_at(body, 13) & 0x0f),
        });
        Ok(ReadReservation {
            generation: be32(b, 0),
            reservation,
        })
    }
}

/// REPORT CAPABILITIES parameter data (SPC-4 §6.15.4, table 193).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReportCapabilities {
    /// RLR_C: replace lost reservation capable (SPC-5).
    pub rlr_c: bool,
    /// CRH: compatible reservation handling (RESERVE/RELEASE(6) interplay).
    pub crh: bool,
    /// SIP_C: SPEC_I_PT capable.
    pub sip_c: bool,
    /// ATP_C: ALL_TG_PT capable.
    pub atp_c: bool,
    /// PTPL_C: persist through power loss capable.
    pub ptpl_c: bool,
    /// TMV: the type mask is valid.
    pub tmv: bool,
    /// ALLOW COMMANDS (3 bits).
    pub allow_commands: u8,
    /// PTPL_A: persist through power loss activated.
    pub ptpl_a: bool,
    /// PERSISTENT RESERVATION TYPE MASK (see [`PrType::type_mask_bit`]).
    pub type_mask: u16,
}

impl ReportCapabilities {
    /// Encodes the 8 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let f = super::wire::flag;
        let mut b = vec![0, 8];
        b.push(
            f(self.rlr_c, 0x80)
                | f(self.crh, 0x10)
                | f(self.sip_c, 0x08)
                | f(self.atp_c, 0x04)
                | f(self.ptpl_c, 0x01),
        );
        b.push(f(self.tmv, 0x80) | (self.allow_commands & 0x07) << 4 | f(self.ptpl_a, 0x01));
        b.extend_from_slice(&self.type_mask.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b
    }

    /// Decodes (at least 8 bytes).
    pub fn parse(b: &[u8]) -> Result<ReportCapabilities, DataError> {
        need(b, 8, "REPORT CAPABILITIES data")?;
        Ok(ReportCapabilities {
            rlr_c: bit(b, 2, 0x80),
            crh: bit(b, 2, 0x10),
            sip_c: bit(b, 2, 0x08),
            atp_c: bit(b, 2, 0x04),
            ptpl_c: bit(b, 2, 0x01),
            tmv: bit(b, 3, 0x80),
            allow_commands: (u8_at(b, 3) >> 4) & 0x07,
            ptpl_a: bit(b, 3, 0x01),
            type_mask: be16(b, 4),
        })
    }
}

/// One registrant in READ FULL STATUS (SPC-4 §6.15.5, table 197).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FullStatusDescriptor {
    /// RESERVATION KEY.
    pub key: u64,
    /// ALL_TG_PT: registered through all target ports.
    pub all_tg_pt: bool,
    /// R_HOLDER: this registrant holds the reservation.
    pub r_holder: bool,
    /// SCOPE (meaningful when R_HOLDER).
    pub scope: u8,
    /// TYPE (meaningful when R_HOLDER).
    pub pr_type: PrType,
    /// RELATIVE TARGET PORT IDENTIFIER (when not ALL_TG_PT).
    pub relative_target_port: u16,
    /// The initiator port.
    pub transport_id: TransportId,
}

/// READ FULL STATUS parameter data (SPC-4 §6.15.5).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReadFullStatus {
    /// PRGENERATION.
    pub generation: u32,
    /// One descriptor per registered I_T nexus.
    pub descriptors: Vec<FullStatusDescriptor>,
}

impl ReadFullStatus {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for d in &self.descriptors {
            let tid = d.transport_id.encode();
            body.extend_from_slice(&d.key.to_be_bytes());
            body.extend_from_slice(&[0; 4]);
            body.push(u8::from(d.all_tg_pt) << 1 | u8::from(d.r_holder));
            body.push((d.scope & 0x0f) << 4 | (d.pr_type.0 & 0x0f));
            body.extend_from_slice(&[0; 4]);
            body.extend_from_slice(&d.relative_target_port.to_be_bytes());
            body.extend_from_slice(&u32::try_from(tid.len()).unwrap_or(u32::MAX).to_be_bytes());
            body.extend_from_slice(&tid);
        }
        let mut b = header(self.generation, body.len());
        b.extend_from_slice(&body);
        b
    }

    /// Decodes the descriptors that arrived whole.
    pub fn parse(b: &[u8]) -> Result<ReadFullStatus, DataError> {
        let body = body(b, "READ FULL STATUS data")?;
        let mut descriptors = Vec::new();
        let mut at = 0usize;
        while at + 24 <= body.len() {
            let d = body.get(at..).unwrap_or_default();
            let tid_len = usize::try_from(be32(d, 20)).unwrap_or(usize::MAX);
            let Some(tid) = d.get(24..24usize.saturating_add(tid_len)) else {
                break; // truncated by the allocation length
            };
            let (transport_id, _) = TransportId::parse_inner(tid, 8 + at + 24, true)?;
            descriptors.push(FullStatusDescriptor {
                key: be64(d, 0),
                all_tg_pt: bit(d, 12, 0x02),
                r_holder: bit(d, 12, 0x01),
                scope: u8_at(d, 13) >> 4,
                pr_type: PrType(u8_at(d, 13) & 0x0f),
                relative_target_port: be16(d, 18),
                transport_id,
            });
            at += 24 + tid_len;
        }
        Ok(ReadFullStatus {
            generation: be32(b, 0),
            descriptors,
        })
    }
}

/// The basic PERSISTENT RESERVE OUT parameter list, used by every service
/// action except REGISTER AND MOVE (SPC-4 §6.16.3, table 202).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct PrOutParameters {
    /// RESERVATION KEY.
    pub reservation_key: u64,
    /// SERVICE ACTION RESERVATION KEY.
    pub service_action_reservation_key: u64,
    /// SPEC_I_PT: register the listed initiator ports too.
    pub spec_i_pt: bool,
    /// ALL_TG_PT: register through all target ports.
    pub all_tg_pt: bool,
    /// APTPL: activate persist through power loss.
    pub aptpl: bool,
    /// The TransportIDs that follow when SPEC_I_PT is set.
    pub transport_ids: Vec<TransportId>,
}

impl PrOutParameters {
    /// Encodes: 24 bytes, plus the TransportID list when SPEC_I_PT is set.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&self.reservation_key.to_be_bytes());
        b.extend_from_slice(&self.service_action_reservation_key.to_be_bytes());
        b.extend_from_slice(&[0; 4]); // obsolete
        b.push(
            u8::from(self.spec_i_pt) << 3 | u8::from(self.all_tg_pt) << 2 | u8::from(self.aptpl),
        );
        b.extend_from_slice(&[0; 3]);
        if self.spec_i_pt {
            let tids: Vec<u8> = self
                .transport_ids
                .iter()
                .flat_map(TransportId::encode)
                .collect();
            b.extend_from_slice(&u32::try_from(tids.len()).unwrap_or(u32::MAX).to_be_bytes());
            b.extend_from_slice(&tids);
        }
        b
    }

    /// Decodes a received list (its length is the CDB's PARAMETER LIST
    /// LENGTH). SPC-4 §6.16.3: without SPEC_I_PT the list is exactly 24
    /// bytes; with it, 28 bytes plus TRANSPORTID PARAMETER DATA LENGTH.
    /// Otherwise PARAMETER LIST LENGTH ERROR; a malformed TransportID is an
    /// invalid field at its offset.
    pub fn parse(b: &[u8]) -> Result<PrOutParameters, DataError> {
        const WHAT: &str = "PERSISTENT RESERVE OUT parameter list";
        let length_error = DataError::ListLength {
            what: WHAT,
            len: b.len(),
        };
        if b.len() < 24 {
            return Err(length_error);
        }
        let spec_i_pt = bit(b, 20, 0x08);
        let mut transport_ids = Vec::new();
        if spec_i_pt {
            if b.len() < 28 {
                return Err(length_error);
            }
            let tid_len = usize::try_from(be32(b, 24)).unwrap_or(usize::MAX);
            if tid_len.checked_add(28) != Some(b.len()) {
                return Err(length_error);
            }
            let mut at = 28;
            while at < b.len() {
                let (id, used) = TransportId::parse(b.get(at..).unwrap_or_default(), at)?;
                transport_ids.push(id);
                at += used;
            }
        } else if b.len() != 24 {
            return Err(length_error);
        }
        Ok(PrOutParameters {
            reservation_key: be64(b, 0),
            service_action_reservation_key: be64(b, 8),
            spec_i_pt,
            all_tg_pt: bit(b, 20, 0x04),
            aptpl: bit(b, 20, 0x01),
            transport_ids,
        })
    }
}

/// The REGISTER AND MOVE parameter list (SPC-4 §6.16.4, table 204).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegisterAndMoveParameters {
    /// RESERVATION KEY.
    pub reservation_key: u64,
    /// SERVICE ACTION RESERVATION KEY.
    pub service_action_reservation_key: u64,
    /// UNREG: unregister the I_T nexus the command came on.
    pub unreg: bool,
    /// APTPL.
    pub aptpl: bool,
    /// RELATIVE TARGET PORT IDENTIFIER of the destination.
    pub relative_target_port: u16,
    /// The destination initiator port.
    pub transport_id: TransportId,
}

impl RegisterAndMoveParameters {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let tid = self.transport_id.encode();
        let mut b = Vec::with_capacity(24 + tid.len());
        b.extend_from_slice(&self.reservation_key.to_be_bytes());
        b.extend_from_slice(&self.service_action_reservation_key.to_be_bytes());
        b.push(0);
        b.push(u8::from(self.unreg) << 1 | u8::from(self.aptpl));
        b.extend_from_slice(&self.relative_target_port.to_be_bytes());
        b.extend_from_slice(&u32::try_from(tid.len()).unwrap_or(u32::MAX).to_be_bytes());
        b.extend_from_slice(&tid);
        b
    }

    /// Decodes a received list: 24 bytes plus exactly one TransportID of
    /// TRANSPORTID PARAMETER DATA LENGTH bytes.
    pub fn parse(b: &[u8]) -> Result<RegisterAndMoveParameters, DataError> {
        const WHAT: &str = "REGISTER AND MOVE parameter list";
        let length_error = DataError::ListLength {
            what: WHAT,
            len: b.len(),
        };
        if b.len() < 24 {
            return Err(length_error);
        }
        let tid_len = usize::try_from(be32(b, 20)).unwrap_or(usize::MAX);
        if tid_len.checked_add(24) != Some(b.len()) {
            return Err(length_error);
        }
        let (transport_id, used) = TransportId::parse(b.get(24..).unwrap_or_default(), 24)?;
        if used != tid_len {
            return Err(DataError::InvalidField {
                what: WHAT,
                byte: 20,
                bit: None,
            });
        }
        Ok(RegisterAndMoveParameters {
            reservation_key: be64(b, 0),
            service_action_reservation_key: be64(b, 8),
            unreg: bit(b, 17, 0x02),
            aptpl: bit(b, 17, 0x01),
            relative_target_port: be16(b, 18),
            transport_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::Asc;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    #[test]
    fn iscsi_transport_id_bytes() {
        let t = TransportId::iscsi("iqn.x");
        let b = t.encode();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..4], &[0x05, 0, 0, 20]);
        assert_eq!(&b[4..10], b"iqn.x\0");
        assert_eq!(TransportId::parse(&b, 0), Ok((t, 24)));

        let t = TransportId::iscsi_port("iqn.2026-11.test:init", 0x0023_4567_89ab);
        let b = t.encode();
        assert_eq!(b[0], 0x45);
        let text = b"iqn.2026-11.test:init,i,0x0023456789ab\0";
        assert_eq!(&b[4..4 + text.len()], text);
        assert_eq!(b.len() % 4, 0);
        assert_eq!(TransportId::parse(&b, 0).map(|p| p.0), Ok(t));
    }

    #[test]
    fn bad_transport_ids() {
        let mut b = TransportId::iscsi("iqn.x").encode();
        b[3] = 18; // not a multiple of 4
        assert_eq!(
            TransportId::parse(&b, 28),
            Err(DataError::InvalidField {
                what: "TransportID",
                byte: 30,
                bit: None
            })
        );
        let mut b = TransportId::iscsi("iqn.x").encode();
        b[0] = 0x85; // format 10b
        assert!(matches!(
            TransportId::parse(&b, 0),
            Err(DataError::InvalidField { byte: 0, .. })
        ));
        let mut b = TransportId::iscsi("iqn.x").encode();
        for x in &mut b[4..] {
            *x = b'a'; // no terminator
        }
        assert!(TransportId::parse(&b, 0).is_err());
    }

    #[test]
    fn pr_out_basic_list_bytes_and_length_rules() {
        let p = PrOutParameters {
            reservation_key: 0x0102_0304_0506_0708,
            service_action_reservation_key: 0xaa,
            aptpl: true,
            ..PrOutParameters::default()
        };
        let b = p.encode();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(b[15], 0xaa);
        assert_eq!(b[20], 0x01);
        assert_eq!(PrOutParameters::parse(&b), Ok(p));

        let mut long = b.clone();
        long.push(0);
        let e = PrOutParameters::parse(&long);
        assert_eq!(
            e.map_err(|e| e.sense().asc),
            Err(Asc::PARAMETER_LIST_LENGTH_ERROR)
        );
        assert!(PrOutParameters::parse(&b[..23]).is_err());
    }

    #[test]
    fn pr_out_spec_i_pt_list() {
        let p = PrOutParameters {
            reservation_key: 0,
            service_action_reservation_key: 7,
            spec_i_pt: true,
            all_tg_pt: true,
            aptpl: false,
            transport_ids: vec![
                TransportId::iscsi("iqn.a"),
                TransportId::iscsi_port("iqn.b", 1),
                TransportId::Other {
                    format: 0,
                    protocol: ProtocolId::SAS,
                    data: vec![0x11; 23],
                },
            ],
        };
        let b = p.encode();
        assert_eq!(b[20], 0x0c);
        assert_eq!(be32(&b, 24) as usize, b.len() - 28);
        assert_eq!(PrOutParameters::parse(&b), Ok(p));
        // A TRANSPORTID PARAMETER DATA LENGTH that disagrees with the list.
        let mut bad = b.clone();
        bad[27] = bad[27].wrapping_add(4);
        assert!(matches!(
            PrOutParameters::parse(&bad),
            Err(DataError::ListLength { .. })
        ));
    }

    #[test]
    fn read_reservation_and_capabilities_bytes() {
        let r = ReadReservation {
            generation: 3,
            reservation: Some(Reservation {
                key: 0x42,
                scope: LU_SCOPE,
                pr_type: PrType::EXCLUSIVE_ACCESS,
            }),
        };
        let b = r.encode();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..8], &[0, 0, 0, 3, 0, 0, 0, 16]);
        assert_eq!(b[21], 0x03);
        assert_eq!(ReadReservation::parse(&b), Ok(r));
        let none = ReadReservation {
            generation: 9,
            reservation: None,
        };
        assert_eq!(none.encode(), vec![0, 0, 0, 9, 0, 0, 0, 0]);

        let mask = PrType::ALL.iter().fold(0, |m, t| m | t.type_mask_bit());
        assert_eq!(mask, 0xea01);
        let c = ReportCapabilities {
            crh: true,
            sip_c: true,
            atp_c: true,
            ptpl_c: true,
            tmv: true,
            allow_commands: 1,
            type_mask: mask,
            ..ReportCapabilities::default()
        };
        let b = c.encode();
        assert_eq!(b, vec![0, 8, 0x1d, 0x90, 0xea, 0x01, 0, 0]);
        assert_eq!(ReportCapabilities::parse(&b), Ok(c));
    }

    #[test]
    fn read_full_status_round_trip_and_truncation() {
        let s = ReadFullStatus {
            generation: 1,
            descriptors: vec![
                FullStatusDescriptor {
                    key: 1,
                    all_tg_pt: false,
                    r_holder: true,
                    scope: 0,
                    pr_type: PrType::WRITE_EXCLUSIVE,
                    relative_target_port: 1,
                    transport_id: TransportId::iscsi_port("iqn.a", 0x3d0000000001),
                },
                FullStatusDescriptor {
                    key: 2,
                    all_tg_pt: true,
                    r_holder: false,
                    scope: 0,
                    pr_type: PrType(0),
                    relative_target_port: 0,
                    transport_id: TransportId::iscsi("iqn.b"),
                },
            ],
        };
        let b = s.encode();
        assert_eq!(ReadFullStatus::parse(&b), Ok(s.clone()));
        assert_eq!(announced_len(&b), Some(b.len()));
        let cut = ReadFullStatus::parse(&b[..b.len() - 1]).map(|p| p.descriptors.len());
        assert_eq!(cut, Ok(1));
    }

    #[test]
    fn register_and_move_round_trip() {
        let p = RegisterAndMoveParameters {
            reservation_key: 5,
            service_action_reservation_key: 6,
            unreg: true,
            aptpl: false,
            relative_target_port: 2,
            transport_id: TransportId::iscsi_port("iqn.c", 0xabc),
        };
        let b = p.encode();
        assert_eq!(b[17], 0x02);
        assert_eq!(RegisterAndMoveParameters::parse(&b), Ok(p));
    }

    fn tid_strategy() -> impl Strategy<Value = TransportId> {
        prop_oneof![
            ("[a-z0-9.:-]{1,60}", proptest::option::of(0u64..1 << 48))
                .prop_map(|(name, isid)| TransportId::Iscsi { name, isid }),
            (0u8..4, 0u8..16, proptest::collection::vec(any::<u8>(), 23))
                .prop_filter("not iSCSI", |(_, p, _)| *p != 5)
                .prop_map(|(format, p, data)| TransportId::Other {
                    format,
                    protocol: ProtocolId(p),
                    data
                }),
        ]
    }

    proptest! {
        #[test]
        fn pr_out_round_trip(
            keys in (any::<u64>(), any::<u64>()),
            flags in (any::<bool>(), any::<bool>(), any::<bool>()),
            tids in proptest::collection::vec(tid_strategy(), 0..4),
        ) {
            let p = PrOutParameters {
                reservation_key: keys.0,
                service_action_reservation_key: keys.1,
                spec_i_pt: flags.0,
                all_tg_pt: flags.1,
                aptpl: flags.2,
                transport_ids: if flags.0 { tids } else { Vec::new() },
            };
            prop_assert_eq!(PrOutParameters::parse(&p.encode()), Ok(p));
        }

        #[test]
        fn read_keys_round_trip(generation in any::<u32>(), keys in proptest::collection::vec(any::<u64>(), 0..32)) {
            let r = ReadKeys { generation, keys };
            prop_assert_eq!(ReadKeys::parse(&r.encode()), Ok(r));
        }

        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = PrOutParameters::parse(&b);
            let _ = RegisterAndMoveParameters::parse(&b);
            let _ = ReadKeys::parse(&b);
            let _ = ReadReservation::parse(&b);
            let _ = ReportCapabilities::parse(&b);
            let _ = ReadFullStatus::parse(&b);
            let _ = TransportId::parse(&b, 0);
        }
    }
}
