use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use proptest::prelude::*;
use shoal_ring::{NodeId, PartitionId};

use super::super::{Change, ClusterSettings, Layout, LayoutHistory, MemberState, Tracker};

const N: usize = 3;

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("a valid id")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn v1(members: usize) -> Layout {
    let settings = ClusterSettings {
        cluster_id: "c1".into(),
        partitions: 32,
        n: N as u8,
    };
    let members = (1..=members)
        .map(|i| (id(&format!("n{i}")), addr(7000 + i as u16), None, 1))
        .collect();
    Layout::initial(settings, members).unwrap()
}

fn join(name: &str) -> Change {
    Change::Join {
        id: id(name),
        addr: addr(7100),
        zone: None,
        weight: 1,
    }
}

/// What a node does when it has nothing in flight and transfers finish at once: ack
/// its current version, sync the versions it may in order, record the version it
/// reads from, prune.
fn progress(h: &mut LayoutHistory, me: &NodeId) {
    h.advance(Tracker::Ack, me, h.version());
    loop {
        let oldest = h.versions()[0].version();
        let next = (h.syncs().get(me).copied().unwrap_or(0) + 1).max(oldest);
        if next > h.version() || h.min_ack() < next {
            break;
        }
        h.advance(Tracker::Sync, me, next);
    }
    let read = h.read_version().version();
    h.advance(Tracker::SyncAck, me, read);
    h.prune();
}

#[test]
fn one_version_reads_and_writes_its_preference_list() {
    let h = LayoutHistory::new(v1(4));
    let p = PartitionId(5);
    let pl = h.current().ring().preference_list(p, N).nodes;
    assert_eq!(h.read_set(p, N), pl);
    assert_eq!(h.write_sets(p, N), vec![pl.clone()]);
    assert_eq!(h.write_union(p, N), pl);
    assert!(h.sync_needs(&id("n1"), 1, N).is_empty());
    assert_eq!(h.min_ack(), 1);
}

#[test]
fn a_join_writes_to_both_sets_reads_old_until_all_synced_then_prunes() {
    let l1 = v1(3);
    let mut h = LayoutHistory::new(l1.clone());
    let l2 = l1.commit(&[join("n4")], 1).unwrap();
    h.push(l2.clone()).unwrap();
    let n4 = id("n4");
    let moved: Vec<PartitionId> = l2.ring().replica_partitions(&n4, N);
    assert!(!moved.is_empty());
    let p = moved[0];
    // Both sets are written; reads stay on the old set; n4 holds p already.
    assert_eq!(h.write_sets(p, N).len(), 2);
    assert_eq!(h.read_set(p, N), l1.ring().preference_list(p, N).nodes);
    assert!(h.holds(&n4, p, N));
    assert_eq!(h.min_ack(), 0, "n4 has not acknowledged v2");
    // n4 must pull p from all three old replicas.
    let needs = h.sync_needs(&n4, 2, N);
    assert_eq!(needs.len(), moved.len());
    assert_eq!(needs[0].sources.len(), 3);
    assert!(!needs[0].sources.contains(&n4));
    // Everyone acks; n4 syncs; reads move; everyone sync-acks; v1 is pruned.
    for m in ["n1", "n2", "n3", "n4"] {
        h.advance(Tracker::Ack, &id(m), 2);
    }
    assert_eq!(h.read_version().version(), 1);
    for m in ["n1", "n2", "n3", "n4"] {
        h.advance(Tracker::Sync, &id(m), 2);
    }
    assert_eq!(h.read_version().version(), 2);
    assert_eq!(h.read_set(p, N), l2.ring().preference_list(p, N).nodes);
    assert!(!h.prune(), "nobody sync-acked v2 yet");
    for m in ["n1", "n2", "n3", "n4"] {
        h.advance(Tracker::SyncAck, &id(m), 2);
    }
    assert!(h.prune());
    assert_eq!(h.versions().len(), 1);
    assert_eq!(h.write_sets(p, N).len(), 1);
}

#[test]
fn a_removed_member_is_neither_waited_for_nor_a_source() {
    let l1 = v1(4);
    let mut h = LayoutHistory::new(l1.clone());
    let dead = id("n2");
    let l2 = l1
        .commit(&[Change::Remove { id: dead.clone() }], 1)
        .unwrap();
    h.push(l2.clone()).unwrap();
    assert!(!h.tracked().contains(&dead));
    for m in ["n1", "n3", "n4"] {
        h.advance(Tracker::Ack, &id(m), 2);
    }
    assert_eq!(h.min_ack(), 2, "the dead member's ack does not count");
    for m in ["n1", "n3", "n4"] {
        for need in h.sync_needs(&id(m), 2, N) {
            assert!(!need.sources.contains(&dead));
            assert!(!need.sources.is_empty());
        }
    }
}

#[test]
fn a_new_member_does_not_move_reads_back_to_an_older_version() {
    let l1 = v1(3);
    let mut h = LayoutHistory::new(l1.clone());
    let l2 = l1.commit(&[join("n4")], 1).unwrap();
    h.push(l2.clone()).unwrap();
    for m in ["n1", "n2", "n3", "n4"] {
        h.advance(Tracker::Ack, &id(m), 2);
        h.advance(Tracker::Sync, &id(m), 2);
    }
    assert_eq!(h.read_version().version(), 2);
    h.push(l2.commit(&[join("n5")], 2).unwrap()).unwrap();
    assert_eq!(h.read_version().version(), 2);
}

/// One step of the random model.
#[derive(Clone, Debug)]
enum Step {
    /// 0 join, 1 leave, 2 remove (the node dies first), 3 replace (likewise).
    Commit {
        kind: u8,
        pick: usize,
    },
    Gossip {
        from: usize,
        to: usize,
    },
    Progress {
        who: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0u8..4, any::<usize>()).prop_map(|(kind, pick)| Step::Commit { kind, pick }),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Step::Gossip { from, to }),
        4 => any::<usize>().prop_map(|who| Step::Progress { who }),
    ]
}

struct Model {
    views: BTreeMap<NodeId, LayoutHistory>,
    alive: BTreeSet<NodeId>,
    next: u32,
}

impl Model {
    fn alive(&self) -> Vec<NodeId> {
        self.alive.iter().cloned().collect()
    }

    fn pick(&self, i: usize) -> NodeId {
        let a = self.alive();
        a[i % a.len()].clone()
    }

    fn commit(&mut self, kind: u8, pick: usize) {
        // The proposer: a live node that knows the newest version.
        let newest = self.alive.iter().map(|n| self.views[n].version()).max();
        let Some(proposer) = self
            .alive
            .iter()
            .find(|n| Some(self.views[*n].version()) == newest)
            .cloned()
        else {
            return;
        };
        let latest = self.views[&proposer].current().clone();
        let owners: Vec<NodeId> = latest
            .owners()
            .map(|m| m.id.clone())
            .filter(|m| self.alive.contains(m))
            .collect();
        if owners.is_empty() {
            return;
        }
        let subject = owners[pick % owners.len()].clone();
        let fresh = id(&format!("j{}", self.next));
        let change = match kind {
            0 => join(fresh.as_str()),
            1 => Change::Leave { id: subject },
            2 => Change::Remove { id: subject },
            _ => Change::Replace {
                old: subject,
                new: fresh.clone(),
                addr: addr(7200),
            },
        };
        if latest.check_stage(&[], &change, |_| false).is_err() {
            return;
        }
        let next = latest
            .commit(std::slice::from_ref(&change), latest.version())
            .unwrap();
        self.views
            .get_mut(&proposer)
            .unwrap()
            .push(next.clone())
            .unwrap();
        if let Change::Remove { id } | Change::Replace { old: id, .. } = &change {
            // It dies for good; a decided version is never known to the dead alone (its
            // acceptors and the nodes it was pushed to have it).
            self.alive.remove(id);
            let decided = self.views[&proposer].clone();
            if let Some(other) = self.alive.iter().next().cloned() {
                self.views.get_mut(&other).unwrap().merge(&decided).unwrap();
            }
        }
        if next.member(&fresh).is_some() {
            // A new node learns the history from the cluster.
            self.next += 1;
            let view = self.views[&proposer].clone();
            self.views.insert(fresh.clone(), view);
            self.alive.insert(fresh);
        }
    }

    fn apply(&mut self, s: &Step) {
        match *s {
            Step::Commit { kind, pick } => self.commit(kind, pick),
            Step::Gossip { from, to } => {
                let (a, b) = (self.pick(from), self.pick(to));
                let theirs = self.views[&a].clone();
                self.views.get_mut(&b).unwrap().merge(&theirs).unwrap();
            }
            Step::Progress { who } => {
                let me = self.pick(who);
                progress(self.views.get_mut(&me).unwrap(), &me);
            }
        }
    }

    /// The properties every state must have.
    fn check(&self) -> Result<(), TestCaseError> {
        let parts: Vec<PartitionId> = (0..32).map(PartitionId).collect();
        for a in &self.alive {
            let va = &self.views[a];
            for &p in &parts {
                let sets = va.write_sets(p, N);
                // The read set is one of the write sets: a write reaches W of it.
                prop_assert!(sets.contains(&va.read_set(p, N)));
                // A node holds every partition of every write set it is in.
                for set in &sets {
                    if set.contains(a) {
                        prop_assert!(va.holds(a, p, N));
                    }
                }
            }
            let held = va.held_partitions(a, N);
            for p in &held {
                prop_assert!(va.holds(a, *p, N));
            }
            // Pruning never drops a version a member it waits for may still read from.
            for b in va.tracked() {
                if let Some(vb) = self.views.get(&b).filter(|_| self.alive.contains(&b)) {
                    let read = vb.read_version().version();
                    prop_assert!(
                        va.get(read).is_some() || read > va.version(),
                        "{b} reads v{read}; {a} keeps {:?}",
                        va.versions()
                            .iter()
                            .map(Layout::version)
                            .collect::<Vec<_>>()
                    );
                }
            }
        }
        Ok(())
    }

    /// Everyone progresses and gossips with everyone until nothing changes.
    fn settle(&mut self) {
        for _ in 0..20 {
            let alive = self.alive();
            for a in &alive {
                progress(self.views.get_mut(a).unwrap(), a);
                for b in &alive {
                    let theirs = self.views[a].clone();
                    self.views.get_mut(b).unwrap().merge(&theirs).unwrap();
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn placement_holds_under_random_changes(steps in proptest::collection::vec(step(), 1..60)) {
        let l1 = v1(4);
        let mut model = Model {
            views: l1
                .members()
                .iter()
                .map(|m| (m.id.clone(), LayoutHistory::new(l1.clone())))
                .collect(),
            alive: l1.members().iter().map(|m| m.id.clone()).collect(),
            next: 0,
        };
        for s in &steps {
            model.apply(s);
            model.check()?;
        }
        // Liveness: with everyone up and talking, every live node ends on one version,
        // which every live owner acknowledged and synced; removed members block nothing.
        model.settle();
        model.check()?;
        let newest = model.alive.iter().map(|n| model.views[n].version()).max().unwrap();
        for a in &model.alive {
            let h = &model.views[a];
            prop_assert_eq!(h.version(), newest);
            prop_assert_eq!(h.versions().len(), 1, "{} keeps {} versions", a, h.versions().len());
            if h.current().member(a).is_some_and(|m| m.state == MemberState::Active || m.state == MemberState::Joining) {
                prop_assert_eq!(h.syncs().get(a).copied(), Some(newest));
            }
        }
    }
}
