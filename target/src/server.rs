//! The target process: configured targets, the session registry, the
//! accept loop and graceful shutdown.
//!
//! [`serve`] takes an already-bound listener and a shutdown future (the
//! mini-redis shape), so tests bind `127.0.0.1:0` and stop the target by
//! completing the future. On shutdown it stops accepting, tells every
//! connection to finish (pending write tasks fail with a CHECK CONDITION,
//! queued responses are flushed, the initiator is told with an
//! Asynchronous Message), waits for them, and flushes every LUN.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iesp_proto::pdu::{Isid, LoginStatus};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::admission::{Admission, Refusal};
use crate::backend::{Backend, FileBackend, NbdBackend, RamBackend};
use crate::config::{Backing, ChapAuth, Limits, TargetConfig};
use crate::conn;
use crate::conn::ffp::FfpParams;
use crate::memory::{MemoryBudget, return_freed_memory};
use crate::scsi::{LogicalUnit, LunTable};
use crate::session::{Member, SessionShared};

/// One target node, ready to serve.
pub struct TargetNode {
    pub iqn: String,
    pub alias: Option<String>,
    pub luns: Arc<LunTable>,
    /// Initiator names allowed in; empty allows all.
    pub acl: Vec<String>,
    pub chap: Option<ChapAuth>,
}

impl TargetNode {
    /// Whether `initiator` may see and log in to this target.
    pub fn allows(&self, initiator: &str) -> bool {
        self.acl.is_empty() || self.acl.iter().any(|a| a == initiator)
    }
}

/// Everything connections share.
pub struct Target {
    pub nodes: Vec<TargetNode>,
    pub portal_group_tag: u16,
    pub limits: Limits,
    /// CHAP for discovery sessions.
    pub discovery_chap: Option<ChapAuth>,
    pub sessions: SessionRegistry,
    /// Connection caps, refusal counts, authentication back-off.
    pub admission: Arc<Admission>,
    /// The memory budget for command data of all sessions.
    pub memory: Arc<MemoryBudget>,
    next_session_id: AtomicU64,
    /// Login, connection and target-wide counters ([`crate::stats`]).
    pub stats: Arc<crate::stats::TargetStats>,
}

impl Target {
    /// Opens every backend of `config`. Fails with the LUN and the reason
    /// when a file or device cannot be opened.
    pub fn from_config(config: &TargetConfig) -> io::Result<Arc<Target>> {
        let mut nodes = Vec::new();
        for (t, def) in config.targets.iter().enumerate() {
            let mut luns = Vec::new();
            for (n, spec) in def.luns.iter().enumerate() {
                let backend: Box<dyn Backend> = match &spec.backing {
                    Backing::Ram { size } => Box::new(RamBackend::try_new(*size).map_err(|e| {
                        io::Error::new(e.kind(), format!("target {t} LUN {n}: {e}"))
                    })?),
                    Backing::File { path, size } => {
                        Box::new(open(path, *size, spec.read_only, t, n)?)
                    }
                    Backing::Device { path } => {
                        require_block_device(path, t, n)?;
                        Box::new(open(path, None, spec.read_only, t, n)?)
                    }
                    Backing::Nbd { addr, export } => {
                        Box::new(open_nbd(addr, export, spec.read_only, t, n)?)
                    }
                };
                if backend.size() < u64::from(spec.block_size) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "LUN {n} of {}: {} is smaller than one block",
                            def.iqn,
                            backend.describe()
                        ),
                    ));
                }
                let serial = format!("IESP{:02x}{:04x}{:04x}", t, n, fnv16(&def.iqn));
                luns.push(Arc::new(LogicalUnit::new(
                    backend,
                    spec.block_size,
                    spec.read_only,
                    serial,
                )));
            }
            nodes.push(TargetNode {
                iqn: def.iqn.clone(),
                alias: def.alias.clone(),
                luns: Arc::new(LunTable::new(luns)),
                acl: def.acl.clone(),
                chap: def.chap.clone(),
            });
        }
        Ok(Arc::new(Target {
            nodes,
            portal_group_tag: config.portal_group_tag,
            limits: config.limits.clone(),
            discovery_chap: config.discovery_chap.clone(),
            sessions: SessionRegistry::default(),
            admission: Arc::new(Admission::default()),
            memory: MemoryBudget::new(config.limits.memory_budget),
            next_session_id: AtomicU64::new(1),
            stats: Arc::new(crate::stats::TargetStats::new()),
        }))
    }

    pub fn node(&self, iqn: &str) -> Option<&TargetNode> {
        self.nodes.iter().find(|n| n.iqn == iqn)
    }

    /// Turns the per-LU and per-connection counters on (the default) or
    /// off ([`crate::stats`]).
    pub fn set_statistics(&self, on: bool) {
        for lu in self.nodes.iter().flat_map(|n| n.luns.iter()) {
            lu.stats.set_enabled(on);
        }
        self.stats.set_enabled(on);
    }

    pub fn new_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }
}

fn open(path: &Path, size: Option<u64>, ro: bool, t: usize, n: usize) -> io::Result<FileBackend> {
    FileBackend::open(path, size, ro).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("target {t} LUN {n}: {}: {e}", path.display()),
        )
    })
}

/// `dev:` serves a block device whole; a regular file there is a mistake
/// (`file:` is for files), reported as a usage error before binding.
fn require_block_device(path: &Path, t: usize, n: usize) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "target {t} LUN {n}: dev:{} is not a block device (use file: for a regular file)",
                path.display()
            ),
        )),
        // Missing or unreadable: the open reports it (exit 3).
        Err(_) => Ok(()),
    }
}

fn open_nbd(addr: &str, export: &str, ro: bool, t: usize, n: usize) -> io::Result<NbdBackend> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("target {t} LUN {n}: {e}"));
    let backend = NbdBackend::connect(addr, export).map_err(|e| context(e.into()))?;
    if backend.read_only() && !ro {
        return Err(context(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("NBD export {addr}/{export} is read-only; add `,ro` to the LUN"),
        )));
    }
    Ok(backend)
}

fn fnv16(s: &str) -> u16 {
    let h = s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (h ^ (h >> 16)) as u16
}

/// Identifies a session for reinstatement (§6.3.5): the same initiator
/// name, ISID and target name mean the same I_T nexus.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub initiator_name: String,
    pub isid: Isid,
    pub target_name: String,
}

struct SessionEntry {
    tsih: u16,
    /// The session-wide values negotiated by the leading login, for the
    /// connections that join or reinstate one.
    params: FfpParams,
    /// The command window and connections ([`crate::session`]).
    shared: Arc<SessionShared>,
    /// The I_T nexus of the session's connections.
    nexus_id: u64,
}

/// What a login into an existing session continues from.
pub struct Joined {
    pub guard: SessionGuard,
    pub params: FfpParams,
    /// The nexus the connection serves (the session's, or a new one when
    /// the session's only connection is reinstated).
    pub nexus_id: u64,
    /// Whether the login reinstated a connection (same CID) rather than
    /// adding one.
    pub reinstated: bool,
}

/// Live sessions, for TSIH allocation and reinstatement.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<SessionKey, SessionEntry>>,
    next_tsih: AtomicU16,
}

/// One connection's place in a registered session; dropping it takes the
/// connection out (and the session, with its last connection).
pub struct SessionGuard {
    target: Arc<Target>,
    key: SessionKey,
    pub tsih: u16,
    /// This connection's identity ([`crate::session::Member::conn_id`]).
    pub conn_id: u64,
    pub shared: Arc<SessionShared>,
    /// Notified when this connection must close (reinstatement, a logout
    /// of it or of the session from another connection).
    pub kill: Arc<Notify>,
    /// Why `kill` was notified.
    why: Arc<Mutex<&'static str>>,
    /// Notified when another connection moved the session's ExpCmdSN.
    pub wake: Arc<Notify>,
    left: Option<bool>,
}

impl SessionRegistry {
    /// Whether a session with this TSIH exists.
    pub fn tsih_exists(&self, tsih: u16) -> bool {
        self.lock().values().any(|e| e.tsih == tsih)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, SessionEntry>> {
        // Each critical section is one insert/remove/scan, so a panic
        // elsewhere cannot leave the map half-updated: a poisoned lock is
        // still consistent.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A new member of `shared` with its guard.
fn enlist(
    target: &Arc<Target>,
    key: SessionKey,
    tsih: u16,
    cid: u16,
    nexus_id: u64,
    shared: &Arc<SessionShared>,
) -> SessionGuard {
    let (kill, wake) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let why: Arc<Mutex<&'static str>> = Arc::default();
    let conn_id = crate::session::new_conn_id();
    shared.join(Member {
        conn_id,
        cid,
        nexus_id,
        kill: kill.clone(),
        why: why.clone(),
        wake: wake.clone(),
    });
    SessionGuard {
        target: target.clone(),
        key,
        tsih,
        conn_id,
        shared: shared.clone(),
        kill,
        why,
        wake,
        left: None,
    }
}

/// How a login with a TSIH relates to its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// The CID is in the session: connection reinstatement (§6.3.4).
    Reinstate,
    /// A new CID within the session's MaxConnections.
    Add,
}

impl Target {
    /// Registers a new session whose leading connection is `cid`, closing
    /// any live session with the same key (session reinstatement, §6.3.5).
    /// Returns the guard and whether an old session was reinstated, or
    /// `Err` when the target already has `max_sessions` normal sessions (a
    /// reinstatement replaces one, so it is never refused).
    #[allow(clippy::too_many_arguments)]
    pub fn register_session(
        self: &Arc<Self>,
        key: SessionKey,
        session_id: u64,
        cid: u16,
        params: FfpParams,
        max_connections: u16,
        exp_cmd_sn: u32,
    ) -> Result<(SessionGuard, bool), Refusal> {
        // The cap check, the TSIH choice and the insert under one lock, so
        // concurrent logins cannot pass the cap together.
        let mut map = self.sessions.lock();
        if !key.target_name.is_empty() && !map.contains_key(&key) {
            let here = map
                .keys()
                .filter(|k| k.target_name == key.target_name)
                .count();
            if here >= self.limits.max_sessions {
                return Err(Refusal::Sessions);
            }
        }
        let tsih = loop {
            let t = self.sessions.next_tsih.fetch_add(1, Ordering::Relaxed);
            if t != 0 && !map.values().any(|e| e.tsih == t) {
                break t;
            }
        };
        let shared = SessionShared::new(exp_cmd_sn, max_connections);
        let guard = enlist(self, key.clone(), tsih, cid, session_id, &shared);
        let entry = SessionEntry {
            tsih,
            params,
            shared,
            nexus_id: session_id,
        };
        let old = map.insert(key, entry);
        drop(map);
        let reinstated = old.is_some();
        if let Some(old) = old {
            old.shared.close_all(0, "session reinstated by a new login");
        }
        Ok((guard, reinstated))
    }

    /// What a login naming session `key`/`tsih` with `cid` would do:
    /// reinstate that connection or add one; `Err` with the login status
    /// when the session is gone or already has MaxConnections connections
    /// (Too Many Connections, 0x0206).
    pub fn session_join_kind(
        &self,
        key: &SessionKey,
        tsih: u16,
        cid: u16,
    ) -> Result<JoinKind, LoginStatus> {
        let map = self.sessions.lock();
        let e = map
            .get(key)
            .filter(|e| e.tsih == tsih)
            .ok_or(LoginStatus::SESSION_DOES_NOT_EXIST)?;
        if e.shared.has_cid(cid) {
            Ok(JoinKind::Reinstate)
        } else if e.shared.connections() < usize::from(e.shared.max_connections) {
            Ok(JoinKind::Add)
        } else {
            Err(LoginStatus::TOO_MANY_CONNECTIONS)
        }
    }

    /// A login into session `key`/`tsih` with `cid` completes: connection
    /// reinstatement (RFC 7143 §6.3.4: the old connection with that CID is
    /// told to close and this one takes its place) or a new connection of
    /// the session (§13.2, up to its MaxConnections). When the session's
    /// only connection is reinstated the session starts over on the new
    /// one: a new nexus, the command window from `exp_cmd_sn` (the login's
    /// CmdSN). Otherwise the connection joins the session's window.
    pub fn join_session(
        self: &Arc<Self>,
        key: SessionKey,
        tsih: u16,
        cid: u16,
        session_id: u64,
        exp_cmd_sn: u32,
    ) -> Result<Joined, LoginStatus> {
        let mut map = self.sessions.lock();
        let e = map
            .get_mut(&key)
            .filter(|e| e.tsih == tsih)
            .ok_or(LoginStatus::SESSION_DOES_NOT_EXIST)?;
        let reinstated = e.shared.has_cid(cid);
        if reinstated {
            e.shared
                .close_cid(cid, 0, "connection reinstated by a new login");
            if e.shared.connections() == 1 {
                let fresh = SessionShared::new(exp_cmd_sn, e.shared.max_connections);
                e.shared = fresh;
                e.nexus_id = session_id;
            }
        } else if e.shared.connections() >= usize::from(e.shared.max_connections) {
            return Err(LoginStatus::TOO_MANY_CONNECTIONS);
        }
        let guard = enlist(self, key, tsih, cid, e.nexus_id, &e.shared);
        Ok(Joined {
            guard,
            params: e.params.clone(),
            nexus_id: e.nexus_id,
            reinstated,
        })
    }
}

impl SessionGuard {
    /// Why the session told this connection to close
    /// ([`SessionGuard::kill`]).
    pub fn close_reason(&self) -> &'static str {
        let why = *self.why.lock().unwrap_or_else(|p| p.into_inner());
        if why.is_empty() {
            "closed by the session"
        } else {
            why
        }
    }

    /// Takes this connection out of its session; returns whether it was the
    /// last connection serving its nexus (which then ends). Later calls
    /// return the same answer.
    pub fn leave(&mut self) -> bool {
        if let Some(last) = self.left {
            return last;
        }
        let last = self.shared.leave(self.conn_id);
        self.left = Some(last);
        let mut map = self.target.sessions.lock();
        if map
            .get(&self.key)
            .is_some_and(|e| Arc::ptr_eq(&e.shared, &self.shared) && e.shared.connections() == 0)
        {
            map.remove(&self.key);
        }
        last
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Serves iSCSI on `listener` until `shutdown` completes, then closes
/// every connection cleanly and flushes the LUNs.
pub async fn serve(
    listener: TcpListener,
    target: Arc<Target>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    // Listed by the SNMP agent's portal tables while this runs.
    let _portal = listener.local_addr().map(|a| target.stats.portal_up(a));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let permit = match target.admission.admit(peer.ip(), &target.limits) {
                    Ok(p) => p,
                    Err(cause) => {
                        // Closed before it can send a byte (RST-free: a
                        // plain close), counted and logged once per cause.
                        target.admission.refusals.refuse(cause, peer.ip());
                        drop(stream);
                        continue;
                    }
                };
                let portal: SocketAddr = stream.local_addr().unwrap_or(peer);
                let target = target.clone();
                let stop = stop_rx.clone();
                conns.spawn(async move {
                    if let Err(e) = conn::run(stream, peer, portal, target, stop, permit).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    // Its buffers are freed: give the pages back.
                    return_freed_memory();
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Connections finish their batch, fail pending tasks and flush; give
    // them a bounded time.
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("connections did not close within 10 s; aborting them");
        conns.abort_all();
    }
    for node in &target.nodes {
        node.luns.flush_all();
    }
    Ok(())
}
