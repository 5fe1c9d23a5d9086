//! Mode parameters (SPC-4 §7.5; direct-access specifics SBC-4 §6.5): the
//! MODE SENSE data a target returns and the MODE SELECT parameter list it
//! receives share one format.
//!
//! Layout: a mode parameter header (4 bytes for the 6-byte commands, 8 for
//! the 10-byte ones, SPC-4 §7.5.5), block descriptors (SBC-4 §6.5.2: short
//! 8-byte or, with LONGLBA, long 16-byte), then mode pages (SPC-4 §7.5.7:
//! page_0 format with a 1-byte length, or sub_page format with SPF set and a
//! 2-byte length).
//!
//! Typed pages: Caching 0x08 (SBC-4 §6.5.5), Control 0x0A (SPC-4 §7.5.8) and
//! Informational Exceptions Control 0x1C (SPC-4 §7.5.14). A page with another
//! code, a subpage, or an unexpected PAGE LENGTH is kept as
//! [`ModePage::Other`], so a target can still reject it field by field.
//!
//! Page control (current / changeable / default / saved) is the caller's:
//! a "changeable values" page is just a page whose changeable fields are set
//! to all ones. [`first_unchangeable_difference`] does the MODE SELECT check
//! against such a mask.

use std::fmt;

use super::DataError;
use super::wire::{be16, be24, be32, be64, bit, flag, need, u8_at};

/// PC, the page control field of MODE SENSE (SPC-4 §6.13, table 101).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PageControl(pub u8);

impl PageControl {
    /// Current values.
    pub const CURRENT: PageControl = PageControl(0);
    /// Changeable values (a mask).
    pub const CHANGEABLE: PageControl = PageControl(1);
    /// Default values.
    pub const DEFAULT: PageControl = PageControl(2);
    /// Saved values.
    pub const SAVED: PageControl = PageControl(3);
}

impl fmt::Debug for PageControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("CURRENT"),
            1 => f.write_str("CHANGEABLE"),
            2 => f.write_str("DEFAULT"),
            3 => f.write_str("SAVED"),
            n => write!(f, "PageControl({n:#04x})"),
        }
    }
}

/// Mode page codes (SPC-4 Annex D.6, SBC-4 §6.5.1 table 209).
pub mod page_code {
    /// Read-Write Error Recovery (SBC-4 §6.5.9).
    pub const READ_WRITE_ERROR_RECOVERY: u8 = 0x01;
    /// Disconnect-Reconnect (SPC-4 §7.5.9).
    pub const DISCONNECT_RECONNECT: u8 = 0x02;
    /// Verify Error Recovery (SBC-4 §6.5.10).
    pub const VERIFY_ERROR_RECOVERY: u8 = 0x07;
    /// Caching (SBC-4 §6.5.5).
    pub const CACHING: u8 = 0x08;
    /// Control (SPC-4 §7.5.8); subpage 0x01 is Control Extension.
    pub const CONTROL: u8 = 0x0a;
    /// Power Condition (SPC-4 §7.5.13).
    pub const POWER_CONDITION: u8 = 0x1a;
    /// Informational Exceptions Control (SPC-4 §7.5.14).
    pub const INFORMATIONAL_EXCEPTIONS: u8 = 0x1c;
    /// Return all pages (MODE SENSE only).
    pub const ALL_PAGES: u8 = 0x3f;
    /// SUBPAGE CODE: return all subpages (MODE SENSE only).
    pub const ALL_SUBPAGES: u8 = 0xff;
}

/// The mode parameter header fields that are not lengths (SPC-4 §7.5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ModeHeader {
    /// MEDIUM TYPE (0 for SBC devices).
    pub medium_type: u8,
    /// DEVICE-SPECIFIC PARAMETER; for SBC devices WP (0x80) and DPOFUA
    /// (0x10), SBC-4 §6.5.1 table 210.
    pub device_specific_parameter: u8,
    /// LONGLBA: long LBA block descriptors (MODE SENSE(10) header only).
    pub longlba: bool,
}

impl ModeHeader {
    /// WP bit of the direct-access device-specific parameter.
    pub const WP: u8 = 0x80;
    /// DPOFUA bit of the direct-access device-specific parameter.
    pub const DPOFUA: u8 = 0x10;

    /// The medium is write protected.
    pub fn wp(&self) -> bool {
        self.device_specific_parameter & ModeHeader::WP != 0
    }

    /// DPO and FUA bits are supported.
    pub fn dpofua(&self) -> bool {
        self.device_specific_parameter & ModeHeader::DPOFUA != 0
    }
}

/// A direct-access block descriptor (SBC-4 §6.5.2). Encoded short (8 bytes:
/// 32-bit block count, 24-bit block length, saturating) unless the header
/// says LONGLBA (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BlockDescriptor {
    /// NUMBER OF LOGICAL BLOCKS.
    pub number_of_blocks: u64,
    /// LOGICAL BLOCK LENGTH.
    pub block_length: u32,
}

/// The Caching mode page, 0x08, 20 bytes (SBC-4 §6.5.5, table 220).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CachingPage {
    /// PS: parameters saveable (MODE SENSE only).
    pub ps: bool,
    /// IC: initiator control.
    pub ic: bool,
    /// ABPF: abort pre-fetch.
    pub abpf: bool,
    /// CAP: caching analysis permitted.
    pub cap: bool,
    /// DISC: discontinuity.
    pub disc: bool,
    /// SIZE: size enable.
    pub size: bool,
    /// WCE: write cache enable.
    pub wce: bool,
    /// MF: multiplication factor.
    pub mf: bool,
    /// RCD: read cache disable.
    pub rcd: bool,
    /// DEMAND READ RETENTION PRIORITY (4 bits).
    pub demand_read_retention_priority: u8,
    /// WRITE RETENTION PRIORITY (4 bits).
    pub write_retention_priority: u8,
    /// DISABLE PRE-FETCH TRANSFER LENGTH.
    pub disable_prefetch_transfer_length: u16,
    /// MINIMUM PRE-FETCH.
    pub minimum_prefetch: u16,
    /// MAXIMUM PRE-FETCH.
    pub maximum_prefetch: u16,
    /// MAXIMUM PRE-FETCH CEILING.
    pub maximum_prefetch_ceiling: u16,
    /// FSW: force sequential write.
    pub fsw: bool,
    /// LBCSS: logical block cache segment size.
    pub lbcss: bool,
    /// DRA: disable read-ahead.
    pub dra: bool,
    /// Vendor specific bits 4..3 of byte 12.
    pub vendor_specific: u8,
    /// SYNC_PROG (2 bits).
    pub sync_prog: u8,
    /// NV_DIS: non-volatile cache disabled.
    pub nv_dis: bool,
    /// NUMBER OF CACHE SEGMENTS.
    pub number_of_cache_segments: u8,
    /// CACHE SEGMENT SIZE.
    pub cache_segment_size: u16,
}

/// The Control mode page, 0x0A, 12 bytes (SPC-4 §7.5.8, table 458).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ControlPage {
    /// PS.
    pub ps: bool,
    /// TST (3 bits): task set type.
    pub tst: u8,
    /// TMF_ONLY.
    pub tmf_only: bool,
    /// DPICZ.
    pub dpicz: bool,
    /// D_SENSE: return descriptor-format sense data.
    pub d_sense: bool,
    /// GLTSD: global logging target save disable.
    pub gltsd: bool,
    /// RLEC: report log exception condition.
    pub rlec: bool,
    /// QUEUE ALGORITHM MODIFIER (4 bits).
    pub queue_algorithm_modifier: u8,
    /// NUAR: no unit attention on release.
    pub nuar: bool,
    /// QERR (2 bits): queue error management.
    pub qerr: u8,
    /// VS: vendor specific bit 7 of byte 4.
    pub vs: bool,
    /// RAC: report a check.
    pub rac: bool,
    /// UA_INTLCK_CTRL (2 bits).
    pub ua_intlck_ctrl: u8,
    /// SWP: software write protect.
    pub swp: bool,
    /// ATO: application tag owner.
    pub ato: bool,
    /// TAS: task aborted status.
    pub tas: bool,
    /// ATMPE: application tag mode page enabled.
    pub atmpe: bool,
    /// RWWP: reject write without protection.
    pub rwwp: bool,
    /// SBLP: supported block lengths and protection (SPC-5).
    pub sblp: bool,
    /// AUTOLOAD MODE (3 bits).
    pub autoload_mode: u8,
    /// BUSY TIMEOUT PERIOD (100 ms units).
    pub busy_timeout_period: u16,
    /// EXTENDED SELF-TEST COMPLETION TIME (seconds).
    pub extended_self_test_completion_time: u16,
}

/// The Informational Exceptions Control mode page, 0x1C, 12 bytes (SPC-4
/// §7.5.14, table 477).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InformationalExceptionsPage {
    /// PS.
    pub ps: bool,
    /// PERF: performance.
    pub perf: bool,
    /// EBF: enable background function.
    pub ebf: bool,
    /// EWASC: enable warning.
    pub ewasc: bool,
    /// DEXCPT: disable exception control.
    pub dexcpt: bool,
    /// TEST.
    pub test: bool,
    /// EBACKERR: enable background error reporting.
    pub ebackerr: bool,
    /// LOGERR: log errors.
    pub logerr: bool,
    /// MRIE (4 bits): method of reporting informational exceptions.
    pub mrie: u8,
    /// INTERVAL TIMER (100 ms units).
    pub interval_timer: u32,
    /// REPORT COUNT.
    pub report_count: u32,
}

/// A mode page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModePage {
    /// 0x08.
    Caching(CachingPage),
    /// 0x0A.
    Control(ControlPage),
    /// 0x1C.
    InformationalExceptions(InformationalExceptionsPage),
    /// Anything else, kept raw.
    Other {
        /// PS.
        ps: bool,
        /// PAGE CODE (6 bits).
        page_code: u8,
        /// SUBPAGE CODE, for sub_page format (SPF=1) pages.
        subpage_code: Option<u8>,
        /// The bytes after the page header (2 or 4 bytes).
        data: Vec<u8>,
    },
}

impl ModePage {
    /// PAGE CODE.
    pub fn page_code(&self) -> u8 {
        match self {
            ModePage::Caching(_) => page_code::CACHING,
            ModePage::Control(_) => page_code::CONTROL,
            ModePage::InformationalExceptions(_) => page_code::INFORMATIONAL_EXCEPTIONS,
            ModePage::Other { page_code, .. } => *page_code,
        }
    }

    /// SUBPAGE CODE (`None` for page_0 format pages).
    pub fn subpage_code(&self) -> Option<u8> {
        match self {
            ModePage::Other { subpage_code, .. } => *subpage_code,
            _ => None,
        }
    }

    /// PS.
    pub fn ps(&self) -> bool {
        match self {
            ModePage::Caching(p) => p.ps,
            ModePage::Control(p) => p.ps,
            ModePage::InformationalExceptions(p) => p.ps,
            ModePage::Other { ps, .. } => *ps,
        }
    }

    /// Encodes the page with its header.
    pub fn encode(&self) -> Vec<u8> {
        let ps = flag(self.ps(), 0x80);
        match self {
            ModePage::Caching(p) => {
                let mut b = vec![ps | page_code::CACHING, 0x12];
                b.push(
                    flag(p.ic, 0x80)
                        | flag(p.abpf, 0x40)
                        | flag(p.cap, 0x20)
                        | flag(p.disc, 0x10)
                        | flag(p.size, 0x08)
                        | flag(p.wce, 0x04)
                        | flag(p.mf, 0x02)
                        | flag(p.rcd, 0x01),
                );
                b.push(
                    (p.demand_read_retention_priority & 0x0f) << 4
                        | (p.write_retention_priority & 0x0f),
                );
                for v in [
                    p.disable_prefetch_transfer_length,
                    p.minimum_prefetch,
                    p.maximum_prefetch,
                    p.maximum_prefetch_ceiling,
                ] {
                    b.extend_from_slice(&v.to_be_bytes());
                }
                b.push(
                    flag(p.fsw, 0x80)
                        | flag(p.lbcss, 0x40)
                        | flag(p.dra, 0x20)
                        | (p.vendor_specific & 0x03) << 3
                        | (p.sync_prog & 0x03) << 1
                        | flag(p.nv_dis, 0x01),
                );
                b.push(p.number_of_cache_segments);
                b.extend_from_slice(&p.cache_segment_size.to_be_bytes());
                b.extend_from_slice(&[0; 4]);
                b
            }
            ModePage::Control(p) => {
                let mut b = vec![ps | page_code::CONTROL, 0x0a];
                b.push(
                    (p.tst & 0x07) << 5
                        | flag(p.tmf_only, 0x10)
                        | flag(p.dpicz, 0x08)
                        | flag(p.d_sense, 0x04)
                        | flag(p.gltsd, 0x02)
                        | flag(p.rlec, 0x01),
                );
                b.push(
                    (p.queue_algorithm_modifier & 0x0f) << 4
                        | flag(p.nuar, 0x08)
                        | (p.qerr & 0x03) << 1,
                );
                b.push(
                    flag(p.vs, 0x80)
                        | flag(p.rac, 0x40)
                        | (p.ua_intlck_ctrl & 0x03) << 4
                        | flag(p.swp, 0x08),
                );
                b.push(
                    flag(p.ato, 0x80)
                        | flag(p.tas, 0x40)
                        | flag(p.atmpe, 0x20)
                        | flag(p.rwwp, 0x10)
                        | flag(p.sblp, 0x08)
                        | (p.autoload_mode & 0x07),
                );
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&p.busy_timeout_period.to_be_bytes());
                b.extend_from_slice(&p.extended_self_test_completion_time.to_be_bytes());
                b
            }
            ModePage::InformationalExceptions(p) => {
                let mut b = vec![ps | page_code::INFORMATIONAL_EXCEPTIONS, 0x0a];
                b.push(
                    flag(p.perf, 0x80)
                        | flag(p.ebf, 0x20)
                        | flag(p.ewasc, 0x10)
                        | flag(p.dexcpt, 0x08)
                        | flag(p.test, 0x04)
                        | flag(p.ebackerr, 0x02)
                        | flag(p.logerr, 0x01),
                );
                b.push(p.mrie & 0x0f);
                b.extend_from_slice(&p.interval_timer.to_be_bytes());
                b.extend_from_slice(&p.report_count.to_be_bytes());
                b
            }
            ModePage::Other {
                page_code,
                subpage_code,
                data,
                ..
            } => {
                let code = page_code & 0x3f;
                match subpage_code {
                    Some(sub) => {
                        let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
                        let mut b = vec![ps | 0x40 | code, *sub];
                        b.extend_from_slice(&len.to_be_bytes());
                        b.extend_from_slice(data.get(..usize::from(len)).unwrap_or_default());
                        b
                    }
                    None => {
                        let len = u8::try_from(data.len()).unwrap_or(u8::MAX);
                        let mut b = vec![ps | code, len];
                        b.extend_from_slice(data.get(..usize::from(len)).unwrap_or_default());
                        b
                    }
                }
            }
        }
    }

    /// Decodes the page at the start of `b`, returning it and its encoded
    /// length. `offset` locates `b` in the parameter list for errors; a page
    /// that runs past the end of `b` is a [`DataError::ListLength`].
    pub fn parse(b: &[u8], offset: usize) -> Result<(ModePage, usize), DataError> {
        const WHAT: &str = "mode page";
        let truncated = DataError::ListLength {
            what: WHAT,
            len: offset + b.len(),
        };
        need(b, 2, WHAT).map_err(|_| truncated.clone())?;
        let ps = bit(b, 0, 0x80);
        let spf = bit(b, 0, 0x40);
        let code = u8_at(b, 0) & 0x3f;
        if spf {
            need(b, 4, WHAT).map_err(|_| truncated.clone())?;
            let total = 4 + usize::from(be16(b, 2));
            let data = b.get(4..total).ok_or(truncated)?;
            return Ok((
                ModePage::Other {
                    ps,
                    page_code: code,
                    subpage_code: Some(u8_at(b, 1)),
                    data: data.to_vec(),
                },
                total,
            ));
        }
        let len = usize::from(u8_at(b, 1));
        let total = 2 + len;
        let d = b.get(..total).ok_or(truncated)?;
        let page = match (code, len) {
            (page_code::CACHING, 0x12) => ModePage::Caching(CachingPage {
                ps,
                ic: bit(d, 2, 0x80),
                abpf: bit(d, 2, 0x40),
                cap: bit(d, 2, 0x20),
                disc: bit(d, 2, 0x10),
                size: bit(d, 2, 0x08),
                wce: bit(d, 2, 0x04),
                mf: bit(d, 2, 0x02),
                rcd: bit(d, 2, 0x01),
                demand_read_retention_priority: u8_at(d, 3) >> 4,
                write_retention_priority: u8_at(d, 3) & 0x0f,
                disable_prefetch_transfer_length: be16(d, 4),
                minimum_prefetch: be16(d, 6),
                maximum_prefetch: be16(d, 8),
                maximum_prefetch_ceiling: be16(d, 10),
                fsw: bit(d, 12, 0x80),
                lbcss: bit(d, 12, 0x40),
                dra: bit(d, 12, 0x20),
                vendor_specific: (u8_at(d, 12) >> 3) & 0x03,
                sync_prog: (u8_at(d, 12) >> 1) & 0x03,
                nv_dis: bit(d, 12, 0x01),
                number_of_cache_segments: u8_at(d, 13),
                cache_segment_size: be16(d, 14),
            }),
            (page_code::CONTROL, 0x0a) => ModePage::Control(ControlPage {
                ps,
                tst: u8_at(d, 2) >> 5,
                tmf_only: bit(d, 2, 0x10),
                dpicz: bit(d, 2, 0x08),
                d_sense: bit(d, 2, 0x04),
                gltsd: bit(d, 2, 0x02),
                rlec: bit(d, 2, 0x01),
                queue_algorithm_modifier: u8_at(d, 3) >> 4,
                nuar: bit(d, 3, 0x08),
                qerr: (u8_at(d, 3) >> 1) & 0x03,
                vs: bit(d, 4, 0x80),
                rac: bit(d, 4, 0x40),
                ua_intlck_ctrl: (u8_at(d, 4) >> 4) & 0x03,
                swp: bit(d, 4, 0x08),
                ato: bit(d, 5, 0x80),
                tas: bit(d, 5, 0x40),
                atmpe: bit(d, 5, 0x20),
                rwwp: bit(d, 5, 0x10),
                sblp: bit(d, 5, 0x08),
                autoload_mode: u8_at(d, 5) & 0x07,
                busy_timeout_period: be16(d, 8),
                extended_self_test_completion_time: be16(d, 10),
            }),
            (page_code::INFORMATIONAL_EXCEPTIONS, 0x0a) => {
                ModePage::InformationalExceptions(InformationalExceptionsPage {
                    ps,
                    perf: bit(d, 2, 0x80),
                    ebf: bit(d, 2, 0x20),
                    ewasc: bit(d, 2, 0x10),
                    dexcpt: bit(d, 2, 0x08),
                    test: bit(d, 2, 0x04),
                    ebackerr: bit(d, 2, 0x02),
                    logerr: bit(d, 2, 0x01),
                    mrie: u8_at(d, 3) & 0x0f,
                    interval_timer: be32(d, 4),
                    report_count: be32(d, 8),
                })
            }
            _ => ModePage::Other {
                ps,
                page_code: code,
                subpage_code: None,
                data: d.get(2..).unwrap_or_default().to_vec(),
            },
        };
        Ok((page, total))
    }
}

/// For MODE SELECT: the first bit where `new` differs from `current` in a
/// position `changeable` does not allow, as (byte offset within the page,
/// bit). The page header (bytes 0..2, or 0..4 in sub_page format) is
/// skipped — PS is reserved in MODE SELECT and the lengths are checked by
/// comparing page lengths. A different encoded length is reported at the
/// PAGE LENGTH byte. `None`: the change is allowed.
pub fn first_unchangeable_difference(
    current: &ModePage,
    new: &ModePage,
    changeable: &ModePage,
) -> Option<(usize, u8)> {
    let (cur, new, mask) = (current.encode(), new.encode(), changeable.encode());
    let header = if current.subpage_code().is_some() {
        4
    } else {
        2
    };
    if cur.len() != new.len() {
        return Some((header - 1, 7));
    }
    cur.iter()
        .zip(&new)
        .enumerate()
        .skip(header)
        .find_map(|(i, (c, n))| {
            let m = mask.get(i).copied().unwrap_or(0);
            let bad = (c ^ n) & !m;
            (bad != 0).then(|| (i, 7 - bad.leading_zeros() as u8))
        })
}

/// Mode parameter data: header, block descriptors and pages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ModeParameters {
    /// The header.
    pub header: ModeHeader,
    /// Block descriptors (0 or 1 for SBC devices).
    pub block_descriptors: Vec<BlockDescriptor>,
    /// Mode pages, in order.
    pub pages: Vec<ModePage>,
}

impl ModeParameters {
    fn encode_descriptors(&self, long: bool) -> Vec<u8> {
        let mut b = Vec::new();
        for d in &self.block_descriptors {
            if long {
                b.extend_from_slice(&d.number_of_blocks.to_be_bytes());
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(&d.block_length.to_be_bytes());
            } else {
                let n = u32::try_from(d.number_of_blocks).unwrap_or(u32::MAX);
                b.extend_from_slice(&n.to_be_bytes());
                b.push(0);
                b.extend_from_slice(&d.block_length.min(0xff_ffff).to_be_bytes()[1..]);
            }
        }
        b
    }

    fn encode_pages(&self) -> Vec<u8> {
        self.pages.iter().flat_map(ModePage::encode).collect()
    }

    /// Encodes for MODE SENSE(6) / MODE SELECT(6): 4-byte header, short
    /// block descriptors (LONGLBA is ignored). MODE DATA LENGTH saturates at
    /// 255.
    pub fn encode_6(&self) -> Vec<u8> {
        let bd = self.encode_descriptors(false);
        let pages = self.encode_pages();
        let total = 4 + bd.len() + pages.len();
        let mut b = Vec::with_capacity(total);
        b.push(u8::try_from(total - 1).unwrap_or(u8::MAX));
        b.push(self.header.medium_type);
        b.push(self.header.device_specific_parameter);
        b.push(u8::try_from(bd.len()).unwrap_or(u8::MAX));
        b.extend_from_slice(&bd);
        b.extend_from_slice(&pages);
        b
    }

    /// Encodes for MODE SENSE(10) / MODE SELECT(10): 8-byte header, long
    /// block descriptors when `header.longlba`.
    pub fn encode_10(&self) -> Vec<u8> {
        let bd = self.encode_descriptors(self.header.longlba);
        let pages = self.encode_pages();
        let total = 8 + bd.len() + pages.len();
        let mut b = Vec::with_capacity(total);
        b.extend_from_slice(&u16::try_from(total - 2).unwrap_or(u16::MAX).to_be_bytes());
        b.push(self.header.medium_type);
        b.push(self.header.device_specific_parameter);
        b.push(flag(self.header.longlba, 0x01));
        b.push(0);
        b.extend_from_slice(&u16::try_from(bd.len()).unwrap_or(u16::MAX).to_be_bytes());
        b.extend_from_slice(&bd);
        b.extend_from_slice(&pages);
        b
    }

    /// Decodes 6-byte-command mode parameters. Pass exactly the payload (the
    /// MODE SELECT parameter list, or MODE SENSE data no longer than
    /// [`ModeParameters::announced_len_6`]); MODE DATA LENGTH itself is not
    /// used, as it is reserved in MODE SELECT.
    pub fn parse_6(b: &[u8]) -> Result<ModeParameters, DataError> {
        need(b, 4, "mode parameter header(6)").map_err(|_| list_length(b))?;
        let header = ModeHeader {
            medium_type: u8_at(b, 1),
            device_specific_parameter: u8_at(b, 2),
            longlba: false,
        };
        ModeParameters::parse_rest(b, header, 4, usize::from(u8_at(b, 3)), 3)
    }

    /// Decodes 10-byte-command mode parameters (see [`ModeParameters::parse_6`]).
    pub fn parse_10(b: &[u8]) -> Result<ModeParameters, DataError> {
        need(b, 8, "mode parameter header(10)").map_err(|_| list_length(b))?;
        let header = ModeHeader {
            medium_type: u8_at(b, 2),
            device_specific_parameter: u8_at(b, 3),
            longlba: bit(b, 4, 0x01),
        };
        ModeParameters::parse_rest(b, header, 8, usize::from(be16(b, 6)), 6)
    }

    fn parse_rest(
        b: &[u8],
        header: ModeHeader,
        header_len: usize,
        bd_len: usize,
        bd_len_at: usize,
    ) -> Result<ModeParameters, DataError> {
        let unit = if header.longlba { 16 } else { 8 };
        if bd_len % unit != 0 {
            return Err(DataError::InvalidField {
                what: "BLOCK DESCRIPTOR LENGTH",
                byte: bd_len_at,
                bit: None,
            });
        }
        let bd = b
            .get(header_len..header_len + bd_len)
            .ok_or_else(|| list_length(b))?;
        let block_descriptors = bd
            .chunks_exact(unit)
            .map(|d| {
                if header.longlba {
                    BlockDescriptor {
                        number_of_blocks: be64(d, 0),
                        block_length: be32(d, 12),
                    }
                } else {
                    BlockDescriptor {
                        number_of_blocks: u64::from(be32(d, 0)),
                        block_length: be24(d, 5),
                    }
                }
            })
            .collect();
        let mut pages = Vec::new();
        let mut at = header_len + bd_len;
        while at < b.len() {
            let (page, used) = ModePage::parse(b.get(at..).unwrap_or_default(), at)?;
            pages.push(page);
            at += used;
        }
        Ok(ModeParameters {
            header,
            block_descriptors,
            pages,
        })
    }

    /// The total length MODE SENSE(6) data announces (MODE DATA LENGTH + 1).
    pub fn announced_len_6(b: &[u8]) -> Option<usize> {
        b.first().map(|&n| usize::from(n) + 1)
    }

    /// The total length MODE SENSE(10) data announces (MODE DATA LENGTH + 2).
    pub fn announced_len_10(b: &[u8]) -> Option<usize> {
        (b.len() >= 2).then(|| usize::from(be16(b, 0)) + 2)
    }
}

fn list_length(b: &[u8]) -> DataError {
    DataError::ListLength {
        what: "mode parameter list",
        len: b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::Asc;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    fn caching(wce: bool) -> ModePage {
        ModePage::Caching(CachingPage {
            wce,
            ..CachingPage::default()
        })
    }

    #[test]
    fn caching_and_control_page_bytes() {
        let b = caching(true).encode();
        assert_eq!(b.len(), 20);
        assert_eq!(&b[..4], &[0x08, 0x12, 0x04, 0x00]);
        let ctl = ModePage::Control(ControlPage {
            ps: true,
            d_sense: true,
            qerr: 1,
            tas: true,
            busy_timeout_period: 0xffff,
            ..ControlPage::default()
        });
        let b = ctl.encode();
        assert_eq!(
            b,
            vec![0x8a, 0x0a, 0x04, 0x02, 0x00, 0x40, 0, 0, 0xff, 0xff, 0, 0]
        );
        assert_eq!(ModePage::parse(&b, 0), Ok((ctl, 12)));
        let ie = ModePage::InformationalExceptions(InformationalExceptionsPage {
            dexcpt: true,
            mrie: 6,
            ..InformationalExceptionsPage::default()
        });
        assert_eq!(
            ie.encode(),
            vec![0x1c, 0x0a, 0x08, 0x06, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn mode_sense6_with_block_descriptor_bytes() {
        let m = ModeParameters {
            header: ModeHeader {
                medium_type: 0,
                device_specific_parameter: ModeHeader::DPOFUA,
                longlba: false,
            },
            block_descriptors: vec![BlockDescriptor {
                number_of_blocks: 0x1_0000_0000,
                block_length: 512,
            }],
            pages: vec![caching(true)],
        };
        let b = m.encode_6();
        assert_eq!(
            &b[..12],
            &[31, 0, 0x10, 8, 0xff, 0xff, 0xff, 0xff, 0, 0, 2, 0]
        );
        assert_eq!(ModeParameters::announced_len_6(&b), Some(b.len()));
        // The block count saturated: the parse sees 0xffffffff.
        let parsed = ModeParameters::parse_6(&b);
        assert_eq!(
            parsed.map(|p| p.block_descriptors),
            Ok(vec![BlockDescriptor {
                number_of_blocks: 0xffff_ffff,
                block_length: 512
            }])
        );
    }

    #[test]
    fn mode_sense10_long_lba() {
        let m = ModeParameters {
            header: ModeHeader {
                longlba: true,
                ..ModeHeader::default()
            },
            block_descriptors: vec![BlockDescriptor {
                number_of_blocks: 0x1_0000_0000,
                block_length: 4096,
            }],
            pages: vec![],
        };
        let b = m.encode_10();
        assert_eq!(&b[..8], &[0, 22, 0, 0, 0x01, 0, 0, 16]);
        assert_eq!(
            &b[8..24],
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]
        );
        assert_eq!(ModeParameters::parse_10(&b), Ok(m));
    }

    #[test]
    fn mode_select_errors() {
        // Truncated page: PARAMETER LIST LENGTH ERROR.
        let m = ModeParameters {
            pages: vec![caching(false)],
            ..ModeParameters::default()
        };
        let b = m.encode_6();
        let e = ModeParameters::parse_6(&b[..b.len() - 1]).map_err(|e| e.sense().asc);
        assert_eq!(e, Err(Asc::PARAMETER_LIST_LENGTH_ERROR));
        // Block descriptor length not a multiple of 8: invalid field at byte 3.
        let mut b = b.clone();
        b[3] = 4;
        assert_eq!(
            ModeParameters::parse_6(&b),
            Err(DataError::InvalidField {
                what: "BLOCK DESCRIPTOR LENGTH",
                byte: 3,
                bit: None
            })
        );
        // A caching page with a wrong length stays raw.
        let raw = [0x08, 0x02, 0x04, 0x00];
        assert_eq!(
            ModePage::parse(&raw, 0),
            Ok((
                ModePage::Other {
                    ps: false,
                    page_code: 8,
                    subpage_code: None,
                    data: vec![4, 0]
                },
                4
            ))
        );
    }

    #[test]
    fn unchangeable_difference() {
        let current = caching(false);
        let changeable = caching(true); // only WCE may change
        assert_eq!(
            first_unchangeable_difference(&current, &caching(true), &changeable),
            None
        );
        let rcd = ModePage::Caching(CachingPage {
            rcd: true,
            ..CachingPage::default()
        });
        assert_eq!(
            first_unchangeable_difference(&current, &rcd, &changeable),
            Some((2, 0))
        );
        let short = ModePage::Other {
            ps: false,
            page_code: 8,
            subpage_code: None,
            data: vec![0; 4],
        };
        assert_eq!(
            first_unchangeable_difference(&current, &short, &changeable),
            Some((1, 7))
        );
    }

    fn page_strategy() -> impl Strategy<Value = ModePage> {
        prop_oneof![
            (any::<[bool; 13]>(), any::<[u8; 5]>(), any::<[u16; 5]>()).prop_map(|(f, u, w)| {
                ModePage::Caching(CachingPage {
                    ps: f[0],
                    ic: f[1],
                    abpf: f[2],
                    cap: f[3],
                    disc: f[4],
                    size: f[5],
                    wce: f[6],
                    mf: f[7],
                    rcd: f[8],
                    demand_read_retention_priority: u[0] & 0xf,
                    write_retention_priority: u[1] & 0xf,
                    disable_prefetch_transfer_length: w[0],
                    minimum_prefetch: w[1],
                    maximum_prefetch: w[2],
                    maximum_prefetch_ceiling: w[3],
                    fsw: f[9],
                    lbcss: f[10],
                    dra: f[11],
                    vendor_specific: u[2] & 3,
                    sync_prog: u[3] & 3,
                    nv_dis: f[12],
                    number_of_cache_segments: u[4],
                    cache_segment_size: w[4],
                })
            }),
            (any::<[bool; 15]>(), any::<[u8; 5]>(), any::<[u16; 2]>()).prop_map(|(f, u, w)| {
                ModePage::Control(ControlPage {
                    ps: f[0],
                    tst: u[0] & 7,
                    tmf_only: f[1],
                    dpicz: f[2],
                    d_sense: f[3],
                    gltsd: f[4],
                    rlec: f[5],
                    queue_algorithm_modifier: u[1] & 0xf,
                    nuar: f[6],
                    qerr: u[2] & 3,
                    vs: f[7],
                    rac: f[8],
                    ua_intlck_ctrl: u[3] & 3,
                    swp: f[9],
                    ato: f[10],
                    tas: f[11],
                    atmpe: f[12],
                    rwwp: f[13],
                    sblp: f[14],
                    autoload_mode: u[4] & 7,
                    busy_timeout_period: w[0],
                    extended_self_test_completion_time: w[1],
                })
            }),
            (any::<[bool; 8]>(), 0u8..16, any::<u32>(), any::<u32>()).prop_map(
                |(f, mrie, i, r)| {
                    ModePage::InformationalExceptions(InformationalExceptionsPage {
                        ps: f[0],
                        perf: f[1],
                        ebf: f[2],
                        ewasc: f[3],
                        dexcpt: f[4],
                        test: f[5],
                        ebackerr: f[6],
                        logerr: f[7],
                        mrie,
                        interval_timer: i,
                        report_count: r,
                    })
                }
            ),
            (
                any::<bool>(),
                0u8..0x40,
                proptest::option::of(any::<u8>()),
                proptest::collection::vec(any::<u8>(), 0..40)
            )
                .prop_filter("would decode as a typed page", |(_, code, sub, data)| {
                    sub.is_some()
                        || !matches!(
                            (*code, data.len()),
                            (0x08, 0x12) | (0x0a, 0x0a) | (0x1c, 0x0a)
                        )
                })
                .prop_map(|(ps, page_code, subpage_code, data)| ModePage::Other {
                    ps,
                    page_code,
                    subpage_code,
                    data
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_10(
            medium_type in any::<u8>(), dsp in any::<u8>(), longlba in any::<bool>(),
            bds in proptest::collection::vec(any::<(u64, u32)>(), 0..3),
            pages in proptest::collection::vec(page_strategy(), 0..5),
        ) {
            let m = ModeParameters {
                header: ModeHeader { medium_type, device_specific_parameter: dsp, longlba },
                block_descriptors: bds.into_iter().map(|(n, l)| if longlba {
                    BlockDescriptor { number_of_blocks: n, block_length: l }
                } else {
                    BlockDescriptor { number_of_blocks: n & 0xffff_ffff, block_length: l & 0xff_ffff }
                }).collect(),
                pages,
            };
            prop_assert_eq!(ModeParameters::parse_10(&m.encode_10()), Ok(m.clone()));
            let six = ModeParameters { header: ModeHeader { longlba: false, ..m.header }, ..m };
            if !six.header.longlba && six.encode_6().len() <= 256 {
                let short = ModeParameters {
                    block_descriptors: six.block_descriptors.iter().map(|d| BlockDescriptor {
                        number_of_blocks: d.number_of_blocks.min(0xffff_ffff),
                        block_length: d.block_length.min(0xff_ffff),
                    }).collect(),
                    ..six.clone()
                };
                prop_assert_eq!(ModeParameters::parse_6(&six.encode_6()), Ok(short));
            }
        }

        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ModeParameters::parse_6(&b);
            let _ = ModeParameters::parse_10(&b);
            let _ = ModePage::parse(&b, 0);
        }
    }
}
