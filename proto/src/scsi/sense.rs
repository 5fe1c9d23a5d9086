//! Sense data (SPC-4 §4.5): sense keys, additional sense codes and the fixed
//! and descriptor formats.
//!
//! [`Sense`] is the decoded meaning; [`Sense::encode_fixed`] (response codes
//! 0x70/0x71, SPC-4 §4.5.3) and [`Sense::encode_descriptor`] (0x72/0x73,
//! §4.5.2) produce the bytes a target puts after the two-byte SenseLength of
//! an iSCSI SCSI Response (RFC 7143 §11.4.7.2); [`Sense::parse`] accepts
//! either format. Which format to send is the target's business (the D_SENSE
//! bit of the Control mode page, or the DESC bit of REQUEST SENSE).
//!
//! Round trips: `parse(encode_descriptor(s)) == s` for every `s` whose
//! sense-key-specific variant matches its sense key (parsing interprets those
//! three bytes by sense key, SPC-4 §4.5.2.4). The fixed format cannot carry
//! an INFORMATION or COMMAND-SPECIFIC INFORMATION value wider than 32 bits;
//! such values are sent with VALID=0 / as zero, and a zero command-specific
//! field reads back as `None`.

use std::fmt;

use super::wire::{be16, be32, be64, bit, u8_at};

/// A sense key (SPC-4 §4.5.6, table 48), the low nibble of the sense key
/// byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SenseKey(pub u8);

impl SenseKey {
    /// No specific sense key information; also used for pure status reports.
    pub const NO_SENSE: SenseKey = SenseKey(0x00);
    /// The command completed with some recovery action.
    pub const RECOVERED_ERROR: SenseKey = SenseKey(0x01);
    /// The logical unit is not accessible.
    pub const NOT_READY: SenseKey = SenseKey(0x02);
    /// A flaw in the medium or recorded data.
    pub const MEDIUM_ERROR: SenseKey = SenseKey(0x03);
    /// A non-recoverable hardware failure.
    pub const HARDWARE_ERROR: SenseKey = SenseKey(0x04);
    /// An illegal value in the CDB or parameter data.
    pub const ILLEGAL_REQUEST: SenseKey = SenseKey(0x05);
    /// A unit attention condition (reset, parameters changed, …).
    pub const UNIT_ATTENTION: SenseKey = SenseKey(0x06);
    /// Access to data is blocked (write protect, …).
    pub const DATA_PROTECT: SenseKey = SenseKey(0x07);
    /// Blank or non-blank medium encountered (sequential and WORM devices).
    pub const BLANK_CHECK: SenseKey = SenseKey(0x08);
    /// Vendor specific.
    pub const VENDOR_SPECIFIC: SenseKey = SenseKey(0x09);
    /// An EXTENDED COPY command was aborted.
    pub const COPY_ABORTED: SenseKey = SenseKey(0x0a);
    /// The device server aborted the command (iSCSI digest errors, …).
    pub const ABORTED_COMMAND: SenseKey = SenseKey(0x0b);
    /// Obsolete (was EQUAL, SEARCH DATA commands); reserved in SPC-4.
    pub const EQUAL: SenseKey = SenseKey(0x0c);
    /// End of partition with data left in the buffer (sequential devices).
    pub const VOLUME_OVERFLOW: SenseKey = SenseKey(0x0d);
    /// Source data did not match the medium (VERIFY, COMPARE AND WRITE).
    pub const MISCOMPARE: SenseKey = SenseKey(0x0e);
    /// SPC-5: the command completed and sense data is informational.
    pub const COMPLETED: SenseKey = SenseKey(0x0f);

    /// The SPC-4 name of a sense key.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            SenseKey::NO_SENSE => "NO SENSE",
            SenseKey::RECOVERED_ERROR => "RECOVERED ERROR",
            SenseKey::NOT_READY => "NOT READY",
            SenseKey::MEDIUM_ERROR => "MEDIUM ERROR",
            SenseKey::HARDWARE_ERROR => "HARDWARE ERROR",
            SenseKey::ILLEGAL_REQUEST => "ILLEGAL REQUEST",
            SenseKey::UNIT_ATTENTION => "UNIT ATTENTION",
            SenseKey::DATA_PROTECT => "DATA PROTECT",
            SenseKey::BLANK_CHECK => "BLANK CHECK",
            SenseKey::VENDOR_SPECIFIC => "VENDOR SPECIFIC",
            SenseKey::COPY_ABORTED => "COPY ABORTED",
            SenseKey::ABORTED_COMMAND => "ABORTED COMMAND",
            SenseKey::EQUAL => "EQUAL",
            SenseKey::VOLUME_OVERFLOW => "VOLUME OVERFLOW",
            SenseKey::MISCOMPARE => "MISCOMPARE",
            SenseKey::COMPLETED => "COMPLETED",
            _ => return None,
        })
    }
}

impl fmt::Debug for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "SenseKey({:#04x})", self.0),
        }
    }
}

impl fmt::Display for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An additional sense code and qualifier, `ASC << 8 | ASCQ` (SPC-4 §4.5.6,
/// table 49 / Annex D).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Asc(pub u16);

/// Declares the named ASC/ASCQ constants and the description table from one
/// list, so the two cannot drift apart.
macro_rules! asc_table {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        impl Asc {
            $(
                #[doc = $text]
                pub const $name: Asc = Asc($value);
            )*
        }

        const ASC_TABLE: &[(Asc, &str)] = &[$((Asc($value), $text)),*];
    };
}

asc_table! {
    NO_ADDITIONAL_SENSE = 0x0000, "NO ADDITIONAL SENSE INFORMATION";
    LOGICAL_UNIT_NOT_READY = 0x0400, "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE";
    LOGICAL_UNIT_BECOMING_READY = 0x0401, "LOGICAL UNIT IS IN PROCESS OF BECOMING READY";
    LOGICAL_UNIT_NOT_READY_INIT_CMD_REQUIRED = 0x0402, "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED";
    LOGICAL_UNIT_NOT_READY_MANUAL_INTERVENTION = 0x0403, "LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED";
    LOGICAL_UNIT_NOT_READY_FORMAT_IN_PROGRESS = 0x0404, "LOGICAL UNIT NOT READY, FORMAT IN PROGRESS";
    LOGICAL_UNIT_NOT_ACCESSIBLE_TRANSITION = 0x040a, "LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION";
    LOGICAL_UNIT_NOT_ACCESSIBLE_STANDBY = 0x040b, "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE";
    LOGICAL_UNIT_NOT_ACCESSIBLE_UNAVAILABLE = 0x040c, "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE";
    LOGICAL_UNIT_NOT_READY_SANITIZE_IN_PROGRESS = 0x041b, "LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS";
    UNREACHABLE_COPY_TARGET = 0x0804, "LOGICAL UNIT COMMUNICATION FAILURE, UNREACHABLE COPY TARGET";
    WRITE_ERROR = 0x0c00, "WRITE ERROR";
    UNEXPECTED_UNSOLICITED_DATA = 0x0c0c, "WRITE ERROR - UNEXPECTED UNSOLICITED DATA";
    NOT_ENOUGH_UNSOLICITED_DATA = 0x0c0d, "WRITE ERROR - NOT ENOUGH UNSOLICITED DATA";
    THIRD_PARTY_DEVICE_FAILURE = 0x0d01, "THIRD PARTY DEVICE FAILURE";
    COPY_TARGET_DEVICE_NOT_REACHABLE = 0x0d02, "COPY TARGET DEVICE NOT REACHABLE";
    INCORRECT_COPY_TARGET_DEVICE_TYPE = 0x0d03, "INCORRECT COPY TARGET DEVICE TYPE";
    INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT = 0x0e03, "INVALID FIELD IN COMMAND INFORMATION UNIT";
    UNRECOVERED_READ_ERROR = 0x1100, "UNRECOVERED READ ERROR";
    READ_ERROR_FAILED_RETRANSMISSION = 0x1113, "READ ERROR - FAILED RETRANSMISSION REQUEST";
    PARAMETER_LIST_LENGTH_ERROR = 0x1a00, "PARAMETER LIST LENGTH ERROR";
    MISCOMPARE_DURING_VERIFY = 0x1d00, "MISCOMPARE DURING VERIFY OPERATION";
    INVALID_COMMAND_OPERATION_CODE = 0x2000, "INVALID COMMAND OPERATION CODE";
    LBA_OUT_OF_RANGE = 0x2100, "LOGICAL BLOCK ADDRESS OUT OF RANGE";
    INVALID_FIELD_IN_CDB = 0x2400, "INVALID FIELD IN CDB";
    LOGICAL_UNIT_NOT_SUPPORTED = 0x2500, "LOGICAL UNIT NOT SUPPORTED";
    INVALID_FIELD_IN_PARAMETER_LIST = 0x2600, "INVALID FIELD IN PARAMETER LIST";
    PARAMETER_NOT_SUPPORTED = 0x2601, "PARAMETER NOT SUPPORTED";
    PARAMETER_VALUE_INVALID = 0x2602, "PARAMETER VALUE INVALID";
    INVALID_RELEASE_OF_PERSISTENT_RESERVATION = 0x2604, "INVALID RELEASE OF PERSISTENT RESERVATION";
    TOO_MANY_TARGET_DESCRIPTORS = 0x2606, "TOO MANY TARGET DESCRIPTORS";
    UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE = 0x2607, "UNSUPPORTED TARGET DESCRIPTOR TYPE CODE";
    TOO_MANY_SEGMENT_DESCRIPTORS = 0x2608, "TOO MANY SEGMENT DESCRIPTORS";
    UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE = 0x2609, "UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE";
    WRITE_PROTECTED = 0x2700, "WRITE PROTECTED";
    HARDWARE_WRITE_PROTECTED = 0x2701, "HARDWARE WRITE PROTECTED";
    SOFTWARE_WRITE_PROTECTED = 0x2702, "LOGICAL UNIT SOFTWARE WRITE PROTECTED";
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT = 0x2707, "SPACE ALLOCATION FAILED WRITE PROTECT";
    NOT_READY_TO_READY_CHANGE = 0x2800, "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED";
    POWER_ON_RESET = 0x2900, "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED";
    POWER_ON_OCCURRED = 0x2901, "POWER ON OCCURRED";
    SCSI_BUS_RESET_OCCURRED = 0x2902, "SCSI BUS RESET OCCURRED";
    BUS_DEVICE_RESET = 0x2903, "BUS DEVICE RESET FUNCTION OCCURRED";
    DEVICE_INTERNAL_RESET = 0x2904, "DEVICE INTERNAL RESET";
    TRANSCEIVER_MODE_CHANGED_TO_SINGLE_ENDED = 0x2905, "TRANSCEIVER MODE CHANGED TO SINGLE-ENDED";
    TRANSCEIVER_MODE_CHANGED_TO_LVD = 0x2906, "TRANSCEIVER MODE CHANGED TO LVD";
    I_T_NEXUS_LOSS = 0x2907, "I_T NEXUS LOSS OCCURRED";
    PARAMETERS_CHANGED = 0x2a00, "PARAMETERS CHANGED";
    MODE_PARAMETERS_CHANGED = 0x2a01, "MODE PARAMETERS CHANGED";
    LOG_PARAMETERS_CHANGED = 0x2a02, "LOG PARAMETERS CHANGED";
    RESERVATIONS_PREEMPTED = 0x2a03, "RESERVATIONS PREEMPTED";
    RESERVATIONS_RELEASED = 0x2a04, "RESERVATIONS RELEASED";
    REGISTRATIONS_PREEMPTED = 0x2a05, "REGISTRATIONS PREEMPTED";
    ASYMMETRIC_ACCESS_STATE_CHANGED = 0x2a06, "ASYMMETRIC ACCESS STATE CHANGED";
    CAPACITY_DATA_HAS_CHANGED = 0x2a09, "CAPACITY DATA HAS CHANGED";
    COMMAND_SEQUENCE_ERROR = 0x2c00, "COMMAND SEQUENCE ERROR";
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = 0x2f00, "COMMANDS CLEARED BY ANOTHER INITIATOR";
    COMMANDS_CLEARED_BY_POWER_LOSS = 0x2f01, "COMMANDS CLEARED BY POWER LOSS NOTIFICATION";
    COMMANDS_CLEARED_BY_DEVICE_SERVER = 0x2f02, "COMMANDS CLEARED BY DEVICE SERVER";
    MEDIUM_FORMAT_CORRUPTED = 0x3100, "MEDIUM FORMAT CORRUPTED";
    THIN_PROVISIONING_SOFT_THRESHOLD_REACHED = 0x3807, "THIN PROVISIONING SOFT THRESHOLD REACHED";
    SAVING_PARAMETERS_NOT_SUPPORTED = 0x3900, "SAVING PARAMETERS NOT SUPPORTED";
    MEDIUM_NOT_PRESENT = 0x3a00, "MEDIUM NOT PRESENT";
    LOGICAL_UNIT_HAS_NOT_SELF_CONFIGURED = 0x3e00, "LOGICAL UNIT HAS NOT SELF-CONFIGURED YET";
    LOGICAL_UNIT_FAILURE = 0x3e01, "LOGICAL UNIT FAILURE";
    TARGET_OPERATING_CONDITIONS_CHANGED = 0x3f00, "TARGET OPERATING CONDITIONS HAVE CHANGED";
    MICROCODE_CHANGED = 0x3f01, "MICROCODE HAS BEEN CHANGED";
    INQUIRY_DATA_HAS_CHANGED = 0x3f03, "INQUIRY DATA HAS CHANGED";
    REPORTED_LUNS_DATA_HAS_CHANGED = 0x3f0e, "REPORTED LUNS DATA HAS CHANGED";
    INTERNAL_TARGET_FAILURE = 0x4400, "INTERNAL TARGET FAILURE";
    PROTOCOL_SERVICE_CRC_ERROR = 0x4705, "PROTOCOL SERVICE CRC ERROR";
    INITIATOR_DETECTED_ERROR = 0x4800, "INITIATOR DETECTED ERROR MESSAGE RECEIVED";
    INVALID_MESSAGE_ERROR = 0x4900, "INVALID MESSAGE ERROR";
    DATA_PHASE_ERROR = 0x4b00, "DATA PHASE ERROR";
    TOO_MUCH_WRITE_DATA = 0x4b02, "TOO MUCH WRITE DATA";
    DATA_OFFSET_ERROR = 0x4b05, "DATA OFFSET ERROR";
    INITIATOR_RESPONSE_TIMEOUT = 0x4b06, "INITIATOR RESPONSE TIMEOUT";
    OVERLAPPED_COMMANDS_ATTEMPTED = 0x4e00, "OVERLAPPED COMMANDS ATTEMPTED";
    MEDIUM_REMOVAL_PREVENTED = 0x5302, "MEDIUM REMOVAL PREVENTED";
    SYSTEM_RESOURCE_FAILURE = 0x5500, "SYSTEM RESOURCE FAILURE";
    INSUFFICIENT_RESERVATION_RESOURCES = 0x5502, "INSUFFICIENT RESERVATION RESOURCES";
    INSUFFICIENT_RESOURCES = 0x5503, "INSUFFICIENT RESOURCES";
    INSUFFICIENT_REGISTRATION_RESOURCES = 0x5504, "INSUFFICIENT REGISTRATION RESOURCES";
    FAILURE_PREDICTION_THRESHOLD_EXCEEDED = 0x5d00, "FAILURE PREDICTION THRESHOLD EXCEEDED";
    FAILURE_PREDICTION_THRESHOLD_EXCEEDED_FALSE = 0x5dff, "FAILURE PREDICTION THRESHOLD EXCEEDED (FALSE)";
}

impl Asc {
    /// Builds a code from its two bytes.
    pub const fn new(asc: u8, ascq: u8) -> Asc {
        Asc((asc as u16) << 8 | ascq as u16)
    }

    /// The ADDITIONAL SENSE CODE byte.
    pub const fn asc(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// The ADDITIONAL SENSE CODE QUALIFIER byte.
    pub const fn ascq(self) -> u8 {
        self.0 as u8
    }

    /// The SPC-4 description of a code this crate names.
    pub fn description(self) -> Option<&'static str> {
        ASC_TABLE
            .iter()
            .find(|(code, _)| *code == self)
            .map(|(_, text)| *text)
    }

    /// Every named code with its description, in ascending order.
    pub fn all() -> impl Iterator<Item = (Asc, &'static str)> {
        ASC_TABLE.iter().copied()
    }
}

impl fmt::Debug for Asc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(d) => write!(f, "Asc({:#06x} {d})", self.0),
            None => write!(f, "Asc({:#06x})", self.0),
        }
    }
}

impl fmt::Display for Asc {
    /// The description, or `ASC 0xNN ASCQ 0xNN` for codes without a name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(d) => f.write_str(d),
            None => write!(f, "ASC {:#04x} ASCQ {:#04x}", self.asc(), self.ascq()),
        }
    }
}

/// The three SENSE KEY SPECIFIC bytes (SPC-4 §4.5.2.4), decoded according to
/// the sense key they accompany. Encoding always sets SKSV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SenseKeySpecific {
    /// ILLEGAL REQUEST: which byte (and bit) of the CDB or parameter data is
    /// wrong (§4.5.2.4.2).
    FieldPointer {
        /// C/D: true if the error is in the CDB, false if in parameter data.
        cd: bool,
        /// The bit within the byte (0–7), if reported (BPV).
        bit: Option<u8>,
        /// The byte offset of the (first byte of the) field in error.
        field: u16,
    },
    /// RECOVERED ERROR, HARDWARE ERROR, MEDIUM ERROR: retries attempted
    /// (§4.5.2.4.3).
    ActualRetryCount(u16),
    /// NO SENSE, NOT READY: fraction of an operation done, in 1/65536ths
    /// (§4.5.2.4.4).
    Progress(u16),
    /// COPY ABORTED: where in the parameter data or segment descriptor the
    /// error is (§4.5.2.4.5).
    SegmentPointer {
        /// SD: true if the pointer is relative to a segment descriptor.
        sd: bool,
        /// The bit within the byte, if reported (BPV).
        bit: Option<u8>,
        /// Byte offset.
        field: u16,
    },
    /// UNIT ATTENTION: the unit attention condition queue overflowed
    /// (§4.5.2.4.6).
    UnitAttentionOverflow(bool),
    /// Any other sense key: the three bytes with SKSV masked off.
    Raw([u8; 3]),
}

impl SenseKeySpecific {
    /// The three bytes, SKSV set.
    pub fn encode(&self) -> [u8; 3] {
        let ptr = |flag: u8, bit: Option<u8>, field: u16| {
            let [hi, lo] = field.to_be_bytes();
            let b0 = match bit {
                Some(b) => 0x80 | flag | 0x08 | (b & 0x07),
                None => 0x80 | flag,
            };
            [b0, hi, lo]
        };
        match *self {
            SenseKeySpecific::FieldPointer { cd, bit, field } => {
                ptr(if cd { 0x40 } else { 0 }, bit, field)
            }
            SenseKeySpecific::SegmentPointer { sd, bit, field } => {
                ptr(if sd { 0x20 } else { 0 }, bit, field)
            }
            SenseKeySpecific::ActualRetryCount(n) | SenseKeySpecific::Progress(n) => {
                let [hi, lo] = n.to_be_bytes();
                [0x80, hi, lo]
            }
            SenseKeySpecific::UnitAttentionOverflow(o) => [0x80 | u8::from(o), 0, 0],
            SenseKeySpecific::Raw([a, b, c]) => [0x80 | (a & 0x7f), b, c],
        }
    }

    /// Decodes the three bytes for `key`; `None` if SKSV is clear.
    pub fn decode(key: SenseKey, b: [u8; 3]) -> Option<SenseKeySpecific> {
        let [b0, b1, b2] = b;
        if b0 & 0x80 == 0 {
            return None;
        }
        let field = u16::from_be_bytes([b1, b2]);
        let bit = (b0 & 0x08 != 0).then_some(b0 & 0x07);
        Some(match key {
            SenseKey::ILLEGAL_REQUEST => SenseKeySpecific::FieldPointer {
                cd: b0 & 0x40 != 0,
                bit,
                field,
            },
            SenseKey::COPY_ABORTED => SenseKeySpecific::SegmentPointer {
                sd: b0 & 0x20 != 0,
                bit,
                field,
            },
            SenseKey::RECOVERED_ERROR | SenseKey::HARDWARE_ERROR | SenseKey::MEDIUM_ERROR => {
                SenseKeySpecific::ActualRetryCount(field)
            }
            SenseKey::NO_SENSE | SenseKey::NOT_READY => SenseKeySpecific::Progress(field),
            SenseKey::UNIT_ATTENTION => SenseKeySpecific::UnitAttentionOverflow(b0 & 0x01 != 0),
            _ => SenseKeySpecific::Raw([b0 & 0x7f, b1, b2]),
        })
    }
}

/// Why sense bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SenseError {
    /// Fewer bytes than the format's fixed part (8 for descriptor format,
    /// 14 for fixed format: up to the ASCQ).
    #[error("sense data too short: {len} bytes")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// A RESPONSE CODE other than 0x70–0x73 (0x7f is vendor specific).
    #[error("unsupported sense response code {0:#04x}")]
    ResponseCode(u8),
}

/// Decoded sense data (SPC-4 §4.5). Plain data: build with the constructors
/// or a struct literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Sense {
    /// Deferred error (response code 0x71/0x73) rather than current.
    pub deferred: bool,
    /// The sense key.
    pub key: SenseKey,
    /// ASC and ASCQ.
    pub asc: Asc,
    /// The INFORMATION field (fixed: VALID=1; descriptor: information
    /// descriptor 0x00), e.g. the failing LBA or miscompare offset.
    pub information: Option<u64>,
    /// COMMAND-SPECIFIC INFORMATION (fixed bytes 8..12; descriptor 0x01).
    pub command_specific: Option<u64>,
    /// SENSE KEY SPECIFIC (fixed bytes 15..18; descriptor 0x02).
    pub sense_key_specific: Option<SenseKeySpecific>,
    /// FIELD REPLACEABLE UNIT CODE; 0 means none (descriptor 0x03).
    pub fru: u8,
    /// FILEMARK (sequential devices; descriptor 0x04).
    pub filemark: bool,
    /// EOM (sequential devices; descriptor 0x04).
    pub eom: bool,
    /// ILI, incorrect length indicator (descriptor 0x04 or 0x05).
    pub ili: bool,
}

/// Sense data descriptor types (SPC-4 §4.5.2.1, table 27).
pub mod descriptor_type {
    /// Information (§4.5.2.2).
    pub const INFORMATION: u8 = 0x00;
    /// Command-specific information (§4.5.2.3).
    pub const COMMAND_SPECIFIC: u8 = 0x01;
    /// Sense key specific (§4.5.2.4).
    pub const SENSE_KEY_SPECIFIC: u8 = 0x02;
    /// Field replaceable unit (§4.5.2.5).
    pub const FIELD_REPLACEABLE_UNIT: u8 = 0x03;
    /// Stream commands (SSC-4).
    pub const STREAM_COMMANDS: u8 = 0x04;
    /// Block commands (SBC-4 §4.18.2).
    pub const BLOCK_COMMANDS: u8 = 0x05;
}

impl Sense {
    /// Current sense with `key` and `asc` and nothing else.
    pub fn new(key: SenseKey, asc: Asc) -> Sense {
        Sense {
            key,
            asc,
            ..Sense::default()
        }
    }

    /// ILLEGAL REQUEST with `asc`.
    pub fn illegal_request(asc: Asc) -> Sense {
        Sense::new(SenseKey::ILLEGAL_REQUEST, asc)
    }

    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub fn invalid_command_operation_code() -> Sense {
        Sense::illegal_request(Asc::INVALID_COMMAND_OPERATION_CODE)
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB, with a field pointer to `byte`
    /// (and `bit`, the most significant bit of the field, when given).
    pub fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            sense_key_specific: Some(SenseKeySpecific::FieldPointer {
                cd: true,
                bit,
                field: byte,
            }),
            ..Sense::illegal_request(Asc::INVALID_FIELD_IN_CDB)
        }
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST, with a field pointer
    /// into the parameter data.
    pub fn invalid_field_in_parameter_list(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            sense_key_specific: Some(SenseKeySpecific::FieldPointer {
                cd: false,
                bit,
                field: byte,
            }),
            ..Sense::illegal_request(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
        }
    }

    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR.
    pub fn parameter_list_length_error() -> Sense {
        Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR)
    }

    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE, INFORMATION set
    /// to the offending LBA.
    pub fn lba_out_of_range(lba: u64) -> Sense {
        Sense::illegal_request(Asc::LBA_OUT_OF_RANGE).with_information(lba)
    }

    /// ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
    pub fn logical_unit_not_supported() -> Sense {
        Sense::illegal_request(Asc::LOGICAL_UNIT_NOT_SUPPORTED)
    }

    /// UNIT ATTENTION with `asc`.
    pub fn unit_attention(asc: Asc) -> Sense {
        Sense::new(SenseKey::UNIT_ATTENTION, asc)
    }

    /// NOT READY with `asc`.
    pub fn not_ready(asc: Asc) -> Sense {
        Sense::new(SenseKey::NOT_READY, asc)
    }

    /// MEDIUM ERROR with `asc`, INFORMATION set to the failing LBA.
    pub fn medium_error(asc: Asc, lba: u64) -> Sense {
        Sense::new(SenseKey::MEDIUM_ERROR, asc).with_information(lba)
    }

    /// DATA PROTECT with `asc` (e.g. [`Asc::WRITE_PROTECTED`]).
    pub fn data_protect(asc: Asc) -> Sense {
        Sense::new(SenseKey::DATA_PROTECT, asc)
    }

    /// ABORTED COMMAND with `asc` (e.g. [`Asc::PROTOCOL_SERVICE_CRC_ERROR`]
    /// for an iSCSI data digest error, RFC 7143 §11.4.7.2).
    pub fn aborted_command(asc: Asc) -> Sense {
        Sense::new(SenseKey::ABORTED_COMMAND, asc)
    }

    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION, INFORMATION set to the
    /// byte offset of the first miscompare (SBC-4 §5.3, §5.35).
    pub fn miscompare(offset: u64) -> Sense {
        Sense::new(SenseKey::MISCOMPARE, Asc::MISCOMPARE_DURING_VERIFY).with_information(offset)
    }

    /// The same sense with INFORMATION set.
    pub fn with_information(mut self, information: u64) -> Sense {
        self.information = Some(information);
        self
    }

    /// Encodes in fixed format or descriptor format.
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            self.encode_descriptor()
        } else {
            self.encode_fixed()
        }
    }

    /// Fixed format, 18 bytes (SPC-4 §4.5.3, table 36).
    pub fn encode_fixed(&self) -> Vec<u8> {
        let mut b = vec![0u8; 18];
        let info = self.information.and_then(|i| u32::try_from(i).ok());
        b[0] = if self.deferred { 0x71 } else { 0x70 } | if info.is_some() { 0x80 } else { 0 };
        b[2] = (self.key.0 & 0x0f)
            | if self.filemark { 0x80 } else { 0 }
            | if self.eom { 0x40 } else { 0 }
            | if self.ili { 0x20 } else { 0 };
        b[3..7].copy_from_slice(&info.unwrap_or(0).to_be_bytes());
        b[7] = 10;
        let csi = self
            .command_specific
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0);
        b[8..12].copy_from_slice(&csi.to_be_bytes());
        b[12] = self.asc.asc();
        b[13] = self.asc.ascq();
        b[14] = self.fru;
        if let Some(sks) = &self.sense_key_specific {
            b[15..18].copy_from_slice(&sks.encode());
        }
        b
    }

    /// Descriptor format (SPC-4 §4.5.2): 8-byte header plus an information,
    /// command-specific, sense key specific, FRU and stream/block commands
    /// descriptor for each field that is set, in that order.
    pub fn encode_descriptor(&self) -> Vec<u8> {
        let mut b = vec![
            if self.deferred { 0x73 } else { 0x72 },
            self.key.0 & 0x0f,
            self.asc.asc(),
            self.asc.ascq(),
            0,
            0,
            0,
            0,
        ];
        if let Some(info) = self.information {
            b.extend_from_slice(&[descriptor_type::INFORMATION, 0x0a, 0x80, 0]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(csi) = self.command_specific {
            b.extend_from_slice(&[descriptor_type::COMMAND_SPECIFIC, 0x0a, 0, 0]);
            b.extend_from_slice(&csi.to_be_bytes());
        }
        if let Some(sks) = &self.sense_key_specific {
            b.extend_from_slice(&[descriptor_type::SENSE_KEY_SPECIFIC, 0x06, 0, 0]);
            b.extend_from_slice(&sks.encode());
            b.push(0);
        }
        if self.fru != 0 {
            b.extend_from_slice(&[descriptor_type::FIELD_REPLACEABLE_UNIT, 0x02, 0, self.fru]);
        }
        let flags = if self.filemark { 0x80 } else { 0 }
            | if self.eom { 0x40 } else { 0 }
            | if self.ili { 0x20 } else { 0 };
        if self.filemark || self.eom {
            b.extend_from_slice(&[descriptor_type::STREAM_COMMANDS, 0x02, 0, flags]);
        } else if self.ili {
            b.extend_from_slice(&[descriptor_type::BLOCK_COMMANDS, 0x02, 0, flags]);
        }
        // Additional sense length: at most 244 bytes of descriptors fit; ours
        // never exceed 44.
        b[7] = u8::try_from(b.len() - 8).unwrap_or(u8::MAX);
        b
    }

    /// Decodes fixed (0x70/0x71) or descriptor (0x72/0x73) sense data.
    ///
    /// Truncated data (an allocation length shorter than the sense data) is
    /// accepted as long as the key and ASC/ASCQ are present: fields beyond
    /// the end, and a descriptor cut short, are left unset. Unknown
    /// descriptor types are skipped.
    pub fn parse(b: &[u8]) -> Result<Sense, SenseError> {
        let code = b.first().ok_or(SenseError::TooShort { len: 0 })? & 0x7f;
        match code {
            0x70 | 0x71 => Sense::parse_fixed(b, code == 0x71),
            0x72 | 0x73 => Sense::parse_descriptor(b, code == 0x73),
            other => Err(SenseError::ResponseCode(other)),
        }
    }

    fn parse_fixed(b: &[u8], deferred: bool) -> Result<Sense, SenseError> {
        if b.len() < 14 {
            return Err(SenseError::TooShort { len: b.len() });
        }
        let key = SenseKey(u8_at(b, 2) & 0x0f);
        // The additional sense length bounds the optional fields; a device
        // that sends 18 bytes but claims fewer gets what it claims.
        let end = b.len().min(8 + usize::from(u8_at(b, 7)));
        let csi = be32(b, 8);
        let sense_key_specific = if end >= 18 {
            SenseKeySpecific::decode(key, [u8_at(b, 15), u8_at(b, 16), u8_at(b, 17)])
        } else {
            None
        };
        Ok(Sense {
            deferred,
            key,
            asc: Asc(be16(b, 12)),
            information: bit(b, 0, 0x80).then(|| u64::from(be32(b, 3))),
            command_specific: (end >= 12 && csi != 0).then_some(u64::from(csi)),
            sense_key_specific,
            fru: if end >= 15 { u8_at(b, 14) } else { 0 },
            filemark: bit(b, 2, 0x80),
            eom: bit(b, 2, 0x40),
            ili: bit(b, 2, 0x20),
        })
    }

    fn parse_descriptor(b: &[u8], deferred: bool) -> Result<Sense, SenseError> {
        if b.len() < 8 {
            return Err(SenseError::TooShort { len: b.len() });
        }
        let key = SenseKey(u8_at(b, 1) & 0x0f);
        let mut s = Sense {
            deferred,
            key,
            asc: Asc(be16(b, 2)),
            ..Sense::default()
        };
        let end = b.len().min(8 + usize::from(u8_at(b, 7)));
        let mut at = 8;
        while at + 2 <= end {
            let kind = u8_at(b, at);
            let len = 2 + usize::from(u8_at(b, at + 1));
            let Some(d) = b.get(at..at + len).filter(|_| at + len <= end) else {
                break; // truncated descriptor
            };
            match (kind, d.len()) {
                (descriptor_type::INFORMATION, 12..) => {
                    s.information = bit(d, 2, 0x80).then(|| be64(d, 4));
                }
                (descriptor_type::COMMAND_SPECIFIC, 12..) => {
                    s.command_specific = Some(be64(d, 4));
                }
                (descriptor_type::SENSE_KEY_SPECIFIC, 8..) => {
                    s.sense_key_specific =
                        SenseKeySpecific::decode(key, [u8_at(d, 4), u8_at(d, 5), u8_at(d, 6)]);
                }
                (descriptor_type::FIELD_REPLACEABLE_UNIT, 4..) => s.fru = u8_at(d, 3),
                (descriptor_type::STREAM_COMMANDS, 4..) => {
                    s.filemark = bit(d, 3, 0x80);
                    s.eom = bit(d, 3, 0x40);
                    s.ili = bit(d, 3, 0x20);
                }
                (descriptor_type::BLOCK_COMMANDS, 4..) => s.ili = bit(d, 3, 0x20),
                _ => {}
            }
            at += len;
        }
        Ok(s)
    }
}

impl fmt::Display for Sense {
    /// `KEY: description` plus the field pointer when there is one, e.g.
    /// `ILLEGAL REQUEST: INVALID FIELD IN CDB (CDB byte 1 bit 4)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.asc)?;
        if let Some(SenseKeySpecific::FieldPointer { cd, bit, field }) = self.sense_key_specific {
            let place = if cd { "CDB" } else { "parameter list" };
            match bit {
                Some(bit) => write!(f, " ({place} byte {field} bit {bit})")?,
                None => write!(f, " ({place} byte {field})")?,
            }
        }
        if let Some(info) = self.information {
            write!(f, " information {info:#x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    #[test]
    fn invalid_field_in_cdb_fixed_bytes() {
        let s = Sense::invalid_field_in_cdb(1, Some(4));
        let b = s.encode_fixed();
        assert_eq!(
            b,
            vec![
                0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xcc, 0x00, 0x01
            ]
        );
        assert_eq!(Sense::parse(&b), Ok(s));
    }

    #[test]
    fn lba_out_of_range_descriptor_bytes() {
        let s = Sense::lba_out_of_range(0x1_0000_0000);
        let b = s.encode_descriptor();
        assert_eq!(
            b,
            vec![
                0x72, 0x05, 0x21, 0x00, 0, 0, 0, 12, // header
                0x00, 0x0a, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0 // information
            ]
        );
        assert_eq!(Sense::parse(&b), Ok(s.clone()));
        // Fixed format cannot carry a 33-bit LBA: VALID stays clear.
        let fixed = s.encode_fixed();
        assert_eq!(fixed[0], 0x70);
        assert_eq!(Sense::parse(&fixed).map(|p| p.information), Ok(None));
    }

    #[test]
    fn fixed_information_sets_valid() {
        let s = Sense::medium_error(Asc::UNRECOVERED_READ_ERROR, 0x1234);
        let b = s.encode_fixed();
        assert_eq!(&b[..7], &[0xf0, 0, 0x03, 0, 0, 0x12, 0x34]);
        assert_eq!(Sense::parse(&b), Ok(s));
    }

    #[test]
    fn deferred_codes() {
        let s = Sense {
            deferred: true,
            ..Sense::new(SenseKey::MEDIUM_ERROR, Asc::WRITE_ERROR)
        };
        assert_eq!(s.encode_fixed()[0], 0x71);
        assert_eq!(s.encode_descriptor()[0], 0x73);
    }

    #[test]
    fn truncated_fixed_sense_keeps_key_and_asc() {
        let b = Sense::unit_attention(Asc::POWER_ON_RESET).encode_fixed();
        let s = Sense::parse(&b[..14]);
        assert_eq!(
            s.map(|s| (s.key, s.asc)),
            Ok((SenseKey::UNIT_ATTENTION, Asc::POWER_ON_RESET))
        );
        assert_eq!(
            Sense::parse(&b[..13]),
            Err(SenseError::TooShort { len: 13 })
        );
        assert_eq!(Sense::parse(&[]), Err(SenseError::TooShort { len: 0 }));
        assert_eq!(
            Sense::parse(&[0x7f; 20]),
            Err(SenseError::ResponseCode(0x7f))
        );
    }

    #[test]
    fn unknown_descriptors_are_skipped() {
        let mut b = Sense::illegal_request(Asc::INVALID_FIELD_IN_CDB).encode_descriptor();
        b.extend_from_slice(&[0x80, 0x02, 0xaa, 0xbb]);
        b.extend_from_slice(&[0x03, 0x02, 0, 0x42]);
        b[7] = 8;
        let s = Sense::parse(&b).map(|s| s.fru);
        assert_eq!(s, Ok(0x42));
    }

    #[test]
    fn asc_descriptions_and_debug() {
        assert_eq!(
            Asc::INVALID_FIELD_IN_CDB.description(),
            Some("INVALID FIELD IN CDB")
        );
        assert_eq!(Asc::I_T_NEXUS_LOSS.0, 0x2907);
        assert_eq!(Asc::new(0x3f, 0x0e), Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
        assert_eq!(format!("{:?}", Asc(0x8123)), "Asc(0x8123)");
        assert_eq!(format!("{}", Asc(0x8123)), "ASC 0x81 ASCQ 0x23");
        assert_eq!(format!("{:?}", SenseKey(0x1f)), "SenseKey(0x1f)");
        // The table is sorted and has no duplicates.
        let codes: Vec<u16> = Asc::all().map(|(a, _)| a.0).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
        // All fifteen classic sense keys are named.
        assert!((0..=0x0e).all(|k| SenseKey(k).name().is_some()));
    }

    #[test]
    fn display_shows_field_pointer() {
        assert_eq!(
            Sense::invalid_field_in_cdb(1, Some(4)).to_string(),
            "ILLEGAL REQUEST: INVALID FIELD IN CDB (CDB byte 1 bit 4)"
        );
    }

    fn sense_strategy() -> impl Strategy<Value = Sense> {
        (
            any::<bool>(),
            0u8..16,
            any::<u16>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of((any::<bool>(), proptest::option::of(0u8..8), any::<u16>())),
            any::<u8>(),
            (any::<bool>(), any::<bool>(), any::<bool>()),
        )
            .prop_map(
                |(deferred, key, asc, information, command_specific, sks, fru, flags)| {
                    let key = SenseKey(key);
                    let sense_key_specific = sks.map(|(flag, bit, field)| {
                        let raw = field.to_be_bytes();
                        let b0 = 0x80 | bit.map_or(0, |b| 0x08 | b) | if flag { 0x40 } else { 0 };
                        // Build a value that is canonical for the key.
                        let bytes = [b0, raw[0], raw[1]];
                        SenseKeySpecific::decode(key, bytes)
                            .unwrap_or(SenseKeySpecific::Raw([0, 0, 0]))
                    });
                    Sense {
                        deferred,
                        key,
                        asc: Asc(asc),
                        information,
                        command_specific,
                        sense_key_specific,
                        fru,
                        filemark: flags.0,
                        eom: flags.1,
                        ili: flags.2,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn descriptor_round_trip(s in sense_strategy()) {
            prop_assert_eq!(Sense::parse(&s.encode_descriptor()), Ok(s));
        }

        #[test]
        fn fixed_round_trip_for_32_bit_fields(mut s in sense_strategy()) {
            s.information = s.information.map(|i| i & 0xffff_ffff);
            s.command_specific = s.command_specific.map(|c| c & 0xffff_ffff).filter(|&c| c != 0);
            prop_assert_eq!(Sense::parse(&s.encode_fixed()), Ok(s));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Sense::parse(&b);
        }

        #[test]
        fn parse_never_panics_on_descriptor_format(mut b in proptest::collection::vec(any::<u8>(), 8..300)) {
            b[0] = 0x72;
            let _ = Sense::parse(&b);
        }
    }
}
