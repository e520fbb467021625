//! Forwarding: a node that is not a replica of a key hands the request to one that is.

use std::collections::VecDeque;

use shoal_ring::NodeId;

use super::{Engine, InboundId, RequestId, SendError, Timer, Waiter};
use crate::error::RequestError;
use crate::time::Monotonic;
use crate::wire::{ClientRequest, ClientResponse, PeerRequest, PeerResponse};

/// A request handed to a replica.
#[derive(Debug)]
pub(super) struct ForwardOp {
    inbound: InboundId,
    request: ClientRequest,
    candidates: VecDeque<NodeId>,
    deadline: Monotonic,
    /// The layout version current when it started (see `placement.rs`: this node's
    /// `ack` waits for the ops of older versions).
    pub(super) started_under: u64,
}

pub(super) fn quorum_of(req: &ClientRequest, cfg: &crate::config::EngineConfig) -> usize {
    match req {
        ClientRequest::Get { options, .. } => usize::from(options.r.unwrap_or(cfg.replication.r)),
        ClientRequest::Put { options, .. } | ClientRequest::Delete { options, .. } => {
            usize::from(options.w.unwrap_or(cfg.replication.w))
        }
        _ => 1,
    }
}

fn timeout_of(req: &ClientRequest, cfg: &crate::config::EngineConfig) -> std::time::Duration {
    req.timeout().unwrap_or(cfg.replication.request_timeout)
}

impl Engine {
    pub(super) fn start_forward(
        &mut self,
        inbound: InboundId,
        request: ClientRequest,
        primaries: Vec<NodeId>,
    ) {
        let candidates: VecDeque<NodeId> = primaries
            .into_iter()
            .filter(|p| self.membership.is_up(p))
            .collect();
        if candidates.is_empty() {
            let needed = quorum_of(&request, &self.cfg);
            self.meters
                .requests
                .get([request.op_name(), "unavailable"])
                .increment(1);
            self.respond_client(
                inbound,
                ClientResponse::Error(RequestError::Unavailable { needed, alive: 0 }),
            );
            return;
        }
        let id = self.next_request_id();
        // The replica answers within the request's own timeout; the hop gets a margin.
        // Each send has its own timeout and reports back, and the deadline timer bounds
        // the whole forward whatever the driver does (`Monotonic + Duration` saturates).
        let deadline =
            self.mono + timeout_of(&request, &self.cfg) + self.cfg.replication.rpc_timeout;
        self.timers.insert((deadline, Timer::Deadline(id)));
        self.forwards.insert(
            id,
            ForwardOp {
                inbound,
                request,
                candidates,
                deadline,
                started_under: self.layout.version(),
            },
        );
        self.forward_next(id);
    }

    fn forward_next(&mut self, id: RequestId) {
        let Some(op) = self.forwards.get_mut(&id) else {
            return;
        };
        let Some(to) = op.candidates.pop_front() else {
            let needed = quorum_of(&op.request, &self.cfg);
            self.end_forward(
                id,
                ClientResponse::Error(RequestError::Unavailable { needed, alive: 0 }),
            );
            return;
        };
        metrics::counter!(crate::metrics::FORWARDS_TOTAL).increment(1);
        let timeout = op.deadline.saturating_since(self.mono);
        let request = PeerRequest::Forward(op.request.clone());
        self.send(to, request, timeout, Waiter::Forward(id));
    }

    pub(super) fn on_forward(&mut self, id: RequestId, result: Result<PeerResponse, SendError>) {
        match result {
            // The replica's engine did not run it (restoring, a candidate, its copy of the
            // partition being dropped): another replica may take it, a write included. An
            // engine of version 5 or older says so with a client `ShuttingDown`, which it
            // answers a client request only then (a node shutting down answers
            // `PeerResponse::Error`).
            Ok(PeerResponse::Client(ClientResponse::Error(
                RequestError::Declined(_) | RequestError::ShuttingDown,
            ))) => self.forward_next(id),
            Ok(PeerResponse::Client(resp)) => self.end_forward(id, resp),
            Ok(PeerResponse::Error(e)) => self.end_forward(id, ClientResponse::Error(e)),
            // Could not reach that replica: try the next one.
            Err(SendError::Unreachable(_)) => self.forward_next(id),
            // Sent, outcome unknown: the replica may have coordinated it.
            Err(SendError::Timeout) | Err(SendError::Lost(_)) => self.forward_deadline(id),
            Ok(other) => self.end_forward(
                id,
                ClientResponse::Error(RequestError::Internal(format!(
                    "unexpected answer to a forwarded request: {other:?}"
                ))),
            ),
            Err(SendError::Invalid(e)) => self.end_forward(
                id,
                ClientResponse::Error(RequestError::Internal(format!(
                    "invalid answer to a forwarded request: {e}"
                ))),
            ),
        }
    }

    /// The forward's deadline passed with no answer from any replica tried.
    pub(super) fn forward_deadline(&mut self, id: RequestId) {
        let needed = self
            .forwards
            .get(&id)
            .map(|op| quorum_of(&op.request, &self.cfg))
            .unwrap_or(1);
        self.end_forward(
            id,
            ClientResponse::Error(RequestError::Timeout { acks: 0, needed }),
        );
    }

    fn end_forward(&mut self, id: RequestId, response: ClientResponse) {
        let Some(op) = self.forwards.remove(&id) else {
            return;
        };
        self.timers.remove(&(op.deadline, Timer::Deadline(id)));
        self.after_op_ended(op.started_under);
        let result = match &response {
            ClientResponse::Error(e) => e.label(),
            _ => "ok",
        };
        metrics::counter!(crate::metrics::FORWARDED_REQUESTS_TOTAL, "op" => op.request.op_name(), "result" => result)
            .increment(1);
        self.respond_client(op.inbound, response);
    }
}
