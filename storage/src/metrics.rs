//! Storage metrics, recorded the same way by every engine.
//!
//! - `shoal_storage_ops_total{op,space}`: operations by kind (`get`, `put`, `delete`,
//!   `scan`, `delete_partition`) and space; a batch counts each of its operations.
//! - `shoal_storage_op_duration_seconds{op}`: latency of engine calls (`get`, `write`,
//!   `scan`, `flush`, `delete_partition`, `close`).
//! - `shoal_storage_errors_total{op}`: failed engine calls.
//! - `shoal_storage_write_batch_bytes`: size of each written batch.

use std::time::Instant;

use crate::batch::{BatchOp, Space, WriteBatch};
use crate::error::StorageError;

/// Counts one operation of kind `op` on `space`.
pub(crate) fn count_op(op: &'static str, space: Space) {
    metrics::counter!("shoal_storage_ops_total", "op" => op, "space" => space.name()).increment(1);
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
            metrics::counter!("shoal_storage_ops_total", "op" => "put", "space" => space.name())
                .increment(p);
        }
        if d > 0 {
            metrics::counter!("shoal_storage_ops_total", "op" => "delete", "space" => space.name())
                .increment(d);
        }
    }
    metrics::histogram!("shoal_storage_write_batch_bytes").record(batch.size_bytes() as f64);
}

/// Runs one engine call, recording its duration and, if it fails, an error.
pub(crate) fn timed<T>(
    op: &'static str,
    call: impl FnOnce() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let start = Instant::now();
    let result = call();
    metrics::histogram!("shoal_storage_op_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    if let Err(error) = &result {
        metrics::counter!("shoal_storage_errors_total", "op" => op).increment(1);
        tracing::debug!(op, %error, "storage operation failed");
    }
    result
}
