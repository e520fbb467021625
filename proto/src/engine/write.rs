//! The write coordinator (puts and deletes): store locally with a new dot, send to the
//! other replicas (fallbacks with a hint for primaries that are down), answer after W
//! acks, and keep delivering to the rest after answering.

use std::collections::VecDeque;

use shoal_ring::{NodeId, PartitionId};

use super::{outcome_label, storage_error, Engine, RequestId, SendError, Timer, Waiter};
use crate::causality::CausalContext;
use crate::error::RequestError;
use crate::object::{Object, SiblingValue};
use crate::storage_ops::{StorageOp, StorageReply};
use crate::time::Time;
use crate::wire::{ClientResponse, PeerRequest, PeerResponse, WriteOptions, WriteReply};

use super::InboundId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Pending,
    Acked,
    Failed,
}

/// One copy of the write being delivered.
#[derive(Clone, Debug)]
struct Slot {
    node: NodeId,
    /// The primary this copy stands in for (a sloppy write), if any.
    hint_for: Option<NodeId>,
    state: SlotState,
}

/// A write this node coordinates.
#[derive(Debug)]
pub(super) struct WriteOp {
    inbound: InboundId,
    delete: bool,
    partition: PartitionId,
    key: Vec<u8>,
    w: usize,
    pw: usize,
    started: Time,
    deadline: Time,
    answered: bool,
    object: Option<Object>,
    /// The success answer, ready once the local store is done.
    reply: Option<ClientResponse>,
    slots: Vec<Slot>,
    spare: VecDeque<NodeId>,
    /// Primaries no copy could be placed for: hinted locally once delivery ends.
    unplaced: Vec<NodeId>,
    acks: usize,
    primary_acks: usize,
}

impl WriteOp {
    fn pending(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == SlotState::Pending)
            .count()
    }

    fn pending_primaries(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == SlotState::Pending && s.hint_for.is_none())
            .count()
    }

    fn op_name(&self) -> &'static str {
        if self.delete {
            "delete"
        } else {
            "put"
        }
    }
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_write(
        &mut self,
        inbound: InboundId,
        partition: PartitionId,
        primaries: Vec<NodeId>,
        key: Vec<u8>,
        value: SiblingValue,
        context: CausalContext,
        options: WriteOptions,
    ) {
        let delete = matches!(value, SiblingValue::Tombstone);
        let w = usize::from(options.w.unwrap_or(self.cfg.replication.w));
        let pw = usize::from(options.pw.unwrap_or(self.cfg.replication.pw));
        let timeout = options
            .timeout
            .unwrap_or(self.cfg.replication.request_timeout);
        let mut spare = self.live_fallbacks(partition);
        let mut slots = Vec::new();
        let mut unplaced = Vec::new();
        for p in primaries.iter().filter(|p| **p != self.me) {
            if self.membership.is_up(p) {
                slots.push(Slot {
                    node: p.clone(),
                    hint_for: None,
                    state: SlotState::Pending,
                });
            } else if self.cfg.handoff.enabled {
                match spare.pop_front() {
                    Some(f) => slots.push(Slot {
                        node: f,
                        hint_for: Some(p.clone()),
                        state: SlotState::Pending,
                    }),
                    None => unplaced.push(p.clone()),
                }
            }
        }
        let reachable = 1 + slots.len();
        let reachable_primaries = 1 + slots.iter().filter(|s| s.hint_for.is_none()).count();
        let op_name = if delete { "delete" } else { "put" };
        if reachable < w || reachable_primaries < pw {
            let (needed, alive) = if reachable < w {
                (w, reachable)
            } else {
                (pw, reachable_primaries)
            };
            metrics::counter!("shoal_coordinator_requests_total", "op" => op_name, "result" => "unavailable")
                .increment(1);
            metrics::counter!("shoal_quorum_failures_total", "op" => op_name, "kind" => "unavailable")
                .increment(1);
            self.respond_client(
                inbound,
                ClientResponse::Error(RequestError::Unavailable { needed, alive }),
            );
            return;
        }
        let id = self.next_request_id();
        let op = WriteOp {
            inbound,
            delete,
            partition,
            key: key.clone(),
            w,
            pw,
            started: self.now,
            deadline: self.now + timeout,
            answered: false,
            object: None,
            reply: None,
            slots,
            spare,
            unplaced,
            acks: 0,
            primary_acks: 0,
        };
        self.writes.insert(id, op);
        self.timers
            .insert((self.now + timeout, Timer::Deadline(id)));
        let max_object_bytes = self.cfg.limits.max_object_bytes;
        let now = self.now;
        self.storage(
            StorageOp::Coordinate {
                partition,
                key,
                context,
                value,
                now,
                max_object_bytes,
            },
            Waiter::WriteLocal(id),
        );
    }

    pub(super) fn on_write_local(&mut self, id: RequestId, result: Result<StorageReply, String>) {
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        let (object, context) = match result {
            Ok(StorageReply::Coordinated { object, context }) => (object, context),
            Ok(StorageReply::TooLarge { len, max }) => {
                self.fail_write(id, RequestError::ObjectTooLarge { len, max });
                return;
            }
            Ok(other) => {
                self.fail_write(
                    id,
                    RequestError::Internal(format!("unexpected storage reply {other:?}")),
                );
                return;
            }
            Err(e) => {
                self.fail_write(id, storage_error(e));
                return;
            }
        };
        op.acks = 1;
        op.primary_acks = 1;
        op.object = Some(object.clone());
        let sends: Vec<(usize, NodeId, Option<NodeId>)> = op
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.node.clone(), s.hint_for.clone()))
            .collect();
        let (partition, key) = (op.partition, op.key.clone());
        let reply = WriteReply { context };
        let response = if op.delete {
            ClientResponse::Delete(reply)
        } else {
            ClientResponse::Put(reply)
        };
        op.reply = Some(response);
        for (slot, node, hint_for) in sends {
            let timeout = self.cfg.replication.rpc_timeout;
            self.send(
                node,
                PeerRequest::Replicate {
                    partition,
                    key: key.clone(),
                    object: object.clone(),
                    hint_for,
                },
                timeout,
                Waiter::WriteReplica { op: id, slot },
            );
        }
        self.write_progress(id);
    }

    pub(super) fn on_write_replica(
        &mut self,
        id: RequestId,
        slot: usize,
        result: Result<PeerResponse, SendError>,
    ) {
        let hinted_handoff = self.cfg.handoff.enabled;
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        let Some(s) = op.slots.get_mut(slot) else {
            return;
        };
        if matches!(result, Ok(PeerResponse::Ack)) {
            s.state = SlotState::Acked;
            op.acks += 1;
            if s.hint_for.is_none() {
                op.primary_acks += 1;
            }
        } else if matches!(
            result,
            Ok(PeerResponse::Error(RequestError::ObjectTooLarge { .. }))
        ) {
            // Another node would refuse it for the same reason: no fallback, no hint.
            s.state = SlotState::Failed;
        } else {
            s.state = SlotState::Failed;
            let primary = s.hint_for.clone().unwrap_or_else(|| s.node.clone());
            // Sloppy quorum: the copy goes to the next healthy fallback instead.
            let replacement = if hinted_handoff {
                loop {
                    match op.spare.pop_front() {
                        Some(f) if self.membership.is_up(&f) => break Some(f),
                        Some(_) => continue,
                        None => break None,
                    }
                }
            } else {
                None
            };
            match replacement {
                Some(f) => {
                    op.slots.push(Slot {
                        node: f.clone(),
                        hint_for: Some(primary.clone()),
                        state: SlotState::Pending,
                    });
                    let new_slot = op.slots.len() - 1;
                    let request = PeerRequest::Replicate {
                        partition: op.partition,
                        key: op.key.clone(),
                        object: op.object.clone().unwrap_or_default(),
                        hint_for: Some(primary),
                    };
                    let timeout = self.cfg.replication.rpc_timeout;
                    self.send(
                        f,
                        request,
                        timeout,
                        Waiter::WriteReplica {
                            op: id,
                            slot: new_slot,
                        },
                    );
                }
                None => {
                    if hinted_handoff && !op.unplaced.contains(&primary) {
                        op.unplaced.push(primary);
                    }
                }
            }
        }
        self.write_progress(id);
    }

    /// Answer once the quorum is met (or can no longer be), finish once every copy is
    /// delivered or given up on.
    fn write_progress(&mut self, id: RequestId) {
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        if !op.answered && op.object.is_some() {
            if op.acks >= op.w && op.primary_acks >= op.pw {
                op.answered = true;
                let op_name = op.op_name();
                let inbound = op.inbound;
                let elapsed = self.now.saturating_since(op.started);
                let response = op.reply.take();
                metrics::counter!("shoal_coordinator_requests_total", "op" => op_name, "result" => outcome_label(&Ok(())))
                    .increment(1);
                metrics::histogram!("shoal_coordinator_duration_seconds", "op" => op_name)
                    .record(elapsed.as_secs_f64());
                self.aae.observe_foreground(elapsed);
                if let Some(r) = response {
                    self.respond_client(inbound, r);
                }
            } else {
                let spare = if self.cfg.handoff.enabled {
                    op.spare.len()
                } else {
                    0
                };
                let possible = op.acks + op.pending() + spare;
                let possible_primaries = op.primary_acks + op.pending_primaries();
                if possible < op.w || possible_primaries < op.pw {
                    let (needed, alive) = if possible < op.w {
                        (op.w, possible)
                    } else {
                        (op.pw, possible_primaries)
                    };
                    self.answer_write_error(id, RequestError::Unavailable { needed, alive });
                }
            }
        }
        let Some(op) = self.writes.get(&id) else {
            return;
        };
        if op.object.is_some() && op.pending() == 0 {
            self.finish_write(id);
        }
    }

    fn answer_write_error(&mut self, id: RequestId, err: RequestError) {
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        if op.answered {
            return;
        }
        op.answered = true;
        let op_name = op.op_name();
        let inbound = op.inbound;
        let label = outcome_label(&Err(err.clone()));
        metrics::counter!("shoal_coordinator_requests_total", "op" => op_name, "result" => label)
            .increment(1);
        if matches!(
            err,
            RequestError::Unavailable { .. } | RequestError::Timeout { .. }
        ) {
            metrics::counter!("shoal_quorum_failures_total", "op" => op_name, "kind" => label)
                .increment(1);
        }
        op.reply = None;
        self.respond_client(inbound, ClientResponse::Error(err));
    }

    fn fail_write(&mut self, id: RequestId, err: RequestError) {
        self.answer_write_error(id, err);
        self.finish_write(id);
    }

    fn finish_write(&mut self, id: RequestId) {
        let Some(op) = self.writes.remove(&id) else {
            return;
        };
        self.timers.remove(&(op.deadline, Timer::Deadline(id)));
        // Primaries that got no copy anywhere get a hint here, so that nothing
        // acknowledged depends on anti-entropy alone.
        if let Some(object) = op.object {
            for target in op.unplaced {
                let now = self.now;
                let (max_hints, max_bytes) = (
                    self.cfg.handoff.max_hints_per_target,
                    self.cfg.handoff.max_hint_bytes_per_target,
                );
                self.storage(
                    StorageOp::StoreHint {
                        target,
                        partition: op.partition,
                        key: op.key.clone(),
                        object: object.clone(),
                        now,
                        max_hints,
                        max_bytes,
                    },
                    Waiter::LocalHint,
                );
            }
        }
    }

    pub(super) fn write_deadline(&mut self, id: RequestId) {
        let Some(op) = self.writes.get(&id) else {
            return;
        };
        let err = RequestError::Timeout {
            acks: op.acks,
            needed: op.w,
        };
        let local_done = op.object.is_some();
        self.answer_write_error(id, err);
        if !local_done {
            // The local store never answered: nothing was sent, nothing more will be.
            // The storage reply, if it comes, finds no operation and is dropped.
            self.finish_write(id);
        }
    }
}
