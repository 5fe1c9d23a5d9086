//! The hash map of the per-command path.
//!
//! The standard `HashMap` hashes with SipHash-1-3: every 4 KiB READ looked
//! up its nexus (initiator name, ISID, portal group tag) in its LU's unit
//! attention table and its ITT in the connection's task maps, and callgrind
//! put those hashes at about 600 instructions per READ, an eighth of the
//! target's work (README, "Target CPU per command"). foldhash is several
//! times cheaper and still seeded per process, so an initiator cannot
//! choose names or ITTs that collide without seeing the seed; every map
//! here is bounded besides (a connection's window, `MAX_NEXUSES` per LU).

use std::collections::HashMap;

/// A `HashMap` with foldhash's per-process seeded fast hasher.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
