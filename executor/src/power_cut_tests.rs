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
