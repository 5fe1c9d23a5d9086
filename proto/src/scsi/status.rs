//! SCSI status codes (SAM-5 §5.3.1, "Status codes").
//!
//! The status byte of an iSCSI SCSI Response PDU (RFC 7143 §11.4.2). A
//! newtype so obsolete and vendor values are carried and printed as hex.

use std::fmt;

/// A SAM-5 status code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ScsiStatus(pub u8);

impl ScsiStatus {
    /// The command completed without error.
    pub const GOOD: ScsiStatus = ScsiStatus(0x00);
    /// Sense data describes why the command failed.
    pub const CHECK_CONDITION: ScsiStatus = ScsiStatus(0x02);
    /// PRE-FETCH: the requested range fits in the cache.
    pub const CONDITION_MET: ScsiStatus = ScsiStatus(0x04);
    /// The logical unit is busy; retry later.
    pub const BUSY: ScsiStatus = ScsiStatus(0x08);
    /// Obsolete (linked commands).
    pub const INTERMEDIATE: ScsiStatus = ScsiStatus(0x10);
    /// Obsolete (linked commands).
    pub const INTERMEDIATE_CONDITION_MET: ScsiStatus = ScsiStatus(0x14);
    /// The command conflicts with a reservation held by another I_T nexus.
    pub const RESERVATION_CONFLICT: ScsiStatus = ScsiStatus(0x18);
    /// Obsolete.
    pub const COMMAND_TERMINATED: ScsiStatus = ScsiStatus(0x22);
    /// The task set is full.
    pub const TASK_SET_FULL: ScsiStatus = ScsiStatus(0x28);
    /// An ACA condition exists and the command was not an ACA command.
    pub const ACA_ACTIVE: ScsiStatus = ScsiStatus(0x30);
    /// The command was aborted by another I_T nexus (TAS=1).
    pub const TASK_ABORTED: ScsiStatus = ScsiStatus(0x40);

    /// Every status SAM-5 defines, obsolete ones included.
    pub const ALL: [ScsiStatus; 11] = [
        ScsiStatus::GOOD,
        ScsiStatus::CHECK_CONDITION,
        ScsiStatus::CONDITION_MET,
        ScsiStatus::BUSY,
        ScsiStatus::INTERMEDIATE,
        ScsiStatus::INTERMEDIATE_CONDITION_MET,
        ScsiStatus::RESERVATION_CONFLICT,
        ScsiStatus::COMMAND_TERMINATED,
        ScsiStatus::TASK_SET_FULL,
        ScsiStatus::ACA_ACTIVE,
        ScsiStatus::TASK_ABORTED,
    ];

    /// The SAM-5 name of a known status.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            ScsiStatus::GOOD => "GOOD",
            ScsiStatus::CHECK_CONDITION => "CHECK CONDITION",
            ScsiStatus::CONDITION_MET => "CONDITION MET",
            ScsiStatus::BUSY => "BUSY",
            ScsiStatus::INTERMEDIATE => "INTERMEDIATE",
            ScsiStatus::INTERMEDIATE_CONDITION_MET => "INTERMEDIATE-CONDITION MET",
            ScsiStatus::RESERVATION_CONFLICT => "RESERVATION CONFLICT",
            ScsiStatus::COMMAND_TERMINATED => "COMMAND TERMINATED",
            ScsiStatus::TASK_SET_FULL => "TASK SET FULL",
            ScsiStatus::ACA_ACTIVE => "ACA ACTIVE",
            ScsiStatus::TASK_ABORTED => "TASK ABORTED",
            _ => return None,
        })
    }

    /// Looks a status up by its SAM-5 name, with spaces or underscores
    /// ("CHECK CONDITION", "CHECK_CONDITION"), case-insensitively.
    pub fn from_name(name: &str) -> Option<ScsiStatus> {
        let want = name.replace('_', " ");
        ScsiStatus::ALL
            .into_iter()
            .find(|s| s.name().is_some_and(|n| n.eq_ignore_ascii_case(&want)))
    }
}

impl fmt::Debug for ScsiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "ScsiStatus({:#04x})", self.0),
        }
    }
}

impl fmt::Display for ScsiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_sam5() {
        assert_eq!(ScsiStatus::CHECK_CONDITION.0, 0x02);
        assert_eq!(ScsiStatus::RESERVATION_CONFLICT.0, 0x18);
        assert_eq!(ScsiStatus::TASK_SET_FULL.0, 0x28);
        assert_eq!(ScsiStatus::TASK_ABORTED.0, 0x40);
    }

    #[test]
    fn names_round_trip_and_unknown_prints_hex() {
        for s in ScsiStatus::ALL {
            assert_eq!(ScsiStatus::from_name(s.name().unwrap_or("")), Some(s));
        }
        assert_eq!(
            ScsiStatus::from_name("reservation_conflict"),
            Some(ScsiStatus::RESERVATION_CONFLICT)
        );
        assert_eq!(format!("{:?}", ScsiStatus(0x7e)), "ScsiStatus(0x7e)");
        assert_eq!(format!("{}", ScsiStatus::BUSY), "BUSY");
    }
}
