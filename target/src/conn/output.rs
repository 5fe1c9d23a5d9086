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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::splice::Pending;
    use bytes::BytesMut;
    use iesp_proto::bhs::Opcode;
    use iesp_proto::framing::decode;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    fn cfg(header: bool, data: bool) -> FrameConfig {
        FrameConfig {
            header_digest: header,
            data_digest: data,
            max_data_segment: 1 << 20,
        }
    }

    fn nop(itt: u32) -> Bhs {
        let mut b = Bhs::new(Opcode::NOP_IN);
        b.set_itt(itt);
        b
    }

    /// Headers, in-memory segments and file segments (odd lengths: padding)
    /// come out in the order pushed and decode back, with and without a
    /// header digest; with a data digest the file's bytes are queued as
    /// memory and carry their digest.
    #[test]
    fn file_segments_sit_between_their_header_and_padding() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        f.as_file().write_all_at(&content, 0).unwrap();
        let file = Arc::new(f.reopen().unwrap());
        let pending = Pending::default();
        for (header, data) in [(false, false), (true, false), (true, true)] {
            let c = cfg(header, data);
            let mut out = Output::new(c);
            out.push(nop(1), Bytes::from_static(b"small"));
            out.push_spliced(nop(2), pending.register(&file, 10, 100_001))
                .unwrap();
            out.push(nop(3), Bytes::new());
            out.push_spliced(nop(4), pending.register(&file, 3, 70_003))
                .unwrap();
            assert!(!out.is_empty());
            let pieces = out.take();
            assert!(out.is_empty());
            let files = pieces
                .iter()
                .filter(|p| matches!(p, Piece::File(_)))
                .count();
            assert_eq!(
                files,
                if data { 0 } else { 2 },
                "header {header} data {data}"
            );
            let mut wire = BytesMut::new();
            for p in pieces {
                match p {
                    Piece::Bytes(b) => wire.extend_from_slice(&b),
                    Piece::File(s) => wire.extend_from_slice(&s.to_bytes().unwrap()),
                }
            }
            let expect: [(u32, &[u8]); 4] = [
                (1, b"small"),
                (2, &content[10..100_011]),
                (3, b""),
                (4, &content[3..70_006]),
            ];
            for (itt, want) in expect {
                let frame = decode(&c, &mut wire).unwrap().unwrap();
                assert_eq!(frame.bhs.itt(), itt);
                assert!(frame.data[..] == want[..], "itt {itt}");
            }
            assert!(wire.is_empty());
        }
    }

    #[test]
    fn consume_splits_memory_and_file_pieces() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().write_all_at(&[9u8; 4096], 0).unwrap();
        let file = Arc::new(f.reopen().unwrap());
        let pending = Pending::default();
        let mut pieces: Batch = VecDeque::from([
            Piece::Bytes(Bytes::from_static(b"0123")),
            Piece::File(pending.register(&file, 0, 4096)),
        ]);
        consume(&mut pieces, 6);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].len(), 4094);
        consume(&mut pieces, 4094);
        assert!(pieces.is_empty());
    }
}
