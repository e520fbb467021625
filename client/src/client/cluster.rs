//! Cluster administration through the SDK (what `shoal cluster ...` runs: status, staging
//! changes, plan, commit), and how the client learns a newer layout.
//!
//! The client routes by the [`ClusterInfo`](shoal_proto::wire::ClusterInfo) it fetched,
//! which carries the layout version the answering node served from. When an answer shows a
//! newer version (a node refused a request as [`ClientError::StaleLayout`], or a cluster
//! reply names a newer version), the client fetches the cluster info again. Such
//! refreshes are bounded: at most one runs at a time, and at most one starts per
//! [`LAYOUT_REFRESH_INTERVAL`]; the others are skipped (the one running or just done
//! learns the same thing). Each is counted by `shoal_client_layout_refreshes_total`.

use std::sync::Mutex;
use std::time::Duration;

use shoal_proto::layout::Change;
use shoal_proto::wire::{
    ClientRequest, ClientResponse, ClusterReply, ClusterRequest, ClusterStatus, PlanId, PlanReport,
    StageRequest,
};
use shoal_proto::RequestError;
use shoal_ring::NodeId;
use tokio::time::Instant;
use tracing::debug;

use super::{record, unexpected, Client, Route};
use crate::error::ClientError;

/// The least time between two refreshes of the cluster info started because an answer
/// showed a newer layout: a burst of such answers (every request of a busy client after a
/// commit) costs one fetch, not one each.
pub const LAYOUT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The metric counting layout-triggered refreshes, by `result`: `installed` (a newer
/// layout is routed by now), `not_newer` (the node asked did not have it yet), `failed`
/// (no node answered), `skipped` (one was running or had just run).
const LAYOUT_REFRESHES_TOTAL: &str = "shoal_client_layout_refreshes_total";

/// Admits layout-triggered refreshes: one at a time, one per [`LAYOUT_REFRESH_INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct RefreshGate {
    /// Whether one runs, and when the last one started.
    state: Mutex<(bool, Option<Instant>)>,
}

/// A refresh admitted by [`RefreshGate::try_begin`]; dropping it lets the next one run.
pub(crate) struct RefreshTurn<'a>(&'a RefreshGate);

impl RefreshGate {
    /// A turn to refresh at `now`, unless one is running or the last one started less than
    /// [`LAYOUT_REFRESH_INTERVAL`] ago.
    pub(crate) fn try_begin(&self, now: Instant) -> Option<RefreshTurn<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (running, last) = &mut *state;
        if *running
            || last.is_some_and(|t| now.saturating_duration_since(t) < LAYOUT_REFRESH_INTERVAL)
        {
            return None;
        }
        *running = true;
        *last = Some(now);
        Some(RefreshTurn(self))
    }
}

impl Drop for RefreshTurn<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).0 = false;
    }
}

/// The layout version an answer shows, if it shows one.
pub(crate) fn layout_version_in(response: &ClientResponse) -> Option<u64> {
    match response {
        ClientResponse::Error(RequestError::StaleLayout { current }) => Some(*current),
        ClientResponse::Cluster(ClusterReply::Status(s)) => Some(s.version),
        ClientResponse::Cluster(ClusterReply::Plan(p)) => Some(p.version),
        ClientResponse::Cluster(ClusterReply::Committed { version }) => Some(*version),
        _ => None,
    }
}

impl Client {
    /// The layout version this client routes by (0: the node it learned the cluster from
    /// runs a release that does not report it).
    pub fn layout_version(&self) -> u64 {
        self.view().info.layout_version
    }

    /// The layout as a node sees it: its version, the members (with state, zone, weight
    /// and partitions owned) and candidates, the transfers in progress and the changes
    /// staged.
    ///
    /// Cluster calls go to the first reachable member in the cluster's order, so that
    /// consecutive calls (stage, plan, commit) reach the same node while it is up.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.cluster_status_at(Route::Any).await
    }

    /// The layout as member (or candidate) `node` sees it, with its own transfers: each
    /// node reports the partitions it pulls, so a cluster-wide view asks every member
    /// (what `shoal cluster status` does).
    pub async fn cluster_status_of(&self, node: &NodeId) -> Result<ClusterStatus, ClientError> {
        self.cluster_status_at(Route::Node(node)).await
    }

    /// Stages the join of `id`, a node that started and contacted the cluster (a
    /// candidate), in `zone` with `weight` (at least 1). Returns the changes staged now.
    /// Nothing moves until [`commit`](Client::commit).
    pub async fn stage_join(
        &self,
        id: &NodeId,
        zone: Option<&str>,
        weight: u32,
    ) -> Result<Vec<Change>, ClientError> {
        if weight == 0 {
            return Err(ClientError::InvalidOptions(
                "a member's weight must be at least 1".into(),
            ));
        }
        self.stage(StageRequest::Join {
            id: id.clone(),
            zone: zone.map(str::to_owned),
            weight,
        })
        .await
    }

    /// Stages the decommission of member `id`: it hands all its partitions over, then
    /// stops serving data.
    pub async fn stage_leave(&self, id: &NodeId) -> Result<Vec<Change>, ClientError> {
        self.stage(StageRequest::Leave { id: id.clone() }).await
    }

    /// Stages the removal of member `id`, dead for good: its partitions are rebuilt on
    /// their new owners from the surviving replicas.
    pub async fn stage_remove(&self, id: &NodeId) -> Result<Vec<Change>, ClientError> {
        self.stage(StageRequest::Remove { id: id.clone() }).await
    }

    /// Stages the replacement of member `old` (down) by candidate `new`, which takes
    /// exactly `old`'s partitions.
    pub async fn stage_replace(
        &self,
        old: &NodeId,
        new: &NodeId,
    ) -> Result<Vec<Change>, ClientError> {
        self.stage(StageRequest::Replace {
            old: old.clone(),
            new: new.clone(),
        })
        .await
    }

    /// Drops every staged change. Returns the changes staged now (none).
    pub async fn unstage(&self) -> Result<Vec<Change>, ClientError> {
        self.cluster_call("cluster_unstage", ClusterRequest::Unstage, staged)
            .await
    }

    /// What committing the staged changes would do: partitions per node before and after,
    /// moves, an estimate of the bytes moved, balance and zones after, the version it was
    /// made on and the version a commit makes. Its [`id`](PlanReport::id) and version are
    /// what [`commit_plan`](Client::commit_plan) names.
    pub async fn plan(&self) -> Result<PlanReport, ClientError> {
        self.cluster_call("cluster_plan", ClusterRequest::Plan, |r| match r {
            ClusterReply::Plan(p) => Some(p),
            _ => None,
        })
        .await
    }

    /// Applies the staged changes, whatever they are now, if the layout is still at
    /// `version` (the plan's); returns the new version. Otherwise
    /// [`ClientError::LayoutRefused`] naming the current version, and nothing changed.
    /// Prefer [`commit_plan`](Client::commit_plan): this commits changes another operator
    /// restaged on the node since the plan. A commit whose answer is lost
    /// ([`ClientError::Transport`]) may have been applied: look at
    /// [`cluster_status`](Client::cluster_status) before committing again.
    pub async fn commit(&self, version: u64) -> Result<u64, ClientError> {
        self.cluster_call(
            "cluster_commit",
            ClusterRequest::Commit { version },
            committed,
        )
        .await
    }

    /// Applies the plan `plan` (a [`PlanReport::id`]) made on layout `version`: as
    /// [`commit`](Client::commit), and only if the changes staged now are that plan;
    /// otherwise [`ClientError::PlanChanged`] naming the plan staged now (another operator
    /// unstaged or restaged on the node), and nothing changed. A node of an older build,
    /// which cannot check a plan, refuses the request as one it cannot read
    /// ([`ClientError::Server`]); nothing changed there either.
    pub async fn commit_plan(&self, version: u64, plan: PlanId) -> Result<u64, ClientError> {
        self.cluster_call(
            "cluster_commit_plan",
            ClusterRequest::CommitPlan { version, plan },
            committed,
        )
        .await
    }

    async fn stage(&self, change: StageRequest) -> Result<Vec<Change>, ClientError> {
        self.cluster_call("cluster_stage", ClusterRequest::Stage(change), staged)
            .await
    }

    /// Sends a cluster request to the first reachable member (never retried: a commit
    /// whose outcome is unknown must not be sent twice), and picks the answer's kind.
    async fn cluster_call<T>(
        &self,
        op: &'static str,
        request: ClusterRequest,
        pick: impl FnOnce(ClusterReply) -> Option<T>,
    ) -> Result<T, ClientError> {
        self.cluster_call_to(op, request, Route::Any, pick).await
    }

    /// A status answer from `route`.
    async fn cluster_status_at(&self, route: Route<'_>) -> Result<ClusterStatus, ClientError> {
        self.cluster_call_to(
            "cluster_status",
            ClusterRequest::Status,
            route,
            |r| match r {
                ClusterReply::Status(s) => Some(s),
                _ => None,
            },
        )
        .await
    }

    /// [`Client::cluster_call`] to `route`.
    async fn cluster_call_to<T>(
        &self,
        op: &'static str,
        request: ClusterRequest,
        route: Route<'_>,
        pick: impl FnOnce(ClusterReply) -> Option<T>,
    ) -> Result<T, ClientError> {
        let start = Instant::now();
        let wait = self.inner.settings.request_timeout;
        let result = match self
            .call(ClientRequest::Cluster(request), route, wait)
            .await
        {
            Ok(ClientResponse::Cluster(reply)) => pick(reply).ok_or_else(|| {
                ClientError::Protocol(format!(
                    "expected a {op} answer, got another cluster answer"
                ))
            }),
            Ok(other) => Err(unexpected(op, &other)),
            Err(e) => Err(e),
        };
        record(op, start, &result);
        result
    }

    /// Refreshes the cluster info when an answer showed a layout version (`seen`: its
    /// stamp, or one it names, see [`layout_version_in`]) newer than the one this client
    /// routes by, within the bounds of [`RefreshGate`]. A failed refresh is counted and
    /// logged, not returned: the call it came with has its answer.
    pub(super) async fn learn_layout(&self, seen: Option<u64>) {
        let Some(seen) = seen else {
            return;
        };
        let known = self.layout_version();
        if seen <= known {
            return;
        }
        let Some(_turn) = self.inner.layout_refresh.try_begin(Instant::now()) else {
            metrics::counter!(LAYOUT_REFRESHES_TOTAL, "result" => "skipped").increment(1);
            return;
        };
        let (mut tried, mut last) = (Vec::new(), None);
        let result = match self.refresh_skipping(&mut tried, &mut last).await {
            Ok(()) if self.layout_version() > known => "installed",
            Ok(()) => "not_newer",
            Err(e) => {
                debug!(error = %e, seen, known, "refreshing for a newer layout failed");
                "failed"
            }
        };
        debug!(seen, known, result, "layout refresh");
        metrics::counter!(LAYOUT_REFRESHES_TOTAL, "result" => result).increment(1);
    }
}

/// The staged changes of a stage or unstage answer.
/// A commit's answer: the new version.
fn committed(reply: ClusterReply) -> Option<u64> {
    match reply {
        ClusterReply::Committed { version } => Some(version),
        _ => None,
    }
}

fn staged(reply: ClusterReply) -> Option<Vec<Change>> {
    match reply {
        ClusterReply::Staged(changes) => Some(changes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_refresh_at_a_time_and_one_per_interval() {
        let gate = RefreshGate::default();
        let t0 = Instant::now();
        let turn = gate.try_begin(t0).expect("the first refresh runs");
        assert!(gate.try_begin(t0).is_none(), "one at a time");
        drop(turn);
        assert!(
            gate.try_begin(t0 + LAYOUT_REFRESH_INTERVAL / 2).is_none(),
            "not again within the interval"
        );
        let later = t0 + LAYOUT_REFRESH_INTERVAL;
        let turn = gate.try_begin(later).expect("again after the interval");
        assert!(
            gate.try_begin(later + LAYOUT_REFRESH_INTERVAL * 2)
                .is_none(),
            "still one at a time, however long it runs"
        );
        drop(turn);
        assert!(gate.try_begin(later + LAYOUT_REFRESH_INTERVAL).is_some());
    }

    #[test]
    fn answers_that_show_a_layout_version() {
        assert_eq!(
            layout_version_in(&ClientResponse::Error(RequestError::StaleLayout {
                current: 5
            })),
            Some(5)
        );
        assert_eq!(
            layout_version_in(&ClientResponse::Cluster(ClusterReply::Committed {
                version: 3
            })),
            Some(3)
        );
        assert_eq!(
            layout_version_in(&ClientResponse::Error(RequestError::Overloaded)),
            None
        );
        assert_eq!(
            layout_version_in(&ClientResponse::Cluster(ClusterReply::Staged(vec![]))),
            None
        );
    }
}
