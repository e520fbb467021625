//! Simulated operators: a layout change through the agreement, as `shoal cluster` makes
//! it. An operator sends `ClientRequest::Cluster` requests to one live member (its
//! preferred node while that is up): `status` (done if the layout already shows the
//! change), `unstage`, `stage`, `plan` (it starts over when the plan shows other
//! changes than its own: another operator restaged on the same member), then `commit
//! --version V --plan ID` with the version the plan was made on and the plan's id, so
//! that a restage by another operator between the plan and the commit's arrival is
//! refused (`PlanChanged`) rather than committed in this operator's name (the long run's
//! seed 5181). The node proposes the next layout through its Paxos; the decided
//! version reaches the other nodes through the engines' own messages (pushes, fetches on
//! a newer stamp) over the simulated network. A refusal, a lost commit, a lost message or
//! a timeout makes the operator start over after a pause, a bounded number of times.

use std::time::Duration;

use rand::Rng;
use shoal_proto::layout::{Change, MemberState};
use shoal_proto::wire::{
    ClientRequest, ClientResponse, ClusterReply, ClusterRequest, ClusterStatus, MemberRole,
    Response, StageRequest,
};
use shoal_proto::RequestError;

use super::config::CLIENT_TIMEOUT;
use super::event::Event;
use super::Sim;

/// Most attempts (each from `status` to `commit`) an operator makes before it gives up.
pub const MAX_OPERATOR_ATTEMPTS: u32 = 60;

/// How long an operator waits for a commit's answer: the proposer's rounds
/// (`MAX_COMMIT_ROUNDS`, each at most two probe timeouts plus a backoff) and more.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The step an operator waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Status,
    Unstage,
    Stage,
    Plan,
    Commit,
}

/// How an operator's change ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorOutcome {
    /// Its commit was answered with this version.
    Committed(u64),
    /// A status showed the change in the layout (an earlier commit whose answer was lost
    /// went through), at this version.
    Applied(u64),
    /// It gave up after [`MAX_OPERATOR_ATTEMPTS`].
    GaveUp,
}

/// One operator: one layout change, sent to one node at a time.
#[derive(Clone, Debug)]
pub(crate) struct Operator {
    /// The change (ids and addresses resolved).
    pub change: Change,
    /// The node it prefers (by index).
    pub via: usize,
    /// The node of the current attempt.
    node: usize,
    /// The request it waits for: its step and request number.
    waiting: Option<(Step, usize)>,
    next_request: usize,
    pub attempts: u32,
    pub outcome: Option<OperatorOutcome>,
}

impl Operator {
    pub(crate) fn new(change: Change, via: usize) -> Operator {
        Operator {
            change,
            via,
            node: via,
            waiting: None,
            next_request: 0,
            attempts: 0,
            outcome: None,
        }
    }
}

/// Counts of the operators' requests and their outcomes over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayoutStats {
    /// Commits answered `Committed`.
    pub committed: u64,
    /// Commits refused because a concurrent one decided the version first.
    pub lost: u64,
    /// Other refusals (stage refused, a commit that reached no majority, ...).
    pub refused: u64,
    /// Commits refused because the changes staged on the member were no longer the plan
    /// they named (`PlanChanged`: another operator restaged there after the plan).
    pub plan_changed: u64,
    /// Requests with no answer (lost, timed out, node down).
    pub unanswered: u64,
    /// Changes found applied by a status after an unanswered commit.
    pub applied: u64,
    /// Operators that gave up.
    pub gave_up: u64,
    /// The newest layout version any node holds at the end.
    pub versions: u64,
    /// Writes never acknowledged and lost with their coordinator's copy (a drop, or a
    /// node dead for good): not taken as replacing anything (see `layout.rs`).
    pub stranded: u64,
}

/// Whether `status` shows `change` done.
fn applied(change: &Change, status: &ClusterStatus) -> bool {
    let role = |id| status.members.iter().find(|m| &m.id == id).map(|m| &m.role);
    match change {
        Change::Join { id, .. } | Change::Replace { new: id, .. } => {
            matches!(role(id), Some(MemberRole::Member(_)))
        }
        Change::Leave { id } => matches!(
            role(id),
            Some(MemberRole::Member(
                MemberState::Leaving | MemberState::Removed
            ))
        ),
        Change::Remove { id } => {
            matches!(role(id), Some(MemberRole::Member(MemberState::Removed)))
        }
    }
}

/// The stage request of `change`, as `shoal cluster join|leave|remove|replace` sends it.
fn stage_request(change: &Change) -> StageRequest {
    match change.clone() {
        Change::Join {
            id, zone, weight, ..
        } => StageRequest::Join { id, zone, weight },
        Change::Leave { id } => StageRequest::Leave { id },
        Change::Remove { id } => StageRequest::Remove { id },
        Change::Replace { old, new, .. } => StageRequest::Replace { old, new },
    }
}

impl Sim {
    /// The client index operator `k`'s requests use (past every client's).
    pub(super) fn operator_client(&self, k: usize) -> usize {
        self.clients.len() + k
    }

    /// The operator whose requests use client index `client`, if it is one's.
    pub(super) fn operator_of(&self, client: usize) -> Option<usize> {
        client
            .checked_sub(self.clients.len())
            .filter(|&k| k < self.operators.len())
    }

    /// Whether every operator is done (or gave up).
    pub(super) fn operators_done(&self) -> bool {
        self.operators.iter().all(|o| o.outcome.is_some())
    }

    /// Operator `k` starts an attempt: a status request to a live member.
    pub(super) fn operator_wake(&mut self, k: usize) {
        let op = &self.operators[k];
        if op.outcome.is_some() || op.waiting.is_some() {
            return;
        }
        if op.attempts >= MAX_OPERATOR_ATTEMPTS {
            self.operators[k].outcome = Some(OperatorOutcome::GaveUp);
            self.layout_stats.gave_up += 1;
            let line = format!("operator {k} GAVE UP on {:?}", self.operators[k].change);
            self.log.line(self.now, "op", &line);
            return;
        }
        let via = op.via;
        let usable = |s: &Sim, i: usize| {
            !s.nodes[i].dormant
                && s.nodes[i]
                    .running
                    .as_ref()
                    .is_some_and(|r| !r.engine.is_candidate())
        };
        let count = self.nodes.len();
        let Some(node) = (0..count)
            .map(|d| (via + d) % count)
            .find(|&i| usable(self, i))
        else {
            self.operator_retry(k);
            return;
        };
        self.operators[k].attempts += 1;
        self.operators[k].node = node;
        self.operator_send(k, Step::Status, ClusterRequest::Status);
    }

    fn operator_send(&mut self, k: usize, step: Step, req: ClusterRequest) {
        let client = self.operator_client(k);
        let op = &mut self.operators[k];
        op.next_request += 1;
        let id = op.next_request;
        op.waiting = Some((step, id));
        let node = op.node;
        let line = format!("operator {k} -> n{node}: {req:?}");
        self.log.line(self.now, "op", &line);
        let now = self.now;
        self.send_client_request(client, id, node, ClientRequest::Cluster(req), now);
        let timeout = if step == Step::Commit {
            COMMIT_TIMEOUT
        } else {
            CLIENT_TIMEOUT
        };
        self.queue
            .push(now + timeout, Event::ClientTimeout { client, op: id });
    }

    /// Start over after a pause.
    fn operator_retry(&mut self, k: usize) {
        self.operators[k].waiting = None;
        let pause = Duration::from_millis(self.rng.random_range(300..=1_000));
        self.queue
            .push(self.now + pause, Event::OperatorWake { operator: k });
    }

    /// Operator `k`'s request `id` timed out.
    pub(super) fn operator_timeout(&mut self, k: usize, id: usize) {
        if self.operators[k].waiting.is_some_and(|(_, w)| w == id) {
            self.layout_stats.unanswered += 1;
            self.log.line(
                self.now,
                "op",
                &format!("operator {k} request {id} TIMED OUT"),
            );
            self.operator_retry(k);
        }
    }

    /// The answer to operator `k`'s request `id`.
    pub(super) fn operator_response(
        &mut self,
        k: usize,
        id: usize,
        result: Result<Response, String>,
    ) {
        let Some((step, waiting)) = self.operators[k].waiting else {
            return;
        };
        if waiting != id {
            return;
        }
        let line = format!("operator {k} {step:?} answered: {result:?}");
        self.log.line(self.now, "op", &line);
        let reply = match result {
            Ok(Response::Client(ClientResponse::Cluster(reply))) => Ok(reply),
            Ok(Response::Client(ClientResponse::Error(e)) | Response::Error(e)) => Err(Some(e)),
            Ok(_) => Err(Some(RequestError::Internal(
                "unexpected answer".to_string(),
            ))),
            Err(_) => Err(None),
        };
        let change = self.operators[k].change.clone();
        match (step, reply) {
            (Step::Status, Ok(ClusterReply::Status(s))) => {
                if applied(&change, &s) {
                    self.layout_stats.applied += 1;
                    self.operator_done(k, OperatorOutcome::Applied(s.version));
                } else {
                    self.operator_send(k, Step::Unstage, ClusterRequest::Unstage);
                }
            }
            (Step::Unstage, Ok(ClusterReply::Staged(_))) => {
                let stage = ClusterRequest::Stage(stage_request(&change));
                self.operator_send(k, Step::Stage, stage);
            }
            (Step::Stage, Ok(ClusterReply::Staged(_))) => {
                self.operator_send(k, Step::Plan, ClusterRequest::Plan);
            }
            (Step::Plan, Ok(ClusterReply::Plan(plan))) if plan.changes != [change.clone()] => {
                // Another operator restaged on the same member meanwhile: as a person
                // reading the plan would, start over rather than commit its change.
                self.layout_stats.refused += 1;
                self.operator_retry(k);
            }
            (Step::Plan, Ok(ClusterReply::Plan(plan))) => {
                let commit = ClusterRequest::CommitPlan {
                    version: plan.version,
                    plan: plan.id(),
                };
                self.operator_send(k, Step::Commit, commit);
            }
            (Step::Commit, Ok(ClusterReply::Committed { version })) => {
                self.layout_stats.committed += 1;
                self.versions.committed.push((version, change));
                self.operator_done(k, OperatorOutcome::Committed(version));
            }
            (_, Err(Some(RequestError::PlanChanged { .. }))) => {
                self.layout_stats.plan_changed += 1;
                self.operator_retry(k);
            }
            (_, Err(Some(why))) => {
                if why.to_string().contains("concurrent commit") {
                    self.layout_stats.lost += 1;
                } else {
                    self.layout_stats.refused += 1;
                }
                self.operator_retry(k);
            }
            (_, Err(None)) => {
                self.layout_stats.unanswered += 1;
                self.operator_retry(k);
            }
            (_, Ok(_)) => {
                self.layout_stats.refused += 1;
                self.operator_retry(k);
            }
        }
    }

    fn operator_done(&mut self, k: usize, outcome: OperatorOutcome) {
        let line = format!("operator {k} DONE {outcome:?}");
        self.log.line(self.now, "op", &line);
        self.operators[k].waiting = None;
        self.operators[k].outcome = Some(outcome);
    }
}
