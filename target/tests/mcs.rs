//! Multiple connections per session (RFC 7143 MC/S; issue 13's
//! connections-per-session cap), over real TCP on loopback against the
//! embedded target:
//!
//! - two connections of one session share the command window: a CmdSN gap
//!   on connection A is filled from connection B, and the commands run in
//!   CmdSN order; ExpCmdSN is session-wide, StatSN per connection, and
//!   answers (R2T, Data-In, status) come on the connection the command
//!   came in on;
//! - a write on one connection reads back on the other;
//! - Logout reason 1 closes one connection (its own or, by CID, another),
//!   reason 0 all of them; the loss of one connection leaves the session;
//! - the session's MaxConnections is the smaller of the initiator's offer
//!   and `max_connections_per_session`; the connection beyond it gets Too
//!   Many Connections (0x0206); a cap of 1 behaves as a target without
//!   MC/S.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use iesp_initiator::login::{LoginOutcome, login};
use iesp_initiator::{LoginError, LoginOptions, RawConnection, Received};
use iesp_proto::bhs::{Lun, RESERVED_TAG};
use iesp_proto::framing::Frame;
use iesp_proto::pdu::{
    DataOut, Isid, LoginStatus, LogoutReason, LogoutRequest, LogoutResponseCode, NopOut, Pdu,
    ScsiCommand,
};
use iesp_proto::scsi::{Cdb, CdbSize};
use iesp_target::config::{Limits, TargetConfig};
use iesp_target::embedded::EmbeddedTarget;

const WAIT: Duration = Duration::from_secs(5);
/// How long a connection is watched for a PDU that must not come.
const QUIET: Duration = Duration::from_millis(300);
const BLOCK: u32 = 512;

async fn target(cap: u16) -> EmbeddedTarget {
    let cfg = TargetConfig {
        limits: Limits {
            max_connections_per_session: cap,
            ..Limits::default()
        },
        ..TargetConfig::default()
    };
    EmbeddedTarget::start(cfg).await.expect("target")
}

fn opts(name: &str, isid: Isid, max_connections: u16) -> LoginOptions {
    let mut o = LoginOptions::new(
        &format!("iqn.2026-12.org.iesp-test:{name}"),
        Some(iesp_target::DEFAULT_IQN),
    );
    o.isid = isid;
    o.max_connections = max_connections;
    o
}

/// One connection of a session, with its own sequence numbers.
struct Conn {
    raw: RawConnection,
    login: LoginOutcome,
    exp_stat_sn: u32,
    /// The data segment of the PDU [`Conn::next`] returned last.
    last_data: Option<Vec<u8>>,
}

/// The leading connection (CID 0) of a new session offering
/// `max_connections`.
async fn leading(addr: SocketAddr, name: &str, isid: Isid, max_connections: u16) -> Conn {
    let mut raw = RawConnection::connect(addr).await.expect("connect");
    let o = opts(name, isid, max_connections);
    let login = login(&mut raw, &o).await.expect("leading login");
    Conn {
        raw,
        exp_stat_sn: login.exp_stat_sn,
        login,
        last_data: None,
    }
}

/// TEST UNIT READY at `cmd_sn`: takes the new nexus's unit attention
/// (power on) so that later commands answer GOOD. Returns the next CmdSN.
async fn clear_unit_attention(c: &mut Conn, cmd_sn: u32) -> u32 {
    let cmd = ScsiCommand {
        final_bit: true,
        lun: Lun(0),
        itt: 0xffff,
        cmd_sn,
        ..Default::default()
    };
    c.send(&Frame::with_data(&Pdu::ScsiCommand(cmd), Bytes::new()))
        .await;
    assert_eq!(c.answer().await.itt, 0xffff);
    cmd_sn.wrapping_add(1)
}

/// A login into session `tsih` with `cid`; `cmd_sn` is the session's
/// next CmdSN.
async fn join(
    addr: SocketAddr,
    name: &str,
    isid: Isid,
    tsih: u16,
    cid: u16,
    cmd_sn: u32,
) -> Result<Conn, LoginError> {
    let mut raw = RawConnection::connect(addr).await.expect("connect");
    let mut o = opts(name, isid, 1);
    o.tsih = tsih;
    o.cid = cid;
    o.cmd_sn = cmd_sn;
    let login = login(&mut raw, &o).await?;
    Ok(Conn {
        raw,
        exp_stat_sn: login.exp_stat_sn,
        login,
        last_data: None,
    })
}

fn write_cmd(itt: u32, cmd_sn: u32, lba: u64, data: &Bytes, immediate: bool) -> Frame {
    let blocks = data.len() as u32 / BLOCK;
    let mut cmd = ScsiCommand {
        write: true,
        final_bit: true,
        lun: Lun(0),
        itt,
        expected_data_transfer_length: data.len() as u32,
        cmd_sn,
        ..Default::default()
    };
    cmd.set_cdb(
        Cdb::write(CdbSize::Sixteen, lba, blocks, false)
            .encode()
            .as_ref(),
    );
    let payload = if immediate {
        data.clone()
    } else {
        Bytes::new()
    };
    Frame::with_data(&Pdu::ScsiCommand(cmd), payload)
}

fn read_cmd(itt: u32, cmd_sn: u32, lba: u64, blocks: u32) -> Frame {
    let mut cmd = ScsiCommand {
        read: true,
        final_bit: true,
        lun: Lun(0),
        itt,
        expected_data_transfer_length: blocks * BLOCK,
        cmd_sn,
        ..Default::default()
    };
    cmd.set_cdb(Cdb::read(CdbSize::Sixteen, lba, blocks).encode().as_ref());
    Frame::with_data(&Pdu::ScsiCommand(cmd), Bytes::new())
}

fn pattern(seed: u8, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| seed.wrapping_add((i % 251) as u8))
            .collect::<Vec<u8>>(),
    )
}

/// What a command's answer carried.
#[derive(Debug)]
struct Answer {
    itt: u32,
    status: u8,
    stat_sn: u32,
    exp_cmd_sn: u32,
    data: Vec<u8>,
}

impl Conn {
    async fn send(&mut self, frame: &Frame) {
        let mut frame = frame.clone();
        // ExpStatSN at offset 28 of every initiator PDU this test sends.
        frame.bhs.set_u32_at(28, self.exp_stat_sn);
        self.raw.send(&frame).await.expect("send");
    }

    /// The next PDU, skipping the target's keep-alive pings.
    async fn next(&mut self, timeout: Duration) -> Option<Pdu> {
        match self.raw.recv_skipping_pings(timeout).await {
            Received::Frame(f) => {
                let pdu = Pdu::decode(&f.bhs);
                let data = f.data.to_vec();
                self.last_data = Some(data);
                Some(pdu)
            }
            Received::Timeout | Received::Closed => None,
            Received::Malformed(e) => panic!("malformed PDU from the target: {e}"),
        }
    }

    /// The answer of one command: Data-In with collapsed status, or a SCSI
    /// Response (after Data-In without status).
    async fn answer(&mut self) -> Answer {
        let mut data = Vec::new();
        loop {
            let pdu = self.next(WAIT).await.expect("an answer");
            let seg = self.last_data.take().unwrap_or_default();
            match pdu {
                Pdu::DataIn(d) => {
                    data.extend_from_slice(&seg);
                    if let Some(status) = d.status {
                        self.exp_stat_sn = d.stat_sn.wrapping_add(1);
                        return Answer {
                            itt: d.itt,
                            status,
                            stat_sn: d.stat_sn,
                            exp_cmd_sn: d.exp_cmd_sn,
                            data,
                        };
                    }
                }
                Pdu::ScsiResponse(r) => {
                    self.exp_stat_sn = r.stat_sn.wrapping_add(1);
                    return Answer {
                        itt: r.itt,
                        status: r.status,
                        stat_sn: r.stat_sn,
                        exp_cmd_sn: r.exp_cmd_sn,
                        data,
                    };
                }
                other => panic!("expected a command's answer, got {other:?}"),
            }
        }
    }

    /// Nothing arrives for [`QUIET`].
    async fn quiet(&mut self, what: &str) {
        if let Some(pdu) = self.next(QUIET).await {
            panic!("{what}: unexpected {pdu:?}");
        }
    }

    /// A NOP-Out ping (CmdSN `cmd_sn`) is answered on this connection.
    async fn ping(&mut self, itt: u32, cmd_sn: u32) {
        let nop = NopOut {
            immediate: false,
            lun: Lun(0),
            itt,
            ttt: RESERVED_TAG,
            cmd_sn,
            exp_stat_sn: 0,
        };
        self.send(&Frame::with_data(&Pdu::NopOut(nop), Bytes::new()))
            .await;
        match self.next(WAIT).await {
            Some(Pdu::NopIn(n)) if n.itt == itt => self.exp_stat_sn = n.stat_sn.wrapping_add(1),
            other => panic!("expected NOP-In {itt:#x}, got {other:?}"),
        }
    }

    async fn logout(&mut self, reason: LogoutReason, cid: u16, itt: u32, cmd_sn: u32) -> u8 {
        let req = LogoutRequest {
            immediate: false,
            reason,
            itt,
            cid,
            cmd_sn,
            exp_stat_sn: 0,
        };
        self.send(&Frame::with_data(&Pdu::LogoutRequest(req), Bytes::new()))
            .await;
        match self.next(WAIT).await {
            Some(Pdu::LogoutResponse(r)) => {
                self.exp_stat_sn = r.stat_sn.wrapping_add(1);
                r.response.0
            }
            other => panic!("expected a Logout Response, got {other:?}"),
        }
    }

    /// Whether the target closed this connection (within [`WAIT`]).
    async fn closed_by_target(&mut self) -> bool {
        loop {
            match self.raw.recv_skipping_pings(WAIT).await {
                Received::Closed => return true,
                Received::Timeout => return false,
                // An Asynchronous Message or the like before the close.
                Received::Frame(_) => {}
                Received::Malformed(_) => return true,
            }
        }
    }
}

/// Session A(CID 0) + B(CID 1) on a target with cap 4, the initiator
/// offering 2; returns both and the session's next CmdSN.
async fn pair(t: &EmbeddedTarget, name: &str) -> (Conn, Conn, u32) {
    let isid = Isid::random(0x4d43_5300 | u32::from(name.len() as u8));
    let mut a = leading(t.addr, name, isid, 2).await;
    assert_eq!(a.login.params.max_connections, 2, "min(offer 2, cap 4)");
    let first = a.login.cmd_sn;
    let sn = clear_unit_attention(&mut a, first).await;
    let b = join(t.addr, name, isid, a.login.tsih, 1, sn)
        .await
        .expect("second connection joins the session");
    assert_eq!(b.login.tsih, a.login.tsih);
    assert_eq!(b.login.exp_cmd_sn, sn, "the session's ExpCmdSN");
    (a, b, sn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmd_sn_gap_on_one_connection_is_filled_from_the_other_and_runs_in_order() {
    let t = target(4).await;
    let (mut a, mut b, sn) = pair(&t, "gap").await;
    let (x, y) = (pattern(0x11, 4096), pattern(0x77, 4096));
    let (a_stat, b_stat) = (a.exp_stat_sn, b.exp_stat_sn);

    // CmdSN sn+1 on A, with sn still missing: it waits.
    a.send(&write_cmd(0x10, sn.wrapping_add(1), 64, &x, true))
        .await;
    a.quiet("a command ahead of ExpCmdSN ran").await;
    // sn on B fills the gap: B's write runs, then A's, in CmdSN order.
    b.send(&write_cmd(0x20, sn, 64, &y, true)).await;
    let rb = b.answer().await;
    assert_eq!((rb.itt, rb.status), (0x20, 0), "B's write, on B");
    assert_eq!(rb.stat_sn, b_stat, "StatSN is per connection (B)");
    let ra = a.answer().await;
    assert_eq!((ra.itt, ra.status), (0x10, 0), "A's write, on A");
    assert_eq!(ra.stat_sn, a_stat, "StatSN is per connection (A)");
    assert_eq!(
        ra.exp_cmd_sn,
        sn.wrapping_add(2),
        "ExpCmdSN is session-wide: past both commands"
    );
    b.quiet("A's answer went to B too").await;

    // The later write (CmdSN sn+1, from A) is what the blocks hold.
    b.send(&read_cmd(0x21, sn.wrapping_add(2), 64, 8)).await;
    let r = b.answer().await;
    assert_eq!(r.status, 0);
    assert_eq!(r.data, x.to_vec(), "the commands ran out of CmdSN order");
    assert_eq!(r.exp_cmd_sn, sn.wrapping_add(3));

    // And the other way round, with two commands held on B.
    b.send(&write_cmd(0x22, sn.wrapping_add(5), 80, &y, true))
        .await;
    b.send(&write_cmd(0x23, sn.wrapping_add(4), 80, &x, true))
        .await;
    b.quiet("commands ahead of ExpCmdSN ran").await;
    a.send(&read_cmd(0x11, sn.wrapping_add(3), 80, 8)).await;
    let first = a.answer().await;
    assert_eq!(first.itt, 0x11);
    let mut on_b = [b.answer().await.itt, b.answer().await.itt];
    on_b.sort();
    assert_eq!(on_b, [0x22, 0x23]);
    a.send(&read_cmd(0x12, sn.wrapping_add(6), 80, 8)).await;
    assert_eq!(a.answer().await.data, y.to_vec(), "sn+5 ran after sn+4");
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_connection_read_back_on_the_other() {
    let t = target(4).await;
    let (mut a, mut b, mut sn) = pair(&t, "cross").await;
    // Immediate data, and a write whose data is solicited: its R2T comes
    // on the connection that carries the command, never on the other.
    let blocks: Vec<Bytes> = (0..6u8).map(|i| pattern(i * 40 + 1, 8192)).collect();
    for (i, data) in blocks.iter().enumerate() {
        let lba = 1000 + i as u64 * 16;
        let itt = 0x100 + i as u32;
        let (on, other) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let solicited = i % 3 == 2;
        on.send(&write_cmd(itt, sn, lba, data, !solicited)).await;
        if solicited {
            let r2t = match on.next(WAIT).await {
                Some(Pdu::R2t(r)) => r,
                other => panic!("expected an R2T on the command's connection, got {other:?}"),
            };
            other.quiet("an R2T on the other connection").await;
            let d = DataOut {
                final_bit: true,
                lun: Lun(0),
                itt,
                ttt: r2t.ttt,
                exp_stat_sn: on.exp_stat_sn,
                data_sn: 0,
                buffer_offset: r2t.buffer_offset,
            };
            let len = r2t.desired_data_transfer_length as usize;
            let off = r2t.buffer_offset as usize;
            let seg = data.slice(off..off + len);
            on.raw
                .send(&Frame::with_data(&Pdu::DataOut(d), seg))
                .await
                .unwrap();
        }
        let r = on.answer().await;
        assert_eq!((r.itt, r.status), (itt, 0));
        sn = sn.wrapping_add(1);
    }
    for (i, data) in blocks.iter().enumerate() {
        let lba = 1000 + i as u64 * 16;
        let on = if i % 2 == 0 { &mut b } else { &mut a };
        on.send(&read_cmd(0x200 + i as u32, sn, lba, 16)).await;
        let r = on.answer().await;
        assert_eq!(r.status, 0);
        assert_eq!(
            r.data,
            data.to_vec(),
            "block {i} read back on the other connection"
        );
        sn = sn.wrapping_add(1);
    }
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_reason_1_closes_one_connection_and_reason_0_the_session() {
    let t = target(4).await;
    let name = "logout";
    let (mut a, mut b, sn) = pair(&t, name).await;
    // B logs itself out: only B closes.
    let code = b.logout(LogoutReason::CLOSE_CONNECTION, 1, 0x30, sn).await;
    assert_eq!(code, LogoutResponseCode::SUCCESS.0);
    assert!(b.closed_by_target().await, "B closed after its logout");
    a.ping(0x31, sn.wrapping_add(1)).await;
    let data = pattern(5, 4096);
    a.send(&write_cmd(0x32, sn.wrapping_add(2), 8, &data, true))
        .await;
    assert_eq!(a.answer().await.status, 0, "A works after B's logout");

    // A new CID 2 joins; A logs it out by its CID (reason 1 from another
    // connection): the target closes it, A goes on.
    let isid = a.login.isid;
    let mut c = join(t.addr, name, isid, a.login.tsih, 2, sn.wrapping_add(3))
        .await
        .expect("CID 2 joins");
    let code = a
        .logout(LogoutReason::CLOSE_CONNECTION, 2, 0x33, sn.wrapping_add(3))
        .await;
    assert_eq!(code, LogoutResponseCode::SUCCESS.0);
    assert!(
        c.closed_by_target().await,
        "CID 2 closed by A's logout of it"
    );
    a.ping(0x34, sn.wrapping_add(4)).await;
    // A CID the session does not have.
    let code = a
        .logout(LogoutReason::CLOSE_CONNECTION, 9, 0x35, sn.wrapping_add(5))
        .await;
    assert_eq!(code, LogoutResponseCode::CID_NOT_FOUND.0);

    // The loss of a connection (no logout) leaves the session: D joins,
    // its TCP connection drops, A still works and another CID still joins.
    let d = join(t.addr, name, isid, a.login.tsih, 3, sn.wrapping_add(6))
        .await
        .expect("CID 3 joins");
    d.raw.reset().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.ping(0x36, sn.wrapping_add(6)).await;
    let mut e = join(t.addr, name, isid, a.login.tsih, 4, sn.wrapping_add(7))
        .await
        .expect("the session outlives a lost connection");

    // Reason 0 on E closes the session: A too.
    let code = e
        .logout(LogoutReason::CLOSE_SESSION, 4, 0x40, sn.wrapping_add(7))
        .await;
    assert_eq!(code, LogoutResponseCode::SUCCESS.0);
    assert!(e.closed_by_target().await);
    assert!(a.closed_by_target().await, "A closed with its session");
    let gone = join(t.addr, name, isid, a.login.tsih, 5, sn.wrapping_add(8)).await;
    assert!(
        matches!(gone, Err(LoginError::Refused(s)) if s == LoginStatus::SESSION_DOES_NOT_EXIST),
        "the session ended: {:?}",
        gone.err()
    );
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_beyond_the_cap_gets_too_many_connections() {
    let t = target(3).await;
    let isid = Isid::random(0x4341_5000);
    // The initiator offers 8: the session gets the target's cap, 3.
    let a = leading(t.addr, "cap", isid, 8).await;
    assert_eq!(a.login.params.max_connections, 3);
    let sn = a.login.cmd_sn;
    let mut joined = Vec::new();
    for cid in 1..3 {
        joined.push(
            join(t.addr, "cap", isid, a.login.tsih, cid, sn)
                .await
                .expect("within the cap"),
        );
    }
    let over = join(t.addr, "cap", isid, a.login.tsih, 3, sn).await;
    assert!(
        matches!(over, Err(LoginError::Refused(s)) if s == LoginStatus::TOO_MANY_CONNECTIONS),
        "the 4th connection: {:?}",
        over.err()
    );
    // One leaves: there is room again.
    let mut last = joined.pop().unwrap();
    assert_eq!(
        last.logout(LogoutReason::CLOSE_CONNECTION, 2, 1, sn).await,
        0
    );
    assert!(last.closed_by_target().await);
    join(t.addr, "cap", isid, a.login.tsih, 3, sn)
        .await
        .expect("room after a logout");

    // The initiator offers 2 under a cap of 3: the session gets 2.
    let isid = Isid::random(0x4341_5001);
    let a = leading(t.addr, "cap2", isid, 2).await;
    assert_eq!(a.login.params.max_connections, 2);
    let sn = a.login.cmd_sn;
    let _b = join(t.addr, "cap2", isid, a.login.tsih, 1, sn)
        .await
        .unwrap();
    let over = join(t.addr, "cap2", isid, a.login.tsih, 2, sn).await;
    assert!(
        matches!(over, Err(LoginError::Refused(s)) if s == LoginStatus::TOO_MANY_CONNECTIONS),
        "{:?}",
        over.err()
    );
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_of_1_keeps_one_connection_per_session() {
    let t = target(1).await;
    let isid = Isid::random(0x4f4e_4500);
    let mut a = leading(t.addr, "one", isid, 4).await;
    assert_eq!(a.login.params.max_connections, 1, "min(offer 4, cap 1)");
    let sn = a.login.cmd_sn;
    let over = join(t.addr, "one", isid, a.login.tsih, 1, sn).await;
    assert!(
        matches!(over, Err(LoginError::Refused(s)) if s == LoginStatus::TOO_MANY_CONNECTIONS),
        "{:?}",
        over.err()
    );
    let sn = clear_unit_attention(&mut a, sn).await;
    a.ping(1, sn).await;
    let sn = sn.wrapping_add(1);
    // The same CID reinstates the connection: the old one closes, the
    // session goes on on the new one.
    let mut r = join(t.addr, "one", isid, a.login.tsih, 0, sn)
        .await
        .expect("connection reinstatement");
    assert!(
        a.closed_by_target().await,
        "the reinstated connection closed"
    );
    r.ping(2, sn).await;
    // As without MC/S, the session starts over on a new nexus (a unit
    // attention may come first).
    let sn = clear_unit_attention(&mut r, sn.wrapping_add(1)).await;
    let data = pattern(9, 4096);
    r.send(&write_cmd(3, sn, 0, &data, true)).await;
    assert_eq!(r.answer().await.status, 0);
    t.shutdown().await.unwrap();
}

/// Sends the data an R2T asks for, in Data-Outs of `seg` bytes.
async fn answer_r2t(c: &mut Conn, itt: u32, r2t: &iesp_proto::pdu::R2t, data: &Bytes, seg: usize) {
    let (off, len) = (
        r2t.buffer_offset as usize,
        r2t.desired_data_transfer_length as usize,
    );
    let mut frames = Vec::new();
    for (sn, at) in (off..off + len).step_by(seg).enumerate() {
        let end = (at + seg).min(off + len);
        let d = DataOut {
            final_bit: end == off + len,
            lun: Lun(0),
            itt,
            ttt: r2t.ttt,
            exp_stat_sn: c.exp_stat_sn,
            data_sn: sn as u32,
            buffer_offset: at as u32,
        };
        frames.push(Frame::with_data(&Pdu::DataOut(d), data.slice(at..end)));
    }
    c.raw.send_batch(&frames).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_of_a_session_share_its_memory() {
    const WRITE: usize = 8 << 20;
    let cfg = TargetConfig {
        limits: Limits {
            max_connections_per_session: 2,
            session_memory: WRITE as u64,
            ..Limits::default()
        },
        ..TargetConfig::default()
    };
    let t = EmbeddedTarget::start(cfg).await.expect("target");
    let (mut a, mut b, sn) = pair(&t, "memory").await;
    let (x, y) = (pattern(3, WRITE), pattern(4, WRITE));
    // A's 8 MiB write takes the session's whole share: its R2T leaves.
    a.send(&write_cmd(0x50, sn, 0, &x, false)).await;
    let ra = match a.next(WAIT).await {
        Some(Pdu::R2t(r)) => r,
        other => panic!("expected A's R2T, got {other:?}"),
    };
    // B's, in the same session, waits for memory: no R2T yet.
    b.send(&write_cmd(0x60, sn.wrapping_add(1), 16384, &y, false))
        .await;
    b.quiet("an R2T beyond the session's memory share").await;
    // A's data frees the share; then B's R2T comes.
    answer_r2t(&mut a, 0x50, &ra, &x, 256 * 1024).await;
    assert_eq!(a.answer().await.status, 0);
    let rb = match b.next(WAIT).await {
        Some(Pdu::R2t(r)) => r,
        other => panic!("expected B's R2T once A's write completed, got {other:?}"),
    };
    answer_r2t(&mut b, 0x60, &rb, &y, 256 * 1024).await;
    assert_eq!(b.answer().await.status, 0);
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_held_on_a_lost_connection_do_not_stall_the_session() {
    let t = target(4).await;
    let (mut a, mut b, sn) = pair(&t, "lost").await;
    let data = pattern(0x21, 4096);
    // A holds CmdSN sn+1 (sn is missing), then its TCP connection drops.
    a.send(&write_cmd(0x70, sn.wrapping_add(1), 200, &data, true))
        .await;
    a.quiet("a command ahead of ExpCmdSN ran").await;
    a.raw.reset().unwrap();
    // B fills sn; sn+1 ended with A (whenever the target notices the
    // loss), so sn+2 on B runs.
    b.send(&read_cmd(0x80, sn, 200, 8)).await;
    assert_eq!(b.answer().await.status, 0);
    b.send(&read_cmd(0x81, sn.wrapping_add(2), 200, 8)).await;
    let r = b.answer().await;
    assert_eq!((r.itt, r.status), (0x81, 0));
    assert_eq!(r.exp_cmd_sn, sn.wrapping_add(3));
    t.shutdown().await.unwrap();
}

/// A READ's data may go from a file LUN to the socket with sendfile(2),
/// where the page cache's pages, not a copy, wait to be sent; the fence that
/// keeps a later WRITE off them watches one connection. So in a session that
/// may have several, reads are copied: a WRITE on B issued (CmdSN) after a
/// 1 MiB READ on A, and completed before A's data is even read, must not
/// change what the READ returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_connection_does_not_change_a_read_before_it_on_the_other() {
    const READ_BLOCKS: u32 = 2048;
    const ROUNDS: u64 = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lun.img");
    let old = pattern(0x3c, (ROUNDS * u64::from(READ_BLOCKS * BLOCK)) as usize);
    std::fs::write(&path, &old).expect("LUN file");
    let mut cfg = TargetConfig {
        limits: Limits {
            max_connections_per_session: 4,
            ..Limits::default()
        },
        ..TargetConfig::default()
    };
    cfg.targets[0].luns = vec![iesp_target::config::LunSpec {
        backing: iesp_target::config::Backing::File {
            path: path.clone(),
            size: None,
        },
        block_size: BLOCK,
        read_only: false,
    }];
    let t = EmbeddedTarget::start(cfg).await.expect("target");
    let (mut a, mut b, mut sn) = pair(&t, "fence").await;
    for round in 0..ROUNDS {
        let lba = round * u64::from(READ_BLOCKS);
        let mid = lba + u64::from(READ_BLOCKS) - 8;
        let new = pattern(0xa0 + round as u8, 4096);
        a.send(&read_cmd(0x100 + round as u32, sn, lba, READ_BLOCKS))
            .await;
        b.send(&write_cmd(
            0x200 + round as u32,
            sn.wrapping_add(1),
            mid,
            &new,
            true,
        ))
        .await;
        let w = b.answer().await;
        assert_eq!(w.status, 0, "round {round}: the write");
        let r = a.answer().await;
        assert_eq!(r.status, 0, "round {round}: the read");
        let at = (lba * u64::from(BLOCK)) as usize;
        let want = &old[at..at + (READ_BLOCKS * BLOCK) as usize];
        assert!(
            r.data == want,
            "round {round}: the READ (CmdSN {sn}) returned data of the WRITE behind it (first difference at byte {:?})",
            r.data.iter().zip(want).position(|(x, y)| x != y)
        );
        sn = sn.wrapping_add(2);
    }
    t.shutdown().await.unwrap();
}
