//! Feeds arbitrary bytes to the SNMP agent as a datagram, against a small
//! MIB. Nothing here may panic on any input; an answer must be a BER
//! SEQUENCE.
#![no_main]

use iesp_target::snmp::{answer, ber::Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mib = || {
        vec![
            (vec![1, 3, 6, 1, 2, 1, 142, 1, 1], Value::Counter32(1)),
            (vec![1, 3, 6, 1, 4, 1, 32473, 15], Value::Counter64(2)),
        ]
    };
    if let Some(rsp) = answer(data, "public", mib) {
        assert_eq!(rsp.first(), Some(&0x30));
    }
});
