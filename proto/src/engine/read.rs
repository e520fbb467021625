//! The read coordinator: ask R replicas (its own store and the next R - 1 of the placed
//! slots, primaries first), answer after R replies with the merged siblings and context,
//! then repair replicas that are missing or behind, from the replies that arrive within
//! the read-repair window.
//!
//! Asking R instead of all N halves a read's messages at N = 3, R = 2. What all N gave
//! for free is kept by asking more when it matters: a read still waiting
//! `read_speculative_after` after its start asks one more slot (a slow replica no longer
//! sets the latency), a failed slot is replaced by one not asked yet (every read that met
//! R with all N asked still meets it: unasked slots count as possible), and read repair
//! reaches the others when the replies disagree (the rest are asked) or for the
//! `read_repair_chance_percent` of reads that ask all N from the start. A replica behind
//! replicas that agree, which no read asks, is anti-entropy's to repair.
//!
//! Reads hold whole replica copies until their repair is done, and a get costs the
//! requester a few bytes while its copies may weigh megabytes: the bytes held are
//! counted against `limits.max_read_bytes_in_flight`. A read asks the other replicas
//! together with its own storage read while the reads held stay under half of that
//! budget and few reads of unknown size are out ([`MAX_UNSIZED_READS`]); otherwise it
//! reads its own copy first and asks the others only if that copy times the replicas
//! fits, else it answers `Overloaded` having asked nobody. So a flood of large gets is
//! refused at its coordinator while small reads keep fitting, and the copies in flight
//! on the peer links stay bounded. Reads asked before they were sized can take the
//! budget past its end; a small read (copies of at most 1/64 of the budget) may then
//! still draw on a reserve of 1/8 of it that only small reads use, so that large reads
//! cannot refuse small ones (the hostile suite's unread-responses kind saw the
//! well-behaved client's gets refused before it).

use rand::Rng;
use shoal_ring::{NodeId, PartitionId};

use super::quorum::{Needed, Quorum, Status, Target, LOCAL};
use super::write::ObjectShape;
use super::{outcome_label, Engine, InboundId, RequestId, SendError, Timer, Waiter};
use crate::error::RequestError;
use crate::object::Object;
use crate::storage_ops::{StorageOp, StorageReply, StorageResult};
use crate::time::Monotonic;
use crate::wire::{ClientResponse, PeerRequest, PeerResponse, ReadOptions, WriteOptions};

/// A read this node coordinates.
#[derive(Debug)]
pub(super) struct ReadOp {
    inbound: InboundId,
    partition: PartitionId,
    key: Vec<u8>,
    started: Monotonic,
    deadline: Monotonic,
    answered: bool,
    /// Who was asked; each answer keeps the replica's copy (`None`: it has none), to
    /// compare with the merge for read repair.
    quorum: Quorum<Option<Object>>,
    merged: Object,
    repair_at: Option<Monotonic>,
    /// `Some` for the read a delete without a context makes first: instead of answering,
    /// it deletes what it read, with these options.
    then_delete: Option<WriteOptions>,
    /// Bytes charged to the engine's read budget (`Engine::read_bytes`).
    held: usize,
    /// For a small read (see [`SMALL_READ_SHARE`]), the part of `held` also counted in
    /// `Engine::small_read_bytes`, the reserve's use.
    small_charge: usize,
    /// The size of the local copy, once read: what each other copy is expected to weigh.
    local_len: Option<usize>,
    /// Whether the other replicas were asked before the local copy's size was known
    /// (counted in `Engine::unsized_reads` until it is).
    size_unknown: bool,
    /// The other replicas to ask once the local copy shows the read fits.
    deferred: Vec<Target>,
    /// The layout version current when it started, and the version whose replicas it
    /// reads (see `placement.rs`: this node's `ack` and `sync_ack` wait for them).
    pub(super) started_under: u64,
    pub(super) read_version: u64,
    /// When the next speculative request is due, while replicas are left to ask.
    speculate_at: Option<Monotonic>,
    /// Whether every placed replica has been asked (counted once, by reason).
    asked_all: bool,
    /// Slots asked again after a timeout or a lost connection (each at most once).
    resent_after_failure: Vec<usize>,
}

/// Most reads that may ask the other replicas before their own copy shows how large the
/// object is: bounds what a burst of reads arriving together can pull over the peer
/// links to about this many times N objects.
pub const MAX_UNSIZED_READS: usize = 16;

/// A read whose copies weigh at most this share of the read budget (1 MiB of the default
/// 64 MiB) is small: it may also draw on the reserve.
pub const SMALL_READ_SHARE: usize = 64;

/// Share of the read budget kept for small reads beyond what the others hold (8 MiB of
/// the default 64 MiB, a few thousand reads of kilobyte values): large reads, which may
/// fill the budget and, asked before they are sized, pass it, cannot refuse small ones.
pub const RESERVE_SHARE: usize = 8;

/// Why a read asked every replica it placed: the `reason` label of
/// `shoal_reads_all_replicas_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AllReason {
    /// R (or PR) needed every placed replica (R = N, or replicas down).
    Quorum,
    /// Sampled for read repair (`replication.read_repair_chance_percent`).
    Sampled,
    /// The replies disagreed: the rest were asked so that read repair reaches them.
    Divergent,
    /// Speculative requests to slow replicas, or replacements for failed ones, used up
    /// the rest.
    Slow,
}

impl AllReason {
    fn label(self) -> &'static str {
        match self {
            AllReason::Quorum => "quorum",
            AllReason::Sampled => "sampled",
            AllReason::Divergent => "divergent",
            AllReason::Slow => "slow",
        }
    }
}

impl ReadOp {
    /// The `op` label of its metrics: the read step of a delete is not a client's get.
    fn op_name(&self) -> &'static str {
        read_op_name(self.then_delete.is_some())
    }
}

fn read_op_name(for_delete: bool) -> &'static str {
    if for_delete {
        "delete_read"
    } else {
        "get"
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
        self.start_read_op(inbound, partition, primaries, key, options, None);
    }

    /// A delete without a context reads the key first, with the node's R and PR and the
    /// delete's timeout; [`Engine::delete_after_read`] goes on from the read's merge. A
    /// read that fails answers the delete with the read's error (`Unavailable`,
    /// `Timeout`): nothing was written.
    pub(super) fn start_delete_read(
        &mut self,
        inbound: InboundId,
        partition: PartitionId,
        primaries: Vec<NodeId>,
        key: Vec<u8>,
        options: WriteOptions,
    ) {
        let read = ReadOptions {
            timeout: options.timeout,
            ..ReadOptions::default()
        };
        self.start_read_op(inbound, partition, primaries, key, read, Some(options));
    }

    fn start_read_op(
        &mut self,
        inbound: InboundId,
        partition: PartitionId,
        primaries: Vec<NodeId>,
        key: Vec<u8>,
        options: ReadOptions,
        then_delete: Option<WriteOptions>,
    ) {
        let r = usize::from(options.r.unwrap_or(self.cfg.replication.r));
        let pr = usize::from(options.pr.unwrap_or(self.cfg.replication.pr));
        let timeout = options
            .timeout
            .unwrap_or(self.cfg.replication.request_timeout);
        let needed = Needed {
            all: r,
            primaries: pr,
        };
        // A fallback may hold hinted writes for the primary it stands in for.
        let fallbacks = Some(self.live_fallbacks(partition));
        let op_name = read_op_name(then_delete.is_some());
        let Some(mut quorum) = self.place_quorum(inbound, op_name, &primaries, needed, fallbacks)
        else {
            return;
        };
        let id = self.next_request_id();
        let deadline = self.mono + timeout;
        // R replicas (the local store counts as asked already), or, for a sampled share
        // of reads, every one of them.
        quorum.idle_remote();
        let short = quorum.asks_short();
        let sampled = quorum.idle() > short && self.read_repair_sampled();
        let count = if sampled { quorum.idle() } else { short };
        let sends: Vec<Target> = std::iter::from_fn(|| quorum.ask_next())
            .take(count)
            .collect();
        let all_reason = match (quorum.idle(), sampled) {
            (0, true) => Some(AllReason::Sampled),
            (0, false) => Some(AllReason::Quorum),
            _ => None,
        };
        let speculate_at =
            (quorum.idle() > 0).then(|| self.mono + self.cfg.replication.read_speculative_after);
        let budget = self.cfg.limits.max_read_bytes_in_flight;
        let ask_now = self.read_bytes < budget / 2 && self.unsized_reads < MAX_UNSIZED_READS;
        let (sends, deferred) = if ask_now {
            self.unsized_reads += 1;
            (sends, Vec::new())
        } else {
            (Vec::new(), sends)
        };
        self.reads.insert(
            id,
            ReadOp {
                inbound,
                partition,
                key: key.clone(),
                started: self.mono,
                deadline,
                answered: false,
                quorum,
                merged: Object::new(),
                repair_at: None,
                then_delete,
                held: 0,
                small_charge: 0,
                local_len: None,
                size_unknown: ask_now,
                deferred,
                started_under: self.layout.version(),
                read_version: self.layout.read_version().version(),
                speculate_at,
                asked_all: false,
                resent_after_failure: Vec::new(),
            },
        );
        self.timers.insert((deadline, Timer::Deadline(id)));
        if let Some(at) = speculate_at {
            self.timers.insert((at, Timer::Speculate(id)));
        }
        if let Some(reason) = all_reason {
            self.note_asked_all(id, reason);
        }
        self.storage(
            StorageOp::Read {
                partition,
                key: key.clone(),
            },
            Waiter::ReadLocal {
                op: id,
                slot: LOCAL,
            },
        );
        for target in sends {
            self.send_read(id, partition, key.clone(), target);
        }
    }

    fn send_read(&mut self, op: RequestId, partition: PartitionId, key: Vec<u8>, target: Target) {
        let timeout = self.cfg.replication.rpc_timeout;
        self.send(
            target.node,
            PeerRequest::Read {
                partition,
                key,
                hint_for: target.hint_for,
            },
            timeout,
            Waiter::ReadReplica {
                op,
                slot: target.slot,
            },
        );
    }

    /// Whether this read is one of the `read_repair_chance_percent` that ask every
    /// replica (the engine's seeded random source decides).
    fn read_repair_sampled(&mut self) -> bool {
        let percent = self.cfg.replication.read_repair_chance_percent;
        percent > 0 && self.rng.random_range(0..100u8) < percent
    }

    /// Counts read `id` in `shoal_reads_all_replicas_total` once every replica it placed
    /// has been asked (the first reason that got it there).
    fn note_asked_all(&mut self, id: RequestId, reason: AllReason) {
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        if op.asked_all || op.quorum.idle() > 0 {
            return;
        }
        op.asked_all = true;
        self.meters.all_replicas.get([reason.label()]).increment(1);
    }

    /// Asks up to `count` more replicas of read `id`, in the order the quorum prefers,
    /// unless its first requests still wait for the local copy's size (`deferred`).
    /// Each is charged as large as the local copy when that is known (before, the
    /// sizing charges every slot waiting). Returns how many were asked.
    fn ask_more(&mut self, id: RequestId, count: usize, reason: AllReason) -> usize {
        let Some(op) = self.reads.get_mut(&id) else {
            return 0;
        };
        if !op.deferred.is_empty() {
            return 0;
        }
        let targets: Vec<Target> = std::iter::from_fn(|| op.quorum.ask_next())
            .take(count)
            .collect();
        let charge = op.local_len.unwrap_or(0).saturating_mul(targets.len());
        op.held = op.held.saturating_add(charge);
        let (partition, key) = (op.partition, op.key.clone());
        self.charge_read_bytes(charge, 0);
        let asked = targets.len();
        for target in targets {
            self.send_read(id, partition, key.clone(), target);
        }
        self.note_asked_all(id, reason);
        asked
    }

    /// The speculative delay of read `id` passed: if it is still not answered, ask one
    /// more replica, and wait again while any is left.
    pub(super) fn on_speculate(&mut self, id: RequestId) {
        let after = self.cfg.replication.read_speculative_after;
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        op.speculate_at = None;
        if op.answered || op.quorum.idle() == 0 {
            return;
        }
        if self.ask_more(id, 1, AllReason::Slow) > 0 {
            metrics::counter!(crate::metrics::READ_SPECULATIVE_REQUESTS_TOTAL).increment(1);
        }
        let at = self.mono + after;
        if let Some(op) = self.reads.get_mut(&id).filter(|op| op.quorum.idle() > 0) {
            op.speculate_at = Some(at);
            self.timers.insert((at, Timer::Speculate(id)));
        }
    }

    pub(super) fn on_read_local(&mut self, id: RequestId, slot: usize, result: StorageResult) {
        let local_len = match &result {
            Ok(StorageReply::Object(obj)) => obj.as_ref().map_or(0, Object::encoded_len),
            // Nothing to size the others by: they are charged as they arrive.
            _ => 0,
        };
        if !self.size_read(id, local_len) {
            return;
        }
        match result {
            Ok(StorageReply::Object(obj)) => self.read_reply(id, slot, Some(obj)),
            // The local store failed: the other replicas may still make the quorum.
            Ok(_) | Err(_) => {
                metrics::counter!(crate::metrics::COORDINATOR_LOCAL_READ_FAILURES_TOTAL)
                    .increment(1);
                self.read_reply_failed(id, slot)
            }
        }
    }

    /// The local copy of read `id` weighs `local_len`: charges it and the copies expected
    /// from the other replicas to the read budget, and asks the replicas that were held
    /// back, or, when that does not fit, answers `Overloaded` and ends the read. Returns
    /// whether the read goes on.
    fn size_read(&mut self, id: RequestId, local_len: usize) -> bool {
        let budget = self.cfg.limits.max_read_bytes_in_flight;
        let in_use = self.read_bytes;
        let Some(op) = self.reads.get_mut(&id) else {
            return false;
        };
        if std::mem::take(&mut op.size_unknown) {
            self.unsized_reads -= 1;
        }
        op.local_len = Some(local_len);
        // This copy and those still to come; replies that came first were charged in
        // full as they arrived.
        let copies = op.quorum.pending();
        let charge = local_len.saturating_mul(copies);
        let small = charge <= budget / SMALL_READ_SHARE;
        let in_reserve =
            small && self.small_read_bytes.saturating_add(charge) <= budget / RESERVE_SHARE;
        let deferred = std::mem::take(&mut op.deferred);
        if !deferred.is_empty()
            && in_use > 0
            && in_use.saturating_add(charge) > budget
            && !in_reserve
        {
            self.meters.reads_deferred.get(["overloaded"]).increment(1);
            self.answer_read_error(id, RequestError::Overloaded);
            self.end_read(id);
            return false;
        }
        if !deferred.is_empty() {
            self.meters.reads_deferred.get(["sent"]).increment(1);
        }
        op.held = op.held.saturating_add(charge);
        if small {
            op.small_charge = op.small_charge.saturating_add(charge);
            self.small_read_bytes = self.small_read_bytes.saturating_add(charge);
        }
        let (partition, key) = (op.partition, op.key.clone());
        self.charge_read_bytes(charge, 0);
        for target in deferred {
            self.send_read(id, partition, key.clone(), target);
        }
        true
    }

    /// Adds `add` to and takes `release` from the bytes the reads hold, and exports them.
    fn charge_read_bytes(&mut self, add: usize, release: usize) {
        self.read_bytes = self.read_bytes.saturating_add(add).saturating_sub(release);
        self.meters.read_inflight.one().set(self.read_bytes as f64);
    }

    /// Bytes of replica copies the reads this node coordinates hold now.
    pub fn read_bytes_in_flight(&self) -> usize {
        self.read_bytes
    }

    pub(super) fn on_read_replica(
        &mut self,
        id: RequestId,
        slot: usize,
        result: Result<PeerResponse, SendError>,
    ) {
        match result {
            Ok(PeerResponse::Object(obj)) => self.read_reply(id, slot, Some(obj)),
            failed => {
                if !self.resend_failed_read(id, slot, &failed) {
                    self.read_reply_failed(id, slot);
                }
            }
        }
    }

    /// A replica read (`slot`) that timed out or whose connection failed is sent once
    /// more to the same replica when no replica is left to ask instead (none idle, no
    /// fallback up), the client still waits and the deadline has room for another
    /// `rpc_timeout`: one lost message, or a replica whose runtime only stalled, does not
    /// fail a read that needs every replica it can ask (as
    /// `Engine::resend_failed_copy` does for writes). At most once per slot. Whether it
    /// was sent.
    fn resend_failed_read(
        &mut self,
        id: RequestId,
        slot: usize,
        result: &Result<PeerResponse, SendError>,
    ) -> bool {
        let Some(reason) = super::write::resend_reason(result) else {
            return false;
        };
        let room = self.mono + self.cfg.replication.rpc_timeout;
        let membership = &self.membership;
        let Some(op) = self.reads.get_mut(&id) else {
            return false;
        };
        if !super::write::may_send_again(
            op.answered,
            op.deadline,
            room,
            &op.resent_after_failure,
            slot,
        ) || op.quorum.idle() > 0
            || op.quorum.has_fallback(|n| membership.is_up(n))
        {
            return false;
        }
        let Some(target) = op.quorum.target_of(slot) else {
            return false;
        };
        op.resent_after_failure.push(slot);
        let (partition, key) = (op.partition, op.key.clone());
        self.meters.replica_reads_resent.get([reason]).increment(1);
        self.send_read(id, partition, key, target);
        true
    }

    fn read_reply(&mut self, id: RequestId, slot: usize, obj: Option<Option<Object>>) {
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        if !op.quorum.is_pending(slot) {
            return;
        }
        let obj = obj.unwrap_or_default();
        if slot != LOCAL {
            // Charged as large as the local copy already; a larger one adds the rest.
            let len = obj.as_ref().map_or(0, Object::encoded_len);
            let extra = len.saturating_sub(op.local_len.unwrap_or(0));
            op.held = op.held.saturating_add(extra);
            self.charge_read_bytes(extra, 0);
        }
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        if let Some(o) = &obj {
            op.merged.merge(o);
        }
        op.quorum.record(slot, obj);
        self.read_progress(id);
    }

    fn read_reply_failed(&mut self, id: RequestId, slot: usize) {
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        if !op.quorum.is_pending(slot) {
            return;
        }
        // The replicas not asked yet come first, then the next fallback standing in
        // for the one that failed (placed idle by `fail_idle`), as many as R needs.
        let membership = &self.membership;
        op.quorum.fail_idle(slot, |n| membership.is_up(n));
        let short = op.quorum.asks_short();
        if short > 0 {
            self.ask_more(id, short, AllReason::Slow);
        }
        self.read_progress(id);
    }

    fn read_progress(&mut self, id: RequestId) {
        let read_repair_window = self.cfg.replication.read_repair_window;
        let max = self.cfg.limits.max_object_bytes;
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        if !op.answered {
            match op.quorum.status() {
                // Each replica's copy is within the object limit, but copies that
                // diverged (concurrent large writes at two coordinators) can merge past
                // it, into an answer no frame carries: refuse it with a typed error.
                // One replica's copy (`r = 1`) is always within the limit.
                Status::Met if op.then_delete.is_none() && op.merged.encoded_len() > max => {
                    let len = op.merged.encoded_len();
                    self.answer_read_error(id, RequestError::ObjectTooLarge { len, max });
                }
                Status::Met => {
                    op.answered = true;
                    let (inbound, op_name) = (op.inbound, op.op_name());
                    let elapsed = self.mono.saturating_since(op.started);
                    self.meters
                        .requests
                        .get([op_name, outcome_label(&Ok(()))])
                        .increment(1);
                    self.meters
                        .duration
                        .get([op_name])
                        .record(elapsed.as_secs_f64());
                    self.aae.observe_foreground(elapsed);
                    let key = op.key.clone();
                    if let Some(options) = op.then_delete.clone() {
                        let (partition, deadline) = (op.partition, op.deadline);
                        let merged = op.merged.clone();
                        self.delete_after_read(inbound, partition, key, &merged, options, deadline);
                    } else {
                        let reply = super::direct::get_reply(&op.merged);
                        let shape = ObjectShape::of(&op.merged);
                        self.observe_object("read", Some(&key), shape);
                        self.respond_client(inbound, ClientResponse::Get(reply));
                    }
                    self.ask_rest_if_divergent(id);
                }
                Status::Impossible(short) => self.answer_read_error(id, short.into()),
                Status::Waiting => {}
            }
        }
        let Some(op) = self.reads.get_mut(&id) else {
            return;
        };
        if op.quorum.pending() == 0 {
            self.finish_read(id);
        } else if op.answered && op.repair_at.is_none() {
            let at = self.mono + read_repair_window;
            op.repair_at = Some(at);
            self.timers.insert((at, Timer::RepairWindow(id)));
        }
    }

    /// Read `id` was answered from replies that disagree (some copy lacks something of
    /// the merge): ask the replicas it has not asked, so that read repair reaches every
    /// replica that answers within the window, not only the R that were asked.
    fn ask_rest_if_divergent(&mut self, id: RequestId) {
        let Some(op) = self.reads.get(&id) else {
            return;
        };
        let rest = op.quorum.idle();
        if rest == 0 || op.merged.is_empty() {
            return;
        }
        let merged = &op.merged;
        let divergent = op
            .quorum
            .answered()
            .any(|copy| copy.as_ref() != Some(merged));
        if divergent {
            self.ask_more(id, rest, AllReason::Divergent);
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
        let (inbound, op_name) = (op.inbound, op.op_name());
        let label = outcome_label(&Err(err.clone()));
        self.meters.requests.get([op_name, label]).increment(1);
        if matches!(
            err,
            RequestError::Unavailable { .. } | RequestError::Timeout { .. }
        ) {
            self.meters
                .quorum_failures
                .get([op_name, label])
                .increment(1);
        }
        self.respond_client(inbound, ClientResponse::Error(err));
    }

    pub(super) fn read_deadline(&mut self, id: RequestId) {
        let Some(op) = self.reads.get(&id) else {
            return;
        };
        let err = RequestError::Timeout {
            acks: op.quorum.answers(),
            needed: op.quorum.needed().all,
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
        let Some(op) = self.end_read(id) else {
            return;
        };
        // Nothing to repair without a sibling: a copy holding only a clock is how a
        // replica that reaped the key's tombstone lately reads it, and the replicas that
        // answered nothing may have reaped it too (a receiver would not store it).
        if op.merged.siblings().is_empty() {
            return;
        }
        // A tombstone old enough to be reaped (on the clock of any node, up to
        // `max_clock_skew` ahead) may have been reaped by a replica that answered with no
        // copy while this read ran: writing it back would leave the replicas differing
        // and the tombstone unreapable until an exchange copies it everywhere again. A
        // replica holding an older value still gets it.
        let reapable = op.merged.tombstone_time().is_some_and(|t| {
            let r = &self.cfg.replication;
            self.now.saturating_since(t) + r.max_clock_skew >= r.tombstone_grace
        });
        for (node, hint_for, copy) in op.quorum.into_answers() {
            let stale = match &copy {
                None => !reapable,
                Some(c) => *c != op.merged,
            };
            // Without hinted handoff a fallback refuses hints: repair primaries only.
            if !stale || (hint_for.is_some() && !self.cfg.handoff.enabled) {
                continue;
            }
            // The read's end may have let this node's layout move on and drop the
            // partition (`end_read` -> `after_op_ended`): its own copy is then not
            // repaired, as a replica request for it would be refused.
            if node == self.me
                && (self.placement.dropping.contains(&op.partition)
                    || !self.holds(&self.me, op.partition))
            {
                continue;
            }
            metrics::counter!(crate::metrics::READ_REPAIRS_TOTAL).increment(1);
            if node == self.me {
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
                    node,
                    PeerRequest::Replicate {
                        partition: op.partition,
                        key: op.key.clone(),
                        object: op.merged.clone(),
                        hint_for,
                    },
                    timeout,
                    Waiter::Repair,
                );
            }
        }
    }

    /// Removes read `id` with its timers, and gives back what it held of the budget.
    fn end_read(&mut self, id: RequestId) -> Option<ReadOp> {
        let op = self.reads.remove(&id)?;
        self.timers.remove(&(op.deadline, Timer::Deadline(id)));
        self.after_op_ended(op.started_under);
        if let Some(at) = op.repair_at {
            self.timers.remove(&(at, Timer::RepairWindow(id)));
        }
        if let Some(at) = op.speculate_at {
            self.timers.remove(&(at, Timer::Speculate(id)));
        }
        if op.size_unknown {
            self.unsized_reads -= 1;
        }
        self.charge_read_bytes(0, op.held);
        self.small_read_bytes = self.small_read_bytes.saturating_sub(op.small_charge);
        if self.reads.is_empty() && (self.read_bytes, self.small_read_bytes) != (0, 0) {
            // Every charge is given back with its read: a remainder is an accounting bug.
            // Tests and the simulator stop on it; a node starts the budget over.
            debug_assert_eq!(
                (self.read_bytes, self.small_read_bytes),
                (0, 0),
                "bytes charged to reads (all, small) none of which is left"
            );
            let stray = self.read_bytes;
            self.charge_read_bytes(0, stray);
            self.small_read_bytes = 0;
        }
        Some(op)
    }
}
