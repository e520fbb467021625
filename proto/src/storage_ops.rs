//! The storage operations the engine asks its driver to carry out, and their results.
//!
//! The engine never touches the disk: it emits a [`StorageOp`] and later receives the
//! matching [`StorageResult`]: a [`StorageReply`], or a [`StorageFailure`] saying why the
//! op could not run. Each op is atomic per key (the driver holds the key's lock
//! across its read-modify-write); the object logic it runs is this crate's
//! ([`crate::Object::update`], [`crate::Object::merge`]), so the driver holds no
//! replication logic of its own.

use std::time::Duration;

use shoal_ring::{NodeId, PartitionId};

use crate::causality::CausalContext;
use crate::object::{Object, SiblingValue, UpdateError};
use crate::time::Time;

/// One storage operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageOp {
    /// Read the local copy of a key.
    Read {
        /// Partition of the key.
        partition: PartitionId,
        /// The key.
        key: Vec<u8>,
    },
    /// Read the hint kept for `target` of a key. A hint expired at `now` (see
    /// [`HintRecord::content_expired`]) reads as none: a stand-in must never answer a read
    /// with what a reaped tombstone may have superseded.
    ReadHint {
        /// The primary the hint is for.
        target: NodeId,
        /// Partition of the key.
        partition: PartitionId,
        /// The key.
        key: Vec<u8>,
        /// The reading node's time.
        now: Time,
        /// `handoff.ttl`.
        ttl: Duration,
    },
    /// Coordinate a client write: mint the next dot of this node's actor, apply
    /// [`Object::update`] to the local copy, store it. Replies [`StorageReply::Coordinated`].
    Coordinate {
        /// Partition of the key.
        partition: PartitionId,
        /// The key.
        key: Vec<u8>,
        /// The client's context.
        context: CausalContext,
        /// The value or tombstone.
        value: SiblingValue,
        /// The coordinator's time (the sibling's timestamp).
        now: Time,
        /// Refuse the write if the object would grow past this.
        max_object_bytes: usize,
        /// Refuse the write if the object would hold more siblings than this
        /// ([`StorageReply::TooManySiblings`]).
        max_siblings: usize,
    },
    /// Merge an object into the local copy. Replies [`StorageReply::Merged`].
    Merge {
        /// Partition of the key.
        partition: PartitionId,
        /// The key.
        key: Vec<u8>,
        /// The object to merge.
        object: Object,
        /// Refuse if the merged object would grow past this.
        max_object_bytes: usize,
    },
    /// Merge an object into the hint kept for `target`, within the per-target bounds.
    /// A stored hint expired at `now` is replaced, never merged into (the merge would
    /// carry its values on past their TTL); an object that is itself expired is refused
    /// ([`HintRejection::Expired`]). Replies [`StorageReply::HintStored`] or
    /// [`StorageReply::HintRejected`].
    StoreHint {
        /// The primary the hint is for.
        target: NodeId,
        /// Partition of the key.
        partition: PartitionId,
        /// The key.
        key: Vec<u8>,
        /// The object.
        object: Object,
        /// Stored-at time (kept from the first store of this hint).
        now: Time,
        /// Bound on hints for this target.
        max_hints: u64,
        /// Bound on hint bytes for this target.
        max_bytes: u64,
        /// `handoff.ttl`.
        ttl: Duration,
    },
    /// Up to `limit` hints for `target`, in key order after `after`. Replies
    /// [`StorageReply::Hints`]; fewer than `limit` means the listing reached the end.
    ListHints {
        /// The primary.
        target: NodeId,
        /// Most hints to return.
        limit: usize,
        /// Resume after this hint (partition and key) of the previous page.
        after: Option<(PartitionId, Vec<u8>)>,
    },
    /// Delete a delivered hint, unless it changed since it was read: it is deleted only
    /// if `delivered` includes everything the stored hint holds now.
    DeleteHint {
        /// The primary.
        target: NodeId,
        /// Partition of the key.
        partition: PartitionId,
        /// The key.
        key: Vec<u8>,
        /// What was delivered.
        delivered: Object,
    },
    /// Drop an expired hint, only if it is still the one listed: its stored bytes still
    /// have `digest` ([`HintRecord::digest`]). A hint stored for the key since the listing
    /// stays. Replies [`StorageReply::HintDeleted`].
    DropHint {
        /// The primary.
        target: NodeId,
        /// Partition of the key.
        partition: PartitionId,
        /// The key.
        key: Vec<u8>,
        /// The digest of the hint as listed.
        digest: u64,
    },
    /// Count and size of hints per target. Replies [`StorageReply::HintSummary`].
    HintSummary,
    /// Hashes of Merkle tree nodes of a partition. Replies [`StorageReply::TreeNodes`].
    TreeNodes {
        /// The partition.
        partition: PartitionId,
        /// Level, 0 at the root.
        level: u8,
        /// Indices within the level.
        indices: Vec<u32>,
    },
    /// (key, digest) pairs of leaf segments. Replies [`StorageReply::Segments`] for a
    /// prefix of `segments` (ascending): the reply stops before the segment whose pairs
    /// would take its key bytes (plus [`SEGMENT_ENTRY_OVERHEAD`] per pair) past
    /// `max_bytes`, after at least one whole segment, so that it fits in a frame.
    Segments {
        /// The partition.
        partition: PartitionId,
        /// Segment indices, ascending.
        segments: Vec<u32>,
        /// Bound on the size of the reply.
        max_bytes: usize,
    },
    /// Read several keys. Replies [`StorageReply::Objects`] for a prefix of `keys`: the
    /// read stops before the key whose key and stored object bytes would take the total
    /// past `max_bytes` (the first key is always read), so that the answer, and the push
    /// made of it, fit in a frame. The caller asks again for the rest.
    ReadMany {
        /// The partition.
        partition: PartitionId,
        /// The keys.
        keys: Vec<Vec<u8>>,
        /// Bound on the key and object bytes of the reply.
        max_bytes: usize,
    },
    /// Merge several objects. Replies [`StorageReply::MergedMany`].
    MergeMany {
        /// The partition.
        partition: PartitionId,
        /// Keys and objects.
        objects: Vec<(Vec<u8>, Object)>,
        /// Objects that would grow past this are skipped.
        max_object_bytes: usize,
    },
    /// Replace several keys' objects unconditionally (no merge): store each object given,
    /// delete each key given `None`. Only a node restored from a backup runs it, with its
    /// peer's copies (see `engine/restore.rs`): merging would keep values whose
    /// tombstones were reaped since the backup. Replies [`StorageReply::Replaced`].
    ReplaceMany {
        /// The partition.
        partition: PartitionId,
        /// Keys and the objects to store (`None`: delete the key).
        objects: Vec<(Vec<u8>, Option<Object>)>,
    },
    /// Digests of several keys. Replies [`StorageReply::Digests`].
    Digests {
        /// The partition.
        partition: PartitionId,
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// Up to `limit` keys of a partition, in key order after `after`, whose objects are
    /// tombstones older than `older_than`. Replies [`StorageReply::ReapCandidates`].
    ReapCandidates {
        /// The partition.
        partition: PartitionId,
        /// Tombstones written before this are candidates.
        older_than: Time,
        /// Resume after this stored key (from the previous page).
        after: Option<Vec<u8>>,
        /// Most candidates to return.
        limit: usize,
        /// Most objects to look at in this call (bounds the work of one call).
        scan_limit: usize,
    },
    /// Delete keys whose object digest is still the one given. Replies
    /// [`StorageReply::Reaped`].
    Reap {
        /// The partition.
        partition: PartitionId,
        /// Keys and expected digests.
        keys: Vec<(Vec<u8>, u64)>,
    },
    /// Root and key count of the Merkle trees of these partitions. Replies
    /// [`StorageReply::TreeSummaries`].
    TreeSummaries {
        /// The partitions.
        partitions: Vec<PartitionId>,
    },
    /// Store the node's layout state (history, Paxos acceptor state, staged changes) in
    /// the metadata space, synced to disk before the reply: an acceptor's promise must
    /// survive a crash. A state whose `seq` is not above the stored one's is not written
    /// (saves may finish out of order on the worker threads). Replies
    /// [`StorageReply::LayoutSaved`].
    SaveLayout(Box<crate::engine::PersistedLayout>),
    /// Read the stored layout state. Replies [`StorageReply::Layout`].
    LoadLayout,
    /// Delete every object of a partition and its Merkle tree: the node holds it in no
    /// layout version in use any more (after the barrier, see `engine/placement.rs`).
    /// Replies [`StorageReply::Dropped`].
    DropPartition {
        /// The partition.
        partition: PartitionId,
    },
}

impl StorageOp {
    /// A short name for metrics and logs.
    pub fn op_name(&self) -> &'static str {
        match self {
            StorageOp::Read { .. } => "read",
            StorageOp::ReadHint { .. } => "read_hint",
            StorageOp::Coordinate { .. } => "coordinate",
            StorageOp::Merge { .. } => "merge",
            StorageOp::StoreHint { .. } => "store_hint",
            StorageOp::ListHints { .. } => "list_hints",
            StorageOp::DeleteHint { .. } => "delete_hint",
            StorageOp::DropHint { .. } => "drop_hint",
            StorageOp::HintSummary => "hint_summary",
            StorageOp::TreeNodes { .. } => "tree_nodes",
            StorageOp::Segments { .. } => "segments",
            StorageOp::ReadMany { .. } => "read_many",
            StorageOp::MergeMany { .. } => "merge_many",
            StorageOp::Digests { .. } => "digests",
            StorageOp::ReapCandidates { .. } => "reap_candidates",
            StorageOp::Reap { .. } => "reap",
            StorageOp::TreeSummaries { .. } => "tree_summaries",
            StorageOp::ReplaceMany { .. } => "replace_many",
            StorageOp::SaveLayout(_) => "save_layout",
            StorageOp::LoadLayout => "load_layout",
            StorageOp::DropPartition { .. } => "drop_partition",
        }
    }

    /// The partition whose objects (and Merkle tree) the op changes, if it changes any:
    /// the engine drops a partition only once no such op on it is in flight.
    pub fn data_partition(&self) -> Option<PartitionId> {
        match self {
            StorageOp::Coordinate { partition, .. }
            | StorageOp::Merge { partition, .. }
            | StorageOp::MergeMany { partition, .. }
            | StorageOp::ReplaceMany { partition, .. }
            | StorageOp::Reap { partition, .. } => Some(*partition),
            _ => None,
        }
    }

    /// Whether the op may change what is stored: its success is acknowledged only once
    /// durable when the node syncs before acknowledging (`durability = "sync"`, group
    /// commit). No wildcard: a new op must say.
    pub fn writes(&self) -> bool {
        match self {
            StorageOp::Coordinate { .. }
            | StorageOp::Merge { .. }
            | StorageOp::StoreHint { .. }
            | StorageOp::DeleteHint { .. }
            | StorageOp::DropHint { .. }
            | StorageOp::MergeMany { .. }
            | StorageOp::Reap { .. }
            | StorageOp::ReplaceMany { .. }
            | StorageOp::SaveLayout(_)
            | StorageOp::DropPartition { .. } => true,
            StorageOp::Read { .. }
            | StorageOp::ReadHint { .. }
            | StorageOp::ListHints { .. }
            | StorageOp::HintSummary
            | StorageOp::TreeNodes { .. }
            | StorageOp::Segments { .. }
            | StorageOp::ReadMany { .. }
            | StorageOp::Digests { .. }
            | StorageOp::ReapCandidates { .. }
            | StorageOp::TreeSummaries { .. }
            | StorageOp::LoadLayout => false,
        }
    }
}

/// Bytes a (key, digest) pair of a segment list takes beyond its key on the wire, at
/// most: the key's length and the digest, as varints.
pub const SEGMENT_ENTRY_OVERHEAD: usize = 3 + 10;

/// One stored hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintRecord {
    /// Partition of the key.
    pub partition: PartitionId,
    /// The key.
    pub key: Vec<u8>,
    /// The object to hand to the primary.
    pub object: Object,
    /// When the hint was first stored.
    pub stored_at: Time,
    /// xxh3 of the stored hint's bytes: a removal names it, so that it never removes a
    /// hint stored after the listing.
    pub digest: u64,
}

impl HintRecord {
    /// Whether a hint holding `object` (first stored at `stored_at`) is expired at `now`.
    ///
    /// A hint expires by the age of its content: its newest sibling's timestamp (the
    /// coordinator's clock when that value was written), or `stored_at` for a hint
    /// without siblings. Every access to a hint (read, store, list, deliver) applies this
    /// one rule. Config validation keeps `replication.tombstone_grace` above
    /// `handoff.ttl + 2 × replication.max_clock_skew`, so by the time any replica may reap
    /// a tombstone, every hint holding a value it superseded is expired on every node,
    /// whatever their clocks (see `ReplicationConfig::max_clock_skew`).
    pub fn content_expired(object: &Object, stored_at: Time, now: Time, ttl: Duration) -> bool {
        let newest = object
            .siblings()
            .iter()
            .map(|s| s.timestamp)
            .max()
            .unwrap_or(stored_at);
        now.saturating_since(newest) >= ttl
    }

    /// Whether this hint is expired at `now` ([`HintRecord::content_expired`]).
    pub fn is_expired(&self, now: Time, ttl: Duration) -> bool {
        HintRecord::content_expired(&self.object, self.stored_at, now, ttl)
    }
}

/// Hints kept for one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HintTotals {
    /// Number of hints.
    pub count: u64,
    /// Their encoded size.
    pub bytes: u64,
}

/// Why a hint was not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HintRejection {
    /// The target already has `max_hints` hints.
    TooMany,
    /// The target's hints would exceed `max_bytes`.
    TooLarge,
    /// The object is already past the hint TTL (a late or replayed message): a hint of
    /// it would be dropped unread, so it is not acknowledged as one.
    Expired,
}

/// The result of a [`StorageOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageReply {
    /// The local copy (or hint), if any.
    Object(Option<Object>),
    /// The write was applied: the stored object and the context for the client.
    Coordinated {
        /// The object as stored.
        object: Object,
        /// The client's new context.
        context: CausalContext,
    },
    /// The merge was applied.
    Merged {
        /// The object as stored.
        object: Object,
        /// Whether the stored copy changed.
        changed: bool,
    },
    /// The object would exceed `max_object_bytes`; nothing was stored.
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The write would leave more than `max_siblings` siblings; nothing was stored.
    TooManySiblings {
        /// Siblings the object would have held.
        siblings: usize,
        /// The limit.
        max: usize,
    },
    /// The hint was stored.
    HintStored,
    /// The hint was not stored: the target's bound is reached.
    HintRejected(HintRejection),
    /// Hints for a target.
    Hints(Vec<HintRecord>),
    /// Whether a hint was deleted.
    HintDeleted(bool),
    /// Hint totals for every target that has hints.
    HintSummary(Vec<(NodeId, HintTotals)>),
    /// Tree node hashes, in the order asked.
    TreeNodes(Vec<u64>),
    /// Per segment, its (key, digest) pairs in key order.
    Segments(Vec<(u32, crate::wire::KeyDigests)>),
    /// Per key, its object if any.
    Objects(Vec<(Vec<u8>, Option<Object>)>),
    /// How many merged objects changed the local copy, and their bytes.
    MergedMany {
        /// Objects that changed.
        changed: u64,
        /// Encoded bytes of the merged objects.
        bytes: u64,
    },
    /// Per key, its digest if any.
    Digests(Vec<Option<u64>>),
    /// Tombstone candidates and where to resume (`None`: the scan reached the end).
    ReapCandidates {
        /// Keys and digests.
        keys: Vec<(Vec<u8>, u64)>,
        /// Resume point.
        next: Option<Vec<u8>>,
    },
    /// How many keys were deleted.
    Reaped(u64),
    /// Per partition: root hash and key count.
    TreeSummaries(Vec<(PartitionId, u64, u64)>),
    /// How many keys a [`StorageOp::ReplaceMany`] changed (stored or deleted).
    Replaced(u64),
    /// The layout state is durable (this save, or a newer one).
    LayoutSaved,
    /// The stored layout state, if any.
    Layout(Option<Box<crate::engine::PersistedLayout>>),
    /// The partition was deleted ([`StorageOp::DropPartition`]).
    Dropped,
    /// The write whose result [`crate::Engine::handle_storage_applied`] handed over
    /// earlier is now durable: the group commit's sync covered it.
    Synced,
}

impl StorageReply {
    /// Whether this is a coordinator's local write, which a driver with group commit
    /// hands to the engine as soon as it is applied
    /// ([`crate::Engine::handle_storage_applied`]), before the sync that makes it durable
    /// (answered later with [`StorageReply::Synced`] or a failure): the engine sends the
    /// copies to the replicas while the local sync runs.
    pub fn replicates_before_durable(&self) -> bool {
        matches!(self, StorageReply::Coordinated { .. })
    }
}

/// The outcome of a [`StorageOp`], as the driver hands it back to the engine.
pub type StorageResult = Result<StorageReply, StorageFailure>;

/// With group commit, a writing op's `result` in two parts: what the engine gets at once
/// ([`crate::Engine::handle_storage_applied`]: a coordinator's local write, applied) and
/// what it gets through [`crate::Engine::handle_storage`] once the sync covering the
/// write ended ([`StorageReply::Synced`] for that write, any other write's whole result;
/// a failed sync replaces it with the failure).
pub fn split_at_sync(result: StorageResult) -> (Option<StorageResult>, StorageResult) {
    match result {
        Ok(reply) if reply.replicates_before_durable() => {
            (Some(Ok(reply)), Ok(StorageReply::Synced))
        }
        other => (None, other),
    }
}

/// Why a [`StorageOp`] could not run. Refusals that are part of an op's answer (an object
/// or hint over its bound) are [`StorageReply`]s, not failures.
///
/// The engine counts failures, fails the request that waited for the op, and passes the
/// message on to the requester ([`crate::RequestError::Storage`]); the variants keep the
/// cause typed up to that point so that drivers and tests can tell them apart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageFailure {
    /// The storage engine failed (an I/O error, a full disk, a closed store, ...), or the
    /// driver could not hand it the op (its storage workers stopped). The string is the
    /// engine's or driver's message: the engine's error type lives below this crate.
    #[error("{0}")]
    Engine(String),
    /// Stored bytes (an object or a hint) do not decode.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// The dot minted for a write is not newer than what the key's object already holds
    /// for this node's actor: the stored dot counter is behind the stored data.
    #[error("corrupt dot counter: {0}")]
    StaleDot(#[from] UpdateError),
    /// An anti-entropy op named a Merkle tree node or segment the tree does not have.
    #[error("invalid {what}: {detail}")]
    OutOfRange {
        /// What was asked for (a tree request, a segment request).
        what: &'static str,
        /// Which index was out of range.
        detail: String,
    },
    /// The node's disk is full: the engine refused the write (reads still work). Kept
    /// apart from [`StorageFailure::Engine`] so that the requester gets the typed
    /// [`crate::RequestError::DiskFull`], without the engine's text or paths.
    #[error("disk full")]
    DiskFull,
}
