//! Login Request (RFC 7143 §11.12) and Login Response (§11.13).
//!
//! Login moves through stages — Security (0), Login Operational (1), Full
//! Feature (3) — with the T (transit) bit asking to move from CSG to NSG and
//! the C (continue) bit splitting a text payload across PDUs. The negotiation
//! itself is text in the data segment (see [`crate::negotiation`]).

use std::fmt;

use crate::bhs::{Bhs, Opcode};

wire_newtype! {
    /// A login stage (CSG/NSG, §11.12.3). Value 2 is reserved.
    pub struct Stage(u8) {
        SECURITY = 0 => "SecurityNegotiation",
        OPERATIONAL = 1 => "LoginOperationalNegotiation",
        FULL_FEATURE = 3 => "FullFeaturePhase",
    }
}

wire_newtype! {
    /// Status-Class and Status-Detail of a Login Response (§11.13.5), as
    /// `class << 8 | detail`.
    pub struct LoginStatus(u16) {
        SUCCESS = 0x0000 => "Success",
        TARGET_MOVED_TEMPORARILY = 0x0101 => "TargetMovedTemporarily",
        TARGET_MOVED_PERMANENTLY = 0x0102 => "TargetMovedPermanently",
        INITIATOR_ERROR = 0x0200 => "InitiatorError",
        AUTHENTICATION_FAILURE = 0x0201 => "AuthenticationFailure",
        AUTHORIZATION_FAILURE = 0x0202 => "AuthorizationFailure",
        NOT_FOUND = 0x0203 => "NotFound",
        TARGET_REMOVED = 0x0204 => "TargetRemoved",
        UNSUPPORTED_VERSION = 0x0205 => "UnsupportedVersion",
        TOO_MANY_CONNECTIONS = 0x0206 => "TooManyConnections",
        MISSING_PARAMETER = 0x0207 => "MissingParameter",
        CANT_INCLUDE_IN_SESSION = 0x0208 => "CantIncludeInSession",
        SESSION_TYPE_NOT_SUPPORTED = 0x0209 => "SessionTypeNotSupported",
        SESSION_DOES_NOT_EXIST = 0x020a => "SessionDoesNotExist",
        INVALID_DURING_LOGIN = 0x020b => "InvalidDuringLogin",
        TARGET_ERROR = 0x0300 => "TargetError",
        SERVICE_UNAVAILABLE = 0x0301 => "ServiceUnavailable",
        OUT_OF_RESOURCES = 0x0302 => "OutOfResources",
    }
}

impl LoginStatus {
    pub fn class(self) -> u8 {
        (self.0 >> 8) as u8
    }

    pub fn detail(self) -> u8 {
        self.0 as u8
    }

    pub fn from_parts(class: u8, detail: u8) -> LoginStatus {
        LoginStatus(u16::from(class) << 8 | u16::from(detail))
    }
}

/// The initiator part of the session identifier (§11.12.5): 6 bytes, type
/// and naming authority in the top bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Isid(pub [u8; 6]);

impl Isid {
    /// A random-format ISID (type 0b11) with the given qualifier bits, the
    /// form software initiators use.
    pub fn random(qualifier: u32) -> Isid {
        let q = qualifier.to_be_bytes();
        Isid([0xc0 | (q[0] & 0x3f), q[1], q[2], q[3], 0, 1])
    }

    pub fn to_u64(self) -> u64 {
        self.0.iter().fold(0, |acc, b| acc << 8 | u64::from(*b))
    }
}

impl fmt::Debug for Isid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Isid({:#014x})", self.to_u64())
    }
}

/// Login Request, initiator → target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRequest {
    /// T: the initiator is ready to move to `nsg`.
    pub transit: bool,
    /// C: the text payload continues in the next PDU.
    pub continue_bit: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: Isid,
    /// 0 for a new session, the target's TSIH to add a connection or reinstate.
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl Default for LoginRequest {
    fn default() -> Self {
        LoginRequest {
            transit: false,
            continue_bit: false,
            csg: Stage::SECURITY,
            nsg: Stage::SECURITY,
            version_max: 0,
            version_min: 0,
            isid: Isid::default(),
            tsih: 0,
            itt: 0,
            cid: 0,
            cmd_sn: 0,
            exp_stat_sn: 0,
        }
    }
}

fn encode_stages(b: &mut Bhs, transit: bool, cont: bool, csg: Stage, nsg: Stage) {
    b.0[1] =
        (u8::from(transit) << 7) | (u8::from(cont) << 6) | ((csg.0 & 0x03) << 2) | (nsg.0 & 0x03);
}

impl LoginRequest {
    pub fn encode(&self, b: &mut Bhs) {
        // The I bit is always 1 on a Login Request (§11.12).
        b.set_immediate(true);
        encode_stages(b, self.transit, self.continue_bit, self.csg, self.nsg);
        b.0[2] = self.version_max;
        b.0[3] = self.version_min;
        b.0[8..14].copy_from_slice(&self.isid.0);
        b.set_u16_at(14, self.tsih);
        b.set_itt(self.itt);
        b.set_u16_at(20, self.cid);
        b.set_u32_at(24, self.cmd_sn);
        b.set_u32_at(28, self.exp_stat_sn);
    }

    pub fn decode(b: &Bhs) -> Self {
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&b.0[8..14]);
        LoginRequest {
            transit: b.0[1] & 0x80 != 0,
            continue_bit: b.0[1] & 0x40 != 0,
            csg: Stage((b.0[1] >> 2) & 0x03),
            nsg: Stage(b.0[1] & 0x03),
            version_max: b.0[2],
            version_min: b.0[3],
            isid: Isid(isid),
            tsih: b.u16_at(14),
            itt: b.itt(),
            cid: b.u16_at(20),
            cmd_sn: b.u32_at(24),
            exp_stat_sn: b.u32_at(28),
        }
    }

    pub const OPCODE: Opcode = Opcode::LOGIN_REQUEST;
}

/// Login Response, target → initiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub continue_bit: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: Isid,
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status: LoginStatus,
}

impl Default for LoginResponse {
    fn default() -> Self {
        LoginResponse {
            transit: false,
            continue_bit: false,
            csg: Stage::SECURITY,
            nsg: Stage::SECURITY,
            version_max: 0,
            version_active: 0,
            isid: Isid::default(),
            tsih: 0,
            itt: 0,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            status: LoginStatus::SUCCESS,
        }
    }
}

impl LoginResponse {
    pub fn encode(&self, b: &mut Bhs) {
        encode_stages(b, self.transit, self.continue_bit, self.csg, self.nsg);
        b.0[2] = self.version_max;
        b.0[3] = self.version_active;
        b.0[8..14].copy_from_slice(&self.isid.0);
        b.set_u16_at(14, self.tsih);
        b.set_itt(self.itt);
        b.set_u32_at(24, self.stat_sn);
        b.set_u32_at(28, self.exp_cmd_sn);
        b.set_u32_at(32, self.max_cmd_sn);
        b.0[36] = self.status.class();
        b.0[37] = self.status.detail();
    }

    pub fn decode(b: &Bhs) -> Self {
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&b.0[8..14]);
        LoginResponse {
            transit: b.0[1] & 0x80 != 0,
            continue_bit: b.0[1] & 0x40 != 0,
            csg: Stage((b.0[1] >> 2) & 0x03),
            nsg: Stage(b.0[1] & 0x03),
            version_max: b.0[2],
            version_active: b.0[3],
            isid: Isid(isid),
            tsih: b.u16_at(14),
            itt: b.itt(),
            stat_sn: b.u32_at(24),
            exp_cmd_sn: b.u32_at(28),
            max_cmd_sn: b.u32_at(32),
            status: LoginStatus::from_parts(b.0[36], b.0[37]),
        }
    }

    pub const OPCODE: Opcode = Opcode::LOGIN_RESPONSE;
}
