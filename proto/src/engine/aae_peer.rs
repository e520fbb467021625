//! The anti-entropy requests a node serves for its peers, and `AaeStatus`.

use super::aae::{level_sizes, AAE_SEGMENTS};
use super::{Engine, InboundId, Waiter};
use crate::storage_ops::{StorageOp, StorageReply};
use crate::wire::{AaeExchangeStatus, AaePartitionStatus, AaeReport, AaeRequest, ClientResponse};

impl Engine {
    // ---- serving peers and status ----

    /// Map a peer's anti-entropy request to a storage op, after checking it.
    pub(super) fn aae_storage_op(&self, req: AaeRequest) -> Result<StorageOp, crate::RequestError> {
        use crate::RequestError;
        let partition = req.partition();
        if partition.0 >= self.ring.partition_count() {
            return Err(RequestError::Malformed(format!("no partition {partition}")));
        }
        if !self.primaries(partition).contains(&self.me) {
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
        Ok(match req {
            AaeRequest::Nodes {
                partition,
                level,
                indices,
            } => {
                let sizes = level_sizes();
                let size = sizes
                    .get(usize::from(level))
                    .copied()
                    .ok_or_else(|| RequestError::Malformed(format!("no tree level {level}")))?;
                if indices.iter().any(|i| *i >= size) {
                    return Err(RequestError::Malformed("tree index out of range".into()));
                }
                StorageOp::TreeNodes {
                    partition,
                    level,
                    indices,
                }
            }
            AaeRequest::Segments {
                partition,
                segments,
            } => {
                if segments.iter().any(|s| *s >= AAE_SEGMENTS) {
                    return Err(RequestError::Malformed("segment out of range".into()));
                }
                StorageOp::Segments {
                    partition,
                    segments,
                }
            }
            AaeRequest::Fetch { partition, keys } => StorageOp::ReadMany { partition, keys },
            AaeRequest::Push { partition, objects } => StorageOp::MergeMany {
                partition,
                objects,
                max_object_bytes: self.cfg.limits.max_object_bytes,
            },
            AaeRequest::Digests { partition, keys } => StorageOp::Digests { partition, keys },
            AaeRequest::Reap { partition, keys } => StorageOp::Reap { partition, keys },
        })
    }

    pub(super) fn aae_status(&mut self, inbound: InboundId) {
        let partitions = self.replica_partitions.clone();
        self.storage(
            StorageOp::TreeSummaries { partitions },
            Waiter::AaeStatus(inbound),
        );
    }

    pub(super) fn on_aae_status(
        &mut self,
        inbound: InboundId,
        result: Result<StorageReply, String>,
    ) {
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
                        result: r.result.clone(),
                        keys_repaired: r.keys_repaired,
                    })
                    .collect(),
            })
            .collect();
        let report = AaeReport {
            node: self.me.clone(),
            partitions,
        };
        self.respond_client(inbound, ClientResponse::AaeStatus(report));
    }
}
