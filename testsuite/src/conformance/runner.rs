//! The runner: which case instances run (selection, profiles, gates), each
//! in its own context with a time limit, and four outcomes.
//!
//! - **pass** — the target did what the case requires;
//! - **fail** — it did not: the report shows expected against actual,
//!   field by field, and the PDU trace of the case;
//! - **skip** — the case does not apply, with the reason (a gate: no CHAP
//!   credentials, no `--dataloss`, a negotiated value; a profile the target
//!   declined);
//! - **error** — the harness could not do its job (connection refused, a
//!   script error, a case exceeding its time limit, a panic); a failed
//!   setup step is an error naming the step (`setup failed at login: …`);
//! - **not run** — the target was gone before the case could run: after a
//!   case errors (or fails without the target answering) the runner
//!   probes the portal with a login
//!   ([`probe`]); when it no longer answers, the run stops, the last case
//!   the target answered is named as the probable killer
//!   ([`RunReport::killer`]) and every later case is not run.
//!
//! A case instance is a case under one profile; its id is the case id, with
//! `@profile` appended for profiles other than the default.
//!
//! Login answers outside the legal range (RFC 7143 §6.2) follow
//! [`RunOptions::negotiation`]: strict by default, so a target that answers
//! FirstBurstLength above the offer fails every case that logs in through
//! the initiator (and the negotiation case that checks it, by name);
//! lenient (`--tolerate-negotiation`) clamps the answer and runs the rest
//! of the suite on that session. Each case notes the answers it met
//! ([`super::exec::NEGOTIATION_NOTE`]); [`negotiation_defects`] gives the
//! run's distinct ones, so a report can name the one cause.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use iesp_initiator::NegotiationPolicy;
use iesp_proto::scsi::{Asc, SenseKey};

use super::Suite;
use super::case::{Body, Case, CaseId, CmpOp, Gate, Level, LoginMode};
use super::exec::{
    Ctx, Fail, Failure, NEGOTIATION_LOGIN_FAILED, NEGOTIATION_NOTE, TargetSpec, Timing,
};
use super::profile::{self, Profile};
use super::script;
use super::transfer::{End, ScsiRequest};

/// How a case instance ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(Failure),
    Skip(String),
    Error(String),
    /// The run stopped before this case (the target was gone).
    NotRun(String),
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Pass => OutcomeKind::Pass,
            Outcome::Fail(_) => OutcomeKind::Fail,
            Outcome::Skip(_) => OutcomeKind::Skip,
            Outcome::Error(_) => OutcomeKind::Error,
            Outcome::NotRun(_) => OutcomeKind::NotRun,
        }
    }

    /// The message: failure text, skip reason or error.
    pub fn message(&self) -> String {
        match self {
            Outcome::Pass => String::new(),
            Outcome::Fail(f) => f.to_string(),
            Outcome::Skip(s) | Outcome::Error(s) | Outcome::NotRun(s) => s.clone(),
        }
    }
}

/// The outcomes without their details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutcomeKind {
    Pass,
    Fail,
    Skip,
    Error,
    NotRun,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Pass => "pass",
            OutcomeKind::Fail => "fail",
            OutcomeKind::Skip => "skip",
            OutcomeKind::Error => "error",
            OutcomeKind::NotRun => "not-run",
        }
    }

    pub fn parse(s: &str) -> Option<OutcomeKind> {
        match s {
            "pass" => Some(OutcomeKind::Pass),
            "fail" => Some(OutcomeKind::Fail),
            "skip" => Some(OutcomeKind::Skip),
            "error" => Some(OutcomeKind::Error),
            "not-run" => Some(OutcomeKind::NotRun),
            _ => None,
        }
    }
}

/// One finished case instance.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub id: CaseId,
    pub profile: &'static str,
    pub section: String,
    pub level: Level,
    pub summary: String,
    pub outcome: Outcome,
    pub duration: Duration,
    /// The PDU trace, kept for every outcome but a pass.
    pub trace: Vec<String>,
    /// Observations worth reporting (login warnings and the like).
    pub notes: Vec<String>,
}

impl CaseResult {
    /// `iSCSI.R2T.Foo` or `iSCSI.R2T.Foo@digests`.
    pub fn instance(&self) -> String {
        instance_id(&self.id, self.profile)
    }

    /// `iSCSI.R2T` or `iSCSI.R2T@digests`: the reporting suite.
    pub fn suite(&self) -> String {
        if self.profile == profile::DEFAULT {
            self.id.suite_name()
        } else {
            format!("{}@{}", self.id.suite_name(), self.profile)
        }
    }
}

/// The instance id of a case under a profile.
pub fn instance_id(id: &CaseId, profile: &str) -> String {
    if profile == profile::DEFAULT {
        id.to_string()
    } else {
        format!("{id}@{profile}")
    }
}

/// What to run and against what.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub target: TargetSpec,
    pub timing: Timing,
    /// The time limit of one case instance.
    pub case_timeout: Duration,
    /// Destructive cases run only with this.
    pub dataloss: bool,
    /// Glob patterns on instance ids (`iSCSI.Login.*`); empty runs all.
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    /// Profiles to run; `None` runs every profile.
    pub profiles: Option<Vec<String>>,
    /// Capabilities declared with `--capability`.
    pub declared: BTreeSet<String>,
    /// Seed of the run's ISIDs (printed by the CLI).
    pub seed: u32,
    /// What the suite's initiator logins (setup, script `login` steps) do
    /// with an out-of-range answer: [`NegotiationPolicy::Strict`] (the
    /// default) fails them; [`NegotiationPolicy::Lenient`]
    /// (`--tolerate-negotiation`) clamps and notes it. Cases that check
    /// the answers themselves with raw Login PDUs are not affected.
    pub negotiation: NegotiationPolicy,
}

impl RunOptions {
    pub fn new(target: TargetSpec) -> RunOptions {
        RunOptions {
            target,
            timing: Timing::default(),
            case_timeout: Duration::from_secs(60),
            dataloss: false,
            select: Vec::new(),
            exclude: Vec::new(),
            profiles: None,
            declared: BTreeSet::new(),
            seed: 0x1e5b,
            negotiation: NegotiationPolicy::Strict,
        }
    }
}

/// A case instance the run will execute.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Index into the suite's cases.
    pub case: usize,
    pub profile: &'static Profile,
    pub instance: String,
}

/// Glob patterns, compiled; a mistake is a one-line message.
pub fn patterns(list: &[String]) -> Result<Vec<glob::Pattern>, String> {
    list.iter()
        .map(|p| glob::Pattern::new(p).map_err(|e| format!("invalid pattern {p:?}: {e}")))
        .collect()
}

/// The instances selected, in run order: profile by profile (default
/// first), suites in order within each.
pub fn plan(
    suite: &Suite,
    select: &[String],
    exclude: &[String],
    profiles: Option<&[String]>,
) -> Result<Vec<Planned>, String> {
    let sel = patterns(select)?;
    let exc = patterns(exclude)?;
    let chosen: Vec<&'static Profile> = match profiles {
        None => profile::ALL.iter().collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                profile::by_name(n).ok_or_else(|| {
                    format!(
                        "unknown profile {n:?} (known: {})",
                        profile::names().join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut out = Vec::new();
    for p in chosen {
        for (i, c) in suite.cases.iter().enumerate() {
            if !c.meta.profiles.includes(p.name) {
                continue;
            }
            let instance = instance_id(&c.meta.id, p.name);
            let base = c.meta.id.to_string();
            let selected =
                sel.is_empty() || sel.iter().any(|g| g.matches(&instance) || g.matches(&base));
            let excluded = exc.iter().any(|g| g.matches(&instance) || g.matches(&base));
            if selected && !excluded {
                out.push(Planned {
                    case: i,
                    profile: p,
                    instance,
                });
            }
        }
    }
    Ok(out)
}

/// Receives results as they come (terminal progress, TAP streaming).
pub trait Listener: Send {
    fn started(&mut self, _plan: &[Planned], _suite: &Suite) {}
    fn finished(&mut self, _result: &CaseResult) {}
}

/// A listener that does nothing.
pub struct Quiet;

impl Listener for Quiet {}

/// The whole run.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub results: Vec<CaseResult>,
    pub started: SystemTime,
    pub duration: Duration,
    /// `iqn… at 127.0.0.1:3260 LUN 1`.
    pub target: String,
    /// SIGINT/SIGTERM stopped the run: `results` holds the cases that
    /// finished before it. Every report says so.
    pub interrupted: bool,
    /// The target stopped answering: the instance of the last case it
    /// answered (the probable killer), or `""` when it was gone before the
    /// first. Every later case is [`Outcome::NotRun`].
    pub killer: Option<String>,
    /// What a reader must know before the cases: seed, profiles,
    /// exclusions, tolerated login answers, fallbacks. Every report lists
    /// them first.
    pub notes: Vec<String>,
}

impl RunReport {
    pub fn count(&self, k: super::runner::OutcomeKind) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome.kind() == k)
            .count()
    }

    /// After an unclean run (the target died, a signal), one line: how many
    /// cases ran, how many were not run, and why. `None` for a clean run.
    pub fn unclean_summary(&self, planned: usize) -> Option<String> {
        let not_run = self.count(OutcomeKind::NotRun) + planned.saturating_sub(self.results.len());
        let ran = self.results.len() - self.count(OutcomeKind::NotRun);
        let why = match (&self.killer, self.interrupted) {
            (Some(k), _) if k.is_empty() => {
                "the target stopped answering before the first case".to_owned()
            }
            (Some(k), _) => format!("the target stopped answering after {k} (the probable killer)"),
            (None, true) => "the run was interrupted".to_owned(),
            (None, false) if not_run > 0 => "the run stopped early".to_owned(),
            (None, false) => return None,
        };
        Some(format!(
            "unclean run: {ran} of {planned} case instances ran, {not_run} not run: {why}"
        ))
    }
}

/// The distinct out-of-range login answers the cases met, in the order
/// first seen, each as its note reads without [`NEGOTIATION_NOTE`].
pub fn negotiation_defects(results: &[CaseResult]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    results
        .iter()
        .flat_map(|r| r.notes.iter())
        .filter_map(|n| n.strip_prefix(NEGOTIATION_NOTE))
        .filter(|n| seen.insert(*n))
        .map(str::to_owned)
        .collect()
}

/// How many cases failed or errored while meeting an out-of-range login
/// answer under the strict policy: cases the defect kept from running.
pub fn failed_by_negotiation(results: &[CaseResult]) -> usize {
    results
        .iter()
        .filter(|r| matches!(r.outcome.kind(), OutcomeKind::Fail | OutcomeKind::Error))
        .filter(|r| {
            r.notes
                .iter()
                .any(|n| n.starts_with(NEGOTIATION_NOTE) && n.contains(NEGOTIATION_LOGIN_FAILED))
        })
        .count()
}

/// Runs the planned instances one after the other.
pub async fn run(
    suite: &Suite,
    plan: &[Planned],
    opts: &RunOptions,
    listener: &mut dyn Listener,
) -> RunReport {
    let started = SystemTime::now();
    let t0 = Instant::now();
    listener.started(plan, suite);
    let target = Arc::new(opts.target.clone());
    let mut results = Vec::with_capacity(plan.len());
    // The last case the target answered, and whether the target is gone.
    let mut last_answered: Option<String> = None;
    let mut killer: Option<String> = None;
    for (n, p) in plan.iter().enumerate() {
        let case = &suite.cases[p.case];
        if let Some(k) = &killer {
            let mut r = blank_result(case, p.profile);
            r.outcome = Outcome::NotRun(not_run_reason(k, opts));
            listener.finished(&r);
            results.push(r);
            continue;
        }
        let seed = opts
            .seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(n as u32 * 0x10);
        let (mut r, answered) = run_one_seen(case, p.profile, target.clone(), opts, seed).await;
        // Connections failing: an error (setup could not connect or log
        // in), or a failure of a case the target never answered.
        let suspicious = match r.outcome.kind() {
            OutcomeKind::Error => true,
            OutcomeKind::Fail => !answered,
            _ => false,
        };
        if suspicious && let Err(why) = probe(opts).await {
            // The target is gone. If it answered this case, this case is the
            // last one it answered; otherwise it was gone already and this
            // case never ran.
            let k = if answered {
                r.notes.push(format!(
                    "the target stopped answering during or right after this case: {why}"
                ));
                r.instance()
            } else {
                r.outcome = Outcome::NotRun(format!(
                    "the target was gone before the case could run ({why})"
                ));
                r.trace.clear();
                last_answered.clone().unwrap_or_default()
            };
            killer = Some(k);
        } else if answered {
            last_answered = Some(r.instance());
        }
        listener.finished(&r);
        results.push(r);
    }
    let mut notes = Vec::new();
    if let Some(k) = &killer {
        notes.push(killer_note(k, opts));
    }
    RunReport {
        results,
        started,
        duration: t0.elapsed(),
        target: describe_target(&opts.target),
        interrupted: false,
        killer,
        notes,
    }
}

/// The run note naming the probable killer.
pub fn killer_note(killer: &str, opts: &RunOptions) -> String {
    if killer.is_empty() {
        format!(
            "the target at {} stopped answering before the first case ran",
            opts.target.addr
        )
    } else {
        format!(
            "the target at {} stopped answering after {killer}: the probable killer; the cases after it were not run",
            opts.target.addr
        )
    }
}

fn not_run_reason(killer: &str, opts: &RunOptions) -> String {
    if killer.is_empty() {
        format!("the target at {} stopped answering", opts.target.addr)
    } else {
        format!(
            "the target at {} stopped answering after {killer}",
            opts.target.addr
        )
    }
}

/// How many times [`probe`] tries, and the pause between tries.
const PROBE_TRIES: u32 = 3;
const PROBE_PAUSE: Duration = Duration::from_millis(300);

/// Is the target still there? A TCP connect and a login (discovery
/// session, lenient, within the run's timeouts), up to [`PROBE_TRIES`]
/// times: a target that restarts quickly is not gone. `Err` says why the
/// last try failed.
pub async fn probe(opts: &RunOptions) -> Result<(), String> {
    let mut last = String::new();
    for i in 0..PROBE_TRIES {
        if i > 0 {
            tokio::time::sleep(PROBE_PAUSE).await;
        }
        let mut o = iesp_initiator::LoginOptions::discovery(&opts.target.initiator_name);
        o.connect_timeout = opts.timing.connect;
        o.timeout = opts.timing.response;
        o.negotiation = NegotiationPolicy::Lenient;
        o.chap = opts.target.chap.clone();
        o.mutual_chap = opts.target.mutual_chap.clone();
        let limit = opts.timing.connect + opts.timing.response;
        match tokio::time::timeout(limit, iesp_initiator::Session::login(opts.target.addr, o)).await
        {
            // Dropped, not logged out: the probe must not wait on a
            // misbehaving target's Logout Response.
            Ok(Ok(_session)) => return Ok(()),
            // No connection, or nothing but a close or silence: gone.
            Ok(Err(
                e @ (iesp_initiator::LoginError::Io(_)
                | iesp_initiator::LoginError::Timeout(_)
                | iesp_initiator::LoginError::Closed),
            )) => last = e.to_string(),
            // Any other answer (even a wrong one) means an iSCSI target is
            // there.
            Ok(Err(_)) => return Ok(()),
            Err(_) => last = format!("no login answer within {limit:?}"),
        }
    }
    Err(format!(
        "{} does not answer a login: {last}",
        opts.target.addr
    ))
}

/// What [`preflight`] learnt: the login answers outside the legal range
/// the target gave (the run's policy decides what they do to the cases).
#[derive(Clone, Debug, Default)]
pub struct Preflight {
    pub negotiation_warnings: Vec<iesp_initiator::NegotiationWarning>,
    /// SendTargets did not work (not fatal: the login decides).
    pub discovery_note: Option<String>,
}

/// Before any case: a TCP connect, a discovery session (SendTargets must
/// list the target when it lists anything), a login to the named target
/// (lenient, so that a negotiation defect is reported by the cases, not
/// here) and, with a LUN, an INQUIRY that finds it. `Err` is one line for
/// the user: no case can run.
pub async fn preflight(opts: &RunOptions) -> Result<Preflight, String> {
    use iesp_initiator::{LoginError, LoginOptions, RawConnection, Session};
    let t = &opts.target;
    let addr = t.addr;
    match RawConnection::connect_timeout(addr, opts.timing.connect).await {
        Ok(c) => drop(c),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Err(format!(
                "TCP connect to {addr} timed out after {:?} (--connect-timeout)",
                opts.timing.connect
            ));
        }
        Err(e) => return Err(format!("cannot connect to {addr}: {e}")),
    }
    let base = |target: Option<&str>| {
        let mut o = LoginOptions::new(&t.initiator_name, target);
        o.connect_timeout = opts.timing.connect;
        o.timeout = opts.timing.response;
        o.negotiation = NegotiationPolicy::Lenient;
        o.chap = t.chap.clone();
        o.mutual_chap = t.mutual_chap.clone();
        o
    };
    let mut out = Preflight::default();
    match iesp_initiator::discovery::discover_with(addr, &base(None)).await {
        Ok(list) if !list.is_empty() && !list.iter().any(|d| d.name == t.target_name) => {
            let names: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
            return Err(format!(
                "cannot log in to {} at {addr}: target not found (SendTargets lists {})",
                t.target_name,
                names.join(", ")
            ));
        }
        Ok(_) => {}
        Err(e) => out.discovery_note = Some(format!("SendTargets did not work: {e}")),
    }
    let session = Session::login(addr, base(Some(&t.target_name)))
        .await
        .map_err(|e| match e {
            LoginError::Refused(s) if s.class() == 2 && s.detail() == 3 => format!(
                "cannot log in to {} at {addr}: target not found ({e})",
                t.target_name
            ),
            e => format!("cannot log in to {} at {addr}: {e}", t.target_name),
        })?;
    out.negotiation_warnings = session.login_outcome().negotiation_warnings.clone();
    let lun_check = match t.lun {
        None => Ok(()),
        Some(l) => {
            let cdb = [0x12, 0, 0, 0, 36, 0];
            match session
                .command(
                    iesp_proto::bhs::Lun::from_index(l),
                    &cdb,
                    bytes::Bytes::new(),
                    36,
                )
                .await
            {
                Ok(r) if r.status.0 == 0 && r.data.first().is_some_and(|b| b >> 5 == 3) => {
                    Err(format!(
                        "LUN {l} of {} does not exist (INQUIRY: peripheral qualifier 3)",
                        t.target_name
                    ))
                }
                Ok(r)
                    if r.sense
                        .as_ref()
                        .is_some_and(|s| s.asc == Asc::LOGICAL_UNIT_NOT_SUPPORTED) =>
                {
                    Err(format!(
                        "LUN {l} of {} does not exist (INQUIRY: LOGICAL UNIT NOT SUPPORTED)",
                        t.target_name
                    ))
                }
                Ok(_) => Ok(()),
                Err(e) => Err(format!("LUN {l} of {}: INQUIRY failed: {e}", t.target_name)),
            }
        }
    };
    let _ = session.logout().await;
    lun_check.map(|()| out)
}

/// A result with the case's identity and no outcome yet.
fn blank_result(case: &Case, profile: &'static Profile) -> CaseResult {
    CaseResult {
        id: case.meta.id.clone(),
        profile: profile.name,
        section: case.meta.section.clone(),
        level: case.meta.level,
        summary: case.meta.summary.clone(),
        outcome: Outcome::Pass,
        duration: Duration::ZERO,
        trace: Vec::new(),
        notes: Vec::new(),
    }
}

fn describe_target(t: &TargetSpec) -> String {
    match t.lun {
        Some(l) => format!("{} at {} LUN {l}", t.target_name, t.addr),
        None => format!("{} at {}", t.target_name, t.addr),
    }
}

/// A gate the run cannot satisfy, before any connection.
fn static_gate(case: &Case, profile: &Profile, opts: &RunOptions) -> Option<String> {
    let m = &case.meta;
    if m.destructive && !opts.dataloss {
        return Some(
            "destructive (writes to the LUN or resets the target): run with --dataloss".to_owned(),
        );
    }
    if profile.needs_chap && opts.target.chap.is_none() {
        return Some(format!(
            "profile {} needs CHAP credentials (--chap USER:SECRET)",
            profile.name
        ));
    }
    for g in &m.gates {
        let why = match g {
            Gate::Chap if opts.target.chap.is_none() => {
                "needs CHAP credentials (--chap USER:SECRET)".to_owned()
            }
            Gate::MutualChap if opts.target.mutual_chap.is_none() => {
                "needs mutual CHAP credentials (--mutual-chap USER:SECRET)".to_owned()
            }
            Gate::Lun if opts.target.lun.is_none() => {
                "needs a disk LUN (the URL's /lun)".to_owned()
            }
            Gate::Declared(c) if !opts.declared.contains(c) => {
                format!("needs a target capability the run did not declare (--capability {c})")
            }
            _ => continue,
        };
        return Some(why);
    }
    None
}

/// Gate keys that are the LUN's geometry (from READ CAPACITY), not a
/// negotiated value: `param:capacity>=2097152` for a case that writes 2 MiB.
const LUN_KEYS: [&str; 3] = ["blocks", "capacity", "block_size"];

/// Checks the parameter gates against the session's negotiated values
/// and the LUN's geometry.
fn param_gates(case: &Case, ctx: &Ctx) -> Result<(), Fail> {
    for g in &case.meta.gates {
        let Gate::Param { key, op, value } = g else {
            continue;
        };
        let p = &ctx.conn()?.params;
        let yn = |b: bool| if b { "Yes" } else { "No" }.to_owned();
        let actual = match key.as_str() {
            "InitialR2T" => yn(p.initial_r2t),
            "ImmediateData" => yn(p.immediate_data),
            "DataPDUInOrder" => yn(p.data_pdu_in_order),
            "DataSequenceInOrder" => yn(p.data_sequence_in_order),
            "ErrorRecoveryLevel" => p.error_recovery_level.to_string(),
            "MaxConnections" => p.max_connections.to_string(),
            "MaxBurstLength" => p.max_burst_length.to_string(),
            "FirstBurstLength" => p.first_burst_length.to_string(),
            "MaxOutstandingR2T" => p.max_outstanding_r2t.to_string(),
            "TargetMRDSL" => p.target_mrdsl.to_string(),
            "blocks" => ctx.blocks.to_string(),
            "capacity" => ctx
                .blocks
                .saturating_mul(u64::from(ctx.block_size))
                .to_string(),
            "block_size" => ctx.block_size.to_string(),
            "InitiatorMRDSL" => p.initiator_mrdsl.to_string(),
            "HeaderDigest" => p.header_digest.token().to_owned(),
            "DataDigest" => p.data_digest.token().to_owned(),
            other => return Err(Fail::error(format!("unknown parameter {other} in a gate"))),
        };
        // `$block_size`: the LUN's block size (a case that sends one
        // block of immediate data needs FirstBurstLength and the target's
        // MaxRecvDataSegmentLength to hold it).
        let value = match value.as_str() {
            "$block_size" => ctx.block_size.to_string(),
            v if v.starts_with('$') => {
                return Err(Fail::error(format!("unknown variable {v} in gate {g}")));
            }
            v => v.to_owned(),
        };
        let holds = match (actual.parse::<u64>(), value.parse::<u64>()) {
            (Ok(a), Ok(b)) => match op {
                CmpOp::Eq => a == b,
                CmpOp::Ne => a != b,
                CmpOp::Ge => a >= b,
                CmpOp::Le => a <= b,
            },
            _ => match op {
                CmpOp::Eq => actual == value,
                CmpOp::Ne => actual != value,
                _ => return Err(Fail::error(format!("gate {g} compares a non-number"))),
            },
        };
        if !holds {
            return Err(Fail::skip(format!(
                "needs {key} {op} {value}; the session has {key}={actual}",
                op = match op {
                    CmpOp::Eq => "=",
                    CmpOp::Ne => "≠",
                    CmpOp::Ge => "≥",
                    CmpOp::Le => "≤",
                }
            )));
        }
    }
    Ok(())
}

/// What the runner does before the first step.
async fn setup(case: &Case, ctx: &mut Ctx) -> Result<(), Fail> {
    let s = case.meta.setup;
    match s.login {
        LoginMode::None => {
            if case
                .meta
                .gates
                .iter()
                .any(|g| matches!(g, Gate::Param { .. }))
            {
                return Err(Fail::error("a parameter gate needs login = \"normal\""));
            }
            return Ok(());
        }
        LoginMode::Discovery => {
            ctx.connect("main")
                .await
                .map_err(|e| setup_error("connect", e))?;
            let r = ctx.login_default(true).await;
            return login_setup(ctx, r);
        }
        LoginMode::Normal => {}
    }
    ctx.connect("main")
        .await
        .map_err(|e| setup_error("connect", e))?;
    let r = ctx.login_default(false).await;
    login_setup(ctx, r)?;
    // A gate on `$block_size` needs the capacity read first; without a
    // LUN the negotiated values are all there is.
    let gates_need_capacity = case.meta.gates.iter().any(|g| {
        matches!(g, Gate::Param { key, value, .. }
            if value.starts_with('$') || LUN_KEYS.contains(&key.as_str()))
    });
    if ctx.target.lun.is_none() || !gates_need_capacity {
        param_gates(case, ctx)?;
    }
    if ctx.target.lun.is_none() {
        return Ok(());
    }
    if s.clear_unit_attention {
        clear_unit_attention(ctx)
            .await
            .map_err(|e| setup_error("TEST UNIT READY (clearing unit attention)", e))?;
    }
    if s.capacity || gates_need_capacity {
        read_capacity(ctx)
            .await
            .map_err(|e| setup_error("READ CAPACITY", e))?;
    }
    if gates_need_capacity {
        param_gates(case, ctx)?;
    }
    Ok(())
}

/// The start of the message of a case whose setup failed.
pub const SETUP_FAILED: &str = "setup failed at ";

/// A setup step that did not work is the harness's error, naming the step
/// (a skip stays a skip).
fn setup_error(step: &str, e: Fail) -> Fail {
    match e {
        Fail::Skip(s) => Fail::Skip(s),
        Fail::Check(f) => Fail::Error(format!("{SETUP_FAILED}{step}: {f}")),
        Fail::Error(m) => Fail::Error(format!("{SETUP_FAILED}{step}: {m}")),
    }
}

/// The setup login's result: an answer outside the legal range stays the
/// target's failure (strict policy: the case fails on the named answer);
/// anything else that kept the login from working is a setup error.
fn login_setup(ctx: &Ctx, r: Result<iesp_initiator::LoginOutcome, Fail>) -> Result<(), Fail> {
    match r {
        Ok(_) => Ok(()),
        Err(Fail::Check(f)) if !ctx.negotiation_defects.is_empty() => {
            Err(Fail::Check(f).context("setup"))
        }
        Err(e) => Err(setup_error("login", e)),
    }
}

/// TEST UNIT READY until no unit attention is reported (a new I_T nexus
/// starts with POWER ON OCCURRED, SAM-5 §5.14).
pub async fn clear_unit_attention(ctx: &mut Ctx) -> Result<(), Fail> {
    for _ in 0..8 {
        let out = ctx
            .scsi(&ScsiRequest::none(&[0, 0, 0, 0, 0, 0], ctx.lun))
            .await?;
        if out.end != End::Status {
            return Err(Fail::check(format!(
                "TEST UNIT READY got {}",
                out.describe()
            )));
        }
        let ua = out.status == Some(2)
            && out
                .sense
                .as_ref()
                .is_some_and(|s| s.key == SenseKey::UNIT_ATTENTION);
        if !ua {
            return Ok(());
        }
    }
    Err(Fail::check(
        "TEST UNIT READY still reports UNIT ATTENTION after 8 attempts",
    ))
}

/// The note a case gets when the LUN lacks READ CAPACITY(16) and (10)
/// gave the capacity.
pub const RC10_FALLBACK_NOTE: &str = "READ CAPACITY(16) is not supported by the LUN (ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE): the capacity is READ CAPACITY(10)'s";

/// READ CAPACITY(16) for the block size and count; READ CAPACITY(10) only
/// when the LUN legitimately lacks (16) (ILLEGAL REQUEST with INVALID
/// COMMAND OPERATION CODE or INVALID FIELD IN CDB, SPC-4 §4.5.6), noted on
/// the case. Any other answer to (16) — an error status, short or
/// malformed parameter data — fails, naming it: no silent fallback.
pub async fn read_capacity(ctx: &mut Ctx) -> Result<(), Fail> {
    let cdb16 = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
    let out = ctx.scsi(&ScsiRequest::read(&cdb16, ctx.lun, 32)).await?;
    if out.end != End::Status {
        return Err(Fail::check(format!(
            "READ CAPACITY(16) on LUN {:?} got {}",
            ctx.lun,
            out.describe()
        )));
    }
    if out.status == Some(0) {
        if out.data.len() < 12 {
            return Err(Fail::check(format!(
                "READ CAPACITY(16) on LUN {:?} returned malformed parameter data: {} bytes, at least 12 needed (SBC-4 §5.20.2)",
                ctx.lun,
                out.data.len()
            )));
        }
        let d = &out.data;
        let last = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        let block_size = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        if block_size == 0 || last == u64::MAX {
            return Err(Fail::check(format!(
                "READ CAPACITY(16) on LUN {:?} returned malformed parameter data: RETURNED LOGICAL BLOCK ADDRESS {last:#x}, LOGICAL BLOCK LENGTH IN BYTES {block_size}",
                ctx.lun
            )));
        }
        ctx.blocks = last + 1;
        ctx.block_size = block_size;
        return Ok(());
    }
    let lacks_rc16 = out.status == Some(2)
        && out.sense.as_ref().is_some_and(|s| {
            s.key == SenseKey::ILLEGAL_REQUEST
                && (s.asc == Asc::INVALID_COMMAND_OPERATION_CODE
                    || s.asc == Asc::INVALID_FIELD_IN_CDB)
        });
    if !lacks_rc16 {
        return Err(Fail::check(format!(
            "READ CAPACITY(16) on LUN {:?} failed: {} (only ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE allows READ CAPACITY(10) instead)",
            ctx.lun,
            out.describe()
        )));
    }
    ctx.notes.push(RC10_FALLBACK_NOTE.to_owned());
    let out = ctx
        .scsi(&ScsiRequest::read(
            &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ctx.lun,
            8,
        ))
        .await?;
    if out.status == Some(0) && out.data.len() >= 8 {
        let d = &out.data;
        let block_size = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        if block_size == 0 {
            // Every case divides by it: a malformed answer fails here, as
            // READ CAPACITY(16)'s does, instead of panicking a case.
            return Err(Fail::check(format!(
                "READ CAPACITY(10) on LUN {:?} returned malformed parameter data: BLOCK LENGTH IN BYTES 0",
                ctx.lun
            )));
        }
        ctx.blocks = u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])) + 1;
        ctx.block_size = block_size;
        return Ok(());
    }
    Err(Fail::check(format!(
        "READ CAPACITY(16) is not supported and READ CAPACITY(10) failed on LUN {:?}: {}",
        ctx.lun,
        out.describe()
    )))
}

/// Runs one instance to its outcome.
pub async fn run_one(
    case: &Case,
    profile: &'static Profile,
    target: Arc<TargetSpec>,
    opts: &RunOptions,
    seed: u32,
) -> CaseResult {
    run_one_seen(case, profile, target, opts, seed).await.0
}

/// [`run_one`], and whether the target answered the case at all.
async fn run_one_seen(
    case: &Case,
    profile: &'static Profile,
    target: Arc<TargetSpec>,
    opts: &RunOptions,
    seed: u32,
) -> (CaseResult, bool) {
    let t0 = Instant::now();
    let mut result = blank_result(case, profile);
    if let Some(why) = static_gate(case, profile, opts) {
        result.outcome = Outcome::Skip(why);
        return (result, false);
    }
    let case = case.clone();
    let timing = opts.timing;
    let limit = opts.case_timeout;
    let negotiation = opts.negotiation;
    // Each case runs in its own task: a panic is the case's error, not the run's.
    let task = tokio::spawn(async move {
        let mut ctx = Ctx::new(target, timing, *profile, seed);
        ctx.negotiation = negotiation;
        let body = async {
            setup(&case, &mut ctx).await?;
            match &case.body {
                Body::Script(steps) => script::run(&mut ctx, steps).await,
                Body::Rust(f) => f(&mut ctx).await,
            }
        };
        let r = match tokio::time::timeout(limit, body).await {
            Ok(r) => r,
            Err(_) => Err(Fail::error(format!(
                "the case did not finish within {limit:?}"
            ))),
        };
        // A digest error from the target is a failure, whatever the case
        // concluded (a skip for a missing PDU, an error, even a pass).
        let r = match (r, ctx.digest_errors.first()) {
            (Err(Fail::Check(f)), _) => Err(Fail::Check(f)),
            (r, Some(d)) => {
                let then = match &r {
                    Ok(()) => String::new(),
                    Err(e) => format!(" (the case then said: {e})"),
                };
                Err(Fail::check(format!(
                    "the target sent a PDU with a wrong digest (RFC 7143 §13.1): {d}{}{then}",
                    match ctx.digest_errors.len() {
                        1 => String::new(),
                        n => format!(", and {} more", n - 1),
                    }
                )))
            }
            (r, None) => r,
        };
        (
            r,
            ctx.trace_lines(),
            std::mem::take(&mut ctx.notes),
            ctx.answered,
        )
    });
    let (r, trace, notes, answered) = match task.await {
        Ok(x) => x,
        Err(e) => (
            Err(Fail::error(format!("the case panicked: {e}"))),
            Vec::new(),
            Vec::new(),
            true,
        ),
    };
    result.duration = t0.elapsed();
    result.notes = notes;
    result.outcome = match r {
        Ok(()) => Outcome::Pass,
        Err(Fail::Check(f)) => Outcome::Fail(f),
        Err(Fail::Skip(s)) => Outcome::Skip(s),
        Err(Fail::Error(e)) => Outcome::Error(e),
    };
    if result.outcome != Outcome::Pass {
        result.trace = trace;
    }
    (result, answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::case::{CaseMeta, Profiles, Setup};

    fn suite() -> Suite {
        let mk = |f: &str, s: &str, n: &str, profiles: Profiles| Case {
            meta: CaseMeta {
                id: CaseId::new(f, s, n),
                section: "RFC 7143 §1".into(),
                level: Level::Must,
                summary: "x".into(),
                gates: vec![],
                destructive: false,
                profiles,
                setup: Setup::default(),
                origin: "test".into(),
            },
            body: Body::Script(vec![]),
        };
        Suite {
            cases: vec![
                mk("iSCSI", "Login", "A", Profiles::Default),
                mk("iSCSI", "R2T", "B", Profiles::All),
                mk(
                    "SCSI",
                    "Inquiry",
                    "C",
                    Profiles::Named(vec!["digests".into()]),
                ),
            ],
        }
    }

    fn result(name: &str, outcome: Outcome, notes: &[&str]) -> CaseResult {
        CaseResult {
            id: CaseId::new("iSCSI", "Nop", name),
            profile: profile::DEFAULT,
            section: "RFC 7143 §11.18".into(),
            level: Level::Must,
            summary: "x".into(),
            outcome,
            duration: Duration::ZERO,
            trace: Vec::new(),
            notes: notes.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    #[test]
    fn negotiation_defects_are_named_once_and_counted() {
        let strict = format!(
            "{NEGOTIATION_NOTE}the target answered FirstBurstLength=268435456 to our offer 262144: {NEGOTIATION_LOGIN_FAILED}"
        );
        let fail = || Outcome::Fail(Failure::default());
        let rs = vec![
            result("A", fail(), &[&strict]),
            result("B", fail(), &["login: a StatSN skipped", &strict]),
            result("C", Outcome::Pass, &[]),
            result("D", fail(), &[]),
            result("E", Outcome::Skip("x".into()), &[&strict]),
        ];
        let d = negotiation_defects(&rs);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("the target answered FirstBurstLength=268435456"));
        // A and B failed on it; D failed for its own reason, E skipped.
        assert_eq!(failed_by_negotiation(&rs), 2);
        let tolerated = format!("{NEGOTIATION_NOTE}… tolerated, FirstBurstLength=262144 in force");
        let rs = vec![result("A", Outcome::Pass, &[&tolerated])];
        assert_eq!(negotiation_defects(&rs).len(), 1);
        assert_eq!(failed_by_negotiation(&rs), 0);
        assert_eq!(
            RunOptions::new(TargetSpec {
                addr: "127.0.0.1:3260".parse().unwrap(),
                target_name: "t".into(),
                lun: None,
                initiator_name: "i".into(),
                chap: None,
                mutual_chap: None,
            })
            .negotiation,
            NegotiationPolicy::Strict,
            "conformance is strict unless told"
        );
    }

    #[test]
    fn plans_select_by_glob_and_profile() {
        let s = suite();
        let all = plan(&s, &[], &[], None).unwrap();
        let ids: Vec<&str> = all.iter().map(|p| p.instance.as_str()).collect();
        assert_eq!(ids[..2], ["iSCSI.Login.A", "iSCSI.R2T.B"]);
        assert!(ids.contains(&"iSCSI.R2T.B@digests"));
        assert!(ids.contains(&"SCSI.Inquiry.C@digests"));
        assert_eq!(ids.len(), 1 + profile::ALL.len() + 1);
        let some = plan(&s, &["iSCSI.*".into()], &["*@*".into()], None).unwrap();
        let ids: Vec<&str> = some.iter().map(|p| p.instance.as_str()).collect();
        assert_eq!(ids, ["iSCSI.Login.A", "iSCSI.R2T.B"]);
        let dig = plan(&s, &[], &[], Some(&["digests".to_owned()])).unwrap();
        assert_eq!(dig.len(), 2);
        assert!(
            plan(&s, &[], &[], Some(&["nope".to_owned()]))
                .unwrap_err()
                .contains("unknown profile")
        );
        assert!(
            plan(&s, &["[".into()], &[], None)
                .unwrap_err()
                .contains("invalid pattern")
        );
    }
}
