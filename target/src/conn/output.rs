//! The target's queue of outgoing PDUs: the shared [`Outbox`] (headers and
//! in-memory data segments) plus data segments that stay in a LU's backing
//! file until the writer sends them with `sendfile(2)` ([`Spliced`], issue
//! 16). Still sans-IO: the driver's writer turns [`Piece`]s into syscalls.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};

use bytes::Bytes;
use iesp_proto::bhs::Bhs;
use iesp_proto::framing::FrameConfig;
use iesp_proto::outbox::Outbox;

use crate::backend::Spliced;

/// One piece of the byte stream to the initiator, in order.
#[derive(Debug)]
pub enum Piece {
    Bytes(Bytes),
    File(Spliced),
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Bytes(b) => b.len(),
            Piece::File(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a batch handed to the writer holds.
pub type Batch = VecDeque<Piece>;

/// The PDUs queued for the initiator. Derefs to the [`Outbox`] for
/// everything that is not a file segment.
#[derive(Debug)]
pub struct Output {
    out: Outbox,
    /// What was queued up to the last file segment, in order; the outbox
    /// holds what came after.
    head: Batch,
}

impl Output {
    pub fn new(cfg: FrameConfig) -> Output {
        Output {
            out: Outbox::new(cfg),
            head: VecDeque::new(),
        }
    }

    /// Queues a PDU whose data segment stays in the backing file. With a
    /// data digest the bytes are needed here: they are read now and queued
    /// as memory (the connection does not splice then; this is the guard).
    pub fn push_spliced(&mut self, bhs: Bhs, data: Spliced) -> std::io::Result<()> {
        if self.out.cfg.data_digest {
            let bytes = data.to_bytes()?;
            self.out.push(bhs, bytes);
            return Ok(());
        }
        let len = data.len();
        self.head.extend(
            self.out
                .push_external_head(bhs, len)
                .into_iter()
                .map(Piece::Bytes),
        );
        self.head.push_back(Piece::File(data));
        self.out.push_external_tail(len);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.out.is_empty()
    }

    /// Everything queued, in order.
    pub fn take(&mut self) -> Batch {
        let mut all = std::mem::take(&mut self.head);
        all.extend(self.out.take().into_iter().map(Piece::Bytes));
        all
    }
}

impl Deref for Output {
    type Target = Outbox;

    fn deref(&self) -> &Outbox {
        &self.out
    }
}

impl DerefMut for Output {
    fn deref_mut(&mut self) -> &mut Outbox {
        &mut self.out
    }
}

/// Drops the first `n` bytes (what a write took) from `pieces`.
pub fn consume(pieces: &mut Batch, mut n: usize) {
    while n > 0 {
        let Some(front) = pieces.front_mut() else {
            return;
        };
        let len = front.len();
        if n >= len {
            n -= len;
            pieces.pop_front();
        } else {
            match front {
                Piece::Bytes(b) => {
                    let _ = b.split_to(n);
                }
                Piece::File(s) => *s = s.slice(n..len),
            }
            n = 0;
        }
    }
}
