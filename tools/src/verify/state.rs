//! What each block should hold: the per-block expectation table of random
//! mode, and the state file that carries it to a later `--check`.
//!
//! A [`BlockState`] packs one block into 32 bits: the kind of its last
//! operation (unknown, unique write, duplicate-content write, trim), a
//! "verified at least once" bit, and the generation of its last write (29
//! bits). The table is a slice of atomics so that workers update their own,
//! reserved ranges without locks.
//!
//! The state file is a JSON document in the common envelope (schema
//! `iesp-test/verify-state/2`, [`STATE_OUTPUT`] and [`STATE_VERSION`]; the
//! run's seed is the envelope's `seed`), then the block size, range and
//! trim promise, then the table run-length encoded as `[first_lba, count,
//! kind, generation]` extents. Its JSON Schema is
//! docs/schemas/verify-state.schema.json.
//!
//! What the file promises: `extents` is what every block held as the run
//! knew it when the file was written (blocks in flight then are unknown);
//! `durable_extents` is what each block holds for sure after a power loss
//! (flushed, or written with FUA); `provisional` marks a file written while
//! the run went on (`--state-every`): a block may since have been rewritten
//! with a newer generation of the same run. `identity` and
//! `capacity_blocks` name the LUN or file it belongs to; `--check` refuses
//! another. The file is written whole: a temporary file, fsync, rename,
//! fsync of the directory ([`write_durably`]).

use iesp_cli::envelope::write_durably;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use iesp_blockio::block::{self, Expected};
use iesp_cli::envelope::Envelope;

/// The output name in a state file's `schema`.
pub const STATE_OUTPUT: &str = "verify-state";
/// The version in a state file's `schema` (1 had its own `format` and
/// `version` fields instead of the envelope).
pub const STATE_VERSION: u32 = 2;

/// The kind of a block's last operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// Never written by this run: content unknown, not compared.
    Unknown,
    Unique,
    Duplicate,
    Trimmed,
}

/// One block's expectation, packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlockState(pub u32);

const KIND_SHIFT: u32 = 30;
const VERIFIED: u32 = 1 << 29;
const GENERATION_MASK: u32 = VERIFIED - 1;

impl BlockState {
    pub const UNKNOWN: BlockState = BlockState(0);
    /// The largest generation a state can hold.
    pub const MAX_GENERATION: u64 = GENERATION_MASK as u64;

    pub fn new(kind: StateKind, generation: u64) -> BlockState {
        let k = match kind {
            StateKind::Unknown => 0,
            StateKind::Unique => 1,
            StateKind::Duplicate => 2,
            StateKind::Trimmed => 3,
        };
        BlockState(k << KIND_SHIFT | generation.min(Self::MAX_GENERATION) as u32)
    }

    pub fn kind(self) -> StateKind {
        match self.0 >> KIND_SHIFT {
            0 => StateKind::Unknown,
            1 => StateKind::Unique,
            2 => StateKind::Duplicate,
            _ => StateKind::Trimmed,
        }
    }

    pub fn generation(self) -> u64 {
        u64::from(self.0 & GENERATION_MASK)
    }

    pub fn verified(self) -> bool {
        self.0 & VERIFIED != 0
    }

    pub fn with_verified(self) -> BlockState {
        BlockState(self.0 | VERIFIED)
    }

    /// Without the verified bit: what the state file records.
    pub fn content(self) -> BlockState {
        BlockState(self.0 & !VERIFIED)
    }

    /// What block `lba` should read back as; `None` when anything goes
    /// (unknown, or trimmed on a device that promises nothing).
    pub fn expected(self, lba: u64, trim_zeroes: bool) -> Option<Expected> {
        let generation = self.generation();
        match self.kind() {
            StateKind::Unknown => None,
            StateKind::Unique => Some(Expected::Unique { generation }),
            StateKind::Duplicate => Some(Expected::Duplicate {
                variant: block::duplicate_variant(lba, generation),
                generation,
            }),
            StateKind::Trimmed => trim_zeroes.then_some(Expected::Zeros { generation }),
        }
    }
}

/// Per-block states of a range of LBAs.
#[derive(Debug)]
pub struct StateTable {
    pub first_lba: u64,
    states: Vec<AtomicU32>,
}

impl StateTable {
    /// Every block unknown.
    pub fn new(first_lba: u64, blocks: u64) -> anyhow::Result<StateTable> {
        let n = usize::try_from(blocks).context("too many blocks for a state table")?;
        let mut states = Vec::new();
        states.try_reserve_exact(n).with_context(|| {
            format!("no memory for the state of {blocks} blocks (4 bytes each); use --length")
        })?;
        states.resize_with(n, || AtomicU32::new(0));
        Ok(StateTable { first_lba, states })
    }

    fn slot(&self, lba: u64) -> Option<&AtomicU32> {
        let i = usize::try_from(lba.checked_sub(self.first_lba)?).ok()?;
        self.states.get(i)
    }

    /// The state of `lba` (unknown outside the table).
    pub fn get(&self, lba: u64) -> BlockState {
        self.slot(lba).map_or(BlockState::UNKNOWN, |s| {
            BlockState(s.load(Ordering::Relaxed))
        })
    }

    /// Sets the state of `lba`. Workers only set blocks of the range they
    /// reserved, so relaxed ordering is enough; the join at the end of the
    /// run orders everything for the state file.
    pub fn set(&self, lba: u64, state: BlockState) {
        if let Some(s) = self.slot(lba) {
            s.store(state.0, Ordering::Relaxed);
        }
    }

    /// Run-length encoded contents (verified bits dropped).
    pub fn extents(&self) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        for (i, s) in self.states.iter().enumerate() {
            let st = BlockState(s.load(Ordering::Relaxed)).content();
            let lba = self.first_lba + i as u64;
            match out.last_mut() {
                Some(e) if e.state() == st && e.lba + e.count == lba => e.count += 1,
                _ => out.push(Extent {
                    lba,
                    count: 1,
                    kind: st.kind(),
                    generation: st.generation(),
                }),
            }
        }
        out
    }

    /// Loads extents; blocks outside them stay unknown.
    pub fn apply(&self, extents: &[Extent]) {
        for e in extents {
            for lba in e.lba..e.lba.saturating_add(e.count) {
                self.set(lba, e.state());
            }
        }
    }
}

/// A run of blocks with the same state, as the state file stores it:
/// `[first_lba, count, kind, generation]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "(u64, u64, StateKind, u64)",
    into = "(u64, u64, StateKind, u64)"
)]
pub struct Extent {
    pub lba: u64,
    pub count: u64,
    pub kind: StateKind,
    pub generation: u64,
}

impl Extent {
    fn state(&self) -> BlockState {
        BlockState::new(self.kind, self.generation)
    }
}

impl From<(u64, u64, StateKind, u64)> for Extent {
    fn from((lba, count, kind, generation): (u64, u64, StateKind, u64)) -> Extent {
        Extent {
            lba,
            count,
            kind,
            generation,
        }
    }
}

impl From<Extent> for (u64, u64, StateKind, u64) {
    fn from(e: Extent) -> Self {
        (e.lba, e.count, e.kind, e.generation)
    }
}

/// The state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// The target it was written for (for messages only).
    pub target: String,
    /// The run's seed: the envelope's `seed` in the file.
    #[serde(skip)]
    pub seed: u64,
    pub block_size: u32,
    /// Block-format flags of the run's unique blocks.
    pub flags: u16,
    pub first_lba: u64,
    pub blocks: u64,
    /// Trimmed blocks read back as zeros on that target.
    pub trim_zeroes: bool,
    pub extents: Vec<Extent>,
    /// What each block holds for sure after a power loss (flushed or FUA);
    /// empty in files of runs without the durability model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub durable_extents: Vec<Extent>,
    /// Written while the run went on: later writes of the same run may
    /// have replaced blocks with newer generations.
    #[serde(default)]
    pub provisional: bool,
    /// The device's identity: the LUN's device identification (VPD page
    /// 0x83) for iSCSI, the path for a file or block device.
    #[serde(default)]
    pub identity: String,
    /// The device's capacity in blocks when the file was written.
    #[serde(default)]
    pub capacity_blocks: u64,
}

impl StateFile {
    /// Writes the state file (whole: a temporary file renamed into place)
    /// in the envelope; `interrupted` when a signal stopped the run.
    pub fn save(&self, path: &Path, interrupted: bool) -> anyhow::Result<()> {
        let mut text = self
            .envelope(interrupted)
            .to_line(self)
            .context("serializing the state")?;
        text.push('\n');
        write_durably(path, text.as_bytes())
            .with_context(|| format!("writing the state file {}", path.display()))
    }

    /// Why this state file does not belong to a device of `identity` and
    /// `capacity_blocks` (files without an identity are trusted).
    pub fn mismatch(&self, identity: &str, capacity_blocks: u64) -> Option<String> {
        if !self.identity.is_empty() && self.identity != identity {
            return Some(format!(
                "the state file is for {} ({}), this target is {identity}",
                self.target, self.identity
            ));
        }
        if self.capacity_blocks != 0 && self.capacity_blocks != capacity_blocks {
            return Some(format!(
                "the state file is for a target of {} blocks, this one has {capacity_blocks}",
                self.capacity_blocks
            ));
        }
        None
    }

    /// The envelope the state file is written in.
    pub fn envelope(&self, interrupted: bool) -> Envelope {
        Envelope::for_process(STATE_OUTPUT, STATE_VERSION, Some(self.seed)).interrupted(interrupted)
    }

    pub fn load(path: &Path) -> anyhow::Result<StateFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the state file {}", path.display()))?;
        Self::from_json(&text)
            .with_context(|| format!("{} is not a verify state file", path.display()))
    }

    /// Parses a state file's text: the envelope's schema must be ours.
    pub fn from_json(text: &str) -> anyhow::Result<StateFile> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        let want = iesp_cli::envelope::schema(STATE_OUTPUT, STATE_VERSION);
        match v.get("schema").and_then(|s| s.as_str()) {
            Some(s) if s == want => {}
            Some(s) => bail!("schema {s:?}, this tool reads {want:?}"),
            None if v.get("format").is_some() => {
                bail!(
                    "a state file of an older iesp-test (format and version fields); expected schema {want:?}"
                )
            }
            None => bail!("no schema field (expected {want:?})"),
        }
        let seed = v
            .get("seed")
            .and_then(|s| s.as_u64())
            .context("no seed in the state file's envelope")?;
        let mut s: StateFile = serde_json::from_value(v)?;
        s.seed = seed;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn packing() {
        for kind in [
            StateKind::Unknown,
            StateKind::Unique,
            StateKind::Duplicate,
            StateKind::Trimmed,
        ] {
            let s = BlockState::new(kind, 12345);
            assert_eq!(
                (s.kind(), s.generation(), s.verified()),
                (kind, 12345, false)
            );
            let v = s.with_verified();
            assert_eq!(
                (v.kind(), v.generation(), v.verified()),
                (kind, 12345, true)
            );
            assert_eq!(v.content(), s);
        }
        assert_eq!(
            BlockState::new(StateKind::Unique, u64::MAX).generation(),
            BlockState::MAX_GENERATION
        );
        assert_eq!(
            BlockState::new(StateKind::Trimmed, 3).expected(0, false),
            None
        );
        assert_eq!(
            BlockState::new(StateKind::Trimmed, 3).expected(0, true),
            Some(Expected::Zeros { generation: 3 })
        );
        assert_eq!(BlockState::UNKNOWN.expected(0, true), None);
    }

    #[test]
    fn extents_round_trip_through_json() {
        let t = StateTable::new(100, 10).unwrap();
        for lba in 102..105 {
            t.set(lba, BlockState::new(StateKind::Unique, 2).with_verified());
        }
        t.set(105, BlockState::new(StateKind::Trimmed, 2));
        t.set(109, BlockState::new(StateKind::Duplicate, 7));
        t.set(5, BlockState::new(StateKind::Unique, 1)); // outside: ignored
        let ext = t.extents();
        assert_eq!(
            ext,
            vec![
                Extent {
                    lba: 100,
                    count: 2,
                    kind: StateKind::Unknown,
                    generation: 0
                },
                Extent {
                    lba: 102,
                    count: 3,
                    kind: StateKind::Unique,
                    generation: 2
                },
                Extent {
                    lba: 105,
                    count: 1,
                    kind: StateKind::Trimmed,
                    generation: 2
                },
                Extent {
                    lba: 106,
                    count: 3,
                    kind: StateKind::Unknown,
                    generation: 0
                },
                Extent {
                    lba: 109,
                    count: 1,
                    kind: StateKind::Duplicate,
                    generation: 7
                },
            ]
        );
        let file = StateFile {
            target: "t".into(),
            seed: 9,
            block_size: 512,
            flags: 2,
            first_lba: 100,
            blocks: 10,
            trim_zeroes: true,
            extents: ext,
            durable_extents: Vec::new(),
            provisional: false,
            identity: "t".into(),
            capacity_blocks: 110,
        };
        assert_eq!(file.mismatch("t", 110), None);
        assert!(
            file.mismatch("other", 110)
                .unwrap()
                .contains("this target is other")
        );
        assert!(file.mismatch("t", 111).unwrap().contains("110 blocks"));
        let json = file.envelope(false).to_line(&file).unwrap();
        assert!(json.contains("[102,3,\"unique\",2]"), "{json}");
        assert!(
            json.starts_with("{\"schema\":\"iesp-test/verify-state/2\""),
            "{json}"
        );
        let back = StateFile::from_json(&json).unwrap();
        assert_eq!(back, file);
        let old = json.replace("verify-state/2", "verify-state/1");
        assert!(StateFile::from_json(&old).is_err());
        let u = StateTable::new(100, 10).unwrap();
        u.apply(&back.extents);
        assert!((100..110).all(|l| u.get(l) == t.get(l).content()));
    }
}
