//! Logical block provisioning: WRITE SAME(10)/(16), UNMAP and GET LBA
//! STATUS (SBC-4 §4.7, §5.46, §5.47, §5.31, §5.7).
//!
//! A logical unit is thin provisioned when its backend can deallocate
//! ([`crate::backend::Provisioning`]): READ CAPACITY(16) then reports LBPME=1
//! and LBPRZ as the backend promises, the Logical Block Provisioning VPD
//! page says LBPU, LBPWS, LBPWS10 and provisioning type "thin", and the
//! Block Limits page gives the limits below. Anchored blocks are not
//! supported (ANC_SUP=0): ANCHOR=1 is INVALID FIELD IN CDB.
//!
//! ## WRITE SAME
//!
//! NUMBER OF LOGICAL BLOCKS 0 means "to the last LBA" (WSNZ=0). More than
//! [`MAX_WRITE_SAME_BLOCKS`] is INVALID FIELD IN CDB. The one block of
//! Data-Out (none with NDOB, which means zeroes) is written over the range
//! through a large buffer, never block by block; a zero block goes to the
//! backend's write-zeroes, which keeps the blocks mapped. With the UNMAP
//! bit the range is deallocated whatever the block holds: SBC-4 §5.50 lets
//! the device server unmap each LBA instead of writing it, and reads then
//! return what LBPRZ says (zeroes on every backend that reports LBPRZ=1).
//! Initiators send a zero block with UNMAP=1 (Linux does), so the two
//! readings agree in practice. UNMAP=1 on a fully provisioned unit is
//! INVALID FIELD IN CDB.
//!
//! ## UNMAP
//!
//! The parameter list is checked whole before anything is deallocated: at
//! most [`MAX_UNMAP_DESCRIPTORS`] descriptors (else INVALID FIELD IN
//! PARAMETER LIST), each in range (else LBA OUT OF RANGE with the
//! descriptor's LBA). A descriptor of 0 blocks is ignored wherever it points.
//! MAXIMUM UNMAP LBA COUNT is "no limit": deallocation costs the backends
//! the same for any length.
//!
//! ## GET LBA STATUS
//!
//! Descriptors from the starting LBA, merged when adjacent extents have the
//! same status, as many as the allocation length holds (at most
//! [`MAX_LBA_STATUS_DESCRIPTORS`]). "Deallocated" means wholly deallocated
//! blocks; a block the backend reports partly allocated is mapped.
//! REPORT TYPE filters: 1 non-mapped, 2 mapped, 3 deallocated only.

use bytes::Bytes;
use iesp_proto::scsi::capacity::ProvisioningStatus;
use iesp_proto::scsi::unmap::UnmapParameters;
use iesp_proto::scsi::{Asc, Cdb, CdbSize, LbaStatusData, LbaStatusDescriptor, Sense, truncate};

use super::lu::{LogicalUnit, Snapshot};
use super::sense::{IoOp, Outcome, io_error};
use crate::backend::{MapState, write_repeated};

/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;

/// MAXIMUM UNMAP LBA COUNT: no limit.
pub const MAX_UNMAP_LBA_COUNT: u32 = u32::MAX;

/// MAXIMUM WRITE SAME LENGTH in blocks: what WRITE SAME(10) can express,
/// so both forms have one limit. 32 MiB of 512-byte blocks bounds the time
/// a command that must write takes to a few tens of milliseconds.
pub const MAX_WRITE_SAME_BLOCKS: u64 = 0xffff;

/// Descriptors one GET LBA STATUS returns at most.
pub const MAX_LBA_STATUS_DESCRIPTORS: usize = 128;

/// The blocks a WRITE SAME covers (0 meaning "to the end").
fn write_same_blocks(lu: &LogicalUnit, lba: u64, blocks: u32) -> u64 {
    if blocks == 0 {
        lu.blocks().saturating_sub(lba)
    } else {
        u64::from(blocks)
    }
}

/// The CDB-only checks of the family (see [`super::rw::precheck`] for the
/// order).
pub fn precheck(lu: &LogicalUnit, cdb: &Cdb, write_protected: bool) -> Result<(), Sense> {
    match *cdb {
        Cdb::WriteSame {
            size,
            lba,
            blocks,
            wrprotect,
            anchor,
            unmap,
            ..
        } => {
            if wrprotect != 0 {
                return Err(Sense::invalid_field_in_cdb(1, Some(7)));
            }
            if anchor {
                return Err(Sense::invalid_field_in_cdb(1, Some(4)));
            }
            if unmap && lu.provisioning().is_none() {
                return Err(Sense::invalid_field_in_cdb(1, Some(3)));
            }
            if lba >= lu.blocks() {
                return Err(Sense::lba_out_of_range(lba));
            }
            let n = write_same_blocks(lu, lba, blocks);
            if n > MAX_WRITE_SAME_BLOCKS {
                let at = if size == CdbSize::Sixteen { 10 } else { 7 };
                return Err(Sense::invalid_field_in_cdb(at, None));
            }
            if lba.checked_add(n).is_none_or(|end| end > lu.blocks()) {
                return Err(Sense::lba_out_of_range(lba));
            }
            if write_protected {
                return Err(Sense::data_protect(Asc::WRITE_PROTECTED));
            }
            Ok(())
        }
        Cdb::Unmap { anchor, .. } => {
            if anchor {
                return Err(Sense::invalid_field_in_cdb(1, Some(0)));
            }
            if write_protected {
                return Err(Sense::data_protect(Asc::WRITE_PROTECTED));
            }
            Ok(())
        }
        Cdb::GetLbaStatus { lba, .. } if lba >= lu.blocks() => Err(Sense::lba_out_of_range(lba)),
        _ => Ok(()),
    }
}

/// WRITE SAME (after [`precheck`]); see the module docs.
pub fn write_same(lu: &LogicalUnit, cdb: &Cdb, data_out: &[u8], snap: Snapshot) -> Outcome {
    let Cdb::WriteSame {
        lba,
        blocks,
        unmap,
        ndob,
        ..
    } = *cdb
    else {
        return Err(Sense::invalid_command_operation_code());
    };
    let bs = lu.block_size() as usize;
    let block = if ndob {
        None
    } else {
        let Some(block) = data_out.get(..bs) else {
            return Err(Sense::illegal_request(
                Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
            ));
        };
        Some(block)
    };
    let n = write_same_blocks(lu, lba, blocks);
    let (offset, len) = (lba * bs as u64, n * bs as u64);
    let zero = block.is_none_or(|b| b.iter().all(|x| *x == 0));
    // Precheck refused UNMAP=1 on a fully provisioned unit.
    let deallocate = unmap && lu.provisioning().is_some();
    {
        // Shared with other writes; see `LogicalUnit::shared_io`.
        let _io = lu.shared_io();
        let backend = lu.backend();
        let result = match block {
            _ if deallocate => backend.discard(offset, len),
            _ if zero => backend.write_zeroes(offset, len),
            Some(b) => write_repeated(backend, b, offset, len),
            None => backend.write_zeroes(offset, len),
        };
        let op = if deallocate { IoOp::Unmap } else { IoOp::Write };
        result.map_err(|e| io_error(op, lba, &e))?;
    }
    write_through(lu, snap, lba)?;
    Ok(Bytes::new())
}

/// With the write cache disabled by MODE SELECT (WCE=0), what completes is
/// on the medium.
fn write_through(lu: &LogicalUnit, snap: Snapshot, lba: u64) -> Result<(), Sense> {
    if lu.write_cache() && !snap.write_cache {
        lu.backend()
            .flush()
            .map_err(|e| io_error(IoOp::Flush, lba, &e))?;
    }
    Ok(())
}

/// UNMAP (after [`precheck`]); see the module docs.
pub fn unmap(
    lu: &LogicalUnit,
    parameter_list_length: u16,
    data_out: &[u8],
    snap: Snapshot,
) -> Outcome {
    let Some(list) = data_out.get(..usize::from(parameter_list_length)) else {
        return Err(Sense::parameter_list_length_error());
    };
    let params = UnmapParameters::parse(list).map_err(|e| e.sense())?;
    if params.descriptors.len() > MAX_UNMAP_DESCRIPTORS as usize {
        // UNMAP BLOCK DESCRIPTOR DATA LENGTH announces too many.
        return Err(Sense::invalid_field_in_parameter_list(2, None));
    }
    for d in params.descriptors.iter().filter(|d| d.blocks > 0) {
        let end = d.lba.checked_add(u64::from(d.blocks));
        if end.is_none_or(|e| e > lu.blocks()) {
            return Err(Sense::lba_out_of_range(d.lba));
        }
    }
    let bs = u64::from(lu.block_size());
    {
        let _io = lu.shared_io();
        for d in params.descriptors.iter().filter(|d| d.blocks > 0) {
            lu.backend()
                .discard(d.lba * bs, u64::from(d.blocks) * bs)
                .map_err(|e| io_error(IoOp::Unmap, d.lba, &e))?;
        }
    }
    write_through(lu, snap, 0)?;
    Ok(Bytes::new())
}

/// GET LBA STATUS (after [`precheck`]); see the module docs.
pub fn get_lba_status(
    lu: &LogicalUnit,
    start: u64,
    allocation_length: u32,
    report_type: u8,
) -> Outcome {
    let room = (allocation_length.saturating_sub(8) / 16) as usize;
    let wanted = room.clamp(1, MAX_LBA_STATUS_DESCRIPTORS);
    let bs = u64::from(lu.block_size());
    let keep = |s: ProvisioningStatus| match report_type {
        1 => s != ProvisioningStatus::MAPPED_OR_UNKNOWN,
        2 => s == ProvisioningStatus::MAPPED_OR_UNKNOWN,
        3 => s == ProvisioningStatus::DEALLOCATED,
        _ => true,
    };
    let mut out: Vec<LbaStatusDescriptor> = Vec::new();
    let mut lba = start;
    // Bounded work whatever the filter: a fragmented file cannot make one
    // command walk it all.
    let mut steps = 0;
    while lba < lu.blocks() && steps < 8 * MAX_LBA_STATUS_DESCRIPTORS {
        steps += 1;
        let left = lu.blocks() - lba;
        let ask = left.min(u64::from(u32::MAX)) * bs;
        let extent = lu
            .backend()
            .mapping(lba * bs, ask)
            .map_err(|e| io_error(IoOp::Read, lba, &e))?;
        let (status, n) = match extent.state {
            MapState::Deallocated if extent.len >= bs => {
                (ProvisioningStatus::DEALLOCATED, extent.len / bs)
            }
            _ => (
                ProvisioningStatus::MAPPED_OR_UNKNOWN,
                extent.len.div_ceil(bs).max(1),
            ),
        };
        let n = n.min(left).min(u64::from(u32::MAX));
        if keep(status) {
            let full = out.len() == wanted;
            match out.last_mut() {
                Some(last)
                    if last.provisioning_status == status
                        && last.lba + u64::from(last.blocks) == lba
                        && u64::from(last.blocks) + n <= u64::from(u32::MAX) =>
                {
                    last.blocks += n as u32;
                }
                _ if full => break,
                _ => out.push(LbaStatusDescriptor {
                    lba,
                    blocks: n as u32,
                    provisioning_status: status,
                    additional_status: 0,
                }),
            }
        }
        lba += n;
    }
    let data = LbaStatusData { descriptors: out }.encode();
    Ok(Bytes::from(truncate(data, allocation_length)))
}

#[cfg(test)]
mod tests {
    use iesp_proto::bhs::Lun;
    use iesp_proto::scsi::inquiry::{LogicalBlockProvisioning, Vpd, VpdPage};
    use iesp_proto::scsi::unmap::UnmapDescriptor;
    use iesp_proto::scsi::{ReadCapacity16Data, SenseKeySpecific};

    use super::*;
    use crate::scsi::testutil::Harness;

    fn ws(size: CdbSize, lba: u64, blocks: u32, unmap: bool) -> Cdb {
        Cdb::WriteSame {
            size,
            lba,
            blocks,
            wrprotect: 0,
            anchor: false,
            unmap,
            ndob: false,
            group: 0,
        }
    }

    fn unmap_cdb(len: usize) -> Cdb {
        Cdb::Unmap {
            anchor: false,
            group: 0,
            parameter_list_length: len as u16,
        }
    }

    fn unmap_list(d: &[(u64, u32)]) -> Vec<u8> {
        UnmapParameters {
            descriptors: d
                .iter()
                .map(|&(lba, blocks)| UnmapDescriptor { lba, blocks })
                .collect(),
        }
        .encode()
    }

    fn status(h: &Harness, lba: u64, alloc: u32) -> LbaStatusData {
        let data = h.good(
            &Cdb::GetLbaStatus {
                lba,
                allocation_length: alloc,
                report_type: 0,
            },
            &[],
        );
        LbaStatusData::parse(&data).expect("parses")
    }

    /// RAM disk of 1024 blocks = 8 chunks of 128 blocks.
    fn ram() -> Harness {
        Harness::ram(1024)
    }

    #[test]
    fn thin_provisioning_is_reported() {
        let h = ram();
        let rc = ReadCapacity16Data::parse(&h.good(&Cdb::read_capacity16(), &[])).unwrap();
        assert!(rc.lbpme && rc.lbprz);
        let Vpd { page, .. } = Vpd::parse(&h.good(&Cdb::inquiry(Some(0xb2), 255), &[])).unwrap();
        let VpdPage::LogicalBlockProvisioning(lbp) = page else {
            panic!("{page:?}")
        };
        assert_eq!(
            lbp,
            LogicalBlockProvisioning {
                lbpu: true,
                lbpws: true,
                lbpws10: true,
                lbprz: 1,
                provisioning_type: LogicalBlockProvisioning::THIN,
                ..Default::default()
            }
        );
    }

    #[test]
    fn write_same_writes_the_block_everywhere() {
        let h = ram();
        let block: Vec<u8> = (0..512).map(|i| (i % 7) as u8 + 1).collect();
        for size in [CdbSize::Ten, CdbSize::Sixteen] {
            h.good(&ws(size, 10, 300, false), &block);
            let back = h.good(&Cdb::read(CdbSize::Ten, 10, 300), &[]);
            assert!(back.chunks(512).all(|c| c == &block[..]), "{size:?}");
            assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 310, 1), &[]), vec![0; 512]);
        }
        // NDOB writes zeroes and leaves the blocks mapped.
        let ndob = Cdb::WriteSame {
            size: CdbSize::Sixteen,
            lba: 10,
            blocks: 300,
            wrprotect: 0,
            anchor: false,
            unmap: false,
            ndob: true,
            group: 0,
        };
        assert_eq!(
            h.table.transfer(Lun::from_index(0), &ndob.encode()).length,
            0
        );
        h.good(&ndob, &[]);
        assert_eq!(
            h.good(&Cdb::read(CdbSize::Ten, 10, 300), &[]),
            vec![0; 300 * 512]
        );
        let s = status(&h, 0, 24).descriptors[0];
        assert_eq!(s.provisioning_status, ProvisioningStatus::MAPPED_OR_UNKNOWN);
    }

    #[test]
    fn write_same_zero_length_means_to_the_end_within_the_limit() {
        let h = ram();
        h.good(&ws(CdbSize::Ten, 1000, 0, false), &[0x5a; 512]);
        let back = h.good(&Cdb::read(CdbSize::Ten, 999, 25), &[]);
        assert_eq!(&back[..512], &[0; 512][..]);
        assert!(back[512..].iter().all(|x| *x == 0x5a));
        // Beyond the end, with and without length.
        for (lba, n) in [(1024, 0), (1025, 0), (1020, 5), (u64::MAX, 1)] {
            assert_eq!(
                h.check(&ws(CdbSize::Sixteen, lba, n, false), &[0; 512]).asc,
                Asc::LBA_OUT_OF_RANGE
            );
        }
    }

    #[test]
    fn write_same_limit_and_field_checks() {
        let blocks = 1 << 20; // more blocks than the limit
        let (h, _) = crate::scsi::rw::tests::probed(1 << 20, blocks * 512, nix::libc::EIO);
        let max = MAX_WRITE_SAME_BLOCKS;
        let s = h.check(&ws(CdbSize::Sixteen, 0, max as u32 + 1, false), &[0; 512]);
        assert_eq!(
            s.sense_key_specific,
            Some(SenseKeySpecific::FieldPointer {
                cd: true,
                bit: None,
                field: 10
            })
        );
        // Zero blocks from LBA 0 covers more than the limit.
        assert_eq!(
            h.check(&ws(CdbSize::Ten, 0, 0, false), &[0; 512]).asc,
            Asc::INVALID_FIELD_IN_CDB
        );
        let h = ram();
        let mut anchored = ws(CdbSize::Ten, 0, 1, true);
        if let Cdb::WriteSame { anchor, .. } = &mut anchored {
            *anchor = true;
        }
        assert_eq!(
            h.check(&anchored, &[0; 512]).sense_key_specific,
            Some(SenseKeySpecific::FieldPointer {
                cd: true,
                bit: Some(4),
                field: 1
            })
        );
        let mut protect = ws(CdbSize::Ten, 0, 1, false);
        if let Cdb::WriteSame { wrprotect, .. } = &mut protect {
            *wrprotect = 3;
        }
        assert_eq!(h.check(&protect, &[0; 512]).asc, Asc::INVALID_FIELD_IN_CDB);
        // A partial block of data is refused.
        assert_eq!(
            h.check(&ws(CdbSize::Ten, 0, 1, false), &[0; 100]).asc,
            Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT
        );
    }

    #[test]
    fn write_same_unmap_deallocates_whatever_the_block() {
        let h = ram();
        h.good(
            &Cdb::write(CdbSize::Ten, 0, 512, false),
            &vec![0xff; 512 * 512],
        );
        h.good(&ws(CdbSize::Ten, 128, 256, true), &[0; 512]);
        assert_eq!(
            h.good(&Cdb::read(CdbSize::Ten, 128, 256), &[]),
            vec![0; 256 * 512]
        );
        let d = status(&h, 0, 1024).descriptors;
        let got: Vec<_> = d
            .iter()
            .map(|d| (d.lba, d.blocks, d.provisioning_status))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 128, ProvisioningStatus::MAPPED_OR_UNKNOWN),
                (128, 256, ProvisioningStatus::DEALLOCATED),
                (384, 128, ProvisioningStatus::MAPPED_OR_UNKNOWN),
                (512, 512, ProvisioningStatus::DEALLOCATED),
            ]
        );
        // The block does not matter: the range is unmapped and reads as
        // LBPRZ says (libiscsi WriteSame10.UnmapUntilEnd sends 0xff).
        h.good(&ws(CdbSize::Sixteen, 0, 128, true), &[0x11; 512]);
        assert_eq!(
            h.good(&Cdb::read(CdbSize::Ten, 0, 128), &[]),
            vec![0; 128 * 512]
        );
        assert_eq!(
            status(&h, 0, 24).descriptors[0].provisioning_status,
            ProvisioningStatus::DEALLOCATED
        );
    }

    #[test]
    fn unmap_checks_the_whole_list_first() {
        let h = ram();
        h.good(
            &Cdb::write(CdbSize::Ten, 0, 256, false),
            &vec![0xee; 256 * 512],
        );
        // One bad descriptor: nothing is deallocated.
        let list = unmap_list(&[(0, 128), (1000, 100)]);
        let s = h.check(&unmap_cdb(list.len()), &list);
        assert_eq!((s.asc, s.information), (Asc::LBA_OUT_OF_RANGE, Some(1000)));
        assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 0, 1), &[]), vec![0xee; 512]);
        // Zero-length descriptors anywhere are fine; so is an empty list.
        let list = unmap_list(&[(1024, 0), (u64::MAX, 0), (0, 128), (130, 1)]);
        h.good(&unmap_cdb(list.len()), &list);
        h.good(&unmap_cdb(0), &[]);
        assert_eq!(
            h.good(&Cdb::read(CdbSize::Ten, 0, 256), &[])[..],
            {
                let mut v = vec![0u8; 256 * 512];
                v[128 * 512..130 * 512].fill(0xee);
                v[131 * 512..].fill(0xee);
                v
            }[..]
        );
        assert_eq!(
            status(&h, 0, 24).descriptors[0].provisioning_status,
            ProvisioningStatus::DEALLOCATED
        );
        // Too many descriptors.
        let many: Vec<(u64, u32)> = (0..=MAX_UNMAP_DESCRIPTORS as u64).map(|i| (i, 1)).collect();
        let list = unmap_list(&many);
        assert_eq!(
            h.check(&unmap_cdb(list.len()), &list).asc,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST
        );
        // A list shorter than its header, or than the CDB says.
        assert_eq!(
            h.check(&unmap_cdb(4), &[0; 4]).asc,
            Asc::PARAMETER_LIST_LENGTH_ERROR
        );
        let list = unmap_list(&[(0, 1)]);
        assert_eq!(
            h.check(&unmap_cdb(list.len()), &list[..10]).asc,
            Asc::PARAMETER_LIST_LENGTH_ERROR
        );
        let anchored = Cdb::Unmap {
            anchor: true,
            group: 0,
            parameter_list_length: 0,
        };
        assert_eq!(h.check(&anchored, &[]).asc, Asc::INVALID_FIELD_IN_CDB);
    }

    #[test]
    fn get_lba_status_descriptors_and_limits() {
        let h = ram();
        h.good(&Cdb::write(CdbSize::Ten, 130, 1, false), &[1; 512]);
        // Starting inside a mapped chunk: the first descriptor starts there.
        let d = status(&h, 200, 1024).descriptors;
        assert_eq!(
            (d[0].lba, d[0].blocks, d[0].provisioning_status),
            (200, 56, ProvisioningStatus::MAPPED_OR_UNKNOWN)
        );
        assert_eq!((d[1].lba, d[1].blocks), (256, 768));
        // The allocation length bounds the count but not PARAMETER DATA
        // LENGTH of what fits.
        let d = status(&h, 0, 24).descriptors;
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].lba, d[0].blocks), (0, 128));
        let d = status(&h, 1023, 24).descriptors;
        assert_eq!((d[0].lba, d[0].blocks), (1023, 1));
        for lba in [1024, 1 << 63, u64::MAX] {
            let s = h.check(
                &Cdb::GetLbaStatus {
                    lba,
                    allocation_length: 24,
                    report_type: 0,
                },
                &[],
            );
            assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
        }
        // REPORT TYPE 2: mapped only.
        let data = h.good(
            &Cdb::GetLbaStatus {
                lba: 0,
                allocation_length: 1024,
                report_type: 2,
            },
            &[],
        );
        let d = LbaStatusData::parse(&data).unwrap().descriptors;
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].lba, d[0].blocks), (128, 128));
    }

    #[test]
    fn read_only_unit_refuses_unmap_and_write_same() {
        let h = Harness::new(1024, 512, true);
        let list = unmap_list(&[(0, 1)]);
        for (cdb, data) in [
            (unmap_cdb(list.len()), list.clone()),
            (ws(CdbSize::Ten, 0, 1, true), vec![0; 512]),
            (ws(CdbSize::Sixteen, 0, 1, false), vec![0; 512]),
        ] {
            let s = h.check(&cdb, &data);
            assert_eq!(s.asc, Asc::WRITE_PROTECTED, "{cdb:?}");
        }
    }

    #[test]
    fn fully_provisioned_units_refuse_the_unmap_bit() {
        // The Probe backend in rw's tests claims no provisioning.
        let (h, _) = crate::scsi::rw::tests::probed(1 << 20, 1 << 20, nix::libc::EIO);
        assert_eq!(
            h.check(&ws(CdbSize::Ten, 0, 1, true), &[0; 512])
                .sense_key_specific,
            Some(SenseKeySpecific::FieldPointer {
                cd: true,
                bit: Some(3),
                field: 1
            })
        );
        h.good(&ws(CdbSize::Ten, 0, 1, false), &[0; 512]);
        let rc = ReadCapacity16Data::parse(&h.good(&Cdb::read_capacity16(), &[])).unwrap();
        assert!(!rc.lbpme && !rc.lbprz);
        // UNMAP is not a command of this unit.
        assert_eq!(
            h.check(&unmap_cdb(0), &[]).asc,
            Asc::INVALID_COMMAND_OPERATION_CODE
        );
        assert!(h.check(&Cdb::inquiry(Some(0xb2), 64), &[]).asc == Asc::INVALID_FIELD_IN_CDB);
    }
}
