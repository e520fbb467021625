//! Clients' replica reads ([`ClientRequest::GetReplica`], the SDK's direct reads) served
//! by the request handler itself, from memory, without queueing them for the driver.
//!
//! A replica read needs only this node's copy and the engine's rules for answering
//! one (a primary of the key in a settled layout, serving, the partition not being
//! dropped). The driver publishes those rules as a [`ReplicaReadGate`] built by the
//! engine (again whenever what it depends on changes, checked after every round of the
//! driver); the handler checks a read against the gate, reads the copy with
//! `Executor::try_execute` (memtables, the object cache and the block cache: never a
//! wait), checks that the gate was not replaced meanwhile, and answers, as the engine
//! would, under the gate's layout version. A read the store cannot answer from memory,
//! or whose gate changed, goes to the engine as before, which answers it the same way.
//! This saves a read the two task wake-ups between the handler and the driver.
//!
//! Metric: `shoal_handler_replica_reads_total{outcome}` (`served`, `declined`,
//! `engine`).
//!
//! [`ClientRequest::GetReplica`]: shoal_proto::wire::ClientRequest::GetReplica

use std::sync::{Arc, RwLock};
use std::time::Instant;

use shoal_metric_handles::Handles;
use shoal_proto::wire::{ClientResponse, ReplicaReply, Response};
use shoal_proto::{get_reply, ReplicaReadGate, RequestError, StorageOp, StorageReply};

use super::driver::{InlineOps, STORAGE_OP_DURATION};

static SERVED: Handles<metrics::Counter, 1> =
    Handles::counter(crate::metrics::HANDLER_REPLICA_READS_TOTAL, ["outcome"]);

/// The gate the driver publishes and the in-memory reads the handler serves with it.
pub(super) struct ReplicaReads {
    gate: RwLock<Option<Arc<ReplicaReadGate>>>,
    read: InlineOps,
}

impl ReplicaReads {
    /// Reads served with `read` (`Executor::try_execute`), under no gate yet (every read
    /// goes to the engine until the driver publishes one).
    pub(super) fn new(read: InlineOps) -> Arc<ReplicaReads> {
        Arc::new(ReplicaReads {
            gate: RwLock::new(None),
            read,
        })
    }

    /// Replaces the gate.
    pub(super) fn publish(&self, gate: ReplicaReadGate) {
        *self.gate.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(gate));
    }

    fn current(&self) -> Option<Arc<ReplicaReadGate>> {
        self.gate.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The answer to a client's replica read of `key`, or `None` when the engine must
    /// answer it (no gate yet, not in memory, an invalid key, the gate replaced during
    /// the read, a storage error).
    pub(super) fn serve(&self, key: &[u8]) -> Option<Response> {
        if key.is_empty() || key.len() > shoal_proto::MAX_KEY_BYTES {
            // The engine's typed refusal.
            return None;
        }
        let gate = self.current()?;
        let (partition, version) = match gate.check(key) {
            Ok(at) => at,
            Err(why) => {
                SERVED.get(["declined"]).increment(1);
                let declined = ClientResponse::Error(RequestError::Declined(why));
                return Some(stamped(gate.layout_version(), declined));
            }
        };
        let op = StorageOp::Read {
            partition,
            key: key.to_vec(),
        };
        let start = Instant::now();
        let read = (self.read)(&op);
        let object = match read {
            Some(Ok(StorageReply::Object(object))) => object,
            _ => {
                SERVED.get(["engine"]).increment(1);
                return None;
            }
        };
        STORAGE_OP_DURATION
            .get(["read_in_memory"])
            .record(start.elapsed().as_secs_f64());
        let unchanged = self.current().is_some_and(|now| Arc::ptr_eq(&now, &gate));
        if !unchanged {
            SERVED.get(["engine"]).increment(1);
            return None;
        }
        SERVED.get(["served"]).increment(1);
        let copy = ReplicaReply {
            layout_version: version,
            get: get_reply(&object.unwrap_or_default()),
        };
        Some(stamped(version, ClientResponse::Replica(copy)))
    }
}

/// A client answer with the layout version it was served under, as the driver stamps
/// the engine's.
fn stamped(layout_version: u64, response: ClientResponse) -> Response {
    Response::Stamped {
        layout_version,
        response,
    }
}
