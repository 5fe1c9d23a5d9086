//! REPORT LUNS (SPC-4 §6.33) and what a LUN without a logical unit answers
//! (SPC-4 §4.6.4, SAM-5 §5.9).
//!
//! REPORT LUNS lists every logical unit of the target (all are accessible
//! to every I_T nexus). SELECT REPORT 00h and 02h return that list — there
//! are no well known logical units — and 01h an empty one; other values are
//! INVALID FIELD IN CDB. An ALLOCATION LENGTH below 16 is INVALID FIELD IN
//! CDB (SPC-4 §6.33.1).
//!
//! A LUN number with no logical unit behind it answers:
//! - INQUIRY: standard data with PERIPHERAL QUALIFIER 011b and type 1Fh;
//!   VPD page 00h listing only itself; other pages INVALID FIELD IN CDB;
//! - REPORT LUNS: the target's list, as from any LUN;
//! - REQUEST SENSE: GOOD, with sense data ILLEGAL REQUEST / LOGICAL UNIT
//!   NOT SUPPORTED;
//! - anything else: CHECK CONDITION, ILLEGAL REQUEST / LOGICAL UNIT NOT
//!   SUPPORTED.
//!
//! There is no mode page state here, so sense data is in fixed format
//! unless REQUEST SENSE asks for descriptors.

use bytes::Bytes;
use iesp_proto::scsi::report_luns::SelectReport;
use iesp_proto::scsi::{Cdb, ReportLunsData, Sense, truncate};

use super::lu::{decode, transfer_of};
use super::opcodes::{self, Support};
use super::sense::{Outcome, respond};
use super::{Completion, LunTable, Transfer, inquiry};

/// REPORT LUNS parameter data for `table`.
pub fn report_luns(
    table: &LunTable,
    select_report: SelectReport,
    allocation_length: u32,
) -> Outcome {
    if allocation_length < 16 {
        return Err(Sense::invalid_field_in_cdb(6, None));
    }
    let luns = match select_report {
        SelectReport::LOGICAL_UNITS | SelectReport::ALL => table.lun_list(),
        SelectReport::WELL_KNOWN => Vec::new(),
        _ => return Err(Sense::invalid_field_in_cdb(2, None)),
    };
    Ok(Bytes::from(truncate(
        ReportLunsData { luns }.encode(),
        allocation_length,
    )))
}

/// [`LunTable::transfer`] for a LUN without a logical unit.
pub fn transfer_without_lu(cdb: &[u8]) -> Transfer {
    match decode(cdb, opcodes::supported_without_lu) {
        Ok(parsed) => transfer_of(&parsed, 512),
        Err(_) => Transfer::NONE,
    }
}

/// [`LunTable::execute`] for a LUN without a logical unit.
pub fn execute_without_lu(cdb: &[u8], table: &LunTable) -> Completion {
    if !cdb.is_empty() && opcodes::supported_without_lu(cdb) != Support::Yes {
        return Completion::check_condition(&Sense::logical_unit_not_supported());
    }
    let outcome = decode(cdb, opcodes::supported_without_lu).and_then(|parsed| match parsed {
        Cdb::Inquiry {
            evpd,
            page_code,
            allocation_length,
        } => inquiry::inquiry(None, evpd, page_code, allocation_length),
        Cdb::ReportLuns {
            select_report,
            allocation_length,
        } => report_luns(table, select_report, allocation_length),
        Cdb::RequestSense {
            desc,
            allocation_length,
        } => {
            let sense = Sense::logical_unit_not_supported().encode(desc);
            Ok(Bytes::from(truncate(sense, u32::from(allocation_length))))
        }
        _ => Err(Sense::logical_unit_not_supported()),
    });
    respond(outcome, false)
}

#[cfg(test)]
mod tests {
    use iesp_proto::bhs::Lun;
    use iesp_proto::scsi::inquiry::{Peripheral, StandardInquiry, Vpd, VpdPage, VpdPageCode};
    use iesp_proto::scsi::{Asc, ScsiStatus, SenseKey};

    use super::*;
    use crate::scsi::testutil::{Harness, check_of, nexus};

    fn report(select: u8, alloc: u32) -> Cdb {
        Cdb::ReportLuns {
            select_report: SelectReport(select),
            allocation_length: alloc,
        }
    }

    #[test]
    fn report_luns_lists_the_table() {
        let h = Harness::ram(64);
        for select in [0, 2] {
            let data = h.good(&report(select, 4096), &[]);
            assert_eq!(
                ReportLunsData::parse(&data).map(|d| d.luns),
                Ok(vec![Lun::from_index(0)])
            );
        }
        let data = h.good(&report(1, 4096), &[]);
        assert_eq!(data, vec![0; 8]);
        // Cut at the allocation length; the length field still says 8.
        let data = h.good(&report(0, 16), &[]);
        assert_eq!(data.len(), 16);
        assert_eq!(ReportLunsData::announced_len(&data), Some(16));
        let s = h.check(&report(0, 15), &[]);
        assert_eq!(
            s.sense_key_specific,
            Sense::invalid_field_in_cdb(6, None).sense_key_specific
        );
        let s = h.check(&report(0x10, 64), &[]);
        assert_eq!(
            s.sense_key_specific,
            Sense::invalid_field_in_cdb(2, None).sense_key_specific
        );
    }

    #[test]
    fn lun_without_lu() {
        let h = Harness::ram(64);
        let run = |c: &Cdb| {
            h.table
                .execute(&nexus(1), Lun::from_index(5), &c.encode(), &[], 0)
        };
        let c = run(&Cdb::inquiry(None, 255));
        assert_eq!(c.status, ScsiStatus::GOOD.0);
        let std = StandardInquiry::parse(&c.data).expect("parses");
        assert_eq!(std.peripheral, Peripheral::NOT_CAPABLE);
        let c = run(&Cdb::inquiry(Some(0), 255));
        let vpd = Vpd::parse(&c.data).expect("parses");
        assert_eq!(
            vpd,
            Vpd {
                peripheral: Peripheral::NOT_CAPABLE,
                page: VpdPage::SupportedPages(vec![VpdPageCode(0)])
            }
        );
        assert_eq!(
            check_of(&run(&Cdb::inquiry(Some(0x83), 255))).asc,
            Asc::INVALID_FIELD_IN_CDB
        );
        let c = run(&Cdb::RequestSense {
            desc: false,
            allocation_length: 18,
        });
        assert_eq!(c.status, ScsiStatus::GOOD.0);
        let s = Sense::parse(&c.data).expect("parses");
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::ILLEGAL_REQUEST, Asc::LOGICAL_UNIT_NOT_SUPPORTED)
        );
        assert_eq!(run(&report(0, 64)).status, ScsiStatus::GOOD.0);
        for c in [
            Cdb::TestUnitReady,
            Cdb::read_capacity16(),
            Cdb::Unknown {
                opcode: iesp_proto::scsi::ScsiOpcode(0xc0),
            },
        ] {
            assert_eq!(
                check_of(&run(&c)).asc,
                Asc::LOGICAL_UNIT_NOT_SUPPORTED,
                "{c:?}"
            );
        }
        // CDB checks still apply to what is answered.
        assert_eq!(
            check_of(&run(&Cdb::Inquiry {
                evpd: false,
                page_code: 0x80,
                allocation_length: 36
            }))
            .asc,
            Asc::INVALID_FIELD_IN_CDB
        );
    }
}
