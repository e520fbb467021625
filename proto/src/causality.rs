//! Dotted version vectors: actors, dots, version vectors and causal contexts.
//!
//! A [`Dot`] names one write: the actor that coordinated it and that actor's counter.
//! A [`CausalContext`] is a set of dots, stored compactly as a [`VersionVector`] (every dot
//! of actor `a` up to `vv[a]`) plus a *cloud* of extra dots that are not contiguous with
//! the vector. Objects carry one as their clock; clients carry one as the context of a
//! read or a write.
//!
//! Laws (checked by property tests in `tests`):
//! - `merge` is set union: commutative, associative, idempotent.
//! - `covers(d)` after `merge(a, b)` equals `a.covers(d) || b.covers(d)`.
//! - `compact` never changes the set of covered dots.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The identity that mints dots: one node *incarnation*.
///
/// A node picks a fresh random actor when its data directory is created, so that a node
/// whose disk was wiped can never mint a dot that an older incarnation already used.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor(pub u64);

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The largest dot counter a context may carry. Counters come from a node-wide sequence
/// that cannot get anywhere near it; a context claiming more is forged or corrupt and is
/// refused, so that it cannot push a coordinator's counter to overflow.
pub const MAX_DOT_COUNTER: u64 = 1 << 62;

/// One write event: `counter` is unique per actor (a node-wide, persisted, increasing
/// sequence), so a dot names exactly one value forever.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The coordinator incarnation that minted the dot.
    pub actor: Actor,
    /// The actor's counter, starting at 1.
    pub counter: u64,
}

impl Dot {
    /// A dot of `actor` with `counter`.
    pub fn new(actor: Actor, counter: u64) -> Dot {
        Dot { actor, counter }
    }
}

impl fmt::Debug for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.counter)
    }
}

/// A version vector: for each actor, the highest counter such that every dot of that
/// actor up to it is known. Missing actors mean 0.
///
/// The entries are a vector sorted by actor, each actor once: a vector holds one entry
/// per node that coordinated writes of its key (a handful), where a sorted vector is one
/// allocation to decode, clone and search, against a B-tree node's larger one. Encoded as
/// a map (what the `BTreeMap` it replaced encoded; the same bytes).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(Vec<(Actor, u64)>);

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(a, c)| (a, c)))
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of actors to counters")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<VersionVector, M::Error> {
                // The length comes from the input: trust it only as far as a small
                // allocation goes.
                let mut entries: Vec<(Actor, u64)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(0).min(16));
                while let Some(entry) = map.next_entry::<Actor, u64>()? {
                    entries.push(entry);
                }
                // What this process encodes is sorted, each actor once; anything else is
                // put in order, an actor given twice keeping its higher counter.
                if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
                    entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                    entries.dedup_by_key(|e| e.0);
                }
                Ok(VersionVector(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(a, c)| (a, c)))
            .finish()
    }
}

impl VersionVector {
    /// The empty vector.
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The counter for `actor` (0 when absent).
    pub fn get(&self, actor: Actor) -> u64 {
        match self.0.binary_search_by_key(&actor, |e| e.0) {
            Ok(at) => self.0[at].1,
            Err(_) => 0,
        }
    }

    /// Whether `dot` is at or below this vector's entry for its actor.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Raise the entry of `actor` to at least `counter`.
    pub fn raise(&mut self, actor: Actor, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.0.binary_search_by_key(&actor, |e| e.0) {
            Ok(at) => {
                let e = &mut self.0[at].1;
                *e = (*e).max(counter);
            }
            Err(at) => self.0.insert(at, (actor, counter)),
        }
    }

    /// Pointwise maximum. One pass over both (they are sorted): actors of `other` found
    /// here are raised in place, the others appended; if any were, the two sorted runs
    /// are merged by the stable sort, which finds and merges runs in linear time.
    pub fn merge(&mut self, other: &VersionVector) {
        let known = self.0.len();
        let mut at = 0;
        for &(a, c) in &other.0 {
            while at < known && self.0[at].0 < a {
                at += 1;
            }
            if at < known && self.0[at].0 == a {
                self.0[at].1 = self.0[at].1.max(c);
            } else if c > 0 {
                // Raising by 0 adds no entry (as `raise`).
                self.0.push((a, c));
            }
        }
        if self.0.len() > known {
            self.0.sort_by_key(|e| e.0);
        }
    }

    /// Whether every entry of `other` is at or below this vector's.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|&(a, c)| self.get(a) >= c)
    }

    /// Number of actors with a non-zero entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no actor has an entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64)> + '_ {
        self.0.iter().copied()
    }
}

/// A set of dots: a version vector plus a cloud of dots beyond it.
///
/// Objects use it as their clock (what they have seen); clients use it as the context of
/// their next write (what they have seen, hence what that write replaces).
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "RawContext")]
pub struct CausalContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

impl fmt::Debug for CausalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cloud.is_empty() {
            write!(f, "{:?}", self.vv)
        } else {
            write!(f, "{:?}+{:?}", self.vv, self.cloud)
        }
    }
}

impl CausalContext {
    /// The empty context: a write with it replaces nothing.
    pub fn new() -> CausalContext {
        CausalContext::default()
    }

    /// A context that covers exactly the dots of `vv`.
    pub fn from_vv(vv: VersionVector) -> CausalContext {
        CausalContext {
            vv,
            cloud: BTreeSet::new(),
        }
    }

    /// The version-vector part.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The dots beyond the version vector.
    pub fn cloud(&self) -> &BTreeSet<Dot> {
        &self.cloud
    }

    /// Whether the context includes `dot`.
    pub fn covers(&self, dot: Dot) -> bool {
        self.vv.covers(dot) || self.cloud.contains(&dot)
    }

    /// Whether nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// The highest counter of `actor` this context knows of (in the vector or the cloud).
    pub fn max_counter(&self, actor: Actor) -> u64 {
        let cloud_max = self
            .cloud
            .range(Dot::new(actor, 0)..=Dot::new(actor, u64::MAX))
            .next_back()
            .map(|d| d.counter)
            .unwrap_or(0);
        self.vv.get(actor).max(cloud_max)
    }

    /// Add one dot.
    pub fn insert(&mut self, dot: Dot) {
        if !self.vv.covers(dot) {
            self.cloud.insert(dot);
            self.compact_actor(dot.actor);
        }
    }

    /// Set union.
    pub fn merge(&mut self, other: &CausalContext) {
        self.vv.merge(&other.vv);
        self.cloud.extend(other.cloud.iter().copied());
        self.compact();
    }

    /// Whether every dot of `other` is in this context.
    pub fn includes(&self, other: &CausalContext) -> bool {
        // Every vv entry of `other` must be covered: check each dot above our vv.
        for (actor, counter) in other.vv.iter() {
            let ours = self.vv.get(actor);
            if counter > ours {
                // The dots ours+1..=counter must all be in our cloud.
                let needed = counter - ours;
                let have = self
                    .cloud
                    .range(Dot::new(actor, ours + 1)..=Dot::new(actor, counter))
                    .count() as u64;
                if have != needed {
                    return false;
                }
            }
        }
        other.cloud.iter().all(|d| self.covers(*d))
    }

    /// Absorb cloud dots that are covered by, or contiguous with, the vector. The set of
    /// covered dots does not change.
    pub fn compact(&mut self) {
        let actors: BTreeSet<Actor> = self.cloud.iter().map(|d| d.actor).collect();
        for a in actors {
            self.compact_actor(a);
        }
    }

    fn compact_actor(&mut self, actor: Actor) {
        let mut top = self.vv.get(actor);
        let dots: Vec<Dot> = self
            .cloud
            .range(Dot::new(actor, 0)..=Dot::new(actor, u64::MAX))
            .copied()
            .collect();
        for d in dots {
            if d.counter <= top {
                self.cloud.remove(&d);
            } else if d.counter == top + 1 {
                self.cloud.remove(&d);
                top += 1;
            } else {
                break;
            }
        }
        self.vv.raise(actor, top);
    }

    /// Raise the vector entry of `actor` to `counter`, dropping cloud dots it now covers.
    ///
    /// Only the minting actor may do this for itself: it asserts that every dot of
    /// `actor` up to `counter` that concerns this key is known here.
    pub fn raise(&mut self, actor: Actor, counter: u64) {
        self.vv.raise(actor, counter);
        self.compact_actor(actor);
    }

    /// Drop cloud dots of `actor` strictly below `counter`, but for the `keep` highest of
    /// them. Used for the context returned after a write coordinated by `actor`: those
    /// dots are superseded there, and the coordinator's copy carries that to every
    /// replica; until a replica has it, the most recent ones still let the client's next
    /// write replace their values there (see [`Object::update`](crate::Object::update)).
    pub fn forget_cloud_below(&mut self, actor: Actor, counter: u64, keep: usize) {
        let below: Vec<Dot> = self
            .cloud
            .range(Dot::new(actor, 0)..Dot::new(actor, counter))
            .copied()
            .collect();
        for dot in &below[..below.len().saturating_sub(keep)] {
            self.cloud.remove(dot);
        }
    }

    /// The highest counter of any actor (for sanity checks against [`MAX_DOT_COUNTER`]).
    pub fn highest_counter(&self) -> u64 {
        let vv = self.vv.iter().map(|(_, c)| c).max().unwrap_or(0);
        let cloud = self.cloud.iter().map(|d| d.counter).max().unwrap_or(0);
        vv.max(cloud)
    }

    /// Number of dots stored explicitly (vector entries + cloud); a size measure.
    pub fn encoded_len_hint(&self) -> usize {
        self.vv.len() + self.cloud.len()
    }
}

/// The decoded shape of a [`CausalContext`], compacted on the way in.
#[derive(Deserialize)]
struct RawContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

impl From<RawContext> for CausalContext {
    fn from(raw: RawContext) -> CausalContext {
        let mut ctx = CausalContext {
            vv: raw.vv,
            cloud: raw.cloud,
        };
        ctx.vv.0.retain(|&(_, c)| c > 0);
        ctx.compact();
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(a: u64, c: u64) -> Dot {
        Dot::new(Actor(a), c)
    }

    /// A version vector encodes as the `BTreeMap` it was before (stored objects and
    /// peers of the previous release read it), and decodes from one.
    #[test]
    fn version_vectors_encode_as_the_map_they_replaced() {
        let mut vv = VersionVector::new();
        for (a, c) in [(300, 7), (5, 1), (u64::MAX, 2), (70_000, 1 << 40)] {
            vv.raise(Actor(a), c);
        }
        let map: std::collections::BTreeMap<Actor, u64> = vv.iter().collect();
        let bytes = postcard::to_stdvec(&vv).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&map).unwrap());
        let back: VersionVector = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, vv);
        assert_eq!(
            vv.iter().map(|(a, _)| a.0).collect::<Vec<_>>(),
            [5, 300, 70_000, u64::MAX]
        );
    }

    /// Merging is the pointwise maximum whether or not the actors overlap, and adds no
    /// entry for a zero counter.
    #[test]
    fn version_vector_merge_is_the_pointwise_maximum() {
        let vv = |pairs: &[(u64, u64)]| {
            let mut v = VersionVector::new();
            for &(a, c) in pairs {
                v.raise(Actor(a), c);
            }
            v
        };
        // Every actor of the other present: raised in place.
        let mut a = vv(&[(1, 3), (4, 1), (9, 2)]);
        a.merge(&vv(&[(4, 6), (9, 1)]));
        assert_eq!(a, vv(&[(1, 3), (4, 6), (9, 2)]));
        // Disjoint and interleaved actors.
        let mut b = vv(&[(2, 1), (7, 5)]);
        b.merge(&vv(&[(1, 4), (7, 2), (8, 1)]));
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            [(Actor(1), 4), (Actor(2), 1), (Actor(7), 5), (Actor(8), 1)]
        );
        // A decoded zero counter is not copied in; merging into empty copies the rest.
        let zero: VersionVector = postcard::from_bytes(
            &postcard::to_stdvec(&std::collections::BTreeMap::from([
                (Actor(3), 0u64),
                (Actor(5), 2),
            ]))
            .unwrap(),
        )
        .unwrap();
        let mut c = VersionVector::new();
        c.merge(&zero);
        assert_eq!(c.iter().collect::<Vec<_>>(), [(Actor(5), 2)]);
        // A large merge stays linear: 100k actors each side, disjoint.
        let mut big = VersionVector(((0..100_000).map(|i| (Actor(2 * i), 1))).collect());
        big.merge(&VersionVector(
            (0..100_000).map(|i| (Actor(2 * i + 1), 1)).collect(),
        ));
        assert_eq!(big.len(), 200_000);
        assert!(big.0.windows(2).all(|w| w[0].0 < w[1].0));
    }

    /// Entries out of order, or an actor given twice, decode to the sorted vector, the
    /// actor with its higher counter.
    #[test]
    fn version_vectors_decode_unsorted_and_repeated_actors_into_order() {
        let pairs: Vec<(Actor, u64)> =
            vec![(Actor(9), 1), (Actor(2), 5), (Actor(9), 4), (Actor(2), 3)];
        // A map's encoding: the count, then each key and value.
        let mut bytes = postcard::to_stdvec(&(pairs.len() as u32)).unwrap();
        for p in &pairs {
            bytes.extend(postcard::to_stdvec(p).unwrap());
        }
        let vv: VersionVector = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            vv.iter().collect::<Vec<_>>(),
            [(Actor(2), 5), (Actor(9), 4)]
        );
        assert_eq!(vv.get(Actor(9)), 4);
        assert_eq!(vv.get(Actor(3)), 0);
    }

    #[test]
    fn insert_contiguous_dots_compacts_into_vector() {
        let mut c = CausalContext::new();
        c.insert(d(1, 2));
        assert!(c.cloud().contains(&d(1, 2)));
        c.insert(d(1, 1));
        assert!(c.cloud().is_empty());
        assert_eq!(c.vv().get(Actor(1)), 2);
        assert!(c.covers(d(1, 1)) && c.covers(d(1, 2)) && !c.covers(d(1, 3)));
    }

    #[test]
    fn includes_checks_cloud_holes() {
        let mut a = CausalContext::new();
        a.insert(d(1, 1));
        a.insert(d(1, 3));
        let mut b = CausalContext::new();
        b.raise(Actor(1), 3);
        assert!(!a.includes(&b), "a lacks dot 2");
        assert!(b.includes(&a));
        a.insert(d(1, 2));
        assert!(a.includes(&b));
    }

    #[test]
    fn max_counter_sees_cloud() {
        let mut c = CausalContext::new();
        c.insert(d(7, 9));
        assert_eq!(c.max_counter(Actor(7)), 9);
        assert_eq!(c.max_counter(Actor(8)), 0);
    }
}
