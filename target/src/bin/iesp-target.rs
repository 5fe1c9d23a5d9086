//! `iesp-target`: serve LUNs over iSCSI.
//!
//! With no arguments it serves one target, `iqn.2026-11.org.iesp-test:target0`,
//! on 127.0.0.1:3260 with LUN 0 a 64 MiB RAM disk of 512-byte blocks.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use iesp_target::config::{self, LunSpec, TargetConfig, TargetDef};
use iesp_target::server::{Target, serve};

/// The iesp reference iSCSI target.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address to listen on (IPv4 or [IPv6]:port).
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,

    /// Target name (IQN).
    #[arg(long, default_value = config::DEFAULT_IQN)]
    iqn: String,

    /// A LUN, repeatable; LUN numbers follow the order given.
    /// `ram:SIZE`, `file:PATH[,size=SIZE]` (created sparse when missing),
    /// `dev:PATH` or `/dev/…`, `nbd:HOST:PORT[/EXPORT]` (an NBD export);
    /// append `,bs=4096` or `,ro` per LUN.
    #[arg(long = "lun", value_name = "SPEC", default_value = "ram:64M")]
    luns: Vec<String>,

    /// Logical block size for LUNs that do not say `bs=`: 512 or 4096.
    #[arg(long, default_value_t = 512, value_parser = parse_block_size)]
    block_size: u32,

    /// Serve every LUN read-only (write-protected).
    #[arg(long)]
    read_only: bool,

    /// MaxRecvDataSegmentLength this target declares, in bytes.
    #[arg(long, default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(512..=16_777_215))]
    max_recv_data_segment_length: u32,

    /// Commands a session may have queued (the CmdSN window).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    command_window: u32,

    /// Refuse ImmediateData=Yes.
    #[arg(long)]
    no_immediate_data: bool,

    /// Require InitialR2T=Yes.
    #[arg(long)]
    initial_r2t: bool,

    /// Refuse CRC32C header and data digests.
    #[arg(long)]
    no_digests: bool,

    /// Log filter, e.g. `info`, `debug`, `iesp_target=trace` (or RUST_LOG).
    #[arg(long, default_value = "info")]
    log: String,
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    config::parse_block_size(s)
}

fn build_config(args: &Args) -> anyhow::Result<TargetConfig> {
    let mut luns = Vec::new();
    for spec in &args.luns {
        let explicit_bs = spec.split(',').any(|o| o.starts_with("bs="));
        let mut lun: LunSpec = if explicit_bs {
            spec.parse()?
        } else {
            format!("{spec},bs={}", args.block_size).parse()?
        };
        lun.read_only |= args.read_only;
        luns.push(lun);
    }
    let mut cfg = TargetConfig {
        targets: vec![TargetDef { iqn: args.iqn.clone(), alias: Some("iesp-target".into()), luns }],
        ..TargetConfig::default()
    };
    cfg.limits.max_recv_data_segment_length = args.max_recv_data_segment_length;
    cfg.limits.command_window = args.command_window;
    cfg.limits.immediate_data = !args.no_immediate_data;
    cfg.limits.initial_r2t = args.initial_r2t;
    cfg.limits.digests = !args.no_digests;
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
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .init();
    let cfg = build_config(&args)?;
    let target = Target::from_config(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        for node in &target.nodes {
            eprintln!("iesp-target: serving {} on {addr}", node.iqn);
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
        serve(listener, target, shutdown_signal()).await?;
        eprintln!("iesp-target: stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        // Without signal handlers the target still serves; it just cannot
        // shut down gracefully.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
