//! Hostile clients against a 3-node cluster (issue 11). Each kind of abuse of
//! `shoal-hostile` runs for a few seconds while a well-behaved SDK client keeps writing
//! and reading; the well-behaved client must keep a success rate above 99%, no node's
//! in-flight byte gauge may pass its budget, no node's memory may pass a bound derived
//! from it, every node must still serve afterwards, and the nodes must answer each kind
//! as the issue requires (e.g. `InvalidOptions` to huge timeouts). One report line per
//! kind goes to stderr.
//!
//! The hostile client holds its own client certificate (`hostile`), as a separate
//! tenant would: the per-name caps (connections, byte share) are what keep it from
//! taking the well-behaved client's (`client`) share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_client::Client;
use shoal_transport::TransportConfig;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::harness::{check_read, rss_bytes, scrape, Cluster, POLL_INTERVAL};

/// The hostile client built into this package.
const HOSTILE: &str = env!("CARGO_BIN_EXE_shoal-hostile");
/// How long each kind of abuse runs.
const HOSTILE_DURATION: Duration = Duration::from_secs(4);
/// How long the hostile client waits, after its run, for the node's verdict on streams
/// still open (the node's own read deadline is longer: those end as `still_open`).
const HOSTILE_GRACE: Duration = Duration::from_secs(2);
/// Room beyond duration and grace for the hostile process to finish (closing its
/// connections, printing its summary) before the test gives up on it.
const HOSTILE_EXIT_SLACK: Duration = Duration::from_secs(30);
/// Concurrent workers of the well-behaved client.
const GOOD_WORKERS: usize = 4;
/// Upper bound on the well-behaved client's operations per kind.
const MAX_GOOD_OPS: u64 = 50_000;
/// Fewer operations than this in a window would make the success rate meaningless.
const MIN_GOOD_OPS: u64 = 50;
/// Required success rate of the well-behaved client.
const MIN_SUCCESS_RATE: f64 = 0.99;
/// Longest wait, after a kind, for the nodes to finish the work it left them (in-flight
/// gauges back near zero) before the next kind starts, so that kinds are measured apart.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// In-flight bytes (client plus peer) below which a node counts as settled: the
/// well-behaved client's own small requests.
const SETTLED_INFLIGHT_BYTES: f64 = 1024.0 * 1024.0;
/// Memory a node may gain during one kind beyond its in-flight budgets (client and peer:
/// client requests cause peer traffic, so both can be full at once): QUIC connection
/// state and buffers of thousands of connections and streams, which the byte budgets do
/// not count, and allocator fragmentation, which keeps freed memory resident.
const RSS_HEADROOM: u64 = 256 << 20;

/// Counters whose growth during a kind (summed over the nodes) the report shows: how
/// the nodes defended themselves, whether node-to-node requests suffered (timeouts,
/// copies of writes sent again, datagrams dropped, idle polling cut short by a busy
/// CPU), and how many requests were answered `Overloaded`, and of those how many by the
/// coordinators' read budget.
const COUNTERS: [(&str, &[(&str, &str)]); 10] = [
    ("shoal_transport_requests_refused_total", &[]),
    ("shoal_transport_connections_refused_total", &[]),
    ("shoal_transport_stream_timeouts_total", &[]),
    ("shoal_transport_unresponsive_connections_total", &[]),
    (
        "shoal_coordinator_reads_deferred_total",
        &[("outcome", "overloaded")],
    ),
    (
        "shoal_coordinator_requests_total",
        &[("result", "overloaded")],
    ),
    ("shoal_udp_receive_drops_total", &[]),
    ("shoal_idle_poll_contended_total", &[]),
    (
        "shoal_transport_requests_total",
        &[("direction", "out"), ("result", "timeout")],
    ),
    ("shoal_replica_writes_resent_total", &[]),
];

/// A kind of abuse and what the nodes must answer to it.
struct Case {
    kind: &'static str,
    /// Extra arguments of `shoal-hostile`.
    args: &'static [&'static str],
    /// Checks the hostile client's summary against the required behaviour.
    check: fn(&Summary, &TransportConfig, usize) -> Result<(), String>,
}

const CASES: &[Case] = &[
    Case {
        kind: "huge-timeouts",
        args: &[],
        check: |s, _, _| s.only(&["error:InvalidOptions"]),
    },
    Case {
        kind: "half-frames",
        args: &[],
        // Every half frame is refused or stopped by the node, never served.
        check: |s, _, _| {
            s.only_prefixed(&["stopped:", "still_open", "open_failed", "write_refused"])
        },
    },
    Case {
        kind: "unread-responses",
        // 1,024 unread 1 MiB gets per connection. Before the coordinator's read budget
        // (`limits.max_read_bytes_in_flight`) the responses were bounded by the transport
        // budgets but the replica copies the coordinators pulled in for them were not:
        // with 64 to 1,024 streams the nodes' RSS reached 0.2-1.3 GiB and the
        // well-behaved client saw up to 2% `Unavailable` (peer links stalled under the
        // copies, then a live peer was marked down). With it, runs at 64, 256 and 1,024
        // streams gave 99.9-100% ok and RSS at most 232 MiB.
        args: &["--streams", "1024"],
        check: |s, _, _| {
            let puts = s.count("setup_put:answered");
            if puts == 16 {
                Ok(())
            } else {
                Err(format!(
                    "only {puts} of the 16 large values were written first"
                ))
            }
        },
    },
    Case {
        kind: "many-connections",
        args: &["--connections", "3000", "--concurrency", "64"],
        // Each node keeps at most `max_connections_per_client` of one name's connections
        // at once. A held connection the node closes (unresponsive under load) frees its
        // slot for a later one, hence the tenth of slack on the connections served.
        check: |s, config, nodes| {
            let cap = (config.max_connections_per_client * nodes) as u64;
            let answered = s.count("answered");
            if answered > cap + cap / 10 {
                return Err(format!(
                    "{answered} connections served, above {nodes} x {} per client name",
                    config.max_connections_per_client
                ));
            }
            if s.actions > cap + 100 && s.count("transport:refused") == 0 {
                return Err(format!("{} connections and none refused", s.actions));
            }
            Ok(())
        },
    },
    Case {
        kind: "handshake-flood",
        args: &[],
        check: |s, _, _| s.only(&["refused"]),
    },
    Case {
        kind: "malformed-frames",
        args: &[],
        // The node refuses each malformed frame (a reset or a stop), and answers a
        // well-framed garbage request with an error; nothing is served.
        check: |s, _, _| s.only_prefixed(&["reset:", "stopped:", "error:", "open_failed"]),
    },
    Case {
        kind: "peer-messages",
        args: &[],
        check: |s, _, _| s.only(&["error:NotAllowed"]),
    },
    Case {
        kind: "status-flood",
        args: &["--concurrency", "256"],
        // Status is admitted against the in-flight bound with data requests (the engine
        // test `status_requests_share_the_inflight_bound_with_data_requests` drives it
        // past the bound): every one is answered, or refused as `Overloaded`, and the
        // well-behaved client keeps its success rate.
        check: |s, _, _| s.only(&["answered", "error:Overloaded"]),
    },
];

/// The summary `shoal-hostile --json` prints.
#[derive(serde::Deserialize, Debug)]
struct Summary {
    actions: u64,
    outcomes: BTreeMap<String, u64>,
}

impl Summary {
    fn count(&self, label: &str) -> u64 {
        self.outcomes.get(label).copied().unwrap_or(0)
    }

    /// Checks that every outcome is one of `labels`.
    fn only(&self, labels: &[&str]) -> Result<(), String> {
        self.only_where(|l| labels.contains(&l), labels)
    }

    /// Checks that every outcome starts with one of `prefixes`.
    fn only_prefixed(&self, prefixes: &[&str]) -> Result<(), String> {
        self.only_where(|l| prefixes.iter().any(|p| l.starts_with(p)), prefixes)
    }

    fn only_where(&self, ok: impl Fn(&str) -> bool, want: &[&str]) -> Result<(), String> {
        let other: BTreeMap<&String, &u64> = self.outcomes.iter().filter(|(l, _)| !ok(l)).collect();
        if other.is_empty() {
            Ok(())
        } else {
            Err(format!("outcomes other than {want:?}: {other:?}"))
        }
    }
}

/// What the well-behaved client saw during one kind.
#[derive(Default)]
struct Good {
    ok: u64,
    failed: u64,
    first_errors: Vec<String>,
}

impl Good {
    fn rate(&self) -> f64 {
        let total = self.ok + self.failed;
        if total == 0 {
            0.0
        } else {
            self.ok as f64 / total as f64
        }
    }
}

/// The largest samples of each node during one kind.
#[derive(Default, Clone)]
struct Peak {
    rss: u64,
    client_inflight: f64,
    peer_inflight: f64,
    scrape_errors: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_clients_leave_a_well_behaved_client_served_within_memory_budgets() {
    // The node config has no `[transport]` section yet: the nodes run with the
    // transport's defaults, which are therefore the budgets checked.
    let budget = TransportConfig::default();
    let mut cluster = Cluster::start(3, "").await;
    let hostile_config = hostile_client_config(cluster.dir());
    let client = cluster.client().await;
    // Warm up the well-behaved client (connections, routing) before the baseline.
    let warm = good_client(
        client.clone(),
        "warm".to_owned(),
        Arc::new(AtomicBool::new(true)),
    )
    .await;
    assert!(
        warm.failed == 0 && warm.ok > 0,
        "warm-up: {} ok, {} failed: {:?}",
        warm.ok,
        warm.failed,
        warm.first_errors
    );
    let mut failures = Vec::new();
    for case in CASES {
        // Each kind's own baseline: the allocator keeps what an earlier kind freed.
        let baseline: Vec<u64> = pids(&cluster)
            .iter()
            .map(|&pid| rss_bytes(pid).expect("a running node's RSS"))
            .collect();
        let failed = run_case(
            &mut cluster,
            &client,
            &hostile_config,
            case,
            &budget,
            &baseline,
        )
        .await;
        failures.extend(failed.into_iter().map(|f| format!("{}: {f}", case.kind)));
    }
    client.close().await;
    assert!(
        failures.is_empty(),
        "{} hostile-client requirement(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs one kind of abuse next to the well-behaved client; prints its report line and
/// returns the requirements it failed.
async fn run_case(
    cluster: &mut Cluster,
    client: &Client,
    hostile_config: &Path,
    case: &Case,
    budget: &TransportConfig,
    baseline: &[u64],
) -> Vec<String> {
    let mut failures = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let counters_before = counters(cluster).await;
    let hostile = tokio::process::Command::new(HOSTILE)
        .arg("--config")
        .arg(hostile_config)
        .args(["--kind", case.kind, "--json"])
        .arg("--duration")
        .arg(format!("{}ms", HOSTILE_DURATION.as_millis()))
        .arg("--grace")
        .arg(format!("{}ms", HOSTILE_GRACE.as_millis()))
        .args(case.args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting shoal-hostile");
    let sampler = tokio::spawn(sample(cluster_targets(cluster), stop.clone()));
    let good = tokio::spawn(good_client(
        client.clone(),
        case.kind.to_owned(),
        stop.clone(),
    ));
    let output = tokio::time::timeout(
        HOSTILE_DURATION + HOSTILE_GRACE + HOSTILE_EXIT_SLACK,
        hostile.wait_with_output(),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let good = good.await.expect("the well-behaved client's task");
    let peaks = sampler.await.expect("the sampler's task");

    let summary = match output {
        Err(_) => {
            failures.push("shoal-hostile did not exit in time".to_owned());
            None
        }
        Ok(Err(e)) => {
            failures.push(format!("waiting for shoal-hostile: {e}"));
            None
        }
        Ok(Ok(out)) if !out.status.success() => {
            failures.push(format!(
                "shoal-hostile failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            None
        }
        Ok(Ok(out)) => match serde_json::from_slice::<Summary>(&out.stdout) {
            Ok(s) => Some(s),
            Err(e) => {
                failures.push(format!(
                    "unreadable summary ({e}): {}",
                    String::from_utf8_lossy(&out.stdout)
                ));
                None
            }
        },
    };
    if let Some(s) = &summary {
        if s.actions == 0 {
            failures.push("the hostile client made no action".to_owned());
        }
        if let Err(e) = (case.check)(s, budget, cluster.len()) {
            failures.push(e);
        }
    }

    let total = good.ok + good.failed;
    if total < MIN_GOOD_OPS || good.rate() <= MIN_SUCCESS_RATE {
        failures.push(format!(
            "well-behaved client: {} of {total} operations succeeded (need > {:.0}% of at least {MIN_GOOD_OPS}); first errors: {:?}",
            good.ok,
            MIN_SUCCESS_RATE * 100.0,
            good.first_errors
        ));
    }
    for (i, peak) in peaks.iter().enumerate() {
        let id = cluster.id(i);
        if peak.client_inflight > budget.max_client_inflight_bytes as f64 {
            failures.push(format!(
                "{id}: client in-flight bytes reached {}, above the budget {}",
                peak.client_inflight, budget.max_client_inflight_bytes
            ));
        }
        if peak.peer_inflight > budget.max_peer_inflight_bytes as f64 {
            failures.push(format!(
                "{id}: peer in-flight bytes reached {}, above the budget {}",
                peak.peer_inflight, budget.max_peer_inflight_bytes
            ));
        }
        let bound = baseline[i]
            + budget.max_client_inflight_bytes as u64
            + budget.max_peer_inflight_bytes as u64
            + RSS_HEADROOM;
        if peak.rss > bound {
            failures.push(format!(
                "{id}: RSS reached {} MiB, above {} MiB (baseline {} MiB + client and peer in-flight budgets + {} MiB)",
                peak.rss >> 20,
                bound >> 20,
                baseline[i] >> 20,
                RSS_HEADROOM >> 20
            ));
        }
    }
    let counters_after = counters(cluster).await;
    failures.extend(still_serving(cluster, client).await);
    if let Err(e) = settle(&cluster_targets(cluster)).await {
        failures.push(e);
    }

    eprintln!(
        "hostile {:<17} actions={} outcomes={:?} | good: {}/{} ok ({:.2}%){} | RSS MiB baseline {:?} max {:?} | max in-flight bytes client {:?} peer {:?} | counter growth {}{}",
        case.kind,
        summary.as_ref().map_or(0, |s| s.actions),
        summary.as_ref().map(|s| &s.outcomes),
        good.ok,
        total,
        good.rate() * 100.0,
        if good.failed > 0 {
            format!(" first errors {:?}", good.first_errors)
        } else {
            String::new()
        },
        baseline.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        peaks.iter().map(|p| p.rss >> 20).collect::<Vec<_>>(),
        peaks.iter().map(|p| p.client_inflight).collect::<Vec<_>>(),
        peaks.iter().map(|p| p.peer_inflight).collect::<Vec<_>>(),
        COUNTERS
            .iter()
            .zip(counters_before.iter().zip(&counters_after))
            .map(|((name, labels), (before, after))| format!(
                "{}{}={}",
                name.trim_start_matches("shoal_transport_"),
                if labels.is_empty() {
                    String::new()
                } else {
                    let labels: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{{{}}}", labels.join(","))
                },
                after - before
            ))
            .collect::<Vec<_>>()
            .join(" "),
        if peaks.iter().any(|p| p.scrape_errors > 0) {
            " (some scrapes failed)"
        } else {
            ""
        },
    );
    for f in &failures {
        eprintln!("  FAILED {}: {f}", case.kind);
    }
    failures
}

/// Writes a client config for the hostile client, with its own certificate issued by
/// the cluster CA, and returns its path.
fn hostile_client_config(dir: &Path) -> PathBuf {
    let cert_dir = dir.join("hostile");
    shoal_transport::certs::issue_client_cert(dir, "hostile", &cert_dir)
        .expect("a client certificate for the hostile client");
    let dev = std::fs::read_to_string(dir.join("client.toml")).expect("reading client.toml");
    let seeds = dev
        .lines()
        .find(|l| l.trim_start().starts_with("seeds"))
        .expect("client.toml lists seeds");
    let path = dir.join("hostile.toml");
    let text = format!(
        "{seeds}\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        dir.join("ca.pem"),
        cert_dir.join("client.pem"),
        cert_dir.join("client.key"),
    );
    std::fs::write(&path, text).expect("writing hostile.toml");
    path
}

fn pids(cluster: &Cluster) -> Vec<i32> {
    cluster
        .nodes()
        .iter()
        .map(|n| {
            n.pid()
                .unwrap_or_else(|| panic!("node {} is not running", n.id))
        })
        .collect()
}

/// Each node's pid and metrics address.
fn cluster_targets(cluster: &Cluster) -> Vec<(i32, std::net::SocketAddr)> {
    pids(cluster)
        .into_iter()
        .zip(cluster.nodes().iter().map(|n| n.metrics))
        .collect()
}

/// Samples every node's RSS and in-flight gauges every [`POLL_INTERVAL`] until `stop`
/// (bounded by the longest a kind may take); returns the peaks.
async fn sample(nodes: Vec<(i32, std::net::SocketAddr)>, stop: Arc<AtomicBool>) -> Vec<Peak> {
    let mut peaks = vec![Peak::default(); nodes.len()];
    let end = Instant::now() + HOSTILE_DURATION + HOSTILE_GRACE + HOSTILE_EXIT_SLACK;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        tick.tick().await;
        for ((pid, metrics), peak) in nodes.iter().zip(&mut peaks) {
            peak.rss = peak.rss.max(rss_bytes(*pid).unwrap_or(0));
            match scrape(*metrics).await {
                Ok(e) => {
                    let gauge = "shoal_transport_inflight_bytes";
                    peak.client_inflight = peak
                        .client_inflight
                        .max(e.sum(gauge, &[("role", "client")]));
                    peak.peer_inflight = peak.peer_inflight.max(e.sum(gauge, &[("role", "peer")]));
                }
                Err(_) => peak.scrape_errors += 1,
            }
        }
    }
    peaks
}

/// The well-behaved client: `GOOD_WORKERS` workers each putting a new key and reading it
/// back, until `stop` (or [`MAX_GOOD_OPS`], or the longest a kind may take). A warm-up
/// (`stop` already set) makes one round per worker.
async fn good_client(client: Client, tag: String, stop: Arc<AtomicBool>) -> Good {
    let good = Arc::new(Mutex::new(Good::default()));
    let end = Instant::now() + HOSTILE_DURATION + HOSTILE_GRACE + HOSTILE_EXIT_SLACK;
    let mut workers = JoinSet::new();
    for w in 0..GOOD_WORKERS {
        let (client, good, stop) = (client.clone(), good.clone(), stop.clone());
        let tag = tag.to_owned();
        workers.spawn(async move {
            for i in 0..MAX_GOOD_OPS / GOOD_WORKERS as u64 / 2 {
                let key = format!("good-{tag}-{w}-{i}");
                let value = format!("value-{i}");
                let put = client
                    .put(&key, value.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("put {key}: {e}"));
                let get = match &put {
                    Ok(()) => client
                        .get(&key)
                        .await
                        .map_err(|e| format!("get {key}: {e}"))
                        .and_then(|read| check_read(&key, &read, Some(&value))),
                    Err(_) => Err("get skipped after a failed put".to_owned()),
                };
                {
                    let mut g = good.lock().unwrap_or_else(|e| e.into_inner());
                    for result in [put, get] {
                        match result {
                            Ok(()) => g.ok += 1,
                            Err(e) => {
                                g.failed += 1;
                                if g.first_errors.len() < 5 {
                                    g.first_errors.push(e);
                                }
                            }
                        }
                    }
                }
                if stop.load(Ordering::Relaxed) || Instant::now() >= end {
                    break;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let mut g = good.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut *g)
}

/// The [`COUNTERS`], each summed over the nodes (NaN when a scrape fails).
async fn counters(cluster: &Cluster) -> Vec<f64> {
    let all: Vec<usize> = (0..cluster.len()).collect();
    let mut out = Vec::new();
    for (name, labels) in COUNTERS {
        out.push(
            cluster
                .metric_sum(&all, name, labels)
                .await
                .unwrap_or(f64::NAN),
        );
    }
    out
}

/// Waits (bounded by [`SETTLE_TIMEOUT`]) until no node holds more than
/// [`SETTLED_INFLIGHT_BYTES`] in flight; `Err` says what the nodes still held.
async fn settle(nodes: &[(i32, std::net::SocketAddr)]) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut held = Vec::new();
        for (_, metrics) in nodes {
            match scrape(*metrics).await {
                Ok(e) => held.push(e.sum("shoal_transport_inflight_bytes", &[])),
                Err(_) => held.push(f64::INFINITY),
            }
        }
        if held.iter().all(|&b| b < SETTLED_INFLIGHT_BYTES) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the nodes still held {held:?} bytes in flight {SETTLE_TIMEOUT:?} after the run"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Checks that every node still runs and answers status.
async fn still_serving(cluster: &mut Cluster, client: &Client) -> Vec<String> {
    let mut failures = Vec::new();
    for i in 0..cluster.len() {
        let id = cluster.id(i);
        if !cluster.is_running(i) {
            failures.push(format!("{id} exited"));
        } else if let Err(e) = client.status(Some(&id)).await {
            failures.push(format!("{id} does not answer status: {e}"));
        }
    }
    failures
}
