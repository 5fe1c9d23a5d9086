//! NOP-Out (RFC 7143 §11.18) and NOP-In (§11.19): pings in either direction.
//!
//! An initiator NOP-Out with a valid ITT asks for a NOP-In echoing its data;
//! with ITT 0xffffffff it only carries ExpStatSN (and, when it answers a
//! target's NOP-In, the TTT). A target NOP-In with a TTT other than
//! 0xffffffff asks for a NOP-Out echo.

use crate::bhs::{Bhs, Lun, Opcode};

/// NOP-Out, initiator → target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl NopOut {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_immediate(self.immediate);
        b.set_final(true);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(24, self.cmd_sn);
        b.set_u32_at(28, self.exp_stat_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        NopOut {
            immediate: b.immediate(),
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            cmd_sn: b.u32_at(24),
            exp_stat_sn: b.u32_at(28),
        }
    }

    pub const OPCODE: Opcode = Opcode::NOP_OUT;
}

/// NOP-In, target → initiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NopIn {
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl NopIn {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(true);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        NopIn {
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
        }
    }

    pub const OPCODE: Opcode = Opcode::NOP_IN;
}
