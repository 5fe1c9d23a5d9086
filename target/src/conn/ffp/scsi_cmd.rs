//! Intake of a SCSI Command PDU (§11.3): the checks that reject it, the
//! CDB parsed once into a [`Command`], then either a write task that
//! collects its data ([`super::data_out`]) or execution right away
//! ([`super::execute`] decides inline or on a worker).

use super::data_out::WriteTask;
use super::{FullFeature, SessionKind};
use crate::conn::deferred::Running;
use crate::scsi::{Direction, RawCdb};
use bytes::{Bytes, BytesMut};
use iesp_proto::bhs::RESERVED_TAG;
use iesp_proto::framing::Frame;
use iesp_proto::pdu;
use iesp_proto::pdu::{RejectReason, ScsiCommand};
use iesp_proto::scsi::{Asc, Sense, SenseKey};

impl FullFeature {
    pub(super) fn scsi_command(&mut self, cmd: ScsiCommand, frame: &Frame) {
        if let Some(c) = self.stats.counting() {
            c.commands.inc();
        }
        if self.kind == SessionKind::Discovery {
            self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            return;
        }
        if cmd.itt == RESERVED_TAG || self.tasks.contains_key(&cmd.itt) || self.is_running(cmd.itt)
        {
            self.reject(RejectReason::TASK_IN_PROGRESS, &frame.bhs);
            return;
        }
        // The CDB stays in the BHS's 16 bytes unless an AHS extends it.
        let cdb = if frame.ahs.is_empty() {
            RawCdb::Header(cmd.cdb)
        } else {
            match pdu::ahs::full_cdb(&cmd.cdb, &frame.ahs) {
                Ok(cdb) => RawCdb::Extended(cdb.into()),
                Err(_) => {
                    self.reject(RejectReason::INVALID_PDU_FIELD, &frame.bhs);
                    return;
                }
            }
        };
        let edtl = cmd.expected_data_transfer_length;
        // Parsed once: the transfer now, the same command runs later.
        let mut command = self.luns.prepare(cmd.lun, cdb);
        if !self.frame_cfg.data_digest && self.session.max_connections == 1 {
            // A READ's data may then go from the file to the socket. Not in
            // a session that may have several connections: the fence that
            // holds a later WRITE until the READ's data has left the page
            // cache watches one connection, and a WRITE on another one
            // could change bytes the first is still sending.
            command.allow_splice();
        }
        let transfer = command.transfer();
        let immediate = frame.data.len() as u32;
        if immediate > 0
            && (!cmd.write
                || !self.params.immediate_data
                || immediate > edtl
                || immediate > self.params.first_burst_length)
        {
            // Immediate data the session did not allow, or more than the
            // command or first burst can hold (§11.3.4, §13.13).
            self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            return;
        }
        if !cmd.final_bit && (!cmd.write || self.params.initial_r2t) {
            // F=0 announces unsolicited Data-Out, which InitialR2T=Yes forbids.
            self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            return;
        }
        if cmd.write && edtl > 0 {
            let needed = if transfer.direction == Direction::Write {
                edtl.min(transfer.length)
            } else {
                0
            };
            let unsolicited_end = if cmd.final_bit {
                immediate
            } else {
                edtl.min(self.params.first_burst_length).max(immediate)
            };
            if !self.memory.can_ever_fit(u64::from(needed)) {
                // More than the session's share of memory: it could never
                // be admitted (INSUFFICIENT RESOURCES, 55h/03h).
                tracing::info!(
                    itt = cmd.itt,
                    needed,
                    "write larger than the session's memory share: refused"
                );
                let sense = Sense::new(SenseKey::ILLEGAL_REQUEST, Asc(0x5503));
                self.fail_task(cmd.itt, cmd.lun, &sense);
                return;
            }
            // The unsolicited part has come or will come unasked: charged
            // now, past the budget if need be (the window shrinks then).
            let unsolicited = unsolicited_end.min(needed);
            let charge = self.memory.force_charge(u64::from(unsolicited));
            let keep = immediate.min(needed) as usize;
            let mut buf = BytesMut::with_capacity(unsolicited as usize);
            buf.extend_from_slice(&frame.data[..keep]);
            let task = WriteTask {
                lun: cmd.lun,
                command,
                edtl,
                spdtl: transfer.length,
                needed,
                buf,
                unsolicited_end,
                unsolicited_next: immediate,
                unsolicited_data_sn: 0,
                unsolicited_done: cmd.final_bit,
                next_r2t_offset: unsolicited_end,
                next_r2t_sn: 0,
                r2ts: Vec::new(),
                charge,
                admitted: needed <= unsolicited_end,
                simple: cmd.attr == pdu::TaskAttr::SIMPLE,
                last_data: self.now,
            };
            self.tasks.insert(cmd.itt, task);
            self.progress(cmd.itt);
        } else {
            let wanted = if transfer.direction == Direction::Write {
                transfer.length
            } else {
                0
            };
            let simple = cmd.attr == pdu::TaskAttr::SIMPLE;
            if let Some(access) = self.may_defer(cmd.lun, command.raw(), simple) {
                let run = Running {
                    lun: cmd.lun,
                    edtl,
                    read: cmd.read,
                    wanted_out: wanted,
                    r2ts: 0,
                    access,
                    charge: None,
                };
                self.defer(cmd.itt, command, Bytes::new(), run);
                return;
            }
            let completion = self.luns.run(&self.nexus, &command, &[], edtl);
            self.complete(cmd.itt, cmd.lun, edtl, cmd.read, wanted, 0, completion);
        }
    }
}
