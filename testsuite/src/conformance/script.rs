//! TOML case scripts: the file format, its loader and its interpreter.
//!
//! One file holds one suite (`testsuite/cases/<Family>/<Suite>.toml`, or
//! any file given with `--scripts DIR`):
//!
//! ```toml
//! family = "iSCSI"
//! suite = "Nop"
//!
//! [defaults]                 # optional, for every case of the file
//! section = "RFC 7143 §11.18"
//! level = "MUST"
//!
//! [[case]]
//! name = "PingEchoesData"
//! summary = "A NOP-Out with an ITT is answered by a NOP-In that echoes the ITT and the data"
//! # login = "normal" (default) | "discovery" | "none"
//! # requires = ["lun", "param:InitialR2T=Yes", "chap", "declared:NAME"]
//! #   param: compares a negotiated key (=, !=, >=, <=) or the LUN's
//! #   geometry (blocks, capacity, block_size) with a number or
//! #   $block_size: "param:capacity>=2097152", "param:FirstBurstLength>=$block_size"
//! # destructive = true        # writes to the LUN: runs with --dataloss only
//! # profiles = "default" | "all" | ["digests", "small-mrdsl"]
//!
//! [[case.step]]
//! send = "NopOut"
//! data = { pattern = 100 }
//! as = "ping"
//!
//! [[case.step]]
//! expect = "NopIn"
//! fields = { ITT = "$ping.ITT", TTT = 0xffffffff }
//! data = { echo = "ping" }
//! ```
//!
//! ## Steps
//!
//! Each `[[case.step]]` has exactly one action key; `timeout = "2s"` sets
//! its own wait.
//!
//! | action | what it does |
//! |---|---|
//! | `send = "Kind"` | a PDU from its template: `fields = {Name = value}` overrides by RFC name (or `byteN`, `u32@N`), `text = ["k=v", "@identity", "@operational"]`, `data = {hex/pattern/fill}`, `ahs = "hex"`, `cdb = "READ(10) lba=0 blocks=1"`, `verbatim = true` (lengths as given), `bad_header_digest`/`bad_data_digest = true`, `as = "name"` |
//! | `send_raw = "hex"` | bytes as given |
//! | `expect = "Kind"` | a PDU with `fields`, `keys` (text), `data` matchers (`{len, hex, prefix, echo, fields}`) |
//! | `expect_reject = "Reason"` | a Reject with that reason (or a list), carrying the header of `header = "last"` |
//! | `expect_login_status = "Status"` | a Login Response with that status (name, number, list, or `{ class = 2 }`) |
//! | `expect_silence = "500ms"` | no PDU for that long (`true`: the run's silence time) |
//! | `expect_disconnect = true` | the target closes the connection; `allow = ["Reject"]` tolerates PDUs first |
//! | `expect_one_of = [{…}, {…}]` | any one of several expectations (the above, one event) |
//! | `scsi = "CDB spec"` | a whole command, data moved as negotiated and checked; `status`, `sense_key`, `asc = [..]`, `data`, `residual`, `edtl`, `write`, `check = false` |
//! | `login = "normal"` | a login through the initiator library, with the run's profile or `profile = "digests"`: `keys`, `security_keys`, `isid`, `tsih`, `cid`, `cmd_sn`, `digests`, `chap`, `expect_status` |
//! | `logout = true`, `ping = N` | close the session; NOP-Out ping with N data bytes that must be echoed |
//! | `connect = "name"`, `use = "name"`, `close = "fin"/"rst"` | connections (`isid = "same"` reuses the current session's ISID) |
//! | `delay = "100ms"`, `set = {var = value}`, `check = "value"` | pacing, variables, comparisons (`check = "$b"`, `eq = "${a + 1}"`) |
//!
//! Values: numbers, `"0x.."`, `"$var"`, `"${expr}"`, or names of enumerated
//! fields (`Function = "AbortTask"`, `Status = "GOOD"`). Variables the
//! executor keeps: `cmd_sn`, `exp_stat_sn`, `ExpCmdSN`, `MaxCmdSN`,
//! `last_stat_sn`, `itt` (of the last PDU sent), `isid`, `tsih`, `cid`,
//! `lun`, `initiator`, `target`, `block_size`, `blocks`, `last_lba`, and the
//! negotiated `MaxBurstLength`, `FirstBurstLength`, `MaxOutstandingR2T`,
//! `InitiatorMRDSL`, `TargetMRDSL`, `ImmediateData`, `InitialR2T`,
//! `ErrorRecoveryLevel`, `MaxConnections`.

use std::time::Duration;

use bytes::Bytes;
use iesp_initiator::{ChapCredentials, LoginError};
use iesp_proto::bhs::{Lun, Opcode};
use iesp_proto::pdu::{Isid, LoginStatus, Residual};
use iesp_proto::scsi::{ScsiStatus, SenseKey};
use iesp_proto::text::KeyValue;

use super::case::{Body, Case, CaseId, CaseMeta, Gate, Level, LoginMode, Profiles, Setup};
use super::cdb::{self, Dir};
use super::exec::{
    Ctx, DataMatch, DataSrc, Expectation, Fail, SendHow, SendSpec, describe_frame, field_exists,
    symbol_known,
};
use super::matchers::{Bound, MatchError, Matcher, Mismatch, Test};
use super::transfer::{End, ScsiRequest};
use super::value::{eval_int, interpolate, parse_duration, parse_hex, parse_int};

/// One step of a script, with a label for messages.
#[derive(Clone, Debug)]
pub struct Step {
    /// `step 3 (expect R2t)`.
    pub label: String,
    pub action: Action,
    pub timeout: Option<Duration>,
}

/// What a step does.
#[derive(Clone, Debug)]
pub enum Action {
    Send(SendSpec),
    SendRaw(Vec<u8>),
    Expect(Vec<Expectation>),
    ExpectDisconnect { allow: Vec<Opcode> },
    Scsi(Box<ScsiStep>),
    Login(Box<LoginStep>),
    Logout,
    Ping(usize),
    Connect { name: String, same_isid: bool },
    Use(String),
    Close { reset: bool },
    Delay(Duration),
    Set(Vec<(String, String)>),
    Check { value: String, matcher: Matcher },
}

/// The SCSI shorthand.
#[derive(Clone, Debug, Default)]
pub struct ScsiStep {
    pub cdb: String,
    pub lun: Option<String>,
    pub edtl: Option<String>,
    pub write: Option<DataSrc>,
    /// Accepted statuses (default GOOD).
    pub status: Vec<u8>,
    pub sense_key: Option<u8>,
    /// Accepted ASC/ASCQ values with masks (`0x24xx`: any qualifier).
    pub asc: Vec<(u16, u16)>,
    pub data: DataMatch,
    pub residual: Option<(char, String)>,
    pub check: bool,
    pub name: Option<String>,
}

/// A login through the initiator library.
#[derive(Clone, Debug, Default)]
pub struct LoginStep {
    pub discovery: bool,
    /// Log in with this profile instead of the run's.
    pub profile: Option<&'static super::profile::Profile>,
    pub keys: Vec<String>,
    pub security_keys: Vec<String>,
    pub isid: Option<String>,
    pub tsih: Option<String>,
    pub cid: Option<String>,
    pub cmd_sn: Option<String>,
    pub digests: Option<bool>,
    pub chap: Option<(String, String)>,
    pub expect_status: Option<Matcher>,
}

/// A script that does not load: file, case and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ScriptError {
    pub origin: String,
    pub message: String,
}

type R<T> = Result<T, String>;

fn opcode(name: &str) -> R<Opcode> {
    if let Some(op) = Opcode::from_name(name) {
        return Ok(op);
    }
    let raw = name
        .strip_prefix("0x")
        .and_then(|h| u8::from_str_radix(h, 16).ok());
    match raw {
        Some(b) if b < 0x40 => Ok(Opcode(b)),
        _ => Err(format!(
            "unknown PDU kind {name:?} (NopOut, ScsiCommand, TaskMgmtRequest, LoginRequest, TextRequest, DataOut, LogoutRequest, SnackRequest, the target's kinds, or 0x00..0x3f)"
        )),
    }
}

fn table<'a>(v: &'a toml::Value, what: &str) -> R<&'a toml::Table> {
    v.as_table()
        .ok_or_else(|| format!("{what} must be a table"))
}

fn string(v: &toml::Value, what: &str) -> R<String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) if *i >= 0 => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(u8::from(*b).to_string()),
        _ => Err(format!("{what} must be a string or a number")),
    }
}

fn strings(v: &toml::Value, what: &str) -> R<Vec<String>> {
    match v {
        toml::Value::Array(a) => a.iter().map(|x| string(x, what)).collect(),
        other => Ok(vec![string(other, what)?]),
    }
}

fn check_keys(t: &toml::Table, allowed: &[&str], what: &str) -> R<()> {
    for k in t.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown key {k:?} in {what} (allowed: {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

/// Checks that a value source is a number, variable, expression or a
/// symbol of the field.
fn check_value(op: Opcode, field: &str, src: &str) -> R<()> {
    let canonical = iesp_proto::pdu::fields::lookup(op, field).map_or(field, |f| f.name);
    if src.starts_with('$')
        || parse_int(src).is_some()
        || symbol_known(op, canonical, src)
        || field == "CDB"
    {
        Ok(())
    } else {
        Err(format!(
            "{src:?} is not a number, $variable, ${{expression}} or a known value of {op:?}.{field}"
        ))
    }
}

fn fields_of(v: &toml::Value, op: Opcode) -> R<Vec<(String, String)>> {
    let t = table(v, "fields")?;
    let mut out = Vec::new();
    for (k, v) in t {
        if iesp_proto::pdu::fields::lookup(op, k).is_none() {
            return Err(format!("{op:?} has no field {k:?}"));
        }
        let s = string(v, k)?;
        check_value(op, k, &s)?;
        out.push((k.clone(), s));
    }
    Ok(out)
}

fn matchers_of(v: &toml::Value, op: Option<Opcode>) -> R<Vec<(String, Matcher)>> {
    let t = table(v, "fields")?;
    let mut out = Vec::new();
    for (k, v) in t {
        if let Some(op) = op
            && !field_exists(op, k)
        {
            return Err(format!("{op:?} has no field {k:?}"));
        }
        let m = Matcher::from_toml(v).map_err(|e| format!("field {k}: {e}"))?;
        if let Some(op) = op {
            for t in &m.tests {
                let bounds: Vec<&Bound> = match t {
                    Test::Eq(b)
                    | Test::Ne(b)
                    | Test::Ge(b)
                    | Test::Le(b)
                    | Test::Gt(b)
                    | Test::Lt(b) => vec![b],
                    Test::Range(a, b) => vec![a, b],
                    Test::In(l) | Test::NotIn(l) => l.iter().collect(),
                    _ => vec![],
                };
                for b in bounds {
                    if let Bound::Str(s) = b {
                        check_value(op, k, s).map_err(|e| format!("field {k}: {e}"))?;
                    }
                }
            }
        }
        out.push((k.clone(), m));
    }
    Ok(out)
}

fn key_matchers(v: &toml::Value) -> R<Vec<(String, Matcher)>> {
    let t = table(v, "keys")?;
    t.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                Matcher::from_toml(v).map_err(|e| format!("key {k}: {e}"))?,
            ))
        })
        .collect()
}

fn data_match(v: &toml::Value) -> R<DataMatch> {
    let t = table(v, "data")?;
    check_keys(
        t,
        &["len", "hex", "prefix", "echo", "fields", "all"],
        "data",
    )?;
    let mut d = DataMatch::default();
    if let Some(l) = t.get("len") {
        d.len = Some(Matcher::from_toml(l)?);
    }
    if let Some(h) = t.get("hex") {
        d.exact = Some(parse_hex(&string(h, "hex")?)?);
    }
    if let Some(h) = t.get("prefix") {
        d.prefix = Some(parse_hex(&string(h, "prefix")?)?);
    }
    if let Some(a) = t.get("all") {
        let n = parse_int(&string(a, "all")?).ok_or("all takes a byte value")?;
        d.all = Some(u8::try_from(n).map_err(|_| "all takes a byte value")?);
    }
    if let Some(e) = t.get("echo") {
        d.echo_of = Some(string(e, "echo")?);
    }
    if let Some(f) = t.get("fields") {
        for (k, m) in matchers_of(f, None)? {
            super::exec::data_field(&[0; 64], &k).or_else(|e| {
                if e.contains("too short") {
                    Ok(0)
                } else {
                    Err(e)
                }
            })?;
            d.fields.push((k, m));
        }
    }
    Ok(d)
}

fn data_src(v: &toml::Value) -> R<DataSrc> {
    let t = table(v, "data")?;
    check_keys(t, &["hex", "pattern", "fill", "byte", "text"], "data")?;
    if let Some(h) = t.get("hex") {
        return Ok(DataSrc::Bytes(parse_hex(&string(h, "hex")?)?));
    }
    if let Some(p) = t.get("pattern") {
        return Ok(DataSrc::Pattern(string(p, "pattern")?));
    }
    if let Some(f) = t.get("fill") {
        let b = match t.get("byte") {
            Some(b) => u8::try_from(parse_int(&string(b, "byte")?).ok_or("byte must be a number")?)
                .map_err(|_| "byte must fit in 8 bits")?,
            None => 0,
        };
        return Ok(DataSrc::Fill(string(f, "fill")?, b));
    }
    if let Some(s) = t.get("text") {
        return Ok(DataSrc::Bytes(string(s, "text")?.into_bytes()));
    }
    Err("data needs hex, pattern or fill".to_owned())
}

fn duration(v: &toml::Value, what: &str) -> R<Duration> {
    parse_duration(&string(v, what)?)
}

fn login_status_matcher(v: &toml::Value) -> R<Vec<(String, Matcher)>> {
    let one = |s: &str| -> R<String> {
        if let Some(n) = parse_int(s) {
            return Ok(format!("{n:#06x}"));
        }
        (0..=0x3ffu16)
            .find(|c| LoginStatus(*c).name() == Some(s))
            .map(|c| format!("{c:#06x} ({s})"))
            .ok_or_else(|| format!("unknown login status {s:?}"))
    };
    match v {
        toml::Value::Table(t) => {
            check_keys(t, &["class", "in"], "expect_login_status")?;
            if let Some(c) = t.get("class") {
                return Ok(vec![("StatusClass".to_owned(), Matcher::from_toml(c)?)]);
            }
            let list = strings(
                t.get("in").ok_or("expect_login_status needs class or in")?,
                "in",
            )?;
            let bounds = list
                .iter()
                .map(|s| one(s).map(Bound::Int))
                .collect::<R<Vec<_>>>()?;
            Ok(vec![(
                "LoginStatus".to_owned(),
                Matcher {
                    tests: vec![Test::In(bounds)],
                    capture: None,
                    optional: false,
                },
            )])
        }
        other => {
            let list = strings(other, "expect_login_status")?;
            let bounds = list
                .iter()
                .map(|s| one(s).map(Bound::Int))
                .collect::<R<Vec<_>>>()?;
            Ok(vec![(
                "LoginStatus".to_owned(),
                Matcher {
                    tests: vec![Test::In(bounds)],
                    capture: None,
                    optional: false,
                },
            )])
        }
    }
}

/// Parses one expectation table (`expect`, `expect_reject`,
/// `expect_login_status`, `expect_silence`, `expect_disconnect`).
fn expectation(t: &toml::Table) -> R<Expectation> {
    if let Some(k) = t.get("expect") {
        check_keys(
            t,
            &["expect", "fields", "keys", "data", "timeout", "note"],
            "expect",
        )?;
        let kind = string(k, "expect")?;
        let op = if kind == "any" {
            None
        } else {
            Some(opcode(&kind)?)
        };
        return Ok(Expectation::Pdu {
            op,
            fields: t
                .get("fields")
                .map(|f| matchers_of(f, op))
                .transpose()?
                .unwrap_or_default(),
            keys: t
                .get("keys")
                .map(key_matchers)
                .transpose()?
                .unwrap_or_default(),
            data: t
                .get("data")
                .map(data_match)
                .transpose()?
                .unwrap_or_default(),
            rejected_header: None,
        });
    }
    if let Some(r) = t.get("expect_reject") {
        check_keys(
            t,
            &["expect_reject", "header", "fields", "timeout", "note"],
            "expect_reject",
        )?;
        let reasons = strings(r, "expect_reject")?;
        let mut bounds = Vec::new();
        for s in &reasons {
            check_value(Opcode::REJECT, "Reason", s)?;
            bounds.push(Bound::Str(s.clone()));
        }
        let mut fields = vec![(
            "Reason".to_owned(),
            Matcher {
                tests: vec![Test::In(bounds)],
                capture: None,
                optional: false,
            },
        )];
        if let Some(f) = t.get("fields") {
            fields.extend(matchers_of(f, Some(Opcode::REJECT))?);
        }
        let header = match t.get("header") {
            None => Some("last".to_owned()),
            Some(toml::Value::Boolean(false)) => None,
            Some(v) => Some(string(v, "header")?),
        };
        return Ok(Expectation::Pdu {
            op: Some(Opcode::REJECT),
            fields,
            keys: Vec::new(),
            data: DataMatch::default(),
            rejected_header: header,
        });
    }
    if let Some(s) = t.get("expect_login_status") {
        check_keys(
            t,
            &["expect_login_status", "fields", "keys", "timeout", "note"],
            "expect_login_status",
        )?;
        let mut fields = login_status_matcher(s)?;
        if let Some(f) = t.get("fields") {
            fields.extend(matchers_of(f, Some(Opcode::LOGIN_RESPONSE))?);
        }
        return Ok(Expectation::Pdu {
            op: Some(Opcode::LOGIN_RESPONSE),
            fields,
            keys: t
                .get("keys")
                .map(key_matchers)
                .transpose()?
                .unwrap_or_default(),
            data: DataMatch::default(),
            rejected_header: None,
        });
    }
    if t.contains_key("expect_silence") {
        check_keys(t, &["expect_silence", "note"], "expect_silence")?;
        return Ok(Expectation::Silence);
    }
    if t.contains_key("expect_disconnect") {
        check_keys(t, &["expect_disconnect", "note"], "expect_disconnect")?;
        return Ok(Expectation::Disconnect);
    }
    Err("expected one of expect, expect_reject, expect_login_status, expect_silence, expect_disconnect".to_owned())
}

fn status_list(v: &toml::Value) -> R<Vec<u8>> {
    strings(v, "status")?
        .iter()
        .map(|s| {
            parse_int(s)
                .and_then(|n| u8::try_from(n).ok())
                .or_else(|| {
                    ScsiStatus::ALL
                        .iter()
                        .find(|st| st.name() == Some(s.as_str()))
                        .map(|st| st.0)
                })
                .ok_or_else(|| format!("unknown SCSI status {s:?}"))
        })
        .collect()
}

fn sense_key(s: &str) -> R<u8> {
    parse_int(s)
        .and_then(|n| u8::try_from(n).ok())
        .or_else(|| (0..16u8).find(|k| SenseKey(*k).name() == Some(s)))
        .ok_or_else(|| format!("unknown sense key {s:?}"))
}

/// `0x2400` exactly, `0x24xx` any qualifier.
fn asc_pattern(s: &str) -> R<(u16, u16)> {
    let h = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("ASC/ASCQ {s:?} must be 0xAAQQ or 0xAAxx"))?;
    if h.len() != 4 {
        return Err(format!("ASC/ASCQ {s:?} must have four hex digits"));
    }
    let (a, q) = h.split_at(2);
    let a = u16::from_str_radix(a, 16).map_err(|_| format!("bad ASC in {s:?}"))?;
    if q.eq_ignore_ascii_case("xx") {
        Ok((a << 8, 0xff00))
    } else {
        let q = u16::from_str_radix(q, 16).map_err(|_| format!("bad ASCQ in {s:?}"))?;
        Ok((a << 8 | q, 0xffff))
    }
}

fn parse_step(t: &toml::Table, index: usize) -> R<Step> {
    let timeout = t
        .get("timeout")
        .map(|v| duration(v, "timeout"))
        .transpose()?;
    let label_of = |what: &str| format!("step {} ({what})", index + 1);
    let action_keys = [
        "send",
        "send_raw",
        "expect",
        "expect_reject",
        "expect_login_status",
        "expect_silence",
        "expect_disconnect",
        "expect_one_of",
        "scsi",
        "login",
        "logout",
        "ping",
        "connect",
        "use",
        "close",
        "delay",
        "set",
        "check",
    ];
    let present: Vec<&str> = action_keys
        .iter()
        .copied()
        .filter(|k| t.contains_key(*k))
        .collect();
    let [key] = present.as_slice() else {
        return Err(format!(
            "step {} needs exactly one action ({}), has {:?}",
            index + 1,
            action_keys.join(", "),
            present
        ));
    };
    let v = &t[*key];
    let (label, action) = match *key {
        "send" => {
            check_keys(
                t,
                &[
                    "send",
                    "fields",
                    "text",
                    "data",
                    "ahs",
                    "cdb",
                    "verbatim",
                    "bad_header_digest",
                    "bad_data_digest",
                    "as",
                    "timeout",
                    "note",
                ],
                "send",
            )?;
            let kind = string(v, "send")?;
            let op = opcode(&kind)?;
            let mut spec = SendSpec::new(op);
            if let Some(f) = t.get("fields") {
                spec.fields = fields_of(f, op)?;
            }
            if let Some(tx) = t.get("text") {
                spec.data = Some(DataSrc::Text(strings(tx, "text")?));
            }
            if let Some(d) = t.get("data") {
                if spec.data.is_some() {
                    return Err("send takes text or data, not both".to_owned());
                }
                spec.data = Some(data_src(d)?);
            }
            if let Some(a) = t.get("ahs") {
                spec.ahs = Some(parse_hex(&string(a, "ahs")?)?);
            }
            if let Some(c) = t.get("cdb") {
                if op != Opcode::SCSI_COMMAND {
                    return Err("cdb only applies to ScsiCommand".to_owned());
                }
                let spec_s = string(c, "cdb")?;
                // Validate the shape now; values are evaluated when sent.
                let mut probe = super::value::Vars::default();
                for n in [
                    "block_size",
                    "blocks",
                    "last_lba",
                    "lun",
                    "MaxBurstLength",
                    "FirstBurstLength",
                    "TargetMRDSL",
                    "InitiatorMRDSL",
                ] {
                    probe.set_int(n, 512);
                }
                if !spec_s.contains('$') {
                    cdb::build(&spec_s, 512, &probe)?;
                }
                spec.cdb = Some(spec_s);
            }
            let flag = |k: &str| t.get(k).and_then(toml::Value::as_bool).unwrap_or(false);
            spec.how = SendHow {
                verbatim: flag("verbatim"),
                bad_header_digest: flag("bad_header_digest"),
                bad_data_digest: flag("bad_data_digest"),
            };
            spec.name = t.get("as").map(|n| string(n, "as")).transpose()?;
            (label_of(&format!("send {kind}")), Action::Send(spec))
        }
        "send_raw" => {
            check_keys(t, &["send_raw", "note"], "send_raw")?;
            (
                label_of("send raw bytes"),
                Action::SendRaw(parse_hex(&string(v, "send_raw")?)?),
            )
        }
        "expect" | "expect_reject" | "expect_login_status" | "expect_silence" => {
            let e = expectation(t)?;
            let what = match &e {
                Expectation::Pdu { op: Some(op), .. } => format!("expect {op:?}"),
                Expectation::Pdu { op: None, .. } => "expect any PDU".to_owned(),
                Expectation::Silence => "expect silence".to_owned(),
                Expectation::Disconnect => "expect disconnect".to_owned(),
            };
            let timeout = if *key == "expect_silence" {
                match v {
                    toml::Value::Boolean(true) => None,
                    other => Some(duration(other, "expect_silence")?),
                }
            } else {
                timeout
            };
            return Ok(Step {
                label: label_of(&what),
                action: Action::Expect(vec![e]),
                timeout,
            });
        }
        "expect_disconnect" => {
            check_keys(
                t,
                &["expect_disconnect", "allow", "timeout", "note"],
                "expect_disconnect",
            )?;
            let allow = match t.get("allow") {
                Some(a) => strings(a, "allow")?
                    .iter()
                    .map(|s| opcode(s))
                    .collect::<R<Vec<_>>>()?,
                None => Vec::new(),
            };
            let timeout = match v {
                toml::Value::Boolean(_) => timeout,
                other => Some(duration(other, "expect_disconnect")?),
            };
            return Ok(Step {
                label: label_of("expect disconnect"),
                action: Action::ExpectDisconnect { allow },
                timeout,
            });
        }
        "expect_one_of" => {
            check_keys(t, &["expect_one_of", "timeout", "note"], "expect_one_of")?;
            let arr = v
                .as_array()
                .ok_or("expect_one_of takes a list of expectations")?;
            let alts = arr
                .iter()
                .map(|a| expectation(table(a, "an alternative")?))
                .collect::<R<Vec<_>>>()?;
            if alts.len() < 2 {
                return Err("expect_one_of needs at least two alternatives".to_owned());
            }
            (label_of("expect one of"), Action::Expect(alts))
        }
        "scsi" => {
            check_keys(
                t,
                &[
                    "scsi",
                    "lun",
                    "edtl",
                    "write",
                    "status",
                    "sense_key",
                    "asc",
                    "data",
                    "residual",
                    "check",
                    "as",
                    "timeout",
                    "note",
                ],
                "scsi",
            )?;
            let mut s = ScsiStep {
                cdb: string(v, "scsi")?,
                check: true,
                status: vec![0],
                ..ScsiStep::default()
            };
            if !s.cdb.contains('$') {
                let mut probe = super::value::Vars::default();
                probe.set_int("block_size", 512);
                cdb::build(&s.cdb, 512, &probe)?;
            }
            s.lun = t.get("lun").map(|x| string(x, "lun")).transpose()?;
            s.edtl = t.get("edtl").map(|x| string(x, "edtl")).transpose()?;
            s.write = t.get("write").map(data_src).transpose()?;
            if let Some(st) = t.get("status") {
                s.status = status_list(st)?;
            }
            if let Some(k) = t.get("sense_key") {
                s.sense_key = Some(sense_key(&string(k, "sense_key")?)?);
            }
            if let Some(a) = t.get("asc") {
                s.asc = strings(a, "asc")?
                    .iter()
                    .map(|x| asc_pattern(x))
                    .collect::<R<Vec<_>>>()?;
            }
            if let Some(d) = t.get("data") {
                s.data = data_match(d)?;
            }
            if let Some(r) = t.get("residual") {
                s.residual = Some(match r {
                    toml::Value::String(x) if x == "none" => ('n', "0".to_owned()),
                    toml::Value::Table(rt) => {
                        check_keys(rt, &["underflow", "overflow"], "residual")?;
                        match (rt.get("underflow"), rt.get("overflow")) {
                            (Some(u), None) => ('u', string(u, "underflow")?),
                            (None, Some(o)) => ('o', string(o, "overflow")?),
                            _ => {
                                return Err(
                                    "residual takes one of underflow or overflow".to_owned()
                                );
                            }
                        }
                    }
                    _ => {
                        return Err(
                            "residual is \"none\", { underflow = N } or { overflow = N }"
                                .to_owned(),
                        );
                    }
                });
            }
            if let Some(c) = t.get("check") {
                s.check = c.as_bool().ok_or("check is true or false")?;
            }
            s.name = t.get("as").map(|n| string(n, "as")).transpose()?;
            (
                label_of(&format!("scsi {}", s.cdb)),
                Action::Scsi(Box::new(s)),
            )
        }
        "login" => {
            check_keys(
                t,
                &[
                    "login",
                    "profile",
                    "keys",
                    "security_keys",
                    "isid",
                    "tsih",
                    "cid",
                    "cmd_sn",
                    "digests",
                    "chap",
                    "expect_status",
                    "timeout",
                    "note",
                ],
                "login",
            )?;
            let kind = string(v, "login")?;
            let mut l = LoginStep {
                discovery: match kind.as_str() {
                    "normal" => false,
                    "discovery" => true,
                    _ => {
                        return Err(format!(
                            "login is \"normal\" or \"discovery\", not {kind:?}"
                        ));
                    }
                },
                ..LoginStep::default()
            };
            if let Some(p) = t.get("profile") {
                let name = string(p, "profile")?;
                l.profile = Some(super::profile::by_name(&name).ok_or_else(|| {
                    format!(
                        "unknown profile {name:?} (known: {})",
                        super::profile::names().join(", ")
                    )
                })?);
            }
            l.keys = t
                .get("keys")
                .map(|k| strings(k, "keys"))
                .transpose()?
                .unwrap_or_default();
            l.security_keys = t
                .get("security_keys")
                .map(|k| strings(k, "security_keys"))
                .transpose()?
                .unwrap_or_default();
            for kv in l.keys.iter().chain(&l.security_keys) {
                if !kv.contains('=') {
                    return Err(format!("login key {kv:?} is not key=value"));
                }
            }
            l.isid = t.get("isid").map(|x| string(x, "isid")).transpose()?;
            l.tsih = t.get("tsih").map(|x| string(x, "tsih")).transpose()?;
            l.cid = t.get("cid").map(|x| string(x, "cid")).transpose()?;
            l.cmd_sn = t.get("cmd_sn").map(|x| string(x, "cmd_sn")).transpose()?;
            l.digests = t
                .get("digests")
                .map(|x| x.as_bool().ok_or("digests is true or false"))
                .transpose()?;
            if let Some(c) = t.get("chap") {
                let ct = table(c, "chap")?;
                check_keys(ct, &["user", "secret"], "chap")?;
                let user = string(ct.get("user").ok_or("chap needs user")?, "user")?;
                let secret = string(ct.get("secret").ok_or("chap needs secret")?, "secret")?;
                l.chap = Some((user, secret));
            }
            if let Some(s) = t.get("expect_status") {
                let ms = login_status_matcher(s)?;
                l.expect_status = ms.into_iter().next().map(|(_, m)| m);
            }
            (
                label_of(&format!("login {kind}")),
                Action::Login(Box::new(l)),
            )
        }
        "logout" => {
            check_keys(t, &["logout", "timeout", "note"], "logout")?;
            (label_of("logout"), Action::Logout)
        }
        "ping" => {
            check_keys(t, &["ping", "timeout", "note"], "ping")?;
            let n = match v {
                toml::Value::Boolean(true) => 0,
                other => {
                    parse_int(&string(other, "ping")?).ok_or("ping takes a data length")? as usize
                }
            };
            (label_of("ping"), Action::Ping(n))
        }
        "connect" => {
            check_keys(t, &["connect", "isid", "note"], "connect")?;
            let same = match t.get("isid").map(|x| string(x, "isid")).transpose()? {
                None => false,
                Some(s) if s == "same" => true,
                Some(s) => return Err(format!("connect isid is \"same\" or absent, not {s:?}")),
            };
            (
                label_of("connect"),
                Action::Connect {
                    name: string(v, "connect")?,
                    same_isid: same,
                },
            )
        }
        "use" => {
            check_keys(t, &["use", "note"], "use")?;
            (label_of("use"), Action::Use(string(v, "use")?))
        }
        "close" => {
            check_keys(t, &["close", "note"], "close")?;
            let how = string(v, "close")?;
            let reset = match how.as_str() {
                "fin" => false,
                "rst" => true,
                _ => return Err(format!("close is \"fin\" or \"rst\", not {how:?}")),
            };
            (label_of("close"), Action::Close { reset })
        }
        "delay" => {
            check_keys(t, &["delay", "note"], "delay")?;
            (label_of("delay"), Action::Delay(duration(v, "delay")?))
        }
        "set" => {
            check_keys(t, &["set", "note"], "set")?;
            let st = table(v, "set")?;
            let vals = st
                .iter()
                .map(|(k, v)| Ok((k.clone(), string(v, k)?)))
                .collect::<R<Vec<_>>>()?;
            (label_of("set"), Action::Set(vals))
        }
        "check" => {
            let value = string(v, "check")?;
            let mut rest = t.clone();
            rest.remove("check");
            rest.remove("note");
            let m =
                Matcher::from_toml(&toml::Value::Table(rest)).map_err(|e| format!("check: {e}"))?;
            if m.tests.is_empty() {
                return Err("check needs a comparison (eq, ne, ge, le, range, in)".to_owned());
            }
            (
                label_of(&format!("check {value}")),
                Action::Check { value, matcher: m },
            )
        }
        other => return Err(format!("unhandled action {other}")),
    };
    Ok(Step {
        label,
        action,
        timeout,
    })
}

/// Defaults of a file.
#[derive(Default)]
struct Defaults {
    section: Option<String>,
    level: Option<Level>,
    login: Option<LoginMode>,
    profiles: Option<Profiles>,
    requires: Vec<Gate>,
    destructive: Option<bool>,
}

fn level(v: &toml::Value) -> R<Level> {
    let s = string(v, "level")?;
    Level::parse(&s).ok_or_else(|| format!("level is MUST, SHOULD or MAY, not {s:?}"))
}

fn login_mode(v: &toml::Value) -> R<LoginMode> {
    match string(v, "login")?.as_str() {
        "none" => Ok(LoginMode::None),
        "normal" => Ok(LoginMode::Normal),
        "discovery" => Ok(LoginMode::Discovery),
        other => Err(format!("login is none, normal or discovery, not {other:?}")),
    }
}

fn profiles(v: &toml::Value) -> R<Profiles> {
    let check = |n: &str| -> R<()> {
        super::profile::by_name(n).map(drop).ok_or_else(|| {
            format!(
                "unknown profile {n:?} (known: {})",
                super::profile::names().join(", ")
            )
        })
    };
    match v {
        toml::Value::String(s) if s == "default" => Ok(Profiles::Default),
        toml::Value::String(s) if s == "all" => Ok(Profiles::All),
        other => {
            let list = strings(other, "profiles")?;
            for n in &list {
                check(n)?;
            }
            Ok(Profiles::Named(list))
        }
    }
}

fn gates(v: &toml::Value) -> R<Vec<Gate>> {
    strings(v, "requires")?
        .iter()
        .map(|s| Gate::parse(s))
        .collect()
}

/// Loads the cases of one script file; `origin` names it in messages.
pub fn load(origin: &str, source: &str) -> Result<Vec<Case>, ScriptError> {
    let err = |message: String| ScriptError {
        origin: origin.to_owned(),
        message,
    };
    let doc: toml::Table = toml::from_str(source).map_err(|e| err(e.to_string()))?;
    check_keys(&doc, &["family", "suite", "defaults", "case"], "the file").map_err(err)?;
    let family = doc
        .get("family")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| err("missing family".to_owned()))?;
    let suite = doc
        .get("suite")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| err("missing suite".to_owned()))?;
    for (what, part) in [("family", family), ("suite", suite)] {
        if !CaseId::valid_part(part) {
            return Err(err(format!(
                "{what} {part:?} is not a valid id part (letters, digits, _ and -)"
            )));
        }
    }
    let mut d = Defaults::default();
    if let Some(dv) = doc.get("defaults") {
        let t = table(dv, "defaults").map_err(err)?;
        check_keys(
            t,
            &[
                "section",
                "level",
                "login",
                "profiles",
                "requires",
                "destructive",
            ],
            "defaults",
        )
        .map_err(err)?;
        d.section = t
            .get("section")
            .map(|v| string(v, "section"))
            .transpose()
            .map_err(err)?;
        d.level = t.get("level").map(level).transpose().map_err(err)?;
        d.login = t.get("login").map(login_mode).transpose().map_err(err)?;
        d.profiles = t.get("profiles").map(profiles).transpose().map_err(err)?;
        d.requires = t
            .get("requires")
            .map(gates)
            .transpose()
            .map_err(err)?
            .unwrap_or_default();
        d.destructive = t.get("destructive").and_then(toml::Value::as_bool);
    }
    let cases = doc
        .get("case")
        .and_then(toml::Value::as_array)
        .ok_or_else(|| err("no [[case]]".to_owned()))?;
    let mut out = Vec::new();
    for (i, cv) in cases.iter().enumerate() {
        let t = table(cv, "a case").map_err(err)?;
        let name = t.get("name").and_then(toml::Value::as_str).unwrap_or("");
        let cerr = |m: String| err(format!("case {} ({name}): {m}", i + 1));
        if !CaseId::valid_part(name) {
            return Err(cerr(format!("name {name:?} is not a valid id part")));
        }
        check_keys(
            t,
            &[
                "name",
                "section",
                "level",
                "summary",
                "login",
                "requires",
                "destructive",
                "profiles",
                "setup",
                "step",
            ],
            "a case",
        )
        .map_err(cerr)?;
        let section = t
            .get("section")
            .map(|v| string(v, "section"))
            .transpose()
            .map_err(cerr)?
            .or_else(|| d.section.clone())
            .ok_or_else(|| cerr("missing section".to_owned()))?;
        let lvl = t
            .get("level")
            .map(level)
            .transpose()
            .map_err(cerr)?
            .or(d.level)
            .ok_or_else(|| cerr("missing level".to_owned()))?;
        let summary = t
            .get("summary")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| cerr("missing summary".to_owned()))?
            .to_owned();
        let mut setup = Setup {
            login: t
                .get("login")
                .map(login_mode)
                .transpose()
                .map_err(cerr)?
                .or(d.login)
                .unwrap_or(LoginMode::Normal),
            ..Setup::default()
        };
        if let Some(s) = t.get("setup") {
            let st = table(s, "setup").map_err(cerr)?;
            check_keys(st, &["clear_unit_attention", "capacity"], "setup").map_err(cerr)?;
            if let Some(b) = st
                .get("clear_unit_attention")
                .and_then(toml::Value::as_bool)
            {
                setup.clear_unit_attention = b;
            }
            if let Some(b) = st.get("capacity").and_then(toml::Value::as_bool) {
                setup.capacity = b;
            }
        }
        let mut gs = d.requires.clone();
        gs.extend(
            t.get("requires")
                .map(gates)
                .transpose()
                .map_err(cerr)?
                .unwrap_or_default(),
        );
        let steps_v = t
            .get("step")
            .and_then(toml::Value::as_array)
            .ok_or_else(|| cerr("no [[case.step]]".to_owned()))?;
        let mut steps = Vec::new();
        for (j, sv) in steps_v.iter().enumerate() {
            let st = table(sv, "a step").map_err(cerr)?;
            steps.push(parse_step(st, j).map_err(|e| cerr(format!("step {}: {e}", j + 1)))?);
        }
        out.push(Case {
            meta: CaseMeta {
                id: CaseId::new(family, suite, name),
                section,
                level: lvl,
                summary,
                gates: gs,
                destructive: t
                    .get("destructive")
                    .and_then(toml::Value::as_bool)
                    .or(d.destructive)
                    .unwrap_or(false),
                profiles: t
                    .get("profiles")
                    .map(profiles)
                    .transpose()
                    .map_err(cerr)?
                    .or_else(|| d.profiles.clone())
                    .unwrap_or(Profiles::Default),
                setup,
                origin: origin.to_owned(),
            },
            body: Body::Script(steps),
        });
    }
    Ok(out)
}

// ---- interpretation ----------------------------------------------------------

/// Runs a script's steps in order.
pub async fn run(ctx: &mut Ctx, steps: &[Step]) -> Result<(), Fail> {
    for step in steps {
        run_step(ctx, step).await.map_err(|e| {
            // Messages carry values, never the script's placeholders.
            ctx.refresh_vars();
            expand_fail(e.context(&step.label), &ctx.vars)
        })?;
    }
    Ok(())
}

/// A failure's messages with every `$…` placeholder expanded.
pub fn expand_fail(e: Fail, vars: &super::value::Vars) -> Fail {
    use super::value::expand;
    match e {
        Fail::Check(mut f) => {
            f.message = expand(&f.message, vars);
            for m in &mut f.mismatches {
                m.what = expand(&m.what, vars);
                m.expected = expand(&m.expected, vars);
                m.actual = expand(&m.actual, vars);
            }
            Fail::Check(f)
        }
        Fail::Skip(s) => Fail::Skip(expand(&s, vars)),
        Fail::Error(s) => Fail::Error(expand(&s, vars)),
    }
}

async fn run_step(ctx: &mut Ctx, step: &Step) -> Result<(), Fail> {
    ctx.refresh_vars();
    match &step.action {
        Action::Send(spec) => ctx.send(spec).await.map(drop),
        Action::SendRaw(bytes) => {
            let raw = ctx.conn_mut()?.raw()?;
            raw.send_bytes(bytes)
                .await
                .map_err(|e| Fail::error(format!("send: {e}")))
        }
        Action::Expect(alts) => ctx.expect_one(alts, step.timeout).await.map(drop),
        Action::ExpectDisconnect { allow } => {
            let deadline =
                tokio::time::Instant::now() + step.timeout.unwrap_or(ctx.timing.disconnect);
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match ctx.recv_event(left, false).await? {
                    super::exec::Event::Closed => return Ok(()),
                    super::exec::Event::Pdu(f) if allow.contains(&f.bhs.opcode()) => continue,
                    super::exec::Event::Malformed(_) if ctx.conn()?.closed => return Ok(()),
                    ev => {
                        return Err(Fail::check(format!(
                            "expected the target to close the connection, got {}",
                            ev.describe()
                        )));
                    }
                }
            }
        }
        Action::Scsi(s) => run_scsi(ctx, s).await,
        Action::Login(l) => run_login(ctx, l).await,
        Action::Logout => {
            ctx.logout().await?;
            Ok(())
        }
        Action::Ping(n) => {
            let data: Vec<u8> = (0..*n).map(|i| (i * 13 + 5) as u8).collect();
            ctx.ping(&data).await.map(drop)
        }
        Action::Connect { name, same_isid } => {
            if *same_isid {
                let isid = ctx.conn()?.isid;
                ctx.connect_with_isid(name, isid).await
            } else {
                ctx.connect(name).await
            }
        }
        Action::Use(name) => ctx.use_conn(name),
        Action::Close { reset } => ctx.close(*reset).await,
        Action::Delay(d) => {
            tokio::time::sleep(*d).await;
            Ok(())
        }
        Action::Set(vals) => {
            for (k, v) in vals {
                match eval_int(v, &ctx.vars) {
                    // The connection's counters: skip a CmdSN, pretend a
                    // status was acknowledged.
                    Ok(n) if k == "cmd_sn" => ctx.conn_mut()?.cmd_sn = n as u32,
                    Ok(n) if k == "exp_stat_sn" => ctx.conn_mut()?.exp_stat_sn = n as u32,
                    Ok(n) => ctx.vars.set_int(k, n),
                    Err(_) => {
                        let s = interpolate(v, &ctx.vars).map_err(Fail::error)?;
                        ctx.vars.set_str(k, s);
                    }
                }
            }
            Ok(())
        }
        Action::Check { value, matcher } => {
            let v = eval_int(value, &ctx.vars).map_err(Fail::error)?;
            let mut vars = ctx.vars.clone();
            match matcher.check_int(value, v, &mut vars, &|_| None) {
                Ok(()) => {
                    ctx.vars = vars;
                    Ok(())
                }
                Err(MatchError::Eval(e)) => Err(Fail::error(e)),
                Err(MatchError::Mismatch(m)) => Err(Fail::mismatch("check failed", vec![m])),
            }
        }
    }
}

async fn run_login(ctx: &mut Ctx, l: &LoginStep) -> Result<(), Fail> {
    let run_profile = ctx.profile;
    if let Some(p) = l.profile {
        ctx.profile = *p;
    }
    let opts = ctx.login_options(l.discovery);
    ctx.profile = run_profile;
    let mut opts = opts?;
    let int = |s: &Option<String>, ctx: &Ctx| -> Result<Option<u64>, Fail> {
        s.as_ref()
            .map(|x| eval_int(x, &ctx.vars).map_err(Fail::error))
            .transpose()
    };
    if let Some(i) = int(&l.isid, ctx)? {
        let b = i.to_be_bytes();
        opts.isid = Isid([b[2], b[3], b[4], b[5], b[6], b[7]]);
        ctx.conn_mut()?.isid = opts.isid;
    }
    if let Some(t) = int(&l.tsih, ctx)? {
        opts.tsih = t as u16;
    }
    if let Some(c) = int(&l.cid, ctx)? {
        opts.cid = c as u16;
        ctx.conn_mut()?.cid = c as u16;
    }
    if let Some(c) = int(&l.cmd_sn, ctx)? {
        opts.cmd_sn = c as u32;
    }
    if let Some(d) = l.digests {
        let v = if d {
            iesp_proto::negotiation::Digest::Crc32c
        } else {
            iesp_proto::negotiation::Digest::None
        };
        opts.header_digest = vec![v];
        opts.data_digest = vec![v];
    }
    if let Some((u, s)) = &l.chap {
        let user = interpolate(u, &ctx.vars).map_err(Fail::error)?;
        let secret = interpolate(s, &ctx.vars).map_err(Fail::error)?;
        opts.chap = Some(ChapCredentials::new(user, secret.into_bytes()));
    }
    let pairs = |items: &[String], ctx: &Ctx| -> Result<Vec<KeyValue>, Fail> {
        items
            .iter()
            .map(|kv| {
                let s = interpolate(kv, &ctx.vars).map_err(Fail::error)?;
                let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
                Ok(KeyValue::new(k, v))
            })
            .collect()
    };
    opts.extra_keys.extend(pairs(&l.keys, ctx)?);
    opts.extra_security_keys
        .extend(pairs(&l.security_keys, ctx)?);
    let r = ctx.login_with(&opts).await;
    match (r, &l.expect_status) {
        (Ok(out), None) => {
            ctx.vars.set_int("login.tsih", u64::from(out.tsih));
            for kv in &out.declared {
                ctx.vars
                    .set_str(&format!("login.{}", kv.key), kv.value.clone());
            }
            for w in out.warnings {
                ctx.notes.push(format!("login: {w}"));
            }
            Ok(())
        }
        (Ok(_), Some(m)) => Err(Fail::check(format!(
            "the login succeeded; expected it to be refused with {}",
            m.describe()
        ))),
        (Err(LoginError::Refused(st)), Some(m)) => {
            let mut vars = ctx.vars.clone();
            let sym = |s: &str| super::exec::symbol(Opcode::LOGIN_RESPONSE, "LoginStatus", s);
            match m.check_int("Login Response status", u64::from(st.0), &mut vars, &sym) {
                Ok(()) => Ok(()),
                Err(MatchError::Mismatch(mm)) => Err(Fail::mismatch(
                    "login refused with another status",
                    vec![mm],
                )),
                Err(MatchError::Eval(e)) => Err(Fail::error(e)),
            }
        }
        (Err(LoginError::Io(e)), _) => Err(Fail::error(format!("login: {e}"))),
        (Err(e), _) => Err(Fail::check(format!("login failed: {e}"))),
    }
}

async fn run_scsi(ctx: &mut Ctx, s: &ScsiStep) -> Result<(), Fail> {
    ctx.refresh_vars();
    let built = cdb::build(&s.cdb, ctx.block_size, &ctx.vars).map_err(Fail::error)?;
    let lun = match &s.lun {
        Some(l) => Lun::from_index(eval_int(l, &ctx.vars).map_err(Fail::error)? as u16),
        None => ctx.lun,
    };
    let edtl = match &s.edtl {
        Some(e) => eval_int(e, &ctx.vars).map_err(Fail::error)? as u32,
        None => built.len,
    };
    let data = if built.dir == Dir::Out {
        let n = edtl.max(built.len) as usize;
        Bytes::from(match &s.write {
            None | Some(DataSrc::Pattern(_)) => (0..n)
                .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
                .collect::<Vec<u8>>(),
            Some(DataSrc::Fill(_, b)) => vec![*b; n],
            Some(DataSrc::Bytes(b)) => b.clone(),
            Some(DataSrc::Text(_)) => return Err(Fail::error("write data cannot be text")),
        })
    } else {
        Bytes::new()
    };
    let req = ScsiRequest {
        cdb: built.bytes.clone(),
        dir: built.dir,
        edtl,
        data,
        lun,
        check: s.check,
        unsolicited: true,
        data_out_segment: None,
    };
    let out = ctx.scsi(&req).await?;
    let prefix = s.name.clone().unwrap_or_else(|| "scsi".to_owned());
    ctx.vars
        .set_int(&format!("{prefix}.itt"), u64::from(out.itt));
    ctx.vars
        .set_int(&format!("{prefix}.data_len"), out.data.len() as u64);
    if let Some(st) = out.status {
        ctx.vars.set_int(&format!("{prefix}.status"), u64::from(st));
    }
    if out.end != End::Status {
        return Err(Fail::check(format!(
            "no status for {}: {}",
            s.cdb,
            out.describe()
        )));
    }
    if s.check {
        out.violations_fail()?;
    }
    let mut mm = Vec::new();
    let status = out.status.unwrap_or(0xff);
    if out.response != 0 {
        mm.push(Mismatch {
            what: "SCSI Response.Response".to_owned(),
            expected: "0 (Command Completed at Target)".to_owned(),
            actual: format!("{:#04x}", out.response),
        });
    }
    if !s.status.contains(&status) {
        mm.push(Mismatch {
            what: "SCSI status".to_owned(),
            expected: s
                .status
                .iter()
                .map(|x| {
                    ScsiStatus(*x)
                        .name()
                        .map_or_else(|| format!("{x:#x}"), str::to_owned)
                })
                .collect::<Vec<_>>()
                .join(" or "),
            actual: out.describe(),
        });
    }
    if let Some(k) = s.sense_key {
        let got = out.sense.as_ref().map(|x| x.key.0);
        if got != Some(k) && status == 2 {
            mm.push(Mismatch {
                what: "sense key".to_owned(),
                expected: format!("{:?}", SenseKey(k)),
                actual: got.map_or_else(
                    || "no sense data".to_owned(),
                    |g| format!("{:?}", SenseKey(g)),
                ),
            });
        }
    }
    if !s.asc.is_empty() && status == 2 {
        let got = out.sense.as_ref().map(|x| x.asc.0);
        let ok = got.is_some_and(|g| s.asc.iter().any(|(v, m)| g & m == *v));
        if !ok {
            mm.push(Mismatch {
                what: "ASC/ASCQ".to_owned(),
                expected: s
                    .asc
                    .iter()
                    .map(|(v, m)| {
                        if *m == 0xffff {
                            format!("{v:#06x}")
                        } else {
                            format!("{:#04x}xx", v >> 8)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" or "),
                actual: got.map_or_else(|| "no sense data".to_owned(), |g| format!("{g:#06x}")),
            });
        }
    }
    if let Some((kind, n)) = &s.residual {
        let n = eval_int(n, &ctx.vars).map_err(Fail::error)? as u32;
        let want = match kind {
            'u' => Residual::Underflow(n),
            'o' => Residual::Overflow(n),
            _ => Residual::None,
        };
        if out.residual != want {
            mm.push(Mismatch {
                what: "residual (RFC 7143 §11.4.5)".to_owned(),
                expected: format!("{want:?}"),
                actual: format!("{:?}", out.residual),
            });
        }
    }
    if !s.data.is_empty() {
        let frame = iesp_proto::framing::Frame {
            bhs: iesp_proto::bhs::Bhs::new(Opcode::DATA_IN),
            ahs: Bytes::new(),
            data: out.data.clone(),
        };
        let alt = Expectation::Pdu {
            op: None,
            fields: Vec::new(),
            keys: Vec::new(),
            data: s.data.clone(),
            rejected_header: None,
        };
        // Reuse the PDU matcher on a frame holding the read data.
        let mut vars = ctx.vars.clone();
        match data_check(ctx, &alt, &frame, &mut vars) {
            Ok(()) => ctx.vars = vars,
            Err(MatchError::Mismatch(m)) => mm.push(Mismatch {
                what: m.what.replace("DataIn data segment", "read data"),
                ..m
            }),
            Err(MatchError::Eval(e)) => return Err(Fail::error(e)),
        }
    }
    if mm.is_empty() {
        Ok(())
    } else {
        Err(Fail::mismatch(
            format!("{} ended with {}", s.cdb, out.describe()),
            mm,
        ))
    }
}

fn data_check(
    ctx: &Ctx,
    alt: &Expectation,
    frame: &iesp_proto::framing::Frame,
    vars: &mut super::value::Vars,
) -> Result<(), MatchError> {
    ctx.match_data(alt, frame, vars)
}

/// A frame summary for notes.
pub fn frame_note(f: &iesp_proto::framing::Frame) -> String {
    describe_frame(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
family = "iSCSI"
suite = "Demo"
[defaults]
section = "RFC 7143 §11.18"
level = "MUST"

[[case]]
name = "Ping"
summary = "echo"
profiles = "all"
requires = ["lun"]

[[case.step]]
send = "NopOut"
data = { pattern = 100 }
as = "ping"

[[case.step]]
expect = "NopIn"
fields = { ITT = "$ping.ITT", TTT = 0xffffffff }
data = { echo = "ping" }
timeout = "1s"

[[case.step]]
expect_one_of = [
  { expect_reject = ["ProtocolError", "InvalidPduField"] },
  { expect_disconnect = true },
]

[[case]]
name = "Login"
level = "SHOULD"
section = "RFC 7143 §11.13.5"
summary = "version"
login = "none"

[[case.step]]
send = "LoginRequest"
fields = { VersionMin = 2, CSG = "Operational" }
text = ["@identity"]

[[case.step]]
expect_login_status = "UnsupportedVersion"

[[case.step]]
login = "normal"
profile = "small-mrdsl"


[[case.step]]
scsi = "INQUIRY alloc=36"
status = ["GOOD", "CHECK CONDITION"]
asc = ["0x24xx", "0x2000"]
residual = { underflow = 0 }
"#;

    #[test]
    fn a_valid_file_loads() {
        let cases = load("demo.toml", GOOD).unwrap();
        assert_eq!(cases.len(), 2);
        let c = &cases[0];
        assert_eq!(c.meta.id.to_string(), "iSCSI.Demo.Ping");
        assert_eq!(c.meta.level, Level::Must);
        assert_eq!(c.meta.profiles, Profiles::All);
        assert_eq!(c.meta.gates, vec![Gate::Lun]);
        let Body::Script(steps) = &c.body else {
            panic!()
        };
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1].timeout, Some(Duration::from_secs(1)));
        assert_eq!(steps[2].label, "step 3 (expect one of)");
        let Action::Expect(alts) = &steps[2].action else {
            panic!()
        };
        assert_eq!(alts.len(), 2);
        assert_eq!(alts[1], Expectation::Disconnect);
        let c = &cases[1];
        assert_eq!(c.meta.setup.login, LoginMode::None);
        assert_eq!(c.meta.section, "RFC 7143 §11.13.5");
        let Body::Script(steps) = &c.body else {
            panic!()
        };
        let Action::Login(l) = &steps[2].action else {
            panic!()
        };
        assert_eq!(l.profile.map(|p| p.name), Some("small-mrdsl"));
        let Action::Scsi(s) = &steps[3].action else {
            panic!()
        };
        assert_eq!(s.status, vec![0, 2]);
        assert_eq!(s.asc, vec![(0x2400, 0xff00), (0x2000, 0xffff)]);
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        let bad = |patch: &str| {
            let src = format!(
                "family = \"iSCSI\"\nsuite = \"X\"\n[[case]]\nname = \"C\"\nsection = \"s\"\nlevel = \"MUST\"\nsummary = \"x\"\n{patch}"
            );
            load("x.toml", &src).unwrap_err().to_string()
        };
        let e = bad("[[case.step]]\nsend = \"NopOut\"\nfields = { Bogus = 1 }");
        assert!(
            e.contains("x.toml: case 1 (C): step 1: NopOut has no field \"Bogus\""),
            "{e}"
        );
        let e = bad("[[case.step]]\nexpect = \"Reject\"\nfields = { Reason = \"NoSuchReason\" }");
        assert!(e.contains("not a number"), "{e}");
        let e = bad("[[case.step]]\nsend = \"NopOut\"\nexpect = \"NopIn\"");
        assert!(e.contains("exactly one action"), "{e}");
        let e = bad("[[case.step]]\nscsi = \"FROB(10)\"");
        assert!(e.contains("unknown SCSI command"), "{e}");
        let e = bad("[[case.step]]\nsend = \"Frob\"");
        assert!(e.contains("unknown PDU kind"), "{e}");
        let e = bad("profiles = [\"fast\"]\n[[case.step]]\ndelay = \"1s\"");
        assert!(e.contains("unknown profile"), "{e}");
        let e = bad("requires = [\"wings\"]\n[[case.step]]\ndelay = \"1s\"");
        assert!(e.contains("unknown gate"), "{e}");
        let e = bad("[[case.step]]\ndelay = \"soon\"");
        assert!(e.contains("duration"), "{e}");
        let e = bad("[[case.step]]\nexpect_one_of = [{ expect_silence = true }]");
        assert!(e.contains("at least two"), "{e}");
        let e = bad("colour = 1\n[[case.step]]\ndelay = \"1s\"");
        assert!(e.contains("unknown key \"colour\""), "{e}");
        assert!(
            load("y.toml", "family = \"a b\"\nsuite = \"s\"\n[[case]]")
                .unwrap_err()
                .to_string()
                .contains("not a valid id part")
        );
    }
}
