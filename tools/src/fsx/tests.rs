//! fsx against the in-memory device: a clean device passes; each injected
//! fault fails the run, the failure shrinks to at most 20 ops, and the
//! shrunk log replays to the same failure; the same seed at QD 8 writes
//! the same op log twice.

use std::path::Path;

use iesp_blockio::mem::{Fault, FaultRule, MemOptions};

use super::memory;
use super::report::Summary;
use super::{Options, run_on};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn mem() -> MemOptions {
    MemOptions {
        blocks: 512,
        block_size: 512,
        ..MemOptions::default()
    }
}

fn opts(seed: u64, ops: u64, dir: &Path) -> Options {
    Options {
        seed,
        qd: 8,
        ops: Some(ops),
        log: Some(dir.join("ops.jsonl")),
        shrink_log: Some(dir.join("shrunk.jsonl")),
        ..Options::default()
    }
}

fn run_with(faults: &[FaultRule], o: &Options) -> Summary {
    let m = mem();
    let f = faults.to_vec();
    let fresh: super::shrink::Factory = Box::new(move || memory::device(&m, &f));
    rt().block_on(run_on(memory::device(&mem(), faults), o, Some(fresh), None))
        .unwrap()
}

/// Ops of a log, without the header line (its start time differs).
fn ops_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_clean_device_passes_with_every_op() {
    let dir = tempfile::tempdir().unwrap();
    let s = run_with(&[], &opts(11, 4000, dir.path()));
    assert_eq!(s.exit_code, 0, "{}", s.render());
    for op in [
        "read",
        "write",
        "write-fua",
        "unmap",
        "write-same",
        "write-same-unmap",
        "compare-and-write",
        "compare-and-write-miscompare",
        "flush",
    ] {
        assert!(
            s.per_op.iter().any(|r| r.op == op && r.count > 0),
            "{op} did not run: {}",
            s.render()
        );
    }
    assert!(s.ops_not_run.iter().any(|n| n.op == "abort-task"));
}

#[test]
fn same_seed_same_log_at_qd_8() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let sa = run_with(&[], &opts(5, 3000, a.path()));
    let sb = run_with(&[], &opts(5, 3000, b.path()));
    assert_eq!((sa.exit_code, sb.exit_code), (0, 0));
    let (la, lb) = (
        ops_of(&a.path().join("ops.jsonl")),
        ops_of(&b.path().join("ops.jsonl")),
    );
    assert_eq!(la.len(), 3000);
    assert!(la == lb, "the op logs differ");
    let c = tempfile::tempdir().unwrap();
    run_with(&[], &opts(6, 3000, c.path()));
    assert_ne!(
        la,
        ops_of(&c.path().join("ops.jsonl")),
        "another seed, other ops"
    );
}

/// The fault fails the run, shrinks to <= 20 ops, and the reproducer
/// replays to the same failure (and passes without the fault).
fn sensitive(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let rule = FaultRule::new(fault.clone()).lbas(100..101);
    let s = run_with(std::slice::from_ref(&rule), &opts(7, 20_000, dir.path()));
    assert_eq!(s.exit_code, 1, "{fault:?} not found: {}", s.render());
    let f = s.failure.as_ref().unwrap();
    let r = s.reproducer.as_ref().expect("shrunk");
    assert!(r.reproduces && r.ops <= 20, "{fault:?}: {r:?}");
    let shrunk = dir.path().join("shrunk.jsonl");
    let mut o = Options {
        replay: Some(shrunk.clone()),
        log: None,
        shrink_log: None,
        ..Options::default()
    };
    let again = run_with(std::slice::from_ref(&rule), &o);
    let g = again.failure.as_ref().expect("replay fails");
    assert_eq!((g.kind, again.exit_code), (f.kind, 1), "{}", again.render());
    assert_eq!(again.ops as usize, r.ops);
    o.replay = Some(shrunk);
    let clean = run_with(&[], &o);
    assert_eq!(clean.exit_code, 0, "without the fault: {}", clean.render());
}

#[test]
fn finds_a_dropped_write() {
    sensitive(Fault::DropWrite);
}

#[test]
fn finds_a_bit_flip() {
    sensitive(Fault::FlipOnRead { bit: 803 });
}

#[test]
fn finds_a_stale_read() {
    sensitive(Fault::StaleRead);
}

#[test]
fn finds_a_write_same_that_ignores_unmap() {
    sensitive(Fault::WriteSameUnmapIgnored);
}

#[test]
fn finds_a_compare_and_write_that_writes_on_miscompare() {
    sensitive(Fault::CompareAndWriteOnMiscompare);
}

#[test]
fn bad_ranges_and_weights_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = mem();
    let go = |o: Options| {
        rt().block_on(run_on(memory::device(&m, &[]), &o, None, None))
            .map(|_| ())
            .unwrap_err()
    };
    let e = go(Options {
        lba_start: 500,
        lba_count: Some(13),
        ..Options::default()
    });
    assert_eq!(e.code, 2);
    assert!(e.message.contains("outside"), "{e}");
    let e = go(Options {
        weights: vec![(super::ops::Kind::Read, 0)],
        ..Options::default()
    });
    assert_eq!(e.code, 2);
    assert!(e.message.contains("sum to 0"), "{e}");
    let _ = dir;
}
