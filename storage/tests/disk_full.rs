//! A full disk under the RocksDB engine, on a real small filesystem: a 64 MiB tmpfs
//! (mounting one needs root, which CI and the dev machines have). Writes that do not fit
//! fail with the typed [`StorageError::DiskFull`] (no RocksDB text, no path), reads keep
//! working, and writes work again by themselves once space is freed, without reopening.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_storage::{Durability, RocksOptions, RocksStorage, Space, Storage, StorageError};

use self::support::tmpfs::Tmpfs;

mod support {
    pub mod tmpfs;
}

/// Size of the test filesystem.
const TMPFS_SIZE: &str = "64m";
/// Size of each value written to fill the disk.
const VALUE_BYTES: usize = 64 * 1024;
/// Bound on the values written before the disk must be full: the whole filesystem,
/// twice over.
const MAX_FILL_VALUES: usize = 2 * 64 * 1024 * 1024 / VALUE_BYTES;
/// How long writes may take to come back after the ballast is deleted.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);
/// How often a write is retried while waiting for recovery.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// Free space left after the ballast is written, so that the fill is quick.
const LEFT_FREE_BYTES: u64 = 6 << 20;

/// Small memtables (so that flushes, too, meet the full disk) and the given reserve.
fn options(min_free_bytes: u64) -> RocksOptions {
    RocksOptions {
        durability: Durability::Buffered,
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 1 << 20,
        min_free_bytes,
        ..RocksOptions::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

/// Puts values until one fails; returns how many were acknowledged and the error.
fn fill(storage: &RocksStorage) -> (usize, StorageError) {
    let value = vec![0x5Au8; VALUE_BYTES];
    for i in 0..MAX_FILL_VALUES {
        if let Err(error) = storage.put(Space::Objects, &object_key_of(i), &value) {
            return (i, error);
        }
    }
    panic!("{MAX_FILL_VALUES} values of {VALUE_BYTES} bytes fit on a {TMPFS_SIZE} filesystem");
}

fn object_key_of(i: usize) -> Vec<u8> {
    shoal_storage::object_key(shoal_storage::PartitionId(0), &key(i))
}

/// The error a caller sees carries no RocksDB message and no path.
fn assert_typed_disk_full(error: &StorageError, data: &Path) {
    let text = error.to_string();
    assert!(
        matches!(error, StorageError::DiskFull),
        "expected DiskFull, got {error:?}"
    );
    assert!(!text.contains("rocksdb"), "RocksDB text leaks: {text}");
    assert!(
        !text.contains(&*data.to_string_lossy()),
        "path leaks: {text}"
    );
}

/// Retries a put until it succeeds, within [`RECOVERY_DEADLINE`].
fn wait_writable(storage: &RocksStorage, i: usize) {
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        match storage.put(Space::Objects, &object_key_of(i), b"after") {
            Ok(()) => return,
            Err(error) if Instant::now() >= deadline => {
                panic!("writes still fail {RECOVERY_DEADLINE:?} after space was freed: {error}")
            }
            Err(_) => std::thread::sleep(RETRY_INTERVAL),
        }
    }
}

/// Without a reserve, RocksDB itself runs out of space (`ENOSPC` on its log or a flush)
/// and stops; the engine reopens it once space is back.
#[test]
fn a_full_disk_refuses_writes_with_a_typed_error_keeps_reads_and_recovers_by_itself() {
    let fs = Tmpfs::mount(TMPFS_SIZE);
    let data = fs.path().join("data");
    let storage = RocksStorage::open(&data, options(0)).expect("opening the store");
    storage.put(Space::Meta, b"before", b"full").unwrap();
    let ballast = fs.ballast(LEFT_FREE_BYTES);

    let (acknowledged, error) = fill(&storage);
    assert!(
        acknowledged > 0,
        "the disk was full before any value: {error}"
    );
    assert_typed_disk_full(&error, &data);
    // Still full: refused again, and reads are served.
    let again = storage.put(Space::Meta, b"while", b"full").unwrap_err();
    assert_typed_disk_full(&again, &data);
    assert_eq!(
        storage.get(Space::Meta, b"before").unwrap().as_deref(),
        Some(&b"full"[..])
    );
    assert!(storage
        .get(Space::Objects, &object_key_of(0))
        .unwrap()
        .is_some());
    assert!(storage.disk_status().full);

    std::fs::remove_file(&ballast).expect("deleting the ballast");
    wait_writable(&storage, acknowledged);
    assert!(!storage.check_disk().full);
    // Every acknowledged write is still there.
    for i in 0..acknowledged {
        assert!(
            storage
                .get(Space::Objects, &object_key_of(i))
                .unwrap()
                .is_some(),
            "acknowledged value {i} of {acknowledged} is lost"
        );
    }
    storage.close().unwrap();
}

/// With a reserve, writes are refused while the filesystem still has room, and accepted
/// again as soon as the free space is back above the reserve.
#[test]
fn writes_are_refused_below_the_reserve_before_the_disk_is_full() {
    const RESERVE: u64 = 12 << 20;
    let fs = Tmpfs::mount(TMPFS_SIZE);
    let data = fs.path().join("data");
    let storage = RocksStorage::open(&data, options(RESERVE)).expect("opening the store");
    assert!(
        !storage.check_disk().full,
        "an empty 64 MiB filesystem is below a 12 MiB reserve"
    );
    let ballast = fs.ballast(RESERVE + LEFT_FREE_BYTES);

    let (acknowledged, error) = fill(&storage);
    assert!(
        acknowledged > 0,
        "the disk was below the reserve before any value: {error}"
    );
    assert_typed_disk_full(&error, &data);
    let free = fs.available();
    assert!(
        free > RESERVE / 2,
        "refused only at {free} bytes free, the reserve is {RESERVE}"
    );
    let status = storage.check_disk();
    assert!(status.full, "{status:?}");
    assert!(status.free_bytes.is_some_and(|f| f < RESERVE), "{status:?}");
    assert!(storage
        .get(Space::Objects, &object_key_of(0))
        .unwrap()
        .is_some());

    std::fs::remove_file(&ballast).expect("deleting the ballast");
    let status = storage.check_disk();
    assert!(!status.full, "{status:?}");
    storage
        .put(Space::Objects, &object_key_of(acknowledged), b"after")
        .expect("a write once space is back above the reserve");
    storage.close().unwrap();
}

/// Writes that touch only the meta space (the node's own bookkeeping: its actor, dot
/// reservations, layout) are not refused by the reserve: the reserve is kept for them,
/// so a node that stopped at its reserve can still open and start again.
#[test]
fn meta_writes_are_not_refused_by_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let storage = RocksStorage::open(&dir.path().join("data"), options(u64::MAX / 4))
        .expect("opening the store");
    let error = storage
        .put(Space::Objects, &object_key_of(0), b"v")
        .unwrap_err();
    assert_typed_disk_full(&error, dir.path());
    storage
        .put(Space::Meta, b"bookkeeping", b"kept")
        .expect("a meta write below the reserve");
    let mut mixed = shoal_storage::WriteBatch::new();
    mixed.put(Space::Meta, b"bookkeeping".to_vec(), b"again".to_vec());
    mixed.put(Space::Objects, object_key_of(1), b"v".to_vec());
    let error = storage.write(mixed).unwrap_err();
    assert_typed_disk_full(&error, dir.path());
    assert_eq!(
        storage.get(Space::Meta, b"bookkeeping").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    storage.close().unwrap();
}

/// The store keeps a spare file of `spare_space_bytes` beside its data. Opened on a
/// filesystem something else filled to the last byte, it deletes that file to make room
/// for the open, serves reads and its own bookkeeping, refuses object writes until free
/// space holds the reserve and the spare file again, then makes the file again.
#[test]
fn a_store_opens_on_a_full_disk_by_giving_back_its_spare_space() {
    const SPARE: u64 = 8 << 20;
    const RESERVE: u64 = 4 << 20;
    let fs = Tmpfs::mount(TMPFS_SIZE);
    let data = fs.path().join("data");
    let spare_file = data.join(shoal_storage::SPARE_SPACE_FILE);
    let opts = RocksOptions {
        spare_space_bytes: SPARE,
        ..options(RESERVE)
    };
    let storage = RocksStorage::open(&data, opts.clone()).expect("opening the store");
    assert_eq!(
        std::fs::metadata(&spare_file).map(|m| m.len()).ok(),
        Some(SPARE)
    );
    assert_eq!(storage.check_disk().spare_space_bytes, SPARE);
    for i in 0..10 {
        storage
            .put(Space::Objects, &object_key_of(i), b"kept")
            .unwrap();
    }
    storage.close().unwrap();
    drop(storage);

    // Something else takes every byte left.
    let filler = fs.fill_up("filler");
    assert!(fs.available() < 1 << 20, "{} bytes left", fs.available());
    let storage = RocksStorage::open(&data, opts).expect("opening on a full disk");
    assert!(!spare_file.exists(), "the spare file was not given back");
    for i in 0..10 {
        assert_eq!(
            storage
                .get(Space::Objects, &object_key_of(i))
                .unwrap()
                .as_deref(),
            Some(&b"kept"[..]),
            "value {i}"
        );
    }
    storage
        .put(Space::Meta, b"actor", b"new")
        .expect("bookkeeping on a full disk");
    let error = storage
        .put(Space::Objects, &object_key_of(10), b"v")
        .unwrap_err();
    assert_typed_disk_full(&error, &data);
    let status = storage.check_disk();
    assert!(status.full, "{status:?}");
    assert_eq!(status.spare_space_bytes, 0);

    // Space comes back: the spare file is made again, then writes are accepted.
    std::fs::remove_file(&filler).expect("deleting the filler");
    let status = storage.check_disk();
    assert!(!status.full, "{status:?}");
    assert_eq!(status.spare_space_bytes, SPARE);
    assert_eq!(
        std::fs::metadata(&spare_file).map(|m| m.len()).ok(),
        Some(SPARE)
    );
    storage
        .put(Space::Objects, &object_key_of(10), b"after")
        .expect("a write once space is back");
    storage.close().unwrap();
}

/// Without a spare file, a filesystem filled to the last byte refuses the open with the
/// typed `DiskFull` (no RocksDB text), not a panic or an untyped error.
#[test]
fn without_spare_space_a_full_disk_refuses_the_open_with_a_typed_error() {
    let fs = Tmpfs::mount(TMPFS_SIZE);
    let data = fs.path().join("data");
    let opts = RocksOptions {
        spare_space_bytes: 0,
        ..options(0)
    };
    let storage = RocksStorage::open(&data, opts.clone()).expect("opening the store");
    storage
        .put(Space::Objects, &object_key_of(0), &[7u8; VALUE_BYTES])
        .unwrap();
    storage.close().unwrap();
    drop(storage);
    assert!(!data.join(shoal_storage::SPARE_SPACE_FILE).exists());
    let _filler = fs.fill_up("filler");
    let error = RocksStorage::open(&data, opts).expect_err("an open on a full disk");
    assert_typed_disk_full(&error, &data);
}
