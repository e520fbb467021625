//! The raw limit of the transport: a QUIC request/response loop over loopback with
//! Shoal's own endpoints (quinn + rustls, mutual TLS, one stream per request, one
//! length-prefixed frame each way) and an echo handler that does no work.
//!
//! `raw-quinn --request-bytes 1100 --response-bytes 1100 --concurrency 64 --duration 10s`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use hdrhistogram::Histogram;
use shoal_ring::NodeId;
use shoal_transport::{certs, Endpoint, Handler, PeerRole, TlsIdentity, TransportConfig};

/// Measure QUIC request/response throughput and latency over loopback.
#[derive(Debug, Parser)]
struct Args {
    /// Bytes per request frame (a 1 KiB put is about 1,100 bytes on the wire).
    #[arg(long, default_value_t = 1100)]
    request_bytes: usize,
    /// Bytes per response frame.
    #[arg(long, default_value_t = 64)]
    response_bytes: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests carried per frame (a batch: one stream carries `batch` requests and their
    /// responses, as `PeerRequest::Batch` does between nodes); throughput counts requests,
    /// latency is the frame's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    batch: u32,
    /// How long to measure (after a 1 s warm-up).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Both endpoints' `transport.max_udp_payload_bytes` (the largest datagram path MTU
    /// discovery searches for).
    #[arg(long, default_value_t = TransportConfig::default().max_udp_payload_bytes)]
    max_udp_payload: u16,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

struct Echo {
    response: Vec<u8>,
}

impl Handler for Echo {
    async fn handle(&self, _peer: PeerRole, _request: Vec<u8>) -> Vec<u8> {
        self.response.clone()
    }
}

fn identity(ca: &certs::CaPem, node: bool) -> anyhow::Result<TlsIdentity> {
    let leaf = if node {
        certs::issue_node_cert_pem(ca, &NodeId::new("bench")?)?
    } else {
        certs::issue_client_cert_pem(ca, "bench")?
    };
    Ok(TlsIdentity::from_pem(
        &ca.cert_pem,
        &leaf.cert_chain_pem,
        &leaf.key_pem,
    )?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ca = certs::generate_ca_pem()?;
    let config = TransportConfig {
        max_udp_payload_bytes: args.max_udp_payload,
        ..TransportConfig::default()
    };
    config.validate()?;
    let server = Endpoint::server(
        "127.0.0.1:0".parse()?,
        &identity(&ca, true)?,
        config.clone(),
    )
    .context("binding the server")?;
    let batch = args.batch as usize;
    let _serving = server.serve(Arc::new(Echo {
        response: vec![7u8; args.response_bytes * batch],
    }));
    let client = Endpoint::client_on("127.0.0.1:0".parse()?, &identity(&ca, false)?, config)?;
    let addr = server.local_addr();
    let warmup_end = Instant::now() + Duration::from_secs(1);
    let end = warmup_end + args.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let client = client.clone();
        let payload = vec![1u8; args.request_bytes * batch];
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let ok = client
                    .request(addr, None, payload.clone(), Duration::from_secs(5))
                    .await
                    .is_ok();
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if now >= warmup_end {
                    if ok {
                        hist.record((now - start).as_micros().max(1) as u64)?;
                    } else {
                        errors += 1;
                    }
                }
            }
            Ok::<_, anyhow::Error>((hist, errors))
        }));
    }
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        total.add(&h)?;
        errors += e;
    }
    client.close().await;
    server.close().await;
    let secs = args.duration.as_secs_f64();
    let ops = (total.len() * batch as u64) as f64 / secs;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "request_bytes": args.request_bytes,
                "response_bytes": args.response_bytes,
                "concurrency": args.concurrency,
                "batch": args.batch,
                "max_udp_payload": args.max_udp_payload,
                "throughput": ops,
                "p50_us": total.value_at_quantile(0.5),
                "p99_us": total.value_at_quantile(0.99),
                "p999_us": total.value_at_quantile(0.999),
                "errors": errors,
            })
        );
    } else {
        println!(
            "quinn loopback, {} B requests, {} B responses, concurrency {}, {} per frame: {:.0} req/s, p50 {} µs, p99 {} µs, p999 {} µs, errors {}",
            args.request_bytes,
            args.response_bytes,
            args.concurrency,
            args.batch,
            ops,
            total.value_at_quantile(0.5),
            total.value_at_quantile(0.99),
            total.value_at_quantile(0.999),
            errors
        );
    }
    Ok(())
}
