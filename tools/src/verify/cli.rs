//! The `verify` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::device::OpenOptions;
use crate::output::ProgressMode;
use crate::verify::engine::Limits;
use crate::verify::random::Mix;
use crate::verify::{Mode, Options, exit};

/// `--help` text after the options.
const AFTER_HELP: &str = "\
TARGET is a regular file, a local block device (/dev/sdX) or an iSCSI URL
(iscsi://[user[%password]@]host[:port]/target-iqn/lun). Writing needs --write;
the target is refused if it is mounted, in use, or carries a partition table
or file system signature, unless --force.

Exit codes:
  0  every block compared matched
  1  mismatch: at least one block differed from what was written
  2  usage error (bad options, or options that do not fit the target)
  3  I/O error: an open, login, read, write or flush failed (no mismatch)
  4  refused: the target looks in use or holds data (see --force)

Examples:
  iesp-test verify --write --size 1G /tmp/disk.img
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
    /// Write even if the target is mounted, in use or holds a signature.
    #[arg(long)]
    pub force: bool,
    /// Start of the tested range (bytes: 4096, 64M, 1G).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub offset: u64,
    /// Length of the tested range (default: to the end).
    #[arg(long, value_parser = parse_size)]
    pub length: Option<u64>,
    /// Stop writing after this long (30s, 5m, 1h); what was written is
    /// still verified.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after writing this many bytes (reading, with --check); commands
    /// already in flight complete.
    #[arg(long, value_parser = parse_size)]
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
    /// Commands each worker keeps in flight.
    #[arg(short, long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub queue_depth: u32,
    /// Bytes per command.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub io_size: u64,
    /// Random mode: the largest range, in blocks.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_blocks: u32,
    /// Random mode: weights of unique writes, duplicate-content writes and
    /// trims.
    #[arg(long, default_value = "unique=80,duplicate=10,trim=10")]
    pub mix: Mix,
    /// Seed of the data (random when not given; printed first). The same
    /// seed writes the same image.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sequential: generation of the first pass (default 1). Check: the
    /// generation expected (default: from the first block header).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=(1 << 29) - 1))]
    pub generation: Option<u64>,
    /// Save what every block should now hold, for a later --check
    /// --state-in.
    #[arg(long, conflicts_with = "check")]
    pub state_out: Option<PathBuf>,
    /// With --check: expect what this state file says.
    #[arg(long, requires = "check")]
    pub state_in: Option<PathBuf>,
    /// Write the report as JSON to FILE (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Block size of a regular file (default 4096); devices and LUNs
    /// report their own.
    #[arg(long, value_parser = parse_block_size)]
    pub block_size: Option<u32>,
    /// Create a missing regular file of this size.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Use the page cache instead of O_DIRECT for local targets.
    #[arg(long)]
    pub buffered: bool,
    /// iSCSI initiator name.
    #[arg(long, default_value = crate::device::DEFAULT_INITIATOR)]
    pub initiator_name: String,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = 5.0)]
    pub progress_interval: f64,
    /// Mismatches shown in detail.
    #[arg(long, default_value_t = 10)]
    pub show: usize,
    /// Give up after this many I/O errors.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_io_errors: u64,
}

fn parse_size(s: &str) -> Result<u64, String> {
    iesp_target::config::parse_size(s)
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    iesp_target::config::parse_block_size(s)
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

/// `90`, `90s`, `1.5s`, `500ms`, `5m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 5m, 1h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in `{s}` (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{s}` is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
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
            target: self.target.clone(),
            mode,
            open: OpenOptions {
                write: mode != Mode::Check,
                force: self.force,
                file_block_size: self.block_size,
                create_size: self.size,
                direct: !self.buffered,
                initiator_name: self.initiator_name.clone(),
            },
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
            progress: self.progress,
            interval: Duration::from_secs_f64(self.progress_interval.clamp(0.1, 3600.0)),
            show: self.show,
            print_header: true,
            interruptible: true,
        })
    }
}

/// Runs `iesp-test verify`: the summary on stdout, an error (with its exit
/// code, see [`crate::exit::Coded`]) unless everything matched.
pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let coded = |f: crate::verify::Failure| crate::exit::Coded {
        code: f.code,
        error: f.error,
    };
    let opts = args.options().map_err(coded)?;
    let summary = crate::verify::run(&opts).await.map_err(coded)?;
    print!("{}", summary.render(opts.show));
    match summary.exit_code {
        exit::PASS => Ok(()),
        code => Err(crate::exit::Coded {
            code,
            error: anyhow::anyhow!(match code {
                exit::MISMATCH => format!("verify: {} mismatching blocks", summary.mismatch_count),
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
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("50"), Ok(50.0));
        assert_eq!(parse_percent("99.5%"), Ok(99.5));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("101").is_err());
    }
}
