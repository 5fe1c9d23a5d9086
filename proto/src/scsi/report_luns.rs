//! REPORT LUNS parameter data (SPC-4 §6.33.2) and the SELECT REPORT field
//! (§6.33.1, table 274).
//!
//! Layout: LUN LIST LENGTH (4 bytes, the number of LUN bytes that follow the
//! 8-byte header), 4 reserved bytes, then one 8-byte LUN (SAM-5 §4.7) each.

use std::fmt;

use super::DataError;
use super::wire::{be32, need};
use crate::bhs::Lun;

/// The SELECT REPORT field of the REPORT LUNS CDB.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SelectReport(pub u8);

impl SelectReport {
    /// 0x00: logical units accessible to the I_T nexus, well-known LUs
    /// excluded.
    pub const LOGICAL_UNITS: SelectReport = SelectReport(0x00);
    /// 0x01: well-known logical units only.
    pub const WELL_KNOWN: SelectReport = SelectReport(0x01);
    /// 0x02: all logical units.
    pub const ALL: SelectReport = SelectReport(0x02);
    /// 0x10 (SPC-5): administrative logical units.
    pub const ADMINISTRATIVE: SelectReport = SelectReport(0x10);
    /// 0x11 (SPC-5): administrative LUs and non-subsidiary LUs.
    pub const TOP_LEVEL: SelectReport = SelectReport(0x11);
    /// 0x12 (SPC-5): the LUs in the same conglomerate.
    pub const SAME_CONGLOMERATE: SelectReport = SelectReport(0x12);

    /// The name of a defined value.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            SelectReport::LOGICAL_UNITS => "LOGICAL_UNITS",
            SelectReport::WELL_KNOWN => "WELL_KNOWN",
            SelectReport::ALL => "ALL",
            SelectReport::ADMINISTRATIVE => "ADMINISTRATIVE",
            SelectReport::TOP_LEVEL => "TOP_LEVEL",
            SelectReport::SAME_CONGLOMERATE => "SAME_CONGLOMERATE",
            _ => return None,
        })
    }
}

impl fmt::Debug for SelectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "SelectReport({:#04x})", self.0),
        }
    }
}

/// REPORT LUNS parameter data.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReportLunsData {
    /// The LUN inventory, in the order sent.
    pub luns: Vec<Lun>,
}

impl ReportLunsData {
    /// Header plus 8 bytes per LUN.
    pub fn encode(&self) -> Vec<u8> {
        let list_len = u32::try_from(self.luns.len() * 8).unwrap_or(u32::MAX);
        let mut b = Vec::with_capacity(8 + self.luns.len() * 8);
        b.extend_from_slice(&list_len.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        for lun in &self.luns {
            b.extend_from_slice(&lun.to_bytes());
        }
        b
    }

    /// Decodes the LUNs that arrived whole: at most LUN LIST LENGTH / 8 of
    /// them, fewer if the buffer was cut by the allocation length.
    pub fn parse(b: &[u8]) -> Result<ReportLunsData, DataError> {
        need(b, 8, "REPORT LUNS data")?;
        let list_len = usize::try_from(be32(b, 0)).unwrap_or(usize::MAX);
        let body = b.get(8..).unwrap_or_default();
        let body = body.get(..list_len.min(body.len())).unwrap_or_default();
        let luns = body
            .chunks_exact(8)
            .map(|c| {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(c);
                Lun::from_bytes(raw)
            })
            .collect();
        Ok(ReportLunsData { luns })
    }

    /// The total length the header announces (LUN LIST LENGTH + 8): what an
    /// initiator allocates to get the whole list.
    pub fn announced_len(b: &[u8]) -> Option<usize> {
        (b.len() >= 4).then(|| {
            usize::try_from(be32(b, 0))
                .unwrap_or(usize::MAX)
                .saturating_add(8)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    #[test]
    fn two_luns_bytes() {
        let d = ReportLunsData {
            luns: vec![Lun::from_index(0), Lun::from_index(300)],
        };
        let b = d.encode();
        assert_eq!(
            b,
            vec![
                0, 0, 0, 16, 0, 0, 0, 0, //
                0, 0, 0, 0, 0, 0, 0, 0, //
                0x41, 0x2c, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(ReportLunsData::parse(&b), Ok(d));
        assert_eq!(ReportLunsData::announced_len(&b), Some(24));
    }

    #[test]
    fn truncated_by_allocation_length() {
        let d = ReportLunsData {
            luns: (0..4).map(Lun::from_index).collect(),
        };
        let b = crate::scsi::truncate(d.encode(), 30);
        let parsed = ReportLunsData::parse(&b).map(|p| p.luns.len());
        assert_eq!(parsed, Ok(2));
        assert_eq!(ReportLunsData::announced_len(&b), Some(40));
        assert!(ReportLunsData::parse(&b[..7]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(luns in proptest::collection::vec(any::<u64>(), 0..64)) {
            let d = ReportLunsData { luns: luns.into_iter().map(Lun).collect() };
            prop_assert_eq!(ReportLunsData::parse(&d.encode()), Ok(d));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = ReportLunsData::parse(&b);
            let _ = ReportLunsData::announced_len(&b);
        }
    }
}
