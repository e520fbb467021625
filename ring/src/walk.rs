//! Preference lists: walking the ring clockwise from a partition.
//!
//! The walk visits the owners of `p, p + 1, ...` (mod Q) and keeps each node the first time it
//! appears; that distinct order is the ring's *clockwise order from p*. The preference list of
//! size `n` takes `m = min(n, S)` nodes from it:
//!
//! 1. zone pass: nodes whose zone is not yet covered, in clockwise order, until
//!    `z = min(n, zones)` zones are covered;
//! 2. fill: the nodes skipped so far, then later ones, in clockwise order, until there are `m`.
//!
//! So the list always holds `m` distinct nodes, its first `z` nodes are in `z` distinct zones
//! (all `m` of them when at least `n` zones exist), the partition's owner comes first, and
//! with no zones (every node its own zone) it is Dynamo's "first N distinct owners". The
//! fallbacks are the remaining nodes in clockwise order.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;
use crate::partition::PartitionId;

/// The `n` nodes that store a partition, in order: the first is the partition's owner and the
/// usual coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceList {
    /// The partition the list is for.
    pub partition: PartitionId,
    /// The replicas, distinct, in preference order.
    pub nodes: Vec<NodeId>,
}

impl PreferenceList {
    /// Whether `node` is one of the replicas.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.nodes.contains(node)
    }

    /// Where `node` is in the list, if it is there.
    pub fn position(&self, node: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n == node)
    }

    /// The number of replicas: `min(n, members)`.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the list is empty (only when asked for 0 replicas).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The replicas in preference order.
    pub fn iter(&self) -> std::slice::Iter<'_, NodeId> {
        self.nodes.iter()
    }
}

impl<'a> IntoIterator for &'a PreferenceList {
    type Item = &'a NodeId;
    type IntoIter = std::slice::Iter<'a, NodeId>;

    fn into_iter(self) -> Self::IntoIter {
        self.nodes.iter()
    }
}

/// A set of member indices; inline for rings of up to 256 members, so the hot path
/// (a preference list per request) does not allocate for it.
enum SeenSet {
    Inline([u64; 4]),
    Heap(Vec<u64>),
}

impl SeenSet {
    fn new(members: usize) -> Self {
        if members <= 256 {
            SeenSet::Inline([0; 4])
        } else {
            SeenSet::Heap(vec![0; members.div_ceil(64)])
        }
    }

    /// Adds `m`; returns whether it was new.
    fn insert(&mut self, m: u32) -> bool {
        let words: &mut [u64] = match self {
            SeenSet::Inline(words) => words,
            SeenSet::Heap(words) => words,
        };
        let (word, bit) = ((m / 64) as usize, 1u64 << (m % 64));
        let new = words[word] & bit == 0;
        words[word] |= bit;
        new
    }
}

/// The distinct owners clockwise from a partition, each once, in order of first appearance.
pub(crate) struct DistinctOwners<'a> {
    owners: &'a [u32],
    next: usize,
    steps_left: usize,
    found_left: usize,
    seen: SeenSet,
}

impl<'a> DistinctOwners<'a> {
    /// Walks `owners` (a layout of `members` members, each owning at least one partition) from
    /// partition `start`.
    pub(crate) fn new(owners: &'a [u32], members: usize, start: usize) -> Self {
        DistinctOwners {
            owners,
            next: start,
            steps_left: owners.len(),
            found_left: members,
            seen: SeenSet::new(members),
        }
    }
}

impl Iterator for DistinctOwners<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        while self.found_left > 0 && self.steps_left > 0 {
            let owner = self.owners[self.next];
            self.next = (self.next + 1) % self.owners.len();
            self.steps_left -= 1;
            if self.seen.insert(owner) {
                self.found_left -= 1;
                return Some(owner);
            }
        }
        None
    }
}

/// Picks the preference list out of the clockwise order, one node at a time.
pub(crate) struct Selector<'a> {
    zone_of: &'a [u32],
    wanted: usize,
    zones_wanted: usize,
    /// The preference list so far, in preference order.
    pub(crate) picked: Vec<u32>,
    /// Nodes seen and not picked, in clockwise order: the fallbacks once the walk is done.
    pub(crate) skipped: VecDeque<u32>,
}

impl<'a> Selector<'a> {
    /// A selector for a list of `n` nodes among `zone_of.len()` members in `zone_count` zones.
    pub(crate) fn new(zone_of: &'a [u32], zone_count: usize, n: usize) -> Self {
        let wanted = n.min(zone_of.len());
        Selector {
            zone_of,
            wanted,
            zones_wanted: n.min(zone_count),
            picked: Vec::with_capacity(wanted),
            skipped: VecDeque::new(),
        }
    }

    /// Whether the preference list is complete.
    pub(crate) fn is_full(&self) -> bool {
        self.picked.len() >= self.wanted
    }

    /// Offers the next node in clockwise order.
    pub(crate) fn offer(&mut self, node: u32) {
        if self.is_full() {
            self.skipped.push_back(node);
        } else if self.picked.len() < self.zones_wanted {
            // Zone pass: everything picked so far is in distinct zones.
            let zone = self.zone_of[node as usize];
            if self
                .picked
                .iter()
                .any(|&p| self.zone_of[p as usize] == zone)
            {
                self.skipped.push_back(node);
                return;
            }
            self.picked.push(node);
            if self.picked.len() == self.zones_wanted {
                while !self.is_full() {
                    match self.skipped.pop_front() {
                        Some(earlier) => self.picked.push(earlier),
                        None => break,
                    }
                }
            }
        } else {
            self.picked.push(node);
        }
    }
}
