//! Crate-internal tests that need private hooks: raw streams with malformed frames,
//! certificates no public API would make, cache internals.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use shoal_ring::NodeId;

use crate::{
    certs::{self, CaPem, NODE_SERVER_NAME},
    Endpoint, Handler, PeerRole, StreamErrorCode, TlsIdentity, TransportConfig, TransportError,
};

pub(super) const TIMEOUT: Duration = Duration::from_secs(5);

struct Echo;

impl Handler for Echo {
    async fn handle(&self, peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        let mut response = format!("{peer}|").into_bytes();
        response.extend_from_slice(&request);
        response
    }
}

fn node_id(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

pub(super) fn node_identity(ca: &CaPem, id: &str) -> TlsIdentity {
    let leaf = certs::issue_node_cert_pem(ca, &node_id(id)).unwrap();
    TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.key_pem).unwrap()
}

pub(super) fn client_identity(ca: &CaPem, name: &str) -> TlsIdentity {
    let leaf = certs::issue_client_cert_pem(ca, name).unwrap();
    TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.key_pem).unwrap()
}

pub(super) fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A served node endpoint and its address.
async fn start_server(ca: &CaPem, config: TransportConfig) -> (Endpoint, SocketAddr) {
    let server = Endpoint::server(localhost(), &node_identity(ca, "n1"), config).unwrap();
    server.serve(Arc::new(Echo));
    let addr = server.local_addr();
    (server, addr)
}

/// Writes raw bytes on a new stream, finishes it, and returns how the server answered.
async fn raw_exchange(client: &Endpoint, addr: SocketAddr, bytes: &[u8]) -> quinn::ReadError {
    let connection = client.raw_connection(addr).await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // The server may stop the stream before we finish writing; that is fine.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let mut buf = [0u8; 64];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("server answered a malformed frame instead of aborting"),
            Err(e) => return e,
        }
    }
}

pub(super) fn reset_code(error: quinn::ReadError) -> StreamErrorCode {
    match error {
        quinn::ReadError::Reset(code) => StreamErrorCode::from_code(code.into_inner()),
        other => panic!("expected a stream reset, got {other:?}"),
    }
}

#[tokio::test]
async fn truncated_frame_closes_only_that_stream() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = start_server(&ca, TransportConfig::default()).await;
    let client = Endpoint::client_on(
        localhost(),
        &client_identity(&ca, "c"),
        TransportConfig::default(),
    )
    .unwrap();

    // Two bytes of a four-byte length prefix, then the end of the stream.
    let code = reset_code(raw_exchange(&client, addr, &[0, 0]).await);
    assert_eq!(code, StreamErrorCode::Truncated);
    // A prefix announcing 10 bytes followed by 3.
    let code = reset_code(raw_exchange(&client, addr, &[0, 0, 0, 10, 1, 2, 3]).await);
    assert_eq!(code, StreamErrorCode::Truncated);

    // The same connection still serves requests.
    let response = client
        .request(addr, None, b"ok".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client c|ok");
    assert_eq!(client.open_connections(), 1);
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn oversized_length_prefix_and_trailing_data_abort_the_stream() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        max_frame_bytes: 16,
        ..TransportConfig::default()
    };
    let (server, addr) = start_server(&ca, config).await;
    let client = Endpoint::client_on(
        localhost(),
        &client_identity(&ca, "c"),
        TransportConfig::default(),
    )
    .unwrap();

    // Announces 4 GiB - 1 but sends nothing more: refused from the prefix alone.
    let code = reset_code(raw_exchange(&client, addr, &u32::MAX.to_be_bytes()).await);
    assert_eq!(code, StreamErrorCode::FrameTooLarge);
    // A complete 1-byte frame followed by an extra byte.
    let code = reset_code(raw_exchange(&client, addr, &[0, 0, 0, 1, 7, 8]).await);
    assert_eq!(code, StreamErrorCode::TrailingData);

    let response = client
        .request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client c|x");
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused_by_the_server() {
    let ca = certs::generate_ca_pem().unwrap();
    let other = certs::generate_ca_pem().unwrap();
    let (server, addr) = start_server(&ca, TransportConfig::default()).await;

    // Trusts the right CA (so it accepts the server) but presents a foreign certificate:
    // only the server's client verification can refuse it.
    let foreign_leaf = certs::issue_client_cert_pem(&other, "intruder").unwrap();
    let intruder_identity = TlsIdentity::from_pem_unchecked(
        &ca.cert_pem,
        &foreign_leaf.cert_chain_pem,
        &foreign_leaf.key_pem,
    );
    let intruder =
        Endpoint::client_on(localhost(), &intruder_identity, TransportConfig::default()).unwrap();
    let error = intruder
        .request(addr, None, b"let me in".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::Handshake { .. }),
        "{error:?}"
    );
    assert!(error.is_not_delivered());

    let good = Endpoint::client_on(
        localhost(),
        &client_identity(&ca, "good"),
        TransportConfig::default(),
    )
    .unwrap();
    let response = good
        .request(addr, None, b"hi".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client good|hi");
    intruder.close().await;
    good.close().await;
    server.close().await;
}

/// A certificate with a client role that is nevertheless valid as a TLS server
/// certificate (server EKU and the node server name), as a misbehaving CA could issue.
fn rogue_server_identity(ca: &CaPem) -> TlsIdentity {
    let ca_key = KeyPair::from_pem(&ca.key_pem).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "rogue");
    params.subject_alt_names = vec![
        SanType::URI("shoal://client/rogue".to_owned().try_into().unwrap()),
        SanType::DnsName(NODE_SERVER_NAME.to_owned().try_into().unwrap()),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    TlsIdentity::from_pem(&ca.cert_pem, &cert.pem(), &key.serialize_pem()).unwrap()
}

#[tokio::test]
async fn server_with_a_client_role_is_refused_by_the_dialer() {
    let ca = certs::generate_ca_pem().unwrap();
    let rogue = Endpoint::bind_server(
        localhost(),
        &rogue_server_identity(&ca),
        TransportConfig::default(),
    )
    .unwrap();
    rogue.serve(Arc::new(Echo));
    let addr = rogue.local_addr();

    let client = Endpoint::client_on(
        localhost(),
        &node_identity(&ca, "n2"),
        TransportConfig::default(),
    )
    .unwrap();
    let error = client
        .request(addr, None, b"secret".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    match &error {
        TransportError::PeerRole { found, .. } => {
            assert_eq!(found, &PeerRole::Client("rogue".to_owned()));
        }
        other => panic!("expected PeerRole, got {other:?}"),
    }
    assert!(error.is_not_delivered());
    assert_eq!(client.cached_connections(), 0);
    client.close().await;
    rogue.close().await;
}

#[tokio::test]
async fn server_with_a_plain_client_certificate_fails_tls_verification() {
    let ca = certs::generate_ca_pem().unwrap();
    let server = Endpoint::bind_server(
        localhost(),
        &client_identity(&ca, "c"),
        TransportConfig::default(),
    )
    .unwrap();
    server.serve(Arc::new(Echo));
    let addr = server.local_addr();
    let client = Endpoint::client_on(
        localhost(),
        &node_identity(&ca, "n2"),
        TransportConfig::default(),
    )
    .unwrap();
    let error = client
        .request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::Handshake { .. }),
        "{error:?}"
    );
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn closed_cached_connection_is_replaced() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = start_server(&ca, TransportConfig::default()).await;
    let client = Endpoint::client_on(
        localhost(),
        &client_identity(&ca, "c"),
        TransportConfig::default(),
    )
    .unwrap();
    client
        .request(addr, None, b"1".to_vec(), TIMEOUT)
        .await
        .unwrap();
    let first = client.raw_connection(addr).await.unwrap();
    first.close(quinn::VarInt::from_u32(0), b"test");
    assert_eq!(client.cached_connections(), 0);

    let response = client
        .request(addr, None, b"2".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client c|2");
    let second = client.raw_connection(addr).await.unwrap();
    assert_ne!(first.stable_id(), second.stable_id());
    assert_eq!(client.cached_connections(), 1);
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn cache_evicts_the_least_recently_used_connection_when_full() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server_a, addr_a) = start_server(&ca, TransportConfig::default()).await;
    let (server_b, addr_b) = start_server(&ca, TransportConfig::default()).await;
    let config = TransportConfig {
        max_cached_connections: 1,
        ..TransportConfig::default()
    };
    let client = client_with(&ca, "c", config);
    client
        .request(addr_a, None, b"a".to_vec(), TIMEOUT)
        .await
        .unwrap();
    let to_a = client.raw_connection(addr_a).await.unwrap();
    client
        .request(addr_b, None, b"b".to_vec(), TIMEOUT)
        .await
        .unwrap();

    assert_eq!(client.cache_len(), 1);
    assert_eq!(client.cached_connections(), 1);
    assert!(
        to_a.close_reason().is_some(),
        "evicted connection must be closed"
    );
    client.close().await;
    server_a.close().await;
    server_b.close().await;
}

#[tokio::test]
async fn concurrent_requests_to_an_unreachable_peer_share_one_dial() {
    let ca = certs::generate_ca_pem().unwrap();
    // A UDP socket that never answers: the handshake can only time out.
    let silent = std::net::UdpSocket::bind(localhost()).unwrap();
    let addr = silent.local_addr().unwrap();
    let config = TransportConfig {
        connect_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let client = client_with(&ca, "c", config);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        tasks.spawn(async move { client.request(addr, None, b"x".to_vec(), TIMEOUT).await });
    }
    let started = Instant::now();
    while let Some(result) = tasks.join_next().await {
        let error = result.unwrap().unwrap_err();
        assert!(matches!(error, TransportError::Connect { .. }), "{error:?}");
        assert!(error.is_not_delivered());
    }
    let failures = client.dial_failures(addr);
    assert_eq!(
        failures,
        1,
        "one dial for all waiting requests (took {:?})",
        started.elapsed()
    );
    client.close().await;
}

/// Dials `addr` with our client identity but the given ALPN list, bypassing `Endpoint`.
async fn dial_with_alpn(
    ca: &CaPem,
    addr: SocketAddr,
    alpn: Vec<Vec<u8>>,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let mut tls = crate::tls::client_tls(&client_identity(ca, "c")).unwrap();
    tls.alpn_protocols = alpn;
    let config = crate::tls::quic_client_config(tls, &TransportConfig::default()).unwrap();
    let endpoint = quinn::Endpoint::client(localhost()).unwrap();
    let connection = endpoint
        .connect_with(config, addr, NODE_SERVER_NAME)
        .unwrap()
        .await?;
    // Refused after the handshake, if not during it.
    Err(connection.closed().await)
}

#[tokio::test]
async fn other_alpn_protocols_are_refused() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = start_server(&ca, TransportConfig::default()).await;

    let error = dial_with_alpn(&ca, addr, vec![b"shoal/2".to_vec()])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, quinn::ConnectionError::ConnectionClosed(c) if crate::server::is_crypto(c.error_code)),
        "{error:?}"
    );
    // No ALPN at all: rustls refuses it too (QUIC requires ALPN).
    let error = dial_with_alpn(&ca, addr, Vec::new()).await.unwrap_err();
    assert!(
        matches!(&error, quinn::ConnectionError::ConnectionClosed(c) if crate::server::is_crypto(c.error_code)),
        "{error:?}"
    );

    // The right protocol still works.
    let client = Endpoint::client_on(
        localhost(),
        &client_identity(&ca, "c"),
        TransportConfig::default(),
    )
    .unwrap();
    client
        .request(addr, None, b"x".to_vec(), TIMEOUT)
        .await
        .unwrap();
    client.close().await;
    server.close().await;
}

/// A client endpoint on 127.0.0.1 with a certificate `name` of `ca`.
fn client_of(ca: &CaPem, name: &str) -> Endpoint {
    client_with(ca, name, TransportConfig::default())
}

/// A client endpoint on localhost named `name`, with `config`.
fn client_with(ca: &CaPem, name: &str, config: TransportConfig) -> Endpoint {
    Endpoint::client_on(localhost(), &client_identity(ca, name), config).unwrap()
}

/// A reload (a rotation to a new CA here, so old and new certificates cannot be mixed
/// up) applies to new connections, both accepted and dialled, and leaves open ones
/// serving.
#[tokio::test]
async fn reload_swaps_certificates_for_new_connections_and_keeps_open_ones() {
    let old_ca = certs::generate_ca_pem().unwrap();
    let new_ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = start_server(&old_ca, TransportConfig::default()).await;
    let old_client = client_of(&old_ca, "old");
    old_client
        .request(addr, None, b"1".to_vec(), TIMEOUT)
        .await
        .unwrap();
    let open = old_client.raw_connection(addr).await.unwrap();

    let new_identity = node_identity(&new_ca, "n1");
    server.reload(&new_identity).unwrap();

    // The connection made before the reload still serves requests.
    let response = old_client
        .request(addr, None, b"2".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client old|2");
    assert_eq!(
        old_client.raw_connection(addr).await.unwrap().stable_id(),
        open.stable_id()
    );
    // A new connection under the old CA is refused; one under the new CA is served.
    let stale = client_of(&old_ca, "stale");
    assert!(stale
        .request(addr, None, b"3".to_vec(), TIMEOUT)
        .await
        .is_err());
    let fresh = client_of(&new_ca, "fresh");
    let response = fresh
        .request(addr, None, b"4".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client fresh|4");
    // The dialling side: the old client, reloaded with a certificate of the new CA,
    // dials new connections with it (its open one is closed to force a new dial).
    old_client.reload(&client_identity(&new_ca, "old")).unwrap();
    open.close(quinn::VarInt::from_u32(0), b"test");
    let response = old_client
        .request(addr, None, b"5".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client old|5");
    for endpoint in [old_client, stale, fresh, server] {
        endpoint.close().await;
    }
}

/// A certificate of another name or role is refused and the old one stays in use.
#[tokio::test]
async fn reload_with_another_identity_is_refused_and_changes_nothing() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = start_server(&ca, TransportConfig::default()).await;
    for other in [node_identity(&ca, "n2"), client_identity(&ca, "n1")] {
        assert!(matches!(
            server.reload(&other),
            Err(TransportError::IdentityChanged { .. })
        ));
    }
    let client = client_of(&ca, "c");
    let response = client
        .request(addr, Some(&node_id("n1")), b"x".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response, b"client c|x");
    client.close().await;
    server.close().await;
}

/// Sends 16 KiB requests to `addr` until the size of the connection's datagrams satisfies
/// `enough`, or 2,000 requests or 20 s have passed (path MTU discovery grows them);
/// returns the last size seen.
async fn mtu_after_requests(
    client: &Endpoint,
    addr: SocketAddr,
    enough: impl Fn(u16) -> bool,
) -> u16 {
    let payload = vec![7u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut mtu = 0;
    for _ in 0..2_000 {
        client
            .request(addr, None, payload.clone(), TIMEOUT)
            .await
            .unwrap();
        mtu = client
            .raw_connection(addr)
            .await
            .unwrap()
            .stats()
            .path
            .current_mtu;
        if enough(mtu) || Instant::now() > deadline {
            break;
        }
    }
    mtu
}

/// Large datagrams and segmentation offload: a batch of datagrams handed to the kernel
/// in one send may carry at most 64 KiB, and quinn asks for up to 10 per send, so with a
/// 9,000-byte bound a batch of 90,000 bytes was refused (`EMSGSIZE`), which quinn's
/// socket layer takes as sent: ten datagrams lost at once, resent after a loss timeout
/// with a halved congestion window (multi-megabyte values moved more slowly than with
/// 1,452-byte datagrams). On an in-order, lossless loopback nothing may be lost.
#[tokio::test]
async fn large_datagrams_move_megabytes_without_losing_a_batch() {
    let ca = certs::generate_ca_pem().unwrap();
    let config = TransportConfig {
        max_udp_payload_bytes: 9000,
        ..TransportConfig::default()
    };
    let (server, addr) = start_server(&ca, config.clone()).await;
    let client = client_with(&ca, "c", config);
    let mtu = mtu_after_requests(&client, addr, |mtu| mtu > 1500).await;
    assert!(mtu > 1500, "the datagrams stayed at {mtu} bytes");
    let value = vec![9u8; 3 << 20];
    for _ in 0..8 {
        client
            .request(addr, None, value.clone(), TIMEOUT)
            .await
            .unwrap();
    }
    let path = client.raw_connection(addr).await.unwrap().stats().path;
    assert_eq!(
        path.lost_packets, 0,
        "{} datagrams ({} bytes) lost moving 24 MiB over loopback in datagrams of {} bytes",
        path.lost_packets, path.lost_bytes, path.current_mtu
    );
    client.close().await;
    server.close().await;
}

/// Path MTU discovery on loopback: with the default bound (9,000) a connection's
/// datagrams grow well past Ethernet's 1,500 bytes (several responses then share one);
/// with Ethernet's 1,452 they never exceed it (a bound outside QUIC's range is refused:
/// `config::tests::udp_bounds_outside_their_ranges_are_refused`).
#[tokio::test]
async fn datagrams_grow_to_what_the_path_carries_up_to_the_configured_bound() {
    let ca = certs::generate_ca_pem().unwrap();
    // `None`: the default bound; `Some`: Ethernet's.
    for bound in [None, Some(1452)] {
        assert_eq!(TransportConfig::default().max_udp_payload_bytes, 9000);
        let config = TransportConfig {
            max_udp_payload_bytes: bound
                .unwrap_or(TransportConfig::default().max_udp_payload_bytes),
            ..TransportConfig::default()
        };
        let (server, addr) = start_server(&ca, config.clone()).await;
        let client = client_with(&ca, "c", config);
        let mtu = mtu_after_requests(&client, addr, |mtu| {
            mtu > 1500 || (bound.is_some() && mtu >= 1452)
        })
        .await;
        match bound {
            None => assert!(mtu > 1500, "the datagrams stayed at {mtu} bytes"),
            Some(bound) => assert!(
                (1200..=bound).contains(&mtu),
                "the datagrams grew to {mtu} bytes past the bound {bound}"
            ),
        }
        client.close().await;
        server.close().await;
    }
}

/// The endpoint's socket gets the receive buffer the config asks for (where
/// `net.core.rmem_max` or `CAP_NET_ADMIN` allows it), 0 leaves the system's default, and
/// the kernel's count of datagrams dropped on a full buffer is read back: a flood of
/// 60 KiB datagrams at an endpoint with the smallest buffer overflows it. (A buffer past
/// 1 GiB is refused: `config::tests::udp_bounds_outside_their_ranges_are_refused`.)
#[tokio::test]
async fn the_socket_receive_buffer_is_sized_and_its_drops_are_counted() {
    let ca = certs::generate_ca_pem().unwrap();
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let wanted = 3 * 1024 * 1024 + 4096;
    let config = TransportConfig {
        udp_receive_buffer_bytes: wanted,
        ..TransportConfig::default()
    };
    let (server, _) = start_server(&ca, config).await;
    let got = server.udp_receive_buffer_bytes();
    assert!(
        got >= wanted.min(rmem_max),
        "asked {wanted} bytes (rmem_max {rmem_max}), the socket has {got}"
    );
    assert_eq!(server.udp_receive_drops(), Some(0), "nothing dropped yet");
    server.close().await;

    let default = client_with(
        &ca,
        "c",
        TransportConfig {
            udp_receive_buffer_bytes: 0,
            ..TransportConfig::default()
        },
    );
    assert!(default.udp_receive_buffer_bytes() > 0);
    default.close().await;

    // The kernel rounds a tiny request up to its minimum (a few KiB): one large datagram
    // fills it.
    let config = TransportConfig {
        udp_receive_buffer_bytes: 1,
        ..TransportConfig::default()
    };
    let (small, addr) = start_server(&ca, config).await;
    let flood = std::net::UdpSocket::bind(localhost()).unwrap();
    let datagram = vec![0u8; 60 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut drops = 0;
    while drops == 0 && Instant::now() < deadline {
        for _ in 0..64 {
            // A send may fail while the receiver's buffer is full; drops are what counts.
            let _ = flood.send_to(&datagram, addr);
        }
        drops = small.udp_receive_drops().unwrap();
    }
    assert!(drops > 0, "no drop counted after flooding a full buffer");
    small.close().await;
}

/// `is_connected` tells a live cached connection to the expected node apart from none,
/// another node's, and a closed one, without dialing.
#[tokio::test]
async fn is_connected_reports_only_a_live_connection_to_the_expected_node() {
    let ca = certs::generate_ca_pem().unwrap();
    let (server, addr) = start_server(&ca, TransportConfig::default()).await;
    let client = Endpoint::client_on(
        localhost(),
        &client_identity(&ca, "c"),
        TransportConfig::default(),
    )
    .unwrap();
    assert!(!client.is_connected(addr, None), "connected before dialing");
    assert_eq!(client.cached_connections(), 0, "the check dialed");
    client
        .request(addr, Some(&node_id("n1")), b"1".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert!(client.is_connected(addr, None));
    assert!(client.is_connected(addr, Some(&node_id("n1"))));
    assert!(!client.is_connected(addr, Some(&node_id("n2"))));
    client
        .raw_connection(addr)
        .await
        .unwrap()
        .close(quinn::VarInt::from_u32(0), b"test");
    assert!(
        !client.is_connected(addr, None),
        "a closed connection counts"
    );
    client.close().await;
    server.close().await;
}

/// A node endpoint serving [`Echo`] on a runtime of its own thread, so that it can be
/// killed as a crashed process dies (its runtime dropped with every task: nothing more
/// is sent, not even a close).
struct ServerThread {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    fn start(ca: &CaPem, bind: SocketAddr) -> ServerThread {
        ServerThread::start_with(ca, bind, Echo)
    }

    /// A server thread answering with `handler`.
    fn start_with(ca: &CaPem, bind: SocketAddr, handler: impl Handler) -> ServerThread {
        ServerThread::start_as(node_identity(ca, "n1"), bind, handler)
    }

    /// A server thread with `identity` (a restart keeps its node's key).
    fn start_as(identity: TlsIdentity, bind: SocketAddr, handler: impl Handler) -> ServerThread {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<bool>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let server = Endpoint::server(bind, &identity, TransportConfig::default()).unwrap();
                server.serve(Arc::new(handler));
                addr_tx.send(server.local_addr()).unwrap();
                // `true`: close as a node shutting down; `false` (or the test gone): die.
                if stopped.await.unwrap_or(false) {
                    server.close().await;
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(TIMEOUT)
            .expect("the server thread's address");
        ServerThread {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the server (`graceful`: closing its connections; otherwise killed) and waits
    /// for its thread.
    fn stop(mut self, graceful: bool) {
        self.end(graceful);
    }

    fn end(&mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(graceful);
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the server thread");
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.end(true);
    }
}

/// A client named `c` that has made one request to `addr`, and its connection there.
async fn warm_client_of(ca: &CaPem, addr: SocketAddr) -> (Endpoint, quinn::Connection) {
    let client = client_of(ca, "c");
    client
        .request(addr, None, b"warm".to_vec(), TIMEOUT)
        .await
        .unwrap();
    let connection = client.raw_connection(addr).await.unwrap();
    (client, connection)
}

/// What setting silent connections aside is for: a peer killed and restarted on the
/// same address with another key never answers on the old connection (its stateless
/// resets use another key; see the next test for a restart with the same key), so the
/// connection is set aside once a request timed out
/// with nothing received while it waited (and closed, that request being its last),
/// and the next request dials the new process.
#[tokio::test]
async fn a_connection_to_a_killed_peer_is_closed_and_its_restart_is_dialed() {
    let ca = certs::generate_ca_pem().unwrap();
    let server = ServerThread::start(&ca, localhost());
    let addr = server.addr;
    let (client, first) = warm_client_of(&ca, addr).await;
    server.stop(false);
    let restarted = ServerThread::start(&ca, addr);
    let deadline = Instant::now() + 2 * TIMEOUT;
    let mut errors = Vec::new();
    let response = loop {
        match client
            .request(addr, None, b"again".to_vec(), Duration::from_millis(200))
            .await
        {
            Ok(response) => break response,
            Err(e) => {
                errors.push(e.to_string());
                assert!(
                    Instant::now() < deadline,
                    "the restarted peer was never reached: {errors:?}"
                );
            }
        }
    };
    assert_eq!(response, b"client c|again");
    assert!(first.close_reason().is_some(), "the old connection is open");
    let second = client.raw_connection(addr).await.unwrap();
    assert_ne!(first.stable_id(), second.stable_id());
    client.close().await;
    restarted.stop(true);
}

/// A node killed and started again with its key (a restart) answers the first packet of
/// a connection to its previous process with a stateless reset the connection accepts:
/// a request on it fails at once as `PeerRestarted` (the previous process may have run
/// it), instead of waiting out its timeout on a connection nothing answers any more,
/// and a request that may run twice is sent again to the new process.
#[tokio::test]
async fn a_peer_restarted_with_its_key_resets_the_old_connection_at_its_first_packet() {
    let ca = certs::generate_ca_pem().unwrap();
    let n1 = node_identity(&ca, "n1");
    let server = ServerThread::start_as(n1.clone(), localhost(), Echo);
    let addr = server.addr;
    // Keep-alives far apart: the first packet after a restart is the request's.
    let config = TransportConfig {
        keep_alive: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(30),
        ..TransportConfig::default()
    };
    let client = client_with(&ca, "c", config);
    let warm = |client: Endpoint| async move {
        client
            .request(addr, None, b"warm".to_vec(), TIMEOUT)
            .await
            .unwrap();
        client.raw_connection(addr).await.unwrap()
    };
    let first = warm(client.clone()).await;
    server.stop(false);
    let restarted = ServerThread::start_as(n1.clone(), addr, Echo);
    let once = client.request(addr, None, b"once".to_vec(), TIMEOUT).await;
    assert!(
        matches!(once, Err(TransportError::PeerRestarted { .. })),
        "a request on the old connection: {once:?}"
    );
    assert!(
        matches!(first.close_reason(), Some(quinn::ConnectionError::Reset)),
        "the old connection: {:?}",
        first.close_reason()
    );

    let second = warm(client.clone()).await;
    assert_ne!(first.stable_id(), second.stable_id());
    restarted.stop(false);
    let again = ServerThread::start_as(n1, addr, Echo);
    let answer = client
        .request_idempotent(addr, None, b"twice".to_vec(), TIMEOUT)
        .await
        .map_err(|e| e.to_string());
    assert_eq!(answer.as_deref(), Ok(&b"client c|twice"[..]));
    assert!(
        second.close_reason().is_some(),
        "the second process's connection"
    );
    let third = client.raw_connection(addr).await.unwrap();
    assert_ne!(second.stable_id(), third.stable_id());
    client.close().await;
    again.stop(true);
}

/// Echoes, except that a `stall` request blocks the server's whole runtime (its QUIC
/// driver included: nothing is sent, not even an ACK) until the test releases it, as a
/// node starved of CPU for a while.
struct Stall {
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Handler for Stall {
    async fn handle(&self, peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
        if request == b"stall" {
            self.entered.lock().unwrap().send(()).unwrap();
            let released = self.release.lock().unwrap().recv_timeout(2 * TIMEOUT);
            assert!(released.is_ok(), "the test never released the stall");
        }
        Echo.handle(peer, request).await
    }
}

/// A peer that stalls (its runtime starved, nothing sent) long enough for one request to
/// time out is set aside for new requests, but the requests already in flight on its
/// connection keep waiting for their answers: closing the connection at once failed
/// them all, although the peer answered them once it ran again.
#[tokio::test]
async fn a_stalled_peer_answers_the_requests_in_flight_when_one_times_out() {
    let ca = certs::generate_ca_pem().unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let stall = Stall {
        entered: std::sync::Mutex::new(entered_tx),
        release: std::sync::Mutex::new(release_rx),
    };
    let server = ServerThread::start_with(&ca, localhost(), stall);
    let addr = server.addr;
    let (client, first) = warm_client_of(&ca, addr).await;
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request(addr, None, b"stall".to_vec(), 2 * TIMEOUT)
                .await
        }
    });
    tokio::task::spawn_blocking(move || entered.recv_timeout(TIMEOUT))
        .await
        .unwrap()
        .expect("the stall request reached the server");
    // The server's runtime is blocked: this request gets no answer and no ACK. A packet
    // the server sent before it stalled (the stall request's ACK) can still reach the
    // client while the first quick request waits, and then that request does not count
    // as unanswered (the connection is set aside only after a timeout with nothing
    // received): another one is sent, at most three in all.
    for attempt in 1.. {
        let received_before = first.stats().udp_rx.datagrams;
        let silent = client
            .request(addr, None, b"quick".to_vec(), Duration::from_millis(300))
            .await;
        assert!(
            matches!(silent, Err(TransportError::Timeout { .. })),
            "a request to the stalled peer: {silent:?}"
        );
        if first.stats().udp_rx.datagrams == received_before {
            break;
        }
        assert!(attempt < 3, "packets kept arriving from the stalled peer");
    }
    release.send(()).unwrap();
    let answered = in_flight.await.unwrap();
    assert_eq!(
        answered.as_deref().map_err(|e| e.to_string()),
        Ok(&b"client c|stall"[..]),
        "the request in flight when the other timed out"
    );
    // The silent connection was set aside: the next request dials a new one, and the old
    // one closed once its last request ended.
    let next = client
        .request(addr, None, b"next".to_vec(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(next, b"client c|next");
    let second = client.raw_connection(addr).await.unwrap();
    assert_ne!(first.stable_id(), second.stable_id(), "no new connection");
    assert!(
        first.close_reason().is_some(),
        "the set-aside connection is open"
    );
    client.close().await;
    server.stop(true);
}
