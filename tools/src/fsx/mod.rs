//! `iesp-test fsx TARGET`: seeded random SCSI operations against a
//! per-block model, with an op log, replay and automatic shrinking.
//!
//! TARGET is an `iscsi://` URL, a block device or a file, opened as
//! verify opens it (`--write`, `--force` on a device holding data). The
//! ops — READ, WRITE ±FUA, UNMAP, WRITE SAME ±UNMAP (zero and non-zero),
//! COMPARE AND WRITE matching and mismatching, SYNCHRONIZE CACHE, and on
//! iSCSI reconnect, ABORT TASK and LUN RESET — are drawn from one seeded
//! stream; every read is checked against the model, and the first
//! mismatch stops the run, which is then shrunk to a short reproducer.
//!
//! ## Layout
//!
//! - [`cli`] — the command line.
//! - [`config`] — `--config fsx.toml`, flags over the file.
//! - [`ops`] — ops, weights, size distributions, the seeded generator.
//! - [`model`] — what each block may hold.
//! - [`reserve`] — the reservation map (ops in flight never overlap).
//! - [`engine`] — the run loop: issue, check, apply.
//! - [`log`] — the JSON-lines op log; [`replay`] reads one back.
//! - [`shrink`] — delta debugging of a failing sequence.
//! - [`report`] — counts, latency percentiles, progress, summary, JSON.
//! - [`memory`] — the `memory:` target with injected faults (self-test).

pub mod cli;
pub mod config;
pub mod engine;
pub mod log;
pub mod memory;
pub mod model;
pub mod ops;
pub mod replay;
pub mod report;
pub mod reserve;
pub mod shrink;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iesp_blockio::block::{self, Stamp};
use iesp_blockio::{AnyDevice, Device, DeviceError, OpenOptions, TrimMethod};

use engine::{Reopen, Setup, Source};
use ops::{Generator, Kind, Shape, Sizes};
use report::{NotRun, Reproducer, Summary, TargetInfo};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: String,
    pub open: OpenOptions,
    pub seed: u64,
    pub qd: usize,
    /// Stop after this many ops (10000 when neither this nor `duration`).
    pub ops: Option<u64>,
    pub duration: Option<Duration>,
    pub lba_start: u64,
    pub lba_count: Option<u64>,
    pub weights: Vec<(Kind, u32)>,
    pub sizes: Vec<(Kind, Sizes)>,
    pub default_sizes: Sizes,
    pub log: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub replay: Option<PathBuf>,
    /// Shrink a failure (default on).
    pub shrink: bool,
    /// Re-runs the shrinker may use.
    pub shrink_budget: usize,
    /// Where the shrunk reproducer goes.
    pub shrink_log: Option<PathBuf>,
    /// Progress lines this often on stderr; `None` is quiet: no progress
    /// and no notices on stderr (errors only).
    pub progress: Option<Duration>,
    pub interruptible: bool,
    /// Faults of a `memory:` target.
    pub faults: Vec<iesp_blockio::mem::FaultRule>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: String::new(),
            open: OpenOptions::default(),
            seed: 1,
            qd: 8,
            ops: None,
            duration: None,
            lba_start: 0,
            lba_count: None,
            weights: config::default_weights(),
            sizes: Vec::new(),
            default_sizes: Sizes::default(),
            log: None,
            json: None,
            replay: None,
            shrink: true,
            shrink_budget: 400,
            shrink_log: None,
            progress: None,
            interruptible: false,
            faults: Vec::new(),
        }
    }
}

/// A run that could not start, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(m: impl Into<String>) -> Failure {
        Failure {
            code: iesp_cli::exit::USAGE,
            message: m.into(),
        }
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Failure {
        let code = match e {
            DeviceError::Usage { .. } | DeviceError::Refused { .. } => iesp_cli::exit::USAGE,
            _ => iesp_cli::exit::IO,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

/// Opens `opts.target` for writing and runs.
pub async fn run(opts: &Options) -> Result<Summary, Failure> {
    if let Some(mem) = memory::parse_target(&opts.target) {
        let mem = mem.map_err(Failure::usage)?;
        let faults = opts.faults.clone();
        let dev = memory::device(&mem, &faults);
        let fresh: shrink::Factory = Box::new(move || memory::device(&mem, &faults));
        return run_on(dev, opts, Some(fresh), None).await;
    }
    if !opts.faults.is_empty() {
        return Err(Failure::usage("--fault is for memory: targets only"));
    }
    let mut open = opts.open.clone();
    open.write = true;
    let dev = AnyDevice::open(&opts.target, &open).await?;
    let reopen = Reopen {
        target: opts.target.clone(),
        open,
    };
    run_on(dev, opts, None, Some(reopen)).await
}

/// Why `kind` cannot run on `dev`, if it cannot.
pub fn unsupported(dev: &AnyDevice, kind: Kind, reopen: bool) -> Option<String> {
    let info = dev.info();
    let caps = &info.caps;
    match kind {
        Kind::Unmap if !caps.unmap || info.trim.method == TrimMethod::None => Some(
            dev.unmap_skip_reason()
                .unwrap_or_else(|| info.trim.reason.clone()),
        ),
        Kind::WriteSameUnmap if !caps.write_same_unmap => {
            Some("WRITE SAME with UNMAP needs a thin-provisioned LUN (LBPME=1)".into())
        }
        Kind::CompareAndWrite | Kind::CompareAndWriteMiscompare
            if !caps.compare_and_write || info.limits.max_compare_and_write_blocks == 0 =>
        {
            Some("no COMPARE AND WRITE (MAXIMUM COMPARE AND WRITE LENGTH is 0)".into())
        }
        k if k.iscsi_only() && info.kind != iesp_blockio::Kind::IscsiLun => {
            Some(format!("iSCSI only; the target is a {}", info.kind))
        }
        Kind::Reconnect if !reopen => Some("the target cannot be reopened".into()),
        _ => None,
    }
}

/// Runs on a device already open. `fresh` makes a new device for each
/// shrinking re-run (the in-memory device with its faults); without it the
/// shrinker re-runs on `dev`. `reopen` is how a reconnect opens it again.
pub async fn run_on(
    dev: AnyDevice,
    opts: &Options,
    fresh: Option<shrink::Factory>,
    reopen: Option<Reopen>,
) -> Result<Summary, Failure> {
    let info = dev.info().clone();
    if info.block_size < block::MIN_BLOCK_SIZE {
        return Err(Failure::usage(format!(
            "{}-byte blocks: the block format needs at least {}",
            info.block_size,
            block::MIN_BLOCK_SIZE
        )));
    }
    let replay = match &opts.replay {
        Some(p) => Some(replay::load(p, &info)?),
        None => None,
    };
    let seed = replay.as_ref().and_then(|l| l.seed).unwrap_or(opts.seed);
    if let (Some(p), Some(l)) = (&opts.replay, &replay) {
        crate::output::say(format_args!(
            "fsx: replaying {} ({} ops), seed {seed}{}",
            p.display(),
            l.ops.len(),
            if l.seed.is_some() {
                " from its header"
            } else {
                ""
            }
        ));
    }
    let (first, blocks, qd) = match &replay {
        Some(l) => (l.header.first_lba, l.header.blocks, l.header.qd.max(1)),
        None => {
            let count = opts
                .lba_count
                .unwrap_or_else(|| info.blocks.saturating_sub(opts.lba_start));
            if count == 0
                || opts
                    .lba_start
                    .checked_add(count)
                    .is_none_or(|e| e > info.blocks)
            {
                return Err(Failure::usage(format!(
                    "LBA range {}+{count} is empty or outside the target's {} blocks",
                    opts.lba_start, info.blocks
                )));
            }
            if count > model::MAX_BLOCKS {
                return Err(Failure::usage(format!(
                    "{count} blocks: the model covers at most {} blocks; narrow the range with --lba-count",
                    model::MAX_BLOCKS
                )));
            }
            (opts.lba_start, count, opts.qd.max(1))
        }
    };
    if opts.weights.iter().map(|&(_, w)| u64::from(w)).sum::<u64>() == 0 && replay.is_none() {
        return Err(Failure::usage("the op weights sum to 0: no op to run"));
    }
    let mut ops_run = Vec::new();
    let mut not_run = Vec::new();
    let mut notes = info.notes.clone();
    if let AnyDevice::Iscsi(d) = &dev {
        match d.write_protected().await {
            Some(true) => {
                return Err(Failure::usage(format!(
                    "{}: the LUN is write protected (MODE SENSE WP=1); fsx writes",
                    info.name
                )));
            }
            Some(false) => {}
            None => notes.push("MODE SENSE failed: write protection unknown".into()),
        }
    }
    // A LUN whose limits allow COMPARE AND WRITE may still not know it.
    let mut caw_refused = None;
    if let AnyDevice::Iscsi(d) = &dev
        && unsupported(&dev, Kind::CompareAndWrite, true).is_none()
        && let Err(sense) = d.probe_compare_and_write().await?
    {
        caw_refused = Some(format!("the LUN rejects COMPARE AND WRITE ({sense})"));
    }
    let mut weights = Vec::new();
    for &(k, w) in &opts.weights {
        if w == 0 {
            continue;
        }
        let refused = match k {
            Kind::CompareAndWrite | Kind::CompareAndWriteMiscompare => caw_refused.clone(),
            _ => None,
        };
        match refused.or_else(|| unsupported(&dev, k, reopen.is_some())) {
            Some(reason) => {
                // Quiet (no progress): the summary's "not run" lines say it.
                if opts.progress.is_some() {
                    eprintln!("fsx: notice: leaving out {k}: {reason}");
                }
                not_run.push(NotRun {
                    op: k.name(),
                    reason,
                });
            }
            None => {
                ops_run.push(k.name());
                weights.push((k, w));
            }
        }
    }
    if weights.is_empty() && replay.is_none() {
        return Err(Failure::usage(
            "no op with a weight above 0 is supported by this target",
        ));
    }
    let bs = u64::from(info.block_size);
    let stamp = Stamp::new(seed, info.block_size, 0x0004);
    let setup = Setup {
        stamp,
        first,
        blocks,
        qd,
        unmap_zeroes: info.trim.zeroes && info.caps.unmap_zeroes,
        reopen,
        progress: opts.progress,
        interruptible: opts.interruptible,
    };
    let log_header = log::Header {
        lun_blocks: info.blocks,
        block_size: info.block_size,
        first_lba: first,
        blocks,
        qd,
    };
    let envelope =
        iesp_cli::envelope::Envelope::for_process(log::SCHEMA.0, log::SCHEMA.1, Some(seed));
    let mut writer = match &opts.log {
        Some(p) => Some(
            log::LogWriter::create(p, &envelope, &log_header)
                .map_err(|e| Failure::usage(format!("--log {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let source = match replay {
        Some(l) => Source::List(l.ops.into_iter()),
        None => Source::Stream {
            generator: Box::new(Generator::new(
                seed,
                &weights,
                &opts.sizes,
                opts.default_sizes,
                Shape {
                    first,
                    end: first + blocks,
                    max_io_blocks: (u64::from(info.max_io_bytes) / bs).max(1),
                    max_caw_blocks: u64::from(info.limits.max_compare_and_write_blocks)
                        .clamp(1, 255),
                    max_unmap_blocks: u64::from(info.limits.max_unmap_blocks),
                    block_size: info.block_size,
                },
            )),
            ops: opts.ops.or(if opts.duration.is_none() {
                Some(10_000)
            } else {
                None
            }),
            duration: opts.duration,
        },
    };
    // One op at a time: a local device's system calls run inline, without
    // a hand-off to the blocking pool and back per op.
    let mut dev = dev;
    dev.set_inline(qd == 1);
    let (mut dev, out) = engine::run(Arc::new(dev), &setup, source, writer.as_mut()).await;
    if let Some(e) = writer.as_mut().and_then(|w| w.flush()) {
        notes.push(format!("the op log is incomplete: {e}"));
    }
    notes.push(format!("seed {seed}"));

    // Shrink a data failure.
    let mut reproducer = None;
    if let Some(f) = &out.failure
        && f.kind != engine::FailKind::Io
        && opts.shrink
        && (opts.replay.is_none() || opts.shrink_log.is_some())
    {
        let mut r = shrink::Rerunner::new(dev, fresh, &setup);
        let failing = shrink::up_to_failure(&out.ops, f.op.i);
        let small = shrink::shrink(&mut r, failing, f.kind, opts.shrink_budget).await;
        let again = r.run(&small).await;
        let reproduces = again.failure.as_ref().is_some_and(|g| g.kind == f.kind);
        let path = opts.shrink_log.clone().unwrap_or_else(|| match &opts.log {
            Some(l) if !iesp_cli::envelope::is_stdout(l) => {
                PathBuf::from(format!("{}.shrunk.jsonl", l.display()))
            }
            _ => PathBuf::from(format!("fsx-shrunk-{seed}.jsonl")),
        });
        let written = match log::write_all(&path, &envelope, &log_header, &small) {
            Ok(()) => Some(path.display().to_string()),
            Err(e) => {
                notes.push(format!(
                    "cannot write the reproducer {}: {e}",
                    path.display()
                ));
                None
            }
        };
        reproducer = Some(Reproducer {
            ops: small.len(),
            path: written,
            reproduces,
        });
        dev = r.dev;
    }
    if let Ok(d) = Arc::try_unwrap(dev) {
        let _ = d.close().await;
    }

    let (outcome, exit_code) = match (&out.failure, out.interrupted) {
        (Some(f), _) => (
            match f.kind {
                engine::FailKind::Io => "io-error",
                _ => "mismatch",
            },
            f.kind.exit_code(),
        ),
        (None, Some(s)) => ("interrupted", s.exit_code()),
        (None, None) => ("pass", iesp_cli::exit::PASS),
    };
    let secs = out.elapsed.as_secs_f64().max(1e-9);
    let summary = Summary {
        outcome: outcome.to_owned(),
        exit_code,
        target: TargetInfo {
            name: info.name.clone(),
            kind: info.kind,
            block_size: info.block_size,
            blocks: info.blocks,
        },
        first_lba: first,
        blocks,
        qd,
        ops: out.stats.ops,
        elapsed_s: out.elapsed.as_secs_f64(),
        ops_per_s: out.stats.ops as f64 / secs,
        mib_per_s: out.stats.bytes as f64 / secs / f64::from(1u32 << 20),
        coverage_percent: 100.0 * out.touched as f64 / blocks.max(1) as f64,
        ops_run,
        ops_not_run: not_run,
        per_op: out.stats.rows(),
        notes,
        failure: out.failure.as_ref().map(|f| f.report()),
        reproducer,
    };
    if let Some(p) = &opts.json {
        iesp_cli::envelope::Envelope::for_process("fsx", 1, Some(seed))
            .interrupted(out.interrupted.is_some())
            .write(p, &summary)
            .map_err(|e| Failure {
                code: iesp_cli::exit::IO,
                message: format!("--json {}: {e}", p.display()),
            })?;
    }
    Ok(summary)
}
