//! The exchange state machine the engine drives (`shoal_proto::merkle::Exchange`), driven
//! here against two replicas in memory: it makes them converge, descends only into
//! differing children, compares the differing segments 32 per step with their repairs in
//! between, sends repairs in bounded batches one at a time, and refuses answers that do
//! not fit its question. Segment diffs match a map model.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shoal_proto::merkle::{
    Answer, Exchange, ExchangeError, Question, Repairs, Side, Step, SEGMENTS_PER_STEP,
};
use shoal_proto::{diff_segment, MerkleShape, MerkleTree};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{all_levels, differing_segments, digest, key, shapes, tree_of};

/// One replica: its (key, digest) pairs and its tree, kept together.
#[derive(Clone, Debug)]
struct Replica {
    map: BTreeMap<Vec<u8>, u64>,
    tree: MerkleTree,
    /// Most segments one answer lists (the executor stops at a byte bound; here, at a
    /// count): an answer lists a prefix of the segments asked.
    page: usize,
}

impl Replica {
    fn new(shape: MerkleShape, map: BTreeMap<Vec<u8>, u64>) -> Replica {
        let tree = tree_of(shape, &map);
        Replica {
            map,
            tree,
            page: usize::MAX,
        }
    }

    /// What the executor answers: node hashes in the order asked, or each segment's pairs
    /// in key order.
    fn answer(&self, question: &Question) -> Answer {
        match question {
            Question::Nodes { level, indices } => Answer::Nodes(
                indices
                    .iter()
                    .flat_map(|&i| {
                        self.tree
                            .node_hashes(usize::from(*level), i..i + 1)
                            .unwrap()
                    })
                    .collect(),
            ),
            Question::Segments(segments) => Answer::Segments(
                segments
                    .iter()
                    .take(self.page)
                    .map(|&s| {
                        let list = self
                            .map
                            .iter()
                            .filter(|(k, _)| self.tree.segment_of(k) == s)
                            .map(|(k, d)| (k.clone(), *d))
                            .collect();
                        (s, list)
                    })
                    .collect(),
            ),
        }
    }

    /// Merge `from`'s copy of `keys` into this replica; the larger digest stands in for an
    /// object merge (commutative and idempotent, like the real one).
    fn merge_from(&mut self, from: &Replica, keys: &[Vec<u8>]) {
        for k in keys {
            let Some(&theirs) = from.map.get(k) else {
                continue;
            };
            let old = self.map.get(k).copied();
            let merged = old.map_or(theirs, |o| o.max(theirs));
            self.tree.update(k, old, Some(merged));
            self.map.insert(k.clone(), merged);
        }
    }
}

/// What happened during one exchange, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Asked(Question),
    Repaired(Repairs),
}

/// Drive one exchange between `ours` and `theirs` to the end, answering each question
/// from both (in the order `theirs_first` says) and carrying out every repair batch of at
/// most `batch` keys per direction. Returns the events and the segments compared.
fn run(
    ours: &mut Replica,
    theirs: &mut Replica,
    batch: usize,
    theirs_first: bool,
) -> (Vec<Event>, u64) {
    let (mut exchange, mut step) = Exchange::start(ours.tree.shape());
    let mut events = Vec::new();
    for _ in 0..100_000 {
        match step {
            Step::Ask(question) => {
                let answers = [
                    (Side::Ours, ours.answer(&question)),
                    (Side::Theirs, theirs.answer(&question)),
                ];
                let [first, second] = if theirs_first {
                    let [a, b] = answers;
                    [b, a]
                } else {
                    answers
                };
                events.push(Event::Asked(question));
                assert_eq!(exchange.answer(first.0, first.1), Ok(Step::Wait));
                step = exchange.answer(second.0, second.1).unwrap();
            }
            Step::Repair => {
                let size = exchange.next_repair_size(batch).expect("a batch may start");
                let repairs = exchange.take_repairs(batch);
                assert_eq!(size, repairs.fetch.len().max(repairs.push.len()));
                assert!(repairs.fetch.len() <= batch && repairs.push.len() <= batch);
                assert_eq!(
                    exchange.next_repair_size(batch),
                    None,
                    "one batch at a time"
                );
                let mut directions = 0;
                if !repairs.fetch.is_empty() {
                    ours.merge_from(theirs, &repairs.fetch);
                    directions += 1;
                }
                if !repairs.push.is_empty() {
                    theirs.merge_from(ours, &repairs.push);
                    directions += 1;
                }
                assert!(directions > 0, "a repair step has keys to copy");
                for _ in 1..directions {
                    assert_eq!(exchange.repaired(), Step::Wait);
                }
                step = exchange.repaired();
                events.push(Event::Repaired(repairs));
            }
            Step::Wait => panic!("nothing is outstanding, yet the exchange waits"),
            Step::Done => {
                assert!(exchange.is_done());
                return (events, exchange.segments_compared());
            }
        }
    }
    panic!("the exchange did not finish");
}

fn questions(events: &[Event]) -> Vec<&Question> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Asked(q) => Some(q),
            Event::Repaired(_) => None,
        })
        .collect()
}

/// `base` for key indices `0..n`, and a copy with changes: a third updated, a third
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

// ---------------------------------------------------------------------------------------
// Convergence and cost

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn an_exchange_makes_two_replicas_converge(
        shape in shapes(),
        changes in prop::collection::btree_set(0u32..100_000, 0..80),
        batch in 1usize..40,
        theirs_first in any::<bool>(),
    ) {
        let changes: Vec<u32> = changes.into_iter().collect();
        let (base, changed) = with_changes(2000, &changes);
        let mut ours = Replica::new(shape, base);
        let mut theirs = Replica::new(shape, changed);
        run(&mut ours, &mut theirs, batch, theirs_first);
        prop_assert_eq!(&ours.map, &theirs.map);
        prop_assert_eq!(&ours.tree, &theirs.tree);
        // Agreeing replicas: the next exchange asks for the roots and stops.
        let (events, compared) = run(&mut ours, &mut theirs, batch, theirs_first);
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(compared, 0);
    }

    #[test]
    fn the_descent_asks_only_for_the_children_of_differing_nodes(
        shape in shapes(),
        changes in prop::collection::btree_set(0u32..100_000, 0..40),
    ) {
        let changes: Vec<u32> = changes.into_iter().collect();
        let (base, changed) = with_changes(3000, &changes);
        let mut ours = Replica::new(shape, base);
        let mut theirs = Replica::new(shape, changed);
        let (a, b) = (all_levels(&ours.tree), all_levels(&theirs.tree));
        let expected_segments = differing_segments(&ours.tree, &theirs.tree);
        let (events, compared) = run(&mut ours, &mut theirs, 64, false);
        let asked = questions(&events);

        // The node questions: the root, then per level the children of exactly the nodes
        // whose hashes differed one level up, down to the segments.
        let mut want = vec![0u32];
        let mut levels_asked = 0;
        for (level, question) in asked.iter().enumerate() {
            let Question::Nodes { level: l, indices } = question else {
                break;
            };
            prop_assert_eq!(usize::from(*l), level);
            prop_assert_eq!(indices, &want);
            levels_asked += 1;
            want = indices
                .iter()
                .filter(|&&i| a[level][i as usize] != b[level][i as usize])
                .flat_map(|&i| shape.children(level, i))
                .collect();
            if want.is_empty() {
                break;
            }
        }
        if a[0] == b[0] {
            prop_assert_eq!(asked.len(), 1);
        } else {
            prop_assert_eq!(levels_asked, shape.level_count());
        }
        // Every node asked below the root has a differing parent, so the cost is bounded
        // by the differences: at most k × fan-out nodes per level.
        let k = expected_segments.len();
        for q in &asked {
            if let Question::Nodes { indices, .. } = q {
                prop_assert!(indices.len() <= (k * shape.fanout() as usize).max(1));
            }
        }

        // The segment questions: exactly the differing segments, ascending, 32 at a time.
        let segments: Vec<&Vec<u32>> = asked
            .iter()
            .filter_map(|q| match q {
                Question::Segments(s) => Some(s),
                Question::Nodes { .. } => None,
            })
            .collect();
        let all: Vec<u32> = segments.iter().flat_map(|s| s.iter().copied()).collect();
        prop_assert_eq!(&all, &expected_segments);
        prop_assert_eq!(compared, expected_segments.len() as u64);
        prop_assert_eq!(segments.len(), expected_segments.len().div_ceil(SEGMENTS_PER_STEP));
        prop_assert!(segments.iter().all(|s| !s.is_empty() && s.len() <= SEGMENTS_PER_STEP));
    }
}

#[test]
fn equal_trees_take_one_question() {
    let map: BTreeMap<Vec<u8>, u64> = (0..500).map(|i| (key(i), digest(i, 0))).collect();
    let mut ours = Replica::new(MerkleShape::DEFAULT, map.clone());
    let mut theirs = Replica::new(MerkleShape::DEFAULT, map);
    let (events, compared) = run(&mut ours, &mut theirs, 8, false);
    assert_eq!(
        events,
        [Event::Asked(Question::Nodes {
            level: 0,
            indices: vec![0]
        })]
    );
    assert_eq!(compared, 0);
}

/// Keys `0..5000`, and a copy that `change` (given the copy and a key index) altered at
/// the first key of each of 100 distinct segments.
fn changed_in_100_segments(
    shape: MerkleShape,
    mut change: impl FnMut(&mut BTreeMap<Vec<u8>, u64>, u32),
) -> (BTreeMap<Vec<u8>, u64>, BTreeMap<Vec<u8>, u64>) {
    let base: BTreeMap<Vec<u8>, u64> = (0..5000).map(|i| (key(i), digest(i, 0))).collect();
    let mut changed = base.clone();
    let mut seen = BTreeSet::new();
    for i in 0..5000 {
        if seen.len() == 100 {
            break;
        }
        if seen.insert(shape.segment_of(&key(i))) {
            change(&mut changed, i);
        }
    }
    (base, changed)
}

#[test]
fn segments_go_32_per_step_each_step_repaired_before_the_next() {
    // One changed key in each of 100 distinct segments.
    let shape = MerkleShape::DEFAULT;
    let (base, changed) = changed_in_100_segments(shape, |map, i| {
        map.insert(key(i), digest(i, 1));
    });
    let mut ours = Replica::new(shape, base);
    let mut theirs = Replica::new(shape, changed);
    let (events, compared) = run(&mut ours, &mut theirs, 1000, false);
    assert_eq!(compared, 100);
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Asked(Question::Segments(s)) => Some(s.len()),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [32, 32, 32, 4]);
    // Segment question, its repairs (one batch: every key fits), the next question...
    let after_descent: Vec<&Event> = events
        .iter()
        .skip_while(|e| matches!(e, Event::Asked(Question::Nodes { .. })))
        .collect();
    assert_eq!(after_descent.len(), 8);
    for pair in after_descent.chunks(2) {
        let (Event::Asked(Question::Segments(asked)), Event::Repaired(repairs)) =
            (pair[0], pair[1])
        else {
            panic!("expected a segment question then its repairs: {pair:?}");
        };
        // Every key of the step differs in its digest: fetched and pushed.
        assert_eq!(repairs.fetch.len(), asked.len());
        assert_eq!(repairs.push, repairs.fetch);
    }
    assert_eq!(ours.map, theirs.map);
}

/// `n` keys of segment `segment` in trees of `shape`, in key order.
fn keys_in_segment(shape: MerkleShape, segment: u32, n: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..)
        .map(key)
        .filter(|k| shape.segment_of(k) == segment)
        .take(n)
        .collect();
    keys.sort();
    keys
}

#[test]
fn repairs_fetch_in_key_order_and_push_the_different_keys_first() {
    let shape = MerkleShape::new(64, 4).unwrap();
    let k = keys_in_segment(shape, 5, 4);
    let ours: BTreeMap<Vec<u8>, u64> =
        [(k[0].clone(), 1), (k[1].clone(), 1), (k[2].clone(), 1)].into();
    let theirs: BTreeMap<Vec<u8>, u64> =
        [(k[1].clone(), 2), (k[2].clone(), 1), (k[3].clone(), 1)].into();
    let mut ours = Replica::new(shape, ours);
    let mut theirs = Replica::new(shape, theirs);
    let (events, compared) = run(&mut ours, &mut theirs, 10, false);
    assert_eq!(compared, 1);
    let repairs: Vec<&Repairs> = events
        .iter()
        .filter_map(|e| match e {
            Event::Repaired(r) => Some(r),
            Event::Asked(_) => None,
        })
        .collect();
    assert_eq!(
        repairs,
        [&Repairs {
            // k1 differs, k3 only theirs: fetched in key order.
            fetch: vec![k[1].clone(), k[3].clone()],
            // k1 differs, then k0 only ours.
            push: vec![k[1].clone(), k[0].clone()],
        }]
    );
    assert_eq!(ours.map, theirs.map);
}

#[test]
fn repairs_go_in_batches_of_at_most_the_batch_size() {
    let shape = MerkleShape::new(64, 4).unwrap();
    let k = keys_in_segment(shape, 9, 10);
    let ours: BTreeMap<Vec<u8>, u64> = k[..7].iter().map(|k| (k.clone(), 1)).collect();
    let theirs: BTreeMap<Vec<u8>, u64> = k[7..].iter().map(|k| (k.clone(), 1)).collect();
    let mut ours = Replica::new(shape, ours);
    let mut theirs = Replica::new(shape, theirs);
    let (events, _) = run(&mut ours, &mut theirs, 3, false);
    let sizes: Vec<(usize, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Repaired(r) => Some((r.fetch.len(), r.push.len())),
            Event::Asked(_) => None,
        })
        .collect();
    assert_eq!(sizes, [(3, 3), (0, 3), (0, 1)]);
    assert_eq!(ours.map, theirs.map);
}

/// A read stops at its byte bound (one object's worth, so that the answer and the push
/// made of it fit in a frame): the keys it did not reach go back to the head of their
/// queue, in order, and make up the next batch. No key is skipped.
#[test]
fn keys_a_read_did_not_reach_go_back_to_the_head_of_their_queue() {
    let shape = MerkleShape::new(64, 4).unwrap();
    let k = keys_in_segment(shape, 9, 6);
    let ours = Replica::new(shape, k[..4].iter().map(|k| (k.clone(), 1)).collect());
    let theirs = Replica::new(shape, k[4..].iter().map(|k| (k.clone(), 1)).collect());
    let (mut exchange, mut step) = Exchange::start(shape);
    while let Step::Ask(question) = step.clone() {
        assert_eq!(
            exchange.answer(Side::Ours, ours.answer(&question)),
            Ok(Step::Wait)
        );
        step = exchange
            .answer(Side::Theirs, theirs.answer(&question))
            .unwrap();
    }
    assert_eq!(step, Step::Repair);
    let first = exchange.take_repairs(3);
    assert_eq!(first.fetch, k[4..].to_vec());
    assert_eq!(first.push, k[..3].to_vec());
    // Our read answered k0 only; the peer's read answered both.
    exchange.requeue(Side::Ours, first.push[1..].to_vec());
    assert_eq!(exchange.repaired(), Step::Wait);
    assert_eq!(exchange.repaired(), Step::Repair);
    assert_eq!(exchange.next_repair_size(3), Some(3));
    let second = exchange.take_repairs(3);
    assert!(second.fetch.is_empty());
    assert_eq!(second.push, k[1..4].to_vec());
    assert_eq!(exchange.repaired(), Step::Done);
}

/// Segment answers are bounded in bytes: a replica lists a prefix of the segments asked
/// (at least one), and the exchange compares the segments both listed and asks again for
/// the rest. One exchange still makes replicas with differences in about 100 segments
/// equal, comparing each segment once.
#[test]
fn segment_answers_cut_short_by_their_byte_bound_are_resumed() {
    let shape = MerkleShape::DEFAULT;
    // Updated on one side, new on the other, removed on the third.
    let (base, changed) = changed_in_100_segments(shape, |map, i| match i % 3 {
        0 => {
            map.insert(key(i), digest(i, 1));
        }
        1 => {
            map.insert(key(10_000 + i), digest(i, 0));
        }
        _ => {
            map.remove(&key(i));
        }
    });
    for (ours_page, theirs_page) in [(3, 5), (7, 2), (1, 1)] {
        let mut ours = Replica::new(shape, base.clone());
        let mut theirs = Replica::new(shape, changed.clone());
        ours.page = ours_page;
        theirs.page = theirs_page;
        let differing = differing_segments(&ours.tree, &theirs.tree).len();
        assert!(differing > 90, "{differing} segments differ");
        let (events, compared) = run(&mut ours, &mut theirs, 1000, ours_page % 2 == 0);
        assert_eq!(ours.map, theirs.map, "pages {ours_page} and {theirs_page}");
        assert_eq!(
            compared, differing as u64,
            "each differing segment compared once"
        );
        let asked: Vec<u32> = questions(&events)
            .into_iter()
            .filter_map(|q| match q {
                Question::Segments(s) => Some(s.clone()),
                Question::Nodes { .. } => None,
            })
            .flat_map(|s| s.into_iter().take(ours_page.min(theirs_page)))
            .collect();
        assert_eq!(
            asked.len(),
            differing,
            "the compared prefixes tile the segments"
        );
        assert!(asked.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn a_segment_answer_that_lists_none_or_not_a_prefix_is_refused() {
    let shape = MerkleShape::new(2, 2).unwrap();
    let start = || {
        let (mut exchange, _) = Exchange::start(shape);
        descend(&mut exchange, &[(&[1], &[2])]);
        let step = descend(&mut exchange, &[(&[1, 1], &[2, 2])]);
        assert_eq!(step, Step::Ask(Question::Segments(vec![0, 1])));
        exchange
    };
    let mut exchange = start();
    exchange
        .answer(Side::Ours, Answer::Segments(vec![(0, Vec::new())]))
        .unwrap();
    assert_eq!(
        exchange.answer(Side::Theirs, Answer::Segments(Vec::new())),
        Err(ExchangeError::NoSegments(Side::Theirs))
    );
    let mut exchange = start();
    exchange
        .answer(Side::Ours, Answer::Segments(vec![(0, Vec::new())]))
        .unwrap();
    assert_eq!(
        exchange.answer(Side::Theirs, Answer::Segments(vec![(1, Vec::new())])),
        Err(ExchangeError::UnaskedSegments(Side::Theirs))
    );
}

// ---------------------------------------------------------------------------------------
// Answers that change or do not fit

fn root_question() -> Question {
    Question::Nodes {
        level: 0,
        indices: vec![0],
    }
}

#[test]
fn a_difference_that_vanishes_during_the_descent_ends_the_exchange() {
    let (mut exchange, step) = Exchange::start(MerkleShape::DEFAULT);
    assert_eq!(step, Step::Ask(root_question()));
    exchange.answer(Side::Ours, Answer::Nodes(vec![1])).unwrap();
    let Step::Ask(Question::Nodes { level: 1, indices }) = exchange
        .answer(Side::Theirs, Answer::Nodes(vec![2]))
        .unwrap()
    else {
        panic!("differing roots: ask for the root's children");
    };
    assert_eq!(indices, (0..32).collect::<Vec<u32>>());
    // Writes landed meanwhile and the children now agree.
    exchange
        .answer(Side::Theirs, Answer::Nodes(vec![7; 32]))
        .unwrap();
    assert_eq!(
        exchange.answer(Side::Ours, Answer::Nodes(vec![7; 32])),
        Ok(Step::Done)
    );
    assert_eq!(exchange.segments_compared(), 0);
}

/// Answer the node questions of a descent with these (ours, theirs) hashes, level by
/// level; the step after the last.
fn descend(exchange: &mut Exchange, levels: &[(&[u64], &[u64])]) -> Step {
    let mut step = Step::Wait;
    for (ours, theirs) in levels {
        exchange
            .answer(Side::Ours, Answer::Nodes(ours.to_vec()))
            .unwrap();
        step = exchange
            .answer(Side::Theirs, Answer::Nodes(theirs.to_vec()))
            .unwrap();
    }
    step
}

#[test]
fn segment_lists_that_agree_despite_their_hashes_need_no_repair() {
    let shape = MerkleShape::new(8, 2).unwrap();
    let (mut exchange, _) = Exchange::start(shape);
    // Descend through one differing path to segment 3.
    let step = descend(
        &mut exchange,
        &[(&[1], &[2]), (&[1, 0], &[2, 0]), (&[0, 1], &[0, 2])],
    );
    assert_eq!(
        step,
        Step::Ask(Question::Nodes {
            level: 3,
            indices: vec![2, 3]
        })
    );
    let step = descend(&mut exchange, &[(&[5, 1], &[5, 2])]);
    assert_eq!(step, Step::Ask(Question::Segments(vec![3])));
    let list = vec![(b"k".to_vec(), 4)];
    exchange
        .answer(Side::Theirs, Answer::Segments(vec![(3, list.clone())]))
        .unwrap();
    assert_eq!(
        exchange.answer(Side::Ours, Answer::Segments(vec![(3, list)])),
        Ok(Step::Done)
    );
    assert_eq!(exchange.next_repair_size(10), None);
    assert_eq!(exchange.take_repairs(10), Repairs::default());
}

#[test]
fn answers_that_do_not_fit_the_question_are_refused() {
    let start = || {
        let (mut exchange, _) = Exchange::start(MerkleShape::DEFAULT);
        exchange.answer(Side::Ours, Answer::Nodes(vec![1])).unwrap();
        exchange
    };

    // Too few or too many hashes.
    let mut exchange = start();
    assert_eq!(
        exchange.answer(Side::Theirs, Answer::Nodes(vec![1, 2])),
        Err(ExchangeError::NodeCountMismatch)
    );
    // The wrong kind of answer.
    let mut exchange = start();
    assert!(matches!(
        exchange.answer(Side::Theirs, Answer::Segments(Vec::new())),
        Err(ExchangeError::Unexpected {
            side: Side::Theirs,
            ..
        })
    ));
    // Two answers from one replica.
    let mut exchange = start();
    assert_eq!(
        exchange.answer(Side::Ours, Answer::Nodes(vec![1])),
        Err(ExchangeError::AnsweredTwice(Side::Ours))
    );

    // Segments that were not asked for.
    let shape = MerkleShape::new(2, 2).unwrap();
    let (mut exchange, _) = Exchange::start(shape);
    let step = descend(&mut exchange, &[(&[1], &[2])]);
    assert_eq!(
        step,
        Step::Ask(Question::Nodes {
            level: 1,
            indices: vec![0, 1]
        })
    );
    let step = descend(&mut exchange, &[(&[1, 0], &[2, 0])]);
    assert_eq!(step, Step::Ask(Question::Segments(vec![0])));
    exchange
        .answer(Side::Ours, Answer::Segments(vec![(0, Vec::new())]))
        .unwrap();
    let refused = exchange
        .answer(Side::Theirs, Answer::Segments(vec![(1, Vec::new())]))
        .unwrap_err();
    assert_eq!(refused, ExchangeError::UnaskedSegments(Side::Theirs));
    // The text `shoal aae status` shows for it.
    assert_eq!(
        refused.to_string(),
        "peer sent segments that were not asked for"
    );
}

#[test]
fn an_answer_while_repairing_is_refused() {
    let shape = MerkleShape::new(2, 2).unwrap();
    let k = keys_in_segment(shape, 0, 1);
    let (mut exchange, _) = Exchange::start(shape);
    let step = descend(&mut exchange, &[(&[1], &[2]), (&[1, 0], &[2, 0])]);
    assert_eq!(step, Step::Ask(Question::Segments(vec![0])));
    exchange
        .answer(
            Side::Ours,
            Answer::Segments(vec![(0, vec![(k[0].clone(), 1)])]),
        )
        .unwrap();
    let step = exchange
        .answer(Side::Theirs, Answer::Segments(vec![(0, Vec::new())]))
        .unwrap();
    assert_eq!(step, Step::Repair);
    assert!(matches!(
        exchange.answer(Side::Theirs, Answer::Nodes(vec![0])),
        Err(ExchangeError::Unexpected { .. })
    ));
    assert_eq!(
        exchange.take_repairs(5),
        Repairs {
            fetch: Vec::new(),
            push: vec![k[0].clone()]
        }
    );
    assert_eq!(exchange.repaired(), Step::Done);
}

// ---------------------------------------------------------------------------------------
// Segment diffs

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
