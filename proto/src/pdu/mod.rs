//! Typed iSCSI PDUs (RFC 7143 §11), one file per family.
//!
//! A [`Pdu`] is the typed view of a Basic Header Segment. Decoding
//! ([`Pdu::decode`]) never fails: every bit pattern of a known opcode maps to
//! field values, and an opcode RFC 7143 does not define becomes
//! [`Pdu::Unknown`] carrying the raw header. What a receiver must refuse
//! (reserved bits set, a field out of range) is for the receiver to judge:
//! [`fields::reserved_bits`] reports reserved bits, and the typed fields are
//! newtypes that keep undefined values. Encoding ([`Pdu::encode`]) cannot
//! fail; TotalAHSLength and DataSegmentLength are filled in by
//! [`crate::framing`] from the actual segments.
//!
//! - [`nop`] — NOP-Out / NOP-In
//! - [`scsi`] — SCSI Command / SCSI Response, residuals, sense segment
//! - [`task`] — Task Management Function Request / Response
//! - [`login`] — Login Request / Response, stages, status codes, ISID
//! - [`text`] — Text Request / Response
//! - [`data`] — Data-Out, Data-In, R2T
//! - [`logout`] — Logout Request / Response
//! - [`misc`] — SNACK Request, Asynchronous Message, Reject
//! - [`ahs`] — Additional Header Segments
//! - [`fields`] — every field by RFC name, for overrides and matching

pub mod ahs;
pub mod data;
pub mod fields;
pub mod login;
pub mod logout;
pub mod misc;
pub mod nop;
pub mod scsi;
pub mod task;
pub mod text;

pub use data::{DataIn, DataOut, R2t};
pub use login::{Isid, LoginRequest, LoginResponse, LoginStatus, Stage};
pub use logout::{LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode};
pub use misc::{AsyncEvent, AsyncMessage, Reject, RejectReason, SnackRequest, SnackType};
pub use nop::{NopIn, NopOut};
pub use scsi::{Residual, ScsiCommand, ScsiResponse, ScsiResponseCode, TaskAttr};
pub use task::{TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse};
pub use text::{TextRequest, TextResponse};

use crate::bhs::{Bhs, Opcode};

/// The typed header of any iSCSI PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    SnackRequest(SnackRequest),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
    /// An opcode RFC 7143 does not define, carried verbatim.
    Unknown(Bhs),
}

macro_rules! for_each_pdu {
    ($m:ident) => {
        $m! {
            NopOut, ScsiCommand, TaskMgmtRequest, LoginRequest, TextRequest, DataOut,
            LogoutRequest, SnackRequest, NopIn, ScsiResponse, TaskMgmtResponse,
            LoginResponse, TextResponse, DataIn, LogoutResponse, R2t, AsyncMessage, Reject
        }
    };
}

macro_rules! impl_pdu {
    ($($v:ident),*) => {
        impl Pdu {
            /// Reads the typed header. Never fails: unknown opcodes become
            /// [`Pdu::Unknown`].
            pub fn decode(bhs: &Bhs) -> Pdu {
                match bhs.opcode() {
                    $( $v::OPCODE => Pdu::$v($v::decode(bhs)), )*
                    _ => Pdu::Unknown(*bhs),
                }
            }

            /// Writes the header. TotalAHSLength and DataSegmentLength are
            /// left zero for the framing layer to fill in.
            pub fn encode(&self) -> Bhs {
                match self {
                    $( Pdu::$v(p) => {
                        let mut b = Bhs::new($v::OPCODE);
                        p.encode(&mut b);
                        b
                    } )*
                    Pdu::Unknown(b) => *b,
                }
            }

            pub fn opcode(&self) -> Opcode {
                match self {
                    $( Pdu::$v(_) => $v::OPCODE, )*
                    Pdu::Unknown(b) => b.opcode(),
                }
            }
        }

        $(
            impl From<$v> for Pdu {
                fn from(p: $v) -> Pdu {
                    Pdu::$v(p)
                }
            }
        )*
    };
}

for_each_pdu!(impl_pdu);

impl Pdu {
    /// The Initiator Task Tag (bytes 16..20, the same in every PDU).
    pub fn itt(&self) -> u32 {
        self.encode().itt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bhs::Lun;
    use pretty_assertions::assert_eq;

    /// One value of every PDU with every field distinct and non-zero.
    fn samples() -> Vec<Pdu> {
        vec![
            Pdu::NopOut(NopOut {
                immediate: true,
                lun: Lun::from_index(3),
                itt: 0x11,
                ttt: 0x12,
                cmd_sn: 0x13,
                exp_stat_sn: 0x14,
            }),
            Pdu::ScsiCommand(ScsiCommand {
                immediate: true,
                final_bit: true,
                read: true,
                write: true,
                attr: TaskAttr::ORDERED,
                lun: Lun::from_index(2),
                itt: 0x21,
                expected_data_transfer_length: 0x22,
                cmd_sn: 0x23,
                exp_stat_sn: 0x24,
                cdb: [0x28, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            }),
            Pdu::TaskMgmtRequest(TaskMgmtRequest {
                immediate: true,
                function: TmfFunction::LOGICAL_UNIT_RESET,
                lun: Lun::from_index(1),
                itt: 0x31,
                referenced_task_tag: 0x32,
                cmd_sn: 0x33,
                exp_stat_sn: 0x34,
                ref_cmd_sn: 0x35,
                exp_data_sn: 0x36,
            }),
            Pdu::LoginRequest(LoginRequest {
                transit: true,
                continue_bit: true,
                csg: Stage::OPERATIONAL,
                nsg: Stage::FULL_FEATURE,
                version_max: 1,
                version_min: 2,
                isid: Isid([0x80, 1, 2, 3, 4, 5]),
                tsih: 0x41,
                itt: 0x42,
                cid: 0x43,
                cmd_sn: 0x44,
                exp_stat_sn: 0x45,
            }),
            Pdu::TextRequest(TextRequest {
                immediate: true,
                final_bit: true,
                continue_bit: true,
                lun: Lun::from_index(5),
                itt: 0x51,
                ttt: 0x52,
                cmd_sn: 0x53,
                exp_stat_sn: 0x54,
            }),
            Pdu::DataOut(DataOut {
                final_bit: true,
                lun: Lun::from_index(6),
                itt: 0x61,
                ttt: 0x62,
                exp_stat_sn: 0x63,
                data_sn: 0x64,
                buffer_offset: 0x65,
            }),
            Pdu::LogoutRequest(LogoutRequest {
                immediate: true,
                reason: LogoutReason::CLOSE_CONNECTION,
                itt: 0x71,
                cid: 0x72,
                cmd_sn: 0x73,
                exp_stat_sn: 0x74,
            }),
            Pdu::SnackRequest(SnackRequest {
                snack_type: SnackType::R_DATA,
                lun: Lun::from_index(8),
                itt: 0x81,
                ttt: 0x82,
                exp_stat_sn: 0x83,
                beg_run: 0x84,
                run_length: 0x85,
            }),
            Pdu::NopIn(NopIn {
                lun: Lun::from_index(9),
                itt: 0x91,
                ttt: 0x92,
                stat_sn: 0x93,
                exp_cmd_sn: 0x94,
                max_cmd_sn: 0x95,
            }),
            Pdu::ScsiResponse(ScsiResponse {
                itt: 0xa1,
                response: ScsiResponseCode::TARGET_FAILURE,
                status: 0x02,
                residual: Residual::Underflow(0xa2),
                bidi_residual: Residual::Overflow(0xa3),
                snack_tag: 0xa4,
                stat_sn: 0xa5,
                exp_cmd_sn: 0xa6,
                max_cmd_sn: 0xa7,
                exp_data_sn: 0xa8,
            }),
            Pdu::TaskMgmtResponse(TaskMgmtResponse {
                response: TmfResponse::TASK_DOES_NOT_EXIST,
                itt: 0xb1,
                stat_sn: 0xb2,
                exp_cmd_sn: 0xb3,
                max_cmd_sn: 0xb4,
            }),
            Pdu::LoginResponse(LoginResponse {
                transit: true,
                continue_bit: false,
                csg: Stage::SECURITY,
                nsg: Stage::OPERATIONAL,
                version_max: 3,
                version_active: 4,
                isid: Isid([0x40, 9, 8, 7, 6, 5]),
                tsih: 0xc1,
                itt: 0xc2,
                stat_sn: 0xc3,
                exp_cmd_sn: 0xc4,
                max_cmd_sn: 0xc5,
                status: LoginStatus::MISSING_PARAMETER,
            }),
            Pdu::TextResponse(TextResponse {
                final_bit: false,
                continue_bit: true,
                lun: Lun::from_index(13),
                itt: 0xd1,
                ttt: 0xd2,
                stat_sn: 0xd3,
                exp_cmd_sn: 0xd4,
                max_cmd_sn: 0xd5,
            }),
            Pdu::DataIn(DataIn {
                final_bit: true,
                acknowledge: true,
                status: Some(0x00),
                residual: Residual::Overflow(0xe1),
                lun: Lun::from_index(14),
                itt: 0xe2,
                ttt: 0xe3,
                stat_sn: 0xe4,
                exp_cmd_sn: 0xe5,
                max_cmd_sn: 0xe6,
                data_sn: 0xe7,
                buffer_offset: 0xe8,
            }),
            Pdu::LogoutResponse(LogoutResponse {
                response: LogoutResponseCode::CID_NOT_FOUND,
                itt: 0xf1,
                stat_sn: 0xf2,
                exp_cmd_sn: 0xf3,
                max_cmd_sn: 0xf4,
                time2wait: 0xf5,
                time2retain: 0xf6,
            }),
            Pdu::R2t(R2t {
                lun: Lun::from_index(15),
                itt: 0x101,
                ttt: 0x102,
                stat_sn: 0x103,
                exp_cmd_sn: 0x104,
                max_cmd_sn: 0x105,
                r2t_sn: 0x106,
                buffer_offset: 0x107,
                desired_data_transfer_length: 0x108,
            }),
            Pdu::AsyncMessage(AsyncMessage {
                lun: Lun::from_index(16),
                stat_sn: 0x111,
                exp_cmd_sn: 0x112,
                max_cmd_sn: 0x113,
                event: AsyncEvent::LOGOUT_REQUEST,
                vcode: 0x14,
                parameter1: 0x115,
                parameter2: 0x116,
                parameter3: 0x117,
            }),
            Pdu::Reject(Reject {
                reason: RejectReason::INVALID_PDU_FIELD,
                stat_sn: 0x121,
                exp_cmd_sn: 0x122,
                max_cmd_sn: 0x123,
                data_sn: 0x124,
            }),
        ]
    }

    #[test]
    fn every_opcode_has_a_sample() {
        let ops: Vec<Opcode> = samples().iter().map(Pdu::opcode).collect();
        assert_eq!(ops, Opcode::ALL.to_vec());
    }

    #[test]
    fn typed_round_trip() {
        for pdu in samples() {
            let bhs = pdu.encode();
            assert_eq!(Pdu::decode(&bhs), pdu);
            assert!(
                fields::reserved_bits(&bhs).is_empty(),
                "{:?} sets reserved bits: {:?}",
                pdu.opcode(),
                fields::reserved_bits(&bhs)
            );
        }
    }

    /// The typed structs and the field table agree on where fields live.
    #[test]
    fn typed_layout_matches_field_table() {
        let get = |bhs: &Bhs, name: &str| {
            fields::lookup(bhs.opcode(), name)
                .unwrap_or_else(|| panic!("{:?} has no field {name}", bhs.opcode()))
                .read(bhs)
        };
        for pdu in samples() {
            let b = pdu.encode();
            match &pdu {
                Pdu::NopOut(p) => {
                    assert_eq!(get(&b, "TTT"), u64::from(p.ttt));
                    assert_eq!(get(&b, "CmdSN"), u64::from(p.cmd_sn));
                    assert_eq!(get(&b, "ExpStatSN"), u64::from(p.exp_stat_sn));
                    assert_eq!(get(&b, "LUN"), p.lun.0);
                    assert_eq!(get(&b, "I"), 1);
                }
                Pdu::ScsiCommand(p) => {
                    assert_eq!(get(&b, "ExpectedDataTransferLength"), 0x22);
                    assert_eq!(get(&b, "ATTR"), u64::from(p.attr.0));
                    assert_eq!(get(&b, "R") + get(&b, "W"), 2);
                    assert_eq!(fields::lookup(b.opcode(), "CDB").unwrap().bytes(&b), &p.cdb);
                }
                Pdu::TaskMgmtRequest(p) => {
                    assert_eq!(get(&b, "Function"), u64::from(p.function.0));
                    assert_eq!(
                        get(&b, "ReferencedTaskTag"),
                        u64::from(p.referenced_task_tag)
                    );
                    assert_eq!(get(&b, "RefCmdSN"), u64::from(p.ref_cmd_sn));
                    assert_eq!(get(&b, "ExpDataSN"), u64::from(p.exp_data_sn));
                }
                Pdu::LoginRequest(p) => {
                    assert_eq!(get(&b, "ISID"), p.isid.to_u64());
                    assert_eq!(get(&b, "TSIH"), u64::from(p.tsih));
                    assert_eq!(get(&b, "CID"), u64::from(p.cid));
                    assert_eq!(get(&b, "CSG"), u64::from(p.csg.0));
                    assert_eq!(get(&b, "NSG"), u64::from(p.nsg.0));
                    assert_eq!(get(&b, "VersionMin"), u64::from(p.version_min));
                }
                Pdu::TextRequest(p) => assert_eq!(get(&b, "TTT"), u64::from(p.ttt)),
                Pdu::DataOut(p) => {
                    assert_eq!(get(&b, "DataSN"), u64::from(p.data_sn));
                    assert_eq!(get(&b, "BufferOffset"), u64::from(p.buffer_offset));
                }
                Pdu::LogoutRequest(p) => {
                    assert_eq!(get(&b, "ReasonCode"), u64::from(p.reason.0));
                    assert_eq!(get(&b, "CID"), u64::from(p.cid));
                }
                Pdu::SnackRequest(p) => {
                    assert_eq!(get(&b, "Type"), u64::from(p.snack_type.0));
                    assert_eq!(get(&b, "BegRun"), u64::from(p.beg_run));
                    assert_eq!(get(&b, "RunLength"), u64::from(p.run_length));
                }
                Pdu::NopIn(p) => assert_eq!(get(&b, "MaxCmdSN"), u64::from(p.max_cmd_sn)),
                Pdu::ScsiResponse(p) => {
                    assert_eq!(get(&b, "Status"), u64::from(p.status));
                    assert_eq!(get(&b, "U"), 1);
                    assert_eq!(get(&b, "o"), 1);
                    assert_eq!(get(&b, "ResidualCount"), 0xa2);
                    assert_eq!(get(&b, "BidiReadResidualCount"), 0xa3);
                    assert_eq!(get(&b, "ExpDataSN"), u64::from(p.exp_data_sn));
                    assert_eq!(get(&b, "SNACKTag"), u64::from(p.snack_tag));
                }
                Pdu::TaskMgmtResponse(p) => {
                    assert_eq!(get(&b, "Response"), u64::from(p.response.0))
                }
                Pdu::LoginResponse(p) => {
                    assert_eq!(get(&b, "StatusClass"), u64::from(p.status.class()));
                    assert_eq!(get(&b, "StatusDetail"), u64::from(p.status.detail()));
                    assert_eq!(get(&b, "VersionActive"), u64::from(p.version_active));
                }
                Pdu::TextResponse(p) => assert_eq!(get(&b, "C"), u64::from(p.continue_bit)),
                Pdu::DataIn(p) => {
                    assert_eq!(get(&b, "S"), 1);
                    assert_eq!(get(&b, "A"), 1);
                    assert_eq!(get(&b, "O"), 1);
                    assert_eq!(get(&b, "ResidualCount"), 0xe1);
                    assert_eq!(get(&b, "DataSN"), u64::from(p.data_sn));
                    assert_eq!(get(&b, "BufferOffset"), u64::from(p.buffer_offset));
                }
                Pdu::LogoutResponse(p) => {
                    assert_eq!(get(&b, "Time2Wait"), u64::from(p.time2wait));
                    assert_eq!(get(&b, "Time2Retain"), u64::from(p.time2retain));
                }
                Pdu::R2t(p) => {
                    assert_eq!(get(&b, "R2TSN"), u64::from(p.r2t_sn));
                    assert_eq!(
                        get(&b, "DesiredDataTransferLength"),
                        u64::from(p.desired_data_transfer_length)
                    );
                }
                Pdu::AsyncMessage(p) => {
                    assert_eq!(get(&b, "AsyncEvent"), u64::from(p.event.0));
                    assert_eq!(get(&b, "Parameter3"), u64::from(p.parameter3));
                    assert_eq!(get(&b, "ITT"), 0xffff_ffff);
                }
                Pdu::Reject(p) => {
                    assert_eq!(get(&b, "Reason"), u64::from(p.reason.0));
                    assert_eq!(get(&b, "DataSN"), u64::from(p.data_sn));
                }
                Pdu::Unknown(_) => unreachable!(),
            }
            assert_eq!(get(&b, "ITT"), u64::from(pdu.itt()));
        }
    }

    #[test]
    fn unknown_opcode_is_carried() {
        let mut b = Bhs::new(Opcode(0x1d));
        b.0[30] = 0x55;
        let pdu = Pdu::decode(&b);
        assert_eq!(pdu, Pdu::Unknown(b));
        assert_eq!(pdu.encode(), b);
        assert_eq!(pdu.opcode(), Opcode(0x1d));
    }

    #[test]
    fn decode_any_header_then_reencode_keeps_defined_fields() {
        // Any 48 bytes decode; re-encoding reproduces every defined bit.
        let mut state = 0x1234_5678_u32;
        for _ in 0..2000 {
            let mut raw = [0u8; 48];
            for byte in raw.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *byte = state as u8;
            }
            let bhs = Bhs(raw);
            let again = Pdu::decode(&bhs).encode();
            if bhs.opcode().name().is_none() {
                assert_eq!(again, bhs);
                continue;
            }
            for f in fields::all(bhs.opcode()) {
                if matches!(f.name, "TotalAHSLength" | "DataSegmentLength") {
                    continue;
                }
                // Fields the typed layer pins (F=1 on single-PDU types, I on
                // Login, ITT on Async/Reject) or only carries with S are
                // allowed to differ.
                let pinned = matches!(
                    (bhs.opcode(), f.name),
                    (_, "F")
                        | (Opcode::LOGIN_REQUEST, "I")
                        | (Opcode::ASYNC_MESSAGE | Opcode::REJECT, "ITT")
                        | (Opcode::DATA_IN, "Status" | "O" | "U" | "ResidualCount")
                        | (
                            Opcode::SCSI_RESPONSE,
                            "O" | "U" | "o" | "u" | "ResidualCount" | "BidiReadResidualCount"
                        )
                );
                if !pinned {
                    assert_eq!(
                        f.read(&again),
                        f.read(&bhs),
                        "{:?}.{}",
                        bhs.opcode(),
                        f.name
                    );
                }
            }
        }
    }
}
