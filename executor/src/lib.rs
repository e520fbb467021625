//! Carries out the engine's [`StorageOp`]s against a [`Storage`] engine.
//!
//! The one executor: the node's storage workers, the simulator, the anti-entropy
//! benchmark and `shoal-proto`'s engine tests all run this code, so what is tested is
//! what runs. It is synchronous and does no IO of its own beyond the [`Storage`] calls;
//! each op's outcome is a [`StorageResult`] the driver hands straight back to the engine.
//!
//! Each op is an atomic read-modify-write of one key: the key's stripe lock is held
//! across read, object logic (always `shoal_proto`'s) and write. The executor also owns
//! the per-node state that lives next to the data:
//!
//! - the node's [`Actor`] (its incarnation id): a new random one at every open of the
//!   data directory, synced to disk before any dot is minted with it. Under `buffered`
//!   durability a power cut loses the end of the WAL, and with it writes this node
//!   acknowledged (their other replicas still hold them). `Object::update` raises the
//!   minting actor's clock entry over every counter it skipped, trusting that the local
//!   copy holds every dot the actor minted; after such a cut that is false, and a new
//!   write would cover (and its merges drop) the lost writes on the other replicas. An
//!   actor that lives for one open only never outlives what its store holds. Minting a
//!   new one only after an unclean shutdown (Riak's scheme) is not enough: a copy of a
//!   cleanly stopped node's directory restored later looks like a clean restart;
//! - the dot counter, a node-wide increasing sequence. Counter blocks are reserved in
//!   metadata, synced, before use (hi-lo), so a restart never reuses a counter: at most
//!   the rest of one block is skipped;
//! - one Merkle tree per partition ([`trees`]), updated with every object write under the
//!   partition's tree lock, rebuilt from storage at open;
//! - per-target hint totals ([`hints`]), rebuilt by a scan at open.
//!
//! Objects are stored under `be32(partition) ‖ be16(segment) ‖ key` (the storage crate
//! adds the partition; the executor the segment), so the keys of one Merkle segment are
//! one range: anti-entropy reads a differing segment without scanning its partition.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod hints;
mod layout;
pub mod metrics;
#[cfg(test)]
mod power_cut_tests;
mod reaped;
#[cfg(test)]
mod tests;
mod trees;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, TryLockError};

use shoal_proto::{
    Actor, CausalContext, Dot, HintTotals, Object, SiblingValue, StorageFailure, StorageOp,
    StorageReply, StorageResult, Time,
};
use shoal_ring::{NodeId, PartitionId};
use shoal_storage::{Space, Storage, StorageError};

pub use hints::{decode_hint, hint_key};
pub use reaped::REAPED_KEYS_KEPT;
pub use trees::TreeMismatch;

/// Bytes of the segment prefix that starts every key the executor stores in an object
/// partition (a big-endian `u16`, see `Executor::stored_key`).
const SEGMENT_PREFIX_BYTES: usize = 2;

/// The client's key in a stored object key whose partition prefix is already removed
/// (`shoal_storage::split_object_key`): what follows the segment prefix. `None` for a key
/// too short to have one.
pub fn key_of_stored(stored: &[u8]) -> Option<&[u8]> {
    stored.get(SEGMENT_PREFIX_BYTES..)
}

use trees::Trees;

/// Counters reserved per metadata write.
const DOT_BLOCK: u64 = 1 << 20;
/// Metadata entry: the node's actor id (u64, big-endian).
const META_ACTOR: &str = "actor";
/// Metadata entry: the highest dot counter reserved (u64, big-endian).
const META_DOT_RESERVED: &str = "dot_counter_reserved";
/// Metadata entry: the segment count of the object key layout (u32, big-endian).
const META_SEGMENTS: &str = "object_layout_segments";
/// Rows per page when scanning at open.
const SCAN_PAGE: usize = 4096;

/// Why the executor could not open its store or verify its trees. (Why an op failed is a
/// [`StorageFailure`]: it goes back to the engine.)
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Stored metadata did not decode.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// `new_actor` gave the actor of the previous open again: dots minted with it could
    /// repeat or cover ones the store lost.
    #[error("the new actor {actor:016x} is the one of the previous open")]
    ActorReused {
        /// The actor given.
        actor: u64,
    },
    /// The data directory was written with another object layout.
    #[error(
        "the data directory uses {found} Merkle segments per partition, this build {expected}"
    )]
    Layout {
        /// Segments recorded in the store.
        found: u32,
        /// Segments this build uses.
        expected: u32,
    },
}

struct DotCounter {
    next: u64,
    reserved: u64,
}

/// Runs storage ops for one node. Shared between the driver's storage worker threads.
pub struct Executor<S: Storage> {
    storage: S,
    locks: shoal_storage::KeyLocks,
    actor: Actor,
    dots: Mutex<DotCounter>,
    hints: Mutex<BTreeMap<NodeId, HintTotals>>,
    trees: Trees,
    /// Serialises layout saves (see `layout.rs`).
    layout_lock: Mutex<()>,
    /// The clocks of the tombstones reaped most recently (see `reaped.rs`), looked up
    /// by every read or merge of an absent key once anything is remembered.
    reaped: RwLock<reaped::ReapedKeys>,
    /// Whether anything is remembered in `reaped` (loaded at the open, or reaped
    /// since): until then a read or merge of an absent key takes no lock for it.
    any_reaped: AtomicBool,
}

impl<S: Storage> std::fmt::Debug for Executor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

fn read_u64(storage: &impl Storage, name: &str) -> Result<Option<u64>, ExecError> {
    match storage.get_meta(name)? {
        None => Ok(None),
        Some(bytes) => {
            let arr: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| ExecError::Corrupt {
                    what: "metadata",
                    detail: format!("{name} is {} bytes, expected 8", bytes.len()),
                })?;
            Ok(Some(u64::from_be_bytes(arr)))
        }
    }
}

/// A storage engine error as the engine receives it.
fn engine_failure(e: StorageError) -> StorageFailure {
    match e {
        StorageError::DiskFull => StorageFailure::DiskFull,
        other => StorageFailure::Engine(other.to_string()),
    }
}

fn decode_object(bytes: &[u8]) -> Result<Object, StorageFailure> {
    Object::decode(bytes).map_err(|e| StorageFailure::Corrupt {
        what: "object",
        detail: e.to_string(),
    })
}

/// The version digest of a stored object: its bytes are its canonical encoding, so this
/// equals [`Object::digest`].
pub fn raw_digest(raw: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(raw)
}

/// Whether an op may wait: for a lock, a disk read, a synced dot reservation, a write
/// stall. A storage thread may; a caller that must not block ([`Executor::try_execute`],
/// the node's driver) gives up instead, before anything was written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    May,
    Never,
}

/// How a read-modify-write ended short of its reply.
enum Stop {
    /// It failed; the engine gets the failure.
    Failed(StorageFailure),
    /// With [`Wait::Never`]: it would have had to wait, and changed nothing.
    WouldWait,
}

impl From<StorageFailure> for Stop {
    fn from(f: StorageFailure) -> Stop {
        Stop::Failed(f)
    }
}

/// `mutex`'s guard; with [`Wait::Never`], only if it is free now. A poisoned mutex is
/// taken as it is, as everywhere in the executor.
fn lock_with<T>(mutex: &Mutex<T>, wait: Wait) -> Result<MutexGuard<'_, T>, Stop> {
    match (wait, mutex.try_lock()) {
        (_, Ok(guard)) => Ok(guard),
        (_, Err(TryLockError::Poisoned(e))) => Ok(e.into_inner()),
        (Wait::May, Err(TryLockError::WouldBlock)) => {
            Ok(mutex.lock().unwrap_or_else(|e| e.into_inner()))
        }
        (Wait::Never, Err(TryLockError::WouldBlock)) => Err(Stop::WouldWait),
    }
}

/// [`lock_with`] for a read-write lock's shared side.
fn read_lock_with<T>(lock: &RwLock<T>, wait: Wait) -> Result<RwLockReadGuard<'_, T>, Stop> {
    match (wait, lock.try_read()) {
        (_, Ok(guard)) => Ok(guard),
        (_, Err(TryLockError::Poisoned(e))) => Ok(e.into_inner()),
        (Wait::May, Err(TryLockError::WouldBlock)) => {
            Ok(lock.read().unwrap_or_else(|e| e.into_inner()))
        }
        (Wait::Never, Err(TryLockError::WouldBlock)) => Err(Stop::WouldWait),
    }
}

/// The result of an op run with [`Wait::Never`]: `None` if it would have waited.
fn unless_waiting<T>(r: Result<T, Stop>) -> Option<Result<T, StorageFailure>> {
    match r {
        Ok(t) => Some(Ok(t)),
        Err(Stop::Failed(f)) => Some(Err(f)),
        Err(Stop::WouldWait) => None,
    }
}

/// The result of an op run with [`Wait::May`], which never gives up.
fn waited<T>(r: Result<T, Stop>) -> Result<T, StorageFailure> {
    r.map_err(|stop| match stop {
        Stop::Failed(f) => f,
        Stop::WouldWait => StorageFailure::Engine("an op that may wait gave up".into()),
    })
}

impl<S: Storage> Executor<S> {
    /// Open on `storage`: take a new actor from `new_actor()` (a fresh random id: every
    /// open gets its own, see the crate docs), reserve a block of dot counters, sync both
    /// to disk, and rebuild the hint totals and Merkle trees from a scan.
    pub fn open(storage: S, new_actor: impl FnOnce() -> u64) -> Result<Executor<S>, ExecError> {
        let expected = shoal_proto::AAE_SEGMENTS;
        match storage.get_meta(META_SEGMENTS)? {
            Some(b) => {
                let found = u32::from_be_bytes(b.as_slice().try_into().map_err(|_| {
                    ExecError::Corrupt {
                        what: "metadata",
                        detail: format!("{META_SEGMENTS} is {} bytes, expected 4", b.len()),
                    }
                })?);
                if found != expected {
                    return Err(ExecError::Layout { found, expected });
                }
            }
            None => storage.put_meta(META_SEGMENTS, &expected.to_be_bytes())?,
        }
        let actor = new_actor();
        if read_u64(&storage, META_ACTOR)? == Some(actor) {
            return Err(ExecError::ActorReused { actor });
        }
        let actor = Actor(actor);
        storage.put_meta(META_ACTOR, &actor.0.to_be_bytes())?;
        let reserved = read_u64(&storage, META_DOT_RESERVED)?.unwrap_or(0);
        // Counters up to `reserved` may have been used by an earlier run: start above.
        let next = reserved + 1;
        let reserved = reserved + DOT_BLOCK;
        storage.put_meta(META_DOT_RESERVED, &reserved.to_be_bytes())?;
        // On disk before the first dot is minted: a power cut cannot bring back the
        // previous actor or reservation.
        storage.flush()?;
        let reaped = reaped::ReapedKeys::load(&storage)?;
        let any_reaped = !reaped.is_empty();
        let exec = Executor {
            storage,
            locks: shoal_storage::KeyLocks::default(),
            actor,
            dots: Mutex::new(DotCounter { next, reserved }),
            hints: Mutex::new(BTreeMap::new()),
            trees: Trees::new(),
            layout_lock: Mutex::new(()),
            reaped: RwLock::new(reaped),
            any_reaped: AtomicBool::new(any_reaped),
        };
        exec.rebuild_hint_totals()?;
        exec.rebuild_trees()?;
        Ok(exec)
    }

    /// This node's actor.
    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// The storage engine.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    fn rebuild_hint_totals(&self) -> Result<(), ExecError> {
        let mut totals: BTreeMap<NodeId, HintTotals> = BTreeMap::new();
        let mut start: Vec<u8> = Vec::new();
        loop {
            let rows = self.storage.scan(Space::Hints, &start, None, SCAN_PAGE)?;
            let full = rows.len() == SCAN_PAGE;
            for (k, v) in &rows {
                if let Some((target, _, _)) = hints::split_hint_key(k) {
                    let t = totals.entry(target).or_default();
                    t.count += 1;
                    t.bytes += v.len() as u64;
                }
            }
            match rows.last() {
                Some((k, _)) if full => {
                    start = k.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        *self.hints.lock().unwrap_or_else(|e| e.into_inner()) = totals;
        Ok(())
    }

    fn mint(&self, at_least: u64, wait: Wait) -> Result<Dot, Stop> {
        let mut d = lock_with(&self.dots, wait)?;
        if d.next < at_least {
            d.next = at_least;
        }
        if d.next > d.reserved {
            if wait == Wait::Never {
                // The reservation is synced to disk: a storage thread's job.
                return Err(Stop::WouldWait);
            }
            let reserved = d.next + DOT_BLOCK;
            // Synced (once per block) so that no power cut can hand these counters out
            // again.
            self.storage
                .put_meta(META_DOT_RESERVED, &reserved.to_be_bytes())
                .and_then(|()| self.storage.flush())
                .map_err(engine_failure)?;
            d.reserved = reserved;
        }
        let dot = Dot::new(self.actor, d.next);
        d.next += 1;
        Ok(dot)
    }

    /// The stored key of `key` (segment prefix; the storage adds the partition).
    fn stored_key(&self, key: &[u8]) -> Vec<u8> {
        let seg = self.trees.segment_of(key);
        // Segments are < 2^16 (1,024 by default), so two bytes hold them.
        let mut out = Vec::with_capacity(SEGMENT_PREFIX_BYTES + key.len());
        out.extend_from_slice(&u16::try_from(seg).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(key);
        out
    }

    /// The raw stored bytes of a key's object.
    fn get_raw(
        &self,
        partition: PartitionId,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageFailure> {
        self.storage
            .get_object(partition, &self.stored_key(key))
            .map_err(engine_failure)
    }

    /// Write (or delete, with `None`) a key's object and update its partition's tree, as
    /// one step under the tree lock. The caller holds the key's lock and read `old`.
    fn put_raw(
        &self,
        partition: PartitionId,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), StorageFailure> {
        waited(self.put_raw_with(partition, key, old, new, Wait::May))
    }

    /// [`Executor::put_raw`]; with [`Wait::Never`] a write (not a delete) that would wait
    /// for the tree lock or a write stall gives up and writes nothing.
    fn put_raw_with(
        &self,
        partition: PartitionId,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
        wait: Wait,
    ) -> Result<(), Stop> {
        let stored = self.stored_key(key);
        let tree = self.trees.get(partition);
        let mut tree = lock_with(&tree, wait)?;
        match (new, wait) {
            (Some(bytes), Wait::Never) => {
                if !self
                    .storage
                    .try_put_object(partition, &stored, bytes)
                    .map_err(engine_failure)?
                {
                    return Err(Stop::WouldWait);
                }
            }
            (Some(bytes), Wait::May) => self
                .storage
                .put_object(partition, &stored, bytes)
                .map_err(engine_failure)?,
            (None, _) => self
                .storage
                .delete_object(partition, &stored)
                .map_err(engine_failure)?,
        }
        tree.update(key, old.map(raw_digest), new.map(raw_digest));
        Ok(())
    }

    /// The raw stored bytes of a key's object; with [`Wait::Never`], only if the store
    /// has them (or knows they are absent) in memory.
    fn get_raw_with(
        &self,
        partition: PartitionId,
        key: &[u8],
        wait: Wait,
    ) -> Result<Option<Vec<u8>>, Stop> {
        match wait {
            Wait::May => Ok(self.get_raw(partition, key)?),
            Wait::Never => self
                .storage
                .get_object_cached(partition, &self.stored_key(key))
                .map_err(engine_failure)?
                .ok_or(Stop::WouldWait),
        }
    }

    /// The key's stripe lock; with [`Wait::Never`], only if it is free.
    fn lock_key(
        &self,
        partition: PartitionId,
        key: &[u8],
        wait: Wait,
    ) -> Result<shoal_storage::KeyLockGuard<'_>, Stop> {
        match wait {
            Wait::May => Ok(self.locks.lock(partition, key)),
            Wait::Never => self.locks.try_lock(partition, key).ok_or(Stop::WouldWait),
        }
    }

    /// Runs `op` on the calling thread if it can without waiting (for a lock, a disk
    /// read, a synced dot reservation or a write stall): a replica read, a client write
    /// at its coordinator, a replica's merge. `None` for every other op and for one that
    /// would have waited, which changed nothing: the caller hands it to a storage
    /// thread. For a caller that must not block, such as the node's driver; only with a
    /// store whose writes do not sync (an fsync is a wait).
    pub fn try_execute(&self, op: &StorageOp) -> Option<StorageResult> {
        let result = match op {
            StorageOp::Read { partition, key } => return self.read_cached(*partition, key),
            StorageOp::Coordinate {
                partition,
                key,
                context,
                value,
                now,
                max_object_bytes,
                max_siblings,
            } => self.coordinate_with(
                *partition,
                key,
                context,
                value.clone(),
                *now,
                (*max_object_bytes, *max_siblings),
                Wait::Never,
            ),
            StorageOp::Merge {
                partition,
                key,
                object,
                max_object_bytes,
            } => self
                .merge_with(*partition, key, object, *max_object_bytes, Wait::Never)
                .map(|merged| merged.into_reply(*max_object_bytes)),
            _ => return None,
        };
        unless_waiting(result)
    }

    /// What [`Executor::execute`] answers to `StorageOp::Read { partition, key }`, if the
    /// storage engine can give it from memory (memtables, block cache); `None` when it
    /// would have to read the disk, so the caller runs the op on a storage thread. For a
    /// caller that must not block, such as the node's driver.
    pub fn read_cached(&self, partition: PartitionId, key: &[u8]) -> Option<StorageResult> {
        unless_waiting(self.read_with(partition, key, Wait::Never))
            .map(|r| r.map(StorageReply::Object))
    }

    /// `key`'s copy for a read: the stored object, or for a key whose tombstone this
    /// node reaped lately an object holding only the tombstone's clock (no value, the
    /// context a read of the tombstone gave), so that a reply still includes what the
    /// delete replaced: a session that saw a value the delete replaced is answered,
    /// instead of failing `NotCovered` on every read of the key (see `reaped.rs`).
    fn read_with(
        &self,
        partition: PartitionId,
        key: &[u8],
        wait: Wait,
    ) -> Result<Option<Object>, Stop> {
        match self.get_raw_with(partition, key, wait)? {
            Some(raw) => Ok(Some(decode_object(&raw)?)),
            None => {
                let reaped = self.reaped_base(partition, key, wait)?;
                if reaped.is_some() {
                    ::metrics::counter!(metrics::REAPED_READS_TOTAL).increment(1);
                }
                Ok(reaped)
            }
        }
    }

    /// The object this node stores for `key`, if any. Unlike `StorageOp::Read`, a key
    /// whose tombstone this node reaped reads as none: what is on disk, for inspection
    /// (tests and the simulator's checkers).
    pub fn stored_object(
        &self,
        partition: PartitionId,
        key: &[u8],
    ) -> Result<Option<Object>, StorageFailure> {
        self.get_raw(partition, key)?
            .map(|raw| decode_object(&raw))
            .transpose()
    }

    /// Run one op. A failure goes back to the engine as it is, which fails the request
    /// that waited for it with a `Storage` error.
    pub fn execute(&self, op: StorageOp) -> StorageResult {
        match op {
            StorageOp::Read { partition, key } => {
                waited(self.read_with(partition, &key, Wait::May)).map(StorageReply::Object)
            }
            StorageOp::ReadHint {
                target,
                partition,
                key,
                now,
                ttl,
            } => self.read_hint(&target, partition, &key, now, ttl),
            StorageOp::Coordinate {
                partition,
                key,
                context,
                value,
                now,
                max_object_bytes,
                max_siblings,
            } => waited(self.coordinate_with(
                partition,
                &key,
                &context,
                value,
                now,
                (max_object_bytes, max_siblings),
                Wait::May,
            )),
            StorageOp::Merge {
                partition,
                key,
                object,
                max_object_bytes,
            } => Ok(self
                .merge(partition, &key, &object, max_object_bytes)?
                .into_reply(max_object_bytes)),
            StorageOp::StoreHint {
                target,
                partition,
                key,
                object,
                now,
                max_hints,
                max_bytes,
                ttl,
            } => self.store_hint(
                &target, partition, &key, &object, now, max_hints, max_bytes, ttl,
            ),
            StorageOp::ListHints {
                target,
                limit,
                after,
            } => self.list_hints(&target, limit, after.as_ref()),
            StorageOp::DeleteHint {
                target,
                partition,
                key,
                delivered,
            } => self.delete_hint(
                &target,
                partition,
                &key,
                hints::Keep::UnlessIncludedIn(&delivered),
            ),
            StorageOp::DropHint {
                target,
                partition,
                key,
                digest,
            } => self.delete_hint(&target, partition, &key, hints::Keep::UnlessDigest(digest)),
            StorageOp::HintSummary => {
                let totals = self.hints.lock().unwrap_or_else(|e| e.into_inner());
                Ok(StorageReply::HintSummary(
                    totals
                        .iter()
                        .filter(|(_, t)| t.count > 0)
                        .map(|(id, t)| (id.clone(), *t))
                        .collect(),
                ))
            }
            StorageOp::TreeNodes {
                partition,
                level,
                indices,
            } => self.tree_nodes(partition, level, &indices),
            StorageOp::Segments {
                partition,
                segments,
                max_bytes,
            } => self.segments(partition, &segments, max_bytes),
            StorageOp::ReadMany {
                partition,
                keys,
                max_bytes,
            } => self.read_many(partition, keys, max_bytes),
            StorageOp::MergeMany {
                partition,
                objects,
                max_object_bytes,
            } => {
                let (mut changed, mut bytes) = (0u64, 0u64);
                for (key, object) in objects {
                    match self.merge(partition, &key, &object, max_object_bytes)? {
                        Merged::Stored { object, changed: c } => {
                            if c {
                                changed += 1;
                                bytes += object.data_bytes() as u64;
                            }
                        }
                        Merged::TooLarge { .. } => {
                            ::metrics::counter!(metrics::AAE_OBJECTS_TOO_LARGE_TOTAL).increment(1);
                        }
                    }
                }
                Ok(StorageReply::MergedMany { changed, bytes })
            }
            StorageOp::Digests { partition, keys } => {
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    out.push(self.get_raw(partition, &key)?.map(|b| raw_digest(&b)));
                }
                // A reaper's every-replica check counts these: what they confirm must be
                // on disk, or a power cut takes a tombstone the other replicas then reap
                // and the value it deleted comes back (docs/ARCHITECTURE.md, reaping
                // rule 1). What was read was written before this sync.
                if out.iter().any(Option::is_some) {
                    self.storage.sync_wal().map_err(engine_failure)?;
                }
                Ok(StorageReply::Digests(out))
            }
            StorageOp::ReapCandidates {
                partition,
                older_than,
                after,
                limit,
                scan_limit,
            } => self.reap_candidates(partition, older_than, after, limit, scan_limit),
            StorageOp::Reap { partition, keys } => {
                // The tombstones to delete reach the disk first: a power cut after the
                // reap then loses at most the delete (the tombstone is back, to be
                // reaped again), never the tombstone with it (the deleted value back).
                if !keys.is_empty() {
                    self.storage.sync_wal().map_err(engine_failure)?;
                }
                let mut reaped = 0;
                for (key, digest) in keys {
                    let _guard = self.locks.lock(partition, &key);
                    let Some(raw) = self.get_raw(partition, &key)? else {
                        continue;
                    };
                    // Only the tombstone every replica confirmed: a write since then wins.
                    if raw_digest(&raw) == digest {
                        let object = decode_object(&raw)?;
                        // Only a tombstone's clock says what was deleted: a value's covers
                        // the value itself, whose copies must still be taken.
                        if object.is_tombstoned() {
                            self.remember_reaped(partition, &key, object.clock())?;
                        }
                        self.put_raw(partition, &key, Some(&raw), None)?;
                        reaped += 1;
                    }
                }
                Ok(StorageReply::Reaped(reaped))
            }
            StorageOp::ReplaceMany { partition, objects } => {
                let mut changed = 0;
                for (key, object) in objects {
                    let _guard = self.locks.lock(partition, &key);
                    let old = self.get_raw(partition, &key)?;
                    let new = object.map(|o| o.encode());
                    // Stored bytes are the canonical encoding: equal bytes, equal object.
                    if old != new {
                        self.put_raw(partition, &key, old.as_deref(), new.as_deref())?;
                        changed += 1;
                    }
                }
                Ok(StorageReply::Replaced(changed))
            }
            StorageOp::TreeSummaries { partitions } => Ok(StorageReply::TreeSummaries(
                partitions
                    .into_iter()
                    .map(|p| {
                        let (root, keys) = self.trees.summary(p);
                        (p, root, keys)
                    })
                    .collect(),
            )),
            StorageOp::SaveLayout(state) => self.save_layout(&state),
            StorageOp::LoadLayout => self.load_layout(),
            StorageOp::DropPartition { partition } => {
                self.drop_partition(partition)?;
                Ok(StorageReply::Dropped)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn coordinate_with(
        &self,
        partition: PartitionId,
        key: &[u8],
        context: &CausalContext,
        value: SiblingValue,
        now: Time,
        (max_object_bytes, max_siblings): (usize, usize),
        wait: Wait,
    ) -> Result<StorageReply, Stop> {
        let _guard = self.lock_key(partition, key, wait)?;
        let old = self.get_raw_with(partition, key, wait)?;
        let mut object = match &old {
            Some(b) => decode_object(b)?,
            // A key reaped lately: the new value's clock carries the tombstone's, so that
            // a late copy of a value it replaced is not kept beside the new one.
            None => self.reaped_base(partition, key, wait)?.unwrap_or_default(),
        };
        // The counter is node-wide and only grows, so it is above anything this actor
        // minted; a context claiming more (only possible from a forged or foreign
        // context, refused above 2^62 by the engine) lifts the counter above it.
        let known = object
            .clock()
            .max_counter(self.actor)
            .max(context.max_counter(self.actor));
        let dot = self.mint(known.saturating_add(1), wait)?;
        let reply = object
            .update(context, value, dot, now)
            .map_err(StorageFailure::from)?;
        // Checked after the update: a write whose context covers siblings removes them,
        // so a write that resolves siblings is never refused.
        if object.siblings().len() > max_siblings {
            return Ok(StorageReply::TooManySiblings {
                siblings: object.siblings().len(),
                max: max_siblings,
            });
        }
        let bytes = object.encode();
        if bytes.len() > max_object_bytes {
            return Ok(StorageReply::TooLarge {
                len: bytes.len(),
                max: max_object_bytes,
            });
        }
        self.put_raw_with(partition, key, old.as_deref(), Some(&bytes), wait)?;
        Ok(StorageReply::Coordinated {
            object,
            context: reply,
        })
    }

    fn merge(
        &self,
        partition: PartitionId,
        key: &[u8],
        incoming: &Object,
        max_object_bytes: usize,
    ) -> Result<Merged, StorageFailure> {
        waited(self.merge_with(partition, key, incoming, max_object_bytes, Wait::May))
    }

    fn merge_with(
        &self,
        partition: PartitionId,
        key: &[u8],
        incoming: &Object,
        max_object_bytes: usize,
        wait: Wait,
    ) -> Result<Merged, Stop> {
        let _guard = self.lock_key(partition, key, wait)?;
        let old = self.get_raw_with(partition, key, wait)?;
        let (mut current, after_reap) = match &old {
            Some(b) => (decode_object(b)?, false),
            None => match self.reaped_base(partition, key, wait)? {
                // A key reaped lately: what its tombstone replaced adds nothing.
                Some(base) if !incoming.is_tombstoned() => (base, true),
                // A copy of a tombstone (the reaped one, or one it covers) is stored as
                // before: anti-entropy copies it on and the next reap removes it.
                _ => (Object::new(), false),
            },
        };
        let changed = current.merge(incoming);
        if current.siblings().is_empty() {
            // Nothing to store: every value the incoming clock covers was deleted, and
            // an object holding no value and no tombstone (a reaped key's clock as a
            // replica reads it) would never be reaped.
            if after_reap {
                ::metrics::counter!(metrics::REAPED_COPIES_DROPPED_TOTAL).increment(1);
            }
            return Ok(Merged::Stored {
                object: current,
                changed: false,
            });
        }
        if changed {
            let bytes = current.encode();
            if bytes.len() > max_object_bytes {
                return Ok(Merged::TooLarge { len: bytes.len() });
            }
            self.put_raw_with(partition, key, old.as_deref(), Some(&bytes), wait)?;
        }
        Ok(Merged::Stored {
            object: current,
            changed,
        })
    }

    /// Remembers that `key`'s tombstone with `clock` is being reaped, in memory and in
    /// its record on disk; called before the delete, whose WAL record then follows the
    /// record's, so that no restart or power cut keeps the delete and loses the clock.
    fn remember_reaped(
        &self,
        partition: PartitionId,
        key: &[u8],
        clock: &CausalContext,
    ) -> Result<(), StorageFailure> {
        let remembered = self
            .reaped
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, key, clock.clone());
        self.any_reaped.store(true, Ordering::Release);
        reaped::write_records(&self.storage, remembered, partition, key, clock)
            .map_err(engine_failure)
    }

    /// For a key not stored, an object holding only the clock of its tombstone if this
    /// node reaped it lately (see `reaped.rs`).
    fn reaped_base(
        &self,
        partition: PartitionId,
        key: &[u8],
        wait: Wait,
    ) -> Result<Option<Object>, Stop> {
        if !self.any_reaped.load(Ordering::Acquire) {
            return Ok(None);
        }
        let clock = read_lock_with(&self.reaped, wait)?.clock(partition, key);
        Ok(clock.map(|c| Object::from_parts(c, Vec::new())))
    }
}

enum Merged {
    Stored { object: Object, changed: bool },
    TooLarge { len: usize },
}

impl Merged {
    /// What a single `StorageOp::Merge` answers.
    fn into_reply(self, max_object_bytes: usize) -> StorageReply {
        match self {
            Merged::Stored { object, changed } => StorageReply::Merged { object, changed },
            Merged::TooLarge { len } => StorageReply::TooLarge {
                len,
                max: max_object_bytes,
            },
        }
    }
}
