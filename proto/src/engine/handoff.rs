//! Hinted handoff: hints this node keeps for primaries that were down are delivered when
//! those primaries are reachable again, a bounded batch per target per interval, then
//! deleted. Hints live in storage, so delivery resumes after a crash where it stopped.

use std::collections::BTreeMap;

use shoal_ring::{NodeId, PartitionId};

use super::{Engine, SendError, Waiter};
use crate::object::Object;
use crate::storage_ops::{StorageOp, StorageReply, StorageResult};
use crate::wire::{PeerRequest, PeerResponse};

/// Counts of hint delivery since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Hints delivered to their primary (and deleted).
    pub delivered: u64,
    /// Hints dropped because they outlived the hint TTL.
    pub expired: u64,
    /// Deliveries that failed (retried next round).
    pub failed: u64,
}

/// Which step of a delivery a command is for.
#[derive(Clone, Debug)]
pub(super) enum HandoffStep {
    Summary,
    List(NodeId),
    Deliver {
        target: NodeId,
        partition: PartitionId,
        key: Vec<u8>,
        object: Object,
    },
    Delete(NodeId),
    Drop(NodeId),
}

#[derive(Debug, Default)]
pub(super) struct Handoff {
    summary_pending: bool,
    /// Targets with a batch in flight, and how many of its commands are outstanding.
    active: BTreeMap<NodeId, usize>,
    stats: HandoffStats,
}

impl Handoff {
    pub(super) fn stats(&self) -> HandoffStats {
        self.stats
    }
}

impl Engine {
    pub(super) fn handoff_round(&mut self) {
        if self.handoff.summary_pending {
            return;
        }
        self.handoff.summary_pending = true;
        self.storage(
            StorageOp::HintSummary,
            Waiter::Handoff(HandoffStep::Summary),
        );
    }

    pub(super) fn on_handoff_storage(&mut self, step: HandoffStep, result: StorageResult) {
        match step {
            HandoffStep::Summary => {
                self.handoff.summary_pending = false;
                let Ok(StorageReply::HintSummary(totals)) = result else {
                    return;
                };
                self.set_hint_totals(&totals);
                let batch = self.cfg.handoff.batch;
                for (target, t) in totals {
                    if t.count == 0
                        || !self.membership.contains(&target)
                        || !self.membership.is_up(&target)
                        || self.handoff.active.contains_key(&target)
                    {
                        continue;
                    }
                    self.handoff.active.insert(target.clone(), 1);
                    self.storage(
                        StorageOp::ListHints {
                            target: target.clone(),
                            limit: batch,
                        },
                        Waiter::Handoff(HandoffStep::List(target)),
                    );
                }
            }
            HandoffStep::List(target) => {
                let records = match result {
                    Ok(StorageReply::Hints(records)) => records,
                    _ => Vec::new(),
                };
                if let Some(n) = self.handoff.active.get_mut(&target) {
                    *n += records.len();
                }
                let ttl = self.cfg.handoff.ttl;
                let timeout = self.cfg.replication.rpc_timeout;
                for h in records {
                    // A hint expires by the age of its content: the newest write it holds.
                    // Nothing older than the TTL is ever delivered, and the TTL is shorter
                    // than the tombstone grace period, so a hint can never bring back a key
                    // whose tombstone was reaped.
                    let newest = h
                        .object
                        .siblings()
                        .iter()
                        .map(|s| s.timestamp)
                        .max()
                        .unwrap_or(h.stored_at);
                    if self.now.saturating_since(newest) >= ttl {
                        self.storage(
                            StorageOp::DropHint {
                                target: target.clone(),
                                partition: h.partition,
                                key: h.key,
                            },
                            Waiter::Handoff(HandoffStep::Drop(target.clone())),
                        );
                    } else {
                        let request = PeerRequest::Replicate {
                            partition: h.partition,
                            key: h.key.clone(),
                            object: h.object.clone(),
                            hint_for: None,
                        };
                        self.send(
                            target.clone(),
                            request,
                            timeout,
                            Waiter::Handoff(HandoffStep::Deliver {
                                target: target.clone(),
                                partition: h.partition,
                                key: h.key,
                                object: h.object,
                            }),
                        );
                    }
                }
                self.handoff_done(&target);
            }
            HandoffStep::Delete(target) => {
                if matches!(result, Ok(StorageReply::HintDeleted(true))) {
                    self.handoff.stats.delivered += 1;
                    metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "delivered")
                        .increment(1);
                }
                self.handoff_done(&target);
            }
            HandoffStep::Drop(target) => {
                if matches!(result, Ok(StorageReply::HintDeleted(true))) {
                    self.handoff.stats.expired += 1;
                    metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "expired")
                        .increment(1);
                }
                self.handoff_done(&target);
            }
            HandoffStep::Deliver { target, .. } => self.handoff_done(&target),
        }
    }

    pub(super) fn on_handoff_send(
        &mut self,
        step: HandoffStep,
        result: Result<PeerResponse, SendError>,
    ) {
        let HandoffStep::Deliver {
            target,
            partition,
            key,
            object,
        } = step
        else {
            return;
        };
        if matches!(result, Ok(PeerResponse::Ack)) {
            // Delete only if the hint did not grow meanwhile; the delete replaces this
            // delivery in the target's outstanding count.
            self.storage(
                StorageOp::DeleteHint {
                    target: target.clone(),
                    partition,
                    key,
                    delivered: object,
                },
                Waiter::Handoff(HandoffStep::Delete(target)),
            );
        } else {
            self.handoff.stats.failed += 1;
            metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "delivery_failed")
                .increment(1);
            self.handoff_done(&target);
        }
    }

    fn handoff_done(&mut self, target: &NodeId) {
        if let Some(n) = self.handoff.active.get_mut(target) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.handoff.active.remove(target);
            }
        }
    }
}
