//! What the connections of one session share (RFC 7143 §4.2.2.1, §6.3,
//! multiple connections per session).
//!
//! Each connection keeps its own full feature phase core
//! ([`crate::conn::ffp`]): its StatSN, its write tasks and R2Ts, its
//! Data-In — connection allegiance (§4.2.2.1) keeps a command's answers on
//! the connection it came in on. The session adds one thing they all obey:
//! **the command window**. ExpCmdSN is session-wide and a command runs only
//! when ExpCmdSN reaches its CmdSN, whichever connection carried it.
//!
//! [`SessionShared::turn`] is the session's ordering lock: a connection
//! holds it while it numbers and dispatches commands, so two connections
//! never dispatch at once and ExpCmdSN moves by one per command. A command
//! that arrives early waits on its own connection; when another connection
//! moves ExpCmdSN it wakes the others ([`SessionShared::wake_others`]), and
//! the one holding the next CmdSN runs it. The lock is never held across an
//! `await`.
//!
//! The member list names every connection of the session with its CID,
//! for Logout (reason 0 closes them all, reason 1 one of them, §11.14),
//! connection reinstatement (§6.3.4) and the `MaxConnections` cap (§13.2).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::Notify;

use crate::memory::SessionMemory;

/// Connection identities, unique within the process.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A new process-wide connection identity.
pub fn new_conn_id() -> u64 {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// One connection of a session.
pub struct Member {
    /// Process-wide identity of the connection (CIDs repeat on
    /// reinstatement).
    pub conn_id: u64,
    /// The initiator's Connection ID.
    pub cid: u16,
    /// The I_T nexus the connection serves ([`crate::scsi::Nexus`]'s
    /// `session_id`): the nexus ends with the last connection serving it.
    pub nexus_id: u64,
    /// Notified to close the connection (logout of it from another
    /// connection, reinstatement, the session's end).
    pub kill: Arc<Notify>,
    /// Why `kill` was notified, for the operator's log.
    pub why: Arc<Mutex<&'static str>>,
    /// Notified when another connection moved ExpCmdSN.
    pub wake: Arc<Notify>,
}

impl Member {
    fn close(&self, why: &'static str) {
        *lock(&self.why) = why;
        self.kill.notify_one();
    }
}

/// The state every connection of a session shares.
pub struct SessionShared {
    /// The ordering lock: held while commands are numbered and dispatched.
    turn: Mutex<()>,
    /// ExpCmdSN of the session; written only under `turn`.
    exp_cmd_sn: AtomicU32,
    /// CmdSNs to treat as received when ExpCmdSN reaches them (ABORT TASK
    /// of a command never received, §11.5.1); touched only under `turn`.
    consumed: Mutex<HashSet<u32>>,
    members: Mutex<Vec<Member>>,
    /// The negotiated MaxConnections (§13.2): members at most.
    pub max_connections: u16,
    /// The session's share of the memory budget, one for all its
    /// connections.
    memory: OnceLock<SessionMemory>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is a load, a store or one Vec/HashSet
    // operation: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionShared {
    /// A session whose command window starts at `exp_cmd_sn`, without
    /// members yet.
    pub fn new(exp_cmd_sn: u32, max_connections: u16) -> Arc<SessionShared> {
        Arc::new(SessionShared {
            turn: Mutex::new(()),
            exp_cmd_sn: AtomicU32::new(exp_cmd_sn),
            consumed: Mutex::new(HashSet::new()),
            members: Mutex::new(Vec::new()),
            max_connections: max_connections.max(1),
            memory: OnceLock::new(),
        })
    }

    /// The session's memory share, made by `make` for its first
    /// connection.
    pub fn memory(&self, make: impl FnOnce() -> SessionMemory) -> SessionMemory {
        self.memory.get_or_init(make).clone()
    }

    /// The ordering lock; see the module documentation.
    pub fn turn(&self) -> MutexGuard<'_, ()> {
        lock(&self.turn)
    }

    /// The session's ExpCmdSN.
    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.load(Ordering::Acquire)
    }

    /// Moves ExpCmdSN; call with [`turn`](Self::turn) held.
    pub fn set_exp_cmd_sn(&self, sn: u32) {
        self.exp_cmd_sn.store(sn, Ordering::Release);
    }

    /// Marks `sn` as received without a command (call under `turn`).
    pub fn mark_consumed(&self, sn: u32) {
        lock(&self.consumed).insert(sn);
    }

    /// Whether `sn` was marked consumed; unmarks it (call under `turn`).
    pub fn take_consumed(&self, sn: u32) -> bool {
        let mut c = lock(&self.consumed);
        !c.is_empty() && c.remove(&sn)
    }

    /// Adds a connection.
    pub fn join(&self, member: Member) {
        lock(&self.members).push(member);
    }

    /// Removes a connection; returns whether it was the last one serving
    /// its nexus (so the nexus ends with it).
    pub fn leave(&self, conn_id: u64) -> bool {
        let mut m = lock(&self.members);
        let Some(i) = m.iter().position(|x| x.conn_id == conn_id) else {
            return false;
        };
        let gone = m.remove(i);
        !m.iter().any(|x| x.nexus_id == gone.nexus_id)
    }

    /// How many connections the session has.
    pub fn connections(&self) -> usize {
        lock(&self.members).len()
    }

    /// The CIDs of the session's connections.
    pub fn cids(&self) -> Vec<u16> {
        lock(&self.members).iter().map(|m| m.cid).collect()
    }

    /// Whether a connection with this CID is in the session.
    pub fn has_cid(&self, cid: u16) -> bool {
        lock(&self.members).iter().any(|m| m.cid == cid)
    }

    /// Tells the connection with this CID (other than `except`) to close,
    /// `why` for its log.
    pub fn close_cid(&self, cid: u16, except: u64, why: &'static str) -> bool {
        let m = lock(&self.members);
        let mut found = false;
        for x in m.iter().filter(|x| x.cid == cid && x.conn_id != except) {
            x.close(why);
            found = true;
        }
        found
    }

    /// Tells every connection but `except` to close (0 spares none).
    pub fn close_all(&self, except: u64, why: &'static str) {
        for x in lock(&self.members).iter().filter(|x| x.conn_id != except) {
            x.close(why);
        }
    }

    /// Wakes every other connection: ExpCmdSN moved, one of them may hold
    /// the next command.
    pub fn wake_others(&self, conn_id: u64) {
        let m = lock(&self.members);
        if m.len() < 2 {
            return;
        }
        for x in m.iter().filter(|x| x.conn_id != conn_id) {
            x.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(conn_id: u64, cid: u16, nexus_id: u64) -> Member {
        Member {
            conn_id,
            cid,
            nexus_id,
            kill: Arc::new(Notify::new()),
            why: Arc::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    #[test]
    fn the_nexus_ends_with_its_last_connection() {
        let s = SessionShared::new(1, 2);
        s.join(member(1, 0, 7));
        s.join(member(2, 1, 7));
        assert_eq!(s.connections(), 2);
        assert!(!s.leave(1), "another connection still serves nexus 7");
        assert!(s.leave(2));
        assert!(!s.leave(2), "already gone");
    }

    #[test]
    fn consumed_cmd_sns_are_taken_once() {
        let s = SessionShared::new(5, 1);
        s.mark_consumed(6);
        assert!(!s.take_consumed(5));
        assert!(s.take_consumed(6));
        assert!(!s.take_consumed(6));
    }

    #[test]
    fn close_cid_spares_the_caller() {
        let s = SessionShared::new(1, 2);
        s.join(member(1, 3, 7));
        assert!(!s.close_cid(3, 1, "test"));
        assert!(s.close_cid(3, 0, "test"));
        assert!(s.has_cid(3) && !s.has_cid(4));
    }
}
