//! The `shoal` command line: run a node, make certificates, run a local dev cluster, and
//! talk to a cluster as a client.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_ring::NodeId;

use crate::config::{LogFormat, NodeConfig, DEFAULT_CONFIG_TOML};

mod aae;
mod client;
mod dev;
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
    /// Run a node (`--config FILE`) until SIGINT or SIGTERM.
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
    },
    /// A local development cluster: `init` writes it, `up` runs it; with neither, both.
    Dev(dev::DevArgs),
    /// Anti-entropy: Merkle tree state of every partition's replicas.
    Aae {
        /// What to show.
        #[command(subcommand)]
        what: aae::AaeCommand,
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
        Command::Cert { what } => match run_cert(what) {
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
        Command::Aae { what } => match runtime() {
            Ok(rt) => match rt.block_on(aae::run(what, cli.config)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            },
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        Command::Client(cmd) => match runtime() {
            Ok(rt) => match rt.block_on(client::run(cmd, cli.config)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            },
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run_cert(what: CertCommand) -> anyhow::Result<()> {
    use shoal_transport::certs;
    match what {
        CertCommand::Ca { out } => {
            std::fs::create_dir_all(&out)?;
            certs::generate_ca(&out)?;
            println!("wrote {}", out.join("ca.pem").display());
        }
        CertCommand::Node { ca, id, out } => {
            let id = NodeId::new(id)?;
            std::fs::create_dir_all(&out)?;
            certs::issue_node_cert(&ca, &id, &out)?;
            println!("wrote {}", out.join("node.pem").display());
        }
        CertCommand::Client { ca, name, out } => {
            std::fs::create_dir_all(&out)?;
            certs::issue_client_cert(&ca, &name, &out)?;
            println!("wrote {}", out.join("client.pem").display());
        }
    }
    Ok(())
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
    let rt = match runtime() {
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
    let node = crate::server::start(cfg).await?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    node.shutdown().await
}
