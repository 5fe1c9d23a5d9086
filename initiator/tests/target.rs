//! The initiator against the reference target over loopback TCP.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{INITIATOR, opts, random_bytes};
use iesp_initiator::discovery;
use iesp_initiator::raw::{RawConnection, Received, TraceEvent};
use iesp_initiator::session::CommandError;
use iesp_initiator::{IscsiUrl, LoginOptions, Session, login};
use iesp_proto::bhs::{Lun, Opcode};
use iesp_proto::negotiation::Digest;
use iesp_proto::pdu::{NopOut, Pdu, TmfFunction, TmfResponse};
use iesp_proto::scsi::{Asc, SenseKey};
use iesp_proto::text::KeyValue;
use iesp_target::DEFAULT_IQN;
use iesp_target::config::{TargetConfig, TargetDef};
use iesp_testsupport::TestTarget;

const T: Duration = Duration::from_secs(10);

/// Every ImmediateData × InitialR2T combination, digests off and on, our
/// MaxRecvDataSegmentLength 512 and 262144: log in, check what was
/// negotiated, write and read back 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_matrix_and_data_integrity() {
    let target = TestTarget::start(TargetConfig::default()).await;
    let mut case = 0u64;
    for immediate_data in [false, true] {
        for initial_r2t in [false, true] {
            for digests in [false, true] {
                for mrdsl in [512u32, 262_144] {
                    case += 1;
                    let mut o = opts();
                    o.immediate_data = immediate_data;
                    o.initial_r2t = initial_r2t;
                    o.max_recv_data_segment_length = mrdsl;
                    if digests {
                        o = o.with_digests();
                    }
                    let what = format!(
                        "ImmediateData={immediate_data} InitialR2T={initial_r2t} digests={digests} MRDSL={mrdsl}"
                    );
                    let s = Session::login(target.addr(), o).await.expect(&what);
                    let out = s.login_outcome();
                    assert!(out.warnings.is_empty(), "{what}: {:?}", out.warnings);
                    assert_ne!(out.tsih, 0, "{what}");
                    assert_eq!(out.target_portal_group_tag, Some(1), "{what}");
                    let p = s.params();
                    assert_eq!(p.immediate_data, immediate_data, "{what}");
                    assert_eq!(p.initial_r2t, initial_r2t, "{what}");
                    let d = if digests {
                        Digest::Crc32c
                    } else {
                        Digest::None
                    };
                    assert_eq!((p.header_digest, p.data_digest), (d, d), "{what}");
                    assert_eq!(p.initiator_mrdsl, mrdsl, "{what}");

                    let lu = s.logical_unit(0).await.expect(&what);
                    assert_eq!(
                        (lu.block_size(), lu.blocks()),
                        (512, 64 << 20 >> 9),
                        "{what}"
                    );
                    let data = Bytes::from(random_bytes(case, 64 * 1024));
                    let lba = case * 256;
                    lu.write(lba, data.clone()).await.expect(&what);
                    let back = lu.read(lba, 128).await.expect(&what);
                    assert!(back == data, "{what}: data read back differs");
                    s.logout().await.expect(&what);
                }
            }
        }
    }
    target.stop().await;
}

#[tokio::test]
async fn discovery_finds_the_default_target() {
    let target = TestTarget::start(TargetConfig::default()).await;
    let found = iesp_initiator::discover(target.addr(), INITIATOR)
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].name, DEFAULT_IQN);
    let addr = &found[0].addresses;
    assert_eq!(addr.len(), 1, "{addr:?}");
    assert_eq!(addr[0].socket_addr(), Some(target.addr()));
    assert_eq!(addr[0].portal_group_tag, Some(1));
    target.stop().await;
}

/// A SendTargets answer longer than our MaxRecvDataSegmentLength arrives
/// in parts (C bit, TTT) and is reassembled.
#[tokio::test]
async fn discovery_follows_text_continuations() {
    let mut config = TargetConfig::default();
    let template = config.targets[0].clone();
    for i in 1..40 {
        config.targets.push(TargetDef {
            iqn: format!("iqn.2026-11.org.iesp-test:extra-target-number-{i:03}"),
            ..template.clone()
        });
    }
    let target = TestTarget::start(config).await;
    let mut o = LoginOptions::discovery(INITIATOR);
    o.max_recv_data_segment_length = 512;
    let found = discovery::discover_with(target.addr(), &o).await.unwrap();
    assert_eq!(found.len(), 40);
    assert_eq!(
        found[39].name,
        "iqn.2026-11.org.iesp-test:extra-target-number-039"
    );
    assert!(found.iter().all(|t| t.addresses.len() == 1));
    target.stop().await;
}

async fn write_read_at_depth(depth: usize) {
    let target = TestTarget::start(TargetConfig::default()).await;
    let s = Session::login(target.addr(), opts()).await.unwrap();
    let lu = s.logical_unit(0).await.unwrap();
    let mut jobs = tokio::task::JoinSet::new();
    for worker in 0..depth {
        let lu = lu.clone();
        jobs.spawn(async move {
            // Each worker owns a 1 MiB region and does 8 writes of varied
            // sizes (1..=64 blocks), then reads everything back.
            let base = worker as u64 * 2048;
            let mut expected = Vec::new();
            let mut lba = base;
            for i in 0..8u64 {
                let blocks = 1 + ((worker as u64 * 7 + i * 13) % 64) as u32;
                let data =
                    Bytes::from(random_bytes(worker as u64 * 100 + i, blocks as usize * 512));
                lu.write(lba, data.clone()).await.unwrap();
                expected.push((lba, blocks, data));
                lba += u64::from(blocks);
            }
            for (lba, blocks, data) in expected {
                let back = lu.read(lba, blocks).await.unwrap();
                assert!(back == data, "worker {worker}: LBA {lba} differs");
            }
        });
    }
    while let Some(r) = jobs.join_next().await {
        r.unwrap();
    }
    let st = s.stats();
    assert_eq!((st.in_flight, st.queued), (0, 0), "{st:?}");
    s.logout().await.unwrap();
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_back_at_queue_depth_1() {
    write_read_at_depth(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_back_at_queue_depth_32() {
    write_read_at_depth(32).await;
}

/// A command window of 2 with 32 commands at once: the rest wait locally
/// for the window — no command ever goes out with a CmdSN beyond the
/// MaxCmdSN last received — and all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_beyond_the_window_wait_locally() {
    use iesp_proto::pdu::fields;
    use iesp_proto::serial;
    let mut config = TargetConfig::default();
    config.limits.command_window = 2;
    let target = TestTarget::start(config).await;
    let s = Session::login(target.addr(), opts()).await.unwrap();
    let out = s.login_outcome();
    assert_eq!(out.max_cmd_sn.wrapping_sub(out.exp_cmd_sn), 1);
    let lu = s.logical_unit(0).await.unwrap();
    // Trace from here on (opening the LU may retry a unit attention).
    s.set_trace_capacity(0);
    s.set_trace_capacity(10_000);
    let mut max_cmd_sn = s.stats().max_cmd_sn;
    let data = Bytes::from(random_bytes(9, 4096));
    lu.write(0, data.clone()).await.unwrap();
    let cdb = iesp_proto::scsi::Cdb::read(iesp_proto::scsi::CdbSize::Ten, 0, 8).encode();
    let handles: Vec<_> = (0..32)
        .map(|_| s.submit(Lun(0), &cdb, Bytes::new(), 4096).unwrap())
        .collect();
    for h in handles {
        let r = h.wait_timeout(T).await.unwrap();
        assert!(r.is_good() && r.data == data);
    }
    assert_eq!(s.stats().queued, 0);
    let mut commands = 0;
    for e in s.trace().entries() {
        let TraceEvent::Pdu { bhs, .. } = &e.event else {
            continue;
        };
        if bhs.opcode() == Opcode::SCSI_COMMAND {
            commands += 1;
            let cmd_sn = bhs.u32_at(24);
            assert!(
                serial::le(cmd_sn, max_cmd_sn),
                "CmdSN {cmd_sn} sent while MaxCmdSN was {max_cmd_sn}"
            );
        } else if let Some(f) = fields::lookup(bhs.opcode(), "MaxCmdSN") {
            let m = f.read(bhs) as u32;
            if serial::gt(m, max_cmd_sn) {
                max_cmd_sn = m;
            }
        }
    }
    assert_eq!(commands, 1 + 32, "the write and 32 reads");
    target.stop().await;
}

/// 1 MiB with MaxBurstLength 64 KiB: 16 R2Ts for the write, Data-In
/// sequences of 64 KiB for the read, with no unsolicited data and with
/// the first burst unsolicited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_io_spans_many_r2ts_and_data_ins() {
    let target = TestTarget::start(TargetConfig::default()).await;
    for (unsolicited, expected_r2ts) in [(false, 16usize), (true, 15)] {
        let mut o = opts();
        o.max_burst_length = 65_536;
        o.first_burst_length = 65_536;
        o.max_recv_data_segment_length = 16_384;
        o.immediate_data = unsolicited;
        o.initial_r2t = !unsolicited;
        let s = Session::login(target.addr(), o).await.unwrap();
        assert_eq!(s.params().max_burst_length, 65_536);
        let lu = s.logical_unit(0).await.unwrap();
        s.set_trace_capacity(0);
        s.set_trace_capacity(10_000);
        let data = Bytes::from(random_bytes(77, 1 << 20));
        lu.write(4096, data.clone()).await.unwrap();
        let back = lu.read(4096, 2048).await.unwrap();
        assert!(
            back == data,
            "1 MiB read back differs (unsolicited={unsolicited})"
        );
        let mut r2ts = 0;
        let mut data_ins = 0;
        for e in s.trace().entries() {
            if let TraceEvent::Pdu { bhs, .. } = &e.event {
                match bhs.opcode() {
                    Opcode::R2T => r2ts += 1,
                    Opcode::DATA_IN => data_ins += 1,
                    _ => {}
                }
            }
        }
        assert_eq!(r2ts, expected_r2ts, "R2Ts (unsolicited={unsolicited})");
        // 1 MiB in segments of our MaxRecvDataSegmentLength (16 KiB).
        assert_eq!(data_ins, 64, "Data-Ins (unsolicited={unsolicited})");
        s.logout().await.unwrap();
    }
    target.stop().await;
}

/// Manual login on a raw connection, then a NOP-Out by hand.
#[tokio::test]
async fn raw_nop_out_gets_its_echo() {
    let target = TestTarget::start(TargetConfig::default()).await;
    let mut conn = RawConnection::connect(target.addr()).await.unwrap();
    let out = login(&mut conn, &opts()).await.unwrap();
    let nop = NopOut {
        immediate: true,
        lun: Lun(0),
        itt: 0x1234,
        ttt: 0xffff_ffff,
        cmd_sn: out.cmd_sn,
        exp_stat_sn: out.exp_stat_sn,
    };
    conn.send_pdu(&Pdu::NopOut(nop), Bytes::from_static(b"are you there?"))
        .await
        .unwrap();
    let Received::Frame(f) = conn.recv(T).await else {
        panic!("no NOP-In:\n{}", conn.trace());
    };
    let Pdu::NopIn(rsp) = f.pdu() else {
        panic!("expected a NOP-In:\n{}", conn.trace());
    };
    assert_eq!(rsp.itt, 0x1234);
    assert_eq!(rsp.ttt, 0xffff_ffff);
    assert_eq!(rsp.stat_sn, out.exp_stat_sn);
    assert_eq!(&f.data[..], b"are you there?");
    assert!(conn.trace().to_string().contains("← NopIn ITT=0x1234"));
    target.stop().await;
}

#[tokio::test]
async fn nop_text_and_task_management_in_a_session() {
    let target = TestTarget::start(TargetConfig::default()).await;
    let s = Session::login(target.addr(), opts()).await.unwrap();
    assert_eq!(
        s.nop(Bytes::from_static(b"ping")).await.unwrap(),
        Bytes::from_static(b"ping")
    );
    let answer = s.text(&[KeyValue::new("SendTargets", "")]).await.unwrap();
    assert_eq!(
        answer.first(),
        Some(&KeyValue::new("TargetName", DEFAULT_IQN))
    );
    let lu = s.logical_unit(0).await.unwrap();
    // A completed task no longer exists.
    let cdb = iesp_proto::scsi::Cdb::TestUnitReady.encode();
    let h = s.submit(Lun(0), &cdb, Bytes::new(), 0).unwrap();
    let itt = h.itt();
    h.wait().await.unwrap();
    assert_eq!(
        s.task_management(TmfFunction::ABORT_TASK, Lun(0), Some(itt))
            .await
            .unwrap(),
        TmfResponse::TASK_DOES_NOT_EXIST
    );
    assert_eq!(
        s.task_management(TmfFunction::LOGICAL_UNIT_RESET, Lun(0), None)
            .await
            .unwrap(),
        TmfResponse::FUNCTION_COMPLETE
    );
    assert_eq!(
        s.task_management(TmfFunction::LOGICAL_UNIT_RESET, Lun::from_index(9), None)
            .await
            .unwrap(),
        TmfResponse::LUN_DOES_NOT_EXIST
    );
    // The session is still usable (a unit attention may follow the reset).
    let mut ok = false;
    for _ in 0..3 {
        if lu.test_unit_ready().await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "TEST UNIT READY keeps failing after LUN RESET");
    let logout = s.logout().await.unwrap();
    assert_eq!(
        logout.response,
        iesp_proto::pdu::LogoutResponseCode::SUCCESS
    );
    target.stop().await;
}

#[tokio::test]
async fn check_condition_sense_is_readable() {
    let target = TestTarget::start(TargetConfig::default()).await;
    let s = Session::login(target.addr(), opts()).await.unwrap();
    let lu = s.logical_unit(0).await.unwrap();
    let err = lu.read(lu.blocks(), 1).await.unwrap_err();
    let sense = err.sense().expect("sense data").clone();
    assert_eq!(sense.key, SenseKey::ILLEGAL_REQUEST);
    assert_eq!(sense.asc, Asc(0x2100));
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "READ(10) at LBA {}, 1 blocks: CHECK CONDITION: ",
            lu.blocks()
        )),
        "{text}"
    );
    assert!(text.contains("ILLEGAL REQUEST"), "{text}");
    // Writes must be whole blocks.
    assert!(lu.write(0, Bytes::from_static(b"short")).await.is_err());
    target.stop().await;
}

#[tokio::test]
async fn login_by_url_and_refusal_of_unknown_target() {
    let target = TestTarget::start(TargetConfig::default()).await;
    let url: IscsiUrl = format!("iscsi://{}/{DEFAULT_IQN}/0", target.addr())
        .parse()
        .unwrap();
    let s = Session::login_url(&url, INITIATOR).await.unwrap();
    let lu = s.logical_unit(url.lun().unwrap()).await.unwrap();
    assert_eq!(lu.capacity(), 64 << 20);
    let inq = lu.inquiry().await.unwrap();
    assert_eq!(
        inq.peripheral.device_type,
        iesp_proto::scsi::PeripheralDeviceType::DIRECT_ACCESS
    );
    s.logout().await.unwrap();
    let mut o = opts();
    o.target_name = Some("iqn.2026-11.org.iesp-test:nobody".to_owned());
    let err = Session::login(target.addr(), o).await.unwrap_err();
    assert!(
        matches!(err, iesp_initiator::LoginError::Refused(st) if st == iesp_proto::pdu::LoginStatus::NOT_FOUND),
        "{err}"
    );
    target.stop().await;
}

/// The target going away fails the session; later requests fail at once.
#[tokio::test]
async fn target_shutdown_closes_the_session() {
    let target = TestTarget::start(TargetConfig::default()).await;
    let s = Session::login(target.addr(), opts()).await.unwrap();
    s.nop(Bytes::new()).await.unwrap();
    target.stop().await;
    let t0 = std::time::Instant::now();
    while !s.is_closed() {
        assert!(t0.elapsed() < T, "the session did not notice the close");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(
        s.nop(Bytes::new()).await,
        Err(CommandError::Closed(_))
    ));
    // The target said why before closing (RFC 7143 §11.9.1, event 2).
    let events = s.events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            iesp_initiator::SessionEvent::Async(m, _)
                if m.event == iesp_proto::pdu::AsyncEvent::CONNECTION_DROP
        )),
        "{events:?}"
    );
}

/// The discovery login on a raw connection, with what the login noticed.
#[tokio::test]
async fn discovery_login_by_hand() {
    let target = TestTarget::start(TargetConfig::default()).await;
    let mut conn = RawConnection::connect(target.addr()).await.unwrap();
    let out = login(&mut conn, &LoginOptions::discovery(INITIATOR))
        .await
        .unwrap();
    assert_eq!(
        out.params.session_type,
        iesp_proto::negotiation::SessionType::Discovery
    );
    // RFC 7143 §11.13.4: every new session, discovery included, gets a
    // TSIH in the final Login Response; the login must raise no warning.
    assert!(out.tsih != 0, "discovery session without a TSIH");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let mut seq = discovery::Sequence::from(&out);
    let found = discovery::send_targets(&mut conn, &mut seq, "All", T)
        .await
        .unwrap();
    assert_eq!(found[0].name, DEFAULT_IQN);
    let bye = discovery::logout(&mut conn, &mut seq, T).await.unwrap();
    assert_eq!(bye.response, iesp_proto::pdu::LogoutResponseCode::SUCCESS);
    assert!(matches!(conn.recv(T).await, Received::Closed));
    target.stop().await;
}

/// A Text Request longer than the target's MaxRecvDataSegmentLength goes
/// in parts (C=1), each continuation echoing the TTT of the target's
/// acknowledgement (RFC 7143 §11.10.4). (The reference target used to
/// reject the second part with Reject 0x09; `tests/fake.rs` checks the
/// initiator side of this exchange against a scripted target.)
#[tokio::test]
async fn long_text_request_in_parts() {
    let mut config = TargetConfig::default();
    config.limits.max_recv_data_segment_length = 512;
    let target = TestTarget::start(config).await;
    let s = Session::login(target.addr(), opts()).await.unwrap();
    assert_eq!(s.params().target_mrdsl, 512);
    let keys: Vec<KeyValue> = (0..4)
        .map(|i| KeyValue::new(format!("X-test-{i}"), "v".repeat(200)))
        .collect();
    let answer = s.text(&keys).await.unwrap();
    let names: Vec<&str> = answer.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(names, ["X-test-0", "X-test-1", "X-test-2", "X-test-3"]);
    assert!(answer.iter().all(|kv| kv.value == "NotUnderstood"));
    target.stop().await;
}
