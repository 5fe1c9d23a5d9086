//! The seed of a run when the user gave none: from the OS, never a hang.
//!
//! `getrandom(2)` blocks until the kernel's entropy pool is initialised,
//! which early in an initramfs can take minutes. [`resolve`] asks the OS
//! in a helper thread and waits at most [`OS_WAIT`]; if the OS has not
//! answered by then (or fails), the seed is mixed from the clock and the
//! process id through splitmix64, and a warning says so on stderr. The
//! seed is not a secret: it only has to differ between runs and be
//! printed, so that a run can be repeated with `--seed`.

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

/// How long [`resolve`] waits for the OS's entropy source.
pub const OS_WAIT: Duration = Duration::from_secs(2);

/// Where a seed came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--seed`.
    Given,
    /// The OS's random number generator.
    Os,
    /// Clock and process id: the OS did not answer in time.
    Fallback,
}

/// The seed to use: `given`, else one from the OS (bounded wait), else the
/// fallback with a warning on stderr naming `tool`.
pub fn resolve(given: Option<u64>, tool: &str) -> u64 {
    resolve_with(given, OS_WAIT, tool).0
}

/// [`resolve`] with an explicit wait, and where the seed came from.
pub fn resolve_with(given: Option<u64>, wait: Duration, tool: &str) -> (u64, Source) {
    if let Some(s) = given {
        return (s, Source::Given);
    }
    match from_os(wait) {
        Ok(s) => (s, Source::Os),
        Err(why) => {
            let s = fallback();
            eprintln!(
                "{tool}: warning: {why}; using seed {s} from the clock and process id (repeat with --seed {s})"
            );
            (s, Source::Fallback)
        }
    }
}

/// 8 bytes from the OS, or why not within `wait`.
fn from_os(wait: Duration) -> Result<u64, String> {
    use rand::TryRngCore;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("seed".into())
        .spawn(move || {
            let mut b = [0u8; 8];
            let r = rand::rngs::OsRng
                .try_fill_bytes(&mut b)
                .map(|()| u64::from_le_bytes(b))
                .map_err(|e| e.to_string());
            let _ = tx.send(r);
        })
        .map_err(|e| format!("cannot start a thread to read the OS entropy source: {e}"))?;
    match rx.recv_timeout(wait) {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("the OS entropy source failed ({e})")),
        Err(_) => Err(format!(
            "the OS entropy source did not answer within {} ms (not initialised yet?)",
            wait.as_millis()
        )),
    }
}

/// Clock and pid through splitmix64.
fn fallback() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix64(splitmix64(t) ^ u64::from(std::process::id()))
}

/// One step of splitmix64 (Steele, Lea, Flood 2014).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_seed_wins() {
        assert_eq!(resolve_with(Some(7), OS_WAIT, "t"), (7, Source::Given));
    }

    #[test]
    fn the_os_answers_here_and_seeds_differ() {
        let (a, sa) = resolve_with(None, OS_WAIT, "t");
        let (b, sb) = resolve_with(None, OS_WAIT, "t");
        assert_eq!((sa, sb), (Source::Os, Source::Os));
        assert_ne!(a, b);
    }

    #[test]
    fn a_zero_wait_falls_back_without_hanging() {
        // The thread cannot have answered before a zero timeout is
        // checked every time, so accept either source, but never a hang.
        let t = std::time::Instant::now();
        let (_, s) = resolve_with(None, Duration::ZERO, "t");
        assert!(matches!(s, Source::Os | Source::Fallback));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_ne!(fallback(), splitmix64(0));
    }

    #[test]
    fn splitmix_known_values() {
        // First outputs of splitmix64 seeded with 0 (reference sequence).
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }
}
