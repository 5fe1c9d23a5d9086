//! The text-key negotiation engine both sides use (RFC 7143 §6.2, §6.3, §12, §13).
//!
//! One [`Negotiator`] per connection, for the initiator or the target. It
//! knows every RFC 7143 key ([`KEYS`]): whether it is declared or
//! negotiated, its result function, value syntax, default, who may send it,
//! in which phase, and when it is irrelevant. It does not know about PDUs or
//! login stages (CSG/NSG, T bit): the driver tells it the [`Phase`] and feeds
//! it the decoded pairs of each received Login/Text payload.
//!
//! ## Contract
//!
//! - [`Negotiator::offers`] gives what this side sends unprompted: the
//!   initiator's AuthMethod list (security phase) and operational proposals,
//!   each side's MaxRecvDataSegmentLength declaration (operational phase),
//!   anything queued with [`Negotiator::propose`]/[`Negotiator::declare`],
//!   and, for a target, the keys whose RFC default it cannot live with.
//! - [`Negotiator::receive`] takes a received batch and returns a [`Reply`]:
//!   answers to the peer's offers (in the order received), the keys left to
//!   the caller (authentication exchange keys and SendTargets, in
//!   [`Reply::delegated`]), and a per-key account for logs and reports. The
//!   same call checks the peer's answers to our own offers. [`Negotiator::respond`]
//!   and [`Negotiator::absorb`] are the same call under role-flavoured names.
//! - Per-key problems become answers (§6.2): `NotUnderstood` for unknown keys,
//!   `Irrelevant` for keys that do not apply (discovery session, non-leading
//!   connection, FirstBurstLength with InitialR2T=Yes and ImmediateData=No),
//!   `Reject` for invalid or out-of-range values, wrong sender, wrong phase and
//!   the obsolete marker keys (§13.25). Protocol errors that end the
//!   negotiation are [`NegotiationError`]s: a key received twice (§6.3), a
//!   reserved constant offered as a value (§6.2), an answer the result function
//!   does not admit (§6.2.1, §6.2.2), `NotUnderstood` for a standard key (§6.2).
//!   After an error the negotiator's state is unspecified; the login is over.
//! - Leniency ([`Negotiator::set_lenient`], off by default): an inadmissible
//!   answer that has an obvious legal value — a number above a Min offer or
//!   below a Max offer, or outside the key's range; a boolean that breaks the
//!   OR/AND rule — is replaced by that value (the offer, or the range bound)
//!   instead of ending the negotiation, and recorded as a [`ClampedAnswer`]
//!   ([`Negotiator::clamped`]). Malformed values and list answers outside the
//!   offer stay errors: no value is obviously the one the peer meant.
//! - [`Negotiator::params`] gives the typed outcome, RFC defaults for keys
//!   never negotiated, with the integrity rules applied: FirstBurstLength ≤
//!   MaxBurstLength (§13.14) and MaxOutstandingR2T = 1 when
//!   ErrorRecoveryLevel > 0 and DataSequenceInOrder=Yes (§13.19). A responder
//!   already answers inside those rules when both keys arrive together.
//!
//! ## Driving a login
//!
//! Initiator: `set_phase(Security)`, `declare` InitiatorName, SessionType and
//! (normal session) TargetName, send `offers()`; feed each Login Response's
//! pairs to `receive` and send its `answers` (plus CHAP keys the driver
//! builds from `delegated`). At the operational stage `set_phase(Operational)`
//! and send `offers()` again. Ask for transit only when `pending()` is empty.
//!
//! Target: `set_phase` from each request's CSG, `receive` the pairs, send
//! `answers` (plus TargetPortalGroupTag etc. queued with `declare`). When the
//! initiator asks to leave the operational stage, append `offers()` (keys
//! this target must still negotiate) and hold T=0 until `pending()` is empty.
//!
//! Full Feature Phase text negotiation: `set_phase(FullFeature)` (once), then
//! `start_text_negotiation` for each new negotiation sequence. Only keys whose
//! use is ALL or FFPO may appear there (§13 "Use"); others are rejected.
//! SendTargets responses (many TargetName/TargetAddress keys) are not fed to
//! the engine: decode them with [`crate::text::decode`].
//!
//! ## Choices where the RFC leaves room
//!
//! - Optional answers (§6.2.2: OR with Yes, AND with No) are always sent, and
//!   never required from the peer.
//! - Operational keys in the security phase are negotiated normally (nothing in
//!   §6.3 forbids an initiator from offering them early); security keys outside
//!   it are rejected.
//! - Leading-only (LO) keys on a non-leading connection are answered `Irrelevant`.
//! - Declared values that are invalid (MaxRecvDataSegmentLength outside
//!   512..=2^24-1, an empty or over-long iSCSI name, …) are answered `Reject`
//!   and not recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;

use crate::text::{self, KeyValue, ValueLimit};

/// The answer for a key the responder does not know (§6.2).
pub const NOT_UNDERSTOOD: &str = "NotUnderstood";
/// The answer for a key that does not apply in this negotiation (§6.2).
pub const IRRELEVANT: &str = "Irrelevant";
/// The answer for an inadmissible offer (§6.2.1, §6.2.2).
pub const REJECT: &str = "Reject";
/// The list value for a missing function, e.g. `HeaderDigest=None` (§6.2.1).
pub const NONE: &str = "None";

/// The smallest and largest MaxRecvDataSegmentLength, MaxBurstLength and
/// FirstBurstLength (§13.12–§13.14).
pub const SEGMENT_LENGTH_RANGE: std::ops::RangeInclusive<u32> = 512..=16_777_215;

/// Whether `value` is one of the constants only a responder may send
/// (`NotUnderstood`, `Irrelevant`, `Reject`; §6.2).
pub fn is_reserved_answer(value: &str) -> bool {
    matches!(value, NOT_UNDERSTOOD | IRRELEVANT | REJECT)
}

/// Which end of the connection a negotiator speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The iSCSI initiator.
    Initiator,
    /// The iSCSI target.
    Target,
}

impl Role {
    /// The other end.
    pub fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Target,
            Role::Target => Role::Initiator,
        }
    }
}

/// The SessionType key's value (§13.21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SessionType {
    /// A discovery session: SendTargets and Logout only.
    Discovery,
    /// A normal session (the default).
    #[default]
    Normal,
}

impl SessionType {
    /// The wire token.
    pub fn token(self) -> &'static str {
        match self {
            SessionType::Discovery => "Discovery",
            SessionType::Normal => "Normal",
        }
    }

    /// Parses the wire token (case-sensitive, §6.1).
    pub fn from_token(token: &str) -> Option<Self> {
        match token {
            "Discovery" => Some(SessionType::Discovery),
            "Normal" => Some(SessionType::Normal),
            _ => None,
        }
    }
}

/// Where in the connection's life a negotiation happens; decides which keys
/// are allowed (§6.3, §13 "Use").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Login, SecurityNegotiation stage (CSG=0).
    Security,
    /// Login, LoginOperationalNegotiation stage (CSG=1).
    Operational,
    /// Text negotiation in Full Feature Phase (§6.5).
    FullFeature,
}

/// A digest algorithm for HeaderDigest/DataDigest (§13.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Digest {
    /// No digest (the default).
    #[default]
    None,
    /// CRC32C (§13.1, §11.1).
    Crc32c,
}

impl Digest {
    /// The wire token.
    pub fn token(self) -> &'static str {
        match self {
            Digest::None => NONE,
            Digest::Crc32c => "CRC32C",
        }
    }

    /// Parses a wire token; `None` for tokens this crate does not implement.
    pub fn from_token(token: &str) -> Option<Self> {
        match token {
            NONE => Some(Digest::None),
            "CRC32C" => Some(Digest::Crc32c),
            _ => None,
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// How the outcome of a negotiated key is computed (§6.2.1, §6.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultFn {
    /// The smaller of the offer and the responder's value.
    Min,
    /// The larger of the offer and the responder's value.
    Max,
    /// Yes if either side says Yes.
    Or,
    /// Yes only if both sides say Yes.
    And,
    /// The first value of the originator's list the responder accepts.
    List,
}

/// What kind of key this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Declared by its sender, recorded by the receiver, not answered.
    Declarative,
    /// Offered and answered; the result function gives the outcome.
    Negotiated(ResultFn),
    /// Recognised but handled by the caller: the authentication exchange
    /// (§12.1) and SendTargets (§13.3).
    Delegated,
    /// An RFC 3720 key RFC 7143 §13.25 obsoletes: answered `Reject`.
    Obsolete,
}

/// The value syntax of a key (§6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// A numerical-value within `min..=max`.
    Numeric {
        /// Smallest admissible value.
        min: u64,
        /// Largest admissible value.
        max: u64,
    },
    /// `Yes` or `No`.
    Boolean,
    /// A list-of-values (comma separated tokens).
    List,
    /// A text-value or iSCSI-local-name-value.
    Text,
    /// An iSCSI-name-value (at most 223 bytes, §4.2.7.1 via §13.4/§13.5).
    IscsiName,
    /// A 16-bit regular-binary-value (TargetPortalGroupTag, §13.9).
    Binary16,
    /// A large-binary-value (CHAP_C, CHAP_R, …).
    LargeBinary,
    /// One of a fixed set of tokens.
    Enum(&'static [&'static str]),
    /// A numeric-range `a~b` (only the obsolete marker interval keys).
    NumericRange,
}

impl ValueType {
    /// The §6.1 length rule for values of this type.
    pub fn limit(&self) -> ValueLimit {
        match self {
            ValueType::List => ValueLimit::List,
            ValueType::LargeBinary => ValueLimit::Large,
            _ => ValueLimit::Simple,
        }
    }
}

/// Who may send a key (§13 "Senders").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Senders {
    /// Only the initiator.
    Initiator,
    /// Only the target.
    Target,
    /// Either side.
    Both,
}

impl Senders {
    /// Whether `role` may send the key.
    pub fn allows(self, role: Role) -> bool {
        matches!(
            (self, role),
            (Senders::Both, _)
                | (Senders::Initiator, Role::Initiator)
                | (Senders::Target, Role::Target)
        )
    }
}

/// Where a key may be used (§13 "Use", §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Usage {
    /// Login security stage only (AuthMethod and the authentication exchange, §12).
    Security,
    /// IO: during login only.
    LoginOnly,
    /// LO: during login of the leading connection only.
    LeadingOnly,
    /// ALL: during login and in Full Feature Phase.
    All,
    /// FFPO: in Full Feature Phase only.
    FullFeatureOnly,
}

impl Usage {
    /// Whether a key with this use may appear in `phase`.
    pub fn allowed_in(self, phase: Phase) -> bool {
        match (self, phase) {
            (Usage::All, _) => true,
            (Usage::Security, p) => p == Phase::Security,
            (Usage::LoginOnly | Usage::LeadingOnly, p) => p != Phase::FullFeature,
            (Usage::FullFeatureOnly, p) => p == Phase::FullFeature,
        }
    }
}

/// One row of the key table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyDef {
    /// The key name, case-sensitive.
    pub name: &'static str,
    /// Declared, negotiated, delegated or obsolete.
    pub kind: KeyKind,
    /// Value syntax.
    pub value: ValueType,
    /// RFC default, in wire form, for keys that have one.
    pub default: Option<&'static str>,
    /// Who may send it.
    pub senders: Senders,
    /// Where it may be used.
    pub usage: Usage,
    /// "Irrelevant when: SessionType=Discovery".
    pub irrelevant_in_discovery: bool,
    /// Where the rules come from.
    pub section: &'static str,
}

const LEN: ValueType = ValueType::Numeric {
    min: 512,
    max: 16_777_215,
};

/// One table row; positional so the table reads as a table.
#[allow(clippy::too_many_arguments)]
const fn key(
    name: &'static str,
    kind: KeyKind,
    value: ValueType,
    default: Option<&'static str>,
    senders: Senders,
    usage: Usage,
    irrelevant_in_discovery: bool,
    section: &'static str,
) -> KeyDef {
    KeyDef {
        name,
        kind,
        value,
        default,
        senders,
        usage,
        irrelevant_in_discovery,
        section,
    }
}

use KeyKind::{Declarative, Delegated, Negotiated, Obsolete};
use Senders::{Both, Initiator as ByInitiator, Target as ByTarget};
use Usage::{All, FullFeatureOnly, LeadingOnly, LoginOnly, Security};

/// Every key RFC 7143 defines (§12, §13), with the obsolete RFC 3720 marker
/// keys (§13.25). Keys not here — including unknown `X-` and `X#` extension
/// keys — are answered `NotUnderstood`.
#[rustfmt::skip]
pub static KEYS: &[KeyDef] = &[
    // §12.1: negotiated in the security stage; the exchange itself is the caller's.
    key("AuthMethod", Negotiated(ResultFn::List), ValueType::List, Some(NONE), Both, Security, false, "RFC 7143 §12.1"),
    key("KRB_AP_REQ", Delegated, ValueType::LargeBinary, None, ByInitiator, Security, false, "RFC 7143 §12.1.1"),
    key("KRB_AP_REP", Delegated, ValueType::LargeBinary, None, ByTarget, Security, false, "RFC 7143 §12.1.1"),
    key("SRP_U", Delegated, ValueType::Text, None, ByInitiator, Security, false, "RFC 7143 §12.1.2"),
    key("TargetAuth", Delegated, ValueType::Boolean, None, ByInitiator, Security, false, "RFC 7143 §12.1.2"),
    key("SRP_GROUP", Delegated, ValueType::List, None, Both, Security, false, "RFC 7143 §12.1.2"),
    key("SRP_s", Delegated, ValueType::LargeBinary, None, ByTarget, Security, false, "RFC 7143 §12.1.2"),
    key("SRP_A", Delegated, ValueType::LargeBinary, None, ByInitiator, Security, false, "RFC 7143 §12.1.2"),
    key("SRP_B", Delegated, ValueType::LargeBinary, None, ByTarget, Security, false, "RFC 7143 §12.1.2"),
    key("SRP_M", Delegated, ValueType::LargeBinary, None, ByInitiator, Security, false, "RFC 7143 §12.1.2"),
    key("SRP_HM", Delegated, ValueType::LargeBinary, None, ByTarget, Security, false, "RFC 7143 §12.1.2"),
    key("CHAP_A", Delegated, ValueType::List, None, Both, Security, false, "RFC 7143 §12.1.3"),
    key("CHAP_I", Delegated, ValueType::Numeric { min: 0, max: 255 }, None, Both, Security, false, "RFC 7143 §12.1.3"),
    key("CHAP_C", Delegated, ValueType::LargeBinary, None, Both, Security, false, "RFC 7143 §12.1.3"),
    key("CHAP_N", Delegated, ValueType::Text, None, Both, Security, false, "RFC 7143 §12.1.3"),
    key("CHAP_R", Delegated, ValueType::LargeBinary, None, Both, Security, false, "RFC 7143 §12.1.3"),
    // §13: login/text operational keys.
    key("HeaderDigest", Negotiated(ResultFn::List), ValueType::List, Some(NONE), Both, LoginOnly, false, "RFC 7143 §13.1"),
    key("DataDigest", Negotiated(ResultFn::List), ValueType::List, Some(NONE), Both, LoginOnly, false, "RFC 7143 §13.1"),
    key("MaxConnections", Negotiated(ResultFn::Min), ValueType::Numeric { min: 1, max: 65535 }, Some("1"), Both, LeadingOnly, true, "RFC 7143 §13.2"),
    key("SendTargets", Delegated, ValueType::Text, None, ByInitiator, FullFeatureOnly, false, "RFC 7143 §13.3"),
    // IO when the initiator sends it; a target sends it only in SendTargets
    // responses, which do not go through this engine.
    key("TargetName", Declarative, ValueType::IscsiName, None, Both, LoginOnly, false, "RFC 7143 §13.4"),
    key("InitiatorName", Declarative, ValueType::IscsiName, None, ByInitiator, LoginOnly, false, "RFC 7143 §13.5"),
    key("TargetAlias", Declarative, ValueType::Text, None, ByTarget, All, false, "RFC 7143 §13.6"),
    key("InitiatorAlias", Declarative, ValueType::Text, None, ByInitiator, All, false, "RFC 7143 §13.7"),
    key("TargetAddress", Declarative, ValueType::Text, None, ByTarget, All, false, "RFC 7143 §13.8"),
    key("TargetPortalGroupTag", Declarative, ValueType::Binary16, None, ByTarget, LoginOnly, false, "RFC 7143 §13.9"),
    key("InitialR2T", Negotiated(ResultFn::Or), ValueType::Boolean, Some("Yes"), Both, LeadingOnly, true, "RFC 7143 §13.10"),
    key("ImmediateData", Negotiated(ResultFn::And), ValueType::Boolean, Some("Yes"), Both, LeadingOnly, true, "RFC 7143 §13.11"),
    key("MaxRecvDataSegmentLength", Declarative, LEN, Some("8192"), Both, All, false, "RFC 7143 §13.12"),
    key("MaxBurstLength", Negotiated(ResultFn::Min), LEN, Some("262144"), Both, LeadingOnly, true, "RFC 7143 §13.13"),
    key("FirstBurstLength", Negotiated(ResultFn::Min), LEN, Some("65536"), Both, LeadingOnly, true, "RFC 7143 §13.14"),
    key("DefaultTime2Wait", Negotiated(ResultFn::Max), ValueType::Numeric { min: 0, max: 3600 }, Some("2"), Both, LeadingOnly, false, "RFC 7143 §13.15"),
    key("DefaultTime2Retain", Negotiated(ResultFn::Min), ValueType::Numeric { min: 0, max: 3600 }, Some("20"), Both, LeadingOnly, false, "RFC 7143 §13.16"),
    key("MaxOutstandingR2T", Negotiated(ResultFn::Min), ValueType::Numeric { min: 1, max: 65535 }, Some("1"), Both, LeadingOnly, true, "RFC 7143 §13.17"),
    key("DataPDUInOrder", Negotiated(ResultFn::Or), ValueType::Boolean, Some("Yes"), Both, LeadingOnly, true, "RFC 7143 §13.18"),
    key("DataSequenceInOrder", Negotiated(ResultFn::Or), ValueType::Boolean, Some("Yes"), Both, LeadingOnly, true, "RFC 7143 §13.19"),
    key("ErrorRecoveryLevel", Negotiated(ResultFn::Min), ValueType::Numeric { min: 0, max: 2 }, Some("0"), Both, LeadingOnly, false, "RFC 7143 §13.20"),
    key("SessionType", Declarative, ValueType::Enum(&["Discovery", "Normal"]), Some("Normal"), ByInitiator, LeadingOnly, false, "RFC 7143 §13.21"),
    key("TaskReporting", Negotiated(ResultFn::List), ValueType::List, Some("RFC3720"), Both, LeadingOnly, true, "RFC 7143 §13.23"),
    key("iSCSIProtocolLevel", Negotiated(ResultFn::Min), ValueType::Numeric { min: 0, max: 31 }, Some("1"), Both, LeadingOnly, true, "RFC 7143 §13.24"),
    key("OFMarker", Obsolete, ValueType::Boolean, None, Both, LoginOnly, false, "RFC 7143 §13.25"),
    key("IFMarker", Obsolete, ValueType::Boolean, None, Both, LoginOnly, false, "RFC 7143 §13.25"),
    key("OFMarkInt", Obsolete, ValueType::NumericRange, None, Both, LoginOnly, false, "RFC 7143 §13.25"),
    key("IFMarkInt", Obsolete, ValueType::NumericRange, None, Both, LoginOnly, false, "RFC 7143 §13.25"),
    key("X#NodeArchitecture", Declarative, ValueType::List, None, Both, LeadingOnly, false, "RFC 7143 §13.26"),
];

/// The table row for `name` (exact, case-sensitive match).
pub fn key_def(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|d| d.name == name)
}

/// Whether a standard key may legitimately be answered `NotUnderstood`:
/// extension keys, the obsolete keys, and the keys RFC 3720 peers predate.
fn may_be_not_understood(name: &str, def: Option<&KeyDef>) -> bool {
    name.starts_with("X-")
        || name.starts_with("X#")
        || matches!(name, "TaskReporting" | "iSCSIProtocolLevel")
        || def.is_none_or(|d| d.kind == Obsolete)
}

/// What this side supports or prefers for each negotiable key. The default
/// is the RFC defaults, with no digests and no authentication.
///
/// The meaning of each value follows the key's result function: for Min keys
/// the largest value acceptable, for Max keys the smallest, for booleans the
/// value this side would choose, for lists the acceptable values in order of
/// preference. Numbers outside a key's range are clamped into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Acceptable header digests, preferred first (§13.1).
    pub header_digest: Vec<Digest>,
    /// Acceptable data digests, preferred first (§13.1).
    pub data_digest: Vec<Digest>,
    /// Acceptable authentication methods (`CHAP`, `None`, …), preferred first (§12.1).
    pub auth_methods: Vec<String>,
    /// MaxConnections, Min (§13.2).
    pub max_connections: u16,
    /// InitialR2T, OR (§13.10).
    pub initial_r2t: bool,
    /// ImmediateData, AND (§13.11).
    pub immediate_data: bool,
    /// The MaxRecvDataSegmentLength this side declares (§13.12).
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength, Min (§13.13).
    pub max_burst_length: u32,
    /// FirstBurstLength, Min (§13.14); offered no higher than `max_burst_length`.
    pub first_burst_length: u32,
    /// DefaultTime2Wait, Max (§13.15).
    pub default_time2wait: u16,
    /// DefaultTime2Retain, Min (§13.16).
    pub default_time2retain: u16,
    /// MaxOutstandingR2T, Min (§13.17).
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder, OR (§13.18).
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder, OR (§13.19).
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel, Min (§13.20).
    pub error_recovery_level: u8,
    /// Acceptable TaskReporting values, preferred first (§13.23).
    pub task_reporting: Vec<String>,
    /// iSCSIProtocolLevel, Min (§13.24).
    pub iscsi_protocol_level: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_digest: vec![Digest::None],
            data_digest: vec![Digest::None],
            auth_methods: vec![NONE.to_owned()],
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_recv_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            task_reporting: vec!["RFC3720".to_owned()],
            iscsi_protocol_level: 1,
        }
    }
}

/// This side's own value for a key, in the form its result function needs.
enum Own {
    Num(u64),
    Bool(bool),
    List(Vec<String>),
}

impl Limits {
    fn own(&self, name: &str) -> Option<Own> {
        let digests = |l: &[Digest]| Own::List(l.iter().map(|d| d.token().to_owned()).collect());
        Some(match name {
            "HeaderDigest" => digests(&self.header_digest),
            "DataDigest" => digests(&self.data_digest),
            "AuthMethod" => Own::List(self.auth_methods.clone()),
            "TaskReporting" => Own::List(self.task_reporting.clone()),
            "MaxConnections" => Own::Num(self.max_connections.into()),
            "InitialR2T" => Own::Bool(self.initial_r2t),
            "ImmediateData" => Own::Bool(self.immediate_data),
            "MaxRecvDataSegmentLength" => Own::Num(self.max_recv_data_segment_length.into()),
            "MaxBurstLength" => Own::Num(self.max_burst_length.into()),
            "FirstBurstLength" => Own::Num(self.first_burst_length.into()),
            "DefaultTime2Wait" => Own::Num(self.default_time2wait.into()),
            "DefaultTime2Retain" => Own::Num(self.default_time2retain.into()),
            "MaxOutstandingR2T" => Own::Num(self.max_outstanding_r2t.into()),
            "DataPDUInOrder" => Own::Bool(self.data_pdu_in_order),
            "DataSequenceInOrder" => Own::Bool(self.data_sequence_in_order),
            "ErrorRecoveryLevel" => Own::Num(self.error_recovery_level.into()),
            "iSCSIProtocolLevel" => Own::Num(self.iscsi_protocol_level.into()),
            _ => return None,
        })
    }
}

/// The negotiated operational parameters of a session and connection, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// Discovery or normal (§13.21).
    pub session_type: SessionType,
    /// HeaderDigest (§13.1).
    pub header_digest: Digest,
    /// DataDigest (§13.1).
    pub data_digest: Digest,
    /// MaxConnections (§13.2).
    pub max_connections: u16,
    /// InitialR2T (§13.10).
    pub initial_r2t: bool,
    /// ImmediateData (§13.11).
    pub immediate_data: bool,
    /// MaxBurstLength (§13.13).
    pub max_burst_length: u32,
    /// FirstBurstLength (§13.14), never above `max_burst_length`.
    pub first_burst_length: u32,
    /// DefaultTime2Wait in seconds (§13.15).
    pub default_time2wait: u16,
    /// DefaultTime2Retain in seconds (§13.16).
    pub default_time2retain: u16,
    /// MaxOutstandingR2T (§13.17).
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder (§13.18).
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder (§13.19).
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel (§13.20).
    pub error_recovery_level: u8,
    /// TaskReporting (§13.23).
    pub task_reporting: String,
    /// iSCSIProtocolLevel (§13.24).
    pub iscsi_protocol_level: u8,
    /// MaxRecvDataSegmentLength declared by the initiator: the most the
    /// target may send in one PDU (§13.12).
    pub initiator_mrdsl: u32,
    /// MaxRecvDataSegmentLength declared by the target: the most the
    /// initiator may send in one PDU (§13.12).
    pub target_mrdsl: u32,
}

impl Default for SessionParams {
    /// The RFC 7143 §13 defaults.
    fn default() -> Self {
        SessionParams {
            session_type: SessionType::Normal,
            header_digest: Digest::None,
            data_digest: Digest::None,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            task_reporting: "RFC3720".to_owned(),
            iscsi_protocol_level: 1,
            initiator_mrdsl: 8192,
            target_mrdsl: 8192,
        }
    }
}

/// A protocol error that ends the negotiation (the target answers with a
/// Login reject, initiator error; the initiator drops the connection, §6.3).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// A key received a second time in one negotiation (§6.3: keys must not be
    /// declared or negotiated more than once, TargetAddress excepted).
    #[error("key {key} received more than once in this negotiation (RFC 7143 §6.3)")]
    Duplicate {
        /// The repeated key.
        key: String,
    },
    /// `Reject`, `Irrelevant` or `NotUnderstood` sent as a proposal (§6.2).
    #[error("{key}={value}: a reserved answer constant used as an offer (RFC 7143 §6.2)")]
    ReservedValueOffered {
        /// The key.
        key: String,
        /// The reserved constant.
        value: String,
    },
    /// The peer's answer to our offer is not admissible (§6.2.1, §6.2.2).
    #[error("answer {key}={answered} to our offer {key}={offered} is not admissible: {reason}")]
    InadmissibleAnswer {
        /// The key.
        key: String,
        /// What we offered.
        offered: String,
        /// What the peer answered.
        answered: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A standard key answered `NotUnderstood` (§6.2: keys used as specified
    /// must not be answered NotUnderstood).
    #[error("standard key {key} answered NotUnderstood (RFC 7143 §6.2)")]
    StandardKeyNotUnderstood {
        /// The key.
        key: String,
    },
}

/// An inadmissible answer replaced by the legal value under
/// [`Negotiator::set_lenient`] (a peer defect tolerated, not forgotten).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClampedAnswer {
    /// The key.
    pub key: String,
    /// What we offered.
    pub offered: String,
    /// What the peer answered.
    pub answered: String,
    /// The value in force instead.
    pub used: String,
    /// Which rule the answer broke.
    pub reason: &'static str,
}

impl fmt::Display for ClampedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} answered to our offer {}: {}; using {}",
            self.key, self.answered, self.offered, self.reason, self.used
        )
    }
}

/// What became of one received key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// A declaration by the peer, recorded (see [`Negotiator::declared`]).
    Declared,
    /// An offer (or declaration) by the peer, answered with `answer`: the
    /// negotiated value, or `Reject` / `Irrelevant` / `NotUnderstood`.
    Answered {
        /// What we send back.
        answer: String,
    },
    /// The peer's answer to one of our offers or declarations, accepted.
    Settled,
    /// Left to the caller, in [`Reply::delegated`].
    Delegated,
}

/// The account of one received key, for logs and conformance reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The key as received.
    pub key: String,
    /// The value as received.
    pub value: String,
    /// What the engine did with it.
    pub disposition: Disposition,
}

/// What [`Negotiator::receive`] produced for one received batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// Pairs to send back: answers in the order the offers arrived, then this
    /// side's pending declarations and queued proposals.
    pub answers: Vec<KeyValue>,
    /// Received keys the caller handles: CHAP_*/SRP_*/KRB_* (in the security
    /// phase) and SendTargets (in Full Feature Phase).
    pub delegated: Vec<KeyValue>,
    /// One entry per received key, in order.
    pub outcomes: Vec<Outcome>,
}

/// One key this side sent in the current negotiation.
#[derive(Clone, Debug)]
struct Sent {
    value: String,
    /// An offer (answer expected or optional) rather than a declaration.
    offer: bool,
    /// Still waiting for the answer.
    pending: bool,
    answer: Option<String>,
}

/// The negotiation engine for one connection; see the module docs.
#[derive(Clone, Debug)]
pub struct Negotiator {
    role: Role,
    limits: Limits,
    phase: Phase,
    session_type: SessionType,
    leading: bool,
    /// Values in force for negotiated keys, canonical wire text.
    results: BTreeMap<&'static str, String>,
    /// The peer's declarations.
    peer_declared: BTreeMap<String, String>,
    /// What this side sent in the current negotiation.
    sent: BTreeMap<String, Sent>,
    /// Keys received in the current negotiation (§6.3 duplicate rule).
    seen: BTreeSet<String>,
    /// Exact pairs to send with the next output.
    queued: Vec<KeyValue>,
    own_mrdsl: Option<u32>,
    peer_mrdsl: Option<u32>,
    /// Clamp inadmissible answers instead of failing (see the module docs).
    lenient: bool,
    /// Answers clamped so far, in order.
    clamped: Vec<ClampedAnswer>,
}

/// How one received offer is to be answered.
enum Plan {
    /// Answer with this (final) value.
    Answer(String),
    /// Negotiate after the other keys of the batch (integrity rules).
    Deferred(&'static KeyDef),
    /// No answer.
    Silent,
}

impl Negotiator {
    /// A negotiator for `role` with `limits`, in the security phase of a
    /// normal session on a leading connection.
    pub fn new(role: Role, limits: Limits) -> Self {
        Negotiator {
            role,
            limits,
            phase: Phase::Security,
            session_type: SessionType::Normal,
            leading: true,
            results: BTreeMap::new(),
            peer_declared: BTreeMap::new(),
            sent: BTreeMap::new(),
            seen: BTreeSet::new(),
            queued: Vec::new(),
            own_mrdsl: None,
            peer_mrdsl: None,
            lenient: false,
            clamped: Vec::new(),
        }
    }

    /// Whether inadmissible answers to our offers are clamped to the legal
    /// value (recorded in [`Negotiator::clamped`]) instead of ending the
    /// negotiation with [`NegotiationError::InadmissibleAnswer`].
    pub fn set_lenient(&mut self, lenient: bool) {
        self.lenient = lenient;
    }

    /// The answers clamped under [`Negotiator::set_lenient`], in the order
    /// received.
    pub fn clamped(&self) -> &[ClampedAnswer] {
        &self.clamped
    }

    /// The role this negotiator speaks for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits it negotiates with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// This side's limits, to adjust before the keys they govern are
    /// negotiated (a target picks AuthMethod once the login names the
    /// target). Keys already negotiated keep their results.
    pub fn limits_mut(&mut self) -> &mut Limits {
        &mut self.limits
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Moves to `phase`. Entering Full Feature Phase starts a fresh text
    /// negotiation (see [`Negotiator::start_text_negotiation`]); login stages
    /// share one negotiation, so a key may not reappear across them (§6.3).
    pub fn set_phase(&mut self, phase: Phase) {
        if phase == Phase::FullFeature && self.phase != Phase::FullFeature {
            self.start_text_negotiation();
        }
        self.phase = phase;
    }

    /// Starts a new Full Feature Phase text negotiation sequence: forgets
    /// which keys were sent and received (results stay).
    pub fn start_text_negotiation(&mut self) {
        self.sent.clear();
        self.seen.clear();
    }

    /// The session type: set by [`Negotiator::set_session_type`], by a
    /// `SessionType` declaration this side sends, or by the one it receives.
    pub fn session_type(&self) -> SessionType {
        self.session_type
    }

    /// Sets the session type explicitly (it is not sent).
    pub fn set_session_type(&mut self, session_type: SessionType) {
        self.session_type = session_type;
    }

    /// Whether this is the leading connection of its session (default true).
    /// LO keys on other connections are answered `Irrelevant`.
    pub fn set_leading(&mut self, leading: bool) {
        self.leading = leading;
    }

    /// Queues `key=value` to be sent exactly as given with the next output of
    /// [`offers`](Self::offers) or [`receive`](Self::receive): as an offer, a
    /// declaration, or — if the peer offers the same key in the batch being
    /// answered — in place of the computed answer. Nothing is validated, so
    /// tests can bend the rules. Answers to it are checked as for any offer.
    pub fn propose(&mut self, key: &str, value: &str) {
        self.queued.retain(|kv| kv.key != key);
        self.queued.push(KeyValue::new(key, value));
    }

    /// Queues a declaration (InitiatorName, TargetPortalGroupTag, …); the same
    /// as [`propose`](Self::propose), named for intent.
    pub fn declare(&mut self, key: &str, value: &str) {
        self.propose(key, value);
    }

    /// What this side sends unprompted now (see the module docs). Marks the
    /// offers pending until answered.
    pub fn offers(&mut self) -> Vec<KeyValue> {
        let mut out = self.auto_declarations();
        for def in KEYS {
            if let Some(value) = self.auto_offer(def) {
                out.push(KeyValue::new(def.name, value));
            }
        }
        self.flush_queue(&mut out);
        for kv in &out {
            self.note_sent(kv);
        }
        out
    }

    /// Processes one received batch (a whole, reassembled Login or Text
    /// payload): answers the peer's offers, records its declarations, checks
    /// its answers to ours. See [`Reply`] and [`NegotiationError`].
    pub fn receive(&mut self, received: &[KeyValue]) -> Result<Reply, NegotiationError> {
        let mut in_batch = BTreeSet::new();
        for kv in received {
            let repeatable = kv.key == "TargetAddress";
            if !repeatable && (self.seen.contains(&kv.key) || !in_batch.insert(kv.key.as_str())) {
                return Err(NegotiationError::Duplicate {
                    key: kv.key.clone(),
                });
            }
        }
        // SessionType decides which keys are irrelevant, wherever it sits in
        // the batch.
        if self.role == Role::Target && self.phase != Phase::FullFeature {
            if let Some(t) = received
                .iter()
                .find(|kv| kv.key == "SessionType")
                .and_then(|kv| SessionType::from_token(&kv.value))
            {
                self.session_type = t;
            }
        }

        let mut reply = Reply::default();
        let mut plans = Vec::with_capacity(received.len());
        for kv in received {
            self.seen.insert(kv.key.clone());
            let def = key_def(&kv.key);
            let is_answer = def.is_none_or(|d| d.kind != Delegated)
                && self
                    .sent
                    .get(&kv.key)
                    .is_some_and(|s| s.offer || is_reserved_answer(&kv.value));
            let plan = if is_answer {
                self.settle(kv, def)?;
                reply.outcomes.push(Outcome {
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                    disposition: Disposition::Settled,
                });
                Plan::Silent
            } else {
                self.plan_offer(kv, def, &mut reply)?
            };
            plans.push(plan);
        }

        // Second pass: keys whose answer depends on others in the batch.
        let mut answers = Vec::new();
        for (kv, plan) in received.iter().zip(plans) {
            let answer = match plan {
                Plan::Answer(a) => a,
                Plan::Deferred(def) => self.negotiate_deferred(def, &kv.value),
                Plan::Silent => continue,
            };
            answers.push(KeyValue::new(kv.key.clone(), answer));
        }
        // A queued proposal for a key being answered replaces the answer.
        for answer in &mut answers {
            if let Some(i) = self.queued.iter().position(|q| q.key == answer.key) {
                let forced = self.queued.remove(i);
                // What goes on the wire is what is in force.
                if let Some(def) = key_def(&forced.key).filter(|d| matches!(d.kind, Negotiated(_)))
                {
                    match canonical(def, &forced.value) {
                        Some(value) => self.results.insert(def.name, value),
                        None => self.results.remove(def.name),
                    };
                }
                answer.value = forced.value;
            }
        }
        for answer in &answers {
            if let Some(o) = reply
                .outcomes
                .iter_mut()
                .rev()
                .find(|o| o.key == answer.key)
            {
                if let Disposition::Answered { answer: a } = &mut o.disposition {
                    a.clone_from(&answer.value);
                }
            }
        }
        let mut extra = self.auto_declarations();
        self.flush_queue(&mut extra);
        for kv in &extra {
            self.note_sent(kv);
        }
        answers.extend(extra);
        reply.answers = answers;
        Ok(reply)
    }

    /// [`receive`](Self::receive), for a side answering the peer's offers.
    pub fn respond(&mut self, received: &[KeyValue]) -> Result<Reply, NegotiationError> {
        self.receive(received)
    }

    /// [`receive`](Self::receive), for a side taking the answers to its offers.
    pub fn absorb(&mut self, received: &[KeyValue]) -> Result<Reply, NegotiationError> {
        self.receive(received)
    }

    /// Keys this side offered in the current negotiation that the peer has
    /// not answered yet.
    pub fn pending(&self) -> Vec<&str> {
        self.sent
            .iter()
            .filter(|(_, s)| s.pending)
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// The peer's answer to a key this side sent in the current negotiation,
    /// exactly as received.
    pub fn answer_to(&self, key: &str) -> Option<&str> {
        self.sent.get(key).and_then(|s| s.answer.as_deref())
    }

    /// The value in force for a negotiated key, if it was negotiated (not
    /// defaulted), as wire text.
    pub fn result(&self, key: &str) -> Option<&str> {
        self.results.get(key).map(String::as_str)
    }

    /// A value the peer declared (TargetName, InitiatorName, SessionType,
    /// TargetAlias, MaxRecvDataSegmentLength, …).
    pub fn declared(&self, key: &str) -> Option<&str> {
        self.peer_declared.get(key).map(String::as_str)
    }

    /// The negotiated AuthMethod, if any.
    pub fn auth_method(&self) -> Option<&str> {
        self.result("AuthMethod")
    }

    /// The most this side may send in one PDU's data segment: the peer's
    /// declared MaxRecvDataSegmentLength, or 8192 (§13.12).
    pub fn max_send_data_segment_length(&self) -> u32 {
        self.peer_mrdsl.unwrap_or(8192)
    }

    /// The negotiated parameters, with defaults and integrity rules applied
    /// (module docs).
    pub fn params(&self) -> SessionParams {
        let d = SessionParams::default();
        let discovery = self.session_type == SessionType::Discovery;
        // Keys irrelevant in a discovery session keep their defaults there.
        let get = |name: &str| {
            let def = key_def(name)?;
            if discovery && def.irrelevant_in_discovery {
                return None;
            }
            self.results.get(name).map(String::as_str)
        };
        let num = |name: &str, default: u64| {
            get(name)
                .and_then(text::decode_numerical)
                .unwrap_or(default)
        };
        let flag = |name: &str, default: bool| get(name).map_or(default, |v| v == "Yes");
        let digest = |name: &str| get(name).and_then(Digest::from_token).unwrap_or_default();
        // Results are range-checked on the way in, so these conversions hold.
        let u16_of = |n: u64| u16::try_from(n).unwrap_or(u16::MAX);
        let u32_of = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let u8_of = |n: u64| u8::try_from(n).unwrap_or(u8::MAX);

        let max_burst_length = u32_of(num("MaxBurstLength", d.max_burst_length.into()));
        let error_recovery_level = u8_of(num("ErrorRecoveryLevel", d.error_recovery_level.into()));
        let data_sequence_in_order = flag("DataSequenceInOrder", d.data_sequence_in_order);
        let mut max_outstanding_r2t =
            u16_of(num("MaxOutstandingR2T", d.max_outstanding_r2t.into()));
        if error_recovery_level > 0 && data_sequence_in_order {
            max_outstanding_r2t = 1; // §13.19
        }
        let own = self.own_mrdsl.unwrap_or(d.initiator_mrdsl);
        let peer = self.peer_mrdsl.unwrap_or(d.target_mrdsl);
        let (initiator_mrdsl, target_mrdsl) = match self.role {
            Role::Initiator => (own, peer),
            Role::Target => (peer, own),
        };
        SessionParams {
            session_type: self.session_type,
            header_digest: digest("HeaderDigest"),
            data_digest: digest("DataDigest"),
            max_connections: u16_of(num("MaxConnections", d.max_connections.into())),
            initial_r2t: flag("InitialR2T", d.initial_r2t),
            immediate_data: flag("ImmediateData", d.immediate_data),
            max_burst_length,
            // §13.14: FirstBurstLength MUST NOT exceed MaxBurstLength.
            first_burst_length: u32_of(num("FirstBurstLength", d.first_burst_length.into()))
                .min(max_burst_length),
            default_time2wait: u16_of(num("DefaultTime2Wait", d.default_time2wait.into())),
            default_time2retain: u16_of(num("DefaultTime2Retain", d.default_time2retain.into())),
            max_outstanding_r2t,
            data_pdu_in_order: flag("DataPDUInOrder", d.data_pdu_in_order),
            data_sequence_in_order,
            error_recovery_level,
            task_reporting: get("TaskReporting").map_or(d.task_reporting, str::to_owned),
            iscsi_protocol_level: u8_of(num("iSCSIProtocolLevel", d.iscsi_protocol_level.into())),
            initiator_mrdsl,
            target_mrdsl,
        }
    }

    // ---- output ----

    /// MaxRecvDataSegmentLength, declared once in the operational stage.
    fn auto_declarations(&self) -> Vec<KeyValue> {
        const MRDSL: &str = "MaxRecvDataSegmentLength";
        let queued = self.queued.iter().any(|q| q.key == MRDSL);
        if self.phase != Phase::Operational || self.sent.contains_key(MRDSL) || queued {
            return Vec::new();
        }
        let v = clamp_to(LEN, self.limits.max_recv_data_segment_length.into());
        vec![KeyValue::new(MRDSL, v.to_string())]
    }

    /// The value this side offers unprompted for `def` now, if any.
    fn auto_offer(&self, def: &'static KeyDef) -> Option<String> {
        let Negotiated(rf) = def.kind else {
            return None;
        };
        if self.sent.contains_key(def.name)
            || self.seen.contains(def.name)
            || self.results.contains_key(def.name)
        {
            return None;
        }
        match self.phase {
            Phase::FullFeature => return None,
            Phase::Security => {
                let offer = self.role == Role::Initiator && def.name == "AuthMethod";
                return if offer {
                    self.own_offer_value(def)
                } else {
                    None
                };
            }
            Phase::Operational => {}
        }
        if def.usage == Usage::Security
            || (def.usage == Usage::LeadingOnly && !self.leading)
            || (def.irrelevant_in_discovery && self.session_type == SessionType::Discovery)
        {
            return None;
        }
        if def.name == "FirstBurstLength" {
            let irrelevant = match self.role {
                // Our own preferences already force the §13.14 condition.
                Role::Initiator => self.limits.initial_r2t && !self.limits.immediate_data,
                Role::Target => self.fbl_irrelevant(),
            };
            if irrelevant {
                return None;
            }
        }
        let wanted = match self.role {
            Role::Initiator => {
                // Keys RFC 3720 peers do not know: offered only when we want
                // something other than the default.
                !matches!(def.name, "TaskReporting" | "iSCSIProtocolLevel")
                    || self.differs_from_default(def)
            }
            Role::Target => self.needs_offer(def, rf),
        };
        if wanted {
            self.own_offer_value(def)
        } else {
            None
        }
    }

    /// Whether the RFC default of a negotiated key is unacceptable to this side.
    fn needs_offer(&self, def: &KeyDef, rf: ResultFn) -> bool {
        let (Some(default), Some(own)) = (def.default, self.limits.own(def.name)) else {
            return false;
        };
        match (rf, own) {
            (ResultFn::Min, Own::Num(o)) => {
                text::decode_numerical(default).is_some_and(|d| clamp_to(def.value, o) < d)
            }
            (ResultFn::Max, Own::Num(o)) => {
                text::decode_numerical(default).is_some_and(|d| clamp_to(def.value, o) > d)
            }
            (ResultFn::Or, Own::Bool(o)) => o && default == "No",
            (ResultFn::And, Own::Bool(o)) => !o && default == "Yes",
            (ResultFn::List, Own::List(l)) => !l.iter().any(|v| v == default),
            _ => false,
        }
    }

    /// Whether this side's own value for `def` is not the RFC default.
    fn differs_from_default(&self, def: &KeyDef) -> bool {
        self.own_offer_value(def)
            .is_some_and(|v| Some(v.as_str()) != def.default)
    }

    /// This side's own value for `def`, as offered.
    fn own_offer_value(&self, def: &KeyDef) -> Option<String> {
        match self.limits.own(def.name)? {
            Own::Num(mut n) => {
                if def.name == "FirstBurstLength" {
                    n = n.min(self.limits.max_burst_length.into());
                }
                Some(clamp_to(def.value, n).to_string())
            }
            Own::Bool(b) => Some(yes_no(b).to_owned()),
            Own::List(l) if l.is_empty() => None,
            Own::List(l) => Some(l.join(",")),
        }
    }

    /// Moves queued pairs into `out`, replacing same-key entries.
    fn flush_queue(&mut self, out: &mut Vec<KeyValue>) {
        for q in std::mem::take(&mut self.queued) {
            match out.iter_mut().find(|kv| kv.key == q.key) {
                Some(kv) => kv.value = q.value,
                None => out.push(q),
            }
        }
    }

    /// Records a pair this side sends unprompted.
    fn note_sent(&mut self, kv: &KeyValue) {
        let def = key_def(&kv.key);
        let offer = !matches!(def.map(|d| d.kind), Some(Declarative | Delegated));
        let mut pending = offer;
        if let Some(def) = def {
            match (def.kind, kv.value.as_str()) {
                // §6.2.2: no answer is needed; the offer decides the outcome.
                (Negotiated(ResultFn::Or), "Yes") | (Negotiated(ResultFn::And), "No") => {
                    self.results.insert(def.name, kv.value.clone());
                    pending = false;
                }
                (Declarative, v) if def.name == "MaxRecvDataSegmentLength" => {
                    if let Some(n) = segment_length(v) {
                        self.own_mrdsl = Some(n);
                    }
                }
                (Declarative, v) if def.name == "SessionType" => {
                    if let Some(t) = SessionType::from_token(v) {
                        self.session_type = t;
                    }
                }
                _ => {}
            }
        }
        self.sent.insert(
            kv.key.clone(),
            Sent {
                value: kv.value.clone(),
                offer,
                pending,
                answer: None,
            },
        );
    }

    // ---- input ----

    /// Checks and records the peer's answer to something this side sent.
    fn settle(
        &mut self,
        kv: &KeyValue,
        def: Option<&'static KeyDef>,
    ) -> Result<(), NegotiationError> {
        let Some(sent) = self.sent.get_mut(&kv.key) else {
            return Ok(());
        };
        sent.pending = false;
        sent.answer = Some(kv.value.clone());
        let offered = sent.value.clone();
        match kv.value.as_str() {
            NOT_UNDERSTOOD if may_be_not_understood(&kv.key, def) => Ok(()),
            NOT_UNDERSTOOD => Err(NegotiationError::StandardKeyNotUnderstood {
                key: kv.key.clone(),
            }),
            // §6.2: the key keeps its current value (default if never set).
            IRRELEVANT | REJECT => {
                if let Some(def) = def {
                    if def.name == "MaxRecvDataSegmentLength" {
                        self.own_mrdsl = None;
                    }
                    // Drop an outcome recorded when the offer went out.
                    if self.results.get(def.name) == Some(&offered) {
                        self.results.remove(def.name);
                    }
                }
                Ok(())
            }
            answered => {
                let Some(def) = def else { return Ok(()) };
                let Negotiated(rf) = def.kind else {
                    return Ok(());
                };
                let canonical = match check_answer(def, rf, &offered, answered) {
                    Ok(c) => c,
                    Err(reason) => {
                        let clamp = if self.lenient {
                            clamp_answer(def, rf, &offered, answered)
                        } else {
                            None
                        };
                        let Some(used) = clamp else {
                            return Err(NegotiationError::InadmissibleAnswer {
                                key: kv.key.clone(),
                                offered,
                                answered: answered.to_owned(),
                                reason,
                            });
                        };
                        self.clamped.push(ClampedAnswer {
                            key: kv.key.clone(),
                            offered,
                            answered: answered.to_owned(),
                            used: used.clone(),
                            reason,
                        });
                        used
                    }
                };
                self.results.insert(def.name, canonical);
                Ok(())
            }
        }
    }

    /// Decides how to answer a key the peer sent unprompted.
    fn plan_offer(
        &mut self,
        kv: &KeyValue,
        def: Option<&'static KeyDef>,
        reply: &mut Reply,
    ) -> Result<Plan, NegotiationError> {
        if is_reserved_answer(&kv.value) {
            return Err(NegotiationError::ReservedValueOffered {
                key: kv.key.clone(),
                value: kv.value.clone(),
            });
        }
        let answered = |reply: &mut Reply, answer: &str| {
            reply.outcomes.push(Outcome {
                key: kv.key.clone(),
                value: kv.value.clone(),
                disposition: Disposition::Answered {
                    answer: answer.to_owned(),
                },
            });
            Ok(Plan::Answer(answer.to_owned()))
        };
        let Some(def) = def else {
            return answered(reply, NOT_UNDERSTOOD);
        };
        if !def.senders.allows(self.role.peer())
            || !def.usage.allowed_in(self.phase)
            || def.kind == Obsolete
        {
            return answered(reply, REJECT);
        }
        match def.kind {
            Delegated => {
                reply.delegated.push(kv.clone());
                reply.outcomes.push(Outcome {
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                    disposition: Disposition::Delegated,
                });
                Ok(Plan::Silent)
            }
            Declarative => {
                if !valid_declaration(def, &kv.value) {
                    return answered(reply, REJECT);
                }
                match def.name {
                    "MaxRecvDataSegmentLength" => self.peer_mrdsl = segment_length(&kv.value),
                    "SessionType" => {
                        if let Some(t) = SessionType::from_token(&kv.value) {
                            self.session_type = t;
                        }
                    }
                    _ => {}
                }
                self.peer_declared.insert(kv.key.clone(), kv.value.clone());
                reply.outcomes.push(Outcome {
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                    disposition: Disposition::Declared,
                });
                Ok(Plan::Silent)
            }
            Negotiated(_) => {
                if (def.usage == Usage::LeadingOnly && !self.leading)
                    || (def.irrelevant_in_discovery && self.session_type == SessionType::Discovery)
                {
                    return answered(reply, IRRELEVANT);
                }
                reply.outcomes.push(Outcome {
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                    disposition: Disposition::Answered {
                        answer: String::new(),
                    },
                });
                if matches!(def.name, "FirstBurstLength" | "MaxOutstandingR2T") {
                    return Ok(Plan::Deferred(def));
                }
                Ok(Plan::Answer(self.negotiate(def, &kv.value, None)))
            }
            Obsolete => answered(reply, REJECT),
        }
    }

    /// Answers keys bound by integrity rules, once the rest of the batch is in.
    fn negotiate_deferred(&mut self, def: &'static KeyDef, offered: &str) -> String {
        match def.name {
            "FirstBurstLength" if self.fbl_irrelevant() => IRRELEVANT.to_owned(),
            // §13.14: FirstBurstLength MUST NOT exceed MaxBurstLength.
            "FirstBurstLength" => {
                let cap = self.effective_num("MaxBurstLength");
                self.negotiate(def, offered, Some(cap))
            }
            // §13.19: ERL > 0 with DataSequenceInOrder=Yes needs MaxOutstandingR2T = 1.
            "MaxOutstandingR2T" => {
                let cap = (self.effective_num("ErrorRecoveryLevel") > 0
                    && self.effective_flag("DataSequenceInOrder"))
                .then_some(1);
                self.negotiate(def, offered, cap)
            }
            _ => self.negotiate(def, offered, None),
        }
    }

    /// Selects the answer to an offer by the key's result function and records
    /// the outcome; `Reject` for an inadmissible offer (§6.2.1, §6.2.2).
    fn negotiate(&mut self, def: &'static KeyDef, offered: &str, cap: Option<u64>) -> String {
        let Negotiated(rf) = def.kind else {
            return REJECT.to_owned();
        };
        let own = self.limits.own(def.name);
        let result = match (def.value, own) {
            (ValueType::Numeric { min, max }, Some(Own::Num(o))) => text::decode_numerical(offered)
                .filter(|n| (min..=max).contains(n))
                .map(|n| {
                    let o = clamp_to(def.value, o);
                    let r = match rf {
                        ResultFn::Max => n.max(o),
                        _ => n.min(o),
                    };
                    cap.map_or(r, |c| r.min(c)).to_string()
                }),
            (ValueType::Boolean, Some(Own::Bool(o))) => parse_bool(offered).map(|b| {
                let r = match rf {
                    ResultFn::And => b && o,
                    _ => b || o,
                };
                yes_no(r).to_owned()
            }),
            (ValueType::List, Some(Own::List(accepted))) => {
                let items: Vec<&str> = offered.split(',').collect();
                if items.iter().any(|i| i.is_empty()) {
                    None
                } else {
                    // §6.2.1: the first offered value the responder accepts;
                    // values it does not know are skipped.
                    items
                        .into_iter()
                        .find(|i| accepted.iter().any(|a| a == i))
                        .map(str::to_owned)
                }
            }
            _ => None,
        };
        match result {
            Some(r) => {
                self.results.insert(def.name, r.clone());
                r
            }
            None => REJECT.to_owned(),
        }
    }

    fn effective(&self, name: &str) -> Option<&str> {
        self.results
            .get(name)
            .map(String::as_str)
            .or_else(|| key_def(name).and_then(|d| d.default))
    }

    fn effective_num(&self, name: &str) -> u64 {
        self.effective(name)
            .and_then(text::decode_numerical)
            .unwrap_or(0)
    }

    fn effective_flag(&self, name: &str) -> bool {
        self.effective(name) == Some("Yes")
    }

    /// §13.14: FirstBurstLength is irrelevant when InitialR2T=Yes and ImmediateData=No.
    fn fbl_irrelevant(&self) -> bool {
        self.effective_flag("InitialR2T") && !self.effective_flag("ImmediateData")
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn clamp_to(value: ValueType, n: u64) -> u64 {
    match value {
        ValueType::Numeric { min, max } => n.clamp(min, max),
        _ => n,
    }
}

fn segment_length(v: &str) -> Option<u32> {
    text::decode_numerical(v)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| SEGMENT_LENGTH_RANGE.contains(n))
}

/// The canonical wire form of `value` for a negotiated key, if valid.
fn canonical(def: &KeyDef, value: &str) -> Option<String> {
    match def.value {
        ValueType::Numeric { min, max } => text::decode_numerical(value)
            .filter(|n| (min..=max).contains(n))
            .map(|n| n.to_string()),
        ValueType::Boolean => parse_bool(value).map(|b| yes_no(b).to_owned()),
        ValueType::List if !value.is_empty() && !value.contains(',') => Some(value.to_owned()),
        _ => None,
    }
}

/// Checks the peer's answer against our offer; the canonical result, or the
/// rule broken.
fn check_answer(
    def: &KeyDef,
    rf: ResultFn,
    offered: &str,
    answered: &str,
) -> Result<String, &'static str> {
    match def.value {
        ValueType::Numeric { min, max } => {
            let a = text::decode_numerical(answered).ok_or("not a numerical value")?;
            if !(min..=max).contains(&a) {
                return Err("outside the key's range");
            }
            match (rf, text::decode_numerical(offered)) {
                (ResultFn::Min, Some(o)) if a > o => {
                    Err("above the offer, but the result function is Min")
                }
                (ResultFn::Max, Some(o)) if a < o => {
                    Err("below the offer, but the result function is Max")
                }
                _ => Ok(a.to_string()),
            }
        }
        ValueType::Boolean => {
            let a = parse_bool(answered).ok_or("neither Yes nor No")?;
            match (rf, parse_bool(offered)) {
                (ResultFn::Or, Some(true)) if !a => {
                    Err("No to an offer of Yes, but the result function is OR")
                }
                (ResultFn::And, Some(false)) if a => {
                    Err("Yes to an offer of No, but the result function is AND")
                }
                _ => Ok(yes_no(a).to_owned()),
            }
        }
        ValueType::List => {
            if answered.contains(',') {
                return Err("a list where one selected value is expected");
            }
            if !offered.split(',').any(|o| o == answered) {
                return Err("not one of the offered values");
            }
            Ok(answered.to_owned())
        }
        _ => Ok(answered.to_owned()),
    }
}

/// The legal value for an answer [`check_answer`] refused, when there is an
/// obvious one: a number forced into the key's range and then onto the
/// offer's side of the result function; for a boolean that breaks OR/AND,
/// the offer. `None` for malformed values and lists.
fn clamp_answer(def: &KeyDef, rf: ResultFn, offered: &str, answered: &str) -> Option<String> {
    match def.value {
        ValueType::Numeric { min, max } => {
            let a = text::decode_numerical(answered)?.clamp(min, max);
            let a = match (rf, text::decode_numerical(offered)) {
                (ResultFn::Min, Some(o)) => a.min(o),
                (ResultFn::Max, Some(o)) => a.max(o),
                _ => a,
            };
            Some(a.to_string())
        }
        ValueType::Boolean => {
            parse_bool(answered)?;
            let o = parse_bool(offered)?;
            Some(yes_no(o).to_owned())
        }
        _ => None,
    }
}

/// Whether a declared value is syntactically admissible.
fn valid_declaration(def: &KeyDef, value: &str) -> bool {
    match def.value {
        ValueType::Numeric { min, max } => {
            text::decode_numerical(value).is_some_and(|n| (min..=max).contains(&n))
        }
        ValueType::Binary16 => text::decode_regular_binary(value).is_some_and(|n| n <= 0xffff),
        // §4.2.7.1: iSCSI names are at most 223 bytes.
        ValueType::IscsiName => !value.is_empty() && value.len() <= 223,
        ValueType::Enum(tokens) => tokens.contains(&value),
        ValueType::Boolean => parse_bool(value).is_some(),
        ValueType::List => !value.is_empty() && value.split(',').all(|e| !e.is_empty()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, v)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<KeyValue> {
        list.iter().map(|(k, v)| kv(k, v)).collect()
    }

    fn target(limits: Limits) -> Negotiator {
        let mut t = Negotiator::new(Role::Target, limits);
        t.set_phase(Phase::Operational);
        t
    }

    /// The target's answer to a single offer.
    fn answer(t: &mut Negotiator, key: &str, value: &str) -> String {
        let reply = t.receive(&[kv(key, value)]).unwrap();
        reply
            .answers
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.value.clone())
            .unwrap_or_else(|| panic!("no answer for {key} in {:?}", reply.answers))
    }

    #[test]
    fn key_table_is_consistent() {
        let mut names = BTreeSet::new();
        for def in KEYS {
            assert!(names.insert(def.name), "{} listed twice", def.name);
            assert!(def.section.starts_with("RFC 7143 §1"), "{}", def.name);
            if let Some(d) = def.default {
                assert!(
                    valid_declaration(def, d) || def.value == ValueType::List,
                    "{} default {d}",
                    def.name
                );
            }
            if let Negotiated(rf) = def.kind {
                assert!(def.default.is_some(), "{} needs a default", def.name);
                let numeric = matches!(def.value, ValueType::Numeric { .. });
                match rf {
                    ResultFn::Min | ResultFn::Max => assert!(numeric, "{}", def.name),
                    ResultFn::Or | ResultFn::And => {
                        assert_eq!(def.value, ValueType::Boolean, "{}", def.name)
                    }
                    ResultFn::List => assert_eq!(def.value, ValueType::List, "{}", def.name),
                }
                assert!(
                    Limits::default().own(def.name).is_some(),
                    "{} has no limit",
                    def.name
                );
            }
        }
        for name in [
            "HeaderDigest",
            "DataDigest",
            "MaxConnections",
            "SendTargets",
            "TargetName",
            "InitiatorName",
            "TargetAlias",
            "InitiatorAlias",
            "TargetAddress",
            "TargetPortalGroupTag",
            "InitialR2T",
            "ImmediateData",
            "MaxRecvDataSegmentLength",
            "MaxBurstLength",
            "FirstBurstLength",
            "DefaultTime2Wait",
            "DefaultTime2Retain",
            "MaxOutstandingR2T",
            "DataPDUInOrder",
            "DataSequenceInOrder",
            "ErrorRecoveryLevel",
            "SessionType",
            "AuthMethod",
            "TaskReporting",
            "iSCSIProtocolLevel",
            "CHAP_A",
            "CHAP_I",
            "CHAP_C",
            "CHAP_N",
            "CHAP_R",
            "OFMarker",
            "IFMarker",
            "OFMarkInt",
            "IFMarkInt",
        ] {
            assert!(key_def(name).is_some(), "{name} missing");
        }
        assert!(
            key_def("maxburstlength").is_none(),
            "keys are case-sensitive"
        );
    }

    #[test]
    fn defaults_match_the_rfc() {
        let p = Negotiator::new(Role::Initiator, Limits::default()).params();
        assert_eq!(p, SessionParams::default());
        for def in KEYS {
            let Negotiated(_) = def.kind else { continue };
            let Some(default) = def.default else { continue };
            let field = match def.name {
                "HeaderDigest" => p.header_digest.token().to_owned(),
                "DataDigest" => p.data_digest.token().to_owned(),
                "MaxConnections" => p.max_connections.to_string(),
                "InitialR2T" => yes_no(p.initial_r2t).to_owned(),
                "ImmediateData" => yes_no(p.immediate_data).to_owned(),
                "MaxBurstLength" => p.max_burst_length.to_string(),
                "FirstBurstLength" => p.first_burst_length.to_string(),
                "DefaultTime2Wait" => p.default_time2wait.to_string(),
                "DefaultTime2Retain" => p.default_time2retain.to_string(),
                "MaxOutstandingR2T" => p.max_outstanding_r2t.to_string(),
                "DataPDUInOrder" => yes_no(p.data_pdu_in_order).to_owned(),
                "DataSequenceInOrder" => yes_no(p.data_sequence_in_order).to_owned(),
                "ErrorRecoveryLevel" => p.error_recovery_level.to_string(),
                "TaskReporting" => p.task_reporting.clone(),
                "iSCSIProtocolLevel" => p.iscsi_protocol_level.to_string(),
                "AuthMethod" => continue,
                other => panic!("no field for {other}"),
            };
            assert_eq!(field, default, "{}", def.name);
        }
        assert_eq!(p.initiator_mrdsl, 8192);
        assert_eq!(p.target_mrdsl, 8192);
    }

    #[test]
    fn min_result_function() {
        let limits = Limits {
            max_burst_length: 65536,
            max_connections: 4,
            default_time2retain: 10,
            error_recovery_level: 1,
            ..Limits::default()
        };
        let mut t = target(limits);
        assert_eq!(answer(&mut t, "MaxBurstLength", "262144"), "65536");
        assert_eq!(answer(&mut t, "MaxConnections", "2"), "2");
        assert_eq!(answer(&mut t, "DefaultTime2Retain", "0x3c"), "10");
        assert_eq!(answer(&mut t, "ErrorRecoveryLevel", "2"), "1");
        let p = t.params();
        assert_eq!(
            (
                p.max_burst_length,
                p.max_connections,
                p.default_time2retain,
                p.error_recovery_level
            ),
            (65536, 2, 10, 1)
        );
    }

    #[test]
    fn max_result_function() {
        let mut t = target(Limits {
            default_time2wait: 5,
            ..Limits::default()
        });
        assert_eq!(answer(&mut t, "DefaultTime2Wait", "2"), "5");
        let mut t = target(Limits {
            default_time2wait: 5,
            ..Limits::default()
        });
        assert_eq!(answer(&mut t, "DefaultTime2Wait", "3600"), "3600");
        assert_eq!(t.params().default_time2wait, 3600);
    }

    #[test]
    fn or_and_result_functions() {
        for (offer, own, or, and) in [
            (true, true, "Yes", "Yes"),
            (true, false, "Yes", "No"),
            (false, true, "Yes", "No"),
            (false, false, "No", "No"),
        ] {
            let limits = Limits {
                initial_r2t: own,
                immediate_data: own,
                data_pdu_in_order: own,
                ..Limits::default()
            };
            let mut t = target(limits);
            assert_eq!(
                answer(&mut t, "InitialR2T", yes_no(offer)),
                or,
                "OR {offer} {own}"
            );
            assert_eq!(
                answer(&mut t, "ImmediateData", yes_no(offer)),
                and,
                "AND {offer} {own}"
            );
            assert_eq!(answer(&mut t, "DataPDUInOrder", yes_no(offer)), or);
            assert_eq!(t.params().initial_r2t, or == "Yes");
            assert_eq!(t.params().immediate_data, and == "Yes");
        }
    }

    #[test]
    fn list_result_function_follows_the_originator_order() {
        let limits = Limits {
            header_digest: vec![Digest::None, Digest::Crc32c],
            data_digest: vec![Digest::None],
            ..Limits::default()
        };
        let mut t = target(limits);
        assert_eq!(
            answer(&mut t, "HeaderDigest", "Y-com.example.foo,CRC32C,None"),
            "CRC32C"
        );
        assert_eq!(answer(&mut t, "DataDigest", "CRC32C"), REJECT);
        assert_eq!(t.params().header_digest, Digest::Crc32c);
        assert_eq!(t.params().data_digest, Digest::None);
        // None is only selected when offered.
        let mut t = target(Limits::default());
        assert_eq!(answer(&mut t, "HeaderDigest", "CRC32C"), REJECT);
        // An empty list element is a syntax error.
        let mut t = target(Limits::default());
        assert_eq!(answer(&mut t, "HeaderDigest", "CRC32C,,None"), REJECT);
    }

    #[test]
    fn out_of_range_and_malformed_values_are_rejected() {
        let mut t = target(Limits::default());
        for (k, v) in [
            ("MaxBurstLength", "511"),
            ("FirstBurstLength", "16777216"),
            ("MaxConnections", "0"),
            ("DefaultTime2Wait", "3601"),
            ("ErrorRecoveryLevel", "3"),
            ("MaxOutstandingR2T", "08"),
            ("InitialR2T", "yes"),
            ("iSCSIProtocolLevel", "-1"),
        ] {
            assert_eq!(answer(&mut t, k, v), REJECT, "{k}={v}");
        }
        // Nothing was recorded: defaults stand.
        assert_eq!(t.params(), SessionParams::default());
    }

    #[test]
    fn mrdsl_out_of_range_is_rejected_and_ignored() {
        let mut t = target(Limits::default());
        let r = t.receive(&[kv("MaxRecvDataSegmentLength", "511")]).unwrap();
        assert_eq!(r.answers[0], kv("MaxRecvDataSegmentLength", REJECT));
        assert_eq!(t.params().initiator_mrdsl, 8192);
        let mut t = target(Limits::default());
        t.receive(&[kv("MaxRecvDataSegmentLength", "0x1000")])
            .unwrap();
        assert_eq!(t.params().initiator_mrdsl, 4096);
        assert_eq!(t.max_send_data_segment_length(), 4096);
        let mut t = target(Limits::default());
        t.receive(&[kv("MaxRecvDataSegmentLength", "16777216")])
            .unwrap();
        assert_eq!(t.params().initiator_mrdsl, 8192);
    }

    #[test]
    fn mrdsl_is_declared_each_way_independently() {
        let mut i = Negotiator::new(
            Role::Initiator,
            Limits {
                max_recv_data_segment_length: 262_144,
                ..Limits::default()
            },
        );
        let mut t = Negotiator::new(
            Role::Target,
            Limits {
                max_recv_data_segment_length: 4096,
                ..Limits::default()
            },
        );
        i.set_phase(Phase::Operational);
        t.set_phase(Phase::Operational);
        let offers = i.offers();
        assert!(offers.contains(&kv("MaxRecvDataSegmentLength", "262144")));
        let reply = t.receive(&offers).unwrap();
        assert!(
            reply
                .answers
                .contains(&kv("MaxRecvDataSegmentLength", "4096")),
            "target declares its own"
        );
        let back = i.receive(&reply.answers).unwrap();
        assert!(
            back.answers.is_empty(),
            "declarations are not answered: {:?}",
            back.answers
        );
        for p in [i.params(), t.params()] {
            assert_eq!((p.initiator_mrdsl, p.target_mrdsl), (262_144, 4096));
        }
        assert_eq!(i.max_send_data_segment_length(), 4096);
        assert_eq!(t.max_send_data_segment_length(), 262_144);
        assert_eq!(t.declared("MaxRecvDataSegmentLength"), Some("262144"));
    }

    #[test]
    fn unknown_keys_are_not_understood() {
        let mut t = target(Limits::default());
        let r = t
            .receive(&pairs(&[
                ("X-com.example.Foo", "1"),
                ("X#Bar", "2"),
                ("Bogus", "3"),
                ("maxburstlength", "512"),
            ]))
            .unwrap();
        let got: Vec<_> = r
            .answers
            .iter()
            .filter(|a| a.key != "MaxRecvDataSegmentLength")
            .cloned()
            .collect();
        assert_eq!(
            got,
            pairs(&[
                ("X-com.example.Foo", NOT_UNDERSTOOD),
                ("X#Bar", NOT_UNDERSTOOD),
                ("Bogus", NOT_UNDERSTOOD),
                ("maxburstlength", NOT_UNDERSTOOD)
            ])
        );
    }

    #[test]
    fn duplicates_are_fatal() {
        let mut t = target(Limits::default());
        let err = t
            .receive(&pairs(&[
                ("MaxBurstLength", "512"),
                ("MaxBurstLength", "1024"),
            ]))
            .unwrap_err();
        assert_eq!(
            err,
            NegotiationError::Duplicate {
                key: "MaxBurstLength".into()
            }
        );
        // Across PDUs of one login too, and across stages.
        let mut t = Negotiator::new(Role::Target, Limits::default());
        t.receive(&[kv("InitiatorName", "iqn.2026-01.test:i")])
            .unwrap();
        t.set_phase(Phase::Operational);
        assert!(matches!(
            t.receive(&[kv("InitiatorName", "iqn.2026-01.test:i")]),
            Err(NegotiationError::Duplicate { .. })
        ));
        // TargetAddress may repeat.
        let mut i = Negotiator::new(Role::Initiator, Limits::default());
        i.set_phase(Phase::FullFeature);
        i.receive(&pairs(&[
            ("TargetAddress", "127.0.0.1:3260,1"),
            ("TargetAddress", "[::1]:3260,1"),
        ]))
        .unwrap();
    }

    #[test]
    fn text_negotiation_in_ffp_starts_afresh() {
        let mut t = Negotiator::new(Role::Target, Limits::default());
        t.set_phase(Phase::Operational);
        t.receive(&[kv("MaxRecvDataSegmentLength", "4096")])
            .unwrap();
        t.set_phase(Phase::FullFeature);
        t.receive(&[kv("MaxRecvDataSegmentLength", "16384")])
            .unwrap();
        assert_eq!(t.params().initiator_mrdsl, 16384);
        assert!(
            t.receive(&[kv("MaxRecvDataSegmentLength", "512")]).is_err(),
            "same sequence"
        );
        t.start_text_negotiation();
        t.receive(&[kv("MaxRecvDataSegmentLength", "512")]).unwrap();
        assert_eq!(t.params().initiator_mrdsl, 512);
    }

    #[test]
    fn reserved_values_cannot_be_offered() {
        for v in [REJECT, IRRELEVANT, NOT_UNDERSTOOD] {
            let mut t = target(Limits::default());
            let err = t.receive(&[kv("MaxBurstLength", v)]).unwrap_err();
            assert_eq!(
                err,
                NegotiationError::ReservedValueOffered {
                    key: "MaxBurstLength".into(),
                    value: v.into()
                }
            );
        }
    }

    #[test]
    fn discovery_session_makes_operational_keys_irrelevant() {
        let mut t = Negotiator::new(Role::Target, Limits::default());
        t.receive(&pairs(&[
            ("InitiatorName", "iqn.2026-01.test:i"),
            ("SessionType", "Discovery"),
        ]))
        .unwrap();
        assert_eq!(t.session_type(), SessionType::Discovery);
        t.set_phase(Phase::Operational);
        let r = t
            .receive(&pairs(&[
                ("MaxBurstLength", "512"),
                ("DataSequenceInOrder", "No"),
                ("MaxConnections", "2"),
                ("TaskReporting", "FastAbort"),
                ("HeaderDigest", "None"),
                ("DefaultTime2Wait", "7"),
                ("ErrorRecoveryLevel", "0"),
            ]))
            .unwrap();
        let get = |k: &str| {
            r.answers
                .iter()
                .find(|a| a.key == k)
                .map(|a| a.value.as_str())
        };
        assert_eq!(get("MaxBurstLength"), Some(IRRELEVANT));
        assert_eq!(get("DataSequenceInOrder"), Some(IRRELEVANT));
        assert_eq!(get("MaxConnections"), Some(IRRELEVANT));
        assert_eq!(get("TaskReporting"), Some(IRRELEVANT));
        assert_eq!(get("HeaderDigest"), Some(NONE));
        assert_eq!(get("DefaultTime2Wait"), Some("7"));
        assert_eq!(get("ErrorRecoveryLevel"), Some("0"));
        let p = t.params();
        assert_eq!(p.session_type, SessionType::Discovery);
        assert_eq!(p.max_burst_length, 262_144);
        assert_eq!(p.default_time2wait, 7);
    }

    #[test]
    fn session_type_anywhere_in_the_batch_counts() {
        let mut t = Negotiator::new(Role::Target, Limits::default());
        let r = t
            .receive(&pairs(&[
                ("MaxBurstLength", "512"),
                ("SessionType", "Discovery"),
            ]))
            .unwrap();
        assert_eq!(r.answers[0], kv("MaxBurstLength", IRRELEVANT));
        let mut t = Negotiator::new(Role::Target, Limits::default());
        let r = t.receive(&[kv("SessionType", "Boot")]).unwrap();
        assert_eq!(r.answers, vec![kv("SessionType", REJECT)]);
        assert_eq!(t.session_type(), SessionType::Normal);
    }

    #[test]
    fn first_burst_length_irrelevant_without_unsolicited_data() {
        let mut t = target(Limits {
            immediate_data: false,
            ..Limits::default()
        });
        // FirstBurstLength first: the answer still sees the batch's outcome.
        let r = t
            .receive(&pairs(&[
                ("FirstBurstLength", "8192"),
                ("InitialR2T", "Yes"),
                ("ImmediateData", "Yes"),
            ]))
            .unwrap();
        assert_eq!(r.answers[0], kv("FirstBurstLength", IRRELEVANT));
        assert_eq!(t.params().first_burst_length, 65_536);
        // Relevant when InitialR2T=No.
        let mut t = target(Limits {
            immediate_data: false,
            initial_r2t: false,
            ..Limits::default()
        });
        let r = t
            .receive(&pairs(&[
                ("FirstBurstLength", "8192"),
                ("InitialR2T", "No"),
            ]))
            .unwrap();
        assert_eq!(r.answers[0], kv("FirstBurstLength", "8192"));
    }

    #[test]
    fn first_burst_length_never_exceeds_max_burst_length() {
        let mut t = target(Limits::default());
        let r = t
            .receive(&pairs(&[
                ("FirstBurstLength", "65536"),
                ("MaxBurstLength", "4096"),
            ]))
            .unwrap();
        assert_eq!(r.answers[0], kv("FirstBurstLength", "4096"));
        assert_eq!(r.answers[1], kv("MaxBurstLength", "4096"));
        // Negotiated in separate batches: params() enforces the rule.
        let mut t = target(Limits::default());
        t.receive(&[kv("FirstBurstLength", "65536")]).unwrap();
        t.receive(&[kv("MaxBurstLength", "1024")]).unwrap();
        assert_eq!(t.result("FirstBurstLength"), Some("65536"));
        assert_eq!(t.params().first_burst_length, 1024);
    }

    #[test]
    fn max_outstanding_r2t_is_one_with_erl_and_sequence_order() {
        let limits = Limits {
            error_recovery_level: 2,
            max_outstanding_r2t: 8,
            ..Limits::default()
        };
        let mut t = target(limits.clone());
        let r = t
            .receive(&pairs(&[
                ("MaxOutstandingR2T", "4"),
                ("ErrorRecoveryLevel", "1"),
            ]))
            .unwrap();
        assert_eq!(r.answers[0], kv("MaxOutstandingR2T", "1"));
        let mut t = target(Limits {
            data_sequence_in_order: false,
            ..limits
        });
        let r = t
            .receive(&pairs(&[
                ("MaxOutstandingR2T", "4"),
                ("ErrorRecoveryLevel", "1"),
                ("DataSequenceInOrder", "No"),
            ]))
            .unwrap();
        assert_eq!(r.answers[0], kv("MaxOutstandingR2T", "4"));
    }

    #[test]
    fn obsolete_marker_keys_are_rejected() {
        let mut t = target(Limits::default());
        let r = t
            .receive(&pairs(&[
                ("OFMarker", "No"),
                ("IFMarker", "Yes"),
                ("OFMarkInt", "2048~65535"),
                ("IFMarkInt", "1"),
            ]))
            .unwrap();
        for a in r
            .answers
            .iter()
            .filter(|a| a.key != "MaxRecvDataSegmentLength")
        {
            assert_eq!(a.value, REJECT, "{}", a.key);
        }
        // Our own proposal of one may be answered Reject, No or NotUnderstood.
        let mut i = Negotiator::new(Role::Initiator, Limits::default());
        i.propose("OFMarker", "No");
        i.offers();
        i.receive(&[kv("OFMarker", NOT_UNDERSTOOD)]).unwrap();
        assert_eq!(i.answer_to("OFMarker"), Some(NOT_UNDERSTOOD));
    }

    #[test]
    fn wrong_sender_and_wrong_phase_are_rejected() {
        let mut i = Negotiator::new(Role::Initiator, Limits::default());
        i.set_phase(Phase::Operational);
        let r = i
            .receive(&pairs(&[
                ("InitiatorName", "iqn.x"),
                ("SessionType", "Normal"),
            ]))
            .unwrap();
        assert!(r.answers.starts_with(&pairs(&[
            ("InitiatorName", REJECT),
            ("SessionType", REJECT)
        ])));
        // Security keys outside the security stage.
        let mut t = target(Limits::default());
        let r = t
            .receive(&pairs(&[("AuthMethod", "None"), ("CHAP_A", "5")]))
            .unwrap();
        assert!(
            r.answers
                .starts_with(&pairs(&[("AuthMethod", REJECT), ("CHAP_A", REJECT)]))
        );
        assert!(r.delegated.is_empty());
        // Login-only keys in Full Feature Phase.
        let mut t = Negotiator::new(Role::Target, Limits::default());
        t.set_phase(Phase::FullFeature);
        let r = t
            .receive(&pairs(&[
                ("MaxBurstLength", "512"),
                ("HeaderDigest", "None"),
                ("InitiatorAlias", "host"),
                ("SendTargets", "All"),
            ]))
            .unwrap();
        assert_eq!(
            r.answers,
            pairs(&[("MaxBurstLength", REJECT), ("HeaderDigest", REJECT)])
        );
        assert_eq!(t.declared("InitiatorAlias"), Some("host"));
        assert_eq!(r.delegated, vec![kv("SendTargets", "All")]);
        // SendTargets during login.
        let mut t = target(Limits::default());
        assert_eq!(answer(&mut t, "SendTargets", "All"), REJECT);
    }

    #[test]
    fn non_leading_connection_answers_lo_keys_irrelevant() {
        let mut t = target(Limits::default());
        t.set_leading(false);
        let r = t
            .receive(&pairs(&[
                ("MaxBurstLength", "512"),
                ("HeaderDigest", "None"),
            ]))
            .unwrap();
        assert!(r.answers.starts_with(&pairs(&[
            ("MaxBurstLength", IRRELEVANT),
            ("HeaderDigest", NONE)
        ])));
    }

    #[test]
    fn security_stage_auth_method_and_chap_delegation() {
        let mut i = Negotiator::new(
            Role::Initiator,
            Limits {
                auth_methods: vec!["CHAP".into(), NONE.into()],
                ..Limits::default()
            },
        );
        let mut t = Negotiator::new(
            Role::Target,
            Limits {
                auth_methods: vec!["CHAP".into()],
                ..Limits::default()
            },
        );
        i.declare("InitiatorName", "iqn.2026-01.test:i");
        i.declare("TargetName", "iqn.2026-01.test:t");
        let offers = i.offers();
        assert_eq!(
            offers,
            pairs(&[
                ("AuthMethod", "CHAP,None"),
                ("InitiatorName", "iqn.2026-01.test:i"),
                ("TargetName", "iqn.2026-01.test:t")
            ])
        );
        t.declare("TargetPortalGroupTag", "1");
        let r = t.receive(&offers).unwrap();
        assert_eq!(
            r.answers,
            pairs(&[("AuthMethod", "CHAP"), ("TargetPortalGroupTag", "1")])
        );
        assert_eq!(t.declared("TargetName"), Some("iqn.2026-01.test:t"));
        assert_eq!(t.auth_method(), Some("CHAP"));
        let r = i.receive(&r.answers).unwrap();
        assert!(r.answers.is_empty());
        assert_eq!(i.auth_method(), Some("CHAP"));
        assert_eq!(i.declared("TargetPortalGroupTag"), Some("1"));
        assert!(i.pending().is_empty());
        // The CHAP exchange is the caller's.
        let r = t.receive(&[kv("CHAP_A", "5")]).unwrap();
        assert_eq!(r.delegated, vec![kv("CHAP_A", "5")]);
        assert!(r.answers.is_empty());
        let r = i
            .receive(&pairs(&[
                ("CHAP_A", "5"),
                ("CHAP_I", "1"),
                ("CHAP_C", "0x0102"),
            ]))
            .unwrap();
        assert_eq!(r.delegated.len(), 3);
        assert!(
            r.outcomes
                .iter()
                .all(|o| o.disposition == Disposition::Delegated)
        );
    }

    #[test]
    fn auth_method_none_refused_by_chap_only_target() {
        let mut t = Negotiator::new(
            Role::Target,
            Limits {
                auth_methods: vec!["CHAP".into()],
                ..Limits::default()
            },
        );
        assert_eq!(answer(&mut t, "AuthMethod", "None"), REJECT);
        assert_eq!(t.auth_method(), None);
    }

    #[test]
    fn originator_checks_answers() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("MaxBurstLength", "65536", "65536", None),
            ("MaxBurstLength", "65536", "1024", None),
            ("MaxBurstLength", "65536", "131072", Some("above the offer")),
            ("MaxBurstLength", "65536", "100", Some("range")),
            ("MaxBurstLength", "65536", "lots", Some("numerical")),
            ("DefaultTime2Wait", "2", "1", Some("below the offer")),
            ("DefaultTime2Wait", "2", "10", None),
            ("InitialR2T", "No", "Yes", None),
            ("InitialR2T", "Yes", "No", Some("OR")),
            ("ImmediateData", "Yes", "No", None),
            ("ImmediateData", "No", "Yes", Some("AND")),
            ("HeaderDigest", "CRC32C,None", "None", None),
            (
                "HeaderDigest",
                "CRC32C",
                "None",
                Some("not one of the offered"),
            ),
            ("HeaderDigest", "CRC32C,None", "CRC32C,None", Some("list")),
            ("DataDigest", "CRC32C", REJECT, None),
            ("MaxConnections", "4", IRRELEVANT, None),
        ];
        for &(key, offered, answered, err) in cases {
            let mut i = Negotiator::new(Role::Initiator, Limits::default());
            i.set_phase(Phase::Operational);
            i.propose(key, offered);
            i.offers();
            let got = i.receive(&[kv(key, answered)]);
            match (err, got) {
                (None, Ok(_)) => {
                    assert_eq!(i.answer_to(key), Some(answered));
                    assert!(!i.pending().contains(&key));
                }
                (Some(reason), Err(NegotiationError::InadmissibleAnswer { reason: r, .. })) => {
                    assert!(r.contains(reason), "{key}={answered}: {r}");
                }
                (e, g) => panic!("{key} {offered} -> {answered}: expected {e:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn lenient_originator_clamps_inadmissible_answers() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            // iESP's answer whatever is offered.
            ("FirstBurstLength", "262144", "268435456", Some("262144")),
            ("MaxBurstLength", "65536", "131072", Some("65536")),
            // Outside the range (512..=16777215) and above the offer.
            ("MaxBurstLength", "65536", "100", Some("512")),
            ("DefaultTime2Wait", "2", "1", Some("2")),
            ("InitialR2T", "Yes", "No", Some("Yes")),
            ("ImmediateData", "No", "Yes", Some("No")),
            // No obvious legal value: still errors.
            ("MaxBurstLength", "65536", "lots", None),
            ("HeaderDigest", "CRC32C", "None", None),
            ("ImmediateData", "No", "Maybe", None),
        ];
        for &(key, offered, answered, used) in cases {
            let mut i = Negotiator::new(Role::Initiator, Limits::default());
            i.set_lenient(true);
            i.set_phase(Phase::Operational);
            i.propose(key, offered);
            i.offers();
            let got = i.receive(&[kv(key, answered)]);
            match (used, got) {
                (Some(used), Ok(_)) => {
                    assert_eq!(i.result(key), Some(used), "{key}={answered}");
                    let c = &i.clamped()[0];
                    assert_eq!(
                        (c.key.as_str(), c.offered.as_str(), c.answered.as_str()),
                        (key, offered, answered)
                    );
                    assert_eq!(c.used, used);
                    assert!(c.to_string().contains(key), "{c}");
                }
                (None, Err(NegotiationError::InadmissibleAnswer { .. })) => {
                    assert!(i.clamped().is_empty());
                }
                (u, g) => panic!("{key} {offered} -> {answered}: expected {u:?}, got {g:?}"),
            }
        }
        // The integrity rule still holds on clamped values.
        let mut i = Negotiator::new(Role::Initiator, Limits::default());
        i.set_lenient(true);
        i.set_phase(Phase::Operational);
        i.propose("MaxBurstLength", "65536");
        i.propose("FirstBurstLength", "65536");
        i.offers();
        i.receive(&[
            kv("MaxBurstLength", "268435456"),
            kv("FirstBurstLength", "268435456"),
        ])
        .unwrap();
        let p = i.params();
        assert_eq!((p.max_burst_length, p.first_burst_length), (65536, 65536));
        assert_eq!(i.clamped().len(), 2);
    }

    #[test]
    fn strict_originator_names_the_key() {
        let mut i = Negotiator::new(Role::Initiator, Limits::default());
        i.set_phase(Phase::Operational);
        i.propose("FirstBurstLength", "262144");
        i.offers();
        let e = i
            .receive(&[kv("FirstBurstLength", "268435456")])
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("FirstBurstLength") && msg.contains("268435456"),
            "{msg}"
        );
        assert!(i.clamped().is_empty());
    }

    #[test]
    fn standard_key_not_understood_is_an_error() {
        let mut i = Negotiator::new(Role::Initiator, Limits::default());
        i.set_phase(Phase::Operational);
        i.propose("MaxBurstLength", "4096");
        i.propose("iSCSIProtocolLevel", "2");
        i.propose("X-com.example.Knob", "on");
        i.offers();
        i.receive(&pairs(&[
            ("iSCSIProtocolLevel", NOT_UNDERSTOOD),
            ("X-com.example.Knob", NOT_UNDERSTOOD),
        ]))
        .unwrap();
        assert_eq!(i.params().iscsi_protocol_level, 1);
        let err = i
            .receive(&[kv("MaxBurstLength", NOT_UNDERSTOOD)])
            .unwrap_err();
        assert_eq!(
            err,
            NegotiationError::StandardKeyNotUnderstood {
                key: "MaxBurstLength".into()
            }
        );
    }

    #[test]
    fn reject_leaves_the_key_at_its_current_value() {
        let mut i = Negotiator::new(
            Role::Initiator,
            Limits {
                immediate_data: false,
                ..Limits::default()
            },
        );
        i.set_phase(Phase::Operational);
        let offers = i.offers();
        assert!(offers.contains(&kv("ImmediateData", "No")));
        // AND with No needs no answer: the outcome is known at once.
        assert!(!i.pending().contains(&"ImmediateData"));
        assert!(!i.params().immediate_data);
        // A peer that rejects it anyway leaves the default in force.
        i.receive(&[kv("ImmediateData", REJECT)]).unwrap();
        assert!(i.params().immediate_data);
        // Rejecting our MRDSL declaration reverts to the default.
        i.receive(&[kv("MaxRecvDataSegmentLength", REJECT)])
            .unwrap();
        assert_eq!(i.params().initiator_mrdsl, 8192);
    }

    #[test]
    fn propose_overrides_offers_and_answers() {
        let mut i = Negotiator::new(Role::Initiator, Limits::default());
        i.set_phase(Phase::Operational);
        i.propose("MaxBurstLength", "0x200");
        i.propose("X-com.example.Thing", "1");
        let offers = i.offers();
        assert!(offers.contains(&kv("MaxBurstLength", "0x200")));
        assert_eq!(offers.last(), Some(&kv("X-com.example.Thing", "1")));
        assert!(i.pending().contains(&"X-com.example.Thing"));
        // On the target, a proposal for a key being answered replaces the answer.
        let mut t = target(Limits::default());
        t.propose("MaxBurstLength", "999999999");
        let r = t.receive(&[kv("MaxBurstLength", "4096")]).unwrap();
        assert_eq!(r.answers[0], kv("MaxBurstLength", "999999999"));
        assert_eq!(
            r.outcomes[0].disposition,
            Disposition::Answered {
                answer: "999999999".into()
            }
        );
        // Not a valid MaxBurstLength: the default stays in force.
        assert_eq!(t.params().max_burst_length, 262_144);
        let mut t2 = target(Limits::default());
        t2.propose("MaxBurstLength", "1024");
        t2.receive(&[kv("MaxBurstLength", "4096")]).unwrap();
        assert_eq!(t2.params().max_burst_length, 1024);
        // The initiator sees an inadmissible answer.
        let mut i = Negotiator::new(Role::Initiator, Limits::default());
        i.set_phase(Phase::Operational);
        i.propose("MaxBurstLength", "4096");
        i.offers();
        assert!(matches!(
            i.receive(&r.answers),
            Err(NegotiationError::InadmissibleAnswer { .. })
        ));
    }

    #[test]
    fn target_offers_keys_whose_default_it_cannot_accept() {
        let limits = Limits {
            immediate_data: false,
            max_burst_length: 16384,
            header_digest: vec![Digest::Crc32c],
            default_time2wait: 10,
            ..Limits::default()
        };
        let mut t = target(limits);
        // An initiator that offered only MaxBurstLength.
        t.receive(&pairs(&[("MaxBurstLength", "8192")])).unwrap();
        let offers = t.offers();
        assert_eq!(
            offers,
            pairs(&[
                ("HeaderDigest", "CRC32C"),
                ("ImmediateData", "No"),
                ("DefaultTime2Wait", "10")
            ])
        );
        assert_eq!(t.pending(), vec!["DefaultTime2Wait", "HeaderDigest"]);
        let mut i = Negotiator::new(
            Role::Initiator,
            Limits {
                header_digest: vec![Digest::Crc32c, Digest::None],
                ..Limits::default()
            },
        );
        i.set_phase(Phase::Operational);
        let r = i.receive(&offers).unwrap();
        assert_eq!(
            r.answers[..3],
            pairs(&[
                ("HeaderDigest", "CRC32C"),
                ("ImmediateData", "No"),
                ("DefaultTime2Wait", "10")
            ])
        );
        t.receive(&r.answers).unwrap();
        assert!(t.pending().is_empty());
        assert_eq!(t.params().header_digest, Digest::Crc32c);
        assert_eq!(i.params().header_digest, Digest::Crc32c);
        assert!(!i.params().immediate_data && !t.params().immediate_data);
        assert_eq!(i.params().default_time2wait, 10);
    }

    #[test]
    fn outcomes_account_for_every_key() {
        let mut t = Negotiator::new(Role::Target, Limits::default());
        let r = t
            .receive(&pairs(&[
                ("InitiatorName", "iqn.x"),
                ("AuthMethod", "None"),
                ("X-y", "1"),
                ("CHAP_N", "u"),
            ]))
            .unwrap();
        let d: Vec<_> = r
            .outcomes
            .iter()
            .map(|o| (o.key.as_str(), o.disposition.clone()))
            .collect();
        assert_eq!(
            d,
            vec![
                ("InitiatorName", Disposition::Declared),
                (
                    "AuthMethod",
                    Disposition::Answered {
                        answer: NONE.into()
                    }
                ),
                (
                    "X-y",
                    Disposition::Answered {
                        answer: NOT_UNDERSTOOD.into()
                    }
                ),
                ("CHAP_N", Disposition::Delegated),
            ]
        );
    }

    #[test]
    fn invalid_declarations_are_rejected() {
        let mut t = Negotiator::new(Role::Target, Limits::default());
        let long = "i".repeat(224);
        let r = t
            .receive(&pairs(&[("InitiatorName", &long), ("TargetName", "")]))
            .unwrap();
        assert_eq!(
            r.answers,
            pairs(&[("InitiatorName", REJECT), ("TargetName", REJECT)])
        );
        assert_eq!(t.declared("InitiatorName"), None);
        let mut i = Negotiator::new(Role::Initiator, Limits::default());
        let r = i
            .receive(&pairs(&[
                ("TargetPortalGroupTag", "65536"),
                ("TargetAlias", "disk"),
            ]))
            .unwrap();
        assert_eq!(r.answers, pairs(&[("TargetPortalGroupTag", REJECT)]));
        assert_eq!(i.declared("TargetAlias"), Some("disk"));
    }

    // ---- two engines talking through the text codec ----

    /// Encodes, splits into segments of `mrdsl`, reassembles and decodes, as
    /// the wire would.
    fn wire(pairs: &[KeyValue], mrdsl: usize) -> Vec<KeyValue> {
        let bytes = text::encode_to_vec(pairs);
        let mut acc = text::TextAccumulator::new();
        let segs = text::split_for_segments(&bytes, mrdsl);
        let mut whole = None;
        for (n, seg) in segs.iter().enumerate() {
            whole = acc.push(seg, n + 1 < segs.len()).unwrap();
        }
        text::decode(&whole.unwrap()).unwrap()
    }

    /// A full login between two engines: security stage, then operational
    /// stage until neither side has anything pending.
    fn login(il: Limits, tl: Limits, session: SessionType) -> (Negotiator, Negotiator) {
        let mut i = Negotiator::new(Role::Initiator, il);
        let mut t = Negotiator::new(Role::Target, tl);
        i.declare("InitiatorName", "iqn.2026-01.test:initiator");
        i.declare("SessionType", session.token());
        if session == SessionType::Normal {
            i.declare("TargetName", "iqn.2026-01.test:target");
        }
        let mut to_target = i.offers();
        let r = t.receive(&wire(&to_target, 8192)).unwrap();
        let r = i.receive(&wire(&r.answers, 8192)).unwrap();
        assert!(r.answers.is_empty(), "{:?}", r.answers);

        i.set_phase(Phase::Operational);
        t.set_phase(Phase::Operational);
        to_target = i.offers();
        for _ in 0..6 {
            let r = t
                .receive(&wire(&to_target, i.max_send_data_segment_length() as usize))
                .unwrap();
            let mut to_initiator = r.answers;
            if to_target.is_empty() || i.pending().is_empty() {
                // The initiator would now ask to transit: the target adds what it still needs.
                to_initiator.extend(t.offers());
            }
            let r = i
                .receive(&wire(
                    &to_initiator,
                    t.max_send_data_segment_length() as usize,
                ))
                .unwrap();
            to_target = r.answers;
            if to_target.is_empty()
                && to_initiator.is_empty()
                && i.pending().is_empty()
                && t.pending().is_empty()
            {
                return (i, t);
            }
        }
        panic!(
            "negotiation did not settle: {:?} / {:?}",
            i.pending(),
            t.pending()
        );
    }

    #[test]
    fn default_login_agrees_on_defaults() {
        let (i, t) = login(Limits::default(), Limits::default(), SessionType::Normal);
        assert_eq!(i.params(), SessionParams::default());
        assert_eq!(t.params(), SessionParams::default());
        assert_eq!(
            t.declared("InitiatorName"),
            Some("iqn.2026-01.test:initiator")
        );
        assert_eq!(t.declared("TargetName"), Some("iqn.2026-01.test:target"));
    }

    fn digests() -> impl Strategy<Value = Vec<Digest>> {
        prop_oneof![
            Just(vec![]),
            Just(vec![Digest::None]),
            Just(vec![Digest::Crc32c]),
            Just(vec![Digest::Crc32c, Digest::None]),
            Just(vec![Digest::None, Digest::Crc32c]),
        ]
    }

    fn lengths() -> impl Strategy<Value = u32> {
        prop_oneof![
            Just(512u32),
            Just(8192),
            Just(65536),
            Just(262_144),
            Just(16_777_215),
            512u32..=16_777_215
        ]
    }

    fn task_reporting() -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(vec!["RFC3720", "ResponseFence", "FastAbort"], 0..=3)
            .prop_shuffle()
            .prop_map(|v| v.into_iter().map(str::to_owned).collect())
    }

    prop_compose! {
        fn limits()(
            header_digest in digests(), data_digest in digests(),
            max_connections in 1u16..=8, initial_r2t in any::<bool>(), immediate_data in any::<bool>(),
            max_recv_data_segment_length in lengths(), max_burst_length in lengths(), first_burst_length in lengths(),
            default_time2wait in 0u16..=3600, default_time2retain in 0u16..=3600,
            max_outstanding_r2t in 1u16..=16, data_pdu_in_order in any::<bool>(), data_sequence_in_order in any::<bool>(),
            error_recovery_level in 0u8..=2, task_reporting in task_reporting(), iscsi_protocol_level in 0u8..=31,
        ) -> Limits {
            Limits {
                header_digest, data_digest, auth_methods: vec![NONE.into()], max_connections, initial_r2t,
                immediate_data, max_recv_data_segment_length, max_burst_length, first_burst_length,
                default_time2wait, default_time2retain, max_outstanding_r2t, data_pdu_in_order,
                data_sequence_in_order, error_recovery_level, task_reporting, iscsi_protocol_level,
            }
        }
    }

    /// The expected outcome, computed straight from the RFC rules.
    fn expected(il: &Limits, tl: &Limits, session: SessionType) -> SessionParams {
        let d = SessionParams::default();
        let list = |offered: &[Digest], accepted: &[Digest]| {
            offered
                .iter()
                .copied()
                .find(|o| accepted.contains(o))
                .unwrap_or_default()
        };
        let mut p = SessionParams {
            session_type: session,
            header_digest: list(&il.header_digest, &tl.header_digest),
            data_digest: list(&il.data_digest, &tl.data_digest),
            default_time2wait: il.default_time2wait.max(tl.default_time2wait),
            default_time2retain: il.default_time2retain.min(tl.default_time2retain),
            error_recovery_level: il.error_recovery_level.min(tl.error_recovery_level),
            initiator_mrdsl: il.max_recv_data_segment_length,
            target_mrdsl: tl.max_recv_data_segment_length,
            ..d.clone()
        };
        // The target offers a digest list when None is unacceptable to it and the initiator offered nothing.
        for (field, i, t) in [
            (&mut p.header_digest, &il.header_digest, &tl.header_digest),
            (&mut p.data_digest, &il.data_digest, &tl.data_digest),
        ] {
            if i.is_empty() && !t.contains(&Digest::None) {
                *field = t
                    .iter()
                    .copied()
                    .find(|o| i.contains(o))
                    .unwrap_or_default();
            }
        }
        if session == SessionType::Discovery {
            return p;
        }
        p.max_connections = il.max_connections.min(tl.max_connections);
        p.initial_r2t = il.initial_r2t || tl.initial_r2t;
        p.immediate_data = il.immediate_data && tl.immediate_data;
        p.max_burst_length = il.max_burst_length.min(tl.max_burst_length);
        p.first_burst_length = if p.initial_r2t && !p.immediate_data {
            d.first_burst_length
        } else {
            il.first_burst_length
                .min(il.max_burst_length)
                .min(tl.first_burst_length)
        }
        .min(p.max_burst_length);
        p.data_pdu_in_order = il.data_pdu_in_order || tl.data_pdu_in_order;
        p.data_sequence_in_order = il.data_sequence_in_order || tl.data_sequence_in_order;
        p.max_outstanding_r2t = if p.error_recovery_level > 0 && p.data_sequence_in_order {
            1
        } else {
            il.max_outstanding_r2t.min(tl.max_outstanding_r2t)
        };
        p.iscsi_protocol_level = il.iscsi_protocol_level.min(tl.iscsi_protocol_level);
        let default_tr = ["RFC3720".to_owned()];
        p.task_reporting = if il.task_reporting != default_tr && !il.task_reporting.is_empty() {
            il.task_reporting
                .iter()
                .find(|v| tl.task_reporting.contains(v))
                .cloned()
        } else {
            None
        }
        .unwrap_or_else(|| d.task_reporting.clone());
        p
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn initiator_and_target_agree(il in limits(), tl in limits(), discovery in any::<bool>()) {
            let session = if discovery { SessionType::Discovery } else { SessionType::Normal };
            let (i, t) = login(il.clone(), tl.clone(), session);
            prop_assert_eq!(i.params(), t.params());
            prop_assert_eq!(i.params(), expected(&il, &tl, session));
        }

        #[test]
        fn receive_never_panics(
            batch in proptest::collection::vec(
                (prop_oneof![proptest::sample::select(KEYS.iter().map(|d| d.name).collect::<Vec<_>>()).prop_map(str::to_owned), "[A-Za-z-]{1,10}"],
                 prop_oneof![Just("Yes".to_owned()), Just("None".to_owned()), "[0-9]{1,9}", "0x[0-9a-f]{1,9}", "[A-Za-z0-9,~]{0,12}"]),
                0..12),
            role in prop_oneof![Just(Role::Initiator), Just(Role::Target)],
            phase in prop_oneof![Just(Phase::Security), Just(Phase::Operational), Just(Phase::FullFeature)],
        ) {
            let mut n = Negotiator::new(role, Limits::default());
            n.set_phase(phase);
            n.offers();
            let batch: Vec<KeyValue> = batch.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            if let Ok(reply) = n.receive(&batch) {
                // Every answer is for a received key or is one of our declarations.
                for a in &reply.answers {
                    prop_assert!(batch.iter().any(|b| b.key == a.key) || a.key == "MaxRecvDataSegmentLength", "{}", a);
                }
                prop_assert_eq!(reply.outcomes.len(), batch.len());
            }
            let _ = n.params();
        }
    }
}
