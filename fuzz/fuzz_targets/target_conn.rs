//! The target's connection state machines on arbitrary PDU streams: the
//! login machine from the first byte, or the full feature phase of a logged
//! in session (with negotiated values chosen by the first byte). Whatever
//! arrives, they answer, reject or ask to close — never panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use iesp_proto::framing::{self, FrameConfig};
use iesp_proto::negotiation::{Limits, Negotiator, Role};
use iesp_proto::pdu::Isid;
use iesp_target::backend::RamBackend;
use iesp_target::config::{Backing, LunSpec, TargetConfig};
use iesp_target::conn::ffp::{FfpParams, FfpSetup, FullFeature, SessionKind};
use iesp_target::conn::login::{Login, LoginStep};
use iesp_proto::outbox::Outbox;
use iesp_target::scsi::{LogicalUnit, LunTable, Nexus};
use iesp_target::server::Target;
use libfuzzer_sys::fuzz_target;

fn target() -> Arc<Target> {
    static TARGET: OnceLock<Arc<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let mut cfg = TargetConfig::default();
            cfg.targets[0].luns = vec![LunSpec { backing: Backing::Ram { size: 1 << 20 }, block_size: 512, read_only: false }];
            Target::from_config(&cfg).expect("target")
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else { return };
    let cfg = FrameConfig { max_data_segment: 65_536, ..Default::default() };
    let mut buf = BytesMut::from(stream);
    if sel & 1 == 0 {
        let mut login = Login::new(target(), "127.0.0.1:3260".parse().expect("addr"));
        let mut out = Outbox::new(cfg);
        while let Ok(Some(frame)) = framing::decode(&cfg, &mut buf) {
            if !matches!(login.handle(frame, &mut out), LoginStep::Continue) {
                break;
            }
            let _ = out.take();
        }
        return;
    }
    let lu = LogicalUnit::new(Box::new(RamBackend::new(1 << 20)), 512, sel & 0x20 != 0, "FUZZ0001".into());
    let luns = Arc::new(LunTable::new(vec![Arc::new(lu)]));
    let params = FfpParams {
        initiator_mrdsl: if sel & 2 != 0 { 512 } else { 262_144 },
        target_mrdsl: 65_536,
        max_burst_length: if sel & 4 != 0 { 4096 } else { 262_144 },
        first_burst_length: if sel & 4 != 0 { 2048 } else { 65_536 },
        max_outstanding_r2t: if sel & 8 != 0 { 1 } else { 4 },
        initial_r2t: sel & 16 != 0,
        immediate_data: sel & 64 == 0,
    };
    let nexus = Nexus {
        initiator_name: "iqn.2026-11.org.iesp-test:fuzz".into(),
        isid: Isid([0x80, 0, 0, 0, 0, 1]),
        target_name: iesp_target::DEFAULT_IQN.into(),
        portal_group_tag: 1,
        session_id: 1,
    };
    let kind = if sel & 0x80 != 0 { SessionKind::Discovery } else { SessionKind::Normal };
    let neg = Negotiator::new(Role::Target, Limits::default());
    let setup = FfpSetup {
        params,
        neg,
        kind,
        nexus,
        luns,
        discovery: Vec::new(),
        cid: 0,
        frame: cfg,
        stat_sn: 1,
        exp_cmd_sn: 0,
        command_window: 16,
        keepalive: None,
    };
    let mut ffp = FullFeature::new(setup, std::time::Instant::now());
    // Feed the stream in pieces, as a socket would.
    let mut rbuf = BytesMut::new();
    let cut = usize::from(sel).max(1) * 7;
    for piece in buf.chunks(cut) {
        rbuf.extend_from_slice(piece);
        let after = ffp.receive(&mut rbuf, std::time::Instant::now());
        let _ = ffp.outbox().take();
        if !matches!(after, Ok(iesp_target::conn::ffp::After::Continue)) {
            break;
        }
    }
});
