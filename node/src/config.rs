//! The node's TOML configuration: every field documented, validated at start with one
//! clear error per bad field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_proto::wire::WireVersion;
use shoal_proto::{
    AaeConfig, EngineConfig, HandoffConfig, LimitsConfig, MembershipConfig, ReplicationConfig,
};
use shoal_ring::{Member, NodeId, Ring, MAX_PARTITIONS, MIN_PARTITIONS};
use shoal_storage::Durability;
use shoal_transport::TransportConfig;

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
    /// Client certificate names (`shoal://client/<name>`) allowed to change the cluster
    /// (stage, unstage and commit layout changes) and to take backups; every other
    /// client is refused those with `not allowed`, and can still read and write data and
    /// read the cluster's state and plans. Empty (the default): every client certificate
    /// of the cluster CA may, as in earlier releases.
    #[serde(default)]
    pub admin_clients: Vec<String>,
}

/// Default of [`StorageConfig::group_commit_window`]: under write-only load at
/// concurrency 64, 400 µs took the writes per fsync from 6-7 to 11-13 and the writes
/// per second up 17%, and 1 ms added another 6-8% (won 5 of 6 A/B pairs) while 2 ms
/// was no better (BENCHMARKS.md); at concurrency 8 it costs a little latency.
pub const DEFAULT_GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(1);
/// Default of [`StorageConfig::group_commit_window_min_waiting`].
pub const DEFAULT_GROUP_COMMIT_WINDOW_MIN_WAITING: usize = 4;
/// Largest accepted [`StorageConfig::group_commit_window_min_waiting`]: the most writes
/// one sync releases.
pub const MAX_GROUP_COMMIT_WINDOW_MIN_WAITING: usize = 4096;
/// Default of [`StorageConfig::group_commit_window_quiet`]: off. Write-only at
/// concurrency 4, 250 µs took 3,670 to 3,780 writes/s, at 64 12,694 to 12,575 (medians of
/// 3 runs); with the window opened from 2 waiting writes it won 7% at 64 (BENCHMARKS.md).
pub const DEFAULT_GROUP_COMMIT_WINDOW_QUIET: Duration = Duration::ZERO;
/// Largest accepted [`StorageConfig::group_commit_window`]: a write under load may wait
/// this long before its sync starts.
pub const MAX_GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(20);

/// RocksDB settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `buffered` (default: WAL in the page cache, survives a killed process) or `sync`
    /// (fsync before every acknowledgement, survives a power cut).
    pub durability: Durability,
    /// With `durability = "sync"`: acknowledge writes in groups, one WAL fsync for every
    /// write that arrived while the previous fsync ran (default), instead of one fsync
    /// per write. Equally durable; `false` only to compare.
    pub group_commit: bool,
    /// With group commit: when several writes are already waiting for a sync, the
    /// committer gathers more for up to this long after the first arrived, so that one
    /// fsync covers more writes (fewer fsyncs, less CPU per write under load). A lone
    /// write, or a few, sync at once. Default 1ms; "0s" syncs at once always.
    #[serde(with = "humantime_serde")]
    pub group_commit_window: Duration,
    /// The window opens only when at least this many writes are already waiting as a
    /// sync falls due (default 4): fewer mean few concurrent writers, for whom the
    /// window would add latency and gather little. Lower gathers more under load (fewer
    /// fsyncs per write) at some latency for a few concurrent writers.
    pub group_commit_window_min_waiting: usize,
    /// The window also ends once no write arrived for this long: when the writers in
    /// flight have all arrived, waiting on only delays them. Default "0s": the window
    /// always runs its full length. With `group_commit_window_min_waiting = 2`, "250us"
    /// suits many concurrent writers.
    #[serde(with = "humantime_serde")]
    pub group_commit_window_quiet: Duration,
    /// Replica reads that the memtables and the block cache can answer run at once on
    /// the replication driver's thread (default), saving two thread switches each;
    /// reads that need the disk, and all writes, go to the storage threads either way.
    /// `false` sends every read to a storage thread.
    pub inline_reads: bool,
    /// A coordinator's write or a replica's merge runs at once on the replication
    /// driver's thread (default) when it needs no wait (its key free, its object in
    /// memory, no write stall); the others go to the storage threads. With `sync` and
    /// group commit it runs there only while the storage queue is empty, and its
    /// completion waits for the committer's WAL sync like any other write's; with `sync`
    /// and no group commit it does not apply (an fsync is a wait). `false` sends every
    /// write to a storage thread.
    pub inline_writes: bool,
    /// With `inline_writes`, and `buffered` or group commit: the WAL records of the
    /// writes the driver runs stay in the process until they go to the OS together
    /// (default): with `buffered` a round's in one system call before any of them is
    /// acknowledged, with group commit everything since the last sync in the committer's
    /// next sync (which writes out, then syncs). `false` writes each out before its write
    /// returns. As durable either way: nothing is acknowledged before its record is as
    /// durable as `durability` promises.
    pub group_wal_writes: bool,
    /// Shared block cache, in bytes.
    pub block_cache_bytes: usize,
    /// Memtable size, in bytes.
    pub write_buffer_bytes: usize,
    /// Cache of the objects this node wrote or read last, in bytes: reads of them skip
    /// RocksDB's memtable search. 0 disables it.
    pub object_cache_bytes: usize,
    /// CPU priority of RocksDB's flush and compaction threads: `low` (default, nice 19)
    /// runs them on the CPU the node's requests leave, so that a memtable flush does not
    /// delay the requests in flight; `normal` runs them beside the requests.
    pub background_priority: shoal_storage::BackgroundPriority,
    /// Free space, in bytes, kept on the data directory's filesystem: below it the node
    /// refuses writes with `DiskFull` (reads are still served) until space is freed.
    /// 0 disables the reserve. Writes of the node's own bookkeeping are not refused by
    /// it: the reserve is kept for them.
    pub min_free_bytes: u64,
    /// Size, in bytes, of the spare file (`SPARE_SPACE`) the node keeps in its data
    /// directory: started on a filesystem too full to open its store (something else
    /// filled it while the node was down), the node deletes the file to make room,
    /// serves reads, and refuses writes until free space holds the reserve and the file
    /// again, which it then makes again. 0: none.
    pub spare_space_bytes: u64,
    /// Where `shoal backup` writes this node's checkpoints (relative to the config
    /// file's directory); a backup is only ever written here, under a plain name.
    /// Default: `backups` beside the data directory. Put it on the data directory's
    /// filesystem: checkpoints then hard-link the table files instead of copying them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_dir: Option<PathBuf>,
}

impl StorageConfig {
    /// Whether the node group-commits: `sync` with `group_commit`. The store then writes
    /// without syncing, and the committer syncs the WAL before any write's completion
    /// reaches the engine.
    pub fn group_commits(&self) -> bool {
        self.durability == Durability::Sync && self.group_commit
    }

    /// Whether writes run on the driver's thread: only when the store does not sync them
    /// (an fsync is a wait), with `buffered` or with group commit.
    pub fn runs_inline_writes(&self) -> bool {
        self.inline_writes && (self.durability == Durability::Buffered || self.group_commits())
    }

    /// Whether the inline writes' WAL records stay in the process until written out
    /// together (`RocksOptions::buffer_try_writes`; see [`StorageConfig::group_wal_writes`]).
    pub fn buffers_wal_records(&self) -> bool {
        self.runs_inline_writes() && self.group_wal_writes
    }

    /// Whether the driver writes a round's buffered WAL records out itself (`buffered`;
    /// under group commit the committer's sync does).
    pub fn writes_out_wal_per_round(&self) -> bool {
        self.buffers_wal_records() && self.durability == Durability::Buffered
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: Durability::Buffered,
            group_commit: true,
            group_commit_window: DEFAULT_GROUP_COMMIT_WINDOW,
            group_commit_window_min_waiting: DEFAULT_GROUP_COMMIT_WINDOW_MIN_WAITING,
            group_commit_window_quiet: DEFAULT_GROUP_COMMIT_WINDOW_QUIET,
            inline_reads: true,
            inline_writes: true,
            group_wal_writes: true,
            block_cache_bytes: shoal_storage::DEFAULT_BLOCK_CACHE_BYTES,
            write_buffer_bytes: shoal_storage::DEFAULT_WRITE_BUFFER_BYTES,
            object_cache_bytes: shoal_storage::DEFAULT_OBJECT_CACHE_BYTES,
            min_free_bytes: shoal_storage::DEFAULT_MIN_FREE_BYTES,
            spare_space_bytes: shoal_storage::DEFAULT_SPARE_SPACE_BYTES,
            background_priority: shoal_storage::BackgroundPriority::Low,
            backup_dir: None,
        }
    }
}

/// How the node writes its log (to stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, `timestamp`, `level`, `target`, `message` and the
    /// event's fields at the top level, for log shippers (Loki, Elasticsearch, journald
    /// forwarders) that would otherwise have to parse the text.
    Json,
}

/// Cluster-wide protocol settings (`[cluster]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The wire version this node sends other nodes (it accepts every version it speaks,
    /// and answers each request in the version it came in). During a rolling upgrade it
    /// is pinned to the oldest version any member runs (`1`: the previous release), so
    /// that old nodes can read what new ones send; once every member runs this build the
    /// pin is removed, node by node. Defaults to the newest version this build speaks.
    pub wire_version: u16,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            wire_version: shoal_proto::wire::WIRE_VERSION,
        }
    }
}

impl ClusterConfig {
    /// The version to send peers; checked by [`NodeConfig::validate`].
    pub fn peer_wire_version(&self) -> Result<WireVersion, ConfigError> {
        WireVersion::new(self.wire_version).map_err(|_| {
            field_err(
                "cluster.wire_version",
                format!(
                    "must be a version this build speaks, {}..={}, got {}",
                    shoal_proto::wire::MIN_WIRE_VERSION,
                    shoal_proto::wire::WIRE_VERSION,
                    self.wire_version
                ),
            )
        })
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
    /// Partitions of the ring (a power of two, [`MIN_PARTITIONS`]..=[`MAX_PARTITIONS`]);
    /// the same on every node.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// The founding members of the cluster: with no stored layout, a node listed here
    /// creates layout version 1 from them (every founding node derives the same one);
    /// a node not listed starts as a candidate and uses them as bootstrap contacts
    /// (addresses only). Once a layout is stored, it wins over this list.
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
    /// QUIC serving bounds: connections per role, client name and address, bytes in
    /// flight, stream deadlines, idle clients (see [`TransportConfig`]).
    #[serde(default)]
    pub transport: TransportConfig,
    /// Log format: `text` (default) or `json`. `SHOAL_LOG` still sets the level filter.
    #[serde(default)]
    pub log_format: LogFormat,
    /// The wire version sent to peers, pinned during rolling upgrades (see
    /// [`ClusterConfig`]).
    #[serde(default)]
    pub cluster: ClusterConfig,
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

    /// The directory backups are written under: `storage.backup_dir`, or `backups`
    /// beside the data directory.
    pub fn backup_root(&self) -> PathBuf {
        match &self.storage.backup_dir {
            Some(dir) => self.resolve(dir),
            None => {
                let data = self.resolve(&self.data_dir);
                data.parent()
                    .map_or_else(|| PathBuf::from("backups"), |p| p.join("backups"))
            }
        }
    }

    /// Resolve a path from the file against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The transport settings the node serves with: the `[transport]` section, with the
    /// frame limit derived from the object limit (an object plus its envelope).
    pub fn transport_config(&self) -> TransportConfig {
        TransportConfig {
            max_frame_bytes: self.limits.max_frame_bytes(),
            ..self.transport.clone()
        }
    }

    /// The engine settings this config describes: its engine sections, as written.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            replication: self.replication,
            handoff: self.handoff,
            membership: self.membership,
            aae: self.aae,
            limits: self.limits,
        }
    }

    /// Whether this node starts as a candidate: its id is not among the `[[seeds]]`, so
    /// (with no stored layout) it joins no cluster by itself. It says hello to the seeds
    /// (its bootstrap contacts) and serves nothing until an operator joins it
    /// (`shoal cluster join` + `commit`). A node whose id is a seed creates layout
    /// version 1 from the seeds instead. A stored layout wins over both.
    pub fn is_candidate(&self) -> bool {
        !self.seeds.iter().any(|s| s.id == self.id)
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
            // Not a seed: the node starts as a candidate (see `is_candidate`).
            None => {}
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
        if !self.partitions.is_power_of_two()
            || !(MIN_PARTITIONS..=MAX_PARTITIONS).contains(&self.partitions)
        {
            return Err(field_err(
                "partitions",
                format!(
                    "must be a power of two in {MIN_PARTITIONS}..={MAX_PARTITIONS}, got {}",
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
        for name in &self.tls.admin_clients {
            if let Err(e) = NodeId::new(name) {
                return Err(field_err(
                    "tls.admin_clients",
                    format!("{name:?} is not a client name: {e}"),
                ));
            }
        }
        self.transport_config()
            .validate()
            .map_err(|e| field_err("transport", e.to_string()))?;
        if self.storage.block_cache_bytes < (1 << 20) {
            return Err(field_err(
                "storage.block_cache_bytes",
                "must be at least 1 MiB",
            ));
        }
        if self.storage.group_commit_window > MAX_GROUP_COMMIT_WINDOW {
            return Err(field_err(
                "storage.group_commit_window",
                format!("must be at most {MAX_GROUP_COMMIT_WINDOW:?}: every write under load waits for it"),
            ));
        }
        if self.storage.group_commit_window_quiet > MAX_GROUP_COMMIT_WINDOW {
            return Err(field_err(
                "storage.group_commit_window_quiet",
                format!("must be at most {MAX_GROUP_COMMIT_WINDOW:?}, as the window itself"),
            ));
        }
        if !(1..=MAX_GROUP_COMMIT_WINDOW_MIN_WAITING)
            .contains(&self.storage.group_commit_window_min_waiting)
        {
            return Err(field_err(
                "storage.group_commit_window_min_waiting",
                format!("must be between 1 and {MAX_GROUP_COMMIT_WINDOW_MIN_WAITING} (the most writes one sync releases)"),
            ));
        }
        if self.storage.write_buffer_bytes < (1 << 20) {
            return Err(field_err(
                "storage.write_buffer_bytes",
                "must be at least 1 MiB",
            ));
        }
        // A candidate's seeds are only its bootstrap contacts: its member count comes
        // from the layout it learns.
        let members = if self.is_candidate() {
            self.seeds.len().max(usize::from(self.replication.n))
        } else {
            self.seeds.len()
        };
        self.engine_config()
            .validate(members)
            .map_err(|e| field_err(e.field, e.problem))?;
        self.cluster.peer_wire_version()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory holding the (empty) TLS files the default config names, which
    /// validation requires to exist.
    fn dir_with_tls_files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "node.pem", "node.key"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        dir
    }

    /// The documented file spells out every engine default: parsing it gives the engine's
    /// own defaults (but for the single-node quorums it starts with).
    #[test]
    fn default_config_file_matches_the_engine_defaults() {
        let cfg: NodeConfig = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        let defaults = EngineConfig::default();
        let expected = EngineConfig {
            replication: ReplicationConfig {
                n: 1,
                r: 1,
                w: 1,
                ..defaults.replication
            },
            ..defaults
        };
        assert_eq!(cfg.engine_config(), expected);
        assert_eq!(cfg.storage, StorageConfig::default());
        assert_eq!(cfg.transport, TransportConfig::default());
        assert_eq!(cfg.partitions, shoal_ring::DEFAULT_PARTITIONS);
        assert_eq!(cfg.log_format, LogFormat::Text);
        assert_eq!(cfg.cluster, ClusterConfig::default());
    }

    /// `log_format` takes `text` or `json`, defaults to `text`, and any other value is a
    /// parse error that names the field's allowed values and the line.
    #[test]
    fn log_format_is_text_or_json() {
        let dir = dir_with_tls_files();
        let path = dir.path().join("node.toml");
        let with = |value: &str| {
            DEFAULT_CONFIG_TOML.replacen(
                "log_format = \"text\"",
                &format!("log_format = {value}"),
                1,
            )
        };
        assert_ne!(
            with("\"json\""),
            DEFAULT_CONFIG_TOML,
            "the default file sets log_format"
        );
        let cfg = NodeConfig::parse(&with("\"json\""), &path, dir.path()).unwrap();
        assert_eq!(cfg.log_format, LogFormat::Json);
        let cfg = NodeConfig::parse(&with("\"text\""), &path, dir.path()).unwrap();
        assert_eq!(cfg.log_format, LogFormat::Text);
        let without = DEFAULT_CONFIG_TOML.replacen("log_format = \"text\"\n", "", 1);
        let cfg = NodeConfig::parse(&without, &path, dir.path()).unwrap();
        assert_eq!(cfg.log_format, LogFormat::Text, "absent: text");
        for bad in ["\"JSON\"", "\"xml\"", "1"] {
            match NodeConfig::parse(&with(bad), &path, dir.path()) {
                Err(ConfigError::Parse { message, .. }) => assert!(
                    message.contains("log_format") && message.contains("line"),
                    "{bad}: {message}"
                ),
                other => panic!("log_format = {bad} accepted: {other:?}"),
            }
        }
    }

    /// The wire version sent to peers can be pinned to any version this build speaks,
    /// and nothing else.
    #[test]
    fn the_peer_wire_version_is_one_this_build_speaks() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "node.pem", "node.key"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let path = dir.path().join("node.toml");
        let cfg = NodeConfig::parse(DEFAULT_CONFIG_TOML, &path, dir.path()).unwrap();
        assert_eq!(
            cfg.cluster.peer_wire_version().unwrap(),
            WireVersion::CURRENT
        );
        let pinned = DEFAULT_CONFIG_TOML.replacen("wire_version = 6", "wire_version = 1", 1);
        let cfg = NodeConfig::parse(&pinned, &path, dir.path()).unwrap();
        assert_eq!(
            cfg.cluster.peer_wire_version().unwrap(),
            WireVersion::OLDEST
        );
        for bad in ["0", "7"] {
            let text = DEFAULT_CONFIG_TOML.replacen(
                "wire_version = 6",
                &format!("wire_version = {bad}"),
                1,
            );
            match NodeConfig::parse(&text, &path, dir.path()) {
                Err(ConfigError::Field { field, problem }) => {
                    assert_eq!(field, "cluster.wire_version");
                    assert!(problem.contains("1..=6"), "{problem}");
                }
                other => panic!("wire_version = {bad}: {other:?}"),
            }
        }
    }

    /// The `[transport]` bounds are checked with the node's own frame limit, and an
    /// error names the section.
    #[test]
    fn transport_bounds_are_validated_against_the_frame_limit() {
        let dir = dir_with_tls_files();
        let path = dir.path().join("node.toml");
        // A client budget smaller than one 16 MiB object cannot serve it.
        let text = DEFAULT_CONFIG_TOML.replacen(
            "max_inflight_bytes_per_client = 67108864",
            "max_inflight_bytes_per_client = 1048576",
            1,
        );
        let err = NodeConfig::parse(&text, &path, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("transport")
                && err.to_string().contains("max_inflight_bytes_per_client"),
            "{err}"
        );
        let text = DEFAULT_CONFIG_TOML.replacen(
            "request_read_timeout = \"10s\"",
            "request_read_timeout = \"0s\"",
            1,
        );
        let err = NodeConfig::parse(&text, &path, dir.path()).unwrap_err();
        assert!(err.to_string().contains("request_read_timeout"), "{err}");
        // Request timeout bounds must hold the default request timeout.
        let text = DEFAULT_CONFIG_TOML.replacen(
            "max_request_timeout = \"60s\"",
            "max_request_timeout = \"2s\"",
            1,
        );
        let err = NodeConfig::parse(&text, &path, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("replication.request_timeout"),
            "{err}"
        );
        let text = DEFAULT_CONFIG_TOML.replacen(
            "max_request_timeout = \"60s\"",
            "max_request_timeout = \"2h\"",
            1,
        );
        let err = NodeConfig::parse(&text, &path, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_request_timeout"),
            "{err}"
        );
    }

    /// A config with no engine sections gets the engine's defaults.
    #[test]
    fn missing_sections_take_the_engine_defaults() {
        let text = "id = \"n1\"\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"d\"\n\
                    [[seeds]]\nid = \"n1\"\naddr = \"127.0.0.1:7001\"\n\
                    [tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
                    [aae]\ninterval = \"10s\"\n";
        let cfg: NodeConfig = toml::from_str(text).unwrap();
        let mut expected = EngineConfig::default();
        expected.aae.interval = std::time::Duration::from_secs(10);
        assert_eq!(cfg.engine_config(), expected);
    }

    /// `tls.admin_clients` takes client names, and a name a certificate could not carry
    /// is refused under its field.
    #[test]
    fn admin_clients_must_be_client_names() {
        let dir = dir_with_tls_files();
        let path = dir.path().join("node.toml");
        let with = |names: &str| {
            DEFAULT_CONFIG_TOML.replacen(
                "admin_clients = []",
                &format!("admin_clients = {names}"),
                1,
            )
        };
        let cfg = NodeConfig::parse(&with("[\"ops\", \"backup-robot\"]"), &path, dir.path())
            .expect("client names are accepted");
        assert_eq!(cfg.tls.admin_clients, ["ops", "backup-robot"]);
        match NodeConfig::parse(&with("[\"ops\", \"not a name/\"]"), &path, dir.path()) {
            Err(ConfigError::Field { field, .. }) => assert_eq!(field, "tls.admin_clients"),
            other => panic!("an invalid client name was accepted: {other:?}"),
        }
    }

    /// Engine rules are reported under the file's own names, `section.key`.
    #[test]
    fn engine_errors_name_the_section_and_key() {
        let dir = dir_with_tls_files();
        let text = DEFAULT_CONFIG_TOML.replacen("ttl = \"3h\"", "ttl = \"2days\"", 1);
        let path = dir.path().join("node.toml");
        NodeConfig::parse(DEFAULT_CONFIG_TOML, &path, dir.path()).expect("the default is valid");
        match NodeConfig::parse(&text, &path, dir.path()) {
            Err(ConfigError::Field { field, .. }) => assert_eq!(field, "handoff.ttl"),
            other => panic!("a hint TTL past the tombstone grace period: {other:?}"),
        }
    }

    /// The group-commit window parses as a duration and is bounded: a longer one would
    /// hold every write under load that long.
    #[test]
    fn the_group_commit_window_parses_and_is_bounded() {
        let dir = dir_with_tls_files();
        let path = dir.path().join("node.toml");
        let with = |window: &str| {
            DEFAULT_CONFIG_TOML.replacen(
                "group_commit_window = \"1ms\"",
                &format!("group_commit_window = \"{window}\""),
                1,
            )
        };
        let cfg = NodeConfig::parse(DEFAULT_CONFIG_TOML, &path, dir.path()).unwrap();
        assert_eq!(cfg.storage.group_commit_window, DEFAULT_GROUP_COMMIT_WINDOW);
        let cfg = NodeConfig::parse(&with("0s"), &path, dir.path()).unwrap();
        assert_eq!(cfg.storage.group_commit_window, Duration::ZERO);
        let cfg = NodeConfig::parse(&with("2ms"), &path, dir.path()).unwrap();
        assert_eq!(cfg.storage.group_commit_window, Duration::from_millis(2));
        match NodeConfig::parse(&with("1s"), &path, dir.path()) {
            Err(ConfigError::Field { field, .. }) => {
                assert_eq!(field, "storage.group_commit_window")
            }
            other => panic!("a one-second group-commit window was accepted: {other:?}"),
        }
    }

    /// The quiet time that ends a group-commit window early parses as a duration and
    /// is bounded as the window is; "0s" turns it off.
    #[test]
    fn the_group_commit_window_quiet_time_parses_and_is_bounded() {
        let dir = dir_with_tls_files();
        let path = dir.path().join("node.toml");
        let with = |quiet: &str| {
            DEFAULT_CONFIG_TOML.replacen(
                "group_commit_window_quiet = \"0s\"",
                &format!("group_commit_window_quiet = \"{quiet}\""),
                1,
            )
        };
        let cfg = NodeConfig::parse(DEFAULT_CONFIG_TOML, &path, dir.path()).unwrap();
        assert_eq!(
            cfg.storage.group_commit_window_quiet,
            DEFAULT_GROUP_COMMIT_WINDOW_QUIET
        );
        assert_eq!(cfg.storage.group_commit_window_quiet, Duration::ZERO);
        let cfg = NodeConfig::parse(&with("250us"), &path, dir.path()).unwrap();
        assert_eq!(
            cfg.storage.group_commit_window_quiet,
            Duration::from_micros(250)
        );
        let cfg = NodeConfig::parse(&with("500us"), &path, dir.path()).unwrap();
        assert_eq!(
            cfg.storage.group_commit_window_quiet,
            Duration::from_micros(500)
        );
        match NodeConfig::parse(&with("1s"), &path, dir.path()) {
            Err(ConfigError::Field { field, .. }) => {
                assert_eq!(field, "storage.group_commit_window_quiet")
            }
            other => panic!("a one-second quiet time was accepted: {other:?}"),
        }
    }

    /// The flush and compaction threads' priority: `low` by default, `normal` on
    /// request, anything else refused.
    #[test]
    fn the_background_priority_is_low_or_normal() {
        let dir = dir_with_tls_files();
        let path = dir.path().join("node.toml");
        let with = |priority: &str| {
            DEFAULT_CONFIG_TOML.replacen(
                "background_priority = \"low\"",
                &format!("background_priority = \"{priority}\""),
                1,
            )
        };
        let cfg = NodeConfig::parse(DEFAULT_CONFIG_TOML, &path, dir.path()).unwrap();
        assert_eq!(
            cfg.storage.background_priority,
            shoal_storage::BackgroundPriority::Low
        );
        let cfg = NodeConfig::parse(&with("normal"), &path, dir.path()).unwrap();
        assert_eq!(
            cfg.storage.background_priority,
            shoal_storage::BackgroundPriority::Normal
        );
        let err = NodeConfig::parse(&with("idle"), &path, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("background_priority"),
            "the error names the setting: {err}"
        );
    }

    /// The waiting writes that open the group-commit window: 4 by default, at least 1,
    /// at most the most writes one sync releases.
    #[test]
    fn the_group_commit_window_opens_from_a_bounded_number_of_waiting_writes() {
        let dir = dir_with_tls_files();
        let path = dir.path().join("node.toml");
        let with = |n: usize| {
            DEFAULT_CONFIG_TOML.replacen(
                "group_commit_window_min_waiting = 4",
                &format!("group_commit_window_min_waiting = {n}"),
                1,
            )
        };
        let cfg = NodeConfig::parse(DEFAULT_CONFIG_TOML, &path, dir.path()).unwrap();
        assert_eq!(
            cfg.storage.group_commit_window_min_waiting,
            DEFAULT_GROUP_COMMIT_WINDOW_MIN_WAITING
        );
        assert_eq!(
            cfg.storage,
            StorageConfig::default(),
            "the file states the defaults"
        );
        for n in [1, 2, MAX_GROUP_COMMIT_WINDOW_MIN_WAITING] {
            let cfg = NodeConfig::parse(&with(n), &path, dir.path()).unwrap();
            assert_eq!(cfg.storage.group_commit_window_min_waiting, n);
        }
        for n in [0, MAX_GROUP_COMMIT_WINDOW_MIN_WAITING + 1] {
            match NodeConfig::parse(&with(n), &path, dir.path()) {
                Err(ConfigError::Field { field, .. }) => {
                    assert_eq!(field, "storage.group_commit_window_min_waiting")
                }
                other => panic!("min_waiting {n} was accepted: {other:?}"),
            }
        }
    }

    /// Which write paths each durability setting turns on: inline writes need a store
    /// that does not sync them; their WAL records stay in the process with `buffered`
    /// (the driver writes a round's out) and with group commit (the committer's sync
    /// writes them out), never with per-write fsyncs.
    #[test]
    fn write_paths_follow_durability_and_group_commit() {
        let storage = |durability, group_commit, inline_writes, group_wal_writes| StorageConfig {
            durability,
            group_commit,
            inline_writes,
            group_wal_writes,
            ..StorageConfig::default()
        };
        let paths = |s: &StorageConfig| {
            (
                s.group_commits(),
                s.runs_inline_writes(),
                s.buffers_wal_records(),
                s.writes_out_wal_per_round(),
            )
        };
        let (buffered, sync) = (Durability::Buffered, Durability::Sync);
        // (group commit, inline writes, records buffered, driver writes them out)
        assert_eq!(paths(&StorageConfig::default()), (false, true, true, true));
        assert_eq!(
            paths(&storage(sync, true, true, true)),
            (true, true, true, false)
        );
        assert_eq!(
            paths(&storage(sync, false, true, true)),
            (false, false, false, false)
        );
        assert_eq!(
            paths(&storage(sync, true, true, false)),
            (true, true, false, false)
        );
        assert_eq!(
            paths(&storage(sync, true, false, true)),
            (true, false, false, false)
        );
        assert_eq!(
            paths(&storage(buffered, true, true, false)),
            (false, true, false, false)
        );
        assert_eq!(
            paths(&storage(buffered, false, false, true)),
            (false, false, false, false)
        );
    }

    /// The clock-skew margin is a node setting, checked with the other engine rules.
    #[test]
    fn the_clock_skew_margin_is_enforced_on_the_node_config() {
        let dir = dir_with_tls_files();
        let path = dir.path().join("node.toml");
        let cfg = NodeConfig::parse(DEFAULT_CONFIG_TOML, &path, dir.path()).expect("valid");
        assert_eq!(
            cfg.engine_config().replication.max_clock_skew,
            std::time::Duration::from_secs(10)
        );
        // 3 h + 2 × 1 h is not below 4 h.
        let text = DEFAULT_CONFIG_TOML
            .replacen("max_clock_skew = \"10s\"", "max_clock_skew = \"1h\"", 1)
            .replacen("tombstone_grace = \"1day\"", "tombstone_grace = \"4h\"", 1);
        match NodeConfig::parse(&text, &path, dir.path()) {
            Err(ConfigError::Field { field, .. }) => {
                assert_eq!(field, "replication.tombstone_grace")
            }
            other => panic!("a grace period inside the skew margin: {other:?}"),
        }
    }
}
