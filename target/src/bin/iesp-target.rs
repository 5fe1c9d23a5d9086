//! `iesp-target`: serve LUNs over iSCSI.
//!
//! With no arguments it serves one target, `iqn.2026-11.org.iesp-test:target0`,
//! on 127.0.0.1:3260 with LUN 0 a 64 MiB RAM disk of 512-byte blocks. Flags
//! describe one target; `--config FILE` (see `iesp-target.sample.toml`)
//! describes several, with ACLs and CHAP. The command line itself lives in
//! [`iesp_target::cli`]; exit codes are in its `EXIT_HELP`.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use clap::error::ErrorKind;
use iesp_cli::exit;
use iesp_target::cli::{self, Args};
use iesp_target::endpoints::Endpoints;
use iesp_target::server::{Target, serve};

/// Why the target stopped other than cleanly; each maps to an exit code.
enum Failure {
    /// Command line or configuration: exit 2.
    Usage(String),
    /// A portal or a LUN's backing: exit 3.
    Io(String),
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("iesp-target: {}", cli::one_line(&e));
            return ExitCode::from(exit::USAGE);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("iesp-target: {m}");
            ExitCode::from(exit::USAGE)
        }
        Err(Failure::Io(m)) => {
            eprintln!("iesp-target: {m}");
            ExitCode::from(exit::IO)
        }
    }
}

/// A LUN that cannot be set up: a bad request (a RAM disk larger than the
/// machine) is a usage error, anything else an I/O error.
fn lun_failure(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::InvalidInput | io::ErrorKind::OutOfMemory => Failure::Usage(e.to_string()),
        _ => Failure::Io(e.to_string()),
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    iesp_cli::log::init(&args.log_filter()).map_err(Failure::Usage)?;
    let (cfg, listen, endpoints) = args.load_all().map_err(|e| Failure::Usage(e.to_string()))?;
    let quiet = args.verbosity.quiet;
    for w in endpoints.check().map_err(Failure::Usage)? {
        if !quiet {
            eprintln!("iesp-target: {w}");
        }
    }
    let target = Target::from_config(&cfg).map_err(lun_failure)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Io(format!("cannot start the runtime: {e}")))?;
    rt.block_on(serve_all(target, listen, endpoints, Banner { quiet }))
}

/// The start-up and shutdown lines on stderr, which `-q` (errors only)
/// leaves out.
#[derive(Clone, Copy)]
struct Banner {
    quiet: bool,
}

impl Banner {
    fn say(self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}

async fn serve_all(
    target: Arc<Target>,
    listen: Vec<SocketAddr>,
    endpoints: Endpoints,
    banner: Banner,
) -> Result<(), Failure> {
    // Install the handlers before the first bind: once a client can
    // connect, SIGINT/SIGTERM must already mean "shut down gracefully"
    // rather than the default of dying on the spot.
    let signals = ShutdownSignals::install();
    target.set_statistics(endpoints.statistics);
    // Bind everything first, then announce and serve: a portal, metrics
    // or SNMP address that cannot be bound stops the start with one line
    // and nothing printed or served before it.
    let mut listeners = Vec::new();
    for addr in &listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::Io(format!("cannot listen on {addr}: {e}")))?;
        let local = l
            .local_addr()
            .map_err(|e| Failure::Io(format!("cannot listen on {addr}: {e}")))?;
        listeners.push((l, local));
    }
    let bound = bind_endpoints(&endpoints).await?;
    for (_, local) in &listeners {
        banner.say(format_args!("iesp-target: listening on {local}"));
    }
    for node in &target.nodes {
        banner.say(format_args!("iesp-target: serving {}", node.iqn));
        for (n, lu) in node.luns.iter().enumerate() {
            banner.say(format_args!(
                "  LUN {n}: {} ({} blocks of {} bytes{})",
                lu.describe(),
                lu.blocks(),
                lu.block_size(),
                if lu.read_only() { ", read-only" } else { "" }
            ));
        }
    }
    // One signal stops every portal.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    start_endpoints(&target, &endpoints, bound, &stopped, banner);
    tokio::spawn(async move {
        signals.recv().await;
        let _ = stop.send(true);
    });
    let mut portals = tokio::task::JoinSet::new();
    for (l, _) in listeners {
        let mut stopped = stopped.clone();
        portals.spawn(serve(l, target.clone(), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    }
    while let Some(r) = portals.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Failure::Io(format!("portal failed: {e}"))),
            Err(e) => return Err(Failure::Io(format!("portal task failed: {e}"))),
        }
    }
    banner.say(format_args!("iesp-target: stopped"));
    Ok(())
}

/// The metrics endpoint's listener and the SNMP agent's socket, bound.
struct BoundEndpoints {
    snmp: Option<tokio::net::UdpSocket>,
    metrics: Option<tokio::net::TcpListener>,
}

/// Binds the metrics endpoint and the SNMP agent, if asked for; an
/// address that cannot be bound is a usage error.
async fn bind_endpoints(endpoints: &Endpoints) -> Result<BoundEndpoints, Failure> {
    let snmp = match endpoints.snmp {
        Some(addr) => Some(
            iesp_target::endpoints::bind_snmp(addr)
                .await
                .map_err(Failure::Usage)?,
        ),
        None => None,
    };
    let metrics = match endpoints.metrics {
        Some(addr) => Some(
            iesp_target::endpoints::bind_metrics(addr)
                .await
                .map_err(Failure::Usage)?,
        ),
        None => None,
    };
    Ok(BoundEndpoints { snmp, metrics })
}

/// Announces and spawns the bound endpoints.
fn start_endpoints(
    target: &Arc<Target>,
    endpoints: &Endpoints,
    bound: BoundEndpoints,
    stopped: &tokio::sync::watch::Receiver<bool>,
    banner: Banner,
) {
    if let Some(sock) = bound.snmp {
        if let Ok(a) = sock.local_addr() {
            banner.say(format_args!("iesp-target: SNMP v2c agent on udp {a}"));
        }
        let mut stopped = stopped.clone();
        let community = endpoints.snmp_community.clone();
        tokio::spawn(iesp_target::snmp::serve_snmp(
            sock,
            target.clone(),
            community,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
    }
    if let Some(l) = bound.metrics {
        if let Ok(a) = l.local_addr() {
            banner.say(format_args!("iesp-target: metrics on http://{a}/metrics"));
        }
        let mut stopped = stopped.clone();
        tokio::spawn(iesp_target::metrics::serve_metrics(
            l,
            target.clone(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
    }
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
