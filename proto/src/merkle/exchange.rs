//! The exchange between two replicas of a partition, as a state machine without IO: it
//! names the question to ask both replicas next, compares their answers, and queues the
//! keys to copy each way. `engine/aae.rs` drives it against local storage and a peer; the
//! tests in `proto/tests/merkle_exchange/` drive it against two trees in memory.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;

use super::MerkleShape;
use crate::wire::KeyDigests;

/// Differing segments whose key lists are compared in one step: bounds the size of one
/// segment question and its answers.
pub const SEGMENTS_PER_STEP: usize = 32;

/// One of the two replicas of an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The replica that runs the exchange.
    Ours,
    /// The other replica.
    Theirs,
}

impl Side {
    /// The other replica.
    pub fn other(self) -> Side {
        match self {
            Side::Ours => Side::Theirs,
            Side::Theirs => Side::Ours,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Ours => "local storage",
            Side::Theirs => "peer",
        })
    }
}

/// A question the exchange asks of both replicas, the same to each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Question {
    /// The hashes of these nodes at `level` (0 = root), in the order named.
    Nodes {
        /// Tree level, 0 at the root.
        level: u8,
        /// Node indices within the level, ascending.
        indices: Vec<u32>,
    },
    /// The (key, digest) lists of these segments (ascending).
    Segments(Vec<u32>),
}

/// One replica's answer to a [`Question`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Node hashes, in the order asked.
    Nodes(Vec<u64>),
    /// Per segment asked, its (key, digest) pairs: for a prefix of the segments asked,
    /// at least one (an answer stops at the byte bound of a message; the exchange asks
    /// again for the rest).
    Segments(Vec<(u32, KeyDigests)>),
}

/// What the driver of an [`Exchange`] does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask both replicas this question and feed each answer to [`Exchange::answer`].
    Ask(Question),
    /// Nothing to do until the other answer arrives or the repairs in flight end.
    Wait,
    /// Keys to copy are queued: take a batch with [`Exchange::take_repairs`] when the
    /// budget allows ([`Exchange::next_repair_size`] says how many keys it will move).
    Repair,
    /// Nothing left to compare: the exchange is over.
    Done,
}

/// The keys of one repair batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Copy these from the peer into our replica (read theirs, merge into ours; in a
    /// peer-wins exchange, replace ours with theirs, or delete ours if they have none).
    pub fetch: Vec<Vec<u8>>,
    /// Copy these from our replica to the peer (read ours, merge into theirs).
    pub push: Vec<Vec<u8>>,
}

/// Why an exchange cannot go on: an answer that does not answer the question.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// A list of node hashes without one hash per node asked.
    #[error("tree node counts do not match")]
    NodeCountMismatch,
    /// A segment answer that is not a prefix of the segments asked (in their order).
    #[error("{0} sent segments that were not asked for")]
    UnaskedSegments(Side),
    /// A second answer from one replica to one question.
    #[error("{0} answered the same question twice")]
    AnsweredTwice(Side),
    /// An answer of the wrong kind, or one that nothing asked for.
    #[error("{side} answered {answer} to {question}")]
    Unexpected {
        /// Who answered.
        side: Side,
        /// What the exchange was doing.
        question: &'static str,
        /// What came.
        answer: &'static str,
    },
    /// A segment answer listing none of the segments asked (an answer stops at its byte
    /// bound, but after at least one segment, so that the exchange makes progress).
    #[error("{0} listed none of the segments asked")]
    NoSegments(Side),
}

/// The two answers to one question, as they come in.
#[derive(Clone, Debug)]
struct Answers<T> {
    ours: Option<T>,
    theirs: Option<T>,
}

impl<T> Answers<T> {
    fn new() -> Answers<T> {
        Answers {
            ours: None,
            theirs: None,
        }
    }

    /// Record `side`'s answer; both answers once both are in. `Err` if `side` had answered.
    fn fill(&mut self, side: Side, answer: T) -> Result<Option<(T, T)>, ()> {
        let slot = match side {
            Side::Ours => &mut self.ours,
            Side::Theirs => &mut self.theirs,
        };
        if slot.is_some() {
            return Err(());
        }
        *slot = Some(answer);
        match (self.ours.take(), self.theirs.take()) {
            (Some(ours), Some(theirs)) => Ok(Some((ours, theirs))),
            (ours, theirs) => {
                *self = Answers { ours, theirs };
                Ok(None)
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Phase {
    /// Node hashes asked of both replicas.
    Nodes {
        level: u8,
        indices: Vec<u32>,
        answers: Answers<Vec<u64>>,
    },
    /// Segment lists asked of both replicas.
    Segments {
        asked: Vec<u32>,
        answers: Answers<Vec<(u32, KeyDigests)>>,
    },
    /// Copying the keys the last segment comparison found.
    Repairing {
        fetch: VecDeque<Vec<u8>>,
        push: VecDeque<Vec<u8>>,
        in_flight: usize,
    },
    Done,
}

/// One exchange between two replicas whose trees have the same shape. Its cost grows with
/// the differences, not with the data:
///
/// 1. ask both for the root; equal roots end the exchange;
/// 2. descend level by level, asking only for the children of the nodes that differ;
/// 3. at the segments, compare the key lists of the differing segments,
///    [`SEGMENTS_PER_STEP`] at a time ([`diff_segment`]);
/// 4. after each such step, copy what only the peer has or holds differently into our
///    replica and what only we have or hold differently into theirs (object merge is
///    commutative and idempotent, so both ends converge), then go on with the next step.
///
/// Writes may land between the steps: the exchange is best-effort (a difference that
/// appears or vanishes meanwhile is found or dropped by a later exchange).
#[derive(Clone, Debug)]
pub struct Exchange {
    shape: MerkleShape,
    phase: Phase,
    /// Differing segments whose key lists are not yet compared.
    segments_left: VecDeque<u32>,
    segments_compared: u64,
    /// The peer's copy wins every difference ([`Exchange::start_peer_wins`]).
    peer_wins: bool,
}

impl Exchange {
    /// An exchange between trees of `shape`, and its first step: ask for the root.
    pub fn start(shape: MerkleShape) -> (Exchange, Step) {
        let mut exchange = Exchange {
            shape,
            phase: Phase::Done,
            segments_left: VecDeque::new(),
            segments_compared: 0,
            peer_wins: false,
        };
        let step = exchange.ask_nodes(0, vec![0]);
        (exchange, step)
    }

    /// An exchange in which the peer's copy wins every difference, for a node restored
    /// from a backup: every key that differs (held differently, only by us, or only by
    /// the peer) is queued to be read from the peer only ([`Repairs::fetch`]; nothing is
    /// ever pushed), and the driver replaces our copy with what the peer answers (a key
    /// the peer lacks is deleted from ours). Merging instead would keep our old values
    /// next to the peer's, and bring back those whose tombstones were reaped since the
    /// backup.
    pub fn start_peer_wins(shape: MerkleShape) -> (Exchange, Step) {
        let (mut exchange, step) = Exchange::start(shape);
        exchange.peer_wins = true;
        (exchange, step)
    }

    /// Whether the peer's copy wins every difference ([`Exchange::start_peer_wins`]).
    pub fn peer_wins(&self) -> bool {
        self.peer_wins
    }

    /// Take one replica's answer to the question out. Once both are in, compare them and
    /// say what to do next. An answer that does not fit the question is an error, after
    /// which the exchange should be dropped.
    pub fn answer(&mut self, side: Side, answer: Answer) -> Result<Step, ExchangeError> {
        let question = self.phase.question();
        let unexpected = |answer: &Answer| ExchangeError::Unexpected {
            side,
            question,
            answer: answer.name(),
        };
        match (&mut self.phase, answer) {
            (
                Phase::Nodes {
                    level,
                    indices,
                    answers,
                },
                Answer::Nodes(hashes),
            ) => match answers.fill(side, hashes) {
                Err(()) => Err(ExchangeError::AnsweredTwice(side)),
                Ok(None) => Ok(Step::Wait),
                Ok(Some((ours, theirs))) => {
                    let (level, indices) = (*level, std::mem::take(indices));
                    self.compare_nodes(level, &indices, &ours, &theirs)
                }
            },
            (Phase::Segments { asked, answers }, Answer::Segments(lists)) => {
                match answers.fill(side, lists) {
                    Err(()) => Err(ExchangeError::AnsweredTwice(side)),
                    Ok(None) => Ok(Step::Wait),
                    Ok(Some((ours, theirs))) => {
                        let asked = std::mem::take(asked);
                        self.compare_segments(&asked, ours, theirs)
                    }
                }
            }
            (_, answer) => Err(unexpected(&answer)),
        }
    }

    /// Keys the next repair batch of at most `batch` keys per direction will move (the
    /// larger direction), or `None` if no batch may start now: none queued, or one still
    /// in flight (batches go one at a time).
    pub fn next_repair_size(&self, batch: usize) -> Option<usize> {
        match &self.phase {
            Phase::Repairing {
                fetch,
                push,
                in_flight: 0,
            } if !(fetch.is_empty() && push.is_empty()) => {
                Some(fetch.len().max(push.len()).min(batch))
            }
            _ => None,
        }
    }

    /// Take the next repair batch, at most `batch` keys each way (empty unless
    /// [`Exchange::next_repair_size`] is `Some`). Report the end of each non-empty
    /// direction with [`Exchange::repaired`].
    pub fn take_repairs(&mut self, batch: usize) -> Repairs {
        let Phase::Repairing {
            fetch,
            push,
            in_flight: 0,
        } = &mut self.phase
        else {
            return Repairs::default();
        };
        let fetch: Vec<Vec<u8>> = (0..batch).map_while(|_| fetch.pop_front()).collect();
        let push: Vec<Vec<u8>> = (0..batch).map_while(|_| push.pop_front()).collect();
        if let Phase::Repairing { in_flight, .. } = &mut self.phase {
            *in_flight = usize::from(!fetch.is_empty()) + usize::from(!push.is_empty());
        }
        Repairs { fetch, push }
    }

    /// Put keys of the batch in flight that were not copied (a read stops at its byte
    /// bound) back at the head of their queue, in order: `from` is the replica they were
    /// to be read from (the peer for fetches, ours for pushes). Call it before
    /// [`Exchange::repaired`] for that direction.
    pub fn requeue(&mut self, from: Side, keys: Vec<Vec<u8>>) {
        if let Phase::Repairing { fetch, push, .. } = &mut self.phase {
            let queue = match from {
                Side::Theirs => fetch,
                Side::Ours => push,
            };
            for key in keys.into_iter().rev() {
                queue.push_front(key);
            }
        }
    }

    /// One direction of the repair batch in flight is over (copied, or nothing to copy):
    /// what to do next.
    pub fn repaired(&mut self) -> Step {
        if let Phase::Repairing { in_flight, .. } = &mut self.phase {
            *in_flight = in_flight.saturating_sub(1);
        }
        self.after_repairs()
    }

    /// Segments whose key lists were asked for so far.
    pub fn segments_compared(&self) -> u64 {
        self.segments_compared
    }

    /// Whether the exchange is over.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn compare_nodes(
        &mut self,
        level: u8,
        indices: &[u32],
        ours: &[u64],
        theirs: &[u64],
    ) -> Result<Step, ExchangeError> {
        if ours.len() != indices.len() || theirs.len() != indices.len() {
            return Err(ExchangeError::NodeCountMismatch);
        }
        let differing = indices
            .iter()
            .zip(ours.iter().zip(theirs))
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| *i);
        let (level, shape) = (usize::from(level), self.shape);
        if level + 1 >= shape.level_count() {
            self.segments_left = differing.collect();
            return Ok(self.next_segments());
        }
        let children: Vec<u32> = differing.flat_map(|i| shape.children(level, i)).collect();
        if children.is_empty() {
            // Equal roots, or the difference vanished under concurrent writes.
            self.phase = Phase::Done;
            return Ok(Step::Done);
        }
        // `level + 1` is below the leaf level, and a shape has at most 21 levels.
        Ok(self.ask_nodes((level + 1) as u8, children))
    }

    fn ask_nodes(&mut self, level: u8, indices: Vec<u32>) -> Step {
        self.phase = Phase::Nodes {
            level,
            indices: indices.clone(),
            answers: Answers::new(),
        };
        Step::Ask(Question::Nodes { level, indices })
    }

    fn compare_segments(
        &mut self,
        asked: &[u32],
        ours: Vec<(u32, KeyDigests)>,
        theirs: Vec<(u32, KeyDigests)>,
    ) -> Result<Step, ExchangeError> {
        // Each answer lists a prefix of the segments asked, at least one: a replica stops
        // at the byte bound of a message. The segments both listed are compared; the rest
        // are asked again first.
        for (side, lists) in [(Side::Ours, &ours), (Side::Theirs, &theirs)] {
            let prefix =
                lists.len() <= asked.len() && lists.iter().zip(asked).all(|((s, _), a)| s == a);
            if !prefix {
                return Err(ExchangeError::UnaskedSegments(side));
            }
            if lists.is_empty() && !asked.is_empty() {
                return Err(ExchangeError::NoSegments(side));
            }
        }
        let listed = ours.len().min(theirs.len());
        for &segment in asked[listed..].iter().rev() {
            self.segments_left.push_front(segment);
        }
        self.segments_compared -= (asked.len() - listed) as u64;
        let mut fetch = VecDeque::new();
        let mut push = VecDeque::new();
        for ((_, our_list), (_, their_list)) in ours.iter().zip(&theirs) {
            let diff = diff_segment(our_list, their_list);
            if self.peer_wins {
                // Every differing key is read from the peer and replaces ours.
                let mut all: Vec<Vec<u8>> = diff
                    .different
                    .into_iter()
                    .chain(diff.only_theirs)
                    .chain(diff.only_ours)
                    .collect();
                all.sort_unstable();
                fetch.extend(all);
                continue;
            }
            // Fetch in key order; push the keys held differently, then the ones they lack.
            let mut wanted: Vec<Vec<u8>> = diff
                .different
                .iter()
                .chain(&diff.only_theirs)
                .cloned()
                .collect();
            wanted.sort_unstable();
            fetch.extend(wanted);
            push.extend(diff.different);
            push.extend(diff.only_ours);
        }
        self.phase = Phase::Repairing {
            fetch,
            push,
            in_flight: 0,
        };
        Ok(self.after_repairs())
    }

    fn after_repairs(&mut self) -> Step {
        match &self.phase {
            Phase::Repairing { in_flight, .. } if *in_flight > 0 => Step::Wait,
            Phase::Repairing { fetch, push, .. } if !(fetch.is_empty() && push.is_empty()) => {
                Step::Repair
            }
            Phase::Repairing { .. } => self.next_segments(),
            Phase::Nodes { .. } | Phase::Segments { .. } => Step::Wait,
            Phase::Done => Step::Done,
        }
    }

    /// Ask for the next [`SEGMENTS_PER_STEP`] differing segments, or finish.
    fn next_segments(&mut self) -> Step {
        if self.segments_left.is_empty() {
            self.phase = Phase::Done;
            return Step::Done;
        }
        let take = self.segments_left.len().min(SEGMENTS_PER_STEP);
        let batch: Vec<u32> = self.segments_left.drain(..take).collect();
        self.segments_compared += batch.len() as u64;
        self.phase = Phase::Segments {
            asked: batch.clone(),
            answers: Answers::new(),
        };
        Step::Ask(Question::Segments(batch))
    }
}

impl Phase {
    /// What the exchange is waiting for, for errors.
    fn question(&self) -> &'static str {
        match self {
            Phase::Nodes { .. } => "a node question",
            Phase::Segments { .. } => "a segment question",
            Phase::Repairing { .. } => "no question (repairing)",
            Phase::Done => "no question (done)",
        }
    }
}

impl Answer {
    fn name(&self) -> &'static str {
        match self {
            Answer::Nodes(_) => "node hashes",
            Answer::Segments(_) => "segment lists",
        }
    }

    /// Bytes of the keys and digests in a segment answer (0 for node hashes): the digest
    /// traffic of an exchange.
    pub fn digest_bytes(&self) -> u64 {
        match self {
            Answer::Nodes(_) => 0,
            Answer::Segments(lists) => lists
                .iter()
                .flat_map(|(_, list)| list)
                .map(|(key, _)| key.len() as u64 + 8)
                .sum(),
        }
    }
}

/// Which keys of a segment differ between two replicas, and in which direction. Each list is
/// sorted and holds each key once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentDiff {
    /// Keys only we have: send our objects to the peer.
    pub only_ours: Vec<Vec<u8>>,
    /// Keys only the peer has: fetch its objects.
    pub only_theirs: Vec<Vec<u8>>,
    /// Keys both have with different digests: exchange both ways and merge.
    pub different: Vec<Vec<u8>>,
}

impl SegmentDiff {
    /// Whether the two lists agree.
    pub fn is_empty(&self) -> bool {
        self.only_ours.is_empty() && self.only_theirs.is_empty() && self.different.is_empty()
    }

    /// Keys to repair, all directions together.
    pub fn len(&self) -> usize {
        self.only_ours.len() + self.only_theirs.len() + self.different.len()
    }
}

/// Compare our (key, digest) list of a segment with the peer's. The lists may come in any
/// order. A key listed twice on one side with different digests (which a correct peer never
/// sends) counts as `different`, so that it is repaired rather than trusted.
/// O((n + m) log(n + m)), for the segment's keys only.
pub fn diff_segment(ours: &[(Vec<u8>, u64)], theirs: &[(Vec<u8>, u64)]) -> SegmentDiff {
    let ours = canonical(ours);
    let theirs = canonical(theirs);
    let mut diff = SegmentDiff::default();
    let (mut i, mut j) = (0, 0);
    while i < ours.len() && j < theirs.len() {
        let (ok, od) = ours[i];
        let (tk, td) = theirs[j];
        match ok.cmp(tk) {
            Ordering::Less => {
                diff.only_ours.push(ok.to_vec());
                i += 1;
            }
            Ordering::Greater => {
                diff.only_theirs.push(tk.to_vec());
                j += 1;
            }
            Ordering::Equal => {
                if od.is_none() || od != td {
                    diff.different.push(ok.to_vec());
                }
                i += 1;
                j += 1;
            }
        }
    }
    diff.only_ours
        .extend(ours[i..].iter().map(|(k, _)| k.to_vec()));
    diff.only_theirs
        .extend(theirs[j..].iter().map(|(k, _)| k.to_vec()));
    diff
}

/// Sorted by key, one entry per key; `None` for a key listed with conflicting digests.
fn canonical(entries: &[(Vec<u8>, u64)]) -> Vec<(&[u8], Option<u64>)> {
    let mut refs: Vec<(&[u8], u64)> = entries.iter().map(|(k, d)| (k.as_slice(), *d)).collect();
    refs.sort_unstable();
    let mut out: Vec<(&[u8], Option<u64>)> = Vec::with_capacity(refs.len());
    for (key, digest) in refs {
        match out.last_mut() {
            Some((last, d)) if *last == key => {
                if *d != Some(digest) {
                    *d = None;
                }
            }
            _ => out.push((key, Some(digest))),
        }
    }
    out
}
