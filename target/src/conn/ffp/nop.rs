//! NOP-Out answers and our NOP-In pings (§11.18, §11.19).

use super::FullFeature;
use bytes::Bytes;
use iesp_proto::bhs::{Lun, RESERVED_TAG};
use iesp_proto::pdu::{NopIn, NopOut, Pdu};

impl FullFeature {
    pub(super) fn nop_out(&mut self, nop: NopOut, data: Bytes) {
        if nop.itt == RESERVED_TAG {
            // No reply wanted; with a TTT it answers our ping (§11.18).
            if nop.ttt != RESERVED_TAG && self.ping == Some(nop.ttt) {
                self.ping = None;
            }
            return;
        }
        let rsp = NopIn {
            lun: nop.lun,
            itt: nop.itt,
            ttt: RESERVED_TAG,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        // The ping data comes back as it came (§11.19), within the
        // initiator's receive limit.
        let echo = data.slice(..data.len().min(self.params.initiator_mrdsl as usize));
        self.out.push(Pdu::NopIn(rsp).encode(), echo);
    }

    /// Whether our last NOP-In ping is still unanswered.
    pub fn ping_outstanding(&self) -> bool {
        self.ping.is_some()
    }

    /// Queues a NOP-In ping asking for an answer; returns false if the
    /// previous ping is still unanswered (the peer is gone).
    pub(super) fn ping(&mut self) -> bool {
        if self.ping.is_some() {
            return false;
        }
        let ttt = self.new_ttt();
        self.ping = Some(ttt);
        let nop = NopIn {
            lun: Lun(0),
            itt: RESERVED_TAG,
            ttt,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.out.push(Pdu::NopIn(nop).encode(), Bytes::new());
        true
    }
}
