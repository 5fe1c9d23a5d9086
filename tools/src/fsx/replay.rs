//! `--replay LOG`: the ops of an op log, run again exactly (same numbers,
//! so the same data; the log's range and queue depth), on a LUN of the
//! same geometry.

use std::path::Path;

use iesp_blockio::DeviceInfo;

use super::Failure;
use super::log::{self, Log};

/// Reads `path` and checks that it was written for a LUN like `info`.
pub fn load(path: &Path, info: &DeviceInfo) -> Result<Log, Failure> {
    let l = log::read(path).map_err(Failure::usage)?;
    let h = &l.header;
    if h.lun_blocks != info.blocks || h.block_size != info.block_size {
        return Err(Failure::usage(format!(
            "--replay {}: the log is from a LUN of {} blocks of {} bytes; this target has {} blocks of {} bytes",
            path.display(),
            h.lun_blocks,
            h.block_size,
            info.blocks,
            info.block_size
        )));
    }
    if h.blocks == 0
        || h.first_lba
            .checked_add(h.blocks)
            .is_none_or(|e| e > info.blocks)
    {
        return Err(Failure::usage(format!(
            "--replay {}: the range {}+{} is outside the target",
            path.display(),
            h.first_lba,
            h.blocks
        )));
    }
    for op in &l.ops {
        for (s, e) in op.spans() {
            if s < h.first_lba || e > h.first_lba + h.blocks || s >= e {
                return Err(Failure::usage(format!(
                    "--replay {}: {} is outside the log's range",
                    path.display(),
                    op.describe()
                )));
            }
        }
    }
    Ok(l)
}
