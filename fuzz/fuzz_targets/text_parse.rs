//! Parses arbitrary bytes as a Login/Text payload, reassembles them in
//! pieces with the C bit, and feeds whatever parses to both negotiation
//! engines. Nothing here may panic on any input.
#![no_main]

use iesp_proto::negotiation::{Limits, Negotiator, Phase, Role};
use iesp_proto::text::{self, TextAccumulator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, payload)) = data.split_first() else { return };
    // Reassembly in two pieces must give the same bytes as one piece.
    let at = usize::from(split).min(payload.len());
    let mut acc = TextAccumulator::new();
    let first = acc.push(&payload[..at], true);
    if let Ok(None) = first {
        if let Ok(Some(whole)) = acc.push(&payload[at..], false) {
            assert_eq!(whole, payload);
        }
    }
    let Ok(pairs) = text::decode(payload) else { return };
    // Round trip: what decodes re-encodes to something that decodes the same.
    let again = text::decode(&text::encode_to_vec(&pairs)).expect("re-encoded text must decode");
    assert_eq!(again, pairs);
    for kv in &pairs {
        let _ = text::decode_binary(&kv.value);
        let _ = text::decode_numerical(&kv.value);
    }
    for role in [Role::Target, Role::Initiator] {
        for phase in [Phase::Security, Phase::Operational, Phase::FullFeature] {
            let mut n = Negotiator::new(role, Limits::default());
            n.set_phase(phase);
            let _ = n.receive(&pairs);
            let _ = n.params();
        }
    }
});
