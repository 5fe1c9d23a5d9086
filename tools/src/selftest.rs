//! `iesp-test selftest`: the whole stack against the embedded reference
//! target, in one command.
//!
//! Starts the target on an ephemeral loopback port, discovers it, logs in
//! with our initiator, writes a seeded pattern over the LUN and reads it
//! back at several queue depths, runs `verify` over it (sequential,
//! random with duplicate content, then a check of the random run's saved
//! state), and prints a short report. Each later capability (conformance,
//! …) adds its pass here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, ensure};
use bytes::Bytes;
use iesp_initiator::{LogicalUnit, LoginOptions, Session, discover};

use crate::pattern;
use iesp_target::embedded::EmbeddedTarget;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// LUN size in bytes.
    pub size: u64,
    pub block_size: u32,
    /// Queue depths to run the write/read pass at.
    pub queue_depths: Vec<usize>,
    /// Bytes per command.
    pub io_size: u32,
    pub seed: u64,
}

/// The initiator name selftest logs in with.
pub const INITIATOR: &str = "iqn.2026-11.org.iesp-test:selftest";

/// One write/read pass.
#[derive(Clone, Debug)]
pub struct Pass {
    pub queue_depth: usize,
    pub write_mib_s: f64,
    pub read_mib_s: f64,
}

/// Runs the selftest, printing as it goes; fails on the first problem.
pub async fn run(opts: &Options) -> anyhow::Result<Vec<Pass>> {
    if opts.io_size == 0 || opts.io_size % opts.block_size != 0 {
        return Err(crate::exit::usage(
            "--io-size must be a multiple of the block size",
        ));
    }
    if opts.size % u64::from(opts.io_size) != 0 {
        return Err(crate::exit::usage("--size must be a multiple of --io-size"));
    }
    println!("selftest: seed {}", opts.seed);
    let target = EmbeddedTarget::start_ram(opts.size, opts.block_size).await?;
    println!(
        "target:    {} on {} (RAM LUN, {} bytes, {}-byte blocks)",
        target.iqn, target.addr, opts.size, opts.block_size
    );

    let found = discover(target.addr, INITIATOR)
        .await
        .context("SendTargets discovery")?;
    ensure!(
        found.iter().any(|t| t.name == target.iqn),
        "discovery did not list {}",
        target.iqn
    );
    println!("discovery: ok ({} target)", found.len());

    let session = Session::login(target.addr, LoginOptions::new(INITIATOR, Some(&target.iqn)))
        .await
        .context("login")?;
    let p = session.params();
    println!(
        "login:     ok (ImmediateData={}, InitialR2T={}, MaxBurstLength={}, MaxRecvDataSegmentLength {}/{})",
        yes(p.immediate_data),
        yes(p.initial_r2t),
        p.max_burst_length,
        p.initiator_mrdsl,
        p.target_mrdsl
    );
    let lu = Arc::new(session.logical_unit(0).await.context("opening LUN 0")?);
    ensure!(
        lu.capacity() == opts.size && lu.block_size() == opts.block_size,
        "READ CAPACITY says {} blocks of {} bytes, expected {} bytes in {}-byte blocks",
        lu.blocks(),
        lu.block_size(),
        opts.size,
        opts.block_size
    );

    let mut passes = Vec::new();
    for (i, &qd) in opts.queue_depths.iter().enumerate() {
        // A different pattern per pass, so a pass cannot succeed on the
        // previous pass's data.
        let seed = opts.seed.wrapping_add(i as u64);
        let t = Instant::now();
        transfer(&lu, qd, opts, seed, true).await?;
        let w = t.elapsed();
        let t = Instant::now();
        transfer(&lu, qd, opts, seed, false).await?;
        let r = t.elapsed();
        let mib = opts.size as f64 / (1 << 20) as f64;
        let pass = Pass {
            queue_depth: qd,
            write_mib_s: mib / w.as_secs_f64(),
            read_mib_s: mib / r.as_secs_f64(),
        };
        println!(
            "qd {:>3}:    wrote {mib:.0} MiB at {:.0} MiB/s, read back at {:.0} MiB/s, identical",
            pass.queue_depth, pass.write_mib_s, pass.read_mib_s
        );
        passes.push(pass);
    }
    session.logout().await.context("logout")?;
    verify_passes(&target, opts).await?;
    conformance(&target).await?;
    target.shutdown().await?;
    println!("selftest: PASS");
    Ok(passes)
}

/// `iesp-test verify` against the LUN: a sequential pass, a random pass
/// with duplicate content, and a read-only check of the random pass's
/// state, each in its own session.
async fn verify_passes(target: &EmbeddedTarget, opts: &Options) -> anyhow::Result<()> {
    use crate::output::ProgressMode;
    use crate::verify::{self, Mode, report::Outcome};
    let dir = tempfile::tempdir().context("temporary directory for the state file")?;
    let state = dir.path().join("state.json");
    let base = verify::Options {
        target: target.url(0),
        open: crate::device::OpenOptions {
            write: true,
            initiator_name: INITIATOR.to_owned(),
            ..Default::default()
        },
        seed: Some(opts.seed),
        queue_depth: 16,
        io_size: u64::from(opts.io_size),
        progress: ProgressMode::Quiet,
        print_header: false,
        ..verify::Options::default()
    };
    let runs = [
        (
            "sequential",
            verify::Options {
                mode: Mode::Sequential,
                ..base.clone()
            },
        ),
        (
            "random",
            verify::Options {
                mode: Mode::Random,
                workers: 4,
                queue_depth: 4,
                limits: verify::engine::Limits {
                    verified_percent: Some(50.0),
                    duration: Some(std::time::Duration::from_secs(20)),
                    max_io_errors: 1,
                    ..Default::default()
                },
                state_out: Some(state.clone()),
                ..base.clone()
            },
        ),
        (
            "check",
            verify::Options {
                mode: Mode::Check,
                state_in: Some(state.clone()),
                ..base.clone()
            },
        ),
    ];
    for (name, o) in runs {
        let s = verify::run(&o)
            .await
            .map_err(|f| f.error)
            .with_context(|| format!("verify {name}"))?;
        println!(
            "verify:    {name:<10} {} written, {} read, {} blocks verified ({:.0}% of the LUN), {} mismatches",
            crate::output::bytes(s.bytes_written),
            crate::output::bytes(s.bytes_read),
            s.blocks_verified,
            s.verified_percent,
            s.mismatch_count
        );
        if s.outcome != Outcome::Pass {
            return Err(crate::exit::failed(anyhow::anyhow!(
                "verify {name}: {}",
                s.render(5)
            )));
        }
    }
    Ok(())
}

/// The conformance suite against the same target, every profile,
/// compared with the reference target's committed baseline.
async fn conformance(target: &EmbeddedTarget) -> anyhow::Result<()> {
    use iesp_testsuite::conformance::{
        OutcomeKind, RunOptions, Suite, TargetSpec, baseline, runner,
    };
    let suite = Suite::builtin()?;
    let plan = runner::plan(&suite, &[], &[], None).map_err(anyhow::Error::msg)?;
    let mut opts = RunOptions::new(TargetSpec {
        addr: target.addr,
        target_name: target.iqn.clone(),
        lun: Some(0),
        initiator_name: INITIATOR.to_owned(),
        chap: None,
        mutual_chap: None,
    });
    opts.dataloss = true;
    let report = runner::run(&suite, &plan, &opts, &mut runner::Quiet).await;
    let expected = baseline::Baseline::parse("the reference baseline", baseline::REFERENCE)?;
    let cmp = baseline::compare(&report.results, &expected);
    println!(
        "conformance: {} case instances, {} pass, {} fail, {} skip in {:.1} s; {} unexpected against the baseline",
        report.results.len(),
        report.count(OutcomeKind::Pass),
        report.count(OutcomeKind::Fail),
        report.count(OutcomeKind::Skip),
        report.duration.as_secs_f64(),
        cmp.unexpected().count()
    );
    if !cmp.ok() {
        return Err(crate::exit::failed(anyhow::anyhow!(
            "conformance run differs from the reference baseline:\n{}",
            cmp.describe()
        )));
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

/// Writes (or reads and compares) the whole LUN with `qd` commands in flight.
async fn transfer(
    lu: &Arc<LogicalUnit>,
    qd: usize,
    opts: &Options,
    seed: u64,
    write: bool,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let chunks = opts.size / u64::from(opts.io_size);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..qd.max(1) {
        let (lu, next) = (lu.clone(), next.clone());
        let (io, bs) = (opts.io_size, opts.block_size);
        workers.spawn(async move {
            loop {
                let chunk = next.fetch_add(1, Ordering::Relaxed);
                if chunk >= chunks {
                    return Ok::<(), anyhow::Error>(());
                }
                let offset = chunk * u64::from(io);
                let lba = offset / u64::from(bs);
                if write {
                    let data = Bytes::from(pattern::generate(seed, offset, io as usize));
                    lu.write(lba, data).await.with_context(|| format!("WRITE at LBA {lba}"))?;
                } else {
                    let data = lu.read(lba, io / bs).await.with_context(|| format!("READ at LBA {lba}"))?;
                    if let Some(at) = pattern::first_mismatch(seed, offset, &data) {
                        return Err(crate::exit::failed(anyhow::anyhow!("data mismatch at byte {at} (LBA {}): read back differs from what was written", at / u64::from(bs))));
                    }
                }
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.context("worker panicked")??;
    }
    Ok(())
}
