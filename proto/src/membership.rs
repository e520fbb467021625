//! Membership and failure detection, as one node sees the cluster.
//!
//! Members and their addresses come from the cluster config; the ring is computed from
//! them. Each node gossips its view (members, addresses, heartbeat counters, ring version)
//! to one random peer every `gossip_interval`, so that views converge and a later issue
//! can add joins and leaves.
//!
//! # Failure detection
//!
//! Local and direct: every peer is probed every `probe_interval`, and every
//! node-to-node request (probe, gossip, replication, forward, ...) reports its outcome.
//! A peer is marked `Down` when **both** hold:
//!
//! - its last `failure_threshold` contacts failed, with no success in between; and
//! - nothing has been heard from it for at least `down_after` (monotonic time).
//!
//! Any success (an answer, or a request from the peer) marks it `Up` at once and resets
//! both. Why this and not a single failure: one lost packet, one request refused by an
//! overloaded transport, or one slow answer would otherwise route every request around
//! a live peer (and stop anti-entropy and reaping with it) until the next probe; under a
//! hostile client's load that flapping made the good client see `Unavailable`. Why both
//! conditions: the count alone is reached at once when many requests in flight fail
//! together in one overloaded instant; the silence alone says nothing while requests
//! are merely in flight. Why not phi accrual: probes go out on the engine's own fixed
//! interval, so inter-arrival times mostly measure our own timer, and every contact ends
//! in an explicit outcome (each send has a timeout); counting outcomes gives a bound
//! that can be stated and tested: a paused peer last heard at `t` is `Down` once
//! `failure_threshold` probes sent after `t` have timed out and `t + down_after` has
//! passed — with the defaults (probes every 500 ms, 1 s timeout, 3 failures, 2 s) about
//! 2.5 s after it stopped, well within a few seconds.
//!
//! Routing around a peer that failed one request still happens per request: the quorum
//! code replaces a failed target by a fallback for that request; only the cluster-wide
//! `Down` verdict waits for the detector.
//!
//! Gossiped heartbeats are carried for visibility but do not decide liveness: a peer
//! alive for others but unreachable from here must still be routed around here.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_ring::NodeId;

use crate::config::MembershipConfig;
use crate::time::Monotonic;
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
    pub heartbeat_seen: Monotonic,
    /// Liveness as decided by direct contact.
    pub state: MemberState,
    /// When the state last changed.
    pub since: Monotonic,
    /// Failed contacts since the last success.
    pub failures: u32,
    /// When a contact with it last succeeded (or when the view was created).
    pub last_heard: Monotonic,
}

impl MemberView {
    /// A member listening at `addr` that nothing is known of yet: presumed `Up` and
    /// heard from at `now`.
    fn fresh(addr: SocketAddr, now: Monotonic) -> MemberView {
        MemberView {
            addr,
            heartbeat: 0,
            heartbeat_seen: now,
            state: MemberState::Up,
            since: now,
            failures: 0,
            last_heard: now,
        }
    }
}

/// The member table and failure detector of one node.
#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeId,
    ring_version: u64,
    heartbeat: u64,
    members: BTreeMap<NodeId, MemberView>,
    unknown_gossip: u64,
    failure_threshold: u32,
    down_after: std::time::Duration,
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
    /// A view of `members` (the local node included), all presumed `Up` (and heard
    /// from) at `now`, with the failure detector's settings from `cfg`.
    pub fn new(
        me: NodeId,
        ring_version: u64,
        members: impl IntoIterator<Item = (NodeId, SocketAddr)>,
        now: Monotonic,
        cfg: &MembershipConfig,
    ) -> Membership {
        let members = members
            .into_iter()
            .map(|(id, addr)| (id, MemberView::fresh(addr, now)))
            .collect();
        Membership {
            me,
            ring_version,
            heartbeat: 0,
            members,
            unknown_gossip: 0,
            failure_threshold: cfg.failure_threshold.max(1),
            down_after: cfg.down_after,
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

    /// A direct contact with `id` succeeded (an answer from it, or a request from it):
    /// it is `Up` at once.
    pub fn report_success(&mut self, id: &NodeId, now: Monotonic) -> Option<StateChange> {
        let m = self.peer_mut(id)?;
        m.failures = 0;
        m.last_heard = m.last_heard.max(now);
        self.set_state(id, MemberState::Up, now)
    }

    /// A direct contact with `id` could not reach it, was lost or timed out. It is
    /// marked `Down` only when this makes `failure_threshold` failures in a row and
    /// nothing was heard from it for `down_after` (see the module documentation).
    pub fn report_failure(&mut self, id: &NodeId, now: Monotonic) -> Option<StateChange> {
        let (threshold, down_after) = (self.failure_threshold, self.down_after);
        let m = self.peer_mut(id)?;
        m.failures = m.failures.saturating_add(1);
        if m.failures >= threshold && now.saturating_since(m.last_heard) >= down_after {
            self.set_state(id, MemberState::Down, now)
        } else {
            None
        }
    }

    /// Failed contacts with `id` since the last success (0 for the local node or a
    /// stranger).
    pub fn failures(&self, id: &NodeId) -> u32 {
        self.members.get(id).map_or(0, |m| m.failures)
    }

    fn peer_mut(&mut self, id: &NodeId) -> Option<&mut MemberView> {
        if *id == self.me {
            return None;
        }
        self.members.get_mut(id)
    }

    fn set_state(
        &mut self,
        id: &NodeId,
        state: MemberState,
        now: Monotonic,
    ) -> Option<StateChange> {
        let m = self.peer_mut(id)?;
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

    /// Follows a new layout version: `members` (the local node included when it is a
    /// member) become the view. Members already known keep their state and failure
    /// count (only their address is updated); new ones start `Up` at `now`; those no
    /// longer listed are dropped.
    pub fn set_members(
        &mut self,
        ring_version: u64,
        members: impl IntoIterator<Item = (NodeId, SocketAddr)>,
        now: Monotonic,
    ) {
        let mut next = BTreeMap::new();
        for (id, addr) in members {
            let view = match self.members.remove(&id) {
                Some(mut v) => {
                    v.addr = addr;
                    v
                }
                None => MemberView::fresh(addr, now),
            };
            next.insert(id, view);
        }
        self.members = next;
        self.ring_version = ring_version;
    }

    /// Start a gossip round: advance the local heartbeat and return the digest to send.
    pub fn next_round(&mut self, now: Monotonic) -> GossipDigest {
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
    pub fn merge(&mut self, digest: &GossipDigest, now: Monotonic) {
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
    use std::time::Duration;

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
            Monotonic::ZERO,
            &MembershipConfig::default(),
        )
    }

    fn at_ms(ms: u64) -> Monotonic {
        Monotonic::from_micros(ms * 1000)
    }

    #[test]
    fn one_failed_contact_does_not_mark_a_peer_down() {
        let mut m = three();
        assert!(m.is_up(&id("b")));
        assert!(m.report_failure(&id("b"), at_ms(10_000)).is_none());
        assert!(m.is_up(&id("b")), "one failure, even after a long quiet");
        assert_eq!(m.failures(&id("b")), 1);
        assert_eq!(m.count(MemberState::Down), 0);
    }

    #[test]
    fn k_failures_in_a_row_after_a_silence_mark_it_down_and_a_success_brings_it_back() {
        let d = MembershipConfig::default();
        let mut m = three();
        let t = |ms| at_ms(ms);
        m.report_success(&id("b"), t(1_000));
        for i in 1..d.failure_threshold {
            assert!(m
                .report_failure(&id("b"), t(1_000 + 1_000 * u64::from(i)))
                .is_none());
        }
        let last = t(1_000) + d.down_after;
        let change = m.report_failure(&id("b"), last).unwrap();
        assert_eq!(change.state, MemberState::Down);
        assert!(!m.is_up(&id("b")));
        assert_eq!(m.get(&id("b")).unwrap().since, last);
        assert_eq!(m.count(MemberState::Down), 1);
        assert!(m.report_failure(&id("b"), last + d.down_after).is_none());
        let back = m.report_success(&id("b"), last + d.down_after).unwrap();
        assert_eq!(back.state, MemberState::Up);
        assert!(m.is_up(&id("b")));
        assert_eq!(m.failures(&id("b")), 0);
        // The count starts again from zero: one more failure is not enough.
        assert!(m
            .report_failure(&id("b"), last + d.down_after * 4)
            .is_none());
        assert!(m.is_up(&id("b")));
    }

    #[test]
    fn a_burst_of_failures_within_the_silence_bound_does_not_mark_it_down() {
        let d = MembershipConfig::default();
        let mut m = three();
        m.report_success(&id("b"), at_ms(5_000));
        // Fifty requests in flight fail in the same overloaded instant.
        for i in 0..50 {
            assert!(m.report_failure(&id("b"), at_ms(5_000 + i)).is_none());
        }
        assert!(m.is_up(&id("b")));
        // The next failure once the silence has lasted `down_after` does.
        let change = m.report_failure(&id("b"), at_ms(5_000) + d.down_after);
        assert_eq!(change.map(|c| c.state), Some(MemberState::Down));
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let mut m = three();
        for round in 0..10u64 {
            let base = 10_000 * (round + 1);
            m.report_failure(&id("b"), at_ms(base));
            m.report_failure(&id("b"), at_ms(base + 3_000));
            m.report_success(&id("b"), at_ms(base + 6_000));
        }
        assert!(m.is_up(&id("b")), "two failures in a row never reach three");
    }

    #[test]
    fn failures_below_the_threshold_never_mark_it_down_however_long_the_silence() {
        let mut m = three();
        let d = MembershipConfig::default();
        let late = at_ms(60_000);
        for i in 1..d.failure_threshold {
            assert!(m.report_failure(&id("b"), late).is_none(), "failure {i}");
        }
        assert!(m
            .report_failure(&id("b"), late + Duration::from_millis(1))
            .is_some());
    }

    #[test]
    fn the_local_node_is_always_up() {
        let mut m = three();
        for i in 0..10 {
            assert!(m.report_failure(&id("a"), at_ms(10_000 * i)).is_none());
        }
        assert!(m.is_up(&id("a")));
    }

    #[test]
    fn gossip_advances_heartbeats_and_ignores_strangers() {
        let mut a = three();
        let mut b = three_as("b");
        let d = a.next_round(Monotonic::ZERO);
        b.merge(&d, at_ms(5));
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
            Monotonic::ZERO,
        );
        assert_eq!(b.unknown_gossip(), 1);
        assert!(!b.contains(&id("zz")));
    }
}
