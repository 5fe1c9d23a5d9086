//! REPORT SUPPORTED OPERATION CODES parameter data (SPC-4 §6.35): the
//! all-commands format (§6.35.2) and the one-command format (§6.35.3), with
//! the optional command timeouts descriptor (§6.35.4).
//!
//! [`AllCommands::from_usages`] and [`OneCommand::supported`] build the
//! answers straight from the [`crate::scsi::usage`] table, so what a target
//! reports and what it enforces cannot disagree.

use std::fmt;

use super::DataError;
use super::cdb::ScsiOpcode;
use super::usage::CommandUsage;
use super::wire::{be16, be32, bit, flag, need, u8_at};

/// REPORTING OPTIONS of the CDB (SPC-4 §6.35.1, table 256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ReportingOptions(pub u8);

impl ReportingOptions {
    /// 000b: all commands, all-commands format.
    pub const ALL: ReportingOptions = ReportingOptions(0);
    /// 001b: one command by opcode; an opcode with service actions is an
    /// error.
    pub const OPCODE: ReportingOptions = ReportingOptions(1);
    /// 010b: one command by opcode and service action; an opcode without
    /// service actions is an error.
    pub const OPCODE_AND_SERVICE_ACTION: ReportingOptions = ReportingOptions(2);
    /// 011b: one command by opcode, plus the service action if it has them.
    pub const OPCODE_MAYBE_SERVICE_ACTION: ReportingOptions = ReportingOptions(3);
}

impl fmt::Debug for ReportingOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("ALL"),
            1 => f.write_str("OPCODE"),
            2 => f.write_str("OPCODE_AND_SERVICE_ACTION"),
            3 => f.write_str("OPCODE_MAYBE_SERVICE_ACTION"),
            n => write!(f, "ReportingOptions({n:#04x})"),
        }
    }
}

/// The command timeouts descriptor, 12 bytes (SPC-4 §6.35.4, table 260).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CommandTimeouts {
    /// COMMAND SPECIFIC.
    pub command_specific: u8,
    /// NOMINAL COMMAND PROCESSING TIMEOUT, seconds.
    pub nominal: u32,
    /// RECOMMENDED COMMAND TIMEOUT, seconds.
    pub recommended: u32,
}

impl CommandTimeouts {
    fn encode_into(&self, b: &mut Vec<u8>) {
        b.extend_from_slice(&[0x00, 0x0a, 0, self.command_specific]);
        b.extend_from_slice(&self.nominal.to_be_bytes());
        b.extend_from_slice(&self.recommended.to_be_bytes());
    }

    fn decode(d: &[u8]) -> CommandTimeouts {
        CommandTimeouts {
            command_specific: u8_at(d, 3),
            nominal: be32(d, 4),
            recommended: be32(d, 8),
        }
    }
}

/// One command descriptor of the all-commands format (SPC-4 §6.35.2,
/// table 258).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommandDescriptor {
    /// OPERATION CODE.
    pub opcode: ScsiOpcode,
    /// SERVICE ACTION, with SERVACTV set.
    pub service_action: Option<u16>,
    /// CDB LENGTH.
    pub cdb_length: u16,
    /// The command timeouts descriptor (CTDP), sent when RCTD was set.
    pub timeouts: Option<CommandTimeouts>,
}

impl CommandDescriptor {
    /// The descriptor for a command of the usage table.
    pub fn from_usage(u: &CommandUsage, timeouts: Option<CommandTimeouts>) -> CommandDescriptor {
        CommandDescriptor {
            opcode: u.opcode,
            service_action: u.service_action,
            cdb_length: u.cdb_len() as u16,
            timeouts,
        }
    }
}

/// All-commands parameter data: COMMAND DATA LENGTH then descriptors.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct AllCommands {
    /// The supported commands.
    pub descriptors: Vec<CommandDescriptor>,
}

impl AllCommands {
    /// The list for the given commands, with `timeouts` on each if RCTD.
    pub fn from_usages<'a>(
        usages: impl IntoIterator<Item = &'a CommandUsage>,
        timeouts: Option<CommandTimeouts>,
    ) -> AllCommands {
        AllCommands {
            descriptors: usages
                .into_iter()
                .map(|u| CommandDescriptor::from_usage(u, timeouts))
                .collect(),
        }
    }

    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for d in &self.descriptors {
            let [sa_hi, sa_lo] = d.service_action.unwrap_or(0).to_be_bytes();
            body.extend_from_slice(&[d.opcode.0, 0, sa_hi, sa_lo, 0]);
            body.push(flag(d.timeouts.is_some(), 0x02) | flag(d.service_action.is_some(), 0x01));
            body.extend_from_slice(&d.cdb_length.to_be_bytes());
            if let Some(t) = &d.timeouts {
                t.encode_into(&mut body);
            }
        }
        let mut b = u32::try_from(body.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes()
            .to_vec();
        b.extend_from_slice(&body);
        b
    }

    /// Decodes the descriptors that arrived whole.
    pub fn parse(b: &[u8]) -> Result<AllCommands, DataError> {
        need(b, 4, "REPORT SUPPORTED OPERATION CODES data")?;
        let len = usize::try_from(be32(b, 0)).unwrap_or(usize::MAX);
        let rest = b.get(4..).unwrap_or_default();
        let body = rest.get(..len.min(rest.len())).unwrap_or_default();
        let mut descriptors = Vec::new();
        let mut at = 0;
        while at + 8 <= body.len() {
            let ctdp = bit(body, at + 5, 0x02);
            let size = if ctdp { 20 } else { 8 };
            let Some(d) = body.get(at..at + size) else {
                break;
            };
            descriptors.push(CommandDescriptor {
                opcode: ScsiOpcode(u8_at(d, 0)),
                service_action: bit(d, 5, 0x01).then(|| be16(d, 2)),
                cdb_length: be16(d, 6),
                timeouts: ctdp.then(|| CommandTimeouts::decode(d.get(8..).unwrap_or_default())),
            });
            at += size;
        }
        Ok(AllCommands { descriptors })
    }

    /// The total length the header announces (COMMAND DATA LENGTH + 4).
    pub fn announced_len(b: &[u8]) -> Option<usize> {
        (b.len() >= 4).then(|| {
            usize::try_from(be32(b, 0))
                .unwrap_or(usize::MAX)
                .saturating_add(4)
        })
    }
}

/// The SUPPORT field of the one-command format (SPC-4 §6.35.3, table 259).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Support(pub u8);

impl Support {
    /// 000b: data not currently available.
    pub const NOT_AVAILABLE: Support = Support(0);
    /// 001b: the command is not supported.
    pub const NOT_SUPPORTED: Support = Support(1);
    /// 011b: supported in conformance with a SCSI standard.
    pub const STANDARD: Support = Support(3);
    /// 101b: supported in a vendor specific manner.
    pub const VENDOR_SPECIFIC: Support = Support(5);
}

impl fmt::Debug for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("NOT_AVAILABLE"),
            1 => f.write_str("NOT_SUPPORTED"),
            3 => f.write_str("STANDARD"),
            5 => f.write_str("VENDOR_SPECIFIC"),
            n => write!(f, "Support({n:#04x})"),
        }
    }
}

/// One-command parameter data (SPC-4 §6.35.3, table 259).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct OneCommand {
    /// SUPPORT.
    pub support: Support,
    /// CDB USAGE DATA (CDB SIZE bytes); empty unless supported.
    pub usage_data: Vec<u8>,
    /// Command timeouts descriptor (CTDP).
    pub timeouts: Option<CommandTimeouts>,
}

impl OneCommand {
    /// A supported command, from the usage table.
    pub fn supported(u: &CommandUsage, timeouts: Option<CommandTimeouts>) -> OneCommand {
        OneCommand {
            support: Support::STANDARD,
            usage_data: u.usage_data(),
            timeouts,
        }
    }

    /// The answer for a command the device server does not support.
    pub fn not_supported() -> OneCommand {
        OneCommand {
            support: Support::NOT_SUPPORTED,
            usage_data: Vec::new(),
            timeouts: None,
        }
    }

    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let size = u16::try_from(self.usage_data.len()).unwrap_or(u16::MAX);
        let mut b = vec![
            0,
            flag(self.timeouts.is_some(), 0x80) | (self.support.0 & 0x07),
        ];
        b.extend_from_slice(&size.to_be_bytes());
        b.extend_from_slice(self.usage_data.get(..usize::from(size)).unwrap_or_default());
        if let Some(t) = &self.timeouts {
            t.encode_into(&mut b);
        }
        b
    }

    /// Decodes; usage data and timeouts are taken as far as they arrived
    /// whole.
    pub fn parse(b: &[u8]) -> Result<OneCommand, DataError> {
        need(b, 4, "REPORT SUPPORTED OPERATION CODES one-command data")?;
        let size = usize::from(be16(b, 2));
        let usage = b.get(4..4 + size).map(<[u8]>::to_vec);
        let timeouts = if bit(b, 1, 0x80) {
            b.get(4 + size..4 + size + 12).map(CommandTimeouts::decode)
        } else {
            None
        };
        Ok(OneCommand {
            support: Support(u8_at(b, 1) & 0x07),
            usage_data: usage.unwrap_or_default(),
            timeouts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::usage::{COMMANDS, lookup};
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    #[test]
    fn all_commands_bytes() {
        let rc16 = lookup(ScsiOpcode::SERVICE_ACTION_IN_16, Some(0x10));
        let tur = lookup(ScsiOpcode::TEST_UNIT_READY, None);
        let list = AllCommands::from_usages(tur.into_iter().chain(rc16), None);
        let b = list.encode();
        assert_eq!(
            b,
            vec![
                0, 0, 0, 16, //
                0x00, 0, 0, 0, 0, 0x00, 0, 6, //
                0x9e, 0, 0, 0x10, 0, 0x01, 0, 16
            ]
        );
        assert_eq!(AllCommands::parse(&b), Ok(list));
    }

    #[test]
    fn timeouts_descriptor_bytes() {
        let t = CommandTimeouts {
            command_specific: 0,
            nominal: 1,
            recommended: 30,
        };
        let list = AllCommands::from_usages(lookup(ScsiOpcode::READ_10, None), Some(t));
        let b = list.encode();
        assert_eq!(b.len(), 24);
        assert_eq!(b[9], 0x02);
        assert_eq!(&b[12..24], &[0, 0x0a, 0, 0, 0, 0, 0, 1, 0, 0, 0, 30]);
        assert_eq!(AllCommands::parse(&b), Ok(list));
        // Truncated: the descriptor is dropped, not misread.
        assert_eq!(
            AllCommands::parse(&b[..20]).map(|l| l.descriptors.len()),
            Ok(0)
        );
    }

    #[test]
    fn one_command_bytes() {
        let one = lookup(ScsiOpcode::INQUIRY, None).map(|u| OneCommand::supported(u, None));
        let b = one.as_ref().map(OneCommand::encode);
        assert_eq!(
            b,
            Some(vec![0, 0x03, 0, 6, 0x12, 0x01, 0xff, 0xff, 0xff, 0x04])
        );
        assert_eq!(
            b.as_deref().map(OneCommand::parse),
            Some(Ok(one.unwrap_or_default()))
        );
        assert_eq!(OneCommand::not_supported().encode(), vec![0, 1, 0, 0]);
    }

    proptest! {
        #[test]
        fn one_command_round_trip(
            support in 0u8..8, usage in proptest::collection::vec(any::<u8>(), 0..32),
            t in proptest::option::of(any::<(u8, u32, u32)>()),
        ) {
            let one = OneCommand {
                support: Support(support),
                usage_data: usage,
                timeouts: t.map(|(c, n, r)| CommandTimeouts { command_specific: c, nominal: n, recommended: r }),
            };
            prop_assert_eq!(OneCommand::parse(&one.encode()), Ok(one));
        }

        #[test]
        fn all_commands_round_trip(pick in proptest::collection::vec((0..COMMANDS.len(), any::<bool>()), 0..20)) {
            let list = AllCommands {
                descriptors: pick.into_iter().filter_map(|(i, t)| COMMANDS.get(i).map(|u| CommandDescriptor::from_usage(
                    u,
                    t.then_some(CommandTimeouts { command_specific: 1, nominal: 2, recommended: 3 }),
                ))).collect(),
            };
            prop_assert_eq!(AllCommands::parse(&list.encode()), Ok(list));
        }

        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = AllCommands::parse(&b);
            let _ = OneCommand::parse(&b);
            let _ = AllCommands::announced_len(&b);
        }
    }
}
