//! One real node process (`shoal node`), talked to through the SDK and through raw QUIC:
//! round trips with siblings and contexts, mutual TLS roles, hostile input, size limits.
//! After every refused or malformed request the node must keep serving.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use shoal_client::{Client, ClientConfig, ClientError, MAX_KEY_BYTES};
use shoal_proto::wire::{
    decode_response, encode_request, ClientRequest, ClientResponse, PeerRequest, ReadOptions,
    Request, Response, WriteOptions, MAX_CLIENT_BATCH, WIRE_VERSION,
};
use shoal_proto::{Actor, CausalContext, Dot, Object, RequestError, SiblingValue, Time};
use shoal_transport::{Endpoint, StreamErrorCode, TlsIdentity, TransportConfig, TransportError};

use crate::harness::{foreign_client_files, values_of, Cluster, RAW_REQUEST_TIMEOUT};

/// Small limits, so that the oversized value and frame cases stay cheap: values up to
/// 64 KiB, objects up to 1 MiB, hence a frame limit of 1 MiB + 64 KiB.
const SMALL_LIMITS: &str = "[limits]\nmax_value_bytes = 65536\nmax_object_bytes = 1048576\n";
const MAX_VALUE_BYTES: usize = 65536;

async fn start_node() -> Cluster {
    Cluster::start(1, SMALL_LIMITS).await
}

/// The node process is alive, and a put then a get of a fresh key through `client`
/// succeed: the node still serves.
async fn assert_serving(node: &mut Cluster, client: &Client, key: &str) {
    assert!(node.is_running(0), "the node process exited");
    client
        .put(key, "still here")
        .await
        .unwrap_or_else(|e| panic!("put {key} after the bad input: {e}"));
    let read = client
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key} after the bad input: {e}"));
    assert_eq!(read.values, vec![b"still here".to_vec()], "{key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_round_trips_keep_siblings_until_a_write_with_context_resolves_them() {
    let node = start_node().await;
    let client = node.client().await;

    // A missing key: not found, no values.
    let missing = client.get("never-written").await.unwrap();
    assert!(!missing.found);
    assert!(missing.values.is_empty());

    // Put, get, put with the read's context: one value, the newer one.
    client.put("greeting", "hello").await.unwrap();
    let read = client.get("greeting").await.unwrap();
    assert!(read.found);
    assert_eq!(values_of(&read), ["hello"]);
    let ctx = client
        .put_with("greeting", "hi")
        .context(&read.context)
        .send()
        .await
        .unwrap();
    assert_eq!(values_of(&client.get("greeting").await.unwrap()), ["hi"]);
    // The context a put returns also replaces what it wrote.
    client
        .put_with("greeting", "hey")
        .context(&ctx)
        .send()
        .await
        .unwrap();
    assert_eq!(values_of(&client.get("greeting").await.unwrap()), ["hey"]);

    // Two puts without context are concurrent: both come back as siblings.
    client.put("pair", "left").await.unwrap();
    client.put("pair", "right").await.unwrap();
    let siblings = client.get("pair").await.unwrap();
    assert_eq!(values_of(&siblings), ["left", "right"]);
    // A write with the read's context replaces both.
    client
        .put_with("pair", "merged")
        .context(&siblings.context)
        .send()
        .await
        .unwrap();
    let merged = client.get("pair").await.unwrap();
    assert_eq!(values_of(&merged), ["merged"]);

    // Delete with the context, then the key is not found.
    client
        .delete_with("pair")
        .context(&merged.context)
        .send()
        .await
        .unwrap();
    let gone = client.get("pair").await.unwrap();
    assert!(!gone.found, "{gone:?}");
    assert!(gone.values.is_empty(), "{gone:?}");

    // Contexts survive the trip through a string.
    let text = merged.context.to_string();
    let parsed: shoal_client::Context = text.parse().unwrap();
    assert_eq!(parsed, merged.context);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let mut node = start_node().await;
    let other = tempfile::tempdir().unwrap();
    let files = foreign_client_files(other.path());
    let addr = node.nodes()[0].addr;

    // Through the SDK: no node accepts the handshake, so the cluster is unreachable.
    let mut config = ClientConfig::new(vec![addr], files.clone());
    config.connect_timeout = Duration::from_secs(5);
    match Client::connect(config).await {
        Err(ClientError::Unreachable { last, .. }) => {
            assert!(last.contains("TLS handshake"), "{last}")
        }
        other => panic!("expected the handshake to be refused, got {other:?}"),
    }

    // Raw: the request fails with a handshake error (never reaching the handler).
    let identity = TlsIdentity::load(&files.ca, &files.cert, &files.key).unwrap();
    let endpoint = Endpoint::client(&identity, TransportConfig::default()).unwrap();
    let payload = encode_request(&Request::Client(
        shoal_proto::wire::ClientRequest::ClusterInfo,
    ));
    let error = endpoint
        .request(addr, None, payload, RAW_REQUEST_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::Handshake { .. }),
        "{error:?}"
    );
    endpoint.close().await;

    // The node keeps serving a client of its own cluster.
    let client = node.client().await;
    assert_serving(&mut node, &client, "after-intruder").await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_may_not_send_node_to_node_messages() {
    let mut node = start_node().await;
    let client = node.client().await;
    let ring = client.cluster_info().await.ring;
    let addr = node.nodes()[0].addr;
    let endpoint = node.raw_client(TransportConfig::default());

    // A forged replica write: an object holding a value nobody put through the API.
    let key = b"injected".to_vec();
    let mut object = Object::new();
    object
        .update(
            &CausalContext::new(),
            SiblingValue::Data(b"forged".to_vec()),
            Dot::new(Actor(0xbad), 1),
            Time::ZERO,
        )
        .unwrap();
    let partition = ring.partition_of(&key);
    let peer_messages = [
        PeerRequest::Ping,
        PeerRequest::Replicate {
            partition,
            key: key.clone(),
            object,
            hint_for: None,
        },
        PeerRequest::Read {
            partition,
            key: key.clone(),
            hint_for: None,
        },
    ];
    for message in peer_messages {
        let name = message.op_name();
        let bytes = endpoint
            .request(
                addr,
                None,
                encode_request(&Request::Peer(message)),
                RAW_REQUEST_TIMEOUT,
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        match decode_response(&bytes).unwrap() {
            Response::Error(RequestError::NotAllowed(why)) => {
                assert!(why.contains("client"), "{name}: {why}")
            }
            other => panic!("{name}: expected NotAllowed, got {other:?}"),
        }
    }

    // The forged write was not stored, and the node keeps serving.
    let read = client.get(&key).await.unwrap();
    assert!(!read.found, "a refused Replicate was stored: {read:?}");
    assert_serving(&mut node, &client, "after-peer-messages").await;
    endpoint.close().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_leave_the_node_serving() {
    let mut node = start_node().await;
    let addr = node.nodes()[0].addr;
    let junk = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut sent = 0;
    // Shapes a QUIC server must look at: empty, tiny, short headers, long headers with
    // our version and junk connection ids (Initial-sized), and random bytes.
    let mut long_header = vec![0xc0, 0, 0, 0, 1, 8];
    long_header.extend_from_slice(&[0xab; 1300]);
    for datagram in [
        &b""[..],
        b"\x00",
        b"GET / HTTP/1.1\r\n\r\n",
        &[0xff; 1200],
        &long_header,
        &[0x40; 64],
    ] {
        junk.send_to(datagram, addr).unwrap();
        sent += 1;
    }
    for _ in 0..300 {
        let len = rng.random_range(1..1400);
        let mut datagram: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) {
            // A long header with QUIC version 1, so the server parses further.
            datagram[0] |= 0xc0;
            if datagram.len() > 5 {
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        junk.send_to(&datagram, addr).unwrap();
        sent += 1;
    }
    assert_eq!(sent, 306);

    let client = node.client().await;
    assert_serving(&mut node, &client, "after-garbage-datagrams").await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_are_refused_and_the_node_keeps_serving() {
    let mut node = start_node().await;
    let addr = node.nodes()[0].addr;
    let client = node.client().await;

    // Well-formed QUIC and TLS, nonsense payloads: typed errors, not a crash.
    let endpoint = node.raw_client(TransportConfig::default());
    let mut garbage = WIRE_VERSION.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff, 0xfe, 0xfd, 0x00, 0x17, 0x42]);
    let mut truncated = encode_request(&Request::Client(shoal_proto::wire::ClientRequest::Get {
        key: b"k".to_vec(),
        options: Default::default(),
    }));
    truncated.truncate(truncated.len() - 1);
    let mut trailing = encode_request(&Request::Client(shoal_proto::wire::ClientRequest::Status));
    trailing.push(0);
    for (name, payload) in [
        ("empty", Vec::new()),
        ("one byte", vec![0]),
        ("garbage body", garbage),
        ("truncated message", truncated),
        ("trailing bytes", trailing),
    ] {
        let bytes = endpoint
            .request(addr, None, payload, RAW_REQUEST_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        match decode_response(&bytes).unwrap() {
            Response::Error(RequestError::Malformed(_)) => {}
            other => panic!("{name}: expected Malformed, got {other:?}"),
        }
    }
    // A peer message from a client certificate is refused before its body is decoded,
    // malformed or not.
    let mut peer_trailing = encode_request(&Request::Peer(PeerRequest::Ping));
    peer_trailing.push(0);
    for payload in [
        encode_request(&Request::Peer(PeerRequest::Ping)),
        peer_trailing,
    ] {
        let bytes = endpoint
            .request(addr, None, payload, RAW_REQUEST_TIMEOUT)
            .await
            .unwrap();
        match decode_response(&bytes).unwrap() {
            Response::Error(RequestError::NotAllowed(_)) => {}
            other => panic!("peer message from a client: expected NotAllowed, got {other:?}"),
        }
    }
    let mut future_version = (WIRE_VERSION + 1).to_be_bytes().to_vec();
    future_version.extend_from_slice(&[1, 2, 3]);
    let bytes = endpoint
        .request(addr, None, future_version, RAW_REQUEST_TIMEOUT)
        .await
        .unwrap();
    assert!(
        matches!(
            decode_response(&bytes).unwrap(),
            Response::Error(RequestError::UnsupportedVersion { .. })
        ),
        "{:?}",
        decode_response(&bytes)
    );
    assert_serving(&mut node, &client, "after-malformed-frames").await;

    // A frame over the node's limit (1 MiB + 64 KiB here), from a sender whose own limit
    // lets it through: the node aborts that stream.
    let big_sender = node.raw_client(TransportConfig {
        max_frame_bytes: 4 << 20,
        ..TransportConfig::default()
    });
    let error = big_sender
        .request(addr, None, vec![0x5a; 2 << 20], RAW_REQUEST_TIMEOUT)
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
    // The same connection goes on serving the next request.
    let bytes = big_sender
        .request(
            addr,
            None,
            encode_request(&Request::Client(shoal_proto::wire::ClientRequest::Status)),
            RAW_REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            decode_response(&bytes).unwrap(),
            Response::Client(shoal_proto::wire::ClientResponse::Status(_))
        ),
        "{:?}",
        decode_response(&bytes)
    );
    assert_serving(&mut node, &client, "after-oversized-frame").await;
    endpoint.close().await;
    big_sender.close().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_key_and_value_are_typed_errors_and_the_node_keeps_serving() {
    let mut node = start_node().await;
    let client = node.client().await;

    let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
    match client.put(&long_key, "v").await {
        Err(ClientError::KeyTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_KEY_BYTES + 1, MAX_KEY_BYTES))
        }
        other => panic!("expected KeyTooLarge, got {other:?}"),
    }
    match client.get(&long_key).await {
        Err(ClientError::KeyTooLarge { .. }) => {}
        other => panic!("expected KeyTooLarge, got {other:?}"),
    }
    match client.put("", "v").await {
        Err(ClientError::EmptyKey) => {}
        other => panic!("expected EmptyKey, got {other:?}"),
    }
    // The largest key is accepted.
    let max_key = vec![b'm'; MAX_KEY_BYTES];
    client.put(&max_key, "v").await.unwrap();

    // The value limit is the node's (`limits.max_value_bytes`), checked by the node.
    let big_value = vec![0x61; MAX_VALUE_BYTES + 1];
    match client.put("big", big_value).await {
        Err(ClientError::ValueTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_VALUE_BYTES + 1, MAX_VALUE_BYTES))
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    let read = client.get("big").await.unwrap();
    assert!(!read.found, "a refused value was stored");
    // Exactly the limit is accepted.
    client
        .put("big", vec![0x62; MAX_VALUE_BYTES])
        .await
        .unwrap();
    let read = client.get("big").await.unwrap();
    assert_eq!(read.values, vec![vec![0x62; MAX_VALUE_BYTES]]);

    assert_serving(&mut node, &client, "after-oversized").await;
    client.close().await;
}

/// With `tls.admin_clients` set, a client certificate not on the list is refused layout
/// changes and backups with a typed `NotAllowed` (and counted), while it still reads,
/// writes and views the cluster; a listed client's layout change is carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_clients_may_change_the_cluster_or_take_backups() {
    use shoal_proto::wire::{ClientRequest, ClientResponse, ClusterRequest};
    let mut node = Cluster::start(1, "[tls]\nadmin_clients = [\"ops\"]\n").await;
    let addr = node.nodes()[0].addr;
    // The dev cluster's own client certificate is named "dev": not an admin here.
    let dev = node.raw_client(TransportConfig::default());
    let refused = [
        ClientRequest::Cluster(ClusterRequest::Unstage),
        ClientRequest::Cluster(ClusterRequest::Commit { version: 1 }),
        ClientRequest::Backup {
            name: "nightly".into(),
        },
    ];
    for request in refused {
        match crate::harness::ask(&dev, addr, request.clone()).await {
            ClientResponse::Error(RequestError::NotAllowed(why)) => {
                assert!(why.contains("admin_clients"), "{request:?}: {why}")
            }
            other => panic!("{request:?} from a non-admin client: {other:?}"),
        }
    }
    let refusals = node
        .metric_sum(
            &[0],
            "shoal_refused_requests_total",
            &[("reason", "client_not_admin")],
        )
        .await
        .unwrap();
    assert_eq!(refusals, 3.0, "each refusal is counted");
    // Reading the cluster's state stays open to every client, and so do data requests.
    match crate::harness::ask(&dev, addr, ClientRequest::Cluster(ClusterRequest::Status)).await {
        ClientResponse::Cluster(_) => {}
        other => panic!("a status read was refused: {other:?}"),
    }
    let client = node.client().await;
    assert_serving(&mut node, &client, "after-refusals").await;
    client.close().await;

    // A client certificate named "ops", from the cluster's CA, may.
    let ops_dir = node.dir().join("ops");
    shoal_transport::certs::issue_client_cert(node.dir(), "ops", &ops_dir)
        .expect("an ops client certificate");
    let identity = TlsIdentity::load(
        &node.dir().join("ca.pem"),
        &ops_dir.join("client.pem"),
        &ops_dir.join("client.key"),
    )
    .expect("the ops identity");
    let ops = Endpoint::client(&identity, TransportConfig::default()).unwrap();
    match crate::harness::ask(&ops, addr, ClientRequest::Cluster(ClusterRequest::Unstage)).await {
        ClientResponse::Cluster(_) => {}
        other => panic!("an admin's unstage was refused: {other:?}"),
    }
    ops.close().await;
    dev.close().await;
}

/// Client batch frames with bad contents: an empty batch and one over the limit are
/// refused whole; administration, status and a nested batch inside a batch are refused
/// in their place while the reads and writes beside them are served; the node keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_batches_get_typed_refusals_and_the_good_requests_beside_them_are_served() {
    let mut node = start_node().await;
    let client = node.client().await;
    let addr = node.nodes()[0].addr;
    let endpoint = node.raw_client(TransportConfig::default());
    let send = |batch: Vec<ClientRequest>| {
        let endpoint = endpoint.clone();
        async move {
            let frame = encode_request(&Request::Client(ClientRequest::Batch(batch)));
            let bytes = endpoint
                .request(addr, None, frame, RAW_REQUEST_TIMEOUT)
                .await
                .expect("an answer to the batch frame");
            match decode_response(&bytes).expect("a decodable answer") {
                Response::Stamped { response, .. } | Response::Client(response) => response,
                Response::Error(e) => ClientResponse::Error(e),
                other => panic!("a node-to-node answer: {other:?}"),
            }
        }
    };
    let put = |key: &str| ClientRequest::Put {
        key: key.as_bytes().to_vec(),
        value: b"batched".to_vec(),
        context: None,
        options: WriteOptions::default(),
    };
    let get = |key: &str| ClientRequest::Get {
        key: key.as_bytes().to_vec(),
        options: ReadOptions::default(),
    };
    for (what, batch) in [
        ("empty", Vec::new()),
        ("too long", vec![get("k"); MAX_CLIENT_BATCH + 1]),
    ] {
        match send(batch).await {
            ClientResponse::Error(RequestError::Malformed(why)) => {
                assert!(why.contains("batch"), "{what}: {why}")
            }
            other => panic!("{what}: expected Malformed, got {other:?}"),
        }
    }
    let answers = match send(vec![
        put("batch-a"),
        ClientRequest::Status,
        ClientRequest::Batch(vec![get("batch-a")]),
        ClientRequest::Backup {
            name: "sneaky".into(),
        },
        put("batch-b"),
    ])
    .await
    {
        ClientResponse::Batch(answers) => answers,
        other => panic!("expected a batch answer, got {other:?}"),
    };
    assert_eq!(answers.len(), 5, "{answers:?}");
    assert!(matches!(answers[0], ClientResponse::Put(_)), "{answers:?}");
    for refused in &answers[1..4] {
        assert!(
            matches!(refused, ClientResponse::Error(RequestError::Malformed(_))),
            "{answers:?}"
        );
    }
    assert!(matches!(answers[4], ClientResponse::Put(_)), "{answers:?}");
    let read = send(vec![get("batch-a"), get("batch-b"), get("batch-none")]).await;
    let ClientResponse::Batch(reads) = read else {
        panic!("expected a batch answer, got {read:?}");
    };
    let values: Vec<Vec<Vec<u8>>> = reads
        .into_iter()
        .map(|r| match r {
            ClientResponse::Get(reply) => reply.values,
            other => panic!("expected a read, got {other:?}"),
        })
        .collect();
    assert_eq!(
        values,
        vec![vec![b"batched".to_vec()], vec![b"batched".to_vec()], vec![]]
    );
    // Replica reads (the SDK's direct reads): a copy for a good key, typed refusals for
    // an empty and an oversized one, beside it in one batch.
    let replica = |key: Vec<u8>| ClientRequest::GetReplica { key };
    let copies = send(vec![
        replica(b"batch-a".to_vec()),
        replica(Vec::new()),
        replica(vec![b'k'; shoal_proto::MAX_KEY_BYTES + 1]),
    ])
    .await;
    let ClientResponse::Batch(copies) = copies else {
        panic!("expected a batch answer, got {copies:?}");
    };
    match &copies[..] {
        [ClientResponse::Replica(copy), ClientResponse::Error(RequestError::EmptyKey), ClientResponse::Error(RequestError::KeyTooLarge { .. })] =>
        {
            assert_eq!(copy.get.values, vec![b"batched".to_vec()]);
        }
        other => panic!("expected a copy, EmptyKey and KeyTooLarge, got {other:?}"),
    }
    assert_serving(&mut node, &client, "after-bad-batches").await;
    endpoint.close().await;
    client.close().await;
}
