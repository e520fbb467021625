use super::*;
use shoal_proto::{HintRecord, HintRejection};
use shoal_storage::MemStorage;
use std::time::Duration;

/// An executor on `storage` with an actor no open used before.
fn exec(storage: &MemStorage) -> Executor<MemStorage> {
    static NEXT_ACTOR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(42);
    let actor = NEXT_ACTOR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Executor::open(storage.clone(), || actor).unwrap()
}

fn put(e: &Executor<MemStorage>, key: &[u8], v: &str, ctx: CausalContext) -> StorageReply {
    e.execute(coordinate_op(key, v, ctx)).unwrap()
}

#[test]
fn every_open_takes_a_new_actor_and_dots_never_repeat() {
    let storage = MemStorage::new();
    let e = Executor::open(storage.clone(), || 6).unwrap();
    let StorageReply::Coordinated { object, .. } = put(&e, b"k", "a", CausalContext::new()) else {
        panic!("not coordinated")
    };
    let first = object.siblings()[0].dot;
    drop(e);
    let e = Executor::open(storage.clone(), || 7).unwrap();
    assert_eq!(e.actor(), Actor(7));
    let StorageReply::Coordinated { object, .. } = put(&e, b"other", "b", CausalContext::new())
    else {
        panic!("not coordinated")
    };
    assert!(object.siblings()[0].dot.counter > first.counter);
}

#[test]
fn reopening_with_the_previous_actor_is_refused() {
    let storage = MemStorage::new();
    drop(Executor::open(storage.clone(), || 9).unwrap());
    let err = Executor::open(storage.clone(), || 9).unwrap_err();
    assert!(matches!(err, ExecError::ActorReused { actor: 9 }), "{err}");
    assert_eq!(Executor::open(storage, || 10).unwrap().actor(), Actor(10));
}

#[test]
fn hints_are_bounded_per_target_and_totals_survive_reopen() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    let target = NodeId::new("b").unwrap();
    let StorageReply::Coordinated { object, .. } = put(&e, b"k", "a", CausalContext::new()) else {
        panic!()
    };
    let store = |key: &[u8]| {
        e.execute(StorageOp::StoreHint {
            target: target.clone(),
            partition: PartitionId(1),
            key: key.to_vec(),
            object: object.clone(),
            now: Time::ZERO,
            max_hints: 2,
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(3600),
        })
        .unwrap()
    };
    assert_eq!(store(b"k1"), StorageReply::HintStored);
    assert_eq!(store(b"k2"), StorageReply::HintStored);
    // Updating an existing hint is not a new hint.
    assert_eq!(store(b"k1"), StorageReply::HintStored);
    assert_eq!(
        store(b"k3"),
        StorageReply::HintRejected(HintRejection::TooMany)
    );
    drop(e);
    let e = exec(&storage);
    let StorageReply::HintSummary(s) = e.execute(StorageOp::HintSummary).unwrap() else {
        panic!()
    };
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].1.count, 2);
    let StorageReply::Hints(list) = e
        .execute(StorageOp::ListHints {
            target: target.clone(),
            limit: 10,
            after: None,
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(list.len(), 2);
    let r = e
        .execute(StorageOp::DeleteHint {
            target: target.clone(),
            partition: PartitionId(1),
            key: b"k1".to_vec(),
            delivered: list[0].object.clone(),
        })
        .unwrap();
    assert_eq!(r, StorageReply::HintDeleted(true));
}

#[test]
fn a_hint_that_grew_after_delivery_is_kept() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    let target = NodeId::new("b").unwrap();
    let StorageReply::Coordinated { object: v1, .. } = put(&e, b"k", "a", CausalContext::new())
    else {
        panic!()
    };
    let StorageReply::Coordinated { object: v2, .. } = put(&e, b"k", "b", CausalContext::new())
    else {
        panic!()
    };
    for obj in [&v1, &v2] {
        e.execute(StorageOp::StoreHint {
            target: target.clone(),
            partition: PartitionId(1),
            key: b"k".to_vec(),
            object: obj.clone(),
            now: Time::ZERO,
            max_hints: 10,
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(3600),
        })
        .unwrap();
    }
    let r = e
        .execute(StorageOp::DeleteHint {
            target,
            partition: PartitionId(1),
            key: b"k".to_vec(),
            delivered: v1,
        })
        .unwrap();
    assert_eq!(r, StorageReply::HintDeleted(false));
}

fn merge_op(key: &[u8], object: Object) -> StorageOp {
    StorageOp::Merge {
        partition: PartitionId(1),
        key: key.to_vec(),
        object,
        max_object_bytes: 1 << 20,
    }
}

fn tree_nodes(e: &Executor<MemStorage>, p: PartitionId) -> Vec<Vec<u64>> {
    let shape = shoal_proto::AAE_SHAPE;
    (0..shape.level_count())
        .map(|level| {
            let width = shape.level_width(level).unwrap();
            let StorageReply::TreeNodes(h) = e
                .execute(StorageOp::TreeNodes {
                    partition: p,
                    level: level as u8,
                    indices: (0..width).collect(),
                })
                .unwrap()
            else {
                panic!("not tree nodes")
            };
            h
        })
        .collect()
}

#[test]
fn incremental_trees_match_a_rebuild_after_random_writes_deletes_and_restarts() {
    use rand::{Rng, SeedableRng};
    let storage = MemStorage::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut e = exec(&storage);
    let mut contexts: std::collections::BTreeMap<Vec<u8>, CausalContext> = Default::default();
    for round in 0..2000u32 {
        let key = format!("key-{}", rng.random_range(0..300u32)).into_bytes();
        match rng.random_range(0..10u32) {
            // Puts, with or without the key's last context.
            0..=5 => {
                let ctx = if rng.random_bool(0.5) {
                    contexts.get(&key).cloned().unwrap_or_default()
                } else {
                    CausalContext::new()
                };
                if let StorageReply::Coordinated { object, .. } =
                    put(&e, &key, &format!("v{round}"), ctx)
                {
                    contexts.insert(key, object.context());
                }
            }
            // Deletes (tombstones).
            6 => {
                let ctx = contexts.get(&key).cloned().unwrap_or_default();
                e.execute(StorageOp::Coordinate {
                    partition: PartitionId(1),
                    key: key.clone(),
                    context: ctx,
                    value: SiblingValue::Tombstone,
                    now: Time::ZERO,
                    max_object_bytes: 1 << 20,
                    max_siblings: usize::MAX,
                })
                .unwrap();
            }
            // Merges from another replica.
            7 => {
                let mut other = Object::new();
                other
                    .update(
                        &CausalContext::new(),
                        SiblingValue::Data(b"remote".to_vec()),
                        Dot::new(Actor(99), u64::from(round) + 1),
                        Time::ZERO,
                    )
                    .unwrap();
                e.execute(merge_op(&key, other)).unwrap();
            }
            // Reaps of whatever the key holds now.
            8 => {
                if let StorageReply::Digests(d) = e
                    .execute(StorageOp::Digests {
                        partition: PartitionId(1),
                        keys: vec![key.clone()],
                    })
                    .unwrap()
                {
                    if let Some(digest) = d[0] {
                        e.execute(StorageOp::Reap {
                            partition: PartitionId(1),
                            keys: vec![(key.clone(), digest)],
                        })
                        .unwrap();
                    }
                }
            }
            // Restarts: the tree is rebuilt from storage.
            _ => {
                let before = tree_nodes(&e, PartitionId(1));
                drop(e);
                e = exec(&storage);
                assert_eq!(tree_nodes(&e, PartitionId(1)), before, "round {round}");
            }
        }
        if round % 250 == 0 {
            assert_eq!(e.verify_trees().unwrap(), vec![], "round {round}");
        }
    }
    assert_eq!(e.verify_trees().unwrap(), vec![]);
    let (root, keys) = e.tree_summary(PartitionId(1));
    assert_ne!(root, 0);
    assert!(keys > 0);
}

#[test]
fn a_tree_that_drifted_from_storage_is_detected_and_replaced() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    put(&e, b"a", "1", CausalContext::new());
    put(&e, b"b", "2", CausalContext::new());
    // Write behind the executor's back: the tree no longer matches the data.
    let stored = e.stored_key(b"c");
    storage
        .put_object(PartitionId(1), &stored, &Object::new().encode())
        .unwrap();
    let mismatches = e.verify_trees().unwrap();
    assert_eq!(mismatches.len(), 1);
    assert_eq!(mismatches[0].partition, PartitionId(1));
    assert_eq!(e.verify_trees().unwrap(), vec![], "replaced by the rebuild");
}

#[test]
fn segments_list_exactly_the_keys_of_each_segment() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    let mut expected: std::collections::BTreeMap<u32, Vec<Vec<u8>>> = Default::default();
    for i in 0..500 {
        let key = format!("k{i}").into_bytes();
        put(&e, &key, "v", CausalContext::new());
        expected
            .entry(e.trees.segment_of(&key))
            .or_default()
            .push(key);
    }
    let segments: Vec<u32> = expected.keys().copied().take(20).collect();
    let StorageReply::Segments(got) = e
        .execute(StorageOp::Segments {
            partition: PartitionId(1),
            segments: segments.clone(),
            max_bytes: usize::MAX,
        })
        .unwrap()
    else {
        panic!("not segments")
    };
    for (seg, pairs) in got {
        let mut keys: Vec<Vec<u8>> = pairs.into_iter().map(|(k, _)| k).collect();
        keys.sort();
        let mut want = expected[&seg].clone();
        want.sort();
        assert_eq!(keys, want, "segment {seg}");
    }
}

/// A segment reply stops at its byte bound after whole segments (at least one), listing a
/// prefix of the segments asked; a read of several keys stops likewise after whole
/// objects (at least one), listing a prefix of the keys.
#[test]
fn segment_lists_and_reads_stop_at_their_byte_bound() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    let mut keys = Vec::new();
    for i in 0..500 {
        let key = format!("k{i}").into_bytes();
        put(&e, &key, "v", CausalContext::new());
        keys.push(key);
    }
    let mut segments: Vec<u32> = keys.iter().map(|k| e.trees.segment_of(k)).collect();
    segments.sort_unstable();
    segments.dedup();
    let segments: Vec<u32> = segments.into_iter().take(20).collect();
    let list = |max_bytes| match e
        .execute(StorageOp::Segments {
            partition: PartitionId(1),
            segments: segments.clone(),
            max_bytes,
        })
        .unwrap()
    {
        StorageReply::Segments(got) => got,
        other => panic!("not segments: {other:?}"),
    };
    let all = list(usize::MAX);
    assert_eq!(all.len(), 20);
    let size = |lists: &[(u32, shoal_proto::wire::KeyDigests)]| -> usize {
        lists
            .iter()
            .flat_map(|(_, l)| l)
            .map(|(k, _)| k.len() + shoal_proto::SEGMENT_ENTRY_OVERHEAD)
            .sum()
    };
    // A bound that holds the first seven segments exactly.
    let bound = size(&all[..7]);
    assert_eq!(list(bound), all[..7].to_vec());
    assert_eq!(list(bound + 1), all[..7].to_vec());
    // Even a bound of one byte gets the first whole segment.
    assert_eq!(list(1), all[..1].to_vec());

    let read = |max_bytes| match e
        .execute(StorageOp::ReadMany {
            partition: PartitionId(1),
            keys: keys[..10].to_vec(),
            max_bytes,
        })
        .unwrap()
    {
        StorageReply::Objects(got) => got,
        other => panic!("not objects: {other:?}"),
    };
    let all = read(usize::MAX);
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(|(_, o)| o.is_some()));
    assert_eq!(read(1).len(), 1, "the first object always");
    let one = read(1);
    let first_len = one[0].0.len() + one[0].1.as_ref().unwrap().encode().len();
    assert_eq!(read(first_len * 3).len(), 3);
}

#[test]
fn reap_deletes_only_keys_whose_digest_is_unchanged() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    let StorageReply::Coordinated { object, .. } = put(&e, b"k", "v", CausalContext::new()) else {
        panic!()
    };
    let stale_digest = object.digest();
    put(&e, b"k", "newer", CausalContext::new());
    let r = e
        .execute(StorageOp::Reap {
            partition: PartitionId(1),
            keys: vec![(b"k".to_vec(), stale_digest)],
        })
        .unwrap();
    assert_eq!(r, StorageReply::Reaped(0));
    let StorageReply::Digests(d) = e
        .execute(StorageOp::Digests {
            partition: PartitionId(1),
            keys: vec![b"k".to_vec()],
        })
        .unwrap()
    else {
        panic!()
    };
    let r = e
        .execute(StorageOp::Reap {
            partition: PartitionId(1),
            keys: vec![(b"k".to_vec(), d[0].unwrap())],
        })
        .unwrap();
    assert_eq!(r, StorageReply::Reaped(1));
    assert_eq!(
        e.execute(StorageOp::Read {
            partition: PartitionId(1),
            key: b"k".to_vec()
        })
        .unwrap(),
        StorageReply::Object(None)
    );
}

#[test]
fn reap_candidates_are_old_tombstones_only_and_the_scan_resumes() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    for i in 0..50 {
        let key = format!("k{i}").into_bytes();
        let StorageReply::Coordinated { object, .. } = put(&e, &key, "v", CausalContext::new())
        else {
            panic!()
        };
        if i % 2 == 0 {
            e.execute(StorageOp::Coordinate {
                partition: PartitionId(1),
                key,
                context: object.context(),
                value: SiblingValue::Tombstone,
                now: Time::from_micros(10),
                max_object_bytes: 1 << 20,
                max_siblings: usize::MAX,
            })
            .unwrap();
        }
    }
    let mut found = 0;
    let mut after = None;
    for _ in 0..100 {
        let StorageReply::ReapCandidates { keys, next } = e
            .execute(StorageOp::ReapCandidates {
                partition: PartitionId(1),
                older_than: Time::from_micros(11),
                after: after.clone(),
                limit: 4,
                scan_limit: 7,
            })
            .unwrap()
        else {
            panic!()
        };
        found += keys.len();
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(found, 25);
    // Tombstones newer than the cut-off are not candidates.
    let StorageReply::ReapCandidates { keys, .. } = e
        .execute(StorageOp::ReapCandidates {
            partition: PartitionId(1),
            older_than: Time::from_micros(10),
            after: None,
            limit: 100,
            scan_limit: 1000,
        })
        .unwrap()
    else {
        panic!()
    };
    assert!(keys.is_empty());
}

/// Stores `object` as the hint of `key` for target `b` at `now`, with a 100 s TTL.
fn store_hint_at(e: &Executor<MemStorage>, key: &[u8], object: &Object, now: Time) -> StorageReply {
    e.execute(StorageOp::StoreHint {
        target: NodeId::new("b").unwrap(),
        partition: PartitionId(1),
        key: key.to_vec(),
        object: object.clone(),
        now,
        max_hints: 10,
        max_bytes: 1 << 20,
        ttl: Duration::from_secs(100),
    })
    .unwrap()
}

fn list_b(
    e: &Executor<MemStorage>,
    limit: usize,
    after: Option<(PartitionId, Vec<u8>)>,
) -> Vec<HintRecord> {
    let StorageReply::Hints(h) = e
        .execute(StorageOp::ListHints {
            target: NodeId::new("b").unwrap(),
            limit,
            after,
        })
        .unwrap()
    else {
        panic!("a listing answers hints")
    };
    h
}

#[test]
fn expired_hints_read_as_none_and_expired_objects_are_not_stored_as_hints() {
    let e = exec(&MemStorage::new());
    let StorageReply::Coordinated { object, .. } = put(&e, b"k", "a", CausalContext::new()) else {
        panic!()
    };
    // Written at time zero: 99 s later it is live, 100 s later expired.
    assert_eq!(
        store_hint_at(&e, b"k", &object, Time::from_micros(99_000_000)),
        StorageReply::HintStored
    );
    let read = |secs: u64| {
        e.execute(StorageOp::ReadHint {
            target: NodeId::new("b").unwrap(),
            partition: PartitionId(1),
            key: b"k".to_vec(),
            now: Time::from_micros(secs * 1_000_000),
            ttl: Duration::from_secs(100),
        })
        .unwrap()
    };
    assert_eq!(read(99), StorageReply::Object(Some(object.clone())));
    assert_eq!(read(100), StorageReply::Object(None));
    assert_eq!(
        store_hint_at(&e, b"k2", &object, Time::from_micros(100_000_000)),
        StorageReply::HintRejected(HintRejection::Expired)
    );
}

#[test]
fn an_expired_hint_is_dropped_only_if_it_is_still_the_one_listed() {
    let e = exec(&MemStorage::new());
    let StorageReply::Coordinated { object: old, .. } = put(&e, b"k", "a", CausalContext::new())
    else {
        panic!()
    };
    store_hint_at(&e, b"k", &old, Time::ZERO);
    let listed = list_b(&e, 10, None);
    let listed = &listed[0];
    // A newer write is hinted for the key after the listing (stamped later).
    let mut new = Object::new();
    new.update(
        &CausalContext::new(),
        SiblingValue::Data(b"new".to_vec()),
        Dot::new(Actor(9), 1),
        Time::from_micros(150_000_000),
    )
    .unwrap();
    store_hint_at(&e, b"k", &new, Time::from_micros(150_000_000));
    let drop = |digest| {
        e.execute(StorageOp::DropHint {
            target: NodeId::new("b").unwrap(),
            partition: PartitionId(1),
            key: b"k".to_vec(),
            digest,
        })
        .unwrap()
    };
    assert_eq!(drop(listed.digest), StorageReply::HintDeleted(false));
    let now = list_b(&e, 10, None);
    assert_eq!(now.len(), 1);
    assert_eq!(
        now[0].object, new,
        "the expired hint was replaced, not merged into"
    );
    assert_eq!(drop(now[0].digest), StorageReply::HintDeleted(true));
}

#[test]
fn hint_listings_resume_after_the_cursor() {
    let e = exec(&MemStorage::new());
    let StorageReply::Coordinated { object, .. } = put(&e, b"k", "a", CausalContext::new()) else {
        panic!()
    };
    for k in [b"h1", b"h2", b"h3"] {
        store_hint_at(&e, k, &object, Time::ZERO);
    }
    let first = list_b(&e, 2, None);
    assert_eq!(first.len(), 2);
    let last = first.last().unwrap();
    let rest = list_b(&e, 2, Some((last.partition, last.key.clone())));
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].key, b"h3".to_vec());
}

#[test]
fn replace_many_stores_and_deletes_unconditionally_and_keeps_the_tree_in_step() {
    let (ours, theirs) = (MemStorage::new(), MemStorage::new());
    let (a, b) = (exec(&ours), exec(&theirs));
    let object = |e: &Executor<MemStorage>, key: &[u8]| match e
        .execute(StorageOp::Read {
            partition: PartitionId(1),
            key: key.to_vec(),
        })
        .unwrap()
    {
        StorageReply::Object(o) => o,
        other => panic!("not an object: {other:?}"),
    };
    // Ours: a value the peer superseded concurrently (a merge would keep both), and a
    // key the peer lacks. Theirs: another value of the first key, and a key we lack.
    put(&a, b"k", "old", CausalContext::new());
    put(&a, b"gone", "x", CausalContext::new());
    put(&b, b"k", "new", CausalContext::new());
    put(&b, b"only-theirs", "y", CausalContext::new());
    let objects: Vec<(Vec<u8>, Option<Object>)> = [&b"k"[..], b"gone", b"only-theirs"]
        .into_iter()
        .map(|k| (k.to_vec(), object(&b, k)))
        .collect();
    let replace = StorageOp::ReplaceMany {
        partition: PartitionId(1),
        objects,
    };
    assert_eq!(
        a.execute(replace.clone()).unwrap(),
        StorageReply::Replaced(3)
    );
    for key in [&b"k"[..], b"gone", b"only-theirs"] {
        assert_eq!(object(&a, key), object(&b, key), "{key:?}");
    }
    assert_eq!(
        a.trees.summary(PartitionId(1)),
        b.trees.summary(PartitionId(1))
    );
    // Idempotent: nothing left to change.
    assert_eq!(a.execute(replace).unwrap(), StorageReply::Replaced(0));
}

/// A partition a node no longer holds is deleted with its tree: the other partitions and
/// their trees stay, the tree matches storage afterwards, and new writes to it start
/// from an empty tree.
#[test]
fn drop_partition_deletes_its_objects_and_empties_its_tree() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        put(&e, k.as_bytes(), "v", CausalContext::new());
    }
    // `put` writes partition 1; partition 0 gets keys of its own.
    for k in keys.iter().take(50) {
        e.execute(StorageOp::Coordinate {
            partition: PartitionId(0),
            key: k.as_bytes().to_vec(),
            context: CausalContext::new(),
            value: SiblingValue::Data(b"w".to_vec()),
            now: Time::ZERO,
            max_object_bytes: 1 << 20,
            max_siblings: usize::MAX,
        })
        .unwrap();
    }
    let before_other = e.trees.summary(PartitionId(0));
    assert!(e.trees.summary(PartitionId(1)).1 > 0);
    assert_eq!(
        e.execute(StorageOp::DropPartition {
            partition: PartitionId(1)
        })
        .unwrap(),
        StorageReply::Dropped
    );
    let empty = shoal_proto::MerkleTree::with_shape(shoal_proto::MerkleShape::DEFAULT).root();
    assert_eq!(e.trees.summary(PartitionId(1)), (empty, 0));
    for k in &keys {
        let read = e
            .execute(StorageOp::Read {
                partition: PartitionId(1),
                key: k.as_bytes().to_vec(),
            })
            .unwrap();
        assert_eq!(read, StorageReply::Object(None), "{k}");
    }
    assert_eq!(e.trees.summary(PartitionId(0)), before_other);
    assert_eq!(e.verify_trees().unwrap(), Vec::new());
    // Writes after the drop start from an empty tree that matches storage.
    put(&e, b"after", "v", CausalContext::new());
    assert_eq!(e.trees.summary(PartitionId(1)).1, 1);
    assert_eq!(e.verify_trees().unwrap(), Vec::new());
}

/// A read answered from memory is the read a storage thread would answer, for a present
/// key, an absent one and one of another partition.
#[test]
fn a_cached_read_answers_as_the_read_op() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    put(&e, b"k", "a", CausalContext::new());
    for (partition, key) in [(1, &b"k"[..]), (1, b"absent"), (2, b"k")] {
        let partition = PartitionId(partition);
        let cached = e.read_cached(partition, key).expect("memory answers");
        let plain = e.execute(StorageOp::Read {
            partition,
            key: key.to_vec(),
        });
        assert_eq!(format!("{cached:?}"), format!("{plain:?}"), "{key:?}");
    }
    let Some(Ok(StorageReply::Object(Some(object)))) = e.read_cached(PartitionId(1), b"k") else {
        panic!("the written key is not read back")
    };
    assert_eq!(object.siblings().len(), 1);
}

fn coordinate_op(key: &[u8], v: &str, ctx: CausalContext) -> StorageOp {
    StorageOp::Coordinate {
        partition: PartitionId(1),
        key: key.to_vec(),
        context: ctx,
        value: SiblingValue::Data(v.as_bytes().to_vec()),
        now: Time::ZERO,
        max_object_bytes: 1 << 20,
        max_siblings: usize::MAX,
    }
}

#[test]
fn writes_that_need_no_wait_run_on_the_callers_thread_as_they_would_on_a_storage_thread() {
    let (inline, queued) = (MemStorage::new(), MemStorage::new());
    let (a, b) = (exec(&inline), exec(&queued));
    let empty = tree_nodes(&a, PartitionId(1));
    let op = coordinate_op(b"k", "v1", CausalContext::new());
    let Some(Ok(StorageReply::Coordinated { object: ran, .. })) = a.try_execute(&op) else {
        panic!("an uncontended write with its object in memory runs inline")
    };
    let Ok(StorageReply::Coordinated {
        object: ran_queued, ..
    }) = b.execute(op)
    else {
        panic!("not coordinated")
    };
    assert_eq!(
        ran.values().collect::<Vec<_>>(),
        ran_queued.values().collect::<Vec<_>>()
    );
    // Stored, and the partition's tree follows, as after `execute`.
    let stored = a.get_raw(PartitionId(1), b"k").unwrap().unwrap();
    assert_eq!(decode_object(&stored).unwrap(), ran);
    assert_ne!(tree_nodes(&a, PartitionId(1)), empty);
    assert!(
        a.verify_tree(PartitionId(1)).unwrap().is_none(),
        "the tree matches the data"
    );
    // A replica's merge of that object runs inline too and stores it.
    let merged = a.try_execute(&StorageOp::Merge {
        partition: PartitionId(1),
        key: b"k".to_vec(),
        object: ran_queued.clone(),
        max_object_bytes: 1 << 20,
    });
    assert!(
        matches!(merged, Some(Ok(StorageReply::Merged { changed: true, .. }))),
        "{merged:?}"
    );
    let stored = decode_object(&a.get_raw(PartitionId(1), b"k").unwrap().unwrap()).unwrap();
    assert_eq!(stored.siblings().len(), 2, "both writes kept: {stored:?}");
    assert!(
        a.verify_tree(PartitionId(1)).unwrap().is_none(),
        "the tree matches the data"
    );
    // Every other op is left to the storage threads.
    assert!(a.try_execute(&StorageOp::HintSummary).is_none());
}

#[test]
fn a_write_that_would_wait_gives_up_and_changes_nothing() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    let p = PartitionId(1);
    let empty = tree_nodes(&e, p);
    let op = coordinate_op(b"k", "v1", CausalContext::new());
    // The key is held (another thread's read-modify-write).
    let held = e.locks.lock(p, b"k");
    assert!(e.try_execute(&op).is_none());
    assert!(e.try_execute(&merge_op(b"k", Object::new())).is_none());
    drop(held);
    // The partition's tree is held (another key of the partition being written).
    let tree = e.trees.get(p);
    let held = tree.lock().unwrap();
    assert!(e.try_execute(&op).is_none());
    drop(held);
    // A new block of dots must be reserved (a synced metadata write).
    {
        let mut dots = e.dots.lock().unwrap();
        dots.next = dots.reserved + 1;
    }
    assert!(e.try_execute(&op).is_none());
    assert_eq!(e.get_raw(p, b"k").unwrap(), None, "nothing was written");
    assert_eq!(tree_nodes(&e, p), empty);
    // A storage thread, which may wait, runs it.
    assert!(matches!(
        e.execute(op.clone()),
        Ok(StorageReply::Coordinated { .. })
    ));
    // And with the new block reserved, the next write runs inline again.
    assert!(matches!(
        e.try_execute(&op),
        Some(Ok(StorageReply::Coordinated { .. }))
    ));
}

/// Coordinates `v` on `key` of another executor (another replica's write, whose copies
/// this one merges).
fn written_elsewhere(key: &[u8], v: &str, ctx: CausalContext) -> Object {
    let other = exec(&MemStorage::new());
    let StorageReply::Coordinated { object, .. } = put(&other, key, v, ctx) else {
        panic!("not coordinated")
    };
    object
}

/// A value written by another node, and the tombstone of a delete that replaced it.
fn value_and_its_tombstone(key: &[u8]) -> (Object, Object) {
    let value = written_elsewhere(key, "old", CausalContext::new());
    let mut tomb = value.clone();
    tomb.update(
        &value.context(),
        SiblingValue::Tombstone,
        Dot::new(Actor(7_000), 1),
        Time::ZERO,
    )
    .unwrap();
    (value, tomb)
}

/// Merges `object` under `key`, then reaps it with the stored copy's digest.
fn store_and_reap(e: &Executor<MemStorage>, key: &[u8], object: &Object) -> StorageReply {
    e.execute(merge_op(key, object.clone())).unwrap();
    let digest = raw_digest(&e.get_raw(PartitionId(1), key).unwrap().unwrap());
    e.execute(StorageOp::Reap {
        partition: PartitionId(1),
        keys: vec![(key.to_vec(), digest)],
    })
    .unwrap()
}

/// A copy of a value that a reaped tombstone replaced, arriving after the reap (a merge
/// queued before the reap and run after it, or a message sent before it and delivered
/// after), is dropped, not stored as the key's value: before, it brought the deleted
/// value back (simulator seed 80632 of `--deletes 0.4 --tombstone-grace 6 --power-cuts`,
/// `no_resurrection`: an exchange's push of a stale replica's value sat in the storage
/// queue for a second, and ran after the tombstone's reap). A copy of the tombstone
/// itself is stored as before (anti-entropy and the next reap deal with it), and a new
/// write of the key carries the reaped tombstone's clock, so that a late copy does not
/// come back beside it either.
#[test]
fn a_late_copy_of_a_value_a_reaped_tombstone_replaced_is_dropped() {
    let e = exec(&MemStorage::new());
    let (value, tomb) = value_and_its_tombstone(b"k");
    assert_eq!(store_and_reap(&e, b"k", &tomb), StorageReply::Reaped(1));

    // The late copy of the replaced value: dropped.
    let late = e.execute(merge_op(b"k", value.clone())).unwrap();
    assert!(
        matches!(late, StorageReply::Merged { changed: false, .. }),
        "{late:?}"
    );
    assert_eq!(e.get_raw(PartitionId(1), b"k").unwrap(), None);
    assert_eq!(e.trees.summary(PartitionId(1)).1, 0, "nothing in the tree");

    // A new write: stored, carrying the tombstone's clock; the late copy stays out.
    let StorageReply::Coordinated { object, .. } = put(&e, b"k", "new", CausalContext::new())
    else {
        panic!("not coordinated")
    };
    assert!(object.clock().includes(tomb.clock()), "{object:?}");
    e.execute(merge_op(b"k", value.clone())).unwrap();
    let stored = Object::decode(&e.get_raw(PartitionId(1), b"k").unwrap().unwrap()).unwrap();
    assert_eq!(stored.values().collect::<Vec<_>>(), vec![b"new".as_slice()]);

    // A copy of the tombstone itself after a reap is stored as before.
    let other = exec(&MemStorage::new());
    assert_eq!(store_and_reap(&other, b"t", &tomb), StorageReply::Reaped(1));
    other.execute(merge_op(b"t", tomb.clone())).unwrap();
    assert!(other.get_raw(PartitionId(1), b"t").unwrap().is_some());

    // A value deleted by `Reap` (the anti-entropy benchmark's lost key; the engine only
    // reaps tombstones) is not remembered: its copy is taken again.
    assert_eq!(
        store_and_reap(&other, b"v", &value),
        StorageReply::Reaped(1)
    );
    other.execute(merge_op(b"v", value.clone())).unwrap();
    assert!(other.get_raw(PartitionId(1), b"v").unwrap().is_some());
}

/// A read of a key whose tombstone this node reaped lately answers an object holding only
/// the tombstone's clock: no value, and the context the tombstone's read would have
/// given. Before, it answered nothing, so a session that had seen a value the delete
/// replaced found no reply including it once the tombstone was reaped, and failed
/// `NotCovered` on every read of the key. Both read paths (the driver's in-memory one and
/// a storage thread's) answer the same; a key never reaped still reads as absent.
#[test]
fn a_reaped_key_reads_as_its_tombstones_clock() {
    let e = exec(&MemStorage::new());
    let (value, tomb) = value_and_its_tombstone(b"k");
    assert_eq!(store_and_reap(&e, b"k", &tomb), StorageReply::Reaped(1));
    let read = StorageOp::Read {
        partition: PartitionId(1),
        key: b"k".to_vec(),
    };
    let expected = Object::from_parts(tomb.clock().clone(), Vec::new());
    for (path, reply) in [
        ("storage thread", e.execute(read.clone()).unwrap()),
        (
            "in memory",
            e.try_execute(&read).expect("answered from memory").unwrap(),
        ),
    ] {
        let StorageReply::Object(Some(object)) = reply else {
            panic!("{path}: the reaped key read as {reply:?}")
        };
        assert_eq!(object, expected, "{path}");
        assert!(!object.is_found(), "{path}");
        assert!(object.context().includes(&value.context()), "{path}");
    }
    assert_eq!(
        e.get_raw(PartitionId(1), b"k").unwrap(),
        None,
        "nothing stored"
    );
    let never = StorageOp::Read {
        partition: PartitionId(1),
        key: b"never".to_vec(),
    };
    assert_eq!(e.execute(never).unwrap(), StorageReply::Object(None));
}

/// The clocks of reaped tombstones outlive a restart (their records are on disk): after
/// a reopen the key still reads as its tombstone's clock, and a late copy of the value
/// the tombstone replaced is still dropped. Before, the memory was in memory only, and a
/// copy another node sent before the restart came back as the key's value.
#[test]
fn the_clocks_of_reaped_tombstones_survive_a_restart() {
    let storage = MemStorage::new();
    let e = exec(&storage);
    let (value, tomb) = value_and_its_tombstone(b"k");
    assert_eq!(store_and_reap(&e, b"k", &tomb), StorageReply::Reaped(1));
    drop(e);

    let e = exec(&storage);
    let read = e
        .execute(StorageOp::Read {
            partition: PartitionId(1),
            key: b"k".to_vec(),
        })
        .unwrap();
    assert_eq!(
        read,
        StorageReply::Object(Some(Object::from_parts(tomb.clock().clone(), Vec::new())))
    );
    let late = e.execute(merge_op(b"k", value)).unwrap();
    assert!(
        matches!(late, StorageReply::Merged { changed: false, .. }),
        "{late:?}"
    );
    assert_eq!(e.stored_object(PartitionId(1), b"k").unwrap(), None);
}

/// An object without siblings (a reaped key's clock, as a replica reads it) merged into
/// a key this node does not hold is not stored: it holds no value and no tombstone, so
/// nothing would ever reap it, and anti-entropy would copy it on as if it were data.
#[test]
fn a_copy_without_siblings_is_not_stored() {
    let e = exec(&MemStorage::new());
    let value = written_elsewhere(b"k", "old", CausalContext::new());
    let clock_only = Object::from_parts(value.clock().clone(), Vec::new());
    let merged = e.execute(merge_op(b"k", clock_only)).unwrap();
    assert!(
        matches!(merged, StorageReply::Merged { changed: false, .. }),
        "{merged:?}"
    );
    assert_eq!(e.get_raw(PartitionId(1), b"k").unwrap(), None);
    assert_eq!(e.trees.summary(PartitionId(1)).1, 0, "nothing in the tree");
}
