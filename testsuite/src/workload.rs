//! Data-integrity workloads run through our initiator: write seeded data
//! over a range with N commands in flight, read it back, compare.
//!
//! The data for each command is a function of (seed, offset), so no copy of
//! what was written is kept and a mismatch names the byte that differs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use iesp_initiator::LogicalUnit;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};

/// What a pass did.
#[derive(Clone, Copy, Debug)]
pub struct PassTimes {
    pub write: Duration,
    pub read: Duration,
}

/// Seeded bytes for one command: a fresh generator per (seed, offset).
pub fn seeded_bytes(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ offset.rotate_left(17) ^ 0x5eed);
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        let w = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
    v
}

/// Writes `bytes` of seeded data from LBA 0 with `depth` commands of
/// `io_size` bytes in flight, then reads it all back the same way and
/// compares. Fails with the first differing byte.
pub async fn write_read_verify(
    lu: &Arc<LogicalUnit>,
    bytes: u64,
    depth: usize,
    io_size: u32,
    seed: u64,
) -> anyhow::Result<PassTimes> {
    let bs = lu.block_size();
    ensure!(io_size % bs == 0, "io size {io_size} is not a multiple of the block size {bs}");
    ensure!(bytes % u64::from(io_size) == 0, "{bytes} is not a multiple of the io size {io_size}");
    ensure!(bytes <= lu.capacity(), "{bytes} bytes do not fit in the LUN ({} bytes)", lu.capacity());
    let t = Instant::now();
    run(lu, bytes, depth, io_size, seed, true).await?;
    let write = t.elapsed();
    let t = Instant::now();
    run(lu, bytes, depth, io_size, seed, false).await?;
    Ok(PassTimes { write, read: t.elapsed() })
}

async fn run(lu: &Arc<LogicalUnit>, bytes: u64, depth: usize, io: u32, seed: u64, write: bool) -> anyhow::Result<()> {
    let chunks = bytes / u64::from(io);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..depth.max(1) {
        let (lu, next) = (lu.clone(), next.clone());
        workers.spawn(async move {
            let bs = lu.block_size();
            loop {
                let chunk = next.fetch_add(1, Ordering::Relaxed);
                if chunk >= chunks {
                    return Ok::<(), anyhow::Error>(());
                }
                let offset = chunk * u64::from(io);
                let lba = offset / u64::from(bs);
                let expect = seeded_bytes(seed, offset, io as usize);
                if write {
                    lu.write(lba, Bytes::from(expect)).await.with_context(|| format!("WRITE at LBA {lba}"))?;
                } else {
                    let got = lu.read(lba, io / bs).await.with_context(|| format!("READ at LBA {lba}"))?;
                    ensure!(got.len() == expect.len(), "READ at LBA {lba} returned {} bytes, wanted {}", got.len(), io);
                    if let Some(i) = got.iter().zip(&expect).position(|(a, b)| a != b) {
                        bail!(
                            "mismatch at byte {} (LBA {}): read {:#04x}, wrote {:#04x}",
                            offset + i as u64,
                            (offset + i as u64) / u64::from(bs),
                            got[i],
                            expect[i]
                        );
                    }
                }
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.context("worker task panicked")??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_bytes_depend_on_seed_and_offset() {
        assert_eq!(seeded_bytes(1, 0, 100), seeded_bytes(1, 0, 100));
        assert_ne!(seeded_bytes(1, 0, 100), seeded_bytes(2, 0, 100));
        assert_ne!(seeded_bytes(1, 0, 100), seeded_bytes(1, 65536, 100));
        assert_eq!(seeded_bytes(1, 0, 13).len(), 13);
    }
}
