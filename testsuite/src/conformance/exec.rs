//! The executor: connections, automatic sequence numbers, sending PDUs from
//! templates, receiving with expectations. Script steps and Rust cases both
//! drive a [`Ctx`].
//!
//! ## What is automatic (RFC 7143 §4.2.2)
//!
//! Per connection the executor keeps the next CmdSN, ExpStatSN and ITT, as a
//! correct initiator would:
//!
//! - **CmdSN**: every PDU that carries one gets the connection's next
//!   CmdSN; a non-immediate one (I=0, not a Login) then advances it. A
//!   step that sets CmdSN itself leaves the counter alone — it is
//!   deliberately out of sequence.
//! - **ExpStatSN**: the StatSN of the last status-bearing PDU received
//!   plus one (SCSI, TMF, Text, Logout and Login Responses, Reject, Async,
//!   NOP-In answering a ping, Data-In with S=1).
//! - **ITT**: a fresh tag for each PDU that starts a task; Data-Out and
//!   SNACK take the last SCSI Command's; Login keeps one tag per
//!   connection.
//!
//! Every field can still be overridden by its RFC name
//! ([`iesp_proto::pdu::fields`]), and a PDU can be sent verbatim (lengths
//! not corrected) or with a corrupted digest.
//!
//! ## Outcomes
//!
//! A step that finds the target at fault returns [`Fail::Check`] with the
//! expected-versus-actual fields; a gate or negotiation outcome that makes
//! the case meaningless returns [`Fail::Skip`]; a problem of the harness
//! itself (cannot connect, a script refers to an unknown variable) returns
//! [`Fail::Error`].
//!
//! ## Out-of-range login answers (RFC 7143 §6.2)
//!
//! Logins through the initiator ([`Ctx::login_with`], the runner's setup)
//! follow [`Ctx::negotiation`]. Strict (the default): an answer outside the
//! legal range of our offer (iESP answers FirstBurstLength =
//! MaxBurstLength = 268435456 whatever is offered) fails the login, and the
//! case with it, naming the key and the value. Lenient (`conformance
//! --tolerate-negotiation`): the initiator's clamp (the proto negotiator's,
//! not a second one here) puts the legal value in force, the case goes on,
//! and a note starting with [`NEGOTIATION_NOTE`] records the answer. Either
//! way every such answer is kept in [`Ctx::negotiation_defects`], so that
//! the run can name the one cause of many setup failures.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iesp_initiator::raw::{RawConnection, Received};
use iesp_initiator::{
    ChapCredentials, LoginError, LoginOptions, LoginOutcome, NegotiationPolicy, NegotiationWarning,
    login,
};
use iesp_proto::bhs::{Bhs, Lun, Opcode, RESERVED_TAG};
use iesp_proto::framing::{self, Frame, FrameConfig, FrameError};
use iesp_proto::negotiation::{Digest, Negotiator, Phase, Role, SessionParams, SessionType};
use iesp_proto::pdu::{
    AsyncEvent, Isid, LoginStatus, LogoutReason, LogoutResponseCode, RejectReason,
    ScsiResponseCode, SnackType, Stage, TaskAttr, TmfFunction, TmfResponse, fields,
};
use iesp_proto::scsi::{ScsiStatus, Sense};
use iesp_proto::text::{self, KeyValue};

use super::matchers::{MatchError, Matcher, Mismatch, show_int};
use super::profile::Profile;
use super::value::{Vars, eval_int, hex, interpolate};

/// The target under test.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    pub addr: SocketAddr,
    /// The TargetName of normal sessions.
    pub target_name: String,
    /// The disk LUN SCSI cases use; `None` skips them.
    pub lun: Option<u16>,
    pub initiator_name: String,
    pub chap: Option<ChapCredentials>,
    pub mutual_chap: Option<ChapCredentials>,
}

/// Default waits.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long to wait for an expected PDU.
    pub response: Duration,
    /// How long "nothing arrives" must last.
    pub silence: Duration,
    /// How long to wait for the target to close a connection.
    pub disconnect: Duration,
    /// How long a TCP connect may take.
    pub connect: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            response: Duration::from_secs(3),
            silence: Duration::from_millis(300),
            disconnect: Duration::from_secs(3),
            connect: iesp_initiator::DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// A target behaviour that broke the rule checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub mismatches: Vec<Mismatch>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for m in &self.mismatches {
            write!(f, "\n  {m}")?;
        }
        Ok(())
    }
}

/// Why a case did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fail {
    /// The target did not do what the case requires.
    Check(Failure),
    /// The case does not apply to this target or session.
    Skip(String),
    /// The harness could not run the case.
    Error(String),
}

impl Fail {
    pub fn check(msg: impl Into<String>) -> Fail {
        Fail::Check(Failure {
            message: msg.into(),
            mismatches: Vec::new(),
        })
    }

    pub fn mismatch(msg: impl Into<String>, mismatches: Vec<Mismatch>) -> Fail {
        Fail::Check(Failure {
            message: msg.into(),
            mismatches,
        })
    }

    pub fn skip(msg: impl Into<String>) -> Fail {
        Fail::Skip(msg.into())
    }

    pub fn error(msg: impl Into<String>) -> Fail {
        Fail::Error(msg.into())
    }

    /// Prefixes the message with where it happened.
    pub fn context(self, at: &str) -> Fail {
        match self {
            Fail::Check(mut f) => {
                f.message = format!("{at}: {}", f.message);
                Fail::Check(f)
            }
            Fail::Skip(s) => Fail::Skip(s),
            Fail::Error(e) => Fail::Error(format!("{at}: {e}")),
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Check(x) => x.fmt(f),
            Fail::Skip(s) => write!(f, "skipped: {s}"),
            Fail::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Shorthand for "the target must do X".
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Fail> {
    if cond {
        Ok(())
    } else {
        Err(Fail::check(msg()))
    }
}

/// One connection of a case and the sequence state kept for it.
pub struct Conn {
    pub name: String,
    raw: Option<RawConnection>,
    /// The target closed it (or reset it).
    pub closed: bool,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// StatSN of the last status-bearing PDU received.
    pub last_stat_sn: Option<u32>,
    next_itt: u32,
    pub login_itt: u32,
    pub isid: Isid,
    pub tsih: u16,
    pub cid: u16,
    pub params: SessionParams,
    pub session_type: SessionType,
    /// In full feature phase.
    pub logged_in: bool,
    /// The ITT of the last SCSI Command sent (Data-Out and SNACK default).
    pub last_task_itt: u32,
    /// The header of the last PDU sent, as it went on the wire.
    pub last_sent: Option<Bhs>,
    /// Keys the target sent during a scripted login.
    pub login_keys: Vec<KeyValue>,
    /// The trace of an earlier connection under the same name.
    archived_trace: Vec<String>,
}

impl Conn {
    fn new(name: &str, raw: RawConnection, isid: Isid) -> Conn {
        Conn {
            name: name.to_owned(),
            raw: Some(raw),
            closed: false,
            cmd_sn: 1,
            exp_stat_sn: 0,
            exp_cmd_sn: 1,
            max_cmd_sn: 1,
            last_stat_sn: None,
            next_itt: 0x100,
            login_itt: 0,
            isid,
            tsih: 0,
            cid: 0,
            params: SessionParams::default(),
            session_type: SessionType::Normal,
            logged_in: false,
            last_task_itt: RESERVED_TAG,
            last_sent: None,
            login_keys: Vec::new(),
            archived_trace: Vec::new(),
        }
    }

    /// A fresh ITT (never the reserved 0xffffffff).
    pub fn new_itt(&mut self) -> u32 {
        let t = self.next_itt;
        self.next_itt = self.next_itt.wrapping_add(1);
        if self.next_itt == RESERVED_TAG {
            self.next_itt = 0x100;
        }
        t
    }

    /// The raw connection.
    pub fn raw(&mut self) -> Result<&mut RawConnection, Fail> {
        self.raw
            .as_mut()
            .ok_or_else(|| Fail::error(format!("connection {} was closed by the case", self.name)))
    }

    /// The frame config in force.
    pub fn frame_config(&self) -> FrameConfig {
        self.raw
            .as_ref()
            .map(|r| r.frame_config())
            .unwrap_or_default()
    }

    fn trace_lines(&self) -> Vec<String> {
        let mut out = self.archived_trace.clone();
        if let Some(r) = &self.raw {
            out.extend(r.trace().entries().map(|e| e.to_string()));
        }
        out
    }
}

/// What arrived.
#[derive(Debug)]
pub enum Event {
    Pdu(Frame),
    Timeout,
    Closed,
    Malformed(String),
}

impl Event {
    /// One line, for failure messages.
    pub fn describe(&self) -> String {
        match self {
            Event::Pdu(f) => describe_frame(f),
            Event::Timeout => "nothing (timeout)".to_owned(),
            Event::Closed => "the connection closed".to_owned(),
            Event::Malformed(e) => format!("a malformed PDU: {e}"),
        }
    }
}

/// `Reject Reason=0x9 StatSN=5 dsl=48` — the opcode and its key fields.
pub fn describe_frame(f: &Frame) -> String {
    let op = f.bhs.opcode();
    let mut s = format!("{op:?}");
    let interesting = [
        "ITT",
        "Reason",
        "Response",
        "Status",
        "StatusClass",
        "StatusDetail",
        "T",
        "C",
        "F",
        "S",
        "TTT",
        "StatSN",
        "DataSN",
        "R2TSN",
        "BufferOffset",
        "DesiredDataTransferLength",
        "ResidualCount",
    ];
    for name in interesting {
        if let Some(field) = fields::lookup(op, name)
            && field.name == name
        {
            s.push_str(&format!(" {name}={:#x}", field.read(&f.bhs)));
        }
    }
    s.push_str(&format!(" dsl={}", f.data.len()));
    s
}

/// How to send a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendHow {
    /// Keep the header's lengths as given.
    pub verbatim: bool,
    /// Flip the header digest.
    pub bad_header_digest: bool,
    /// Flip the data digest.
    pub bad_data_digest: bool,
}

/// A data segment source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSrc {
    Bytes(Vec<u8>),
    /// `len` bytes of a position-dependent pattern (byte i is `i * 7 + 1`).
    Pattern(String),
    /// `len` bytes of one value.
    Fill(String, u8),
    /// Text pairs (`key=value` each; `@identity`, `@discovery`,
    /// `@operational`, `@security` expand to the usual offers).
    Text(Vec<String>),
}

/// A PDU to send: opcode, field overrides, segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendSpec {
    pub op: Opcode,
    /// Field name and value source (number, `$var`, `${expr}`, symbol).
    pub fields: Vec<(String, String)>,
    pub data: Option<DataSrc>,
    pub ahs: Option<Vec<u8>>,
    /// CDB shorthand for a SCSI Command ([`super::cdb`]).
    pub cdb: Option<String>,
    pub how: SendHow,
    /// Keep the sent PDU as `name` (its fields become `name.Field`).
    pub name: Option<String>,
}

impl SendSpec {
    pub fn new(op: Opcode) -> SendSpec {
        SendSpec {
            op,
            fields: Vec::new(),
            data: None,
            ahs: None,
            cdb: None,
            how: SendHow::default(),
            name: None,
        }
    }

    /// Overrides a field with a number.
    pub fn set(mut self, name: &str, v: u64) -> SendSpec {
        self.fields.push((name.to_owned(), v.to_string()));
        self
    }

    /// Overrides a field with an expression or symbol.
    pub fn set_expr(mut self, name: &str, v: &str) -> SendSpec {
        self.fields.push((name.to_owned(), v.to_owned()));
        self
    }

    pub fn data(mut self, d: impl Into<Vec<u8>>) -> SendSpec {
        self.data = Some(DataSrc::Bytes(d.into()));
        self
    }

    pub fn text(mut self, pairs: &[&str]) -> SendSpec {
        self.data = Some(DataSrc::Text(
            pairs.iter().map(|s| (*s).to_owned()).collect(),
        ));
        self
    }

    pub fn cdb(mut self, spec: &str) -> SendSpec {
        self.cdb = Some(spec.to_owned());
        self
    }

    pub fn how(mut self, how: SendHow) -> SendSpec {
        self.how = how;
        self
    }

    pub fn named(mut self, name: &str) -> SendSpec {
        self.name = Some(name.to_owned());
        self
    }

    fn overrides(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| {
            n == name
                || fields::lookup(self.op, n)
                    .zip(fields::lookup(self.op, name))
                    .is_some_and(|(a, b)| a == b)
        })
    }
}

/// Matches a data segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataMatch {
    pub len: Option<Matcher>,
    pub exact: Option<Vec<u8>>,
    pub prefix: Option<Vec<u8>>,
    /// Equal to the data segment of the named sent PDU (`"last"` for the
    /// last one sent).
    pub echo_of: Option<String>,
    /// Matchers on bytes of the segment: `byteN`, `u16@N`, `u32@N`, `u64@N`,
    /// optionally masked: `byte3&0x0f`.
    pub fields: Vec<(String, Matcher)>,
    /// Every byte has this value.
    pub all: Option<u8>,
}

impl DataMatch {
    pub fn is_empty(&self) -> bool {
        self.len.is_none()
            && self.exact.is_none()
            && self.prefix.is_none()
            && self.echo_of.is_none()
            && self.fields.is_empty()
            && self.all.is_none()
    }
}

/// One acceptable event.
// Expectations are built once per step and matched a few times: their size
// does not matter, their shape being plain data does.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// A PDU of this opcode (any when `None`) whose fields, text keys and
    /// data match.
    Pdu {
        op: Option<Opcode>,
        fields: Vec<(String, Matcher)>,
        keys: Vec<(String, Matcher)>,
        data: DataMatch,
        /// For a Reject: its data must be the header of this sent PDU
        /// (`"last"`: the last one sent).
        rejected_header: Option<String>,
    },
    /// The target closes the connection.
    Disconnect,
    /// Nothing arrives for the silence time.
    Silence,
}

impl Expectation {
    /// Any PDU of `op`.
    pub fn pdu(op: Opcode) -> Expectation {
        Expectation::Pdu {
            op: Some(op),
            fields: Vec::new(),
            keys: Vec::new(),
            data: DataMatch::default(),
            rejected_header: None,
        }
    }

    /// Adds a field matcher to a PDU expectation.
    pub fn field(mut self, name: &str, m: Matcher) -> Expectation {
        if let Expectation::Pdu { fields, .. } = &mut self {
            fields.push((name.to_owned(), m));
        }
        self
    }

    /// A Reject with one of `reasons`, carrying the last sent header.
    pub fn reject(reasons: &[RejectReason]) -> Expectation {
        let list = reasons
            .iter()
            .map(|r| super::matchers::Bound::Int(r.0.to_string()))
            .collect();
        Expectation::Pdu {
            op: Some(Opcode::REJECT),
            fields: vec![(
                "Reason".to_owned(),
                Matcher {
                    tests: vec![super::matchers::Test::In(list)],
                    capture: None,
                    optional: false,
                },
            )],
            keys: Vec::new(),
            data: DataMatch::default(),
            rejected_header: Some("last".to_owned()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Expectation::Pdu {
                op, fields, keys, ..
            } => {
                let mut s = op.map_or_else(|| "any PDU".to_owned(), |o| format!("{o:?}"));
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(n, m)| format!("{n} {}", m.describe()))
                    .chain(
                        keys.iter()
                            .map(|(k, m)| format!("key {k} {}", m.describe())),
                    )
                    .collect();
                if !parts.is_empty() {
                    s.push_str(&format!(" ({})", parts.join(", ")));
                }
                s
            }
            Expectation::Disconnect => "the connection to close".to_owned(),
            Expectation::Silence => "silence".to_owned(),
        }
    }
}

/// A running case's state.
pub struct Ctx {
    pub target: Arc<TargetSpec>,
    pub timing: Timing,
    pub profile: Profile,
    pub vars: Vars,
    conns: Vec<Conn>,
    cur: usize,
    isid_base: [u8; 3],
    isid_count: u16,
    /// Sent PDUs kept by name.
    sent: HashMap<String, Frame>,
    /// The frame most recently sent on any connection.
    last_frame: Option<Frame>,
    /// LUN SCSI commands go to.
    pub lun: Lun,
    pub block_size: u32,
    pub blocks: u64,
    /// Notes for the report (what a case saw that is worth knowing).
    pub notes: Vec<String>,
    /// What initiator logins do with an answer outside the legal range
    /// (strict unless the run tolerates it).
    pub negotiation: NegotiationPolicy,
    /// The out-of-range answers initiator logins met, one per key (the
    /// first seen): those that failed a strict login and those a lenient
    /// one clamped.
    pub negotiation_defects: Vec<NegotiationWarning>,
    /// The target answered this case at least once (a PDU or a completed
    /// login): the runner's target-death detection tells a case that ran
    /// from one that found the target already gone.
    pub answered: bool,
    /// Every PDU from the target whose header or data digest was wrong:
    /// the runner fails the case on any (RFC 7143 §13.1), whatever else
    /// it concluded.
    pub digest_errors: Vec<String>,
}

/// The start of the note a case gets for each out-of-range login answer
/// (strict or tolerated); [`super::runner::negotiation_defects`] collects
/// them across a run.
pub const NEGOTIATION_NOTE: &str = "negotiation: ";

/// What such a note says when the (strict) login failed on the answer.
pub const NEGOTIATION_LOGIN_FAILED: &str = "the login failed";

/// `FirstBurstLength=268435456 to our offer 262144 (…); MaxBurstLength=…`.
pub fn describe_answers(ws: &[NegotiationWarning]) -> String {
    let parts: Vec<String> = ws
        .iter()
        .map(|w| {
            format!(
                "{}={} to our offer {} ({}; a lenient login uses {})",
                w.key, w.answered, w.offered, w.reason, w.used
            )
        })
        .collect();
    parts.join("; ")
}

impl Ctx {
    /// A context for one case; `seed` makes its ISIDs unique in the run.
    pub fn new(target: Arc<TargetSpec>, timing: Timing, profile: Profile, seed: u32) -> Ctx {
        let s = seed.to_be_bytes();
        let mut vars = Vars::default();
        vars.set_str("initiator", target.initiator_name.clone());
        vars.set_str("target", target.target_name.clone());
        vars.set_int("lun", u64::from(target.lun.unwrap_or(0)));
        vars.set_int("reserved_tag", u64::from(RESERVED_TAG));
        if let Some(c) = &target.chap {
            vars.set_str("chap_user", c.user.clone());
        }
        let lun = Lun::from_index(target.lun.unwrap_or(0));
        Ctx {
            target,
            timing,
            profile,
            vars,
            conns: Vec::new(),
            cur: 0,
            isid_base: [s[1], s[2], s[3]],
            isid_count: u16::from(s[0]) << 8,
            sent: HashMap::new(),
            last_frame: None,
            lun,
            block_size: 512,
            blocks: 0,
            notes: Vec::new(),
            negotiation: NegotiationPolicy::Strict,
            negotiation_defects: Vec::new(),
            answered: false,
            digest_errors: Vec::new(),
        }
    }

    /// Keeps the out-of-range answers of a login, once per key, each with
    /// a note for the report.
    fn record_defects(&mut self, ws: &[NegotiationWarning]) {
        for w in ws {
            if self.negotiation_defects.iter().any(|d| d.key == w.key) {
                continue;
            }
            let then = match self.negotiation {
                NegotiationPolicy::Strict => {
                    format!("{NEGOTIATION_LOGIN_FAILED} (--tolerate-negotiation clamps it)")
                }
                NegotiationPolicy::Lenient => format!("tolerated, {}={} in force", w.key, w.used),
            };
            self.notes.push(format!(
                "{NEGOTIATION_NOTE}the target answered {}={} to our offer {} \
                 ({}, RFC 7143 §6.2): {then}",
                w.key, w.answered, w.offered, w.reason
            ));
            self.negotiation_defects.push(w.clone());
        }
    }

    /// A new ISID (random format, §11.12.5), unique within the run.
    pub fn new_isid(&mut self) -> Isid {
        self.isid_count = self.isid_count.wrapping_add(1);
        let q = self.isid_count.to_be_bytes();
        Isid([
            0x80,
            self.isid_base[0],
            self.isid_base[1],
            self.isid_base[2],
            q[0],
            q[1],
        ])
    }

    // ---- connections -------------------------------------------------------

    /// Opens a TCP connection named `name` (replacing one of that name) with
    /// a fresh ISID, and makes it current.
    pub async fn connect(&mut self, name: &str) -> Result<(), Fail> {
        let isid = self.new_isid();
        self.connect_with_isid(name, isid).await
    }

    /// Opens a connection that will log in with `isid` (session
    /// reinstatement, more connections of a session).
    pub async fn connect_with_isid(&mut self, name: &str, isid: Isid) -> Result<(), Fail> {
        let raw = RawConnection::connect_timeout(self.target.addr, self.timing.connect)
            .await
            .map_err(|e| Fail::error(format!("cannot connect to {}: {e}", self.target.addr)))?;
        let mut conn = Conn::new(name, raw, isid);
        if let Some(i) = self.conns.iter().position(|c| c.name == name) {
            let old = &mut self.conns[i];
            conn.archived_trace = old.trace_lines();
            conn.archived_trace
                .push(format!("--- connection {name} reopened ---"));
            self.conns[i] = conn;
            self.cur = i;
        } else {
            self.conns.push(conn);
            self.cur = self.conns.len() - 1;
        }
        Ok(())
    }

    /// Makes the connection `name` current.
    pub fn use_conn(&mut self, name: &str) -> Result<(), Fail> {
        self.cur = self
            .conns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| Fail::error(format!("no connection named {name}")))?;
        Ok(())
    }

    pub fn conn(&self) -> Result<&Conn, Fail> {
        self.conns
            .get(self.cur)
            .ok_or_else(|| Fail::error("no connection is open"))
    }

    pub fn conn_mut(&mut self) -> Result<&mut Conn, Fail> {
        self.conns
            .get_mut(self.cur)
            .ok_or_else(|| Fail::error("no connection is open"))
    }

    /// Closes the current connection from our side: FIN or RST.
    pub async fn close(&mut self, reset: bool) -> Result<(), Fail> {
        let c = self.conn_mut()?;
        if let Some(mut raw) = c.raw.take() {
            c.archived_trace
                .extend(raw.trace().entries().map(|e| e.to_string()));
            c.archived_trace.push(format!(
                "--- {} closed by the case ({}) ---",
                c.name,
                if reset { "RST" } else { "FIN" }
            ));
            if reset {
                let _ = raw.reset();
            } else {
                let _ = raw.shutdown().await;
            }
        }
        Ok(())
    }

    /// The trace of every connection, oldest first per connection.
    pub fn trace_lines(&self) -> Vec<String> {
        let many = self.conns.len() > 1;
        let mut out = Vec::new();
        for c in &self.conns {
            let lines = c.trace_lines();
            if many && !lines.is_empty() {
                out.push(format!("[{}]", c.name));
            }
            out.extend(lines);
        }
        out
    }

    // ---- login ---------------------------------------------------------------

    /// The login options of the run's profile for the current connection.
    pub fn login_options(&self, discovery: bool) -> Result<LoginOptions, Fail> {
        let c = self.conn()?;
        let target = (!discovery).then_some(self.target.target_name.as_str());
        let mut o = LoginOptions::new(&self.target.initiator_name, target);
        o.isid = c.isid;
        o.tsih = c.tsih;
        o.cid = c.cid;
        o.cmd_sn = c.cmd_sn;
        o.itt = c.login_itt;
        o.timeout = self.timing.response;
        o.connect_timeout = self.timing.connect;
        o.negotiation = self.negotiation;
        self.profile.apply(&mut o);
        if discovery {
            // Discovery sessions keep the profile's digests but not its
            // data-path keys (they are irrelevant there, §13).
            o.immediate_data = true;
            o.initial_r2t = false;
        }
        if let Some(c) = &self.target.chap {
            o.chap = Some(c.clone());
            o.mutual_chap = self.target.mutual_chap.clone();
            if self.profile.needs_chap {
                o.extra_security_keys
                    .push(KeyValue::new("AuthMethod", "CHAP"));
            }
        }
        Ok(o)
    }

    /// Logs in on the current connection with `opts`, keeping the
    /// connection's sequence state in step.
    pub async fn login_with(&mut self, opts: &LoginOptions) -> Result<LoginOutcome, LoginError> {
        let Some(c) = self.conns.get_mut(self.cur) else {
            return Err(LoginError::Protocol("no connection is open".to_owned()));
        };
        let Some(raw) = c.raw.as_mut() else {
            return Err(LoginError::Closed);
        };
        let r = login(raw, opts).await;
        match &r {
            Ok(out) => {
                c.isid = out.isid;
                c.tsih = out.tsih;
                c.cid = out.cid;
                c.cmd_sn = out.cmd_sn;
                c.exp_stat_sn = out.exp_stat_sn;
                c.exp_cmd_sn = out.exp_cmd_sn;
                c.max_cmd_sn = out.max_cmd_sn;
                c.last_stat_sn = Some(out.exp_stat_sn.wrapping_sub(1));
                c.params = out.params.clone();
                c.session_type = out.params.session_type;
                c.logged_in = true;
            }
            Err(LoginError::Closed) => c.closed = true,
            Err(_) => {}
        }
        if matches!(
            &r,
            Ok(_)
                | Err(LoginError::Refused(_)
                    | LoginError::Redirected { .. }
                    | LoginError::OutOfRange(_)
                    | LoginError::Negotiation(_))
        ) {
            self.answered = true;
        }
        match &r {
            Ok(out) => self.record_defects(&out.negotiation_warnings),
            Err(LoginError::OutOfRange(ws)) => self.record_defects(ws),
            Err(_) => {}
        }
        r
    }

    /// Logs in with the profile; a refusal is a failure of the case (the
    /// target could not be logged in to for the behaviour under test).
    pub async fn login_default(&mut self, discovery: bool) -> Result<LoginOutcome, Fail> {
        let opts = self.login_options(discovery)?;
        let out = self.login_with(&opts).await.map_err(|e| match e {
            LoginError::Io(e) => Fail::error(format!("login: {e}")),
            LoginError::OutOfRange(ws) => Fail::check(format!(
                "{} login with profile {}: the target answered outside the legal range \
                 (RFC 7143 §6.2): {}; --tolerate-negotiation runs the case on the clamped session",
                if discovery { "discovery" } else { "normal" },
                self.profile.name,
                describe_answers(&ws)
            )),
            e => Fail::check(format!(
                "{} login with profile {} failed: {e}",
                if discovery { "discovery" } else { "normal" },
                self.profile.name
            )),
        })?;
        if !discovery {
            if let Err(why) = self.profile.check(&out.params) {
                return Err(Fail::skip(format!("profile {}: {why}", self.profile.name)));
            }
            if self.profile.needs_chap && out.auth_method != "CHAP" {
                return Err(Fail::skip(format!(
                    "profile {}: the target chose AuthMethod={}",
                    self.profile.name, out.auth_method
                )));
            }
        }
        Ok(out)
    }

    // ---- variables -------------------------------------------------------------

    /// Writes the values derived from the current connection into the
    /// variables (`cmd_sn`, `exp_stat_sn`, negotiated parameters, …).
    pub fn refresh_vars(&mut self) {
        let Some(c) = self.conns.get(self.cur) else {
            return;
        };
        let v = &mut self.vars;
        v.set_int("cmd_sn", u64::from(c.cmd_sn));
        v.set_int("exp_stat_sn", u64::from(c.exp_stat_sn));
        v.set_int("ExpCmdSN", u64::from(c.exp_cmd_sn));
        v.set_int("MaxCmdSN", u64::from(c.max_cmd_sn));
        if let Some(s) = c.last_stat_sn {
            v.set_int("last_stat_sn", u64::from(s));
        }
        v.set_int("isid", c.isid.to_u64());
        v.set_int("tsih", u64::from(c.tsih));
        v.set_int("cid", u64::from(c.cid));
        v.set_int("last_task_itt", u64::from(c.last_task_itt));
        let p = &c.params;
        v.set_int("MaxBurstLength", u64::from(p.max_burst_length));
        v.set_int("FirstBurstLength", u64::from(p.first_burst_length));
        v.set_int("MaxOutstandingR2T", u64::from(p.max_outstanding_r2t));
        v.set_int("InitiatorMRDSL", u64::from(p.initiator_mrdsl));
        v.set_int("TargetMRDSL", u64::from(p.target_mrdsl));
        v.set_int("ImmediateData", u64::from(p.immediate_data));
        v.set_int("InitialR2T", u64::from(p.initial_r2t));
        v.set_int("ErrorRecoveryLevel", u64::from(p.error_recovery_level));
        v.set_int("MaxConnections", u64::from(p.max_connections));
        v.set_int("block_size", u64::from(self.block_size));
        v.set_int("blocks", self.blocks);
        v.set_int("last_lba", self.blocks.saturating_sub(1));
    }

    // ---- sending -----------------------------------------------------------------

    /// Builds the frame a spec describes (sequence numbers filled in, state
    /// advanced) without sending it.
    pub fn build(&mut self, spec: &SendSpec) -> Result<Frame, Fail> {
        self.refresh_vars();
        let op = spec.op;
        let lun = self.lun;
        let block_size = self.block_size;
        let mut bhs = Bhs::new(op);
        let c = self
            .conns
            .get_mut(self.cur)
            .ok_or_else(|| Fail::error("no connection is open"))?;
        let set = |bhs: &mut Bhs, name: &str, v: u64| {
            if let Some(f) = fields::lookup(op, name) {
                f.write(bhs, v);
            }
        };
        // Templates (§11): the values a correct initiator sends.
        match op {
            Opcode::NOP_OUT => {
                bhs.set_immediate(true);
                bhs.set_final(true);
                bhs.set_itt(c.new_itt());
                set(&mut bhs, "TTT", u64::from(RESERVED_TAG));
            }
            Opcode::SCSI_COMMAND => {
                bhs.set_final(true);
                set(&mut bhs, "ATTR", u64::from(TaskAttr::SIMPLE.0));
                bhs.set_lun(lun);
                bhs.set_itt(c.new_itt());
            }
            Opcode::TASK_MGMT_REQUEST => {
                bhs.set_immediate(true);
                bhs.set_final(true);
                bhs.set_lun(lun);
                bhs.set_itt(c.new_itt());
                set(&mut bhs, "ReferencedTaskTag", u64::from(RESERVED_TAG));
            }
            Opcode::LOGIN_REQUEST => {
                bhs.set_immediate(true);
                set(&mut bhs, "T", 1);
                set(&mut bhs, "CSG", u64::from(Stage::OPERATIONAL.0));
                set(&mut bhs, "NSG", u64::from(Stage::FULL_FEATURE.0));
                set(&mut bhs, "ISID", c.isid.to_u64());
                set(&mut bhs, "TSIH", u64::from(c.tsih));
                set(&mut bhs, "CID", u64::from(c.cid));
                bhs.set_itt(c.login_itt);
            }
            Opcode::TEXT_REQUEST => {
                bhs.set_final(true);
                bhs.set_itt(c.new_itt());
                set(&mut bhs, "TTT", u64::from(RESERVED_TAG));
            }
            Opcode::DATA_OUT => {
                bhs.set_final(true);
                bhs.set_lun(lun);
                bhs.set_itt(c.last_task_itt);
                set(&mut bhs, "TTT", u64::from(RESERVED_TAG));
            }
            Opcode::LOGOUT_REQUEST => {
                bhs.set_immediate(true);
                bhs.set_final(true);
                set(&mut bhs, "CID", u64::from(c.cid));
                bhs.set_itt(c.new_itt());
            }
            Opcode::SNACK_REQUEST => {
                bhs.set_final(true);
                bhs.set_lun(lun);
                bhs.set_itt(c.last_task_itt);
                set(&mut bhs, "TTT", u64::from(RESERVED_TAG));
            }
            _ => {
                bhs.set_final(true);
                bhs.set_itt(c.new_itt());
            }
        }
        set(&mut bhs, "CmdSN", u64::from(c.cmd_sn));
        set(&mut bhs, "ExpStatSN", u64::from(c.exp_stat_sn));

        // The CDB and the transfer it implies.
        if let Some(cdb_spec) = &spec.cdb {
            let built = super::cdb::build(cdb_spec, block_size, &self.vars).map_err(Fail::error)?;
            if let Some(f) = fields::lookup(op, "CDB") {
                f.write_bytes(&mut bhs, &built.bytes);
            }
            set(&mut bhs, "ExpectedDataTransferLength", u64::from(built.len));
            set(&mut bhs, "R", u64::from(built.dir == super::cdb::Dir::In));
            set(&mut bhs, "W", u64::from(built.dir == super::cdb::Dir::Out));
        }

        // Overrides, by RFC field name.
        for (name, src) in &spec.fields {
            let field = fields::lookup(op, name)
                .ok_or_else(|| Fail::error(format!("{op:?} has no field {name}")))?;
            if field.name == "CDB" {
                let bytes =
                    super::value::parse_hex(src.trim_start_matches("hex:")).map_err(Fail::error)?;
                field.write_bytes(&mut bhs, &bytes);
                continue;
            }
            let v = match symbol(op, field.name, src) {
                Some(v) => v,
                None => eval_int(src, &self.vars)
                    .map_err(|e| Fail::error(format!("field {name}: {e}")))?,
            };
            field.write(&mut bhs, v);
        }
        if op == Opcode::LOGIN_REQUEST
            && !spec.overrides("NSG")
            && fields::lookup(op, "T").is_some_and(|t| t.read(&bhs) == 0)
        {
            // NSG is reserved when T=0 (§11.12.3).
            set(&mut bhs, "NSG", 0);
        }

        // Segments.
        let data = match &spec.data {
            None => Bytes::new(),
            Some(DataSrc::Bytes(b)) => Bytes::copy_from_slice(b),
            Some(DataSrc::Pattern(len)) => {
                let n = eval_int(len, &self.vars).map_err(Fail::error)? as usize;
                Bytes::from((0..n).map(|i| (i * 7 + 1) as u8).collect::<Vec<u8>>())
            }
            Some(DataSrc::Fill(len, b)) => {
                let n = eval_int(len, &self.vars).map_err(Fail::error)? as usize;
                Bytes::from(vec![*b; n])
            }
            Some(DataSrc::Text(items)) => Bytes::from(self.text_payload(items)?),
        };
        let ahs = spec.ahs.clone().map(Bytes::from).unwrap_or_default();

        // Sequence state.
        let c = self
            .conns
            .get_mut(self.cur)
            .ok_or_else(|| Fail::error("no connection is open"))?;
        let carries_cmd_sn = fields::lookup(op, "CmdSN").is_some();
        if carries_cmd_sn
            && !spec.overrides("CmdSN")
            && !bhs.immediate()
            && op != Opcode::LOGIN_REQUEST
        {
            c.cmd_sn = c.cmd_sn.wrapping_add(1);
        }
        if op == Opcode::SCSI_COMMAND {
            c.last_task_itt = bhs.itt();
        }
        let frame = Frame { bhs, ahs, data };
        let mut wire = frame.bhs;
        if !spec.how.verbatim {
            wire.set_total_ahs_words(frame.ahs.len().div_ceil(4).min(255) as u8);
            wire.set_data_segment_len(frame.data.len() as u32);
        }
        c.last_sent = Some(wire);
        self.vars.set_int("itt", u64::from(frame.bhs.itt()));
        if let Some(n) = &spec.name {
            for f in fields::all(op) {
                self.vars.set_int(&format!("{n}.{}", f.name), f.read(&wire));
            }
            self.sent.insert(
                n.clone(),
                Frame {
                    bhs: wire,
                    ..frame.clone()
                },
            );
        }
        self.last_frame = Some(Frame {
            bhs: wire,
            ..frame.clone()
        });
        Ok(frame)
    }

    /// The payload of a text segment from `key=value` items.
    fn text_payload(&self, items: &[String]) -> Result<Vec<u8>, Fail> {
        let mut out = Vec::new();
        for item in items {
            match item.as_str() {
                "@identity" => {
                    for kv in [
                        format!("InitiatorName={}", self.target.initiator_name),
                        format!("TargetName={}", self.target.target_name),
                        "SessionType=Normal".to_owned(),
                    ] {
                        out.extend_from_slice(kv.as_bytes());
                        out.push(0);
                    }
                }
                "@discovery" => {
                    for kv in [
                        format!("InitiatorName={}", self.target.initiator_name),
                        "SessionType=Discovery".to_owned(),
                    ] {
                        out.extend_from_slice(kv.as_bytes());
                        out.push(0);
                    }
                }
                "@security" => {
                    out.extend_from_slice(b"AuthMethod=None\0");
                }
                "@operational" | "@operational-discovery" => {
                    let discovery = item == "@operational-discovery";
                    let opts = self.login_options(discovery)?;
                    let mut neg = Negotiator::new(Role::Initiator, opts.limits());
                    neg.set_session_type(if discovery {
                        SessionType::Discovery
                    } else {
                        SessionType::Normal
                    });
                    neg.set_phase(Phase::Operational);
                    text::encode(&neg.offers(), &mut out);
                }
                "@nul" => out.push(0),
                raw if raw.starts_with("@raw:") => {
                    // Bytes as given, `\0` for NUL: malformed text on purpose.
                    let s = interpolate(&raw[5..], &self.vars).map_err(Fail::error)?;
                    out.extend_from_slice(s.replace("\\0", "\0").as_bytes());
                }
                kv => {
                    let s = interpolate(kv, &self.vars).map_err(Fail::error)?;
                    out.extend_from_slice(s.as_bytes());
                    out.push(0);
                }
            }
        }
        Ok(out)
    }

    /// Builds and sends a PDU; returns the header as sent.
    pub async fn send(&mut self, spec: &SendSpec) -> Result<Bhs, Fail> {
        let frame = self.build(spec)?;
        let wire = self.conn()?.last_sent.unwrap_or(frame.bhs);
        self.send_frame(&frame, spec.how).await?;
        Ok(wire)
    }

    /// Sends a built frame on the current connection.
    pub async fn send_frame(&mut self, frame: &Frame, how: SendHow) -> Result<(), Fail> {
        let c = self.conn_mut()?;
        let cfg = c.frame_config();
        let raw = c.raw()?;
        let r = if how.bad_header_digest || how.bad_data_digest {
            if how.bad_header_digest && !cfg.header_digest
                || how.bad_data_digest && !cfg.data_digest
            {
                return Err(Fail::error(
                    "a digest can only be corrupted when it was negotiated",
                ));
            }
            let mut buf = BytesMut::new();
            if how.verbatim {
                framing::encode_verbatim(&cfg, frame, &mut buf);
            } else {
                framing::encode(&cfg, frame, &mut buf);
            }
            let head = 48 + frame.ahs.len().div_ceil(4) * 4;
            if how.bad_header_digest {
                buf[head] ^= 0xff;
            }
            if how.bad_data_digest && !frame.data.is_empty() {
                let n = buf.len();
                buf[n - 1] ^= 0xff;
            }
            let mut bhs = frame.bhs;
            bhs.set_data_segment_len(frame.data.len() as u32);
            raw.trace_mut().record_pdu(
                iesp_initiator::raw::Direction::Sent,
                &bhs,
                frame.ahs.len(),
                &frame.data,
            );
            raw.send_bytes(&buf).await
        } else if how.verbatim {
            raw.send_verbatim(frame).await
        } else {
            raw.send(frame).await
        };
        match r {
            Ok(()) => Ok(()),
            // The target may already have closed: that is for the next
            // expectation to judge, not a harness error.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                c_mark_closed(self);
                Ok(())
            }
            Err(e) => Err(Fail::error(format!("send: {e}"))),
        }
    }

    /// A frame sent earlier: by name, or `"last"`.
    pub fn sent_frame(&self, name: &str) -> Option<&Frame> {
        if name == "last" {
            self.last_frame.as_ref()
        } else {
            self.sent.get(name)
        }
    }

    // ---- receiving ---------------------------------------------------------------

    /// The next event on the current connection. NOP-In pings (ITT
    /// 0xffffffff) are skipped unless `keep_pings`.
    pub async fn recv_event(&mut self, timeout: Duration, keep_pings: bool) -> Result<Event, Fail> {
        let deadline = tokio::time::Instant::now() + timeout;
        let c = self
            .conns
            .get_mut(self.cur)
            .ok_or_else(|| Fail::error("no connection is open"))?;
        if c.closed {
            return Ok(Event::Closed);
        }
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let raw = c.raw()?;
            let ev = match raw.recv(left).await {
                Received::Frame(f) => f,
                Received::Timeout => return Ok(Event::Timeout),
                Received::Closed => {
                    c.closed = true;
                    return Ok(Event::Closed);
                }
                Received::Malformed(e) => {
                    if matches!(
                        e,
                        FrameError::DataDigest { .. } | FrameError::HeaderDigest { .. }
                    ) {
                        self.digest_errors.push(e.to_string());
                    }
                    if !matches!(e, FrameError::DataDigest { .. }) {
                        // The stream cannot be resynchronised.
                        c.closed = true;
                    }
                    return Ok(Event::Malformed(e.to_string()));
                }
            };
            observe(c, &ev);
            self.answered = true;
            let ping = ev.bhs.opcode() == Opcode::NOP_IN && ev.bhs.itt() == RESERVED_TAG;
            if ping && !keep_pings {
                continue;
            }
            return Ok(Event::Pdu(ev));
        }
    }

    /// Waits for one event and matches it against the alternatives; returns
    /// the index of the one that matched and the PDU, if any.
    pub async fn expect_one(
        &mut self,
        alts: &[Expectation],
        timeout: Option<Duration>,
    ) -> Result<(usize, Option<Frame>), Fail> {
        self.refresh_vars();
        let silence = alts.iter().position(|a| *a == Expectation::Silence);
        let wait = match (silence, timeout) {
            (Some(_), t) => t.unwrap_or(self.timing.silence),
            (None, Some(t)) => t,
            (None, None) => {
                if alts.iter().all(|a| *a == Expectation::Disconnect) {
                    self.timing.disconnect
                } else {
                    self.timing.response
                }
            }
        };
        let keep_pings = alts.iter().any(|a| {
            matches!(
                a,
                Expectation::Pdu {
                    op: Some(Opcode::NOP_IN),
                    ..
                }
            )
        });
        let ev = self.recv_event(wait, keep_pings).await?;
        let wanted = || {
            alts.iter()
                .map(Expectation::describe)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        match ev {
            Event::Timeout => match silence {
                Some(i) => Ok((i, None)),
                None => Err(Fail::check(format!(
                    "expected {}, got nothing within {wait:?}",
                    wanted()
                ))),
            },
            Event::Closed => match alts.iter().position(|a| *a == Expectation::Disconnect) {
                Some(i) => Ok((i, None)),
                None => Err(Fail::check(format!(
                    "expected {}, but the target closed the connection",
                    wanted()
                ))),
            },
            Event::Malformed(e) => Err(Fail::check(format!(
                "expected {}, got a malformed PDU: {e}",
                wanted()
            ))),
            Event::Pdu(frame) => {
                let mut best: Option<Vec<Mismatch>> = None;
                for (i, alt) in alts.iter().enumerate() {
                    let Expectation::Pdu { op, .. } = alt else {
                        continue;
                    };
                    if op.is_some_and(|o| o != frame.bhs.opcode()) {
                        continue;
                    }
                    let mut vars = self.vars.clone();
                    match self.match_data(alt, &frame, &mut vars) {
                        Ok(()) => {
                            self.vars = vars;
                            return Ok((i, Some(frame)));
                        }
                        Err(MatchError::Eval(e)) => return Err(Fail::error(e)),
                        Err(MatchError::Mismatch(m)) => {
                            let list = best.get_or_insert_with(Vec::new);
                            list.push(m);
                        }
                    }
                }
                match best {
                    Some(ms) => Err(Fail::mismatch(
                        format!("expected {}, got {}", wanted(), describe_frame(&frame)),
                        ms,
                    )),
                    None => Err(Fail::check(format!(
                        "expected {}, got {}",
                        wanted(),
                        describe_frame(&frame)
                    ))),
                }
            }
        }
    }

    /// Matches one PDU expectation; on success captures land in `vars`.
    pub fn match_data(
        &self,
        alt: &Expectation,
        frame: &Frame,
        vars: &mut Vars,
    ) -> Result<(), MatchError> {
        let Expectation::Pdu {
            fields: fms,
            keys,
            data,
            rejected_header,
            ..
        } = alt
        else {
            return Ok(());
        };
        let op = frame.bhs.opcode();
        let opname = format!("{op:?}");
        for (name, m) in fms {
            let v = field_value(frame, name).map_err(|e| {
                MatchError::Mismatch(Mismatch {
                    what: format!("{opname}.{name}"),
                    expected: m.describe(),
                    actual: e,
                })
            })?;
            let field = fields::lookup(op, name);
            let field_name = field.map_or(name.as_str(), |f| f.name);
            let mask = match field.map(|f| f.kind) {
                Some(fields::FieldKind::Int { len }) if len < 8 => {
                    (1u64 << (8 * u32::from(len))) - 1
                }
                Some(fields::FieldKind::Bits { mask }) => u64::from(mask >> mask.trailing_zeros()),
                _ => u64::MAX,
            };
            let sym = |s: &str| symbol(op, field_name, s);
            m.check_int_masked(&format!("{opname}.{name}"), v, mask, vars, &sym)?;
        }
        if !keys.is_empty() {
            let pairs = text::decode(&frame.data).map_err(|e| {
                MatchError::Mismatch(Mismatch {
                    what: format!("{opname} text"),
                    expected: "a valid key=value text segment".to_owned(),
                    actual: e.to_string(),
                })
            })?;
            for (k, m) in keys {
                let values: Vec<&str> = pairs
                    .iter()
                    .filter(|kv| kv.key == *k)
                    .map(|kv| kv.value.as_str())
                    .collect();
                let what = format!("{opname} key {k}");
                if values.len() <= 1 {
                    m.check_str(&what, values.first().copied(), vars)?;
                    continue;
                }
                // A key given several times (TargetName, TargetAddress in a
                // SendTargets answer): one of them must match.
                let mut last = None;
                let mut ok = false;
                for v in &values {
                    let mut trial = vars.clone();
                    match m.check_str(&what, Some(v), &mut trial) {
                        Ok(()) => {
                            *vars = trial;
                            ok = true;
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                if !ok {
                    return Err(match last {
                        Some(MatchError::Mismatch(mut mm)) => {
                            mm.actual = format!("{} values: {values:?}", values.len());
                            MatchError::Mismatch(mm)
                        }
                        Some(e) => e,
                        None => MatchError::Eval("no values".to_owned()),
                    });
                }
            }
        }
        let what = format!("{opname} data segment");
        let mm = |expected: String, actual: String| {
            MatchError::Mismatch(Mismatch {
                what: what.clone(),
                expected,
                actual,
            })
        };
        if let Some(m) = &data.len {
            m.check_int(
                &format!("{opname} data segment length"),
                frame.data.len() as u64,
                vars,
                &|_| None,
            )?;
        }
        if let Some(x) = &data.exact
            && frame.data[..] != x[..]
        {
            return Err(mm(hex(x, 48), hex(&frame.data, 48)));
        }
        if let Some(x) = &data.prefix
            && !frame.data.starts_with(x)
        {
            return Err(mm(format!("{}…", hex(x, 48)), hex(&frame.data, 48)));
        }
        if let Some(name) = &data.echo_of {
            let sent = self
                .sent_frame(name)
                .ok_or_else(|| MatchError::Eval(format!("no sent PDU named {name}")))?;
            if sent.data != frame.data {
                return Err(mm(
                    format!(
                        "the {} bytes sent ({})",
                        sent.data.len(),
                        hex(&sent.data, 16)
                    ),
                    format!("{} bytes ({})", frame.data.len(), hex(&frame.data, 16)),
                ));
            }
        }
        if let Some(b) = data.all
            && let Some(at) = frame.data.iter().position(|x| *x != b)
        {
            return Err(mm(
                format!("every byte {b:#04x}"),
                format!(
                    "byte {at} is {:#04x} ({})",
                    frame.data[at],
                    hex(&frame.data[at..], 16)
                ),
            ));
        }
        for (name, m) in &data.fields {
            let v = data_field(&frame.data, name).map_err(|e| mm(m.describe(), e))?;
            m.check_int(&format!("{opname} data {name}"), v, vars, &|_| None)?;
        }
        if let Some(name) = rejected_header {
            let sent = if name == "last" {
                self.conns.get(self.cur).and_then(|c| c.last_sent)
            } else {
                self.sent.get(name).map(|f| f.bhs)
            };
            let sent = sent.ok_or_else(|| MatchError::Eval(format!("no sent PDU named {name}")))?;
            let got = frame.data.get(..48);
            if got != Some(&sent.0[..]) {
                return Err(MatchError::Mismatch(Mismatch {
                    what: format!("{opname} data segment (the rejected header, RFC 7143 §11.17)"),
                    expected: format!("the header sent: {}", hex(&sent.0, 48)),
                    actual: got
                        .map_or_else(|| format!("{} bytes", frame.data.len()), |g| hex(g, 48)),
                }));
            }
        }
        Ok(())
    }

    /// Receives until `pred` accepts a PDU, failing on anything else.
    pub async fn expect_pdu(
        &mut self,
        op: Opcode,
        timeout: Option<Duration>,
    ) -> Result<Frame, Fail> {
        let (_, f) = self.expect_one(&[Expectation::pdu(op)], timeout).await?;
        f.ok_or_else(|| Fail::error("expectation matched without a PDU"))
    }

    /// Expects no PDU for the silence time (or `d`).
    pub async fn expect_silence(&mut self, d: Option<Duration>) -> Result<(), Fail> {
        self.expect_one(&[Expectation::Silence], d).await.map(drop)
    }

    /// Expects the target to close the connection.
    pub async fn expect_disconnect(&mut self, d: Option<Duration>) -> Result<(), Fail> {
        self.expect_one(&[Expectation::Disconnect], d)
            .await
            .map(drop)
    }

    /// NOP-Out ping with a fresh ITT and `data`; the NOP-In must echo both
    /// (RFC 7143 §11.18, §11.19). Proves the session still works.
    pub async fn ping(&mut self, data: &[u8]) -> Result<Frame, Fail> {
        let spec = SendSpec::new(Opcode::NOP_OUT).data(data.to_vec());
        let sent = self.send(&spec).await?;
        let exp =
            Expectation::pdu(Opcode::NOP_IN).field("ITT", Matcher::eq_int(u64::from(sent.itt())));
        let (_, f) = self
            .expect_one(&[exp], None)
            .await
            .map_err(|e| e.context("NOP-Out ping"))?;
        let f = f.ok_or_else(|| Fail::error("no frame"))?;
        ensure(f.data[..] == data[..], || {
            format!(
                "NOP-In echoed {} bytes ({}), the ping carried {} ({})",
                f.data.len(),
                hex(&f.data, 16),
                data.len(),
                hex(data, 16)
            )
        })?;
        Ok(f)
    }

    /// Sends a Logout Request (close the session) and expects success.
    pub async fn logout(&mut self) -> Result<(), Fail> {
        self.send(&SendSpec::new(Opcode::LOGOUT_REQUEST)).await?;
        let exp = Expectation::pdu(Opcode::LOGOUT_RESPONSE).field("Response", Matcher::eq_int(0));
        self.expect_one(&[exp], None).await.map(drop)
    }
}

fn c_mark_closed(ctx: &mut Ctx) {
    if let Some(c) = ctx.conns.get_mut(ctx.cur) {
        c.closed = true;
    }
}

/// Updates sequence state from a received PDU.
fn observe(c: &mut Conn, f: &Frame) {
    let op = f.bhs.opcode();
    let read = |name: &str| fields::lookup(op, name).map(|fl| fl.read(&f.bhs) as u32);
    let status_bearing = matches!(
        op,
        Opcode::SCSI_RESPONSE
            | Opcode::TASK_MGMT_RESPONSE
            | Opcode::TEXT_RESPONSE
            | Opcode::LOGOUT_RESPONSE
            | Opcode::LOGIN_RESPONSE
            | Opcode::REJECT
            | Opcode::ASYNC_MESSAGE
    ) || (op == Opcode::NOP_IN && f.bhs.itt() != RESERVED_TAG)
        || (op == Opcode::DATA_IN && f.bhs.0[1] & 0x01 != 0);
    if status_bearing && let Some(sn) = read("StatSN") {
        c.exp_stat_sn = sn.wrapping_add(1);
        c.last_stat_sn = Some(sn);
    }
    if let (Some(e), Some(m)) = (read("ExpCmdSN"), read("MaxCmdSN")) {
        c.exp_cmd_sn = e;
        c.max_cmd_sn = m;
    }
    if op == Opcode::LOGIN_RESPONSE {
        if let Ok(pairs) = text::decode(&f.data) {
            c.login_keys.extend(pairs);
        }
        let final_ok = f.bhs.0[1] & 0x80 != 0 && f.bhs.0[1] & 0x03 == 3 && f.bhs.0[36] == 0;
        if final_ok {
            c.tsih = f.bhs.u16_at(14);
            c.logged_in = true;
            let key = |k: &str| {
                c.login_keys
                    .iter()
                    .rev()
                    .find(|kv| kv.key == k)
                    .map(|kv| kv.value.clone())
            };
            let hd = key("HeaderDigest").as_deref() == Some(Digest::Crc32c.token());
            let dd = key("DataDigest").as_deref() == Some(Digest::Crc32c.token());
            if let Some(m) =
                key("MaxRecvDataSegmentLength").and_then(|v| super::value::parse_int(&v))
            {
                c.params.target_mrdsl = m as u32;
            }
            if let Some(raw) = c.raw.as_mut() {
                let mut cfg = raw.frame_config();
                cfg.header_digest = hd;
                cfg.data_digest = dd;
                raw.set_frame_config(cfg);
            }
        }
    }
}

/// A named value of a received PDU: a BHS field, or one of the pseudo
/// fields `LoginStatus` (class << 8 | detail), `SenseKey` and `AscAscq`
/// (from a SCSI Response's sense data).
pub fn field_value(f: &Frame, name: &str) -> Result<u64, String> {
    let op = f.bhs.opcode();
    match name {
        "LoginStatus" if op == Opcode::LOGIN_RESPONSE => return Ok(u64::from(f.bhs.u16_at(36))),
        "SenseKey" | "AscAscq" => {
            let sense = iesp_proto::pdu::scsi::decode_sense_segment(&f.data)
                .map_err(|e| e.to_string())?
                .ok_or("no sense data")?;
            let s = Sense::parse(sense).map_err(|e| format!("unparsable sense data: {e}"))?;
            return Ok(if name == "SenseKey" {
                u64::from(s.key.0)
            } else {
                u64::from(s.asc.0)
            });
        }
        _ => {}
    }
    fields::lookup(op, name)
        .map(|fl| fl.read(&f.bhs))
        .ok_or_else(|| format!("{op:?} has no field {name}"))
}

/// Whether `name` names a field (or pseudo field) of `op`.
pub fn field_exists(op: Opcode, name: &str) -> bool {
    match name {
        "LoginStatus" => op == Opcode::LOGIN_RESPONSE,
        "SenseKey" | "AscAscq" => op == Opcode::SCSI_RESPONSE,
        _ => fields::lookup(op, name).is_some(),
    }
}

/// `byteN`, `u16@N`, `u32@N`, `u64@N` of a data segment (big-endian).
pub fn data_field(data: &[u8], name: &str) -> Result<u64, String> {
    if let Some((field, mask)) = name.split_once('&') {
        let m = super::value::parse_int(mask).ok_or_else(|| format!("bad mask in {name}"))?;
        return Ok(data_field(data, field)? & m);
    }
    let (len, at) = if let Some(n) = name.strip_prefix("byte") {
        (1, n)
    } else if let Some(n) = name.strip_prefix("u16@") {
        (2, n)
    } else if let Some(n) = name.strip_prefix("u32@") {
        (4, n)
    } else if let Some(n) = name.strip_prefix("u64@") {
        (8, n)
    } else {
        return Err(format!(
            "unknown data field {name} (byteN, u16@N, u32@N, u64@N)"
        ));
    };
    let at: usize = at.parse().map_err(|_| format!("bad offset in {name}"))?;
    let bytes = data
        .get(at..at + len)
        .ok_or_else(|| format!("the data is {} bytes, too short for {name}", data.len()))?;
    Ok(bytes.iter().fold(0u64, |a, b| a << 8 | u64::from(*b)))
}

/// Symbolic values of enumerated fields: `AbortTask`, `GOOD`,
/// `UnsupportedVersion`, `Operational`, `CloseSession`, …
pub fn symbol(op: Opcode, field: &str, s: &str) -> Option<u64> {
    fn scan<T>(
        max: u64,
        make: impl Fn(u64) -> T,
        name: impl Fn(&T) -> Option<&'static str>,
        s: &str,
    ) -> Option<u64> {
        (0..=max).find(|v| name(&make(*v)) == Some(s))
    }
    if s.starts_with('$') || s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    match (op, field) {
        (Opcode::TASK_MGMT_REQUEST, "Function") => {
            scan(127, |v| TmfFunction(v as u8), |x| x.name(), s)
        }
        (Opcode::TASK_MGMT_RESPONSE, "Response") => {
            scan(255, |v| TmfResponse(v as u8), |x| x.name(), s)
        }
        (Opcode::LOGOUT_REQUEST, "ReasonCode") => {
            scan(127, |v| LogoutReason(v as u8), |x| x.name(), s)
        }
        (Opcode::LOGOUT_RESPONSE, "Response") => {
            scan(255, |v| LogoutResponseCode(v as u8), |x| x.name(), s)
        }
        (Opcode::SCSI_RESPONSE, "Response") => {
            scan(255, |v| ScsiResponseCode(v as u8), |x| x.name(), s)
        }
        (Opcode::REJECT, "Reason") => scan(255, |v| RejectReason(v as u8), |x| x.name(), s),
        (Opcode::ASYNC_MESSAGE, "AsyncEvent") => {
            scan(255, |v| AsyncEvent(v as u8), |x| x.name(), s)
        }
        (Opcode::SNACK_REQUEST, "Type") => scan(15, |v| SnackType(v as u8), |x| x.name(), s),
        (Opcode::SCSI_COMMAND, "ATTR") => scan(7, |v| TaskAttr(v as u8), |x| x.name(), s),
        (Opcode::SCSI_RESPONSE | Opcode::DATA_IN, "Status") => {
            scan(255, |v| ScsiStatus(v as u8), |x| x.name(), s)
        }
        (Opcode::LOGIN_RESPONSE, "LoginStatus") => {
            scan(0x3ff, |v| LoginStatus(v as u16), |x| x.name(), s)
        }
        (Opcode::SCSI_RESPONSE, "SenseKey") => {
            scan(15, |v| iesp_proto::scsi::SenseKey(v as u8), |x| x.name(), s)
        }
        (_, "CSG" | "NSG") => match s {
            "Security" | "SecurityNegotiation" => Some(0),
            "Operational" | "LoginOperationalNegotiation" => Some(1),
            "FullFeature" | "FullFeaturePhase" => Some(3),
            _ => None,
        },
        _ => None,
    }
}

/// Per-field symbol check used by the script loader.
pub fn symbol_known(op: Opcode, field: &str, s: &str) -> bool {
    symbol(op, field, s).is_some()
}

/// A readable dump of variables (for error messages).
pub fn dump_vars(v: &Vars) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in ["cmd_sn", "exp_stat_sn", "ExpCmdSN", "MaxCmdSN", "itt"] {
        if let Some(x) = v.get(name) {
            out.insert(name.to_owned(), x.to_string());
        }
    }
    out
}

/// `show_int` re-exported for case modules.
pub fn show(v: u64) -> String {
    show_int(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_resolve_per_field() {
        assert_eq!(
            symbol(Opcode::TASK_MGMT_REQUEST, "Function", "AbortTask"),
            Some(1)
        );
        assert_eq!(
            symbol(Opcode::TASK_MGMT_RESPONSE, "Response", "TaskDoesNotExist"),
            Some(1)
        );
        assert_eq!(symbol(Opcode::REJECT, "Reason", "InvalidPduField"), Some(9));
        assert_eq!(
            symbol(Opcode::SCSI_RESPONSE, "Status", "CHECK CONDITION"),
            Some(2)
        );
        assert_eq!(
            symbol(Opcode::LOGIN_RESPONSE, "LoginStatus", "UnsupportedVersion"),
            Some(0x0205)
        );
        assert_eq!(symbol(Opcode::LOGIN_REQUEST, "CSG", "Operational"), Some(1));
        assert_eq!(symbol(Opcode::REJECT, "Reason", "AbortTask"), None);
        assert_eq!(symbol(Opcode::REJECT, "Reason", "$x"), None);
    }

    #[test]
    fn pseudo_and_data_fields() {
        let mut bhs = Bhs::new(Opcode::LOGIN_RESPONSE);
        bhs.0[36] = 2;
        bhs.0[37] = 5;
        let f = Frame {
            bhs,
            ..Frame::default()
        };
        assert_eq!(field_value(&f, "LoginStatus"), Ok(0x0205));
        assert_eq!(field_value(&f, "StatusDetail"), Ok(5));
        assert!(field_value(&f, "Nope").is_err());
        let sense = Sense::new(
            iesp_proto::scsi::SenseKey::ILLEGAL_REQUEST,
            iesp_proto::scsi::Asc(0x2400),
        )
        .encode_fixed();
        let f = Frame {
            bhs: Bhs::new(Opcode::SCSI_RESPONSE),
            ahs: Bytes::new(),
            data: iesp_proto::pdu::scsi::encode_sense_segment(&sense),
        };
        assert_eq!(field_value(&f, "SenseKey"), Ok(5));
        assert_eq!(field_value(&f, "AscAscq"), Ok(0x2400));
        assert_eq!(data_field(&[1, 2, 3, 4, 5], "u32@1"), Ok(0x0203_0405));
        assert_eq!(data_field(&[1, 2], "byte1"), Ok(2));
        assert!(data_field(&[1, 2], "u32@0").is_err());
        assert!(field_exists(Opcode::SCSI_RESPONSE, "AscAscq"));
        assert!(!field_exists(Opcode::NOP_IN, "AscAscq"));
    }
}
