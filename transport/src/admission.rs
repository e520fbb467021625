//! What a server admits: connections (per role, per client name, per source address)
//! and bytes of requests and responses in flight (per role). Every limit answers at
//! once, so a flood is refused instead of queued, and every admission is a guard that
//! gives its share back when dropped.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{config::TransportConfig, metrics, role::PeerRole};

/// Counts held per key (a client name, an address), each below a cap. Entries at zero
/// are removed, so the map holds only keys with a live connection.
struct Counts<K: Eq + Hash> {
    cap: usize,
    held: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone> Counts<K> {
    fn new(cap: usize) -> Self {
        Counts {
            cap,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn try_take(self: &Arc<Self>, key: K) -> Option<CountGuard<K>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(CountGuard {
            counts: self.clone(),
            key,
        })
    }

    fn give_back(&self, key: &K) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                held.remove(key);
            }
        }
    }
}

/// One unit of a [`Counts`], given back on drop.
pub(crate) struct CountGuard<K: Eq + Hash + Clone> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for CountGuard<K> {
    fn drop(&mut self) {
        self.counts.give_back(&self.key);
    }
}

/// Why a connection was not admitted; the value is its metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The source address holds its maximum of connections.
    Address,
    /// All client connection slots are taken.
    Clients,
    /// This client certificate name holds its maximum of connections.
    ClientName,
    /// All peer connection slots are taken.
    Peers,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Address => "address_limit",
            Refusal::Clients => "client_limit",
            Refusal::ClientName => "client_name_limit",
            Refusal::Peers => "peer_limit",
        }
    }
}

/// An admitted, authenticated connection: its slot in its role's pool and, for a
/// client, under its certificate name. Dropping it frees both.
pub(crate) struct RoleAdmission {
    _slot: OwnedSemaphorePermit,
    _name: Option<CountGuard<String>>,
}

/// A byte budget shared by every stream of one role.
pub(crate) struct ByteBudget {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    role: &'static str,
}

impl ByteBudget {
    fn new(bytes: usize, role: &'static str) -> Self {
        ByteBudget {
            semaphore: Arc::new(Semaphore::new(bytes)),
            capacity: bytes,
            role,
        }
    }

    /// Takes `bytes` at once, or `None` when they do not fit now.
    pub(crate) fn try_take(&self, bytes: usize) -> Option<BudgetPermit> {
        let Ok(n) = u32::try_from(bytes) else {
            return None;
        };
        let permit = self.semaphore.clone().try_acquire_many_owned(n).ok()?;
        Some(self.held(permit))
    }

    /// Takes `bytes`, waiting for others to give theirs back (the caller bounds the wait).
    pub(crate) async fn take(&self, bytes: usize) -> Option<BudgetPermit> {
        let n = u32::try_from(bytes).ok()?;
        let permit = self.semaphore.clone().acquire_many_owned(n).await.ok()?;
        Some(self.held(permit))
    }

    fn held(&self, permit: OwnedSemaphorePermit) -> BudgetPermit {
        let permit = BudgetPermit {
            permit: Some(permit),
            semaphore: self.semaphore.clone(),
            capacity: self.capacity,
            role: self.role,
        };
        permit.export();
        permit
    }

    /// Bytes free now (for tests).
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Bytes held now (for tests).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.capacity - self.semaphore.available_permits()
    }
}

/// Bytes held from a [`ByteBudget`], given back on drop.
pub(crate) struct BudgetPermit {
    permit: Option<OwnedSemaphorePermit>,
    semaphore: Arc<Semaphore>,
    capacity: usize,
    role: &'static str,
}

impl BudgetPermit {
    /// Sets the role's gauge to the bytes held now.
    fn export(&self) {
        let in_use = self.capacity - self.semaphore.available_permits();
        metrics::inflight_bytes(self.role, in_use as f64);
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.export();
    }
}

/// Every admission limit of one server endpoint.
pub(crate) struct Admission {
    addresses: Arc<Counts<IpAddr>>,
    client_names: Arc<Counts<String>>,
    clients: Arc<Semaphore>,
    peers: Arc<Semaphore>,
    client_bytes: ByteBudget,
    peer_bytes: ByteBudget,
    retries: AtomicU64,
}

impl Admission {
    pub(crate) fn new(config: &TransportConfig) -> Self {
        Admission {
            addresses: Arc::new(Counts::new(config.max_connections_per_address)),
            client_names: Arc::new(Counts::new(config.max_connections_per_client)),
            clients: Arc::new(Semaphore::new(config.max_client_connections)),
            peers: Arc::new(Semaphore::new(config.max_peer_connections)),
            client_bytes: ByteBudget::new(config.max_client_inflight_bytes, "client"),
            peer_bytes: ByteBudget::new(config.max_peer_inflight_bytes, "peer"),
            retries: AtomicU64::new(0),
        }
    }

    /// A slot for one more connection from `ip`, before its handshake.
    pub(crate) fn admit_address(&self, ip: IpAddr) -> Result<CountGuard<IpAddr>, Refusal> {
        self.addresses
            .try_take(ip.to_canonical())
            .ok_or(Refusal::Address)
    }

    /// A slot for an authenticated connection of `role`.
    pub(crate) fn admit_role(&self, role: &PeerRole) -> Result<RoleAdmission, Refusal> {
        match role {
            PeerRole::Node(_) => {
                let slot = self
                    .peers
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Refusal::Peers)?;
                Ok(RoleAdmission {
                    _slot: slot,
                    _name: None,
                })
            }
            PeerRole::Client(name) => {
                // The name first: a client at its own cap must not take a shared slot.
                let name = self
                    .client_names
                    .try_take(name.clone())
                    .ok_or(Refusal::ClientName)?;
                let slot = self
                    .clients
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Refusal::Clients)?;
                Ok(RoleAdmission {
                    _slot: slot,
                    _name: Some(name),
                })
            }
        }
    }

    /// Counts a connection asked to prove its address.
    pub(crate) fn note_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        metrics::retry();
    }

    /// Connections asked to prove their address so far (for tests).
    #[cfg(test)]
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Bytes of a role's budget (`"client"` or `"peer"`) held now (for tests).
    #[cfg(test)]
    pub(crate) fn bytes_in_use(&self, role: &str) -> usize {
        match role {
            "peer" => self.peer_bytes.in_use(),
            _ => self.client_bytes.in_use(),
        }
    }

    /// The byte budget of a role.
    pub(crate) fn bytes(&self, role: &PeerRole) -> &ByteBudget {
        match role {
            PeerRole::Node(_) => &self.peer_bytes,
            PeerRole::Client(_) => &self.client_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_ring::NodeId;

    fn config() -> TransportConfig {
        TransportConfig {
            max_client_connections: 3,
            max_peer_connections: 1,
            max_connections_per_client: 2,
            max_connections_per_address: 2,
            max_frame_bytes: 10,
            max_client_inflight_bytes: 10,
            max_peer_inflight_bytes: 10,
            ..TransportConfig::default()
        }
    }

    fn client(name: &str) -> PeerRole {
        PeerRole::Client(name.to_owned())
    }

    #[test]
    fn a_client_name_is_capped_and_others_still_get_slots() {
        let admission = Admission::new(&config());
        let a1 = admission.admit_role(&client("a")).unwrap();
        let _a2 = admission.admit_role(&client("a")).unwrap();
        assert_eq!(
            admission.admit_role(&client("a")).err(),
            Some(Refusal::ClientName)
        );
        let _b = admission.admit_role(&client("b")).unwrap();
        // The shared pool (3) is full now.
        assert_eq!(
            admission.admit_role(&client("c")).err(),
            Some(Refusal::Clients)
        );
        // Peers have their own pool.
        let peer = PeerRole::Node(NodeId::new("n1").unwrap());
        let _p = admission.admit_role(&peer).unwrap();
        assert_eq!(admission.admit_role(&peer).err(), Some(Refusal::Peers));
        drop(a1);
        let _c = admission.admit_role(&client("c")).unwrap();
        assert!(admission.client_names.held.lock().unwrap().get("a") == Some(&1));
    }

    #[test]
    fn addresses_are_capped_and_freed_on_drop() {
        let admission = Admission::new(&config());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let g1 = admission.admit_address(ip).unwrap();
        // The IPv4-mapped form is the same address.
        let _g2 = admission.admit_address(mapped).unwrap();
        assert_eq!(admission.admit_address(ip).err(), Some(Refusal::Address));
        let _other = admission
            .admit_address("127.0.0.2".parse().unwrap())
            .unwrap();
        drop(g1);
        let _g3 = admission.admit_address(ip).unwrap();
    }

    #[test]
    fn byte_budgets_refuse_what_does_not_fit_and_refill_on_drop() {
        let admission = Admission::new(&config());
        let role = client("a");
        let first = admission.bytes(&role).try_take(7).unwrap();
        assert!(admission.bytes(&role).try_take(4).is_none());
        let peer = PeerRole::Node(NodeId::new("n1").unwrap());
        // The peers' budget is separate.
        let _p = admission.bytes(&peer).try_take(10).unwrap();
        let _second = admission.bytes(&role).try_take(3).unwrap();
        assert_eq!(admission.bytes(&role).available(), 0);
        drop(first);
        assert_eq!(admission.bytes(&role).available(), 7);
        assert!(admission.bytes(&role).try_take(usize::MAX).is_none());
    }
}
