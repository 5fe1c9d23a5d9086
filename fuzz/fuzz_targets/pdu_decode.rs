//! Frames arbitrary bytes as a PDU stream under every digest setting, then
//! decodes each frame's typed header, AHS, sense segment and reserved bits,
//! and re-encodes it. Nothing here may panic on any input.
#![no_main]

use bytes::BytesMut;
use iesp_proto::framing::{self, FrameConfig, FrameError};
use iesp_proto::pdu::{self, Pdu, fields};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, stream)) = data.split_first() else { return };
    let cfg = FrameConfig {
        header_digest: flags & 1 != 0,
        data_digest: flags & 2 != 0,
        max_data_segment: if flags & 4 != 0 { 8192 } else { framing::MAX_DATA_SEGMENT },
    };
    let mut buf = BytesMut::from(stream);
    loop {
        let frame = match framing::decode(&cfg, &mut buf) {
            Ok(Some(f)) => f,
            Err(FrameError::DataDigest { frame, .. }) => frame,
            Ok(None) | Err(_) => break,
        };
        let typed = Pdu::decode(&frame.bhs);
        let _ = fields::reserved_bits(&frame.bhs);
        for f in fields::all(frame.bhs.opcode()) {
            let _ = f.read(&frame.bhs);
        }
        let _ = pdu::ahs::decode(&frame.ahs);
        if let Pdu::ScsiCommand(cmd) = &typed {
            let _ = pdu::ahs::full_cdb(&cmd.cdb, &frame.ahs);
        }
        if let Pdu::ScsiResponse(_) = &typed {
            let _ = pdu::scsi::decode_sense_segment(&frame.data);
        }
        // Re-encoding a decoded header must give a frame that decodes again.
        let mut out = BytesMut::new();
        framing::encode(&cfg, &framing::Frame { bhs: typed.encode(), ahs: frame.ahs.clone(), data: frame.data.clone() }, &mut out);
        let again = framing::decode(&FrameConfig { max_data_segment: framing::MAX_DATA_SEGMENT, ..cfg }, &mut out);
        assert!(matches!(again, Ok(Some(_))), "re-encoded frame does not decode: {again:?}");
    }
});
