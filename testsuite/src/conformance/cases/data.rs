//! Data-path cases in Rust: R2T sequences (RFC 7143 §11.8, §13.13,
//! §13.17), Data-In sequences (§11.7, §13.12, §13.13), Data-Out numbering
//! (§11.7.5), residuals on odd transfer lengths (§11.4.5).
//!
//! They run under every profile: the same rules must hold whatever
//! ImmediateData, InitialR2T, digests and segment sizes were negotiated.

use std::time::Duration;

use iesp_proto::bhs::{Opcode, RESERVED_TAG};
use iesp_proto::framing::Frame;
use iesp_proto::pdu::{DataOut, Pdu, R2t, Residual};

use super::super::case::Level::{Must, Should};
use super::super::exec::{Ctx, Event, Fail, SendHow, SendSpec, describe_frame, ensure};
use super::super::transfer::{End, ScsiOutcome, ScsiRequest};
use super::{Def, boxed, cdb, pattern, read, require_good, require_no_violation, write};
use crate::conformance::case::CaseFuture;

/// Where the Rust cases write: 2 MiB into the LUN, each case at its own
/// byte offset from there ([`area`]).
const AREA_BYTES: u64 = 2 << 20;

/// The LBA a case writes `len` bytes at: `AREA_BYTES + slot` when the
/// write fits there, else as far in as it fits (a small LUN, or large
/// blocks); a skip when the LUN is smaller than the write. A write past
/// the end would fail a correct target with LBA OUT OF RANGE.
fn area(ctx: &Ctx, slot: u64, len: u64) -> Result<u64, Fail> {
    let bs = u64::from(ctx.block_size.max(1));
    let want = (AREA_BYTES + slot) / bs;
    let blocks = len.div_ceil(bs);
    if blocks > ctx.blocks {
        return Err(Fail::skip(format!(
            "the case writes {len} bytes; the LUN holds {} blocks of {bs} bytes",
            ctx.blocks
        )));
    }
    Ok(want.min(ctx.blocks - blocks))
}

pub fn cases() -> Vec<Def> {
    let w = &["lun"];
    vec![
        Def::new(
            "iSCSI.R2T.R2tSnIncrements",
            "RFC 7143 §11.8.2",
            Must,
            "The R2Ts of a write carry R2TSN 0, 1, 2… in order",
            r2t_sn_increments,
        ),
        Def::new(
            "iSCSI.R2T.DesiredLengthWithinMaxBurst",
            "RFC 7143 §11.8.4, §13.13",
            Must,
            "No R2T asks for more than MaxBurstLength bytes, nor for none",
            desired_length_within_max_burst,
        ),
        Def::new(
            "iSCSI.R2T.RangesCoverTheTransfer",
            "RFC 7143 §11.8.3",
            Must,
            "The R2Ts of a write sent without data ask for every byte of the transfer exactly once",
            ranges_cover_the_transfer,
        ),
        Def::new(
            "iSCSI.R2T.TargetTransferTagNotReserved",
            "RFC 7143 §11.8.1",
            Must,
            "No R2T carries the reserved TTT 0xffffffff",
            ttt_not_reserved,
        ),
        Def::new(
            "iSCSI.R2T.MaxOutstandingR2T",
            "RFC 7143 §13.17",
            Must,
            "A write never has more R2Ts outstanding than MaxOutstandingR2T",
            max_outstanding_r2t,
        ),
        Def::new(
            "iSCSI.R2T.FirstR2tAfterUnsolicitedData",
            "RFC 7143 §11.8.3, §13.10, §13.14",
            Must,
            "With InitialR2T=No, the first R2T starts where the unsolicited data (FirstBurstLength) ended",
            first_r2t_after_unsolicited,
        )
        .gates(&["lun", "param:InitialR2T=No"]),
        Def::new(
            "iSCSI.DataIn.DataSnSequence",
            "RFC 7143 §11.7.5",
            Must,
            "The Data-In PDUs of a read carry DataSN 0, 1, 2… in order",
            data_in_data_sn,
        ),
        Def::new(
            "iSCSI.DataIn.BufferOffsetsInOrder",
            "RFC 7143 §11.7.6, §13.18",
            Must,
            "With DataPDUInOrder=Yes, each Data-In starts where the previous one ended, within the ExpectedDataTransferLength",
            data_in_offsets,
        ),
        Def::new(
            "iSCSI.DataIn.SegmentsWithinMaxRecvDataSegmentLength",
            "RFC 7143 §13.12",
            Must,
            "No Data-In segment exceeds the initiator's MaxRecvDataSegmentLength",
            data_in_mrdsl,
        ),
        Def::new(
            "iSCSI.DataIn.SequencesWithinMaxBurstLength",
            "RFC 7143 §13.13, §11.7.1",
            Must,
            "A Data-In sequence (up to a PDU with F=1) carries at most MaxBurstLength bytes",
            data_in_max_burst,
        ),
        Def::new(
            "iSCSI.DataIn.StatusFlagsConsistent",
            "RFC 7143 §11.7.3",
            Must,
            "A Data-In with S=1 also has F=1 and carries GOOD-class status only",
            data_in_status_flags,
        ),
        Def::new(
            "iSCSI.DataIn.CheckConditionInScsiResponse",
            "RFC 7143 §11.7.3, §11.4",
            Must,
            "A read ending in CHECK CONDITION reports it in a SCSI Response with sense data, not in a Data-In",
            data_in_check_condition,
        ),
        Def::new(
            "iSCSI.DataIn.ExpDataSnInResponse",
            "RFC 7143 §11.4.8",
            Should,
            "A SCSI Response after Data-In carries ExpDataSN = the number of Data-In PDUs sent",
            data_in_exp_data_sn,
        ),
        Def::new(
            "iSCSI.DataOut.DataSnRestartsPerR2t",
            "RFC 7143 §11.7.5",
            Must,
            "Data-Out answering each R2T in many small PDUs, DataSN restarting at 0 per R2T, completes with GOOD and the data reads back",
            data_out_small_segments,
        )
        .destructive(),
        Def::new(
            "iSCSI.DataOut.UnsolicitedDataAccepted",
            "RFC 7143 §13.10, §13.14",
            Must,
            "With InitialR2T=No, unsolicited Data-Out up to FirstBurstLength is accepted: the write completes and reads back",
            data_out_unsolicited,
        )
        .gates(&["lun", "param:InitialR2T=No"])
        .destructive(),
        Def::new(
            "iSCSI.Residual.ReadWithZeroEdtl",
            "RFC 7143 §11.4.5",
            Should,
            "READ of one block with ExpectedDataTransferLength 0: no data, and GOOD with an overflow of one block or CHECK CONDITION",
            read_zero_edtl,
        ),
        Def::new(
            "iSCSI.Residual.WriteUnderflow",
            "RFC 7143 §11.4.5",
            Should,
            "WRITE of one block with EDTL of two blocks: GOOD with an underflow of one block, or CHECK CONDITION",
            write_underflow,
        )
        .destructive(),
        Def::new(
            "iSCSI.Residual.WriteOverflow",
            "RFC 7143 §11.4.5",
            Should,
            "WRITE of two blocks with EDTL of one block: GOOD with an overflow of one block, or CHECK CONDITION",
            write_overflow,
        )
        .destructive(),
    ]
    .into_iter()
    .map(|d| {
        let d = d.profiles("all");
        if d.gates.is_empty() { d.gates(w) } else { d }
    })
    .map(|d| {
        // Every R2T and Data-Out case writes.
        if d.id.starts_with("iSCSI.R2T.") { d.destructive() } else { d }
    })
    .collect()
}

/// A write whose every byte is solicited: several bursts when
/// MaxBurstLength allows, at most 1 MiB.
async fn solicited_write(ctx: &mut Ctx) -> Result<(ScsiOutcome, u32), Fail> {
    let p = ctx.conn()?.params.clone();
    let bs = u64::from(ctx.block_size);
    let len = (u64::from(p.max_burst_length) * 3).clamp(bs * 2, 1 << 20) / bs * bs;
    let at = area(ctx, 0, len)?;
    let out = write(ctx, at, pattern(len as usize, 0x52), |r| {
        r.unsolicited = false;
        r.check = false;
    })
    .await?;
    if out.end != End::Status || out.status != Some(0) {
        return Err(Fail::check(format!(
            "the write did not complete with GOOD: {}",
            out.describe()
        )));
    }
    ensure(!out.r2ts.is_empty(), || {
        "the write sent without data completed without any R2T".to_owned()
    })?;
    Ok((out, len as u32))
}

fn r2t_sn_increments(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (out, _) = solicited_write(ctx).await?;
        for (i, r) in out.r2ts.iter().enumerate() {
            ensure(r.r2t_sn == i as u32, || {
                format!(
                    "R2T #{i} carries R2TSN {} (R2TSNs seen: {:?})",
                    r.r2t_sn,
                    out.r2ts.iter().map(|r| r.r2t_sn).collect::<Vec<_>>()
                )
            })?;
        }
        Ok(())
    })
}

fn desired_length_within_max_burst(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (out, _) = solicited_write(ctx).await?;
        let max = ctx.conn()?.params.max_burst_length;
        for r in &out.r2ts {
            ensure((1..=max).contains(&r.desired_data_transfer_length), || {
                format!(
                    "R2T R2TSN {} asks for {} bytes; MaxBurstLength is {max}",
                    r.r2t_sn, r.desired_data_transfer_length
                )
            })?;
        }
        Ok(())
    })
}

fn ranges_cover_the_transfer(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (out, len) = solicited_write(ctx).await?;
        let mut ranges: Vec<(u32, u32)> = out
            .r2ts
            .iter()
            .map(|r| {
                (
                    r.buffer_offset,
                    r.buffer_offset
                        .saturating_add(r.desired_data_transfer_length),
                )
            })
            .collect();
        ranges.sort_unstable();
        let mut next = 0u32;
        for (lo, hi) in &ranges {
            ensure(*lo == next, || {
                if *lo < next {
                    format!("R2T ranges overlap at offset {lo} (ranges: {ranges:?})")
                } else {
                    format!("no R2T asks for bytes {next}..{lo} (ranges: {ranges:?})")
                }
            })?;
            next = *hi;
        }
        ensure(next == len, || {
            format!("the R2Ts end at {next}, the transfer at {len} (ranges: {ranges:?})")
        })
    })
}

fn ttt_not_reserved(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (out, _) = solicited_write(ctx).await?;
        for r in &out.r2ts {
            ensure(r.ttt != RESERVED_TAG, || {
                format!("R2T R2TSN {} carries TTT 0xffffffff", r.r2t_sn)
            })?;
        }
        Ok(())
    })
}

/// Sends the Data-Out PDUs answering `r` from `data`.
async fn answer_r2t(ctx: &mut Ctx, r: &R2t, data: &[u8]) -> Result<(), Fail> {
    let seg = ctx.conn()?.params.target_mrdsl.max(512);
    let hi = r
        .buffer_offset
        .saturating_add(r.desired_data_transfer_length)
        .min(data.len() as u32);
    let mut off = r.buffer_offset.min(hi);
    let mut dsn = 0;
    while off < hi {
        let n = (hi - off).min(seg);
        let pdu = DataOut {
            final_bit: off + n == hi,
            lun: ctx.lun,
            itt: r.itt,
            ttt: r.ttt,
            exp_stat_sn: ctx.conn()?.exp_stat_sn,
            data_sn: dsn,
            buffer_offset: off,
        };
        let frame = Frame::with_data(
            &Pdu::DataOut(pdu),
            bytes::Bytes::copy_from_slice(&data[off as usize..(off + n) as usize]),
        );
        ctx.send_frame(&frame, SendHow::default()).await?;
        off += n;
        dsn += 1;
    }
    Ok(())
}

fn max_outstanding_r2t(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let p = ctx.conn()?.params.clone();
        let bs = u64::from(ctx.block_size);
        let mor = u64::from(p.max_outstanding_r2t.max(1));
        // At most half the LUN, so that a small LUN still gets a write of
        // several bursts where MaxBurstLength is small.
        let room = (ctx.blocks / 2).max(2).saturating_mul(bs);
        let len = (u64::from(p.max_burst_length) * (mor + 2)).clamp(bs * 2, (4 << 20).min(room))
            / bs
            * bs;
        let at = area(ctx, 0, len)?;
        let data = pattern(len as usize, 0x33);
        let spec = SendSpec::new(Opcode::SCSI_COMMAND)
            .cdb(&format!("WRITE(16) lba={at} blocks={}", len / bs));
        let cmd = ctx.send(&spec).await?;
        let itt = cmd.itt();
        // Collect what the target sends until it pauses, answer it all,
        // repeat: at each pause every R2T received is outstanding.
        let pause = ctx.timing.silence.min(Duration::from_millis(150));
        let mut most = 0u64;
        let mut first = true;
        loop {
            let mut pending: Vec<R2t> = Vec::new();
            let mut status = None;
            loop {
                let wait = if first { ctx.timing.response } else { pause };
                first = false;
                match ctx.recv_event(wait, false).await? {
                    Event::Pdu(f) => match Pdu::decode(&f.bhs) {
                        Pdu::R2t(r) if r.itt == itt => pending.push(r),
                        Pdu::ScsiResponse(rsp) if rsp.itt == itt => {
                            status = Some(rsp.status);
                            break;
                        }
                        _ => {
                            return Err(Fail::check(format!(
                                "unexpected {} during the write",
                                describe_frame(&f)
                            )));
                        }
                    },
                    Event::Timeout => break,
                    other => {
                        return Err(Fail::check(format!(
                            "during the write: {}",
                            other.describe()
                        )));
                    }
                }
            }
            most = most.max(pending.len() as u64);
            ensure(pending.len() as u64 <= mor, || {
                format!(
                    "{} R2Ts outstanding at once (R2TSNs {:?}); MaxOutstandingR2T is {mor}",
                    pending.len(),
                    pending.iter().map(|r| r.r2t_sn).collect::<Vec<_>>()
                )
            })?;
            if let Some(st) = status {
                ensure(st == 0, || format!("the write ended with status {st:#x}"))?;
                ensure(most >= 1, || {
                    "the write completed without any R2T".to_owned()
                })?;
                return Ok(());
            }
            ensure(!pending.is_empty(), || {
                "neither an R2T nor a status arrived".to_owned()
            })?;
            for r in &pending {
                answer_r2t(ctx, r, &data).await?;
            }
        }
    })
}

fn first_r2t_after_unsolicited(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let p = ctx.conn()?.params.clone();
        let bs = u64::from(ctx.block_size);
        let first_burst = u64::from(p.first_burst_length.min(p.max_burst_length));
        let len = (first_burst.div_ceil(bs) + 4) * bs;
        if len > 4 << 20 {
            return Err(Fail::skip(format!(
                "FirstBurstLength {first_burst} is above the 4 MiB this case writes"
            )));
        }
        let at = area(ctx, 0, len)?;
        let out = write(ctx, at, pattern(len as usize, 0x44), |r| r.check = false).await?;
        require_good(&out, "the write")?;
        let r = out.r2ts.first().ok_or_else(|| {
            Fail::check(format!(
                "no R2T for the {} bytes past FirstBurstLength {first_burst}",
                len - first_burst
            ))
        })?;
        ensure(u64::from(r.buffer_offset) == first_burst.min(len), || {
            format!(
                "the first R2T asks for offset {}; the unsolicited data (FirstBurstLength {first_burst}) ended there",
                r.buffer_offset
            )
        })
    })
}

/// A read with every PDU checked, large enough for several PDUs.
async fn checked_read(ctx: &mut Ctx) -> Result<ScsiOutcome, Fail> {
    let bs = u64::from(ctx.block_size);
    let blocks = (256 * 1024 / bs).min(ctx.blocks.max(1));
    let out = read(ctx, 0, blocks, |_| {}).await?;
    if out.end != End::Status || out.status != Some(0) {
        return Err(Fail::check(format!(
            "the read did not complete with GOOD: {}",
            out.describe()
        )));
    }
    ensure(out.data.len() as u64 == blocks * bs, || {
        format!(
            "the read returned {} bytes of {}",
            out.data.len(),
            blocks * bs
        )
    })?;
    Ok(out)
}

fn data_in_data_sn(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let out = checked_read(ctx).await?;
        require_no_violation(&out, "§11.7.5", "Data-In numbering")
    })
}

fn data_in_offsets(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let out = checked_read(ctx).await?;
        require_no_violation(&out, "§11.7.6", "Data-In offsets")
    })
}

fn data_in_mrdsl(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let out = checked_read(ctx).await?;
        require_no_violation(&out, "§13.12", "Data-In segment sizes")
    })
}

fn data_in_max_burst(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let out = checked_read(ctx).await?;
        require_no_violation(&out, "§13.13", "Data-In sequences")
    })
}

fn data_in_status_flags(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let out = checked_read(ctx).await?;
        require_no_violation(&out, "§11.7.3", "Data-In status flags")?;
        let with_status = out
            .data_ins
            .iter()
            .filter(|d| d.pdu.status.is_some())
            .count();
        ensure(with_status <= 1, || {
            format!("{with_status} Data-In PDUs carry status")
        })?;
        ensure(with_status == 0 || out.response_pdu.is_none(), || {
            "status came in a Data-In and again in a SCSI Response".to_owned()
        })
    })
}

fn data_in_check_condition(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let blocks = ctx.blocks;
        let c = cdb(ctx, &format!("READ(16) lba={blocks} blocks=1"))?;
        let bs = ctx.block_size;
        let out = ctx.scsi(&ScsiRequest::read(&c, ctx.lun, bs)).await?;
        require_no_violation(&out, "§11.7.3", "status of a failed read")?;
        ensure(out.status == Some(2), || {
            format!("READ past the last LBA ended with {}", out.describe())
        })?;
        ensure(out.response_pdu.is_some(), || {
            "the CHECK CONDITION did not come in a SCSI Response".to_owned()
        })?;
        ensure(out.sense.is_some(), || {
            "the CHECK CONDITION carries no sense data".to_owned()
        })
    })
}

fn data_in_exp_data_sn(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        // An underflow makes some targets send the status separately.
        let bs = u64::from(ctx.block_size);
        let out = read(ctx, 0, 4, |r| r.edtl = (8 * bs) as u32).await?;
        // The precondition (status in a SCSI Response after Data-In) is
        // only known once the exchange ended with a status.
        if out.end != End::Status {
            return Err(Fail::check(format!(
                "the read ended with {} before its status: the precondition (status in a SCSI Response) cannot be checked",
                out.describe()
            )));
        }
        let (Some(rsp), false) = (out.response_pdu.as_ref(), out.data_ins.is_empty()) else {
            let collapsed = out.data_ins.last().is_some_and(|d| d.pdu.status.is_some());
            return Err(if collapsed {
                Fail::skip("the target phase-collapsed the status into the last Data-In")
            } else {
                Fail::skip(
                    "the read got no Data-In before its SCSI Response: ExpDataSN has nothing to count",
                )
            });
        };
        ensure(rsp.exp_data_sn == out.data_ins.len() as u32, || {
            format!(
                "ExpDataSN {} after {} Data-In PDUs",
                rsp.exp_data_sn,
                out.data_ins.len()
            )
        })
    })
}

fn data_out_small_segments(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let bs = u64::from(ctx.block_size);
        let len = (64 * 1024 / bs).max(2) * bs;
        let data = pattern(len as usize, 0x71);
        let at = area(ctx, 256 << 10, len)?;
        let out = write(ctx, at, data.clone(), |r| {
            r.unsolicited = false;
            r.data_out_segment = Some(512);
        })
        .await?;
        require_good(&out, "the write in 512-byte Data-Out PDUs")?;
        let back = read(ctx, at, len / bs, |_| {}).await?;
        require_good(&back, "the read back")?;
        ensure(back.data == data, || {
            "the data read back differs from what was written".to_owned()
        })
    })
}

fn data_out_unsolicited(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let p = ctx.conn()?.params.clone();
        let bs = u64::from(ctx.block_size);
        let len = ((u64::from(p.first_burst_length) * 2).min(1 << 20) / bs).max(2) * bs;
        let data = pattern(len as usize, 0x19);
        let at = area(ctx, 512 << 10, len)?;
        let out = write(ctx, at, data.clone(), |_| {}).await?;
        require_good(&out, "the write with unsolicited data")?;
        ensure(out.data_outs > 0 || p.immediate_data, || {
            "no unsolicited Data-Out was sent".to_owned()
        })?;
        let back = read(ctx, at, len / bs, |_| {}).await?;
        require_good(&back, "the read back")?;
        ensure(back.data == data, || {
            "the data read back differs from what was written".to_owned()
        })
    })
}

/// GOOD with this residual, or CHECK CONDITION.
fn good_with_residual_or_check_condition(
    out: &ScsiOutcome,
    want: Residual,
    what: &str,
) -> Result<(), Fail> {
    if out.end != End::Status {
        return Err(Fail::check(format!(
            "{what}: no status: {}",
            out.describe()
        )));
    }
    require_no_violation(out, "RFC 7143", what)?;
    match out.status {
        Some(2) => Ok(()),
        Some(0) => ensure(out.residual == want, || {
            format!(
                "{what}: GOOD with residual {:?}; expected {want:?}",
                out.residual
            )
        }),
        _ => Err(Fail::check(format!("{what}: {}", out.describe()))),
    }
}

fn read_zero_edtl(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let c = cdb(ctx, "READ(10) lba=0 blocks=1")?;
        let out = ctx.scsi(&ScsiRequest::none(&c, ctx.lun)).await?;
        ensure(out.data.is_empty() && out.data_ins.is_empty(), || {
            format!(
                "{} Data-In PDUs for a command with EDTL 0",
                out.data_ins.len()
            )
        })?;
        good_with_residual_or_check_condition(
            &out,
            Residual::Overflow(ctx.block_size),
            "READ with EDTL 0",
        )
    })
}

fn write_underflow(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let bs = ctx.block_size;
        let at = area(ctx, 1 << 20, 2 * u64::from(bs))?;
        let c = cdb(ctx, &format!("WRITE(10) lba={at} blocks=1"))?;
        let mut req = ScsiRequest::write(&c, ctx.lun, pattern(2 * bs as usize, 0x11));
        req.edtl = 2 * bs;
        let out = ctx.scsi(&req).await?;
        good_with_residual_or_check_condition(
            &out,
            Residual::Underflow(bs),
            "WRITE of 1 block with EDTL of 2",
        )
    })
}

fn write_overflow(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let bs = ctx.block_size;
        let at = area(ctx, 1 << 20, 2 * u64::from(bs))?;
        let c = cdb(ctx, &format!("WRITE(10) lba={at} blocks=2"))?;
        let req = ScsiRequest::write(&c, ctx.lun, pattern(bs as usize, 0x12));
        let out = ctx.scsi(&req).await?;
        good_with_residual_or_check_condition(
            &out,
            Residual::Overflow(bs),
            "WRITE of 2 blocks with EDTL of 1",
        )
    })
}
