//! Answering a command: its Data-In PDUs, segmented to the initiator's
//! MaxRecvDataSegmentLength and MaxBurstLength, with GOOD status collapsed
//! into the last one (§11.7.4), or a SCSI Response with status, sense and
//! residuals against ExpectedDataTransferLength (§11.4.5).

use super::FullFeature;
use crate::scsi::Completion;
use iesp_proto::bhs::{Lun, RESERVED_TAG};
use iesp_proto::pdu;
use iesp_proto::pdu::{DataIn, Pdu, Residual, ScsiResponse, ScsiResponseCode};
use iesp_proto::scsi::{ScsiStatus, Sense};

impl FullFeature {
    pub(super) fn fail_task(&mut self, itt: u32, lun: Lun, sense: &Sense) {
        self.complete(itt, lun, 0, false, 0, 0, Completion::check_condition(sense));
    }

    /// Sends a command's data and status. `r2ts` is how many R2Ts the
    /// command's data took: with the Data-Ins sent here, its ExpDataSN
    /// (§11.4.8).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn complete(
        &mut self,
        itt: u32,
        lun: Lun,
        edtl: u32,
        read: bool,
        wanted_out: u32,
        r2ts: u32,
        c: Completion,
    ) {
        let data_len = c.data_len() as u32;
        let send = if read { data_len.min(edtl) } else { 0 };
        // Residual against what the command wanted to move: read data it
        // produced, or write data its CDB asked for.
        let wanted = if read || data_len > 0 {
            data_len
        } else {
            wanted_out
        };
        let residual = Residual::of(edtl, wanted);
        let good = c.status == ScsiStatus::GOOD.0 && c.sense.is_none();
        if c.spliced.is_some() && send > 0 {
            // Its status is the next StatSN (in the last Data-In or the
            // response below): acknowledged once ExpStatSN passes it.
            self.fence.spliced(self.stat_sn.wrapping_add(1));
        }
        let mut offset = 0u32;
        let mut data_sn = 0u32;
        let mut burst_left = self.params.max_burst_length;
        while offset < send {
            let seg = (send - offset)
                .min(self.params.initiator_mrdsl)
                .min(burst_left);
            let last = offset + seg == send;
            burst_left -= seg;
            let end_of_burst = last || burst_left == 0;
            if burst_left == 0 {
                burst_left = self.params.max_burst_length;
            }
            let collapse = last && good;
            let din = DataIn {
                final_bit: end_of_burst,
                acknowledge: false,
                status: collapse.then_some(c.status),
                residual: if collapse { residual } else { Residual::None },
                lun,
                itt,
                ttt: RESERVED_TAG,
                stat_sn: if collapse {
                    self.next_stat_sn()
                } else {
                    self.stat_sn
                },
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                data_sn,
                buffer_offset: offset,
            };
            let range = offset as usize..(offset + seg) as usize;
            match &c.spliced {
                None => self
                    .out
                    .push(Pdu::DataIn(din).encode(), c.data.slice(range)),
                Some(file) => {
                    if let Err(e) = self
                        .out
                        .push_spliced(Pdu::DataIn(din).encode(), file.slice(range))
                    {
                        // Only with a data digest, which never splices.
                        tracing::warn!(itt, "read data lost from the backing file: {e}");
                    }
                }
            }
            offset += seg;
            data_sn += 1;
            if collapse {
                return;
            }
        }
        let rsp = ScsiResponse {
            itt,
            response: ScsiResponseCode::COMMAND_COMPLETED,
            status: c.status,
            residual,
            bidi_residual: Residual::None,
            snack_tag: 0,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            exp_data_sn: data_sn + r2ts,
        };
        let data = c
            .sense
            .as_deref()
            .map(pdu::scsi::encode_sense_segment)
            .unwrap_or_default();
        self.out.push(Pdu::ScsiResponse(rsp).encode(), data);
    }
}
