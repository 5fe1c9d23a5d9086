//! Text Request (RFC 7143 §11.10) and Text Response (§11.11): key=value
//! exchanges in full feature phase and in discovery sessions (SendTargets).

use crate::bhs::{Bhs, Lun, Opcode};

/// Text Request, initiator → target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_bit: bool,
    pub continue_bit: bool,
    pub lun: Lun,
    pub itt: u32,
    /// 0xffffffff to start a negotiation, the target's TTT to continue one.
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl TextRequest {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_immediate(self.immediate);
        b.set_final(self.final_bit);
        b.set_bit(1, 0x40, self.continue_bit);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(24, self.cmd_sn);
        b.set_u32_at(28, self.exp_stat_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        TextRequest {
            immediate: b.immediate(),
            final_bit: b.final_bit(),
            continue_bit: b.0[1] & 0x40 != 0,
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            cmd_sn: b.u32_at(24),
            exp_stat_sn: b.u32_at(28),
        }
    }

    pub const OPCODE: Opcode = Opcode::TEXT_REQUEST;
}

/// Text Response, target → initiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextResponse {
    pub final_bit: bool,
    pub continue_bit: bool,
    pub lun: Lun,
    pub itt: u32,
    /// 0xffffffff when the exchange is complete, else a tag the initiator
    /// echoes to fetch the rest.
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl TextResponse {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(self.final_bit);
        b.set_bit(1, 0x40, self.continue_bit);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        TextResponse {
            final_bit: b.final_bit(),
            continue_bit: b.0[1] & 0x40 != 0,
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
        }
    }

    pub const OPCODE: Opcode = Opcode::TEXT_RESPONSE;
}
