//! The anti-entropy exchange: the descent finds exactly the differing segments at a cost
//! bounded by the differences, segment diffs match a map model, and a full exchange makes
//! two replicas converge.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shoal_proto::{
    diff_segment, ChildrenHashes, ChildrenRequest, Descent, DescentStep, MerkleError, MerkleShape,
    MerkleTree, SegmentDigest, DEFAULT_MAX_DIFFERING,
};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{digest, key, shapes, tree_of};

/// Drive a descent of `ours` against `theirs` to the end; returns the differing segments
/// and every request sent.
fn descend(
    ours: &MerkleTree,
    theirs: &MerkleTree,
    max_differing: usize,
) -> (Vec<u32>, Vec<ChildrenRequest>, Descent) {
    let (mut descent, mut step) =
        Descent::start(ours, theirs.shape(), theirs.root(), max_differing).unwrap();
    let mut requests = Vec::new();
    // A descent takes at most one request per level below the root.
    for _ in 0..ours.level_count() {
        match step {
            DescentStep::Done(segments) => {
                assert!(descent.is_done());
                return (segments, requests, descent);
            }
            DescentStep::Request(request) => {
                let reply = theirs.answer(&request).unwrap();
                requests.push(request);
                step = descent.step(ours, &reply).unwrap();
            }
        }
    }
    panic!("descent did not finish within the tree's depth");
}

// ---------------------------------------------------------------------------------------
// Descent

/// `base` for key indices `0..n`, and a copy with `k` changes: a third updated, a third
/// removed, a third new keys.
fn with_changes(n: u32, changes: &[u32]) -> (BTreeMap<Vec<u8>, u64>, BTreeMap<Vec<u8>, u64>) {
    let base: BTreeMap<Vec<u8>, u64> = (0..n).map(|i| (key(i), digest(i, 0))).collect();
    let mut changed = base.clone();
    for (j, &c) in changes.iter().enumerate() {
        match j % 3 {
            0 => {
                changed.insert(key(c % n), digest(c % n, 1));
            }
            1 => {
                changed.remove(&key(c % n));
            }
            _ => {
                changed.insert(key(n + c), digest(n + c, 0));
            }
        }
    }
    (base, changed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn descent_finds_exactly_the_differing_segments_visiting_at_most_k_paths(
        shape in shapes(),
        changes in prop::collection::btree_set(0u32..100_000, 0..24),
    ) {
        let changes: Vec<u32> = changes.into_iter().collect();
        let (base, changed) = with_changes(3000, &changes);
        let ours = tree_of(shape, &base);
        let theirs = tree_of(shape, &changed);

        // The segments of the changed keys, from the model.
        let changed_keys: BTreeSet<&Vec<u8>> = base
            .keys()
            .chain(changed.keys())
            .filter(|k| base.get(*k) != changed.get(*k))
            .collect();
        let k = changed_keys.len();
        let expected: BTreeSet<u32> = changed_keys.iter().map(|key| ours.segment_of(key)).collect();

        let (segments, requests, descent) = descend(&ours, &theirs, DEFAULT_MAX_DIFFERING);
        prop_assert_eq!(segments.iter().copied().collect::<BTreeSet<_>>(), expected);
        prop_assert_eq!(&segments, &ours.differing_segments(&theirs).unwrap());
        prop_assert!(segments.windows(2).all(|w| w[0] < w[1]));
        if k == 0 {
            prop_assert!(requests.is_empty());
            prop_assert_eq!(descent.hashes_compared(), 1);
        } else {
            prop_assert_eq!(requests.len(), ours.level_count() - 1);
        }
        // Every level follows at most k paths, so the cost is bounded by the differences.
        for request in &requests {
            prop_assert!(request.parents.len() <= k.max(1));
        }
        let bound = 1 + (k as u64) * u64::from(shape.fanout()) * (ours.level_count() as u64 - 1);
        prop_assert!(descent.hashes_compared() <= bound);
        prop_assert_eq!(descent.round_trips() as usize, requests.len());
    }

    #[test]
    fn descent_follows_at_most_max_differing_nodes_per_level(
        changes in prop::collection::btree_set(0u32..100_000, 10..60),
        max in 1usize..8,
    ) {
        let changes: Vec<u32> = changes.into_iter().collect();
        let (base, changed) = with_changes(3000, &changes);
        let ours = tree_of(MerkleShape::DEFAULT, &base);
        let theirs = tree_of(MerkleShape::DEFAULT, &changed);
        let all = ours.differing_segments(&theirs).unwrap();
        let (segments, requests, _) = descend(&ours, &theirs, max);
        prop_assert!(!segments.is_empty());
        prop_assert!(segments.len() <= max);
        prop_assert!(segments.iter().all(|s| all.contains(s)));
        for request in &requests {
            prop_assert!(request.parents.len() <= max);
        }
    }
}

#[test]
fn descent_of_equal_trees_ends_at_the_root() {
    let tree = MerkleTree::from_pairs(1024, 32, (0..100).map(|i| (key(i), 1))).unwrap();
    let (descent, step) = Descent::start(&tree, tree.shape(), tree.root(), 16).unwrap();
    assert_eq!(step, DescentStep::Done(Vec::new()));
    assert!(descent.is_done());
    assert_eq!(descent.round_trips(), 0);
}

#[test]
fn descent_rejects_a_peer_of_another_shape() {
    let ours = MerkleTree::default();
    let theirs = MerkleShape::new(2048, 32).unwrap();
    assert_eq!(
        Descent::start(&ours, theirs, 0, 16).unwrap_err(),
        MerkleError::ShapeMismatch {
            ours: MerkleShape::DEFAULT,
            theirs
        }
    );
}

#[test]
fn descent_rejects_replies_that_do_not_answer_the_request() {
    let ours = MerkleTree::from_pairs(1024, 32, (0..100).map(|i| (key(i), 1))).unwrap();
    let theirs = MerkleTree::from_pairs(1024, 32, (0..100).map(|i| (key(i), 2))).unwrap();
    let start = || {
        let (descent, step) = Descent::start(&ours, theirs.shape(), theirs.root(), 16).unwrap();
        let DescentStep::Request(request) = step else {
            panic!("roots differ, so the descent must ask for children");
        };
        (descent, theirs.answer(&request).unwrap())
    };

    let (mut descent, mut reply) = start();
    reply.level = 1;
    assert_eq!(
        descent.step(&ours, &reply),
        Err(MerkleError::UnexpectedReply("wrong level"))
    );
    assert!(descent.is_done());
    assert_eq!(
        descent.step(&ours, &reply),
        Err(MerkleError::DescentFinished)
    );

    let (mut descent, mut reply) = start();
    reply.parents = vec![1];
    assert_eq!(
        descent.step(&ours, &reply),
        Err(MerkleError::UnexpectedReply("wrong parents"))
    );

    let (mut descent, mut reply) = start();
    reply.hashes.pop();
    assert_eq!(
        descent.step(&ours, &reply),
        Err(MerkleError::LengthMismatch {
            expected: 32,
            found: 31
        })
    );

    let (mut descent, reply) = start();
    let other_shape = MerkleTree::new(2048, 32).unwrap();
    assert!(matches!(
        descent.step(&other_shape, &reply),
        Err(MerkleError::ShapeMismatch { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Segment exchange

fn entries() -> impl Strategy<Value = BTreeMap<Vec<u8>, u64>> {
    prop::collection::btree_map(prop::collection::vec(0u8..4, 0..4), 0u64..3, 0..30)
}

proptest! {
    #[test]
    fn diff_segment_matches_a_map_model(
        ours in entries(),
        theirs in entries(),
        seed in any::<u64>(),
    ) {
        // Hand the lists over in a scrambled order: diff_segment must not rely on sorting.
        let scramble = |m: &BTreeMap<Vec<u8>, u64>| {
            let mut v: Vec<(Vec<u8>, u64)> = m.iter().map(|(k, d)| (k.clone(), *d)).collect();
            v.sort_by_key(|(k, _)| xxh3_64_with_seed(k, seed));
            v
        };
        let diff = diff_segment(&scramble(&ours), &scramble(&theirs));
        let only_ours: Vec<Vec<u8>> =
            ours.keys().filter(|k| !theirs.contains_key(*k)).cloned().collect();
        let only_theirs: Vec<Vec<u8>> =
            theirs.keys().filter(|k| !ours.contains_key(*k)).cloned().collect();
        let different: Vec<Vec<u8>> = ours
            .iter()
            .filter(|(k, d)| theirs.get(*k).is_some_and(|t| t != *d))
            .map(|(k, _)| k.clone())
            .collect();
        prop_assert_eq!(&diff.only_ours, &only_ours);
        prop_assert_eq!(&diff.only_theirs, &only_theirs);
        prop_assert_eq!(&diff.different, &different);
        prop_assert_eq!(diff.is_empty(), ours == theirs);
        prop_assert_eq!(diff.len(), only_ours.len() + only_theirs.len() + different.len());
    }
}

#[test]
fn a_key_listed_twice_with_conflicting_digests_counts_as_different() {
    let ours = vec![(b"k".to_vec(), 1), (b"k".to_vec(), 2), (b"j".to_vec(), 5)];
    let theirs = vec![(b"k".to_vec(), 1), (b"j".to_vec(), 5), (b"j".to_vec(), 5)];
    let diff = diff_segment(&ours, &theirs);
    assert_eq!(diff.different, [b"k".to_vec()]);
    assert!(diff.only_ours.is_empty() && diff.only_theirs.is_empty());
}

#[test]
fn segment_digests_group_a_scan_by_segment_and_hash_like_the_tree() {
    let pairs: Vec<(Vec<u8>, u64)> = (0..5000).map(|i| (key(i), digest(i, 0))).collect();
    let tree = MerkleTree::from_pairs(1024, 32, pairs.clone()).unwrap();
    let wanted = [3, 100, 1023];
    let digests = tree.segment_digests(&wanted, pairs.clone()).unwrap();
    assert_eq!(digests.len(), 3);
    for (d, &segment) in digests.iter().zip(&wanted) {
        assert_eq!(d.segment, segment);
        let expected: Vec<(Vec<u8>, u64)> = pairs
            .iter()
            .filter(|(k, _)| tree.segment_of(k) == segment)
            .cloned()
            .collect();
        assert_eq!(d.entries, expected, "sorted by key, as the keys were");
        assert_eq!(Some(d.hash()), tree.segment_hash(segment));
        assert_eq!(d.validate(&tree), Ok(()));
    }
    assert_eq!(
        tree.segment_digests(&[5, 4], pairs.clone()).unwrap_err(),
        MerkleError::UnsortedIndices { level: 2 }
    );
    assert!(tree.segment_digests(&[1024], pairs).is_err());
}

#[test]
fn validate_rejects_keys_outside_the_segment_and_unknown_segments() {
    let tree = MerkleTree::default();
    let k = key(1);
    let home = tree.segment_of(&k);
    let elsewhere = (home + 1) % 1024;
    let digest = SegmentDigest {
        segment: elsewhere,
        entries: vec![(k, 1)],
    };
    assert_eq!(
        digest.validate(&tree),
        Err(MerkleError::KeyOutsideSegment {
            segment: elsewhere,
            actual: home
        })
    );
    let unknown = SegmentDigest {
        segment: 1024,
        entries: Vec::new(),
    };
    assert!(unknown.validate(&tree).is_err());
}

#[test]
fn rebuild_segment_heals_a_tree_that_drifted_from_storage() {
    let pairs: Vec<(Vec<u8>, u64)> = (0..2000).map(|i| (key(i), digest(i, 0))).collect();
    let truth = MerkleTree::from_pairs(1024, 32, pairs.clone()).unwrap();
    let mut drifted = truth.clone();
    // A caller bug: the same write reported twice cancels the key out of the tree.
    let (k, d) = pairs[17].clone();
    drifted.insert(&k, d);
    let segment = drifted.segment_of(&k);
    assert_ne!(drifted, truth);

    // The exchange's own scan shows the drift, and rebuilding the segment fixes it.
    let scan = drifted.segment_digests(&[segment], pairs.clone()).unwrap();
    assert_ne!(Some(scan[0].hash()), drifted.segment_hash(segment));
    drifted
        .rebuild_segment(segment, scan[0].entries.iter().map(|(k, d)| (k, *d)))
        .unwrap();
    assert_eq!(drifted, truth);

    // A key from another segment is refused and nothing changes.
    let before = drifted.clone();
    let foreign = pairs
        .iter()
        .find(|(k, _)| drifted.segment_of(k) != segment)
        .unwrap();
    assert!(matches!(
        drifted.rebuild_segment(segment, [(foreign.0.clone(), 1)]),
        Err(MerkleError::KeyOutsideSegment { .. })
    ));
    assert!(drifted
        .rebuild_segment(1024, Vec::<(Vec<u8>, u64)>::new())
        .is_err());
    assert_eq!(drifted, before);
}

#[test]
fn a_full_exchange_makes_two_replicas_converge() {
    let changes: Vec<u32> = (0..30).map(|i| i * 977).collect();
    let (a_map, b_map) = with_changes(4000, &changes);
    let mut a_map = a_map;
    let mut b_map = b_map;
    let mut a = tree_of(MerkleShape::DEFAULT, &a_map);
    let mut b = tree_of(MerkleShape::DEFAULT, &b_map);
    assert_ne!(a.root(), b.root());

    let (segments, _, _) = descend(&a, &b, DEFAULT_MAX_DIFFERING);
    let scan =
        |m: &BTreeMap<Vec<u8>, u64>| m.iter().map(|(k, d)| (k.clone(), *d)).collect::<Vec<_>>();
    let ours = a.segment_digests(&segments, scan(&a_map)).unwrap();
    let theirs = b.segment_digests(&segments, scan(&b_map)).unwrap();
    for (o, t) in ours.iter().zip(&theirs) {
        t.validate(&a).unwrap();
        let diff = diff_segment(&o.entries, &t.entries);
        assert!(!diff.is_empty());
        // Stand-in for an object merge: the larger digest wins on both sides.
        for k in diff.only_ours {
            let d = a_map[&k];
            b.update(&k, None, Some(d));
            b_map.insert(k, d);
        }
        for k in diff.only_theirs {
            let d = b_map[&k];
            a.update(&k, None, Some(d));
            a_map.insert(k, d);
        }
        for k in diff.different {
            let (da, db) = (a_map[&k], b_map[&k]);
            let merged = da.max(db);
            a.update(&k, Some(da), Some(merged));
            b.update(&k, Some(db), Some(merged));
            a_map.insert(k.clone(), merged);
            b_map.insert(k, merged);
        }
    }
    assert_eq!(a_map, b_map);
    assert_eq!(a.root(), b.root());
    assert_eq!(a, b);
}

#[test]
fn exchange_messages_round_trip_through_postcard() {
    let tree = MerkleTree::from_pairs(1024, 32, (0..100).map(|i| (key(i), 1))).unwrap();
    let request = ChildrenRequest {
        level: 1,
        parents: vec![2, 5],
    };
    let reply: ChildrenHashes = tree.answer(&request).unwrap();
    assert_eq!(reply.hashes.len(), 64);
    let bytes = postcard::to_stdvec(&reply).unwrap();
    assert_eq!(
        postcard::from_bytes::<ChildrenHashes>(&bytes).unwrap(),
        reply
    );
    let bytes = postcard::to_stdvec(&request).unwrap();
    assert_eq!(
        postcard::from_bytes::<ChildrenRequest>(&bytes).unwrap(),
        request
    );
    let digest = SegmentDigest {
        segment: 3,
        entries: vec![(b"k".to_vec(), 9)],
    };
    let bytes = postcard::to_stdvec(&digest).unwrap();
    assert_eq!(
        postcard::from_bytes::<SegmentDigest>(&bytes).unwrap(),
        digest
    );
}
