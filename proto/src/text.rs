//! The `key=value` text codec of Login and Text PDUs (RFC 7143 §6.1).
//!
//! A Login or Text data segment is a sequence of `key=value` pairs, each
//! followed by one NUL byte. This module turns those bytes into
//! [`KeyValue`]s and back, and checks the §6.1 syntax:
//!
//! - key names are 1–63 bytes of `a-z A-Z 0-9 . - + @ _` (a standard-label);
//!   `X#` public extension keys (§13.26, e.g. `X#NodeArchitecture`) are the one
//!   place a `#` may appear, right after the leading `X`;
//! - values are UTF-8 and, "if not otherwise specified", at most 255 bytes;
//!   the list-valued keys apply that limit to each list element, and the keys
//!   that carry large binary values (CHAP_C and CHAP_R, whose binary length §12.1.3
//!   caps at 1024 bytes, and the SRP and Kerberos exchange keys) may be up to
//!   8192 bytes. Keys this crate does not know get the 8192-byte limit too, so
//!   that an unknown vendor key is answered `NotUnderstood` by the negotiation
//!   layer rather than failing the whole login here. See [`value_limit`].
//!
//! Decoding is strict: every pair, including the last, must be NUL-terminated
//! ("every key=value pair, including the last or only pair … MUST be followed
//! by one null delimiter", §6.1). A missing final NUL is not tolerated: the only
//! legitimate way for a text payload to stop mid-pair is the C (continue) bit,
//! and [`TextAccumulator`] reassembles those bytes before decoding. Extra zero
//! bytes after the last pair (padding some peers count in DataSegmentLength)
//! are tolerated; an empty pair in the middle is not.
//!
//! Encoding never fails and never validates, so a test can send anything.
//!
//! Also here: the `0x…` hex and `0b…` base64 binary-value encodings and the
//! numerical-value syntax (§6.1), the C-bit reassembly of a payload split
//! across PDUs (§6.3 and §11.10.2: "a key=value pair can span PDU boundaries"),
//! and the reverse split for a sender whose text exceeds the peer's
//! MaxRecvDataSegmentLength.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use thiserror::Error;

/// Longest key name, in bytes (RFC 7143 §6.1: a standard-label "must not
/// exceed 63 characters").
pub const MAX_KEY_LEN: usize = 63;

/// Longest simple value, in bytes, when a key does not say otherwise (§6.1).
pub const MAX_SIMPLE_VALUE_LEN: usize = 255;

/// Longest encoded value for keys carrying large binary values (CHAP_C,
/// CHAP_R, SRP_*, KRB_*) and for whole list values. CHAP binary values are
/// at most 1024 bytes (§12.1.3): 2050 characters in hex, so 8192 leaves room
/// for the other methods' larger items.
pub const MAX_LARGE_VALUE_LEN: usize = 8192;

/// Text every iSCSI node must accept in one negotiation sequence (§6.1).
pub const MIN_TEXT_CAPACITY: usize = 8192;

/// Default size limit of a reassembled text payload in [`TextAccumulator`]:
/// 64 KiB, what §6.1 asks of nodes using authentication methods with long
/// items.
pub const DEFAULT_TEXT_LIMIT: usize = 64 * 1024;

/// One `key=value` pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyValue {
    /// The key name, e.g. `MaxBurstLength`.
    pub key: String,
    /// The value text, e.g. `262144` or `CRC32C,None`.
    pub value: String,
}

impl KeyValue {
    /// A pair from anything string-like.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Why a text payload or a binary value could not be decoded.
///
/// Offsets are byte offsets into the payload given to [`decode`]. Keys that
/// are not valid text are shown lossily and cut to 64 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TextError {
    /// A pair without `=`.
    #[error("text pair at byte {offset} has no '=': {text:?}")]
    MissingEquals {
        /// Where the pair starts.
        offset: usize,
        /// The pair, lossily decoded and shortened.
        text: String,
    },
    /// `=value` with nothing before the `=`.
    #[error("empty key name at byte {offset}")]
    EmptyKey {
        /// Where the pair starts.
        offset: usize,
    },
    /// Two NULs in a row before the end of the payload.
    #[error("empty key=value pair at byte {offset}")]
    EmptyPair {
        /// Where the empty pair is.
        offset: usize,
    },
    /// A key name longer than 63 bytes (§6.1).
    #[error("key {key:?} is {len} bytes, more than 63 (RFC 7143 §6.1)")]
    KeyTooLong {
        /// The key, shortened.
        key: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A key name with a byte outside `a-z A-Z 0-9 . - + @ _` (§6.1).
    #[error("key {key:?} contains byte {byte:#04x}, not allowed in a key name (RFC 7143 §6.1)")]
    BadKeyChar {
        /// The key, shortened.
        key: String,
        /// The first offending byte.
        byte: u8,
    },
    /// A value longer than its key allows (§6.1, see [`value_limit`]).
    #[error("value of {key} is {len} bytes, more than {max} (RFC 7143 §6.1)")]
    ValueTooLong {
        /// The key.
        key: String,
        /// The length of the value, or of the offending list element.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
    /// A value that is not UTF-8 (§6.1).
    #[error("value of {key} is not UTF-8 (byte {offset})")]
    InvalidUtf8 {
        /// The key.
        key: String,
        /// Offset of the first invalid byte in the payload.
        offset: usize,
    },
    /// The last pair has no NUL terminator (§6.1).
    #[error("key=value pair at byte {offset} is not NUL-terminated (RFC 7143 §6.1)")]
    Unterminated {
        /// Where the unterminated pair starts.
        offset: usize,
    },
    /// A reassembled text payload exceeds the accumulator's limit.
    #[error("text payload of {len} bytes exceeds the {limit}-byte limit")]
    TooLong {
        /// Bytes the payload would have held.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A `0x…`/`0b…` binary value that does not decode (§6.1).
    #[error("invalid binary value: {reason}")]
    BadBinary {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// How long a key's value may be (§6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueLimit {
    /// A simple value: at most [`MAX_SIMPLE_VALUE_LEN`] bytes.
    Simple,
    /// A list of values: each element at most [`MAX_SIMPLE_VALUE_LEN`]
    /// bytes, the whole at most [`MAX_LARGE_VALUE_LEN`].
    List,
    /// A large value (large-binary-value, or a key unknown here): at most
    /// [`MAX_LARGE_VALUE_LEN`] bytes.
    Large,
}

/// The value length rule for `key`, from the key table in
/// [`crate::negotiation`]. Unknown keys get [`ValueLimit::Large`] (see the
/// module docs).
pub fn value_limit(key: &str) -> ValueLimit {
    match crate::negotiation::key_def(key) {
        Some(def) => def.value.limit(),
        None => ValueLimit::Large,
    }
}

/// Decodes a whole (reassembled) text payload into its pairs, in order.
///
/// Trailing zero bytes after the last pair are ignored; anything else that
/// breaks §6.1 is an error naming the offending key where there is one.
pub fn decode(data: &[u8]) -> Result<Vec<KeyValue>, TextError> {
    let mut pairs = Vec::new();
    let mut pos = 0;
    while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
        match rest.iter().position(|&b| b == 0) {
            // Zero padding after the last pair.
            Some(0) if rest.iter().all(|&b| b == 0) => break,
            Some(0) => return Err(TextError::EmptyPair { offset: pos }),
            Some(n) => {
                pairs.push(decode_pair(&rest[..n], pos)?);
                pos += n + 1;
            }
            None => return Err(TextError::Unterminated { offset: pos }),
        }
    }
    Ok(pairs)
}

fn decode_pair(pair: &[u8], offset: usize) -> Result<KeyValue, TextError> {
    let Some(eq) = pair.iter().position(|&b| b == b'=') else {
        return Err(TextError::MissingEquals {
            offset,
            text: excerpt(pair),
        });
    };
    let (key, value) = (&pair[..eq], &pair[eq + 1..]);
    if key.is_empty() {
        return Err(TextError::EmptyKey { offset });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TextError::KeyTooLong {
            key: excerpt(key),
            len: key.len(),
        });
    }
    if let Some(byte) = bad_key_byte(key) {
        return Err(TextError::BadKeyChar {
            key: excerpt(key),
            byte,
        });
    }
    // Checked above: every key byte is ASCII.
    let key = String::from_utf8_lossy(key).into_owned();
    let value = match std::str::from_utf8(value) {
        Ok(v) => v.to_owned(),
        Err(e) => {
            return Err(TextError::InvalidUtf8 {
                key,
                offset: offset + eq + 1 + e.valid_up_to(),
            });
        }
    };
    check_value_len(&key, &value)?;
    Ok(KeyValue { key, value })
}

/// The first byte of `key` not allowed in a key name, if any.
fn bad_key_byte(key: &[u8]) -> Option<u8> {
    // `X#` public extension keys (§13.26) are the only keys with a `#`.
    let body = key.strip_prefix(b"X#").unwrap_or(key);
    body.iter()
        .copied()
        .find(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'@' | b'_')))
}

fn check_value_len(key: &str, value: &str) -> Result<(), TextError> {
    let too_long = |len, max| TextError::ValueTooLong {
        key: key.to_owned(),
        len,
        max,
    };
    match value_limit(key) {
        ValueLimit::Simple if value.len() > MAX_SIMPLE_VALUE_LEN => {
            Err(too_long(value.len(), MAX_SIMPLE_VALUE_LEN))
        }
        ValueLimit::List if value.len() > MAX_LARGE_VALUE_LEN => {
            Err(too_long(value.len(), MAX_LARGE_VALUE_LEN))
        }
        ValueLimit::List => match value.split(',').find(|e| e.len() > MAX_SIMPLE_VALUE_LEN) {
            Some(e) => Err(too_long(e.len(), MAX_SIMPLE_VALUE_LEN)),
            None => Ok(()),
        },
        ValueLimit::Large if value.len() > MAX_LARGE_VALUE_LEN => {
            Err(too_long(value.len(), MAX_LARGE_VALUE_LEN))
        }
        _ => Ok(()),
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let cut = bytes.get(..64).unwrap_or(bytes);
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > cut.len() {
        s.push('…');
    }
    s
}

/// Appends `key=value\0` for every pair to `out`. No validation: the caller
/// may send whatever it likes.
pub fn encode(pairs: &[KeyValue], out: &mut Vec<u8>) {
    for kv in pairs {
        out.extend_from_slice(kv.key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(kv.value.as_bytes());
        out.push(0);
    }
}

/// [`encode`] into a new buffer.
pub fn encode_to_vec(pairs: &[KeyValue]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        pairs
            .iter()
            .map(|kv| kv.key.len() + kv.value.len() + 2)
            .sum(),
    );
    encode(pairs, &mut out);
    out
}

/// Decodes a binary value: `0x`/`0X` followed by hex digits, or `0b`/`0B`
/// followed by base64 (RFC 4648, padding optional) (§6.1 hex-constant and
/// base64-constant). An odd number of hex digits has an implicit leading
/// zero nibble, so `0xabc` is `[0x0a, 0xbc]` (§6.1: a hex-constant of n
/// digits is (n+1)/2 bytes).
pub fn decode_binary(value: &str) -> Result<Vec<u8>, TextError> {
    let bad = |reason| TextError::BadBinary { reason };
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        decode_hex(hex).ok_or(bad("not a hex-constant"))
    } else if let Some(b64) = value
        .strip_prefix("0b")
        .or_else(|| value.strip_prefix("0B"))
    {
        decode_base64(b64).ok_or(bad("not a base64-constant"))
    } else {
        Err(bad("neither 0x (hex) nor 0b (base64)"))
    }
}

fn decode_hex(digits: &str) -> Option<Vec<u8>> {
    if digits.is_empty() {
        return None;
    }
    let nibbles: Vec<u8> = digits
        .bytes()
        .map(|c| (c as char).to_digit(16).map(|d| d as u8))
        .collect::<Option<_>>()?;
    let (head, tail) = nibbles.split_at(nibbles.len() % 2);
    let mut out = Vec::with_capacity(nibbles.len().div_ceil(2));
    out.extend_from_slice(head);
    out.extend(tail.chunks_exact(2).map(|p| (p[0] << 4) | p[1]));
    Some(out)
}

/// Standard-alphabet base64 (RFC 4648 §4) with its padding: what this
/// side sends, and what a padded value must be.
const PADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// The same alphabet without padding (§6.1 makes it optional).
const UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// A base64-constant's digits: padded, it must be padded completely
/// (`Zg==`, not `Zg=`); unpadded, any length but 4k+1 (§6.1: n digits carry
/// n*3/4 bytes). Non-zero bits after the last byte are ignored, as
/// RFC 4648 §3.5 allows, so a sloppy peer's value still decodes.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() {
        return None;
    }
    let engine = if text.ends_with('=') {
        &PADDED
    } else {
        &UNPADDED
    };
    engine.decode(text).ok().filter(|b| !b.is_empty())
}

/// `0x` followed by two lowercase hex digits per byte.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `0b` followed by padded base64 (RFC 4648 §4).
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len().div_ceil(3) * 4);
    s.push_str("0b");
    PADDED.encode_string(bytes, &mut s);
    s
}

/// Decodes a numerical-value (§6.1): a decimal-constant (`0`, or digits
/// without a leading zero) or a hex-constant (`0x`/`0X` and 1+ hex digits),
/// less than 2^64. `None` for anything else.
pub fn decode_numerical(value: &str) -> Option<u64> {
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // Leading zeros are discouraged but legal; they do not count
        // towards the 64-bit limit.
        let significant = hex.trim_start_matches('0');
        if significant.is_empty() {
            return Some(0);
        }
        return u64::from_str_radix(significant, 16).ok();
    }
    let canonical = value == "0"
        || value
            .bytes()
            .next()
            .is_some_and(|b| (b'1'..=b'9').contains(&b));
    if !canonical || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Decodes a regular-binary-value (§6.1) as an unsigned number: a
/// numerical-value, or a base64-constant of at most 64 bits. Used for
/// TargetPortalGroupTag (§13.9).
pub fn decode_regular_binary(value: &str) -> Option<u64> {
    if value.starts_with("0b") || value.starts_with("0B") {
        let bytes = decode_binary(value).ok()?;
        if bytes.len() > 8 {
            return None;
        }
        return Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)));
    }
    decode_numerical(value)
}

/// Reassembles a text payload sent as a sequence of PDUs with the C
/// (continue) bit (RFC 7143 §6.3, §11.10.2, §11.12.2).
///
/// Bytes, not pairs, are collected: a pair may be split anywhere. Pass each
/// PDU's data segment without its padding. The total is bounded by a limit
/// (default [`DEFAULT_TEXT_LIMIT`]); going over it is an error and drops what
/// was collected, so a peer cannot make the receiver allocate without bound.
#[derive(Clone, Debug)]
pub struct TextAccumulator {
    buf: Vec<u8>,
    limit: usize,
    partial: bool,
}

impl Default for TextAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl TextAccumulator {
    /// An accumulator with the [`DEFAULT_TEXT_LIMIT`].
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_TEXT_LIMIT)
    }

    /// An accumulator that refuses payloads longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        TextAccumulator {
            buf: Vec::new(),
            limit,
            partial: false,
        }
    }

    /// The configured limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Adds one PDU's data. Returns the whole payload when `continue_bit` is
    /// clear (the PDU is the last of the sequence), `None` while more is to
    /// come.
    pub fn push(&mut self, data: &[u8], continue_bit: bool) -> Result<Option<Vec<u8>>, TextError> {
        let len = self.buf.len().saturating_add(data.len());
        if len > self.limit {
            self.reset();
            return Err(TextError::TooLong {
                len,
                limit: self.limit,
            });
        }
        self.buf.extend_from_slice(data);
        self.partial = continue_bit;
        if continue_bit {
            Ok(None)
        } else {
            Ok(Some(std::mem::take(&mut self.buf)))
        }
    }

    /// Whether a sequence is under way (the last PDU pushed had C=1).
    pub fn in_progress(&self) -> bool {
        self.partial
    }

    /// Bytes collected so far in the current sequence.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is collected.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Drops any partial payload.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.partial = false;
    }
}

/// Splits an encoded text payload into data segments of at most
/// `max_segment` bytes (the peer's MaxRecvDataSegmentLength), to be sent as
/// PDUs with C=1 on all but the last (§6.3).
///
/// A cut is made after a NUL (between pairs) whenever one falls within the
/// segment, so peers that mishandle split pairs still cope; a pair longer
/// than a segment is split inside, as §6.3 allows. An empty payload gives one
/// empty segment; `max_segment` 0 is treated as 1. The segments concatenate
/// back to `payload`.
pub fn split_for_segments(payload: &[u8], max_segment: usize) -> Vec<&[u8]> {
    let max = max_segment.max(1);
    let mut out = Vec::with_capacity(payload.len() / max + 1);
    let mut rest = payload;
    while rest.len() > max {
        let cut = rest[..max]
            .iter()
            .rposition(|&b| b == 0)
            .map_or(max, |i| i + 1);
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, v)
    }

    #[test]
    fn decodes_pairs_in_order() {
        let got = decode(b"HeaderDigest=CRC32C,None\0MaxBurstLength=262144\0").unwrap();
        assert_eq!(
            got,
            vec![
                kv("HeaderDigest", "CRC32C,None"),
                kv("MaxBurstLength", "262144")
            ]
        );
    }

    #[test]
    fn empty_payload_and_padding_only() {
        assert_eq!(decode(b"").unwrap(), vec![]);
        assert_eq!(decode(b"\0\0\0").unwrap(), vec![]);
    }

    #[test]
    fn trailing_padding_is_tolerated() {
        let got = decode(b"A=1\0\0\0\0").unwrap();
        assert_eq!(got, vec![kv("A", "1")]);
    }

    #[test]
    fn value_may_be_empty_or_contain_equals() {
        let got = decode(b"SendTargets=\0X-a=b=c\0").unwrap();
        assert_eq!(got, vec![kv("SendTargets", ""), kv("X-a", "b=c")]);
    }

    #[test]
    fn missing_final_nul_is_an_error() {
        assert_eq!(
            decode(b"A=1\0B=2"),
            Err(TextError::Unterminated { offset: 4 })
        );
    }

    #[test]
    fn empty_pair_in_the_middle_is_an_error() {
        assert_eq!(
            decode(b"A=1\0\0B=2\0"),
            Err(TextError::EmptyPair { offset: 4 })
        );
    }

    #[test]
    fn missing_equals_and_empty_key() {
        assert!(matches!(
            decode(b"A=1\0Bogus\0"),
            Err(TextError::MissingEquals { offset: 4, .. })
        ));
        assert_eq!(decode(b"=1\0"), Err(TextError::EmptyKey { offset: 0 }));
    }

    #[test]
    fn key_length_limit_is_63() {
        let ok = format!("{}=v\0", "K".repeat(63));
        assert_eq!(decode(ok.as_bytes()).unwrap()[0].key.len(), 63);
        let long = format!("{}=v\0", "K".repeat(64));
        assert!(matches!(
            decode(long.as_bytes()),
            Err(TextError::KeyTooLong { len: 64, .. })
        ));
    }

    #[test]
    fn key_characters() {
        assert!(decode(b"X-com.example+a@b_c=1\0").is_ok());
        assert!(decode(b"X#NodeArchitecture=Foo\0").is_ok());
        assert_eq!(
            decode(b"Max Burst=1\0"),
            Err(TextError::BadKeyChar {
                key: "Max Burst".into(),
                byte: b' '
            })
        );
        // `#` only right after the leading X.
        assert!(matches!(
            decode(b"A#B=1\0"),
            Err(TextError::BadKeyChar { byte: b'#', .. })
        ));
        assert!(matches!(
            decode(b"X##=1\0"),
            Err(TextError::BadKeyChar { byte: b'#', .. })
        ));
    }

    #[test]
    fn invalid_utf8_value_names_the_key() {
        assert_eq!(
            decode(b"A=1\0TargetAlias=ab\xff\0"),
            Err(TextError::InvalidUtf8 {
                key: "TargetAlias".into(),
                offset: 18
            })
        );
    }

    #[test]
    fn simple_value_limit_is_255() {
        let ok = format!("MaxBurstLength={}\0", "1".repeat(255));
        assert!(decode(ok.as_bytes()).is_ok());
        let long = format!("TargetAlias={}\0", "a".repeat(256));
        assert_eq!(
            decode(long.as_bytes()),
            Err(TextError::ValueTooLong {
                key: "TargetAlias".into(),
                len: 256,
                max: 255
            })
        );
    }

    #[test]
    fn multibyte_values_count_bytes() {
        // 128 two-byte characters: 256 bytes.
        let long = format!("InitiatorAlias={}\0", "é".repeat(128));
        assert!(matches!(
            decode(long.as_bytes()),
            Err(TextError::ValueTooLong { len: 256, .. })
        ));
    }

    #[test]
    fn large_binary_keys_allow_8192() {
        let c = format!("CHAP_C=0x{}\0", "ab".repeat(1024));
        assert!(decode(c.as_bytes()).is_ok());
        let too_long = format!("CHAP_R=0x{}\0", "a".repeat(8191));
        assert!(matches!(
            decode(too_long.as_bytes()),
            Err(TextError::ValueTooLong { max: 8192, .. })
        ));
    }

    #[test]
    fn list_limit_applies_per_element() {
        let ok = format!("HeaderDigest={},None\0", "Y-".repeat(127));
        assert!(decode(ok.as_bytes()).is_ok());
        let bad = format!("DataDigest=None,{}\0", "Y".repeat(256));
        assert!(matches!(
            decode(bad.as_bytes()),
            Err(TextError::ValueTooLong { len: 256, .. })
        ));
    }

    #[test]
    fn unknown_keys_get_the_large_limit() {
        let v = format!("X-vendor.key={}\0", "v".repeat(1000));
        assert!(decode(v.as_bytes()).is_ok());
    }

    #[test]
    fn encode_writes_nul_terminated_pairs() {
        let bytes = encode_to_vec(&[kv("A", "1"), kv("B", "")]);
        assert_eq!(bytes, b"A=1\0B=\0".to_vec());
        let mut out = b"X".to_vec();
        encode(&[kv("C", "d")], &mut out);
        assert_eq!(out, b"XC=d\0".to_vec());
    }

    #[test]
    fn display_is_key_equals_value() {
        assert_eq!(kv("InitialR2T", "Yes").to_string(), "InitialR2T=Yes");
    }

    #[test]
    fn hex_binary_values() {
        assert_eq!(decode_binary("0x0102ff").unwrap(), vec![1, 2, 0xff]);
        assert_eq!(decode_binary("0XAbC").unwrap(), vec![0x0a, 0xbc]);
        assert!(decode_binary("0x").is_err());
        assert!(decode_binary("0x12g4").is_err());
        assert_eq!(encode_hex(&[0, 0xab, 0x10]), "0x00ab10");
    }

    #[test]
    fn base64_binary_values() {
        // RFC 4648 §10 test vectors.
        for (plain, enc) in [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_base64(plain.as_bytes()), format!("0b{enc}"));
            assert_eq!(
                decode_binary(&format!("0b{enc}")).unwrap(),
                plain.as_bytes()
            );
            // Padding is optional (§6.1).
            assert_eq!(
                decode_binary(&format!("0B{}", enc.trim_end_matches('='))).unwrap(),
                plain.as_bytes()
            );
        }
        assert!(decode_binary("0bZ").is_err(), "4k+1 digits");
        assert!(decode_binary("0bZg=").is_err(), "incomplete padding");
        assert!(decode_binary("0bZm9v===").is_err());
        assert!(decode_binary("0bZm*v").is_err());
        assert!(decode_binary("0b").is_err());
        assert!(decode_binary("0b====").is_err(), "only padding");
        assert!(decode_binary("1234").is_err());
        // Bits after the last byte are ignored (RFC 4648 §3.5 allows it):
        // "Zh" is 'f' with one stray bit.
        assert_eq!(decode_binary("0bZh==").unwrap(), b"f");
        assert_eq!(decode_binary("0bZh").unwrap(), b"f");
    }

    #[test]
    fn numerical_values() {
        assert_eq!(decode_numerical("0"), Some(0));
        assert_eq!(decode_numerical("8192"), Some(8192));
        assert_eq!(decode_numerical("0x2000"), Some(8192));
        assert_eq!(decode_numerical("0X00ff"), Some(255));
        assert_eq!(decode_numerical("18446744073709551615"), Some(u64::MAX));
        assert_eq!(decode_numerical("18446744073709551616"), None);
        assert_eq!(decode_numerical("0x1ffffffffffffffff"), None);
        assert_eq!(decode_numerical("0x0000000000000000000001"), Some(1));
        for bad in ["", "08192", "+1", "-1", "1 ", "0x", "1e3", "Yes"] {
            assert_eq!(decode_numerical(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn regular_binary_values() {
        assert_eq!(decode_regular_binary("1"), Some(1));
        assert_eq!(decode_regular_binary("0x10"), Some(16));
        assert_eq!(decode_regular_binary("0bAQA="), Some(256));
        assert_eq!(
            decode_regular_binary("0bAQIDBAUGBwgJ"),
            None,
            "more than 64 bits"
        );
    }

    #[test]
    fn accumulator_reassembles_split_pairs() {
        let mut acc = TextAccumulator::new();
        assert_eq!(acc.push(b"MaxBurst", true).unwrap(), None);
        assert!(acc.in_progress());
        assert_eq!(acc.push(b"Length=2621", true).unwrap(), None);
        let whole = acc.push(b"44\0", false).unwrap().unwrap();
        assert_eq!(
            decode(&whole).unwrap(),
            vec![kv("MaxBurstLength", "262144")]
        );
        assert!(acc.is_empty() && !acc.in_progress());
        // Reusable for the next sequence.
        assert_eq!(
            acc.push(b"A=1\0", false).unwrap().unwrap(),
            b"A=1\0".to_vec()
        );
    }

    #[test]
    fn accumulator_limit_is_an_error_and_resets() {
        let mut acc = TextAccumulator::with_limit(8);
        assert_eq!(acc.push(b"A=12", true).unwrap(), None);
        assert_eq!(
            acc.push(b"34567", true),
            Err(TextError::TooLong { len: 9, limit: 8 })
        );
        assert!(acc.is_empty() && !acc.in_progress());
        assert_eq!(acc.push(b"A=1234\0\0", false).unwrap().unwrap().len(), 8);
    }

    #[test]
    fn split_prefers_pair_boundaries() {
        let payload = b"A=1\0BB=22\0C=333\0";
        let segs = split_for_segments(payload, 8);
        assert_eq!(segs, vec![&b"A=1\0"[..], &b"BB=22\0"[..], &b"C=333\0"[..]]);
        // A pair longer than a segment is cut inside.
        let segs = split_for_segments(b"LongKey=LongValue\0", 5);
        assert_eq!(segs.concat(), b"LongKey=LongValue\0".to_vec());
        assert!(segs.iter().all(|s| s.len() <= 5));
        assert_eq!(segs.len(), 4);
        assert_eq!(split_for_segments(b"", 512), vec![&b""[..]]);
        assert_eq!(split_for_segments(b"ab", 0), vec![&b"a"[..], &b"b"[..]]);
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        "[A-Z][A-Za-z0-9.+@_-]{0,62}"
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        // Any UTF-8 without NUL or comma (commas would make list keys count
        // elements), within the 255-byte simple limit.
        "[^\u{0},]{0,80}".prop_filter("255 bytes", |s| s.len() <= MAX_SIMPLE_VALUE_LEN)
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&data);
        }

        #[test]
        fn decode_never_panics_on_texty_input(s in "[A-Za-z=,\u{0}#_é\u{ff}]{0,200}") {
            let _ = decode(s.as_bytes());
        }

        #[test]
        fn encode_decode_round_trip(pairs in proptest::collection::vec((key_strategy(), value_strategy()), 0..12), pad in 0usize..4) {
            let pairs: Vec<KeyValue> = pairs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            let mut bytes = encode_to_vec(&pairs);
            bytes.extend(std::iter::repeat_n(0, pad));
            prop_assert_eq!(decode(&bytes).unwrap(), pairs);
        }

        #[test]
        fn binary_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..100)) {
            prop_assert_eq!(decode_binary(&encode_hex(&bytes)).unwrap(), bytes.clone());
            prop_assert_eq!(decode_binary(&encode_base64(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn decode_binary_never_panics(s in "0[xXbB][A-Za-z0-9+/=]{0,40}") {
            let _ = decode_binary(&s);
        }

        #[test]
        fn numerical_round_trip(n in any::<u64>()) {
            prop_assert_eq!(decode_numerical(&n.to_string()), Some(n));
            prop_assert_eq!(decode_numerical(&format!("{n:#x}")), Some(n));
        }

        #[test]
        fn split_then_accumulate_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..3000), max in 1usize..700) {
            let segs = split_for_segments(&payload, max);
            prop_assert!(segs.iter().all(|s| s.len() <= max));
            let mut acc = TextAccumulator::new();
            let mut whole = None;
            for (i, seg) in segs.iter().enumerate() {
                let last = i + 1 == segs.len();
                let got = acc.push(seg, !last).unwrap();
                prop_assert_eq!(got.is_some(), last);
                whole = got.or(whole);
            }
            prop_assert_eq!(whole.unwrap(), payload);
        }
    }
}
