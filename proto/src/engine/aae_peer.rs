//! The anti-entropy requests a node serves for its peers, and `AaeStatus`.

use super::aae::{AAE_SEGMENTS, AAE_SHAPE};
use super::{Engine, InboundId, Waiter};
use crate::storage_ops::{StorageOp, StorageReply, StorageResult};
use crate::wire::{
    AaeExchangeStatus, AaePartitionStatus, AaeReport, AaeRequest, AaeResponse, ClientResponse,
};

/// The answer to an [`AaeRequest`] from the reply of the storage op that serves it, whoever
/// asked; any other reply is handed back.
impl TryFrom<StorageReply> for AaeResponse {
    type Error = StorageReply;

    fn try_from(reply: StorageReply) -> Result<AaeResponse, StorageReply> {
        Ok(match reply {
            StorageReply::TreeNodes(h) => AaeResponse::Nodes(h),
            StorageReply::Segments(s) => AaeResponse::Segments(s),
            StorageReply::Objects(o) => AaeResponse::Objects(o),
            StorageReply::MergedMany { changed, .. } => AaeResponse::Pushed(changed),
            StorageReply::Digests(d) => AaeResponse::Digests(d),
            StorageReply::Reaped(n) => AaeResponse::Reaped(n),
            // A peer-wins exchange's local replacement counts as keys repaired.
            StorageReply::Replaced(n) => AaeResponse::Pushed(n),
            other => return Err(other),
        })
    }
}

/// The keys an anti-entropy request names (none for tree and segment questions).
fn request_keys(req: &AaeRequest) -> Box<dyn Iterator<Item = &[u8]> + '_> {
    match req {
        AaeRequest::Nodes { .. } | AaeRequest::Segments { .. } => Box::new(std::iter::empty()),
        AaeRequest::Fetch { keys, .. } | AaeRequest::Digests { keys, .. } => {
            Box::new(keys.iter().map(Vec::as_slice))
        }
        AaeRequest::Push { objects, .. } => Box::new(objects.iter().map(|(k, _)| k.as_slice())),
        AaeRequest::Reap { keys, .. } => Box::new(keys.iter().map(|(k, _)| k.as_slice())),
    }
}

impl Engine {
    // ---- serving peers and status ----

    /// Map a peer's anti-entropy request to a storage op, after checking it.
    pub(super) fn aae_storage_op(&self, req: AaeRequest) -> Result<StorageOp, crate::RequestError> {
        use crate::RequestError;
        let partition = req.partition();
        if partition.0 >= self.ring().partition_count() {
            return Err(RequestError::Malformed(format!("no partition {partition}")));
        }
        if !self.holds(&self.me, partition) || self.placement.dropping.contains(&partition) {
            return Err(RequestError::Internal(format!(
                "node {} is not a replica of partition {partition}",
                self.me
            )));
        }
        if req.batch_len() > crate::wire::MAX_AAE_BATCH {
            return Err(RequestError::Malformed(format!(
                "{} items in one anti-entropy message (limit {})",
                req.batch_len(),
                crate::wire::MAX_AAE_BATCH
            )));
        }
        match &req {
            AaeRequest::Nodes { level, indices, .. } => {
                let size = AAE_SHAPE
                    .level_width(usize::from(*level))
                    .ok_or_else(|| RequestError::Malformed(format!("no tree level {level}")))?;
                if indices.iter().any(|i| *i >= size) {
                    return Err(RequestError::Malformed("tree index out of range".into()));
                }
            }
            AaeRequest::Segments { segments, .. }
                if segments.iter().any(|s| *s >= AAE_SEGMENTS) =>
            {
                return Err(RequestError::Malformed("segment out of range".into()));
            }
            // A reply lists a prefix of the segments in the order asked, which the byte
            // bound cuts in scan (ascending) order.
            AaeRequest::Segments { segments, .. } if !segments.is_sorted_by(|a, b| a < b) => {
                return Err(RequestError::Malformed(
                    "segments not strictly ascending".into(),
                ));
            }
            _ => {}
        }
        for key in request_keys(&req) {
            self.check_key(partition, key)?;
        }
        Ok(self.aae_op(req))
    }

    /// The storage op that answers an anti-entropy request, whether a peer asks it or
    /// this node's own exchange asks its local replica (unchecked: see
    /// [`Engine::aae_storage_op`] for a peer's).
    pub(super) fn aae_op(&self, req: AaeRequest) -> StorageOp {
        match req {
            AaeRequest::Nodes {
                partition,
                level,
                indices,
            } => StorageOp::TreeNodes {
                partition,
                level,
                indices,
            },
            AaeRequest::Segments {
                partition,
                segments,
            } => StorageOp::Segments {
                partition,
                segments,
                max_bytes: self.cfg.limits.max_object_bytes,
            },
            AaeRequest::Fetch { partition, keys } => StorageOp::ReadMany {
                partition,
                keys,
                max_bytes: self.cfg.limits.max_object_bytes,
            },
            AaeRequest::Push { partition, objects } => StorageOp::MergeMany {
                partition,
                objects,
                max_object_bytes: self.cfg.limits.max_object_bytes,
            },
            AaeRequest::Digests { partition, keys } => StorageOp::Digests { partition, keys },
            AaeRequest::Reap { partition, keys } => StorageOp::Reap { partition, keys },
        }
    }

    pub(super) fn aae_status(&mut self, inbound: InboundId) {
        let partitions = self.replica_partitions.clone();
        self.storage(
            StorageOp::TreeSummaries { partitions },
            Waiter::AaeStatus(inbound),
        );
    }

    pub(super) fn on_aae_status(&mut self, inbound: InboundId, result: StorageResult) {
        let summaries = match result {
            Ok(StorageReply::TreeSummaries(s)) => s,
            Ok(other) => {
                self.respond_client(
                    inbound,
                    ClientResponse::Error(crate::RequestError::Internal(format!(
                        "unexpected storage reply {other:?}"
                    ))),
                );
                return;
            }
            Err(e) => {
                self.respond_client(inbound, ClientResponse::Error(super::storage_error(e)));
                return;
            }
        };
        let partitions = summaries
            .into_iter()
            .map(|(partition, root, keys)| AaePartitionStatus {
                partition,
                root,
                keys,
                exchanges: self
                    .aae
                    .last
                    .get(&partition)
                    .into_iter()
                    .flatten()
                    .map(|(peer, r)| AaeExchangeStatus {
                        peer: peer.clone(),
                        at: r.at,
                        result: r.to_string(),
                        keys_repaired: r.keys_repaired,
                        last_ok: r.last_ok,
                    })
                    .collect(),
            })
            .collect();
        let report = AaeReport {
            node: self.me.clone(),
            partitions,
            now: self.now,
        };
        self.respond_client(inbound, ClientResponse::AaeStatus(report));
    }
}
