//! The node's TOML configuration: every field documented, validated at start with one
//! clear error per bad field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_proto::EngineConfig;
use shoal_ring::{Member, NodeId, Ring};
use shoal_storage::Durability;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown field, wrong type, ...).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser says, with the line.
        message: String,
    },
    /// A field is out of range or inconsistent with another.
    #[error("invalid config: {field}: {problem}")]
    Field {
        /// The field, as written in the file (`replication.w`).
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn field_err(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// One member of the cluster, as listed in every node's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedConfig {
    /// The member's node id (as in its certificate).
    pub id: NodeId,
    /// Where it listens for QUIC.
    pub addr: SocketAddr,
    /// Failure zone (rack, availability zone); replicas are spread across zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Capacity weight (default 1): a weight-2 node owns twice the partitions.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// TLS files (paths relative to the config file's directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate chain (PEM), SAN `shoal://node/<id>`.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

/// Replication defaults and timeouts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Replicas per key (N).
    pub n: u8,
    /// Default read quorum (R), overridable per request.
    pub r: u8,
    /// Default write quorum (W), overridable per request.
    pub w: u8,
    /// Default primary replies required among R (PR).
    pub pr: u8,
    /// Default primary acks required among W (PW).
    pub pw: u8,
    /// A coordinator answers `Timeout` after this long without its quorum.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Timeout of one node-to-node request.
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
    /// Replies arriving this long after a read was answered still feed read repair.
    #[serde(with = "humantime_serde")]
    pub read_repair_window: Duration,
    /// Deletes stay as tombstones at least this long before they may be reaped.
    #[serde(with = "humantime_serde")]
    pub tombstone_grace: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        ReplicationConfig {
            n: e.n,
            r: e.r,
            w: e.w,
            pr: e.pr,
            pw: e.pw,
            request_timeout: e.request_timeout,
            rpc_timeout: e.rpc_timeout,
            read_repair_window: e.read_repair_window,
            tombstone_grace: e.tombstone_grace,
        }
    }
}

/// Hinted handoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// Keep writes for down primaries as hints on fallbacks. Off: no new hints.
    pub enabled: bool,
    /// How often hints are delivered.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Hints delivered per target per interval (the delivery rate limit).
    pub batch: usize,
    /// Hints older than this are dropped (anti-entropy repairs the rest).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most hints kept per target node.
    pub max_hints_per_target: u64,
    /// Most hint bytes kept per target node.
    pub max_hint_bytes_per_target: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        HandoffConfig {
            enabled: e.hinted_handoff,
            interval: e.handoff_interval,
            batch: e.handoff_batch,
            ttl: e.hint_ttl,
            max_hints_per_target: e.max_hints_per_target,
            max_hint_bytes_per_target: e.max_hint_bytes_per_target,
        }
    }
}

/// Membership and failure detection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    /// Gossip to one random peer this often.
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// Probe every peer this often.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// A probe unanswered after this long marks the peer down.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        MembershipConfig {
            gossip_interval: e.gossip_interval,
            probe_interval: e.probe_interval,
            probe_timeout: e.probe_timeout,
        }
    }
}

/// Anti-entropy and tombstone reaping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AaeConfig {
    /// Run Merkle-tree exchanges and tombstone reaping.
    pub enabled: bool,
    /// Each pair of replicas of a partition compares trees at least this often.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How often the scheduler looks for due work.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Most exchanges this node runs at once.
    pub max_concurrent_exchanges: usize,
    /// Repair budget in keys per second (scaled down while foreground latency is high).
    pub repair_keys_per_second: u64,
    /// Repair budget in bytes per second (scaled down likewise).
    pub repair_bytes_per_second: u64,
    /// Keys or segments per anti-entropy message (1..=1024).
    pub batch: usize,
    /// Background work backs off while the moving average of client request latency at
    /// this node is above this.
    #[serde(with = "humantime_serde")]
    pub latency_target: Duration,
    /// Each partition is scanned for reapable tombstones at least this often.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// Each Merkle tree is rebuilt from storage and checked against the incremental one
    /// this often.
    #[serde(with = "humantime_serde")]
    pub verify_interval: Duration,
}

impl Default for AaeConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        AaeConfig {
            enabled: e.aae_enabled,
            interval: e.aae_interval,
            tick: e.aae_tick,
            max_concurrent_exchanges: e.aae_max_concurrent_exchanges,
            repair_keys_per_second: e.aae_repair_keys_per_second,
            repair_bytes_per_second: e.aae_repair_bytes_per_second,
            batch: e.aae_batch,
            latency_target: e.aae_latency_target,
            reap_interval: e.reap_interval,
            verify_interval: Duration::from_secs(3600),
        }
    }
}

/// Size limits and bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest value a put may carry, in bytes.
    pub max_value_bytes: usize,
    /// Largest a key's object (all siblings together) may grow, in bytes.
    pub max_object_bytes: usize,
    /// Most requests this node coordinates at once; more get `Overloaded`.
    pub max_inflight_requests: usize,
    /// Most requests queued for the engine; more get `Overloaded`.
    pub max_queued_requests: usize,
    /// Threads running storage operations.
    pub storage_threads: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        LimitsConfig {
            max_value_bytes: e.max_value_bytes,
            max_object_bytes: e.max_object_bytes,
            max_inflight_requests: e.max_inflight_requests,
            max_queued_requests: 10_000,
            storage_threads: 4,
        }
    }
}

/// RocksDB settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `buffered` (default: WAL in the page cache, survives a killed process) or `sync`
    /// (fsync before every acknowledgement, survives a power cut).
    pub durability: Durability,
    /// Shared block cache, in bytes.
    pub block_cache_bytes: usize,
    /// Memtable size, in bytes.
    pub write_buffer_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: Durability::Buffered,
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
        }
    }
}

/// A node's whole configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id: 1..=64 characters of `[A-Za-z0-9_.-]`, as in its certificate.
    pub id: NodeId,
    /// UDP address to listen on for QUIC (clients and peers).
    pub listen: SocketAddr,
    /// Directory of the RocksDB store (relative to the config file's directory).
    pub data_dir: PathBuf,
    /// Prometheus metrics over HTTP on this address (`/metrics`); absent: no exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Partitions of the ring (a power of two, 8..=65536); the same on every node.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Every member of the cluster, this node included; the ring is computed from them.
    pub seeds: Vec<SeedConfig>,
    /// TLS files.
    pub tls: TlsConfig,
    /// Quorums and timeouts.
    #[serde(default)]
    pub replication: ReplicationConfig,
    /// Hinted handoff.
    #[serde(default)]
    pub handoff: HandoffConfig,
    /// Membership and failure detection.
    #[serde(default)]
    pub membership: MembershipConfig,
    /// Anti-entropy and tombstone reaping.
    #[serde(default)]
    pub aae: AaeConfig,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Storage.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Directory the relative paths are resolved against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_partitions() -> u32 {
    shoal_ring::DEFAULT_PARTITIONS
}

/// The documented default configuration, as printed by `shoal node --print-default-config`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default-config.toml");

impl NodeConfig {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        NodeConfig::parse(&text, path, &base)
    }

    /// Parse and validate TOML text; `base_dir` anchors relative paths.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<NodeConfig, ConfigError> {
        let mut cfg: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.base_dir = base_dir.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Resolve a path from the file against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The engine settings this config describes.
    pub fn engine_config(&self) -> EngineConfig {
        let r = &self.replication;
        EngineConfig {
            n: r.n,
            r: r.r,
            w: r.w,
            pr: r.pr,
            pw: r.pw,
            request_timeout: r.request_timeout,
            rpc_timeout: r.rpc_timeout,
            read_repair_window: r.read_repair_window,
            gossip_interval: self.membership.gossip_interval,
            probe_interval: self.membership.probe_interval,
            probe_timeout: self.membership.probe_timeout,
            hinted_handoff: self.handoff.enabled,
            handoff_interval: self.handoff.interval,
            handoff_batch: self.handoff.batch,
            hint_ttl: self.handoff.ttl,
            max_hints_per_target: self.handoff.max_hints_per_target,
            max_hint_bytes_per_target: self.handoff.max_hint_bytes_per_target,
            tombstone_grace: r.tombstone_grace,
            max_value_bytes: self.limits.max_value_bytes,
            max_object_bytes: self.limits.max_object_bytes,
            max_inflight_requests: self.limits.max_inflight_requests,
            aae_enabled: self.aae.enabled,
            aae_interval: self.aae.interval,
            aae_tick: self.aae.tick,
            aae_max_concurrent_exchanges: self.aae.max_concurrent_exchanges,
            aae_repair_keys_per_second: self.aae.repair_keys_per_second,
            aae_repair_bytes_per_second: self.aae.repair_bytes_per_second,
            aae_batch: self.aae.batch,
            aae_latency_target: self.aae.latency_target,
            reap_interval: self.aae.reap_interval,
        }
    }

    /// The ring computed from the members.
    pub fn ring(&self) -> Result<Ring, ConfigError> {
        let members = self
            .seeds
            .iter()
            .map(|s| Member {
                id: s.id.clone(),
                zone: s.zone.clone(),
                weight: s.weight,
            })
            .collect();
        Ring::new(self.partitions, members).map_err(|e| field_err("seeds", e.to_string()))
    }

    /// Check every field and the rules between them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.seeds.is_empty() {
            return Err(field_err(
                "seeds",
                "must list every member of the cluster, this node included",
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        for (i, s) in self.seeds.iter().enumerate() {
            if !ids.insert(&s.id) {
                return Err(field_err(
                    format!("seeds[{i}].id"),
                    format!("{} is listed twice", s.id),
                ));
            }
            if !addrs.insert(s.addr) {
                return Err(field_err(
                    format!("seeds[{i}].addr"),
                    format!("{} is used by two members", s.addr),
                ));
            }
            if s.weight == 0 {
                return Err(field_err(
                    format!("seeds[{i}].weight"),
                    "must be at least 1",
                ));
            }
        }
        match self.seeds.iter().find(|s| s.id == self.id) {
            None => {
                return Err(field_err(
                    "seeds",
                    format!("this node ({}) must be one of the members", self.id),
                ))
            }
            Some(me) if me.addr.port() != self.listen.port() => {
                return Err(field_err(
                    "listen",
                    format!(
                        "port {} differs from this node's member address {}",
                        self.listen.port(),
                        me.addr
                    ),
                ))
            }
            Some(_) => {}
        }
        if !self.partitions.is_power_of_two() || !(8..=65536).contains(&self.partitions) {
            return Err(field_err(
                "partitions",
                format!(
                    "must be a power of two in 8..=65536, got {}",
                    self.partitions
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(field_err("data_dir", "must not be empty"));
        }
        for (field, p) in [
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
        ] {
            let full = self.resolve(p);
            if !full.is_file() {
                return Err(field_err(
                    field,
                    format!("{} is not a readable file", full.display()),
                ));
            }
        }
        if self.limits.max_queued_requests == 0 {
            return Err(field_err(
                "limits.max_queued_requests",
                "must be at least 1",
            ));
        }
        if self.limits.storage_threads == 0 || self.limits.storage_threads > 256 {
            return Err(field_err("limits.storage_threads", "must be in 1..=256"));
        }
        if self.aae.verify_interval.is_zero() {
            return Err(field_err(
                "aae.verify_interval",
                "must be greater than zero",
            ));
        }
        if self.storage.block_cache_bytes < (1 << 20) {
            return Err(field_err(
                "storage.block_cache_bytes",
                "must be at least 1 MiB",
            ));
        }
        if self.storage.write_buffer_bytes < (1 << 20) {
            return Err(field_err(
                "storage.write_buffer_bytes",
                "must be at least 1 MiB",
            ));
        }
        self.engine_config()
            .validate(self.seeds.len())
            .map_err(|e| field_err(engine_field(e.field), e.problem))?;
        Ok(())
    }
}

/// Where an engine setting lives in the file.
fn engine_field(field: &str) -> String {
    let section = match field {
        "n" | "r" | "w" | "pr" | "pw" | "request_timeout" | "rpc_timeout"
        | "read_repair_window" | "tombstone_grace" => "replication",
        "gossip_interval" | "probe_interval" | "probe_timeout" => "membership",
        "hinted_handoff" => return "handoff.enabled".into(),
        "handoff_interval" => return "handoff.interval".into(),
        "handoff_batch" => return "handoff.batch".into(),
        "hint_ttl" => return "handoff.ttl".into(),
        "max_hints_per_target" | "max_hint_bytes_per_target" => "handoff",
        "aae_enabled" => return "aae.enabled".into(),
        "reap_interval" => return "aae.reap_interval".into(),
        f if f.starts_with("aae_") => return format!("aae.{}", &f[4..]),
        _ => "limits",
    };
    format!("{section}.{field}")
}
