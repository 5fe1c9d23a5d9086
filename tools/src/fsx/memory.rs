//! fsx's own sensitivity from the command line: the target
//! `memory:BLOCKS[xBLOCK_SIZE]` is an in-memory device, and the hidden
//! `--fault KIND@LBA` flag makes it misbehave at one block
//! ([`iesp_blockio::mem`]). Tests use it to check that a failure is found,
//! shrunk, and replayed by `--replay` from the command line; each shrinking
//! re-run gets a fresh device with the same faults.

use iesp_blockio::AnyDevice;
use iesp_blockio::mem::{Fault, FaultRule, MemDevice, MemOptions};

/// The faults `--fault` knows.
pub const KINDS: &str =
    "drop-write, flip-on-read, stale-read, write-same-unmap-ignored, caw-writes-on-miscompare";

/// `KIND@LBA` as a rule.
pub fn parse_fault(s: &str) -> Result<FaultRule, String> {
    let (kind, lba) = s
        .split_once('@')
        .ok_or_else(|| format!("`{s}`: expected KIND@LBA ({KINDS})"))?;
    let lba: u64 = lba.parse().map_err(|_| format!("`{lba}` is not an LBA"))?;
    let rule = match kind {
        "drop-write" => FaultRule::new(Fault::DropWrite),
        "flip-on-read" => FaultRule::new(Fault::FlipOnRead { bit: 8 * 100 + 3 }),
        "stale-read" => FaultRule::new(Fault::StaleRead),
        "write-same-unmap-ignored" => FaultRule::new(Fault::WriteSameUnmapIgnored),
        "caw-writes-on-miscompare" => FaultRule::new(Fault::CompareAndWriteOnMiscompare),
        _ => return Err(format!("unknown fault `{kind}` ({KINDS})")),
    };
    Ok(rule.lbas(lba..lba + 1))
}

/// `memory:BLOCKS[xBS]` as options, if `target` is one.
pub fn parse_target(target: &str) -> Option<Result<MemOptions, String>> {
    let spec = target.strip_prefix("memory:")?;
    let (blocks, bs) = match spec.split_once('x') {
        Some((b, s)) => (b, s),
        None => (spec, "512"),
    };
    let parsed = (|| {
        let blocks: u64 = blocks
            .parse()
            .map_err(|_| format!("{target}: `{blocks}` is not a block count"))?;
        let block_size: u32 = bs
            .parse()
            .map_err(|_| format!("{target}: `{bs}` is not a block size"))?;
        if blocks == 0 || blocks > 1 << 22 || !block_size.is_power_of_two() || block_size < 512 {
            return Err(format!(
                "{target}: 1 to 4194304 blocks of a power of two >= 512 bytes"
            ));
        }
        Ok(MemOptions {
            blocks,
            block_size,
            ..MemOptions::default()
        })
    })();
    Some(parsed)
}

/// A fresh device with the faults.
pub fn device(o: &MemOptions, faults: &[FaultRule]) -> AnyDevice {
    let d = MemDevice::with_options(o.clone());
    for r in faults {
        d.inject(r.clone());
    }
    AnyDevice::from(d)
}
