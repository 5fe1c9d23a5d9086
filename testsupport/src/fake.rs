//! A scripted fake iSCSI target on loopback: the cases a well-behaved
//! target does not produce on demand (a login answer outside the legal
//! range, a dropped connection with commands outstanding, target pings, a
//! closed CmdSN window, broken R2Ts and Data-In sequences).
//!
//! [`FakeTarget`] binds `127.0.0.1:0` and runs a test's script on each
//! accepted connection. The script gets a [`FakeConn`]: our
//! [`RawConnection`] (any PDU, any field) plus the target-side sequence
//! state (StatSN, ExpCmdSN, the CmdSN window) and helpers that keep it, so
//! a scenario reads like a protocol transcript:
//!
//! ```no_run
//! # async fn demo() {
//! use iesp_proto::pdu::Residual;
//! use iesp_proto::scsi::ScsiStatus;
//! use iesp_testsupport::fake::{FakeTarget, LoginAnswers};
//!
//! let fake = FakeTarget::start(|mut t| async move {
//!     // iESP's answer whatever is offered (RFC 7143 §13.14 allows at most
//!     // the offer).
//!     t.login_with(&LoginAnswers::new().answer("FirstBurstLength", "268435456"))
//!         .await;
//!     let c = t.recv_command().await;
//!     t.respond(c.itt, ScsiStatus::GOOD, Residual::None).await;
//! })
//! .await;
//! // … log in to fake.addr() and send one command …
//! fake.join().await; // the script's panics fail the test here
//! # }
//! ```
//!
//! # Login
//!
//! [`FakeConn::login_with`] answers Login Requests until full feature
//! phase (RFC 7143 §6.3): every negotiated key (§13) the initiator offers
//! is answered with the first value of its offer unless [`LoginAnswers`]
//! says otherwise, declarations are recorded, and each stage transits as
//! soon as the initiator asks to. The answered HeaderDigest/DataDigest take
//! effect on the connection afterwards. CHAP is not implemented: scripts
//! that need it answer the security stage themselves with
//! [`FakeConn::recv`] and [`FakeConn::send`].
//!
//! Everything here panics on a protocol surprise (a test helper: the panic
//! message carries the connection's trace), and [`FakeTarget::join`] hands
//! the panic to the test.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iesp_initiator::{RawConnection, Received};
use iesp_proto::framing::{Frame, FrameConfig};
use iesp_proto::negotiation::{self, KeyKind};
use iesp_proto::pdu::{
    LoginResponse, LoginStatus, Pdu, Residual, ScsiCommand, ScsiResponse, Stage,
};
use iesp_proto::scsi::ScsiStatus;
use iesp_proto::text::{self, KeyValue};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long the fake waits for the initiator's next PDU by default.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// StatSN of the first Login Response (an arbitrary non-zero value, so
/// that an initiator assuming 0 shows up).
const FIRST_STAT_SN: u32 = 10;

/// TSIH the fake gives a new session.
const TSIH: u16 = 1;

/// How the fake answers the login.
#[derive(Debug, Clone, Default)]
pub struct LoginAnswers {
    /// Negotiated keys answered with this value whatever was offered.
    answers: Vec<(String, String)>,
    /// Declarations added to the first operational-stage response.
    declarations: Vec<(String, String)>,
    /// Status of the final Login Response; `None` is success.
    refuse: Option<LoginStatus>,
}

impl LoginAnswers {
    /// Answers every offered key with the first value of the offer and
    /// declares nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `key` with `value` whenever the initiator offers it, legal
    /// or not (e.g. `FirstBurstLength=268435456` above the offer).
    pub fn answer(mut self, key: &str, value: &str) -> Self {
        self.answers.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Declares `key=value` in the first operational-stage response, e.g.
    /// `MaxRecvDataSegmentLength=512` so that long requests go in parts.
    pub fn declare(mut self, key: &str, value: &str) -> Self {
        self.declarations.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Answers the first Login Request with `status` (a refusal) and ends
    /// the login there.
    pub fn refuse(mut self, status: LoginStatus) -> Self {
        self.refuse = Some(status);
        self
    }

    fn answer_for(&self, key: &str) -> Option<&str> {
        self.answers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The target side of one connection, with its sequence numbers.
pub struct FakeConn {
    /// The connection: send and receive anything.
    pub conn: RawConnection,
    /// The StatSN the next status-bearing PDU carries.
    pub stat_sn: u32,
    /// The CmdSN the target expects next.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN − ExpCmdSN + 1 announced in every response; 0 closes the
    /// window (MaxCmdSN = ExpCmdSN − 1, RFC 7143 §4.2.2.1).
    pub window: u32,
    /// Every key=value the initiator sent during login, in order.
    pub offered: Vec<KeyValue>,
}

impl FakeConn {
    /// Wraps an accepted connection: StatSN starts at 10, the window at 64.
    pub fn new(conn: RawConnection) -> FakeConn {
        FakeConn {
            conn,
            stat_sn: FIRST_STAT_SN,
            exp_cmd_sn: 0,
            window: 64,
            offered: Vec::new(),
        }
    }

    /// MaxCmdSN for the current window.
    pub fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(self.window).wrapping_sub(1)
    }

    /// The StatSN for the next status-bearing PDU, advancing it.
    pub fn next_stat_sn(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        s
    }

    /// The value the initiator offered for `key` during login.
    pub fn offered(&self, key: &str) -> Option<&str> {
        self.offered
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_str())
    }

    /// [`FakeConn::login_with`] the default answers.
    pub async fn login(&mut self) {
        self.login_with(&LoginAnswers::new()).await;
    }

    /// Answers Login Requests as `answers` says until full feature phase
    /// (or the refusal).
    ///
    /// # Panics
    ///
    /// When something other than a well-formed Login Request arrives.
    pub async fn login_with(&mut self, answers: &LoginAnswers) {
        let mut declared = false;
        let mut digests = (false, false);
        loop {
            let f = self.recv().await;
            let Pdu::LoginRequest(req) = f.pdu() else {
                panic!(
                    "the fake target expected a Login Request, got {:?}\n{}",
                    f.bhs.opcode(),
                    self.conn.trace()
                );
            };
            self.exp_cmd_sn = req.cmd_sn;
            let pairs = text::decode(&f.data)
                .unwrap_or_else(|e| panic!("Login Request text does not decode: {e}"));
            let mut out = Vec::new();
            for kv in pairs {
                let negotiated = negotiation::key_def(&kv.key)
                    .is_some_and(|d| matches!(d.kind, KeyKind::Negotiated(_)));
                if negotiated {
                    let value = match answers.answer_for(&kv.key) {
                        Some(v) => v.to_owned(),
                        None => kv.value.split(',').next().unwrap_or_default().to_owned(),
                    };
                    match kv.key.as_str() {
                        "HeaderDigest" => digests.0 = value == "CRC32C",
                        "DataDigest" => digests.1 = value == "CRC32C",
                        _ => {}
                    }
                    out.push(KeyValue::new(kv.key.clone(), value));
                }
                self.offered.push(kv);
            }
            if req.csg == Stage::OPERATIONAL && !declared {
                declared = true;
                for (k, v) in &answers.declarations {
                    out.push(KeyValue::new(k.clone(), v.clone()));
                }
            }
            let refused = answers.refuse;
            let done = refused.is_some() || (req.transit && req.nsg == Stage::FULL_FEATURE);
            let transit = req.transit && refused.is_none();
            let rsp = LoginResponse {
                transit,
                csg: req.csg,
                nsg: if transit { req.nsg } else { Stage(0) },
                isid: req.isid,
                tsih: if done && refused.is_none() { TSIH } else { 0 },
                itt: req.itt,
                stat_sn: self.next_stat_sn(),
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                status: refused.unwrap_or(LoginStatus::SUCCESS),
                ..LoginResponse::default()
            };
            let data = if refused.is_some() {
                Bytes::new()
            } else {
                Bytes::from(text::encode_to_vec(&out))
            };
            self.send(Pdu::LoginResponse(rsp), data).await;
            if done {
                if refused.is_none() {
                    let cfg = self.conn.frame_config();
                    self.conn.set_frame_config(FrameConfig {
                        header_digest: digests.0,
                        data_digest: digests.1,
                        ..cfg
                    });
                }
                return;
            }
        }
    }

    /// The next PDU, within [`RECV_TIMEOUT`].
    ///
    /// # Panics
    ///
    /// When none arrives, with the connection's trace.
    pub async fn recv(&mut self) -> Frame {
        self.recv_within(RECV_TIMEOUT).await
    }

    /// The next PDU, within `timeout`.
    ///
    /// # Panics
    ///
    /// When none arrives, with the connection's trace.
    pub async fn recv_within(&mut self, timeout: Duration) -> Frame {
        match self.conn.recv(timeout).await {
            Received::Frame(f) => f,
            other => panic!("the fake target got {other:?}:\n{}", self.conn.trace()),
        }
    }

    /// The next PDU, which must be a SCSI Command; a non-immediate one
    /// advances ExpCmdSN.
    ///
    /// # Panics
    ///
    /// When something else arrives.
    pub async fn recv_command(&mut self) -> ScsiCommand {
        let f = self.recv().await;
        match f.pdu() {
            Pdu::ScsiCommand(c) => {
                if !c.immediate {
                    self.exp_cmd_sn = c.cmd_sn.wrapping_add(1);
                }
                c
            }
            other => panic!("the fake target expected a SCSI Command, got {other:?}"),
        }
    }

    /// Sends `pdu` with `data` as it is (the script sets every field).
    ///
    /// # Panics
    ///
    /// When the connection is gone.
    pub async fn send(&mut self, pdu: Pdu, data: Bytes) {
        if let Err(e) = self.conn.send_pdu(&pdu, data).await {
            panic!("the fake target cannot send: {e}");
        }
    }

    /// Sends a SCSI Response for `itt` with the next StatSN and the
    /// current window.
    pub async fn respond(&mut self, itt: u32, status: ScsiStatus, residual: Residual) {
        let rsp = ScsiResponse {
            itt,
            status: status.0,
            residual,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            ..ScsiResponse::default()
        };
        self.send(Pdu::ScsiResponse(rsp), Bytes::new()).await;
    }
}

/// A fake target listening on `127.0.0.1:<ephemeral>`; the listener and
/// any running script are aborted on drop.
pub struct FakeTarget {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl FakeTarget {
    /// Accepts one connection and runs `script` on it; further connection
    /// attempts are refused once it has been accepted.
    ///
    /// # Panics
    ///
    /// When loopback cannot be bound.
    pub async fn start<F, Fut>(script: F) -> FakeTarget
    where
        F: FnOnce(FakeConn) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (listener, addr) = bind().await;
        let task = tokio::spawn(async move {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => panic!("the fake target cannot accept: {e}"),
            };
            drop(listener);
            script(FakeConn::new(raw(stream))).await;
        });
        FakeTarget {
            addr,
            task: Some(task),
        }
    }

    /// Runs `script` on every accepted connection, each in its own task,
    /// until dropped. A script's panic ends only its connection.
    ///
    /// # Panics
    ///
    /// When loopback cannot be bound.
    pub async fn serve<F, Fut>(script: F) -> FakeTarget
    where
        F: Fn(FakeConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (listener, addr) = bind().await;
        let script = Arc::new(script);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let script = Arc::clone(&script);
                conns.spawn(async move { script(FakeConn::new(raw(stream))).await });
                // Reap finished connections as we go.
                while conns.try_join_next().is_some() {}
            }
        });
        FakeTarget {
            addr,
            task: Some(task),
        }
    }

    /// The portal address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the script of [`FakeTarget::start`] to finish.
    ///
    /// # Panics
    ///
    /// With the script's own panic, so its assertion fails the test.
    pub async fn join(mut self) {
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(e) => panic!("the fake target's script was cancelled: {e}"),
                }
            }
        }
    }
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A loopback portal that never answers a connection attempt, like a
/// portal behind a firewall that drops SYNs: for connect-timeout tests,
/// without sending anything off the machine.
///
/// A listening socket that merely never calls `accept` is not enough: the
/// kernel completes handshakes on its own until the accept queue is full.
/// So this listens with a backlog of 0 and fills the queue with its own
/// connections; Linux then drops further SYNs, and a `connect` to
/// [`BlackholePortal::addr`] hangs until the caller's timeout.
#[derive(Debug)]
pub struct BlackholePortal {
    addr: SocketAddr,
    /// Kept open so the queue stays full; never accepted.
    _listener: std::net::TcpListener,
    _fillers: Vec<std::net::TcpStream>,
}

impl BlackholePortal {
    /// How long one filling connect may take before the queue counts as
    /// full.
    const FILL_PROBE: Duration = Duration::from_millis(200);
    /// At most this many connections fill the queue (Linux takes backlog
    /// + 1 = 1).
    const MAX_FILLERS: usize = 8;

    /// Binds `127.0.0.1:0` and fills its accept queue.
    pub fn new() -> std::io::Result<BlackholePortal> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        socket.listen(0)?;
        let listener: std::net::TcpListener = socket.into();
        let addr = listener.local_addr()?;
        let mut fillers = Vec::new();
        while fillers.len() < Self::MAX_FILLERS {
            match std::net::TcpStream::connect_timeout(&addr, Self::FILL_PROBE) {
                Ok(s) => fillers.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                Err(e) => return Err(e),
            }
        }
        if fillers.len() == Self::MAX_FILLERS {
            return Err(std::io::Error::other(
                "the accept queue never filled: this kernel answers every SYN",
            ));
        }
        Ok(BlackholePortal {
            addr,
            _listener: listener,
            _fillers: fillers,
        })
    }

    /// The address that never answers.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("the fake target cannot bind loopback: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("the fake target has no address: {e}"),
    };
    (listener, addr)
}

fn raw(stream: tokio::net::TcpStream) -> RawConnection {
    RawConnection::from_stream(stream)
        .unwrap_or_else(|e| panic!("the fake target cannot set up the connection: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iesp_initiator::{LoginOptions, Session};
    use iesp_proto::bhs::Lun;

    const INITIATOR: &str = "iqn.2026-11.org.iesp-test:fake";
    const IQN: &str = "iqn.2026-11.org.iesp-test:fake-target";

    #[tokio::test]
    async fn default_login_then_a_scripted_command() {
        let fake = FakeTarget::start(|mut t| async move {
            t.login_with(&LoginAnswers::new().declare("MaxRecvDataSegmentLength", "512"))
                .await;
            assert_eq!(t.offered("InitiatorName"), Some(INITIATOR));
            assert_eq!(t.offered("TargetName"), Some(IQN));
            let c = t.recv_command().await;
            assert_eq!(c.cmd_sn.wrapping_add(1), t.exp_cmd_sn);
            t.respond(c.itt, ScsiStatus::GOOD, Residual::None).await;
        })
        .await;
        let s = Session::login(fake.addr(), LoginOptions::new(INITIATOR, Some(IQN)))
            .await
            .unwrap();
        assert_eq!(s.params().target_mrdsl, 512);
        let r = s.command(Lun(0), &[0u8; 6], Bytes::new(), 0).await.unwrap();
        assert!(r.is_good());
        fake.join().await;
    }

    /// The answer the fake is for: a value outside the legal range reaches
    /// the initiator as written.
    #[tokio::test]
    async fn answers_a_key_with_the_scripted_value() {
        let fake = FakeTarget::start(|mut t| async move {
            t.login_with(&LoginAnswers::new().answer("FirstBurstLength", "268435456"))
                .await;
        })
        .await;
        let mut c = RawConnection::connect(fake.addr()).await.unwrap();
        let offer = [
            KeyValue::new("InitiatorName", INITIATOR),
            KeyValue::new("SessionType", "Normal"),
            KeyValue::new("TargetName", IQN),
            KeyValue::new("FirstBurstLength", "65536"),
            KeyValue::new("MaxBurstLength", "262144"),
        ];
        let req = iesp_proto::pdu::LoginRequest {
            transit: true,
            csg: Stage::OPERATIONAL,
            nsg: Stage::FULL_FEATURE,
            itt: 1,
            cmd_sn: 1,
            ..Default::default()
        };
        c.send_pdu(
            &Pdu::LoginRequest(req),
            Bytes::from(text::encode_to_vec(&offer)),
        )
        .await
        .unwrap();
        let f = c.recv(RECV_TIMEOUT).await.frame().unwrap();
        let Pdu::LoginResponse(rsp) = f.pdu() else {
            panic!("not a Login Response");
        };
        assert_eq!(rsp.status, LoginStatus::SUCCESS);
        assert_eq!((rsp.stat_sn, rsp.tsih), (FIRST_STAT_SN, TSIH));
        let got = text::decode(&f.data).unwrap();
        let value = |k: &str| got.iter().find(|kv| kv.key == k).map(|kv| kv.value.clone());
        assert_eq!(value("FirstBurstLength").as_deref(), Some("268435456"));
        assert_eq!(value("MaxBurstLength").as_deref(), Some("262144"));
        assert_eq!(
            value("InitiatorName"),
            None,
            "declarations are not answered"
        );
        fake.join().await;
    }

    #[tokio::test]
    async fn a_refusal_ends_the_login() {
        let fake = FakeTarget::start(|mut t| async move {
            t.login_with(&LoginAnswers::new().refuse(LoginStatus::NOT_FOUND))
                .await;
        })
        .await;
        let r = Session::login(fake.addr(), LoginOptions::new(INITIATOR, Some(IQN))).await;
        assert!(r.is_err(), "login to a refusing target succeeded");
        fake.join().await;
    }

    #[tokio::test]
    async fn script_panics_reach_the_test() {
        let fake = FakeTarget::start(|mut t| async move {
            t.recv_within(Duration::from_millis(50)).await;
        })
        .await;
        let _quiet = RawConnection::connect(fake.addr()).await.unwrap();
        let joined = tokio::spawn(fake.join()).await;
        let panic = joined.unwrap_err().into_panic();
        let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("Timeout"), "{msg}");
    }

    #[tokio::test]
    async fn a_blackhole_portal_never_completes_a_connect() {
        let portal = BlackholePortal::new().unwrap();
        assert!(portal.addr().ip().is_loopback());
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(portal.addr()),
        )
        .await;
        assert!(r.is_err(), "connect finished: {r:?}");
        assert!(started.elapsed() >= Duration::from_millis(500));
        let r = std::net::TcpStream::connect_timeout(&portal.addr(), Duration::from_millis(300));
        assert_eq!(
            r.map(drop).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::TimedOut)
        );
    }

    #[tokio::test]
    async fn serve_runs_the_script_per_connection() {
        let fake = FakeTarget::serve(|mut t| async move {
            while let Received::Frame(f) = t.conn.recv(RECV_TIMEOUT).await {
                t.conn.send_bytes(&f.bhs.0).await.unwrap();
            }
        })
        .await;
        for _ in 0..3 {
            let mut c = RawConnection::connect(fake.addr()).await.unwrap();
            let nop = iesp_proto::pdu::NopOut {
                immediate: true,
                lun: Lun(0),
                itt: 9,
                ttt: iesp_proto::bhs::RESERVED_TAG,
                cmd_sn: 1,
                exp_stat_sn: 0,
            };
            c.send_pdu(&Pdu::NopOut(nop), Bytes::new()).await.unwrap();
            let back = c.recv(RECV_TIMEOUT).await.frame().unwrap();
            assert_eq!(back.bhs.itt(), 9);
        }
    }
}
