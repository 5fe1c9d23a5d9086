//! The UNMAP parameter list (SBC-4 §5.31.2, tables 96 and 97).
//!
//! An 8-byte header (UNMAP DATA LENGTH, UNMAP BLOCK DESCRIPTOR DATA LENGTH,
//! 4 reserved bytes) followed by 16-byte block descriptors. SBC-4 rules the
//! parser applies: a PARAMETER LIST LENGTH of 0 unmaps nothing; 1..=7 is a
//! PARAMETER LIST LENGTH ERROR; a descriptor cut short by the block
//! descriptor data length or the list length is ignored, not an error. Limits
//! (MAXIMUM UNMAP LBA COUNT / BLOCK DESCRIPTOR COUNT, capacity) are the
//! target's to check.

use super::DataError;
use super::wire::{be16, be32, be64};

/// One UNMAP block descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct UnmapDescriptor {
    /// UNMAP LOGICAL BLOCK ADDRESS.
    pub lba: u64,
    /// NUMBER OF LOGICAL BLOCKS (0 is allowed and does nothing).
    pub blocks: u32,
}

/// The UNMAP parameter list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct UnmapParameters {
    /// The block descriptors, in the order sent.
    pub descriptors: Vec<UnmapDescriptor>,
}

impl UnmapParameters {
    /// Encodes header and descriptors.
    pub fn encode(&self) -> Vec<u8> {
        let bd_len = 16 * self.descriptors.len();
        let mut b = Vec::with_capacity(8 + bd_len);
        b.extend_from_slice(&u16::try_from(6 + bd_len).unwrap_or(u16::MAX).to_be_bytes());
        b.extend_from_slice(&u16::try_from(bd_len).unwrap_or(u16::MAX).to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        for d in &self.descriptors {
            b.extend_from_slice(&d.lba.to_be_bytes());
            b.extend_from_slice(&d.blocks.to_be_bytes());
            b.extend_from_slice(&[0; 4]);
        }
        b
    }

    /// Decodes a received list (its length is the CDB's PARAMETER LIST
    /// LENGTH). UNMAP DATA LENGTH is not checked; see the module docs.
    pub fn parse(b: &[u8]) -> Result<UnmapParameters, DataError> {
        match b.len() {
            0 => return Ok(UnmapParameters::default()),
            1..=7 => {
                return Err(DataError::ListLength {
                    what: "UNMAP parameter list",
                    len: b.len(),
                });
            }
            _ => {}
        }
        let bd_len = usize::from(be16(b, 2));
        let rest = b.get(8..).unwrap_or_default();
        let body = rest.get(..bd_len.min(rest.len())).unwrap_or_default();
        let descriptors = body
            .chunks_exact(16)
            .map(|d| UnmapDescriptor {
                lba: be64(d, 0),
                blocks: be32(d, 8),
            })
            .collect();
        Ok(UnmapParameters { descriptors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::Asc;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    #[test]
    fn one_descriptor_bytes() {
        let p = UnmapParameters {
            descriptors: vec![UnmapDescriptor {
                lba: 0x1234_5677,
                blocks: 1,
            }],
        };
        let b = p.encode();
        assert_eq!(
            b,
            vec![
                0, 22, 0, 16, 0, 0, 0, 0, //
                0, 0, 0, 0, 0x12, 0x34, 0x56, 0x77, 0, 0, 0, 1, 0, 0, 0, 0
            ]
        );
        assert_eq!(UnmapParameters::parse(&b), Ok(p));
    }

    #[test]
    fn length_rules() {
        assert_eq!(UnmapParameters::parse(&[]), Ok(UnmapParameters::default()));
        let e = UnmapParameters::parse(&[0; 7]).map_err(|e| e.sense().asc);
        assert_eq!(e, Err(Asc::PARAMETER_LIST_LENGTH_ERROR));
        // A block descriptor data length that is not a multiple of 16: the
        // incomplete descriptor is ignored.
        let mut b = UnmapParameters {
            descriptors: vec![UnmapDescriptor { lba: 1, blocks: 2 }; 2],
        }
        .encode();
        b[3] = 24;
        assert_eq!(
            UnmapParameters::parse(&b).map(|p| p.descriptors.len()),
            Ok(1)
        );
        // A list shorter than the descriptor data length claims.
        let b = UnmapParameters {
            descriptors: vec![UnmapDescriptor { lba: 1, blocks: 2 }; 3],
        }
        .encode();
        assert_eq!(
            UnmapParameters::parse(&b[..40]).map(|p| p.descriptors.len()),
            Ok(2)
        );
    }

    proptest! {
        #[test]
        fn round_trip(ds in proptest::collection::vec(any::<(u64, u32)>(), 0..64)) {
            let p = UnmapParameters {
                descriptors: ds.into_iter().map(|(lba, blocks)| UnmapDescriptor { lba, blocks }).collect(),
            };
            prop_assert_eq!(UnmapParameters::parse(&p.encode()), Ok(p));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = UnmapParameters::parse(&b);
        }
    }
}
