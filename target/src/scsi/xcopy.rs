//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS: the logical unit as a copy
//! manager for copies between the logical units of its target (SPC-4 §5.17,
//! §6.4, §6.20). Hosts use it to copy without moving the data through
//! themselves (VMware's VAAI "full copy", `sg_xcopy`, `ddpt`).
//!
//! ## What is supported
//!
//! - Target descriptors: Identification (E4h) only, naming a logical unit of
//!   this target by a designator of its VPD page 83h (the NAA or the T10
//!   vendor ID designator), of peripheral type 0 (block). LU ID TYPE and
//!   NUL are obsolete in SPC-4 and ignored. Other types are ILLEGAL REQUEST,
//!   UNSUPPORTED TARGET DESCRIPTOR TYPE CODE.
//! - Segment descriptors: block device to block device (02h) only, between
//!   logical units of the same block size; others are UNSUPPORTED SEGMENT
//!   DESCRIPTOR TYPE CODE. No inline data.
//! - Limits (RECEIVE COPY OPERATING PARAMETERS): [`MAX_TARGET_DESCRIPTORS`]
//!   and [`MAX_SEGMENT_DESCRIPTORS`] (else TOO MANY … DESCRIPTORS), a
//!   descriptor list of at most [`MAX_DESCRIPTOR_LIST_LENGTH`] bytes (else
//!   PARAMETER LIST LENGTH ERROR, refused before any data is solicited), a
//!   segment of at most 65535 blocks (what its field holds).
//! - LIST ID USAGE 00b and 10b keep the outcome for RECEIVE COPY STATUS
//!   (per I_T nexus and list identifier, the last [`HELD_RESULTS`] copies of
//!   the logical unit); 11b keeps nothing and needs LIST IDENTIFIER 0
//!   (SNLID=1); 01b is reserved. No data is ever held, so RECEIVE COPY DATA
//!   is not supported.
//!
//! ## Processing
//!
//! The list is checked whole (lengths, counts, types) before anything is
//! copied. Segments then run in order, synchronously: the copy is complete
//! when the command's status is. A segment that names a missing target
//! descriptor, or one that resolves to no logical unit, ends the command
//! with COPY ABORTED / UNREACHABLE COPY TARGET; a block size or device
//! type that does not fit, COPY ABORTED / INCORRECT COPY TARGET DEVICE
//! TYPE; a range beyond a unit's capacity, COPY ABORTED with the LBA in
//! INFORMATION. COMMAND-SPECIFIC INFORMATION holds the number of the
//! segment (SPC-4 §6.4.1); segments before it stay copied. A destination
//! that is write protected is DATA PROTECT; one whose reservation excludes
//! the issuing I_T nexus's writes (or a source excluding its reads) is
//! RESERVATION CONFLICT.
//!
//! The data moves through a 1 MiB buffer: read from the source backend,
//! written to the destination backend under the destination's shared I/O
//! gate (see [`super::lu`]), backwards when a range overlaps itself
//! further on, so the result is that of a copy through an intermediate
//! buffer.

use std::collections::VecDeque;

use bytes::Bytes;
use iesp_proto::scsi::inquiry::{Association, DesignatorType};
use iesp_proto::scsi::xcopy::{
    BlockToBlock, CopyOperatingParameters, CopyStatus, ExtendedCopyParameters, SegmentDescriptor,
    TargetDescriptor, XcopyError, copy_manager_status, list_id_usage, segment_type, target_type,
};
use iesp_proto::scsi::{Asc, Cdb, CdbSize, Sense, SenseKey, truncate};

use super::lu::LogicalUnit;
use super::sense::{Fault, IoOp, Outcome, io_error};
use super::ua::NexusKey;
use super::{LunTable, Nexus, inquiry};

/// MAXIMUM CSCD DESCRIPTOR COUNT.
pub const MAX_TARGET_DESCRIPTORS: u16 = 8;
/// MAXIMUM SEGMENT DESCRIPTOR COUNT.
pub const MAX_SEGMENT_DESCRIPTORS: u16 = 16;
/// MAXIMUM DESCRIPTOR LIST LENGTH.
pub const MAX_DESCRIPTOR_LIST_LENGTH: u32 = 4096;
/// The longest parameter list: header and descriptors (no inline data).
pub const MAX_PARAMETER_LIST: u32 = 16 + MAX_DESCRIPTOR_LIST_LENGTH;
/// Copy outcomes a logical unit keeps for RECEIVE COPY STATUS.
pub const HELD_RESULTS: usize = 64;
/// The buffer the data moves through.
const CHUNK: u64 = 1 << 20;

/// Finished copies, for RECEIVE COPY STATUS (bounded, oldest dropped).
#[derive(Debug, Default)]
pub struct CopyResults {
    held: VecDeque<(NexusKey, u8, CopyStatus)>,
}

impl CopyResults {
    fn record(&mut self, nexus: &NexusKey, list: u8, status: CopyStatus) {
        self.held.retain(|(n, l, _)| !(n == nexus && *l == list));
        if self.held.len() == HELD_RESULTS {
            self.held.pop_front();
        }
        self.held.push_back((nexus.clone(), list, status));
    }

    fn get(&self, nexus: &NexusKey, list: u8) -> Option<CopyStatus> {
        self.held
            .iter()
            .find(|(n, l, _)| n == nexus && *l == list)
            .map(|(_, _, s)| *s)
    }
}

/// The CDB-only check: a list longer than any valid one.
pub fn precheck(cdb: &Cdb) -> Result<(), Sense> {
    match *cdb {
        Cdb::ExtendedCopy {
            parameter_list_length,
            ..
        } if parameter_list_length > MAX_PARAMETER_LIST => {
            Err(Sense::parameter_list_length_error())
        }
        _ => Ok(()),
    }
}

fn copy_aborted(asc: Asc, segment: usize) -> Fault {
    let mut s = Sense::new(SenseKey::COPY_ABORTED, asc);
    s.command_specific = Some(segment as u64);
    Fault::Check(s)
}

/// EXTENDED COPY (LID1) received by `lu` from `nexus` (see the module docs).
pub fn extended_copy(
    lu: &LogicalUnit,
    nexus: &Nexus,
    table: &LunTable,
    parameter_list_length: u32,
    data_out: &[u8],
) -> Result<Bytes, Fault> {
    if parameter_list_length == 0 {
        return Ok(Bytes::new());
    }
    let pll = usize::try_from(parameter_list_length).unwrap_or(usize::MAX);
    let Some(list) = data_out.get(..pll) else {
        return Err(Sense::parameter_list_length_error().into());
    };
    let params = ExtendedCopyParameters::parse(list).map_err(|e| match e {
        XcopyError::Data(d) => d.sense(),
        XcopyError::UnknownTargetType { byte, .. } => unsupported_target(byte),
    })?;
    let h = params.header;
    if h.list_id_usage == list_id_usage::RESERVED {
        return Err(Sense::invalid_field_in_parameter_list(1, Some(4)).into());
    }
    if h.list_id_usage == list_id_usage::NONE && h.list_identifier != 0 {
        return Err(Sense::invalid_field_in_parameter_list(0, None).into());
    }
    if h.inline_data_length != 0 {
        return Err(Sense::invalid_field_in_parameter_list(12, None).into());
    }
    let descriptors = u32::from(h.target_list_length).saturating_add(h.segment_list_length);
    if descriptors > MAX_DESCRIPTOR_LIST_LENGTH {
        return Err(Sense::parameter_list_length_error().into());
    }
    if params.targets.len() > usize::from(MAX_TARGET_DESCRIPTORS) {
        return Err(Sense::illegal_request(Asc::TOO_MANY_TARGET_DESCRIPTORS).into());
    }
    let mut at = 16;
    for t in &params.targets {
        match t {
            TargetDescriptor::Identification(_) => at += 32,
            TargetDescriptor::Other { .. } => return Err(unsupported_target(at).into()),
        }
    }
    if params.segments.len() > usize::from(MAX_SEGMENT_DESCRIPTORS) {
        return Err(Sense::illegal_request(Asc::TOO_MANY_SEGMENT_DESCRIPTORS).into());
    }
    let mut segments = Vec::with_capacity(params.segments.len());
    for (offset, s) in &params.segments {
        match s {
            SegmentDescriptor::BlockToBlock(b) => segments.push(*b),
            SegmentDescriptor::Other { .. } => {
                let mut sense =
                    Sense::illegal_request(Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE);
                sense.sense_key_specific =
                    Sense::invalid_field_in_parameter_list(field(*offset), None).sense_key_specific;
                return Err(sense.into());
            }
        }
    }
    let me = NexusKey::of(nexus);
    let mut done = 0usize;
    let mut moved = 0u64;
    let result = segments.iter().enumerate().try_for_each(|(i, seg)| {
        moved += copy_segment(lu, nexus, &me, table, &params.targets, seg, i)?;
        done += 1;
        Ok::<(), Fault>(())
    });
    if h.list_id_usage != list_id_usage::NONE {
        let (units, count) = if moved <= u64::from(u32::MAX) {
            (0, moved as u32)
        } else {
            (1, u32::try_from(moved >> 10).unwrap_or(u32::MAX))
        };
        let status = CopyStatus {
            hdd: false,
            status: if result.is_ok() {
                copy_manager_status::COMPLETED
            } else {
                copy_manager_status::FAILED
            },
            segments_processed: u16::try_from(done).unwrap_or(u16::MAX),
            transfer_count_units: units,
            transfer_count: count,
        };
        lu.lock().copies.record(&me, h.list_identifier, status);
    }
    result.map(|()| Bytes::new())
}

fn field(at: usize) -> u16 {
    u16::try_from(at).unwrap_or(u16::MAX)
}

fn unsupported_target(at: usize) -> Sense {
    let mut s = Sense::illegal_request(Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE);
    s.sense_key_specific =
        Sense::invalid_field_in_parameter_list(field(at), None).sense_key_specific;
    s
}

/// The logical unit target descriptor `index` names.
fn resolve<'t>(
    table: &'t LunTable,
    nexus: &Nexus,
    targets: &[TargetDescriptor],
    index: u16,
    segment: usize,
) -> Result<&'t LogicalUnit, Fault> {
    let Some(TargetDescriptor::Identification(id)) = targets.get(usize::from(index)) else {
        return Err(copy_aborted(Asc::UNREACHABLE_COPY_TARGET, segment));
    };
    if id.peripheral_type != 0 {
        return Err(copy_aborted(
            Asc::INCORRECT_COPY_TARGET_DEVICE_TYPE,
            segment,
        ));
    }
    let lu = table
        .iter()
        .find(|lu| {
            inquiry::designators(lu, nexus).iter().any(|d| {
                d.association == Association::LOGICAL_UNIT
                    && matches!(
                        d.designator_type,
                        DesignatorType::NAA | DesignatorType::T10_VENDOR_ID
                    )
                    && d.designator_type.0 == id.designator_type
                    && d.designator == id.designator
            })
        })
        .ok_or_else(|| copy_aborted(Asc::UNREACHABLE_COPY_TARGET, segment))?;
    let length = id.disk_block_length();
    if length != 0 && length != lu.block_size() {
        return Err(copy_aborted(
            Asc::INCORRECT_COPY_TARGET_DEVICE_TYPE,
            segment,
        ));
    }
    Ok(lu.as_ref())
}

/// One block-to-block segment; returns the bytes copied.
fn copy_segment(
    lu: &LogicalUnit,
    nexus: &Nexus,
    me: &NexusKey,
    table: &LunTable,
    targets: &[TargetDescriptor],
    seg: &BlockToBlock,
    index: usize,
) -> Result<u64, Fault> {
    let src = resolve(table, nexus, targets, seg.source, index)?;
    let dst = resolve(table, nexus, targets, seg.destination, index)?;
    if src.block_size() != dst.block_size() {
        return Err(copy_aborted(Asc::INCORRECT_COPY_TARGET_DEVICE_TYPE, index));
    }
    let n = u64::from(seg.blocks);
    for (unit, lba) in [(src, seg.source_lba), (dst, seg.destination_lba)] {
        if lba.checked_add(n).is_none_or(|end| end > unit.blocks()) {
            let mut s = Sense::new(SenseKey::COPY_ABORTED, Asc::NO_ADDITIONAL_SENSE);
            s.information = Some(lba);
            s.command_specific = Some(index as u64);
            return Err(Fault::Check(s));
        }
    }
    // The issuing nexus's rights on both units (the receiving unit's own
    // reservations were checked before the command ran).
    let read = Cdb::read(CdbSize::Sixteen, seg.source_lba, 1);
    let write = Cdb::write(CdbSize::Sixteen, seg.destination_lba, 1, false);
    let (dst_protected, dst_write_through) = {
        let st = dst.lock();
        if st.reservations.conflict(me, &write) {
            return Err(Fault::Conflict);
        }
        (
            dst.read_only() || st.mode.control.swp,
            dst.write_cache() && !st.mode.caching.wce,
        )
    };
    if !std::ptr::eq(src, lu) && src.lock().reservations.conflict(me, &read) {
        return Err(Fault::Conflict);
    }
    if dst_protected {
        return Err(Sense::data_protect(Asc::WRITE_PROTECTED).into());
    }
    let bs = u64::from(src.block_size());
    let (from, to, len) = (seg.source_lba * bs, seg.destination_lba * bs, n * bs);
    if len == 0 {
        return Ok(0);
    }
    // Overlapping ranges of one unit with the destination further on:
    // copy from the end so no source byte is overwritten before it is read.
    let backwards = std::ptr::eq(src, dst) && to > from && to < from + len;
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0u64;
    while done < len {
        let step = CHUNK.min(len - done);
        let at = if backwards { len - done - step } else { done };
        let chunk = &mut buf[..step as usize];
        src.backend()
            .read_at(chunk, from + at)
            .map_err(|e| io_error(IoOp::Read, (from + at) / bs, &e))?;
        {
            let _io = dst.shared_io();
            dst.backend()
                .write_at(chunk, to + at)
                .map_err(|e| io_error(IoOp::Write, (to + at) / bs, &e))?;
        }
        done += step;
    }
    if dst_write_through {
        dst.backend()
            .flush()
            .map_err(|e| io_error(IoOp::Flush, seg.destination_lba, &e))?;
    }
    Ok(len)
}

/// RECEIVE COPY RESULTS: COPY STATUS (LID1) and OPERATING PARAMETERS.
pub fn receive_copy_results(
    lu: &LogicalUnit,
    nexus: &Nexus,
    service_action: u8,
    list_identifier: u32,
    allocation_length: u32,
) -> Outcome {
    let data = match service_action {
        0x00 => {
            let list = u8::try_from(list_identifier).unwrap_or(u8::MAX);
            let status = lu
                .lock()
                .copies
                .get(&NexusKey::of(nexus), list)
                .ok_or_else(|| Sense::invalid_field_in_cdb(2, None))?;
            status.encode()
        }
        0x03 => CopyOperatingParameters {
            snlid: true,
            max_target_descriptors: MAX_TARGET_DESCRIPTORS,
            max_segment_descriptors: MAX_SEGMENT_DESCRIPTORS,
            max_descriptor_list_length: MAX_DESCRIPTOR_LIST_LENGTH,
            max_segment_length: u32::try_from(0xffff * u64::from(lu.block_size()))
                .unwrap_or(u32::MAX),
            max_inline_data_length: 0,
            held_data_limit: 0,
            max_stream_transfer_size: 0,
            // Copies run to completion as their commands arrive; as many
            // run at once as commands do.
            total_concurrent_copies: HELD_RESULTS as u16,
            max_concurrent_copies: HELD_RESULTS as u8,
            data_segment_granularity: lu.block_size().trailing_zeros() as u8,
            inline_data_granularity: 0,
            held_data_granularity: 0,
            implemented_descriptors: vec![
                segment_type::BLOCK_TO_BLOCK,
                target_type::IDENTIFICATION,
            ],
        }
        .encode(),
        // The dispatcher admits only the two service actions above.
        _ => return Err(Sense::invalid_field_in_cdb(1, Some(4))),
    };
    Ok(Bytes::from(truncate(data, allocation_length)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use iesp_proto::bhs::Lun;
    use iesp_proto::scsi::xcopy::{IdentificationTarget, XcopyHeader};
    use iesp_proto::scsi::{ScsiStatus, SenseKeySpecific};

    use super::*;
    use crate::backend::RamBackend;
    use crate::scsi::testutil::{check_of, nexus, sense_of};
    use crate::scsi::{Completion, Transfer};

    /// Two RAM units of 1024 blocks, and a read-only one; a cleared nexus.
    fn table() -> (LunTable, Nexus) {
        let lu = |n: u8, ro: bool| {
            Arc::new(LogicalUnit::new(
                Box::new(RamBackend::new(1024 * 512)),
                512,
                ro,
                format!("IESP0000{n:04x}"),
            ))
        };
        let t = LunTable::new(vec![lu(0, false), lu(1, false), lu(2, true)]);
        let n = nexus(1);
        for i in 0..3 {
            t.execute(&n, Lun::from_index(i), &Cdb::TestUnitReady.encode(), &[], 0);
        }
        (t, n)
    }

    /// The Identification descriptor of unit `i` by its NAA designator.
    fn target(t: &LunTable, n: &Nexus, i: usize) -> TargetDescriptor {
        let lu = t.iter().nth(i).expect("unit");
        let naa = inquiry::designators(lu, n)
            .into_iter()
            .find(|d| d.designator_type == DesignatorType::NAA)
            .expect("NAA designator");
        TargetDescriptor::Identification(IdentificationTarget {
            code_set: 1,
            designator_type: 3,
            designator: naa.designator,
            type_specific: [0, 0, 0, 0, 0, 0, 2, 0],
            ..Default::default()
        })
    }

    fn segment(src: u16, dst: u16, blocks: u16, from: u64, to: u64) -> SegmentDescriptor {
        SegmentDescriptor::BlockToBlock(BlockToBlock {
            source: src,
            destination: dst,
            blocks,
            source_lba: from,
            destination_lba: to,
            ..Default::default()
        })
    }

    fn list(list_id: u8, targets: Vec<TargetDescriptor>, segs: Vec<SegmentDescriptor>) -> Vec<u8> {
        ExtendedCopyParameters {
            header: XcopyHeader {
                list_identifier: list_id,
                ..Default::default()
            },
            targets,
            segments: segs.into_iter().map(|s| (0, s)).collect(),
            inline_data: Vec::new(),
        }
        .encode()
    }

    fn xcopy(t: &LunTable, n: &Nexus, lun: u16, data: &[u8]) -> Completion {
        let cdb = Cdb::ExtendedCopy {
            service_action: 0,
            parameter_list_length: data.len() as u32,
        };
        t.execute(
            n,
            Lun::from_index(lun),
            &cdb.encode(),
            data,
            data.len() as u32,
        )
    }

    fn rw(t: &LunTable, n: &Nexus, lun: u16, cdb: Cdb, data: &[u8]) -> Completion {
        t.execute(
            n,
            Lun::from_index(lun),
            &cdb.encode(),
            data,
            data.len() as u32,
        )
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(29) ^ seed ^ (i >> 9) as u8)
            .collect()
    }

    #[test]
    fn copies_within_and_across_units_and_reports_status() {
        let (t, n) = table();
        let data = pattern(300 * 512, 3);
        rw(&t, &n, 0, Cdb::write(CdbSize::Ten, 10, 300, false), &data);
        // Within unit 0 (sent to unit 0), then to unit 1 (sent to unit 1):
        // the copy manager is any unit of the target.
        let l = list(
            5,
            vec![target(&t, &n, 0), target(&t, &n, 1)],
            vec![segment(0, 0, 300, 10, 700), segment(0, 1, 300, 10, 0)],
        );
        let c = xcopy(&t, &n, 1, &l);
        assert_eq!(c.status, 0, "{:?}", sense_of(&c));
        let back0 = rw(&t, &n, 0, Cdb::read(CdbSize::Ten, 700, 300), &[]).data;
        let back1 = rw(&t, &n, 1, Cdb::read(CdbSize::Ten, 0, 300), &[]).data;
        assert!(back0[..] == data[..] && back1[..] == data[..]);
        let cdb = Cdb::ReceiveCopyResults {
            service_action: 0,
            list_identifier: 5,
            allocation_length: 64,
        };
        let s = rw(&t, &n, 1, cdb.clone(), &[]);
        let status = CopyStatus::parse(&s.data).expect("parses");
        assert_eq!(
            status,
            CopyStatus {
                hdd: false,
                status: copy_manager_status::COMPLETED,
                segments_processed: 2,
                transfer_count_units: 0,
                transfer_count: 2 * 300 * 512,
            }
        );
        // Another list identifier, or the same from another nexus: unknown.
        let other = Cdb::ReceiveCopyResults {
            service_action: 0,
            list_identifier: 6,
            allocation_length: 64,
        };
        assert_eq!(
            check_of(&rw(&t, &n, 1, other, &[])).asc,
            Asc::INVALID_FIELD_IN_CDB
        );
        let m = nexus(2);
        t.execute(&m, Lun::from_index(1), &Cdb::TestUnitReady.encode(), &[], 0);
        assert_eq!(
            check_of(&rw(&t, &m, 1, cdb, &[])).asc,
            Asc::INVALID_FIELD_IN_CDB
        );
        // An empty list copies nothing and is GOOD.
        assert_eq!(xcopy(&t, &n, 0, &[]).status, 0);
    }

    #[test]
    fn overlapping_copies_behave_as_through_a_buffer() {
        let (t, n) = table();
        // More than one chunk, overlapping by all but 10 blocks, both ways.
        let data = pattern(2100 / 4 * 512, 9);
        let blocks = (data.len() / 512) as u16;
        for (from, to) in [(0u64, 10u64), (10, 0)] {
            rw(
                &t,
                &n,
                0,
                Cdb::write(CdbSize::Ten, from, u32::from(blocks), false),
                &data,
            );
            let l = list(
                0,
                vec![target(&t, &n, 0)],
                vec![segment(0, 0, blocks, from, to)],
            );
            assert_eq!(xcopy(&t, &n, 0, &l).status, 0);
            let back = rw(
                &t,
                &n,
                0,
                Cdb::read(CdbSize::Ten, to, u32::from(blocks)),
                &[],
            )
            .data;
            assert!(back[..] == data[..], "{from} -> {to}");
        }
    }

    #[test]
    fn operating_parameters_describe_the_limits() {
        let (t, n) = table();
        let cdb = Cdb::ReceiveCopyResults {
            service_action: 3,
            list_identifier: 0,
            allocation_length: 1024,
        };
        let p = CopyOperatingParameters::parse(&rw(&t, &n, 0, cdb, &[]).data).expect("parses");
        assert_eq!(
            (
                p.max_target_descriptors,
                p.max_segment_descriptors,
                p.max_descriptor_list_length,
                p.max_inline_data_length,
                p.data_segment_granularity
            ),
            (8, 16, 4096, 0, 9)
        );
        assert!(p.snlid);
        assert_eq!(p.implemented_descriptors, vec![0x02, 0xe4]);
        // RECEIVE COPY DATA holds nothing: not supported.
        let data = Cdb::ReceiveCopyResults {
            service_action: 1,
            list_identifier: 0,
            allocation_length: 1024,
        };
        assert_eq!(
            check_of(&rw(&t, &n, 0, data, &[])).sense_key_specific,
            Some(SenseKeySpecific::FieldPointer {
                cd: true,
                bit: Some(4),
                field: 1
            })
        );
    }

    #[test]
    fn list_errors_are_reported_before_anything_is_copied() {
        let (t, n) = table();
        rw(
            &t,
            &n,
            0,
            Cdb::write(CdbSize::Ten, 0, 1, false),
            &[0x77; 512],
        );
        let good = list(1, vec![target(&t, &n, 0)], vec![segment(0, 0, 1, 0, 5)]);
        // Truncated lists.
        for cut in [10, 16 + 31, good.len() - 1] {
            let s = check_of(&xcopy(&t, &n, 0, &good[..cut]));
            assert_eq!(s.asc, Asc::PARAMETER_LIST_LENGTH_ERROR, "{cut}");
        }
        // Too many descriptors of either kind.
        let s = check_of(&xcopy(
            &t,
            &n,
            0,
            &list(1, vec![target(&t, &n, 0); 9], vec![segment(0, 0, 1, 0, 5)]),
        ));
        assert_eq!(s.asc, Asc::TOO_MANY_TARGET_DESCRIPTORS);
        let s = check_of(&xcopy(
            &t,
            &n,
            0,
            &list(1, vec![target(&t, &n, 0)], vec![segment(0, 0, 1, 0, 5); 17]),
        ));
        assert_eq!(s.asc, Asc::TOO_MANY_SEGMENT_DESCRIPTORS);
        // Unsupported types.
        let mut fc = good.clone();
        fc[16] = 0xe0;
        assert_eq!(
            check_of(&xcopy(&t, &n, 0, &fc)).asc,
            Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE
        );
        let mut stream = good.clone();
        stream[48] = 0x03;
        assert_eq!(
            check_of(&xcopy(&t, &n, 0, &stream)).asc,
            Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE
        );
        // LIST ID USAGE 01b is reserved; 11b needs list identifier 0.
        let mut usage = good.clone();
        usage[1] = 0x08;
        assert_eq!(
            check_of(&xcopy(&t, &n, 0, &usage)).asc,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST
        );
        usage[1] = 0x18;
        assert_eq!(
            check_of(&xcopy(&t, &n, 0, &usage)).asc,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST
        );
        // Longer than any valid list: refused from the CDB alone.
        let huge = Cdb::ExtendedCopy {
            service_action: 0,
            parameter_list_length: MAX_PARAMETER_LIST + 1,
        };
        assert_eq!(
            t.transfer(Lun::from_index(0), &huge.encode()),
            Transfer::NONE
        );
        assert_eq!(
            rw(&t, &n, 0, Cdb::read(CdbSize::Ten, 5, 1), &[]).data[..],
            [0u8; 512][..],
            "nothing was copied"
        );
    }

    #[test]
    fn segment_errors_abort_the_copy() {
        let (t, n) = table();
        let abort = |c: &Completion| {
            let s = check_of(c);
            assert_eq!(s.key, SenseKey::COPY_ABORTED);
            s
        };
        // A destination index with no descriptor.
        let s = abort(&xcopy(
            &t,
            &n,
            0,
            &list(1, vec![target(&t, &n, 0)], vec![segment(0, 1, 1, 0, 5)]),
        ));
        // (Segment 0: COMMAND-SPECIFIC INFORMATION 0, which fixed-format
        // sense cannot tell from none.)
        assert_eq!(s.asc, Asc::UNREACHABLE_COPY_TARGET);
        // A designator of no unit here.
        let mut stranger = target(&t, &n, 0);
        if let TargetDescriptor::Identification(id) = &mut stranger {
            id.designator[7] ^= 0xff;
        }
        let s = abort(&xcopy(
            &t,
            &n,
            0,
            &list(1, vec![stranger], vec![segment(0, 0, 1, 0, 5)]),
        ));
        assert_eq!(s.asc, Asc::UNREACHABLE_COPY_TARGET);
        // Beyond the end, in the second segment: the first stays copied,
        // and the status says so.
        rw(
            &t,
            &n,
            0,
            Cdb::write(CdbSize::Ten, 0, 1, false),
            &[0x42; 512],
        );
        let s = abort(&xcopy(
            &t,
            &n,
            0,
            &list(
                9,
                vec![target(&t, &n, 0)],
                vec![segment(0, 0, 1, 0, 5), segment(0, 0, 2, 0, 1023)],
            ),
        ));
        assert_eq!((s.information, s.command_specific), (Some(1023), Some(1)));
        assert_eq!(
            rw(&t, &n, 0, Cdb::read(CdbSize::Ten, 5, 1), &[]).data[..],
            [0x42; 512][..]
        );
        let st = rw(
            &t,
            &n,
            0,
            Cdb::ReceiveCopyResults {
                service_action: 0,
                list_identifier: 9,
                allocation_length: 12,
            },
            &[],
        );
        let st = CopyStatus::parse(&st.data).expect("parses");
        assert_eq!(
            (st.status, st.segments_processed),
            (copy_manager_status::FAILED, 1)
        );
        // Another block length.
        let mut odd = target(&t, &n, 0);
        if let TargetDescriptor::Identification(id) = &mut odd {
            id.type_specific = [0, 0, 0, 0, 0, 0, 0x10, 0];
        }
        let s = abort(&xcopy(
            &t,
            &n,
            0,
            &list(1, vec![odd], vec![segment(0, 0, 1, 0, 5)]),
        ));
        assert_eq!(s.asc, Asc::INCORRECT_COPY_TARGET_DEVICE_TYPE);
        // A read-only destination.
        let s = check_of(&xcopy(
            &t,
            &n,
            0,
            &list(
                1,
                vec![target(&t, &n, 0), target(&t, &n, 2)],
                vec![segment(0, 1, 1, 0, 0)],
            ),
        ));
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED)
        );
    }

    #[test]
    fn a_destination_reserved_by_another_nexus_conflicts() {
        let (t, n) = table();
        let other = nexus(4);
        let lun1 = Lun::from_index(1);
        t.execute(&other, lun1, &Cdb::TestUnitReady.encode(), &[], 0);
        assert_eq!(
            t.execute(&other, lun1, &Cdb::Reserve6.encode(), &[], 0)
                .status,
            0
        );
        let c = xcopy(
            &t,
            &n,
            0,
            &list(
                1,
                vec![target(&t, &n, 0), target(&t, &n, 1)],
                vec![segment(0, 1, 1, 0, 0)],
            ),
        );
        assert_eq!(c.status, ScsiStatus::RESERVATION_CONFLICT.0);
    }
}
