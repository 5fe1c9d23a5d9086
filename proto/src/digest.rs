//! CRC32C header and data digests (RFC 7143 §11.1, §13.1).
//!
//! The digest is CRC32C (Castagnoli, polynomial 0x1EDC6F41, reflected) over
//! the BHS and AHS (header digest) or over the data segment including its
//! padding (data digest). The computation uses the `crc32c` crate, which picks
//! SSE4.2 / ARMv8 CRC instructions at run time.
//!
//! On the wire the 32-bit digest goes low byte first (little-endian). RFC
//! 7143 §11.1's bit-ordering rule amounts to exactly that, and it is how
//! libiscsi, tgt and the Linux initiator send it; [`to_wire`] / [`from_wire`]
//! keep that decision in one place.

/// CRC32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continues a CRC32C over more bytes, for digests over scattered buffers.
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// The four digest bytes as sent on the wire.
pub fn to_wire(digest: u32) -> [u8; 4] {
    digest.to_le_bytes()
}

/// A digest as read from the wire.
pub fn from_wire(bytes: [u8; 4]) -> u32 {
    u32::from_le_bytes(bytes)
}

/// Data digest over a data segment and its zero padding to a 4-byte boundary.
pub fn data_digest(data: &[u8]) -> u32 {
    let pad = crate::framing::padding(data.len());
    let crc = crc32c(data);
    if pad == 0 {
        crc
    } else {
        crc32c_append(crc, &[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 3720 Appendix B.4 test vectors.
    #[test]
    fn rfc3720_b4_vectors() {
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46dd_794e);
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&dec), 0x113f_db5c);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    // B.4's iSCSI Read (10) command PDU, with its header CRC as the RFC prints
    // it byte by byte.
    #[test]
    fn rfc3720_b4_read10_pdu_header() {
        let mut pdu = [0u8; 48];
        pdu[0] = 0x01;
        pdu[1] = 0xc0;
        pdu[16..20].copy_from_slice(&[0x14, 0, 0, 0]);
        pdu[20..24].copy_from_slice(&[0, 0, 0x04, 0]);
        pdu[27] = 0x14;
        pdu[31] = 0x18;
        pdu[32] = 0x28;
        pdu[40] = 0x02;
        assert_eq!(to_wire(crc32c(&pdu)), [0x56, 0x3a, 0x96, 0xd9]);
    }

    #[test]
    fn appending_equals_whole() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let (a, b) = data.split_at(333);
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data));
    }

    #[test]
    fn data_digest_covers_padding() {
        let data = [1u8, 2, 3, 4, 5];
        assert_eq!(data_digest(&data), crc32c(&[1, 2, 3, 4, 5, 0, 0, 0]));
        assert_eq!(data_digest(&data[..4]), crc32c(&data[..4]));
    }

    #[test]
    fn wire_order_is_little_endian() {
        assert_eq!(to_wire(0x1122_3344), [0x44, 0x33, 0x22, 0x11]);
        assert_eq!(from_wire([0x44, 0x33, 0x22, 0x11]), 0x1122_3344);
    }
}
