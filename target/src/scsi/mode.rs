//! MODE SENSE(6)/(10), MODE SELECT(6)/(10) and the mode page values of a
//! logical unit (SPC-4 §6.11–§6.14, §7.5; SBC-4 §6.5).
//!
//! Pages: Caching 08h, Control 0Ah, Informational Exceptions Control 1Ch;
//! page code 3Fh returns all of them in ascending order. None has
//! subpages: SUBPAGE CODE 00h or FFh (all subpages) is accepted with any
//! page code we have, other subpage codes are INVALID FIELD IN CDB (byte 3);
//! an unknown page code is INVALID FIELD IN CDB (byte 2, bit 5).
//!
//! Values (see [`ModeValues::defaults`]):
//! - Caching: WCE reflects the backend (see [`super::lu`]); nothing else is
//!   claimed.
//! - Control: TST 000b (one task set), QUEUE ALGORITHM MODIFIER 1
//!   (unrestricted reordering: commands of different connections run
//!   concurrently), QERR 00b, D_SENSE 0 (fixed-format sense), TAS 0, SWP 0,
//!   UA_INTLCK_CTRL 00b.
//! - Informational Exceptions: DEXCPT=1, MRIE 0 — nothing to report.
//!
//! Page control: current and default values as above; changeable values
//! (see [`ModeValues::changeable`]): WCE when the backend has a write cache
//! to turn off, D_SENSE and SWP. Saved values are not implemented, so PC=11b
//! is ILLEGAL REQUEST / SAVING PARAMETERS NOT SUPPORTED (SPC-4 §6.13.1). PS
//! is 0 in every page.
//!
//! ## MODE SELECT (SPC-4 §6.11, §6.12)
//!
//! The parameter list is validated whole, then applied at once:
//!
//! - SP=1 is INVALID FIELD IN CDB: nothing is saveable. PF=0 with pages is
//!   INVALID FIELD IN CDB: only the page format is understood. A PARAMETER
//!   LIST LENGTH of 0 changes nothing; a list shorter than its header or
//!   than its pages say is PARAMETER LIST LENGTH ERROR.
//! - Header: MEDIUM TYPE must be 0; MODE DATA LENGTH (reserved) and the
//!   DEVICE-SPECIFIC PARAMETER (WP and DPOFUA are reserved for MODE SELECT
//!   in SBC-4 §6.5.1) are ignored, so the header MODE SENSE returned can be
//!   sent back as it is.
//! - At most one block descriptor, which must describe the current medium
//!   (NUMBER OF LOGICAL BLOCKS 0 or the capacity, the current block
//!   length): the capacity and block size cannot be changed.
//! - Pages: those MODE SENSE reports, each with its full length and PS=0.
//!   A field that is not changeable and differs from its current value is
//!   INVALID FIELD IN PARAMETER LIST with a field pointer to it; so is an
//!   unknown page, a subpage, or a wrong PAGE LENGTH.
//!
//! A change establishes MODE PARAMETERS CHANGED for every other I_T nexus
//! (the pages are shared by all of them). WCE=0 makes the unit write
//! through (see [`super::rw`]); D_SENSE switches the sense format; SWP
//! write-protects the medium. A logical unit reset restores the defaults.
//!
//! Header: DEVICE-SPECIFIC PARAMETER with DPOFUA=1 (DPO and FUA are
//! honoured) and WP when the LU is read-only or SWP is set (SBC-4 §6.5.1).
//! Block descriptor: one, with the capacity and block length, unless DBD;
//! MODE SENSE(10) with LLBAA uses the 16-byte form (LONGLBA). The page
//! control field applies to pages only: header and descriptor are current.

use bytes::Bytes;
use iesp_proto::scsi::mode::{
    BlockDescriptor, CachingPage, ControlPage, InformationalExceptionsPage, ModeHeader,
    PageControl, first_unchangeable_difference, page_code,
};
use iesp_proto::scsi::{Asc, CdbSize, ModePage, ModeParameters, Sense, truncate};

use super::lu::{LogicalUnit, Snapshot};
use super::sense::Outcome;

/// The mode page values MODE SENSE reports and MODE SELECT will change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeValues {
    pub caching: CachingPage,
    pub control: ControlPage,
    pub informational_exceptions: InformationalExceptionsPage,
}

impl ModeValues {
    /// The default (and power-on) values; `write_cache` is the backend's.
    pub fn defaults(write_cache: bool) -> ModeValues {
        ModeValues {
            caching: CachingPage {
                wce: write_cache,
                ..CachingPage::default()
            },
            control: ControlPage {
                queue_algorithm_modifier: 1,
                ..ControlPage::default()
            },
            informational_exceptions: InformationalExceptionsPage {
                dexcpt: true,
                ..Default::default()
            },
        }
    }

    /// The changeable-values mask: a 1 bit may be changed by MODE SELECT.
    /// WCE only when the backend has a cache (`write_cache`) to bypass.
    pub fn changeable(write_cache: bool) -> ModeValues {
        ModeValues {
            caching: CachingPage {
                wce: write_cache,
                ..CachingPage::default()
            },
            control: ControlPage {
                d_sense: true,
                swp: true,
                ..ControlPage::default()
            },
            informational_exceptions: InformationalExceptionsPage::default(),
        }
    }

    /// The pages, ascending by page code.
    pub fn pages(&self) -> [ModePage; 3] {
        [
            ModePage::Caching(self.caching),
            ModePage::Control(self.control),
            ModePage::InformationalExceptions(self.informational_exceptions),
        ]
    }
}

/// The MODE SENSE CDB fields.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub size: CdbSize,
    pub dbd: bool,
    pub llbaa: bool,
    pub pc: u8,
    pub page_code: u8,
    pub subpage_code: u8,
    pub allocation_length: u16,
}

/// MODE SENSE on `lu` whose current values are `current`.
pub fn mode_sense(
    lu: &LogicalUnit,
    current: &ModeValues,
    req: &Request,
    snap: Snapshot,
) -> Outcome {
    let values = match PageControl(req.pc) {
        PageControl::CURRENT => current.clone(),
        PageControl::CHANGEABLE => ModeValues::changeable(lu.write_cache()),
        PageControl::DEFAULT => ModeValues::defaults(lu.write_cache()),
        _ => return Err(Sense::illegal_request(Asc::SAVING_PARAMETERS_NOT_SUPPORTED)),
    };
    let all = values.pages();
    let pages: Vec<ModePage> = match (req.page_code, req.subpage_code) {
        (page_code::ALL_PAGES, 0x00 | page_code::ALL_SUBPAGES) => all.to_vec(),
        (code, sub) => {
            let Some(page) = all.iter().find(|p| p.page_code() == code) else {
                return Err(Sense::invalid_field_in_cdb(2, Some(5)));
            };
            if sub != 0x00 && sub != page_code::ALL_SUBPAGES {
                return Err(Sense::invalid_field_in_cdb(3, Some(7)));
            }
            vec![page.clone()]
        }
    };
    let wp = lu.read_only() || snap.software_write_protect;
    let ten = req.size != CdbSize::Six;
    let params = ModeParameters {
        header: ModeHeader {
            medium_type: 0,
            device_specific_parameter: (if wp { ModeHeader::WP } else { 0 }) | ModeHeader::DPOFUA,
            longlba: ten && req.llbaa,
        },
        block_descriptors: if req.dbd {
            Vec::new()
        } else {
            vec![BlockDescriptor {
                number_of_blocks: lu.blocks(),
                block_length: lu.block_size(),
            }]
        },
        pages,
    };
    let data = if ten {
        params.encode_10()
    } else {
        params.encode_6()
    };
    Ok(Bytes::from(truncate(
        data,
        u32::from(req.allocation_length),
    )))
}

/// The MODE SELECT CDB fields.
#[derive(Clone, Copy, Debug)]
pub struct Select {
    pub size: CdbSize,
    pub pf: bool,
    pub sp: bool,
    pub parameter_list_length: u16,
}

/// MODE SELECT on `lu` whose current values are `current`: the new values
/// if they differ (see the module docs).
pub fn mode_select(
    lu: &LogicalUnit,
    current: &ModeValues,
    req: &Select,
    data_out: &[u8],
) -> Result<Option<ModeValues>, Sense> {
    if req.sp {
        return Err(Sense::invalid_field_in_cdb(1, Some(0)));
    }
    let pll = usize::from(req.parameter_list_length);
    if pll == 0 {
        return Ok(None);
    }
    let Some(list) = data_out.get(..pll) else {
        return Err(Sense::parameter_list_length_error());
    };
    let ten = req.size != CdbSize::Six;
    let params = if ten {
        ModeParameters::parse_10(list)
    } else {
        ModeParameters::parse_6(list)
    }
    .map_err(|e| e.sense())?;
    let bad = |at: usize, bit: Option<u8>| {
        Err(Sense::invalid_field_in_parameter_list(
            u16::try_from(at).unwrap_or(u16::MAX),
            bit,
        ))
    };
    let header_len = if ten { 8 } else { 4 };
    if params.header.medium_type != 0 {
        return bad(if ten { 2 } else { 1 }, None);
    }
    if params.block_descriptors.len() > 1 {
        return bad(if ten { 6 } else { 3 }, None);
    }
    let long = ten && params.header.longlba;
    let unit = if long { 16 } else { 8 };
    for (i, d) in params.block_descriptors.iter().enumerate() {
        let at = header_len + i * unit;
        let capacity = if long {
            lu.blocks()
        } else {
            lu.blocks().min(0xffff_ffff)
        };
        if d.number_of_blocks != 0 && d.number_of_blocks != capacity {
            return bad(at, None);
        }
        if d.block_length != lu.block_size() {
            return bad(at + if long { 12 } else { 5 }, None);
        }
    }
    if !req.pf && !params.pages.is_empty() {
        return Err(Sense::invalid_field_in_cdb(1, Some(4)));
    }
    let mask = ModeValues::changeable(lu.write_cache());
    let mut new = current.clone();
    let mut at = header_len + params.block_descriptors.len() * unit;
    for page in &params.pages {
        if page.ps() {
            return bad(at, Some(7));
        }
        let (cur, allowed) = match page {
            ModePage::Caching(_) => (
                ModePage::Caching(new.caching),
                ModePage::Caching(mask.caching),
            ),
            ModePage::Control(_) => (
                ModePage::Control(new.control),
                ModePage::Control(mask.control),
            ),
            ModePage::InformationalExceptions(_) => (
                ModePage::InformationalExceptions(new.informational_exceptions),
                ModePage::InformationalExceptions(mask.informational_exceptions),
            ),
            ModePage::Other {
                page_code,
                subpage_code,
                ..
            } => {
                let ours = matches!(
                    *page_code,
                    page_code::CACHING | page_code::CONTROL | page_code::INFORMATIONAL_EXCEPTIONS
                );
                // One of ours with the wrong length, or anything else.
                return if ours && subpage_code.is_none() {
                    bad(at + 1, None)
                } else {
                    bad(at, Some(5))
                };
            }
        };
        if let Some((byte, bit)) = first_unchangeable_difference(&cur, page, &allowed) {
            return bad(at + byte, Some(bit));
        }
        match page {
            ModePage::Caching(p) => new.caching = *p,
            ModePage::Control(p) => new.control = *p,
            ModePage::InformationalExceptions(p) => new.informational_exceptions = *p,
            ModePage::Other { .. } => {}
        }
        at += page.encode().len();
    }
    Ok((new != *current).then_some(new))
}

#[cfg(test)]
mod tests {
    use iesp_proto::scsi::{Cdb, SenseKey, SenseKeySpecific};

    use super::*;
    use crate::scsi::testutil::Harness;

    fn sense_cdb(size: CdbSize, pc: u8, page: u8, sub: u8) -> Cdb {
        Cdb::ModeSense {
            size,
            dbd: false,
            llbaa: false,
            pc,
            page_code: page,
            subpage_code: sub,
            allocation_length: 255,
        }
    }

    fn parse(size: CdbSize, data: &[u8]) -> ModeParameters {
        match size {
            CdbSize::Six => ModeParameters::parse_6(data),
            _ => ModeParameters::parse_10(data),
        }
        .expect("mode data parses")
    }

    #[test]
    fn all_pages_round_trip_in_both_sizes() {
        let h = Harness::ram(2048);
        for size in [CdbSize::Six, CdbSize::Ten] {
            let data = h.good(&sense_cdb(size, 0, 0x3f, 0), &[]);
            let p = parse(size, &data);
            assert_eq!(p.header.device_specific_parameter, ModeHeader::DPOFUA);
            assert_eq!(
                p.block_descriptors,
                vec![BlockDescriptor {
                    number_of_blocks: 2048,
                    block_length: 512
                }]
            );
            assert_eq!(p.pages, ModeValues::defaults(false).pages().to_vec());
            let announced = match size {
                CdbSize::Six => ModeParameters::announced_len_6(&data),
                _ => ModeParameters::announced_len_10(&data),
            };
            assert_eq!(announced, Some(data.len()));
        }
    }

    #[test]
    fn single_pages_and_subpages() {
        let h = Harness::ram(64);
        for code in [0x08u8, 0x0a, 0x1c] {
            for sub in [0x00, 0xff] {
                let p = parse(
                    CdbSize::Six,
                    &h.good(&sense_cdb(CdbSize::Six, 0, code, sub), &[]),
                );
                assert_eq!(
                    p.pages.iter().map(ModePage::page_code).collect::<Vec<_>>(),
                    vec![code]
                );
            }
        }
        let s = h.check(&sense_cdb(CdbSize::Six, 0, 0x0a, 0x01), &[]);
        assert_eq!(
            s.sense_key_specific,
            Some(SenseKeySpecific::FieldPointer {
                cd: true,
                bit: Some(7),
                field: 3
            })
        );
        for code in [0x00u8, 0x01, 0x19, 0x3e] {
            let s = h.check(&sense_cdb(CdbSize::Ten, 0, code, 0), &[]);
            assert_eq!(
                s.sense_key_specific,
                Some(SenseKeySpecific::FieldPointer {
                    cd: true,
                    bit: Some(5),
                    field: 2
                })
            );
        }
    }

    #[test]
    fn page_control() {
        let h = Harness::ram(64);
        let changeable = parse(
            CdbSize::Ten,
            &h.good(&sense_cdb(CdbSize::Ten, 1, 0x3f, 0), &[]),
        );
        assert_eq!(
            changeable.pages,
            ModeValues::changeable(false).pages().to_vec()
        );
        // D_SENSE and SWP, and no WCE on a RAM disk (no cache to disable).
        assert!(matches!(
            changeable.pages[..],
            [
                ModePage::Caching(CachingPage { wce: false, .. }),
                ModePage::Control(ControlPage {
                    d_sense: true,
                    swp: true,
                    tst: 0,
                    ..
                }),
                _
            ]
        ));
        // Header and block descriptor are current whatever the PC.
        assert_eq!(changeable.block_descriptors.len(), 1);
        let default = parse(
            CdbSize::Ten,
            &h.good(&sense_cdb(CdbSize::Ten, 2, 0x3f, 0), &[]),
        );
        assert_eq!(default.pages, ModeValues::defaults(false).pages().to_vec());
        let s = h.check(&sense_cdb(CdbSize::Six, 3, 0x08, 0), &[]);
        assert_eq!(
            (s.key, s.asc),
            (
                SenseKey::ILLEGAL_REQUEST,
                Asc::SAVING_PARAMETERS_NOT_SUPPORTED
            )
        );
    }

    #[test]
    fn current_values_follow_the_state() {
        let h = Harness::ram(64);
        h.table
            .iter()
            .for_each(|lu| lu.lock().mode.control.d_sense = true);
        let p = parse(
            CdbSize::Six,
            &h.good(&sense_cdb(CdbSize::Six, 0, 0x0a, 0), &[]),
        );
        assert!(matches!(
            p.pages[..],
            [ModePage::Control(ControlPage { d_sense: true, .. })]
        ));
        // A reset restores the defaults.
        h.table
            .logical_unit_reset(iesp_proto::bhs::Lun::from_index(0));
        h.check(&Cdb::TestUnitReady, &[]);
        let p = parse(
            CdbSize::Six,
            &h.good(&sense_cdb(CdbSize::Six, 0, 0x0a, 0), &[]),
        );
        assert!(matches!(
            p.pages[..],
            [ModePage::Control(ControlPage { d_sense: false, .. })]
        ));
    }

    #[test]
    fn dbd_llbaa_wp_and_allocation_length() {
        let h = Harness::new(64, 4096, true);
        let cdb = Cdb::ModeSense {
            size: CdbSize::Ten,
            dbd: false,
            llbaa: true,
            pc: 0,
            page_code: 0x08,
            subpage_code: 0,
            allocation_length: 1000,
        };
        let data = h.good(&cdb, &[]);
        assert_eq!(data[4] & 0x01, 1, "LONGLBA");
        assert_eq!(
            u16::from_be_bytes([data[6], data[7]]),
            16,
            "long descriptor"
        );
        let p = parse(CdbSize::Ten, &data);
        assert!(p.header.wp() && p.header.dpofua() && p.header.longlba);
        assert_eq!(
            p.block_descriptors,
            vec![BlockDescriptor {
                number_of_blocks: 64,
                block_length: 4096
            }]
        );
        // MODE SENSE(6) ignores LLBAA (it has no such bit) and DBD drops the
        // descriptor.
        let data = h.good(
            &Cdb::ModeSense {
                size: CdbSize::Six,
                dbd: true,
                llbaa: false,
                pc: 0,
                page_code: 0x3f,
                subpage_code: 0,
                allocation_length: 255,
            },
            &[],
        );
        assert_eq!(data[3], 0, "no block descriptors");
        let cut = h.good(
            &Cdb::ModeSense {
                size: CdbSize::Six,
                dbd: true,
                llbaa: false,
                pc: 0,
                page_code: 0x3f,
                subpage_code: 0,
                allocation_length: 4,
            },
            &[],
        );
        assert_eq!(cut[..], data[..4]);
    }

    fn select(size: CdbSize, params: &ModeParameters) -> (Cdb, Vec<u8>) {
        let list = if size == CdbSize::Six {
            params.encode_6()
        } else {
            params.encode_10()
        };
        let cdb = Cdb::ModeSelect {
            size,
            pf: true,
            sp: false,
            parameter_list_length: list.len() as u16,
        };
        (cdb, list)
    }

    fn with_pages(pages: Vec<ModePage>) -> ModeParameters {
        ModeParameters {
            pages,
            ..ModeParameters::default()
        }
    }

    fn current(h: &Harness) -> ModeValues {
        h.table.iter().next().expect("LU").lock().mode.clone()
    }

    #[test]
    fn mode_select_changes_d_sense_and_swp_and_tells_other_nexuses() {
        let h = Harness::ram(64);
        let other = crate::scsi::testutil::nexus(5);
        let lun = iesp_proto::bhs::Lun::from_index(0);
        let tur = Cdb::TestUnitReady.encode();
        let _ = h.table.execute(&other, lun, &tur, &[], 0);
        let mut control = ModeValues::defaults(false).control;
        control.d_sense = true;
        control.swp = true;
        for size in [CdbSize::Six, CdbSize::Ten] {
            let (cdb, list) = select(size, &with_pages(vec![ModePage::Control(control)]));
            h.good(&cdb, &list);
            assert_eq!(current(&h).control, control);
        }
        // Descriptor sense, write protection.
        let c = h.run(&Cdb::write(CdbSize::Ten, 0, 1, false), &[0; 512]);
        let sense = c.sense.expect("CHECK CONDITION");
        assert_eq!(sense[0], 0x72);
        let s = Sense::parse(&sense).expect("parses");
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED)
        );
        let ms = parse(
            CdbSize::Six,
            &h.good(&sense_cdb(CdbSize::Six, 0, 0x0a, 0), &[]),
        );
        assert!(ms.header.wp());
        // The other nexus hears of it once, the issuer not at all.
        let s = crate::scsi::testutil::check_of(&h.table.execute(&other, lun, &tur, &[], 0));
        assert_eq!(s.asc, Asc::MODE_PARAMETERS_CHANGED);
        assert_eq!(h.table.execute(&other, lun, &tur, &[], 0).status, 0);
        h.good(&Cdb::TestUnitReady, &[]);
        // Sending the same values again changes nothing: no new attention.
        let (cdb, list) = select(CdbSize::Ten, &with_pages(vec![ModePage::Control(control)]));
        h.good(&cdb, &list);
        assert_eq!(h.table.execute(&other, lun, &tur, &[], 0).status, 0);
    }

    #[test]
    fn mode_select_wce_only_where_there_is_a_cache() {
        let h = Harness::ram(64);
        let mut caching = ModeValues::defaults(false).caching;
        caching.wce = true;
        let (cdb, list) = select(CdbSize::Six, &with_pages(vec![ModePage::Caching(caching)]));
        let s = h.check(&cdb, &list);
        // WCE is byte 2 bit 2 of the page, which follows the 4-byte header.
        assert_eq!(
            (s.asc, s.sense_key_specific),
            (
                Asc::INVALID_FIELD_IN_PARAMETER_LIST,
                Some(SenseKeySpecific::FieldPointer {
                    cd: false,
                    bit: Some(2),
                    field: 6
                })
            )
        );
        let (p, _) = crate::scsi::rw::tests::probed(1 << 20, 1 << 20, nix::libc::EIO);
        let mut caching = ModeValues::defaults(true).caching;
        caching.wce = false;
        let (cdb, list) = select(CdbSize::Ten, &with_pages(vec![ModePage::Caching(caching)]));
        p.good(&cdb, &list);
        assert!(!current(&p).caching.wce);
        let ch = parse(
            CdbSize::Ten,
            &p.good(&sense_cdb(CdbSize::Ten, 1, 0x08, 0), &[]),
        );
        assert!(matches!(
            ch.pages[..],
            [ModePage::Caching(CachingPage { wce: true, .. })]
        ));
        // A reset restores the default.
        p.table
            .logical_unit_reset(iesp_proto::bhs::Lun::from_index(0));
        p.check(&Cdb::TestUnitReady, &[]);
        assert!(current(&p).caching.wce);
    }

    #[test]
    fn mode_select_rejects_what_cannot_change() {
        let h = Harness::ram(64);
        let before = current(&h);
        let bad_field = |list: &[u8], cdb: &Cdb| h.check(cdb, list).sense_key_specific;
        let ptr = |field: u16, bit: Option<u8>| {
            Some(SenseKeySpecific::FieldPointer {
                cd: false,
                bit,
                field,
            })
        };
        // TST is not changeable (byte 2 bits 7..5 of the control page).
        let mut control = before.control;
        control.tst = 1;
        let (cdb, list) = select(CdbSize::Ten, &with_pages(vec![ModePage::Control(control)]));
        assert_eq!(bad_field(&list, &cdb), ptr(10, Some(5)));
        // A valid page before an invalid one is not applied either.
        let mut good = before.control;
        good.d_sense = true;
        let (cdb, list) = select(
            CdbSize::Ten,
            &with_pages(vec![ModePage::Control(good), ModePage::Control(control)]),
        );
        assert_eq!(bad_field(&list, &cdb), ptr(22, Some(5)));
        assert_eq!(current(&h), before);
        // PS set, an unknown page, a page we have with a wrong length.
        let mut ps = before.control;
        ps.ps = true;
        let (cdb, list) = select(CdbSize::Six, &with_pages(vec![ModePage::Control(ps)]));
        assert_eq!(bad_field(&list, &cdb), ptr(4, Some(7)));
        for (page, at) in [
            (
                ModePage::Other {
                    ps: false,
                    page_code: 0x19,
                    subpage_code: None,
                    data: vec![0; 6],
                },
                ptr(4, Some(5)),
            ),
            (
                ModePage::Other {
                    ps: false,
                    page_code: 0x0a,
                    subpage_code: None,
                    data: vec![0; 4],
                },
                ptr(5, None),
            ),
            (
                ModePage::Other {
                    ps: false,
                    page_code: 0x0a,
                    subpage_code: Some(1),
                    data: vec![0; 4],
                },
                ptr(4, Some(5)),
            ),
        ] {
            let (cdb, list) = select(CdbSize::Six, &with_pages(vec![page]));
            assert_eq!(bad_field(&list, &cdb), at);
        }
        // Block descriptors must describe the medium as it is.
        let mut params = with_pages(Vec::new());
        params.block_descriptors = vec![BlockDescriptor {
            number_of_blocks: 0,
            block_length: 512,
        }];
        let (cdb, list) = select(CdbSize::Six, &params);
        h.good(&cdb, &list);
        params.block_descriptors[0].block_length = 4096;
        let (cdb, list) = select(CdbSize::Six, &params);
        assert_eq!(bad_field(&list, &cdb), ptr(9, None));
        params.block_descriptors[0] = BlockDescriptor {
            number_of_blocks: 63,
            block_length: 512,
        };
        let (cdb, list) = select(CdbSize::Ten, &params);
        assert_eq!(bad_field(&list, &cdb), ptr(8, None));
        params.header.medium_type = 1;
        params.block_descriptors.clear();
        let (cdb, list) = select(CdbSize::Ten, &params);
        assert_eq!(bad_field(&list, &cdb), ptr(2, None));
        assert_eq!(current(&h), before);
    }

    #[test]
    fn mode_select_cdb_and_length_rules() {
        let h = Harness::ram(64);
        let control = ModeValues::defaults(false).control;
        let (cdb, list) = select(CdbSize::Six, &with_pages(vec![ModePage::Control(control)]));
        let Cdb::ModeSelect {
            parameter_list_length,
            ..
        } = cdb
        else {
            unreachable!()
        };
        let with = |pf: bool, sp: bool, len: u16| Cdb::ModeSelect {
            size: CdbSize::Six,
            pf,
            sp,
            parameter_list_length: len,
        };
        let s = h.check(&with(true, true, parameter_list_length), &list);
        assert_eq!(
            (s.asc, s.sense_key_specific),
            (
                Asc::INVALID_FIELD_IN_CDB,
                Some(SenseKeySpecific::FieldPointer {
                    cd: true,
                    bit: Some(0),
                    field: 1
                })
            )
        );
        let s = h.check(&with(false, false, parameter_list_length), &list);
        assert_eq!(s.asc, Asc::INVALID_FIELD_IN_CDB);
        // No list at all changes nothing; a header alone is fine with PF=0.
        h.good(&with(true, false, 0), &[]);
        h.good(&with(false, false, 4), &list[..4]);
        // Short lists.
        let s = h.check(&with(true, false, 3), &list[..3]);
        assert_eq!(s.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        let s = h.check(&with(true, false, 8), &list[..8]);
        assert_eq!(s.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
        let s = h.check(&with(true, false, parameter_list_length), &list[..10]);
        assert_eq!(s.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
    }
}
