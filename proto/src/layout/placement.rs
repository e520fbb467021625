//! Placement under a layout history with more than one version in use: which nodes a
//! write must reach, which nodes a read asks, what a node holds, what it must fetch
//! before it counts as synced, and which versions nobody uses any more.
//!
//! The rules (see docs/ARCHITECTURE.md "Layout changes: placement, transfers, barriers"):
//!
//! - **Tracked members** are the members that own partitions in some kept version and
//!   are not removed in the current one. A removed member is dead for good: it is never
//!   waited for, so it cannot block a barrier.
//! - **Write sets**: the preference lists of a partition in *every* kept version (equal
//!   lists once). Not only those from `min_ack` on: nodes do not all see the same
//!   trackers at the same moment, and a node whose view of `min_sync` lags still reads
//!   from an older version's replicas, so a write must reach those until the version is
//!   pruned — which happens only once every node has said it reads from a newer one
//!   (`sync_ack`).
//! - **Read set**: the preference list in the newest kept version `v` whose tracked
//!   owners all have `sync >= v` (the oldest kept version when none is): reads move to
//!   new owners only once they hold the partitions of `v` in full. A node records the
//!   version it reads from as its `sync_ack`.
//! - A node **holds** a partition if it is in its preference list in any kept version.
//! - **Pruning** drops the versions older than `min_sync_ack`: every tracked node then
//!   reads from a version at least that new, so nobody reads an older one.
//! - A node syncs versions in order (`sync = v` means it holds its partitions of every
//!   kept version up to `v`), and starts syncing `v` only once `min_ack >= v`: every
//!   coordinator then writes to `v`'s replicas, so a transfer that starts after that
//!   misses nothing written later.

use std::collections::BTreeSet;

use shoal_ring::{NodeId, PartitionId};

use super::{Layout, LayoutHistory, MemberState, Tracker};

/// What a node must fetch to count as synced for a version: one partition and the old
/// replicas it is pulled from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncNeed {
    /// The partition the node replicates in the version but not in the one before.
    pub partition: PartitionId,
    /// Its replicas in the older kept versions, the node itself and removed members
    /// excluded: the node pulls from every one of them, so that a source that missed a
    /// write cannot make it miss one (a quorum-acknowledged write is on W of each old
    /// replica set, and each of those is asked).
    pub sources: Vec<NodeId>,
}

impl LayoutHistory {
    /// The members that trackers are waited for: those owning partitions in some kept
    /// version, less those removed in the current version.
    pub fn tracked(&self) -> BTreeSet<NodeId> {
        let current = self.current();
        self.versions()
            .iter()
            .flat_map(Layout::owners)
            .map(|m| m.id.clone())
            .filter(|id| {
                current
                    .member(id)
                    .is_none_or(|m| m.state != MemberState::Removed)
            })
            .collect()
    }

    /// The smallest value of tracker `which` over the tracked members (0 for a member
    /// that has none yet), or the current version when nobody is tracked.
    pub fn min_tracker(&self, which: Tracker) -> u64 {
        let map = match which {
            Tracker::Ack => self.acks(),
            Tracker::Sync => self.syncs(),
            Tracker::SyncAck => self.sync_acks(),
        };
        self.tracked()
            .iter()
            .map(|id| map.get(id).copied().unwrap_or(0))
            .min()
            .unwrap_or_else(|| self.version())
    }

    /// The oldest version some tracked member may still coordinate under.
    pub fn min_ack(&self) -> u64 {
        self.min_tracker(Tracker::Ack)
    }

    /// The newest version every tracked member holds in full.
    pub fn min_sync(&self) -> u64 {
        self.min_tracker(Tracker::Sync)
    }

    /// The newest version every tracked member knows all have synced.
    pub fn min_sync_ack(&self) -> u64 {
        self.min_tracker(Tracker::SyncAck)
    }

    /// Whether reads may use version `v`: every tracked member that replicates
    /// partitions in `v` holds them in full (`sync >= v`). Members that own partitions
    /// only in newer versions do not matter for reading `v`, so a node that learns a
    /// newer version never moves its reads back to an older one.
    pub fn readable(&self, v: u64) -> bool {
        let Some(layout) = self.get(v) else {
            return false;
        };
        let tracked = self.tracked();
        layout
            .owners()
            .filter(|m| tracked.contains(&m.id))
            .all(|m| self.syncs().get(&m.id).copied().unwrap_or(0) >= v)
    }

    /// The version reads use: the newest kept one that is
    /// [`readable`](LayoutHistory::readable), or the oldest kept one.
    pub fn read_version(&self) -> &Layout {
        self.versions()
            .iter()
            .rev()
            .find(|l| self.readable(l.version()))
            .unwrap_or(&self.versions()[0])
    }

    /// The replicas a read of `partition` asks (its preference list of size `n` in
    /// [`LayoutHistory::read_version`]).
    pub fn read_set(&self, partition: PartitionId, n: usize) -> Vec<NodeId> {
        self.read_version()
            .ring()
            .preference_list(partition, n)
            .nodes
    }

    /// The replica sets a write of `partition` must reach its quorum in: the preference
    /// list of size `n` in every kept version, oldest first, equal lists once.
    pub fn write_sets(&self, partition: PartitionId, n: usize) -> Vec<Vec<NodeId>> {
        let mut sets: Vec<Vec<NodeId>> = Vec::new();
        for l in self.versions() {
            let set = l.ring().preference_list(partition, n).nodes;
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        sets
    }

    /// The nodes of every write set of `partition`, each once: current version first
    /// (in its preference order), then those only older versions have.
    pub fn write_union(&self, partition: PartitionId, n: usize) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = Vec::new();
        for set in self.write_sets(partition, n).into_iter().rev() {
            for node in set {
                if !all.contains(&node) {
                    all.push(node);
                }
            }
        }
        all
    }

    /// Whether `node` replicates `partition` in some kept version: it accepts replica
    /// writes, reads and anti-entropy for it, and keeps its data.
    pub fn holds(&self, node: &NodeId, partition: PartitionId, n: usize) -> bool {
        self.versions()
            .iter()
            .any(|l| l.ring().preference_list(partition, n).contains(node))
    }

    /// The partitions `node` holds in some kept version, in partition order.
    pub fn held_partitions(&self, node: &NodeId, n: usize) -> BTreeSet<PartitionId> {
        self.versions()
            .iter()
            .flat_map(|l| l.ring().replica_partitions(node, n))
            .collect()
    }

    /// What `node` must pull to be synced for version `v`: each partition it replicates
    /// in `v` but not in `v - 1`, with its replicas in the kept versions older than `v`
    /// (`node` and members removed in the current version excluded). Empty when `v` is
    /// not kept, or is the oldest kept version (nothing older to pull from).
    pub fn sync_needs(&self, node: &NodeId, v: u64, n: usize) -> Vec<SyncNeed> {
        let Some(layout) = self.get(v) else {
            return Vec::new();
        };
        let older: Vec<&Layout> = self.versions().iter().filter(|l| l.version() < v).collect();
        let Some(previous) = older.last() else {
            return Vec::new();
        };
        let current = self.current();
        let removed = |id: &NodeId| {
            current
                .member(id)
                .is_some_and(|m| m.state == MemberState::Removed)
        };
        let mut needs = Vec::new();
        for partition in layout.ring().replica_partitions(node, n) {
            if previous.ring().preference_list(partition, n).contains(node) {
                continue;
            }
            let mut sources: Vec<NodeId> = Vec::new();
            for l in older.iter().rev() {
                for s in l.ring().preference_list(partition, n).nodes {
                    if &s != node && !removed(&s) && !sources.contains(&s) {
                        sources.push(s);
                    }
                }
            }
            needs.push(SyncNeed { partition, sources });
        }
        needs
    }

    /// Drops the versions older than [`LayoutHistory::min_sync_ack`] (never the
    /// current one). Whether any was dropped.
    pub fn prune(&mut self) -> bool {
        let keep_from = self.min_sync_ack().min(self.version());
        let before = self.versions.len();
        self.versions.retain(|l| l.version() >= keep_from);
        self.versions.len() != before
    }
}

#[cfg(test)]
mod tests;
