//! Keeps a spliced READ exact against the session's later writes (issue 16).
//!
//! A READ whose data goes out with `sendfile` ([`crate::backend::splice`])
//! leaves page-cache pages in the socket: until the initiator has read them
//! off its socket, a `pwrite` to the same file changes bytes "already sent"
//! (over loopback the receiver's queue holds the very same pages). Commands
//! of a session run in arrival order, so a WRITE that arrives after the READ
//! must not change what the READ returns.
//!
//! The fence: after a spliced READ's status goes out, any PDU that may
//! change a medium (a SCSI command with the W bit, WRITE SAME, FORMAT UNIT,
//! any Data-Out) waits — with every PDU behind it, so the order stays —
//! until the initiator acknowledges that status (ExpStatSN past its StatSN:
//! it has read everything sent before it). The core pings (NOP-In asking
//! for an answer) when it starts to wait, so an initiator that sends
//! nothing else still answers soon. NOP-Outs are handled at once (one may
//! be that answer). Reads keep flowing while no write comes; a write right
//! behind a spliced read costs one round trip. Writes of other sessions are
//! concurrent with the READ anyway and are not held.

use std::collections::VecDeque;

use iesp_proto::bhs::Opcode;
use iesp_proto::framing::Frame;

#[derive(Debug, Default)]
pub struct SpliceFence {
    /// ExpStatSN that acknowledges the last spliced READ's status.
    need: Option<u32>,
    /// PDUs held, in arrival order.
    held: VecDeque<Frame>,
}

/// `a` at or past `b` in serial number arithmetic (RFC 1982).
fn serial_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// Whether handling `frame` may change the content of a logical unit.
pub fn may_change_medium(frame: &Frame) -> bool {
    let b = frame.bhs.as_bytes();
    match frame.bhs.opcode() {
        Opcode::DATA_OUT => true,
        // W bit, or WRITE SAME (10/16) and FORMAT UNIT, which can write
        // without a Data-Out buffer.
        Opcode::SCSI_COMMAND => b[1] & 0x20 != 0 || matches!(b[32], 0x04 | 0x41 | 0x93),
        _ => false,
    }
}

impl SpliceFence {
    /// A spliced READ's status went out; `next_stat_sn` is the StatSN
    /// after it.
    pub fn spliced(&mut self, next_stat_sn: u32) {
        self.need = Some(next_stat_sn);
    }

    /// Notes the ExpStatSN every initiator PDU carries (bytes 28..32).
    pub fn saw(&mut self, frame: &Frame) {
        let b = frame.bhs.as_bytes();
        let exp = u32::from_be_bytes([b[28], b[29], b[30], b[31]]);
        if self.need.is_some_and(|need| serial_ge(exp, need)) {
            self.need = None;
        }
    }

    fn must_wait(&self, frame: &Frame) -> bool {
        self.need.is_some() && may_change_medium(frame)
    }

    /// `Some(frame)` back when it may be handled now; `None` when it was
    /// held (behind others, or as the first).
    pub fn admit(&mut self, frame: Frame) -> Option<Frame> {
        if frame.bhs.opcode() == Opcode::NOP_OUT
            || (self.held.is_empty() && !self.must_wait(&frame))
        {
            return Some(frame);
        }
        self.held.push_back(frame);
        None
    }

    /// The next held PDU, once it may be handled.
    pub fn release(&mut self) -> Option<Frame> {
        let front = self.held.front()?;
        if self.must_wait(front) {
            return None;
        }
        self.held.pop_front()
    }

    /// Whether PDUs are held (the core then wants a ping answered).
    pub fn waiting(&self) -> bool {
        !self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use iesp_proto::bhs::Bhs;

    fn pdu(op: Opcode, exp_stat_sn: u32, tweak: impl Fn(&mut Bhs)) -> Frame {
        let mut bhs = Bhs::new(op);
        bhs.set_u32_at(28, exp_stat_sn);
        tweak(&mut bhs);
        Frame {
            bhs,
            ahs: Bytes::new(),
            data: Bytes::new(),
        }
    }

    fn read(exp: u32) -> Frame {
        pdu(Opcode::SCSI_COMMAND, exp, |b| {
            b.set_bit(1, 0x40, true);
            b.set_u32_at(32, 0x2800_0000);
        })
    }

    fn write(exp: u32) -> Frame {
        pdu(Opcode::SCSI_COMMAND, exp, |b| {
            b.set_bit(1, 0x20, true);
            b.set_u32_at(32, 0x2a00_0000);
        })
    }

    #[test]
    fn what_may_change_a_medium() {
        assert!(may_change_medium(&write(0)));
        assert!(!may_change_medium(&read(0)));
        assert!(may_change_medium(&pdu(Opcode::DATA_OUT, 0, |_| {})));
        // WRITE SAME(16) with NDOB: no Data-Out, still a write.
        assert!(may_change_medium(
            &pdu(Opcode::SCSI_COMMAND, 0, |b| b.set_u32_at(32, 0x9301_0000))
        ));
        assert!(!may_change_medium(&pdu(Opcode::NOP_OUT, 0, |_| {})));
    }

    /// Nothing is held without a spliced read; after one, a write and all
    /// behind it wait (a NOP-Out does not) until ExpStatSN reaches the
    /// StatSN after the read's status, across the wrap.
    #[test]
    fn writes_wait_for_the_spliced_reads_status_to_be_acknowledged() {
        let mut f = SpliceFence::default();
        assert!(f.admit(write(0)).is_some());
        let need = 1u32; // the read's status had StatSN u32::MAX
        f.spliced(need);
        let r = read(u32::MAX);
        f.saw(&r);
        assert!(f.admit(r).is_some(), "reads go on");
        let w = write(u32::MAX);
        f.saw(&w);
        assert!(f.admit(w).is_none());
        assert!(f.waiting(), "the write is held");
        let r = read(u32::MAX);
        f.saw(&r);
        assert!(f.admit(r).is_none(), "a read behind a held write waits too");
        let nop = pdu(Opcode::NOP_OUT, u32::MAX, |_| {});
        f.saw(&nop);
        assert!(f.admit(nop).is_some(), "NOP-Out goes through");
        assert!(f.release().is_none(), "not acknowledged yet");
        let answer = pdu(Opcode::NOP_OUT, need, |_| {});
        f.saw(&answer);
        assert!(f.admit(answer).is_some());
        let order: Vec<bool> = std::iter::from_fn(|| f.release())
            .map(|fr| may_change_medium(&fr))
            .collect();
        assert_eq!(order, [true, false], "released in arrival order");
        assert!(!f.waiting());
    }
}
