//! An iSCSI logical unit through our initiator.
//!
//! Geometry comes from READ CAPACITY (16) (SBC-4 §5.17), which also says
//! whether the LUN is thin provisioned: LBPME=1 means UNMAP deallocates
//! (SBC-4 §5.31) and LBPRZ=1 that deallocated blocks read as zeros. With
//! LBPME=0 unmaps are refused ([`DeviceError::Unsupported`]) and the output
//! says so. Limits come from the Block Limits VPD page (SBC-4 §6.6.4) when
//! the LUN has one: MAXIMUM TRANSFER LENGTH, MAXIMUM UNMAP LBA COUNT and
//! BLOCK DESCRIPTOR COUNT, MAXIMUM WRITE SAME LENGTH, MAXIMUM COMPARE AND
//! WRITE LENGTH; larger UNMAPs and WRITE SAMEs are split to fit.
//!
//! Commands: READ/WRITE (10 or 16, FUA bit, SBC-4 §5.40), SYNCHRONIZE
//! CACHE (10), UNMAP, WRITE SAME (16) with or without UNMAP (SBC-4 §5.47),
//! COMPARE AND WRITE (SBC-4 §5.3). A CHECK CONDITION keeps its sense data
//! ([`DeviceError::Check`]); anything else that fails is an
//! [`DeviceError::Io`].
//!
//! Commands are pipelined on one session: N callers are N commands in
//! flight, up to the target's command window. Read data is lent to the
//! caller's buffer without a copy; write data is copied once into the
//! session's `Bytes`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use iesp_initiator::{
    CommandError, IscsiUrl, LogicalUnit, LoginOptions, LunError, NegotiationPolicy, ScsiResult,
    Session,
};
use iesp_proto::scsi::inquiry::{BlockLimits, VpdPageCode};
use iesp_proto::scsi::unmap::UnmapDescriptor;
use iesp_proto::scsi::{
    Cdb, CdbSize, ReadCapacity16Data, ScsiStatus, SenseKey, UnmapParameters, Vpd, VpdPage,
};

use crate::{
    AlignedBuf, Capabilities, Device, DeviceError, DeviceInfo, IoResult, Kind, LbaRange, Limits,
    OpenOptions, TrimGate, TrimMethod, TrimSupport, check_compare_and_write, check_write_same,
    pieces, write_same_op,
};

/// The MaxRecvDataSegmentLength the device declares: 1 MiB, four times
/// the initiator library's default, so that a READ of up to 1 MiB can come
/// as one Data-In, whose segment is lent to the caller as it sits in the
/// read buffer, instead of four that are copied together (issue 16: that
/// copy was a quarter of the client's CPU on 1 MiB reads).
const MAX_RECV_SEGMENT: u32 = 1 << 20;

/// How long one command may take before it counts as an I/O error.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Transfer cap when the LUN gives none: big commands gain nothing more.
const DEFAULT_MAX_IO_BYTES: u32 = 8 << 20;

/// Descriptors per UNMAP when the LUN gives no limit.
const DEFAULT_UNMAP_DESCRIPTORS: u32 = 64;

/// Blocks per WRITE SAME when the LUN gives no limit.
const DEFAULT_WRITE_SAME_BLOCKS: u64 = 1 << 16;

/// An open LUN.
pub struct IscsiDevice {
    /// The session, when this device logged in (and logs out on close).
    session: Option<Session>,
    lu: LogicalUnit,
    info: DeviceInfo,
    trim: TrimGate,
}

impl fmt::Debug for IscsiDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IscsiDevice")
            .field("lu", &self.lu)
            .field("info", &self.info)
            .finish()
    }
}

impl IscsiDevice {
    /// Logs in to the target and LUN `target` names.
    pub async fn open(target: &str, opts: &OpenOptions) -> Result<IscsiDevice, DeviceError> {
        let url = IscsiUrl::from_str(target).map_err(|e| DeviceError::Usage {
            target: "iSCSI URL".into(),
            reason: e.to_string(),
        })?;
        let name = url.to_string();
        let open_err = |reason: String| DeviceError::Open {
            target: name.clone(),
            reason,
        };
        let Some(lun) = url.lun() else {
            return Err(DeviceError::Usage {
                target: name,
                reason: "a discovery URL: add /target-iqn/lun".into(),
            });
        };
        let mut login = LoginOptions::from_url(&url, &opts.initiator_name);
        login.connect_timeout = opts.connect_timeout;
        login.poll_us = opts.poll_us;
        login.max_recv_data_segment_length = MAX_RECV_SEGMENT;
        login.negotiation = if opts.strict_negotiation {
            NegotiationPolicy::Strict
        } else {
            NegotiationPolicy::Lenient
        };
        let session = Session::login_url_with(&url, login)
            .await
            .map_err(|e| open_err(format!("login: {e}")))?;
        let negotiation_warnings = session.login_outcome().negotiation_warnings.clone();
        session.set_default_timeout(Some(COMMAND_TIMEOUT));
        let lu = session
            .logical_unit(lun)
            .await
            .map_err(|e| open_err(format!("LUN {lun}: {e}")))?;
        let mut dev = IscsiDevice::probe(name, lu).await;
        dev.info.negotiation_warnings = negotiation_warnings;
        dev.session = Some(session);
        Ok(dev)
    }

    /// A device over a logical unit of a session the caller owns (and
    /// logs out of): [`Device::close`] leaves the session alone.
    pub async fn from_logical_unit(lu: LogicalUnit) -> IscsiDevice {
        let name = format!("LUN {:?}", lu.lun());
        IscsiDevice::probe(name, lu).await
    }

    /// The logical unit.
    pub fn logical_unit(&self) -> &LogicalUnit {
        &self.lu
    }

    /// Reads provisioning and limits.
    async fn probe(name: String, lu: LogicalUnit) -> IscsiDevice {
        let mut notes = Vec::new();
        let rc16 = match lu
            .raw(&Cdb::read_capacity16().encode(), Bytes::new(), 32)
            .await
        {
            Ok(r) if r.is_good() => ReadCapacity16Data::parse(&r.data).ok(),
            _ => None,
        };
        if rc16.is_none() {
            notes.push("READ CAPACITY (16) failed: provisioning unknown, trims skipped".into());
        }
        // The LUN's identity (device identification, SPC-4 §7.8.6), for
        // state files that must not be checked against another LUN.
        let mut identity = None;
        if let Ok(r) = lu
            .raw(&Cdb::inquiry(Some(0x83), 252).encode(), Bytes::new(), 252)
            .await
            && r.is_good()
            && r.data.len() > 4
        {
            identity = Some(r.data[4..].iter().map(|b| format!("{b:02x}")).collect());
        }
        let lbpme = rc16.is_some_and(|d| d.lbpme);
        let lbprz = rc16.is_some_and(|d| d.lbprz);
        let vpd: Option<BlockLimits> = match lu
            .raw(
                &Cdb::inquiry(Some(VpdPageCode::BLOCK_LIMITS.0), 64).encode(),
                Bytes::new(),
                64,
            )
            .await
        {
            Ok(r) if r.is_good() => match Vpd::parse(&r.data) {
                Ok(Vpd {
                    page: VpdPage::BlockLimits(l),
                    ..
                }) => Some(l),
                _ => None,
            },
            _ => None,
        };
        let bs = lu.block_size();
        let mut max_io = DEFAULT_MAX_IO_BYTES;
        if let Some(l) = vpd.filter(|l| l.max_transfer_length > 0) {
            let cap = u64::from(l.max_transfer_length) * u64::from(bs);
            max_io = u32::try_from(cap.min(u64::from(max_io))).unwrap_or(max_io);
        }
        let max_io = (max_io / bs).max(1) * bs;
        let limits = Limits {
            max_transfer_bytes: max_io,
            max_unmap_blocks: vpd.map_or(0, |l| match l.max_unmap_lba_count {
                u32::MAX => 0,
                n => n,
            }),
            max_unmap_descriptors: vpd
                .map(|l| l.max_unmap_block_descriptor_count)
                .filter(|&n| n > 0 && n != u32::MAX)
                .unwrap_or(DEFAULT_UNMAP_DESCRIPTORS),
            max_write_same_blocks: vpd
                .map(|l| l.max_write_same_length)
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_WRITE_SAME_BLOCKS),
            // Without the page, try one block at a time; with it, what it says.
            max_compare_and_write_blocks: vpd
                .map_or(1, |l| u32::from(l.max_compare_and_write_length)),
        };
        let caps = Capabilities {
            fua: true,
            unmap: lbpme,
            unmap_zeroes: lbpme && lbprz,
            write_same: true,
            write_same_unmap: lbpme,
            compare_and_write: limits.max_compare_and_write_blocks > 0,
            compare_and_write_atomic: true,
        };
        let trim = if lbpme {
            TrimSupport {
                method: TrimMethod::Unmap,
                zeroes: lbprz,
                reason: if lbprz {
                    "UNMAP; READ CAPACITY (16) says LBPME=1, LBPRZ=1: trimmed blocks read as zeros"
                        .into()
                } else {
                    "UNMAP; LBPRZ=0: trimmed blocks have unspecified content and are not compared"
                        .into()
                },
            }
        } else {
            TrimSupport {
                method: TrimMethod::None,
                zeroes: false,
                reason: "the LUN is not thin provisioned (READ CAPACITY (16) LBPME=0)".into(),
            }
        };
        let gate = TrimGate::default();
        if !lbpme {
            let _ = gate.close(trim.reason.clone());
        }
        IscsiDevice {
            info: DeviceInfo {
                name,
                kind: Kind::IscsiLun,
                block_size: bs,
                blocks: lu.blocks(),
                direct_io: false,
                max_io_bytes: max_io,
                align: crate::buf::DEFAULT_ALIGN,
                trim,
                notes,
                identity,
                limits,
                caps,
                negotiation_warnings: Vec::new(),
            },
            session: None,
            lu,
            trim: gate,
        }
    }

    fn blocks_of(&self, op: &'static str, lba: u64, len: usize) -> Result<u32, DeviceError> {
        let bs = self.info.block_size as usize;
        let blocks = len / bs;
        if len % bs != 0 || len > self.info.max_io_bytes as usize || blocks == 0 {
            return Err(DeviceError::io(
                op,
                lba,
                blocks as u64,
                format!(
                    "{len} bytes: not 1 to {} whole blocks",
                    self.info.max_io_bytes as usize / bs
                ),
            ));
        }
        self.info.check_range(op, lba, blocks as u64)?;
        Ok(blocks as u32)
    }

    /// Runs a raw command; GOOD is `Ok`, CHECK CONDITION keeps its sense.
    async fn command(
        &self,
        op: &'static str,
        lba: u64,
        blocks: u64,
        cdb: &[u8],
        data: Bytes,
    ) -> Result<ScsiResult, DeviceError> {
        let r = self
            .lu
            .raw(cdb, data, 0)
            .await
            .map_err(|e: CommandError| DeviceError::io(op, lba, blocks, e))?;
        status_error(op, lba, blocks, r)
    }
}

/// How a WRITE that was aborted or reset in flight ended (fsx's task
/// management ops): the blocks hold the old or the new data either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterruptedWrite {
    /// The task management response, by name (e.g. `FunctionComplete`).
    pub tmf_response: String,
    /// The write's own outcome: `Ok` if it completed first.
    pub write: Result<(), String>,
}

impl IscsiDevice {
    /// Sends a WRITE of `data` at `lba` and, right behind it, ABORT TASK
    /// naming it (`lun_reset`: LOGICAL UNIT RESET instead); waits for both.
    /// After a reset, TEST UNIT READY is repeated until the unit attention
    /// it raises is cleared.
    pub async fn write_then_interrupt(
        &self,
        lba: u64,
        data: &[u8],
        lun_reset: bool,
    ) -> Result<InterruptedWrite, DeviceError> {
        use iesp_proto::pdu::TmfFunction;
        let op = if lun_reset { "LUN RESET" } else { "ABORT TASK" };
        let blocks = self.blocks_of(op, lba, data.len())?;
        let session = self.lu.session();
        let cdb = Cdb::write(CdbSize::Sixteen, lba, blocks, false).encode();
        let handle = session
            .submit(self.lu.lun(), &cdb, Bytes::copy_from_slice(data), 0)
            .map_err(|e| DeviceError::io(op, lba, u64::from(blocks), e))?;
        let (function, referenced) = if lun_reset {
            (TmfFunction::LOGICAL_UNIT_RESET, None)
        } else {
            (TmfFunction::ABORT_TASK, Some(handle.itt()))
        };
        let tmf = session
            .task_management(function, self.lu.lun(), referenced)
            .await
            .map_err(|e| DeviceError::io(op, lba, u64::from(blocks), e))?;
        let write = match handle.wait_timeout(COMMAND_TIMEOUT).await {
            Ok(r) if r.is_good() => Ok(()),
            Ok(r) => Err(r.status.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if lun_reset {
            // The reset's unit attention goes to the next command.
            for _ in 0..4 {
                if self.lu.test_unit_ready().await.is_ok() {
                    break;
                }
            }
        }
        Ok(InterruptedWrite {
            tmf_response: format!("{tmf:?}"),
            write,
        })
    }

    /// The WP bit of MODE SENSE (6)'s header (SBC-4 §6.5.1): the medium is
    /// write protected. `None` when MODE SENSE fails.
    pub async fn write_protected(&self) -> Option<bool> {
        let cdb = Cdb::mode_sense(CdbSize::Six, 0x3f, 0, 255).encode();
        match self.lu.raw(&cdb, Bytes::new(), 255).await {
            Ok(r) if r.is_good() && r.data.len() >= 4 => Some(r.data[2] & 0x80 != 0),
            _ => None,
        }
    }

    /// Whether the LUN answers COMPARE AND WRITE at all: one with NUMBER
    /// OF LOGICAL BLOCKS 0, which compares and writes nothing and is no
    /// error (SBC-4 §5.3). `Ok(false)` when it is ILLEGAL REQUEST (e.g. an
    /// invalid operation code: tgt).
    pub async fn probe_compare_and_write(&self) -> Result<Result<(), String>, DeviceError> {
        let cdb = Cdb::CompareAndWrite {
            lba: 0,
            blocks: 0,
            wrprotect: 0,
            dpo: false,
            fua: false,
            group: 0,
        }
        .encode();
        match self
            .command("COMPARE AND WRITE", 0, 0, &cdb, Bytes::new())
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(DeviceError::Check { sense, .. }) if sense.key == SenseKey::ILLEGAL_REQUEST => {
                Ok(Err(sense.to_string()))
            }
            Err(e) => Err(e),
        }
    }
}

/// GOOD as `Ok`; CHECK CONDITION with sense as [`DeviceError::Check`];
/// anything else as [`DeviceError::Io`].
fn status_error(
    op: &'static str,
    lba: u64,
    blocks: u64,
    r: ScsiResult,
) -> Result<ScsiResult, DeviceError> {
    if r.is_good() {
        return Ok(r);
    }
    match r.sense {
        Some(sense) if r.status == ScsiStatus::CHECK_CONDITION => Err(DeviceError::Check {
            op,
            lba,
            blocks,
            sense,
        }),
        Some(s) => Err(DeviceError::io(
            op,
            lba,
            blocks,
            format!("{}: {s}", r.status),
        )),
        None => Err(DeviceError::io(op, lba, blocks, r.status)),
    }
}

fn lun_error(op: &'static str, lba: u64, blocks: u64, e: LunError) -> DeviceError {
    match e {
        LunError::Status {
            status,
            sense: Some(sense),
            ..
        } if status == ScsiStatus::CHECK_CONDITION => DeviceError::Check {
            op,
            lba,
            blocks,
            sense,
        },
        e => DeviceError::io(op, lba, blocks, e),
    }
}

impl Device for IscsiDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    async fn read(&self, lba: u64, mut buf: AlignedBuf) -> IoResult {
        let blocks = match self.blocks_of("READ", lba, buf.len()) {
            Ok(b) => b,
            Err(e) => return (buf, Err(e)),
        };
        let r = match self.lu.read(lba, blocks).await {
            Ok(data) if data.len() == buf.len() => {
                buf.set_shared(data);
                Ok(())
            }
            Ok(data) => Err(DeviceError::io(
                "READ",
                lba,
                u64::from(blocks),
                format!("{} bytes came back", data.len()),
            )),
            Err(e) => Err(lun_error("READ", lba, u64::from(blocks), e)),
        };
        (buf, r)
    }

    async fn write(&self, lba: u64, buf: AlignedBuf, fua: bool) -> IoResult {
        let op = if fua { "WRITE (FUA)" } else { "WRITE" };
        let blocks = match self.blocks_of(op, lba, buf.len()) {
            Ok(b) => b,
            Err(e) => return (buf, Err(e)),
        };
        let data = Bytes::copy_from_slice(&buf);
        let r = if fua {
            self.lu.write_fua(lba, data).await
        } else {
            self.lu.write(lba, data).await
        };
        (buf, r.map_err(|e| lun_error(op, lba, u64::from(blocks), e)))
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        self.lu
            .flush()
            .await
            .map_err(|e| lun_error("SYNCHRONIZE CACHE", 0, 0, e))
    }

    fn unmap_skip_reason(&self) -> Option<String> {
        self.trim.reason()
    }

    async fn unmap(&self, ranges: &[LbaRange]) -> Result<(), DeviceError> {
        if !self.trim.open() {
            return Err(self.trim.refusal());
        }
        let per = match self.info.limits.max_unmap_blocks {
            0 => u32::MAX,
            n => n,
        };
        let mut descriptors = Vec::new();
        for r in ranges {
            self.info.check_range("UNMAP", r.lba, r.blocks)?;
            let (mut at, end) = (r.lba, r.end());
            while at < end {
                let n = u32::try_from((end - at).min(u64::from(per))).unwrap_or(per);
                descriptors.push(UnmapDescriptor { lba: at, blocks: n });
                at += u64::from(n);
            }
        }
        let first = ranges.first().map_or(0, |r| r.lba);
        let total: u64 = ranges.iter().map(|r| r.blocks).sum();
        let per_command = self.info.limits.max_unmap_descriptors.max(1) as usize;
        for chunk in descriptors.chunks(per_command) {
            let params = UnmapParameters {
                descriptors: chunk.to_vec(),
            }
            .encode();
            let cdb = Cdb::Unmap {
                anchor: false,
                group: 0,
                parameter_list_length: u16::try_from(params.len()).unwrap_or(u16::MAX),
            }
            .encode();
            // The LUN advertised UNMAP (LBPME=1, or the gate would be
            // closed): a rejection is the LUN's failure, reported with its
            // sense data, never a reason to stop trimming quietly.
            self.command("UNMAP", first, total, &cdb, Bytes::from(params))
                .await?;
        }
        Ok(())
    }

    async fn write_same(&self, lba: u64, blocks: u64, block: AlignedBuf, unmap: bool) -> IoResult {
        if let Err(e) = check_write_same(&self.info, lba, blocks, &block) {
            return (block, Err(e));
        }
        let op = write_same_op(unmap);
        // WRITE SAME(16)'s NUMBER OF LOGICAL BLOCKS is 32 bits; 0 would
        // mean "to the end", so blocks == 0 sends nothing.
        let per = self
            .info
            .limits
            .max_write_same_blocks
            .clamp(1, u64::from(u32::MAX));
        let data = Bytes::copy_from_slice(&block);
        for (at, n) in pieces(lba, blocks, per) {
            let cdb = Cdb::WriteSame {
                size: CdbSize::Sixteen,
                lba: at,
                blocks: u32::try_from(n).unwrap_or(u32::MAX),
                wrprotect: 0,
                anchor: false,
                unmap,
                ndob: false,
                group: 0,
            }
            .encode();
            if let Err(e) = self.command(op, at, n, &cdb, data.clone()).await {
                return (block, Err(e));
            }
        }
        (block, Ok(()))
    }

    async fn compare_and_write(&self, lba: u64, buf: AlignedBuf, fua: bool) -> IoResult {
        let n = match check_compare_and_write(&self.info, lba, buf.len()) {
            Ok(n) => n,
            Err(e) => return (buf, Err(e)),
        };
        let cdb = Cdb::CompareAndWrite {
            lba,
            blocks: u8::try_from(n).unwrap_or(u8::MAX),
            wrprotect: 0,
            dpo: false,
            fua,
            group: 0,
        }
        .encode();
        let data = Bytes::copy_from_slice(&buf);
        let r = self
            .command("COMPARE AND WRITE", lba, n, &cdb, data)
            .await
            .map(|_| ());
        (buf, r)
    }

    async fn close(self) -> Result<(), DeviceError> {
        match self.session {
            Some(s) => s
                .logout()
                .await
                .map(|_| ())
                .map_err(|e| DeviceError::io("LOGOUT", 0, 0, e)),
            None => Ok(()),
        }
    }
}
