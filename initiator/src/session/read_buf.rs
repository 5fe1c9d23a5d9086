//! Where a read's Data-In payloads are put together, and the pool of
//! reused buffers that makes that cheap.
//!
//! A read answered in one Data-In at offset 0 is handed over as that PDU's
//! payload (a slice of the reader's buffer, no copy). A read answered in
//! several is copied into one buffer of the whole transfer. A fresh 1 MiB
//! allocation per command costs more than the copy itself: the allocator
//! takes such blocks from, and trims them back to, the kernel, so every
//! command page-faults its buffer in again (measured with `perf` on a
//! 1 MiB QD8 read run: about a quarter of the client's CPU in page faults,
//! zeroing and unmapping). So buffers of [`POOL_MIN`] bytes or more come
//! from a per-session [`ReadPool`] and go back to it when the caller drops
//! the [`Bytes`] it was given (`Bytes::from_owner`), wherever that
//! happens.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Transfers this large or larger use pooled buffers.
pub const POOL_MIN: usize = 64 * 1024;
/// Buffers a pool keeps at most (enough for QD 64 in flight and handed
/// over).
const POOL_KEEP: usize = 64;
/// Bytes a pool keeps at most.
const POOL_KEEP_BYTES: usize = 128 << 20;

/// Idle read buffers of one session.
#[derive(Default)]
pub struct ReadPool {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl ReadPool {
    /// An empty buffer with room for `len` bytes: a reused one when one
    /// is idle and large enough.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = idle.iter().rposition(|v| v.capacity() >= len) {
            let mut v = idle.swap_remove(i);
            v.clear();
            return v;
        }
        drop(idle);
        Vec::with_capacity(len)
    }

    fn give_back(&self, v: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = idle.iter().map(Vec::capacity).sum();
        if idle.len() < POOL_KEEP && held + v.capacity() <= POOL_KEEP_BYTES {
            idle.push(v);
        }
    }

    /// Buffers idle in the pool.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A pooled buffer handed to a caller inside [`Bytes`]; returns to its
/// pool when the last clone of those bytes is dropped.
struct Pooled {
    data: Vec<u8>,
    pool: Arc<ReadPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.data));
    }
}

/// Data-In collected so far.
pub enum ReadBuf {
    Empty,
    /// One segment that is the whole transfer: handed over as is.
    Single(Bytes),
    /// Several segments, copied into place.
    Assembled(Vec<u8>),
}

impl ReadBuf {
    /// Places `data` at `offset`; the caller has checked it fits `expected`.
    pub fn put(&mut self, offset: usize, data: Bytes, expected: usize, pool: &ReadPool) {
        // Only a segment that is the whole transfer is kept as it is: the
        // first of several would pin the reader's buffer (it is a slice of
        // it) until the rest arrive, and the reader would allocate afresh.
        if let ReadBuf::Empty = self
            && offset == 0
            && data.len() >= expected
        {
            *self = ReadBuf::Single(data);
            return;
        }
        let fresh = |n: usize| {
            if n >= POOL_MIN {
                pool.take(n)
            } else {
                Vec::with_capacity(n)
            }
        };
        let mut buf = match std::mem::replace(self, ReadBuf::Empty) {
            ReadBuf::Empty => fresh(expected),
            ReadBuf::Single(first) => {
                let mut b = fresh(expected.max(first.len()));
                b.extend_from_slice(&first);
                b
            }
            ReadBuf::Assembled(b) => b,
        };
        let end = offset + data.len();
        if buf.len() < offset {
            // A gap (out of order): zero-filled until its data arrives.
            buf.resize(offset, 0);
        }
        if buf.len() == offset {
            buf.extend_from_slice(&data);
        } else {
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[offset..end].copy_from_slice(&data);
        }
        *self = ReadBuf::Assembled(buf);
    }

    /// The bytes collected; a pooled buffer goes back to `pool` when the
    /// caller is done with them.
    pub fn into_bytes(self, pool: &Arc<ReadPool>) -> Bytes {
        match self {
            ReadBuf::Empty => Bytes::new(),
            ReadBuf::Single(b) => b,
            ReadBuf::Assembled(b) if b.capacity() >= POOL_MIN => Bytes::from_owner(Pooled {
                data: b,
                pool: pool.clone(),
            }),
            ReadBuf::Assembled(b) => Bytes::from(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u8) -> Bytes {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn segments_in_and_out_of_order_assemble_exactly() {
        let pool = Arc::new(ReadPool::default());
        let whole = pattern(256 * 1024, 7);
        for order in [[0usize, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0]] {
            let mut r = ReadBuf::Empty;
            for i in order {
                let s = i * 64 * 1024;
                r.put(s, whole.slice(s..s + 64 * 1024), whole.len(), &pool);
            }
            assert_eq!(r.into_bytes(&pool), whole, "{order:?}");
        }
        // One segment at offset 0 is the segment itself.
        let mut r = ReadBuf::Empty;
        let one = pattern(4096, 1);
        r.put(0, one.clone(), 4096, &pool);
        let got = r.into_bytes(&pool);
        assert_eq!(got.as_ptr(), one.as_ptr(), "no copy");
    }

    #[test]
    fn large_buffers_return_to_the_pool_and_are_reused() {
        let pool = Arc::new(ReadPool::default());
        let whole = pattern(1 << 20, 3);
        let read = |pool: &Arc<ReadPool>| {
            let mut r = ReadBuf::Empty;
            for s in (0..whole.len()).step_by(256 * 1024) {
                r.put(s, whole.slice(s..s + 256 * 1024), whole.len(), pool);
            }
            r.into_bytes(pool)
        };
        let a = read(&pool);
        assert_eq!(a, whole);
        let ptr = a.as_ptr();
        assert_eq!(pool.idle(), 0, "handed over, not idle");
        let clone = a.clone();
        drop(a);
        assert_eq!(pool.idle(), 0, "a clone still holds it");
        drop(clone);
        assert_eq!(pool.idle(), 1, "back when the last clone goes");
        let b = read(&pool);
        assert_eq!(b.as_ptr(), ptr, "the same buffer, reused");
        assert_eq!(b, whole, "and filled with this read's bytes");
        // Small reads are not pooled.
        let mut r = ReadBuf::Empty;
        r.put(512, pattern(512, 9), 1024, &pool);
        r.put(0, pattern(512, 8), 1024, &pool);
        drop(r.into_bytes(&pool));
        drop(b);
        assert_eq!(pool.idle(), 1);
    }
}
