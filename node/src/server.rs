//! The tokio driver: it owns one [`Engine`], feeds it requests, transport outcomes,
//! storage results and timeouts, and carries out the commands it emits.
//!
//! ```text
//!  QUIC streams ──► NodeHandler ──(bounded queue)──► driver task ──► Engine (proto)
//!                        ▲                              │  ▲
//!                        └──── oneshot answer ◄─────────┤  │ completions (responses,
//!                                                       │  │ storage results)
//!                     peer requests (tokio tasks) ◄─────┤  │
//!                     storage ops (worker threads) ◄────┘──┘
//! ```
//!
//! Bounds: the request queue (`limits.max_queued_requests`; when full a request is
//! answered `Overloaded` at once), the engine's in-flight limit, the transport's frame and
//! stream limits. Completions are not bounded separately: there is exactly one per
//! command, and commands are bounded by the admitted requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use shoal_proto::wire::PeerResponse;
use shoal_proto::wire::{
    decode_request, decode_response, encode_request, encode_response, ClientRequest,
    ClientResponse, PeerRequest, Request, Response,
};
use shoal_proto::{
    Command, Engine, InboundId, RequestError, RequestId, SendError, Sender, StorageOp,
    StorageReply, Time,
};
use shoal_ring::NodeId;
use shoal_storage::{RocksOptions, RocksStorage, Storage};
use shoal_transport::{Endpoint, Handler, PeerRole, TlsIdentity, TransportConfig, TransportError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::executor::Executor;

/// Extra frame room beyond the largest object, for the message around it.
const FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

/// Wall-clock time for the engine, never going backwards.
#[derive(Debug)]
struct Clock {
    last: Time,
}

impl Clock {
    fn now(&mut self) -> Time {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let t = Time::from_duration(wall);
        if t > self.last {
            self.last = t;
        }
        self.last
    }
}

struct Inbound {
    from: Sender,
    request: Request,
    reply: oneshot::Sender<Response>,
}

enum Completion {
    Response {
        id: RequestId,
        result: Result<PeerResponse, SendError>,
    },
    Storage {
        id: RequestId,
        result: Result<StorageReply, String>,
    },
}

/// A running node. Dropping it does not stop it: call [`RunningNode::shutdown`].
pub struct RunningNode {
    id: NodeId,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    driver: JoinHandle<()>,
    serve: JoinHandle<()>,
    workers: Vec<std::thread::JoinHandle<()>>,
    endpoint: Endpoint,
    storage: Arc<RocksStorage>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RunningNode {
    /// The node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The address the node serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop serving, finish the driver, flush and close storage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        info!(node = %self.id, "shutting down");
        let _ = self.shutdown.send(true);
        self.endpoint.close().await;
        self.serve.abort();
        let _ = self.serve.await;
        let _ = self.driver.await;
        let workers = self.workers;
        tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await
        .context("joining storage workers")?;
        self.storage.close().context("closing storage")?;
        info!(node = %self.id, "stopped");
        Ok(())
    }
}

/// Start a node from its config: open storage, bind QUIC, start the engine.
pub async fn start(cfg: NodeConfig) -> anyhow::Result<RunningNode> {
    let data_dir = cfg.resolve(&cfg.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let options = RocksOptions {
        durability: cfg.storage.durability,
        block_cache_bytes: cfg.storage.block_cache_bytes,
        write_buffer_bytes: cfg.storage.write_buffer_bytes,
        ..RocksOptions::default()
    };
    let storage = Arc::new(
        RocksStorage::open(&data_dir, options)
            .with_context(|| format!("opening storage in {}", data_dir.display()))?,
    );
    let executor = Arc::new(
        Executor::open(storage.clone(), rand::random::<u64>).context("opening the executor")?,
    );
    info!(node = %cfg.id, actor = %executor.actor(), "storage open");

    let identity = TlsIdentity::load(
        &cfg.resolve(&cfg.tls.ca),
        &cfg.resolve(&cfg.tls.cert),
        &cfg.resolve(&cfg.tls.key),
    )
    .context("loading TLS files")?;
    match identity.role() {
        PeerRole::Node(id) if *id == cfg.id => {}
        other => bail!(
            "tls.cert is for {other:?}, but this node is {}: issue it with `shoal cert node --id {}`",
            cfg.id,
            cfg.id
        ),
    }
    let transport = TransportConfig {
        max_frame_bytes: cfg.limits.max_object_bytes + FRAME_OVERHEAD_BYTES,
        ..TransportConfig::default()
    };
    let endpoint = Endpoint::server(cfg.listen, &identity, transport)
        .with_context(|| format!("binding {}", cfg.listen))?;
    let local_addr = endpoint.local_addr();

    let ring = cfg.ring()?;
    let addresses: Vec<(NodeId, SocketAddr)> =
        cfg.seeds.iter().map(|s| (s.id.clone(), s.addr)).collect();
    let mut clock = Clock { last: Time::ZERO };
    let engine = Engine::new(
        cfg.engine_config(),
        cfg.id.clone(),
        ring,
        addresses.clone(),
        rand::random(),
        clock.now(),
    )?;

    let (input_tx, input_rx) = mpsc::channel::<Inbound>(cfg.limits.max_queued_requests);
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Completion>();
    let (storage_tx, storage_rx) = crossbeam::channel::unbounded::<(RequestId, StorageOp)>();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut workers = Vec::new();
    for i in 0..cfg.limits.storage_threads {
        let rx = storage_rx.clone();
        let done = done_tx.clone();
        let exec = executor.clone();
        let handle = std::thread::Builder::new()
            .name(format!("shoal-storage-{i}"))
            .spawn(move || storage_worker(exec, rx, done))
            .context("spawning a storage thread")?;
        workers.push(handle);
    }

    let driver = Driver {
        engine,
        clock,
        inbound: HashMap::new(),
        next_inbound: 1,
        endpoint: endpoint.clone(),
        addrs: addresses.into_iter().collect(),
        storage_tx,
        done_tx,
    };
    let driver = tokio::spawn(driver.run(input_rx, done_rx, shutdown_rx));
    let engine_cfg = cfg.engine_config();
    let handler = Arc::new(NodeHandler {
        input: input_tx,
        default_timeout: engine_cfg.replication.request_timeout,
        margin: engine_cfg.replication.rpc_timeout * 3,
    });
    let serve = endpoint.serve(handler);
    tokio::spawn(report_storage_stats(
        storage.clone(),
        shutdown_tx.subscribe(),
    ));
    tokio::spawn(verify_trees(
        executor.clone(),
        cfg.aae.verify_interval,
        shutdown_tx.subscribe(),
    ));
    info!(node = %cfg.id, addr = %local_addr, "serving");
    Ok(RunningNode {
        id: cfg.id.clone(),
        local_addr,
        shutdown: shutdown_tx,
        driver,
        serve,
        workers,
        endpoint,
        storage,
    })
}

/// How often RocksDB's statistics are published as gauges.
const STORAGE_STATS_INTERVAL: Duration = Duration::from_secs(5);

/// Publish the storage engine's statistics as gauges until shutdown.
async fn report_storage_stats(storage: Arc<RocksStorage>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(STORAGE_STATS_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let s = storage.clone();
        let Ok(stats) = tokio::task::spawn_blocking(move || s.stats()).await else {
            return;
        };
        metrics::gauge!("shoal_rocksdb_live_data_bytes").set(stats.live_data_bytes as f64);
        metrics::gauge!("shoal_rocksdb_pending_compaction_bytes")
            .set(stats.pending_compaction_bytes as f64);
        metrics::gauge!("shoal_rocksdb_block_cache_usage_bytes")
            .set(stats.block_cache_usage_bytes as f64);
        metrics::gauge!("shoal_rocksdb_memtable_bytes").set(stats.memtable_bytes as f64);
        metrics::gauge!("shoal_rocksdb_estimated_keys").set(stats.estimated_keys as f64);
    }
}

/// Rebuild every Merkle tree from storage now and then, and check it against the
/// incremental one (a mismatch is replaced, logged and counted).
async fn verify_trees<S: Storage>(
    executor: Arc<Executor<S>>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    // The first tick of an interval fires at once; the trees were just built at open.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let exec = executor.clone();
        match tokio::task::spawn_blocking(move || exec.verify_trees()).await {
            Ok(Ok(mismatches)) => {
                for m in mismatches {
                    warn!(partition = %m.partition, incremental = m.incremental_root, rebuilt = m.rebuilt_root,
                        "Merkle tree did not match storage; replaced by the rebuilt one");
                }
            }
            Ok(Err(e)) => warn!("verifying Merkle trees failed: {e}"),
            Err(_) => return,
        }
    }
}

fn storage_worker<S: Storage>(
    exec: Arc<Executor<S>>,
    rx: crossbeam::channel::Receiver<(RequestId, StorageOp)>,
    done: mpsc::UnboundedSender<Completion>,
) {
    while let Ok((id, op)) = rx.recv() {
        let name = op.op_name();
        let start = Instant::now();
        let result = exec.execute(op).map_err(|e| e.to_string());
        metrics::histogram!("shoal_executor_op_duration_seconds", "op" => name)
            .record(start.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("shoal_executor_errors_total", "op" => name).increment(1);
        }
        if done.send(Completion::Storage { id, result }).is_err() {
            return;
        }
    }
}

struct Driver {
    engine: Engine,
    clock: Clock,
    inbound: HashMap<u64, oneshot::Sender<Response>>,
    next_inbound: u64,
    endpoint: Endpoint,
    addrs: HashMap<NodeId, SocketAddr>,
    storage_tx: crossbeam::channel::Sender<(RequestId, StorageOp)>,
    done_tx: mpsc::UnboundedSender<Completion>,
}

impl Driver {
    async fn run(
        mut self,
        mut input: mpsc::Receiver<Inbound>,
        mut done: mpsc::UnboundedReceiver<Completion>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let wait = match self.engine.poll_timeout() {
                Some(at) => at.saturating_since(self.clock.now()),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(c) = done.recv() => self.complete(c),
                Some(i) = input.recv() => self.admit(i),
                _ = tokio::time::sleep(wait) => {
                    let now = self.clock.now();
                    self.engine.handle_timeout(now);
                }
            }
            self.drain();
            metrics::gauge!("shoal_driver_inflight_requests").set(self.engine.inflight() as f64);
            metrics::gauge!("shoal_driver_pending_commands")
                .set(self.engine.pending_commands() as f64);
            metrics::gauge!("shoal_driver_queue_depth", "queue" => "storage")
                .set(self.storage_tx.len() as f64);
        }
    }

    fn admit(&mut self, i: Inbound) {
        let id = self.next_inbound;
        self.next_inbound += 1;
        self.inbound.insert(id, i.reply);
        let now = self.clock.now();
        self.engine
            .handle_request(now, InboundId(id), i.from, i.request);
    }

    fn complete(&mut self, c: Completion) {
        let now = self.clock.now();
        match c {
            Completion::Response { id, result } => self.engine.handle_response(now, id, result),
            Completion::Storage { id, result } => self.engine.handle_storage(now, id, result),
        }
    }

    fn drain(&mut self) {
        while let Some(cmd) = self.engine.poll_command() {
            match cmd {
                Command::Respond { id, response } => {
                    if let Some(tx) = self.inbound.remove(&id.0) {
                        let _ = tx.send(response);
                    }
                }
                Command::Storage { id, op } => {
                    if let Err(e) = self.storage_tx.send((id, op)) {
                        let (id, _) = e.into_inner();
                        let _ = self.done_tx.send(Completion::Storage {
                            id,
                            result: Err("storage workers stopped".into()),
                        });
                    }
                }
                Command::Send {
                    id,
                    to,
                    request,
                    timeout,
                } => {
                    let Some(addr) = self.addrs.get(&to).copied() else {
                        let _ = self.done_tx.send(Completion::Response {
                            id,
                            result: Err(SendError::Unreachable(format!("no address for {to}"))),
                        });
                        continue;
                    };
                    let endpoint = self.endpoint.clone();
                    let done = self.done_tx.clone();
                    let op = request.op_name();
                    let payload = encode_request(&Request::Peer(request));
                    tokio::spawn(async move {
                        let result = match endpoint.request(addr, Some(&to), payload, timeout).await
                        {
                            Ok(bytes) => match decode_response(&bytes) {
                                Ok(Response::Peer(p)) => Ok(p),
                                Ok(Response::Error(e)) => Ok(PeerResponse::Error(e)),
                                // The answer to a forwarded client request.
                                Ok(Response::Client(c)) => Ok(PeerResponse::Client(c)),
                                Err(e) => Err(SendError::Invalid(e.to_string())),
                            },
                            Err(TransportError::Timeout { .. }) => Err(SendError::Timeout),
                            Err(e) => Err(SendError::Unreachable(e.to_string())),
                        };
                        let label = match &result {
                            Ok(_) => "ok",
                            Err(SendError::Timeout) => "timeout",
                            Err(SendError::Unreachable(_)) => "unreachable",
                            Err(SendError::Invalid(_)) => "invalid",
                        };
                        metrics::counter!("shoal_peer_requests_total", "op" => op, "result" => label)
                            .increment(1);
                        let _ = done.send(Completion::Response { id, result });
                    });
                }
            }
        }
    }
}

/// Answers QUIC requests by queueing them for the driver.
struct NodeHandler {
    input: mpsc::Sender<Inbound>,
    default_timeout: Duration,
    margin: Duration,
}

impl NodeHandler {
    /// The engine always answers; this backstop (the request's own timeout plus room for
    /// a forward hop) only makes sure a stream can never hang.
    fn max_wait(&self, request: &Request) -> Duration {
        let own = match request {
            Request::Client(ClientRequest::Get { options, .. }) => options.timeout,
            Request::Client(
                ClientRequest::Put { options, .. } | ClientRequest::Delete { options, .. },
            ) => options.timeout,
            Request::Peer(PeerRequest::Forward(ClientRequest::Get { options, .. })) => {
                options.timeout
            }
            Request::Peer(PeerRequest::Forward(
                ClientRequest::Put { options, .. } | ClientRequest::Delete { options, .. },
            )) => options.timeout,
            _ => None,
        };
        own.unwrap_or(self.default_timeout)
            .max(self.default_timeout)
            + self.margin
    }
}

fn result_label(resp: &Response) -> &'static str {
    match resp {
        Response::Client(ClientResponse::Error(e)) | Response::Error(e) => error_label(e),
        Response::Peer(PeerResponse::Error(e)) => error_label(e),
        _ => "ok",
    }
}

fn error_label(e: &RequestError) -> &'static str {
    match e {
        RequestError::Unavailable { .. } => "unavailable",
        RequestError::Timeout { .. } => "timeout",
        RequestError::Overloaded => "overloaded",
        RequestError::EmptyKey
        | RequestError::KeyTooLarge { .. }
        | RequestError::ValueTooLarge { .. }
        | RequestError::ObjectTooLarge { .. }
        | RequestError::InvalidOptions(_)
        | RequestError::InvalidContext(_)
        | RequestError::Malformed(_)
        | RequestError::UnsupportedVersion { .. } => "invalid",
        RequestError::NotAllowed(_) | RequestError::UnknownNode(_) => "refused",
        RequestError::Storage(_) => "storage_error",
        RequestError::ShuttingDown => "shutting_down",
        RequestError::Internal(_) => "internal_error",
    }
}

impl Handler for NodeHandler {
    async fn handle(&self, peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        let start = Instant::now();
        let request = match decode_request(&request) {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!("shoal_requests_total", "op" => "malformed", "result" => "invalid")
                    .increment(1);
                return encode_response(&Response::Error(e.into()));
            }
        };
        let (op, client) = match &request {
            Request::Client(c) => (c.op_name(), true),
            Request::Peer(p) => (p.op_name(), false),
        };
        let from = match peer {
            PeerRole::Node(id) => Sender::Node(id),
            PeerRole::Client(name) => Sender::Client(name),
        };
        let max_wait = self.max_wait(&request);
        let (tx, rx) = oneshot::channel();
        let response = match self.input.try_send(Inbound {
            from,
            request,
            reply: tx,
        }) {
            Err(mpsc::error::TrySendError::Full(_)) => Response::Error(RequestError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Response::Error(RequestError::ShuttingDown)
            }
            Ok(()) => match tokio::time::timeout(max_wait, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Response::Error(RequestError::ShuttingDown),
                Err(_) => {
                    warn!(op, "engine gave no answer in time");
                    Response::Error(RequestError::Internal(format!(
                        "no answer within {max_wait:?}"
                    )))
                }
            },
        };
        if client {
            let result = result_label(&response);
            metrics::counter!("shoal_requests_total", "op" => op, "result" => result).increment(1);
            metrics::histogram!("shoal_request_duration_seconds", "op" => op)
                .record(start.elapsed().as_secs_f64());
        } else {
            metrics::counter!("shoal_peer_requests_served_total", "op" => op).increment(1);
            metrics::histogram!("shoal_peer_request_duration_seconds", "op" => op)
                .record(start.elapsed().as_secs_f64());
        }
        encode_response(&response)
    }
}
