//! The ring's error type.

use crate::node_id::NodeId;
use crate::partition::{MAX_PARTITIONS, MIN_PARTITIONS};

/// Why a ring, a member list, a node id or a partition number was rejected.
///
/// One enum for the whole crate surface: every failure is an invalid input (the ring has no
/// IO), so the caller can show the message to an operator as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The partition count Q is not a power of two between [`MIN_PARTITIONS`] and
    /// [`MAX_PARTITIONS`]: partitions are the top bits of the hash, so Q must be a power of two.
    #[error(
        "partition count {partitions} is not a power of two between {MIN_PARTITIONS} and {MAX_PARTITIONS}"
    )]
    InvalidPartitionCount {
        /// The rejected partition count.
        partitions: u32,
    },

    /// The member list is empty: every partition needs an owner.
    #[error("a ring needs at least one member")]
    NoMembers,

    /// Two members have the same id.
    #[error("member {id} appears more than once")]
    DuplicateMember {
        /// The repeated id.
        id: NodeId,
    },

    /// A node id is empty, longer than 64 bytes, or has a character outside `[A-Za-z0-9_.-]`.
    #[error("invalid node id {id:?}: {reason}")]
    InvalidNodeId {
        /// The rejected id (cut to its first 80 characters).
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A member's zone name is empty, longer than 64 bytes, or has a character outside
    /// `[A-Za-z0-9_.-]`.
    #[error("member {member} has an invalid zone {zone:?}: {reason}")]
    InvalidZone {
        /// The member declaring the zone.
        member: NodeId,
        /// The rejected zone name (cut to its first 80 characters).
        zone: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A member declares capacity weight 0; a member that should own nothing must leave the
    /// ring instead.
    #[error("member {member} has weight 0; weights start at 1")]
    ZeroWeight {
        /// The member with weight 0.
        member: NodeId,
    },

    /// A member's share of the partitions rounds to zero (more members than partitions, or a
    /// weight far below the others'). Every member must own at least one partition, so the
    /// ring would be unusable; create the cluster with more partitions.
    #[error("{partitions} partitions are too few: member {member} would own none")]
    TooFewPartitions {
        /// The ring's partition count.
        partitions: u32,
        /// A member that would own no partition.
        member: NodeId,
    },

    /// A partition number is not below the ring's partition count.
    #[error("partition {partition} is out of range: the ring has {partitions} partitions")]
    PartitionOutOfRange {
        /// The rejected partition number.
        partition: u32,
        /// The ring's partition count.
        partitions: u32,
    },

    /// The ring version is `u64::MAX` and cannot be incremented again.
    #[error("the ring version cannot be incremented past u64::MAX")]
    VersionExhausted,

    /// A change names a member that is not in the ring.
    #[error("{id} is not a member of the ring")]
    NotAMember {
        /// The id named.
        id: NodeId,
    },

    /// A decoded ring breaks a structural rule (wrong owner table length, owner out of range,
    /// members not sorted, a member owning nothing, version 0).
    #[error("malformed ring: {reason}")]
    MalformedRing {
        /// The rule that is broken.
        reason: &'static str,
    },
}

/// Cuts untrusted text to a bounded length before it goes into an error.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX_CHARS: usize = 80;
    if s.chars().count() <= MAX_CHARS {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_CHARS).collect();
        out.push('…');
        out
    }
}
