//! Outgoing PDUs of one connection, queued as byte chunks for one
//! vectored write.
//!
//! Headers (and small data segments) are encoded into one growing scratch
//! buffer; a large data segment — read data straight from the backend — is
//! queued as its own `Bytes` without copying. The driver drains all chunks
//! with a single `writev` per batch, so a burst of responses costs one
//! syscall instead of one per PDU.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use iesp_proto::bhs::Bhs;
use iesp_proto::framing::{self, FrameConfig};

/// Data segments at most this long are copied next to their header: a
/// copy is cheaper than an extra iovec.
const INLINE_DATA: usize = 2048;

pub struct Outbox {
    pub cfg: FrameConfig,
    scratch: BytesMut,
    chunks: VecDeque<Bytes>,
    pdus: usize,
}

impl Outbox {
    pub fn new(cfg: FrameConfig) -> Outbox {
        Outbox {
            cfg,
            scratch: BytesMut::with_capacity(64 * 1024),
            chunks: VecDeque::new(),
            pdus: 0,
        }
    }

    /// Queues one PDU; sets TotalAHSLength (0) and DataSegmentLength.
    pub fn push(&mut self, mut bhs: Bhs, data: Bytes) {
        bhs.set_total_ahs_words(0);
        bhs.set_data_segment_len(data.len() as u32);
        framing::encode_head(&self.cfg, &bhs, &[], &mut self.scratch);
        if data.len() <= INLINE_DATA {
            self.scratch.put_slice(&data);
        } else {
            self.seal();
            self.chunks.push_back(data.clone());
        }
        framing::encode_tail(&self.cfg, &data, &mut self.scratch);
        self.pdus += 1;
    }

    /// Queues raw bytes as they are (a test peer's malformed output).
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.scratch.put_slice(bytes);
    }

    fn seal(&mut self) {
        if !self.scratch.is_empty() {
            let head = self.scratch.split().freeze();
            self.chunks.push_back(head);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.scratch.is_empty() && self.chunks.is_empty()
    }

    /// PDUs queued since the last [`Outbox::take`], for tests and stats.
    pub fn pdus(&self) -> usize {
        self.pdus
    }

    /// Everything queued, in order.
    pub fn take(&mut self) -> VecDeque<Bytes> {
        self.seal();
        self.pdus = 0;
        if self.scratch.capacity() < 16 * 1024 {
            self.scratch.reserve(64 * 1024);
        }
        std::mem::take(&mut self.chunks)
    }
}
