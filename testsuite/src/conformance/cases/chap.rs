//! CHAP cases that compute or bend values (RFC 7143 §12.1.3, RFC 1994):
//! the challenge's shape, the algorithm list, base64 responses, wrong,
//! reflected and oversized values. The plain logins (one-way, mutual,
//! wrong secret) are scripts in `testsuite/cases/iSCSI/CHAP.toml`.

use iesp_initiator::chap::chap_md5;
use iesp_proto::bhs::Opcode;
use iesp_proto::framing::Frame;
use iesp_proto::text::{self, KeyValue};

use super::super::case::Level::{Must, Should};
use super::super::case::LoginMode;
use super::super::exec::{Ctx, Fail, SendSpec, ensure};
use super::{Def, boxed};
use crate::conformance::case::CaseFuture;

pub fn cases() -> Vec<Def> {
    vec![
        Def::new(
            "iSCSI.CHAP.ChallengeWellFormed",
            "RFC 7143 §12.1.3",
            Must,
            "After CHAP_A=5 the target sends CHAP_A=5, a CHAP_I from 0 to 255 and a CHAP_C that decodes as a binary value",
            challenge_well_formed,
        ),
        Def::new(
            "iSCSI.CHAP.AlgorithmChosenFromList",
            "RFC 7143 §12.1.3",
            Must,
            "CHAP_A=233,5 (an unassigned algorithm first) is answered CHAP_A=5",
            algorithm_from_list,
        ),
        Def::new(
            "iSCSI.CHAP.NoAcceptableAlgorithm",
            "RFC 7143 §12.1.3",
            Must,
            "CHAP_A=233 (unassigned) alone is refused: CHAP_A=Reject or a Login reject",
            no_acceptable_algorithm,
        ),
        Def::new(
            "iSCSI.CHAP.NoTransitBeforeAuthentication",
            "RFC 7143 §6.3, §12",
            Must,
            "The target does not leave the security stage (T=1) before CHAP has been carried out",
            no_transit_before_auth,
        ),
        Def::new(
            "iSCSI.CHAP.ResponseInBase64",
            "RFC 7143 §6.1, §12.1.3",
            Must,
            "A correct CHAP_R written as a base64 constant (0b…) is accepted",
            response_in_base64,
        ),
        Def::new(
            "iSCSI.CHAP.WrongResponseRefused",
            "RFC 7143 §12.1.3, §11.13.5",
            Must,
            "A CHAP_R computed with the wrong secret gets Authentication failure (0x0201)",
            wrong_response,
        ),
        Def::new(
            "iSCSI.CHAP.OversizeResponseRefused",
            "RFC 7143 §12.1.3, §6.1",
            Should,
            "A 1024-byte CHAP_R is refused with status class 2",
            oversize_response,
        ),
        Def::new(
            "iSCSI.CHAP.ReflectedChallengeRefused",
            "RFC 7143 §12.1.3",
            Should,
            "A mutual-CHAP challenge equal to the one the target sent is refused (status class 2)",
            reflected_challenge,
        )
        .gates(&["chap", "mutual-chap"]),
    ]
    .into_iter()
    .map(|d| {
        let d = d.login(LoginMode::None);
        if d.gates.is_empty() { d.gates(&["chap"]) } else { d }
    })
    .collect()
}

/// What the target sent with its challenge.
struct Challenge {
    algorithm: String,
    id_text: String,
    id: u8,
    challenge: Vec<u8>,
}

async fn login_pdu(ctx: &mut Ctx, transit: bool, pairs: Vec<String>) -> Result<Frame, Fail> {
    let mut spec = SendSpec::new(Opcode::LOGIN_REQUEST)
        .set("CSG", 0)
        .set("T", u64::from(transit));
    if transit {
        spec = spec.set("NSG", 1);
    }
    spec.data = Some(super::super::exec::DataSrc::Text(pairs));
    ctx.send(&spec).await?;
    ctx.expect_pdu(Opcode::LOGIN_RESPONSE, None).await
}

fn keys(f: &Frame) -> Result<Vec<KeyValue>, Fail> {
    text::decode(&f.data).map_err(|e| Fail::check(format!("Login Response text: {e}")))
}

fn key<'a>(pairs: &'a [KeyValue], k: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|kv| kv.key == k)
        .map(|kv| kv.value.as_str())
}

fn status_of(f: &Frame) -> u16 {
    f.bhs.u16_at(36)
}

/// Opens a connection and runs the security stage up to the challenge.
/// Connects and offers `AuthMethod=CHAP` in the first Login Request (with
/// the T bit as given); the target must not refuse the offer.
async fn offer_chap(ctx: &mut Ctx, transit: bool) -> Result<Frame, Fail> {
    ctx.connect("main").await?;
    let f = login_pdu(
        ctx,
        transit,
        vec!["@identity".into(), "AuthMethod=CHAP".into()],
    )
    .await?;
    ensure(status_of(&f) == 0, || {
        format!(
            "the AuthMethod=CHAP offer was refused with status {:#06x}",
            status_of(&f)
        )
    })?;
    Ok(f)
}

async fn challenge(ctx: &mut Ctx, algorithms: &str) -> Result<Challenge, Fail> {
    let f = offer_chap(ctx, false).await?;
    let p = keys(&f)?;
    ensure(key(&p, "AuthMethod") == Some("CHAP"), || {
        format!("AuthMethod=CHAP answered {:?}", key(&p, "AuthMethod"))
    })?;
    let f = login_pdu(ctx, false, vec![format!("CHAP_A={algorithms}")]).await?;
    ensure(status_of(&f) == 0, || {
        format!(
            "CHAP_A={algorithms} was refused with status {:#06x}",
            status_of(&f)
        )
    })?;
    let p = keys(&f)?;
    let algorithm = key(&p, "CHAP_A").unwrap_or("").to_owned();
    let id_text = key(&p, "CHAP_I")
        .ok_or_else(|| Fail::check("no CHAP_I after CHAP_A"))?
        .to_owned();
    let c = key(&p, "CHAP_C").ok_or_else(|| Fail::check("no CHAP_C after CHAP_A"))?;
    let challenge =
        text::decode_binary(c).map_err(|e| Fail::check(format!("CHAP_C {c:?}: {e}")))?;
    let id = text::decode_numerical(&id_text)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| Fail::check(format!("CHAP_I {id_text:?} is not a number from 0 to 255")))?;
    Ok(Challenge {
        algorithm,
        id_text,
        id,
        challenge,
    })
}

fn creds(ctx: &Ctx) -> Result<(String, Vec<u8>), Fail> {
    let c = ctx
        .target
        .chap
        .as_ref()
        .ok_or_else(|| Fail::skip("needs CHAP credentials"))?;
    Ok((c.user.clone(), c.secret.clone()))
}

fn challenge_well_formed(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let c = challenge(ctx, "5").await?;
        ensure(c.algorithm == "5", || {
            format!("CHAP_A=5 answered CHAP_A={}", c.algorithm)
        })?;
        ensure(!c.id_text.is_empty(), || "empty CHAP_I".to_owned())?;
        ensure(!c.challenge.is_empty(), || "empty CHAP_C".to_owned())
    })
}

fn algorithm_from_list(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let c = challenge(ctx, "233,5").await?;
        ensure(c.algorithm == "5", || {
            format!("CHAP_A=233,5 answered CHAP_A={}", c.algorithm)
        })
    })
}

fn no_acceptable_algorithm(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        offer_chap(ctx, false).await?;
        let f = login_pdu(ctx, false, vec!["CHAP_A=233".into()]).await?;
        if status_of(&f) >> 8 == 2 {
            return Ok(());
        }
        let p = keys(&f)?;
        ensure(
            key(&p, "CHAP_A") == Some("Reject") && key(&p, "CHAP_C").is_none(),
            || {
                format!(
                    "CHAP_A=233 answered with status {:#06x}, CHAP_A={:?}, CHAP_C={:?}",
                    status_of(&f),
                    key(&p, "CHAP_A"),
                    key(&p, "CHAP_C")
                )
            },
        )
    })
}

fn no_transit_before_auth(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let f = offer_chap(ctx, true).await?;
        ensure(f.bhs.0[1] & 0x80 == 0, || {
            "the target set T=1 before any CHAP exchange".to_owned()
        })
    })
}

/// Sends CHAP_N and CHAP_R (and `extra`) asking to transit; returns the
/// Login Response.
async fn answer(
    ctx: &mut Ctx,
    name: &str,
    response: &str,
    extra: Vec<String>,
) -> Result<Frame, Fail> {
    let mut pairs = vec![format!("CHAP_N={name}"), format!("CHAP_R={response}")];
    pairs.extend(extra);
    login_pdu(ctx, true, pairs).await
}

fn response_in_base64(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (user, secret) = creds(ctx)?;
        let c = challenge(ctx, "5").await?;
        let r = chap_md5(c.id, &secret, &c.challenge);
        let f = answer(ctx, &user, &text::encode_base64(&r), Vec::new()).await?;
        ensure(status_of(&f) == 0, || {
            format!(
                "the base64 CHAP_R was refused with status {:#06x}",
                status_of(&f)
            )
        })
    })
}

fn wrong_response(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (user, _) = creds(ctx)?;
        let c = challenge(ctx, "5").await?;
        let r = chap_md5(c.id, b"certainly-not-the-secret", &c.challenge);
        let f = answer(ctx, &user, &text::encode_hex(&r), Vec::new()).await?;
        ensure(status_of(&f) == 0x0201, || {
            format!(
                "a wrong CHAP_R got status {:#06x}; expected 0x0201 (Authentication failure)",
                status_of(&f)
            )
        })?;
        ctx.expect_disconnect(None).await
    })
}

fn oversize_response(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (user, _) = creds(ctx)?;
        let _ = challenge(ctx, "5").await?;
        let f = answer(ctx, &user, &text::encode_hex(&[0u8; 1024]), Vec::new()).await?;
        ensure(status_of(&f) >> 8 == 2, || {
            format!("a 1024-byte CHAP_R got status {:#06x}", status_of(&f))
        })
    })
}

fn reflected_challenge(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (user, secret) = creds(ctx)?;
        let c = challenge(ctx, "5").await?;
        let r = chap_md5(c.id, &secret, &c.challenge);
        let extra = vec![
            format!("CHAP_I={}", c.id_text),
            format!("CHAP_C={}", text::encode_hex(&c.challenge)),
        ];
        let f = answer(ctx, &user, &text::encode_hex(&r), extra).await?;
        ensure(status_of(&f) >> 8 == 2, || {
            format!(
                "a mutual challenge equal to the target's own was accepted (status {:#06x})",
                status_of(&f)
            )
        })
    })
}
