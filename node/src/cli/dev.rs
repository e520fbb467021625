//! `shoal dev`: a local cluster on 127.0.0.1, each node its own process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use shoal_ring::NodeId;

/// Arguments of `shoal dev`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct DevArgs {
    /// `init` or `up`; neither: init (if the directory has no cluster yet), then up.
    #[command(subcommand)]
    pub action: Option<DevAction>,
    /// Directory of the dev cluster.
    #[arg(long, global = true, default_value = "./shoal-dev")]
    pub dir: PathBuf,
    /// Number of nodes (init; default 3). With an existing directory it must match the
    /// nodes there: a cluster is not resized by `shoal dev`.
    #[arg(long, global = true)]
    pub nodes: Option<usize>,
    /// QUIC port of the first node; node i listens on base_port + i - 1 (init only).
    #[arg(long, global = true, default_value_t = 7001)]
    pub base_port: u16,
    /// Metrics port of the first node (init only).
    #[arg(long, global = true, default_value_t = 9101)]
    pub metrics_base_port: u16,
    /// Print each report as one JSON object per line (`{"event": "init" | "up" |
    /// "stopped" | "down" | "clean", ...}`) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `shoal dev` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevAction {
    /// Write a CA, certificates, one config per node (DIR/<id>/node.toml) and DIR/client.toml.
    Init,
    /// Start every node of DIR as its own process, print them once they serve; stop them
    /// all on Ctrl-C (or `down`).
    Up,
    /// Stop the `shoal dev up` of DIR (and so its nodes), wherever it runs.
    Down,
    /// Remove DIR (data, certificates, configs); refused while its cluster runs.
    Clean,
    /// Write the next node of the cluster in DIR (certificate, node.toml with the next
    /// free ports and the existing nodes as seeds) and print its id. It starts as a
    /// candidate: run it, then `shoal cluster join ID`, `plan` and `commit`.
    Add,
}

/// The file where `shoal dev up` keeps its pid while it runs, so that `down` can stop it
/// and `clean` can refuse to delete a running cluster.
const PID_FILE: &str = "dev.pid";
/// Longest `shoal dev up` waits for its nodes to serve before printing them.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Nodes of a new dev cluster when `--nodes` is not given.
const DEFAULT_NODES: usize = 3;
/// Longest `shoal dev down` waits for the cluster to stop (each node gets 10 s to stop
/// gracefully before `up` kills it).
const DOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// A command line that cannot be carried out as given (exit code 2, like the client
/// commands' usage errors); nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub(super) String);

/// Run `shoal dev`; returns the exit code.
pub fn run(args: DevArgs) -> i32 {
    let json = args.json;
    let result = match args.action {
        Some(DevAction::Init) => init(&args).map(|_| ()),
        Some(DevAction::Up) => check_nodes(&args).and_then(|()| up(&args.dir, json)),
        Some(DevAction::Down) => down(&args.dir, json),
        Some(DevAction::Clean) => clean(&args.dir, json),
        Some(DevAction::Add) => super::dev_add::run(&args.dir, json),
        None => {
            if args.dir.join("client.toml").is_file() {
                check_nodes(&args).and_then(|()| up(&args.dir, json))
            } else {
                init(&args).and_then(|_| up(&args.dir, json))
            }
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            }
        }
    }
}

/// Refuses a `--nodes` that differs from the nodes an existing directory holds, instead
/// of silently running a cluster of another size than asked for.
fn check_nodes(args: &DevArgs) -> anyhow::Result<()> {
    let Some(wanted) = args.nodes else {
        return Ok(());
    };
    let have = node_configs(&args.dir)?.len();
    if wanted != have {
        return Err(UsageError(format!(
            "{} holds a {have}-node dev cluster, not {wanted}; drop --nodes, or run \
             `shoal dev clean --dir {}` first to start over with {wanted}",
            args.dir.display(),
            args.dir.display()
        ))
        .into());
    }
    Ok(())
}

/// The pid of the `shoal dev up` running for `dir`, if one does: its pid file names a
/// live process running this same binary (a stale file whose pid was reused does not count).
fn running_up(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join(PID_FILE)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let me = std::env::current_exe().ok()?;
    (exe == me).then_some(pid)
}

/// Prints one report: `text` for people, or `json` (one line) with `--json`.
pub(super) fn report(
    json: bool,
    text: impl FnOnce() -> String,
    value: impl FnOnce() -> serde_json::Value,
) {
    if json {
        println!("{}", value());
    } else {
        println!("{}", text());
    }
}

/// Reports whether `down` or `clean` (`event`) did something to `dir`: `yes` or `no` as
/// text, or `{"event": event, "dir": dir, field: done}`.
fn report_done(
    json: bool,
    (event, field): (&str, &str),
    dir: &Path,
    done: bool,
    yes: impl FnOnce() -> String,
    no: impl FnOnce() -> String,
) {
    report(
        json,
        || if done { yes() } else { no() },
        || {
            let mut value = serde_json::json!({"event": event, "dir": dir});
            value[field] = serde_json::Value::Bool(done);
            value
        },
    )
}

/// `shoal dev down`: SIGTERM to the `shoal dev up` of `dir`, then wait until it is gone.
fn down(dir: &Path, json: bool) -> anyhow::Result<()> {
    let down_report = |stopped: bool| {
        report_done(
            json,
            ("down", "stopped"),
            dir,
            stopped,
            || format!("stopped the dev cluster in {}", dir.display()),
            || format!("no dev cluster runs in {}", dir.display()),
        )
    };
    let Some(pid) = running_up(dir) else {
        down_report(false);
        return Ok(());
    };
    // SAFETY: a signal to the process the pid file names, checked above to be a `shoal`.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        bail!(
            "cannot signal shoal dev (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + DOWN_TIMEOUT;
    while running_up(dir) == Some(pid) {
        if Instant::now() >= deadline {
            bail!("shoal dev (pid {pid}) did not stop within {DOWN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    down_report(true);
    Ok(())
}

/// `shoal dev clean`: removes a dev cluster directory, but only one that looks like a dev
/// cluster (has client.toml) and whose cluster is not running.
fn clean(dir: &Path, json: bool) -> anyhow::Result<()> {
    let clean_report = |removed: bool| {
        report_done(
            json,
            ("clean", "removed"),
            dir,
            removed,
            || format!("removed {}", dir.display()),
            || format!("{} does not exist; nothing to clean", dir.display()),
        )
    };
    if !dir.exists() {
        clean_report(false);
        return Ok(());
    }
    if !dir.join("client.toml").is_file() {
        return Err(UsageError(format!(
            "{} is not a dev cluster directory (no client.toml); not removing it",
            dir.display()
        ))
        .into());
    }
    if let Some(pid) = running_up(dir) {
        bail!(
            "the dev cluster in {} runs (shoal dev pid {pid}); stop it first (`shoal dev down --dir {}`)",
            dir.display(),
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    clean_report(true);
    Ok(())
}

/// The replication settings a dev cluster of `nodes` gets.
pub fn dev_quorums(nodes: usize) -> (u8, u8, u8) {
    match nodes {
        1 => (1, 1, 1),
        2 => (2, 1, 1),
        _ => (3, 2, 2),
    }
}

/// Partitions of a dev cluster's ring.
const DEV_PARTITIONS: u32 = 64;

/// The node.toml of dev node `id`: listening on `listen`, metrics on 127.0.0.1:`metrics`,
/// `seeds` as its `[[seeds]]`, the dev CA one directory up; `note` says how it starts.
pub(super) fn node_toml(
    id: &NodeId,
    listen: SocketAddr,
    metrics: u16,
    partitions: u32,
    seeds: &[(NodeId, SocketAddr)],
    (n, r, w): (u8, u8, u8),
    note: &str,
) -> String {
    let seeds: String = seeds
        .iter()
        .map(|(id, addr)| format!("\n[[seeds]]\nid = \"{id}\"\naddr = \"{addr}\"\n"))
        .collect();
    format!(
        "# Node {id} of a `shoal dev` cluster. See `shoal node --print-default-config`.\n\
         # {note}\n\
         id = \"{id}\"\nlisten = \"{listen}\"\ndata_dir = \"data\"\n\
         metrics_listen = \"127.0.0.1:{metrics}\"\npartitions = {partitions}\n\
         {seeds}\n[tls]\nca = \"../ca.pem\"\ncert = \"node.pem\"\nkey = \"node.key\"\n\n\
         [replication]\nn = {n}\nr = {r}\nw = {w}\n\n\
         # A dev cluster converges fast: exchanges every 10 s.\n\
         [aae]\ninterval = \"10s\"\n"
    )
}

/// Write a dev cluster into `args.dir`. Returns the node ids.
pub fn init(args: &DevArgs) -> anyhow::Result<Vec<NodeId>> {
    use shoal_transport::certs;
    let dir = &args.dir;
    let nodes = args.nodes.unwrap_or(DEFAULT_NODES);
    if nodes == 0 || nodes > 64 {
        bail!("--nodes must be in 1..=64");
    }
    if dir.join("client.toml").exists() {
        bail!(
            "{} already holds a dev cluster; remove it or use `shoal dev up --dir {}`",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    certs::generate_ca(dir)?;
    let ids: Vec<NodeId> = (1..=nodes)
        .map(|i| NodeId::new(format!("n{i}")))
        .collect::<Result<_, _>>()?;
    let port = |base: u16, i: usize| -> anyhow::Result<u16> {
        u16::try_from(usize::from(base) + i).context("port out of range")
    };
    let mut seeds = Vec::new();
    let mut addrs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let addr: SocketAddr = format!("127.0.0.1:{}", port(args.base_port, i)?).parse()?;
        addrs.push(addr);
        seeds.push((id.clone(), addr));
    }
    let (n, r, w) = dev_quorums(nodes);
    for (i, id) in ids.iter().enumerate() {
        let node_dir = dir.join(id.as_str());
        std::fs::create_dir_all(&node_dir)?;
        certs::issue_node_cert(dir, id, &node_dir)?;
        let metrics = port(args.metrics_base_port, i)?;
        let toml = node_toml(
            id,
            addrs[i],
            metrics,
            DEV_PARTITIONS,
            &seeds,
            (n, r, w),
            "Every founding member is among the seeds: they make layout version 1.",
        );
        std::fs::write(node_dir.join("node.toml"), toml)?;
    }
    let client_dir = dir.join("client");
    std::fs::create_dir_all(&client_dir)?;
    certs::issue_client_cert(dir, "dev", &client_dir)?;
    let seed_list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let client = format!(
        "# Client config of a `shoal dev` cluster.\nseeds = [{}]\n\n[tls]\nca = \"ca.pem\"\ncert = \"client/client.pem\"\nkey = \"client/client.key\"\n",
        seed_list.join(", ")
    );
    std::fs::write(dir.join("client.toml"), client)?;
    report(
        args.json,
        || {
            format!(
                "initialised a {}-node dev cluster in {} (N={n} R={r} W={w})",
                nodes,
                dir.display()
            )
        },
        || {
            serde_json::json!({
                "event": "init",
                "dir": dir,
                "nodes": ids.iter().map(NodeId::as_str).collect::<Vec<_>>(),
                "n": n,
                "r": r,
                "w": w,
                "client_config": dir.join("client.toml"),
            })
        },
    );
    Ok(ids)
}

/// The node configs of a dev cluster directory, sorted by node id.
pub fn node_configs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path().join("node.toml");
        if path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    if out.is_empty() {
        bail!(
            "no */node.toml in {}: run `shoal dev init` first",
            dir.display()
        );
    }
    Ok(out)
}

fn spawn_node(config: &Path) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("locating the shoal binary")?;
    let dir = config.parent().unwrap_or(Path::new("."));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("node")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGTERM the child
    // when this process dies, so a killed `shoal dev up` leaves no orphan nodes.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting the node of {}", config.display()))
}

/// Start every node of `dir`, print where they are, and stop them on Ctrl-C or SIGTERM.
pub fn up(dir: &Path, json: bool) -> anyhow::Result<()> {
    let configs = node_configs(dir)?;
    if let Some(pid) = running_up(dir) {
        bail!(
            "the dev cluster in {} already runs (shoal dev pid {pid})",
            dir.display()
        );
    }
    let pid_file = dir.join(PID_FILE);
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    let result = run_nodes(dir, &configs, json);
    let _ = std::fs::remove_file(&pid_file);
    result
}

fn run_nodes(dir: &Path, configs: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let mut children = Vec::new();
    let mut lines = Vec::new();
    let mut nodes = Vec::new();
    for c in configs {
        let cfg = crate::config::NodeConfig::load(c)?;
        let child = spawn_node(c)?;
        let metrics = cfg
            .metrics_listen
            .map(|a| format!("http://{a}/metrics"))
            .unwrap_or_else(|| "-".into());
        let log = c.parent().unwrap_or(Path::new(".")).join("node.log");
        lines.push(format!(
            "node {:<4} pid {:<7} quic {:<21} metrics {:<28} log {}",
            cfg.id,
            child.id(),
            cfg.listen.to_string(),
            metrics,
            log.display()
        ));
        nodes.push(serde_json::json!({
            "id": cfg.id.as_str(),
            "pid": child.id(),
            "quic": cfg.listen,
            "metrics": cfg.metrics_listen.map(|a| format!("http://{a}/metrics")),
            "log": log,
        }));
        children.push((cfg.id, child));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // A printed node is one a client can use right away (scripts and tests wait for the
    // table, then talk to the cluster).
    if let Err(e) = rt.block_on(wait_serving(dir, &mut children)) {
        stop_all(&mut children);
        return Err(e);
    }
    let client_config = dir.join("client.toml");
    report(
        json,
        || {
            format!(
                "{}\nclient config: {}\ntry: shoal --config {} put hello world\nCtrl-C stops the cluster.",
                lines.join("\n"),
                client_config.display(),
                client_config.display()
            )
        },
        || serde_json::json!({"event": "up", "nodes": nodes, "client_config": client_config}),
    );
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => {
                    for (id, child) in &mut children {
                        if let Ok(Some(status)) = child.try_wait() {
                            eprintln!("node {id} exited ({status}); see its node.log");
                        }
                    }
                    children.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
                    if children.is_empty() {
                        bail!("every node has exited");
                    }
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    stop_all(&mut children);
    report(
        json,
        || "stopped".to_owned(),
        || serde_json::json!({"event": "stopped"}),
    );
    Ok(())
}

/// Waits until every node answers a status request through the dev client config, or
/// fails when one exits first or [`SERVE_TIMEOUT`] passes.
async fn wait_serving(dir: &Path, children: &mut [(NodeId, Child)]) -> anyhow::Result<()> {
    let config = shoal_client::ClientConfig::load(&dir.join("client.toml"))?;
    let deadline = Instant::now() + SERVE_TIMEOUT;
    let mut pending: Vec<NodeId> = children.iter().map(|(id, _)| id.clone()).collect();
    while !pending.is_empty() {
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("node {id} exited ({status}) before serving; see its node.log");
            }
        }
        // A fresh client each round: one made while only some nodes ran may not know
        // the others' addresses yet.
        if let Ok(client) = shoal_client::Client::connect(config.clone()).await {
            // A node `shoal dev add` wrote and no commit made a member yet is a
            // candidate: not addressable by id through the cluster, so not waited for.
            let info = client.cluster_info().await;
            pending.retain(|id| info.members.iter().any(|m| &m.id == id));
            let mut still = Vec::new();
            for id in pending {
                if client.status(Some(&id)).await.is_err() {
                    still.push(id);
                }
            }
            pending = still;
            client.close().await;
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let ids: Vec<&str> = pending.iter().map(NodeId::as_str).collect();
            bail!(
                "node(s) {} did not serve within {SERVE_TIMEOUT:?}; see their node.log",
                ids.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn stop_all(children: &mut [(NodeId, Child)]) {
    for (_, child) in children.iter() {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: sending a signal to a child process we started.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("node {id} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
