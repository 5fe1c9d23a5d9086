//! Aligned I/O buffers.
//!
//! `O_DIRECT` needs the buffer address, the file offset and the length
//! aligned to the device's logical block size (open(2), "O_DIRECT"). An
//! [`AlignedBuf`] over-allocates a `Vec<u8>` and starts at the first aligned
//! address inside it — no `unsafe`, no custom allocator; the vector never
//! grows, so the address stays put. Its length can change up to the
//! capacity it was made with, so one buffer serves commands of several sizes.
//!
//! A transport that receives data into buffers of its own (the iSCSI
//! session's `Bytes`) lends them with [`AlignedBuf::set_shared`] instead of
//! copying; the first mutable access copies them in (copy on write), and
//! [`AlignedBuf::set_len`] lets them go.

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytes::Bytes;

/// Alignment that satisfies every logical block size up to 4 KiB and the
/// page size.
pub const DEFAULT_ALIGN: usize = 4096;

/// A byte buffer whose start is aligned. The default is empty and
/// allocates nothing (a placeholder while the real buffer is lent out).
#[derive(Default)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
    capacity: usize,
    /// Received data shown instead of `storage`, when lent.
    shared: Option<Bytes>,
}

impl AlignedBuf {
    /// A zeroed buffer of `capacity` bytes (its length), aligned to `align`
    /// (a power of two).
    pub fn new(capacity: usize, align: usize) -> AlignedBuf {
        let align = align.max(1).next_power_of_two();
        let storage = vec![0u8; capacity + align];
        // Pointer-to-integer casts are safe; only the remainder is used.
        let addr = storage.as_ptr() as usize;
        let start = (align - addr % align) % align;
        AlignedBuf {
            storage,
            start,
            len: capacity,
            capacity,
            shared: None,
        }
    }

    /// The largest length this buffer can take.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the length. The contents are then unspecified until written
    /// (a read or a render fills them); lent data is let go.
    ///
    /// # Panics
    ///
    /// If `len` exceeds the capacity: a programming error, never input.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "AlignedBuf::set_len({len}) beyond capacity {}",
            self.capacity
        );
        self.shared = None;
        self.len = len;
    }

    /// Shows `data` (at most the capacity) as this buffer's contents
    /// without copying it.
    ///
    /// # Panics
    ///
    /// If `data` is longer than the capacity: a programming error.
    pub fn set_shared(&mut self, data: Bytes) {
        assert!(
            data.len() <= self.capacity,
            "AlignedBuf::set_shared: {} bytes beyond capacity {}",
            data.len(),
            self.capacity
        );
        self.len = data.len();
        self.shared = Some(data);
    }

    /// Whether the start address is a multiple of `align`.
    #[cfg(test)]
    pub fn is_aligned(&self, align: usize) -> bool {
        (self.as_ptr() as usize) % align.max(1) == 0
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.shared {
            Some(b) => b,
            None => &self.storage[self.start..self.start + self.len],
        }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let own = &mut self.storage[self.start..self.start + self.len];
        if let Some(b) = self.shared.take() {
            own.copy_from_slice(&b);
        }
        own
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_resizable() {
        for align in [512, 4096, 65536] {
            let mut b = AlignedBuf::new(3 * 4096, align);
            assert!(b.is_aligned(align));
            assert_eq!(b.len(), 3 * 4096);
            b[0] = 7;
            b.set_len(512);
            assert_eq!(b.len(), 512);
            assert_eq!(b[0], 7);
            assert!(b.is_aligned(align));
            b.set_len(3 * 4096);
            assert_eq!(b.len(), b.capacity());
        }
    }

    #[test]
    fn lent_data_is_copied_on_write() {
        let mut b = AlignedBuf::new(8, 512);
        b.copy_from_slice(&[1; 8]);
        b.set_shared(Bytes::from_static(&[2, 3, 4]));
        assert_eq!(&b[..], &[2, 3, 4]);
        b[0] = 9;
        assert_eq!(&b[..], &[9, 3, 4]);
        b.set_shared(Bytes::from_static(&[5; 8]));
        b.set_len(8);
        // Let go: the owned storage shows again.
        assert_eq!(&b[..3], &[9, 3, 4]);
    }

    #[test]
    #[should_panic(expected = "beyond capacity")]
    fn cannot_grow() {
        AlignedBuf::new(512, 512).set_len(513);
    }
}
