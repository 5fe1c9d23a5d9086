//! Logout Request (RFC 7143 §11.14) and Logout Response (§11.15).

use crate::bhs::{Bhs, Opcode};

wire_newtype! {
    /// Logout reason codes (§11.14.1).
    pub struct LogoutReason(u8) {
        CLOSE_SESSION = 0 => "CloseSession",
        CLOSE_CONNECTION = 1 => "CloseConnection",
        REMOVE_FOR_RECOVERY = 2 => "RemoveConnectionForRecovery",
    }
}

wire_newtype! {
    /// Logout response codes (§11.15.1).
    pub struct LogoutResponseCode(u8) {
        SUCCESS = 0 => "ClosedSuccessfully",
        CID_NOT_FOUND = 1 => "CidNotFound",
        RECOVERY_NOT_SUPPORTED = 2 => "ConnectionRecoveryNotSupported",
        CLEANUP_FAILED = 3 => "CleanupFailed",
    }
}

/// Logout Request, initiator → target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason: LogoutReason,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl LogoutRequest {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_immediate(self.immediate);
        b.0[1] = 0x80 | (self.reason.0 & 0x7f);
        b.set_itt(self.itt);
        b.set_u16_at(20, self.cid);
        b.set_u32_at(24, self.cmd_sn);
        b.set_u32_at(28, self.exp_stat_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        LogoutRequest {
            immediate: b.immediate(),
            reason: LogoutReason(b.0[1] & 0x7f),
            itt: b.itt(),
            cid: b.u16_at(20),
            cmd_sn: b.u32_at(24),
            exp_stat_sn: b.u32_at(28),
        }
    }

    pub const OPCODE: Opcode = Opcode::LOGOUT_REQUEST;
}

/// Logout Response, target → initiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutResponse {
    pub response: LogoutResponseCode,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

impl LogoutResponse {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(true);
        b.0[2] = self.response.0;
        b.set_itt(self.itt);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
        b.set_u16_at(40, self.time2wait);
        b.set_u16_at(42, self.time2retain);
    }

    pub fn decode(b: &Bhs) -> Self {
        LogoutResponse {
            response: LogoutResponseCode(b.0[2]),
            itt: b.itt(),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
            time2wait: b.u16_at(40),
            time2retain: b.u16_at(42),
        }
    }

    pub const OPCODE: Opcode = Opcode::LOGOUT_RESPONSE;
}
