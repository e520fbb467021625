//! The wire and object codecs: round trips of generated messages, and arbitrary, truncated,
//! mutated or mis-versioned bytes that must give a value or a typed error, never a panic.

use std::net::SocketAddr;
use std::time::Duration;

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use shoal_proto::wire::{
    self, ClientRequest, ClientResponse, ClusterInfo, GetReply, MemberAddress, MemberState,
    MemberStatus, PeerRequest, PeerResponse, ReadOptions, Request, Response, StatusReport,
    StorageHealth, WireVersion, WriteOptions, WriteReply, MIN_WIRE_VERSION, WIRE_VERSION,
};
use shoal_proto::{
    Actor, CausalContext, CodecError, Dot, GossipDigest, GossipEntry, Object, RequestError,
    Sibling, SiblingValue, Time, OBJECT_FORMAT_VERSION,
};
use shoal_ring::{Member, NodeId, PartitionId, Ring};

/// `cases` cases per property; failing inputs are kept next to this file for re-runs.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn text() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn node_id() -> impl Strategy<Value = NodeId> {
    "[A-Za-z0-9_.-]{1,12}".prop_map(|s| NodeId::new(s).expect("the pattern is a valid id"))
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(SocketAddr::from),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n))
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![3 => (1..=4u64).prop_map(Actor), 1 => any::<u64>().prop_map(Actor)]
}

/// Counters: mostly small, sometimes at the very top of the range (overflow edges).
fn counter() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 1..40u64, 1 => (u64::MAX - 3)..=u64::MAX]
}

fn context() -> impl Strategy<Value = CausalContext> {
    (
        vec((actor(), prop_oneof![0..20u64, counter()]), 0..4),
        vec((actor(), counter()), 0..6),
    )
        .prop_map(|(raises, dots)| {
            let mut ctx = CausalContext::new();
            for (a, c) in raises {
                ctx.raise(a, c);
            }
            for (a, c) in dots {
                ctx.insert(Dot::new(a, c));
            }
            ctx
        })
}

fn sibling_value() -> impl Strategy<Value = SiblingValue> {
    prop_oneof![
        4 => bytes(24).prop_map(SiblingValue::Data),
        1 => Just(SiblingValue::Tombstone),
    ]
}

fn object() -> impl Strategy<Value = Object> {
    (
        context(),
        vec((actor(), counter(), any::<u64>(), sibling_value()), 0..5),
    )
        .prop_map(|(clock, siblings)| {
            let siblings = siblings
                .into_iter()
                .map(|(a, c, micros, value)| Sibling {
                    dot: Dot::new(a, c),
                    timestamp: Time::from_micros(micros),
                    value,
                })
                .collect();
            Object::from_parts(clock, siblings)
        })
}

fn ring() -> impl Strategy<Value = Ring> {
    (
        btree_set(node_id(), 1..5),
        prop::sample::select(vec![8u32, 16, 32]),
        prop::option::of("[a-z]{1,4}"),
    )
        .prop_map(|(ids, q, zone)| {
            let members = ids
                .into_iter()
                .enumerate()
                .map(|(i, id)| match &zone {
                    Some(z) if i % 2 == 0 => Member::new(id).with_zone(z.clone()),
                    _ => Member::new(id),
                })
                .collect();
            Ring::new(q, members).expect("at most 4 members fit in 8 partitions")
        })
}

fn gossip() -> impl Strategy<Value = GossipDigest> {
    (
        any::<u64>(),
        vec(
            (node_id(), addr(), any::<u64>()).prop_map(|(id, addr, heartbeat)| GossipEntry {
                id,
                addr,
                heartbeat,
            }),
            0..4,
        ),
    )
        .prop_map(|(ring_version, members)| GossipDigest {
            ring_version,
            members,
        })
}

fn request_error() -> impl Strategy<Value = RequestError> {
    let n = || any::<usize>();
    prop_oneof![
        Just(RequestError::EmptyKey),
        (n(), n()).prop_map(|(len, max)| RequestError::KeyTooLarge { len, max }),
        (n(), n()).prop_map(|(len, max)| RequestError::ValueTooLarge { len, max }),
        (n(), n()).prop_map(|(len, max)| RequestError::ObjectTooLarge { len, max }),
        text().prop_map(RequestError::InvalidOptions),
        text().prop_map(RequestError::InvalidContext),
        (n(), n()).prop_map(|(needed, alive)| RequestError::Unavailable { needed, alive }),
        (n(), n()).prop_map(|(acks, needed)| RequestError::Timeout { acks, needed }),
        (n(), n()).prop_map(|(acks, needed)| RequestError::Incomplete { acks, needed }),
        Just(RequestError::Overloaded),
        text().prop_map(RequestError::NotAllowed),
        text().prop_map(RequestError::UnknownNode),
        text().prop_map(RequestError::Storage),
        text().prop_map(RequestError::Malformed),
        (any::<u16>(), any::<u16>())
            .prop_map(|(found, supported)| RequestError::UnsupportedVersion { found, supported }),
        Just(RequestError::ShuttingDown),
        text().prop_map(RequestError::Internal),
        Just(RequestError::DiskFull),
    ]
}

fn read_options() -> impl Strategy<Value = ReadOptions> {
    (
        prop::option::of(any::<u8>()),
        prop::option::of(any::<u8>()),
        prop::option::of(duration()),
    )
        .prop_map(|(r, pr, timeout)| ReadOptions { r, pr, timeout })
}

fn write_options() -> impl Strategy<Value = WriteOptions> {
    (
        prop::option::of(any::<u8>()),
        prop::option::of(any::<u8>()),
        prop::option::of(duration()),
    )
        .prop_map(|(w, pw, timeout)| WriteOptions { w, pw, timeout })
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        (bytes(32), read_options()).prop_map(|(key, options)| ClientRequest::Get { key, options }),
        (
            bytes(32),
            bytes(64),
            prop::option::of(context()),
            write_options()
        )
            .prop_map(|(key, value, context, options)| ClientRequest::Put {
                key,
                value,
                context,
                options
            }),
        (bytes(32), prop::option::of(context()), write_options()).prop_map(
            |(key, context, options)| ClientRequest::Delete {
                key,
                context,
                options
            }
        ),
        Just(ClientRequest::ClusterInfo),
        Just(ClientRequest::Status),
    ]
}

fn member_state() -> impl Strategy<Value = MemberState> {
    prop_oneof![Just(MemberState::Up), Just(MemberState::Down)]
}

fn client_response() -> impl Strategy<Value = ClientResponse> {
    let write_reply = || context().prop_map(|context| WriteReply { context });
    prop_oneof![
        (
            any::<bool>(),
            vec(bytes(16), 0..4),
            context(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(found, values, context, timed, micros)| {
                // Write times parallel to the values, or none (a version-1 coordinator's).
                let written_at = if timed {
                    (0..values.len() as u64)
                        .map(|i| Time::from_micros(micros.wrapping_add(i)))
                        .collect()
                } else {
                    Vec::new()
                };
                ClientResponse::Get(GetReply {
                    found,
                    values,
                    context,
                    written_at,
                })
            }),
        write_reply().prop_map(ClientResponse::Put),
        write_reply().prop_map(ClientResponse::Delete),
        (
            ring(),
            vec(
                (node_id(), addr()).prop_map(|(id, addr)| MemberAddress { id, addr }),
                0..4
            ),
            any::<(u8, u8, u8, u64)>(),
        )
            .prop_map(|(ring, members, (n, r, w, layout_version))| {
                ClientResponse::ClusterInfo(ClusterInfo {
                    ring,
                    members,
                    n,
                    r,
                    w,
                    layout_version,
                })
            }),
        (
            node_id(),
            any::<u64>(),
            vec(
                (
                    node_id(),
                    addr(),
                    member_state(),
                    any::<usize>(),
                    any::<u64>(),
                    any::<u64>()
                )
                    .prop_map(|(id, addr, state, owned, hints, hint_bytes)| {
                        MemberStatus {
                            id,
                            addr,
                            state,
                            partitions_owned: owned,
                            pending_hints: hints,
                            pending_hint_bytes: hint_bytes,
                        }
                    }),
                0..4
            ),
            any::<bool>(),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(node, ring_version, members, disk_full, free_bytes)| {
                ClientResponse::Status(StatusReport {
                    node,
                    ring_version,
                    members,
                    storage: StorageHealth {
                        disk_full,
                        free_bytes,
                    },
                })
            }),
        request_error().prop_map(ClientResponse::Error),
    ]
}

fn peer_request() -> impl Strategy<Value = PeerRequest> {
    prop_oneof![
        client_request().prop_map(PeerRequest::Forward),
        (
            any::<u32>(),
            bytes(32),
            object(),
            prop::option::of(node_id())
        )
            .prop_map(|(p, key, object, hint_for)| PeerRequest::Replicate {
                partition: PartitionId(p),
                key,
                object,
                hint_for,
            }),
        (any::<u32>(), bytes(32), prop::option::of(node_id())).prop_map(|(p, key, hint_for)| {
            PeerRequest::Read {
                partition: PartitionId(p),
                key,
                hint_for,
            }
        }),
        gossip().prop_map(PeerRequest::Gossip),
        Just(PeerRequest::Ping),
    ]
}

fn peer_response() -> impl Strategy<Value = PeerResponse> {
    prop_oneof![
        client_response().prop_map(PeerResponse::Client),
        Just(PeerResponse::Ack),
        prop::option::of(object()).prop_map(PeerResponse::Object),
        gossip().prop_map(PeerResponse::Gossip),
        Just(PeerResponse::Pong),
        request_error().prop_map(PeerResponse::Error),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        client_request().prop_map(Request::Client),
        peer_request().prop_map(Request::Peer),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        client_response().prop_map(Response::Client),
        peer_response().prop_map(Response::Peer),
        request_error().prop_map(Response::Error),
    ]
}

/// A valid encoding of some message of any of the four formats, and which format it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Request,
    Response,
    Context,
    Object,
}

fn encoding() -> impl Strategy<Value = (Format, Vec<u8>)> {
    prop_oneof![
        request().prop_map(|m| (Format::Request, wire::encode_request(&m))),
        response().prop_map(|m| (Format::Response, wire::encode_response(&m))),
        context().prop_map(|c| (Format::Context, wire::encode_context(&c))),
        object().prop_map(|o| (Format::Object, o.encode())),
    ]
}

// ---------------------------------------------------------------------------------------
// Decoding any bytes
// ---------------------------------------------------------------------------------------

/// Decode `bytes` as `format`. Whatever decodes must re-encode to a value that decodes to
/// itself (decoding canonicalises, and canonical forms are stable).
fn decode_as(format: Format, bytes: &[u8]) -> Result<(), CodecError> {
    match format {
        Format::Request => {
            let m = wire::decode_request(bytes)?;
            assert_eq!(wire::decode_request(&wire::encode_request(&m)), Ok(m));
        }
        Format::Response => {
            let m = wire::decode_response(bytes)?;
            assert_eq!(wire::decode_response(&wire::encode_response(&m)), Ok(m));
        }
        Format::Context => {
            let c = wire::decode_context(bytes)?;
            assert_eq!(wire::decode_context(&wire::encode_context(&c)), Ok(c));
        }
        Format::Object => {
            let o = Object::decode(bytes)?;
            assert_eq!(Object::decode(&o.encode()), Ok(o));
        }
    }
    Ok(())
}

const FORMATS: [Format; 4] = [
    Format::Request,
    Format::Response,
    Format::Context,
    Format::Object,
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_decode_to_a_value_or_an_error(b in bytes(256)) {
        for f in FORMATS {
            let _ = decode_as(f, &b);
        }
    }

    #[test]
    fn a_valid_version_followed_by_garbage_decodes_to_a_value_or_an_error(b in bytes(256)) {
        for version in MIN_WIRE_VERSION..=WIRE_VERSION {
            let mut frame = version.to_be_bytes().to_vec();
            frame.extend(&b);
            let _ = decode_as(Format::Request, &frame);
            let _ = decode_as(Format::Response, &frame);
        }
        let mut versioned = vec![OBJECT_FORMAT_VERSION];
        versioned.extend(&b);
        let _ = decode_as(Format::Context, &versioned);
        let _ = decode_as(Format::Object, &versioned);
    }

    #[test]
    fn every_proper_prefix_of_a_valid_encoding_is_an_error((format, bytes) in encoding()) {
        for cut in 0..bytes.len() {
            let result = decode_as(format, &bytes[..cut]);
            prop_assert!(result.is_err(), "{:?} prefix of {} of {} bytes decoded", format, cut, bytes.len());
            if cut == 0 {
                prop_assert_eq!(result, Err(CodecError::Empty));
            }
        }
    }

    #[test]
    fn mutated_encodings_decode_to_a_value_or_an_error(
        (_, bytes) in encoding(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut bytes = bytes;
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, byte),
            }
        }
        for f in FORMATS {
            let _ = decode_as(f, &bytes);
        }
    }

    #[test]
    fn a_one_byte_frame_is_malformed(b in any::<u8>()) {
        prop_assert!(matches!(wire::decode_request(&[b]), Err(CodecError::Malformed(_))));
        prop_assert!(matches!(wire::decode_response(&[b]), Err(CodecError::Malformed(_))));
    }
}

// ---------------------------------------------------------------------------------------
// Round trips, versions, trailing bytes
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_peeked_kind_of_a_request_is_its_variant(m in request()) {
        let kind = wire::peek_request_kind(&wire::encode_request(&m));
        let expected = match m {
            Request::Client(_) => wire::RequestKind::Client,
            Request::Peer(_) | Request::Stamped(..) => wire::RequestKind::Peer,
        };
        prop_assert_eq!(kind, Ok(expected));
    }

    #[test]
    fn peeking_arbitrary_bytes_agrees_with_decoding_when_decoding_succeeds(b in bytes(64)) {
        let peeked = wire::peek_request_kind(&b);
        if let Ok(request) = wire::decode_request(&b) {
            let expected = match request {
                Request::Client(_) => wire::RequestKind::Client,
                Request::Peer(_) | Request::Stamped(..) => wire::RequestKind::Peer,
            };
            prop_assert_eq!(peeked, Ok(expected));
        }
    }

    #[test]
    fn requests_round_trip(m in request()) {
        prop_assert_eq!(wire::decode_request(&wire::encode_request(&m)), Ok(m));
    }

    #[test]
    fn responses_round_trip(m in response()) {
        prop_assert_eq!(wire::decode_response(&wire::encode_response(&m)), Ok(m));
    }

    #[test]
    fn requests_and_responses_round_trip_in_every_version_this_build_speaks(
        (m, r) in (request(), response()),
    ) {
        for v in MIN_WIRE_VERSION..=WIRE_VERSION {
            let version = WireVersion::new(v).expect("a version this build speaks");
            let frame = wire::encode_request_as(&m, version);
            prop_assert_eq!(&frame[..2], &v.to_be_bytes());
            prop_assert_eq!(wire::decode_request_versioned(&frame), Ok((version, m.clone())));
            let frame = wire::encode_response_as(&r, version);
            prop_assert_eq!(&frame[..2], &v.to_be_bytes());
            prop_assert!(frame.len() <= wire::response_len(&r), "no older frame is longer");
            // Version 1 does not carry write times: they come back empty, nothing else changes.
            let mut expected = r.clone();
            if v < 2 {
                if let Response::Client(ClientResponse::Get(g))
                | Response::Peer(PeerResponse::Client(ClientResponse::Get(g))) = &mut expected
                {
                    g.written_at.clear();
                }
            }
            // Nor do versions 1 and 2 carry the layout version: it comes back unknown (0).
            if v < 3 {
                if let Response::Client(ClientResponse::ClusterInfo(i))
                | Response::Peer(PeerResponse::Client(ClientResponse::ClusterInfo(i))) = &mut expected
                {
                    i.layout_version = 0;
                }
            }
            prop_assert_eq!(wire::decode_response(&frame), Ok(expected));
        }
    }

    #[test]
    fn contexts_round_trip(c in context()) {
        prop_assert_eq!(wire::decode_context(&wire::encode_context(&c)), Ok(c));
    }

    #[test]
    fn objects_round_trip_and_encode_canonically(o in object()) {
        let bytes = o.encode();
        prop_assert_eq!(bytes[0], OBJECT_FORMAT_VERSION);
        let back = Object::decode(&bytes);
        prop_assert_eq!(back.as_ref(), Ok(&o));
        prop_assert_eq!(back.map(|b| b.encode()), Ok(bytes), "equal objects encode to equal bytes");
    }

    #[test]
    fn frames_of_another_wire_version_are_refused(
        (m, r) in (request(), response()),
        version in any::<u16>().prop_filter("a version this build does not speak", |v| {
            !(MIN_WIRE_VERSION..=WIRE_VERSION).contains(v)
        }),
    ) {
        let expected = CodecError::UnsupportedVersion { found: version, supported: WIRE_VERSION };
        let mut frame = wire::encode_request(&m);
        frame[..2].copy_from_slice(&version.to_be_bytes());
        prop_assert_eq!(wire::decode_request(&frame), Err(expected.clone()));
        let mut frame = wire::encode_response(&r);
        frame[..2].copy_from_slice(&version.to_be_bytes());
        prop_assert_eq!(wire::decode_response(&frame), Err(expected));
    }

    #[test]
    fn contexts_and_objects_of_another_format_version_are_refused(
        (c, o) in (context(), object()),
        version in any::<u8>().prop_filter("another version", |v| *v != OBJECT_FORMAT_VERSION),
    ) {
        let mut bytes = wire::encode_context(&c);
        bytes[0] = version;
        prop_assert_eq!(
            wire::decode_context(&bytes),
            Err(CodecError::UnsupportedVersion { found: u16::from(version), supported: 1 })
        );
        let mut bytes = o.encode();
        bytes[0] = version;
        prop_assert_eq!(
            Object::decode(&bytes),
            Err(CodecError::UnsupportedVersion {
                found: u16::from(version),
                supported: u16::from(OBJECT_FORMAT_VERSION),
            })
        );
    }

    #[test]
    fn frames_and_contexts_with_trailing_bytes_are_refused(
        (m, r, c) in (request(), response(), context()),
        extra in vec(any::<u8>(), 1..16),
    ) {
        let mut frame = wire::encode_request(&m);
        frame.extend(&extra);
        prop_assert!(matches!(wire::decode_request(&frame), Err(CodecError::Malformed(_))));
        let mut frame = wire::encode_response(&r);
        frame.extend(&extra);
        prop_assert!(matches!(wire::decode_response(&frame), Err(CodecError::Malformed(_))));
        let mut bytes = wire::encode_context(&c);
        bytes.extend(&extra);
        prop_assert!(matches!(wire::decode_context(&bytes), Err(CodecError::Malformed(_))));
    }
}

#[test]
fn empty_input_is_reported_as_empty() {
    assert_eq!(wire::decode_request(&[]), Err(CodecError::Empty));
    assert_eq!(wire::decode_response(&[]), Err(CodecError::Empty));
    assert_eq!(wire::decode_context(&[]), Err(CodecError::Empty));
    assert_eq!(Object::decode(&[]), Err(CodecError::Empty));
}

#[test]
fn decoding_canonicalises_a_non_canonical_context() {
    // A context whose cloud holds dots its vector covers or could absorb, as a buggy or
    // hostile peer could send it, comes out compacted.
    let mut canonical = CausalContext::new();
    canonical.raise(Actor(1), 3);
    // Version 1; vv {1: 2}; cloud {1:1 (covered), 1:3 (contiguous), 2:0 (no dot at all)}.
    let noisy = [1u8, 1, 1, 2, 3, 1, 1, 1, 3, 2, 0];
    let decoded = wire::decode_context(&noisy).expect("well-formed postcard");
    assert_eq!(decoded, canonical);
    assert!(decoded.cloud().is_empty());
    assert_eq!(decoded.vv().get(Actor(1)), 3);
}

#[test]
fn objects_with_trailing_bytes_are_refused() {
    let mut o = Object::new();
    o.update(
        &CausalContext::new(),
        SiblingValue::Data(b"v".to_vec()),
        Dot::new(Actor(1), 1),
        Time::from_micros(7),
    )
    .unwrap();
    let mut bytes = o.encode();
    bytes.extend([0, 0, 0]);
    assert!(
        matches!(Object::decode(&bytes), Err(CodecError::Malformed(_))),
        "decoded {:?}",
        Object::decode(&bytes)
    );
}

#[test]
fn objects_stamped_with_sub_microsecond_times_round_trip() {
    // The node's clock is `Time::from_duration(SystemTime::now() - UNIX_EPOCH)`: nanoseconds.
    let t = Time::from_duration(Duration::new(1_700_000_000, 123_456_789));
    let mut o = Object::new();
    o.update(
        &CausalContext::new(),
        SiblingValue::Data(b"v".to_vec()),
        Dot::new(Actor(1), 1),
        t,
    )
    .unwrap();
    assert_eq!(Object::decode(&o.encode()), Ok(o));
}
