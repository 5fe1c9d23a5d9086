//! Command descriptor blocks: opcodes, the typed [`Cdb`], its parser and
//! encoder (SPC-4 §4.2, §6; SBC-4 §5).
//!
//! One coherent approach for both sides: the target calls [`Cdb::parse`] on
//! the CDB of a SCSI Command PDU; the initiator and the test tools build a
//! [`Cdb`] value (struct literal or one of the shorthand constructors) and
//! call [`Cdb::encode`]. `Cdb::parse(&c.encode()) == Ok(c)` for every value
//! whose fields fit their wire width (proptest below).
//!
//! ## What parsing checks
//!
//! [`Cdb::parse`] is structural: the CDB must be as long as its operation
//! code's group requires (SPC-4 §4.2.5.1; bytes beyond that — the padding of
//! the 16-byte iSCSI CDB field — are ignored), and every field is decoded.
//! It does not judge values. Three further checks are separate so the target
//! chooses what to enforce:
//!
//! - [`crate::scsi::usage::check_reserved`] — reserved bits set (the CDB
//!   usage map of SPC-4 §6.35.3 used as a mask), including LINK in the
//!   CONTROL byte; NACA is allowed through for the target to decide.
//! - [`Cdb::validate`] — values every device server must reject whatever
//!   it supports (EVPD=0 with a page code, ANCHOR without UNMAP, BYTCHK=10b…).
//! - Capability checks (RDPROTECT without protection, unsupported pages, LBA
//!   beyond capacity) — the target's own business.
//!
//! Every failure carries the byte and bit of the offending field, which
//! [`CdbError::sense`] turns into INVALID FIELD IN CDB with a field pointer
//! (SPC-4 §4.5.2.4.2).
//!
//! ## Transfer lengths
//!
//! READ(6)/WRITE(6): a TRANSFER LENGTH of 0 means 256 blocks (SBC-4 §5.14),
//! so `blocks` is 1..=256 and 256 encodes as 0. In every other command 0
//! means no transfer. Values wider than a field (an LBA above 2^21 in a
//! READ(6), …) are truncated by [`Cdb::encode`] — deliberately, so a test
//! tool can build exactly the bytes it wants.

use std::fmt;
use std::ops::{Deref, DerefMut};

use super::pr::{PrInServiceAction, PrOutServiceAction, PrType};
use super::report_luns::SelectReport;
use super::sense::Sense;
use super::wire::{be16, be32, be64};

/// A SCSI operation code, byte 0 of every CDB (SPC-4 §4.2.5.1, Annex E).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ScsiOpcode(pub u8);

/// Declares the opcode constants, their names and [`ScsiOpcode::ALL`] from
/// one list.
macro_rules! opcodes {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        impl ScsiOpcode {
            $(
                #[doc = $text]
                pub const $name: ScsiOpcode = ScsiOpcode($value);
            )*

            /// Every operation code this crate names, ascending.
            pub const ALL: &'static [ScsiOpcode] = &[$(ScsiOpcode::$name),*];

            /// The SPC/SBC command name, e.g. `"READ(10)"`.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

opcodes! {
    TEST_UNIT_READY = 0x00, "TEST UNIT READY";
    REQUEST_SENSE = 0x03, "REQUEST SENSE";
    FORMAT_UNIT = 0x04, "FORMAT UNIT";
    READ_6 = 0x08, "READ(6)";
    WRITE_6 = 0x0a, "WRITE(6)";
    INQUIRY = 0x12, "INQUIRY";
    MODE_SELECT_6 = 0x15, "MODE SELECT(6)";
    RESERVE_6 = 0x16, "RESERVE(6)";
    RELEASE_6 = 0x17, "RELEASE(6)";
    MODE_SENSE_6 = 0x1a, "MODE SENSE(6)";
    START_STOP_UNIT = 0x1b, "START STOP UNIT";
    RECEIVE_DIAGNOSTIC_RESULTS = 0x1c, "RECEIVE DIAGNOSTIC RESULTS";
    SEND_DIAGNOSTIC = 0x1d, "SEND DIAGNOSTIC";
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1e, "PREVENT ALLOW MEDIUM REMOVAL";
    READ_CAPACITY_10 = 0x25, "READ CAPACITY(10)";
    READ_10 = 0x28, "READ(10)";
    WRITE_10 = 0x2a, "WRITE(10)";
    WRITE_AND_VERIFY_10 = 0x2e, "WRITE AND VERIFY(10)";
    VERIFY_10 = 0x2f, "VERIFY(10)";
    PRE_FETCH_10 = 0x34, "PRE-FETCH(10)";
    SYNCHRONIZE_CACHE_10 = 0x35, "SYNCHRONIZE CACHE(10)";
    READ_DEFECT_DATA_10 = 0x37, "READ DEFECT DATA(10)";
    WRITE_BUFFER = 0x3b, "WRITE BUFFER";
    READ_BUFFER = 0x3c, "READ BUFFER";
    READ_LONG_10 = 0x3e, "READ LONG(10)";
    WRITE_LONG_10 = 0x3f, "WRITE LONG(10)";
    WRITE_SAME_10 = 0x41, "WRITE SAME(10)";
    UNMAP = 0x42, "UNMAP";
    SANITIZE = 0x48, "SANITIZE";
    LOG_SELECT = 0x4c, "LOG SELECT";
    LOG_SENSE = 0x4d, "LOG SENSE";
    MODE_SELECT_10 = 0x55, "MODE SELECT(10)";
    RESERVE_10 = 0x56, "RESERVE(10)";
    RELEASE_10 = 0x57, "RELEASE(10)";
    MODE_SENSE_10 = 0x5a, "MODE SENSE(10)";
    PERSISTENT_RESERVE_IN = 0x5e, "PERSISTENT RESERVE IN";
    PERSISTENT_RESERVE_OUT = 0x5f, "PERSISTENT RESERVE OUT";
    VARIABLE_LENGTH = 0x7f, "VARIABLE LENGTH";
    EXTENDED_COPY = 0x83, "EXTENDED COPY";
    RECEIVE_COPY_RESULTS = 0x84, "RECEIVE COPY RESULTS";
    READ_16 = 0x88, "READ(16)";
    COMPARE_AND_WRITE = 0x89, "COMPARE AND WRITE";
    WRITE_16 = 0x8a, "WRITE(16)";
    ORWRITE_16 = 0x8b, "ORWRITE(16)";
    READ_ATTRIBUTE = 0x8c, "READ ATTRIBUTE";
    WRITE_ATTRIBUTE = 0x8d, "WRITE ATTRIBUTE";
    WRITE_AND_VERIFY_16 = 0x8e, "WRITE AND VERIFY(16)";
    VERIFY_16 = 0x8f, "VERIFY(16)";
    PRE_FETCH_16 = 0x90, "PRE-FETCH(16)";
    SYNCHRONIZE_CACHE_16 = 0x91, "SYNCHRONIZE CACHE(16)";
    WRITE_SAME_16 = 0x93, "WRITE SAME(16)";
    WRITE_ATOMIC_16 = 0x9c, "WRITE ATOMIC(16)";
    SERVICE_ACTION_IN_16 = 0x9e, "SERVICE ACTION IN(16)";
    SERVICE_ACTION_OUT_16 = 0x9f, "SERVICE ACTION OUT(16)";
    REPORT_LUNS = 0xa0, "REPORT LUNS";
    SECURITY_PROTOCOL_IN = 0xa2, "SECURITY PROTOCOL IN";
    MAINTENANCE_IN = 0xa3, "MAINTENANCE IN";
    MAINTENANCE_OUT = 0xa4, "MAINTENANCE OUT";
    READ_12 = 0xa8, "READ(12)";
    WRITE_12 = 0xaa, "WRITE(12)";
    SERVICE_ACTION_IN_12 = 0xab, "SERVICE ACTION IN(12)";
    WRITE_AND_VERIFY_12 = 0xae, "WRITE AND VERIFY(12)";
    VERIFY_12 = 0xaf, "VERIFY(12)";
    SECURITY_PROTOCOL_OUT = 0xb5, "SECURITY PROTOCOL OUT";
    READ_DEFECT_DATA_12 = 0xb7, "READ DEFECT DATA(12)";
}

impl ScsiOpcode {
    /// Looks an opcode up by name, with spaces or underscores, with or
    /// without the parentheses: `"READ(10)"`, `"READ_10"`, `"read 10"`.
    pub fn from_name(name: &str) -> Option<ScsiOpcode> {
        let norm = |s: &str| {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_uppercase())
                .collect::<String>()
        };
        let want = norm(name);
        ScsiOpcode::ALL
            .iter()
            .copied()
            .find(|op| op.name().is_some_and(|n| norm(n) == want))
    }

    /// The CDB length implied by the group code, the top three bits
    /// (SPC-4 §4.2.5.1, table 13): 6, 10, 16 or 12 bytes; `None` for the
    /// variable-length, reserved and vendor-specific groups.
    pub fn cdb_len(self) -> Option<usize> {
        match self.0 >> 5 {
            0 => Some(6),
            1 | 2 => Some(10),
            4 => Some(16),
            5 => Some(12),
            _ => None,
        }
    }

    /// True for the operation codes whose commands are told apart by a
    /// SERVICE ACTION field in byte 1, bits 4..0 (SPC-4 §4.2.5.2).
    pub fn has_service_action(self) -> bool {
        matches!(
            self,
            ScsiOpcode::PERSISTENT_RESERVE_IN
                | ScsiOpcode::PERSISTENT_RESERVE_OUT
                | ScsiOpcode::EXTENDED_COPY
                | ScsiOpcode::RECEIVE_COPY_RESULTS
                | ScsiOpcode::SANITIZE
                | ScsiOpcode::SERVICE_ACTION_IN_16
                | ScsiOpcode::SERVICE_ACTION_OUT_16
                | ScsiOpcode::MAINTENANCE_IN
                | ScsiOpcode::MAINTENANCE_OUT
                | ScsiOpcode::SERVICE_ACTION_IN_12
        )
    }
}

impl fmt::Debug for ScsiOpcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "ScsiOpcode({:#04x})", self.0),
        }
    }
}

impl fmt::Display for ScsiOpcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Service action codes of the operation codes this crate parses.
pub mod service_action {
    /// SERVICE ACTION IN(16): READ CAPACITY(16) (SBC-4 §5.17).
    pub const READ_CAPACITY_16: u8 = 0x10;
    /// SERVICE ACTION IN(16): GET LBA STATUS (SBC-4 §5.7).
    pub const GET_LBA_STATUS: u8 = 0x12;
    /// MAINTENANCE IN: REPORT IDENTIFYING INFORMATION (SPC-4 §6.30).
    pub const REPORT_IDENTIFYING_INFORMATION: u8 = 0x05;
    /// MAINTENANCE IN: REPORT TARGET PORT GROUPS (SPC-4 §6.36).
    pub const REPORT_TARGET_PORT_GROUPS: u8 = 0x0a;
    /// MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35).
    pub const REPORT_SUPPORTED_OPERATION_CODES: u8 = 0x0c;
    /// MAINTENANCE IN: REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (§6.37).
    pub const REPORT_SUPPORTED_TMFS: u8 = 0x0d;
    /// MAINTENANCE IN: REPORT TIMESTAMP (SPC-4 §6.38).
    pub const REPORT_TIMESTAMP: u8 = 0x0f;
    /// EXTENDED COPY (LID1) (SPC-4 §6.4).
    pub const EXTENDED_COPY_LID1: u8 = 0x00;
    /// EXTENDED COPY (LID4) (SPC-4 §6.3).
    pub const EXTENDED_COPY_LID4: u8 = 0x01;
    /// RECEIVE COPY STATUS (LID1) (SPC-4 §6.21).
    pub const RECEIVE_COPY_STATUS_LID1: u8 = 0x00;
    /// RECEIVE COPY DATA (LID1).
    pub const RECEIVE_COPY_DATA_LID1: u8 = 0x01;
    /// RECEIVE COPY OPERATING PARAMETERS.
    pub const RECEIVE_COPY_OPERATING_PARAMETERS: u8 = 0x03;
    /// RECEIVE COPY FAILURE DETAILS (LID1).
    pub const RECEIVE_COPY_FAILURE_DETAILS_LID1: u8 = 0x04;
    /// RECEIVE COPY STATUS (LID4).
    pub const RECEIVE_COPY_STATUS_LID4: u8 = 0x05;
    /// RECEIVE COPY DATA (LID4).
    pub const RECEIVE_COPY_DATA_LID4: u8 = 0x06;
    /// RECEIVE ROD TOKEN INFORMATION.
    pub const RECEIVE_ROD_TOKEN_INFORMATION: u8 = 0x07;
    /// SANITIZE: OVERWRITE (SBC-4 §5.30).
    pub const SANITIZE_OVERWRITE: u8 = 0x01;
    /// SANITIZE: BLOCK ERASE.
    pub const SANITIZE_BLOCK_ERASE: u8 = 0x02;
    /// SANITIZE: CRYPTOGRAPHIC ERASE.
    pub const SANITIZE_CRYPTOGRAPHIC_ERASE: u8 = 0x03;
    /// SANITIZE: EXIT FAILURE MODE.
    pub const SANITIZE_EXIT_FAILURE_MODE: u8 = 0x1f;
}

/// Which of the 6/10/12/16-byte forms of a command. Commands that exist in
/// fewer sizes encode an unsupported size as the nearest larger one (and
/// 16 for anything above); parse never produces an unsupported size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CdbSize {
    /// 6-byte CDB (group 0).
    Six,
    /// 10-byte CDB (groups 1, 2).
    Ten,
    /// 12-byte CDB (group 5).
    Twelve,
    /// 16-byte CDB (group 4).
    Sixteen,
}

impl CdbSize {
    /// The CDB length in bytes.
    pub fn cdb_len(self) -> usize {
        match self {
            CdbSize::Six => 6,
            CdbSize::Ten => 10,
            CdbSize::Twelve => 12,
            CdbSize::Sixteen => 16,
        }
    }
}

/// The direction of the data phase a command implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataDirection {
    /// No data transfer.
    NoData,
    /// Data-In: target to initiator (the iSCSI R bit).
    In,
    /// Data-Out: initiator to target (the iSCSI W bit).
    Out,
}

/// Encoded CDB bytes: up to 16 bytes without allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CdbBytes {
    buf: [u8; 16],
    len: u8,
}

impl CdbBytes {
    /// `len` zero bytes (clamped to 1..=16).
    pub fn zeroed(len: usize) -> CdbBytes {
        let len = len.clamp(1, 16);
        CdbBytes {
            buf: [0; 16],
            len: len as u8,
        }
    }

    /// The CDB.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&self.buf)
    }

    /// The CDB, mutable: tests use this to set reserved bits or the CONTROL
    /// byte after encoding.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = usize::from(self.len);
        match self.buf.get_mut(..len) {
            Some(s) => s,
            None => &mut [],
        }
    }

    /// The CDB zero-padded to 16 bytes: the SCSI Command Descriptor Block
    /// field of the iSCSI SCSI Command BHS (RFC 7143 §11.3.5).
    pub fn padded(&self) -> [u8; 16] {
        self.buf
    }
}

impl Deref for CdbBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for CdbBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl AsRef<[u8]> for CdbBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for CdbBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CdbBytes(")?;
        for (i, b) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// Why a CDB was rejected. Every variant maps to a sense via
/// [`CdbError::sense`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CdbError {
    /// No bytes at all.
    #[error("empty CDB")]
    Empty,
    /// Fewer bytes than the operation code's group requires.
    #[error("{opcode} CDB needs {needed} bytes, got {got}")]
    TooShort {
        /// The operation code.
        opcode: ScsiOpcode,
        /// Bytes the group requires.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// A field (or reserved bit) holds a value that must be rejected:
    /// `byte` is the offset of the field's first byte, `bit` its most
    /// significant bit (SPC-4 §4.5.2.4.2 field pointer).
    #[error("invalid field in CDB byte {byte}{}", bit.map(|b| format!(" bit {b}")).unwrap_or_default())]
    InvalidField {
        /// Byte offset in the CDB.
        byte: u16,
        /// Bit within the byte, if the field does not start at bit 7.
        bit: Option<u8>,
    },
}

impl CdbError {
    /// The CHECK CONDITION sense for this error: INVALID COMMAND OPERATION
    /// CODE for an empty CDB, INVALID FIELD IN CDB otherwise (with a field
    /// pointer when one is known).
    pub fn sense(&self) -> Sense {
        match *self {
            CdbError::Empty => Sense::invalid_command_operation_code(),
            CdbError::TooShort { .. } => {
                Sense::illegal_request(super::sense::Asc::INVALID_FIELD_IN_CDB)
            }
            CdbError::InvalidField { byte, bit } => Sense::invalid_field_in_cdb(byte, bit),
        }
    }
}

/// A decoded CDB. Field names follow SPC-4/SBC-4; flags are `bool`,
/// multi-bit fields are the raw field value (right-aligned).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cdb {
    /// TEST UNIT READY (SPC-4 §6.47).
    TestUnitReady,
    /// REQUEST SENSE (SPC-4 §6.39).
    RequestSense {
        /// DESC: descriptor-format sense wanted.
        desc: bool,
        /// ALLOCATION LENGTH.
        allocation_length: u8,
    },
    /// INQUIRY (SPC-4 §6.6).
    Inquiry {
        /// EVPD: a VPD page is requested.
        evpd: bool,
        /// PAGE CODE (must be 0 when EVPD is 0).
        page_code: u8,
        /// ALLOCATION LENGTH.
        allocation_length: u16,
    },
    /// READ(6)/(10)/(12)/(16) (SBC-4 §5.11–§5.14).
    Read {
        /// Which form.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// TRANSFER LENGTH in logical blocks (READ(6): 1..=256).
        blocks: u32,
        /// DPO: disable page out.
        dpo: bool,
        /// FUA: force unit access.
        fua: bool,
        /// RARC: rebuild assist recovery control (not in READ(6)).
        rarc: bool,
        /// RDPROTECT (3 bits).
        rdprotect: u8,
        /// GROUP NUMBER (6 bits).
        group: u8,
    },
    /// WRITE(6)/(10)/(12)/(16) (SBC-4 §5.38–§5.41).
    Write {
        /// Which form.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// TRANSFER LENGTH in logical blocks (WRITE(6): 1..=256).
        blocks: u32,
        /// DPO.
        dpo: bool,
        /// FUA.
        fua: bool,
        /// WRPROTECT (3 bits).
        wrprotect: u8,
        /// GROUP NUMBER.
        group: u8,
    },
    /// WRITE AND VERIFY(10)/(12)/(16) (SBC-4 §5.43–§5.45).
    WriteAndVerify {
        /// Ten, Twelve or Sixteen.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// TRANSFER LENGTH.
        blocks: u32,
        /// DPO.
        dpo: bool,
        /// BYTCHK (2 bits): 00b verify medium only, 01b compare, 11b compare
        /// one block against each.
        bytchk: u8,
        /// WRPROTECT.
        wrprotect: u8,
        /// GROUP NUMBER.
        group: u8,
    },
    /// VERIFY(10)/(12)/(16) (SBC-4 §5.34–§5.36).
    Verify {
        /// Ten, Twelve or Sixteen.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// VERIFICATION LENGTH.
        blocks: u32,
        /// DPO.
        dpo: bool,
        /// BYTCHK (2 bits), as in WRITE AND VERIFY.
        bytchk: u8,
        /// VRPROTECT.
        vrprotect: u8,
        /// GROUP NUMBER.
        group: u8,
    },
    /// PRE-FETCH(10)/(16) (SBC-4 §5.9, §5.10).
    PreFetch {
        /// Ten or Sixteen.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// PREFETCH LENGTH.
        blocks: u32,
        /// IMMED.
        immed: bool,
        /// GROUP NUMBER.
        group: u8,
    },
    /// SYNCHRONIZE CACHE(10)/(16) (SBC-4 §5.32, §5.33). The obsolete
    /// SYNC_NV bit is not decoded.
    SynchronizeCache {
        /// Ten or Sixteen.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS (0: to the end of the medium).
        blocks: u32,
        /// IMMED.
        immed: bool,
        /// GROUP NUMBER.
        group: u8,
    },
    /// WRITE SAME(10)/(16) (SBC-4 §5.46, §5.47).
    WriteSame {
        /// Ten or Sixteen.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS.
        blocks: u32,
        /// WRPROTECT.
        wrprotect: u8,
        /// ANCHOR.
        anchor: bool,
        /// UNMAP.
        unmap: bool,
        /// NDOB: no Data-Out buffer (WRITE SAME(16) only).
        ndob: bool,
        /// GROUP NUMBER.
        group: u8,
    },
    /// UNMAP (SBC-4 §5.31).
    Unmap {
        /// ANCHOR.
        anchor: bool,
        /// GROUP NUMBER.
        group: u8,
        /// PARAMETER LIST LENGTH.
        parameter_list_length: u16,
    },
    /// COMPARE AND WRITE (SBC-4 §5.3). The Data-Out buffer holds
    /// `2 * blocks` logical blocks: verify data, then write data.
    CompareAndWrite {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS.
        blocks: u8,
        /// WRPROTECT.
        wrprotect: u8,
        /// DPO.
        dpo: bool,
        /// FUA.
        fua: bool,
        /// GROUP NUMBER.
        group: u8,
    },
    /// ORWRITE(16) (SBC-4 §5.8).
    OrWrite {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// TRANSFER LENGTH.
        blocks: u32,
        /// ORPROTECT.
        orprotect: u8,
        /// DPO.
        dpo: bool,
        /// FUA.
        fua: bool,
        /// GROUP NUMBER.
        group: u8,
    },
    /// WRITE ATOMIC(16) (SBC-4 §5.48).
    WriteAtomic {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// TRANSFER LENGTH.
        blocks: u16,
        /// ATOMIC BOUNDARY.
        atomic_boundary: u16,
        /// WRPROTECT.
        wrprotect: u8,
        /// DPO.
        dpo: bool,
        /// FUA.
        fua: bool,
        /// GROUP NUMBER.
        group: u8,
    },
    /// READ CAPACITY(10) (SBC-4 §5.16). LBA and PMI are obsolete in SBC-4
    /// but still decoded.
    ReadCapacity10 {
        /// LOGICAL BLOCK ADDRESS (obsolete).
        lba: u32,
        /// PMI (obsolete).
        pmi: bool,
    },
    /// READ CAPACITY(16), SERVICE ACTION IN(16) / 0x10 (SBC-4 §5.17).
    ReadCapacity16 {
        /// LOGICAL BLOCK ADDRESS (obsolete).
        lba: u64,
        /// PMI (obsolete).
        pmi: bool,
        /// ALLOCATION LENGTH.
        allocation_length: u32,
    },
    /// GET LBA STATUS, SERVICE ACTION IN(16) / 0x12 (SBC-4 §5.7).
    GetLbaStatus {
        /// STARTING LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// ALLOCATION LENGTH.
        allocation_length: u32,
        /// REPORT TYPE (byte 14 bits 1..0, later SBC-4 revisions; 0 before).
        report_type: u8,
    },
    /// MODE SENSE(6)/(10) (SPC-4 §6.13, §6.14).
    ModeSense {
        /// Six or Ten.
        size: CdbSize,
        /// DBD: disable block descriptors.
        dbd: bool,
        /// LLBAA: long LBA block descriptors accepted (MODE SENSE(10) only).
        llbaa: bool,
        /// PC: page control (2 bits), see [`crate::scsi::mode::PageControl`].
        pc: u8,
        /// PAGE CODE (6 bits).
        page_code: u8,
        /// SUBPAGE CODE.
        subpage_code: u8,
        /// ALLOCATION LENGTH (one byte in MODE SENSE(6)).
        allocation_length: u16,
    },
    /// MODE SELECT(6)/(10) (SPC-4 §6.11, §6.12).
    ModeSelect {
        /// Six or Ten.
        size: CdbSize,
        /// PF: page format.
        pf: bool,
        /// SP: save pages.
        sp: bool,
        /// PARAMETER LIST LENGTH (one byte in MODE SELECT(6)).
        parameter_list_length: u16,
    },
    /// START STOP UNIT (SBC-4 §5.25).
    StartStopUnit {
        /// IMMED.
        immed: bool,
        /// POWER CONDITION MODIFIER (4 bits).
        power_condition_modifier: u8,
        /// POWER CONDITION (4 bits).
        power_condition: u8,
        /// NO_FLUSH.
        no_flush: bool,
        /// LOEJ: load/eject.
        loej: bool,
        /// START.
        start: bool,
    },
    /// READ DEFECT DATA(10)/(12) (SBC-4 §5.19, §5.20).
    ReadDefectData {
        /// Ten or Twelve.
        size: CdbSize,
        /// REQ_PLIST: the primary defect list is requested.
        req_plist: bool,
        /// REQ_GLIST: the grown defect list is requested.
        req_glist: bool,
        /// DEFECT LIST FORMAT (3 bits).
        format: u8,
        /// ADDRESS DESCRIPTOR INDEX (READ DEFECT DATA(12) only; 0 in the
        /// 10-byte form).
        address_descriptor_index: u32,
        /// ALLOCATION LENGTH.
        allocation_length: u32,
    },
    /// PREVENT ALLOW MEDIUM REMOVAL (SBC-4 §5.15).
    PreventAllowMediumRemoval {
        /// PREVENT (2 bits).
        prevent: u8,
    },
    /// RESERVE(6) (SPC-2 §7.21; obsolete since SPC-3). Bytes 1..5 are not
    /// decoded; [`crate::scsi::usage::check_reserved`] rejects them set.
    Reserve6,
    /// RELEASE(6) (SPC-2 §7.17).
    Release6,
    /// PERSISTENT RESERVE IN (SPC-4 §6.15).
    PersistentReserveIn {
        /// SERVICE ACTION.
        service_action: PrInServiceAction,
        /// ALLOCATION LENGTH.
        allocation_length: u16,
    },
    /// PERSISTENT RESERVE OUT (SPC-4 §6.16).
    PersistentReserveOut {
        /// SERVICE ACTION.
        service_action: PrOutServiceAction,
        /// SCOPE (4 bits; 0 = logical unit).
        scope: u8,
        /// TYPE.
        pr_type: PrType,
        /// PARAMETER LIST LENGTH.
        parameter_list_length: u32,
    },
    /// REPORT LUNS (SPC-4 §6.33).
    ReportLuns {
        /// SELECT REPORT.
        select_report: SelectReport,
        /// ALLOCATION LENGTH.
        allocation_length: u32,
    },
    /// REPORT SUPPORTED OPERATION CODES, MAINTENANCE IN / 0x0c (SPC-4 §6.35).
    ReportSupportedOpCodes {
        /// RCTD: return command timeouts descriptors.
        rctd: bool,
        /// REPORTING OPTIONS (3 bits), see [`crate::scsi::opcodes`].
        reporting_options: u8,
        /// REQUESTED OPERATION CODE.
        opcode: ScsiOpcode,
        /// REQUESTED SERVICE ACTION.
        service_action: u16,
        /// ALLOCATION LENGTH.
        allocation_length: u32,
    },
    /// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, MAINTENANCE IN / 0x0d
    /// (SPC-4 §6.37).
    ReportSupportedTmfs {
        /// REPD: return extended parameter data.
        repd: bool,
        /// ALLOCATION LENGTH.
        allocation_length: u32,
    },
    /// REPORT TARGET PORT GROUPS, MAINTENANCE IN / 0x0a (SPC-4 §6.36).
    ReportTargetPortGroups {
        /// PARAMETER DATA FORMAT (3 bits).
        parameter_data_format: u8,
        /// ALLOCATION LENGTH.
        allocation_length: u32,
    },
    /// THIRD-PARTY COPY OUT (0x83): EXTENDED COPY (LID1/LID4) and the token
    /// commands (SPC-4 §6.3, §6.4). Only the common fields are decoded.
    ExtendedCopy {
        /// SERVICE ACTION (5 bits).
        service_action: u8,
        /// PARAMETER LIST LENGTH.
        parameter_list_length: u32,
    },
    /// THIRD-PARTY COPY IN (0x84): RECEIVE COPY RESULTS and friends
    /// (SPC-4 §6.18–§6.22).
    ReceiveCopyResults {
        /// SERVICE ACTION (5 bits).
        service_action: u8,
        /// LIST IDENTIFIER: byte 2 for the LID1 actions (0x00, 0x01, 0x04),
        /// bytes 2..6 for the LID4 actions (0x05..0x07), 0 otherwise.
        list_identifier: u32,
        /// ALLOCATION LENGTH.
        allocation_length: u32,
    },
    /// SANITIZE (SBC-4 §5.30).
    Sanitize {
        /// IMMED.
        immed: bool,
        /// AUSE: allow unrestricted sanitize exit.
        ause: bool,
        /// SERVICE ACTION.
        service_action: u8,
        /// PARAMETER LIST LENGTH.
        parameter_list_length: u16,
    },
    /// A known service-action opcode (SERVICE ACTION IN(16), MAINTENANCE IN)
    /// with a service action this crate does not decode. SPC-4 practice is
    /// INVALID FIELD IN CDB pointing at byte 1 bit 4.
    UnsupportedServiceAction {
        /// The operation code.
        opcode: ScsiOpcode,
        /// The SERVICE ACTION field.
        service_action: u8,
    },
    /// An operation code this crate does not decode (it may still have a
    /// [`ScsiOpcode::name`]). Answer INVALID COMMAND OPERATION CODE.
    Unknown {
        /// The operation code.
        opcode: ScsiOpcode,
    },
}

/// Reads the LBA, transfer length and group number of a read/write-style
/// CDB in each of its sizes (SBC-4 §5: common layouts).
fn rw_fields(c: &[u8; 16], size: CdbSize) -> (u64, u32, u8) {
    match size {
        CdbSize::Six => {
            let lba = u64::from(c[1] & 0x1f) << 16 | u64::from(c[2]) << 8 | u64::from(c[3]);
            let blocks = if c[4] == 0 { 256 } else { u32::from(c[4]) };
            (lba, blocks, 0)
        }
        CdbSize::Ten => (u64::from(be32(c, 2)), u32::from(be16(c, 7)), c[6] & 0x3f),
        CdbSize::Twelve => (u64::from(be32(c, 2)), be32(c, 6), c[10] & 0x3f),
        CdbSize::Sixteen => (be64(c, 2), be32(c, 10), c[14] & 0x3f),
    }
}

/// Writes what [`rw_fields`] reads, truncating to the field widths.
fn put_rw(b: &mut [u8; 16], size: CdbSize, lba: u64, blocks: u32, group: u8) {
    match size {
        CdbSize::Six => {
            b[1] = (b[1] & 0xe0) | ((lba >> 16) as u8 & 0x1f);
            b[2] = (lba >> 8) as u8;
            b[3] = lba as u8;
            // 256 blocks is written as 0 (SBC-4 §5.14).
            b[4] = blocks as u8;
        }
        CdbSize::Ten => {
            b[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
            b[6] = group & 0x3f;
            b[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
        }
        CdbSize::Twelve => {
            b[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
            b[6..10].copy_from_slice(&blocks.to_be_bytes());
            b[10] = group & 0x3f;
        }
        CdbSize::Sixteen => {
            b[2..10].copy_from_slice(&lba.to_be_bytes());
            b[10..14].copy_from_slice(&blocks.to_be_bytes());
            b[14] = group & 0x3f;
        }
    }
}

fn flag(on: bool, mask: u8) -> u8 {
    if on { mask } else { 0 }
}

/// Byte 1 of the read/write family: PROTECT field (bits 7..5), DPO, FUA.
fn protect_dpo_fua(protect: u8, dpo: bool, fua: bool) -> u8 {
    (protect & 0x07) << 5 | flag(dpo, 0x10) | flag(fua, 0x08)
}

/// Sizes a two-size command (10/16) actually encodes as.
fn ten_or_sixteen(size: CdbSize) -> CdbSize {
    match size {
        CdbSize::Six | CdbSize::Ten => CdbSize::Ten,
        CdbSize::Twelve | CdbSize::Sixteen => CdbSize::Sixteen,
    }
}

/// Sizes of the VERIFY / WRITE AND VERIFY family (10/12/16).
fn no_six(size: CdbSize) -> CdbSize {
    match size {
        CdbSize::Six => CdbSize::Ten,
        other => other,
    }
}

/// MODE SENSE / MODE SELECT come in 6 and 10.
fn six_or_ten(size: CdbSize) -> CdbSize {
    match size {
        CdbSize::Six => CdbSize::Six,
        _ => CdbSize::Ten,
    }
}

impl Cdb {
    /// Decodes a CDB. See the module documentation for what is (not) checked.
    pub fn parse(cdb: &[u8]) -> Result<Cdb, CdbError> {
        let opcode = ScsiOpcode(*cdb.first().ok_or(CdbError::Empty)?);
        let Some(needed) = opcode.cdb_len() else {
            return Ok(Cdb::Unknown { opcode });
        };
        if cdb.len() < needed {
            return Err(CdbError::TooShort {
                opcode,
                needed,
                got: cdb.len(),
            });
        }
        // A zero-padded copy lets every field be read with constant indices.
        let mut c = [0u8; 16];
        if let (Some(dst), Some(src)) = (c.get_mut(..needed), cdb.get(..needed)) {
            dst.copy_from_slice(src);
        }
        let b1 = c[1];
        let sa = b1 & 0x1f;
        let protect = b1 >> 5;
        let dpo = b1 & 0x10 != 0;
        let fua = b1 & 0x08 != 0;
        let bytchk = (b1 >> 1) & 0x03;
        let size_of = |op: ScsiOpcode| match op.cdb_len() {
            Some(6) => CdbSize::Six,
            Some(10) => CdbSize::Ten,
            Some(12) => CdbSize::Twelve,
            _ => CdbSize::Sixteen,
        };
        let size = size_of(opcode);
        let (lba, blocks, group) = rw_fields(&c, size);

        Ok(match opcode {
            ScsiOpcode::TEST_UNIT_READY => Cdb::TestUnitReady,
            ScsiOpcode::REQUEST_SENSE => Cdb::RequestSense {
                desc: b1 & 0x01 != 0,
                allocation_length: c[4],
            },
            ScsiOpcode::INQUIRY => Cdb::Inquiry {
                evpd: b1 & 0x01 != 0,
                page_code: c[2],
                allocation_length: be16(&c, 3),
            },
            ScsiOpcode::READ_6 => Cdb::Read {
                size,
                lba,
                blocks,
                dpo: false,
                fua: false,
                rarc: false,
                rdprotect: 0,
                group: 0,
            },
            ScsiOpcode::READ_10 | ScsiOpcode::READ_12 | ScsiOpcode::READ_16 => Cdb::Read {
                size,
                lba,
                blocks,
                dpo,
                fua,
                rarc: b1 & 0x04 != 0,
                rdprotect: protect,
                group,
            },
            ScsiOpcode::WRITE_6 => Cdb::Write {
                size,
                lba,
                blocks,
                dpo: false,
                fua: false,
                wrprotect: 0,
                group: 0,
            },
            ScsiOpcode::WRITE_10 | ScsiOpcode::WRITE_12 | ScsiOpcode::WRITE_16 => Cdb::Write {
                size,
                lba,
                blocks,
                dpo,
                fua,
                wrprotect: protect,
                group,
            },
            ScsiOpcode::WRITE_AND_VERIFY_10
            | ScsiOpcode::WRITE_AND_VERIFY_12
            | ScsiOpcode::WRITE_AND_VERIFY_16 => Cdb::WriteAndVerify {
                size,
                lba,
                blocks,
                dpo,
                bytchk,
                wrprotect: protect,
                group,
            },
            ScsiOpcode::VERIFY_10 | ScsiOpcode::VERIFY_12 | ScsiOpcode::VERIFY_16 => Cdb::Verify {
                size,
                lba,
                blocks,
                dpo,
                bytchk,
                vrprotect: protect,
                group,
            },
            ScsiOpcode::PRE_FETCH_10 | ScsiOpcode::PRE_FETCH_16 => Cdb::PreFetch {
                size,
                lba,
                blocks,
                immed: b1 & 0x02 != 0,
                group,
            },
            ScsiOpcode::SYNCHRONIZE_CACHE_10 | ScsiOpcode::SYNCHRONIZE_CACHE_16 => {
                Cdb::SynchronizeCache {
                    size,
                    lba,
                    blocks,
                    immed: b1 & 0x02 != 0,
                    group,
                }
            }
            ScsiOpcode::WRITE_SAME_10 | ScsiOpcode::WRITE_SAME_16 => Cdb::WriteSame {
                size,
                lba,
                blocks,
                wrprotect: protect,
                anchor: b1 & 0x10 != 0,
                unmap: b1 & 0x08 != 0,
                ndob: size == CdbSize::Sixteen && b1 & 0x01 != 0,
                group,
            },
            ScsiOpcode::UNMAP => Cdb::Unmap {
                anchor: b1 & 0x01 != 0,
                group,
                parameter_list_length: be16(&c, 7),
            },
            ScsiOpcode::COMPARE_AND_WRITE => Cdb::CompareAndWrite {
                lba,
                blocks: c[13],
                wrprotect: protect,
                dpo,
                fua,
                group,
            },
            ScsiOpcode::ORWRITE_16 => Cdb::OrWrite {
                lba,
                blocks,
                orprotect: protect,
                dpo,
                fua,
                group,
            },
            ScsiOpcode::WRITE_ATOMIC_16 => Cdb::WriteAtomic {
                lba,
                blocks: be16(&c, 12),
                atomic_boundary: be16(&c, 10),
                wrprotect: protect,
                dpo,
                fua,
                group,
            },
            ScsiOpcode::READ_CAPACITY_10 => Cdb::ReadCapacity10 {
                lba: be32(&c, 2),
                pmi: c[8] & 0x01 != 0,
            },
            ScsiOpcode::SERVICE_ACTION_IN_16 => match sa {
                service_action::READ_CAPACITY_16 => Cdb::ReadCapacity16 {
                    lba: be64(&c, 2),
                    pmi: c[14] & 0x01 != 0,
                    allocation_length: be32(&c, 10),
                },
                service_action::GET_LBA_STATUS => Cdb::GetLbaStatus {
                    lba: be64(&c, 2),
                    allocation_length: be32(&c, 10),
                    report_type: c[14] & 0x03,
                },
                _ => Cdb::UnsupportedServiceAction {
                    opcode,
                    service_action: sa,
                },
            },
            ScsiOpcode::MODE_SENSE_6 | ScsiOpcode::MODE_SENSE_10 => Cdb::ModeSense {
                size,
                dbd: b1 & 0x08 != 0,
                llbaa: size == CdbSize::Ten && b1 & 0x10 != 0,
                pc: c[2] >> 6,
                page_code: c[2] & 0x3f,
                subpage_code: c[3],
                allocation_length: if size == CdbSize::Six {
                    u16::from(c[4])
                } else {
                    be16(&c, 7)
                },
            },
            ScsiOpcode::MODE_SELECT_6 | ScsiOpcode::MODE_SELECT_10 => Cdb::ModeSelect {
                size,
                pf: b1 & 0x10 != 0,
                sp: b1 & 0x01 != 0,
                parameter_list_length: if size == CdbSize::Six {
                    u16::from(c[4])
                } else {
                    be16(&c, 7)
                },
            },
            ScsiOpcode::START_STOP_UNIT => Cdb::StartStopUnit {
                immed: b1 & 0x01 != 0,
                power_condition_modifier: c[3] & 0x0f,
                power_condition: c[4] >> 4,
                no_flush: c[4] & 0x04 != 0,
                loej: c[4] & 0x02 != 0,
                start: c[4] & 0x01 != 0,
            },
            ScsiOpcode::READ_DEFECT_DATA_10 => Cdb::ReadDefectData {
                size,
                req_plist: c[2] & 0x10 != 0,
                req_glist: c[2] & 0x08 != 0,
                format: c[2] & 0x07,
                address_descriptor_index: 0,
                allocation_length: u32::from(be16(&c, 7)),
            },
            ScsiOpcode::READ_DEFECT_DATA_12 => Cdb::ReadDefectData {
                size,
                req_plist: b1 & 0x10 != 0,
                req_glist: b1 & 0x08 != 0,
                format: b1 & 0x07,
                address_descriptor_index: be32(&c, 2),
                allocation_length: be32(&c, 6),
            },
            ScsiOpcode::PREVENT_ALLOW_MEDIUM_REMOVAL => Cdb::PreventAllowMediumRemoval {
                prevent: c[4] & 0x03,
            },
            ScsiOpcode::RESERVE_6 => Cdb::Reserve6,
            ScsiOpcode::RELEASE_6 => Cdb::Release6,
            ScsiOpcode::PERSISTENT_RESERVE_IN => Cdb::PersistentReserveIn {
                service_action: PrInServiceAction(sa),
                allocation_length: be16(&c, 7),
            },
            ScsiOpcode::PERSISTENT_RESERVE_OUT => Cdb::PersistentReserveOut {
                service_action: PrOutServiceAction(sa),
                scope: c[2] >> 4,
                pr_type: PrType(c[2] & 0x0f),
                parameter_list_length: be32(&c, 5),
            },
            ScsiOpcode::REPORT_LUNS => Cdb::ReportLuns {
                select_report: SelectReport(c[2]),
                allocation_length: be32(&c, 6),
            },
            ScsiOpcode::MAINTENANCE_IN => match sa {
                service_action::REPORT_SUPPORTED_OPERATION_CODES => Cdb::ReportSupportedOpCodes {
                    rctd: c[2] & 0x80 != 0,
                    reporting_options: c[2] & 0x07,
                    opcode: ScsiOpcode(c[3]),
                    service_action: be16(&c, 4),
                    allocation_length: be32(&c, 6),
                },
                service_action::REPORT_SUPPORTED_TMFS => Cdb::ReportSupportedTmfs {
                    repd: c[2] & 0x80 != 0,
                    allocation_length: be32(&c, 6),
                },
                service_action::REPORT_TARGET_PORT_GROUPS => Cdb::ReportTargetPortGroups {
                    parameter_data_format: b1 >> 5,
                    allocation_length: be32(&c, 6),
                },
                _ => Cdb::UnsupportedServiceAction {
                    opcode,
                    service_action: sa,
                },
            },
            ScsiOpcode::EXTENDED_COPY => Cdb::ExtendedCopy {
                service_action: sa,
                parameter_list_length: be32(&c, 10),
            },
            ScsiOpcode::RECEIVE_COPY_RESULTS => Cdb::ReceiveCopyResults {
                service_action: sa,
                list_identifier: match sa {
                    0x00 | 0x01 | 0x04 => u32::from(c[2]),
                    0x05..=0x07 => be32(&c, 2),
                    _ => 0,
                },
                allocation_length: be32(&c, 10),
            },
            ScsiOpcode::SANITIZE => Cdb::Sanitize {
                immed: b1 & 0x80 != 0,
                ause: b1 & 0x20 != 0,
                service_action: sa,
                parameter_list_length: be16(&c, 7),
            },
            _ => Cdb::Unknown { opcode },
        })
    }

    /// Encodes the CDB with a zero CONTROL byte.
    pub fn encode(&self) -> CdbBytes {
        let mut b = [0u8; 16];
        let (opcode, size) = self.opcode_and_size();
        b[0] = opcode.0;
        match *self {
            Cdb::TestUnitReady | Cdb::Reserve6 | Cdb::Release6 | Cdb::Unknown { .. } => {}
            Cdb::RequestSense {
                desc,
                allocation_length,
            } => {
                b[1] = flag(desc, 0x01);
                b[4] = allocation_length;
            }
            Cdb::Inquiry {
                evpd,
                page_code,
                allocation_length,
            } => {
                b[1] = flag(evpd, 0x01);
                b[2] = page_code;
                b[3..5].copy_from_slice(&allocation_length.to_be_bytes());
            }
            Cdb::Read {
                lba,
                blocks,
                dpo,
                fua,
                rarc,
                rdprotect,
                group,
                ..
            } => {
                if size != CdbSize::Six {
                    b[1] = protect_dpo_fua(rdprotect, dpo, fua) | flag(rarc, 0x04);
                }
                put_rw(&mut b, size, lba, blocks, group);
            }
            Cdb::Write {
                lba,
                blocks,
                dpo,
                fua,
                wrprotect,
                group,
                ..
            } => {
                if size != CdbSize::Six {
                    b[1] = protect_dpo_fua(wrprotect, dpo, fua);
                }
                put_rw(&mut b, size, lba, blocks, group);
            }
            Cdb::WriteAndVerify {
                lba,
                blocks,
                dpo,
                bytchk,
                wrprotect: protect,
                group,
                ..
            }
            | Cdb::Verify {
                lba,
                blocks,
                dpo,
                bytchk,
                vrprotect: protect,
                group,
                ..
            } => {
                b[1] = protect_dpo_fua(protect, dpo, false) | (bytchk & 0x03) << 1;
                put_rw(&mut b, size, lba, blocks, group);
            }
            Cdb::PreFetch {
                lba,
                blocks,
                immed,
                group,
                ..
            }
            | Cdb::SynchronizeCache {
                lba,
                blocks,
                immed,
                group,
                ..
            } => {
                b[1] = flag(immed, 0x02);
                put_rw(&mut b, size, lba, blocks, group);
            }
            Cdb::WriteSame {
                lba,
                blocks,
                wrprotect,
                anchor,
                unmap,
                ndob,
                group,
                ..
            } => {
                b[1] = (wrprotect & 0x07) << 5
                    | flag(anchor, 0x10)
                    | flag(unmap, 0x08)
                    | flag(ndob && size == CdbSize::Sixteen, 0x01);
                put_rw(&mut b, size, lba, blocks, group);
            }
            Cdb::Unmap {
                anchor,
                group,
                parameter_list_length,
            } => {
                b[1] = flag(anchor, 0x01);
                b[6] = group & 0x3f;
                b[7..9].copy_from_slice(&parameter_list_length.to_be_bytes());
            }
            Cdb::CompareAndWrite {
                lba,
                blocks,
                wrprotect,
                dpo,
                fua,
                group,
            } => {
                b[1] = protect_dpo_fua(wrprotect, dpo, fua);
                b[2..10].copy_from_slice(&lba.to_be_bytes());
                b[13] = blocks;
                b[14] = group & 0x3f;
            }
            Cdb::OrWrite {
                lba,
                blocks,
                orprotect,
                dpo,
                fua,
                group,
            } => {
                b[1] = protect_dpo_fua(orprotect, dpo, fua);
                put_rw(&mut b, CdbSize::Sixteen, lba, blocks, group);
            }
            Cdb::WriteAtomic {
                lba,
                blocks,
                atomic_boundary,
                wrprotect,
                dpo,
                fua,
                group,
            } => {
                b[1] = protect_dpo_fua(wrprotect, dpo, fua);
                b[2..10].copy_from_slice(&lba.to_be_bytes());
                b[10..12].copy_from_slice(&atomic_boundary.to_be_bytes());
                b[12..14].copy_from_slice(&blocks.to_be_bytes());
                b[14] = group & 0x3f;
            }
            Cdb::ReadCapacity10 { lba, pmi } => {
                b[2..6].copy_from_slice(&lba.to_be_bytes());
                b[8] = flag(pmi, 0x01);
            }
            Cdb::ReadCapacity16 {
                lba,
                pmi,
                allocation_length,
            } => {
                b[1] = service_action::READ_CAPACITY_16;
                b[2..10].copy_from_slice(&lba.to_be_bytes());
                b[10..14].copy_from_slice(&allocation_length.to_be_bytes());
                b[14] = flag(pmi, 0x01);
            }
            Cdb::GetLbaStatus {
                lba,
                allocation_length,
                report_type,
            } => {
                b[1] = service_action::GET_LBA_STATUS;
                b[2..10].copy_from_slice(&lba.to_be_bytes());
                b[10..14].copy_from_slice(&allocation_length.to_be_bytes());
                b[14] = report_type & 0x03;
            }
            Cdb::ModeSense {
                dbd,
                llbaa,
                pc,
                page_code,
                subpage_code,
                allocation_length,
                ..
            } => {
                b[1] = flag(dbd, 0x08) | flag(llbaa && size == CdbSize::Ten, 0x10);
                b[2] = (pc & 0x03) << 6 | (page_code & 0x3f);
                b[3] = subpage_code;
                if size == CdbSize::Six {
                    b[4] = allocation_length as u8;
                } else {
                    b[7..9].copy_from_slice(&allocation_length.to_be_bytes());
                }
            }
            Cdb::ModeSelect {
                pf,
                sp,
                parameter_list_length,
                ..
            } => {
                b[1] = flag(pf, 0x10) | flag(sp, 0x01);
                if size == CdbSize::Six {
                    b[4] = parameter_list_length as u8;
                } else {
                    b[7..9].copy_from_slice(&parameter_list_length.to_be_bytes());
                }
            }
            Cdb::StartStopUnit {
                immed,
                power_condition_modifier,
                power_condition,
                no_flush,
                loej,
                start,
            } => {
                b[1] = flag(immed, 0x01);
                b[3] = power_condition_modifier & 0x0f;
                b[4] = (power_condition & 0x0f) << 4
                    | flag(no_flush, 0x04)
                    | flag(loej, 0x02)
                    | flag(start, 0x01);
            }
            Cdb::PreventAllowMediumRemoval { prevent } => b[4] = prevent & 0x03,
            Cdb::ReadDefectData {
                req_plist,
                req_glist,
                format,
                address_descriptor_index,
                allocation_length,
                ..
            } => {
                let bits = flag(req_plist, 0x10) | flag(req_glist, 0x08) | (format & 0x07);
                if size == CdbSize::Ten {
                    b[2] = bits;
                    let len = u16::try_from(allocation_length).unwrap_or(u16::MAX);
                    b[7..9].copy_from_slice(&len.to_be_bytes());
                } else {
                    b[1] = bits;
                    b[2..6].copy_from_slice(&address_descriptor_index.to_be_bytes());
                    b[6..10].copy_from_slice(&allocation_length.to_be_bytes());
                }
            }
            Cdb::PersistentReserveIn {
                service_action,
                allocation_length,
            } => {
                b[1] = service_action.0 & 0x1f;
                b[7..9].copy_from_slice(&allocation_length.to_be_bytes());
            }
            Cdb::PersistentReserveOut {
                service_action,
                scope,
                pr_type,
                parameter_list_length,
            } => {
                b[1] = service_action.0 & 0x1f;
                b[2] = (scope & 0x0f) << 4 | (pr_type.0 & 0x0f);
                b[5..9].copy_from_slice(&parameter_list_length.to_be_bytes());
            }
            Cdb::ReportLuns {
                select_report,
                allocation_length,
            } => {
                b[2] = select_report.0;
                b[6..10].copy_from_slice(&allocation_length.to_be_bytes());
            }
            Cdb::ReportSupportedOpCodes {
                rctd,
                reporting_options,
                opcode,
                service_action,
                allocation_length,
            } => {
                b[1] = service_action::REPORT_SUPPORTED_OPERATION_CODES;
                b[2] = flag(rctd, 0x80) | (reporting_options & 0x07);
                b[3] = opcode.0;
                b[4..6].copy_from_slice(&service_action.to_be_bytes());
                b[6..10].copy_from_slice(&allocation_length.to_be_bytes());
            }
            Cdb::ReportSupportedTmfs {
                repd,
                allocation_length,
            } => {
                b[1] = service_action::REPORT_SUPPORTED_TMFS;
                b[2] = flag(repd, 0x80);
                b[6..10].copy_from_slice(&allocation_length.to_be_bytes());
            }
            Cdb::ReportTargetPortGroups {
                parameter_data_format,
                allocation_length,
            } => {
                b[1] =
                    (parameter_data_format & 0x07) << 5 | service_action::REPORT_TARGET_PORT_GROUPS;
                b[6..10].copy_from_slice(&allocation_length.to_be_bytes());
            }
            Cdb::ExtendedCopy {
                service_action,
                parameter_list_length,
            } => {
                b[1] = service_action & 0x1f;
                b[10..14].copy_from_slice(&parameter_list_length.to_be_bytes());
            }
            Cdb::ReceiveCopyResults {
                service_action,
                list_identifier,
                allocation_length,
            } => {
                b[1] = service_action & 0x1f;
                match service_action & 0x1f {
                    0x00 | 0x01 | 0x04 => b[2] = list_identifier as u8,
                    0x05..=0x07 => b[2..6].copy_from_slice(&list_identifier.to_be_bytes()),
                    _ => {}
                }
                b[10..14].copy_from_slice(&allocation_length.to_be_bytes());
            }
            Cdb::Sanitize {
                immed,
                ause,
                service_action,
                parameter_list_length,
            } => {
                b[1] = flag(immed, 0x80) | flag(ause, 0x20) | (service_action & 0x1f);
                b[7..9].copy_from_slice(&parameter_list_length.to_be_bytes());
            }
            Cdb::UnsupportedServiceAction { service_action, .. } => b[1] = service_action & 0x1f,
        }
        let mut out = CdbBytes::zeroed(size.cdb_len());
        out.buf = b;
        // Bytes beyond the CDB length must stay zero so `padded()` is the
        // BHS field as sent.
        for x in out.buf.iter_mut().skip(size.cdb_len()) {
            *x = 0;
        }
        out
    }

    /// The operation code this value encodes to.
    pub fn opcode(&self) -> ScsiOpcode {
        self.opcode_and_size().0
    }

    fn opcode_and_size(&self) -> (ScsiOpcode, CdbSize) {
        use CdbSize::*;
        let pick = |size: CdbSize, ops: [ScsiOpcode; 4]| {
            let [six, ten, twelve, sixteen] = ops;
            match size {
                Six => (six, Six),
                Ten => (ten, Ten),
                Twelve => (twelve, Twelve),
                Sixteen => (sixteen, Sixteen),
            }
        };
        let fixed = |op: ScsiOpcode| {
            let size = match op.cdb_len() {
                Some(6) => Six,
                Some(10) => Ten,
                Some(12) => Twelve,
                _ => Sixteen,
            };
            (op, size)
        };
        match *self {
            Cdb::TestUnitReady => fixed(ScsiOpcode::TEST_UNIT_READY),
            Cdb::RequestSense { .. } => fixed(ScsiOpcode::REQUEST_SENSE),
            Cdb::Inquiry { .. } => fixed(ScsiOpcode::INQUIRY),
            Cdb::Read { size, .. } => pick(
                size,
                [
                    ScsiOpcode::READ_6,
                    ScsiOpcode::READ_10,
                    ScsiOpcode::READ_12,
                    ScsiOpcode::READ_16,
                ],
            ),
            Cdb::Write { size, .. } => pick(
                size,
                [
                    ScsiOpcode::WRITE_6,
                    ScsiOpcode::WRITE_10,
                    ScsiOpcode::WRITE_12,
                    ScsiOpcode::WRITE_16,
                ],
            ),
            Cdb::WriteAndVerify { size, .. } => pick(
                no_six(size),
                [
                    ScsiOpcode::WRITE_AND_VERIFY_10,
                    ScsiOpcode::WRITE_AND_VERIFY_10,
                    ScsiOpcode::WRITE_AND_VERIFY_12,
                    ScsiOpcode::WRITE_AND_VERIFY_16,
                ],
            ),
            Cdb::Verify { size, .. } => pick(
                no_six(size),
                [
                    ScsiOpcode::VERIFY_10,
                    ScsiOpcode::VERIFY_10,
                    ScsiOpcode::VERIFY_12,
                    ScsiOpcode::VERIFY_16,
                ],
            ),
            Cdb::PreFetch { size, .. } => pick(
                ten_or_sixteen(size),
                [
                    ScsiOpcode::PRE_FETCH_10,
                    ScsiOpcode::PRE_FETCH_10,
                    ScsiOpcode::PRE_FETCH_16,
                    ScsiOpcode::PRE_FETCH_16,
                ],
            ),
            Cdb::SynchronizeCache { size, .. } => pick(
                ten_or_sixteen(size),
                [
                    ScsiOpcode::SYNCHRONIZE_CACHE_10,
                    ScsiOpcode::SYNCHRONIZE_CACHE_10,
                    ScsiOpcode::SYNCHRONIZE_CACHE_16,
                    ScsiOpcode::SYNCHRONIZE_CACHE_16,
                ],
            ),
            Cdb::WriteSame { size, .. } => pick(
                ten_or_sixteen(size),
                [
                    ScsiOpcode::WRITE_SAME_10,
                    ScsiOpcode::WRITE_SAME_10,
                    ScsiOpcode::WRITE_SAME_16,
                    ScsiOpcode::WRITE_SAME_16,
                ],
            ),
            Cdb::ModeSense { size, .. } => pick(
                six_or_ten(size),
                [
                    ScsiOpcode::MODE_SENSE_6,
                    ScsiOpcode::MODE_SENSE_10,
                    ScsiOpcode::MODE_SENSE_10,
                    ScsiOpcode::MODE_SENSE_10,
                ],
            ),
            Cdb::ModeSelect { size, .. } => pick(
                six_or_ten(size),
                [
                    ScsiOpcode::MODE_SELECT_6,
                    ScsiOpcode::MODE_SELECT_10,
                    ScsiOpcode::MODE_SELECT_10,
                    ScsiOpcode::MODE_SELECT_10,
                ],
            ),
            Cdb::Unmap { .. } => fixed(ScsiOpcode::UNMAP),
            Cdb::CompareAndWrite { .. } => fixed(ScsiOpcode::COMPARE_AND_WRITE),
            Cdb::OrWrite { .. } => fixed(ScsiOpcode::ORWRITE_16),
            Cdb::WriteAtomic { .. } => fixed(ScsiOpcode::WRITE_ATOMIC_16),
            Cdb::ReadCapacity10 { .. } => fixed(ScsiOpcode::READ_CAPACITY_10),
            Cdb::ReadCapacity16 { .. } | Cdb::GetLbaStatus { .. } => {
                fixed(ScsiOpcode::SERVICE_ACTION_IN_16)
            }
            Cdb::StartStopUnit { .. } => fixed(ScsiOpcode::START_STOP_UNIT),
            Cdb::PreventAllowMediumRemoval { .. } => {
                fixed(ScsiOpcode::PREVENT_ALLOW_MEDIUM_REMOVAL)
            }
            Cdb::ReadDefectData { size, .. } => match size {
                Six | Ten => (ScsiOpcode::READ_DEFECT_DATA_10, Ten),
                Twelve | Sixteen => (ScsiOpcode::READ_DEFECT_DATA_12, Twelve),
            },
            Cdb::Reserve6 => fixed(ScsiOpcode::RESERVE_6),
            Cdb::Release6 => fixed(ScsiOpcode::RELEASE_6),
            Cdb::PersistentReserveIn { .. } => fixed(ScsiOpcode::PERSISTENT_RESERVE_IN),
            Cdb::PersistentReserveOut { .. } => fixed(ScsiOpcode::PERSISTENT_RESERVE_OUT),
            Cdb::ReportLuns { .. } => fixed(ScsiOpcode::REPORT_LUNS),
            Cdb::ReportSupportedOpCodes { .. }
            | Cdb::ReportSupportedTmfs { .. }
            | Cdb::ReportTargetPortGroups { .. } => fixed(ScsiOpcode::MAINTENANCE_IN),
            Cdb::ExtendedCopy { .. } => fixed(ScsiOpcode::EXTENDED_COPY),
            Cdb::ReceiveCopyResults { .. } => fixed(ScsiOpcode::RECEIVE_COPY_RESULTS),
            Cdb::Sanitize { .. } => fixed(ScsiOpcode::SANITIZE),
            Cdb::UnsupportedServiceAction { opcode, .. } | Cdb::Unknown { opcode } => fixed(opcode),
        }
    }

    /// Checks the values every device server must reject regardless of what
    /// it supports, returning the field pointer of the first offender:
    ///
    /// - INQUIRY with EVPD=0 and a non-zero PAGE CODE (SPC-4 §6.6.1);
    /// - WRITE SAME with ANCHOR=1 and UNMAP=0 (SBC-4 §5.46);
    /// - VERIFY / WRITE AND VERIFY with the reserved BYTCHK value 10b
    ///   (SBC-4 §5.34 table 79);
    /// - REPORT SUPPORTED OPERATION CODES with a reserved REPORTING OPTIONS
    ///   value (SPC-4 §6.35.1 table 256: 100b..111b);
    /// - SANITIZE with a reserved service action (SBC-4 §5.30.1).
    pub fn validate(&self) -> Result<(), CdbError> {
        let bad = |byte: u16, bit: u8| {
            Err(CdbError::InvalidField {
                byte,
                bit: Some(bit),
            })
        };
        match *self {
            Cdb::Inquiry {
                evpd: false,
                page_code,
                ..
            } if page_code != 0 => bad(2, 7),
            Cdb::WriteSame {
                anchor: true,
                unmap: false,
                ..
            } => bad(1, 4),
            Cdb::Verify { bytchk: 2, .. } | Cdb::WriteAndVerify { bytchk: 2, .. } => bad(1, 2),
            Cdb::ReportSupportedOpCodes {
                reporting_options, ..
            } if reporting_options > 3 => bad(2, 2),
            Cdb::Sanitize { service_action, .. }
                if !matches!(service_action, 0x01..=0x03 | 0x1f) =>
            {
                bad(1, 4)
            }
            _ => Ok(()),
        }
    }

    /// The direction of the data phase this command implies.
    pub fn data_direction(&self) -> DataDirection {
        match *self {
            Cdb::RequestSense { .. }
            | Cdb::Inquiry { .. }
            | Cdb::Read { .. }
            | Cdb::ModeSense { .. }
            | Cdb::ReadCapacity10 { .. }
            | Cdb::ReadCapacity16 { .. }
            | Cdb::GetLbaStatus { .. }
            | Cdb::PersistentReserveIn { .. }
            | Cdb::ReportLuns { .. }
            | Cdb::ReportSupportedOpCodes { .. }
            | Cdb::ReportSupportedTmfs { .. }
            | Cdb::ReportTargetPortGroups { .. }
            | Cdb::ReceiveCopyResults { .. }
            | Cdb::ReadDefectData { .. } => DataDirection::In,
            Cdb::Verify { bytchk: 0, .. } | Cdb::WriteSame { ndob: true, .. } => {
                DataDirection::NoData
            }
            Cdb::Write { .. }
            | Cdb::WriteAndVerify { .. }
            | Cdb::Verify { .. }
            | Cdb::WriteSame { .. }
            | Cdb::Unmap { .. }
            | Cdb::CompareAndWrite { .. }
            | Cdb::OrWrite { .. }
            | Cdb::WriteAtomic { .. }
            | Cdb::ModeSelect { .. }
            | Cdb::PersistentReserveOut { .. }
            | Cdb::ExtendedCopy { .. }
            | Cdb::Sanitize { .. } => DataDirection::Out,
            Cdb::TestUnitReady
            | Cdb::PreFetch { .. }
            | Cdb::SynchronizeCache { .. }
            | Cdb::StartStopUnit { .. }
            | Cdb::PreventAllowMediumRemoval { .. }
            | Cdb::Reserve6
            | Cdb::Release6
            | Cdb::UnsupportedServiceAction { .. }
            | Cdb::Unknown { .. } => DataDirection::NoData,
        }
    }

    /// The number of bytes the command transfers in its data phase, given
    /// the logical block length: the iSCSI Expected Data Transfer Length an
    /// initiator sends, and the length a target checks it against (for
    /// Data-In commands this is the allocation length, an upper bound).
    pub fn data_length(&self, block_length: u32) -> u64 {
        let bl = u64::from(block_length);
        match *self {
            Cdb::Read { blocks, .. }
            | Cdb::Write { blocks, .. }
            | Cdb::WriteAndVerify { blocks, .. }
            | Cdb::OrWrite { blocks, .. } => u64::from(blocks) * bl,
            Cdb::WriteAtomic { blocks, .. } => u64::from(blocks) * bl,
            Cdb::Verify { bytchk, blocks, .. } => match bytchk {
                0 => 0,
                3 => bl,
                _ => u64::from(blocks) * bl,
            },
            Cdb::WriteSame { ndob, .. } => {
                if ndob {
                    0
                } else {
                    bl
                }
            }
            Cdb::CompareAndWrite { blocks, .. } => 2 * u64::from(blocks) * bl,
            Cdb::RequestSense {
                allocation_length, ..
            } => u64::from(allocation_length),
            Cdb::Inquiry {
                allocation_length, ..
            }
            | Cdb::ModeSense {
                allocation_length, ..
            }
            | Cdb::PersistentReserveIn {
                allocation_length, ..
            } => u64::from(allocation_length),
            Cdb::ReadCapacity10 { .. } => 8,
            Cdb::ReadCapacity16 {
                allocation_length, ..
            }
            | Cdb::GetLbaStatus {
                allocation_length, ..
            }
            | Cdb::ReportLuns {
                allocation_length, ..
            }
            | Cdb::ReportSupportedOpCodes {
                allocation_length, ..
            }
            | Cdb::ReportSupportedTmfs {
                allocation_length, ..
            }
            | Cdb::ReportTargetPortGroups {
                allocation_length, ..
            }
            | Cdb::ReceiveCopyResults {
                allocation_length, ..
            }
            | Cdb::ReadDefectData {
                allocation_length, ..
            } => u64::from(allocation_length),
            Cdb::Unmap {
                parameter_list_length,
                ..
            }
            | Cdb::ModeSelect {
                parameter_list_length,
                ..
            }
            | Cdb::Sanitize {
                parameter_list_length,
                ..
            } => u64::from(parameter_list_length),
            Cdb::PersistentReserveOut {
                parameter_list_length,
                ..
            }
            | Cdb::ExtendedCopy {
                parameter_list_length,
                ..
            } => u64::from(parameter_list_length),
            Cdb::TestUnitReady
            | Cdb::PreFetch { .. }
            | Cdb::SynchronizeCache { .. }
            | Cdb::StartStopUnit { .. }
            | Cdb::PreventAllowMediumRemoval { .. }
            | Cdb::Reserve6
            | Cdb::Release6
            | Cdb::UnsupportedServiceAction { .. }
            | Cdb::Unknown { .. } => 0,
        }
    }

    /// READ of `blocks` blocks at `lba`, no flags.
    pub fn read(size: CdbSize, lba: u64, blocks: u32) -> Cdb {
        Cdb::Read {
            size,
            lba,
            blocks,
            dpo: false,
            fua: false,
            rarc: false,
            rdprotect: 0,
            group: 0,
        }
    }

    /// WRITE of `blocks` blocks at `lba`, with or without FUA.
    pub fn write(size: CdbSize, lba: u64, blocks: u32, fua: bool) -> Cdb {
        Cdb::Write {
            size,
            lba,
            blocks,
            dpo: false,
            fua,
            wrprotect: 0,
            group: 0,
        }
    }

    /// Standard INQUIRY (`page: None`) or a VPD page.
    pub fn inquiry(page: Option<u8>, allocation_length: u16) -> Cdb {
        Cdb::Inquiry {
            evpd: page.is_some(),
            page_code: page.unwrap_or(0),
            allocation_length,
        }
    }

    /// READ CAPACITY(16) asking for the 32-byte parameter data.
    pub fn read_capacity16() -> Cdb {
        Cdb::ReadCapacity16 {
            lba: 0,
            pmi: false,
            allocation_length: 32,
        }
    }

    /// REPORT LUNS, SELECT REPORT 0.
    pub fn report_luns(allocation_length: u32) -> Cdb {
        Cdb::ReportLuns {
            select_report: SelectReport::LOGICAL_UNITS,
            allocation_length,
        }
    }

    /// SYNCHRONIZE CACHE of the whole medium.
    pub fn synchronize_cache(size: CdbSize) -> Cdb {
        Cdb::SynchronizeCache {
            size,
            lba: 0,
            blocks: 0,
            immed: false,
            group: 0,
        }
    }

    /// MODE SENSE of current values of `page_code`/`subpage_code`, block
    /// descriptors included.
    pub fn mode_sense(
        size: CdbSize,
        page_code: u8,
        subpage_code: u8,
        allocation_length: u16,
    ) -> Cdb {
        Cdb::ModeSense {
            size,
            dbd: false,
            llbaa: false,
            pc: 0,
            page_code,
            subpage_code,
            allocation_length,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    #[test]
    fn read10_bytes() {
        let c = Cdb::Read {
            size: CdbSize::Ten,
            lba: 0x0102_0304,
            blocks: 0x0506,
            dpo: true,
            fua: true,
            rarc: false,
            rdprotect: 0,
            group: 0x07,
        };
        let b = c.encode();
        assert_eq!(&*b, &[0x28, 0x18, 1, 2, 3, 4, 0x07, 5, 6, 0]);
        assert_eq!(Cdb::parse(&b), Ok(c));
    }

    #[test]
    fn read6_zero_length_means_256() {
        let c = Cdb::parse(&[0x08, 0x1f, 0xff, 0xff, 0x00, 0x00]);
        assert_eq!(c, Ok(Cdb::read(CdbSize::Six, 0x1f_ffff, 256)));
        let b = Cdb::read(CdbSize::Six, 5, 256).encode();
        assert_eq!(&*b, &[0x08, 0, 0, 5, 0, 0]);
        // Flags bits in byte 1 above the LBA are not decoded in READ(6).
        assert_eq!(
            Cdb::parse(&[0x08, 0xe0, 0, 1, 1, 0]),
            Ok(Cdb::read(CdbSize::Six, 1, 1))
        );
    }

    #[test]
    fn write16_and_read_capacity16_bytes() {
        let b = Cdb::write(CdbSize::Sixteen, 0x1_0000_0000, 8, true).encode();
        assert_eq!(&*b, &[0x8a, 0x08, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]);
        let b = Cdb::read_capacity16().encode();
        assert_eq!(
            &*b,
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]
        );
        assert_eq!(b.padded().len(), 16);
    }

    #[test]
    fn inquiry_and_validate() {
        let b = Cdb::inquiry(Some(0x83), 0x1000).encode();
        assert_eq!(&*b, &[0x12, 0x01, 0x83, 0x10, 0x00, 0]);
        let bad = Cdb::parse(&[0x12, 0x00, 0x80, 0, 0xff, 0]);
        assert_eq!(
            bad.as_ref().map(Cdb::validate),
            Ok(Err(CdbError::InvalidField {
                byte: 2,
                bit: Some(7)
            }))
        );
        assert_eq!(Cdb::inquiry(None, 96).validate(), Ok(()));
    }

    #[test]
    fn write_same_anchor_without_unmap_is_invalid() {
        let c = Cdb::parse(&[0x93, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            c.map(|c| c.validate()),
            Ok(Err(CdbError::InvalidField {
                byte: 1,
                bit: Some(4)
            }))
        );
    }

    #[test]
    fn read_defect_data_bytes() {
        let c = Cdb::ReadDefectData {
            size: CdbSize::Ten,
            req_plist: true,
            req_glist: false,
            format: 3,
            address_descriptor_index: 0,
            allocation_length: 32,
        };
        assert_eq!(&*c.encode(), &[0x37, 0, 0x13, 0, 0, 0, 0, 0, 32, 0]);
        assert_eq!(c.data_direction(), DataDirection::In);
        let c12 = Cdb::ReadDefectData {
            size: CdbSize::Twelve,
            req_plist: false,
            req_glist: true,
            format: 5,
            address_descriptor_index: 7,
            allocation_length: 0x0102_0304,
        };
        assert_eq!(&*c12.encode(), &[0xb7, 0x0d, 0, 0, 0, 7, 1, 2, 3, 4, 0, 0]);
        assert_eq!(Cdb::parse(&c12.encode()), Ok(c12));
    }

    #[test]
    fn service_action_dispatch() {
        let mut b = [0u8; 16];
        b[0] = 0x9e;
        b[1] = 0x12;
        b[13] = 0x20;
        assert_eq!(
            Cdb::parse(&b),
            Ok(Cdb::GetLbaStatus {
                lba: 0,
                allocation_length: 0x20,
                report_type: 0
            })
        );
        b[1] = 0x11;
        assert_eq!(
            Cdb::parse(&b),
            Ok(Cdb::UnsupportedServiceAction {
                opcode: ScsiOpcode::SERVICE_ACTION_IN_16,
                service_action: 0x11
            })
        );
    }

    #[test]
    fn short_empty_and_unknown() {
        assert_eq!(Cdb::parse(&[]), Err(CdbError::Empty));
        assert_eq!(
            Cdb::parse(&[0x28, 0, 0]),
            Err(CdbError::TooShort {
                opcode: ScsiOpcode::READ_10,
                needed: 10,
                got: 3
            })
        );
        assert_eq!(
            Cdb::parse(&[0xc0]),
            Ok(Cdb::Unknown {
                opcode: ScsiOpcode(0xc0)
            })
        );
        assert_eq!(
            Cdb::parse(&[0x04, 0, 0, 0, 0, 0]),
            Ok(Cdb::Unknown {
                opcode: ScsiOpcode::FORMAT_UNIT
            })
        );
        // The padding of the 16-byte iSCSI CDB field is ignored.
        let mut padded = [0xffu8; 16];
        padded[..6].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
        assert_eq!(Cdb::parse(&padded), Ok(Cdb::TestUnitReady));
    }

    #[test]
    fn errors_map_to_sense() {
        let s = CdbError::InvalidField {
            byte: 1,
            bit: Some(4),
        }
        .sense();
        assert_eq!(s, Sense::invalid_field_in_cdb(1, Some(4)));
        assert_eq!(
            CdbError::Empty.sense().asc,
            super::super::sense::Asc::INVALID_COMMAND_OPERATION_CODE
        );
    }

    #[test]
    fn opcode_names() {
        assert_eq!(ScsiOpcode::from_name("READ(10)"), Some(ScsiOpcode::READ_10));
        assert_eq!(
            ScsiOpcode::from_name("write_same_16"),
            Some(ScsiOpcode::WRITE_SAME_16)
        );
        assert_eq!(format!("{:?}", ScsiOpcode(0xc5)), "ScsiOpcode(0xc5)");
        assert!(ScsiOpcode::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ScsiOpcode::READ_12.cdb_len(), Some(12));
        assert_eq!(ScsiOpcode::VARIABLE_LENGTH.cdb_len(), None);
    }

    #[test]
    fn data_lengths() {
        let caw = Cdb::CompareAndWrite {
            lba: 0,
            blocks: 2,
            wrprotect: 0,
            dpo: false,
            fua: false,
            group: 0,
        };
        assert_eq!(caw.data_length(512), 2048);
        assert_eq!(caw.data_direction(), DataDirection::Out);
        let verify = Cdb::Verify {
            size: CdbSize::Ten,
            lba: 0,
            blocks: 4,
            dpo: false,
            bytchk: 0,
            vrprotect: 0,
            group: 0,
        };
        assert_eq!(verify.data_direction(), DataDirection::NoData);
        assert_eq!(verify.data_length(512), 0);
        assert_eq!(Cdb::read(CdbSize::Sixteen, 0, 3).data_length(4096), 12288);
    }

    fn size4() -> impl Strategy<Value = CdbSize> {
        prop_oneof![
            Just(CdbSize::Six),
            Just(CdbSize::Ten),
            Just(CdbSize::Twelve),
            Just(CdbSize::Sixteen)
        ]
    }

    fn size_from(sizes: &'static [CdbSize]) -> impl Strategy<Value = CdbSize> {
        proptest::sample::select(sizes)
    }

    /// LBA/blocks/group limited to what `size` carries.
    fn rw(size: CdbSize) -> impl Strategy<Value = (CdbSize, u64, u32, u8)> {
        let (lba_max, blocks): (u64, std::ops::RangeInclusive<u32>) = match size {
            CdbSize::Six => (0x1f_ffff, 1..=256),
            CdbSize::Ten => (u64::from(u32::MAX), 0..=u32::from(u16::MAX)),
            CdbSize::Twelve => (u64::from(u32::MAX), 0..=u32::MAX),
            CdbSize::Sixteen => (u64::MAX, 0..=u32::MAX),
        };
        let group = if size == CdbSize::Six {
            0..=0u8
        } else {
            0..=0x3fu8
        };
        (Just(size), 0..=lba_max, blocks, group)
    }

    fn cdb_strategy() -> impl Strategy<Value = Cdb> {
        let flags = || (any::<bool>(), any::<bool>(), 0u8..8);
        prop_oneof![
            Just(Cdb::TestUnitReady),
            Just(Cdb::Reserve6),
            Just(Cdb::Release6),
            (any::<bool>(), any::<u8>()).prop_map(|(desc, allocation_length)| Cdb::RequestSense {
                desc,
                allocation_length
            }),
            (any::<bool>(), any::<u8>(), any::<u16>()).prop_map(
                |(evpd, page_code, allocation_length)| {
                    Cdb::Inquiry {
                        evpd,
                        page_code,
                        allocation_length,
                    }
                }
            ),
            (size4().prop_flat_map(rw), flags(), any::<bool>()).prop_map(
                |((size, lba, blocks, group), (dpo, fua, rdprotect), rarc)| {
                    let six = size == CdbSize::Six;
                    Cdb::Read {
                        size,
                        lba,
                        blocks,
                        dpo: dpo && !six,
                        fua: fua && !six,
                        rarc: rarc && !six,
                        rdprotect: if six { 0 } else { rdprotect },
                        group,
                    }
                }
            ),
            (size4().prop_flat_map(rw), flags()).prop_map(
                |((size, lba, blocks, group), (dpo, fua, wrprotect))| {
                    let six = size == CdbSize::Six;
                    Cdb::Write {
                        size,
                        lba,
                        blocks,
                        dpo: dpo && !six,
                        fua: fua && !six,
                        wrprotect: if six { 0 } else { wrprotect },
                        group,
                    }
                }
            ),
            (
                size_from(&[CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen]).prop_flat_map(rw),
                flags(),
                0u8..4,
                any::<bool>()
            )
                .prop_map(
                    |((size, lba, blocks, group), (dpo, _, protect), bytchk, verify)| {
                        if verify {
                            Cdb::Verify {
                                size,
                                lba,
                                blocks,
                                dpo,
                                bytchk,
                                vrprotect: protect,
                                group,
                            }
                        } else {
                            Cdb::WriteAndVerify {
                                size,
                                lba,
                                blocks,
                                dpo,
                                bytchk,
                                wrprotect: protect,
                                group,
                            }
                        }
                    }
                ),
            (
                size_from(&[CdbSize::Ten, CdbSize::Sixteen]).prop_flat_map(rw),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|((size, lba, blocks, group), immed, sync)| {
                    if sync {
                        Cdb::SynchronizeCache {
                            size,
                            lba,
                            blocks,
                            immed,
                            group,
                        }
                    } else {
                        Cdb::PreFetch {
                            size,
                            lba,
                            blocks,
                            immed,
                            group,
                        }
                    }
                }),
            (
                size_from(&[CdbSize::Ten, CdbSize::Sixteen]).prop_flat_map(rw),
                0u8..8,
                any::<bool>(),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(
                    |((size, lba, blocks, group), wrprotect, anchor, unmap, ndob)| {
                        Cdb::WriteSame {
                            size,
                            lba,
                            blocks,
                            wrprotect,
                            anchor,
                            unmap,
                            ndob: ndob && size == CdbSize::Sixteen,
                            group,
                        }
                    }
                ),
            (any::<bool>(), 0u8..0x40, any::<u16>()).prop_map(
                |(anchor, group, parameter_list_length)| {
                    Cdb::Unmap {
                        anchor,
                        group,
                        parameter_list_length,
                    }
                }
            ),
            (any::<u64>(), any::<u8>(), flags(), 0u8..0x40).prop_map(
                |(lba, blocks, (dpo, fua, wrprotect), group)| Cdb::CompareAndWrite {
                    lba,
                    blocks,
                    wrprotect,
                    dpo,
                    fua,
                    group
                }
            ),
            (any::<u64>(), any::<u32>(), flags(), 0u8..0x40).prop_map(
                |(lba, blocks, (dpo, fua, orprotect), group)| Cdb::OrWrite {
                    lba,
                    blocks,
                    orprotect,
                    dpo,
                    fua,
                    group
                }
            ),
            (any::<u64>(), any::<u16>(), any::<u16>(), flags(), 0u8..0x40).prop_map(
                |(lba, blocks, atomic_boundary, (dpo, fua, wrprotect), group)| Cdb::WriteAtomic {
                    lba,
                    blocks,
                    atomic_boundary,
                    wrprotect,
                    dpo,
                    fua,
                    group
                }
            ),
            (any::<u32>(), any::<bool>()).prop_map(|(lba, pmi)| Cdb::ReadCapacity10 { lba, pmi }),
            (any::<u64>(), any::<bool>(), any::<u32>()).prop_map(
                |(lba, pmi, allocation_length)| {
                    Cdb::ReadCapacity16 {
                        lba,
                        pmi,
                        allocation_length,
                    }
                }
            ),
            (any::<u64>(), any::<u32>(), 0u8..4).prop_map(
                |(lba, allocation_length, report_type)| {
                    Cdb::GetLbaStatus {
                        lba,
                        allocation_length,
                        report_type,
                    }
                }
            ),
            (
                any::<bool>(),
                any::<bool>(),
                0u8..4,
                0u8..0x40,
                any::<u8>(),
                any::<u16>(),
                any::<bool>()
            )
                .prop_map(|(dbd, llbaa, pc, page_code, subpage_code, alloc, ten)| {
                    Cdb::ModeSense {
                        size: if ten { CdbSize::Ten } else { CdbSize::Six },
                        dbd,
                        llbaa: llbaa && ten,
                        pc,
                        page_code,
                        subpage_code,
                        allocation_length: if ten { alloc } else { alloc & 0xff },
                    }
                }),
            (any::<bool>(), any::<bool>(), any::<u16>(), any::<bool>()).prop_map(
                |(pf, sp, len, ten)| {
                    Cdb::ModeSelect {
                        size: if ten { CdbSize::Ten } else { CdbSize::Six },
                        pf,
                        sp,
                        parameter_list_length: if ten { len } else { len & 0xff },
                    }
                }
            ),
            (
                any::<bool>(),
                0u8..16,
                0u8..16,
                any::<bool>(),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(
                    |(immed, power_condition_modifier, power_condition, no_flush, loej, start)| {
                        Cdb::StartStopUnit {
                            immed,
                            power_condition_modifier,
                            power_condition,
                            no_flush,
                            loej,
                            start,
                        }
                    }
                ),
            (0u8..4).prop_map(|prevent| Cdb::PreventAllowMediumRemoval { prevent }),
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                0u8..8,
                any::<u32>(),
                any::<u32>()
            )
                .prop_map(|(twelve, req_plist, req_glist, format, index, len)| {
                    Cdb::ReadDefectData {
                        size: if twelve {
                            CdbSize::Twelve
                        } else {
                            CdbSize::Ten
                        },
                        req_plist,
                        req_glist,
                        format,
                        address_descriptor_index: if twelve { index } else { 0 },
                        allocation_length: if twelve { len } else { len & 0xffff },
                    }
                }),
            (0u8..0x20, any::<u16>()).prop_map(|(sa, allocation_length)| {
                Cdb::PersistentReserveIn {
                    service_action: PrInServiceAction(sa),
                    allocation_length,
                }
            }),
            (0u8..0x20, 0u8..16, 0u8..16, any::<u32>()).prop_map(|(sa, scope, t, len)| {
                Cdb::PersistentReserveOut {
                    service_action: PrOutServiceAction(sa),
                    scope,
                    pr_type: PrType(t),
                    parameter_list_length: len,
                }
            }),
            (any::<u8>(), any::<u32>()).prop_map(|(s, allocation_length)| Cdb::ReportLuns {
                select_report: SelectReport(s),
                allocation_length
            }),
            (
                any::<bool>(),
                0u8..8,
                any::<u8>(),
                any::<u16>(),
                any::<u32>()
            )
                .prop_map(
                    |(rctd, reporting_options, op, service_action, allocation_length)| {
                        Cdb::ReportSupportedOpCodes {
                            rctd,
                            reporting_options,
                            opcode: ScsiOpcode(op),
                            service_action,
                            allocation_length,
                        }
                    }
                ),
            (any::<bool>(), any::<u32>()).prop_map(|(repd, allocation_length)| {
                Cdb::ReportSupportedTmfs {
                    repd,
                    allocation_length,
                }
            }),
            (0u8..8, any::<u32>()).prop_map(|(parameter_data_format, allocation_length)| {
                Cdb::ReportTargetPortGroups {
                    parameter_data_format,
                    allocation_length,
                }
            }),
            (0u8..0x20, any::<u32>()).prop_map(|(service_action, parameter_list_length)| {
                Cdb::ExtendedCopy {
                    service_action,
                    parameter_list_length,
                }
            }),
            (0u8..0x20, any::<u32>(), any::<u32>()).prop_map(
                |(service_action, id, allocation_length)| {
                    Cdb::ReceiveCopyResults {
                        service_action,
                        list_identifier: match service_action {
                            0x00 | 0x01 | 0x04 => id & 0xff,
                            0x05..=0x07 => id,
                            _ => 0,
                        },
                        allocation_length,
                    }
                }
            ),
            (any::<bool>(), any::<bool>(), 0u8..0x20, any::<u16>()).prop_map(
                |(immed, ause, service_action, parameter_list_length)| Cdb::Sanitize {
                    immed,
                    ause,
                    service_action,
                    parameter_list_length
                }
            ),
            prop_oneof![Just(0x9eu8), Just(0xa3u8)].prop_flat_map(|op| {
                (0u8..0x20)
                    .prop_filter("decoded service action", move |sa| {
                        if op == 0x9e {
                            !matches!(*sa, 0x10 | 0x12)
                        } else {
                            !matches!(*sa, 0x0a | 0x0c | 0x0d)
                        }
                    })
                    .prop_map(move |service_action| Cdb::UnsupportedServiceAction {
                        opcode: ScsiOpcode(op),
                        service_action,
                    })
            }),
            any::<u8>()
                .prop_filter("not a parsed opcode", |op| {
                    matches!(Cdb::parse(&[*op; 16]), Ok(Cdb::Unknown { .. }))
                })
                .prop_map(|op| Cdb::Unknown {
                    opcode: ScsiOpcode(op)
                }),
        ]
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(c in cdb_strategy()) {
            let bytes = c.encode();
            prop_assert_eq!(bytes.len(), c.opcode().cdb_len().unwrap_or(16));
            prop_assert_eq!(Cdb::parse(&bytes), Ok(c.clone()));
            // And through the padded 16-byte BHS field.
            prop_assert_eq!(Cdb::parse(&bytes.padded()), Ok(c));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(c) = Cdb::parse(&b) {
                let _ = c.validate();
                let _ = c.data_length(u32::MAX);
                let _ = c.encode();
            }
        }
    }
}
