//! A CHAP login driven by hand, one Login Request at a time (RFC 7143
//! §12.1.3), for tests that answer the target's challenge themselves:
//! wrongly, reflected, oversize, with a mutual challenge of their own.
//!
//! [`challenged`] runs the first two security-stage steps (names and
//! `AuthMethod=CHAP`, then `CHAP_A=5`) and returns the target's `CHAP_I`
//! and `CHAP_C`; [`security_step`] sends whatever the test answers;
//! [`chap_response`] computes a correct `CHAP_R`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use iesp_initiator::{RawConnection, Received};
use iesp_proto::chap::chap_md5;
use iesp_proto::framing::Frame;
use iesp_proto::pdu::{Isid, LoginRequest, LoginStatus, Pdu, Stage};
use iesp_proto::text::{self, KeyValue};

/// How long a Login Response may take.
const ANSWER: Duration = Duration::from_secs(5);

/// One ISID for every step of a hand-driven login.
const ISID_QUALIFIER: u32 = 7;

/// A connection the target has just sent a CHAP challenge on.
pub struct Challenged {
    pub conn: RawConnection,
    /// `CHAP_I`.
    pub id: u8,
    /// `CHAP_C`, decoded.
    pub challenge: Vec<u8>,
}

/// Connects to `addr` and logs in as `initiator` to `target` up to the
/// target's CHAP challenge. Panics if the target refuses before it.
pub async fn challenged(addr: SocketAddr, initiator: &str, target: &str) -> Challenged {
    let mut conn = RawConnection::connect(addr).await.expect("connect");
    let first = security_step(
        &mut conn,
        &[
            ("InitiatorName", initiator),
            ("TargetName", target),
            ("SessionType", "Normal"),
            ("AuthMethod", "CHAP"),
        ],
        false,
    )
    .await;
    assert_eq!(
        login_status(&first),
        LoginStatus::SUCCESS,
        "AuthMethod=CHAP"
    );
    let second = security_step(&mut conn, &[("CHAP_A", "5")], false).await;
    let pairs = text::decode(&second.data).expect("text keys");
    let id = value(&pairs, "CHAP_I").parse().expect("CHAP_I");
    let challenge = text::decode_binary(value(&pairs, "CHAP_C")).expect("CHAP_C");
    Challenged {
        conn,
        id,
        challenge,
    }
}

/// The correct `CHAP_R` (hex) for `secret`: MD5 over id, secret, challenge.
pub fn chap_response(id: u8, secret: &[u8], challenge: &[u8]) -> String {
    text::encode_hex(&chap_md5(id, secret, challenge))
}

/// Sends one security-stage Login Request carrying `pairs` (asking to move
/// to the operational stage when `transit`); returns the answer. Panics
/// on anything but a frame within 5 s.
pub async fn security_step(
    conn: &mut RawConnection,
    pairs: &[(&str, &str)],
    transit: bool,
) -> Frame {
    let kv: Vec<KeyValue> = pairs.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect();
    let req = LoginRequest {
        transit,
        csg: Stage::SECURITY,
        nsg: if transit {
            Stage::OPERATIONAL
        } else {
            Stage(0)
        },
        isid: Isid::random(ISID_QUALIFIER),
        itt: 1,
        ..Default::default()
    };
    let data = Bytes::from(text::encode_to_vec(&kv));
    conn.send(&Frame::with_data(&Pdu::LoginRequest(req), data))
        .await
        .expect("send a Login Request");
    match conn.recv(ANSWER).await {
        Received::Frame(f) => f,
        other => panic!("expected a Login Response, got {other:?}"),
    }
}

/// The status of a Login Response. Panics on another PDU.
pub fn login_status(f: &Frame) -> LoginStatus {
    match f.pdu() {
        Pdu::LoginResponse(r) => r.status,
        other => panic!("expected a Login Response, got {other:?}"),
    }
}

fn value<'a>(pairs: &'a [KeyValue], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
        .unwrap_or_else(|| panic!("no {key} in {pairs:?}"))
}
