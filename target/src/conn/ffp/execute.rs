//! Where a command runs: inline on the LU, or on an I/O worker thread for
//! LUs whose backend may block ([`crate::conn::deferred`] describes what
//! waits for what). Completions of workers come back here and are answered
//! through [`super::respond`].

use super::FullFeature;
use crate::conn::deferred::{Access, Running};
use crate::scsi::{Command, Completion};
use bytes::Bytes;
use iesp_proto::bhs::Lun;
use iesp_proto::scsi::{Asc, Sense, SenseKey};

impl FullFeature {
    /// Whether `itt` is running on a worker.
    pub(super) fn is_running(&self, itt: u32) -> bool {
        self.deferred
            .as_ref()
            .is_some_and(|d| d.running.contains_key(&itt))
    }

    /// Whether the command may go to a worker: `Some(range)` once it may
    /// start (after waiting for a conflicting command or a free worker).
    /// `None`: it runs inline, after every running command has completed.
    pub(super) fn may_defer(&mut self, lun: Lun, cdb: &[u8], simple: bool) -> Option<Access> {
        let d = self.deferred.as_ref()?;
        let access = Access::of(lun, cdb)
            .filter(|_| simple && self.luns.get(lun).is_some_and(|lu| lu.may_block()));
        let Some(access) = access else {
            if d.running() > 0 {
                self.drain_deferred();
            }
            return None;
        };
        if d.conflicts(&access) {
            self.drain_deferred();
        }
        while self
            .deferred
            .as_ref()
            .is_some_and(|d| d.running() >= d.workers)
        {
            self.wait_one();
        }
        Some(access)
    }

    /// Sends a command to a worker.
    pub(super) fn defer(&mut self, itt: u32, command: Command, data: Bytes, run: Running) {
        let (luns, nexus) = (self.luns.clone(), self.nexus.clone());
        let Some(d) = self.deferred.as_mut() else {
            return;
        };
        let edtl = run.edtl;
        d.running.insert(itt, run);
        let (done, wake) = (d.done_tx.clone(), d.wake.clone());
        (d.spawn)(Box::new(move || {
            let c = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                luns.run(&nexus, &command, &data, edtl)
            }))
            .unwrap_or_else(|_| {
                tracing::error!(itt, "a command panicked on its I/O worker");
                // INTERNAL TARGET FAILURE (44h/00h).
                Completion::check_condition(&Sense::new(SenseKey::HARDWARE_ERROR, Asc(0x4400)))
            });
            let _ = done.send((itt, c));
            wake();
        }));
    }

    /// Answers a command a worker finished.
    pub(super) fn finish_deferred(&mut self, itt: u32, c: Completion) {
        let Some(run) = self.deferred.as_mut().and_then(|d| d.running.remove(&itt)) else {
            return;
        };
        self.complete(
            itt,
            run.lun,
            run.edtl,
            run.read,
            run.wanted_out,
            run.r2ts,
            c,
        );
        drop(run.charge);
    }

    /// Blocks until one running command finishes, and answers it.
    pub(super) fn wait_one(&mut self) {
        // The sender lives in `self`: `recv` never fails.
        let got = self.deferred.as_ref().map(|d| d.done_rx.recv());
        if let Some(Ok((itt, c))) = got {
            self.finish_deferred(itt, c);
        }
    }

    /// Answers every command the workers have finished; does not block.
    pub fn poll_deferred(&mut self) {
        self.refresh_window();
        loop {
            let got = self.deferred.as_ref().map(|d| d.done_rx.try_recv());
            match got {
                Some(Ok((itt, c))) => self.finish_deferred(itt, c),
                _ => return,
            }
        }
    }

    /// Blocks until every running command has finished, and answers them.
    pub fn drain_deferred(&mut self) {
        while self.deferred.as_ref().is_some_and(|d| d.running() > 0) {
            self.wait_one();
        }
    }
}
