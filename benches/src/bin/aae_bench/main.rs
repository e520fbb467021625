//! `aae-bench`: what an anti-entropy exchange costs as a function of how much two
//! replicas differ, next to a full scan.
//!
//! Two replicas (real engines and executors on RocksDB, in temporary directories) are
//! loaded with the same `--keys` objects. For each number of differences, that many keys
//! are made to differ (a newer version on one side, or the key lost on one side), then
//! one anti-entropy round runs over every partition through an in-process message pump
//! that encodes and decodes every message. It reports the round's wall time, RPCs, bytes
//! on the wire and keys repaired, and next to them the time to scan and digest every
//! object of a replica and the bytes of the (key, digest) list a scan-based comparison
//! would send. Every case starts from identical replicas: repairs restore them.
//!
//! ```text
//! cargo run --release -p shoal-bench --bin aae-bench -- --keys 1000000 --json aae.json
//! ```

mod cluster;
mod data;
mod report;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde::Serialize;

use crate::cluster::{is_exchange_op, is_object_op, Cluster};
use crate::report::{Case, Run};

/// Replicas (and nodes in the ring): every partition lives on both.
const REPLICAS: usize = 2;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "aae-bench",
    about = "Cost of anti-entropy exchanges as a function of the differences, next to a full scan"
)]
struct Args {
    /// Keys per replica.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Partitions of the ring (a power of two).
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    /// Numbers of differing keys to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 10, 1_000, 100_000])]
    differences: Vec<u64>,
    /// Rounds per number of differences (fresh differences each time); the table shows
    /// the median time and the mean counts.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Seed of the data and of the choice of differing keys.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for the temporary RocksDB stores (default: the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The machine the numbers come from.
#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    memory_bytes: Option<u64>,
    os: &'static str,
    arch: &'static str,
}

impl Machine {
    fn current() -> Machine {
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_bytes: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|s| mem_total_bytes(&s)),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The settings of a run, as written to the JSON.
#[derive(Debug, Serialize)]
struct Settings {
    keys: u64,
    key_bytes: usize,
    value_bytes: usize,
    partitions: u32,
    replicas: usize,
    merkle_segments: u32,
    aae_batch: usize,
    max_concurrent_exchanges: usize,
    repeat: u32,
    seed: u64,
    storage: &'static str,
}

/// Everything the JSON holds.
#[derive(Debug, Serialize)]
struct Output {
    unix_time: u64,
    machine: Machine,
    settings: Settings,
    load_seconds: f64,
    warm_up_seconds: f64,
    cases: Vec<Case>,
    exchange_bytes_grow_with_differences: bool,
    exchange_time_grows_with_differences: bool,
}

/// The seed of repetition `r` of the case with `k` differences.
fn run_seed(seed: u64, k: u64, r: u32) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03)
        ^ u64::from(r)
            .wrapping_add(1)
            .wrapping_mul(0x8CB9_2BA7_2F3D_8DD7)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if let Some(k) = args.differences.iter().find(|k| **k > args.keys) {
        bail!("{k} differences asked of {} keys", args.keys);
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("aae-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("make a temporary directory in {}", base.display()))?;
    let mut cluster = Cluster::open(dir.path(), REPLICAS, args.partitions)?;
    let aae_batch = cluster.nodes[0].engine.config().aae.batch;

    eprintln!(
        "loading {} keys x {} B into {REPLICAS} replicas under {}",
        args.keys,
        args.value_bytes,
        dir.path().display()
    );
    let load = data::load(&cluster, args.keys, args.value_bytes, args.seed)?;
    eprintln!("loaded in {load:.1?}");
    let warm_up = cluster.warm_up()?;
    let differing = cluster.differing_partitions();
    if !differing.is_empty() {
        bail!("replicas differ after loading: partitions {differing:?}");
    }
    eprintln!("warm-up (first round, reaper pass) in {warm_up:.1?}");
    // One scan first, so that every measured scan finds the same (warm) block cache.
    let first = data::full_scan(cluster.nodes[0].executor.storage(), cluster.ring())?;
    if first.keys != args.keys {
        bail!("replica 0 holds {} keys, {} loaded", first.keys, args.keys);
    }

    let mut cases = Vec::with_capacity(args.differences.len());
    for &k in &args.differences {
        let mut runs = Vec::with_capacity(args.repeat as usize);
        for r in 0..args.repeat {
            runs.push(measure(&mut cluster, &args, k, r)?);
        }
        cases.push(Case::from_runs(k, runs));
    }

    println!(
        "Anti-entropy exchange vs full scan: {} keys per replica, {} B values, {} partitions, \
         {REPLICAS} replicas on RocksDB; median of {} rounds",
        args.keys, args.value_bytes, args.partitions, args.repeat
    );
    println!();
    print!("{}", report::table(&cases));
    let bytes_grow = report::grows_with_differences(&cases, |c| c.bytes as f64);
    let time_grows = report::grows_with_differences(&cases, |c| c.exchange_seconds);
    println!();
    println!("exchange bytes grow with the differences: {bytes_grow}");
    println!("exchange time grows with the differences: {time_grows}");

    if let Some(path) = &args.json {
        let output = Output {
            unix_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            machine: Machine::current(),
            settings: Settings {
                keys: args.keys,
                key_bytes: data::KEY_BYTES,
                value_bytes: args.value_bytes,
                partitions: args.partitions,
                replicas: REPLICAS,
                merkle_segments: shoal_proto::AAE_SEGMENTS,
                aae_batch,
                max_concurrent_exchanges: 1,
                repeat: args.repeat,
                seed: args.seed,
                storage: "rocksdb",
            },
            load_seconds: load.as_secs_f64(),
            warm_up_seconds: warm_up.as_secs_f64(),
            cases,
            exchange_bytes_grow_with_differences: bytes_grow,
            exchange_time_grows_with_differences: time_grows,
        };
        let text = serde_json::to_string_pretty(&output)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    drop(cluster);
    dir.close().context("remove the temporary stores")?;
    Ok(())
}

/// Make `k` keys differ, run one round, check that it repaired them, scan a replica.
fn measure(cluster: &mut Cluster, args: &Args, k: u64, r: u32) -> anyhow::Result<Run> {
    let seed = run_seed(args.seed, k, r);
    let setup = data::make_differences(cluster, args.keys, k, args.value_bytes, seed)?;
    let partitions_differing = cluster.differing_partitions().len() as u64;
    let round = cluster.round()?;
    let left = cluster.differing_partitions();
    if !left.is_empty() {
        bail!(
            "{k} differences: {} partitions still differ after the round",
            left.len()
        );
    }
    if round.exchanges != u64::from(args.partitions) {
        bail!(
            "{k} differences: {} exchanges ran, expected one per partition ({})",
            round.exchanges,
            args.partitions
        );
    }
    if round.keys_repaired != k {
        bail!(
            "{k} differences: {} keys repaired, expected {k}",
            round.keys_repaired
        );
    }
    let scan = data::full_scan(cluster.nodes[0].executor.storage(), cluster.ring())?;
    if scan.keys != args.keys {
        bail!(
            "replica 0 holds {} keys after the round, expected {}",
            scan.keys,
            args.keys
        );
    }
    let exchange = round.traffic.total(is_exchange_op);
    let objects = round.traffic.total(is_object_op);
    let run = Run {
        differences: k,
        partitions_differing,
        exchange_seconds: round.elapsed.as_secs_f64(),
        exchanges: round.exchanges,
        rpcs: exchange.rpcs,
        bytes: exchange.bytes(),
        object_bytes: objects.bytes(),
        keys_repaired: round.keys_repaired,
        per_op: round
            .traffic
            .ops
            .into_iter()
            .filter(|(op, _)| is_exchange_op(op))
            .collect(),
        storage: round.storage,
        codec_seconds: round.codec.as_secs_f64(),
        full_scan_seconds: scan.elapsed.as_secs_f64(),
        full_scan_bytes: scan.list_bytes,
        full_scan_keys: scan.keys,
        setup_seconds: setup.as_secs_f64(),
    };
    let storage_seconds: f64 = run.storage.values().map(|t| t.seconds).sum();
    eprintln!(
        "  {k} differences, round {}: {} partitions differed, exchange {} ({} storage, {} codec) \
         in {} RPCs, {}, {} keys repaired; full scan {}",
        r + 1,
        run.partitions_differing,
        report::human_seconds(run.exchange_seconds),
        report::human_seconds(storage_seconds),
        report::human_seconds(run.codec_seconds),
        run.rpcs,
        report::human_bytes(run.bytes),
        run.keys_repaired,
        report::human_seconds(run.full_scan_seconds),
    );
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:       24567896 kB\nMemFree:        1 kB\n";
        assert_eq!(mem_total_bytes(text), Some(24_567_896 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn every_repetition_gets_its_own_seed() {
        assert_ne!(run_seed(1, 10, 0), run_seed(1, 10, 1));
        assert_ne!(run_seed(1, 10, 0), run_seed(1, 1000, 0));
        assert_eq!(run_seed(1, 10, 0), run_seed(1, 10, 0));
    }

    #[test]
    fn a_round_repairs_every_difference_and_costs_more_with_more_differences() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args::parse_from(["aae-bench", "--keys", "2000", "--partitions", "8"]);
        let mut cluster = Cluster::open(dir.path(), REPLICAS, 8).unwrap();
        data::load(&cluster, args.keys, args.value_bytes, args.seed).unwrap();
        cluster.warm_up().unwrap();
        let none = measure(&mut cluster, &args, 0, 0).unwrap();
        let some = measure(&mut cluster, &args, 40, 0).unwrap();
        // Equal roots: one root comparison per partition and nothing else.
        assert_eq!(none.rpcs, 8);
        assert_eq!(none.keys_repaired, 0);
        assert_eq!(none.object_bytes, 0);
        assert_eq!(some.keys_repaired, 40);
        assert!(some.bytes > none.bytes && some.object_bytes > 0);
        assert_eq!(some.full_scan_keys, 2000);
        assert_eq!(
            some.full_scan_bytes,
            2000 * data::pair_bytes(data::KEY_BYTES)
        );
        assert!(cluster.differing_partitions().is_empty());
    }

    #[test]
    fn default_arguments_are_the_issue_s_cases() {
        let args = Args::parse_from(["aae-bench"]);
        assert_eq!(args.keys, 1_000_000);
        assert_eq!(args.differences, [0, 10, 1_000, 100_000]);
        let args = Args::parse_from(["aae-bench", "--keys", "1000", "--differences", "0,5"]);
        assert_eq!(args.keys, 1000);
        assert_eq!(args.differences, [0, 5]);
    }
}
