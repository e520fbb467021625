//! Objects: the value of one key on one replica — a causal clock plus sibling values.
//!
//! An [`Object`] is a dotted-version-vector set: every sibling carries the [`Dot`] of the
//! write that made it, and the clock covers every dot the replica has seen (live or
//! superseded). Two operations change objects:
//!
//! - [`Object::update`], at a coordinator: the client's context removes the siblings it
//!   covers (what the client saw), and the new value is added under a freshly minted dot.
//! - [`Object::merge`], anywhere: the union of what two replicas know. A sibling survives
//!   unless the other side has seen its dot and dropped it.
//!
//! Laws (property tests in `tests/object_laws.rs`): merge is commutative, associative and
//! idempotent; a write with a read's context replaces exactly the siblings that read
//! returned; concurrent writes without context become siblings.
//!
//! Objects are kept canonical (siblings sorted by dot, clock compacted) so that two
//! objects holding the same information are `==` and encode to the same bytes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::causality::{CausalContext, Dot};
use crate::error::CodecError;
use crate::time::Time;

/// The payload of one sibling.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SiblingValue {
    /// A value written by a put. Encoded as a byte string (`serde_bytes`): the same
    /// postcard bytes as a sequence of `u8`, without visiting each byte.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A delete marker. Kept until every replica has it and the grace period has passed.
    Tombstone,
}

impl std::fmt::Debug for SiblingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SiblingValue::Data(v) if v.len() <= 32 => write!(f, "{:?}", String::from_utf8_lossy(v)),
            SiblingValue::Data(v) => write!(f, "<{} bytes>", v.len()),
            SiblingValue::Tombstone => write!(f, "<tombstone>"),
        }
    }
}

/// One concurrent version of a key's value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sibling {
    /// The write that made this sibling.
    pub dot: Dot,
    /// When the coordinator accepted the write (wall clock); tombstones age from it.
    pub timestamp: Time,
    /// The value or tombstone.
    pub value: SiblingValue,
}

impl Sibling {
    /// Whether this sibling is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        matches!(self.value, SiblingValue::Tombstone)
    }
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The dot is not newer than what the object or the context already knows of its
    /// actor: reusing it could make a new value look superseded.
    #[error("dot {dot:?} is not newer than counter {known} already known for its actor")]
    StaleDot {
        /// The dot offered.
        dot: Dot,
        /// The highest counter already known for that actor.
        known: u64,
    },
}

/// The state of one key on one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "RawObject")]
pub struct Object {
    clock: CausalContext,
    siblings: Vec<Sibling>,
}

/// Version byte at the front of every encoded object.
pub const OBJECT_FORMAT_VERSION: u8 = 1;

/// Dots of the coordinator's own actor below the new one that a write's reply keeps from
/// the request's context ([`Object::update`]): a replica as many writes behind the
/// coordinator still has the values they name replaced by the client's next write.
pub const REPLACED_DOTS_KEPT: usize = 4;

impl Object {
    /// An object that has seen nothing.
    pub fn new() -> Object {
        Object::default()
    }

    /// Build from parts (used by decoders and tests); canonicalises.
    pub fn from_parts(clock: CausalContext, mut siblings: Vec<Sibling>) -> Object {
        siblings.sort_by_key(|s| s.dot);
        siblings.dedup_by_key(|s| s.dot);
        let mut clock = clock;
        for s in &siblings {
            clock.insert(s.dot);
        }
        clock.compact();
        Object { clock, siblings }
    }

    /// Everything this replica has seen of the key.
    pub fn clock(&self) -> &CausalContext {
        &self.clock
    }

    /// The live siblings, in dot order.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// Whether this replica has seen nothing of the key.
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.clock.is_empty()
    }

    /// The data values (tombstones skipped), in dot order.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.siblings.iter().filter_map(|s| match &s.value {
            SiblingValue::Data(v) => Some(v.as_slice()),
            SiblingValue::Tombstone => None,
        })
    }

    /// When each data value was written (tombstones skipped), parallel to
    /// [`Object::values`].
    pub fn value_times(&self) -> impl Iterator<Item = Time> + '_ {
        self.siblings
            .iter()
            .filter(|s| !s.is_tombstone())
            .map(|s| s.timestamp)
    }

    /// Whether a read finds the key: at least one sibling is not a tombstone.
    pub fn is_found(&self) -> bool {
        self.siblings.iter().any(|s| !s.is_tombstone())
    }

    /// Whether every sibling is a tombstone (and there is at least one).
    pub fn is_tombstoned(&self) -> bool {
        !self.siblings.is_empty() && self.siblings.iter().all(Sibling::is_tombstone)
    }

    /// The newest timestamp of the tombstones, when [`Object::is_tombstoned`].
    pub fn tombstone_time(&self) -> Option<Time> {
        if self.is_tombstoned() {
            self.siblings.iter().map(|s| s.timestamp).max()
        } else {
            None
        }
    }

    /// Whether the object is tombstoned and its newest tombstone is older than `grace`.
    pub fn tombstone_expired(&self, now: Time, grace: Duration) -> bool {
        self.tombstone_time()
            .is_some_and(|t| now.saturating_since(t) >= grace)
    }

    /// The context a client gets back from a read: everything this object has seen.
    pub fn context(&self) -> CausalContext {
        self.clock.clone()
    }

    /// Apply a client write at the coordinator that minted `dot`.
    ///
    /// Siblings covered by `ctx` (what the client saw) are removed, and `value` becomes a
    /// new sibling. Returns the context to hand back to the client: its own context plus
    /// the new dot (not the whole clock, so that the client's next write replaces only
    /// what it has seen).
    pub fn update(
        &mut self,
        ctx: &CausalContext,
        value: SiblingValue,
        dot: Dot,
        timestamp: Time,
    ) -> Result<CausalContext, UpdateError> {
        let known = self
            .clock
            .max_counter(dot.actor)
            .max(ctx.max_counter(dot.actor));
        if dot.counter <= known {
            return Err(UpdateError::StaleDot { dot, known });
        }
        self.siblings.retain(|s| !ctx.covers(s.dot));
        self.clock.merge(ctx);
        // The minting actor knows every dot it minted for this key (it stores each one
        // locally before anything else), so it may raise its own entry over the gap.
        self.clock.raise(dot.actor, dot.counter);
        self.siblings.push(Sibling {
            dot,
            timestamp,
            value,
        });
        self.siblings.sort_by_key(|s| s.dot);
        let mut reply = ctx.clone();
        // Earlier cloud dots of this actor in the client's context are now superseded at
        // the coordinator, and the coordinator's object will carry that to every replica.
        // A replica that has not received it yet may still hold their values, and the
        // client's next write, if that replica coordinates it, must replace them there
        // too: the most recent [`REPLACED_DOTS_KEPT`] stay in the reply (they are the
        // client's last writes through this coordinator, or what they replaced). Older
        // ones go, so that a client keeping its write contexts keeps a bounded one.
        reply.forget_cloud_below(dot.actor, dot.counter, REPLACED_DOTS_KEPT);
        reply.insert(dot);
        // The coordinator knows every dot it minted for this key (see the raise above):
        // one that is not a live sibling here is superseded, so the reply may cover it
        // without replacing anything the client has not seen. Raising the reply's entry
        // up to just below the oldest of this actor's siblings the client has not seen
        // (concurrent writes coordinated here) turns the new dot and the gaps other keys
        // left in the node-wide counter into one vector entry, so that a client keeping
        // the union of its contexts keeps a bounded one.
        let unseen = self
            .siblings
            .iter()
            .filter(|s| s.dot.actor == dot.actor && s.dot != dot)
            .map(|s| s.dot.counter)
            .min();
        reply.raise(dot.actor, unseen.map_or(dot.counter, |c| c - 1));
        Ok(reply)
    }

    /// Merge what `other` knows into `self`. Returns whether `self` changed.
    pub fn merge(&mut self, other: &Object) -> bool {
        let merged = Object::merged(self, other);
        if merged == *self {
            false
        } else {
            *self = merged;
            true
        }
    }

    /// The merge of two objects (does not modify either).
    pub fn merged(a: &Object, b: &Object) -> Object {
        let mut siblings: Vec<Sibling> = Vec::with_capacity(a.siblings.len() + b.siblings.len());
        let (mut i, mut j) = (0, 0);
        // Both sibling lists are sorted by dot: a merge walk.
        while i < a.siblings.len() || j < b.siblings.len() {
            let sa = a.siblings.get(i);
            let sb = b.siblings.get(j);
            match (sa, sb) {
                (Some(x), Some(y)) if x.dot == y.dot => {
                    // Same dot: same write. Pick deterministically should they ever differ.
                    siblings.push(if key_of(x) >= key_of(y) {
                        x.clone()
                    } else {
                        y.clone()
                    });
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.dot < y.dot => {
                    if !b.clock.covers(x.dot) {
                        siblings.push(x.clone());
                    }
                    i += 1;
                }
                (Some(_), Some(y)) => {
                    if !a.clock.covers(y.dot) {
                        siblings.push(y.clone());
                    }
                    j += 1;
                }
                (Some(x), None) => {
                    if !b.clock.covers(x.dot) {
                        siblings.push(x.clone());
                    }
                    i += 1;
                }
                (None, Some(y)) => {
                    if !a.clock.covers(y.dot) {
                        siblings.push(y.clone());
                    }
                    j += 1;
                }
                (None, None) => break,
            }
        }
        let mut clock = a.clock.clone();
        clock.merge(&b.clock);
        Object { clock, siblings }
    }

    /// Whether `self` already includes everything `other` knows (merging `other` into
    /// `self` would change nothing).
    pub fn includes(&self, other: &Object) -> bool {
        Object::merged(self, other) == *self
    }

    /// Total bytes of data values (a cheap size measure for limits).
    pub fn data_bytes(&self) -> usize {
        self.siblings
            .iter()
            .map(|s| match &s.value {
                SiblingValue::Data(v) => v.len(),
                SiblingValue::Tombstone => 0,
            })
            .sum()
    }

    /// Encode with a leading format version byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends [`Object::encode`]'s bytes to `out`. The object is sized first
    /// ([`Object::encoded_len`], which copies nothing) and then written once into room
    /// of that size, instead of into a vector that grows by doubling (a reallocation
    /// and copy of the values at each step) and is then copied behind the version.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let len = self.encoded_len();
        if len != usize::MAX {
            out.resize(start + len, 0);
            out[start] = OBJECT_FORMAT_VERSION;
            if let Ok(used) = postcard::to_slice(self, &mut out[start + 1..]) {
                let used = used.len();
                out.truncate(start + 1 + used);
                return;
            }
            out.truncate(start);
        }
        out.push(OBJECT_FORMAT_VERSION);
        // Serialising plain data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
    }

    /// The length of [`Object::encode`]'s output, counted without encoding (no
    /// allocation, no copy of the values).
    pub fn encoded_len(&self) -> usize {
        let size = postcard::ser_flavors::Size::default();
        postcard::serialize_with_flavor::<_, _, usize>(self, size)
            .map_or(usize::MAX, |len| len.saturating_add(1))
    }

    /// Decode bytes made by [`Object::encode`]; rejects other versions and bad bytes.
    pub fn decode(bytes: &[u8]) -> Result<Object, CodecError> {
        let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
        if version != OBJECT_FORMAT_VERSION {
            return Err(CodecError::UnsupportedVersion {
                found: u16::from(version),
                supported: u16::from(OBJECT_FORMAT_VERSION),
            });
        }
        // Deserialising goes through `RawObject`, which re-canonicalises.
        let (obj, rest) =
            postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CodecError::Malformed(format!(
                "{} trailing bytes after the object",
                rest.len()
            )));
        }
        Ok(obj)
    }

    /// A 64-bit digest of the canonical encoding (for anti-entropy).
    pub fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.encode())
    }
}

/// The decoded shape of an [`Object`] before it is made canonical, so that bytes from
/// the wire or the disk can never break the ordering and coverage invariants.
#[derive(Deserialize)]
struct RawObject {
    clock: CausalContext,
    siblings: Vec<Sibling>,
}

impl From<RawObject> for Object {
    fn from(raw: RawObject) -> Object {
        Object::from_parts(raw.clock, raw.siblings)
    }
}

fn key_of(s: &Sibling) -> (&SiblingValue, Time) {
    (&s.value, s.timestamp)
}

impl PartialOrd for SiblingValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SiblingValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            (SiblingValue::Data(a), SiblingValue::Data(b)) => a.cmp(b),
            (SiblingValue::Data(_), SiblingValue::Tombstone) => std::cmp::Ordering::Greater,
            (SiblingValue::Tombstone, SiblingValue::Data(_)) => std::cmp::Ordering::Less,
            (SiblingValue::Tombstone, SiblingValue::Tombstone) => std::cmp::Ordering::Equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::Actor;

    fn data(s: &str) -> SiblingValue {
        SiblingValue::Data(s.as_bytes().to_vec())
    }

    /// Simulator seed 2001199 with sessions: a put coordinated by X replaced a sibling of
    /// X's (its context covered that dot) while a sibling of X the client had not seen
    /// stopped the reply's entry from being raised. The reply dropped the replaced dot, so
    /// the client's next write, coordinated by a replica that had not received X's copy
    /// yet, did not replace that value there: a value the client had replaced came back
    /// (for a while) and a session read returned it.
    #[test]
    fn a_writes_reply_still_covers_the_siblings_its_context_replaced() {
        let (x, y) = (Actor(1), Actor(2));
        let unseen = Dot::new(x, 4);
        let replaced = Dot::new(x, 5);
        // X coordinated two concurrent writes of the key (dots 4 and 5); a replica got
        // that copy of X's and nothing later.
        let mut at_x = Object::new();
        at_x.update(&CausalContext::new(), data("unseen"), unseen, Time::ZERO)
            .unwrap();
        let mut write_ctx = CausalContext::new();
        write_ctx.insert(Dot::new(x, 3));
        at_x.update(&write_ctx, data("replaced"), replaced, Time::ZERO)
            .unwrap();
        let mut lagging = at_x.clone();
        assert_eq!(lagging.values().count(), 2);
        // The client read "replaced" (its context covers dot 5, not the unseen dot 4) and
        // overwrites it through X, with dot 9.
        let mut ctx = CausalContext::new();
        ctx.insert(Dot::new(x, 3));
        ctx.insert(replaced);
        let reply = at_x
            .update(&ctx, data("new"), Dot::new(x, 9), Time::ZERO)
            .unwrap();
        assert!(
            reply.covers(replaced),
            "the reply forgot the replaced dot: {reply:?}"
        );
        assert!(
            !reply.covers(unseen),
            "the reply covers an unseen sibling: {reply:?}"
        );
        // Its next write (a delete) through the lagging replica, which has not received
        // X's copy, replaces the value it had replaced there too.
        lagging
            .update(&reply, SiblingValue::Tombstone, Dot::new(y, 1), Time::ZERO)
            .unwrap();
        let values: Vec<&[u8]> = lagging.values().collect();
        assert_eq!(values, vec![b"unseen".as_slice()]);
    }

    #[test]
    fn two_puts_without_context_are_siblings() {
        let mut o = Object::new();
        o.update(
            &CausalContext::new(),
            data("a"),
            Dot::new(Actor(1), 1),
            Time::ZERO,
        )
        .unwrap();
        o.update(
            &CausalContext::new(),
            data("b"),
            Dot::new(Actor(1), 2),
            Time::ZERO,
        )
        .unwrap();
        let vals: Vec<&[u8]> = o.values().collect();
        assert_eq!(vals, vec![b"a".as_slice(), b"b".as_slice()]);
    }

    #[test]
    fn put_with_read_context_replaces_siblings() {
        let mut o = Object::new();
        o.update(
            &CausalContext::new(),
            data("a"),
            Dot::new(Actor(1), 1),
            Time::ZERO,
        )
        .unwrap();
        o.update(
            &CausalContext::new(),
            data("b"),
            Dot::new(Actor(2), 1),
            Time::ZERO,
        )
        .unwrap();
        let ctx = o.context();
        o.update(&ctx, data("c"), Dot::new(Actor(1), 5), Time::ZERO)
            .unwrap();
        assert_eq!(o.values().collect::<Vec<_>>(), vec![b"c".as_slice()]);
    }

    #[test]
    fn stale_dot_is_refused() {
        let mut o = Object::new();
        o.update(
            &CausalContext::new(),
            data("a"),
            Dot::new(Actor(1), 3),
            Time::ZERO,
        )
        .unwrap();
        let err = o
            .update(
                &CausalContext::new(),
                data("b"),
                Dot::new(Actor(1), 2),
                Time::ZERO,
            )
            .unwrap_err();
        assert!(matches!(err, UpdateError::StaleDot { known: 3, .. }));
    }

    #[test]
    fn delete_with_context_leaves_tombstone_not_found() {
        let mut o = Object::new();
        o.update(
            &CausalContext::new(),
            data("a"),
            Dot::new(Actor(1), 1),
            Time::ZERO,
        )
        .unwrap();
        let ctx = o.context();
        o.update(
            &ctx,
            SiblingValue::Tombstone,
            Dot::new(Actor(1), 2),
            Time::from_micros(5),
        )
        .unwrap();
        assert!(!o.is_found());
        assert!(o.is_tombstoned());
        assert_eq!(o.tombstone_time(), Some(Time::from_micros(5)));
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut o = Object::new();
        o.update(
            &CausalContext::new(),
            data("a"),
            Dot::new(Actor(9), 1),
            Time::ZERO,
        )
        .unwrap();
        let bytes = o.encode();
        assert_eq!(o.encoded_len(), bytes.len());
        assert_eq!(Object::new().encoded_len(), Object::new().encode().len());
        assert_eq!(Object::decode(&bytes).unwrap(), o);
        assert!(matches!(
            Object::decode(&[99, 1, 2]),
            Err(CodecError::UnsupportedVersion { found: 99, .. })
        ));
        assert!(matches!(Object::decode(&[]), Err(CodecError::Empty)));
    }

    #[test]
    fn encoding_into_sized_room_writes_the_same_bytes_after_what_was_there() {
        let mut o = Object::new();
        for (i, len) in [0usize, 1, 127, 128, 1024, 70_000].into_iter().enumerate() {
            let dot = Dot::new(Actor(i as u64 + 1), 1);
            let value = SiblingValue::Data(vec![i as u8; len]);
            o.update(&CausalContext::new(), value, dot, Time::from_micros(7))
                .unwrap();
            // The bytes of the growing-vector encoding this replaced.
            let mut before = vec![OBJECT_FORMAT_VERSION];
            before.extend(postcard::to_stdvec(&o).unwrap());
            assert_eq!(o.encode(), before, "{} siblings", i + 1);
            let mut out = b"prefix".to_vec();
            o.encode_into(&mut out);
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(&out[6..], &before[..]);
            assert_eq!(Object::decode(&out[6..]).unwrap(), o);
        }
    }
}
