//! The metrics listener's probes: `GET /health` answers 200 while the process is up;
//! `GET /ready` answers 200 while the node can serve quorum requests and 503 with a
//! plain-text reason when too few members are reachable (its peers stopped), and 200
//! again once a quorum is back. `/metrics` is still served beside them, with
//! `shoal_build_info`; an oversized request is closed unanswered and counted.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{http_get, scrape, wait_until, Cluster};

/// The failure detector reports a stopped peer down within about 2.5 s with the default
/// settings; this leaves room for a loaded CI machine.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET path` on `addr` answered `status`; returns the body.
async fn expect(addr: SocketAddr, path: &str, status: u16) -> Result<String, String> {
    match http_get(addr, path).await? {
        (s, body) if s == status => Ok(body),
        (s, body) => Err(format!("GET {path}: HTTP {s}: {body:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready_follow_the_nodes_reachable_peers() {
    let mut cluster = Cluster::start(3, "").await;
    let metrics = cluster.nodes()[0].metrics;

    let body = expect(metrics, "/health", 200).await.unwrap();
    assert_eq!(body.trim(), "ok");
    wait_until("node 0 ready", STATE_TIMEOUT, || {
        expect(metrics, "/ready", 200)
    })
    .await;
    expect(metrics, "/nowhere", 404).await.unwrap();
    let exposition = scrape(metrics).await.expect("/metrics beside the probes");
    assert_eq!(
        exposition.sum(
            "shoal_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "shoal_build_info carries the build's version"
    );

    // A request head over the listener's 8 KiB bound: closed unanswered, and counted.
    let mut raw = tokio::net::TcpStream::connect(metrics).await.unwrap();
    let head = format!("GET /{} HTTP/1.0\r\n\r\n", "a".repeat(16 * 1024));
    // The server may close before reading it all: a failed write is an answer too.
    let _ = raw.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(STATE_TIMEOUT, raw.read_to_end(&mut answer))
        .await
        .expect("the listener closes an oversized request");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let refused = scrape(metrics).await.expect("/metrics").sum(
        "shoal_metrics_http_refused_total",
        &[("reason", "request_too_large")],
    );
    assert_eq!(refused, 1.0, "the oversized request is counted");

    // Both peers gone: one member of three is up, below max(R, W) = 2.
    cluster.terminate(1);
    cluster.terminate(2);
    let reason = wait_until("node 0 not ready", STATE_TIMEOUT, || {
        expect(metrics, "/ready", 503)
    })
    .await;
    assert!(reason.contains("quorum needs 2"), "{reason:?}");
    let body = expect(metrics, "/health", 200).await.unwrap();
    assert_eq!(body.trim(), "ok", "liveness does not follow the peers");

    // One peer back: a quorum of two again.
    cluster.restart(1).await;
    wait_until("node 0 ready again", STATE_TIMEOUT, || {
        expect(metrics, "/ready", 200)
    })
    .await;
}
