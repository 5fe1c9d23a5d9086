//! Medium access: READ(6/10/12/16), WRITE(6/10/12/16), WRITE AND VERIFY
//! (10/12/16), VERIFY(10/12/16), COMPARE AND WRITE, ORWRITE(16),
//! PRE-FETCH(10/16), SYNCHRONIZE CACHE(10/16), READ CAPACITY(10/16) and READ
//! DEFECT DATA(10/12) (SBC-4 §5.11–§5.14, §5.38–§5.45, §5.34–§5.36, §5.3,
//! §5.8, §5.9, §5.10, §5.32, §5.33, §5.16, §5.17, §5.19, §5.20).
//!
//! ## Checks, in order ([`precheck`])
//!
//! 1. RDPROTECT / WRPROTECT / VRPROTECT ≠ 0: the LU has no protection
//!    information (PROTECT=0 in INQUIRY), so INVALID FIELD IN CDB at byte 1
//!    bit 7 (SBC-4 §4.22.2, tables 101/131…). WRITE AND VERIFY with BYTCHK
//!    11b is INVALID FIELD IN CDB too: SBC-4 reserves it for that command.
//! 2. A TRANSFER (VERIFICATION) LENGTH above MAXIMUM TRANSFER LENGTH: INVALID
//!    FIELD IN CDB pointing at the length field (SBC-4 §6.6.4).
//! 3. LBA range: LOGICAL BLOCK ADDRESS OUT OF RANGE, with the CDB's LBA in
//!    INFORMATION, when the LBA is beyond the last one or LBA + length
//!    exceeds the capacity (SBC-4 §4.5). A length of 0 transfers nothing
//!    and is not an error, but its LBA must still exist. READ(6)/WRITE(6)
//!    length 0 means 256 blocks (decoded by proto).
//! 4. Writes to a read-only LU or with SWP set: DATA PROTECT / WRITE
//!    PROTECTED.
//!
//! ## Data-Out shorter than the CDB asks
//!
//! When the initiator's Expected Data Transfer Length was shorter than the
//! command's, the transport hands over only what arrived. The whole blocks
//! that arrived are written (or compared) and the command is GOOD — the
//! transport reports the residual; a partial block is ILLEGAL REQUEST /
//! INVALID FIELD IN COMMAND INFORMATION UNIT and nothing is written
//! (SAM-5 §5.4.3 leaves either to the device server).
//!
//! ## Caching and FUA
//!
//! DPO is accepted and has no effect (there is no cache to spare). FUA on a
//! write flushes the backend after writing; FUA on a read flushes first
//! when the write cache is enabled, so what is read is what the medium
//! holds (SBC-4 §5.11). WRITE AND VERIFY writes through to the medium before
//! verifying. SYNCHRONIZE CACHE flushes everything (a range flush is not
//! offered by the backends) after checking the range; IMMED is accepted and
//! the command completes when the flush has.
//!
//! ## Read buffers
//!
//! A READ of at most [`ARENA_READ_MAX`] bytes takes its buffer from a
//! per-thread arena of [`READ_ARENA_BYTES`] rather than from the allocator:
//! sixteen 4 KiB READs share one allocation, freed when the last of their
//! Data-Ins has been written (a 4 KiB `malloc` + `free` was about 450
//! instructions of a READ, callgrind; README "Target CPU per command").
//! Longer reads get a buffer of their own.
//!
//! ## VERIFY (SBC-4 §5.34)
//!
//! BYTCHK 00b reads the blocks (the medium check); 01b compares them with
//! the Data-Out buffer; 11b compares each with the single block sent. A
//! difference is MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION with the
//! offset of the first differing byte in INFORMATION.
//!
//! ## COMPARE AND WRITE (SBC-4 §5.3)
//!
//! The Data-Out buffer holds NUMBER OF LOGICAL BLOCKS blocks of verify data
//! then as many of write data; a buffer of any other length than the
//! initiator's Expected Data Transfer Length says is INVALID FIELD IN CDB
//! (the halves cannot be told apart), including a non-zero buffer for 0
//! blocks. The medium is read, compared and — only if equal — written while
//! the logical unit's I/O gate is held exclusively
//! ([`LogicalUnit::exclusive_io`]), so no write of any session lands
//! between the compare and the write. A difference is MISCOMPARE /
//! MISCOMPARE DURING VERIFY OPERATION with the offset of the first
//! differing byte in INFORMATION, and nothing is written. MAXIMUM COMPARE
//! AND WRITE LENGTH is 255 blocks (the field's maximum), or half the
//! maximum transfer length when that is less.
//!
//! ## ORWRITE(16) (SBC-4 §5.8)
//!
//! Each byte of the medium becomes itself OR the Data-Out byte, read and
//! written under the exclusive gate like COMPARE AND WRITE, so concurrent
//! ORWRITEs and writes cannot lose each other's bits.
//!
//! ## PRE-FETCH(10/16) (SBC-4 §5.9, §5.10)
//!
//! The backend is asked to cache the range (0 blocks: to the last LBA).
//! CONDITION MET when the backend can say the blocks are in memory when the
//! command completes (RAM), GOOD otherwise (a file's read-ahead is only
//! advice to the kernel; NBD has no cache we can see). IMMED changes
//! nothing: the request is cheap either way.
//!
//! ## READ DEFECT DATA(10/12) (SBC-4 §5.19, §5.20)
//!
//! A virtual medium has no defects: the lists asked for (REQ_PLIST,
//! REQ_GLIST) are returned empty in the format asked for, with PLISTV and
//! GLISTV saying they are present. The reserved format 111b is INVALID FIELD
//! IN CDB.
//!
//! ## Write cache disabled
//!
//! When MODE SELECT clears WCE on a unit whose backend caches writes, every
//! write is followed by a flush, as if FUA were set.
//!
//! READ CAPACITY: (10) saturates the returned LBA at FFFFFFFFh; (16) cuts
//! to the allocation length and reports LBPME/LBPRZ (see
//! [`super::provisioning`]). The obsolete PMI and LBA fields are ignored.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use iesp_proto::scsi::defect::{self, DefectData};
use iesp_proto::scsi::{
    Asc, Cdb, CdbSize, ReadCapacity10Data, ReadCapacity16Data, ScsiStatus, Sense, truncate,
};

use super::lu::{LogicalUnit, Snapshot};
use super::sense::{IoOp, Outcome, io_error};

/// Offset of the TRANSFER LENGTH field for each CDB size.
fn length_field(size: CdbSize) -> u16 {
    match size {
        CdbSize::Six => 4,
        CdbSize::Ten => 7,
        CdbSize::Twelve => 6,
        CdbSize::Sixteen => 10,
    }
}

fn no_protection(protect: u8) -> Result<(), Sense> {
    if protect != 0 {
        Err(Sense::invalid_field_in_cdb(1, Some(7)))
    } else {
        Ok(())
    }
}

fn within_limit(lu: &LogicalUnit, size: CdbSize, blocks: u32) -> Result<(), Sense> {
    if blocks > lu.max_transfer_blocks() {
        Err(Sense::invalid_field_in_cdb(length_field(size), None))
    } else {
        Ok(())
    }
}

fn in_range(lu: &LogicalUnit, lba: u64, blocks: u32) -> Result<(), Sense> {
    let end = lba.checked_add(u64::from(blocks));
    if lba >= lu.blocks() || end.is_none_or(|e| e > lu.blocks()) {
        Err(Sense::lba_out_of_range(lba))
    } else {
        Ok(())
    }
}

fn writable(write_protected: bool) -> Result<(), Sense> {
    if write_protected {
        Err(Sense::data_protect(Asc::WRITE_PROTECTED))
    } else {
        Ok(())
    }
}

/// The CDB-only checks of the family (module docs). `write_protected`: the
/// LU is read-only or SWP is set. Other commands pass.
pub fn precheck(lu: &LogicalUnit, cdb: &Cdb, write_protected: bool) -> Result<(), Sense> {
    match *cdb {
        Cdb::Read {
            size,
            lba,
            blocks,
            rdprotect,
            ..
        } => {
            no_protection(rdprotect)?;
            within_limit(lu, size, blocks)?;
            in_range(lu, lba, blocks)
        }
        Cdb::Write {
            size,
            lba,
            blocks,
            wrprotect,
            ..
        } => {
            no_protection(wrprotect)?;
            within_limit(lu, size, blocks)?;
            in_range(lu, lba, blocks)?;
            writable(write_protected)
        }
        Cdb::WriteAndVerify {
            size,
            lba,
            blocks,
            bytchk,
            wrprotect,
            ..
        } => {
            no_protection(wrprotect)?;
            if bytchk == 3 {
                return Err(Sense::invalid_field_in_cdb(1, Some(2)));
            }
            within_limit(lu, size, blocks)?;
            in_range(lu, lba, blocks)?;
            writable(write_protected)
        }
        Cdb::Verify {
            size,
            lba,
            blocks,
            vrprotect,
            ..
        } => {
            no_protection(vrprotect)?;
            within_limit(lu, size, blocks)?;
            in_range(lu, lba, blocks)
        }
        Cdb::SynchronizeCache { lba, blocks, .. } => in_range(lu, lba, blocks),
        Cdb::CompareAndWrite {
            lba,
            blocks,
            wrprotect,
            ..
        } => {
            no_protection(wrprotect)?;
            if u32::from(blocks) > max_compare_and_write_blocks(lu) {
                return Err(Sense::invalid_field_in_cdb(13, None));
            }
            in_range(lu, lba, u32::from(blocks))?;
            writable(write_protected)
        }
        Cdb::OrWrite {
            lba,
            blocks,
            orprotect,
            ..
        } => {
            no_protection(orprotect)?;
            within_limit(lu, CdbSize::Sixteen, blocks)?;
            in_range(lu, lba, blocks)?;
            writable(write_protected)
        }
        Cdb::PreFetch { lba, blocks, .. } => in_range(lu, lba, blocks),
        Cdb::ReadDefectData { format, .. } if format == defect::format::RESERVED => {
            let at = if matches!(
                cdb,
                Cdb::ReadDefectData {
                    size: CdbSize::Ten,
                    ..
                }
            ) {
                2
            } else {
                1
            };
            Err(Sense::invalid_field_in_cdb(at, Some(2)))
        }
        _ => Ok(()),
    }
}

/// MAXIMUM COMPARE AND WRITE LENGTH (module docs).
pub fn max_compare_and_write_blocks(lu: &LogicalUnit) -> u32 {
    (lu.max_transfer_blocks() / 2).clamp(1, 255)
}

/// Runs a command of the family, which passed [`precheck`] (the caller's
/// job: it runs once per command). `expected_length` is the initiator's
/// Expected Data Transfer Length.
pub fn execute(
    lu: &LogicalUnit,
    cdb: &Cdb,
    data_out: &[u8],
    expected_length: u32,
    snap: Snapshot,
) -> Outcome {
    // With WCE=0 every write is forced to the medium (module docs).
    let write_through = lu.write_cache() && !snap.write_cache;
    match *cdb {
        Cdb::Read {
            lba, blocks, fua, ..
        } => {
            if fua && snap.write_cache {
                lu.backend()
                    .flush()
                    .map_err(|e| io_error(IoOp::Flush, lba, &e))?;
            }
            read_data(lu, lba, blocks)
        }
        Cdb::Write {
            lba, blocks, fua, ..
        } => {
            let data = whole_blocks(lu, blocks, data_out)?;
            write(lu, lba, data, fua || write_through)?;
            Ok(Bytes::new())
        }
        Cdb::CompareAndWrite {
            lba, blocks, fua, ..
        } => {
            compare_and_write(lu, lba, blocks, data_out, expected_length)?;
            if fua || write_through {
                flush(lu, lba)?;
            }
            Ok(Bytes::new())
        }
        Cdb::OrWrite {
            lba, blocks, fua, ..
        } => {
            let data = whole_blocks(lu, blocks, data_out)?;
            or_write(lu, lba, data)?;
            if fua || write_through {
                flush(lu, lba)?;
            }
            Ok(Bytes::new())
        }
        Cdb::ReadDefectData {
            size,
            req_plist,
            req_glist,
            format,
            allocation_length,
            ..
        } => {
            let data = DefectData {
                plistv: req_plist,
                glistv: req_glist,
                format,
                generation: 0,
                descriptors: Vec::new(),
            };
            let bytes = if size == CdbSize::Ten {
                data.encode_10()
            } else {
                data.encode_12()
            };
            Ok(Bytes::from(truncate(bytes, allocation_length)))
        }
        Cdb::WriteAndVerify {
            lba,
            blocks,
            bytchk,
            ..
        } => {
            let data = whole_blocks(lu, blocks, data_out)?;
            write(lu, lba, data, true)?;
            let back = read(lu, lba, block_count(lu, data.len()))?;
            if bytchk == 1 {
                compare(&back, data, 0)?;
            }
            Ok(Bytes::new())
        }
        Cdb::Verify {
            lba,
            blocks,
            bytchk,
            ..
        } => verify(lu, lba, blocks, bytchk, data_out),
        Cdb::SynchronizeCache { lba, .. } => {
            flush(lu, lba)?;
            Ok(Bytes::new())
        }
        _ => Err(Sense::invalid_command_operation_code()),
    }
}

/// Reads shorter than this are copied: below it a `sendfile` per Data-In
/// costs more than the copy it saves (and a copy joins the `writev` of its
/// neighbours).
pub const SPLICE_MIN: usize = 64 * 1024;

/// READ, with its data left in the backing file when the backend can
/// ([`crate::backend::splice`]) and the read is long enough: `Ok(None)`
/// means "read it the usual way" (nothing was done).
pub fn read_spliced(
    lu: &LogicalUnit,
    cdb: &Cdb,
    snap: Snapshot,
) -> Result<Option<crate::backend::Spliced>, Sense> {
    let Cdb::Read {
        lba, blocks, fua, ..
    } = *cdb
    else {
        return Ok(None);
    };
    let (offset, len) = bytes_of(lu, lba, blocks);
    if len < SPLICE_MIN {
        return Ok(None);
    }
    let Some(data) = lu.backend().splice_read(offset, len) else {
        return Ok(None);
    };
    if fua && snap.write_cache {
        flush(lu, lba)?;
    }
    Ok(Some(data))
}

fn flush(lu: &LogicalUnit, lba: u64) -> Result<(), Sense> {
    lu.backend()
        .flush()
        .map_err(|e| io_error(IoOp::Flush, lba, &e))
}

/// PRE-FETCH (after [`precheck`]): GOOD or CONDITION MET (module docs).
pub fn prefetch(lu: &LogicalUnit, lba: u64, blocks: u32) -> Result<ScsiStatus, Sense> {
    let bs = u64::from(lu.block_size());
    let n = if blocks == 0 {
        lu.blocks() - lba
    } else {
        u64::from(blocks)
    };
    let cached = lu
        .backend()
        .prefetch(lba * bs, n * bs)
        .map_err(|e| io_error(IoOp::Read, lba, &e))?;
    Ok(if cached {
        ScsiStatus::CONDITION_MET
    } else {
        ScsiStatus::GOOD
    })
}

/// COMPARE AND WRITE after [`precheck`] (module docs).
fn compare_and_write(
    lu: &LogicalUnit,
    lba: u64,
    blocks: u8,
    data_out: &[u8],
    expected_length: u32,
) -> Result<(), Sense> {
    let (_, half) = bytes_of(lu, 0, u32::from(blocks));
    if expected_length as usize != 2 * half || data_out.len() != 2 * half {
        return Err(Sense::invalid_field_in_cdb(13, None));
    }
    if blocks == 0 {
        return Ok(());
    }
    let (verify, data) = data_out.split_at(half);
    let (offset, _) = bytes_of(lu, lba, 0);
    // Held across the read, the compare and the write: this is what makes
    // the command atomic against every other write path, which takes the
    // gate shared.
    let _io = lu.exclusive_io();
    let medium = read(lu, lba, u32::from(blocks))?;
    compare(&medium, verify, 0)?;
    lu.backend()
        .write_at(data, offset)
        .map_err(|e| io_error(IoOp::Write, lba, &e))
}

/// ORWRITE after [`precheck`]: medium |= data, under the exclusive gate.
fn or_write(lu: &LogicalUnit, lba: u64, data: &[u8]) -> Result<(), Sense> {
    if data.is_empty() {
        return Ok(());
    }
    let (offset, _) = bytes_of(lu, lba, 0);
    let _io = lu.exclusive_io();
    let mut medium = read(lu, lba, block_count(lu, data.len()))?;
    for (m, d) in medium.iter_mut().zip(data) {
        *m |= d;
    }
    lu.backend()
        .write_at(&medium, offset)
        .map_err(|e| io_error(IoOp::Write, lba, &e))
}

/// Byte offset and length of a checked range (within capacity and the
/// transfer limit, so neither overflows).
fn bytes_of(lu: &LogicalUnit, lba: u64, blocks: u32) -> (u64, usize) {
    let bs = u64::from(lu.block_size());
    (lba * bs, (u64::from(blocks) * bs) as usize)
}

fn block_count(lu: &LogicalUnit, len: usize) -> u32 {
    (len / lu.block_size() as usize) as u32
}

/// The whole blocks of `data_out`, at most `blocks` of them; a trailing
/// partial block is an error (module docs).
fn whole_blocks<'a>(lu: &LogicalUnit, blocks: u32, data_out: &'a [u8]) -> Result<&'a [u8], Sense> {
    let (_, len) = bytes_of(lu, 0, blocks);
    let usable = data_out.get(..len).unwrap_or(data_out);
    if usable.len() % lu.block_size() as usize != 0 {
        return Err(Sense::illegal_request(
            Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
        ));
    }
    Ok(usable)
}

fn read(lu: &LogicalUnit, lba: u64, blocks: u32) -> Result<BytesMut, Sense> {
    let (offset, len) = bytes_of(lu, lba, blocks);
    let mut buf = BytesMut::with_capacity(len);
    if len > 0 {
        lu.backend()
            .read_into(&mut buf, offset, len)
            .map_err(|e| io_error(IoOp::Read, lba, &e))?;
    }
    Ok(buf)
}

/// Size of a thread's read arena (below glibc's 128 KiB `mmap` threshold).
pub const READ_ARENA_BYTES: usize = 64 * 1024;

/// The longest READ whose buffer comes from the arena.
pub const ARENA_READ_MAX: usize = 16 * 1024;

thread_local! {
    /// What is left of this thread's current arena: READs split their
    /// buffers off its front; the Data-Ins hold the allocation.
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// READ's data (module docs, "Read buffers").
fn read_data(lu: &LogicalUnit, lba: u64, blocks: u32) -> Result<Bytes, Sense> {
    let (offset, len) = bytes_of(lu, lba, blocks);
    if len == 0 || len > ARENA_READ_MAX {
        return read(lu, lba, blocks).map(BytesMut::freeze);
    }
    ARENA.with_borrow_mut(|arena| {
        if arena.capacity() < len {
            *arena = BytesMut::with_capacity(READ_ARENA_BYTES);
        }
        // Every READ splits off all it appended: this only guards against
        // a backend that left bytes behind on an error.
        arena.clear();
        lu.backend()
            .read_into(arena, offset, len)
            .map_err(|e| io_error(IoOp::Read, lba, &e))?;
        Ok(arena.split_to(len).freeze())
    })
}

fn write(lu: &LogicalUnit, lba: u64, data: &[u8], fua: bool) -> Result<(), Sense> {
    if data.is_empty() {
        return Ok(());
    }
    let (offset, _) = bytes_of(lu, lba, 0);
    {
        // Shared: writes run in parallel, but not during a COMPARE AND
        // WRITE or ORWRITE (see `LogicalUnit::shared_io`).
        let _io = lu.shared_io();
        lu.backend()
            .write_at(data, offset)
            .map_err(|e| io_error(IoOp::Write, lba, &e))?;
    }
    if fua {
        flush(lu, lba)?;
    }
    Ok(())
}

/// MISCOMPARE at the first byte where `medium` and `expected` differ,
/// reported as an offset from `base`.
fn compare(medium: &[u8], expected: &[u8], base: usize) -> Result<(), Sense> {
    if medium == expected {
        return Ok(());
    }
    let at = medium
        .iter()
        .zip(expected)
        .position(|(m, e)| m != e)
        .unwrap_or(medium.len().min(expected.len()));
    Err(Sense::miscompare((base + at) as u64))
}

fn verify(lu: &LogicalUnit, lba: u64, blocks: u32, bytchk: u8, data_out: &[u8]) -> Outcome {
    let bs = lu.block_size() as usize;
    match bytchk {
        0 => {
            read(lu, lba, blocks)?;
        }
        1 => {
            let data = whole_blocks(lu, blocks, data_out)?;
            let medium = read(lu, lba, block_count(lu, data.len()))?;
            compare(&medium, data, 0)?;
        }
        _ if blocks == 0 => {}
        _ => {
            // BYTCHK 11b: one block, compared against each block.
            let Some(block) = data_out.get(..bs) else {
                return Err(Sense::illegal_request(
                    Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
                ));
            };
            let medium = read(lu, lba, blocks)?;
            for (i, chunk) in medium.chunks(bs).enumerate() {
                compare(chunk, block, i * bs)?;
            }
        }
    }
    Ok(Bytes::new())
}

/// READ CAPACITY(10) parameter data.
pub fn read_capacity_10(lu: &LogicalUnit) -> Bytes {
    Bytes::copy_from_slice(&ReadCapacity10Data::for_capacity(lu.blocks(), lu.block_size()).encode())
}

/// READ CAPACITY(16) parameter data, cut to `allocation_length`.
pub fn read_capacity_16(lu: &LogicalUnit, allocation_length: u32) -> Bytes {
    let provisioning = lu.provisioning();
    let data = ReadCapacity16Data {
        lbpme: provisioning.is_some(),
        lbprz: provisioning.is_some_and(|p| p.zeroes),
        ..ReadCapacity16Data::for_capacity(lu.blocks(), lu.block_size())
    }
    .encode();
    Bytes::from(truncate(data.to_vec(), allocation_length))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use iesp_proto::bhs::Lun;
    use iesp_proto::scsi::{ScsiStatus, SenseKey, SenseKeySpecific};
    use proptest::prelude::*;

    use super::*;
    use crate::backend::{Backend, RamBackend};
    use crate::scsi::lu::MAX_TRANSFER_BYTES;
    use crate::scsi::testutil::{Harness, nexus};
    use crate::scsi::{LunTable, Transfer};

    /// A RAM backend that counts flushes, can fail on demand and can claim a
    /// larger size than it stores.
    pub struct Probe {
        ram: RamBackend,
        size: u64,
        flushes: Arc<AtomicUsize>,
        fail: Arc<AtomicBool>,
        errno: i32,
    }

    impl Backend for Probe {
        fn size(&self) -> u64 {
            self.size
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            self.ram.read_at(buf, offset)
        }
        fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            self.ram.write_at(data, offset)
        }
        fn flush(&self) -> io::Result<()> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            Ok(())
        }
        fn write_cache(&self) -> bool {
            true
        }

        fn describe(&self) -> String {
            "file:probe".into()
        }
    }

    /// Handles on a [`Probe`]: its flush counter and failure switch.
    pub struct ProbeHandles {
        pub flushes: Arc<AtomicUsize>,
        pub fail: Arc<AtomicBool>,
    }

    impl ProbeHandles {
        pub fn flushes(&self) -> usize {
            self.flushes.load(Ordering::SeqCst)
        }

        pub fn fail(&self, on: bool) {
            self.fail.store(on, Ordering::SeqCst);
        }
    }

    /// A harness over a [`Probe`] storing `stored` bytes and claiming
    /// `claimed`; it describes itself as a file, so the write cache is on.
    pub fn probed(stored: u64, claimed: u64, errno: i32) -> (Harness, ProbeHandles) {
        let handles = ProbeHandles {
            flushes: Arc::default(),
            fail: Arc::default(),
        };
        let probe = Probe {
            ram: RamBackend::new(stored),
            size: claimed,
            flushes: handles.flushes.clone(),
            fail: handles.fail.clone(),
            errno,
        };
        let lu = Arc::new(LogicalUnit::new(
            Box::new(probe),
            512,
            false,
            "IESP000000ab".into(),
        ));
        let h = Harness {
            table: LunTable::new(vec![lu]),
            nexus: nexus(1),
        };
        h.run(&Cdb::TestUnitReady, &[]);
        (h, handles)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn field(byte: u16, bit: Option<u8>) -> Option<SenseKeySpecific> {
        Some(SenseKeySpecific::FieldPointer {
            cd: true,
            bit,
            field: byte,
        })
    }

    #[test]
    fn write_then_read_in_every_size() {
        let h = Harness::ram(4096);
        for (i, size) in [
            CdbSize::Six,
            CdbSize::Ten,
            CdbSize::Twelve,
            CdbSize::Sixteen,
        ]
        .into_iter()
        .enumerate()
        {
            let lba = 100 * i as u64 + 3;
            let data = pattern(5 * 512, i as u8);
            h.good(&Cdb::write(size, lba, 5, false), &data);
            assert_eq!(h.good(&Cdb::read(size, lba, 5), &[]), data, "{size:?}");
            // Neighbours untouched.
            assert_eq!(h.good(&Cdb::read(size, lba + 5, 1), &[]), vec![0; 512]);
        }
    }

    #[test]
    fn six_byte_length_zero_is_256_blocks_others_none() {
        let h = Harness::ram(1024);
        let raw6 = [0x08, 0, 0, 0, 0, 0];
        assert_eq!(h.raw(&raw6, &[]).data.len(), 256 * 512);
        for size in [CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen] {
            assert_eq!(h.good(&Cdb::read(size, 0, 0), &[]), Vec::<u8>::new());
            assert_eq!(
                h.good(&Cdb::write(size, 0, 0, false), &[]),
                Vec::<u8>::new()
            );
        }
    }

    #[test]
    fn lba_out_of_range() {
        let h = Harness::ram(1000);
        let cases: [(CdbSize, u64, u32); 8] = [
            (CdbSize::Ten, 1000, 0),
            (CdbSize::Ten, 1001, 0),
            (CdbSize::Ten, 999, 2),
            (CdbSize::Ten, 0xffff_ffff, 1),
            (CdbSize::Sixteen, u64::MAX, 1),
            (CdbSize::Sixteen, 1 << 63, 0),
            (CdbSize::Sixteen, 1 << 55, 8),
            (CdbSize::Six, 0x1f_ffff, 1),
        ];
        for (size, lba, blocks) in cases {
            for cdb in [
                Cdb::read(size, lba, blocks),
                Cdb::write(size, lba, blocks, false),
            ] {
                let s = h.check(&cdb, &vec![0; blocks as usize * 512]);
                assert_eq!(
                    (s.key, s.asc),
                    (SenseKey::ILLEGAL_REQUEST, Asc::LBA_OUT_OF_RANGE),
                    "{cdb:?}"
                );
                // Fixed format: INFORMATION only when the LBA fits 32 bits.
                assert_eq!(
                    s.information,
                    u32::try_from(lba).ok().map(u64::from),
                    "{cdb:?}"
                );
            }
        }
        // The last block is fine, and so is length 0 at the last LBA.
        h.good(&Cdb::read(CdbSize::Ten, 999, 1), &[]);
        h.good(&Cdb::read(CdbSize::Ten, 999, 0), &[]);
    }

    #[test]
    fn protection_fields_are_invalid_without_protection() {
        let h = Harness::ram(64);
        for p in 1..8 {
            for size in [CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen] {
                let read = Cdb::Read {
                    size,
                    lba: 0,
                    blocks: 1,
                    dpo: false,
                    fua: false,
                    rarc: false,
                    rdprotect: p,
                    group: 0,
                };
                let write = Cdb::Write {
                    size,
                    lba: 0,
                    blocks: 1,
                    dpo: false,
                    fua: false,
                    wrprotect: p,
                    group: 0,
                };
                let verify = Cdb::Verify {
                    size,
                    lba: 0,
                    blocks: 1,
                    dpo: false,
                    bytchk: 0,
                    vrprotect: p,
                    group: 0,
                };
                let wv = Cdb::WriteAndVerify {
                    size,
                    lba: 0,
                    blocks: 1,
                    dpo: false,
                    bytchk: 0,
                    wrprotect: p,
                    group: 0,
                };
                for cdb in [read, write, verify, wv] {
                    let s = h.check(&cdb, &[0xa6; 512]);
                    assert_eq!(
                        (s.asc, s.sense_key_specific),
                        (Asc::INVALID_FIELD_IN_CDB, field(1, Some(7))),
                        "{cdb:?}"
                    );
                }
            }
        }
        assert_eq!(
            h.good(&Cdb::read(CdbSize::Ten, 0, 1), &[]),
            vec![0; 512],
            "nothing was written"
        );
    }

    #[test]
    fn transfer_length_above_the_limit() {
        let h = Harness::ram(1 << 20);
        let max = MAX_TRANSFER_BYTES / 512;
        h.good(&Cdb::read(CdbSize::Sixteen, 0, max), &[]);
        for (size, at) in [
            (CdbSize::Ten, 7),
            (CdbSize::Twelve, 6),
            (CdbSize::Sixteen, 10),
        ] {
            let s = h.check(&Cdb::read(size, 0, max + 1), &[]);
            assert_eq!(s.sense_key_specific, field(at, None), "{size:?}");
        }
        // Checked before the range: a huge request is not an LBA problem.
        assert_eq!(
            h.check(
                &Cdb::write(CdbSize::Sixteen, u64::MAX, u32::MAX, false),
                &[]
            )
            .asc,
            Asc::INVALID_FIELD_IN_CDB
        );
    }

    #[test]
    fn dpo_and_fua_are_accepted() {
        let h = Harness::ram(64);
        for (dpo, fua) in [(true, false), (false, true), (true, true)] {
            let w = Cdb::Write {
                size: CdbSize::Ten,
                lba: 0,
                blocks: 1,
                dpo,
                fua,
                wrprotect: 0,
                group: 0,
            };
            h.good(&w, &[0xa6; 512]);
            let r = Cdb::Read {
                size: CdbSize::Sixteen,
                lba: 0,
                blocks: 1,
                dpo,
                fua,
                rarc: false,
                rdprotect: 0,
                group: 0,
            };
            assert_eq!(h.good(&r, &[]), vec![0xa6; 512]);
        }
    }

    #[test]
    fn read_only_lu_refuses_writes_only() {
        let h = Harness::new(64, 512, true);
        for cdb in [
            Cdb::write(CdbSize::Ten, 0, 1, false),
            Cdb::write(CdbSize::Six, 0, 1, false),
            Cdb::WriteAndVerify {
                size: CdbSize::Sixteen,
                lba: 0,
                blocks: 1,
                dpo: false,
                bytchk: 1,
                wrprotect: 0,
                group: 0,
            },
        ] {
            let s = h.check(&cdb, &[1; 512]);
            assert_eq!(
                (s.key, s.asc),
                (SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED)
            );
        }
        assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 0, 1), &[]), vec![0; 512]);
        h.good(&Cdb::synchronize_cache(CdbSize::Ten), &[]);
        h.good(
            &Cdb::Verify {
                size: CdbSize::Ten,
                lba: 0,
                blocks: 1,
                dpo: false,
                bytchk: 1,
                vrprotect: 0,
                group: 0,
            },
            &[0; 512],
        );
    }

    #[test]
    fn short_data_out_writes_whole_blocks_or_nothing() {
        let h = Harness::ram(64);
        let data = pattern(4 * 512, 9);
        // Two of four blocks arrived: those are written.
        h.good(&Cdb::write(CdbSize::Ten, 10, 4, false), &data[..1024]);
        let back = h.good(&Cdb::read(CdbSize::Ten, 10, 4), &[]);
        assert_eq!(&back[..1024], &data[..1024]);
        assert_eq!(&back[1024..], &[0; 1024][..]);
        // Nothing arrived: GOOD, nothing written.
        h.good(&Cdb::write(CdbSize::Ten, 20, 1, false), &[]);
        // A partial block: refused, nothing written.
        let s = h.check(&Cdb::write(CdbSize::Ten, 30, 2, false), &data[..700]);
        assert_eq!(
            (s.key, s.asc),
            (
                SenseKey::ILLEGAL_REQUEST,
                Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT
            )
        );
        assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 30, 2), &[]), vec![0; 1024]);
        // More than asked for: the excess is ignored.
        h.good(&Cdb::write(CdbSize::Ten, 40, 1, false), &data[..1024]);
        assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 41, 1), &[]), vec![0; 512]);
    }

    #[test]
    fn fua_sync_and_write_and_verify_flush_the_backend() {
        let (h, probe) = probed(1 << 20, 1 << 20, nix::libc::EIO);
        let flushes = || probe.flushes();
        let before = flushes();
        h.good(&Cdb::write(CdbSize::Ten, 0, 1, false), &[1; 512]);
        assert_eq!(flushes(), before);
        h.good(&Cdb::write(CdbSize::Ten, 0, 1, true), &[1; 512]);
        assert_eq!(flushes(), before + 1);
        let fua_read = Cdb::Read {
            size: CdbSize::Ten,
            lba: 0,
            blocks: 1,
            dpo: false,
            fua: true,
            rarc: false,
            rdprotect: 0,
            group: 0,
        };
        h.good(&fua_read, &[]);
        assert_eq!(flushes(), before + 2, "FUA read with WCE=1 flushes first");
        h.good(&Cdb::synchronize_cache(CdbSize::Sixteen), &[]);
        assert_eq!(flushes(), before + 3);
        let wv = Cdb::WriteAndVerify {
            size: CdbSize::Ten,
            lba: 1,
            blocks: 1,
            dpo: false,
            bytchk: 1,
            wrprotect: 0,
            group: 0,
        };
        h.good(&wv, &[2; 512]);
        assert_eq!(flushes(), before + 4);
    }

    #[test]
    fn synchronize_cache_range() {
        let h = Harness::ram(100);
        let sync = |size, lba, blocks| Cdb::SynchronizeCache {
            size,
            lba,
            blocks,
            immed: true,
            group: 0,
        };
        h.good(&sync(CdbSize::Ten, 0, 0), &[]);
        h.good(&sync(CdbSize::Sixteen, 99, 1), &[]);
        h.good(&sync(CdbSize::Sixteen, 99, 0), &[]);
        for (lba, blocks) in [(100, 0), (99, 2), (u64::MAX, 1)] {
            assert_eq!(
                h.check(&sync(CdbSize::Sixteen, lba, blocks), &[]).asc,
                Asc::LBA_OUT_OF_RANGE
            );
        }
    }

    #[test]
    fn backend_errors_are_medium_errors() {
        let (h, probe) = probed(1 << 20, 1 << 20, nix::libc::EIO);
        probe.fail(true);
        let s = h.check(&Cdb::read(CdbSize::Ten, 7, 1), &[]);
        assert_eq!(
            (s.key, s.asc, s.information),
            (SenseKey::MEDIUM_ERROR, Asc::UNRECOVERED_READ_ERROR, Some(7))
        );
        let s = h.check(&Cdb::write(CdbSize::Ten, 8, 1, false), &[0; 512]);
        assert_eq!(
            (s.key, s.asc, s.information),
            (SenseKey::MEDIUM_ERROR, Asc::WRITE_ERROR, Some(8))
        );
        let s = h.check(&Cdb::synchronize_cache(CdbSize::Ten), &[]);
        assert_eq!((s.key, s.asc), (SenseKey::MEDIUM_ERROR, Asc::WRITE_ERROR));
        let (h, probe) = probed(1 << 20, 1 << 20, nix::libc::ENOSPC);
        probe.fail(true);
        let s = h.check(&Cdb::write(CdbSize::Ten, 8, 1, false), &[0; 512]);
        assert_eq!(
            (s.key, s.asc),
            (
                SenseKey::DATA_PROTECT,
                Asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT
            )
        );
        probe.fail(false);
        h.good(&Cdb::write(CdbSize::Ten, 8, 1, false), &[0; 512]);
    }

    #[test]
    fn verify_bytchk_forms() {
        let h = Harness::ram(64);
        let data = pattern(3 * 512, 4);
        h.good(&Cdb::write(CdbSize::Ten, 5, 3, false), &data);
        let verify = |bytchk, blocks| Cdb::Verify {
            size: CdbSize::Twelve,
            lba: 5,
            blocks,
            dpo: true,
            bytchk,
            vrprotect: 0,
            group: 0,
        };
        h.good(&verify(0, 3), &[]);
        h.good(&verify(1, 3), &data);
        let mut bad = data.clone();
        bad[700] ^= b'X';
        let s = h.check(&verify(1, 3), &bad);
        assert_eq!(
            (s.key, s.asc, s.information),
            (
                SenseKey::MISCOMPARE,
                Asc::MISCOMPARE_DURING_VERIFY,
                Some(700)
            )
        );
        // BYTCHK 11b: one block against each.
        h.good(&Cdb::write(CdbSize::Ten, 20, 3, false), &[0x5a; 3 * 512]);
        let same = |blocks| Cdb::Verify {
            size: CdbSize::Sixteen,
            lba: 20,
            blocks,
            dpo: false,
            bytchk: 3,
            vrprotect: 0,
            group: 0,
        };
        h.good(&same(3), &[0x5a; 512]);
        let s = h.check(&same(4), &[0x5a; 512]);
        assert_eq!(s.information, Some(3 * 512));
        assert_eq!(
            h.check(&same(1), &[0x5a; 100]).asc,
            Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT
        );
        // BYTCHK 10b is reserved (Cdb::validate).
        assert_eq!(
            h.check(&verify(2, 1), &[]).sense_key_specific,
            field(1, Some(2))
        );
        // Zero blocks: nothing to verify, LBA still checked.
        h.good(&verify(1, 0), &[]);
        let oob = Cdb::Verify {
            size: CdbSize::Ten,
            lba: 65,
            blocks: 0,
            dpo: false,
            bytchk: 1,
            vrprotect: 0,
            group: 0,
        };
        assert_eq!(h.check(&oob, &[]).asc, Asc::LBA_OUT_OF_RANGE);
    }

    #[test]
    fn write_and_verify() {
        let h = Harness::ram(64);
        let wv = |bytchk, blocks| Cdb::WriteAndVerify {
            size: CdbSize::Ten,
            lba: 2,
            blocks,
            dpo: false,
            bytchk,
            wrprotect: 0,
            group: 0,
        };
        let data = pattern(1024, 1);
        h.good(&wv(1, 2), &data);
        assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 2, 2), &[]), data);
        h.good(&wv(0, 2), &data);
        // Short Data-Out: the block that arrived, as WRITE.
        h.good(&wv(1, 2), &[7; 512]);
        assert_eq!(
            h.good(&Cdb::read(CdbSize::Ten, 2, 2), &[]),
            [vec![7; 512], data[512..].to_vec()].concat()
        );
        assert_eq!(
            h.check(&wv(3, 1), &[0; 512]).sense_key_specific,
            field(1, Some(2))
        );
        h.good(&wv(1, 0), &[]);
    }

    #[test]
    fn read_capacity() {
        let h = Harness::new(1000, 4096, false);
        let d10 =
            ReadCapacity10Data::parse(&h.good(&Cdb::ReadCapacity10 { lba: 0, pmi: false }, &[]))
                .expect("parses");
        assert_eq!((d10.returned_lba, d10.block_length), (999, 4096));
        let data = h.good(&Cdb::read_capacity16(), &[]);
        assert_eq!(data.len(), 32);
        let d16 = ReadCapacity16Data::parse(&data).expect("parses");
        // A RAM disk is thin provisioned and reads unmapped blocks as zero.
        assert_eq!(
            d16,
            ReadCapacity16Data {
                lbpme: true,
                lbprz: true,
                ..ReadCapacity16Data::for_capacity(1000, 4096)
            }
        );
        assert!(!d16.prot_en);
        for alloc in 0..16 {
            let cut = h.good(
                &Cdb::ReadCapacity16 {
                    lba: 0,
                    pmi: false,
                    allocation_length: alloc,
                },
                &[],
            );
            assert_eq!(cut[..], data[..alloc as usize]);
        }
    }

    #[test]
    fn read_capacity_10_saturates() {
        let blocks = (1u64 << 32) + 10;
        let (h, _probe) = probed(1 << 16, blocks * 512, nix::libc::EIO);
        let d10 =
            ReadCapacity10Data::parse(&h.good(&Cdb::ReadCapacity10 { lba: 0, pmi: false }, &[]))
                .expect("parses");
        assert_eq!(d10.returned_lba, 0xffff_ffff);
        let d16 = ReadCapacity16Data::parse(&h.good(&Cdb::read_capacity16(), &[])).expect("parses");
        assert_eq!(d16.returned_lba, blocks - 1);
    }

    #[test]
    fn transfer_matches_execution() {
        let h = Harness::ram(256);
        let lun = Lun::from_index(0);
        let cdb = Cdb::Verify {
            size: CdbSize::Ten,
            lba: 0,
            blocks: 4,
            dpo: false,
            bytchk: 0,
            vrprotect: 0,
            group: 0,
        };
        assert_eq!(h.table.transfer(lun, &cdb.encode()), Transfer::NONE);
        let cdb = Cdb::Verify {
            size: CdbSize::Ten,
            lba: 0,
            blocks: 4,
            dpo: false,
            bytchk: 3,
            vrprotect: 0,
            group: 0,
        };
        assert_eq!(h.table.transfer(lun, &cdb.encode()).length, 512);
        let c = h.run(&Cdb::read(CdbSize::Ten, 0, 3), &[]);
        assert_eq!((c.status, c.data.len()), (ScsiStatus::GOOD.0, 1536));
        assert_eq!(
            h.table
                .transfer(lun, &Cdb::read(CdbSize::Ten, 0, 3).encode())
                .length,
            1536
        );
    }

    fn caw(lba: u64, blocks: u8) -> Cdb {
        Cdb::CompareAndWrite {
            lba,
            blocks,
            wrprotect: 0,
            dpo: false,
            fua: false,
            group: 0,
        }
    }

    #[test]
    fn compare_and_write_writes_only_on_a_match() {
        let h = Harness::ram(1024);
        let old = pattern(3 * 512, 1);
        let new = pattern(3 * 512, 2);
        h.good(&Cdb::write(CdbSize::Ten, 100, 3, false), &old);
        h.good(&caw(100, 3), &[old.clone(), new.clone()].concat());
        assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 100, 3), &[]), new);
        // A miscompare names the first differing byte and writes nothing.
        let mut verify = new.clone();
        verify[1234] ^= 0x40;
        let s = h.check(&caw(100, 3), &[verify, old.clone()].concat());
        assert_eq!(
            (s.key, s.asc, s.information),
            (
                SenseKey::MISCOMPARE,
                Asc::MISCOMPARE_DURING_VERIFY,
                Some(1234)
            )
        );
        assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 100, 3), &[]), new);
        // At the end of the medium, and one past it.
        h.good(&caw(1023, 1), &[vec![0; 512], vec![9; 512]].concat());
        assert_eq!(
            h.check(&caw(1023, 2), &[0; 2048]).asc,
            Asc::LBA_OUT_OF_RANGE
        );
        // Zero blocks with no data: nothing to do.
        h.good(&caw(5, 0), &[]);
    }

    #[test]
    fn compare_and_write_needs_exactly_both_halves() {
        let h = Harness::ram(1024);
        let lun = Lun::from_index(0);
        assert_eq!(h.table.transfer(lun, &caw(0, 2).encode()).length, 2048);
        // Data-Out of another length than the CDB implies, either way
        // (libiscsi CompareAndWrite.InvalidDataOutSize; its Simple test
        // sends 256 blocks, which NUMBER OF LOGICAL BLOCKS reads as 0).
        for (blocks, edtl) in [(1u8, 2048u32), (2, 1024), (0, 512), (1, 0)] {
            let c = h.table.execute(
                &h.nexus,
                lun,
                &caw(0, blocks).encode(),
                &vec![0u8; (edtl as usize).min(2 * 512 * blocks as usize)],
                edtl,
            );
            let s = super::super::testutil::check_of(&c);
            assert_eq!(
                (s.asc, s.sense_key_specific),
                (Asc::INVALID_FIELD_IN_CDB, field(13, None)),
                "{blocks} blocks, EDTL {edtl}"
            );
        }
        assert_eq!(h.good(&Cdb::read(CdbSize::Ten, 0, 1), &[]), vec![0; 512]);
        // The limit of the Block Limits page: 255 blocks...
        h.good(&caw(0, 255), &vec![0u8; 2 * 255 * 512]);
        // ... or half the maximum transfer length.
        let big = Harness::new(1024, 65536, false);
        assert_eq!(
            big.check(&caw(0, 65), &[]).sense_key_specific,
            field(13, None),
            "8 MiB transfers: at most 64 blocks of 64 KiB per half"
        );
    }

    #[test]
    fn compare_and_write_checks_protection_and_write_protect() {
        let h = Harness::ram(64);
        let mut c = caw(0, 1);
        if let Cdb::CompareAndWrite { wrprotect, .. } = &mut c {
            *wrprotect = 1;
        }
        assert_eq!(
            h.check(&c, &[0; 1024]).sense_key_specific,
            field(1, Some(7))
        );
        let ro = Harness::new(64, 512, true);
        assert_eq!(ro.check(&caw(0, 1), &[0; 1024]).asc, Asc::WRITE_PROTECTED);
    }

    /// A RAM backend whose reads take their data and then linger, holding a
    /// race window open between a read and what follows it.
    struct Slow(RamBackend, std::time::Duration);

    impl Backend for Slow {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.0.read_at(buf, offset)?;
            std::thread::sleep(self.1);
            Ok(())
        }
        fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
            self.0.write_at(data, offset)
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "slow".into()
        }
    }

    fn slow_table(delay_ms: u64) -> Arc<LunTable> {
        let slow = Slow(
            RamBackend::new(1 << 20),
            std::time::Duration::from_millis(delay_ms),
        );
        let lu = LogicalUnit::new(Box::new(slow), 512, false, "IESP000000ab".into());
        Arc::new(LunTable::new(vec![Arc::new(lu)]))
    }

    #[test]
    fn racing_compare_and_writes_have_one_winner_per_round() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 20;
        let table = slow_table(2);
        let lun = Lun::from_index(0);
        let read0 = Cdb::read(CdbSize::Ten, 0, 1).encode();
        for t in 0..THREADS {
            // Clear each nexus's power-on unit attention.
            table.execute(&nexus(t as u8 + 1), lun, &read0, &[], 0);
        }
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (table, barrier) = (table.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let n = nexus(t as u8 + 1);
                    let mut outcomes = Vec::new();
                    for round in 0..ROUNDS {
                        barrier.wait();
                        let current = table.execute(&n, lun, &read0, &[], 0).data.to_vec();
                        barrier.wait();
                        let mut mine = vec![round as u8 + 1; 512];
                        mine[0] = t as u8;
                        let data = [current, mine.clone()].concat();
                        let c = table.execute(&n, lun, &caw(0, 1).encode(), &data, 1024);
                        outcomes.push((c.status, mine));
                        barrier.wait();
                    }
                    outcomes
                })
            })
            .collect();
        let results: Vec<Vec<(u8, Vec<u8>)>> = workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect();
        for round in 0..ROUNDS {
            let winners = results
                .iter()
                .filter(|r| r[round].0 == ScsiStatus::GOOD.0)
                .count();
            let losers = results
                .iter()
                .filter(|r| r[round].0 == ScsiStatus::CHECK_CONDITION.0)
                .count();
            assert_eq!((winners, losers), (1, THREADS - 1), "round {round}");
        }
        // The last winner's data is what the medium holds.
        let last = results
            .iter()
            .find(|r| r[ROUNDS - 1].0 == ScsiStatus::GOOD.0)
            .map(|r| r[ROUNDS - 1].1.clone());
        let back = table.execute(&nexus(1), lun, &read0, &[], 0);
        assert_eq!(Some(back.data.to_vec()), last);
    }

    #[test]
    fn a_write_cannot_land_between_compare_and_write() {
        // COMPARE AND WRITE's read lingers 200 ms after taking the data; a
        // WRITE of the same block issued meanwhile must wait and land
        // after the COMPARE AND WRITE's own write.
        let table = slow_table(200);
        let lun = Lun::from_index(0);
        let (a, b) = (nexus(1), nexus(2));
        for n in [&a, &b] {
            table.execute(n, lun, &Cdb::TestUnitReady.encode(), &[], 0);
        }
        let caw_table = table.clone();
        let caw_thread = std::thread::spawn(move || {
            let data = [vec![0u8; 512], vec![0xaa; 512]].concat();
            caw_table
                .execute(&a, lun, &caw(0, 1).encode(), &data, 1024)
                .status
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let w = table.execute(
            &b,
            lun,
            &Cdb::write(CdbSize::Ten, 0, 1, false).encode(),
            &[0xbb; 512],
            512,
        );
        assert_eq!(w.status, 0);
        let caw_status = caw_thread.join().expect("caw");
        let back = table.execute(&b, lun, &Cdb::read(CdbSize::Ten, 0, 1).encode(), &[], 0);
        assert_eq!(
            back.data.to_vec(),
            vec![0xbb; 512],
            "the WRITE completed last (COMPARE AND WRITE status {caw_status})"
        );
    }

    #[test]
    fn orwrite_ors_into_the_medium() {
        let h = Harness::ram(1024);
        let or = |lba, blocks| Cdb::OrWrite {
            lba,
            blocks,
            orprotect: 0,
            dpo: false,
            fua: true,
            group: 0,
        };
        h.good(&Cdb::write(CdbSize::Ten, 7, 2, false), &[0x0f; 1024]);
        h.good(&or(7, 2), &[0xa0; 1024]);
        assert_eq!(
            h.good(&Cdb::read(CdbSize::Ten, 7, 2), &[]),
            vec![0xaf; 1024]
        );
        h.good(&or(7, 0), &[]);
        assert_eq!(h.check(&or(1024, 0), &[]).asc, Asc::LBA_OUT_OF_RANGE);
        assert_eq!(h.check(&or(1023, 2), &[0; 1024]).asc, Asc::LBA_OUT_OF_RANGE);
        let mut p = or(0, 1);
        if let Cdb::OrWrite { orprotect, .. } = &mut p {
            *orprotect = 2;
        }
        assert_eq!(h.check(&p, &[0; 512]).sense_key_specific, field(1, Some(7)));
        let ro = Harness::new(64, 512, true);
        assert_eq!(ro.check(&or(0, 1), &[1; 512]).asc, Asc::WRITE_PROTECTED);
    }

    #[test]
    fn prefetch_condition_met_only_when_cached() {
        let prefetch = |size, lba, blocks| Cdb::PreFetch {
            size,
            lba,
            blocks,
            immed: true,
            group: 3,
        };
        let h = Harness::ram(1024);
        for (size, lba, blocks) in [
            (CdbSize::Ten, 0, 1),
            (CdbSize::Sixteen, 1000, 24),
            (CdbSize::Ten, 5, 0),
        ] {
            let c = h.run(&prefetch(size, lba, blocks), &[]);
            assert_eq!(
                (c.status, c.sense, c.data.len()),
                (ScsiStatus::CONDITION_MET.0, None, 0)
            );
        }
        for (lba, blocks) in [(1024, 0), (1020, 5), (u64::MAX, 1)] {
            assert_eq!(
                h.check(&prefetch(CdbSize::Sixteen, lba, blocks), &[]).asc,
                Asc::LBA_OUT_OF_RANGE
            );
        }
        // The probe (like a file or NBD) cannot promise a cache: GOOD.
        let (p, _) = probed(1 << 20, 1 << 20, nix::libc::EIO);
        assert_eq!(p.run(&prefetch(CdbSize::Ten, 0, 8), &[]).status, 0);
    }

    #[test]
    fn read_defect_data_reports_empty_lists() {
        let h = Harness::ram(64);
        let rdd = |size, plist, glist, format, alloc| Cdb::ReadDefectData {
            size,
            req_plist: plist,
            req_glist: glist,
            format,
            address_descriptor_index: 0,
            allocation_length: alloc,
        };
        let d = DefectData::parse_10(&h.good(&rdd(CdbSize::Ten, false, false, 0, 32), &[]))
            .expect("parses");
        assert_eq!(d, DefectData::default());
        let data = h.good(&rdd(CdbSize::Twelve, true, true, 5, 64), &[]);
        assert_eq!(data.len(), 8);
        let d = DefectData::parse_12(&data).expect("parses");
        assert!(d.plistv && d.glistv && d.descriptors.is_empty());
        assert_eq!(d.format, 5);
        assert_eq!(
            h.good(&rdd(CdbSize::Ten, true, false, 3, 2), &[]).len(),
            2,
            "cut to the allocation length"
        );
        assert_eq!(
            h.check(&rdd(CdbSize::Ten, true, false, 7, 32), &[])
                .sense_key_specific,
            field(2, Some(2))
        );
        assert_eq!(
            h.check(&rdd(CdbSize::Twelve, true, false, 7, 32), &[])
                .sense_key_specific,
            field(1, Some(2))
        );
    }

    #[test]
    fn write_cache_disabled_writes_through() {
        let (h, probe) = probed(1 << 20, 1 << 20, nix::libc::EIO);
        h.table
            .iter()
            .for_each(|lu| lu.lock().mode.caching.wce = false);
        let before = probe.flushes();
        h.good(&Cdb::write(CdbSize::Ten, 0, 1, false), &[1; 512]);
        h.good(
            &Cdb::WriteSame {
                size: CdbSize::Ten,
                lba: 0,
                blocks: 4,
                wrprotect: 0,
                anchor: false,
                unmap: false,
                ndob: false,
                group: 0,
            },
            &[2; 512],
        );
        assert_eq!(probe.flushes(), before + 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// What is written reads back, wherever and however it is written.
        #[test]
        fn write_read_round_trip(lba in 0u64..200, blocks in 1u32..56, seed in any::<u8>(), wsize in 1usize..4, rsize in 1usize..4) {
            let sizes = [CdbSize::Six, CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen];
            let h = Harness::ram(256);
            let data = pattern(blocks as usize * 512, seed);
            h.good(&Cdb::write(sizes[wsize], lba, blocks, seed % 2 == 0), &data);
            prop_assert_eq!(h.good(&Cdb::read(sizes[rsize], lba, blocks), &[]), data);
        }

        /// The range check agrees with arithmetic.
        #[test]
        fn range_check(lba in any::<u64>(), blocks in 0u32..64) {
            let h = Harness::ram(128);
            let ok = lba < 128 && lba + u64::from(blocks) <= 128;
            let c = h.run(&Cdb::read(CdbSize::Sixteen, lba, blocks), &[]);
            prop_assert_eq!(c.status == ScsiStatus::GOOD.0, ok);
            prop_assert_eq!(c.data.len(), if ok { blocks as usize * 512 } else { 0 });
        }
    }
}
