//! `iesp-target`: serve LUNs over iSCSI.
//!
//! With no arguments it serves one target, `iqn.2026-11.org.iesp-test:target0`,
//! on 127.0.0.1:3260 with LUN 0 a 64 MiB RAM disk of 512-byte blocks. Flags
//! describe one target; `--config FILE` (see `iesp-target.sample.toml`)
//! describes several, with ACLs and CHAP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use iesp_target::config::{self, ChapAuth, ChapCredentials, LunSpec, TargetConfig, TargetDef};
use iesp_target::config_file;
use iesp_target::server::{Target, serve};

/// The iesp reference iSCSI target.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Configuration file (TOML) describing targets, LUNs, ACLs, CHAP and
    /// limits; see iesp-target.sample.toml. Excludes the target flags below.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on (IPv4 or [IPv6]:port); repeatable. Default
    /// 127.0.0.1:3260, or the configuration file's `listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,

    /// Target name (IQN).
    #[arg(long, default_value = config::DEFAULT_IQN, conflicts_with = "config")]
    iqn: String,

    /// A LUN, repeatable; LUN numbers follow the order given.
    /// `ram:SIZE`, `file:PATH[,size=SIZE]` (created sparse when missing),
    /// `dev:PATH` or `/dev/…`, `nbd:HOST:PORT[/EXPORT]` (an NBD export);
    /// append `,bs=4096` or `,ro` per LUN. Default: ram:64M.
    #[arg(long = "lun", value_name = "SPEC", conflicts_with = "config")]
    luns: Vec<String>,

    /// Logical block size for LUNs that do not say `bs=`: 512 or 4096.
    #[arg(long, default_value_t = 512, value_parser = parse_block_size, conflicts_with = "config")]
    block_size: u32,

    /// Serve every LUN read-only (write-protected).
    #[arg(long, conflicts_with = "config")]
    read_only: bool,

    /// MaxRecvDataSegmentLength this target declares, in bytes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(512..=16_777_215), conflicts_with = "config")]
    max_recv_data_segment_length: Option<u32>,

    /// Commands a session may have queued (the CmdSN window). Default 128.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096), conflicts_with = "config")]
    command_window: Option<u32>,

    /// Refuse ImmediateData=Yes.
    #[arg(long, conflicts_with = "config")]
    no_immediate_data: bool,

    /// Require InitialR2T=Yes.
    #[arg(long, conflicts_with = "config")]
    initial_r2t: bool,

    /// Refuse CRC32C header and data digests.
    #[arg(long, conflicts_with = "config")]
    no_digests: bool,

    /// Seconds of silence before a NOP-In ping asks the initiator for an
    /// answer; 0 disables keep-alive. Default 20.
    #[arg(long, value_name = "SECONDS", conflicts_with = "config")]
    nop_interval: Option<u64>,

    /// Seconds a ping may stay unanswered before the connection is
    /// dropped. Default 20.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "config")]
    nop_timeout: Option<u64>,

    /// Allow only this initiator name (repeatable); without it every
    /// initiator may log in.
    #[arg(long = "acl", value_name = "INITIATOR_IQN", conflicts_with = "config")]
    acl: Vec<String>,

    /// Require CHAP: the user name initiators must send.
    #[arg(long, requires = "chap_secret", conflicts_with = "config")]
    chap_user: Option<String>,

    /// Require CHAP: the secret initiators must prove. Prefer a
    /// configuration file: command lines are visible to other users.
    #[arg(long, requires = "chap_user", conflicts_with = "config")]
    chap_secret: Option<String>,

    /// Mutual CHAP: the user name this target answers with.
    #[arg(long, requires_all = ["mutual_chap_secret", "chap_user"], conflicts_with = "config")]
    mutual_chap_user: Option<String>,

    /// Mutual CHAP: the secret this target proves.
    #[arg(long, requires = "mutual_chap_user", conflicts_with = "config")]
    mutual_chap_secret: Option<String>,

    /// Log filter, e.g. `info`, `debug`, `iesp_target=trace` (or RUST_LOG).
    #[arg(long, default_value = "info")]
    log: String,
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    config::parse_block_size(s)
}

/// The configuration the flags describe: one target.
fn from_flags(args: &Args) -> anyhow::Result<TargetConfig> {
    let specs = if args.luns.is_empty() {
        vec!["ram:64M".to_owned()]
    } else {
        args.luns.clone()
    };
    let mut luns = Vec::new();
    for spec in &specs {
        let explicit_bs = spec.split(',').any(|o| o.starts_with("bs="));
        let mut lun: LunSpec = if explicit_bs {
            spec.parse()?
        } else {
            format!("{spec},bs={}", args.block_size).parse()?
        };
        lun.read_only |= args.read_only;
        luns.push(lun);
    }
    let chap = match (&args.chap_user, &args.chap_secret) {
        (Some(user), Some(secret)) => Some(ChapAuth {
            initiator: ChapCredentials::new(user.clone(), secret.as_bytes().to_vec()),
            target: match (&args.mutual_chap_user, &args.mutual_chap_secret) {
                (Some(u), Some(s)) => Some(ChapCredentials::new(u.clone(), s.as_bytes().to_vec())),
                _ => None,
            },
        }),
        _ => None,
    };
    let mut cfg = TargetConfig {
        targets: vec![TargetDef {
            iqn: args.iqn.clone(),
            alias: Some("iesp-target".into()),
            luns,
            acl: args.acl.clone(),
            chap,
        }],
        ..TargetConfig::default()
    };
    let l = &mut cfg.limits;
    if let Some(v) = args.max_recv_data_segment_length {
        l.max_recv_data_segment_length = v;
    }
    if let Some(v) = args.command_window {
        l.command_window = v;
    }
    l.immediate_data = !args.no_immediate_data;
    l.initial_r2t = args.initial_r2t;
    l.digests = !args.no_digests;
    if let Some(s) = args.nop_interval {
        l.nop_interval = (s > 0).then(|| Duration::from_secs(s));
    }
    if let Some(s) = args.nop_timeout {
        l.nop_timeout = Duration::from_secs(s);
    }
    Ok(cfg)
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("iesp-target: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let (cfg, mut listen) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let loaded = config_file::parse(&text).with_context(|| path.display().to_string())?;
            (loaded.config, loaded.listen)
        }
        None => (from_flags(&args)?, Vec::new()),
    };
    if !args.listen.is_empty() {
        listen = args.listen.clone();
    }
    if listen.is_empty() {
        listen.push(config::DEFAULT_LISTEN.parse()?);
    }
    let target = Target::from_config(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Install the handlers before the first bind: once a client can
        // connect, SIGINT/SIGTERM must already mean "shut down gracefully"
        // rather than the default of dying on the spot.
        let signals = ShutdownSignals::install();
        let mut listeners = Vec::new();
        for addr in &listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            eprintln!("iesp-target: listening on {}", l.local_addr()?);
            listeners.push(l);
        }
        for node in &target.nodes {
            eprintln!("iesp-target: serving {}", node.iqn);
            for (n, lu) in node.luns.iter().enumerate() {
                eprintln!(
                    "  LUN {n}: {} ({} blocks of {} bytes{})",
                    lu.describe(),
                    lu.blocks(),
                    lu.block_size(),
                    if lu.read_only() { ", read-only" } else { "" }
                );
            }
        }
        // One signal stops every portal.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signals.recv().await;
            let _ = stop.send(true);
        });
        let mut portals = tokio::task::JoinSet::new();
        for l in listeners {
            let mut stopped = stopped.clone();
            portals.spawn(serve(l, target.clone(), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
        }
        while let Some(r) = portals.join_next().await {
            r.context("portal task panicked")??;
        }
        eprintln!("iesp-target: stopped");
        Ok(())
    })
}

/// SIGINT and SIGTERM handlers, installed as soon as the runtime exists.
struct ShutdownSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl ShutdownSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => Self(Some((int, term))),
            // Without signal handlers the target still serves; it just
            // cannot shut down gracefully.
            _ => Self(None),
        }
    }

    /// Completes on SIGINT or SIGTERM.
    async fn recv(self) {
        let Some((mut int, mut term)) = self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
