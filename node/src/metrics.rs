//! The Prometheus exporter: every node serves its metrics over HTTP.

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use shoal_executor::metrics as executor;
use shoal_proto::metrics as engine;
use shoal_storage::metrics as storage;
use shoal_transport::metrics as transport;

use crate::config::NodeConfig;

/// Histogram buckets for latencies, from 10 µs to 10 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets for hint delivery lag, from 100 ms to 1 day: hints wait for their
/// primary to come back, which can take hours (up to `handoff.ttl`).
pub const HINT_LAG_BUCKETS_SECONDS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0, 43200.0,
    86400.0,
];

/// Buckets of [`GROUP_COMMIT_WRITES`] (writes one fsync acknowledged) and of
/// [`WAL_WRITE_OUT_WRITES`].
pub const GROUP_COMMIT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];
/// Buckets of [`PEER_BATCH_REQUESTS`]: requests per batch, up to its limit (64).
pub const PEER_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0];
/// Histogram buckets for sibling counts: around the default warning level (25) and limit
/// (100), and beyond (replica merges are never refused for their siblings).
pub const SIBLING_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

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

// Metrics the node records itself (the engine's, the executor's, the storage engines'
// and the transport's are named in their crates).

/// Counter, by `op` (a client operation, or `malformed`) and `result`: client requests
/// answered by this node, as the client saw them (coordinated here or forwarded).
pub const REQUESTS_TOTAL: &str = "shoal_requests_total";
/// Histogram, by `op`, in seconds: decoding a client request to having its answer,
/// whatever the outcome.
pub const REQUEST_DURATION_SECONDS: &str = "shoal_request_duration_seconds";
/// Counter, by `op` (a node-to-node operation): requests from other nodes answered.
pub const PEER_REQUESTS_SERVED_TOTAL: &str = "shoal_peer_requests_served_total";
/// Histogram, by `op`, in seconds: time to answer a request from another node.
pub const PEER_REQUEST_DURATION_SECONDS: &str = "shoal_peer_request_duration_seconds";
/// Histogram, by `direction` (`sent`, `received`), in requests: the node-to-node
/// requests one batch carried (several requests due to the same peer in one frame).
pub const PEER_BATCH_REQUESTS: &str = "shoal_peer_batch_requests";
/// Histogram, in requests: the client requests one batch frame carried
/// (`ClientRequest::Batch`, wire version 6).
pub const CLIENT_BATCH_REQUESTS: &str = "shoal_batched_client_requests";
/// Counter, by `outcome` (`served`, `declined`, `engine`): clients' replica reads the
/// request handler answered from memory, declined, or handed to the engine.
pub const HANDLER_REPLICA_READS_TOTAL: &str = "shoal_handler_replica_reads_total";
/// Counter, by `outcome` (`served`, `engine`): peers' replica writes the request handler
/// merged itself, or handed to the engine.
pub const HANDLER_REPLICA_MERGES_TOTAL: &str = "shoal_handler_replica_merges_total";
/// Counter, by `op` and `result` (`ok`, `timeout`, `unreachable`, `invalid`): completed
/// requests to other nodes.
pub const PEER_REQUESTS_TOTAL: &str = "shoal_peer_requests_total";
/// Gauge: requests the engine is coordinating.
pub const DRIVER_INFLIGHT_REQUESTS: &str = "shoal_driver_inflight_requests";
/// Gauge: engine commands waiting for a storage or network result.
pub const DRIVER_PENDING_COMMANDS: &str = "shoal_driver_pending_commands";
/// Gauge, by `queue` (`storage`): storage operations queued for the storage threads.
pub const DRIVER_QUEUE_DEPTH: &str = "shoal_driver_queue_depth";
/// Histogram, by `op` (an engine storage operation), in seconds: time to run one
/// operation on a storage thread, queueing excluded.
pub const EXECUTOR_OP_DURATION_SECONDS: &str = "shoal_executor_op_duration_seconds";
/// Histogram, in seconds: one WAL fsync of group commit (`durability = "sync"`).
pub const GROUP_COMMIT_SYNC_SECONDS: &str = "shoal_group_commit_sync_seconds";
/// Histogram, in writes: the writing storage ops one group-commit fsync acknowledged.
pub const GROUP_COMMIT_WRITES: &str = "shoal_group_commit_writes";
/// Histogram, in seconds: how long a group commit gathered writes after the first one
/// arrived, in groups that used `storage.group_commit_window` (enough writes waiting).
pub const GROUP_COMMIT_WINDOW_SECONDS: &str = "shoal_group_commit_window_seconds";
/// Counter: group-commit fsyncs that failed (their writes were reported failed).
pub const GROUP_COMMIT_FAILURES_TOTAL: &str = "shoal_group_commit_failures_total";
/// Histogram, in seconds: one write-out of the WAL records of the writes the driver ran
/// in a round (`storage.group_wal_writes`).
pub const WAL_WRITE_OUT_SECONDS: &str = "shoal_wal_write_out_seconds";
/// Histogram, in writes: the writes one WAL write-out covered.
pub const WAL_WRITE_OUT_WRITES: &str = "shoal_wal_write_out_writes";
/// Counter: WAL write-outs that failed (their writes were reported failed).
pub const WAL_WRITE_OUT_FAILURES_TOTAL: &str = "shoal_wal_write_out_failures_total";
/// Counter, by `op` (`coordinate_inline`, `merge_inline`): writes tried on the driver's
/// thread (`storage.inline_writes`) that would have had to wait, handed to a storage
/// thread instead.
pub const STORAGE_INLINE_DECLINED_TOTAL: &str = "shoal_storage_inline_declined_total";
/// Counter, by `op` (as [`EXECUTOR_OP_DURATION_SECONDS`]): storage operations that failed.
pub const EXECUTOR_ERRORS_TOTAL: &str = "shoal_executor_errors_total";
/// Gauge, in bytes: RocksDB's estimate of live data.
pub const ROCKSDB_LIVE_DATA_BYTES: &str = "shoal_rocksdb_live_data_bytes";
/// Gauge, in bytes: bytes compaction still has to rewrite.
pub const ROCKSDB_PENDING_COMPACTION_BYTES: &str = "shoal_rocksdb_pending_compaction_bytes";
/// Gauge, in bytes: memory held by the block cache.
pub const ROCKSDB_BLOCK_CACHE_USAGE_BYTES: &str = "shoal_rocksdb_block_cache_usage_bytes";
/// Gauge, in bytes: memory held by memtables.
pub const ROCKSDB_MEMTABLE_BYTES: &str = "shoal_rocksdb_memtable_bytes";
/// Gauge: RocksDB's estimate of the number of keys.
pub const ROCKSDB_ESTIMATED_KEYS: &str = "shoal_rocksdb_estimated_keys";
/// Gauge, in bytes: memory held by the cache of recently written and read objects
/// (`storage.object_cache_bytes`).
pub const STORAGE_OBJECT_CACHE_BYTES: &str = "shoal_storage_object_cache_bytes";
/// Counter, by `result` (`hit`, `miss`): object reads looked up in that cache.
pub const STORAGE_OBJECT_CACHE_LOOKUPS_TOTAL: &str = "shoal_storage_object_cache_lookups_total";

/// Gauge, always 1, by `version` (the crate version) and `commit` (`SHOAL_COMMIT` at
/// build time, else `unknown`): which build a node runs, for joins in queries.
pub const BUILD_INFO: &str = "shoal_build_info";

/// The commit the binary was built from: the `SHOAL_COMMIT` environment variable at
/// build time (set by release builds), or `unknown`; builds never depend on git.
pub const BUILD_COMMIT: &str = match option_env!("SHOAL_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Counter, by `role` (`client`, `peer`) and `version` (the frame's wire version): requests
/// decoded, so that an operator sees when no member or client of the previous release
/// is left (docs/ARCHITECTURE.md, "Rolling upgrades").
pub const WIRE_REQUESTS_TOTAL: &str = "shoal_wire_requests_total";
/// Gauge: the wire version this node sends other nodes (`[cluster] wire_version`).
pub const WIRE_VERSION_SENT: &str = "shoal_wire_version_sent";
/// Counter, by `version` (the one sent instead): peer requests refused for their wire
/// version by a peer of an older release and sent again in the version it speaks.
pub const WIRE_VERSION_FALLBACKS_TOTAL: &str = "shoal_wire_version_fallbacks_total";

/// Counter, by `reason` (`connections`, `request_too_large`, `timeout`): connections
/// the metrics listener closed without an answer because a bound was reached.
pub const METRICS_HTTP_REFUSED_TOTAL: &str = "shoal_metrics_http_refused_total";
/// Histogram, in seconds: how long one upkeep of the metrics recorder took (folding the
/// histogram values recorded since the last one into their buckets), every second on a
/// blocking thread.
pub const METRICS_UPKEEP_DURATION_SECONDS: &str = "shoal_metrics_upkeep_duration_seconds";

/// Gauge, in seconds: user plus system CPU time the node process has used since it
/// started (`/proc/self/stat`). It only grows: read it with `rate()`. A gauge and not a
/// counter because the `metrics` facade's counters are integers and CPU time has
/// clock-tick resolution.
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "shoal_process_cpu_seconds_total";
/// Counter: windows in which the node's runtime polled its sockets after waking instead
/// of sleeping at once (`limits.idle_poll`; see `idle_poll.rs`).
pub const IDLE_POLL_WINDOWS_TOTAL: &str = "shoal_idle_poll_windows_total";
/// Gauge, in seconds: time the idle poller spent in turns that found nothing to do. It
/// only grows: read it with `rate()` (a gauge because the facade's counters are
/// integers).
pub const IDLE_POLL_SECONDS_TOTAL: &str = "shoal_idle_poll_seconds_total";
/// Counter: idle-poll windows ended early because a turn's yield gave the CPU to a
/// CPU-bound thread (the poller then rests 10 ms to 5.12 s).
pub const IDLE_POLL_CONTENDED_TOTAL: &str = "shoal_idle_poll_contended_total";
/// Counter: idle-poller turns that yielded the CPU to other processes (every turn but
/// those after a turn in which the runtime ran a backlog of work).
pub const IDLE_POLL_CPU_YIELDS_TOTAL: &str = "shoal_idle_poll_cpu_yields_total";
/// Gauge, in bytes: the node process's resident set size.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "shoal_process_resident_memory_bytes";
/// Gauge: file descriptors the node process holds open (sockets, RocksDB files).
pub const PROCESS_OPEN_FDS: &str = "shoal_process_open_fds";
/// Gauge: the node process's soft limit on open file descriptors (`RLIMIT_NOFILE`).
pub const PROCESS_MAX_FDS: &str = "shoal_process_max_fds";
/// Gauge, in bytes: the receive buffer of the node's UDP socket as the kernel reports it
/// (Linux: twice the data it holds), set at start.
pub const UDP_RECEIVE_BUFFER_BYTES: &str = "shoal_udp_receive_buffer_bytes";
/// Counter: datagrams the kernel dropped on the node's UDP socket because its receive
/// buffer was full (from `/proc/net/udp`, read every few seconds).
pub const UDP_RECEIVE_DROPS_TOTAL: &str = "shoal_udp_receive_drops_total";
/// Counter, by `result` (`ok`, `error`): certificate reloads (SIGHUP). An `error` left
/// the node on its previous certificates.
pub const TLS_RELOADS_TOTAL: &str = "shoal_tls_reloads_total";
/// Gauge, by `cert` (`node`, `ca`), in seconds since the Unix epoch: the notAfter of the
/// certificates in use, set at start and at every successful reload.
pub const TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "shoal_tls_certificate_expiry_timestamp_seconds";

/// Counter, by `result` (`ok`, `refused`: a bad name, an existing backup, one in
/// progress; `failed`: the checkpoint or manifest could not be written): `shoal backup`
/// requests served.
pub const BACKUPS_TOTAL: &str = "shoal_backups_total";
/// Histogram, in seconds: time to serve a backup request (checkpoint and manifest).
pub const BACKUP_DURATION_SECONDS: &str = "shoal_backup_duration_seconds";

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
    (REQUESTS_TOTAL, MetricKind::Counter, "Client requests answered by this node, by operation and outcome, as the client saw them (coordinated here or forwarded)"),
    (REQUEST_DURATION_SECONDS, MetricKind::Histogram, "Time from decoding a client request to having its answer, on the node the client called, whatever the outcome"),
    (engine::COORDINATOR_REQUESTS_RECEIVED_TOTAL, MetricKind::Counter, "Client requests (direct or forwarded) that reached this node's replication engine"),
    (engine::COORDINATOR_REQUESTS_TOTAL, MetricKind::Counter, "Keyed requests this node coordinated (or refused before coordinating), by outcome"),
    (engine::COORDINATOR_DURATION_SECONDS, MetricKind::Histogram, "Time from the start of a successful coordinated request to its quorum answer (R replies or W acks)"),
    (engine::QUORUM_FAILURES_TOTAL, MetricKind::Counter, "Coordinated requests that failed to reach their read or write quorum"),
    (engine::COORDINATOR_LOCAL_READ_FAILURES_TOTAL, MetricKind::Counter, "(conditional: a failing local disk) Coordinated reads whose own local read failed; the read goes on with the other replicas"),
    (engine::COORDINATOR_READ_INFLIGHT_BYTES, MetricKind::Gauge, "Bytes of replica copies held by the reads this node coordinates, bounded by limits.max_read_bytes_in_flight"),
    (engine::COORDINATOR_READS_DEFERRED_TOTAL, MetricKind::Counter, "(conditional: reads past half the read budget) Coordinated reads that asked the other replicas only after their own copy showed the object's size, by outcome (sent, overloaded)"),
    (engine::READ_REPAIRS_TOTAL, MetricKind::Counter, "Replicas sent the merged object after a read because their copy was missing or behind (one per stale replica)"),
    (engine::READ_REPAIR_FAILURES_TOTAL, MetricKind::Counter, "(conditional: a replica failing right after it answered the read) Read repairs the target did not acknowledge"),
    (engine::FORWARDS_TOTAL, MetricKind::Counter, "(conditional: only where N is smaller than the cluster, so that some node is not a replica of a key) Attempts to hand a client request to a replica (one per candidate tried)"),
    (engine::FORWARDED_REQUESTS_TOTAL, MetricKind::Counter, "(conditional: as shoal_forwards_total) Forwarded client requests, by the outcome the replica gave"),
    (engine::REFUSED_REQUESTS_TOTAL, MetricKind::Counter, "Requests refused for the sender's role or identity"),
    (engine::PEER_REQUESTS_SENT_TOTAL, MetricKind::Counter, "Requests this node's engine issued to other nodes"),
    (PEER_REQUESTS_TOTAL, MetricKind::Counter, "Completed requests to other nodes, by outcome (unreachable: no connection or a closed one; invalid: an undecodable answer)"),
    (PEER_REQUESTS_SERVED_TOTAL, MetricKind::Counter, "Requests from other nodes this node answered"),
    (WIRE_REQUESTS_TOTAL, MetricKind::Counter, "Requests decoded, by sender role and the wire version they came in"),
    (WIRE_VERSION_SENT, MetricKind::Gauge, "The wire version this node sends other nodes ([cluster] wire_version)"),
    (WIRE_VERSION_FALLBACKS_TOTAL, MetricKind::Counter, "(conditional: an unpinned node next to one of the previous release) Peer requests refused for their wire version and sent again in the peer's"),
    (PEER_BATCH_REQUESTS, MetricKind::Histogram, "Node-to-node requests per batch (several requests due to one peer sent in one frame), by direction"),
    (HANDLER_REPLICA_READS_TOTAL, MetricKind::Counter, "(conditional: clients with direct reads) Clients' replica reads (GetReplica) the request handler answered from memory (served), declined by the engine's rules (declined), or handed to the engine (engine: not in memory, or the rules changed during the read)"),
    (HANDLER_REPLICA_MERGES_TOTAL, MetricKind::Counter, "Peers' replica writes the request handler merged into this node's copy itself (served: admitted by the engine's rules the driver publishes, merged without waiting), or handed to the engine (engine: not admitted, or the merge would have waited or failed)"),
    (CLIENT_BATCH_REQUESTS, MetricKind::Histogram, "(conditional: a client that batches) Client requests per batch frame received (the SDK's requests queued behind its frames in flight to this node)"),
    (PEER_REQUEST_DURATION_SECONDS, MetricKind::Histogram, "Time to answer a request from another node (decode to answer)"),
    (engine::REPLICA_REQUESTS_TOTAL, MetricKind::Counter, "Requests from members that reached the replication engine (replica side)"),
    (engine::MEMBERS, MetricKind::Gauge, "Members of the cluster in each state as this node sees them (itself included, always up)"),
    (engine::MEMBER_STATE_CHANGES_TOTAL, MetricKind::Counter, "Times this node saw a member change state (down after membership.failure_threshold failed contacts in a row and membership.down_after of silence; up at any answer)"),
    (engine::PEER_CONSECUTIVE_FAILURES, MetricKind::Gauge, "Failed contacts with each peer since its last success (the failure detector's count)"),
    (engine::GOSSIP_ROUNDS_TOTAL, MetricKind::Counter, "Gossip rounds started (one random peer per membership.gossip_interval)"),
    (engine::HINTS_TOTAL, MetricKind::Counter, "Hint lifecycle events on this node"),
    (engine::HINTS_PENDING, MetricKind::Gauge, "Hints this node holds for each target, refreshed every handoff.interval (a target that drained reports 0)"),
    (engine::HINTS_PENDING_BYTES, MetricKind::Gauge, "Size of the hints this node holds for each target"),
    (engine::REPLICATION_LAG_SECONDS, MetricKind::Histogram, "From a write's success answer to the acknowledgement of the last of its N primaries (0 when all had acknowledged by then); only writes that reached every primary"),
    (engine::REPLICATION_LAG_UNFINISHED_TOTAL, MetricKind::Counter, "Acknowledged writes that had not reached all N primaries when their coordinator stopped delivering (a copy hinted, unplaced or refused)"),
    (engine::HINT_DELIVERY_LAG_SECONDS, MetricKind::Histogram, "(conditional: a primary down while written to, then back) From a hint's first store to its delivery, on the hint holder's wall clock"),
    (engine::AAE_EXCHANGES_TOTAL, MetricKind::Counter, "Merkle-tree exchanges this node started and finished (it starts those with peers of a larger id)"),
    (engine::AAE_EXCHANGE_DURATION_SECONDS, MetricKind::Histogram, "Duration of exchanges, from start to end, whatever the result"),
    (engine::AAE_EXCHANGES_RUNNING, MetricKind::Gauge, "Exchanges in progress (at most aae.max_concurrent_exchanges)"),
    (engine::AAE_LEAVES_COMPARED_TOTAL, MetricKind::Counter, "Leaf segments whose key lists were compared (only segments whose hashes differ)"),
    (engine::AAE_KEYS_REPAIRED_TOTAL, MetricKind::Counter, "Keys an exchange found missing or different and repaired"),
    (engine::AAE_BYTES_TOTAL, MetricKind::Counter, "Anti-entropy payload volume"),
    (engine::AAE_BUDGET_RATIO, MetricKind::Gauge, "The admission-control multiplier on the repair budget: 1 when foreground latency and load are low, halved while they are high; below 0.25 only overdue exchanges and reaps start, one at a time"),
    (engine::AAE_LAST_EXCHANGE_AGE_SECONDS, MetricKind::Gauge, "How long ago the least recently successful exchange among the pairs this node compares succeeded (from the node's start for a pair that never has); stays within about 2 x aae.interval plus one exchange even under load"),
    (engine::AAE_OVERDUE_STARTS_TOTAL, MetricKind::Counter, "(conditional: sustained foreground load) Exchanges and reap scans started while the budget was below the start threshold because they were overdue"),
    (engine::AAE_BATCHES_SPLIT_TOTAL, MetricKind::Counter, "(conditional: large values) Repair reads cut short by their byte bound; the rest of their keys go in the next batch"),
    (engine::REPLICA_KEYS_REFUSED_TOTAL, MetricKind::Counter, "(conditional: a faulty or hostile member) Keys in replica and anti-entropy messages refused with a typed error (empty, over the key limit, or of another partition)"),
    (executor::AAE_TREE_MISMATCHES_TOTAL, MetricKind::Counter, "(conditional: an incremental tree that disagrees with storage, i.e"),
    (executor::AAE_OBJECTS_TOO_LARGE_TOTAL, MetricKind::Counter, "(conditional: an object over limits.max_object_bytes after a merge) Objects an exchange could not repair because they are too large"),
    (executor::REAPED_COPIES_DROPPED_TOTAL, MetricKind::Counter, "(conditional: a copy of a deleted value arriving after its tombstone's reap) Copies of values a reaped tombstone had replaced that arrived after the reap (a merge queued before it, a message sent before it) and were dropped, not stored"),
    (executor::REAPED_READS_TOTAL, MetricKind::Counter, "(conditional: a read of a key whose tombstone this node reaped lately) Reads of a key whose tombstone this node reaped lately, answered with the tombstone's clock (no value) instead of nothing, so that the reply still includes what the delete replaced"),
    (engine::TOMBSTONES_REAPED_TOTAL, MetricKind::Counter, "Tombstones deleted after replication.tombstone_grace once every replica held the same one (counted on every replica that deleted)"),
    (engine::REAP_RESENDS_TOTAL, MetricKind::Counter, "(conditional: a reap's delete lost, refused or timed out) A reaper's deletes sent again, on a later tick, to a replica that did not confirm the last one (lost, refused, timed out)"),
    (engine::REAPS_INCOMPLETE_TOTAL, MetricKind::Counter, "(conditional: a replica unreachable through every send) Reaped pages a replica never confirmed deleting; it may keep tombstones the others deleted until anti-entropy copies them back and a later reap"),
    (BUILD_INFO, MetricKind::Gauge, "Always 1, labelled with the version and commit this node was built from"),
    (METRICS_UPKEEP_DURATION_SECONDS, MetricKind::Histogram, "How long one upkeep of the metrics recorder took: folding the histogram values recorded since the last one into their buckets (every second, on a blocking thread)"),
    (METRICS_HTTP_REFUSED_TOTAL, MetricKind::Counter, "(conditional: a scraper or probe over a bound) Connections the metrics listener closed unanswered: too many at once, a request head too large, or too slow"),
    (IDLE_POLL_WINDOWS_TOTAL, MetricKind::Counter, "Windows in which the runtime kept polling its sockets after a wake-up instead of sleeping (limits.idle_poll)"),
    (IDLE_POLL_SECONDS_TOTAL, MetricKind::Gauge, "Time the idle poller spent polling with nothing to do (only grows; use rate())"),
    (IDLE_POLL_CONTENDED_TOTAL, MetricKind::Counter, "Idle-poll windows ended early because a turn's yield gave the CPU to a CPU-bound thread; the poller then rests 10 ms to 5.12 s (the runtime sleeps between events)"),
    (IDLE_POLL_CPU_YIELDS_TOTAL, MetricKind::Counter, "Idle-poller turns that yielded the CPU to other processes (a turn after one in which the runtime ran over 100 µs of work does not)"),
    (PROCESS_CPU_SECONDS_TOTAL, MetricKind::Gauge, "User plus system CPU time the node process has used since it started (only grows; use rate())"),
    (PROCESS_RESIDENT_MEMORY_BYTES, MetricKind::Gauge, "Resident memory of the node process"),
    (PROCESS_OPEN_FDS, MetricKind::Gauge, "File descriptors the node process holds open"),
    (PROCESS_MAX_FDS, MetricKind::Gauge, "The node process's soft limit on open file descriptors (RLIMIT_NOFILE)"),
    (UDP_RECEIVE_BUFFER_BYTES, MetricKind::Gauge, "Receive buffer of the node's UDP socket as the kernel reports it (twice the data it holds, on Linux)"),
    (UDP_RECEIVE_DROPS_TOTAL, MetricKind::Counter, "Datagrams the kernel dropped on the node's UDP socket because its receive buffer was full; raise transport.udp_receive_buffer_bytes and net.core.rmem_max"),
    (TLS_RELOADS_TOTAL, MetricKind::Counter, "Certificate reloads on SIGHUP, by result; an error leaves the node on its previous certificates"),
    (TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS, MetricKind::Gauge, "notAfter of the node's certificate and of the cluster CA in use, in seconds since the Unix epoch"),
    (BACKUPS_TOTAL, MetricKind::Counter, "Backup requests served, by result (ok, refused, failed)"),
    (BACKUP_DURATION_SECONDS, MetricKind::Histogram, "(conditional: a backup was requested) Time to serve a backup request: checkpoint and manifest"),
    (engine::LAYOUT_VERSION, MetricKind::Gauge, "The current layout version this node serves from (0: a candidate that has learned no layout yet)"),
    (engine::LAYOUT_COMMITS_TOTAL, MetricKind::Counter, "(conditional: a commit was requested) Layout commits this node ran as proposer"),
    (engine::PEER_REFUSED_TOTAL, MetricKind::Counter, "(conditional: a peer was refused) Node-to-node messages refused because of the sender's layout stamp (another cluster; data work under an older layout), a hello whose id differs from its node certificate, or (reason not_held) replica data for a partition this node holds in no layout version it keeps"),
    (engine::LAYOUT_FETCHES_TOTAL, MetricKind::Counter, "(conditional: a newer layout was seen) Layout histories this node asked a peer for (a newer stamp, a stale-layout refusal, a Paxos slot not open here yet)"),
    (engine::LAYOUT_CONFIRMING, MetricKind::Gauge, "1 while the node, started on its stored layout, waits for a peer to confirm it (it refuses client data requests as unavailable meanwhile); 0 otherwise"),
    (engine::LAYOUT_CONFIRM_SECONDS, MetricKind::Histogram, "(conditional: a start on a stored layout with peers) Time from the start to a peer's confirming the stored layout (a peer at the same version, or its newer history taken)"),
    (engine::LAYOUT_SAVES_TOTAL, MetricKind::Counter, "(conditional: the layout state changed) Saves of the layout state (history, Paxos acceptor state, staged changes), each synced"),
    (engine::TRANSFERS_PENDING, MetricKind::Gauge, "Partitions this node must still pull from old replicas for the layout version it is syncing, not counting those running. A transfer that makes no progress shows as this staying above 0 while shoal_transfers_done_total stays flat"),
    (engine::TRANSFERS_RUNNING, MetricKind::Gauge, "Transfer exchanges (one partition from one old replica, through anti-entropy admission control) running now"),
    (engine::TRANSFERS_DONE_TOTAL, MetricKind::Counter, "Partitions this node finished pulling from every old replica"),
    (engine::TRANSFER_KEYS_TOTAL, MetricKind::Counter, "Keys copied into partitions this node pulls (its transfer exchanges, or old owners' anti-entropy pushing into them)"),
    (engine::TRANSFER_BYTES_TOTAL, MetricKind::Counter, "Key and value bytes received for partitions this node pulls (read from old replicas or pushed by them)"),
    (engine::TRANSFER_ERRORS_TOTAL, MetricKind::Counter, "Transfer exchanges that failed (the source was unreachable or refused); each is tried again at the next anti-entropy tick"),
    (engine::RESTORE_PARTITIONS_LEFT, MetricKind::Gauge, "(conditional: a node started from a restored backup) Partitions still to bring in line with a peer (one peer-wins exchange each) before the node serves; 0 once done"),
    (DRIVER_INFLIGHT_REQUESTS, MetricKind::Gauge, "Requests the engine is coordinating (bounded by limits.max_inflight_requests)"),
    (DRIVER_PENDING_COMMANDS, MetricKind::Gauge, "Engine commands waiting for a storage or network result"),
    (DRIVER_QUEUE_DEPTH, MetricKind::Gauge, "Storage operations queued for the storage threads"),
    (EXECUTOR_OP_DURATION_SECONDS, MetricKind::Histogram, "Time to run one engine storage operation (read-modify-write under the key's lock, Merkle-tree update included), queueing excluded"),
    (GROUP_COMMIT_SYNC_SECONDS, MetricKind::Histogram, "(conditional: durability = \"sync\" with group commit) Time of one write-ahead-log fsync that acknowledges a group of writes"),
    (GROUP_COMMIT_WRITES, MetricKind::Histogram, "(conditional: durability = \"sync\" with group commit) Writing storage operations one fsync acknowledged"),
    (GROUP_COMMIT_WINDOW_SECONDS, MetricKind::Histogram, "(conditional: durability = \"sync\" with group commit, under concurrent writes) Time a group commit gathered writes after the first arrived before it synced (storage.group_commit_window)"),
    (WAL_WRITE_OUT_SECONDS, MetricKind::Histogram, "(conditional: durability = \"buffered\" with storage.group_wal_writes, under writes) Time of one write-out of the WAL records of the writes the driver ran in a round"),
    (WAL_WRITE_OUT_WRITES, MetricKind::Histogram, "(conditional: durability = \"buffered\" with storage.group_wal_writes, under writes) Writes whose WAL records one write-out handed to the OS"),
    (WAL_WRITE_OUT_FAILURES_TOTAL, MetricKind::Counter, "(conditional: storage.group_wal_writes and a failing disk) WAL write-outs that failed; the writes they covered were reported failed"),
    (engine::WRITES_REPLICATED_BEFORE_SYNC_TOTAL, MetricKind::Counter, "(conditional: durability = \"sync\" with group commit) Coordinators' local writes whose copies went to the replicas before their local sync, by how that sync ended (synced, failed)"),
    (GROUP_COMMIT_FAILURES_TOTAL, MetricKind::Counter, "(conditional: durability = \"sync\" and a failing disk) Group-commit fsyncs that failed; the writes they covered were reported failed"),
    (STORAGE_INLINE_DECLINED_TOTAL, MetricKind::Counter, "(conditional: storage.inline_writes and a write that would wait) Writes tried on the replication driver's thread that would have waited (a held key, an object not in memory, a dot reservation, a write stall) and went to a storage thread"),
    (EXECUTOR_ERRORS_TOTAL, MetricKind::Counter, "(conditional: a failing disk or an unreadable record) Storage operations that failed"),
    (engine::OBJECT_SIBLINGS, MetricKind::Histogram, "Siblings of a key's object (tombstones included) as a coordinator stored it, a replica merged it, or a get answered it"),
    (engine::OBJECT_SIZE_BYTES, MetricKind::Histogram, "Bytes of the values of a key's object, all siblings together, as a coordinator stored it, a replica merged it, or a get answered it"),
    (engine::SIBLING_LIMIT_TOTAL, MetricKind::Counter, "(conditional: writes without a context piling up siblings) Objects stored past limits.sibling_warn, client writes refused for limits.max_siblings, and replica merges stored past it"),
    (engine::ENGINE_STORAGE_FAILURES_TOTAL, MetricKind::Counter, "(conditional: a failing disk or an unreadable record) Storage results the replication engine received as failures (any waiter: coordinator, replica, handoff, anti-entropy)"),
    (storage::OPS_TOTAL, MetricKind::Counter, "Storage engine operations by kind and space (column family); a write batch counts each of its operations"),
    (storage::OP_DURATION_SECONDS, MetricKind::Histogram, "Latency of storage engine calls"),
    (storage::ERRORS_TOTAL, MetricKind::Counter, "(conditional: a failing disk) Storage engine calls that failed"),
    (storage::WRITE_BATCH_BYTES, MetricKind::Histogram, "Size of each write batch"),
    (storage::DISK_FULL, MetricKind::Gauge, "1 while the node refuses writes because its data directory's filesystem is full or below storage.min_free_bytes, else 0"),
    (storage::DISK_FULL_REFUSALS_TOTAL, MetricKind::Counter, "Writes refused with DiskFull"),
    (storage::DISK_FULL_REOPENS_TOTAL, MetricKind::Counter, "(conditional: RocksDB ran out of disk space) Reopens of the database once space was back, by result"),
    (storage::WRITE_STALL_RETRIES_TOTAL, MetricKind::Counter, "(conditional: writes outpacing flushes with the disk nearly full) Tries of a stalled write repeated while the disk is nearly full, 10 ms apart, for at most 2 s"),
    (storage::FREE_BYTES, MetricKind::Gauge, "Free space of the data directory's filesystem, checked every second"),
    (storage::SPARE_SPACE_BYTES, MetricKind::Gauge, "Bytes of the spare file (storage.spare_space_bytes) the node keeps to start on a full disk; 0 while it is given back to make room, or off"),
    (ROCKSDB_LIVE_DATA_BYTES, MetricKind::Gauge, "RocksDB's estimate of live data (rocksdb.estimate-live-data-size), refreshed every 5 s"),
    (ROCKSDB_PENDING_COMPACTION_BYTES, MetricKind::Gauge, "Bytes compaction still has to rewrite (rocksdb.estimate-pending-compaction-bytes); growth means compaction is falling behind"),
    (ROCKSDB_BLOCK_CACHE_USAGE_BYTES, MetricKind::Gauge, "Memory held by the block cache (bounded by storage.block_cache_bytes)"),
    (ROCKSDB_MEMTABLE_BYTES, MetricKind::Gauge, "Memory held by memtables (bounded by storage.write_buffer_bytes per column family)"),
    (ROCKSDB_ESTIMATED_KEYS, MetricKind::Gauge, "RocksDB's estimate of the number of keys (objects, hints and metadata)"),
    (STORAGE_OBJECT_CACHE_BYTES, MetricKind::Gauge, "Memory held by the cache of recently written and read objects (bounded by storage.object_cache_bytes), refreshed every 5 s"),
    (STORAGE_OBJECT_CACHE_LOOKUPS_TOTAL, MetricKind::Counter, "Object reads looked up in the cache of recently written and read objects, by result (hit, miss), refreshed every 5 s"),
    (transport::REQUESTS_TOTAL, MetricKind::Counter, "Request/response exchanges on QUIC streams, both directions"),
    (transport::REQUEST_DURATION_SECONDS, MetricKind::Histogram, "Duration of outgoing requests, connection setup included"),
    (transport::CONNECTIONS, MetricKind::Gauge, "Open QUIC connections, both directions"),
    (transport::BYTES_TOTAL, MetricKind::Counter, "Frame bytes, length prefix included"),
    (transport::HANDSHAKE_FAILURES_TOTAL, MetricKind::Counter, "Failed QUIC/TLS handshakes and refused peers (a certificate of another CA, a client certificate dialled as a node, too many connections)"),
    (transport::UNRESPONSIVE_CONNECTIONS_TOTAL, MetricKind::Counter, "Cached connections closed because the peer sent nothing during a timed-out request (killed, stopped or partitioned away); the next request dials again"),
    (transport::LOST_DATAGRAMS_TOTAL, MetricKind::Counter, "(conditional: a datagram lost) Datagrams QUIC declared lost on the node's connections (their contents resent), by the peer's kind"),
    (transport::PEER_RESTARTS_TOTAL, MetricKind::Counter, "(conditional: a peer restarted) Requests whose connection a restarted peer reset, by outcome (resent or failed)"),
    (transport::INFLIGHT_BYTES, MetricKind::Gauge, "Bytes of requests and responses held in flight by role"),
    (transport::REQUESTS_REFUSED_TOTAL, MetricKind::Counter, "(conditional: the in-flight byte budget spent) Requests refused before their body was read"),
    (transport::CONNECTIONS_REFUSED_TOTAL, MetricKind::Counter, "(conditional: a connection limit reached, or an idle client) Connections refused or closed for a limit"),
    (transport::STREAM_TIMEOUTS_TOTAL, MetricKind::Counter, "(conditional: a peer too slow to send or read) Streams aborted because the peer was too slow"),
    (transport::RETRIES_TOTAL, MetricKind::Counter, "(conditional: a handshake flood) Incoming connections asked to prove their address"),
    (transport::FRAME_ERRORS_TOTAL, MetricKind::Counter, "(conditional: a peer sending malformed frames) Invalid frames received, and responses over the frame limit"),
    (engine::READ_SPECULATIVE_REQUESTS_TOTAL, MetricKind::Counter, "(conditional: a replica slower than replication.read_speculative_after) Read requests sent to one more replica because the R asked had not all answered in time"),
    (engine::REPLICA_WRITES_RESENT_TOTAL, MetricKind::Counter, "(conditional: stalled or restarting replicas, layout changes) Replica writes sent again to the same replica, by reason: timeout or lost (no fallback left, once per copy), stale_layout (after the layouts met)"),
    (engine::REPLICA_READS_RESENT_TOTAL, MetricKind::Counter, "(conditional: stalled or restarting replicas, lost messages) Replica reads sent again to the same replica after a timeout or a lost connection, no replica or fallback left to ask (once per replica and read), by reason"),
    (engine::READS_ALL_REPLICAS_TOTAL, MetricKind::Counter, "Coordinated reads that asked every replica they placed instead of R, by reason (quorum, sampled, divergent, slow)"),
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
                } else if name.ends_with("_bytes") {
                    metrics::Unit::Bytes
                } else {
                    metrics::Unit::Count
                };
                metrics::describe_histogram!(name, unit, help)
            }
        }
    }
    transport::describe_metrics();
    metrics::counter!(engine::ENGINE_STORAGE_FAILURES_TOTAL).absolute(0);
    metrics::counter!(engine::COORDINATOR_LOCAL_READ_FAILURES_TOTAL).absolute(0);
    metrics::gauge!(engine::COORDINATOR_READ_INFLIGHT_BYTES).set(0.0);
    metrics::counter!(engine::READ_REPAIR_FAILURES_TOTAL).absolute(0);
    metrics::counter!(executor::AAE_TREE_MISMATCHES_TOTAL).absolute(0);
    metrics::counter!(executor::AAE_OBJECTS_TOO_LARGE_TOTAL).absolute(0);
    metrics::counter!(executor::REAPED_COPIES_DROPPED_TOTAL).absolute(0);
    metrics::counter!(executor::REAPED_READS_TOTAL).absolute(0);
    metrics::counter!(engine::REAP_RESENDS_TOTAL).absolute(0);
    metrics::counter!(engine::REAPS_INCOMPLETE_TOTAL).absolute(0);
    metrics::counter!(engine::FORWARDS_TOTAL).absolute(0);
    metrics::counter!(engine::REPLICATION_LAG_UNFINISHED_TOTAL).absolute(0);
    metrics::counter!(storage::DISK_FULL_REFUSALS_TOTAL).absolute(0);
    metrics::counter!(IDLE_POLL_CONTENDED_TOTAL).absolute(0);
    metrics::counter!(IDLE_POLL_CPU_YIELDS_TOTAL).absolute(0);
    for result in ["ok", "error"] {
        metrics::counter!(TLS_RELOADS_TOTAL, "result" => result).absolute(0);
    }
    for result in ["ok", "refused", "failed"] {
        metrics::counter!(BACKUPS_TOTAL, "result" => result).absolute(0);
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => BUILD_COMMIT)
        .set(1.0);
}

/// Install the global recorder and its HTTP listener (`/metrics`, `/health`, `/ready`:
/// [`crate::server::http`]) if `metrics_listen` is set. Must run
/// inside a tokio runtime. Every series carries a `node` label.
pub fn install(cfg: &NodeConfig) -> anyhow::Result<()> {
    let Some(addr) = cfg.metrics_listen else {
        return Ok(());
    };
    let recorder = PrometheusBuilder::new()
        .add_global_label("node", cfg.id.to_string())
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), SIZE_BUCKETS_BYTES)?
        .set_buckets_for_metric(
            Matcher::Full(engine::OBJECT_SIBLINGS.into()),
            SIBLING_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(GROUP_COMMIT_WRITES.into()),
            GROUP_COMMIT_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(WAL_WRITE_OUT_WRITES.into()),
            GROUP_COMMIT_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(PEER_BATCH_REQUESTS.into()),
            PEER_BATCH_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(CLIENT_BATCH_REQUESTS.into()),
            PEER_BATCH_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(engine::HINT_DELIVERY_LAG_SECONDS.into()),
            HINT_LAG_BUCKETS_SECONDS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    crate::server::http::spawn(addr, handle)?;
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
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
