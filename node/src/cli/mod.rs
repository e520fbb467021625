//! The `shoal` command line: run a node, make certificates, run a local dev cluster, and
//! talk to a cluster as a client.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_ring::NodeId;

use crate::config::{LogFormat, NodeConfig, DEFAULT_CONFIG_TOML};

mod aae;
mod backup;
mod client;
mod cluster;
mod dev;
mod dev_add;
mod locate;
mod status;

use client::ClientCommand;

/// Shoal: a leaderless, replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, long_about = None)]
pub struct Cli {
    /// Config file: the node config for `shoal node`; the client config for client
    /// commands (default: $SHOAL_CONFIG, then ./shoal-dev/client.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `shoal` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (`--config FILE`) until SIGINT or SIGTERM; SIGHUP reloads its TLS
    /// certificate, key and CA files.
    Node {
        /// Print a documented default configuration and exit.
        #[arg(long)]
        print_default_config: bool,
    },
    /// Make a cluster CA and node or client certificates.
    Cert {
        /// Which certificate.
        #[command(subcommand)]
        what: CertCommand,
        /// Print one JSON object: `{"cert": PATH, "key": PATH, "not_after": SECONDS}`
        /// (notAfter in seconds since the Unix epoch).
        #[arg(long, global = true)]
        json: bool,
    },
    /// A local development cluster: `init` writes it, `up` runs it; with neither, both.
    Dev(dev::DevArgs),
    /// Anti-entropy: Merkle tree state of every partition's replicas.
    Aae {
        /// What to show.
        #[command(subcommand)]
        what: aae::AaeCommand,
    },
    /// Ask a running node for a consistent checkpoint of its store, written under its
    /// `storage.backup_dir` (through the client config).
    Backup {
        /// The node to back up.
        #[arg(long)]
        node: String,
        /// The backup's name: a directory under the node's backup directory that must
        /// not exist yet.
        #[arg(long)]
        out: String,
        /// Print one JSON object: `{"path", "node", "taken_at_micros", "bytes"}`.
        #[arg(long)]
        json: bool,
    },
    /// Fill a stopped node's data directory from a backup of any age; the node then
    /// serves only once each of its partitions matches another replica's copy.
    Restore {
        /// The backup directory (holding manifest.json and db/).
        #[arg(long)]
        from: PathBuf,
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Replace a data directory that is not empty.
        #[arg(long)]
        force: bool,
        /// Print one JSON object: `{"data_dir", "from", "node", "taken_at_micros"}`.
        #[arg(long)]
        json: bool,
    },
    /// The cluster's layout: status, stage changes (join, leave, remove, replace,
    /// unstage), plan them, commit them (through the client config).
    Cluster {
        /// What to do.
        #[command(subcommand)]
        what: cluster::ClusterCommand,
        /// Print one JSON object.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Print a shell completion script, e.g. `shoal completions bash > /etc/bash_completion.d/shoal`.
    Completions {
        /// The shell: bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
    /// Client commands.
    #[command(flatten)]
    Client(ClientCommand),
}

/// `shoal cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a cluster CA (`ca.pem`, `ca.key`) in DIR.
    Ca {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a node certificate (`node.pem`, `node.key`, SAN shoal://node/ID).
    Node {
        /// Directory of the CA.
        #[arg(long)]
        ca: PathBuf,
        /// The node id.
        #[arg(long)]
        id: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid for (default: two years). Rotate it before
        /// then: replace the files and send the node SIGHUP.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        valid_days: Option<u32>,
    },
    /// Issue a client certificate (`client.pem`, `client.key`, SAN shoal://client/NAME).
    Client {
        /// Directory of the CA.
        #[arg(long)]
        ca: PathBuf,
        /// The client name.
        #[arg(long)]
        name: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Entry point of the `shoal` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node { .. } | Command::Dev(_)) {
        // Output commands behave like other Unix tools when their reader goes away
        // (`shoal get k | head`): end quietly instead of panicking on a broken pipe.
        // SAFETY: resetting a signal disposition to its default before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // A node logs in the format its config file asks for, so it starts logging once the
    // file is read (`run_node`); every other command logs text.
    if !matches!(cli.command, Command::Node { .. }) {
        init_tracing(LogFormat::Text);
    }
    let code = match cli.command {
        Command::Node {
            print_default_config,
        } => {
            if print_default_config {
                print!("{DEFAULT_CONFIG_TOML}");
                0
            } else {
                run_node(cli.config.as_deref())
            }
        }
        Command::Cert { what, json } => match run_cert(what, json) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        Command::Dev(args) => dev::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut std::io::stdout());
            0
        }
        Command::Backup { node, out, json } => match runtime() {
            Ok(rt) => rt.block_on(backup::backup(cli.config, &node, &out, json)),
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        Command::Restore {
            from,
            data_dir,
            force,
            json,
        } => match backup::restore(&from, &data_dir, force) {
            Ok(marker) => {
                println!("{}", backup::format_restored(&marker, &data_dir, json));
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Command::Aae { what } => block_on(aae::run(what, cli.config)),
        Command::Cluster { what, json } => block_on(cluster::run(what, json, cli.config)),
        Command::Client(cmd) => block_on(client::run(cmd, cli.config)),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Log to stderr in `format`, at the level `SHOAL_LOG` sets (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // The event's message and fields at the top level of each object (not under
        // `fields`), so that `level` and `message` are where log shippers look.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    };
}

/// Runs a command's future to its exit code; an error it returns (or failing to start
/// the runtime) is printed and exits 1.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<i32>>) -> i32 {
    match runtime().and_then(|rt| rt.block_on(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The node's runtime: `worker_threads` workers (`limits.worker_threads`; 0: tokio's
/// default, one per core, or `TOKIO_WORKER_THREADS`). With one worker (the default) it
/// is tokio's current-thread runtime, run by the thread that calls `block_on`: the
/// multi-thread scheduler's bookkeeping for a single worker (its clock reads each turn,
/// the hand-off between the `block_on` thread and the worker) measured slower
/// (BENCHMARKS.md, *A current-thread runtime*). `spawn_blocking` work (stats, backups,
/// tree checks) runs on the blocking pool beside it either way. Thread names: the
/// current-thread runtime runs on the node's main thread (`shoal`), and its blocking pool's
/// threads are `shoal-blocking`; the multi-thread runtime's workers and blocking threads
/// are all `shoal-rt` (tokio names both alike).
/// With a non-zero `idle_poll` (`limits.idle_poll`), a poller task keeps the runtime
/// awake for that long after each wake-up (see [`crate::idle_poll`]).
fn node_runtime(
    worker_threads: usize,
    idle_poll: std::time::Duration,
) -> anyhow::Result<tokio::runtime::Runtime> {
    let (mut builder, thread_name) = if worker_threads == 1 {
        (
            tokio::runtime::Builder::new_current_thread(),
            "shoal-blocking",
        )
    } else {
        (tokio::runtime::Builder::new_multi_thread(), "shoal-rt")
    };
    builder.enable_all().thread_name(thread_name);
    if worker_threads > 1 {
        builder.worker_threads(worker_threads);
    }
    let poller = (!idle_poll.is_zero()).then(|| crate::idle_poll::IdlePoll::new(idle_poll));
    if let Some(poller) = poller.clone() {
        builder.on_thread_unpark(move || poller.unparked());
    }
    let rt = builder.build()?;
    if let Some(poller) = poller {
        rt.spawn(poller.run());
    }
    Ok(rt)
}

fn run_cert(what: CertCommand, json: bool) -> anyhow::Result<()> {
    use shoal_transport::certs;
    let (cert, key) = match what {
        CertCommand::Ca { out } => {
            std::fs::create_dir_all(&out)?;
            certs::generate_ca(&out)?;
            (out.join(certs::CA_CERT_FILE), out.join(certs::CA_KEY_FILE))
        }
        CertCommand::Node {
            ca,
            id,
            out,
            valid_days,
        } => {
            let id = NodeId::new(id)?;
            std::fs::create_dir_all(&out)?;
            let validity = valid_days.map_or(certs::LEAF_VALIDITY, |days| {
                std::time::Duration::from_secs(u64::from(days) * 24 * 3600)
            });
            certs::issue_node_cert_valid_for(&ca, &id, &out, validity)?;
            (
                out.join(certs::NODE_CERT_FILE),
                out.join(certs::NODE_KEY_FILE),
            )
        }
        CertCommand::Client { ca, name, out } => {
            std::fs::create_dir_all(&out)?;
            certs::issue_client_cert(&ca, &name, &out)?;
            (
                out.join(certs::CLIENT_CERT_FILE),
                out.join(certs::CLIENT_KEY_FILE),
            )
        }
    };
    println!("{}", format_cert_report(&cert, &key, json)?);
    Ok(())
}

/// What `shoal cert` prints about the files it wrote.
fn format_cert_report(cert: &Path, key: &Path, json: bool) -> anyhow::Result<String> {
    if !json {
        return Ok(format!("wrote {}", cert.display()));
    }
    let not_after = shoal_transport::certificate_file_not_after(cert)?;
    Ok(serde_json::json!({"cert": cert, "key": key, "not_after": not_after}).to_string())
}

fn run_node(config: Option<&Path>) -> i32 {
    let Some(path) = config else {
        eprintln!("error: `shoal node` needs --config FILE (see --print-default-config)");
        return 2;
    };
    let cfg = match NodeConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    init_tracing(cfg.log_format);
    let rt = match node_runtime(cfg.limits.worker_threads, cfg.limits.idle_poll) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    match rt.block_on(serve_until_signal(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn serve_until_signal(cfg: NodeConfig) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    crate::metrics::install(&cfg)?;
    let mut hup = signal(SignalKind::hangup())?;
    let node = crate::server::start(cfg).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // A refused reload is logged and counted by `reload_tls`; the node goes on
            // with its current certificates.
            _ = hup.recv() => {
                let _ = node.reload_tls();
            }
        }
    }
    node.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_runtime_has_the_configured_workers() {
        let off = std::time::Duration::ZERO;
        use tokio::runtime::RuntimeFlavor;
        let rt = node_runtime(1, off).unwrap();
        assert_eq!(rt.metrics().num_workers(), 1);
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let blocking =
            rt.block_on(rt.spawn_blocking(|| std::thread::current().name().map(str::to_owned)));
        assert_eq!(blocking.unwrap().as_deref(), Some("shoal-blocking"));
        let rt = node_runtime(3, off).unwrap();
        assert_eq!(rt.metrics().num_workers(), 3);
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
            let cores = std::thread::available_parallelism().unwrap().get();
            assert_eq!(node_runtime(0, off).unwrap().metrics().num_workers(), cores);
        }
        assert_eq!(node_runtime(1, off).unwrap().metrics().num_alive_tasks(), 0);
        let polling = node_runtime(1, std::time::Duration::from_micros(200)).unwrap();
        assert_eq!(
            polling.metrics().num_alive_tasks(),
            1,
            "the idle poller runs"
        );
        // It wakes with the runtime's thread and goes back to waiting.
        polling.block_on(async { tokio::task::yield_now().await });
        assert_eq!(polling.metrics().num_alive_tasks(), 1);
    }

    #[test]
    fn cert_json_names_the_files_and_the_expiry() {
        let dir = tempfile::tempdir().unwrap();
        run_cert(
            CertCommand::Ca {
                out: dir.path().to_owned(),
            },
            true,
        )
        .unwrap();
        let out = dir.path().join("n1");
        run_cert(
            CertCommand::Node {
                ca: dir.path().to_owned(),
                id: "n1".into(),
                out: out.clone(),
                valid_days: Some(30),
            },
            true,
        )
        .unwrap();
        let cert = out.join("node.pem");
        let key = out.join("node.key");
        let text = format_cert_report(&cert, &key, true).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let not_after = json["not_after"].as_i64().unwrap();
        assert!((not_after - (now + 30 * 24 * 3600)).abs() < 60, "{json}");
        assert_eq!(json["cert"], serde_json::json!(cert));
        assert_eq!(json["key"], serde_json::json!(key));
        assert_eq!(
            format_cert_report(&cert, &key, false).unwrap(),
            format!("wrote {}", cert.display())
        );
    }
}
