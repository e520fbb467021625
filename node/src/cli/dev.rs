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
    /// Number of nodes (init only).
    #[arg(long, global = true, default_value_t = 3)]
    pub nodes: usize,
    /// QUIC port of the first node; node i listens on base_port + i - 1 (init only).
    #[arg(long, global = true, default_value_t = 7001)]
    pub base_port: u16,
    /// Metrics port of the first node (init only).
    #[arg(long, global = true, default_value_t = 9101)]
    pub metrics_base_port: u16,
}

/// `shoal dev` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevAction {
    /// Write a CA, certificates, one config per node (DIR/<id>/node.toml) and DIR/client.toml.
    Init,
    /// Start every node of DIR as its own process; stop them all on Ctrl-C.
    Up,
}

/// Run `shoal dev`; returns the exit code.
pub fn run(args: DevArgs) -> i32 {
    let result = match args.action {
        Some(DevAction::Init) => init(&args).map(|_| ()),
        Some(DevAction::Up) => up(&args.dir),
        None => {
            if args.dir.join("client.toml").is_file() {
                up(&args.dir)
            } else {
                init(&args).and_then(|_| up(&args.dir))
            }
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// The replication settings a dev cluster of `nodes` gets.
pub fn dev_quorums(nodes: usize) -> (u8, u8, u8) {
    match nodes {
        1 => (1, 1, 1),
        2 => (2, 1, 1),
        _ => (3, 2, 2),
    }
}

/// Write a dev cluster into `args.dir`. Returns the node ids.
pub fn init(args: &DevArgs) -> anyhow::Result<Vec<NodeId>> {
    use shoal_transport::certs;
    let dir = &args.dir;
    if args.nodes == 0 || args.nodes > 64 {
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
    let ids: Vec<NodeId> = (1..=args.nodes)
        .map(|i| NodeId::new(format!("n{i}")))
        .collect::<Result<_, _>>()?;
    let port = |base: u16, i: usize| -> anyhow::Result<u16> {
        u16::try_from(usize::from(base) + i).context("port out of range")
    };
    let mut seeds = String::new();
    let mut addrs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let addr: SocketAddr = format!("127.0.0.1:{}", port(args.base_port, i)?).parse()?;
        addrs.push(addr);
        seeds.push_str(&format!("\n[[seeds]]\nid = \"{id}\"\naddr = \"{addr}\"\n"));
    }
    let (n, r, w) = dev_quorums(args.nodes);
    for (i, id) in ids.iter().enumerate() {
        let node_dir = dir.join(id.as_str());
        std::fs::create_dir_all(&node_dir)?;
        certs::issue_node_cert(dir, id, &node_dir)?;
        let metrics = port(args.metrics_base_port, i)?;
        let toml = format!(
            "# Node {id} of a `shoal dev` cluster. See `shoal node --print-default-config`.\n\
             id = \"{id}\"\nlisten = \"{addr}\"\ndata_dir = \"data\"\n\
             metrics_listen = \"127.0.0.1:{metrics}\"\npartitions = 64\n\
             {seeds}\n[tls]\nca = \"../ca.pem\"\ncert = \"node.pem\"\nkey = \"node.key\"\n\n\
             [replication]\nn = {n}\nr = {r}\nw = {w}\n\n\
             # A dev cluster converges fast: exchanges every 10 s.\n\
             [aae]\ninterval = \"10s\"\n",
            addr = addrs[i],
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
    println!(
        "initialised a {}-node dev cluster in {} (N={n} R={r} W={w})",
        args.nodes,
        dir.display()
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
pub fn up(dir: &Path) -> anyhow::Result<()> {
    let configs = node_configs(dir)?;
    let mut children = Vec::new();
    for c in &configs {
        let cfg = crate::config::NodeConfig::load(c)?;
        let child = spawn_node(c)?;
        println!(
            "node {:<4} pid {:<7} quic {:<21} metrics {:<28} log {}",
            cfg.id,
            child.id(),
            cfg.listen.to_string(),
            cfg.metrics_listen
                .map(|a| format!("http://{a}/metrics"))
                .unwrap_or_else(|| "-".into()),
            c.parent()
                .unwrap_or(Path::new("."))
                .join("node.log")
                .display()
        );
        children.push((cfg.id, child));
    }
    println!(
        "client config: {}\ntry: shoal --config {} put hello world\nCtrl-C stops the cluster.",
        dir.join("client.toml").display(),
        dir.join("client.toml").display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
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
    println!("stopped");
}
