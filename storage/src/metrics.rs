//! Storage metrics, recorded the same way by every engine. docs/METRICS.md has the full
//! catalogue.

use std::time::Instant;

use metrics::{Counter, Histogram};
use shoal_metric_handles::Handles;

use crate::batch::{BatchOp, Space, WriteBatch};
use crate::error::StorageError;

/// Counter, by `op` (`get`, `put`, `delete`, `scan`, `delete_partition`) and `space`:
/// storage operations; a write batch counts each of its operations.
pub const OPS_TOTAL: &str = "shoal_storage_ops_total";
/// Histogram, by `op` (`get`, `write`, `scan`, `flush`, `delete_partition`, `close`), in
/// seconds: latency of engine calls.
pub const OP_DURATION_SECONDS: &str = "shoal_storage_op_duration_seconds";
/// Counter, by `op` (as [`OP_DURATION_SECONDS`]): engine calls that failed.
pub const ERRORS_TOTAL: &str = "shoal_storage_errors_total";
/// Histogram, in bytes: size of each written batch.
pub const WRITE_BATCH_BYTES: &str = "shoal_storage_write_batch_bytes";
/// Gauge, 0 or 1: the engine refuses writes because its disk is full (below the
/// `min_free_bytes` reserve, or RocksDB ran out of space and is not reopened yet).
pub const DISK_FULL: &str = "shoal_storage_disk_full";
/// Counter: writes answered `DiskFull`.
pub const DISK_FULL_REFUSALS_TOTAL: &str = "shoal_storage_disk_full_refusals_total";
/// Counter, by `result` (`ok`, `failed`): reopens of a database that ran out of space.
pub const DISK_FULL_REOPENS_TOTAL: &str = "shoal_storage_disk_full_reopens_total";
/// Counter: tries of a write that would stall, repeated while the disk is nearly full
/// (see `RocksStorage`'s write path); each waits 10 ms.
pub const WRITE_STALL_RETRIES_TOTAL: &str = "shoal_storage_write_stall_retries_total";
/// Gauge, in bytes: free space of the data directory's filesystem at the last check.
pub const FREE_BYTES: &str = "shoal_storage_free_bytes";
/// Gauge, in bytes: the spare file the store keeps so that it can open on a full disk
/// (`spare_space_bytes`; 0 while it is given back, or off).
pub const SPARE_SPACE_BYTES: &str = "shoal_storage_spare_space_bytes";

// The per-operation metrics' handles, resolved once per label set (the node installs its
// recorder before it opens its store; see `shoal_metric_handles`).
static OPS: Handles<Counter, 2> = Handles::counter(OPS_TOTAL, ["op", "space"]);
static BATCH_BYTES: Handles<Histogram, 0> = Handles::histogram(WRITE_BATCH_BYTES, []);
static DURATION: Handles<Histogram, 1> = Handles::histogram(OP_DURATION_SECONDS, ["op"]);

/// Counts one operation of kind `op` on `space`.
pub(crate) fn count_op(op: &'static str, space: Space) {
    OPS.get([op, space.name()]).increment(1);
}

/// Counts a batch's operations per kind and space (one counter update per non-empty cell,
/// not per operation) and records its size.
pub(crate) fn count_batch(batch: &WriteBatch) {
    let mut puts = [0u64; 3];
    let mut deletes = [0u64; 3];
    for op in batch.ops() {
        match op {
            BatchOp::Put { space, .. } => puts[space.index()] += 1,
            BatchOp::Delete { space, .. } => deletes[space.index()] += 1,
        }
    }
    for space in Space::ALL {
        let (p, d) = (puts[space.index()], deletes[space.index()]);
        if p > 0 {
            OPS.get(["put", space.name()]).increment(p);
        }
        if d > 0 {
            OPS.get(["delete", space.name()]).increment(d);
        }
    }
    BATCH_BYTES.one().record(batch.size_bytes() as f64);
}

/// Runs one engine call, recording its duration and, if it fails, an error.
pub(crate) fn timed<T>(
    op: &'static str,
    call: impl FnOnce() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let start = Instant::now();
    let result = call();
    DURATION.get([op]).record(start.elapsed().as_secs_f64());
    if let Err(error) = &result {
        metrics::counter!(ERRORS_TOTAL, "op" => op).increment(1);
        tracing::debug!(op, %error, "storage operation failed");
    }
    result
}
