//! Helpers shared by the real-process tests (`single_node.rs`, `cluster.rs`).
//!
//! A [`Cluster`] is a `shoal dev init` directory in a temporary directory, on a block of
//! ports free at the time, with every node running as its own process of the real CLI
//! (`shoal node --config DIR/nK/node.toml`, output appended to `DIR/nK/node.log`). It
//! sends signals (SIGKILL, SIGSTOP, SIGCONT, SIGTERM), restarts nodes, and on drop kills
//! every process it started — also when the test panics, in which case it then prints
//! the tail of every node's log and keeps the directory. Waiting is always polling a condition with a deadline
//! ([`wait_until`]); nothing sleeps to synchronise.
// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use shoal_client::{Client, ClientConfig, MemberState, NodeId, StatusReport, WriteOptions};
use shoal_executor::Executor;
use shoal_proto::{Object, StorageOp, StorageReply};
use shoal_ring::Ring;
use shoal_storage::{RocksOptions, RocksStorage, Storage};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The `shoal` CLI built into this package.
pub const BIN: &str = env!("CARGO_BIN_EXE_shoal-node-under-test");

/// Pause between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a cluster may take to start (every node answering, every member up).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout of the test clients: a dead or stopped node costs a request this much
/// before the client routes around it.
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Request timeout of the status client used for polling, so that one poll of a node that
/// stopped answering costs little of a wait's deadline.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Ports are drawn below Linux's ephemeral range (32768..), so that no socket bound to
/// port 0 by anything else on the machine can take a node's port between our check and
/// the node's bind, nor while a killed node is down.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;
/// Attempts to find a free block of ports.
const PORT_ATTEMPTS: usize = 500;
/// Attempts to start a cluster when a node finds its port taken.
const START_ATTEMPTS: usize = 3;
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Ports handed out by this process, never handed out twice (tests of one binary run in
/// parallel threads).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Finds `count` consecutive ports, each free on 127.0.0.1 for both UDP (QUIC) and TCP
/// (the metrics exporter), so one block serves as `--base-port` and
/// `--metrics-base-port`. The sockets are released before returning.
pub fn free_port_block(count: u16) -> u16 {
    let mut rng = rand::rng();
    for _ in 0..PORT_ATTEMPTS {
        let base = rng.random_range(PORT_RANGE.start..PORT_RANGE.end - count);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let handed = handed.get_or_insert_with(HashSet::new);
        if (base..base + count).any(|p| handed.contains(&p)) {
            continue;
        }
        let free = (base..base + count).all(|p| {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, p));
            let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, p));
            udp.is_ok() && tcp.is_ok()
        });
        if free {
            handed.extend(base..base + count);
            return base;
        }
    }
    panic!("no block of {count} free ports in {PORT_RANGE:?} after {PORT_ATTEMPTS} attempts");
}

/// Polls `probe` every [`POLL_INTERVAL`] until it returns `Ok`, and returns its value.
/// Panics after `timeout` with `what` and the last `Err` the probe gave (what it saw).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut polls = 0u64;
    loop {
        polls += 1;
        let last = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} ({polls} polls) waiting for {what}; last seen: {last}"
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `task` on every item with at most `limit` in flight; returns the errors.
pub async fn run_bounded<T, F, Fut>(items: Vec<T>, limit: usize, task: F) -> Vec<String>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut errors = Vec::new();
    let mut items = items.into_iter();
    loop {
        while set.len() < limit {
            match items.next() {
                Some(item) => {
                    set.spawn(task(item));
                }
                None => break,
            }
        }
        match set.join_next().await {
            None => return errors,
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => errors.push(e),
            Some(Err(e)) => errors.push(format!("task failed: {e}")),
        }
    }
}

/// Key/value pairs `{prefix}-{i}` → `{prefix}-value-{i}` for `i` in `range`.
pub fn key_values(prefix: &str, range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(|i| (format!("{prefix}-{i:05}"), format!("{prefix}-value-{i:05}")))
        .collect()
}

/// Puts every pair with quorum `w` (no context: every key is new), at most `limit` in
/// flight; panics listing the failures if any put fails.
pub async fn put_all(client: &Client, kvs: &[(String, String)], w: u8, limit: usize) {
    let items = kvs.to_vec();
    let errors = run_bounded(items, limit, |(k, v)| {
        let client = client.clone();
        async move {
            client
                .put(&k, v, None, WriteOptions::default().w(w))
                .await
                .map(|_| ())
                .map_err(|e| format!("put {k}: {e}"))
        }
    })
    .await;
    assert!(
        errors.is_empty(),
        "{} of {} puts with W={w} failed; first: {:?}",
        errors.len(),
        kvs.len(),
        &errors[..errors.len().min(5)]
    );
}

/// Reads every key with quorum `r`, at most `limit` in flight; panics unless every key is
/// found with exactly its value.
pub async fn assert_all_readable(client: &Client, kvs: &[(String, String)], r: u8, limit: usize) {
    let items = kvs.to_vec();
    let errors = run_bounded(items, limit, |(k, v)| {
        let client = client.clone();
        async move {
            let read = client
                .get(&k, shoal_client::ReadOptions::default().r(r))
                .await
                .map_err(|e| format!("get {k}: {e}"))?;
            if read.found && read.values == vec![v.clone().into_bytes()] {
                Ok(())
            } else {
                Err(format!(
                    "get {k}: found={} values={:?}, expected [{v}]",
                    read.found,
                    read.values
                        .iter()
                        .map(|x| String::from_utf8_lossy(x).into_owned())
                        .collect::<Vec<_>>()
                ))
            }
        }
    })
    .await;
    assert!(
        errors.is_empty(),
        "{} of {} reads with R={r} failed; first: {:?}",
        errors.len(),
        kvs.len(),
        &errors[..errors.len().min(5)]
    );
}

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
    child: Option<Child>,
}

impl NodeProcess {
    fn dir(&self) -> &Path {
        self.config.parent().unwrap_or(Path::new("."))
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("node.log")
    }

    fn spawn(&mut self, note: &str) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log_path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
        use std::io::Write as _;
        writeln!(log, "===== test harness: {note} =====").unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("node")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. The kernel kills the node if the thread that
        // started it dies (the test thread, killed with the test binary), so no node
        // outlives an aborted test run; normal ends are handled by `Cluster::drop`.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {}: {e}", self.id));
        self.child = Some(child);
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// Whether a process is started and not known to have exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) | None => false,
        }
    }

    fn signal(&self, signal: i32) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("node {} is not running", self.id));
        // SAFETY: sending a signal to a child process this harness started and has not
        // reaped (so the pid cannot have been reused).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed for node {}", self.id);
    }

    /// Waits (bounded) for the process to exit and reaps it.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("node {} is not running", self.id));
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return status;
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => panic!("node {} did not exit within {timeout:?}", self.id),
                Err(e) => panic!("waiting for node {}: {e}", self.id),
            }
        }
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
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
    /// member up. `extra_toml` is merged into every node's config by [`merge_toml`]:
    /// each `key = value` line under a `[section]` header sets that key in that table
    /// (replacing what `shoal dev init` wrote, e.g. `[aae] interval`), and lines before
    /// any header set top-level keys.
    ///
    /// When a node cannot bind its port (taken after we found it free), the whole cluster
    /// is started again on other ports, a bounded number of times.
    pub async fn start(nodes: usize, extra_toml: &str) -> Cluster {
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = Cluster::init(nodes, extra_toml);
            for node in &mut cluster.nodes {
                node.spawn("start");
            }
            match cluster.try_wait_ready(START_TIMEOUT).await {
                Ok(()) => return cluster,
                Err(StartFailure::PortTaken(why)) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "attempt {attempt}: a port was taken ({why}); retrying on other ports"
                    );
                }
                Err(StartFailure::PortTaken(why) | StartFailure::Other(why)) => {
                    panic!("the cluster did not start: {why}")
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn init(nodes: usize, extra_toml: &str) -> Cluster {
        let count = u16::try_from(nodes).expect("node count fits a port block");
        let base = free_port_block(count);
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
        let nodes = (1..=nodes)
            .map(|i| {
                let id = NodeId::new(format!("n{i}")).unwrap();
                let config = dir.path().join(id.as_str()).join("node.toml");
                if !extra_toml.is_empty() {
                    let text = std::fs::read_to_string(&config).unwrap();
                    std::fs::write(&config, merge_toml(&text, extra_toml)).unwrap();
                }
                // `--metrics-base-port` is the QUIC base port: node i listens for QUIC
                // (UDP) and metrics (TCP) on the same port number.
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, base + (i as u16) - 1));
                NodeProcess {
                    id,
                    config,
                    addr,
                    metrics: addr,
                    child: None,
                }
            })
            .collect();
        Cluster {
            dir: Some(dir),
            nodes,
        }
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |d| d.path())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (0-based: node 0 is `n1`).
    pub fn node(&self, i: usize) -> &NodeProcess {
        &self.nodes[i]
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

    /// The index of node `id`.
    pub fn index_of(&self, id: &NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| &n.id == id)
            .unwrap_or_else(|| panic!("{id} is not a node of this cluster"))
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

    /// Sends SIGKILL to node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGKILL);
        let status = self.nodes[i].wait_exit(EXIT_TIMEOUT);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
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
        let status = self.nodes[i].wait_exit(EXIT_TIMEOUT);
        assert!(
            status.success(),
            "node {} exited with {status} after SIGTERM",
            self.nodes[i].id
        );
    }

    /// Starts node `i` again (after [`Cluster::kill`] or [`Cluster::terminate`]) and waits
    /// until every running node answers and sees every running member up.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].spawn("restart");
        if let Err(StartFailure::PortTaken(why) | StartFailure::Other(why)) =
            self.try_wait_ready(START_TIMEOUT).await
        {
            panic!("node {} did not come back: {why}", self.nodes[i].id);
        }
    }

    /// Polls until every running node answers status and reports every running member
    /// up; fails early when a node process exits.
    async fn try_wait_ready(&mut self, timeout: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        let mut client: Option<Client> = None;
        let mut last = String::from("no client yet");
        loop {
            for node in &mut self.nodes {
                let Some(child) = node.child.as_mut() else {
                    continue;
                };
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    let log = node.log_tail(LOG_TAIL_LINES);
                    let why = format!("node {} exited with {status}; log:\n{log}", node.id);
                    return Err(if log.contains("Address already in use") {
                        StartFailure::PortTaken(why)
                    } else {
                        StartFailure::Other(why)
                    });
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
                let running: Vec<NodeId> = self
                    .nodes
                    .iter_mut()
                    .filter_map(|n| n.is_running().then(|| n.id.clone()))
                    .collect();
                match all_see_up(c, &running).await {
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
                return Err(StartFailure::Other(format!(
                    "not ready within {timeout:?}: {last}"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Opens the RocksDB store of node `i`, which must have exited, and reads every key of
    /// `keys` that has the node among its `n` primaries. Returns those keys, in order,
    /// each with the object stored for it (`None`: nothing stored).
    ///
    /// The store is read through the node's own [`Executor`] (a `Read` op, as a replica
    /// answers one), so the check holds whatever key layout the executor uses under
    /// `shoal_storage::object_key`.
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
        let executor = Executor::open(storage, || {
            panic!("the store of a node that ran already has an actor")
        })
        .unwrap_or_else(|e| panic!("opening the executor on {}: {e}", dir.display()));
        let mut out = Vec::new();
        for key in keys {
            let list = ring.preference_list_for_key(key.as_bytes(), n);
            if !list.contains(&node.id) {
                continue;
            }
            let read = executor
                .execute(StorageOp::Read {
                    partition: list.partition,
                    key: key.as_bytes().to_vec(),
                })
                .unwrap_or_else(|e| panic!("reading {key} from {}: {e}", node.id));
            match read {
                StorageReply::Object(object) => out.push((key.to_owned(), object)),
                other => panic!("a Read of {key} answered {other:?}"),
            }
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
                    node.log_tail(LOG_TAIL_LINES)
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

enum StartFailure {
    /// A node could not bind its port.
    PortTaken(String),
    /// Anything else.
    Other(String),
}

/// Connects a client, retrying until [`START_TIMEOUT`].
pub async fn connect(config: ClientConfig) -> Client {
    wait_until("a client connection", START_TIMEOUT, || {
        let config = config.clone();
        async move { Client::connect(config).await.map_err(|e| e.to_string()) }
    })
    .await
}

/// Checks that each node of `nodes` answers status and reports every one of `nodes` up.
pub async fn all_see_up(client: &Client, nodes: &[NodeId]) -> Result<(), String> {
    for reporter in nodes {
        let report = client
            .status(Some(reporter))
            .await
            .map_err(|e| format!("status of {reporter}: {e}"))?;
        for member in &report.members {
            if nodes.contains(&member.id) && member.state != MemberState::Up {
                return Err(format!("{reporter} sees {} {:?}", member.id, member.state));
            }
        }
    }
    Ok(())
}

/// The state `reporter` sees `member` in.
pub fn state_in(report: &StatusReport, member: &NodeId) -> Option<MemberState> {
    report
        .members
        .iter()
        .find(|m| &m.id == member)
        .map(|m| m.state)
}

/// Pending hints per (reporter, target), from the status of each of `reporters`.
pub async fn pending_hints(
    client: &Client,
    reporters: &[NodeId],
) -> Result<BTreeMap<(NodeId, NodeId), u64>, String> {
    let mut out = BTreeMap::new();
    for reporter in reporters {
        let report = client
            .status(Some(reporter))
            .await
            .map_err(|e| format!("status of {reporter}: {e}"))?;
        for m in &report.members {
            if m.pending_hints > 0 {
                out.insert((reporter.clone(), m.id.clone()), m.pending_hints);
            }
        }
    }
    Ok(out)
}

/// Polls until no node of `reporters` holds a hint for anyone.
pub async fn wait_hints_drained(client: &Client, reporters: &[NodeId], timeout: Duration) {
    wait_until(
        "every pending hint to be delivered",
        timeout,
        || async move {
            let hints = pending_hints(client, reporters).await?;
            if hints.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "pending hints (reporter, target) -> count: {hints:?}"
                ))
            }
        },
    )
    .await
}

/// Merges `extra` into the TOML text `base`, line by line: each `key = value` line sets
/// that key in the table of the `[section]` header above it in `extra` (top level before
/// any header), replacing the key if the table has it and adding the table if `base` has
/// none. Blank lines and `#` comments are skipped. Only one-line values are supported;
/// any other line (an array table, a multi-line value) panics.
pub fn merge_toml(base: &str, extra: &str) -> String {
    let mut text = base.to_owned();
    let mut section = String::new();
    for line in extra.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        assert!(
            !t.starts_with("[["),
            "merge_toml: array tables unsupported: {t}"
        );
        if let Some(name) = table_header(t) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("merge_toml: not a `key = value` line: {t}"));
        text = set_toml(&text, &section, key.trim(), value.trim());
    }
    text
}

/// The name of a `[table]` header line (not an array table), if `line` is one.
fn table_header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    if rest.starts_with('[') {
        return None;
    }
    rest.split_once(']').map(|(name, _)| name.trim())
}

/// Sets `key = value` (`value` as TOML source) in table `section` of `text` (`""`: the
/// top level), replacing the key if the table has it, adding the table if missing.
pub fn set_toml(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // `None` inside an array table (`[[seeds]]`), whose keys are never ours to replace.
    let mut current: Option<String> = Some(String::new());
    let mut insert_at = section.is_empty().then_some(0);
    for (i, line) in lines.iter_mut().enumerate() {
        let t = line.trim();
        if t.starts_with("[[") {
            current = None;
            continue;
        }
        if let Some(name) = table_header(t) {
            if name == section {
                insert_at = Some(i + 1);
            }
            current = Some(name.to_owned());
            continue;
        }
        let is_key = t
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key && !t.starts_with('#'));
        if current.as_deref() == Some(section) && is_key {
            *line = format!("{key} = {value}");
            return lines.join("\n") + "\n";
        }
    }
    match insert_at {
        Some(at) => lines.insert(at, format!("{key} = {value}")),
        None => {
            lines.push(String::new());
            lines.push(format!("[{section}]"));
            lines.push(format!("{key} = {value}"));
        }
    }
    lines.join("\n") + "\n"
}

/// Timeout of one scrape of a node's metrics endpoint.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest metrics page read.
const MAX_SCRAPE_BYTES: u64 = 16 << 20;

/// `GET /metrics` over plain HTTP/1.0 on `addr`: the Prometheus text exposition.
pub async fn scrape_metrics(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .map_err(|e| format!("sending to {addr}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_SCRAPE_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {addr}/metrics within {SCRAPE_TIMEOUT:?}"))??;
    let text = String::from_utf8(raw).map_err(|e| format!("non-UTF-8 metrics: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers from {addr}"))?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {addr}/metrics: {head}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("GET {addr}/metrics: chunked answer to HTTP/1.0"));
    }
    Ok(body.to_owned())
}

/// The sum of every series of metric `name` in a Prometheus text exposition (0 when the
/// metric has no series yet, as a counter never incremented).
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if let Some(labelled) = rest.strip_prefix('{') {
                labelled.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .fold(0.0, |total, v| total + v)
}

impl Cluster {
    /// The sum of metric `name` over the nodes `indices`, each scraped once.
    pub async fn metric_total(&self, indices: &[usize], name: &str) -> Result<f64, String> {
        let mut total = 0.0;
        for &i in indices {
            let page = scrape_metrics(self.nodes[i].metrics).await?;
            total += metric_sum(&page, name);
        }
        Ok(total)
    }
}
