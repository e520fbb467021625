//! The command line: parsing (durations, value sizes) and validation into a
//! [`BenchConfig`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use rand::Rng;
use serde_json::json;
use shoal_client::{ReadOptions, WriteOptions};

use crate::keys::Distribution;
use crate::workload::Workload;

/// Largest value `--value-size` accepts (64 MiB): a bound on the value pool kept in memory;
/// the cluster's own limit (`max_value_bytes`, 4 MiB by default) is usually lower.
pub const MAX_VALUE_SIZE: usize = 64 << 20;
/// Largest `--max-outstanding` (the open-loop bound on operations in flight).
pub const MAX_OUTSTANDING_LIMIT: usize = 1_000_000;
/// Most closed-loop workers.
pub const MAX_CONCURRENCY: usize = 100_000;
/// Most `--threads`: more only contend for the cores.
pub const MAX_THREADS: usize = 256;
/// The environment variable naming the client config when `--config` is not given (the
/// same as the `shoal` CLI's).
pub const CONFIG_ENV: &str = "SHOAL_CONFIG";
/// The client config used when neither `--config` nor [`CONFIG_ENV`] is given: what
/// `shoal dev` writes.
pub const DEFAULT_CONFIG_PATH: &str = "shoal-dev/client.toml";
/// Measured run time used when neither `--duration` nor `--ops` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);

/// A command-line value that does not parse, or options that do not fit together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    /// A duration is not of the form `30s`, `500ms`, `1m30s`, ...
    #[error("invalid duration {input:?}: {reason} (examples: 30s, 500ms, 1m30s)")]
    Duration {
        /// What was given.
        input: String,
        /// What the parser said.
        reason: String,
    },
    /// A value size is not `N` or `MIN..MAX`.
    #[error("invalid value size {input:?}: {reason} (examples: 1024, 100..2000)")]
    ValueSize {
        /// What was given.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// Options that are individually valid but not together, or out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Parses a human duration such as `30s`, `500ms` or `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, ArgsError> {
    humantime::parse_duration(s.trim()).map_err(|e| ArgsError::Duration {
        input: s.to_owned(),
        reason: e.to_string(),
    })
}

/// The size of the values written: fixed, or uniform over an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueSize {
    /// Every value has this many bytes.
    Fixed(usize),
    /// Each value has a size drawn uniformly from `min..=max` bytes.
    Range {
        /// Smallest size.
        min: usize,
        /// Largest size (inclusive).
        max: usize,
    },
}

impl ValueSize {
    /// The largest size it can produce.
    pub fn max(self) -> usize {
        match self {
            ValueSize::Fixed(n) => n,
            ValueSize::Range { max, .. } => max,
        }
    }

    /// A size for the next value.
    pub fn sample<R: Rng + ?Sized>(self, rng: &mut R) -> usize {
        match self {
            ValueSize::Fixed(n) => n,
            ValueSize::Range { min, max } => rng.random_range(min..=max),
        }
    }
}

impl fmt::Display for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueSize::Fixed(n) => write!(f, "{n}"),
            ValueSize::Range { min, max } => write!(f, "{min}..{max}"),
        }
    }
}

impl FromStr for ValueSize {
    type Err = ArgsError;

    /// `1024` (fixed) or `100..2000` / `100..=2000` (both ends inclusive), in bytes.
    fn from_str(s: &str) -> Result<ValueSize, ArgsError> {
        let err = |reason: &str| ArgsError::ValueSize {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let number = |t: &str| -> Result<usize, ArgsError> {
            let t = t.trim();
            let n: usize = t
                .parse()
                .map_err(|_| err(&format!("{t:?} is not a number of bytes")))?;
            if n == 0 {
                return Err(err("sizes must be at least 1 byte"));
            }
            if n > MAX_VALUE_SIZE {
                return Err(err(&format!("sizes are limited to {MAX_VALUE_SIZE} bytes")));
            }
            Ok(n)
        };
        match s.split_once("..") {
            None => Ok(ValueSize::Fixed(number(s)?)),
            Some((lo, hi)) => {
                let hi = hi.strip_prefix('=').unwrap_or(hi);
                let (min, max) = (number(lo)?, number(hi)?);
                if min > max {
                    return Err(err("the range's start is above its end"));
                }
                if min == max {
                    Ok(ValueSize::Fixed(min))
                } else {
                    Ok(ValueSize::Range { min, max })
                }
            }
        }
    }
}

/// The client config file, resolved as the `shoal` CLI does: `--config`, else
/// `$SHOAL_CONFIG` (when set and not empty), else `./shoal-dev/client.toml`.
pub fn resolve_config_path(flag: Option<PathBuf>, env: Option<std::ffi::OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

fn parse_value_size(s: &str) -> Result<ValueSize, ArgsError> {
    s.parse()
}

/// shoal-bench: a load generator for a running Shoal cluster.
///
/// Runs a YCSB-style workload through the Rust SDK, in closed loop (`--concurrency`
/// workers, each sending its next operation when the last one finished) or open loop
/// (`--rate` operations per second on a fixed schedule, latency measured from each
/// operation's intended start, so a slow cluster cannot hide its queueing). Prints
/// throughput and latency percentiles per operation; optionally writes JSON and an SVG plot
/// over time, and kills and restarts a node mid-run to show what clients see during a
/// failure.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-bench",
    version,
    after_help = "Examples:\n  \
        shoal-bench --workload a --duration 30s --concurrency 64 --keys 100000 --load --json out.json\n  \
        shoal-bench --workload c --rate 5000 --duration 1m --warmup 5s --plot out.svg\n  \
        shoal-bench --workload a --duration 40s --load --kill-node n2 --kill-at 10s --restart-at 20s --plot fault.svg\n\n\
        Workloads (YCSB core): a 50% read / 50% update; b 95/5; c read-only; d 95% read of recent keys / 5% insert;\n  \
        f 50% read / 50% read-modify-write (get, then put with the get's context); write 100% update.\n\
        Updates write with the latest context this run has seen for the key, so they replace values instead of\n  \
        piling up siblings. Reads of keys never written return not-found: use --load first."
)]
pub struct Cli {
    /// Client config file (default: $SHOAL_CONFIG, then ./shoal-dev/client.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Operation mix.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    /// Key distribution (default: latest for workload d, zipfian otherwise).
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Number of keys (inserts of workload d add more after them).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub keys: u64,
    /// Value size in bytes: fixed (`1024`) or uniform over an inclusive range (`100..2000`).
    #[arg(long, default_value = "1024", value_parser = parse_value_size, value_name = "BYTES")]
    pub value_size: ValueSize,
    /// Prefix of every key; key i is PREFIX followed by i, zero-padded to 10 digits.
    #[arg(long, default_value = "bench:", value_name = "PREFIX")]
    pub key_prefix: String,
    /// Read quorum R of every get (default: the cluster's).
    #[arg(short = 'r', long)]
    pub r: Option<u8>,
    /// Write quorum W of every put (default: the cluster's).
    #[arg(short = 'w', long)]
    pub w: Option<u8>,
    /// Per-request timeout the cluster applies (default: the cluster's), e.g. `1s`.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// The client's frames in flight per node before its requests go in batch frames
    /// (default: the client config's `frames_per_node`; 0 sends every request alone).
    #[arg(long, value_name = "FRAMES")]
    pub frames_per_node: Option<usize>,
    /// Whether reads ask R primaries for their copies at once before reading through a
    /// coordinator (default: the client config's `direct_reads`, on).
    #[arg(long, value_name = "BOOL")]
    pub direct_reads: Option<bool>,

    /// Threads of the load generator's async runtime. Default 1, as redis-benchmark:
    /// one thread drives 40,000+ requests/s, and beside the nodes on a small machine a
    /// second one costs more in cross-thread wake-ups than it adds (BENCHMARKS.md, *One
    /// runtime thread in the load generator*). Raise it when one thread is saturated.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,

    /// Closed loop: workers each sending the next operation when the last finished. Also the
    /// parallelism of `--load`.
    #[arg(short = 'c', long, default_value_t = 16, value_name = "N")]
    pub concurrency: usize,
    /// Open loop: operations per second in total, scheduled at fixed intended start times.
    #[arg(long, value_name = "OPS_PER_SEC")]
    pub rate: Option<f64>,
    /// Open loop: most operations in flight; an operation due while this many are
    /// outstanding is not sent and counts as a `backlog` error.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_outstanding: usize,

    /// How long to measure, e.g. `30s`, `2m` (default 30s unless --ops is given).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", conflicts_with = "ops")]
    pub duration: Option<Duration>,
    /// Measure this many operations instead of a duration.
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,
    /// Run the workload this long before measuring; nothing from it is recorded.
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub warmup: Duration,
    /// First insert every key (0..KEYS) so reads find them; not measured. The inserts carry
    /// no context, so load a fresh cluster or a new --key-prefix: a key already there gets a
    /// second sibling.
    #[arg(long)]
    pub load: bool,
    /// Seed of every random choice (keys, operations, values).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of throughput and p99 latency per second to this file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// No live progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Kill this node's process (SIGKILL) during the run; it is found as the process
    /// `shoal node --config <CLUSTER_DIR>/<NODE>/node.toml`.
    #[arg(long, value_name = "NODE", help_heading = "Fault injection")]
    pub kill_node: Option<String>,
    /// Kill this process instead of looking the node up (its command line still gives the
    /// config to restart it with).
    #[arg(long, value_name = "PID", help_heading = "Fault injection")]
    pub kill_pid: Option<u32>,
    /// When to kill, measured from the start of the measurement (after warm-up).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Fault injection")]
    pub kill_at: Option<Duration>,
    /// When to start the node again (`shoal node --config <its config>`), from the start of
    /// the measurement. Without it the node stays down.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Fault injection")]
    pub restart_at: Option<Duration>,
    /// Directory of the `shoal dev` cluster holding <NODE>/node.toml.
    #[arg(
        long,
        default_value = "./shoal-dev",
        value_name = "DIR",
        help_heading = "Fault injection"
    )]
    pub cluster_dir: PathBuf,
    /// The `shoal` binary that restarts the node (default: `shoal` next to shoal-bench).
    #[arg(long, value_name = "PATH", help_heading = "Fault injection")]
    pub shoal_bin: Option<PathBuf>,
}

/// How operations are issued.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// `concurrency` workers, each issuing its next operation when the last finished.
    Closed {
        /// Number of workers.
        concurrency: usize,
    },
    /// Operations at fixed intended start times, `rate` per second in total.
    Open {
        /// Operations per second.
        rate: f64,
        /// Most operations in flight.
        max_outstanding: usize,
    },
}

/// When the measurement ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations have been issued.
    Ops(u64),
}

/// Which process the fault mode kills, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// The node's id, when given by `--kill-node`.
    pub node: Option<String>,
    /// `<cluster-dir>/<node>/node.toml`, when the node is given by id.
    pub node_config: Option<PathBuf>,
    /// The process, when given by `--kill-pid`.
    pub pid: Option<u32>,
    /// Kill time from the start of the measurement.
    pub kill_at: Duration,
    /// Restart time from the start of the measurement.
    pub restart_at: Option<Duration>,
    /// The binary to restart the node with (`None`: `shoal` next to shoal-bench).
    pub shoal_bin: Option<PathBuf>,
}

/// A validated run configuration.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The client config file.
    pub client_config: PathBuf,
    /// The operation mix.
    pub workload: Workload,
    /// The key distribution.
    pub distribution: Distribution,
    /// Keys `0..keys` are loaded and read.
    pub keys: u64,
    /// Size of the values written.
    pub value_size: ValueSize,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Options of every get.
    pub read: ReadOptions,
    /// Options of every put.
    pub write: WriteOptions,
    /// Closed or open loop.
    pub mode: Mode,
    /// Parallelism of the load phase.
    pub load_concurrency: usize,
    /// When the measurement ends.
    pub stop: Stop,
    /// Unrecorded time before the measurement.
    pub warmup: Duration,
    /// Whether to insert every key first.
    pub load: bool,
    /// The RNG seed.
    pub seed: u64,
    /// Overrides the client config's `frames_per_node`.
    pub frames_per_node: Option<usize>,
    /// Overrides the client config's `direct_reads`.
    pub direct_reads: Option<bool>,
    /// Worker threads of the async runtime.
    pub threads: usize,
    /// Where to write JSON results.
    pub json: Option<PathBuf>,
    /// Where to write the SVG plot.
    pub plot: Option<PathBuf>,
    /// Whether to draw a progress bar.
    pub progress: bool,
    /// The node to kill, if any.
    pub fault: Option<FaultPlan>,
}

impl Cli {
    /// Checks the options together and resolves defaults (`client_config` is the path
    /// already resolved from --config, $SHOAL_CONFIG or the default).
    pub fn into_config(self, client_config: PathBuf) -> Result<BenchConfig, ArgsError> {
        let invalid = |m: String| Err(ArgsError::Invalid(m));
        if self.keys == 0 {
            return invalid("--keys must be at least 1".into());
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return invalid(format!("--concurrency must be in 1..={MAX_CONCURRENCY}"));
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return invalid(format!("--threads must be in 1..={MAX_THREADS}"));
        }
        let mode = match self.rate {
            None => Mode::Closed {
                concurrency: self.concurrency,
            },
            Some(rate) if !(rate.is_finite() && rate > 0.0) => {
                return invalid(format!("--rate must be a positive number, got {rate}"));
            }
            Some(rate) => {
                if self.max_outstanding == 0 || self.max_outstanding > MAX_OUTSTANDING_LIMIT {
                    return invalid(format!(
                        "--max-outstanding must be in 1..={MAX_OUTSTANDING_LIMIT}"
                    ));
                }
                Mode::Open {
                    rate,
                    max_outstanding: self.max_outstanding,
                }
            }
        };
        let stop = match (self.duration, self.ops) {
            (_, Some(0)) => return invalid("--ops must be at least 1".into()),
            (_, Some(n)) => Stop::Ops(n),
            (Some(d), None) if d.is_zero() => {
                return invalid("--duration must be longer than zero".into())
            }
            (Some(d), None) => Stop::After(d),
            (None, None) => Stop::After(DEFAULT_DURATION),
        };
        let fault = self.fault_plan(stop)?;
        let mut read = ReadOptions::default();
        let mut write = WriteOptions::default();
        read.r = self.r;
        write.w = self.w;
        read.timeout = self.timeout;
        write.timeout = self.timeout;
        Ok(BenchConfig {
            client_config,
            workload: self.workload,
            distribution: self
                .distribution
                .unwrap_or_else(|| self.workload.default_distribution()),
            keys: self.keys,
            value_size: self.value_size,
            key_prefix: self.key_prefix,
            read,
            write,
            mode,
            load_concurrency: self.concurrency,
            frames_per_node: self.frames_per_node,
            direct_reads: self.direct_reads,
            threads: self.threads,
            stop,
            warmup: self.warmup,
            load: self.load,
            seed: self.seed,
            json: self.json,
            plot: self.plot,
            progress: !self.no_progress,
            fault,
        })
    }

    fn fault_plan(&self, stop: Stop) -> Result<Option<FaultPlan>, ArgsError> {
        let invalid = |m: &str| Err(ArgsError::Invalid(m.to_owned()));
        let targeted = self.kill_node.is_some() || self.kill_pid.is_some();
        let Some(kill_at) = self.kill_at else {
            if targeted || self.restart_at.is_some() {
                return invalid("--kill-node, --kill-pid and --restart-at need --kill-at");
            }
            return Ok(None);
        };
        if !targeted {
            return invalid("--kill-at needs --kill-node or --kill-pid");
        }
        if let Some(restart) = self.restart_at {
            if restart <= kill_at {
                return invalid("--restart-at must be later than --kill-at");
            }
        }
        if let Stop::After(d) = stop {
            if kill_at >= d {
                return Err(ArgsError::Invalid(format!(
                    "--kill-at {} is not within the {} run",
                    humantime::format_duration(kill_at),
                    humantime::format_duration(d)
                )));
            }
        }
        if let Some(node) = &self.kill_node {
            if node.is_empty() || node.contains(['/', '\\']) || node == "." || node == ".." {
                return Err(ArgsError::Invalid(format!(
                    "--kill-node {node:?} is not a node id"
                )));
            }
        }
        Ok(Some(FaultPlan {
            node: self.kill_node.clone(),
            node_config: self
                .kill_node
                .as_ref()
                .map(|n| self.cluster_dir.join(n).join("node.toml")),
            pid: self.kill_pid,
            kill_at,
            restart_at: self.restart_at,
            shoal_bin: self.shoal_bin.clone(),
        }))
    }
}

impl BenchConfig {
    /// The configuration as it goes into the JSON report.
    pub fn to_json(&self) -> serde_json::Value {
        let secs = |d: Duration| d.as_secs_f64();
        let (mode, concurrency, rate, max_outstanding) = match self.mode {
            Mode::Closed { concurrency } => ("closed", Some(concurrency), None, None),
            Mode::Open {
                rate,
                max_outstanding,
            } => ("open", None, Some(rate), Some(max_outstanding)),
        };
        let (duration_s, ops) = match self.stop {
            Stop::After(d) => (Some(secs(d)), None),
            Stop::Ops(n) => (None, Some(n)),
        };
        json!({
            "client_config": self.client_config.display().to_string(),
            "workload": self.workload.name(),
            "distribution": self.distribution.name(),
            "keys": self.keys,
            "value_size": self.value_size.to_string(),
            "key_prefix": self.key_prefix,
            "r": self.read.r,
            "w": self.write.w,
            "timeout_s": self.read.timeout.map(secs),
            "mode": mode,
            "concurrency": concurrency,
            "rate": rate,
            "max_outstanding": max_outstanding,
            "duration_s": duration_s,
            "ops": ops,
            "warmup_s": secs(self.warmup),
            "load": self.load,
            "seed": self.seed,
            "frames_per_node": self.frames_per_node,
            "direct_reads": self.direct_reads,
            "fault": self.fault.as_ref().map(|f| json!({
                "node": f.node,
                "pid": f.pid,
                "kill_at_s": secs(f.kill_at),
                "restart_at_s": f.restart_at.map(secs),
            })),
        })
    }

    /// The key string of key number `index`.
    pub fn key(&self, index: u64) -> String {
        format_key(&self.key_prefix, index)
    }
}

/// `prefix` followed by `index` zero-padded to 10 digits (so keys sort by number).
pub fn format_key(prefix: &str, index: u64) -> String {
    format!("{prefix}{index:010}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<BenchConfig, String> {
        let mut argv = vec!["shoal-bench"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.into_config(PathBuf::from("client.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_parse_in_human_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 2m "), Ok(Duration::from_secs(120)));
        assert!(matches!(
            parse_duration("30"),
            Err(ArgsError::Duration { .. })
        ));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn value_sizes_parse_as_fixed_or_inclusive_ranges() {
        assert_eq!("1024".parse(), Ok(ValueSize::Fixed(1024)));
        assert_eq!(
            "100..2000".parse(),
            Ok(ValueSize::Range {
                min: 100,
                max: 2000
            })
        );
        assert_eq!(
            "100..=2000".parse(),
            Ok(ValueSize::Range {
                min: 100,
                max: 2000
            })
        );
        assert_eq!("64..64".parse(), Ok(ValueSize::Fixed(64)));
        for bad in [
            "0",
            "-5",
            "abc",
            "2000..100",
            "..100",
            "100..",
            "1..2..3",
            "1e3",
            "999999999999",
        ] {
            assert!(
                matches!(bad.parse::<ValueSize>(), Err(ArgsError::ValueSize { .. })),
                "{bad} was accepted"
            );
        }
        assert_eq!(
            ValueSize::Range { min: 1, max: 9 }.to_string(),
            "1..9",
            "displays as it parses"
        );
    }

    #[test]
    fn value_size_range_samples_cover_both_ends_and_nothing_else() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let size = ValueSize::Range { min: 10, max: 12 };
        let mut seen = [false; 3];
        for _ in 0..1000 {
            let n = size.sample(&mut rng);
            assert!((10..=12).contains(&n));
            seen[n - 10] = true;
        }
        assert_eq!(seen, [true; 3]);
        assert_eq!(size.max(), 12);
    }

    #[test]
    fn the_example_command_line_parses() {
        let cfg = parse(&[
            "--workload",
            "a",
            "--duration",
            "30s",
            "--concurrency",
            "64",
            "--keys",
            "100000",
            "--value-size",
            "1024",
            "--json",
            "out.json",
        ])
        .unwrap();
        assert_eq!(cfg.workload, Workload::A);
        assert_eq!(cfg.mode, Mode::Closed { concurrency: 64 });
        assert_eq!(cfg.stop, Stop::After(Duration::from_secs(30)));
        assert_eq!(cfg.keys, 100_000);
        assert_eq!(cfg.value_size, ValueSize::Fixed(1024));
        assert_eq!(cfg.json, Some(PathBuf::from("out.json")));
        assert_eq!(cfg.distribution, Distribution::Zipfian);
        assert!(cfg.fault.is_none());
        assert_eq!(cfg.threads, 1);
        assert_eq!(parse(&["--threads", "4"]).unwrap().threads, 4);
    }

    #[test]
    fn defaults_are_a_thirty_second_closed_loop_run_of_workload_a() {
        let cfg = parse(&[]).unwrap();
        assert_eq!(cfg.stop, Stop::After(DEFAULT_DURATION));
        assert_eq!(cfg.mode, Mode::Closed { concurrency: 16 });
        assert_eq!(cfg.warmup, Duration::ZERO);
        assert!(!cfg.load);
        assert_eq!(cfg.read, ReadOptions::default());
    }

    #[test]
    fn rate_selects_open_loop_with_its_outstanding_bound() {
        let cfg = parse(&[
            "--workload",
            "d",
            "--rate",
            "5000",
            "--ops",
            "1000",
            "-r",
            "1",
            "-w",
            "3",
        ])
        .unwrap();
        assert_eq!(
            cfg.mode,
            Mode::Open {
                rate: 5000.0,
                max_outstanding: 10_000
            }
        );
        assert_eq!(cfg.stop, Stop::Ops(1000));
        assert_eq!(cfg.distribution, Distribution::Latest);
        assert_eq!((cfg.read.r, cfg.write.w), (Some(1), Some(3)));
    }

    #[test]
    fn inconsistent_options_are_refused() {
        for args in [
            &["--rate", "0"][..],
            &["--rate", "-1"],
            &["--rate", "NaN"],
            &["--keys", "0"],
            &["--concurrency", "0"],
            &["--threads", "0"],
            &["--threads", "257"],
            &["--ops", "0"],
            &["--duration", "0s"],
            &["--duration", "10s", "--ops", "5"],
            &["--kill-at", "5s"],
            &["--kill-node", "n2"],
            &[
                "--kill-node",
                "n2",
                "--kill-at",
                "10s",
                "--restart-at",
                "5s",
            ],
            &["--kill-node", "n2", "--kill-at", "40s", "--duration", "30s"],
            &["--kill-node", "../n2", "--kill-at", "1s"],
            &["--workload", "z"],
            &["--distribution", "pareto"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn kill_node_resolves_its_config_in_the_cluster_dir() {
        let cfg = parse(&[
            "--kill-node",
            "n2",
            "--kill-at",
            "10s",
            "--restart-at",
            "20s",
            "--cluster-dir",
            "/tmp/dev",
        ])
        .unwrap();
        let fault = cfg.fault.unwrap();
        assert_eq!(fault.node.as_deref(), Some("n2"));
        assert_eq!(
            fault.node_config,
            Some(PathBuf::from("/tmp/dev/n2/node.toml"))
        );
        assert_eq!(fault.kill_at, Duration::from_secs(10));
        assert_eq!(fault.restart_at, Some(Duration::from_secs(20)));
    }

    #[test]
    fn config_json_records_the_run_settings() {
        let cfg = parse(&[
            "--workload",
            "f",
            "--value-size",
            "100..2000",
            "--seed",
            "7",
        ])
        .unwrap();
        let j = cfg.to_json();
        assert_eq!(j["workload"], "f");
        assert_eq!(j["value_size"], "100..2000");
        assert_eq!(j["seed"], 7);
        assert_eq!(j["mode"], "closed");
        assert_eq!(j["duration_s"], 30.0);
    }

    #[test]
    fn client_config_comes_from_the_flag_then_the_environment_then_the_default() {
        let flag = Some(PathBuf::from("a.toml"));
        let env = Some(std::ffi::OsString::from("b.toml"));
        assert_eq!(
            resolve_config_path(flag, env.clone()),
            PathBuf::from("a.toml")
        );
        assert_eq!(resolve_config_path(None, env), PathBuf::from("b.toml"));
        assert_eq!(
            resolve_config_path(None, Some(std::ffi::OsString::new())),
            PathBuf::from(DEFAULT_CONFIG_PATH)
        );
        assert_eq!(
            resolve_config_path(None, None),
            PathBuf::from(DEFAULT_CONFIG_PATH)
        );
    }

    #[test]
    fn keys_are_prefixed_and_zero_padded() {
        assert_eq!(format_key("bench:", 42), "bench:0000000042");
    }
}
