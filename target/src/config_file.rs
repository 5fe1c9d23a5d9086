//! The TOML configuration file of `iesp-target --config FILE`.
//!
//! One file describes what the command-line flags cannot: several targets
//! on the portal, each with its LUNs, ACL and CHAP credentials, CHAP for
//! discovery, and the protocol limits. `iesp-target.sample.toml` next to
//! this crate's Cargo.toml documents every key with its default.
//!
//! Errors name the key and the problem — `target[1].luns[0]: invalid LUN
//! …`, `unknown field `ipn`` with its line — and nothing is partly applied.

use iesp_cli::units::{Duration as Secs, Size};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;

use crate::config::{self, ChapAuth, ChapCredentials, Limits, LunSpec, TargetConfig, TargetDef};

/// A configuration file that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    listen: Vec<String>,
    portal_group_tag: Option<u16>,
    #[serde(default)]
    limits: LimitsFile,
    discovery: Option<DiscoveryFile>,
    #[serde(default)]
    target: Vec<TargetFile>,
    #[serde(default)]
    observability: ObservabilityFile,
}

/// `[observability]`: the metrics and SNMP endpoints ([`crate::endpoints`]).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ObservabilityFile {
    metrics: Option<String>,
    snmp: Option<String>,
    snmp_community: Option<String>,
    allow_remote: Option<bool>,
    statistics: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_recv_data_segment_length: Option<Size>,
    max_burst_length: Option<Size>,
    first_burst_length: Option<Size>,
    max_outstanding_r2t: Option<u32>,
    immediate_data: Option<bool>,
    initial_r2t: Option<bool>,
    digests: Option<bool>,
    command_window: Option<u32>,
    nop_interval: Option<Secs>,
    nop_timeout: Option<Secs>,
    login_timeout: Option<Secs>,
    max_connections: Option<usize>,
    max_unauthenticated: Option<usize>,
    max_unauthenticated_per_address: Option<usize>,
    max_sessions: Option<usize>,
    max_connections_per_session: Option<u32>,
    auth_fail_delay: Option<Secs>,
    auth_fail_delay_max: Option<Secs>,
    memory_budget: Option<Size>,
    session_memory: Option<Size>,
    data_out_timeout: Option<Secs>,
    io_workers: Option<u32>,
    poll_us: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoveryFile {
    chap: Option<ChapFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    iqn: String,
    alias: Option<String>,
    #[serde(default)]
    luns: Vec<String>,
    #[serde(default)]
    acl: Vec<String>,
    chap: Option<ChapFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChapFile {
    user: String,
    secret: String,
    mutual_user: Option<String>,
    mutual_secret: Option<String>,
}

/// A parsed configuration: the target and the portals to listen on.
/// A TOML error as one line: `line N: message` (toml's own rendering
/// quotes the source over several lines).
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(0, |before| before.matches('\n').count());
            // The line itself names the key; quote it (shortened).
            let source: String = text
                .lines()
                .nth(line)
                .unwrap_or("")
                .trim()
                .chars()
                .take(60)
                .collect();
            if source.is_empty() {
                format!("line {}: {message}", line + 1)
            } else {
                format!("line {} (`{source}`): {message}", line + 1)
            }
        }
        None => message,
    }
}

#[derive(Debug)]
pub struct Loaded {
    pub config: TargetConfig,
    /// Empty when the file does not say; the caller applies its default.
    pub listen: Vec<SocketAddr>,
    /// The `[observability]` table.
    pub endpoints: crate::endpoints::Endpoints,
}

/// Parses and validates a configuration file's text.
pub fn parse(text: &str) -> Result<Loaded, ConfigError> {
    let file: File = toml::from_str(text).map_err(|e| ConfigError::Syntax(one_line(text, &e)))?;
    let mut listen = Vec::new();
    for (i, l) in file.listen.iter().enumerate() {
        listen.push(l.parse().map_err(|_| {
            invalid(
                format!("listen[{i}]"),
                format!("`{l}` is not an address:port"),
            )
        })?);
    }
    let limits = limits(&file.limits)?;
    let endpoints = observability(&file.observability)?;
    let discovery_chap = match file.discovery.and_then(|d| d.chap) {
        Some(c) => Some(chap("discovery.chap", c)?),
        None => None,
    };
    if file.target.is_empty() {
        return Err(invalid("target", "no [[target]] defined"));
    }
    let mut names = HashSet::new();
    let mut targets = Vec::new();
    for (t, tf) in file.target.into_iter().enumerate() {
        let key = |k: &str| format!("target[{t}].{k}");
        if !is_iscsi_name(&tf.iqn) {
            return Err(invalid(
                key("iqn"),
                format!("`{}` is not an iSCSI name (iqn.…, eui.… or naa.…)", tf.iqn),
            ));
        }
        if !names.insert(tf.iqn.clone()) {
            return Err(invalid(
                key("iqn"),
                format!("`{}` is defined twice", tf.iqn),
            ));
        }
        if tf.luns.is_empty() {
            return Err(invalid(key("luns"), "a target needs at least one LUN"));
        }
        let mut luns = Vec::new();
        for (n, l) in tf.luns.iter().enumerate() {
            let spec: LunSpec = l.parse().map_err(|e: config::LunSpecError| {
                invalid(format!("target[{t}].luns[{n}]"), e.to_string())
            })?;
            luns.push(spec);
        }
        for (i, a) in tf.acl.iter().enumerate() {
            if !is_iscsi_name(a) {
                return Err(invalid(
                    format!("target[{t}].acl[{i}]"),
                    format!("`{a}` is not an iSCSI name"),
                ));
            }
        }
        let chap = match tf.chap {
            Some(c) => Some(chap(&key("chap"), c)?),
            None => None,
        };
        targets.push(TargetDef {
            iqn: tf.iqn,
            alias: tf.alias,
            luns,
            acl: tf.acl,
            chap,
        });
    }
    let config = TargetConfig {
        targets,
        portal_group_tag: file.portal_group_tag.unwrap_or(1),
        limits,
        discovery_chap,
    };
    Ok(Loaded {
        config,
        listen,
        endpoints,
    })
}

fn observability(f: &ObservabilityFile) -> Result<crate::endpoints::Endpoints, ConfigError> {
    let addr = |k: &str, v: &Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
        v.as_deref()
            .map(|s| {
                s.parse().map_err(|_| {
                    invalid(
                        format!("observability.{k}"),
                        format!("`{s}` is not an address:port"),
                    )
                })
            })
            .transpose()
    };
    let mut e = crate::endpoints::Endpoints {
        metrics: addr("metrics", &f.metrics)?,
        snmp: addr("snmp", &f.snmp)?,
        allow_remote: f.allow_remote.unwrap_or(false),
        statistics: f.statistics.unwrap_or(true),
        ..Default::default()
    };
    if let Some(c) = &f.snmp_community {
        if c.is_empty() {
            return Err(invalid("observability.snmp_community", "must not be empty"));
        }
        e.snmp_community = c.clone();
    }
    Ok(e)
}

fn limits(f: &LimitsFile) -> Result<Limits, ConfigError> {
    let mut l = Limits::default();
    let range = |k: &str, v: u32, lo: u32, hi: u32| -> Result<u32, ConfigError> {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(
                format!("limits.{k}"),
                format!("{v} is outside {lo}..={hi}"),
            ))
        }
    };
    const SEG: (u32, u32) = (512, 16_777_215);
    // Sizes in the size grammar ("256k" or 262144), bounded like the
    // negotiation keys they cap (§13).
    let seg = |k: &str, v: Size| -> Result<u32, ConfigError> {
        let n = u32::try_from(v.0).map_err(|_| {
            invalid(
                format!("limits.{k}"),
                format!("{v} is outside {}..={}", SEG.0, SEG.1),
            )
        })?;
        range(k, n, SEG.0, SEG.1)
    };
    if let Some(v) = f.max_recv_data_segment_length {
        l.max_recv_data_segment_length = seg("max_recv_data_segment_length", v)?;
    }
    if let Some(v) = f.max_burst_length {
        l.max_burst_length = seg("max_burst_length", v)?;
    }
    if let Some(v) = f.first_burst_length {
        l.first_burst_length = seg("first_burst_length", v)?;
    }
    if l.first_burst_length > l.max_burst_length {
        return Err(invalid(
            "limits.first_burst_length",
            "must not exceed max_burst_length (RFC 7143 §13.14)",
        ));
    }
    if let Some(v) = f.max_outstanding_r2t {
        l.max_outstanding_r2t = range("max_outstanding_r2t", v, 1, 65_535)?;
    }
    if let Some(v) = f.command_window {
        l.command_window = range("command_window", v, 1, 4096)?;
    }
    l.immediate_data = f.immediate_data.unwrap_or(l.immediate_data);
    l.initial_r2t = f.initial_r2t.unwrap_or(l.initial_r2t);
    l.digests = f.digests.unwrap_or(l.digests);
    // Durations in the duration grammar ("20", 20, "500ms", "2m").
    if let Some(Secs(d)) = f.nop_interval {
        l.nop_interval = (!d.is_zero()).then_some(d);
    }
    if let Some(Secs(d)) = f.nop_timeout {
        if d.is_zero() {
            return Err(invalid("limits.nop_timeout", "must be more than zero"));
        }
        l.nop_timeout = d;
    }
    if let Some(Secs(d)) = f.login_timeout {
        if d.is_zero() {
            return Err(invalid("limits.login_timeout", "must be more than zero"));
        }
        l.login_timeout = d;
    }
    let caps = [
        ("max_connections", f.max_connections, &mut l.max_connections),
        (
            "max_unauthenticated",
            f.max_unauthenticated,
            &mut l.max_unauthenticated,
        ),
        (
            "max_unauthenticated_per_address",
            f.max_unauthenticated_per_address,
            &mut l.max_unauthenticated_per_address,
        ),
        ("max_sessions", f.max_sessions, &mut l.max_sessions),
    ];
    for (k, v, slot) in caps {
        match v {
            Some(0) => return Err(invalid(format!("limits.{k}"), "must be at least 1")),
            Some(v) => *slot = v,
            None => {}
        }
    }
    if let Some(v) = f.max_connections_per_session {
        l.max_connections_per_session = range("max_connections_per_session", v, 1, 65_535)? as u16;
    }
    if let Some(Secs(d)) = f.auth_fail_delay {
        l.auth_fail_delay = d;
    }
    if let Some(Secs(d)) = f.auth_fail_delay_max {
        l.auth_fail_delay_max = d;
    }
    for (k, v) in [
        ("memory_budget", f.memory_budget),
        ("session_memory", f.session_memory),
    ] {
        if let Some(v) = v
            && v.0 < config::MIN_MEMORY_BUDGET
        {
            return Err(invalid(
                format!("limits.{k}"),
                format!("{v} is less than 8MiB, the largest transfer"),
            ));
        }
    }
    if let Some(v) = f.memory_budget {
        l.memory_budget = v.0;
        l.session_memory = v.0 / 4;
    }
    if let Some(v) = f.session_memory {
        l.session_memory = v.0;
    }
    if let Some(us) = f.poll_us {
        l.poll_us = range("poll_us", us, 0, iesp_netpoll::MAX_POLL_US)?;
    }
    if let Some(Secs(d)) = f.data_out_timeout {
        if d.is_zero() {
            return Err(invalid("limits.data_out_timeout", "must be more than zero"));
        }
        l.data_out_timeout = d;
    }
    if let Some(v) = f.io_workers {
        l.io_workers = range("io_workers", v, 1, 256)? as usize;
    }
    l.validate().map_err(|e| invalid("limits", e))?;
    Ok(l)
}

fn chap(key: &str, c: ChapFile) -> Result<ChapAuth, ConfigError> {
    let check = |k: &str, secret: &str| -> Result<(), ConfigError> {
        // RFC 7143 §12.1.3: at least 12 bytes for initiator secrets is the
        // common policy; an empty secret is never useful. The secret itself
        // is never part of the message.
        if secret.len() < 12 {
            return Err(invalid(
                format!("{key}.{k}"),
                format!("secret is {} characters; use at least 12", secret.len()),
            ));
        }
        Ok(())
    };
    if c.user.is_empty() {
        return Err(invalid(format!("{key}.user"), "empty user name"));
    }
    check("secret", &c.secret)?;
    let target = match (c.mutual_user, c.mutual_secret) {
        (Some(u), Some(s)) => {
            check("mutual_secret", &s)?;
            if s == c.secret {
                return Err(invalid(
                    format!("{key}.mutual_secret"),
                    "must differ from the initiator secret (RFC 7143 §12.1.3)",
                ));
            }
            Some(ChapCredentials::new(u, s.into_bytes()))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                format!("{key}.mutual_secret"),
                "missing (mutual_user is set)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                format!("{key}.mutual_user"),
                "missing (mutual_secret is set)",
            ));
        }
    };
    Ok(ChapAuth {
        initiator: ChapCredentials::new(c.user, c.secret.into_bytes()),
        target,
    })
}

/// iqn., eui. or naa. followed by something, at most 223 bytes, no
/// white space (RFC 7143 §4.2.7).
pub(crate) fn is_iscsi_name(s: &str) -> bool {
    ["iqn.", "eui.", "naa."]
        .iter()
        .any(|p| s.len() > p.len() && s.starts_with(p))
        && s.len() <= 223
        && !s.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../iesp-target.sample.toml");

    #[test]
    fn the_sample_parses() {
        let loaded = parse(SAMPLE).unwrap();
        assert_eq!(loaded.config.targets.len(), 2);
        assert_eq!(
            loaded.listen,
            vec!["127.0.0.1:3260".parse::<SocketAddr>().unwrap()]
        );
        let t1 = &loaded.config.targets[1];
        assert!(t1.chap.as_ref().is_some_and(|c| c.target.is_some()));
        assert_eq!(t1.acl.len(), 1);
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[[target]]\niqn = \"iqn.2026-11.test:a\"\nluns = [\"ram:1M\"]\n";
        assert!(parse(base).is_ok());
        assert!(err("[[target]]\nipn = \"x\"\n").contains("unknown field `ipn`"));
        assert!(
            err(&base.replace("ram:1M", "disk:1")).starts_with("target[0].luns[0]: invalid LUN")
        );
        assert!(err(&base.replace("iqn.2026-11.test:a", "bogus")).starts_with("target[0].iqn:"));
        assert!(err(&format!("{base}{base}")).contains("defined twice"));
        assert!(err(&format!("listen = [\"nowhere\"]\n{base}")).starts_with("listen[0]:"));
        assert!(
            err(&format!("[limits]\nmax_burst_length = 100\n{base}"))
                .starts_with("limits.max_burst_length: 100 is outside")
        );
        assert!(
            err(&format!(
                "[limits]\nfirst_burst_length = 1048576\nmax_burst_length = 65536\n{base}"
            ))
            .contains("must not exceed")
        );
        let chap = format!("{base}[target.chap]\nuser = \"u\"\nsecret = \"short\"\n");
        let e = err(&chap);
        assert!(
            e.starts_with("target[0].chap.secret:") && !e.contains("short\""),
            "{e}"
        );
        assert_eq!(err(""), "target: no [[target]] defined");
    }
}
