//! `iesp-test conformance URL`: the protocol-level conformance suite
//! against any target (the suite itself is `iesp_testsuite::conformance`).
//!
//! Exit status ([`iesp_cli::exit`]): 0 when the run has no fail and no
//! error — or, with `--baseline`, when it matches the baseline (see
//! [`iesp_testsuite::conformance::baseline`]); 1 otherwise; 2 for a
//! command-line mistake (including a bad output path, checked before the
//! first connection); 3 when the target cannot be reached; 130/143 on
//! SIGINT/SIGTERM, after the reports of the cases run so far are written
//! marked interrupted.
//!
//! Streams: live progress and the summary go to stdout, unless an output
//! flag is `-`: then stdout holds only that report and the rest goes to
//! stderr.
//!
//! Before the first case a preflight ([`runner::preflight`]) connects
//! (within `--connect-timeout`), asks SendTargets, logs in to the named
//! target and finds the LUN: an unreachable target, a wrong IQN or a
//! missing LUN is one line and exit 3, not a suite of erroring cases.
//! When the target stops answering mid-run the runner names the probable
//! killer and the remaining cases are NOT RUN (every report says so; the
//! run exits 1).
//!
//! Every report starts with the run's notes: seed, profiles, exclusions,
//! the login answers `--tolerate-negotiation` clamped.
//!
//! Negotiation is strict: a login answer outside the legal range (RFC 7143
//! §6.2) fails the cases that log in, and the run ends with one line naming
//! the answer. `--tolerate-negotiation` clamps such answers
//! ([`iesp_initiator::NegotiationPolicy::Lenient`]) so the rest of the suite
//! runs; the cases that check the answers still fail by name, each affected
//! case notes the answer, and a warning on stderr names it.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use iesp_cli::log::Verbosity;
use iesp_cli::units;
use iesp_initiator::{ChapCredentials, IscsiUrl, NegotiationPolicy};
use iesp_target::embedded::EmbeddedTarget;
use iesp_testsuite::conformance::baseline::{self, Baseline};
use iesp_testsuite::conformance::report::{jsonl, junit, tap, terminal, traceability};
use iesp_testsuite::conformance::runner::{self, Listener, Quiet, RunOptions};
use iesp_testsuite::conformance::{CaseResult, OutcomeKind, RunReport, Suite, TargetSpec};

use crate::exit;
use crate::output;

/// The initiator name the suite logs in with unless told otherwise.
pub const INITIATOR: &str = "iqn.2026-11.org.iesp-test:conformance";

/// Options of `iesp-test conformance`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = AFTER_HELP)]
pub struct ConformanceArgs {
    /// The target: iscsi://[user[%secret]@]host[:port]/target-iqn/lun (the
    /// LUN is the disk SCSI cases use).
    #[arg(required_unless_present_any = ["embedded", "list", "traceability"])]
    pub url: Option<String>,
    /// Run against the reference target started in-process (RAM LUN 0).
    #[arg(long, conflicts_with = "url")]
    pub embedded: bool,
    /// List the selected case instances and exit.
    #[arg(long)]
    pub list: bool,
    /// Run only the case instances matching these globs (e.g. 'iSCSI.Login.*').
    #[arg(short = 't', long = "test", value_name = "GLOB")]
    pub select: Vec<String>,
    /// Leave out the case instances matching these globs.
    #[arg(short = 'x', long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Run only these negotiation profiles (default: all).
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
    /// Allow destructive cases (they write to the LUN and reset the target).
    #[arg(long)]
    pub dataloss: bool,
    /// Add the case scripts of a directory (*.toml, recursively).
    #[arg(long = "scripts", value_name = "DIR")]
    pub scripts: Vec<PathBuf>,
    /// How long to wait for an expected PDU.
    #[arg(long, default_value = "3s", value_parser = units::parse_duration_nonzero)]
    pub timeout: Duration,
    /// How long "nothing arrives" must last.
    #[arg(long, default_value = "300ms", value_parser = units::parse_duration_nonzero)]
    pub silence: Duration,
    /// How long a TCP connect to the target may take.
    #[arg(long, default_value = "10s", value_parser = units::parse_duration_nonzero)]
    pub connect_timeout: Duration,
    /// The time limit of one case.
    #[arg(long, default_value = "60s", value_parser = units::parse_duration_nonzero)]
    pub case_timeout: Duration,
    /// Clamp login answers outside the legal range (RFC 7143 §6.2, e.g.
    /// FirstBurstLength above the offer) and run the suite on that session;
    /// the cases checking those answers still fail.
    #[arg(long)]
    pub tolerate_negotiation: bool,
    /// CHAP credentials the target accepts (USER:SECRET); enables the CHAP cases.
    #[arg(long, value_name = "USER:SECRET")]
    pub chap: Option<String>,
    /// Mutual CHAP: the name and secret the target answers with (USER:SECRET).
    #[arg(long, value_name = "USER:SECRET")]
    pub mutual_chap: Option<String>,
    /// The InitiatorName to log in with.
    #[arg(long, default_value = INITIATOR)]
    pub initiator_name: String,
    /// Declare a target capability cases can require (declared:NAME gates).
    #[arg(long = "capability", value_name = "NAME")]
    pub capabilities: Vec<String>,
    /// Write a JUnit XML report (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a TAP 14 report (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub tap: Option<PathBuf>,
    /// Write a JSON lines report (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// What to print while running: terminal, tap or quiet (-q: quiet;
    /// -v: failure details as they happen).
    #[arg(long, default_value = "terminal", value_parser = ["terminal", "tap", "quiet"])]
    pub format: String,
    /// Compare the outcomes with this baseline; only unexpected ones fail the run.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the run's outcomes to the --baseline file (keeping its notes).
    #[arg(long, requires = "baseline")]
    pub update_baseline: bool,
    /// A description of the target, recorded in a baseline written with --update-baseline.
    #[arg(long)]
    pub target_label: Option<String>,
    /// Write the traceability table (spec section → cases) to FILE (- for
    /// stdout) and exit.
    #[arg(long, value_name = "FILE")]
    pub traceability: Option<PathBuf>,
    /// Seed of the ISIDs the run uses (from the OS when not given; printed
    /// first).
    #[arg(long)]
    pub seed: Option<u32>,
}

const AFTER_HELP: &str = "\
Reports: --junit, --tap and --jsonl take a file or - (stdout; then stdout holds
only that report and progress goes to stderr). On SIGINT/SIGTERM the run stops
after the case in progress and writes every report marked interrupted.

Negotiation is strict: a login answer outside the legal range (RFC 7143 6.2)
fails the cases that log in. --tolerate-negotiation clamps it and runs the rest.

Exit status:
  0    every case passed (or, with --baseline, the run matches it)
  1    a case failed or errored (or an outcome differs from the baseline)
  2    usage error (command line, scripts, baseline, output path)
  3    I/O or connection error (the target cannot be reached)
  130  interrupted (SIGINT)
  143  terminated (SIGTERM)

Examples:
  iesp-test conformance --embedded
  iesp-test conformance --jsonl - iscsi://127.0.0.1/iqn.2026-11.org.iesp-test:target0/0 | jq .
  iesp-test conformance --list -t 'iSCSI.Login.*'";

fn creds(s: &str, what: &str) -> anyhow::Result<ChapCredentials> {
    let (u, p) = s
        .split_once(':')
        .filter(|(u, p)| !u.is_empty() && !p.is_empty())
        .ok_or_else(|| exit::usage(format!("{what} takes USER:SECRET")))?;
    Ok(ChapCredentials::new(u, p.as_bytes().to_vec()))
}

/// Loads the built-in suite and the user's scripts.
pub fn suite(scripts: &[PathBuf]) -> anyhow::Result<Suite> {
    let mut s = Suite::builtin()?;
    for d in scripts {
        s.add_dir(d)?;
    }
    Ok(s)
}

/// Forwards to the live listener and keeps every result, so that the
/// reports can still be written when a signal cuts the run short.
struct Collect<'a> {
    inner: &'a mut dyn Listener,
    results: Vec<CaseResult>,
}

impl Listener for Collect<'_> {
    fn started(&mut self, plan: &[runner::Planned], suite: &Suite) {
        self.inner.started(plan, suite);
    }
    fn finished(&mut self, result: &CaseResult) {
        self.inner.finished(result);
        self.results.push(result.clone());
    }
}

/// Runs the command.
pub async fn run(a: ConformanceArgs, verbosity: Verbosity) -> anyhow::Result<()> {
    // Every output path, before anything else happens.
    output::check_outputs(&[
        ("--junit", a.junit.as_deref()),
        ("--tap", a.tap.as_deref()),
        ("--jsonl", a.jsonl.as_deref()),
        ("--traceability", a.traceability.as_deref()),
    ])
    .map_err(exit::usage)?;
    if a.update_baseline
        && let Some(b) = &a.baseline
    {
        if b.as_os_str() == "-" {
            return Err(exit::usage(
                "--baseline - cannot be updated: give a file to --update-baseline",
            ));
        }
        output::check_outputs(&[("--baseline", Some(b.as_path()))]).map_err(exit::usage)?;
    }
    let suite = suite(&a.scripts).map_err(|e| exit::usage(format!("{e:#}")))?;
    if let Some(path) = &a.traceability {
        output::write_output(path, traceability::render(&suite).as_bytes())
            .with_context(|| format!("writing {}", path.display()))
            .map_err(exit::io)?;
        if path.as_os_str() != "-" {
            println!("wrote {} ({} cases)", path.display(), suite.cases.len());
        }
        return Ok(());
    }
    let profiles = (!a.profiles.is_empty()).then_some(a.profiles.as_slice());
    let plan = runner::plan(&suite, &a.select, &a.exclude, profiles).map_err(exit::usage)?;
    if a.list {
        let mut out = output::human_writer();
        let _ = writeln!(out, "{}", terminal::plan_table(&suite, &plan));
        let _ = writeln!(
            out,
            "{} case instances ({} cases)",
            plan.len(),
            suite.cases.len()
        );
        return Ok(());
    }
    if plan.is_empty() {
        return Err(exit::usage("no case matches the selection"));
    }
    let previous = match &a.baseline {
        Some(p) if p.exists() || !a.update_baseline => {
            let src = std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))
                .map_err(|e| exit::usage(format!("{e:#}")))?;
            Some(
                Baseline::parse(&p.display().to_string(), &src)
                    .map_err(|e| exit::usage(format!("{e:#}")))?,
            )
        }
        _ => None,
    };
    let chap = a.chap.as_deref().map(|c| creds(c, "--chap")).transpose()?;
    let mutual = a
        .mutual_chap
        .as_deref()
        .map(|c| creds(c, "--mutual-chap"))
        .transpose()?;
    let url = match (&a.url, a.embedded) {
        (Some(u), false) => {
            let url: IscsiUrl = u.parse().map_err(|e| {
                // The URL is not echoed: it may carry a password.
                exit::usage(match e {
                    iesp_initiator::url::UrlError::Scheme => e.to_string(),
                    e => format!("iSCSI URL: {e}"),
                })
            })?;
            if url.target_name().is_none() {
                return Err(exit::usage(
                    "the URL names no target (iscsi://host/target-iqn/lun)",
                ));
            }
            Some(url)
        }
        _ => None,
    };
    let seed = iesp_cli::seed::resolve(a.seed.map(u64::from), "iesp-test conformance") as u32;
    let embedded = if a.embedded {
        Some(
            EmbeddedTarget::start_ram(64 << 20, 512)
                .await
                .map_err(|e| exit::io(anyhow!("starting the embedded target: {e:#}")))?,
        )
    } else {
        None
    };
    let mut spec = match (&embedded, &url) {
        (Some(t), _) => TargetSpec {
            addr: t.addr,
            target_name: t.iqn.clone(),
            lun: Some(0),
            initiator_name: a.initiator_name.clone(),
            chap: None,
            mutual_chap: None,
        },
        (None, Some(url)) => {
            let addr = url
                .resolve()
                .await
                .with_context(|| format!("resolving {}", url.host))
                .map_err(exit::io)?;
            TargetSpec {
                addr,
                target_name: url.target_name().unwrap_or_default().to_owned(),
                lun: url.lun(),
                initiator_name: a.initiator_name.clone(),
                chap: url.chap(),
                mutual_chap: url.mutual_chap(),
            }
        }
        (None, None) => return Err(exit::usage("give a target URL or --embedded")),
    };
    if chap.is_some() {
        spec.chap = chap;
    }
    if mutual.is_some() {
        spec.mutual_chap = mutual;
    }
    let mut opts = RunOptions::new(spec);
    opts.timing.response = a.timeout;
    opts.timing.silence = a.silence;
    opts.timing.disconnect = a.timeout;
    opts.timing.connect = a.connect_timeout;
    opts.case_timeout = a.case_timeout;
    opts.dataloss = a.dataloss || a.embedded;
    opts.declared = a.capabilities.iter().cloned().collect::<BTreeSet<_>>();
    opts.seed = seed;
    opts.negotiation = if a.tolerate_negotiation {
        NegotiationPolicy::Lenient
    } else {
        NegotiationPolicy::Strict
    };
    let pre = match runner::preflight(&opts).await {
        Ok(p) => p,
        Err(e) => {
            if let Some(t) = embedded
                && let Err(e) = t.shutdown().await
            {
                tracing::warn!("stopping the embedded target: {e:#}");
            }
            return Err(exit::io(anyhow!("conformance: {e}")));
        }
    };
    let run_notes = run_notes(&a, seed, &opts, &pre);
    let format = if verbosity.quiet {
        "quiet"
    } else {
        a.format.as_str()
    };
    if format != "tap" {
        output::say(format_args!(
            "conformance: seed {seed}, {} case instances against {}{}",
            plan.len(),
            opts.target.target_name,
            if opts.dataloss {
                " (destructive cases enabled)"
            } else {
                ""
            }
        ));
        for n in &run_notes {
            output::say(format_args!("note: {n}"));
        }
    }
    // The run's envelope (seed, start, command line) heads every report.
    let envelope = iesp_testsuite::conformance::report::envelope(
        std::time::SystemTime::now(),
        u64::from(seed),
        iesp_cli::envelope::process_args(),
        false,
    );
    let report = {
        let live = output::human_writer();
        let mut listener: Box<dyn Listener> = match format {
            "tap" => Box::new(tap::TapStream::new(live, envelope.clone())),
            "quiet" => Box::new(Quiet),
            _ => Box::new(terminal::Progress::new(live, verbosity.verbose > 0)),
        };
        let mut collect = Collect {
            inner: listener.as_mut(),
            results: Vec::with_capacity(plan.len()),
        };
        let started = std::time::SystemTime::now();
        let t0 = std::time::Instant::now();
        let finished = tokio::select! {
            r = runner::run(&suite, &plan, &opts, &mut collect) => Some(r),
            _ = crate::signal::wait() => None,
        };
        let mut r = match finished {
            Some(r) => r,
            None => RunReport {
                results: std::mem::take(&mut collect.results),
                started,
                duration: t0.elapsed(),
                target: format!("{} at {}", opts.target.target_name, opts.target.addr),
                interrupted: true,
                killer: None,
                notes: Vec::new(),
            },
        };
        // The run's notes first, then the runner's (the probable killer).
        let mut notes = run_notes.clone();
        notes.append(&mut r.notes);
        r.notes = notes;
        r
    };
    if let Some(t) = embedded
        && let Err(e) = t.shutdown().await
    {
        tracing::warn!("stopping the embedded target: {e:#}");
    }
    write_reports(
        &a,
        &report,
        &envelope
            .started_at(report.started)
            .interrupted(report.interrupted),
    )?;
    if format != "tap" {
        output::say_str(&terminal::summary(&report));
    }
    if let Some(u) = report.unclean_summary(plan.len()) {
        eprintln!("conformance: {u}");
    }
    negotiation_summary(&report, opts.negotiation);
    if let Some(s) = crate::signal::received() {
        return Err(anyhow!(
            "conformance: interrupted by {s} after {} of {} case instances; reports written",
            report.results.len(),
            plan.len()
        ));
    }
    finish(&a, &report, previous.as_ref())
}

/// What every report states before its cases: how to repeat the run
/// (seed, profiles, selection, exclusions) and what was tolerated.
fn run_notes(
    a: &ConformanceArgs,
    seed: u32,
    opts: &RunOptions,
    pre: &runner::Preflight,
) -> Vec<String> {
    let mut n = vec![format!(
        "seed {seed} (--seed {seed} repeats the run's ISIDs)"
    )];
    n.push(if a.profiles.is_empty() {
        "profiles: all".to_owned()
    } else {
        format!("profiles: {}", a.profiles.join(", "))
    });
    if !a.select.is_empty() {
        n.push(format!("selected: {}", a.select.join(" ")));
    }
    n.push(if a.exclude.is_empty() {
        "exclusions: none".to_owned()
    } else {
        format!("exclusions: {}", a.exclude.join(" "))
    });
    if !opts.dataloss {
        n.push("destructive cases skipped (no --dataloss)".to_owned());
    }
    if !pre.negotiation_warnings.is_empty() {
        let keys = iesp_testsuite::conformance::exec::describe_answers(&pre.negotiation_warnings);
        n.push(match opts.negotiation {
            NegotiationPolicy::Lenient => format!(
                "tolerated login answers outside the legal range (--tolerate-negotiation clamps them; the login cases still fail): {keys}"
            ),
            NegotiationPolicy::Strict => format!(
                "login answers outside the legal range (strict: the cases that log in fail; --tolerate-negotiation clamps them): {keys}"
            ),
        });
    }
    if let Some(d) = &pre.discovery_note {
        n.push(d.clone());
    }
    n
}

/// Names the out-of-range login answers of the run once, on stderr: the
/// one cause of the cases they failed (strict), or what was tolerated.
fn negotiation_summary(report: &RunReport, policy: NegotiationPolicy) {
    let defects = runner::negotiation_defects(&report.results);
    if defects.is_empty() {
        return;
    }
    match policy {
        NegotiationPolicy::Strict => {
            let n = runner::failed_by_negotiation(&report.results);
            eprintln!(
                "conformance: {n} case instance(s) failed at login on answers outside the legal range; \
                 --tolerate-negotiation runs them on the clamped session:"
            );
        }
        NegotiationPolicy::Lenient => {
            eprintln!("conformance: warning: tolerated login answers (--tolerate-negotiation):");
        }
    }
    for d in defects {
        eprintln!("  {d}");
    }
}

fn write_reports(
    a: &ConformanceArgs,
    report: &RunReport,
    envelope: &iesp_cli::envelope::Envelope,
) -> anyhow::Result<()> {
    let write = |p: &PathBuf, s: String| {
        output::write_output(p, s.as_bytes())
            .with_context(|| format!("writing {}", p.display()))
            .map_err(exit::io)
    };
    if let Some(p) = &a.junit {
        write(p, junit::render(report, envelope))?;
    }
    if let Some(p) = &a.tap {
        write(p, tap::render(report, envelope))?;
    }
    if let Some(p) = &a.jsonl {
        write(p, jsonl::render(report, envelope))?;
    }
    Ok(())
}

/// The verdict: baseline comparison, or no fail and no error.
fn finish(
    a: &ConformanceArgs,
    report: &RunReport,
    previous: Option<&Baseline>,
) -> anyhow::Result<()> {
    if a.update_baseline {
        let Some(path) = &a.baseline else {
            return Err(exit::usage("--update-baseline needs --baseline FILE"));
        };
        let b = Baseline::from_run(&report.results, previous, a.target_label.clone());
        output::write_output(path, b.to_toml().as_bytes())
            .with_context(|| format!("writing {}", path.display()))
            .map_err(exit::io)?;
        output::say(format_args!(
            "baseline {} updated ({} entries)",
            path.display(),
            b.cases.len()
        ));
        return Ok(());
    }
    if let Some(b) = previous {
        let cmp = baseline::compare(&report.results, b);
        output::say_str(&cmp.describe());
        let n = cmp.unexpected().count();
        if n > 0 {
            return Err(exit::failed(anyhow!(
                "{n} unexpected outcome(s) against the baseline"
            )));
        }
        return Ok(());
    }
    if let Some(k) = &report.killer {
        return Err(exit::failed(anyhow!(
            "the target stopped answering{}; {} case instance(s) not run",
            if k.is_empty() {
                String::new()
            } else {
                format!(" after {k}")
            },
            report.count(OutcomeKind::NotRun)
        )));
    }
    let bad = report.count(OutcomeKind::Fail) + report.count(OutcomeKind::Error);
    if bad > 0 {
        return Err(exit::failed(anyhow!(
            "{} failed, {} errors",
            report.count(OutcomeKind::Fail),
            report.count(OutcomeKind::Error)
        )));
    }
    Ok(())
}
