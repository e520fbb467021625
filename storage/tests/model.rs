//! Property test: random puts, deletes, batches and partition deletes give the same
//! contents, scans and partition pages on both engines as a `BTreeMap` model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_storage::{
    object_key, MemStorage, PartitionId, RocksOptions, RocksStorage, Space, Storage, WriteBatch,
};

/// One model per space.
type Model = [BTreeMap<Vec<u8>, Vec<u8>>; 3];

#[derive(Debug, Clone)]
enum Op {
    Put(Space, Vec<u8>, Vec<u8>),
    Delete(Space, Vec<u8>),
    Batch(Vec<Op>),
    DeletePartition(PartitionId),
}

#[derive(Debug, Clone)]
struct ScanQuery {
    space: Space,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    limit: usize,
}

const PARTITIONS: [u32; 4] = [0, 1, 0x00FF_FFFF, u32::MAX];

fn space_index(space: Space) -> usize {
    Space::ALL.iter().position(|s| *s == space).unwrap()
}

fn space() -> impl Strategy<Value = Space> {
    prop_oneof![Just(Space::Objects), Just(Space::Hints), Just(Space::Meta)]
}

fn partition() -> impl Strategy<Value = PartitionId> {
    prop::sample::select(PARTITIONS.to_vec()).prop_map(PartitionId)
}

/// Short byte strings over a few edge values, so keys collide and sort at the edges.
fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![0x00u8, 0x01, 0x7F, 0xFF]),
        0..max_len,
    )
}

/// Mostly object keys of a few partitions, sometimes raw short keys.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (partition(), bytes(4)).prop_map(|(p, k)| object_key(p, &k)),
        1 => bytes(6),
    ]
}

/// The objects space takes only keys with a partition prefix: short keys drawn for it
/// get one.
fn fit_to_space(space: Space, key: Vec<u8>) -> Vec<u8> {
    if space == Space::Objects && key.len() < 4 {
        object_key(PartitionId(1), &key)
    } else {
        key
    }
}

fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (space(), key(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(s, k, v)| Op::Put(s, fit_to_space(s, k), v)),
        2 => (space(), key()).prop_map(|(s, k)| Op::Delete(s, fit_to_space(s, k))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => simple_op(),
        2 => prop::collection::vec(simple_op(), 0..8).prop_map(Op::Batch),
        1 => partition().prop_map(Op::DeletePartition),
    ]
}

fn scan_query() -> impl Strategy<Value = ScanQuery> {
    (space(), key(), prop::option::of(key()), 0usize..12).prop_map(|(space, start, end, limit)| {
        ScanQuery {
            space,
            start,
            end,
            limit,
        }
    })
}

fn to_batch(ops: &[Op]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for op in ops {
        match op {
            Op::Put(s, k, v) => batch.put(*s, k.clone(), v.clone()),
            Op::Delete(s, k) => batch.delete(*s, k.clone()),
            Op::Batch(_) | Op::DeletePartition(_) => unreachable!("not generated in a batch"),
        };
    }
    batch
}

fn apply_model(model: &mut Model, op: &Op) {
    match op {
        Op::Put(s, k, v) => {
            model[space_index(*s)].insert(k.clone(), v.clone());
        }
        Op::Delete(s, k) => {
            model[space_index(*s)].remove(k);
        }
        Op::Batch(ops) => ops.iter().for_each(|op| apply_model(model, op)),
        Op::DeletePartition(p) => {
            let prefix = p.0.to_be_bytes();
            model[space_index(Space::Objects)].retain(|k, _| !k.starts_with(&prefix));
        }
    }
}

fn apply(storage: &dyn Storage, op: &Op) {
    match op {
        Op::Put(s, k, v) => storage.put(*s, k, v).unwrap(),
        Op::Delete(s, k) => storage.delete(*s, k).unwrap(),
        Op::Batch(ops) => storage.write(to_batch(ops)).unwrap(),
        Op::DeletePartition(p) => storage.delete_partition(*p).unwrap(),
    }
}

fn model_scan(model: &Model, q: &ScanQuery) -> Vec<(Vec<u8>, Vec<u8>)> {
    model[space_index(q.space)]
        .iter()
        .filter(|(k, _)| **k >= q.start && q.end.as_ref().is_none_or(|end| *k < end))
        .take(q.limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn model_partition(model: &Model, p: PartitionId) -> Vec<(Vec<u8>, Vec<u8>)> {
    let prefix = p.0.to_be_bytes();
    model[space_index(Space::Objects)]
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k[4..].to_vec(), v.clone()))
        .collect()
}

/// Compares everything observable: whole spaces, point reads, bounded scans, and paging
/// through every partition with a small page size.
fn check(storage: &dyn Storage, model: &Model, queries: &[ScanQuery], page: usize) {
    for space in Space::ALL {
        let expected: Vec<_> = model[space_index(space)]
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            storage.scan(space, b"", None, usize::MAX).unwrap(),
            expected,
            "{space:?}"
        );
        for (k, v) in &model[space_index(space)] {
            assert_eq!(storage.get(space, k).unwrap().as_ref(), Some(v));
        }
    }
    for q in queries {
        let end = q.end.as_deref();
        assert_eq!(
            storage.scan(q.space, &q.start, end, q.limit).unwrap(),
            model_scan(model, q),
            "{q:?}"
        );
    }
    for p in PARTITIONS.map(PartitionId) {
        let mut paged = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = storage.scan_partition(p, after.as_deref(), page).unwrap();
            assert!(rows.len() <= page);
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            paged.extend(rows);
        }
        assert_eq!(paged, model_partition(model, p), "{p:?}");
    }
}

fn run(storage: &dyn Storage, ops: &[Op], queries: &[ScanQuery], page: usize) {
    let mut model: Model = Default::default();
    for op in ops {
        apply(storage, op);
        apply_model(&mut model, op);
    }
    check(storage, &model, queries, page);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mem_storage_matches_the_model(
        ops in prop::collection::vec(op(), 0..60),
        queries in prop::collection::vec(scan_query(), 0..8),
        page in 1usize..5,
    ) {
        run(&MemStorage::new(), &ops, &queries, page);
    }
}

proptest! {
    // Each case opens a RocksDB store, so fewer cases.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn rocks_storage_matches_the_model(
        ops in prop::collection::vec(op(), 0..60),
        queries in prop::collection::vec(scan_query(), 0..8),
        page in 1usize..5,
        flush_midway in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = RocksOptions {
            block_cache_bytes: 4 << 20,
            write_buffer_bytes: 1 << 20,
            ..RocksOptions::default()
        };
        let storage = RocksStorage::open(dir.path(), options).unwrap();
        // Half the cases move the first half of the writes into SST files, so reads merge
        // memtable and disk (and range tombstones over both).
        let (first, second) = ops.split_at(ops.len() / 2);
        let mut model: Model = Default::default();
        for op in first {
            apply(&storage, op);
            apply_model(&mut model, op);
        }
        if flush_midway {
            storage.flush().unwrap();
        }
        for op in second {
            apply(&storage, op);
            apply_model(&mut model, op);
        }
        check(&storage, &model, &queries, page);
    }
}
