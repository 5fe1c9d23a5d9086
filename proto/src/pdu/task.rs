//! Task Management Function Request (RFC 7143 §11.5) and Response (§11.6).

use crate::bhs::{Bhs, Lun, Opcode};

wire_newtype! {
    /// TMF function codes (§11.5.1).
    pub struct TmfFunction(u8) {
        ABORT_TASK = 1 => "AbortTask",
        ABORT_TASK_SET = 2 => "AbortTaskSet",
        CLEAR_ACA = 3 => "ClearAca",
        CLEAR_TASK_SET = 4 => "ClearTaskSet",
        LOGICAL_UNIT_RESET = 5 => "LogicalUnitReset",
        TARGET_WARM_RESET = 6 => "TargetWarmReset",
        TARGET_COLD_RESET = 7 => "TargetColdReset",
        TASK_REASSIGN = 8 => "TaskReassign",
        QUERY_TASK = 9 => "QueryTask",
        QUERY_TASK_SET = 10 => "QueryTaskSet",
        I_T_NEXUS_RESET = 11 => "ItNexusReset",
        QUERY_ASYNC_EVENT = 12 => "QueryAsyncEvent",
    }
}

wire_newtype! {
    /// TMF response codes (§11.6.1).
    pub struct TmfResponse(u8) {
        FUNCTION_COMPLETE = 0 => "FunctionComplete",
        TASK_DOES_NOT_EXIST = 1 => "TaskDoesNotExist",
        LUN_DOES_NOT_EXIST = 2 => "LunDoesNotExist",
        TASK_STILL_ALLEGIANT = 3 => "TaskStillAllegiant",
        REASSIGNMENT_NOT_SUPPORTED = 4 => "TaskAllegianceReassignmentNotSupported",
        FUNCTION_NOT_SUPPORTED = 5 => "TaskManagementFunctionNotSupported",
        AUTHORIZATION_FAILED = 6 => "FunctionAuthorizationFailed",
        FUNCTION_SUCCEEDED = 7 => "FunctionSucceeded",
        FUNCTION_REJECTED = 255 => "FunctionRejected",
    }
}

/// Task Management Function Request, initiator → target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    pub function: TmfFunction,
    pub lun: Lun,
    pub itt: u32,
    /// ITT of the task to abort (ABORT TASK, QUERY TASK); 0xffffffff otherwise.
    pub referenced_task_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// CmdSN of the referenced task, or of this TMF when none is referenced.
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

impl TaskMgmtRequest {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_immediate(self.immediate);
        b.0[1] = 0x80 | (self.function.0 & 0x7f);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.referenced_task_tag);
        b.set_u32_at(24, self.cmd_sn);
        b.set_u32_at(28, self.exp_stat_sn);
        b.set_u32_at(32, self.ref_cmd_sn);
        b.set_u32_at(36, self.exp_data_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        TaskMgmtRequest {
            immediate: b.immediate(),
            function: TmfFunction(b.0[1] & 0x7f),
            lun: b.lun(),
            itt: b.itt(),
            referenced_task_tag: b.u32_at(20),
            cmd_sn: b.u32_at(24),
            exp_stat_sn: b.u32_at(28),
            ref_cmd_sn: b.u32_at(32),
            exp_data_sn: b.u32_at(36),
        }
    }

    pub const OPCODE: Opcode = Opcode::TASK_MGMT_REQUEST;
}

/// Task Management Function Response, target → initiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    pub response: TmfResponse,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl TaskMgmtResponse {
    pub fn encode(&self, b: &mut Bhs) {
        b.set_final(true);
        b.0[2] = self.response.0;
        b.set_itt(self.itt);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        TaskMgmtResponse {
            response: TmfResponse(b.0[2]),
            itt: b.itt(),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
        }
    }

    pub const OPCODE: Opcode = Opcode::TASK_MGMT_RESPONSE;
}
