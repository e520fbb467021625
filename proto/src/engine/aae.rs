//! Anti-entropy: Merkle-tree exchanges between the replicas of each partition, tombstone
//! reaping, and admission control for both.
//!
//! # Exchanges
//!
//! Every replica keeps one Merkle tree per partition it replicates (in its executor,
//! updated on every write; see `shoal_executor`). For each pair of primaries of a
//! partition, the one with the smaller node id starts an exchange at least every
//! `aae_interval`:
//!
//! 1. compare the roots; equal roots end the exchange;
//! 2. descend level by level, asking only for the children of nodes that differ;
//! 3. at the leaves, exchange the (key, digest) lists of differing segments only;
//! 4. fetch what the peer has that we lack or hold differently, merge it locally; push
//!    what we have that the peer lacks or holds differently; both sides end equal.
//!
//! The cost is proportional to the number of differing segments, not to the data. The
//! steps are [`crate::merkle::Exchange`]'s; this module asks each of its questions of both
//! replicas as one [`AaeRequest`] (the peer over the network, our own storage through
//! [`Engine::aae_op`], the op that serves the same request from a peer), feeds the answers
//! back, and meters the repairs it queues.
//!
//! # Reaping
//!
//! The first primary of a partition scans it for tombstones older than
//! `tombstone_grace`, asks every other primary for the digest of those keys, and deletes
//! (everywhere, each replica only if its digest is still the same) the keys whose
//! tombstone object is identical on every replica. Hints that could carry an older value
//! expire by the age of their content (`hint_ttl` < `tombstone_grace`), so no hint can
//! bring a reaped key back; read repair only spreads what some replica still holds.
//!
//! # Admission control
//!
//! Background work yields to foreground requests (Dynamo §6.5): a moving average of the
//! coordinator latency of client requests drives a budget multiplier (AIMD: halved while
//! the average is above `aae_latency_target` or the node is near its in-flight bound,
//! raised by a tenth otherwise; [`MIN_MULTIPLIER`] to 1). Repair traffic draws from key and
//! byte token buckets refilled at the configured rates times the multiplier; below
//! [`START_THRESHOLD`], no new exchange or reap starts unless it is overdue.
//!
//! # Progress
//!
//! Background work never stops for good. Under sustained load, an exchange whose pair last
//! succeeded more than [`OVERDUE_INTERVALS`] intervals ago still starts, one at a time,
//! and repairs at the floor of the budget ([`MIN_MULTIPLIER`]); likewise a reap scan. So a
//! partition's replicas are compared at least every `OVERDUE_INTERVALS × aae.interval`
//! plus one exchange, however busy the node. Repair batches are bounded in bytes as well
//! as keys (a read stops at one object's worth, `limits.max_object_bytes`; the rest of
//! its keys go in the next batch), and so are segment lists (whole segments up to the
//! same bound; the exchange asks again for the rest), so that every message fits in a
//! frame however large the values and however many the keys. [`crate::metrics::AAE_LAST_EXCHANGE_AGE_SECONDS`] shows how long the
//! least recently compared pair has waited.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use shoal_ring::{NodeId, PartitionId};

use super::{Engine, SendError, Timer, Waiter};
use crate::error::RequestError;
use crate::merkle::{Answer, Exchange, ExchangeError, MerkleShape, Question, Side, Step};
use crate::object::Object;
use crate::storage_ops::{StorageOp, StorageResult};
use crate::time::{Monotonic, Now, Time};
use crate::wire::{AaeRequest, AaeResponse, PeerRequest, PeerResponse};

/// The shape of every partition's Merkle tree (its segment count is part of the on-disk
/// key layout).
pub const AAE_SHAPE: MerkleShape = MerkleShape::DEFAULT;
/// Leaf segments of every partition's Merkle tree.
pub const AAE_SEGMENTS: u32 = AAE_SHAPE.segments();
/// Objects looked at per reap scan call.
pub(super) const REAP_SCAN_LIMIT: usize = 4096;

// Admission control (see the module documentation).

/// Lowest budget multiplier: background work slows down but never stops for good.
const MIN_MULTIPLIER: f64 = 0.1;
/// Below this multiplier no new exchange or reap starts.
const START_THRESHOLD: f64 = 0.25;
/// Added to the multiplier on a tick that is neither slow nor loaded (up to 1.0).
const ADDITIVE_INCREASE: f64 = 0.1;
/// The multiplier is multiplied by this on a slow or loaded tick.
const MULTIPLICATIVE_DECREASE: f64 = 0.5;
/// Weight of a tick's mean latency in the moving average of foreground latency.
const LATENCY_SMOOTHING: f64 = 0.3;
/// A node with at least this fraction of `max_inflight_requests` in flight is loaded.
const LOADED_FRACTION: f64 = 0.5;
/// Past this many intervals without a successful exchange, a pair is compared even while
/// the budget is below [`START_THRESHOLD`] (the minimum rate under load); likewise a
/// partition's reap scan past this many reap intervals.
pub(super) const OVERDUE_INTERVALS: u32 = 2;
/// The longest an exchange waits for its repair budget before looking again.
const MAX_BUDGET_WAIT: Duration = Duration::from_secs(60);

/// Names one exchange of this engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ExchangeId(u64);

/// A token bucket on the engine's clock.
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Monotonic,
}

impl Bucket {
    fn new(rate: u64, now: Monotonic) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Monotonic, multiplier: f64) {
        let dt = now.saturating_since(self.last).as_secs_f64();
        self.last = now;
        // Capacity: one second of budget at the full rate.
        self.tokens = (self.tokens + dt * self.rate * multiplier).min(self.rate);
    }

    /// Time until `n` tokens are available at the current multiplier.
    fn wait_for(&self, n: f64, multiplier: f64) -> Duration {
        if self.tokens >= n {
            return Duration::ZERO;
        }
        let rate = (self.rate * multiplier).max(1.0);
        Duration::from_secs_f64(((n - self.tokens) / rate).min(MAX_BUDGET_WAIT.as_secs_f64()))
    }
}

/// Why an exchange ended before it was through.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum ExchangeFailure {
    /// Our own storage failed a step.
    #[error("local storage: {0}")]
    LocalStorage(String),
    /// The peer answered a step with an error.
    #[error("peer: {0}")]
    Peer(RequestError),
    /// The peer did not answer.
    #[error("peer unreachable: {0:?}")]
    Unreachable(SendError),
    /// An answer of a kind the step does not take.
    #[error("unexpected answer to {part:?}: {answer}")]
    UnexpectedAnswer {
        /// The step.
        part: AaePart,
        /// The answer, as debug text.
        answer: String,
    },
    /// An answer that does not fit the exchange's question.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

/// What the last exchange of a (partition, peer) pair did.
#[derive(Debug, Clone)]
pub(super) struct ExchangeRecord {
    pub(super) at: Time,
    pub(super) outcome: Result<(), ExchangeFailure>,
    pub(super) keys_repaired: u64,
    /// When an exchange of the pair last succeeded (kept across failures).
    pub(super) last_ok: Option<Time>,
}

impl fmt::Display for ExchangeRecord {
    /// `ok: N keys repaired` or `failed: why`, as `shoal aae status` shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(()) => write!(f, "ok: {} keys repaired", self.keys_repaired),
            Err(e) => write!(f, "failed: {e}"),
        }
    }
}

/// An exchange in progress: the state machine and what the engine keeps around it.
#[derive(Debug)]
struct RunningExchange {
    partition: PartitionId,
    peer: NodeId,
    started: Monotonic,
    exchange: Exchange,
    keys_repaired: u64,
    /// When a repair batch waiting for budget is looked at again.
    resume_at: Option<Monotonic>,
    /// The keys of the read in flight from each replica (a read may answer a prefix).
    reading: BTreeMap<Side, Vec<Vec<u8>>>,
    /// A partition transfer: this node pulls the partition from an old replica (see
    /// `placement.rs`); counted as such and reported to the sync when it ends.
    transfer: bool,
}

/// Which message of an exchange a command answers. Both replicas are asked the same
/// [`AaeRequest`]s — our own storage through the op that serves a peer's request
/// ([`Engine::aae_op`]) — so a part names only the step and the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AaePart {
    /// An answer to the exchange's current [`Question`].
    Answer(Side),
    /// The objects of keys to copy, read from this replica.
    Read(Side),
    /// Copied objects merged into this replica.
    Merged(Side),
}

/// Anti-entropy state of one engine.
#[derive(Debug)]
pub(super) struct Aae {
    exchanges: BTreeMap<ExchangeId, RunningExchange>,
    next_exchange: ExchangeId,
    pub(super) last: BTreeMap<PartitionId, BTreeMap<NodeId, ExchangeRecord>>,
    keys: Bucket,
    bytes: Bucket,
    multiplier: f64,
    fg_latency: f64,
    /// Foreground latencies (sum, count) since the last tick.
    window_sum: f64,
    window_count: u64,
    /// Where the next reap scan starts looking in the partition list (round robin).
    pub(super) reap_next: usize,
    pub(super) reap: Option<super::reap::Reap>,
    pub(super) reap_cursor: BTreeMap<PartitionId, Vec<u8>>,
    pub(super) reap_last: BTreeMap<PartitionId, Time>,
    cursor: usize,
    /// When the engine started: the age of a pair that never exchanged (or a partition
    /// never scanned for reaping) is counted from it.
    pub(super) started: Time,
}

impl Aae {
    pub(super) fn new(keys_per_second: u64, bytes_per_second: u64, now: Now) -> Aae {
        Aae {
            exchanges: BTreeMap::new(),
            next_exchange: ExchangeId(1),
            last: BTreeMap::new(),
            keys: Bucket::new(keys_per_second, now.mono),
            bytes: Bucket::new(bytes_per_second, now.mono),
            multiplier: 1.0,
            fg_latency: 0.0,
            window_sum: 0.0,
            window_count: 0,
            reap_next: 0,
            reap: None,
            reap_cursor: BTreeMap::new(),
            reap_last: BTreeMap::new(),
            cursor: 0,
            started: now.wall,
        }
    }

    /// Record the latency of an answered foreground request.
    pub(super) fn observe_foreground(&mut self, latency: Duration) {
        self.window_sum += latency.as_secs_f64();
        self.window_count += 1;
    }

    /// Fold the foreground latencies seen since the last tick into the moving average.
    /// A tick with no foreground request pulls the average halfway to zero: an idle node
    /// is not a loaded one, however slow its last requests were.
    fn end_window(&mut self) {
        if self.window_count > 0 {
            let mean = self.window_sum / self.window_count as f64;
            self.fg_latency =
                self.fg_latency * (1.0 - LATENCY_SMOOTHING) + mean * LATENCY_SMOOTHING;
        } else {
            self.fg_latency /= 2.0;
        }
        self.window_sum = 0.0;
        self.window_count = 0;
    }

    /// The current background budget multiplier (1.0 = full budget).
    pub(super) fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// Exchanges running now.
    pub(super) fn running(&self) -> usize {
        self.exchanges.len()
    }

    /// Transfer exchanges running now.
    pub(super) fn transfers_running(&self) -> usize {
        self.exchanges.values().filter(|e| e.transfer).count()
    }

    /// The (partition, peer) pairs of the exchanges running now.
    pub(super) fn pairs_running(&self) -> BTreeSet<(PartitionId, NodeId)> {
        self.exchanges
            .values()
            .map(|e| (e.partition, e.peer.clone()))
            .collect()
    }

    /// Forgets what it recorded of a partition this node no longer holds (its running
    /// exchanges end when their answers come back and find the partition gone).
    pub(super) fn forget_partition(&mut self, p: PartitionId) {
        self.last.remove(&p);
        self.reap_cursor.remove(&p);
        self.reap_last.remove(&p);
    }

    /// The partitions of the peer-wins exchanges running now.
    pub(super) fn peer_wins_running(&self) -> BTreeSet<PartitionId> {
        self.exchanges
            .values()
            .filter(|e| e.exchange.peer_wins())
            .map(|e| e.partition)
            .collect()
    }

    /// Whether the budget allows starting new background work (overdue work starts
    /// anyway, one at a time).
    pub(super) fn may_start(&self) -> bool {
        self.multiplier >= START_THRESHOLD
    }

    /// When the pair last exchanged successfully, or when the engine started.
    fn last_ok(&self, partition: PartitionId, peer: &NodeId) -> Time {
        self.last
            .get(&partition)
            .and_then(|m| m.get(peer))
            .and_then(|r| r.last_ok)
            .unwrap_or(self.started)
    }
}

/// Whether `a` or `b` still pulls `partition` (see [`Engine::pulls_in_progress`]).
fn pair_pulling(
    pulling: &BTreeSet<(PartitionId, NodeId)>,
    partition: PartitionId,
    a: &NodeId,
    b: &NodeId,
) -> bool {
    pulling.contains(&(partition, a.clone())) || pulling.contains(&(partition, b.clone()))
}

/// Anti-entropy counters an engine exposes (for tests and the simulator).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AaeStats {
    /// Exchanges running now.
    pub running: usize,
    /// The background budget multiplier (1.0 = full budget).
    pub budget_multiplier: f64,
    /// Moving average of foreground coordinator latency, in seconds.
    pub foreground_latency_seconds: f64,
}

impl Engine {
    /// Anti-entropy counters.
    pub fn aae_stats(&self) -> AaeStats {
        AaeStats {
            running: self.aae.running(),
            budget_multiplier: self.aae.multiplier(),
            foreground_latency_seconds: self.aae.fg_latency,
        }
    }

    pub(super) fn aae_tick(&mut self) {
        let now = self.mono;
        // Admission control: AIMD on the foreground latency and load.
        self.aae.end_window();
        let loaded = self.inflight() as f64
            >= self.cfg.limits.max_inflight_requests as f64 * LOADED_FRACTION;
        let slow = self.aae.fg_latency > self.cfg.aae.latency_target.as_secs_f64();
        self.aae.multiplier = if slow || loaded {
            (self.aae.multiplier * MULTIPLICATIVE_DECREASE).max(MIN_MULTIPLIER)
        } else {
            (self.aae.multiplier + ADDITIVE_INCREASE).min(1.0)
        };
        let m = self.aae.multiplier;
        self.aae.keys.refill(now, m);
        self.aae.bytes.refill(now, m);
        metrics::gauge!(crate::metrics::AAE_BUDGET_RATIO).set(m);
        metrics::gauge!(crate::metrics::AAE_EXCHANGES_RUNNING).set(self.aae.running() as f64);
        if self.restoring() {
            // A restored node runs only its peer-wins exchanges, whatever `aae.enabled`
            // says, and never reaps (see `restore.rs`).
            self.restore_tick();
            return;
        }
        if !self.cfg.aae.enabled {
            return;
        }
        // Computed once per tick: both the age and the starts skip these pairs.
        let pulling = self.pulls_in_progress();
        metrics::gauge!(crate::metrics::AAE_LAST_EXCHANGE_AGE_SECONDS)
            .set(self.oldest_exchange_age(&pulling).as_secs_f64());
        self.start_due_exchanges(&pulling);
        self.send_reap_deletes();
        self.start_due_reap();
    }

    /// The pairs this node compares: for each partition it holds, its fellow replicas
    /// (in every layout version in use) with a larger id, except where either side
    /// still pulls the partition ([`Engine::pulls_in_progress`]).
    fn exchange_pairs(
        &self,
        pulling: &BTreeSet<(PartitionId, NodeId)>,
    ) -> Vec<(PartitionId, NodeId)> {
        self.replica_partitions
            .iter()
            .flat_map(|&p| {
                self.write_union(p)
                    .into_iter()
                    .filter(|peer| *peer > self.me)
                    .map(move |peer| (p, peer))
            })
            .filter(|(p, peer)| !pair_pulling(pulling, *p, &self.me, peer))
            .collect()
    }

    /// How long the least recently successful pair this node compares has waited.
    pub(super) fn oldest_exchange_age(
        &self,
        pulling: &BTreeSet<(PartitionId, NodeId)>,
    ) -> Duration {
        self.exchange_pairs(pulling)
            .iter()
            .map(|(p, peer)| self.now.saturating_since(self.aae.last_ok(*p, peer)))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Whether a pair has gone [`OVERDUE_INTERVALS`] intervals without a successful
    /// exchange, so that it is compared even while the budget is low.
    fn exchange_overdue(&self, partition: PartitionId, peer: &NodeId) -> bool {
        self.now.saturating_since(self.aae.last_ok(partition, peer))
            >= self.cfg.aae.interval * OVERDUE_INTERVALS
    }

    fn start_due_exchanges(&mut self, pulling: &BTreeSet<(PartitionId, NodeId)>) {
        let partitions = self.replica_partitions.clone();
        if partitions.is_empty() || self.restoring() {
            return;
        }
        let running: BTreeSet<(PartitionId, NodeId)> = self
            .aae
            .exchanges
            .values()
            .map(|e| (e.partition, e.peer.clone()))
            .collect();
        // Below the start threshold only overdue pairs start, one exchange at a time.
        let starved = !self.aae.may_start();
        let limit = if starved {
            1
        } else {
            self.cfg.aae.max_concurrent_exchanges
        };
        let total = partitions.len();
        let mut looked = 0;
        while self.aae.running() < limit && looked < total {
            let p = partitions[self.aae.cursor % total];
            self.aae.cursor = (self.aae.cursor + 1) % total;
            looked += 1;
            if self.placement.dropping.contains(&p) {
                continue;
            }
            for peer in self.write_union(p) {
                if peer <= self.me
                    || !self.membership.is_up(&peer)
                    || running.contains(&(p, peer.clone()))
                    || pair_pulling(pulling, p, &self.me, &peer)
                {
                    continue;
                }
                let due = match self.aae.last.get(&p).and_then(|m| m.get(&peer)) {
                    None => true,
                    Some(r) => self.now.saturating_since(r.at) >= self.cfg.aae.interval,
                };
                let overdue = due && self.exchange_overdue(p, &peer);
                if due && (!starved || overdue) && self.aae.running() < limit {
                    if starved {
                        metrics::counter!(crate::metrics::AAE_OVERDUE_STARTS_TOTAL, "kind" => "exchange")
                            .increment(1);
                    }
                    self.start_exchange(p, peer, false);
                }
            }
        }
    }

    /// Start an exchange with `peer`; with `peer_wins`, one in which the peer's copy
    /// replaces ours on every difference ([`Exchange::start_peer_wins`]).
    pub(super) fn start_exchange(&mut self, partition: PartitionId, peer: NodeId, peer_wins: bool) {
        self.start_exchange_as(partition, peer, peer_wins, false);
    }

    /// Start a transfer: an exchange of `partition` with its old replica `source`, which
    /// copies into this node what the source has (and, as any exchange, pushes what the
    /// source lacks: a merge, harmless). Through the same admission control and repair
    /// budget as anti-entropy.
    pub(super) fn start_transfer_exchange(&mut self, partition: PartitionId, source: NodeId) {
        self.start_exchange_as(partition, source, false, true);
    }

    fn start_exchange_as(
        &mut self,
        partition: PartitionId,
        peer: NodeId,
        peer_wins: bool,
        transfer: bool,
    ) {
        let id = self.aae.next_exchange;
        self.aae.next_exchange = ExchangeId(id.0 + 1);
        let (exchange, step) = if peer_wins {
            Exchange::start_peer_wins(AAE_SHAPE)
        } else {
            Exchange::start(AAE_SHAPE)
        };
        self.aae.exchanges.insert(
            id,
            RunningExchange {
                partition,
                peer,
                started: self.mono,
                exchange,
                keys_repaired: 0,
                resume_at: None,
                reading: BTreeMap::new(),
                transfer,
            },
        );
        self.drive_exchange(id, step);
    }

    /// Carry out what the exchange asks for next.
    fn drive_exchange(&mut self, id: ExchangeId, step: Step) {
        match step {
            Step::Ask(question) => {
                for side in [Side::Ours, Side::Theirs] {
                    let question = question.clone();
                    self.ask(id, AaePart::Answer(side), |partition| match question {
                        Question::Nodes { level, indices } => AaeRequest::Nodes {
                            partition,
                            level,
                            indices,
                        },
                        Question::Segments(segments) => AaeRequest::Segments {
                            partition,
                            segments,
                        },
                    });
                }
            }
            Step::Wait => {}
            Step::Repair => self.repair_progress(id),
            Step::Done => self.finish_exchange(id, Ok(())),
        }
    }

    /// Ask the replica `part` names the `request` made for the exchange's partition: our
    /// own storage runs the op that serves the same request from a peer.
    fn ask(
        &mut self,
        id: ExchangeId,
        part: AaePart,
        request: impl FnOnce(PartitionId) -> AaeRequest,
    ) {
        let Some(ex) = self.aae.exchanges.get(&id) else {
            return;
        };
        let (partition, peer) = (ex.partition, ex.peer.clone());
        let request = request(partition);
        let side = match part {
            AaePart::Answer(side) | AaePart::Read(side) | AaePart::Merged(side) => side,
        };
        let waiter = Waiter::Aae { exchange: id, part };
        match side {
            Side::Ours => {
                let op = self.aae_op(request);
                // An exchange that outlived its partition here (dropped or being
                // dropped: the node holds it no more) must not write into it again.
                if op.data_partition().is_some()
                    && (!self.holds(&self.me, partition)
                        || self.placement.dropping.contains(&partition))
                {
                    let why = format!("partition {partition} is no longer held here");
                    self.finish_exchange(id, Err(ExchangeFailure::LocalStorage(why)));
                    return;
                }
                self.storage(op, waiter);
            }
            Side::Theirs => {
                let timeout = self.cfg.replication.rpc_timeout;
                self.send(peer, PeerRequest::Aae(request), timeout, waiter);
            }
        }
    }

    /// The outcome of a step asked of our own storage.
    pub(super) fn on_aae_storage(&mut self, id: ExchangeId, part: AaePart, result: StorageResult) {
        let answer = match result {
            Ok(reply) => {
                AaeResponse::try_from(reply).map_err(|other| ExchangeFailure::UnexpectedAnswer {
                    part,
                    answer: format!("{other:?}"),
                })
            }
            Err(e) => Err(ExchangeFailure::LocalStorage(e.to_string())),
        };
        self.on_aae_answer(id, part, answer);
    }

    /// The outcome of a step asked of the peer.
    pub(super) fn on_aae_send(
        &mut self,
        id: ExchangeId,
        part: AaePart,
        result: Result<PeerResponse, SendError>,
    ) {
        let answer = match result {
            Ok(PeerResponse::Aae(r)) => Ok(r),
            Ok(PeerResponse::Error(e)) => Err(ExchangeFailure::Peer(e)),
            Ok(other) => Err(ExchangeFailure::UnexpectedAnswer {
                part,
                answer: format!("{other:?}"),
            }),
            Err(e) => Err(ExchangeFailure::Unreachable(e)),
        };
        self.on_aae_answer(id, part, answer);
    }

    /// One replica's answer to one step, whichever replica it was.
    fn on_aae_answer(
        &mut self,
        id: ExchangeId,
        part: AaePart,
        answer: Result<AaeResponse, ExchangeFailure>,
    ) {
        let Some(ex) = self.aae.exchanges.get_mut(&id) else {
            // Results of commands still in flight for a finished exchange are dropped.
            return;
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(failure) => {
                self.finish_exchange(id, Err(failure));
                return;
            }
        };
        match (part, answer) {
            (AaePart::Answer(side), AaeResponse::Nodes(hashes)) => {
                let step = ex.exchange.answer(side, Answer::Nodes(hashes));
                self.exchange_step(id, step);
            }
            (AaePart::Answer(side), AaeResponse::Segments(lists)) => {
                let answer = Answer::Segments(lists);
                metrics::counter!(crate::metrics::AAE_BYTES_TOTAL, "direction" => "digests")
                    .increment(answer.digest_bytes());
                let step = ex.exchange.answer(side, answer);
                self.exchange_step(id, step);
            }
            (AaePart::Read(from), AaeResponse::Objects(objects)) => {
                let asked = ex.reading.remove(&from).unwrap_or_default();
                // A read answers a prefix of the keys asked (it stops at its byte bound),
                // at least one of them; the rest go back to the queue.
                let prefix = !objects.is_empty()
                    && objects.len() <= asked.len()
                    && objects.iter().zip(&asked).all(|((k, _), a)| k == a);
                if !prefix {
                    self.finish_exchange(
                        id,
                        Err(ExchangeFailure::UnexpectedAnswer {
                            part,
                            answer: format!(
                                "{} objects that are not a prefix of the {} keys asked",
                                objects.len(),
                                asked.len()
                            ),
                        }),
                    );
                    return;
                }
                if objects.len() < asked.len() {
                    let rest = asked[objects.len()..].to_vec();
                    metrics::counter!(crate::metrics::AAE_BATCHES_SPLIT_TOTAL).increment(1);
                    // The keys not read were charged to the budget: give them back.
                    self.aae.keys.tokens += rest.len() as f64;
                    ex.exchange.requeue(from, rest);
                }
                if ex.exchange.peer_wins() {
                    // The peer's answer replaces ours key by key, absent keys included
                    // (a key the peer lacks is deleted from ours).
                    self.replace_ours(id, objects);
                    return;
                }
                let present: Vec<(Vec<u8>, Object)> = objects
                    .into_iter()
                    .filter_map(|(k, o)| o.map(|o| (k, o)))
                    .collect();
                if present.is_empty() {
                    let step = ex.exchange.repaired();
                    self.drive_exchange(id, step);
                    return;
                }
                let size: u64 = present
                    .iter()
                    .map(|(k, o)| (k.len() + o.data_bytes()) as u64)
                    .sum();
                self.aae.bytes.tokens -= size as f64;
                let direction = match from {
                    Side::Ours => "sent",
                    Side::Theirs => "received",
                };
                if ex.transfer && from == Side::Theirs {
                    metrics::counter!(crate::metrics::TRANSFER_BYTES_TOTAL).increment(size);
                    self.placement.note_transfer_bytes(size);
                }
                metrics::counter!(crate::metrics::AAE_BYTES_TOTAL, "direction" => direction)
                    .increment(size);
                self.ask(id, AaePart::Merged(from.other()), |partition| {
                    AaeRequest::Push {
                        partition,
                        objects: present,
                    }
                });
            }
            (AaePart::Merged(into), AaeResponse::Pushed(changed)) => {
                ex.keys_repaired += changed;
                if ex.transfer && into == Side::Ours {
                    metrics::counter!(crate::metrics::TRANSFER_KEYS_TOTAL).increment(changed);
                }
                let direction = match into {
                    Side::Ours => "fetched",
                    Side::Theirs => "pushed",
                };
                metrics::counter!(crate::metrics::AAE_KEYS_REPAIRED_TOTAL, "direction" => direction)
                    .increment(changed);
                let step = ex.exchange.repaired();
                self.drive_exchange(id, step);
            }
            (part, other) => self.finish_exchange(
                id,
                Err(ExchangeFailure::UnexpectedAnswer {
                    part,
                    answer: format!("{other:?}"),
                }),
            ),
        }
    }

    /// A peer-wins exchange: replace our copies of the keys read from the peer with its
    /// copies (deleting those it lacks), as one local op.
    fn replace_ours(&mut self, id: ExchangeId, objects: Vec<(Vec<u8>, Option<Object>)>) {
        let Some(ex) = self.aae.exchanges.get(&id) else {
            return;
        };
        let partition = ex.partition;
        let size: u64 = objects
            .iter()
            .map(|(k, o)| (k.len() + o.as_ref().map_or(0, Object::data_bytes)) as u64)
            .sum();
        self.aae.bytes.tokens -= size as f64;
        metrics::counter!(crate::metrics::AAE_BYTES_TOTAL, "direction" => "received")
            .increment(size);
        self.storage(
            StorageOp::ReplaceMany { partition, objects },
            Waiter::Aae {
                exchange: id,
                part: AaePart::Merged(Side::Ours),
            },
        );
    }

    fn exchange_step(&mut self, id: ExchangeId, step: Result<Step, ExchangeError>) {
        match step {
            Ok(step) => self.drive_exchange(id, step),
            Err(e) => self.finish_exchange(id, Err(e.into())),
        }
    }

    /// Start the next repair batch if none is in flight and the budget allows; otherwise
    /// look again when it will.
    fn repair_progress(&mut self, id: ExchangeId) {
        let batch = self.cfg.aae.batch;
        let multiplier = self.aae.multiplier;
        let now = self.mono;
        self.aae.keys.refill(now, multiplier);
        self.aae.bytes.refill(now, multiplier);
        let Some(ex) = self.aae.exchanges.get_mut(&id) else {
            return;
        };
        if ex.resume_at.is_some() {
            return;
        }
        let Some(want) = ex.exchange.next_repair_size(batch) else {
            return;
        };
        // Budget: wait until a batch's worth of keys (and a positive byte balance) is there.
        let wait = self
            .aae
            .keys
            .wait_for(want as f64, multiplier)
            .max(self.aae.bytes.wait_for(0.0, multiplier));
        if !wait.is_zero() {
            let at = now + wait;
            ex.resume_at = Some(at);
            self.timers.insert((at, Timer::AaeResume(id)));
            return;
        }
        let repairs = ex.exchange.take_repairs(batch);
        self.aae.keys.tokens -= (repairs.fetch.len() + repairs.push.len()) as f64;
        for (from, keys) in [(Side::Theirs, repairs.fetch), (Side::Ours, repairs.push)] {
            if !keys.is_empty() {
                if let Some(ex) = self.aae.exchanges.get_mut(&id) {
                    ex.reading.insert(from, keys.clone());
                }
                self.ask(id, AaePart::Read(from), |partition| AaeRequest::Fetch {
                    partition,
                    keys,
                });
            }
        }
    }

    pub(super) fn on_aae_resume(&mut self, id: ExchangeId) {
        if let Some(ex) = self.aae.exchanges.get_mut(&id) {
            ex.resume_at = None;
        }
        self.repair_progress(id);
    }

    fn finish_exchange(&mut self, id: ExchangeId, outcome: Result<(), ExchangeFailure>) {
        let Some(ex) = self.aae.exchanges.remove(&id) else {
            return;
        };
        if let Some(at) = ex.resume_at {
            self.timers.remove(&(at, Timer::AaeResume(id)));
        }
        let ok = outcome.is_ok();
        let label = if ok { "ok" } else { "failed" };
        metrics::counter!(crate::metrics::AAE_EXCHANGES_TOTAL, "result" => label).increment(1);
        metrics::counter!(crate::metrics::AAE_LEAVES_COMPARED_TOTAL)
            .increment(ex.exchange.segments_compared());
        metrics::histogram!(crate::metrics::AAE_EXCHANGE_DURATION_SECONDS)
            .record(self.mono.saturating_since(ex.started).as_secs_f64());
        let last_ok = if outcome.is_ok() {
            Some(self.now)
        } else {
            self.aae
                .last
                .get(&ex.partition)
                .and_then(|m| m.get(&ex.peer))
                .and_then(|r| r.last_ok)
        };
        if ex.exchange.peer_wins() {
            self.on_restore_exchange(ex.partition, outcome.is_ok());
        }
        if ex.transfer {
            self.on_transfer_exchange(ex.partition, &ex.peer, ok);
        }
        self.aae.last.entry(ex.partition).or_default().insert(
            ex.peer,
            ExchangeRecord {
                at: self.now,
                outcome,
                keys_repaired: ex.keys_repaired,
                last_ok,
            },
        );
        // Results of commands still in flight for this exchange find no exchange and are
        // dropped. Start the next due exchange now rather than at the next tick, so that
        // a node catches up on all its partitions within one interval (only overdue ones
        // while the budget is low).
        if self.restoring() {
            // A failed restore exchange is tried again at the next tick, not at once.
            if ok {
                self.restore_tick();
            }
        } else if self.cfg.aae.enabled {
            let pulling = self.pulls_in_progress();
            self.start_due_exchanges(&pulling);
        }
    }
}
