//! Additional Header Segments (RFC 7143 §11.2.2).
//!
//! Each AHS is AHSLength (2 bytes), AHSType (1 byte), one type-specific byte
//! and more type-specific bytes, padded to a 4-byte boundary. AHSLength
//! counts everything after AHSType, excluding padding (§11.2.2.1): for the
//! Extended CDB AHS it is the CDB overflow plus its reserved byte, for the
//! Bidirectional Read Expected Data Transfer Length AHS it is 5.

use bytes::{BufMut, BytesMut};

wire_newtype! {
    /// AHS types (§11.2.2.3).
    pub struct AhsType(u8) {
        EXTENDED_CDB = 1 => "ExtendedCdb",
        BIDI_READ_EDTL = 2 => "BidirectionalReadExpectedDataTransferLength",
    }
}

/// One AHS as found in a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ahs<'a> {
    pub ahs_type: AhsType,
    /// The type-specific byte.
    pub specific: u8,
    /// The bytes AHSLength covers after the specific byte.
    pub data: &'a [u8],
}

/// A malformed AHS area.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AhsError {
    #[error("AHS at offset {offset} is truncated: needs {needed} bytes, {available} available")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
}

/// Splits an AHS area into its segments.
pub fn decode(mut area: &[u8]) -> Result<Vec<Ahs<'_>>, AhsError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while !area.is_empty() {
        let [l0, l1, ty, specific, rest @ ..] = area else {
            return Err(AhsError::Truncated {
                offset,
                needed: 4,
                available: area.len(),
            });
        };
        // AHSLength counts from the specific byte on, so the data after it
        // is one byte shorter.
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let data_len = len.saturating_sub(1);
        let Some(data) = rest.get(..data_len) else {
            return Err(AhsError::Truncated {
                offset,
                needed: 4 + data_len,
                available: area.len(),
            });
        };
        out.push(Ahs {
            ahs_type: AhsType(*ty),
            specific: *specific,
            data,
        });
        let total = (3 + len).div_ceil(4) * 4;
        let consumed = total.min(area.len());
        area = &area[consumed..];
        offset += consumed;
    }
    Ok(out)
}

/// Appends one AHS, padded to 4 bytes.
pub fn encode(out: &mut BytesMut, ahs_type: AhsType, specific: u8, data: &[u8]) {
    let len = data.len() + 1;
    out.put_u16(len as u16);
    out.put_u8(ahs_type.0);
    out.put_u8(specific);
    out.put_slice(data);
    let pad = (4 - (3 + len) % 4) % 4;
    out.put_bytes(0, pad);
}

/// The CDB of a SCSI Command: the 16 header bytes followed by any Extended
/// CDB AHS bytes.
pub fn full_cdb(header_cdb: &[u8; 16], area: &[u8]) -> Result<Vec<u8>, AhsError> {
    let mut cdb = header_cdb.to_vec();
    for ahs in decode(area)? {
        if ahs.ahs_type == AhsType::EXTENDED_CDB {
            cdb.extend_from_slice(ahs.data);
        }
    }
    Ok(cdb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_cdb_round_trip() {
        let mut area = BytesMut::new();
        // A 32-byte CDB: 16 bytes overflow into the AHS.
        let overflow: Vec<u8> = (16u8..32).collect();
        encode(&mut area, AhsType::EXTENDED_CDB, 0, &overflow);
        assert_eq!(area.len() % 4, 0);
        assert_eq!(area.len(), 20);
        let segs = decode(&area).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].data, &overflow[..]);
        let cdb = full_cdb(&[0xaa; 16], &area).unwrap();
        assert_eq!(cdb.len(), 32);
        assert_eq!(cdb[16..], overflow[..]);
    }

    #[test]
    fn bidi_then_extended() {
        let mut area = BytesMut::new();
        encode(
            &mut area,
            AhsType::BIDI_READ_EDTL,
            0,
            &4096u32.to_be_bytes(),
        );
        encode(&mut area, AhsType::EXTENDED_CDB, 0, &[1, 2, 3]);
        let segs = decode(&area).unwrap();
        assert_eq!(segs[0].ahs_type, AhsType::BIDI_READ_EDTL);
        assert_eq!(segs[0].data, &4096u32.to_be_bytes());
        assert_eq!(segs[1].data, &[1, 2, 3]);
    }

    #[test]
    fn truncated_is_an_error() {
        assert!(matches!(
            decode(&[0, 9, 1, 0, 1, 2, 3, 4]),
            Err(AhsError::Truncated { .. })
        ));
        assert!(matches!(decode(&[0, 1]), Err(AhsError::Truncated { .. })));
    }
}
