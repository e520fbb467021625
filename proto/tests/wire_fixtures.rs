//! Checked-in encodings of every wire message variant, of stored objects and of a client
//! context, per released wire version (`tests/fixtures/v<N>/`, hex text, one frame body
//! or object per file). They are what a node of that release sent and stored: this build
//! must decode every one of them to the value in `wire_fixtures/messages.rs`, and encode
//! that value back to the same bytes when it speaks that version (rolling upgrades, see
//! docs/ARCHITECTURE.md).
//!
//! The fixtures of a released version are never regenerated. Those of the version under
//! development are written by the ignored test `write_fixtures`:
//! `cargo test -p shoal-proto --test wire_fixtures -- --ignored write_fixtures`.

#[path = "wire_fixtures/messages.rs"]
mod messages;

use std::collections::BTreeSet;
use std::path::PathBuf;

use shoal_proto::wire::{
    self, AaeRequest, AaeResponse, ClientRequest, ClientResponse, PeerRequest, PeerResponse,
    Request, Response, WireVersion, WIRE_VERSION,
};
use shoal_proto::{CodecError, Object, RequestError, OBJECT_FORMAT_VERSION};

/// Wire versions whose fixtures are checked in.
const FIXTURE_VERSIONS: &[u16] = &[1, 2, 3, 4, 5, 6];

fn dir(version: u16) -> PathBuf {
    // The test runner's (cargo's, nextest's) value first: the compiled-in one names the
    // checkout the binary was built in, which a shared target directory may have reused
    // for another checkout at another path.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures")
        .join(format!("v{version}"))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    let text = text.trim();
    assert!(text.len() % 2 == 0, "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}

fn read(version: u16, kind: &str, name: &str) -> Vec<u8> {
    let path = dir(version).join(kind).join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e} (see this file's header)", path.display()));
    from_hex(&text)
}

fn write(version: u16, kind: &str, name: &str, bytes: &[u8]) {
    let dir = dir(version).join(kind);
    std::fs::create_dir_all(&dir).expect("create the fixture directory");
    std::fs::write(dir.join(format!("{name}.hex")), to_hex(bytes) + "\n").expect("write");
}

/// Writes the fixtures of the version this build speaks. Run by hand, once per format
/// change, before the release; never for an already released version.
#[test]
#[ignore = "writes the fixtures of the version under development"]
fn write_fixtures() {
    let v = WIRE_VERSION;
    for (name, req) in messages::requests(v) {
        write(v, "request", &name, &wire::encode_request(&req));
    }
    for (name, resp) in messages::responses(v) {
        write(v, "response", &name, &wire::encode_response(&resp));
    }
    for (name, object) in messages::objects() {
        write(v, "object", name, &object.encode());
    }
    write(
        v,
        "context",
        "context",
        &wire::encode_context(&messages::context()),
    );
}

/// Checks every fixture of `kind` of every version: it carries its version, decodes to
/// its message, and the message encodes in that version to the same bytes (what a node
/// pinned to, or answering in, that version sends).
fn check_frames<T: PartialEq + std::fmt::Debug>(
    kind: &str,
    messages: impl Fn(u16) -> Vec<(String, T)>,
    decode: impl Fn(&[u8]) -> Result<T, CodecError>,
    encode: impl Fn(&T, WireVersion) -> Vec<u8>,
) {
    for &v in FIXTURE_VERSIONS {
        let version = WireVersion::new(v).expect("a version this build speaks");
        for (name, expected) in messages(v) {
            let bytes = read(v, kind, &name);
            assert_eq!(bytes[..2], v.to_be_bytes(), "v{v} {kind} {name}: version");
            assert_eq!(decode(&bytes).as_ref(), Ok(&expected), "v{v} {kind} {name}");
            assert_eq!(encode(&expected, version), bytes, "v{v} {kind} {name}");
        }
    }
}

#[test]
fn every_request_fixture_decodes_to_its_message() {
    check_frames(
        "request",
        messages::requests,
        wire::decode_request,
        wire::encode_request_as,
    );
}

#[test]
fn every_response_fixture_decodes_to_its_message() {
    check_frames(
        "response",
        messages::responses,
        wire::decode_response,
        wire::encode_response_as,
    );
}

#[test]
fn stored_objects_and_contexts_of_every_release_decode() {
    for &v in FIXTURE_VERSIONS {
        for (name, expected) in messages::objects() {
            let bytes = read(v, "object", name);
            assert_eq!(bytes[0], OBJECT_FORMAT_VERSION, "v{v} object {name}");
            assert_eq!(
                Object::decode(&bytes).as_ref(),
                Ok(&expected),
                "v{v} object {name}"
            );
            assert_eq!(expected.encode(), bytes, "v{v} object {name}");
        }
        let bytes = read(v, "context", "context");
        assert_eq!(wire::decode_context(&bytes), Ok(messages::context()));
        assert_eq!(wire::encode_context(&messages::context()), bytes);
    }
}

fn client_request_variant(r: &ClientRequest) -> &'static str {
    // No wildcard: a new variant does not compile until it is named here and has a fixture.
    match r {
        ClientRequest::Get { .. } => "Get",
        ClientRequest::Put { .. } => "Put",
        ClientRequest::Delete { .. } => "Delete",
        ClientRequest::ClusterInfo => "ClusterInfo",
        ClientRequest::Status => "Status",
        ClientRequest::AaeStatus => "AaeStatus",
        ClientRequest::Backup { .. } => "Backup",
        ClientRequest::Cluster(_) => "Cluster",
        ClientRequest::Batch(_) => "Batch",
        ClientRequest::GetReplica { .. } => "GetReplica",
    }
}

fn aae_request_variant(r: &AaeRequest) -> &'static str {
    match r {
        AaeRequest::Nodes { .. } => "Nodes",
        AaeRequest::Segments { .. } => "Segments",
        AaeRequest::Fetch { .. } => "Fetch",
        AaeRequest::Push { .. } => "Push",
        AaeRequest::Digests { .. } => "Digests",
        AaeRequest::Reap { .. } => "Reap",
    }
}

fn request_variant(r: &Request) -> String {
    match r {
        Request::Client(c) => format!("Client::{}", client_request_variant(c)),
        Request::Peer(p) => match p {
            PeerRequest::Forward(_) => "Peer::Forward".into(),
            PeerRequest::Replicate { .. } => "Peer::Replicate".into(),
            PeerRequest::Read { .. } => "Peer::Read".into(),
            PeerRequest::Gossip(_) => "Peer::Gossip".into(),
            PeerRequest::Ping => "Peer::Ping".into(),
            PeerRequest::Aae(a) => format!("Peer::Aae::{}", aae_request_variant(a)),
            PeerRequest::LayoutFetch => "Peer::LayoutFetch".into(),
            PeerRequest::LayoutPush(_) => "Peer::LayoutPush".into(),
            PeerRequest::Paxos(_) => "Peer::Paxos".into(),
            PeerRequest::Hello(_) => "Peer::Hello".into(),
            PeerRequest::Batch(_) => "Peer::Batch".into(),
        },
        Request::Stamped(_, p) => {
            format!("Stamped::{}", request_variant(&Request::Peer(p.clone())))
        }
    }
}

fn client_response_variant(r: &ClientResponse) -> &'static str {
    match r {
        ClientResponse::Get(_) => "Get",
        ClientResponse::Put(_) => "Put",
        ClientResponse::Delete(_) => "Delete",
        ClientResponse::ClusterInfo(_) => "ClusterInfo",
        ClientResponse::Status(_) => "Status",
        ClientResponse::AaeStatus(_) => "AaeStatus",
        ClientResponse::Error(_) => "Error",
        ClientResponse::Backup(_) => "Backup",
        ClientResponse::Cluster(_) => "Cluster",
        ClientResponse::Batch(_) => "Batch",
        ClientResponse::Replica(_) => "Replica",
    }
}

fn aae_response_variant(r: &AaeResponse) -> &'static str {
    match r {
        AaeResponse::Nodes(_) => "Nodes",
        AaeResponse::Segments(_) => "Segments",
        AaeResponse::Objects(_) => "Objects",
        AaeResponse::Pushed(_) => "Pushed",
        AaeResponse::Digests(_) => "Digests",
        AaeResponse::Reaped(_) => "Reaped",
    }
}

fn error_variant(e: &RequestError) -> &'static str {
    match e {
        RequestError::EmptyKey => "EmptyKey",
        RequestError::KeyTooLarge { .. } => "KeyTooLarge",
        RequestError::ValueTooLarge { .. } => "ValueTooLarge",
        RequestError::ObjectTooLarge { .. } => "ObjectTooLarge",
        RequestError::InvalidOptions(_) => "InvalidOptions",
        RequestError::InvalidContext(_) => "InvalidContext",
        RequestError::Unavailable { .. } => "Unavailable",
        RequestError::Timeout { .. } => "Timeout",
        RequestError::Overloaded => "Overloaded",
        RequestError::NotAllowed(_) => "NotAllowed",
        RequestError::UnknownNode(_) => "UnknownNode",
        RequestError::Storage(_) => "Storage",
        RequestError::Malformed(_) => "Malformed",
        RequestError::UnsupportedVersion { .. } => "UnsupportedVersion",
        RequestError::ShuttingDown => "ShuttingDown",
        RequestError::Internal(_) => "Internal",
        RequestError::TooManySiblings { .. } => "TooManySiblings",
        RequestError::Incomplete { .. } => "Incomplete",
        RequestError::WrongPartition { .. } => "WrongPartition",
        RequestError::ResponseTooLarge { .. } => "ResponseTooLarge",
        RequestError::DiskFull => "DiskFull",
        RequestError::Backup(_) => "Backup",
        RequestError::LayoutRefused(_) => "LayoutRefused",
        RequestError::StaleLayout { .. } => "StaleLayout",
        RequestError::ClusterMismatch(_) => "ClusterMismatch",
        RequestError::PlanChanged { .. } => "PlanChanged",
        RequestError::Declined(_) => "Declined",
    }
}

fn response_variant(r: &Response) -> String {
    match r {
        Response::Client(c) => format!("Client::{}", client_response_variant(c)),
        Response::Peer(p) => match p {
            PeerResponse::Client(c) => format!("Peer::Client::{}", client_response_variant(c)),
            PeerResponse::Ack => "Peer::Ack".into(),
            PeerResponse::Object(_) => "Peer::Object".into(),
            PeerResponse::Gossip(_) => "Peer::Gossip".into(),
            PeerResponse::Pong => "Peer::Pong".into(),
            PeerResponse::Aae(a) => format!("Peer::Aae::{}", aae_response_variant(a)),
            PeerResponse::Error(_) => "Peer::Error".into(),
            PeerResponse::Layout(_) => "Peer::Layout".into(),
            PeerResponse::Paxos(_) => "Peer::Paxos".into(),
            PeerResponse::Batch(_) => "Peer::Batch".into(),
        },
        Response::Error(e) => format!("Error::{}", error_variant(e)),
        Response::Stamped { response, .. } => {
            format!("Stamped::{}", client_response_variant(response))
        }
    }
}

/// Every variant name, so that a fixture list that misses one fails here.
const REQUEST_VARIANTS: &[&str] = &[
    "Client::Get",
    "Client::Put",
    "Client::Delete",
    "Client::ClusterInfo",
    "Client::Status",
    "Client::AaeStatus",
    "Client::Backup",
    "Client::Cluster",
    "Client::Batch",
    "Client::GetReplica",
    "Peer::Forward",
    "Peer::Replicate",
    "Peer::Read",
    "Peer::Gossip",
    "Peer::Ping",
    "Peer::Aae::Nodes",
    "Peer::Aae::Segments",
    "Peer::Aae::Fetch",
    "Peer::Aae::Push",
    "Peer::Aae::Digests",
    "Peer::Aae::Reap",
    "Peer::LayoutPush",
    "Peer::LayoutFetch",
    "Peer::Paxos",
    "Peer::Hello",
    "Stamped::Peer::Ping",
    "Stamped::Peer::Batch",
];

const RESPONSE_VARIANTS: &[&str] = &[
    "Stamped::Get",
    "Client::Get",
    "Client::Put",
    "Client::Delete",
    "Client::ClusterInfo",
    "Client::Status",
    "Client::AaeStatus",
    "Client::Error",
    "Client::Backup",
    "Client::Cluster",
    "Client::Batch",
    "Client::Replica",
    "Peer::Client::Get",
    "Peer::Ack",
    "Peer::Object",
    "Peer::Gossip",
    "Peer::Pong",
    "Peer::Aae::Nodes",
    "Peer::Aae::Segments",
    "Peer::Aae::Objects",
    "Peer::Aae::Pushed",
    "Peer::Aae::Digests",
    "Peer::Aae::Reaped",
    "Peer::Error",
    "Peer::Layout",
    "Peer::Paxos",
    "Peer::Batch",
    "Error::EmptyKey",
    "Error::KeyTooLarge",
    "Error::ValueTooLarge",
    "Error::ObjectTooLarge",
    "Error::InvalidOptions",
    "Error::InvalidContext",
    "Error::Unavailable",
    "Error::Timeout",
    "Error::Overloaded",
    "Error::NotAllowed",
    "Error::UnknownNode",
    "Error::Storage",
    "Error::Malformed",
    "Error::UnsupportedVersion",
    "Error::ShuttingDown",
    "Error::Internal",
    "Error::TooManySiblings",
    "Error::Incomplete",
    "Error::WrongPartition",
    "Error::ResponseTooLarge",
    "Error::DiskFull",
    "Error::Backup",
    "Error::LayoutRefused",
    "Error::StaleLayout",
    "Error::ClusterMismatch",
    "Error::PlanChanged",
    "Error::Declined",
];

#[test]
fn the_fixtures_cover_every_message_variant() {
    let requests: BTreeSet<String> = messages::requests(WIRE_VERSION)
        .iter()
        .map(|(_, r)| request_variant(r))
        .collect();
    let expected: BTreeSet<String> = REQUEST_VARIANTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(requests, expected);
    let responses: BTreeSet<String> = messages::responses(WIRE_VERSION)
        .iter()
        .map(|(_, r)| response_variant(r))
        .collect();
    let expected: BTreeSet<String> = RESPONSE_VARIANTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(responses, expected);
    let objects = messages::objects();
    assert!(objects
        .iter()
        .any(|(_, o)| o.siblings().len() > 1 && o.siblings().iter().any(|s| s.is_tombstone())));
}

/// A frame of a version this build does not speak (the next one, or none) is refused with
/// the typed error, and the refusal goes back in a version the sender can read.
#[test]
fn frames_of_an_unknown_version_are_refused_and_answered_in_a_version_the_sender_reads() {
    let next = WIRE_VERSION + 1;
    for (name, _) in messages::requests(WIRE_VERSION) {
        let mut bytes = read(WIRE_VERSION, "request", &name);
        bytes[..2].copy_from_slice(&next.to_be_bytes());
        assert_eq!(
            wire::decode_request(&bytes),
            Err(CodecError::UnsupportedVersion {
                found: next,
                supported: WIRE_VERSION
            }),
            "{name}"
        );
        // The next release reads this one's version.
        assert_eq!(wire::answer_version(&bytes), WireVersion::CURRENT);
    }
    for v in FIXTURE_VERSIONS {
        let bytes = read(*v, "request", "client_get");
        assert_eq!(wire::answer_version(&bytes).get(), *v);
    }
    assert_eq!(wire::answer_version(&[0, 0, 1]), WireVersion::OLDEST);
    assert_eq!(wire::answer_version(&[]), WireVersion::OLDEST);
}

/// A client of version 3 or older gets a stamped answer as the plain client answer inside
/// (it cannot decode the stamp).
#[test]
fn a_stamped_answer_goes_to_an_older_client_plain() {
    let stamped = Response::Stamped {
        layout_version: 7,
        response: ClientResponse::Put(wire::WriteReply {
            context: messages::context(),
        }),
    };
    for v in 1..4 {
        let version = WireVersion::new(v).expect("a version this build speaks");
        let bytes = wire::encode_response_as(&stamped, version);
        assert_eq!(
            wire::decode_response(&bytes),
            Ok(stamped.clone().unstamped()),
            "v{v}"
        );
    }
    let bytes = wire::encode_response_as(&stamped, WireVersion::CURRENT);
    assert_eq!(wire::decode_response(&bytes), Ok(stamped));
}

/// A requester of version 3 cannot decode a `PlanChanged` refusal (version 4): it gets
/// `LayoutRefused` with the refusal's text, wherever the error sits; version 2 and 1 get
/// `Internal`, as for every layout error.
#[test]
fn a_plan_changed_refusal_goes_to_an_older_requester_as_its_text() {
    let changed = RequestError::PlanChanged {
        planned: wire::PlanId(1),
        staged: wire::PlanId(2),
    };
    let text = changed.to_string();
    assert!(text.contains("0000000000000002"), "{text}");
    let as_v3 = RequestError::LayoutRefused(text.clone());
    let shapes: [fn(RequestError) -> Response; 4] = [
        |e| Response::Client(ClientResponse::Error(e)),
        |e| Response::Peer(PeerResponse::Client(ClientResponse::Error(e))),
        |e| Response::Peer(PeerResponse::Error(e)),
        Response::Error,
    ];
    for shape in shapes {
        let v3 = WireVersion::new(3).expect("spoken");
        let bytes = wire::encode_response_as(&shape(changed.clone()), v3);
        assert_eq!(wire::decode_response(&bytes), Ok(shape(as_v3.clone())));
        for v in 1..3 {
            let version = WireVersion::new(v).expect("spoken");
            let bytes = wire::encode_response_as(&shape(changed.clone()), version);
            let internal = RequestError::Internal(as_v3.to_string());
            assert_eq!(wire::decode_response(&bytes), Ok(shape(internal)), "v{v}");
        }
        let bytes = wire::encode_response_as(&shape(changed.clone()), WireVersion::CURRENT);
        assert_eq!(wire::decode_response(&bytes), Ok(shape(changed.clone())));
    }
    let stamped = Response::Stamped {
        layout_version: 7,
        response: ClientResponse::Error(changed.clone()),
    };
    let v3 = WireVersion::new(3).expect("spoken");
    let bytes = wire::encode_response_as(&stamped, v3);
    assert_eq!(
        wire::decode_response(&bytes),
        Ok(Response::Client(ClientResponse::Error(as_v3)))
    );
}

/// A batch (version 5) inside a frame of an older version is refused as malformed, both
/// ways: no node of an older release sends one, so such a frame is forged or corrupt.
#[test]
fn a_batch_in_an_older_frame_is_refused() {
    let batch = messages::requests(5)
        .into_iter()
        .find(|(name, _)| name == "stamped_batch")
        .map(|(_, r)| r)
        .expect("the batch fixture");
    let mut bytes = wire::encode_request(&batch);
    bytes[..2].copy_from_slice(&4u16.to_be_bytes());
    assert!(
        matches!(wire::decode_request(&bytes), Err(CodecError::Malformed(_))),
        "{:?}",
        wire::decode_request(&bytes)
    );
    let answers = Response::Peer(PeerResponse::Batch(vec![PeerResponse::Ack]));
    let mut bytes = wire::encode_response(&answers);
    bytes[..2].copy_from_slice(&4u16.to_be_bytes());
    assert!(matches!(
        wire::decode_response(&bytes),
        Err(CodecError::Malformed(_))
    ));
    // Encoding one for an older peer gives an error in its place, never a batch.
    let older = wire::encode_response_as(&answers, WireVersion::new(4).unwrap());
    assert!(matches!(
        wire::decode_response(&older),
        Ok(Response::Peer(PeerResponse::Error(RequestError::Internal(
            _
        ))))
    ));
}

/// A client batch (version 6) inside a frame of an older version is refused as malformed,
/// both ways; an answer to one encoded for an older client is an error, never a batch.
#[test]
fn a_client_batch_or_replica_read_in_an_older_frame_is_refused() {
    let replica = wire::ReplicaReply {
        layout_version: 3,
        get: wire::GetReply {
            found: false,
            values: vec![],
            context: Default::default(),
            written_at: vec![],
        },
    };
    for request in [
        ClientRequest::Batch(vec![ClientRequest::ClusterInfo]),
        ClientRequest::GetReplica { key: b"k".to_vec() },
    ] {
        let mut bytes = wire::encode_request(&Request::Client(request));
        bytes[..2].copy_from_slice(&5u16.to_be_bytes());
        assert!(
            matches!(wire::decode_request(&bytes), Err(CodecError::Malformed(_))),
            "{:?}",
            wire::decode_request(&bytes)
        );
    }
    for answers in [
        Response::Client(ClientResponse::Batch(vec![])),
        Response::Stamped {
            layout_version: 3,
            response: ClientResponse::Batch(vec![]),
        },
        Response::Client(ClientResponse::Replica(replica.clone())),
        Response::Stamped {
            layout_version: 3,
            response: ClientResponse::Replica(replica),
        },
    ] {
        let mut bytes = wire::encode_response(&answers);
        bytes[..2].copy_from_slice(&5u16.to_be_bytes());
        assert!(matches!(
            wire::decode_response(&bytes),
            Err(CodecError::Malformed(_))
        ));
        for v in 1..6 {
            let older = wire::encode_response_as(&answers, WireVersion::new(v).unwrap());
            assert!(
                matches!(
                    wire::decode_response(&older),
                    Ok(Response::Client(ClientResponse::Error(
                        RequestError::Internal(_)
                    )))
                ),
                "v{v}: {:?}",
                wire::decode_response(&older)
            );
        }
    }
}

/// [`wire::encode_client_batch`] copies the items' encoded bytes behind the envelope: the
/// same bytes as encoding the batch message, for one item and for more than a varint
/// byte's worth of them.
#[test]
fn a_client_batch_of_encoded_requests_is_the_encoded_batch() {
    let items: Vec<ClientRequest> = messages::client_requests(WIRE_VERSION)
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| !matches!(r, ClientRequest::Batch(_)))
        .collect();
    for count in [1, 2, 130] {
        let chosen: Vec<ClientRequest> = items.iter().cycle().take(count).cloned().collect();
        let frames: Vec<Vec<u8>> = chosen
            .iter()
            .map(|r| wire::encode_request(&Request::Client(r.clone())))
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let batch = wire::encode_client_batch(&refs, WireVersion::CURRENT).expect("a batch");
        let expected = wire::encode_request(&Request::Client(ClientRequest::Batch(chosen)));
        assert_eq!(batch, expected, "{count} items");
        assert!(wire::decode_request(&batch).is_ok());
    }
    // Not a client request's frame, no items, or a version without client batches.
    let peer = wire::encode_request(&Request::Peer(PeerRequest::Ping));
    assert_eq!(
        wire::encode_client_batch(&[&peer], WireVersion::CURRENT),
        None
    );
    assert_eq!(wire::encode_client_batch(&[], WireVersion::CURRENT), None);
    let get = wire::encode_request(&Request::Client(items[0].clone()));
    assert_eq!(
        wire::encode_client_batch(&[&get], WireVersion::new(5).unwrap()),
        None
    );
}

/// A requester of version 5 or older cannot decode `Declined` (version 6): it gets
/// `ShuttingDown`, which an engine of its release answered for the same cases, in every
/// shape an error travels in.
#[test]
fn a_declined_request_goes_to_an_older_requester_as_shutting_down() {
    let declined = RequestError::Declined("a candidate holding no partition".into());
    let shapes = |e: RequestError| {
        vec![
            Response::Client(ClientResponse::Error(e.clone())),
            Response::Peer(PeerResponse::Client(ClientResponse::Error(e.clone()))),
            Response::Peer(PeerResponse::Error(e.clone())),
            Response::Error(e),
        ]
    };
    for (new, old) in shapes(declined.clone())
        .into_iter()
        .zip(shapes(RequestError::ShuttingDown))
    {
        for v in 1..6 {
            let bytes = wire::encode_response_as(&new, WireVersion::new(v).unwrap());
            assert_eq!(wire::decode_response(&bytes), Ok(old.clone()), "v{v}");
        }
        let bytes = wire::encode_response_as(&new, WireVersion::CURRENT);
        assert_eq!(wire::decode_response(&bytes), Ok(new.clone()));
    }
    let stamped = Response::Stamped {
        layout_version: 7,
        response: ClientResponse::Error(declined),
    };
    let v5 = WireVersion::new(5).unwrap();
    assert_eq!(
        wire::decode_response(&wire::encode_response_as(&stamped, v5)),
        Ok(Response::Stamped {
            layout_version: 7,
            response: ClientResponse::Error(RequestError::ShuttingDown),
        })
    );
}
