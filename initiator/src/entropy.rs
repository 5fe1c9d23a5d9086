//! Random bytes for the login (ISID qualifiers, mutual-CHAP challenges)
//! that never hang.
//!
//! `getrandom(2)` without flags blocks until the kernel's random pool is
//! initialised, which early in an initramfs — where `iesp-test verify` runs
//! to test a boot LUN — can take minutes. [`fill`] asks with
//! `GRND_NONBLOCK` first; if the pool is not ready it takes
//! `GRND_INSECURE` output (Linux 5.6+: the CRNG as it is, never blocking),
//! and on kernels without that, a clock, process id and counter mix. Each
//! fallback is logged once at warn level. A CHAP challenge drawn before the
//! pool is ready is weaker, which the warning says; an ISID only has to be
//! unique.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use rustix::rand::{GetRandomFlags, getrandom};

/// Where the bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The kernel's initialised random pool.
    Os,
    /// The kernel's CRNG before its pool was fully initialised.
    Insecure,
    /// Clock, process id and a counter: the kernel gave nothing at once.
    Fallback,
}

static WARNED: AtomicBool = AtomicBool::new(false);
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Fills `buf` without blocking; says where the bytes came from.
pub fn fill(buf: &mut [u8]) -> Source {
    if fill_with(buf, GetRandomFlags::NONBLOCK) {
        return Source::Os;
    }
    let source = if fill_with(buf, GetRandomFlags::INSECURE) {
        Source::Insecure
    } else {
        mix(buf);
        Source::Fallback
    };
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            ?source,
            "the kernel's random pool is not initialised yet: login identifiers and CHAP \
             challenges use weaker randomness"
        );
    }
    source
}

/// `N` random bytes (see [`fill`]).
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill(&mut b);
    b
}

fn fill_with(buf: &mut [u8], flags: GetRandomFlags) -> bool {
    let mut done = 0;
    while done < buf.len() {
        match getrandom(&mut buf[done..], flags) {
            Ok(0) => return false,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Clock, pid and a process-wide counter through splitmix64.
fn mix(buf: &mut [u8]) {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = t
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for chunk in buf.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_and_come_from_the_os_here() {
        let a: [u8; 16] = bytes();
        let b: [u8; 16] = bytes();
        assert_ne!(a, b);
        let mut c = [0u8; 33];
        // A test machine's pool is initialised long before tests run.
        assert_eq!(fill(&mut c), Source::Os);
        assert!(c.iter().any(|&x| x != 0));
    }

    #[test]
    fn the_fallback_differs_between_calls_and_fills_odd_lengths() {
        let (mut a, mut b) = ([0u8; 13], [0u8; 13]);
        mix(&mut a);
        mix(&mut b);
        assert_ne!(a, b);
        assert!(a[8..].iter().any(|&x| x != 0));
    }
}
