//! EXTENDED COPY (LID1) parameter lists and the RECEIVE COPY RESULTS data
//! that goes with them (SPC-4 §6.4, §6.18, §6.20; descriptor formats
//! §6.4.5, §6.4.6).
//!
//! The LID1 parameter list: a 16-byte header (LIST IDENTIFIER, STR, LIST ID
//! USAGE, PRIORITY, CSCD (target) DESCRIPTOR LIST LENGTH, SEGMENT DESCRIPTOR
//! LIST LENGTH, INLINE DATA LENGTH), then the target descriptors, the
//! segment descriptors and the inline data.
//!
//! Decoded here: the Identification CSCD descriptor (E4h, 32 bytes) and the
//! block-device-to-block-device segment descriptor (02h, 28 bytes). Other
//! target descriptor types of known length (the 32-byte E0h..E9h and the
//! 64-byte EAh/EBh) and any segment descriptor (it carries its length) are
//! kept raw, so a copy manager can answer UNSUPPORTED … DESCRIPTOR TYPE CODE
//! for them; a target descriptor type whose length is unknown stops the
//! parse with [`XcopyError::UnknownTargetType`]. Limits (how many
//! descriptors, how long) are the copy manager's to check.

use super::DataError;
use super::wire::{be16, be32, be64, u8_at};

/// Target descriptor type codes (SPC-4 table 107).
pub mod target_type {
    /// Identification CSCD descriptor.
    pub const IDENTIFICATION: u8 = 0xe4;
}

/// Segment descriptor type codes (SPC-4 table 112).
pub mod segment_type {
    /// Copy from block device to block device.
    pub const BLOCK_TO_BLOCK: u8 = 0x02;
}

/// The header of a LID1 parameter list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct XcopyHeader {
    /// LIST IDENTIFIER.
    pub list_identifier: u8,
    /// STR: sequential striped.
    pub str_bit: bool,
    /// LIST ID USAGE (2 bits).
    pub list_id_usage: u8,
    /// PRIORITY (3 bits).
    pub priority: u8,
    /// CSCD DESCRIPTOR LIST LENGTH.
    pub target_list_length: u16,
    /// SEGMENT DESCRIPTOR LIST LENGTH.
    pub segment_list_length: u32,
    /// INLINE DATA LENGTH.
    pub inline_data_length: u32,
}

/// LIST ID USAGE values (SPC-4 table 105).
pub mod list_id_usage {
    /// Hold data and status for RECEIVE COPY RESULTS.
    pub const HOLD: u8 = 0b00;
    /// Reserved.
    pub const RESERVED: u8 = 0b01;
    /// Keep status, no data.
    pub const NO_HOLD: u8 = 0b10;
    /// No list identifier: nothing kept.
    pub const NONE: u8 = 0b11;
}

/// An Identification CSCD descriptor (E4h).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct IdentificationTarget {
    /// LU ID TYPE (2 bits; obsolete in SPC-4, kept for a round trip).
    pub lu_id_type: u8,
    /// NUL (obsolete).
    pub nul: bool,
    /// PERIPHERAL DEVICE TYPE (5 bits).
    pub peripheral_type: u8,
    /// RELATIVE INITIATOR PORT IDENTIFIER.
    pub relative_initiator_port: u16,
    /// CODE SET of the designation descriptor.
    pub code_set: u8,
    /// ASSOCIATION (2 bits).
    pub association: u8,
    /// DESIGNATOR TYPE (4 bits).
    pub designator_type: u8,
    /// The designator (at most 16 bytes).
    pub designator: Vec<u8>,
    /// Device type specific parameters (bytes 24..32); for a block device
    /// byte 28 bit 2 is PAD and bytes 29..32 the DISK BLOCK LENGTH.
    pub type_specific: [u8; 8],
}

impl IdentificationTarget {
    /// DISK BLOCK LENGTH of a block device descriptor.
    pub fn disk_block_length(&self) -> u32 {
        u32::from_be_bytes([
            0,
            self.type_specific[5],
            self.type_specific[6],
            self.type_specific[7],
        ])
    }
}

/// A target (CSCD) descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetDescriptor {
    Identification(IdentificationTarget),
    /// Another type of known length, raw (type code included).
    Other {
        type_code: u8,
        data: Vec<u8>,
    },
}

/// A block-device-to-block-device segment descriptor (02h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BlockToBlock {
    /// DC: the block count is in destination blocks.
    pub dc: bool,
    /// CAT.
    pub cat: bool,
    /// SOURCE CSCD DESCRIPTOR ID.
    pub source: u16,
    /// DESTINATION CSCD DESCRIPTOR ID.
    pub destination: u16,
    /// BLOCK DEVICE NUMBER OF BLOCKS.
    pub blocks: u16,
    /// SOURCE BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub source_lba: u64,
    /// DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub destination_lba: u64,
}

/// A segment descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SegmentDescriptor {
    BlockToBlock(BlockToBlock),
    /// Another type (or a 02h descriptor of the wrong length), raw.
    Other {
        type_code: u8,
        data: Vec<u8>,
    },
}

/// A LID1 parameter list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ExtendedCopyParameters {
    pub header: XcopyHeader,
    pub targets: Vec<TargetDescriptor>,
    /// With the byte offset of each in the list, for error pointers.
    pub segments: Vec<(usize, SegmentDescriptor)>,
    pub inline_data: Vec<u8>,
}

/// Why a parameter list could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XcopyError {
    /// Lengths do not add up (PARAMETER LIST LENGTH ERROR).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A target descriptor of a type whose length is not known, at `byte`.
    #[error("unknown target descriptor type {type_code:#04x} at byte {byte}")]
    UnknownTargetType { type_code: u8, byte: usize },
}

/// Length of a target descriptor from its type code, if known.
fn target_len(type_code: u8) -> Option<usize> {
    match type_code {
        0xe0..=0xe9 => Some(32),
        0xea | 0xeb => Some(64),
        _ => None,
    }
}

const WHAT: &str = "EXTENDED COPY parameter list";

fn length_error(len: usize) -> XcopyError {
    XcopyError::Data(DataError::ListLength { what: WHAT, len })
}

impl ExtendedCopyParameters {
    /// Decodes a list of exactly the PARAMETER LIST LENGTH received: the
    /// header's lengths must add up to it.
    pub fn parse(b: &[u8]) -> Result<ExtendedCopyParameters, XcopyError> {
        if b.len() < 16 {
            return Err(length_error(b.len()));
        }
        let header = XcopyHeader {
            list_identifier: u8_at(b, 0),
            str_bit: u8_at(b, 1) & 0x20 != 0,
            list_id_usage: (u8_at(b, 1) >> 3) & 0x03,
            priority: u8_at(b, 1) & 0x07,
            target_list_length: be16(b, 2),
            segment_list_length: be32(b, 8),
            inline_data_length: be32(b, 12),
        };
        let tl = usize::from(header.target_list_length);
        let sl = usize::try_from(header.segment_list_length).unwrap_or(usize::MAX);
        let il = usize::try_from(header.inline_data_length).unwrap_or(usize::MAX);
        let total = 16usize
            .checked_add(tl)
            .and_then(|t| t.checked_add(sl))
            .and_then(|t| t.checked_add(il));
        if total != Some(b.len()) {
            return Err(length_error(b.len()));
        }
        let mut targets = Vec::new();
        let mut at = 16;
        while at < 16 + tl {
            let type_code = u8_at(b, at);
            let len = target_len(type_code).ok_or(XcopyError::UnknownTargetType {
                type_code,
                byte: at,
            })?;
            let d = b.get(at..at + len).filter(|_| at + len <= 16 + tl);
            let d = d.ok_or_else(|| length_error(b.len()))?;
            targets.push(if type_code == target_type::IDENTIFICATION {
                let dlen = usize::from(u8_at(d, 7)).min(16);
                let mut type_specific = [0u8; 8];
                type_specific.copy_from_slice(&d[24..32]);
                TargetDescriptor::Identification(IdentificationTarget {
                    lu_id_type: u8_at(d, 1) >> 6,
                    nul: u8_at(d, 1) & 0x20 != 0,
                    peripheral_type: u8_at(d, 1) & 0x1f,
                    relative_initiator_port: be16(d, 2),
                    code_set: u8_at(d, 4) & 0x0f,
                    association: (u8_at(d, 5) >> 4) & 0x03,
                    designator_type: u8_at(d, 5) & 0x0f,
                    designator: d.get(8..8 + dlen).unwrap_or_default().to_vec(),
                    type_specific,
                })
            } else {
                TargetDescriptor::Other {
                    type_code,
                    data: d.to_vec(),
                }
            });
            at += len;
        }
        let mut segments = Vec::new();
        let end = 16 + tl + sl;
        while at < end {
            if at + 4 > end {
                return Err(length_error(b.len()));
            }
            let type_code = u8_at(b, at);
            let len = 4 + usize::from(be16(b, at + 2));
            let d = b
                .get(at..at + len)
                .filter(|_| at + len <= end)
                .ok_or_else(|| length_error(b.len()))?;
            let seg = if type_code == segment_type::BLOCK_TO_BLOCK && len == 28 {
                SegmentDescriptor::BlockToBlock(BlockToBlock {
                    dc: u8_at(d, 1) & 0x02 != 0,
                    cat: u8_at(d, 1) & 0x01 != 0,
                    source: be16(d, 4),
                    destination: be16(d, 6),
                    blocks: be16(d, 10),
                    source_lba: be64(d, 12),
                    destination_lba: be64(d, 20),
                })
            } else {
                SegmentDescriptor::Other {
                    type_code,
                    data: d.to_vec(),
                }
            };
            segments.push((at, seg));
            at += len;
        }
        Ok(ExtendedCopyParameters {
            header,
            targets,
            segments,
            inline_data: b.get(end..).unwrap_or_default().to_vec(),
        })
    }

    /// Encodes; the header's lengths are computed from the content.
    pub fn encode(&self) -> Vec<u8> {
        let mut targets = Vec::new();
        for t in &self.targets {
            match t {
                TargetDescriptor::Identification(id) => {
                    let mut d = [0u8; 32];
                    d[0] = target_type::IDENTIFICATION;
                    d[1] = (id.lu_id_type & 0x03) << 6
                        | u8::from(id.nul) << 5
                        | (id.peripheral_type & 0x1f);
                    d[2..4].copy_from_slice(&id.relative_initiator_port.to_be_bytes());
                    d[4] = id.code_set & 0x0f;
                    d[5] = (id.association & 0x03) << 4 | (id.designator_type & 0x0f);
                    let n = id.designator.len().min(16);
                    d[7] = n as u8;
                    d[8..8 + n].copy_from_slice(&id.designator[..n]);
                    d[24..32].copy_from_slice(&id.type_specific);
                    targets.extend_from_slice(&d);
                }
                TargetDescriptor::Other { data, .. } => targets.extend_from_slice(data),
            }
        }
        let mut segments = Vec::new();
        for (_, s) in &self.segments {
            match s {
                SegmentDescriptor::BlockToBlock(s) => {
                    let mut d = [0u8; 28];
                    d[0] = segment_type::BLOCK_TO_BLOCK;
                    d[1] = u8::from(s.dc) << 1 | u8::from(s.cat);
                    d[2..4].copy_from_slice(&24u16.to_be_bytes());
                    d[4..6].copy_from_slice(&s.source.to_be_bytes());
                    d[6..8].copy_from_slice(&s.destination.to_be_bytes());
                    d[10..12].copy_from_slice(&s.blocks.to_be_bytes());
                    d[12..20].copy_from_slice(&s.source_lba.to_be_bytes());
                    d[20..28].copy_from_slice(&s.destination_lba.to_be_bytes());
                    segments.extend_from_slice(&d);
                }
                SegmentDescriptor::Other { data, .. } => segments.extend_from_slice(data),
            }
        }
        let h = &self.header;
        let mut b = vec![
            h.list_identifier,
            u8::from(h.str_bit) << 5 | (h.list_id_usage & 0x03) << 3 | (h.priority & 0x07),
        ];
        b.extend_from_slice(
            &u16::try_from(targets.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(
            &u32::try_from(segments.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        b.extend_from_slice(
            &u32::try_from(self.inline_data.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        b.extend_from_slice(&targets);
        b.extend_from_slice(&segments);
        b.extend_from_slice(&self.inline_data);
        b
    }
}

/// COPY MANAGER STATUS values of RECEIVE COPY STATUS (LID1) (SPC-4
/// table 172).
pub mod copy_manager_status {
    /// Operation in progress.
    pub const IN_PROGRESS: u8 = 0x00;
    /// Completed without errors.
    pub const COMPLETED: u8 = 0x01;
    /// Completed with errors.
    pub const FAILED: u8 = 0x02;
}

/// RECEIVE COPY STATUS (LID1) parameter data, 12 bytes (SPC-4 §6.20.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CopyStatus {
    /// HDD: held data discarded.
    pub hdd: bool,
    /// COPY MANAGER STATUS (7 bits).
    pub status: u8,
    /// SEGMENTS PROCESSED.
    pub segments_processed: u16,
    /// TRANSFER COUNT UNITS (0: bytes, 1: KiB, 2: MiB, …).
    pub transfer_count_units: u8,
    /// TRANSFER COUNT.
    pub transfer_count: u32,
}

impl CopyStatus {
    /// Encodes the 12 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = 8u32.to_be_bytes().to_vec();
        b.push(u8::from(self.hdd) << 7 | (self.status & 0x7f));
        b.extend_from_slice(&self.segments_processed.to_be_bytes());
        b.push(self.transfer_count_units);
        b.extend_from_slice(&self.transfer_count.to_be_bytes());
        b
    }

    /// Decodes (at least 12 bytes).
    pub fn parse(b: &[u8]) -> Result<CopyStatus, DataError> {
        super::wire::need(b, 12, "RECEIVE COPY STATUS data")?;
        Ok(CopyStatus {
            hdd: u8_at(b, 4) & 0x80 != 0,
            status: u8_at(b, 4) & 0x7f,
            segments_processed: be16(b, 5),
            transfer_count_units: u8_at(b, 7),
            transfer_count: be32(b, 8),
        })
    }
}

/// RECEIVE COPY OPERATING PARAMETERS data (SPC-4 §6.20.4, table 175).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct CopyOperatingParameters {
    /// SNLID: supports no list identifier.
    pub snlid: bool,
    /// MAXIMUM CSCD DESCRIPTOR COUNT.
    pub max_target_descriptors: u16,
    /// MAXIMUM SEGMENT DESCRIPTOR COUNT.
    pub max_segment_descriptors: u16,
    /// MAXIMUM DESCRIPTOR LIST LENGTH.
    pub max_descriptor_list_length: u32,
    /// MAXIMUM SEGMENT LENGTH (bytes).
    pub max_segment_length: u32,
    /// MAXIMUM INLINE DATA LENGTH.
    pub max_inline_data_length: u32,
    /// HELD DATA LIMIT.
    pub held_data_limit: u32,
    /// MAXIMUM STREAM DEVICE TRANSFER SIZE.
    pub max_stream_transfer_size: u32,
    /// TOTAL CONCURRENT COPIES.
    pub total_concurrent_copies: u16,
    /// MAXIMUM CONCURRENT COPIES.
    pub max_concurrent_copies: u8,
    /// DATA SEGMENT GRANULARITY (log2 bytes).
    pub data_segment_granularity: u8,
    /// INLINE DATA GRANULARITY (log2 bytes).
    pub inline_data_granularity: u8,
    /// HELD DATA GRANULARITY (log2 bytes).
    pub held_data_granularity: u8,
    /// The descriptor type codes implemented.
    pub implemented_descriptors: Vec<u8>,
}

impl CopyOperatingParameters {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 44];
        b[4] = u8::from(self.snlid);
        b[8..10].copy_from_slice(&self.max_target_descriptors.to_be_bytes());
        b[10..12].copy_from_slice(&self.max_segment_descriptors.to_be_bytes());
        b[12..16].copy_from_slice(&self.max_descriptor_list_length.to_be_bytes());
        b[16..20].copy_from_slice(&self.max_segment_length.to_be_bytes());
        b[20..24].copy_from_slice(&self.max_inline_data_length.to_be_bytes());
        b[24..28].copy_from_slice(&self.held_data_limit.to_be_bytes());
        b[28..32].copy_from_slice(&self.max_stream_transfer_size.to_be_bytes());
        b[34..36].copy_from_slice(&self.total_concurrent_copies.to_be_bytes());
        b[36] = self.max_concurrent_copies;
        b[37] = self.data_segment_granularity;
        b[38] = self.inline_data_granularity;
        b[39] = self.held_data_granularity;
        let n = self.implemented_descriptors.len().min(255);
        b[43] = n as u8;
        b.extend_from_slice(&self.implemented_descriptors[..n]);
        let available = u32::try_from(b.len() - 4).unwrap_or(u32::MAX);
        b[..4].copy_from_slice(&available.to_be_bytes());
        b
    }

    /// Decodes (at least 44 bytes; the descriptor list as far as it came).
    pub fn parse(b: &[u8]) -> Result<CopyOperatingParameters, DataError> {
        super::wire::need(b, 44, "RECEIVE COPY OPERATING PARAMETERS data")?;
        let n = usize::from(u8_at(b, 43));
        Ok(CopyOperatingParameters {
            snlid: u8_at(b, 4) & 0x01 != 0,
            max_target_descriptors: be16(b, 8),
            max_segment_descriptors: be16(b, 10),
            max_descriptor_list_length: be32(b, 12),
            max_segment_length: be32(b, 16),
            max_inline_data_length: be32(b, 20),
            held_data_limit: be32(b, 24),
            max_stream_transfer_size: be32(b, 28),
            total_concurrent_copies: be16(b, 34),
            max_concurrent_copies: u8_at(b, 36),
            data_segment_granularity: u8_at(b, 37),
            inline_data_granularity: u8_at(b, 38),
            held_data_granularity: u8_at(b, 39),
            implemented_descriptors: b
                .get(44..)
                .unwrap_or_default()
                .iter()
                .take(n)
                .copied()
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naa_target() -> TargetDescriptor {
        TargetDescriptor::Identification(IdentificationTarget {
            peripheral_type: 0,
            code_set: 1,
            association: 0,
            designator_type: 3,
            designator: vec![0x31, 2, 3, 4, 5, 6, 7, 8],
            type_specific: [0, 0, 0, 0, 0, 0, 2, 0],
            ..Default::default()
        })
    }

    fn b2b(blocks: u16) -> SegmentDescriptor {
        SegmentDescriptor::BlockToBlock(BlockToBlock {
            source: 0,
            destination: 0,
            blocks,
            source_lba: 5,
            destination_lba: 1 << 33,
            ..Default::default()
        })
    }

    #[test]
    fn round_trip_and_layout() {
        let p = ExtendedCopyParameters {
            header: XcopyHeader {
                list_identifier: 7,
                list_id_usage: list_id_usage::NO_HOLD,
                ..Default::default()
            },
            targets: vec![naa_target()],
            segments: vec![(48, b2b(2048))],
            inline_data: Vec::new(),
        };
        let b = p.encode();
        assert_eq!(b.len(), 16 + 32 + 28);
        assert_eq!(&b[..4], &[7, 0x10, 0, 32]);
        assert_eq!(&b[8..12], &[0, 0, 0, 28]);
        assert_eq!(b[16], 0xe4);
        assert_eq!(&b[48..52], &[0x02, 0, 0, 24]);
        let back = ExtendedCopyParameters::parse(&b).expect("parses");
        assert_eq!(
            back.header,
            XcopyHeader {
                target_list_length: 32,
                segment_list_length: 28,
                ..p.header
            }
        );
        assert_eq!(back.targets, p.targets);
        assert_eq!(back.segments, p.segments);
        let TargetDescriptor::Identification(id) = &back.targets[0] else {
            panic!()
        };
        assert_eq!(id.disk_block_length(), 512);
    }

    #[test]
    fn lengths_must_add_up_and_unknown_types_are_reported() {
        let p = ExtendedCopyParameters {
            targets: vec![naa_target()],
            segments: vec![(48, b2b(1))],
            ..Default::default()
        };
        let b = p.encode();
        for cut in [0, 15, 16 + 31, b.len() - 1] {
            assert!(
                matches!(
                    ExtendedCopyParameters::parse(&b[..cut]),
                    Err(XcopyError::Data(DataError::ListLength { .. }))
                ),
                "{cut}"
            );
        }
        let mut odd = b.clone();
        odd[16] = 0x05;
        assert_eq!(
            ExtendedCopyParameters::parse(&odd),
            Err(XcopyError::UnknownTargetType {
                type_code: 5,
                byte: 16
            })
        );
        let mut fc = b.clone();
        fc[16] = 0xe0;
        assert!(matches!(
            ExtendedCopyParameters::parse(&fc).map(|p| p.targets[0].clone()),
            Ok(TargetDescriptor::Other {
                type_code: 0xe0,
                ..
            })
        ));
        let mut stream = b;
        stream[48] = 0x03;
        assert!(matches!(
            ExtendedCopyParameters::parse(&stream).map(|p| p.segments[0].1.clone()),
            Ok(SegmentDescriptor::Other { type_code: 3, .. })
        ));
    }

    #[test]
    fn results_round_trip() {
        let s = CopyStatus {
            hdd: false,
            status: copy_manager_status::COMPLETED,
            segments_processed: 1,
            transfer_count_units: 1,
            transfer_count: 1024,
        };
        let b = s.encode();
        assert_eq!(b.len(), 12);
        assert_eq!(&b[..4], &[0, 0, 0, 8]);
        assert_eq!(CopyStatus::parse(&b), Ok(s));
        let o = CopyOperatingParameters {
            snlid: true,
            max_target_descriptors: 8,
            max_segment_descriptors: 16,
            max_descriptor_list_length: 4096,
            max_segment_length: 1 << 25,
            total_concurrent_copies: 1,
            max_concurrent_copies: 1,
            implemented_descriptors: vec![0x02, 0xe4],
            ..Default::default()
        };
        let b = o.encode();
        assert_eq!(b.len(), 46);
        assert_eq!(&b[..4], &[0, 0, 0, 42]);
        assert_eq!(CopyOperatingParameters::parse(&b), Ok(o));
    }
}
