//! Errors of the Merkle tree.

/// Why a Merkle tree could not be built or queried.
///
/// Every level and index that can come from a peer is checked, and a bad
/// one is reported here: nothing in the module panics on input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The segment count is not a power of two, so segments cannot be taken from hash bits.
    #[error("segment count {0} is not a power of two")]
    SegmentsNotPowerOfTwo(u32),
    /// The fan-out is not a power of two (levels are found by shifting indices).
    #[error("fan-out {0} is not a power of two")]
    FanoutNotPowerOfTwo(u32),
    /// A fan-out below 2 would never narrow the tree.
    #[error("fan-out {0} is below the minimum of 2")]
    FanoutTooSmall(u32),
    /// There must be at least one full fan-out of segments under the root.
    #[error("segment count {segments} is below the fan-out {fanout}")]
    SegmentsBelowFanout {
        /// Segments asked for.
        segments: u32,
        /// Fan-out asked for.
        fanout: u32,
    },
    /// The segment count is above the limit, which bounds the memory of one tree.
    #[error("segment count {segments} is above the limit of {max}")]
    TooManySegments {
        /// Segments asked for.
        segments: u32,
        /// Largest allowed segment count.
        max: u32,
    },
    /// A level number beyond the leaves.
    #[error("level {level} does not exist (the tree has {levels} levels)")]
    LevelOutOfRange {
        /// Level asked for.
        level: usize,
        /// Levels in the tree.
        levels: usize,
    },
    /// A node index beyond its level's width.
    #[error("index {index} is out of range at level {level} (width {width})")]
    IndexOutOfRange {
        /// Level of the node.
        level: usize,
        /// Index asked for.
        index: u32,
        /// Nodes at that level.
        width: u32,
    },
}
