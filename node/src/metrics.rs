//! The Prometheus exporter: every node serves its metrics over HTTP.

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::config::NodeConfig;

/// Histogram buckets for latencies, from 10 µs to 10 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets for sizes, from 64 B to 64 MiB.
pub const SIZE_BUCKETS_BYTES: &[f64] = &[
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// The kind of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonically increasing count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution (latencies, sizes).
    Histogram,
}

/// Every metric a node emits, with its type and a one-line description (the catalogue
/// in docs/METRICS.md has the labels and details). Registered with the recorder at
/// start so that Prometheus shows HELP and TYPE lines for each.
pub const NODE_METRICS: &[(&str, MetricKind, &str)] = &[
    ("shoal_requests_total", MetricKind::Counter, "Client requests answered by this node, by operation and outcome, as the client saw them (coordinated here or forwarded)"),
    ("shoal_request_duration_seconds", MetricKind::Histogram, "Time from decoding a client request to having its answer, on the node the client called, whatever the outcome"),
    ("shoal_coordinator_requests_received_total", MetricKind::Counter, "Client requests (direct or forwarded) that reached this node's replication engine"),
    ("shoal_coordinator_requests_total", MetricKind::Counter, "Keyed requests this node coordinated (or refused before coordinating), by outcome"),
    ("shoal_coordinator_duration_seconds", MetricKind::Histogram, "Time from the start of a successful coordinated request to its quorum answer (R replies or W acks)"),
    ("shoal_quorum_failures_total", MetricKind::Counter, "Coordinated requests that failed to reach their read or write quorum"),
    ("shoal_coordinator_local_read_failures_total", MetricKind::Counter, "(conditional: a failing local disk) Coordinated reads whose own local read failed; the read goes on with the other replicas"),
    ("shoal_read_repairs_total", MetricKind::Counter, "Replicas sent the merged object after a read because their copy was missing or behind (one per stale replica)"),
    ("shoal_read_repair_failures_total", MetricKind::Counter, "(conditional: a replica failing right after it answered the read) Read repairs the target did not acknowledge"),
    ("shoal_forwards_total", MetricKind::Counter, "(conditional: only where N is smaller than the cluster, so that some node is not a replica of a key) Attempts to hand a client request to a replica (one per candidate tried)"),
    ("shoal_forwarded_requests_total", MetricKind::Counter, "(conditional: as shoal_forwards_total) Forwarded client requests, by the outcome the replica gave"),
    ("shoal_refused_requests_total", MetricKind::Counter, "Requests refused for the sender's role or identity"),
    ("shoal_peer_requests_sent_total", MetricKind::Counter, "Requests this node's engine issued to other nodes"),
    ("shoal_peer_requests_total", MetricKind::Counter, "Completed requests to other nodes, by outcome (unreachable: no connection or a closed one; invalid: an undecodable answer)"),
    ("shoal_peer_requests_served_total", MetricKind::Counter, "Requests from other nodes this node answered"),
    ("shoal_peer_request_duration_seconds", MetricKind::Histogram, "Time to answer a request from another node (decode to answer)"),
    ("shoal_replica_requests_total", MetricKind::Counter, "Requests from members that reached the replication engine (replica side)"),
    ("shoal_members", MetricKind::Gauge, "Members of the cluster in each state as this node sees them (itself included, always up)"),
    ("shoal_member_state_changes_total", MetricKind::Counter, "Times this node saw a member change state (a failed probe or send marks it down, any answer up)"),
    ("shoal_gossip_rounds_total", MetricKind::Counter, "Gossip rounds started (one random peer per membership.gossip_interval)"),
    ("shoal_hints_total", MetricKind::Counter, "Hint lifecycle events on this node"),
    ("shoal_hints_pending", MetricKind::Gauge, "Hints this node holds for each target, refreshed every handoff.interval (a target that drained reports 0)"),
    ("shoal_hints_pending_bytes", MetricKind::Gauge, "Size of the hints this node holds for each target"),
    ("shoal_aae_exchanges_total", MetricKind::Counter, "Merkle-tree exchanges this node started and finished (it starts those with peers of a larger id)"),
    ("shoal_aae_exchange_duration_seconds", MetricKind::Histogram, "Duration of exchanges, from start to end, whatever the result"),
    ("shoal_aae_exchanges_running", MetricKind::Gauge, "Exchanges in progress (at most aae.max_concurrent_exchanges)"),
    ("shoal_aae_leaves_compared_total", MetricKind::Counter, "Leaf segments whose key lists were compared (only segments whose hashes differ)"),
    ("shoal_aae_keys_repaired_total", MetricKind::Counter, "Keys an exchange found missing or different and repaired"),
    ("shoal_aae_bytes_total", MetricKind::Counter, "Anti-entropy payload volume"),
    ("shoal_aae_budget_ratio", MetricKind::Gauge, "The admission-control multiplier on the repair budget: 1 when foreground latency and load are low, halved while they are high; below 0.25 no new exchange or reap starts"),
    ("shoal_aae_tree_mismatches_total", MetricKind::Counter, "(conditional: an incremental tree that disagrees with storage, i.e"),
    ("shoal_aae_objects_too_large_total", MetricKind::Counter, "(conditional: an object over limits.max_object_bytes after a merge) Objects an exchange could not repair because they are too large"),
    ("shoal_tombstones_reaped_total", MetricKind::Counter, "Tombstones deleted after replication.tombstone_grace once every replica held the same one (counted on every replica that deleted)"),
    ("shoal_driver_inflight_requests", MetricKind::Gauge, "Requests the engine is coordinating (bounded by limits.max_inflight_requests)"),
    ("shoal_driver_pending_commands", MetricKind::Gauge, "Engine commands waiting for a storage or network result"),
    ("shoal_driver_queue_depth", MetricKind::Gauge, "Storage operations queued for the storage threads"),
    ("shoal_executor_op_duration_seconds", MetricKind::Histogram, "Time to run one engine storage operation (read-modify-write under the key's lock, Merkle-tree update included), queueing excluded"),
    ("shoal_executor_errors_total", MetricKind::Counter, "(conditional: a failing disk or an unreadable record) Storage operations that failed"),
    ("shoal_engine_storage_failures_total", MetricKind::Counter, "(conditional: a failing disk or an unreadable record) Storage results the replication engine received as failures (any waiter: coordinator, replica, handoff, anti-entropy)"),
    ("shoal_storage_ops_total", MetricKind::Counter, "Storage engine operations by kind and space (column family); a write batch counts each of its operations"),
    ("shoal_storage_op_duration_seconds", MetricKind::Histogram, "Latency of storage engine calls"),
    ("shoal_storage_errors_total", MetricKind::Counter, "(conditional: a failing disk) Storage engine calls that failed"),
    ("shoal_storage_write_batch_bytes", MetricKind::Histogram, "Size of each write batch"),
    ("shoal_rocksdb_live_data_bytes", MetricKind::Gauge, "RocksDB's estimate of live data (rocksdb.estimate-live-data-size), refreshed every 5 s"),
    ("shoal_rocksdb_pending_compaction_bytes", MetricKind::Gauge, "Bytes compaction still has to rewrite (rocksdb.estimate-pending-compaction-bytes); growth means compaction is falling behind"),
    ("shoal_rocksdb_block_cache_usage_bytes", MetricKind::Gauge, "Memory held by the block cache (bounded by storage.block_cache_bytes)"),
    ("shoal_rocksdb_memtable_bytes", MetricKind::Gauge, "Memory held by memtables (bounded by storage.write_buffer_bytes per column family)"),
    ("shoal_rocksdb_estimated_keys", MetricKind::Gauge, "RocksDB's estimate of the number of keys (objects, hints and metadata)"),
    ("shoal_transport_requests_total", MetricKind::Counter, "Request/response exchanges on QUIC streams, both directions"),
    ("shoal_transport_request_duration_seconds", MetricKind::Histogram, "Duration of outgoing requests, connection setup included"),
    ("shoal_transport_connections", MetricKind::Gauge, "Open QUIC connections, both directions"),
    ("shoal_transport_bytes_total", MetricKind::Counter, "Frame bytes, length prefix included"),
    ("shoal_transport_handshake_failures_total", MetricKind::Counter, "Failed QUIC/TLS handshakes and refused peers (a certificate of another CA, a client certificate dialled as a node, too many connections)"),
    ("shoal_transport_unresponsive_connections_total", MetricKind::Counter, "Cached connections closed because the peer sent nothing during a timed-out request (killed, stopped or partitioned away); the next request dials again"),
    ("shoal_transport_inflight_bytes", MetricKind::Gauge, "Bytes of requests and responses held in flight by role"),
    ("shoal_transport_requests_refused_total", MetricKind::Counter, "(conditional: the in-flight byte budget spent) Requests refused before their body was read"),
    ("shoal_transport_connections_refused_total", MetricKind::Counter, "(conditional: a connection limit reached, or an idle client) Connections refused or closed for a limit"),
    ("shoal_transport_stream_timeouts_total", MetricKind::Counter, "(conditional: a peer too slow to send or read) Streams aborted because the peer was too slow"),
    ("shoal_transport_retries_total", MetricKind::Counter, "(conditional: a handshake flood) Incoming connections asked to prove their address"),
    ("shoal_transport_frame_errors_total", MetricKind::Counter, "(conditional: a peer sending malformed frames) Invalid frames received, and responses over the frame limit"),
];

/// Register a description (HELP and TYPE) of every node metric with the installed
/// recorder, and create the counters that only faults increment at zero, so that rate
/// panels and alerts see `0` instead of no data on a healthy node.
pub fn describe_node_metrics() {
    for &(name, kind, help) in NODE_METRICS {
        match kind {
            MetricKind::Counter => metrics::describe_counter!(name, help),
            MetricKind::Gauge => metrics::describe_gauge!(name, help),
            MetricKind::Histogram => {
                let unit = if name.ends_with("_seconds") {
                    metrics::Unit::Seconds
                } else {
                    metrics::Unit::Bytes
                };
                metrics::describe_histogram!(name, unit, help)
            }
        }
    }
    shoal_transport::metrics::describe_metrics();
    metrics::counter!("shoal_engine_storage_failures_total").absolute(0);
    metrics::counter!("shoal_coordinator_local_read_failures_total").absolute(0);
    metrics::counter!("shoal_read_repair_failures_total").absolute(0);
    metrics::counter!("shoal_aae_tree_mismatches_total").absolute(0);
    metrics::counter!("shoal_aae_objects_too_large_total").absolute(0);
    metrics::counter!("shoal_forwards_total").absolute(0);
}

/// Install the global recorder and its HTTP listener if `metrics_listen` is set. Must run
/// inside a tokio runtime. Every series carries a `node` label.
pub fn install(cfg: &NodeConfig) -> anyhow::Result<()> {
    let Some(addr) = cfg.metrics_listen else {
        return Ok(());
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .add_global_label("node", cfg.id.to_string())
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), SIZE_BUCKETS_BYTES)?
        .install()
        .with_context(|| format!("starting the metrics listener on {addr}"))?;
    describe_node_metrics();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descriptions registered at start cover exactly the node metrics of the
    /// catalogue, with the same types.
    #[test]
    fn node_metric_descriptions_match_the_catalogue() {
        let doc = include_str!("../../docs/METRICS.md");
        let body = doc.split("## SDK").next().unwrap_or(doc);
        let mut catalogued: Vec<(String, String)> = body
            .lines()
            .filter(|l| l.starts_with("| `shoal_"))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                let name = cells[0].trim_matches('`').to_string();
                let kind = cells[1].trim_matches(|c| c == '`' || c == '*').to_string();
                (name, kind)
            })
            .collect();
        catalogued.sort();
        let mut described: Vec<(String, String)> = NODE_METRICS
            .iter()
            .map(|(n, k, _)| {
                let kind = match k {
                    MetricKind::Counter => "counter",
                    MetricKind::Gauge => "gauge",
                    MetricKind::Histogram => "histogram",
                };
                (n.to_string(), kind.to_string())
            })
            .collect();
        described.sort();
        assert_eq!(described, catalogued);
    }
}
