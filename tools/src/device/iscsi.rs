//! An iSCSI logical unit through our initiator.
//!
//! Geometry comes from READ CAPACITY (16) (SBC-4 §5.17), which also says
//! whether the LUN is thin provisioned: LBPME=1 means UNMAP deallocates
//! (SBC-4 §5.31) and LBPRZ=1 that deallocated blocks read as zeros. With
//! LBPME=0 trims are skipped and the output says so. UNMAP descriptors
//! respect the Block Limits VPD page (SBC-4 §6.6.4) when the LUN has one;
//! transfers respect its MAXIMUM TRANSFER LENGTH.
//!
//! Commands are pipelined on one session: N callers are N commands in
//! flight, up to the target's command window. Data is copied once between
//! the caller's aligned buffer and the session's `Bytes`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use iesp_initiator::{IscsiUrl, LogicalUnit, LoginOptions, LunError, NegotiationPolicy, Session};
use iesp_proto::scsi::inquiry::VpdPageCode;
use iesp_proto::scsi::unmap::UnmapDescriptor;
use iesp_proto::scsi::{Cdb, ReadCapacity16Data, SenseKey, UnmapParameters, Vpd, VpdPage};

use super::{
    AlignedBuf, DeviceError, DeviceInfo, Kind, OpenOptions, TrimGate, TrimMethod, TrimSupport,
};

/// How long one command may take before it counts as an I/O error.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Transfer cap when the LUN gives none: big commands gain nothing more.
const DEFAULT_MAX_IO_BYTES: u32 = 8 << 20;

/// Descriptors per UNMAP when the LUN gives no limit.
const DEFAULT_UNMAP_DESCRIPTORS: u32 = 64;

/// An open LUN.
pub struct IscsiDevice {
    session: Session,
    lu: LogicalUnit,
    info: DeviceInfo,
    /// MAXIMUM UNMAP LBA COUNT (0: no limit given).
    max_unmap_blocks: u32,
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
        login.negotiation = if opts.strict_negotiation {
            NegotiationPolicy::Strict
        } else {
            NegotiationPolicy::Lenient
        };
        let session = Session::login_url_with(&url, login)
            .await
            .map_err(|e| open_err(format!("login: {e}")))?;
        let negotiation_warnings: Vec<super::NegotiationWarning> = session
            .login_outcome()
            .negotiation_warnings
            .iter()
            .map(|w| super::NegotiationWarning {
                key: w.key.clone(),
                offered: w.offered.clone(),
                answered: w.answered.clone(),
                used: w.used.clone(),
                reason: w.reason.clone(),
            })
            .collect();
        session.set_default_timeout(Some(COMMAND_TIMEOUT));
        let lu = session
            .logical_unit(lun)
            .await
            .map_err(|e| open_err(format!("LUN {lun}: {e}")))?;

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
        let lbpme = rc16.is_some_and(|d| d.lbpme);
        let lbprz = rc16.is_some_and(|d| d.lbprz);
        let limits = match lu
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
        if let Some(l) = limits.filter(|l| l.max_transfer_length > 0) {
            let cap = u64::from(l.max_transfer_length) * u64::from(bs);
            max_io = u32::try_from(cap.min(u64::from(max_io))).unwrap_or(max_io);
        }
        let max_io = (max_io / bs).max(1) * bs;
        let max_unmap_blocks = limits.map_or(0, |l| l.max_unmap_lba_count);
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
        Ok(IscsiDevice {
            info: DeviceInfo {
                name,
                kind: Kind::IscsiLun,
                block_size: bs,
                blocks: lu.blocks(),
                direct_io: false,
                max_io_bytes: max_io,
                align: super::buf::DEFAULT_ALIGN,
                trim,
                notes,
                negotiation_warnings,
            },
            session,
            lu,
            max_unmap_blocks,
            trim: gate,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
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
        Ok(blocks as u32)
    }

    pub async fn read(
        &self,
        lba: u64,
        mut buf: AlignedBuf,
    ) -> (AlignedBuf, Result<(), DeviceError>) {
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

    pub async fn write(&self, lba: u64, buf: AlignedBuf) -> (AlignedBuf, Result<(), DeviceError>) {
        let blocks = match self.blocks_of("WRITE", lba, buf.len()) {
            Ok(b) => b,
            Err(e) => return (buf, Err(e)),
        };
        let r = self
            .lu
            .write(lba, Bytes::copy_from_slice(&buf))
            .await
            .map_err(|e| lun_error("WRITE", lba, u64::from(blocks), e));
        (buf, r)
    }

    pub fn trim_skip_reason(&self) -> Option<String> {
        self.trim.reason()
    }

    pub async fn trim(&self, lba: u64, blocks: u64) -> Result<(), DeviceError> {
        if !self.trim.open() {
            return Err(DeviceError::TrimUnsupported(
                self.trim.reason().unwrap_or_default(),
            ));
        }
        let per = match self.max_unmap_blocks {
            0 | u32::MAX => u32::MAX,
            n => n,
        };
        let mut descriptors = Vec::new();
        let (mut at, end) = (lba, lba.saturating_add(blocks));
        while at < end {
            let n = u32::try_from((end - at).min(u64::from(per))).unwrap_or(per);
            descriptors.push(UnmapDescriptor { lba: at, blocks: n });
            at += u64::from(n);
        }
        for chunk in descriptors.chunks(DEFAULT_UNMAP_DESCRIPTORS as usize) {
            let params = UnmapParameters {
                descriptors: chunk.to_vec(),
            }
            .encode();
            let cdb = Cdb::Unmap {
                anchor: false,
                group: 0,
                parameter_list_length: params.len() as u16,
            }
            .encode();
            match self.lu.raw(&cdb, Bytes::from(params), 0).await {
                Ok(r) if r.is_good() => {}
                Ok(r)
                    if r.sense
                        .as_ref()
                        .is_some_and(|s| s.key == SenseKey::ILLEGAL_REQUEST) =>
                {
                    let sense = r.sense.map(|s| s.to_string()).unwrap_or_default();
                    return Err(self.trim.close(format!("the LUN rejected UNMAP ({sense})")));
                }
                Ok(r) => {
                    let what = match &r.sense {
                        Some(s) => format!("{}: {s}", r.status),
                        None => r.status.to_string(),
                    };
                    return Err(DeviceError::io("UNMAP", lba, blocks, what));
                }
                Err(e) => return Err(DeviceError::io("UNMAP", lba, blocks, e)),
            }
        }
        Ok(())
    }

    pub async fn flush(&self) -> Result<(), DeviceError> {
        self.lu
            .flush()
            .await
            .map_err(|e| lun_error("SYNCHRONIZE CACHE", 0, 0, e))
    }

    pub async fn close(self) -> Result<(), DeviceError> {
        self.session
            .logout()
            .await
            .map(|_| ())
            .map_err(|e| DeviceError::Io {
                op: "LOGOUT",
                lba: 0,
                blocks: 0,
                reason: e.to_string(),
            })
    }
}

fn lun_error(op: &'static str, lba: u64, blocks: u64, e: LunError) -> DeviceError {
    DeviceError::io(op, lba, blocks, e)
}
