//! Replica reads for clients ([`ClientRequest::GetReplica`]): a client that asks R
//! primaries of a key at once and merges their copies itself reads in one hop instead
//! of two (client to coordinator, coordinator to replica).
//!
//! A node answers one only while its copy is as good as one a coordinator would read:
//! it is a primary of the key's partition in a settled layout (the one version it keeps,
//! named in the answer so that the client compares copies of one version only), it is
//! serving (not a candidate, fenced, restoring or confirming its layout) and the
//! partition is not being dropped. Otherwise it answers [`RequestError::Declined`],
//! and the client reads through a coordinator, which repairs. So is a layout change
//! that happens while the storage read runs. Nothing is forwarded or repaired here: a
//! client whose copies differ asks a coordinator, whose read repairs them.

use shoal_ring::PartitionId;

use super::{outcome_label, storage_error, Engine, InboundId, Waiter};
use crate::error::RequestError;
use crate::object::Object;
use crate::storage_ops::{StorageOp, StorageReply, StorageResult};
use crate::time::Monotonic;
use crate::wire::{ClientResponse, GetReply, ReplicaReply};

/// The `op` label of a replica read's metrics.
const OP: &str = "get_replica";

/// What a replica read waits for from storage.
#[derive(Clone, Debug)]
pub(super) struct ReplicaRead {
    inbound: InboundId,
    partition: PartitionId,
    /// The layout version it was admitted under; a change meanwhile declines it.
    layout_version: u64,
    started: Monotonic,
}

/// A read's answer made from one merged object (the coordinator's merge or one
/// replica's copy).
pub(super) fn get_reply(object: &Object) -> GetReply {
    GetReply {
        found: object.is_found(),
        values: object.values().map(<[u8]>::to_vec).collect(),
        context: object.context(),
        written_at: object.value_times().collect(),
    }
}

impl Engine {
    /// Starts [`ClientRequest::GetReplica`] for `key`, or refuses it.
    pub(super) fn handle_get_replica(&mut self, id: InboundId, key: Vec<u8>) {
        let request = crate::wire::ClientRequest::GetReplica { key };
        if let Err(e) = self.validate_keyed(&request) {
            self.answer_get_replica(id, Err(e), None);
            return;
        }
        let crate::wire::ClientRequest::GetReplica { key } = request else {
            return;
        };
        let partition = self.ring().partition_of(&key);
        if let Some(why) = self.replica_read_refusal(partition) {
            self.answer_get_replica(id, Err(RequestError::Declined(why)), None);
            return;
        }
        if self.inflight() >= self.cfg.limits.max_inflight_requests {
            self.answer_get_replica(id, Err(RequestError::Overloaded), None);
            return;
        }
        self.admin.insert(id);
        let read = ReplicaRead {
            inbound: id,
            partition,
            layout_version: self.layout.version(),
            started: self.mono,
        };
        self.storage(StorageOp::Read { partition, key }, Waiter::GetReplica(read));
    }

    /// Why this node's copy of `partition` must not answer a client alone now, if so.
    fn replica_read_refusal(&self, partition: PartitionId) -> Option<String> {
        let version = self.layout.version();
        if self.is_candidate() {
            return Some("a candidate holding no partition".into());
        }
        if self.is_fenced() {
            return Some(format!(
                "removed from the cluster (layout version {version})"
            ));
        }
        if self.restoring() {
            return Some("a restoring node's copies are not read".into());
        }
        if self.confirming_layout() {
            return Some("its layout is not confirmed yet".into());
        }
        let kept = self.layout.versions();
        if kept.len() > 1 {
            return Some(format!(
                "a layout change is in progress (versions {} to {version} kept)",
                kept[0].version()
            ));
        }
        if self.placement.dropping.contains(&partition) {
            return Some(format!(
                "its copy of partition {partition} is being dropped"
            ));
        }
        if !self.primaries(partition).contains(&self.me) {
            return Some(format!(
                "not a primary of partition {partition} in layout version {version}"
            ));
        }
        None
    }

    /// The storage read of a replica read is done.
    pub(super) fn on_get_replica_read(&mut self, read: ReplicaRead, result: StorageResult) {
        let answer = match result {
            Ok(StorageReply::Object(object)) => {
                let refusal = if self.layout.version() == read.layout_version {
                    self.replica_read_refusal(read.partition)
                } else {
                    Some(format!(
                        "the layout changed from version {} to {} during the read",
                        read.layout_version,
                        self.layout.version()
                    ))
                };
                match refusal {
                    Some(why) => Err(RequestError::Declined(why)),
                    None => Ok(ReplicaReply {
                        layout_version: read.layout_version,
                        get: get_reply(&object.unwrap_or_default()),
                    }),
                }
            }
            Ok(StorageReply::TooLarge { len, max }) => {
                Err(RequestError::ObjectTooLarge { len, max })
            }
            Ok(other) => Err(RequestError::Internal(format!(
                "unexpected storage reply to a replica read: {other:?}"
            ))),
            Err(e) => Err(storage_error(e)),
        };
        self.answer_get_replica(read.inbound, answer, Some(read.started));
    }

    fn answer_get_replica(
        &mut self,
        id: InboundId,
        answer: Result<ReplicaReply, RequestError>,
        started: Option<Monotonic>,
    ) {
        let label = outcome_label(&answer.as_ref().map(|_| ()).map_err(Clone::clone));
        self.meters.requests.get([OP, label]).increment(1);
        if let Some(started) = started {
            let elapsed = self.mono.saturating_since(started);
            self.meters.duration.get([OP]).record(elapsed.as_secs_f64());
        }
        let response = match answer {
            Ok(reply) => ClientResponse::Replica(reply),
            Err(e) => ClientResponse::Error(e),
        };
        self.respond_client(id, response);
    }
}
