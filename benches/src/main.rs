//! `shoal-bench`: Shoal's load generator. It drives a running cluster through the Rust SDK
//! with YCSB-style workloads, in closed or open loop, records latency per operation in HDR
//! histograms, and reports throughput and percentiles as a table, JSON and an SVG plot over
//! time; optionally it kills and restarts a node mid-run. See `shoal-bench --help`.

mod args;
mod cache;
mod fault;
mod keys;
mod ops;
mod plot;
mod report;
mod run;
mod schedule;
mod stats;
mod workload;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use shoal_client::{Client, ClientConfig};
use tokio::sync::watch;

use crate::args::{BenchConfig, Cli, Mode, Stop};
use crate::ops::Shared;
use crate::report::Summary;

/// Exit code when the command line or the configuration is unusable.
const EXIT_USAGE: u8 = 2;
/// Exit code when the run could not be carried out (cluster unreachable, files unwritable).
const EXIT_FAILED: u8 = 1;
/// Exit code after a second Ctrl-C, which does not wait for operations in flight.
const EXIT_INTERRUPTED: i32 = 130;

/// mimalloc, as the node uses: the load generator allocates per operation (requests,
/// frames, futures) on several threads, where glibc's allocator cost 8% of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client_config =
        args::resolve_config_path(cli.config.clone(), std::env::var_os(args::CONFIG_ENV));
    let config = match cli.into_config(client_config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(bench(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A one-line description of the run, the report's heading.
fn heading(cfg: &BenchConfig) -> String {
    let mode = match cfg.mode {
        Mode::Closed { concurrency } => format!("closed loop, {concurrency} workers"),
        Mode::Open {
            rate,
            max_outstanding,
        } => format!("open loop at {rate} ops/s (at most {max_outstanding} outstanding)"),
    };
    let stop = match cfg.stop {
        Stop::After(d) => humantime::format_duration(d).to_string(),
        Stop::Ops(n) => format!("{n} ops"),
    };
    let quorum = |q: Option<u8>| q.map_or_else(|| "default".to_owned(), |q| q.to_string());
    format!(
        "shoal-bench: workload {} ({} keys, {}), {} B values, R={} W={}, {mode}, {stop}, seed {}",
        cfg.workload.name(),
        cfg.keys,
        cfg.distribution.name(),
        cfg.value_size,
        quorum(cfg.read.r),
        quorum(cfg.write.w),
        cfg.seed
    )
}

/// Loads the client config and connects, with a hint when the default cluster is missing.
async fn connect(
    path: &Path,
    frames_per_node: Option<usize>,
    direct_reads: Option<bool>,
) -> anyhow::Result<Client> {
    let hint = || {
        format!(
            "client config {} (set --config or $SHOAL_CONFIG; `shoal dev` starts a local cluster)",
            path.display()
        )
    };
    let mut config = ClientConfig::load(path).with_context(hint)?;
    if let Some(frames) = frames_per_node {
        config.frames_per_node = frames;
    }
    if let Some(direct) = direct_reads {
        config.direct_reads = direct;
    }
    Client::connect(config)
        .await
        .with_context(|| format!("connecting with {}", path.display()))
}

/// Checks before the run that the fault plan can be carried out, so a long run does not
/// end in a fault that never happened.
fn preflight_fault(cfg: &BenchConfig) -> anyhow::Result<()> {
    let Some(plan) = &cfg.fault else {
        return Ok(());
    };
    let victim = run::target(plan).context("--kill-node/--kill-pid")?;
    if plan.restart_at.is_some() {
        let config = plan.node_config.clone().or_else(|| victim.node_config());
        anyhow::ensure!(
            config.is_some(),
            "process {} runs no `shoal node --config <file>`: it could not be restarted",
            victim.pid
        );
        let bin = plan.shoal_bin.clone().or_else(fault::default_shoal_bin);
        let usable = bin.as_ref().is_some_and(|b| b.is_file())
            || victim.exe.as_ref().is_some_and(|b| b.is_file());
        anyhow::ensure!(
            usable,
            "no shoal binary to restart the node with (looked at {}): pass --shoal-bin",
            bin.map_or_else(|| "-".to_owned(), |b| b.display().to_string())
        );
    }
    eprintln!(
        "fault: will kill pid {} ({}) at {}",
        victim.pid,
        victim.argv.join(" "),
        humantime::format_duration(plan.kill_at)
    );
    Ok(())
}

async fn bench(cfg: BenchConfig) -> anyhow::Result<()> {
    preflight_fault(&cfg)?;
    let client = connect(&cfg.client_config, cfg.frames_per_node, cfg.direct_reads).await?;
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: waiting for operations in flight (Ctrl-C again to quit now)");
            let _ = stop_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(EXIT_INTERRUPTED);
            }
        }
        // Keep the sender alive for the whole run.
        std::future::pending::<()>().await;
    });

    let heading = heading(&cfg);
    eprintln!("{heading}");
    let shared = Shared::new(client.clone(), cfg, Instant::now());
    let load = if shared.config.load {
        let summary = run::load(&shared, &stop).await;
        let errors: u64 = summary.errors.values().sum();
        eprintln!(
            "load: {} keys in {:.2} s ({errors} errors)",
            summary.keys, summary.duration_s
        );
        Some(summary)
    } else {
        if shared.config.workload.reads() {
            eprintln!("note: no --load: reads of keys never written count as not found");
        }
        None
    };
    let output = run::measure(&shared, &stop).await;
    let mut summary = Summary::new(&shared.config, output.results, load);
    summary.context_reads = shared.context_reads.load(Ordering::Relaxed);

    print!("{}", summary.render_table(&heading));
    if let Some(path) = &shared.config.json {
        let json = serde_json::to_string_pretty(&summary).context("encoding the JSON report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    if let Some(path) = &shared.config.plot {
        let svg = plot::render_svg(&heading, &summary.timeline, &summary.events);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        println!("plot: {}", path.display());
    }
    if let Some((mut child, log)) = output.restarted {
        match child.try_wait() {
            Ok(None) => println!(
                "the restarted node is still running as pid {} (log: {})",
                child.id(),
                log.display()
            ),
            Ok(Some(status)) => println!(
                "the restarted node exited ({status}); see {}",
                log.display()
            ),
            Err(e) => println!("cannot tell whether the restarted node runs: {e}"),
        }
    }
    client.close().await;
    Ok(())
}
