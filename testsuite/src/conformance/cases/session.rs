//! Session-level cases in Rust: the command window filled and watched
//! (RFC 7143 §4.2.2.1), SendTargets answers parsed and continued (§13.8,
//! §11.11, Appendix C), MaxRecvDataSegmentLength re-declared in full
//! feature phase (§13.12).

use std::collections::BTreeSet;

use bytes::BytesMut;
use iesp_initiator::discovery::TargetAddress;
use iesp_proto::bhs::{Opcode, RESERVED_TAG};
use iesp_proto::pdu::Pdu;
use iesp_proto::text;

use super::super::case::Level::Must;
use super::super::case::LoginMode;
use super::super::exec::{Ctx, Event, Expectation, Fail, SendSpec, describe_frame, ensure};
use super::super::matchers::Matcher;
use super::{Def, boxed, read, require_good, require_no_violation};
use crate::conformance::case::CaseFuture;

pub fn cases() -> Vec<Def> {
    vec![
        Def::new(
            "iSCSI.CmdSN.WindowFilled",
            "RFC 7143 §4.2.2.1",
            Must,
            "As many non-immediate commands as the window holds (up to 64), sent at once, are all answered",
            window_filled,
        ),
        Def::new(
            "iSCSI.CmdSN.WindowNeverNegative",
            "RFC 7143 §4.2.2.1",
            Must,
            "Over a run of commands every response has ExpCmdSN = the next CmdSN and MaxCmdSN ≥ ExpCmdSN − 1",
            window_never_negative,
        ),
        Def::new(
            "iSCSI.Discovery.TargetAddressFormat",
            "RFC 7143 §13.8, Appendix C",
            Must,
            "Every TargetAddress of a SendTargets answer reads domainname[:port],portal-group-tag",
            target_address_format,
        )
        .login(LoginMode::Discovery),
        Def::new(
            "iSCSI.Discovery.AnswerWithinMaxRecvDataSegmentLength",
            "RFC 7143 §13.12, §11.11",
            Must,
            "With MaxRecvDataSegmentLength 512 declared, SendTargets answers come in segments of at most 512 bytes, continued with C=1 and a TTT",
            send_targets_small_segments,
        )
        .login(LoginMode::None),
        Def::new(
            "iSCSI.Text.RedeclaredMaxRecvDataSegmentLength",
            "RFC 7143 §13.12, §6.4",
            Must,
            "After MaxRecvDataSegmentLength=4096 is declared in a Text Request, no Data-In segment exceeds 4096 bytes",
            redeclared_mrdsl,
        )
        .gates(&["lun"]),
    ]
}

fn window_filled(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let c = ctx.conn()?;
        let window = c.max_cmd_sn.wrapping_sub(c.exp_cmd_sn).wrapping_add(1);
        if window == 0 || window > 1 << 31 {
            return Err(Fail::skip(format!(
                "the command window is closed (ExpCmdSN {}, MaxCmdSN {})",
                c.exp_cmd_sn, c.max_cmd_sn
            )));
        }
        let n = window.min(64);
        let mut itts = BTreeSet::new();
        for _ in 0..n {
            let sent = ctx
                .send(&SendSpec::new(Opcode::NOP_OUT).set("I", 0))
                .await?;
            itts.insert(sent.itt());
        }
        while !itts.is_empty() {
            match ctx.recv_event(ctx.timing.response, false).await? {
                Event::Pdu(f) if f.bhs.opcode() == Opcode::NOP_IN && itts.remove(&f.bhs.itt()) => {}
                Event::Pdu(f) => {
                    return Err(Fail::check(format!("unexpected {}", describe_frame(&f))));
                }
                other => {
                    return Err(Fail::check(format!(
                        "{} of {n} commands answered, then {}",
                        n as usize - itts.len(),
                        other.describe()
                    )));
                }
            }
        }
        ctx.ping(b"after").await.map(drop)
    })
}

fn window_never_negative(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        for i in 0..16 {
            let sent = ctx
                .send(&SendSpec::new(Opcode::NOP_OUT).set("I", u64::from(i % 3 == 0)))
                .await?;
            let exp = Expectation::pdu(Opcode::NOP_IN)
                .field("ITT", Matcher::eq_int(u64::from(sent.itt())));
            let (_, f) = ctx.expect_one(&[exp], None).await?;
            let f = f.ok_or_else(|| Fail::error("no frame"))?;
            let (e, m) = (f.bhs.u32_at(28), f.bhs.u32_at(32));
            let cmd_sn = sent.u32_at(24);
            let want = if sent.immediate() {
                cmd_sn
            } else {
                cmd_sn.wrapping_add(1)
            };
            ensure(e == want, || {
                format!("response {i}: ExpCmdSN {e}, expected {want}")
            })?;
            ensure(m.wrapping_sub(e).wrapping_add(1) <= 1 << 31, || {
                format!("response {i}: MaxCmdSN {m} is below ExpCmdSN − 1 ({e} − 1)")
            })?;
        }
        Ok(())
    })
}

/// Sends a Text Request and gathers the whole answer, following C=1
/// continuations; returns the text and the segment sizes seen.
async fn text_exchange(ctx: &mut Ctx, pairs: &[&str]) -> Result<(Vec<u8>, Vec<usize>), Fail> {
    let first = ctx
        .send(&SendSpec::new(Opcode::TEXT_REQUEST).text(pairs))
        .await?;
    let itt = first.itt();
    let mut text = BytesMut::new();
    let mut sizes = Vec::new();
    for _ in 0..4096 {
        let f = match ctx.recv_event(ctx.timing.response, false).await? {
            Event::Pdu(f) => f,
            other => {
                return Err(Fail::check(format!(
                    "waiting for the Text Response: {}",
                    other.describe()
                )));
            }
        };
        let Pdu::TextResponse(rsp) = Pdu::decode(&f.bhs) else {
            return Err(Fail::check(format!(
                "expected a Text Response, got {}",
                describe_frame(&f)
            )));
        };
        ensure(rsp.itt == itt, || {
            format!(
                "Text Response ITT {:#x}, the request's was {itt:#x}",
                rsp.itt
            )
        })?;
        sizes.push(f.data.len());
        text.extend_from_slice(&f.data);
        if rsp.continue_bit {
            ensure(!rsp.final_bit, || {
                "Text Response with both C=1 and F=1 (RFC 7143 §11.11.2)".to_owned()
            })?;
            ensure(rsp.ttt != RESERVED_TAG, || {
                "Text Response with C=1 but TTT 0xffffffff (RFC 7143 §11.11.4)".to_owned()
            })?;
            let next = SendSpec::new(Opcode::TEXT_REQUEST)
                .set("ITT", u64::from(itt))
                .set("TTT", u64::from(rsp.ttt));
            ctx.send(&next).await?;
            continue;
        }
        ensure(rsp.final_bit, || {
            "Text Response with C=0 and F=0 to a final request".to_owned()
        })?;
        return Ok((text.to_vec(), sizes));
    }
    Err(Fail::check(
        "the Text Response did not end within 4096 PDUs",
    ))
}

fn target_address_format(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (raw, _) = text_exchange(ctx, &["SendTargets=All"]).await?;
        let pairs =
            text::decode(&raw).map_err(|e| Fail::check(format!("SendTargets answer: {e}")))?;
        let addrs: Vec<&str> = pairs
            .iter()
            .filter(|kv| kv.key == "TargetAddress")
            .map(|kv| kv.value.as_str())
            .collect();
        ensure(!addrs.is_empty(), || {
            "the SendTargets answer has no TargetAddress".to_owned()
        })?;
        for a in addrs {
            let parsed = TargetAddress::parse(a)
                .ok_or_else(|| Fail::check(format!("TargetAddress {a:?} does not parse")))?;
            ensure(parsed.portal_group_tag.is_some(), || {
                format!(
                    "TargetAddress {a:?} has no portal group tag (SendTargets answers must carry it)"
                )
            })?;
        }
        Ok(())
    })
}

fn send_targets_small_segments(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        ctx.connect("main").await?;
        let mut opts = ctx.login_options(true)?;
        opts.max_recv_data_segment_length = 512;
        ctx.login_with(&opts)
            .await
            .map_err(|e| Fail::check(format!("discovery login: {e}")))?;
        let (raw, sizes) = text_exchange(ctx, &["SendTargets=All"]).await?;
        if let Some(big) = sizes.iter().find(|s| **s > 512) {
            return Err(Fail::check(format!(
                "a Text Response segment of {big} bytes (segments: {sizes:?})"
            )));
        }
        let pairs =
            text::decode(&raw).map_err(|e| Fail::check(format!("SendTargets answer: {e}")))?;
        ensure(pairs.iter().any(|kv| kv.key == "TargetName"), || {
            "the reassembled answer lists no TargetName".to_owned()
        })
    })
}

fn redeclared_mrdsl(ctx: &mut Ctx) -> CaseFuture<'_> {
    boxed(async move {
        let (raw, _) = text_exchange(ctx, &["MaxRecvDataSegmentLength=4096"]).await?;
        let pairs = text::decode(&raw).map_err(|e| Fail::check(format!("Text Response: {e}")))?;
        if let Some(kv) = pairs.iter().find(|kv| kv.key == "MaxRecvDataSegmentLength") {
            return Err(Fail::check(format!("the declaration was answered: {kv}")));
        }
        ctx.conn_mut()?.params.initiator_mrdsl = 4096;
        let bs = u64::from(ctx.block_size);
        let out = read(ctx, 0, (64 * 1024 / bs).max(1), |_| {}).await?;
        require_no_violation(&out, "§13.12", "Data-In after the new declaration")?;
        require_good(&out, "READ of 64 KiB")
    })
}
