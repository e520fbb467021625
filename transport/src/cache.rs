//! The outgoing connection cache: at most one live connection per peer address, a bounded
//! number of addresses, single-flight dialing.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use crate::{error::TransportError, role::PeerRole};

/// Application close code for a connection evicted from the cache.
pub(crate) const CLOSE_EVICTED: u32 = 3;

/// Application close code for a connection set aside as unresponsive, closed when the
/// last request in flight on it ended.
pub(crate) const CLOSE_UNRESPONSIVE: u32 = 0;

/// A live outgoing connection and the authenticated role of the server behind it,
/// shared by the cache and every request using the connection: when the last copy is
/// dropped the connection closes, so one set aside (no longer cached) closes when the
/// requests in flight on it end.
#[derive(Clone)]
pub(crate) struct Cached(Arc<Connected>);

/// What [`Cached`] shares.
pub(crate) struct Connected {
    pub(crate) connection: quinn::Connection,
    pub(crate) role: PeerRole,
}

impl Cached {
    pub(crate) fn new(connection: quinn::Connection, role: PeerRole) -> Cached {
        Cached(Arc::new(Connected { connection, role }))
    }

    fn is_live(&self) -> bool {
        self.connection.close_reason().is_none()
    }
}

impl std::ops::Deref for Cached {
    type Target = Connected;

    fn deref(&self) -> &Connected {
        &self.0
    }
}

impl Drop for Connected {
    /// Closes the connection (a no-op for one closed already).
    fn drop(&mut self) {
        self.connection.close(
            quinn::VarInt::from_u32(CLOSE_UNRESPONSIVE),
            b"peer unresponsive",
        );
    }
}

/// The state for one peer address.
pub(crate) struct Slot {
    /// The cached connection, if any (it may have closed since).
    connection: Mutex<Option<Cached>>,
    /// Held while dialing, so concurrent requests to one address share one connection.
    pub(crate) dial: tokio::sync::Mutex<()>,
    /// Number of failed dials so far, to tell a failure that happened while waiting for
    /// the dial lock from an older one.
    failures: AtomicU64,
    /// The last dial failure, handed to the requests that waited for that dial.
    last_failure: Mutex<Option<TransportError>>,
    /// Logical time of the last use, for least-recently-used eviction.
    last_used: AtomicU64,
}

impl Slot {
    fn new(now: u64) -> Slot {
        Slot {
            connection: Mutex::new(None),
            dial: tokio::sync::Mutex::new(()),
            failures: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            last_used: AtomicU64::new(now),
        }
    }

    /// The cached connection if it is still open.
    pub(crate) fn live(&self) -> Option<Cached> {
        lock(&self.connection)
            .as_ref()
            .filter(|c| c.is_live())
            .cloned()
    }

    /// Stores a freshly dialed connection.
    pub(crate) fn store(&self, cached: Cached) {
        *lock(&self.connection) = Some(cached);
    }

    /// Number of failed dials so far.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Records a failed dial, keeping a copy of the error for waiters when it can be
    /// shared (errors that say something about the peer, not about one request).
    pub(crate) fn record_failure(&self, error: &TransportError) {
        *lock(&self.last_failure) = shareable(error);
        self.failures.fetch_add(1, Ordering::AcqRel);
    }

    /// The last dial failure, if shareable.
    pub(crate) fn last_failure(&self) -> Option<TransportError> {
        lock(&self.last_failure).as_ref().and_then(shareable)
    }

    /// Forgets the cached connection if it is `cached`, without closing it: later
    /// requests dial again, and the requests in flight on it keep waiting for their
    /// answers (it closes when the last of them ends). Whether it was still cached.
    fn set_aside(&self, cached: &Cached) -> bool {
        let mut slot = lock(&self.connection);
        let same = slot.as_ref().is_some_and(|c| Arc::ptr_eq(&c.0, &cached.0));
        if same {
            *slot = None;
        }
        same
    }

    /// Closes and forgets the cached connection.
    fn close(&self, code: u32, reason: &[u8]) {
        if let Some(cached) = lock(&self.connection).take() {
            cached
                .connection
                .close(quinn::VarInt::from_u32(code), reason);
        }
    }
}

/// A copy of a dial error that can be handed to other requests for the same address.
fn shareable(error: &TransportError) -> Option<TransportError> {
    match error {
        TransportError::Connect { addr, reason } => Some(TransportError::Connect {
            addr: *addr,
            reason: reason.clone(),
        }),
        TransportError::Handshake { addr, reason } => Some(TransportError::Handshake {
            addr: *addr,
            reason: reason.clone(),
        }),
        TransportError::PeerRole {
            addr,
            expected,
            found,
        } => Some(TransportError::PeerRole {
            addr: *addr,
            expected: expected.clone(),
            found: found.clone(),
        }),
        TransportError::EndpointClosed => Some(TransportError::EndpointClosed),
        _ => None,
    }
}

/// Locks a std mutex, recovering from poisoning (the data stays consistent: every
/// critical section is a single assignment or read).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bounded map from peer address to [`Slot`].
pub(crate) struct ConnectionCache {
    slots: Mutex<HashMap<SocketAddr, Arc<Slot>>>,
    max: usize,
    clock: AtomicU64,
}

impl ConnectionCache {
    pub(crate) fn new(max: usize) -> ConnectionCache {
        ConnectionCache {
            slots: Mutex::new(HashMap::new()),
            max,
            clock: AtomicU64::new(0),
        }
    }

    /// The slot for `addr`, created if needed. When the cache is full, a slot whose
    /// connection is closed or missing goes first, else the least recently used one; its
    /// connection is closed. Slots being dialed are never evicted, so the cache can exceed
    /// its bound by the number of dials in progress.
    pub(crate) fn slot(&self, addr: SocketAddr) -> Arc<Slot> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(&addr) {
            slot.last_used.store(now, Ordering::Relaxed);
            return slot.clone();
        }
        if slots.len() >= self.max {
            Self::evict_one(&mut slots);
        }
        let slot = Arc::new(Slot::new(now));
        slots.insert(addr, slot.clone());
        slot
    }

    fn evict_one(slots: &mut HashMap<SocketAddr, Arc<Slot>>) {
        let mut victim: Option<(SocketAddr, u64, bool)> = None;
        for (addr, slot) in slots.iter() {
            // A slot being dialed is busy; leave it.
            if slot.dial.try_lock().is_err() {
                continue;
            }
            let dead = slot.live().is_none();
            let used = slot.last_used.load(Ordering::Relaxed);
            let better = match victim {
                None => true,
                Some((_, best_used, best_dead)) => {
                    (dead && !best_dead) || (dead == best_dead && used < best_used)
                }
            };
            if better {
                victim = Some((*addr, used, dead));
            }
        }
        if let Some((addr, _, _)) = victim {
            if let Some(slot) = slots.remove(&addr) {
                slot.close(CLOSE_EVICTED, b"evicted from connection cache");
            }
        }
    }

    /// The live connection to `addr`, if one is cached; adds and evicts nothing.
    pub(crate) fn live_to(&self, addr: SocketAddr) -> Option<Cached> {
        lock(&self.slots).get(&addr).and_then(|slot| slot.live())
    }

    /// Sets `cached`, a connection to `addr`, aside (see [`Slot::set_aside`]); whether it
    /// was still cached.
    pub(crate) fn set_aside(&self, addr: SocketAddr, cached: &Cached) -> bool {
        let slot = lock(&self.slots).get(&addr).cloned();
        slot.is_some_and(|slot| slot.set_aside(cached))
    }

    /// Number of cached connections that are still open.
    pub(crate) fn live_connections(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|slot| slot.live().is_some())
            .count()
    }

    /// Number of peer addresses with a slot.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Closes every cached connection and empties the cache.
    pub(crate) fn clear(&self, code: u32, reason: &[u8]) {
        let drained: Vec<Arc<Slot>> = lock(&self.slots).drain().map(|(_, s)| s).collect();
        for slot in drained {
            slot.close(code, reason);
        }
    }
}
