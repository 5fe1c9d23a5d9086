//! Who may take the target's resources before proving anything: caps on
//! connections (in total, still logging in, still logging in per source
//! address), the back-off of failed authentication, and refusal logs that
//! name each cause once rather than once per connection.
//!
//! [`Admission::admit`] runs in the accept loop: a connection over a cap is
//! closed before it can send a byte, so a flood of idle or slow logins costs
//! a bounded number of sockets and buffers. The [`ConnPermit`] it returns
//! releases its counts when dropped; [`ConnPermit::authenticated`] releases
//! the "logging in" part when the login reaches full feature phase.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Limits;

/// Why a connection or login was refused; each is logged once per
/// [`REFUSAL_LOG_INTERVAL`] with how many more it refused meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `max_connections` reached: closed on accept.
    Connections,
    /// `max_unauthenticated` reached: closed on accept.
    Unauthenticated,
    /// `max_unauthenticated_per_address` reached: closed on accept.
    UnauthenticatedPerAddress,
    /// `max_sessions` of a target reached: Out of Resources (0x0302).
    Sessions,
    /// A session's negotiated MaxConnections (at most
    /// `max_connections_per_session`) reached: Too Many Connections
    /// (0x0206).
    SessionConnections,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::Connections,
        Refusal::Unauthenticated,
        Refusal::UnauthenticatedPerAddress,
        Refusal::Sessions,
        Refusal::SessionConnections,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The operator's explanation, naming the limit to raise.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Connections => "too many connections (max_connections)",
            Refusal::Unauthenticated => {
                "too many connections still logging in (max_unauthenticated)"
            }
            Refusal::UnauthenticatedPerAddress => {
                "too many connections logging in from one address (max_unauthenticated_per_address)"
            }
            Refusal::Sessions => "too many sessions on the target (max_sessions): Out of Resources",
            Refusal::SessionConnections => {
                "too many connections in one session (its MaxConnections, at most max_connections_per_session): Too Many Connections"
            }
        }
    }
}

/// How often one refusal cause may be logged.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The refusal counters and their rate-limited log.
#[derive(Default)]
pub struct RefusalLog {
    total: [AtomicU64; 5],
    /// Per cause: when it was last logged and the count logged then.
    logged: Mutex<[Option<(Instant, u64)>; 5]>,
}

impl RefusalLog {
    /// Counts a refusal and logs it if its cause was not logged within
    /// [`REFUSAL_LOG_INTERVAL`].
    pub fn refuse(&self, cause: Refusal, peer: IpAddr) {
        let n = self.total[cause.index()].fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut logged[cause.index()];
        match *slot {
            Some((at, _)) if now.duration_since(at) < REFUSAL_LOG_INTERVAL => {}
            Some((_, before)) => {
                tracing::warn!(%peer, refused = n, "refusing: {} ({} more since the last report)",
                    cause.describe(), n - before);
                *slot = Some((now, n));
            }
            None => {
                tracing::warn!(%peer, refused = n, "refusing: {} (reported at most every {}s)",
                    cause.describe(), REFUSAL_LOG_INTERVAL.as_secs());
                *slot = Some((now, n));
            }
        }
    }

    /// How many refusals of `cause` so far.
    pub fn count(&self, cause: Refusal) -> u64 {
        self.total[cause.index()].load(Ordering::Relaxed)
    }

    /// Every cause with its count.
    pub fn counts(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL.iter().map(|c| (*c, self.count(*c))).collect()
    }
}

/// The connection counts and the authentication back-off of a target.
#[derive(Default)]
pub struct Admission {
    connections: AtomicUsize,
    unauthenticated: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    pub refusals: RefusalLog,
    auth: AuthBackoff,
}

impl Admission {
    fn lock_addresses(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connections still logging in now.
    pub fn unauthenticated(&self) -> usize {
        self.unauthenticated.load(Ordering::Relaxed)
    }

    /// Admits a new connection from `peer` within `limits`, or names the
    /// cap it would exceed (the caller closes it and logs the refusal).
    pub fn admit(self: &Arc<Self>, peer: IpAddr, limits: &Limits) -> Result<ConnPermit, Refusal> {
        let mut per = self.lock_addresses();
        if self.connections.load(Ordering::Relaxed) >= limits.max_connections {
            return Err(Refusal::Connections);
        }
        if self.unauthenticated.load(Ordering::Relaxed) >= limits.max_unauthenticated {
            return Err(Refusal::Unauthenticated);
        }
        let here = per.entry(peer).or_insert(0);
        if *here >= limits.max_unauthenticated_per_address {
            return Err(Refusal::UnauthenticatedPerAddress);
        }
        *here += 1;
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
        Ok(ConnPermit {
            admission: self.clone(),
            peer,
            logging_in: true,
        })
    }

    fn release_login(&self, peer: IpAddr) {
        self.unauthenticated.fetch_sub(1, Ordering::Relaxed);
        let mut per = self.lock_addresses();
        if let Some(n) = per.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                per.remove(&peer);
            }
        }
    }

    /// The authentication back-off.
    pub fn auth(&self) -> &AuthBackoff {
        &self.auth
    }
}

/// One admitted connection's share of the counts.
pub struct ConnPermit {
    admission: Arc<Admission>,
    peer: IpAddr,
    logging_in: bool,
}

impl ConnPermit {
    /// The login reached full feature phase: the connection no longer
    /// counts as logging in.
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.logging_in) {
            self.admission.release_login(self.peer);
        }
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.authenticated();
        self.admission.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Who a failed authentication is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuthKey {
    Initiator(String),
    Address(IpAddr),
}

struct Backoff {
    failures: u32,
    /// No answer to this key's authentication before this instant.
    until: Instant,
}

/// Exponential back-off of failed authentication per initiator name and per
/// source address: the n-th failure in a row holds the answer (to that
/// attempt and to any attempt of the same key meanwhile, right or wrong)
/// `auth_fail_delay * 2^(n-1)`, at most `auth_fail_delay_max`. Holding right
/// answers too means an attacker learns nothing from an answer that comes
/// early. A success clears the keys; a key quiet for long is forgotten.
#[derive(Default)]
pub struct AuthBackoff {
    keys: Mutex<HashMap<AuthKey, Backoff>>,
}

/// Keys remembered at most; beyond it, the expired ones are dropped.
const MAX_KEYS: usize = 65_536;

impl AuthBackoff {
    fn lock(&self) -> MutexGuard<'_, HashMap<AuthKey, Backoff>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the answer to an attempt of `keys` may leave (`None`: now).
    pub fn hold(&self, keys: &[AuthKey], now: Instant) -> Option<Instant> {
        let map = self.lock();
        keys.iter()
            .filter_map(|k| map.get(k))
            .map(|b| b.until)
            .filter(|u| *u > now)
            .max()
    }

    /// Records a failure of `keys` at `now`; returns when its answer may
    /// leave and the count of failures in a row (the largest of the keys).
    pub fn failed(&self, keys: &[AuthKey], now: Instant, limits: &Limits) -> (Instant, u32) {
        let mut map = self.lock();
        if map.len() >= MAX_KEYS {
            let forget = limits.auth_fail_delay_max * 4;
            map.retain(|_, b| now.saturating_duration_since(b.until) < forget);
        }
        let mut until = now;
        let mut most = 0;
        for k in keys {
            let b = map.entry(k.clone()).or_insert(Backoff {
                failures: 0,
                until: now,
            });
            // Quiet for long: start over.
            if now.saturating_duration_since(b.until) > limits.auth_fail_delay_max * 4 {
                b.failures = 0;
            }
            b.failures = b.failures.saturating_add(1);
            let step = limits
                .auth_fail_delay
                .saturating_mul(1u32 << (b.failures - 1).min(20))
                .min(limits.auth_fail_delay_max);
            b.until = b.until.max(now) + step;
            until = until.max(b.until);
            most = most.max(b.failures);
        }
        (until, most)
    }

    /// An authentication of `keys` succeeded: their back-off ends.
    pub fn succeeded(&self, keys: &[AuthKey]) {
        let mut map = self.lock();
        for k in keys {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_maximum_and_a_success_clears_it() {
        let limits = Limits {
            auth_fail_delay: Duration::from_millis(10),
            auth_fail_delay_max: Duration::from_millis(50),
            ..Limits::default()
        };
        let b = AuthBackoff::default();
        let keys = [AuthKey::Initiator("iqn.x".into())];
        let t0 = Instant::now();
        let mut steps = Vec::new();
        let mut now = t0;
        for _ in 0..6 {
            let (until, _) = b.failed(&keys, now, &limits);
            steps.push(until.duration_since(now).as_millis());
            now = until;
        }
        assert_eq!(steps, vec![10, 20, 40, 50, 50, 50]);
        assert!(b.hold(&keys, t0).is_some());
        b.succeeded(&keys);
        assert!(b.hold(&keys, t0).is_none());
    }

    #[test]
    fn parallel_failures_queue_behind_each_other() {
        let limits = Limits {
            auth_fail_delay: Duration::from_millis(10),
            auth_fail_delay_max: Duration::from_millis(10),
            ..Limits::default()
        };
        let b = AuthBackoff::default();
        let keys = [AuthKey::Address(IpAddr::from([127, 0, 0, 1]))];
        let now = Instant::now();
        let last = (0..5).map(|_| b.failed(&keys, now, &limits).0).last();
        assert_eq!(last.unwrap().duration_since(now), Duration::from_millis(50));
    }

    #[test]
    fn caps_count_per_address_and_release_on_drop() {
        let limits = Limits {
            max_connections: 3,
            max_unauthenticated: 2,
            max_unauthenticated_per_address: 1,
            ..Limits::default()
        };
        let a = Arc::new(Admission::default());
        let one = IpAddr::from([127, 0, 0, 1]);
        let two = IpAddr::from([127, 0, 0, 2]);
        let three = IpAddr::from([127, 0, 0, 3]);
        let mut p1 = a.admit(one, &limits).unwrap();
        assert_eq!(
            a.admit(one, &limits).err(),
            Some(Refusal::UnauthenticatedPerAddress)
        );
        let _p2 = a.admit(two, &limits).unwrap();
        assert_eq!(
            a.admit(three, &limits).err(),
            Some(Refusal::Unauthenticated)
        );
        p1.authenticated();
        let _p3 = a.admit(three, &limits).unwrap();
        assert_eq!(a.admit(one, &limits).err(), Some(Refusal::Connections));
        drop(p1);
        assert_eq!(a.connections(), 2);
        assert_eq!(a.unauthenticated(), 2);
    }
}
