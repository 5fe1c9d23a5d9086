//! SCSI Command (RFC 7143 §11.3) and SCSI Response (§11.4).
//!
//! The command carries a CDB of up to 16 bytes in the BHS (longer CDBs put
//! the rest in an Extended CDB AHS, see [`super::ahs`]) and optionally
//! immediate data. The response carries status, residuals and, on CHECK
//! CONDITION, sense data in the data segment behind a two-byte length
//! (§11.4.7.2).

use bytes::{BufMut, Bytes, BytesMut};

use crate::bhs::{Bhs, Lun, Opcode};

wire_newtype! {
    /// Task attribute of a SCSI Command (§11.3.1, SAM-5).
    pub struct TaskAttr(u8) {
        UNTAGGED = 0 => "Untagged",
        SIMPLE = 1 => "Simple",
        ORDERED = 2 => "Ordered",
        HEAD_OF_QUEUE = 3 => "HeadOfQueue",
        ACA = 4 => "ACA",
    }
}

wire_newtype! {
    /// The Response field of a SCSI Response (§11.4.3): whether the target
    /// completed the command at all. SCSI status is separate.
    pub struct ScsiResponseCode(u8) {
        COMMAND_COMPLETED = 0x00 => "CommandCompletedAtTarget",
        TARGET_FAILURE = 0x01 => "TargetFailure",
    }
}

/// SCSI Command, initiator → target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    /// F: no unsolicited Data-Out follows (§11.3.1.1).
    pub final_bit: bool,
    /// R: the command reads (Data-In expected).
    pub read: bool,
    /// W: the command writes (Data-Out expected).
    pub write: bool,
    pub attr: TaskAttr,
    pub lun: Lun,
    pub itt: u32,
    pub expected_data_transfer_length: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// The first 16 bytes of the CDB, zero-padded.
    pub cdb: [u8; 16],
}

impl Default for ScsiCommand {
    fn default() -> Self {
        ScsiCommand {
            immediate: false,
            final_bit: true,
            read: false,
            write: false,
            attr: TaskAttr::SIMPLE,
            lun: Lun(0),
            itt: 0,
            expected_data_transfer_length: 0,
            cmd_sn: 0,
            exp_stat_sn: 0,
            cdb: [0; 16],
        }
    }
}

impl ScsiCommand {
    /// Copies a CDB of up to 16 bytes into the header (longer CDBs need an
    /// Extended CDB AHS for the remainder).
    pub fn set_cdb(&mut self, cdb: &[u8]) {
        self.cdb = [0; 16];
        let n = cdb.len().min(16);
        self.cdb[..n].copy_from_slice(&cdb[..n]);
    }

    pub fn encode(&self, b: &mut Bhs) {
        b.set_immediate(self.immediate);
        b.set_final(self.final_bit);
        b.set_bit(1, 0x40, self.read);
        b.set_bit(1, 0x20, self.write);
        b.0[1] = (b.0[1] & !0x07) | (self.attr.0 & 0x07);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.expected_data_transfer_length);
        b.set_u32_at(24, self.cmd_sn);
        b.set_u32_at(28, self.exp_stat_sn);
        b.0[32..48].copy_from_slice(&self.cdb);
    }

    pub fn decode(b: &Bhs) -> Self {
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&b.0[32..48]);
        ScsiCommand {
            immediate: b.immediate(),
            final_bit: b.final_bit(),
            read: b.0[1] & 0x40 != 0,
            write: b.0[1] & 0x20 != 0,
            attr: TaskAttr(b.0[1] & 0x07),
            lun: b.lun(),
            itt: b.itt(),
            expected_data_transfer_length: b.u32_at(20),
            cmd_sn: b.u32_at(24),
            exp_stat_sn: b.u32_at(28),
            cdb,
        }
    }

    pub const OPCODE: Opcode = Opcode::SCSI_COMMAND;
}

/// Residual flags shared by SCSI Response and Data-In (§11.4.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Residual {
    #[default]
    None,
    /// O: the target had more data than ExpectedDataTransferLength allowed;
    /// the count is what did not fit.
    Overflow(u32),
    /// U: less data than expected was transferred; the count is the shortfall.
    Underflow(u32),
}

impl Residual {
    /// The residual for a command that wanted to move `wanted` bytes when the
    /// initiator expected `expected`.
    pub fn of(expected: u32, wanted: u32) -> Residual {
        match wanted.cmp(&expected) {
            std::cmp::Ordering::Equal => Residual::None,
            std::cmp::Ordering::Greater => Residual::Overflow(wanted - expected),
            std::cmp::Ordering::Less => Residual::Underflow(expected - wanted),
        }
    }

    pub fn count(self) -> u32 {
        match self {
            Residual::None => 0,
            Residual::Overflow(n) | Residual::Underflow(n) => n,
        }
    }

    /// Writes the O/U bits of byte 1 and the count at byte 44.
    pub fn encode(self, b: &mut Bhs) {
        b.set_bit(1, 0x04, matches!(self, Residual::Overflow(_)));
        b.set_bit(1, 0x02, matches!(self, Residual::Underflow(_)));
        b.set_u32_at(44, self.count());
    }

    /// Reads O/U and the count. Both bits set is a protocol error the
    /// caller may want to see, so it is reported as overflow and left to
    /// [`super::fields::Field`]-level checks.
    pub fn decode(b: &Bhs) -> Residual {
        let count = b.u32_at(44);
        if b.0[1] & 0x04 != 0 {
            Residual::Overflow(count)
        } else if b.0[1] & 0x02 != 0 {
            Residual::Underflow(count)
        } else {
            Residual::None
        }
    }
}

/// SCSI Response, target → initiator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScsiResponse {
    pub itt: u32,
    pub response: ScsiResponseCode,
    /// SCSI status (see [`crate::scsi`]); valid when `response` is
    /// COMMAND_COMPLETED.
    pub status: u8,
    pub residual: Residual,
    /// Bidirectional read residual (o/u bits).
    pub bidi_residual: Residual,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
}

impl ScsiResponse {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(true);
        self.residual.encode(b);
        b.set_bit(1, 0x10, matches!(self.bidi_residual, Residual::Overflow(_)));
        b.set_bit(
            1,
            0x08,
            matches!(self.bidi_residual, Residual::Underflow(_)),
        );
        b.set_u32_at(40, self.bidi_residual.count());
        b.0[2] = self.response.0;
        b.0[3] = self.status;
        b.set_itt(self.itt);
        b.set_u32_at(20, self.snack_tag);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
        b.set_u32_at(36, self.exp_data_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        let bidi_count = b.u32_at(40);
        let bidi_residual = if b.0[1] & 0x10 != 0 {
            Residual::Overflow(bidi_count)
        } else if b.0[1] & 0x08 != 0 {
            Residual::Underflow(bidi_count)
        } else {
            Residual::None
        };
        ScsiResponse {
            itt: b.itt(),
            response: ScsiResponseCode(b.0[2]),
            status: b.0[3],
            residual: Residual::decode(b),
            bidi_residual,
            snack_tag: b.u32_at(20),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
            exp_data_sn: b.u32_at(36),
        }
    }

    pub const OPCODE: Opcode = Opcode::SCSI_RESPONSE;
}

/// The data segment of a SCSI Response carrying sense data: a two-byte
/// SenseLength, then the sense bytes (§11.4.7.2).
pub fn encode_sense_segment(sense: &[u8]) -> Bytes {
    let len = sense.len().min(usize::from(u16::MAX));
    let mut b = BytesMut::with_capacity(2 + len);
    b.put_u16(len as u16);
    b.put_slice(&sense[..len]);
    b.freeze()
}

/// A SCSI Response data segment whose SenseLength does not fit in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SCSI Response sense length {sense_len} exceeds its data segment ({segment_len} bytes)")]
pub struct SenseSegmentError {
    pub sense_len: usize,
    pub segment_len: usize,
}

/// The sense bytes of a SCSI Response data segment; `None` when the
/// segment is empty (no sense data).
pub fn decode_sense_segment(data: &[u8]) -> Result<Option<&[u8]>, SenseSegmentError> {
    if data.is_empty() {
        return Ok(None);
    }
    let bad = SenseSegmentError {
        sense_len: 0,
        segment_len: data.len(),
    };
    let [hi, lo, rest @ ..] = data else {
        return Err(bad);
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    rest.get(..len).map(Some).ok_or(SenseSegmentError {
        sense_len: len,
        ..bad
    })
}
