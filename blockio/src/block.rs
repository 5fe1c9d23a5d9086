//! The self-describing block format shared by the tools that write test
//! data (verify; fsx next), and the classification of a block that is not
//! what was expected.
//!
//! Every logical block starts with a 48-byte header, little-endian:
//!
//! | offset | size | field                                                  |
//! |-------:|-----:|--------------------------------------------------------|
//! | 0      | 8    | magic `iESP.blk`                                       |
//! | 8      | 2    | format version ([`VERSION`])                           |
//! | 10     | 2    | flags: [`Flags::DUPLICATE`], [`Flags::RANDOM`]          |
//! | 12     | 4    | CRC32C of the block with this field left out           |
//! | 16     | 8    | LBA ([`DUPLICATE_LBA`] in a duplicate-content block)   |
//! | 24     | 8    | run id: the seed of the run that wrote it              |
//! | 32     | 8    | generation (the variant in a duplicate-content block)  |
//! | 40     | 4    | block size                                             |
//! | 44     | 4    | reserved, zero                                         |
//!
//! The payload after it is [`crate::pattern`] output: for a unique block,
//! the stream [`pattern::derive_seed`]`(seed, generation)` at the block's
//! byte position (`lba × block size`), so consecutive blocks of one
//! generation are one contiguous stream and fill at memory speed; for a
//! duplicate-content block, a stream of `(seed, variant)` that is the same
//! at every LBA — such blocks are byte-identical, which is what
//! deduplicating storage must be tested with. A block is thus a pure
//! function of (seed, LBA, generation, flags, block size): the same seed
//! writes the same image.
//!
//! [`classify`] names what a wrong block is: *misdirected* (a valid block
//! of another LBA), *stale* (a valid block of this LBA from an older write:
//! a lost write), *torn* (header present, checksum wrong), *zeros*,
//! *foreign* (no header), or *other* (valid, but not explained by the
//! above: a newer generation, another format version).

use std::fmt;

use crate::pattern;

/// First bytes of every block.
pub const MAGIC: [u8; 8] = *b"iESP.blk";
/// Format version written and understood.
pub const VERSION: u16 = 1;
/// Bytes of header before the payload.
pub const HEADER_LEN: usize = 48;
/// The smallest block the format fits in with a useful payload.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// The LBA field of a duplicate-content block.
pub const DUPLICATE_LBA: u64 = u64::MAX;
/// Distinct duplicate-content blocks per run.
pub const DUPLICATE_VARIANTS: u64 = 4;

/// Salt of the duplicate-content streams, apart from any generation.
const DUPLICATE_SALT: u64 = 0x6475_705f_0000_0000;

/// Header flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// Duplicate content: identical at every LBA.
    pub const DUPLICATE: Flags = Flags(0x0001);
    /// Written by a random-mode run (generations differ per block).
    pub const RANDOM: Flags = Flags(0x0002);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// What a run stamps into its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The run's seed, also its run id.
    pub seed: u64,
    pub block_size: u32,
    /// Flags of the run's unique blocks.
    pub flags: Flags,
}

impl Stamp {
    pub fn new(seed: u64, block_size: u32, flags: u16) -> Stamp {
        Stamp {
            seed,
            block_size,
            flags: Flags(flags),
        }
    }
}

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    pub version: u16,
    pub flags: u16,
    pub checksum: u32,
    pub lba: u64,
    pub run: u64,
    pub generation: u64,
    pub block_size: u32,
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl Header {
    /// The header of `block`, if it starts with [`MAGIC`] (any version).
    pub fn parse(block: &[u8]) -> Option<Header> {
        let b = block.get(..HEADER_LEN)?;
        if b[..8] != MAGIC {
            return None;
        }
        Some(Header {
            version: u16::from_le_bytes([b[8], b[9]]),
            flags: u16::from_le_bytes([b[10], b[11]]),
            checksum: le32(b, 12),
            lba: le64(b, 16),
            run: le64(b, 24),
            generation: le64(b, 32),
            block_size: le32(b, 40),
        })
    }

    fn write(&self, b: &mut [u8]) {
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.checksum.to_le_bytes());
        b[16..24].copy_from_slice(&self.lba.to_le_bytes());
        b[24..32].copy_from_slice(&self.run.to_le_bytes());
        b[32..40].copy_from_slice(&self.generation.to_le_bytes());
        b[40..44].copy_from_slice(&self.block_size.to_le_bytes());
        b[44..48].fill(0);
    }

    pub fn is_duplicate(&self) -> bool {
        Flags(self.flags).contains(Flags::DUPLICATE)
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_duplicate() {
            write!(f, "duplicate variant {}", self.generation)?;
        } else {
            write!(f, "LBA {} generation {}", self.lba, self.generation)?;
        }
        write!(
            f,
            ", seed {}, flags {:#06x}, format v{}, block size {}",
            self.run, self.flags, self.version, self.block_size
        )
    }
}

/// CRC32C of a block without its checksum field (bytes 12..16).
pub fn checksum(block: &[u8]) -> u32 {
    let head = block.get(..12).unwrap_or(block);
    let tail = block.get(16..).unwrap_or_default();
    crc32c::crc32c_append(crc32c::crc32c(head), tail)
}

/// Recomputes and stores a block's checksum.
pub fn reseal(block: &mut [u8]) {
    let c = checksum(block);
    if let Some(field) = block.get_mut(12..16) {
        field.copy_from_slice(&c.to_le_bytes());
    }
}

/// Whether `block` is an intact block of this format (any run).
pub fn is_valid(block: &[u8]) -> bool {
    Header::parse(block).is_some_and(|h| {
        h.version == VERSION
            && h.block_size as usize == block.len()
            && h.checksum == checksum(block)
    })
}

fn stamp_header(stamp: &Stamp, block: &mut [u8], lba: u64, generation: u64, flags: Flags) {
    Header {
        version: VERSION,
        flags: flags.0,
        checksum: 0,
        lba,
        run: stamp.seed,
        generation,
        block_size: stamp.block_size,
    }
    .write(block);
    reseal(block);
}

/// Renders consecutive unique blocks of one generation from `lba` into
/// `buf` (a whole number of blocks).
pub fn render_unique(stamp: &Stamp, lba: u64, generation: u64, buf: &mut [u8]) {
    let bs = stamp.block_size as usize;
    pattern::fill(
        pattern::derive_seed(stamp.seed, generation),
        lba.wrapping_mul(u64::from(stamp.block_size)),
        buf,
    );
    for (i, block) in buf.chunks_exact_mut(bs).enumerate() {
        stamp_header(
            stamp,
            block,
            lba.wrapping_add(i as u64),
            generation,
            stamp.flags,
        );
    }
}

/// Whether `found` (blocks from `lba`) is exactly what [`render_unique`]
/// writes for `generation` — checked without rendering: header fields,
/// the checksum of each found block, and the payload compared with the
/// pattern stream as it is generated. (A found block whose checksum is
/// right and whose every other byte is the expected one is the expected
/// block.)
pub fn is_unique_run(stamp: &Stamp, lba: u64, generation: u64, found: &[u8]) -> bool {
    let bs = stamp.block_size as usize;
    if bs < HEADER_LEN || found.len() % bs != 0 {
        return false;
    }
    let mut want = [0u8; HEADER_LEN];
    for (i, block) in found.chunks_exact(bs).enumerate() {
        Header {
            version: VERSION,
            flags: stamp.flags.0,
            checksum: 0,
            lba: lba.wrapping_add(i as u64),
            run: stamp.seed,
            generation,
            block_size: stamp.block_size,
        }
        .write(&mut want);
        if block[..12] != want[..12]
            || block[16..HEADER_LEN] != want[16..]
            || block[12..16] != checksum(block).to_le_bytes()
        {
            return false;
        }
    }
    pattern::equals_outside_headers(
        pattern::derive_seed(stamp.seed, generation),
        lba.wrapping_mul(u64::from(stamp.block_size)),
        found,
        bs,
        HEADER_LEN,
    )
}

/// Renders the duplicate-content block `variant` (the same at every LBA).
pub fn render_duplicate(stamp: &Stamp, variant: u64, block: &mut [u8]) {
    pattern::fill(
        pattern::derive_seed(stamp.seed, DUPLICATE_SALT ^ variant),
        0,
        block,
    );
    stamp_header(
        stamp,
        block,
        DUPLICATE_LBA,
        variant,
        stamp.flags | Flags::DUPLICATE,
    );
}

/// The duplicate variant a write of `generation` at `lba` uses: a few
/// variants spread over the device, so that many blocks share content.
pub fn duplicate_variant(lba: u64, generation: u64) -> u64 {
    (lba ^ generation.wrapping_mul(0x9e37_79b9)) % DUPLICATE_VARIANTS
}

/// What a block was expected to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A unique block of this LBA and generation.
    Unique { generation: u64 },
    /// Duplicate content `variant`, written as generation `generation`.
    Duplicate { variant: u64, generation: u64 },
    /// Zeros (a trim on a device that promises zeros).
    Zeros { generation: u64 },
}

impl Expected {
    /// The write generation the expectation comes from.
    pub fn generation(&self) -> u64 {
        match *self {
            Expected::Unique { generation }
            | Expected::Duplicate { generation, .. }
            | Expected::Zeros { generation } => generation,
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Unique { generation } => write!(f, "unique, generation {generation}"),
            Expected::Duplicate {
                variant,
                generation,
            } => {
                write!(f, "duplicate variant {variant} (generation {generation})")
            }
            Expected::Zeros { .. } => f.write_str("zeros (trimmed)"),
        }
    }
}

/// The kind of a mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// A valid block that belongs to another LBA.
    Misdirected,
    /// A valid block of this LBA from an older write: a lost write.
    Stale,
    /// A header, but the checksum does not match the content.
    Torn,
    /// All zeros where data was expected.
    Zeros,
    /// No header: data this format did not write.
    Foreign,
    /// A valid block not explained by the classes above.
    Other,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Misdirected,
        Class::Stale,
        Class::Torn,
        Class::Zeros,
        Class::Foreign,
        Class::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Misdirected => "misdirected",
            Class::Stale => "stale",
            Class::Torn => "torn",
            Class::Zeros => "zeros",
            Class::Foreign => "foreign",
            Class::Other => "other",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The verdict on one wrong block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub class: Class,
    /// One sentence: why this class.
    pub reason: String,
    /// The header found, if the block has one.
    pub found: Option<Header>,
}

/// Names what the wrong block `found` at `lba` is, given what was expected.
/// Call it only for a block that differs from the expected bytes.
pub fn classify(stamp: &Stamp, lba: u64, expected: &Expected, found: &[u8]) -> Verdict {
    let v = |class, reason: String, found| Verdict {
        class,
        reason,
        found,
    };
    if found.iter().all(|&b| b == 0) {
        return v(
            Class::Zeros,
            "the block reads back as all zeros".into(),
            None,
        );
    }
    let Some(h) = Header::parse(found) else {
        // A magic a few bits away from ours is our header, damaged.
        let flipped: u32 = found
            .iter()
            .zip(MAGIC.iter())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        if found.len() >= MAGIC.len() && flipped <= 3 {
            return v(
                Class::Torn,
                format!("the header's magic has {flipped} flipped bit(s)"),
                None,
            );
        }
        return v(
            Class::Foreign,
            "no block header (magic missing): data this tool did not write".into(),
            None,
        );
    };
    let sum = checksum(found);
    if h.checksum != sum || h.block_size as usize != found.len() {
        return v(
            Class::Torn,
            format!(
                "the header is there but the checksum is wrong (stored {:#010x}, content gives {sum:#010x})",
                h.checksum
            ),
            Some(h),
        );
    }
    if h.version != VERSION {
        return v(
            Class::Foreign,
            format!(
                "an intact block of format version {} (this tool writes {VERSION})",
                h.version
            ),
            Some(h),
        );
    }
    if h.run != stamp.seed {
        return v(
            Class::Foreign,
            format!("an intact block of another run (seed {})", h.run),
            Some(h),
        );
    }
    if h.is_duplicate() {
        return match expected {
            Expected::Duplicate { variant, .. }
                if h.run == stamp.seed && h.generation == *variant =>
            {
                v(
                    Class::Other,
                    "the duplicate-content header matches but the payload differs".into(),
                    Some(h),
                )
            }
            // Duplicate content this LBA was never given (by the last 64
            // generations) came from another LBA's write.
            _ if !(expected.generation().saturating_sub(64).max(1)..expected.generation())
                .any(|g| duplicate_variant(lba, g) == h.generation) =>
            {
                v(
                    Class::Misdirected,
                    format!(
                        "duplicate content (variant {}) this LBA was never given: another LBA's write",
                        h.generation
                    ),
                    Some(h),
                )
            }
            _ => v(
                Class::Stale,
                "an older duplicate-content write is still there".into(),
                Some(h),
            ),
        };
    }
    if h.lba != lba {
        return v(
            Class::Misdirected,
            format!("holds the block written for LBA {}", h.lba),
            Some(h),
        );
    }
    let want = expected.generation();
    match expected {
        Expected::Zeros { .. } => v(
            Class::Stale,
            format!("the trim was lost: still holds generation {}", h.generation),
            Some(h),
        ),
        _ if h.generation < want => v(
            Class::Stale,
            format!(
                "holds generation {} where {want} was written last",
                h.generation
            ),
            Some(h),
        ),
        Expected::Duplicate { .. } if h.generation >= want => v(
            Class::Other,
            format!(
                "holds unique generation {} where duplicate content was written",
                h.generation
            ),
            Some(h),
        ),
        _ if h.generation > want => v(
            Class::Other,
            format!(
                "holds generation {}, newer than the {want} expected",
                h.generation
            ),
            Some(h),
        ),
        _ => v(
            Class::Other,
            "the header matches but the payload differs from the seeded pattern".into(),
            Some(h),
        ),
    }
}

/// Offset of the first byte where `a` and `b` differ.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const BS: u32 = 512;

    fn stamp() -> Stamp {
        Stamp::new(42, BS, 0)
    }

    fn unique(lba: u64, generation: u64) -> Vec<u8> {
        let mut b = vec![0u8; BS as usize];
        render_unique(&stamp(), lba, generation, &mut b);
        b
    }

    /// Pinned: the bytes a seeded run writes. Changing them is a format
    /// change (bump [`VERSION`], record it in the CHANGELOG).
    #[test]
    fn golden_block() {
        let b = unique(5, 1);
        assert_eq!(
            &b[..48],
            &[
                b'i', b'E', b'S', b'P', b'.', b'b', b'l', b'k', 1, 0, 0, 0, 196, 32, 17,
                166, //
                5, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, //
                1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
            ][..]
        );
        assert_eq!(&b[48..56], &[35, 44, 173, 149, 84, 15, 63, 32]);
    }

    #[test]
    fn header_round_trip_and_validity() {
        let b = unique(7, 3);
        let h = Header::parse(&b).unwrap();
        assert_eq!(
            (h.version, h.lba, h.run, h.generation, h.block_size),
            (VERSION, 7, 42, 3, BS)
        );
        assert!(is_valid(&b));
        let mut c = b.clone();
        c[300] ^= 1;
        assert!(!is_valid(&c));
        reseal(&mut c);
        assert!(is_valid(&c));
    }

    #[test]
    fn runs_render_like_single_blocks() {
        let mut run = vec![0u8; 4 * BS as usize];
        render_unique(&stamp(), 10, 2, &mut run);
        for i in 0..4 {
            assert_eq!(run[i * 512..(i + 1) * 512], unique(10 + i as u64, 2)[..]);
        }
        assert_ne!(unique(10, 2), unique(10, 3));
        assert_ne!(unique(10, 2)[48..], unique(11, 2)[48..]);
    }

    #[test]
    fn unique_runs_are_recognised_without_rendering() {
        let s = stamp();
        let mut run = vec![0u8; 8 * BS as usize];
        render_unique(&s, 100, 4, &mut run);
        assert!(is_unique_run(&s, 100, 4, &run));
        assert!(!is_unique_run(&s, 101, 4, &run));
        assert!(!is_unique_run(&s, 100, 5, &run));
        assert!(!is_unique_run(&Stamp::new(43, BS, 0), 100, 4, &run));
        assert!(!is_unique_run(
            &Stamp::new(42, BS, Flags::RANDOM.0),
            100,
            4,
            &run
        ));
        for at in [0, 11, 12, 15, 16, 47, 48, 511, 512 + 300, 8 * 512 - 1] {
            let mut bad = run.clone();
            bad[at] ^= 0x01;
            assert!(!is_unique_run(&s, 100, 4, &bad), "byte {at}");
            // Even with a checksum that matches the damage (resealing a
            // damaged checksum field repairs it).
            reseal(&mut bad[at / 512 * 512..(at / 512 + 1) * 512]);
            assert_eq!(
                is_unique_run(&s, 100, 4, &bad),
                (12..16).contains(&at),
                "resealed byte {at}"
            );
        }
    }

    #[test]
    fn duplicates_are_identical_everywhere() {
        let s = stamp();
        let mut a = vec![0u8; 512];
        let mut b = vec![0u8; 512];
        render_duplicate(&s, 1, &mut a);
        render_duplicate(&s, 1, &mut b);
        assert_eq!(a, b);
        render_duplicate(&s, 2, &mut b);
        assert_ne!(a, b);
        assert!(is_valid(&a));
        assert!(Header::parse(&a).unwrap().is_duplicate());
        assert!((0..100).all(|l| duplicate_variant(l, 3) < DUPLICATE_VARIANTS));
    }

    fn class_of(lba: u64, expected: Expected, found: &[u8]) -> Class {
        classify(&stamp(), lba, &expected, found).class
    }

    #[test]
    fn classes() {
        let want = Expected::Unique { generation: 2 };
        // Misdirected: the block of LBA 9 at LBA 8.
        assert_eq!(class_of(8, want, &unique(9, 2)), Class::Misdirected);
        // Stale: an older generation of the same LBA.
        assert_eq!(class_of(8, want, &unique(8, 1)), Class::Stale);
        // Foreign: only an intact block of another run (or no header).
        let mut other = vec![0u8; 512];
        render_unique(&Stamp::new(43, BS, 0), 8, 2, &mut other);
        assert_eq!(class_of(8, want, &other), Class::Foreign);
        // Torn: any flip in the header, the magic and the version included.
        for bit in [3, 8 * 8 + 1, 8 * 20] {
            let mut t = unique(8, 2);
            t[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(class_of(8, want, &t), Class::Torn, "bit {bit}");
        }
        // Torn: a flipped payload bit.
        let mut torn = unique(8, 2);
        torn[200] ^= 0x10;
        assert_eq!(class_of(8, want, &torn), Class::Torn);
        // Zeros and foreign data.
        assert_eq!(class_of(8, want, &[0u8; 512]), Class::Zeros);
        assert_eq!(class_of(8, want, &[0xa5u8; 512]), Class::Foreign);
        // A newer generation than expected.
        assert_eq!(class_of(8, want, &unique(8, 3)), Class::Other);
        // A trim that did not happen.
        assert_eq!(
            class_of(8, Expected::Zeros { generation: 2 }, &unique(8, 2)),
            Class::Stale
        );
        // A duplicate block where a unique one was written later: stale if
        // this LBA was given that content before, else misdirected.
        let mut dup = vec![0u8; 512];
        let given = duplicate_variant(8, 1);
        render_duplicate(&stamp(), given, &mut dup);
        assert_eq!(class_of(8, want, &dup), Class::Stale);
        let never = (0..DUPLICATE_VARIANTS).find(|&v| v != given).unwrap();
        render_duplicate(&stamp(), never, &mut dup);
        assert_eq!(class_of(8, want, &dup), Class::Misdirected);
        // A unique block where duplicate content was written later.
        assert_eq!(
            class_of(
                8,
                Expected::Duplicate {
                    variant: 0,
                    generation: 3
                },
                &unique(8, 2)
            ),
            Class::Stale
        );
        let v = classify(&stamp(), 8, &want, &unique(9, 2));
        assert_eq!(v.found.map(|h| h.lba), Some(9));
        assert!(v.reason.contains("LBA 9"), "{}", v.reason);
    }

    #[test]
    fn differences() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
    }
}
