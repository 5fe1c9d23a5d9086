//! The remaining PDUs: SNACK Request (RFC 7143 §11.16), Asynchronous Message
//! (§11.9) and Reject (§11.17).

use crate::bhs::{Bhs, Lun, Opcode, RESERVED_TAG};

wire_newtype! {
    /// SNACK types (§11.16.1).
    pub struct SnackType(u8) {
        DATA_R2T = 0 => "DataR2T",
        STATUS = 1 => "Status",
        DATA_ACK = 2 => "DataACK",
        R_DATA = 3 => "R-Data",
    }
}

wire_newtype! {
    /// Asynchronous event codes (§11.9.1).
    pub struct AsyncEvent(u8) {
        SCSI_ASYNC_EVENT = 0 => "ScsiAsyncEvent",
        LOGOUT_REQUEST = 1 => "TargetRequestsLogout",
        CONNECTION_DROP = 2 => "TargetWillDropConnection",
        SESSION_DROP = 3 => "TargetWillDropAllConnections",
        NEGOTIATION_REQUEST = 4 => "TargetRequestsNegotiation",
        TASK_TERMINATION = 5 => "TaskTermination",
        VENDOR_SPECIFIC = 255 => "VendorSpecific",
    }
}

wire_newtype! {
    /// Reject reasons (§11.17.1).
    pub struct RejectReason(u8) {
        DATA_DIGEST_ERROR = 0x02 => "DataDigestError",
        SNACK_REJECT = 0x03 => "SnackReject",
        PROTOCOL_ERROR = 0x04 => "ProtocolError",
        COMMAND_NOT_SUPPORTED = 0x05 => "CommandNotSupported",
        IMMEDIATE_COMMAND_REJECT = 0x06 => "ImmediateCommandReject",
        TASK_IN_PROGRESS = 0x07 => "TaskInProgress",
        INVALID_DATA_ACK = 0x08 => "InvalidDataAck",
        INVALID_PDU_FIELD = 0x09 => "InvalidPduField",
        LONG_OPERATION_REJECT = 0x0a => "LongOperationReject",
        NEGOTIATION_RESET = 0x0b => "NegotiationReset",
        WAITING_FOR_LOGOUT = 0x0c => "WaitingForLogout",
    }
}

/// SNACK Request, initiator → target (ERL ≥ 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnackRequest {
    pub snack_type: SnackType,
    pub lun: Lun,
    pub itt: u32,
    /// TTT for DataACK, SNACK Tag for R-Data, else 0xffffffff.
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

impl SnackRequest {
    pub fn encode(&self, b: &mut Bhs) {
        b.0[1] = 0x80 | (self.snack_type.0 & 0x0f);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(28, self.exp_stat_sn);
        b.set_u32_at(40, self.beg_run);
        b.set_u32_at(44, self.run_length);
    }

    pub fn decode(b: &Bhs) -> Self {
        SnackRequest {
            snack_type: SnackType(b.0[1] & 0x0f),
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            exp_stat_sn: b.u32_at(28),
            beg_run: b.u32_at(40),
            run_length: b.u32_at(44),
        }
    }

    pub const OPCODE: Opcode = Opcode::SNACK_REQUEST;
}

/// Asynchronous Message, target → initiator. ITT is always 0xffffffff; for
/// SCSI async events the data segment carries sense data like a SCSI
/// Response does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: Lun,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub event: AsyncEvent,
    pub vcode: u8,
    pub parameter1: u16,
    pub parameter2: u16,
    pub parameter3: u16,
}

impl AsyncMessage {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(true);
        b.set_lun(self.lun);
        b.set_itt(RESERVED_TAG);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
        b.0[36] = self.event.0;
        b.0[37] = self.vcode;
        b.set_u16_at(38, self.parameter1);
        b.set_u16_at(40, self.parameter2);
        b.set_u16_at(42, self.parameter3);
    }

    pub fn decode(b: &Bhs) -> Self {
        AsyncMessage {
            lun: b.lun(),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
            event: AsyncEvent(b.0[36]),
            vcode: b.0[37],
            parameter1: b.u16_at(38),
            parameter2: b.u16_at(40),
            parameter3: b.u16_at(42),
        }
    }

    pub const OPCODE: Opcode = Opcode::ASYNC_MESSAGE;
}

/// Reject, target → initiator. The data segment is the complete header
/// (BHS) of the rejected PDU (§11.17.3); ITT is 0xffffffff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// DataSN/R2TSN, for SNACK rejects only.
    pub data_sn: u32,
}

impl Reject {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(true);
        b.0[2] = self.reason.0;
        b.set_itt(RESERVED_TAG);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
        b.set_u32_at(36, self.data_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        Reject {
            reason: RejectReason(b.0[2]),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
            data_sn: b.u32_at(36),
        }
    }

    pub const OPCODE: Opcode = Opcode::REJECT;
}
