//! Periodic tasks that run beside the engine until shutdown.

use std::sync::Arc;
use std::time::Duration;

use shoal_storage::{RocksStorage, Storage};
use tokio::sync::watch;
use tracing::warn;

use shoal_executor::Executor;

/// How often RocksDB's statistics are published as gauges.
const STORAGE_STATS_INTERVAL: Duration = Duration::from_secs(5);

/// Publish the storage engine's statistics as gauges until shutdown.
pub(super) async fn report_storage_stats(
    storage: Arc<RocksStorage>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(STORAGE_STATS_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let s = storage.clone();
        let Ok(stats) = tokio::task::spawn_blocking(move || s.stats()).await else {
            return;
        };
        metrics::gauge!(crate::metrics::ROCKSDB_LIVE_DATA_BYTES).set(stats.live_data_bytes as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_PENDING_COMPACTION_BYTES)
            .set(stats.pending_compaction_bytes as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_BLOCK_CACHE_USAGE_BYTES)
            .set(stats.block_cache_usage_bytes as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_MEMTABLE_BYTES).set(stats.memtable_bytes as f64);
        metrics::gauge!(crate::metrics::ROCKSDB_ESTIMATED_KEYS).set(stats.estimated_keys as f64);
        metrics::gauge!(crate::metrics::STORAGE_OBJECT_CACHE_BYTES)
            .set(stats.object_cache_bytes as f64);
        metrics::counter!(crate::metrics::STORAGE_OBJECT_CACHE_LOOKUPS_TOTAL, "result" => "hit")
            .absolute(stats.object_cache_hits);
        metrics::counter!(crate::metrics::STORAGE_OBJECT_CACHE_LOOKUPS_TOTAL, "result" => "miss")
            .absolute(stats.object_cache_misses);
    }
}

/// How often the data directory's free space is checked (one `statvfs`), published, and a
/// database stopped on a full disk reopened once space is back.
const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Check the disk every [`DISK_CHECK_INTERVAL`] until shutdown, so that the gauges
/// `shoal_storage_disk_full` and `shoal_storage_free_bytes` stay current and writes
/// resume after a full disk even when no write arrives to notice.
pub(super) async fn watch_disk(storage: Arc<RocksStorage>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(DISK_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let s = storage.clone();
        if tokio::task::spawn_blocking(move || s.check_disk())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Rebuild every Merkle tree from storage now and then, and check it against the
/// incremental one (a mismatch is replaced, logged and counted).
pub(super) async fn verify_trees<S: Storage>(
    executor: Arc<Executor<S>>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    // The first tick of an interval fires at once; the trees were just built at open.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let exec = executor.clone();
        match tokio::task::spawn_blocking(move || exec.verify_trees()).await {
            Ok(Ok(mismatches)) => {
                for m in mismatches {
                    warn!(partition = %m.partition, incremental = m.incremental_root, rebuilt = m.rebuilt_root,
                        "Merkle tree did not match storage; replaced by the rebuilt one");
                }
            }
            Ok(Err(e)) => warn!("verifying Merkle trees failed: {e}"),
            Err(_) => return,
        }
    }
}
