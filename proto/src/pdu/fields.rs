//! Every BHS field of every RFC 7143 PDU, by name (§11).
//!
//! One table per opcode says where each field lives. It serves three
//! purposes, so the offsets are written once:
//!
//! - the conformance suite overrides any field of a PDU by its RFC name
//!   (`CmdSN = 7`, `F = 0`, `ReasonCode = 3`) and matches received PDUs field
//!   by field;
//! - [`reserved_bits`] reports every bit a peer set that the RFC reserves
//!   (everything not covered by a field of that opcode);
//! - a unit test checks the typed PDU structs against the table.
//!
//! Names follow the RFC's figures (`ExpStatSN`, `DataSegmentLength`, `R2TSN`).
//! Bit flags use the RFC's letters (`F`, `I`, `R`, `W`, `C`, `T`, `A`, `S`,
//! `O`, `U`), with long aliases for the residual flags (`Overflow`, …).

use crate::bhs::{Bhs, Opcode};

/// Where a field lives in the BHS and how wide it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A big-endian unsigned integer of `len` bytes (1..=8).
    Int { len: u8 },
    /// The bits of `mask` within one byte; the value is shifted down.
    Bits { mask: u8 },
    /// A byte string of `len` bytes (the CDB).
    Blob { len: u8 },
}

/// A named BHS field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    /// Byte offset in the BHS.
    pub offset: u8,
    pub kind: FieldKind,
}

impl Field {
    /// The field's value as an integer; a blob reads as its first 8 bytes.
    pub fn read(&self, bhs: &Bhs) -> u64 {
        let at = usize::from(self.offset);
        match self.kind {
            FieldKind::Int { len } | FieldKind::Blob { len } => bhs.0
                [at..at + usize::from(len).min(8)]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
            FieldKind::Bits { mask } => u64::from((bhs.0[at] & mask) >> mask.trailing_zeros()),
        }
    }

    /// Writes `value`, truncated to the field's width.
    pub fn write(&self, bhs: &mut Bhs, value: u64) {
        let at = usize::from(self.offset);
        match self.kind {
            FieldKind::Int { len } | FieldKind::Blob { len } => {
                let len = usize::from(len);
                let bytes = value.to_be_bytes();
                let n = len.min(8);
                bhs.0[at + len - n..at + len].copy_from_slice(&bytes[8 - n..]);
            }
            FieldKind::Bits { mask } => {
                let shifted = ((value as u8) << mask.trailing_zeros()) & mask;
                bhs.0[at] = (bhs.0[at] & !mask) | shifted;
            }
        }
    }

    /// The raw bytes of an `Int` or `Blob` field (a `Bits` field gives its byte).
    pub fn bytes<'a>(&self, bhs: &'a Bhs) -> &'a [u8] {
        let at = usize::from(self.offset);
        match self.kind {
            FieldKind::Int { len } | FieldKind::Blob { len } => &bhs.0[at..at + usize::from(len)],
            FieldKind::Bits { .. } => &bhs.0[at..at + 1],
        }
    }

    /// Writes raw bytes into an `Int` or `Blob` field, zero-filling the rest
    /// of it; extra bytes are ignored.
    pub fn write_bytes(&self, bhs: &mut Bhs, src: &[u8]) {
        let at = usize::from(self.offset);
        let len = match self.kind {
            FieldKind::Int { len } | FieldKind::Blob { len } => usize::from(len),
            FieldKind::Bits { .. } => 1,
        };
        let dst = &mut bhs.0[at..at + len];
        dst.fill(0);
        let n = src.len().min(len);
        dst[..n].copy_from_slice(&src[..n]);
    }

    /// The bits this field covers, as (byte offset, mask) pairs.
    fn coverage(&self) -> impl Iterator<Item = (usize, u8)> {
        let at = usize::from(self.offset);
        let (len, mask) = match self.kind {
            FieldKind::Int { len } | FieldKind::Blob { len } => (usize::from(len), 0xff),
            FieldKind::Bits { mask } => (1, mask),
        };
        (at..at + len).map(move |i| (i, mask))
    }
}

const fn int(name: &'static str, offset: u8, len: u8) -> Field {
    Field {
        name,
        offset,
        kind: FieldKind::Int { len },
    }
}

const fn bits(name: &'static str, offset: u8, mask: u8) -> Field {
    Field {
        name,
        offset,
        kind: FieldKind::Bits { mask },
    }
}

/// Fields at the same place in every PDU (§11.2.1).
pub const COMMON: &[Field] = &[
    bits("Opcode", 0, 0x3f),
    int("TotalAHSLength", 4, 1),
    int("DataSegmentLength", 5, 3),
    int("ITT", 16, 4),
];

const I: Field = bits("I", 0, 0x40);
const F: Field = bits("F", 1, 0x80);
const LUN: Field = int("LUN", 8, 8);
const TTT: Field = int("TTT", 20, 4);
const CMD_SN: Field = int("CmdSN", 24, 4);
const EXP_STAT_SN: Field = int("ExpStatSN", 28, 4);
const STAT_SN: Field = int("StatSN", 24, 4);
const EXP_CMD_SN: Field = int("ExpCmdSN", 28, 4);
const MAX_CMD_SN: Field = int("MaxCmdSN", 32, 4);

const NOP_OUT: &[Field] = &[I, F, LUN, TTT, CMD_SN, EXP_STAT_SN];
const NOP_IN: &[Field] = &[F, LUN, TTT, STAT_SN, EXP_CMD_SN, MAX_CMD_SN];
const SCSI_COMMAND: &[Field] = &[
    I,
    F,
    bits("R", 1, 0x40),
    bits("W", 1, 0x20),
    bits("ATTR", 1, 0x07),
    LUN,
    int("ExpectedDataTransferLength", 20, 4),
    CMD_SN,
    EXP_STAT_SN,
    Field {
        name: "CDB",
        offset: 32,
        kind: FieldKind::Blob { len: 16 },
    },
];
const SCSI_RESPONSE: &[Field] = &[
    F,
    bits("o", 1, 0x10),
    bits("u", 1, 0x08),
    bits("O", 1, 0x04),
    bits("U", 1, 0x02),
    int("Response", 2, 1),
    int("Status", 3, 1),
    int("SNACKTag", 20, 4),
    STAT_SN,
    EXP_CMD_SN,
    MAX_CMD_SN,
    int("ExpDataSN", 36, 4),
    int("BidiReadResidualCount", 40, 4),
    int("ResidualCount", 44, 4),
];
const TASK_MGMT_REQUEST: &[Field] = &[
    I,
    F,
    bits("Function", 1, 0x7f),
    LUN,
    int("ReferencedTaskTag", 20, 4),
    CMD_SN,
    EXP_STAT_SN,
    int("RefCmdSN", 32, 4),
    int("ExpDataSN", 36, 4),
];
const TASK_MGMT_RESPONSE: &[Field] = &[F, int("Response", 2, 1), STAT_SN, EXP_CMD_SN, MAX_CMD_SN];
const LOGIN_REQUEST: &[Field] = &[
    I,
    bits("T", 1, 0x80),
    bits("C", 1, 0x40),
    bits("CSG", 1, 0x0c),
    bits("NSG", 1, 0x03),
    int("VersionMax", 2, 1),
    int("VersionMin", 3, 1),
    int("ISID", 8, 6),
    int("TSIH", 14, 2),
    int("CID", 20, 2),
    CMD_SN,
    EXP_STAT_SN,
];
const LOGIN_RESPONSE: &[Field] = &[
    bits("T", 1, 0x80),
    bits("C", 1, 0x40),
    bits("CSG", 1, 0x0c),
    bits("NSG", 1, 0x03),
    int("VersionMax", 2, 1),
    int("VersionActive", 3, 1),
    int("ISID", 8, 6),
    int("TSIH", 14, 2),
    STAT_SN,
    EXP_CMD_SN,
    MAX_CMD_SN,
    int("StatusClass", 36, 1),
    int("StatusDetail", 37, 1),
];
const TEXT_REQUEST: &[Field] = &[I, F, bits("C", 1, 0x40), LUN, TTT, CMD_SN, EXP_STAT_SN];
const TEXT_RESPONSE: &[Field] = &[
    F,
    bits("C", 1, 0x40),
    LUN,
    TTT,
    STAT_SN,
    EXP_CMD_SN,
    MAX_CMD_SN,
];
const DATA_OUT: &[Field] = &[
    F,
    LUN,
    TTT,
    EXP_STAT_SN,
    int("DataSN", 36, 4),
    int("BufferOffset", 40, 4),
];
const DATA_IN: &[Field] = &[
    F,
    bits("A", 1, 0x40),
    bits("O", 1, 0x04),
    bits("U", 1, 0x02),
    bits("S", 1, 0x01),
    int("Status", 3, 1),
    LUN,
    TTT,
    STAT_SN,
    EXP_CMD_SN,
    MAX_CMD_SN,
    int("DataSN", 36, 4),
    int("BufferOffset", 40, 4),
    int("ResidualCount", 44, 4),
];
const LOGOUT_REQUEST: &[Field] = &[
    I,
    F,
    bits("ReasonCode", 1, 0x7f),
    int("CID", 20, 2),
    CMD_SN,
    EXP_STAT_SN,
];
const LOGOUT_RESPONSE: &[Field] = &[
    F,
    int("Response", 2, 1),
    STAT_SN,
    EXP_CMD_SN,
    MAX_CMD_SN,
    int("Time2Wait", 40, 2),
    int("Time2Retain", 42, 2),
];
const SNACK_REQUEST: &[Field] = &[
    F,
    bits("Type", 1, 0x0f),
    LUN,
    TTT,
    EXP_STAT_SN,
    int("BegRun", 40, 4),
    int("RunLength", 44, 4),
];
const R2T: &[Field] = &[
    F,
    LUN,
    TTT,
    STAT_SN,
    EXP_CMD_SN,
    MAX_CMD_SN,
    int("R2TSN", 36, 4),
    int("BufferOffset", 40, 4),
    int("DesiredDataTransferLength", 44, 4),
];
const ASYNC_MESSAGE: &[Field] = &[
    F,
    LUN,
    STAT_SN,
    EXP_CMD_SN,
    MAX_CMD_SN,
    int("AsyncEvent", 36, 1),
    int("AsyncVCode", 37, 1),
    int("Parameter1", 38, 2),
    int("Parameter2", 40, 2),
    int("Parameter3", 42, 2),
];
const REJECT: &[Field] = &[
    F,
    int("Reason", 2, 1),
    STAT_SN,
    EXP_CMD_SN,
    MAX_CMD_SN,
    int("DataSN", 36, 4),
];

/// Aliases accepted by [`lookup`], for readability in scripts.
const ALIASES: &[(&str, &str)] = &[
    ("Final", "F"),
    ("Immediate", "I"),
    ("Read", "R"),
    ("Write", "W"),
    ("Continue", "C"),
    ("Transit", "T"),
    ("Acknowledge", "A"),
    ("StatusPresent", "S"),
    ("Overflow", "O"),
    ("Underflow", "U"),
    ("BidiOverflow", "o"),
    ("BidiUnderflow", "u"),
    ("EDTL", "ExpectedDataTransferLength"),
    ("R2TSN", "DataSN"),
    ("SNACKTag", "TTT"),
    ("DesiredLength", "DesiredDataTransferLength"),
    ("Reason", "ReasonCode"),
];

/// The opcode-specific fields of `op`; empty for opcodes RFC 7143 does not
/// define.
pub fn specific(op: Opcode) -> &'static [Field] {
    match op {
        Opcode::NOP_OUT => NOP_OUT,
        Opcode::NOP_IN => NOP_IN,
        Opcode::SCSI_COMMAND => SCSI_COMMAND,
        Opcode::SCSI_RESPONSE => SCSI_RESPONSE,
        Opcode::TASK_MGMT_REQUEST => TASK_MGMT_REQUEST,
        Opcode::TASK_MGMT_RESPONSE => TASK_MGMT_RESPONSE,
        Opcode::LOGIN_REQUEST => LOGIN_REQUEST,
        Opcode::LOGIN_RESPONSE => LOGIN_RESPONSE,
        Opcode::TEXT_REQUEST => TEXT_REQUEST,
        Opcode::TEXT_RESPONSE => TEXT_RESPONSE,
        Opcode::DATA_OUT => DATA_OUT,
        Opcode::DATA_IN => DATA_IN,
        Opcode::LOGOUT_REQUEST => LOGOUT_REQUEST,
        Opcode::LOGOUT_RESPONSE => LOGOUT_RESPONSE,
        Opcode::SNACK_REQUEST => SNACK_REQUEST,
        Opcode::R2T => R2T,
        Opcode::ASYNC_MESSAGE => ASYNC_MESSAGE,
        Opcode::REJECT => REJECT,
        _ => &[],
    }
}

/// Every field of `op`: the common ones, then the opcode-specific ones.
pub fn all(op: Opcode) -> impl Iterator<Item = &'static Field> {
    COMMON.iter().chain(specific(op))
}

/// Finds a field of `op` by RFC name or alias. Also accepts `byteN` (one raw
/// byte at offset N, reserved or not) and `u32@N` (four bytes at N), so a
/// script can set any bit of a header.
pub fn lookup(op: Opcode, name: &str) -> Option<Field> {
    if let Some(f) = all(op).find(|f| f.name == name) {
        return Some(*f);
    }
    if let Some((_, real)) = ALIASES.iter().find(|(alias, _)| *alias == name)
        && let Some(f) = all(op).find(|f| f.name == *real)
    {
        return Some(*f);
    }
    let raw = |prefix: &str, len: u8| -> Option<Field> {
        let n: u8 = name.strip_prefix(prefix)?.parse().ok()?;
        (usize::from(n) + usize::from(len) <= crate::bhs::BHS_LEN).then_some(Field {
            name: "raw",
            offset: n,
            kind: FieldKind::Int { len },
        })
    };
    raw("byte", 1)
        .or_else(|| raw("u16@", 2))
        .or_else(|| raw("u32@", 4))
}

/// A reserved bit (or several in one byte) set in a received header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedBits {
    /// Byte offset in the BHS.
    pub offset: u8,
    /// The reserved bits of that byte that are set.
    pub bits: u8,
}

/// Every set bit the RFC reserves in this header. Empty for unknown opcodes,
/// whose layout nobody knows.
pub fn reserved_bits(bhs: &Bhs) -> Vec<ReservedBits> {
    let op = bhs.opcode();
    if op.name().is_none() {
        return Vec::new();
    }
    let mut defined = [0u8; crate::bhs::BHS_LEN];
    for f in all(op) {
        for (i, m) in f.coverage() {
            defined[i] |= m;
        }
    }
    bhs.0
        .iter()
        .zip(defined.iter())
        .enumerate()
        .filter_map(|(i, (b, d))| {
            let bits = b & !d;
            (bits != 0).then_some(ReservedBits {
                offset: i as u8,
                bits,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_overlap() {
        for op in Opcode::ALL {
            let mut seen = [0u8; 48];
            for f in all(op) {
                for (i, m) in f.coverage() {
                    assert_eq!(seen[i] & m, 0, "{op:?}: {} overlaps at byte {i}", f.name);
                    seen[i] |= m;
                }
            }
        }
    }

    #[test]
    fn read_write_round_trip() {
        let mut bhs = Bhs::new(Opcode::LOGIN_REQUEST);
        let isid = lookup(Opcode::LOGIN_REQUEST, "ISID").unwrap();
        isid.write(&mut bhs, 0x8000_1234_5678);
        assert_eq!(isid.read(&bhs), 0x8000_1234_5678);
        let nsg = lookup(Opcode::LOGIN_REQUEST, "NSG").unwrap();
        nsg.write(&mut bhs, 3);
        let csg = lookup(Opcode::LOGIN_REQUEST, "CSG").unwrap();
        csg.write(&mut bhs, 1);
        assert_eq!(bhs.0[1], 0x07);
        assert_eq!(nsg.read(&bhs), 3);
        assert_eq!(csg.read(&bhs), 1);
        // Truncation to the field's width.
        let tsih = lookup(Opcode::LOGIN_REQUEST, "TSIH").unwrap();
        tsih.write(&mut bhs, 0x1_2345);
        assert_eq!(tsih.read(&bhs), 0x2345);
        assert_eq!(
            isid.read(&bhs),
            0x8000_1234_5678,
            "TSIH write must not touch ISID"
        );
    }

    #[test]
    fn aliases_and_raw_bytes() {
        assert_eq!(lookup(Opcode::DATA_IN, "StatusPresent").unwrap().name, "S");
        assert_eq!(lookup(Opcode::R2T, "R2TSN").unwrap().offset, 36);
        let b = lookup(Opcode::NOP_OUT, "byte2").unwrap();
        assert_eq!(b.offset, 2);
        assert!(lookup(Opcode::NOP_OUT, "byte48").is_none());
        assert!(lookup(Opcode::NOP_OUT, "u32@45").is_none());
        assert!(lookup(Opcode::NOP_OUT, "Nonsense").is_none());
    }

    #[test]
    fn reserved_bits_are_reported() {
        let mut bhs = Bhs::new(Opcode::NOP_OUT);
        bhs.set_final(true);
        assert!(reserved_bits(&bhs).is_empty());
        bhs.0[2] = 0x10;
        bhs.0[1] |= 0x01;
        bhs.0[40] = 0xff;
        assert_eq!(
            reserved_bits(&bhs),
            vec![
                ReservedBits {
                    offset: 1,
                    bits: 0x01
                },
                ReservedBits {
                    offset: 2,
                    bits: 0x10
                },
                ReservedBits {
                    offset: 40,
                    bits: 0xff
                },
            ]
        );
        // Bit 7 of byte 0 is reserved in every PDU.
        let mut b = Bhs::new(Opcode::SCSI_COMMAND);
        b.0[0] |= 0x80;
        assert_eq!(
            reserved_bits(&b),
            vec![ReservedBits {
                offset: 0,
                bits: 0x80
            }]
        );
        // Unknown opcodes: no layout, nothing to report.
        let mut unknown = Bhs::new(Opcode(0x1c));
        unknown.0[2] = 0xff;
        assert!(reserved_bits(&unknown).is_empty());
    }
}
