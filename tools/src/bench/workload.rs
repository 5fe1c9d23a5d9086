//! bench's [`Workload`] on blockio's load engine: random or sequential
//! reads and writes of one block size over this worker's share of the
//! device, each slot with its own buffers and PRNG, every completion's
//! latency into the point's [`Recorder`].
//!
//! Slots record into a small local buffer and move it into the shared
//! recorder every [`FLUSH_EVERY`] completions (one lock per batch, not per
//! command). Completions before the ramp ends or after the deadline are
//! not recorded; a slot stops issuing at the deadline or on a signal.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use iesp_blockio::AlignedBuf;
use iesp_blockio::engine::{Completion, Op, OpKind, Workload};
use iesp_plots::data::Recorder;

use super::Rw;

/// Completions a slot keeps before moving them into the shared recorder.
pub const FLUSH_EVERY: usize = 256;

/// What one point runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rw: Rw,
    /// Percentage of reads under [`Rw::RandRw`].
    pub rwmix_read: u32,
    /// Bytes per command (a whole number of blocks).
    pub bs: u64,
    /// Buffer alignment.
    pub align: usize,
    /// First block of this worker's range, and its length in commands.
    pub first_lba: u64,
    pub chunks: u64,
    /// Blocks per command.
    pub blocks_per_io: u64,
    pub seed: u64,
    /// Recording starts here (after the ramp) and ends at `deadline`.
    pub measure_from: Instant,
    pub deadline: Instant,
}

/// One slot's state.
pub struct Slot {
    rng: u64,
    read_buf: Option<AlignedBuf>,
    write_buf: Option<AlignedBuf>,
    pending: Vec<(u32, u64, bool, bool)>,
    /// When this slot's last command ended (the clock [`Workload::next`]
    /// checks the deadline against: no clock read of its own per command).
    last_end: Option<Instant>,
}

/// The workload of one point, shared by every slot of every session.
pub struct BenchWorkload {
    plan: Plan,
    slots: AtomicUsize,
    sequential: AtomicU64,
    recorder: Mutex<Recorder>,
}

/// xorshift64*: quick, and good enough to pick offsets.
fn next_u64(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

impl BenchWorkload {
    pub fn new(plan: Plan) -> BenchWorkload {
        BenchWorkload {
            plan,
            slots: AtomicUsize::new(0),
            sequential: AtomicU64::new(0),
            recorder: Mutex::new(Recorder::new()),
        }
    }

    /// What this point runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What was recorded (call after the run).
    pub fn take(&self) -> Recorder {
        std::mem::take(&mut *self.recorder.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn flush(&self, slot: &mut Slot) {
        if slot.pending.is_empty() {
            return;
        }
        let bs = self.plan.bs;
        let mut r = self.recorder.lock().unwrap_or_else(|p| p.into_inner());
        for (sec, ns, write, ok) in slot.pending.drain(..) {
            r.record(sec, ns, if ok { bs } else { 0 }, write, ok);
        }
    }

    fn write_next(&self, slot: &mut Slot) -> bool {
        match self.plan.rw {
            Rw::RandRead | Rw::Read => false,
            Rw::RandWrite | Rw::Write => true,
            Rw::RandRw => (next_u64(&mut slot.rng) % 100) >= u64::from(self.plan.rwmix_read),
        }
    }
}

impl Workload for BenchWorkload {
    type Slot = Slot;

    fn slot(&self, _: usize) -> Slot {
        let i = self.slots.fetch_add(1, Ordering::Relaxed) as u64;
        let mut rng =
            iesp_cli::seed::splitmix64(self.plan.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if rng == 0 {
            rng = 1;
        }
        let len = self.plan.bs as usize;
        let read_buf = (self.plan.rw.reads()).then(|| AlignedBuf::new(len, self.plan.align));
        // Seeded data in iesp-test's block format (rendered once per
        // slot): a device bench wrote is one iesp-test wrote, so writing to
        // it again needs no --force (iesp_blockio::safety).
        let write_buf = self.plan.rw.writes().then(|| {
            let mut b = AlignedBuf::new(len, self.plan.align);
            b.set_len(len);
            let dev_bs = (self.plan.bs / self.plan.blocks_per_io.max(1)) as u32;
            let stamp = iesp_blockio::block::Stamp::new(rng, dev_bs, 0);
            iesp_blockio::block::render_unique(&stamp, 0, 1, &mut b);
            b
        });
        Slot {
            rng,
            read_buf,
            write_buf,
            pending: Vec::with_capacity(FLUSH_EVERY),
            last_end: None,
        }
    }

    fn next(&self, slot: &mut Slot) -> Option<Op> {
        let now = slot.last_end.unwrap_or_else(Instant::now);
        if now >= self.plan.deadline || crate::signal::received().is_some() {
            self.flush(slot);
            return None;
        }
        let chunk = if self.plan.rw.random() {
            next_u64(&mut slot.rng) % self.plan.chunks
        } else {
            self.sequential.fetch_add(1, Ordering::Relaxed) % self.plan.chunks
        };
        let lba = self.plan.first_lba + chunk * self.plan.blocks_per_io;
        if self.write_next(slot) {
            let buf = slot.write_buf.take()?;
            Some(Op::Write {
                lba,
                buf,
                fua: false,
            })
        } else {
            let mut buf = slot.read_buf.take()?;
            buf.set_len(self.plan.bs as usize);
            Some(Op::Read { lba, buf })
        }
    }

    fn complete(&self, slot: &mut Slot, done: Completion) {
        let write = done.kind != OpKind::Read;
        if write {
            slot.write_buf = Some(done.buf);
        } else {
            slot.read_buf = Some(done.buf);
        }
        let end = done.started + done.latency;
        slot.last_end = Some(end);
        if done.started < self.plan.measure_from || end > self.plan.deadline {
            return;
        }
        let sec =
            u32::try_from(end.duration_since(self.plan.measure_from).as_secs()).unwrap_or(u32::MAX);
        let ns = u64::try_from(done.latency.as_nanos()).unwrap_or(u64::MAX);
        slot.pending.push((sec, ns, write, done.result.is_ok()));
        if slot.pending.len() >= FLUSH_EVERY {
            self.flush(slot);
        }
    }
}
