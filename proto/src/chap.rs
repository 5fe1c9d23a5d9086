//! CHAP for iSCSI login (RFC 7143 §12.1.3, RFC 1994): the MD5 response
//! both sides compute, and the target's side of the exchange.
//!
//! ```text
//! I → T  AuthMethod=CHAP…   T → I  AuthMethod=CHAP
//! I → T  CHAP_A=5[,…]       T → I  CHAP_A=5 CHAP_I=<id> CHAP_C=<challenge>
//! I → T  CHAP_N=<user> CHAP_R=<MD5(id ‖ secret ‖ challenge)>
//!        [mutual: CHAP_I=<id'> CHAP_C=<challenge'>]
//! T → I  [mutual: CHAP_N=<target user> CHAP_R=<MD5(id' ‖ target secret ‖ challenge')>]
//! ```
//!
//! [`ChapResponder`] is sans-IO: the caller passes the random identifier and
//! challenge in, so this crate needs no randomness. Secrets never appear in
//! `Debug` output or error messages.

use std::fmt;

use md5::{Digest as _, Md5};

use crate::text::{self, KeyValue};

/// `CHAP_A` value for MD5, the one algorithm RFC 7143 requires.
pub const CHAP_MD5: &str = "5";

/// The longest CHAP_C or CHAP_R accepted, in bytes once decoded
/// (§12.1.3: challenges are at most 1024 bytes).
pub const MAX_BINARY_LEN: usize = 1024;

/// A CHAP name and secret. `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChapCredentials {
    /// CHAP_N: the name sent, or expected from the peer.
    pub user: String,
    /// The shared secret.
    pub secret: Vec<u8>,
}

impl ChapCredentials {
    pub fn new(user: impl Into<String>, secret: impl Into<Vec<u8>>) -> ChapCredentials {
        ChapCredentials {
            user: user.into(),
            secret: secret.into(),
        }
    }
}

impl fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ChapCredentials {{ user: {:?}, secret: <{} bytes> }}",
            self.user,
            self.secret.len()
        )
    }
}

/// The CHAP MD5 response: `MD5(identifier ‖ secret ‖ challenge)` (RFC 1994 §4.1).
pub fn chap_md5(identifier: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([identifier]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Why a CHAP exchange failed. Messages never contain secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    /// A key the step needs is absent.
    #[error("{0} missing")]
    Missing(&'static str),
    /// No algorithm both sides support.
    #[error("no supported CHAP algorithm in CHAP_A={0}")]
    Algorithm(String),
    /// A value that is not what its key requires.
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// The peer's CHAP_N or CHAP_R is wrong: authentication failed.
    #[error("authentication failed: {0}")]
    Failed(&'static str),
    /// The initiator sent back our own challenge (a reflection attack).
    #[error("the initiator's challenge repeats ours (reflection)")]
    Reflected,
    /// Mutual CHAP asked for, but no target credentials are configured.
    #[error("mutual CHAP requested but the target has no credentials to prove")]
    NoMutualCredentials,
    /// A CHAP key out of sequence.
    #[error("{0} out of sequence")]
    Sequence(&'static str),
}

impl ChapError {
    /// Whether the failure is the initiator's protocol mistake (Login status
    /// 0x0200) rather than failed authentication (0x0201).
    pub fn is_protocol_error(&self) -> bool {
        matches!(self, ChapError::Missing(_) | ChapError::Sequence(_))
    }
}

fn find<'a>(pairs: &'a [KeyValue], key: &'static str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

/// A binary CHAP value (hex `0x…` or base64 `0b…`, §6.1), non-empty and at
/// most [`MAX_BINARY_LEN`] bytes.
pub fn decode_chap_binary(key: &'static str, value: &str) -> Result<Vec<u8>, ChapError> {
    let bytes = text::decode_binary(value).map_err(|e| ChapError::Invalid {
        key,
        reason: e.to_string(),
    })?;
    if bytes.is_empty() {
        return Err(ChapError::Invalid {
            key,
            reason: "empty".into(),
        });
    }
    if bytes.len() > MAX_BINARY_LEN {
        return Err(ChapError::Invalid {
            key,
            reason: format!("{} bytes, more than {MAX_BINARY_LEN}", bytes.len()),
        });
    }
    Ok(bytes)
}

/// A CHAP identifier: a number from 0 to 255.
pub fn decode_identifier(value: &str) -> Result<u8, ChapError> {
    text::decode_numerical(value)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or(ChapError::Invalid {
            key: "CHAP_I",
            reason: format!("{value:?} is not a number from 0 to 255"),
        })
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for CHAP_A.
    Algorithm,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    Response { id: u8, challenge: Vec<u8> },
    /// Authenticated.
    Done,
}

/// The target's side of a CHAP exchange.
#[derive(Clone)]
pub struct ChapResponder {
    expected: ChapCredentials,
    mutual: Option<ChapCredentials>,
    state: State,
}

impl fmt::Debug for ChapResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChapResponder")
            .field("expected", &self.expected)
            .field("mutual", &self.mutual)
            .field("state", &self.state)
            .finish()
    }
}

impl ChapResponder {
    /// Authenticates initiators that know `expected`; proves `mutual` to
    /// initiators that ask for mutual CHAP.
    pub fn new(expected: ChapCredentials, mutual: Option<ChapCredentials>) -> ChapResponder {
        ChapResponder {
            expected,
            mutual,
            state: State::Algorithm,
        }
    }

    /// Whether the initiator has proven itself.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Handles the CHAP keys of one login request; `fresh` supplies the
    /// identifier and challenge (at least 16 random bytes) when one is
    /// needed. Returns the keys to answer with.
    pub fn step(
        &mut self,
        received: &[KeyValue],
        fresh: impl FnOnce() -> (u8, Vec<u8>),
    ) -> Result<Vec<KeyValue>, ChapError> {
        match &self.state {
            State::Algorithm => {
                let a = find(received, "CHAP_A").ok_or(ChapError::Missing("CHAP_A"))?;
                if !a.split(',').any(|alg| alg == CHAP_MD5) {
                    return Err(ChapError::Algorithm(a.to_owned()));
                }
                for early in ["CHAP_N", "CHAP_R"] {
                    if find(received, early).is_some() {
                        return Err(ChapError::Sequence(early));
                    }
                }
                let (id, challenge) = fresh();
                let out = vec![
                    KeyValue::new("CHAP_A", CHAP_MD5),
                    KeyValue::new("CHAP_I", id.to_string()),
                    KeyValue::new("CHAP_C", text::encode_hex(&challenge)),
                ];
                self.state = State::Response { id, challenge };
                Ok(out)
            }
            State::Response { id, challenge } => {
                let n = find(received, "CHAP_N").ok_or(ChapError::Missing("CHAP_N"))?;
                let r = find(received, "CHAP_R").ok_or(ChapError::Missing("CHAP_R"))?;
                let r = decode_chap_binary("CHAP_R", r)?;
                let expect = chap_md5(*id, &self.expected.secret, challenge);
                if n != self.expected.user {
                    return Err(ChapError::Failed("unknown CHAP_N"));
                }
                if r != expect {
                    return Err(ChapError::Failed("wrong CHAP_R"));
                }
                let mut out = Vec::new();
                match (find(received, "CHAP_I"), find(received, "CHAP_C")) {
                    (None, None) => {}
                    (Some(i), Some(c)) => {
                        let their_id = decode_identifier(i)?;
                        let their_c = decode_chap_binary("CHAP_C", c)?;
                        if their_c == *challenge {
                            return Err(ChapError::Reflected);
                        }
                        let creds = self.mutual.as_ref().ok_or(ChapError::NoMutualCredentials)?;
                        out.push(KeyValue::new("CHAP_N", creds.user.clone()));
                        out.push(KeyValue::new(
                            "CHAP_R",
                            text::encode_hex(&chap_md5(their_id, &creds.secret, &their_c)),
                        ));
                    }
                    (Some(_), None) => return Err(ChapError::Missing("CHAP_C")),
                    (None, Some(_)) => return Err(ChapError::Missing("CHAP_I")),
                }
                self.state = State::Done;
                Ok(out)
            }
            State::Done => {
                if let Some(kv) = received.iter().find(|kv| kv.key.starts_with("CHAP_")) {
                    let key = match kv.key.as_str() {
                        "CHAP_A" => "CHAP_A",
                        "CHAP_I" => "CHAP_I",
                        "CHAP_C" => "CHAP_C",
                        "CHAP_N" => "CHAP_N",
                        _ => "CHAP_R",
                    };
                    return Err(ChapError::Sequence(key));
                }
                Ok(Vec::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect()
    }

    // RFC 1994 has no test vectors; this value was computed independently
    // (python3: hashlib.md5(bytes([1]) + b"secret" + bytes(range(16)))).
    #[test]
    fn md5_response_vector() {
        let r = chap_md5(1, b"secret", &(0u8..16).collect::<Vec<_>>());
        assert_eq!(text::encode_hex(&r), EXPECTED_VECTOR);
    }

    const EXPECTED_VECTOR: &str = "0x740e86463bda3a4d7017d6e0fba0699d";

    fn responder(mutual: bool) -> ChapResponder {
        ChapResponder::new(
            ChapCredentials::new("alice", b"0123456789ab".to_vec()),
            mutual.then(|| ChapCredentials::new("target", b"ba9876543210".to_vec())),
        )
    }

    fn challenge() -> (u8, Vec<u8>) {
        (7, vec![0xc4; 16])
    }

    #[test]
    fn one_way_success_and_failures() {
        let mut r = responder(false);
        let out = r.step(&kv(&[("CHAP_A", "7,5")]), challenge).unwrap();
        assert_eq!(
            out,
            kv(&[
                ("CHAP_A", "5"),
                ("CHAP_I", "7"),
                ("CHAP_C", &text::encode_hex(&[0xc4; 16]))
            ])
        );
        let good = text::encode_hex(&chap_md5(7, b"0123456789ab", &[0xc4; 16]));
        let mut wrong = r.clone();
        assert_eq!(
            wrong.step(&kv(&[("CHAP_N", "alice"), ("CHAP_R", "0x00")]), challenge),
            Err(ChapError::Failed("wrong CHAP_R"))
        );
        let mut who = r.clone();
        assert_eq!(
            who.step(&kv(&[("CHAP_N", "bob"), ("CHAP_R", &good)]), challenge),
            Err(ChapError::Failed("unknown CHAP_N"))
        );
        assert_eq!(
            r.step(&kv(&[("CHAP_N", "alice"), ("CHAP_R", &good)]), challenge),
            Ok(vec![])
        );
        assert!(r.is_done());
        assert_eq!(
            r.step(&kv(&[("CHAP_A", "5")]), challenge),
            Err(ChapError::Sequence("CHAP_A"))
        );
    }

    #[test]
    fn mutual_and_reflection() {
        let mut r = responder(true);
        r.step(&kv(&[("CHAP_A", "5")]), challenge).unwrap();
        let good = text::encode_hex(&chap_md5(7, b"0123456789ab", &[0xc4; 16]));
        let mut reflected = r.clone();
        let ours = text::encode_hex(&[0xc4; 16]);
        assert_eq!(
            reflected.step(
                &kv(&[
                    ("CHAP_N", "alice"),
                    ("CHAP_R", &good),
                    ("CHAP_I", "9"),
                    ("CHAP_C", &ours)
                ]),
                challenge
            ),
            Err(ChapError::Reflected)
        );
        let theirs = [0x11u8; 16];
        let out = r
            .step(
                &kv(&[
                    ("CHAP_N", "alice"),
                    ("CHAP_R", &good),
                    ("CHAP_I", "9"),
                    ("CHAP_C", &text::encode_hex(&theirs)),
                ]),
                challenge,
            )
            .unwrap();
        assert_eq!(
            out,
            kv(&[
                ("CHAP_N", "target"),
                (
                    "CHAP_R",
                    &text::encode_hex(&chap_md5(9, b"ba9876543210", &theirs))
                )
            ])
        );
        let mut no_creds = responder(false);
        no_creds.step(&kv(&[("CHAP_A", "5")]), challenge).unwrap();
        assert_eq!(
            no_creds.step(
                &kv(&[
                    ("CHAP_N", "alice"),
                    ("CHAP_R", &good),
                    ("CHAP_I", "9"),
                    ("CHAP_C", "0x11")
                ]),
                challenge
            ),
            Err(ChapError::NoMutualCredentials)
        );
    }

    #[test]
    fn oversize_and_unsupported_values_are_refused() {
        let mut r = responder(false);
        assert!(matches!(
            r.step(&kv(&[("CHAP_A", "7")]), challenge),
            Err(ChapError::Algorithm(_))
        ));
        r.step(&kv(&[("CHAP_A", "5")]), challenge).unwrap();
        let huge = format!("0x{}", "ab".repeat(MAX_BINARY_LEN + 1));
        assert!(matches!(
            r.step(&kv(&[("CHAP_N", "alice"), ("CHAP_R", &huge)]), challenge),
            Err(ChapError::Invalid { key: "CHAP_R", .. })
        ));
        assert!(matches!(
            decode_identifier("256"),
            Err(ChapError::Invalid { .. })
        ));
        // Base64 works as well as hex.
        let good = chap_md5(7, b"0123456789ab", &[0xc4; 16]);
        assert_eq!(
            r.step(
                &kv(&[("CHAP_N", "alice"), ("CHAP_R", &text::encode_base64(&good))]),
                challenge
            ),
            Ok(vec![])
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let r = responder(true);
        let s = format!("{r:?}");
        assert!(
            !s.contains("0123456789ab") && !s.contains("ba9876543210"),
            "{s}"
        );
    }
}
