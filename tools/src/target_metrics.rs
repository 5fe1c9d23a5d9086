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

/// What changed on the target during the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetDelta {
    pub commands: f64,
    pub read_bytes: f64,
    pub written_bytes: f64,
    /// CHECK CONDITIONs (and other bad statuses, `none`) by sense key.
    pub errors_by_sense_key: BTreeMap<String, f64>,
    pub rejects: f64,
    pub header_digest_errors: f64,
    pub data_digest_errors: f64,
    pub login_failures: f64,
    pub nop_timeouts: f64,
}

impl TargetDelta {
    pub fn between(before: &Samples, after: &Samples) -> TargetDelta {
        let d =
            |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
        let sum = |fam: &str| -> f64 {
            after
                .keys()
                .filter(|k| family(k) == fam)
                .map(|k| d(k))
                .sum()
        };
        let mut errors = BTreeMap::new();
        for k in after
            .keys()
            .filter(|k| family(k) == "iesp_target_lu_errors_total")
        {
            let v = d(k);
            if v != 0.0 {
                let key = k
                    .split("sense_key=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("?");
                *errors.entry(key.to_owned()).or_insert(0.0) += v;
            }
        }
        TargetDelta {
            commands: sum("iesp_target_lu_commands_total"),
            read_bytes: sum("iesp_target_lu_read_bytes_total"),
            written_bytes: sum("iesp_target_lu_written_bytes_total"),
            errors_by_sense_key: errors,
            rejects: d("iesp_target_rejects_sent_total"),
            header_digest_errors: d("iesp_target_header_digest_errors_total"),
            data_digest_errors: d("iesp_target_data_digest_errors_total"),
            login_failures: sum("iesp_target_login_failures_total"),
            nop_timeouts: d("iesp_target_nop_timeouts_total"),
        }
    }

    /// Target-side errors of every kind. UNIT ATTENTION is left out: every
    /// new I_T nexus gets one (power on or reset) on its first command.
    pub fn errors(&self) -> f64 {
        self.errors_by_sense_key
            .iter()
            .filter(|(k, _)| k.as_str() != "unit_attention")
            .map(|(_, v)| v)
            .sum::<f64>()
            + self.rejects
            + self.header_digest_errors
            + self.data_digest_errors
            + self.login_failures
            + self.nop_timeouts
    }

    /// Two lines for the terminal report.
    pub fn render(&self, url: &str) -> String {
        let mut out = format!(
            "target side ({url}): {:.0} commands, {:.0} bytes read, {:.0} bytes written\n",
            self.commands, self.read_bytes, self.written_bytes
        );
        let by_key: Vec<String> = self
            .errors_by_sense_key
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect();
        out += &format!(
            "target-side errors: {:.0} (CHECK CONDITION by sense key, unit_attention not counted: {}; Rejects {:.0}, digest errors {:.0} header / {:.0} data, failed logins {:.0}, NOP timeouts {:.0})\n",
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

/// A run's before-and-after reading.
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
    /// Reads the counters after the run and renders the difference; a
    /// failure is a warning line.
    pub fn finish(&self) -> String {
        match scrape(&self.url) {
            Ok(after) => TargetDelta::between(&self.before, &after).render(&self.url),
            Err(e) => format!("warning: target counters after the run: {e}\n"),
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
        let d = TargetDelta::between(&before, &after);
        assert_eq!(d.commands, 8.0);
        assert_eq!(d.errors_by_sense_key.get("medium_error"), Some(&2.0));
        assert_eq!(d.rejects, 0.0);
        assert_eq!(d.errors(), 2.0);
        assert!(d.render("u").contains("medium_error 2"));
    }

    #[test]
    fn only_http_urls() {
        assert!(scrape("https://x/metrics").unwrap_err().contains("http://"));
    }
}
