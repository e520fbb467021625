//! The data directory's free space: the reserve below which writes are refused, and the
//! state RocksDB is left in when it did run out of space.
//!
//! RocksDB stops accepting writes after a write or a flush fails with `ENOSPC` and, in
//! the version this crate links, resumes by itself only once the filesystem has as much
//! free space as all its memtables together (with 128 MiB memtables that can be more than
//! the whole disk), and its C API exposes no `Resume`. So the engine recovers itself:
//! while RocksDB is stopped, writes are refused at once with [`StorageError::DiskFull`],
//! and once the free space would hold the write-ahead log's replay plus the reserve the
//! database is reopened (at most once per [`REOPEN_INTERVAL`]), which replays the log and
//! clears the error. Reads are served throughout, from the stopped database.
//!
//! The reserve (`min_free_bytes`) makes the common case gentler: writes are refused while
//! the filesystem has less free space than that, so RocksDB rarely meets `ENOSPC` in the
//! middle of a flush or compaction at all.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use crate::error::StorageError;
use crate::metrics::{DISK_FULL, DISK_FULL_REFUSALS_TOTAL, DISK_FULL_REOPENS_TOTAL, FREE_BYTES};

/// Least time between two attempts to reopen a database that ran out of space; bounds the
/// work a stream of refused writes (or the node's periodic check) can cause.
pub(crate) const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// Free space, beyond the write-ahead log's size, that a reopen needs: the replay writes
/// the log's contents to a new table file, and the reopen a new manifest and log.
const REOPEN_HEADROOM_BYTES: u64 = 4 << 20;
/// Sentinel of [`DiskGuard::free_bytes`] while the free space is unknown.
const UNKNOWN: u64 = u64::MAX;
/// A write reuses the free space seen at most this long ago instead of asking the
/// filesystem again (a `statvfs` per write was 2% of a node's CPU under write load)...
const WRITE_REFRESH_INTERVAL: Duration = Duration::from_millis(10);
/// ...while that free space was at least this far above the stall margin: near the
/// reserve every write looks again.
const WRITE_REFRESH_SLACK_BYTES: u64 = 1 << 30;

/// The disk state a node reports (`shoal status`, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskStatus {
    /// Writes are refused with [`StorageError::DiskFull`]: the filesystem is below the
    /// reserve, or RocksDB ran out of space and has not been reopened yet.
    pub full: bool,
    /// Bytes available on the data directory's filesystem at the last check (`None`: the
    /// filesystem does not say).
    pub free_bytes: Option<u64>,
}

/// Free-space bookkeeping of one [`crate::RocksStorage`].
#[derive(Debug)]
pub(crate) struct DiskGuard {
    path: PathBuf,
    min_free_bytes: u64,
    /// Free space above the reserve below which the disk counts as nearly full.
    stall_margin: u64,
    /// Writes fall below the reserve.
    low: AtomicBool,
    /// RocksDB failed a write or flush with `ENOSPC` and refuses writes until reopened.
    stopped: AtomicBool,
    /// Last observed free bytes, or [`UNKNOWN`].
    free_bytes: AtomicU64,
    /// When a reopen was last attempted; locked while one runs.
    last_reopen: Mutex<Option<Instant>>,
    /// What [`DiskGuard::refresh_for_write`] measures time from.
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last `statvfs` a write made.
    write_refreshed_at: AtomicU64,
}

impl DiskGuard {
    pub(crate) fn new(path: &Path, min_free_bytes: u64, stall_margin: u64) -> DiskGuard {
        DiskGuard {
            path: path.to_path_buf(),
            min_free_bytes,
            stall_margin,
            low: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            free_bytes: AtomicU64::new(UNKNOWN),
            last_reopen: Mutex::new(None),
            epoch: Instant::now(),
            write_refreshed_at: AtomicU64::new(0),
        }
    }

    /// The free space a write is admitted against: [`DiskGuard::refresh`], or, within
    /// [`WRITE_REFRESH_INTERVAL`] of the last write's `statvfs` and while the free space
    /// then was more than [`WRITE_REFRESH_SLACK_BYTES`] above the stall margin, that
    /// value again. Another process could fill the disk within the interval; then
    /// RocksDB's own `ENOSPC` stops the engine, as it would between two checks anyway.
    pub(crate) fn refresh_for_write(&self) -> Option<u64> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.write_refreshed_at.load(Ordering::Relaxed);
        let free = self.free_bytes.load(Ordering::Relaxed);
        let roomy = self
            .min_free_bytes
            .saturating_add(self.stall_margin)
            .saturating_add(WRITE_REFRESH_SLACK_BYTES);
        let recent =
            last != 0 && now.saturating_sub(last) < WRITE_REFRESH_INTERVAL.as_nanos() as u64;
        if recent && free != UNKNOWN && free >= roomy && !self.is_stopped() {
            return Some(free);
        }
        self.write_refreshed_at.store(now.max(1), Ordering::Relaxed);
        self.refresh()
    }

    /// Reads the filesystem's free space (one `statvfs`) and records it.
    pub(crate) fn refresh(&self) -> Option<u64> {
        let free = match rustix::fs::statvfs(&self.path) {
            Ok(stat) => Some(stat.f_bavail.saturating_mul(stat.f_frsize)),
            Err(error) => {
                tracing::debug!(%error, "statvfs of the data directory failed");
                None
            }
        };
        self.free_bytes
            .store(free.unwrap_or(UNKNOWN), Ordering::Relaxed);
        free
    }

    /// The state as last observed.
    pub(crate) fn status(&self) -> DiskStatus {
        let free = self.free_bytes.load(Ordering::Relaxed);
        DiskStatus {
            full: self.is_stopped() || self.low.load(Ordering::Relaxed),
            free_bytes: (free != UNKNOWN).then_some(free),
        }
    }

    /// Updates the gauges from the state.
    pub(crate) fn publish(&self) {
        let status = self.status();
        metrics::gauge!(DISK_FULL).set(if status.full { 1.0 } else { 0.0 });
        if let Some(free) = status.free_bytes {
            metrics::gauge!(FREE_BYTES).set(free as f64);
        }
    }

    /// Whether `free` bytes make the disk nearly full: within the stall margin of the
    /// reserve. Unknown free space is not (RocksDB's usual stalls then apply).
    pub(crate) fn is_tight(&self, free: Option<u64>) -> bool {
        free.is_some_and(|free| free < self.min_free_bytes.saturating_add(self.stall_margin))
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Whether `free` bytes are below the reserve; records the transition either way.
    /// Unknown free space never refuses.
    pub(crate) fn check_reserve(&self, free: Option<u64>) -> bool {
        let low = free.is_some_and(|free| free < self.min_free_bytes);
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(
                    free_bytes = free,
                    min_free_bytes = self.min_free_bytes,
                    "data directory below its free-space reserve: refusing writes"
                );
            } else {
                tracing::info!(
                    free_bytes = free,
                    "free space is back above the reserve: accepting writes"
                );
            }
            self.publish();
        }
        low
    }

    /// RocksDB ran out of space: refuse writes until a reopen succeeds.
    pub(crate) fn stop(&self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "the disk filled up under RocksDB: refusing writes until space is freed"
            );
            self.publish();
        }
    }

    /// A reopen succeeded: RocksDB accepts writes again.
    fn resumed(&self) {
        if self.stopped.swap(false, Ordering::AcqRel) {
            tracing::info!("storage reopened after the disk filled up: accepting writes");
            self.publish();
        }
    }

    /// Counts one write answered [`StorageError::DiskFull`] and returns that error.
    pub(crate) fn refuse(&self) -> StorageError {
        metrics::counter!(DISK_FULL_REFUSALS_TOTAL).increment(1);
        StorageError::DiskFull
    }

    /// Runs `reopen` if RocksDB is stopped, a reopen is due and `free` bytes would hold
    /// it; returns whether the database is (now) writable. Concurrent callers do not wait
    /// for a reopen in progress: they are refused.
    pub(crate) fn resume_with(
        &self,
        free: Option<u64>,
        reopen: impl FnOnce() -> Result<bool, StorageError>,
    ) -> bool {
        if !self.is_stopped() {
            return true;
        }
        let needed = self
            .min_free_bytes
            .max(wal_bytes(&self.path) + REOPEN_HEADROOM_BYTES);
        if free.is_some_and(|free| free < needed) {
            return false;
        }
        let mut last = match self.last_reopen.try_lock() {
            Ok(last) => last,
            // It guards only a timestamp, which a panic cannot leave half-written.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        if last.is_some_and(|at| at.elapsed() < REOPEN_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match reopen() {
            // Busy: not attempted; the next check tries again.
            Ok(false) => false,
            Ok(true) => {
                metrics::counter!(DISK_FULL_REOPENS_TOTAL, "result" => "ok").increment(1);
                self.resumed();
                true
            }
            Err(error) => {
                metrics::counter!(DISK_FULL_REOPENS_TOTAL, "result" => "failed").increment(1);
                tracing::warn!(%error, "reopening storage after the disk filled up failed; will retry");
                false
            }
        }
    }
}

/// Bytes of the write-ahead log files (`*.log`) in `path`: what a reopen replays.
fn wal_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reuse_a_recent_roomy_free_space_and_look_again_near_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path(), 0, 0);
        let real = guard
            .refresh_for_write()
            .expect("statvfs of a temporary directory");
        // Pretend the last look saw plenty: a write within the interval reuses it.
        let plenty = real.max(WRITE_REFRESH_SLACK_BYTES) + 12_345;
        guard.free_bytes.store(plenty, Ordering::Relaxed);
        assert_eq!(guard.refresh_for_write(), Some(plenty));
        // Once the interval is over (here: never looked), the write looks again.
        guard.write_refreshed_at.store(0, Ordering::Relaxed);
        assert_ne!(guard.refresh_for_write(), Some(plenty));

        // Near the reserve every write looks, however recent the last look.
        let near = DiskGuard::new(dir.path(), u64::MAX / 4, 0);
        near.refresh_for_write();
        near.free_bytes.store(12_345, Ordering::Relaxed);
        assert_ne!(near.refresh_for_write(), Some(12_345));
    }
}
