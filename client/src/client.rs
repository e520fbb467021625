//! [`Client`]: connects to a cluster, routes each request to a replica of its key, and
//! turns answers into typed results.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use shoal_proto::wire::{
    encode_request, AaeReport, ClientRequest, ClientResponse, ClusterInfo, Request, StatusReport,
};
use shoal_proto::RequestError;
use shoal_ring::NodeId;
use shoal_transport::{Endpoint, TlsIdentity, TransportConfig, TransportError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use crate::builder::ClientBuilder;
use crate::config::{ClientConfig, Seed, Settings};
use crate::context::Context;
use crate::error::ClientError;
use crate::options::{check_timeout, ReadOptions, WriteOptions};
use crate::request::{Delete, Get, Put};
use crate::retry::Jitter;
use crate::routing::{validate_key, DownList, Target, View};

mod cluster;
mod direct;
mod wire;

pub use cluster::LAYOUT_REFRESH_INTERVAL;
pub use direct::DIRECT_READ_WAIT;
/// Most bytes of requests one batch frame carries (as node-to-node batches).
pub use shoal_proto::wire::MAX_BATCH_BYTES;
use wire::{SendError, Wire};

/// Extra time the client waits beyond a request's own timeout, so that the coordinator's
/// `Timeout` answer (with its ack count) arrives before the client gives up. It covers a
/// forwarding hop, which nodes bound by their `rpc_timeout` (2 s by default).
pub const RESPONSE_MARGIN: Duration = Duration::from_secs(3);

/// Most nodes one call tries (cluster-info refresh included) before it reports
/// [`ClientError::Unreachable`].
pub const MAX_ATTEMPTS_PER_CALL: usize = 16;

/// Most connections one request races at once (see [`ClientConfig::race_delay`]).
pub const MAX_RACING: usize = 3;

/// The answer to [`Client::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResult {
    /// Whether the key has a value (a key whose only versions are deletes is not found).
    pub found: bool,
    /// The sibling values: one normally, several after concurrent writes, none when not
    /// found.
    pub values: Vec<Vec<u8>>,
    /// Hand this to the next put or delete of the key to replace exactly these values
    /// (and resolve the siblings). Meaningful even when the key is not found.
    pub context: Context,
    /// When each value was written, parallel to `values`: the wall clock of the node that
    /// coordinated the write when it accepted it (so clock skew between nodes orders
    /// close concurrent writes arbitrarily). Empty when the node that answered runs the
    /// previous release (wire version 1), which does not report write times.
    pub written_at: Vec<SystemTime>,
}

/// One sibling of a read: a value and when it was written ([`GetResult::siblings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sibling<'a> {
    /// The value.
    pub value: &'a [u8],
    /// When it was written; `None` when the node that answered did not say (see
    /// [`GetResult::written_at`]).
    pub written_at: Option<SystemTime>,
}

impl GetResult {
    /// The values with their write times, in the order of `values`.
    pub fn siblings(&self) -> Vec<Sibling<'_>> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| Sibling {
                value: v,
                written_at: self.written_at.get(i).copied(),
            })
            .collect()
    }
}

/// The write times of a read's answer as the SDK exposes them: none, or one per value.
fn write_times(
    values: &[Vec<u8>],
    written_at: Vec<shoal_proto::Time>,
) -> Result<Vec<SystemTime>, ClientError> {
    if !written_at.is_empty() && written_at.len() != values.len() {
        return Err(ClientError::Protocol(format!(
            "a read answered {} values with {} write times",
            values.len(),
            written_at.len()
        )));
    }
    Ok(written_at
        .into_iter()
        .map(|t| SystemTime::UNIX_EPOCH + t.since_epoch())
        .collect())
}

/// A connection to a Shoal cluster.
///
/// Cheap to clone (an `Arc` inside) and safe to share between tasks. It knows the ring,
/// so each keyed request goes straight to a replica of its key; nodes it cannot reach are
/// routed around (any node accepts any request and forwards it). A request whose outcome
/// is unknown (sent, then no answer) is never retried behind the caller's back.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    /// Sends the frames: each node's wire version, batches.
    wire: Arc<Wire>,
    settings: Settings,
    view: RwLock<Arc<View>>,
    down: Arc<DownList>,
    jitter: Jitter,
    /// Turns of reads, to spread them over the replicas of their keys.
    turn: AtomicUsize,
    /// Bounds the refreshes started because a node showed a newer layout.
    layout_refresh: cluster::RefreshGate,
    /// Background repairs of superseding direct reads running now (`direct.rs`).
    background_repairs: Arc<AtomicUsize>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = self.view();
        f.debug_struct("Client")
            .field("seeds", &self.inner.settings.seeds)
            .field("ring_version", &view.info.ring.version())
            .field("members", &view.info.members.len())
            .finish()
    }
}

/// How a request picks its nodes.
#[derive(Clone, Copy)]
enum Route<'a> {
    /// The key's preference list, then every other member.
    Key(&'a [u8]),
    /// Any member.
    Any,
    /// Only this node.
    Node(&'a NodeId),
}

/// What [`Client::attempt`] made of one try.
enum Attempt {
    /// A node answered (possibly with an error), with the layout version it served the
    /// request under when it said (wire version 4).
    Answer(ClientResponse, Option<u64>),
    /// The request certainly had no effect there; try another node.
    NotDelivered(String),
}

impl Client {
    /// Loads the TLS files, creates a QUIC endpoint and learns the cluster's shape from the
    /// first seed that answers (each is tried in order; host names are resolved first).
    ///
    /// Must be called inside a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        ClientBuilder::from_config(config).connect().await
    }

    /// A [`ClientBuilder`], to configure a client in code (host-name seeds, certificates
    /// from memory).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with checked settings and a loaded identity.
    pub(crate) async fn connect_with(
        settings: Settings,
        identity: TlsIdentity,
    ) -> Result<Client, ClientError> {
        // Frames as large as the largest object any node may store, plus its envelope:
        // a node never sends an answer this client cannot receive (nodes refuse
        // `limits.max_object_bytes` above `MAX_OBJECT_BYTES`).
        let transport = TransportConfig {
            connect_timeout: settings.connect_timeout,
            max_frame_bytes: shoal_proto::MAX_FRAME_BYTES,
            ..TransportConfig::default()
        };
        let endpoint = Endpoint::client(&identity, transport)?;
        let wire = Wire::new(endpoint.clone(), settings.frames_per_node);
        let (mut tried, mut last) = (Vec::new(), None);
        let seeds = resolve_seeds(&settings.seeds, settings.connect_timeout, &mut last).await;
        let down = Arc::new(DownList::default());
        let info = match fetch_cluster_info(
            &wire,
            &down,
            settings.race_delay,
            seeds,
            settings.request_timeout,
            &mut tried,
            &mut last,
        )
        .await
        {
            Ok(info) => info,
            Err(e) => {
                endpoint.close().await;
                return Err(e);
            }
        };
        debug!(
            ring_version = info.ring.version(),
            layout_version = info.layout_version,
            members = info.members.len(),
            "connected to the cluster"
        );
        let jitter = Jitter::new(settings.retry.jitter_seed);
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint,
                wire,
                settings,
                view: RwLock::new(Arc::new(View::new(info))),
                down,
                jitter,
                turn: AtomicUsize::new(0),
                layout_refresh: cluster::RefreshGate::default(),
                background_repairs: Arc::default(),
            }),
        })
    }

    /// Reads `key` with the cluster's default quorum and timeout: its sibling values and
    /// the context to write with next. [`get_with`](Client::get_with) sets options.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<GetResult, ClientError> {
        self.get_opts(key.as_ref(), ReadOptions::default()).await
    }

    /// A read with options: `client.get_with(key).r(3).send().await`.
    pub fn get_with(&self, key: impl AsRef<[u8]>) -> Get<'_> {
        Get::new(self, key.as_ref().to_vec())
    }

    /// Writes `value` under `key` without a context (it becomes a sibling of whatever the
    /// key holds) and the cluster's default quorum. Returns the write's context.
    /// [`put_with`](Client::put_with) sets a context and options.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Context, ClientError> {
        self.put_opts(key.as_ref(), value.into(), None, WriteOptions::default())
            .await
    }

    /// A write with a context and options:
    /// `client.put_with(key, value).context(&read.context).w(2).send().await`.
    pub fn put_with(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) -> Put<'_> {
        Put::new(self, key.as_ref().to_vec(), value.into())
    }

    /// Deletes every value of `key` the coordinator's read finds (see
    /// [`delete_with`](Client::delete_with) for the semantics).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<Context, ClientError> {
        self.delete_opts(key.as_ref(), None, WriteOptions::default())
            .await
    }

    /// A delete with a context and options:
    /// `client.delete_with(key).context(&read.context).send().await`.
    ///
    /// Without a context (or with an empty one) the coordinator first reads the key at the
    /// cluster's R and PR, as Riak does, and deletes exactly the values that read found;
    /// if it found none, nothing is written. A put concurrent with the delete is not
    /// covered and stays, as a sibling of the tombstone. The whole call, read included,
    /// has one timeout. If the read cannot meet its quorum the delete fails with that
    /// error ([`ClientError::Unavailable`], or [`ClientError::Timeout`]) and nothing was
    /// written; a `Timeout` after the read leaves the outcome unknown, as for any write.
    pub fn delete_with(&self, key: impl AsRef<[u8]>) -> Delete<'_> {
        Delete::new(self, key.as_ref().to_vec())
    }

    pub(crate) async fn get_opts(
        &self,
        key: &[u8],
        opts: ReadOptions,
    ) -> Result<GetResult, ClientError> {
        let start = Instant::now();
        let result = async {
            validate_key(key)?;
            check_timeout(opts.timeout)?;
            let response = match self.direct_read(key, &opts).await {
                Some(reply) => ClientResponse::Get(reply),
                None => {
                    let request = ClientRequest::Get {
                        key: key.to_vec(),
                        options: opts.to_wire(),
                    };
                    self.call_retrying(request, Route::Key(key), self.wait(opts.timeout))
                        .await?
                }
            };
            match response {
                ClientResponse::Get(reply) => Ok(GetResult {
                    found: reply.found,
                    written_at: write_times(&reply.values, reply.written_at)?,
                    values: reply.values,
                    context: Context::from(reply.context),
                }),
                other => Err(unexpected("get", &other)),
            }
        }
        .await;
        record("get", start, &result);
        result
    }

    pub(crate) async fn put_opts(
        &self,
        key: &[u8],
        value: Vec<u8>,
        context: Option<&Context>,
        opts: WriteOptions,
    ) -> Result<Context, ClientError> {
        let start = Instant::now();
        let result = async {
            validate_key(key)?;
            check_timeout(opts.timeout)?;
            let request = ClientRequest::Put {
                key: key.to_vec(),
                value,
                context: context.map(|c| c.as_causal().clone()),
                options: opts.to_wire(),
            };
            match self
                .call_retrying(request, Route::Key(key), self.wait(opts.timeout))
                .await?
            {
                ClientResponse::Put(reply) => Ok(Context::from(reply.context)),
                other => Err(unexpected("put", &other)),
            }
        }
        .await;
        record("put", start, &result);
        result
    }

    pub(crate) async fn delete_opts(
        &self,
        key: &[u8],
        context: Option<&Context>,
        opts: WriteOptions,
    ) -> Result<Context, ClientError> {
        let start = Instant::now();
        let result = async {
            validate_key(key)?;
            check_timeout(opts.timeout)?;
            let request = ClientRequest::Delete {
                key: key.to_vec(),
                context: context.map(|c| c.as_causal().clone()),
                options: opts.to_wire(),
            };
            match self
                .call_retrying(request, Route::Key(key), self.wait(opts.timeout))
                .await?
            {
                ClientResponse::Delete(reply) => Ok(Context::from(reply.context)),
                other => Err(unexpected("delete", &other)),
            }
        }
        .await;
        record("delete", start, &result);
        result
    }

    /// Members, their state, partitions owned and pending hints, as `node` sees them (or
    /// the first node that answers, when `None`).
    pub async fn status(&self, node: Option<&NodeId>) -> Result<StatusReport, ClientError> {
        self.node_query("status", ClientRequest::Status, node, |r| match r {
            ClientResponse::Status(report) => Ok(report),
            other => Err(unexpected("status", &other)),
        })
        .await
    }

    /// Anti-entropy state of the partitions one node replicates (its tree roots, key
    /// counts and last exchanges), from `node` or the first reachable one.
    pub async fn aae_status(&self, node: Option<&NodeId>) -> Result<AaeReport, ClientError> {
        self.node_query("aae_status", ClientRequest::AaeStatus, node, |r| match r {
            ClientResponse::AaeStatus(report) => Ok(report),
            other => Err(unexpected("aae_status", &other)),
        })
        .await
    }

    /// Sends an unkeyed request to `node` (or the first node that answers), turns the
    /// answer into a result with `pick`, and records the call under `op`.
    async fn node_query<T>(
        &self,
        op: &'static str,
        request: ClientRequest,
        node: Option<&NodeId>,
        pick: impl FnOnce(ClientResponse) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let start = Instant::now();
        let route = match node {
            Some(id) => Route::Node(id),
            None => Route::Any,
        };
        let wait = self.inner.settings.request_timeout;
        let result = self.call(request, route, wait).await.and_then(pick);
        record(op, start, &result);
        result
    }

    /// The cluster's shape as this client last learned it (ring, member addresses, N and
    /// the default quorums).
    pub async fn cluster_info(&self) -> ClusterInfo {
        self.view().info.clone()
    }

    /// Asks the cluster for its current shape (the members first, then the seeds) and
    /// routes by it from now on. A ring older than the one known is not taken.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let start = Instant::now();
        let (mut tried, mut last) = (Vec::new(), None);
        let result = self.refresh_skipping(&mut tried, &mut last).await;
        record("cluster_info", start, &result);
        result
    }

    /// Closes every connection. Calls made afterwards fail.
    pub async fn close(&self) {
        self.inner.endpoint.close().await;
    }

    fn view(&self) -> Arc<View> {
        self.inner
            .view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How long to wait for a keyed request's answer.
    fn wait(&self, timeout: Option<Duration>) -> Duration {
        timeout
            .unwrap_or(self.inner.settings.request_timeout)
            .saturating_add(RESPONSE_MARGIN)
    }

    /// Re-reads the cluster info from the members and seeds not in `tried` (adding those
    /// it tries, and the last transport failure to `last`), and installs it unless its
    /// layout (or, at the same layout version, its ring) is older than the current one.
    async fn refresh_skipping(
        &self,
        tried: &mut Vec<SocketAddr>,
        last: &mut Option<String>,
    ) -> Result<(), ClientError> {
        let current = self.view();
        let mut targets = current.any_order();
        let settings = &self.inner.settings;
        for seed in resolve_seeds(&settings.seeds, settings.connect_timeout, last).await {
            if !targets.iter().any(|t| t.addr == seed.addr) {
                targets.push(seed);
            }
        }
        let skip = tried.clone();
        let targets = self.inner.down.order(targets, &skip, Instant::now());
        let info = fetch_cluster_info(
            &self.inner.wire,
            &self.inner.down,
            self.inner.settings.race_delay,
            targets,
            self.inner.settings.request_timeout,
            tried,
            last,
        )
        .await?;
        let mut view = self.inner.view.write().unwrap_or_else(|e| e.into_inner());
        // Newer by layout version first: a node of a release without layouts reports 0.
        let newer = |i: &ClusterInfo| (i.layout_version, i.ring.version());
        if newer(&info) >= newer(&view.info) {
            debug!(
                layout_version = info.layout_version,
                ring_version = info.ring.version(),
                "cluster info refreshed"
            );
            *view = Arc::new(View::new(info));
        }
        Ok(())
    }

    /// The address a request for `key` tries first (None for an invalid key or an empty
    /// view), for grouping batches by coordinator.
    pub(crate) fn first_choice(&self, key: &[u8]) -> Option<SocketAddr> {
        if validate_key(key).is_err() {
            return None;
        }
        let targets = self.view().keyed_order(key);
        self.inner
            .down
            .order(targets, &[], Instant::now())
            .first()
            .map(|t| t.addr)
    }

    /// Reads, writes and deletes waiting for a frame to their node (requests beyond
    /// [`ClientConfig::frames_per_node`] frames in flight to it, which go together in
    /// the next batch frame); also exported as the gauge `shoal_client_waiting_requests`.
    pub fn waiting_requests(&self) -> usize {
        self.inner.wire.waiting()
    }

    /// The jittered wait before retry number `retry` (0 first), by the retry policy.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        self.inner
            .settings
            .retry
            .delay(retry, self.inner.jitter.next())
    }

    /// [`call`](Client::call), tried again as the configured
    /// [`RetryPolicy`](crate::RetryPolicy) allows, after a jittered exponential wait.
    async fn call_retrying(
        &self,
        request: ClientRequest,
        route: Route<'_>,
        wait: Duration,
    ) -> Result<ClientResponse, ClientError> {
        let op = request.op_name();
        let write = is_write(&request);
        let payload = self.encode(request)?;
        let policy = &self.inner.settings.retry;
        let mut attempt = 1;
        loop {
            match self.call_encoded(&payload, write, route, wait).await {
                Err(e) if policy.should_retry(&e, attempt, write) => {
                    let delay = self.backoff(attempt - 1);
                    debug!(op, error = %e, attempt, ?delay, "retrying");
                    metrics::counter!("shoal_client_retries_total", "op" => op, "reason" => e.label())
                        .increment(1);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Encodes a request and refuses it if it does not fit one frame.
    fn encode(&self, request: ClientRequest) -> Result<Vec<u8>, ClientError> {
        let value_len = match &request {
            ClientRequest::Put { value, .. } => Some(value.len()),
            _ => None,
        };
        let payload = encode_request(&Request::Client(request));
        check_frame(
            payload.len(),
            self.inner.endpoint.config().max_frame_bytes,
            value_len,
        )?;
        Ok(payload)
    }

    /// Sends `request` along `route` until a node answers.
    ///
    /// A node that certainly did not get the request (connection refused, handshake
    /// failed, wrong node at that address) is marked down for a moment and the next one is
    /// tried; when every known node failed, the cluster info is refreshed once and the
    /// nodes not yet tried are. A request that may have reached a node (timeout, connection
    /// lost) ends the call with [`ClientError::Transport`].
    async fn call(
        &self,
        request: ClientRequest,
        route: Route<'_>,
        wait: Duration,
    ) -> Result<ClientResponse, ClientError> {
        let write = is_write(&request);
        let payload = self.encode(request)?;
        self.call_encoded(&payload, write, route, wait).await
    }

    /// [`call`](Client::call) with the request already encoded.
    async fn call_encoded(
        &self,
        payload: &[u8],
        write: bool,
        route: Route<'_>,
        wait: Duration,
    ) -> Result<ClientResponse, ClientError> {
        // Reads change nothing, so a node that says it is shutting down (and may have
        // dropped the request) can be skipped; a write there has an unknown outcome.
        let read_only = !write;
        if let Route::Node(id) = route {
            if self.view().addr_of(id).is_none() {
                self.refresh().await?;
                if self.view().addr_of(id).is_none() {
                    return Err(ClientError::UnknownNode(id.clone()));
                }
            }
        }
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last: Option<String> = None;
        let mut refreshed = false;
        loop {
            let view = self.view();
            let targets = match &route {
                // Reads spread over the key's replicas (any primary coordinates a read);
                // writes go to the first primary, which orders the key's writes best.
                Route::Key(key) if read_only => {
                    let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
                    view.keyed_order_from(key, turn)
                }
                Route::Key(key) => view.keyed_order(key),
                Route::Any => view.any_order(),
                Route::Node(id) => view
                    .addr_of(id)
                    .map(|addr| {
                        vec![Target {
                            id: Some((*id).clone()),
                            addr,
                        }]
                    })
                    .unwrap_or_default(),
            };
            let mut queue: VecDeque<Target> = self
                .inner
                .down
                .order(targets, &tried, Instant::now())
                .into();
            while tried.len() < MAX_ATTEMPTS_PER_CALL {
                let Some(target) = race_connect(
                    &self.inner.endpoint,
                    &self.inner.down,
                    self.inner.settings.race_delay,
                    &mut queue,
                    &mut tried,
                    &mut last,
                )
                .await
                else {
                    break;
                };
                tried.push(target.addr);
                // Reads, writes and deletes may share a frame with others to their node.
                let batchable = matches!(route, Route::Key(_));
                let attempt = self
                    .attempt(&target, payload, wait, read_only, batchable)
                    .await?;
                if let Attempt::Answer(response, stamp) = &attempt {
                    self.learn_layout(cluster::layout_version_in(response).max(*stamp))
                        .await;
                }
                match attempt {
                    Attempt::Answer(ClientResponse::Error(RequestError::ShuttingDown), _)
                        if read_only =>
                    {
                        self.inner.down.mark(target.addr, Instant::now());
                        last = Some(format!("{} is shutting down", target.addr));
                    }
                    // The node ran nothing and another replica may take it (a candidate,
                    // its copy of the partition being dropped): the next node, a write
                    // too. The node is not down, so it is not marked.
                    Attempt::Answer(ClientResponse::Error(e @ RequestError::Declined(_)), _) => {
                        last = Some(format!("{}: {e}", target.addr));
                    }
                    Attempt::Answer(ClientResponse::Error(e), _) => return Err(e.into()),
                    Attempt::Answer(response, _) => return Ok(response),
                    Attempt::NotDelivered(reason) => last = Some(reason),
                }
            }
            if refreshed || tried.len() >= MAX_ATTEMPTS_PER_CALL {
                break;
            }
            refreshed = true;
            if let Err(e) = self.refresh_skipping(&mut tried, &mut last).await {
                debug!(error = %e, "refreshing cluster info failed");
                break;
            }
        }
        Err(unreachable(tried, last))
    }

    /// One try of one node. A read whose outcome is unknown (the node may be dead with
    /// the connection not yet closed) is safe to send elsewhere, so it counts as not
    /// delivered; a write's never is.
    async fn attempt(
        &self,
        target: &Target,
        payload: &[u8],
        wait: Duration,
        read_only: bool,
        batchable: bool,
    ) -> Result<Attempt, ClientError> {
        match self.inner.wire.send(target, payload, wait, batchable).await {
            Ok((response, stamp)) => {
                self.inner.down.clear(target.addr);
                Ok(Attempt::Answer(response, stamp))
            }
            Err(SendError::Transport(e)) if e.is_not_delivered() || read_only => {
                debug!(addr = %target.addr, error = %e, "node unreachable; trying the next");
                self.inner.down.mark(target.addr, Instant::now());
                Ok(Attempt::NotDelivered(e.to_string()))
            }
            Err(SendError::Transport(e)) => Err(ClientError::Transport(e)),
            Err(SendError::Protocol(m)) => Err(ClientError::Protocol(m)),
        }
    }
}

/// Whether a request changes data (and so must not be sent twice when its outcome is
/// unknown).
fn is_write(request: &ClientRequest) -> bool {
    use shoal_proto::wire::ClusterRequest as C;
    match request {
        ClientRequest::Put { .. } | ClientRequest::Delete { .. } => true,
        // Staging and committing change the cluster's layout.
        ClientRequest::Cluster(c) => !matches!(c, C::Status | C::Plan),
        _ => false,
    }
}

/// The seeds' addresses, in order, without duplicates: addresses as given, host names
/// resolved (each within `timeout`; one that does not resolve is skipped and its error
/// kept in `last`), at most [`MAX_SEEDS`](crate::MAX_SEEDS) addresses per name.
async fn resolve_seeds(
    seeds: &[Seed],
    timeout: Duration,
    last: &mut Option<String>,
) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for seed in seeds {
        let addrs: Vec<SocketAddr> = match seed {
            Seed::Addr(addr) => vec![*addr],
            Seed::Host { host, port } => {
                match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), *port)))
                    .await
                {
                    Ok(Ok(addrs)) => addrs.take(crate::MAX_SEEDS).collect(),
                    Ok(Err(e)) => {
                        debug!(seed = %seed, error = %e, "seed does not resolve");
                        *last = Some(format!("cannot resolve {seed}: {e}"));
                        continue;
                    }
                    Err(_) => {
                        *last = Some(format!("resolving {seed} took more than {timeout:?}"));
                        continue;
                    }
                }
            }
        };
        for addr in addrs {
            if !out.iter().any(|t| t.addr == addr) {
                out.push(Target { id: None, addr });
            }
        }
    }
    out
}

/// Connects to the first target of `queue` that answers, racing: it starts with the
/// first, and while none has connected, starts the next one every `race_delay` (at
/// most [`MAX_RACING`] at once). Nothing is sent: the caller sends the request once,
/// to the winner, whose connection is then cached. Targets whose connection failed
/// are marked down and added to `tried`; the ones still connecting when another won
/// finish in the background (bounded by `connect_timeout`) and are marked down if
/// they fail. `None` when every target failed.
async fn race_connect(
    endpoint: &Endpoint,
    down: &Arc<DownList>,
    delay: Duration,
    queue: &mut VecDeque<Target>,
    tried: &mut Vec<SocketAddr>,
    last: &mut Option<String>,
) -> Option<Target> {
    // The usual case: the first target is connected already; no race to run.
    if queue
        .front()
        .is_some_and(|t| endpoint.is_connected(t.addr, t.id.as_ref()))
    {
        return queue.pop_front();
    }
    let mut racing: JoinSet<(Target, Result<(), TransportError>)> = JoinSet::new();
    loop {
        if racing.len() < MAX_RACING && tried.len() + racing.len() < MAX_ATTEMPTS_PER_CALL {
            if let Some(target) = queue.pop_front() {
                let endpoint = endpoint.clone();
                racing.spawn(async move {
                    let result = endpoint.connect(target.addr, target.id.as_ref()).await;
                    (target, result)
                });
            }
        }
        let can_start_more = !queue.is_empty() && racing.len() < MAX_RACING;
        let finished = if can_start_more {
            tokio::select! {
                done = racing.join_next() => done,
                () = tokio::time::sleep(delay) => {
                    metrics::counter!("shoal_client_connect_races_total").increment(1);
                    continue;
                }
            }
        } else {
            racing.join_next().await
        };
        let Ok((target, result)) = finished? else {
            continue;
        };
        match result {
            Ok(()) => {
                if !racing.is_empty() {
                    let down = down.clone();
                    tokio::spawn(async move {
                        while let Some(done) = racing.join_next().await {
                            if let Ok((t, Err(_))) = done {
                                down.mark(t.addr, Instant::now());
                            }
                        }
                    });
                }
                return Some(target);
            }
            Err(e) => {
                debug!(addr = %target.addr, error = %e, "cannot connect; trying the next");
                down.mark(target.addr, Instant::now());
                tried.push(target.addr);
                *last = Some(e.to_string());
            }
        }
    }
}

/// Asks `targets` for the cluster info, racing their connections as requests do
/// ([`race_connect`]); the first answer wins. Every address
/// that fails is appended to `tried`, and each transport failure replaces `last`. With no
/// answer, the error is the last one a node answered with, or
/// [`ClientError::Unreachable`] when none answered at all.
async fn fetch_cluster_info(
    wire: &Arc<Wire>,
    down: &Arc<DownList>,
    race_delay: Duration,
    targets: Vec<Target>,
    wait: Duration,
    tried: &mut Vec<SocketAddr>,
    last: &mut Option<String>,
) -> Result<ClusterInfo, ClientError> {
    let payload = encode_request(&Request::Client(ClientRequest::ClusterInfo));
    let mut answered: Option<ClientError> = None;
    let mut queue: VecDeque<Target> = targets.into();
    while tried.len() < MAX_ATTEMPTS_PER_CALL {
        let Some(target) =
            race_connect(wire.endpoint(), down, race_delay, &mut queue, tried, last).await
        else {
            break;
        };
        tried.push(target.addr);
        match wire
            .send(&target, &payload, wait, false)
            .await
            .map(|(r, _)| r)
        {
            Ok(ClientResponse::ClusterInfo(info)) => match check_info(&info) {
                Ok(()) => {
                    // It answered: it is not a failed address, and may serve the retry.
                    tried.pop();
                    down.clear(target.addr);
                    return Ok(info);
                }
                Err(problem) => {
                    answered = Some(ClientError::Protocol(format!(
                        "{} sent unusable cluster info: {problem}",
                        target.addr
                    )))
                }
            },
            Ok(ClientResponse::Error(e)) => answered = Some(e.into()),
            Ok(other) => answered = Some(unexpected("cluster_info", &other)),
            Err(SendError::Transport(e)) => {
                // Asking for the cluster info changes nothing, so any failure moves on.
                debug!(addr = %target.addr, error = %e, "cluster info not available there");
                if e.is_not_delivered() {
                    down.mark(target.addr, Instant::now());
                }
                *last = Some(e.to_string());
            }
            Err(SendError::Protocol(m)) => answered = Some(ClientError::Protocol(m)),
        }
    }
    Err(answered.unwrap_or_else(|| unreachable(tried.clone(), last.clone())))
}

fn unreachable(tried: Vec<SocketAddr>, last: Option<String>) -> ClientError {
    ClientError::Unreachable {
        tried,
        last: last.unwrap_or_else(|| "no node to try".to_owned()),
    }
}

/// Cluster info the client can route by: N positive and every ring member addressable.
fn check_info(info: &ClusterInfo) -> Result<(), String> {
    if info.n == 0 {
        return Err("n is 0".into());
    }
    if info.members.is_empty() {
        return Err("no member addresses".into());
    }
    Ok(())
}

/// Refuses a request larger than one frame before anything is sent: for a put the value
/// is too large (the limit given is what fits with this key and context), for anything
/// else the context is.
fn check_frame(len: usize, max: usize, value_len: Option<usize>) -> Result<(), ClientError> {
    if len <= max {
        return Ok(());
    }
    Err(match value_len {
        Some(value) => ClientError::ValueTooLarge {
            len: value,
            max: value.saturating_sub(len - max),
        },
        None => ClientError::InvalidContext(format!(
            "the request is {len} bytes with its context, more than the {max}-byte frame limit"
        )),
    })
}

fn unexpected(op: &str, response: &ClientResponse) -> ClientError {
    let kind = match response {
        ClientResponse::Get(_) => "get",
        ClientResponse::Put(_) => "put",
        ClientResponse::Delete(_) => "delete",
        ClientResponse::ClusterInfo(_) => "cluster_info",
        ClientResponse::Status(_) => "status",
        ClientResponse::AaeStatus(_) => "aae_status",
        ClientResponse::Backup(_) => "backup",
        ClientResponse::Cluster(_) => "cluster",
        ClientResponse::Error(_) => "error",
        ClientResponse::Batch(_) => "batch",
        ClientResponse::Replica(_) => "replica",
    };
    ClientError::Protocol(format!("expected a {op} answer, got a {kind} answer"))
}

/// Counts a finished call and its duration.
fn record<T>(op: &'static str, start: Instant, result: &Result<T, ClientError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    metrics::counter!("shoal_client_requests_total", "op" => op, "result" => outcome).increment(1);
    metrics::histogram!("shoal_client_request_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_put_reports_the_value_size_that_would_fit() {
        assert!(check_frame(100, 100, Some(90)).is_ok());
        match check_frame(110, 100, Some(95)) {
            Err(ClientError::ValueTooLarge { len: 95, max: 85 }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_frame(110, 100, None),
            Err(ClientError::InvalidContext(_))
        ));
    }

    #[test]
    fn client_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Client>();
    }
}
