//! The raw limit of storage: RocksDB puts and gets through Shoal's storage engine, with
//! the node's default settings (buffered WAL, 256 MiB block cache, LZ4 below L1).
//!
//! `raw-rocksdb --keys 100000 --value-bytes 1100 --threads 1 --duration 10s`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use shoal_storage::{Durability, RocksOptions, RocksStorage, Space, Storage};

/// Measure RocksDB put and get throughput and latency.
#[derive(Debug, Parser)]
struct Args {
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per value (a 1 KiB value is about 1,100 bytes as a stored object).
    #[arg(long, default_value_t = 1100)]
    value_bytes: usize,
    /// Threads issuing operations.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// How long to measure each of puts and gets.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// fsync every write (`sync`) or not (`buffered`, the node's default).
    #[arg(long, default_value = "buffered")]
    durability: String,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

fn key(i: u64) -> Vec<u8> {
    // The node's layout: be32(partition) ‖ be16(segment) ‖ key.
    let mut k = ((i % 256) as u32).to_be_bytes().to_vec();
    k.extend_from_slice(&((i % 1024) as u16).to_be_bytes());
    k.extend_from_slice(format!("bench-key-{i:010}").as_bytes());
    k
}

fn run(
    storage: &Arc<RocksStorage>,
    args: &Args,
    get: bool,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let end = Instant::now() + args.duration;
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let storage = storage.clone();
        let stop = stop.clone();
        let (keys, value_bytes) = (args.keys, args.value_bytes);
        handles.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
            let value = vec![42u8; value_bytes];
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut misses = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let k = key(rng.random_range(0..keys));
                let start = Instant::now();
                if get {
                    if storage.get(Space::Objects, &k)?.is_none() {
                        misses += 1;
                    }
                } else {
                    storage.put(Space::Objects, &k, &value)?;
                }
                hist.record(start.elapsed().as_micros().max(1) as u64)?;
            }
            Ok::<_, anyhow::Error>((hist, misses))
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut misses = 0;
    for h in handles {
        let (hist, m) = h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        total.add(&hist)?;
        misses += m;
    }
    stop.store(true, Ordering::Relaxed);
    Ok((total, misses))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let durability = match args.durability.as_str() {
        "sync" => Durability::Sync,
        "buffered" => Durability::Buffered,
        other => anyhow::bail!("--durability must be sync or buffered, not {other}"),
    };
    let storage = Arc::new(RocksStorage::open(
        dir.path(),
        RocksOptions {
            durability,
            ..RocksOptions::default()
        },
    )?);
    // Load every key once so that gets hit.
    let value = vec![42u8; args.value_bytes];
    for i in 0..args.keys {
        storage.put(Space::Objects, &key(i), &value)?;
    }
    for (name, get) in [("put", false), ("get", true)] {
        let (hist, misses) = run(&storage, &args, get)?;
        let ops = hist.len() as f64 / args.duration.as_secs_f64();
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "op": name, "threads": args.threads, "value_bytes": args.value_bytes,
                    "durability": args.durability, "throughput": ops,
                    "p50_us": hist.value_at_quantile(0.5), "p99_us": hist.value_at_quantile(0.99),
                    "misses": misses,
                })
            );
        } else {
            println!(
                "rocksdb {name}, {} B values, {} thread(s), {}: {:.0} ops/s, p50 {} µs, p99 {} µs",
                args.value_bytes,
                args.threads,
                args.durability,
                ops,
                hist.value_at_quantile(0.5),
                hist.value_at_quantile(0.99)
            );
        }
    }
    storage.close()?;
    Ok(())
}
