//! Client-side routing, free of IO: which nodes a request tries and in which order, and
//! which nodes this client has recently found unreachable.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use shoal_proto::wire::ClusterInfo;
use shoal_proto::MAX_KEY_BYTES;
use shoal_ring::NodeId;
use tokio::time::Instant;

use crate::error::ClientError;

/// How long a node that could not be reached is tried only after every other node.
pub(crate) const DOWN_PERIOD: Duration = Duration::from_secs(2);
/// Most addresses remembered as down at once; beyond it new failures are not remembered
/// (routing then merely tries them earlier than it should).
const MAX_DOWN_ENTRIES: usize = 1024;

/// Checks a key as the nodes will: 1 to [`MAX_KEY_BYTES`] bytes.
pub(crate) fn validate_key(key: &[u8]) -> Result<(), ClientError> {
    if key.is_empty() {
        return Err(ClientError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ClientError::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

/// A node to send a request to. Seeds have no known id until they answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// The node the address must belong to (checked against its certificate), if known.
    pub id: Option<NodeId>,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The cluster as this client knows it: [`ClusterInfo`] plus an address index.
#[derive(Debug)]
pub(crate) struct View {
    /// What a node last told us.
    pub info: ClusterInfo,
    addrs: HashMap<NodeId, SocketAddr>,
}

impl View {
    /// Indexes `info`.
    pub fn new(info: ClusterInfo) -> View {
        let addrs = info
            .members
            .iter()
            .map(|m| (m.id.clone(), m.addr))
            .collect();
        View { info, addrs }
    }

    /// The address of a member, if it is one.
    pub fn addr_of(&self, id: &NodeId) -> Option<SocketAddr> {
        self.addrs.get(id).copied()
    }

    /// The order a request for `key` tries nodes in: the key's preference list, then the
    /// other ring members clockwise (the sloppy-quorum fallbacks, which forward), then
    /// members with an address that the ring does not list yet.
    pub fn keyed_order(&self, key: &[u8]) -> Vec<Target> {
        let ring = &self.info.ring;
        let walk = ring.walk(ring.partition_of(key), usize::from(self.info.n.max(1)));
        self.targets(walk)
    }

    /// The key's primaries (its preference list of N nodes in this view's ring), in
    /// preference order, those with a known address.
    pub fn primaries(&self, key: &[u8]) -> Vec<Target> {
        let ring = &self.info.ring;
        let list = ring.preference_list(ring.partition_of(key), usize::from(self.info.n));
        list.nodes
            .into_iter()
            .filter_map(|id| self.addr_of(&id).map(|addr| Target { id: Some(id), addr }))
            .collect()
    }

    /// [`keyed_order`](View::keyed_order) with the key's preference list rotated to start
    /// at its `turn % N`-th node: reads use it to spread over the replicas.
    pub fn keyed_order_from(&self, key: &[u8], turn: usize) -> Vec<Target> {
        let mut order = self.keyed_order(key);
        let n = usize::from(self.info.n).min(order.len());
        if n > 0 {
            order[..n].rotate_left(turn % n);
        }
        order
    }

    /// Every member, for requests that any node answers (status, cluster info): in the
    /// order the cluster listed them.
    pub fn any_order(&self) -> Vec<Target> {
        self.targets(Vec::new())
    }

    fn targets(&self, first: Vec<NodeId>) -> Vec<Target> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(self.info.members.len());
        let rest = self.info.members.iter().map(|m| m.id.clone());
        for id in first.into_iter().chain(rest) {
            if let Some(addr) = self.addr_of(&id) {
                if seen.insert(addr) {
                    out.push(Target { id: Some(id), addr });
                }
            }
        }
        out
    }
}

/// Addresses that recently refused or never answered a connection, each until a deadline.
#[derive(Debug, Default)]
pub(crate) struct DownList {
    until: Mutex<HashMap<SocketAddr, Instant>>,
}

impl DownList {
    /// Remembers `addr` as down for [`DOWN_PERIOD`] from `now`.
    pub fn mark(&self, addr: SocketAddr, now: Instant) {
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.retain(|_, deadline| *deadline > now);
        if until.len() < MAX_DOWN_ENTRIES || until.contains_key(&addr) {
            until.insert(addr, now + DOWN_PERIOD);
        }
    }

    /// Forgets `addr` (it just answered).
    pub fn clear(&self, addr: SocketAddr) {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
    }

    /// Whether `addr` is down at `now`.
    pub fn is_down(&self, addr: SocketAddr, now: Instant) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .is_some_and(|deadline| *deadline > now)
    }

    /// `targets` without those in `skip`, the ones not down first, each group in its
    /// original order. Down nodes stay at the end rather than being dropped: when every
    /// node is marked down, trying them beats failing without a try.
    pub fn order(&self, targets: Vec<Target>, skip: &[SocketAddr], now: Instant) -> Vec<Target> {
        let (up, down): (Vec<Target>, Vec<Target>) = targets
            .into_iter()
            .filter(|t| !skip.contains(&t.addr))
            .partition(|t| !self.is_down(t.addr, now));
        up.into_iter().chain(down).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::wire::MemberAddress;
    use shoal_ring::{Member, Ring};

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn view(nodes: usize, n: u8) -> View {
        let ids: Vec<NodeId> = (1..=nodes).map(|i| id(&format!("n{i}"))).collect();
        let ring = Ring::new(64, ids.iter().cloned().map(Member::new).collect()).unwrap();
        let members = ids
            .iter()
            .enumerate()
            .map(|(i, id)| MemberAddress {
                id: id.clone(),
                addr: SocketAddr::from(([127, 0, 0, 1], 7001 + i as u16)),
            })
            .collect();
        View::new(ClusterInfo {
            ring,
            members,
            n,
            r: 2,
            w: 2,
            layout_version: 1,
        })
    }

    #[test]
    fn key_validation_accepts_one_to_max_bytes() {
        assert!(matches!(validate_key(b""), Err(ClientError::EmptyKey)));
        validate_key(b"k").unwrap();
        validate_key(&vec![b'k'; MAX_KEY_BYTES]).unwrap();
        assert!(matches!(
            validate_key(&vec![b'k'; MAX_KEY_BYTES + 1]),
            Err(ClientError::KeyTooLarge { len, max }) if len == MAX_KEY_BYTES + 1 && max == MAX_KEY_BYTES
        ));
    }

    #[test]
    fn keyed_order_starts_with_the_preference_list_and_covers_every_member_once() {
        let v = view(5, 3);
        for key in [&b"alpha"[..], b"beta", b"gamma", b"\x00\xff"] {
            let order = v.keyed_order(key);
            let pref = v.info.ring.preference_list_for_key(key, 3);
            let ids: Vec<NodeId> = order.iter().map(|t| t.id.clone().unwrap()).collect();
            assert_eq!(&ids[..3], &pref.nodes[..]);
            let distinct: HashSet<_> = ids.iter().collect();
            assert_eq!(ids.len(), 5);
            assert_eq!(distinct.len(), 5);
            for t in &order {
                assert_eq!(Some(t.addr), v.addr_of(t.id.as_ref().unwrap()));
            }
        }
    }

    #[test]
    fn reads_rotate_over_the_preference_list_only() {
        let v = view(5, 3);
        let order = v.keyed_order(b"k");
        for turn in 0..7 {
            let rotated = v.keyed_order_from(b"k", turn);
            assert_eq!(rotated[0], order[turn % 3]);
            let mut head: Vec<_> = rotated[..3].to_vec();
            head.sort_by_key(|t| t.addr);
            let mut want: Vec<_> = order[..3].to_vec();
            want.sort_by_key(|t| t.addr);
            assert_eq!(head, want);
            assert_eq!(rotated[3..], order[3..]);
        }
    }

    #[test]
    fn members_missing_from_the_ring_are_tried_last() {
        let mut info = view(3, 3).info;
        info.members.push(MemberAddress {
            id: id("joining"),
            addr: "127.0.0.1:7999".parse().unwrap(),
        });
        let v = View::new(info);
        let order = v.keyed_order(b"k");
        assert_eq!(order.len(), 4);
        assert_eq!(order[3].id, Some(id("joining")));
    }

    #[test]
    fn down_nodes_go_last_and_come_back_after_the_down_period() {
        let v = view(3, 3);
        let order = v.keyed_order(b"some key");
        let first = order[0].addr;
        let down = DownList::default();
        let now = Instant::now();
        down.mark(first, now);
        let reordered = down.order(order.clone(), &[], now);
        assert_eq!(reordered.len(), 3);
        assert_eq!(reordered[2].addr, first);
        assert_eq!(reordered[..2], order[1..]);
        let later = now + DOWN_PERIOD + Duration::from_millis(1);
        assert_eq!(down.order(order.clone(), &[], later), order);
        down.mark(first, now);
        down.clear(first);
        assert!(!down.is_down(first, now));
    }

    #[test]
    fn skipped_addresses_are_left_out() {
        let v = view(3, 3);
        let order = v.keyed_order(b"k");
        let down = DownList::default();
        let rest = down.order(
            order.clone(),
            &[order[0].addr, order[2].addr],
            Instant::now(),
        );
        assert_eq!(rest, vec![order[1].clone()]);
    }

    #[test]
    fn down_list_is_bounded() {
        let down = DownList::default();
        let now = Instant::now();
        for port in 0..(MAX_DOWN_ENTRIES as u16 + 100) {
            down.mark(SocketAddr::from(([10, 0, 0, 1], port)), now);
        }
        assert_eq!(down.until.lock().unwrap().len(), MAX_DOWN_ENTRIES);
    }
}
