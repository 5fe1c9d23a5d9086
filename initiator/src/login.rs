//! Login on a [`RawConnection`], initiator side (RFC 7143 §6.3, §11.12,
//! §11.13), driving the [`iesp_proto::negotiation`] engine.
//!
//! Stages: security (CSG=0: AuthMethod and, when credentials are given,
//! CHAP — [`crate::chap`]), then login operational (CSG=1: every
//! operational key, see [`LoginOptions`]), then full feature phase. With no
//! credentials the security stage takes one round trip (T=1 in the first
//! request), or none at all with [`LoginOptions::skip_security`] (the first
//! request starts at CSG=1, §6.3). The operational offers go out with T=1,
//! as common initiators do; a target that still has keys to negotiate
//! answers T=0 and the exchange continues until it sets T=1.
//!
//! What the initiator checks in every Login Response (§6.3, §11.13): the
//! status (class 1 is a redirection, others a refusal), the echoed ITT,
//! VersionActive 0, CSG equal to the request's, no T together with C, T
//! only when the request asked for it and then with the requested NSG, and
//! a TSIH on the final response of a new session. Long answers (C=1) are
//! fetched with empty requests and reassembled; long requests are split at
//! 8192 bytes (the MaxRecvDataSegmentLength in force during login, §13.12)
//! with C=1. Deviations that do not stop the login (a StatSN that skips, a
//! missing TSIH, an unanswered offer) are collected in
//! [`LoginOutcome::warnings`] for the caller to judge.
//!
//! Answers outside the legal range (above a Min offer, a boolean that
//! breaks OR/AND, …) end the login with [`LoginError::OutOfRange`] naming
//! every such key and value of the response under
//! [`NegotiationPolicy::Strict`] (the default,
//! what a conformance test wants). Under [`NegotiationPolicy::Lenient`]
//! (what a load tool wants: iESP, for one, answers FirstBurstLength =
//! MaxBurstLength = 268435456 whatever is offered) the answer is clamped to
//! the legal value, logged with `tracing::warn!` and recorded in
//! [`LoginOutcome::negotiation_warnings`], and the login goes on.
//!
//! TCP connects ([`connect`]) give up after [`LoginOptions::connect_timeout`]
//! ([`DEFAULT_CONNECT_TIMEOUT`]) with [`LoginError::ConnectTimeout`].
//!
//! On success the connection switches to the negotiated digests and to our
//! MaxRecvDataSegmentLength as its receive limit.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use iesp_proto::framing::{FrameConfig, MAX_DATA_SEGMENT};
use iesp_proto::negotiation::{
    self, ClampedAnswer, Digest, Limits, NegotiationError, Negotiator, Phase, Role, SessionParams,
    SessionType,
};
use iesp_proto::pdu::{Isid, LoginRequest, LoginResponse, LoginStatus, Pdu, Stage};
use iesp_proto::text::{self, KeyValue, TextAccumulator};

use crate::chap::{ChapCredentials, ChapError, ChapInitiator};
pub use crate::raw::DEFAULT_CONNECT_TIMEOUT;
use crate::raw::{RawConnection, Received};
use crate::session::KeepAlive;
use crate::url::IscsiUrl;

/// What to do with an answer outside the legal range of our offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NegotiationPolicy {
    /// End the login with an error naming the key and the value.
    #[default]
    Strict,
    /// Use the legal value, warn and record it
    /// ([`LoginOutcome::negotiation_warnings`]).
    Lenient,
}

/// An answer the lenient policy replaced with the legal value (the tools
/// record it in their reports, hence `Serialize`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NegotiationWarning {
    /// The key.
    pub key: String,
    /// What we offered.
    pub offered: String,
    /// What the target answered.
    pub answered: String,
    /// The value in force instead.
    pub used: String,
    /// The rule the answer broke.
    pub reason: String,
}

impl From<&ClampedAnswer> for NegotiationWarning {
    fn from(c: &ClampedAnswer) -> NegotiationWarning {
        NegotiationWarning {
            key: c.key.clone(),
            offered: c.offered.clone(),
            answered: c.answered.clone(),
            used: c.used.clone(),
            reason: c.reason.to_owned(),
        }
    }
}

impl fmt::Display for NegotiationWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the target answered {}={} to our offer {}: {}; using {}",
            self.key, self.answered, self.offered, self.reason, self.used
        )
    }
}

/// The MaxRecvDataSegmentLength assumed for the target during login
/// (§13.12: the default until declared).
pub const LOGIN_SEGMENT: usize = 8192;

/// Round trips allowed per stage before the login is abandoned.
const MAX_ROUNDS: usize = 16;

/// What to ask for at login.
#[derive(Clone, Debug)]
pub struct LoginOptions {
    /// InitiatorName (§13.5).
    pub initiator_name: String,
    /// InitiatorAlias (§13.7), if any.
    pub initiator_alias: Option<String>,
    /// TargetName (§13.4); `None` for a discovery session.
    pub target_name: Option<String>,
    /// The initiator part of the session identifier.
    pub isid: Isid,
    /// 0 for a new session; a TSIH to reinstate or add a connection.
    pub tsih: u16,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN of the login requests, and of the first command after.
    pub cmd_sn: u32,
    /// ITT of the login requests.
    pub itt: u32,
    /// Acceptable header digests, preferred first (§13.1).
    pub header_digest: Vec<Digest>,
    /// Acceptable data digests, preferred first (§13.1).
    pub data_digest: Vec<Digest>,
    /// ImmediateData (§13.11).
    pub immediate_data: bool,
    /// InitialR2T (§13.10).
    pub initial_r2t: bool,
    /// Our MaxRecvDataSegmentLength (§13.12).
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength offered (§13.13).
    pub max_burst_length: u32,
    /// FirstBurstLength offered (§13.14).
    pub first_burst_length: u32,
    /// MaxOutstandingR2T offered (§13.17).
    pub max_outstanding_r2t: u16,
    /// MaxConnections offered (§13.2): more than 1 asks for a session
    /// that may add connections (a login with its TSIH and a new `cid`).
    /// Only the leading login offers it.
    pub max_connections: u16,
    /// CHAP name and secret; authentication is skipped when `None`.
    pub chap: Option<ChapCredentials>,
    /// Mutual CHAP: the name and secret the target must prove.
    pub mutual_chap: Option<ChapCredentials>,
    /// Pairs sent as they are in the first security-stage request (or the
    /// first request at all when the security stage is skipped).
    pub extra_security_keys: Vec<KeyValue>,
    /// Pairs sent as they are with the operational offers, replacing an
    /// offer of the same key.
    pub extra_keys: Vec<KeyValue>,
    /// Start at the operational stage (CSG=1) when no authentication is
    /// configured (§6.3 allows it).
    pub skip_security: bool,
    /// How long to wait for each Login Response.
    pub timeout: Duration,
    /// How long a TCP connect may take ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Answers outside the legal range: an error (the default) or clamped.
    pub negotiation: NegotiationPolicy,
    /// The session's keep-alive pings ([`crate::Session::login`]); none by
    /// default.
    pub keep_alive: Option<KeepAlive>,
    /// Busy-poll of the session's reader ([`crate::Session::login`]):
    /// microseconds it spins on non-blocking reads before it sleeps for the
    /// target's next PDU, at most [`MAX_POLL_US`](crate::session::MAX_POLL_US).
    /// Lower latency at queue depth 1 for about a core of CPU; 0 (the
    /// default) is off.
    pub poll_us: u32,
}

impl LoginOptions {
    /// Options for a normal session with `target_name` (or a discovery
    /// session with `None`): no digests, ImmediateData=Yes, InitialR2T=No,
    /// large bursts, a random ISID.
    pub fn new(initiator_name: &str, target_name: Option<&str>) -> LoginOptions {
        LoginOptions {
            initiator_name: initiator_name.to_owned(),
            initiator_alias: None,
            target_name: target_name.map(str::to_owned),
            isid: Isid::random(u32::from_le_bytes(crate::entropy::bytes())),
            tsih: 0,
            cid: 0,
            cmd_sn: 1,
            itt: 0,
            header_digest: vec![Digest::None],
            data_digest: vec![Digest::None],
            immediate_data: true,
            initial_r2t: false,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 16_776_192,
            first_burst_length: 262_144,
            max_outstanding_r2t: 8,
            max_connections: 1,
            chap: None,
            mutual_chap: None,
            extra_security_keys: Vec::new(),
            extra_keys: Vec::new(),
            skip_security: false,
            timeout: Duration::from_secs(10),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            negotiation: NegotiationPolicy::Strict,
            keep_alive: None,
            poll_us: 0,
        }
    }

    /// Clamps out-of-range answers instead of failing
    /// ([`NegotiationPolicy::Lenient`]).
    pub fn lenient(mut self) -> LoginOptions {
        self.negotiation = NegotiationPolicy::Lenient;
        self
    }

    /// A discovery session (SessionType=Discovery, §13.21).
    pub fn discovery(initiator_name: &str) -> LoginOptions {
        LoginOptions::new(initiator_name, None)
    }

    /// Options from a URL: its target (or discovery), CHAP credentials and
    /// header digest.
    pub fn from_url(url: &IscsiUrl, initiator_name: &str) -> LoginOptions {
        let mut o = LoginOptions::new(initiator_name, url.target_name());
        o.chap = url.chap();
        o.mutual_chap = url.mutual_chap();
        if let Some(d) = url.header_digest {
            o.header_digest = vec![d];
        }
        if let Some(d) = url.data_digest {
            o.data_digest = vec![d];
        }
        o
    }

    /// Asks for CRC32C header and data digests only.
    pub fn with_digests(mut self) -> LoginOptions {
        self.header_digest = vec![Digest::Crc32c];
        self.data_digest = vec![Digest::Crc32c];
        self
    }

    /// The negotiation limits these options stand for.
    pub fn limits(&self) -> Limits {
        let auth = match (&self.chap, &self.mutual_chap) {
            (None, _) => vec![negotiation::NONE.to_owned()],
            // Mutual CHAP is a requirement on the target: never let it
            // choose no authentication.
            (Some(_), Some(_)) => vec!["CHAP".to_owned()],
            (Some(_), None) => vec!["CHAP".to_owned(), negotiation::NONE.to_owned()],
        };
        Limits {
            header_digest: self.header_digest.clone(),
            data_digest: self.data_digest.clone(),
            auth_methods: auth,
            immediate_data: self.immediate_data,
            initial_r2t: self.initial_r2t,
            max_recv_data_segment_length: self.max_recv_data_segment_length,
            max_burst_length: self.max_burst_length,
            first_burst_length: self.first_burst_length,
            max_outstanding_r2t: self.max_outstanding_r2t,
            max_connections: self.max_connections,
            ..Limits::default()
        }
    }

    fn session_type(&self) -> SessionType {
        if self.target_name.is_some() {
            SessionType::Normal
        } else {
            SessionType::Discovery
        }
    }
}

/// What a successful login established.
#[derive(Clone, Debug)]
pub struct LoginOutcome {
    /// The negotiated parameters, with RFC defaults for keys not negotiated.
    pub params: SessionParams,
    pub isid: Isid,
    /// The target-assigned session handle.
    pub tsih: u16,
    pub cid: u16,
    /// The CmdSN of the first command to send.
    pub cmd_sn: u32,
    /// The StatSN expected next (last Login Response's StatSN + 1).
    pub exp_stat_sn: u32,
    /// From the final Login Response.
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// TargetAlias, if declared (§13.6).
    pub target_alias: Option<String>,
    /// TargetPortalGroupTag, if declared (§13.9).
    pub target_portal_group_tag: Option<u16>,
    /// Every key the target declared, as received.
    pub declared: Vec<KeyValue>,
    /// The AuthMethod in force.
    pub auth_method: String,
    /// Deviations from RFC 7143 that did not stop the login (the
    /// negotiation warnings among them, as text).
    pub warnings: Vec<String>,
    /// Answers clamped under [`NegotiationPolicy::Lenient`], in order.
    pub negotiation_warnings: Vec<NegotiationWarning>,
    /// Login Request/Response exchanges it took.
    pub exchanges: usize,
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The target answered with a failure status (§11.13.5).
    #[error("login refused: {0} (status class {class:#04x}, detail {detail:#04x})", class = .0.class(), detail = .0.detail())]
    Refused(LoginStatus),
    /// The target redirected the initiator (status class 1).
    #[error("login redirected ({status}) to {target_address}")]
    Redirected {
        status: LoginStatus,
        /// The TargetAddress of the response.
        target_address: String,
    },
    /// The target broke a rule of the login phase.
    #[error("login protocol error: {0}")]
    Protocol(String),
    /// The target answered keys outside the legal range of our offers
    /// (§6.2.1, §6.2.2), under [`NegotiationPolicy::Strict`]; each entry
    /// names the key, the answer and the value a lenient login would use.
    #[error("answers outside the legal range (RFC 7143 §6.2): {}", join_answers(.0))]
    OutOfRange(Vec<NegotiationWarning>),
    /// The negotiation hit a protocol error (§6.2, §6.3).
    #[error("negotiation error: {0}")]
    Negotiation(#[from] NegotiationError),
    /// CHAP failed on our side (the target's values or its mutual proof).
    #[error("CHAP: {0}")]
    Chap(#[from] ChapError),
    #[error("I/O error during login: {0}")]
    Io(#[from] std::io::Error),
    /// The TCP connect did not complete in time (a portal that drops SYNs,
    /// a host that is down).
    #[error("TCP connect to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    /// No Login Response in time.
    #[error("no Login Response within {0:?}")]
    Timeout(Duration),
    /// The target closed the connection.
    #[error("the target closed the connection during login")]
    Closed,
}

fn join_answers(answers: &[NegotiationWarning]) -> String {
    let parts: Vec<String> = answers
        .iter()
        .map(|w| {
            format!(
                "{}={} to our offer {} ({})",
                w.key, w.answered, w.offered, w.reason
            )
        })
        .collect();
    parts.join("; ")
}

/// Opens the TCP connection for a login within `opts.connect_timeout`.
pub async fn connect(addr: SocketAddr, opts: &LoginOptions) -> Result<RawConnection, LoginError> {
    match RawConnection::connect_timeout(addr, opts.connect_timeout).await {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(LoginError::ConnectTimeout {
            addr,
            after: opts.connect_timeout,
        }),
        Err(e) => Err(LoginError::Io(e)),
    }
}

/// Logs in on `conn` (fresh, no digests) and switches it to the
/// negotiated frame config.
pub async fn login(
    conn: &mut RawConnection,
    opts: &LoginOptions,
) -> Result<LoginOutcome, LoginError> {
    let mut neg = Negotiator::new(Role::Initiator, opts.limits());
    // Clamping always, so that a strict login can name every answer out
    // of range in the response, not only the first (see `check_strict`).
    neg.set_lenient(true);
    let session_type = opts.session_type();
    neg.set_session_type(session_type);
    // A login with a TSIH adds (or reinstates) a connection of a session:
    // leading-only keys are not negotiated again (§13).
    neg.set_leading(opts.tsih == 0);
    neg.declare("InitiatorName", &opts.initiator_name);
    if let Some(alias) = &opts.initiator_alias {
        neg.declare("InitiatorAlias", alias);
    }
    neg.declare("SessionType", session_type.token());
    if let Some(t) = &opts.target_name {
        neg.declare("TargetName", t);
    }
    for kv in &opts.extra_security_keys {
        neg.propose(&kv.key, &kv.value);
    }
    let mut d = Driver {
        conn,
        opts,
        exp_stat_sn: 0,
        first: true,
        exp_cmd_sn: opts.cmd_sn,
        max_cmd_sn: opts.cmd_sn,
        tsih: opts.tsih,
        warnings: Vec::new(),
        declared: Vec::new(),
        exchanges: 0,
    };

    let mut chap = opts
        .chap
        .clone()
        .map(|c| ChapInitiator::new(c, opts.mutual_chap.clone()));
    let mut leftover = Vec::new();
    if chap.is_some() || !opts.skip_security {
        leftover = d.security_stage(&mut neg, chap.as_mut()).await?;
    }
    d.operational_stage(&mut neg, leftover).await?;

    let negotiation_warnings: Vec<NegotiationWarning> =
        neg.clamped().iter().map(NegotiationWarning::from).collect();
    for w in &negotiation_warnings {
        tracing::warn!(
            key = %w.key,
            answered = %w.answered,
            used = %w.used,
            "lenient login: {w}"
        );
        d.warnings.push(w.to_string());
    }
    let params = neg.params();
    d.conn.set_frame_config(FrameConfig {
        header_digest: params.header_digest == Digest::Crc32c,
        data_digest: params.data_digest == Digest::Crc32c,
        max_data_segment: params.initiator_mrdsl.min(MAX_DATA_SEGMENT),
    });
    let target_portal_group_tag = neg
        .declared("TargetPortalGroupTag")
        .and_then(text::decode_regular_binary)
        .and_then(|n| u16::try_from(n).ok());
    Ok(LoginOutcome {
        params,
        isid: opts.isid,
        tsih: d.tsih,
        cid: opts.cid,
        cmd_sn: opts.cmd_sn,
        exp_stat_sn: d.exp_stat_sn,
        exp_cmd_sn: d.exp_cmd_sn,
        max_cmd_sn: d.max_cmd_sn,
        target_alias: neg.declared("TargetAlias").map(str::to_owned),
        target_portal_group_tag,
        declared: d.declared,
        auth_method: neg.auth_method().unwrap_or(negotiation::NONE).to_owned(),
        warnings: d.warnings,
        negotiation_warnings,
        exchanges: d.exchanges,
    })
}

/// Where the CHAP exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// No authentication, or it is over.
    Idle,
    /// AuthMethod offered, answer awaited.
    AwaitMethod,
    /// CHAP_A sent, challenge awaited.
    AwaitChallenge,
    /// CHAP_R sent, the target's verdict (and mutual proof) awaited.
    AwaitResult,
}

struct Driver<'a> {
    conn: &'a mut RawConnection,
    opts: &'a LoginOptions,
    exp_stat_sn: u32,
    first: bool,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    tsih: u16,
    warnings: Vec<String>,
    declared: Vec<KeyValue>,
    exchanges: usize,
}

impl Driver<'_> {
    /// Runs the security stage; returns answers still owed to the target
    /// (they go out with the first operational request).
    async fn security_stage(
        &mut self,
        neg: &mut Negotiator,
        mut chap: Option<&mut ChapInitiator>,
    ) -> Result<Vec<KeyValue>, LoginError> {
        neg.set_phase(Phase::Security);
        let mut out = neg.offers();
        let mut auth = if chap.is_some() {
            Auth::AwaitMethod
        } else {
            Auth::Idle
        };
        // Without authentication there is nothing to wait for.
        let mut transit = chap.is_none();
        for _ in 0..MAX_ROUNDS {
            let (rsp, pairs) = self
                .exchange(Stage::SECURITY, Stage::OPERATIONAL, transit, &out)
                .await?;
            let reply = neg.receive(&pairs)?;
            self.check_strict(neg)?;
            out = reply.answers;
            match (auth, chap.as_deref_mut()) {
                (Auth::AwaitMethod, Some(c)) => match neg.auth_method() {
                    Some("CHAP") => {
                        out.extend(c.start());
                        auth = Auth::AwaitChallenge;
                    }
                    Some(negotiation::NONE) => {
                        // The target waived authentication (we offered None too).
                        auth = Auth::Idle;
                        transit = true;
                    }
                    _ => {
                        return Err(LoginError::Protocol(format!(
                            "the target did not choose an offered AuthMethod (answered {:?})",
                            neg.answer_to("AuthMethod")
                        )));
                    }
                },
                (Auth::AwaitChallenge, Some(c)) => {
                    out.extend(c.respond(&reply.delegated)?);
                    auth = Auth::AwaitResult;
                    transit = true;
                }
                (Auth::AwaitResult, Some(c)) => {
                    c.verify(&reply.delegated)?;
                    auth = Auth::Idle;
                }
                _ => {
                    if let Some(kv) = reply.delegated.first() {
                        return Err(LoginError::Protocol(format!(
                            "unexpected authentication key {kv} in the security stage"
                        )));
                    }
                    transit = true;
                }
            }
            if rsp.transit {
                if auth != Auth::Idle {
                    return Err(LoginError::Protocol(format!(
                        "the target left the security stage with authentication unfinished ({auth:?})"
                    )));
                }
                return Ok(out);
            }
        }
        Err(LoginError::Protocol(format!(
            "the security stage did not end within {MAX_ROUNDS} exchanges"
        )))
    }

    async fn operational_stage(
        &mut self,
        neg: &mut Negotiator,
        mut out: Vec<KeyValue>,
    ) -> Result<(), LoginError> {
        neg.set_phase(Phase::Operational);
        for kv in &self.opts.extra_keys {
            neg.propose(&kv.key, &kv.value);
        }
        out.extend(neg.offers());
        for _ in 0..MAX_ROUNDS {
            let (rsp, pairs) = self
                .exchange(Stage::OPERATIONAL, Stage::FULL_FEATURE, true, &out)
                .await?;
            let reply = neg.receive(&pairs)?;
            self.check_strict(neg)?;
            if let Some(kv) = reply.delegated.first() {
                return Err(LoginError::Protocol(format!(
                    "authentication key {kv} in the operational stage"
                )));
            }
            out = reply.answers;
            if rsp.transit {
                let pending = neg.pending();
                if !pending.is_empty() {
                    self.warnings.push(format!(
                        "the target entered full feature phase without answering {} (RFC 7143 §6.2)",
                        pending.join(", ")
                    ));
                }
                if !out.is_empty() {
                    let keys: Vec<&str> = out.iter().map(|kv| kv.key.as_str()).collect();
                    self.warnings.push(format!(
                        "the target's final Login Response made offers no request can answer: {} (RFC 7143 §6.3)",
                        keys.join(", ")
                    ));
                }
                return Ok(());
            }
        }
        Err(LoginError::Protocol(format!(
            "the operational stage did not end within {MAX_ROUNDS} exchanges"
        )))
    }

    /// Under [`NegotiationPolicy::Strict`], the answers the engine had to
    /// clamp end the login, all named.
    fn check_strict(&self, neg: &Negotiator) -> Result<(), LoginError> {
        if self.opts.negotiation == NegotiationPolicy::Strict && !neg.clamped().is_empty() {
            return Err(LoginError::OutOfRange(
                neg.clamped().iter().map(NegotiationWarning::from).collect(),
            ));
        }
        Ok(())
    }

    fn request(&self, csg: Stage, nsg: Stage, transit: bool, cont: bool) -> Pdu {
        Pdu::LoginRequest(LoginRequest {
            transit,
            continue_bit: cont,
            csg,
            // NSG is meaningful only with T=1.
            nsg: if transit { nsg } else { Stage(0) },
            version_max: 0,
            version_min: 0,
            isid: self.opts.isid,
            tsih: self.opts.tsih,
            itt: self.opts.itt,
            cid: self.opts.cid,
            cmd_sn: self.opts.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        })
    }

    /// Sends `pairs` (split with C=1 if long) and returns the response
    /// with its whole (reassembled) text.
    async fn exchange(
        &mut self,
        csg: Stage,
        nsg: Stage,
        transit: bool,
        pairs: &[KeyValue],
    ) -> Result<(LoginResponse, Vec<KeyValue>), LoginError> {
        let payload = text::encode_to_vec(pairs);
        let segments = text::split_for_segments(&payload, LOGIN_SEGMENT);
        let n = segments.len();
        for (i, seg) in segments.into_iter().enumerate() {
            let last = i + 1 == n;
            let req = self.request(csg, nsg, transit && last, !last);
            self.conn
                .send_pdu(&req, Bytes::copy_from_slice(seg))
                .await?;
            if !last {
                // The target acknowledges each partial request with an
                // empty response (§6.3).
                let (rsp, data) = self.response(csg, nsg, false).await?;
                if rsp.continue_bit || !data.is_empty() {
                    return Err(LoginError::Protocol(
                        "the target answered a partial (C=1) Login Request with text".to_owned(),
                    ));
                }
            }
        }
        let mut acc = TextAccumulator::new();
        loop {
            let (rsp, data) = self.response(csg, nsg, transit).await?;
            let whole = acc
                .push(&data, rsp.continue_bit)
                .map_err(|e| LoginError::Protocol(format!("Login Response text: {e}")))?;
            match whole {
                Some(whole) => {
                    let pairs = text::decode(&whole)
                        .map_err(|e| LoginError::Protocol(format!("Login Response text: {e}")))?;
                    self.note_declarations(&pairs);
                    return Ok((rsp, pairs));
                }
                None => {
                    // Fetch the rest with an empty request (§6.3), still
                    // asking for the same transit.
                    let req = self.request(csg, nsg, transit, false);
                    self.conn.send_pdu(&req, Bytes::new()).await?;
                }
            }
        }
    }

    fn note_declarations(&mut self, pairs: &[KeyValue]) {
        for kv in pairs {
            let declarative = negotiation::key_def(&kv.key)
                .is_some_and(|d| d.kind == negotiation::KeyKind::Declarative);
            if declarative {
                self.declared.push(kv.clone());
            }
        }
    }

    /// Receives and checks one Login Response.
    async fn response(
        &mut self,
        csg: Stage,
        nsg: Stage,
        asked_transit: bool,
    ) -> Result<(LoginResponse, Bytes), LoginError> {
        let frame = match self.conn.recv(self.opts.timeout).await {
            Received::Frame(f) => f,
            Received::Timeout => return Err(LoginError::Timeout(self.opts.timeout)),
            Received::Closed => return Err(LoginError::Closed),
            Received::Malformed(e) => return Err(LoginError::Protocol(e.to_string())),
        };
        self.exchanges += 1;
        let Pdu::LoginResponse(rsp) = frame.pdu() else {
            return Err(LoginError::Protocol(format!(
                "expected a Login Response, got {:?}",
                frame.bhs.opcode()
            )));
        };
        // Sequence numbers first: a refusal carries them too.
        if self.first {
            self.first = false;
        } else if rsp.stat_sn != self.exp_stat_sn {
            self.warnings.push(format!(
                "Login Response StatSN {} where {} was expected (RFC 7143 §11.13.2)",
                rsp.stat_sn, self.exp_stat_sn
            ));
        }
        self.exp_stat_sn = rsp.stat_sn.wrapping_add(1);
        self.exp_cmd_sn = rsp.exp_cmd_sn;
        self.max_cmd_sn = rsp.max_cmd_sn;

        if rsp.status != LoginStatus::SUCCESS {
            if rsp.status.class() == 0x01 {
                let address = text::decode(&frame.data)
                    .ok()
                    .and_then(|p| p.into_iter().find(|kv| kv.key == "TargetAddress"))
                    .map(|kv| kv.value)
                    .unwrap_or_default();
                return Err(LoginError::Redirected {
                    status: rsp.status,
                    target_address: address,
                });
            }
            return Err(LoginError::Refused(rsp.status));
        }
        let protocol = |msg: String| Err(LoginError::Protocol(msg));
        if rsp.itt != self.opts.itt {
            return protocol(format!(
                "Login Response ITT {:#x}, the request's was {:#x}",
                rsp.itt, self.opts.itt
            ));
        }
        if rsp.version_active != 0 {
            return protocol(format!(
                "VersionActive {} outside the requested 0..=0 (RFC 7143 §11.13.3)",
                rsp.version_active
            ));
        }
        if rsp.csg != csg {
            return protocol(format!(
                "Login Response CSG {:?}, the request's was {csg:?}",
                rsp.csg
            ));
        }
        if rsp.transit && rsp.continue_bit {
            return protocol("Login Response with both T and C set (RFC 7143 §11.13.1)".to_owned());
        }
        if rsp.transit && !asked_transit {
            return protocol(
                "the target set T=1 though the request did not (RFC 7143 §11.13.1)".to_owned(),
            );
        }
        if rsp.transit && rsp.nsg != nsg {
            return protocol(format!(
                "Login Response NSG {:?}, the request asked for {nsg:?}",
                rsp.nsg
            ));
        }
        if rsp.isid != self.opts.isid {
            self.warnings.push(format!(
                "Login Response ISID {:?} differs from the request's {:?}",
                rsp.isid, self.opts.isid
            ));
        }
        let final_response = rsp.transit && rsp.nsg == Stage::FULL_FEATURE;
        if final_response {
            if self.opts.tsih == 0 && rsp.tsih == 0 {
                self.warnings.push(
                    "TSIH 0 in the final Login Response of a new session (RFC 7143 §11.13.4)"
                        .to_owned(),
                );
            } else if self.opts.tsih != 0 && rsp.tsih != self.opts.tsih {
                self.warnings.push(format!(
                    "final Login Response TSIH {:#x}, the request's was {:#x}",
                    rsp.tsih, self.opts.tsih
                ));
            }
            self.tsih = rsp.tsih;
        } else if rsp.tsih != self.opts.tsih {
            self.warnings.push(format!(
                "Login Response TSIH {:#x} before the final response (expected {:#x}, RFC 7143 §11.13.4)",
                rsp.tsih, self.opts.tsih
            ));
        }
        Ok((rsp, frame.data))
    }
}

#[cfg(test)]
mod tests {
    //! The login driver against a scripted fake target on loopback: the
    //! reference target does not do CHAP, so CHAP, C-bit continuation and
    //! refusals are exercised here.
    use super::*;
    use crate::chap::chap_md5;
    use iesp_proto::bhs::Opcode;
    use iesp_proto::framing::Frame;
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    /// A fake target: answers each Login Request with what `script`
    /// returns for it (response fields, text).
    struct Fake {
        conn: RawConnection,
        stat_sn: u32,
    }

    impl Fake {
        async fn request(&mut self) -> (LoginRequest, Vec<KeyValue>) {
            let f = self.conn.recv(T).await.frame().expect("a request");
            assert_eq!(f.bhs.opcode(), Opcode::LOGIN_REQUEST);
            let Pdu::LoginRequest(req) = f.pdu() else {
                unreachable!()
            };
            (req, text::decode(&f.data).expect("valid text"))
        }

        async fn respond(&mut self, req: &LoginRequest, transit: bool, cont: bool, text: &[u8]) {
            self.respond_with(req, transit, cont, text, |_| {}).await;
        }

        async fn respond_with(
            &mut self,
            req: &LoginRequest,
            transit: bool,
            cont: bool,
            text: &[u8],
            edit: impl FnOnce(&mut LoginResponse),
        ) {
            let mut rsp = LoginResponse {
                transit,
                continue_bit: cont,
                csg: req.csg,
                nsg: if transit { req.nsg } else { Stage(0) },
                isid: req.isid,
                tsih: if transit && req.nsg == Stage::FULL_FEATURE {
                    0x42
                } else {
                    0
                },
                itt: req.itt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: req.cmd_sn,
                max_cmd_sn: req.cmd_sn + 31,
                ..LoginResponse::default()
            };
            edit(&mut rsp);
            self.stat_sn += 1;
            let frame = Frame::with_data(&Pdu::LoginResponse(rsp), Bytes::copy_from_slice(text));
            self.conn.send(&frame).await.unwrap();
        }
    }

    fn get<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
        pairs
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_str())
    }

    fn enc(pairs: &[(&str, &str)]) -> Vec<u8> {
        let kvs: Vec<KeyValue> = pairs.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect();
        text::encode_to_vec(&kvs)
    }

    /// Runs `login` against a fake target driven by `script`.
    async fn run<F, Fut>(opts: LoginOptions, script: F) -> Result<LoginOutcome, LoginError>
    where
        F: FnOnce(Fake) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            script(Fake {
                conn: RawConnection::from_stream(s).unwrap(),
                stat_sn: 100,
            })
            .await;
        });
        let mut conn = RawConnection::connect(addr).await.unwrap();
        let r = login(&mut conn, &opts).await;
        server.await.unwrap();
        r
    }

    /// The operational stage of a compliant target: answers every offer
    /// with the initiator's value.
    async fn operational(f: &mut Fake) {
        let (req, pairs) = f.request().await;
        assert_eq!(req.csg, Stage::OPERATIONAL);
        assert!(req.transit);
        assert_eq!(req.nsg, Stage::FULL_FEATURE);
        let mut answers = Vec::new();
        for kv in &pairs {
            let def = negotiation::key_def(&kv.key);
            if def.is_some_and(|d| matches!(d.kind, negotiation::KeyKind::Negotiated(_))) {
                let v = kv.value.split(',').next().unwrap_or_default().to_owned();
                answers.push(KeyValue::new(kv.key.clone(), v));
            }
        }
        answers.push(KeyValue::new("MaxRecvDataSegmentLength", "65536"));
        answers.push(KeyValue::new("TargetAlias", "fake"));
        f.respond(&req, true, false, &text::encode_to_vec(&answers))
            .await;
    }

    fn opts() -> LoginOptions {
        LoginOptions::new("iqn.2026-01.test:i", Some("iqn.2026-01.test:t"))
    }

    #[tokio::test]
    async fn one_way_chap() {
        let mut o = opts();
        o.chap = Some(ChapCredentials::new("alice", "alice-secret"));
        let out = run(o, |mut f| async move {
            let (req, pairs) = f.request().await;
            assert_eq!(req.csg, Stage::SECURITY);
            assert!(!req.transit, "T=1 before authentication");
            assert_eq!(get(&pairs, "AuthMethod"), Some("CHAP,None"));
            assert_eq!(get(&pairs, "InitiatorName"), Some("iqn.2026-01.test:i"));
            assert_eq!(get(&pairs, "TargetName"), Some("iqn.2026-01.test:t"));
            assert_eq!(get(&pairs, "SessionType"), Some("Normal"));
            f.respond(
                &req,
                false,
                false,
                &enc(&[("AuthMethod", "CHAP"), ("TargetPortalGroupTag", "7")]),
            )
            .await;
            let (req, pairs) = f.request().await;
            assert_eq!(get(&pairs, "CHAP_A"), Some("5"));
            assert_eq!(
                req.exp_stat_sn, 101,
                "ExpStatSN acknowledges the first response"
            );
            let challenge = [0x11u8; 16];
            f.respond(
                &req,
                false,
                false,
                &enc(&[
                    ("CHAP_A", "5"),
                    ("CHAP_I", "200"),
                    ("CHAP_C", &text::encode_hex(&challenge)),
                ]),
            )
            .await;
            let (req, pairs) = f.request().await;
            assert!(req.transit && req.nsg == Stage::OPERATIONAL);
            assert_eq!(get(&pairs, "CHAP_N"), Some("alice"));
            let expected = text::encode_hex(&chap_md5(200, b"alice-secret", &challenge));
            assert_eq!(get(&pairs, "CHAP_R"), Some(expected.as_str()));
            assert_eq!(
                get(&pairs, "CHAP_I"),
                None,
                "one-way CHAP sends no challenge"
            );
            f.respond(&req, true, false, b"").await;
            operational(&mut f).await;
        })
        .await
        .unwrap();
        assert_eq!(out.auth_method, "CHAP");
        assert_eq!(out.tsih, 0x42);
        assert_eq!(out.target_portal_group_tag, Some(7));
        assert_eq!(out.target_alias.as_deref(), Some("fake"));
        assert_eq!(out.exp_stat_sn, 104);
        assert_eq!(out.params.target_mrdsl, 65536);
        assert_eq!(out.params.initiator_mrdsl, 262_144);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert_eq!(out.exchanges, 4);
    }

    async fn mutual_script(mut f: Fake, target_secret: &'static [u8]) {
        let (req, pairs) = f.request().await;
        assert_eq!(
            get(&pairs, "AuthMethod"),
            Some("CHAP"),
            "mutual must not offer None"
        );
        f.respond(&req, false, false, &enc(&[("AuthMethod", "CHAP")]))
            .await;
        let (req, _) = f.request().await;
        f.respond(
            &req,
            false,
            false,
            &enc(&[("CHAP_A", "5"), ("CHAP_I", "3"), ("CHAP_C", "0b3q2+7w==")]),
        )
        .await;
        let (req, pairs) = f.request().await;
        let r = text::encode_hex(&chap_md5(3, b"i-secret", &[0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(get(&pairs, "CHAP_R"), Some(r.as_str()));
        let id: u8 = get(&pairs, "CHAP_I").unwrap().parse().unwrap();
        let c = text::decode_binary(get(&pairs, "CHAP_C").unwrap()).unwrap();
        let answer = text::encode_hex(&chap_md5(id, target_secret, &c));
        f.respond(
            &req,
            true,
            false,
            &enc(&[("CHAP_N", "tgt"), ("CHAP_R", &answer)]),
        )
        .await;
        if target_secret == b"t-secret" {
            operational(&mut f).await;
        }
    }

    #[tokio::test]
    async fn mutual_chap_verifies_the_target() {
        let mut o = opts();
        o.chap = Some(ChapCredentials::new("init", "i-secret"));
        o.mutual_chap = Some(ChapCredentials::new("tgt", "t-secret"));
        let out = run(o.clone(), |f| mutual_script(f, b"t-secret"))
            .await
            .unwrap();
        assert_eq!(out.auth_method, "CHAP");
        let err = run(o, |f| mutual_script(f, b"forged")).await.unwrap_err();
        assert!(
            matches!(err, LoginError::Chap(ChapError::WrongResponse)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn refusal_carries_the_status() {
        let err = run(opts(), |mut f| async move {
            let (req, _) = f.request().await;
            f.respond_with(&req, false, false, b"", |r| {
                r.status = LoginStatus::AUTHENTICATION_FAILURE
            })
            .await;
        })
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            LoginError::Refused(LoginStatus::AUTHENTICATION_FAILURE)
        ));
        assert_eq!(
            err.to_string(),
            "login refused: AuthenticationFailure (status class 0x02, detail 0x01)"
        );
        let err = run(opts(), |mut f| async move {
            let (req, _) = f.request().await;
            f.respond_with(
                &req,
                false,
                false,
                &enc(&[("TargetAddress", "127.0.0.2:3260,1")]),
                |r| r.status = LoginStatus::TARGET_MOVED_TEMPORARILY,
            )
            .await;
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&err, LoginError::Redirected { target_address, .. } if target_address == "127.0.0.2:3260,1"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn long_response_is_fetched_with_continuations() {
        let out = run(opts(), |mut f| async move {
            let (req, _) = f.request().await;
            assert!(req.transit, "no authentication: T=1 at once");
            f.respond(&req, true, false, &enc(&[("AuthMethod", "None")]))
                .await;
            let (req, _) = f.request().await;
            // An answer of ~10 KB in three parts, split inside a pair.
            let alias = "a".repeat(200);
            let mut long = Vec::new();
            for i in 0..40 {
                long.extend_from_slice(format!("X-vendor-{i}={alias}\0").as_bytes());
            }
            long.extend_from_slice(b"MaxRecvDataSegmentLength=4096\0");
            let parts: Vec<&[u8]> = long.chunks(4000).collect();
            assert_eq!(parts.len(), 3);
            f.respond(&req, false, true, parts[0]).await;
            for (i, part) in parts[1..].iter().enumerate() {
                let (cont, pairs) = f.request().await;
                assert!(pairs.is_empty(), "continuation requests are empty");
                assert!(cont.transit, "the continuation keeps asking for transit");
                assert!(!cont.continue_bit);
                let last = i == parts.len() - 2;
                f.respond(&cont, last, !last, part).await;
            }
        })
        .await;
        // The fake answered none of our offers and made offers of its own
        // in its final response: the login succeeds with both noted.
        let out = out.unwrap();
        assert_eq!(out.params.target_mrdsl, 4096);
        assert_eq!(out.exchanges, 4);
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings[0].contains("without answering"));
        assert!(out.warnings[1].contains("X-vendor-0"));
    }

    #[tokio::test]
    async fn skip_security_starts_in_the_operational_stage() {
        let mut o = opts();
        o.skip_security = true;
        o.extra_keys = vec![
            KeyValue::new("X-test-key", "1"),
            KeyValue::new("MaxBurstLength", "1024"),
        ];
        let out = run(o, |mut f| async move {
            let (req, pairs) = f.request().await;
            assert_eq!(req.csg, Stage::OPERATIONAL);
            assert_eq!(get(&pairs, "InitiatorName"), Some("iqn.2026-01.test:i"));
            assert_eq!(get(&pairs, "X-test-key"), Some("1"));
            assert_eq!(get(&pairs, "MaxBurstLength"), Some("1024"));
            assert_eq!(get(&pairs, "AuthMethod"), None);
            let mut answers: Vec<(&str, &str)> = vec![("X-test-key", "NotUnderstood")];
            for kv in &pairs {
                if negotiation::key_def(&kv.key)
                    .is_some_and(|d| matches!(d.kind, negotiation::KeyKind::Negotiated(_)))
                {
                    answers.push((
                        kv.key.as_str(),
                        kv.value.split(',').next().unwrap_or_default(),
                    ));
                }
            }
            let body = enc(&answers);
            // A target that forgets the TSIH and skips a StatSN.
            f.stat_sn += 5;
            f.respond_with(&req, true, false, &body, |r| r.tsih = 0)
                .await;
        })
        .await
        .unwrap();
        assert_eq!(out.params.max_burst_length, 1024);
        assert_eq!(out.exchanges, 1);
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        assert!(out.warnings[0].contains("TSIH 0"));
    }

    #[tokio::test]
    async fn protocol_violations_stop_the_login() {
        // T=1 although the request had T=0 (CHAP in progress).
        let mut o = opts();
        o.chap = Some(ChapCredentials::new("u", "s"));
        let err = run(o, |mut f| async move {
            let (req, _) = f.request().await;
            f.respond_with(&req, true, false, &enc(&[("AuthMethod", "CHAP")]), |r| {
                r.nsg = Stage::OPERATIONAL
            })
            .await;
        })
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("T=1 though the request did not"),
            "{err}"
        );
        // Wrong ITT.
        let err = run(opts(), |mut f| async move {
            let (req, _) = f.request().await;
            f.respond_with(&req, false, false, b"", |r| r.itt = 99)
                .await;
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("ITT 0x63"), "{err}");
        // Silence.
        let mut o = opts();
        o.timeout = Duration::from_millis(50);
        let err = run(o, |mut f| async move {
            let _ = f.request().await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        })
        .await
        .unwrap_err();
        assert!(matches!(err, LoginError::Timeout(_)), "{err}");
        // Hang-up.
        let err = run(opts(), |mut f| async move {
            let _ = f.request().await;
        })
        .await
        .unwrap_err();
        assert!(matches!(err, LoginError::Closed), "{err}");
    }
}
