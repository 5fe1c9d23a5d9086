//! The `fsx` command line: flags, `--config` under them, the summary and
//! the exit code.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use iesp_cli::units;

use super::config::{self, parse_weights};
use super::ops::{Kind, Sizes};
use super::{Failure, Options};
use crate::output::ProgressMode;
use crate::target_args::TargetArgs;

const AFTER_HELP: &str = "\
TARGET is a regular file, a local block device (/dev/sdX) or an iSCSI URL
(iscsi://[user[%password]@]host[:port]/target-iqn/lun). fsx overwrites it:
it needs --write, and --force on a target that is mounted, in use, or holds
data: a partition table or file system signature, or in its first 128 KiB a
block that is neither zeroed nor written by iesp-test.

Ops (weights in --config or --weights OP=N,...): read, write, write_fua,
unmap, write_same, write_same_unmap, compare_and_write,
compare_and_write_miscompare, flush, and on iSCSI reconnect, abort_task,
lun_reset. Ops the target does not support are left out with a notice.

Every read is checked against a per-block model; the first mismatch stops
the run, prints the op, LBA, expected and found block headers and the
block's history, and the failing sequence is shrunk to a reproducer log that
`--replay` runs again. The summary goes to stdout (stderr with --json -),
progress lines to stderr.

Exit status:
  0    every read matched the model
  1    mismatch: a read, a COMPARE AND WRITE or a rejected advertised op
  2    usage error (bad flag or config, range outside the target, weights
       summing to 0, a --replay log of another LUN size)
  3    I/O or connection error
  130  interrupted (SIGINT)
  143  terminated (SIGTERM)

Examples:
  iesp-test fsx --write --size 64M --ops 100000 /tmp/fsx.img
  iesp-test fsx --write --config fsx.toml --log ops.jsonl iscsi://127.0.0.1/iqn.x:t/0
  iesp-test fsx --write --replay ops.jsonl.shrunk.jsonl iscsi://127.0.0.1/iqn.x:t/0";

/// `--weights`' value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightList(pub Vec<(Kind, u32)>);

/// Arguments of `iesp-test fsx`.
#[derive(Args, Debug, Clone)]
#[command(after_help = AFTER_HELP)]
pub struct FsxArgs {
    /// The file, block device or iscsi:// URL to test.
    pub target: String,
    /// Allow writing to TARGET (its contents are destroyed).
    #[arg(long)]
    pub write: bool,
    /// Write even if the target is mounted, in use or holds data.
    #[arg(long)]
    pub force: bool,
    /// A TOML file with seed, qd, ops, duration, lba_start, lba_count,
    /// [weights] and [sizes] (see tools/fsx.sample.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed of the op stream and the data (from the OS when not given;
    /// printed first).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Commands in flight (ops in flight never overlap).
    #[arg(long = "qd", alias = "queue-depth", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub queue_depth: Option<u32>,
    /// Stop after this many ops (default 10000 without --duration).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,
    /// Stop after this long (30s, 5m).
    #[arg(long, value_parser = units::parse_duration_nonzero)]
    pub duration: Option<Duration>,
    /// First block of the tested range.
    #[arg(long)]
    pub lba_start: Option<u64>,
    /// Blocks in the tested range (default: to the end).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub lba_count: Option<u64>,
    /// Op weights, e.g. read=30,write=20,unmap=0 (over the config's).
    #[arg(long, value_parser = |s: &str| parse_weights(s).map(WeightList))]
    pub weights: Option<WeightList>,
    /// Write every op to this JSON-lines log (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Run the ops of this log again, exactly (its range and queue depth).
    #[arg(long, value_name = "LOG")]
    pub replay: Option<PathBuf>,
    /// Do not shrink a failure.
    #[arg(long)]
    pub no_shrink: bool,
    /// Where the shrunk reproducer goes (default: LOG.shrunk.jsonl, or
    /// fsx-shrunk-SEED.jsonl without --log).
    #[arg(long, value_name = "FILE")]
    pub shrink_log: Option<PathBuf>,
    /// Re-runs the shrinker may use.
    #[arg(long, default_value_t = 400)]
    pub shrink_budget: usize,
    /// Write the report as JSON to FILE (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// How TARGET is opened.
    #[command(flatten)]
    pub open: TargetArgs,
    /// Create a missing regular file of this size.
    #[arg(long, value_parser = units::parse_size_nonzero)]
    pub size: Option<u64>,
    /// Progress on stderr: quiet for none.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Self-test: a fault of a memory:BLOCKS[xBS] target, KIND@LBA
    /// (drop-write, flip-on-read, stale-read, write-same-unmap-ignored,
    /// caw-writes-on-miscompare).
    #[arg(long, hide = true, value_parser = super::memory::parse_fault)]
    pub fault: Vec<iesp_blockio::mem::FaultRule>,
    /// Time between progress lines.
    #[arg(long, default_value = "2s", value_parser = units::parse_duration_nonzero)]
    pub progress_interval: Duration,
}

impl FsxArgs {
    /// The options these arguments (over the config file) stand for.
    pub fn options(&self) -> Result<Options, Failure> {
        if !self.write {
            return Err(Failure::usage(
                "fsx overwrites TARGET: add --write to allow it",
            ));
        }
        let cfg = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Failure::usage(format!("--config {}: {e}", p.display())))?;
                config::parse(&p.display().to_string(), &text).map_err(Failure::usage)?
            }
            None => config::Config::default(),
        };
        let weights = config::merge_weights(
            config::default_weights(),
            &[
                &cfg.weights,
                self.weights.as_ref().map_or(&[][..], |w| &w.0[..]),
            ],
        );
        let mut sizes: Vec<(Kind, Sizes)> = cfg.sizes.clone();
        sizes.dedup_by_key(|(k, _)| *k);
        Ok(Options {
            target: self.open.target(&self.target).map_err(Failure::usage)?,
            open: self.open.open_options(true, self.force, self.size),
            seed: iesp_cli::seed::resolve(self.seed.or(cfg.seed), "iesp-test fsx"),
            qd: self.queue_depth.or(cfg.qd).unwrap_or(8) as usize,
            ops: self.ops.or(cfg.ops),
            duration: self.duration.or(cfg.duration),
            lba_start: self.lba_start.or(cfg.lba_start).unwrap_or(0),
            lba_count: self.lba_count.or(cfg.lba_count),
            weights,
            sizes,
            default_sizes: cfg.default_sizes.unwrap_or_default(),
            log: self.log.clone(),
            json: self.json.clone(),
            replay: self.replay.clone(),
            shrink: !self.no_shrink,
            shrink_budget: self.shrink_budget,
            shrink_log: self.shrink_log.clone(),
            progress: (self.progress != ProgressMode::Quiet).then_some(self.progress_interval),
            interruptible: true,
            faults: self.fault.clone(),
        })
    }
}

/// Runs `iesp-test fsx`: prints the summary and returns an error with its
/// exit code unless the run passed.
pub async fn run(args: FsxArgs) -> anyhow::Result<()> {
    let coded = |f: Failure| crate::exit::Coded {
        code: f.code,
        error: anyhow::anyhow!(f.message),
    };
    crate::output::check_outputs(&[
        ("--json", args.json.as_deref()),
        ("--log", args.log.as_deref()),
    ])
    .map_err(crate::exit::usage)?;
    let opts = args.options().map_err(coded)?;
    // A replay's seed is the log's: run() names it once it has read it.
    if opts.replay.is_none() {
        crate::output::say(format_args!("fsx: seed {}", opts.seed));
    }
    let summary = super::run(&opts).await.map_err(coded)?;
    crate::output::say_str(&summary.render());
    match summary.exit_code {
        0 => Ok(()),
        code => Err(crate::exit::Coded {
            code,
            error: anyhow::anyhow!(
                "fsx: {}",
                summary
                    .failure
                    .as_ref()
                    .map_or_else(|| summary.outcome.clone(), |f| f.message.clone())
            ),
        }
        .into()),
    }
}
