//! SCSI Data-Out (RFC 7143 §11.7), SCSI Data-In (§11.7) and Ready To
//! Transfer (§11.8).
//!
//! Write data flows as immediate data (in the SCSI Command), unsolicited
//! Data-Out (TTT 0xffffffff, up to FirstBurstLength) and solicited Data-Out
//! answering an R2T. DataSN counts PDUs within each sequence; BufferOffset
//! places the segment in the task's buffer. Read data flows as Data-In, whose
//! last PDU may carry the status (S bit) when it is GOOD.

use crate::bhs::{Bhs, Lun, Opcode};

use super::scsi::Residual;

/// SCSI Data-Out, initiator → target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataOut {
    /// F: last PDU of this sequence (of the R2T's burst or the unsolicited burst).
    pub final_bit: bool,
    pub lun: Lun,
    pub itt: u32,
    /// The R2T's TTT, or 0xffffffff for unsolicited data.
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

impl DataOut {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(self.final_bit);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(28, self.exp_stat_sn);
        b.set_u32_at(36, self.data_sn);
        b.set_u32_at(40, self.buffer_offset);
    }

    pub fn decode(b: &Bhs) -> Self {
        DataOut {
            final_bit: b.final_bit(),
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            exp_stat_sn: b.u32_at(28),
            data_sn: b.u32_at(36),
            buffer_offset: b.u32_at(40),
        }
    }

    pub const OPCODE: Opcode = Opcode::DATA_OUT;
}

/// SCSI Data-In, target → initiator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataIn {
    pub final_bit: bool,
    /// A: the target asks for a DataACK SNACK (ERL > 0 only).
    pub acknowledge: bool,
    /// S: this PDU carries the command's status; requires F.
    pub status: Option<u8>,
    /// Residual, meaningful only with S.
    pub residual: Residual,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    /// StatSN, meaningful only with S.
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

impl DataIn {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(self.final_bit);
        b.set_bit(1, 0x40, self.acknowledge);
        if let Some(status) = self.status {
            b.set_bit(1, 0x01, true);
            b.0[3] = status;
            self.residual.encode(b);
        }
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
        b.set_u32_at(36, self.data_sn);
        b.set_u32_at(40, self.buffer_offset);
    }

    pub fn decode(b: &Bhs) -> Self {
        let has_status = b.0[1] & 0x01 != 0;
        DataIn {
            final_bit: b.final_bit(),
            acknowledge: b.0[1] & 0x40 != 0,
            status: has_status.then_some(b.0[3]),
            residual: Residual::decode(b),
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
            data_sn: b.u32_at(36),
            buffer_offset: b.u32_at(40),
        }
    }

    pub const OPCODE: Opcode = Opcode::DATA_IN;
}

/// Ready To Transfer (§11.8), target → initiator: "send me
/// `desired_data_transfer_length` bytes at `buffer_offset`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct R2t {
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_data_transfer_length: u32,
}

impl R2t {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(true);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
        b.set_u32_at(36, self.r2t_sn);
        b.set_u32_at(40, self.buffer_offset);
        b.set_u32_at(44, self.desired_data_transfer_length);
    }

    pub fn decode(b: &Bhs) -> Self {
        R2t {
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
            r2t_sn: b.u32_at(36),
            buffer_offset: b.u32_at(40),
            desired_data_transfer_length: b.u32_at(44),
        }
    }

    pub const OPCODE: Opcode = Opcode::R2T;
}
