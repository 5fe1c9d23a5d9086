//! The Basic Header Segment (RFC 7143 §11.2.1) as raw bytes.
//!
//! Every iSCSI PDU starts with a 48-byte BHS. Bytes 0..8 and 16..20 have the
//! same meaning in every PDU (opcode, I and F bits, TotalAHSLength,
//! DataSegmentLength, ITT); the rest depends on the opcode and is read by the
//! typed PDUs in [`crate::pdu`]. [`Bhs`] keeps all 48 bytes, so a header the
//! typed layer does not understand — an unknown opcode, a reserved bit set —
//! is still carried, reported and echoed (a Reject carries the offending
//! header verbatim, §11.17).

use std::fmt;

/// Length of the Basic Header Segment in bytes.
pub const BHS_LEN: usize = 48;

/// The reserved Initiator/Target Task Tag value, `0xffffffff` (§11.2.1.8):
/// "no task" in an ITT, "no answer wanted" in a TTT.
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// The 48 bytes of a Basic Header Segment.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl Default for Bhs {
    fn default() -> Self {
        Bhs([0; BHS_LEN])
    }
}

impl Bhs {
    /// A zeroed header with the given opcode.
    pub fn new(opcode: Opcode) -> Self {
        let mut b = Bhs::default();
        b.set_opcode(opcode);
        b
    }

    /// The header of a received buffer, if it holds at least 48 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let head: [u8; BHS_LEN] = bytes.get(..BHS_LEN)?.try_into().ok()?;
        Some(Bhs(head))
    }

    pub fn as_bytes(&self) -> &[u8; BHS_LEN] {
        &self.0
    }

    /// Opcode, bits 0..5 of byte 0.
    pub fn opcode(&self) -> Opcode {
        Opcode(self.0[0] & 0x3f)
    }

    pub fn set_opcode(&mut self, op: Opcode) {
        self.0[0] = (self.0[0] & 0xc0) | (op.0 & 0x3f);
    }

    /// The I (immediate delivery) bit, only meaningful on initiator PDUs.
    pub fn immediate(&self) -> bool {
        self.0[0] & 0x40 != 0
    }

    pub fn set_immediate(&mut self, on: bool) {
        self.set_bit(0, 0x40, on);
    }

    /// The F (final) bit: bit 7 of byte 1 for most opcodes.
    pub fn final_bit(&self) -> bool {
        self.0[1] & 0x80 != 0
    }

    pub fn set_final(&mut self, on: bool) {
        self.set_bit(1, 0x80, on);
    }

    /// TotalAHSLength in 4-byte words (byte 4).
    pub fn total_ahs_words(&self) -> u8 {
        self.0[4]
    }

    pub fn set_total_ahs_words(&mut self, words: u8) {
        self.0[4] = words;
    }

    /// DataSegmentLength in bytes, excluding padding (bytes 5..8).
    pub fn data_segment_len(&self) -> u32 {
        u32::from_be_bytes([0, self.0[5], self.0[6], self.0[7]])
    }

    /// Sets DataSegmentLength; values above 2^24-1 are truncated to 24 bits,
    /// which is all the field can carry.
    pub fn set_data_segment_len(&mut self, len: u32) {
        let b = len.to_be_bytes();
        self.0[5..8].copy_from_slice(&b[1..4]);
    }

    /// Bytes 8..16: the LUN for PDUs that carry one, other fields otherwise.
    pub fn lun(&self) -> Lun {
        Lun(self.u64_at(8))
    }

    pub fn set_lun(&mut self, lun: Lun) {
        self.set_u64_at(8, lun.0);
    }

    /// Initiator Task Tag (bytes 16..20).
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }

    pub fn set_itt(&mut self, itt: u32) {
        self.set_u32_at(16, itt);
    }

    /// A big-endian u16 at `at`; `at` must be ≤ 46 (a programming error otherwise).
    pub fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.0[at], self.0[at + 1]])
    }

    /// A big-endian u32 at `at`; `at` must be ≤ 44.
    pub fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }

    /// A big-endian u64 at `at`; `at` must be ≤ 40.
    pub fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_be_bytes(b)
    }

    pub fn set_u16_at(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_u32_at(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_u64_at(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets or clears `mask` in byte `at`.
    pub fn set_bit(&mut self, at: usize, mask: u8, on: bool) {
        if on {
            self.0[at] |= mask;
        } else {
            self.0[at] &= !mask;
        }
    }
}

impl fmt::Debug for Bhs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bhs({:?} ", self.opcode())?;
        for (i, chunk) in self.0.chunks(4).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            for b in chunk {
                write!(f, "{b:02x}")?;
            }
        }
        f.write_str(")")
    }
}

/// An iSCSI opcode (RFC 7143 §11.2.1.2), the low six bits of byte 0.
///
/// A newtype rather than an enum: a conformance tool must be able to send and
/// report opcodes the standard does not define.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Opcode(pub u8);

impl Opcode {
    // Initiator opcodes.
    pub const NOP_OUT: Opcode = Opcode(0x00);
    pub const SCSI_COMMAND: Opcode = Opcode(0x01);
    pub const TASK_MGMT_REQUEST: Opcode = Opcode(0x02);
    pub const LOGIN_REQUEST: Opcode = Opcode(0x03);
    pub const TEXT_REQUEST: Opcode = Opcode(0x04);
    pub const DATA_OUT: Opcode = Opcode(0x05);
    pub const LOGOUT_REQUEST: Opcode = Opcode(0x06);
    pub const SNACK_REQUEST: Opcode = Opcode(0x10);
    // Target opcodes.
    pub const NOP_IN: Opcode = Opcode(0x20);
    pub const SCSI_RESPONSE: Opcode = Opcode(0x21);
    pub const TASK_MGMT_RESPONSE: Opcode = Opcode(0x22);
    pub const LOGIN_RESPONSE: Opcode = Opcode(0x23);
    pub const TEXT_RESPONSE: Opcode = Opcode(0x24);
    pub const DATA_IN: Opcode = Opcode(0x25);
    pub const LOGOUT_RESPONSE: Opcode = Opcode(0x26);
    pub const R2T: Opcode = Opcode(0x31);
    pub const ASYNC_MESSAGE: Opcode = Opcode(0x32);
    pub const REJECT: Opcode = Opcode(0x3f);

    /// The RFC name of a known opcode.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Opcode::NOP_OUT => "NopOut",
            Opcode::SCSI_COMMAND => "ScsiCommand",
            Opcode::TASK_MGMT_REQUEST => "TaskMgmtRequest",
            Opcode::LOGIN_REQUEST => "LoginRequest",
            Opcode::TEXT_REQUEST => "TextRequest",
            Opcode::DATA_OUT => "DataOut",
            Opcode::LOGOUT_REQUEST => "LogoutRequest",
            Opcode::SNACK_REQUEST => "SnackRequest",
            Opcode::NOP_IN => "NopIn",
            Opcode::SCSI_RESPONSE => "ScsiResponse",
            Opcode::TASK_MGMT_RESPONSE => "TaskMgmtResponse",
            Opcode::LOGIN_RESPONSE => "LoginResponse",
            Opcode::TEXT_RESPONSE => "TextResponse",
            Opcode::DATA_IN => "DataIn",
            Opcode::LOGOUT_RESPONSE => "LogoutResponse",
            Opcode::R2T => "R2t",
            Opcode::ASYNC_MESSAGE => "AsyncMessage",
            Opcode::REJECT => "Reject",
            _ => return None,
        })
    }

    /// Every opcode RFC 7143 defines.
    pub const ALL: [Opcode; 18] = [
        Opcode::NOP_OUT,
        Opcode::SCSI_COMMAND,
        Opcode::TASK_MGMT_REQUEST,
        Opcode::LOGIN_REQUEST,
        Opcode::TEXT_REQUEST,
        Opcode::DATA_OUT,
        Opcode::LOGOUT_REQUEST,
        Opcode::SNACK_REQUEST,
        Opcode::NOP_IN,
        Opcode::SCSI_RESPONSE,
        Opcode::TASK_MGMT_RESPONSE,
        Opcode::LOGIN_RESPONSE,
        Opcode::TEXT_RESPONSE,
        Opcode::DATA_IN,
        Opcode::LOGOUT_RESPONSE,
        Opcode::R2T,
        Opcode::ASYNC_MESSAGE,
        Opcode::REJECT,
    ];

    /// Looks an opcode up by its RFC name (as printed by [`Opcode::name`]).
    pub fn from_name(name: &str) -> Option<Opcode> {
        Opcode::ALL.into_iter().find(|op| op.name() == Some(name))
    }

    /// Opcodes 0x00..0x1f are sent by initiators, 0x20..0x3f by targets.
    pub fn is_initiator(self) -> bool {
        self.0 < 0x20
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Opcode({:#04x})", self.0),
        }
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An 8-byte SCSI logical unit number as carried in the BHS (SAM-5 §4.7).
///
/// Kept raw so any addressing method survives; [`Lun::from_index`] and
/// [`Lun::index`] cover the peripheral (single level, < 256) and flat
/// (< 16384) methods that real initiators use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Lun(pub u64);

impl Lun {
    /// The LUN for a logical unit number: peripheral addressing below 256,
    /// flat addressing up to 16383. Larger numbers are truncated to 14 bits.
    pub fn from_index(n: u16) -> Lun {
        if n < 256 {
            Lun(u64::from(n) << 48)
        } else {
            Lun((0x4000 | u64::from(n & 0x3fff)) << 48)
        }
    }

    /// The logical unit number, if the LUN uses single-level peripheral or
    /// flat addressing with the remaining levels zero.
    pub fn index(self) -> Option<u16> {
        let first = (self.0 >> 48) as u16;
        if self.0 & 0x0000_ffff_ffff_ffff != 0 {
            return None;
        }
        match first >> 14 {
            0b00 if first >> 8 == 0 => Some(first & 0xff),
            0b01 => Some(first & 0x3fff),
            _ => None,
        }
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(b: [u8; 8]) -> Lun {
        Lun(u64::from_be_bytes(b))
    }
}

impl fmt::Debug for Lun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index() {
            Some(n) => write!(f, "Lun({n})"),
            None => write!(f, "Lun({:#018x})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_fields_round_trip() {
        let mut b = Bhs::new(Opcode::SCSI_COMMAND);
        b.set_immediate(true);
        b.set_final(true);
        b.set_total_ahs_words(3);
        b.set_data_segment_len(0x12_3456);
        b.set_lun(Lun::from_index(7));
        b.set_itt(0xdead_beef);
        assert_eq!(b.opcode(), Opcode::SCSI_COMMAND);
        assert!(b.immediate());
        assert!(b.final_bit());
        assert_eq!(b.total_ahs_words(), 3);
        assert_eq!(b.data_segment_len(), 0x12_3456);
        assert_eq!(b.lun(), Lun::from_index(7));
        assert_eq!(b.itt(), 0xdead_beef);
        assert_eq!(&b.0[..8], &[0x41, 0x80, 0, 0, 3, 0x12, 0x34, 0x56]);
        b.set_immediate(false);
        assert_eq!(b.0[0], 0x01);
    }

    #[test]
    fn data_segment_len_is_24_bits() {
        let mut b = Bhs::default();
        b.set_data_segment_len(0x0100_0001);
        assert_eq!(b.data_segment_len(), 1);
        assert_eq!(b.0[4], 0, "must not spill into TotalAHSLength");
    }

    #[test]
    fn lun_addressing() {
        assert_eq!(Lun::from_index(0).0, 0);
        assert_eq!(Lun::from_index(1).to_bytes(), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Lun::from_index(300).to_bytes(),
            [0x41, 0x2c, 0, 0, 0, 0, 0, 0]
        );
        for n in [0u16, 1, 255, 256, 4095, 16383] {
            assert_eq!(Lun::from_index(n).index(), Some(n));
        }
        assert_eq!(Lun(0x0001_0000_0000_0001).index(), None);
        assert_eq!(Lun(0x8000_0000_0000_0000).index(), None);
    }

    #[test]
    fn unknown_opcode_prints_hex() {
        assert_eq!(format!("{:?}", Opcode(0x1c)), "Opcode(0x1c)");
        assert_eq!(format!("{:?}", Opcode::R2T), "R2t");
        assert_eq!(Opcode::from_name("DataIn"), Some(Opcode::DATA_IN));
    }
}
