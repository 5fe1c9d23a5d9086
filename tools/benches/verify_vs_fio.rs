//! Is verify the bottleneck of what it tests? (Formerly the
//! `iesp-test bench-verify` subcommand: a benchmark, not a user tool, so it
//! lives here and the command links no peer-management code.)
//!
//! `cargo bench --profile release -p iesp-tools --bench verify_vs_fio`.
//! Knobs (environment): `IESP_BENCH_SIZE` (file size, default 1G),
//! `IESP_BENCH_IO_SIZE` (1M), `IESP_BENCH_QD` (8), `IESP_BENCH_ROUNDS` (3),
//! `IESP_BENCH_LUN_SIZE` (256M), `IESP_BENCH_SECONDS` (iscsi-perf seconds
//! per run, 5), `IESP_BENCH_DIR` (directory of the file), `IESP_BENCH_NO_ISCSI=1`,
//! `IESP_BENCH_JSON` (write the results there, `-` for stdout). A short run:
//! `IESP_BENCH_SIZE=64M IESP_BENCH_ROUNDS=1 IESP_BENCH_SECONDS=1`.
//!
//! Two comparisons, each measured side by side in one run (the machine is
//! shared and noisy: only ratios mean something):
//!
//! 1. **File**: on one file, verify's sequential full pass (write all,
//!    fdatasync, read all and compare) against fio writing then reading the
//!    same file sequentially with the same command size, queue depth and
//!    `O_DIRECT` (`--ioengine=libaio --direct=1`, `--end_fsync=1`). Both
//!    sides report write and read MiB/s; the figure compared is the
//!    write+read throughput (total bytes over total time). Goal: verify ≥
//!    80% of fio. Rounds alternate which side goes first; medians are
//!    reported.
//! 2. **iSCSI**: against the reference target embedded in this process (a
//!    RAM LUN), verify's sequential pass beside libiscsi's `iscsi-perf`
//!    (sequential READ(16), same command size and queue depth): verify's
//!    read MiB/s over iscsi-perf's.
//!
//! Timings are reported, never asserted: the machine is shared and noisy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use iesp_tools::device::OpenOptions;
use iesp_tools::output::{self, ProgressMode};
use iesp_tools::verify::{self, Mode, report::Outcome};

/// The output name in the JSON's envelope `schema`.
pub const BENCH_OUTPUT: &str = "bench-verify";
/// The version in the JSON's envelope `schema` (1 had `format` fields).
pub const BENCH_VERSION: u32 = 2;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Size of the benchmark file.
    pub size: u64,
    /// Bytes per command (fio's --bs, iscsi-perf's -b in blocks).
    pub io_size: u64,
    /// Commands in flight (fio's --iodepth, iscsi-perf's -m).
    pub queue_depth: u32,
    /// Directory for the file (a file system with O_DIRECT).
    pub dir: Option<PathBuf>,
    /// Rounds per comparison; medians are reported.
    pub rounds: u32,
    /// Size of the RAM LUN for the iSCSI comparison.
    pub lun_size: u64,
    /// Seconds per iscsi-perf run.
    pub seconds: u32,
    /// Skip the iSCSI comparison.
    pub no_iscsi: bool,
    /// Write the results as JSON there (- for stdout).
    pub json: Option<PathBuf>,
}

impl BenchArgs {
    /// From the `IESP_BENCH_*` environment.
    fn from_env() -> anyhow::Result<BenchArgs> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        }
        let size = |name: &str, default: &str| -> anyhow::Result<u64> {
            let v = var(name).unwrap_or_else(|| default.to_owned());
            iesp_target::config::parse_size(&v).map_err(|e| anyhow::anyhow!("{name}={v}: {e}"))
        };
        let num = |name: &str, default: u32| -> anyhow::Result<u32> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| anyhow::anyhow!("{name}={v}: not a positive number")),
            }
        };
        Ok(BenchArgs {
            size: size("IESP_BENCH_SIZE", "1G")?,
            io_size: size("IESP_BENCH_IO_SIZE", "1M")?,
            queue_depth: num("IESP_BENCH_QD", 8)?,
            dir: var("IESP_BENCH_DIR").map(PathBuf::from),
            rounds: num("IESP_BENCH_ROUNDS", 3)?,
            lun_size: size("IESP_BENCH_LUN_SIZE", "256M")?,
            seconds: num("IESP_BENCH_SECONDS", 5)?,
            no_iscsi: var("IESP_BENCH_NO_ISCSI").is_some_and(|v| v != "0"),
            json: var("IESP_BENCH_JSON").map(PathBuf::from),
        })
    }
}

/// Write and read throughput of one side, MiB/s.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Throughput {
    pub write_mib_s: f64,
    pub read_mib_s: f64,
    /// Equal bytes written and read over the total time.
    pub write_read_mib_s: f64,
}

impl Throughput {
    fn new(write_mib_s: f64, read_mib_s: f64) -> Throughput {
        let combined = if write_mib_s > 0.0 && read_mib_s > 0.0 {
            2.0 / (1.0 / write_mib_s + 1.0 / read_mib_s)
        } else {
            0.0
        };
        Throughput {
            write_mib_s,
            read_mib_s,
            write_read_mib_s: combined,
        }
    }
}

/// The file comparison.
#[derive(Clone, Debug, Serialize)]
pub struct FileResult {
    pub path: String,
    pub size: u64,
    pub io_size: u64,
    pub queue_depth: u32,
    pub direct_io: bool,
    pub rounds: Vec<(Throughput, Throughput)>,
    pub fio: Throughput,
    pub verify: Throughput,
    /// verify's write+read throughput over fio's.
    pub ratio: f64,
}

/// The iSCSI comparison.
#[derive(Clone, Debug, Serialize)]
pub struct IscsiResult {
    pub lun_size: u64,
    pub io_size: u64,
    pub queue_depth: u32,
    pub iscsi_perf_read_mib_s: f64,
    pub verify: Throughput,
    /// verify's read MiB/s over iscsi-perf's.
    pub read_ratio: f64,
}

/// Everything measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub file: FileResult,
    pub iscsi: Option<IscsiResult>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_of(v: &[Throughput]) -> Throughput {
    Throughput::new(
        median(v.iter().map(|t| t.write_mib_s).collect()),
        median(v.iter().map(|t| t.read_mib_s).collect()),
    )
}

/// A sequential verify pass over `target`; its write and read MiB/s.
async fn verify_pass(
    target: &str,
    io_size: u64,
    queue_depth: u32,
    seed: u64,
) -> anyhow::Result<(Throughput, bool)> {
    let opts = verify::Options {
        target: target.to_owned(),
        mode: Mode::Sequential,
        // The file is ours and holds fio's data: no signature check.
        open: OpenOptions {
            write: true,
            force: true,
            ..OpenOptions::default()
        },
        seed: Some(seed),
        workers: 1,
        queue_depth: queue_depth as usize,
        io_size,
        progress: ProgressMode::Quiet,
        print_header: false,
        ..verify::Options::default()
    };
    let s = verify::run(&opts)
        .await
        .map_err(|f| f.error)
        .context("verify pass")?;
    if s.outcome != Outcome::Pass {
        bail!("the verify pass failed:\n{}", s.render(5));
    }
    Ok((
        Throughput::new(s.write_mib_s, s.read_mib_s),
        s.target.direct_io,
    ))
}

/// fio writing then reading `path` sequentially; MiB/s of each.
fn fio_pass(path: &Path, size: u64, io_size: u64, queue_depth: u32) -> anyhow::Result<Throughput> {
    let mut mib = [0.0; 2];
    for (i, rw) in ["write", "read"].iter().enumerate() {
        let args = [
            "--name=bench".to_owned(),
            format!("--filename={}", path.display()),
            format!("--rw={rw}"),
            format!("--bs={io_size}"),
            format!("--size={size}"),
            "--direct=1".to_owned(),
            "--ioengine=libaio".to_owned(),
            format!("--iodepth={queue_depth}"),
            "--end_fsync=1".to_owned(),
            "--output-format=json".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = iesp_testsupport::peers::run_tool("fio", &args, Duration::from_secs(3600))?
            .ensure_success()?;
        let j: serde_json::Value =
            serde_json::from_str(&out.stdout).context("fio's JSON output")?;
        let job = &j["jobs"][0][*rw];
        let bytes = job["io_bytes"].as_f64().unwrap_or(0.0);
        let ms = job["runtime"].as_f64().unwrap_or(0.0);
        if bytes <= 0.0 || ms <= 0.0 {
            bail!(
                "fio {rw}: no io_bytes/runtime in its output:\n{}",
                out.stdout
            );
        }
        mib[i] = bytes / (1u64 << 20) as f64 / (ms / 1000.0);
    }
    Ok(Throughput::new(mib[0], mib[1]))
}

async fn file_comparison(a: &BenchArgs) -> anyhow::Result<FileResult> {
    let dir = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let file = tempfile::Builder::new()
        .prefix("bench-verify-")
        .suffix(".img")
        .tempfile_in(&dir)?;
    file.as_file().set_len(a.size)?;
    let path = file.path().to_owned();
    let (size, io, qd) = (a.size, a.io_size, a.queue_depth);
    // Untimed warm-up: allocate the file's blocks once, for both sides.
    {
        let p = path.clone();
        tokio::task::spawn_blocking(move || fio_pass(&p, size, io, qd)).await??;
    }
    let mut rounds = Vec::new();
    let mut direct = true;
    for r in 0..a.rounds {
        let fio = |p: PathBuf| tokio::task::spawn_blocking(move || fio_pass(&p, size, io, qd));
        let target = path.display().to_string();
        let (f, v) = if r % 2 == 0 {
            let f = fio(path.clone()).await??;
            (f, verify_pass(&target, io, qd, u64::from(r) + 1).await?)
        } else {
            let v = verify_pass(&target, io, qd, u64::from(r) + 1).await?;
            (fio(path.clone()).await??, v)
        };
        direct &= v.1;
        eprintln!(
            "round {}: fio {:.0}/{:.0} MiB/s, verify {:.0}/{:.0} MiB/s (write/read)",
            r + 1,
            f.write_mib_s,
            f.read_mib_s,
            v.0.write_mib_s,
            v.0.read_mib_s
        );
        rounds.push((f, v.0));
    }
    let fio = median_of(&rounds.iter().map(|r| r.0).collect::<Vec<_>>());
    let verify = median_of(&rounds.iter().map(|r| r.1).collect::<Vec<_>>());
    let ratio = if fio.write_read_mib_s > 0.0 {
        verify.write_read_mib_s / fio.write_read_mib_s
    } else {
        0.0
    };
    Ok(FileResult {
        path: path.display().to_string(),
        size,
        io_size: io,
        queue_depth: qd,
        direct_io: direct,
        rounds,
        fio,
        verify,
        ratio,
    })
}

async fn iscsi_comparison(a: &BenchArgs) -> anyhow::Result<IscsiResult> {
    use iesp_testsupport::peers::libiscsi::{PerfOptions, iscsi_perf};
    const BS: u32 = 512;
    if a.io_size % u64::from(BS) != 0 {
        bail!("IESP_BENCH_IO_SIZE must be a multiple of 512 for the iSCSI comparison");
    }
    // The target gets its own runtime and threads, as a separate process
    // would have: on the shared one it would compete with verify's tasks
    // and not with iscsi-perf's.
    let target = SeparateTarget::start(a.lun_size, BS)?;
    let url = target.url.clone();
    let perf = PerfOptions {
        queue_depth: a.queue_depth,
        blocks: u32::try_from(a.io_size / u64::from(BS)).context("IESP_BENCH_IO_SIZE too large")?,
        seconds: a.seconds,
        random: false,
        initiator_name: Some("iqn.2026-11.org.iesp-test:bench-perf".into()),
    };
    let mut perfs = Vec::new();
    let mut verifies = Vec::new();
    for r in 0..a.rounds {
        let run_perf = || {
            let (url, perf) = (url.clone(), perf.clone());
            tokio::task::spawn_blocking(move || iscsi_perf(&url, &perf))
        };
        if r % 2 == 0 {
            perfs.push(run_perf().await??.mib_per_s);
            verifies.push(
                verify_pass(&url, a.io_size, a.queue_depth, u64::from(r) + 100)
                    .await?
                    .0,
            );
        } else {
            verifies.push(
                verify_pass(&url, a.io_size, a.queue_depth, u64::from(r) + 100)
                    .await?
                    .0,
            );
            perfs.push(run_perf().await??.mib_per_s);
        }
        eprintln!(
            "round {}: iscsi-perf read {:.0} MiB/s, verify {:.0}/{:.0} MiB/s (write/read)",
            r + 1,
            perfs[perfs.len() - 1],
            verifies[verifies.len() - 1].write_mib_s,
            verifies[verifies.len() - 1].read_mib_s
        );
    }
    target.stop()?;
    let perf_read = median(perfs);
    let verify = median_of(&verifies);
    Ok(IscsiResult {
        lun_size: a.lun_size,
        io_size: a.io_size,
        queue_depth: a.queue_depth,
        iscsi_perf_read_mib_s: perf_read,
        verify,
        read_ratio: if perf_read > 0.0 {
            verify.read_mib_s / perf_read
        } else {
            0.0
        },
    })
}

/// The reference target on its own tokio runtime in its own thread.
struct SeparateTarget {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl SeparateTarget {
    fn start(size: u64, block_size: u32) -> anyhow::Result<SeparateTarget> {
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let t = iesp_target::embedded::EmbeddedTarget::start_ram(size, block_size).await;
                let t = match t {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = url_tx.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                let _ = url_tx.send(Ok(t.url(0)));
                let _ = stopped.await;
                t.shutdown().await
            })
        });
        let url = url_rx
            .recv()
            .context("the target thread ended early")?
            .map_err(|e| anyhow::anyhow!("starting the target: {e}"))?;
        Ok(SeparateTarget {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("the target thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for SeparateTarget {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn main() -> std::process::ExitCode {
    // `cargo bench` passes --bench (and maybe a filter); nothing to parse.
    let result = BenchArgs::from_env().and_then(|a| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(a))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("verify_vs_fio: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark and prints the table.
async fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.io_size == 0 || a.size < a.io_size || a.size % a.io_size != 0 {
        bail!("IESP_BENCH_SIZE must be a non-zero multiple of IESP_BENCH_IO_SIZE");
    }
    println!(
        "verify_vs_fio: {} file, {} per command, queue depth {}, {} round(s)",
        output::bytes(a.size),
        output::bytes(a.io_size),
        a.queue_depth,
        a.rounds
    );
    let file = file_comparison(&a).await?;
    println!(
        "file {} ({})",
        file.path,
        if file.direct_io {
            "O_DIRECT"
        } else {
            "buffered"
        }
    );
    println!(
        "  {:<12} {:>12} {:>12} {:>18}",
        "", "write MiB/s", "read MiB/s", "write+read MiB/s"
    );
    for (name, t) in [("fio", file.fio), ("verify", file.verify)] {
        println!(
            "  {name:<12} {:>12.1} {:>12.1} {:>18.1}",
            t.write_mib_s, t.read_mib_s, t.write_read_mib_s
        );
    }
    println!("  verify / fio: {:.2} (goal: at least 0.80)", file.ratio);
    let iscsi = if a.no_iscsi {
        None
    } else {
        let r = iscsi_comparison(&a).await?;
        println!(
            "iSCSI, our target (RAM LUN of {}), same command size and queue depth",
            output::bytes(r.lun_size)
        );
        println!(
            "  iscsi-perf   read {:>10.1} MiB/s (sequential READ(16))",
            r.iscsi_perf_read_mib_s
        );
        println!(
            "  verify       read {:>10.1} MiB/s, write {:.1} MiB/s; read / iscsi-perf: {:.2}",
            r.verify.read_mib_s, r.verify.write_mib_s, r.read_ratio
        );
        Some(r)
    };
    if let Some(path) = &a.json {
        let result = BenchResult { file, iscsi };
        iesp_cli::envelope::Envelope::for_process(BENCH_OUTPUT, BENCH_VERSION, None)
            .write(path, &result)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
