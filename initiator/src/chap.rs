//! CHAP for iSCSI login, initiator side (RFC 7143 §12.1.3, RFC 1994).
//!
//! The exchange, after `AuthMethod=CHAP` is agreed in the security stage:
//!
//! ```text
//! I → T  CHAP_A=5                          (MD5, the one algorithm defined)
//! T → I  CHAP_A=5 CHAP_I=<id> CHAP_C=<challenge>
//! I → T  CHAP_N=<user> CHAP_R=<MD5(id ‖ secret ‖ challenge)>
//!        [mutual: CHAP_I=<our id> CHAP_C=<our challenge>]
//! T → I  [mutual: CHAP_N=<target user> CHAP_R=<MD5(our id ‖ target secret ‖ our challenge)>]
//! ```
//!
//! Binary values go out as `0x` hex; both hex and `0b` base64 are accepted
//! from the target (§6.1). [`ChapInitiator`] is sans-IO: pairs in, pairs
//! out; [`mod@crate::login`] drives it.

use iesp_proto::text::{self, KeyValue};

pub use iesp_proto::chap::{CHAP_MD5, ChapCredentials, chap_md5};

/// Length of the challenges this initiator sends for mutual CHAP.
pub const CHALLENGE_LEN: usize = 16;

/// A CHAP exchange that cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    #[error("the target did not send {0}")]
    Missing(&'static str),
    #[error("the target chose CHAP_A={0}; only 5 (MD5) was offered")]
    Algorithm(String),
    #[error("invalid {key}={value:?} from the target: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("mutual CHAP: the target answered as {got:?}, expected {expected:?}")]
    WrongName { expected: String, got: String },
    #[error("mutual CHAP: the target's CHAP_R does not match (wrong secret or a forged answer)")]
    WrongResponse,
}

/// The initiator's half of a CHAP exchange.
#[derive(Clone, Debug)]
pub struct ChapInitiator {
    credentials: ChapCredentials,
    mutual: Option<ChapCredentials>,
    /// Our CHAP_I/CHAP_C for mutual CHAP, once sent.
    our_challenge: Option<(u8, Vec<u8>)>,
    /// Fixed identifier and challenge for tests; random otherwise.
    forced_challenge: Option<(u8, Vec<u8>)>,
}

fn find<'a>(pairs: &'a [KeyValue], key: &'static str) -> Result<&'a str, ChapError> {
    pairs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
        .ok_or(ChapError::Missing(key))
}

fn binary(pairs: &[KeyValue], key: &'static str) -> Result<Vec<u8>, ChapError> {
    let value = find(pairs, key)?;
    let bytes = text::decode_binary(value).map_err(|e| ChapError::Invalid {
        key,
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    if bytes.is_empty() {
        return Err(ChapError::Invalid {
            key,
            value: value.to_owned(),
            reason: "empty".to_owned(),
        });
    }
    Ok(bytes)
}

impl ChapInitiator {
    /// One-way CHAP with `credentials`, mutual when `mutual` (the name and
    /// secret the target must prove) is given.
    pub fn new(credentials: ChapCredentials, mutual: Option<ChapCredentials>) -> ChapInitiator {
        ChapInitiator {
            credentials,
            mutual,
            our_challenge: None,
            forced_challenge: None,
        }
    }

    /// Uses a fixed identifier and challenge for mutual CHAP instead of
    /// random ones (deterministic tests).
    pub fn with_challenge(mut self, identifier: u8, challenge: Vec<u8>) -> ChapInitiator {
        self.forced_challenge = Some((identifier, challenge));
        self
    }

    /// Whether the target must authenticate itself too.
    pub fn is_mutual(&self) -> bool {
        self.mutual.is_some()
    }

    /// The first step: the algorithm list.
    pub fn start(&self) -> Vec<KeyValue> {
        vec![KeyValue::new("CHAP_A", CHAP_MD5)]
    }

    /// Answers the target's CHAP_A/CHAP_I/CHAP_C with CHAP_N/CHAP_R and,
    /// for mutual CHAP, our own CHAP_I/CHAP_C.
    pub fn respond(&mut self, received: &[KeyValue]) -> Result<Vec<KeyValue>, ChapError> {
        let a = find(received, "CHAP_A")?;
        if a != CHAP_MD5 {
            return Err(ChapError::Algorithm(a.to_owned()));
        }
        let i = find(received, "CHAP_I")?;
        let id = text::decode_numerical(i)
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| ChapError::Invalid {
                key: "CHAP_I",
                value: i.to_owned(),
                reason: "not a number from 0 to 255".to_owned(),
            })?;
        let challenge = binary(received, "CHAP_C")?;
        let r = chap_md5(id, &self.credentials.secret, &challenge);
        let mut out = vec![
            KeyValue::new("CHAP_N", self.credentials.user.clone()),
            KeyValue::new("CHAP_R", text::encode_hex(&r)),
        ];
        if self.mutual.is_some() {
            let (our_id, our_c) = match self.forced_challenge.clone() {
                Some(forced) => forced,
                None => loop {
                    let c: [u8; CHALLENGE_LEN] = crate::entropy::bytes();
                    // Never hand the target its own challenge back (a
                    // reflection would let it answer with ours).
                    if c[..] != challenge[..] {
                        break (crate::entropy::bytes::<1>()[0], c.to_vec());
                    }
                },
            };
            out.push(KeyValue::new("CHAP_I", our_id.to_string()));
            out.push(KeyValue::new("CHAP_C", text::encode_hex(&our_c)));
            self.our_challenge = Some((our_id, our_c));
        }
        Ok(out)
    }

    /// Checks the target's CHAP_N/CHAP_R (mutual CHAP). Succeeds trivially
    /// for one-way CHAP.
    pub fn verify(&self, received: &[KeyValue]) -> Result<(), ChapError> {
        let (Some(mutual), Some((id, challenge))) = (&self.mutual, &self.our_challenge) else {
            return Ok(());
        };
        let name = find(received, "CHAP_N")?;
        if name != mutual.user {
            return Err(ChapError::WrongName {
                expected: mutual.user.clone(),
                got: name.to_owned(),
            });
        }
        let r = binary(received, "CHAP_R")?;
        if r[..] != chap_md5(*id, &mutual.secret, challenge)[..] {
            return Err(ChapError::WrongResponse);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, v)
    }

    fn hex(s: &str) -> Vec<u8> {
        text::decode_binary(&format!("0x{s}")).unwrap()
    }

    /// Expected digests computed outside this code (md5sum over the
    /// concatenated bytes, RFC 1994 §4.1 layout).
    #[test]
    fn md5_response_matches_independent_computation() {
        let challenge: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            chap_md5(1, b"secret", &challenge).to_vec(),
            hex("740e86463bda3a4d7017d6e0fba0699d")
        );
        assert_eq!(
            chap_md5(0xff, b"Password", &[0xde, 0xad, 0xbe, 0xef]).to_vec(),
            hex("74cea5056d0fe39d8f2f1e0891bbc5bd")
        );
        // Every input takes part.
        assert_ne!(
            chap_md5(2, b"secret", &challenge),
            chap_md5(1, b"secret", &challenge)
        );
        assert_ne!(
            chap_md5(1, b"secreT", &challenge),
            chap_md5(1, b"secret", &challenge)
        );
    }

    #[test]
    fn one_way_answer() {
        let mut c = ChapInitiator::new(ChapCredentials::new("alice", "secret"), None);
        assert_eq!(c.start(), vec![kv("CHAP_A", "5")]);
        let out = c
            .respond(&[
                kv("CHAP_A", "5"),
                kv("CHAP_I", "1"),
                kv("CHAP_C", "0x000102030405060708090a0b0c0d0e0f"),
            ])
            .unwrap();
        assert_eq!(
            out,
            vec![
                kv("CHAP_N", "alice"),
                kv("CHAP_R", "0x740e86463bda3a4d7017d6e0fba0699d")
            ]
        );
        // Base64 challenge and hex identifier are accepted too.
        let out = c
            .respond(&[
                kv("CHAP_A", "5"),
                kv("CHAP_I", "0x01"),
                kv("CHAP_C", "0bAAECAwQFBgcICQoLDA0ODw=="),
            ])
            .unwrap();
        assert_eq!(out[1], kv("CHAP_R", "0x740e86463bda3a4d7017d6e0fba0699d"));
        assert!(c.verify(&[]).is_ok());
    }

    #[test]
    fn bad_target_values() {
        let mut c = ChapInitiator::new(ChapCredentials::new("a", "s"), None);
        let base = [kv("CHAP_A", "5"), kv("CHAP_I", "7"), kv("CHAP_C", "0x01")];
        let with = |k: &str, v: &str| {
            let mut p = base.to_vec();
            p.retain(|kv| kv.key != k);
            if !v.is_empty() {
                p.push(kv(k, v));
            }
            p
        };
        assert_eq!(
            c.respond(&with("CHAP_A", "7")),
            Err(ChapError::Algorithm("7".into()))
        );
        assert_eq!(
            c.respond(&with("CHAP_I", "")),
            Err(ChapError::Missing("CHAP_I"))
        );
        assert!(matches!(
            c.respond(&with("CHAP_I", "256")),
            Err(ChapError::Invalid { key: "CHAP_I", .. })
        ));
        assert!(matches!(
            c.respond(&with("CHAP_C", "abc")),
            Err(ChapError::Invalid { key: "CHAP_C", .. })
        ));
        assert_eq!(
            c.respond(&with("CHAP_C", "")),
            Err(ChapError::Missing("CHAP_C"))
        );
    }

    #[test]
    fn mutual_round_trip() {
        let mut c = ChapInitiator::new(
            ChapCredentials::new("init", "initiator-secret"),
            Some(ChapCredentials::new("tgt", "target-secret")),
        )
        .with_challenge(9, vec![0xaa; 16]);
        let out = c
            .respond(&[kv("CHAP_A", "5"), kv("CHAP_I", "3"), kv("CHAP_C", "0x0102")])
            .unwrap();
        assert_eq!(out[2], kv("CHAP_I", "9"));
        assert_eq!(out[3], kv("CHAP_C", &text::encode_hex(&[0xaa; 16])));
        let good = chap_md5(9, b"target-secret", &[0xaa; 16]);
        assert_eq!(
            c.verify(&[kv("CHAP_N", "tgt"), kv("CHAP_R", &text::encode_hex(&good))]),
            Ok(())
        );
        let wrong = chap_md5(9, b"wrong", &[0xaa; 16]);
        assert_eq!(
            c.verify(&[kv("CHAP_N", "tgt"), kv("CHAP_R", &text::encode_hex(&wrong))]),
            Err(ChapError::WrongResponse)
        );
        assert!(matches!(
            c.verify(&[
                kv("CHAP_N", "other"),
                kv("CHAP_R", &text::encode_hex(&good))
            ]),
            Err(ChapError::WrongName { .. })
        ));
        assert_eq!(
            c.verify(&[kv("CHAP_N", "tgt")]),
            Err(ChapError::Missing("CHAP_R"))
        );
    }

    #[test]
    fn random_mutual_challenge_is_fresh() {
        let mut c = ChapInitiator::new(
            ChapCredentials::new("i", "s1"),
            Some(ChapCredentials::new("t", "s2")),
        );
        let target_c = [0x55u8; 16];
        let out = c
            .respond(&[
                kv("CHAP_A", "5"),
                kv("CHAP_I", "1"),
                kv("CHAP_C", &text::encode_hex(&target_c)),
            ])
            .unwrap();
        let ours = text::decode_binary(&out[3].value).unwrap();
        assert_eq!(ours.len(), CHALLENGE_LEN);
        assert_ne!(ours, target_c.to_vec());
    }

    #[test]
    fn debug_hides_the_secret() {
        let d = format!("{:?}", ChapCredentials::new("u", "hunter2"));
        assert!(!d.contains("hunter2"), "{d}");
    }
}
