//! The checker of "at most one layout per version": every layout version any node ever
//! holds — live after each step of its engine, or loaded from its storage at a start —
//! is compared with the first one seen for that version; a different one is a
//! `layout_version` violation. A commit an operator was told succeeded must have decided
//! exactly the layout its change makes of the version before (checked at the end).

use std::collections::BTreeMap;

use shoal_proto::layout::{Change, Layout};
use shoal_proto::Time;

use super::Sim;
use crate::checkers::Violation;

/// The first layout seen for a version: what every later sighting must equal.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub layout: Layout,
    /// The node that held it first.
    pub node: String,
    pub at: Time,
}

/// Every version seen so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct Versions {
    pub seen: BTreeMap<u64, Seen>,
    /// Commits answered `Committed { version }`: the version and the change committed.
    pub committed: Vec<(u64, Change)>,
}

impl Sim {
    /// Looks at the layout versions node `i` holds that are newer than the last checked
    /// (all of them when `all`: a start loads a history that may be older than what the
    /// node held before).
    pub(super) fn check_versions(&mut self, i: usize, all: bool) {
        let Some(r) = self.nodes[i].running.as_ref() else {
            return;
        };
        let h = r.engine.layout();
        let checked = if all {
            0
        } else {
            self.nodes[i].versions_checked
        };
        if h.version() <= checked && !all {
            return;
        }
        let node = self.nodes[i].id.to_string();
        let mut found = Vec::new();
        for l in h.versions().iter().filter(|l| l.version() > checked) {
            let v = l.version();
            match self.versions.seen.get(&v) {
                Some(first) if first.layout != *l => found.push(Violation::new(
                    "layout_version",
                    "*",
                    format!(
                        "two layouts of version {v}: {} held {:?} at {:?}, {node} holds {:?}",
                        first.node,
                        first.layout,
                        first.at.saturating_since(super::EPOCH),
                        l
                    ),
                )),
                Some(_) => {}
                None => {
                    self.log
                        .line(self.now, &node, &format!("LAYOUT v{v} first seen"));
                    self.versions.seen.insert(
                        v,
                        Seen {
                            layout: l.clone(),
                            node: node.clone(),
                            at: self.now,
                        },
                    );
                }
            }
        }
        let newest = h.version();
        self.nodes[i].versions_checked = newest;
        if self.cfg.layout_agreement {
            if let Some(s) = self.versions.seen.values().next_back() {
                if *s.layout.ring() != self.ring {
                    self.ring = s.layout.ring().clone();
                }
            }
        }
        self.add_violations(found);
    }

    /// At the end: every commit an operator was told succeeded decided the layout its
    /// change makes of the version before it.
    pub(super) fn check_commits(&self) -> Vec<Violation> {
        let mut found = Vec::new();
        for (v, change) in &self.versions.committed {
            let (Some(before), Some(after)) =
                (self.versions.seen.get(&(v - 1)), self.versions.seen.get(v))
            else {
                found.push(Violation::new(
                    "layout_version",
                    "*",
                    format!("a commit of {change:?} was answered version {v}, which no node holds"),
                ));
                continue;
            };
            // An operator commits naming the plan it reviewed, which held its change
            // alone: a commit carrying anything else is refused (`PlanChanged`).
            let matches = before
                .layout
                .commit(std::slice::from_ref(change), v - 1)
                .ok()
                .as_ref()
                == Some(&after.layout);
            if !matches {
                found.push(Violation::new(
                    "layout_version",
                    "*",
                    format!(
                        "a commit of {change:?} was answered version {v}, but version {v} is \
                         {:?}, which the change does not make of version {}",
                        after.layout,
                        v - 1
                    ),
                ));
            }
        }
        found
    }
}
