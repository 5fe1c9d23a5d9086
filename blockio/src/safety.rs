//! Is a device safe to overwrite? What makes it not:
//!
//! - a local block device that is **mounted**, has a **mounted partition**,
//!   is **active swap**, or is **held** by another block device (device
//!   mapper, MD RAID: `/sys/dev/block/M:m/holders`) — from
//!   `/proc/self/mountinfo`, `/proc/swaps` and sysfs; the exclusive open in
//!   [`crate::local`] catches the rest (another program holding it `O_EXCL`);
//! - any target (file, device, LUN) whose first 128 KiB carry a **partition
//!   table or file system signature** — the well-known magic numbers below,
//!   checked the way blkid(8) finds them. Blocks that carry a valid header of
//!   our own block format ([`crate::block`]) are skipped: a device we wrote
//!   before may be written again;
//! - any target whose first 128 KiB **hold other data**: a block that is
//!   neither zeroed nor a valid block of our format. A fresh (sparse,
//!   zeroed) device or one iesp-test wrote may be written; an image, an
//!   archive or random bytes with no signature may not, without `--force`.
//!
//! Each finding is one sentence saying what was found and where.

use std::collections::BTreeSet;
use std::path::Path;

use crate::block;
use crate::{AlignedBuf, Device, DeviceError};

/// Bytes read from the start of a device to look for signatures (btrfs'
/// superblock sits at 64 KiB).
pub const SCAN_BYTES: u64 = 128 << 10;

/// Linux `dev_t` → (major, minor), as glibc's `gnu_dev_major/minor`.
pub fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x00ff);
    (major, minor)
}

/// Why the block device `rdev` is in use, one sentence per finding.
pub fn block_device_in_use(rdev: u64) -> Vec<String> {
    let (ma, mi) = major_minor(rdev);
    let me = format!("{ma}:{mi}");
    let sys = format!("/sys/dev/block/{me}");
    // Its partitions: (name, "maj:min").
    let mut parts: Vec<(String, String)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&sys) {
        for e in rd.flatten() {
            let p = e.path();
            if p.join("partition").exists()
                && let Ok(dev) = std::fs::read_to_string(p.join("dev"))
            {
                parts.push((
                    e.file_name().to_string_lossy().into_owned(),
                    dev.trim().to_owned(),
                ));
            }
        }
    }
    parts.sort();
    let mut reasons = Vec::new();
    let rdev_of = |path: &str| -> Option<String> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(path).ok()?;
        m.file_type().is_block_device().then(|| {
            let (a, b) = major_minor(m.rdev());
            format!("{a}:{b}")
        })
    };
    if let Ok(mi_text) = std::fs::read_to_string("/proc/self/mountinfo") {
        for m in parse_mountinfo(&mi_text) {
            let dev = if m.source.starts_with('/') {
                rdev_of(&m.source)
            } else {
                None
            };
            let hit = |id: &str| m.dev == id || dev.as_deref() == Some(id);
            if hit(&me) {
                reasons.push(format!("it is mounted on {}", m.mount_point));
            }
            for (name, id) in &parts {
                if hit(id) {
                    reasons.push(format!(
                        "its partition {name} is mounted on {}",
                        m.mount_point
                    ));
                }
            }
        }
    }
    if let Ok(swaps) = std::fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            let Some(path) = line.split_whitespace().next() else {
                continue;
            };
            let path = unescape_octal(path);
            if let Some(id) = rdev_of(&path) {
                if id == me {
                    reasons.push("it is in use as swap".into());
                } else if let Some((name, _)) = parts.iter().find(|(_, p)| *p == id) {
                    reasons.push(format!("its partition {name} is in use as swap"));
                }
            }
        }
    }
    let mut holders = BTreeSet::new();
    for dir in std::iter::once(sys.clone()).chain(parts.iter().map(|(n, _)| format!("{sys}/{n}"))) {
        if let Ok(rd) = std::fs::read_dir(Path::new(&dir).join("holders")) {
            holders.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    if !holders.is_empty() {
        reasons.push(format!(
            "it is held by {} (device mapper, RAID or similar)",
            holders.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    reasons
}

/// One line of `/proc/self/mountinfo` (proc(5)), the fields we need.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    /// `major:minor` of the mounted file system's device.
    dev: String,
    mount_point: String,
    /// The mount source, e.g. `/dev/loop0`.
    source: String,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                dev: (*f.get(2)?).to_owned(),
                mount_point: unescape_octal(f.get(4)?),
                source: unescape_octal(r.get(1)?),
            })
        })
        .collect()
}

/// Undoes the `\040`-style escapes of mountinfo and /proc/swaps.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the start of `dev` and looks for signatures.
pub async fn signatures_on<D: Device>(dev: &D) -> Result<Vec<String>, DeviceError> {
    let info = dev.info();
    let bs = u64::from(info.block_size);
    let len = SCAN_BYTES.min(info.capacity()) / bs * bs;
    if len == 0 {
        return Ok(Vec::new());
    }
    let buf = AlignedBuf::new(len as usize, info.align);
    let (buf, r) = dev.read(0, buf).await;
    r?;
    let mut found = find_signatures(&buf, info.block_size);
    if found.is_empty()
        && let Some(lba) = first_foreign_block(&buf, info.block_size)
    {
        found.push(format!(
            "it holds data iesp-test did not write (block {lba}, in the first {} KiB, is neither zeroed nor an iesp-test block)",
            len >> 10
        ));
    }
    Ok(found)
}

/// The first block of `data` (the start of a device) that is neither all
/// zeros nor a valid block of our own format.
pub fn first_foreign_block(data: &[u8], block_size: u32) -> Option<u64> {
    data.chunks_exact(block_size as usize)
        .position(|b| b.iter().any(|&x| x != 0) && !block::is_valid(b))
        .map(|i| i as u64)
}

/// A magic number at a fixed offset.
struct Magic {
    offset: usize,
    bytes: &'static [u8],
    what: &'static str,
}

const MAGICS: &[Magic] = &[
    Magic {
        offset: 512,
        bytes: b"EFI PART",
        what: "a GPT partition table",
    },
    Magic {
        offset: 4096,
        bytes: b"EFI PART",
        what: "a GPT partition table",
    },
    Magic {
        offset: 0,
        bytes: b"XFSB",
        what: "an XFS file system",
    },
    Magic {
        offset: 65536 + 64,
        bytes: b"_BHRfS_M",
        what: "a btrfs file system",
    },
    Magic {
        offset: 4096 - 10,
        bytes: b"SWAPSPACE2",
        what: "a Linux swap area",
    },
    Magic {
        offset: 4096 - 10,
        bytes: b"SWAP-SPACE",
        what: "a Linux swap area",
    },
    Magic {
        offset: 0,
        bytes: b"LUKS\xba\xbe",
        what: "a LUKS encrypted volume",
    },
    Magic {
        offset: 0,
        bytes: b"LABELONE",
        what: "an LVM2 physical volume",
    },
    Magic {
        offset: 512,
        bytes: b"LABELONE",
        what: "an LVM2 physical volume",
    },
    Magic {
        offset: 1024,
        bytes: b"LABELONE",
        what: "an LVM2 physical volume",
    },
    Magic {
        offset: 1536,
        bytes: b"LABELONE",
        what: "an LVM2 physical volume",
    },
    Magic {
        offset: 32769,
        bytes: b"CD001",
        what: "an ISO 9660 file system",
    },
    Magic {
        offset: 3,
        bytes: b"NTFS    ",
        what: "an NTFS file system",
    },
    Magic {
        offset: 54,
        bytes: b"FAT12   ",
        what: "a FAT file system",
    },
    Magic {
        offset: 54,
        bytes: b"FAT16   ",
        what: "a FAT file system",
    },
    Magic {
        offset: 82,
        bytes: b"FAT32   ",
        what: "a FAT file system",
    },
    Magic {
        offset: 0,
        bytes: &[0xfc, 0x4e, 0x2b, 0xa9],
        what: "an MD RAID member (superblock 1.1)",
    },
    Magic {
        offset: 4096,
        bytes: &[0xfc, 0x4e, 0x2b, 0xa9],
        what: "an MD RAID member (superblock 1.2)",
    },
    Magic {
        offset: 1024,
        bytes: &[0x10, 0x20, 0xf5, 0xf2],
        what: "an F2FS file system",
    },
    Magic {
        offset: 0,
        bytes: b"hsqs",
        what: "a squashfs file system",
    },
];

/// Partition table and file system signatures in `data` (the start of a
/// device), one sentence each. Blocks of `block_size` bytes that are valid
/// blocks of our own format are skipped.
pub fn find_signatures(data: &[u8], block_size: u32) -> Vec<String> {
    let bs = block_size as usize;
    let ours = |offset: usize| -> bool {
        let start = offset / bs * bs;
        data.get(start..start + bs).is_some_and(block::is_valid)
    };
    let mut found: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !found.contains(&s) {
            found.push(s);
        }
    };
    for m in MAGICS {
        if data.get(m.offset..m.offset + m.bytes.len()) == Some(m.bytes) && !ours(m.offset) {
            add(format!(
                "it carries {} (signature {:?} at byte {})",
                m.what,
                String::from_utf8_lossy(m.bytes),
                m.offset
            ));
        }
    }
    // ext2/3/4: 0xEF53 at byte 1080 of the superblock at 1024, with a sane
    // s_log_block_size (0..=6: 1 KiB..64 KiB) to keep random data out.
    if data.get(1080..1082) == Some(&[0x53, 0xef][..])
        && data
            .get(1048..1052)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) <= 6)
        && !ours(1080)
    {
        add("it carries an ext2/3/4 file system (magic 0xEF53 at byte 1080)".into());
    }
    // DOS/MBR: 0x55AA at byte 510, with a partition entry or boot code.
    if data.get(510..512) == Some(&[0x55, 0xaa][..]) && !ours(510) {
        let has_entry = (0..4).any(|i| data.get(446 + 16 * i + 4).is_some_and(|&t| t != 0));
        add(if has_entry {
            "it carries a DOS/MBR partition table (0x55AA at byte 510, with partition entries)"
                .into()
        } else {
            "it carries a DOS/MBR boot sector (0x55AA at byte 510)".into()
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers() {
        // glibc's gnu_dev_makedev.
        fn makedev(major: u64, minor: u64) -> u64 {
            ((major & 0xffff_f000) << 32)
                | ((major & 0x0fff) << 8)
                | ((minor & 0xffff_ff00) << 12)
                | (minor & 0x00ff)
        }
        assert_eq!(major_minor(0x700), (7, 0));
        for (ma, mi) in [(7, 0), (259, 65536), (8, 17), (4095, 255), (4096, 1 << 20)] {
            assert_eq!(major_minor(makedev(ma, mi)), (ma, mi));
        }
    }

    #[test]
    fn mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 20 0:5 / /dev rw shared:2 - devtmpfs udev rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            Mount {
                dev: "98:0".into(),
                mount_point: "/mnt two".into(),
                source: "/dev/root".into()
            }
        );
        assert_eq!(m[1].source, "udev");
    }

    #[test]
    fn finds_signatures() {
        let mut d = vec![0u8; SCAN_BYTES as usize];
        assert!(find_signatures(&d, 512).is_empty());
        d[1080] = 0x53;
        d[1081] = 0xef;
        let f = find_signatures(&d, 512);
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("ext2/3/4"), "{f:?}");
        d[512..520].copy_from_slice(b"EFI PART");
        d[510] = 0x55;
        d[511] = 0xaa;
        d[446 + 4] = 0xee;
        let f = find_signatures(&d, 512);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f.iter().any(|s| s.contains("GPT")));
        assert!(f.iter().any(|s| s.contains("partition entries")));
        // An ext magic with an absurd block size exponent is not ext.
        let mut e = vec![0u8; 4096];
        e[1080] = 0x53;
        e[1081] = 0xef;
        e[1048] = 99;
        assert!(find_signatures(&e, 512).is_empty());
    }

    #[test]
    fn foreign_data_is_found() {
        let bs = 512u32;
        let mut d = vec![0u8; 8192];
        assert_eq!(first_foreign_block(&d, bs), None, "zeros are free");
        block::render_unique(&block::Stamp::new(7, bs, 0), 0, 1, &mut d[..4096]);
        assert_eq!(first_foreign_block(&d, bs), None, "our own blocks are free");
        d[5000] = 1;
        assert_eq!(first_foreign_block(&d, bs), Some(9));
        d[100] ^= 0xff; // a damaged block of ours is no longer ours
        assert_eq!(first_foreign_block(&d, bs), Some(0));
    }

    #[test]
    fn our_own_blocks_are_not_signatures() {
        let bs = 4096u32;
        let mut d = vec![0u8; 8192];
        block::render_unique(&block::Stamp::new(1, bs, 0), 0, 1, &mut d);
        // Whatever the payload holds at 510 or 1080, block 0 is ours.
        d[510] = 0x55;
        d[511] = 0xaa;
        block::reseal(&mut d[..4096]);
        assert!(find_signatures(&d, bs).is_empty());
        // A foreign block with the same bytes is reported.
        d[0] = 0;
        assert_eq!(find_signatures(&d, bs).len(), 1);
    }
}
