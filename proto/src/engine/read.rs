//! The read coordinator: ask every replica, answer after R replies with the merged
//! siblings and context, then repair replicas that are missing or behind, from the
//! replies that arrive within the read-repair window.

use std::collections::VecDeque;

use shoal_ring::{NodeId, PartitionId};

use super::{outcome_label, Engine, InboundId, RequestId, SendError, Timer, Waiter};
use crate::error::RequestError;
use crate::object::Object;
use crate::storage_ops::{StorageOp, StorageReply};
use crate::time::Time;
use crate::wire::{ClientResponse, GetReply, PeerRequest, PeerResponse, ReadOptions};

#[derive(Clone, Debug, PartialEq, Eq)]
enum SlotState {
    Pending,
    Replied(Option<Object>),
    Failed,
}

#[derive(Clone, Debug)]
struct Slot {
    node: NodeId,
    hint_for: Option<NodeId>,
    state: SlotState,
}

/// A read this node coordinates.
#[derive(Debug)]
pub(super) struct ReadOp {
    inbound: InboundId,
    partition: PartitionId,
    key: Vec<u8>,
    r: usize,
    pr: usize,
    started: Time,
    deadline: Time,
    answered: bool,
    slots: Vec<Slot>,
    spare: VecDeque<NodeId>,
    merged: Object,
    replies: usize,
    primary_replies: usize,
    repair_at: Option<Time>,
}

impl ReadOp {
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
}

impl Engine {
    pub(super) fn start_read(
        &mut self,
        inbound: InboundId,
        partition: PartitionId,
        primaries: Vec<NodeId>,
        key: Vec<u8>,
        options: ReadOptions,
    ) {
        let r = usize::from(options.r.unwrap_or(self.cfg.replication.r));
        let pr = usize::from(options.pr.unwrap_or(self.cfg.replication.pr));
        let timeout = options
            .timeout
            .unwrap_or(self.cfg.replication.request_timeout);
        let mut spare = self.live_fallbacks(partition);
        let mut slots = vec![Slot {
            node: self.me.clone(),
            hint_for: None,
            state: SlotState::Pending,
        }];
        for p in primaries.iter().filter(|p| **p != self.me) {
            if self.membership.is_up(p) {
                slots.push(Slot {
                    node: p.clone(),
                    hint_for: None,
                    state: SlotState::Pending,
                });
            } else if let Some(f) = spare.pop_front() {
                // A fallback may hold hinted writes for the primary it stands in for.
                slots.push(Slot {
                    node: f,
                    hint_for: Some(p.clone()),
                    state: SlotState::Pending,
                });
            }
        }
        let reachable = slots.len();
        let reachable_primaries = slots.iter().filter(|s| s.hint_for.is_none()).count();
        if reachable < r || reachable_primaries < pr {
            let (needed, alive) = if reachable < r {
                (r, reachable)
            } else {
                (pr, reachable_primaries)
            };
            metrics::counter!("shoal_coordinator_requests_total", "op" => "get", "result" => "unavailable")
                .increment(1);
            metrics::counter!("shoal_quorum_failures_total", "op" => "get", "kind" => "unavailable")
                .increment(1);
            self.respond_client(
                inbound,
                ClientResponse::Error(RequestError::Unavailable { needed, alive }),
            );
            return;
        }
        let id = self.next_request_id();
        let deadline = self.now + timeout;
        let sends: Vec<(usize, NodeId, Option<NodeId>)> = slots
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, s)| (i, s.node.clone(), s.hint_for.clone()))
            .collect();
        self.reads.insert(
            id,
            ReadOp {
                inbound,
                partition,
                key: key.clone(),
                r,
                pr,
                started: self.now,
                deadline,
                answered: false,
                slots,
                spare,
                merged: Object::new(),
                replies: 0,
                primary_replies: 0,
                repair_at: None,
            },
        );
        self.timers.insert((deadline, Timer::Deadline(id)));
        self.storage(
            StorageOp::Read {
                partition,
                key: key.clone(),
            },
            Waiter::ReadLocal { op: id, slot: 0 },
        );
        for (slot, node, hint_for) in sends {
            self.send_read(id, slot, node, partition, key.clone(), hint_for);
        }
    }

    fn send_read(
        &mut self,
        op: RequestId,
        slot: usize,
        node: NodeId,
        partition: PartitionId,
        key: Vec<u8>,
        hint_for: Option<NodeId>,
    ) {
        let timeout = self.cfg.replication.rpc_timeout;
        self.send(
            node,
            PeerRequest::Read {
                partition,
                key,
                hint_for,
            },
            timeout,
            Waiter::ReadReplica { op, slot },
        );
    }

    pub(super) fn on_read_local(
        &mut self,
        id: RequestId,
        slot: usize,
        result: Result<StorageReply, String>,
    ) {
        match result {
            Ok(StorageReply::Object(obj)) => self.read_reply(id, slot, Some(obj)),
            // The local store failed: the other replicas may still make the quorum.
            Ok(_) | Err(_) => {
                metrics::counter!("shoal_coordinator_local_read_failures_total").increment(1);
                self.read_reply_failed(id, slot)
            }
        }
    }

    pub(super) fn on_read_replica(
        &mut self,
        id: RequestId,
        slot: usize,
        result: Result<PeerResponse, SendError>,
    ) {
        match result {
            Ok(PeerResponse::Object(obj)) => self.read_reply(id, slot, Some(obj)),
            _ => self.read_reply_failed(id, slot),
        }
    }

    fn read_reply(&mut self, id: RequestId, slot: usize, obj: Option<Option<Object>>) {
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        let Some(s) = op.slots.get_mut(slot) else {
            return;
        };
        if s.state != SlotState::Pending {
            return;
        }
        let obj = obj.unwrap_or_default();
        if let Some(o) = &obj {
            op.merged.merge(o);
        }
        op.replies += 1;
        if s.hint_for.is_none() {
            op.primary_replies += 1;
        }
        s.state = SlotState::Replied(obj);
        self.read_progress(id);
    }

    fn read_reply_failed(&mut self, id: RequestId, slot: usize) {
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        let Some(s) = op.slots.get_mut(slot) else {
            return;
        };
        if s.state != SlotState::Pending {
            return;
        }
        s.state = SlotState::Failed;
        let primary = s.hint_for.clone().unwrap_or_else(|| s.node.clone());
        let replacement = loop {
            match op.spare.pop_front() {
                Some(f) if self.membership.is_up(&f) => break Some(f),
                Some(_) => continue,
                None => break None,
            }
        };
        if let Some(f) = replacement {
            op.slots.push(Slot {
                node: f.clone(),
                hint_for: Some(primary.clone()),
                state: SlotState::Pending,
            });
            let new_slot = op.slots.len() - 1;
            let (partition, key) = (op.partition, op.key.clone());
            self.send_read(id, new_slot, f, partition, key, Some(primary));
        }
        self.read_progress(id);
    }

    fn read_progress(&mut self, id: RequestId) {
        let read_repair_window = self.cfg.replication.read_repair_window;
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        if !op.answered {
            if op.replies >= op.r && op.primary_replies >= op.pr {
                op.answered = true;
                let reply = GetReply {
                    found: op.merged.is_found(),
                    values: op.merged.values().map(<[u8]>::to_vec).collect(),
                    context: op.merged.context(),
                };
                let inbound = op.inbound;
                let elapsed = self.now.saturating_since(op.started);
                metrics::counter!("shoal_coordinator_requests_total", "op" => "get", "result" => outcome_label(&Ok(())))
                    .increment(1);
                metrics::histogram!("shoal_coordinator_duration_seconds", "op" => "get")
                    .record(elapsed.as_secs_f64());
                self.aae.observe_foreground(elapsed);
                self.respond_client(inbound, ClientResponse::Get(reply));
            } else {
                let possible = op.replies + op.pending() + op.spare.len();
                let possible_primaries = op.primary_replies + op.pending_primaries();
                if possible < op.r || possible_primaries < op.pr {
                    let (needed, alive) = if possible < op.r {
                        (op.r, possible)
                    } else {
                        (op.pr, possible_primaries)
                    };
                    self.answer_read_error(id, RequestError::Unavailable { needed, alive });
                }
            }
        }
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        if op.pending() == 0 {
            self.finish_read(id);
        } else if op.answered && op.repair_at.is_none() {
            let at = self.now + read_repair_window;
            op.repair_at = Some(at);
            self.timers.insert((at, Timer::RepairWindow(id)));
        }
    }

    fn answer_read_error(&mut self, id: RequestId, err: RequestError) {
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        if op.answered {
            return;
        }
        op.answered = true;
        let inbound = op.inbound;
        let label = outcome_label(&Err(err.clone()));
        metrics::counter!("shoal_coordinator_requests_total", "op" => "get", "result" => label)
            .increment(1);
        metrics::counter!("shoal_quorum_failures_total", "op" => "get", "kind" => label)
            .increment(1);
        self.respond_client(inbound, ClientResponse::Error(err));
    }

    pub(super) fn read_deadline(&mut self, id: RequestId) {
        let Some(op) = self.reads.get(&id) else {
            return;
        };
        let err = RequestError::Timeout {
            acks: op.replies,
            needed: op.r,
        };
        self.answer_read_error(id, err);
        self.finish_read(id);
    }

    pub(super) fn on_repair_window(&mut self, id: RequestId) {
        self.finish_read(id);
    }

    /// Read repair: every replica that replied with a copy that lacks something of the
    /// merged object gets the merged object. Then the operation ends.
    fn finish_read(&mut self, id: RequestId) {
        let Some(op) = self.reads.remove(&id) else {
            return;
        };
        self.timers.remove(&(op.deadline, Timer::Deadline(id)));
        if let Some(at) = op.repair_at {
            self.timers.remove(&(at, Timer::RepairWindow(id)));
        }
        if op.merged.is_empty() {
            return;
        }
        for slot in op.slots {
            let SlotState::Replied(copy) = slot.state else {
                continue;
            };
            let stale = match &copy {
                None => true,
                Some(c) => *c != op.merged,
            };
            // Without hinted handoff a fallback refuses hints: repair primaries only.
            if !stale || (slot.hint_for.is_some() && !self.cfg.handoff.enabled) {
                continue;
            }
            metrics::counter!("shoal_read_repairs_total").increment(1);
            if slot.node == self.me {
                let max_object_bytes = self.cfg.limits.max_object_bytes;
                self.storage(
                    StorageOp::Merge {
                        partition: op.partition,
                        key: op.key.clone(),
                        object: op.merged.clone(),
                        max_object_bytes,
                    },
                    Waiter::Repair,
                );
            } else {
                let timeout = self.cfg.replication.rpc_timeout;
                self.send(
                    slot.node,
                    PeerRequest::Replicate {
                        partition: op.partition,
                        key: op.key.clone(),
                        object: op.merged.clone(),
                        hint_for: slot.hint_for,
                    },
                    timeout,
                    Waiter::Repair,
                );
            }
        }
    }
}
