//! The cluster layout (issue 9, in progress): the one versioned document a living cluster
//! will serve from — its settings (cluster id, partition count, N), its members with their
//! addresses, zones, weights and states, and the partition-to-owner assignment (a
//! [`Ring`]). Changes are staged ([`Change`]), previewed ([`Layout::plan`]) and committed
//! against the version they were planned on ([`Layout::commit`]); each new version is then
//! agreed on by [`crate::paxos`], one instance per version.
//!
//! Pure functions only: which changes are allowed and what they move, and (in
//! `placement`) where reads and writes go while more than one version is in use.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

mod placement;
pub use placement::SyncNeed;

use serde::{Deserialize, Serialize};
use shoal_ring::{Member, NodeId, RebalancePlan, Ring, RingError};

/// Settings two nodes must share to be in one cluster; a node whose settings differ is
/// refused (see [`ClusterSettings::mismatch`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Fixed when the cluster is created.
    pub cluster_id: String,
    /// The partition count Q, fixed for the cluster's life.
    pub partitions: u32,
    /// Replicas per key.
    pub n: u8,
}

impl ClusterSettings {
    /// The first setting in which `other` differs from `self`, named as in the config,
    /// with both values: why two nodes refuse each other.
    pub fn mismatch(&self, other: &ClusterSettings) -> Option<String> {
        if self.cluster_id != other.cluster_id {
            Some(format!(
                "cluster id {:?} != {:?}",
                self.cluster_id, other.cluster_id
            ))
        } else if self.partitions != other.partitions {
            Some(format!(
                "partition count {} != {}",
                self.partitions, other.partitions
            ))
        } else if self.n != other.n {
            Some(format!("n {} != {}", self.n, other.n))
        } else {
            None
        }
    }
}

impl ClusterSettings {
    /// The settings of a cluster created from a full member list (the `[[seeds]]` of
    /// a config written before layouts existed): the cluster id is derived from the
    /// sorted member ids, the partition count and N, so every founding node computes the
    /// same one without a config change.
    pub fn derived(partitions: u32, n: u8, members: &[NodeId]) -> ClusterSettings {
        let mut ids: Vec<&str> = members.iter().map(NodeId::as_str).collect();
        ids.sort_unstable();
        let text = format!("{partitions}/{n}/{}", ids.join(","));
        ClusterSettings {
            cluster_id: format!("shoal-{:016x}", shoal_ring::key_hash(text.as_bytes())),
            partitions,
            n,
        }
    }
}

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Committed as a new member; receiving its partitions.
    Joining,
    /// Serving its partitions.
    Active,
    /// Handing its partitions over before it stops serving data.
    Leaving,
    /// Gone for good (removed, replaced or left): fenced, its id never serves again.
    Removed,
}

impl MemberState {
    /// Whether the member owns partitions in the layout's ring.
    pub fn owns_partitions(self) -> bool {
        matches!(self, MemberState::Joining | MemberState::Active)
    }
}

/// One member of the layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutMember {
    /// The node.
    pub id: NodeId,
    /// Where it listens for QUIC.
    pub addr: SocketAddr,
    /// Its failure domain, if any.
    pub zone: Option<String>,
    /// Its capacity weight (at least 1).
    pub weight: u32,
    /// Where it is in its life.
    pub state: MemberState,
}

/// A staged change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A node that contacted the cluster becomes a member and gets its share.
    Join {
        /// The node.
        id: NodeId,
        /// Where it listens.
        addr: SocketAddr,
        /// Its zone.
        zone: Option<String>,
        /// Its weight.
        weight: u32,
    },
    /// A member hands all its partitions over, then stops serving data.
    Leave {
        /// The member.
        id: NodeId,
    },
    /// A member dead for good: its partitions are rebuilt elsewhere from the survivors.
    Remove {
        /// The member.
        id: NodeId,
    },
    /// `new` takes exactly `old`'s partitions (a dead machine replaced).
    Replace {
        /// The member replaced (must be down).
        old: NodeId,
        /// The node taking its place.
        new: NodeId,
        /// Where `new` listens.
        addr: SocketAddr,
    },
}

impl Change {
    /// The nodes the change is about.
    fn subjects(&self) -> Vec<&NodeId> {
        match self {
            Change::Join { id, .. } | Change::Leave { id } | Change::Remove { id } => vec![id],
            Change::Replace { old, new, .. } => vec![old, new],
        }
    }
}

/// Why a change, plan or commit was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Joining (or replacing with) an id that is already a member.
    #[error("{id} is already a member")]
    AlreadyMember {
        /// The id.
        id: NodeId,
    },
    /// An id that was removed, replaced or left can never serve again.
    #[error("{id} was removed from the cluster and is fenced; give the node a new id")]
    Fenced {
        /// The id.
        id: NodeId,
    },
    /// Leaving, removing or replacing an id that is not a member.
    #[error("{id} is not a member")]
    NotAMember {
        /// The id.
        id: NodeId,
    },
    /// The node already has a change staged.
    #[error("{id} already has a change staged")]
    AlreadyStaged {
        /// The id.
        id: NodeId,
    },
    /// After the change fewer than N members would own partitions.
    #[error("{remaining} members would remain, fewer than n = {n}")]
    TooFewMembers {
        /// Members left owning partitions.
        remaining: usize,
        /// Replicas per key.
        n: u8,
    },
    /// Replacing a member that is up: stop it first (or let it leave).
    #[error("{id} is up: only a member that is down can be replaced (use leave for a live one)")]
    ReplaceAlive {
        /// The member.
        id: NodeId,
    },
    /// Planning or committing with no change staged.
    #[error("nothing is staged")]
    NothingStaged,
    /// The layout moved on since the plan was made.
    #[error("the layout is at version {current}, not {expected}: plan again")]
    VersionMismatch {
        /// The version the commit was planned on.
        expected: u64,
        /// The current version.
        current: u64,
    },
    /// The layout belongs to a cluster with other settings.
    #[error("cluster settings differ: {0}")]
    Settings(String),
    /// A weight of 0, a zone name or a member count the ring refuses.
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// The cluster's layout at one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    settings: ClusterSettings,
    version: u64,
    /// Every member ever committed, sorted by id (removed ones stay, fenced).
    members: Vec<LayoutMember>,
    /// The partitions of the members that own some.
    ring: Ring,
}

/// What a set of staged changes would do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutPlan {
    /// The layout a commit makes (version + 1).
    pub next: Layout,
    /// The partitions that change owner.
    pub moves: RebalancePlan,
    /// Partitions each node owns before and after (0 for a node with none).
    pub partitions: BTreeMap<NodeId, (usize, usize)>,
    /// Distinct zones of the owning members after.
    pub zones_after: usize,
}

impl Layout {
    /// Version 1 of a cluster whose members are all known up front (today's
    /// `[[seeds]]` list): every member active.
    ///
    /// # Errors
    /// [`LayoutError::TooFewMembers`] with fewer than N members, and the ring's checks.
    pub fn initial(
        settings: ClusterSettings,
        members: Vec<(NodeId, SocketAddr, Option<String>, u32)>,
    ) -> Result<Layout, LayoutError> {
        if members.len() < usize::from(settings.n) {
            return Err(LayoutError::TooFewMembers {
                remaining: members.len(),
                n: settings.n,
            });
        }
        let mut members: Vec<LayoutMember> = members
            .into_iter()
            .map(|(id, addr, zone, weight)| LayoutMember {
                id,
                addr,
                zone,
                weight,
                state: MemberState::Active,
            })
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let ring = Ring::new(settings.partitions, ring_members(&members))?;
        Ok(Layout {
            settings,
            version: 1,
            members,
            ring,
        })
    }

    /// The cluster settings.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// The version: 1 at creation, one more per commit.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every member ever committed, sorted by id.
    pub fn members(&self) -> &[LayoutMember] {
        &self.members
    }

    /// The member `id`, in whatever state.
    pub fn member(&self, id: &NodeId) -> Option<&LayoutMember> {
        self.members
            .binary_search_by(|m| m.id.cmp(id))
            .ok()
            .map(|i| &self.members[i])
    }

    /// The partition assignment.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Checks that `change` may be staged after `staged`: the ids it names are in the
    /// right state, no node has two changes, a replaced member is down (`is_up`), and
    /// enough members would remain.
    ///
    /// # Errors
    /// The [`LayoutError`] that says why not.
    pub fn check_stage(
        &self,
        staged: &[Change],
        change: &Change,
        is_up: impl Fn(&NodeId) -> bool,
    ) -> Result<(), LayoutError> {
        let busy: BTreeSet<&NodeId> = staged.iter().flat_map(Change::subjects).collect();
        if let Some(id) = change.subjects().into_iter().find(|id| busy.contains(id)) {
            return Err(LayoutError::AlreadyStaged { id: id.clone() });
        }
        match change {
            Change::Join { id, .. } => self.check_newcomer(id)?,
            Change::Leave { id } | Change::Remove { id } => {
                self.check_owner(id)?;
            }
            Change::Replace { old, new, .. } => {
                self.check_owner(old)?;
                self.check_newcomer(new)?;
                if is_up(old) {
                    return Err(LayoutError::ReplaceAlive { id: old.clone() });
                }
            }
        }
        let mut all = staged.to_vec();
        all.push(change.clone());
        self.plan(&all).map(|_| ())
    }

    fn check_newcomer(&self, id: &NodeId) -> Result<(), LayoutError> {
        match self.member(id).map(|m| m.state) {
            None => Ok(()),
            Some(MemberState::Removed) => Err(LayoutError::Fenced { id: id.clone() }),
            Some(_) => Err(LayoutError::AlreadyMember { id: id.clone() }),
        }
    }

    fn check_owner(&self, id: &NodeId) -> Result<(), LayoutError> {
        match self.member(id).map(|m| m.state) {
            Some(s) if s.owns_partitions() => Ok(()),
            _ => Err(LayoutError::NotAMember { id: id.clone() }),
        }
    }

    /// What committing `staged` would make: the next layout, the partitions that move,
    /// and each node's partition count before and after.
    ///
    /// # Errors
    /// [`LayoutError::NothingStaged`], or the first change that is not allowed.
    pub fn plan(&self, staged: &[Change]) -> Result<LayoutPlan, LayoutError> {
        if staged.is_empty() {
            return Err(LayoutError::NothingStaged);
        }
        let mut members = self.members.clone();
        let mut ring = self.ring.clone();
        let mut rebalance = false;
        for change in staged {
            match change {
                Change::Join {
                    id,
                    addr,
                    zone,
                    weight,
                } => {
                    self.check_newcomer(id)?;
                    if members.iter().any(|m| &m.id == id) {
                        return Err(LayoutError::AlreadyStaged { id: id.clone() });
                    }
                    members.push(LayoutMember {
                        id: id.clone(),
                        addr: *addr,
                        zone: zone.clone(),
                        weight: *weight,
                        state: MemberState::Joining,
                    });
                    rebalance = true;
                }
                Change::Leave { id } | Change::Remove { id } => {
                    self.check_owner(id)?;
                    let state = if matches!(change, Change::Leave { .. }) {
                        MemberState::Leaving
                    } else {
                        MemberState::Removed
                    };
                    set_state(&mut members, id, state);
                    rebalance = true;
                }
                Change::Replace { old, new, addr } => {
                    self.check_owner(old)?;
                    self.check_newcomer(new)?;
                    let (zone, weight) = self
                        .member(old)
                        .map(|m| (m.zone.clone(), m.weight))
                        .unwrap_or((None, 1));
                    let member = Member {
                        id: new.clone(),
                        zone: zone.clone(),
                        weight,
                    };
                    ring = ring.replace(old, member)?.0;
                    set_state(&mut members, old, MemberState::Removed);
                    members.push(LayoutMember {
                        id: new.clone(),
                        addr: *addr,
                        zone,
                        weight,
                        state: MemberState::Joining,
                    });
                }
            }
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let owners = members.iter().filter(|m| m.state.owns_partitions()).count();
        if owners < usize::from(self.settings.n) {
            return Err(LayoutError::TooFewMembers {
                remaining: owners,
                n: self.settings.n,
            });
        }
        if rebalance {
            ring = ring.rebalance(ring_members(&members))?.0;
        }
        let moves = self.ring.moves_to(&ring);
        let mut partitions: BTreeMap<NodeId, (usize, usize)> = BTreeMap::new();
        for m in self.ring.members() {
            partitions.entry(m.id.clone()).or_default().0 = self.ring.owned_count(&m.id);
        }
        for m in ring.members() {
            partitions.entry(m.id.clone()).or_default().1 = ring.owned_count(&m.id);
        }
        let zones_after = ring.zone_count();
        Ok(LayoutPlan {
            next: Layout {
                settings: self.settings.clone(),
                version: self.version + 1,
                members,
                ring,
            },
            moves,
            partitions,
            zones_after,
        })
    }

    /// The next layout, if the current version is still `expected` (what the operator
    /// planned on).
    ///
    /// # Errors
    /// [`LayoutError::VersionMismatch`], or what [`Layout::plan`] refuses.
    pub fn commit(&self, staged: &[Change], expected: u64) -> Result<Layout, LayoutError> {
        if expected != self.version {
            return Err(LayoutError::VersionMismatch {
                expected,
                current: self.version,
            });
        }
        Ok(self.plan(staged)?.next)
    }
}

impl Layout {
    /// Version 1 of a cluster whose ring is already built (every member active, at
    /// `addresses`): how an engine is made from a fixed member list.
    ///
    /// # Errors
    /// [`LayoutError::NotAMember`] for a ring member without an address.
    pub fn from_ring(
        settings: ClusterSettings,
        ring: Ring,
        addresses: &[(NodeId, SocketAddr)],
    ) -> Result<Layout, LayoutError> {
        let mut members = Vec::with_capacity(ring.members().len());
        for m in ring.members() {
            let addr = addresses
                .iter()
                .find(|(id, _)| id == &m.id)
                .map(|(_, a)| *a)
                .ok_or_else(|| LayoutError::NotAMember { id: m.id.clone() })?;
            members.push(LayoutMember {
                id: m.id.clone(),
                addr,
                zone: m.zone.clone(),
                weight: m.weight,
                state: MemberState::Active,
            });
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Layout {
            settings,
            version: 1,
            members,
            ring,
        })
    }

    /// Version 0: what a candidate serves from before it learns the cluster's layout
    /// (it knows only the partition count and N of its config). It has no members and an
    /// empty cluster id; its ring (of the candidate alone, as a ring needs a member)
    /// places nothing, because a candidate serves no data. Any real version replaces it
    /// ([`LayoutHistory::adopt`]).
    ///
    /// # Errors
    /// The ring's checks of the partition count.
    pub fn unknown(me: NodeId, partitions: u32, n: u8) -> Result<Layout, LayoutError> {
        Ok(Layout {
            settings: ClusterSettings {
                cluster_id: String::new(),
                partitions,
                n,
            },
            version: 0,
            members: Vec::new(),
            ring: Ring::new(partitions, vec![Member::new(me)])?,
        })
    }

    /// The members that own partitions (joining, active), in id order.
    pub fn owners(&self) -> impl Iterator<Item = &LayoutMember> {
        self.members.iter().filter(|m| m.state.owns_partitions())
    }
}

/// The layout versions a cluster still uses, oldest first, and how far each node has
/// come with them (Garage's layout history, with versions decided by [`crate::paxos`]).
///
/// While a change is in progress more than one version is in use: writes must reach
/// their quorum in every kept version (`write_sets`); reads use the newest kept version
/// whose tracked owners have all synced it (`read_set`); versions older than
/// `min_sync_ack` are pruned, and a node drops a partition once it holds it in no kept
/// version (docs/ARCHITECTURE.md, "Layout changes"). The trackers only grow
/// (a merge takes the maximum per node), so they spread by gossip without consensus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutHistory {
    /// Oldest first; never empty; consecutive versions.
    versions: Vec<Layout>,
    /// Per node: the highest version it acknowledged (it coordinates nothing under an
    /// older one any more).
    ack: BTreeMap<NodeId, u64>,
    /// Per node: the highest version whose partitions it holds in full.
    sync: BTreeMap<NodeId, u64>,
    /// Per node: the highest version it knows every node has synced.
    sync_ack: BTreeMap<NodeId, u64>,
}

impl LayoutHistory {
    /// A history of one version, which every member has acknowledged and holds (a
    /// cluster created with its members, or a node that knows nothing older).
    pub fn new(layout: Layout) -> LayoutHistory {
        let v = layout.version();
        let ids: Vec<NodeId> = layout.members().iter().map(|m| m.id.clone()).collect();
        let full = |ids: &[NodeId]| ids.iter().map(|id| (id.clone(), v)).collect();
        LayoutHistory {
            ack: full(&ids),
            sync: full(&ids),
            sync_ack: full(&ids),
            versions: vec![layout],
        }
    }

    /// The newest version.
    pub fn current(&self) -> &Layout {
        // Never empty: built with one version, versions are only pruned below the last.
        self.versions.last().unwrap_or_else(|| unreachable!())
    }

    /// The newest version's number.
    pub fn version(&self) -> u64 {
        self.current().version()
    }

    /// The cluster settings (the same in every version).
    pub fn settings(&self) -> &ClusterSettings {
        self.current().settings()
    }

    /// The versions still in use, oldest first.
    pub fn versions(&self) -> &[Layout] {
        &self.versions
    }

    /// The version `v`, if still kept.
    pub fn get(&self, v: u64) -> Option<&Layout> {
        self.versions.iter().find(|l| l.version() == v)
    }

    /// The acknowledged version per node.
    pub fn acks(&self) -> &BTreeMap<NodeId, u64> {
        &self.ack
    }

    /// The synced version per node.
    pub fn syncs(&self) -> &BTreeMap<NodeId, u64> {
        &self.sync
    }

    /// The sync-acknowledged version per node.
    pub fn sync_acks(&self) -> &BTreeMap<NodeId, u64> {
        &self.sync_ack
    }

    /// Adds the next version (decided by the layout's Paxos).
    ///
    /// # Errors
    /// [`LayoutError::VersionMismatch`] unless `next` is the current version + 1, and
    /// [`LayoutError::Settings`] when its settings differ.
    pub fn push(&mut self, next: Layout) -> Result<(), LayoutError> {
        if next.version() != self.version() + 1 {
            return Err(LayoutError::VersionMismatch {
                expected: self.version() + 1,
                current: next.version(),
            });
        }
        if let Some(m) = self.settings().mismatch(next.settings()) {
            return Err(LayoutError::Settings(m));
        }
        self.versions.push(next);
        Ok(())
    }

    /// Takes what `other` knows and this history does not: its newer versions (when
    /// they follow on from ours; a gap means `other` pruned what we lack, and we take
    /// its versions whole) and the larger tracker values. Whether anything changed.
    ///
    /// # Errors
    /// [`LayoutError::Settings`] when the two belong to different clusters; nothing
    /// changed then.
    pub fn merge(&mut self, other: &LayoutHistory) -> Result<bool, LayoutError> {
        if let Some(m) = self.settings().mismatch(other.settings()) {
            return Err(LayoutError::Settings(m));
        }
        let mut changed = false;
        if other.version() > self.version() {
            if other.versions[0].version() <= self.version() + 1 {
                let mine = self.version();
                self.versions.extend(
                    other
                        .versions
                        .iter()
                        .filter(|l| l.version() > mine)
                        .cloned(),
                );
            } else {
                self.versions = other.versions.clone();
            }
            changed = true;
        }
        for (mine, theirs) in [
            (&mut self.ack, &other.ack),
            (&mut self.sync, &other.sync),
            (&mut self.sync_ack, &other.sync_ack),
        ] {
            for (id, &v) in theirs {
                let e = mine.entry(id.clone()).or_insert(0);
                if v > *e {
                    *e = v;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Replaces a candidate's version-0 placeholder ([`Layout::unknown`]) with the
    /// cluster's history, if its partition count and N are the ones the candidate was
    /// configured with. Whether it did.
    ///
    /// # Errors
    /// [`LayoutError::Settings`] naming the setting that differs; nothing changed then.
    pub fn adopt(&mut self, other: &LayoutHistory) -> Result<bool, LayoutError> {
        if self.version() != 0 || other.version() == 0 {
            return self.merge(other);
        }
        let (mine, theirs) = (self.settings(), other.settings());
        if mine.partitions != theirs.partitions {
            return Err(LayoutError::Settings(format!(
                "partition count {} != {}",
                mine.partitions, theirs.partitions
            )));
        }
        if mine.n != theirs.n {
            return Err(LayoutError::Settings(format!(
                "n {} != {}",
                mine.n, theirs.n
            )));
        }
        *self = other.clone();
        Ok(true)
    }

    /// Whether `id` is a member (in any state) of any version in use.
    pub fn is_member(&self, id: &NodeId) -> bool {
        self.versions.iter().any(|l| l.member(id).is_some())
    }

    /// Raises `node`'s tracker `which` to `version` (trackers never go down). Whether it
    /// changed.
    pub fn advance(&mut self, which: Tracker, node: &NodeId, version: u64) -> bool {
        let map = match which {
            Tracker::Ack => &mut self.ack,
            Tracker::Sync => &mut self.sync,
            Tracker::SyncAck => &mut self.sync_ack,
        };
        let e = map.entry(node.clone()).or_insert(0);
        if version > *e {
            *e = version;
            true
        } else {
            false
        }
    }
}

/// One of [`LayoutHistory`]'s per-node trackers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracker {
    /// The node coordinates nothing under an older version.
    Ack,
    /// The node holds its partitions of the version in full.
    Sync,
    /// The node knows every node synced the version.
    SyncAck,
}

fn set_state(members: &mut [LayoutMember], id: &NodeId, state: MemberState) {
    if let Some(m) = members.iter_mut().find(|m| &m.id == id) {
        m.state = state;
    }
}

/// The ring members of the layout members that own partitions.
fn ring_members(members: &[LayoutMember]) -> Vec<Member> {
    members
        .iter()
        .filter(|m| m.state.owns_partitions())
        .map(|m| Member {
            id: m.id.clone(),
            zone: m.zone.clone(),
            weight: m.weight,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("a valid id")
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn settings() -> ClusterSettings {
        ClusterSettings {
            cluster_id: "c1".into(),
            partitions: 64,
            n: 3,
        }
    }

    fn layout(n: usize) -> Layout {
        let members = (1..=n)
            .map(|i| (id(&format!("n{i}")), addr(7000 + i as u16), None, 1))
            .collect();
        Layout::initial(settings(), members).unwrap()
    }

    fn join(name: &str) -> Change {
        Change::Join {
            id: id(name),
            addr: addr(7100),
            zone: None,
            weight: 1,
        }
    }

    const DOWN: fn(&NodeId) -> bool = |_| false;

    #[test]
    fn a_join_moves_partitions_only_to_the_newcomer() {
        let l = layout(3);
        let plan = l.plan(&[join("n4")]).unwrap();
        assert_eq!(plan.next.version(), 2);
        assert_eq!(
            plan.next.member(&id("n4")).unwrap().state,
            MemberState::Joining
        );
        assert!(plan.moves.moves.iter().all(|m| m.to == id("n4")));
        assert_eq!(plan.partitions[&id("n4")], (0, 16));
        assert_eq!(plan.moves.moved_count(), 16);
    }

    #[test]
    fn leaving_or_removing_below_n_members_is_refused() {
        let l = layout(3);
        for change in [
            Change::Leave { id: id("n1") },
            Change::Remove { id: id("n2") },
        ] {
            assert_eq!(
                l.check_stage(&[], &change, DOWN),
                Err(LayoutError::TooFewMembers { remaining: 2, n: 3 })
            );
        }
        let l = layout(4);
        let plan = l.plan(&[Change::Leave { id: id("n1") }]).unwrap();
        assert_eq!(
            plan.next.member(&id("n1")).unwrap().state,
            MemberState::Leaving
        );
        assert_eq!(plan.partitions[&id("n1")].1, 0);
        assert!(plan.moves.moves.iter().all(|m| m.from == id("n1")));
    }

    #[test]
    fn a_replacement_takes_the_old_partitions_and_fences_the_old_id() {
        let l = layout(3);
        let replace = Change::Replace {
            old: id("n2"),
            new: id("n9"),
            addr: addr(7109),
        };
        assert_eq!(
            l.check_stage(&[], &replace, |_| true),
            Err(LayoutError::ReplaceAlive { id: id("n2") })
        );
        l.check_stage(&[], &replace, DOWN).unwrap();
        let next = l.commit(&[replace], 1).unwrap();
        assert_eq!(
            next.ring().owned_partitions(&id("n9")),
            l.ring().owned_partitions(&id("n2"))
        );
        assert_eq!(next.member(&id("n2")).unwrap().state, MemberState::Removed);
        // The old id can never come back.
        assert_eq!(
            next.check_stage(&[], &join("n2"), DOWN),
            Err(LayoutError::Fenced { id: id("n2") })
        );
    }

    #[test]
    fn refusals_name_the_problem_and_change_nothing() {
        let l = layout(3);
        assert_eq!(
            l.check_stage(&[], &join("n1"), DOWN),
            Err(LayoutError::AlreadyMember { id: id("n1") })
        );
        assert_eq!(
            l.check_stage(&[], &Change::Leave { id: id("zz") }, DOWN),
            Err(LayoutError::NotAMember { id: id("zz") })
        );
        assert_eq!(
            l.check_stage(&[join("n4")], &join("n4"), DOWN),
            Err(LayoutError::AlreadyStaged { id: id("n4") })
        );
        assert_eq!(l.plan(&[]), Err(LayoutError::NothingStaged));
        assert_eq!(
            l.commit(&[join("n4")], 7),
            Err(LayoutError::VersionMismatch {
                expected: 7,
                current: 1
            })
        );
        let zero = Change::Join {
            id: id("n5"),
            addr: addr(7105),
            zone: None,
            weight: 0,
        };
        assert!(matches!(
            l.check_stage(&[], &zero, DOWN),
            Err(LayoutError::Ring(RingError::ZeroWeight { .. }))
        ));
        assert_eq!(l.version(), 1);
        assert_eq!(l, layout(3));
    }

    #[test]
    fn two_nodes_with_different_settings_say_which_differs() {
        let a = settings();
        assert_eq!(a.mismatch(&a.clone()), None);
        let b = ClusterSettings { n: 5, ..a.clone() };
        assert_eq!(a.mismatch(&b).as_deref(), Some("n 3 != 5"));
        let c = ClusterSettings {
            cluster_id: "c2".into(),
            ..a.clone()
        };
        assert!(a.mismatch(&c).unwrap().contains("cluster id"));
    }

    #[test]
    fn a_layout_round_trips_through_the_wire_encoding() {
        let l = layout(4);
        let bytes = postcard::to_allocvec(&l).unwrap();
        let back: Layout = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn a_history_takes_newer_versions_and_larger_trackers_and_refuses_another_cluster() {
        let l = layout(4);
        let mut a = LayoutHistory::new(l.clone());
        let staged = [Change::Leave { id: id("n1") }];
        let v2 = l.commit(&staged, 1).unwrap();
        let mut b = a.clone();
        assert!(matches!(
            b.push(l.clone()),
            Err(LayoutError::VersionMismatch { .. })
        ));
        b.push(v2.clone()).unwrap();
        assert!(b.advance(Tracker::Ack, &id("n2"), 2));
        assert!(!b.advance(Tracker::Ack, &id("n2"), 1));
        assert_eq!(a.merge(&b), Ok(true));
        assert_eq!(a.version(), 2);
        assert_eq!(a.versions().len(), 2);
        assert_eq!(a.acks()[&id("n2")], 2);
        // Idempotent, and an older history changes nothing.
        assert_eq!(a.merge(&b), Ok(false));
        assert_eq!(a.merge(&LayoutHistory::new(l.clone())), Ok(false));
        assert_eq!(a, b);
        let other = LayoutHistory::new(
            Layout::initial(
                ClusterSettings {
                    cluster_id: "other".into(),
                    ..settings()
                },
                (1..=3)
                    .map(|i| (id(&format!("n{i}")), addr(i), None, 1))
                    .collect(),
            )
            .unwrap(),
        );
        assert!(matches!(a.merge(&other), Err(LayoutError::Settings(_))));
        assert_eq!(a, b);
    }

    #[test]
    fn derived_settings_do_not_depend_on_the_member_order() {
        let x = ClusterSettings::derived(256, 3, &[id("a"), id("b"), id("c")]);
        let y = ClusterSettings::derived(256, 3, &[id("c"), id("a"), id("b")]);
        assert_eq!(x, y);
        assert_ne!(x, ClusterSettings::derived(256, 3, &[id("a"), id("b")]));
        assert_ne!(
            x,
            ClusterSettings::derived(128, 3, &[id("a"), id("b"), id("c")])
        );
    }
}
