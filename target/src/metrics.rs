//! The Prometheus endpoint (`--metrics ADDR`): the counters of
//! [`crate::stats`] as OpenMetrics text, encoded by the prometheus-client
//! crate, served by a minimal HTTP/1.1 GET handler on tokio.
//!
//! Why not hyper: the endpoint answers one kind of request (`GET /metrics`,
//! then close) to a scraper on a trusted network. A request head is read
//! with a size cap (8 KiB) and a deadline (5 s), parsed for its request
//! line only, and answered with `Connection: close`; anything else gets
//! 404, 405 or 400. That is ~60 lines with no new dependency tree, and no
//! keep-alive, pipelining or body handling to get wrong.
//!
//! The names follow the Prometheus conventions: `iesp_target_` prefix, the
//! unit in the name (`_bytes`, `_seconds`), `_total` on counters. Every
//! metric is read from the atomics at scrape time (a prometheus-client
//! [`Collector`]), so the data path never touches prometheus-client.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::server::Target;
use crate::stats::{CommandKind, ConnCounters, SENSE_KEY_NAMES};

/// The OpenMetrics content type prometheus-client's text encoder produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// How long a client may take to send its request.
const READ_DEADLINE: Duration = Duration::from_secs(5);

/// The target's metrics as OpenMetrics text.
pub fn render(target: &Arc<Target>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(TargetCollector(target.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

struct TargetCollector(Arc<Target>);

impl std::fmt::Debug for TargetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TargetCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its samples, each a label set and a value.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in samples {
        let mut s = m.encode_family(labels)?;
        match kind {
            MetricType::Counter => s.encode_counter::<NoLabelSet, _, f64>(v, None)?,
            _ => s.encode_gauge(&(*v as i64))?,
        }
    }
    Ok(())
}

fn one(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    v: u64,
) -> Result<(), std::fmt::Error> {
    family(enc, name, help, unit, kind, &[(Vec::new(), v)])
}

impl Collector for TargetCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let t = &self.0;
        let s = &t.stats;
        let c = MetricType::Counter;
        let g = MetricType::Gauge;
        let secs = Some(&Unit::Seconds);
        let bytes = Some(&Unit::Bytes);

        // ---- Logins and sessions.
        let l = &s.login;
        one(
            &mut enc,
            "iesp_target_login_accepts",
            "Logins that reached full feature phase.",
            None,
            c,
            l.accepts.get(),
        )?;
        let reasons = [
            ("authentication", l.authentication_failures.get()),
            ("authorization", l.authorization_failures.get()),
            ("negotiation", l.negotiation_failures.get()),
            ("other", l.other_failures.get()),
        ];
        let samples: Vec<_> = reasons
            .iter()
            .map(|(r, v)| (vec![("reason", (*r).to_owned())], *v))
            .collect();
        family(
            &mut enc,
            "iesp_target_login_failures",
            "Logins refused, by reason (RFC 4544 iscsiTgtLoginStats).",
            None,
            c,
            &samples,
        )?;
        let samples = vec![
            (vec![("kind", "normal".to_owned())], l.logouts_normal.get()),
            (vec![("kind", "other".to_owned())], l.logouts_other.get()),
        ];
        family(
            &mut enc,
            "iesp_target_connection_ends",
            "Connections that ended after login: by a Logout (normal) or otherwise.",
            None,
            c,
            &samples,
        )?;
        one(
            &mut enc,
            "iesp_target_sessions",
            "Sessions now registered.",
            None,
            g,
            t.sessions.len() as u64,
        )?;
        let conns = s.connections();
        one(
            &mut enc,
            "iesp_target_connections",
            "Connections now in full feature phase.",
            None,
            g,
            conns.len() as u64,
        )?;
        one(
            &mut enc,
            "iesp_target_start_time",
            "When the target started (Unix time).",
            secs,
            g,
            s.started,
        )?;

        // ---- Target-wide PDU counters (closed connections included).
        let tot = s.totals();
        conn_families(&mut enc, "iesp_target", "", &[(Labels::new(), &tot)])?;

        // ---- Per connection.
        let labels = |i: &crate::stats::ConnInfo| -> Labels {
            vec![
                ("initiator", i.initiator.clone()),
                ("isid", i.isid.clone()),
                ("tsih", i.tsih.to_string()),
                ("cid", i.cid.to_string()),
            ]
        };
        let mut info = enc.encode_descriptor(
            "iesp_target_connection",
            "Who is logged in: one sample per connection, value 1.",
            None,
            MetricType::Info,
        )?;
        for k in &conns {
            let i = &k.info;
            let mut l = labels(i);
            l.push(("target", i.target.clone()));
            l.push(("discovery", i.discovery.to_string()));
            l.push((
                "header_digest",
                if i.header_digest { "CRC32C" } else { "None" }.to_owned(),
            ));
            l.push((
                "data_digest",
                if i.data_digest { "CRC32C" } else { "None" }.to_owned(),
            ));
            l.push(("peer", i.peer.clone()));
            l.push(("portal", i.local.clone()));
            info.encode_info(&l)?;
        }
        let samples: Vec<_> = conns
            .iter()
            .map(|k| (labels(&k.info), k.login_time))
            .collect();
        family(
            &mut enc,
            "iesp_target_connection_login_time",
            "When the connection logged in (Unix time).",
            secs,
            g,
            &samples,
        )?;
        let per: Vec<_> = conns
            .iter()
            .map(|k| (labels(&k.info), k.counters()))
            .collect();
        conn_families(
            &mut enc,
            "iesp_target_connection",
            " of this connection",
            &per,
        )?;

        // ---- Per logical unit.
        let mut lus = Vec::new();
        for node in &t.nodes {
            for (n, lu) in node.luns.iter().enumerate() {
                lus.push((
                    vec![("target", node.iqn.clone()), ("lun", n.to_string())],
                    lu,
                ));
            }
        }
        let mut samples = Vec::new();
        for (labels, lu) in &lus {
            for kind in CommandKind::ALL {
                let mut l = labels.clone();
                l.push(("type", kind.name().to_owned()));
                samples.push((l, lu.stats.commands(kind)));
            }
        }
        family(
            &mut enc,
            "iesp_target_lu_commands",
            "SCSI commands completed, by type.",
            None,
            c,
            &samples,
        )?;
        let each = |f: &dyn Fn(&crate::scsi::LogicalUnit) -> u64| -> Vec<(Labels, u64)> {
            lus.iter().map(|(l, lu)| (l.clone(), f(lu))).collect()
        };
        family(
            &mut enc,
            "iesp_target_lu_read",
            "Data-In bytes of READ commands that completed with GOOD status.",
            bytes,
            c,
            &each(&|lu| lu.stats.read_bytes.get()),
        )?;
        family(
            &mut enc,
            "iesp_target_lu_written",
            "Data-Out bytes of WRITE commands that completed with GOOD status.",
            bytes,
            c,
            &each(&|lu| lu.stats.written_bytes.get()),
        )?;
        family(
            &mut enc,
            "iesp_target_lu_unmapped_blocks",
            "Blocks in UNMAP descriptors of commands that succeeded.",
            None,
            c,
            &each(&|lu| lu.stats.unmapped_blocks.get()),
        )?;
        family(
            &mut enc,
            "iesp_target_lu_inflight_commands",
            "Commands executing on the LU now.",
            None,
            g,
            &each(&|lu| lu.stats.in_flight()),
        )?;
        let mut samples = Vec::new();
        for (labels, lu) in &lus {
            for (key, name) in SENSE_KEY_NAMES.iter().enumerate() {
                let mut l = labels.clone();
                l.push(("sense_key", (*name).to_owned()));
                samples.push((l, lu.stats.errors_by_sense_key[key].get()));
            }
            let mut l = labels.clone();
            l.push(("sense_key", "none".to_owned()));
            samples.push((l, lu.stats.other_status.get()));
        }
        family(
            &mut enc,
            "iesp_target_lu_errors",
            "Commands that ended in CHECK CONDITION, by sense key; sense_key=\"none\": other non-GOOD statuses.",
            None,
            c,
            &samples,
        )?;
        let mut m = enc.encode_descriptor(
            "iesp_target_lu_command_latency",
            "Time from the start of a command's execution (its data in) to its completion.",
            secs,
            MetricType::Histogram,
        )?;
        for (labels, lu) in &lus {
            let h = &lu.stats.latency;
            m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                h.sum().as_secs_f64(),
                h.count(),
                &h.buckets(),
                None,
            )?;
        }
        Ok(())
    }
}

/// The PDU counters of [`ConnCounters`] as families `PREFIX_…`.
fn conn_families<S: EncodeLabelSet + Clone>(
    enc: &mut DescriptorEncoder<'_>,
    prefix: &str,
    of: &str,
    rows: &[(S, &ConnCounters)],
) -> Result<(), std::fmt::Error> {
    type Get = fn(&ConnCounters) -> u64;
    let fields: [(&str, &str, Option<Unit>, Get); 8] = [
        ("pdus_received", "PDUs received", None, |c| c.pdus_in.get()),
        ("pdus_sent", "PDUs sent", None, |c| c.pdus_out.get()),
        (
            "received",
            "Bytes received in full feature phase",
            Some(Unit::Bytes),
            |c| c.bytes_in.get(),
        ),
        (
            "sent",
            "Bytes sent in full feature phase",
            Some(Unit::Bytes),
            |c| c.bytes_out.get(),
        ),
        ("scsi_commands", "SCSI Command PDUs received", None, |c| {
            c.commands.get()
        }),
        ("rejects_sent", "Reject PDUs sent", None, |c| {
            c.rejects.get()
        }),
        (
            "nop_timeouts",
            "Connections dropped because a NOP-In ping went unanswered",
            None,
            |c| c.nop_timeouts.get(),
        ),
        (
            "header_digest_errors",
            "PDUs whose header digest failed (the connection is dropped)",
            None,
            |c| c.header_digest_errors.get(),
        ),
    ];
    let mut name = String::new();
    for (field, help, unit, get) in &fields {
        name.clear();
        let _ = write!(name, "{prefix}_{field}");
        let mut m = enc.encode_descriptor(
            &name,
            &format!("{help}{of}."),
            unit.as_ref(),
            MetricType::Counter,
        )?;
        for (labels, c) in rows {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, f64>(&get(c), None)?;
        }
    }
    name.clear();
    let _ = write!(name, "{prefix}_data_digest_errors");
    let mut m = enc.encode_descriptor(
        &name,
        &format!("PDUs whose data digest failed (Rejected){of}."),
        None,
        MetricType::Counter,
    )?;
    for (labels, c) in rows {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, f64>(&c.data_digest_errors.get(), None)?;
    }
    Ok(())
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    target: Arc<Target>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut clients = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let target = target.clone();
                    clients.spawn(async move {
                        if let Err(e) = answer(stream, &target).await {
                            tracing::debug!("metrics client: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    clients.abort_all();
    Ok(())
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, target: &Arc<Target>) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head too long",
                ));
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    let status = match tokio::time::timeout(READ_DEADLINE, read).await {
        Err(_) => return Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            Response::status("431 Request Header Fields Too Large")
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => route(&head, target),
    };
    stream.write_all(&status.encode()).await?;
    stream.shutdown().await
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn status(status: &'static str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{status}\n"),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

fn route(head: &[u8], target: &Arc<Target>) -> Response {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::status("400 Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::status("400 Bad Request");
    }
    if method != "GET" {
        return Response::status("405 Method Not Allowed");
    }
    match path.split('?').next() {
        Some("/metrics") => Response {
            status: "200 OK",
            content_type: CONTENT_TYPE,
            body: render(target),
        },
        _ => Response::status("404 Not Found"),
    }
}
