//! Every case can fail: each case runs through the rewriting proxy
//! (`iesp_testsuite::proxy`) in front of the reference target, with the
//! fault that breaks the rule the case checks, and must fail. A case that
//! cannot fail proves nothing.
//!
//! [`BREACHES`] maps case globs to the fault (and the profile it shows in).
//! The test requires, for each entry, that every selected case instance
//! *fails* (not an error: the failure must be the target's), and that the
//! entries together cover every case that passes against the reference
//! target (its committed baseline). Cases that only skip against the
//! reference target (CHAP, optional pages) are covered by the tgt test
//! with CHAP, or listed with the reason they cannot be shown here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use iesp_testsuite::conformance::baseline::Baseline;
use iesp_testsuite::conformance::runner::{self, Quiet, RunOptions};
use iesp_testsuite::conformance::{OutcomeKind, Suite, TargetSpec, Timing};
use iesp_testsuite::proxy::{Fault, Proxy};
use iesp_testsupport::TestTarget;
use tokio::sync::Semaphore;

use Fault::*;

/// Which fault makes which cases fail, in which profile.
struct Breach {
    select: &'static [&'static str],
    faults: &'static [Fault],
    profile: &'static str,
}

const fn b(select: &'static [&'static str], faults: &'static [Fault]) -> Breach {
    Breach {
        select,
        faults,
        profile: "default",
    }
}

const fn bp(
    select: &'static [&'static str],
    faults: &'static [Fault],
    profile: &'static str,
) -> Breach {
    Breach {
        select,
        faults,
        profile,
    }
}

const BREACHES: &[Breach] = &[
    // Sequence numbers.
    b(
        &[
            "iSCSI.CmdSN.ExpCmdSnAcknowledges",
            "iSCSI.CmdSN.ImmediateDoesNotAdvance",
            "iSCSI.CmdSN.WrapAround",
            "iSCSI.Nop.NonImmediatePing",
            "iSCSI.Login.FinalResponseSequenceNumbers",
        ],
        &[ExpCmdSnAhead],
    ),
    b(
        &[
            "iSCSI.CmdSN.AboveWindowIgnored",
            "iSCSI.CmdSN.FarAboveWindowIgnored",
            "iSCSI.CmdSN.BelowWindowIgnored",
            "iSCSI.CmdSN.DuplicateIgnored",
            "iSCSI.CmdSN.HeldUntilGapFilled",
        ],
        &[ExecuteOutOfWindow],
    ),
    b(&["iSCSI.CmdSN.WindowFilled"], &[DropEveryFourth]),
    b(&["iSCSI.CmdSN.WindowNeverNegative"], &[WindowNegative]),
    b(
        &[
            "iSCSI.StatSN.ContinuesFromLogin",
            "iSCSI.StatSN.IncrementsByOne",
            "iSCSI.StatSN.AcrossResponseKinds",
            "iSCSI.StatSN.R2tDoesNotAdvance",
            "iSCSI.Login.StatSnAdvancesPerResponse",
            "iSCSI.R2T.StatSnNotAdvancedByR2t",
        ],
        &[StatSnSkip],
    ),
    b(&["iSCSI.StatSN.OldExpStatSnTolerated"], &[StrictExpStatSn]),
    // Tags.
    b(
        &["iSCSI.ITT.EchoedIn*", "iSCSI.Nop.PingWithoutData"],
        &[IttMangled],
    ),
    b(
        &[
            "iSCSI.ITT.ReservedTagOnCommand",
            "iSCSI.ITT.OutstandingTagReused",
        ],
        &[NoReject],
    ),
    // NOP.
    b(
        &["iSCSI.Nop.PingEchoesData", "iSCSI.Nop.PingDataUnaligned"],
        &[NopNoEcho],
    ),
    b(
        &[
            "iSCSI.Nop.ReservedIttGetsNoAnswer",
            "iSCSI.DataOut.DataForNoTask",
        ],
        &[AnswerStrayPdus],
    ),
    // Digests.
    b(
        &[
            "iSCSI.Digest.Crc32cNegotiated",
            "iSCSI.Digest.DigestsInDiscoverySession",
        ],
        &[RefuseDigests],
    ),
    bp(
        &["iSCSI.Digest.HeaderDigestOnEveryPdu"],
        &[BadHeaderDigest],
        "digests",
    ),
    bp(
        &[
            "iSCSI.Digest.DataDigestCoversPadding",
            "iSCSI.Digest.DataDigestOnReadData",
        ],
        &[BadDataDigest],
        "digests",
    ),
    bp(
        &["iSCSI.Digest.BadHeaderDigestDropsConnection"],
        &[HoldOpen],
        "digests",
    ),
    bp(
        &[
            "iSCSI.Digest.BadDataDigestRejected",
            "iSCSI.Digest.BadDataDigestOnDataOut",
        ],
        &[NoReject],
        "digests",
    ),
    // Login.
    b(
        &[
            "iSCSI.Login.NormalSession",
            "iSCSI.Login.DiscoverySession",
            "iSCSI.Login.SecurityToOperational",
            "iSCSI.LoginStatus.SuccessHasClassZero",
            "iSCSI.LoginStatus.DiscoveryNeedsNoTargetName",
            "iSCSI.Keys.ValueContainingEquals",
            "iSCSI.Keys.Utf8Value",
        ],
        &[RefuseLogins],
    ),
    b(&["iSCSI.Login.FirstResponseEchoesTheRequest"], &[LoginEcho]),
    b(
        &[
            "iSCSI.Login.SkipSecurityStage",
            "iSCSI.Login.SecurityDirectToFullFeature",
            "iSCSI.Discovery.SessionHasTsih",
        ],
        &[ZeroTsih],
    ),
    b(
        &[
            "iSCSI.Login.NoTransitUnlessAsked",
            "iSCSI.Login.OperationalStageEchoesCsg",
            "iSCSI.Login.ContinuedRequestIsReassembled",
        ],
        &[TransitAlways],
    ),
    b(
        &[
            "iSCSI.Login.NonLoginPduFirst",
            "iSCSI.Reinstatement.SessionReinstatement",
            "iSCSI.Reinstatement.ConnectionReinstatement",
        ],
        &[HoldOpen],
    ),
    b(
        &[
            "iSCSI.Login.TransitWithContinue",
            "iSCSI.Login.ReservedNextStage",
            "iSCSI.Login.FullFeatureAsCurrentStage",
            "iSCSI.Login.BackToSecurityStage",
            "iSCSI.Login.ChangedIsidMidLogin",
            "iSCSI.LoginStatus.UnsupportedVersion",
            "iSCSI.LoginStatus.MissingInitiatorName",
            "iSCSI.LoginStatus.MissingTargetName",
            "iSCSI.LoginStatus.UnknownTargetName",
            "iSCSI.LoginStatus.UnknownTsih",
            "iSCSI.LoginStatus.RejectCarriesNoTsih",
            "iSCSI.Keys.ReservedValueOffered",
            "iSCSI.Keys.KeyNameTooLong",
            "iSCSI.Keys.PairWithoutEquals",
            "iSCSI.Keys.EmptyKeyName",
            "iSCSI.Keys.DuplicateKey",
            "iSCSI.Keys.DuplicateKeyAcrossRequests",
            "iSCSI.Reinstatement.TooManyConnections",
            "iSCSI.Login.NonLoginPduDuringLogin",
        ],
        &[LoginStatusClass3],
    ),
    // Keys and negotiation.
    b(
        &[
            "iSCSI.Keys.UnknownKeyNotUnderstood",
            "iSCSI.Keys.PrivateKeyNotUnderstood",
            "iSCSI.Keys.KeysAreCaseSensitive",
            "iSCSI.Discovery.MisspelledKey",
            "iSCSI.Text.UnknownKeyNotUnderstood",
        ],
        &[AnswersYes],
    ),
    b(
        &[
            "iSCSI.Keys.HexNumericValue",
            "iSCSI.Keys.InvalidBoolean",
            "iSCSI.Keys.InvalidNumber",
            "iSCSI.Keys.ListSkipsUnknownValues",
            "iSCSI.Keys.ListWithNothingAcceptable",
            "iSCSI.Keys.IrrelevantInDiscovery",
            "iSCSI.Keys.SecurityKeyInOperationalStage",
            "iSCSI.Negotiation.*BurstLength*",
            "iSCSI.Negotiation.FirstBurstNotAboveMaxBurst",
            "iSCSI.Negotiation.*IsMinimum",
            "iSCSI.Negotiation.*IsMaximum",
            "iSCSI.Negotiation.*IsOr",
            "iSCSI.Negotiation.*IsAnd",
            "iSCSI.Negotiation.Digest*",
            "iSCSI.Negotiation.MaxRecvDataSegmentLength*Range",
            "iSCSI.LoginStatus.UnknownSessionType",
            "iSCSI.Discovery.SendTargetsAll",
            "iSCSI.Discovery.SendTargetsNamed",
            "iSCSI.Discovery.SendTargetsInNormalSession",
            "iSCSI.Discovery.InvalidValue",
            "iSCSI.Text.LoginOnlyKeyRefused",
        ],
        &[NotUnderstoodEverything],
    ),
    b(&["iSCSI.Negotiation.EveryOfferIsAnswered"], &[DropAnswers]),
    b(
        &["iSCSI.Keys.DeclarationsAreNotAnswered"],
        &[EchoDeclarations],
    ),
    b(
        &[
            "iSCSI.Negotiation.DefaultMaxRecvDataSegmentLength",
            "iSCSI.Text.RedeclaredMaxRecvDataSegmentLength",
        ],
        &[SkewMaxRecvDataSegmentLength],
    ),
    // Discovery and text.
    b(
        &[
            "iSCSI.Discovery.SendTargetsUnknownName",
            "iSCSI.Discovery.TargetAddressFormat",
            "iSCSI.Discovery.AnswerWithinMaxRecvDataSegmentLength",
            "iSCSI.Text.EmptyRequest",
        ],
        &[ExtraTextKeys],
    ),
    b(
        &[
            "iSCSI.Text.ContinuedRequestIsReassembled",
            "iSCSI.Text.DeclarationInFullFeature",
        ],
        &[TextFlags],
    ),
    b(
        &[
            "iSCSI.Discovery.ScsiCommandRefused",
            "iSCSI.Text.UnknownTtt",
            "iSCSI.Reject.UnknownOpcode",
            "iSCSI.Reject.AnotherUnknownOpcode",
            "iSCSI.Reject.TargetOpcodeFromInitiator",
            "iSCSI.Reject.SnackBelowErl1",
            "iSCSI.Reject.LoginRequestInFullFeature",
        ],
        &[NoReject],
    ),
    b(
        &["iSCSI.Reject.SegmentAboveMaxRecvDataSegmentLength"],
        &[NoReject, HoldOpen],
    ),
    // Each in a run of its own: after the first "crash" the runner stops
    // the run (the target is gone) and names the case that killed it.
    b(&["iSCSI.Reject.GarbageHeader"], &[CrashOnMalformed]),
    b(&["iSCSI.Reject.LengthsThatLie"], &[CrashOnMalformed]),
    // Task management and logout.
    b(
        &[
            "iSCSI.TMF.*",
            "iSCSI.Discovery.TaskManagementRefused",
            "SCSI.Commands.RequestSenseReportsUnitAttention",
        ],
        &[TmfResponseFlipped],
    ),
    b(
        &["iSCSI.Logout.*", "iSCSI.Discovery.Logout"],
        &[LogoutResponseFlipped],
    ),
    b(
        &["iSCSI.Reinstatement.IndependentSessions"],
        &[ReinstateAlways],
    ),
    // R2T.
    b(
        &["iSCSI.R2T.FirstR2tFields", "iSCSI.R2T.R2tSnIncrements"],
        &[R2tSnWrong],
    ),
    b(
        &[
            "iSCSI.R2T.R2tAfterImmediateData",
            "iSCSI.R2T.RangesCoverTheTransfer",
            "iSCSI.R2T.FirstR2tAfterUnsolicitedData",
        ],
        &[R2tOffsetShift],
    ),
    b(
        &["iSCSI.R2T.TargetTransferTagNotReserved"],
        &[R2tTttReserved],
    ),
    b(
        &["iSCSI.R2T.NoR2tWhenImmediateDataCoversAll"],
        &[StripImmediateData],
    ),
    bp(
        &["iSCSI.R2T.DesiredLengthWithinMaxBurst"],
        &[SkewMaxBurstLength],
        "small-mrdsl",
    ),
    bp(
        &["iSCSI.R2T.MaxOutstandingR2T"],
        &[SkewMaxOutstandingR2T],
        "small-mrdsl",
    ),
    // iESP's burst answers (above the offer): the login case names it.
    b(
        &["iSCSI.Negotiation.FirstBurstLengthIsMinimum"],
        &[OversizeBurstAnswers],
    ),
    // Data-In.
    b(&["iSCSI.DataIn.DataSnSequence"], &[DataSnWrong]),
    b(&["iSCSI.DataIn.BufferOffsetsInOrder"], &[DataInOffsetShift]),
    bp(
        &[
            "iSCSI.DataIn.SegmentsWithinMaxRecvDataSegmentLength",
            "iSCSI.DataIn.SequencesWithinMaxBurstLength",
        ],
        &[CoalesceDataIn],
        "small-mrdsl",
    ),
    b(
        &["iSCSI.DataIn.StatusFlagsConsistent"],
        &[StatusWithoutFinal],
    ),
    b(
        &["iSCSI.DataIn.CheckConditionInScsiResponse"],
        &[CollapseCheckCondition],
    ),
    b(&["iSCSI.DataIn.ExpDataSnInResponse"], &[SeparateStatus]),
    // Data-Out.
    b(
        &[
            "iSCSI.DataOut.SolicitedDataCompletes",
            "iSCSI.DataOut.WrongDataSn",
            "iSCSI.DataOut.WrongBufferOffset",
            "iSCSI.DataOut.MoreDataThanAskedFor",
            "iSCSI.DataOut.UnknownTtt",
            "iSCSI.DataOut.DataSnRestartsPerR2t",
            "iSCSI.DataOut.UnsolicitedDataAccepted",
        ],
        &[StatusFlip],
    ),
    bp(
        &[
            "iSCSI.DataOut.UnsolicitedRefusedWhenInitialR2T",
            "iSCSI.DataOut.ImmediateDataRefusedWhenNo",
        ],
        &[NoReject],
        "r2t-only",
    ),
    // Residuals.
    b(
        &[
            "iSCSI.Residual.ReadUnderflow",
            "iSCSI.Residual.ReadOverflow",
            "iSCSI.Residual.InquiryAllocationUnderflow",
            "iSCSI.Residual.ReadWithZeroEdtl",
            "iSCSI.Residual.WriteUnderflow",
            "iSCSI.Residual.WriteOverflow",
        ],
        &[ResidualCleared],
    ),
    b(
        &[
            "iSCSI.Residual.ReadExact",
            "iSCSI.Residual.NoDataCommandExact",
        ],
        &[ResidualInvented],
    ),
    // SCSI: the wrong status, or read data that is not what was written.
    b(&["SCSI.*"], &[StatusFlip]),
];

/// Cases that cannot be shown failing against the reference target, and why.
const NOT_HERE: &[(&str, &str)] = &[(
    "iSCSI.CHAP.",
    "CHAP: shown against tgt with a CHAP account (tgt_chap_cases_can_fail)",
)];

fn timing() -> Timing {
    Timing {
        response: Duration::from_millis(1500),
        silence: Duration::from_millis(200),
        disconnect: Duration::from_millis(1500),
        ..Timing::default()
    }
}

fn own_baseline() -> Baseline {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines/iesp-target.toml");
    let src = std::fs::read_to_string(&path).expect("the reference target's baseline");
    Baseline::parse(&path.display().to_string(), &src).expect("baseline parses")
}

/// Runs `select` through a proxy with `faults` in front of a fresh target.
async fn run_breach(suite: Arc<Suite>, br: &'static Breach) -> Vec<(String, OutcomeKind, String)> {
    let target = TestTarget::ram(64 << 20, 512).await;
    let proxy = Proxy::start_with(target.addr(), br.faults)
        .await
        .expect("proxy");
    let spec = TargetSpec {
        addr: proxy.addr,
        target_name: target.iqn().to_owned(),
        lun: Some(0),
        initiator_name: "iqn.2026-11.org.iesp-test:every-case-can-fail".to_owned(),
        chap: None,
        mutual_chap: None,
    };
    let mut opts = RunOptions::new(spec);
    opts.dataloss = true;
    opts.timing = timing();
    opts.case_timeout = Duration::from_secs(30);
    let select: Vec<String> = br.select.iter().map(|s| (*s).to_owned()).collect();
    let plan = runner::plan(&suite, &select, &[], Some(&[br.profile.to_owned()])).expect("plan");
    assert!(
        !plan.is_empty(),
        "{:?} selects nothing in profile {}",
        br.select,
        br.profile
    );
    let report = runner::run(&suite, &plan, &opts, &mut Quiet).await;
    proxy.stop().await;
    target.stop().await;
    // Every failure message a breach provokes is rendered with values:
    // no script placeholder ($name, ${expr}) reaches a report.
    for r in &report.results {
        let m = r.outcome.message();
        assert!(
            !iesp_testsuite::conformance::value::has_placeholder(&m),
            "{} under {:?}: an unexpanded placeholder in {m:?}",
            r.instance(),
            br.faults
        );
    }
    report
        .results
        .iter()
        .map(|r| (r.id.to_string(), r.outcome.kind(), r.outcome.message()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_case_fails_when_the_peer_breaks_its_rule() {
    let suite = Arc::new(Suite::builtin().expect("suite"));
    let baseline = own_baseline();
    // The cases that pass against the reference target in some profile.
    let passing: BTreeSet<String> = baseline
        .cases
        .iter()
        .filter(|(_, e)| e.outcome == OutcomeKind::Pass)
        .map(|(id, _)| id.split('@').next().unwrap_or(id).to_owned())
        .collect();

    let sem = Arc::new(Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for br in BREACHES {
        let (suite, sem) = (suite.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (br, run_breach(suite, br).await)
        });
    }
    let mut shown = BTreeSet::new();
    let mut problems = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (br, results) = r.expect("breach task");
        for (id, kind, msg) in results {
            match kind {
                OutcomeKind::Fail => {
                    shown.insert(id);
                }
                // The fault broke the case's setup (login, TEST UNIT READY,
                // READ CAPACITY): the runner reports that as an error naming
                // the step; the breach still shows the case cannot pass.
                OutcomeKind::Error if msg.starts_with(runner::SETUP_FAILED) => {
                    shown.insert(id);
                }
                // A skip where the case also skips without the fault is no
                // claim either way (a gate the proxy cannot change).
                OutcomeKind::Skip if !passing.contains(&id) => {}
                k => problems.push(format!(
                    "{id} under {:?} ({}): {} — {}",
                    br.faults,
                    br.profile,
                    k.as_str(),
                    msg.lines().next().unwrap_or("")
                )),
            }
        }
    }
    let not_here = |id: &str| NOT_HERE.iter().any(|(p, _)| id.starts_with(p));
    let uncovered: Vec<&String> = passing
        .iter()
        .filter(|id| !shown.contains(*id) && !not_here(id))
        .collect();
    assert!(
        problems.is_empty() && uncovered.is_empty(),
        "cases that did not fail under their fault:\n  {}\ncases no breach shows failing:\n  {}",
        problems.join("\n  "),
        uncovered
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    eprintln!(
        "{} cases shown failing under {} breaches",
        shown.len(),
        BREACHES.len()
    );
}

/// The CHAP cases need a target that does CHAP: tgt with an account, behind
/// the proxy.
const CHAP_BREACHES: &[Breach] = &[
    b(
        &[
            "iSCSI.CHAP.OneWay",
            "iSCSI.CHAP.Mutual",
            "iSCSI.CHAP.ResponseInBase64",
        ],
        &[RefuseLogins],
    ),
    b(
        &[
            "iSCSI.CHAP.WrongSecret",
            "iSCSI.CHAP.UnknownUser",
            "iSCSI.CHAP.WrongResponseRefused",
            "iSCSI.CHAP.OversizeResponseRefused",
            "iSCSI.CHAP.ReflectedChallengeRefused",
            "iSCSI.CHAP.NoAuthenticationRefused",
            "iSCSI.CHAP.NoAcceptableAlgorithm",
        ],
        &[LoginStatusClass3],
    ),
    b(
        &[
            "iSCSI.CHAP.ChallengeWellFormed",
            "iSCSI.CHAP.AlgorithmChosenFromList",
        ],
        &[NotUnderstoodEverything],
    ),
    b(
        &["iSCSI.CHAP.NoTransitBeforeAuthentication"],
        &[TransitAlways],
    ),
];

#[test]
fn tgt_chap_cases_can_fail() {
    use iesp_initiator::ChapCredentials;
    use iesp_testsupport::peers::{self, tgt::Tgtd};
    let Some(_) = peers::tools_or_skip(&["tgtd", "tgtadm"]) else {
        return;
    };
    let (user, secret) = ("iesp-user", "iesp-secret-0123");
    let (tuser, tsecret) = ("iesp-target", "target-secret-4567");
    let (tgtd, iqn) =
        Tgtd::with_chap_lun(16 << 20, (user, secret), (tuser, tsecret)).expect("tgtd with CHAP");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let suite = Suite::builtin().expect("suite");
    let mut problems = Vec::new();
    let mut shown = BTreeSet::new();
    rt.block_on(async {
        for br in CHAP_BREACHES {
            let proxy = Proxy::start_with(tgtd.portal(), br.faults)
                .await
                .expect("proxy");
            let mut opts = RunOptions::new(TargetSpec {
                addr: proxy.addr,
                target_name: iqn.clone(),
                lun: Some(1),
                initiator_name: "iqn.2026-11.org.iesp-test:every-case-can-fail".to_owned(),
                chap: Some(ChapCredentials::new(user, secret.as_bytes().to_vec())),
                mutual_chap: Some(ChapCredentials::new(tuser, tsecret.as_bytes().to_vec())),
            });
            opts.timing = timing();
            opts.declared.insert("chap-required".to_owned());
            let select: Vec<String> = br.select.iter().map(|s| (*s).to_owned()).collect();
            let plan =
                runner::plan(&suite, &select, &[], Some(&[br.profile.to_owned()])).expect("plan");
            let report = runner::run(&suite, &plan, &opts, &mut Quiet).await;
            proxy.stop().await;
            for r in &report.results {
                if r.outcome.kind() == OutcomeKind::Fail {
                    shown.insert(r.id.to_string());
                } else {
                    problems.push(format!(
                        "{} under {:?}: {}",
                        r.id,
                        br.faults,
                        r.outcome.kind().as_str()
                    ));
                }
            }
        }
    });
    let chap: Vec<String> = suite
        .cases
        .iter()
        .map(|c| c.meta.id.to_string())
        .filter(|id| id.starts_with("iSCSI.CHAP."))
        .collect();
    let missing: Vec<&String> = chap.iter().filter(|id| !shown.contains(*id)).collect();
    assert!(
        problems.is_empty() && missing.is_empty(),
        "did not fail:\n  {}\nnot covered: {missing:?}",
        problems.join("\n  ")
    );
}
