//! PDU framing and CRC32C throughput: the per-PDU cost every command pays.
//!
//! `cargo bench -p iesp-proto --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iesp_proto::bhs::Lun;
use iesp_proto::digest;
use iesp_proto::framing::{self, Frame, FrameConfig};
use iesp_proto::pdu::{DataIn, Pdu, Residual, ScsiCommand};

fn read16() -> Pdu {
    let mut cmd = ScsiCommand {
        read: true,
        lun: Lun::from_index(0),
        itt: 0x1234,
        expected_data_transfer_length: 4096,
        cmd_sn: 77,
        exp_stat_sn: 55,
        ..Default::default()
    };
    cmd.set_cdb(&[0x88, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 8, 0, 0]);
    Pdu::ScsiCommand(cmd)
}

fn data_in() -> Pdu {
    Pdu::DataIn(DataIn {
        final_bit: true,
        status: Some(0),
        residual: Residual::None,
        itt: 0x1234,
        ttt: 0xffff_ffff,
        stat_sn: 9,
        exp_cmd_sn: 78,
        max_cmd_sn: 200,
        ..Default::default()
    })
}

fn configs() -> [(&'static str, FrameConfig); 2] {
    [
        ("plain", FrameConfig::default()),
        (
            "digests",
            FrameConfig {
                header_digest: true,
                data_digest: true,
                ..Default::default()
            },
        ),
    ]
}

fn bench_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing");
    let payload = Bytes::from(vec![0x5au8; 4096]);
    for (name, cfg) in configs() {
        let cmd = Frame::new(&read16());
        let din = Frame::with_data(&data_in(), payload.clone());
        let mut wire_cmd = BytesMut::new();
        framing::encode(&cfg, &cmd, &mut wire_cmd);
        let mut wire_din = BytesMut::new();
        framing::encode(&cfg, &din, &mut wire_din);

        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("encode_scsi_command/{name}"), |b| {
            let mut out = BytesMut::with_capacity(1 << 16);
            b.iter(|| {
                out.clear();
                framing::encode(&cfg, black_box(&cmd), &mut out);
            })
        });
        g.bench_function(format!("decode_scsi_command/{name}"), |b| {
            b.iter(|| {
                let mut buf = wire_cmd.clone();
                let f = framing::decode(&cfg, &mut buf).unwrap().unwrap();
                black_box(Pdu::decode(&f.bhs));
            })
        });
        g.throughput(Throughput::Bytes(4096));
        g.bench_function(format!("encode_data_in_4k/{name}"), |b| {
            let mut out = BytesMut::with_capacity(1 << 16);
            b.iter(|| {
                out.clear();
                framing::encode(&cfg, black_box(&din), &mut out);
            })
        });
        g.bench_function(format!("decode_data_in_4k/{name}"), |b| {
            b.iter(|| {
                let mut buf = wire_din.clone();
                black_box(framing::decode(&cfg, &mut buf).unwrap().unwrap());
            })
        });
    }
    g.finish();
}

fn bench_crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for size in [48usize, 4096, 262_144] {
        let data = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("{size}"), |b| {
            b.iter(|| digest::crc32c(black_box(&data)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_framing, bench_crc);
criterion_main!(benches);
