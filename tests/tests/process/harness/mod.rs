//! The one harness of the real-process tests.
//!
//! - [`Cluster`]: a `shoal dev init` directory in a temporary directory, on a block of
//!   ports free at the time ([`free_port_block`]), with every node running as its own
//!   process of the real CLI. It sends signals, restarts nodes, reads metrics and member
//!   views, and on drop kills every process it started — printing the tail of every
//!   node's log and keeping the directory when the test panics.
//!   [`Placement`] puts its nodes in network namespaces of their own instead (the
//!   `netns` suite).
//! - [`shoal`] and [`Cluster::cli`]: one run of the CLI, bounded, with its output.
//! - [`scrape`], [`http_get`] and [`Exposition`]: a plain HTTP/1.0 GET and a parser of
//!   the Prometheus text format, so that no HTTP client crate is needed.
//! - [`Catalogue`]: the metric tables of `docs/METRICS.md`.
//! - [`LayoutProbe`], [`Load`], [`assert_owners_store`]: layout changes (issue 9): one
//!   node's own view of the layout, a W = 2 load recording what was acknowledged, and the
//!   check that every owner of a stopped cluster's final layout stores every such key.
//! - [`fault_workload`]: a scripted workload with a paused and a killed node that makes
//!   the nodes emit every metric except the fault-only ones.
//!
//! Waiting is always polling a condition with a deadline ([`wait_until`]); nothing
//! sleeps to synchronise.

mod catalogue;
mod cluster;
mod command;
pub mod fault_workload;
mod kv;
mod layout;
mod metrics;
mod process;
mod toml;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

pub use catalogue::{Catalogue, MetricKind};
pub use cluster::{
    ask, connect, foreign_client_files, Cluster, Placement, CLIENT_CONNECT_TIMEOUT,
    RAW_REQUEST_TIMEOUT,
};
pub use command::{shoal, Run};
pub use kv::{
    assert_all_readable, assert_none_failed, check_read, key_values, pending_hints, put_all,
    values_of, wait_hints_drained,
};
pub use layout::{
    assert_owners_store, stored_layout, transfer_progress, try_ask, LayoutProbe, Load,
    CHANGE_TIMEOUT,
};
pub use metrics::{http_get, scrape, url_encode};
pub use process::{
    free_port_block, log_tail, process_alive, retry_on_port_conflict, rss_bytes, spawn_logged,
    wait_exit,
};

/// The `shoal` CLI built into this package.
pub const BIN: &str = env!("CARGO_BIN_EXE_shoal-node-under-test");
/// Pause between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a cluster, a restarted node or another server of a test may take to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 60;

/// The repository root (the workspace directory). The test runner's (cargo's, nextest's)
/// `CARGO_MANIFEST_DIR` first: the compiled-in one names the checkout the binary was
/// built in, which a shared target directory may have reused for another checkout.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// Polls `probe` every [`POLL_INTERVAL`] until it returns `Ok`, and returns its value.
/// Panics after `timeout` with `what` and the last `Err` the probe gave (what it saw).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut polls = 0u64;
    loop {
        polls += 1;
        let last = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} ({polls} polls) waiting for {what}; last seen: {last}"
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `task` on every item with at most `limit` in flight; returns the errors.
pub async fn run_bounded<T, F, Fut>(items: Vec<T>, limit: usize, task: F) -> Vec<String>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut errors = Vec::new();
    let mut items = items.into_iter();
    loop {
        while set.len() < limit {
            match items.next() {
                Some(item) => {
                    set.spawn(task(item));
                }
                None => break,
            }
        }
        match set.join_next().await {
            None => return errors,
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => errors.push(e),
            Some(Err(e)) => errors.push(format!("task failed: {e}")),
        }
    }
}
