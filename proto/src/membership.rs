//! Membership and failure detection, as one node sees the cluster.
//!
//! Members and their addresses come from the cluster config; the ring is computed from
//! them. Each node gossips its view (members, addresses, heartbeat counters, ring version)
//! to one random peer every `gossip_interval`, so that views converge and a later issue
//! can add joins and leaves.
//!
//! Failure detection is local and direct: every peer is probed every `probe_interval`,
//! and every node-to-node request reports its outcome. A peer whose last direct contact
//! failed is `Down` and is routed around at once; it is `Up` again as soon as a probe or
//! request succeeds. Gossiped heartbeats are carried for visibility but do not decide
//! liveness: a peer alive for others but unreachable from here must still be routed
//! around here.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_ring::NodeId;

use crate::time::Time;
use crate::wire::MemberState;

/// One member as carried in gossip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipEntry {
    /// The member.
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its heartbeat counter (incremented by itself every gossip round).
    pub heartbeat: u64,
}

/// A node's membership view, as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipDigest {
    /// The ring version the sender uses.
    pub ring_version: u64,
    /// Every member the sender knows.
    pub members: Vec<GossipEntry>,
}

/// What the local node knows of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Highest heartbeat seen (directly or through gossip).
    pub heartbeat: u64,
    /// When the heartbeat last advanced here.
    pub heartbeat_seen: Time,
    /// Liveness as decided by direct contact.
    pub state: MemberState,
    /// When the state last changed.
    pub since: Time,
}

/// The member table and failure detector of one node.
#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeId,
    ring_version: u64,
    heartbeat: u64,
    members: BTreeMap<NodeId, MemberView>,
    unknown_gossip: u64,
}

/// A member changed state (for metrics and logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The member.
    pub id: NodeId,
    /// Its new state.
    pub state: MemberState,
}

impl Membership {
    /// A view of `members` (the local node included), all presumed `Up` at `now`.
    pub fn new(
        me: NodeId,
        ring_version: u64,
        members: impl IntoIterator<Item = (NodeId, SocketAddr)>,
        now: Time,
    ) -> Membership {
        let members = members
            .into_iter()
            .map(|(id, addr)| {
                (
                    id,
                    MemberView {
                        addr,
                        heartbeat: 0,
                        heartbeat_seen: now,
                        state: MemberState::Up,
                        since: now,
                    },
                )
            })
            .collect();
        Membership {
            me,
            ring_version,
            heartbeat: 0,
            members,
            unknown_gossip: 0,
        }
    }

    /// The local node.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.members.contains_key(id)
    }

    /// Whether `id` is believed reachable (the local node always is).
    pub fn is_up(&self, id: &NodeId) -> bool {
        id == &self.me
            || self
                .members
                .get(id)
                .is_some_and(|m| m.state == MemberState::Up)
    }

    /// The member's view, if it is a member.
    pub fn get(&self, id: &NodeId) -> Option<&MemberView> {
        self.members.get(id)
    }

    /// Every member and its view, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &MemberView)> {
        self.members.iter()
    }

    /// Other members, in id order.
    pub fn peers(&self) -> impl Iterator<Item = &NodeId> {
        self.members.keys().filter(move |id| **id != self.me)
    }

    /// How many members are in each state (the local node counts as up).
    pub fn count(&self, state: MemberState) -> usize {
        self.members
            .keys()
            .filter(|id| (self.is_up(id)) == (state == MemberState::Up))
            .count()
    }

    /// Gossip messages from unknown nodes ignored so far.
    pub fn unknown_gossip(&self) -> u64 {
        self.unknown_gossip
    }

    /// A direct request to `id` succeeded.
    pub fn report_success(&mut self, id: &NodeId, now: Time) -> Option<StateChange> {
        self.set_state(id, MemberState::Up, now)
    }

    /// A direct request to `id` could not reach it or timed out.
    pub fn report_failure(&mut self, id: &NodeId, now: Time) -> Option<StateChange> {
        self.set_state(id, MemberState::Down, now)
    }

    fn set_state(&mut self, id: &NodeId, state: MemberState, now: Time) -> Option<StateChange> {
        if *id == self.me {
            return None;
        }
        let m = self.members.get_mut(id)?;
        if m.state == state {
            return None;
        }
        m.state = state;
        m.since = now;
        Some(StateChange {
            id: id.clone(),
            state,
        })
    }

    /// Start a gossip round: advance the local heartbeat and return the digest to send.
    pub fn next_round(&mut self, now: Time) -> GossipDigest {
        self.heartbeat += 1;
        if let Some(m) = self.members.get_mut(&self.me) {
            m.heartbeat = self.heartbeat;
            m.heartbeat_seen = now;
        }
        self.digest()
    }

    /// The current view as a digest.
    pub fn digest(&self) -> GossipDigest {
        GossipDigest {
            ring_version: self.ring_version,
            members: self
                .members
                .iter()
                .map(|(id, m)| GossipEntry {
                    id: id.clone(),
                    addr: m.addr,
                    heartbeat: if *id == self.me {
                        self.heartbeat
                    } else {
                        m.heartbeat
                    },
                })
                .collect(),
        }
    }

    /// Merge a peer's digest: heartbeats advance. Members this node does not know are
    /// ignored (joins are an explicit operation, not a side effect of gossip).
    pub fn merge(&mut self, digest: &GossipDigest, now: Time) {
        for e in &digest.members {
            if e.id == self.me {
                continue;
            }
            match self.members.get_mut(&e.id) {
                Some(m) => {
                    if e.heartbeat > m.heartbeat {
                        m.heartbeat = e.heartbeat;
                        m.heartbeat_seen = now;
                    }
                }
                None => self.unknown_gossip += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn three() -> Membership {
        three_as("a")
    }

    fn three_as(me: &str) -> Membership {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Membership::new(
            id(me),
            1,
            [(id("a"), addr), (id("b"), addr), (id("c"), addr)],
            Time::ZERO,
        )
    }

    #[test]
    fn failure_routes_around_and_success_brings_back() {
        let mut m = three();
        assert!(m.is_up(&id("b")));
        let change = m.report_failure(&id("b"), Time::from_micros(10)).unwrap();
        assert_eq!(change.state, MemberState::Down);
        assert!(!m.is_up(&id("b")));
        assert_eq!(m.count(MemberState::Down), 1);
        assert!(m.report_failure(&id("b"), Time::from_micros(11)).is_none());
        m.report_success(&id("b"), Time::from_micros(12)).unwrap();
        assert!(m.is_up(&id("b")));
    }

    #[test]
    fn the_local_node_is_always_up() {
        let mut m = three();
        assert!(m.report_failure(&id("a"), Time::ZERO).is_none());
        assert!(m.is_up(&id("a")));
    }

    #[test]
    fn gossip_advances_heartbeats_and_ignores_strangers() {
        let mut a = three();
        let mut b = three_as("b");
        let d = a.next_round(Time::ZERO);
        b.merge(&d, Time::from_micros(5));
        assert_eq!(b.get(&id("a")).unwrap().heartbeat, 1);
        let addr: SocketAddr = "127.0.0.1:2".parse().unwrap();
        b.merge(
            &GossipDigest {
                ring_version: 1,
                members: vec![GossipEntry {
                    id: id("zz"),
                    addr,
                    heartbeat: 9,
                }],
            },
            Time::ZERO,
        );
        assert_eq!(b.unknown_gossip(), 1);
        assert!(!b.contains(&id("zz")));
    }
}
