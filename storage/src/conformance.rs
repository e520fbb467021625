//! The storage conformance suite: one function per behaviour every [`Storage`] engine must
//! have, so all engines (and any wrapper the node builds) behave alike.
//!
//! Each case takes a fresh, empty, open engine and panics (through `assert!`) with a
//! message naming what broke, like a test. Run every entry of [`CASES`] against an engine,
//! one `#[test]` per case so a failure names its behaviour; this crate's
//! `tests/conformance.rs` does so for [`crate::MemStorage`] and [`crate::RocksStorage`].

use crate::batch::{Space, WriteBatch, MAX_KEY_BYTES};
use crate::error::StorageError;
use crate::keys::object_key;
use crate::storage::{Rows, Storage};
use crate::PartitionId;

/// A conformance case: checks one behaviour on a fresh, empty engine.
pub type Case = fn(&dyn Storage);

/// Every case, with its name.
pub const CASES: &[(&str, Case)] = &[
    ("get_put_delete_in_each_space", get_put_delete_in_each_space),
    (
        "a_cached_get_agrees_with_get_when_it_answers",
        a_cached_get_agrees_with_get_when_it_answers,
    ),
    (
        "a_write_that_need_not_wait_lands_like_write",
        a_write_that_need_not_wait_lands_like_write,
    ),
    ("spaces_are_independent", spaces_are_independent),
    (
        "batch_applies_in_order_and_last_op_wins",
        batch_applies_in_order_and_last_op_wins,
    ),
    (
        "rejected_batch_applies_nothing",
        rejected_batch_applies_nothing,
    ),
    ("empty_batch_is_a_no_op", empty_batch_is_a_no_op),
    (
        "scan_respects_bounds_and_limit",
        scan_respects_bounds_and_limit,
    ),
    (
        "scan_of_empty_or_inverted_range_is_empty",
        scan_of_empty_or_inverted_range_is_empty,
    ),
    (
        "scan_partition_pages_in_order_within_the_partition",
        scan_partition_pages_in_order_within_the_partition,
    ),
    (
        "scan_partition_handles_last_partition_and_ff_keys",
        scan_partition_handles_last_partition_and_ff_keys,
    ),
    (
        "delete_partition_removes_only_that_partition",
        delete_partition_removes_only_that_partition,
    ),
    (
        "object_helpers_use_the_partition_prefix",
        object_helpers_use_the_partition_prefix,
    ),
    ("meta_entries_round_trip", meta_entries_round_trip),
    (
        "empty_keys_and_values_are_stored",
        empty_keys_and_values_are_stored,
    ),
    ("large_values_round_trip", large_values_round_trip),
    ("oversized_keys_are_rejected", oversized_keys_are_rejected),
    (
        "short_keys_are_rejected_in_the_objects_space",
        short_keys_are_rejected_in_the_objects_space,
    ),
    ("stats_reflect_written_data", stats_reflect_written_data),
    (
        "operations_after_close_fail_with_closed",
        operations_after_close_fail_with_closed,
    ),
];

fn rows(pairs: &[(&[u8], &[u8])]) -> Rows {
    pairs
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn be16(i: u16) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

/// Reads back what was put, in every space; a delete removes it; deleting a missing key
/// is fine; an overwrite replaces.
pub fn get_put_delete_in_each_space(storage: &dyn Storage) {
    for space in Space::ALL {
        assert_eq!(
            storage.get(space, b"key1").unwrap(),
            None,
            "{space:?}: fresh store has the key"
        );
        storage.put(space, b"key1", b"v1").unwrap();
        assert_eq!(
            storage.get(space, b"key1").unwrap().as_deref(),
            Some(&b"v1"[..]),
            "{space:?}"
        );
        storage.put(space, b"key1", b"v2").unwrap();
        assert_eq!(
            storage.get(space, b"key1").unwrap().as_deref(),
            Some(&b"v2"[..]),
            "{space:?}: overwrite not visible"
        );
        storage.delete(space, b"key1").unwrap();
        assert_eq!(
            storage.get(space, b"key1").unwrap(),
            None,
            "{space:?}: delete not visible"
        );
        storage.delete(space, b"never-written").unwrap();
    }
}

/// `get_cached` either cannot tell (`None`) or gives exactly what `get` gives, for
/// present, overwritten, deleted and never-written keys, and for objects.
pub fn a_cached_get_agrees_with_get_when_it_answers(storage: &dyn Storage) {
    let agree = |space: Space, key: &[u8], what: &str| {
        let plain = storage.get(space, key).unwrap();
        if let Some(cached) = storage.get_cached(space, key).unwrap() {
            assert_eq!(cached, plain, "{space:?} {what}");
        }
    };
    for space in Space::ALL {
        agree(space, b"key1", "never written");
        storage.put(space, b"key1", b"v1").unwrap();
        agree(space, b"key1", "written");
        storage.put(space, b"key1", b"v2").unwrap();
        agree(space, b"key1", "overwritten");
        storage.delete(space, b"key1").unwrap();
        agree(space, b"key1", "deleted");
    }
    let p = PartitionId(3);
    storage.put_object(p, b"object", b"o1").unwrap();
    let plain = storage.get_object(p, b"object").unwrap();
    assert_eq!(plain.as_deref(), Some(&b"o1"[..]));
    if let Some(cached) = storage.get_object_cached(p, b"object").unwrap() {
        assert_eq!(cached, plain, "object");
    }
}

/// `try_write` and `try_put_object` either write nothing (`false`) or land exactly as
/// `write` and `put_object` do; an idle engine with room writes at once; a rejected batch
/// is an error, as with `write`.
pub fn a_write_that_need_not_wait_lands_like_write(storage: &dyn Storage) {
    let mut batch = WriteBatch::new();
    batch.put(Space::Meta, b"key1".to_vec(), b"v1".to_vec());
    batch.put(Space::Hints, b"key2".to_vec(), b"v2".to_vec());
    assert!(
        storage.try_write(batch).unwrap(),
        "an idle engine must not refuse"
    );
    assert_eq!(
        storage.get(Space::Meta, b"key1").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        storage.get(Space::Hints, b"key2").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    let p = PartitionId(5);
    assert!(storage.try_put_object(p, b"object", b"o1").unwrap());
    assert_eq!(
        storage.get_object(p, b"object").unwrap().as_deref(),
        Some(&b"o1"[..])
    );
    let mut bad = WriteBatch::new();
    bad.put(Space::Meta, b"key3".to_vec(), b"v3".to_vec());
    bad.put(Space::Meta, vec![0u8; MAX_KEY_BYTES + 1], b"v".to_vec());
    assert!(matches!(
        storage.try_write(bad),
        Err(StorageError::KeyTooLarge { .. })
    ));
    assert_eq!(
        storage.get(Space::Meta, b"key3").unwrap(),
        None,
        "nothing of a rejected batch"
    );
}

/// The same key in different spaces holds different values, and a delete or scan in one
/// space does not touch the others.
pub fn spaces_are_independent(storage: &dyn Storage) {
    for space in Space::ALL {
        storage
            .put(space, b"shared", space.name().as_bytes())
            .unwrap();
    }
    for space in Space::ALL {
        assert_eq!(
            storage.get(space, b"shared").unwrap().as_deref(),
            Some(space.name().as_bytes()),
            "{space:?} sees another space's value"
        );
        assert_eq!(
            storage.scan(space, b"", None, 100).unwrap(),
            rows(&[(b"shared", space.name().as_bytes())]),
            "{space:?} scan sees another space"
        );
    }
    storage.delete(Space::Hints, b"shared").unwrap();
    assert_eq!(storage.get(Space::Hints, b"shared").unwrap(), None);
    assert!(storage.get(Space::Objects, b"shared").unwrap().is_some());
    assert!(storage.get(Space::Meta, b"shared").unwrap().is_some());
}

/// A batch applies its operations in order: on a repeated key the last one wins, across
/// spaces too.
pub fn batch_applies_in_order_and_last_op_wins(storage: &dyn Storage) {
    storage.put(Space::Objects, b"gone", b"old").unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put(Space::Objects, &b"key-a"[..], &b"1"[..])
        .put(Space::Objects, &b"key-a"[..], &b"2"[..])
        .put(Space::Objects, &b"key-b"[..], &b"1"[..])
        .delete(Space::Objects, &b"key-b"[..])
        .delete(Space::Objects, &b"key-c"[..])
        .put(Space::Objects, &b"key-c"[..], &b"3"[..])
        .delete(Space::Objects, &b"gone"[..])
        .put(Space::Hints, &b"a"[..], &b"hint"[..])
        .put(Space::Meta, &b"a"[..], &b"meta"[..]);
    assert_eq!(batch.len(), 9);
    storage.write(batch).unwrap();
    assert_eq!(
        storage.scan(Space::Objects, b"", None, 100).unwrap(),
        rows(&[(b"key-a", b"2"), (b"key-c", b"3")])
    );
    assert_eq!(
        storage.get(Space::Hints, b"a").unwrap().as_deref(),
        Some(&b"hint"[..])
    );
    assert_eq!(
        storage.get(Space::Meta, b"a").unwrap().as_deref(),
        Some(&b"meta"[..])
    );
}

/// A batch the engine refuses (here, one oversized key at its end) applies none of its
/// operations: all or nothing.
pub fn rejected_batch_applies_nothing(storage: &dyn Storage) {
    storage.put(Space::Objects, b"kept", b"before").unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put(Space::Objects, &b"new!"[..], &b"x"[..])
        .put(Space::Objects, &b"kept"[..], &b"after"[..])
        .delete(Space::Objects, &b"kept"[..])
        .put(Space::Objects, vec![7u8; MAX_KEY_BYTES + 1], &b"x"[..]);
    let result = storage.write(batch);
    assert!(
        matches!(result, Err(StorageError::KeyTooLarge { .. })),
        "oversized key accepted: {result:?}"
    );
    assert_eq!(
        storage.scan(Space::Objects, b"", None, 100).unwrap(),
        rows(&[(b"kept", b"before")]),
        "part of a rejected batch was applied"
    );
}

/// Writing an empty batch succeeds and changes nothing.
pub fn empty_batch_is_a_no_op(storage: &dyn Storage) {
    storage.put(Space::Meta, b"k", b"v").unwrap();
    storage.write(WriteBatch::new()).unwrap();
    assert_eq!(
        storage.scan(Space::Meta, b"", None, 10).unwrap(),
        rows(&[(b"k", b"v")])
    );
}

/// Scans include `start`, exclude `end`, run to the end of the space without `end`, stop
/// after `limit` rows, and return keys ascending.
pub fn scan_respects_bounds_and_limit(storage: &dyn Storage) {
    // Written out of order, read back in order.
    for key in [&b"d"[..], b"ba", b"a", b"c", b"b", b"\xff", b"\x00"] {
        storage.put(Space::Hints, key, key).unwrap();
    }
    storage
        .put(Space::Objects, b"bbbb", b"other space")
        .unwrap();
    let all = rows(&[
        (b"\x00", b"\x00"),
        (b"a", b"a"),
        (b"b", b"b"),
        (b"ba", b"ba"),
        (b"c", b"c"),
        (b"d", b"d"),
        (b"\xff", b"\xff"),
    ]);
    assert_eq!(storage.scan(Space::Hints, b"", None, 100).unwrap(), all);
    assert_eq!(storage.scan(Space::Hints, b"", None, 7).unwrap(), all);
    assert_eq!(
        storage.scan(Space::Hints, b"", None, 3).unwrap(),
        all[..3].to_vec()
    );
    assert_eq!(
        storage.scan(Space::Hints, b"b", Some(b"c"), 100).unwrap(),
        rows(&[(b"b", b"b"), (b"ba", b"ba")]),
        "start inclusive, end exclusive"
    );
    assert_eq!(
        storage.scan(Space::Hints, b"b", Some(b"c"), 1).unwrap(),
        rows(&[(b"b", b"b")])
    );
    assert_eq!(
        storage.scan(Space::Hints, b"bb", None, 100).unwrap(),
        all[4..].to_vec(),
        "start between keys"
    );
    assert_eq!(
        storage.scan(Space::Hints, b"a", Some(b"b"), 100).unwrap(),
        rows(&[(b"a", b"a")])
    );
    assert_eq!(
        storage.scan(Space::Hints, b"\xff\x00", None, 100).unwrap(),
        Vec::new()
    );
}

/// A zero limit, an empty range (`start == end`) or an inverted one gives no rows and no
/// error.
pub fn scan_of_empty_or_inverted_range_is_empty(storage: &dyn Storage) {
    for key in [&b"aaaa"[..], b"bbbb", b"cccc"] {
        storage.put(Space::Objects, key, b"v").unwrap();
    }
    assert!(storage
        .scan(Space::Objects, b"", None, 0)
        .unwrap()
        .is_empty());
    assert!(storage
        .scan(Space::Objects, b"bbbb", Some(b"bbbb"), 10)
        .unwrap()
        .is_empty());
    assert!(storage
        .scan(Space::Objects, b"cccc", Some(b"aaaa"), 10)
        .unwrap()
        .is_empty());
    assert!(storage.scan(Space::Meta, b"", None, 10).unwrap().is_empty());
}

/// `scan_partition` pages through one partition in key order, each page starting strictly
/// after the previous page's last key, without returning neighbours' objects (even a
/// neighbour's empty key or a key of 0xFF bytes).
pub fn scan_partition_pages_in_order_within_the_partition(storage: &dyn Storage) {
    let (before, p, after) = (PartitionId(4), PartitionId(5), PartitionId(6));
    storage.put_object(before, &[0xFF; 3], b"before").unwrap();
    storage.put_object(after, b"", b"after").unwrap();
    storage.put_object(after, b"\x00", b"after").unwrap();
    let mut expected: Rows = Vec::new();
    // Written in reverse order, so paging cannot just follow insertion order.
    for i in (0..250u16).rev() {
        storage.put_object(p, &be16(i), &i.to_le_bytes()).unwrap();
    }
    for i in 0..250u16 {
        expected.push((be16(i), i.to_le_bytes().to_vec()));
    }
    storage.put_object(p, &[0xFF; 8], b"last").unwrap();
    expected.push((vec![0xFF; 8], b"last".to_vec()));

    let mut pages = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = storage.scan_partition(p, cursor.as_deref(), 100).unwrap();
        assert!(
            page.len() <= 100,
            "page of {} rows over the limit",
            page.len()
        );
        let Some((last, _)) = page.last() else { break };
        cursor = Some(last.clone());
        pages.push(page);
        assert!(pages.len() <= 10, "paging does not terminate");
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [100, 100, 51]);
    assert_eq!(pages.concat(), expected);

    // `after` need not be a stored key.
    let page = storage
        .scan_partition(p, Some(&[0x00, 0x05, 0x00]), 2)
        .unwrap();
    assert_eq!(page, expected[6..8].to_vec());
    // Neighbours see only their own objects.
    assert_eq!(
        storage.scan_partition(before, None, 1000).unwrap(),
        vec![(vec![0xFF; 3], b"before".to_vec())]
    );
    assert_eq!(
        storage.scan_partition(after, None, 1000).unwrap(),
        rows(&[(b"", b"after"), (b"\x00", b"after")])
    );
    assert!(storage
        .scan_partition(PartitionId(7), None, 1000)
        .unwrap()
        .is_empty());
}

/// The last partition (`u32::MAX`), whose range has no upper neighbour, pages like any
/// other; keys made of 0xFF bytes stay in their own partition.
pub fn scan_partition_handles_last_partition_and_ff_keys(storage: &dyn Storage) {
    let (last, second_last) = (PartitionId(u32::MAX), PartitionId(u32::MAX - 1));
    storage
        .put_object(second_last, &[0xFF; 10], b"second")
        .unwrap();
    storage.put_object(last, &[0xFF; 16], b"ff").unwrap();
    storage.put_object(last, b"a", b"a").unwrap();
    storage.put_object(last, b"", b"empty").unwrap();
    let expected = rows(&[(b"", b"empty"), (b"a", b"a"), (&[0xFF; 16], b"ff")]);
    assert_eq!(storage.scan_partition(last, None, 1000).unwrap(), expected);
    assert_eq!(
        storage.scan_partition(last, None, 1).unwrap(),
        expected[..1].to_vec()
    );
    assert_eq!(
        storage.scan_partition(last, Some(b""), 1000).unwrap(),
        expected[1..].to_vec()
    );
    assert!(storage
        .scan_partition(last, Some(&[0xFF; 16]), 1000)
        .unwrap()
        .is_empty());
    assert_eq!(
        storage.scan_partition(second_last, None, 1000).unwrap(),
        vec![(vec![0xFF; 10], b"second".to_vec())]
    );
    assert!(storage
        .scan_partition(second_last, Some(&[0xFF; 10]), 1000)
        .unwrap()
        .is_empty());
}

/// `delete_partition` removes every object of one partition (more than a page's worth),
/// and nothing of its neighbours or of other spaces; the last partition works too.
pub fn delete_partition_removes_only_that_partition(storage: &dyn Storage) {
    let (p6, p7, p8) = (PartitionId(6), PartitionId(7), PartitionId(8));
    let (last, second_last) = (PartitionId(u32::MAX), PartitionId(u32::MAX - 1));
    let mut batch = WriteBatch::new();
    for i in 0..2500u16 {
        batch.put(Space::Objects, object_key(p7, &be16(i)), &b"v"[..]);
    }
    storage.write(batch).unwrap();
    storage.put_object(p7, &[0xFF; 20], b"v").unwrap();
    storage.put_object(p6, &[0xFF; 4], b"six").unwrap();
    storage.put_object(p8, b"", b"eight").unwrap();
    storage.put_object(last, b"", b"last").unwrap();
    storage.put_object(last, &[0xFF; 64], b"last").unwrap();
    storage
        .put_object(second_last, &[0xFF; 64], b"second")
        .unwrap();
    // Same bytes as a p7 object key, in another space.
    storage
        .put(Space::Hints, &object_key(p7, b"x"), b"hint")
        .unwrap();

    storage.delete_partition(p7).unwrap();
    assert!(storage.scan_partition(p7, None, 10).unwrap().is_empty());
    assert_eq!(storage.get_object(p7, &be16(1)).unwrap(), None);
    assert_eq!(storage.scan_partition(p6, None, 10).unwrap().len(), 1);
    assert_eq!(storage.scan_partition(p8, None, 10).unwrap().len(), 1);
    assert_eq!(
        storage
            .get(Space::Hints, &object_key(p7, b"x"))
            .unwrap()
            .as_deref(),
        Some(&b"hint"[..])
    );

    storage.delete_partition(last).unwrap();
    assert!(storage.scan_partition(last, None, 10).unwrap().is_empty());
    assert_eq!(
        storage.scan_partition(second_last, None, 10).unwrap().len(),
        1
    );
    // Deleting an empty partition is fine, and the partition is writable afterwards.
    storage.delete_partition(p7).unwrap();
    storage.put_object(p7, b"again", b"v").unwrap();
    assert_eq!(
        storage.get_object(p7, b"again").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// The object helpers store under [`object_key`] in the objects space.
pub fn object_helpers_use_the_partition_prefix(storage: &dyn Storage) {
    let p = PartitionId(0x0102_0304);
    storage.put_object(p, b"key", b"value").unwrap();
    assert_eq!(
        storage
            .get(Space::Objects, b"\x01\x02\x03\x04key")
            .unwrap()
            .as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        storage.get_object(p, b"key").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        storage
            .get_object(PartitionId(0x0102_0305), b"key")
            .unwrap(),
        None
    );
    storage.delete_object(p, b"key").unwrap();
    assert_eq!(storage.get_object(p, b"key").unwrap(), None);
    assert!(storage
        .scan(Space::Objects, b"", None, 10)
        .unwrap()
        .is_empty());
}

/// Metadata entries are stored by name in the meta space.
pub fn meta_entries_round_trip(storage: &dyn Storage) {
    assert_eq!(storage.get_meta("node_id").unwrap(), None);
    storage.put_meta("node_id", b"n1").unwrap();
    storage.put_meta("ring", b"\x00\x01").unwrap();
    assert_eq!(
        storage.get_meta("node_id").unwrap().as_deref(),
        Some(&b"n1"[..])
    );
    assert_eq!(
        storage.get(Space::Meta, b"ring").unwrap().as_deref(),
        Some(&b"\x00\x01"[..])
    );
    assert_eq!(
        storage.scan(Space::Meta, b"", None, 10).unwrap(),
        rows(&[(b"node_id", b"n1"), (b"ring", b"\x00\x01")]),
        "the meta space holds exactly what was put in it"
    );
    storage.delete_meta("node_id").unwrap();
    assert_eq!(storage.get_meta("node_id").unwrap(), None);
}

/// An empty key and an empty value are ordinary: stored, found, distinct from absent.
pub fn empty_keys_and_values_are_stored(storage: &dyn Storage) {
    storage.put(Space::Hints, b"", b"empty key").unwrap();
    storage.put(Space::Hints, b"k", b"").unwrap();
    assert_eq!(
        storage.get(Space::Hints, b"").unwrap().as_deref(),
        Some(&b"empty key"[..])
    );
    assert_eq!(
        storage.get(Space::Hints, b"k").unwrap().as_deref(),
        Some(&b""[..])
    );
    assert_eq!(
        storage.scan(Space::Hints, b"", None, 10).unwrap(),
        rows(&[(b"", b"empty key"), (b"k", b"")])
    );
    storage.put_object(PartitionId(3), b"", b"").unwrap();
    assert_eq!(
        storage.scan_partition(PartitionId(3), None, 10).unwrap(),
        rows(&[(b"", b"")])
    );
    storage.delete(Space::Hints, b"").unwrap();
    assert_eq!(storage.get(Space::Hints, b"").unwrap(), None);
}

/// 4 MiB values survive put, batch, get and scan byte for byte.
pub fn large_values_round_trip(storage: &dyn Storage) {
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let other: Vec<u8> = big.iter().rev().copied().collect();
    storage.put_object(PartitionId(1), b"big", &big).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(
        Space::Objects,
        object_key(PartitionId(1), b"big2"),
        other.clone(),
    );
    batch.put(Space::Hints, &b"big"[..], big.clone());
    storage.write(batch).unwrap();
    assert!(storage.get_object(PartitionId(1), b"big").unwrap() == Some(big.clone()));
    assert!(storage.get(Space::Hints, b"big").unwrap() == Some(big.clone()));
    let page = storage.scan_partition(PartitionId(1), None, 10).unwrap();
    assert_eq!(page.len(), 2);
    assert!(page[0] == (b"big".to_vec(), big));
    assert!(page[1] == (b"big2".to_vec(), other));
}

/// Keys over [`MAX_KEY_BYTES`] are refused with [`StorageError::KeyTooLarge`]; a key of
/// exactly the limit is accepted.
pub fn oversized_keys_are_rejected(storage: &dyn Storage) {
    let at_limit = vec![1u8; MAX_KEY_BYTES];
    let over = vec![1u8; MAX_KEY_BYTES + 1];
    storage.put(Space::Meta, &at_limit, b"ok").unwrap();
    assert_eq!(
        storage.get(Space::Meta, &at_limit).unwrap().as_deref(),
        Some(&b"ok"[..])
    );
    assert!(matches!(
        storage.put(Space::Meta, &over, b"no"),
        Err(StorageError::KeyTooLarge { .. })
    ));
    assert!(matches!(
        storage.get(Space::Meta, &over),
        Err(StorageError::KeyTooLarge { .. })
    ));
    assert_eq!(storage.scan(Space::Meta, b"", None, 10).unwrap().len(), 1);
}

/// The objects space holds only [`object_key`]s: a shorter key would sort inside a
/// partition's range without belonging to it, so writing one fails with
/// [`StorageError::NotAnObjectKey`] (reading one just finds nothing).
pub fn short_keys_are_rejected_in_the_objects_space(storage: &dyn Storage) {
    for key in [&b""[..], b"\x01", b"\x00\xff\xff"] {
        assert!(
            matches!(
                storage.put(Space::Objects, key, b"v"),
                Err(StorageError::NotAnObjectKey { .. })
            ),
            "short key {key:?} accepted"
        );
        assert!(matches!(
            storage.delete(Space::Objects, key),
            Err(StorageError::NotAnObjectKey { .. })
        ));
        assert_eq!(storage.get(Space::Objects, key).unwrap(), None);
        storage.put(Space::Hints, key, b"v").unwrap();
    }
    assert!(storage
        .scan(Space::Objects, b"", None, 10)
        .unwrap()
        .is_empty());
    assert!(storage
        .scan_partition(PartitionId(0x00FF_FFFF), None, 10)
        .unwrap()
        .is_empty());
}

/// After writes, the statistics report keys and bytes somewhere (in memtables or on
/// disk).
pub fn stats_reflect_written_data(storage: &dyn Storage) {
    let mut batch = WriteBatch::new();
    for i in 0..100u16 {
        batch.put(
            Space::Objects,
            object_key(PartitionId(2), &be16(i)),
            vec![9u8; 100],
        );
    }
    storage.write(batch).unwrap();
    let stats = storage.stats();
    assert!(stats.estimated_keys > 0, "no keys counted: {stats:?}");
    assert!(
        stats.live_data_bytes + stats.memtable_bytes >= 100 * 100,
        "written bytes not counted: {stats:?}"
    );
}

/// `close` makes every later call fail with [`StorageError::Closed`]; closing twice is
/// fine.
pub fn operations_after_close_fail_with_closed(storage: &dyn Storage) {
    storage.put(Space::Objects, b"key1", b"v").unwrap();
    storage.close().unwrap();
    let closed = |result: Result<(), StorageError>, what: &str| {
        assert!(
            matches!(result, Err(StorageError::Closed)),
            "{what} after close: {result:?}"
        );
    };
    closed(storage.get(Space::Objects, b"key1").map(drop), "get");
    // An engine that cannot answer from memory says so; one that can must say Closed.
    let cached = storage.get_cached(Space::Objects, b"key1");
    assert!(
        matches!(cached, Ok(None) | Err(StorageError::Closed)),
        "get_cached after close: {cached:?}"
    );
    closed(storage.put(Space::Objects, b"key1", b"w"), "put");
    closed(storage.write(WriteBatch::new()), "empty write");
    closed(
        storage.scan(Space::Objects, b"", None, 10).map(drop),
        "scan",
    );
    closed(
        storage.scan_partition(PartitionId(0), None, 10).map(drop),
        "scan_partition",
    );
    closed(storage.delete_partition(PartitionId(0)), "delete_partition");
    closed(storage.flush(), "flush");
    closed(storage.sync_wal(), "sync_wal");
    storage.close().unwrap();
}
