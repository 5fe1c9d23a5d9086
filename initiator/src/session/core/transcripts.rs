//! Transcripts of the core alone: requests and PDUs in, PDUs and
//! completions out; no socket, no runtime, time passed in by hand.

use super::*;
use iesp_proto::framing;
use iesp_proto::negotiation::SessionParams;
use iesp_proto::pdu::Isid;
use pretty_assertions::assert_eq;

fn outcome(params: SessionParams, cmd_sn: u32, max_cmd_sn: u32) -> LoginOutcome {
    LoginOutcome {
        params,
        isid: Isid::default(),
        tsih: 1,
        cid: 0,
        cmd_sn,
        exp_stat_sn: 100,
        exp_cmd_sn: cmd_sn,
        max_cmd_sn,
        target_alias: None,
        target_portal_group_tag: None,
        declared: Vec::new(),
        auth_method: "None".to_owned(),
        warnings: Vec::new(),
        negotiation_warnings: Vec::new(),
        exchanges: 1,
    }
}

/// A core with CmdSN 10 and a window of `window` commands; tokens are
/// numbers the tests pick.
fn core_at(
    params: SessionParams,
    window: u32,
    ka: Option<KeepAlive>,
    now: Instant,
) -> SessionCore<u32> {
    let o = outcome(params, 10, 10 + window - 1);
    SessionCore::new(&o, FrameConfig::default(), Trace::new(16), ka, now)
}

fn core(params: SessionParams, window: u32) -> SessionCore<u32> {
    core_at(params, window, None, Instant::now())
}

/// Everything the core queued, framed again.
fn sent(core: &mut SessionCore<u32>) -> Vec<Frame> {
    let mut wire = BytesMut::new();
    for c in core.poll_transmit().unwrap_or_default() {
        wire.put_slice(&c);
    }
    let mut frames = Vec::new();
    while let Some(f) = framing::decode(&FrameConfig::default(), &mut wire).unwrap() {
        frames.push(f);
    }
    assert!(wire.is_empty());
    frames
}

fn events(core: &mut SessionCore<u32>) -> Vec<Event<u32>> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

/// The SCSI completions, as (ITT, token, result).
fn scsi_done(core: &mut SessionCore<u32>) -> Vec<(u32, u32, Result<ScsiResult, CommandError>)> {
    events(core)
        .into_iter()
        .filter_map(|e| match e {
            Event::Completed {
                itt,
                token,
                result: Completion::Scsi(r),
            } => Some((itt, token, r)),
            _ => None,
        })
        .collect()
}

fn data_out(f: &Frame) -> (DataOut, usize) {
    match f.pdu() {
        Pdu::DataOut(d) => (d, f.data.len()),
        other => panic!("expected a Data-Out, got {other:?}"),
    }
}

fn command(f: &Frame) -> ScsiCommand {
    match f.pdu() {
        Pdu::ScsiCommand(c) => c,
        other => panic!("expected a SCSI Command, got {other:?}"),
    }
}

fn nop_in(itt: u32, ttt: u32, exp: u32, max: u32) -> NopIn {
    NopIn {
        lun: Lun(0),
        itt,
        ttt,
        stat_sn: 100,
        exp_cmd_sn: exp,
        max_cmd_sn: max,
    }
}

fn good(itt: u32, stat_sn: u32) -> Frame {
    Frame::new(&Pdu::ScsiResponse(ScsiResponse {
        itt,
        stat_sn,
        exp_cmd_sn: 11,
        max_cmd_sn: 30,
        ..ScsiResponse::default()
    }))
}

#[test]
fn command_in_scsi_command_out_with_cmd_sn_and_itt() {
    let now = Instant::now();
    let mut c = core(SessionParams::default(), 8);
    let a = c
        .submit_scsi(Lun::from_index(2), &[0x28; 10], Bytes::new(), 4096, 7)
        .unwrap();
    let b = c
        .submit_scsi(Lun(0), &[0x00; 6], Bytes::new(), 0, 8)
        .unwrap();
    assert_ne!(a, b);
    let frames = sent(&mut c);
    let got: Vec<(u32, u32, u32, bool, bool, bool, u32)> = frames
        .iter()
        .map(command)
        .map(|c| {
            (
                c.itt,
                c.cmd_sn,
                c.exp_stat_sn,
                c.read,
                c.write,
                c.final_bit,
                c.expected_data_transfer_length,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (a, 10, 100, true, false, true, 4096),
            (b, 11, 100, false, false, true, 0)
        ]
    );
    assert_eq!(command(&frames[0]).lun, Lun::from_index(2));
    assert_eq!(c.stats().cmd_sn, 12);
    assert_eq!(c.stats().in_flight, 2);
    // Status for the second: its token comes back, ExpStatSN advances,
    // and the next command carries it.
    c.handle_frame(now, good(b, 100));
    let done = scsi_done(&mut c);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].0, done[0].1), (b, 8));
    assert!(done[0].2.as_ref().unwrap().is_good());
    c.submit_scsi(Lun(0), &[0x00; 6], Bytes::new(), 0, 9)
        .unwrap();
    let f = sent(&mut c);
    assert_eq!(
        (command(&f[0]).cmd_sn, command(&f[0]).exp_stat_sn),
        (12, 101)
    );
}

#[test]
fn write_data_immediate_unsolicited_then_solicited() {
    let now = Instant::now();
    let params = SessionParams {
        immediate_data: true,
        initial_r2t: false,
        first_burst_length: 8192,
        target_mrdsl: 4096,
        ..SessionParams::default()
    };
    let mut c = core(params, 8);
    let data = Bytes::from((0..20_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let itt = c
        .submit_scsi(Lun(0), &[0x2a; 10], data.clone(), 0, 1)
        .unwrap();
    let frames = sent(&mut c);
    assert_eq!(frames.len(), 2);
    let cmd = command(&frames[0]);
    // Immediate data: min(FirstBurstLength, MRDSL, EDTL) = 4096; F=0
    // because unsolicited Data-Out follows up to FirstBurstLength.
    assert_eq!((cmd.write, cmd.read, cmd.final_bit), (true, false, false));
    assert_eq!(cmd.expected_data_transfer_length, 20_000);
    assert_eq!((cmd.cmd_sn, cmd.exp_stat_sn, cmd.itt), (10, 100, itt));
    assert_eq!(&cmd.cdb[..10], &[0x2a; 10]);
    assert_eq!(frames[0].data, data.slice(..4096));
    let (d, len) = data_out(&frames[1]);
    assert_eq!(
        (d.ttt, d.data_sn, d.buffer_offset, d.final_bit, len),
        (RESERVED_TAG, 0, 4096, true, 4096)
    );
    // An R2T for the rest: segments of at most MRDSL, DataSN from 0.
    let r2t = R2t {
        lun: Lun(0),
        itt,
        ttt: 0x55,
        stat_sn: 100,
        exp_cmd_sn: 11,
        max_cmd_sn: 20,
        r2t_sn: 0,
        buffer_offset: 8192,
        desired_data_transfer_length: 11_808,
    };
    c.handle_frame(now, Frame::new(&Pdu::R2t(r2t)));
    let frames = sent(&mut c);
    let got: Vec<(u32, u32, u32, bool, usize)> = frames
        .iter()
        .map(|f| {
            let (d, len) = data_out(f);
            (d.ttt, d.data_sn, d.buffer_offset, d.final_bit, len)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0x55, 0, 8192, false, 4096),
            (0x55, 1, 12288, false, 4096),
            (0x55, 2, 16384, true, 3616),
        ]
    );
    assert_eq!(frames[2].data, data.slice(16384..));
    assert_eq!(c.stats().max_cmd_sn, 20, "the R2T's MaxCmdSN counts");
    assert!(events(&mut c).is_empty(), "nothing completes on an R2T");
}

#[test]
fn r2ts_honour_the_burst_the_target_asks_for() {
    let now = Instant::now();
    // No unsolicited data at all: every byte is solicited, one burst
    // per R2T (the target keeps each within MaxBurstLength).
    let params = SessionParams {
        immediate_data: false,
        initial_r2t: true,
        max_burst_length: 8192,
        target_mrdsl: 3000,
        ..SessionParams::default()
    };
    let mut c = core(params, 8);
    let data = Bytes::from(vec![5u8; 16384]);
    let itt = c.submit_scsi(Lun(0), &[0x2a; 10], data, 0, 1).unwrap();
    let frames = sent(&mut c);
    assert_eq!(frames.len(), 1);
    assert!(command(&frames[0]).final_bit && frames[0].data.is_empty());
    for (sn, offset) in [(0u32, 0u32), (1, 8192)] {
        let r2t = R2t {
            lun: Lun(0),
            itt,
            ttt: 0x100 + sn,
            stat_sn: 100,
            exp_cmd_sn: 11,
            max_cmd_sn: 20,
            r2t_sn: sn,
            buffer_offset: offset,
            desired_data_transfer_length: 8192,
        };
        c.handle_frame(now, Frame::new(&Pdu::R2t(r2t)));
        let got: Vec<(u32, u32, u32, bool, usize)> = sent(&mut c)
            .iter()
            .map(|f| {
                let (d, len) = data_out(f);
                (d.ttt, d.data_sn, d.buffer_offset, d.final_bit, len)
            })
            .collect();
        let t = 0x100 + sn;
        assert_eq!(
            got,
            vec![
                (t, 0, offset, false, 3000),
                (t, 1, offset + 3000, false, 3000),
                (t, 2, offset + 6000, true, 2192),
            ],
            "R2T {sn}"
        );
    }
    // An R2T beyond the write data fails the command, nothing is sent.
    let bad = R2t {
        lun: Lun(0),
        itt,
        ttt: 0x200,
        stat_sn: 100,
        exp_cmd_sn: 11,
        max_cmd_sn: 20,
        r2t_sn: 2,
        buffer_offset: 16000,
        desired_data_transfer_length: 1000,
    };
    c.handle_frame(now, Frame::new(&Pdu::R2t(bad)));
    assert!(sent(&mut c).is_empty());
    let done = scsi_done(&mut c);
    assert!(
        matches!(&done[..], [(i, 1, Err(CommandError::Protocol(m)))] if *i == itt && m.contains("§11.8.4")),
        "{done:?}"
    );
}

#[test]
fn initial_r2t_without_immediate_data_sends_the_command_alone() {
    let params = SessionParams {
        immediate_data: false,
        initial_r2t: true,
        ..SessionParams::default()
    };
    let mut c = core(params, 8);
    c.submit_scsi(Lun(0), &[0x2a; 10], Bytes::from(vec![1u8; 512]), 0, 1)
        .unwrap();
    let frames = sent(&mut c);
    assert_eq!(frames.len(), 1);
    let cmd = command(&frames[0]);
    assert!(cmd.final_bit && frames[0].data.is_empty());
}

#[test]
fn large_data_segments_are_not_copied() {
    let params = SessionParams {
        target_mrdsl: 65536,
        ..SessionParams::default()
    };
    let mut c = core(params, 8);
    let data = Bytes::from(vec![7u8; 32768]);
    c.submit_scsi(Lun(0), &[0x2a; 10], data.clone(), 0, 1)
        .unwrap();
    let chunks = c.poll_transmit().unwrap();
    assert!(
        chunks
            .iter()
            .any(|ch| ch.as_ptr() == data.as_ptr() && ch.len() == data.len()),
        "the immediate data went out as a copy"
    );
    assert!(c.poll_transmit().is_none());
}

#[test]
fn data_in_and_status_complete_the_command() {
    let now = Instant::now();
    let mut c = core(SessionParams::default(), 8);
    // One Data-In with status: handed over without a copy.
    let itt = c
        .submit_scsi(Lun(0), &[0x28; 10], Bytes::new(), 4096, 1)
        .unwrap();
    sent(&mut c);
    let payload = Bytes::from(vec![9u8; 4096]);
    let d = DataIn {
        final_bit: true,
        status: Some(0),
        itt,
        ttt: RESERVED_TAG,
        stat_sn: 100,
        exp_cmd_sn: 11,
        max_cmd_sn: 20,
        ..DataIn::default()
    };
    c.handle_frame(now, Frame::with_data(&Pdu::DataIn(d), payload.clone()));
    assert_eq!(c.stats().exp_stat_sn, 101);
    let done = scsi_done(&mut c);
    let r = done[0].2.as_ref().unwrap();
    assert!(r.is_good());
    assert_eq!(r.data.as_ptr(), payload.as_ptr());
    assert_eq!(c.stats().in_flight, 0);
    // Two Data-In out of order by offset, then a SCSI Response with a
    // residual: placed by BufferOffset.
    let itt = c
        .submit_scsi(Lun(0), &[0x28; 10], Bytes::new(), 8, 2)
        .unwrap();
    sent(&mut c);
    for (sn, off, bytes) in [(0u32, 4u32, b"efgh"), (1, 0, b"abcd")] {
        let d = DataIn {
            itt,
            ttt: RESERVED_TAG,
            data_sn: sn,
            buffer_offset: off,
            exp_cmd_sn: 12,
            max_cmd_sn: 20,
            ..DataIn::default()
        };
        c.handle_frame(
            now,
            Frame::with_data(&Pdu::DataIn(d), Bytes::from_static(bytes)),
        );
    }
    assert!(events(&mut c).is_empty());
    c.handle_frame(now, good(itt, 101));
    let done = scsi_done(&mut c);
    assert_eq!(done[0].1, 2);
    assert_eq!(&done[0].2.as_ref().unwrap().data[..], b"abcdefgh");
    assert_eq!(c.stats().exp_stat_sn, 102);
}

#[test]
fn a_data_sn_gap_fails_the_command_early_and_keeps_its_itt() {
    let now = Instant::now();
    let mut c = core(SessionParams::default(), 8);
    let itt = c
        .submit_scsi(Lun(0), &[0x28; 10], Bytes::new(), 1024, 1)
        .unwrap();
    sent(&mut c);
    let d = DataIn {
        itt,
        ttt: RESERVED_TAG,
        data_sn: 1,
        exp_cmd_sn: 11,
        max_cmd_sn: 20,
        ..DataIn::default()
    };
    c.handle_frame(
        now,
        Frame::with_data(&Pdu::DataIn(d), Bytes::from(vec![0; 512])),
    );
    let done = scsi_done(&mut c);
    assert!(matches!(&done[..], [(_, 1, Err(CommandError::Protocol(m)))] if m.contains("DataSN")));
    assert_eq!(c.stats().in_flight, 1, "the ITT stays reserved");
    c.handle_frame(now, good(itt, 100));
    assert!(events(&mut c).is_empty(), "no second completion");
    assert_eq!(c.stats().in_flight, 0);
}

#[test]
fn closed_cmd_sn_window_holds_commands_until_max_cmd_sn_advances() {
    let now = Instant::now();
    let mut c = core(SessionParams::default(), 1);
    for t in 0..3 {
        c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, t).unwrap();
    }
    let frames = sent(&mut c);
    assert_eq!(frames.len(), 1, "a window of one command");
    assert_eq!(c.stats().queued, 2);
    // MaxCmdSN < ExpCmdSN - 1: both ignored (§4.2.2.1).
    c.handle_frame(
        now,
        Frame::new(&Pdu::NopIn(nop_in(RESERVED_TAG, RESERVED_TAG, 11, 5))),
    );
    let s = c.stats();
    assert_eq!((s.exp_cmd_sn, s.max_cmd_sn), (10, 10));
    assert!(sent(&mut c).is_empty());
    // The window opens by two: both queued commands go, in order.
    c.handle_frame(
        now,
        Frame::new(&Pdu::NopIn(nop_in(RESERVED_TAG, RESERVED_TAG, 11, 12))),
    );
    let sns: Vec<u32> = sent(&mut c).iter().map(|f| command(f).cmd_sn).collect();
    assert_eq!(sns, vec![11, 12]);
    // A stale (smaller) MaxCmdSN does not shrink the window.
    c.handle_frame(
        now,
        Frame::new(&Pdu::NopIn(nop_in(RESERVED_TAG, RESERVED_TAG, 11, 11))),
    );
    assert_eq!((c.stats().max_cmd_sn, c.stats().cmd_sn), (12, 13));
    // A ping-less NOP-In is not answered and consumes no StatSN.
    assert!(sent(&mut c).is_empty());
    assert_eq!(c.stats().exp_stat_sn, 100);
}

#[test]
fn target_nop_in_with_a_ttt_gets_a_nop_out_echo() {
    let now = Instant::now();
    let mut c = core(SessionParams::default(), 8);
    let ping = NopIn {
        lun: Lun::from_index(3),
        ..nop_in(RESERVED_TAG, 0xabc, 10, 17)
    };
    c.handle_frame(
        now,
        Frame::with_data(&Pdu::NopIn(ping), Bytes::from_static(b"hello")),
    );
    let frames = sent(&mut c);
    assert_eq!(frames.len(), 1);
    let Pdu::NopOut(n) = frames[0].pdu() else {
        panic!("expected a NOP-Out, got {:?}", frames[0].bhs.opcode())
    };
    assert_eq!(
        (n.immediate, n.itt, n.ttt, n.lun, n.cmd_sn, n.exp_stat_sn),
        (true, RESERVED_TAG, 0xabc, Lun::from_index(3), 10, 100)
    );
    assert_eq!(&frames[0].data[..], b"hello");
    assert!(events(&mut c).is_empty());
}

#[test]
fn our_ping_completes_with_the_echo() {
    let now = Instant::now();
    let mut c = core(SessionParams::default(), 8);
    let itt = c.submit_nop(Bytes::from_static(b"abc"), 4).unwrap();
    let f = sent(&mut c);
    let Pdu::NopOut(n) = f[0].pdu() else { panic!() };
    assert_eq!((n.itt, n.ttt, n.immediate), (itt, RESERVED_TAG, true));
    c.handle_frame(
        now,
        Frame::with_data(
            &Pdu::NopIn(nop_in(itt, RESERVED_TAG, 10, 17)),
            Bytes::from_static(b"abc"),
        ),
    );
    let e = events(&mut c);
    assert!(
        matches!(&e[..], [Event::Completed { itt: i, token: 4, result: Completion::Bytes(Ok(b)) }] if *i == itt && &b[..] == b"abc"),
        "{e:?}"
    );
    assert_eq!(c.stats().exp_stat_sn, 101, "the answer consumes a StatSN");
}

#[test]
fn keep_alive_pings_after_the_idle_interval_and_closes_on_silence() {
    let t0 = Instant::now();
    let ka = KeepAlive {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
    };
    let mut c = core_at(SessionParams::default(), 8, Some(ka), t0);
    assert_eq!(c.poll_timeout(), Some(t0 + ka.interval));
    // Early: nothing.
    c.handle_timeout(t0 + Duration::from_secs(4));
    assert!(sent(&mut c).is_empty());
    // Traffic from the target restarts the idle clock.
    let t1 = t0 + Duration::from_secs(3);
    c.handle_frame(
        t1,
        Frame::new(&Pdu::NopIn(nop_in(RESERVED_TAG, RESERVED_TAG, 10, 17))),
    );
    assert_eq!(c.poll_timeout(), Some(t1 + ka.interval));
    c.handle_timeout(t0 + ka.interval);
    assert!(sent(&mut c).is_empty());
    // Idle for the interval: a NOP-Out ping with an ITT.
    let t2 = t1 + ka.interval;
    c.handle_timeout(t2);
    let f = sent(&mut c);
    assert_eq!(f.len(), 1);
    let Pdu::NopOut(ping) = f[0].pdu() else {
        panic!()
    };
    assert!(ping.immediate && ping.itt != RESERVED_TAG && ping.ttt == RESERVED_TAG);
    assert_eq!(c.poll_timeout(), Some(t2 + ka.timeout));
    // Answered: back to the idle clock, no completion for anyone.
    let t3 = t2 + Duration::from_secs(1);
    c.handle_frame(
        t3,
        Frame::new(&Pdu::NopIn(nop_in(ping.itt, RESERVED_TAG, 10, 17))),
    );
    assert!(events(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(t3 + ka.interval));
    assert_eq!(c.stats().in_flight, 0);
    // The next ping goes unanswered: the session closes with a reason
    // and the command in flight fails with it.
    c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, 9).unwrap();
    sent(&mut c);
    let t4 = t3 + ka.interval;
    c.handle_timeout(t4);
    assert_eq!(sent(&mut c).len(), 1);
    c.handle_timeout(t4 + ka.timeout - Duration::from_millis(1));
    assert!(c.close_reason().is_none());
    c.handle_timeout(t4 + ka.timeout);
    let reason = c.close_reason().expect("closed").to_owned();
    assert!(reason.contains("keep-alive"), "{reason}");
    let e = events(&mut c);
    assert!(
        matches!(&e[..], [Event::Completed { token: 9, result: Completion::Scsi(Err(CommandError::Closed(r))), .. }, Event::Closed { reason: r2 }] if *r == reason && *r2 == reason),
        "{e:?}"
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn no_keep_alive_no_timeout() {
    let mut c = core(SessionParams::default(), 8);
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(Instant::now() + Duration::from_secs(3600));
    assert!(c.poll_transmit().is_none());
}

#[test]
fn itts_skip_the_reserved_tag_and_tags_in_use() {
    let mut c = core(SessionParams::default(), 8);
    c.next_itt = RESERVED_TAG - 1;
    let a = c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, 1).unwrap();
    let b = c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, 2).unwrap();
    assert_eq!((a, b), (RESERVED_TAG - 1, 0));
    c.next_itt = RESERVED_TAG - 1;
    let d = c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, 3).unwrap();
    assert_eq!(d, 1, "tags in use are skipped");
}

#[test]
fn close_fails_everything_and_refuses_new_work() {
    let mut c = core(SessionParams::default(), 1);
    for t in 0..3 {
        c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, t).unwrap();
    }
    c.close("gone".to_owned());
    c.close("again".to_owned());
    let e = events(&mut c);
    let mut tokens: Vec<u32> = e
        .iter()
        .filter_map(|e| match e {
            Event::Completed {
                token,
                result: Completion::Scsi(Err(CommandError::Closed(r))),
                ..
            } if r == "gone" => Some(*token),
            _ => None,
        })
        .collect();
    tokens.sort_unstable();
    assert_eq!(tokens, vec![0, 1, 2]);
    assert!(matches!(e.last(), Some(Event::Closed { reason }) if reason == "gone"));
    assert_eq!(e.len(), 4, "one Closed event");
    assert!(matches!(
        c.submit_scsi(Lun(0), &[0; 6], Bytes::new(), 0, 9),
        Err(CommandError::Closed(_))
    ));
}

#[test]
fn an_initiator_opcode_from_the_target_closes_the_session() {
    let mut c = core(SessionParams::default(), 8);
    let nop = NopOut {
        immediate: true,
        lun: Lun(0),
        itt: 1,
        ttt: RESERVED_TAG,
        cmd_sn: 0,
        exp_stat_sn: 0,
    };
    c.handle_frame(Instant::now(), Frame::new(&Pdu::NopOut(nop)));
    assert!(c.close_reason().is_some_and(|r| r.contains("unexpected")));
}

#[test]
fn read_buf_places_by_offset() {
    let pool = std::sync::Arc::new(super::ReadPool::default());
    let mut r = ReadBuf::Empty;
    r.put(0, Bytes::from_static(b"abcd"), 12, &pool);
    r.put(8, Bytes::from_static(b"ijkl"), 12, &pool);
    r.put(4, Bytes::from_static(b"efgh"), 12, &pool);
    assert_eq!(&r.into_bytes(&pool)[..], b"abcdefghijkl");
}
