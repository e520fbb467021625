//! The tree itself: hashing, incremental updates, rebuilds and node queries.

use std::fmt;
use std::ops::Range;

use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

use super::{MerkleError, MerkleShape};

/// Seed of the XXH3-64 hash of a key that picks its segment (its top bits).
///
/// The ring picks a key's partition from the top bits of the *unseeded* XXH3-64 of the key,
/// so every key of a partition shares those bits; a different seed gives an independent
/// hash, and a partition's keys spread over all its segments. Part of the storage key
/// layout: changing it moves every stored key to another segment.
pub const SEGMENT_HASH_SEED: u64 = u64::from_be_bytes(*b"shoalseg");

/// Seed of the XXH3-64 hash of a (key, version digest) pair, see [`MerkleTree::pair_hash`].
/// Replicas compare hashes made with it, so all of them must use the same.
pub const PAIR_HASH_SEED: u64 = u64::from_be_bytes(*b"shoalpar");

/// Keys up to this length are hashed from a small stack buffer.
const SMALL_KEY_BYTES: usize = 56;
/// Keys up to this length are hashed from a larger stack buffer; longer ones stream.
const STACK_KEY_BYTES: usize = 248;

/// XXH3-64 (seeded with [`PAIR_HASH_SEED`]) of `key` then `digest` in little-endian, through
/// an `N`-byte stack buffer; `key.len() + 8 <= N`.
fn hash_key_and_digest<const N: usize>(key: &[u8], digest: u64) -> u64 {
    let mut buf = [0u8; N];
    let end = key.len() + 8;
    buf[..key.len()].copy_from_slice(key);
    buf[key.len()..end].copy_from_slice(&digest.to_le_bytes());
    xxh3_64_with_seed(&buf[..end], PAIR_HASH_SEED)
}

/// A Merkle tree over the (key, version digest) pairs of one partition on one replica, kept
/// up to date on every write. The design (shape, hashing, exchange, collision argument) is
/// documented at the top of `proto/src/merkle/mod.rs`.
///
/// Every level's hashes live in one `Vec`: level 0 holds the root, the last level the
/// segments. A node's hash is the XOR of its children's, a segment's the XOR of the pair
/// hashes of its keys, so a write XORs one delta into a segment and each of its ancestors.
#[derive(Clone, PartialEq, Eq)]
pub struct MerkleTree {
    shape: MerkleShape,
    /// `levels[l][i]`: hash of node `i` at level `l`; `levels[0] == [root]`.
    levels: Vec<Vec<u64>>,
    /// `shifts[l]`: a node `j` at level `l + 1` has parent `j >> shifts[l]` at level `l`.
    shifts: Vec<u32>,
    /// Keys per segment.
    segment_counts: Vec<u64>,
    /// Keys in the whole tree: the sum of `segment_counts`.
    key_count: u64,
}

impl MerkleTree {
    /// An empty tree (every hash zero, no keys) of `segments` leaves and fan-out `fanout`;
    /// see [`MerkleShape::new`] for the rules.
    pub fn new(segments: u32, fanout: u32) -> Result<MerkleTree, MerkleError> {
        Ok(MerkleTree::with_shape(MerkleShape::new(segments, fanout)?))
    }

    /// An empty tree of a validated shape.
    pub fn with_shape(shape: MerkleShape) -> MerkleTree {
        let level_count = shape.level_count();
        let widths: Vec<u32> = (0..level_count)
            .map(|level| shape.level_width(level).unwrap_or(1))
            .collect();
        let levels = widths.iter().map(|&w| vec![0; w as usize]).collect();
        let shifts = widths
            .windows(2)
            .map(|pair| (pair[1] / pair[0]).trailing_zeros())
            .collect();
        MerkleTree {
            shape,
            levels,
            shifts,
            segment_counts: vec![0; shape.segments() as usize],
            key_count: 0,
        }
    }

    /// Build the tree of a full set of pairs, e.g. a scan of a partition at start-up or to
    /// verify an incrementally kept tree. Keys must be distinct (as a storage scan gives):
    /// a pair given twice cancels out. O(pairs + segments).
    pub fn from_pairs<K, I>(segments: u32, fanout: u32, pairs: I) -> Result<MerkleTree, MerkleError>
    where
        K: AsRef<[u8]>,
        I: IntoIterator<Item = (K, u64)>,
    {
        let mut tree = MerkleTree::new(segments, fanout)?;
        let leaf = tree.leaf_level();
        for (key, digest) in pairs {
            let key = key.as_ref();
            let segment = tree.segment_of(key) as usize;
            tree.levels[leaf][segment] ^= MerkleTree::pair_hash(key, digest);
            tree.segment_counts[segment] += 1;
            tree.key_count += 1;
        }
        tree.recompute_inner_levels();
        Ok(tree)
    }

    /// The tree's shape.
    pub fn shape(&self) -> MerkleShape {
        self.shape
    }

    /// The segment (leaf) that holds `key`: the top `log2(segments)` bits of XXH3-64 of
    /// the key seeded with [`SEGMENT_HASH_SEED`], independent of the partition bits.
    ///
    /// Storage keeps a key under its segment (`be16(segment) ‖ key` within the partition),
    /// so the keys of a differing segment are one range scan.
    pub fn segment_of(&self, key: &[u8]) -> u32 {
        self.shape.segment_of(key)
    }

    /// The hash of one (key, version digest) pair: XXH3-64, seeded with
    /// [`PAIR_HASH_SEED`], of the key's bytes followed by the digest in little-endian.
    ///
    /// The digest has a fixed length, so distinct pairs are distinct inputs; and the key and
    /// its digest are hashed together, so two keys that swap versions change the hash.
    pub fn pair_hash(key: &[u8], digest: u64) -> u64 {
        // Small keys are the common case: hash them from a small stack buffer, which is
        // cheaper to clear than a large one.
        if key.len() <= SMALL_KEY_BYTES {
            hash_key_and_digest::<{ SMALL_KEY_BYTES + 8 }>(key, digest)
        } else if key.len() <= STACK_KEY_BYTES {
            hash_key_and_digest::<{ STACK_KEY_BYTES + 8 }>(key, digest)
        } else {
            let mut hasher = Xxh3::with_seed(PAIR_HASH_SEED);
            hasher.update(key);
            hasher.update(&digest.to_le_bytes());
            hasher.digest()
        }
    }

    /// Add a key whose object has version digest `digest` (a key that was absent).
    pub fn insert(&mut self, key: &[u8], digest: u64) {
        let segment = self.segment_of(key);
        self.apply(segment, MerkleTree::pair_hash(key, digest));
        self.count_insert(segment);
    }

    /// Remove a key that was present with version digest `digest` (XOR is its own inverse,
    /// so this takes the pair's hash back out).
    pub fn remove(&mut self, key: &[u8], digest: u64) {
        let segment = self.segment_of(key);
        self.apply(segment, MerkleTree::pair_hash(key, digest));
        self.count_remove(segment);
    }

    /// The write path: the key's digest goes from `old` (`None`: absent) to `new` (`None`:
    /// removed). One segment and its ancestors change, O(levels); nothing when equal.
    pub fn update(&mut self, key: &[u8], old: Option<u64>, new: Option<u64>) {
        if old == new {
            return;
        }
        let segment = self.segment_of(key);
        let delta = old.map_or(0, |d| MerkleTree::pair_hash(key, d))
            ^ new.map_or(0, |d| MerkleTree::pair_hash(key, d));
        self.apply(segment, delta);
        match (old, new) {
            (None, Some(_)) => self.count_insert(segment),
            (Some(_), None) => self.count_remove(segment),
            _ => {}
        }
    }

    /// The root hash: equal sets of pairs give equal roots.
    pub fn root(&self) -> u64 {
        self.levels[0][0]
    }

    /// Levels including the root (level 0) and the segments (the last level).
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// Nodes at `level`, or `None` past the leaves.
    pub fn level_width(&self, level: usize) -> Option<u32> {
        self.levels.get(level).map(|l| l.len() as u32)
    }

    /// Hashes of the nodes `range` at `level`, for an exchange.
    pub fn node_hashes(&self, level: usize, range: Range<u32>) -> Result<Vec<u64>, MerkleError> {
        let nodes = self.level(level)?;
        let width = nodes.len() as u32;
        if range.start > range.end || range.end > width {
            return Err(MerkleError::IndexOutOfRange {
                level,
                index: range.end.max(range.start),
                width,
            });
        }
        Ok(nodes[range.start as usize..range.end as usize].to_vec())
    }

    /// Hash of one segment, or `None` if there is no such segment.
    pub fn segment_hash(&self, segment: u32) -> Option<u64> {
        self.levels[self.leaf_level()]
            .get(segment as usize)
            .copied()
    }

    /// Keys in one segment, or `None` if there is no such segment.
    pub fn segment_key_count(&self, segment: u32) -> Option<u64> {
        self.segment_counts.get(segment as usize).copied()
    }

    /// Keys in the tree, kept on every insert (+1) and remove (-1).
    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    fn leaf_level(&self) -> usize {
        self.levels.len() - 1
    }

    fn level(&self, level: usize) -> Result<&[u64], MerkleError> {
        self.levels
            .get(level)
            .map(Vec::as_slice)
            .ok_or(MerkleError::LevelOutOfRange {
                level,
                levels: self.levels.len(),
            })
    }

    /// XOR `delta` into `segment` and each of its ancestors.
    fn apply(&mut self, segment: u32, delta: u64) {
        let mut index = segment as usize;
        for level in (0..self.levels.len()).rev() {
            self.levels[level][index] ^= delta;
            if level > 0 {
                index >>= self.shifts[level - 1];
            }
        }
    }

    fn count_insert(&mut self, segment: u32) {
        self.segment_counts[segment as usize] += 1;
        self.key_count += 1;
    }

    /// Saturates at zero: removing an absent key is a caller's bug that a rebuild heals,
    /// not a reason to wrap around.
    fn count_remove(&mut self, segment: u32) {
        let count = &mut self.segment_counts[segment as usize];
        if *count > 0 {
            *count -= 1;
            self.key_count = self.key_count.saturating_sub(1);
        }
    }

    /// Recompute every level above the leaves from the leaves, O(segments).
    fn recompute_inner_levels(&mut self) {
        for level in (0..self.leaf_level()).rev() {
            let shift = self.shifts[level];
            let (upper, lower) = self.levels.split_at_mut(level + 1);
            let parents = &mut upper[level];
            parents.iter_mut().for_each(|h| *h = 0);
            for (j, &h) in lower[0].iter().enumerate() {
                parents[j >> shift] ^= h;
            }
        }
    }
}

impl Default for MerkleTree {
    /// An empty tree of the default shape, [`MerkleShape::DEFAULT`].
    fn default() -> MerkleTree {
        MerkleTree::with_shape(MerkleShape::DEFAULT)
    }
}

impl fmt::Debug for MerkleTree {
    /// The shape, root and key count; thousands of node hashes would drown a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree")
            .field("segments", &self.shape.segments())
            .field("fanout", &self.shape.fanout())
            .field("root", &format_args!("{:#018x}", self.root()))
            .field("key_count", &self.key_count)
            .finish()
    }
}
