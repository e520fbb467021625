//! Cluster administration (`shoal cluster ...`): the layout's status as this node sees
//! it, staging and unstaging changes (kept on the node that took them, persisted),
//! planning them, and committing them through the layout's Paxos (`layout_sync.rs`).

use shoal_ring::PartitionId;

use crate::layout::{Change, LayoutPlan};
use crate::storage_ops::StorageOp;
use crate::wire::{
    ClientResponse, ClusterReply, ClusterRequest, ClusterStatus, MemberReport, MemberRole,
    PlanReport, StageRequest,
};
use crate::RequestError;

use super::{Engine, InboundId, Waiter};

/// A rough size of one replica copy of a key, for the plan's bytes estimate: the Merkle
/// trees count keys, not bytes.
pub const ESTIMATED_BYTES_PER_KEY: u64 = 1024;

impl Engine {
    pub(super) fn handle_cluster(&mut self, id: InboundId, req: ClusterRequest) {
        if self.is_candidate() && !matches!(req, ClusterRequest::Status) {
            let why = format!(
                "node {} is a candidate (in no layout yet); send layout changes to a member",
                self.me
            );
            self.refuse_layout(id, why);
            return;
        }
        match req {
            ClusterRequest::Status => {
                if self.syncing() {
                    // Its bytes-left estimate needs the key counts of the partitions
                    // this node holds.
                    let partitions = self.replica_partitions.clone();
                    self.storage(
                        StorageOp::TreeSummaries { partitions },
                        Waiter::ClusterStatus(id),
                    );
                } else {
                    self.answer_status(id, &[]);
                }
            }
            ClusterRequest::Stage(s) => match self.stage(s) {
                Ok(()) => {
                    let staged = self.agree.staged.clone();
                    self.save_staged(id, ClusterReply::Staged(staged));
                }
                Err(e) => self.respond_client(id, ClientResponse::Error(e)),
            },
            ClusterRequest::Unstage => {
                self.agree.staged.clear();
                self.save_staged(id, ClusterReply::Staged(Vec::new()));
            }
            ClusterRequest::Plan => self.plan(id),
            ClusterRequest::Commit { version } => self.start_commit(id, version, None),
            ClusterRequest::CommitPlan { version, plan } => {
                self.start_commit(id, version, Some(plan))
            }
        }
    }

    /// Resolves an operator's change (a joining node's address comes from its hello) and
    /// checks it against the current layout and the changes staged before it.
    fn stage(&mut self, req: StageRequest) -> Result<(), RequestError> {
        let current = self.layout.current();
        let addr_of = |id: &shoal_ring::NodeId| {
            self.agree
                .candidates
                .get(id)
                .map(|(a, _)| *a)
                .or_else(|| current.member(id).map(|m| m.addr))
                .ok_or_else(|| {
                    RequestError::LayoutRefused(format!(
                        "{id} has not contacted the cluster: start it with this cluster's \
                         seeds as its bootstrap contacts, then stage it"
                    ))
                })
        };
        let change = match req {
            StageRequest::Join { id, zone, weight } => Change::Join {
                addr: addr_of(&id)?,
                id,
                zone,
                weight,
            },
            StageRequest::Leave { id } => Change::Leave { id },
            StageRequest::Remove { id } => Change::Remove { id },
            StageRequest::Replace { old, new } => Change::Replace {
                addr: addr_of(&new)?,
                old,
                new,
            },
        };
        let membership = &self.membership;
        current
            .check_stage(&self.agree.staged, &change, |id| membership.is_up(id))
            .map_err(|e| RequestError::LayoutRefused(e.to_string()))?;
        self.agree.staged.push(change);
        Ok(())
    }

    /// What the staged changes would do; the bytes estimate needs the key counts of the
    /// partitions this node holds (its Merkle trees), so it asks storage first.
    fn plan(&mut self, id: InboundId) {
        let plan = match self.layout.current().plan(&self.agree.staged) {
            Ok(p) => p,
            Err(e) => {
                self.refuse_layout(id, e.to_string());
                return;
            }
        };
        let (report, copies) = self.plan_report(&plan);
        let partitions = self.replica_partitions.clone();
        self.storage(
            StorageOp::TreeSummaries { partitions },
            Waiter::Plan {
                inbound: id,
                report: Box::new(report),
                copies,
            },
        );
    }

    /// The plan's report (its bytes estimate still 0) and the replica copies each
    /// partition gains.
    fn plan_report(&self, plan: &LayoutPlan) -> (PlanReport, Vec<(PartitionId, u64)>) {
        let current = self.layout.current();
        let n = usize::from(current.settings().n);
        let after: Vec<usize> = plan
            .partitions
            .values()
            .map(|(_, a)| *a)
            .filter(|a| *a > 0)
            .collect();
        // Per partition, the replica copies the new layout places on nodes that do not
        // hold one now: what must be streamed.
        let copies: Vec<(PartitionId, u64)> = (0..current.settings().partitions)
            .map(PartitionId)
            .map(|p| {
                let old = current.ring().preference_list(p, n).nodes;
                let new = plan.next.ring().preference_list(p, n).nodes;
                (p, new.iter().filter(|x| !old.contains(x)).count() as u64)
            })
            .filter(|(_, c)| *c > 0)
            .collect();
        let report = PlanReport {
            version: current.version(),
            next_version: plan.next.version(),
            changes: self.agree.staged.clone(),
            partitions: plan
                .partitions
                .iter()
                .map(|(id, (b, a))| (id.clone(), *b, *a))
                .collect(),
            moves: plan.moves.moved_count(),
            // Filled in from the tree summaries ([`bytes_estimate`]).
            bytes_estimate: 0,
            balance: (
                after.iter().copied().max().unwrap_or(0),
                after.iter().copied().min().unwrap_or(0),
            ),
            zones_after: plan.zones_after,
        };
        (report, copies)
    }

    /// Answers a cluster request with a refusal: nothing was changed.
    pub(super) fn refuse_layout(&mut self, inbound: InboundId, why: String) {
        self.respond_client(
            inbound,
            ClientResponse::Error(RequestError::LayoutRefused(why)),
        );
    }

    /// Answers a status request; `summaries` are the tree summaries of the partitions
    /// this node holds (empty when it syncs nothing), or a failed read of them.
    pub(super) fn answer_status(
        &mut self,
        inbound: InboundId,
        summaries: &[(PartitionId, u64, u64)],
    ) {
        let status = self.cluster_status(summaries);
        self.respond_client(
            inbound,
            ClientResponse::Cluster(ClusterReply::Status(status)),
        );
    }

    /// The layout, its members and candidates, and this node's transfers (the bytes
    /// left estimated from `summaries`), as this node knows them.
    fn cluster_status(&self, summaries: &[(PartitionId, u64, u64)]) -> ClusterStatus {
        let current = self.layout.current();
        let mut members: Vec<MemberReport> = current
            .members()
            .iter()
            .map(|m| MemberReport {
                id: m.id.clone(),
                addr: m.addr,
                role: MemberRole::Member(m.state),
                zone: m.zone.clone(),
                weight: m.weight,
                partitions: current.ring().owned_count(&m.id),
                up: m.id == self.me || self.membership.is_up(&m.id),
            })
            .collect();
        members.extend(
            self.agree
                .candidates
                .iter()
                .map(|(id, (addr, _))| MemberReport {
                    id: id.clone(),
                    addr: *addr,
                    role: MemberRole::Candidate,
                    zone: None,
                    weight: 0,
                    partitions: 0,
                    up: true,
                }),
        );
        ClusterStatus {
            node: self.me.clone(),
            version: current.version(),
            settings: current.settings().clone(),
            versions_in_use: self.layout.versions().iter().map(|l| l.version()).collect(),
            members,
            transfers: self.transfer_summary(summaries),
            staged: self.agree.staged.clone(),
        }
    }
}

/// Bytes a plan streams, estimated: for each partition that gets new replica copies
/// (`copies`), its key count (from this node's tree when it holds the partition, else
/// the mean over the partitions it holds) × the copies × [`ESTIMATED_BYTES_PER_KEY`].
pub(super) fn bytes_estimate(
    copies: &[(PartitionId, u64)],
    summaries: &[(PartitionId, u64, u64)],
) -> u64 {
    let held: std::collections::BTreeMap<PartitionId, u64> =
        summaries.iter().map(|(p, _, keys)| (*p, *keys)).collect();
    let mean = if held.is_empty() {
        0
    } else {
        held.values().sum::<u64>() / held.len() as u64
    };
    copies
        .iter()
        .map(|(p, c)| held.get(p).copied().unwrap_or(mean) * c * ESTIMATED_BYTES_PER_KEY)
        .sum()
}
