//! The durability model of random mode: per block, the last write known
//! durable (flushed, or written with FUA) besides the last acknowledged
//! one, and the flush policy (`--flush-every N|DURATION`) that moves the
//! one to the other.
//!
//! A write acknowledged without FUA is *pending*: a disk with a volatile
//! write cache (WCE=1) may lose it on power loss until a SYNCHRONIZE CACHE
//! that started after it completes. [`Durability::flush`] takes the pending
//! writes completed so far, flushes, and on success records each as the
//! block's durable state, in order. After a crash, `--check` against the
//! state file classifies a block that reads back as its durable content but
//! not its latest as **legally lost** (a notice), and a block whose latest
//! write was durable and that reads back as something else as a **lost
//! flushed write** (a failure).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iesp_blockio::Device;

use crate::verify::engine::Ctx;
use crate::verify::report::Stats;
use crate::verify::state::{BlockState, StateTable};

/// When random mode flushes (besides once at the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Only at the end of the run.
    #[default]
    End,
    /// After every N acknowledged write commands.
    Writes(u64),
    /// When this long has passed since the last flush.
    Every(Duration),
}

impl std::str::FromStr for FlushPolicy {
    type Err = String;

    /// `16` (write commands) or a duration (`500ms`, `2s`).
    fn from_str(s: &str) -> Result<FlushPolicy, String> {
        if let Ok(n) = s.trim().parse::<u64>() {
            return match n {
                0 => Err("--flush-every 0: give a number of writes ≥ 1 or a duration".into()),
                n => Ok(FlushPolicy::Writes(n)),
            };
        }
        iesp_cli::units::parse_duration_nonzero(s)
            .map(FlushPolicy::Every)
            .map_err(|e| format!("`{s}` is neither a number of writes nor a duration: {e}"))
    }
}

/// Durable states and the writes not yet flushed.
#[derive(Debug)]
pub struct Durability {
    /// What each block holds for sure after a power loss.
    pub durable: StateTable,
    /// Acknowledged, not yet flushed: (LBA, state), in completion order.
    pending: Mutex<Vec<(u64, BlockState)>>,
    policy: FlushPolicy,
    writes_since: AtomicU64,
    last_flush: Mutex<Instant>,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
    /// Successful flushes so far.
    pub flushes: AtomicU64,
}

impl Durability {
    pub fn new(first_lba: u64, blocks: u64, policy: FlushPolicy) -> anyhow::Result<Durability> {
        Ok(Durability {
            durable: StateTable::new(first_lba, blocks)?,
            pending: Mutex::new(Vec::new()),
            policy,
            writes_since: AtomicU64::new(0),
            last_flush: Mutex::new(Instant::now()),
            flushing: tokio::sync::Mutex::new(()),
            flushes: AtomicU64::new(0),
        })
    }

    /// A write (or trim) of `lba` to `state` was acknowledged; with FUA it
    /// is durable already.
    pub fn wrote(&self, lba: u64, state: BlockState, fua: bool) {
        if fua {
            self.durable.set(lba, state.content());
        } else {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((lba, state.content()));
        }
    }

    /// A write command completed: flushes when the policy says so.
    pub async fn command_done(&self, ctx: &Ctx) {
        let n = self.writes_since.fetch_add(1, Ordering::Relaxed) + 1;
        let due = match self.policy {
            FlushPolicy::End => false,
            FlushPolicy::Writes(every) => n >= every,
            FlushPolicy::Every(d) => {
                self.last_flush
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed()
                    >= d
            }
        };
        if due {
            self.flush(ctx).await;
        }
    }

    /// SYNCHRONIZE CACHE; on success every write acknowledged before it is
    /// durable. A failed flush leaves them pending (and counts an I/O
    /// error).
    pub async fn flush(&self, ctx: &Ctx) -> bool {
        let _one = self.flushing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        self.writes_since.store(0, Ordering::Relaxed);
        *self.last_flush.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        match ctx.dev.flush().await {
            Ok(()) => {
                for (lba, st) in batch {
                    self.durable.set(lba, st);
                }
                Stats::add(&self.flushes, 1);
                true
            }
            Err(e) => {
                ctx.io_error(&e);
                let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let later = std::mem::replace(&mut *p, batch);
                p.extend(later);
                false
            }
        }
    }

    /// Blocks whose latest acknowledged write is not durable yet.
    pub fn pending_blocks(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!("16".parse::<FlushPolicy>(), Ok(FlushPolicy::Writes(16)));
        assert_eq!(
            "500ms".parse::<FlushPolicy>(),
            Ok(FlushPolicy::Every(Duration::from_millis(500)))
        );
        assert!("0".parse::<FlushPolicy>().is_err());
        assert!("often".parse::<FlushPolicy>().is_err());
    }
}
