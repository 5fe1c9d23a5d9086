//! A block device view of one logical unit (SBC-4) on a [`Session`].
//!
//! [`LogicalUnit::open`] reads the capacity once — READ CAPACITY (16),
//! falling back to READ CAPACITY (10) when the device server does not know
//! it (SBC-4 §5.16, §5.15) — retrying the UNIT ATTENTION a fresh I_T nexus
//! usually gets first (SAM-5 §5.14). Then: block reads and writes (READ/WRITE
//! (10) while LBA and length fit, (16) beyond; SBC-4 §5.13, §5.40), FUA
//! writes, SYNCHRONIZE CACHE, INQUIRY, and [`LogicalUnit::raw`] for any CDB.
//! A failed command becomes a [`LunError`] whose `Display` names the
//! command, the status and the decoded sense (key, ASC/ASCQ).

use std::fmt;

use bytes::Bytes;
use iesp_proto::bhs::Lun;
use iesp_proto::scsi::{
    Cdb, CdbSize, DataError, ReadCapacity10Data, ReadCapacity16Data, ScsiStatus, Sense, SenseKey,
    StandardInquiry,
};

use crate::session::{CommandError, ScsiResult, Session};

/// Times a command is retried after UNIT ATTENTION while opening.
const UNIT_ATTENTION_RETRIES: usize = 4;

/// Allocation length of the standard INQUIRY (enough for version
/// descriptors, SPC-4 §6.6.2).
const INQUIRY_LEN: u16 = 96;

/// Why a logical unit operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LunError {
    /// The command did not complete (session closed, timeout, …).
    #[error("{op}: {source}")]
    Command {
        op: String,
        #[source]
        source: CommandError,
    },
    /// The command completed with a status other than GOOD.
    #[error("{op}: {}", describe(*status, sense.as_ref()))]
    Status {
        op: String,
        status: ScsiStatus,
        sense: Option<Sense>,
    },
    /// Less data than asked for came back.
    #[error("{op}: {got} bytes of data where {expected} were expected")]
    ShortData {
        op: String,
        expected: usize,
        got: usize,
    },
    /// The parameter data could not be decoded.
    #[error("{op}: {source}")]
    Data {
        op: String,
        #[source]
        source: DataError,
    },
    /// The request does not make sense for this logical unit.
    #[error("{0}")]
    Invalid(String),
}

fn describe(status: ScsiStatus, sense: Option<&Sense>) -> String {
    match sense {
        Some(s) => format!(
            "{status}: {s} (sense key {:#x}, ASC/ASCQ {:#06x})",
            s.key.0, s.asc.0
        ),
        None => status.to_string(),
    }
}

impl LunError {
    /// The sense data of a CHECK CONDITION, if that is what this is.
    pub fn sense(&self) -> Option<&Sense> {
        match self {
            LunError::Status { sense, .. } => sense.as_ref(),
            _ => None,
        }
    }

    fn is_unit_attention(&self) -> bool {
        self.sense()
            .is_some_and(|s| s.key == SenseKey::UNIT_ATTENTION)
    }
}

/// One logical unit of a session, with its geometry.
#[derive(Clone)]
pub struct LogicalUnit {
    session: Session,
    lun: Lun,
    block_size: u32,
    blocks: u64,
}

impl fmt::Debug for LogicalUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogicalUnit")
            .field("lun", &self.lun)
            .field("block_size", &self.block_size)
            .field("blocks", &self.blocks)
            .finish()
    }
}

/// A block command's name for its errors, e.g. `READ(10) at LBA 8, 8
/// blocks`: rendered only when a command fails, so that the read and
/// write path formats nothing.
#[derive(Clone, Copy)]
struct BlockOp {
    verb: &'static str,
    size: CdbSize,
    lba: u64,
    blocks: u32,
}

impl fmt::Display for BlockOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({}) at LBA {}, {} blocks",
            self.verb,
            self.size.cdb_len(),
            self.lba,
            self.blocks
        )
    }
}

/// Turns a command outcome into data or a [`LunError`].
fn check(
    op: impl fmt::Display,
    r: Result<ScsiResult, CommandError>,
) -> Result<ScsiResult, LunError> {
    let r = r.map_err(|source| LunError::Command {
        op: op.to_string(),
        source,
    })?;
    if r.is_good() {
        Ok(r)
    } else {
        Err(LunError::Status {
            op: op.to_string(),
            status: r.status,
            sense: r.sense,
        })
    }
}

impl Session {
    /// Opens logical unit `number` (peripheral or flat addressing).
    pub async fn logical_unit(&self, number: u16) -> Result<LogicalUnit, LunError> {
        LogicalUnit::open(self, Lun::from_index(number)).await
    }
}

impl LogicalUnit {
    /// Reads the capacity of `lun` and returns its handle.
    pub async fn open(session: &Session, lun: Lun) -> Result<LogicalUnit, LunError> {
        let mut lu = LogicalUnit {
            session: session.clone(),
            lun,
            block_size: 0,
            blocks: 0,
        };
        let mut attempts = 0;
        let (blocks, block_size) = loop {
            attempts += 1;
            match lu.read_capacity().await {
                Err(e) if e.is_unit_attention() && attempts < UNIT_ATTENTION_RETRIES => continue,
                other => break other?,
            }
        };
        if block_size == 0 {
            return Err(LunError::Invalid(format!(
                "{lun:?} reports a logical block length of 0"
            )));
        }
        lu.block_size = block_size;
        lu.blocks = blocks;
        Ok(lu)
    }

    async fn read_capacity(&self) -> Result<(u64, u32), LunError> {
        let cdb = Cdb::read_capacity16().encode();
        match check("READ CAPACITY(16)", self.exec(&cdb, Bytes::new(), 32).await) {
            Ok(r) => {
                let d = ReadCapacity16Data::parse(&r.data).map_err(|source| LunError::Data {
                    op: "READ CAPACITY(16)".to_owned(),
                    source,
                })?;
                Ok((d.returned_lba.saturating_add(1), d.block_length))
            }
            Err(e)
                if e.sense()
                    .is_some_and(|s| s.key == SenseKey::ILLEGAL_REQUEST) =>
            {
                let cdb = Cdb::ReadCapacity10 { lba: 0, pmi: false }.encode();
                let r = check("READ CAPACITY(10)", self.exec(&cdb, Bytes::new(), 8).await)?;
                let d = ReadCapacity10Data::parse(&r.data).map_err(|source| LunError::Data {
                    op: "READ CAPACITY(10)".to_owned(),
                    source,
                })?;
                Ok((u64::from(d.returned_lba) + 1, d.block_length))
            }
            Err(e) => Err(e),
        }
    }

    async fn exec(
        &self,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
    ) -> Result<ScsiResult, CommandError> {
        self.session
            .command(self.lun, cdb, data_out, expected_in)
            .await
    }

    pub fn lun(&self) -> Lun {
        self.lun
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Logical block length in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Number of logical blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }

    /// The smallest CDB that carries `lba` and `blocks`.
    fn size_for(lba: u64, blocks: u32) -> CdbSize {
        let end = lba.saturating_add(u64::from(blocks));
        if blocks <= 0xffff && end <= 1 << 32 {
            CdbSize::Ten
        } else {
            CdbSize::Sixteen
        }
    }

    /// Reads `blocks` blocks from `lba`.
    pub async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes, LunError> {
        let size = Self::size_for(lba, blocks);
        let op = BlockOp {
            verb: "READ",
            size,
            lba,
            blocks,
        };
        let len = u64::from(blocks) * u64::from(self.block_size);
        let expected = u32::try_from(len).map_err(|_| {
            LunError::Invalid(format!("{op}: {len} bytes is too long for one command"))
        })?;
        let cdb = Cdb::read(size, lba, blocks).encode();
        let r = check(op, self.exec(&cdb, Bytes::new(), expected).await)?;
        if r.data.len() != expected as usize {
            return Err(LunError::ShortData {
                op: op.to_string(),
                expected: expected as usize,
                got: r.data.len(),
            });
        }
        Ok(r.data)
    }

    async fn write_impl(&self, lba: u64, data: Bytes, fua: bool) -> Result<(), LunError> {
        let bs = self.block_size as usize;
        if data.is_empty() || data.len() % bs != 0 {
            return Err(LunError::Invalid(format!(
                "write of {} bytes at LBA {lba}: not a whole number of {bs}-byte blocks",
                data.len()
            )));
        }
        let blocks = u32::try_from(data.len() / bs)
            .map_err(|_| LunError::Invalid(format!("write of {} bytes: too long", data.len())))?;
        let size = Self::size_for(lba, blocks);
        let verb = if fua { "WRITE+FUA" } else { "WRITE" };
        let op = BlockOp {
            verb,
            size,
            lba,
            blocks,
        };
        let cdb = Cdb::write(size, lba, blocks, fua).encode();
        check(op, self.exec(&cdb, data, 0).await)?;
        Ok(())
    }

    /// Writes whole blocks at `lba`.
    pub async fn write(&self, lba: u64, data: Bytes) -> Result<(), LunError> {
        self.write_impl(lba, data, false).await
    }

    /// Writes whole blocks at `lba` with FUA (forced unit access, SBC-4 §5.40).
    pub async fn write_fua(&self, lba: u64, data: Bytes) -> Result<(), LunError> {
        self.write_impl(lba, data, true).await
    }

    /// SYNCHRONIZE CACHE (10) of the whole medium (SBC-4 §5.24).
    pub async fn flush(&self) -> Result<(), LunError> {
        let cdb = Cdb::synchronize_cache(CdbSize::Ten).encode();
        check(
            "SYNCHRONIZE CACHE(10)",
            self.exec(&cdb, Bytes::new(), 0).await,
        )?;
        Ok(())
    }

    /// TEST UNIT READY (SPC-4 §6.47).
    pub async fn test_unit_ready(&self) -> Result<(), LunError> {
        let cdb = Cdb::TestUnitReady.encode();
        check("TEST UNIT READY", self.exec(&cdb, Bytes::new(), 0).await)?;
        Ok(())
    }

    /// Standard INQUIRY data (SPC-4 §6.6.2).
    pub async fn inquiry(&self) -> Result<StandardInquiry, LunError> {
        let cdb = Cdb::inquiry(None, INQUIRY_LEN).encode();
        let r = check(
            "INQUIRY",
            self.exec(&cdb, Bytes::new(), u32::from(INQUIRY_LEN)).await,
        )?;
        StandardInquiry::parse(&r.data).map_err(|source| LunError::Data {
            op: "INQUIRY".to_owned(),
            source,
        })
    }

    /// Any CDB on this logical unit; the outcome is returned as is,
    /// whatever the status.
    pub async fn raw(
        &self,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
    ) -> Result<ScsiResult, CommandError> {
        self.exec(cdb, data_out, expected_in).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iesp_proto::scsi::Asc;

    #[test]
    fn cdb_size_choice() {
        assert_eq!(LogicalUnit::size_for(0, 8), CdbSize::Ten);
        assert_eq!(LogicalUnit::size_for(0, 0xffff), CdbSize::Ten);
        assert_eq!(LogicalUnit::size_for(0, 0x1_0000), CdbSize::Sixteen);
        assert_eq!(LogicalUnit::size_for(0xffff_fff0, 0x10), CdbSize::Ten);
        assert_eq!(LogicalUnit::size_for(0xffff_fff0, 0x11), CdbSize::Sixteen);
        assert_eq!(LogicalUnit::size_for(1 << 40, 1), CdbSize::Sixteen);
    }

    #[test]
    fn block_op_names_the_command() {
        let op = BlockOp {
            verb: "WRITE+FUA",
            size: CdbSize::Sixteen,
            lba: 1 << 40,
            blocks: 8,
        };
        assert_eq!(
            op.to_string(),
            "WRITE+FUA(16) at LBA 1099511627776, 8 blocks"
        );
        let e = check(op, Err(CommandError::Closed("gone".into()))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("WRITE+FUA(16) at LBA 1099511627776, 8 blocks: ")
        );
    }

    #[test]
    fn errors_read_well() {
        let e = LunError::Status {
            op: "READ(10) at LBA 999999, 1 blocks".to_owned(),
            status: ScsiStatus::CHECK_CONDITION,
            sense: Some(Sense::new(SenseKey::ILLEGAL_REQUEST, Asc(0x2100))),
        };
        let s = e.to_string();
        assert!(
            s.starts_with("READ(10) at LBA 999999, 1 blocks: CHECK CONDITION: "),
            "{s}"
        );
        assert!(s.contains("ILLEGAL REQUEST"), "{s}");
        assert!(s.ends_with("(sense key 0x5, ASC/ASCQ 0x2100)"), "{s}");
        assert_eq!(e.sense().map(|s| s.asc), Some(Asc(0x2100)));
        let e = LunError::Status {
            op: "X".to_owned(),
            status: ScsiStatus::BUSY,
            sense: None,
        };
        assert_eq!(e.to_string(), "X: BUSY");
    }
}
