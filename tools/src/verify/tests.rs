//! verify on the in-memory device (no socket, no file): clean runs pass,
//! and each injected fault is found and classified.

use super::*;
use iesp_blockio::Sense;
use iesp_blockio::mem::{Failure as Fail, Fault, FaultRule, MemDevice};
use iesp_proto::scsi::Asc;

const BLOCKS: u64 = 256;

fn opts(mode: Mode, passes: Option<u64>, queue_depth: usize) -> Options {
    Options {
        target: "memory".into(),
        mode,
        passes,
        workers: 1,
        queue_depth,
        io_size: 4096,
        seed: Some(7),
        progress: ProgressMode::Quiet,
        print_header: false,
        ..Options::default()
    }
}

fn device() -> MemDevice {
    MemDevice::new(BLOCKS, 512)
}

fn run_mem(dev: MemDevice, o: &Options) -> Summary {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run_on(AnyDevice::Memory(dev), o, None))
        .unwrap_or_else(|f| panic!("verify could not run: {f}"))
}

fn class(s: &Summary, name: &str) -> u64 {
    s.mismatches_by_class.get(name).copied().unwrap_or(0)
}

fn assert_only(s: &Summary, name: &str, n: u64) {
    assert_eq!(s.outcome, Outcome::Mismatch, "{}", s.render(5));
    assert_eq!(s.exit_code, exit::MISMATCH);
    assert_eq!(class(s, name), n, "{:?}", s.mismatches_by_class);
    assert_eq!(s.mismatch_count, n, "{:?}", s.mismatches_by_class);
    assert!(
        s.mismatches.iter().all(|m| m.class.name() == name),
        "{}",
        s.render(5)
    );
}

#[test]
fn clean_sequential_and_random_runs_pass() {
    let s = run_mem(device(), &opts(Mode::Sequential, Some(2), 4));
    assert_eq!(s.outcome, Outcome::Pass, "{}", s.render(5));
    assert_eq!(s.exit_code, exit::PASS);
    assert_eq!(s.blocks_verified, 2 * BLOCKS);
    assert_eq!(s.bytes_written, 2 * BLOCKS * 512);
    let s = run_mem(device(), &opts(Mode::Random, None, 4));
    assert_eq!(s.outcome, Outcome::Pass, "{}", s.render(5));
    assert!(s.verified_percent >= 100.0, "{}", s.verified_percent);
    assert!(s.trims > 0 && s.writes_duplicate > 0, "{}", s.render(5));
}

#[test]
fn a_dropped_write_reads_back_stale() {
    let d = device();
    // The second write over LBA 10 (pass 2) is acknowledged, not stored.
    d.inject(FaultRule::new(Fault::DropWrite).lbas(10..11).nth(2));
    let s = run_mem(d, &opts(Mode::Sequential, Some(2), 4));
    assert_only(&s, "stale", 1);
    assert_eq!(s.mismatches[0].lba, 10);
}

#[test]
fn stale_data_is_stale() {
    let d = device();
    d.inject(FaultRule::new(Fault::StaleRead).lbas(20..22).nth(2));
    let s = run_mem(d, &opts(Mode::Sequential, Some(2), 4));
    assert_only(&s, "stale", 2);
}

#[test]
fn a_flipped_bit_is_torn_on_store_and_on_read() {
    let d = device();
    d.inject(FaultRule::new(Fault::FlipOnStore { bit: 8 * 300 + 3 }).lbas(30..31));
    assert_only(&run_mem(d, &opts(Mode::Sequential, None, 4)), "torn", 1);
    let d = device();
    d.inject(FaultRule::new(Fault::FlipOnRead { bit: 8 * 100 }).lbas(77..78));
    let s = run_mem(d, &opts(Mode::Sequential, None, 4));
    assert_only(&s, "torn", 1);
    assert_eq!(s.mismatches[0].lba, 77);
}

#[test]
fn a_misdirected_write_is_misdirected() {
    let d = device();
    // Queue depth 1: LBA 16..24 is written first, then the write of
    // 40..48 lands on it; 40..48 stays zeros.
    d.inject(FaultRule::new(Fault::Misdirect { to_lba: 16 }).lbas(40..41));
    let s = run_mem(d, &opts(Mode::Sequential, None, 1));
    assert_eq!(s.outcome, Outcome::Mismatch);
    assert_eq!(class(&s, "misdirected"), 8, "{:?}", s.mismatches_by_class);
    assert_eq!(class(&s, "zeros"), 8, "{:?}", s.mismatches_by_class);
}

#[test]
fn failed_commands_are_io_errors() {
    let d = device();
    d.inject(
        FaultRule::new(Fault::Fail(Fail::Io("link down".into())))
            .lbas(50..51)
            .on(iesp_blockio::mem::OpClass::Read),
    );
    let s = run_mem(d, &opts(Mode::Sequential, None, 4));
    assert_eq!(s.outcome, Outcome::IoError, "{}", s.render(5));
    assert_eq!(s.exit_code, exit::IO_ERROR);
    assert_eq!((s.io_error_count, s.mismatch_count), (1, 0));
    assert_eq!(s.io_errors[0].op, "READ");
    assert!(s.io_errors[0].message.contains("link down"));

    // A write refused with CHECK CONDITION: an I/O error, and the
    // chunk it did not write is not compared.
    let d = device();
    let sense = Sense::medium_error(Asc(0x0c00), 60);
    d.inject(FaultRule::new(Fault::Fail(Fail::Check(sense))).lbas(60..61));
    let s = run_mem(d, &opts(Mode::Sequential, None, 4));
    assert_eq!(s.outcome, Outcome::IoError, "{}", s.render(5));
    assert_eq!((s.io_error_count, s.mismatch_count), (1, 0));
    assert_eq!(s.io_errors[0].op, "WRITE");
    assert!(
        s.io_errors[0].message.contains("CHECK CONDITION"),
        "{}",
        s.io_errors[0].message
    );
    assert_eq!(s.blocks_verified, BLOCKS - 8);

    // Enough of them stop the run.
    let d = device();
    d.inject(FaultRule::new(Fault::Fail(Fail::Io("gone".into()))));
    let mut o = opts(Mode::Sequential, None, 4);
    o.limits.max_io_errors = 3;
    let s = run_mem(d, &o);
    assert_eq!(s.outcome, Outcome::IoError);
    assert!(
        s.stopped_by
            .as_deref()
            .is_some_and(|r| r.contains("I/O errors")),
        "{:?}",
        s.stopped_by
    );
}

/// A random run on a write-back device whose power fails mid-run, then a
/// check against the state it saved: `(run, check)`.
fn power_loss(lying_flush: bool) -> (Summary, Summary) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let d = MemDevice::new(BLOCKS, 512).write_back();
    let plug = d.handle();
    d.lie_about_flush(lying_flush);
    d.power_loss_after_writes(150);
    let mut o = opts(Mode::Random, None, 4);
    o.flush_every = durable::FlushPolicy::Writes(10);
    o.state_out = Some(state.clone());
    o.limits.max_io_errors = 4;
    let run = run_mem(d, &o);
    assert!(plug.powered_off(), "the power failed during the run");
    assert_eq!(run.outcome, Outcome::IoError, "{}", run.render(5));
    assert!(run.flushes > 0, "{}", run.render(5));
    plug.restore_power();
    let saved = StateFile::load(&state).unwrap();
    assert!(!saved.durable_extents.is_empty());
    let mut c = opts(Mode::Check, None, 4);
    c.state_in = Some(state);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let check = rt
        .block_on(run_on(AnyDevice::Memory(plug), &c, Some(saved)))
        .unwrap_or_else(|f| panic!("the check could not run: {f}"));
    (run, check)
}

#[test]
fn power_loss_of_a_write_back_device_loses_only_unflushed_writes() {
    let (_, c) = power_loss(false);
    assert_eq!(c.mismatch_count, 0, "{}", c.render(5));
    assert_eq!(c.lost_flushed_writes, 0);
    assert!(c.legally_lost > 0, "{}", c.render(5));
    assert!(c.blocks_verified > 0, "{}", c.render(5));
    assert_eq!(c.exit_code, exit::PASS, "{}", c.render(5));
    assert!(c.render(5).contains("legally lost"), "{}", c.render(5));
}

#[test]
fn a_lying_flush_shows_as_lost_flushed_writes() {
    let (_, c) = power_loss(true);
    assert!(c.lost_flushed_writes > 0, "{}", c.render(5));
    assert!(c.mismatch_count >= c.lost_flushed_writes, "{}", c.render(5));
    assert_eq!(c.exit_code, exit::MISMATCH, "{}", c.render(5));
    assert!(
        c.render(5).contains("LOST FLUSHED WRITES"),
        "{}",
        c.render(5)
    );
}

#[test]
fn a_state_file_of_another_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut o = opts(Mode::Random, None, 4);
    o.state_out = Some(state.clone());
    let s = run_mem(device(), &o);
    assert_eq!(s.exit_code, exit::PASS, "{}", s.render(5));
    let mut saved = StateFile::load(&state).unwrap();
    saved.capacity_blocks += 1;
    let mut c = opts(Mode::Check, None, 4);
    c.state_in = Some(state);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(run_on(AnyDevice::Memory(device()), &c, Some(saved.clone())))
        .unwrap_err();
    assert_eq!(e.code, exit::USAGE);
    assert!(e.to_string().contains("blocks"), "{e}");
    saved.capacity_blocks -= 1;
    saved.identity = "memory:other".into();
    let e = rt
        .block_on(run_on(AnyDevice::Memory(device()), &c, Some(saved)))
        .unwrap_err();
    assert!(e.to_string().contains("another target"), "{e}");
}

#[test]
fn an_unmap_the_device_rejects_is_an_io_error_naming_it() {
    let d = device();
    let sense = Sense::illegal_request(Asc::INVALID_FIELD_IN_PARAMETER_LIST);
    d.inject(FaultRule::new(Fault::Fail(Fail::Check(sense))).on(iesp_blockio::mem::OpClass::Unmap));
    let mut o = opts(Mode::Random, None, 4);
    o.mix = "u=50,t=50".parse().unwrap();
    let s = run_mem(d, &o);
    assert_eq!(s.exit_code, exit::IO_ERROR, "{}", s.render(5));
    assert_eq!(s.trims_skipped, 0, "never silently skipped");
    assert_eq!(s.io_errors[0].op, "UNMAP", "{}", s.render(5));
    assert!(
        s.io_errors[0].message.contains("ILLEGAL REQUEST"),
        "{}",
        s.io_errors[0].message
    );
}

/// Each corruption class through the in-memory device, and the exact class
/// reported: a flip anywhere in the header (magic, version) is torn; only an
/// intact block of another run is foreign.
#[test]
fn corruption_classes_match_their_definitions() {
    for (bit, what) in [(2, "magic"), (8 * 8 + 1, "version"), (8 * 24, "run")] {
        let d = device();
        d.inject(FaultRule::new(Fault::FlipOnStore { bit }).lbas(30..31));
        let s = run_mem(d, &opts(Mode::Sequential, None, 4));
        assert_only(&s, "torn", 1);
        assert_eq!(s.mismatches[0].lba, 30, "{what}");
    }
    // Another run's intact block: foreign.
    let d = device();
    let plug = d.handle();
    let s = run_mem(d, &opts(Mode::Sequential, None, 4));
    assert_eq!(s.exit_code, exit::PASS, "{}", s.render(5));
    let mut other = vec![0u8; 512];
    block::render_unique(&Stamp::new(8, 512, 0), 5, 1, &mut other);
    plug.poke(5, &other);
    let mut c = opts(Mode::Check, None, 4);
    c.generation = Some(1);
    assert_only(&run_mem(plug, &c), "foreign", 1);
}
