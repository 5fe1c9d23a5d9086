//! Random mode, in the spirit of iESP's `test-blockdevice.py`: workers pick
//! random ranges (1 to `max_blocks` blocks), reserve them so that no two
//! overlap, verify what the range should hold (known from the state
//! table), then give every block new content — a unique block of the next
//! generation, duplicate content, or a trim, by the weights of the [`Mix`].
//!
//! Trimmed blocks are expected to read back as zeros only where the device
//! promises it (LBPRZ, a hole in a file); elsewhere they are not compared
//! until rewritten. When the device cannot trim, the trim becomes a unique
//! write and is counted as skipped. Every slot (`workers × queue depth` of
//! them) has its own PRNG seeded from the run's seed: with one slot the
//! whole run is reproducible.
//!
//! Durability ([`crate::verify::durable`]): every acknowledged write and
//! trim is pending until a flush (`--flush-every`, and one at the end)
//! makes it durable; `fua=P` in the mix sends P % of the write commands
//! with FUA, durable at once. While a command is in flight its blocks are
//! unknown in the table, so a state saved meanwhile (periodically, or by a
//! signal) never expects what may or may not have happened.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};

use iesp_blockio::{AlignedBuf, Device, DeviceError, LbaRange, block, pattern};

use crate::verify::durable::Durability;
use crate::verify::engine::{Counter, Ctx, Expect};
use crate::verify::report::Stats;
use crate::verify::state::{BlockState, StateKind, StateTable};

/// Weights of the three operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub unique: u32,
    pub duplicate: u32,
    pub trim: u32,
    /// Percentage of write commands sent with FUA (not a weight).
    pub fua: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            unique: 80,
            duplicate: 10,
            trim: 10,
            fua: 0,
        }
    }
}

impl Mix {
    fn total(&self) -> u64 {
        u64::from(self.unique) + u64::from(self.duplicate) + u64::from(self.trim)
    }

    fn pick(&self, r: u64) -> StateKind {
        let r = r % self.total().max(1);
        if r < u64::from(self.unique) {
            StateKind::Unique
        } else if r < u64::from(self.unique) + u64::from(self.duplicate) {
            StateKind::Duplicate
        } else {
            StateKind::Trimmed
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    /// `unique=80,duplicate=10,trim=10`; names may be shortened to `u`,
    /// `d`, `t`; a missing name weighs 0.
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut m = Mix {
            unique: 0,
            duplicate: 0,
            trim: 0,
            fua: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected NAME=WEIGHT"))?;
            let v: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the weight is not a number"))?;
            match k.trim() {
                "unique" | "u" => m.unique = v,
                "duplicate" | "dup" | "d" => m.duplicate = v,
                "trim" | "t" => m.trim = v,
                "fua" if v <= 100 => m.fua = v,
                "fua" => return Err(format!("`{part}`: fua is a percentage (0 to 100)")),
                other => {
                    return Err(format!(
                        "unknown operation `{other}` (unique, duplicate, trim; fua=PERCENT)"
                    ));
                }
            }
        }
        if m.total() == 0 {
            return Err("the mix needs at least one non-zero weight".into());
        }
        Ok(m)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unique={},duplicate={},trim={}",
            self.unique, self.duplicate, self.trim
        )?;
        if self.fua > 0 {
            write!(f, ",fua={}", self.fua)?;
        }
        Ok(())
    }
}

/// Ranges being worked on: [start, end) in LBAs.
#[derive(Default)]
struct Reservations(Mutex<Vec<(u64, u64)>>);

impl Reservations {
    fn try_reserve(&self, start: u64, end: u64) -> bool {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if r.iter().any(|&(s, e)| start < e && s < end) {
            return false;
        }
        r.push((start, end));
        true
    }

    fn release(&self, start: u64) {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = r.iter().position(|&(s, _)| s == start) {
            r.swap_remove(i);
        }
    }
}

/// Salt of the slot PRNGs.
const SLOT_SALT: u64 = 0x7261_6e64_6f6d_0000;

/// Runs random mode until a limit or an abort stops it.
pub async fn run(
    ctx: &Arc<Ctx>,
    table: Arc<StateTable>,
    dur: Arc<Durability>,
    mix: Mix,
    max_blocks: u32,
) {
    let reservations = Arc::new(Reservations::default());
    let slots = ctx.workers * ctx.queue_depth;
    ctx.set_phase("random", ctx.blocks * ctx.bs() as u64, Counter::Verified);
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..slots {
        let (ctx, table, reservations, dur) = (
            ctx.clone(),
            table.clone(),
            reservations.clone(),
            dur.clone(),
        );
        tasks.spawn(async move {
            let w = Worker {
                table: &table,
                dur: &dur,
                res: &reservations,
            };
            w.run(&ctx, mix, max_blocks, slot as u64).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            ctx.abort(format!("a worker failed: {e}"));
        }
    }
    dur.flush(ctx).await;
}

/// What a worker shares with the others.
struct Worker<'a> {
    table: &'a Arc<StateTable>,
    dur: &'a Durability,
    res: &'a Reservations,
}

impl Worker<'_> {
    async fn run(&self, ctx: &Arc<Ctx>, mix: Mix, max_blocks: u32, slot: u64) {
        let (table, res) = (self.table, self.res);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(pattern::derive_seed(
            ctx.stamp.seed,
            SLOT_SALT ^ slot,
        ));
        let max_n = u64::from(max_blocks.min(ctx.io_blocks))
            .min(ctx.blocks)
            .max(1);
        let mut bufs = Bufs {
            main: ctx.buffer(),
            other: ctx.buffer(),
        };
        let mut tries = 0u32;
        while ctx.keep_going(&ctx.stats.bytes_written) {
            let n = 1 + rng.next_u64() % max_n;
            let start = ctx.first_lba + rng.next_u64() % (ctx.blocks - n + 1);
            if !res.try_reserve(start, start + n) {
                tries += 1;
                if tries % 8 == 0 {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            let kinds: Vec<StateKind> = (0..n).map(|_| mix.pick(rng.next_u64())).collect();
            let fua = rng.next_u64() % 100 < u64::from(mix.fua);
            process(ctx, table, self.dur, &mut bufs, start, &kinds, fua).await;
            res.release(start);
        }
    }
}

struct Bufs {
    main: AlignedBuf,
    other: AlignedBuf,
}

/// Verifies `start..start + kinds.len()` and gives each block its new kind.
async fn process(
    ctx: &Arc<Ctx>,
    table: &Arc<StateTable>,
    dur: &Durability,
    bufs: &mut Bufs,
    start: u64,
    kinds: &[StateKind],
    fua: bool,
) {
    let bs = ctx.bs();
    let n = kinds.len();
    let end = start + n as u64;
    // 1. Verify what is known.
    if (start..end).any(|l| table.get(l).expected(l, ctx.trim_zeroes).is_some()) {
        bufs.main.set_len(n * bs);
        let buf = std::mem::take(&mut bufs.main);
        let (buf, r) = ctx.dev.read(start, buf).await;
        bufs.main = buf;
        match r {
            Ok(()) => {
                Stats::add(&ctx.stats.bytes_read, (n * bs) as u64);
                bufs.other.set_len(n * bs);
                let expect = Expect::Table(table.clone());
                ctx.compare(start, &bufs.main, &mut bufs.other, &expect, |l| {
                    let s = table.get(l);
                    if !s.verified() {
                        table.set(l, s.with_verified());
                        Stats::add(&ctx.stats.distinct_verified, 1);
                    }
                });
            }
            Err(e) => ctx.io_error(&e),
        }
    } else {
        Stats::add(
            &ctx.stats.blocks_unverifiable,
            (start..end)
                .filter(|&l| table.get(l).kind() != StateKind::Unknown)
                .count() as u64,
        );
    }
    // 2. New content: the next generation of every block.
    let gens: Vec<u64> = (start..end)
        .map(|l| (table.get(l).generation() + 1).min(BlockState::MAX_GENERATION))
        .collect();
    bufs.main.set_len(n * bs);
    for (i, k) in kinds.iter().enumerate() {
        let lba = start + i as u64;
        let b = &mut bufs.main[i * bs..(i + 1) * bs];
        match k {
            StateKind::Duplicate => {
                if let Some(d) = ctx
                    .duplicates
                    .get(block::duplicate_variant(lba, gens[i]) as usize)
                {
                    b.copy_from_slice(d);
                }
            }
            _ => block::render_unique(&ctx.stamp, lba, gens[i], b),
        }
    }
    // 3. Apply it in segments: runs of writes, runs of trims.
    let mut a = 0;
    while a < n {
        let trim = kinds[a] == StateKind::Trimmed;
        let mut b = a + 1;
        while b < n && (kinds[b] == StateKind::Trimmed) == trim {
            b += 1;
        }
        let (lba, count) = (start + a as u64, (b - a) as u64);
        let mut write_as_unique = false;
        // In flight: what the blocks hold is unknown until the command ends.
        (a..b).for_each(|i| set_keeping_verified(table, start + i as u64, BlockState::UNKNOWN));
        if trim {
            match ctx.dev.unmap(&[LbaRange::new(lba, count)]).await {
                Ok(()) => {
                    Stats::add(&ctx.stats.trims, 1);
                    Stats::add(&ctx.stats.blocks_trimmed, count);
                    for (i, &g) in gens.iter().enumerate().take(b).skip(a) {
                        let st = BlockState::new(StateKind::Trimmed, g);
                        set_keeping_verified(table, start + i as u64, st);
                        dur.wrote(start + i as u64, st, false);
                    }
                    dur.command_done(ctx).await;
                }
                Err(DeviceError::Unsupported { .. }) => {
                    Stats::add(&ctx.stats.trims_skipped, 1);
                    write_as_unique = true;
                }
                Err(e) => {
                    ctx.io_error(&e);
                    // Whether any of it happened is unknown.
                    (a..b).for_each(|i| {
                        set_keeping_verified(table, start + i as u64, BlockState::UNKNOWN)
                    });
                }
            }
        }
        if !trim || write_as_unique {
            // The unique content for these blocks is already rendered.
            let r = if a == 0 && b == n {
                let buf = std::mem::take(&mut bufs.main);
                let (buf, r) = ctx.dev.write(lba, buf, fua).await;
                bufs.main = buf;
                r
            } else {
                bufs.other.set_len((b - a) * bs);
                bufs.other.copy_from_slice(&bufs.main[a * bs..b * bs]);
                let buf = std::mem::take(&mut bufs.other);
                let (buf, r) = ctx.dev.write(lba, buf, fua).await;
                bufs.other = buf;
                r
            };
            match r {
                Ok(()) => {
                    Stats::add(&ctx.stats.bytes_written, count * bs as u64);
                    for i in a..b {
                        let kind = if kinds[i] == StateKind::Duplicate {
                            StateKind::Duplicate
                        } else {
                            StateKind::Unique
                        };
                        let counter = if kind == StateKind::Duplicate {
                            &ctx.stats.writes_duplicate
                        } else {
                            &ctx.stats.writes_unique
                        };
                        Stats::add(counter, 1);
                        let st = BlockState::new(kind, gens[i]);
                        set_keeping_verified(table, start + i as u64, st);
                        dur.wrote(start + i as u64, st, fua);
                    }
                    dur.command_done(ctx).await;
                }
                Err(e) => {
                    ctx.io_error(&e);
                    (a..b).for_each(|i| {
                        set_keeping_verified(table, start + i as u64, BlockState::UNKNOWN)
                    });
                }
            }
        }
        a = b;
    }
}

/// Sets a block's new state; "verified at least once" stays true.
fn set_keeping_verified(table: &StateTable, lba: u64, state: BlockState) {
    let state = if table.get(lba).verified() {
        state.with_verified()
    } else {
        state
    };
    table.set(lba, state);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes() {
        assert_eq!(
            "unique=80,duplicate=10,trim=10".parse::<Mix>(),
            Ok(Mix::default())
        );
        assert_eq!(
            "u=1".parse::<Mix>(),
            Ok(Mix {
                unique: 1,
                duplicate: 0,
                trim: 0,
                fua: 0
            })
        );
        assert!("trim=0".parse::<Mix>().is_err());
        assert!("x=1".parse::<Mix>().is_err());
        assert!("unique".parse::<Mix>().is_err());
        let m = Mix {
            unique: 1,
            duplicate: 1,
            trim: 2,
            fua: 0,
        };
        assert_eq!("u=1,fua=25".parse::<Mix>().map(|m| m.fua), Ok(25));
        assert!("u=1,fua=101".parse::<Mix>().is_err());
        let picks: Vec<StateKind> = (0..4).map(|r| m.pick(r)).collect();
        assert_eq!(
            picks,
            vec![
                StateKind::Unique,
                StateKind::Duplicate,
                StateKind::Trimmed,
                StateKind::Trimmed
            ]
        );
        assert_eq!(Mix::default().to_string(), "unique=80,duplicate=10,trim=10");
    }

    #[test]
    fn reservations_do_not_overlap() {
        let r = Reservations::default();
        assert!(r.try_reserve(10, 20));
        assert!(!r.try_reserve(19, 25));
        assert!(!r.try_reserve(0, 11));
        assert!(r.try_reserve(20, 30));
        r.release(10);
        assert!(r.try_reserve(0, 11));
    }
}
