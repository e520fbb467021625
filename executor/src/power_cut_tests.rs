//! A power cut under `buffered` durability loses the end of a node's WAL. The writes the
//! node acknowledged before it are still on their other replicas, and a new write the
//! node coordinates after the restart must never cover them (issue 10, item 1).

use super::*;
use shoal_storage::MemStorage;

const P: PartitionId = PartitionId(1);

fn open(storage: &MemStorage, actor: u64) -> Executor<MemStorage> {
    Executor::open(storage.reopen(), move || actor).expect("executor opens")
}

/// A blind put (empty context) of `value` coordinated by `e`: the object it stored.
fn blind_put(e: &Executor<MemStorage>, key: &[u8], value: &str) -> Object {
    match e.execute(StorageOp::Coordinate {
        partition: P,
        key: key.to_vec(),
        context: CausalContext::new(),
        value: SiblingValue::Data(value.as_bytes().to_vec()),
        now: Time::ZERO,
        max_object_bytes: 1 << 20,
        max_siblings: usize::MAX,
    }) {
        Ok(StorageReply::Coordinated { object, .. }) => object,
        other => panic!("not coordinated: {other:?}"),
    }
}

/// `e` merges `object` (a replica receiving it) and returns what it stores.
fn replicate(e: &Executor<MemStorage>, key: &[u8], object: &Object) -> Object {
    match e.execute(StorageOp::Merge {
        partition: P,
        key: key.to_vec(),
        object: object.clone(),
        max_object_bytes: 1 << 20,
    }) {
        Ok(StorageReply::Merged { object, .. }) => object,
        other => panic!("not merged: {other:?}"),
    }
}

fn values(object: &Object) -> Vec<String> {
    let mut out: Vec<String> = object
        .values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    out.sort();
    out
}

/// The node dies with its power: the unsynced tail of its writes is gone.
fn power_cut(e: Executor<MemStorage>, storage: &MemStorage) -> usize {
    e.storage().kill();
    drop(e);
    storage.power_cut(0)
}

/// The scenario (N = 3, W = 2): v1, coordinated by A, reaches A and B and is
/// acknowledged; A loses power and restarts without v1; a blind put of v2 at A reaches B.
/// B must keep v1 as a sibling of v2.
#[test]
fn a_blind_put_after_a_power_cut_does_not_cover_the_write_the_cut_lost() {
    let a_disk = MemStorage::with_sync_tracking();
    let b = open(&MemStorage::new(), 2);
    let a = open(&a_disk, 1);
    // A has run for a while: its metadata is on disk.
    a.storage().flush().expect("sync");
    let v1 = blind_put(&a, b"k", "v1");
    replicate(&b, b"k", &v1);
    assert!(power_cut(a, &a_disk) > 0, "the cut lost v1 on A");
    let a = open(&a_disk, 3);
    let v2 = blind_put(&a, b"k", "v2");
    assert_eq!(values(&v2), ["v2"], "A no longer holds v1");
    let on_b = replicate(&b, b"k", &v2);
    assert_eq!(values(&on_b), ["v1", "v2"], "B dropped v1: {on_b:?}");
}

/// A node stopped cleanly, restarted, and then cut off: the dot counter reservation of
/// the last run was lost with the tail, and the next run must not mint v1's dot again.
#[test]
fn a_power_cut_never_makes_a_node_mint_a_dot_it_used_before() {
    let a_disk = MemStorage::with_sync_tracking();
    let b = open(&MemStorage::new(), 2);
    let a = open(&a_disk, 1);
    a.storage().close().expect("clean stop");
    drop(a);
    let a = open(&a_disk, 3);
    let v1 = blind_put(&a, b"k", "v1");
    let d1 = v1.siblings()[0].dot;
    replicate(&b, b"k", &v1);
    power_cut(a, &a_disk);
    let a = open(&a_disk, 4);
    let v2 = blind_put(&a, b"k", "v2");
    let d2 = v2.siblings()[0].dot;
    assert_ne!(d1, d2, "the restarted node minted v1's dot again");
    let on_b = replicate(&b, b"k", &v2);
    assert_eq!(values(&on_b), ["v1", "v2"], "B lost v1: {on_b:?}");
}

/// The actor and the dot reservation reach the disk before any dot is minted with them.
#[test]
fn the_actor_and_the_dot_reservation_are_synced_before_use() {
    let disk = MemStorage::with_sync_tracking();
    let a = open(&disk, 1);
    assert_eq!(disk.unsynced_writes(), 0, "open leaves nothing unsynced");
    let before = blind_put(&a, b"k", "v1").siblings()[0].dot;
    power_cut(a, &disk);
    let a = open(&disk, 5);
    assert_eq!(a.actor(), Actor(5));
    let after = blind_put(&a, b"k", "v2").siblings()[0].dot;
    assert!(
        after.counter > before.counter,
        "{after:?} reuses the counter of {before:?}"
    );
}

/// `key` deleted on `b` (a coordinator that holds `v1`) and the tombstone replicated to
/// `a` after `a`'s disk holds `v1` for good: `a` has the tombstone only in its unsynced
/// tail (simulator seed 340539 of `sim --nodes 4 --ops 300 --keys 40 --deletes 0.5
/// --tombstone-grace 6 --direct-reads 1 --sessions --min-safety-time 15`, before direct
/// reads answered superseding copies: a replica that had missed the delete fetched the
/// tombstone by anti-entropy, reaped it 0.6 s later, lost power and came back with the
/// deleted value, which it then served and pushed).
fn tombstone_in_the_unsynced_tail(a_disk: &MemStorage) -> (Executor<MemStorage>, Object) {
    let a = open(a_disk, 1);
    let b = open(&MemStorage::new(), 2);
    let v1 = blind_put(&a, b"k", "v1");
    replicate(&b, b"k", &v1);
    a.storage().flush().expect("sync");
    let tombstone = match b.execute(StorageOp::Coordinate {
        partition: P,
        key: b"k".to_vec(),
        context: v1.context(),
        value: SiblingValue::Tombstone,
        now: Time::ZERO,
        max_object_bytes: 1 << 20,
        max_siblings: usize::MAX,
    }) {
        Ok(StorageReply::Coordinated { object, .. }) => object,
        other => panic!("not coordinated: {other:?}"),
    };
    replicate(&a, b"k", &tombstone);
    assert!(
        a_disk.unsynced_writes() > 0,
        "the tombstone is not synced yet"
    );
    (a, tombstone)
}

fn digest_of(e: &Executor<MemStorage>, key: &[u8]) -> Option<u64> {
    match e.execute(StorageOp::Digests {
        partition: P,
        keys: vec![key.to_vec()],
    }) {
        Ok(StorageReply::Digests(d)) => d[0],
        other => panic!("no digests: {other:?}"),
    }
}

fn stored(e: &Executor<MemStorage>, key: &[u8]) -> Option<Object> {
    e.stored_object(P, key).expect("read")
}

/// A replica's digests answer a reaper's every-replica check: what they confirm must
/// survive a power cut, or the other replicas reap a tombstone this one loses, and it
/// comes back with the value the tombstone deleted.
#[test]
fn the_tombstone_a_digest_confirmed_survives_a_power_cut() {
    let disk = MemStorage::with_sync_tracking();
    let (a, tombstone) = tombstone_in_the_unsynced_tail(&disk);
    let confirmed = digest_of(&a, b"k").expect("a digest");
    power_cut(a, &disk);
    let a = open(&disk, 3);
    assert_eq!(
        stored(&a, b"k").as_ref(),
        Some(&tombstone),
        "the confirmed tombstone was lost"
    );
    assert_eq!(digest_of(&a, b"k"), Some(confirmed));
}

/// A reap deletes a tombstone only once the tombstone is on disk: a power cut right after
/// it loses at most the delete (the tombstone is back, to be reaped again), never the
/// tombstone with it (the deleted value back).
#[test]
fn a_reap_undone_by_a_power_cut_leaves_the_tombstone_not_the_deleted_value() {
    let disk = MemStorage::with_sync_tracking();
    let (a, tombstone) = tombstone_in_the_unsynced_tail(&disk);
    let digest = raw_digest(&tombstone.encode());
    match a.execute(StorageOp::Reap {
        partition: P,
        keys: vec![(b"k".to_vec(), digest)],
    }) {
        Ok(StorageReply::Reaped(1)) => {}
        other => panic!("not reaped: {other:?}"),
    }
    power_cut(a, &disk);
    let a = open(&disk, 3);
    let after = stored(&a, b"k");
    assert!(
        after.as_ref().is_none_or(|o| o == &tombstone),
        "the deleted value came back: {after:?}"
    );
}
