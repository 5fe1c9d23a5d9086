//! INQUIRY (SPC-4 §6.6): the standard data and the VPD pages a disk LU
//! serves (SPC-4 §7.8, SBC-4 §6.6). What to say is decided here; proto's
//! `inquiry` module encodes it.
//!
//! - Standard data: SPC-4 (VERSION 06h), HISUP, CMDQUE, 3PC (EXTENDED COPY,
//!   see `xcopy`), RESPONSE DATA FORMAT 2, T10 vendor `IESP`, product
//!   `iesp-target`, revision from the crate version. Version descriptors:
//!   SAM-5, iSCSI, SPC-4, SBC-4 and SBC-3 — the device implements SBC-3's
//!   command set as well, and initiators
//!   (libiscsi among them) test for SBC-3 by its descriptor to know that a
//!   60-byte Block Limits page is expected.
//! - 00h Supported VPD Pages: 00h, 80h, 83h, B0h, B1h, and B2h on a thin
//!   provisioned unit.
//! - 80h Unit Serial Number: the LU's serial.
//! - 83h Device Identification, in the order real targets (LIO) report:
//!   an NAA locally assigned designator (NAA 3) derived from the target
//!   name and the serial, hence stable per LUN across restarts; a T10
//!   vendor ID designator (`IESP` + serial); the relative target port (the
//!   portal group tag); the SCSI name string of the target port
//!   (`<iqn>,t,0x<tpgt>`); the SCSI name string of the target device.
//! - B0h Block Limits: MAXIMUM TRANSFER LENGTH from
//!   [`MAX_TRANSFER_BYTES`](super::lu::MAX_TRANSFER_BYTES), OPTIMAL TRANSFER
//!   LENGTH GRANULARITY 4 KiB (the page cache's unit), MAXIMUM COMPARE AND
//!   WRITE LENGTH (see [`super::rw`]), MAXIMUM WRITE SAME LENGTH; on a thin
//!   unit the UNMAP limits and OPTIMAL UNMAP GRANULARITY (the backend's,
//!   UGAVALID with alignment 0); see [`super::provisioning`]. Zero
//!   (unreported or unsupported) for MAXIMUM PREFETCH LENGTH and the atomic
//!   write fields: WRITE ATOMIC is not implemented.
//! - B2h Logical Block Provisioning (thin units): LBPU, LBPWS, LBPWS10,
//!   LBPRZ as the backend promises, provisioning type thin, no thresholds,
//!   no anchoring.
//! - B1h Block Device Characteristics: non-rotating medium, FUAB (FUA and
//!   SYNCHRONIZE CACHE as SBC-3 defines them), VBULS.
//!
//! EVPD=0 with a PAGE CODE is INVALID FIELD IN CDB (byte 2, via
//! `Cdb::validate`); an unsupported page is INVALID FIELD IN CDB pointing at
//! the PAGE CODE. The allocation length cuts the data; 0 returns none.

use bytes::Bytes;
use iesp_proto::scsi::inquiry::{
    Association, BlockDeviceCharacteristics, BlockLimits, Designator, LogicalBlockProvisioning,
    Peripheral, StandardInquiry, Vpd, VpdPage, VpdPageCode, ascii_field, version_descriptor,
};
use iesp_proto::scsi::{Sense, truncate};

use super::Nexus;
use super::lu::LogicalUnit;
use super::sense::Outcome;
use super::{provisioning, rw};

/// T10 VENDOR IDENTIFICATION.
pub const VENDOR: &str = "IESP";
/// PRODUCT IDENTIFICATION.
pub const PRODUCT: &str = "iesp-target";

/// The pages of VPD page 00h, ascending (SPC-4 §7.8.16); the last only on
/// a thin provisioned unit.
pub const SUPPORTED_PAGES: [VpdPageCode; 6] = [
    VpdPageCode::SUPPORTED_PAGES,
    VpdPageCode::UNIT_SERIAL_NUMBER,
    VpdPageCode::DEVICE_IDENTIFICATION,
    VpdPageCode::BLOCK_LIMITS,
    VpdPageCode::BLOCK_DEVICE_CHARACTERISTICS,
    VpdPageCode::LOGICAL_BLOCK_PROVISIONING,
];

/// The VPD pages `lu` serves.
pub fn supported_pages(lu: &LogicalUnit) -> &'static [VpdPageCode] {
    if lu.provisioning().is_some() {
        &SUPPORTED_PAGES
    } else {
        &SUPPORTED_PAGES[..5]
    }
}

/// Standard INQUIRY data with the given byte 0.
pub fn standard(peripheral: Peripheral) -> StandardInquiry {
    StandardInquiry {
        peripheral,
        vendor: ascii_field(VENDOR),
        product: ascii_field(PRODUCT),
        revision: ascii_field(revision()),
        // 3PC: the logical unit is a copy manager (EXTENDED COPY).
        third_party_copy: peripheral == Peripheral::DISK,
        version_descriptors: vec![
            version_descriptor::SAM_5,
            version_descriptor::ISCSI,
            version_descriptor::SPC_4,
            version_descriptor::SBC_4,
            version_descriptor::SBC_3,
        ],
        ..StandardInquiry::default()
    }
}

/// PRODUCT REVISION LEVEL: the crate's `major.minor` (4 bytes).
fn revision() -> &'static str {
    let v = env!("CARGO_PKG_VERSION");
    v.rsplit_once('.')
        .map_or(v, |(major_minor, _patch)| major_minor)
}

/// INQUIRY on a logical unit (`Some((lu, nexus))`) or on a LUN without one.
pub fn inquiry(
    lu: Option<(&LogicalUnit, &Nexus)>,
    evpd: bool,
    page_code: u8,
    allocation_length: u16,
) -> Outcome {
    let peripheral = if lu.is_some() {
        Peripheral::DISK
    } else {
        Peripheral::NOT_CAPABLE
    };
    let data = if !evpd {
        standard(peripheral).encode()
    } else {
        let page = match lu {
            Some((lu, nexus)) => vpd_page(lu, nexus, VpdPageCode(page_code)),
            None if page_code == 0 => {
                Some(VpdPage::SupportedPages(vec![VpdPageCode::SUPPORTED_PAGES]))
            }
            None => None,
        };
        let page = page.ok_or_else(|| Sense::invalid_field_in_cdb(2, None))?;
        Vpd { peripheral, page }.encode()
    };
    Ok(Bytes::from(truncate(data, u32::from(allocation_length))))
}

/// A VPD page of a logical unit, `None` if not supported.
fn vpd_page(lu: &LogicalUnit, nexus: &Nexus, code: VpdPageCode) -> Option<VpdPage> {
    Some(match code {
        VpdPageCode::SUPPORTED_PAGES => VpdPage::SupportedPages(supported_pages(lu).to_vec()),
        VpdPageCode::UNIT_SERIAL_NUMBER => {
            VpdPage::UnitSerialNumber(lu.serial().as_bytes().to_vec())
        }
        VpdPageCode::DEVICE_IDENTIFICATION => VpdPage::DeviceIdentification(designators(lu, nexus)),
        VpdPageCode::BLOCK_LIMITS => VpdPage::BlockLimits(block_limits(lu)),
        VpdPageCode::BLOCK_DEVICE_CHARACTERISTICS => {
            VpdPage::BlockDeviceCharacteristics(BlockDeviceCharacteristics {
                medium_rotation_rate: BlockDeviceCharacteristics::NON_ROTATING,
                fuab: true,
                vbuls: true,
                ..BlockDeviceCharacteristics::default()
            })
        }
        VpdPageCode::LOGICAL_BLOCK_PROVISIONING => {
            let p = lu.provisioning()?;
            VpdPage::LogicalBlockProvisioning(LogicalBlockProvisioning {
                lbpu: true,
                lbpws: true,
                lbpws10: true,
                lbprz: u8::from(p.zeroes),
                provisioning_type: LogicalBlockProvisioning::THIN,
                ..LogicalBlockProvisioning::default()
            })
        }
        _ => return None,
    })
}

/// The designation descriptors of VPD page 83h (see the module docs).
pub(super) fn designators(lu: &LogicalUnit, nexus: &Nexus) -> Vec<Designator> {
    let target = &*nexus.target_name;
    let tpgt = nexus.portal_group_tag;
    vec![
        Designator::naa_locally_assigned(naa_value(target, lu.serial())),
        Designator::t10_vendor_id(ascii_field(VENDOR), lu.serial().as_bytes()),
        // Relative target port identifier 0 is reserved (SPC-4 §7.8.6.7).
        Designator::relative_target_port(tpgt.max(1)),
        Designator::scsi_name_string(
            Association::TARGET_PORT,
            &format!("{target},t,0x{tpgt:04x}"),
        ),
        Designator::scsi_name_string(Association::TARGET_DEVICE, target),
    ]
}

/// 60 bits for an NAA 3 designator: FNV-1a over the target name and the
/// serial, so the same configuration yields the same identifier.
fn naa_value(target: &str, serial: &str) -> u64 {
    let bytes = target.bytes().chain([0]).chain(serial.bytes());
    bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) & 0x0fff_ffff_ffff_ffff
}

/// The Block Limits page (see the module docs).
pub fn block_limits(lu: &LogicalUnit) -> BlockLimits {
    let bs = u64::from(lu.block_size());
    let unmap = lu.provisioning().map(|p| {
        let granularity = u32::try_from((p.granularity / bs).max(1)).unwrap_or(u32::MAX);
        (
            provisioning::MAX_UNMAP_LBA_COUNT,
            provisioning::MAX_UNMAP_DESCRIPTORS,
            granularity,
        )
    });
    BlockLimits {
        optimal_transfer_length_granularity: u16::try_from((4096 / lu.block_size()).max(1))
            .unwrap_or(1),
        max_transfer_length: lu.max_transfer_blocks(),
        max_compare_and_write_length: u8::try_from(rw::max_compare_and_write_blocks(lu))
            .unwrap_or(u8::MAX),
        max_write_same_length: provisioning::MAX_WRITE_SAME_BLOCKS,
        max_unmap_lba_count: unmap.map_or(0, |u| u.0),
        max_unmap_block_descriptor_count: unmap.map_or(0, |u| u.1),
        optimal_unmap_granularity: unmap.map_or(0, |u| u.2),
        unmap_granularity_alignment: unmap.map(|_| 0),
        ..BlockLimits::default()
    }
}

#[cfg(test)]
mod tests {
    use iesp_proto::scsi::inquiry::{CodeSet, DesignatorType, ProtocolId, version};
    use iesp_proto::scsi::{Asc, Cdb, SenseKeySpecific};

    use super::*;
    use crate::scsi::testutil::{Harness, IQN, nexus, table};

    fn vpd(h: &Harness, page: u8) -> VpdPage {
        let data = h.good(&Cdb::inquiry(Some(page), 4096), &[]);
        let vpd = Vpd::parse(&data).expect("parses");
        assert_eq!(vpd.peripheral, Peripheral::DISK);
        assert_eq!(
            Vpd::announced_len(&data),
            Some(data.len()),
            "page length covers the data"
        );
        vpd.page
    }

    #[test]
    fn standard_data_round_trips() {
        let h = Harness::ram(64);
        let data = h.good(&Cdb::inquiry(None, 255), &[]);
        assert_eq!(data.len(), 96);
        let std = StandardInquiry::parse(&data).expect("parses");
        assert_eq!(std, standard(Peripheral::DISK));
        assert_eq!((std.version, std.response_data_format), (version::SPC_4, 2));
        assert!(std.hisup && std.cmdque && !std.normaca && !std.protect && !std.rmb);
        assert!(std.third_party_copy);
        assert_eq!(&std.vendor, b"IESP    ");
        assert!(std.version_descriptors.contains(&version_descriptor::SBC_3));
        assert_eq!(&std.revision[..3], b"0.1");
    }

    #[test]
    fn allocation_length_cuts_and_does_not_change_content() {
        let h = Harness::ram(64);
        let full = h.good(&Cdb::inquiry(None, 512), &[]);
        for alloc in [0u16, 5, 36, 95, 511] {
            let cut = h.good(&Cdb::inquiry(None, alloc), &[]);
            assert_eq!(cut[..], full[..usize::from(alloc).min(full.len())]);
        }
        let cut = h.good(&Cdb::inquiry(Some(0x83), 10), &[]);
        assert_eq!(cut.len(), 10);
    }

    #[test]
    fn evpd_rules() {
        let h = Harness::ram(64);
        let s = h.check(
            &Cdb::Inquiry {
                evpd: false,
                page_code: 1,
                allocation_length: 255,
            },
            &[],
        );
        assert_eq!(
            (s.asc, s.sense_key_specific),
            (
                Asc::INVALID_FIELD_IN_CDB,
                Some(SenseKeySpecific::FieldPointer {
                    cd: true,
                    bit: Some(7),
                    field: 2
                })
            )
        );
        for page in [0x01, 0x84, 0x86, 0xb3, 0xff] {
            let s = h.check(&Cdb::inquiry(Some(page), 255), &[]);
            assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB, "{page:#x}");
        }
    }

    #[test]
    fn supported_pages_all_answer() {
        let h = Harness::ram(64);
        let VpdPage::SupportedPages(pages) = vpd(&h, 0) else {
            panic!("page 00h")
        };
        assert_eq!(pages, SUPPORTED_PAGES.to_vec(), "a RAM disk is thin");
        assert!(pages.windows(2).all(|w| w[0] < w[1]), "ascending");
        for p in pages {
            assert_eq!(vpd(&h, p.0).page_code(), p);
        }
    }

    #[test]
    fn serial_and_identification() {
        let h = Harness::ram(64);
        assert_eq!(
            vpd(&h, 0x80),
            VpdPage::UnitSerialNumber(b"IESP000000ab".to_vec())
        );
        let VpdPage::DeviceIdentification(ds) = vpd(&h, 0x83) else {
            panic!("page 83h")
        };
        let types: Vec<_> = ds
            .iter()
            .map(|d| (d.designator_type, d.association))
            .collect();
        assert_eq!(
            types,
            vec![
                (DesignatorType::NAA, Association::LOGICAL_UNIT),
                (DesignatorType::T10_VENDOR_ID, Association::LOGICAL_UNIT),
                (
                    DesignatorType::RELATIVE_TARGET_PORT,
                    Association::TARGET_PORT
                ),
                (DesignatorType::SCSI_NAME_STRING, Association::TARGET_PORT),
                (DesignatorType::SCSI_NAME_STRING, Association::TARGET_DEVICE),
            ]
        );
        assert_eq!(ds[0].naa(), Some(3));
        assert_eq!(ds[1].code_set, CodeSet::ASCII);
        assert_eq!(&ds[1].designator[..8], b"IESP    ");
        assert_eq!(ds[2].port_identifier(), Some(1));
        assert_eq!(ds[3].scsi_name(), Some(&*format!("{IQN},t,0x0001")));
        assert_eq!(
            (ds[4].scsi_name(), ds[4].protocol_identifier, ds[4].piv),
            (Some(IQN), ProtocolId::ISCSI, true)
        );
        // Stable: another LU built the same way has the same NAA; another
        // serial does not.
        let again = table(64, 512, false);
        let lu = again.iter().next().expect("one LU");
        assert_eq!(designators(lu, &nexus(3))[0], ds[0]);
        assert_ne!(
            naa_value(IQN, "IESP000000ac"),
            naa_value(IQN, "IESP000000ab")
        );
    }

    #[test]
    fn block_limits_and_characteristics() {
        let h = Harness::ram(64);
        let VpdPage::BlockLimits(bl) = vpd(&h, 0xb0) else {
            panic!("page B0h")
        };
        assert_eq!(
            bl.max_transfer_length,
            super::super::lu::MAX_TRANSFER_BYTES / 512
        );
        assert_eq!(bl.optimal_transfer_length_granularity, 8);
        assert_eq!(
            (
                bl.max_unmap_lba_count,
                bl.max_unmap_block_descriptor_count,
                bl.max_write_same_length
            ),
            (u32::MAX, 256, 0xffff)
        );
        // RAM frees 64 KiB chunks.
        assert_eq!(
            (bl.optimal_unmap_granularity, bl.unmap_granularity_alignment),
            (128, Some(0))
        );
        assert_eq!(bl.max_compare_and_write_length, 255);
        assert_eq!(
            (
                bl.max_atomic_transfer_length,
                bl.max_prefetch_length,
                bl.wsnz
            ),
            (0, 0, false)
        );
        let data = h.good(&Cdb::inquiry(Some(0xb0), 255), &[]);
        assert_eq!(data.len(), 64, "SBC-3 length: page length 3Ch");
        let VpdPage::BlockDeviceCharacteristics(bdc) = vpd(&h, 0xb1) else {
            panic!("page B1h")
        };
        assert_eq!(bdc.medium_rotation_rate, 1);
        assert!(bdc.fuab);
    }
}
