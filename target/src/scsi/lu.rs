//! A logical unit: a backend plus its block geometry, and the SCSI commands
//! it executes (SPC-4, SBC-4).

use bytes::{Bytes, BytesMut};
use iesp_proto::scsi::{Asc, Sense, SenseKey};

use super::{Completion, Direction, LunTable, Nexus, Transfer};
use crate::backend::Backend;

/// A disk LUN.
pub struct LogicalUnit {
    backend: Box<dyn Backend>,
    block_size: u32,
    blocks: u64,
    read_only: bool,
    /// Unit serial number (VPD 0x80) and the basis of the NAA designator.
    serial: String,
}

impl LogicalUnit {
    pub fn new(backend: Box<dyn Backend>, block_size: u32, read_only: bool, serial: String) -> LogicalUnit {
        let blocks = backend.size() / u64::from(block_size);
        LogicalUnit { backend, block_size, blocks, read_only, serial }
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.backend.flush()
    }

    pub(super) fn transfer(&self, cdb: &[u8]) -> Transfer {
        match rw(cdb) {
            Some(op) => Transfer {
                direction: if op.write { Direction::Write } else { Direction::Read },
                length: op.blocks.saturating_mul(self.block_size),
            },
            None => transfer_without_lu(cdb),
        }
    }

    pub(super) fn execute(&self, _nexus: &Nexus, cdb: &[u8], data_out: &[u8], table: &LunTable) -> Completion {
        let Some(&opcode) = cdb.first() else {
            return Completion::check_condition(&Sense::invalid_command_operation_code());
        };
        if let Some(op) = rw(cdb) {
            return self.read_write(op, data_out);
        }
        match opcode {
            0x00 => Completion::good(Bytes::new()),
            0x12 => inquiry(cdb, Some(self)),
            0x25 => {
                let last = u32::try_from(self.blocks.saturating_sub(1)).unwrap_or(u32::MAX);
                let mut d = Vec::with_capacity(8);
                d.extend_from_slice(&last.to_be_bytes());
                d.extend_from_slice(&self.block_size.to_be_bytes());
                Completion::good(Bytes::from(d))
            }
            0x9e if cdb.get(1).map(|b| b & 0x1f) == Some(0x10) => {
                let mut d = vec![0u8; 32];
                d[..8].copy_from_slice(&self.blocks.saturating_sub(1).to_be_bytes());
                d[8..12].copy_from_slice(&self.block_size.to_be_bytes());
                Completion::good(Bytes::from(truncate(d, alloc_len(cdb, 10, 4))))
            }
            0x35 | 0x91 => match self.backend.flush() {
                Ok(()) => Completion::good(Bytes::new()),
                Err(_) => Completion::check_condition(&Sense::new(SenseKey::MEDIUM_ERROR, Asc::WRITE_ERROR)),
            },
            _ => execute_without_lu(cdb, table),
        }
    }

    fn read_write(&self, op: Rw, data_out: &[u8]) -> Completion {
        let end = op.lba.checked_add(u64::from(op.blocks));
        if end.is_none_or(|e| e > self.blocks) {
            return Completion::check_condition(&Sense::lba_out_of_range(op.lba));
        }
        let offset = op.lba * u64::from(self.block_size);
        let len = op.blocks as usize * self.block_size as usize;
        if op.write {
            if self.read_only {
                return Completion::check_condition(&Sense::data_protect(Asc::WRITE_PROTECTED));
            }
            // The initiator may have sent less than the CDB asks for (EDTL <
            // SPDTL): write the whole blocks that arrived, refuse a partial
            // block (SAM-5 / FCP-4 overflow handling, option b).
            let bs = self.block_size as usize;
            let usable = data_out.len().min(len);
            if usable % bs != 0 {
                return Completion::check_condition(&Sense::illegal_request(Asc(0x0e03)));
            }
            if usable > 0 {
                if let Err(e) = self.backend.write_at(&data_out[..usable], offset) {
                    tracing::error!("write at {offset}: {e}");
                    return Completion::check_condition(&Sense::medium_error(Asc::WRITE_ERROR, op.lba));
                }
                if op.fua && self.backend.flush().is_err() {
                    return Completion::check_condition(&Sense::medium_error(Asc::WRITE_ERROR, op.lba));
                }
            }
            Completion::good(Bytes::new())
        } else {
            let mut buf = BytesMut::zeroed(len);
            match self.backend.read_at(&mut buf, offset) {
                Ok(()) => Completion::good(buf.freeze()),
                Err(e) => {
                    tracing::error!("read at {offset}: {e}");
                    Completion::check_condition(&Sense::medium_error(Asc::UNRECOVERED_READ_ERROR, op.lba))
                }
            }
        }
    }
}

/// A decoded READ or WRITE of any size.
#[derive(Clone, Copy)]
struct Rw {
    write: bool,
    lba: u64,
    blocks: u32,
    fua: bool,
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, b| acc << 8 | u64::from(*b))
}

fn rw(cdb: &[u8]) -> Option<Rw> {
    let (write, lba, blocks, fua) = match *cdb.first()? {
        0x08 | 0x0a if cdb.len() >= 6 => {
            let n = u32::from(cdb[4]);
            (cdb[0] == 0x0a, be(&cdb[1..4]) & 0x1f_ffff, if n == 0 { 256 } else { n }, false)
        }
        0x28 | 0x2a if cdb.len() >= 10 => (cdb[0] == 0x2a, be(&cdb[2..6]), be(&cdb[7..9]) as u32, cdb[1] & 0x08 != 0),
        0xa8 | 0xaa if cdb.len() >= 12 => (cdb[0] == 0xaa, be(&cdb[2..6]), be(&cdb[6..10]) as u32, cdb[1] & 0x08 != 0),
        0x88 | 0x8a if cdb.len() >= 16 => (cdb[0] == 0x8a, be(&cdb[2..10]), be(&cdb[10..14]) as u32, cdb[1] & 0x08 != 0),
        _ => return None,
    };
    Some(Rw { write, lba, blocks, fua })
}

fn alloc_len(cdb: &[u8], at: usize, len: usize) -> u32 {
    cdb.get(at..at + len).map_or(0, |b| be(b) as u32)
}

fn truncate(mut v: Vec<u8>, alloc: u32) -> Vec<u8> {
    v.truncate(alloc as usize);
    v
}

pub(super) fn transfer_without_lu(cdb: &[u8]) -> Transfer {
    let read = |length| Transfer { direction: Direction::Read, length };
    match cdb.first() {
        Some(0x12) => read(alloc_len(cdb, 3, 2)),
        Some(0x03) => read(alloc_len(cdb, 4, 1)),
        Some(0xa0) => read(alloc_len(cdb, 6, 4)),
        Some(0x25) => read(8),
        Some(0x9e) => read(alloc_len(cdb, 10, 4)),
        _ => Transfer::NONE,
    }
}

pub(super) fn execute_without_lu(cdb: &[u8], table: &LunTable) -> Completion {
    match cdb.first() {
        Some(0x12) => inquiry(cdb, None),
        Some(0xa0) => {
            let luns = table.lun_list();
            let mut d = Vec::with_capacity(8 + 8 * luns.len());
            d.extend_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
            d.extend_from_slice(&[0; 4]);
            for l in luns {
                d.extend_from_slice(&l.to_bytes());
            }
            Completion::good(Bytes::from(truncate(d, alloc_len(cdb, 6, 4))))
        }
        Some(_) => Completion::check_condition(&Sense::invalid_command_operation_code()),
        None => Completion::check_condition(&Sense::invalid_command_operation_code()),
    }
}

fn inquiry(cdb: &[u8], lu: Option<&LogicalUnit>) -> Completion {
    let alloc = alloc_len(cdb, 3, 2);
    let evpd = cdb.get(1).is_some_and(|b| b & 1 != 0);
    let page = cdb.get(2).copied().unwrap_or(0);
    let pq_type = if lu.is_some() { 0x00 } else { 0x7f };
    if !evpd {
        if page != 0 {
            return Completion::check_condition(&Sense::invalid_field_in_cdb(2, None));
        }
        let mut d = vec![0u8; 36];
        d[0] = pq_type;
        d[2] = 0x06;
        d[3] = 0x12;
        d[4] = 31;
        d[7] = 0x02;
        d[8..16].copy_from_slice(b"IESP    ");
        d[16..32].copy_from_slice(b"iesp-target     ");
        d[32..36].copy_from_slice(b"0001");
        return Completion::good(Bytes::from(truncate(d, alloc)));
    }
    let Some(lu) = lu else {
        return Completion::check_condition(&Sense::logical_unit_not_supported());
    };
    let body: Vec<u8> = match page {
        0x00 => vec![0x00, 0x80, 0x83],
        0x80 => lu.serial.as_bytes().to_vec(),
        0x83 => {
            let mut naa = [0u8; 8];
            let h = lu.serial.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            naa.copy_from_slice(&((0x3u64 << 60) | (h & 0x0fff_ffff_ffff_ffff)).to_be_bytes());
            let mut d = vec![0x01, 0x03, 0x00, 0x08];
            d.extend_from_slice(&naa);
            d
        }
        _ => return Completion::check_condition(&Sense::invalid_field_in_cdb(2, None)),
    };
    let mut d = vec![pq_type, page, 0, body.len() as u8];
    d.extend_from_slice(&body);
    Completion::good(Bytes::from(truncate(d, alloc)))
}
