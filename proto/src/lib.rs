//! # iesp-proto — the iSCSI and SCSI wire layer, sans-IO
//!
//! Everything both sides of an iSCSI connection agree on, with no sockets, no
//! async runtime and no clock: bytes go in, typed values come out, and back.
//! The reference target (`iesp-target`), the initiator library
//! (`iesp-initiator`) and the conformance suite are thin drivers around it.
//!
//! ## Layout
//!
//! - [`chap`] — CHAP MD5 responses and the target side of the exchange
//!   (RFC 7143 §12.1.3).
//! - [`digest`] — CRC32C header/data digests (RFC 7143 §11.1, RFC 3720 B.4 vectors).
//! - [`serial`] — serial-number arithmetic for CmdSN/StatSN/DataSN (RFC 1982).
//! - [`bhs`] — the 48-byte Basic Header Segment as raw bytes, the [`bhs::Opcode`]
//!   newtype and field accessors common to every PDU.
//! - [`pdu`] — one typed value per RFC 7143 PDU (§11), one file each, plus the
//!   [`pdu::Pdu`] enum that ties them together and a by-name field table used to
//!   override or match any field (the conformance suite's hook).
//! - [`framing`] — incremental framing of a byte stream into PDUs: BHS, AHS,
//!   data segment with padding, optional digests. "Need more bytes" is a normal
//!   outcome, not an error.
//! - [`outbox`] — outgoing PDUs queued as byte chunks for one vectored write,
//!   large data segments uncopied.
//! - [`text`] — the `key=value\0` text codec of Login and Text PDUs (§6).
//! - [`negotiation`] — the one negotiation engine both sides use (§6.2, §13).
//! - [`scsi`] — SCSI CDB builders/parsers, status, sense data and the payloads
//!   of INQUIRY, VPD, READ CAPACITY, MODE SENSE, REPORT LUNS (SPC-4, SBC-4).
//!
//! ## Conventions
//!
//! Wire values are newtypes with named constants (`Opcode(u8)`,
//! `LoginStatus(u16)`, …) so values this crate does not know survive a round
//! trip and print as hex. Encoding cannot fail; decoding returns typed errors.
//! Nothing here panics on bytes from the network.

#[macro_use]
mod macros;

pub mod bhs;
pub mod chap;
pub mod digest;
pub mod framing;
pub mod negotiation;
pub mod outbox;
pub mod pdu;
pub mod scsi;
pub mod serial;
pub mod text;
