//! Settings of the replication engine, and their cross-field validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// Settings of one node's replication engine. Every duration is a `Duration`; the node's
/// TOML config maps onto this and [`EngineConfig::validate`] checks it at start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Replicas per key (N).
    pub n: u8,
    /// Default read quorum (R).
    pub r: u8,
    /// Default write quorum (W), the coordinator's own store included.
    pub w: u8,
    /// Default primaries among the read replies (PR).
    pub pr: u8,
    /// Default primaries among the write acks (PW).
    pub pw: u8,
    /// How long a coordinator waits for its quorum before answering `Timeout`.
    pub request_timeout: Duration,
    /// Timeout of one node-to-node request.
    pub rpc_timeout: Duration,
    /// After a read is answered, how long replies are still collected for read repair.
    pub read_repair_window: Duration,
    /// Membership gossip to one random peer, this often.
    pub gossip_interval: Duration,
    /// Every peer is probed this often; a failed probe or request routes around it.
    pub probe_interval: Duration,
    /// Timeout of a probe.
    pub probe_timeout: Duration,
    /// Whether writes for a down primary are kept as hints on a fallback. When off, no
    /// new hints are stored; hints already stored are still delivered.
    pub hinted_handoff: bool,
    /// Hint delivery runs this often.
    pub handoff_interval: Duration,
    /// At most this many hints are delivered per target per `handoff_interval`.
    pub handoff_batch: usize,
    /// Hints older than this are dropped instead of delivered (anti-entropy repairs what
    /// they carried). Must be shorter than the tombstone grace period.
    pub hint_ttl: Duration,
    /// At most this many hints are kept per target node.
    pub max_hints_per_target: u64,
    /// At most this many bytes of hints are kept per target node.
    pub max_hint_bytes_per_target: u64,
    /// Deletes are kept as tombstones at least this long (and until every replica has
    /// them) before they are reaped.
    pub tombstone_grace: Duration,
    /// Largest value a put may carry.
    pub max_value_bytes: usize,
    /// Largest a key's object (all siblings) may grow.
    pub max_object_bytes: usize,
    /// Most requests this node coordinates or forwards at once.
    pub max_inflight_requests: usize,
    /// Whether this node runs anti-entropy exchanges and tombstone reaping.
    pub aae_enabled: bool,
    /// Each pair of replicas of a partition compares trees at least this often.
    pub aae_interval: Duration,
    /// How often the anti-entropy scheduler looks for due work.
    pub aae_tick: Duration,
    /// Most exchanges this node runs at once.
    pub aae_max_concurrent_exchanges: usize,
    /// Repair budget: keys fetched or pushed per second (before back-off).
    pub aae_repair_keys_per_second: u64,
    /// Repair budget: object bytes fetched or pushed per second (before back-off).
    pub aae_repair_bytes_per_second: u64,
    /// Keys or segments per anti-entropy message (at most 1024).
    pub aae_batch: usize,
    /// Background work backs off while the foreground coordinator latency (moving
    /// average) is above this.
    pub aae_latency_target: Duration,
    /// Each partition's tombstones are scanned for reaping at least this often.
    pub reap_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            n: 3,
            r: 2,
            w: 2,
            pr: 0,
            pw: 0,
            request_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(2),
            read_repair_window: Duration::from_millis(100),
            gossip_interval: Duration::from_secs(1),
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(1),
            hinted_handoff: true,
            handoff_interval: Duration::from_secs(1),
            handoff_batch: 256,
            hint_ttl: Duration::from_secs(3 * 3600),
            max_hints_per_target: 1_000_000,
            max_hint_bytes_per_target: 1 << 30,
            tombstone_grace: Duration::from_secs(24 * 3600),
            max_value_bytes: 4 << 20,
            max_object_bytes: 16 << 20,
            max_inflight_requests: 10_000,
            aae_enabled: true,
            aae_interval: Duration::from_secs(300),
            aae_tick: Duration::from_secs(1),
            aae_max_concurrent_exchanges: 2,
            aae_repair_keys_per_second: 20_000,
            aae_repair_bytes_per_second: 64 << 20,
            aae_batch: 256,
            aae_latency_target: Duration::from_millis(50),
            reap_interval: Duration::from_secs(3600),
        }
    }
}

/// A setting that is out of range or inconsistent with another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// The setting, as named in the config file.
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

impl EngineConfig {
    /// Check every setting and the rules between them. `members` is the cluster size.
    pub fn validate(&self, members: usize) -> Result<(), ConfigError> {
        if self.n == 0 {
            return Err(err("n", "must be at least 1"));
        }
        if usize::from(self.n) > members {
            return Err(err(
                "n",
                format!("is {} but the cluster has only {members} members", self.n),
            ));
        }
        if self.r == 0 || self.r > self.n {
            return Err(err(
                "r",
                format!("must be in 1..=n ({}), got {}", self.n, self.r),
            ));
        }
        if self.w == 0 || self.w > self.n {
            return Err(err(
                "w",
                format!("must be in 1..=n ({}), got {}", self.n, self.w),
            ));
        }
        if self.pr > self.r {
            return Err(err(
                "pr",
                format!("must be at most r ({}), got {}", self.r, self.pr),
            ));
        }
        if self.pw > self.w {
            return Err(err(
                "pw",
                format!("must be at most w ({}), got {}", self.w, self.pw),
            ));
        }
        for (field, d) in [
            ("request_timeout", self.request_timeout),
            ("rpc_timeout", self.rpc_timeout),
            ("gossip_interval", self.gossip_interval),
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("handoff_interval", self.handoff_interval),
            ("hint_ttl", self.hint_ttl),
        ] {
            if d.is_zero() {
                return Err(err(field, "must be greater than zero"));
            }
        }
        if self.rpc_timeout > self.request_timeout {
            return Err(err(
                "rpc_timeout",
                "must not exceed request_timeout (a replica request outliving its client request is wasted)",
            ));
        }
        if self.hint_ttl >= self.tombstone_grace {
            return Err(err(
                "hint_ttl",
                "must be shorter than tombstone_grace, or a late hint could bring a reaped key back",
            ));
        }
        if self.handoff_batch == 0 {
            return Err(err("handoff_batch", "must be at least 1"));
        }
        if self.max_value_bytes == 0 {
            return Err(err("max_value_bytes", "must be at least 1"));
        }
        if self.max_object_bytes < self.max_value_bytes + MAX_KEY_BYTES {
            return Err(err(
                "max_object_bytes",
                "must be at least max_value_bytes + 4096 so that one value always fits",
            ));
        }
        if self.max_inflight_requests == 0 {
            return Err(err("max_inflight_requests", "must be at least 1"));
        }
        for (field, d) in [
            ("aae_interval", self.aae_interval),
            ("aae_tick", self.aae_tick),
            ("aae_latency_target", self.aae_latency_target),
            ("reap_interval", self.reap_interval),
        ] {
            if d.is_zero() {
                return Err(err(field, "must be greater than zero"));
            }
        }
        if self.aae_max_concurrent_exchanges == 0 {
            return Err(err("aae_max_concurrent_exchanges", "must be at least 1"));
        }
        if self.aae_repair_keys_per_second == 0 || self.aae_repair_bytes_per_second == 0 {
            return Err(err(
                "aae_repair_keys_per_second",
                "repair budgets must be greater than zero",
            ));
        }
        if self.aae_batch == 0 || self.aae_batch > crate::wire::MAX_AAE_BATCH {
            return Err(err(
                "aae_batch",
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
        let c = EngineConfig {
            r: 4,
            ..EngineConfig::default()
        };
        assert_eq!(c.validate(5).unwrap_err().field, "r");
        let c = EngineConfig {
            w: 4,
            ..EngineConfig::default()
        };
        assert_eq!(c.validate(5).unwrap_err().field, "w");
    }

    #[test]
    fn n_larger_than_cluster_is_refused() {
        assert_eq!(EngineConfig::default().validate(2).unwrap_err().field, "n");
    }

    #[test]
    fn hint_ttl_must_be_shorter_than_tombstone_grace() {
        let c = EngineConfig {
            hint_ttl: Duration::from_secs(10),
            tombstone_grace: Duration::from_secs(10),
            ..EngineConfig::default()
        };
        assert_eq!(c.validate(3).unwrap_err().field, "hint_ttl");
    }
}
