//! The versioned ring: members, the owner of every partition, and the walks over it.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::RingError;
use crate::fresh::fresh_layout;
use crate::member::{validate_members, zone_numbers, Member};
use crate::node_id::NodeId;
use crate::partition::{key_hash, PartitionId, MAX_PARTITIONS, MIN_PARTITIONS};
use crate::plan::{PartitionMove, RebalancePlan};
use crate::quota::{quotas, ZeroQuota};
use crate::rebalance::rebalance_layout;
use crate::spread::UNASSIGNED;
use crate::walk::{DistinctOwners, PreferenceList, Selector};

/// Shoal's consistent-hash ring (Dynamo's strategy 3): Q equal partitions of the 64-bit key
/// hash, each owned by one member, plus a version that grows with every change.
///
/// A `Ring` value always satisfies its structural rules, whether built by [`Ring::new`],
/// [`Ring::rebalance`] or deserialized: Q is a power of two in range, members are valid,
/// unique and sorted by id, and every member owns at least one partition.
#[derive(Clone, PartialEq, Eq)]
pub struct Ring {
    version: u64,
    /// Member index (into `members`) of each partition's owner.
    owners: Vec<u32>,
    members: Vec<Member>,
    // Derived from the fields above.
    /// `64 - log2(Q)`: the hash shift that leaves the partition number.
    shift: u32,
    /// Zone number of each member.
    zone_of: Vec<u32>,
    zone_count: usize,
    /// Partitions owned by each member.
    owned: Vec<u32>,
}

fn check_partition_count(q: u32) -> Result<(), RingError> {
    if q.is_power_of_two() && (MIN_PARTITIONS..=MAX_PARTITIONS).contains(&q) {
        Ok(())
    } else {
        Err(RingError::InvalidPartitionCount { partitions: q })
    }
}

/// Rejects member lists longer than Q up front: some member would own nothing.
fn check_member_count(q: u32, members: &[Member]) -> Result<(), RingError> {
    match members.get(q as usize) {
        Some(extra) => Err(RingError::TooFewPartitions {
            partitions: q,
            member: extra.id.clone(),
        }),
        None => Ok(()),
    }
}

/// The quotas of `members`, or the error naming a member whose share rounds to zero.
fn member_quotas(q: u32, members: &[Member], current: &[u32]) -> Result<Vec<u32>, RingError> {
    let weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
    quotas(q, &weights, current).map_err(|ZeroQuota(i)| RingError::TooFewPartitions {
        partitions: q,
        member: members[i].id.clone(),
    })
}

impl Ring {
    /// The claim for a fresh cluster, version 1.
    ///
    /// `q` is the partition count: a power of two from [`MIN_PARTITIONS`] to
    /// [`MAX_PARTITIONS`] ([`DEFAULT_PARTITIONS`](crate::DEFAULT_PARTITIONS) unless there is a
    /// reason). It is fixed for the cluster's life. `members` may come in any order.
    ///
    /// # Errors
    /// [`RingError::InvalidPartitionCount`], [`RingError::NoMembers`],
    /// [`RingError::DuplicateMember`], [`RingError::ZeroWeight`], [`RingError::InvalidZone`],
    /// or [`RingError::TooFewPartitions`] when a member would own no partition.
    pub fn new(q: u32, members: Vec<Member>) -> Result<Ring, RingError> {
        check_partition_count(q)?;
        let members = validate_members(members)?;
        check_member_count(q, &members)?;
        let quota = member_quotas(q, &members, &vec![0; members.len()])?;
        let (zone_of, zone_count) = zone_numbers(&members);
        let owners = fresh_layout(&quota, &zone_of, zone_count);
        Ring::from_parts(1, members, owners)
    }

    /// The ring after a join, leave, decommission or reweight: `members` is the complete new
    /// member list. Returns the new ring (version + 1) and the partitions that change owner.
    ///
    /// Only the partitions that must move do: those of members that left, and those a member
    /// owns beyond its new quota. With equal weights a join moves only partitions *to* the new
    /// node (at most `ceil(Q / S_new)`), and a leave moves only the leaver's partitions.
    /// Zones and weights of remaining members may change too. The partition count never changes.
    ///
    /// # Errors
    /// The member-list errors of [`Ring::new`], and [`RingError::VersionExhausted`].
    pub fn rebalance(&self, members: Vec<Member>) -> Result<(Ring, RebalancePlan), RingError> {
        let version = self
            .version
            .checked_add(1)
            .ok_or(RingError::VersionExhausted)?;
        let members = validate_members(members)?;
        check_member_count(self.partition_count(), &members)?;
        let new_index: BTreeMap<&NodeId, u32> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (&m.id, i as u32))
            .collect();
        // Old member index -> new member index.
        let mapping: Vec<u32> = self
            .members
            .iter()
            .map(|m| new_index.get(&m.id).copied().unwrap_or(UNASSIGNED))
            .collect();
        let owners: Vec<u32> = self.owners.iter().map(|&o| mapping[o as usize]).collect();
        let mut current = vec![0u32; members.len()];
        for &owner in owners.iter().filter(|&&o| o != UNASSIGNED) {
            current[owner as usize] += 1;
        }
        let quota = member_quotas(self.partition_count(), &members, &current)?;
        let (zone_of, zone_count) = zone_numbers(&members);
        let owners = rebalance_layout(owners, &quota, &zone_of, zone_count);
        let next = Ring::from_parts(version, members, owners)?;
        let plan = self.moves_to(&next);
        Ok((next, plan))
    }

    /// The ring after `new` takes over exactly the partitions of `old` (a replaced
    /// machine): version + 1, every other partition unchanged. Returns it with the moves
    /// (all from `old` to `new`).
    ///
    /// # Errors
    /// [`RingError::NotAMember`] when `old` is not a member, [`RingError::DuplicateMember`]
    /// when `new` already is, the member checks of [`Ring::new`], and
    /// [`RingError::VersionExhausted`].
    pub fn replace(&self, old: &NodeId, new: Member) -> Result<(Ring, RebalancePlan), RingError> {
        let version = self
            .version
            .checked_add(1)
            .ok_or(RingError::VersionExhausted)?;
        if !self.contains_member(old) {
            return Err(RingError::NotAMember { id: old.clone() });
        }
        if self.contains_member(&new.id) {
            return Err(RingError::DuplicateMember { id: new.id });
        }
        let mut members: Vec<Member> = self
            .members
            .iter()
            .filter(|m| &m.id != old)
            .cloned()
            .collect();
        let new_id = new.id.clone();
        members.push(new);
        let members = validate_members(members)?;
        let index: BTreeMap<&NodeId, u32> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (&m.id, i as u32))
            .collect();
        let owners = self
            .owners
            .iter()
            .map(|&o| {
                let id = &self.members[o as usize].id;
                index[if id == old { &new_id } else { id }]
            })
            .collect();
        let next = Ring::from_parts(version, members, owners)?;
        let plan = self.moves_to(&next);
        Ok((next, plan))
    }

    /// Builds a ring from its stored fields, checking every structural rule.
    fn from_parts(version: u64, members: Vec<Member>, owners: Vec<u32>) -> Result<Ring, RingError> {
        let malformed = |reason| RingError::MalformedRing { reason };
        if version == 0 {
            return Err(malformed("version 0"));
        }
        let q = u32::try_from(owners.len()).map_err(|_| malformed("too many partitions"))?;
        check_partition_count(q)?;
        let mut owned = vec![0u32; members.len()];
        for &owner in &owners {
            let slot = owned
                .get_mut(owner as usize)
                .ok_or(malformed("a partition's owner is not a member"))?;
            *slot += 1;
        }
        if owned.contains(&0) {
            return Err(malformed("a member owns no partition"));
        }
        let (zone_of, zone_count) = zone_numbers(&members);
        Ok(Ring {
            version,
            owners,
            members,
            shift: 64 - q.trailing_zeros(),
            zone_of,
            zone_count,
            owned,
        })
    }

    /// The ring's version: 1 when created, one more after each rebalance. Of two rings of the
    /// same cluster, the higher version is the newer.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The partition count Q.
    pub fn partition_count(&self) -> u32 {
        // Q <= MAX_PARTITIONS, checked at construction.
        self.owners.len() as u32
    }

    /// All partitions, in ring order.
    pub fn partitions(&self) -> impl ExactSizeIterator<Item = PartitionId> {
        (0..self.partition_count()).map(PartitionId)
    }

    /// Validates a partition number from outside (a message, a request).
    ///
    /// # Errors
    /// [`RingError::PartitionOutOfRange`] if `raw >= Q`.
    pub fn checked_partition(&self, raw: u32) -> Result<PartitionId, RingError> {
        if raw < self.partition_count() {
            Ok(PartitionId(raw))
        } else {
            Err(RingError::PartitionOutOfRange {
                partition: raw,
                partitions: self.partition_count(),
            })
        }
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with id `id`, if it is in the ring.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.member_index(id).map(|i| &self.members[i])
    }

    /// Whether `id` is a member.
    pub fn contains_member(&self, id: &NodeId) -> bool {
        self.member_index(id).is_some()
    }

    fn member_index(&self, id: &NodeId) -> Option<usize> {
        self.members.binary_search_by(|m| m.id.cmp(id)).ok()
    }

    /// How many distinct zones the members are in (a member without a zone counts as a zone of
    /// its own).
    pub fn zone_count(&self) -> usize {
        self.zone_count
    }

    /// The partition of a key: the top `log2(Q)` bits of [`key_hash`].
    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        self.partition_of_hash(key_hash(key))
    }

    /// The partition of a key hash: its top `log2(Q)` bits.
    pub fn partition_of_hash(&self, hash: u64) -> PartitionId {
        // shift >= 48, so the result is below Q.
        PartitionId((hash >> self.shift) as u32)
    }

    /// The key hashes partition `p` covers.
    ///
    /// # Panics
    /// If `p` is not below Q (see [`Ring::checked_partition`]).
    pub fn hash_range(&self, p: PartitionId) -> RangeInclusive<u64> {
        assert!(p.0 < self.partition_count(), "partition {p} out of range");
        let start = u64::from(p.0) << self.shift;
        start..=start | (u64::MAX >> (64 - self.shift))
    }

    /// The owner (primary) of partition `p`.
    ///
    /// # Panics
    /// If `p` is not below Q; check untrusted numbers with [`Ring::checked_partition`].
    pub fn owner(&self, p: PartitionId) -> &NodeId {
        &self.members[self.owners[p.index()] as usize].id
    }

    /// How many partitions `node` owns (0 if it is not a member).
    pub fn owned_count(&self, node: &NodeId) -> usize {
        self.member_index(node)
            .map_or(0, |i| self.owned[i] as usize)
    }

    /// The partitions `node` owns, in ring order.
    pub fn owned_partitions(&self, node: &NodeId) -> Vec<PartitionId> {
        let Some(m) = self.member_index(node) else {
            return Vec::new();
        };
        self.partitions()
            .filter(|p| self.owners[p.index()] as usize == m)
            .collect()
    }

    /// The member indices of the preference list of `p` (see [`Ring::preference_list`]).
    fn preference_indices(&self, p: PartitionId, n: usize) -> Vec<u32> {
        assert!(p.0 < self.partition_count(), "partition {p} out of range");
        let mut selector = Selector::new(&self.zone_of, self.zone_count, n);
        for node in DistinctOwners::new(&self.owners, self.members.len(), p.index()) {
            if selector.is_full() {
                break;
            }
            selector.offer(node);
        }
        selector.picked
    }

    fn ids(&self, indices: impl IntoIterator<Item = u32>) -> Vec<NodeId> {
        indices
            .into_iter()
            .map(|i| self.members[i as usize].id.clone())
            .collect()
    }

    /// The `n` distinct nodes responsible for partition `p`: `min(n, members)` of them, the
    /// owner of `p` first.
    ///
    /// Walking clockwise from `p` and skipping nodes already taken, the list first covers
    /// `min(n, zones)` distinct zones (nodes whose zone is already covered are passed over),
    /// then fills up with the passed-over nodes in clockwise order. So when at least `n` zones
    /// exist the `n` nodes are in `n` distinct zones. A member without a zone is a zone of its
    /// own; without zones the list is simply the first `n` distinct owners clockwise.
    ///
    /// # Panics
    /// If `p` is not below Q; check untrusted numbers with [`Ring::checked_partition`].
    pub fn preference_list(&self, p: PartitionId, n: usize) -> PreferenceList {
        PreferenceList {
            partition: p,
            nodes: self.ids(self.preference_indices(p, n)),
        }
    }

    /// The preference list of `key`'s partition.
    pub fn preference_list_for_key(&self, key: &[u8], n: usize) -> PreferenceList {
        self.preference_list(self.partition_of(key), n)
    }

    /// Every member, in the order a request for `p` tries them: the preference list of size
    /// `n` first, then the fallbacks (the other members in clockwise order from `p`), which
    /// take writes for down replicas in a sloppy quorum.
    ///
    /// # Panics
    /// If `p` is not below Q; check untrusted numbers with [`Ring::checked_partition`].
    pub fn walk(&self, p: PartitionId, n: usize) -> Vec<NodeId> {
        assert!(p.0 < self.partition_count(), "partition {p} out of range");
        let mut selector = Selector::new(&self.zone_of, self.zone_count, n);
        for node in DistinctOwners::new(&self.owners, self.members.len(), p.index()) {
            selector.offer(node);
        }
        let Selector {
            picked, skipped, ..
        } = selector;
        self.ids(picked.into_iter().chain(skipped))
    }

    /// The fallbacks of `p`: [`Ring::walk`] without the preference list.
    ///
    /// # Panics
    /// If `p` is not below Q.
    pub fn fallbacks(&self, p: PartitionId, n: usize) -> Vec<NodeId> {
        let mut all = self.walk(p, n);
        all.drain(..n.min(all.len()));
        all
    }

    /// The partitions whose preference list of size `n` includes `node`, in ring order: what
    /// the node stores, checks with anti-entropy and reports in status.
    pub fn replica_partitions(&self, node: &NodeId, n: usize) -> Vec<PartitionId> {
        let Some(m) = self.member_index(node) else {
            return Vec::new();
        };
        self.partitions()
            .filter(|&p| self.preference_indices(p, n).contains(&(m as u32)))
            .collect()
    }

    /// The ownership changes from this ring to `next` (normally a later version of the same
    /// cluster). Empty if the partition counts differ, since no partition maps to another then.
    pub fn moves_to(&self, next: &Ring) -> RebalancePlan {
        if self.owners.len() != next.owners.len() {
            return RebalancePlan::default();
        }
        let moves = self
            .partitions()
            .filter_map(|p| {
                let from = self.owner(p);
                let to = next.owner(p);
                (from != to).then(|| PartitionMove {
                    partition: p,
                    from: from.clone(),
                    to: to.clone(),
                })
            })
            .collect();
        RebalancePlan { moves }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Prints the first owners only: a ring can have 65 536 partitions.
        struct OwnersPrefix<'a>(&'a Ring);
        impl fmt::Debug for OwnersPrefix<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                const SHOWN: usize = 32;
                let ring = self.0;
                let mut list = f.debug_list();
                list.entries(
                    ring.owners
                        .iter()
                        .take(SHOWN)
                        .map(|&o| ring.members[o as usize].id.as_str()),
                );
                if ring.owners.len() > SHOWN {
                    list.finish_non_exhaustive()
                } else {
                    list.finish()
                }
            }
        }
        f.debug_struct("Ring")
            .field("version", &self.version)
            .field("partitions", &self.owners.len())
            .field("members", &self.members)
            .field("owners", &OwnersPrefix(self))
            .finish()
    }
}

/// The encoded form: the version, the members sorted by id, and each partition's owner as an
/// index into the members.
#[derive(Serialize)]
struct RingRef<'a> {
    version: u64,
    members: &'a [Member],
    owners: &'a [u32],
}

/// The decoded form, checked by [`Ring::from_parts`] before it becomes a `Ring`.
#[derive(Deserialize)]
struct RingOwned {
    version: u64,
    members: Vec<Member>,
    owners: Vec<u32>,
}

impl Serialize for Ring {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RingRef {
            version: self.version,
            members: &self.members,
            owners: &self.owners,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ring {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RingOwned::deserialize(deserializer)?;
        let sorted = raw.members.windows(2).all(|w| w[0].id < w[1].id);
        if !sorted {
            return Err(serde::de::Error::custom(RingError::MalformedRing {
                reason: "members are not sorted by id, or repeat",
            }));
        }
        let members = validate_members(raw.members).map_err(serde::de::Error::custom)?;
        Ring::from_parts(raw.version, members, raw.owners).map_err(serde::de::Error::custom)
    }
}
