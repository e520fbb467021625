//! The shape of a Merkle tree: how many segments (leaves) and how wide each level fans out.

use std::fmt;
use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{MerkleError, SEGMENT_HASH_SEED};

/// Segments per tree when nothing else is configured: 1,024 leaves per partition.
pub const DEFAULT_SEGMENTS: u32 = 1024;
/// Fan-out when nothing else is configured: with 1,024 segments, a root, 32 inner nodes and
/// the leaves — two round trips below the root.
pub const DEFAULT_FANOUT: u32 = 32;
/// The largest segment count: bounds one tree to at most 24 MiB (hashes and key counts of
/// 2^20 leaves, plus at most as many ancestors' hashes), whatever a caller asks.
pub const MAX_SEGMENTS: u32 = 1 << 20;

/// The shape of a [`MerkleTree`](super::MerkleTree): `segments` leaves under a tree whose
/// nodes have `fanout` children each (the root may have fewer, see below).
///
/// Both numbers are powers of two with `2 <= fanout <= segments <= MAX_SEGMENTS`. Level 0
/// is the root, the last level holds the segments, and every level but the root's children
/// is `fanout` times wider than its parent's level; when `segments` is not a power of
/// `fanout`, the root takes the remainder (e.g. 2,048 segments with fan-out 32 give widths
/// 1, 2, 64, 2,048). Two trees can only be compared if their shapes are equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MerkleShape {
    segments: u32,
    fanout: u32,
}

impl MerkleShape {
    /// The default shape: [`DEFAULT_SEGMENTS`] segments, fan-out [`DEFAULT_FANOUT`].
    pub const DEFAULT: MerkleShape = MerkleShape {
        segments: DEFAULT_SEGMENTS,
        fanout: DEFAULT_FANOUT,
    };

    /// A validated shape: both powers of two, `2 <= fanout <= segments <= MAX_SEGMENTS`.
    pub fn new(segments: u32, fanout: u32) -> Result<MerkleShape, MerkleError> {
        if !segments.is_power_of_two() {
            return Err(MerkleError::SegmentsNotPowerOfTwo(segments));
        }
        if fanout < 2 {
            return Err(MerkleError::FanoutTooSmall(fanout));
        }
        if !fanout.is_power_of_two() {
            return Err(MerkleError::FanoutNotPowerOfTwo(fanout));
        }
        if segments < fanout {
            return Err(MerkleError::SegmentsBelowFanout { segments, fanout });
        }
        if segments > MAX_SEGMENTS {
            return Err(MerkleError::TooManySegments {
                segments,
                max: MAX_SEGMENTS,
            });
        }
        Ok(MerkleShape { segments, fanout })
    }

    /// Number of segments (leaves).
    pub const fn segments(self) -> u32 {
        self.segments
    }

    /// Children per inner node (the root may have fewer).
    pub const fn fanout(self) -> u32 {
        self.fanout
    }

    /// The segment (leaf) that holds `key` in every tree of this shape; see
    /// [`MerkleTree::segment_of`](super::MerkleTree::segment_of).
    pub fn segment_of(self, key: &[u8]) -> u32 {
        let hash = xxh3_64_with_seed(key, SEGMENT_HASH_SEED);
        // segment_bits is in 1..=20, so the shift is in 44..=63.
        (hash >> (64 - self.segment_bits())) as u32
    }

    /// log2 of the segment count: how many hash bits pick a segment.
    fn segment_bits(self) -> u32 {
        self.segments.trailing_zeros()
    }

    /// Levels below the root: `ceil(log2 segments / log2 fanout)`.
    fn depth(self) -> u32 {
        self.segment_bits().div_ceil(self.fanout.trailing_zeros())
    }

    /// Levels including the root and the leaves; at least 2.
    pub fn level_count(self) -> usize {
        self.depth() as usize + 1
    }

    /// Nodes at `level` (1 at the root, `segments` at the last level), or `None` past the
    /// leaves.
    pub fn level_width(self, level: usize) -> Option<u32> {
        let depth = self.depth() as usize;
        if level > depth {
            return None;
        }
        if level == 0 {
            return Some(1);
        }
        // Every level below level 1 is `fanout` times wider than the one above it.
        let below = (depth - level) as u32 * self.fanout.trailing_zeros();
        Some(1 << (self.segment_bits() - below))
    }

    /// The indices, at `level + 1`, of the children of node `index` at `level`; empty for
    /// a node that does not exist or is a segment.
    pub fn children(self, level: usize, index: u32) -> Range<u32> {
        let (Some(here), Some(below)) = (self.level_width(level), self.level_width(level + 1))
        else {
            return 0..0;
        };
        if index >= here {
            return 0..0;
        }
        let per = below / here;
        index * per..(index + 1) * per
    }
}

impl Default for MerkleShape {
    fn default() -> MerkleShape {
        MerkleShape::DEFAULT
    }
}

impl fmt::Display for MerkleShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} segments, fan-out {}", self.segments, self.fanout)
    }
}
