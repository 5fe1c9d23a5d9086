//! fsx's model of the LUN: per block, what it may legally hold — compact
//! (two tagged words a block, no copy of the data).
//!
//! A block is one of [`Content`]: a unique block of a write generation
//! (the [`iesp_blockio::block`] format), a WRITE SAME block of a generation
//! (the same at every LBA), zeros, *unknown* (never written by this run, or
//! unmapped where zeros are not promised: anything, then stable), or
//! *pinned* (an unknown block once read: the hash of what it showed). A
//! block an aborted or reset command may or may not have written holds
//! *either* its old or its new content; the next read decides which.

use iesp_blockio::block::{self, Header, Stamp};

/// What a block may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Not touched by this run: anything, then stable.
    Initial,
    /// Unmapped without a zeros promise, or otherwise undetermined.
    Unknown,
    /// The unique block of generation `g` at its LBA.
    Unique(u64),
    /// The WRITE SAME block of generation `g`.
    Same(u64),
    Zero,
    /// Read once while unknown: hash of what was there.
    Pinned(u64),
}

const TAG_SHIFT: u32 = 61;
const VALUE_MASK: u64 = (1 << TAG_SHIFT) - 1;

impl Content {
    fn pack(self) -> u64 {
        let (tag, v) = match self {
            Content::Initial => (0, 0),
            Content::Unknown => (1, 0),
            Content::Unique(g) => (2, g),
            Content::Same(g) => (3, g),
            Content::Zero => (4, 0),
            Content::Pinned(h) => (5, h),
        };
        (tag << TAG_SHIFT) | (v & VALUE_MASK)
    }

    fn unpack(w: u64) -> Content {
        let v = w & VALUE_MASK;
        match w >> TAG_SHIFT {
            0 => Content::Initial,
            1 => Content::Unknown,
            2 => Content::Unique(v),
            3 => Content::Same(v),
            4 => Content::Zero,
            _ => Content::Pinned(v),
        }
    }

    /// Whether the exact bytes are known (so they can be rendered).
    pub fn renderable(self) -> bool {
        matches!(self, Content::Unique(_) | Content::Same(_) | Content::Zero)
    }

    /// Renders the content of block `lba` into `out` (one block).
    pub fn render(self, stamp: &Stamp, lba: u64, out: &mut [u8]) {
        match self {
            Content::Unique(g) => block::render_unique(stamp, lba, g, out),
            Content::Same(g) => same_block(stamp, g, out),
            _ => out.fill(0),
        }
    }

    /// The header a rendered block carries, if any.
    pub fn header(self, stamp: &Stamp, lba: u64) -> Option<Header> {
        if !self.renderable() || self == Content::Zero {
            return None;
        }
        let mut b = vec![0u8; stamp.block_size as usize];
        self.render(stamp, lba, &mut b);
        Header::parse(&b)
    }
}

impl std::fmt::Display for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Initial => f.write_str("anything (not written by this run)"),
            Content::Unknown => f.write_str("anything (unmapped, no zeros promised)"),
            Content::Unique(g) => write!(f, "unique block of generation {g}"),
            Content::Same(g) => write!(f, "WRITE SAME block of generation {g}"),
            Content::Zero => f.write_str("zeros"),
            Content::Pinned(h) => write!(f, "what it showed before (hash {h:#x})"),
        }
    }
}

/// The WRITE SAME block of generation `g`: a duplicate-content block of
/// the format, whose variant field is the generation.
pub fn same_block(stamp: &Stamp, g: u64, out: &mut [u8]) {
    block::render_duplicate(stamp, g, out);
}

/// A 61-bit hash of a block (pinning unknown content): the block
/// format's CRC32C (hardware) of all but bytes 12..16, mixed with those
/// four bytes themselves.
pub fn hash(data: &[u8]) -> u64 {
    let crc = u64::from(block::checksum(data));
    let mut w = [0u8; 4];
    if let Some(f) = data.get(12..16) {
        w.copy_from_slice(f);
    }
    ((u64::from(u32::from_le_bytes(w)) << 29) ^ crc) & VALUE_MASK
}

/// Whether `data` is all zeros: compared a page at a time with a zero
/// page (`memcmp`, vectorised), not byte by byte.
pub fn is_zero(data: &[u8]) -> bool {
    static ZEROS: [u8; 4096] = [0; 4096];
    data.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// A block that is not what the model allows.
#[derive(Clone, Debug)]
pub struct Wrong {
    pub lba: u64,
    /// What was allowed, in words.
    pub expected: Vec<Content>,
    pub expected_header: Option<Header>,
    pub found_header: Option<Header>,
    /// The mismatch class of the block format, and why.
    pub class: String,
    pub reason: String,
    /// Where the found block first differs from the (first) expected
    /// content, when that content is known exactly: offset, then 16 bytes
    /// of each in hex.
    pub difference: Option<String>,
}

/// The most blocks a model covers (8 bytes each, plus the rare "either"
/// blocks): 2 GiB of model at most.
pub const MAX_BLOCKS: u64 = 1 << 28;

/// The model of blocks `first..first + n`.
pub struct Model {
    first: u64,
    cur: Vec<u64>,
    /// The other content of "either" blocks, by index (few at a time).
    alt: std::collections::HashMap<usize, u64>,
    touched: u64,
    pub stamp: Stamp,
    /// Unmapped blocks read as zeros (LBPRZ).
    pub unmap_zeroes: bool,
}

impl Model {
    pub fn new(first: u64, blocks: u64, stamp: Stamp, unmap_zeroes: bool) -> Model {
        let n = usize::try_from(blocks).unwrap_or(usize::MAX);
        Model {
            first,
            cur: vec![0; n],
            alt: std::collections::HashMap::new(),
            touched: 0,
            stamp,
            unmap_zeroes,
        }
    }

    fn idx(&self, lba: u64) -> usize {
        (lba - self.first) as usize
    }

    /// Blocks written, unmapped or read by this run.
    pub fn touched(&self) -> u64 {
        self.touched
    }

    /// The contents block `lba` may hold (one, or two for an "either").
    pub fn allowed(&self, lba: u64) -> Vec<Content> {
        let i = self.idx(lba);
        let mut v = vec![Content::unpack(self.cur[i])];
        if let Some(&a) = self.alt.get(&i) {
            v.push(Content::unpack(a));
        }
        v
    }

    /// The one content of `lba`, if it is determined.
    pub fn exact(&self, lba: u64) -> Option<Content> {
        let i = self.idx(lba);
        (self.alt.is_empty() || !self.alt.contains_key(&i)).then(|| Content::unpack(self.cur[i]))
    }

    fn put(&mut self, lba: u64, c: Content) {
        let i = self.idx(lba);
        if self.cur[i] == 0 {
            self.touched += 1;
        }
        self.cur[i] = c.pack();
        if !self.alt.is_empty() {
            self.alt.remove(&i);
        }
    }

    /// Sets `lba..lba + n` to `c`.
    pub fn set(&mut self, lba: u64, n: u64, c: Content) {
        for b in lba..lba + n {
            self.put(b, c);
        }
    }

    /// What an unmap leaves.
    pub fn unmapped(&self) -> Content {
        if self.unmap_zeroes {
            Content::Zero
        } else {
            Content::Unknown
        }
    }

    /// `lba..lba + n` now hold `a` or `b` (a WRITE SAME with UNMAP of a
    /// non-zero block: written, or deallocated as our target does).
    pub fn set_either(&mut self, lba: u64, n: u64, a: Content, b: Content) {
        for x in lba..lba + n {
            self.put(x, a);
            if a != b {
                let i = self.idx(x);
                self.alt.insert(i, b.pack());
            }
        }
    }

    /// `lba..lba + n` may or may not have been overwritten with `new`.
    pub fn either(&mut self, lba: u64, n: u64, new: Content) {
        for b in lba..lba + n {
            let i = self.idx(b);
            if self.alt.contains_key(&i) {
                // Three possibilities do not fit: anything, then stable.
                self.put(b, Content::Unknown);
                continue;
            }
            let old = match Content::unpack(self.cur[i]) {
                Content::Initial => Content::Unknown,
                c => c,
            };
            if old == new {
                self.put(b, new);
                continue;
            }
            if self.cur[i] == 0 {
                self.touched += 1;
            }
            self.cur[i] = old.pack();
            self.alt.insert(i, new.pack());
        }
    }

    /// Checks `found` (blocks from `lba`) and resolves what the read
    /// decided: unknown blocks are pinned, "either" blocks become the one
    /// they showed. The first wrong block stops the check.
    pub fn check(&mut self, lba: u64, found: &[u8]) -> Result<(), Box<Wrong>> {
        let bs = self.stamp.block_size as usize;
        let mut same: Option<(u64, Vec<u8>)> = None;
        for (k, b) in found.chunks_exact(bs).enumerate() {
            let at = lba + k as u64;
            let i = self.idx(at);
            let cur = Content::unpack(self.cur[i]);
            let hit = match self.matches(cur, at, b, &mut same) {
                Some(c) => Some(c),
                None => match self.alt.get(&i) {
                    Some(&a) => self.matches(Content::unpack(a), at, b, &mut same),
                    None => None,
                },
            };
            match hit {
                // Unchanged and determined: nothing to store.
                Some(c) if c == cur && self.alt.is_empty() => {}
                Some(c) => self.put(at, c),
                None => return Err(Box::new(self.wrong(at, self.allowed(at), b))),
            }
        }
        Ok(())
    }

    fn matches(
        &self,
        c: Content,
        lba: u64,
        b: &[u8],
        same: &mut Option<(u64, Vec<u8>)>,
    ) -> Option<Content> {
        let ok = match c {
            Content::Initial | Content::Unknown => return Some(Content::Pinned(hash(b))),
            Content::Unique(g) => block::is_unique_run(&self.stamp, lba, g, b),
            Content::Same(g) => {
                if same.as_ref().is_none_or(|(x, _)| *x != g) {
                    let mut v = vec![0u8; b.len()];
                    same_block(&self.stamp, g, &mut v);
                    *same = Some((g, v));
                }
                same.as_ref().is_some_and(|(_, v)| v[..] == *b)
            }
            Content::Zero => is_zero(b),
            Content::Pinned(h) => hash(b) == h,
        };
        ok.then_some(c)
    }

    fn wrong(&self, lba: u64, allowed: Vec<Content>, b: &[u8]) -> Wrong {
        let first = allowed[0];
        let expected_header = allowed.iter().find_map(|c| c.header(&self.stamp, lba));
        let expect = match first {
            Content::Unique(g) => Some(block::Expected::Unique { generation: g }),
            Content::Same(g) => Some(block::Expected::Duplicate {
                variant: g,
                generation: g,
            }),
            Content::Zero => Some(block::Expected::Zeros { generation: 0 }),
            _ => None,
        };
        let (class, reason, found_header) = match expect {
            Some(e) => {
                let v = block::classify(&self.stamp, lba, &e, b);
                (v.class.name().to_owned(), v.reason, v.found)
            }
            None => (
                "unstable".to_owned(),
                "the block changed although nothing wrote it since it was last read".to_owned(),
                Header::parse(b),
            ),
        };
        let difference = first.renderable().then(|| {
            let mut want = vec![0u8; b.len()];
            first.render(&self.stamp, lba, &mut want);
            block::first_difference(&want, b).map(|at| {
                let end = (at + 16).min(b.len());
                let hex = |x: &[u8]| {
                    x.iter()
                        .map(|v| format!("{v:02x}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                format!(
                    "first difference at byte {at}: expected {} found {}",
                    hex(&want[at..end]),
                    hex(&b[at..end])
                )
            })
        });
        Wrong {
            lba,
            expected: allowed,
            expected_header,
            found_header,
            class,
            reason,
            difference: difference.flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip_and_either() {
        for c in [
            Content::Initial,
            Content::Unknown,
            Content::Unique(7),
            Content::Same(9),
            Content::Zero,
            Content::Pinned(123),
        ] {
            assert_eq!(Content::unpack(c.pack()), c);
        }
        let stamp = Stamp::new(1, 512, 0);
        let mut m = Model::new(0, 8, stamp, true);
        m.set(0, 2, Content::Unique(1));
        m.either(0, 2, Content::Unique(2));
        let mut b = vec![0u8; 1024];
        block::render_unique(&stamp, 0, 2, &mut b[..512]);
        block::render_unique(&stamp, 1, 1, &mut b[512..]);
        m.check(0, &b).unwrap();
        assert_eq!(m.exact(0), Some(Content::Unique(2)));
        assert_eq!(m.exact(1), Some(Content::Unique(1)));
        // Unknown: pinned at first read, then stable.
        assert!(is_zero(&[0; 9000]) && is_zero(&[]));
        let mut z = vec![0u8; 9000];
        z[8999] = 1;
        assert!(!is_zero(&z) && !is_zero(&z[4096..]) && is_zero(&z[..8999]));
        let junk = vec![0x5au8; 512];
        m.check(5, &junk).unwrap();
        m.check(5, &junk).unwrap();
        assert!(m.check(5, &[0x5b; 512]).is_err());
        let w = m.check(0, &b[512..]).unwrap_err();
        assert_eq!(w.class, "misdirected");
    }
}
