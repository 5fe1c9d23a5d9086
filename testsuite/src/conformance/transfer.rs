//! The SCSI shorthand's engine: one command, its data moved the way the
//! session negotiated, every PDU of the exchange checked.
//!
//! Writes go out as immediate data (ImmediateData=Yes, up to
//! FirstBurstLength and the target's MaxRecvDataSegmentLength), then
//! unsolicited Data-Out up to FirstBurstLength (InitialR2T=No), then
//! whatever the target asks for with R2Ts (RFC 7143 §4.2.5.? data transfer,
//! §11.7, §11.8, §13.10–§13.14). Reads collect Data-In.
//!
//! What the target sends is checked as it arrives; each breach is a
//! [`Violation`] naming the rule:
//!
//! - Data-In: the ITT echoed, DataSN 0, 1, 2… (§11.7.5), BufferOffset
//!   continuing where the previous PDU ended (DataPDUInOrder=Yes, §11.7.6,
//!   §13.18), no segment over the initiator's MaxRecvDataSegmentLength
//!   (§13.12), no sequence (F bit to F bit) over MaxBurstLength (§13.13),
//!   S only with F (§11.7.3), status in Data-In only when GOOD (§11.7.3),
//!   no data beyond ExpectedDataTransferLength;
//! - R2T: R2TSN 0, 1, 2… (§11.8.2), TTT not 0xffffffff (§11.8.1), a
//!   DesiredDataTransferLength from 1 to MaxBurstLength (§11.8.4, §13.13),
//!   a range inside ExpectedDataTransferLength that no earlier R2T or
//!   unsolicited data covered (§11.8.3);
//! - SCSI Response: the ITT echoed, StatSN the expected one (§4.2.2.2).

use bytes::{Bytes, BytesMut};
use iesp_proto::bhs::{Bhs, Lun, Opcode, RESERVED_TAG};
use iesp_proto::framing::Frame;
use iesp_proto::pdu::{DataIn, Pdu, R2t, Residual, ScsiResponse, fields};
use iesp_proto::scsi::Sense;

use super::cdb::Dir;
use super::exec::{Ctx, Event, Fail, describe_frame};

/// A command for the engine.
#[derive(Clone, Debug)]
pub struct ScsiRequest {
    pub cdb: Vec<u8>,
    pub dir: Dir,
    /// ExpectedDataTransferLength.
    pub edtl: u32,
    /// Write data (sent up to `edtl`; shorter data is zero-padded).
    pub data: Bytes,
    pub lun: Lun,
    /// Check every PDU (turn off to observe a misbehaving exchange).
    pub check: bool,
    /// Send immediate and unsolicited data as negotiated; `false` sends the
    /// command with F=1 and no data, so every byte is solicited by R2Ts.
    pub unsolicited: bool,
    /// Largest Data-Out segment to send (default: the target's
    /// MaxRecvDataSegmentLength).
    pub data_out_segment: Option<u32>,
}

impl ScsiRequest {
    /// A command with no data.
    pub fn none(cdb: &[u8], lun: Lun) -> ScsiRequest {
        ScsiRequest {
            cdb: cdb.to_vec(),
            dir: Dir::None,
            edtl: 0,
            data: Bytes::new(),
            lun,
            check: true,
            unsolicited: true,
            data_out_segment: None,
        }
    }

    /// A read of `len` bytes.
    pub fn read(cdb: &[u8], lun: Lun, len: u32) -> ScsiRequest {
        ScsiRequest {
            dir: Dir::In,
            edtl: len,
            ..ScsiRequest::none(cdb, lun)
        }
    }

    /// A write of `data`.
    pub fn write(cdb: &[u8], lun: Lun, data: Bytes) -> ScsiRequest {
        ScsiRequest {
            dir: Dir::Out,
            edtl: data.len() as u32,
            data,
            ..ScsiRequest::none(cdb, lun)
        }
    }
}

/// A rule the target broke during the exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub section: &'static str,
    pub message: String,
}

/// How the exchange ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// A status arrived (SCSI Response or Data-In with S=1).
    Status,
    /// The target rejected the command (or a Data-Out) with this reason.
    Reject(u8),
    Timeout,
    Closed,
    Malformed(String),
    /// A PDU that has no place in the exchange.
    Unexpected(String),
}

/// One Data-In as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataInSeen {
    pub pdu: DataIn,
    pub len: u32,
}

/// What the engine saw.
#[derive(Clone, Debug)]
pub struct ScsiOutcome {
    pub itt: u32,
    pub cmd_sn: u32,
    pub end: End,
    /// SCSI status, once `end` is `Status`.
    pub status: Option<u8>,
    /// The iSCSI Response field of the SCSI Response (0 for Data-In status).
    pub response: u8,
    pub sense: Option<Sense>,
    /// Read data at the offsets the target gave.
    pub data: Bytes,
    /// Residual from the PDU that carried the status.
    pub residual: Residual,
    pub data_ins: Vec<DataInSeen>,
    pub r2ts: Vec<R2t>,
    /// The SCSI Response PDU, if status came in one.
    pub response_pdu: Option<ScsiResponse>,
    pub violations: Vec<Violation>,
    /// Data-Out PDUs sent.
    pub data_outs: usize,
}

impl ScsiOutcome {
    /// `GOOD`, `CHECK CONDITION ILLEGAL REQUEST/0x2400`, `rejected (0x9)`…
    pub fn describe(&self) -> String {
        match &self.end {
            End::Status => {
                let st = self.status.unwrap_or(0xff);
                let name = iesp_proto::scsi::ScsiStatus(st)
                    .name()
                    .map_or_else(|| format!("status {st:#x}"), str::to_owned);
                match &self.sense {
                    Some(s) => format!("{name} {:?} ASC/ASCQ {:#06x}", s.key, s.asc.0),
                    None => name,
                }
            }
            End::Reject(r) => format!(
                "Reject reason {r:#04x} ({:?})",
                iesp_proto::pdu::RejectReason(*r)
            ),
            End::Timeout => "no status (timeout)".to_owned(),
            End::Closed => "the connection closed before status".to_owned(),
            End::Malformed(e) => format!("a malformed PDU: {e}"),
            End::Unexpected(e) => format!("an unexpected PDU: {e}"),
        }
    }

    /// A failure listing the violations, if any.
    pub fn violations_fail(&self) -> Result<(), Fail> {
        if self.violations.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self
            .violations
            .iter()
            .map(|v| format!("{} ({})", v.message, v.section))
            .collect();
        Err(Fail::check(format!(
            "protocol violations during the command:\n  {}",
            list.join("\n  ")
        )))
    }
}

impl Ctx {
    /// Runs one SCSI command through to its status.
    pub async fn scsi(&mut self, req: &ScsiRequest) -> Result<ScsiOutcome, Fail> {
        let (params, itt, cmd_sn) = {
            let c = self.conn_mut()?;
            let itt = c.new_itt();
            let cmd_sn = c.cmd_sn;
            c.cmd_sn = c.cmd_sn.wrapping_add(1);
            c.last_task_itt = itt;
            (c.params.clone(), itt, cmd_sn)
        };
        let write = req.dir == Dir::Out && req.edtl > 0;
        let data = if write {
            let mut d = BytesMut::from(&req.data[..req.data.len().min(req.edtl as usize)]);
            d.resize(req.edtl as usize, 0);
            d.freeze()
        } else {
            Bytes::new()
        };
        let edtl = req.edtl;
        let seg_out = req
            .data_out_segment
            .unwrap_or(params.target_mrdsl)
            .clamp(1, params.target_mrdsl.max(512));
        let first_burst = params.first_burst_length.min(params.max_burst_length);
        let imm = if write && req.unsolicited && params.immediate_data {
            edtl.min(first_burst).min(seg_out)
        } else {
            0
        };
        let unsolicited_end = if write && req.unsolicited && !params.initial_r2t {
            edtl.min(first_burst).max(imm)
        } else {
            imm
        };

        let mut bhs = Bhs::new(Opcode::SCSI_COMMAND);
        let set = |b: &mut Bhs, n: &str, v: u64| {
            if let Some(f) = fields::lookup(Opcode::SCSI_COMMAND, n) {
                f.write(b, v);
            }
        };
        bhs.set_final(unsolicited_end == imm);
        set(&mut bhs, "R", u64::from(req.dir == Dir::In));
        set(&mut bhs, "W", u64::from(write));
        set(&mut bhs, "ATTR", 1);
        bhs.set_lun(req.lun);
        bhs.set_itt(itt);
        set(&mut bhs, "ExpectedDataTransferLength", u64::from(edtl));
        set(&mut bhs, "CmdSN", u64::from(cmd_sn));
        set(&mut bhs, "ExpStatSN", u64::from(self.conn()?.exp_stat_sn));
        let mut ahs = Bytes::new();
        if req.cdb.len() > 16 {
            // Extended CDB AHS (§11.3.? AHS type 1): the bytes past 16.
            let rest = &req.cdb[16..];
            let mut a = BytesMut::new();
            a.extend_from_slice(&((rest.len() + 1) as u16).to_be_bytes());
            a.extend_from_slice(&[1, 0]);
            a.extend_from_slice(rest);
            while a.len() % 4 != 0 {
                a.extend_from_slice(&[0]);
            }
            ahs = a.freeze();
        }
        if let Some(f) = fields::lookup(Opcode::SCSI_COMMAND, "CDB") {
            f.write_bytes(&mut bhs, &req.cdb[..req.cdb.len().min(16)]);
        }
        let cmd = Frame {
            bhs,
            ahs,
            data: data.slice(..imm as usize),
        };
        let mut frames = vec![cmd];
        // Unsolicited Data-Out (§13.10: InitialR2T=No), DataSN from 0.
        let mut off = imm;
        let mut dsn = 0u32;
        while off < unsolicited_end {
            let n = (unsolicited_end - off).min(seg_out);
            frames.push(self.data_out_frame(
                itt,
                req.lun,
                RESERVED_TAG,
                dsn,
                off,
                off + n == unsolicited_end,
                data.slice(off as usize..(off + n) as usize),
            )?);
            off += n;
            dsn += 1;
        }
        let data_outs_unsolicited = frames.len() - 1;
        {
            let c = self.conn_mut()?;
            c.last_sent = Some(frames[0].bhs);
            let raw = c.raw()?;
            if let Err(e) = raw.send_batch(&frames).await {
                return Err(Fail::error(format!("sending the SCSI Command: {e}")));
            }
        }

        let mut out = ScsiOutcome {
            itt,
            cmd_sn,
            end: End::Timeout,
            status: None,
            response: 0,
            sense: None,
            data: Bytes::new(),
            residual: Residual::None,
            data_ins: Vec::new(),
            r2ts: Vec::new(),
            response_pdu: None,
            violations: Vec::new(),
            data_outs: data_outs_unsolicited,
        };
        let v = |section: &'static str, message: String| Violation { section, message };
        let mut read_buf = vec![0u8; if req.dir == Dir::In { edtl as usize } else { 0 }];
        let mut read_hi = 0usize;
        let mut next_data_sn = 0u32;
        let mut next_offset = 0u32;
        let mut burst = 0u32;
        let mut next_r2t_sn = 0u32;
        let mut covered: Vec<(u32, u32)> = vec![(0, unsolicited_end)];
        loop {
            let (expected_stat_sn, had_status) = {
                let c = self.conn()?;
                (c.exp_stat_sn, c.last_stat_sn.is_some())
            };
            let ev = self.recv_event(self.timing.response, false).await?;
            let frame = match ev {
                Event::Pdu(f) => f,
                Event::Timeout => {
                    out.end = End::Timeout;
                    break;
                }
                Event::Closed => {
                    out.end = End::Closed;
                    break;
                }
                Event::Malformed(e) => {
                    out.end = End::Malformed(e);
                    break;
                }
            };
            match Pdu::decode(&frame.bhs) {
                Pdu::DataIn(d) if d.itt == itt => {
                    let len = frame.data.len() as u32;
                    if req.check {
                        if d.data_sn != next_data_sn {
                            out.violations.push(v(
                                "RFC 7143 §11.7.5",
                                format!(
                                    "Data-In DataSN {} where {next_data_sn} was due",
                                    d.data_sn
                                ),
                            ));
                        }
                        if d.buffer_offset != next_offset {
                            out.violations.push(v(
                                "RFC 7143 §11.7.6, §13.18",
                                format!("Data-In BufferOffset {} where {next_offset} was due (DataPDUInOrder=Yes)", d.buffer_offset),
                            ));
                        }
                        if len > params.initiator_mrdsl {
                            out.violations.push(v(
                                "RFC 7143 §13.12",
                                format!("Data-In of {len} bytes exceeds our MaxRecvDataSegmentLength {}", params.initiator_mrdsl),
                            ));
                        }
                        if d.status.is_some() && !d.final_bit {
                            out.violations
                                .push(v("RFC 7143 §11.7.3", "Data-In with S=1 but F=0".to_owned()));
                        }
                        if let Some(st) = d.status
                            && !matches!(st, 0x00 | 0x04 | 0x14)
                        {
                            out.violations.push(v(
                                "RFC 7143 §11.7.3",
                                format!("status {st:#x} sent in a Data-In (only GOOD-class status may be phase-collapsed)"),
                            ));
                        }
                        if u64::from(d.buffer_offset) + u64::from(len) > u64::from(edtl) {
                            out.violations.push(v(
                                "RFC 7143 §11.7.6",
                                format!("Data-In covers {}..{} beyond ExpectedDataTransferLength {edtl}", d.buffer_offset, d.buffer_offset as u64 + u64::from(len)),
                            ));
                        }
                        if req.dir != Dir::In {
                            out.violations.push(v(
                                "RFC 7143 §11.7",
                                "Data-In for a command without R=1".to_owned(),
                            ));
                        }
                        burst += len;
                        if burst > params.max_burst_length {
                            out.violations.push(v(
                                "RFC 7143 §13.13",
                                format!(
                                    "Data-In sequence of {burst} bytes exceeds MaxBurstLength {}",
                                    params.max_burst_length
                                ),
                            ));
                            burst = 0;
                        }
                        if d.final_bit {
                            burst = 0;
                        }
                    }
                    let at = d.buffer_offset as usize;
                    if at < read_buf.len() {
                        let n = frame.data.len().min(read_buf.len() - at);
                        read_buf[at..at + n].copy_from_slice(&frame.data[..n]);
                        read_hi = read_hi.max(at + n);
                    }
                    next_data_sn = d.data_sn.wrapping_add(1);
                    next_offset = d.buffer_offset.wrapping_add(len);
                    let status = d.status;
                    let residual = d.residual;
                    if status.is_some() {
                        check_stat_sn(&frame, expected_stat_sn, had_status, &mut out);
                    }
                    out.data_ins.push(DataInSeen { pdu: d, len });
                    if let Some(st) = status {
                        out.status = Some(st);
                        out.residual = residual;
                        out.end = End::Status;
                        break;
                    }
                }
                Pdu::R2t(r) if r.itt == itt => {
                    if req.check {
                        if r.r2t_sn != next_r2t_sn {
                            out.violations.push(v(
                                "RFC 7143 §11.8.2",
                                format!("R2TSN {} where {next_r2t_sn} was due", r.r2t_sn),
                            ));
                        }
                        if r.ttt == RESERVED_TAG {
                            out.violations.push(v(
                                "RFC 7143 §11.8.1",
                                "R2T with the reserved TTT 0xffffffff".to_owned(),
                            ));
                        }
                        if r.desired_data_transfer_length == 0
                            || r.desired_data_transfer_length > params.max_burst_length
                        {
                            out.violations.push(v(
                                "RFC 7143 §11.8.4, §13.13",
                                format!(
                                    "R2T DesiredDataTransferLength {} outside 1..={} (MaxBurstLength)",
                                    r.desired_data_transfer_length, params.max_burst_length
                                ),
                            ));
                        }
                        let end =
                            u64::from(r.buffer_offset) + u64::from(r.desired_data_transfer_length);
                        if end > u64::from(edtl) {
                            out.violations.push(v(
                                "RFC 7143 §11.8.3",
                                format!("R2T asks for {}..{end} beyond ExpectedDataTransferLength {edtl}", r.buffer_offset),
                            ));
                        }
                        let (lo, hi) = (
                            r.buffer_offset,
                            r.buffer_offset
                                .saturating_add(r.desired_data_transfer_length),
                        );
                        if covered.iter().any(|(a, b)| lo < *b && *a < hi) {
                            out.violations.push(v(
                                "RFC 7143 §11.8.3",
                                format!(
                                    "R2T asks again for bytes {lo}..{hi}, already sent or solicited"
                                ),
                            ));
                        }
                        covered.push((lo, hi));
                        if !write {
                            out.violations.push(v(
                                "RFC 7143 §11.8",
                                "R2T for a command without W=1".to_owned(),
                            ));
                        }
                    }
                    next_r2t_sn = r.r2t_sn.wrapping_add(1);
                    // Answer it: Data-Out PDUs of at most the target's
                    // MaxRecvDataSegmentLength, DataSN from 0 per R2T.
                    let lo = r.buffer_offset.min(edtl);
                    let hi = r
                        .buffer_offset
                        .saturating_add(r.desired_data_transfer_length)
                        .min(edtl);
                    let mut frames = Vec::new();
                    let mut off = lo;
                    let mut dsn = 0;
                    while off < hi {
                        let n = (hi - off).min(seg_out);
                        frames.push(self.data_out_frame(
                            itt,
                            req.lun,
                            r.ttt,
                            dsn,
                            off,
                            off + n == hi,
                            data.slice(off as usize..(off + n) as usize),
                        )?);
                        off += n;
                        dsn += 1;
                    }
                    out.data_outs += frames.len();
                    out.r2ts.push(r);
                    let c = self.conn_mut()?;
                    if let Some(f) = frames.last() {
                        c.last_sent = Some(f.bhs);
                    }
                    let raw = c.raw()?;
                    if !frames.is_empty()
                        && let Err(e) = raw.send_batch(&frames).await
                    {
                        out.end = End::Closed;
                        out.violations
                            .push(v("RFC 7143 §11.7", format!("sending Data-Out failed: {e}")));
                        break;
                    }
                }
                Pdu::ScsiResponse(rsp) if rsp.itt == itt => {
                    check_stat_sn(&frame, expected_stat_sn, had_status, &mut out);
                    out.status = Some(rsp.status);
                    out.response = rsp.response.0;
                    out.residual = rsp.residual;
                    if let Ok(Some(s)) = iesp_proto::pdu::scsi::decode_sense_segment(&frame.data) {
                        out.sense = Sense::parse(s).ok();
                    }
                    out.response_pdu = Some(rsp);
                    out.end = End::Status;
                    break;
                }
                Pdu::Reject(rej) => {
                    out.end = End::Reject(rej.reason.0);
                    break;
                }
                Pdu::AsyncMessage(_) => continue,
                _ => {
                    out.end = End::Unexpected(describe_frame(&frame));
                    break;
                }
            }
        }
        read_buf.truncate(read_hi);
        out.data = Bytes::from(read_buf);
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn data_out_frame(
        &mut self,
        itt: u32,
        lun: Lun,
        ttt: u32,
        data_sn: u32,
        offset: u32,
        last: bool,
        data: Bytes,
    ) -> Result<Frame, Fail> {
        let exp_stat_sn = self.conn()?.exp_stat_sn;
        let pdu = iesp_proto::pdu::DataOut {
            final_bit: last,
            lun,
            itt,
            ttt,
            exp_stat_sn,
            data_sn,
            buffer_offset: offset,
        };
        Ok(Frame::with_data(&Pdu::DataOut(pdu), data))
    }
}

/// StatSN of a status-bearing PDU: the next one in sequence (§4.2.2.2),
/// once any status has been seen on the connection.
fn check_stat_sn(frame: &Frame, expected: u32, had_status: bool, out: &mut ScsiOutcome) {
    let sn = frame.bhs.u32_at(24);
    if had_status && sn != expected {
        out.violations.push(Violation {
            section: "RFC 7143 §4.2.2.2",
            message: format!("StatSN {sn} where {expected} was due"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_descriptions() {
        let mut o = ScsiOutcome {
            itt: 1,
            cmd_sn: 1,
            end: End::Status,
            status: Some(2),
            response: 0,
            sense: Some(Sense::new(
                iesp_proto::scsi::SenseKey::ILLEGAL_REQUEST,
                iesp_proto::scsi::Asc(0x2400),
            )),
            data: Bytes::new(),
            residual: Residual::None,
            data_ins: Vec::new(),
            r2ts: Vec::new(),
            response_pdu: None,
            violations: Vec::new(),
            data_outs: 0,
        };
        assert_eq!(
            o.describe(),
            "CHECK CONDITION ILLEGAL REQUEST ASC/ASCQ 0x2400"
        );
        assert!(o.violations_fail().is_ok());
        o.violations.push(Violation {
            section: "RFC 7143 §11.7.5",
            message: "Data-In DataSN 2 where 1 was due".into(),
        });
        let e = o.violations_fail().unwrap_err().to_string();
        assert!(
            e.contains("DataSN 2 where 1 was due (RFC 7143 §11.7.5)"),
            "{e}"
        );
        o.end = End::Reject(9);
        assert_eq!(o.describe(), "Reject reason 0x09 (InvalidPduField)");
    }
}
