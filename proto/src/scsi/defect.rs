//! READ DEFECT DATA parameter data (SBC-4 §5.19.2 for the 10-byte command,
//! §5.20.2 for the 12-byte one): a header saying which lists are present,
//! in which DEFECT LIST FORMAT, and how many bytes of address descriptors
//! follow.
//!
//! - READ DEFECT DATA(10): 4-byte header — byte 1 PLISTV (bit 4), GLISTV
//!   (bit 3), DEFECT LIST FORMAT (bits 2..0); bytes 2..3 DEFECT LIST LENGTH.
//! - READ DEFECT DATA(12): 8-byte header — byte 1 as above; bytes 2..3
//!   GENERATION CODE; bytes 4..7 DEFECT LIST LENGTH.
//!
//! The address descriptors are carried raw: their size depends on the
//! format (8 bytes for the short and long block formats, 8 for the others).

use super::DataError;
use super::wire::{be16, be32, bit, need, u8_at};

/// DEFECT LIST FORMAT values (SBC-4 §6.2, table 177).
pub mod format {
    /// Short block format address descriptors.
    pub const SHORT_BLOCK: u8 = 0b000;
    /// Extended bytes from index format.
    pub const EXTENDED_BYTES_FROM_INDEX: u8 = 0b001;
    /// Extended physical sector format.
    pub const EXTENDED_PHYSICAL_SECTOR: u8 = 0b010;
    /// Long block format.
    pub const LONG_BLOCK: u8 = 0b011;
    /// Bytes from index format.
    pub const BYTES_FROM_INDEX: u8 = 0b100;
    /// Physical sector format.
    pub const PHYSICAL_SECTOR: u8 = 0b101;
    /// Vendor specific format.
    pub const VENDOR_SPECIFIC: u8 = 0b110;
    /// The one reserved value.
    pub const RESERVED: u8 = 0b111;
}

/// READ DEFECT DATA parameter data.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct DefectData {
    /// PLISTV: the primary defect list is included.
    pub plistv: bool,
    /// GLISTV: the grown defect list is included.
    pub glistv: bool,
    /// DEFECT LIST FORMAT (3 bits).
    pub format: u8,
    /// GENERATION CODE (12-byte form only).
    pub generation: u16,
    /// The address descriptors, raw.
    pub descriptors: Vec<u8>,
}

impl DefectData {
    fn byte1(&self) -> u8 {
        u8::from(self.plistv) << 4 | u8::from(self.glistv) << 3 | (self.format & 0x07)
    }

    /// Encodes for READ DEFECT DATA(10); DEFECT LIST LENGTH saturates at
    /// 65535.
    pub fn encode_10(&self) -> Vec<u8> {
        let len = u16::try_from(self.descriptors.len()).unwrap_or(u16::MAX);
        let mut b = vec![0, self.byte1()];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&self.descriptors);
        b
    }

    /// Encodes for READ DEFECT DATA(12).
    pub fn encode_12(&self) -> Vec<u8> {
        let len = u32::try_from(self.descriptors.len()).unwrap_or(u32::MAX);
        let mut b = vec![0, self.byte1()];
        b.extend_from_slice(&self.generation.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&self.descriptors);
        b
    }

    /// Decodes READ DEFECT DATA(10) data; descriptors are what arrived of
    /// the announced list.
    pub fn parse_10(b: &[u8]) -> Result<DefectData, DataError> {
        need(b, 4, "READ DEFECT DATA(10) header")?;
        let len = usize::from(be16(b, 2));
        Ok(DefectData {
            plistv: bit(b, 1, 0x10),
            glistv: bit(b, 1, 0x08),
            format: u8_at(b, 1) & 0x07,
            generation: 0,
            descriptors: b
                .get(4..)
                .unwrap_or_default()
                .iter()
                .take(len)
                .copied()
                .collect(),
        })
    }

    /// Decodes READ DEFECT DATA(12) data.
    pub fn parse_12(b: &[u8]) -> Result<DefectData, DataError> {
        need(b, 8, "READ DEFECT DATA(12) header")?;
        let len = usize::try_from(be32(b, 4)).unwrap_or(usize::MAX);
        Ok(DefectData {
            plistv: bit(b, 1, 0x10),
            glistv: bit(b, 1, 0x08),
            format: u8_at(b, 1) & 0x07,
            generation: be16(b, 2),
            descriptors: b
                .get(8..)
                .unwrap_or_default()
                .iter()
                .take(len)
                .copied()
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists_round_trip_in_both_forms() {
        let d = DefectData {
            plistv: true,
            glistv: false,
            format: format::LONG_BLOCK,
            generation: 0,
            descriptors: Vec::new(),
        };
        let ten = d.encode_10();
        assert_eq!(ten, [0x00, 0x13, 0x00, 0x00]);
        assert_eq!(DefectData::parse_10(&ten), Ok(d.clone()));
        let twelve = DefectData {
            generation: 0x1234,
            glistv: true,
            ..d
        };
        let b = twelve.encode_12();
        assert_eq!(b, [0x00, 0x1b, 0x12, 0x34, 0, 0, 0, 0]);
        assert_eq!(DefectData::parse_12(&b), Ok(twelve));
    }

    #[test]
    fn descriptors_are_bounded_by_the_list_length() {
        let d = DefectData {
            plistv: false,
            glistv: true,
            format: format::SHORT_BLOCK,
            generation: 0,
            descriptors: vec![0, 0, 0, 7, 0, 0, 0, 9],
        };
        let mut b = d.encode_10();
        assert_eq!(&b[2..4], &[0, 8]);
        b.extend_from_slice(&[0xff; 4]); // beyond DEFECT LIST LENGTH
        assert_eq!(
            DefectData::parse_10(&b).map(|p| p.descriptors),
            Ok(d.descriptors)
        );
        assert!(DefectData::parse_10(&[0, 0, 0]).is_err());
        assert!(DefectData::parse_12(&[0; 7]).is_err());
    }
}
