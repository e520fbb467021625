//! The transport's metrics, read back through a recording `metrics` recorder. One test
//! per file: the recorder is process-global.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use shoal_ring::NodeId;
use shoal_transport::{certs, Endpoint, Handler, PeerRole, TlsIdentity, TransportConfig};

const TIMEOUT: Duration = Duration::from_secs(5);

type Values = Arc<Mutex<HashMap<String, f64>>>;

/// Stores every metric as `name{label=value,...}` (labels sorted) -> value; histograms
/// store their sample count.
#[derive(Default)]
struct Recording {
    values: Values,
}

struct Cell {
    key: String,
    values: Values,
}

impl Cell {
    fn update(&self, f: impl FnOnce(f64) -> f64) {
        let mut values = self.values.lock().unwrap();
        let value = values.entry(self.key.clone()).or_insert(0.0);
        *value = f(*value);
    }
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.update(|v| v + value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|_| value as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

impl HistogramFn for Cell {
    fn record(&self, _value: f64) {
        self.update(|v| v + 1.0);
    }
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recording {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        Arc::new(Cell {
            key: render(key),
            values: self.values.clone(),
        })
    }
}

impl Recorder for Recording {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

fn value(values: &Values, key: &str) -> f64 {
    values.lock().unwrap().get(key).copied().unwrap_or(0.0)
}

/// Waits until `key` has `expected`, or fails after a deadline (server-side metrics are
/// recorded by server tasks, after the client already has its answer).
async fn wait_for(values: &Values, key: &str, expected: f64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while value(values, key) != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} is {} not {expected}; all: {:?}",
            value(values, key),
            values.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Echo;

impl Handler for Echo {
    async fn handle(&self, _peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        request
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn requests_bytes_connections_and_failures_are_counted() {
    let recording = Recording::default();
    let values = recording.values.clone();
    metrics::set_global_recorder(recording).unwrap();
    shoal_transport::metrics::describe_metrics();

    let ca = certs::generate_ca_pem().unwrap();
    let node = certs::issue_node_cert_pem(&ca, &NodeId::new("n1").unwrap()).unwrap();
    let node = TlsIdentity::from_pem(&ca.cert_pem, &node.cert_chain_pem, &node.key_pem).unwrap();
    let cli = certs::issue_client_cert_pem(&ca, "cli").unwrap();
    let cli = TlsIdentity::from_pem(&ca.cert_pem, &cli.cert_chain_pem, &cli.key_pem).unwrap();
    let small = TransportConfig {
        max_frame_bytes: 64,
        ..TransportConfig::default()
    };
    let server = Endpoint::server(localhost(), &node, small).unwrap();
    server.serve(Arc::new(Echo));
    let addr = server.local_addr();
    let client = Endpoint::client_on(localhost(), &cli, TransportConfig::default()).unwrap();

    client
        .request(addr, None, b"hello".to_vec(), TIMEOUT)
        .await
        .unwrap();
    wait_for(
        &values,
        "shoal_transport_requests_total{direction=out,result=ok}",
        1.0,
    )
    .await;
    wait_for(
        &values,
        "shoal_transport_requests_total{direction=in,result=ok}",
        1.0,
    )
    .await;
    // 4-byte prefix + 5 bytes, each way, seen by both endpoints.
    wait_for(&values, "shoal_transport_bytes_total{direction=out}", 18.0).await;
    wait_for(&values, "shoal_transport_bytes_total{direction=in}", 18.0).await;
    wait_for(&values, "shoal_transport_request_duration_seconds{}", 1.0).await;
    // One connection, counted by each side.
    wait_for(&values, "shoal_transport_connections{}", 2.0).await;

    client
        .request(addr, None, vec![0; 100], TIMEOUT)
        .await
        .unwrap_err();
    wait_for(
        &values,
        "shoal_transport_frame_errors_total{kind=too_large}",
        1.0,
    )
    .await;
    wait_for(
        &values,
        "shoal_transport_requests_total{direction=in,result=frame_too_large}",
        1.0,
    )
    .await;
    wait_for(
        &values,
        "shoal_transport_requests_total{direction=out,result=stream_aborted}",
        1.0,
    )
    .await;

    let other = certs::generate_ca_pem().unwrap();
    let stranger = certs::issue_client_cert_pem(&other, "stranger").unwrap();
    let stranger =
        TlsIdentity::from_pem(&other.cert_pem, &stranger.cert_chain_pem, &stranger.key_pem)
            .unwrap();
    let stranger = Endpoint::client_on(localhost(), &stranger, TransportConfig::default()).unwrap();
    stranger
        .request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    wait_for(
        &values,
        "shoal_transport_requests_total{direction=out,result=handshake}",
        1.0,
    )
    .await;
    assert!(
        value(
            &values,
            "shoal_transport_handshake_failures_total{reason=tls}"
        ) >= 1.0
    );

    // Datagrams lost on the way are counted: a server whose socket holds only a few
    // kilobytes drops most of a 3 MiB request's datagrams.
    let cramped = TransportConfig {
        udp_receive_buffer_bytes: 1,
        ..TransportConfig::default()
    };
    let cramped = Endpoint::server(localhost(), &node, cramped).unwrap();
    cramped.serve(Arc::new(Echo));
    let flooding = Endpoint::client_on(localhost(), &cli, TransportConfig::default()).unwrap();
    // It may complete or time out; the losses on the way are what is checked.
    let _ = flooding
        .request(
            cramped.local_addr(),
            None,
            vec![5u8; 3 << 20],
            Duration::from_secs(2),
        )
        .await;
    flooding.close().await;
    let lost = "shoal_transport_lost_datagrams_total{peer=node}";
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while value(&values, lost) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no lost datagram counted; all: {:?}",
            values.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cramped.close().await;

    stranger.close().await;
    client.close().await;
    server.close().await;
    wait_for(&values, "shoal_transport_connections{}", 0.0).await;
}
