//! Shoal's consistent-hash ring: which nodes store which keys.
//!
//! The ring follows Dynamo's partitioning *strategy 3* (DeCandia et al., SOSP 2007): the
//! hash space is cut into Q equal partitions, Q fixed when the cluster is created, and each
//! partition is owned by one member node. The crate is pure: no IO, no clock, no randomness.
//! The same inputs always give the same ring, so every node computes the same answers.
//!
//! # Keys to partitions
//!
//! A key's hash is [`key_hash`]: XXH3-64 with seed 0 (crate `xxhash-rust`), fixed and
//! documented so that nodes, clients and future versions agree. Q is a power of two
//! ([`MIN_PARTITIONS`] to [`MAX_PARTITIONS`], default [`DEFAULT_PARTITIONS`]), and a key's
//! partition is the top `log2(Q)` bits of its hash ([`Ring::partition_of`]), so partition
//! `p + 1` follows `p` clockwise.
//!
//! # The claim
//!
//! Each member gets a quota: its weight's share of Q, rounded down or up (largest remainder),
//! so with equal weights every member owns `floor(Q/S)` or `ceil(Q/S)` partitions. Every
//! member owns at least one partition (a member list that would leave one with none is
//! rejected).
//!
//! A fresh ring ([`Ring::new`]) interleaves owners evenly: each member's partitions are due at
//! evenly spaced places round the ring, and the ring is filled partition by partition with the
//! earliest due member, skipping members in the previous partition's zone (then the previous
//! node) when another is available. With equal weights and no zones this is round robin. A
//! bounded local search then swaps nearby owners, minimising a score that penalises the same
//! node, then the same zone, within 5 consecutive partitions, closer repeats far more.
//!
//! A rebalance ([`Ring::rebalance`]) keeps every partition where it is unless its owner left
//! or owns more than its new quota; quotas round up preferably for members that already own
//! the extra partition, so the number of moves is the minimum. Freed partitions go to the
//! members below quota, chosen (and then improved by swaps that add no move) to keep owners
//! apart. Minimal movement sometimes forces repeats — the partitions of a leaver all sit
//! between the same few neighbours — so spread after rebalances is best effort, while a fresh
//! claim meets the laws below. The result is a new ring, one version higher, and a
//! [`RebalancePlan`] listing the moves; the data moves before ownership flips.
//!
//! # Preference lists
//!
//! The replicas of partition `p` ([`Ring::preference_list`]) are found by walking clockwise
//! from `p` and skipping nodes already taken; with zones, nodes in an already covered zone are
//! passed over until `min(N, zones)` zones are covered, then the passed-over nodes fill the
//! list in clockwise order. The remaining members, in clockwise order, are the fallbacks of a
//! sloppy quorum ([`Ring::walk`], [`Ring::fallbacks`]). A member without a zone is a zone of
//! its own, so without zones the list is Dynamo's "first N distinct owners".
//!
//! # Laws the tests check
//!
//! Property tests (`tests/claim_laws.rs`, fixed seed) over Q in 8..=1024, 1 to 40 members,
//! random ids, weights and zones, and random join/leave histories:
//!
//! - **balance**: equal weights give `floor(Q/S)` or `ceil(Q/S)` partitions per member;
//!   weights give `floor` or `ceil` of `Q * weight / total`; also after every rebalance;
//! - **spread** (fresh rings): with equal weights and no zones every `min(S, 5)` consecutive
//!   partitions have distinct owners when `S | Q` (otherwise every `w`, the widest window
//!   the counts allow, up to 5); neighbouring partitions have distinct owners when no member
//!   owns more than half, and are in distinct zones when no zone holds more than half;
//! - **spread** (rebalanced rings): joins keep windows of 3 distinct; after random histories
//!   with `S >= 8` and `Q >= 4S`, at most a fifth of the windows of 3 repeat an owner;
//! - **preference lists**: always `min(N, S)` distinct nodes, the owner first, the first
//!   `min(N, zones)` in distinct zones (so `N` zones whenever at least `N` exist); `walk`
//!   lists every member once, preference list first, then the rest in clockwise order;
//! - **minimal movement**: a join moves partitions only to the new node, at most
//!   `ceil(Q/S_new)`; a leave moves exactly the leaver's partitions; any change (weights,
//!   several joins and leaves at once) moves exactly the partitions members gain, and no
//!   member both gives and receives;
//! - **determinism**: the same inputs, in any member order, give the same ring and plan;
//! - **encoding**: a ring survives a serde round trip, and malformed encodings are rejected.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod fresh;
mod member;
mod node_id;
mod partition;
mod plan;
mod quota;
mod rebalance;
mod ring;
mod spread;
mod walk;

pub use error::RingError;
pub use member::{Member, DEFAULT_WEIGHT};
pub use node_id::{NodeId, MAX_NODE_ID_LEN};
pub use partition::{key_hash, PartitionId, DEFAULT_PARTITIONS, MAX_PARTITIONS, MIN_PARTITIONS};
pub use plan::{PartitionMove, RebalancePlan};
pub use ring::Ring;
pub use walk::PreferenceList;
