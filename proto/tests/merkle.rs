//! Merkle tree for anti-entropy: the incremental tree equals a rebuild, equal sets give
//! equal trees, one difference changes exactly one path, and key counts follow the writes.
//! The exchange state machine is tested in `merkle_exchange/`.

mod merkle_exchange;

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_proto::{
    MerkleError, MerkleShape, MerkleTree, DEFAULT_FANOUT, DEFAULT_SEGMENTS, MAX_SEGMENTS,
    PAIR_HASH_SEED, SEGMENT_HASH_SEED,
};
use xxhash_rust::xxh3::xxh3_64_with_seed;

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

/// A digest for key `i` at version `v`, spread over the u64 range.
fn digest(i: u32, v: u32) -> u64 {
    xxh3_64_with_seed(&[i.to_le_bytes(), v.to_le_bytes()].concat(), 7)
}

fn tree_of(shape: MerkleShape, map: &BTreeMap<Vec<u8>, u64>) -> MerkleTree {
    MerkleTree::from_pairs(
        shape.segments(),
        shape.fanout(),
        map.iter().map(|(k, d)| (k.clone(), *d)),
    )
    .unwrap()
}

fn all_levels(tree: &MerkleTree) -> Vec<Vec<u64>> {
    (0..tree.level_count())
        .map(|l| {
            let width = tree.level_width(l).unwrap();
            tree.node_hashes(l, 0..width).unwrap()
        })
        .collect()
}

/// The segments whose hashes differ between two trees of one shape, read off both trees
/// at once: the model an exchange's descent is checked against.
fn differing_segments(a: &MerkleTree, b: &MerkleTree) -> Vec<u32> {
    let (a, b) = (all_levels(a), all_levels(b));
    let (a, b) = (a.last().unwrap(), b.last().unwrap());
    (0..a.len() as u32)
        .filter(|&i| a[i as usize] != b[i as usize])
        .collect()
}

fn shapes() -> impl Strategy<Value = MerkleShape> {
    prop_oneof![
        Just(MerkleShape::new(8, 2).unwrap()),
        Just(MerkleShape::new(64, 4).unwrap()),
        Just(MerkleShape::new(128, 8).unwrap()),
        Just(MerkleShape::new(32, 32).unwrap()),
        Just(MerkleShape::DEFAULT),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    /// Write key `i` at version `v` (insert or update).
    Put(u32, u32),
    /// Remove key `i` if present.
    Remove(u32),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0u32..60, 0u32..4).prop_map(|(i, v)| Op::Put(i, v)),
            1 => (0u32..60).prop_map(Op::Remove),
        ],
        0..300,
    )
}

// ---------------------------------------------------------------------------------------
// Shape

#[test]
fn shape_rejects_invalid_segment_and_fanout_combinations() {
    assert_eq!(
        MerkleShape::new(1000, 32),
        Err(MerkleError::SegmentsNotPowerOfTwo(1000))
    );
    assert_eq!(
        MerkleShape::new(0, 32),
        Err(MerkleError::SegmentsNotPowerOfTwo(0))
    );
    assert_eq!(
        MerkleShape::new(1024, 1),
        Err(MerkleError::FanoutTooSmall(1))
    );
    assert_eq!(
        MerkleShape::new(1024, 0),
        Err(MerkleError::FanoutTooSmall(0))
    );
    assert_eq!(
        MerkleShape::new(1024, 24),
        Err(MerkleError::FanoutNotPowerOfTwo(24))
    );
    assert_eq!(
        MerkleShape::new(16, 32),
        Err(MerkleError::SegmentsBelowFanout {
            segments: 16,
            fanout: 32
        })
    );
    assert_eq!(
        MerkleShape::new(MAX_SEGMENTS * 2, 32),
        Err(MerkleError::TooManySegments {
            segments: MAX_SEGMENTS * 2,
            max: MAX_SEGMENTS
        })
    );
    assert!(MerkleShape::new(MAX_SEGMENTS, 2).is_ok());
    assert!(MerkleTree::new(1000, 32).is_err());
}

#[test]
fn default_shape_has_root_32_nodes_and_1024_segments() {
    let shape = MerkleShape::default();
    assert_eq!(
        shape,
        MerkleShape::new(DEFAULT_SEGMENTS, DEFAULT_FANOUT).unwrap()
    );
    assert_eq!((shape.segments(), shape.fanout()), (1024, 32));
    let tree = MerkleTree::default();
    assert_eq!(tree.level_count(), 3);
    let widths: Vec<u32> = (0..3).map(|l| tree.level_width(l).unwrap()).collect();
    assert_eq!(widths, [1, 32, 1024]);
    assert_eq!(tree.level_width(3), None);
    assert_eq!(tree.root(), 0);
    assert_eq!(tree.key_count(), 0);
}

#[test]
fn root_takes_the_remainder_when_segments_are_not_a_power_of_the_fanout() {
    let shape = MerkleShape::new(2048, 32).unwrap();
    let widths: Vec<u32> = (0..shape.level_count())
        .map(|l| shape.level_width(l).unwrap())
        .collect();
    assert_eq!(widths, [1, 2, 64, 2048]);
    let binary = MerkleShape::new(64, 2).unwrap();
    assert_eq!(binary.level_count(), 7);
    let flat = MerkleShape::new(32, 32).unwrap();
    assert_eq!(flat.level_count(), 2);
}

#[test]
fn children_ranges_tile_each_level_below() {
    for (segments, fanout) in [(1024, 32), (2048, 32), (64, 2), (32, 32), (512, 8)] {
        let shape = MerkleShape::new(segments, fanout).unwrap();
        for level in 0..shape.level_count() - 1 {
            let mut next = 0;
            for index in 0..shape.level_width(level).unwrap() {
                let children = shape.children(level, index);
                assert_eq!(children.start, next, "gap under level {level} node {index}");
                assert!(children.end > children.start);
                next = children.end;
            }
            assert_eq!(next, shape.level_width(level + 1).unwrap());
        }
        let leaf = shape.level_count() - 1;
        assert!(
            shape.children(leaf, 0).is_empty(),
            "segments have no children"
        );
        assert!(shape.children(0, 1).is_empty(), "there is one root");
    }
}

// ---------------------------------------------------------------------------------------
// Hashing

#[test]
fn segment_and_pair_hashes_match_their_documented_definitions() {
    let tree = MerkleTree::default();
    for k in [&b""[..], b"a", b"user:42", &[0xff; 300]] {
        let expected = (xxh3_64_with_seed(k, SEGMENT_HASH_SEED) >> 54) as u32;
        assert_eq!(tree.segment_of(k), expected);
        assert_eq!(MerkleShape::DEFAULT.segment_of(k), expected);
        let mut input = k.to_vec();
        input.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
        assert_eq!(
            MerkleTree::pair_hash(k, 0x0123_4567_89ab_cdef),
            xxh3_64_with_seed(&input, PAIR_HASH_SEED)
        );
    }
}

#[test]
fn hash_seeds_and_values_are_pinned_because_replicas_and_storage_depend_on_them() {
    // Changing the segment hash moves every stored key to another segment (the storage key
    // layout); changing either makes trees of two builds disagree everywhere.
    assert_eq!(SEGMENT_HASH_SEED, u64::from_be_bytes(*b"shoalseg"));
    assert_eq!(PAIR_HASH_SEED, u64::from_be_bytes(*b"shoalpar"));
    let tree = MerkleTree::default();
    assert_eq!(tree.segment_of(b"user:42"), PINNED_SEGMENT);
    assert_eq!(MerkleTree::pair_hash(b"user:42", 42), PINNED_PAIR_HASH);
}

const PINNED_SEGMENT: u32 = 371;
const PINNED_PAIR_HASH: u64 = 0x1b53_105c_e5c6_6ced;

proptest! {
    #[test]
    fn pair_hash_is_the_seeded_hash_of_key_then_digest_for_any_key_length(
        k in prop::collection::vec(any::<u8>(), 0..700),
        d in any::<u64>(),
    ) {
        let mut input = k.clone();
        input.extend_from_slice(&d.to_le_bytes());
        prop_assert_eq!(MerkleTree::pair_hash(&k, d), xxh3_64_with_seed(&input, PAIR_HASH_SEED));
    }
}

#[test]
fn keys_of_one_partition_spread_over_all_segments() {
    // The ring takes the partition from the top bits of the unseeded key hash; with
    // Q = 256, collect 8,192 keys of partition 0 (8 per segment on average).
    let tree = MerkleTree::default();
    let mut per_segment = vec![0u32; 1024];
    let mut found = 0;
    let mut i = 0u32;
    while found < 8192 {
        let k = key(i);
        i += 1;
        if shoal_ring::key_hash(&k) >> 56 == 0 {
            per_segment[tree.segment_of(&k) as usize] += 1;
            found += 1;
        }
    }
    let used = per_segment.iter().filter(|&&c| c > 0).count();
    // P(a segment is empty) = e^-8 ≈ 0.03%: almost every segment is used.
    assert!(used >= 1015, "only {used} of 1024 segments used");
    let max = per_segment.iter().copied().max().unwrap();
    assert!(max <= 30, "a segment holds {max} keys, mean 8");
}

#[test]
fn swapping_versions_between_two_keys_of_one_segment_changes_the_root() {
    let tree = MerkleTree::default();
    let a = key(0);
    let segment = tree.segment_of(&a);
    let b = (1..)
        .map(key)
        .find(|k| tree.segment_of(k) == segment)
        .unwrap();
    let (x, y) = (11u64, 22u64);
    let one = MerkleTree::from_pairs(1024, 32, [(a.clone(), x), (b.clone(), y)]).unwrap();
    let swapped = MerkleTree::from_pairs(1024, 32, [(a, y), (b, x)]).unwrap();
    assert_ne!(one.root(), swapped.root());
    assert_eq!(differing_segments(&one, &swapped), [segment]);
}

// ---------------------------------------------------------------------------------------
// Incremental updates

proptest! {
    #[test]
    fn incremental_updates_equal_a_rebuild_of_the_final_set(shape in shapes(), ops in ops()) {
        let mut tree = MerkleTree::with_shape(shape);
        let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put(i, v) => {
                    let k = key(i);
                    let new = digest(i, v);
                    let old = model.insert(k.clone(), new);
                    tree.update(&k, old, Some(new));
                }
                Op::Remove(i) => {
                    let k = key(i);
                    let old = model.remove(&k);
                    tree.update(&k, old, None);
                }
            }
        }
        let rebuilt = tree_of(shape, &model);
        prop_assert_eq!(all_levels(&tree), all_levels(&rebuilt));
        prop_assert_eq!(tree.key_count(), model.len() as u64);
        prop_assert_eq!(&tree, &rebuilt);
    }

    #[test]
    fn insert_and_remove_agree_with_update(shape in shapes(), ops in ops()) {
        let mut by_update = MerkleTree::with_shape(shape);
        let mut by_insert = MerkleTree::with_shape(shape);
        let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for op in ops {
            let (k, old, new) = match op {
                Op::Put(i, v) => {
                    let k = key(i);
                    let new = digest(i, v);
                    (k.clone(), model.insert(k, new), Some(new))
                }
                Op::Remove(i) => {
                    let k = key(i);
                    (k.clone(), model.remove(&k), None)
                }
            };
            by_update.update(&k, old, new);
            if old != new {
                if let Some(old) = old {
                    by_insert.remove(&k, old);
                }
                if let Some(new) = new {
                    by_insert.insert(&k, new);
                }
            }
        }
        prop_assert_eq!(by_update, by_insert);
    }

    #[test]
    fn the_tree_does_not_depend_on_insertion_order(
        shape in shapes(),
        pairs in prop::collection::btree_map(0u32..500, 0u32..8, 0..200)
            .prop_map(|m| m.into_iter().map(|(i, v)| (key(i), digest(i, v))).collect::<Vec<_>>())
            .prop_shuffle(),
    ) {
        let mut sorted = pairs.clone();
        sorted.sort();
        let shuffled = MerkleTree::from_pairs(shape.segments(), shape.fanout(), pairs).unwrap();
        let ordered = MerkleTree::from_pairs(shape.segments(), shape.fanout(), sorted.clone()).unwrap();
        let mut incremental = MerkleTree::with_shape(shape);
        for (k, d) in sorted.iter().rev() {
            incremental.insert(k, *d);
        }
        prop_assert_eq!(&shuffled, &ordered);
        prop_assert_eq!(&shuffled, &incremental);
    }
}

#[test]
fn equal_sets_reached_by_different_histories_have_equal_roots() {
    let final_set: BTreeMap<Vec<u8>, u64> = (0..1000).map(|i| (key(i), digest(i, 1))).collect();
    let direct = tree_of(MerkleShape::DEFAULT, &final_set);

    let mut winding = MerkleTree::default();
    for i in 0..1500 {
        winding.insert(&key(i), digest(i, 0));
    }
    for i in 0..1000 {
        winding.update(&key(i), Some(digest(i, 0)), Some(digest(i, 1)));
    }
    for i in 1000..1500 {
        winding.update(&key(i), Some(digest(i, 0)), None);
    }
    assert_eq!(winding.root(), direct.root());
    assert_eq!(winding, direct);
    assert_eq!(winding.key_count(), 1000);
}

#[test]
fn one_differing_key_changes_the_root_and_exactly_one_path() {
    let base: BTreeMap<Vec<u8>, u64> = (0..5000).map(|i| (key(i), digest(i, 0))).collect();
    let ours = tree_of(MerkleShape::DEFAULT, &base);
    for change in 0..3 {
        let mut theirs = ours.clone();
        let k = key(1234);
        match change {
            0 => theirs.update(&k, Some(digest(1234, 0)), Some(digest(1234, 1))),
            1 => theirs.remove(&k, digest(1234, 0)),
            _ => theirs.insert(&key(99_999), 5),
        }
        let changed_key = if change == 2 { key(99_999) } else { k };
        assert_ne!(ours.root(), theirs.root());
        // Walk up from the key's segment: exactly those nodes differ, one per level.
        let mut expected = ours.segment_of(&changed_key);
        let (a, b) = (all_levels(&ours), all_levels(&theirs));
        for level in (0..ours.level_count()).rev() {
            let differing: Vec<u32> = (0..a[level].len() as u32)
                .filter(|&i| a[level][i as usize] != b[level][i as usize])
                .collect();
            assert_eq!(differing, [expected], "level {level}");
            if level > 0 {
                let parent = (0..ours.level_width(level - 1).unwrap())
                    .find(|&p| ours.shape().children(level - 1, p).contains(&expected))
                    .unwrap();
                expected = parent;
            }
        }
    }
}

#[test]
fn update_with_equal_digests_or_two_absences_changes_nothing() {
    let mut tree = MerkleTree::from_pairs(64, 4, [(key(1), 10)]).unwrap();
    let before = tree.clone();
    tree.update(&key(1), Some(10), Some(10));
    tree.update(&key(2), None, None);
    assert_eq!(tree, before);
}

// ---------------------------------------------------------------------------------------
// Key counts

#[test]
fn key_count_follows_inserts_removes_and_updates() {
    let mut tree = MerkleTree::default();
    tree.insert(b"a", 1);
    tree.insert(b"b", 2);
    tree.update(b"c", None, Some(3));
    assert_eq!(tree.key_count(), 3);
    tree.update(b"a", Some(1), Some(9));
    assert_eq!(tree.key_count(), 3);
    tree.remove(b"b", 2);
    tree.update(b"c", Some(3), None);
    assert_eq!(tree.key_count(), 1);
    let segment = tree.segment_of(b"a");
    assert_eq!(tree.segment_key_count(segment), Some(1));
    assert_eq!(tree.segment_key_count(1024), None);
    let total: u64 = (0..1024).map(|s| tree.segment_key_count(s).unwrap()).sum();
    assert_eq!(total, tree.key_count());
}

#[test]
fn removing_an_absent_key_does_not_underflow_the_count() {
    let mut tree = MerkleTree::default();
    tree.remove(b"ghost", 1);
    assert_eq!(tree.key_count(), 0);
    assert_eq!(tree.segment_key_count(tree.segment_of(b"ghost")), Some(0));
}

#[test]
fn from_pairs_counts_every_key() {
    let tree = MerkleTree::from_pairs(1024, 32, (0..777).map(|i| (key(i), 1))).unwrap();
    assert_eq!(tree.key_count(), 777);
    let total: u64 = (0..1024).map(|s| tree.segment_key_count(s).unwrap()).sum();
    assert_eq!(total, 777);
}

// ---------------------------------------------------------------------------------------
// Node queries

#[test]
fn node_queries_reject_out_of_range_levels_and_indices() {
    let tree = MerkleTree::default();
    assert_eq!(tree.node_hashes(0, 0..1).unwrap(), [0]);
    assert_eq!(tree.node_hashes(2, 1000..1024).unwrap().len(), 24);
    assert!(tree.node_hashes(2, 1000..1025).is_err());
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 5..3;
    assert!(tree.node_hashes(2, reversed).is_err());
    assert!(matches!(
        tree.node_hashes(3, 0..1),
        Err(MerkleError::LevelOutOfRange {
            level: 3,
            levels: 3
        })
    ));
    let tree = MerkleTree::default();
    assert_eq!(tree.segment_hash(1023), Some(0));
    assert_eq!(tree.segment_hash(1024), None);
}

#[test]
fn debug_output_is_a_summary_not_every_hash() {
    let tree = MerkleTree::from_pairs(1024, 32, (0..10).map(|i| (key(i), 1))).unwrap();
    let text = format!("{tree:?}");
    assert!(text.contains("key_count: 10"), "{text}");
    assert!(text.len() < 200, "{text}");
}
