//! Tombstone reaping: the first primary of a partition deletes tombstones that every
//! replica holds identically and that are older than the grace period (see the
//! invariant in docs/ARCHITECTURE.md).

use std::collections::BTreeMap;

use shoal_ring::{NodeId, PartitionId};

use super::aae::REAP_SCAN_LIMIT;
use super::{Engine, SendError, Waiter};
use crate::storage_ops::{StorageOp, StorageReply, StorageResult};
use crate::wire::{AaeRequest, AaeResponse, KeyDigests, PeerRequest, PeerResponse};

/// How many times a reaper sends its delete of a page of keys to a replica that does
/// not confirm it (lost, refused, timed out), a tick apart, before it leaves the page
/// applied on some replicas only (see docs/ARCHITECTURE.md, *Deletes and tombstones*).
pub const REAP_SENDS: u32 = 3;

#[derive(Debug)]
pub(super) enum ReapStep {
    Scan,
    Confirm {
        keys: KeyDigests,
        agreed: Vec<bool>,
        waiting: usize,
        failed: bool,
    },
    Delete {
        /// Deletes not yet confirmed (the local one and one per replica) or given up.
        waiting: usize,
        /// The keys and digests deleted.
        keys: KeyDigests,
        /// Per replica, how many times the delete was sent to it.
        sends: BTreeMap<NodeId, u32>,
        /// Replicas whose delete failed, to be sent again on the next tick.
        resend: Vec<NodeId>,
    },
}

#[derive(Debug)]
pub(super) struct Reap {
    partition: PartitionId,
    peers: Vec<NodeId>,
    next: Option<Vec<u8>>,
    step: ReapStep,
}

/// Which step of a reap a command answers.
#[derive(Clone, Debug)]
pub(super) enum ReapPart {
    Scan,
    Digests,
    /// The local delete.
    Deleted,
    /// The delete sent to this replica.
    PeerDeleted(NodeId),
}

impl Engine {
    // ---- reaping ----

    pub(super) fn start_due_reap(&mut self) {
        if self.aae.reap.is_some() {
            return;
        }
        let grace = self.cfg.replication.tombstone_grace;
        let interval = self.cfg.aae.reap_interval;
        let now = self.now;
        // Below the start threshold only a partition whose last full scan is overdue
        // (never scanned: counted from the engine's start) is scanned: the minimum rate.
        let starved = !self.aae.may_start();
        let overdue_after = interval * super::aae::OVERDUE_INTERVALS;
        let total = self.replica_partitions.len();
        // Round robin from where the last scan started, so that every partition gets its
        // turn however many this node leads.
        for i in 0..total {
            let p = self.replica_partitions[(self.aae.reap_next + i) % total];
            // While more than one layout version is in use for the partition, a replica
            // being filled could still be missing the value a tombstone supersedes: no
            // reaping until one version is left. Then only that version's replicas count
            // (a removed member no longer blocks it).
            if self.write_sets(p).len() > 1 || self.placement.dropping.contains(&p) {
                continue;
            }
            let primaries = self.primaries(p);
            if primaries.first() != Some(&self.me) {
                continue;
            }
            let resuming = self.aae.reap_cursor.contains_key(&p);
            let due = resuming
                || self
                    .aae
                    .reap_last
                    .get(&p)
                    .is_none_or(|t| now.saturating_since(*t) >= interval);
            let overdue = now.saturating_since(
                self.aae
                    .reap_last
                    .get(&p)
                    .copied()
                    .unwrap_or(self.aae.started),
            ) >= overdue_after;
            if !due || (starved && !overdue) || !primaries.iter().all(|q| self.membership.is_up(q))
            {
                continue;
            }
            if starved {
                metrics::counter!(crate::metrics::AAE_OVERDUE_STARTS_TOTAL, "kind" => "reap")
                    .increment(1);
            }
            self.aae.reap_next = (self.aae.reap_next + i + 1) % total;
            let after = self.aae.reap_cursor.remove(&p);
            let peers = primaries.into_iter().filter(|q| *q != self.me).collect();
            self.aae.reap = Some(Reap {
                partition: p,
                peers,
                next: None,
                step: ReapStep::Scan,
            });
            let batch = self.cfg.aae.batch;
            self.storage(
                StorageOp::ReapCandidates {
                    partition: p,
                    older_than: now - grace,
                    after,
                    limit: batch,
                    scan_limit: REAP_SCAN_LIMIT,
                },
                Waiter::Reap(ReapPart::Scan),
            );
            return;
        }
    }

    fn end_reap_page(&mut self) {
        let Some(reap) = self.aae.reap.take() else {
            return;
        };
        match reap.next {
            Some(next) => {
                self.aae.reap_cursor.insert(reap.partition, next);
            }
            None => {
                self.aae.reap_last.insert(reap.partition, self.now);
            }
        }
    }

    pub(super) fn on_reap_storage(&mut self, part: ReapPart, result: StorageResult) {
        match (part, result) {
            (ReapPart::Scan, Ok(StorageReply::ReapCandidates { keys, next })) => {
                let Some(reap) = self.aae.reap.as_mut() else {
                    return;
                };
                reap.next = next;
                if keys.is_empty() {
                    self.end_reap_page();
                    return;
                }
                let partition = reap.partition;
                let peers = reap.peers.clone();
                let wanted: Vec<Vec<u8>> = keys.iter().map(|(k, _)| k.clone()).collect();
                reap.step = ReapStep::Confirm {
                    agreed: vec![true; keys.len()],
                    keys,
                    waiting: peers.len(),
                    failed: false,
                };
                if peers.is_empty() {
                    self.reap_confirmed();
                    return;
                }
                let timeout = self.cfg.replication.rpc_timeout;
                for q in peers {
                    self.send(
                        q,
                        PeerRequest::Aae(AaeRequest::Digests {
                            partition,
                            keys: wanted.clone(),
                        }),
                        timeout,
                        Waiter::Reap(ReapPart::Digests),
                    );
                }
            }
            (ReapPart::Deleted, Ok(StorageReply::Reaped(count))) => {
                metrics::counter!(crate::metrics::TOMBSTONES_REAPED_TOTAL).increment(count);
                self.reap_delete_done();
            }
            _ => {
                // A storage failure ends this page; the scan resumes on a later tick.
                if matches!(
                    self.aae.reap.as_ref().map(|r| &r.step),
                    Some(ReapStep::Delete { .. })
                ) {
                    self.reap_delete_done();
                } else {
                    self.end_reap_page();
                }
            }
        }
    }

    pub(super) fn on_reap_send(&mut self, part: ReapPart, result: Result<PeerResponse, SendError>) {
        match part {
            ReapPart::Digests => {
                let Some(Reap {
                    step:
                        ReapStep::Confirm {
                            keys,
                            agreed,
                            waiting,
                            failed,
                        },
                    ..
                }) = self.aae.reap.as_mut()
                else {
                    return;
                };
                match result {
                    Ok(PeerResponse::Aae(AaeResponse::Digests(d))) if d.len() == keys.len() => {
                        for (i, theirs) in d.iter().enumerate() {
                            if *theirs != Some(keys[i].1) {
                                agreed[i] = false;
                            }
                        }
                    }
                    _ => *failed = true,
                }
                *waiting -= 1;
                if *waiting == 0 {
                    if *failed {
                        // A replica could not confirm: nothing is reaped from this page.
                        self.end_reap_page();
                    } else {
                        self.reap_confirmed();
                    }
                }
            }
            ReapPart::PeerDeleted(peer) => {
                if let Ok(PeerResponse::Aae(AaeResponse::Reaped(count))) = result {
                    metrics::counter!(crate::metrics::TOMBSTONES_REAPED_TOTAL).increment(count);
                    self.reap_delete_done();
                    return;
                }
                // Lost, refused or timed out: the replica may still hold the tombstones
                // the others deleted. Sent again on the next tick, a bounded number of
                // times (the delete only removes the confirmed tombstone, so a repeat is
                // harmless).
                let Some(Reap {
                    step: ReapStep::Delete { sends, resend, .. },
                    ..
                }) = self.aae.reap.as_mut()
                else {
                    return;
                };
                if sends.get(&peer).copied().unwrap_or(0) < REAP_SENDS {
                    resend.push(peer);
                } else {
                    metrics::counter!(crate::metrics::REAPS_INCOMPLETE_TOTAL).increment(1);
                    self.reap_delete_done();
                }
            }
            ReapPart::Deleted | ReapPart::Scan => {}
        }
    }

    /// Every replica answered: delete the keys whose tombstone is identical everywhere.
    fn reap_confirmed(&mut self) {
        let Some(reap) = self.aae.reap.as_mut() else {
            return;
        };
        let ReapStep::Confirm { keys, agreed, .. } = &reap.step else {
            return;
        };
        let confirmed: KeyDigests = keys
            .iter()
            .zip(agreed.iter())
            .filter(|(_, ok)| **ok)
            .map(|(kd, _)| kd.clone())
            .collect();
        if confirmed.is_empty() {
            self.end_reap_page();
            return;
        }
        let partition = reap.partition;
        let peers = reap.peers.clone();
        reap.step = ReapStep::Delete {
            waiting: peers.len() + 1,
            keys: confirmed.clone(),
            sends: BTreeMap::new(),
            resend: peers,
        };
        self.storage(
            StorageOp::Reap {
                partition,
                keys: confirmed,
            },
            Waiter::Reap(ReapPart::Deleted),
        );
        self.send_reap_deletes();
    }

    /// Send the running reap's delete to every replica due one: all of them once the
    /// page is confirmed, and on each tick those whose last send failed.
    pub(super) fn send_reap_deletes(&mut self) {
        let Some(Reap {
            partition,
            step:
                ReapStep::Delete {
                    keys,
                    sends,
                    resend,
                    ..
                },
            ..
        }) = self.aae.reap.as_mut()
        else {
            return;
        };
        if resend.is_empty() {
            return;
        }
        let partition = *partition;
        let mut out = Vec::new();
        for q in resend.drain(..) {
            let sent = sends.entry(q.clone()).or_insert(0);
            if *sent > 0 {
                metrics::counter!(crate::metrics::REAP_RESENDS_TOTAL).increment(1);
            }
            *sent += 1;
            out.push((q, keys.clone()));
        }
        let timeout = self.cfg.replication.rpc_timeout;
        for (q, keys) in out {
            self.send(
                q.clone(),
                PeerRequest::Aae(AaeRequest::Reap { partition, keys }),
                timeout,
                Waiter::Reap(ReapPart::PeerDeleted(q)),
            );
        }
    }

    fn reap_delete_done(&mut self) {
        let Some(Reap {
            step: ReapStep::Delete { waiting, .. },
            ..
        }) = self.aae.reap.as_mut()
        else {
            return;
        };
        *waiting -= 1;
        if *waiting == 0 {
            self.end_reap_page();
        }
    }
}
