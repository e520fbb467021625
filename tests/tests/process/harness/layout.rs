//! Layout changes on real processes (issue 9): one node's own view of the layout (asked
//! of that node, not routed), the layout a stopped node stored, what its store holds for
//! the owners of that layout, and a client load that records what was acknowledged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_client::{Client, NodeId};
use shoal_executor::Executor;
use shoal_proto::layout::LayoutHistory;
use shoal_proto::wire::{
    decode_response, encode_request, ClientRequest, ClientResponse, ClusterReply, ClusterRequest,
    ClusterStatus, MemberRole, Request, Response,
};
use shoal_proto::{StorageOp, StorageReply};
use shoal_storage::{RocksOptions, RocksStorage, Storage};
use shoal_transport::{Endpoint, TransportConfig};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{wait_until, Cluster};

/// How long one request to one chosen node may take in these helpers: a poll of a node
/// that is down or paused costs little of a wait's deadline.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends one client request to the node at `addr` over `endpoint` (a
/// [`Cluster::raw_client`]) and returns its answer, or what went wrong.
pub async fn try_ask(
    endpoint: &Endpoint,
    addr: SocketAddr,
    req: ClientRequest,
    timeout: Duration,
) -> Result<ClientResponse, String> {
    let bytes = endpoint
        .request(addr, None, encode_request(&Request::Client(req)), timeout)
        .await
        .map_err(|e| format!("request to {addr}: {e}"))?;
    match decode_response(&bytes)
        .map_err(|e| format!("decoding: {e}"))?
        .unstamped()
    {
        Response::Client(c) => Ok(c),
        other => Err(format!("expected a client response, got {other:?}")),
    }
}

/// Node-by-node layout views and changes of a [`Cluster`], through a raw endpoint so that
/// each request reaches the node named (the SDK sends cluster calls to the first member).
pub struct LayoutProbe {
    endpoint: Endpoint,
}

impl LayoutProbe {
    /// A probe holding the cluster's client certificate.
    pub fn new(cluster: &Cluster) -> LayoutProbe {
        LayoutProbe {
            endpoint: cluster.raw_client(TransportConfig::default()),
        }
    }

    /// Sends a cluster request to node `i` and returns its answer.
    pub async fn cluster(
        &self,
        cluster: &Cluster,
        i: usize,
        req: ClusterRequest,
    ) -> Result<ClientResponse, String> {
        let addr = cluster.nodes()[i].addr;
        try_ask(
            &self.endpoint,
            addr,
            ClientRequest::Cluster(req),
            ASK_TIMEOUT,
        )
        .await
    }

    /// Sends a client request to node `i` and returns its answer.
    pub async fn client(
        &self,
        cluster: &Cluster,
        i: usize,
        req: ClientRequest,
        timeout: Duration,
    ) -> Result<ClientResponse, String> {
        try_ask(&self.endpoint, cluster.nodes()[i].addr, req, timeout).await
    }

    /// Node `i`'s own view of the layout.
    pub async fn status(&self, cluster: &Cluster, i: usize) -> Result<ClusterStatus, String> {
        match self.cluster(cluster, i, ClusterRequest::Status).await? {
            ClientResponse::Cluster(ClusterReply::Status(s)) => Ok(s),
            other => Err(format!("node {i} answered status with {other:?}")),
        }
    }

    /// Waits until node `i` lists node `candidate` as a candidate (it said hello).
    pub async fn wait_candidate(&self, cluster: &Cluster, i: usize, candidate: &NodeId) {
        wait_until(
            &format!("{candidate} to be a candidate at node {i}"),
            CHANGE_TIMEOUT,
            || async move {
                let s = self.status(cluster, i).await?;
                let role = s
                    .members
                    .iter()
                    .find(|m| &m.id == candidate)
                    .map(|m| m.role);
                if role == Some(MemberRole::Candidate) {
                    Ok(())
                } else {
                    Err(format!("{candidate} is {role:?}"))
                }
            },
        )
        .await;
    }

    /// Waits until each node of `nodes` is at layout version `version` with no other
    /// version in use (every transfer done, the old owners' barrier passed).
    pub async fn wait_settled(&self, cluster: &Cluster, nodes: &[usize], version: u64) {
        wait_until(
            &format!("nodes {nodes:?} settled on layout version {version}"),
            CHANGE_TIMEOUT,
            || async move {
                for &i in nodes {
                    let s = self.status(cluster, i).await?;
                    if s.version != version || s.versions_in_use != [version] {
                        return Err(format!(
                            "node {i} at {} with versions {:?} in use",
                            s.version, s.versions_in_use
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
    }
}

/// How long a layout change (with its transfers) may take in these tests.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The transfer metrics of node `i`: (keys copied in, partitions pending, running,
/// partitions done). Counters restart at zero with the process.
pub async fn transfer_progress(cluster: &Cluster, i: usize) -> Result<[f64; 4], String> {
    let mut out = [0.0; 4];
    for (slot, name) in [
        "shoal_transfer_keys_total",
        "shoal_transfers_pending",
        "shoal_transfers_running",
        "shoal_transfers_done_total",
    ]
    .iter()
    .enumerate()
    {
        out[slot] = cluster.metric_sum(&[i], name, &[]).await?;
    }
    Ok(out)
}

/// The layout history node `i` (stopped) stored.
pub fn stored_layout(cluster: &Cluster, i: usize) -> LayoutHistory {
    let dir = cluster.data_dir(i);
    let storage = RocksStorage::open(&dir, RocksOptions::default())
        .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()));
    let executor = Executor::open(storage, rand::random::<u64>)
        .unwrap_or_else(|e| panic!("opening the executor on {}: {e}", dir.display()));
    let reply = executor
        .execute(StorageOp::LoadLayout)
        .unwrap_or_else(|e| panic!("loading the layout of node {i}: {e}"));
    executor.storage().close().expect("closing the store");
    match reply {
        StorageReply::Layout(Some(p)) => p.history,
        other => panic!("node {i} stored no layout: {other:?}"),
    }
}

/// With every node stopped: checks that each owner, in the layout node 0 stored (which
/// must be settled: one version in use), stores every pair of `kvs` it owns with exactly
/// its value. Returns the copies checked (N per key).
pub fn assert_owners_store(cluster: &Cluster, n: usize, kvs: &[(String, String)]) -> usize {
    let history = stored_layout(cluster, 0);
    assert_eq!(
        history.versions().len(),
        1,
        "node 0 stored a layout still changing: versions {:?}",
        history
            .versions()
            .iter()
            .map(|l| l.version())
            .collect::<Vec<_>>()
    );
    let ring = history.current().ring().clone();
    let mut checked = 0;
    for i in 0..cluster.len() {
        let id = cluster.id(i);
        let owns = history
            .current()
            .member(&id)
            .is_some_and(|m| ring.owned_count(&m.id) > 0);
        if owns {
            checked += cluster.assert_node_stores(i, &ring, n, kvs);
        }
    }
    assert_eq!(checked, n * kvs.len(), "every key has {n} owners");
    checked
}

/// A client load: puts of new keys `{prefix}-{i}` with W = 2, `parallel` at a time,
/// until stopped (or `max` puts). Records the acknowledged pairs and counts failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    failed: Arc<Mutex<BTreeMap<String, u64>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts the load through `client`.
    pub fn start(client: &Client, prefix: &str, parallel: usize, max: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = (0..parallel)
            .map(|t| {
                let (client, stop) = (client.clone(), stop.clone());
                let (acked, failed) = (acked.clone(), failed.clone());
                let prefix = format!("{prefix}-{t}");
                tokio::spawn(async move {
                    for i in 0..max.div_ceil(parallel) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let (k, v) = (format!("{prefix}-{i:05}"), format!("{prefix}-v-{i:05}"));
                        match client.put_with(&k, v.clone()).w(2).send().await {
                            Ok(_) => acked.lock().expect("acked").push((k, v)),
                            Err(e) => {
                                let kind = format!("{e}").chars().take(40).collect::<String>();
                                *failed.lock().expect("failed").entry(kind).or_default() += 1;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            failed,
            tasks,
        }
    }

    /// How many puts failed so far (every kind).
    pub fn failed(&self) -> u64 {
        self.failed.lock().expect("failed").values().sum()
    }

    /// How many puts were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().expect("acked").len()
    }

    /// Waits until `more` puts beyond `from` were acknowledged.
    pub async fn wait_acked(&self, from: usize, more: usize, timeout: Duration) {
        wait_until(
            &format!("{more} more acknowledged puts"),
            timeout,
            || async move {
                let now = self.acked();
                if now >= from + more {
                    Ok(())
                } else {
                    Err(format!("{} of {more}", now - from))
                }
            },
        )
        .await;
    }

    /// Stops the load (bounded) and returns the acknowledged pairs and the failures by
    /// kind.
    pub async fn stop(self) -> (Vec<(String, String)>, BTreeMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        for t in self.tasks {
            tokio::time::timeout_at(deadline, t)
                .await
                .expect("the load stops within 30 s")
                .expect("a load task panicked");
        }
        let acked = std::mem::take(&mut *self.acked.lock().expect("acked"));
        let failed = std::mem::take(&mut *self.failed.lock().expect("failed"));
        (acked, failed)
    }
}
