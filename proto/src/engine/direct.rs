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

use shoal_ring::{NodeId, PartitionId};

use super::{outcome_label, storage_error, Engine, InboundId, Waiter};
use crate::error::RequestError;
use crate::object::Object;
use crate::storage_ops::{StorageOp, StorageReply, StorageResult};
use crate::time::Monotonic;
use crate::wire::{ClientResponse, GetReply, LayoutStamp, ReplicaReply};

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

/// Why a primary-or-not, dropping-or-not partition declines replica reads, if it does.
fn partition_refusal(
    partition: PartitionId,
    dropping: bool,
    primary: bool,
    version: u64,
) -> Option<String> {
    if dropping {
        return Some(format!(
            "its copy of partition {partition} is being dropped"
        ));
    }
    if !primary {
        return Some(format!(
            "not a primary of partition {partition} in layout version {version}"
        ));
    }
    None
}

/// What a [`ReplicaReadGate`] is built from; equal keys, equal gates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReadGateKey {
    version: u64,
    refused: Option<String>,
    dropping: Vec<PartitionId>,
    /// The stamp a peer in this layout version puts on its requests (this node's own).
    stamp: LayoutStamp,
    /// The members the engine takes requests from, in id order.
    members: Vec<NodeId>,
}

/// A snapshot of which replica reads a node answers, and under which layout version:
/// built by the engine ([`Engine::replica_read_gate`]) whenever its key changes, and
/// read by the node's request handler, which answers a client's `GetReplica` from
/// memory without queueing it for the engine when the gate lets it (one wake-up of the
/// engine's task less per read). The handler checks the gate again after its storage
/// read: a gate replaced meanwhile sends the read to the engine.
#[derive(Clone, Debug)]
pub struct ReplicaReadGate {
    key: ReplicaReadGateKey,
    ring: shoal_ring::Ring,
    /// Per partition: this node is one of its primaries and answers replica reads.
    primary: Vec<bool>,
}

impl ReplicaReadGate {
    /// What the gate was built from.
    pub fn key(&self) -> &ReplicaReadGateKey {
        &self.key
    }

    /// The layout version the gate was built under.
    pub fn layout_version(&self) -> u64 {
        self.key.version
    }

    /// Whether the request handler may merge a peer's replica write (a
    /// `PeerRequest::Replicate` for `partition`, not a hint, stamped `stamp`) into this
    /// node's copy itself: only where the engine would do nothing but that merge and
    /// its acknowledgement. The engine also takes the request as evidence that `from`
    /// is alive (the handler reports it, [`Engine::heard_from`]); every other case
    /// goes to the engine: an invalid key or one of another partition (its typed
    /// refusals), a stamp of another layout version or cluster (it fetches the newer
    /// layout or refuses the older), a sender not a member, a partition this node does
    /// not hold as a primary in a settled layout or is dropping, a node not serving
    /// (restoring, confirming its layout, fenced, a candidate).
    pub fn admits_merge(
        &self,
        from: &NodeId,
        stamp: &LayoutStamp,
        partition: PartitionId,
        key: &[u8],
    ) -> bool {
        !key.is_empty()
            && key.len() <= crate::config::MAX_KEY_BYTES
            && stamp.version > 0
            && *stamp == self.key.stamp
            && self.key.members.binary_search(from).is_ok()
            && self.check(key).is_ok_and(|(p, _)| p == partition)
    }

    /// The partition of `key` and the layout version a copy of it is answered under,
    /// or why this node declines it (the engine's reason, word for word).
    pub fn check(&self, key: &[u8]) -> Result<(PartitionId, u64), String> {
        if let Some(why) = &self.key.refused {
            return Err(why.clone());
        }
        let partition = self.ring.partition_of(key);
        let primary = self
            .primary
            .get(partition.index())
            .copied()
            .unwrap_or(false);
        let dropping = self.key.dropping.contains(&partition);
        match partition_refusal(partition, dropping, primary, self.key.version) {
            Some(why) => Err(why),
            None => Ok((partition, self.key.version)),
        }
    }
}

/// A read's answer made from one merged object (the coordinator's merge or one
/// replica's copy).
pub fn get_reply(object: &Object) -> GetReply {
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
        if let Some(why) = self.replica_reads_refused() {
            return Some(why);
        }
        partition_refusal(
            partition,
            self.placement.dropping.contains(&partition),
            self.primaries(partition).contains(&self.me),
            self.layout.version(),
        )
    }

    /// Why this node answers no replica read now (whatever the partition), if so.
    fn replica_reads_refused(&self) -> Option<String> {
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
        None
    }

    /// What [`ReplicaReadGate`] depends on: a gate is built again when this changes.
    pub fn replica_read_gate_key(&self) -> ReplicaReadGateKey {
        ReplicaReadGateKey {
            version: self.layout.version(),
            refused: self.replica_reads_refused(),
            dropping: self.placement.dropping.iter().copied().collect(),
            stamp: self.stamp(),
            members: self.membership.peers().cloned().collect(),
        }
    }

    /// A peer's request was served without the engine (a replica write merged by the
    /// node's request handler, [`ReplicaReadGate::admits_merge`]): the evidence that
    /// `from` is alive the engine takes from every request of a peer.
    pub fn heard_from(&mut self, now: crate::time::Now, from: &NodeId) {
        self.advance(now);
        if self.membership.contains(from) {
            self.heard_member(from);
        }
    }

    /// This node's replica-read rules now, for its request handler to answer
    /// [`ClientRequest::GetReplica`](crate::wire::ClientRequest::GetReplica) without
    /// the engine (the same answers the engine gives; see [`ReplicaReadGate`]).
    pub fn replica_read_gate(&self) -> ReplicaReadGate {
        self.replica_read_gate_of(self.replica_read_gate_key())
    }

    /// [`Engine::replica_read_gate`], unless it would be built from `last` (the key of
    /// the gate published last): the key is computed once, the gate only when it changed.
    pub fn replica_read_gate_if_changed(
        &self,
        last: Option<&ReplicaReadGateKey>,
    ) -> Option<ReplicaReadGate> {
        let key = self.replica_read_gate_key();
        (last != Some(&key)).then(|| self.replica_read_gate_of(key))
    }

    fn replica_read_gate_of(&self, key: ReplicaReadGateKey) -> ReplicaReadGate {
        let ring = self.ring().clone();
        let primary = (0..ring.partition_count())
            .map(|p| {
                let p = PartitionId(p);
                key.refused.is_none() && self.primaries(p).contains(&self.me)
            })
            .collect();
        ReplicaReadGate { key, ring, primary }
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
