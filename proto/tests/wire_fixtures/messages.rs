//! A representative value of every wire message variant, every object shape and a client
//! context: the expected values of the checked-in fixtures.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_proto::paxos::{Accepted, Ballot, PaxosReply, PaxosRequest};
use shoal_proto::wire::{
    AaeExchangeStatus, AaePartitionStatus, AaeReport, AaeRequest, AaeResponse, BackupReply,
    ClientRequest, ClientResponse, ClusterInfo, ClusterReply, ClusterRequest, GetReply,
    MemberAddress, MemberState, MemberStatus, PeerRequest, PeerResponse, PlanId, ReadOptions,
    ReplicaReply, Request, Response, StatusReport, StorageHealth, WriteOptions, WriteReply,
};
use shoal_proto::wire::{Hello, LayoutStamp};
use shoal_proto::{
    Actor, BackupError, CausalContext, Dot, GossipDigest, GossipEntry, Object, RequestError,
    Sibling, SiblingValue, Time,
};
use shoal_ring::{Member, NodeId, PartitionId, Ring};

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("a valid node id")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A context with a dense part and a dot above a gap (the "cloud").
pub fn context() -> CausalContext {
    let mut ctx = CausalContext::new();
    ctx.raise(Actor(1), 3);
    ctx.insert(Dot::new(Actor(2), 1));
    ctx.insert(Dot::new(Actor(2), 5));
    ctx
}

/// Two concurrent data siblings and a tombstone.
pub fn object_with_siblings() -> Object {
    let mut clock = CausalContext::new();
    clock.raise(Actor(1), 4);
    Object::from_parts(
        clock,
        vec![
            Sibling {
                dot: Dot::new(Actor(1), 4),
                timestamp: Time::from_micros(1_700_000_000_000_001),
                value: SiblingValue::Data(b"red".to_vec()),
            },
            Sibling {
                dot: Dot::new(Actor(2), 2),
                timestamp: Time::from_micros(1_700_000_000_000_002),
                value: SiblingValue::Data(b"blue".to_vec()),
            },
            Sibling {
                dot: Dot::new(Actor(3), 1),
                timestamp: Time::from_micros(1_700_000_000_000_003),
                value: SiblingValue::Tombstone,
            },
        ],
    )
}

/// A deleted key: a lone tombstone.
pub fn tombstoned_object() -> Object {
    Object::from_parts(
        CausalContext::new(),
        vec![Sibling {
            dot: Dot::new(Actor(7), 9),
            timestamp: Time::from_micros(1_700_000_000_123_456),
            value: SiblingValue::Tombstone,
        }],
    )
}

/// The stored objects, by fixture name.
pub fn objects() -> Vec<(&'static str, Object)> {
    vec![
        ("siblings_and_tombstone", object_with_siblings()),
        ("tombstoned", tombstoned_object()),
        ("empty", Object::new()),
    ]
}

fn read_options() -> ReadOptions {
    ReadOptions {
        r: Some(2),
        pr: Some(1),
        timeout: Some(Duration::from_millis(1500)),
    }
}

fn write_options() -> WriteOptions {
    WriteOptions {
        w: Some(2),
        pw: None,
        timeout: Some(Duration::from_secs(2)),
    }
}

fn get_request() -> ClientRequest {
    ClientRequest::Get {
        key: b"cart/alice".to_vec(),
        options: read_options(),
    }
}

/// Every client request variant a build of `version` sends, by fixture name.
pub fn client_requests(version: u16) -> Vec<(&'static str, ClientRequest)> {
    let mut out = vec![
        ("get", get_request()),
        (
            "put",
            ClientRequest::Put {
                key: b"cart/alice".to_vec(),
                value: b"apples".to_vec(),
                context: Some(context()),
                options: write_options(),
            },
        ),
        (
            "delete",
            ClientRequest::Delete {
                key: b"cart/bob".to_vec(),
                context: None,
                options: WriteOptions::default(),
            },
        ),
        ("cluster_info", ClientRequest::ClusterInfo),
        ("status", ClientRequest::Status),
        ("aae_status", ClientRequest::AaeStatus),
    ];
    if version >= 2 {
        out.push((
            "backup",
            ClientRequest::Backup {
                name: "nightly-2026-12-03".into(),
            },
        ));
    }
    if version >= 3 {
        out.push((
            "cluster",
            ClientRequest::Cluster(ClusterRequest::Commit { version: 7 }),
        ));
    }
    if version >= 4 {
        out.push((
            "cluster_commit_plan",
            ClientRequest::Cluster(ClusterRequest::CommitPlan {
                version: 7,
                plan: PlanId(0x0123_4567_89ab_cdef),
            }),
        ));
    }
    if version >= 6 {
        out.push((
            "batch",
            ClientRequest::Batch(vec![
                get_request(),
                ClientRequest::Delete {
                    key: b"cart/bob".to_vec(),
                    context: Some(context()),
                    options: write_options(),
                },
            ]),
        ));
        out.push((
            "get_replica",
            ClientRequest::GetReplica {
                key: b"cart/alice".to_vec(),
            },
        ));
    }
    out
}

fn gossip() -> GossipDigest {
    GossipDigest {
        ring_version: 3,
        members: vec![
            GossipEntry {
                id: node("n1"),
                addr: addr(7001),
                heartbeat: 42,
            },
            GossipEntry {
                id: node("n2"),
                addr: addr(7002),
                heartbeat: 17,
            },
        ],
    }
}

/// Every anti-entropy step, by fixture name.
pub fn aae_requests() -> Vec<(&'static str, AaeRequest)> {
    let partition = PartitionId(5);
    vec![
        (
            "aae_nodes",
            AaeRequest::Nodes {
                partition,
                level: 2,
                indices: vec![0, 3, 7],
            },
        ),
        (
            "aae_segments",
            AaeRequest::Segments {
                partition,
                segments: vec![1, 200],
            },
        ),
        (
            "aae_fetch",
            AaeRequest::Fetch {
                partition,
                keys: vec![b"k1".to_vec(), b"k2".to_vec()],
            },
        ),
        (
            "aae_push",
            AaeRequest::Push {
                partition,
                objects: vec![(b"k1".to_vec(), object_with_siblings())],
            },
        ),
        (
            "aae_digests",
            AaeRequest::Digests {
                partition,
                keys: vec![b"gone".to_vec()],
            },
        ),
        (
            "aae_reap",
            AaeRequest::Reap {
                partition,
                keys: vec![(b"gone".to_vec(), 0xdead_beef_u64)],
            },
        ),
    ]
}

/// Every peer request variant, by fixture name.
pub fn peer_requests() -> Vec<(&'static str, PeerRequest)> {
    let mut out = vec![
        ("forward", PeerRequest::Forward(get_request())),
        (
            "replicate",
            PeerRequest::Replicate {
                partition: PartitionId(5),
                key: b"cart/alice".to_vec(),
                object: object_with_siblings(),
                hint_for: None,
            },
        ),
        (
            "replicate_hint",
            PeerRequest::Replicate {
                partition: PartitionId(5),
                key: b"cart/bob".to_vec(),
                object: tombstoned_object(),
                hint_for: Some(node("n3")),
            },
        ),
        (
            "read",
            PeerRequest::Read {
                partition: PartitionId(5),
                key: b"cart/alice".to_vec(),
                hint_for: Some(node("n3")),
            },
        ),
        ("gossip", PeerRequest::Gossip(gossip())),
        ("ping", PeerRequest::Ping),
    ];
    out.extend(
        aae_requests()
            .into_iter()
            .map(|(name, a)| (name, PeerRequest::Aae(a))),
    );
    out
}

/// Every request frame a build of `version` sends, by fixture name (`client_*` and
/// `peer_*`).
pub fn requests(version: u16) -> Vec<(String, Request)> {
    let client = client_requests(version)
        .into_iter()
        .map(|(n, r)| (format!("client_{n}"), Request::Client(r)));
    let mut peer = peer_requests();
    let mut stamped = Vec::new();
    if version >= 3 {
        peer.push(("layout_push", PeerRequest::LayoutPush(Box::new(history()))));
        peer.push(("layout_fetch", PeerRequest::LayoutFetch));
        peer.push((
            "paxos_prepare",
            PeerRequest::Paxos(Box::new(PaxosRequest::Prepare {
                slot: 3,
                ballot: ballot(),
            })),
        ));
        peer.push((
            "paxos_accept",
            PeerRequest::Paxos(Box::new(PaxosRequest::Accept {
                slot: 2,
                ballot: ballot(),
                value: history().current().clone(),
            })),
        ));
        peer.push((
            "hello",
            PeerRequest::Hello(Hello {
                id: node("n4"),
                addr: addr(7004),
                settings: history().settings().clone(),
            }),
        ));
        stamped.push((
            "stamped_ping".to_string(),
            Request::Stamped(
                LayoutStamp {
                    settings: history().settings().clone(),
                    version: 2,
                },
                PeerRequest::Ping,
            ),
        ));
    }
    if version >= 5 {
        let replicate = peer_requests()
            .into_iter()
            .find(|(n, _)| *n == "replicate")
            .map(|(_, r)| r);
        let read = peer_requests()
            .into_iter()
            .find(|(n, _)| *n == "read")
            .map(|(_, r)| r);
        stamped.push((
            "stamped_batch".to_string(),
            Request::Stamped(
                LayoutStamp {
                    settings: history().settings().clone(),
                    version: 2,
                },
                PeerRequest::Batch(replicate.into_iter().chain(read).collect()),
            ),
        ));
    }
    let peer = peer
        .into_iter()
        .map(|(n, r)| (format!("peer_{n}"), Request::Peer(r)));
    client.chain(peer).chain(stamped).collect()
}

/// The answer to a read of [`object_with_siblings`], as a build of `version` sends it.
/// Version 1 does not carry write times: a version-1 reply decodes with none.
pub fn get_reply(version: u16) -> GetReply {
    let object = object_with_siblings();
    GetReply {
        found: true,
        values: object.values().map(<[u8]>::to_vec).collect(),
        context: object.context(),
        written_at: if version >= 2 {
            object.value_times().collect()
        } else {
            Vec::new()
        },
    }
}

/// A Paxos ballot.
fn ballot() -> Ballot {
    Ballot {
        round: 5,
        proposer: node("n2"),
    }
}

/// A layout history of two versions (a join in progress) with trackers.
fn history() -> shoal_proto::layout::LayoutHistory {
    use shoal_proto::layout::{Change, ClusterSettings, Layout, LayoutHistory, Tracker};
    let settings = ClusterSettings {
        cluster_id: "shoal-fixture".into(),
        partitions: 8,
        n: 3,
    };
    let members = (1..=3)
        .map(|i| (node(&format!("n{i}")), addr(7000 + i), None, 1))
        .collect();
    let v1 = Layout::initial(settings, members).expect("a valid layout");
    let join = Change::Join {
        id: node("n4"),
        addr: addr(7004),
        zone: Some("b".into()),
        weight: 2,
    };
    let mut h = LayoutHistory::new(v1.clone());
    h.push(v1.commit(&[join], 1).expect("a valid change"))
        .expect("the next version");
    h.advance(Tracker::Ack, &node("n4"), 2);
    h
}

fn ring() -> Ring {
    Ring::new(
        8,
        vec![
            Member::new(node("n1")).with_zone("a"),
            Member::new(node("n2")),
            Member::new(node("n3")).with_zone("b"),
        ],
    )
    .expect("three members fit in 8 partitions")
}

/// Every client response variant, by fixture name.
pub fn client_responses(version: u16) -> Vec<(&'static str, ClientResponse)> {
    let at = Time::from_micros(1_700_000_100_000_000);
    let mut out = vec![
        ("get", ClientResponse::Get(get_reply(version))),
        (
            "put",
            ClientResponse::Put(WriteReply { context: context() }),
        ),
        (
            "delete",
            ClientResponse::Delete(WriteReply {
                context: CausalContext::new(),
            }),
        ),
        (
            "cluster_info",
            ClientResponse::ClusterInfo(ClusterInfo {
                ring: ring(),
                members: vec![
                    MemberAddress {
                        id: node("n1"),
                        addr: addr(7001),
                    },
                    MemberAddress {
                        id: node("n2"),
                        addr: SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 7002)),
                    },
                ],
                n: 3,
                r: 2,
                w: 2,
                // Carried from version 3 on; an older frame decodes with 0 (unknown).
                layout_version: if version >= 3 { 4 } else { 0 },
            }),
        ),
        (
            "status",
            ClientResponse::Status(StatusReport {
                node: node("n1"),
                ring_version: 3,
                members: vec![MemberStatus {
                    id: node("n2"),
                    addr: addr(7002),
                    state: MemberState::Down,
                    partitions_owned: 3,
                    pending_hints: 12,
                    pending_hint_bytes: 4096,
                }],
                storage: StorageHealth {
                    disk_full: false,
                    free_bytes: Some(1 << 30),
                },
            }),
        ),
        (
            "aae_status",
            ClientResponse::AaeStatus(AaeReport {
                node: node("n1"),
                partitions: vec![AaePartitionStatus {
                    partition: PartitionId(5),
                    root: 0x0123_4567_89ab_cdef,
                    keys: 100,
                    exchanges: vec![AaeExchangeStatus {
                        peer: node("n2"),
                        at,
                        result: "ok".into(),
                        keys_repaired: 2,
                        last_ok: Some(at),
                    }],
                }],
                now: at + Duration::from_secs(1),
            }),
        ),
        (
            "error",
            ClientResponse::Error(RequestError::Unavailable {
                needed: 2,
                alive: 1,
            }),
        ),
    ];
    if version >= 2 {
        out.push((
            "backup",
            ClientResponse::Backup(BackupReply {
                path: "/var/lib/shoal/backups/nightly-2026-12-03".into(),
                node: node("n1"),
                taken_at_micros: 1_700_000_100_000_000,
                bytes: 123_456,
            }),
        ));
    }
    if version >= 3 {
        out.push((
            "cluster",
            ClientResponse::Cluster(ClusterReply::Committed { version: 8 }),
        ));
    }
    if version >= 6 {
        out.push((
            "batch",
            ClientResponse::Batch(vec![
                ClientResponse::Get(get_reply(version)),
                ClientResponse::Error(RequestError::Overloaded),
            ]),
        ));
        out.push((
            "replica",
            ClientResponse::Replica(ReplicaReply {
                layout_version: 9,
                get: get_reply(version),
            }),
        ));
    }
    out
}

/// Every anti-entropy answer, by fixture name.
pub fn aae_responses() -> Vec<(&'static str, AaeResponse)> {
    vec![
        ("aae_nodes", AaeResponse::Nodes(vec![1, 2, u64::MAX])),
        (
            "aae_segments",
            AaeResponse::Segments(vec![(1, vec![(b"k1".to_vec(), 77)]), (200, vec![])]),
        ),
        (
            "aae_objects",
            AaeResponse::Objects(vec![
                (b"k1".to_vec(), Some(object_with_siblings())),
                (b"k2".to_vec(), None),
            ]),
        ),
        ("aae_pushed", AaeResponse::Pushed(1)),
        ("aae_digests", AaeResponse::Digests(vec![Some(9), None])),
        ("aae_reaped", AaeResponse::Reaped(1)),
    ]
}

/// Every peer response variant, by fixture name.
pub fn peer_responses(version: u16) -> Vec<(&'static str, PeerResponse)> {
    let mut out = vec![
        (
            "client",
            PeerResponse::Client(ClientResponse::Get(get_reply(version))),
        ),
        ("ack", PeerResponse::Ack),
        ("object", PeerResponse::Object(Some(object_with_siblings()))),
        ("no_object", PeerResponse::Object(None)),
        ("gossip", PeerResponse::Gossip(gossip())),
        ("pong", PeerResponse::Pong),
        ("error", PeerResponse::Error(RequestError::Overloaded)),
    ];
    if version >= 3 {
        out.push(("layout", PeerResponse::Layout(Box::new(history()))));
        out.push((
            "paxos_promise",
            PeerResponse::Paxos(Box::new(PaxosReply::Promise {
                ballot: ballot(),
                accepted: Some(Accepted {
                    ballot: ballot(),
                    value: history().current().clone(),
                }),
            })),
        ));
    }
    if version >= 5 {
        out.push((
            "batch",
            PeerResponse::Batch(vec![
                PeerResponse::Ack,
                PeerResponse::Object(Some(object_with_siblings())),
                PeerResponse::Error(RequestError::Overloaded),
            ]),
        ));
    }
    out.extend(
        aae_responses()
            .into_iter()
            .map(|(name, a)| (name, PeerResponse::Aae(a))),
    );
    out
}

/// Every [`RequestError`] variant of `version`, by fixture name.
pub fn request_errors(version: u16) -> Vec<(&'static str, RequestError)> {
    let mut out = vec![
        ("empty_key", RequestError::EmptyKey),
        (
            "key_too_large",
            RequestError::KeyTooLarge {
                len: 5000,
                max: 4096,
            },
        ),
        (
            "value_too_large",
            RequestError::ValueTooLarge { len: 9, max: 8 },
        ),
        (
            "object_too_large",
            RequestError::ObjectTooLarge { len: 9, max: 8 },
        ),
        (
            "invalid_options",
            RequestError::InvalidOptions("r must be 1..=3".into()),
        ),
        (
            "invalid_context",
            RequestError::InvalidContext("bad".into()),
        ),
        (
            "unavailable",
            RequestError::Unavailable {
                needed: 2,
                alive: 1,
            },
        ),
        ("timeout", RequestError::Timeout { acks: 1, needed: 2 }),
        ("overloaded", RequestError::Overloaded),
        ("not_allowed", RequestError::NotAllowed("client".into())),
        ("unknown_node", RequestError::UnknownNode("n9".into())),
        ("storage", RequestError::Storage("io".into())),
        ("malformed", RequestError::Malformed("short".into())),
        (
            "unsupported_version",
            RequestError::UnsupportedVersion {
                found: 9,
                supported: 1,
            },
        ),
        ("shutting_down", RequestError::ShuttingDown),
        ("internal", RequestError::Internal("bug".into())),
        (
            "too_many_siblings",
            RequestError::TooManySiblings {
                siblings: 101,
                limit: 100,
            },
        ),
        (
            "incomplete",
            RequestError::Incomplete { acks: 1, needed: 2 },
        ),
        (
            "wrong_partition",
            RequestError::WrongPartition { partition: 3 },
        ),
        (
            "response_too_large",
            RequestError::ResponseTooLarge {
                len: 20_000_000,
                max: 16_842_752,
            },
        ),
        ("disk_full", RequestError::DiskFull),
    ];
    if version >= 2 {
        out.push(("backup", RequestError::Backup(BackupError::InProgress)));
    }
    if version >= 3 {
        out.push((
            "layout_refused",
            RequestError::LayoutRefused("nothing is staged".into()),
        ));
        out.push(("stale_layout", RequestError::StaleLayout { current: 9 }));
        out.push((
            "cluster_mismatch",
            RequestError::ClusterMismatch("n 3 != 5".into()),
        ));
    }
    if version >= 4 {
        out.push((
            "plan_changed",
            RequestError::PlanChanged {
                planned: PlanId(0x0123_4567_89ab_cdef),
                staged: PlanId(u64::MAX),
            },
        ));
    }
    if version >= 6 {
        out.push((
            "declined",
            RequestError::Declined("its copy of partition 3 is being dropped".into()),
        ));
    }
    out
}

/// Every response frame, by fixture name (`client_*`, `peer_*`, and `error_*`: every
/// error variant as a top-level error).
pub fn responses(version: u16) -> Vec<(String, Response)> {
    let client = client_responses(version)
        .into_iter()
        .map(|(n, r)| (format!("client_{n}"), Response::Client(r)));
    let peer = peer_responses(version)
        .into_iter()
        .map(|(n, r)| (format!("peer_{n}"), Response::Peer(r)));
    let errors = request_errors(version)
        .into_iter()
        .map(|(n, e)| (format!("error_{n}"), Response::Error(e)));
    let mut out: Vec<(String, Response)> = client.chain(peer).chain(errors).collect();
    if version >= 4 {
        out.push((
            "stamped_get".into(),
            Response::Stamped {
                layout_version: 7,
                response: ClientResponse::Get(get_reply(version)),
            },
        ));
    }
    out
}
