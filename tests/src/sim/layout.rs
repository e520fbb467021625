//! Layout changes in the simulator: joins, leaves, removals and replacements, scripted at
//! fixed instants, each installed on every running node at once through
//! [`shoal_proto::Engine::install_layout_version`] — the entry point a version decided by
//! the layout agreement goes through. A node that is down learns it when it restarts
//! (its stored history plus the versions decided meanwhile); the trackers spread between
//! the engines themselves (`PeerRequest::LayoutPush` on gossip rounds).
//!
//! A joining node is a spare the simulator hosts from the start but does not run until
//! its join (`SimConfig::spare_nodes`); a removed or replaced node is crashed for good
//! first (it never restarts: dead for good, as `remove` and `replace` require).

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_proto::layout::Change;
use shoal_proto::{Engine, StorageOp, StorageReply};

use super::{node, Sim, SimConfig, SimError};
use crate::checkers::Violation;

/// One layout change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutStep {
    /// Spare node `node` joins (and starts).
    Join {
        /// The node, by index (a spare: at least the cluster size).
        node: usize,
    },
    /// Member `node` hands its partitions over, then holds none.
    Leave {
        /// The node, by index.
        node: usize,
    },
    /// Member `node` dies for good (crashed, never restarted) and is removed.
    Remove {
        /// The node, by index.
        node: usize,
    },
    /// Member `old` dies for good and spare `new` takes exactly its partitions.
    Replace {
        /// The member replaced.
        old: usize,
        /// The spare taking its place.
        new: usize,
    },
}

/// A layout change at an instant of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedLayoutChange {
    /// When, from the beginning of the run.
    pub at: Duration,
    /// What.
    pub step: LayoutStep,
}

impl ScriptedLayoutChange {
    /// `step` at `at`.
    pub fn new(at: Duration, step: LayoutStep) -> ScriptedLayoutChange {
        ScriptedLayoutChange { at, step }
    }
}

/// Checks the scripted changes name nodes that exist (joiners among the spares).
pub(super) fn validate(cfg: &SimConfig, members: usize) -> Result<(), SimError> {
    let hosted = members + cfg.spare_nodes;
    for c in &cfg.layout_changes {
        let (member, spare) = match c.step {
            LayoutStep::Join { node } => (None, Some(node)),
            LayoutStep::Leave { node } | LayoutStep::Remove { node } => (Some(node), None),
            LayoutStep::Replace { old, new } => (Some(old), Some(new)),
        };
        if member.is_some_and(|m| m >= hosted) || spare.is_some_and(|s| s < members || s >= hosted)
        {
            return Err(SimError::Config(format!(
                "layout change {:?}: members are 0..{members}, spares {members}..{hosted}",
                c.step
            )));
        }
    }
    Ok(())
}

/// Whether an engine is done with every layout change it knows: one version in use,
/// every tracked member's trackers at it, no transfer or drop left.
pub(super) fn settled(engine: &Engine) -> bool {
    let h = engine.layout();
    let v = h.version();
    let t = engine.transfer_stats();
    h.versions().len() == 1
        && t.pending == 0
        && t.running == 0
        && t.dropping == 0
        && h.tracked().iter().all(|m| {
            [h.acks(), h.syncs(), h.sync_acks()]
                .iter()
                .all(|map| map.get(m).copied().unwrap_or(0) >= v)
        })
}

impl Sim {
    /// Scripted layout change `index`: commit it on the decided layout and install the
    /// new version on every running node.
    pub(super) fn layout_change(&mut self, index: usize) -> Result<(), SimError> {
        let step = self.cfg.layout_changes[index].step.clone();
        let id = |i: usize| self.nodes[i].id.clone();
        let (change, start, kill) = match step {
            LayoutStep::Join { node } => (
                Change::Join {
                    id: id(node),
                    addr: node::address(node),
                    zone: None,
                    weight: 1,
                },
                Some(node),
                None,
            ),
            LayoutStep::Leave { node } => (Change::Leave { id: id(node) }, None, None),
            LayoutStep::Remove { node } => (Change::Remove { id: id(node) }, None, Some(node)),
            LayoutStep::Replace { old, new } => (
                Change::Replace {
                    old: id(old),
                    new: id(new),
                    addr: node::address(new),
                },
                Some(new),
                Some(old),
            ),
        };
        if let Some(k) = kill {
            // Dead for good: never restarted.
            self.nodes[k].dormant = true;
            self.crash(k, Some(Duration::from_secs(365 * 24 * 3600)));
        }
        let current = self.decided.current().clone();
        let next = current
            .commit(std::slice::from_ref(&change), current.version())
            .map_err(|e| SimError::Config(format!("layout change {change:?}: {e}")))?;
        self.decided
            .push(next.clone())
            .map_err(|e| SimError::Config(e.to_string()))?;
        self.ring = next.ring().clone();
        let line = format!("LAYOUT v{} {change:?}", next.version());
        self.log.line(self.now, "sim", &line);
        for i in 0..self.nodes.len() {
            if self.nodes[i].dormant {
                continue;
            }
            let Some(r) = self.nodes[i].running.as_mut() else {
                continue;
            };
            if let Err(e) = r.engine.install_layout_version(next.clone()) {
                // A node that already learned it from a peer.
                let what = format!("layout v{} not installed: {e}", next.version());
                self.note(i, &what);
            }
            self.drain(i);
            self.arm_timer(i);
        }
        if let Some(s) = start {
            self.nodes[s].dormant = false;
            self.start_node(s)?;
        }
        Ok(())
    }

    /// At the end: a node that holds no partition (in the final layout) stores no
    /// object of it — old owners dropped what they handed over. Spares never started
    /// and dead members are not looked at.
    pub(super) fn check_dropped(&self) -> Vec<Violation> {
        let n = usize::from(self.setup.quorum.n);
        let mut found = Vec::new();
        for node in &self.nodes {
            let Some(r) = &node.running else { continue };
            let held: BTreeSet<_> = self
                .ring
                .replica_partitions(&node.id, n)
                .into_iter()
                .collect();
            for key in &self.keys {
                let p = self.ring.partition_of(key.as_bytes());
                if held.contains(&p) {
                    continue;
                }
                let read = r.executor.execute(StorageOp::Read {
                    partition: p,
                    key: key.as_bytes().to_vec(),
                });
                if matches!(read, Ok(StorageReply::Object(Some(_)))) {
                    found.push(Violation::new(
                        "not_dropped",
                        key,
                        format!(
                            "{} still stores {key:?} of partition {p}, which it no longer holds",
                            node.id
                        ),
                    ));
                }
            }
        }
        found
    }
}
