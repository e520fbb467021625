//! Hinted handoff: hints this node keeps for primaries that were down are delivered when
//! those primaries are reachable again, then deleted. Hints live in storage, so delivery
//! resumes after a crash where it stopped.
//!
//! Each target's hints are walked in key order with a cursor, one page of at most
//! `handoff.batch` at a time (at most one page in flight per target):
//!
//! - an expired hint is dropped, whether or not its target is up (the hint TTL holds on
//!   every access; reads and stores apply it in storage too), only if it is still the
//!   hint that was listed;
//! - a live hint is delivered if its target is up, and deleted once acknowledged only if
//!   the delivered object includes what the hint holds by then;
//! - a delivery its target answers with a refusal of the hint itself (e.g. an object too
//!   large for it; not a refusal for the target's own state, such as a full disk or
//!   overload, which passes) counts against that hint; after [`MAX_DELIVERY_ATTEMPTS`] the hint is parked
//!   (skipped until it expires, is stored anew, or this node restarts; anti-entropy
//!   repairs what it carried); sends that time out or fail count against nothing. Since the cursor moves
//!   on after every page, no hint ever holds up the hints behind it;
//! - when a page of deliveries all succeeded and more hints follow, the next page starts
//!   at once instead of at the next `handoff.interval`: throughput is bounded by
//!   `handoff.batch` in flight per target and the target's answers, not by a fixed rate.

use std::collections::BTreeMap;

use shoal_ring::{NodeId, PartitionId};

use super::{Engine, SendError, Waiter};
use crate::error::RequestError;
use crate::object::Object;
use crate::storage_ops::{HintRecord, StorageOp, StorageReply, StorageResult};
use crate::time::Time;
use crate::wire::{PeerRequest, PeerResponse};

/// Deliveries of one hint that its target may refuse before the hint is parked.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 5;

/// Hints whose refused deliveries are tracked at once (the parked ones included); beyond
/// it, a refused hint is simply retried once per pass over its target's hints.
const MAX_TRACKED_HINTS: usize = 65_536;

/// Counts of hint delivery since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Hints delivered to their primary (and deleted).
    pub delivered: u64,
    /// Hints dropped because they outlived the hint TTL.
    pub expired: u64,
    /// Deliveries that failed (retried next pass).
    pub failed: u64,
    /// Hints parked after [`MAX_DELIVERY_ATTEMPTS`] refused deliveries.
    pub parked: u64,
}

/// A hint, by target, partition and key.
type HintId = (NodeId, PartitionId, Vec<u8>);

/// Which step of a delivery a command is for.
#[derive(Clone, Debug)]
pub(super) enum HandoffStep {
    Summary,
    List {
        target: NodeId,
        /// Deliver live hints (the target was up); otherwise only drop expired ones.
        deliver: bool,
    },
    Deliver {
        target: NodeId,
        partition: PartitionId,
        key: Vec<u8>,
        object: Object,
        /// The listed hint's digest.
        digest: u64,
        /// When the hint was first stored.
        stored_at: Time,
    },
    /// The delivered hint's removal; when the hint was first stored.
    Delete(HintId, Time),
    Drop(HintId),
}

/// The page in flight for one target.
#[derive(Debug)]
struct Page {
    /// Its commands not answered yet (the listing, then deliveries and removals).
    outstanding: usize,
    /// Whether live hints are delivered (the target was up when it was listed).
    deliver: bool,
    /// The page was full: more hints may follow the cursor.
    more: bool,
    /// A delivery of this page failed: wait for the next interval.
    failed: bool,
}

#[derive(Debug, Default)]
pub(super) struct Handoff {
    summary_pending: bool,
    /// Targets with a page in flight.
    active: BTreeMap<NodeId, Page>,
    /// Where each target's next page starts (absent: at its first hint).
    cursor: BTreeMap<NodeId, (PartitionId, Vec<u8>)>,
    /// Refused deliveries per hint, with the digest of the hint they refused (bounded by
    /// [`MAX_TRACKED_HINTS`]): a hint stored anew for the key starts again from zero.
    refused: BTreeMap<HintId, (u64, u32)>,
    stats: HandoffStats,
}

impl Handoff {
    pub(super) fn stats(&self) -> HandoffStats {
        self.stats
    }

    fn forget(&mut self, id: &HintId) {
        self.refused.remove(id);
    }

    /// Whether the hint `id`, as listed with `digest`, is parked.
    fn is_parked(&self, id: &HintId, digest: u64) -> bool {
        self.refused
            .get(id)
            .is_some_and(|&(d, n)| d == digest && n >= MAX_DELIVERY_ATTEMPTS)
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

    /// The op that stores `object` as a hint for `target`, with this node's bounds, clock
    /// and TTL.
    pub(super) fn store_hint_op(
        &self,
        target: NodeId,
        partition: PartitionId,
        key: Vec<u8>,
        object: Object,
    ) -> StorageOp {
        StorageOp::StoreHint {
            target,
            partition,
            key,
            object,
            now: self.now,
            max_hints: self.cfg.handoff.max_hints_per_target,
            max_bytes: self.cfg.handoff.max_hint_bytes_per_target,
            ttl: self.cfg.handoff.ttl,
        }
    }

    /// List `target`'s next page of hints.
    fn list_page(&mut self, target: NodeId) {
        // A member that holds no partition any more (it left, or was removed) gets its
        // hints delivered to the partitions' current owners instead, up or not.
        let deliver = self.membership.is_up(&target) || self.holds_nothing(&target);
        self.handoff.active.insert(
            target.clone(),
            Page {
                outstanding: 1,
                deliver,
                more: false,
                failed: false,
            },
        );
        let op = StorageOp::ListHints {
            target: target.clone(),
            limit: self.cfg.handoff.batch,
            after: self.handoff.cursor.get(&target).cloned(),
        };
        self.storage(op, Waiter::Handoff(HandoffStep::List { target, deliver }));
    }

    pub(super) fn on_handoff_storage(&mut self, step: HandoffStep, result: StorageResult) {
        match step {
            HandoffStep::Summary => {
                self.handoff.summary_pending = false;
                let Ok(StorageReply::HintSummary(totals)) = result else {
                    return;
                };
                self.set_hint_totals(&totals);
                for (target, t) in totals {
                    // Down targets are walked too: their expired hints are dropped.
                    let known = self.membership.contains(&target)
                        || self.layout.current().member(&target).is_some();
                    if t.count == 0 || !known || self.handoff.active.contains_key(&target) {
                        continue;
                    }
                    self.list_page(target);
                }
            }
            HandoffStep::List { target, deliver } => {
                let records = match result {
                    Ok(StorageReply::Hints(records)) => records,
                    _ => Vec::new(),
                };
                let full = records.len() >= self.cfg.handoff.batch;
                match records.last() {
                    Some(last) if full => {
                        let at = (last.partition, last.key.clone());
                        self.handoff.cursor.insert(target.clone(), at);
                    }
                    // The end: the next pass starts from the first hint again.
                    _ => {
                        self.handoff.cursor.remove(&target);
                    }
                }
                if let Some(page) = self.handoff.active.get_mut(&target) {
                    page.more = full;
                }
                let now = self.now;
                for h in records {
                    self.handle_listed(&target, deliver, now, h);
                }
                self.handoff_done(&target);
            }
            HandoffStep::Delete(id, stored_at) => {
                if matches!(result, Ok(StorageReply::HintDeleted(true))) {
                    self.handoff.stats.delivered += 1;
                    metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "delivered")
                        .increment(1);
                    // On this node's wall clock, which also stamped `stored_at`.
                    let lag = self.now.saturating_since(stored_at);
                    metrics::histogram!(crate::metrics::HINT_DELIVERY_LAG_SECONDS)
                        .record(lag.as_secs_f64());
                }
                self.handoff.forget(&id);
                self.handoff_done(&id.0);
            }
            HandoffStep::Drop(id) => {
                if matches!(result, Ok(StorageReply::HintDeleted(true))) {
                    self.handoff.stats.expired += 1;
                    metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "expired")
                        .increment(1);
                }
                self.handoff.forget(&id);
                self.handoff_done(&id.0);
            }
            HandoffStep::Deliver { target, .. } => self.handoff_done(&target),
        }
    }

    /// One listed hint: drop it if expired, deliver it if its target is up and it is not
    /// parked, else leave it.
    fn handle_listed(&mut self, target: &NodeId, deliver: bool, now: Time, h: HintRecord) {
        let id: HintId = (target.clone(), h.partition, h.key.clone());
        if h.is_expired(now, self.cfg.handoff.ttl) {
            self.count_outstanding(target);
            self.storage(
                StorageOp::DropHint {
                    target: target.clone(),
                    partition: h.partition,
                    key: h.key,
                    digest: h.digest,
                },
                Waiter::Handoff(HandoffStep::Drop(id)),
            );
            return;
        }
        if !deliver || self.handoff.is_parked(&id, h.digest) {
            return;
        }
        // Never replay a hint to a node for a partition it no longer holds (its data was
        // handed off; a late tombstone or value there would be read by nobody, or worse,
        // come back if it holds the partition again): the partition's current owners
        // get it instead, the first that is up (anti-entropy spreads it to the others).
        let to = if self.holds(target, h.partition) {
            target.clone()
        } else {
            let owners = self
                .ring()
                .preference_list(h.partition, usize::from(self.cfg.replication.n))
                .nodes;
            match owners
                .into_iter()
                .find(|o| *o != self.me && self.membership.is_up(o))
            {
                Some(o) => {
                    metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "redirected")
                        .increment(1);
                    o
                }
                None => return,
            }
        };
        self.count_outstanding(target);
        let request = PeerRequest::Replicate {
            partition: h.partition,
            key: h.key.clone(),
            object: h.object.clone(),
            hint_for: None,
        };
        let timeout = self.cfg.replication.rpc_timeout;
        self.send(
            to,
            request,
            timeout,
            Waiter::Handoff(HandoffStep::Deliver {
                target: target.clone(),
                partition: h.partition,
                key: h.key,
                object: h.object,
                digest: h.digest,
                stored_at: h.stored_at,
            }),
        );
    }

    /// Whether `node` holds no partition in any kept layout version.
    fn holds_nothing(&self, node: &NodeId) -> bool {
        self.layout
            .held_partitions(node, usize::from(self.cfg.replication.n))
            .is_empty()
    }

    fn count_outstanding(&mut self, target: &NodeId) {
        if let Some(page) = self.handoff.active.get_mut(target) {
            page.outstanding += 1;
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
            digest,
            stored_at,
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
                    key: key.clone(),
                    delivered: object,
                },
                Waiter::Handoff(HandoffStep::Delete((target, partition, key), stored_at)),
            );
            return;
        }
        self.handoff.stats.failed += 1;
        metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "delivery_failed").increment(1);
        if let Some(page) = self.handoff.active.get_mut(&target) {
            page.failed = true;
        }
        // Only an answer from the target refusing this hint counts against it: a send
        // that timed out, was lost or could not be made says something about the target
        // or the network (a partition times out every send), not about the hint; so does
        // a refusal for the target's own state (disk full, overloaded, shutting down).
        let against_hint = match &result {
            Ok(PeerResponse::Error(e)) => refuses_the_hint(e),
            Ok(_) | Err(SendError::Invalid(_)) => true,
            Err(SendError::Timeout) | Err(SendError::Unreachable(_)) | Err(SendError::Lost(_)) => {
                false
            }
        };
        if against_hint {
            self.refused((target.clone(), partition, key), digest);
        }
        self.handoff_done(&target);
    }

    /// A delivery of hint `id` (as listed with `digest`) was refused: park it after
    /// [`MAX_DELIVERY_ATTEMPTS`] refusals of the same stored hint.
    fn refused(&mut self, id: HintId, digest: u64) {
        let h = &mut self.handoff;
        if !h.refused.contains_key(&id) && h.refused.len() >= MAX_TRACKED_HINTS {
            return;
        }
        let entry = h.refused.entry(id).or_insert((digest, 0));
        if entry.0 != digest {
            *entry = (digest, 0);
        }
        entry.1 += 1;
        if entry.1 == MAX_DELIVERY_ATTEMPTS {
            h.stats.parked += 1;
            metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => "parked").increment(1);
        }
    }

    fn handoff_done(&mut self, target: &NodeId) {
        let Some(page) = self.handoff.active.get_mut(target) else {
            return;
        };
        page.outstanding = page.outstanding.saturating_sub(1);
        if page.outstanding > 0 {
            return;
        }
        let next_now = page.deliver && page.more && !page.failed;
        self.handoff.active.remove(target);
        // A full page delivered without a failure: the next one starts at once while the
        // target is up (one page in flight per target bounds it).
        if next_now && self.membership.is_up(target) {
            self.list_page(target.clone());
        }
    }
}

/// Whether a target's error answer to a delivery is about the hint itself (it would
/// refuse the same object every time: too large, a key it may not hold, a message it
/// cannot read) rather than about the target's state, which passes.
fn refuses_the_hint(e: &RequestError) -> bool {
    match e {
        RequestError::EmptyKey
        | RequestError::KeyTooLarge { .. }
        | RequestError::ValueTooLarge { .. }
        | RequestError::ObjectTooLarge { .. }
        | RequestError::InvalidOptions(_)
        | RequestError::InvalidContext(_)
        | RequestError::Malformed(_)
        | RequestError::UnsupportedVersion { .. }
        | RequestError::WrongPartition { .. }
        | RequestError::TooManySiblings { .. }
        | RequestError::ResponseTooLarge { .. } => true,
        RequestError::Unavailable { .. }
        | RequestError::Timeout { .. }
        | RequestError::Incomplete { .. }
        | RequestError::Overloaded
        | RequestError::NotAllowed(_)
        | RequestError::UnknownNode(_)
        | RequestError::Storage(_)
        | RequestError::ShuttingDown
        | RequestError::Internal(_)
        | RequestError::DiskFull
        | RequestError::Backup(_)
        | RequestError::LayoutRefused(_)
        | RequestError::StaleLayout { .. }
        | RequestError::ClusterMismatch(_)
        | RequestError::PlanChanged { .. }
        | RequestError::Declined(_) => false,
    }
}
