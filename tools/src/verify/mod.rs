//! `iesp-test verify TARGET`: does this storage give back exactly what was
//! written to it?
//!
//! TARGET is a regular file, a local block device or an `iscsi://` URL
//! ([`crate::device`]). Every block written is self-describing
//! ([`crate::block`]): on read-back a wrong block is classified
//! (misdirected, stale, torn, zeros, foreign) and reported with its
//! expected and found headers and a hex dump of the first difference.
//!
//! ## Layout
//!
//! - [`cli`] — the command line, exit codes, the summary on stdout.
//! - [`engine`] — run context, limits, comparison, striped sweeps.
//! - [`sequential`] — write all, flush, read all; `--check` reads only.
//! - [`random`] — reserved random ranges with a unique/duplicate/trim mix.
//! - [`state`] — per-block expectations and the state file.
//! - [`report`] — counters, records, summary, JSON report.
//!
//! The device layer, block format and load engine are
//! [`iesp_blockio`]'s; verify's benchmark against fio is the package's
//! `verify_vs_fio` bench.
//!
//! ## Modes
//!
//! - **sequential** (default): each pass writes the whole range with the
//!   next generation, flushes (`fdatasync` / SYNCHRONIZE CACHE), and reads
//!   it back. `--passes`, or until a limit.
//! - **random**: see [`random`]. Stops at `--duration`, `--bytes` or
//!   `--verified-percent` (default 100).
//! - **check** (`--check`): reads only, and compares with what a previous
//!   run left: a sequential image of `--seed`/`--generation` (taken from the
//!   first block header when not given), or the `--state` file a previous
//!   run saved. Proves persistence, e.g. after a target restart.

pub mod cli;
pub mod durable;
pub mod engine;
pub mod random;
pub mod report;
pub mod sequential;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::output::{self, Progress, ProgressMode};
use engine::{Ctx, Expect, Limits};
use iesp_blockio::block::{self, Class, Flags, Header, Stamp};
use iesp_blockio::{AlignedBuf, AnyDevice, Device, DeviceError, OpenOptions};
use random::Mix;
use report::{Outcome, Stats, Summary};
use state::{BlockState, StateFile, StateKind, StateTable};

/// Exit codes of `verify` (documented in `--help` and the README); the
/// values are [`iesp_cli::exit`]'s.
pub mod exit {
    /// Everything written was read back intact.
    pub const PASS: u8 = iesp_cli::exit::PASS;
    /// At least one block differed from what was written.
    pub const MISMATCH: u8 = iesp_cli::exit::FAILED;
    /// Bad command line or options that do not fit the target.
    pub const USAGE: u8 = iesp_cli::exit::USAGE;
    /// A read, write, flush, login or open failed (and nothing mismatched).
    pub const IO_ERROR: u8 = iesp_cli::exit::IO;
    /// The target looks in use or holds data (mounted, partition table,
    /// file system): nothing written; `--force` overrides. A usage error:
    /// the command line must change.
    pub const REFUSED: u8 = iesp_cli::exit::USAGE;
}

/// Which mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Sequential,
    Random,
    /// Read-only (`--check`).
    #[value(skip)]
    Check,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Random => "random",
            Mode::Check => "check",
        }
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: String,
    pub mode: Mode,
    pub open: OpenOptions,
    /// Start of the range, bytes.
    pub offset: u64,
    /// Length of the range, bytes (to the end when `None`).
    pub length: Option<u64>,
    pub limits: Limits,
    /// Sequential passes (`None`: 1, or unlimited under a time/byte limit).
    pub passes: Option<u64>,
    pub workers: usize,
    pub queue_depth: usize,
    /// Bytes per command.
    pub io_size: u64,
    /// Random mode: largest range, in blocks.
    pub max_blocks: u32,
    pub mix: Mix,
    pub seed: Option<u64>,
    /// Sequential: generation of the first pass; check: the one expected.
    pub generation: Option<u64>,
    /// Save the expected state here at the end (write modes).
    pub state_out: Option<PathBuf>,
    /// Check against this state file.
    pub state_in: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub progress: ProgressMode,
    pub interval: Duration,
    /// Mismatches shown in detail on stdout.
    pub show: usize,
    /// Print the seed, target and range before starting.
    pub print_header: bool,
    /// Stop cleanly on Ctrl-C (the command line; not when embedded).
    pub interruptible: bool,
    /// Random mode: when to flush besides at the end.
    pub flush_every: durable::FlushPolicy,
    /// Save the state file this often while the run goes on.
    pub state_every: Option<Duration>,
    /// `--target-metrics`: the target's counters read before the run; the
    /// reading after goes into [`Summary::target_metrics`].
    pub target_metrics: Option<crate::target_metrics::Recorder>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: String::new(),
            mode: Mode::Sequential,
            open: OpenOptions::default(),
            offset: 0,
            length: None,
            limits: Limits {
                max_io_errors: 16,
                ..Limits::default()
            },
            passes: None,
            workers: 1,
            queue_depth: 8,
            io_size: 1 << 20,
            max_blocks: 64,
            mix: Mix::default(),
            seed: None,
            generation: None,
            state_out: None,
            state_in: None,
            json: None,
            target_metrics: None,
            progress: ProgressMode::Auto,
            interval: Duration::from_secs(5),
            show: 10,
            print_header: true,
            interruptible: false,
            flush_every: durable::FlushPolicy::End,
            state_every: None,
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
    pub(crate) fn usage(msg: impl Into<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            error: anyhow::anyhow!(msg.into()),
        }
    }

    pub(crate) fn io(error: anyhow::Error) -> Failure {
        Failure {
            code: exit::IO_ERROR,
            error,
        }
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Failure {
        let code = match e {
            DeviceError::Usage { .. } => exit::USAGE,
            DeviceError::Refused { .. } => exit::REFUSED,
            _ => exit::IO_ERROR,
        };
        Failure {
            code,
            error: e.into(),
        }
    }
}

/// Where a check's expectations come from.
enum CheckSource {
    Uniform {
        generation: u64,
    },
    Table(Arc<StateTable>),
    Durable {
        current: Arc<StateTable>,
        durable: Arc<StateTable>,
        provisional: bool,
    },
}

/// What identifies the device a state file belongs to: the LUN's device
/// identification (VPD page 0x83) when the device knows it, else its
/// name (a file's or block device's path).
fn identity(info: &iesp_blockio::DeviceInfo) -> String {
    info.identity.clone().unwrap_or_else(|| info.name.clone())
}

/// Runs verify as `opts` says, printing the header now and returning the
/// summary (not yet printed) when the run happened, whatever it found.
pub async fn run(opts: &Options) -> Result<Summary, Failure> {
    let writing = opts.mode != Mode::Check;
    let mut open = opts.open.clone();
    open.write = writing;
    let state_in = match (&opts.state_in, opts.mode) {
        (Some(p), Mode::Check) => Some(StateFile::load(p).map_err(|e| Failure {
            code: exit::USAGE,
            error: e,
        })?),
        (Some(_), _) => {
            return Err(Failure::usage(
                "--state-in is for --check; to save a run's state use --state-out",
            ));
        }
        (None, _) => None,
    };
    if let Some(s) = &state_in
        && open.file_block_size.is_none()
        && !opts.target.starts_with("iscsi://")
    {
        open.file_block_size = Some(s.block_size);
    }
    let dev = AnyDevice::open(&opts.target, &open).await?;
    run_on(dev, opts, state_in).await
}

/// Runs verify as `opts` says on a device already open (`opts.target` and
/// `opts.open` are not used), e.g. an in-memory one; `state_in` is the
/// loaded `--state-in` file of a check.
pub async fn run_on(
    dev: AnyDevice,
    opts: &Options,
    state_in: Option<StateFile>,
) -> Result<Summary, Failure> {
    let info = dev.info().clone();
    for w in &info.negotiation_warnings {
        eprintln!("verify: warning: {w} (--strict makes this an error)");
    }
    let bs = u64::from(info.block_size);
    if info.block_size < block::MIN_BLOCK_SIZE {
        return Err(Failure::usage(format!(
            "{}-byte blocks: the block format needs at least {}",
            info.block_size,
            block::MIN_BLOCK_SIZE
        )));
    }

    // The range.
    let (offset, length) = match &state_in {
        Some(_) if opts.offset != 0 || opts.length.is_some() => {
            return Err(Failure::usage(
                "--state-in gives the range: leave out --offset and --length",
            ));
        }
        Some(s) => {
            if let Some(why) = s.mismatch(&identity(&info), info.blocks) {
                return Err(Failure::usage(format!(
                    "{why}: refusing a state file of another target (a stale or foreign state)"
                )));
            }
            if s.block_size != info.block_size {
                return Err(Failure::usage(format!(
                    "the state file is for {}-byte blocks, the target has {}",
                    s.block_size, info.block_size
                )));
            }
            (s.first_lba * bs, s.blocks * bs)
        }
        None => (
            opts.offset,
            opts.length
                .unwrap_or_else(|| info.capacity().saturating_sub(opts.offset)),
        ),
    };
    if offset % bs != 0 || length % bs != 0 {
        return Err(Failure::usage(format!(
            "--offset and --length must be multiples of the {bs}-byte block size"
        )));
    }
    let (first_lba, blocks) = (offset / bs, length / bs);
    if blocks == 0
        || first_lba
            .checked_add(blocks)
            .is_none_or(|e| e > info.blocks)
    {
        return Err(Failure::usage(format!(
            "the range {offset}+{length} bytes is empty or beyond the end of the target ({} bytes)",
            info.capacity()
        )));
    }
    if opts.io_size < bs || opts.io_size % bs != 0 {
        return Err(Failure::usage(format!(
            "--io-size must be a multiple of the {bs}-byte block size"
        )));
    }
    let mut notes = info.notes.clone();
    let io_size = opts.io_size.min(u64::from(info.max_io_bytes) / bs * bs);
    if io_size < opts.io_size {
        notes.push(format!(
            "--io-size capped at {} (the target's largest transfer)",
            output::bytes(io_size)
        ));
    }
    let io_blocks = u32::try_from(io_size / bs).unwrap_or(u32::MAX);

    // Seed, flags and, for a check, what to expect.
    let (seed, flags, check) = match (opts.mode, &state_in) {
        (Mode::Check, Some(s)) => {
            if opts.seed.is_some_and(|x| x != s.seed) {
                return Err(Failure::usage(format!(
                    "--seed {} differs from the state file's {}",
                    opts.seed.unwrap_or_default(),
                    s.seed
                )));
            }
            let t = StateTable::new(s.first_lba, s.blocks).map_err(Failure::io)?;
            t.apply(&s.extents);
            let source = if s.durable_extents.is_empty() && !s.provisional {
                CheckSource::Table(Arc::new(t))
            } else {
                let d = StateTable::new(s.first_lba, s.blocks).map_err(Failure::io)?;
                d.apply(&s.durable_extents);
                CheckSource::Durable {
                    current: Arc::new(t),
                    durable: Arc::new(d),
                    provisional: s.provisional,
                }
            };
            (s.seed, Flags(s.flags), Some(source))
        }
        (Mode::Check, None) => {
            let (seed, generation) = probe(
                &dev,
                first_lba,
                blocks,
                opts.seed,
                opts.generation,
                &mut notes,
            )
            .await?;
            (
                seed,
                Flags::default(),
                Some(CheckSource::Uniform { generation }),
            )
        }
        (Mode::Random, _) => (
            iesp_cli::seed::resolve(opts.seed, "verify"),
            Flags::RANDOM,
            None,
        ),
        (Mode::Sequential, _) => (
            iesp_cli::seed::resolve(opts.seed, "verify"),
            Flags::default(),
            None,
        ),
    };
    let stamp = Stamp::new(seed, info.block_size, flags.0);
    let table = if opts.mode == Mode::Random {
        Some(Arc::new(
            StateTable::new(first_lba, blocks).map_err(Failure::io)?,
        ))
    } else {
        None
    };
    let first_generation = opts.generation.unwrap_or(1).max(1);
    let passes = opts.passes.unwrap_or(
        if opts.limits.duration.is_some() || opts.limits.bytes.is_some() {
            u64::MAX
        } else {
            1
        },
    );
    let mut limits = opts.limits.clone();
    if opts.mode == Mode::Random
        && limits.duration.is_none()
        && limits.bytes.is_none()
        && limits.verified_percent.is_none()
    {
        limits.verified_percent = Some(100.0);
    }

    // The header.
    let quiet = !opts.print_header;
    macro_rules! say {
        ($($t:tt)*) => {
            if !quiet {
                output::say(format_args!($($t)*));
            }
        };
    }
    say!("verify: seed {seed}, mode {}", opts.mode.name());
    say!(
        "target: {} ({}, {} blocks of {} bytes = {}{})",
        info.name,
        info.kind,
        info.blocks,
        info.block_size,
        output::bytes(info.capacity()),
        if info.direct_io { ", O_DIRECT" } else { "" }
    );
    say!(
        "range:  LBA {first_lba}..{} ({}), {} per command, {} worker(s) x queue depth {}",
        first_lba + blocks,
        output::bytes(length),
        output::bytes(io_size),
        opts.workers,
        opts.queue_depth
    );
    match opts.mode {
        Mode::Random => {
            say!(
                "mix:    {} (ranges of 1 to {} blocks)",
                opts.mix,
                opts.max_blocks.min(io_blocks)
            );
            match info.trim.method {
                crate::device::TrimMethod::None => {
                    say!("trim:   none, trims are skipped: {}", info.trim.reason)
                }
                _ => say!("trim:   {}", info.trim.reason),
            }
        }
        Mode::Sequential if passes != 1 => say!(
            "passes: {}",
            if passes == u64::MAX {
                "until a limit".to_owned()
            } else {
                passes.to_string()
            }
        ),
        _ => {}
    }
    for n in &notes {
        say!("note:   {n}");
    }

    let ctx = Arc::new(Ctx::new(
        dev,
        stamp,
        first_lba,
        blocks,
        io_blocks,
        opts.workers,
        opts.queue_depth,
        limits,
    ));
    let progress = Arc::new(Progress::new(opts.progress, opts.interval));
    let ticker = spawn_ticker(ctx.clone(), progress.clone(), opts.progress, opts.interval);
    // SIGINT/SIGTERM stop the run cleanly (summary, report, state marked
    // interrupted) — only from the command line: a tool that embeds
    // verify keeps its own handling.
    let interrupt = {
        let ctx = ctx.clone();
        let listen = opts.interruptible;
        tokio::spawn(async move {
            if listen {
                let s = crate::signal::wait().await;
                ctx.abort(format!("interrupted by {s}"));
            }
        })
    };

    let dur = if opts.mode == Mode::Random {
        Some(Arc::new(
            durable::Durability::new(first_lba, blocks, opts.flush_every).map_err(Failure::io)?,
        ))
    } else {
        None
    };
    let state_base = StateFile {
        target: info.name.clone(),
        seed,
        block_size: info.block_size,
        flags: flags.0,
        first_lba,
        blocks,
        trim_zeroes: ctx.trim_zeroes,
        extents: Vec::new(),
        durable_extents: Vec::new(),
        provisional: false,
        identity: identity(&info),
        capacity_blocks: info.blocks,
    };
    // Random mode saves its state while it runs (--state-every): what a
    // SIGKILL leaves behind.
    let stop_saving = Arc::new(tokio::sync::Notify::new());
    let saver = match (opts.mode, &opts.state_out, opts.state_every, &table, &dur) {
        (Mode::Random, Some(path), Some(every), Some(t), Some(d)) => {
            let (path, t, d, base) = (path.clone(), t.clone(), d.clone(), state_base.clone());
            let stop = stop_saving.clone();
            Some(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.notified() => break,
                    }
                    let f = StateFile {
                        extents: t.extents(),
                        durable_extents: d.durable.extents(),
                        provisional: true,
                        ..base.clone()
                    };
                    let p = path.clone();
                    match tokio::task::spawn_blocking(move || f.save(&p, false)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!("saving the state: {e:#}"),
                        Err(e) => tracing::warn!("saving the state: {e}"),
                    }
                }
            }))
        }
        _ => None,
    };

    let mut generation = None;
    let mut state_extents = None;
    // A sequential run that wrote every block of the range (a check by
    // seed and generation can cover it).
    let mut whole = false;
    match (opts.mode, check) {
        (Mode::Sequential, _) => {
            let w = sequential::run(&ctx, passes, first_generation).await;
            generation = w.generation;
            whole =
                w.stripes.iter().map(|s| s.blocks).sum::<u64>() == blocks && w.failed.is_empty();
            if let Some(g) = w.generation {
                state_extents = Some(w.extents(first_lba, blocks, g));
            }
        }
        (Mode::Random, _) => {
            if let (Some(t), Some(d)) = (&table, &dur) {
                random::run(&ctx, t.clone(), d.clone(), opts.mix, opts.max_blocks).await;
                state_extents = Some(t.extents());
            }
        }
        (Mode::Check, Some(CheckSource::Uniform { generation: g })) => {
            generation = Some(g);
            sequential::check(&ctx, Expect::Uniform(BlockState::new(StateKind::Unique, g))).await;
        }
        (Mode::Check, Some(CheckSource::Table(t))) => {
            sequential::check(&ctx, Expect::Table(t)).await
        }
        (
            Mode::Check,
            Some(CheckSource::Durable {
                current,
                durable,
                provisional,
            }),
        ) => {
            sequential::check(
                &ctx,
                Expect::Durable {
                    current,
                    durable,
                    provisional,
                },
            )
            .await
        }
        (Mode::Check, None) => {}
    }
    interrupt.abort();
    ticker.abort();
    if let Some(s) = saver {
        // Let a save in progress finish: the final state must be the last.
        stop_saving.notify_one();
        let _ = s.await;
    }
    progress.finish();

    let mut summary = summarize(
        &ctx, opts, seed, generation, whole, first_lba, blocks, io_size,
    );
    if let Some(d) = &dur {
        summary.flushes = Stats::get(&d.flushes);
        summary.unflushed_blocks = d.pending_blocks() as u64;
    }
    if let (Some(path), Some(extents)) = (&opts.state_out, state_extents) {
        let file = StateFile {
            extents,
            durable_extents: dur
                .as_ref()
                .map(|d| d.durable.extents())
                .unwrap_or_default(),
            // For a sequential run everything was flushed at the end.
            ..state_base
        };
        file.save(path, summary.interrupted).map_err(Failure::io)?;
    }
    summary.target_metrics = opts
        .target_metrics
        .as_ref()
        .map(crate::target_metrics::Recorder::finish);
    if let Some(path) = &opts.json {
        summary
            .write_json(path, summary.interrupted)
            .map_err(|e| Failure::io(anyhow::anyhow!("writing {}: {e}", path.display())))?;
    }
    // Close the session (logout) once nobody else holds the context.
    if let Ok(ctx) = Arc::try_unwrap(ctx)
        && let Ok(dev) = Arc::try_unwrap(ctx.dev)
        && let Err(e) = dev.close().await
    {
        tracing::warn!("closing the target: {e}");
    }
    Ok(summary)
}

/// Finds the seed and generation to check against: given, or from the
/// first valid block header in the first blocks of the range.
async fn probe(
    dev: &AnyDevice,
    first_lba: u64,
    blocks: u64,
    seed: Option<u64>,
    generation: Option<u64>,
    notes: &mut Vec<String>,
) -> Result<(u64, u64), Failure> {
    const PROBE_BLOCKS: u64 = 64;
    if let (Some(s), Some(g)) = (seed, generation) {
        return Ok((s, g));
    }
    let info = dev.info();
    let n = PROBE_BLOCKS
        .min(blocks)
        .min(u64::from(info.max_io_bytes / info.block_size).max(1));
    let buf = AlignedBuf::new((n * u64::from(info.block_size)) as usize, info.align);
    let (buf, r) = dev.read(first_lba, buf).await;
    r.map_err(|e| Failure::io(e.into()))?;
    let found = buf
        .chunks_exact(info.block_size as usize)
        .enumerate()
        .find_map(|(i, b)| {
            let h = Header::parse(b)?;
            (block::is_valid(b) && !h.is_duplicate() && seed.is_none_or(|s| s == h.run))
                .then_some((i as u64, h))
        });
    match (found, seed) {
        (Some((i, h)), _) => {
            if Flags(h.flags).contains(Flags::RANDOM) {
                return Err(Failure::usage(format!(
                    "LBA {} was written in random mode, where every block has its own generation: check it with --state-in FILE (saved by that run's --state-out)",
                    first_lba + i
                )));
            }
            let g = generation.unwrap_or(h.generation);
            notes.push(format!(
                "expecting generation {g} of seed {} ({} from the header at LBA {})",
                h.run,
                if seed.is_some() {
                    "generation"
                } else {
                    "seed and generation"
                },
                first_lba + i
            ));
            Ok((h.run, g))
        }
        (None, Some(s)) => Ok((s, generation.unwrap_or(1))),
        (None, None) => Err(Failure::usage(format!(
            "no intact block of this tool in the first {n} blocks of the range: give --seed (and --generation) of the run to check"
        ))),
    }
}

fn spawn_ticker(
    ctx: Arc<Ctx>,
    progress: Arc<Progress>,
    mode: ProgressMode,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let tick = if mode == ProgressMode::Lines
        || (mode == ProgressMode::Auto && !std::io::IsTerminal::is_terminal(&std::io::stderr()))
    {
        interval.max(Duration::from_millis(100))
    } else {
        Duration::from_millis(125)
    };
    tokio::spawn(async move {
        let mut last_phase = String::new();
        let mut last_bytes = 0u64;
        let mut last_t = std::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let ph = ctx.phase.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let w = Stats::get(&ctx.stats.bytes_written);
            let r = Stats::get(&ctx.stats.bytes_read);
            let pos = ctx.count(ph.counter).saturating_sub(ph.base);
            if ph.name != last_phase {
                progress.phase(&ph.name, ph.total);
                last_phase = ph.name.clone();
            }
            let now = std::time::Instant::now();
            let rate = output::mib_s(
                (w + r).saturating_sub(last_bytes),
                now.duration_since(last_t).as_secs_f64(),
            );
            (last_bytes, last_t) = (w + r, now);
            progress.update(pos.min(ph.total), || {
                format!(
                    "[{:>6.1}s] {} {}/{} {:.0} MiB/s, verified {:.1}%, {} mismatches, {} I/O errors",
                    ctx.started.elapsed().as_secs_f64(),
                    ph.name,
                    output::bytes(pos),
                    output::bytes(ph.total),
                    rate,
                    ctx.verified_percent(),
                    Stats::get(&ctx.stats.mismatches),
                    Stats::get(&ctx.stats.io_errors),
                )
            });
        }
    })
}

/// Seconds spent in a phase, or the whole run when it was not timed.
fn phase_secs(nanos: &std::sync::atomic::AtomicU64, elapsed: f64) -> f64 {
    match nanos.load(std::sync::atomic::Ordering::Relaxed) {
        0 => elapsed,
        n => n as f64 / 1e9,
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    ctx: &Ctx,
    opts: &Options,
    seed: u64,
    generation: Option<u64>,
    whole: bool,
    first_lba: u64,
    blocks: u64,
    io_size: u64,
) -> Summary {
    let s = &ctx.stats;
    let elapsed = ctx.started.elapsed().as_secs_f64();
    let mut report = std::mem::take(&mut *ctx.report.lock().unwrap_or_else(|p| p.into_inner()));
    report.mismatches.sort_by_key(|m| m.lba);
    let mismatch_count = Stats::get(&s.mismatches);
    let io_error_count = Stats::get(&s.io_errors);
    let signal = if opts.interruptible {
        crate::signal::received()
    } else {
        None
    };
    let outcome = if mismatch_count > 0 {
        Outcome::Mismatch
    } else if signal.is_some() {
        Outcome::Interrupted
    } else if io_error_count > 0 {
        Outcome::IoError
    } else {
        Outcome::Pass
    };
    // A signal decides the exit code, even over a mismatch found before it
    // (the report still says "mismatch").
    let exit_code = match (signal, outcome) {
        (Some(s), _) => s.exit_code(),
        (None, Outcome::Pass) => exit::PASS,
        (None, Outcome::Mismatch) => exit::MISMATCH,
        (None, _) => exit::IO_ERROR,
    };
    let by_class: BTreeMap<&'static str, u64> = Class::ALL
        .iter()
        .map(|&c| (c.name(), s.class_count(c)))
        .collect();
    let (w, r) = (Stats::get(&s.bytes_written), Stats::get(&s.bytes_read));
    let info = ctx.dev.info().clone();
    let range = {
        let bs = u64::from(info.block_size);
        let mut a = String::new();
        if first_lba != 0 || blocks != info.blocks {
            a = format!(" --offset {} --length {}", first_lba * bs, blocks * bs);
        }
        if info.kind == crate::device::Kind::File
            && info.block_size != crate::device::local::DEFAULT_FILE_BLOCK_SIZE
        {
            a.push_str(&format!(" --block-size {}", info.block_size));
        }
        a
    };
    let check_command = match (opts.mode, &opts.state_out, generation) {
        (Mode::Random | Mode::Sequential, Some(p), _) => Some(format!(
            "iesp-test verify --check --state-in {} {}",
            p.display(),
            info.name
        )),
        (Mode::Sequential, None, Some(g)) if whole && mismatch_count == 0 => Some(format!(
            "iesp-test verify --check --seed {seed} --generation {g}{range} {}",
            info.name
        )),
        _ => None,
    };
    Summary {
        trim_skip_reason: ctx
            .dev
            .unmap_skip_reason()
            .filter(|_| opts.mode == Mode::Random),
        trim: info.trim.clone(),
        target: info,
        mode: opts.mode.name(),
        seed,
        generation,
        first_lba,
        blocks,
        io_size,
        workers: ctx.workers,
        queue_depth: ctx.queue_depth,
        elapsed_s: elapsed,
        stopped_by: ctx.stop_reason(),
        bytes_written: w,
        bytes_read: r,
        write_mib_s: output::mib_s(w, phase_secs(&ctx.write_nanos, elapsed)),
        read_mib_s: output::mib_s(r, phase_secs(&ctx.read_nanos, elapsed)),
        blocks_verified: Stats::get(&s.blocks_verified),
        distinct_verified: Stats::get(&s.distinct_verified),
        verified_percent: ctx.verified_percent(),
        blocks_unverifiable: Stats::get(&s.blocks_unverifiable),
        writes_unique: Stats::get(&s.writes_unique),
        writes_duplicate: Stats::get(&s.writes_duplicate),
        trims: Stats::get(&s.trims),
        blocks_trimmed: Stats::get(&s.blocks_trimmed),
        trims_skipped: Stats::get(&s.trims_skipped),
        mismatch_count,
        mismatches_by_class: by_class,
        mismatches: report.mismatches,
        io_error_count,
        io_errors: report.io_errors,
        interrupted: signal.is_some(),
        negotiation_warnings: ctx.dev.info().negotiation_warnings.clone(),
        outcome,
        exit_code,
        check_command,
        legally_lost: Stats::get(&s.legally_lost),
        lost_flushed_writes: Stats::get(&s.lost_flushed),
        rewritten_after_save: Stats::get(&s.rewritten_after_save),
        flushes: 0,
        unflushed_blocks: 0,
        target_metrics: None,
    }
}

/// verify against the in-memory device: no socket, no file. Each fault
/// the device can inject must be found and named.
#[cfg(test)]
mod tests;
