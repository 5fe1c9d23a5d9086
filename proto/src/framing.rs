//! Framing: a byte stream to and from whole PDUs (RFC 7143 §11.2).
//!
//! A PDU on the wire is: the 48-byte BHS, TotalAHSLength × 4 bytes of AHS,
//! a 4-byte header digest if negotiated, the data segment padded to a
//! multiple of 4, and a 4-byte data digest (over data and padding) if
//! negotiated and the segment is not empty.
//!
//! [`decode`] takes bytes from a `BytesMut` read buffer and returns a
//! [`Frame`] once a whole PDU is there; `Ok(None)` means "need more bytes"
//! and is the normal outcome of a short read. Segments are zero-copy slices
//! of the read buffer. [`encode`] appends a frame, padding and digests to a
//! write buffer; it sets TotalAHSLength and DataSegmentLength from the
//! segments, while [`encode_verbatim`] keeps whatever the header says so a
//! test can send lying lengths.

use bytes::{BufMut, Bytes, BytesMut};

use crate::bhs::{BHS_LEN, Bhs};
use crate::digest;
use crate::pdu::Pdu;

/// The largest DataSegmentLength the 24-bit field can carry.
pub const MAX_DATA_SEGMENT: u32 = (1 << 24) - 1;

/// One whole PDU: raw header, AHS area and data segment (without padding).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frame {
    pub bhs: Bhs,
    pub ahs: Bytes,
    pub data: Bytes,
}

impl Frame {
    /// A frame for a typed header with no AHS and no data.
    pub fn new(pdu: &Pdu) -> Frame {
        Frame {
            bhs: pdu.encode(),
            ahs: Bytes::new(),
            data: Bytes::new(),
        }
    }

    /// A frame for a typed header with a data segment.
    pub fn with_data(pdu: &Pdu, data: Bytes) -> Frame {
        Frame {
            bhs: pdu.encode(),
            ahs: Bytes::new(),
            data,
        }
    }

    /// The typed header.
    pub fn pdu(&self) -> Pdu {
        Pdu::decode(&self.bhs)
    }
}

/// What the framing layer needs to know about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameConfig {
    /// HeaderDigest=CRC32C is in effect.
    pub header_digest: bool,
    /// DataDigest=CRC32C is in effect.
    pub data_digest: bool,
    /// The largest data segment this side accepts: its own declared
    /// MaxRecvDataSegmentLength, or more during login where the RFC
    /// default (8192) applies but peers are often generous.
    pub max_data_segment: u32,
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig {
            header_digest: false,
            data_digest: false,
            max_data_segment: MAX_DATA_SEGMENT,
        }
    }
}

/// A stream that cannot be framed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header digest does not match. The header cannot be trusted, so
    /// neither can the frame length: the connection must be dropped
    /// (§7.8, §11.2.4). Nothing was consumed.
    #[error(
        "header digest mismatch on {bhs:?}: computed {computed:#010x}, received {received:#010x}"
    )]
    HeaderDigest {
        bhs: Bhs,
        computed: u32,
        received: u32,
    },
    /// The data digest does not match (§7.8): the PDU was consumed and its
    /// header is trustworthy, so the receiver may Reject it and go on.
    #[error("data digest mismatch on {:?}: computed {computed:#010x}, received {received:#010x}", frame.bhs)]
    DataDigest {
        frame: Frame,
        computed: u32,
        received: u32,
    },
    /// DataSegmentLength exceeds what this side accepts. Nothing was
    /// consumed; the receiver should Reject and drop the connection.
    #[error("data segment of {len} bytes exceeds the limit of {max} on {bhs:?}")]
    DataSegmentTooLong { bhs: Bhs, len: u32, max: u32 },
}

/// Zero padding after a data segment of `len` bytes.
pub fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Total wire length of the PDU this header describes.
pub fn frame_len(cfg: &FrameConfig, bhs: &Bhs) -> usize {
    let data = bhs.data_segment_len() as usize;
    BHS_LEN
        + usize::from(bhs.total_ahs_words()) * 4
        + if cfg.header_digest { 4 } else { 0 }
        + data
        + padding(data)
        + if cfg.data_digest && data > 0 { 4 } else { 0 }
}

/// Wire length of the largest PDU `cfg` accepts without AHS (a data
/// segment of `cfg.max_data_segment` bytes).
pub fn frame_len_max(cfg: &FrameConfig) -> usize {
    let data = cfg.max_data_segment as usize;
    BHS_LEN
        + if cfg.header_digest { 4 } else { 0 }
        + data
        + padding(data)
        + if cfg.data_digest { 4 } else { 0 }
}

/// Takes one whole PDU off the front of `buf`, or returns `Ok(None)` when
/// more bytes are needed (after reserving room for them).
pub fn decode(cfg: &FrameConfig, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(bhs) = Bhs::from_slice(buf) else {
        return Ok(None);
    };
    let data_len = bhs.data_segment_len();
    if data_len > cfg.max_data_segment {
        return Err(FrameError::DataSegmentTooLong {
            bhs,
            len: data_len,
            max: cfg.max_data_segment,
        });
    }
    let total = frame_len(cfg, &bhs);
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let ahs_len = usize::from(bhs.total_ahs_words()) * 4;
    let head_len = BHS_LEN + ahs_len;
    if cfg.header_digest {
        let computed = digest::crc32c(&buf[..head_len]);
        let received = digest::from_wire([
            buf[head_len],
            buf[head_len + 1],
            buf[head_len + 2],
            buf[head_len + 3],
        ]);
        if computed != received {
            return Err(FrameError::HeaderDigest {
                bhs,
                computed,
                received,
            });
        }
    }
    let whole = buf.split_to(total).freeze();
    let data_at = head_len + if cfg.header_digest { 4 } else { 0 };
    let data_len = data_len as usize;
    let frame = Frame {
        bhs,
        ahs: whole.slice(BHS_LEN..head_len),
        data: whole.slice(data_at..data_at + data_len),
    };
    if cfg.data_digest && data_len > 0 {
        let padded = data_len + padding(data_len);
        let computed = digest::crc32c(&whole[data_at..data_at + padded]);
        let d = data_at + padded;
        let received = digest::from_wire([whole[d], whole[d + 1], whole[d + 2], whole[d + 3]]);
        if computed != received {
            return Err(FrameError::DataDigest {
                frame,
                computed,
                received,
            });
        }
    }
    Ok(Some(frame))
}

/// Appends a frame with TotalAHSLength and DataSegmentLength set from its
/// segments. An AHS area that is not a multiple of 4 is zero-padded.
pub fn encode(cfg: &FrameConfig, frame: &Frame, out: &mut BytesMut) {
    let ahs_words = frame.ahs.len().div_ceil(4);
    let mut bhs = frame.bhs;
    bhs.set_total_ahs_words(ahs_words.min(255) as u8);
    bhs.set_data_segment_len(frame.data.len() as u32);
    out.reserve(BHS_LEN + ahs_words * 4 + frame.data.len() + 12);
    encode_head(cfg, &bhs, &frame.ahs, out);
    out.put_slice(&frame.data);
    encode_tail(cfg, &frame.data, out);
}

/// Appends a frame exactly as its header describes it: the header's
/// lengths are not corrected, the segments are written as they are. For
/// tests that send malformed PDUs.
pub fn encode_verbatim(cfg: &FrameConfig, frame: &Frame, out: &mut BytesMut) {
    encode_head(cfg, &frame.bhs, &frame.ahs, out);
    out.put_slice(&frame.data);
    encode_tail(cfg, &frame.data, out);
}

/// Appends the header part of a PDU: BHS as given, AHS (zero-padded to
/// 4 bytes) and the header digest. With [`encode_tail`] this lets a sender
/// write the data segment from its own buffer (vectored write) instead of
/// copying it.
pub fn encode_head(cfg: &FrameConfig, bhs: &Bhs, ahs: &[u8], out: &mut BytesMut) {
    let start = out.len();
    out.put_slice(bhs.as_bytes());
    out.put_slice(ahs);
    out.put_bytes(0, padding(ahs.len()));
    if cfg.header_digest {
        let crc = digest::crc32c(&out[start..]);
        out.put_slice(&digest::to_wire(crc));
    }
}

/// Appends what follows a data segment: padding and the data digest.
pub fn encode_tail(cfg: &FrameConfig, data: &[u8], out: &mut BytesMut) {
    out.put_bytes(0, padding(data.len()));
    if cfg.data_digest && !data.is_empty() {
        out.put_slice(&digest::to_wire(digest::data_digest(data)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bhs::{Lun, Opcode};
    use crate::pdu::{DataIn, NopOut};
    use proptest::prelude::*;

    fn cfgs() -> [FrameConfig; 4] {
        let mut out = [FrameConfig::default(); 4];
        for (i, c) in out.iter_mut().enumerate() {
            c.header_digest = i & 1 != 0;
            c.data_digest = i & 2 != 0;
        }
        out
    }

    fn nop(data: &[u8]) -> Frame {
        let pdu = Pdu::NopOut(NopOut {
            immediate: true,
            lun: Lun(0),
            itt: 7,
            ttt: 0xffff_ffff,
            cmd_sn: 1,
            exp_stat_sn: 1,
        });
        Frame::with_data(&pdu, Bytes::copy_from_slice(data))
    }

    fn encoded(cfg: &FrameConfig, f: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        encode(cfg, f, &mut out);
        out
    }

    #[test]
    fn lengths_padding_and_digests() {
        for cfg in cfgs() {
            let f = nop(b"hello");
            let wire = encoded(&cfg, &f);
            let expect =
                48 + 5 + 3 + 4 * usize::from(cfg.header_digest) + 4 * usize::from(cfg.data_digest);
            assert_eq!(wire.len(), expect, "{cfg:?}");
            assert_eq!(wire[5..8], [0, 0, 5]);
            let mut buf = wire.clone();
            let back = decode(&cfg, &mut buf).unwrap().unwrap();
            assert!(buf.is_empty());
            assert_eq!(&back.data[..], b"hello");
            assert_eq!(back.pdu(), f.pdu());
        }
    }

    #[test]
    fn empty_data_has_no_data_digest() {
        let cfg = FrameConfig {
            header_digest: true,
            data_digest: true,
            ..Default::default()
        };
        assert_eq!(encoded(&cfg, &nop(b"")).len(), 52);
    }

    #[test]
    fn incremental_byte_by_byte() {
        for cfg in cfgs() {
            let mut stream = BytesMut::new();
            let payloads: [&[u8]; 3] = [b"a", b"", b"0123456789abcdef0"];
            for p in payloads {
                encode(&cfg, &nop(p), &mut stream);
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for b in stream.iter() {
                buf.put_u8(*b);
                while let Some(f) = decode(&cfg, &mut buf).unwrap() {
                    got.push(f.data.to_vec());
                }
            }
            assert_eq!(got, payloads.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn header_digest_mismatch_consumes_nothing() {
        let cfg = FrameConfig {
            header_digest: true,
            ..Default::default()
        };
        let mut wire = encoded(&cfg, &nop(b"x"));
        wire[30] ^= 1;
        let len = wire.len();
        assert!(matches!(
            decode(&cfg, &mut wire),
            Err(FrameError::HeaderDigest { .. })
        ));
        assert_eq!(wire.len(), len);
    }

    #[test]
    fn data_digest_mismatch_consumes_the_pdu() {
        let cfg = FrameConfig {
            data_digest: true,
            ..Default::default()
        };
        let mut wire = encoded(&cfg, &nop(b"payload"));
        encode(&cfg, &nop(b"next"), &mut wire);
        wire[49] ^= 0x80;
        match decode(&cfg, &mut wire) {
            Err(FrameError::DataDigest { frame, .. }) => {
                assert_eq!(frame.bhs.opcode(), Opcode::NOP_OUT)
            }
            other => panic!("expected a data digest error, got {other:?}"),
        }
        assert_eq!(&decode(&cfg, &mut wire).unwrap().unwrap().data[..], b"next");
    }

    #[test]
    fn oversized_segment_is_refused_before_buffering() {
        let cfg = FrameConfig {
            max_data_segment: 8192,
            ..Default::default()
        };
        let mut b = Bhs::new(Opcode::DATA_OUT);
        b.set_data_segment_len(8193);
        let mut buf = BytesMut::from(&b.0[..]);
        assert!(matches!(
            decode(&cfg, &mut buf),
            Err(FrameError::DataSegmentTooLong {
                len: 8193,
                max: 8192,
                ..
            })
        ));
    }

    #[test]
    fn ahs_is_framed() {
        let cfg = FrameConfig {
            header_digest: true,
            ..Default::default()
        };
        let mut f = nop(b"zz");
        f.ahs = Bytes::from_static(&[0, 5, 2, 0, 0, 0, 0x10, 0]);
        let mut wire = encoded(&cfg, &f);
        assert_eq!(wire[4], 2);
        let back = decode(&cfg, &mut wire).unwrap().unwrap();
        assert_eq!(back.ahs, f.ahs);
        assert_eq!(&back.data[..], b"zz");
    }

    #[test]
    fn verbatim_keeps_lying_lengths() {
        let mut f = nop(b"abcd");
        f.bhs.set_data_segment_len(100);
        let mut out = BytesMut::new();
        encode_verbatim(&FrameConfig::default(), &f, &mut out);
        assert_eq!(out.len(), 52);
        assert_eq!(out[7], 100);
    }

    #[test]
    fn head_and_tail_equal_whole() {
        let cfg = FrameConfig {
            header_digest: true,
            data_digest: true,
            ..Default::default()
        };
        let pdu = Pdu::DataIn(DataIn {
            final_bit: true,
            itt: 3,
            ..Default::default()
        });
        let data = Bytes::from_static(b"0123456789");
        let whole = encoded(&cfg, &Frame::with_data(&pdu, data.clone()));
        let mut bhs = pdu.encode();
        bhs.set_data_segment_len(data.len() as u32);
        let mut parts = BytesMut::new();
        encode_head(&cfg, &bhs, &[], &mut parts);
        parts.put_slice(&data);
        encode_tail(&cfg, &data, &mut parts);
        assert_eq!(parts, whole);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), hd: bool, dd: bool) {
            let cfg = FrameConfig { header_digest: hd, data_digest: dd, max_data_segment: 1024 };
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) | Err(FrameError::DataDigest { .. }) = decode(&cfg, &mut buf) {}
        }

        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..300),
                      ahs_words in 0usize..4, hd: bool, dd: bool, split in 0usize..700) {
            let cfg = FrameConfig { header_digest: hd, data_digest: dd, ..Default::default() };
            let mut f = nop(&data);
            f.ahs = Bytes::from(vec![0xab; ahs_words * 4]);
            let wire = encoded(&cfg, &f);
            let split = split.min(wire.len());
            let mut buf = BytesMut::from(&wire[..split]);
            let first = decode(&cfg, &mut buf).unwrap();
            if split < wire.len() {
                prop_assert!(first.is_none());
                buf.extend_from_slice(&wire[split..]);
            } else {
                buf.clear();
                buf.extend_from_slice(&wire);
            }
            let back = decode(&cfg, &mut buf).unwrap().unwrap();
            prop_assert_eq!(&back.data[..], &data[..]);
            prop_assert_eq!(&back.ahs[..], &f.ahs[..]);
            prop_assert_eq!(back.pdu(), f.pdu());
        }
    }
}
