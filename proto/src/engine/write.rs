//! The write coordinator (puts and deletes): store locally with a new dot, send to the
//! other replicas (fallbacks with a hint for primaries that are down), answer after W
//! acks, and keep delivering to the rest after answering.

use std::collections::VecDeque;
use std::time::Duration;

use shoal_ring::{NodeId, PartitionId};

use super::quorum::{Needed, Quorum, Status, Target, LOCAL};
use super::{outcome_label, storage_error, Engine, RequestId, SendError, Timer, Waiter};
use crate::causality::CausalContext;
use crate::error::RequestError;
use crate::object::{Object, SiblingValue};
use crate::storage_ops::{StorageOp, StorageReply, StorageResult};
use crate::time::Monotonic;
use crate::wire::{ClientResponse, PeerRequest, PeerResponse, WriteOptions, WriteReply};

use super::InboundId;

/// Bytes of a key shown in a sibling warning: enough to find the key, not a 4 KiB dump.
const LOGGED_KEY_BYTES: usize = 64;

/// What the sibling and size metrics record of an object.
#[derive(Clone, Copy, Debug)]
pub(super) struct ObjectShape {
    /// Siblings, tombstones included.
    pub(super) siblings: usize,
    /// Bytes of the values ([`Object::data_bytes`]).
    pub(super) bytes: usize,
}

impl ObjectShape {
    pub(super) fn of(object: &Object) -> ObjectShape {
        ObjectShape {
            siblings: object.siblings().len(),
            bytes: object.data_bytes(),
        }
    }
}

/// Most times one write sends a refused replica request again after learning the
/// refuser's layout ([`Engine::recheck_parked_writes`]).
const MAX_RESENDS: u8 = 2;

/// A write this node coordinates.
#[derive(Debug)]
pub(super) struct WriteOp {
    inbound: InboundId,
    delete: bool,
    partition: PartitionId,
    key: Vec<u8>,
    started: Monotonic,
    deadline: Monotonic,
    answered: bool,
    object: Option<Object>,
    /// The success answer, ready once the local store is done.
    reply: Option<ClientResponse>,
    /// The copies being delivered; its unplaced primaries are hinted locally once
    /// delivery ends.
    quorum: Quorum<()>,
    /// The key's primaries (N): the write is fully replicated once each acknowledged.
    replicas: usize,
    /// When the client got its success answer.
    acked_at: Option<Monotonic>,
    /// When a primary (the local store included) last acknowledged.
    last_primary_ack: Monotonic,
    /// The layout version current when it started (see `placement.rs`: this node's
    /// `ack` waits for the ops of older versions).
    pub(super) started_under: u64,
    /// Slots whose replica refused because it no longer holds the partition while this
    /// node still keeps a layout version where it does: parked (still pending) until
    /// this node's layout is fetched from a peer again ([`Engine::recheck_parked_writes`]).
    parked: Vec<(usize, NodeId)>,
    /// Parked slots sent again so far (at most [`MAX_RESENDS`] per write).
    resent: u8,
    /// Slots sent again after a timeout or a lost connection
    /// ([`Engine::resend_failed_copy`]; each at most once).
    resent_after_failure: Vec<usize>,
}

impl WriteOp {
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
        if delete && context.is_empty() {
            // A tombstone with an empty context covers nothing: read first, and delete
            // what the read returns (see `delete_after_read`).
            self.start_delete_read(inbound, partition, primaries, key, options);
            return;
        }
        let w = usize::from(options.w.unwrap_or(self.cfg.replication.w));
        let pw = usize::from(options.pw.unwrap_or(self.cfg.replication.pw));
        let timeout = options
            .timeout
            .unwrap_or(self.cfg.replication.request_timeout);
        let needed = Needed {
            all: w,
            primaries: pw,
        };
        // Without hinted handoff no fallback stands in for a down primary.
        let fallbacks = self
            .cfg
            .handoff
            .enabled
            .then(|| self.live_fallbacks(partition));
        let op_name = if delete { "delete" } else { "put" };
        // W in each replica set of the layout versions in use (one set outside a move).
        let sets = self.write_sets(partition);
        let membership = &self.membership;
        let quorum = match Quorum::place_in_sets(&self.me, &sets, needed, fallbacks, |n| {
            membership.is_up(n)
        }) {
            Ok(quorum) => quorum,
            Err(short) => {
                self.refuse_unavailable(inbound, op_name, short);
                return;
            }
        };
        let replicas: usize = self.write_union(partition).len();
        let id = self.next_request_id();
        let op = WriteOp {
            inbound,
            delete,
            partition,
            key: key.clone(),
            started: self.mono,
            deadline: self.mono + timeout,
            answered: false,
            object: None,
            reply: None,
            quorum,
            replicas,
            acked_at: None,
            last_primary_ack: self.mono,
            started_under: self.layout.version(),
            parked: Vec::new(),
            resent: 0,
            resent_after_failure: Vec::new(),
        };
        self.writes.insert(id, op);
        self.timers
            .insert((self.mono + timeout, Timer::Deadline(id)));
        let (max_object_bytes, max_siblings) = (
            self.cfg.limits.max_object_bytes,
            self.cfg.limits.max_siblings,
        );
        let now = self.now;
        self.storage(
            StorageOp::Coordinate {
                partition,
                key,
                context,
                value,
                now,
                max_object_bytes,
                max_siblings,
            },
            Waiter::WriteLocal(id),
        );
    }

    /// Places a read's or write's quorum (see [`Quorum::place`]) with this node's view
    /// of who is up. When the placed targets cannot meet it, answers `Unavailable`
    /// before anything is asked or written, and returns `None`.
    pub(super) fn place_quorum<R>(
        &mut self,
        inbound: InboundId,
        op_name: &'static str,
        primaries: &[NodeId],
        needed: Needed,
        fallbacks: Option<VecDeque<NodeId>>,
    ) -> Option<Quorum<R>> {
        let membership = &self.membership;
        match Quorum::place(&self.me, primaries, needed, fallbacks, |n| {
            membership.is_up(n)
        }) {
            Ok(quorum) => Some(quorum),
            Err(short) => {
                self.refuse_unavailable(inbound, op_name, short);
                None
            }
        }
    }

    /// Answers `Unavailable`: the placed targets cannot meet the quorum.
    fn refuse_unavailable(
        &mut self,
        inbound: InboundId,
        op_name: &'static str,
        short: super::quorum::Shortfall,
    ) {
        self.meters
            .requests
            .get([op_name, "unavailable"])
            .increment(1);
        self.meters
            .quorum_failures
            .get([op_name, "unavailable"])
            .increment(1);
        self.respond_client(inbound, ClientResponse::Error(short.into()));
    }

    /// The local write's final result: durable (or failed).
    pub(super) fn on_write_local(&mut self, id: RequestId, result: StorageResult) {
        if self.writes.get(&id).is_some_and(|op| op.object.is_some()) {
            // Applied earlier ([`Engine::handle_storage_applied`]): this is its sync.
            self.on_write_synced(id, result);
        } else {
            self.on_write_stored(id, result, true);
        }
    }

    /// The local write is applied but not durable yet (group commit): replicate now.
    pub(super) fn on_write_applied(&mut self, id: RequestId, result: StorageResult) {
        let applied = matches!(&result, Ok(reply) if reply.replicates_before_durable());
        if applied && self.writes.get(&id).is_some_and(|op| op.object.is_none()) {
            self.on_write_stored(id, result, false);
        }
    }

    /// The sync of a local write applied earlier ended: the local copy counts now, or,
    /// if the sync failed, never. A failed local copy is then treated as a replica's
    /// (sloppy quorum): the next healthy fallback gets a copy with a hint for this node.
    /// The other copies' acknowledgements decide the answer; short of W, the answer is
    /// `Incomplete`, since the copies sent may survive (not the disk's error, which would
    /// claim that nothing was written).
    fn on_write_synced(&mut self, id: RequestId, result: StorageResult) {
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        if !op.quorum.is_pending(LOCAL) {
            return;
        }
        match result {
            Ok(_) => {
                op.quorum.record(LOCAL, ());
                op.last_primary_ack = self.mono;
                self.meters
                    .replicated_before_sync
                    .get(["synced"])
                    .increment(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "a write's local copy was not synced: its other copies decide it");
                self.meters
                    .replicated_before_sync
                    .get(["failed"])
                    .increment(1);
                self.copy_to_fallback(id, LOCAL);
            }
        }
        self.write_progress(id);
    }

    /// The local write's result (`durable`: synced as the store's durability promises).
    fn on_write_stored(&mut self, id: RequestId, result: StorageResult, durable: bool) {
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        let (object, context) = match result {
            Ok(StorageReply::Coordinated { object, context }) => (object, context),
            Ok(StorageReply::TooLarge { len, max }) => {
                self.fail_write(id, RequestError::ObjectTooLarge { len, max });
                return;
            }
            Ok(StorageReply::TooManySiblings { siblings, max }) => {
                self.meters.sibling_limit.get(["refused"]).increment(1);
                let limit = max;
                self.fail_write(id, RequestError::TooManySiblings { siblings, limit });
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
        if durable {
            op.quorum.record(LOCAL, ());
            op.last_primary_ack = self.mono;
        }
        op.object = Some(object.clone());
        let key = op.key.clone();
        self.observe_object("write", Some(&key), ObjectShape::of(&object));
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        let sends = op.quorum.remote_targets();
        let (partition, key) = (op.partition, op.key.clone());
        let reply = WriteReply { context };
        let response = if op.delete {
            ClientResponse::Delete(reply)
        } else {
            ClientResponse::Put(reply)
        };
        op.reply = Some(response);
        for target in sends {
            self.send_replicate(id, partition, key.clone(), object.clone(), target);
        }
        self.write_progress(id);
    }

    pub(super) fn on_write_replica(
        &mut self,
        id: RequestId,
        slot: usize,
        result: Result<PeerResponse, SendError>,
    ) {
        if !self
            .writes
            .get(&id)
            .is_some_and(|op| op.quorum.is_pending(slot))
        {
            return;
        }
        if let Some(peer) = self.refused_for_layout(id, slot, &result) {
            // Parked: settled when `peer`'s layout and ours have met
            // ([`Engine::recheck_parked_writes`]).
            if let Some(op) = self.writes.get_mut(&id) {
                op.parked.push((slot, peer));
            }
            return;
        }
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        if matches!(result, Ok(PeerResponse::Ack)) {
            let before = op.quorum.primary_answers();
            op.quorum.record(slot, ());
            if op.quorum.primary_answers() > before {
                op.last_primary_ack = self.mono;
            }
        } else if matches!(
            result,
            Ok(PeerResponse::Error(RequestError::ObjectTooLarge { .. }))
        ) {
            // Another node would refuse it for the same reason: no fallback, no hint.
            op.quorum.refuse(slot);
        } else if !self.resend_failed_copy(id, slot, &result) {
            self.copy_to_fallback(id, slot);
        }
        self.write_progress(id);
    }

    /// A copy (`slot`) that timed out or whose connection failed is sent once more to
    /// the same replica when no fallback is left to take it, the client still waits and
    /// the deadline has room for another `rpc_timeout`: a replica whose runtime only
    /// stalled, or that restarted under the connection, still makes the quorum. Merging
    /// the same object twice changes nothing, so a first copy that did arrive is
    /// harmless. At most once per copy. Whether it was sent.
    fn resend_failed_copy(
        &mut self,
        id: RequestId,
        slot: usize,
        result: &Result<PeerResponse, SendError>,
    ) -> bool {
        let Some(reason) = resend_reason(result) else {
            return false;
        };
        let room = self.mono + self.cfg.replication.rpc_timeout;
        let membership = &self.membership;
        let Some(op) = self.writes.get_mut(&id) else {
            return false;
        };
        if !may_send_again(
            op.answered,
            op.deadline,
            room,
            &op.resent_after_failure,
            slot,
        ) || op.quorum.has_fallback(|n| membership.is_up(n))
        {
            return false;
        }
        let Some(target) = op.quorum.target_of(slot) else {
            return false;
        };
        op.resent_after_failure.push(slot);
        self.meters.replica_writes_resent.get([reason]).increment(1);
        self.send_copy(id, target);
        true
    }

    /// `slot`'s copy failed: sloppy quorum, the copy goes to the next healthy fallback
    /// instead (with a hint for the slot's primary), if one is left.
    fn copy_to_fallback(&mut self, id: RequestId, slot: usize) {
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        let membership = &self.membership;
        if let Some(target) = op.quorum.fail(slot, |n| membership.is_up(n)) {
            self.send_copy(id, target);
        }
    }

    /// Sends write `id`'s stored object to `target` (a copy sent again, or to a fallback).
    fn send_copy(&mut self, id: RequestId, target: Target) {
        let Some(op) = self.writes.get(&id) else {
            return;
        };
        let (partition, key) = (op.partition, op.key.clone());
        let object = op.object.clone().unwrap_or_default();
        self.send_replicate(id, partition, key, object, target);
    }

    /// Whether a replica's refusal of a write's `slot` is one of layout (a
    /// [`RequestError::StaleLayout`]) that the write waits out, and which peer it waits
    /// for. The replica either knows a newer layout, or pruned a version this node
    /// still keeps (it holds the partition in no version it keeps): `check_answer`
    /// fetched its history. Or it is behind this node's layout (a joiner that has not
    /// installed the version making it a replica): this node pushes its history to it.
    /// Either way, once the two met, the write knows whether it still needs that
    /// replica, and the replica whether it takes the write. At most [`MAX_RESENDS`] per
    /// write; otherwise the refusal is a failure as any other.
    fn refused_for_layout(
        &mut self,
        id: RequestId,
        slot: usize,
        result: &Result<PeerResponse, SendError>,
    ) -> Option<NodeId> {
        let Ok(PeerResponse::Error(RequestError::StaleLayout { current })) = result else {
            return None;
        };
        let op = self.writes.get(&id)?;
        if op.resent >= MAX_RESENDS {
            return None;
        }
        let peer = op.quorum.target_of(slot)?.node;
        let mine = self.layout.version();
        if *current < mine {
            self.push_layout_to(peer.clone());
            return Some(peer);
        }
        // `check_answer` started the fetch, unless one is running or too many are.
        self.agree.is_fetching(&peer).then_some(peer)
    }

    /// A layout fetch from `peer` or push to it ended (answered or not): the writes
    /// with slots parked on it drop the replica sets of the versions pruned meanwhile,
    /// and each such slot is settled: given up without a fallback when its replica is
    /// in no set left, asked again when it still is (a second refusal counts again, up
    /// to [`MAX_RESENDS`] per write).
    pub(super) fn recheck_parked_writes(&mut self, peer: &NodeId) {
        let ids: Vec<RequestId> = self
            .writes
            .iter()
            .filter(|(_, op)| op.parked.iter().any(|(_, p)| p == peer))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(partition) = self.writes.get(&id).map(|op| op.partition) else {
                continue;
            };
            let sets = self.write_sets(partition);
            let Some(op) = self.writes.get_mut(&id) else {
                continue;
            };
            op.quorum.narrow_sets(&sets);
            let mut resend = Vec::new();
            let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut op.parked)
                .into_iter()
                .partition(|(_, p)| p == peer);
            op.parked = others;
            for (slot, _) in mine {
                let needed = op
                    .quorum
                    .primary_of(slot)
                    .is_some_and(|p| sets.iter().flatten().any(|n| n == p));
                if !needed {
                    op.quorum.refuse(slot);
                } else if let Some(target) = op.quorum.target_of(slot) {
                    // Still a replica: ask it again, now stamped with what we learned.
                    op.resent += 1;
                    self.meters
                        .replica_writes_resent
                        .get(["stale_layout"])
                        .increment(1);
                    resend.push(target);
                }
            }
            let (key, object) = (op.key.clone(), op.object.clone().unwrap_or_default());
            for target in resend {
                self.send_replicate(id, partition, key.clone(), object.clone(), target);
            }
            self.write_progress(id);
        }
    }

    fn send_replicate(
        &mut self,
        id: RequestId,
        partition: PartitionId,
        key: Vec<u8>,
        object: Object,
        target: Target,
    ) {
        let timeout = self.cfg.replication.rpc_timeout;
        self.send(
            target.node,
            PeerRequest::Replicate {
                partition,
                key,
                object,
                hint_for: target.hint_for,
            },
            timeout,
            Waiter::WriteReplica {
                op: id,
                slot: target.slot,
            },
        );
    }

    /// Answer once the quorum is met (or can no longer be), finish once every copy is
    /// delivered or given up on.
    fn write_progress(&mut self, id: RequestId) {
        let Some(op) = self.writes.get_mut(&id) else {
            return;
        };
        if !op.answered && op.object.is_some() {
            match op.quorum.status() {
                Status::Met => {
                    op.answered = true;
                    op.acked_at = Some(self.mono);
                    let op_name = op.op_name();
                    let inbound = op.inbound;
                    let elapsed = self.mono.saturating_since(op.started);
                    let response = op.reply.take();
                    self.meters
                        .requests
                        .get([op_name, outcome_label(&Ok(()))])
                        .increment(1);
                    self.meters
                        .duration
                        .get([op_name])
                        .record(elapsed.as_secs_f64());
                    self.aae.observe_foreground(elapsed);
                    if let Some(r) = response {
                        self.respond_client(inbound, r);
                    }
                }
                // Past `object.is_some()` the coordinator's own copy is stored, so
                // "unavailable" (nothing written) would be untrue: the copy spreads.
                Status::Impossible(short) => {
                    let err = RequestError::Incomplete {
                        acks: op.quorum.answers(),
                        needed: short.needed,
                    };
                    self.answer_write_error(id, err)
                }
                Status::Waiting => {}
            }
        }
        let Some(op) = self.writes.get(&id) else {
            return;
        };
        if op.object.is_some() && op.quorum.pending() == 0 {
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
        self.meters.requests.get([op_name, label]).increment(1);
        if matches!(
            err,
            RequestError::Unavailable { .. }
                | RequestError::Timeout { .. }
                | RequestError::Incomplete { .. }
        ) {
            self.meters
                .quorum_failures
                .get([op_name, label])
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
        self.after_op_ended(op.started_under);
        // Replication lag: only for writes the client was told succeeded.
        if let Some(acked_at) = op.acked_at {
            if op.quorum.primary_answers() >= op.replicas {
                let lag = op.last_primary_ack.saturating_since(acked_at);
                self.meters.replication_lag.one().record(lag.as_secs_f64());
            } else {
                metrics::counter!(crate::metrics::REPLICATION_LAG_UNFINISHED_TOTAL).increment(1);
            }
        }
        // Primaries that got no copy anywhere get a hint here, so that nothing
        // acknowledged depends on anti-entropy alone. Not this node, whose own copy
        // failed to sync (group commit): a hint on the disk that just failed would be
        // for itself; anti-entropy brings its copy back from the others.
        if let Some(object) = op.object {
            let targets: Vec<NodeId> = (op.quorum.unplaced().iter())
                .filter(|n| **n != self.me)
                .cloned()
                .collect();
            for target in targets {
                let store =
                    self.store_hint_op(target, op.partition, op.key.clone(), object.clone());
                self.storage(store, Waiter::LocalHint);
            }
        }
    }

    pub(super) fn write_deadline(&mut self, id: RequestId) {
        let Some(op) = self.writes.get(&id) else {
            return;
        };
        let err = RequestError::Timeout {
            acks: op.quorum.answers(),
            needed: op.quorum.needed().all,
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

impl Engine {
    /// The second step of a delete without a context, once its read has met its quorum:
    /// write a tombstone with the read's context, so that it replaces every sibling the
    /// read returned (as Riak does). Writes that race the read are not in that context
    /// and stay, as siblings of the tombstone. A read that found no value (nothing, or
    /// only tombstones) answers at once without writing: there is nothing to delete. The
    /// write gets what is left of the request's deadline.
    pub(super) fn delete_after_read(
        &mut self,
        inbound: InboundId,
        partition: PartitionId,
        key: Vec<u8>,
        read: &Object,
        options: WriteOptions,
        deadline: Monotonic,
    ) {
        if !read.is_found() {
            self.meters
                .requests
                .get(["delete", outcome_label(&Ok(()))])
                .increment(1);
            let context = read.context();
            self.respond_client(inbound, ClientResponse::Delete(WriteReply { context }));
            return;
        }
        let left = deadline
            .saturating_since(self.mono)
            .max(Duration::from_millis(1));
        let options = WriteOptions {
            timeout: Some(left),
            ..options
        };
        let primaries = self.primaries(partition);
        self.start_write(
            inbound,
            partition,
            primaries,
            key,
            SiblingValue::Tombstone,
            read.context(),
            options,
        );
    }

    /// Records a key's object in the sibling and size histograms (`op`: `write` at a
    /// coordinator, `merge` at a replica, `read` for an answer), and counts and logs a
    /// stored object past `limits.sibling_warn` (or, merged at a replica, past
    /// `limits.max_siblings`: merges are never refused for their siblings). A replica's
    /// merge reply does not carry the key: its warning names none.
    pub(super) fn observe_object(&self, op: &'static str, key: Option<&[u8]>, shape: ObjectShape) {
        let ObjectShape { siblings, bytes } = shape;
        self.meters.siblings.get([op]).record(siblings as f64);
        self.meters.sizes.get([op]).record(bytes as f64);
        if op == "read" {
            return;
        }
        if let Some(event) = many_siblings(op, key, siblings, &self.cfg.limits) {
            self.meters.sibling_limit.get([event]).increment(1);
        }
    }
}

/// A stored object of `siblings` siblings (`op`: `write` at a coordinator, `merge` at a
/// replica) past `limits.sibling_warn`: logged (naming `key` if known), and the `event`
/// of `shoal_sibling_limit_total` to count it under (`warned`, or `over_limit` past
/// `limits.max_siblings`); `None` within the bound. The engine's, and the node's
/// request handler's for the replica writes it merges itself.
pub fn many_siblings(
    op: &'static str,
    key: Option<&[u8]>,
    siblings: usize,
    limits: &crate::config::LimitsConfig,
) -> Option<&'static str> {
    if siblings <= limits.sibling_warn {
        return None;
    }
    let (event, limit) = if siblings > limits.max_siblings {
        ("over_limit", limits.max_siblings)
    } else {
        ("warned", limits.sibling_warn)
    };
    let shown = key
        .map(|k| &k[..k.len().min(LOGGED_KEY_BYTES)])
        .unwrap_or_default();
    tracing::warn!(
        key = %String::from_utf8_lossy(shown),
        siblings,
        limit,
        op,
        "a key has many siblings: resolve them by writing with a read's context"
    );
    Some(event)
}

/// Why a replica request that failed with `result` may be sent once more to the same
/// replica (the metric's `reason`): it timed out, or its connection was lost. `None` for
/// an answer or any other failure.
pub(super) fn resend_reason(result: &Result<PeerResponse, SendError>) -> Option<&'static str> {
    match result {
        Err(SendError::Timeout) => Some("timeout"),
        Err(SendError::Lost(_)) => Some("lost"),
        _ => None,
    }
}

/// Whether a request may send `slot` once more: not answered yet, its `deadline` at or
/// after `room` (now plus a whole `rpc_timeout`), and that slot not sent again before.
pub(super) fn may_send_again(
    answered: bool,
    deadline: Monotonic,
    room: Monotonic,
    resent: &[usize],
    slot: usize,
) -> bool {
    !answered && room <= deadline && !resent.contains(&slot)
}
