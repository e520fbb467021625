//! A local cluster of real node processes from `shoal dev init`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use shoal_client::{Client, ClientConfig, MemberState, NodeId, TlsFiles};
use shoal_executor::Executor;
use shoal_proto::Object;
use shoal_ring::Ring;
use shoal_storage::{RocksOptions, RocksStorage, Storage};
use shoal_transport::{Endpoint, TlsIdentity, TransportConfig};
use tokio::time::Instant;

use super::metrics::scrape;
use super::process::{free_port_block, log_tail, retry_on_port_conflict, spawn_logged, wait_exit};
use super::toml::merge_toml;
use super::{wait_until, BIN, EXIT_TIMEOUT, LOG_TAIL_LINES, POLL_INTERVAL, START_TIMEOUT};

/// Connect timeout of the test clients: a dead or stopped node costs a request this much
/// before the client routes around it.
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of a request sent through [`Cluster::raw_client`].
pub const RAW_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Request timeout of the status client used for polling, so that one poll of a node that
/// stopped answering costs little of a wait's deadline.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// One node process of a [`Cluster`].
#[derive(Debug)]
pub struct NodeProcess {
    /// The node's id (`n1`, `n2`, ...).
    pub id: NodeId,
    /// Its config file, `DIR/<id>/node.toml`.
    pub config: PathBuf,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// The address of its Prometheus endpoint (`GET /metrics`, plain HTTP over TCP).
    pub metrics: SocketAddr,
    /// The network namespace it runs in (`ip netns exec`), `None`: this process's.
    netns: Option<String>,
    child: Option<Child>,
}

impl NodeProcess {
    fn dir(&self) -> &Path {
        self.config.parent().unwrap_or(Path::new("."))
    }

    /// The pid of the node's process while it runs, to sample its memory.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("node.log")
    }

    fn spawn(&mut self, note: &str) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        // `ip netns exec` enters the namespace and execs the node in place, so the child's
        // pid is the node's and signals reach it.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.arg("node").arg("--config").arg(&self.config);
        self.child = Some(spawn_logged(cmd, &self.log_path(), note));
    }

    /// Whether a process is started and not known to have exited.
    fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn signal(&self, signal: i32) {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .unwrap_or_else(|| panic!("node {} is not running", self.id));
        // SAFETY: sending a signal to a child process this harness started and has not
        // reaped (so the pid cannot have been reused).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed for node {}", self.id);
    }

    /// Waits (bounded) for the process to exit and reaps it.
    fn wait_exit(&mut self) -> ExitStatus {
        let what = format!("node {}", self.id);
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{what} is not running"));
        let status = wait_exit(child, EXIT_TIMEOUT, &what);
        self.child = None;
        status
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log_path(), LOG_TAIL_LINES)
    }
}

/// Where the nodes of a [`Cluster`] run and how they are reached: by default every node
/// on 127.0.0.1 of this network namespace; [`Cluster::start_placed`] puts node `i` in
/// namespace `netns[i]`, listening on `listen[i]`, and tells its peers and clients to
/// reach it at `advertise[i]` (the same port: a node's member address and its listen
/// address share the port). The advertised address may be a relay in front of the node.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// Namespace of each node (`ip netns exec`).
    pub netns: Vec<String>,
    /// The IP address each node binds (QUIC and metrics).
    pub listen: Vec<IpAddr>,
    /// The IP address peers and clients dial for each node.
    pub advertise: Vec<IpAddr>,
    /// The first node's port (node `i` uses `base_port + i`); `None`: a block free on
    /// loopback. Nodes in namespaces of their own cannot collide on ports.
    pub base_port: Option<u16>,
}

/// A local cluster of node processes, from `shoal dev init`.
#[derive(Debug)]
pub struct Cluster {
    /// `None` only while dropping.
    dir: Option<tempfile::TempDir>,
    /// Node `i` is `n{i+1}`.
    nodes: Vec<NodeProcess>,
}

impl Cluster {
    /// Initialises and starts a cluster of `nodes` nodes (dev quorums: N=R=W=1 for one
    /// node, N=3 R=2 W=2 from three), and waits until every node answers and sees every
    /// member up. `extra_toml` is merged into every node's config by `merge_toml`: each
    /// `key = value` line under a `[section]` header sets that key in that table
    /// (replacing what `shoal dev init` wrote, e.g. `[aae] interval`), and lines before
    /// any header set top-level keys.
    ///
    /// When a node cannot bind its port (taken after we found it free), the whole cluster
    /// is started again on other ports, a bounded number of times.
    pub async fn start(nodes: usize, extra_toml: &str) -> Cluster {
        Cluster::start_placed(nodes, extra_toml, &Placement::default()).await
    }

    /// [`Cluster::start`] with the nodes placed as `placement` says (an empty placement:
    /// loopback).
    pub async fn start_placed(nodes: usize, extra_toml: &str, placement: &Placement) -> Cluster {
        retry_on_port_conflict("the cluster", || async move {
            let mut cluster = Cluster::init(nodes, extra_toml, placement);
            for node in &mut cluster.nodes {
                node.spawn("start");
            }
            cluster.wait_ready().await.map(|()| cluster)
        })
        .await
    }

    fn init(nodes: usize, extra_toml: &str, placement: &Placement) -> Cluster {
        let count = u16::try_from(nodes).expect("node count fits a port block");
        let base = placement
            .base_port
            .unwrap_or_else(|| free_port_block(count));
        let dir = tempfile::Builder::new()
            .prefix("shoal-it-")
            .tempdir()
            .expect("creating a temporary directory");
        let out = Command::new(BIN)
            .args(["dev", "init", "--dir"])
            .arg(dir.path())
            .args(["--nodes", &nodes.to_string()])
            .args(["--base-port", &base.to_string()])
            .args(["--metrics-base-port", &base.to_string()])
            .output()
            .expect("running `shoal dev init`");
        assert!(
            out.status.success(),
            "`shoal dev init` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nodes = (1..=count)
            .map(|i| {
                let id = NodeId::new(format!("n{i}")).expect("a valid node id");
                let config = dir.path().join(id.as_str()).join("node.toml");
                let text = std::fs::read_to_string(&config).expect("reading node.toml");
                let text = merge_toml(&text, extra_toml);
                let text = placement.rewrite_node(&text, usize::from(i - 1), base);
                std::fs::write(&config, &text).expect("writing node.toml");
                // `--metrics-base-port` is the QUIC base port: node i listens for QUIC
                // (UDP) and metrics (TCP) on the same port number.
                let at = |ips: &[IpAddr]| {
                    let ip = ips.get(usize::from(i - 1)).copied();
                    SocketAddr::new(ip.unwrap_or(Ipv4Addr::LOCALHOST.into()), base + i - 1)
                };
                let (listen, addr) = (at(&placement.listen), at(&placement.advertise));
                for key in ["listen", "metrics_listen"] {
                    let want = format!("{key} = \"{listen}\"");
                    assert!(
                        text.contains(&want),
                        "{} lacks `{want}`:\n{text}",
                        config.display()
                    );
                }
                NodeProcess {
                    id,
                    config,
                    addr,
                    metrics: listen,
                    netns: placement.netns.get(usize::from(i - 1)).cloned(),
                    child: None,
                }
            })
            .collect();
        let client_toml = dir.path().join("client.toml");
        let text = std::fs::read_to_string(&client_toml).expect("reading client.toml");
        let text = placement.rewrite_seeds(&text, count, base);
        std::fs::write(&client_toml, text).expect("writing client.toml");
        Cluster {
            dir: Some(dir),
            nodes,
        }
    }

    /// Writes the next node with `shoal dev add` (its own id not among its seeds, so it
    /// starts as a candidate), moves it to a free port (QUIC and metrics on one number,
    /// as the other nodes), starts it, and returns its index. Does not wait: a
    /// candidate is not a member, so [`Cluster::restart`]'s readiness does not apply.
    pub fn add_candidate(&mut self) -> usize {
        let out = Command::new(BIN)
            .args(["dev", "add", "--dir"])
            .arg(self.dir())
            .output()
            .expect("running `shoal dev add`");
        assert!(
            out.status.success(),
            "`shoal dev add` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = NodeId::new(String::from_utf8_lossy(&out.stdout).trim())
            .expect("dev add prints a node id");
        let config = self.dir().join(id.as_str()).join("node.toml");
        let port = free_port_block(1);
        let listen = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let text = std::fs::read_to_string(&config).expect("reading node.toml");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("listen = ") {
                    format!("listen = \"{listen}\"")
                } else if l.starts_with("metrics_listen = ") {
                    format!("metrics_listen = \"{listen}\"")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, text + "\n").expect("writing node.toml");
        let mut node = NodeProcess {
            id,
            config,
            addr: listen,
            metrics: listen,
            netns: None,
            child: None,
        };
        node.spawn("start as a candidate");
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |d| d.path())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node; node `i` (0-based) is `n{i+1}`.
    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    /// Whether node `i`'s process runs (it was started and has not exited).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].is_running()
    }

    /// The indices of the nodes whose process runs.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].id.clone()
    }

    /// The ids of the nodes `indices`.
    pub fn ids(&self, indices: &[usize]) -> Vec<NodeId> {
        indices.iter().map(|&i| self.id(i)).collect()
    }

    /// The RocksDB directory of node `i` (`data_dir = "data"` next to its config).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir().join("data")
    }

    /// The client config `shoal dev init` wrote, with a short connect timeout so that a
    /// dead or stopped node is routed around quickly.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::load(&self.dir().join("client.toml"))
            .expect("loading the dev cluster's client.toml");
        config.connect_timeout = CLIENT_CONNECT_TIMEOUT;
        config
    }

    /// A client of the cluster (connection retried until a deadline).
    pub async fn client(&self) -> Client {
        connect(self.client_config()).await
    }

    /// A client with a short request timeout, for polling status.
    pub async fn status_client(&self) -> Client {
        let mut config = self.client_config();
        config.request_timeout = STATUS_TIMEOUT;
        connect(config).await
    }

    /// A raw QUIC endpoint holding the dev cluster's client certificate, to send a
    /// request to one chosen node (the SDK would route it itself) or one the SDK cannot
    /// send.
    pub fn raw_client(&self, config: TransportConfig) -> Endpoint {
        let dir = self.dir();
        let identity = TlsIdentity::load(
            &dir.join("ca.pem"),
            &dir.join("client").join("client.pem"),
            &dir.join("client").join("client.key"),
        )
        .expect("loading the dev client identity");
        Endpoint::client(&identity, config).expect("creating a client endpoint")
    }

    /// Sends SIGKILL to node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGKILL);
        let status = self.nodes[i].wait_exit();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    /// Sends SIGHUP to node `i` (reload its TLS files).
    pub fn hangup(&self, i: usize) {
        self.nodes[i].signal(libc::SIGHUP);
    }

    /// Sends SIGSTOP to node `i`: the process freezes with its socket open.
    pub fn pause(&self, i: usize) {
        self.nodes[i].signal(libc::SIGSTOP);
    }

    /// Sends SIGCONT to node `i`.
    pub fn resume(&self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
    }

    /// Sends SIGTERM to node `i` and waits (bounded) for it to exit; panics unless it
    /// exits successfully.
    pub fn terminate(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGTERM);
        let status = self.nodes[i].wait_exit();
        assert!(
            status.success(),
            "node {} exited with {status} after SIGTERM",
            self.nodes[i].id
        );
    }

    /// Starts node `i` again without waiting for it (a candidate, or a node whose
    /// readiness the test checks its own way).
    pub fn start_again(&mut self, i: usize) {
        self.nodes[i].spawn("restart");
    }

    /// Starts node `i` again (after [`Cluster::kill`] or [`Cluster::terminate`]) and waits
    /// until every running node answers and sees every running member up.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].spawn("restart");
        if let Err(why) = self.wait_ready().await {
            panic!("node {} did not come back: {why}", self.nodes[i].id);
        }
    }

    /// Polls until every running node answers status and reports every running member
    /// up; fails early, with its log, when a node process exits.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut client: Option<Client> = None;
        let mut last = String::from("no client yet");
        loop {
            for node in &mut self.nodes {
                if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                    node.child = None;
                    return Err(format!(
                        "node {} exited with {status}; log:\n{}",
                        node.id,
                        node.log_tail()
                    ));
                }
            }
            if client.is_none() {
                let mut config = self.client_config();
                config.request_timeout = STATUS_TIMEOUT;
                match Client::connect(config).await {
                    Ok(c) => client = Some(c),
                    Err(e) => last = format!("connect: {e}"),
                }
            }
            if let Some(c) = &client {
                let running = self.running();
                match self
                    .views_agree(c, &running, &running, MemberState::Up)
                    .await
                {
                    Ok(()) => {
                        c.close().await;
                        return Ok(());
                    }
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                if let Some(c) = &client {
                    c.close().await;
                }
                return Err(format!("not ready within {START_TIMEOUT:?}: {last}"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Checks that each node of `reporters` answers status and sees each node of
    /// `members` in `state`.
    pub async fn views_agree(
        &self,
        client: &Client,
        reporters: &[usize],
        members: &[usize],
        state: MemberState,
    ) -> Result<(), String> {
        for &r in reporters {
            let reporter = &self.nodes[r].id;
            let report = client
                .status(Some(reporter))
                .await
                .map_err(|e| format!("status of {reporter}: {e}"))?;
            for &m in members {
                let member = &self.nodes[m].id;
                let seen = report
                    .members
                    .iter()
                    .find(|s| &s.id == member)
                    .map(|s| s.state);
                if seen != Some(state) {
                    return Err(format!("{reporter} sees {member} as {seen:?}"));
                }
            }
        }
        Ok(())
    }

    /// The sum over the nodes `indices` of the samples `name{labels}` (every sample
    /// named `name` whose labels include each pair of `labels`), each node scraped once.
    pub async fn metric_sum(
        &self,
        indices: &[usize],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<f64, String> {
        let mut total = 0.0;
        for &i in indices {
            total += scrape(self.nodes[i].metrics).await?.sum(name, labels);
        }
        Ok(total)
    }

    /// Waits (at most `timeout`) until [`Cluster::metric_sum`] of `name{labels}` over the
    /// nodes `indices` reaches `min`.
    pub async fn wait_metric_sum(
        &self,
        indices: &[usize],
        name: &str,
        labels: &[(&str, &str)],
        min: f64,
        timeout: Duration,
    ) {
        let what = format!("{name}{labels:?} summed over nodes {indices:?} to reach {min}");
        wait_until(&what, timeout, || async move {
            let v = self.metric_sum(indices, name, labels).await?;
            if v >= min {
                Ok(())
            } else {
                Err(format!("{v}"))
            }
        })
        .await;
    }

    /// Opens the RocksDB store of node `i`, which must have exited, and reads every key of
    /// `keys` that has the node among its `n` primaries. Returns those keys, in order,
    /// each with the object stored for it (`None`: nothing stored).
    ///
    /// The store is read through the node's own [`Executor`] (`Executor::stored_object`:
    /// what is on disk, a key whose tombstone was reaped reading as none), so the check
    /// holds whatever key layout the executor uses under `shoal_storage::object_key`.
    pub fn node_objects<'k>(
        &self,
        i: usize,
        ring: &Ring,
        n: usize,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Vec<(String, Option<Object>)> {
        let node = &self.nodes[i];
        assert!(node.child.is_none(), "node {} must be stopped", node.id);
        let dir = self.data_dir(i);
        let storage = RocksStorage::open(&dir, RocksOptions::default())
            .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()));
        // Every open takes a new actor (the node's next start takes another).
        let executor = Executor::open(storage, rand::random::<u64>)
            .unwrap_or_else(|e| panic!("opening the executor on {}: {e}", dir.display()));
        let mut out = Vec::new();
        for key in keys {
            let list = ring.preference_list_for_key(key.as_bytes(), n);
            if !list.contains(&node.id) {
                continue;
            }
            let object = executor
                .stored_object(list.partition, key.as_bytes())
                .unwrap_or_else(|e| panic!("reading {key} from {}: {e}", node.id));
            out.push((key.to_owned(), object));
        }
        executor.storage().close().expect("closing the store");
        out
    }

    /// Opens the RocksDB store of node `i`, which must have exited, and checks that every
    /// pair whose key has the node among its `n` primaries is stored there with exactly
    /// its value. Returns how many pairs were checked.
    pub fn assert_node_stores(
        &self,
        i: usize,
        ring: &Ring,
        n: usize,
        kvs: &[(String, String)],
    ) -> usize {
        let expected: BTreeMap<&str, &str> =
            kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let objects = self.node_objects(i, ring, n, kvs.iter().map(|(k, _)| k.as_str()));
        let checked = objects.len();
        let wrong: Vec<String> = objects
            .into_iter()
            .filter_map(|(key, object)| {
                let values: Option<Vec<Vec<u8>>> =
                    object.map(|o| o.values().map(<[u8]>::to_vec).collect());
                let value = expected[key.as_str()].as_bytes().to_vec();
                (values.as_deref() != Some(&[value][..])).then(|| format!("{key}: {values:?}"))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of the {checked} keys node {} is a primary of are missing or wrong in its store; first: {:?}",
            wrong.len(),
            self.nodes[i].id,
            &wrong[..wrong.len().min(5)]
        );
        checked
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                if let Ok(pid) = i32::try_from(child.id()) {
                    // SAFETY: signals to our own unreaped child; SIGCONT first so that a
                    // stopped node also dies at once.
                    unsafe {
                        libc::kill(pid, libc::SIGCONT);
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            if panicking {
                eprintln!(
                    "----- last {LOG_TAIL_LINES} lines of {} ({}) -----\n{}",
                    node.id,
                    node.log_path().display(),
                    node.log_tail()
                );
            }
        }
        if panicking {
            // Keep the directory (configs, logs, data) for a post-mortem.
            if let Some(dir) = self.dir.take() {
                eprintln!("cluster directory kept: {}", dir.keep().display());
            }
        }
    }
}

impl Placement {
    /// Node `i`'s config with its own listen addresses on `listen[i]` and every member
    /// address on `advertise` (`shoal dev init` wrote 127.0.0.1 and ports from `base`).
    fn rewrite_node(&self, text: &str, i: usize, base: u16) -> String {
        let Some(own) = self.listen.get(i) else {
            return text.to_owned();
        };
        let mut text = text.to_owned();
        for key in ["listen", "metrics_listen"] {
            text = text.replace(
                &format!("\n{key} = \"127.0.0.1:"),
                &format!("\n{key} = \"{own}:"),
            );
        }
        let count = u16::try_from(self.advertise.len()).expect("node count fits a port");
        self.rewrite_seeds(&text, count, base)
    }

    /// `text` with each member address `127.0.0.1:<base + j>` replaced by
    /// `advertise[j]` on the same port.
    fn rewrite_seeds(&self, text: &str, count: u16, base: u16) -> String {
        let mut text = text.to_owned();
        for (j, ip) in (0..count).zip(&self.advertise) {
            let port = base + j;
            text = text.replace(
                &format!("\"127.0.0.1:{port}\""),
                &format!("\"{ip}:{port}\""),
            );
        }
        text
    }
}

/// Connects a client, retrying until [`START_TIMEOUT`].
pub async fn connect(config: ClientConfig) -> Client {
    wait_until("a client connection", START_TIMEOUT, || {
        let config = config.clone();
        async move { Client::connect(config).await.map_err(|e| e.to_string()) }
    })
    .await
}

/// Sends one client request to the node at `addr` over `endpoint` (a
/// [`Cluster::raw_client`]) and returns its client answer; panics on anything else.
pub async fn ask(
    endpoint: &Endpoint,
    addr: SocketAddr,
    req: shoal_proto::wire::ClientRequest,
) -> shoal_proto::wire::ClientResponse {
    super::layout::try_ask(endpoint, addr, req, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Generates a CA in `dir` (not the cluster's) and a client certificate it issued, as an
/// intruder would hold; returns their files.
pub fn foreign_client_files(dir: &Path) -> TlsFiles {
    shoal_transport::certs::generate_ca(dir).expect("a foreign CA");
    let client_dir = dir.join("intruder");
    shoal_transport::certs::issue_client_cert(dir, "intruder", &client_dir)
        .expect("a client certificate of the foreign CA");
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: client_dir.join("client.pem"),
        key: client_dir.join("client.key"),
    }
}
