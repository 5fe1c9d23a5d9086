//! Data-integrity workloads run through our initiator: write seeded data
//! over a range with N commands in flight, read it back, compare.
//!
//! The data is [`iesp_blockio::pattern`]'s, a function of (seed, byte
//! offset) — the generator verify uses — so no copy of what was written is
//! kept and a mismatch names the byte that differs. The N commands in
//! flight are the shared load engine's ([`iesp_blockio::engine`]) over any
//! [`Device`]; [`write_read_verify`] runs it on a LUN of a session the
//! caller holds.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use iesp_blockio::engine::{self, Completion, Op, Workload};
use iesp_blockio::iscsi::IscsiDevice;
use iesp_blockio::{AlignedBuf, Device, pattern};
use iesp_initiator::LogicalUnit;

/// What a pass did.
#[derive(Clone, Copy, Debug)]
pub struct PassTimes {
    pub write: Duration,
    pub read: Duration,
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
    let dev = Arc::new(IscsiDevice::from_logical_unit(LogicalUnit::clone(lu)).await);
    write_read_verify_on(&dev, bytes, depth, io_size, seed).await
}

/// [`write_read_verify`] on any device.
pub async fn write_read_verify_on<D: Device + 'static>(
    dev: &Arc<D>,
    bytes: u64,
    depth: usize,
    io_size: u32,
    seed: u64,
) -> anyhow::Result<PassTimes> {
    let info = dev.info();
    let bs = info.block_size;
    ensure!(
        io_size % bs == 0 && io_size > 0,
        "io size {io_size} is not a multiple of the block size {bs}"
    );
    ensure!(
        bytes % u64::from(io_size) == 0,
        "{bytes} is not a multiple of the io size {io_size}"
    );
    ensure!(
        bytes <= info.capacity(),
        "{bytes} bytes do not fit in the device ({} bytes)",
        info.capacity()
    );
    let t = Instant::now();
    pass(dev, bytes, depth, io_size, seed, true).await?;
    let write = t.elapsed();
    let t = Instant::now();
    pass(dev, bytes, depth, io_size, seed, false).await?;
    Ok(PassTimes {
        write,
        read: t.elapsed(),
    })
}

/// One sweep as a load-engine workload.
struct Sweep {
    seed: u64,
    io: u32,
    bs: u32,
    align: usize,
    chunks: u64,
    write: bool,
    next: AtomicU64,
    stop: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
}

impl Sweep {
    fn fail(&self, e: anyhow::Error) {
        self.stop.store(true, Ordering::Relaxed);
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }
}

impl Workload for Sweep {
    type Slot = Option<AlignedBuf>;

    fn slot(&self, _: usize) -> Self::Slot {
        Some(AlignedBuf::new(self.io as usize, self.align))
    }

    fn next(&self, slot: &mut Self::Slot) -> Option<Op> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let chunk = self.next.fetch_add(1, Ordering::Relaxed);
        if chunk >= self.chunks {
            return None;
        }
        let offset = chunk * u64::from(self.io);
        let lba = offset / u64::from(self.bs);
        let mut buf = slot
            .take()
            .unwrap_or_else(|| AlignedBuf::new(self.io as usize, self.align));
        buf.set_len(self.io as usize);
        Some(if self.write {
            pattern::fill(self.seed, offset, &mut buf);
            Op::Write {
                lba,
                buf,
                fua: false,
            }
        } else {
            Op::Read { lba, buf }
        })
    }

    fn complete(&self, slot: &mut Self::Slot, done: Completion) {
        let lba = done.lba;
        let verb = if self.write { "WRITE" } else { "READ" };
        match done.result {
            Err(e) => self.fail(anyhow::Error::new(e).context(format!("{verb} at LBA {lba}"))),
            Ok(()) if !self.write => {
                let offset = lba * u64::from(self.bs);
                let data = &done.buf[..];
                // Compared word by word against the generator, never stored.
                if !pattern::equals_outside_headers(self.seed, offset, data, self.io as usize, 0)
                    && let Some(at) = pattern::first_mismatch(self.seed, offset, data)
                {
                    let i = (at - offset) as usize;
                    let want = pattern::generate(self.seed, at, 1);
                    self.fail(anyhow::Error::new(Mismatch {
                        byte: at,
                        lba: at / u64::from(self.bs),
                        read: data[i],
                        wrote: want[0],
                    }));
                }
            }
            Ok(()) => {}
        }
        *slot = Some(done.buf);
    }
}

/// Data read back differs from what was written: the check's verdict,
/// as opposed to an I/O or connection error (callers map it to exit 1).
#[derive(Debug, thiserror::Error)]
#[error("mismatch at byte {byte} (LBA {lba}): read {read:#04x}, wrote {wrote:#04x}")]
pub struct Mismatch {
    pub byte: u64,
    pub lba: u64,
    pub read: u8,
    pub wrote: u8,
}

async fn pass<D: Device + 'static>(
    dev: &Arc<D>,
    bytes: u64,
    depth: usize,
    io: u32,
    seed: u64,
    write: bool,
) -> anyhow::Result<()> {
    let info = dev.info();
    let work = Arc::new(Sweep {
        seed,
        io,
        bs: info.block_size,
        align: info.align,
        chunks: bytes / u64::from(io),
        write,
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
    });
    let summary = engine::run(dev.clone(), work.clone(), depth.max(1)).await;
    if let Some(p) = summary.panics.first() {
        anyhow::bail!("worker task panicked: {p}");
    }
    let error = work.error.lock().unwrap_or_else(|p| p.into_inner()).take();
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iesp_blockio::mem::{Fault, FaultRule, MemDevice};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn passes_on_a_good_device_and_names_the_bad_byte() {
        rt().block_on(async {
            let dev = Arc::new(MemDevice::new(1024, 512));
            write_read_verify_on(&dev, 512 * 1024, 8, 16384, 3)
                .await
                .unwrap();
            let bad = MemDevice::new(1024, 512);
            bad.inject(FaultRule::new(Fault::FlipOnStore { bit: 8 * 5 }).lbas(100..101));
            let e = write_read_verify_on(&Arc::new(bad), 512 * 1024, 8, 16384, 3)
                .await
                .unwrap_err();
            assert!(e.downcast_ref::<Mismatch>().is_some(), "{e:#}");
            let e = e.to_string();
            assert!(e.starts_with("mismatch at byte 51205 (LBA 100)"), "{e}");
            let short = Arc::new(MemDevice::new(8, 512));
            assert!(
                write_read_verify_on(&short, 8192, 1, 4096, 1)
                    .await
                    .is_err()
            );
        });
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
