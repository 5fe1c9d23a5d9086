//! `iesp-test bench TARGET`: random-read (or write, or mixed) IOPS and
//! latency sweeps over block sizes and queue depths.
//!
//! TARGET is an `iscsi://` URL, a block device or a regular file
//! ([`iesp_blockio::AnyDevice`]); the library also runs on an in-memory
//! device ([`run_on`]). Local targets are opened `O_DIRECT`; their queue
//! depth is real because blockio's local device runs each command as a
//! `pread`/`pwrite` on tokio's blocking pool (N commands in flight are N
//! system calls in flight on N pool threads, up to tokio's 512), not
//! io_uring. iSCSI commands are pipelined on each session.
//!
//! ## Layout
//!
//! - [`cli`] — the command line, `bench merge`.
//! - [`sweep`] — the points of a sweep and how each one runs: one thread
//!   with a current-thread runtime per job (the command line's default, and
//!   `--matrix`), or every session on the command's runtime
//!   (`--shared-runtime`); ramp, runtime, client CPU time.
//! - [`workload`] — the engine [`iesp_blockio::engine::Workload`]: offsets,
//!   buffers, recording every latency.
//! - [`report`] — terminal table, JSON (envelope), CSV, `.dat`,
//!   `--compare` ratios.
//! - [`merge`] — `bench merge A.json B.json …`.
//! - [`floor`] — `--floor`, the bare-TCP ping-pong bound.
//!
//! The result types (points, histograms, series) are [`iesp_plots::data`]'s:
//! plot reads what bench writes.

pub mod cli;
pub mod floor;
pub mod merge;
pub mod report;
pub mod sweep;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use iesp_blockio::{AnyDevice, Device, DeviceError, OpenOptions};
use iesp_plots::data::{BenchBody, TargetInfo, Worker};

/// What the commands are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Rw {
    #[value(name = "randread")]
    RandRead,
    #[value(name = "randwrite")]
    RandWrite,
    Read,
    Write,
    #[value(name = "randrw")]
    RandRw,
}

impl Rw {
    pub fn name(self) -> &'static str {
        match self {
            Rw::RandRead => "randread",
            Rw::RandWrite => "randwrite",
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::RandRw => "randrw",
        }
    }

    /// Issues reads.
    pub fn reads(self) -> bool {
        matches!(self, Rw::RandRead | Rw::Read | Rw::RandRw)
    }

    /// Issues writes.
    pub fn writes(self) -> bool {
        matches!(self, Rw::RandWrite | Rw::Write | Rw::RandRw)
    }

    /// Random offsets (else one sequential cursor shared by the slots).
    pub fn random(self) -> bool {
        matches!(self, Rw::RandRead | Rw::RandWrite | Rw::RandRw)
    }

    /// fio's data direction in the CSV (a mix is written as 0, read).
    pub fn ddir(self) -> u8 {
        u8::from(matches!(self, Rw::RandWrite | Rw::Write))
    }
}

/// Everything a bench run needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// TARGET, then the `--compare` targets.
    pub targets: Vec<String>,
    pub open: OpenOptions,
    pub rw: Rw,
    pub rwmix_read: u32,
    /// Queue depths per job.
    pub qds: Vec<u32>,
    /// Bytes per command.
    pub bss: Vec<u64>,
    /// Connections (jobs) per point, outside `--matrix`.
    pub sessions: u32,
    /// Each job on its own thread with its own current-thread runtime
    /// (the command line's default; `--shared-runtime` turns it off).
    pub threads: bool,
    /// `--matrix`: synchronous jobs, one thread each, over these counts.
    pub matrix_jobs: Option<Vec<u32>>,
    pub runtime: Duration,
    pub ramp: Duration,
    pub floor: bool,
    pub worker: Option<Worker>,
    pub seed: u64,
    /// A progress bar on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            targets: Vec::new(),
            open: OpenOptions::default(),
            rw: Rw::RandRead,
            rwmix_read: 50,
            qds: vec![1],
            bss: vec![4096],
            sessions: 1,
            threads: false,
            matrix_jobs: None,
            runtime: Duration::from_secs(1),
            ramp: Duration::ZERO,
            floor: false,
            worker: None,
            seed: 0,
            progress: false,
        }
    }
}

/// A run that could not start or finish, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn usage(msg: impl std::fmt::Display) -> Failure {
        Failure {
            code: crate::exit::USAGE,
            error: anyhow::anyhow!("{msg}"),
        }
    }

    pub fn io(error: anyhow::Error) -> Failure {
        Failure {
            code: crate::exit::IO,
            error,
        }
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Failure {
        let code = match e {
            DeviceError::Usage { .. } | DeviceError::Refused { .. } => crate::exit::USAGE,
            _ => crate::exit::IO,
        };
        Failure {
            code,
            error: e.into(),
        }
    }
}

/// Where a target's devices come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Opened by name (per session; per job and thread when jobs have
    /// threads of their own).
    Named(String),
    /// Devices already open (the library; in-memory devices), shared by
    /// every job.
    Shared(Vec<Arc<AnyDevice>>),
}

/// A target of the run: its label, info and open sessions.
pub struct Target {
    pub label: String,
    pub source: Source,
    pub info: iesp_blockio::DeviceInfo,
    /// Sessions open for the run (not used by thread-per-job points of a
    /// named target, which open their own).
    pub sessions: Vec<Arc<AnyDevice>>,
}

fn target_info(info: &iesp_blockio::DeviceInfo) -> TargetInfo {
    let kind = serde_json::to_value(info.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    TargetInfo {
        name: info.name.clone(),
        kind,
        block_size: info.block_size,
        blocks: info.blocks,
        direct_io: info.direct_io,
    }
}

/// Checks the sweep against a target's geometry, before any command: each
/// block size a whole number of its blocks, within its transfer limit,
/// and at least one command's worth of blocks in this worker's share.
pub fn check_geometry(opts: &Options, info: &iesp_blockio::DeviceInfo) -> Result<(), Failure> {
    let lbs = u64::from(info.block_size.max(1));
    for &bs in &opts.bss {
        if bs % lbs != 0 {
            return Err(Failure::usage(format!(
                "--bs {bs}: not a multiple of {}'s {lbs}-byte blocks",
                info.name
            )));
        }
        if info.max_io_bytes > 0 && bs > u64::from(info.max_io_bytes) {
            return Err(Failure::usage(format!(
                "--bs {bs}: more than {}'s largest command ({} bytes)",
                info.name, info.max_io_bytes
            )));
        }
        let (_, chunks) = sweep::share(info.blocks, bs / lbs, opts.worker);
        if chunks == 0 {
            return Err(Failure::usage(format!(
                "--bs {bs}: {} ({} bytes) has no whole command of it in this worker's share",
                info.name,
                info.capacity()
            )));
        }
    }
    Ok(())
}

/// Checks options that need no target.
pub fn check_options(opts: &Options) -> Result<(), Failure> {
    if opts.qds.contains(&0) {
        return Err(Failure::usage("--qd 0: a queue depth is at least 1"));
    }
    if opts.bss.contains(&0) {
        return Err(Failure::usage("--bs 0: a block size is at least one block"));
    }
    if opts.rw.writes() && !opts.open.write {
        return Err(Failure::usage(format!(
            "--rw {} overwrites TARGET: add --write to allow it",
            opts.rw.name()
        )));
    }
    if let Some(w) = opts.worker.filter(|w| w.count == 0 || w.index >= w.count) {
        return Err(Failure::usage(format!(
            "--worker {}/{}: I must be below N",
            w.index, w.count
        )));
    }
    if opts.rwmix_read > 100 {
        return Err(Failure::usage("--rwmix: a percentage of reads, 0 to 100"));
    }
    Ok(())
}

/// Opens every target (`opts.targets`, sessions each), checks the sweep
/// against each, then runs it.
pub async fn run(opts: &Options) -> Result<BenchBody, Failure> {
    check_options(opts)?;
    let sessions = if opts.threads || opts.matrix_jobs.is_some() {
        1
    } else {
        opts.sessions.max(1)
    };
    let mut targets = Vec::new();
    for name in &opts.targets {
        let mut devs = Vec::new();
        for _ in 0..sessions {
            devs.push(Arc::new(AnyDevice::open(name, &opts.open).await?));
        }
        let info = devs[0].info().clone();
        check_geometry(opts, &info)?;
        targets.push(Target {
            label: info.name.clone(),
            source: Source::Named(name.clone()),
            info,
            sessions: devs,
        });
    }
    let body = sweep::run(opts, &targets).await;
    for t in targets {
        for d in t.sessions {
            if let Ok(d) = Arc::try_unwrap(d) {
                let _ = d.close().await;
            }
        }
    }
    body
}

/// Runs the sweep on devices already open (e.g. in-memory ones), each
/// `(label, sessions)`; `opts.targets` is ignored.
pub async fn run_on(
    opts: &Options,
    devices: Vec<(String, Vec<Arc<AnyDevice>>)>,
) -> Result<BenchBody, Failure> {
    check_options(opts)?;
    let mut targets = Vec::new();
    for (label, devs) in devices {
        let Some(first) = devs.first() else {
            return Err(Failure::usage(format!("{label}: no device")));
        };
        let info = first.info().clone();
        check_geometry(opts, &info)?;
        targets.push(Target {
            label,
            source: Source::Shared(devs.clone()),
            info,
            sessions: devs,
        });
    }
    sweep::run(opts, &targets).await
}
