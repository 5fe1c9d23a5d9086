//! The `iesp-target` command line, in the library so that tests, man pages
//! and shell completions reach the same definition the binary parses
//! ([`command`], [`Args`]).
//!
//! It follows the conventions of docs/cli.md, shared with `iesp-test`
//! through `iesp_cli`:
//!
//! - every size (`--lun ram:SIZE`, `size=`, `bs=`, `--block-size`,
//!   `--max-recv-data-segment-length`) takes the size grammar of
//!   [`iesp_cli::units`] (`512`, `512B`, `4k`, `4KiB`, `1.5G`, `1T`), every
//!   duration (`--nop-interval`, `--nop-timeout`, `--login-timeout`) the
//!   duration grammar (`500ms`, `3`, `1s`, `2m`, `1h30m`); the TOML file
//!   ([`crate::config_file`]) takes the same;
//! - logging: `IESP_LOG` (a `tracing` filter) wins over `--log`, which wins
//!   over `-v/-vv/-q`; the default is `info`; no ANSI colour unless stderr
//!   is a terminal and `NO_COLOR` is unset ([`iesp_cli::log`]);
//! - exit status: 0 after a clean shutdown (including one asked for by
//!   SIGINT or SIGTERM: that is how a server is stopped), 2 for a bad
//!   command line or configuration (one line on stderr), 3 when a portal
//!   cannot be bound or a LUN's backing cannot be opened ([`EXIT_HELP`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use iesp_cli::log::Verbosity;
use iesp_cli::units;

use crate::config::{self, ChapAuth, ChapCredentials, LunSpec, TargetConfig, TargetDef};
use crate::config_file;
use crate::endpoints::Endpoints;

/// The target's exit codes, for `--help` (a server's variant of
/// [`iesp_cli::exit::HELP`]: a signal is the normal way to stop it).
pub const EXIT_HELP: &str = "\
Exit status:
  0    clean shutdown, also after SIGINT or SIGTERM (the way to stop a server)
  2    usage error (command line, configuration file, LUN specification)
  3    I/O error (a portal cannot be bound, a LUN's backing cannot be opened)

Sizes take 512, 512B, 4k, 4KiB, 1.5G, 1T (binary units); durations take
500ms, 3 (seconds), 1s, 2m, 1h30m. Logging: IESP_LOG (e.g. debug,
iesp_target=trace) overrides --log and -v/-q; colour only on a terminal,
never with NO_COLOR.";

/// The iesp reference iSCSI target.
#[derive(Parser, Debug, Clone)]
#[command(name = "iesp-target", version, about, long_about = None, after_help = EXIT_HELP)]
pub struct Args {
    /// Configuration file (TOML) describing targets, LUNs, ACLs, CHAP and
    /// limits; see iesp-target.sample.toml. Excludes the target flags below.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on (IPv4 or [IPv6]:port); repeatable. Default
    /// 127.0.0.1:3260, or the configuration file's `listen`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,

    /// Target name (IQN).
    #[arg(long, default_value = config::DEFAULT_IQN, value_parser = check_iqn, conflicts_with = "config")]
    pub iqn: String,

    /// A LUN, repeatable; LUN numbers follow the order given.
    /// `ram:SIZE`, `file:PATH[,size=SIZE]` (created sparse when missing),
    /// `dev:PATH` or `/dev/…`, `nbd:HOST:PORT[/EXPORT]` (an NBD export);
    /// append `,bs=4k` or `,ro` per LUN. Default: ram:64M.
    #[arg(long = "lun", value_name = "SPEC", value_parser = check_lun, conflicts_with = "config")]
    pub luns: Vec<String>,

    /// Logical block size for LUNs that do not say `bs=`: a power of two from 512 to 64k.
    #[arg(long, value_name = "SIZE", default_value = "512", value_parser = units::parse_block_size, conflicts_with = "config")]
    pub block_size: u32,

    /// Serve every LUN read-only (write-protected).
    #[arg(long, conflicts_with = "config")]
    pub read_only: bool,

    /// MaxRecvDataSegmentLength this target declares (512 to 16M - 1).
    #[arg(long, value_name = "SIZE", value_parser = parse_segment_length, conflicts_with = "config")]
    pub max_recv_data_segment_length: Option<u32>,

    /// Commands a session may have queued (the CmdSN window). Default 128.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096), conflicts_with = "config")]
    pub command_window: Option<u32>,

    /// Refuse ImmediateData=Yes.
    #[arg(long, conflicts_with = "config")]
    pub no_immediate_data: bool,

    /// Require InitialR2T=Yes.
    #[arg(long, conflicts_with = "config")]
    pub initial_r2t: bool,

    /// Refuse CRC32C header and data digests.
    #[arg(long, conflicts_with = "config")]
    pub no_digests: bool,

    /// Silence before a NOP-In ping asks the initiator for an answer; 0
    /// disables keep-alive. Default 20s.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration, conflicts_with = "config")]
    pub nop_interval: Option<Duration>,

    /// How long a ping may stay unanswered before the connection is
    /// dropped. Default 20s.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration_nonzero, conflicts_with = "config")]
    pub nop_timeout: Option<Duration>,

    /// The whole-login deadline: a connection not logged in this long after
    /// it was accepted is dropped, however often it sends. Default 15s.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration_nonzero, conflicts_with = "config")]
    pub login_timeout: Option<Duration>,

    /// Connections at once; more are closed on accept. Default 4096.
    #[arg(long, value_name = "N", value_parser = parse_count, conflicts_with = "config")]
    pub max_connections: Option<usize>,

    /// Connections still logging in, in total; more are closed on accept.
    /// Default 256.
    #[arg(long, value_name = "N", value_parser = parse_count, conflicts_with = "config")]
    pub max_unauthenticated: Option<usize>,

    /// Connections still logging in from one source address. Default 32.
    #[arg(long, value_name = "N", value_parser = parse_count, conflicts_with = "config")]
    pub max_unauthenticated_per_address: Option<usize>,

    /// Normal sessions per target; one more login gets Out of Resources
    /// (0x0302). Default 1024.
    #[arg(long, value_name = "N", value_parser = parse_count, conflicts_with = "config")]
    pub max_sessions: Option<usize>,

    /// Connections per session (MC/S): the MaxConnections the target
    /// accepts, 1 to 65535; a session gets the smaller of this and the
    /// initiator's offer (RFC default 1), one more connection gets Too Many
    /// Connections (0x0206). Default 8.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "config")]
    pub max_connections_per_session: Option<u16>,

    /// Delay of the first failed authentication of an initiator name or
    /// address; each failure in a row doubles it. Default 250ms.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration, conflicts_with = "config")]
    pub auth_fail_delay: Option<Duration>,

    /// The longest failed-authentication delay. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration, conflicts_with = "config")]
    pub auth_fail_delay_max: Option<Duration>,

    /// Memory for write data of all sessions together; when it runs out
    /// R2Ts wait and the command window shrinks. Default 256MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_budget, conflicts_with = "config")]
    pub memory_budget: Option<u64>,

    /// The share of --memory-budget one session may hold. Default a
    /// quarter of the budget.
    #[arg(long, value_name = "SIZE", value_parser = parse_budget, conflicts_with = "config")]
    pub session_memory: Option<u64>,

    /// Abort a write whose Data-Out stops coming for this long, freeing
    /// its buffer. Default 30s.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration_nonzero, conflicts_with = "config")]
    pub data_out_timeout: Option<Duration>,

    /// READ/WRITE commands of one session that run at once on LUNs whose
    /// backend may block (NBD, block devices), on I/O worker threads: 1 to
    /// 256. Default 8.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256), conflicts_with = "config")]
    pub io_workers: Option<u32>,
    /// Busy-poll: microseconds (0 to 1000) a connection spins on its
    /// socket before sleeping for the next PDU. Lowers queue-depth-1
    /// latency by the wake-up time; costs CPU: a connection at QD1 keeps
    /// about one core busy, an idle one spins this long after each answer.
    /// Default 0 (off).
    #[arg(long, value_name = "US", value_parser = parse_poll_us, conflicts_with = "config")]
    pub poll_us: Option<u32>,

    /// Allow only this initiator name (repeatable); without it every
    /// initiator may log in.
    #[arg(long = "acl", value_name = "INITIATOR_IQN", conflicts_with = "config")]
    pub acl: Vec<String>,

    /// Require CHAP: the user name initiators must send.
    #[arg(long, requires = "chap_secret", conflicts_with = "config")]
    pub chap_user: Option<String>,

    /// Require CHAP: the secret initiators must prove. Prefer a
    /// configuration file: command lines are visible to other users.
    #[arg(long, requires = "chap_user", conflicts_with = "config")]
    pub chap_secret: Option<String>,

    /// Mutual CHAP: the user name this target answers with.
    #[arg(long, requires_all = ["mutual_chap_secret", "chap_user"], conflicts_with = "config")]
    pub mutual_chap_user: Option<String>,

    /// Mutual CHAP: the secret this target proves.
    #[arg(long, requires = "mutual_chap_user", conflicts_with = "config")]
    pub mutual_chap_secret: Option<String>,

    /// Require the same CHAP (--chap-user/--chap-secret, and mutual) for
    /// discovery sessions too.
    #[arg(long, requires = "chap_user", conflicts_with = "config")]
    pub discovery_chap: bool,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics.
    /// Off by default; a non-loopback ADDR needs --allow-remote-endpoints.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Serve an SNMP v2c agent (read-only; iSCSI-MIB and IESP-TARGET-MIB)
    /// on UDP ADDR, e.g. 127.0.0.1:1161. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub snmp: Option<SocketAddr>,

    /// The SNMP community requests must carry. Default `public`.
    #[arg(long, value_name = "NAME")]
    pub snmp_community: Option<String>,

    /// Allow --metrics and --snmp on non-loopback addresses (they are
    /// unauthenticated; the target warns).
    #[arg(long)]
    pub allow_remote_endpoints: bool,

    /// Count commands, PDUs and bytes (`on`, the default) or not (`off`:
    /// the data path then skips every counter; for measuring their cost).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub statistics: Option<bool>,

    /// Log filter, e.g. `info`, `debug`, `iesp_target=trace`; IESP_LOG
    /// overrides it. Default: info, or what -v/-q ask for.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// The binary's clap command: for man pages and shell completions.
pub fn command() -> clap::Command {
    Args::command()
}

/// Checks a `--lun` value while parsing (so a bad one is a usage error
/// naming the flag); [`Args::flags_config`] applies `--block-size` to specs
/// without `bs=`.
fn check_iqn(s: &str) -> Result<String, String> {
    if crate::config_file::is_iscsi_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not an iSCSI name (iqn.YYYY-MM.reversed.domain[:name], eui.… or naa.…, at most 223 bytes)"
        ))
    }
}

fn check_lun(s: &str) -> Result<String, String> {
    s.parse::<LunSpec>()
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_segment_length(s: &str) -> Result<u32, String> {
    let n = units::parse_size(s)?;
    match u32::try_from(n) {
        Ok(n) if (512..=16_777_215).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is outside 512 to 16777215 bytes")),
    }
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a count of at least 1")),
    }
}

/// A busy-poll budget in microseconds, 0 to [`MAX_POLL_US`](iesp_netpoll::MAX_POLL_US).
fn parse_poll_us(s: &str) -> Result<u32, String> {
    let max = iesp_netpoll::MAX_POLL_US;
    match s.parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of microseconds from 0 to {max}"
        )),
    }
}

/// A memory size of at least one largest transfer (8 MiB).
fn parse_budget(s: &str) -> Result<u64, String> {
    let n = units::parse_size(s)?;
    if n < config::MIN_MEMORY_BUDGET {
        return Err(format!("`{s}` is less than 8MiB, the largest transfer"));
    }
    Ok(n)
}

/// A configuration that cannot be used: exit 2.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: String,
        source: config_file::ConfigError,
    },
    #[error("--lun {0}")]
    Lun(#[from] config::LunSpecError),
    #[error("{0}")]
    Invalid(String),
}

impl Args {
    /// The log filter to install when `IESP_LOG` is not set.
    pub fn log_filter(&self) -> String {
        match &self.log {
            Some(f) => f.clone(),
            None => self.verbosity.filter("info"),
        }
    }

    /// The targets and portals to serve: from `--config`, or the one
    /// target the flags describe. `--listen` overrides the file's portals;
    /// with neither, 127.0.0.1:3260.
    pub fn load(&self) -> Result<(TargetConfig, Vec<SocketAddr>), UsageError> {
        self.load_all().map(|(cfg, listen, _)| (cfg, listen))
    }

    /// [`Args::load`] and the observability endpoints: the file's
    /// `[observability]` table, overridden by the flags.
    pub fn load_all(&self) -> Result<(TargetConfig, Vec<SocketAddr>, Endpoints), UsageError> {
        let mut endpoints = Endpoints::default();
        let (cfg, mut listen) = match &self.config {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| UsageError::Read {
                    path: shown.clone(),
                    source,
                })?;
                let loaded = config_file::parse(&text).map_err(|source| UsageError::File {
                    path: shown,
                    source,
                })?;
                endpoints = loaded.endpoints;
                (loaded.config, loaded.listen)
            }
            None => (self.flags_config()?, Vec::new()),
        };
        if !self.listen.is_empty() {
            listen = self.listen.clone();
        }
        if listen.is_empty() {
            listen.push(SocketAddr::from(([127, 0, 0, 1], config::DEFAULT_PORT)));
        }
        if self.metrics.is_some() {
            endpoints.metrics = self.metrics;
        }
        if self.snmp.is_some() {
            endpoints.snmp = self.snmp;
        }
        if let Some(c) = &self.snmp_community {
            endpoints.snmp_community = c.clone();
        }
        endpoints.allow_remote |= self.allow_remote_endpoints;
        if let Some(on) = self.statistics {
            endpoints.statistics = on;
        }
        Ok((cfg, listen, endpoints))
    }

    /// The configuration the flags describe: one target.
    pub fn flags_config(&self) -> Result<TargetConfig, UsageError> {
        let mut luns = Vec::new();
        for spec in &self.luns {
            let mut lun: LunSpec = spec.parse()?;
            if !spec.split(',').any(|o| o.starts_with("bs=")) {
                lun.block_size = self.block_size;
            }
            luns.push(lun);
        }
        if luns.is_empty() {
            luns.push(LunSpec {
                block_size: self.block_size,
                ..LunSpec::default()
            });
        }
        for lun in &mut luns {
            lun.read_only |= self.read_only;
        }
        let chap = match (&self.chap_user, &self.chap_secret) {
            (Some(user), Some(secret)) => Some(ChapAuth {
                initiator: ChapCredentials::new(user.clone(), secret.as_bytes().to_vec()),
                target: match (&self.mutual_chap_user, &self.mutual_chap_secret) {
                    (Some(u), Some(s)) => {
                        Some(ChapCredentials::new(u.clone(), s.as_bytes().to_vec()))
                    }
                    _ => None,
                },
            }),
            _ => None,
        };
        if let Some(c) = &chap {
            c.validate("--chap-secret", "--mutual-chap-secret")
                .map_err(UsageError::Invalid)?;
        }
        let discovery_chap = if self.discovery_chap {
            chap.clone()
        } else {
            None
        };
        let mut cfg = TargetConfig {
            targets: vec![TargetDef {
                iqn: self.iqn.clone(),
                alias: Some("iesp-target".into()),
                luns,
                acl: self.acl.clone(),
                chap,
            }],
            discovery_chap,
            ..TargetConfig::default()
        };
        let l = &mut cfg.limits;
        if let Some(v) = self.max_recv_data_segment_length {
            l.max_recv_data_segment_length = v;
        }
        if let Some(v) = self.command_window {
            l.command_window = v;
        }
        l.immediate_data = !self.no_immediate_data;
        l.initial_r2t = self.initial_r2t;
        l.digests = !self.no_digests;
        if let Some(d) = self.nop_interval {
            l.nop_interval = (!d.is_zero()).then_some(d);
        }
        if let Some(d) = self.nop_timeout {
            l.nop_timeout = d;
        }
        if let Some(d) = self.login_timeout {
            l.login_timeout = d;
        }
        let caps = [
            (self.max_connections, &mut l.max_connections),
            (self.max_unauthenticated, &mut l.max_unauthenticated),
            (
                self.max_unauthenticated_per_address,
                &mut l.max_unauthenticated_per_address,
            ),
            (self.max_sessions, &mut l.max_sessions),
        ];
        for (v, slot) in caps {
            if let Some(v) = v {
                *slot = v;
            }
        }
        if let Some(n) = self.max_connections_per_session {
            l.max_connections_per_session = n;
        }
        if let Some(d) = self.auth_fail_delay {
            l.auth_fail_delay = d;
        }
        if let Some(d) = self.auth_fail_delay_max {
            l.auth_fail_delay_max = d;
        }
        if let Some(b) = self.memory_budget {
            l.memory_budget = b;
            l.session_memory = b / 4;
        }
        if let Some(s) = self.session_memory {
            l.session_memory = s;
        }
        if let Some(us) = self.poll_us {
            l.poll_us = us;
        }
        if let Some(d) = self.data_out_timeout {
            l.data_out_timeout = d;
        }
        if let Some(n) = self.io_workers {
            l.io_workers = n as usize;
        }
        l.validate().map_err(UsageError::Invalid)?;
        Ok(cfg)
    }
}

/// A clap error as one line for stderr: `error: ` and the usage/tip
/// paragraphs dropped.
pub fn one_line(e: &clap::Error) -> String {
    // The first paragraph is the message; a list (missing arguments) is
    // indented below its first line and joins it.
    let text = e.to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = first.join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    if first.is_empty() {
        return "invalid arguments (see --help)".into();
    }
    format!("{first} (see --help)")
}

/// `on` or `off`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("`{s}` is neither `on` nor `off`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("iesp-target").chain(args.iter().copied()))
    }

    #[test]
    fn command_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn a_lun_without_bs_takes_block_size_and_one_with_bs_keeps_it() {
        let a = parse(&[
            "--lun",
            "ram:1M",
            "--lun",
            "ram:1M,bs=512",
            "--block-size",
            "4k",
        ])
        .expect("parse");
        let cfg = a.flags_config().expect("config");
        let sizes: Vec<u32> = cfg.targets[0].luns.iter().map(|l| l.block_size).collect();
        assert_eq!(sizes, vec![4096, 512]);
    }

    #[test]
    fn log_filter_precedence_below_iesp_log() {
        assert_eq!(parse(&[]).unwrap().log_filter(), "info");
        assert_eq!(parse(&["-v"]).unwrap().log_filter(), "debug");
        assert_eq!(parse(&["-q"]).unwrap().log_filter(), "error");
        assert_eq!(
            parse(&["-v", "--log", "iesp_target=trace"])
                .unwrap()
                .log_filter(),
            "iesp_target=trace"
        );
    }

    #[test]
    fn statistics_takes_on_or_off() {
        let (_, _, e) = parse(&["--statistics", "off"]).unwrap().load_all().unwrap();
        assert!(!e.statistics);
        let (_, _, e) = parse(&[]).unwrap().load_all().unwrap();
        assert!(e.statistics);
        assert!(parse(&["--statistics", "no"]).is_err());
    }

    #[test]
    fn clap_errors_become_one_line() {
        let e = parse(&["--block-size", "1000"]).unwrap_err();
        let line = one_line(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--block-size"), "{line}");
        let e = parse(&["--chap-user", "x"]).unwrap_err();
        let line = one_line(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--chap-secret"), "{line}");
    }
}
