//! SCSI cases in Rust: VPD pages parsed and cross-checked (SPC-4 §7.8,
//! SBC-4 §6.6), REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35), unit
//! attention through REQUEST SENSE (SPC-4 §6.29), VERIFY with byte
//! comparison (SBC-4 §5.33). Optional commands the LUN does not implement
//! turn into skips that say so.

use iesp_proto::bhs::Opcode;
use iesp_proto::scsi::inquiry::{Association, DesignatorType};
use iesp_proto::scsi::{Asc, Sense, SenseKey, Vpd, VpdPage};

use super::super::case::Level::{May, Must, Should};
use super::super::exec::{Ctx, Expectation, Fail, SendSpec, ensure};
use super::super::matchers::Matcher;
use super::super::transfer::{End, ScsiOutcome, ScsiRequest};
use super::{Def, boxed, cdb, read, require_good};
use crate::conformance::case::CaseFuture;

pub fn cases() -> Vec<Def> {
    vec![
        Def::new(
            "SCSI.Inquiry.SupportedPagesListDeviceIdentification",
            "SPC-4 §7.8.13, §7.8.6",
            Must,
            "VPD page 0x00 lists 0x00 and 0x83 in ascending order",
            supported_pages,
        ),
        Def::new(
            "SCSI.Inquiry.DeviceIdentificationDesignators",
            "SPC-4 §7.8.6",
            Must,
            "VPD page 0x83 parses, and has a logical-unit designator of type NAA, EUI-64 or SCSI name string",
            device_identification,
        ),
        Def::new(
            "SCSI.Inquiry.UnitSerialNumber",
            "SPC-4 §7.8.15",
            Should,
            "VPD page 0x80, when listed, returns a printable ASCII serial number",
            unit_serial_number,
        ),
        Def::new(
            "SCSI.Inquiry.BlockLimits",
            "SBC-4 §6.6.4",
            Should,
            "VPD page 0xB0, when listed, has page length 0x3C",
            block_limits,
        ),
        Def::new(
            "SCSI.Inquiry.BlockDeviceCharacteristics",
            "SBC-4 §6.6.2",
            May,
            "VPD page 0xB1, when listed, has page length 0x3C",
            block_device_characteristics,
        ),
        Def::new(
            "SCSI.Inquiry.LogicalBlockProvisioning",
            "SBC-4 §6.6.5",
            May,
            "VPD page 0xB2, when listed, parses",
            logical_block_provisioning,
        ),
        Def::new(
            "SCSI.Inquiry.VpdPagesAgreeWithTheList",
            "SPC-4 §7.8.13",
            Must,
            "Every page VPD page 0x00 lists can be read, with its own page code",
            listed_pages_readable,
        ),
        Def::new(
            "SCSI.Commands.ReportSupportedOperationCodes",
            "SPC-4 §6.35",
            May,
            "REPORT SUPPORTED OPERATION CODES (all commands), when implemented, lists READ(10) and INQUIRY",
            rsoc_all,
        ),
        Def::new(
            "SCSI.Commands.ReportOneOperationCode",
            "SPC-4 §6.35.2",
            May,
            "REPORT SUPPORTED OPERATION CODES for READ(10) alone, when implemented, says it is supported",
            rsoc_one,
        ),
        Def::new(
            "SCSI.Commands.RequestSenseReportsUnitAttention",
            "SPC-4 §6.29, SAM-5 §5.14",
            Should,
            "After a LOGICAL UNIT RESET, REQUEST SENSE returns the unit attention as sense data and clears it",
            request_sense_unit_attention,
        )
        .destructive(),
        Def::new(
            "SCSI.ReadWrite.VerifyWithByteCheck",
            "SBC-4 §5.33",
            Should,
            "VERIFY(10) BYTCHK=1 with the data on the medium gets GOOD; with one byte changed, MISCOMPARE",
            verify_byte_check,
        ),
        Def::new(
            "SCSI.Commands.PersistentReserveInReadKeys",
            "SPC-4 §6.15.2",
            May,
            "PERSISTENT RESERVE IN, READ KEYS, when implemented, returns at least the 8-byte header",
            pr_in_read_keys,
        ),
    ]
    .into_iter()
    .map(|d| d.gates(&["lun"]))
    .collect()
}

/// A command that is fine to lack: a CHECK CONDITION with ILLEGAL REQUEST
/// and INVALID COMMAND OPERATION CODE or INVALID FIELD IN CDB is a skip.
fn optional(out: &ScsiOutcome, what: &str) -> Result<(), Fail> {
    if out.status == Some(2)
        && let Some(s) = &out.sense
        && s.key == SenseKey::ILLEGAL_REQUEST
        && matches!(
            s.asc,
            Asc::INVALID_COMMAND_OPERATION_CODE | Asc::INVALID_FIELD_IN_CDB
        )
    {
        return Err(Fail::skip(format!("the LUN does not implement {what}")));
    }
    require_good(out, what)
}

async fn vpd(ctx: &mut Ctx, page: u8) -> Result<(ScsiOutcome, Vpd), Fail> {
    let c = cdb(ctx, &format!("INQUIRY page={page:#04x} alloc=4096"))?;
    let out = ctx.scsi(&ScsiRequest::read(&c, ctx.lun, 4096)).await?;
    require_good(&out, &format!("INQUIRY VPD page {page:#04x}"))?;
    let v = Vpd::parse(&out.data).map_err(|e| Fail::check(format!("VPD page {page:#04x}: {e}")))?;
    ensure(v.page.page_code().0 == page, || {
        format!(
            "asked for VPD page {page:#04x}, got page {:#04x}",
            v.page.page_code().0
        )
    })?;
    let announced = out
        .data
        .get(2..4)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    ensure(out.data.len() == 4 + announced, || {
        format!(
            "VPD page {page:#04x}: PAGE LENGTH {announced} but {} bytes after the header",
            out.data.len().saturating_sub(4)
        )
    })?;
    Ok((out, v))
}

async fn listed(ctx: &mut Ctx) -> Result<Vec<u8>, Fail> {
    let (_, v) = vpd(ctx, 0x00).await?;
    match v.page {
        VpdPage::SupportedPages(codes) => Ok(codes.into_iter().map(|c| c.0).collect()),
        other => Err(Fail::check(format!("VPD page 0x00 parsed as {other:?}"))),
    }
}

async fn if_listed(ctx: &mut Ctx, page: u8) -> Result<Vpd, Fail> {
    if !listed(ctx).await?.contains(&page) {
        return Err(Fail::skip(format!(
            "VPD page {page:#04x} is not in the supported pages list"
        )));
    }
    vpd(ctx, page).await.map(|(_, v)| v)
}

fn supported_pages(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let pages = listed(ctx).await?;
        ensure(pages.first() == Some(&0x00), || {
            format!("the list does not start with 0x00: {pages:02x?}")
        })?;
        ensure(pages.contains(&0x83), || {
            format!("the list lacks 0x83 (Device Identification): {pages:02x?}")
        })?;
        ensure(pages.windows(2).all(|w| w[0] < w[1]), || {
            format!("the list is not ascending: {pages:02x?}")
        })
    })
}

fn device_identification(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (_, v) = vpd(ctx, 0x83).await?;
        let VpdPage::DeviceIdentification(ds) = v.page else {
            return Err(Fail::check("VPD page 0x83 did not parse as designators"));
        };
        ensure(!ds.is_empty(), || {
            "VPD page 0x83 has no designator".to_owned()
        })?;
        let good = ds.iter().any(|d| {
            d.association == Association::LOGICAL_UNIT
                && matches!(
                    d.designator_type,
                    DesignatorType::NAA | DesignatorType::EUI64 | DesignatorType::SCSI_NAME_STRING
                )
        });
        ensure(good, || {
            let kinds: Vec<String> = ds
                .iter()
                .map(|d| format!("{:?}/{:?}", d.association, d.designator_type))
                .collect();
            format!("no logical-unit designator of type NAA, EUI-64 or SCSI name string: {kinds:?}")
        })
    })
}

fn unit_serial_number(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let v = if_listed(ctx, 0x80).await?;
        let VpdPage::UnitSerialNumber(s) = v.page else {
            return Err(Fail::check("VPD page 0x80 did not parse"));
        };
        ensure(s.iter().all(|b| (0x20..0x7f).contains(b)), || {
            format!("the serial number is not printable ASCII: {s:02x?}")
        })
    })
}

async fn page_len_3c(ctx: &mut Ctx, page: u8) -> Result<(), Fail> {
    if !listed(ctx).await?.contains(&page) {
        return Err(Fail::skip(format!(
            "VPD page {page:#04x} is not in the supported pages list"
        )));
    }
    let (out, _) = vpd(ctx, page).await?;
    let len = out
        .data
        .get(2..4)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    ensure(len == 0x3c, || {
        format!("VPD page {page:#04x} PAGE LENGTH {len:#x}, expected 0x3c")
    })
}

fn block_limits(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(page_len_3c(ctx, 0xb0))
}

fn block_device_characteristics(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(page_len_3c(ctx, 0xb1))
}

fn logical_block_provisioning(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move { if_listed(ctx, 0xb2).await.map(drop) })
}

fn listed_pages_readable(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        for page in listed(ctx).await? {
            vpd(ctx, page).await?;
        }
        Ok(())
    })
}

fn rsoc_all(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let c = cdb(
            ctx,
            "REPORT SUPPORTED OPERATION CODES options=0 alloc=65536",
        )?;
        let out = ctx.scsi(&ScsiRequest::read(&c, ctx.lun, 65536)).await?;
        optional(&out, "REPORT SUPPORTED OPERATION CODES")?;
        let d = &out.data;
        ensure(d.len() >= 4, || format!("{} bytes of data", d.len()))?;
        let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        let mut ops = Vec::new();
        let mut at = 4;
        while at + 8 <= d.len().min(4 + len) {
            ops.push(d[at]);
            // CTDP: a 12-byte command timeouts descriptor follows.
            at += if d[at + 5] & 0x02 != 0 { 20 } else { 8 };
        }
        ensure(ops.contains(&0x28) && ops.contains(&0x12), || {
            format!("the list lacks READ(10) or INQUIRY: {ops:02x?}")
        })
    })
}

fn rsoc_one(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let c = cdb(
            ctx,
            "REPORT SUPPORTED OPERATION CODES options=1 opcode=0x28 alloc=512",
        )?;
        let out = ctx.scsi(&ScsiRequest::read(&c, ctx.lun, 512)).await?;
        optional(&out, "REPORT SUPPORTED OPERATION CODES")?;
        let support = out.data.get(1).map(|b| b & 0x07);
        ensure(support == Some(3), || {
            format!("SUPPORT for READ(10) is {support:?}, expected 3 (supported, standard)")
        })
    })
}

fn request_sense_unit_attention(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        ctx.send(
            &SendSpec::new(Opcode::TASK_MGMT_REQUEST).set_expr("Function", "LogicalUnitReset"),
        )
        .await?;
        let exp =
            Expectation::pdu(Opcode::TASK_MGMT_RESPONSE).field("Response", Matcher::eq_int(0));
        ctx.expect_one(&[exp], None).await?;
        let c = cdb(ctx, "REQUEST SENSE alloc=252")?;
        let out = ctx.scsi(&ScsiRequest::read(&c, ctx.lun, 252)).await?;
        require_good(&out, "REQUEST SENSE")?;
        let s =
            Sense::parse(&out.data).map_err(|e| Fail::check(format!("REQUEST SENSE data: {e}")))?;
        ensure(
            s.key == SenseKey::UNIT_ATTENTION && s.asc.asc() == 0x29,
            || {
                format!(
                    "REQUEST SENSE after the reset returned {:?} {:?}",
                    s.key, s.asc
                )
            },
        )?;
        let tur = ctx.scsi(&ScsiRequest::none(&[0; 6], ctx.lun)).await?;
        require_good(
            &tur,
            "TEST UNIT READY after REQUEST SENSE cleared the unit attention",
        )
    })
}

fn verify_byte_check(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let back = read(ctx, 0, 1, |_| {}).await?;
        require_good(&back, "READ of LBA 0")?;
        let c = cdb(ctx, "VERIFY(10) lba=0 blocks=1 bytchk=1")?;
        let same = ctx
            .scsi(&ScsiRequest::write(&c, ctx.lun, back.data.clone()))
            .await?;
        optional(&same, "VERIFY with BYTCHK=1")?;
        let mut changed = back.data.to_vec();
        if let Some(b) = changed.get_mut(17) {
            *b ^= 0xff;
        }
        let diff = ctx
            .scsi(&ScsiRequest::write(&c, ctx.lun, changed.into()))
            .await?;
        ensure(diff.end == End::Status && diff.status == Some(2), || {
            format!("VERIFY of different data ended with {}", diff.describe())
        })?;
        let s = diff
            .sense
            .as_ref()
            .ok_or_else(|| Fail::check("no sense data for the miscompare"))?;
        ensure(
            s.key == SenseKey::MISCOMPARE && s.asc == Asc::MISCOMPARE_DURING_VERIFY,
            || {
                format!(
                    "VERIFY of different data: {:?} {:?}, expected MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION",
                    s.key, s.asc
                )
            },
        )
    })
}

fn pr_in_read_keys(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let c = cdb(ctx, "PERSISTENT RESERVE IN sa=0 alloc=1024")?;
        let out = ctx.scsi(&ScsiRequest::read(&c, ctx.lun, 1024)).await?;
        optional(&out, "PERSISTENT RESERVE IN")?;
        ensure(out.data.len() >= 8, || {
            format!("READ KEYS returned {} bytes", out.data.len())
        })
    })
}
