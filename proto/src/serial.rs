//! Serial number arithmetic (RFC 1982, SERIAL_BITS = 32) for CmdSN, StatSN,
//! DataSN and R2TSN (RFC 7143 §4.2.2.1).
//!
//! Sequence numbers wrap, so "a comes before b" is defined on the circle:
//! a < b when the forward distance from a to b is in (0, 2^31). Two numbers
//! exactly 2^31 apart are incomparable; both `lt` and `gt` return false.

/// `a < b` in serial arithmetic.
pub fn lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// `a > b` in serial arithmetic.
pub fn gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// `a <= b` in serial arithmetic.
pub fn le(a: u32, b: u32) -> bool {
    a == b || lt(a, b)
}

/// `a >= b` in serial arithmetic.
pub fn ge(a: u32, b: u32) -> bool {
    a == b || gt(a, b)
}

/// `lo <= sn <= hi` on the circle: the CmdSN window test of §4.2.2.1.
/// An empty window (hi == lo - 1, the target's way of saying "queue full")
/// contains nothing.
pub fn in_window(sn: u32, lo: u32, hi: u32) -> bool {
    sn.wrapping_sub(lo) <= hi.wrapping_sub(lo) && hi != lo.wrapping_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordering_across_wrap() {
        assert!(lt(0xffff_fffe, 1));
        assert!(gt(1, 0xffff_fffe));
        assert!(le(5, 5) && ge(5, 5));
        assert!(!lt(0, 0x8000_0000) && !gt(0, 0x8000_0000));
    }

    #[test]
    fn window() {
        assert!(in_window(10, 10, 41));
        assert!(in_window(41, 10, 41));
        assert!(!in_window(42, 10, 41));
        assert!(!in_window(9, 10, 41));
        assert!(in_window(1, 0xffff_fff0, 0x0f));
        // MaxCmdSN = ExpCmdSN - 1: window closed.
        assert!(!in_window(10, 10, 9));
    }

    proptest! {
        #[test]
        fn lt_gt_are_mirror_images(a: u32, b: u32) {
            prop_assert_eq!(lt(a, b), gt(b, a));
            prop_assert!(!(lt(a, b) && gt(a, b)));
        }

        #[test]
        fn successor_is_greater(a: u32, d in 1u32..0x8000_0000) {
            prop_assert!(lt(a, a.wrapping_add(d)));
        }
    }
}
