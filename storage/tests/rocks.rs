//! RocksDB-specific behaviour: reopening, the format marker, refusing foreign directories,
//! closing.

use std::path::Path;
use std::sync::Arc;

use shoal_storage::{
    object_key, Durability, PartitionId, RocksOptions, RocksStorage, Space, Storage, StorageError,
    WriteBatch, FORMAT_VERSION,
};

const MARKER_KEY: &[u8] = b"shoal.format_version";

fn options(durability: Durability) -> RocksOptions {
    RocksOptions {
        durability,
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 4 << 20,
        ..RocksOptions::default()
    }
}

fn open(path: &Path) -> Result<RocksStorage, StorageError> {
    RocksStorage::open(path, options(Durability::Buffered))
}

/// A RocksDB database written by "someone else", with the given column families.
fn raw_db(path: &Path, families: &[&str]) -> rocksdb::DB {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    rocksdb::DB::open_cf(&opts, path, families).unwrap()
}

fn file_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn write_sample(storage: &RocksStorage) {
    for i in 0..500u32 {
        storage
            .put_object(
                PartitionId(i % 8),
                &i.to_be_bytes(),
                format!("value-{i}").as_bytes(),
            )
            .unwrap();
    }
    storage.put(Space::Hints, b"hint", b"h").unwrap();
    storage.put_meta("node_id", b"n1").unwrap();
}

fn assert_sample(storage: &RocksStorage) {
    for i in 0..500u32 {
        assert_eq!(
            storage
                .get_object(PartitionId(i % 8), &i.to_be_bytes())
                .unwrap(),
            Some(format!("value-{i}").into_bytes()),
            "object {i} lost"
        );
    }
    assert_eq!(
        storage.get(Space::Hints, b"hint").unwrap().as_deref(),
        Some(&b"h"[..])
    );
    assert_eq!(
        storage.get_meta("node_id").unwrap().as_deref(),
        Some(&b"n1"[..])
    );
}

fn reopen_keeps_data(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = RocksStorage::open(dir.path(), options(durability)).unwrap();
        assert_eq!(storage.durability(), durability);
        write_sample(&storage);
        // Dropped without flush: the data comes back from the WAL.
    }
    {
        let storage = RocksStorage::open(dir.path(), options(durability)).unwrap();
        assert_sample(&storage);
        storage.flush().unwrap();
    }
    // And from SST files after a flush.
    let storage = RocksStorage::open(dir.path(), options(durability)).unwrap();
    assert_sample(&storage);
}

/// `get_cached` answers from the memtable and the block cache, and says it cannot tell
/// for a key whose block only a table file on disk holds; once a plain `get` has read
/// that block into the cache, it answers again.
#[test]
fn a_cached_get_answers_from_memory_and_declines_what_only_the_disk_holds() {
    let dir = tempfile::tempdir().unwrap();
    let p = PartitionId(1);
    {
        let storage = open(dir.path()).unwrap();
        storage.put_object(p, b"key", b"value").unwrap();
        assert_eq!(
            storage.get_object_cached(p, b"key").unwrap(),
            Some(Some(b"value".to_vec())),
            "in the memtable"
        );
        storage.flush().unwrap();
    }
    let storage = open(dir.path()).unwrap();
    assert_eq!(
        storage.get_object_cached(p, b"key").unwrap(),
        None,
        "only the table file holds it after a reopen"
    );
    assert_eq!(
        storage.get_object(p, b"key").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        storage.get_object_cached(p, b"key").unwrap(),
        Some(Some(b"value".to_vec())),
        "in the block cache after a read"
    );
}

/// A flush puts the blocks it writes into the block cache: a key read right after its
/// memtable was flushed is still answered from memory, so the node need not hand the
/// read to a storage thread (RocksDB's `prepopulate_block_cache = kFlushOnly`). The
/// cache is the store's own, of the configured size (its usage counts the block).
#[test]
fn a_key_just_flushed_is_still_answered_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let p = PartitionId(1);
    // Without the object cache, which would answer first.
    let options = RocksOptions {
        object_cache_bytes: 0,
        ..options(Durability::Buffered)
    };
    let storage = RocksStorage::open(dir.path(), options).unwrap();
    let value = vec![7u8; 64 << 10];
    storage.put_object(p, b"key", &value).unwrap();
    storage.flush().unwrap();
    assert!(
        storage.stats().block_cache_usage_bytes >= value.len() as u64,
        "the store's block cache holds {} bytes after the flush",
        storage.stats().block_cache_usage_bytes
    );
    assert_eq!(
        storage.get_object_cached(p, b"key").unwrap(),
        Some(Some(value)),
        "the flushed block is not in the block cache"
    );
}

/// The objects' memtable inserts start from the last insert into the same partition:
/// RocksDB's options file records the insert-hint prefix (the 4-byte partition prefix)
/// for the objects column family, and no hint for the others.
#[test]
fn object_inserts_are_hinted_by_partition() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).unwrap();
    storage
        .put_object(PartitionId(1), b"key", b"value")
        .unwrap();
    let options_file = file_names(dir.path())
        .into_iter()
        .filter(|name| name.starts_with("OPTIONS-"))
        .max()
        .expect("RocksDB writes an OPTIONS file");
    let text = std::fs::read_to_string(dir.path().join(options_file)).unwrap();
    // Each column family's section runs from its header to the next one.
    let section = |family: &str| -> String {
        let header = format!("[CFOptions \"{family}\"]");
        let start = text.find(&header).unwrap_or_else(|| panic!("no {header}"));
        let rest = &text[start + header.len()..];
        rest[..rest.find("[CFOptions").unwrap_or(rest.len())].to_string()
    };
    let hint = |family: &str| -> Option<String> {
        section(family)
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("memtable_insert_with_hint_prefix_extractor="))
            .map(str::to_string)
    };
    assert_eq!(hint("objects").as_deref(), Some("rocksdb.FixedPrefix.4"));
    assert_eq!(hint("hints").as_deref(), Some("nullptr"));
}

/// The nice value of each of this process's threads named `name`.
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("a task entry").path();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim() != name {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
            continue;
        };
        // After the parenthesised name: state is field 3, nice field 19 of proc(5).
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
            .split(' ')
            .collect();
        nices.push(fields[16].parse().expect("a nice value"));
    }
    nices
}

/// By default flushes and compactions run at the lowest CPU priority (nice 19), so that
/// on a busy machine a memtable flush takes only the CPU requests leave: a flushing
/// thread (RocksDB's HIGH pool) and a compacting one (its LOW pool) both show it once
/// they ran a job. (Linux's `/proc`; each thread lowers itself before its next job.)
#[cfg(target_os = "linux")]
#[test]
fn flushes_and_compactions_run_at_the_lowest_cpu_priority_by_default() {
    assert_eq!(
        RocksOptions::default().background_priority,
        shoal_storage::BackgroundPriority::Low
    );
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).unwrap();
    // Level-0 files past the compaction trigger (4): a compaction follows the flushes.
    for i in 0..6u32 {
        storage
            .put_object(PartitionId(1), &i.to_be_bytes(), b"value")
            .unwrap();
        storage.flush().unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (high, low) = (
            nice_of_threads("rocksdb:high"),
            nice_of_threads("rocksdb:low"),
        );
        if high.contains(&19) && low.contains(&19) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 30 s the flush threads have nice {high:?}, the compaction threads {low:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The objects the store wrote last are answered from its object cache (counted as
/// hits), including after their memtable was flushed; a deleted object, a deleted
/// partition and a failed write leave nothing behind in it, and other spaces never
/// enter it.
#[test]
fn the_object_cache_answers_what_was_written_and_forgets_what_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q) = (PartitionId(1), PartitionId(2));
    let storage = open(dir.path()).unwrap();
    storage.put_object(p, b"a", b"1").unwrap();
    storage.put_object(q, b"b", b"2").unwrap();
    storage.flush().unwrap();
    let before = storage.stats();
    assert_eq!(
        storage.get_object(p, b"a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        storage.get_object_cached(q, b"b").unwrap(),
        Some(Some(b"2".to_vec()))
    );
    let after = storage.stats();
    assert_eq!(after.object_cache_hits, before.object_cache_hits + 2);
    assert!(after.object_cache_bytes > 0);
    // A new value replaces the cached one.
    storage.put_object(p, b"a", b"3").unwrap();
    assert_eq!(
        storage.get_object(p, b"a").unwrap().as_deref(),
        Some(&b"3"[..])
    );
    // A delete in a batch.
    let mut batch = WriteBatch::new();
    batch.delete(Space::Objects, object_key(p, b"a"));
    storage.write(batch).unwrap();
    assert_eq!(storage.get_object(p, b"a").unwrap(), None);
    // A partition's range delete.
    storage.delete_partition(q).unwrap();
    assert_eq!(storage.get_object(q, b"b").unwrap(), None);
    assert_eq!(storage.get_object_cached(q, b"b").unwrap(), Some(None));
    assert_eq!(storage.stats().object_cache_bytes, 0);
    // A refused write leaves the old value, in the store and in the cache.
    storage.put_object(p, b"c", b"4").unwrap();
    let mut bad = WriteBatch::new();
    bad.put(Space::Objects, object_key(p, b"c"), b"5".to_vec());
    bad.put(Space::Objects, vec![0; 1 << 20], b"too long a key".to_vec());
    assert!(storage.write(bad).is_err());
    assert_eq!(
        storage.get_object(p, b"c").unwrap().as_deref(),
        Some(&b"4"[..])
    );
    // Other spaces are not cached.
    let mut meta = WriteBatch::new();
    meta.put(Space::Meta, b"m".to_vec(), b"v".to_vec());
    storage.write(meta).unwrap();
    let misses = storage.stats().object_cache_misses;
    assert_eq!(
        storage.get(Space::Meta, b"m").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(storage.stats().object_cache_misses, misses);
}

/// Writers racing on a few keys from several threads, beside readers whose misses fill
/// the cache: afterwards every key reads the same through the cache as from a fresh
/// open of the store (RocksDB alone).
#[test]
fn racing_writers_and_readers_leave_the_cache_agreeing_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = PartitionId(3);
    let storage = Arc::new(open(dir.path()).unwrap());
    let mut threads: Vec<_> = (0..4u8)
        .map(|t| {
            let storage = Arc::clone(&storage);
            std::thread::spawn(move || {
                for i in 0..2_000u32 {
                    let key = [b'k', (i % 8) as u8];
                    storage.put_object(p, &key, &[t, (i % 251) as u8]).unwrap();
                    let _ = storage.get_object(p, &key).unwrap();
                }
            })
        })
        .collect();
    threads.extend((0..2u8).map(|r| {
        let storage = Arc::clone(&storage);
        std::thread::spawn(move || {
            for i in 0..4_000u32 {
                let key = [b'k', ((i + u32::from(r)) % 8) as u8];
                if r == 0 {
                    let _ = storage.get_object(p, &key).unwrap();
                } else {
                    let _ = storage.get_object_cached(p, &key).unwrap();
                }
            }
        })
    }));
    for t in threads {
        t.join().unwrap();
    }
    let cached: Vec<_> = (0..8u8)
        .map(|k| storage.get_object(p, &[b'k', k]).unwrap())
        .collect();
    storage.close().unwrap();
    drop(storage);
    let fresh = open(dir.path()).unwrap();
    for (k, cached) in cached.into_iter().enumerate() {
        assert_eq!(
            cached,
            fresh.get_object(p, &[b'k', k as u8]).unwrap(),
            "key {k}"
        );
    }
}

/// Objects no write of this run touched (the cache starts empty at open) are cached
/// once read, from disk or from memory: the next read of each is a hit.
#[test]
fn objects_read_once_are_answered_from_the_cache_after() {
    let dir = tempfile::tempdir().unwrap();
    let p = PartitionId(4);
    {
        let storage = open(dir.path()).unwrap();
        storage.put_object(p, b"disk", b"1").unwrap();
        storage.put_object(p, b"memory", b"2").unwrap();
        storage.close().unwrap();
    }
    let storage = open(dir.path()).unwrap();
    assert_eq!(storage.stats().object_cache_bytes, 0);
    assert_eq!(
        storage.get_object(p, b"disk").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        storage.get_object_cached(p, b"memory").unwrap(),
        Some(Some(b"2".to_vec()))
    );
    // A key that is not there is not cached (nothing to hold).
    assert_eq!(storage.get_object(p, b"absent").unwrap(), None);
    let before = storage.stats();
    assert!(before.object_cache_bytes > 0);
    assert_eq!(
        storage.get_object_cached(p, b"disk").unwrap(),
        Some(Some(b"1".to_vec()))
    );
    assert_eq!(
        storage.get_object(p, b"memory").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(storage.get_object(p, b"absent").unwrap(), None);
    let after = storage.stats();
    assert_eq!(after.object_cache_hits, before.object_cache_hits + 2);
    assert_eq!(after.object_cache_misses, before.object_cache_misses + 1);
}

/// Bytes in the store's write-ahead log files (what the OS holds of them).
fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// With `buffer_try_writes` (and `buffered` durability), a `try_write`'s WAL record stays
/// in the process until `write_out_wal` hands it to the OS, while a `write`'s reaches the
/// WAL file before the write returns; without it, or with `sync`, every write's does.
/// Whatever was written out survives a reopen.
#[test]
fn try_writes_reach_the_wal_file_when_written_out_if_the_store_buffers_them() {
    let p = PartitionId(5);
    let value = [9u8; 4096];
    for (durability, buffer) in [
        (Durability::Buffered, true),
        (Durability::Buffered, false),
        (Durability::Sync, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = RocksOptions {
            buffer_try_writes: buffer,
            ..options(durability)
        };
        let storage = RocksStorage::open(dir.path(), opts.clone()).unwrap();
        let buffers = buffer && durability == Durability::Buffered;
        let start = wal_bytes(dir.path());
        assert!(storage.try_put_object(p, b"a", &value).unwrap());
        let after_try = wal_bytes(dir.path());
        if buffers {
            assert_eq!(after_try, start, "a buffered try_write reached the file");
        } else {
            assert!(
                after_try >= start + 4096,
                "{durability:?} {buffer}: {after_try}"
            );
        }
        assert!(storage.try_put_object(p, b"b", &value).unwrap());
        storage.write_out_wal().unwrap();
        let written_out = wal_bytes(dir.path());
        assert!(written_out >= start + 2 * 4096, "{durability:?} {buffer}");
        storage.put_object(p, b"c", &value).unwrap();
        assert!(
            wal_bytes(dir.path()) >= written_out + 4096,
            "{durability:?} {buffer}: a write returned before its record was written out"
        );
        storage.close().unwrap();
        drop(storage);
        let reopened = RocksStorage::open(dir.path(), opts).unwrap();
        for key in [&b"a"[..], b"b", b"c"] {
            assert_eq!(
                reopened.get_object(p, key).unwrap().as_deref(),
                Some(&value[..])
            );
        }
    }
}

#[test]
fn reopen_keeps_data_with_buffered_durability() {
    reopen_keeps_data(Durability::Buffered);
}

#[test]
fn reopen_keeps_data_with_sync_durability() {
    reopen_keeps_data(Durability::Sync);
}

#[test]
fn reopen_with_other_durability_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(&RocksStorage::open(dir.path(), options(Durability::Sync)).unwrap());
    assert_sample(&RocksStorage::open(dir.path(), options(Durability::Buffered)).unwrap());
}

#[test]
fn new_store_is_created_in_a_missing_nested_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b");
    let storage = open(&path).unwrap();
    assert_eq!(storage.path(), path);
    storage.put_meta("x", b"y").unwrap();
    assert!(path.join("CURRENT").is_file());
}

#[test]
fn newer_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).unwrap().close().unwrap();
    {
        let db = raw_db(dir.path(), &["objects", "hints", "meta"]);
        assert_eq!(
            db.get(MARKER_KEY).unwrap(),
            Some(FORMAT_VERSION.to_be_bytes().to_vec())
        );
        db.put(MARKER_KEY, 2u32.to_be_bytes()).unwrap();
    }
    let error = open(dir.path()).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::FormatVersion {
                found: 2,
                expected: FORMAT_VERSION
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("format version 2"), "{error}");
}

#[test]
fn older_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).unwrap().close().unwrap();
    raw_db(dir.path(), &["objects", "hints", "meta"])
        .put(MARKER_KEY, 0u32.to_be_bytes())
        .unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(StorageError::FormatVersion {
            found: 0,
            expected: FORMAT_VERSION
        })
    ));
}

#[test]
fn malformed_format_marker_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).unwrap().close().unwrap();
    raw_db(dir.path(), &["objects", "hints", "meta"])
        .put(MARKER_KEY, b"v1")
        .unwrap();
    assert!(matches!(open(dir.path()), Err(StorageError::Corrupt(_))));
}

#[test]
fn directory_with_other_files_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a database").unwrap();
    let error = open(dir.path()).unwrap_err();
    assert!(matches!(error, StorageError::NotAStore { .. }), "{error:?}");
    assert!(
        error.to_string().contains("not a Shoal data directory"),
        "{error}"
    );
    assert_eq!(file_names(dir.path()), ["notes.txt"]);
}

#[test]
fn a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(open(&file), Err(StorageError::NotAStore { .. })));
}

#[test]
fn foreign_rocksdb_database_is_refused_unmodified() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = raw_db(dir.path(), &["default"]);
        db.put(b"their-key", b"their-value").unwrap();
        db.flush().unwrap();
    }
    let before = file_names(dir.path());
    let error = open(dir.path()).unwrap_err();
    assert!(
        matches!(&error, StorageError::NotAStore { reason, .. } if reason.contains("column families")),
        "{error:?}"
    );
    assert_eq!(
        file_names(dir.path()),
        before,
        "the foreign database was modified"
    );
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert_eq!(families, ["default"]);
}

#[test]
fn database_with_shoal_families_and_data_but_no_marker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = raw_db(dir.path(), &["objects", "hints", "meta"]);
        let objects = db.cf_handle("objects").unwrap();
        db.put_cf(objects, b"k", b"v").unwrap();
    }
    assert!(matches!(
        open(dir.path()),
        Err(StorageError::NotAStore { .. })
    ));
}

#[test]
fn creation_interrupted_before_the_marker_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(raw_db(dir.path(), &["objects", "hints", "meta"]));
    open(dir.path()).unwrap().close().unwrap();
    let db = raw_db(dir.path(), &["objects", "hints", "meta"]);
    assert_eq!(
        db.get(MARKER_KEY).unwrap(),
        Some(FORMAT_VERSION.to_be_bytes().to_vec())
    );
}

#[test]
fn extra_column_families_are_kept_open() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).unwrap().close().unwrap();
    drop(raw_db(dir.path(), &["objects", "hints", "meta", "future"]));
    let storage = open(dir.path()).unwrap();
    storage.put_meta("k", b"v").unwrap();
}

#[test]
fn invalid_options_are_refused_before_touching_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let bad = RocksOptions {
        max_open_files: 1,
        ..RocksOptions::default()
    };
    assert!(matches!(
        RocksStorage::open(&path, bad),
        Err(StorageError::InvalidOptions(_))
    ));
    assert!(!path.exists());
}

#[test]
fn a_store_open_in_this_process_cannot_be_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path()).unwrap();
    assert!(matches!(open(dir.path()), Err(StorageError::Rocks(_))));
}

#[test]
fn close_releases_the_store_while_other_handles_remain() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(open(dir.path()).unwrap());
    let background_task_handle = Arc::clone(&storage);
    write_sample(&storage);
    storage.close().unwrap();
    assert!(matches!(
        background_task_handle.put_meta("late", b"x"),
        Err(StorageError::Closed)
    ));
    let reopened = open(dir.path()).unwrap();
    assert_sample(&reopened);
    assert_eq!(reopened.get_meta("late").unwrap(), None);
}

#[test]
fn flush_moves_memtables_to_sst_files_and_stats_follow() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..10_000u32 {
        batch.put(
            Space::Objects,
            object_key(PartitionId(i % 16), &i.to_be_bytes()),
            vec![7u8; 100],
        );
    }
    storage.write(batch).unwrap();
    let before = storage.stats();
    assert!(before.memtable_bytes > 0, "{before:?}");
    assert!(before.estimated_keys > 0, "{before:?}");
    storage.flush().unwrap();
    let after = storage.stats();
    assert!(
        after.live_data_bytes > 0,
        "no live data after flush: {after:?}"
    );
    assert!(
        after.memtable_bytes < before.memtable_bytes,
        "{before:?} -> {after:?}"
    );
    assert!(after.estimated_keys >= 5_000, "{after:?}");
    // Reading warms the block cache.
    assert!(storage
        .get_object(PartitionId(1), &1u32.to_be_bytes())
        .unwrap()
        .is_some());
    assert!(storage.stats().block_cache_usage_bytes > 0);
}

#[test]
fn closed_store_reports_empty_stats() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).unwrap();
    write_sample(&storage);
    storage.close().unwrap();
    assert_eq!(storage.stats(), shoal_storage::StorageStats::default());
}

#[test]
fn delete_partition_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path()).unwrap();
        write_sample(&storage);
        storage.flush().unwrap();
        storage.delete_partition(PartitionId(3)).unwrap();
    }
    let storage = open(dir.path()).unwrap();
    assert!(storage
        .scan_partition(PartitionId(3), None, 10)
        .unwrap()
        .is_empty());
    assert_eq!(
        storage
            .scan_partition(PartitionId(4), None, 1000)
            .unwrap()
            .len(),
        500 / 8
    );
}

/// A checkpoint holds everything written before it (memtables included: nothing was
/// flushed), nothing written after, and opens as a store of its own.
#[test]
fn checkpoint_is_a_consistent_copy_that_opens_as_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir.path().join("live")).unwrap();
    write_sample(&storage);
    let copy = dir.path().join("copy");
    storage.checkpoint(&copy).unwrap();
    storage
        .put_object(PartitionId(0), b"after", b"not in the copy")
        .unwrap();
    // An existing directory is refused.
    assert!(storage.checkpoint(&copy).is_err());
    storage.close().unwrap();
    let restored = open(&copy).unwrap();
    assert_sample(&restored);
    assert_eq!(restored.get_object(PartitionId(0), b"after").unwrap(), None);
}
