//! Merkle trees of the partitions this node stores, and the anti-entropy and reaping
//! storage ops that read them.
//!
//! Trees are kept in memory, updated with every object write (the write and the tree
//! update happen together under the partition's tree lock), and rebuilt from a scan of
//! the objects at open — bounded by the data size, about a second per million keys.
//! [`Executor::verify_trees`] rebuilds each tree from storage and compares it with the
//! incremental one, replacing (and reporting) any that differ.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use shoal_proto::{
    MerkleShape, MerkleTree, StorageFailure, StorageReply, StorageResult, Time, AAE_SEGMENTS,
    SEGMENT_ENTRY_OVERHEAD,
};
use shoal_ring::PartitionId;
use shoal_storage::{object_key, split_object_key, Space, Storage};

use super::{
    decode_object, engine_failure, key_of_stored, raw_digest, ExecError, Executor, SCAN_PAGE,
    SEGMENT_PREFIX_BYTES,
};

/// The trees of one executor.
pub(super) struct Trees {
    /// The shape of every partition's tree.
    shape: MerkleShape,
    map: RwLock<BTreeMap<PartitionId, Arc<Mutex<MerkleTree>>>>,
}

fn new_tree() -> MerkleTree {
    MerkleTree::with_shape(MerkleShape::DEFAULT)
}

impl Trees {
    pub(super) fn new() -> Trees {
        Trees {
            shape: MerkleShape::DEFAULT,
            map: RwLock::new(BTreeMap::new()),
        }
    }

    pub(super) fn segment_of(&self, key: &[u8]) -> u32 {
        self.shape.segment_of(key)
    }

    /// The tree of `p`, created empty if the partition has no keys yet.
    pub(super) fn get(&self, p: PartitionId) -> Arc<Mutex<MerkleTree>> {
        if let Some(t) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(&p) {
            return t.clone();
        }
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(p)
            .or_insert_with(|| Arc::new(Mutex::new(new_tree())))
            .clone()
    }

    /// Root hash and key count of `p`'s tree (an empty tree's when it has none).
    pub(super) fn summary(&self, p: PartitionId) -> (u64, u64) {
        let t = self.get(p);
        let t = t.lock().unwrap_or_else(|e| e.into_inner());
        (t.root(), t.key_count())
    }

    fn partitions(&self) -> Vec<PartitionId> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

/// A partition whose incremental tree did not match a rebuild from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeMismatch {
    /// The partition.
    pub partition: PartitionId,
    /// Root of the incremental tree.
    pub incremental_root: u64,
    /// Root of the tree rebuilt from storage (now in use).
    pub rebuilt_root: u64,
}

impl<S: Storage> Executor<S> {
    /// Build every partition's tree from a scan of all objects.
    pub(super) fn rebuild_trees(&self) -> Result<(), ExecError> {
        let mut built: BTreeMap<PartitionId, MerkleTree> = BTreeMap::new();
        let mut start: Vec<u8> = Vec::new();
        loop {
            let rows = self.storage.scan(Space::Objects, &start, None, SCAN_PAGE)?;
            let full = rows.len() == SCAN_PAGE;
            for (raw_key, value) in &rows {
                let Some((p, stored)) = split_object_key(raw_key) else {
                    continue;
                };
                let Some(key) = key_of_stored(stored) else {
                    continue;
                };
                built
                    .entry(p)
                    .or_insert_with(new_tree)
                    .insert(key, raw_digest(value));
            }
            match rows.last() {
                Some((k, _)) if full => {
                    start = k.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        let mut map = self.trees.map.write().unwrap_or_else(|e| e.into_inner());
        map.clear();
        for (p, t) in built {
            map.insert(p, Arc::new(Mutex::new(t)));
        }
        Ok(())
    }

    /// Deletes every object of `p` and empties its tree, holding the partition's tree
    /// lock so that no write to `p` lands between the two (a partition this node holds
    /// in no layout version in use any more).
    pub(super) fn drop_partition(&self, p: PartitionId) -> Result<(), StorageFailure> {
        let tree = self.trees.get(p);
        let mut tree = tree.lock().unwrap_or_else(|e| e.into_inner());
        self.storage.delete_partition(p).map_err(engine_failure)?;
        *tree = new_tree();
        Ok(())
    }

    /// Rebuild `p`'s tree from storage and compare it with the incremental one. Holds the
    /// partition's tree lock for the scan, so writes to `p` wait (they are consistent with
    /// one or the other, never half).
    pub fn verify_tree(&self, p: PartitionId) -> Result<Option<TreeMismatch>, ExecError> {
        let tree = self.trees.get(p);
        let mut tree = tree.lock().unwrap_or_else(|e| e.into_inner());
        let mut rebuilt = new_tree();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = self
                .storage
                .scan_partition(p, after.as_deref(), SCAN_PAGE)?;
            let full = rows.len() == SCAN_PAGE;
            for (stored, value) in &rows {
                if let Some(key) = key_of_stored(stored) {
                    rebuilt.insert(key, raw_digest(value));
                }
            }
            match rows.into_iter().last() {
                Some((k, _)) if full => after = Some(k),
                _ => break,
            }
        }
        if *tree == rebuilt {
            return Ok(None);
        }
        metrics::counter!(crate::metrics::AAE_TREE_MISMATCHES_TOTAL).increment(1);
        let mismatch = TreeMismatch {
            partition: p,
            incremental_root: tree.root(),
            rebuilt_root: rebuilt.root(),
        };
        *tree = rebuilt;
        Ok(Some(mismatch))
    }

    /// [`Executor::verify_tree`] for every partition with a tree.
    pub fn verify_trees(&self) -> Result<Vec<TreeMismatch>, ExecError> {
        let mut out = Vec::new();
        for p in self.trees.partitions() {
            if let Some(m) = self.verify_tree(p)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Root hash and key count of partition `p`'s tree.
    pub fn tree_summary(&self, p: PartitionId) -> (u64, u64) {
        self.trees.summary(p)
    }

    pub(super) fn tree_nodes(&self, p: PartitionId, level: u8, indices: &[u32]) -> StorageResult {
        let tree = self.trees.get(p);
        let tree = tree.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(indices.len());
        for &i in indices {
            let h = tree
                .node_hashes(usize::from(level), i..i.saturating_add(1))
                .map_err(|e| StorageFailure::OutOfRange {
                    what: "tree request",
                    detail: e.to_string(),
                })?;
            out.extend(h);
            // (One call per index: indices come from a peer and need not be sorted.)
        }
        Ok(StorageReply::TreeNodes(out))
    }

    /// The (key, digest) pairs of each segment, for a prefix of `segments` (asked in
    /// ascending order): the reply stops before the segment whose pairs would take it past
    /// `max_bytes`, after at least one whole segment. Runs of adjacent segments are read
    /// with one range scan (segments are contiguous in the key layout), and the scan
    /// stops where the reply does, so memory stays within the bound too.
    pub(super) fn segments(
        &self,
        p: PartitionId,
        segments: &[u32],
        max_bytes: usize,
    ) -> StorageResult {
        let mut wanted: Vec<u16> = segments
            .iter()
            .map(|&seg| {
                u16::try_from(seg)
                    .ok()
                    .filter(|s| u32::from(*s) < AAE_SEGMENTS)
                    .ok_or_else(|| StorageFailure::OutOfRange {
                        what: "segment request",
                        detail: format!("segment {seg} out of range"),
                    })
            })
            .collect::<Result<_, _>>()?;
        wanted.sort_unstable();
        wanted.dedup();
        let mut found: BTreeMap<u16, Vec<(Vec<u8>, u64)>> =
            wanted.iter().map(|s| (*s, Vec::new())).collect();
        // The reply's size so far, and the first segment it leaves out.
        let mut total = 0usize;
        let mut cut: Option<u16> = None;
        let mut i = 0;
        'runs: while i < wanted.len() {
            // The run wanted[i..j] of consecutive segments.
            let mut j = i + 1;
            while j < wanted.len() && wanted[j] == wanted[j - 1] + 1 {
                j += 1;
            }
            let (first, last) = (wanted[i], wanted[j - 1]);
            let start = object_key(p, &first.to_be_bytes());
            let end = match last.checked_add(1) {
                Some(next) if u32::from(next) < AAE_SEGMENTS => {
                    Some(object_key(p, &next.to_be_bytes()))
                }
                // The last segment ends where the partition ends.
                _ => shoal_storage::partition_bounds(p).1,
            };
            let mut from = start;
            loop {
                let rows = self
                    .storage
                    .scan(Space::Objects, &from, end.as_deref(), SCAN_PAGE)
                    .map_err(engine_failure)?;
                let full = rows.len() == SCAN_PAGE;
                for (raw_key, value) in &rows {
                    let Some((_, stored)) = split_object_key(raw_key) else {
                        continue;
                    };
                    let Some((prefix, key)) = stored.split_first_chunk::<SEGMENT_PREFIX_BYTES>()
                    else {
                        continue;
                    };
                    let seg = u16::from_be_bytes(*prefix);
                    if let Some(list) = found.get_mut(&seg) {
                        total += key.len() + SEGMENT_ENTRY_OVERHEAD;
                        if total > max_bytes && Some(&seg) != wanted.first() {
                            cut = Some(seg);
                            break 'runs;
                        }
                        list.push((key.to_vec(), raw_digest(value)));
                    }
                }
                match rows.last() {
                    Some((k, _)) if full => {
                        from = k.clone();
                        from.push(0);
                    }
                    _ => break,
                }
            }
            i = j;
        }
        let out = segments
            .iter()
            .take_while(|&&seg| cut.is_none_or(|c| seg < u32::from(c)))
            .map(|&seg| {
                let list = u16::try_from(seg)
                    .ok()
                    .and_then(|s| found.get(&s).cloned())
                    .unwrap_or_default();
                (seg, list)
            })
            .collect();
        Ok(StorageReply::Segments(out))
    }

    /// The objects of a prefix of `keys`: reading stops before the key whose key and
    /// stored bytes would take the total past `max_bytes` (the first key is always read),
    /// so that an anti-entropy answer and the push made of it fit in a frame.
    pub(super) fn read_many(
        &self,
        p: PartitionId,
        keys: Vec<Vec<u8>>,
        max_bytes: usize,
    ) -> StorageResult {
        let mut out = Vec::with_capacity(keys.len());
        let mut total = 0usize;
        for key in keys {
            let raw = self.get_raw(p, &key)?;
            let size = key.len() + raw.as_ref().map_or(0, Vec::len);
            if !out.is_empty() && total.saturating_add(size) > max_bytes {
                break;
            }
            total = total.saturating_add(size);
            out.push((key, raw.map(|b| decode_object(&b)).transpose()?));
        }
        Ok(StorageReply::Objects(out))
    }

    /// Tombstoned keys older than `older_than`, scanning at most `scan_limit` objects.
    pub(super) fn reap_candidates(
        &self,
        p: PartitionId,
        older_than: Time,
        after: Option<Vec<u8>>,
        limit: usize,
        scan_limit: usize,
    ) -> StorageResult {
        let rows = self
            .storage
            .scan_partition(p, after.as_deref(), scan_limit.max(1))
            .map_err(engine_failure)?;
        let complete = rows.len() < scan_limit.max(1);
        let mut keys = Vec::new();
        let mut next = None;
        for (stored, value) in rows {
            let Some(key) = key_of_stored(&stored) else {
                continue;
            };
            // Corrupt objects are left to the read path to report, never reaped.
            if let Ok(obj) = decode_object(&value) {
                if obj.tombstone_time().is_some_and(|t| t < older_than) {
                    keys.push((key.to_vec(), raw_digest(&value)));
                }
            }
            if keys.len() >= limit {
                next = Some(stored);
                break;
            }
            next = Some(stored);
        }
        if complete && keys.len() < limit {
            next = None;
        }
        Ok(StorageReply::ReapCandidates { keys, next })
    }
}
