//! Restore mode: how a node restored from a backup catches up without bringing back
//! anything deleted since the backup.
//!
//! A backup may be older than `replication.tombstone_grace`: values it holds may have
//! been deleted since, and their tombstones reaped on every other replica. Merging the
//! restored copies with the other replicas (normal anti-entropy, read repair, serving
//! reads and writes) would then spread those values again. So a node opened from a
//! backup ([`Engine::begin_restore`]) serves nothing until, for each partition it
//! replicates, one anti-entropy exchange with another primary of the partition has
//! succeeded in which **the peer's copy wins every difference**
//! ([`crate::merkle::Exchange::start_peer_wins`]): a key only we hold is deleted, a key
//! held differently is overwritten with the peer's object (not merged), a key only the
//! peer holds is copied in. Afterwards our copy of every key is one the peer held, so
//! nothing comes back that the rest of the cluster does not still have. This also
//! covers a backup taken while its node lagged behind a delete (its copy loses to the
//! peer's tombstone, or to the peer's lack of the key once the tombstone was reaped).
//!
//! Meanwhile the node coordinates no data request: a client's read, write or delete sent
//! to it is forwarded to another primary of the key (as a node that is not a replica
//! does), and one forwarded to it is refused with [`RequestError::Declined`], on
//! which the forwarder tries its next replica. It refuses replica reads, writes, hints and
//! anti-entropy messages from peers with [`RequestError::ShuttingDown`] too:
//! coordinators treat it like a down replica (sloppy quorum, hints kept for later), and
//! no peer's exchange merges our old copies into its own. It neither starts normal
//! exchanges nor reaps. Writes the cluster acknowledges meanwhile reach the node later
//! through hints and anti-entropy.
//!
//! Progress is kept in memory only: a node that stops mid-restore starts the whole
//! restore again (the driver keeps the restore marker until [`Engine::restoring`] turns
//! false), which is safe, since a peer-wins exchange can be repeated.

use std::collections::BTreeSet;

use shoal_ring::{NodeId, PartitionId};

use super::Engine;

/// Restore-mode state of an engine.
#[derive(Debug, Default)]
pub(super) struct Restore {
    /// Partitions whose peer-wins exchange has not succeeded yet.
    left: BTreeSet<PartitionId>,
}

impl Engine {
    /// Put this engine in restore mode (see the module documentation): call it once,
    /// right after [`Engine::new`], on a node whose store was restored from a backup.
    pub fn begin_restore(&mut self) {
        let left: BTreeSet<PartitionId> = self.replica_partitions.iter().copied().collect();
        self.restore = Some(Restore { left });
        self.restore_tick();
    }

    /// Whether the engine is still in restore mode: it serves normally once every
    /// partition it replicates had its peer-wins exchange.
    pub fn restoring(&self) -> bool {
        self.restore.is_some()
    }

    /// Partitions whose peer-wins exchange has not succeeded yet (0 outside restore mode).
    pub fn restore_partitions_left(&self) -> usize {
        self.restore.as_ref().map_or(0, |r| r.left.len())
    }

    /// Start peer-wins exchanges for the partitions left, up to
    /// `aae.max_concurrent_exchanges` at a time; end restore mode when none is left.
    /// Called on every anti-entropy tick and when an exchange succeeds: a partition whose
    /// exchange failed is tried again at the next tick (at most one attempt per tick).
    pub(super) fn restore_tick(&mut self) {
        let Some(restore) = &self.restore else {
            return;
        };
        if restore.left.is_empty() {
            self.restore = None;
            self.report_restore();
            return;
        }
        let left: Vec<PartitionId> = restore.left.iter().copied().collect();
        let running = self.aae.peer_wins_running();
        let mut done = Vec::new();
        for p in left {
            if running.contains(&p) {
                continue;
            }
            let peers: Vec<NodeId> = self
                .primaries(p)
                .into_iter()
                .filter(|n| *n != self.me)
                .collect();
            if peers.is_empty() {
                // The only replica (N = 1): no other copy exists to lose against.
                done.push(p);
                continue;
            }
            if self.aae.running() >= self.cfg.aae.max_concurrent_exchanges {
                continue;
            }
            // The reachable peer least recently tried, so that a failing one is not
            // asked again while another could answer.
            let tried = |peer: &NodeId| {
                self.aae
                    .last
                    .get(&p)
                    .and_then(|m| m.get(peer))
                    .map(|r| r.at)
            };
            let Some(peer) = peers
                .into_iter()
                .filter(|n| self.membership.is_up(n))
                .min_by_key(tried)
            else {
                continue;
            };
            self.start_exchange(p, peer, true);
        }
        for p in done {
            self.on_restore_exchange(p, true);
        }
        self.report_restore();
    }

    /// A peer-wins exchange of `partition` ended.
    pub(super) fn on_restore_exchange(&mut self, partition: PartitionId, ok: bool) {
        let Some(restore) = &mut self.restore else {
            return;
        };
        if ok {
            restore.left.remove(&partition);
        }
        if restore.left.is_empty() {
            self.restore = None;
        }
        self.report_restore();
    }

    fn report_restore(&self) {
        metrics::gauge!(crate::metrics::RESTORE_PARTITIONS_LEFT)
            .set(self.restore_partitions_left() as f64);
    }
}
