//! Merkle trees for anti-entropy, kept up to date on every write (like Riak's TicTac AAE),
//! and the exchange — a state machine without IO — that compares two of them.
//!
//! # Shape
//!
//! One tree per (partition, replica). Its leaves are *segments*: the key space of the
//! partition hashed into a fixed number of buckets (a power of two, default 1,024, at most
//! [`MAX_SEGMENTS`]). Above them, inner levels with a fan-out (a power of two, default 32)
//! up to a single root: with the defaults, widths 1, 32 and 1,024. When the segment count
//! is not a power of the fan-out, the root takes the remainder ([`MerkleShape`]). Every
//! level's hashes are stored in a `Vec` (about `segments × fanout / (fanout − 1)` words),
//! plus a key count per segment.
//!
//! # Hashing
//!
//! - A key's segment is the top `log2(segments)` bits of XXH3-64 of the key seeded with
//!   [`SEGMENT_HASH_SEED`] ([`MerkleTree::segment_of`]). The ring takes the partition from
//!   the top bits of the *unseeded* XXH3-64, which all keys of a partition share; the
//!   seeded hash is independent of it, so a partition's keys spread over all its segments.
//! - A (key, version digest) pair hashes to XXH3-64, seeded with [`PAIR_HASH_SEED`], of the
//!   key followed by the 8-byte little-endian digest ([`MerkleTree::pair_hash`]); the
//!   digest is [`Object::digest`](crate::Object::digest), a hash of the object's canonical
//!   encoding, so any change to a key's siblings or clock changes it.
//! - A segment's hash is the XOR of the pair hashes of its keys (0 when empty); an inner
//!   node's is the XOR of its children's, so every node is the XOR of the pair hashes of
//!   the keys beneath it, and the root that of all keys.
//!
//! # Update rule
//!
//! XOR is associative, commutative and its own inverse, so a write that takes a key from
//! digest `old` to `new` changes every node above the key's segment by the same
//! `delta = pair_hash(key, old) ^ pair_hash(key, new)`: [`MerkleTree::update`] XORs `delta`
//! into the segment and each ancestor — O(levels) word operations and two hashes, nothing
//! rescanned or rehashed. Inserting is `old = None`, removing `new = None`. The tree is
//! a function of the *set* of pairs only: the order of writes does not matter, and
//! [`MerkleTree::from_pairs`] over a storage scan gives exactly the incrementally kept
//! tree (property tests check both).
//!
//! The tree trusts its caller to report each write once, with the right old digest. If it
//! drifts anyway (a bug, a crash between the storage write and the tree update), a rebuild
//! from a scan repairs it: trees are rebuilt at start-up and checked against a rebuild
//! periodically (`shoal_node::executor`).
//!
//! # Exchange protocol
//!
//! Two replicas A (initiator) and B of a partition, trees of equal shape; its cost grows with
//! the number of differences, not with the data. [`Exchange`] is the state machine, without
//! IO; each [`Question`] goes to both replicas at once (A's own storage and B), and the two
//! [`Answer`]s are compared:
//!
//! 1. Both roots. Equal roots: done, one round trip.
//! 2. Otherwise the hashes of the children of the nodes that differ, level by level, down
//!    to the segments. A node whose hashes agree is never descended into.
//! 3. The (key, digest) lists of the differing segments, [`SEGMENTS_PER_STEP`] at a time.
//!    [`diff_segment`] splits each segment's keys into those only A has (A pushes them),
//!    only B has (A fetches them) and those with different digests (copied both ways and
//!    merged; object merge is commutative and idempotent, so either order converges).
//!    The copies of one step ([`Repairs`]) go in batches before the next step's lists are
//!    asked for.
//!
//! A node question names at most one level's nodes (1,024 hashes with the default shape),
//! a segment question [`SEGMENTS_PER_STEP`] segments. Writes may land during an exchange:
//! it is best-effort and the next exchange catches what it missed.
//!
//! # Collision argument
//!
//! Equal sets of pairs give equal trees, node for node, whatever the write order: that is
//! what convergence ("equal roots") rests on, and it is exact. The converse holds with
//! overwhelming probability: if the sets differ, a node's two hashes are equal only when
//! the XOR of the pair hashes of the symmetric difference beneath it is zero. Each key
//! appears once per tree, so those are hashes of distinct inputs; modelling XXH3 as a
//! random function, their XOR is uniform on 64 bits and vanishes with probability 2⁻⁶⁴ —
//! about 5 × 10⁻⁸ over 10¹² node comparisons. Plain XOR has known weak spots, and the
//! design avoids them:
//!
//! - two equal pair hashes cancel — but within one tree they only arise from a 64-bit
//!   collision between distinct pairs (or a caller inserting the same pair twice, which a
//!   rebuild heals);
//! - combining a key hash with a digest linearly (`h(key) ^ digest`) would let two keys
//!   that swap versions cancel out; the pair hash hashes key and digest *together*;
//! - keys and digests are positionally unambiguous (the digest has a fixed 8 bytes at the
//!   end), so no two pairs share a hash input.
//!
//! XXH3 is not a cryptographic hash: someone choosing keys *and* controlling which
//! replicas miss which writes could build a set that hides a difference from the tree. Read
//! repair still fixes such keys when they are read; the tree is a way to find differences
//! cheaply, not an authenticator.
//!
//! # Complexity
//!
//! With `S` segments, fan-out `F`, `L = 1 + ⌈log_F S⌉` levels and `n` keys:
//! an update is O(L) (3 XORs with the defaults) plus two XXH3 hashes; a rebuild is
//! O(n + S); memory is O(S) (≈ 17 KiB per tree with the defaults). An exchange with `k`
//! differing segments costs one round trip when in sync, and otherwise `L` round trips of
//! node hashes (the root's, then at most `k × F` per level), plus one per [`SEGMENTS_PER_STEP`]
//! differing segments carrying their keys (about `n / S` each) — independent of `n` beyond
//! that.

mod error;
mod exchange;
mod shape;
mod tree;

pub use error::MerkleError;
pub use exchange::{
    diff_segment, Answer, Exchange, ExchangeError, Question, Repairs, SegmentDiff, Side, Step,
    SEGMENTS_PER_STEP,
};
pub use shape::{MerkleShape, DEFAULT_FANOUT, DEFAULT_SEGMENTS, MAX_SEGMENTS};
pub use tree::{MerkleTree, PAIR_HASH_SEED, SEGMENT_HASH_SEED};
