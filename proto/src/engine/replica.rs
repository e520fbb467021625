//! The replica side: what a node does with requests from its peers.

use shoal_ring::NodeId;

use super::{storage_error, Engine, InboundId, Waiter};
use crate::error::RequestError;
use crate::storage_ops::{HintRejection, StorageOp, StorageReply, StorageResult};
use crate::wire::{AaeResponse, PeerRequest, PeerResponse};

/// What a replica-side storage command answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplicaKind {
    Merge,
    StoreHint,
    Read,
    Aae,
    /// A peer's anti-entropy push into a partition this node still pulls: its keys count
    /// as transfer (a join's data arrives through the old owners' exchanges too).
    AaeTransfer,
}

impl ReplicaKind {
    fn name(self) -> &'static str {
        match self {
            ReplicaKind::Merge => "replicate",
            ReplicaKind::StoreHint => "replicate_hint",
            ReplicaKind::Read => "read",
            ReplicaKind::Aae | ReplicaKind::AaeTransfer => "aae",
        }
    }
}

/// A replica's answer to a peer's write (`PeerRequest::Replicate`, not a hint) from
/// the result of its `StorageOp::Merge`, and the merged object when it acknowledges
/// it. A merge is accepted whatever its sibling count: it carries writes already
/// accepted by their coordinators, and dropping any could lose one. The engine and the
/// node's request handler (which merges some itself) answer with this.
pub fn replica_merge_answer(result: StorageResult) -> (PeerResponse, Option<crate::Object>) {
    match result {
        Ok(StorageReply::Merged { object, .. }) => (PeerResponse::Ack, Some(object)),
        Ok(StorageReply::TooLarge { len, max }) => (
            PeerResponse::Error(RequestError::ObjectTooLarge { len, max }),
            None,
        ),
        Ok(other) => (unexpected_reply(ReplicaKind::Merge, other), None),
        Err(e) => (PeerResponse::Error(storage_error(e)), None),
    }
}

/// The answer to a peer whose request got a storage reply of the wrong kind.
fn unexpected_reply(kind: ReplicaKind, reply: StorageReply) -> PeerResponse {
    PeerResponse::Error(RequestError::Internal(format!(
        "unexpected storage reply to {}: {reply:?}",
        kind.name()
    )))
}

impl Engine {
    pub(super) fn handle_peer(&mut self, id: InboundId, from: NodeId, req: PeerRequest) {
        self.meters
            .replica_requests
            .get([req.op_name()])
            .increment(1);
        if self.restoring()
            && matches!(
                req,
                PeerRequest::Replicate { .. } | PeerRequest::Read { .. } | PeerRequest::Aae(_)
            )
        {
            // A restored node's copies must not be read, merged into, or compared until
            // its peer-wins exchanges are through: it answers like a node going down, so
            // coordinators use fallbacks and keep hints for it (see `restore.rs`).
            self.respond_peer(id, PeerResponse::Error(RequestError::ShuttingDown));
            return;
        }
        match req {
            PeerRequest::Forward(client) => self.handle_client(id, client, true),
            PeerRequest::Replicate {
                partition,
                key,
                object,
                hint_for,
            } => {
                if let Err(e) = self.check_replica_request(partition, &key, hint_for.as_ref()) {
                    self.respond_peer(id, PeerResponse::Error(e));
                    return;
                }
                let max_object_bytes = self.cfg.limits.max_object_bytes;
                match hint_for {
                    None => self.storage(
                        StorageOp::Merge {
                            partition,
                            key,
                            object,
                            max_object_bytes,
                        },
                        Waiter::Replica {
                            inbound: id,
                            kind: ReplicaKind::Merge,
                        },
                    ),
                    Some(target) => {
                        if !self.cfg.handoff.enabled {
                            self.respond_peer(
                                id,
                                PeerResponse::Error(RequestError::NotAllowed(
                                    "hinted handoff is disabled on this node".into(),
                                )),
                            );
                            return;
                        }
                        let op = self.store_hint_op(target, partition, key, object);
                        self.storage(
                            op,
                            Waiter::Replica {
                                inbound: id,
                                kind: ReplicaKind::StoreHint,
                            },
                        )
                    }
                }
            }
            PeerRequest::Read {
                partition,
                key,
                hint_for,
            } => {
                if let Err(e) = self.check_replica_request(partition, &key, hint_for.as_ref()) {
                    self.respond_peer(id, PeerResponse::Error(e));
                    return;
                }
                let op = match hint_for {
                    None => StorageOp::Read { partition, key },
                    Some(target) => StorageOp::ReadHint {
                        target,
                        partition,
                        key,
                        now: self.now,
                        ttl: self.cfg.handoff.ttl,
                    },
                };
                self.storage(
                    op,
                    Waiter::Replica {
                        inbound: id,
                        kind: ReplicaKind::Read,
                    },
                );
            }
            PeerRequest::Gossip(digest) => {
                let now = self.mono;
                self.membership.merge(&digest, now);
                let mine = self.membership.digest();
                self.respond_peer(id, PeerResponse::Gossip(mine));
            }
            PeerRequest::Ping => self.respond_peer(id, PeerResponse::Pong),
            PeerRequest::Aae(req) => {
                // Bytes pushed into a partition this node still pulls are moved data.
                let transfer = match &req {
                    crate::wire::AaeRequest::Push { partition, objects }
                        if self.pulling(*partition) =>
                    {
                        Some(
                            objects
                                .iter()
                                .map(|(k, o)| (k.len() + o.data_bytes()) as u64)
                                .sum::<u64>(),
                        )
                    }
                    _ => None,
                };
                match self.aae_storage_op(req) {
                    Ok(op) => {
                        let kind = match transfer {
                            Some(size) => {
                                metrics::counter!(crate::metrics::TRANSFER_BYTES_TOTAL)
                                    .increment(size);
                                self.placement.note_transfer_bytes(size);
                                ReplicaKind::AaeTransfer
                            }
                            None => ReplicaKind::Aae,
                        };
                        self.storage(op, Waiter::Replica { inbound: id, kind });
                    }
                    Err(e) => self.respond_peer(id, PeerResponse::Error(e)),
                }
            }
            req @ (PeerRequest::LayoutFetch
            | PeerRequest::LayoutPush(_)
            | PeerRequest::Paxos(_)
            | PeerRequest::Hello(_)) => self.handle_layout_peer(id, from, req),
            // The node splits a batch into its requests before they reach the engine.
            PeerRequest::Batch(_) => self.respond_peer(
                id,
                PeerResponse::Error(RequestError::Malformed(
                    "a batch reached the engine unsplit".into(),
                )),
            ),
        }
    }

    /// A replica request must name the key's own partition, and this node must hold it
    /// in some kept layout version (or, for a hint, the target must): a node that no
    /// longer holds a partition refuses, rather than answering "not found" from data it
    /// dropped or taking a copy nobody reads.
    fn check_replica_request(
        &self,
        partition: shoal_ring::PartitionId,
        key: &[u8],
        hint_for: Option<&NodeId>,
    ) -> Result<(), RequestError> {
        self.check_key(partition, key)?;
        if self.placement.dropping.contains(&partition) {
            return Err(RequestError::ShuttingDown);
        }
        // Not held in any version this node keeps: the sender keeps an older version
        // (this node pruned it, having seen every member move on) or knows an older
        // layout; either way it should fetch ours, which the refusal tells it.
        let held = match hint_for {
            None => self.holds(&self.me, partition),
            Some(t) => self.holds(t, partition),
        };
        if held {
            Ok(())
        } else {
            metrics::counter!(crate::metrics::PEER_REFUSED_TOTAL, "reason" => "not_held")
                .increment(1);
            Err(RequestError::StaleLayout {
                current: self.layout.version(),
            })
        }
    }

    /// A key a peer sent for `partition`: within the key limit and of that partition, or
    /// a typed error (counted). Keys are filed and hashed into Merkle trees under the
    /// partition a message names, so a key of another one would be stored where no read
    /// finds it and make the trees of the two replicas differ for good.
    pub(super) fn check_key(
        &self,
        partition: shoal_ring::PartitionId,
        key: &[u8],
    ) -> Result<(), RequestError> {
        let refused = |reason: &'static str, e: RequestError| {
            metrics::counter!(crate::metrics::REPLICA_KEYS_REFUSED_TOTAL, "reason" => reason)
                .increment(1);
            Err(e)
        };
        if key.is_empty() {
            return refused("empty_key", RequestError::EmptyKey);
        }
        if key.len() > crate::config::MAX_KEY_BYTES {
            return refused(
                "key_too_large",
                RequestError::KeyTooLarge {
                    len: key.len(),
                    max: crate::config::MAX_KEY_BYTES,
                },
            );
        }
        if self.ring().partition_of(key) != partition {
            return refused(
                "wrong_partition",
                RequestError::WrongPartition {
                    partition: partition.0,
                },
            );
        }
        Ok(())
    }

    pub(super) fn on_replica_storage(
        &mut self,
        inbound: InboundId,
        kind: ReplicaKind,
        result: StorageResult,
    ) {
        let response = match (kind, result) {
            (ReplicaKind::Merge, result) => {
                let (answer, merged) = replica_merge_answer(result);
                if let Some(object) = merged {
                    self.observe_object("merge", None, super::write::ObjectShape::of(&object));
                }
                answer
            }
            (ReplicaKind::StoreHint, Ok(StorageReply::HintStored)) => {
                metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "stored").increment(1);
                PeerResponse::Ack
            }
            (ReplicaKind::StoreHint, Ok(StorageReply::HintRejected(why))) => {
                metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "dropped").increment(1);
                let problem = match why {
                    HintRejection::TooMany => {
                        "hint store for the target is full (count bound reached)"
                    }
                    HintRejection::TooLarge => {
                        "hint store for the target is full (bytes bound reached)"
                    }
                    HintRejection::Expired => "the object is older than the hint TTL",
                };
                PeerResponse::Error(RequestError::NotAllowed(problem.into()))
            }
            // A key this node reaped lately reads as its tombstone's clock alone; a peer
            // gets no copy instead. A coordinator of an older build would repair with
            // the clock, and its replicas would store an object nothing ever reaps.
            // Clients' direct reads and this node's own reads carry the clock.
            (ReplicaKind::Read, Ok(StorageReply::Object(obj))) => {
                PeerResponse::Object(obj.filter(|o| !o.siblings().is_empty()))
            }
            (_, Ok(StorageReply::TooLarge { len, max })) => {
                PeerResponse::Error(RequestError::ObjectTooLarge { len, max })
            }
            (k @ (ReplicaKind::Aae | ReplicaKind::AaeTransfer), Ok(reply)) => {
                match AaeResponse::try_from(reply) {
                    Ok(answer) => {
                        if let (ReplicaKind::AaeTransfer, AaeResponse::Pushed(changed)) =
                            (k, &answer)
                        {
                            metrics::counter!(crate::metrics::TRANSFER_KEYS_TOTAL)
                                .increment(*changed);
                        }
                        PeerResponse::Aae(answer)
                    }
                    Err(other) => unexpected_reply(k, other),
                }
            }
            (k, Ok(other)) => unexpected_reply(k, other),
            (_, Err(e)) => PeerResponse::Error(storage_error(e)),
        };
        self.respond_peer(inbound, response);
    }
}
