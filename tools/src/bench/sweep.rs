//! The points of a sweep and how each one runs.
//!
//! Points are every block size × queue depth (or, with `--matrix`, every
//! block size × jobs count at queue depth 1), and for each point every
//! target in turn — alternating which goes first from one point to the
//! next, so that `--compare` ratios are not biased by the order.
//!
//! A point runs `jobs` engines at once, `qd` commands in flight each:
//! each job on its own OS thread with its own current-thread runtime and
//! its own session (a named target is opened by each thread: so a matrix
//! job is a synchronous reader, as in block-speed-randread.py); or, with
//! `--shared-runtime`, on the sessions opened for the run, all on the
//! command's multi-thread runtime. The thread per job is the default
//! because a session's reader task and the engine's slots then share one
//! thread: a batch of completions is delivered, resubmitted and written
//! without waking another worker, which on the multi-thread runtime cost
//! more client CPU per command than the target spent (README, issue 16).
//! The first `--ramp` is not recorded; the point then records for
//! `--runtime`. Client CPU time is the process's
//! (getrusage(RUSAGE_SELF), user + system)
//! over the recorded time — so a target embedded in the same process (the
//! tests) counts too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iesp_blockio::{AnyDevice, Device};
use iesp_plots::data::{BenchBody, Point, PointMeta, Worker};

use super::workload::{BenchWorkload, Plan};
use super::{Failure, Options, Source, Target, report};

/// One point of the sweep, before it is run on a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointSpec {
    pub bs: u64,
    pub qd: u32,
    pub jobs: u32,
    /// Thread per job.
    pub threads: bool,
    /// `--matrix`.
    pub sync: bool,
}

/// The points of `opts`, in order.
pub fn points(opts: &Options) -> Vec<PointSpec> {
    let mut v = Vec::new();
    for &bs in &opts.bss {
        match &opts.matrix_jobs {
            Some(jobs) => v.extend(jobs.iter().map(|&j| PointSpec {
                bs,
                qd: 1,
                jobs: j.max(1),
                threads: true,
                sync: true,
            })),
            None => v.extend(opts.qds.iter().map(|&qd| PointSpec {
                bs,
                qd,
                jobs: opts.sessions.max(1),
                threads: opts.threads,
                sync: false,
            })),
        }
    }
    v
}

/// This worker's share of `blocks` in commands of `per_io` blocks:
/// `(first LBA, commands)`.
pub fn share(blocks: u64, per_io: u64, worker: Option<Worker>) -> (u64, u64) {
    let chunks = blocks / per_io.max(1);
    let (i, n) = worker.map_or((0, 1), |w| (u64::from(w.index), u64::from(w.count.max(1))));
    let lo = chunks * i / n;
    let hi = chunks * (i + 1) / n;
    (lo * per_io, hi - lo)
}

/// The process's CPU time so far (user + system), seconds.
///
/// getrusage(RUSAGE_SELF), a plain system call: rustix's vDSO
/// clock_gettime cannot start under valgrind, which profiles this path.
pub fn cpu_time() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0.0;
    };
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// Runs every point on every target.
pub async fn run(opts: &Options, targets: &[Target]) -> Result<BenchBody, Failure> {
    let floor = if opts.floor {
        let t = opts
            .runtime
            .clamp(Duration::from_millis(200), Duration::from_secs(2));
        Some(
            tokio::task::spawn_blocking(move || super::floor::ping_pong(t))
                .await
                .map_err(|e| Failure::io(anyhow::anyhow!("--floor: {e}")))?
                .map_err(|e| Failure::io(anyhow::anyhow!("--floor: loopback ping-pong: {e}")))?,
        )
    } else {
        None
    };
    let specs = points(opts);
    let bar = report::progress(opts.progress, (specs.len() * targets.len()) as u64);
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let order: Vec<&Target> = if i % 2 == 0 {
            targets.iter().collect()
        } else {
            targets.iter().rev().collect()
        };
        let mut here = Vec::new();
        for t in order {
            if crate::signal::received().is_some() {
                break;
            }
            if let Some(b) = &bar {
                b.set_message(format!(
                    "{} bs {} qd {} jobs {}",
                    t.label,
                    iesp_plots::render::bs_name(spec.bs),
                    spec.qd,
                    spec.jobs
                ));
            }
            let seed = opts.seed ^ (i as u64).wrapping_mul(0x9e37_79b9);
            here.push(run_point(opts, t, spec, seed).await?);
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
        // Points in target order, whichever ran first.
        here.sort_by_key(|p| targets.iter().position(|t| t.label == p.target));
        out.extend(here);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let ratios = report::ratios(&out, targets.first().map(|t| t.label.as_str()));
    Ok(BenchBody {
        targets: targets
            .iter()
            .map(|t| super::target_info(&t.info))
            .collect(),
        rw: opts.rw.name().to_owned(),
        rwmix_read: opts.rwmix_read,
        runtime_s: opts.runtime.as_secs_f64(),
        ramp_s: opts.ramp.as_secs_f64(),
        worker: opts.worker,
        floor,
        points: out,
        ratios,
        merged_from: Vec::new(),
    })
}

/// The plan of one point on `t`, recording from `start + ramp`.
fn plan(opts: &Options, t: &Target, spec: &PointSpec, seed: u64, start: Instant) -> Plan {
    let lbs = u64::from(t.info.block_size.max(1));
    let per_io = spec.bs / lbs;
    let (first_lba, chunks) = share(t.info.blocks, per_io, opts.worker);
    Plan {
        rw: opts.rw,
        rwmix_read: opts.rwmix_read,
        bs: spec.bs,
        align: t.info.align.max(1),
        first_lba,
        chunks: chunks.max(1),
        blocks_per_io: per_io,
        seed,
        measure_from: start + opts.ramp,
        deadline: start + opts.ramp + opts.runtime,
    }
}

/// Runs one point on one target.
pub async fn run_point(
    opts: &Options,
    t: &Target,
    spec: &PointSpec,
    seed: u64,
) -> Result<Point, Failure> {
    let meta = PointMeta {
        target: t.label.clone(),
        rw: opts.rw.name().to_owned(),
        bs: spec.bs,
        qd: spec.qd,
        jobs: spec.jobs,
        sync: spec.sync,
    };
    let (work, summaries) = if spec.threads {
        threaded(opts, t, spec, seed).await?
    } else {
        let work = Arc::new(BenchWorkload::new(plan(
            opts,
            t,
            spec,
            seed,
            Instant::now(),
        )));
        let cpu = cpu_probe(&work);
        let mut set = tokio::task::JoinSet::new();
        for j in 0..spec.jobs as usize {
            let dev = t.sessions[j % t.sessions.len()].clone();
            let w = work.clone();
            let qd = spec.qd as usize;
            set.spawn(async move { iesp_blockio::engine::run(dev, w, qd).await });
        }
        let cpu = cpu.await;
        let mut s = Vec::new();
        while let Some(r) = set.join_next().await {
            s.push(r.map_err(|e| Failure::io(anyhow::anyhow!("a job failed: {e}")))?);
        }
        (Arc::new((work, cpu)), s)
    };
    for s in &summaries {
        if let Some(p) = s.panics.first() {
            return Err(Failure::io(anyhow::anyhow!("a bench slot panicked: {p}")));
        }
    }
    let (work, (cpu, elapsed)) = &*work;
    let rec = work.take();
    Ok(rec.finish(meta, *elapsed, *cpu))
}

/// CPU seconds and wall seconds between the end of the ramp and the
/// deadline of `work` (or a signal, which stops the slots too).
fn cpu_probe(work: &Arc<BenchWorkload>) -> impl std::future::Future<Output = (f64, f64)> + use<> {
    let (from, to) = (work.plan().measure_from, work.plan().deadline);
    async move {
        tokio::select! {
            () = tokio::time::sleep_until(from.into()) => {}
            _ = crate::signal::wait() => return (0.0, 0.0),
        }
        let c0 = cpu_time();
        tokio::select! {
            () = tokio::time::sleep_until(to.into()) => {}
            _ = crate::signal::wait() => {}
        }
        (
            cpu_time() - c0,
            from.elapsed().as_secs_f64().min((to - from).as_secs_f64()),
        )
    }
}

type Threaded = (
    Arc<(Arc<BenchWorkload>, (f64, f64))>,
    Vec<iesp_blockio::engine::RunSummary>,
);

/// A point with one thread (and runtime, and session) per job.
async fn threaded(
    opts: &Options,
    t: &Target,
    spec: &PointSpec,
    seed: u64,
) -> Result<Threaded, Failure> {
    let jobs = spec.jobs as usize;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut go = Vec::new();
    let mut handles = Vec::new();
    for j in 0..jobs {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<Option<Arc<BenchWorkload>>>();
        go.push(go_tx);
        let ready = ready_tx.clone();
        let source = t.source.clone();
        let open = opts.open.clone();
        let qd = spec.qd as usize;
        handles.push(std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e.to_string()));
                    return None;
                }
            };
            rt.block_on(async move {
                let dev: Arc<AnyDevice> = match source {
                    Source::Named(name) => match AnyDevice::open(&name, &open).await {
                        Ok(d) => Arc::new(d),
                        Err(e) => {
                            let _ = ready.send(Err(e.to_string()));
                            return None;
                        }
                    },
                    Source::Shared(devs) => devs[j % devs.len()].clone(),
                };
                let _ = ready.send(Ok(()));
                let work = go_rx.recv().ok().flatten()?;
                let s = iesp_blockio::engine::run(dev.clone(), work, qd).await;
                if let Ok(d) = Arc::try_unwrap(dev) {
                    let _ = d.close().await;
                }
                Some(s)
            })
        }));
    }
    drop(ready_tx);
    let failed = tokio::task::spawn_blocking(move || {
        let mut failed = None;
        for _ in 0..jobs {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some("a job thread ended early".to_owned()),
            }
        }
        failed
    })
    .await
    .map_err(|e| Failure::io(anyhow::anyhow!("starting the job threads: {e}")))?;
    let work = failed.is_none().then(|| {
        Arc::new(BenchWorkload::new(plan(
            opts,
            t,
            spec,
            seed,
            Instant::now(),
        )))
    });
    for g in &go {
        let _ = g.send(work.clone());
    }
    let Some(work) = work else {
        for h in handles {
            let _ = h.join();
        }
        return Err(Failure::io(anyhow::anyhow!(
            "opening a job's session: {}",
            failed.unwrap_or_default()
        )));
    };
    let cpu = cpu_probe(&work).await;
    let summaries = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Failure::io(anyhow::anyhow!("joining the job threads: {e}")))?;
    Ok((Arc::new((work, cpu)), summaries))
}
