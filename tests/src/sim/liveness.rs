//! The liveness phase: faults stop, then the replicas must come together — through read
//! repair ([`Liveness::ReadRepair`](super::Liveness::ReadRepair)) or through anti-entropy alone
//! ([`Liveness::AntiEntropyOnly`](super::Liveness::AntiEntropyOnly)) — within bounds of virtual time.

use std::time::Duration;

use shoal_proto::Object;
use shoal_ring::PartitionId;

use super::config::{
    Faults, ANTI_ENTROPY_CONVERGENCE_INTERVALS, ANTI_ENTROPY_MIN_INTERVALS, MAX_QUIESCE_TIME,
};
use super::{hint_count, Phase, Sim, SimError};
use crate::checkers::Violation;

/// How often the anti-entropy phase looks whether it is done.
const CONVERGENCE_CHECK: Duration = Duration::from_millis(100);

/// The longest [`Sim::settle`] waits for a moment with no command outstanding.
const MAX_SETTLE_TIME: Duration = Duration::from_secs(5);

/// The longest the anti-entropy phase waits for the run's tombstones to become
/// reapable: with the engine's default grace period (a day) it does not wait for them.
const MAX_REAP_WAIT: Duration = Duration::from_secs(60);

impl Sim {
    /// Remove every fault: clean network, partitions healed, crashed nodes restarted.
    pub(super) fn begin_liveness(&mut self) -> Result<(), SimError> {
        self.phase = Phase::Liveness;
        self.net.faults = Faults::NONE;
        self.net.partition = None;
        self.log
            .line(self.now, "sim", "liveness: faults off, partitions healed");
        self.revive_nodes_of_abandoned_changes();
        for i in 0..self.nodes.len() {
            // A full disk is a fault too: its spell ends with the others, or the repairs
            // of the final reads (R = N) would be refused by a disk still full.
            if self.nodes[i].free_disk() {
                self.note(i, "disk has room again (faults off)");
            }
            if !self.nodes[i].is_up() && !self.nodes[i].dormant {
                self.start_node(i)?;
                self.faults.restarts += 1;
            }
        }
        Ok(())
    }

    /// A removal or replacement kills its old node for good; when its operator gave up
    /// (the faults kept every commit from a majority for all its attempts), that node is
    /// still a member, and a cluster with a member down forever never becomes quiet. An
    /// operator who cannot replace a dead machine brings it back: it restarts with its
    /// data here, with the other crashed nodes (seed 978583 of `--layout-changes
    /// --sessions --direct-reads 1 --deletes 0.3 --clock-skew 1.5`: a replacement staged
    /// beside a concurrent join, whose four members needed three of them for every commit
    /// under crash faults).
    fn revive_nodes_of_abandoned_changes(&mut self) {
        let abandoned: Vec<shoal_ring::NodeId> = self
            .operators
            .iter()
            .filter(|o| o.outcome == Some(super::operator::OperatorOutcome::GaveUp))
            .filter_map(|o| match &o.change {
                shoal_proto::layout::Change::Remove { id } => Some(id.clone()),
                shoal_proto::layout::Change::Replace { old, .. } => Some(old.clone()),
                _ => None,
            })
            .collect();
        for i in 0..self.nodes.len() {
            if self.nodes[i].dormant && abandoned.contains(&self.nodes[i].id) {
                self.nodes[i].dormant = false;
                let line = format!(
                    "{}: its removal or replacement was given up; the operator brings it back",
                    self.nodes[i].id
                );
                self.log.line(self.now, "sim", &line);
            }
        }
    }

    /// Let time pass until the cluster is quiet (see [`Sim::quiet`]); `false` if it is
    /// not within the bound.
    pub(super) fn quiesce(&mut self) -> Result<bool, SimError> {
        let deadline = self.now + MAX_QUIESCE_TIME;
        loop {
            let until = self.now + Duration::from_millis(100);
            self.step_until(until)?;
            if self.quiet() {
                // Let the last read repairs and acknowledgements land.
                let until = self.now + self.engine_cfg.replication.request_timeout;
                self.step_until(until)?;
                self.settle()?;
                return Ok(true);
            }
            if self.now >= deadline {
                return Ok(false);
            }
        }
    }

    /// Every node up and seeing every peer up, nothing coordinated in flight, no client
    /// operation pending, and no hints stored anywhere.
    pub(super) fn quiet(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none())
            && self.nodes.iter().filter(|n| !n.dormant).all(|n| {
                let Some(r) = &n.running else { return false };
                r.engine.inflight() == 0
                    && super::layout::settled(&r.engine)
                    && r.engine
                        .membership()
                        .iter()
                        .all(|(id, _)| r.engine.membership().is_up(id))
                    && hint_count(r) == 0
            })
    }

    /// Step until no engine waits on any command (no background step, such as a reap
    /// that has deleted a key on some replicas and not yet on others, is half done), so
    /// that what follows sees the replicas between steps; at most [`MAX_SETTLE_TIME`].
    fn settle(&mut self) -> Result<(), SimError> {
        let deadline = self.now + MAX_SETTLE_TIME;
        while self.now < deadline
            && self.nodes.iter().any(|n| {
                n.running
                    .as_ref()
                    .is_some_and(|r| r.engine.pending_commands() > 0)
            })
        {
            let until = self.now + Duration::from_millis(1);
            self.step_until(until)?;
        }
        Ok(())
    }

    pub(super) fn liveness_failure(&mut self, when: &str) {
        let mut why = Vec::new();
        for n in self.nodes.iter().filter(|n| !n.dormant) {
            let Some(r) = &n.running else {
                why.push(format!("{} is down", n.id));
                continue;
            };
            if !super::layout::settled(&r.engine) {
                why.push(format!(
                    "{} has layout versions {:?} in use, transfers {:?}",
                    n.id,
                    r.engine
                        .layout()
                        .versions()
                        .iter()
                        .map(|l| l.version())
                        .collect::<Vec<_>>(),
                    r.engine.transfer_stats()
                ));
            }
            let down: Vec<String> = r
                .engine
                .membership()
                .iter()
                .filter(|(id, _)| !r.engine.membership().is_up(id))
                .map(|(id, _)| id.to_string())
                .collect();
            if !down.is_empty() {
                why.push(format!("{} sees {down:?} down", n.id));
            }
            if r.engine.inflight() > 0 {
                why.push(format!(
                    "{} has {} requests in flight",
                    n.id,
                    r.engine.inflight()
                ));
            }
            let hints = hint_count(r);
            if hints > 0 {
                why.push(format!("{} holds {hints} hints", n.id));
            }
        }
        let busy = self.clients.iter().filter(|c| c.current.is_some()).count();
        if busy > 0 {
            why.push(format!("{busy} client operations pending"));
        }
        self.add_violations(vec![Violation::new(
            "liveness",
            "*",
            format!(
                "the cluster did not become quiet within {MAX_QUIESCE_TIME:?} {when}: {}",
                why.join("; ")
            ),
        )]);
    }

    /// [`Liveness::ReadRepair`](super::Liveness::ReadRepair): quiet, read every key with
    /// R = N, quiet again; then, where tombstones are reaped within the run, let reaping
    /// and anti-entropy finish the partly reaped ones (see [`Sim::finish_partly_reaped`]).
    pub(super) fn read_repair_liveness(&mut self) -> Result<(), SimError> {
        if self.quiesce()? {
            self.final_reads()?;
            if !self.quiesce()? {
                self.liveness_failure("after the final reads");
            } else if self.reaps_within_run() {
                self.finish_partly_reaped()?;
            }
        } else {
            self.liveness_failure("after the faults stopped");
        }
        Ok(())
    }

    /// Anti-entropy is on and tombstones become reapable within [`MAX_REAP_WAIT`].
    fn reaps_within_run(&self) -> bool {
        let bg = self.setup.background;
        bg.aae.enabled && bg.tombstone_grace + bg.aae.reap_interval * 2 <= MAX_REAP_WAIT
    }

    /// A tombstone old enough to be reaped that some primaries hold and others do not is
    /// a state only reaping and anti-entropy end, whatever the final reads did: a reap
    /// that did not reach every replica, or a copy read before a reap and written after
    /// it (by an exchange, or by a read's repair), and read repair rightly does not copy
    /// such a tombstone to a replica without the key (it may just have reaped it). So
    /// time passes, with no client request, until no key is left in that state (the
    /// tombstone copied everywhere and reaped, or reaped where it was), at most a reap
    /// interval and [`ANTI_ENTROPY_CONVERGENCE_INTERVALS`] anti-entropy intervals; the
    /// convergence checker then judges the replicas as it finds them.
    fn finish_partly_reaped(&mut self) -> Result<(), SimError> {
        let keys = self.partly_reaped_keys();
        if keys.is_empty() {
            return Ok(());
        }
        self.log.line(
            self.now,
            "sim",
            &format!(
                "liveness: {} tombstones reapable on some primaries and absent on others: {keys:?}",
                keys.len()
            ),
        );
        self.partly_reaped += keys.len();
        let bg = self.setup.background;
        let deadline =
            self.now + bg.aae.reap_interval + bg.aae.interval * ANTI_ENTROPY_CONVERGENCE_INTERVALS;
        while self.now < deadline {
            let until = self.now + CONVERGENCE_CHECK;
            self.step_until(until)?;
            if self.quiet() && self.partly_reaped_keys().is_empty() {
                break;
            }
        }
        self.settle()
    }

    /// Workload keys whose primaries differ only in holding or not a tombstone-only
    /// object old enough to be reaped (`tombstone_grace - max_clock_skew`, as read
    /// repair judges it), all holders the same object.
    fn partly_reaped_keys(&self) -> Vec<String> {
        let n = usize::from(self.setup.quorum.n);
        let reapable_age = self
            .engine_cfg
            .replication
            .tombstone_grace
            .saturating_sub(self.engine_cfg.replication.max_clock_skew);
        let mut out = Vec::new();
        for key in &self.keys {
            let partition = self.ring.partition_of(key.as_bytes());
            let mut copies = Vec::new();
            for id in self.ring.preference_list(partition, n).nodes {
                let Some(r) = self
                    .index
                    .get(&id)
                    .and_then(|&i| self.nodes[i].running.as_ref())
                else {
                    continue;
                };
                copies.push(r.stored(partition, key.as_bytes()));
            }
            let held: Vec<&Object> = copies.iter().flatten().collect();
            let partly = !held.is_empty()
                && held.len() < copies.len()
                && held.iter().all(|o| {
                    **o == *held[0]
                        && o.tombstone_time()
                            .is_some_and(|t| self.now.saturating_since(t) >= reapable_age)
                });
            if partly {
                out.push(key.clone());
            }
        }
        out
    }

    /// [`Liveness::AntiEntropyOnly`](super::Liveness::AntiEntropyOnly): quiet, then no
    /// client request on the workload's keys; time passes until anti-entropy has
    /// converged every partition (see [`Sim::background_done`]), but at least
    /// [`ANTI_ENTROPY_MIN_INTERVALS`] intervals and, when the grace period is short (at
    /// most a minute with two reap intervals), until every tombstone of the run has been
    /// reaped (see [`Sim::overdue_tombstones`]). Failing that within
    /// [`ANTI_ENTROPY_CONVERGENCE_INTERVALS`] more intervals is a liveness violation.
    pub(super) fn anti_entropy_liveness(&mut self, canary_reads: bool) -> Result<(), SimError> {
        let started = self.now;
        let canaries = if canary_reads {
            self.canary_keys()
        } else {
            Vec::new()
        };
        let mut next_canary = 0;
        if !self.quiesce()? {
            self.liveness_failure("after the faults stopped");
            return Ok(());
        }
        let bg = self.setup.background;
        let mut hold = bg.aae.interval * ANTI_ENTROPY_MIN_INTERVALS;
        let reap_wait = bg.tombstone_grace + bg.aae.reap_interval * 2;
        let reaping = self.reaps_within_run();
        if reaping {
            // Every delete happened before the liveness phase started.
            hold = hold.max(reap_wait);
        }
        let earliest = started + hold;
        let deadline =
            earliest.max(self.now) + bg.aae.interval * ANTI_ENTROPY_CONVERGENCE_INTERVALS;
        self.log.line(
            self.now,
            "sim",
            &format!(
                "liveness: anti-entropy only, until {:?} at the earliest",
                earliest.saturating_since(super::EPOCH)
            ),
        );
        loop {
            if let Some(key) = canaries.get(next_canary % canaries.len().max(1)) {
                let node = next_canary % canaries.len();
                if self.canary_read(node, key.clone()) {
                    next_canary += 1;
                }
            }
            let until = self.now + CONVERGENCE_CHECK;
            self.step_until(until)?;
            if self.now >= earliest
                && self.quiet()
                && self.background_done()
                && (!reaping || self.overdue_tombstones().is_empty())
            {
                self.log
                    .line(self.now, "sim", "liveness: anti-entropy converged");
                return Ok(());
            }
            if self.now >= deadline {
                let differing = self.differing_partitions();
                let shown: Vec<String> = differing
                    .iter()
                    .take(8)
                    .map(|p| format!("{}", p.0))
                    .collect();
                let stats: Vec<String> = self
                    .nodes
                    .iter()
                    .filter_map(|n| {
                        let r = n.running.as_ref()?;
                        let s = r.engine.aae_stats();
                        Some(format!(
                            "{} budget {:.2} latency {:.3}s running {} pending {}",
                            n.id,
                            s.budget_multiplier,
                            s.foreground_latency_seconds,
                            s.running,
                            r.engine.pending_commands()
                        ))
                    })
                    .collect();
                let overdue = if reaping {
                    self.overdue_tombstones()
                } else {
                    Vec::new()
                };
                self.add_violations(vec![Violation::new(
                    "liveness",
                    "*",
                    format!(
                        "anti-entropy did not converge (and reap) within {:?} of quiet: {} \
                         partitions differ (first: {}); tombstones overdue for reaping: {overdue:?}; {}",
                        deadline.saturating_since(started),
                        differing.len(),
                        shown.join(", "),
                        stats.join("; ")
                    ),
                )]);
                return Ok(());
            }
        }
    }

    /// For each node (by index), a key it is a primary of that no workload writes, so that
    /// a read of it makes the node coordinate without repairing anything.
    fn canary_keys(&self) -> Vec<String> {
        let n = usize::from(self.setup.quorum.n);
        self.nodes
            .iter()
            .map(|node| {
                (0u32..)
                    .map(|j| format!("~canary{j}"))
                    .find(|k| {
                        self.ring
                            .preference_list_for_key(k.as_bytes(), n)
                            .contains(&node.id)
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Workload keys whose copies, merged, are tombstones only, the newest older than the
    /// grace period plus a reap interval plus two anti-entropy intervals (time for every
    /// primary to hold the same tombstone and for its partition to be scanned): with
    /// every node up, reaping should have removed them. Each with its tombstone's age.
    fn overdue_tombstones(&self) -> Vec<(String, Duration)> {
        let bg = self.setup.background;
        let due = bg.tombstone_grace + bg.aae.reap_interval + bg.aae.interval * 2;
        let mut out = Vec::new();
        for key in &self.keys {
            let partition = self.ring.partition_of(key.as_bytes());
            let mut merged = Object::new();
            for r in self.nodes.iter().filter_map(|n| n.running.as_ref()) {
                if let Some(o) = r.stored(partition, key.as_bytes()) {
                    merged.merge(&o);
                }
            }
            if let Some(t) = merged.tombstone_time() {
                let age = self.now.saturating_since(t);
                if age > due {
                    out.push((key.clone(), age));
                }
            }
        }
        out
    }

    /// Anti-entropy has nothing left to do: no engine waits on a command (no exchange or
    /// reap step in flight) and every partition's primaries have equal Merkle trees.
    fn background_done(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.running.as_ref().is_some_and(|r| {
                r.engine.pending_commands() == 0 && r.engine.aae_stats().running == 0
            })
        }) && self.differing_partitions().is_empty()
    }

    /// Partitions whose running primaries do not all have the same Merkle tree (root and
    /// key count), or that have a primary down.
    pub(super) fn differing_partitions(&self) -> Vec<PartitionId> {
        let n = usize::from(self.setup.quorum.n);
        self.ring
            .partitions()
            .filter(|&p| {
                let mut summaries = self.ring.preference_list(p, n).nodes.into_iter().map(|id| {
                    self.index
                        .get(&id)
                        .and_then(|&i| self.nodes[i].running.as_ref())
                        .map(|r| r.executor.tree_summary(p))
                });
                let Some(first) = summaries.next() else {
                    return false;
                };
                first.is_none() || summaries.any(|s| s != first)
            })
            .collect()
    }
}
