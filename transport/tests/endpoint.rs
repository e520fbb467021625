//! Endpoint behaviour over real QUIC on loopback: roles, mutual TLS, framing limits,
//! connection reuse, concurrency, timeouts. Every server binds 127.0.0.1:0 and is closed
//! at the end of its test.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::Arc,
    time::Duration,
};

use shoal_ring::NodeId;
use shoal_transport::{
    certs::{self, CaPem},
    Endpoint, Handler, PeerRole, StreamErrorCode, TlsIdentity, TransportConfig, TransportError,
};
use tokio::sync::Notify;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Answers `"<role>|<request>"`, so tests see which role the server authenticated.
struct Echo;

impl Handler for Echo {
    async fn handle(&self, peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        let mut response = format!("{peer}|").into_bytes();
        response.extend_from_slice(&request);
        response
    }
}

/// Answers with a response of the requested size (request = decimal length).
struct Sized;

impl Handler for Sized {
    async fn handle(&self, _peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        let len: usize = String::from_utf8(request).unwrap().parse().unwrap();
        vec![7; len]
    }
}

/// Never answers; tells the test when a request arrived.
struct Silent {
    arrived: Arc<Notify>,
}

impl Handler for Silent {
    async fn handle(&self, _peer: PeerRole, _request: Vec<u8>) -> Vec<u8> {
        self.arrived.notify_one();
        std::future::pending().await
    }
}

/// Panics on `boom`, echoes anything else.
struct Fragile;

impl Handler for Fragile {
    async fn handle(&self, peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        assert_ne!(request, b"boom", "handler failure requested by the test");
        Echo.handle(peer, request).await
    }
}

fn node_id(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn node_identity(ca: &CaPem, id: &str) -> TlsIdentity {
    let leaf = certs::issue_node_cert_pem(ca, &node_id(id)).unwrap();
    TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.key_pem).unwrap()
}

fn client_identity(ca: &CaPem, name: &str) -> TlsIdentity {
    let leaf = certs::issue_client_cert_pem(ca, name).unwrap();
    TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.key_pem).unwrap()
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn client(identity: &TlsIdentity, config: TransportConfig) -> Endpoint {
    Endpoint::client_on(localhost(), identity, config).unwrap()
}

/// A node endpoint for `id`, serving `handler`.
fn serve<H: Handler>(
    ca: &CaPem,
    id: &str,
    config: TransportConfig,
    handler: H,
) -> (Endpoint, SocketAddr) {
    let server = Endpoint::server(localhost(), &node_identity(ca, id), config).unwrap();
    server.serve(Arc::new(handler));
    let addr = server.local_addr();
    (server, addr)
}

#[tokio::test]
async fn client_role_round_trip_reaches_handler_with_client_role() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = serve(&ca, "n1", TransportConfig::default(), Echo);
    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());

    let response = cli
        .request(addr, None, b"hello".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client cli|hello");
    // An empty request is a valid frame too.
    let response = cli
        .request(addr, Some(&node_id("n1")), Vec::new(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client cli|");
    cli.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_request_with_the_largest_timeout_is_served_not_a_panic() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = serve(&ca, "n1", TransportConfig::default(), Echo);
    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());
    let response = cli
        .request(addr, None, b"hi".to_vec(), Duration::MAX)
        .await
        .unwrap();
    assert_eq!(response, b"client cli|hi");
    cli.close().await;
    server.close().await;
}

#[tokio::test]
async fn node_role_round_trip_reaches_handler_with_node_role() {
    let ca = certs::generate_ca_pem().unwrap();
    let (n1, addr1) = serve(&ca, "n1", TransportConfig::default(), Echo);
    let (n2, addr2) = serve(&ca, "n2", TransportConfig::default(), Echo);

    let response = n2
        .request(addr1, Some(&node_id("n1")), b"ping".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"node n2|ping");
    let response = n1
        .request(addr2, Some(&node_id("n2")), b"pong".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"node n1|pong");
    n1.close().await;
    n2.close().await;
}

#[tokio::test]
async fn client_of_another_cluster_is_refused_and_server_keeps_serving() {
    let ca = certs::generate_ca_pem().unwrap();
    let other = certs::generate_ca_pem().unwrap();
    let (server, addr) = serve(&ca, "n1", TransportConfig::default(), Echo);

    let stranger = client(
        &client_identity(&other, "stranger"),
        TransportConfig::default(),
    );
    let error = stranger
        .request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::Handshake { .. }),
        "{error:?}"
    );
    assert!(error.is_not_delivered());

    let good = client(&client_identity(&ca, "good"), TransportConfig::default());
    let response = good
        .request(addr, None, b"y".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client good|y");
    stranger.close().await;
    good.close().await;
    server.close().await;
}

#[tokio::test]
async fn server_endpoint_requires_a_node_identity() {
    let ca = certs::generate_ca_pem().unwrap();
    let error = Endpoint::server(
        localhost(),
        &client_identity(&ca, "cli"),
        TransportConfig::default(),
    )
    .unwrap_err();
    assert!(
        matches!(error, TransportError::LocalRole { needed: "node", .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn node_with_unexpected_id_is_refused() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = serve(&ca, "n1", TransportConfig::default(), Echo);
    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());

    let error = cli
        .request(addr, Some(&node_id("n9")), b"x".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    match &error {
        TransportError::PeerRole { found, .. } => assert_eq!(found, &PeerRole::Node(node_id("n1"))),
        other => panic!("expected PeerRole, got {other:?}"),
    }
    assert!(error.is_not_delivered());
    // The connection to n1 stays usable for requests that expect n1.
    let response = cli
        .request(addr, Some(&node_id("n1")), b"y".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client cli|y");
    cli.close().await;
    server.close().await;
}

#[tokio::test]
async fn oversized_request_is_refused_and_server_keeps_serving() {
    let ca = certs::generate_ca_pem().unwrap();
    let small = TransportConfig {
        max_frame_bytes: 1024,
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, "n1", small.clone(), Echo);

    // Checked locally before sending.
    let cli_small = client(&client_identity(&ca, "small"), small);
    let error = cli_small
        .request(addr, None, vec![0; 1025], TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            TransportError::FrameTooLarge {
                len: 1025,
                max: 1024
            }
        ),
        "{error:?}"
    );

    // A client with a larger limit sends it; the server aborts that stream.
    let cli_big = client(&client_identity(&ca, "big"), TransportConfig::default());
    let error = cli_big
        .request(addr, None, vec![0; 4096], TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            TransportError::StreamAborted {
                code: StreamErrorCode::FrameTooLarge,
                ..
            }
        ),
        "{error:?}"
    );

    // Same connection, next stream: served.
    let response = cli_big
        .request(addr, None, b"fits".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client big|fits");
    assert_eq!(cli_big.open_connections(), 1);
    cli_small.close().await;
    cli_big.close().await;
    server.close().await;
}

#[tokio::test]
async fn oversized_responses_are_refused_on_either_side() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        max_frame_bytes: 1024,
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, "n1", config.clone(), Sized);

    // The handler's response exceeds the server's limit: the server aborts the stream.
    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());
    let error = cli
        .request(addr, None, b"2000".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            TransportError::StreamAborted {
                code: StreamErrorCode::FrameTooLarge,
                ..
            }
        ),
        "{error:?}"
    );

    // The response fits the server's limit but not the client's.
    let tiny = TransportConfig {
        max_frame_bytes: 100,
        ..TransportConfig::default()
    };
    let cli_tiny = client(&client_identity(&ca, "tiny"), tiny);
    let error = cli_tiny
        .request(addr, None, b"500".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::FrameTooLarge { len: 500, max: 100 }),
        "{error:?}"
    );
    assert_eq!(
        cli_tiny
            .request(addr, None, b"100".to_vec(), TIMEOUT)
            .await
            .unwrap()
            .len(),
        100
    );
    cli.close().await;
    cli_tiny.close().await;
    server.close().await;
}

#[tokio::test]
async fn garbage_datagrams_leave_the_server_serving() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = serve(&ca, "n1", TransportConfig::default(), Echo);

    let junk = UdpSocket::bind(localhost()).unwrap();
    let mut long_header = vec![0xc0, 0, 0, 0, 1, 8];
    long_header.extend_from_slice(&[0xab; 1300]);
    let datagrams: [&[u8]; 6] = [
        b"",
        b"\x00",
        b"hello, is this QUIC?",
        &[0xff; 1200],
        &long_header,
        &[0x40; 64],
    ];
    for datagram in datagrams {
        junk.send_to(datagram, addr).unwrap();
    }

    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());
    let response = cli
        .request(addr, None, b"still there?".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client cli|still there?");
    cli.close().await;
    server.close().await;
}

#[tokio::test]
async fn two_requests_to_one_address_share_one_connection() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = serve(&ca, "n1", TransportConfig::default(), Echo);
    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());

    cli.request(addr, None, b"1".to_vec(), TIMEOUT)
        .await
        .unwrap();
    cli.request(addr, None, b"2".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(cli.cached_connections(), 1);
    assert_eq!(cli.open_connections(), 1);
    assert_eq!(server.open_connections(), 1);
    cli.close().await;
    server.close().await;
}

async fn run_concurrent(cli: &Endpoint, addr: SocketAddr, count: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let cli = cli.clone();
        tasks.spawn(async move {
            let payload = i.to_string().into_bytes();
            let response = cli.request(addr, None, payload, TIMEOUT).await.unwrap();
            assert_eq!(response, format!("client cli|{i}").into_bytes());
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test]
async fn two_hundred_concurrent_requests_succeed_on_one_connection() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = serve(&ca, "n1", TransportConfig::default(), Echo);
    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());

    run_concurrent(&cli, addr, 200).await;
    assert_eq!(cli.open_connections(), 1);
    assert_eq!(server.open_connections(), 1);
    cli.close().await;
    server.close().await;
}

#[tokio::test]
async fn requests_beyond_the_stream_limit_wait_for_credit() {
    let ca = certs::generate_ca_pem().unwrap();
    let limited = TransportConfig {
        max_concurrent_streams: 8,
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, "n1", limited, Echo);
    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());

    run_concurrent(&cli, addr, 200).await;
    assert_eq!(cli.open_connections(), 1);
    cli.close().await;
    server.close().await;
}

#[tokio::test]
async fn unanswered_request_times_out_and_unreachable_peer_fails_to_connect() {
    let ca = certs::generate_ca_pem().unwrap();
    let arrived = Arc::new(Notify::new());
    let (server, addr) = serve(
        &ca,
        "n1",
        TransportConfig::default(),
        Silent {
            arrived: arrived.clone(),
        },
    );
    let config = TransportConfig {
        connect_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let cli = client(&client_identity(&ca, "cli"), config);

    let (result, ()) = tokio::join!(
        cli.request(addr, None, b"x".to_vec(), Duration::from_millis(300)),
        arrived.notified()
    );
    let error = result.unwrap_err();
    assert!(matches!(error, TransportError::Timeout { .. }), "{error:?}");
    assert!(!error.is_not_delivered(), "the handler got the request");

    // Nothing answers on this port: the request is never delivered.
    let silent = UdpSocket::bind(localhost()).unwrap();
    let nowhere = silent.local_addr().unwrap();
    let error = cli
        .request(nowhere, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(error, TransportError::Connect { .. }), "{error:?}");
    assert!(error.is_not_delivered());
    cli.close().await;
    server.close().await;
}

#[tokio::test]
async fn closed_endpoint_refuses_requests_and_stops_serving() {
    let ca = certs::generate_ca_pem().unwrap();
    let server = Endpoint::server(
        localhost(),
        &node_identity(&ca, "n1"),
        TransportConfig::default(),
    )
    .unwrap();
    let serving = server.serve(Arc::new(Echo));
    let addr = server.local_addr();
    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());
    cli.request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap();

    server.close().await;
    tokio::time::timeout(TIMEOUT, serving)
        .await
        .expect("serve task ends after close")
        .unwrap();
    cli.close().await;
    let error = cli
        .request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(error, TransportError::EndpointClosed), "{error:?}");
}

#[tokio::test]
async fn identities_loaded_from_certificate_files_talk() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    certs::generate_ca(&ca_dir).unwrap();
    let node_dir = dir.path().join("n1");
    certs::issue_node_cert(&ca_dir, &node_id("n1"), &node_dir).unwrap();
    certs::issue_client_cert(&ca_dir, "ops", &dir.path().join("ops")).unwrap();

    let node = TlsIdentity::load(
        &ca_dir.join(certs::CA_CERT_FILE),
        &node_dir.join(certs::NODE_CERT_FILE),
        &node_dir.join(certs::NODE_KEY_FILE),
    )
    .unwrap();
    let ops = TlsIdentity::load(
        &ca_dir.join(certs::CA_CERT_FILE),
        &dir.path().join("ops").join(certs::CLIENT_CERT_FILE),
        &dir.path().join("ops").join(certs::CLIENT_KEY_FILE),
    )
    .unwrap();
    let server = Endpoint::server(localhost(), &node, TransportConfig::default()).unwrap();
    server.serve(Arc::new(Echo));
    let cli = client(&ops, TransportConfig::default());
    let response = cli
        .request(
            server.local_addr(),
            Some(&node_id("n1")),
            b"hi".to_vec(),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(response, b"client ops|hi");
    cli.close().await;
    server.close().await;
}

#[tokio::test]
async fn handler_panic_aborts_only_its_stream() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = serve(&ca, "n1", TransportConfig::default(), Fragile);
    let cli = client(&client_identity(&ca, "cli"), TransportConfig::default());

    let error = cli
        .request(addr, None, b"boom".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            TransportError::StreamAborted {
                code: StreamErrorCode::Internal,
                ..
            }
        ),
        "{error:?}"
    );
    let response = cli
        .request(addr, None, b"fine".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client cli|fine");
    assert_eq!(cli.open_connections(), 1);
    cli.close().await;
    server.close().await;
}

#[tokio::test]
async fn connections_beyond_the_incoming_limit_are_refused_until_one_closes() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        max_incoming_connections: 1,
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, "n1", config, Echo);
    let first = client(&client_identity(&ca, "first"), TransportConfig::default());
    first
        .request(addr, None, b"1".to_vec(), TIMEOUT)
        .await
        .unwrap();

    let second = client(&client_identity(&ca, "second"), TransportConfig::default());
    let error = second
        .request(addr, None, b"2".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(error, TransportError::Connect { .. }), "{error:?}");
    assert!(error.is_not_delivered());

    // Once the first connection is gone its slot is free again; the server notices the
    // close asynchronously, so retry until a deadline.
    first.close().await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let response = loop {
        match second.request(addr, None, b"2".to_vec(), TIMEOUT).await {
            Ok(response) => break response,
            Err(TransportError::Connect { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(response, b"client second|2");
    second.close().await;
    server.close().await;
}
