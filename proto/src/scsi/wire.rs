//! Bounds-safe big-endian field access shared by the SCSI payload codecs.
//!
//! Parsers check lengths first and then read fields through these helpers;
//! a read past the end yields zero instead of panicking, so a length check
//! that is off by one degrades into a wrong value caught by tests, never
//! into a panic on bytes from the network.

use super::DataError;

pub(crate) fn u8_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

pub(crate) fn bit(b: &[u8], at: usize, mask: u8) -> bool {
    u8_at(b, at) & mask != 0
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = at.checked_add(N).and_then(|end| b.get(at..end)) {
        out.copy_from_slice(src);
    }
    out
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(array(b, at))
}

pub(crate) fn be24(b: &[u8], at: usize) -> u32 {
    let [x, y, z] = array(b, at);
    u32::from_be_bytes([0, x, y, z])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(b, at))
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(array(b, at))
}

/// `N` bytes at `at`, zero-filled where the slice is short.
pub(crate) fn bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    array(b, at)
}

/// `Err(TooShort)` unless `b` holds at least `needed` bytes.
pub(crate) fn need(b: &[u8], needed: usize, what: &'static str) -> Result<(), DataError> {
    if b.len() < needed {
        Err(DataError::TooShort {
            what,
            needed,
            got: b.len(),
        })
    } else {
        Ok(())
    }
}

/// Sets or clears `mask` in `byte`.
pub(crate) fn flag(on: bool, mask: u8) -> u8 {
    if on { mask } else { 0 }
}

/// The bytes of a NUL-terminated (and NUL-padded) string field, without the
/// terminator; the whole slice if there is no NUL.
pub(crate) fn until_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(end) => b.get(..end).unwrap_or(b),
        None => b,
    }
}

/// `s` followed by at least one NUL, padded with NULs to a multiple of four
/// bytes (SCSI name strings, iSCSI TransportIDs: SPC-4 §7.8.6.10, §7.6.4.6).
pub(crate) fn nul_padded4(s: &[u8], min_len: usize) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    while v.len() % 4 != 0 || v.len() < min_len {
        v.push(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero() {
        let b = [0x12, 0x34, 0x56];
        assert_eq!(be16(&b, 0), 0x1234);
        assert_eq!(be24(&b, 0), 0x12_3456);
        assert_eq!(be32(&b, 0), 0);
        assert_eq!(be64(&b, usize::MAX), 0);
        assert_eq!(u8_at(&b, 3), 0);
    }

    #[test]
    fn nul_padding_always_terminates() {
        assert_eq!(nul_padded4(b"abc", 0), b"abc\0");
        assert_eq!(nul_padded4(b"abcd", 0), b"abcd\0\0\0\0");
        assert_eq!(nul_padded4(b"a", 8).len(), 8);
        assert_eq!(until_nul(b"ab\0\0"), b"ab");
        assert_eq!(until_nul(b"ab"), b"ab");
    }
}
