//! Hostile peers against one server: requests that stop arriving, responses nobody
//! reads, requests beyond the byte budget, too many connections from one client or
//! address, idle clients, and a handshake flood answered with Retry. Each test checks
//! that the server refuses or sheds the abuse with the right code and keeps serving.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::{
    certs::{self, CaPem},
    Endpoint, Handler, PeerRole, StreamErrorCode, TlsIdentity, TransportConfig, TransportError,
};

use super::tests::{client_identity, localhost, node_identity, reset_code, TIMEOUT};

/// Answers "big" with a large response, anything else with an echo.
struct Bulky;

const BIG_RESPONSE: usize = 4 * 1024 * 1024;

impl Handler for Bulky {
    async fn handle(&self, _peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        if request == b"big" {
            vec![7; BIG_RESPONSE]
        } else {
            request
        }
    }
}

async fn serve(ca: &CaPem, config: TransportConfig) -> (Endpoint, SocketAddr) {
    let server = Endpoint::server(localhost(), &node_identity(ca, "n1"), config).unwrap();
    server.serve(Arc::new(Bulky));
    let addr = server.local_addr();
    (server, addr)
}

/// A dialing endpoint on 127.0.0.1 with `identity` (a client's or another node's).
fn dialer(identity: &TlsIdentity) -> Endpoint {
    Endpoint::client_on(localhost(), identity, TransportConfig::default()).unwrap()
}

fn client(ca: &CaPem, name: &str) -> Endpoint {
    dialer(&client_identity(ca, name))
}

/// Opens a stream and writes `bytes` without finishing it.
async fn half_request(
    connection: &quinn::Connection,
    bytes: &[u8],
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    (send, recv)
}

/// Reads until the stream fails, returning its reset code.
async fn read_until_reset(recv: &mut quinn::RecvStream) -> StreamErrorCode {
    let mut buf = vec![0u8; 64 * 1024];
    let outcome = tokio::time::timeout(TIMEOUT, async {
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream finished instead of being aborted"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the server aborts the stream within the deadline");
    reset_code(outcome)
}

#[tokio::test]
async fn a_request_that_stops_arriving_is_aborted_and_its_budget_returned() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        max_frame_bytes: 1000,
        max_client_inflight_bytes: 1000,
        request_read_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, config).await;
    let hostile = client(&ca, "hostile");
    let connection = hostile.raw_connection(addr).await.unwrap();
    // Announces the whole budget and sends half of it.
    let mut frame = 1000u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[1; 500]);
    let (_send, mut recv) = half_request(&connection, &frame).await;

    // Meanwhile the budget is spent: another client is refused before its body is
    // read, with a code that says nothing ran.
    let good = client(&ca, "good");
    let err = good
        .request(addr, None, b"hello".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(err.is_overloaded(), "{err:?}");
    assert!(err.is_not_delivered());

    // The stalled request times out and gives its bytes back.
    assert_eq!(read_until_reset(&mut recv).await, StreamErrorCode::TimedOut);
    let response = good
        .request(addr, None, b"hello".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"hello");
    hostile.close().await;
    good.close().await;
    server.close().await;
}

#[tokio::test]
async fn many_half_sent_requests_cost_only_what_arrived_and_then_time_out() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        request_read_timeout: Duration::from_millis(500),
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, config).await;
    let hostile = client(&ca, "hostile");
    let connection = hostile.raw_connection(addr).await.unwrap();
    // 256 streams each announcing 64 KiB (16 MiB in all, within the default budget) and
    // sending 100 bytes.
    let mut frame = (64u32 * 1024).to_be_bytes().to_vec();
    frame.extend_from_slice(&[1; 100]);
    let mut stalled = Vec::new();
    for _ in 0..256 {
        stalled.push(half_request(&connection, &frame).await);
    }
    let good = client(&ca, "good");
    for _ in 0..20 {
        let response = good
            .request(addr, None, b"still here".to_vec(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(response, b"still here");
    }
    for (_send, recv) in &mut stalled {
        assert_eq!(read_until_reset(recv).await, StreamErrorCode::TimedOut);
    }
    hostile.close().await;
    good.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_response_nobody_reads_is_aborted_after_the_write_deadline() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        response_write_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, config).await;
    let hostile = client(&ca, "hostile");
    let connection = hostile.raw_connection(addr).await.unwrap();
    let mut frame = 3u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"big");
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    // Do not read: the response (larger than the stream window) blocks the server's write
    // until its deadline. Wait for the server to give up, then read what it sent.
    let good = client(&ca, "good");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        // The well-behaved client is served meanwhile.
        let response = good
            .request(addr, None, b"ping".to_vec(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(response, b"ping");
        if server.inflight_bytes_in_use("client") == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unread response was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_until_reset(&mut recv).await, StreamErrorCode::TimedOut);
    hostile.close().await;
    good.close().await;
    server.close().await;
}

#[tokio::test]
async fn responses_beyond_a_client_names_share_are_dropped_not_queued() {
    let ca = certs::generate_ca_pem().unwrap();
    let share = BIG_RESPONSE + 1024;
    let config = TransportConfig {
        max_frame_bytes: share,
        max_inflight_bytes_per_client: share,
        response_write_timeout: Duration::from_secs(30),
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, config).await;
    let hostile = client(&ca, "hostile");
    let connection = hostile.raw_connection(addr).await.unwrap();
    let mut frame = 3u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"big");
    // The first big response fills the name's share while it sits unread.
    let (mut send, _unread) = connection.open_bi().await.unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while server.inflight_bytes_in_use("client") < BIG_RESPONSE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first response never took its bytes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The second one has no room: dropped at once, with a code that says it ran.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    assert_eq!(
        read_until_reset(&mut recv).await,
        StreamErrorCode::ResponseDropped
    );
    // Another client name still gets its answers.
    let good = client(&ca, "good");
    assert_eq!(
        good.request(addr, None, b"ok".to_vec(), TIMEOUT)
            .await
            .unwrap(),
        b"ok"
    );
    let err = hostile
        .request(addr, None, b"big".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::StreamAborted {
                code: StreamErrorCode::ResponseDropped,
                ..
            }
        ),
        "{err:?}"
    );
    // Its outcome is unknown: never to be retried as if it had not been delivered.
    assert!(!err.is_not_delivered());
    hostile.close().await;
    good.close().await;
    server.close().await;
}

#[tokio::test]
async fn one_client_name_cannot_take_every_connection() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        max_connections_per_client: 3,
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, config).await;
    let mut hostile = Vec::new();
    for _ in 0..3 {
        let endpoint = client(&ca, "hostile");
        endpoint
            .request(addr, None, b"x".to_vec(), TIMEOUT)
            .await
            .unwrap();
        hostile.push(endpoint);
    }
    // The fourth connection under the same name is closed with the limit code.
    let fourth = client(&ca, "hostile");
    let err = fourth
        .request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Refused { reason, .. } if reason.contains("too many connections")),
        "{err:?}"
    );
    assert!(err.is_not_delivered());
    // Another client, and a peer, still get in.
    let good = client(&ca, "good");
    assert_eq!(
        good.request(addr, None, b"y".to_vec(), TIMEOUT)
            .await
            .unwrap(),
        b"y"
    );
    let peer = dialer(&node_identity(&ca, "n2"));
    assert_eq!(
        peer.request(addr, None, b"z".to_vec(), TIMEOUT)
            .await
            .unwrap(),
        b"z"
    );
    for endpoint in hostile.into_iter().chain([fourth, good, peer]) {
        endpoint.close().await;
    }
    server.close().await;
}

#[tokio::test]
async fn clients_cannot_take_the_peers_connection_slots() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        max_client_connections: 2,
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, config).await;
    let clients: Vec<Endpoint> = ["a", "b"].iter().map(|n| client(&ca, n)).collect();
    for c in &clients {
        c.request(addr, None, b"x".to_vec(), TIMEOUT).await.unwrap();
    }
    let third = client(&ca, "c");
    assert!(third
        .request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .is_err());
    let peer = dialer(&node_identity(&ca, "n2"));
    assert_eq!(
        peer.request(addr, None, b"z".to_vec(), TIMEOUT)
            .await
            .unwrap(),
        b"z"
    );
    for endpoint in clients.into_iter().chain([third, peer]) {
        endpoint.close().await;
    }
    server.close().await;
}

#[tokio::test]
async fn one_address_is_capped_before_its_handshakes() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        max_connections_per_address: 2,
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, config).await;
    let first = client(&ca, "a");
    let second = client(&ca, "b");
    for c in [&first, &second] {
        c.request(addr, None, b"x".to_vec(), TIMEOUT).await.unwrap();
    }
    let third = client(&ca, "c");
    let err = third
        .request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(err.is_not_delivered(), "{err:?}");
    // One closes; the address has room again.
    first.close().await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match third.request(addr, None, b"x".to_vec(), TIMEOUT).await {
            Ok(response) => {
                assert_eq!(response, b"x");
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "the slot never came back: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.close().await;
    third.close().await;
    server.close().await;
}

#[tokio::test]
async fn an_idle_client_connection_is_closed_and_a_peer_connection_is_kept() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        client_idle_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, config).await;
    let idle = client(&ca, "idle");
    let connection = idle.raw_connection(addr).await.unwrap();
    let closed = tokio::time::timeout(TIMEOUT, connection.closed())
        .await
        .expect("the idle client connection is closed within the deadline");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(super::server::CLOSE_IDLE)
            )
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    // The client dials again on its next request.
    assert_eq!(
        idle.request(addr, None, b"back".to_vec(), TIMEOUT)
            .await
            .unwrap(),
        b"back"
    );
    // A peer's connection outlives the client idle timeout.
    let peer = dialer(&node_identity(&ca, "n2"));
    let peer_connection = peer.raw_connection(addr).await.unwrap();
    let outlived = tokio::time::timeout(Duration::from_millis(900), peer_connection.closed()).await;
    assert!(outlived.is_err(), "a peer connection was closed as idle");
    idle.close().await;
    peer.close().await;
    server.close().await;
}

#[tokio::test]
async fn under_a_handshake_flood_new_clients_prove_their_address_and_still_connect() {
    let ca = certs::generate_ca_pem().unwrap();
    // Every unvalidated connection is asked for a Retry, as during a flood.
    let config = TransportConfig {
        retry_handshakes_above: 0,
        ..TransportConfig::default()
    };
    let (server, addr) = serve(&ca, config).await;
    let good = client(&ca, "good");
    assert_eq!(
        good.request(addr, None, b"hi".to_vec(), TIMEOUT)
            .await
            .unwrap(),
        b"hi"
    );
    assert_eq!(server.retries(), 1);
    // The validated connection is reused: no second Retry.
    assert_eq!(
        good.request(addr, None, b"again".to_vec(), TIMEOUT)
            .await
            .unwrap(),
        b"again"
    );
    assert_eq!(server.retries(), 1);
    good.close().await;
    server.close().await;
}
