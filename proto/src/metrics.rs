//! Names of the metrics the engine records through the `metrics` facade (a no-op until
//! the driver installs a recorder). Each name is written once, here: the engine's call
//! sites, the node's descriptions and the simulator's counters all refer to these
//! constants. docs/METRICS.md has the full catalogue.

/// Counter, by `op` (a client operation): client requests, direct or forwarded, that
/// reached the engine.
pub const COORDINATOR_REQUESTS_RECEIVED_TOTAL: &str = "shoal_coordinator_requests_received_total";
/// Counter, by `op` and `result` (`ok` or the error's label): keyed requests this node
/// coordinated, or refused before coordinating.
pub const COORDINATOR_REQUESTS_TOTAL: &str = "shoal_coordinator_requests_total";
/// Histogram, by `op` (`get`, `put`, `delete`), in seconds: start of a successful
/// coordinated request to its quorum answer.
pub const COORDINATOR_DURATION_SECONDS: &str = "shoal_coordinator_duration_seconds";
/// Counter, by `op` and `kind` (`unavailable`, `timeout`): coordinated requests that
/// failed to reach their quorum.
pub const QUORUM_FAILURES_TOTAL: &str = "shoal_quorum_failures_total";
/// Counter: coordinated reads whose own local read failed (the read goes on with the
/// other replicas).
pub const COORDINATOR_LOCAL_READ_FAILURES_TOTAL: &str =
    "shoal_coordinator_local_read_failures_total";
/// Gauge: bytes of replica copies held by the reads this node coordinates (bounded by
/// `limits.max_read_bytes_in_flight`).
pub const COORDINATOR_READ_INFLIGHT_BYTES: &str = "shoal_coordinator_read_inflight_bytes";
/// Counter: coordinated reads that asked the other replicas only after their own copy
/// showed the object's size (`outcome`: `sent`, or `overloaded` when it did not fit).
pub const COORDINATOR_READS_DEFERRED_TOTAL: &str = "shoal_coordinator_reads_deferred_total";
/// Counter: replicas sent the merged object after a read (one per stale replica).
pub const READ_REPAIRS_TOTAL: &str = "shoal_read_repairs_total";
/// Counter: read repairs the target did not acknowledge.
pub const READ_REPAIR_FAILURES_TOTAL: &str = "shoal_read_repair_failures_total";
/// Counter: attempts to hand a client request to a replica (one per candidate tried).
pub const FORWARDS_TOTAL: &str = "shoal_forwards_total";
/// Counter, by `op` and `result`: forwarded client requests, by the replica's outcome.
pub const FORWARDED_REQUESTS_TOTAL: &str = "shoal_forwarded_requests_total";
/// Counter, by `reason` (`client_role_peer_message`, `unknown_node`,
/// `client_not_admin`): requests refused for the sender's role or identity (the node's
/// handler also records `client_role_peer_message`, before decoding, and
/// `client_not_admin`, a client not in `tls.admin_clients` asking for a layout change or
/// a backup).
pub const REFUSED_REQUESTS_TOTAL: &str = "shoal_refused_requests_total";
/// Counter, by `op` (a node-to-node operation): requests the engine issued to other
/// nodes.
pub const PEER_REQUESTS_SENT_TOTAL: &str = "shoal_peer_requests_sent_total";
/// Counter, by `op`: requests from members that reached the engine's replica side.
pub const REPLICA_REQUESTS_TOTAL: &str = "shoal_replica_requests_total";
/// Gauge, by `state` (`up`, `down`): members in each state as this node sees them.
pub const MEMBERS: &str = "shoal_members";
/// Counter, by `state` (the new state): member state changes this node saw.
pub const MEMBER_STATE_CHANGES_TOTAL: &str = "shoal_member_state_changes_total";
/// Counter: gossip rounds started.
pub const GOSSIP_ROUNDS_TOTAL: &str = "shoal_gossip_rounds_total";
/// Counter, by `event` (`stored`, `dropped`, `delivered`, `expired`, `delivery_failed`,
/// `parked`, `corrupt`, `redirected`): hint lifecycle events.
pub const HINTS_TOTAL: &str = "shoal_hints_total";
/// Gauge, by `target` (a node id): hints held for each target.
pub const HINTS_PENDING: &str = "shoal_hints_pending";
/// Gauge, by `target`, in bytes: size of the hints held for each target.
pub const HINTS_PENDING_BYTES: &str = "shoal_hints_pending_bytes";
/// Counter, by `result` (`ok`, `failed`): Merkle-tree exchanges started and finished.
pub const AAE_EXCHANGES_TOTAL: &str = "shoal_aae_exchanges_total";
/// Histogram, in seconds: duration of exchanges, whatever the result.
pub const AAE_EXCHANGE_DURATION_SECONDS: &str = "shoal_aae_exchange_duration_seconds";
/// Gauge: exchanges in progress.
pub const AAE_EXCHANGES_RUNNING: &str = "shoal_aae_exchanges_running";
/// Counter: leaf segments whose key lists were compared.
pub const AAE_LEAVES_COMPARED_TOTAL: &str = "shoal_aae_leaves_compared_total";
/// Counter, by `direction` (`fetched`, `pushed`): keys an exchange repaired.
pub const AAE_KEYS_REPAIRED_TOTAL: &str = "shoal_aae_keys_repaired_total";
/// Counter, by `direction` (`sent`, `received`, `digests`), in bytes: anti-entropy
/// payload volume.
pub const AAE_BYTES_TOTAL: &str = "shoal_aae_bytes_total";
/// Gauge: the admission-control multiplier on the repair budget.
pub const AAE_BUDGET_RATIO: &str = "shoal_aae_budget_ratio";
/// Counter: tombstones deleted once every replica held the same one.
pub const TOMBSTONES_REAPED_TOTAL: &str = "shoal_tombstones_reaped_total";
/// Counter: a reaper's deletes sent again to a replica that did not confirm the first
/// (lost, refused, timed out), on a later tick.
pub const REAP_RESENDS_TOTAL: &str = "shoal_reap_resends_total";
/// Counter: reaped pages a replica never confirmed deleting after every send
/// (`REAP_SENDS`): it may keep tombstones the other replicas deleted, until
/// anti-entropy copies them back and a later reap removes them.
pub const REAPS_INCOMPLETE_TOTAL: &str = "shoal_reaps_incomplete_total";
/// Counter, by `result` (`synced`, `failed`): coordinators' local writes whose copies
/// went to the replicas before their local sync (group commit), by how that sync ended.
/// A failed one's local copy does not count towards W.
pub const WRITES_REPLICATED_BEFORE_SYNC_TOTAL: &str = "shoal_writes_replicated_before_sync_total";
/// Counter: storage results the engine received as failures (any waiter).
pub const ENGINE_STORAGE_FAILURES_TOTAL: &str = "shoal_engine_storage_failures_total";
/// Histogram, by `op` (`write`: a coordinator's stored object, `merge`: a replica's
/// after a replicate, `read`: the merge a get answered): siblings of a key's object,
/// tombstones included.
pub const OBJECT_SIBLINGS: &str = "shoal_object_siblings";
/// Histogram, by `op` (as [`OBJECT_SIBLINGS`]), in bytes: the values of a key's object,
/// all siblings together.
pub const OBJECT_SIZE_BYTES: &str = "shoal_object_size_bytes";
/// Counter, by `event` (`warned`: an object stored with more than `limits.sibling_warn`
/// siblings; `refused`: a client write refused for `limits.max_siblings`; `over_limit`:
/// a replica's merge stored more than `limits.max_siblings`, which merges never refuse).
pub const SIBLING_LIMIT_TOTAL: &str = "shoal_sibling_limit_total";
/// Gauge, by `peer` (a node id): failed contacts with the peer since its last success
/// (the failure detector marks it down at `membership.failure_threshold`, after
/// `membership.down_after` of silence).
pub const PEER_CONSECUTIVE_FAILURES: &str = "shoal_peer_consecutive_failures";
/// Gauge, in seconds: how long ago the least recently successful anti-entropy exchange
/// this node starts (over its partitions and peers) succeeded; since the engine started
/// for a pair that never has.
pub const AAE_LAST_EXCHANGE_AGE_SECONDS: &str = "shoal_aae_last_exchange_age_seconds";
/// Counter, by `kind` (`exchange`, `reap`): background work started while the budget was
/// below the start threshold, because it was overdue (the minimum rate under load).
pub const AAE_OVERDUE_STARTS_TOTAL: &str = "shoal_aae_overdue_starts_total";
/// Counter: anti-entropy reads cut short by the byte bound of a message (the rest of
/// their keys go in the next batch).
pub const AAE_BATCHES_SPLIT_TOTAL: &str = "shoal_aae_batches_split_total";
/// Counter, by `reason` (`empty_key`, `key_too_large`, `wrong_partition`): keys in
/// node-to-node messages refused (the message is answered with a typed error).
pub const REPLICA_KEYS_REFUSED_TOTAL: &str = "shoal_replica_keys_refused_total";
/// Histogram, in seconds: from a write's acknowledgement to the client (W acks) to the
/// acknowledgement of the last of its N primaries, on the coordinator's monotonic clock
/// (0 when all N had acknowledged by then). Only writes that reached every primary.
pub const REPLICATION_LAG_SECONDS: &str = "shoal_replication_lag_seconds";
/// Counter: acknowledged writes that did not reach all N primaries by the time their
/// coordinator stopped delivering (a copy went to a fallback as a hint, or could not be
/// placed, or was refused): their lag is not in [`REPLICATION_LAG_SECONDS`]. Delivery
/// ends when every copy was acknowledged or failed (each send bounded by
/// `replication.rpc_timeout`, each failed copy retried on at most every fallback).
pub const REPLICATION_LAG_UNFINISHED_TOTAL: &str = "shoal_replication_lag_unfinished_total";
/// Histogram, in seconds: from a hint's first store to its delivery (its primary
/// acknowledged it and the hint was deleted), on the hint holder's wall clock.
pub const HINT_DELIVERY_LAG_SECONDS: &str = "shoal_hint_delivery_lag_seconds";
/// Gauge: partitions a node restored from a backup has still to bring in line with a
/// peer (one peer-wins anti-entropy exchange each) before it serves; 0 once it does.
/// Only nodes started from a restored backup export it.
pub const RESTORE_PARTITIONS_LEFT: &str = "shoal_restore_partitions_left";
/// Gauge: the current layout version this node serves from (0 for a candidate that has
/// learned no layout yet).
pub const LAYOUT_VERSION: &str = "shoal_layout_version";
/// Gauge: 1 while this node, started on its stored layout, waits for a peer to confirm
/// it and refuses client data requests meanwhile; 0 otherwise.
pub const LAYOUT_CONFIRMING: &str = "shoal_layout_confirming";
/// Histogram, in seconds: from a start on a stored layout to a peer's confirming it.
pub const LAYOUT_CONFIRM_SECONDS: &str = "shoal_layout_confirm_seconds";
/// Counter, by `result` (`committed`, `lost`, `refused`, `plan_changed`, `failed`):
/// layout commits this node ran as proposer (`lost`: a concurrent commit decided the
/// version first; `plan_changed`: a commit naming a plan found other changes staged,
/// refused).
pub const LAYOUT_COMMITS_TOTAL: &str = "shoal_layout_commits_total";
/// Counter, by `reason` (`cluster_mismatch`, `stale_layout`, `certificate_mismatch`,
/// `not_a_member`, `not_held`): node-to-node messages this node refused because of the
/// sender's layout stamp or identity, or (`not_held`) replica data for a partition it
/// holds in no layout version it keeps (the sender keeps a version this node pruned).
pub const PEER_REFUSED_TOTAL: &str = "shoal_peer_refused_total";
/// Counter: layout histories this node asked a peer for (it saw a newer version, or was
/// refused as stale, or is a candidate saying hello).
pub const LAYOUT_FETCHES_TOTAL: &str = "shoal_layout_fetches_total";
/// Counter, by `result` (`ok`, `failed`): layout state saves (history, Paxos acceptor
/// state, staged changes) this node asked its storage for.
pub const LAYOUT_SAVES_TOTAL: &str = "shoal_layout_saves_total";
/// Gauge: partitions this node must still pull for the layout version it is syncing
/// (not started or waiting for a source; running ones are in [`TRANSFERS_RUNNING`]).
pub const TRANSFERS_PENDING: &str = "shoal_transfers_pending";
/// Gauge: partition transfers (one anti-entropy exchange with one old replica each)
/// running now.
pub const TRANSFERS_RUNNING: &str = "shoal_transfers_running";
/// Counter: partitions this node finished pulling from every old replica.
pub const TRANSFERS_DONE_TOTAL: &str = "shoal_transfers_done_total";
/// Counter: keys copied into a partition this node pulls, by its own transfer exchanges
/// or by an old owner's anti-entropy pushing into it.
pub const TRANSFER_KEYS_TOTAL: &str = "shoal_transfer_keys_total";
/// Counter, in bytes: key and value bytes received for partitions this node pulls (read
/// by its transfer exchanges from old replicas, or pushed by their anti-entropy).
pub const TRANSFER_BYTES_TOTAL: &str = "shoal_transfer_bytes_total";
/// Counter: transfer exchanges that failed (tried again at the next anti-entropy tick).
pub const TRANSFER_ERRORS_TOTAL: &str = "shoal_transfer_errors_total";
/// Counter: read requests a coordinator sent to one more replica because the replicas it
/// had asked did not all answer within `replication.read_speculative_after`.
pub const READ_SPECULATIVE_REQUESTS_TOTAL: &str = "shoal_read_speculative_requests_total";
/// Counter: replica writes (replicates of a coordinated put or delete) sent again to
/// the same replica, by `reason`: `timeout` or `lost` (the copy timed out or its
/// connection failed, no fallback was left, and the deadline had room for another
/// `rpc_timeout`; once per copy), `stale_layout` (the replica refused for layout and the
/// two nodes' layouts have met since; at most twice per write).
pub const REPLICA_WRITES_RESENT_TOTAL: &str = "shoal_replica_writes_resent_total";
/// Counter: replica reads a coordinator sent again to the same replica, by `reason`
/// (`timeout`, `lost`): the first timed out or its connection failed, no replica was
/// left to ask instead, and the deadline had room for another `rpc_timeout`; once per
/// replica and read.
pub const REPLICA_READS_RESENT_TOTAL: &str = "shoal_replica_reads_resent_total";
/// Counter: coordinated reads that asked every replica they placed, by `reason`
/// (`quorum`, `sampled`, `divergent`, `slow`).
pub const READS_ALL_REPLICAS_TOTAL: &str = "shoal_reads_all_replicas_total";
