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
    ensure!(
        io_size % bs == 0,
        "io size {io_size} is not a multiple of the block size {bs}"
    );
    ensure!(
        bytes % u64::from(io_size) == 0,
        "{bytes} is not a multiple of the io size {io_size}"
    );
    ensure!(
        bytes <= lu.capacity(),
        "{bytes} bytes do not fit in the LUN ({} bytes)",
        lu.capacity()
    );
    let t = Instant::now();
    run(lu, bytes, depth, io_size, seed, true).await?;
    let write = t.elapsed();
    let t = Instant::now();
    run(lu, bytes, depth, io_size, seed, false).await?;
    Ok(PassTimes {
        write,
        read: t.elapsed(),
    })
}

async fn run(
    lu: &Arc<LogicalUnit>,
    bytes: u64,
    depth: usize,
    io: u32,
    seed: u64,
    write: bool,
) -> anyhow::Result<()> {
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
                    lu.write(lba, Bytes::from(expect))
                        .await
                        .with_context(|| format!("WRITE at LBA {lba}"))?;
                } else {
                    let got = lu
                        .read(lba, io / bs)
                        .await
                        .with_context(|| format!("READ at LBA {lba}"))?;
                    ensure!(
                        got.len() == expect.len(),
                        "READ at LBA {lba} returned {} bytes, wanted {}",
                        got.len(),
                        io
                    );
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

/// One cell of the interoperability matrix: negotiation choices and a
/// queue depth.
#[derive(Clone, Copy, Debug)]
pub struct MatrixCase {
    pub immediate_data: bool,
    pub initial_r2t: bool,
    /// CRC32C header and data digests, or none.
    pub digests: bool,
    /// The MaxRecvDataSegmentLength the initiator declares.
    pub mrdsl: u32,
    pub depth: usize,
}

impl std::fmt::Display for MatrixCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImmediateData={} InitialR2T={} digests={} MRDSL={} QD={}",
            self.immediate_data, self.initial_r2t, self.digests, self.mrdsl, self.depth
        )
    }
}

/// Every ImmediateData × InitialR2T combination at queue depth 1 and 32,
/// for one digest setting and MaxRecvDataSegmentLength.
pub fn matrix_cases(digests: bool, mrdsl: u32) -> Vec<MatrixCase> {
    let mut cases = Vec::new();
    for immediate_data in [false, true] {
        for initial_r2t in [false, true] {
            for depth in [1, 32] {
                cases.push(MatrixCase {
                    immediate_data,
                    initial_r2t,
                    digests,
                    mrdsl,
                    depth,
                });
            }
        }
    }
    cases
}

/// Logs in with the case's proposals, checks that they were agreed,
/// verifies `bytes` of seeded data on `lun` (which must hold exactly that
/// much), checks the session saw no Reject or asynchronous event, and logs
/// out.
pub async fn verify_case(
    addr: std::net::SocketAddr,
    target_name: &str,
    lun: u16,
    initiator: &str,
    case: MatrixCase,
    bytes: u64,
    seed: u64,
) -> anyhow::Result<PassTimes> {
    use iesp_initiator::{LoginOptions, Session};
    use iesp_proto::negotiation::Digest;

    let digest = if case.digests {
        Digest::Crc32c
    } else {
        Digest::None
    };
    let mut opts = LoginOptions::new(initiator, Some(target_name));
    opts.immediate_data = case.immediate_data;
    opts.initial_r2t = case.initial_r2t;
    opts.header_digest = vec![digest];
    opts.data_digest = vec![digest];
    opts.max_recv_data_segment_length = case.mrdsl;
    let session = Session::login(addr, opts).await.context("login")?;
    let p = session.params().clone();
    ensure!(
        p.immediate_data == case.immediate_data,
        "negotiated ImmediateData={}",
        p.immediate_data
    );
    ensure!(
        p.initial_r2t == case.initial_r2t,
        "negotiated InitialR2T={}",
        p.initial_r2t
    );
    ensure!(
        p.header_digest == digest && p.data_digest == digest,
        "negotiated digests {:?}/{:?}",
        p.header_digest,
        p.data_digest
    );
    ensure!(
        p.initiator_mrdsl == case.mrdsl,
        "declared MaxRecvDataSegmentLength {}",
        p.initiator_mrdsl
    );
    let lu = Arc::new(
        session
            .logical_unit(lun)
            .await
            .with_context(|| format!("opening LUN {lun}"))?,
    );
    ensure!(
        lu.capacity() == bytes,
        "capacity {} bytes, expected {bytes}",
        lu.capacity()
    );
    let times = write_read_verify(&lu, bytes, case.depth, 256 * 1024, seed).await?;
    ensure!(
        session.events().is_empty(),
        "unexpected events {:?}",
        session.events()
    );
    session.logout().await.context("logout")?;
    Ok(times)
}
