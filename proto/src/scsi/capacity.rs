//! READ CAPACITY (10)/(16) parameter data (SBC-4 §5.16.2, §5.17.2) and GET
//! LBA STATUS parameter data (SBC-4 §5.7.2).
//!
//! Both READ CAPACITY payloads report the *last* LBA, not the block count.
//! READ CAPACITY (10) saturates it at 0xFFFFFFFF, which tells the initiator
//! to use READ CAPACITY (16) (SBC-4 §5.16.2).

use std::fmt;

use super::DataError;
use super::wire::{be16, be32, be64, bit, flag, need, u8_at};

/// READ CAPACITY (10) parameter data, 8 bytes (SBC-4 §5.16.2, table 65).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReadCapacity10Data {
    /// RETURNED LOGICAL BLOCK ADDRESS: the last LBA, or 0xFFFFFFFF if it
    /// does not fit.
    pub returned_lba: u32,
    /// LOGICAL BLOCK LENGTH IN BYTES.
    pub block_length: u32,
}

impl ReadCapacity10Data {
    /// The data for a medium of `blocks` logical blocks (at least one),
    /// saturating the returned LBA.
    pub fn for_capacity(blocks: u64, block_length: u32) -> ReadCapacity10Data {
        let last = blocks.saturating_sub(1);
        ReadCapacity10Data {
            returned_lba: u32::try_from(last).unwrap_or(u32::MAX),
            block_length,
        }
    }

    /// Encodes the 8 bytes.
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.returned_lba.to_be_bytes());
        b[4..].copy_from_slice(&self.block_length.to_be_bytes());
        b
    }

    /// Decodes (at least 8 bytes).
    pub fn parse(b: &[u8]) -> Result<ReadCapacity10Data, DataError> {
        need(b, 8, "READ CAPACITY (10) data")?;
        Ok(ReadCapacity10Data {
            returned_lba: be32(b, 0),
            block_length: be32(b, 4),
        })
    }
}

/// READ CAPACITY (16) parameter data, 32 bytes (SBC-4 §5.17.2, table 67).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReadCapacity16Data {
    /// RETURNED LOGICAL BLOCK ADDRESS: the last LBA.
    pub returned_lba: u64,
    /// LOGICAL BLOCK LENGTH IN BYTES.
    pub block_length: u32,
    /// RC BASIS (2 bits): 0 the returned LBA is the last LBA of the
    /// current capacity (SBC-4 table 68).
    pub rc_basis: u8,
    /// P_TYPE (3 bits): protection type - 1 when PROT_EN.
    pub p_type: u8,
    /// PROT_EN: protection information enabled.
    pub prot_en: bool,
    /// P_I_EXPONENT (4 bits).
    pub p_i_exponent: u8,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (4 bits).
    pub lbppbe: u8,
    /// LBPME: logical block provisioning management enabled (thin).
    pub lbpme: bool,
    /// LBPRZ: unmapped blocks read as zeros.
    pub lbprz: bool,
    /// LOWEST ALIGNED LOGICAL BLOCK ADDRESS (14 bits).
    pub lowest_aligned_lba: u16,
}

impl ReadCapacity16Data {
    /// The data for a medium of `blocks` logical blocks (at least one),
    /// everything else zero.
    pub fn for_capacity(blocks: u64, block_length: u32) -> ReadCapacity16Data {
        ReadCapacity16Data {
            returned_lba: blocks.saturating_sub(1),
            block_length,
            ..ReadCapacity16Data::default()
        }
    }

    /// Encodes the 32 bytes.
    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.returned_lba.to_be_bytes());
        b[8..12].copy_from_slice(&self.block_length.to_be_bytes());
        b[12] = (self.rc_basis & 0x03) << 4 | (self.p_type & 0x07) << 1 | flag(self.prot_en, 0x01);
        b[13] = (self.p_i_exponent & 0x0f) << 4 | (self.lbppbe & 0x0f);
        let [hi, lo] = (self.lowest_aligned_lba & 0x3fff).to_be_bytes();
        b[14] = flag(self.lbpme, 0x80) | flag(self.lbprz, 0x40) | hi;
        b[15] = lo;
        b
    }

    /// Decodes; needs the first 16 bytes (bytes 16..32 are reserved).
    pub fn parse(b: &[u8]) -> Result<ReadCapacity16Data, DataError> {
        need(b, 16, "READ CAPACITY (16) data")?;
        Ok(ReadCapacity16Data {
            returned_lba: be64(b, 0),
            block_length: be32(b, 8),
            rc_basis: (u8_at(b, 12) >> 4) & 0x03,
            p_type: (u8_at(b, 12) >> 1) & 0x07,
            prot_en: bit(b, 12, 0x01),
            p_i_exponent: u8_at(b, 13) >> 4,
            lbppbe: u8_at(b, 13) & 0x0f,
            lbpme: bit(b, 14, 0x80),
            lbprz: bit(b, 14, 0x40),
            lowest_aligned_lba: be16(b, 14) & 0x3fff,
        })
    }
}

/// PROVISIONING STATUS of an LBA status descriptor (SBC-4 §5.7.2.2,
/// table 41).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ProvisioningStatus(pub u8);

impl ProvisioningStatus {
    /// Mapped, or state unknown (all LBAs of a fully provisioned LU).
    pub const MAPPED_OR_UNKNOWN: ProvisioningStatus = ProvisioningStatus(0x0);
    /// Deallocated.
    pub const DEALLOCATED: ProvisioningStatus = ProvisioningStatus(0x1);
    /// Anchored.
    pub const ANCHORED: ProvisioningStatus = ProvisioningStatus(0x2);
    /// Mapped (later SBC-4 revisions).
    pub const MAPPED: ProvisioningStatus = ProvisioningStatus(0x3);
    /// Unknown (later SBC-4 revisions).
    pub const UNKNOWN: ProvisioningStatus = ProvisioningStatus(0x4);

    /// The SBC-4 name.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            ProvisioningStatus::MAPPED_OR_UNKNOWN => "mapped or unknown",
            ProvisioningStatus::DEALLOCATED => "deallocated",
            ProvisioningStatus::ANCHORED => "anchored",
            ProvisioningStatus::MAPPED => "mapped",
            ProvisioningStatus::UNKNOWN => "unknown",
            _ => return None,
        })
    }
}

impl fmt::Debug for ProvisioningStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "ProvisioningStatus({:#04x})", self.0),
        }
    }
}

/// An LBA status descriptor, 16 bytes (SBC-4 §5.7.2.2, table 40).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LbaStatusDescriptor {
    /// LBA STATUS LOGICAL BLOCK ADDRESS: first LBA of the extent.
    pub lba: u64,
    /// NUMBER OF LOGICAL BLOCKS in the extent.
    pub blocks: u32,
    /// PROVISIONING STATUS (4 bits).
    pub provisioning_status: ProvisioningStatus,
    /// ADDITIONAL STATUS (later SBC-4 revisions; byte 13).
    pub additional_status: u8,
}

/// GET LBA STATUS parameter data (SBC-4 §5.7.2.1, table 39): an 8-byte
/// header then descriptors. A conforming device returns at least one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct LbaStatusData {
    /// The descriptors, in LBA order.
    pub descriptors: Vec<LbaStatusDescriptor>,
}

impl LbaStatusData {
    /// Encodes; PARAMETER DATA LENGTH is 4 + 16 per descriptor.
    pub fn encode(&self) -> Vec<u8> {
        let len = 4 + 16 * self.descriptors.len();
        let mut b = Vec::with_capacity(4 + len);
        b.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        for d in &self.descriptors {
            b.extend_from_slice(&d.lba.to_be_bytes());
            b.extend_from_slice(&d.blocks.to_be_bytes());
            b.push(d.provisioning_status.0 & 0x0f);
            b.push(d.additional_status);
            b.extend_from_slice(&[0; 2]);
        }
        b
    }

    /// Decodes the descriptors that arrived whole (bounded by PARAMETER DATA
    /// LENGTH).
    pub fn parse(b: &[u8]) -> Result<LbaStatusData, DataError> {
        need(b, 8, "GET LBA STATUS data")?;
        let avail = usize::try_from(be32(b, 0))
            .unwrap_or(usize::MAX)
            .saturating_sub(4);
        let rest = b.get(8..).unwrap_or_default();
        let body = rest.get(..avail.min(rest.len())).unwrap_or_default();
        let descriptors = body
            .chunks_exact(16)
            .map(|d| LbaStatusDescriptor {
                lba: be64(d, 0),
                blocks: be32(d, 8),
                provisioning_status: ProvisioningStatus(u8_at(d, 12) & 0x0f),
                additional_status: u8_at(d, 13),
            })
            .collect();
        Ok(LbaStatusData { descriptors })
    }

    /// The total length the header announces (PARAMETER DATA LENGTH + 4).
    pub fn announced_len(b: &[u8]) -> Option<usize> {
        (b.len() >= 4).then(|| {
            usize::try_from(be32(b, 0))
                .unwrap_or(usize::MAX)
                .saturating_add(4)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    #[test]
    fn read_capacity10_saturates() {
        let d = ReadCapacity10Data::for_capacity(0x1_0000_0001, 512);
        assert_eq!(d.returned_lba, 0xffff_ffff);
        let d = ReadCapacity10Data::for_capacity(131_072, 512);
        assert_eq!(d.encode(), [0, 1, 0xff, 0xff, 0, 0, 2, 0]);
        assert_eq!(ReadCapacity10Data::parse(&d.encode()), Ok(d));
        assert!(ReadCapacity10Data::parse(&[0; 7]).is_err());
    }

    #[test]
    fn read_capacity16_bytes() {
        let d = ReadCapacity16Data {
            lbppbe: 3,
            lbpme: true,
            lbprz: true,
            lowest_aligned_lba: 0x0102,
            ..ReadCapacity16Data::for_capacity(0x2_0000_0000, 4096)
        };
        let b = d.encode();
        assert_eq!(
            &b[..16],
            &[
                0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x10, 0, 0x00, 0x03, 0xc1, 0x02
            ]
        );
        assert_eq!(&b[16..], &[0; 16]);
        assert_eq!(ReadCapacity16Data::parse(&b), Ok(d));
    }

    #[test]
    fn lba_status_bytes_and_truncation() {
        let d = LbaStatusData {
            descriptors: vec![
                LbaStatusDescriptor {
                    lba: 0,
                    blocks: 8,
                    provisioning_status: ProvisioningStatus::MAPPED_OR_UNKNOWN,
                    additional_status: 0,
                },
                LbaStatusDescriptor {
                    lba: 8,
                    blocks: 0x100,
                    provisioning_status: ProvisioningStatus::DEALLOCATED,
                    additional_status: 0,
                },
            ],
        };
        let b = d.encode();
        assert_eq!(&b[..8], &[0, 0, 0, 36, 0, 0, 0, 0]);
        assert_eq!(
            &b[24..40],
            &[0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 1, 0, 1, 0, 0, 0]
        );
        assert_eq!(LbaStatusData::parse(&b), Ok(d));
        assert_eq!(LbaStatusData::announced_len(&b), Some(40));
        assert_eq!(
            LbaStatusData::parse(&b[..30]).map(|p| p.descriptors.len()),
            Ok(1)
        );
    }

    proptest! {
        #[test]
        fn read_capacity16_round_trip(v in any::<(u64, u32, u8, u8, bool, u8, u8, bool, bool, u16)>()) {
            let d = ReadCapacity16Data {
                returned_lba: v.0, block_length: v.1, rc_basis: v.2 & 3, p_type: v.3 & 7, prot_en: v.4,
                p_i_exponent: v.5 & 0xf, lbppbe: v.6 & 0xf, lbpme: v.7, lbprz: v.8,
                lowest_aligned_lba: v.9 & 0x3fff,
            };
            prop_assert_eq!(ReadCapacity16Data::parse(&d.encode()), Ok(d));
        }

        #[test]
        fn lba_status_round_trip(ds in proptest::collection::vec(any::<(u64, u32, u8, u8)>(), 0..20)) {
            let d = LbaStatusData {
                descriptors: ds.into_iter().map(|(lba, blocks, s, a)| LbaStatusDescriptor {
                    lba, blocks, provisioning_status: ProvisioningStatus(s & 0xf), additional_status: a,
                }).collect(),
            };
            prop_assert_eq!(LbaStatusData::parse(&d.encode()), Ok(d));
        }

        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = ReadCapacity10Data::parse(&b);
            let _ = ReadCapacity16Data::parse(&b);
            let _ = LbaStatusData::parse(&b);
            let _ = LbaStatusData::announced_len(&b);
        }
    }
}
