//! How the client's frames reach a node: the wire version each node speaks, and batches.
//!
//! **Versions.** A request goes in the newest wire version unless its node refused that
//! version before: a node of an older release answers a frame of a version it does not
//! speak with `UnsupportedVersion { supported }` without running anything, so the request
//! is sent again in `supported`, and the node's version is remembered for a minute
//! ([`VersionMemory`], as nodes do for their peers). Client requests are the same in every
//! version but their 2-byte prefix, so sending one in another version rewrites only that.
//!
//! **Batches.** Each frame costs the client and the node a QUIC stream, its task and its
//! bookkeeping; at many requests in flight that is a third of a read's CPU. So reads,
//! writes and deletes to a node that already has `frames_per_node` frames unanswered wait,
//! and when one of those frames returns, everything that waited for that node goes in one
//! [`ClientRequest::Batch`](shoal_proto::wire::ClientRequest::Batch) frame (at most
//! [`MAX_CLIENT_BATCH`] requests and [`MAX_BATCH_BYTES`]; the rest waits for the next
//! frame). Nothing waits to fill a batch: below `frames_per_node` frames in flight each
//! request goes at once, alone. A node that does not speak version 6 gets every request
//! alone. Each request of a batch gets its own answer, or its own copy of the frame's
//! transport error (a batch that was not delivered was delivered for none of its
//! requests, and one whose outcome is unknown is unknown for all), so that the caller's
//! retry rules are those of a request sent alone. An answer too large for the batch's
//! frame is asked again alone.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_proto::wire::{
    decode_response, encode_client_batch, ClientResponse, Response, VersionMemory, WireVersion,
    MAX_BATCH_BYTES, MAX_CLIENT_BATCH,
};
use shoal_proto::RequestError;
use shoal_ring::NodeId;
use shoal_transport::{Endpoint, TransportError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::routing::Target;

/// A request larger than this always goes alone: it would fill a batch by itself.
const MAX_BATCHED_REQUEST_BYTES: usize = 64 * 1024;
/// Most requests waiting for a frame to one node; beyond, a request goes alone at once.
const MAX_WAITING_PER_NODE: usize = 4096;
/// How long a node's lower wire version is used before the newest is tried again.
const RECHECK_AFTER: Duration = Duration::from_secs(60);

/// Gauge: requests waiting for a frame to their node.
const WAITING_GAUGE: &str = "shoal_client_waiting_requests";

/// Why one request to one node failed.
pub(crate) enum SendError {
    Transport(TransportError),
    Protocol(String),
}

/// A node's answer to one request, with the layout version the node served it under
/// when it said, or why there is none.
pub(crate) type Answer = Result<(ClientResponse, Option<u64>), SendError>;

/// Sends the client's frames: remembers each node's wire version and batches requests
/// beyond `frames_per_node` frames in flight to a node.
pub(crate) struct Wire {
    endpoint: Endpoint,
    versions: VersionMemory<SocketAddr>,
    frames_per_node: usize,
    nodes: Mutex<HashMap<SocketAddr, NodeFrames>>,
}

/// One node's frames in flight and the requests waiting for one to return. Whenever
/// requests wait, `in_flight` is `frames_per_node` or more: a frame that returns hands
/// its slot to the next batch.
#[derive(Default)]
struct NodeFrames {
    in_flight: usize,
    waiting: VecDeque<Waiting>,
    /// The node id the waiting requests expect at this address (checked by the transport).
    expected: Option<NodeId>,
}

/// A request waiting for a frame.
struct Waiting {
    payload: Vec<u8>,
    wait: Duration,
    deadline: Instant,
    reply: oneshot::Sender<Answer>,
}

/// Requests taken together from one node's queue.
struct Batch {
    expected: Option<NodeId>,
    items: Vec<Waiting>,
}

/// Holds one of a node's frame slots; giving it back starts the next batch.
struct FrameSlot<'a> {
    wire: &'a Arc<Wire>,
    addr: SocketAddr,
}

impl Drop for FrameSlot<'_> {
    fn drop(&mut self) {
        self.wire.release(self.addr);
    }
}

impl Wire {
    /// Frames go through `endpoint`; `frames_per_node` 0 sends every request alone.
    pub(crate) fn new(endpoint: Endpoint, frames_per_node: usize) -> Arc<Wire> {
        Arc::new(Wire {
            endpoint,
            versions: VersionMemory::new(WireVersion::CURRENT, RECHECK_AFTER),
            frames_per_node,
            nodes: Mutex::new(HashMap::new()),
        })
    }

    /// The endpoint the frames go through.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether `addr` is taken to speak the newest wire version (it did not refuse it
    /// within the last [`RECHECK_AFTER`]).
    pub(crate) fn speaks_current(&self, addr: SocketAddr) -> bool {
        self.versions.for_peer(&addr, std::time::Instant::now()) >= WireVersion::CURRENT
    }

    /// Requests waiting for a frame, over all nodes.
    pub(crate) fn waiting(&self) -> usize {
        self.nodes().values().map(|n| n.waiting.len()).sum()
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<SocketAddr, NodeFrames>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one encoded client request (a frame of `Request::Client`) to `target` and
    /// decodes its answer. A `batchable` request (a read, write or delete) may wait for a
    /// frame and share it with others to the same node (module docs).
    pub(crate) async fn send(
        self: &Arc<Self>,
        target: &Target,
        payload: &[u8],
        wait: Duration,
        batchable: bool,
    ) -> Answer {
        let batching = batchable
            && self.frames_per_node > 0
            && payload.len() <= MAX_BATCHED_REQUEST_BYTES
            && self
                .versions
                .for_peer(&target.addr, std::time::Instant::now())
                >= WireVersion::CLIENT_BATCHES;
        if !batching {
            return self
                .send_alone(target.addr, target.id.as_ref(), payload, wait)
                .await;
        }
        let waiting = {
            let mut nodes = self.nodes();
            let node = nodes.entry(target.addr).or_default();
            if node.in_flight < self.frames_per_node || node.waiting.len() >= MAX_WAITING_PER_NODE {
                node.in_flight += 1;
                None
            } else {
                let (reply, answer) = oneshot::channel();
                if node.expected.is_none() {
                    node.expected = target.id.clone();
                }
                node.waiting.push_back(Waiting {
                    payload: payload.to_vec(),
                    wait,
                    deadline: Instant::now() + wait,
                    reply,
                });
                metrics::gauge!(WAITING_GAUGE).increment(1.0);
                Some(answer)
            }
        };
        match waiting {
            None => {
                let _slot = FrameSlot {
                    wire: self,
                    addr: target.addr,
                };
                self.send_alone(target.addr, target.id.as_ref(), payload, wait)
                    .await
            }
            Some(answer) => answer.await.unwrap_or_else(|_| {
                Err(SendError::Protocol(
                    "the client stopped before the request's batch was sent".into(),
                ))
            }),
        }
    }

    /// A frame to `addr` returned: its slot goes to the requests waiting there, if any.
    fn release(self: &Arc<Self>, addr: SocketAddr) {
        let Some(batch) = self.next_batch(addr) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.clone().run_batches(addr, batch));
            }
            Err(_) => {
                // No runtime to send from (the client is being dropped outside one): the
                // waiting requests fail (their callers see the reply dropped).
                drop(batch);
                let mut nodes = self.nodes();
                if let Some(node) = nodes.remove(&addr) {
                    metrics::gauge!(WAITING_GAUGE).decrement(node.waiting.len() as f64);
                }
            }
        }
    }

    /// The next batch for `addr`, keeping the slot of the frame that returned; or, with
    /// nothing waiting, the slot given back.
    fn next_batch(&self, addr: SocketAddr) -> Option<Batch> {
        let mut nodes = self.nodes();
        let node = nodes.get_mut(&addr)?;
        let mut items = Vec::new();
        let (mut bytes, mut taken) = (0, 0);
        while let Some(next) = node.waiting.front() {
            let len = next.payload.len();
            if !items.is_empty()
                && (items.len() == MAX_CLIENT_BATCH || bytes + len > MAX_BATCH_BYTES)
            {
                break;
            }
            let Some(next) = node.waiting.pop_front() else {
                break;
            };
            taken += 1;
            // A caller that stopped waiting (its future dropped, e.g. by a timeout of its
            // own) has its request dropped unsent, as if it had never been made.
            if next.reply.is_closed() {
                continue;
            }
            bytes += len;
            items.push(next);
        }
        if taken > 0 {
            metrics::gauge!(WAITING_GAUGE).decrement(taken as f64);
        }
        if items.is_empty() {
            // Nothing (left) to send: the slot is given back.
            node.in_flight = node.in_flight.saturating_sub(1);
            if node.in_flight == 0 {
                nodes.remove(&addr);
            }
            return None;
        }
        Some(Batch {
            expected: node.expected.clone(),
            items,
        })
    }

    /// Sends batches to `addr` on one frame slot until nobody waits there.
    async fn run_batches(self: Arc<Self>, addr: SocketAddr, mut batch: Batch) {
        loop {
            self.send_batch(addr, batch).await;
            match self.next_batch(addr) {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    /// Sends one batch and hands each request its answer.
    async fn send_batch(self: &Arc<Self>, addr: SocketAddr, batch: Batch) {
        let Batch { expected, items } = batch;
        let now = Instant::now();
        // A request whose wait ended in the queue was never sent.
        let (items, expired): (Vec<Waiting>, Vec<Waiting>) =
            items.into_iter().partition(|w| w.deadline > now);
        for w in expired {
            let after = w.wait;
            let _ = w
                .reply
                .send(Err(SendError::Transport(TransportError::Timeout {
                    addr,
                    after,
                })));
        }
        let wait = match items.iter().map(|w| w.deadline).max() {
            Some(deadline) => deadline - now,
            None => return,
        };
        if let [alone] = items.as_slice() {
            // One request goes in a frame of its own, on this batch's slot.
            let answer = self
                .send_alone(addr, expected.as_ref(), &alone.payload, wait)
                .await;
            if let Some(w) = items.into_iter().next() {
                let _ = w.reply.send(answer);
            }
            return;
        }
        let version = self.versions.for_peer(&addr, std::time::Instant::now());
        let frames: Vec<&[u8]> = items.iter().map(|w| w.payload.as_slice()).collect();
        let Some(payload) = encode_client_batch(&frames, version) else {
            // A node that no longer speaks batches: each goes alone.
            self.each_alone(addr, expected, items);
            return;
        };
        metrics::histogram!("shoal_client_batched_requests").record(items.len() as f64);
        let answer = self
            .endpoint
            .request(addr, expected.as_ref(), payload, wait)
            .await;
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(e) => {
                for w in items {
                    let _ = w.reply.send(Err(SendError::Transport(e.duplicate())));
                }
                return;
            }
        };
        let (answers, stamp) = match decode_response(&bytes) {
            Ok(Response::Client(ClientResponse::Batch(answers))) => (answers, None),
            Ok(Response::Stamped {
                layout_version,
                response: ClientResponse::Batch(answers),
            }) => (answers, Some(layout_version)),
            Ok(Response::Error(RequestError::UnsupportedVersion { supported, .. }))
                if self.lowered(addr, version, supported) =>
            {
                // Refused before anything ran: each request again, alone, in its version.
                self.each_alone(addr, expected, items);
                return;
            }
            other => {
                // One answer for the whole frame (a node-level refusal, or garbage): the
                // same for each request.
                for w in items {
                    let _ = w.reply.send(answer_of(addr, other.clone()));
                }
                return;
            }
        };
        if answers.len() != items.len() {
            let problem = format!(
                "{addr} answered a batch of {} requests with {} answers",
                items.len(),
                answers.len()
            );
            for w in items {
                let _ = w.reply.send(Err(SendError::Protocol(problem.clone())));
            }
            return;
        }
        let mut too_large = Vec::new();
        for (w, answer) in items.into_iter().zip(answers) {
            match answer {
                ClientResponse::Error(RequestError::ResponseTooLarge { .. }) => too_large.push(w),
                answer => {
                    let _ = w.reply.send(Ok((answer, stamp)));
                }
            }
        }
        self.each_alone(addr, expected, too_large);
    }

    /// Sends each request alone, at once (in tasks of their own), answering each.
    fn each_alone(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<NodeId>,
        items: Vec<Waiting>,
    ) {
        for w in items {
            let wire = self.clone();
            let expected = expected.clone();
            tokio::spawn(async move {
                let wait = w.deadline.saturating_duration_since(Instant::now());
                let answer = wire
                    .send_alone(
                        addr,
                        expected.as_ref(),
                        &w.payload,
                        wait.max(Duration::from_millis(1)),
                    )
                    .await;
                let _ = w.reply.send(answer);
            });
        }
    }

    /// Remembers that `addr` refused `sent` and speaks `supported`: whether there is a
    /// lower version to send it again in.
    fn lowered(&self, addr: SocketAddr, sent: WireVersion, supported: u16) -> bool {
        match self
            .versions
            .refused(&addr, sent, supported, std::time::Instant::now())
        {
            Some(lower) => {
                metrics::counter!("shoal_client_wire_version_fallbacks_total", "version" => lower.to_string())
                    .increment(1);
                true
            }
            None => false,
        }
    }

    /// Sends one request in its own frame, in the version `addr` speaks (again in a lower
    /// one if the node refuses it for its version), and decodes the answer.
    async fn send_alone(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
        payload: &[u8],
        wait: Duration,
    ) -> Answer {
        let mut version = self.versions.for_peer(&addr, std::time::Instant::now());
        loop {
            let mut frame = payload.to_vec();
            if let Some(prefix) = frame.first_chunk_mut::<2>() {
                *prefix = version.get().to_be_bytes();
            }
            let bytes = self
                .endpoint
                .request(addr, expected, frame, wait)
                .await
                .map_err(SendError::Transport)?;
            let decoded = decode_response(&bytes);
            if let Ok(Response::Error(RequestError::UnsupportedVersion { supported, .. })) =
                &decoded
            {
                if self.lowered(addr, version, *supported) {
                    version = self.versions.for_peer(&addr, std::time::Instant::now());
                    continue;
                }
            }
            return answer_of(addr, decoded);
        }
    }
}

/// The client answer in a decoded response frame from `addr`. Node-level errors
/// ([`Response::Error`]) come back as [`ClientResponse::Error`].
fn answer_of(addr: SocketAddr, decoded: Result<Response, shoal_proto::CodecError>) -> Answer {
    match decoded {
        Ok(Response::Client(response)) => Ok((response, None)),
        Ok(Response::Stamped {
            layout_version,
            response,
        }) => Ok((response, Some(layout_version))),
        Ok(Response::Error(e)) => Ok((ClientResponse::Error(e), None)),
        Ok(Response::Peer(p)) => Err(SendError::Protocol(format!(
            "{addr} answered with a node-to-node message: {p:?}"
        ))),
        Err(e) => Err(SendError::Protocol(format!(
            "undecodable answer from {addr}: {e}"
        ))),
    }
}
