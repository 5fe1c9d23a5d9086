//! The `bench` command line: `iesp-test bench TARGET [flags]` and
//! `iesp-test bench merge A.json B.json …`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use iesp_cli::units;
use iesp_plots::data::{BENCH_OUTPUT, BENCH_VERSION, BenchBody, Worker};

use super::{Failure, Options, Rw};
use crate::device::OpenOptions;
use crate::target_args::TargetArgs;

const AFTER_HELP: &str = "\
TARGET is a regular file, a local block device (/dev/sdX) or an iSCSI URL
(iscsi://[user[%password]@]host[:port]/target-iqn/lun). Local targets use
O_DIRECT; their queue depth is real: each command is a pread/pwrite on its
own thread of tokio's blocking pool. Random reads by default; writes
(--rw randwrite|write|randrw) need --write, and --force for a target that
looks in use or holds data (a signature, or blocks iesp-test did not write).

Each point (block size × queue depth, or with --matrix block size × jobs of
synchronous readers) runs for --ramp unrecorded, then --runtime recorded.
--compare runs the same sweep against more targets, alternating which goes
first, and prints each one's IOPS and p99 over TARGET's. The table goes to
stdout (stderr when an output is -); a progress bar to stderr when it is a
terminal.

Exit status:
  0    the sweep ran
  2    usage error: bad flags, a block size that is not a multiple of the
       target's block size, an output that cannot be written
  3    I/O or connection error
  130  interrupted (SIGINT): the points so far are reported
  143  terminated (SIGTERM)

Examples:
  iesp-test bench --qd 1,2,4,8,16,32 --json r.json iscsi://127.0.0.1/iqn.2026-11.org.iesp-test:target0/0
  iesp-test bench --bs 4k,64k,1M --qd 32 --csv - /dev/nvme0n1
  iesp-test bench --matrix --bs 512,4k,64k --jobs 1,2,4,8 --dat old.dat /dev/sdb
  iesp-test bench --qd 32 --floor URL --compare URL2
  iesp-test bench merge host1.json host2.json --json all.json";

/// `iesp-test bench`.
#[derive(Args, Debug, Clone)]
#[command(
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct BenchCommand {
    #[command(subcommand)]
    pub sub: Option<BenchSub>,
    #[command(flatten)]
    pub run: BenchArgs,
}

/// `bench`'s subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum BenchSub {
    /// Merge bench JSON reports of several hosts (--worker I/N runs) into
    /// one: histograms add, so percentiles are those of all commands. The
    /// same run twice, the same worker share twice, or runs of different
    /// sweeps (targets, rw, block sizes, queue depths, jobs, runtime…) are
    /// refused (exit 2).
    Merge(MergeArgs),
}

/// `iesp-test bench merge`.
#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// The bench JSON reports.
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Write the merged report as JSON to FILE (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the merged per-second rows as CSV to FILE (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write `bs threads IOPS` lines to FILE (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub dat: Option<PathBuf>,
}

/// `--worker I/N`.
fn parse_worker(s: &str) -> Result<Worker, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: expected I/N, e.g. 0/2"))?;
    let index: u32 = i
        .trim()
        .parse()
        .map_err(|_| format!("`{i}` is not a number"))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{n}` is not a number"))?;
    if count == 0 || index >= count {
        return Err(format!("{index}/{count}: I must be below N (0-based)"));
    }
    Ok(Worker { index, count })
}

/// `--rwmix`: a percentage of reads.
fn parse_mix(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage"))?;
    if v <= 100 {
        Ok(v)
    } else {
        Err(format!("{v} is not in 0..=100"))
    }
}

/// Arguments of a bench run.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The file, block device or iscsi:// URL to measure.
    pub target: Option<String>,
    /// Run the same sweep against these targets too, alternately with
    /// TARGET, and report ratios to TARGET's figures.
    #[arg(long, value_name = "TARGET", num_args = 1.., action = clap::ArgAction::Append)]
    pub compare: Vec<String>,
    /// What the commands are.
    #[arg(long, value_enum, default_value = "randread")]
    pub rw: Rw,
    /// Percentage of reads under --rw randrw.
    #[arg(long, default_value = "50", value_parser = parse_mix)]
    pub rwmix: u32,
    /// Allow writing to the targets (their contents are destroyed).
    #[arg(long)]
    pub write: bool,
    /// Write even if a target is mounted, in use or holds data.
    #[arg(long)]
    pub force: bool,
    /// Queue depths (per job), comma-separated.
    #[arg(long = "qd", alias = "queue-depth", default_value = "1,2,4,8,16,32", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub qd: Vec<u32>,
    /// Bytes per command, comma-separated (512, 4k, 1M); each a multiple
    /// of the target's block size.
    #[arg(long, default_value = "4k", value_delimiter = ',', value_parser = units::parse_size_nonzero)]
    pub bs: Vec<u64>,
    /// Connections per target, each with --qd in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub sessions: u32,
    /// Run every session on the command's multi-thread runtime instead of
    /// each on its own thread with a current-thread runtime (the default).
    #[arg(long, conflicts_with = "matrix")]
    pub shared_runtime: bool,
    /// Each session on its own thread and runtime: the default, kept for
    /// older scripts.
    #[arg(long, hide = true, conflicts_with = "shared_runtime")]
    pub threads: bool,
    /// The old block-speed-randread.py shape: block size × jobs, each job a
    /// synchronous reader (QD 1) on its own thread and session.
    #[arg(long)]
    pub matrix: bool,
    /// Jobs counts of --matrix, comma-separated.
    #[arg(long, default_value = "1,2,4,8,16,32", value_delimiter = ',', requires = "matrix",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Vec<u32>,
    /// Recorded time per point.
    #[arg(long, default_value = "5s", value_parser = units::parse_duration_nonzero)]
    pub runtime: Duration,
    /// Unrecorded warm-up per point.
    #[arg(long, default_value = "0s", value_parser = units::parse_duration)]
    pub ramp: Duration,
    /// Also measure the bare-TCP ping-pong bound over loopback (QD 1's
    /// limit on this machine) in the same run.
    #[arg(long)]
    pub floor: bool,
    /// iSCSI: busy-poll, microseconds (0 to 1000) each session's reader
    /// spins on its socket before sleeping for the target's answer. Lower
    /// latency at QD 1; costs CPU: a session at QD 1 keeps about one core
    /// busy. 0 (the default) is off.
    #[arg(long, value_name = "US", default_value = "0", value_parser = parse_poll_us)]
    pub poll_us: u32,
    /// This run's share of the LBA space, I of N (0-based), for runs on
    /// several hosts merged with `bench merge`.
    #[arg(long, value_name = "I/N", value_parser = parse_worker)]
    pub worker: Option<Worker>,
    /// Write the report as JSON to FILE (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write per-second rows as CSV to FILE (- for stdout), fio's log
    /// columns first.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write `bs<TAB>threads<TAB>IOPS` lines (plot.sh's .dat) to FILE (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub dat: Option<PathBuf>,
    /// Seed of the offsets (from the OS when not given; printed first).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How TARGET is opened.
    #[command(flatten)]
    pub open: TargetArgs,
    /// The target's own counters before and after.
    #[command(flatten)]
    pub target_metrics: crate::target_metrics::TargetMetricsArgs,
}

impl BenchArgs {
    /// The options these arguments stand for (seed resolved by the caller).
    pub fn options(&self, seed: u64, progress: bool) -> Result<Options, Failure> {
        let target = self
            .target
            .clone()
            .ok_or_else(|| Failure::usage("bench: TARGET is required"))?;
        Ok(Options {
            targets: std::iter::once(&target)
                .chain(&self.compare)
                .map(|t| self.open.target(t).map_err(Failure::usage))
                .collect::<Result<_, _>>()?,
            open: OpenOptions {
                poll_us: self.poll_us,
                ..self.open.open_options(self.write, self.force, None)
            },
            rw: self.rw,
            rwmix_read: self.rwmix,
            qds: if self.matrix {
                vec![1]
            } else {
                self.qd.clone()
            },
            bss: self.bs.clone(),
            sessions: self.sessions,
            threads: !self.shared_runtime,
            matrix_jobs: self.matrix.then(|| self.jobs.clone()),
            runtime: self.runtime,
            ramp: self.ramp,
            floor: self.floor,
            worker: self.worker,
            seed,
            progress,
        })
    }
}

/// A busy-poll budget: 0 to [`iesp_initiator::session::MAX_POLL_US`] µs.
fn parse_poll_us(s: &str) -> Result<u32, String> {
    let max = iesp_initiator::session::MAX_POLL_US;
    match s.parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of microseconds from 0 to {max}"
        )),
    }
}

fn coded(f: Failure) -> anyhow::Error {
    crate::exit::Coded {
        code: f.code,
        error: f.error,
    }
    .into()
}

/// Writes the JSON, CSV and .dat outputs that were asked for.
fn write_outputs(
    body: &BenchBody,
    target_metrics: Option<&crate::target_metrics::TargetMetricsReport>,
    envelope: &iesp_cli::envelope::Envelope,
    json: Option<&Path>,
    csv: Option<&Path>,
    dat: Option<&Path>,
) -> anyhow::Result<()> {
    let io = |flag: &str, p: &Path, e: std::io::Error| {
        crate::exit::io(anyhow::anyhow!("{flag} {}: {e}", p.display()))
    };
    if let Some(p) = json {
        match target_metrics {
            None => envelope.write(p, body),
            // The body's fields, then `target_metrics`.
            Some(t) => serde_json::to_value(body)
                .and_then(|mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("target_metrics".to_owned(), serde_json::to_value(t)?);
                    }
                    Ok(v)
                })
                .map_err(std::io::Error::other)
                .and_then(|v| envelope.write(p, &v)),
        }
        .map_err(|e| io("--json", p, e))?;
    }
    if let Some(p) = csv {
        crate::output::write_output(p, super::report::csv(body).as_bytes())
            .map_err(|e| io("--csv", p, e))?;
    }
    if let Some(p) = dat {
        crate::output::write_output(p, super::report::dat(body).as_bytes())
            .map_err(|e| io("--dat", p, e))?;
    }
    Ok(())
}

/// Runs `iesp-test bench`.
pub async fn run(cmd: BenchCommand, quiet: bool) -> anyhow::Result<()> {
    if let Some(BenchSub::Merge(m)) = cmd.sub {
        return merge(m);
    }
    let a = cmd.run;
    crate::output::check_outputs(&[
        ("--json", a.json.as_deref()),
        ("--csv", a.csv.as_deref()),
        ("--dat", a.dat.as_deref()),
    ])
    .map_err(crate::exit::usage)?;
    let seed = iesp_cli::seed::resolve(a.seed, "iesp-test bench");
    let opts = a.options(seed, !quiet).map_err(coded)?;
    super::check_options(&opts).map_err(coded)?;
    crate::output::say(format_args!("bench: seed {seed}"));
    let envelope =
        iesp_cli::envelope::Envelope::for_process(BENCH_OUTPUT, BENCH_VERSION, Some(seed));
    let recorder = a
        .target_metrics
        .start()
        .map_err(|e| crate::exit::io(anyhow::anyhow!(e)))?;
    let body = super::run(&opts).await.map_err(coded)?;
    let interrupted = crate::signal::received().is_some();
    let target_metrics = recorder
        .as_ref()
        .map(crate::target_metrics::Recorder::finish);
    write_outputs(
        &body,
        target_metrics.as_ref(),
        &envelope.interrupted(interrupted),
        a.json.as_deref(),
        a.csv.as_deref(),
        a.dat.as_deref(),
    )?;
    crate::output::say_str(&super::report::table(&body));
    if let Some(r) = &target_metrics {
        crate::output::say_str(&r.render());
    }
    Ok(())
}

/// Runs `iesp-test bench merge`.
fn merge(m: MergeArgs) -> anyhow::Result<()> {
    crate::output::check_outputs(&[
        ("--json", m.json.as_deref()),
        ("--csv", m.csv.as_deref()),
        ("--dat", m.dat.as_deref()),
    ])
    .map_err(crate::exit::usage)?;
    let mut reports = Vec::new();
    for p in &m.inputs {
        reports.push(super::merge::read_report(p).map_err(coded)?);
    }
    super::merge::check(&reports).map_err(coded)?;
    let inputs: Vec<_> = reports.into_iter().map(|r| (r.path, r.body)).collect();
    let body = super::merge::merge(&inputs).map_err(coded)?;
    let envelope = iesp_cli::envelope::Envelope::for_process(BENCH_OUTPUT, BENCH_VERSION, None);
    write_outputs(
        &body,
        None,
        &envelope,
        m.json.as_deref(),
        m.csv.as_deref(),
        m.dat.as_deref(),
    )?;
    crate::output::say_str(&super::report::table(&body));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_and_mixes() {
        assert_eq!(parse_worker("1/4"), Ok(Worker { index: 1, count: 4 }));
        assert!(parse_worker("4/4").is_err());
        assert!(parse_worker("0/0").is_err());
        assert!(parse_worker("2").is_err());
        assert_eq!(parse_mix("70%"), Ok(70));
        assert!(parse_mix("101").is_err());
    }
}
