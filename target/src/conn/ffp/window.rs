//! The CmdSN window (RFC 7143 §4.2.2.1, §3.2.2.1): where an ordered PDU
//! waits for its turn. Numbering and dispatch happen under the session's
//! ordering lock ([`SessionShared::turn`](crate::session::SessionShared)),
//! shared by the session's connections: commands run in CmdSN order,
//! commands that arrive early are held, commands outside
//! [ExpCmdSN, MaxCmdSN] are silently ignored, immediate ones bypass
//! ordering; a command held here runs when another connection moves
//! ExpCmdSN to it ([`FullFeature::resume`]).

use super::{After, Fatal, FullFeature};
use iesp_proto::bhs::Opcode;
use iesp_proto::framing::Frame;
use iesp_proto::pdu::{Pdu, RejectReason};
use iesp_proto::serial;
use std::time::Instant;

impl FullFeature {
    /// Another connection of the session moved ExpCmdSN at `now`: runs the
    /// commands held here that are now next in CmdSN order.
    pub fn resume(&mut self, now: Instant) -> Result<After, Fatal> {
        self.now = now;
        if self.held.is_empty() {
            self.exp_cmd_sn = self.session.exp_cmd_sn();
            return Ok(After::Continue);
        }
        self.in_turn(Self::drain)
    }

    /// The connection ends: the commands it holds ahead of ExpCmdSN are
    /// terminated with it (RFC 7143 §6.3.4: its tasks end with it). Their
    /// CmdSNs count as received, so that the session's other connections
    /// are not left waiting for them.
    pub fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let _ = self.in_turn(|this| {
            for (sn, _) in this.held.drain() {
                this.session.mark_consumed(sn);
            }
            this.drain()
        });
    }

    /// Runs `f` holding the session's ordering lock, with ExpCmdSN taken
    /// from the session and given back to it; wakes the other connections
    /// when it moved.
    pub(super) fn in_turn(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<After, Fatal>,
    ) -> Result<After, Fatal> {
        let session = self.session.clone();
        let _turn = session.turn();
        let before = session.exp_cmd_sn();
        self.exp_cmd_sn = before;
        let result = f(self);
        if self.exp_cmd_sn != before {
            session.set_exp_cmd_sn(self.exp_cmd_sn);
            session.wake_others(self.conn_id);
        }
        result
    }

    /// Takes the session's ExpCmdSN (other connections may have moved it).
    pub(super) fn refresh_window(&mut self) {
        let sn = self.session.exp_cmd_sn();
        if serial::gt(sn, self.exp_cmd_sn) {
            self.exp_cmd_sn = sn;
        }
    }

    pub(super) fn max_cmd_sn(&self) -> u32 {
        self.frozen_max
            .unwrap_or_else(|| self.exp_cmd_sn.wrapping_add(self.window - 1))
    }

    /// CmdSN ordering (§4.2.2.1, §3.2.2.1), session-wide: under the
    /// session's ordering lock.
    pub(super) fn ordered(&mut self, frame: Frame) -> Result<After, Fatal> {
        self.in_turn(|this| this.ordered_in_turn(frame))
    }

    pub(super) fn ordered_in_turn(&mut self, frame: Frame) -> Result<After, Fatal> {
        if frame.bhs.immediate() {
            return self.dispatch(frame);
        }
        let cmd_sn = frame.bhs.u32_at(24);
        if cmd_sn != self.exp_cmd_sn {
            if serial::in_window(cmd_sn, self.exp_cmd_sn, self.max_cmd_sn())
                && !self.held.contains_key(&cmd_sn)
            {
                self.held.insert(cmd_sn, frame);
            } else {
                tracing::debug!(
                    cmd_sn,
                    exp = self.exp_cmd_sn,
                    "CmdSN outside the window: ignored"
                );
            }
            return Ok(After::Continue);
        }
        let after = self.advance_and_dispatch(frame)?;
        if after == After::Continue {
            self.drain()
        } else {
            Ok(after)
        }
    }

    /// Runs what waited for ExpCmdSN to advance: CmdSNs marked consumed are
    /// skipped, held commands run in order.
    pub(super) fn drain(&mut self) -> Result<After, Fatal> {
        loop {
            if self.session.take_consumed(self.exp_cmd_sn) {
                self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
                continue;
            }
            match self.held.remove(&self.exp_cmd_sn) {
                Some(next) => {
                    let after = self.advance_and_dispatch(next)?;
                    if after != After::Continue {
                        return Ok(after);
                    }
                }
                None => return Ok(After::Continue),
            }
        }
    }

    pub(super) fn advance_and_dispatch(&mut self, frame: Frame) -> Result<After, Fatal> {
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        self.dispatch(frame)
    }

    pub(super) fn dispatch(&mut self, frame: Frame) -> Result<After, Fatal> {
        let op = frame.bhs.opcode();
        if op != Opcode::SCSI_COMMAND && op != Opcode::NOP_OUT {
            // Task management, Text, Logout: after every running command.
            self.drain_deferred();
        }
        match Pdu::decode(&frame.bhs) {
            Pdu::ScsiCommand(cmd) => self.scsi_command(cmd, &frame),
            Pdu::NopOut(nop) => self.nop_out(nop, frame.data),
            Pdu::TaskMgmtRequest(tmf) => return self.task_management(tmf),
            Pdu::TextRequest(req) => self.text_request(req, &frame.data),
            Pdu::LogoutRequest(req) => return Ok(self.logout(req)),
            _ => self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs),
        }
        Ok(After::Continue)
    }
}
