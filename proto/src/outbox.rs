//! Outgoing PDUs of one connection, queued as byte chunks for one vectored
//! write. Both sides' drivers use it.
//!
//! Headers (and small data segments) are encoded into one growing scratch
//! buffer; a large data segment — read data straight from a backend, write
//! data straight from a caller — is queued as its own `Bytes` without
//! copying. A driver drains all chunks with one `writev` per batch
//! ([`Outbox::take`], then [`consume`] what the kernel took), so a burst of
//! PDUs costs one syscall instead of one per PDU.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::bhs::Bhs;
use crate::framing::{self, FrameConfig};

/// Data segments at most this long are copied next to their header: a
/// copy is cheaper than an extra iovec.
const INLINE_DATA: usize = 2048;

/// Scratch space kept ready for the next batch of headers.
const SCRATCH: usize = 64 * 1024;

/// A queue of encoded PDUs.
#[derive(Debug)]
pub struct Outbox {
    pub cfg: FrameConfig,
    scratch: BytesMut,
    chunks: VecDeque<Bytes>,
    /// PDUs queued since the last [`Outbox::take_pdu_count`].
    pdus: u64,
}

impl Outbox {
    pub fn new(cfg: FrameConfig) -> Outbox {
        Outbox {
            cfg,
            scratch: BytesMut::with_capacity(SCRATCH),
            chunks: VecDeque::new(),
            pdus: 0,
        }
    }

    /// Queues one PDU without AHS; sets TotalAHSLength and DataSegmentLength.
    pub fn push(&mut self, bhs: Bhs, data: Bytes) {
        let _ = self.push_with_ahs(bhs, &[], data);
    }

    /// Queues one PDU; sets TotalAHSLength and DataSegmentLength from `ahs`
    /// and `data`, and returns the header as queued.
    pub fn push_with_ahs(&mut self, mut bhs: Bhs, ahs: &[u8], data: Bytes) -> Bhs {
        bhs.set_total_ahs_words(ahs.len().div_ceil(4).min(255) as u8);
        bhs.set_data_segment_len(data.len() as u32);
        self.pdus += 1;
        framing::encode_head(&self.cfg, &bhs, ahs, &mut self.scratch);
        if data.len() <= INLINE_DATA {
            self.scratch.put_slice(&data);
        } else {
            self.seal();
            self.chunks.push_back(data.clone());
        }
        framing::encode_tail(&self.cfg, &data, &mut self.scratch);
        bhs
    }

    /// Queues the header of a PDU whose data segment of `data_len` bytes
    /// the driver sends itself from elsewhere (a file, with `sendfile`),
    /// and returns everything queued up to and including that header. The
    /// driver sends the data right after them, then what is queued next,
    /// which begins with the segment's padding ([`Outbox::push_external_tail`]).
    /// Only without a data digest, which would need the bytes here.
    pub fn push_external_head(&mut self, mut bhs: Bhs, data_len: usize) -> VecDeque<Bytes> {
        debug_assert!(!self.cfg.data_digest, "an external segment has no digest");
        bhs.set_total_ahs_words(0);
        bhs.set_data_segment_len(data_len as u32);
        self.pdus += 1;
        framing::encode_head(&self.cfg, &bhs, &[], &mut self.scratch);
        self.take()
    }

    /// Queues what follows an external data segment of `data_len` bytes:
    /// its padding.
    pub fn push_external_tail(&mut self, data_len: usize) {
        self.scratch.put_bytes(0, framing::padding(data_len));
    }

    fn seal(&mut self) {
        if !self.scratch.is_empty() {
            let head = self.scratch.split().freeze();
            self.chunks.push_back(head);
        }
    }

    /// How many PDUs were queued since the last call (for statistics).
    pub fn take_pdu_count(&mut self) -> u64 {
        std::mem::take(&mut self.pdus)
    }

    pub fn is_empty(&self) -> bool {
        self.scratch.is_empty() && self.chunks.is_empty()
    }

    /// Everything queued, in order.
    pub fn take(&mut self) -> VecDeque<Bytes> {
        self.seal();
        if self.scratch.capacity() < SCRATCH / 4 {
            self.scratch.reserve(SCRATCH);
        }
        std::mem::take(&mut self.chunks)
    }

    /// Puts back, in front of anything queued since, chunks taken but not
    /// written.
    pub fn requeue_front(&mut self, rest: VecDeque<Bytes>) {
        for c in rest.into_iter().rev() {
            self.chunks.push_front(c);
        }
    }
}

/// Drops the first `n` bytes (what a write took) from `chunks`.
pub fn consume(chunks: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = chunks.front_mut() else {
            return;
        };
        if n >= front.len() {
            n -= front.len();
            chunks.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bhs::Opcode;
    use crate::framing::decode;

    fn nop(itt: u32) -> Bhs {
        let mut b = Bhs::new(Opcode::NOP_OUT);
        b.set_itt(itt);
        b
    }

    fn cfg(digests: bool) -> FrameConfig {
        FrameConfig {
            header_digest: digests,
            data_digest: digests,
            max_data_segment: 1 << 20,
        }
    }

    /// Small segments go inline, large ones as their own chunk; the
    /// concatenation decodes back to the same PDUs, whatever the split.
    #[test]
    fn chunks_decode_back_to_the_pdus_pushed() {
        for digests in [false, true] {
            let mut out = Outbox::new(cfg(digests));
            let sizes = [0usize, 5, INLINE_DATA, INLINE_DATA + 1, 100_000, 3];
            for (i, &n) in sizes.iter().enumerate() {
                out.push(nop(i as u32), Bytes::from(vec![i as u8; n]));
            }
            assert!(!out.is_empty());
            let chunks = out.take();
            assert!(out.is_empty());
            // Two large segments: each its own chunk, between header runs.
            assert_eq!(chunks.len(), 5, "digests {digests}");
            let mut wire = BytesMut::new();
            for c in &chunks {
                wire.extend_from_slice(c);
            }
            for (i, &n) in sizes.iter().enumerate() {
                let f = decode(&cfg(digests), &mut wire).unwrap().unwrap();
                assert_eq!(f.bhs.itt(), i as u32);
                assert_eq!(f.data.len(), n);
                assert!(f.data.iter().all(|b| *b == i as u8));
            }
            assert!(wire.is_empty());
        }
    }

    #[test]
    fn consume_and_requeue_keep_the_byte_order() {
        let mut out = Outbox::new(cfg(false));
        out.push(nop(0), Bytes::from(vec![1u8; 4096]));
        let mut chunks = out.take();
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        consume(&mut chunks, 50);
        out.push(nop(0), Bytes::new());
        out.requeue_front(chunks);
        let rest: Vec<u8> = out.take().iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(&rest[..all.len() - 50], &all[50..]);
        assert_eq!(rest.len(), all.len() - 50 + 48);
        let mut none = VecDeque::from([Bytes::from_static(b"ab")]);
        consume(&mut none, 2);
        assert!(none.is_empty());
    }
}
