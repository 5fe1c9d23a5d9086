//! Text requests (§11.10, §11.11): SendTargets and full feature phase
//! negotiation, long answers continued with the C bit.

use super::FullFeature;
use bytes::Bytes;
use iesp_proto::bhs::{Lun, RESERVED_TAG};
use iesp_proto::pdu::{Pdu, RejectReason, TextRequest, TextResponse};
use iesp_proto::text;

/// A continuing Text Response too long for one PDU (§11.11, C bit).
pub(super) struct TextOut {
    pub(super) itt: u32,
    pub(super) ttt: u32,
    pub(super) rest: Bytes,
}

/// Text payloads we are willing to reassemble (C bit).
pub(super) const TEXT_LIMIT: usize = 64 * 1024;

impl FullFeature {
    pub(super) fn text_request(&mut self, req: TextRequest, data: &[u8]) {
        let reject = |this: &mut Self, reason| {
            let mut bhs = Pdu::TextRequest(req.clone()).encode();
            bhs.set_data_segment_len(data.len() as u32);
            this.reject(reason, &bhs);
        };
        if req.ttt == RESERVED_TAG {
            // A new exchange; one in progress is abandoned (§11.10.4).
            self.text_in.clear();
            self.text_in_ttt = None;
            self.text_out = None;
        } else if let Some(t) = self
            .text_out
            .take_if(|t| t.ttt == req.ttt && t.itt == req.itt)
        {
            // The initiator fetches the rest of our long answer.
            self.send_text(req.itt, req.lun, t.rest);
            return;
        } else if self.text_in_ttt != Some(req.ttt) {
            reject(self, RejectReason::INVALID_PDU_FIELD);
            return;
        }
        if self.text_in.len() + data.len() > TEXT_LIMIT {
            self.text_in.clear();
            self.text_in_ttt = None;
            reject(self, RejectReason::PROTOCOL_ERROR);
            return;
        }
        self.text_in.extend_from_slice(data);
        if req.continue_bit {
            // More to come: acknowledge with an empty response whose TTT
            // the next part carries (§11.10.2).
            let ttt = self.new_ttt();
            self.text_in_ttt = Some(ttt);
            let rsp = TextResponse {
                final_bit: false,
                continue_bit: false,
                lun: req.lun,
                itt: req.itt,
                ttt,
                stat_sn: self.next_stat_sn(),
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
            };
            self.out.push(Pdu::TextResponse(rsp).encode(), Bytes::new());
            return;
        }
        self.text_in_ttt = None;
        let payload = std::mem::take(&mut self.text_in);
        match self.answer_text(&payload) {
            Ok(answer) => self.send_text(req.itt, req.lun, answer),
            Err(reason) => reject(self, reason),
        }
    }

    /// Answers a complete text payload (§6.5, §11.10): SendTargets here,
    /// every other key through the login's negotiation engine (unknown keys
    /// get NotUnderstood, login-only keys Reject).
    pub(super) fn answer_text(&mut self, payload: &[u8]) -> Result<Bytes, RejectReason> {
        let pairs = text::decode(payload).map_err(|_| RejectReason::PROTOCOL_ERROR)?;
        self.neg.start_text_negotiation();
        let reply = self
            .neg
            .receive(&pairs)
            .map_err(|_| RejectReason::PROTOCOL_ERROR)?;
        let mut out = Vec::new();
        for kv in reply.delegated.iter().filter(|kv| kv.key == "SendTargets") {
            self.send_targets(&kv.value, &mut out);
        }
        text::encode(&reply.answers, &mut out);
        // MaxRecvDataSegmentLength may be re-declared in full feature phase;
        // only a declaration changes it.
        if pairs.iter().any(|kv| kv.key == "MaxRecvDataSegmentLength") {
            self.params.initiator_mrdsl = self.neg.params().initiator_mrdsl;
        }
        Ok(Bytes::from(out))
    }

    /// SendTargets (RFC 7143 Appendix C): `All` lists every target, an empty
    /// value the session's own target, an iSCSI name that target if it
    /// exists. Anything else is not a valid value: Reject.
    pub(super) fn send_targets(&self, value: &str, out: &mut Vec<u8>) {
        let is_name = ["iqn.", "eui.", "naa."]
            .iter()
            .any(|p| value.starts_with(p));
        if value != "All" && !value.is_empty() && !is_name {
            out.extend_from_slice(b"SendTargets=Reject\0");
            return;
        }
        for entry in &self.discovery {
            let wanted = match value {
                "All" => true,
                "" => *entry.target_name == *self.nexus.target_name,
                name => name == entry.target_name,
            };
            if wanted {
                out.extend_from_slice(format!("TargetName={}\0", entry.target_name).as_bytes());
                for a in &entry.addresses {
                    out.extend_from_slice(format!("TargetAddress={a}\0").as_bytes());
                }
            }
        }
    }

    /// Sends a text answer, split with C=1 when it exceeds the initiator's
    /// MaxRecvDataSegmentLength (§11.11.2).
    pub(super) fn send_text(&mut self, itt: u32, lun: Lun, answer: Bytes) {
        let limit = self.params.initiator_mrdsl as usize;
        let (now, rest) = if answer.len() > limit {
            (answer.slice(..limit), Some(answer.slice(limit..)))
        } else {
            (answer, None)
        };
        let ttt = if rest.is_some() {
            self.new_ttt()
        } else {
            RESERVED_TAG
        };
        let rsp = TextResponse {
            final_bit: rest.is_none(),
            continue_bit: rest.is_some(),
            lun,
            itt,
            ttt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.out.push(Pdu::TextResponse(rsp).encode(), now);
        if let Some(rest) = rest {
            self.text_out = Some(TextOut { itt, ttt, rest });
        }
    }
}
