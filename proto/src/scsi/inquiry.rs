//! INQUIRY data: the standard data (SPC-4 §6.6.2) and the vital product data
//! pages a block target serves (SPC-4 §7.8, SBC-4 §6.6):
//!
//! | page | name | spec |
//! |------|------|------|
//! | 0x00 | Supported VPD Pages | SPC-4 §7.8.16 |
//! | 0x80 | Unit Serial Number | SPC-4 §7.8.18 |
//! | 0x83 | Device Identification | SPC-4 §7.8.6 |
//! | 0xB0 | Block Limits | SBC-4 §6.6.4 |
//! | 0xB1 | Block Device Characteristics | SBC-4 §6.6.2 |
//! | 0xB2 | Logical Block Provisioning | SBC-4 §6.6.5 |
//!
//! Other pages travel as [`VpdPage::Other`] with their raw bytes.
//! Parsing is lenient about truncation (an allocation length shorter than
//! the data): fixed-layout pages read missing fields as zero, lists keep the
//! entries that arrived whole. A designation descriptor that claims to run
//! past the PAGE LENGTH is an error.

use std::fmt;

use super::DataError;
use super::wire::{be16, be32, be64, bit, bytes, flag, need, nul_padded4, u8_at, until_nul};

macro_rules! named_u8 {
    ($(#[$doc:meta])* $t:ident { $($(#[$cdoc:meta])* $name:ident = $value:literal, $text:literal;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $t(pub u8);

        impl $t {
            $(
                $(#[$cdoc])*
                pub const $name: $t = $t($value);
            )*

            /// The spec name of a defined value.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, concat!(stringify!($t), "({:#04x})"), self.0),
                }
            }
        }
    };
}

named_u8! {
    /// PERIPHERAL DEVICE TYPE (SPC-4 §6.6.2, table 140).
    PeripheralDeviceType {
        /// Direct access block device (SBC-4): a disk.
        DIRECT_ACCESS = 0x00, "direct access block device";
        /// Sequential access device (SSC): a tape.
        SEQUENTIAL_ACCESS = 0x01, "sequential access device";
        /// CD/DVD device (MMC).
        CD_DVD = 0x05, "CD/DVD device";
        /// Optical memory device.
        OPTICAL_MEMORY = 0x07, "optical memory device";
        /// Media changer (SMC).
        MEDIA_CHANGER = 0x08, "media changer device";
        /// Storage array controller (SCC).
        STORAGE_ARRAY_CONTROLLER = 0x0c, "storage array controller device";
        /// Enclosure services device (SES).
        ENCLOSURE_SERVICES = 0x0d, "enclosure services device";
        /// Simplified direct access device (RBC).
        SIMPLIFIED_DIRECT_ACCESS = 0x0e, "simplified direct-access device";
        /// Zoned block device (ZBC).
        ZONED_BLOCK = 0x14, "host managed zoned block device";
        /// Well known logical unit.
        WELL_KNOWN_LOGICAL_UNIT = 0x1e, "well known logical unit";
        /// Unknown or no device type (with qualifier 3: no LU here).
        UNKNOWN = 0x1f, "unknown or no device type";
    }
}

/// Byte 0 of INQUIRY data and of every VPD page: PERIPHERAL QUALIFIER
/// (bits 7..5) and PERIPHERAL DEVICE TYPE (bits 4..0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Peripheral {
    /// PERIPHERAL QUALIFIER: 0 connected, 1 supported but not connected,
    /// 3 not capable of supporting a device on this LUN.
    pub qualifier: u8,
    /// PERIPHERAL DEVICE TYPE.
    pub device_type: PeripheralDeviceType,
}

impl Peripheral {
    /// A connected direct access block device (qualifier 0, type 0).
    pub const DISK: Peripheral = Peripheral {
        qualifier: 0,
        device_type: PeripheralDeviceType::DIRECT_ACCESS,
    };

    /// What INQUIRY reports for a LUN with no logical unit behind it
    /// (qualifier 3, type 0x1f, SPC-4 §6.6.2).
    pub const NOT_CAPABLE: Peripheral = Peripheral {
        qualifier: 3,
        device_type: PeripheralDeviceType::UNKNOWN,
    };

    /// The byte.
    pub fn encode(self) -> u8 {
        (self.qualifier & 0x07) << 5 | (self.device_type.0 & 0x1f)
    }

    /// From the byte.
    pub fn decode(b: u8) -> Peripheral {
        Peripheral {
            qualifier: b >> 5,
            device_type: PeripheralDeviceType(b & 0x1f),
        }
    }
}

/// VERSION values of standard INQUIRY data (SPC-4 §6.6.2, table 142).
pub mod version {
    /// No standard claimed.
    pub const NONE: u8 = 0x00;
    /// SPC-2.
    pub const SPC_2: u8 = 0x04;
    /// SPC-3.
    pub const SPC_3: u8 = 0x05;
    /// SPC-4.
    pub const SPC_4: u8 = 0x06;
    /// SPC-5.
    pub const SPC_5: u8 = 0x07;
}

/// VERSION DESCRIPTOR values (SPC-4 §6.6.2, table 144), "no version claimed"
/// forms.
pub mod version_descriptor {
    /// SAM-5.
    pub const SAM_5: u16 = 0x00a0;
    /// SPC-4.
    pub const SPC_4: u16 = 0x0460;
    /// SPC-5.
    pub const SPC_5: u16 = 0x05c0;
    /// SBC-3.
    pub const SBC_3: u16 = 0x04c0;
    /// SBC-4.
    pub const SBC_4: u16 = 0x0600;
    /// iSCSI.
    pub const ISCSI: u16 = 0x0960;
}

/// A space-padded ASCII field (T10 VENDOR IDENTIFICATION, PRODUCT
/// IDENTIFICATION, PRODUCT REVISION LEVEL): `s` truncated to `N` bytes,
/// non-printable characters replaced by spaces (SPC-4 §4.3.1).
pub fn ascii_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    for (o, c) in out.iter_mut().zip(s.bytes()) {
        *o = if (0x20..0x7f).contains(&c) { c } else { b' ' };
    }
    out
}

/// Standard INQUIRY data (SPC-4 §6.6.2, table 139).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StandardInquiry {
    /// Byte 0.
    pub peripheral: Peripheral,
    /// RMB: removable medium.
    pub rmb: bool,
    /// LU_CONG: the logical unit is part of a conglomerate (SPC-5).
    pub lu_cong: bool,
    /// VERSION (see [`version`]).
    pub version: u8,
    /// NORMACA: NACA=1 supported.
    pub normaca: bool,
    /// HISUP: hierarchical LUN addressing.
    pub hisup: bool,
    /// RESPONSE DATA FORMAT: 2.
    pub response_data_format: u8,
    /// SCCS: embedded storage array controller.
    pub sccs: bool,
    /// ACC: access controls coordinator.
    pub acc: bool,
    /// TPGS (2 bits): asymmetric logical unit access support.
    pub tpgs: u8,
    /// 3PC: third-party copy (EXTENDED COPY) supported.
    pub third_party_copy: bool,
    /// PROTECT: protection information supported.
    pub protect: bool,
    /// ENCSERV: embedded enclosure services.
    pub encserv: bool,
    /// MULTIP: multiple SCSI target ports.
    pub multip: bool,
    /// CMDQUE: command queuing (must be 1 in SPC-4 when BQUE is 0).
    pub cmdque: bool,
    /// T10 VENDOR IDENTIFICATION (see [`ascii_field`]).
    pub vendor: [u8; 8],
    /// PRODUCT IDENTIFICATION.
    pub product: [u8; 16],
    /// PRODUCT REVISION LEVEL.
    pub revision: [u8; 4],
    /// VERSION DESCRIPTORs (at most 8; non-zero ones).
    pub version_descriptors: Vec<u16>,
}

impl Default for StandardInquiry {
    /// A connected SPC-4 disk with CMDQUE and HISUP, blank identification.
    fn default() -> Self {
        StandardInquiry {
            peripheral: Peripheral::DISK,
            rmb: false,
            lu_cong: false,
            version: version::SPC_4,
            normaca: false,
            hisup: true,
            response_data_format: 2,
            sccs: false,
            acc: false,
            tpgs: 0,
            third_party_copy: false,
            protect: false,
            encserv: false,
            multip: false,
            cmdque: true,
            vendor: [b' '; 8],
            product: [b' '; 16],
            revision: [b' '; 4],
            version_descriptors: Vec::new(),
        }
    }
}

impl StandardInquiry {
    /// Encodes: 36 bytes without version descriptors, 96 with (bytes 36..58
    /// and 74..96 zero).
    pub fn encode(&self) -> Vec<u8> {
        let len = if self.version_descriptors.is_empty() {
            36
        } else {
            96
        };
        let mut b = vec![0u8; len];
        b[0] = self.peripheral.encode();
        b[1] = flag(self.rmb, 0x80) | flag(self.lu_cong, 0x40);
        b[2] = self.version;
        b[3] =
            flag(self.normaca, 0x20) | flag(self.hisup, 0x10) | (self.response_data_format & 0x0f);
        b[4] = (len - 5) as u8;
        b[5] = flag(self.sccs, 0x80)
            | flag(self.acc, 0x40)
            | (self.tpgs & 0x03) << 4
            | flag(self.third_party_copy, 0x08)
            | flag(self.protect, 0x01);
        b[6] = flag(self.encserv, 0x40) | flag(self.multip, 0x10);
        b[7] = flag(self.cmdque, 0x02);
        b[8..16].copy_from_slice(&self.vendor);
        b[16..32].copy_from_slice(&self.product);
        b[32..36].copy_from_slice(&self.revision);
        for (slot, d) in b
            .get_mut(58..74)
            .unwrap_or_default()
            .chunks_exact_mut(2)
            .zip(&self.version_descriptors)
        {
            slot.copy_from_slice(&d.to_be_bytes());
        }
        b
    }

    /// Decodes at least the first 36 bytes; version descriptors are read
    /// from whatever of bytes 58..74 arrived (within ADDITIONAL LENGTH).
    pub fn parse(b: &[u8]) -> Result<StandardInquiry, DataError> {
        need(b, 36, "standard INQUIRY data")?;
        let end = b.len().min(5 + usize::from(u8_at(b, 4)));
        let version_descriptors = b
            .get(58..end.min(74))
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| be16(c, 0))
            .filter(|&d| d != 0)
            .collect();
        Ok(StandardInquiry {
            peripheral: Peripheral::decode(u8_at(b, 0)),
            rmb: bit(b, 1, 0x80),
            lu_cong: bit(b, 1, 0x40),
            version: u8_at(b, 2),
            normaca: bit(b, 3, 0x20),
            hisup: bit(b, 3, 0x10),
            response_data_format: u8_at(b, 3) & 0x0f,
            sccs: bit(b, 5, 0x80),
            acc: bit(b, 5, 0x40),
            tpgs: (u8_at(b, 5) >> 4) & 0x03,
            third_party_copy: bit(b, 5, 0x08),
            protect: bit(b, 5, 0x01),
            encserv: bit(b, 6, 0x40),
            multip: bit(b, 6, 0x10),
            cmdque: bit(b, 7, 0x02),
            vendor: bytes(b, 8),
            product: bytes(b, 16),
            revision: bytes(b, 32),
            version_descriptors,
        })
    }

    /// The total length the data announces (ADDITIONAL LENGTH + 5).
    pub fn announced_len(b: &[u8]) -> Option<usize> {
        b.get(4).map(|&n| usize::from(n) + 5)
    }
}

named_u8! {
    /// A VPD page code (SPC-4 §7.8.1, table 487; SBC-4 §6.6.1).
    VpdPageCode {
        /// Supported VPD Pages.
        SUPPORTED_PAGES = 0x00, "Supported VPD Pages";
        /// Unit Serial Number.
        UNIT_SERIAL_NUMBER = 0x80, "Unit Serial Number";
        /// Device Identification.
        DEVICE_IDENTIFICATION = 0x83, "Device Identification";
        /// Software Interface Identification.
        SOFTWARE_INTERFACE_IDENTIFICATION = 0x84, "Software Interface Identification";
        /// Management Network Addresses.
        MANAGEMENT_NETWORK_ADDRESSES = 0x85, "Management Network Addresses";
        /// Extended INQUIRY Data.
        EXTENDED_INQUIRY_DATA = 0x86, "Extended INQUIRY Data";
        /// Mode Page Policy.
        MODE_PAGE_POLICY = 0x87, "Mode Page Policy";
        /// SCSI Ports.
        SCSI_PORTS = 0x88, "SCSI Ports";
        /// Third-party Copy.
        THIRD_PARTY_COPY = 0x8f, "Third-party Copy";
        /// Block Limits.
        BLOCK_LIMITS = 0xb0, "Block Limits";
        /// Block Device Characteristics.
        BLOCK_DEVICE_CHARACTERISTICS = 0xb1, "Block Device Characteristics";
        /// Logical Block Provisioning.
        LOGICAL_BLOCK_PROVISIONING = 0xb2, "Logical Block Provisioning";
        /// Referrals.
        REFERRALS = 0xb3, "Referrals";
    }
}

named_u8! {
    /// PROTOCOL IDENTIFIER (SPC-4 §7.6.1, table 444).
    ProtocolId {
        /// Fibre Channel (FCP-4).
        FCP = 0x0, "Fibre Channel";
        /// Parallel SCSI (SPI-5).
        SPI = 0x1, "SPI";
        /// SSA.
        SSA = 0x2, "SSA";
        /// IEEE 1394 (SBP-3).
        SBP = 0x3, "SBP";
        /// SCSI RDMA (SRP).
        SRP = 0x4, "SRP";
        /// iSCSI.
        ISCSI = 0x5, "iSCSI";
        /// SAS.
        SAS = 0x6, "SAS";
        /// Automation/drive interface (ADT-2).
        ADT = 0x7, "ADT";
        /// ATA/ATAPI.
        ATA = 0x8, "ATA";
        /// USB attached SCSI.
        UAS = 0x9, "UAS";
        /// SCSI over PCI Express.
        SOP = 0xa, "SOP";
        /// No specific protocol.
        NONE = 0xf, "none";
    }
}

named_u8! {
    /// CODE SET of a designation descriptor (SPC-4 §7.8.6.1, table 590).
    CodeSet {
        /// Binary.
        BINARY = 0x1, "binary";
        /// Printable ASCII.
        ASCII = 0x2, "ASCII";
        /// UTF-8.
        UTF8 = 0x3, "UTF-8";
    }
}

named_u8! {
    /// ASSOCIATION of a designation descriptor (SPC-4 §7.8.6.1, table 591).
    Association {
        /// The addressed logical unit.
        LOGICAL_UNIT = 0x0, "logical unit";
        /// The target port that received the command.
        TARGET_PORT = 0x1, "target port";
        /// The SCSI target device containing the logical unit.
        TARGET_DEVICE = 0x2, "target device";
    }
}

named_u8! {
    /// DESIGNATOR TYPE (SPC-4 §7.8.6.1, table 592).
    DesignatorType {
        /// Vendor specific.
        VENDOR_SPECIFIC = 0x0, "vendor specific";
        /// T10 vendor ID based.
        T10_VENDOR_ID = 0x1, "T10 vendor ID";
        /// EUI-64 based.
        EUI64 = 0x2, "EUI-64";
        /// NAA.
        NAA = 0x3, "NAA";
        /// Relative target port identifier.
        RELATIVE_TARGET_PORT = 0x4, "relative target port";
        /// Target port group.
        TARGET_PORT_GROUP = 0x5, "target port group";
        /// Logical unit group.
        LOGICAL_UNIT_GROUP = 0x6, "logical unit group";
        /// MD5 logical unit identifier.
        MD5_LOGICAL_UNIT = 0x7, "MD5 logical unit";
        /// SCSI name string.
        SCSI_NAME_STRING = 0x8, "SCSI name string";
        /// Protocol specific port identifier.
        PROTOCOL_SPECIFIC_PORT = 0x9, "protocol specific port";
        /// UUID.
        UUID = 0xa, "UUID";
    }
}

/// A designation descriptor (SPC-4 §7.8.6.1, table 589). The DESIGNATOR
/// bytes are kept raw so every designator type round-trips; constructors
/// and accessors cover the types an iSCSI disk target uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Designator {
    /// PROTOCOL IDENTIFIER (meaningful when `piv`).
    pub protocol_identifier: ProtocolId,
    /// CODE SET.
    pub code_set: CodeSet,
    /// PIV: the protocol identifier is valid.
    pub piv: bool,
    /// ASSOCIATION.
    pub association: Association,
    /// DESIGNATOR TYPE.
    pub designator_type: DesignatorType,
    /// DESIGNATOR (at most 255 bytes).
    pub designator: Vec<u8>,
}

impl Designator {
    fn binary(
        association: Association,
        designator_type: DesignatorType,
        designator: Vec<u8>,
    ) -> Designator {
        Designator {
            protocol_identifier: ProtocolId::FCP,
            code_set: CodeSet::BINARY,
            piv: false,
            association,
            designator_type,
            designator,
        }
    }

    /// NAA IEEE Registered Extended (NAA 6, §7.8.6.6.5), 16 bytes: a 24-bit
    /// IEEE company ID, a 36-bit vendor specific identifier and a 64-bit
    /// extension. Associated with the logical unit.
    pub fn naa_ieee_registered_extended(
        oui: u32,
        vendor_specific: u64,
        extension: u64,
    ) -> Designator {
        let hi =
            0x6u64 << 60 | u64::from(oui & 0xff_ffff) << 36 | (vendor_specific & 0xf_ffff_ffff);
        let mut d = hi.to_be_bytes().to_vec();
        d.extend_from_slice(&extension.to_be_bytes());
        Designator::binary(Association::LOGICAL_UNIT, DesignatorType::NAA, d)
    }

    /// NAA Locally Assigned (NAA 3, §7.8.6.6.3), 8 bytes: 60 bits of value.
    pub fn naa_locally_assigned(value: u64) -> Designator {
        let d = (0x3u64 << 60 | (value & 0x0fff_ffff_ffff_ffff))
            .to_be_bytes()
            .to_vec();
        Designator::binary(Association::LOGICAL_UNIT, DesignatorType::NAA, d)
    }

    /// T10 vendor ID based (§7.8.6.4): 8-byte vendor ID then a vendor
    /// specific identifier, ASCII. Associated with the logical unit.
    pub fn t10_vendor_id(vendor: [u8; 8], vendor_specific: &[u8]) -> Designator {
        let mut d = vendor.to_vec();
        d.extend_from_slice(vendor_specific);
        d.truncate(255);
        Designator {
            code_set: CodeSet::ASCII,
            ..Designator::binary(Association::LOGICAL_UNIT, DesignatorType::T10_VENDOR_ID, d)
        }
    }

    /// SCSI name string (§7.8.6.11), UTF-8, NUL-terminated and padded to a
    /// multiple of 4. For iSCSI: the target name with
    /// [`Association::TARGET_DEVICE`], or `"<name>,t,0x<TPGT>"` with
    /// [`Association::TARGET_PORT`] (the iSCSI target port name); the
    /// protocol identifier is set to iSCSI with PIV for both.
    pub fn scsi_name_string(association: Association, name: &str) -> Designator {
        let mut d = nul_padded4(name.as_bytes(), 4);
        d.truncate(252);
        Designator {
            protocol_identifier: ProtocolId::ISCSI,
            code_set: CodeSet::UTF8,
            piv: association != Association::LOGICAL_UNIT,
            association,
            designator_type: DesignatorType::SCSI_NAME_STRING,
            designator: d,
        }
    }

    /// Relative target port identifier (§7.8.6.7) of the target port that
    /// received the command, PIV set with protocol iSCSI.
    pub fn relative_target_port(id: u16) -> Designator {
        let [hi, lo] = id.to_be_bytes();
        Designator {
            protocol_identifier: ProtocolId::ISCSI,
            piv: true,
            ..Designator::binary(
                Association::TARGET_PORT,
                DesignatorType::RELATIVE_TARGET_PORT,
                vec![0, 0, hi, lo],
            )
        }
    }

    /// Target port group (§7.8.6.8) of the receiving target port.
    pub fn target_port_group(group: u16) -> Designator {
        let [hi, lo] = group.to_be_bytes();
        Designator {
            protocol_identifier: ProtocolId::ISCSI,
            piv: true,
            ..Designator::binary(
                Association::TARGET_PORT,
                DesignatorType::TARGET_PORT_GROUP,
                vec![0, 0, hi, lo],
            )
        }
    }

    /// The name of a SCSI name string designator, without padding.
    pub fn scsi_name(&self) -> Option<&str> {
        (self.designator_type == DesignatorType::SCSI_NAME_STRING)
            .then(|| std::str::from_utf8(until_nul(&self.designator)).ok())
            .flatten()
    }

    /// The identifier of a relative target port or target port group
    /// designator.
    pub fn port_identifier(&self) -> Option<u16> {
        matches!(
            self.designator_type,
            DesignatorType::RELATIVE_TARGET_PORT | DesignatorType::TARGET_PORT_GROUP
        )
        .then(|| be16(&self.designator, 2))
    }

    /// The NAA field (top nibble) of an NAA designator.
    pub fn naa(&self) -> Option<u8> {
        (self.designator_type == DesignatorType::NAA)
            .then(|| self.designator.first().map(|b| b >> 4))
            .flatten()
    }

    /// Appends the 4-byte header and the designator.
    fn encode_into(&self, b: &mut Vec<u8>) {
        let len = self.designator.len().min(255);
        b.push((self.protocol_identifier.0 & 0x0f) << 4 | (self.code_set.0 & 0x0f));
        b.push(
            flag(self.piv, 0x80)
                | (self.association.0 & 0x03) << 4
                | (self.designator_type.0 & 0x0f),
        );
        b.push(0);
        b.push(len as u8);
        b.extend_from_slice(self.designator.get(..len).unwrap_or_default());
    }

    /// Decodes a list of designation descriptors. `page_len` is the length
    /// the enclosing structure declares for the list and `offset` where the
    /// list starts in the payload (for error pointers); `b` may be shorter
    /// than `page_len` (truncated), in which case the last descriptor may be
    /// dropped.
    fn parse_list(b: &[u8], page_len: usize, offset: usize) -> Result<Vec<Designator>, DataError> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 4 <= b.len().min(page_len) {
            let len = usize::from(u8_at(b, at + 3));
            let end = at + 4 + len;
            if end > page_len {
                return Err(DataError::InvalidField {
                    what: "designation descriptor",
                    byte: offset + at + 3,
                    bit: None,
                });
            }
            let Some(d) = b.get(at + 4..end) else {
                break; // cut by the allocation length
            };
            out.push(Designator {
                protocol_identifier: ProtocolId(u8_at(b, at) >> 4),
                code_set: CodeSet(u8_at(b, at) & 0x0f),
                piv: bit(b, at + 1, 0x80),
                association: Association((u8_at(b, at + 1) >> 4) & 0x03),
                designator_type: DesignatorType(u8_at(b, at + 1) & 0x0f),
                designator: d.to_vec(),
            });
            at = end;
        }
        Ok(out)
    }
}

/// Block Limits VPD page, 0xB0 (SBC-4 §6.6.4, table 230). All lengths in
/// logical blocks; 0 means "not reported / no limit" as SBC-4 defines per
/// field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BlockLimits {
    /// WSNZ: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is not supported.
    pub wsnz: bool,
    /// MAXIMUM COMPARE AND WRITE LENGTH (0: COMPARE AND WRITE unsupported).
    pub max_compare_and_write_length: u8,
    /// OPTIMAL TRANSFER LENGTH GRANULARITY.
    pub optimal_transfer_length_granularity: u16,
    /// MAXIMUM TRANSFER LENGTH.
    pub max_transfer_length: u32,
    /// OPTIMAL TRANSFER LENGTH.
    pub optimal_transfer_length: u32,
    /// MAXIMUM PREFETCH LENGTH.
    pub max_prefetch_length: u32,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap_lba_count: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_block_descriptor_count: u32,
    /// OPTIMAL UNMAP GRANULARITY.
    pub optimal_unmap_granularity: u32,
    /// UNMAP GRANULARITY ALIGNMENT (31 bits), present when UGAVALID.
    pub unmap_granularity_alignment: Option<u32>,
    /// MAXIMUM WRITE SAME LENGTH.
    pub max_write_same_length: u64,
    /// MAXIMUM ATOMIC TRANSFER LENGTH.
    pub max_atomic_transfer_length: u32,
    /// ATOMIC ALIGNMENT.
    pub atomic_alignment: u32,
    /// ATOMIC TRANSFER LENGTH GRANULARITY.
    pub atomic_transfer_length_granularity: u32,
    /// MAXIMUM ATOMIC TRANSFER LENGTH WITH ATOMIC BOUNDARY.
    pub max_atomic_transfer_length_with_boundary: u32,
    /// MAXIMUM ATOMIC BOUNDARY SIZE.
    pub max_atomic_boundary_size: u32,
}

impl BlockLimits {
    fn encode_body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(60);
        b.push(flag(self.wsnz, 0x01));
        b.push(self.max_compare_and_write_length);
        b.extend_from_slice(&self.optimal_transfer_length_granularity.to_be_bytes());
        for v in [
            self.max_transfer_length,
            self.optimal_transfer_length,
            self.max_prefetch_length,
            self.max_unmap_lba_count,
            self.max_unmap_block_descriptor_count,
            self.optimal_unmap_granularity,
            self.unmap_granularity_alignment
                .map_or(0, |a| 0x8000_0000 | (a & 0x7fff_ffff)),
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&self.max_write_same_length.to_be_bytes());
        for v in [
            self.max_atomic_transfer_length,
            self.atomic_alignment,
            self.atomic_transfer_length_granularity,
            self.max_atomic_transfer_length_with_boundary,
            self.max_atomic_boundary_size,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    /// `d` is the page without its 4-byte header; missing fields read as 0
    /// (SBC-2 era devices send 12 bytes).
    fn parse_body(d: &[u8]) -> BlockLimits {
        let uga = be32(d, 28);
        BlockLimits {
            wsnz: bit(d, 0, 0x01),
            max_compare_and_write_length: u8_at(d, 1),
            optimal_transfer_length_granularity: be16(d, 2),
            max_transfer_length: be32(d, 4),
            optimal_transfer_length: be32(d, 8),
            max_prefetch_length: be32(d, 12),
            max_unmap_lba_count: be32(d, 16),
            max_unmap_block_descriptor_count: be32(d, 20),
            optimal_unmap_granularity: be32(d, 24),
            unmap_granularity_alignment: (uga & 0x8000_0000 != 0).then_some(uga & 0x7fff_ffff),
            max_write_same_length: be64(d, 32),
            max_atomic_transfer_length: be32(d, 40),
            atomic_alignment: be32(d, 44),
            atomic_transfer_length_granularity: be32(d, 48),
            max_atomic_transfer_length_with_boundary: be32(d, 52),
            max_atomic_boundary_size: be32(d, 56),
        }
    }
}

/// Block Device Characteristics VPD page, 0xB1 (SBC-4 §6.6.2, table 226).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BlockDeviceCharacteristics {
    /// MEDIUM ROTATION RATE: 0 not reported, 1 non-rotating (solid
    /// state), 0x0401..0xFFFE rpm.
    pub medium_rotation_rate: u16,
    /// PRODUCT TYPE.
    pub product_type: u8,
    /// WABEREQ (2 bits).
    pub wabereq: u8,
    /// WACEREQ (2 bits).
    pub wacereq: u8,
    /// NOMINAL FORM FACTOR (4 bits): 0 not reported, 1 5.25", 2 3.5",
    /// 3 2.5", 4 1.8", 5 less than 1.8".
    pub nominal_form_factor: u8,
    /// ZONED (2 bits).
    pub zoned: u8,
    /// BOCS: background operation control supported.
    pub bocs: bool,
    /// FUAB: FUA and SYNCHRONIZE CACHE behave per SBC-3 and later.
    pub fuab: bool,
    /// VBULS: verify of unmapped LBAs supported.
    pub vbuls: bool,
}

impl BlockDeviceCharacteristics {
    /// Non-rotating medium (SBC-4 table 227).
    pub const NON_ROTATING: u16 = 0x0001;

    fn encode_body(&self) -> Vec<u8> {
        let mut b = vec![0u8; 60];
        b[0..2].copy_from_slice(&self.medium_rotation_rate.to_be_bytes());
        b[2] = self.product_type;
        b[3] = (self.wabereq & 0x03) << 6
            | (self.wacereq & 0x03) << 4
            | (self.nominal_form_factor & 0x0f);
        b[4] = (self.zoned & 0x03) << 4
            | flag(self.bocs, 0x04)
            | flag(self.fuab, 0x02)
            | flag(self.vbuls, 0x01);
        b
    }

    fn parse_body(d: &[u8]) -> BlockDeviceCharacteristics {
        BlockDeviceCharacteristics {
            medium_rotation_rate: be16(d, 0),
            product_type: u8_at(d, 2),
            wabereq: u8_at(d, 3) >> 6,
            wacereq: (u8_at(d, 3) >> 4) & 0x03,
            nominal_form_factor: u8_at(d, 3) & 0x0f,
            zoned: (u8_at(d, 4) >> 4) & 0x03,
            bocs: bit(d, 4, 0x04),
            fuab: bit(d, 4, 0x02),
            vbuls: bit(d, 4, 0x01),
        }
    }
}

/// Logical Block Provisioning VPD page, 0xB2 (SBC-4 §6.6.5, table 234).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct LogicalBlockProvisioning {
    /// THRESHOLD EXPONENT (0: no thresholds).
    pub threshold_exponent: u8,
    /// LBPU: UNMAP supported.
    pub lbpu: bool,
    /// LBPWS: WRITE SAME(16) with UNMAP supported.
    pub lbpws: bool,
    /// LBPWS10: WRITE SAME(10) with UNMAP supported.
    pub lbpws10: bool,
    /// LBPRZ (3 bits): xx1b unmapped blocks read as zeros.
    pub lbprz: u8,
    /// ANC_SUP: anchored LBAs supported.
    pub anc_sup: bool,
    /// MINIMUM PERCENTAGE (5 bits).
    pub minimum_percentage: u8,
    /// PROVISIONING TYPE (3 bits): 0 full, 1 resource, 2 thin.
    pub provisioning_type: u8,
    /// THRESHOLD PERCENTAGE.
    pub threshold_percentage: u8,
    /// PROVISIONING GROUP DESCRIPTOR; present iff DP.
    pub provisioning_group: Option<Designator>,
}

impl LogicalBlockProvisioning {
    /// PROVISIONING TYPE: thin provisioned.
    pub const THIN: u8 = 0x2;
    /// PROVISIONING TYPE: resource provisioned.
    pub const RESOURCE: u8 = 0x1;

    fn encode_body(&self) -> Vec<u8> {
        let mut b = vec![
            self.threshold_exponent,
            flag(self.lbpu, 0x80)
                | flag(self.lbpws, 0x40)
                | flag(self.lbpws10, 0x20)
                | (self.lbprz & 0x07) << 2
                | flag(self.anc_sup, 0x02)
                | flag(self.provisioning_group.is_some(), 0x01),
            (self.minimum_percentage & 0x1f) << 3 | (self.provisioning_type & 0x07),
            self.threshold_percentage,
        ];
        if let Some(d) = &self.provisioning_group {
            d.encode_into(&mut b);
        }
        b
    }

    fn parse_body(d: &[u8], page_len: usize) -> Result<LogicalBlockProvisioning, DataError> {
        let provisioning_group = if bit(d, 1, 0x01) {
            let list = d.get(4..).unwrap_or_default();
            Designator::parse_list(list, page_len.saturating_sub(4), 8)?
                .into_iter()
                .next()
        } else {
            None
        };
        Ok(LogicalBlockProvisioning {
            threshold_exponent: u8_at(d, 0),
            lbpu: bit(d, 1, 0x80),
            lbpws: bit(d, 1, 0x40),
            lbpws10: bit(d, 1, 0x20),
            lbprz: (u8_at(d, 1) >> 2) & 0x07,
            anc_sup: bit(d, 1, 0x02),
            minimum_percentage: u8_at(d, 2) >> 3,
            provisioning_type: u8_at(d, 2) & 0x07,
            threshold_percentage: u8_at(d, 3),
            provisioning_group,
        })
    }
}

/// The content of a VPD page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VpdPage {
    /// 0x00: the supported page codes, ascending.
    SupportedPages(Vec<VpdPageCode>),
    /// 0x80: PRODUCT SERIAL NUMBER, ASCII (right-aligned, space padded by
    /// convention).
    UnitSerialNumber(Vec<u8>),
    /// 0x83: designation descriptors.
    DeviceIdentification(Vec<Designator>),
    /// 0xB0.
    BlockLimits(BlockLimits),
    /// 0xB1.
    BlockDeviceCharacteristics(BlockDeviceCharacteristics),
    /// 0xB2.
    LogicalBlockProvisioning(LogicalBlockProvisioning),
    /// Any other page: the bytes after the 4-byte header.
    Other {
        /// PAGE CODE.
        page_code: VpdPageCode,
        /// The page data.
        data: Vec<u8>,
    },
}

impl VpdPage {
    /// The PAGE CODE.
    pub fn page_code(&self) -> VpdPageCode {
        match self {
            VpdPage::SupportedPages(_) => VpdPageCode::SUPPORTED_PAGES,
            VpdPage::UnitSerialNumber(_) => VpdPageCode::UNIT_SERIAL_NUMBER,
            VpdPage::DeviceIdentification(_) => VpdPageCode::DEVICE_IDENTIFICATION,
            VpdPage::BlockLimits(_) => VpdPageCode::BLOCK_LIMITS,
            VpdPage::BlockDeviceCharacteristics(_) => VpdPageCode::BLOCK_DEVICE_CHARACTERISTICS,
            VpdPage::LogicalBlockProvisioning(_) => VpdPageCode::LOGICAL_BLOCK_PROVISIONING,
            VpdPage::Other { page_code, .. } => *page_code,
        }
    }
}

/// A VPD page with its peripheral byte (SPC-4 §7.8.1, table 486: byte 0
/// peripheral, byte 1 PAGE CODE, bytes 2..4 PAGE LENGTH).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Vpd {
    /// Byte 0, as in standard INQUIRY data.
    pub peripheral: Peripheral,
    /// The page.
    pub page: VpdPage,
}

impl Vpd {
    /// A page of a connected disk.
    pub fn disk(page: VpdPage) -> Vpd {
        Vpd {
            peripheral: Peripheral::DISK,
            page,
        }
    }

    /// Encodes header and page.
    pub fn encode(&self) -> Vec<u8> {
        let data = match &self.page {
            VpdPage::SupportedPages(codes) => codes.iter().map(|c| c.0).collect(),
            VpdPage::UnitSerialNumber(s) => s.clone(),
            VpdPage::DeviceIdentification(ds) => {
                let mut b = Vec::new();
                for d in ds {
                    d.encode_into(&mut b);
                }
                b
            }
            VpdPage::BlockLimits(p) => p.encode_body(),
            VpdPage::BlockDeviceCharacteristics(p) => p.encode_body(),
            VpdPage::LogicalBlockProvisioning(p) => p.encode_body(),
            VpdPage::Other { data, .. } => data.clone(),
        };
        let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
        let mut b = Vec::with_capacity(4 + data.len());
        b.push(self.peripheral.encode());
        b.push(self.page.page_code().0);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(data.get(..usize::from(len)).unwrap_or_default());
        b
    }

    /// Decodes a page (possibly truncated: see the module documentation).
    pub fn parse(b: &[u8]) -> Result<Vpd, DataError> {
        need(b, 4, "VPD page")?;
        let page_code = VpdPageCode(u8_at(b, 1));
        let page_len = usize::from(be16(b, 2));
        let rest = b.get(4..).unwrap_or_default();
        let d = rest.get(..page_len.min(rest.len())).unwrap_or_default();
        let page = match page_code {
            VpdPageCode::SUPPORTED_PAGES => {
                VpdPage::SupportedPages(d.iter().map(|&c| VpdPageCode(c)).collect())
            }
            VpdPageCode::UNIT_SERIAL_NUMBER => VpdPage::UnitSerialNumber(d.to_vec()),
            VpdPageCode::DEVICE_IDENTIFICATION => {
                VpdPage::DeviceIdentification(Designator::parse_list(d, page_len, 4)?)
            }
            VpdPageCode::BLOCK_LIMITS => VpdPage::BlockLimits(BlockLimits::parse_body(d)),
            VpdPageCode::BLOCK_DEVICE_CHARACTERISTICS => {
                VpdPage::BlockDeviceCharacteristics(BlockDeviceCharacteristics::parse_body(d))
            }
            VpdPageCode::LOGICAL_BLOCK_PROVISIONING => VpdPage::LogicalBlockProvisioning(
                LogicalBlockProvisioning::parse_body(d, page_len)?,
            ),
            _ => VpdPage::Other {
                page_code,
                data: d.to_vec(),
            },
        };
        Ok(Vpd {
            peripheral: Peripheral::decode(u8_at(b, 0)),
            page,
        })
    }

    /// The total length the header announces (PAGE LENGTH + 4).
    pub fn announced_len(b: &[u8]) -> Option<usize> {
        (b.len() >= 4).then(|| usize::from(be16(b, 2)) + 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    fn sample_inquiry() -> StandardInquiry {
        StandardInquiry {
            tpgs: 1,
            third_party_copy: true,
            vendor: ascii_field("IESP"),
            product: ascii_field("reference-target"),
            revision: ascii_field("0.1"),
            version_descriptors: vec![
                version_descriptor::SAM_5,
                version_descriptor::ISCSI,
                version_descriptor::SPC_4,
                version_descriptor::SBC_3,
            ],
            ..StandardInquiry::default()
        }
    }

    #[test]
    fn standard_inquiry_bytes() {
        let i = sample_inquiry();
        let b = i.encode();
        assert_eq!(b.len(), 96);
        assert_eq!(&b[..8], &[0x00, 0x00, 0x06, 0x12, 91, 0x18, 0x00, 0x02]);
        assert_eq!(&b[8..16], b"IESP    ");
        assert_eq!(&b[16..32], b"reference-target");
        assert_eq!(&b[32..36], b"0.1 ");
        assert_eq!(
            &b[58..66],
            &[0x00, 0xa0, 0x09, 0x60, 0x04, 0x60, 0x04, 0xc0]
        );
        assert_eq!(StandardInquiry::parse(&b), Ok(i));
        assert_eq!(StandardInquiry::announced_len(&b), Some(96));

        let short = StandardInquiry::default().encode();
        assert_eq!(short.len(), 36);
        assert_eq!(short[4], 31);
        assert!(StandardInquiry::parse(&short[..35]).is_err());
    }

    #[test]
    fn not_capable_peripheral() {
        assert_eq!(Peripheral::NOT_CAPABLE.encode(), 0x7f);
        assert_eq!(Peripheral::decode(0x7f), Peripheral::NOT_CAPABLE);
        assert_eq!(
            format!("{:?}", PeripheralDeviceType(0x13)),
            "PeripheralDeviceType(0x13)"
        );
    }

    #[test]
    fn device_identification_bytes() {
        let v = Vpd::disk(VpdPage::DeviceIdentification(vec![
            Designator::naa_locally_assigned(0x123),
            Designator::scsi_name_string(Association::TARGET_DEVICE, "iqn.x"),
            Designator::relative_target_port(1),
        ]));
        let b = v.encode();
        assert_eq!(&b[..4], &[0x00, 0x83, 0x00, 12 + 12 + 8]);
        // NAA descriptor: binary, LU, type 3, 8 bytes, NAA nibble 3.
        assert_eq!(
            &b[4..16],
            &[0x01, 0x03, 0, 8, 0x30, 0, 0, 0, 0, 0, 0x01, 0x23]
        );
        // SCSI name string: iSCSI + UTF-8, PIV + target device + type 8.
        assert_eq!(
            &b[16..28],
            &[0x53, 0xa8, 0, 8, b'i', b'q', b'n', b'.', b'x', 0, 0, 0]
        );
        // Relative target port: iSCSI + binary, PIV + target port + type 4.
        assert_eq!(&b[28..36], &[0x51, 0x94, 0, 4, 0, 0, 0, 1]);
        let parsed = Vpd::parse(&b);
        assert_eq!(parsed, Ok(v));
        if let Ok(Vpd {
            page: VpdPage::DeviceIdentification(ds),
            ..
        }) = Vpd::parse(&b)
        {
            assert_eq!(ds[1].scsi_name(), Some("iqn.x"));
            assert_eq!(ds[2].port_identifier(), Some(1));
            assert_eq!(ds[0].naa(), Some(3));
        }
    }

    #[test]
    fn designator_overrunning_page_is_an_error() {
        let mut b = Vpd::disk(VpdPage::DeviceIdentification(vec![
            Designator::relative_target_port(1),
        ]))
        .encode();
        b[7] = 9; // claims 9 bytes in a 8-byte page
        assert_eq!(
            Vpd::parse(&b),
            Err(DataError::InvalidField {
                what: "designation descriptor",
                byte: 7,
                bit: None
            })
        );
        // Truncation within the page length is not.
        let b = Vpd::disk(VpdPage::DeviceIdentification(vec![
            Designator::relative_target_port(1),
            Designator::target_port_group(2),
        ]))
        .encode();
        let cut = Vpd::parse(&b[..14]);
        assert!(
            matches!(cut, Ok(Vpd { page: VpdPage::DeviceIdentification(ref d), .. }) if d.len() == 1)
        );
    }

    #[test]
    fn naa6_layout() {
        let d = Designator::naa_ieee_registered_extended(0x00_1405, 0x1_2345_6789, 0xdead_beef);
        assert_eq!(
            d.designator,
            vec![
                0x60, 0x01, 0x40, 0x51, 0x23, 0x45, 0x67, 0x89, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef
            ]
        );
        assert_eq!(d.naa(), Some(6));
    }

    #[test]
    fn block_limits_bytes() {
        let p = BlockLimits {
            max_compare_and_write_length: 1,
            max_transfer_length: 0x4000,
            max_unmap_lba_count: 0xffff_ffff,
            max_unmap_block_descriptor_count: 16,
            optimal_unmap_granularity: 8,
            unmap_granularity_alignment: Some(0),
            max_write_same_length: 0x1_0000,
            ..BlockLimits::default()
        };
        let b = Vpd::disk(VpdPage::BlockLimits(p)).encode();
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..4], &[0, 0xb0, 0, 0x3c]);
        assert_eq!(b[5], 1);
        assert_eq!(&b[8..12], &[0, 0, 0x40, 0]);
        assert_eq!(&b[20..24], &[0xff; 4]);
        assert_eq!(&b[32..36], &[0x80, 0, 0, 0]);
        assert_eq!(&b[36..44], &[0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(Vpd::parse(&b).map(|v| v.page), Ok(VpdPage::BlockLimits(p)));
        // A short SBC-2 era page parses with zeros.
        let mut old = b[..16].to_vec();
        old[3] = 12;
        let parsed = Vpd::parse(&old);
        assert!(
            matches!(parsed, Ok(Vpd { page: VpdPage::BlockLimits(l), .. }) if l.max_transfer_length == 0x4000 && l.max_unmap_lba_count == 0)
        );
    }

    #[test]
    fn characteristics_and_provisioning_bytes() {
        let c = BlockDeviceCharacteristics {
            medium_rotation_rate: BlockDeviceCharacteristics::NON_ROTATING,
            nominal_form_factor: 3,
            fuab: true,
            ..BlockDeviceCharacteristics::default()
        };
        let b = Vpd::disk(VpdPage::BlockDeviceCharacteristics(c)).encode();
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..9], &[0, 0xb1, 0, 0x3c, 0, 1, 0, 3, 0x02]);
        assert_eq!(
            Vpd::parse(&b).map(|v| v.page),
            Ok(VpdPage::BlockDeviceCharacteristics(c))
        );

        let p = LogicalBlockProvisioning {
            lbpu: true,
            lbpws: true,
            lbpws10: true,
            lbprz: 1,
            provisioning_type: LogicalBlockProvisioning::THIN,
            ..LogicalBlockProvisioning::default()
        };
        let b = Vpd::disk(VpdPage::LogicalBlockProvisioning(p.clone())).encode();
        assert_eq!(b, vec![0, 0xb2, 0, 4, 0, 0xe4, 0x02, 0]);
        assert_eq!(
            Vpd::parse(&b).map(|v| v.page),
            Ok(VpdPage::LogicalBlockProvisioning(p.clone()))
        );

        let with_group = LogicalBlockProvisioning {
            provisioning_group: Some(Designator::naa_locally_assigned(7)),
            ..p
        };
        let b = Vpd::disk(VpdPage::LogicalBlockProvisioning(with_group.clone())).encode();
        assert_eq!(b[5] & 0x01, 1);
        assert_eq!(be16(&b, 2), 16);
        assert_eq!(
            Vpd::parse(&b).map(|v| v.page),
            Ok(VpdPage::LogicalBlockProvisioning(with_group))
        );
    }

    #[test]
    fn supported_pages_and_serial() {
        let v = Vpd::disk(VpdPage::SupportedPages(vec![
            VpdPageCode::SUPPORTED_PAGES,
            VpdPageCode::UNIT_SERIAL_NUMBER,
            VpdPageCode::DEVICE_IDENTIFICATION,
            VpdPageCode::BLOCK_LIMITS,
        ]));
        let b = v.encode();
        assert_eq!(b, vec![0, 0, 0, 4, 0x00, 0x80, 0x83, 0xb0]);
        assert_eq!(Vpd::parse(&b), Ok(v));
        let s = Vpd::disk(VpdPage::UnitSerialNumber(b"SN0001".to_vec()));
        assert_eq!(Vpd::parse(&s.encode()), Ok(s));
        assert_eq!(Vpd::announced_len(&[0, 0x80, 0x01, 0x00]), Some(260));
    }

    fn designator_strategy() -> impl Strategy<Value = Designator> {
        (
            0u8..16,
            0u8..16,
            any::<bool>(),
            0u8..4,
            0u8..16,
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(p, c, piv, a, t, designator)| Designator {
                protocol_identifier: ProtocolId(p),
                code_set: CodeSet(c),
                piv,
                association: Association(a),
                designator_type: DesignatorType(t),
                designator,
            })
    }

    proptest! {
        #[test]
        fn inquiry_round_trip(
            pq in 0u8..8, pdt in 0u8..32, flags in any::<[bool; 14]>(), version in any::<u8>(),
            rdf in 0u8..16, tpgs in 0u8..4, ids in any::<([u8; 8], [u8; 16], [u8; 4])>(),
            vds in proptest::collection::vec(1u16.., 0..=8),
        ) {
            let i = StandardInquiry {
                peripheral: Peripheral { qualifier: pq, device_type: PeripheralDeviceType(pdt) },
                rmb: flags[0], lu_cong: flags[1], version, normaca: flags[2], hisup: flags[3],
                response_data_format: rdf, sccs: flags[4], acc: flags[5], tpgs,
                third_party_copy: flags[6], protect: flags[7], encserv: flags[8], multip: flags[9],
                cmdque: flags[10], vendor: ids.0, product: ids.1, revision: ids.2,
                version_descriptors: vds,
            };
            prop_assert_eq!(StandardInquiry::parse(&i.encode()), Ok(i));
        }

        #[test]
        fn device_identification_round_trip(ds in proptest::collection::vec(designator_strategy(), 0..8)) {
            let v = Vpd::disk(VpdPage::DeviceIdentification(ds));
            prop_assert_eq!(Vpd::parse(&v.encode()), Ok(v));
        }

        #[test]
        fn block_limits_round_trip(v in any::<(bool, u8, u16, [u32; 6], Option<u32>, u64, [u32; 5])>()) {
            let p = BlockLimits {
                wsnz: v.0, max_compare_and_write_length: v.1, optimal_transfer_length_granularity: v.2,
                max_transfer_length: v.3[0], optimal_transfer_length: v.3[1], max_prefetch_length: v.3[2],
                max_unmap_lba_count: v.3[3], max_unmap_block_descriptor_count: v.3[4],
                optimal_unmap_granularity: v.3[5],
                unmap_granularity_alignment: v.4.map(|a| a & 0x7fff_ffff),
                max_write_same_length: v.5, max_atomic_transfer_length: v.6[0], atomic_alignment: v.6[1],
                atomic_transfer_length_granularity: v.6[2], max_atomic_transfer_length_with_boundary: v.6[3],
                max_atomic_boundary_size: v.6[4],
            };
            let vpd = Vpd::disk(VpdPage::BlockLimits(p));
            prop_assert_eq!(Vpd::parse(&vpd.encode()), Ok(vpd));
        }

        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300), code in any::<u8>()) {
            let _ = StandardInquiry::parse(&b);
            let mut b = b;
            if b.len() > 1 {
                b[1] = code;
            }
            let _ = Vpd::parse(&b);
        }
    }
}
