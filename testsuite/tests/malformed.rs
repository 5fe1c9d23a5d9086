//! Malformed input against our target: garbage bytes, truncated PDUs,
//! invalid opcodes, lying lengths, bad digests, broken login text and
//! seeded random headers. Each gets a Reject or a closed connection — and
//! while all of it happens, a second session keeps writing and verifying
//! data, and nothing in the target panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use iesp_initiator::login::{LoginOutcome, login};
use iesp_initiator::{LoginOptions, RawConnection, Received, Session};
use iesp_proto::bhs::{Bhs, Lun, Opcode, RESERVED_TAG};
use iesp_proto::framing::Frame;
use iesp_proto::negotiation::Digest;
use iesp_proto::pdu::{
    DataOut, LoginRequest, NopOut, Pdu, Reject, RejectReason, ScsiCommand, Stage,
};
use iesp_testsuite::workload::write_read_verify;
use iesp_testsupport::TestTarget;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};

const T: Duration = Duration::from_secs(5);
const INITIATOR: &str = "iqn.2026-11.org.iesp-test:malformed";

/// Counts panics anywhere in the process (the target runs in it).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

async fn logged_in(target: &TestTarget, digests: bool) -> (RawConnection, LoginOutcome) {
    let mut conn = RawConnection::connect(target.addr())
        .await
        .expect("connect");
    let mut opts = LoginOptions::new(INITIATOR, Some(target.iqn()));
    if digests {
        opts.header_digest = vec![Digest::Crc32c];
        opts.data_digest = vec![Digest::Crc32c];
    }
    let out = login(&mut conn, &opts).await.expect("login");
    (conn, out)
}

/// Waits for the next PDU that is not a NOP-In ping.
async fn next(conn: &mut RawConnection) -> Received {
    conn.recv_skipping_pings(T).await
}

fn expect_reject(got: Received, reason: RejectReason, what: &str) -> Bhs {
    match got {
        Received::Frame(f) => match f.pdu() {
            Pdu::Reject(Reject { reason: r, .. }) => {
                assert_eq!(r, reason, "{what}: reject reason");
                Bhs::from_slice(&f.data)
                    .unwrap_or_else(|| panic!("{what}: Reject without the rejected header"))
            }
            other => panic!("{what}: expected a Reject, got {other:?}"),
        },
        other => panic!("{what}: expected a Reject, got {other:?}"),
    }
}

async fn expect_closed(conn: &mut RawConnection, what: &str) {
    for _ in 0..8 {
        match conn.recv(T).await {
            Received::Closed => return,
            // A Reject or Login Response may precede the close.
            Received::Frame(_) | Received::Malformed(_) => continue,
            Received::Timeout => panic!("{what}: the target neither answered nor closed"),
        }
    }
    panic!("{what}: the target kept talking instead of closing");
}

/// A NOP-Out ping on an established connection still gets its echo.
async fn still_alive(conn: &mut RawConnection, out: &mut LoginOutcome, what: &str) {
    let nop = NopOut {
        immediate: true,
        lun: Lun(0),
        itt: 0x7777,
        ttt: RESERVED_TAG,
        cmd_sn: out.cmd_sn,
        exp_stat_sn: out.exp_stat_sn,
    };
    conn.send_pdu(&Pdu::NopOut(nop), Bytes::from_static(b"ping"))
        .await
        .expect("send NOP-Out");
    match next(conn).await {
        Received::Frame(f) => match f.pdu() {
            Pdu::NopIn(n) if n.itt == 0x7777 => {
                assert_eq!(&f.data[..], b"ping", "{what}: ping data echoed");
                out.exp_stat_sn = n.stat_sn.wrapping_add(1);
            }
            other => panic!("{what}: expected the NOP-In echo, got {other:?}"),
        },
        other => panic!("{what}: expected the NOP-In echo, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_reject_or_close_and_others_carry_on() {
    count_panics();
    let target = TestTarget::ram(64 << 20, 512).await;

    // The bystander: a normal session verifying data the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let bystander = {
        let session = Session::login(
            target.addr(),
            LoginOptions::new("iqn.2026-11.org.iesp-test:bystander", Some(target.iqn())),
        )
        .await
        .expect("bystander login");
        let stop = stop.clone();
        tokio::spawn(async move {
            let lu = Arc::new(session.logical_unit(0).await.expect("bystander LUN"));
            let mut rounds = 0u64;
            while !stop.load(Ordering::SeqCst) || rounds == 0 {
                write_read_verify(&lu, 4 << 20, 8, 64 * 1024, rounds)
                    .await
                    .expect("bystander data");
                rounds += 1;
            }
            session.logout().await.expect("bystander logout");
            rounds
        })
    };

    // 1. Garbage instead of a login.
    let mut c = RawConnection::connect(target.addr()).await.unwrap();
    c.send_bytes(&[0xde; 4096]).await.unwrap();
    expect_closed(&mut c, "garbage before login").await;

    // 2. A truncated login PDU, then end of stream.
    let mut c = RawConnection::connect(target.addr()).await.unwrap();
    let mut lr = Frame::new(&Pdu::LoginRequest(LoginRequest {
        csg: Stage::OPERATIONAL,
        ..Default::default()
    }));
    lr.data = Bytes::from_static(b"InitiatorName=iqn.x\0");
    let mut wire = bytes::BytesMut::new();
    iesp_proto::framing::encode(&Default::default(), &lr, &mut wire);
    c.send_bytes(&wire[..30]).await.unwrap();
    c.shutdown().await.unwrap();
    expect_closed(&mut c, "truncated login PDU").await;

    // 3. Login text that does not parse: a Login reject, then close.
    let mut c = RawConnection::connect(target.addr()).await.unwrap();
    let mut bad = Frame::new(&Pdu::LoginRequest(LoginRequest {
        csg: Stage::OPERATIONAL,
        ..Default::default()
    }));
    bad.data = Bytes::from_static(b"InitiatorName\0\xff\xfe=\0");
    c.send(&bad).await.unwrap();
    match c.recv(T).await {
        Received::Frame(f) => match f.pdu() {
            Pdu::LoginResponse(r) => assert_eq!(r.status.class(), 2, "initiator error class"),
            other => panic!("bad login text: expected a Login Response, got {other:?}"),
        },
        other => panic!("bad login text: expected a Login Response, got {other:?}"),
    }
    expect_closed(&mut c, "bad login text").await;

    // 4. Invalid opcodes in full feature phase: Reject carrying the header,
    //    and the connection goes on.
    let (mut c, mut out) = logged_in(&target, false).await;
    for (op, reason) in [
        (Opcode(0x1c), RejectReason::COMMAND_NOT_SUPPORTED),
        (Opcode(0x0f), RejectReason::COMMAND_NOT_SUPPORTED),
        (Opcode::SCSI_RESPONSE, RejectReason::PROTOCOL_ERROR),
        (Opcode::SNACK_REQUEST, RejectReason::PROTOCOL_ERROR),
    ] {
        let mut bhs = Bhs::new(op);
        bhs.set_itt(0x1234);
        bhs.0[40] = 0xab;
        c.send(&Frame {
            bhs,
            ..Default::default()
        })
        .await
        .unwrap();
        let echoed = expect_reject(next(&mut c).await, reason, &format!("opcode {op:?}"));
        assert_eq!(echoed.opcode(), op);
        assert_eq!(echoed.0[40], 0xab, "the rejected header comes back whole");
    }
    // 5. Data-Out for a task that does not exist: dropped, no harm.
    let dout = DataOut {
        final_bit: true,
        lun: Lun(0),
        itt: 0x5555,
        ttt: 9,
        exp_stat_sn: 0,
        data_sn: 0,
        buffer_offset: 0,
    };
    c.send_pdu(&Pdu::DataOut(dout), Bytes::from(vec![1u8; 512]))
        .await
        .unwrap();
    // 6. A SCSI Command with an AHS that is not well formed.
    let mut cmd = ScsiCommand {
        lun: Lun(0),
        itt: 0x99,
        cmd_sn: out.cmd_sn,
        exp_stat_sn: out.exp_stat_sn,
        ..Default::default()
    };
    cmd.set_cdb(&[0x00; 6]);
    let mut f = Frame::new(&Pdu::ScsiCommand(cmd));
    f.ahs = Bytes::from_static(&[0x00, 0x40, 0x01, 0x00]);
    c.send(&f).await.unwrap();
    expect_reject(
        next(&mut c).await,
        RejectReason::INVALID_PDU_FIELD,
        "bad AHS",
    );
    out.cmd_sn = out.cmd_sn.wrapping_add(1);
    still_alive(&mut c, &mut out, "after invalid opcodes").await;
    // 7. A data segment longer than the target accepts: Reject, then close.
    let mut big = Bhs::new(Opcode::NOP_OUT);
    big.set_immediate(true);
    big.set_final(true);
    big.set_itt(0x42);
    big.set_data_segment_len(0x00ff_ffff);
    c.send_bytes(big.as_bytes()).await.unwrap();
    expect_closed(&mut c, "oversized data segment").await;

    // 8. Garbage in full feature phase.
    let (mut c, _) = logged_in(&target, false).await;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x6a7ba6e);
    let mut junk = vec![0u8; 8192];
    rng.fill_bytes(&mut junk);
    c.send_bytes(&junk).await.unwrap();
    c.shutdown().await.unwrap();
    expect_closed(&mut c, "garbage in full feature phase").await;

    // 9. Digests: a bad data digest gets Reject 0x02 and the connection
    //    lives; a bad header digest closes it.
    let (mut c, mut out) = logged_in(&target, true).await;
    let nop = NopOut {
        immediate: true,
        lun: Lun(0),
        itt: 0x31,
        ttt: RESERVED_TAG,
        cmd_sn: out.cmd_sn,
        exp_stat_sn: out.exp_stat_sn,
    };
    let mut wire = bytes::BytesMut::new();
    iesp_proto::framing::encode(
        &c.frame_config(),
        &Frame::with_data(&Pdu::NopOut(nop.clone()), Bytes::from_static(b"data")),
        &mut wire,
    );
    let last = wire.len() - 1;
    wire[last] ^= 0xff;
    c.send_bytes(&wire).await.unwrap();
    expect_reject(
        next(&mut c).await,
        RejectReason::DATA_DIGEST_ERROR,
        "bad data digest",
    );
    still_alive(&mut c, &mut out, "after a data digest error").await;
    let mut wire = bytes::BytesMut::new();
    iesp_proto::framing::encode(&c.frame_config(), &Frame::new(&Pdu::NopOut(nop)), &mut wire);
    wire[48] ^= 0xff;
    c.send_bytes(&wire).await.unwrap();
    expect_closed(&mut c, "bad header digest").await;

    // 10. Seeded random headers of every opcode, valid framing, random
    //     fields: the target answers or closes, never hangs or panics.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0xbad_bad);
    for round in 0..40 {
        let (mut c, _) = logged_in(&target, false).await;
        for _ in 0..25 {
            let mut raw = [0u8; 48];
            rng.fill_bytes(&mut raw);
            let mut bhs = Bhs(raw);
            bhs.set_total_ahs_words(0);
            let len = (rng.next_u32() % 1024) as usize;
            bhs.set_data_segment_len(len as u32);
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            if c.send_verbatim(&Frame {
                bhs,
                ahs: Bytes::new(),
                data: Bytes::from(data),
            })
            .await
            .is_err()
            {
                break;
            }
        }
        c.shutdown().await.ok();
        loop {
            match c.recv(T).await {
                Received::Frame(_) => continue,
                Received::Closed | Received::Malformed(_) => break,
                Received::Timeout => {
                    panic!("random round {round}: the target neither answered nor closed")
                }
            }
        }
    }

    stop.store(true, Ordering::SeqCst);
    let rounds = bystander.await.expect("bystander task");
    assert!(rounds >= 1, "the bystander verified data throughout");
    // The target still serves new sessions.
    let (mut c, mut out) = logged_in(&target, false).await;
    still_alive(&mut c, &mut out, "at the end").await;
    target.stop().await;
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "something panicked (see the output above)"
    );
}
