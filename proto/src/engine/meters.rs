//! The handles of the engine's per-request metrics, resolved once per label set and kept
//! per engine (not in statics): the simulator and the engine's tests run each engine
//! under a recorder of their own (`metrics::with_local_recorder`), and a handle belongs
//! to the recorder it was resolved against. See `shoal_metric_handles`.

use metrics::{Counter, Gauge, Histogram};
use shoal_metric_handles::Handles;

use crate::metrics as m;

/// One engine's handles; a field per metric, named after it.
#[derive(Debug)]
pub(super) struct Meters {
    pub(super) received: Handles<Counter, 1>,
    pub(super) requests: Handles<Counter, 2>,
    pub(super) duration: Handles<Histogram, 1>,
    pub(super) quorum_failures: Handles<Counter, 2>,
    pub(super) peer_sent: Handles<Counter, 1>,
    pub(super) replica_requests: Handles<Counter, 1>,
    pub(super) siblings: Handles<Histogram, 1>,
    pub(super) sizes: Handles<Histogram, 1>,
    pub(super) sibling_limit: Handles<Counter, 1>,
    pub(super) replication_lag: Handles<Histogram, 0>,
    pub(super) all_replicas: Handles<Counter, 1>,
    pub(super) read_inflight: Handles<Gauge, 0>,
    pub(super) reads_deferred: Handles<Counter, 1>,
    pub(super) replicated_before_sync: Handles<Counter, 1>,
    pub(super) replica_writes_resent: Handles<Counter, 1>,
    pub(super) replica_reads_resent: Handles<Counter, 1>,
}

impl Meters {
    pub(super) const fn new() -> Self {
        Meters {
            received: Handles::counter(m::COORDINATOR_REQUESTS_RECEIVED_TOTAL, ["op"]),
            requests: Handles::counter(m::COORDINATOR_REQUESTS_TOTAL, ["op", "result"]),
            duration: Handles::histogram(m::COORDINATOR_DURATION_SECONDS, ["op"]),
            quorum_failures: Handles::counter(m::QUORUM_FAILURES_TOTAL, ["op", "kind"]),
            peer_sent: Handles::counter(m::PEER_REQUESTS_SENT_TOTAL, ["op"]),
            replica_requests: Handles::counter(m::REPLICA_REQUESTS_TOTAL, ["op"]),
            siblings: Handles::histogram(m::OBJECT_SIBLINGS, ["op"]),
            sizes: Handles::histogram(m::OBJECT_SIZE_BYTES, ["op"]),
            sibling_limit: Handles::counter(m::SIBLING_LIMIT_TOTAL, ["event"]),
            replication_lag: Handles::histogram(m::REPLICATION_LAG_SECONDS, []),
            all_replicas: Handles::counter(m::READS_ALL_REPLICAS_TOTAL, ["reason"]),
            read_inflight: Handles::gauge(m::COORDINATOR_READ_INFLIGHT_BYTES, []),
            reads_deferred: Handles::counter(m::COORDINATOR_READS_DEFERRED_TOTAL, ["outcome"]),
            replicated_before_sync: Handles::counter(
                m::WRITES_REPLICATED_BEFORE_SYNC_TOTAL,
                ["result"],
            ),
            replica_writes_resent: Handles::counter(m::REPLICA_WRITES_RESENT_TOTAL, ["reason"]),
            replica_reads_resent: Handles::counter(m::REPLICA_READS_RESENT_TOTAL, ["reason"]),
        }
    }
}
