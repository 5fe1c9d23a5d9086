//! The memory budget for command data: a global [`MemoryBudget`] of the
//! target and a per-session share, both charged through [`Charge`] guards
//! that give their bytes back when dropped (a task completed, failed,
//! aborted or its connection gone).
//!
//! The full feature phase ([`crate::conn::ffp`]) charges a WRITE's
//! unsolicited data (immediate data, the first burst) when it arrives, and
//! the rest when it is about to solicit it with R2Ts; when the budget
//! cannot cover a task it waits, no R2T leaves and MaxCmdSN stops
//! advancing, so initiators slow down instead of failing. Buffers grow as
//! data arrives, never to the whole transfer up front.
//!
//! [`return_freed_memory`] hands freed pages back to the kernel (glibc keeps
//! them in its arenas otherwise), so the process's RSS falls after
//! sessions close.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes that may be charged at once.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// A budget nothing exhausts (tests and tools that set none).
    pub fn unlimited() -> Arc<MemoryBudget> {
        MemoryBudget::new(u64::MAX)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `n` bytes if they fit.
    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    /// Charges `n` bytes even past the limit: data the initiator may send
    /// unasked (immediate data, the first burst) has already arrived.
    fn force_take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A session's place in memory: the target's budget and its own share.
#[derive(Clone, Debug)]
pub struct SessionMemory {
    pub global: Arc<MemoryBudget>,
    pub session: Arc<MemoryBudget>,
}

impl SessionMemory {
    /// A share of `session_limit` bytes of `global`.
    pub fn new(global: Arc<MemoryBudget>, session_limit: u64) -> SessionMemory {
        SessionMemory {
            global,
            session: MemoryBudget::new(session_limit),
        }
    }

    /// No limits at all.
    pub fn unlimited() -> SessionMemory {
        SessionMemory::new(MemoryBudget::unlimited(), u64::MAX)
    }

    /// Whether `n` bytes could ever be charged (the smaller of the limits).
    pub fn can_ever_fit(&self, n: u64) -> bool {
        n <= self.global.limit().min(self.session.limit())
    }

    /// Whether the session's share is used up.
    pub fn exhausted(&self) -> bool {
        self.session.used() >= self.session.limit() || self.global.used() >= self.global.limit()
    }

    /// Charges `n` bytes to both, or nothing if either lacks room.
    pub fn try_charge(&self, n: u64) -> Option<Charge> {
        if !self.session.try_take(n) {
            return None;
        }
        if !self.global.try_take(n) {
            self.session.give(n);
            return None;
        }
        Some(Charge {
            memory: self.clone(),
            bytes: n,
        })
    }

    /// Charges `n` bytes to both even past their limits.
    pub fn force_charge(&self, n: u64) -> Charge {
        self.session.force_take(n);
        self.global.force_take(n);
        Charge {
            memory: self.clone(),
            bytes: n,
        }
    }
}

/// Charged bytes, given back on drop.
#[derive(Debug)]
pub struct Charge {
    memory: SessionMemory,
    bytes: u64,
}

impl Charge {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds `other`'s bytes to this charge.
    pub fn absorb(&mut self, mut other: Charge) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.memory.session.give(self.bytes);
            self.memory.global.give(self.bytes);
        }
    }
}

/// Returns freed heap memory to the kernel (glibc `malloc_trim`), so RSS
/// falls once large buffers are gone. A no-op on other C libraries.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim takes no pointers and only walks glibc's own
        // heap under its arena locks; it is safe to call at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_respect_both_limits_and_come_back_on_drop() {
        let global = MemoryBudget::new(100);
        let a = SessionMemory::new(global.clone(), 60);
        let b = SessionMemory::new(global.clone(), 60);
        let ca = a.try_charge(50).unwrap();
        assert!(a.try_charge(20).is_none(), "session share");
        let cb = b.try_charge(50).unwrap();
        assert!(b.try_charge(1).is_none(), "global budget");
        assert_eq!(global.used(), 100);
        let forced = b.force_charge(10);
        assert!(b.exhausted());
        drop((ca, forced));
        assert_eq!(global.used(), 50);
        let mut c = a.try_charge(10).unwrap();
        c.absorb(a.force_charge(5));
        assert_eq!(a.session.used(), 15);
        drop((c, cb));
        assert_eq!(global.used(), 0);
        assert!(!a.can_ever_fit(61) && a.can_ever_fit(60));
    }
}
