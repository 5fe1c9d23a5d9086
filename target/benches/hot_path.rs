//! The target's per-command hot path, piece by piece (issue 16): the CDB
//! parse into a typed command, building the Data-In of a 4 KiB READ(16)
//! (the whole command through the full feature phase core, on a RAM LUN),
//! and the CRC32C digest over a header and a data segment.
//!
//! `cargo bench --profile release -p iesp-target --bench hot_path`; CI runs
//! it as a smoke test with `-- --warm-up-time 1 --measurement-time 1`.
//! Nothing is asserted: criterion prints the estimates.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iesp_proto::bhs::Lun;
use iesp_proto::digest;
use iesp_proto::framing::{self, Frame, FrameConfig};
use iesp_proto::negotiation::{Limits, Negotiator, Role};
use iesp_proto::pdu::{DataIn, Isid, Pdu, Residual, ScsiCommand};
use iesp_proto::scsi::{Cdb, CdbSize};
use iesp_target::backend::RamBackend;
use iesp_target::conn::ffp::{FfpParams, FfpSetup, FullFeature, SessionKind};
use iesp_target::scsi::{LogicalUnit, LunTable, Nexus, RawCdb};

const BLOCKS: u64 = 1 << 17; // 64 MiB of 512-byte blocks

fn table() -> Arc<LunTable> {
    let lu = LogicalUnit::new(
        Box::new(RamBackend::new(BLOCKS * 512)),
        512,
        false,
        "HOTPATH1".into(),
    );
    Arc::new(LunTable::new(vec![Arc::new(lu)]))
}

fn nexus() -> Nexus {
    Nexus {
        initiator_name: "iqn.2026-11.org.iesp-test:bench".into(),
        isid: Isid([0x80, 0, 0, 0, 0, 1]),
        target_name: "iqn.2026-11.org.iesp-test:target0".into(),
        portal_group_tag: 1,
        session_id: 1,
    }
}

fn read16_cdb(lba: u64) -> [u8; 16] {
    Cdb::read(CdbSize::Sixteen, lba, 8).encode().padded()
}

fn bench_cdb_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("cdb_parse");
    let t = table();
    let raw = read16_cdb(0x1000);
    g.bench_function("proto_Cdb_parse_read16", |b| {
        b.iter(|| Cdb::parse(black_box(&raw)))
    });
    // What the transport does once per command: decode, support and
    // reserved-bit checks, the CDB-only range checks, the transfer.
    g.bench_function("LunTable_prepare_read16", |b| {
        b.iter(|| t.prepare(Lun::from_index(0), RawCdb::Header(black_box(raw))))
    });
    let write = Cdb::write(CdbSize::Ten, 0x1000, 8, false).encode().padded();
    g.bench_function("LunTable_prepare_write10", |b| {
        b.iter(|| t.prepare(Lun::from_index(0), RawCdb::Header(black_box(write))))
    });
    g.finish();
}

/// One logged-in connection's core on a RAM LUN, the power-on unit
/// attention cleared.
fn connection() -> FullFeature {
    let t = table();
    // TEST UNIT READY takes the power-on unit attention.
    let c = t.execute(&nexus(), Lun::from_index(0), &[0u8; 6], &[], 0);
    assert_eq!(c.status, 2, "the power-on unit attention comes first");
    let frame = FrameConfig {
        header_digest: false,
        data_digest: false,
        max_data_segment: 262_144,
    };
    let setup = FfpSetup {
        params: FfpParams {
            initiator_mrdsl: 262_144,
            target_mrdsl: 262_144,
            ..FfpParams::default()
        },
        neg: Negotiator::new(Role::Target, Limits::default()),
        kind: SessionKind::Normal,
        nexus: nexus(),
        luns: t,
        discovery: Vec::new(),
        cid: 0,
        frame,
        stat_sn: 1,
        exp_cmd_sn: 1,
        command_window: 128,
        keepalive: None,
    };
    FullFeature::new(setup, Instant::now())
}

fn read16_frame(itt: u32, cmd_sn: u32, lba: u64) -> BytesMut {
    let mut cmd = ScsiCommand {
        read: true,
        final_bit: true,
        lun: Lun::from_index(0),
        itt,
        expected_data_transfer_length: 4096,
        cmd_sn,
        exp_stat_sn: 1,
        ..Default::default()
    };
    cmd.set_cdb(&read16_cdb(lba));
    let mut out = BytesMut::new();
    framing::encode(
        &FrameConfig::default(),
        &Frame::new(&Pdu::ScsiCommand(cmd)),
        &mut out,
    );
    out
}

fn bench_data_in(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_in");
    g.throughput(Throughput::Bytes(4096));
    // The whole command in the core: frame decode, CmdSN order, typed
    // parse, RAM read, the Data-In with collapsed status queued.
    g.bench_function("read16_4k_command", |b| {
        let mut ffp = connection();
        let mut cmd_sn = 1u32;
        let mut rbuf = BytesMut::with_capacity(1 << 16);
        let now = Instant::now();
        b.iter(|| {
            let frame = read16_frame(cmd_sn, cmd_sn, u64::from(cmd_sn % 8192) * 8);
            rbuf.extend_from_slice(&frame);
            ffp.receive(&mut rbuf, now).expect("receive");
            cmd_sn = cmd_sn.wrapping_add(1);
            black_box(ffp.outbox().take())
        })
    });
    let din = DataIn {
        final_bit: true,
        status: Some(0),
        residual: Residual::None,
        itt: 0x1234,
        ttt: 0xffff_ffff,
        stat_sn: 9,
        exp_cmd_sn: 78,
        max_cmd_sn: 200,
        ..Default::default()
    };
    g.bench_function("data_in_bhs_encode", |b| {
        b.iter(|| Pdu::DataIn(black_box(din.clone())).encode())
    });
    g.finish();
}

fn bench_digest(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for len in [48usize, 4096, 65_536] {
        let data = Bytes::from(vec![0xa5u8; len]);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len}B"), |b| {
            b.iter(|| digest::crc32c(black_box(&data)))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    // No plots: they need fonts a CI machine may lack.
    Criterion::default().without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_cdb_parse, bench_data_in, bench_digest
}
criterion_main!(benches);
