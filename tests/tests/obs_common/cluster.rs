//! A local 3-node cluster of real node processes from `shoal dev init`.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng as _;
use shoal_client::{Client, ClientConfig, MemberState, NodeId};
use tokio::time::Instant;

use super::{scrape, set_toml, wait_until, BIN, NODES, POLL_INTERVAL, START_TIMEOUT, STEP_TIMEOUT};

/// Connect timeout of the test clients: a dead or stopped node costs this much once.
const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Request timeout of the test clients.
pub(super) const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports are drawn below Linux's ephemeral range and away from the other process tests'
/// range (20000..32000), so nothing bound to port 0 takes a node's port.
const PORT_RANGE: std::ops::Range<u16> = 12_000..20_000;
const PORT_ATTEMPTS: usize = 500;
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 60;

/// Finds `count` consecutive ports, each free on 127.0.0.1 for both UDP (QUIC) and TCP
/// (metrics), never handed out twice by this process.
pub fn free_port_block(count: u16) -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut rng = rand::rng();
    for _ in 0..PORT_ATTEMPTS {
        let base = rng.random_range(PORT_RANGE.start..PORT_RANGE.end - count);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let handed = handed.get_or_insert_with(HashSet::new);
        if (base..base + count).any(|p| handed.contains(&p)) {
            continue;
        }
        let free = (base..base + count).all(|p| {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
                && TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
        });
        if free {
            handed.extend(base..base + count);
            return base;
        }
    }
    panic!("no block of {count} free ports in {PORT_RANGE:?} after {PORT_ATTEMPTS} attempts");
}

/// One node process of an [`ObsCluster`].
#[derive(Debug)]
pub struct ObsNode {
    /// `n1`, `n2`, ...
    pub id: NodeId,
    /// Its config file.
    pub config: PathBuf,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its metrics address.
    pub metrics: SocketAddr,
    child: Option<Child>,
}

impl ObsNode {
    fn log_path(&self) -> PathBuf {
        self.config.with_file_name("node.log")
    }

    fn spawn(&mut self, note: &str) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        writeln!(log, "===== test harness: {note} =====").expect("writing the node log");
        let mut cmd = Command::new(BIN);
        cmd.arg("node")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the kernel kills the node when the thread
        // that started it dies, so no node outlives an aborted test binary.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting node {}: {e}", self.id)),
        );
    }

    fn signal(&self, signal: i32) {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .unwrap_or_else(|| panic!("node {} is not running", self.id));
        // SAFETY: a signal to our own child, not yet reaped (its pid cannot be reused).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed for node {}", self.id);
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// A local 3-node cluster of real node processes from `shoal dev init`.
#[derive(Debug)]
pub struct ObsCluster {
    dir: Option<tempfile::TempDir>,
    /// Node `i` is `n{i+1}`.
    pub nodes: Vec<ObsNode>,
}

impl ObsCluster {
    /// Initialises a cluster with `settings` (section, key, TOML value) applied to every
    /// node's config, starts it, and waits until every node sees every member up.
    pub async fn start(settings: &[(&str, &str, String)]) -> ObsCluster {
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = ObsCluster::init(settings);
            for node in &mut cluster.nodes {
                node.spawn("start");
            }
            match cluster.wait_ready().await {
                Ok(()) => return cluster,
                Err(why) if why.contains("Address already in use") && attempt < START_ATTEMPTS => {
                    eprintln!("attempt {attempt}: a port was taken; retrying on other ports");
                }
                Err(why) => panic!("the cluster did not start: {why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn init(settings: &[(&str, &str, String)]) -> ObsCluster {
        let base = free_port_block(NODES as u16);
        let dir = tempfile::Builder::new()
            .prefix("shoal-obs-")
            .tempdir()
            .expect("creating a temporary directory");
        let out = Command::new(BIN)
            .args(["dev", "init", "--dir"])
            .arg(dir.path())
            .args(["--nodes", &NODES.to_string()])
            .args(["--base-port", &base.to_string()])
            .args(["--metrics-base-port", &base.to_string()])
            .output()
            .expect("running `shoal dev init`");
        assert!(
            out.status.success(),
            "`shoal dev init` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nodes = (1..=NODES)
            .map(|i| {
                let id = NodeId::new(format!("n{i}")).expect("a valid node id");
                let config = dir.path().join(id.as_str()).join("node.toml");
                let mut text = std::fs::read_to_string(&config).expect("reading node.toml");
                for (section, key, value) in settings {
                    text = set_toml(&text, section, key, value);
                }
                std::fs::write(&config, text).expect("writing node.toml");
                let port = base + i as u16 - 1;
                check_ports(&config, port);
                ObsNode {
                    id,
                    config,
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    metrics: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    child: None,
                }
            })
            .collect();
        ObsCluster {
            dir: Some(dir),
            nodes,
        }
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |d| d.path())
    }

    /// Every node's metrics address.
    pub fn metrics_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.metrics).collect()
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].id.clone()
    }

    /// A client with short timeouts, connected (retried until a deadline).
    pub async fn client(&self) -> Client {
        let mut config = ClientConfig::load(&self.dir().join("client.toml"))
            .expect("loading the dev cluster's client.toml");
        config.connect_timeout = CLIENT_CONNECT_TIMEOUT;
        config.request_timeout = CLIENT_REQUEST_TIMEOUT;
        wait_until("a client connection", START_TIMEOUT, || {
            let config = config.clone();
            async move { Client::connect(config).await.map_err(|e| e.to_string()) }
        })
        .await
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGKILL);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.wait();
        }
    }

    /// SIGSTOPs node `i`: it freezes with its sockets open.
    pub fn pause(&self, i: usize) {
        self.nodes[i].signal(libc::SIGSTOP);
    }

    /// SIGCONTs node `i`.
    pub fn resume(&self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
    }

    /// Starts node `i` again and waits until every node sees every member up.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].spawn("restart");
        if let Err(why) = self.wait_ready().await {
            panic!("node {} did not come back: {why}", self.nodes[i].id);
        }
    }

    /// Polls until every node answers status and sees every member up, failing early
    /// when a process exits.
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
                let mut config = ClientConfig::load(&self.dir().join("client.toml"))
                    .map_err(|e| e.to_string())?;
                config.connect_timeout = CLIENT_CONNECT_TIMEOUT;
                config.request_timeout = Duration::from_secs(2);
                match Client::connect(config).await {
                    Ok(c) => client = Some(c),
                    Err(e) => last = format!("connect: {e}"),
                }
            }
            if let Some(c) = &client {
                let all: Vec<usize> = (0..self.nodes.len()).collect();
                match self.views_agree(c, &all, &all, MemberState::Up).await {
                    Ok(()) => {
                        c.close().await;
                        return Ok(());
                    }
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready within {START_TIMEOUT:?}: {last}"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Checks that each of `reporters` sees each of `members` in `state`.
    pub async fn views_agree(
        &self,
        client: &Client,
        reporters: &[usize],
        members: &[usize],
        state: MemberState,
    ) -> Result<(), String> {
        for &r in reporters {
            let report = client
                .status(Some(&self.nodes[r].id))
                .await
                .map_err(|e| format!("status of {}: {e}", self.nodes[r].id))?;
            for &m in members {
                let seen = report
                    .members
                    .iter()
                    .find(|s| s.id == self.nodes[m].id)
                    .map(|s| s.state);
                if seen != Some(state) {
                    return Err(format!(
                        "{} sees {} as {seen:?}",
                        self.nodes[r].id, self.nodes[m].id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Waits until each of `reporters` sees each of `members` in `state`.
    pub async fn wait_views(
        &self,
        client: &Client,
        reporters: &[usize],
        members: &[usize],
        state: MemberState,
    ) {
        wait_until(
            &format!("nodes {reporters:?} to see {members:?} {state:?}"),
            STEP_TIMEOUT,
            || self.views_agree(client, reporters, members, state),
        )
        .await;
    }

    /// Sum over `nodes` of the samples `name{labels}` of a fresh scrape of each.
    pub fn metric_sum(
        &self,
        nodes: &[usize],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<f64, String> {
        let mut total = 0.0;
        for &i in nodes {
            total += scrape(self.nodes[i].metrics)?.sum(name, labels);
        }
        Ok(total)
    }

    /// Waits until [`ObsCluster::metric_sum`] reaches `min`.
    pub async fn wait_metric(
        &self,
        nodes: &[usize],
        name: &str,
        labels: &[(&str, &str)],
        min: f64,
    ) {
        let what = format!("{name}{labels:?} summed over nodes {nodes:?} to reach {min}");
        wait_until(&what, STEP_TIMEOUT, || async move {
            let v = self.metric_sum(nodes, name, labels)?;
            if v >= min {
                Ok(())
            } else {
                Err(format!("{v}"))
            }
        })
        .await;
    }

    /// Waits until no node of `reporters` holds a hint.
    pub async fn wait_hints_drained(&self, client: &Client, reporters: &[usize]) {
        wait_until(
            "every pending hint to be delivered or expired",
            STEP_TIMEOUT,
            || async move {
                for &r in reporters {
                    let report = client
                        .status(Some(&self.nodes[r].id))
                        .await
                        .map_err(|e| format!("status of {}: {e}", self.nodes[r].id))?;
                    if let Some(m) = report.members.iter().find(|m| m.pending_hints > 0) {
                        return Err(format!(
                            "{} holds {} hints for {}",
                            self.nodes[r].id, m.pending_hints, m.id
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
    }
}

/// Checks that a generated node config listens where the harness expects.
fn check_ports(config: &Path, port: u16) {
    let text = std::fs::read_to_string(config).expect("reading node.toml");
    for key in ["listen", "metrics_listen"] {
        let want = format!("{key} = \"127.0.0.1:{port}\"");
        assert!(
            text.contains(&want),
            "{} lacks `{want}`:\n{text}",
            config.display()
        );
    }
}

impl Drop for ObsCluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                if let Ok(pid) = i32::try_from(child.id()) {
                    // SAFETY: our own unreaped child; SIGCONT first so a paused node dies.
                    unsafe {
                        libc::kill(pid, libc::SIGCONT);
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            if panicking {
                eprintln!("----- last lines of {} -----\n{}", node.id, node.log_tail());
            }
        }
        if panicking {
            if let Some(dir) = self.dir.take() {
                eprintln!("cluster directory kept: {}", dir.keep().display());
            }
        }
    }
}
