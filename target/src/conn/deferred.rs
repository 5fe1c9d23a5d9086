//! Commands of one session that run on I/O worker threads: READ and WRITE
//! on logical units whose backend may block (NBD, block devices), so that
//! the commands of one session overlap instead of waiting for each other on
//! the connection's thread.
//!
//! The full feature phase core ([`super::ffp`]) stays sans-IO: the driver
//! gives it a [`Deferred`] with a `spawn` function (the runtime's blocking
//! threads in the target, plain threads in tests) and a `wake` function
//! that tells the driver a completion is waiting. The core sends a command
//! to a worker when it may run beside the ones already running, and picks
//! completions up in [`super::ffp::FullFeature::poll_deferred`], where the
//! Data-In and status are built as for a command run inline.
//!
//! What may overlap, and what waits (the ordering is never weaker than
//! running every command inline, in arrival order):
//!
//! - only READ and WRITE (10, 12, 16) with the SIMPLE task attribute on a
//!   logical unit whose backend may block go to a worker;
//! - such a command waits for the running commands first when its block
//!   range overlaps one of them on the same LU and either is a write: an
//!   initiator that reads back what it just wrote, or writes a block twice,
//!   sees the order it sent;
//! - at most `workers` commands of a session run at once; one more waits
//!   for the first to finish;
//! - every other command (SYNCHRONIZE CACHE, FUA-less or not, UNMAP,
//!   COMPARE AND WRITE, mode pages, reservations…), every task management
//!   function, Text and Logout request waits until all running commands
//!   have completed — their status has been queued for the initiator — and
//!   then runs inline. So a SYNCHRONIZE CACHE completes only after every
//!   write acknowledged before it is durable, and a task management
//!   function never sees a command half done. A WRITE with FUA flushes in
//!   its own job before it completes, as inline.

use crate::fast_map::FastMap;
use std::sync::Arc;
use std::sync::mpsc;

use iesp_proto::bhs::Lun;

use crate::memory::Charge;
use crate::scsi::Completion;

/// A job for a worker thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs a job on some other thread.
pub type Spawn = Box<dyn Fn(Job) + Send + 'static>;

/// Tells the driver that a completion is waiting.
pub type Wake = Arc<dyn Fn() + Send + Sync + 'static>;

/// The most commands of one session that run at once by default.
pub const DEFAULT_IO_WORKERS: usize = 8;

/// A command's block range on its LU, and whether it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub lun: Lun,
    pub lba: u64,
    pub blocks: u64,
    pub write: bool,
}

impl Access {
    /// The range of a READ or WRITE (10, 12, 16) CDB; `None` for any other
    /// command (which never goes to a worker).
    pub fn of(lun: Lun, cdb: &[u8]) -> Option<Access> {
        let be = |r: std::ops::Range<usize>| -> Option<u64> {
            let b = cdb.get(r)?;
            Some(b.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
        };
        let (write, lba, blocks) = match *cdb.first()? {
            0x28 => (false, be(2..6)?, be(7..9)?),
            0x2a => (true, be(2..6)?, be(7..9)?),
            0xa8 => (false, be(2..6)?, be(6..10)?),
            0xaa => (true, be(2..6)?, be(6..10)?),
            0x88 => (false, be(2..10)?, be(10..14)?),
            0x8a => (true, be(2..10)?, be(10..14)?),
            _ => return None,
        };
        Some(Access {
            lun,
            lba,
            blocks,
            write,
        })
    }

    /// Whether the two must run in order: same LU, overlapping blocks, and
    /// at least one writes.
    pub fn conflicts(&self, other: &Access) -> bool {
        self.lun == other.lun
            && (self.write || other.write)
            && self.lba < other.lba.saturating_add(other.blocks)
            && other.lba < self.lba.saturating_add(self.blocks)
    }
}

/// What the core keeps of a command running on a worker, to answer it.
pub struct Running {
    pub lun: Lun,
    pub edtl: u32,
    pub read: bool,
    pub wanted_out: u32,
    pub r2ts: u32,
    pub access: Access,
    /// The write data's memory charge, given back when it completes.
    pub charge: Option<Charge>,
}

/// A session's deferred-execution state.
pub struct Deferred {
    pub(super) spawn: Spawn,
    pub(super) wake: Wake,
    pub(super) workers: usize,
    pub(super) done_tx: mpsc::Sender<(u32, Completion)>,
    pub(super) done_rx: mpsc::Receiver<(u32, Completion)>,
    pub(super) running: FastMap<u32, Running>,
}

impl Deferred {
    /// At most `workers` (at least 1) commands at once, each run by
    /// `spawn`; `wake` is called after each completion is queued.
    pub fn new(workers: usize, spawn: Spawn, wake: Wake) -> Deferred {
        let (done_tx, done_rx) = mpsc::channel();
        Deferred {
            spawn,
            wake,
            workers: workers.max(1),
            done_tx,
            done_rx,
            running: FastMap::default(),
        }
    }

    /// Commands running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Whether `access` must wait for a running command.
    pub fn conflicts(&self, access: &Access) -> bool {
        self.running.values().any(|r| r.access.conflicts(access))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lun(i: u16) -> Lun {
        Lun::from_index(i)
    }

    #[test]
    fn ranges_of_read_and_write_cdbs() {
        let mut r10 = [0u8; 10];
        r10[0] = 0x28;
        r10[2..6].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        r10[7..9].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(
            Access::of(lun(0), &r10),
            Some(Access {
                lun: lun(0),
                lba: 0x0102_0304,
                blocks: 8,
                write: false
            })
        );
        let mut w16 = [0u8; 16];
        w16[0] = 0x8a;
        w16[2..10].copy_from_slice(&(1u64 << 40).to_be_bytes());
        w16[10..14].copy_from_slice(&2048u32.to_be_bytes());
        let a = Access::of(lun(1), &w16).unwrap();
        assert_eq!((a.lba, a.blocks, a.write), (1 << 40, 2048, true));
        let mut w12 = [0u8; 12];
        w12[0] = 0xaa;
        w12[6..10].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(Access::of(lun(0), &w12).unwrap().blocks, 3);
        // SYNCHRONIZE CACHE, a short CDB, nothing: not deferrable.
        assert_eq!(Access::of(lun(0), &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(Access::of(lun(0), &[0x88, 0, 0]), None);
        assert_eq!(Access::of(lun(0), &[]), None);
    }

    #[test]
    fn only_overlapping_writes_conflict() {
        let a = |l: u16, lba: u64, blocks: u64, write: bool| Access {
            lun: lun(l),
            lba,
            blocks,
            write,
        };
        assert!(a(0, 0, 8, true).conflicts(&a(0, 7, 8, false)));
        assert!(a(0, 7, 8, false).conflicts(&a(0, 0, 8, true)));
        assert!(!a(0, 0, 8, true).conflicts(&a(0, 8, 8, true)), "adjacent");
        assert!(!a(0, 0, 8, false).conflicts(&a(0, 0, 8, false)), "reads");
        assert!(!a(0, 0, 8, true).conflicts(&a(1, 0, 8, true)), "other LU");
        assert!(a(0, u64::MAX - 1, 8, true).conflicts(&a(0, u64::MAX - 1, 1, false)));
    }
}
