//! The login phase of one connection, target side (RFC 7143 §6.3, §11.12,
//! §11.13).
//!
//! Frames in, Login Responses out, no sockets. The stage machine lives here
//! (CSG/NSG, T and C bits, version, the leading PDU's fields); key
//! negotiation is [`iesp_proto::negotiation`]. A login that fails gets a
//! Login Response with the status class and detail RFC 7143 §11.13.5
//! assigns, and the connection closes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use iesp_proto::chap::ChapResponder;
use iesp_proto::framing::Frame;
use iesp_proto::negotiation::{self, Digest, Disposition, Negotiator, Phase, Role, SessionType};
use iesp_proto::pdu::{Isid, LoginRequest, LoginResponse, LoginStatus, Pdu, Stage};
use iesp_proto::text::{self, KeyValue, TextAccumulator};

use super::ffp::{DiscoveryEntry, FfpParams, SessionKind};
use crate::admission::{AuthKey, Refusal};
use crate::scsi::{LunTable, Nexus};
use crate::server::{SessionGuard, SessionKey, Target};
use iesp_proto::outbox::Outbox;

/// The largest data segment accepted during login. RFC 7143 §13.12 lets a
/// peer assume 8192 until MaxRecvDataSegmentLength is declared; we accept
/// more from lenient initiators, but not without bound.
pub const MAX_LOGIN_SEGMENT: u32 = 65_536;

/// Login responses are split with C=1 beyond this (the initiator's
/// MaxRecvDataSegmentLength is not known during login: §13.12 default).
const LOGIN_RESPONSE_SEGMENT: usize = 8192;

/// Everything the full feature phase needs from a successful login.
pub struct LoginOutcome {
    pub kind: SessionKind,
    /// The negotiation engine, carried into full feature phase.
    pub neg: Negotiator,
    pub params: FfpParams,
    pub header_digest: bool,
    pub data_digest: bool,
    pub nexus: Nexus,
    pub luns: Arc<LunTable>,
    pub discovery: Vec<DiscoveryEntry>,
    pub cid: u16,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    /// The registration of a normal session (absent for discovery).
    pub session: Option<SessionGuard>,
}

/// What the driver does next.
pub enum LoginStep {
    Continue,
    /// A failure response was queued; close after sending it.
    Failed,
    Done(Box<LoginOutcome>),
}

/// The leading PDU's identity, which later PDUs must repeat.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Leading {
    isid: Isid,
    tsih: u16,
    cid: u16,
}

pub struct Login {
    target: Arc<Target>,
    portal: SocketAddr,
    neg: Negotiator,
    leading: Option<Leading>,
    /// The stage the next request must be in.
    stage: Stage,
    accum: TextAccumulator,
    /// The rest of an answer too long for one response (C=1).
    rest: Option<Bytes>,
    /// Whether the transit the initiator asked for has been granted in the
    /// response carrying `rest`'s last part.
    rest_transit: Option<Stage>,
    stat_sn: u32,
    exp_cmd_sn: u32,
    declared_tpgt: bool,
    /// AuthMethod was offered without a method we accept.
    auth_refused: bool,
    /// Whether the first payload has named the target, so that its
    /// authentication settings are in force.
    identified: bool,
    /// The CHAP exchange, when the target requires CHAP.
    chap: Option<ChapResponder>,
    /// The initiator's address: failed authentication is counted against
    /// it, and against the initiator name.
    peer: Option<SocketAddr>,
    /// The queued answer may leave only at this instant (authentication
    /// back-off); the driver waits before flushing.
    hold: Option<Instant>,
}

/// The shortest CHAP challenge accepted from an initiator (mutual CHAP):
/// 16 bytes, the length of the MD5 response it protects.
pub const MIN_CHAP_CHALLENGE: usize = 16;

impl Login {
    pub fn new(target: Arc<Target>, portal: SocketAddr) -> Login {
        let l = &target.limits;
        let digests = if l.digests {
            vec![Digest::Crc32c, Digest::None]
        } else {
            vec![Digest::None]
        };
        let limits = negotiation::Limits {
            header_digest: digests.clone(),
            data_digest: digests,
            auth_methods: vec![negotiation::NONE.to_owned()],
            max_connections: l.max_connections_per_session,
            initial_r2t: l.initial_r2t,
            immediate_data: l.immediate_data,
            max_recv_data_segment_length: l.max_recv_data_segment_length,
            max_burst_length: l.max_burst_length,
            first_burst_length: l.first_burst_length,
            max_outstanding_r2t: u16::try_from(l.max_outstanding_r2t).unwrap_or(u16::MAX),
            error_recovery_level: 0,
            ..negotiation::Limits::default()
        };
        Login {
            target,
            portal,
            neg: Negotiator::new(Role::Target, limits),
            leading: None,
            stage: Stage::SECURITY,
            accum: TextAccumulator::with_limit(MAX_LOGIN_SEGMENT as usize * 4),
            rest: None,
            rest_transit: None,
            stat_sn: 1,
            exp_cmd_sn: 0,
            declared_tpgt: false,
            auth_refused: false,
            identified: false,
            chap: None,
            peer: None,
            hold: None,
        }
    }

    /// The initiator's address, for the authentication back-off and logs.
    pub fn with_peer(mut self, peer: SocketAddr) -> Login {
        self.peer = Some(peer);
        self
    }

    /// When the answer just queued may be sent, if it must wait: the
    /// back-off of failed authentication. Taken once.
    pub fn take_hold(&mut self) -> Option<Instant> {
        self.hold.take()
    }

    /// Who this login's authentication attempts are counted against.
    fn auth_keys(&self) -> Vec<AuthKey> {
        let mut keys = Vec::new();
        if let Some(name) = self.neg.declared("InitiatorName") {
            keys.push(AuthKey::Initiator(name.to_owned()));
        }
        if let Some(peer) = self.peer {
            keys.push(AuthKey::Address(peer.ip()));
        }
        keys
    }

    fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
            .wrapping_add(self.target.limits.command_window.max(1) - 1)
    }

    /// Handles one frame of the login phase.
    pub fn handle(&mut self, frame: Frame, out: &mut Outbox) -> LoginStep {
        let Pdu::LoginRequest(req) = frame.pdu() else {
            // Only Login Requests may arrive before login completes. Once a
            // login is under way the answer is "Invalid during login"
            // (§11.13.5, 0x020b); a connection that never began one is
            // simply closed (§6.3).
            tracing::debug!(opcode = ?frame.bhs.opcode(), "non-login PDU during login");
            if self.leading.is_none() {
                return LoginStep::Failed;
            }
            let req = LoginRequest {
                csg: self.stage,
                isid: self.leading.map(|l| l.isid).unwrap_or_default(),
                itt: frame.bhs.itt(),
                ..LoginRequest::default()
            };
            self.respond(
                out,
                &req,
                false,
                Stage::SECURITY,
                0,
                LoginStatus::INVALID_DURING_LOGIN,
                Bytes::new(),
            );
            return LoginStep::Failed;
        };
        match self.step(&req, &frame.data, out) {
            Ok(step) => step,
            Err(status) => {
                tracing::info!(?status, "login refused");
                self.respond(out, &req, false, Stage::SECURITY, 0, status, Bytes::new());
                LoginStep::Failed
            }
        }
    }

    fn step(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
        out: &mut Outbox,
    ) -> Result<LoginStep, LoginStatus> {
        let this = Leading {
            isid: req.isid,
            tsih: req.tsih,
            cid: req.cid,
        };
        match self.leading {
            None => {
                if req.version_min > 0 || req.version_max < req.version_min {
                    return Err(LoginStatus::UNSUPPORTED_VERSION);
                }
                if req.csg != Stage::SECURITY && req.csg != Stage::OPERATIONAL {
                    return Err(LoginStatus::INITIATOR_ERROR);
                }
                self.leading = Some(this);
                self.stage = req.csg;
                self.exp_cmd_sn = req.cmd_sn;
                // A login with a TSIH joins an existing session: its
                // leading-only keys are answered Irrelevant (§13).
                self.neg.set_leading(req.tsih == 0);
            }
            Some(first) if first != this => return Err(LoginStatus::INITIATOR_ERROR),
            Some(_) => {}
        }
        // Stage rules (§6.3, §11.12.3): stay in order, move forward only,
        // never T together with C.
        if req.csg != self.stage {
            return Err(LoginStatus::INITIATOR_ERROR);
        }
        if req.transit
            && (req.continue_bit || req.nsg.0 <= req.csg.0 || req.nsg.0 == 2 || req.nsg.0 > 3)
        {
            return Err(LoginStatus::INITIATOR_ERROR);
        }

        // The rest of our own long answer, fetched with empty requests.
        if let Some(rest) = self.rest.take() {
            if !data.is_empty() {
                return Err(LoginStatus::INITIATOR_ERROR);
            }
            let transit = self.rest_transit;
            return Ok(self.send_answer(out, req, rest, transit));
        }

        let Some(payload) = self
            .accum
            .push(data, req.continue_bit)
            .map_err(|_| LoginStatus::INITIATOR_ERROR)?
        else {
            // Partial text (C=1): acknowledge and wait for the rest (§6.3).
            self.respond(
                out,
                req,
                false,
                req.csg,
                0,
                LoginStatus::SUCCESS,
                Bytes::new(),
            );
            return Ok(LoginStep::Continue);
        };
        let pairs = text::decode(&payload).map_err(|_| LoginStatus::INITIATOR_ERROR)?;
        if !self.identified {
            self.identified = true;
            self.choose_authentication(&pairs);
        }
        self.neg.set_phase(if req.csg == Stage::SECURITY {
            Phase::Security
        } else {
            Phase::Operational
        });
        let reply = self.neg.receive(&pairs).map_err(|e| {
            tracing::debug!("negotiation error: {e}");
            LoginStatus::INITIATOR_ERROR
        })?;
        self.check_identity()?;
        self.auth_refused |= reply.outcomes.iter().any(|o| {
            o.key == "AuthMethod" && matches!(&o.disposition, Disposition::Answered { answer } if answer == negotiation::REJECT)
        });
        let mut answers = reply.answers;
        if !reply.delegated.is_empty() {
            // Authentication exchange keys (§12): CHAP when configured; any
            // other method, or CHAP where none is configured, fails.
            let Some(chap) = self.chap.as_mut() else {
                return Err(LoginStatus::AUTHENTICATION_FAILURE);
            };
            if req.csg != Stage::SECURITY || self.neg.result("AuthMethod") != Some("CHAP") {
                return Err(LoginStatus::INITIATOR_ERROR);
            }
            if let Some(c) = reply.delegated.iter().find(|kv| kv.key == "CHAP_C") {
                // A short challenge makes the target's proof cheap to
                // precompute; refuse it like any failed authentication.
                let len =
                    iesp_proto::chap::decode_chap_binary("CHAP_C", &c.value).map_or(0, |b| b.len());
                if len < MIN_CHAP_CHALLENGE {
                    tracing::info!(
                        "CHAP: the initiator's challenge has {len} bytes; at least {MIN_CHAP_CHALLENGE} required"
                    );
                    return Err(LoginStatus::AUTHENTICATION_FAILURE);
                }
            }
            let attempt = reply.delegated.iter().any(|kv| kv.key == "CHAP_R");
            let fresh = || (rand::random::<u8>(), rand::random::<[u8; 16]>().to_vec());
            let stepped = chap.step(&reply.delegated, fresh);
            let done = chap.is_done();
            if attempt {
                self.count_attempt(stepped.as_ref().err(), done);
            }
            let keys = stepped.map_err(|e| {
                // The reason, never a secret.
                tracing::info!("CHAP: {e}");
                if e.is_protocol_error() {
                    LoginStatus::INITIATOR_ERROR
                } else {
                    LoginStatus::AUTHENTICATION_FAILURE
                }
            })?;
            answers.extend(keys);
        }
        // Skipping the security stage, or asking to leave it without taking
        // part in the exchange, fails a target that requires CHAP. While the
        // exchange is under way (AuthMethod just agreed, or CHAP keys in this
        // request) the transit is simply not granted yet (§6.3, §12).
        let unauthenticated = self.chap.as_ref().is_some_and(|c| !c.is_done());
        let exchanging =
            !reply.delegated.is_empty() || reply.outcomes.iter().any(|o| o.key == "AuthMethod");
        if unauthenticated && (req.csg == Stage::OPERATIONAL || (req.transit && !exchanging)) {
            return Err(LoginStatus::AUTHENTICATION_FAILURE);
        }
        if !self.declared_tpgt && self.neg.session_type() == SessionType::Normal {
            // §13.9: the target returns its portal group tag in the first
            // response of a normal session.
            answers.push(KeyValue::new(
                "TargetPortalGroupTag",
                self.target.portal_group_tag.to_string(),
            ));
            self.declared_tpgt = true;
        }
        let mut transit = None;
        if req.transit {
            if req.csg == Stage::SECURITY && self.auth_refused {
                // The initiator insists on a method we do not offer (§12).
                return Err(LoginStatus::AUTHENTICATION_FAILURE);
            }
            if req.csg == Stage::OPERATIONAL || req.nsg == Stage::FULL_FEATURE {
                self.neg.set_phase(Phase::Operational);
                answers.extend(self.neg.offers());
            }
            if self.neg.pending().is_empty() && !unauthenticated_after(&self.chap) {
                transit = Some(req.nsg);
            }
        }
        let mut buf = Vec::new();
        text::encode(&answers, &mut buf);
        Ok(self.send_answer(out, req, Bytes::from(buf), transit))
    }

    /// Applies the authentication back-off to a CHAP response: every answer
    /// waits for the keys' back-off, a failure extends it (exponentially),
    /// a success clears it.
    fn count_attempt(&mut self, error: Option<&iesp_proto::chap::ChapError>, done: bool) {
        let keys = self.auth_keys();
        let backoff = self.target.admission.auth();
        let now = Instant::now();
        match error {
            Some(e) if !e.is_protocol_error() => {
                let (until, failures) = backoff.failed(&keys, now, &self.target.limits);
                let initiator = self.neg.declared("InitiatorName").unwrap_or("?");
                let peer = self.peer.map(|p| p.ip().to_string()).unwrap_or_default();
                tracing::warn!(
                    %initiator, %peer, failures,
                    "CHAP authentication failed ({failures} in a row): answering after {:?}",
                    until.duration_since(now)
                );
                self.hold = Some(until);
            }
            _ => {
                self.hold = backoff.hold(&keys, now);
                if done {
                    backoff.succeeded(&keys);
                }
            }
        }
    }

    /// Picks the authentication of the session from its first payload:
    /// the named target's CHAP settings for a normal session, the discovery
    /// settings for a discovery session. An unknown target is refused later
    /// by [`Login::check_identity`].
    fn choose_authentication(&mut self, pairs: &[KeyValue]) {
        let get = |key: &str| {
            pairs
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| kv.value.as_str())
        };
        let auth = match get("SessionType") {
            Some("Discovery") => self.target.discovery_chap.clone(),
            _ => get("TargetName")
                .and_then(|name| self.target.node(name))
                .and_then(|n| n.chap.clone()),
        };
        if let Some(auth) = auth {
            self.neg.limits_mut().auth_methods = vec!["CHAP".to_owned()];
            self.chap = Some(ChapResponder::new(auth.initiator, auth.target));
        }
    }

    /// Validates InitiatorName, SessionType and TargetName once known
    /// (§11.12.5, §13.4, §13.21), and the target's ACL.
    fn check_identity(&mut self) -> Result<(), LoginStatus> {
        if self.neg.declared("InitiatorName").is_none() {
            return Err(LoginStatus::MISSING_PARAMETER);
        }
        if let Some(t) = self.neg.declared("SessionType")
            && SessionType::from_token(t).is_none()
        {
            return Err(LoginStatus::SESSION_TYPE_NOT_SUPPORTED);
        }
        if self.neg.session_type() == SessionType::Normal {
            let name = self
                .neg
                .declared("TargetName")
                .ok_or(LoginStatus::MISSING_PARAMETER)?;
            let node = self.target.node(name).ok_or(LoginStatus::NOT_FOUND)?;
            let initiator = self.neg.declared("InitiatorName").unwrap_or_default();
            if !node.allows(initiator) {
                return Err(LoginStatus::AUTHORIZATION_FAILURE);
            }
        }
        if let Some(leading) = self.leading
            && leading.tsih != 0
        {
            // A login into an existing session: with one of its CIDs it
            // reinstates that connection (§6.3.4); with another CID it adds
            // a connection, up to the session's MaxConnections (§13.2).
            let key = self.session_key(leading)?;
            return self
                .target
                .session_join_kind(&key, leading.tsih, leading.cid)
                .map(|_| ())
                .map_err(|status| self.refused_join(status));
        }
        Ok(())
    }

    /// Counts and logs (once per cause and interval) a login refused for
    /// the session's connection cap.
    fn refused_join(&self, status: LoginStatus) -> LoginStatus {
        if status == LoginStatus::TOO_MANY_CONNECTIONS {
            let ip = self.peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
            self.target
                .admission
                .refusals
                .refuse(Refusal::SessionConnections, ip);
        }
        status
    }

    /// The session identity the login names (§6.3.5): initiator name,
    /// ISID and target name (empty for discovery).
    fn session_key(&self, leading: Leading) -> Result<SessionKey, LoginStatus> {
        let initiator = self
            .neg
            .declared("InitiatorName")
            .ok_or(LoginStatus::MISSING_PARAMETER)?;
        let target = match self.neg.session_type() {
            SessionType::Normal => self
                .neg
                .declared("TargetName")
                .ok_or(LoginStatus::MISSING_PARAMETER)?,
            SessionType::Discovery => "",
        };
        Ok(SessionKey {
            initiator_name: initiator.to_owned(),
            isid: leading.isid,
            target_name: target.to_owned(),
        })
    }

    /// Sends `answer` (split with C=1 when long); completes the login when
    /// the transit reaches full feature phase.
    fn send_answer(
        &mut self,
        out: &mut Outbox,
        req: &LoginRequest,
        answer: Bytes,
        transit: Option<Stage>,
    ) -> LoginStep {
        if answer.len() > LOGIN_RESPONSE_SEGMENT {
            self.rest = Some(answer.slice(LOGIN_RESPONSE_SEGMENT..));
            self.rest_transit = transit;
            let now = answer.slice(..LOGIN_RESPONSE_SEGMENT);
            self.respond_c(out, req, now);
            return LoginStep::Continue;
        }
        let Some(nsg) = transit else {
            self.respond(out, req, false, req.csg, 0, LoginStatus::SUCCESS, answer);
            return LoginStep::Continue;
        };
        if nsg != Stage::FULL_FEATURE {
            self.stage = nsg;
            self.respond(out, req, true, nsg, 0, LoginStatus::SUCCESS, answer);
            return LoginStep::Continue;
        }
        match self.finish() {
            Ok(mut outcome) => {
                let tsih = outcome.session.as_ref().map_or(0, |s| s.tsih);
                self.respond(out, req, true, nsg, tsih, LoginStatus::SUCCESS, answer);
                outcome.stat_sn = self.stat_sn;
                LoginStep::Done(Box::new(outcome))
            }
            Err(status) => {
                self.respond(out, req, false, Stage::SECURITY, 0, status, Bytes::new());
                LoginStep::Failed
            }
        }
    }

    fn finish(&mut self) -> Result<LoginOutcome, LoginStatus> {
        let leading = self.leading.ok_or(LoginStatus::INITIATOR_ERROR)?;
        let p = self.neg.params();
        let initiator_name: Arc<str> = self
            .neg
            .declared("InitiatorName")
            .unwrap_or_default()
            .into();
        let kind = match p.session_type {
            SessionType::Discovery => SessionKind::Discovery,
            SessionType::Normal => SessionKind::Normal,
        };
        let (target_name, luns): (Arc<str>, Arc<LunTable>) = match kind {
            SessionKind::Normal => {
                let name = self
                    .neg
                    .declared("TargetName")
                    .ok_or(LoginStatus::MISSING_PARAMETER)?;
                let node = self.target.node(name).ok_or(LoginStatus::NOT_FOUND)?;
                (node.iqn.as_str().into(), node.luns.clone())
            }
            SessionKind::Discovery => ("".into(), Arc::new(LunTable::default())),
        };
        let mut session_id = self.target.new_session_id();
        let key = self.session_key(leading)?;
        let mut params = FfpParams {
            initiator_mrdsl: p.initiator_mrdsl,
            target_mrdsl: p.target_mrdsl,
            max_burst_length: p.max_burst_length,
            first_burst_length: p.first_burst_length,
            max_outstanding_r2t: u32::from(p.max_outstanding_r2t),
            initial_r2t: p.initial_r2t,
            immediate_data: p.immediate_data,
        };
        let guard = if leading.tsih != 0 {
            // Connection reinstatement or a connection added to the
            // session: the session's own values go on; only the
            // connection's (MaxRecvDataSegmentLength, digests) come from
            // this login.
            let r = self
                .target
                .join_session(key, leading.tsih, leading.cid, session_id, self.exp_cmd_sn)
                .map_err(|status| self.refused_join(status))?;
            if r.reinstated {
                tracing::info!(initiator = %initiator_name, tsih = leading.tsih, cid = leading.cid, "connection reinstatement");
            } else {
                tracing::info!(initiator = %initiator_name, tsih = leading.tsih, cid = leading.cid,
                    connections = r.guard.shared.connections(), "connection added to the session");
            }
            session_id = r.nexus_id;
            // The session's command window goes on (§4.2.2.1).
            self.exp_cmd_sn = r.guard.shared.exp_cmd_sn();
            params = FfpParams {
                initiator_mrdsl: p.initiator_mrdsl,
                target_mrdsl: p.target_mrdsl,
                ..r.params
            };
            r.guard
        } else {
            // Every session gets a TSIH in the final response (§11.13.4);
            // discovery sessions are registered under an empty target name.
            let (guard, reinstated) = self
                .target
                .register_session(
                    key,
                    session_id,
                    leading.cid,
                    params.clone(),
                    p.max_connections,
                    self.exp_cmd_sn,
                )
                .map_err(|cause| {
                    let ip = self.peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
                    self.target.admission.refusals.refuse(cause, ip);
                    debug_assert_eq!(cause, Refusal::Sessions);
                    LoginStatus::OUT_OF_RESOURCES
                })?;
            if reinstated {
                tracing::info!(initiator = %initiator_name, "session reinstatement");
            }
            guard
        };
        let session = Some(guard);
        let address = format!("{},{}", self.portal, self.target.portal_group_tag);
        let discovery = self
            .target
            .nodes
            .iter()
            .filter(|n| n.allows(&initiator_name))
            .map(|n| DiscoveryEntry {
                target_name: n.iqn.clone(),
                addresses: vec![address.clone()],
            })
            .collect();
        Ok(LoginOutcome {
            kind,
            neg: self.neg.clone(),
            params,
            header_digest: p.header_digest == Digest::Crc32c,
            data_digest: p.data_digest == Digest::Crc32c,
            nexus: Nexus {
                initiator_name,
                isid: leading.isid,
                target_name,
                portal_group_tag: self.target.portal_group_tag,
                session_id,
            },
            luns,
            discovery,
            cid: leading.cid,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            session,
        })
    }

    fn respond_c(&mut self, out: &mut Outbox, req: &LoginRequest, data: Bytes) {
        let rsp = LoginResponse {
            transit: false,
            continue_bit: true,
            csg: req.csg,
            nsg: Stage(0),
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih: 0,
            itt: req.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            status: LoginStatus::SUCCESS,
        };
        out.push(Pdu::LoginResponse(rsp).encode(), data);
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        out: &mut Outbox,
        req: &LoginRequest,
        transit: bool,
        nsg: Stage,
        tsih: u16,
        status: LoginStatus,
        data: Bytes,
    ) {
        let rsp = LoginResponse {
            transit,
            continue_bit: false,
            csg: req.csg,
            nsg: if transit { nsg } else { Stage(0) },
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih,
            itt: req.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            status,
        };
        let initiator = self.neg.declared("InitiatorName").unwrap_or_default();
        self.target
            .stats
            .login
            .responded_to(status, initiator, self.peer);
        out.push(Pdu::LoginResponse(rsp).encode(), data);
    }

    fn next_stat_sn(&mut self) -> u32 {
        let sn = self.stat_sn;
        self.stat_sn = sn.wrapping_add(1);
        sn
    }
}

/// Whether a CHAP exchange is configured and not finished: no transit yet.
fn unauthenticated_after(chap: &Option<ChapResponder>) -> bool {
    chap.as_ref().is_some_and(|c| !c.is_done())
}
