//! Helpers of the observability tests (`metrics_catalogue.rs`, `prometheus.rs`).
//!
//! - [`Catalogue`]: the metric tables of `docs/METRICS.md`.
//! - [`http_get`] and [`Exposition`]: a plain HTTP/1.0 GET over `std::net::TcpStream` and a
//!   parser of the Prometheus text format, so no HTTP client crate is needed.
//! - [`ObsCluster`]: a 3-node `shoal dev init` cluster, each node its own process of the
//!   real CLI, killed on drop (its logs printed and its directory kept when the test
//!   panics).
//! - [`run_fault_workload`]: a scripted workload with a paused node and a killed node
//!   that makes the nodes emit every metric except the fault-only ones.
//!
//! Waiting is always polling a condition with a deadline ([`wait_until`]). TOML editing
//! and polling come from the process tests' shared helpers (`../common/mod.rs`).
// Each test binary includes this module and uses a part of it.
#![allow(dead_code, unused_imports)]

#[path = "../common/mod.rs"]
mod common;

mod catalogue;
mod cluster;
mod exposition;
mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use catalogue::{Catalogue, MetricKind, CATALOGUE_HEADER};
pub use cluster::ObsCluster;
pub use common::{set_toml, wait_until, BIN, POLL_INTERVAL};
pub use exposition::{http_get, scrape, url_encode, Exposition};
pub use workload::{run_fault_workload, workload_settings};

/// How long a cluster or a restarted node may take to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a condition of the workload (a member seen down, hints drained, a repair
/// done) may take on a loaded machine.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(45);
/// Timeout of one HTTP exchange (a scrape or a Prometheus API call).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Nodes of every test cluster.
pub const NODES: usize = 3;

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}
