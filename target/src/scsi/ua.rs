//! Per-I_T-nexus state of a logical unit: unit attention queues (SAM-5
//! §5.14, SPC-4 §4.5.2.4.6).
//!
//! Contract:
//!
//! - A nexus the logical unit has never seen starts with POWER ON, RESET, OR
//!   BUS DEVICE RESET OCCURRED (29h/00h) pending: the power-on (target
//!   start) happened before it arrived, as a physical disk reports it to
//!   each initiator once. The generic 29h/00h rather than POWER ON OCCURRED
//!   (29h/01h) is what tgt and LIO report and what initiators such as
//!   libiscsi's tools expect and retry on.
//! - Events establish conditions for one nexus ([`NexusTable::establish`])
//!   or all known ones ([`NexusTable::establish_all`]). A nexus not yet
//!   known gets the power-on condition instead when it arrives, which
//!   subsumes any reset it missed.
//! - A condition is reported once, oldest first, with CHECK CONDITION /
//!   UNIT ATTENTION on any command but INQUIRY, REPORT LUNS and REQUEST
//!   SENSE; REQUEST SENSE returns it as sense data (UA_INTLCK_CTRL = 00b).
//! - The same condition is not queued twice. A reset-class condition (ASC
//!   29h) replaces what is pending: after a reset earlier conditions no
//!   longer describe the state. The queue holds [`QUEUE_DEPTH`] conditions;
//!   beyond that the next reported one carries the UNIT ATTENTION CONDITION
//!   QUEUE OVERFLOW bit (SPC-4 §4.5.2.4.6).
//! - At most [`MAX_NEXUSES`] nexuses are remembered per LU. Past that, the
//!   ones with nothing pending are forgotten; if such a nexus returns it is
//!   told of the power-on again, which is harmless.
//!
//! Persistent reservation registrations are per I_T nexus too; they live
//! in [`super::pr`], keyed by the same [`NexusKey`].

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock};

use iesp_proto::pdu::Isid;
use iesp_proto::scsi::{Asc, Sense, SenseKeySpecific};

use super::Nexus;
use crate::fast_map::FastMap;

/// Conditions queued per nexus before the overflow bit is used instead.
pub const QUEUE_DEPTH: usize = 8;

/// Nexuses remembered per logical unit.
pub const MAX_NEXUSES: usize = 1024;

/// What identifies an I_T nexus to a logical unit: the initiator port and
/// the target port (the target name is the LU's own).
///
/// Every command looks its nexus up ([`NexusTable`]); the hash of the
/// initiator name is computed once, when the key is made, and the table
/// hashes only that.
#[derive(Clone, Debug)]
pub struct NexusKey {
    initiator_name: Arc<str>,
    isid: Isid,
    portal_group_tag: u16,
    /// Of the three fields above, seeded per process ([`key_hash`]).
    hash: u64,
}

impl PartialEq for NexusKey {
    fn eq(&self, other: &NexusKey) -> bool {
        self.hash == other.hash
            && self.isid == other.isid
            && self.portal_group_tag == other.portal_group_tag
            && self.initiator_name == other.initiator_name
    }
}

impl Eq for NexusKey {}

impl Hash for NexusKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The hash of a nexus key, with a seed chosen at random once per process
/// (an initiator cannot pick names that collide).
fn key_hash(initiator_name: &str, isid: Isid, portal_group_tag: u16) -> u64 {
    static SEED: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);
    SEED.hash_one((initiator_name, isid, portal_group_tag))
}

impl NexusKey {
    pub fn of(nexus: &Nexus) -> NexusKey {
        NexusKey {
            initiator_name: nexus.initiator_name.clone(),
            isid: nexus.isid,
            portal_group_tag: nexus.portal_group_tag,
            hash: key_hash(&nexus.initiator_name, nexus.isid, nexus.portal_group_tag),
        }
    }

    /// The nexus of initiator port `initiator_name` + `isid` with target
    /// port `portal_group_tag` (REGISTER AND MOVE names one by TransportID).
    pub fn new(initiator_name: &str, isid: Isid, portal_group_tag: u16) -> NexusKey {
        NexusKey {
            initiator_name: initiator_name.into(),
            isid,
            portal_group_tag,
            hash: key_hash(initiator_name, isid, portal_group_tag),
        }
    }

    pub fn initiator_name(&self) -> &str {
        &self.initiator_name
    }

    pub fn isid(&self) -> Isid {
        self.isid
    }

    pub fn portal_group_tag(&self) -> u16 {
        self.portal_group_tag
    }
}

/// The unit attention queue of one nexus.
#[derive(Debug, Default)]
struct UnitAttentions {
    queue: VecDeque<Asc>,
    overflow: bool,
}

impl UnitAttentions {
    fn establish(&mut self, asc: Asc) {
        if asc.asc() == 0x29 {
            self.queue.clear();
            self.overflow = false;
        }
        if self.queue.contains(&asc) {
            return;
        }
        if self.queue.len() >= QUEUE_DEPTH {
            self.overflow = true;
            return;
        }
        self.queue.push_back(asc);
    }

    fn take(&mut self) -> Option<Sense> {
        let asc = self.queue.pop_front()?;
        let mut sense = Sense::unit_attention(asc);
        if std::mem::take(&mut self.overflow) {
            sense.sense_key_specific = Some(SenseKeySpecific::UnitAttentionOverflow(true));
        }
        Some(sense)
    }
}

/// The nexuses a logical unit knows, with their pending conditions.
#[derive(Debug, Default)]
pub struct NexusTable {
    nexuses: FastMap<NexusKey, UnitAttentions>,
}

impl NexusTable {
    /// The entry of `key`, created with the power-on condition pending if new.
    fn entry(&mut self, key: &NexusKey) -> &mut UnitAttentions {
        if self.nexuses.len() >= MAX_NEXUSES && !self.nexuses.contains_key(key) {
            self.nexuses.retain(|_, ua| !ua.queue.is_empty());
            if self.nexuses.len() >= MAX_NEXUSES {
                self.nexuses.clear();
            }
        }
        if !self.nexuses.contains_key(key) {
            // Cloned only for a new nexus, not per command.
            let mut ua = UnitAttentions::default();
            ua.establish(Asc::POWER_ON_RESET);
            self.nexuses.insert(key.clone(), ua);
        }
        self.nexuses.get_mut(key).expect("the entry was just made")
    }

    /// Removes and returns the oldest pending condition of `key` as sense
    /// data; registers `key` if it is new.
    pub fn take(&mut self, key: &NexusKey) -> Option<Sense> {
        self.entry(key).take()
    }

    /// Registers `key` if new, without reporting anything (INQUIRY, REPORT
    /// LUNS).
    pub fn touch(&mut self, key: &NexusKey) {
        self.entry(key);
    }

    /// Establishes `asc` for `key` (a nexus the LU has not seen is left to
    /// its power-on condition).
    pub fn establish(&mut self, key: &NexusKey, asc: Asc) {
        if let Some(ua) = self.nexuses.get_mut(key) {
            ua.establish(asc);
        }
    }

    /// Establishes `asc` for every known nexus.
    pub fn establish_all(&mut self, asc: Asc) {
        for ua in self.nexuses.values_mut() {
            ua.establish(asc);
        }
    }

    /// Establishes `asc` for every known nexus except `key` (MODE SELECT
    /// changing shared parameters, SPC-4 §7.5.2).
    pub fn establish_others(&mut self, key: &NexusKey, asc: Asc) {
        for (k, ua) in &mut self.nexuses {
            if k != key {
                ua.establish(asc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::testutil::nexus;

    #[test]
    fn new_nexus_sees_power_on_then_nothing() {
        let mut t = NexusTable::default();
        let k = NexusKey::of(&nexus(1));
        assert_eq!(t.take(&k).map(|s| s.asc), Some(Asc::POWER_ON_RESET));
        assert_eq!(t.take(&k), None);
    }

    #[test]
    fn fifo_dedup_and_reset_replaces() {
        let mut t = NexusTable::default();
        let k = NexusKey::of(&nexus(1));
        t.touch(&k);
        t.establish(&k, Asc::MODE_PARAMETERS_CHANGED);
        t.establish(&k, Asc::CAPACITY_DATA_HAS_CHANGED);
        t.establish(&k, Asc::MODE_PARAMETERS_CHANGED);
        assert_eq!(t.take(&k).map(|s| s.asc), Some(Asc::POWER_ON_RESET));
        assert_eq!(
            t.take(&k).map(|s| s.asc),
            Some(Asc::MODE_PARAMETERS_CHANGED)
        );
        assert_eq!(
            t.take(&k).map(|s| s.asc),
            Some(Asc::CAPACITY_DATA_HAS_CHANGED)
        );
        assert_eq!(t.take(&k), None);
        t.establish(&k, Asc::MODE_PARAMETERS_CHANGED);
        t.establish(&k, Asc::BUS_DEVICE_RESET);
        assert_eq!(t.take(&k).map(|s| s.asc), Some(Asc::BUS_DEVICE_RESET));
        assert_eq!(t.take(&k), None);
    }

    #[test]
    fn overflow_is_flagged_on_the_next_report() {
        let mut t = NexusTable::default();
        let k = NexusKey::of(&nexus(1));
        t.take(&k);
        for i in 0..=QUEUE_DEPTH as u16 {
            t.establish(&k, Asc(0x3f00 + i));
        }
        let first = t.take(&k).expect("pending");
        assert_eq!(first.asc, Asc(0x3f00));
        assert_eq!(
            first.sense_key_specific,
            Some(SenseKeySpecific::UnitAttentionOverflow(true))
        );
        let second = t.take(&k).expect("pending");
        assert_eq!(second.sense_key_specific, None);
    }

    #[test]
    fn unknown_nexus_is_not_created_by_establish_and_others_excludes_self() {
        let mut t = NexusTable::default();
        let a = NexusKey::of(&nexus(1));
        let b = NexusKey::of(&nexus(2));
        t.establish(&a, Asc::I_T_NEXUS_LOSS);
        assert!(t.nexuses.is_empty());
        t.take(&a);
        t.take(&b);
        t.establish_others(&a, Asc::MODE_PARAMETERS_CHANGED);
        assert_eq!(t.take(&a), None);
        assert_eq!(
            t.take(&b).map(|s| s.asc),
            Some(Asc::MODE_PARAMETERS_CHANGED)
        );
    }

    #[test]
    fn table_is_bounded() {
        let mut t = NexusTable::default();
        for i in 0..(MAX_NEXUSES + 10) {
            let mut n = nexus(0);
            n.isid = Isid([0x80, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let k = NexusKey::of(&n);
            t.take(&k);
        }
        assert!(t.nexuses.len() <= MAX_NEXUSES);
    }
}
