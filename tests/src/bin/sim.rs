//! `sim`: run Shoal's deterministic simulator.
//!
//! - `sim --seed S` runs one seed and prints its summary and digest (the same seed always
//!   prints the same output); `--log` prints the event log too.
//! - `sim --seeds K` runs seeds 0..K (from `--first`), one line each, and stops at the
//!   first failure with the command that replays it. `--seeds 100000` is the nightly
//!   long mode.
//! - Background work: `--no-handoff` turns hinted handoff off; `--aae-only-liveness`
//!   makes the liveness phase rely on anti-entropy alone (no read repair; with
//!   `--canary-reads`, a trickle of reads of keys that nothing writes);
//!   `--tombstone-grace S` and `--aae-interval S` set those periods. Any of the last three
//!   switches the engines to intervals scaled to a run of seconds (exchanges every 3 s,
//!   reaping every second, a 6 s grace period), so that tombstones are reaped.
//! - `--clock-skew S` gives every node its own clock (seeded offset and drift, any two at
//!   most S seconds apart), the time its engine sees.
//! - Power cuts (a node loses its unsynced writes): half of the seeds with faults draw
//!   them; `--power-cuts` makes every seed with faults draw them, `--no-power-cuts` none.
//! - `--sessions` runs the workload's clients as sessions (`shoal_proto::session`);
//!   `--sessions-without-escalation` as sessions that accept every reply.
//! - `--layout-changes` adds a layout change through the agreement to every seed (join,
//!   leave, remove or replace by seed % 4; two concurrent operators on odd seed / 4).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use std::time::Duration;

use shoal_tests::sim::{
    self, Background, FaultMix, Liveness, PowerCutMix, Quorum, SessionMode, SimConfig,
};

/// Parses `N/R/W`.
fn parse_quorum(s: &str) -> Result<Quorum, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let [n, r, w] = parts.as_slice() else {
        return Err(format!("expected N/R/W, got {s:?}"));
    };
    let num = |x: &str| x.parse::<u8>().map_err(|e| format!("{x:?}: {e}"));
    Ok(Quorum {
        n: num(n)?,
        r: num(r)?,
        w: num(w)?,
    })
}

/// Parses a positive number of seconds.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s:?}: expected seconds in (0, 86400]"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a fraction in 0..=0.6.
fn parse_deletes(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(0.0..=0.6).contains(&x) {
        return Err(format!("{s:?}: expected a fraction in 0..=0.6"));
    }
    Ok(x)
}

/// Parses a fraction in 0..=1.
fn parse_share(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(0.0..=1.0).contains(&x) {
        return Err(format!("{s:?}: expected a fraction in 0..=1"));
    }
    Ok(x)
}

/// Run Shoal's deterministic simulator.
#[derive(Debug, Parser)]
#[command(name = "sim", version, about)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["seed", "seeds"])))]
struct Args {
    /// Run this one seed and print its summary.
    #[arg(long)]
    seed: Option<u64>,
    /// Run this many seeds, from --first on, one line each; stop at the first failure.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Cluster size, 3 to 7 (default: drawn from each seed).
    #[arg(long, value_parser = clap::value_parser!(u8).range(3..=7))]
    nodes: Option<u8>,
    /// Replicas and default quorums as N/R/W, e.g. 3/2/2 (default: drawn from each seed,
    /// N = 3).
    #[arg(long, value_parser = parse_quorum)]
    quorum: Option<Quorum>,
    /// Client operations in the safety phase.
    #[arg(long, default_value_t = 200)]
    ops: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Plain keys of the workload.
    #[arg(long, default_value_t = 6)]
    keys: usize,
    /// Share of the operations on plain keys that are deletes (0 to 0.6).
    #[arg(long, default_value_t = 0.15, value_parser = parse_deletes)]
    deletes: f64,
    /// Share of the gets at R >= 2 that first ask R primaries for their own copies, as
    /// the SDK's direct reads do (0 to 1).
    #[arg(long, default_value_t = sim::SIM_DIRECT_READS, value_parser = parse_share)]
    direct_reads: f64,
    /// Storage as `durability = "sync"` with group commit: completions of writes wait
    /// for a sync, and coordinators replicate while theirs runs.
    #[arg(long)]
    group_commit: bool,
    /// Turn hinted handoff off: writes for unreachable primaries keep no hints.
    #[arg(long)]
    no_handoff: bool,
    /// Liveness by anti-entropy alone: no read-repair pass; time passes until every
    /// partition's Merkle roots are equal on its primaries.
    #[arg(long)]
    aae_only_liveness: bool,
    /// With --aae-only-liveness: a canary client keeps reading keys that nothing writes
    /// (foreground traffic that repairs nothing).
    #[arg(long, requires = "aae_only_liveness")]
    canary_reads: bool,
    /// Tombstone grace period in seconds (hint TTLs are cut below it).
    #[arg(long, value_parser = parse_seconds)]
    tombstone_grace: Option<Duration>,
    /// Anti-entropy interval in seconds.
    #[arg(long, value_parser = parse_seconds)]
    aae_interval: Option<Duration>,
    /// The least virtual time the safety phase lasts, in seconds (its operations are
    /// spread over it; long enough lets tombstones become reapable during it).
    #[arg(long, value_parser = parse_seconds)]
    min_safety_time: Option<Duration>,
    /// Fault intensity from 0 (no faults, default quorums on every request) to 1 (the
    /// strongest mix); each seed draws which faults it injects.
    #[arg(long, default_value_t = 1.0)]
    faults: f64,
    /// Clock skew in seconds: each node's clock gets a seeded offset and drift, any two
    /// at most this far apart (the engines' replication.max_clock_skew; hint TTLs are cut
    /// to fit the margin under the tombstone grace period).
    #[arg(long, value_parser = parse_skew)]
    clock_skew: Option<Duration>,
    /// Every seed with faults also cuts nodes' power (losing unsynced writes); by default
    /// half of them do.
    #[arg(long, conflicts_with = "no_power_cuts")]
    power_cuts: bool,
    /// No power cuts.
    #[arg(long)]
    no_power_cuts: bool,
    /// Print the event log (with --seed).
    #[arg(long)]
    log: bool,
    /// The workload's clients run as sessions (read-your-writes and monotonic reads,
    /// checked by `session_guarantees`).
    #[arg(long, conflicts_with = "sessions_without_escalation")]
    sessions: bool,
    /// Sessions that never ask more replicas (to see the checker catch stale reads).
    #[arg(long)]
    sessions_without_escalation: bool,
    /// Each seed also changes the layout through the agreement: a join, a leave, a
    /// removal or a replacement by seed % 4, with a second operator committing a join
    /// at the same moment on odd seed / 4 (`sim::layout::with_seeded_changes`; it sets
    /// the cluster size, and W = 2 without power cuts for removals and replacements).
    /// Not with a short --tombstone-grace: a removal or replacement may then lose a write
    /// whose only other copy was a hint, as hint TTLs are cut below the grace period
    /// (seed 100362 with --tombstone-grace 6: a 3 s TTL, the hint's target away longer).
    #[arg(long)]
    layout_changes: bool,
}

/// Parses a clock skew in seconds, 0 to 3600.
fn parse_skew(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{s:?}: expected seconds in [0, 3600]"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Args {
    fn config(&self, seed: u64) -> SimConfig {
        let mut cfg = SimConfig::from_seed(seed);
        cfg.nodes = self.nodes.map(usize::from);
        cfg.quorum = self.quorum;
        cfg.ops = self.ops;
        cfg.clients = self.clients;
        cfg.keys = self.keys;
        cfg.delete_fraction = self.deletes;
        let fast =
            self.aae_only_liveness || self.tombstone_grace.is_some() || self.aae_interval.is_some();
        let mut bg = if fast {
            Background::fast()
        } else {
            Background::engine_defaults()
        };
        bg.hinted_handoff = !self.no_handoff;
        if let Some(g) = self.tombstone_grace {
            bg.tombstone_grace = g;
        }
        if let Some(i) = self.aae_interval {
            bg.aae.interval = i;
        }
        cfg.background = bg;
        if let Some(t) = self.min_safety_time {
            cfg.min_safety_time = t;
        }
        if self.aae_only_liveness {
            cfg.liveness = Liveness::AntiEntropyOnly {
                canary_reads: self.canary_reads,
            };
        }
        // A clean run keeps the default quorums, so that read-your-writes is checked
        // whenever they overlap.
        cfg.vary_quorums = self.faults > 0.0;
        cfg.faults = if self.faults <= 0.0 {
            FaultMix::None
        } else {
            FaultMix::FromSeed {
                intensity: self.faults.min(1.0),
            }
        };
        cfg.clock_skew = self.clock_skew.unwrap_or_default();
        cfg.direct_reads = self.direct_reads;
        cfg.group_commit = self.group_commit;
        if self.power_cuts {
            cfg.power_cuts = PowerCutMix::FromSeed { share: 1.0 };
        } else if self.no_power_cuts {
            cfg.power_cuts = PowerCutMix::None;
        }
        cfg.keep_log = self.log;
        if self.sessions {
            cfg.sessions = SessionMode::On;
        } else if self.sessions_without_escalation {
            cfg.sessions = SessionMode::NoEscalation;
        }
        if self.layout_changes {
            cfg = sim::layout::with_seeded_changes(cfg);
        }
        cfg
    }
}

fn run_one(args: &Args, seed: u64) -> anyhow::Result<sim::RunReport> {
    let cfg = args.config(seed);
    match std::panic::catch_unwind(|| sim::run(&cfg)) {
        Ok(result) => result.with_context(|| format!("seed {seed} could not run")),
        Err(_) => anyhow::bail!("seed {seed} panicked (message above)"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(seed) = args.seed {
        return match run_one(&args, seed) {
            Ok(report) => {
                if args.log {
                    for line in &report.log {
                        println!("{line}");
                    }
                    println!();
                }
                println!("{report}");
                if report.violations.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                println!("error: {e:#}");
                println!("replay: {}", sim::replay_command(&args.config(seed)));
                ExitCode::FAILURE
            }
        };
    }
    let count = args.seeds.unwrap_or(0);
    for seed in args.first..args.first.saturating_add(count) {
        match run_one(&args, seed) {
            Ok(report) => {
                println!("{}", report.one_line());
                if let Err(failure) = report.check() {
                    // The failure names the seed and the command that replays it.
                    println!("{failure}");
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                println!("error: {e:#}");
                println!(
                    "failing seed {seed}; replay: {}",
                    sim::replay_command(&args.config(seed))
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{count} seeds passed");
    ExitCode::SUCCESS
}
