//! Write data collection (§4.2.3, §11.7, §11.8): immediate data,
//! unsolicited Data-Out up to FirstBurstLength, then R2Ts of at most
//! MaxBurstLength with at most MaxOutstandingR2T outstanding per task.
//! DataSN, BufferOffset and TTT are checked and a broken sequence fails the
//! task. Write data is charged to the session's memory budget: tasks wait
//! for memory before their R2Ts, and the Data-Out deadline aborts a task
//! whose data stops coming.

use super::FullFeature;
use crate::conn::deferred::Running;
use crate::memory::Charge;
use crate::scsi::Command;
use bytes::{Bytes, BytesMut};
use iesp_proto::bhs::{Lun, RESERVED_TAG};
use iesp_proto::framing::Frame;
use iesp_proto::pdu::{DataOut, Pdu, R2t};
use iesp_proto::scsi::{Asc, Sense};
use std::time::{Duration, Instant};

/// A write command collecting its data.
pub(super) struct WriteTask {
    pub(super) lun: Lun,
    /// The command, parsed once when it arrived.
    pub(super) command: Command,
    /// ExpectedDataTransferLength.
    pub(super) edtl: u32,
    /// SCSI transfer length from the CDB (SPDTL).
    pub(super) spdtl: u32,
    /// Bytes we keep: min(EDTL, SPDTL) when the CDB writes, else 0.
    pub(super) needed: u32,
    pub(super) buf: BytesMut,
    /// End of the unsolicited range: immediate data, plus unsolicited
    /// Data-Out up to FirstBurstLength when the command's F bit was 0.
    pub(super) unsolicited_end: u32,
    /// Offset of the next unsolicited byte expected.
    pub(super) unsolicited_next: u32,
    pub(super) unsolicited_data_sn: u32,
    pub(super) unsolicited_done: bool,
    /// Start of the next range to solicit with an R2T.
    pub(super) next_r2t_offset: u32,
    pub(super) next_r2t_sn: u32,
    pub(super) r2ts: Vec<OutstandingR2t>,
    /// The bytes this task holds in the memory budget: its unsolicited
    /// data from the start, the rest once admitted.
    pub(super) charge: Charge,
    /// Whether the solicited part is charged, so R2Ts may leave.
    pub(super) admitted: bool,
    /// SIMPLE task attribute: may run beside others ([`super::deferred`]).
    pub(super) simple: bool,
    /// When data last arrived for it (or it was admitted): the Data-Out
    /// deadline counts from here.
    pub(super) last_data: Instant,
}

impl WriteTask {
    /// Whether the task waits for the initiator (unsolicited data or an
    /// answered R2T's data), not for memory.
    pub(super) fn waits_for_initiator(&self) -> bool {
        !self.unsolicited_done || !self.r2ts.is_empty()
    }
}

/// How often write tasks waiting for memory retry while another session
/// holds it.
pub(super) const MEMORY_RETRY: Duration = Duration::from_millis(20);

pub(super) struct OutstandingR2t {
    pub(super) ttt: u32,
    pub(super) offset: u32,
    pub(super) len: u32,
    pub(super) received: u32,
    pub(super) next_data_sn: u32,
}

impl FullFeature {
    /// Aborts write tasks whose data has not come for the Data-Out
    /// deadline: CHECK CONDITION, ABORTED COMMAND, INITIATOR RESPONSE
    /// TIMEOUT (4Bh/06h); their buffers and budget are freed.
    pub(super) fn expire_data_out(&mut self, now: Instant) {
        let Some(timeout) = self.data_out_timeout else {
            return;
        };
        let expired: Vec<(u32, Lun)> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.waits_for_initiator() && now.saturating_duration_since(t.last_data) >= timeout
            })
            .map(|(itt, t)| (*itt, t.lun))
            .collect();
        if !expired.is_empty() {
            tracing::info!(
                initiator = %self.nexus.initiator_name,
                tasks = expired.len(),
                "write data did not come within {timeout:?}: aborting the tasks"
            );
        }
        for (itt, lun) in expired {
            self.tasks.remove(&itt);
            self.fail_task(itt, lun, &Sense::aborted_command(Asc(0x4b06)));
        }
    }

    /// Charges the solicited part of a write task if memory allows, in
    /// arrival order: a task behind others waiting for memory waits too.
    pub(super) fn try_admit(&mut self, itt: u32) -> bool {
        let first_in_line = self.starved.front().is_none_or(|f| *f == itt);
        let Some(task) = self.tasks.get_mut(&itt) else {
            return false;
        };
        if task.admitted {
            return true;
        }
        if first_in_line {
            let rest = u64::from(task.needed - task.unsolicited_end.min(task.needed));
            if let Some(c) = self.memory.try_charge(rest) {
                task.charge.absorb(c);
                task.admitted = true;
                task.last_data = self.now;
                if self.starved.front() == Some(&itt) {
                    self.starved.pop_front();
                }
                return true;
            }
        }
        if !self.starved.contains(&itt) {
            self.starved.push_back(itt);
        }
        false
    }

    /// Lets tasks waiting for memory go on while it allows, then sets the
    /// command window: while memory is short MaxCmdSN stops advancing.
    pub(super) fn admit_starved(&mut self) {
        while let Some(&itt) = self.starved.front() {
            if !self.tasks.contains_key(&itt) {
                self.starved.pop_front();
                continue;
            }
            if !self.try_admit(itt) {
                break;
            }
            self.progress(itt);
        }
        let short = !self.starved.is_empty() || self.memory.exhausted();
        match (short, self.frozen_max) {
            (true, None) => self.frozen_max = Some(self.max_cmd_sn()),
            (false, Some(_)) => self.frozen_max = None,
            _ => {}
        }
        self.retry_at = (!self.starved.is_empty()).then(|| self.now + MEMORY_RETRY);
    }

    /// Issues R2Ts while allowed and runs the command once all its data is in.
    pub(super) fn progress(&mut self, itt: u32) {
        let Some(task) = self.tasks.get(&itt) else {
            return;
        };
        let done =
            task.unsolicited_done && task.r2ts.is_empty() && task.next_r2t_offset >= task.needed;
        if done {
            let Some(mut task) = self.tasks.remove(&itt) else {
                return;
            };
            if task.buf.len() < task.needed as usize {
                task.buf.resize(task.needed as usize, 0);
            }
            if let Some(access) = self.may_defer(task.lun, task.command.raw(), task.simple) {
                let run = Running {
                    lun: task.lun,
                    edtl: task.edtl,
                    read: false,
                    wanted_out: task.spdtl,
                    r2ts: task.next_r2t_sn,
                    access,
                    charge: Some(task.charge),
                };
                self.defer(itt, task.command, task.buf.freeze(), run);
                return;
            }
            let completion = self
                .luns
                .run(&self.nexus, &task.command, &task.buf, task.edtl);
            let wanted = task.spdtl;
            self.complete(
                itt,
                task.lun,
                task.edtl,
                false,
                wanted,
                task.next_r2t_sn,
                completion,
            );
            return;
        }
        if !self.try_admit(itt) {
            // No memory for its data yet: no R2T until there is.
            return;
        }
        let max_burst = self.params.max_burst_length;
        let max_out = self.params.max_outstanding_r2t as usize;
        let (exp, max) = (self.exp_cmd_sn, self.max_cmd_sn());
        let mut issue = Vec::new();
        {
            let Some(task) = self.tasks.get_mut(&itt) else {
                return;
            };
            while task.r2ts.len() + issue.len() < max_out && task.next_r2t_offset < task.needed {
                let len = (task.needed - task.next_r2t_offset).min(max_burst);
                issue.push((task.next_r2t_offset, len, task.next_r2t_sn, task.lun));
                task.next_r2t_offset += len;
                task.next_r2t_sn += 1;
            }
            // Room for the data just asked for, as it is asked for.
            let want = task.next_r2t_offset.min(task.needed) as usize;
            if task.buf.capacity() < want {
                task.buf.reserve(want - task.buf.len());
            }
        }
        for (offset, len, r2t_sn, lun) in issue {
            let ttt = self.new_ttt();
            let r2t = R2t {
                lun,
                itt,
                ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                r2t_sn,
                buffer_offset: offset,
                desired_data_transfer_length: len,
            };
            self.out.push(Pdu::R2t(r2t).encode(), Bytes::new());
            if let Some(task) = self.tasks.get_mut(&itt) {
                task.r2ts.push(OutstandingR2t {
                    ttt,
                    offset,
                    len,
                    received: 0,
                    next_data_sn: 0,
                });
            }
        }
    }

    pub(super) fn data_out(&mut self, frame: &Frame) {
        let d = DataOut::decode(&frame.bhs);
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            // Data for a task that failed or never existed (§11.7): nothing
            // to attach it to. Dropping it keeps the session usable.
            tracing::debug!(itt = d.itt, "Data-Out for no pending task: dropped");
            return;
        };
        let len = frame.data.len() as u32;
        let check = if d.ttt == RESERVED_TAG {
            if task.unsolicited_done {
                Err(Asc(0x4b02)) // TOO MUCH WRITE DATA
            } else if d.data_sn != task.unsolicited_data_sn {
                Err(Asc(0x4b00)) // DATA PHASE ERROR
            } else if d.buffer_offset != task.unsolicited_next {
                Err(Asc(0x4b05)) // DATA OFFSET ERROR
            } else if d
                .buffer_offset
                .checked_add(len)
                .is_none_or(|end| end > task.unsolicited_end)
            {
                Err(Asc(0x4b02))
            } else {
                task.unsolicited_data_sn += 1;
                task.unsolicited_next += len;
                if d.final_bit {
                    if task.unsolicited_next != task.unsolicited_end {
                        Err(Asc(0x4b00))
                    } else {
                        task.unsolicited_done = true;
                        Ok(())
                    }
                } else {
                    Ok(())
                }
            }
        } else {
            match task.r2ts.iter().position(|r| r.ttt == d.ttt) {
                None => Err(Asc(0x4b01)), // INVALID TARGET PORT TRANSFER TAG RECEIVED
                Some(i) => {
                    let r = &mut task.r2ts[i];
                    if d.data_sn != r.next_data_sn {
                        Err(Asc(0x4b00))
                    } else if d.buffer_offset != r.offset + r.received {
                        Err(Asc(0x4b05))
                    } else if r.received + len > r.len {
                        Err(Asc(0x4b02))
                    } else {
                        r.received += len;
                        r.next_data_sn += 1;
                        if d.final_bit {
                            if r.received != r.len {
                                Err(Asc(0x4b00))
                            } else {
                                task.r2ts.remove(i);
                                Ok(())
                            }
                        } else {
                            Ok(())
                        }
                    }
                }
            }
        };
        match check {
            Ok(()) => {
                // Keep the bytes below `needed`; past it (EDTL > SPDTL) the
                // initiator's data is surplus and dropped.
                let start = d.buffer_offset as usize;
                let end = (start + frame.data.len()).min(task.needed as usize);
                if start < end {
                    if task.buf.len() < end {
                        task.buf.resize(end, 0);
                    }
                    task.buf[start..end].copy_from_slice(&frame.data[..end - start]);
                }
                task.last_data = self.now;
                self.progress(d.itt);
            }
            Err(asc) => {
                tracing::debug!(itt = d.itt, ?asc, "Data-Out sequence error: task fails");
                if let Some(task) = self.tasks.remove(&d.itt) {
                    self.fail_task(d.itt, task.lun, &Sense::aborted_command(asc));
                }
            }
        }
    }
}
