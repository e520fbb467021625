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
//! middle of a flush or compaction at all. Writes of meta keys only (the node's own
//! bookkeeping: its actor, dot reservations, layout) are not refused by the reserve: it is
//! kept for them, so a node stopped at its reserve can start again.
//!
//! The spare file ([`SPARE_SPACE_FILE`], `spare_space_bytes`) guards the case the reserve
//! cannot: something else filled the filesystem to the last byte while the node was down,
//! and opening the database (a new manifest and log, the log's replay) finds no room.
//! The store keeps a file of that size beside its data and, at an open that would not fit
//! the log's replay, deletes it first. Until the file can be made again, its size counts
//! in the reserve, so the node's writes do not take the room back; the store makes it
//! again (at an open, or at the node's periodic disk check) once free space holds the
//! reserve and the file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use crate::error::StorageError;
use crate::metrics::{
    DISK_FULL, DISK_FULL_REFUSALS_TOTAL, DISK_FULL_REOPENS_TOTAL, FREE_BYTES, SPARE_SPACE_BYTES,
};

/// Name of the spare file in the data directory (see the module docs). RocksDB ignores
/// files it did not name; checkpoints and backups do not copy it.
pub const SPARE_SPACE_FILE: &str = "SPARE_SPACE";
/// Name the spare file is made under, then renamed from: a crash half-way leaves this
/// name, which the next open deletes.
pub(crate) const SPARE_SPACE_TEMP_FILE: &str = "SPARE_SPACE.tmp";

/// Least time between two attempts to make the spare file after one failed: the
/// once-a-second disk check would otherwise try (and log a warning) every second.
pub(crate) const SPARE_RETRY_INTERVAL: Duration = Duration::from_secs(60);
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
    /// Bytes the spare file holds now: `spare_space_bytes`, or 0 while it is given back
    /// (or could not be made yet, or is off).
    pub spare_space_bytes: u64,
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
    spare: Spare,
}

/// The spare file (see the module docs).
#[derive(Debug)]
struct Spare {
    file: PathBuf,
    temp: PathBuf,
    /// Its size; 0: none is kept.
    bytes: u64,
    /// The file exists at its size.
    held: AtomicBool,
    /// It was deleted to make room for an open and is not made again yet: its size counts
    /// in the reserve meanwhile.
    given_back: AtomicBool,
    /// Held while the file is made, so that two checks do not both make it; holds when
    /// making it last failed: it is not tried again (nor the failure logged) until
    /// [`SPARE_RETRY_INTERVAL`] has passed.
    making: Mutex<Option<Instant>>,
}

impl DiskGuard {
    pub(crate) fn new(
        path: &Path,
        min_free_bytes: u64,
        stall_margin: u64,
        spare_space_bytes: u64,
    ) -> DiskGuard {
        DiskGuard {
            spare: Spare {
                file: path.join(SPARE_SPACE_FILE),
                temp: path.join(SPARE_SPACE_TEMP_FILE),
                bytes: spare_space_bytes,
                held: AtomicBool::new(false),
                given_back: AtomicBool::new(false),
                making: Mutex::new(None),
            },
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
            .reserve()
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
            spare_space_bytes: if self.spare.held.load(Ordering::Relaxed) {
                self.spare.bytes
            } else {
                0
            },
        }
    }

    /// Updates the gauges from the state.
    pub(crate) fn publish(&self) {
        let status = self.status();
        metrics::gauge!(DISK_FULL).set(if status.full { 1.0 } else { 0.0 });
        if let Some(free) = status.free_bytes {
            metrics::gauge!(FREE_BYTES).set(free as f64);
        }
        metrics::gauge!(SPARE_SPACE_BYTES).set(status.spare_space_bytes as f64);
    }

    /// Free space below which writes are refused: `min_free_bytes`, plus the spare file's
    /// size while it is given back.
    fn reserve(&self) -> u64 {
        if self.spare.given_back.load(Ordering::Relaxed) {
            self.min_free_bytes.saturating_add(self.spare.bytes)
        } else {
            self.min_free_bytes
        }
    }

    /// Whether `free` bytes make the disk nearly full: within the stall margin of the
    /// reserve. Unknown free space is not (RocksDB's usual stalls then apply).
    pub(crate) fn is_tight(&self, free: Option<u64>) -> bool {
        free.is_some_and(|free| free < self.reserve().saturating_add(self.stall_margin))
    }

    /// Before an existing database is opened: takes stock of the spare file (a half-made
    /// one is deleted; one of another size, or any with the spare off, too) and deletes
    /// it when the free space would not hold the write-ahead log's replay, so that the
    /// open finds room.
    pub(crate) fn spare_before_open(&self) {
        let spare = &self.spare;
        remove_if_present(&spare.temp);
        let size = std::fs::metadata(&spare.file).ok().map(|m| m.len());
        let held = spare.bytes > 0 && size == Some(spare.bytes);
        if size.is_some() && !held {
            remove_if_present(&spare.file);
        }
        spare.held.store(held, Ordering::Relaxed);
        if !held {
            return;
        }
        let needed = self.replay_room();
        let Some(free) = self.refresh().filter(|&free| free < needed) else {
            return;
        };
        match std::fs::remove_file(&spare.file) {
            Ok(()) => {
                spare.held.store(false, Ordering::Relaxed);
                spare.given_back.store(true, Ordering::Relaxed);
                tracing::warn!(
                    free_bytes = free,
                    needed_bytes = needed,
                    spare_space_bytes = spare.bytes,
                    "the disk is full: deleted the spare file to make room for opening the \
                     store; writes are refused until free space holds the reserve and the \
                     spare file again"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "deleting the spare file to open on a full disk failed")
            }
        }
    }

    /// Makes the spare file when it is missing and `free` bytes hold it beside the
    /// reserve; returns the free space after (`free` when nothing was made).
    pub(crate) fn make_spare(&self, free: Option<u64>) -> Option<u64> {
        let spare = &self.spare;
        if spare.bytes == 0 || spare.held.load(Ordering::Relaxed) {
            return free;
        }
        let room = self.min_free_bytes.saturating_add(spare.bytes);
        if free.is_none_or(|free| free < room) {
            return free;
        }
        let Ok(mut failed_at) = spare.making.try_lock() else {
            return free;
        };
        if spare.held.load(Ordering::Relaxed) {
            return free;
        }
        if failed_at.is_some_and(|at| at.elapsed() < SPARE_RETRY_INTERVAL) {
            return free;
        }
        match allocate(&spare.temp, spare.bytes)
            .and_then(|()| std::fs::rename(&spare.temp, &spare.file))
        {
            Ok(()) => {
                *failed_at = None;
                spare.held.store(true, Ordering::Relaxed);
                if spare.given_back.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        spare_space_bytes = spare.bytes,
                        "free space is back: made the spare file again"
                    );
                }
                self.publish();
                self.refresh()
            }
            Err(error) => {
                remove_if_present(&spare.temp);
                *failed_at = Some(Instant::now());
                tracing::warn!(
                    %error,
                    spare_space_bytes = spare.bytes,
                    retry_in_seconds = SPARE_RETRY_INTERVAL.as_secs(),
                    "making the spare file failed"
                );
                free
            }
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Whether `free` bytes are below the reserve; records the transition either way.
    /// Unknown free space never refuses.
    pub(crate) fn check_reserve(&self, free: Option<u64>) -> bool {
        let reserve = self.reserve();
        let low = free.is_some_and(|free| free < reserve);
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(
                    free_bytes = free,
                    min_free_bytes = reserve,
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

    /// Free space an open of the database needs: the write-ahead log's replay into a
    /// table file, plus a new manifest and log.
    fn replay_room(&self) -> u64 {
        wal_bytes(&self.path) + REOPEN_HEADROOM_BYTES
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
        let needed = self.min_free_bytes.max(self.replay_room());
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

/// Deletes `path` unless it is already gone; a failure is logged (the caller goes on).
fn remove_if_present(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(%error, path = %path.display(), "deleting a file failed"),
    }
}

/// Creates `path` with `bytes` of allocated space (`fallocate`, or written zeros where the
/// filesystem does not allocate) and syncs it.
fn allocate(path: &Path, bytes: u64) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => {}
        Err(rustix::io::Errno::OPNOTSUPP) => {
            let chunk = vec![0u8; 1 << 20];
            let mut left = bytes;
            let mut writer = &file;
            while left > 0 {
                let n = usize::try_from(left).map_or(chunk.len(), |l| l.min(chunk.len()));
                std::io::Write::write_all(&mut writer, &chunk[..n])?;
                left -= n as u64;
            }
        }
        Err(errno) => return Err(errno.into()),
    }
    file.sync_all()
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
        let guard = DiskGuard::new(dir.path(), 0, 0, 0);
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
        let near = DiskGuard::new(dir.path(), u64::MAX / 4, 0, 0);
        near.refresh_for_write();
        near.free_bytes.store(12_345, Ordering::Relaxed);
        assert_ne!(near.refresh_for_write(), Some(12_345));
    }

    /// A spare file that cannot be made (here: a directory in the way of its temporary
    /// name) is tried again, and its failure logged, once per retry interval, not at
    /// every one-second disk check.
    #[test]
    fn a_spare_file_that_cannot_be_made_is_tried_again_only_after_the_retry_interval() {
        let dir = tempfile::tempdir().unwrap();
        let obstacle = dir.path().join(SPARE_SPACE_TEMP_FILE);
        std::fs::create_dir(&obstacle).unwrap();
        let guard = DiskGuard::new(dir.path(), 0, 0, 4096);
        let free = guard.refresh();
        assert!(free.is_some(), "statvfs of a temporary directory");
        guard.make_spare(free);
        let failed = *guard.spare.making.lock().unwrap();
        assert!(failed.is_some(), "the failure was not recorded");
        assert!(!guard.spare.held.load(Ordering::Relaxed));
        guard.make_spare(free);
        assert_eq!(
            *guard.spare.making.lock().unwrap(),
            failed,
            "tried again within the retry interval"
        );

        // The interval over and the obstacle gone, the next check makes the file.
        std::fs::remove_dir(&obstacle).unwrap();
        *guard.spare.making.lock().unwrap() = Instant::now().checked_sub(SPARE_RETRY_INTERVAL);
        guard.make_spare(free);
        assert!(guard.spare.held.load(Ordering::Relaxed));
        assert_eq!(*guard.spare.making.lock().unwrap(), None);
        let made = std::fs::metadata(dir.path().join(SPARE_SPACE_FILE)).unwrap();
        assert_eq!(made.len(), 4096);
    }
}
