//! The anti-entropy exchange against a peer that answers anything. Our replica answers
//! correctly from a fixed set of keys; the peer's answers are the fuzz input: a first byte
//! whose bits say, step by step, which replica answers first, then length-prefixed
//! response frames, decoded as the node decodes them. An answer that does not decode or is
//! not a node or segment answer ends the exchange (as the node ends it). Checks, whatever
//! the peer says:
//!
//! - no panic, and an answer that does not fit the question is a typed error;
//! - every question is one a correct node serves (level and indices inside the tree's
//!   shape, ascending, at most `MAX_AAE_BATCH` of them; segments inside the shape, at most
//!   `SEGMENTS_PER_STEP`);
//! - the exchange never stalls: once both answers are in, or a repair batch is over, it
//!   asks, repairs or ends;
//! - repairs push only keys we have and fetch only keys the peer listed, in batches of at
//!   most the size asked.
#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shoal_fuzz::{answer, next_frame, our_pairs, tree_of, Pairs, REPAIR_BATCH};
use shoal_proto::{
    merkle::{Answer, Exchange, Question, Side, Step, SEGMENTS_PER_STEP},
    wire::{decode_response, AaeResponse, PeerResponse, Response, MAX_AAE_BATCH},
    MerkleTree, AAE_SHAPE,
};

fn ours() -> &'static (Pairs, MerkleTree) {
    static OURS: OnceLock<(Pairs, MerkleTree)> = OnceLock::new();
    OURS.get_or_init(|| {
        let pairs = our_pairs();
        let tree = tree_of(&pairs);
        (pairs, tree)
    })
}

fn check_question(question: &Question) {
    let ascending = |v: &[u32]| v.windows(2).all(|w| w[0] < w[1]);
    match question {
        Question::Nodes { level, indices } => {
            // Levels run from the root (0) down to the segments' own hashes.
            let width = AAE_SHAPE
                .level_width(usize::from(*level))
                .expect("a level of the tree");
            assert!(!indices.is_empty() && indices.len() <= MAX_AAE_BATCH);
            assert!(ascending(indices), "indices not ascending: {indices:?}");
            assert!(indices.iter().all(|i| *i < width), "index out of range");
        }
        Question::Segments(segments) => {
            assert!(!segments.is_empty() && segments.len() <= SEGMENTS_PER_STEP);
            assert!(ascending(segments), "segments not ascending: {segments:?}");
            assert!(segments.iter().all(|s| *s < AAE_SHAPE.segments()));
        }
    }
}

/// The peer's next answer, or `None` where the node would end the exchange.
fn their_answer(input: &mut &[u8]) -> Option<Answer> {
    let frame = next_frame(input)?;
    match decode_response(frame).ok()? {
        Response::Peer(PeerResponse::Aae(AaeResponse::Nodes(hashes))) => {
            Some(Answer::Nodes(hashes))
        }
        Response::Peer(PeerResponse::Aae(AaeResponse::Segments(lists))) => {
            Some(Answer::Segments(lists))
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&order, mut input)) = data.split_first() else {
        return;
    };
    let (pairs, tree) = ours();
    let our_keys: BTreeSet<&[u8]> = pairs.iter().map(|(k, _)| k.as_slice()).collect();
    let mut listed_by_them: BTreeSet<Vec<u8>> = BTreeSet::new();

    let (mut exchange, mut step) = Exchange::start(AAE_SHAPE);
    let mut round = 0u32;
    loop {
        match step {
            Step::Done => {
                assert!(exchange.is_done());
                return;
            }
            Step::Wait => panic!("the exchange waits with nothing in flight"),
            Step::Ask(question) => {
                check_question(&question);
                let Some(theirs) = their_answer(&mut input) else {
                    return;
                };
                if let Answer::Segments(lists) = &theirs {
                    listed_by_them
                        .extend(lists.iter().flat_map(|(_, l)| l).map(|(k, _)| k.clone()));
                }
                let mine = match answer(tree, pairs, &question) {
                    AaeResponse::Nodes(h) => Answer::Nodes(h),
                    AaeResponse::Segments(s) => Answer::Segments(s),
                    _ => unreachable!("a question is answered with nodes or segments"),
                };
                let their_turn_first = order >> (round % 8) & 1 == 1;
                round += 1;
                let (first, second) = if their_turn_first {
                    ((Side::Theirs, theirs), (Side::Ours, mine))
                } else {
                    ((Side::Ours, mine), (Side::Theirs, theirs))
                };
                match exchange.answer(first.0, first.1) {
                    Ok(Step::Wait) => {}
                    Ok(other) => panic!("one answer in, the exchange went on: {other:?}"),
                    // A wrong kind of answer from the peer; the node drops the exchange.
                    Err(_) => return,
                }
                match exchange.answer(second.0, second.1) {
                    Ok(next) => step = next,
                    Err(_) => return,
                }
            }
            Step::Repair => {
                let size = exchange
                    .next_repair_size(REPAIR_BATCH)
                    .expect("a repair step has a batch to take");
                assert!((1..=REPAIR_BATCH).contains(&size));
                let repairs = exchange.take_repairs(REPAIR_BATCH);
                assert_eq!(size, repairs.fetch.len().max(repairs.push.len()));
                assert!(repairs.push.iter().all(|k| our_keys.contains(k.as_slice())));
                assert!(repairs.fetch.iter().all(|k| listed_by_them.contains(k)));
                assert_eq!(
                    exchange.next_repair_size(REPAIR_BATCH),
                    None,
                    "a batch is in flight"
                );
                let directions =
                    usize::from(!repairs.fetch.is_empty()) + usize::from(!repairs.push.is_empty());
                for left in (0..directions).rev() {
                    step = exchange.repaired();
                    if left > 0 {
                        assert_eq!(step, Step::Wait, "a direction is still in flight");
                    }
                }
            }
        }
    }
});
