//! Certificate rotation: a node reloads its certificate, key and CA files on SIGHUP,
//! serves new connections with them, keeps its open connections, exports the new expiry,
//! and refuses (counting it, keeping its old certificates) files that are garbage or
//! name another node.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use shoal_proto::wire::{ClientRequest, ClientResponse, ReadOptions, WriteOptions};
use shoal_transport::{test_util::raw_connection, Endpoint, TransportConfig};

use crate::harness::{ask, scrape, shoal, wait_until, Cluster};

const EXPIRY: &str = "shoal_tls_certificate_expiry_timestamp_seconds";
const RELOADS: &str = "shoal_tls_reloads_total";
/// Longest wait for a reload to show in the node's metrics.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

async fn get_value(endpoint: &Endpoint, addr: SocketAddr, key: &str) -> Vec<Vec<u8>> {
    match ask(
        endpoint,
        addr,
        ClientRequest::Get {
            key: key.as_bytes().to_vec(),
            options: ReadOptions::default(),
        },
    )
    .await
    {
        ClientResponse::Get(reply) => reply.values,
        other => panic!("get {key}: {other:?}"),
    }
}

/// The DER of the first certificate of a PEM file.
fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    BASE64.decode(body).unwrap()
}

/// The DER of the certificate the node presented on a new connection from `endpoint`.
async fn presented(endpoint: &Endpoint, addr: SocketAddr) -> Vec<u8> {
    let connection = raw_connection(endpoint, addr).await.unwrap();
    let chain = connection
        .peer_identity()
        .unwrap()
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .unwrap();
    chain[0].as_ref().to_vec()
}

/// Issues a node certificate for `id` (valid `days`) under the cluster's CA into `out`
/// with `shoal cert node --json`; returns its notAfter.
async fn issue(cluster_dir: &Path, id: &str, days: u32, out: &Path) -> i64 {
    let run = shoal(
        &[
            "cert",
            "node",
            "--ca",
            cluster_dir.to_str().unwrap(),
            "--id",
            id,
            "--out",
            out.to_str().unwrap(),
            "--valid-days",
            &days.to_string(),
            "--json",
        ],
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap()
    .ok();
    let json = run.json();
    assert_eq!(json["cert"], serde_json::json!(out.join("node.pem")));
    json["not_after"].as_i64().unwrap()
}

/// Replaces a node's certificate and key files by those in `from`, each by a rename so
/// that the node never reads a half-written file.
fn install(from: &Path, node_dir: &Path) {
    for file in ["node.pem", "node.key"] {
        let staged = node_dir.join(format!("{file}.new"));
        std::fs::copy(from.join(file), &staged).unwrap();
        std::fs::rename(&staged, node_dir.join(file)).unwrap();
    }
}

/// Waits until node `metrics` shows `want` reloads with `result`, and returns its node
/// certificate's expiry gauge then.
async fn wait_reloads(metrics: SocketAddr, result: &str, want: f64) -> f64 {
    wait_until(
        &format!("{want} {result} reloads"),
        RELOAD_TIMEOUT,
        || async move {
            let m = scrape(metrics).await?;
            let got = m.sum(RELOADS, &[("result", result)]);
            if got == want {
                Ok(m.sum(EXPIRY, &[("cert", "node")]))
            } else {
                Err(format!("{got} {result} reloads"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_certificates_keeps_connections_and_refuses_bad_files() {
    let cluster = Cluster::start(3, "").await;
    let dir = cluster.dir().to_owned();
    let node = &cluster.nodes()[0];
    let (addr, metrics) = (node.addr, node.metrics);
    let node_dir = node.config.parent().unwrap().to_owned();

    // At start: the two-year certificate `shoal dev init` issued, and the CA.
    let start = scrape(metrics).await.unwrap();
    let started_expiry = start.sum(EXPIRY, &[("cert", "node")]);
    let ca_expiry = start.sum(EXPIRY, &[("cert", "ca")]);
    assert!(
        started_expiry > 0.0 && ca_expiry > started_expiry,
        "{start:?}"
    );
    assert_eq!(start.sum(RELOADS, &[("result", "ok")]), 0.0);

    let old = cluster.raw_client(TransportConfig::default());
    let put = ask(
        &old,
        addr,
        ClientRequest::Put {
            key: b"rotated".to_vec(),
            value: b"v1".to_vec(),
            context: None,
            options: WriteOptions::default(),
        },
    )
    .await;
    assert!(matches!(put, ClientResponse::Put(_)), "{put:?}");
    let open = raw_connection(&old, addr).await.unwrap();
    let old_der = presented(&old, addr).await;
    assert_eq!(old_der, pem_der(&node_dir.join("node.pem")));

    // A 30-day certificate replaces the two-year one.
    let staged = tempfile::tempdir().unwrap();
    let not_after = issue(&dir, "n1", 30, &staged.path().join("good")).await;
    install(&staged.path().join("good"), &node_dir);
    cluster.hangup(0);
    let expiry = wait_reloads(metrics, "ok", 1.0).await;
    assert_eq!(expiry, not_after as f64);
    assert_ne!(expiry, started_expiry);

    // The connection made before the reload is the same one and still serves.
    assert_eq!(get_value(&old, addr, "rotated").await, vec![b"v1".to_vec()]);
    assert_eq!(
        raw_connection(&old, addr).await.unwrap().stable_id(),
        open.stable_id()
    );
    // A new connection is served with the new certificate.
    let fresh = cluster.raw_client(TransportConfig::default());
    assert_eq!(
        get_value(&fresh, addr, "rotated").await,
        vec![b"v1".to_vec()]
    );
    let new_der = presented(&fresh, addr).await;
    assert_eq!(new_der, pem_der(&node_dir.join("node.pem")));
    assert_ne!(new_der, old_der);

    // Garbage, then a valid certificate of another node: both refused and counted; the
    // node keeps the 30-day certificate and serves old and new connections.
    std::fs::write(node_dir.join("node.pem.new"), "not a certificate\n").unwrap();
    std::fs::rename(node_dir.join("node.pem.new"), node_dir.join("node.pem")).unwrap();
    cluster.hangup(0);
    assert_eq!(wait_reloads(metrics, "error", 1.0).await, expiry);
    issue(&dir, "n2", 60, &staged.path().join("other")).await;
    install(&staged.path().join("other"), &node_dir);
    cluster.hangup(0);
    assert_eq!(wait_reloads(metrics, "error", 2.0).await, expiry);
    let after = scrape(metrics).await.unwrap();
    assert_eq!(after.sum(RELOADS, &[("result", "ok")]), 1.0);

    assert_eq!(get_value(&old, addr, "rotated").await, vec![b"v1".to_vec()]);
    let third = cluster.raw_client(TransportConfig::default());
    assert_eq!(
        get_value(&third, addr, "rotated").await,
        vec![b"v1".to_vec()]
    );
    assert_eq!(presented(&third, addr).await, new_der);
    for endpoint in [old, fresh, third] {
        endpoint.close().await;
    }
}
