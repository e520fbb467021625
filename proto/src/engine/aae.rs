//! Anti-entropy: Merkle-tree exchanges between the replicas of each partition, tombstone
//! reaping, and admission control for both.
//!
//! # Exchanges
//!
//! Every replica keeps one Merkle tree per partition it replicates (in its executor,
//! updated on every write; see `shoal_node::executor`). For each pair of primaries of a
//! partition, the one with the smaller node id starts an exchange at least every
//! `aae_interval`:
//!
//! 1. compare the roots; equal roots end the exchange;
//! 2. descend level by level, asking only for the children of nodes that differ;
//! 3. at the leaves, exchange the (key, digest) lists of differing segments only;
//! 4. fetch what the peer has that we lack or hold differently, merge it locally; push
//!    what we have that the peer lacks or holds differently; both sides end equal.
//!
//! The cost is proportional to the number of differing segments, not to the data.
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
//! raised by a tenth otherwise). Repair traffic draws from key and byte token buckets
//! refilled at the configured rates times the multiplier; below a quarter, no new
//! exchange or reap starts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::time::Duration;

use shoal_ring::{NodeId, PartitionId};

use super::{Engine, SendError, Timer, Waiter};
use crate::merkle::MerkleShape;
use crate::object::Object;
use crate::storage_ops::{StorageOp, StorageReply};
use crate::time::Time;
use crate::wire::{AaeRequest, AaeResponse, KeyDigests, PeerRequest, PeerResponse};

/// Leaf segments of every partition's Merkle tree (part of the on-disk key layout).
pub const AAE_SEGMENTS: u32 = crate::merkle::DEFAULT_SEGMENTS;
/// Children per inner node of the Merkle tree.
pub const AAE_FANOUT: u32 = crate::merkle::DEFAULT_FANOUT;
/// Segments whose key lists travel in one exchange step.
const SEGMENTS_PER_STEP: usize = 32;
/// Objects looked at per reap scan call.
pub(super) const REAP_SCAN_LIMIT: usize = 4096;
/// Lowest budget multiplier; also the threshold (x 2.5) below which nothing new starts.
pub(super) const MIN_MULTIPLIER: f64 = 0.1;

/// The shape of every partition's tree.
pub fn aae_shape() -> MerkleShape {
    MerkleShape::DEFAULT
}

/// Node counts per level, root (level 0) first.
pub fn level_sizes() -> Vec<u32> {
    let shape = aae_shape();
    (0..shape.level_count())
        .filter_map(|l| shape.level_width(l))
        .collect()
}

/// The children (at `level + 1`) of node `index` at `level`.
pub fn children(level: usize, index: u32) -> Range<u32> {
    let sizes = level_sizes();
    let (Some(&here), Some(&below)) = (sizes.get(level), sizes.get(level + 1)) else {
        return 0..0;
    };
    if index >= here {
        return 0..0;
    }
    let per = below / here;
    index * per..(index + 1) * per
}

/// A token bucket on the engine's clock.
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Time,
}

impl Bucket {
    fn new(rate: u64, now: Time) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Time, multiplier: f64) {
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
        Duration::from_secs_f64(((n - self.tokens) / rate).min(60.0))
    }
}

/// What the last exchange of a (partition, peer) pair did.
#[derive(Debug, Clone)]
pub(super) struct ExchangeRecord {
    pub(super) at: Time,
    pub(super) result: String,
    pub(super) keys_repaired: u64,
}

#[derive(Debug)]
enum Step {
    Nodes {
        level: u8,
        indices: Vec<u32>,
        ours: Option<Vec<u64>>,
        theirs: Option<Vec<u64>>,
    },
    Segments {
        batch: Vec<u32>,
        ours: Option<Vec<(u32, KeyDigests)>>,
        theirs: Option<Vec<(u32, KeyDigests)>>,
    },
    Repair {
        fetch: VecDeque<Vec<u8>>,
        push: VecDeque<Vec<u8>>,
        inflight: usize,
    },
}

#[derive(Debug)]
struct Exchange {
    partition: PartitionId,
    peer: NodeId,
    started: Time,
    step: Step,
    /// Differing segments not yet compared key by key.
    segments_left: Vec<u32>,
    keys_repaired: u64,
    leaves_compared: u64,
    bytes: u64,
    resume_at: Option<Time>,
}

/// Which half of an exchange step a command answers.
#[derive(Clone, Debug)]
pub(super) enum AaePart {
    OursNodes,
    TheirsNodes,
    OursSegments,
    TheirsSegments,
    Fetched,
    MergedLocal,
    ReadLocal,
    Pushed,
}

/// Anti-entropy state of one engine.
#[derive(Debug)]
pub(super) struct Aae {
    exchanges: BTreeMap<u64, Exchange>,
    next_exchange: u64,
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
}

impl Aae {
    pub(super) fn new(keys_per_second: u64, bytes_per_second: u64, now: Time) -> Aae {
        Aae {
            exchanges: BTreeMap::new(),
            next_exchange: 1,
            last: BTreeMap::new(),
            keys: Bucket::new(keys_per_second, now),
            bytes: Bucket::new(bytes_per_second, now),
            multiplier: 1.0,
            fg_latency: 0.0,
            window_sum: 0.0,
            window_count: 0,
            reap_next: 0,
            reap: None,
            reap_cursor: BTreeMap::new(),
            reap_last: BTreeMap::new(),
            cursor: 0,
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
        const ALPHA: f64 = 0.3;
        if self.window_count > 0 {
            let mean = self.window_sum / self.window_count as f64;
            self.fg_latency = self.fg_latency * (1.0 - ALPHA) + mean * ALPHA;
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

fn digest_map(list: &KeyDigests) -> BTreeMap<&[u8], u64> {
    list.iter().map(|(k, d)| (k.as_slice(), *d)).collect()
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
        let now = self.now;
        // Admission control: AIMD on the foreground latency and load.
        self.aae.end_window();
        let loaded = self.inflight() * 2 >= self.cfg.limits.max_inflight_requests;
        let slow = self.aae.fg_latency > self.cfg.aae.latency_target.as_secs_f64();
        self.aae.multiplier = if slow || loaded {
            (self.aae.multiplier / 2.0).max(MIN_MULTIPLIER)
        } else {
            (self.aae.multiplier + 0.1).min(1.0)
        };
        let m = self.aae.multiplier;
        self.aae.keys.refill(now, m);
        self.aae.bytes.refill(now, m);
        metrics::gauge!("shoal_aae_budget_ratio").set(m);
        metrics::gauge!("shoal_aae_exchanges_running").set(self.aae.running() as f64);
        if !self.cfg.aae.enabled || m < MIN_MULTIPLIER * 2.5 {
            return;
        }
        self.start_due_exchanges();
        self.start_due_reap();
    }

    fn start_due_exchanges(&mut self) {
        let partitions = self.replica_partitions.clone();
        if partitions.is_empty() {
            return;
        }
        let running: BTreeSet<(PartitionId, NodeId)> = self
            .aae
            .exchanges
            .values()
            .map(|e| (e.partition, e.peer.clone()))
            .collect();
        let total = partitions.len();
        let mut looked = 0;
        while self.aae.running() < self.cfg.aae.max_concurrent_exchanges && looked < total {
            let p = partitions[self.aae.cursor % total];
            self.aae.cursor = (self.aae.cursor + 1) % total;
            looked += 1;
            for peer in self.primaries(p) {
                if peer <= self.me
                    || !self.membership.is_up(&peer)
                    || running.contains(&(p, peer.clone()))
                {
                    continue;
                }
                let due = match self.aae.last.get(&p).and_then(|m| m.get(&peer)) {
                    None => true,
                    Some(r) => self.now.saturating_since(r.at) >= self.cfg.aae.interval,
                };
                if due && self.aae.running() < self.cfg.aae.max_concurrent_exchanges {
                    self.start_exchange(p, peer);
                }
            }
        }
    }

    fn start_exchange(&mut self, partition: PartitionId, peer: NodeId) {
        let id = self.aae.next_exchange;
        self.aae.next_exchange += 1;
        self.aae.exchanges.insert(
            id,
            Exchange {
                partition,
                peer,
                started: self.now,
                step: Step::Nodes {
                    level: 0,
                    indices: vec![0],
                    ours: None,
                    theirs: None,
                },
                segments_left: Vec::new(),
                keys_repaired: 0,
                leaves_compared: 0,
                bytes: 0,
                resume_at: None,
            },
        );
        self.issue_nodes(id, 0, vec![0]);
    }

    fn issue_nodes(&mut self, id: u64, level: u8, indices: Vec<u32>) {
        let Some(ex) = self.aae.exchanges.get(&id) else {
            return;
        };
        let (partition, peer) = (ex.partition, ex.peer.clone());
        self.storage(
            StorageOp::TreeNodes {
                partition,
                level,
                indices: indices.clone(),
            },
            Waiter::Aae {
                exchange: id,
                part: AaePart::OursNodes,
            },
        );
        let timeout = self.cfg.replication.rpc_timeout;
        self.send(
            peer,
            PeerRequest::Aae(AaeRequest::Nodes {
                partition,
                level,
                indices,
            }),
            timeout,
            Waiter::Aae {
                exchange: id,
                part: AaePart::TheirsNodes,
            },
        );
    }

    fn issue_segments(&mut self, id: u64) {
        let Some(ex) = self.aae.exchanges.get_mut(&id) else {
            return;
        };
        if ex.segments_left.is_empty() {
            self.finish_exchange(id, Ok(()));
            return;
        }
        let take = ex.segments_left.len().min(SEGMENTS_PER_STEP);
        let batch: Vec<u32> = ex.segments_left.drain(..take).collect();
        ex.leaves_compared += batch.len() as u64;
        ex.step = Step::Segments {
            batch: batch.clone(),
            ours: None,
            theirs: None,
        };
        let (partition, peer) = (ex.partition, ex.peer.clone());
        self.storage(
            StorageOp::Segments {
                partition,
                segments: batch.clone(),
            },
            Waiter::Aae {
                exchange: id,
                part: AaePart::OursSegments,
            },
        );
        let timeout = self.cfg.replication.rpc_timeout;
        self.send(
            peer,
            PeerRequest::Aae(AaeRequest::Segments {
                partition,
                segments: batch,
            }),
            timeout,
            Waiter::Aae {
                exchange: id,
                part: AaePart::TheirsSegments,
            },
        );
    }

    pub(super) fn on_aae_storage(
        &mut self,
        id: u64,
        part: AaePart,
        result: Result<StorageReply, String>,
    ) {
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                self.finish_exchange(id, Err(format!("local storage: {e}")));
                return;
            }
        };
        match (part, result) {
            (AaePart::OursNodes, StorageReply::TreeNodes(h)) => {
                if let Some(Exchange {
                    step: Step::Nodes { ours, .. },
                    ..
                }) = self.aae.exchanges.get_mut(&id)
                {
                    *ours = Some(h);
                }
                self.nodes_progress(id);
            }
            (AaePart::OursSegments, StorageReply::Segments(s)) => {
                if let Some(Exchange {
                    step: Step::Segments { ours, .. },
                    ..
                }) = self.aae.exchanges.get_mut(&id)
                {
                    *ours = Some(s);
                }
                self.segments_progress(id);
            }
            (AaePart::MergedLocal, StorageReply::MergedMany { changed, bytes }) => {
                if let Some(ex) = self.aae.exchanges.get_mut(&id) {
                    ex.keys_repaired += changed;
                    ex.bytes += bytes;
                    metrics::counter!("shoal_aae_keys_repaired_total", "direction" => "fetched")
                        .increment(changed);
                    if let Step::Repair { inflight, .. } = &mut ex.step {
                        *inflight = inflight.saturating_sub(1);
                    }
                }
                self.repair_progress(id);
            }
            (AaePart::ReadLocal, StorageReply::Objects(objects)) => {
                let present: Vec<(Vec<u8>, Object)> = objects
                    .into_iter()
                    .filter_map(|(k, o)| o.map(|o| (k, o)))
                    .collect();
                let Some(ex) = self.aae.exchanges.get_mut(&id) else {
                    return;
                };
                if present.is_empty() {
                    if let Step::Repair { inflight, .. } = &mut ex.step {
                        *inflight = inflight.saturating_sub(1);
                    }
                    self.repair_progress(id);
                    return;
                }
                let size: u64 = present
                    .iter()
                    .map(|(k, o)| (k.len() + o.data_bytes()) as u64)
                    .sum();
                ex.bytes += size;
                self.aae.bytes.tokens -= size as f64;
                metrics::counter!("shoal_aae_bytes_total", "direction" => "sent").increment(size);
                let (partition, peer) = (ex.partition, ex.peer.clone());
                let timeout = self.cfg.replication.rpc_timeout;
                self.send(
                    peer,
                    PeerRequest::Aae(AaeRequest::Push {
                        partition,
                        objects: present,
                    }),
                    timeout,
                    Waiter::Aae {
                        exchange: id,
                        part: AaePart::Pushed,
                    },
                );
            }
            (part, other) => self.finish_exchange(
                id,
                Err(format!("unexpected storage reply to {part:?}: {other:?}")),
            ),
        }
    }

    pub(super) fn on_aae_send(
        &mut self,
        id: u64,
        part: AaePart,
        result: Result<PeerResponse, SendError>,
    ) {
        let response = match result {
            Ok(PeerResponse::Aae(r)) => r,
            Ok(PeerResponse::Error(e)) => {
                self.finish_exchange(id, Err(format!("peer: {e}")));
                return;
            }
            Ok(other) => {
                self.finish_exchange(id, Err(format!("unexpected answer {other:?}")));
                return;
            }
            Err(e) => {
                self.finish_exchange(id, Err(format!("peer unreachable: {e:?}")));
                return;
            }
        };
        match (part, response) {
            (AaePart::TheirsNodes, AaeResponse::Nodes(h)) => {
                if let Some(Exchange {
                    step: Step::Nodes { theirs, .. },
                    ..
                }) = self.aae.exchanges.get_mut(&id)
                {
                    *theirs = Some(h);
                }
                self.nodes_progress(id);
            }
            (AaePart::TheirsSegments, AaeResponse::Segments(s)) => {
                if let Some(Exchange {
                    step: Step::Segments { theirs, .. },
                    ..
                }) = self.aae.exchanges.get_mut(&id)
                {
                    *theirs = Some(s);
                }
                self.segments_progress(id);
            }
            (AaePart::Fetched, AaeResponse::Objects(objects)) => {
                let present: Vec<(Vec<u8>, Object)> = objects
                    .into_iter()
                    .filter_map(|(k, o)| o.map(|o| (k, o)))
                    .collect();
                let Some(ex) = self.aae.exchanges.get_mut(&id) else {
                    return;
                };
                let size: u64 = present
                    .iter()
                    .map(|(k, o)| (k.len() + o.data_bytes()) as u64)
                    .sum();
                ex.bytes += size;
                self.aae.bytes.tokens -= size as f64;
                metrics::counter!("shoal_aae_bytes_total", "direction" => "received")
                    .increment(size);
                if present.is_empty() {
                    if let Step::Repair { inflight, .. } = &mut ex.step {
                        *inflight = inflight.saturating_sub(1);
                    }
                    self.repair_progress(id);
                    return;
                }
                let partition = ex.partition;
                let max_object_bytes = self.cfg.limits.max_object_bytes;
                self.storage(
                    StorageOp::MergeMany {
                        partition,
                        objects: present,
                        max_object_bytes,
                    },
                    Waiter::Aae {
                        exchange: id,
                        part: AaePart::MergedLocal,
                    },
                );
            }
            (AaePart::Pushed, AaeResponse::Pushed(changed)) => {
                if let Some(ex) = self.aae.exchanges.get_mut(&id) {
                    ex.keys_repaired += changed;
                    metrics::counter!("shoal_aae_keys_repaired_total", "direction" => "pushed")
                        .increment(changed);
                    if let Step::Repair { inflight, .. } = &mut ex.step {
                        *inflight = inflight.saturating_sub(1);
                    }
                }
                self.repair_progress(id);
            }
            (part, other) => {
                self.finish_exchange(id, Err(format!("unexpected answer to {part:?}: {other:?}")))
            }
        }
    }

    fn nodes_progress(&mut self, id: u64) {
        let Some(ex) = self.aae.exchanges.get_mut(&id) else {
            return;
        };
        let Step::Nodes {
            level,
            indices,
            ours: Some(ours),
            theirs: Some(theirs),
        } = &ex.step
        else {
            return;
        };
        if ours.len() != indices.len() || theirs.len() != indices.len() {
            self.finish_exchange(id, Err("tree node counts do not match".into()));
            return;
        }
        let level = *level;
        let differing: Vec<u32> = indices
            .iter()
            .zip(ours.iter().zip(theirs.iter()))
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| *i)
            .collect();
        if differing.is_empty() {
            // Equal roots (or the difference vanished under concurrent writes).
            self.finish_exchange(id, Ok(()));
            return;
        }
        let leaf_level = level_sizes().len() - 1;
        if usize::from(level) == leaf_level {
            ex.segments_left = differing;
            self.issue_segments(id);
        } else {
            let next: Vec<u32> = differing
                .iter()
                .flat_map(|&i| children(usize::from(level), i))
                .collect();
            ex.step = Step::Nodes {
                level: level + 1,
                indices: next.clone(),
                ours: None,
                theirs: None,
            };
            self.issue_nodes(id, level + 1, next);
        }
    }

    fn segments_progress(&mut self, id: u64) {
        let Some(ex) = self.aae.exchanges.get_mut(&id) else {
            return;
        };
        let Step::Segments {
            batch,
            ours: Some(ours),
            theirs: Some(theirs),
        } = &ex.step
        else {
            return;
        };
        if theirs.iter().any(|(s, _)| !batch.contains(s)) {
            self.finish_exchange(id, Err("peer sent segments that were not asked for".into()));
            return;
        }
        let mut fetch = VecDeque::new();
        let mut push = VecDeque::new();
        let theirs_by_seg: BTreeMap<u32, &KeyDigests> =
            theirs.iter().map(|(s, l)| (*s, l)).collect();
        let empty = Vec::new();
        for (seg, our_list) in ours {
            let their_list = theirs_by_seg.get(seg).copied().unwrap_or(&empty);
            let mine = digest_map(our_list);
            let other = digest_map(their_list);
            for (k, d) in &other {
                match mine.get(k) {
                    Some(m) if m == d => {}
                    Some(_) => {
                        fetch.push_back(k.to_vec());
                        push.push_back(k.to_vec());
                    }
                    None => fetch.push_back(k.to_vec()),
                }
            }
            for k in mine.keys() {
                if !other.contains_key(k) {
                    push.push_back(k.to_vec());
                }
            }
        }
        let digest_bytes: u64 = ours
            .iter()
            .chain(theirs.iter())
            .flat_map(|(_, l)| l.iter())
            .map(|(k, _)| k.len() as u64 + 8)
            .sum();
        ex.bytes += digest_bytes;
        metrics::counter!("shoal_aae_bytes_total", "direction" => "digests")
            .increment(digest_bytes);
        ex.step = Step::Repair {
            fetch,
            push,
            inflight: 0,
        };
        self.repair_progress(id);
    }

    fn repair_progress(&mut self, id: u64) {
        let batch = self.cfg.aae.batch;
        let multiplier = self.aae.multiplier;
        let now = self.now;
        self.aae.keys.refill(now, multiplier);
        self.aae.bytes.refill(now, multiplier);
        let Some(ex) = self.aae.exchanges.get_mut(&id) else {
            return;
        };
        let Step::Repair {
            fetch,
            push,
            inflight,
        } = &mut ex.step
        else {
            return;
        };
        if fetch.is_empty() && push.is_empty() {
            if *inflight == 0 {
                self.issue_segments(id);
            }
            return;
        }
        if *inflight > 0 || ex.resume_at.is_some() {
            return;
        }
        // Budget: wait until a batch's worth of keys (and a positive byte balance) is there.
        let want = fetch.len().max(push.len()).min(batch) as f64;
        let wait = self
            .aae
            .keys
            .wait_for(want, multiplier)
            .max(self.aae.bytes.wait_for(0.0, multiplier));
        if !wait.is_zero() {
            let at = now + wait;
            ex.resume_at = Some(at);
            self.timers.insert((at, Timer::AaeResume(id)));
            return;
        }
        let fetch_keys: Vec<Vec<u8>> = (0..batch).map_while(|_| fetch.pop_front()).collect();
        let push_keys: Vec<Vec<u8>> = (0..batch).map_while(|_| push.pop_front()).collect();
        self.aae.keys.tokens -= (fetch_keys.len() + push_keys.len()) as f64;
        let (partition, peer) = (ex.partition, ex.peer.clone());
        if !fetch_keys.is_empty() {
            *inflight += 1;
        }
        if !push_keys.is_empty() {
            *inflight += 1;
        }
        let timeout = self.cfg.replication.rpc_timeout;
        if !fetch_keys.is_empty() {
            self.send(
                peer,
                PeerRequest::Aae(AaeRequest::Fetch {
                    partition,
                    keys: fetch_keys,
                }),
                timeout,
                Waiter::Aae {
                    exchange: id,
                    part: AaePart::Fetched,
                },
            );
        }
        if !push_keys.is_empty() {
            self.storage(
                StorageOp::ReadMany {
                    partition,
                    keys: push_keys,
                },
                Waiter::Aae {
                    exchange: id,
                    part: AaePart::ReadLocal,
                },
            );
        }
    }

    pub(super) fn on_aae_resume(&mut self, id: u64) {
        if let Some(ex) = self.aae.exchanges.get_mut(&id) {
            ex.resume_at = None;
        }
        self.repair_progress(id);
    }

    fn finish_exchange(&mut self, id: u64, result: Result<(), String>) {
        let Some(ex) = self.aae.exchanges.remove(&id) else {
            return;
        };
        if let Some(at) = ex.resume_at {
            self.timers.remove(&(at, Timer::AaeResume(id)));
        }
        let label = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!("shoal_aae_exchanges_total", "result" => label).increment(1);
        metrics::counter!("shoal_aae_leaves_compared_total").increment(ex.leaves_compared);
        metrics::histogram!("shoal_aae_exchange_duration_seconds")
            .record(self.now.saturating_since(ex.started).as_secs_f64());
        let text = match &result {
            Ok(()) => format!("ok: {} keys repaired", ex.keys_repaired),
            Err(e) => format!("failed: {e}"),
        };
        self.aae.last.entry(ex.partition).or_default().insert(
            ex.peer.clone(),
            ExchangeRecord {
                at: self.now,
                result: text,
                keys_repaired: ex.keys_repaired,
            },
        );
        // Results of commands still in flight for this exchange find no exchange and are
        // dropped. Start the next due exchange now rather than at the next tick, so that
        // a node catches up on all its partitions within one interval.
        if self.cfg.aae.enabled && self.aae.multiplier >= MIN_MULTIPLIER * 2.5 {
            self.start_due_exchanges();
        }
    }
}
