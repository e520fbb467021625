//! Names of the metrics the executor records itself (the hint events it records are the
//! engine's [`shoal_proto::metrics::HINTS_TOTAL`]); the node describes them and creates
//! them at zero. docs/METRICS.md has the full catalogue.

/// Counter: incremental Merkle trees the periodic verification found to disagree with
/// storage and replaced (a bug or corruption).
pub const AAE_TREE_MISMATCHES_TOTAL: &str = "shoal_aae_tree_mismatches_total";
/// Counter: objects an anti-entropy merge could not store because the merge made them
/// larger than `limits.max_object_bytes`.
pub const AAE_OBJECTS_TOO_LARGE_TOTAL: &str = "shoal_aae_objects_too_large_total";
/// Counter: copies of values a reaped tombstone had replaced that arrived after the reap
/// (a merge queued before it, a message sent before it) and were dropped, not stored.
pub const REAPED_COPIES_DROPPED_TOTAL: &str = "shoal_reaped_copies_dropped_total";
/// Counter: reads of a key whose tombstone this node reaped lately, answered with the
/// tombstone's clock (no value) instead of nothing.
pub const REAPED_READS_TOTAL: &str = "shoal_reaped_reads_total";
