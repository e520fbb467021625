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
/// client, under its certificate name, and the byte budgets its streams draw from.
/// Dropping it frees the slots.
pub(crate) struct RoleAdmission {
    _slot: OwnedSemaphorePermit,
    _name: Option<NameGuard>,
    budget: ConnectionBudget,
}

impl RoleAdmission {
    /// The budgets this connection's streams draw from.
    pub(crate) fn budget(&self) -> &ConnectionBudget {
        &self.budget
    }
}

/// Client names with live connections: how many each holds, and the byte budget they
/// share. An entry lives while its name has a connection.
struct ClientNames {
    max_connections: usize,
    bytes_per_name: usize,
    held: Mutex<HashMap<String, (usize, Arc<ByteBudget>)>>,
}

impl ClientNames {
    fn try_take(self: &Arc<Self>, name: &str) -> Option<NameGuard> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = held
            .entry(name.to_owned())
            .or_insert_with(|| (0, Arc::new(ByteBudget::new(self.bytes_per_name, None))));
        if entry.0 >= self.max_connections {
            return None;
        }
        entry.0 += 1;
        Some(NameGuard {
            names: self.clone(),
            name: name.to_owned(),
            bytes: entry.1.clone(),
        })
    }
}

/// One connection of a client name, given back on drop.
struct NameGuard {
    names: Arc<ClientNames>,
    name: String,
    bytes: Arc<ByteBudget>,
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        let mut held = self
            .names
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = held.get_mut(&self.name) {
            entry.0 -= 1;
            if entry.0 == 0 {
                held.remove(&self.name);
            }
        }
    }
}

/// A byte budget shared by streams: every stream of one role, or of one client name.
pub(crate) struct ByteBudget {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    /// The `role` label of the gauge it exports; per-name budgets export none.
    role: Option<&'static str>,
}

impl ByteBudget {
    fn new(bytes: usize, role: Option<&'static str>) -> Self {
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
    role: Option<&'static str>,
}

impl BudgetPermit {
    /// Sets the role's gauge to the bytes held now.
    fn export(&self) {
        if let Some(role) = self.role {
            let in_use = self.capacity - self.semaphore.available_permits();
            metrics::inflight_bytes(role, in_use as f64);
        }
    }
}

/// The budgets one connection's streams draw from: its client name's (clients only),
/// then its role's. A request must fit in both, so one client name can never hold more
/// than its share of the role's budget.
#[derive(Clone)]
pub(crate) struct ConnectionBudget {
    name: Option<Arc<ByteBudget>>,
    role: Arc<ByteBudget>,
}

/// Bytes held from a [`ConnectionBudget`]; given back on drop.
pub(crate) struct HeldBytes {
    _name: Option<BudgetPermit>,
    _role: BudgetPermit,
}

impl ConnectionBudget {
    /// Takes `bytes` from both budgets at once, or `None` when they do not fit now.
    pub(crate) fn try_take(&self, bytes: usize) -> Option<HeldBytes> {
        let name = match &self.name {
            Some(budget) => Some(budget.try_take(bytes)?),
            None => None,
        };
        let role = self.role.try_take(bytes)?;
        Some(HeldBytes {
            _name: name,
            _role: role,
        })
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
    client_names: Arc<ClientNames>,
    clients: Arc<Semaphore>,
    peers: Arc<Semaphore>,
    client_bytes: Arc<ByteBudget>,
    peer_bytes: Arc<ByteBudget>,
    retries: AtomicU64,
}

impl Admission {
    pub(crate) fn new(config: &TransportConfig) -> Self {
        Admission {
            addresses: Arc::new(Counts::new(config.max_connections_per_address)),
            client_names: Arc::new(ClientNames {
                max_connections: config.max_connections_per_client,
                bytes_per_name: config.max_inflight_bytes_per_client,
                held: Mutex::new(HashMap::new()),
            }),
            clients: Arc::new(Semaphore::new(config.max_client_connections)),
            peers: Arc::new(Semaphore::new(config.max_peer_connections)),
            client_bytes: Arc::new(ByteBudget::new(
                config.max_client_inflight_bytes,
                Some("client"),
            )),
            peer_bytes: Arc::new(ByteBudget::new(
                config.max_peer_inflight_bytes,
                Some("peer"),
            )),
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
                    budget: ConnectionBudget {
                        name: None,
                        role: self.peer_bytes.clone(),
                    },
                })
            }
            PeerRole::Client(name) => {
                // The name first: a client at its own cap must not take a shared slot.
                let name = self
                    .client_names
                    .try_take(name)
                    .ok_or(Refusal::ClientName)?;
                let slot = self
                    .clients
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Refusal::Clients)?;
                let budget = ConnectionBudget {
                    name: Some(name.bytes.clone()),
                    role: self.client_bytes.clone(),
                };
                Ok(RoleAdmission {
                    _slot: slot,
                    _name: Some(name),
                    budget,
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
            max_client_inflight_bytes: 15,
            max_inflight_bytes_per_client: 10,
            max_peer_inflight_bytes: 10,
            ..TransportConfig::default()
        }
    }

    fn client(name: &str) -> PeerRole {
        PeerRole::Client(name.to_owned())
    }

    fn peer() -> PeerRole {
        PeerRole::Node(NodeId::new("n1").unwrap())
    }

    #[test]
    fn a_client_name_is_capped_and_others_still_get_slots() {
        let admission = Admission::new(&config());
        let a1 = admission.admit_role(&client("a")).unwrap();
        let _a2 = admission.admit_role(&client("a")).unwrap();
        assert_eq!(
            admission.admit_role(&client("a")).err().map(Refusal::label),
            Some("client_name_limit")
        );
        let _b = admission.admit_role(&client("b")).unwrap();
        // The shared pool (3) is full now.
        assert_eq!(
            admission.admit_role(&client("c")).err().map(Refusal::label),
            Some("client_limit")
        );
        // Peers have their own pool.
        let _p = admission.admit_role(&peer()).unwrap();
        assert_eq!(
            admission.admit_role(&peer()).err().map(Refusal::label),
            Some("peer_limit")
        );
        drop(a1);
        let _c = admission.admit_role(&client("c")).unwrap();
        let names = admission.client_names.held.lock().unwrap();
        assert_eq!(names.get("a").map(|e| e.0), Some(1));
    }

    #[test]
    fn addresses_are_capped_and_freed_on_drop() {
        let admission = Admission::new(&config());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let g1 = admission.admit_address(ip).unwrap();
        // The IPv4-mapped form is the same address.
        let _g2 = admission.admit_address(mapped).unwrap();
        assert_eq!(
            admission.admit_address(ip).err().map(Refusal::label),
            Some("address_limit")
        );
        let _other = admission
            .admit_address("127.0.0.2".parse().unwrap())
            .unwrap();
        drop(g1);
        let _g3 = admission.admit_address(ip).unwrap();
    }

    #[test]
    fn one_client_name_holds_at_most_its_share_of_the_bytes() {
        let admission = Admission::new(&config());
        let a1 = admission.admit_role(&client("a")).unwrap();
        let a2 = admission.admit_role(&client("a")).unwrap();
        let b = admission.admit_role(&client("b")).unwrap();
        // Name "a" shares 10 bytes across its connections.
        let held_a = a1.budget().try_take(7).unwrap();
        assert!(a2.budget().try_take(4).is_none());
        let _more_a = a2.budget().try_take(3).unwrap();
        // "b" still gets what the role's budget (15) has left: 5.
        assert!(b.budget().try_take(6).is_none());
        let held_b = b.budget().try_take(5).unwrap();
        assert_eq!(admission.bytes_in_use("client"), 15);
        // Peers' budget is separate.
        let p = admission.admit_role(&peer()).unwrap();
        let _held_p = p.budget().try_take(10).unwrap();
        drop(held_a);
        drop(held_b);
        assert_eq!(admission.bytes_in_use("client"), 3);
        assert!(a1.budget().try_take(usize::MAX).is_none());
    }
}
