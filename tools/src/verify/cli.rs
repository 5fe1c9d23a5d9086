//! The `verify` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use iesp_cli::units;

use crate::output::ProgressMode;
use crate::target_args::TargetArgs;
use crate::verify::engine::Limits;
use crate::verify::random::Mix;
use crate::verify::{Mode, Options, exit};

/// `--help` text after the options.
const AFTER_HELP: &str = "\
TARGET is a regular file, a local block device (/dev/sdX) or an iSCSI URL
(iscsi://[user[%password]@]host[:port]/target-iqn/lun). Writing needs --write;
the target is refused if it is mounted, in use, or holds data (a partition
table or file system signature, or in its first 128 KiB a block that is
neither zeroed nor written by iesp-test), unless --force.

The human-readable summary goes to stdout (to stderr when --json is -),
progress to stderr. On SIGINT or SIGTERM verify stops issuing commands, lets
those in flight complete, and writes its summary, --json report (with
\"interrupted\": true) and --state-out file; it never prints PASS then.

Exit status:
  0    every block compared matched
  1    mismatch: at least one block differed from what was written
  2    usage error: bad options, options that do not fit the target, a bad
       output path, or a target that looks in use or holds data (--force)
  3    I/O or connection error: an open, login, read, write or flush failed
  130  interrupted (SIGINT)
  143  terminated (SIGTERM)

Examples:
  iesp-test verify --write --size 1G --json - /tmp/disk.img | jq .outcome
  iesp-test verify --write --mode random --duration 60s --mix u=70,d=20,t=10 /dev/sdX
  iesp-test verify --check --seed 1234 iscsi://127.0.0.1/iqn.2026-11.org.iesp-test:target0/0";

/// Arguments of `iesp-test verify`.
#[derive(Args, Debug, Clone)]
#[command(after_help = AFTER_HELP)]
pub struct VerifyArgs {
    /// The file, block device or iscsi:// URL to test.
    pub target: String,
    /// Allow writing to TARGET (its contents are destroyed).
    #[arg(long, conflicts_with = "check")]
    pub write: bool,
    /// Read only: verify the data a previous run left (from --seed or the
    /// block headers, or --state-in).
    #[arg(long)]
    pub check: bool,
    /// sequential: write everything, then read it back; random: reserved
    /// random ranges with a unique/duplicate/trim mix.
    #[arg(long, value_enum, default_value = "sequential")]
    pub mode: Mode,
    /// Write even if the target is mounted, in use or holds data.
    #[arg(long)]
    pub force: bool,
    /// Start of the tested range (bytes: 4096, 64M, 1G).
    #[arg(long, default_value = "0", value_parser = units::parse_size)]
    pub offset: u64,
    /// Length of the tested range (default: to the end).
    #[arg(long, value_parser = units::parse_size)]
    pub length: Option<u64>,
    /// Stop writing after this long (30s, 5m, 1h30m); what was written is
    /// still verified.
    #[arg(long, value_parser = units::parse_duration_nonzero)]
    pub duration: Option<Duration>,
    /// Stop after writing this many bytes (reading, with --check); commands
    /// already in flight complete.
    #[arg(long, value_parser = units::parse_size)]
    pub bytes: Option<u64>,
    /// Stop once this percentage of the range has been verified
    /// (random mode default: 100).
    #[arg(long, value_parser = parse_percent)]
    pub verified_percent: Option<f64>,
    /// Sequential passes, each with the next generation (default 1;
    /// unlimited under --duration or --bytes).
    #[arg(long)]
    pub passes: Option<u64>,
    /// Independent workers: stripes of a sequential pass, or groups of
    /// random-range slots.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,
    /// Commands each worker keeps in flight (queue depth).
    #[arg(long = "qd", alias = "queue-depth", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub queue_depth: u32,
    /// Bytes per command.
    #[arg(long, default_value = "1M", value_parser = units::parse_size_nonzero)]
    pub io_size: u64,
    /// Random mode: the largest range, in blocks.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_blocks: u32,
    /// Random mode: weights of unique writes, duplicate-content writes and
    /// trims.
    #[arg(long, default_value = "unique=80,duplicate=10,trim=10")]
    pub mix: Mix,
    /// Seed of the data (from the OS when not given; printed first). The
    /// same seed writes the same image.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sequential: generation of the first pass (default 1). Check: the
    /// generation expected (default: from the first block header).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=(1 << 29) - 1))]
    pub generation: Option<u64>,
    /// Save what every block should now hold, for a later --check
    /// --state-in (- for stdout). Saved on SIGINT/SIGTERM too. An existing
    /// FILE is refused unless --force.
    #[arg(long, value_name = "FILE", conflicts_with = "check")]
    pub state_out: Option<PathBuf>,
    /// Random mode: also save the --state-out file this often while running
    /// (what a SIGKILL leaves; a check of it accepts blocks the run wrote
    /// later).
    #[arg(long, value_name = "DURATION", requires = "state_out", value_parser = units::parse_duration_nonzero)]
    pub state_every: Option<Duration>,
    /// Random mode: SYNCHRONIZE CACHE after every N write commands, or
    /// every DURATION (default: only at the end). Writes not yet flushed may
    /// be lost by a power loss: --check reports them as legally lost.
    #[arg(long, value_name = "N|DURATION")]
    pub flush_every: Option<crate::verify::durable::FlushPolicy>,
    /// How TARGET is opened.
    #[command(flatten)]
    pub open: TargetArgs,
    /// The target's own counters before and after.
    #[command(flatten)]
    pub target_metrics: crate::target_metrics::TargetMetricsArgs,
    /// With --check: expect what this state file says.
    #[arg(long, value_name = "FILE", requires = "check")]
    pub state_in: Option<PathBuf>,
    /// Write the report as JSON to FILE (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Create a missing regular file of this size.
    #[arg(long, value_parser = units::parse_size_nonzero)]
    pub size: Option<u64>,
    /// Progress display on stderr (-q: none).
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Time between progress lines when stderr is not a terminal.
    #[arg(long, default_value = "5s", value_parser = units::parse_duration_nonzero)]
    pub progress_interval: Duration,
    /// Mismatches shown in detail.
    #[arg(long, default_value_t = 10)]
    pub show: usize,
    /// Give up after this many I/O errors.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_io_errors: u64,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage"))?;
    if (0.0..=100.0).contains(&p) && p > 0.0 {
        Ok(p)
    } else {
        Err(format!("{p} is not in (0, 100]"))
    }
}

impl VerifyArgs {
    /// The options these arguments stand for.
    pub fn options(&self) -> Result<Options, crate::verify::Failure> {
        let mode = if self.check { Mode::Check } else { self.mode };
        if mode != Mode::Check && !self.write {
            return Err(crate::verify::Failure::usage(
                "verify overwrites TARGET: add --write to allow it, or --check to only read what a previous run wrote",
            ));
        }
        Ok(Options {
            target: self
                .open
                .target(&self.target)
                .map_err(crate::verify::Failure::usage)?,
            flush_every: self.flush_every.unwrap_or_default(),
            state_every: self.state_every,
            mode,
            open: self
                .open
                .open_options(mode != Mode::Check, self.force, self.size),
            offset: self.offset,
            length: self.length,
            limits: Limits {
                duration: self.duration,
                bytes: self.bytes,
                verified_percent: self.verified_percent,
                max_io_errors: self.max_io_errors,
            },
            passes: self.passes,
            workers: self.workers as usize,
            queue_depth: self.queue_depth as usize,
            io_size: self.io_size,
            max_blocks: self.max_blocks,
            mix: self.mix,
            seed: self.seed,
            generation: self.generation,
            state_out: self.state_out.clone(),
            state_in: self.state_in.clone(),
            json: self.json.clone(),
            target_metrics: None,
            progress: self.progress,
            interval: self
                .progress_interval
                .clamp(Duration::from_millis(100), Duration::from_secs(3600)),
            show: self.show,
            print_header: true,
            interruptible: true,
        })
    }
}

/// Runs `iesp-test verify`: checks the output paths, resolves the seed,
/// runs, prints the summary (stdout, or stderr when `--json -`), and
/// returns an error with its exit code (see [`crate::exit::Coded`])
/// unless everything matched.
pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let coded = |f: crate::verify::Failure| crate::exit::Coded {
        code: f.code,
        error: f.error,
    };
    crate::output::check_outputs(&[
        ("--json", args.json.as_deref()),
        ("--state-out", args.state_out.as_deref()),
    ])
    .map_err(crate::exit::usage)?;
    if let Some(p) = &args.state_out
        && p.as_os_str() != "-"
        && p.exists()
        && !args.force
    {
        return Err(crate::exit::usage(format!(
            "--state-out {} exists: a state file of an earlier run would be replaced (give --force, or another path)",
            p.display()
        )));
    }
    let mut opts = args.options().map_err(coded)?;
    if opts.mode != Mode::Check {
        // A check takes its seed from the block headers when not given.
        opts.seed = Some(iesp_cli::seed::resolve(opts.seed, "iesp-test verify"));
    }
    opts.target_metrics = args
        .target_metrics
        .start()
        .map_err(|e| crate::exit::io(anyhow::anyhow!(e)))?;
    let summary = crate::verify::run(&opts).await.map_err(coded)?;
    crate::output::say_str(&summary.render(opts.show));
    if let Some(r) = &summary.target_metrics {
        crate::output::say_str(&r.render());
    }
    match summary.exit_code {
        exit::PASS => Ok(()),
        code => Err(crate::exit::Coded {
            code,
            error: anyhow::anyhow!(match code {
                exit::MISMATCH => format!("verify: {} mismatching blocks", summary.mismatch_count),
                crate::exit::SIGINT | crate::exit::SIGTERM => format!(
                    "verify: {}",
                    summary.stopped_by.as_deref().unwrap_or("interrupted")
                ),
                _ => format!("verify: {} I/O errors", summary.io_error_count),
            }),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("50"), Ok(50.0));
        assert_eq!(parse_percent("99.5%"), Ok(99.5));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("101").is_err());
    }
}
