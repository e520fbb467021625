//! The fault workload: a paused node and a killed node, so that the nodes emit every
//! catalogued metric except the fault-only ones.

use std::time::Duration;

use shoal_client::{Client, ClientError, Context, MemberState};
use shoal_proto::metrics::{
    AAE_EXCHANGES_TOTAL, AAE_KEYS_REPAIRED_TOTAL, HINTS_TOTAL, READ_REPAIRS_TOTAL,
    TOMBSTONES_REAPED_TOTAL,
};
use shoal_proto::wire::{decode_response, encode_request, PeerRequest, Request, Response};
use shoal_proto::RequestError;
use shoal_transport::{Endpoint, TlsIdentity, TransportConfig};
use tokio::time::Instant;

use super::{
    foreign_client_files, wait_hints_drained, wait_until, Cluster, POLL_INTERVAL,
    RAW_REQUEST_TIMEOUT,
};

/// Nodes of the workload cluster.
pub const NODES: usize = 3;
/// How long a condition of the workload (a member seen down, hints drained, a repair
/// done) may take on a loaded machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(45);

/// Partitions of the workload cluster: few, so anti-entropy's first round is short.
const WORKLOAD_PARTITIONS: usize = 16;
/// Hints a node keeps per target in the workload cluster: small, so that some are
/// dropped and only anti-entropy can repair those keys.
const WORKLOAD_MAX_HINTS: usize = 10;
/// Hint TTL of the workload cluster.
const WORKLOAD_HINT_TTL: Duration = Duration::from_secs(5);

/// Node settings of the workload cluster, merged into each node's config.
///
/// - Anti-entropy exchanges are due only once an hour, so each pair of nodes runs one
///   first round when the initiator (the smaller id) starts and no other: a repair the
///   workload expects from a read or from a restarted node's first round cannot be done
///   first by a periodic exchange. The latency target is high so that a loaded test
///   machine does not throttle anti-entropy.
/// - Tombstones are reapable after 8 s, hints expire after 5 s (shorter, as the config
///   requires) and are bounded to [`WORKLOAD_MAX_HINTS`] per target.
/// - Probes and handoff run every 250 ms, so state changes and deliveries are quick.
fn workload_settings() -> String {
    format!(
        "\
partitions = {WORKLOAD_PARTITIONS}

[replication]
tombstone_grace = \"8s\"
# One machine's clock: the skew margin needs to be no wider than the short TTLs allow.
max_clock_skew = \"500ms\"

[handoff]
ttl = \"{hint_ttl}s\"
interval = \"250ms\"
max_hints_per_target = {WORKLOAD_MAX_HINTS}

[membership]
probe_interval = \"250ms\"
probe_timeout = \"1s\"

[aae]
interval = \"1h\"
tick = \"100ms\"
max_concurrent_exchanges = 8
reap_interval = \"1s\"
latency_target = \"10s\"
",
        hint_ttl = WORKLOAD_HINT_TTL.as_secs()
    )
}

/// Starts a cluster of [`NODES`] nodes with the workload's settings.
pub async fn start_cluster() -> Cluster {
    Cluster::start(NODES, &workload_settings()).await
}

/// What [`run`] did.
#[derive(Debug, Default)]
pub struct WorkloadReport {
    /// Acknowledged puts.
    pub puts: usize,
    /// Successful gets.
    pub gets: usize,
    /// Acknowledged deletes.
    pub deletes: usize,
    /// Requests refused with Unavailable, as intended.
    pub unavailable: usize,
}

const N1: usize = 0;
const N2: usize = 1;
const N3: usize = 2;

async fn put(
    client: &Client,
    key: &str,
    ctx: Option<&Context>,
    w: u8,
    report: &mut WorkloadReport,
) -> Context {
    let ctx = client
        .put_with(key, format!("value of {key}"))
        .context(ctx)
        .w(w)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key} with W={w}: {e}"));
    report.puts += 1;
    ctx
}

async fn get(client: &Client, key: &str, r: u8, report: &mut WorkloadReport) -> Context {
    let got = client
        .get_with(key)
        .r(r)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key} with R={r}: {e}"));
    report.gets += 1;
    got.context
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Drives a cluster from [`start_cluster`] through faults, so that its nodes
/// emit every metric of the catalogue except the fault-only ones. Each phase waits for
/// its effect (a member seen down, hints drained, a repair counted) with a deadline.
///
/// 1. Healthy: puts, gets, overwrites with context, deletes (tombstones), status; a client
///    certificate sending a node-to-node message (refused) and a client of another CA
///    (failed handshake). First waits for anti-entropy's first round to end.
/// 2. n3 paused (SIGSTOP): a W=3 put and an R=3 get are Unavailable; keys E are written
///    (hinted) and left until their hints outlive the TTL, then keys F (hinted), then n3
///    resumes: E's hints expire, F's are delivered. Half of E is read with R=3: n3 lacks
///    them, so each read repairs it.
/// 3. n1 killed (SIGKILL): a W=3 put and an R=3 get are Unavailable again (n1's counters
///    restart from zero, these are counted by n2 or n3); 40 keys G are written, and as
///    at most 10 hints per coordinator are kept, at least 20 are dropped.
/// 4. n1 restarts: its first anti-entropy round fetches the G keys nobody hinted and
///    pushes to n3 the half of E no read repaired; the tombstones of phase 1, now past
///    their grace period on every replica, are reaped.
pub async fn run(cluster: &mut Cluster) -> WorkloadReport {
    let mut report = WorkloadReport::default();
    let all = [N1, N2, N3];
    let p = WORKLOAD_PARTITIONS as f64;
    // Anti-entropy's first round: n1 with n2 and n3, n2 with n3, every partition.
    cluster
        .wait_metric_sum(&[N1], AAE_EXCHANGES_TOTAL, &[], 2.0 * p, STEP_TIMEOUT)
        .await;
    cluster
        .wait_metric_sum(&[N2], AAE_EXCHANGES_TOTAL, &[], p, STEP_TIMEOUT)
        .await;

    // Phase 1: healthy.
    let client = cluster.client().await;
    for key in keys("healthy", 20) {
        let ctx = put(&client, &key, None, 2, &mut report).await;
        let read = get(&client, &key, 2, &mut report).await;
        assert!(
            !read.is_empty() && !ctx.is_empty(),
            "contexts of a written key are not empty"
        );
        put(&client, &key, Some(&read), 2, &mut report).await;
    }
    for key in keys("deleted", 8) {
        put(&client, &key, None, 3, &mut report).await;
        let ctx = get(&client, &key, 3, &mut report).await;
        client
            .delete_with(&key)
            .context(&ctx)
            .w(3)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
        report.deletes += 1;
    }
    client.status(None).await.expect("status");
    client.aae_status(None).await.expect("aae status");
    refused_peer_message(cluster, N2).await;
    foreign_ca_handshake(cluster, N2).await;
    client.close().await;

    // Phase 2: n3 paused.
    cluster.pause(N3);
    let client = cluster.client().await;
    wait_views(cluster, &client, &[N1, N2], &[N3], MemberState::Down).await;
    expect_unavailable(&client, "while-n3-paused", &mut report).await;
    let expiring = keys("expiring", 6);
    for key in &expiring {
        put(&client, key, None, 2, &mut report).await;
    }
    let written = Instant::now();
    // The E hints must outlive the TTL before n3 is back: wait for the clock, serving
    // reads meanwhile (nothing else to wait for: expiry is by the content's age).
    let mut i = 0;
    while written.elapsed() < WORKLOAD_HINT_TTL + Duration::from_millis(500) {
        get(&client, &format!("healthy-{:03}", i % 20), 2, &mut report).await;
        i += 1;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    for key in keys("delivered", 4) {
        put(&client, &key, None, 2, &mut report).await;
    }
    cluster.resume(N3);
    wait_views(cluster, &client, &all, &all, MemberState::Up).await;
    wait_hints_drained(&client, &cluster.ids(&all), STEP_TIMEOUT).await;
    cluster
        .wait_metric_sum(
            &all,
            HINTS_TOTAL,
            &[("event", "expired")],
            1.0,
            STEP_TIMEOUT,
        )
        .await;
    for key in &expiring[..expiring.len() / 2] {
        get(&client, key, 3, &mut report).await;
    }
    cluster
        .wait_metric_sum(
            &all,
            READ_REPAIRS_TOTAL,
            &[],
            (expiring.len() / 2) as f64,
            STEP_TIMEOUT,
        )
        .await;
    client.close().await;

    // Phase 3: n1 killed.
    cluster.kill(N1);
    let client = cluster.client().await;
    wait_views(cluster, &client, &[N2, N3], &[N1], MemberState::Down).await;
    // Again with n1 down: n1's counters start from zero when it restarts, so these keep
    // the quorum-failure series on the nodes that stay up.
    expect_unavailable(&client, "while-n1-down", &mut report).await;
    let unhinted = keys("unhinted", 4 * WORKLOAD_MAX_HINTS);
    for key in &unhinted {
        put(&client, key, None, 2, &mut report).await;
        get(&client, key, 2, &mut report).await;
    }
    cluster
        .wait_metric_sum(
            &[N2, N3],
            HINTS_TOTAL,
            &[("event", "dropped")],
            1.0,
            STEP_TIMEOUT,
        )
        .await;
    client.close().await;

    // Phase 4: n1 back.
    cluster.restart(N1).await;
    let client = cluster.client().await;
    for direction in ["fetched", "pushed"] {
        cluster
            .wait_metric_sum(
                &[N1],
                AAE_KEYS_REPAIRED_TOTAL,
                &[("direction", direction)],
                1.0,
                STEP_TIMEOUT,
            )
            .await;
    }
    cluster
        .wait_metric_sum(&all, TOMBSTONES_REAPED_TOTAL, &[], 1.0, STEP_TIMEOUT)
        .await;
    wait_hints_drained(&client, &cluster.ids(&all), STEP_TIMEOUT).await;
    for key in unhinted.iter().take(5) {
        get(&client, key, 3, &mut report).await;
    }
    client.close().await;
    report
}

/// A W=3 put and an R=3 get with a node down: both must be Unavailable.
async fn expect_unavailable(client: &Client, key: &str, report: &mut WorkloadReport) {
    let put = client.put_with(key, "x").w(3).send().await;
    assert!(
        matches!(put, Err(ClientError::Unavailable { .. })),
        "a W=3 put with a node down must be Unavailable, got {put:?}"
    );
    let get = client.get_with(key).r(3).send().await;
    assert!(
        matches!(get, Err(ClientError::Unavailable { .. })),
        "an R=3 get with a node down must be Unavailable, got {get:?}"
    );
    report.unavailable += 2;
}

/// Waits until each of `reporters` sees each of `members` in `state`.
async fn wait_views(
    cluster: &Cluster,
    client: &Client,
    reporters: &[usize],
    members: &[usize],
    state: MemberState,
) {
    wait_until(
        &format!("nodes {reporters:?} to see {members:?} {state:?}"),
        STEP_TIMEOUT,
        || cluster.views_agree(client, reporters, members, state),
    )
    .await;
}

/// Sends a node-to-node message with the dev client certificate to node `i`: the node
/// must refuse it (`NotAllowed`).
async fn refused_peer_message(cluster: &Cluster, i: usize) {
    let endpoint = cluster.raw_client(TransportConfig::default());
    let node = &cluster.nodes()[i];
    let answer = endpoint
        .request(
            node.addr,
            Some(&node.id),
            encode_request(&Request::Peer(PeerRequest::Ping)),
            RAW_REQUEST_TIMEOUT,
        )
        .await
        .expect("a node answers a client's peer message");
    endpoint.close().await;
    let response = decode_response(&answer).expect("a decodable answer");
    assert!(
        matches!(response, Response::Error(RequestError::NotAllowed(_))),
        "a client certificate's peer message must be refused, got {response:?}"
    );
}

/// Connects to node `i` with a certificate of another CA: the handshake must fail.
async fn foreign_ca_handshake(cluster: &Cluster, i: usize) {
    let foreign = tempfile::tempdir().expect("a temporary directory");
    let files = foreign_client_files(foreign.path());
    let identity = TlsIdentity::load(&files.ca, &files.cert, &files.key)
        .expect("loading the foreign identity");
    let endpoint =
        Endpoint::client(&identity, TransportConfig::default()).expect("a client endpoint");
    let node = &cluster.nodes()[i];
    let result = endpoint
        .request(
            node.addr,
            None,
            encode_request(&Request::Peer(PeerRequest::Ping)),
            RAW_REQUEST_TIMEOUT,
        )
        .await;
    endpoint.close().await;
    assert!(
        result.is_err(),
        "a certificate of another CA must not get an answer"
    );
    cluster
        .wait_metric_sum(
            &[i],
            shoal_transport::metrics::HANDSHAKE_FAILURES_TOTAL,
            &[],
            1.0,
            STEP_TIMEOUT,
        )
        .await;
}
