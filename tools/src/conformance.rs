//! `iesp-test conformance URL`: the protocol-level conformance suite
//! against any target (the suite itself is `iesp_testsuite::conformance`).
//!
//! Exit status: 0 when the run has no fail and no error — or, with
//! `--baseline`, when it matches the baseline (see
//! [`iesp_testsuite::conformance::baseline`]); 1 otherwise; 2 for a
//! command-line mistake.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use iesp_initiator::{ChapCredentials, IscsiUrl};
use iesp_target::embedded::EmbeddedTarget;
use iesp_testsuite::conformance::baseline::{self, Baseline};
use iesp_testsuite::conformance::report::{jsonl, junit, tap, terminal, traceability};
use iesp_testsuite::conformance::runner::{self, Listener, Quiet, RunOptions};
use iesp_testsuite::conformance::{OutcomeKind, RunReport, Suite, TargetSpec, value};

/// The initiator name the suite logs in with unless told otherwise.
pub const INITIATOR: &str = "iqn.2026-11.org.iesp-test:conformance";

/// Options of `iesp-test conformance`.
#[derive(clap::Args, Debug, Clone)]
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
    #[arg(long, default_value = "3s", value_parser = value::parse_duration)]
    pub timeout: Duration,
    /// How long "nothing arrives" must last.
    #[arg(long, default_value = "300ms", value_parser = value::parse_duration)]
    pub silence: Duration,
    /// The time limit of one case.
    #[arg(long, default_value = "60s", value_parser = value::parse_duration)]
    pub case_timeout: Duration,
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
    /// Write a JUnit XML report.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a TAP 14 report.
    #[arg(long, value_name = "FILE")]
    pub tap: Option<PathBuf>,
    /// Write a JSON lines report.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// What to print while running: terminal, tap or quiet.
    #[arg(long, default_value = "terminal", value_parser = ["terminal", "tap", "quiet"])]
    pub format: String,
    /// Print failure details as they happen.
    #[arg(short, long)]
    pub verbose: bool,
    /// Compare the outcomes with this baseline; only unexpected ones fail the run.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the run's outcomes to the --baseline file (keeping its notes).
    #[arg(long, requires = "baseline")]
    pub update_baseline: bool,
    /// A description of the target, recorded in a baseline written with --update-baseline.
    #[arg(long)]
    pub target_label: Option<String>,
    /// Write the traceability table (spec section → cases) to FILE and exit.
    #[arg(long, value_name = "FILE")]
    pub traceability: Option<PathBuf>,
    /// Seed of the ISIDs the run uses (random when not given; printed first).
    #[arg(long)]
    pub seed: Option<u32>,
}

fn creds(s: &str, what: &str) -> anyhow::Result<ChapCredentials> {
    let (u, p) = s
        .split_once(':')
        .filter(|(u, p)| !u.is_empty() && !p.is_empty())
        .with_context(|| format!("{what} takes USER:SECRET"))?;
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

/// Runs the command.
pub async fn run(a: ConformanceArgs) -> anyhow::Result<()> {
    let suite = suite(&a.scripts)?;
    if let Some(path) = &a.traceability {
        std::fs::write(path, traceability::render(&suite))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({} cases)", path.display(), suite.cases.len());
        return Ok(());
    }
    let profiles = (!a.profiles.is_empty()).then_some(a.profiles.as_slice());
    let plan = runner::plan(&suite, &a.select, &a.exclude, profiles).map_err(anyhow::Error::msg)?;
    if a.list {
        println!("{}", terminal::plan_table(&suite, &plan));
        println!(
            "{} case instances ({} cases)",
            plan.len(),
            suite.cases.len()
        );
        return Ok(());
    }
    if plan.is_empty() {
        bail!("no case matches the selection");
    }
    let seed = a.seed.unwrap_or_else(rand::random);
    let embedded = if a.embedded {
        Some(EmbeddedTarget::start_ram(64 << 20, 512).await?)
    } else {
        None
    };
    let mut spec = match &embedded {
        Some(t) => TargetSpec {
            addr: t.addr,
            target_name: t.iqn.clone(),
            lun: Some(0),
            initiator_name: a.initiator_name.clone(),
            chap: None,
            mutual_chap: None,
        },
        None => {
            let url: IscsiUrl = a.url.as_deref().unwrap_or_default().parse()?;
            let addr = url
                .resolve()
                .await
                .with_context(|| format!("resolving {}", url.host))?;
            TargetSpec {
                addr,
                target_name: url
                    .target_name()
                    .context("the URL names no target (iscsi://host/target-iqn/lun)")?
                    .to_owned(),
                lun: url.lun(),
                initiator_name: a.initiator_name.clone(),
                chap: url.chap(),
                mutual_chap: url.mutual_chap(),
            }
        }
    };
    if let Some(c) = &a.chap {
        spec.chap = Some(creds(c, "--chap")?);
    }
    if let Some(c) = &a.mutual_chap {
        spec.mutual_chap = Some(creds(c, "--mutual-chap")?);
    }
    let previous = match &a.baseline {
        Some(p) if p.exists() || !a.update_baseline => {
            let src =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(Baseline::parse(&p.display().to_string(), &src)?)
        }
        _ => None,
    };
    let mut opts = RunOptions::new(spec);
    opts.timing.response = a.timeout;
    opts.timing.silence = a.silence;
    opts.timing.disconnect = a.timeout;
    opts.case_timeout = a.case_timeout;
    opts.dataloss = a.dataloss || a.embedded;
    opts.declared = a.capabilities.iter().cloned().collect::<BTreeSet<_>>();
    opts.seed = seed;
    if a.format != "tap" {
        println!(
            "conformance: seed {seed}, {} case instances against {}{}",
            plan.len(),
            opts.target.target_name,
            if opts.dataloss {
                " (destructive cases enabled)"
            } else {
                ""
            }
        );
    }
    // The run's envelope (seed, start, command line) heads every report.
    let envelope = iesp_testsuite::conformance::report::envelope(
        std::time::SystemTime::now(),
        u64::from(seed),
        iesp_cli::envelope::process_args(),
        false,
    );
    let report = {
        let stdout = std::io::stdout();
        let mut listener: Box<dyn Listener> = match a.format.as_str() {
            "tap" => Box::new(tap::TapStream::new(stdout, envelope.clone())),
            "quiet" => Box::new(Quiet),
            _ => Box::new(terminal::Progress::new(stdout, a.verbose)),
        };
        runner::run(&suite, &plan, &opts, listener.as_mut()).await
    };
    if let Some(t) = embedded {
        t.shutdown().await?;
    }
    write_reports(&a, &report, &envelope.started_at(report.started))?;
    if a.format != "tap" {
        print!("{}", terminal::summary(&report));
    }
    finish(&a, &report, previous.as_ref())
}

fn write_reports(
    a: &ConformanceArgs,
    report: &RunReport,
    envelope: &iesp_cli::envelope::Envelope,
) -> anyhow::Result<()> {
    let write = |p: &PathBuf, s: String| {
        std::fs::write(p, s).with_context(|| format!("writing {}", p.display()))
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
            bail!("--update-baseline needs --baseline FILE")
        };
        let b = Baseline::from_run(&report.results, previous, a.target_label.clone());
        std::fs::write(path, b.to_toml()).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "baseline {} updated ({} entries)",
            path.display(),
            b.cases.len()
        );
        return Ok(());
    }
    if let Some(b) = previous {
        let cmp = baseline::compare(&report.results, b);
        let mut out = std::io::stdout();
        let _ = write!(out, "{}", cmp.describe());
        let n = cmp.unexpected().count();
        if n > 0 {
            bail!("{n} unexpected outcome(s) against the baseline");
        }
        return Ok(());
    }
    let bad = report.count(OutcomeKind::Fail) + report.count(OutcomeKind::Error);
    if bad > 0 {
        bail!(
            "{} failed, {} errors",
            report.count(OutcomeKind::Fail),
            report.count(OutcomeKind::Error)
        );
    }
    Ok(())
}
