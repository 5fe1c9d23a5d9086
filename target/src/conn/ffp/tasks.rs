//! Task management functions (§11.5, §4.2.3): abort, task set and LU
//! resets, queries.

use super::{After, Fatal, FullFeature, SessionKind};
use crate::scsi::NexusEnd;
use bytes::Bytes;
use iesp_proto::pdu::{Pdu, TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse};
use iesp_proto::serial;

impl FullFeature {
    pub(super) fn task_management(&mut self, tmf: TaskMgmtRequest) -> Result<After, Fatal> {
        let mut after = After::Continue;
        let lun_exists = self.luns.get(tmf.lun).is_some();
        let response = match tmf.function {
            _ if self.kind == SessionKind::Discovery => TmfResponse::FUNCTION_REJECTED,
            TmfFunction::ABORT_TASK => {
                let r = tmf.referenced_task_tag;
                if self.tasks.remove(&r).is_some() {
                    TmfResponse::FUNCTION_COMPLETE
                } else if let Some(sn) = self
                    .held
                    .iter()
                    .find(|(_, f)| f.bhs.itt() == r)
                    .map(|(sn, _)| *sn)
                {
                    self.held.remove(&sn);
                    self.session.mark_consumed(sn);
                    TmfResponse::FUNCTION_COMPLETE
                } else if serial::in_window(tmf.ref_cmd_sn, self.exp_cmd_sn, self.max_cmd_sn())
                    && serial::lt(tmf.ref_cmd_sn, tmf.cmd_sn)
                {
                    // Never received but inside the window: consider it
                    // received so the window does not stall (§11.5.1).
                    self.session.mark_consumed(tmf.ref_cmd_sn);
                    TmfResponse::FUNCTION_COMPLETE
                } else {
                    TmfResponse::TASK_DOES_NOT_EXIST
                }
            }
            TmfFunction::ABORT_TASK_SET
            | TmfFunction::CLEAR_TASK_SET
            | TmfFunction::LOGICAL_UNIT_RESET
                if !lun_exists =>
            {
                TmfResponse::LUN_DOES_NOT_EXIST
            }
            TmfFunction::ABORT_TASK_SET | TmfFunction::CLEAR_TASK_SET => {
                self.tasks.retain(|_, t| t.lun != tmf.lun);
                TmfResponse::FUNCTION_COMPLETE
            }
            TmfFunction::LOGICAL_UNIT_RESET => {
                self.tasks.retain(|_, t| t.lun != tmf.lun);
                self.luns.logical_unit_reset(tmf.lun);
                TmfResponse::FUNCTION_COMPLETE
            }
            TmfFunction::I_T_NEXUS_RESET => {
                self.tasks.clear();
                self.luns.nexus_loss(&self.nexus, NexusEnd::Lost);
                TmfResponse::FUNCTION_COMPLETE
            }
            TmfFunction::TARGET_WARM_RESET | TmfFunction::TARGET_COLD_RESET => {
                // Tasks of other sessions that still wait for write data
                // complete when it arrives; the LUs' reset and unit
                // attentions reach every nexus.
                self.tasks.clear();
                self.luns.target_reset();
                if tmf.function == TmfFunction::TARGET_COLD_RESET {
                    after = After::Close;
                }
                TmfResponse::FUNCTION_COMPLETE
            }
            TmfFunction::QUERY_TASK => {
                if self.tasks.contains_key(&tmf.referenced_task_tag) {
                    TmfResponse::FUNCTION_SUCCEEDED
                } else {
                    TmfResponse::FUNCTION_COMPLETE
                }
            }
            TmfFunction::QUERY_TASK_SET => {
                if self.tasks.values().any(|t| t.lun == tmf.lun) {
                    TmfResponse::FUNCTION_SUCCEEDED
                } else {
                    TmfResponse::FUNCTION_COMPLETE
                }
            }
            TmfFunction::TASK_REASSIGN => TmfResponse::REASSIGNMENT_NOT_SUPPORTED,
            _ => TmfResponse::FUNCTION_NOT_SUPPORTED,
        };
        // A CmdSN marked consumed may be the one the window waits for.
        if after == After::Continue {
            after = self.drain()?;
        }
        let rsp = TaskMgmtResponse {
            response,
            itt: tmf.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.out
            .push(Pdu::TaskMgmtResponse(rsp).encode(), Bytes::new());
        Ok(after)
    }
}
