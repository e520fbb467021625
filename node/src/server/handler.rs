//! The QUIC request handler: decodes a request, queues it for the driver (or answers
//! `Overloaded` when the queue is full) and waits for the engine's answer. Clients'
//! replica reads and peers' replica writes the engine's published gate admits it serves
//! itself, from memory (`replica_reads.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_proto::wire::{
    answer_version, client_response_len, decode_request_versioned, encode_response_as,
    fit_response, peek_request_kind, peer_response_len, ClientRequest, ClientResponse,
    ClusterRequest, LayoutStamp, PeerRequest, PeerResponse, Request, RequestKind, Response,
    StorageHealth, MAX_CLIENT_BATCH, MAX_PEER_BATCH, MAX_REQUEST_TIMEOUT,
};
use shoal_proto::{ReplicationConfig, RequestError, Sender};
use shoal_ring::NodeId;
use shoal_storage::RocksStorage;
use shoal_transport::{Handler, PeerRole};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::backup::Backups;
use super::replica_reads::{Merge, ReplicaReads};
use super::Inbound;
use shoal_metric_handles::Handles;

static WIRE_REQUESTS: Handles<metrics::Counter, 2> =
    Handles::counter(crate::metrics::WIRE_REQUESTS_TOTAL, ["role", "version"]);
static CLIENT_REQUESTS: Handles<metrics::Counter, 2> =
    Handles::counter(crate::metrics::REQUESTS_TOTAL, ["op", "result"]);
static CLIENT_DURATION: Handles<metrics::Histogram, 1> =
    Handles::histogram(crate::metrics::REQUEST_DURATION_SECONDS, ["op"]);
static PEER_SERVED: Handles<metrics::Counter, 1> =
    Handles::counter(crate::metrics::PEER_REQUESTS_SERVED_TOTAL, ["op"]);
static PEER_DURATION: Handles<metrics::Histogram, 1> =
    Handles::histogram(crate::metrics::PEER_REQUEST_DURATION_SECONDS, ["op"]);
pub(super) static PEER_BATCH_REQUESTS: Handles<metrics::Histogram, 1> =
    Handles::histogram(crate::metrics::PEER_BATCH_REQUESTS, ["direction"]);
static CLIENT_BATCH_REQUESTS: Handles<metrics::Histogram, 0> =
    Handles::histogram(crate::metrics::CLIENT_BATCH_REQUESTS, []);

/// The `version` label of a wire version, without formatting it per request.
fn version_label(version: shoal_proto::wire::WireVersion) -> Option<&'static str> {
    const LABELS: [&str; 9] = ["0", "1", "2", "3", "4", "5", "6", "7", "8"];
    LABELS.get(usize::from(version.get())).copied()
}

/// Answers QUIC requests by queueing them for the driver.
pub(super) struct NodeHandler {
    input: mpsc::Sender<Inbound>,
    default_timeout: Duration,
    margin: Duration,
    /// The transport's frame limit: a larger answer is replaced by a typed error.
    max_frame_bytes: usize,
    /// This node, and its storage whose disk state its own status reports carry.
    me: NodeId,
    storage: Arc<RocksStorage>,
    /// Serves `backup` requests (the node's own work, not the engine's).
    backups: Arc<Backups>,
    /// `tls.admin_clients`: the client names allowed to change the cluster and take
    /// backups (empty: every client).
    admin_clients: Vec<String>,
    /// Serves clients' replica reads from memory without the driver, when set
    /// (`replica_reads.rs`).
    replica_reads: Option<Arc<ReplicaReads>>,
}

impl NodeHandler {
    /// A handler queueing into `input`, waiting as long as the `replication` timeouts
    /// allow, answering within frames of `max_frame_bytes`.
    pub(super) fn new(
        input: mpsc::Sender<Inbound>,
        replication: &ReplicationConfig,
        max_frame_bytes: usize,
        me: NodeId,
        storage: Arc<RocksStorage>,
        backups: Arc<Backups>,
    ) -> Self {
        NodeHandler {
            input,
            default_timeout: replication.request_timeout,
            margin: replication.rpc_timeout * 3,
            max_frame_bytes,
            me,
            storage,
            backups,
            admin_clients: Vec::new(),
            replica_reads: None,
        }
    }

    /// Serves clients' replica reads with `reads` where it can (`replica_reads.rs`).
    pub(super) fn with_replica_reads(mut self, reads: Arc<ReplicaReads>) -> Self {
        self.replica_reads = Some(reads);
        self
    }

    /// The answer to a client's replica read of `key` served here, or `None` to queue
    /// it for the engine.
    fn serve_replica_read(&self, key: &[u8]) -> Option<Response> {
        self.replica_reads.as_ref()?.serve(key)
    }

    /// A peer's replica write merged here (`replica_reads.rs`), or the request given
    /// back for the engine.
    fn merge_here(&self, from: &Sender, stamp: &LayoutStamp, request: PeerRequest) -> Merge {
        match (&self.replica_reads, from) {
            (Some(reads), Sender::Node(node)) => reads.merge(node, stamp, request),
            _ => Merge::ToEngine(request),
        }
    }

    /// Hands the WAL records of the merges run here to the OS before their answers go
    /// out (`ReplicaReads::write_out`); the answer that replaces theirs if that failed.
    fn write_out_merges(&self) -> Option<PeerResponse> {
        let reads = self.replica_reads.as_ref()?;
        let failed = reads.write_out().err()?;
        Some(PeerResponse::Error(shoal_proto::storage_error(failed)))
    }

    /// Only these client names may change the cluster and take backups (`tls.admin_clients`;
    /// empty: every client).
    pub(super) fn with_admin_clients(mut self, names: Vec<String>) -> Self {
        self.admin_clients = names;
        self
    }

    /// The refusal of an administrative request from a client not listed in
    /// `tls.admin_clients`, or `None` if `client` may send `request`.
    fn refuse_admin(&self, client: &str, request: &Request) -> Option<RequestError> {
        if self.admin_clients.is_empty() || self.admin_clients.iter().any(|n| n == client) {
            return None;
        }
        let what = admin_request(request)?;
        Some(RequestError::NotAllowed(format!(
            "client certificate {client:?} may not {what}: it is not in this node's tls.admin_clients"
        )))
    }

    /// The engine does not see the disk: this node's own status report gets its storage
    /// state here (a report forwarded from another node keeps that node's).
    fn fill_storage_health(&self, response: &mut Response) {
        if let Response::Client(ClientResponse::Status(report)) = response {
            if report.node == self.me {
                let disk = self.storage.disk_status();
                report.storage = StorageHealth {
                    disk_full: disk.full,
                    free_bytes: disk.free_bytes,
                };
            }
        }
    }

    /// The engine always answers; this backstop (the request's own timeout plus room for
    /// a forward hop) only makes sure a stream can never hang.
    fn max_wait(&self, request: &Request) -> Duration {
        let own = match request {
            Request::Client(c)
            | Request::Peer(PeerRequest::Forward(c))
            | Request::Stamped(_, PeerRequest::Forward(c)) => c.timeout(),
            _ => None,
        };
        // A timeout beyond the protocol's bound is refused by the engine; clamping here
        // keeps this sum from overflowing before it gets there.
        own.unwrap_or(self.default_timeout)
            .min(MAX_REQUEST_TIMEOUT)
            .max(self.default_timeout)
            .saturating_add(self.margin)
    }
}

/// The room left for answers in a batch's answer frame.
struct FrameRoom {
    left: usize,
    max: usize,
}

impl FrameRoom {
    /// A frame of `max` bytes, less the batch's own envelope.
    fn new(max: usize) -> FrameRoom {
        FrameRoom {
            left: max.saturating_sub(64),
            max,
        }
    }

    /// Takes room for an answer of `len` bytes, or says why it does not fit (the sender
    /// asks that request again alone).
    fn take(&mut self, len: usize) -> Result<(), RequestError> {
        if len > self.left {
            return Err(RequestError::ResponseTooLarge { len, max: self.max });
        }
        self.left -= len;
        Ok(())
    }
}

/// A request of a peer's batch: queued for the driver, refused, or a replica write
/// merged by the handler (its answer sent once the WAL is written out).
enum BatchItem {
    Queued(Queued),
    Refused(RequestError),
    Merged(PeerResponse),
}

/// A request queued for the driver: where its answer comes, and until when to wait.
struct Queued {
    answer: oneshot::Receiver<Response>,
    max_wait: Duration,
    deadline: tokio::time::Instant,
}

impl NodeHandler {
    /// Queues a request for the driver and waits (bounded) for the engine's answer.
    async fn queue(&self, op: &'static str, from: Sender, request: Request) -> Response {
        match self.submit(from, request) {
            Ok(queued) => Self::answer(op, queued).await,
            Err(refused) => Response::Error(refused),
        }
    }

    /// Queues a request for the driver, or answers at once when the queue is full or
    /// closed.
    fn submit(&self, from: Sender, request: Request) -> Result<Queued, RequestError> {
        let max_wait = self.max_wait(&request);
        let (tx, rx) = oneshot::channel();
        match self.input.try_send(Inbound {
            from,
            request,
            reply: tx,
        }) {
            Err(mpsc::error::TrySendError::Full(_)) => Err(RequestError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RequestError::ShuttingDown),
            Ok(()) => Ok(Queued {
                answer: rx,
                max_wait,
                deadline: tokio::time::Instant::now() + max_wait,
            }),
        }
    }

    /// The engine's answer to a queued request, waited for until its deadline.
    async fn answer(op: &'static str, queued: Queued) -> Response {
        match tokio::time::timeout_at(queued.deadline, queued.answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Response::Error(RequestError::ShuttingDown),
            Err(_) => {
                warn!(op, "engine gave no answer in time");
                Response::Error(RequestError::Internal(format!(
                    "no answer within {:?}",
                    queued.max_wait
                )))
            }
        }
    }

    /// Runs the requests of a [`PeerRequest::Batch`] as if each had come alone, all
    /// queued at once (the driver takes them in one wake-up), and answers them in order.
    /// Answers that would make the batch's frame too large are replaced by
    /// `ResponseTooLarge` (the sender asks those again alone).
    async fn batch(
        &self,
        from: Sender,
        stamp: Option<LayoutStamp>,
        items: Vec<PeerRequest>,
    ) -> Response {
        if items.is_empty() || items.len() > MAX_PEER_BATCH {
            return Response::Error(RequestError::Malformed(format!(
                "a batch of {} requests (1..={MAX_PEER_BATCH})",
                items.len()
            )));
        }
        PEER_BATCH_REQUESTS
            .get(["received"])
            .record(items.len() as f64);
        let start = Instant::now();
        let mut merged_here = false;
        let queued: Vec<(&'static str, BatchItem)> = items
            .into_iter()
            .map(|item| {
                let op = item.op_name();
                if let PeerRequest::Batch(_) = item {
                    let nested = RequestError::Malformed("a batch inside a batch".into());
                    return (op, BatchItem::Refused(nested));
                }
                let item = match (&stamp, item) {
                    (Some(stamp), item @ PeerRequest::Replicate { .. }) => {
                        match self.merge_here(&from, stamp, item) {
                            Merge::Done(answer) => {
                                merged_here = true;
                                return (op, BatchItem::Merged(answer));
                            }
                            Merge::ToEngine(item) => item,
                        }
                    }
                    (_, item) => item,
                };
                let request = match &stamp {
                    Some(stamp) => Request::Stamped(stamp.clone(), item),
                    None => Request::Peer(item),
                };
                match self.submit(from.clone(), request) {
                    Ok(queued) => (op, BatchItem::Queued(queued)),
                    Err(refused) => (op, BatchItem::Refused(refused)),
                }
            })
            .collect();
        // The merges' records go to the OS before any of their answers do.
        let failed = if merged_here {
            self.write_out_merges()
        } else {
            None
        };
        let mut room = FrameRoom::new(self.max_frame_bytes);
        let mut answers = Vec::with_capacity(queued.len());
        for (op, queued) in queued {
            let answer = match queued {
                BatchItem::Queued(queued) => Self::answer(op, queued).await,
                BatchItem::Refused(refused) => Response::Error(refused),
                BatchItem::Merged(answer) => Response::Peer(failed.clone().unwrap_or(answer)),
            };
            PEER_SERVED.get([op]).increment(1);
            PEER_DURATION
                .get([op])
                .record(start.elapsed().as_secs_f64());
            let answer = answer.into_peer();
            match room.take(peer_response_len(&answer)) {
                Ok(()) => answers.push(answer),
                Err(too_large) => answers.push(PeerResponse::Error(too_large)),
            }
        }
        Response::Peer(PeerResponse::Batch(answers))
    }
}

impl NodeHandler {
    /// Runs the requests of a [`ClientRequest::Batch`] as if each had come alone (each
    /// admitted, timed and counted under its own `op`), all queued at once, and answers
    /// them in order, stamped with the newest layout version any answer carried. Only
    /// reads, writes and deletes go in a batch; anything else is answered `Malformed` in
    /// its place. Answers that would make the frame too large are replaced by
    /// `ResponseTooLarge` (the SDK asks those again alone).
    async fn client_batch(&self, from: Sender, items: Vec<ClientRequest>) -> Response {
        if items.is_empty() || items.len() > MAX_CLIENT_BATCH {
            return Response::Error(RequestError::Malformed(format!(
                "a batch of {} requests (1..={MAX_CLIENT_BATCH})",
                items.len()
            )));
        }
        CLIENT_BATCH_REQUESTS.get([]).record(items.len() as f64);
        let start = Instant::now();
        // Each item queued for the engine, or answered already (`Err`): refused, or a
        // replica read served here.
        let queued: Vec<(&'static str, Result<Queued, Response>)> = items
            .into_iter()
            .map(|item| {
                let op = item.op_name();
                if item.key().is_none() {
                    let refused = RequestError::Malformed(format!(
                        "a batch carries only gets, puts and deletes, not {op}"
                    ));
                    return (op, Err(Response::Error(refused)));
                }
                if let ClientRequest::GetReplica { key } = &item {
                    if let Some(answer) = self.serve_replica_read(key) {
                        return (op, Err(answer));
                    }
                }
                let queued = self.submit(from.clone(), Request::Client(item));
                (op, queued.map_err(Response::Error))
            })
            .collect();
        let mut room = FrameRoom::new(self.max_frame_bytes);
        let mut layout_version = None;
        let mut answers = Vec::with_capacity(queued.len());
        for (op, queued) in queued {
            let answer = match queued {
                Ok(queued) => Self::answer(op, queued).await,
                Err(ready) => ready,
            };
            let answer = match answer {
                Response::Client(c) => c,
                Response::Stamped {
                    layout_version: v,
                    response,
                } => {
                    layout_version = layout_version.max(Some(v));
                    response
                }
                Response::Error(e) => ClientResponse::Error(e),
                Response::Peer(_) => ClientResponse::Error(RequestError::Internal(
                    "the engine answered a client request with a node-to-node message".into(),
                )),
            };
            let result = match &answer {
                ClientResponse::Error(e) => e.label(),
                _ => "ok",
            };
            CLIENT_REQUESTS.get([op, result]).increment(1);
            CLIENT_DURATION
                .get([op])
                .record(start.elapsed().as_secs_f64());
            match room.take(client_response_len(&answer)) {
                Ok(()) => answers.push(answer),
                Err(too_large) => answers.push(ClientResponse::Error(too_large)),
            }
        }
        let response = ClientResponse::Batch(answers);
        match layout_version {
            Some(layout_version) => Response::Stamped {
                layout_version,
                response,
            },
            None => Response::Client(response),
        }
    }
}

/// What an administrative client request does (for its refusal), or `None` for a request
/// every client may send: data, and reading the cluster's state and plans.
fn admin_request(request: &Request) -> Option<&'static str> {
    match request {
        Request::Client(ClientRequest::Backup { .. }) => Some("take backups"),
        Request::Client(ClientRequest::Cluster(
            ClusterRequest::Stage(_)
            | ClusterRequest::Unstage
            | ClusterRequest::Commit { .. }
            | ClusterRequest::CommitPlan { .. },
        )) => Some("change the cluster's layout"),
        _ => None,
    }
}

fn result_label(resp: &Response) -> &'static str {
    match resp {
        Response::Client(ClientResponse::Error(e))
        | Response::Stamped {
            response: ClientResponse::Error(e),
            ..
        }
        | Response::Error(e)
        | Response::Peer(PeerResponse::Error(e)) => e.label(),
        _ => "ok",
    }
}

impl Handler for NodeHandler {
    async fn handle(&self, peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        let start = Instant::now();
        // Every answer goes back in the version the request came in, so that a client or
        // node of the previous release can read it (rolling upgrades).
        let version = answer_version(&request);
        // A client may never send node-to-node messages: refuse one before its body is
        // decoded, so that a client certificate buys no work on peer-sized messages.
        if let PeerRole::Client(name) = &peer {
            if let Ok(RequestKind::Peer) = peek_request_kind(&request) {
                metrics::counter!(shoal_proto::metrics::REFUSED_REQUESTS_TOTAL, "reason" => "client_role_peer_message")
                    .increment(1);
                let refusal = Response::Error(RequestError::NotAllowed(format!(
                    "client certificate {name:?} may not send node-to-node messages"
                )));
                return encode_response_as(&refusal, version);
            }
        }
        let request = match decode_request_versioned(&request) {
            Ok((_, r)) => r,
            Err(e) => {
                metrics::counter!(crate::metrics::REQUESTS_TOTAL, "op" => "malformed", "result" => "invalid")
                    .increment(1);
                return encode_response_as(&Response::Error(e.into()), version);
            }
        };
        let (op, client) = match &request {
            Request::Client(c) => (c.op_name(), true),
            Request::Peer(p) | Request::Stamped(_, p) => (p.op_name(), false),
        };
        let role = if client { "client" } else { "peer" };
        match version_label(version) {
            Some(label) => WIRE_REQUESTS.get([role, label]).increment(1),
            None => metrics::counter!(crate::metrics::WIRE_REQUESTS_TOTAL, "role" => role, "version" => version.to_string())
                .increment(1),
        }
        if let PeerRole::Client(name) = &peer {
            if let Some(refusal) = self.refuse_admin(name, &request) {
                metrics::counter!(shoal_proto::metrics::REFUSED_REQUESTS_TOTAL, "reason" => "client_not_admin")
                    .increment(1);
                CLIENT_REQUESTS.get([op, refusal.label()]).increment(1);
                return encode_response_as(
                    &Response::Client(ClientResponse::Error(refusal)),
                    version,
                );
            }
        }
        let from = match peer {
            PeerRole::Node(id) => Sender::Node(id),
            PeerRole::Client(name) => Sender::Client(name),
        };
        let mut response = match request {
            Request::Client(ClientRequest::Backup { name }) => {
                Response::Client(self.backups.serve(name).await)
            }
            Request::Client(ClientRequest::Batch(items)) => self.client_batch(from, items).await,
            Request::Client(ClientRequest::GetReplica { key }) => {
                match self.serve_replica_read(&key) {
                    Some(answer) => answer,
                    None => {
                        let request = Request::Client(ClientRequest::GetReplica { key });
                        self.queue(op, from, request).await
                    }
                }
            }
            Request::Peer(PeerRequest::Batch(items)) => self.batch(from, None, items).await,
            Request::Stamped(stamp, PeerRequest::Batch(items)) => {
                self.batch(from, Some(stamp), items).await
            }
            Request::Stamped(stamp, item @ PeerRequest::Replicate { .. }) => {
                match self.merge_here(&from, &stamp, item) {
                    Merge::Done(answer) => {
                        Response::Peer(self.write_out_merges().unwrap_or(answer))
                    }
                    Merge::ToEngine(item) => {
                        self.queue(op, from, Request::Stamped(stamp, item)).await
                    }
                }
            }
            request => self.queue(op, from, request).await,
        };
        self.fill_storage_health(&mut response);
        if client && op != "batch" {
            // A batch's requests are counted one by one (`client_batch`).
            let result = result_label(&response);
            CLIENT_REQUESTS.get([op, result]).increment(1);
            CLIENT_DURATION
                .get([op])
                .record(start.elapsed().as_secs_f64());
        } else if op != "batch" {
            // A batch's requests are counted one by one (`batch`).
            PEER_SERVED.get([op]).increment(1);
            PEER_DURATION
                .get([op])
                .record(start.elapsed().as_secs_f64());
        }
        // An answer the transport would not send goes back as a typed error, so that
        // the requester knows this node is alive (and does not take it for down).
        let response = fit_response(response, self.max_frame_bytes);
        if let Response::Error(RequestError::ResponseTooLarge { len, max }) = &response {
            warn!(
                op,
                len, max, "answer larger than a frame; sent a typed error instead"
            );
        }
        encode_response_as(&response, version)
    }
}
