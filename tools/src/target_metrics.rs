//! `--target-metrics URL` of `bench` and `verify`: the target's own
//! counters (an `iesp-target --metrics` endpoint, or any Prometheus text
//! exposition with `iesp_target_*` names) read before and after the run,
//! so the report shows what the target saw next to what the client saw:
//! commands and bytes, and the target-side errors (CHECK CONDITIONs by
//! sense key, Rejects, digest errors, failed logins, NOP timeouts).
//!
//! The endpoint is read with one plain HTTP/1.1 GET (`http://` only, a
//! 5 s deadline, `Connection: close`). An endpoint that cannot be read
//! before the run is an I/O error (exit 3): the run would report nothing
//! of what was asked. After the run a failure is a warning: the client's
//! results still stand.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

/// The flag, flattened into `bench` and `verify`.
#[derive(Args, Clone, Debug, Default)]
pub struct TargetMetricsArgs {
    /// Read the target's counters (an `iesp-target --metrics` endpoint,
    /// e.g. http://127.0.0.1:9100/metrics) before and after the run and
    /// show the target-side errors next to the client's results.
    #[arg(long, value_name = "URL")]
    pub target_metrics: Option<String>,
}

const DEADLINE: Duration = Duration::from_secs(5);
/// The largest exposition read.
const MAX_BODY: u64 = 16 << 20;

/// The samples of one scrape: `name{labels}` to value.
pub type Samples = BTreeMap<String, f64>;

/// Reads `url` once.
pub fn scrape(url: &str) -> Result<Samples, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--target-metrics {url}: only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let fail = |e: &dyn std::fmt::Display| format!("--target-metrics {url}: {e}");
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| fail(&e))?
        .next()
        .ok_or_else(|| fail(&"no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, DEADLINE).map_err(|e| fail(&e))?;
    s.set_read_timeout(Some(DEADLINE)).map_err(|e| fail(&e))?;
    s.set_write_timeout(Some(DEADLINE)).map_err(|e| fail(&e))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| fail(&e))?;
    let mut raw = Vec::new();
    s.take(MAX_BODY)
        .read_to_end(&mut raw)
        .map_err(|e| fail(&e))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail(&"not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(fail(&format!("answered `{status}`")));
    }
    Ok(parse(body))
}

/// The samples of a Prometheus/OpenMetrics text exposition.
pub fn parse(body: &str) -> Samples {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.trim().to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The family of a sample key: the name before `{`.
fn family(key: &str) -> &str {
    key.split('{').next().unwrap_or(key)
}

/// The target-wide counters of one scrape, or the difference of two.
/// Integers: every counter counts events or bytes (a difference can be
/// negative only if the target restarted during the run).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TargetCounters {
    /// SCSI commands the LUs completed, every type.
    pub commands: i64,
    pub read_bytes: i64,
    pub written_bytes: i64,
    /// CHECK CONDITIONs (and other bad statuses, `none`) by sense key;
    /// keys whose value is 0 are left out.
    pub errors_by_sense_key: BTreeMap<String, i64>,
    pub rejects: i64,
    pub header_digest_errors: i64,
    pub data_digest_errors: i64,
    pub login_failures: i64,
    pub nop_timeouts: i64,
}

/// A counter value as an integer (expositions print them as floats).
fn int(v: f64) -> i64 {
    v.round() as i64
}

impl TargetCounters {
    /// The counters in `samples`, summed over their labels.
    pub fn of(samples: &Samples) -> TargetCounters {
        let get = |k: &str| int(samples.get(k).copied().unwrap_or(0.0));
        let sum = |fam: &str| -> i64 {
            samples
                .iter()
                .filter(|(k, _)| family(k) == fam)
                .map(|(_, v)| int(*v))
                .sum()
        };
        let mut errors = BTreeMap::new();
        for (k, v) in samples
            .iter()
            .filter(|(k, _)| family(k) == "iesp_target_lu_errors_total")
        {
            let key = k
                .split("sense_key=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("?");
            *errors.entry(key.to_owned()).or_insert(0) += int(*v);
        }
        errors.retain(|_, v| *v != 0);
        TargetCounters {
            commands: sum("iesp_target_lu_commands_total"),
            read_bytes: sum("iesp_target_lu_read_bytes_total"),
            written_bytes: sum("iesp_target_lu_written_bytes_total"),
            errors_by_sense_key: errors,
            rejects: get("iesp_target_rejects_sent_total"),
            header_digest_errors: get("iesp_target_header_digest_errors_total"),
            data_digest_errors: get("iesp_target_data_digest_errors_total"),
            login_failures: sum("iesp_target_login_failures_total"),
            nop_timeouts: get("iesp_target_nop_timeouts_total"),
        }
    }

    /// `self - before`, counter by counter.
    pub fn minus(&self, before: &TargetCounters) -> TargetCounters {
        let mut errors = self.errors_by_sense_key.clone();
        for (k, v) in &before.errors_by_sense_key {
            *errors.entry(k.clone()).or_insert(0) -= v;
        }
        errors.retain(|_, v| *v != 0);
        TargetCounters {
            commands: self.commands - before.commands,
            read_bytes: self.read_bytes - before.read_bytes,
            written_bytes: self.written_bytes - before.written_bytes,
            errors_by_sense_key: errors,
            rejects: self.rejects - before.rejects,
            header_digest_errors: self.header_digest_errors - before.header_digest_errors,
            data_digest_errors: self.data_digest_errors - before.data_digest_errors,
            login_failures: self.login_failures - before.login_failures,
            nop_timeouts: self.nop_timeouts - before.nop_timeouts,
        }
    }

    /// What changed on the target between two scrapes.
    pub fn between(before: &Samples, after: &Samples) -> TargetCounters {
        TargetCounters::of(after).minus(&TargetCounters::of(before))
    }

    /// Target-side errors of every kind. UNIT ATTENTION is left out: every
    /// new I_T nexus gets one (power on or reset) on its first command.
    pub fn errors(&self) -> i64 {
        self.errors_by_sense_key
            .iter()
            .filter(|(k, _)| k.as_str() != "unit_attention")
            .map(|(_, v)| v)
            .sum::<i64>()
            + self.rejects
            + self.header_digest_errors
            + self.data_digest_errors
            + self.login_failures
            + self.nop_timeouts
    }

    /// Two lines for the terminal report.
    pub fn render(&self, url: &str) -> String {
        let mut out = format!(
            "target side ({url}): {} commands, {} bytes read, {} bytes written\n",
            self.commands, self.read_bytes, self.written_bytes
        );
        let by_key: Vec<String> = self
            .errors_by_sense_key
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out += &format!(
            "target-side errors: {} (CHECK CONDITION by sense key, unit_attention not counted: {}; Rejects {}, digest errors {} header / {} data, failed logins {}, NOP timeouts {})\n",
            self.errors(),
            if by_key.is_empty() {
                "none".to_owned()
            } else {
                by_key.join(", ")
            },
            self.rejects,
            self.header_digest_errors,
            self.data_digest_errors,
            self.login_failures,
            self.nop_timeouts
        );
        out
    }
}

/// The `target_metrics` object of the bench and verify JSON reports
/// (docs/schemas/target-metrics.schema.json).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetMetricsReport {
    pub url: String,
    pub before: TargetCounters,
    /// `None` when the endpoint could not be read after the run.
    pub after: Option<TargetCounters>,
    /// `after - before`, when both were read.
    pub difference: Option<TargetCounters>,
    /// [`TargetCounters::errors`] of the difference.
    pub target_errors: Option<i64>,
    /// Why `after` is missing.
    pub warning: Option<String>,
}

impl TargetMetricsReport {
    /// The terminal lines: the difference, or the warning.
    pub fn render(&self) -> String {
        match (&self.difference, &self.warning) {
            (Some(d), _) => d.render(&self.url),
            (None, Some(w)) => format!("warning: target counters after the run: {w}\n"),
            (None, None) => String::new(),
        }
    }
}

/// A run's before-and-after reading.
#[derive(Clone, Debug)]
pub struct Recorder {
    url: String,
    before: Samples,
}

impl TargetMetricsArgs {
    /// Reads the counters before the run; `None` without the flag.
    pub fn start(&self) -> Result<Option<Recorder>, String> {
        match &self.target_metrics {
            None => Ok(None),
            Some(url) => Ok(Some(Recorder {
                url: url.clone(),
                before: scrape(url)?,
            })),
        }
    }
}

impl Recorder {
    /// Reads the counters after the run; a failure leaves `after` out and
    /// says why.
    pub fn finish(&self) -> TargetMetricsReport {
        let before = TargetCounters::of(&self.before);
        match scrape(&self.url) {
            Ok(after) => {
                let after = TargetCounters::of(&after);
                let difference = after.minus(&before);
                TargetMetricsReport {
                    url: self.url.clone(),
                    target_errors: Some(difference.errors()),
                    before,
                    after: Some(after),
                    difference: Some(difference),
                    warning: None,
                }
            }
            Err(e) => TargetMetricsReport {
                url: self.url.clone(),
                before,
                after: None,
                difference: None,
                target_errors: None,
                warning: Some(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_sum_families_and_split_sense_keys() {
        let before = parse(
            "# TYPE x counter\n\
             iesp_target_lu_commands_total{lun=\"0\",type=\"read\"} 10\n\
             iesp_target_lu_errors_total{lun=\"0\",sense_key=\"medium_error\"} 1\n\
             iesp_target_rejects_sent_total 2\n",
        );
        let after = parse(
            "iesp_target_lu_commands_total{lun=\"0\",type=\"read\"} 15\n\
             iesp_target_lu_commands_total{lun=\"0\",type=\"write\"} 3\n\
             iesp_target_lu_errors_total{lun=\"0\",sense_key=\"medium_error\"} 3\n\
             iesp_target_rejects_sent_total 2\n\
             # EOF\n",
        );
        let d = TargetCounters::between(&before, &after);
        assert_eq!(d.commands, 8);
        assert_eq!(d.errors_by_sense_key.get("medium_error"), Some(&2));
        assert_eq!(d.rejects, 0);
        assert_eq!(d.errors(), 2);
        assert!(d.render("u").contains("medium_error 2"));
        assert_eq!(TargetCounters::of(&after).commands, 18);
        assert_eq!(TargetCounters::of(&before).errors_by_sense_key.len(), 1);
    }

    #[test]
    fn only_http_urls() {
        assert!(scrape("https://x/metrics").unwrap_err().contains("http://"));
    }
}
