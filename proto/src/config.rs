//! Settings of the replication engine, grouped in the sections of the node's TOML file,
//! and their cross-field validation.
//!
//! Each section is defined once, here: the node's config file embeds these structs as its
//! `[replication]`, `[handoff]`, `[membership]`, `[aae]` and `[limits]` tables, and the
//! simulator builds the same structs. A few settings the engine itself never reads (the
//! node's tree verification, request queue and storage threads) live in the section the
//! file puts them in, so that every section has a single definition.

use std::time::Duration;

use crate::wire::{MAX_REQUEST_TIMEOUT, MIN_REQUEST_TIMEOUT};
use serde::{Deserialize, Serialize};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// The largest `limits.max_object_bytes` a node may be configured with. The SDK receives
/// frames of [`MAX_FRAME_BYTES`], so any object a node can store stays readable.
pub const MAX_OBJECT_BYTES: usize = 16 << 20;

/// Room in a frame beyond the object it carries: the key, the context, the wire envelope.
/// A get's answer (values and context) is never larger than the encoded object it answers
/// from, which holds the same values and clock plus dots and timestamps.
pub const FRAME_OVERHEAD_BYTES: usize = 64 << 10;

/// The frame limit that fits the largest object any node may store: what the SDK accepts,
/// and the most a node's derived frame limit can be.
pub const MAX_FRAME_BYTES: usize = MAX_OBJECT_BYTES + FRAME_OVERHEAD_BYTES;

/// Settings of one node's replication engine: one struct per section of the config file.
/// [`EngineConfig::validate`] checks them at start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Quorums and timeouts (`[replication]`).
    pub replication: ReplicationConfig,
    /// Hinted handoff (`[handoff]`).
    pub handoff: HandoffConfig,
    /// Membership gossip and failure detection (`[membership]`).
    pub membership: MembershipConfig,
    /// Anti-entropy and tombstone reaping (`[aae]`).
    pub aae: AaeConfig,
    /// Size limits and bounds (`[limits]`).
    pub limits: LimitsConfig,
}

/// Replication defaults and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Replicas per key (N).
    pub n: u8,
    /// Default read quorum (R), overridable per request.
    pub r: u8,
    /// Default write quorum (W), the coordinator's own store included; overridable per
    /// request.
    pub w: u8,
    /// Default primaries required among the R read replies (PR).
    pub pr: u8,
    /// Default primaries required among the W write acks (PW).
    pub pw: u8,
    /// How long a coordinator waits for its quorum before answering `Timeout`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Timeout of one node-to-node request.
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
    /// After a read is answered, how long replies are still collected for read repair.
    #[serde(with = "humantime_serde")]
    pub read_repair_window: Duration,
    /// Deletes are kept as tombstones at least this long (and until every replica has
    /// them) before they are reaped.
    #[serde(with = "humantime_serde")]
    pub tombstone_grace: Duration,
    /// The largest difference between any two members' wall clocks that the
    /// time-based rules must stay safe under (NTP-synchronised clocks stay well within
    /// the 10 s default).
    ///
    /// Two rules compare a timestamp written by one node's clock with another node's
    /// clock: a tombstone may be reaped once the reaper's clock is `tombstone_grace` past
    /// the tombstone's timestamp (the coordinator's clock when it was written), and a hint
    /// expires once its holder's clock is `handoff.ttl` past its newest value's timestamp.
    /// A value a tombstone superseded was written before it in real time, but with clocks
    /// up to `S` apart its timestamp can read up to `S` later than the tombstone's, and
    /// the reaper's clock can run up to `S` ahead of the hint holder's. So when a
    /// tombstone is reaped, a hint of a superseded value has age at least
    /// `tombstone_grace - 2 S` on its holder's clock; validation requires
    /// `tombstone_grace > handoff.ttl + 2 × max_clock_skew`, so that it is always expired
    /// by then and can never be read, merged or delivered after the reap. It also requires
    /// `handoff.ttl > max_clock_skew`, so that a hint of a write coordinated just now by
    /// a node whose clock is behind is never expired on arrival (it would be refused,
    /// and the write placed elsewhere or failed, instead of being kept). Anti-entropy and
    /// read repair only copy what replicas hold and use no clock, so they add no rule.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// A read asks R replicas (its own store and R - 1 others); when they have not all
    /// answered this long after it started, it asks one more (a speculative request),
    /// and again each time this long passes while replicas are left to ask.
    #[serde(with = "humantime_serde")]
    pub read_speculative_after: Duration,
    /// The percentage of reads (0 to 100, chosen with the engine's seeded random source)
    /// that ask every replica instead of R, so that read repair also reaches a replica
    /// behind replicas that agree (see `engine/read.rs`). Reads whose replies disagree
    /// ask every replica anyway.
    pub read_repair_chance_percent: u8,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            n: 3,
            r: 2,
            w: 2,
            pr: 0,
            pw: 0,
            request_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(2),
            read_repair_window: Duration::from_millis(100),
            tombstone_grace: Duration::from_secs(24 * 3600),
            max_clock_skew: Duration::from_secs(10),
            read_speculative_after: Duration::from_millis(20),
            read_repair_chance_percent: 10,
        }
    }
}

/// Hinted handoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffConfig {
    /// Whether writes for a down primary are kept as hints on a fallback. When off, no
    /// new hints are stored; hints already stored are still delivered.
    pub enabled: bool,
    /// A delivery pass starts this often for each target with hints (also for targets
    /// that are down, whose expired hints it drops).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Hints listed and delivered per page; one page per target is in flight at a time
    /// (the delivery bound). A page delivered without a failure is followed at once by
    /// the next; after a failure the target waits for the next `interval`.
    pub batch: usize,
    /// Hints whose newest value is older than this are expired: never read, merged into
    /// or delivered, and dropped (anti-entropy repairs what they carried). Must exceed
    /// `replication.max_clock_skew`, and `replication.tombstone_grace` must exceed it by
    /// twice that skew (see [`ReplicationConfig::max_clock_skew`]).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// At most this many hints are kept per target node.
    pub max_hints_per_target: u64,
    /// At most this many bytes of hints are kept per target node.
    pub max_hint_bytes_per_target: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            enabled: true,
            interval: Duration::from_secs(1),
            batch: 256,
            ttl: Duration::from_secs(3 * 3600),
            max_hints_per_target: 1_000_000,
            max_hint_bytes_per_target: 1 << 30,
        }
    }
}

/// Membership gossip and failure detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// Membership gossip to one random peer, this often.
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// Every peer is probed this often (a new probe even while earlier ones are
    /// unanswered, at most `probe_timeout / probe_interval + 1` in flight per peer).
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// A probe unanswered after this long counts as one failed contact.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// A peer is marked down only after this many failed contacts (probes, gossip or
    /// requests) in a row, with no success in between. One failure never does: a single
    /// lost packet or an overloaded moment must not route the whole node around a peer.
    pub failure_threshold: u32,
    /// ... and only when nothing has been heard from it for at least this long, so that
    /// a burst of requests failing together (one overloaded instant) cannot reach the
    /// threshold by itself. With the default probing a paused peer is marked down about
    /// `down_after + probe_timeout` after its last answer; see `membership.rs`.
    #[serde(with = "humantime_serde")]
    pub down_after: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            gossip_interval: Duration::from_secs(1),
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(1),
            failure_threshold: 3,
            down_after: Duration::from_secs(2),
        }
    }
}

/// Anti-entropy and tombstone reaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AaeConfig {
    /// Whether this node runs anti-entropy exchanges and tombstone reaping.
    pub enabled: bool,
    /// Each pair of replicas of a partition compares trees at least this often.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How often the anti-entropy scheduler looks for due work.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Most exchanges this node runs at once.
    pub max_concurrent_exchanges: usize,
    /// Repair budget: keys fetched or pushed per second (scaled down while foreground
    /// latency is high).
    pub repair_keys_per_second: u64,
    /// Repair budget: object bytes fetched or pushed per second (scaled down likewise).
    pub repair_bytes_per_second: u64,
    /// Keys or segments per anti-entropy message (at most
    /// [`MAX_AAE_BATCH`](crate::wire::MAX_AAE_BATCH)).
    pub batch: usize,
    /// Background work backs off while the moving average of client request latency at
    /// this node is above this.
    #[serde(with = "humantime_serde")]
    pub latency_target: Duration,
    /// Each partition's tombstones are scanned for reaping at least this often.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// Each Merkle tree is rebuilt from storage and checked against the incremental one
    /// this often. Read by the node, which owns the trees, not by the engine.
    #[serde(with = "humantime_serde")]
    pub verify_interval: Duration,
}

impl Default for AaeConfig {
    fn default() -> Self {
        AaeConfig {
            enabled: true,
            interval: Duration::from_secs(300),
            tick: Duration::from_secs(1),
            max_concurrent_exchanges: 2,
            repair_keys_per_second: 20_000,
            repair_bytes_per_second: 64 << 20,
            batch: 256,
            latency_target: Duration::from_millis(50),
            reap_interval: Duration::from_secs(3600),
            verify_interval: Duration::from_secs(3600),
        }
    }
}

/// Size limits and bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest value a put may carry, in bytes.
    pub max_value_bytes: usize,
    /// Largest a key's object (all siblings together) may grow, in bytes.
    pub max_object_bytes: usize,
    /// Most requests this node coordinates or forwards at once; more get `Overloaded`.
    pub max_inflight_requests: usize,
    /// Most requests queued for the engine; more get `Overloaded`. Read by the node's
    /// driver, which owns the queue.
    pub max_queued_requests: usize,
    /// Threads running storage operations. Read by the node, which runs them.
    pub storage_threads: usize,
    /// Worker threads of the node's async runtime, which runs QUIC, the request
    /// handlers and the replication driver; 0 means one per CPU core. One (the
    /// default) keeps a request's hops between those tasks on one thread: on a 2-core
    /// machine it gave 13% more throughput and 12% less CPU per operation than one per
    /// core (BENCHMARKS.md). One is tokio's current-thread runtime. Read by the node,
    /// which builds the runtime.
    pub worker_threads: usize,
    /// How long the runtime keeps polling its sockets after it woke and did some work,
    /// before it sleeps again (0 turns it off). On a virtual machine an idle CPU takes
    /// tens of microseconds to wake, more than a replica read takes: under light load
    /// every hop between nodes paid it. The poller yields the CPU to other processes on
    /// each turn, and rests while CPU-bound threads keep the CPU. Read by the node, which
    /// builds the runtime; at most 10 ms.
    #[serde(with = "humantime_serde")]
    pub idle_poll: Duration,
    /// Storage operations queued for those threads; an operation that finds the queue
    /// full fails at once as a storage error. Read by the node, which owns the queue.
    pub max_queued_storage_ops: usize,
    /// Shortest timeout a request may ask for; shorter is refused (`InvalidOptions`).
    #[serde(with = "humantime_serde")]
    pub min_request_timeout: Duration,
    /// Longest timeout a request may ask for; longer is refused (`InvalidOptions`), so
    /// that no client can make the node hold a request (and its memory) for long.
    #[serde(with = "humantime_serde")]
    pub max_request_timeout: Duration,
    /// Siblings a key's object may hold before each write that leaves more is logged and
    /// counted (Riak's default warning level is 25).
    pub sibling_warn: usize,
    /// Siblings a key's object may hold after a client write: a write that would leave
    /// more is refused at its coordinator (`TooManySiblings`) and stored nowhere. Merges
    /// at replicas (replication, read repair, anti-entropy, handoff) are never refused for
    /// it, since they carry writes already accepted: they are counted instead.
    pub max_siblings: usize,
    /// Bytes of replica copies this node's coordinated reads may hold at once (their own
    /// copy and the other replicas' replies, until read repair is done). Past half of it,
    /// a read asks the other replicas only after its own copy shows the object's size,
    /// and a read that would not fit is answered `Overloaded` before any replica is
    /// asked, so that large reads cannot take the node's memory or its peer links while
    /// small ones still fit: a read whose copies weigh at most 1/64 of it may also draw on
    /// a reserve of 1/8 of it beyond what large reads hold. A read is always admitted
    /// when none holds anything.
    pub max_read_bytes_in_flight: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_value_bytes: 4 << 20,
            max_object_bytes: 16 << 20,
            max_inflight_requests: 10_000,
            max_queued_requests: 10_000,
            storage_threads: 4,
            worker_threads: 1,
            idle_poll: Duration::from_micros(500),
            max_queued_storage_ops: 65_536,
            min_request_timeout: Duration::from_millis(1),
            max_request_timeout: Duration::from_secs(60),
            sibling_warn: 25,
            max_siblings: 100,
            max_read_bytes_in_flight: 64 << 20,
        }
    }
}

impl LimitsConfig {
    /// The largest frame a node sends or accepts: one object of `max_object_bytes` plus
    /// its envelope. Anti-entropy sizes its batches to fit in it.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_object_bytes.saturating_add(FRAME_OVERHEAD_BYTES)
    }
}

/// Most storage threads a node may run.
const MAX_STORAGE_THREADS: usize = 256;
/// Most runtime worker threads a node may run.
const MAX_WORKER_THREADS: usize = 256;
/// Longest the node's runtime may poll after work before it sleeps.
const MAX_IDLE_POLL: Duration = Duration::from_millis(10);

/// A setting that is out of range or inconsistent with another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// The setting, as named in the config file (`section.key`, e.g. `replication.w`).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn err(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        problem: problem.into(),
    }
}

/// The first of `durations` that is zero, as an error naming it.
fn positive(durations: &[(&'static str, Duration)]) -> Result<(), ConfigError> {
    match durations.iter().find(|(_, d)| d.is_zero()) {
        Some((field, _)) => Err(err(field, "must be greater than zero")),
        None => Ok(()),
    }
}

impl EngineConfig {
    /// Check every setting and the rules between them. `members` is the cluster size.
    pub fn validate(&self, members: usize) -> Result<(), ConfigError> {
        self.replication.validate(members)?;
        self.membership.validate()?;
        self.handoff.validate(&self.replication)?;
        self.limits.validate()?;
        let timeouts = self.limits.min_request_timeout..=self.limits.max_request_timeout;
        if !timeouts.contains(&self.replication.request_timeout) {
            return Err(err(
                "replication.request_timeout",
                "must be within limits.min_request_timeout..=limits.max_request_timeout",
            ));
        }
        self.aae.validate()
    }
}

impl ReplicationConfig {
    fn validate(&self, members: usize) -> Result<(), ConfigError> {
        if self.n == 0 {
            return Err(err("replication.n", "must be at least 1"));
        }
        if usize::from(self.n) > members {
            return Err(err(
                "replication.n",
                format!("is {} but the cluster has only {members} members", self.n),
            ));
        }
        if self.r == 0 || self.r > self.n {
            return Err(err(
                "replication.r",
                format!("must be in 1..=n ({}), got {}", self.n, self.r),
            ));
        }
        if self.w == 0 || self.w > self.n {
            return Err(err(
                "replication.w",
                format!("must be in 1..=n ({}), got {}", self.n, self.w),
            ));
        }
        if self.pr > self.r {
            return Err(err(
                "replication.pr",
                format!("must be at most r ({}), got {}", self.r, self.pr),
            ));
        }
        if self.pw > self.w {
            return Err(err(
                "replication.pw",
                format!("must be at most w ({}), got {}", self.w, self.pw),
            ));
        }
        positive(&[
            ("replication.request_timeout", self.request_timeout),
            ("replication.rpc_timeout", self.rpc_timeout),
            (
                "replication.read_speculative_after",
                self.read_speculative_after,
            ),
        ])?;
        if self.read_repair_chance_percent > 100 {
            return Err(err(
                "replication.read_repair_chance_percent",
                format!(
                    "must be in 0..=100, got {}",
                    self.read_repair_chance_percent
                ),
            ));
        }
        if self.rpc_timeout > self.request_timeout {
            return Err(err(
                "replication.rpc_timeout",
                "must not exceed request_timeout (a replica request outliving its client request is wasted)",
            ));
        }
        Ok(())
    }
}

impl MembershipConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        positive(&[
            ("membership.gossip_interval", self.gossip_interval),
            ("membership.probe_interval", self.probe_interval),
            ("membership.probe_timeout", self.probe_timeout),
            ("membership.down_after", self.down_after),
        ])?;
        if self.failure_threshold == 0 {
            return Err(err("membership.failure_threshold", "must be at least 1"));
        }
        Ok(())
    }
}

impl HandoffConfig {
    fn validate(&self, replication: &ReplicationConfig) -> Result<(), ConfigError> {
        positive(&[
            ("handoff.interval", self.interval),
            ("handoff.ttl", self.ttl),
        ])?;
        if self.ttl >= replication.tombstone_grace {
            return Err(err(
                "handoff.ttl",
                "must be shorter than replication.tombstone_grace, or a late hint could bring a reaped key back",
            ));
        }
        let skew = replication.max_clock_skew;
        if self.ttl <= skew {
            return Err(err(
                "handoff.ttl",
                format!(
                    "must be longer than replication.max_clock_skew ({skew:?}), or a hint of a fresh write from a node whose clock is behind would be expired on arrival"
                ),
            ));
        }
        let margin = self.ttl.saturating_add(skew.saturating_mul(2));
        if replication.tombstone_grace <= margin {
            return Err(err(
                "replication.tombstone_grace",
                format!(
                    "must be longer than handoff.ttl + 2 × replication.max_clock_skew ({:?} + 2 × {skew:?} = {margin:?}), or a hint that is not yet expired on a node with a slow clock could bring back a tombstone reaped by a node with a fast one",
                    self.ttl
                ),
            ));
        }
        if self.batch == 0 {
            return Err(err("handoff.batch", "must be at least 1"));
        }
        Ok(())
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_value_bytes == 0 {
            return Err(err("limits.max_value_bytes", "must be at least 1"));
        }
        if self.max_object_bytes < self.max_value_bytes + MAX_KEY_BYTES {
            return Err(err(
                "limits.max_object_bytes",
                format!(
                    "must be at least max_value_bytes + {MAX_KEY_BYTES} so that one value always fits"
                ),
            ));
        }
        if self.max_object_bytes > MAX_OBJECT_BYTES {
            return Err(err(
                "limits.max_object_bytes",
                format!(
                    "must be at most {MAX_OBJECT_BYTES}, so that every stored object fits in what the SDK receives"
                ),
            ));
        }
        if self.max_siblings == 0 {
            return Err(err("limits.max_siblings", "must be at least 1"));
        }
        if self.sibling_warn == 0 || self.sibling_warn > self.max_siblings {
            return Err(err(
                "limits.sibling_warn",
                "must be in 1..=limits.max_siblings",
            ));
        }
        if self.max_read_bytes_in_flight == 0 {
            return Err(err("limits.max_read_bytes_in_flight", "must be at least 1"));
        }
        if self.max_inflight_requests == 0 {
            return Err(err("limits.max_inflight_requests", "must be at least 1"));
        }
        if self.max_queued_requests == 0 {
            return Err(err("limits.max_queued_requests", "must be at least 1"));
        }
        if self.max_queued_storage_ops == 0 {
            return Err(err("limits.max_queued_storage_ops", "must be at least 1"));
        }
        if self.storage_threads == 0 || self.storage_threads > MAX_STORAGE_THREADS {
            return Err(err(
                "limits.storage_threads",
                format!("must be in 1..={MAX_STORAGE_THREADS}"),
            ));
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(err(
                "limits.worker_threads",
                format!("must be in 0..={MAX_WORKER_THREADS} (0: one per CPU core)"),
            ));
        }
        if self.idle_poll > MAX_IDLE_POLL {
            return Err(err(
                "limits.idle_poll",
                format!("must be at most {MAX_IDLE_POLL:?} (0 turns it off)"),
            ));
        }
        if self.min_request_timeout < MIN_REQUEST_TIMEOUT {
            return Err(err(
                "limits.min_request_timeout",
                format!("must be at least {MIN_REQUEST_TIMEOUT:?}"),
            ));
        }
        if self.max_request_timeout > MAX_REQUEST_TIMEOUT
            || self.max_request_timeout < self.min_request_timeout
        {
            return Err(err(
                "limits.max_request_timeout",
                format!("must be in limits.min_request_timeout..={MAX_REQUEST_TIMEOUT:?}"),
            ));
        }
        Ok(())
    }
}

impl AaeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        positive(&[
            ("aae.interval", self.interval),
            ("aae.tick", self.tick),
            ("aae.latency_target", self.latency_target),
            ("aae.reap_interval", self.reap_interval),
            ("aae.verify_interval", self.verify_interval),
        ])?;
        if self.max_concurrent_exchanges == 0 {
            return Err(err("aae.max_concurrent_exchanges", "must be at least 1"));
        }
        if self.repair_keys_per_second == 0 || self.repair_bytes_per_second == 0 {
            return Err(err(
                "aae.repair_keys_per_second",
                "repair budgets must be greater than zero",
            ));
        }
        if self.batch == 0 || self.batch > crate::wire::MAX_AAE_BATCH {
            return Err(err(
                "aae.batch",
                format!("must be in 1..={}", crate::wire::MAX_AAE_BATCH),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_for_three_nodes() {
        EngineConfig::default().validate(3).unwrap();
    }

    #[test]
    fn quorums_larger_than_n_are_refused() {
        let mut c = EngineConfig::default();
        c.replication.r = 4;
        assert_eq!(c.validate(5).unwrap_err().field, "replication.r");
        let mut c = EngineConfig::default();
        c.replication.w = 4;
        assert_eq!(c.validate(5).unwrap_err().field, "replication.w");
    }

    #[test]
    fn n_larger_than_cluster_is_refused() {
        assert_eq!(
            EngineConfig::default().validate(2).unwrap_err().field,
            "replication.n"
        );
    }

    #[test]
    fn hint_ttl_must_be_shorter_than_tombstone_grace() {
        let mut c = EngineConfig::default();
        c.handoff.ttl = Duration::from_secs(10);
        c.replication.tombstone_grace = Duration::from_secs(10);
        assert_eq!(c.validate(3).unwrap_err().field, "handoff.ttl");
    }

    #[test]
    fn tombstone_grace_must_exceed_hint_ttl_by_twice_the_clock_skew() {
        let mut c = EngineConfig::default();
        c.handoff.ttl = Duration::from_secs(100);
        c.replication.max_clock_skew = Duration::from_secs(10);
        c.replication.tombstone_grace = Duration::from_secs(120);
        let e = c.validate(3).unwrap_err();
        assert_eq!(e.field, "replication.tombstone_grace");
        assert!(
            e.to_string()
                .contains("handoff.ttl + 2 × replication.max_clock_skew"),
            "{e}"
        );
        c.replication.tombstone_grace = Duration::from_secs(121);
        c.validate(3).unwrap();
        // No skew allowed: the rule is the plain one.
        c.replication.max_clock_skew = Duration::ZERO;
        c.replication.tombstone_grace = Duration::from_secs(101);
        c.validate(3).unwrap();
    }

    #[test]
    fn hint_ttl_must_exceed_the_clock_skew() {
        let mut c = EngineConfig::default();
        c.handoff.ttl = Duration::from_secs(10);
        c.replication.max_clock_skew = Duration::from_secs(10);
        assert_eq!(c.validate(3).unwrap_err().field, "handoff.ttl");
    }

    #[test]
    fn node_side_settings_are_checked_in_their_section() {
        let mut c = EngineConfig::default();
        c.limits.storage_threads = MAX_STORAGE_THREADS + 1;
        assert_eq!(c.validate(3).unwrap_err().field, "limits.storage_threads");
        let mut c = EngineConfig::default();
        c.limits.worker_threads = MAX_WORKER_THREADS + 1;
        assert_eq!(c.validate(3).unwrap_err().field, "limits.worker_threads");
        c.limits.worker_threads = 0;
        assert!(c.validate(3).is_ok(), "0 means one per core");
        let mut c = EngineConfig::default();
        c.limits.idle_poll = MAX_IDLE_POLL + Duration::from_micros(1);
        assert_eq!(c.validate(3).unwrap_err().field, "limits.idle_poll");
        c.limits.idle_poll = Duration::ZERO;
        assert!(c.validate(3).is_ok(), "0 turns the poller off");
        let mut c = EngineConfig::default();
        c.aae.verify_interval = Duration::ZERO;
        assert_eq!(c.validate(3).unwrap_err().field, "aae.verify_interval");
    }

    #[test]
    fn sibling_limits_and_the_object_limit_are_checked() {
        let mut c = EngineConfig::default();
        c.limits.max_object_bytes = MAX_OBJECT_BYTES + 1;
        assert_eq!(c.validate(3).unwrap_err().field, "limits.max_object_bytes");
        let mut c = EngineConfig::default();
        c.limits.max_siblings = 0;
        assert_eq!(c.validate(3).unwrap_err().field, "limits.max_siblings");
        let mut c = EngineConfig::default();
        c.limits.sibling_warn = c.limits.max_siblings + 1;
        assert_eq!(c.validate(3).unwrap_err().field, "limits.sibling_warn");
        c.limits.sibling_warn = 0;
        assert_eq!(c.validate(3).unwrap_err().field, "limits.sibling_warn");
        c.limits.sibling_warn = c.limits.max_siblings;
        c.validate(3).unwrap();
        c.limits.max_read_bytes_in_flight = 0;
        assert_eq!(
            c.validate(3).unwrap_err().field,
            "limits.max_read_bytes_in_flight"
        );
    }

    #[test]
    fn the_failure_detector_needs_a_threshold_and_a_silence() {
        let mut c = EngineConfig::default();
        c.membership.failure_threshold = 0;
        assert_eq!(
            c.validate(3).unwrap_err().field,
            "membership.failure_threshold"
        );
        let mut c = EngineConfig::default();
        c.membership.down_after = Duration::ZERO;
        assert_eq!(c.validate(3).unwrap_err().field, "membership.down_after");
    }
}
