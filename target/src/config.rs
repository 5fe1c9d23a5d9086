//! Target configuration: targets, LUNs and protocol limits.
//!
//! The defaults serve at once: one target named [`DEFAULT_IQN`] with LUN 0 a
//! 64 MiB RAM disk of 512-byte blocks, listening on 127.0.0.1:3260. Command
//! line flags ([`LunSpec`] strings such as `ram:64M` or
//! `file:/var/lib/lun0.img,size=1G`) and, later, a TOML file build the same
//! structures.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use iesp_proto::chap::ChapCredentials;

/// The IQN of the default target. Stable: scripts and docs rely on it.
pub const DEFAULT_IQN: &str = "iqn.2026-11.org.iesp-test:target0";

/// The default portal.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3260";

/// The iSCSI port (RFC 7143 §4.4.1), in [`DEFAULT_LISTEN`].
pub const DEFAULT_PORT: u16 = 3260;

/// Everything a running target needs to know.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    pub targets: Vec<TargetDef>,
    /// Target Portal Group Tag reported in SendTargets and at login.
    pub portal_group_tag: u16,
    pub limits: Limits,
    /// CHAP for discovery sessions; none means discovery is open.
    pub discovery_chap: Option<ChapAuth>,
}

/// One iSCSI target node and its logical units.
#[derive(Clone, Debug, Default)]
pub struct TargetDef {
    pub iqn: String,
    pub alias: Option<String>,
    /// LUN n is `luns[n]`.
    pub luns: Vec<LunSpec>,
    /// Initiator names allowed to log in; empty allows every initiator.
    pub acl: Vec<String>,
    /// CHAP the initiators must pass; none means no authentication.
    pub chap: Option<ChapAuth>,
}

impl TargetDef {
    /// Whether `initiator` may see and log in to this target.
    pub fn allows(&self, initiator: &str) -> bool {
        self.acl.is_empty() || self.acl.iter().any(|a| a == initiator)
    }
}

/// CHAP settings of a target (RFC 7143 §12.1.3). `Debug` shows no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChapAuth {
    /// The name and secret initiators must prove they know.
    pub initiator: ChapCredentials,
    /// The name and secret this target proves when an initiator asks for
    /// mutual CHAP.
    pub target: Option<ChapCredentials>,
}

/// The shortest CHAP secret accepted anywhere (flags and file), in bytes.
pub const MIN_CHAP_SECRET: usize = 12;

impl ChapAuth {
    /// The rules every CHAP setting follows, whether it came from flags or
    /// the file: secrets of at least [`MIN_CHAP_SECRET`] bytes, a mutual
    /// secret different from the initiator's (RFC 7143 §12.1.3). The
    /// message names `what` (a flag or key), never a secret.
    pub fn validate(&self, what: &str, mutual_what: &str) -> Result<(), String> {
        let len = self.initiator.secret.len();
        if len < MIN_CHAP_SECRET {
            return Err(format!(
                "{what}: secret is {len} characters; use at least {MIN_CHAP_SECRET}"
            ));
        }
        if let Some(t) = &self.target {
            let len = t.secret.len();
            if len < MIN_CHAP_SECRET {
                return Err(format!(
                    "{mutual_what}: secret is {len} characters; use at least {MIN_CHAP_SECRET}"
                ));
            }
            if t.secret == self.initiator.secret {
                return Err(format!(
                    "{mutual_what}: must differ from the initiator secret (RFC 7143 §12.1.3)"
                ));
            }
        }
        Ok(())
    }
}

/// What this target accepts and prefers in negotiation and scheduling.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest data segment we accept (we declare it as our
    /// MaxRecvDataSegmentLength).
    pub max_recv_data_segment_length: u32,
    /// Upper bound for the negotiated MaxBurstLength.
    pub max_burst_length: u32,
    /// Upper bound for the negotiated FirstBurstLength.
    pub first_burst_length: u32,
    /// Upper bound for MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// Whether we accept ImmediateData=Yes.
    pub immediate_data: bool,
    /// Whether we insist on InitialR2T=Yes.
    pub initial_r2t: bool,
    /// Whether CRC32C digests may be negotiated.
    pub digests: bool,
    /// Commands a session may have outstanding: MaxCmdSN - ExpCmdSN + 1.
    pub command_window: u32,
    /// Send a NOP-In ping after this long without hearing from the
    /// initiator; `None` disables keep-alive.
    pub nop_interval: Option<Duration>,
    /// Drop the connection when a ping stays unanswered this long.
    pub nop_timeout: Duration,
    /// The whole-login deadline: a connection not in full feature phase
    /// this long after it was accepted is dropped, however often it sends.
    pub login_timeout: Duration,
    /// Connections of every kind at once; more are closed on accept.
    pub max_connections: usize,
    /// Connections still logging in (not yet in full feature phase), in
    /// total; more are closed on accept.
    pub max_unauthenticated: usize,
    /// Connections still logging in from one source address.
    pub max_unauthenticated_per_address: usize,
    /// Normal sessions per target; one more login is refused with Out of
    /// Resources (0x0302).
    pub max_sessions: usize,
    /// Connections per session (RFC 7143 §13.2): the MaxConnections the
    /// target accepts; a session gets the smaller of this and the
    /// initiator's offer (default 1), and a login adding a connection
    /// beyond it gets Too Many Connections (0x0206). 1 to 65535.
    pub max_connections_per_session: u16,
    /// The delay of the first failed authentication of an initiator name or
    /// source address; each further failure doubles it.
    pub auth_fail_delay: Duration,
    /// The longest delay of a failed authentication.
    pub auth_fail_delay_max: Duration,
    /// Memory for write data of every session together, in bytes.
    pub memory_budget: u64,
    /// The share of [`Limits::memory_budget`] one session may hold.
    pub session_memory: u64,
    /// A write task whose Data-Out stops coming for this long is aborted
    /// and its buffer freed.
    pub data_out_timeout: Duration,
    /// READ and WRITE commands of one session that run at once on LUs
    /// whose backend may block, on I/O worker threads
    /// ([`crate::conn::deferred`]); at least 1.
    pub io_workers: usize,
    /// Busy-poll: microseconds a connection spins on its socket before it
    /// sleeps waiting for the next PDU (0: off; see the `iesp-netpoll` crate).
    pub poll_us: u32,
}

/// The default [`Limits::max_connections_per_session`]: MC/S on offer, for
/// initiators that ask for it (the RFC default, 1, holds for those that
/// do not).
pub const DEFAULT_MAX_CONNECTIONS_PER_SESSION: u16 = 8;

/// The default [`Limits::memory_budget`]: 256 MiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 256 << 20;

/// The smallest memory budget or session share: 8 MiB, the largest transfer
/// the target advertises (MAXIMUM TRANSFER LENGTH), so that every write an
/// initiator may send fits.
pub const MIN_MEMORY_BUDGET: u64 = 8 << 20;

impl Limits {
    /// The rules between limits, whichever way they were set; the message
    /// names the flag/key pair.
    pub fn validate(&self) -> Result<(), String> {
        if self.auth_fail_delay_max < self.auth_fail_delay {
            return Err(
                "auth_fail_delay_max (--auth-fail-delay-max) is less than auth_fail_delay".into(),
            );
        }
        if self.session_memory > self.memory_budget {
            return Err(format!(
                "session_memory (--session-memory) {} exceeds memory_budget {}",
                format_size(self.session_memory),
                format_size(self.memory_budget)
            ));
        }
        if self.session_memory < MIN_MEMORY_BUDGET {
            return Err(
                "session_memory (--session-memory) is less than 8MiB, the largest transfer".into(),
            );
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recv_data_segment_length: 256 * 1024,
            max_burst_length: 16 * 1024 * 1024 - 1,
            first_burst_length: 256 * 1024,
            max_outstanding_r2t: 16,
            immediate_data: true,
            initial_r2t: false,
            digests: true,
            command_window: 128,
            nop_interval: Some(Duration::from_secs(20)),
            nop_timeout: Duration::from_secs(20),
            login_timeout: Duration::from_secs(15),
            max_connections: 4096,
            max_unauthenticated: 256,
            max_unauthenticated_per_address: 32,
            max_sessions: 1024,
            max_connections_per_session: DEFAULT_MAX_CONNECTIONS_PER_SESSION,
            auth_fail_delay: Duration::from_millis(250),
            auth_fail_delay_max: Duration::from_secs(10),
            memory_budget: DEFAULT_MEMORY_BUDGET,
            session_memory: DEFAULT_MEMORY_BUDGET / 4,
            data_out_timeout: Duration::from_secs(30),
            io_workers: crate::conn::deferred::DEFAULT_IO_WORKERS,
            poll_us: 0,
        }
    }
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            targets: vec![TargetDef {
                iqn: DEFAULT_IQN.to_owned(),
                alias: Some("iesp-target".to_owned()),
                luns: vec![LunSpec::default()],
                ..TargetDef::default()
            }],
            portal_group_tag: 1,
            limits: Limits::default(),
            discovery_chap: None,
        }
    }
}

/// Where a LUN's blocks live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A RAM disk of this many bytes.
    Ram { size: u64 },
    /// A regular file, created sparse with `size` bytes when missing.
    File { path: PathBuf, size: Option<u64> },
    /// A block device, used whole.
    Device { path: PathBuf },
    /// An NBD export (`addr` is `host:port`; `export` may be empty, the
    /// server's default export).
    Nbd { addr: String, export: String },
}

/// One logical unit as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LunSpec {
    pub backing: Backing,
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    pub read_only: bool,
}

impl Default for LunSpec {
    fn default() -> Self {
        LunSpec {
            backing: Backing::Ram { size: 64 << 20 },
            block_size: 512,
            read_only: false,
        }
    }
}

/// A LUN string that cannot be parsed; the message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid LUN `{spec}`: {reason}")]
pub struct LunSpecError {
    pub spec: String,
    pub reason: String,
}

impl FromStr for LunSpec {
    type Err = LunSpecError;

    /// `ram:SIZE`, `file:PATH[,size=SIZE]`, `dev:PATH`, a path under
    /// `/dev/`, or `nbd:HOST:PORT[/EXPORT]`; any of them may end in `,ro`
    /// for a read-only LUN and `,bs=4096` for the block size.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| LunSpecError {
            spec: s.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let mut size = None;
        let mut spec = LunSpec::default();
        for opt in parts {
            match opt.split_once('=') {
                Some(("size", v)) => size = Some(parse_size(v).map_err(|e| err(&e))?),
                Some(("bs", v)) => {
                    spec.block_size = parse_block_size(v).map_err(|e| err(&e))?;
                }
                None if opt == "ro" => spec.read_only = true,
                _ => {
                    return Err(err(&format!(
                        "unknown option `{opt}` (expected size=, bs= or ro)"
                    )));
                }
            }
        }
        spec.backing = if let Some(sz) = head.strip_prefix("ram:") {
            if size.is_some() {
                return Err(err("ram takes its size after the colon: ram:64M"));
            }
            Backing::Ram {
                size: parse_size(sz).map_err(|e| err(&e))?,
            }
        } else if let Some(path) = head.strip_prefix("file:") {
            if path.is_empty() {
                return Err(err("file: needs a path"));
            }
            Backing::File {
                path: PathBuf::from(path),
                size,
            }
        } else if let Some(path) = head.strip_prefix("dev:") {
            Backing::Device {
                path: PathBuf::from(path),
            }
        } else if head.starts_with("/dev/") {
            Backing::Device {
                path: PathBuf::from(head),
            }
        } else if let Some(rest) = head.strip_prefix("nbd:") {
            if size.is_some() {
                return Err(err("an NBD export has the size the server gives it"));
            }
            let (addr, export) = rest.split_once('/').unwrap_or((rest, ""));
            let port = addr
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
                return Err(err(
                    "expected nbd:HOST:PORT[/EXPORT], e.g. nbd:127.0.0.1:10809/disk",
                ));
            }
            Backing::Nbd {
                addr: addr.to_owned(),
                export: export.to_owned(),
            }
        } else {
            return Err(err(
                "expected ram:SIZE, file:PATH[,size=SIZE], a /dev/ path or nbd:HOST:PORT[/EXPORT]",
            ));
        };
        if let Backing::Ram { size } = spec.backing
            && (size == 0 || size % u64::from(spec.block_size) != 0)
        {
            return Err(err(&format!(
                "size must be a non-zero multiple of the {}-byte block size",
                spec.block_size
            )));
        }
        Ok(spec)
    }
}

impl fmt::Display for LunSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backing {
            Backing::Ram { size } => write!(f, "ram:{}", format_size(*size))?,
            Backing::File {
                path,
                size: Some(s),
            } => write!(f, "file:{},size={}", path.display(), format_size(*s))?,
            Backing::File { path, size: None } => write!(f, "file:{}", path.display())?,
            Backing::Device { path } => write!(f, "dev:{}", path.display())?,
            Backing::Nbd { addr, export } if export.is_empty() => write!(f, "nbd:{addr}")?,
            Backing::Nbd { addr, export } => write!(f, "nbd:{addr}/{export}")?,
        }
        if self.block_size != 512 {
            write!(f, ",bs={}", self.block_size)?;
        }
        if self.read_only {
            f.write_str(",ro")?;
        }
        Ok(())
    }
}

/// The size grammar of every flag and key (`512`, `4k`, `4KiB`, `1.5G`),
/// shared with `iesp-test`: see [`iesp_cli::units`].
pub use iesp_cli::units::{format_size, parse_block_size, parse_size};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn lun_specs() {
        assert_eq!("ram:64M".parse::<LunSpec>().unwrap(), LunSpec::default());
        let f: LunSpec = "file:/tmp/x.img,size=1G,bs=4096,ro".parse().unwrap();
        assert_eq!(
            f.backing,
            Backing::File {
                path: "/tmp/x.img".into(),
                size: Some(1 << 30)
            }
        );
        assert_eq!(f.block_size, 4096);
        assert!(f.read_only);
        assert_eq!(f.to_string(), "file:/tmp/x.img,size=1GiB,bs=4096,ro");
        assert_eq!(
            "/dev/loop3".parse::<LunSpec>().unwrap().backing,
            Backing::Device {
                path: "/dev/loop3".into()
            }
        );
        let n: LunSpec = "nbd:127.0.0.1:10809/disk/a,ro".parse().unwrap();
        assert_eq!(
            n.backing,
            Backing::Nbd {
                addr: "127.0.0.1:10809".into(),
                export: "disk/a".into()
            }
        );
        assert!(n.read_only);
        assert_eq!(n.to_string(), "nbd:127.0.0.1:10809/disk/a,ro");
        let n: LunSpec = "nbd:[::1]:10809".parse().unwrap();
        assert_eq!(
            n.backing,
            Backing::Nbd {
                addr: "[::1]:10809".into(),
                export: String::new()
            }
        );
        assert_eq!(n.to_string(), "nbd:[::1]:10809");
        for bad in [
            "nbd:",
            "nbd:host",
            "nbd::10809",
            "nbd:host:port",
            "nbd:h:1,size=1M",
        ] {
            assert!(bad.parse::<LunSpec>().is_err(), "{bad} should not parse");
        }
        for bad in [
            "disk:1",
            "ram:",
            "ram:1000",
            "file:",
            "ram:1M,bogus",
            "ram:1M,bs=1000",
        ] {
            assert!(bad.parse::<LunSpec>().is_err(), "{bad} should not parse");
        }
    }
}
