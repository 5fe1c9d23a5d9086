//! Transcript tests of the full feature phase core: request PDUs are
//! encoded with `iesp_proto` into bytes, fed to [`FullFeature::receive`],
//! and everything the core queued is decoded back into typed PDUs and
//! compared whole. No sockets, no runtime, no clock: time is an `Instant`
//! the test moves by hand.
//!
//! Every session starts at StatSN 100, ExpCmdSN 10, a command window of 16
//! (MaxCmdSN = ExpCmdSN + 15) and one 1 MiB RAM LUN of 512-byte blocks. A
//! normal session's fixture first clears the LUN's power-on unit attention
//! with an immediate TEST UNIT READY (which uses StatSN 99 and no CmdSN).

use super::*;
use crate::conn::output::Piece;
use iesp_proto::negotiation::{Limits, Role};
use iesp_proto::pdu::{
    AsyncMessage, DataIn, DataOut, Isid, LogoutReason, LogoutRequest, LogoutResponse,
    LogoutResponseCode, NopIn, NopOut, R2t, Residual, ScsiCommand, ScsiResponse, ScsiResponseCode,
    TaskAttr, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse, TmfFunction,
    TmfResponse,
};
use iesp_proto::scsi::ScsiStatus;
use pretty_assertions::assert_eq;

use crate::backend::RamBackend;
use crate::scsi::LogicalUnit;

const STAT_SN: u32 = 100;
const CMD_SN: u32 = 10;
const WINDOW: u32 = 16;
const TARGET: &str = "iqn.2026-11.org.iesp-test:target0";

/// One connection's core and the initiator's view of the sequence numbers.
struct Conn {
    ffp: FullFeature,
    cfg: FrameConfig,
    t0: Instant,
    /// Bytes received but not yet a whole PDU, as a driver keeps them.
    rbuf: BytesMut,
}

fn params() -> FfpParams {
    FfpParams {
        initiator_mrdsl: 65_536,
        target_mrdsl: 65_536,
        max_burst_length: 262_144,
        first_burst_length: 65_536,
        max_outstanding_r2t: 1,
        initial_r2t: false,
        immediate_data: true,
    }
}

fn conn_with(
    params: FfpParams,
    kind: SessionKind,
    frame: FrameConfig,
    keepalive: Option<KeepAlive>,
) -> Conn {
    let lu = LogicalUnit::new(
        Box::new(RamBackend::new(1 << 20)),
        512,
        false,
        "TRANSCR1".into(),
    );
    let nexus = Nexus {
        initiator_name: "iqn.2026-11.org.iesp-test:transcript".into(),
        isid: Isid([0x80, 0, 0, 0, 0, 1]),
        target_name: TARGET.into(),
        portal_group_tag: 1,
        session_id: 1,
    };
    let t0 = Instant::now();
    let setup = FfpSetup {
        params,
        neg: Negotiator::new(Role::Target, Limits::default()),
        kind,
        nexus,
        luns: Arc::new(LunTable::new(vec![Arc::new(lu)])),
        discovery: vec![
            DiscoveryEntry {
                target_name: TARGET.into(),
                addresses: vec!["127.0.0.1:3260,1".into()],
            },
            DiscoveryEntry {
                target_name: "iqn.2026-11.org.iesp-test:other".into(),
                addresses: vec!["[::1]:3261,2".into()],
            },
        ],
        cid: 7,
        frame,
        stat_sn: if kind == SessionKind::Normal {
            STAT_SN - 1
        } else {
            STAT_SN
        },
        exp_cmd_sn: CMD_SN,
        command_window: WINDOW,
        keepalive,
    };
    let mut c = Conn {
        ffp: FullFeature::new(setup, t0),
        cfg: frame,
        t0,
        rbuf: BytesMut::new(),
    };
    if kind == SessionKind::Normal {
        let tur = Pdu::ScsiCommand(ScsiCommand {
            immediate: true,
            itt: 0x7777,
            cmd_sn: CMD_SN,
            ..ScsiCommand::default()
        });
        c.send(&[(tur, b"")]).expect("TEST UNIT READY");
        let out = c.recv();
        let [(Pdu::ScsiResponse(rsp), sense)] = &out[..] else {
            panic!("expected one SCSI Response, got {out:?}");
        };
        assert_eq!((rsp.stat_sn, rsp.exp_cmd_sn), (STAT_SN - 1, CMD_SN));
        assert_eq!(rsp.status, ScsiStatus::CHECK_CONDITION.0);
        let sense = pdu::scsi::decode_sense_segment(sense)
            .expect("sense segment")
            .expect("sense data");
        // UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
        assert_eq!((sense[2] & 0x0f, sense[12]), (0x06, 0x29));
    }
    c
}

fn conn(params: FfpParams) -> Conn {
    let frame = FrameConfig {
        header_digest: false,
        data_digest: false,
        max_data_segment: params.target_mrdsl,
    };
    conn_with(params, SessionKind::Normal, frame, None)
}

impl Conn {
    /// Encodes `pdus` into one byte stream and feeds it in at t0.
    fn send(&mut self, pdus: &[(Pdu, &[u8])]) -> Result<After, Fatal> {
        let mut bytes = BytesMut::new();
        for (pdu, data) in pdus {
            let frame = Frame::with_data(pdu, Bytes::copy_from_slice(data));
            framing::encode(&self.cfg, &frame, &mut bytes);
        }
        self.send_bytes(&bytes)
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> Result<After, Fatal> {
        self.rbuf.extend_from_slice(bytes);
        self.ffp.receive(&mut self.rbuf, self.t0)
    }

    /// Decodes everything the core queued since the last call.
    fn recv(&mut self) -> Vec<(Pdu, Bytes)> {
        let mut bytes = BytesMut::new();
        for piece in self.ffp.outbox().take() {
            match piece {
                Piece::Bytes(b) => bytes.extend_from_slice(&b),
                Piece::File(f) => bytes.extend_from_slice(&f.to_bytes().expect("read back")),
            }
        }
        let mut pdus = Vec::new();
        while let Some(frame) =
            framing::decode(&self.cfg, &mut bytes).expect("target output frames")
        {
            pdus.push((frame.pdu(), frame.data));
        }
        assert!(bytes.is_empty(), "trailing bytes in the target's output");
        pdus
    }
}

fn max_cmd_sn(exp: u32) -> u32 {
    exp + WINDOW - 1
}

fn nop_out(itt: u32, cmd_sn: u32) -> Pdu {
    Pdu::NopOut(NopOut {
        immediate: false,
        lun: Lun(0),
        itt,
        ttt: RESERVED_TAG,
        cmd_sn,
        exp_stat_sn: STAT_SN,
    })
}

fn nop_in(itt: u32, stat_sn: u32, exp_cmd_sn: u32) -> Pdu {
    Pdu::NopIn(NopIn {
        lun: Lun(0),
        itt,
        ttt: RESERVED_TAG,
        stat_sn,
        exp_cmd_sn,
        max_cmd_sn: max_cmd_sn(exp_cmd_sn),
    })
}

/// A READ(10) or WRITE(10) of `blocks` blocks at `lba`.
fn rw10(write: bool, itt: u32, cmd_sn: u32, lba: u32, blocks: u16, final_bit: bool) -> Pdu {
    let mut cdb = [0u8; 16];
    cdb[0] = if write { 0x2a } else { 0x28 };
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_bit,
        read: !write,
        write,
        attr: TaskAttr::SIMPLE,
        lun: Lun(0),
        itt,
        expected_data_transfer_length: u32::from(blocks) * 512,
        cmd_sn,
        exp_stat_sn: STAT_SN,
        cdb,
    })
}

fn data_out(itt: u32, ttt: u32, data_sn: u32, offset: u32, final_bit: bool) -> Pdu {
    Pdu::DataOut(DataOut {
        final_bit,
        lun: Lun(0),
        itt,
        ttt,
        exp_stat_sn: STAT_SN,
        data_sn,
        buffer_offset: offset,
    })
}

fn good(itt: u32, stat_sn: u32, exp_cmd_sn: u32, exp_data_sn: u32) -> Pdu {
    Pdu::ScsiResponse(ScsiResponse {
        itt,
        response: ScsiResponseCode::COMMAND_COMPLETED,
        status: ScsiStatus::GOOD.0,
        residual: Residual::None,
        bidi_residual: Residual::None,
        snack_tag: 0,
        stat_sn,
        exp_cmd_sn,
        max_cmd_sn: max_cmd_sn(exp_cmd_sn),
        exp_data_sn,
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn reject(reason: RejectReason, stat_sn: u32, exp_cmd_sn: u32) -> Pdu {
    Pdu::Reject(Reject {
        reason,
        stat_sn,
        exp_cmd_sn,
        max_cmd_sn: max_cmd_sn(exp_cmd_sn),
        data_sn: 0,
    })
}

#[test]
fn nop_out_ping_is_echoed_with_its_data_and_the_next_sequence_numbers() {
    let mut c = conn(params());
    assert_eq!(
        c.send(&[(nop_out(1, CMD_SN), b"ping data")]),
        Ok(After::Continue)
    );
    assert_eq!(
        c.recv(),
        vec![(
            nop_in(1, STAT_SN, CMD_SN + 1),
            Bytes::from_static(b"ping data")
        )]
    );
    // A second one: StatSN and ExpCmdSN both move by one.
    c.send(&[(nop_out(2, CMD_SN + 1), b"")]).expect("nop");
    assert_eq!(
        c.recv(),
        vec![(nop_in(2, STAT_SN + 1, CMD_SN + 2), Bytes::new())]
    );
}

#[test]
fn a_pdu_split_across_reads_is_handled_once_whole() {
    let mut c = conn(params());
    let mut bytes = BytesMut::new();
    let frame = Frame::with_data(&nop_out(1, CMD_SN), Bytes::from_static(b"abc"));
    framing::encode(&c.cfg, &frame, &mut bytes);
    let (head, tail) = bytes.split_at(30);
    c.send_bytes(head).expect("first part");
    assert_eq!(c.recv(), vec![]);
    c.send_bytes(tail).expect("second part");
    assert_eq!(
        c.recv(),
        vec![(nop_in(1, STAT_SN, CMD_SN + 1), Bytes::from_static(b"abc"))]
    );
}

#[test]
fn read10_comes_back_in_data_ins_split_at_mrdsl_with_status_in_the_last() {
    let mut c = conn(FfpParams {
        initiator_mrdsl: 4096,
        ..params()
    });
    // Write 16 blocks with immediate data first, so the read has content.
    let data = pattern(8192, 7);
    c.send(&[(rw10(true, 1, CMD_SN, 8, 16, true), &data)])
        .expect("write");
    assert_eq!(
        c.recv(),
        vec![(good(1, STAT_SN, CMD_SN + 1, 0), Bytes::new())]
    );

    c.send(&[(rw10(false, 2, CMD_SN + 1, 8, 16, true), b"")])
        .expect("read");
    let din = |final_bit, status, stat_sn, data_sn, offset| {
        Pdu::DataIn(DataIn {
            final_bit,
            acknowledge: false,
            status,
            residual: Residual::None,
            lun: Lun(0),
            itt: 2,
            ttt: RESERVED_TAG,
            stat_sn,
            exp_cmd_sn: CMD_SN + 2,
            max_cmd_sn: max_cmd_sn(CMD_SN + 2),
            data_sn,
            buffer_offset: offset,
        })
    };
    assert_eq!(
        c.recv(),
        vec![
            // StatSN is only consumed by the PDU that carries status.
            (
                din(false, None, STAT_SN + 1, 0, 0),
                Bytes::copy_from_slice(&data[..4096])
            ),
            (
                din(true, Some(ScsiStatus::GOOD.0), STAT_SN + 1, 1, 4096),
                Bytes::copy_from_slice(&data[4096..])
            ),
        ]
    );
}

#[test]
fn write_with_initial_r2t_is_solicited_burst_by_burst_then_answered_good() {
    let mut c = conn(FfpParams {
        initial_r2t: true,
        immediate_data: false,
        max_burst_length: 4096,
        ..params()
    });
    let data = pattern(8192, 3);
    c.send(&[(rw10(true, 5, CMD_SN, 0, 16, true), b"")])
        .expect("write");
    let r2t = |ttt, r2t_sn, offset| {
        Pdu::R2t(R2t {
            lun: Lun(0),
            itt: 5,
            ttt,
            stat_sn: STAT_SN,
            exp_cmd_sn: CMD_SN + 1,
            max_cmd_sn: max_cmd_sn(CMD_SN + 1),
            r2t_sn,
            buffer_offset: offset,
            desired_data_transfer_length: 4096,
        })
    };
    // MaxOutstandingR2T = 1: one burst at a time.
    assert_eq!(c.recv(), vec![(r2t(1, 0, 0), Bytes::new())]);
    c.send(&[(data_out(5, 1, 0, 0, true), &data[..4096])])
        .expect("first burst");
    assert_eq!(c.recv(), vec![(r2t(2, 1, 4096), Bytes::new())]);
    c.send(&[(data_out(5, 2, 0, 4096, true), &data[4096..])])
        .expect("second burst");
    // ExpDataSN of a write: the number of R2Ts (§11.4.8).
    assert_eq!(
        c.recv(),
        vec![(good(5, STAT_SN, CMD_SN + 1, 2), Bytes::new())]
    );
    assert_eq!(c.ffp.pending_tasks(), 0);

    // The data landed on the LUN.
    c.send(&[(rw10(false, 6, CMD_SN + 1, 0, 16, true), b"")])
        .expect("read back");
    let got: Vec<u8> = c
        .recv()
        .iter()
        .flat_map(|(_, d)| d.iter().copied())
        .collect();
    assert_eq!(got, data);
}

#[test]
fn a_data_out_with_a_wrong_offset_fails_the_task_with_check_condition() {
    let mut c = conn(FfpParams {
        initial_r2t: true,
        immediate_data: false,
        ..params()
    });
    c.send(&[(rw10(true, 5, CMD_SN, 0, 2, true), b"")])
        .expect("write");
    assert_eq!(c.recv().len(), 1, "one R2T");
    c.send(&[(data_out(5, 1, 0, 512, true), &[0u8; 512])])
        .expect("data-out");
    let out = c.recv();
    let [(Pdu::ScsiResponse(rsp), sense)] = &out[..] else {
        panic!("expected one SCSI Response, got {out:?}");
    };
    assert_eq!(rsp.status, ScsiStatus::CHECK_CONDITION.0);
    let sense = pdu::scsi::decode_sense_segment(sense)
        .expect("sense segment")
        .expect("sense data");
    // ABORTED COMMAND, DATA OFFSET ERROR (4Bh/05h).
    assert_eq!((sense[2] & 0x0f, sense[12], sense[13]), (0x0b, 0x4b, 0x05));
}

#[test]
fn cmd_sn_outside_the_window_is_ignored_and_early_ones_wait_their_turn() {
    let mut c = conn(params());
    // Past MaxCmdSN, and already consumed: silently ignored (§3.2.2.1).
    c.send(&[
        (nop_out(1, max_cmd_sn(CMD_SN) + 1), b""),
        (nop_out(2, CMD_SN - 1), b""),
    ])
    .expect("out of window");
    assert_eq!(c.recv(), vec![]);
    // Inside the window but early: held until CmdSN 10 arrives.
    c.send(&[(nop_out(4, CMD_SN + 1), b"")]).expect("early");
    assert_eq!(c.recv(), vec![]);
    c.send(&[(nop_out(3, CMD_SN), b"")]).expect("in order");
    assert_eq!(
        c.recv(),
        vec![
            (nop_in(3, STAT_SN, CMD_SN + 1), Bytes::new()),
            (nop_in(4, STAT_SN + 1, CMD_SN + 2), Bytes::new()),
        ]
    );
}

#[test]
fn unknown_and_target_opcodes_are_rejected_carrying_the_header_back() {
    let mut c = conn(params());
    let mut unknown = Bhs::new(Opcode(0x1c));
    unknown.set_immediate(true);
    unknown.set_itt(9);
    let from_target = Pdu::NopIn(NopIn {
        lun: Lun(0),
        itt: 10,
        ttt: RESERVED_TAG,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
    });
    c.send(&[(Pdu::Unknown(unknown), b""), (from_target.clone(), b"")])
        .expect("rejects");
    assert_eq!(
        c.recv(),
        vec![
            (
                reject(RejectReason::COMMAND_NOT_SUPPORTED, STAT_SN, CMD_SN),
                Bytes::copy_from_slice(unknown.as_bytes())
            ),
            (
                reject(RejectReason::PROTOCOL_ERROR, STAT_SN + 1, CMD_SN),
                Bytes::copy_from_slice(from_target.encode().as_bytes())
            ),
        ]
    );
}

fn text_request(itt: u32, cmd_sn: u32) -> Pdu {
    Pdu::TextRequest(TextRequest {
        immediate: false,
        final_bit: true,
        continue_bit: false,
        lun: Lun(0),
        itt,
        ttt: RESERVED_TAG,
        cmd_sn,
        exp_stat_sn: STAT_SN,
    })
}

fn text_response(itt: u32, stat_sn: u32, exp_cmd_sn: u32) -> Pdu {
    Pdu::TextResponse(TextResponse {
        final_bit: true,
        continue_bit: false,
        lun: Lun(0),
        itt,
        ttt: RESERVED_TAG,
        stat_sn,
        exp_cmd_sn,
        max_cmd_sn: max_cmd_sn(exp_cmd_sn),
    })
}

#[test]
fn send_targets_on_a_normal_session_lists_all_or_the_sessions_own_target() {
    let mut c = conn(params());
    c.send(&[(text_request(1, CMD_SN), b"SendTargets=All\0")])
        .expect("All");
    let all = b"TargetName=iqn.2026-11.org.iesp-test:target0\0TargetAddress=127.0.0.1:3260,1\0\
TargetName=iqn.2026-11.org.iesp-test:other\0TargetAddress=[::1]:3261,2\0";
    assert_eq!(
        c.recv(),
        vec![(
            text_response(1, STAT_SN, CMD_SN + 1),
            Bytes::from_static(all)
        )]
    );
    c.send(&[(text_request(2, CMD_SN + 1), b"SendTargets=\0")])
        .expect("own");
    let own = b"TargetName=iqn.2026-11.org.iesp-test:target0\0TargetAddress=127.0.0.1:3260,1\0";
    assert_eq!(
        c.recv(),
        vec![(
            text_response(2, STAT_SN + 1, CMD_SN + 2),
            Bytes::from_static(own)
        )]
    );
}

#[test]
fn a_long_text_answer_is_split_with_the_continue_bit_at_mrdsl() {
    // An (illegally small) receive limit of 100 bytes splits the 146-byte
    // SendTargets=All answer in two (§11.11.2).
    let mut c = conn(FfpParams {
        initiator_mrdsl: 100,
        ..params()
    });
    c.send(&[(text_request(1, CMD_SN), b"SendTargets=All\0")])
        .expect("All");
    let out = c.recv();
    let [(Pdu::TextResponse(first), head)] = &out[..] else {
        panic!("expected one Text Response, got {out:?}");
    };
    assert_eq!((first.final_bit, first.continue_bit), (false, true));
    assert_ne!(first.ttt, RESERVED_TAG);
    assert_eq!(head.len(), 100);
    // The initiator asks for the rest with the TTT and an empty request.
    let more = Pdu::TextRequest(TextRequest {
        ttt: first.ttt,
        cmd_sn: CMD_SN + 1,
        ..match text_request(1, CMD_SN + 1) {
            Pdu::TextRequest(r) => r,
            _ => unreachable!(),
        }
    });
    c.send(&[(more, b"")]).expect("rest");
    let out = c.recv();
    let [(Pdu::TextResponse(last), tail)] = &out[..] else {
        panic!("expected one Text Response, got {out:?}");
    };
    assert_eq!(
        (last.final_bit, last.continue_bit, last.ttt, last.stat_sn),
        (true, false, RESERVED_TAG, STAT_SN + 1)
    );
    let whole = [&head[..], &tail[..]].concat();
    assert!(whole.starts_with(b"TargetName=iqn.2026-11.org.iesp-test:target0\0"));
    assert!(whole.ends_with(b"TargetAddress=[::1]:3261,2\0"));
}

#[test]
fn logout_closes_the_session_and_is_answered_with_success() {
    let mut c = conn(params());
    let logout = Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason: LogoutReason::CLOSE_SESSION,
        itt: 3,
        cid: 7,
        cmd_sn: CMD_SN,
        exp_stat_sn: STAT_SN,
    });
    assert_eq!(c.send(&[(logout, b"")]), Ok(After::Close));
    assert!(c.ffp.logged_out());
    assert_eq!(
        c.recv(),
        vec![(
            Pdu::LogoutResponse(LogoutResponse {
                response: LogoutResponseCode::SUCCESS,
                itt: 3,
                stat_sn: STAT_SN,
                // Immediate: ExpCmdSN does not move.
                exp_cmd_sn: CMD_SN,
                max_cmd_sn: max_cmd_sn(CMD_SN),
                time2wait: 0,
                time2retain: 0,
            }),
            Bytes::new()
        )]
    );
}

#[test]
fn logout_of_another_connection_is_cid_not_found_and_keeps_the_session() {
    let mut c = conn(params());
    let logout = Pdu::LogoutRequest(LogoutRequest {
        immediate: false,
        reason: LogoutReason::CLOSE_CONNECTION,
        itt: 3,
        cid: 8,
        cmd_sn: CMD_SN,
        exp_stat_sn: STAT_SN,
    });
    assert_eq!(c.send(&[(logout, b"")]), Ok(After::Continue));
    assert!(!c.ffp.logged_out());
    let out = c.recv();
    let [(Pdu::LogoutResponse(rsp), _)] = &out[..] else {
        panic!("expected a Logout Response, got {out:?}");
    };
    assert_eq!(rsp.response, LogoutResponseCode::CID_NOT_FOUND);
}

fn tmf(function: TmfFunction, itt: u32, referenced: u32, cmd_sn: u32, ref_cmd_sn: u32) -> Pdu {
    Pdu::TaskMgmtRequest(TaskMgmtRequest {
        immediate: true,
        function,
        lun: Lun(0),
        itt,
        referenced_task_tag: referenced,
        cmd_sn,
        exp_stat_sn: STAT_SN,
        ref_cmd_sn,
        exp_data_sn: 0,
    })
}

#[test]
fn abort_task_of_a_write_waiting_for_data_completes_and_later_data_is_dropped() {
    let mut c = conn(FfpParams {
        initial_r2t: true,
        immediate_data: false,
        ..params()
    });
    c.send(&[(rw10(true, 5, CMD_SN, 0, 2, true), b"")])
        .expect("write");
    assert_eq!(c.recv().len(), 1, "one R2T");
    assert_eq!(c.ffp.pending_tasks(), 1);
    c.send(&[(tmf(TmfFunction::ABORT_TASK, 6, 5, CMD_SN + 1, CMD_SN), b"")])
        .expect("abort");
    let rsp = |response, itt, stat_sn| {
        Pdu::TaskMgmtResponse(TaskMgmtResponse {
            response,
            itt,
            stat_sn,
            exp_cmd_sn: CMD_SN + 1,
            max_cmd_sn: max_cmd_sn(CMD_SN + 1),
        })
    };
    // The aborted task gets no response of its own (§11.5.1).
    assert_eq!(
        c.recv(),
        vec![(
            rsp(TmfResponse::FUNCTION_COMPLETE, 6, STAT_SN),
            Bytes::new()
        )]
    );
    assert_eq!(c.ffp.pending_tasks(), 0);
    c.send(&[(data_out(5, 1, 0, 0, true), &[0u8; 1024])])
        .expect("late data");
    assert_eq!(c.recv(), vec![]);
    // A task that never existed.
    c.send(&[(
        tmf(TmfFunction::ABORT_TASK, 7, 99, CMD_SN + 1, CMD_SN - 5),
        b"",
    )])
    .expect("abort unknown");
    assert_eq!(
        c.recv(),
        vec![(
            rsp(TmfResponse::TASK_DOES_NOT_EXIST, 7, STAT_SN + 1),
            Bytes::new()
        )]
    );
}

#[test]
fn abort_task_of_a_command_never_received_unblocks_the_window() {
    let mut c = conn(params());
    // CmdSN 11 waits for 10, which the initiator then aborts (§11.5.1).
    c.send(&[(nop_out(2, CMD_SN + 1), b"")]).expect("early");
    assert_eq!(c.recv(), vec![]);
    c.send(&[(tmf(TmfFunction::ABORT_TASK, 6, 1, CMD_SN + 2, CMD_SN), b"")])
        .expect("abort");
    let out = c.recv();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], (nop_in(2, STAT_SN, CMD_SN + 2), Bytes::new()));
    let Pdu::TaskMgmtResponse(rsp) = &out[1].0 else {
        panic!("expected a TMF response, got {out:?}");
    };
    assert_eq!(rsp.response, TmfResponse::FUNCTION_COMPLETE);
}

#[test]
fn discovery_sessions_reject_scsi_commands() {
    let frame = FrameConfig {
        max_data_segment: 8192,
        ..FrameConfig::default()
    };
    let mut c = conn_with(params(), SessionKind::Discovery, frame, None);
    let read = rw10(false, 1, CMD_SN, 0, 1, true);
    c.send(&[(read.clone(), b"")]).expect("read");
    assert_eq!(
        c.recv(),
        vec![(
            reject(RejectReason::PROTOCOL_ERROR, STAT_SN, CMD_SN + 1),
            Bytes::copy_from_slice(read.encode().as_bytes())
        )]
    );
}

#[test]
fn keepalive_pings_after_silence_and_closes_when_the_ping_goes_unanswered() {
    let frame = FrameConfig {
        max_data_segment: 8192,
        ..FrameConfig::default()
    };
    let k = KeepAlive {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
    };
    let mut c = conn_with(params(), SessionKind::Normal, frame, Some(k));
    let t0 = c.t0;
    assert_eq!(c.ffp.poll_timeout(), Some(t0 + k.interval));
    // Early: nothing to do.
    assert_eq!(
        c.ffp.handle_timeout(t0 + Duration::from_secs(4)),
        After::Continue
    );
    assert_eq!(c.recv(), vec![]);
    // Silence for the interval: a NOP-In that asks for an answer.
    let t1 = t0 + k.interval;
    assert_eq!(c.ffp.handle_timeout(t1), After::Continue);
    let ping = Pdu::NopIn(NopIn {
        lun: Lun(0),
        itt: RESERVED_TAG,
        ttt: 1,
        stat_sn: STAT_SN,
        exp_cmd_sn: CMD_SN,
        max_cmd_sn: max_cmd_sn(CMD_SN),
    });
    assert_eq!(c.recv(), vec![(ping, Bytes::new())]);
    assert!(c.ffp.ping_outstanding());
    assert_eq!(c.ffp.poll_timeout(), Some(t1 + k.timeout));
    // The answer: NOP-Out with the ping's TTT and the reserved ITT.
    let answer = Pdu::NopOut(NopOut {
        immediate: true,
        lun: Lun(0),
        itt: RESERVED_TAG,
        ttt: 1,
        cmd_sn: CMD_SN,
        exp_stat_sn: STAT_SN,
    });
    let mut bytes = BytesMut::new();
    framing::encode(&c.cfg, &Frame::new(&answer), &mut bytes);
    let t2 = t1 + Duration::from_secs(1);
    c.rbuf.extend_from_slice(&bytes);
    assert_eq!(c.ffp.receive(&mut c.rbuf, t2), Ok(After::Continue));
    assert!(!c.ffp.ping_outstanding());
    assert_eq!(c.recv(), vec![], "an answer to a ping is not answered");
    // The old deadline fires harmlessly; the next is counted from t2.
    assert_eq!(c.ffp.handle_timeout(t1 + k.timeout), After::Continue);
    assert_eq!(c.ffp.poll_timeout(), Some(t2 + k.interval));
    // Silence again: a ping, then no answer within the timeout: close.
    let t3 = t2 + k.interval;
    assert_eq!(c.ffp.handle_timeout(t3), After::Continue);
    assert_eq!(c.recv().len(), 1, "second ping");
    assert_eq!(
        c.ffp
            .handle_timeout(t3 + k.timeout - Duration::from_millis(1)),
        After::Continue
    );
    assert_eq!(c.ffp.handle_timeout(t3 + k.timeout), After::Close);
}

#[test]
fn without_keepalive_there_is_no_deadline() {
    let mut c = conn(params());
    assert_eq!(c.ffp.poll_timeout(), None);
    assert_eq!(
        c.ffp.handle_timeout(c.t0 + Duration::from_secs(86_400)),
        After::Continue
    );
    assert_eq!(c.recv(), vec![]);
}

#[test]
fn digests_a_bad_data_digest_is_rejected_and_a_bad_header_digest_is_fatal() {
    let frame = FrameConfig {
        header_digest: true,
        data_digest: true,
        max_data_segment: 8192,
    };
    let mut c = conn_with(params(), SessionKind::Normal, frame, None);
    let mut bytes = BytesMut::new();
    let nop = nop_out(1, CMD_SN);
    framing::encode(
        &frame,
        &Frame::with_data(&nop, Bytes::from_static(b"abcd")),
        &mut bytes,
    );
    // BHS 48 + header digest 4, then the data: corrupt its first byte.
    bytes[52] ^= 0xff;
    assert_eq!(c.send_bytes(&bytes), Ok(After::Continue));
    let out = c.recv();
    let [(Pdu::Reject(rej), header)] = &out[..] else {
        panic!("expected a Reject, got {out:?}");
    };
    assert_eq!(rej.reason, RejectReason::DATA_DIGEST_ERROR);
    assert_eq!(&header[..], &nop_with_len(&nop, 4)[..]);

    let mut bytes = BytesMut::new();
    framing::encode(&frame, &Frame::new(&nop_out(2, CMD_SN)), &mut bytes);
    bytes[10] ^= 0x01;
    assert!(matches!(c.send_bytes(&bytes), Err(Fatal::Protocol(_))));
}

fn nop_with_len(pdu: &Pdu, len: u32) -> Vec<u8> {
    let mut bhs = pdu.encode();
    bhs.set_data_segment_len(len);
    bhs.as_bytes().to_vec()
}

#[test]
fn shutdown_fails_writes_waiting_for_data_and_announces_the_drop() {
    let mut c = conn(FfpParams {
        initial_r2t: true,
        immediate_data: false,
        ..params()
    });
    c.send(&[(rw10(true, 5, CMD_SN, 0, 2, true), b"")])
        .expect("write");
    assert_eq!(c.recv().len(), 1, "one R2T");
    c.ffp.shutdown();
    let out = c.recv();
    let [(Pdu::ScsiResponse(rsp), sense), (Pdu::AsyncMessage(msg), _)] = &out[..] else {
        panic!("expected a SCSI Response and an Async Message, got {out:?}");
    };
    assert_eq!((rsp.itt, rsp.status), (5, ScsiStatus::CHECK_CONDITION.0));
    let sense = pdu::scsi::decode_sense_segment(sense)
        .expect("sense segment")
        .expect("sense data");
    assert_eq!((sense[2] & 0x0f, sense[12], sense[13]), (0x02, 0x04, 0x12));
    assert_eq!(
        msg,
        &AsyncMessage {
            lun: Lun(0),
            stat_sn: STAT_SN + 1,
            exp_cmd_sn: CMD_SN + 1,
            max_cmd_sn: max_cmd_sn(CMD_SN + 1),
            event: pdu::AsyncEvent::CONNECTION_DROP,
            vcode: 0,
            parameter1: 0,
            parameter2: 2,
            parameter3: 0,
        }
    );
}
