//! The engine under a layout history with more than one version in use: what this node
//! holds, its own trackers (the barriers), partition transfers, pruning and dropping.
//!
//! Placement itself is [`LayoutHistory`]'s (see `crate::layout::placement`): writes
//! meet W in every kept version's replica set, reads use the newest version whose
//! owners all synced, a node holds a partition it replicates in any kept version.
//!
//! This node moves its own trackers forward, and only on facts it knows:
//!
//! - `ack[me] = v` once it has installed `v` and no operation it coordinates (write,
//!   read, forward) started under an older version is still in flight: from then on it
//!   coordinates only with `v`'s replica sets among its write sets.
//! - `sync[me] = v` once it holds in full every partition it replicates in `v` and did
//!   not in `v - 1`: it syncs versions in order, starting `v` only once every tracked
//!   member acknowledged `v` (`min_ack >= v`), so that every write from then on reaches
//!   it directly. A partition is pulled from EVERY old replica (removed members excepted)
//!   with an anti-entropy exchange ([`Engine::start_transfer_exchange`]): a stale source
//!   cannot hide a write that W of the old replicas acknowledged. The exchanges go
//!   through the anti-entropy admission control and repair rate, and are resumable after
//!   a crash of either side, since each starts again from the Merkle trees.
//! - `sync_ack[me]` = the version its reads use, once no read of an older version is in
//!   flight.
//!
//! Then it prunes the versions older than `min_sync_ack` and drops (deletes the key range
//! and tree of) every partition it holds in no kept version: the barrier. No step waits
//! on a timer. The trackers spread by [`PeerRequest::LayoutPush`] to a random peer on
//! each gossip round while more than one version is in use.

use std::collections::{BTreeMap, BTreeSet};

use shoal_ring::{NodeId, PartitionId};

use super::{Engine, Waiter};
use crate::layout::{Layout, LayoutError, LayoutHistory, MemberState, Tracker};
use crate::storage_ops::{StorageOp, StorageResult};
use crate::wire::{PeerRequest, PeerResponse};

/// The sync of one layout version: the partitions left, each with the old replicas not
/// yet pulled from.
#[derive(Debug)]
struct SyncJob {
    version: u64,
    left: BTreeMap<PartitionId, BTreeSet<NodeId>>,
    /// Partitions to pull when the job started (done = total - left).
    total: usize,
    /// Bytes received by this job's transfer exchanges so far.
    bytes_done: u64,
}

/// Transfer and drop state of an engine.
#[derive(Debug, Default)]
pub(super) struct Placement {
    sync: Option<SyncJob>,
    /// Partitions whose [`StorageOp::DropPartition`] is in flight: refused for replica
    /// work until it is done, so that a write taken meanwhile is not deleted with them.
    pub(super) dropping: BTreeSet<PartitionId>,
    /// Partitions no longer held whose drop failed: tried again at the next tick.
    to_drop: BTreeSet<PartitionId>,
    done: u64,
    /// Storage ops in flight that change each partition's data: storage may carry out
    /// ops in another order than issued, so a drop issued before such an op landed
    /// could leave its data behind.
    writes_in_flight: BTreeMap<PartitionId, usize>,
    /// Partitions in `dropping` whose drop waits for their writes in flight to land.
    drop_deferred: BTreeSet<PartitionId>,
    /// The scan for leftover partitions ([`Engine::scan_leftovers`]) failed: it runs
    /// again at the next tick.
    rescan_leftovers: bool,
}

impl Placement {
    pub(super) fn write_issued(&mut self, p: PartitionId) {
        *self.writes_in_flight.entry(p).or_default() += 1;
    }
}

/// Creates the transfer counters at zero, so that they are exported (and a rate can be
/// taken) before the first layout change.
pub(super) fn register_metrics() {
    metrics::counter!(crate::metrics::TRANSFERS_DONE_TOTAL).increment(0);
    metrics::counter!(crate::metrics::TRANSFER_KEYS_TOTAL).increment(0);
    metrics::counter!(crate::metrics::TRANSFER_BYTES_TOTAL).increment(0);
    metrics::counter!(crate::metrics::TRANSFER_ERRORS_TOTAL).increment(0);
}

/// Transfer counters of an engine (for status, tests and the simulator).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// The layout version being synced (0: none).
    pub version: u64,
    /// Partitions left to pull for it.
    pub pending: usize,
    /// Transfer exchanges running now.
    pub running: usize,
    /// Partitions pulled in full since the engine started.
    pub done: u64,
    /// Partitions being dropped.
    pub dropping: usize,
}

impl Placement {
    /// A transfer exchange received `bytes` for the sync job in progress.
    pub(super) fn note_transfer_bytes(&mut self, bytes: u64) {
        if let Some(job) = self.sync.as_mut() {
            job.bytes_done += bytes;
        }
    }
}

impl Engine {
    /// Installs the next layout version `next` and acts on it: the entry point of a
    /// decided layout (the layout agreement calls it once a version is decided; the
    /// simulator calls it directly on every node).
    ///
    /// # Errors
    /// [`LayoutError::VersionMismatch`] unless `next` follows the current version, and
    /// [`LayoutError::Settings`] for another cluster's layout; nothing changed then.
    pub fn install_layout_version(&mut self, next: Layout) -> Result<(), LayoutError> {
        let before = self.layout.version();
        self.layout.push(next)?;
        self.layout_installed(before);
        Ok(())
    }

    /// Merges a peer's layout history (newer versions, larger trackers) and acts on it.
    /// Whether anything changed.
    ///
    /// # Errors
    /// [`LayoutError::Settings`] for another cluster's history; nothing changed then.
    pub fn merge_layout(&mut self, other: &LayoutHistory) -> Result<bool, LayoutError> {
        let before = self.layout.version();
        let changed = self.layout.merge(other)?;
        if changed {
            self.layout_installed(before);
        }
        Ok(changed)
    }

    /// Transfer counters.
    pub fn transfer_stats(&self) -> TransferStats {
        let (version, pending) = self
            .placement
            .sync
            .as_ref()
            .map_or((0, 0), |j| (j.version, j.left.len()));
        TransferStats {
            version,
            pending,
            running: self.aae.transfers_running(),
            done: self.placement.done,
            dropping: self.placement.dropping.len(),
        }
    }

    /// Whether this node still pulls `partition` for the layout version it syncs (its
    /// transfer of it has not completed).
    pub fn pulling(&self, partition: PartitionId) -> bool {
        self.placement
            .sync
            .as_ref()
            .is_some_and(|j| j.left.contains_key(&partition))
    }

    /// The (partition, member) pairs where the member still pulls the partition: it
    /// replicates it in a layout version in use newer than its `sync` tracker and did
    /// not in the version before (this node's own completed partitions excepted). A peer's
    /// tracker as seen here may lag behind the peer, never run ahead of it, so a pair
    /// is never missing from this set while its member still pulls.
    ///
    /// Regular anti-entropy leaves these pairs alone: the transfer fills the partition
    /// (and compares it with every source at the end), so an exchange of it would only
    /// push the same keys a second time, and new writes reach the member anyway (they
    /// go to the replicas of every version in use).
    pub(super) fn pulls_in_progress(&self) -> BTreeSet<(PartitionId, NodeId)> {
        let mut pairs = BTreeSet::new();
        if self.layout.versions().len() < 2 {
            return pairs;
        }
        let n = usize::from(self.cfg.replication.n);
        let syncs = self.layout.syncs();
        for member in self.layout.tracked() {
            let synced = syncs.get(&member).copied().unwrap_or(0);
            for layout in self.layout.versions() {
                let v = layout.version();
                if v <= synced {
                    continue;
                }
                let own_job = (member == self.me)
                    .then_some(self.placement.sync.as_ref())
                    .flatten()
                    .filter(|job| job.version == v);
                for need in self.layout.sync_needs(&member, v, n) {
                    let done = own_job.is_some_and(|job| !job.left.contains_key(&need.partition));
                    if !need.sources.is_empty() && !done {
                        pairs.insert((need.partition, member.clone()));
                    }
                }
            }
        }
        pairs
    }

    /// Whether this node is pulling partitions for a layout version.
    pub(super) fn syncing(&self) -> bool {
        self.placement.sync.is_some()
    }

    /// This node's transfers as `shoal cluster status` reports them: the partitions of
    /// the version it syncs not started, running and done, the bytes received, and the
    /// bytes left, estimated from the bytes per partition pulled so far, or before the
    /// first one is done from the key counts of the partitions it already holds in
    /// full (`summaries`, its tree summaries) × [`super::cluster::ESTIMATED_BYTES_PER_KEY`].
    pub(super) fn transfer_summary(
        &self,
        summaries: &[(PartitionId, u64, u64)],
    ) -> crate::wire::TransferSummary {
        let Some(job) = &self.placement.sync else {
            return crate::wire::TransferSummary::default();
        };
        let running: BTreeSet<PartitionId> = self
            .aae
            .pairs_running()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| job.left.contains_key(p))
            .collect();
        let left = job.left.len() as u64;
        let done = job.total.saturating_sub(job.left.len()) as u64;
        let per_partition = job.bytes_done.checked_div(done);
        let bytes_left = match per_partition {
            Some(bytes) => bytes * left,
            None => {
                let full: Vec<(PartitionId, u64, u64)> = summaries
                    .iter()
                    .filter(|(p, _, _)| !job.left.contains_key(p))
                    .copied()
                    .collect();
                let copies: Vec<(PartitionId, u64)> = job.left.keys().map(|p| (*p, 1)).collect();
                super::cluster::bytes_estimate(&copies, &full)
            }
        };
        crate::wire::TransferSummary {
            pending: left - running.len() as u64,
            running: running.len() as u64,
            done,
            bytes_done: job.bytes_done,
            bytes_left,
        }
    }

    /// The partitions this node holds (replicates in some kept version).
    pub fn held_partitions(&self) -> &[PartitionId] {
        &self.replica_partitions
    }

    /// Called by whoever changed `self.layout` (a new version, a merge from a peer):
    /// follows the members, moves this node's trackers, starts transfers, prunes, and
    /// drops what it no longer holds.
    pub(super) fn on_layout_changed(&mut self) {
        self.follow_members();
        // Each round can only raise trackers or prune; a few rounds reach the fixpoint.
        for _ in 0..8 {
            if !self.placement_round() {
                break;
            }
        }
        self.refresh_held();
        self.drive_transfers();
        metrics::gauge!(crate::metrics::LAYOUT_VERSION).set(self.layout.version() as f64);
    }

    /// On every anti-entropy tick: what an op ending or a transfer finishing could not
    /// do at once (a layout of one version with every tracker at it has nothing to do).
    pub(super) fn placement_tick(&mut self) {
        let v = self.layout.version();
        if std::mem::take(&mut self.placement.rescan_leftovers) {
            self.scan_leftovers();
        }
        let settled = self.layout.versions().len() == 1
            && self.placement.sync.is_none()
            && self.placement.to_drop.is_empty()
            && [Tracker::Ack, Tracker::Sync, Tracker::SyncAck]
                .iter()
                .all(|t| self.own(*t) >= v);
        if !settled {
            self.on_layout_changed();
        }
    }

    /// An operation started under layout version `started_under` ended: this node's
    /// `ack` may move on.
    pub(super) fn after_op_ended(&mut self, started_under: u64) {
        let moving = started_under < self.layout.version() || self.layout.versions().len() > 1;
        if moving && self.placement_round() {
            self.refresh_held();
        }
    }

    fn own(&self, which: Tracker) -> u64 {
        let map = match which {
            Tracker::Ack => self.layout.acks(),
            Tracker::Sync => self.layout.syncs(),
            Tracker::SyncAck => self.layout.sync_acks(),
        };
        map.get(&self.me).copied().unwrap_or(0)
    }

    /// The members of the kept versions that are not removed: who this node talks to.
    pub(super) fn follow_members(&mut self) {
        let current = self.layout.current();
        let mut members: BTreeMap<NodeId, std::net::SocketAddr> = BTreeMap::new();
        for l in self.layout.versions() {
            for m in l.members() {
                let removed = current
                    .member(&m.id)
                    .is_some_and(|c| c.state == MemberState::Removed);
                if !removed {
                    members.insert(m.id.clone(), m.addr);
                }
            }
        }
        let new: Vec<NodeId> = members
            .keys()
            .filter(|id| !self.membership.contains(id))
            .cloned()
            .collect();
        let unchanged = new.is_empty() && self.membership.iter().count() == members.len();
        if unchanged {
            return;
        }
        let version = self.layout.version();
        self.membership.set_members(version, members, self.mono);
        for p in new {
            metrics::gauge!(crate::metrics::HINTS_PENDING, "target" => p.to_string()).set(0.0);
            metrics::gauge!(crate::metrics::PEER_CONSECUTIVE_FAILURES, "peer" => p.to_string())
                .set(0.0);
        }
        self.publish_member_gauges();
    }

    /// One round of tracker moves and pruning; whether anything changed.
    fn placement_round(&mut self) -> bool {
        let me = self.me.clone();
        let v = self.layout.version();
        let mut changed = false;
        if self.own(Tracker::Ack) < v && !self.coordinating_older_than(v) {
            changed |= self.layout.advance(Tracker::Ack, &me, v);
        }
        changed |= self.sync_progress();
        let read = self
            .layout
            .read_version()
            .version()
            .min(self.oldest_read_in_flight());
        if read > self.own(Tracker::SyncAck) {
            changed |= self.layout.advance(Tracker::SyncAck, &me, read);
        }
        changed |= self.layout.prune();
        if changed {
            self.persist_layout();
        }
        changed
    }

    /// Whether an operation this node coordinates started under a version before `v`.
    fn coordinating_older_than(&self, v: u64) -> bool {
        self.writes.values().any(|o| o.started_under < v)
            || self.reads.values().any(|o| o.started_under < v)
            || self.forwards.values().any(|o| o.started_under < v)
    }

    /// The oldest layout version a read in flight reads from (`u64::MAX`: none).
    fn oldest_read_in_flight(&self) -> u64 {
        self.reads
            .values()
            .map(|o| o.read_version)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Moves `sync[me]` through the versions whose transfers are done (or need none),
    /// and starts the sync of the next one once every tracked member acknowledged it.
    fn sync_progress(&mut self) -> bool {
        let me = self.me.clone();
        let n = usize::from(self.cfg.replication.n);
        let mut changed = false;
        loop {
            let oldest = self.layout.versions()[0].version();
            let next = (self.own(Tracker::Sync) + 1).max(oldest);
            if next > self.layout.version() {
                self.placement.sync = None;
                break;
            }
            match &self.placement.sync {
                Some(job) if job.version == next && job.left.is_empty() => {
                    self.placement.sync = None;
                    changed |= self.layout.advance(Tracker::Sync, &me, next);
                    continue;
                }
                Some(job) if job.version == next => {
                    if self.forget_stale_sources(next) {
                        continue;
                    }
                    break;
                }
                _ => self.placement.sync = None,
            }
            if self.layout.min_ack() < next {
                break;
            }
            let left: BTreeMap<PartitionId, BTreeSet<NodeId>> = self
                .layout
                .sync_needs(&me, next, n)
                .into_iter()
                .filter(|need| !need.sources.is_empty())
                .map(|need| (need.partition, need.sources.into_iter().collect()))
                .collect();
            if left.is_empty() {
                changed |= self.layout.advance(Tracker::Sync, &me, next);
                continue;
            }
            self.placement.sync = Some(SyncJob {
                version: next,
                total: left.len(),
                left,
                bytes_done: 0,
            });
            break;
        }
        changed
    }

    /// Recomputes the partitions this node holds and drops those it no longer does.
    fn refresh_held(&mut self) {
        let n = usize::from(self.cfg.replication.n);
        let held = self.layout.held_partitions(&self.me, n);
        let before =
            std::mem::replace(&mut self.replica_partitions, held.iter().copied().collect());
        let mut drop: BTreeSet<PartitionId> = std::mem::take(&mut self.placement.to_drop);
        drop.extend(before.into_iter().filter(|p| !held.contains(p)));
        for p in drop {
            if held.contains(&p) || self.placement.dropping.contains(&p) {
                continue;
            }
            self.aae.forget_partition(p);
            self.placement.dropping.insert(p);
            if self.placement.writes_in_flight.contains_key(&p) {
                // Refused for new work from now on; dropped once the writes landed.
                self.placement.drop_deferred.insert(p);
                continue;
            }
            self.issue_drop(p);
        }
        if self.aae.reap_next >= self.replica_partitions.len() {
            self.aae.reap_next = 0;
        }
    }

    /// At start, asks storage which partitions this node does not hold still have keys:
    /// a node that stopped before a drop it had issued was carried out (or while it was
    /// down the cluster finished moving partitions away from it) would otherwise keep
    /// their data for good, since drops are issued when a partition stops being held.
    pub(super) fn scan_leftovers(&mut self) {
        let held: BTreeSet<PartitionId> = self.replica_partitions.iter().copied().collect();
        let partitions: Vec<PartitionId> = self
            .ring()
            .partitions()
            .filter(|p| !held.contains(p))
            .collect();
        if !partitions.is_empty() {
            self.storage(
                StorageOp::TreeSummaries { partitions },
                Waiter::LeftoverScan,
            );
        }
    }

    pub(super) fn on_leftover_scan(&mut self, result: StorageResult) {
        let summaries = match result {
            Ok(crate::storage_ops::StorageReply::TreeSummaries(summaries)) => summaries,
            Err(e) => {
                // The partitions left behind are known only from this scan (a drop that
                // failed before the restart was remembered in memory only).
                tracing::warn!(error = %e, "scanning for partitions no longer held failed; trying again at the next tick");
                self.placement.rescan_leftovers = true;
                return;
            }
            Ok(other) => {
                tracing::error!(
                    ?other,
                    "the scan for partitions no longer held got another reply"
                );
                return;
            }
        };
        let held: BTreeSet<PartitionId> = self.replica_partitions.iter().copied().collect();
        self.placement.to_drop.extend(
            summaries
                .into_iter()
                .filter(|(p, _, keys)| *keys > 0 && !held.contains(p))
                .map(|(p, _, _)| p),
        );
        self.refresh_held();
    }

    fn issue_drop(&mut self, p: PartitionId) {
        self.storage(
            StorageOp::DropPartition { partition: p },
            Waiter::DropPartition(p),
        );
    }

    /// A storage op that changed partition `p`'s data finished: the last one lets a
    /// deferred drop of `p` go.
    pub(super) fn write_landed(&mut self, p: PartitionId) {
        let placement = &mut self.placement;
        let Some(n) = placement.writes_in_flight.get_mut(&p) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            placement.writes_in_flight.remove(&p);
            if placement.drop_deferred.remove(&p) {
                self.issue_drop(p);
            }
        }
    }

    pub(super) fn on_partition_dropped(&mut self, partition: PartitionId, result: StorageResult) {
        self.placement.dropping.remove(&partition);
        if let Err(e) = result {
            tracing::warn!(%partition, error = %e, "dropping a partition no longer held failed; trying again");
            self.placement.to_drop.insert(partition);
        }
        // Held again meanwhile (moved away and back): its transfer may start now.
        self.drive_transfers();
    }

    /// Starts the transfer exchanges the sync job still needs, within the anti-entropy
    /// concurrency bound (at least one, even while the budget is low: a transfer is
    /// never starved for good).
    fn drive_transfers(&mut self) {
        let Some(job) = &self.placement.sync else {
            metrics::gauge!(crate::metrics::TRANSFERS_PENDING).set(0.0);
            metrics::gauge!(crate::metrics::TRANSFERS_RUNNING)
                .set(self.aae.transfers_running() as f64);
            return;
        };
        let pending = job.left.len();
        // One exchange per partition at a time: the first source sends the whole
        // partition, the next ones only what differs from it by then. Sources exchanged
        // at once would each send all of it.
        let mut busy: BTreeSet<PartitionId> = self
            .aae
            .pairs_running()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let wanted: Vec<(PartitionId, Vec<NodeId>)> = job
            .left
            .iter()
            .filter(|(p, _)| !self.placement.dropping.contains(p) && !busy.contains(p))
            .map(|(p, sources)| (*p, sources.iter().cloned().collect()))
            .collect();
        let limit = if self.aae.may_start() {
            self.cfg.aae.max_concurrent_exchanges
        } else {
            1
        };
        if !self.restoring() {
            for (p, sources) in wanted {
                if self.aae.running() >= limit && self.aae.transfers_running() > 0 {
                    break;
                }
                let up = sources.into_iter().find(|s| self.membership.is_up(s));
                if let Some(source) = up {
                    if busy.insert(p) {
                        self.start_transfer_exchange(p, source);
                    }
                }
            }
        }
        metrics::gauge!(crate::metrics::TRANSFERS_PENDING).set(pending as f64);
        metrics::gauge!(crate::metrics::TRANSFERS_RUNNING).set(self.aae.transfers_running() as f64);
    }

    /// Drops from the sync job of version `v` the sources that are no longer old
    /// replicas of their partition in a kept version: a version pruned while the job
    /// ran (every node synced a newer one, whose replicas hold what it held) lets its
    /// replicas drop the partition, and they refuse the exchange for good. A partition
    /// left without a source needs none. Whether the job is now empty.
    fn forget_stale_sources(&mut self, v: u64) -> bool {
        let n = usize::from(self.cfg.replication.n);
        let valid: BTreeMap<PartitionId, BTreeSet<NodeId>> = self
            .layout
            .sync_needs(&self.me, v, n)
            .into_iter()
            .map(|need| (need.partition, need.sources.into_iter().collect()))
            .collect();
        let Some(job) = self.placement.sync.as_mut() else {
            return false;
        };
        let before = job.left.len();
        job.left.retain(|p, sources| {
            sources.retain(|s| valid.get(p).is_some_and(|ok| ok.contains(s)));
            !sources.is_empty()
        });
        let finished = (before - job.left.len()) as u64;
        if finished > 0 {
            self.placement.done += finished;
            metrics::counter!(crate::metrics::TRANSFERS_DONE_TOTAL).increment(finished);
        }
        self.placement
            .sync
            .as_ref()
            .is_some_and(|j| j.left.is_empty())
    }

    /// A transfer exchange of `partition` with `source` ended.
    pub(super) fn on_transfer_exchange(
        &mut self,
        partition: PartitionId,
        source: &NodeId,
        ok: bool,
    ) {
        if !ok {
            metrics::counter!(crate::metrics::TRANSFER_ERRORS_TOTAL).increment(1);
            return;
        }
        let Some(job) = self.placement.sync.as_mut() else {
            return;
        };
        let Some(sources) = job.left.get_mut(&partition) else {
            return;
        };
        sources.remove(source);
        if sources.is_empty() {
            job.left.remove(&partition);
            self.placement.done += 1;
            metrics::counter!(crate::metrics::TRANSFERS_DONE_TOTAL).increment(1);
        }
        if job.left.is_empty() {
            self.on_layout_changed();
        } else {
            self.drive_transfers();
        }
    }

    /// Pushes this node's layout history to `to` (a gossip round's peer) while a change
    /// is in progress, so that trackers spread without waiting for a new version.
    pub(super) fn push_trackers(&mut self, to: NodeId) {
        let settled = self.layout.versions().len() == 1
            && self.layout.tracked().iter().all(|m| {
                [
                    self.layout.acks(),
                    self.layout.syncs(),
                    self.layout.sync_acks(),
                ]
                .iter()
                .all(|t| t.get(m).copied().unwrap_or(0) >= self.layout.version())
            });
        if settled {
            return;
        }
        let timeout = self.cfg.membership.probe_timeout;
        let history = Box::new(self.layout.clone());
        self.send(
            to,
            PeerRequest::LayoutPush(history),
            timeout,
            Waiter::LayoutPush,
        );
    }

    /// The answer to our push: the peer's history after its merge.
    pub(super) fn on_layout_push_reply(&mut self, result: Result<PeerResponse, super::SendError>) {
        if let Ok(PeerResponse::Layout(history)) = result {
            if let Err(e) = self.merge_layout(&history) {
                tracing::warn!(error = %e, "a peer answered a layout push with another cluster's layout");
            }
        }
    }
}
