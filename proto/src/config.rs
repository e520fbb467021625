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
    /// Hint delivery runs this often.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// At most this many hints are delivered per target per `interval` (the delivery
    /// rate limit).
    pub batch: usize,
    /// Hints older than this are dropped instead of delivered (anti-entropy repairs what
    /// they carried). Must be shorter than the tombstone grace period.
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
    /// Every peer is probed this often; a failed probe or request routes around it.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// A probe unanswered after this long marks the peer down.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            gossip_interval: Duration::from_secs(1),
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(1),
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_value_bytes: 4 << 20,
            max_object_bytes: 16 << 20,
            max_inflight_requests: 10_000,
            max_queued_requests: 10_000,
            storage_threads: 4,
            max_queued_storage_ops: 65_536,
            min_request_timeout: Duration::from_millis(1),
            max_request_timeout: Duration::from_secs(60),
        }
    }
}

/// Frame room beyond the largest object, for the message around it (key, clock, envelope).
pub const FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

impl LimitsConfig {
    /// The largest frame a node sends or accepts: one object of `max_object_bytes` plus
    /// its envelope. Anti-entropy sizes its batches to fit in it.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_object_bytes.saturating_add(FRAME_OVERHEAD_BYTES)
    }
}

/// Most storage threads a node may run.
const MAX_STORAGE_THREADS: usize = 256;

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
        ])?;
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
        ])
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
    fn node_side_settings_are_checked_in_their_section() {
        let mut c = EngineConfig::default();
        c.limits.storage_threads = MAX_STORAGE_THREADS + 1;
        assert_eq!(c.validate(3).unwrap_err().field, "limits.storage_threads");
        let mut c = EngineConfig::default();
        c.aae.verify_interval = Duration::ZERO;
        assert_eq!(c.validate(3).unwrap_err().field, "aae.verify_interval");
    }
}
