//! Power cuts (issue 10, item 1): each node's storage syncs periodically, as a kernel
//! writes a `buffered` RocksDB WAL out of its page cache, and a power cut loses a suffix
//! of the writes not synced yet ([`MemStorage::power_cut`]).
//!
//! The scheduler's bound: a cut never takes the last copy of a write. Before it cuts a
//! node it looks at what the node's disk would hold afterwards and at every other node's
//! stored objects (running or down); if some sibling (a dot) the cut would lose is in no
//! other node's objects, the cut is vetoed and counted. Only copies on replicas of their
//! partition in the newest layout version any node knows count: an old owner drops a
//! partition once a change is done, so its copy does not keep a write (a W = 1 write
//! whose other copy was on the leaver was lost with it, seed 6481 of the layout-change
//! runs). Hints are not counted as copies:
//! they expire by design (a write whose other copy is a hint that expires before its
//! delivery is lost to the expiry as much as to the cut). So a write acknowledged by W
//! replicas loses fewer than W copies to power cuts, and what the cluster does afterwards
//! (merges, repairs, new writes) must keep it: `no_lost_writes` checks that.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use shoal_proto::{Dot, Object, Time};
use shoal_ring::PartitionId;
use shoal_storage::{partition_bounds, split_object_key, MemStorage, Space, Storage};

use super::config::{power_cut_rng, PowerCuts, EPOCH, POWER_CUT_STREAM};
use super::{Phase, Sim};

/// Rows per page when a store is read for its dots.
const PAGE: usize = 1024;

/// The power-cut side of a run: its RNG stream and each node's sync schedule.
pub(crate) struct PowerState {
    rng: ChaCha8Rng,
    cuts: PowerCuts,
    /// When each node's storage syncs next.
    next_sync: Vec<Time>,
}

impl PowerState {
    pub(crate) fn new(seed: u64, cuts: PowerCuts, nodes: usize) -> PowerState {
        let mut rng = power_cut_rng(seed, POWER_CUT_STREAM);
        let interval = cuts.sync_interval.as_micros() as u64;
        let next_sync = (0..nodes)
            .map(|_| {
                let phase = if interval == 0 {
                    0
                } else {
                    rng.random_range(0..interval)
                };
                EPOCH + Duration::from_micros(phase)
            })
            .collect();
        PowerState {
            rng,
            cuts,
            next_sync,
        }
    }
}

/// Every sibling's dot in `store`'s objects.
fn held_dots(store: &MemStorage) -> BTreeSet<Dot> {
    held_dots_where(store, |_| true)
}

/// The dots of `store`'s objects in the partitions `counts` takes.
fn held_dots_where(store: &MemStorage, counts: impl Fn(PartitionId) -> bool) -> BTreeSet<Dot> {
    let mut out = BTreeSet::new();
    let mut start = Vec::new();
    loop {
        let rows = store
            .scan(Space::Objects, &start, None, PAGE)
            .expect("a node's data handle is never closed");
        for (raw, value) in &rows {
            let counted = split_object_key(raw).is_none_or(|(p, _)| counts(p));
            if !counted {
                continue;
            }
            if let Ok(object) = Object::decode(value) {
                out.extend(object.siblings().iter().map(|s| s.dot));
            }
        }
        match rows.last() {
            Some((key, _)) if rows.len() == PAGE => {
                start = key.clone();
                start.push(0);
            }
            _ => break,
        }
    }
    out
}

impl Sim {
    /// The ring of the newest layout version any running node knows (`None` when none
    /// runs).
    fn newest_layout_ring(&self) -> Option<shoal_ring::Ring> {
        self.nodes
            .iter()
            .filter_map(|node| node.running.as_ref())
            .map(|r| r.engine.layout().current())
            .max_by_key(|l| l.version())
            .map(|l| l.ring().clone())
    }

    /// At boot, after every node started: the run begins from a cluster that has been up
    /// a while, whose stores are on disk.
    pub(super) fn sync_all(&mut self) {
        for node in &self.nodes {
            node.disk().sync();
        }
    }

    /// Node `i`'s storage syncs if one of its sync instants has passed. Called before
    /// every write to it and before a cut, so the writes it makes durable are exactly
    /// those made before the instant.
    pub(super) fn sync_due(&mut self, i: usize) {
        let interval = self.power.cuts.sync_interval;
        if interval.is_zero() || self.now < self.power.next_sync[i] {
            return;
        }
        self.nodes[i].disk().sync();
        let next = &mut self.power.next_sync[i];
        let behind = self.now.saturating_since(*next).as_micros() as u64;
        let steps = behind / interval.as_micros() as u64 + 1;
        *next = *next + interval * u32::try_from(steps).unwrap_or(u32::MAX);
    }

    /// At a fault tick: maybe cut the power of a running node (at most two nodes down at
    /// once, one in a 3-node cluster, as for crashes).
    pub(super) fn power_cut_tick(&mut self) {
        let p = self.power.cuts.per_tick;
        if p <= 0.0 || !self.power.rng.random_bool(p) {
            return;
        }
        let k = self.nodes.len();
        let up: Vec<usize> = (0..k).filter(|&i| self.nodes[i].is_up()).collect();
        let max_down = (k - 1).min(2);
        if k - up.len() < max_down && !up.is_empty() {
            let victim = up[self.power.rng.random_range(0..up.len())];
            self.power_cut(victim, None, None);
        }
    }

    /// Cut node `i`'s power: it crashes, and its disk keeps `keep` of its unsynced writes
    /// (`None`: a random prefix); it restarts after `down` (`None`: a random while).
    /// Vetoed when it would take the last copy of a sibling.
    pub(super) fn power_cut(&mut self, i: usize, down: Option<Duration>, keep: Option<usize>) {
        if self.phase != Phase::Safety || !self.nodes[i].is_up() {
            return;
        }
        self.sync_due(i);
        let disk = self.nodes[i].disk();
        let unsynced = disk.unsynced_writes();
        let keep = match keep {
            Some(k) => k.min(unsynced),
            None => self.power.rng.random_range(0..=unsynced),
        };
        let lost: BTreeSet<Dot> = held_dots(disk)
            .difference(&held_dots(&disk.after_power_cut(keep)))
            .copied()
            .collect();
        if !lost.is_empty() {
            // A copy counts only on a replica of its partition in the newest layout any
            // node knows: an old owner (a leaver, a replaced node) drops the partition
            // once the change is done, and W counts in the new replica set too.
            let newest = self.newest_layout_ring();
            let n = usize::from(self.setup.quorum.n);
            let elsewhere: BTreeSet<Dot> = (0..self.nodes.len())
                .filter(|&j| j != i)
                .flat_map(|j| {
                    let id = &self.nodes[j].id;
                    held_dots_where(self.nodes[j].disk(), |p| {
                        newest
                            .as_ref()
                            .is_none_or(|ring| ring.preference_list(p, n).contains(id))
                    })
                })
                .collect();
            let last = lost.difference(&elsewhere).count();
            if last > 0 {
                self.faults.power_cuts_vetoed += 1;
                self.note(
                    i,
                    &format!("POWER CUT vetoed: it would take the last copy of {last} dot(s)"),
                );
                return;
            }
        }
        self.note(
            i,
            &format!(
                "POWER CUT: keeps {keep} of {unsynced} unsynced writes, loses {} dot(s)",
                lost.len()
            ),
        );
        let name = self.nodes[i].id.to_string();
        self.copies.power_cut(&name, lost.iter().copied(), self.now);
        self.crash(i, down);
        let lost_writes = self.nodes[i].disk().power_cut(keep);
        self.faults.power_cuts += 1;
        self.faults.writes_lost_to_power_cuts += lost_writes as u64;
    }
}

impl Sim {
    /// Group commit (`durability = "sync"`): when node `i` answers a put with success,
    /// the write must already be on the disks of at least W nodes for good (synced: in
    /// their objects, or as a hint for a primary that was down), since that is what the
    /// answer promises; a write acknowledged while a copy it counted was still unsynced
    /// is a violation. Checked with the run's W on every put (runs that vary quorums per
    /// request are not checked).
    pub(super) fn check_durable_at_ack(
        &mut self,
        i: usize,
        op: crate::history::OpId,
        response: &shoal_proto::wire::Response,
    ) {
        use shoal_proto::wire::{ClientResponse, Response};
        if !self.setup.group_commit || self.cfg.vary_quorums {
            return;
        }
        let Response::Client(ClientResponse::Put(reply)) = response else {
            return;
        };
        let Some(entry) = self.history.ops.get(op) else {
            return;
        };
        if !matches!(entry.kind, crate::history::OpKind::Put { .. }) {
            return;
        }
        let Some(dot) = crate::history::write_dot(entry.context.as_ref(), &reply.context) else {
            return;
        };
        let key = entry.key.clone();
        let covers = |o: &Object| o.context().covers(dot);
        let is_key = |raw: &[u8]| {
            split_object_key(raw)
                .and_then(|(_, stored)| shoal_executor::key_of_stored(stored))
                .is_some_and(|k| k == key.as_bytes())
        };
        // The key's partition in the store (its segment is the executor's to compute).
        let (partition, _) = partition_bounds(self.ring.partition_of(key.as_bytes()));
        let durable = (0..self.nodes.len())
            .filter(|&j| {
                let disk = self.nodes[j].disk();
                let stored = disk.durable_rows(Space::Objects, &partition);
                let hints = disk.durable_rows(Space::Hints, &[]);
                stored
                    .iter()
                    .any(|(k, v)| is_key(k) && Object::decode(v).is_ok_and(|o| covers(&o)))
                    || hints
                        .iter()
                        .any(|(_, v)| shoal_executor::decode_hint(v).is_ok_and(|(_, o)| covers(&o)))
            })
            .count();
        let w = usize::from(self.setup.quorum.w);
        if durable < w {
            let detail = format!(
                "{} acknowledged put #{op} (dot {dot:?}) with the write durable on {durable} node(s), W = {w}",
                self.nodes[i].id
            );
            self.add_violations(vec![crate::checkers::Violation::new(
                "durable_at_ack",
                &key,
                detail,
            )]);
        }
    }
}
