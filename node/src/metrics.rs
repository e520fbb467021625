//! The Prometheus exporter: every node serves its metrics over HTTP.

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::config::NodeConfig;

/// Histogram buckets for latencies, from 10 µs to 10 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets for sizes, from 64 B to 64 MiB.
pub const SIZE_BUCKETS_BYTES: &[f64] = &[
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Install the global recorder and its HTTP listener if `metrics_listen` is set. Must run
/// inside a tokio runtime. Every series carries a `node` label.
pub fn install(cfg: &NodeConfig) -> anyhow::Result<()> {
    let Some(addr) = cfg.metrics_listen else {
        return Ok(());
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .add_global_label("node", cfg.id.to_string())
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), SIZE_BUCKETS_BYTES)?
        .install()
        .with_context(|| format!("starting the metrics listener on {addr}"))?;
    Ok(())
}
