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

use iesp_proto::pdu::Isid;
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
    session_id: u64,
    /// The CID of the session's connection.
    cid: u16,
    /// The session-wide values negotiated by the leading login, for a
    /// connection that reinstates this one.
    params: FfpParams,
    /// Wakes the session's connection to close it.
    kill: Arc<Notify>,
}

/// What a connection reinstatement continues from.
pub struct Reinstated {
    pub guard: SessionGuard,
    pub params: FfpParams,
}

/// Live sessions, for TSIH allocation and reinstatement.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<SessionKey, SessionEntry>>,
    next_tsih: AtomicU16,
}

/// A registered session; dropping it removes the registration.
pub struct SessionGuard {
    target: Arc<Target>,
    key: SessionKey,
    session_id: u64,
    pub tsih: u16,
    /// Notified when a new login reinstates this session.
    pub kill: Arc<Notify>,
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

impl Target {
    /// Registers a new session, closing any live session with the same key
    /// (session reinstatement, §6.3.5). Returns the guard and whether an old
    /// session was reinstated, or `Err` when the target already has
    /// `max_sessions` normal sessions (a reinstatement replaces one, so it
    /// is never refused).
    pub fn register_session(
        self: &Arc<Self>,
        key: SessionKey,
        session_id: u64,
        cid: u16,
        params: FfpParams,
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
        let kill = Arc::new(Notify::new());
        let entry = SessionEntry {
            tsih,
            session_id,
            cid,
            params,
            kill: kill.clone(),
        };
        let old = map.insert(key.clone(), entry);
        drop(map);
        let reinstated = old.is_some();
        if let Some(old) = old {
            old.kill.notify_one();
        }
        Ok((
            SessionGuard {
                target: self.clone(),
                key,
                session_id,
                tsih,
                kill,
            },
            reinstated,
        ))
    }
}

impl Target {
    /// Whether a live session with this key and TSIH exists, and the CID of
    /// its connection.
    pub fn session_cid(&self, key: &SessionKey, tsih: u16) -> Option<u16> {
        self.sessions
            .lock()
            .get(key)
            .filter(|e| e.tsih == tsih)
            .map(|e| e.cid)
    }

    /// Connection reinstatement (RFC 7143 §6.3.4): the session `key`/`tsih`
    /// continues on a new connection with the same CID; the old connection
    /// is told to close. `None` if the session is gone meanwhile.
    pub fn reinstate_connection(
        self: &Arc<Self>,
        key: SessionKey,
        tsih: u16,
        cid: u16,
        session_id: u64,
    ) -> Option<Reinstated> {
        let mut map = self.sessions.lock();
        let entry = map
            .get_mut(&key)
            .filter(|e| e.tsih == tsih && e.cid == cid)?;
        entry.kill.notify_one();
        let kill = Arc::new(Notify::new());
        entry.kill = kill.clone();
        entry.session_id = session_id;
        let params = entry.params.clone();
        drop(map);
        let guard = SessionGuard {
            target: self.clone(),
            key,
            session_id,
            tsih,
            kill,
        };
        Some(Reinstated { guard, params })
    }
}

impl SessionGuard {
    /// Whether this session now continues on another connection
    /// (connection reinstatement took it over with the same TSIH).
    pub fn continued_elsewhere(&self) -> bool {
        let map = self.target.sessions.lock();
        map.get(&self.key)
            .is_some_and(|e| e.tsih == self.tsih && e.session_id != self.session_id)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut map = self.target.sessions.lock();
        if map
            .get(&self.key)
            .is_some_and(|e| e.session_id == self.session_id)
        {
            map.remove(&self.key);
        }
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
