//! Errors of the Merkle tree and its exchange.

use super::MerkleShape;

/// Why a Merkle tree could not be built, decoded, queried or compared.
///
/// Every index, level and list that can come from a peer or from disk is checked, and a bad
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
    /// The two trees (or a tree and a message) do not have the same shape, so their nodes
    /// cannot be compared.
    #[error("tree shapes differ: ours is {ours}, theirs is {theirs}")]
    ShapeMismatch {
        /// Our shape.
        ours: MerkleShape,
        /// The other side's shape.
        theirs: MerkleShape,
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
    /// Node indices must be strictly ascending (sorted, no repeats), so that a request and
    /// its reply line up and a peer cannot make us repeat work.
    #[error("node indices at level {level} are not strictly ascending")]
    UnsortedIndices {
        /// Level of the nodes.
        level: usize,
    },
    /// A list of hashes does not have one hash per node it describes.
    #[error("expected {expected} hashes, found {found}")]
    LengthMismatch {
        /// Hashes expected.
        expected: usize,
        /// Hashes found.
        found: usize,
    },
    /// A descent reply does not answer the request that was sent.
    #[error("the reply does not answer the request: {0}")]
    UnexpectedReply(&'static str),
    /// The descent was given a reply after it had finished.
    #[error("the descent has already finished")]
    DescentFinished,
    /// A key listed for a segment does not hash into that segment.
    #[error("a key listed for segment {segment} belongs to segment {actual}")]
    KeyOutsideSegment {
        /// Segment the key was listed under.
        segment: u32,
        /// Segment the key hashes to.
        actual: u32,
    },
    /// No bytes to decode.
    #[error("empty input")]
    Empty,
    /// The bytes were written by a format version this build does not read.
    #[error("unsupported Merkle tree format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// Version found in the input.
        found: u8,
        /// Version this build reads and writes.
        supported: u8,
    },
    /// The bytes do not decode as a Merkle tree.
    #[error("malformed Merkle tree: {0}")]
    Malformed(String),
}
