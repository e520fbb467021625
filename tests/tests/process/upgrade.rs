//! Rolling upgrades over real processes: a cluster in the middle of one, where one node
//! still speaks the previous release's wire version to its peers, and clients of the
//! previous release whose frames (the checked-in version-1 fixtures of
//! `proto/tests/fixtures/v1`) are answered in their own version.

use std::time::{Duration, SystemTime};

use shoal_proto::wire::{decode_response, ClientResponse, Response, WIRE_VERSION};
use shoal_proto::RequestError;
use shoal_transport::TransportConfig;

use crate::aae::support::{counts_are, found, keys_per_partition, put_new, wait_converged, N};
use crate::aae::AAE_ONLY;
use crate::harness::{key_values, repo_root, scrape, Cluster, RAW_REQUEST_TIMEOUT};

/// Requests decoded, by `role` and wire `version` (node metric).
const WIRE_REQUESTS_TOTAL: &str = "shoal_wire_requests_total";
/// The wire version a node sends its peers (node metric).
const WIRE_VERSION_SENT: &str = "shoal_wire_version_sent";

/// How long anti-entropy may take to bring a returning replica up to date.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// The frame body of a checked-in fixture of `version` (`kind`: `request`, `response`).
fn fixture(version: u16, kind: &str, name: &str) -> Vec<u8> {
    let path = repo_root()
        .join("proto/tests/fixtures")
        .join(format!("v{version}"))
        .join(kind)
        .join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let text = text.trim();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// Pins node `i` to wire version 1 towards its peers and restarts it.
async fn pin_to_wire_version_1(cluster: &mut Cluster, i: usize) {
    let config = &cluster.nodes()[i].config;
    let mut text = std::fs::read_to_string(config).expect("reading node.toml");
    assert!(!text.contains("[cluster]"), "{text}");
    text.push_str("\n[cluster]\nwire_version = 1\n");
    std::fs::write(config, text).expect("writing node.toml");
    cluster.terminate(i);
    cluster.restart(i).await;
}

/// The sum over nodes `indices` of `shoal_wire_requests_total{role, version}`.
async fn wire_requests(cluster: &Cluster, indices: &[usize], role: &str, version: &str) -> f64 {
    cluster
        .metric_sum(
            indices,
            WIRE_REQUESTS_TOTAL,
            &[("role", role), ("version", version)],
        )
        .await
        .expect("scraping the nodes")
}

/// The middle of a rolling upgrade: n1 sends its peers only version-1 frames (as a node
/// of the previous release does), n2 and n3 the current version. Writes that need every replica,
/// quorum reads, and anti-entropy bringing back a replica that missed writes all work,
/// in both directions; and a client of the previous release (its frames are the v1
/// fixtures) gets version-1 answers from the pinned node and from a current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_node_on_the_previous_wire_version_serves_reads_writes_and_anti_entropy() {
    let mut cluster = Cluster::start(3, AAE_ONLY).await;
    let (pinned, current) = (0, [1, 2]);
    pin_to_wire_version_1(&mut cluster, pinned).await;
    let now = f64::from(WIRE_VERSION);
    for (i, want) in [(0, 1.0), (1, now), (2, now)] {
        let sent = scrape(cluster.nodes()[i].metrics)
            .await
            .expect("scraping")
            .sum(WIRE_VERSION_SENT, &[]);
        assert_eq!(sent, want, "node {i} sends wire version {sent}");
    }

    // Writes that need all three replicas (W=3) and reads that need all three (R=3):
    // every replica and coordinator path crosses the version boundary.
    let client = cluster.client().await;
    let ring = client.cluster_info().await.ring;
    let before = SystemTime::now();
    let first = key_values("mixed", 0..300);
    put_new(&client, &first, 3).await;
    for (key, value) in &first {
        let read = client.get_with(key).r(3).send().await.expect("an R=3 read");
        assert_eq!(read.values, vec![value.as_bytes().to_vec()], "{key}");
        // The SDK speaks the current version to whichever node coordinates: write times come back.
        assert_eq!(read.written_at.len(), 1, "{key}");
        assert!(
            read.written_at[0] >= before - Duration::from_secs(1),
            "{key}"
        );
    }
    client.close().await;
    // The current nodes received the pinned node's version-1 frames and answered them;
    // the pinned node received current-version frames from the others.
    let (now, next) = (WIRE_VERSION.to_string(), (WIRE_VERSION + 1).to_string());
    assert!(wire_requests(&cluster, &current, "peer", "1").await > 0.0);
    assert!(wire_requests(&cluster, &[pinned], "peer", &now).await > 0.0);
    assert_eq!(wire_requests(&cluster, &current, "peer", &next).await, 0.0);

    // Anti-entropy across versions: a current node misses writes, and comes back to
    // trees exchanged with the pinned node (its steps in version 1) and the other
    // current node (the current version).
    let victim = 2;
    cluster.kill(victim);
    let client = cluster.client().await;
    let missed = key_values("missed", 0..300);
    put_new(&client, &missed, 2).await;
    client.close().await;
    cluster.restart(victim).await;
    let mut all = first.clone();
    all.extend(missed.iter().cloned());
    let expected = found(&all);
    let per_partition = keys_per_partition(&ring, expected.iter().map(|(k, _)| k.as_str()));
    wait_converged(
        &cluster,
        "anti-entropy to repair the returning replica in a mixed-version cluster",
        CONVERGE_TIMEOUT,
        ring.partition_count(),
        counts_are(per_partition),
    )
    .await;

    // A client of the previous release: its frames, byte for byte, to the pinned node and
    // to a current one. Each answer comes back in version 1 and decodes as that release
    // decoded it (a read without write times).
    let raw = cluster.raw_client(TransportConfig::default());
    for i in [pinned, current[0]] {
        let addr = cluster.nodes()[i].addr;
        let ask = |name: &'static str| {
            let raw = raw.clone();
            async move {
                let bytes = raw
                    .request(addr, None, fixture(1, "request", name), RAW_REQUEST_TIMEOUT)
                    .await
                    .unwrap_or_else(|e| panic!("node {i}: v1 {name}: {e}"));
                assert_eq!(
                    bytes[..2],
                    [0, 1],
                    "node {i}: v1 {name} answered in another version"
                );
                decode_response(&bytes).unwrap_or_else(|e| panic!("node {i}: v1 {name}: {e}"))
            }
        };
        match ask("client_put").await {
            Response::Client(ClientResponse::Put(_)) => {}
            other => panic!("node {i}: v1 put answered {other:?}"),
        }
        match ask("client_get").await {
            Response::Client(ClientResponse::Get(reply)) => {
                assert!(reply.found, "node {i}");
                assert!(
                    reply.values.contains(&b"apples".to_vec()),
                    "node {i}: {reply:?}"
                );
                assert!(
                    reply.written_at.is_empty(),
                    "version 1 carries no write times"
                );
            }
            other => panic!("node {i}: v1 get answered {other:?}"),
        }
        match ask("client_status").await {
            Response::Client(ClientResponse::Status(report)) => {
                assert_eq!(report.members.len(), 3, "node {i}");
            }
            other => panic!("node {i}: v1 status answered {other:?}"),
        }
        // Refusals too are in the requester's version: a peer message from a client.
        match ask("peer_ping").await {
            Response::Error(RequestError::NotAllowed(_)) => {}
            other => panic!("node {i}: v1 ping from a client answered {other:?}"),
        }
    }
    // Put, get and status on each of the two nodes (the ping is refused before decoding).
    assert!(wire_requests(&cluster, &[pinned, current[0]], "client", "1").await >= 6.0);
    raw.close().await;

    // And the replica that missed writes holds them, through anti-entropy alone.
    for i in 0..cluster.len() {
        cluster.terminate(i);
    }
    let checked = cluster.assert_node_stores(victim, &ring, N, &all);
    assert_eq!(checked, all.len(), "with N = 3 of 3 nodes, every key");
}
