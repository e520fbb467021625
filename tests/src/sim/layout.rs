//! Layout changes in the simulator: joins, leaves, removals and replacements, scripted at
//! fixed instants, carried out one of two ways (`SimConfig::layout_agreement`):
//!
//! - **Through the agreement**: at its instant an operator (`operator.rs`) stages the
//!   change at a live member and commits it, as `shoal cluster` does; that member's Paxos
//!   decides the version among the owners of the version before, and the engines spread
//!   it themselves (pushes, fetches on a newer stamp) over the simulated network with
//!   its drops, partitions, crashes and restarts. A joining node starts as a candidate
//!   (it says hello to the cluster's first members) at the change's instant.
//! - **Installed directly**, for scripted tests that need exact timing: the version is
//!   committed on the simulator's own history and installed on every running node at
//!   once through [`shoal_proto::Engine::install_layout_version`] (the entry point a
//!   decided version goes through); a node that is down learns it when it restarts.
//!
//! Either way the trackers spread between the engines (`PeerRequest::LayoutPush` on
//! gossip rounds), nodes persist their layout state and reload it at a restart, and every
//! version any node holds is checked against the others (`versions.rs`).
//!
//! A joining node is a spare the simulator hosts from the start but does not run until
//! its join (`SimConfig::spare_nodes`); a removed or replaced node is crashed for good
//! first (it never restarts: dead for good, as `remove` and `replace` require).

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_proto::layout::Change;
use shoal_proto::Engine;

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
    /// Through the agreement: the member the operator sends the change to while it is
    /// up (`None`: the first member the change is not about).
    pub via: Option<usize>,
}

impl ScriptedLayoutChange {
    /// `step` at `at`.
    pub fn new(at: Duration, step: LayoutStep) -> ScriptedLayoutChange {
        ScriptedLayoutChange {
            at,
            step,
            via: None,
        }
    }

    /// The same change, committed through member `node`.
    pub fn via(self, node: usize) -> ScriptedLayoutChange {
        ScriptedLayoutChange {
            via: Some(node),
            ..self
        }
    }
}

/// The change kinds of [`with_seeded_changes`], by `seed % 4`.
pub const CHANGE_KINDS: [&str; 4] = ["join", "leave", "remove", "replace"];

/// A random-fault run with a layout change through the agreement, drawn from the seed
/// (on an RNG stream of its own: the run's other draws are unchanged): a join into 3
/// nodes, a leave or a removal out of 4, or a replacement in 3, by `seed % 4` (see
/// [`CHANGE_KINDS`]), at an instant in the first 2.5 s, committed through a member the
/// change is not about; on odd `seed / 4` a second operator commits the join of
/// another spare through another member at the same moment (two concurrent commits of
/// one version). A run that kills a member for good uses W = 2, no power cuts and hints
/// that do not expire within the run: a write acknowledged by the removed node and
/// otherwise held only by a hint is lost with its disk when the hint expires.
pub fn with_seeded_changes(cfg: SimConfig) -> SimConfig {
    use rand::{Rng, SeedableRng};
    let seed = cfg.seed;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(LAYOUT_STREAM);
    let kind = seed % 4;
    let concurrent = (seed / 4) % 2 == 1;
    let at = Duration::from_millis(rng.random_range(300..=2_500));
    let (nodes, step) = match kind {
        0 => (3, LayoutStep::Join { node: 3 }),
        1 => (
            4,
            LayoutStep::Leave {
                node: rng.random_range(0..4),
            },
        ),
        2 => (
            4,
            LayoutStep::Remove {
                node: rng.random_range(0..4),
            },
        ),
        _ => (
            3,
            LayoutStep::Replace {
                old: rng.random_range(0..3),
                new: 3,
            },
        ),
    };
    let subject = match step {
        LayoutStep::Join { .. } => None,
        LayoutStep::Leave { node } | LayoutStep::Remove { node } => Some(node),
        LayoutStep::Replace { old, .. } => Some(old),
    };
    let mut free: Vec<usize> = (0..nodes).filter(|&i| Some(i) != subject).collect();
    let first_via = free.remove(rng.random_range(0..free.len()));
    let mut changes = vec![ScriptedLayoutChange::new(at, step.clone()).via(first_via)];
    let first_spare = if matches!(step, LayoutStep::Join { .. } | LayoutStep::Replace { .. }) {
        nodes + 1
    } else {
        nodes
    };
    let mut spares = first_spare - nodes;
    if concurrent {
        let second_via = free[rng.random_range(0..free.len())];
        let second_at = at + Duration::from_micros(rng.random_range(0..=2_000));
        changes.push(
            ScriptedLayoutChange::new(second_at, LayoutStep::Join { node: first_spare })
                .via(second_via),
        );
        spares += 1;
    }
    let kills = matches!(step, LayoutStep::Remove { .. } | LayoutStep::Replace { .. });
    let mut cfg = SimConfig {
        nodes: Some(nodes),
        spare_nodes: spares,
        layout_changes: changes,
        layout_agreement: true,
        ..cfg
    };
    if kills {
        cfg.quorum = Some(super::Quorum { n: 3, r: 2, w: 2 });
        cfg.vary_quorums = false;
        cfg.power_cuts = super::PowerCutMix::None;
        // A write acknowledged by the killed node and a hint for a replica whose disk
        // was full has its hint as the only other copy: a hint that expires before it
        // lands loses the write with the node (the long run's seed 882).
        cfg.handoff = Some(super::HandoffLimits::ROOMY);
    }
    cfg
}

/// The RNG stream [`with_seeded_changes`] draws from.
const LAYOUT_STREAM: u64 = 0x006c_6179_6f75;

/// Checks the scripted changes name nodes that exist (joiners among the spares).
pub(super) fn validate(cfg: &SimConfig, members: usize) -> Result<(), SimError> {
    let hosted = members + cfg.spare_nodes;
    for c in &cfg.layout_changes {
        let (member, spare) = match c.step {
            LayoutStep::Join { node } => (None, Some(node)),
            LayoutStep::Leave { node } | LayoutStep::Remove { node } => (Some(node), None),
            LayoutStep::Replace { old, new } => (Some(old), Some(new)),
        };
        if member.is_some_and(|m| m >= hosted)
            || spare.is_some_and(|s| s < members || s >= hosted)
            || c.via.is_some_and(|v| v >= members)
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
    /// Every scripted change has been started and, through the agreement, its operator
    /// is done (or gave up).
    pub(super) fn layout_changes_done(&self) -> bool {
        self.operators_done()
            && (!self.cfg.layout_agreement || self.operators.len() == self.cfg.layout_changes.len())
    }

    /// Scripted layout change `index`: through the agreement, start its operator (and
    /// the joining spare, as a candidate); otherwise commit it on the decided layout and
    /// install the new version on every running node.
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
        if self.cfg.layout_agreement {
            if let Some(s) = start {
                if !self.nodes[s].is_up() {
                    self.nodes[s].dormant = false;
                    self.start_node(s)?;
                }
            }
            let subjects = [start, kill];
            let via = self.cfg.layout_changes[index].via.unwrap_or_else(|| {
                (0..self.setup.nodes)
                    .find(|i| !subjects.contains(&Some(*i)))
                    .unwrap_or(0)
            });
            let line = format!(
                "operator {} for {change:?} via n{via}",
                self.operators.len()
            );
            self.log.line(self.now, "op", &line);
            let k = self.operators.len();
            self.operators
                .push(super::operator::Operator::new(change, via));
            self.queue
                .push(self.now, super::event::Event::OperatorWake { operator: k });
            return Ok(());
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

    /// Before the final checks: forgets the writes that were never acknowledged and whose
    /// every copy was lost for a recorded cause (`copies.rs`): each node that stored the
    /// dot in its objects (the coordinator first) died for good, dropped the key's
    /// partition (an old owner whose copy no transfer took, as the new owners had synced
    /// before it), or lost the dot to a power cut (which a cut may take while another
    /// copy exists) — since it last stored it; their dot in no replica's clock at the
    /// end, on a key never reaped. A failed write may be lost; without this the
    /// `no_resurrection` checker would take the lost write as having replaced the values
    /// its context covered. A copy that vanished for no recorded cause keeps the write
    /// (and the checker on it). Returns how many it forgot.
    pub(super) fn forget_stranded_writes(&mut self, state: &crate::checkers::FinalState) -> usize {
        let dead: BTreeSet<String> = self
            .nodes
            .iter()
            .filter(|node| node.dormant && node.incarnation > 0)
            .map(|node| node.id.to_string())
            .collect();
        let history = &self.history;
        let stranded: Vec<usize> = history
            .coordinations
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let holders = self.copies.holders(c.dot);
                let every_copy_lost = holders.iter().any(|(node, _)| *node == c.node)
                    && holders
                        .iter()
                        .all(|(node, loss)| dead.contains(node) || loss.is_some());
                let seen = state.keys.get(&c.key).is_some_and(|k| {
                    k.replicas
                        .iter()
                        .filter_map(|r| r.object.as_ref())
                        .any(|o| o.clock().covers(c.dot))
                });
                let acknowledged = c.value_text().is_some_and(|v| {
                    history
                        .puts_of(&c.key, &v)
                        .any(|op| matches!(op.outcome, crate::history::Outcome::Written { .. }))
                });
                every_copy_lost
                    && !seen
                    && !acknowledged
                    && history.reaps_of(&c.key).next().is_none()
            })
            .map(|(i, _)| i)
            .collect();
        for &i in stranded.iter().rev() {
            let c = self.history.coordinations.remove(i);
            let how: Vec<String> = self
                .copies
                .holders(c.dot)
                .into_iter()
                .map(|(node, loss)| match loss {
                    Some(l) => format!("{node}: {l:?}"),
                    None => format!("{node}: dead"),
                })
                .collect();
            let line = format!(
                "STRANDED write {} dot {} on {}: not acknowledged, every copy lost ({})",
                c.key,
                crate::history::ShowDot(c.dot),
                c.node,
                how.join(", ")
            );
            self.log.line(self.now, "chk", &line);
            self.history.stranded.push(c);
        }
        stranded.len()
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
                if r.stored(p, key.as_bytes()).is_some() {
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
