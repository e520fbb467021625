//! Wire messages between clients and nodes and between nodes, and their codec.
//!
//! Every frame starts with a 2-byte big-endian protocol version, then a postcard body.
//! [`decode_request`] and [`decode_response`] accept arbitrary bytes and return a typed
//! [`CodecError`]; they never panic (a property test feeds them random bytes).
//!
//! # Versions
//!
//! A build decodes every version in [`MIN_WIRE_VERSION`]..=[`WIRE_VERSION`] and can encode
//! each of them ([`encode_request_as`], [`encode_response_as`]); a frame of any other
//! version is refused with [`CodecError::UnsupportedVersion`]. Messages of an older version
//! decode through frozen copies of that version's types (module `v1`), converted to the
//! current ones. A node answers every request in the version it came in, and sends its
//! peers the version its configuration pins (docs/ARCHITECTURE.md, "Rolling upgrades").
//!
//! - Version 1: the first release.
//! - Version 2: [`GetReply::written_at`], each value's write time.
//! - Version 3: cluster administration ([`ClientRequest::Cluster`]) and the layout's
//!   errors (issue 9); a version-2 peer gets those errors as `Internal` with their text.
//!   Also [`ClusterInfo::layout_version`] (module `v2` holds the version-2 `ClusterInfo`).
//!   Also the layout's peer messages (fetch, push, Paxos, a candidate's hello) and
//!   [`Request::Stamped`], which a version-2 peer never sees (it is sent as the plain
//!   [`Request::Peer`] inside).
//! - Version 4: [`Response::Stamped`], a client answer with the layout version the node
//!   served it under, so that a client learns a newer layout from any answer; a client
//!   of version 3 or older gets the plain [`Response::Client`] inside. Also
//!   [`ClusterRequest::CommitPlan`] and its refusal [`RequestError::PlanChanged`], which
//!   a requester of version 3 gets as [`RequestError::LayoutRefused`] with its text.
//! - Version 5: [`PeerRequest::Batch`] and [`PeerResponse::Batch`], several node-to-node
//!   requests due to one peer in one frame and their answers in one (issue 12). Sent only
//!   to a peer that speaks version 5; a frame of an older version that holds one is
//!   refused as malformed.
//! - Version 6: [`ClientRequest::Batch`] and [`ClientResponse::Batch`], several reads and
//!   writes from one client to one node in one frame and their answers in one (issue 12).
//!   The SDK sends one only to a node that did not refuse version 6; a frame of an older
//!   version that holds one is refused as malformed. Also [`RequestError::Declined`]
//!   (a node did not run a request another replica may take), which a requester of an
//!   older version gets as `ShuttingDown`, and [`ClientRequest::GetReplica`] with its
//!   answer [`ClientResponse::Replica`] (a primary's own copy, for the SDK's direct
//!   reads), refused as malformed in an older frame.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_ring::{NodeId, PartitionId, Ring};

use crate::causality::CausalContext;
use crate::error::{CodecError, RequestError};
use crate::layout::{ClusterSettings, Layout, LayoutHistory};
use crate::membership::GossipDigest;
use crate::object::Object;
use crate::paxos::{PaxosReply, PaxosRequest};

mod cluster;
mod v1;
mod v2;
mod versions;

pub use cluster::{
    ClusterReply, ClusterRequest, ClusterStatus, MemberReport, MemberRole, PlanId, PlanIdError,
    PlanReport, StageRequest, TransferSummary,
};
pub use versions::VersionMemory;

/// The newest protocol version this build speaks: what it sends unless pinned lower.
pub const WIRE_VERSION: u16 = 6;
/// The oldest protocol version this build still accepts and can speak: the previous
/// release's, so that a cluster can be upgraded one node at a time.
pub const MIN_WIRE_VERSION: u16 = 1;

/// A protocol version this build speaks ([`MIN_WIRE_VERSION`]..=[`WIRE_VERSION`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireVersion(u16);

impl WireVersion {
    /// [`WIRE_VERSION`].
    pub const CURRENT: WireVersion = WireVersion(WIRE_VERSION);
    /// [`MIN_WIRE_VERSION`].
    pub const OLDEST: WireVersion = WireVersion(MIN_WIRE_VERSION);
    /// The first version whose [`GetReply`] carries write times.
    const WRITE_TIMES: WireVersion = WireVersion(2);
    /// The first version with cluster administration, the layout's errors and messages
    /// and stamps: a node that sends its peers an older one cannot learn or confirm a
    /// layout from them.
    pub const LAYOUTS: WireVersion = WireVersion(3);
    /// The first version whose client answers may carry a layout version.
    const CLIENT_STAMPS: WireVersion = WireVersion(4);
    /// The first version with commits naming their plan ([`PlanId`]).
    const PLAN_IDS: WireVersion = WireVersion(4);
    /// The first version with batches of node-to-node requests ([`PeerRequest::Batch`]).
    pub const BATCHES: WireVersion = WireVersion(5);
    /// The first version with batches of client requests ([`ClientRequest::Batch`]).
    pub const CLIENT_BATCHES: WireVersion = WireVersion(6);
    /// The first version with [`RequestError::Declined`] (older: `ShuttingDown`).
    const DECLINED: WireVersion = WireVersion(6);

    /// `version`, if this build speaks it.
    pub fn new(version: u16) -> Result<WireVersion, CodecError> {
        if (MIN_WIRE_VERSION..=WIRE_VERSION).contains(&version) {
            Ok(WireVersion(version))
        } else {
            Err(CodecError::UnsupportedVersion {
                found: version,
                supported: WIRE_VERSION,
            })
        }
    }

    /// The version number, as frames carry it.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for WireVersion {
    fn default() -> WireVersion {
        WireVersion::CURRENT
    }
}

impl std::fmt::Display for WireVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Per-request read options; `None` takes the cluster default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOptions {
    /// Replies to wait for (1..=N).
    pub r: Option<u8>,
    /// How many of those replies must come from primary replicas (0..=R).
    pub pr: Option<u8>,
    /// How long the coordinator may take before answering `Timeout`.
    pub timeout: Option<Duration>,
}

/// Per-request write options; `None` takes the cluster default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOptions {
    /// Acknowledgements to wait for, the coordinator's own included (1..=N).
    pub w: Option<u8>,
    /// How many of those must come from primary replicas rather than fallbacks (0..=W).
    pub pw: Option<u8>,
    /// How long the coordinator may take before answering `Timeout`.
    pub timeout: Option<Duration>,
}

/// What a client can ask of any node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Read a key: its sibling values and a context.
    Get {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Quorum and timeout.
        options: ReadOptions,
    },
    /// Write a value; the context (from a read or an earlier write) names what it replaces.
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// What this write has seen; `None` makes it concurrent with everything.
        context: Option<CausalContext>,
        /// Quorum and timeout.
        options: WriteOptions,
    },
    /// Delete a key: a tombstone that replaces what the context names.
    Delete {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// What this delete has seen.
        context: Option<CausalContext>,
        /// Quorum and timeout.
        options: WriteOptions,
    },
    /// The ring and member addresses, so that a client can route by key.
    ClusterInfo,
    /// Members and their state as this node sees them, and its pending hints.
    Status,
    /// Anti-entropy state of the partitions this node replicates.
    AaeStatus,
    /// Write a consistent checkpoint of this node's store under its `storage.backup_dir`,
    /// as `name` (a plain directory name that must not exist yet). Served by the node
    /// itself (not the engine), by the node the request is sent to.
    Backup {
        /// The backup's directory name under the node's backup directory.
        name: String,
    },
    /// Cluster administration: layout status, staged changes, plan, commit.
    Cluster(ClusterRequest),
    /// Several reads, writes and deletes in one frame (version 6), answered with
    /// [`ClientResponse::Batch`], one answer per request in their order. At most
    /// [`MAX_CLIENT_BATCH`] requests, each a [`Get`](ClientRequest::Get),
    /// [`Put`](ClientRequest::Put) or [`Delete`](ClientRequest::Delete) (anything else
    /// is answered `Malformed` in its place). The node runs each as if it had come alone
    /// (its own admission, quorum, timeout and metrics); the engine never sees a batch.
    Batch(Vec<ClientRequest>),
    /// This node's own copy of a key, without a quorum (version 6), answered with
    /// [`ClientResponse::Replica`]: for a client that asks R primaries of the key at once
    /// and merges their answers itself (one hop instead of two; see the SDK's direct
    /// reads). Only a primary of the key's partition in a settled layout (one version
    /// kept) that is serving answers it; any other node answers
    /// [`RequestError::Declined`] and the client reads through a coordinator. The node
    /// neither forwards it nor repairs anything.
    GetReplica {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// The most requests one [`ClientRequest::Batch`] carries.
pub const MAX_CLIENT_BATCH: usize = 64;

/// The most bytes of requests one batch ([`PeerRequest::Batch`] or
/// [`ClientRequest::Batch`]) carries, as senders fill them; a request larger than this
/// goes alone.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

impl ClientRequest {
    /// A short name for metrics and logs.
    pub fn op_name(&self) -> &'static str {
        match self {
            ClientRequest::Get { .. } => "get",
            ClientRequest::Put { .. } => "put",
            ClientRequest::Delete { .. } => "delete",
            ClientRequest::ClusterInfo => "cluster_info",
            ClientRequest::Status => "status",
            ClientRequest::AaeStatus => "aae_status",
            ClientRequest::Backup { .. } => "backup",
            ClientRequest::Cluster(_) => "cluster",
            ClientRequest::Batch(_) => "batch",
            ClientRequest::GetReplica { .. } => "get_replica",
        }
    }

    /// Whether the request only reads (it changes nothing, so it may run twice).
    pub fn is_read(&self) -> bool {
        match self {
            ClientRequest::Get { .. }
            | ClientRequest::GetReplica { .. }
            | ClientRequest::ClusterInfo
            | ClientRequest::Status
            | ClientRequest::AaeStatus => true,
            ClientRequest::Put { .. }
            | ClientRequest::Delete { .. }
            | ClientRequest::Backup { .. }
            | ClientRequest::Cluster(_)
            | ClientRequest::Batch(_) => false,
        }
    }

    /// The key, for keyed requests.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            ClientRequest::Get { key, .. }
            | ClientRequest::GetReplica { key }
            | ClientRequest::Put { key, .. }
            | ClientRequest::Delete { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The timeout the request asks for, for keyed requests that set one.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            ClientRequest::Get { options, .. } => options.timeout,
            ClientRequest::Put { options, .. } | ClientRequest::Delete { options, .. } => {
                options.timeout
            }
            _ => None,
        }
    }
}

/// The shortest request timeout the protocol carries: anything shorter cannot even
/// reach a replica.
pub const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest request timeout the protocol carries (an hour). Nodes refuse timeouts
/// beyond their own, lower, configured bound; this one keeps every deadline computed from
/// a timeout far from overflow, and is what the SDK and CLI check before sending.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// Checks a request timeout against `min..=max`, naming the bounds in the error.
pub fn check_timeout(timeout: Duration, min: Duration, max: Duration) -> Result<(), RequestError> {
    if timeout < min || timeout > max {
        return Err(RequestError::InvalidOptions(format!(
            "timeout must be in {min:?}..={max:?}, got {timeout:?}"
        )));
    }
    Ok(())
}

/// The answer to a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetReply {
    /// Whether any value exists (a key whose siblings are all tombstones is not found).
    pub found: bool,
    /// The sibling values, in a stable order.
    #[serde(with = "byte_strings")]
    pub values: Vec<Vec<u8>>,
    /// Hand this back on the next write to replace these values.
    pub context: CausalContext,
    /// When each value was written: the coordinator's wall clock when it accepted the
    /// write (the sibling's stored timestamp), parallel to `values`. Empty when the
    /// coordinator that answered speaks wire version 1, which does not carry them (added
    /// in version 2; see [`WIRE_VERSION`]).
    pub written_at: Vec<crate::time::Time>,
}

/// The answer to a put or delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    /// The context of this write: the request's context plus the new write (of the
    /// coordinator's own earlier dots, the [`REPLACED_DOTS_KEPT`](crate::REPLACED_DOTS_KEPT)
    /// most recent; see [`Object::update`](crate::Object::update)). A next write with it
    /// replaces this write and what the request's context covered, nothing else.
    pub context: CausalContext,
}

/// One member, as a client needs it to route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    /// The node.
    pub id: NodeId,
    /// Where it listens for QUIC.
    pub addr: SocketAddr,
}

/// The cluster's shape for client-side routing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The ring (versioned).
    pub ring: Ring,
    /// Every member's address.
    pub members: Vec<MemberAddress>,
    /// Replicas per key.
    pub n: u8,
    /// Default read quorum.
    pub r: u8,
    /// Default write quorum.
    pub w: u8,
    /// The layout version the answering node serves from (issue 9). A client keeps it
    /// with the ring and fetches this info again when a node shows a newer version. 0
    /// when the node speaks wire version 1 or 2, which do not carry it (unknown).
    pub layout_version: u64,
}

/// A member's liveness as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering.
    Up,
    /// Not answering; routed around.
    Down,
}

impl MemberState {
    /// Lower-case name for output and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Down => "down",
        }
    }
}

/// One row of [`StatusReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its state as the reporting node sees it.
    pub state: MemberState,
    /// Partitions it owns (primary owner).
    pub partitions_owned: usize,
    /// Hints the reporting node holds for it.
    pub pending_hints: u64,
    /// Bytes of those hints.
    pub pending_hint_bytes: u64,
}

/// The answer to [`ClientRequest::Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The reporting node.
    pub node: NodeId,
    /// The ring version it uses.
    pub ring_version: u64,
    /// Every member.
    pub members: Vec<MemberStatus>,
    /// The reporting node's own storage (filled in by its driver, which owns the disk).
    pub storage: StorageHealth,
}

/// The reporting node's storage, in [`StatusReport`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageHealth {
    /// The node refuses writes with [`RequestError::DiskFull`]: its data directory's
    /// filesystem is full or below the free-space reserve. Reads are still served.
    pub disk_full: bool,
    /// Bytes free on the data directory's filesystem at the node's last check (`None`:
    /// unknown, e.g. in-memory storage).
    pub free_bytes: Option<u64>,
}

/// One partition of [`AaeReport`]: the reporting node's own replica of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AaePartitionStatus {
    /// The partition.
    pub partition: PartitionId,
    /// Root hash of the reporting node's Merkle tree for it.
    pub root: u64,
    /// Keys in that tree.
    pub keys: u64,
    /// The last exchange with each other replica: peer, when it ended, how.
    pub exchanges: Vec<AaeExchangeStatus>,
}

/// The outcome of the last exchange between the reporting node and one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AaeExchangeStatus {
    /// The other replica.
    pub peer: NodeId,
    /// When the exchange ended.
    pub at: crate::time::Time,
    /// `ok` (with the keys repaired) or `failed: <why>`.
    pub result: String,
    /// Keys repaired, both directions.
    pub keys_repaired: u64,
    /// When an exchange with this peer last succeeded (`None`: never since the node
    /// started). Under load background work slows down, but a pair is compared at least
    /// every few intervals; an old one here means it is not.
    pub last_ok: Option<crate::time::Time>,
}

/// The answer to [`ClientRequest::AaeStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AaeReport {
    /// The reporting node.
    pub node: NodeId,
    /// The partitions it replicates, in order.
    pub partitions: Vec<AaePartitionStatus>,
    /// The node's clock when it answered, to tell the age of each `last_ok` without
    /// comparing clocks.
    pub now: crate::time::Time,
}

/// What a node answers a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// A read's result.
    Get(GetReply),
    /// A put's result.
    Put(WriteReply),
    /// A delete's result.
    Delete(WriteReply),
    /// The cluster's shape.
    ClusterInfo(ClusterInfo),
    /// Membership status.
    Status(StatusReport),
    /// Anti-entropy status.
    AaeStatus(AaeReport),
    /// The request failed.
    Error(RequestError),
    /// A backup was written.
    Backup(BackupReply),
    /// The answer to a [`ClientRequest::Cluster`].
    Cluster(ClusterReply),
    /// The answers to a [`ClientRequest::Batch`], in the order of its requests (version 6).
    Batch(Vec<ClientResponse>),
    /// A replica's own copy of a key, the answer to [`ClientRequest::GetReplica`]
    /// (version 6).
    Replica(ReplicaReply),
}

/// The answer to [`ClientRequest::GetReplica`]: one primary's copy, as a coordinator
/// would answer a read that found only it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaReply {
    /// The settled layout version in which the answering node is a primary of the key
    /// (the copies of two primaries are compared only under the same version).
    pub layout_version: u64,
    /// The copy: its values, context and write times.
    pub get: GetReply,
}

/// The answer to [`ClientRequest::Backup`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReply {
    /// Where the backup is, on the node's filesystem.
    pub path: String,
    /// The node backed up.
    pub node: NodeId,
    /// When the checkpoint was taken, microseconds since the Unix epoch (node clock).
    pub taken_at_micros: u64,
    /// Bytes of the backup's files.
    pub bytes: u64,
}

/// Messages one node sends another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A client request forwarded to a replica of its key, which coordinates it.
    Forward(ClientRequest),
    /// Store (merge) this object. With `hint_for`, the receiver is a fallback and keeps
    /// it as a hint for that primary.
    Replicate {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The object to merge.
        object: Object,
        /// The primary this copy stands in for, on a sloppy write.
        hint_for: Option<NodeId>,
    },
    /// Read the receiver's copy of a key (its hint for `hint_for`, on a sloppy read).
    Read {
        /// The key's partition.
        partition: PartitionId,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The primary the receiver stands in for.
        hint_for: Option<NodeId>,
    },
    /// Membership gossip: the sender's view; the answer is the receiver's.
    Gossip(GossipDigest),
    /// A liveness probe of the failure detector.
    Ping,
    /// A step of an anti-entropy exchange or of tombstone reaping.
    Aae(AaeRequest),
    /// Send me your layout history: answered with [`PeerResponse::Layout`].
    LayoutFetch,
    /// Take this layout history (merged into the receiver's; pushed after a commit).
    /// Answered with [`PeerResponse::Layout`], the receiver's history after the merge.
    LayoutPush(Box<LayoutHistory>),
    /// A step of the Paxos instance that decides a layout version (slot `v` decides
    /// version `v`). Answered with [`PeerResponse::Paxos`], or with
    /// [`PeerResponse::Layout`] when the slot is already decided at the receiver.
    Paxos(Box<PaxosRequest<Layout>>),
    /// A candidate (a node in no layout) introduces itself: answered with
    /// [`PeerResponse::Layout`].
    Hello(Hello),
    /// Several requests to the same peer in one frame (version 5), answered with
    /// [`PeerResponse::Batch`], one answer per request in their order. At most
    /// [`MAX_PEER_BATCH`] requests, none of them a batch. The receiving node runs each
    /// as if it had come alone; the engine never sees a batch.
    Batch(Vec<PeerRequest>),
}

/// The most requests one [`PeerRequest::Batch`] carries.
pub const MAX_PEER_BATCH: usize = 64;

/// A candidate's introduction ([`PeerRequest::Hello`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The id it claims; must equal its certificate's.
    pub id: NodeId,
    /// Where it listens for QUIC.
    pub addr: SocketAddr,
    /// The settings it expects. An empty `cluster_id` means "not known yet" (a candidate
    /// that never learned a layout knows only the partition count and N).
    pub settings: ClusterSettings,
}

/// The sender's cluster settings and layout version, carried by every node-to-node
/// message ([`Request::Stamped`]): a receiver of another cluster refuses it, a receiver
/// that is behind fetches the sender's layout, one that is ahead refuses data work
/// coordinated under an older layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutStamp {
    /// The sender's settings (empty `cluster_id`: a candidate that knows no layout yet).
    pub settings: ClusterSettings,
    /// The sender's current layout version (0: it knows none).
    pub version: u64,
}

impl PeerRequest {
    /// Whether running the request twice does what running it once does: reads,
    /// merges (replica copies, hints, anti-entropy pushes, layout histories), deletes
    /// conditional on a digest, Paxos steps (an acceptor answers a repeated step as it
    /// did the first), probes. A forwarded write is not: a second coordination makes a
    /// second version. The transport sends an idempotent request again when its
    /// connection turns out to belong to the peer's previous process.
    pub fn is_idempotent(&self) -> bool {
        match self {
            PeerRequest::Forward(request) => request.is_read(),
            PeerRequest::Batch(requests) => requests.iter().all(PeerRequest::is_idempotent),
            PeerRequest::Replicate { .. }
            | PeerRequest::Read { .. }
            | PeerRequest::Gossip(_)
            | PeerRequest::Ping
            | PeerRequest::Aae(_)
            | PeerRequest::LayoutFetch
            | PeerRequest::LayoutPush(_)
            | PeerRequest::Paxos(_)
            | PeerRequest::Hello(_) => true,
        }
    }

    /// A short name for metrics and logs.
    pub fn op_name(&self) -> &'static str {
        match self {
            PeerRequest::Forward(_) => "forward",
            PeerRequest::Replicate { hint_for: None, .. } => "replicate",
            PeerRequest::Replicate { .. } => "replicate_hint",
            PeerRequest::Read { .. } => "read",
            PeerRequest::Gossip(_) => "gossip",
            PeerRequest::Ping => "ping",
            PeerRequest::Aae(a) => a.op_name(),
            PeerRequest::LayoutFetch => "layout_fetch",
            PeerRequest::LayoutPush(_) => "layout_push",
            PeerRequest::Paxos(_) => "paxos",
            PeerRequest::Hello(_) => "hello",
            PeerRequest::Batch(_) => "batch",
        }
    }
}

/// Answers to [`PeerRequest`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The answer to a forwarded client request.
    Client(ClientResponse),
    /// The replicate landed (durably, per the receiver's durability setting).
    Ack,
    /// The receiver's copy (`None`: it has nothing for the key).
    Object(Option<Object>),
    /// The receiver's membership view.
    Gossip(GossipDigest),
    /// The answer to a probe.
    Pong,
    /// The answer to an anti-entropy step.
    Aae(AaeResponse),
    /// The request failed.
    Error(RequestError),
    /// The receiver's layout history.
    Layout(Box<LayoutHistory>),
    /// An acceptor's answer to [`PeerRequest::Paxos`].
    Paxos(Box<PaxosReply<Layout>>),
    /// The answers to a [`PeerRequest::Batch`], in the order of its requests (version 5).
    Batch(Vec<PeerResponse>),
}

/// The most keys, segments or objects one anti-entropy message carries.
pub const MAX_AAE_BATCH: usize = 1024;

/// Keys with the digests of their objects (see [`Object::digest`]).
pub type KeyDigests = Vec<(Vec<u8>, u64)>;

/// One step of an anti-entropy exchange, asked of the other replica of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AaeRequest {
    /// Hashes of Merkle tree nodes at `level` (0 = root).
    Nodes {
        /// The partition.
        partition: PartitionId,
        /// Tree level, 0 at the root.
        level: u8,
        /// Node indices within the level.
        indices: Vec<u32>,
    },
    /// The (key, digest) pairs of leaf segments.
    Segments {
        /// The partition.
        partition: PartitionId,
        /// Segment indices.
        segments: Vec<u32>,
    },
    /// The objects of these keys.
    Fetch {
        /// The partition.
        partition: PartitionId,
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// Merge these objects.
    Push {
        /// The partition.
        partition: PartitionId,
        /// Keys and objects.
        objects: Vec<(Vec<u8>, Object)>,
    },
    /// The digests of these keys (reaping checks that every replica holds the same
    /// tombstone).
    Digests {
        /// The partition.
        partition: PartitionId,
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// Delete these keys if their object's digest is still the given one.
    Reap {
        /// The partition.
        partition: PartitionId,
        /// Keys and the digest of the tombstone object confirmed on every replica.
        keys: KeyDigests,
    },
}

impl AaeRequest {
    /// A short name for metrics and logs.
    pub fn op_name(&self) -> &'static str {
        match self {
            AaeRequest::Nodes { .. } => "aae_nodes",
            AaeRequest::Segments { .. } => "aae_segments",
            AaeRequest::Fetch { .. } => "aae_fetch",
            AaeRequest::Push { .. } => "aae_push",
            AaeRequest::Digests { .. } => "aae_digests",
            AaeRequest::Reap { .. } => "aae_reap",
        }
    }

    /// The partition the step is about.
    pub fn partition(&self) -> PartitionId {
        match self {
            AaeRequest::Nodes { partition, .. }
            | AaeRequest::Segments { partition, .. }
            | AaeRequest::Fetch { partition, .. }
            | AaeRequest::Push { partition, .. }
            | AaeRequest::Digests { partition, .. }
            | AaeRequest::Reap { partition, .. } => *partition,
        }
    }

    /// How many items (indices, segments, keys, objects) it carries.
    pub fn batch_len(&self) -> usize {
        match self {
            AaeRequest::Nodes { indices, .. } => indices.len(),
            AaeRequest::Segments { segments, .. } => segments.len(),
            AaeRequest::Fetch { keys, .. } | AaeRequest::Digests { keys, .. } => keys.len(),
            AaeRequest::Push { objects, .. } => objects.len(),
            AaeRequest::Reap { keys, .. } => keys.len(),
        }
    }
}

/// Answers to [`AaeRequest`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AaeResponse {
    /// Node hashes, in the order asked.
    Nodes(Vec<u64>),
    /// Per segment asked, its (key, digest) pairs in key order.
    Segments(Vec<(u32, KeyDigests)>),
    /// Per key asked, its object if any.
    Objects(Vec<(Vec<u8>, Option<Object>)>),
    /// How many pushed objects changed the receiver's copy.
    Pushed(u64),
    /// Per key asked, the digest of its object if any.
    Digests(Vec<Option<u64>>),
    /// How many keys were deleted.
    Reaped(u64),
}

/// Everything that travels client→node or node→node on one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// From a client (or a CLI).
    Client(ClientRequest),
    /// From another node.
    Peer(PeerRequest),
    /// From another node, with its cluster settings and layout version (version 3).
    Stamped(LayoutStamp, PeerRequest),
}

/// Everything that travels back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// To a client.
    Client(ClientResponse),
    /// To a node.
    Peer(PeerResponse),
    /// The request could not even be decoded or dispatched.
    Error(RequestError),
    /// To a client, with the layout version the answering node served it under (version
    /// 4): a client routing by an older layout refreshes it.
    Stamped {
        /// The answering node's layout version.
        layout_version: u64,
        /// The answer.
        response: ClientResponse,
    },
}

impl Response {
    /// The plain [`Response::Client`] of a [`Response::Stamped`]; any other as it is.
    pub fn unstamped(self) -> Response {
        match self {
            Response::Stamped { response, .. } => Response::Client(response),
            other => other,
        }
    }

    /// The answer as it goes back to a node that sent the request: a client answer is
    /// the answer to a forwarded client request.
    pub fn into_peer(self) -> PeerResponse {
        match self {
            Response::Peer(p) => p,
            Response::Client(c) | Response::Stamped { response: c, .. } => PeerResponse::Client(c),
            Response::Error(e) => PeerResponse::Error(e),
        }
    }
}

/// `Vec<Vec<u8>>` as a sequence of byte strings: the same postcard bytes as nested
/// sequences of `u8`, without visiting each byte.
mod byte_strings {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(values: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(values.len()))?;
        for v in values {
            seq.serialize_element(Bytes::new(v))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let values = Vec::<ByteBuf>::deserialize(d)?;
        Ok(values.into_iter().map(ByteBuf::into_vec).collect())
    }
}

fn encode_as<T: Serialize>(version: WireVersion, msg: &T) -> Vec<u8> {
    // Sized first, so that the message is written once into a buffer of its size rather
    // than into a growing vector that is then copied behind the version.
    if let Ok(len) = postcard::experimental::serialized_size(msg) {
        let mut out = vec![0; 2 + len];
        out[..2].copy_from_slice(&version.get().to_be_bytes());
        if let Ok(used) = postcard::to_slice(msg, &mut out[2..]) {
            let used = used.len();
            out.truncate(2 + used);
            return out;
        }
    }
    let mut out = version.get().to_be_bytes().to_vec();
    // Serialising plain data into a Vec cannot fail.
    out.extend(postcard::to_stdvec(msg).unwrap_or_default());
    out
}

/// The version of a frame body, which this build must speak, and the message bytes after it.
fn versioned_body(bytes: &[u8]) -> Result<(WireVersion, &[u8]), CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    let (version, body) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| CodecError::Malformed("frame shorter than its version".into()))?;
    Ok((WireVersion::new(u16::from_be_bytes(*version))?, body))
}

/// The one message `body` holds, with nothing after it.
fn take<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, CodecError> {
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// The length of `msg`'s frame body (version + message) without encoding it.
fn encoded_len<T: Serialize>(msg: &T) -> usize {
    // Sizing plain data cannot fail.
    2 + postcard::experimental::serialized_size(msg).unwrap_or(usize::MAX - 2)
}

/// The length [`encode_request`] would give, without encoding.
pub fn request_len(req: &Request) -> usize {
    encoded_len(req)
}

/// The length of the frame body of `Request::Peer(req)`, without building or encoding it.
pub fn peer_request_len(req: &PeerRequest) -> usize {
    // The variant index of `Request::Peer` is one byte.
    encoded_len(req) + 1
}

/// The length of the frame body of `Response::Peer(resp)`, without building or encoding
/// it (an upper bound of its length inside a [`PeerResponse::Batch`]).
pub fn peer_response_len(resp: &PeerResponse) -> usize {
    // The variant index of `Response::Peer` is one byte.
    encoded_len(resp) + 1
}

/// The length of the frame body of `Response::Client(resp)`, without building or encoding
/// it (an upper bound of its length inside a [`ClientResponse::Batch`]).
pub fn client_response_len(resp: &ClientResponse) -> usize {
    // The variant index of `Response::Client` is one byte.
    encoded_len(resp) + 1
}

/// The length [`encode_response`] would give, without encoding.
pub fn response_len(resp: &Response) -> usize {
    encoded_len(resp)
}

/// `resp`, or a [`RequestError::ResponseTooLarge`] in its place when its frame would be
/// larger than `max_frame_bytes`. The transport does not send an oversized frame: the
/// requester would see only a broken stream, which it takes for a failed peer. The typed
/// answer says the node is alive and the request ran.
pub fn fit_response(resp: Response, max_frame_bytes: usize) -> Response {
    let len = response_len(&resp);
    if len <= max_frame_bytes {
        resp
    } else {
        Response::Error(RequestError::ResponseTooLarge {
            len,
            max: max_frame_bytes,
        })
    }
}

/// Encode a request frame body (version + message) in [`WIRE_VERSION`].
pub fn encode_request(req: &Request) -> Vec<u8> {
    encode_request_as(req, WireVersion::CURRENT)
}

/// Encode a request frame body in `version`. Requests are the same in every version this
/// build speaks, so only the version prefix differs, except [`Request::Stamped`]: a peer
/// older than version 3 gets the plain [`Request::Peer`] inside it.
pub fn encode_request_as(req: &Request, version: WireVersion) -> Vec<u8> {
    match req {
        Request::Stamped(_, peer) if version < WireVersion::LAYOUTS => {
            encode_as(version, &Request::Peer(peer.clone()))
        }
        req => encode_as(version, req),
    }
}

/// Decode a request frame body of any version this build speaks; any bytes give a value
/// or a typed error.
pub fn decode_request(bytes: &[u8]) -> Result<Request, CodecError> {
    decode_request_versioned(bytes).map(|(_, req)| req)
}

/// [`decode_request`], and the version the request came in (to answer in it).
pub fn decode_request_versioned(bytes: &[u8]) -> Result<(WireVersion, Request), CodecError> {
    let (version, body) = versioned_body(bytes)?;
    let request: Request = take(body)?;
    if version < WireVersion::BATCHES
        && matches!(
            &request,
            Request::Peer(PeerRequest::Batch(_)) | Request::Stamped(_, PeerRequest::Batch(_))
        )
    {
        return Err(CodecError::Malformed(format!(
            "a batch in a version {version} frame (batches came in version 5)"
        )));
    }
    if version < WireVersion::CLIENT_BATCHES
        && matches!(
            &request,
            Request::Client(ClientRequest::Batch(_) | ClientRequest::GetReplica { .. })
        )
    {
        return Err(CodecError::Malformed(format!(
            "a client batch or replica read in a version {version} frame (both came in version 6)"
        )));
    }
    Ok((version, request))
}

/// The version to answer a request frame in: its own when this build speaks it. A frame
/// of a newer version gets the refusal in [`WIRE_VERSION`], which the next release still
/// accepts (each release accepts the previous one's); an older one, in
/// [`MIN_WIRE_VERSION`].
pub fn answer_version(request: &[u8]) -> WireVersion {
    match request.first_chunk::<2>().map(|v| u16::from_be_bytes(*v)) {
        Some(v) if v > WIRE_VERSION => WireVersion::CURRENT,
        Some(v) => WireVersion::new(v).unwrap_or(WireVersion::OLDEST),
        None => WireVersion::OLDEST,
    }
}

/// Who a request frame is from, as its first byte after the version says: a client
/// request or a node-to-node one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// [`Request::Client`].
    Client,
    /// [`Request::Peer`] or [`Request::Stamped`].
    Peer,
}

/// Reads which kind of request a frame body holds without decoding the body, so that a
/// node can refuse a peer message from a client certificate before spending anything on
/// it. The version is checked as [`decode_request`] does; the body is not.
pub fn peek_request_kind(bytes: &[u8]) -> Result<RequestKind, CodecError> {
    let (_, body) = versioned_body(bytes)?;
    // postcard writes an enum's variant index as a varint: 0 and 1 are single bytes.
    match body.first() {
        Some(0) => Ok(RequestKind::Client),
        Some(1 | 2) => Ok(RequestKind::Peer),
        Some(other) => Err(CodecError::Malformed(format!(
            "unknown request kind {other}"
        ))),
        None => Err(CodecError::Malformed("frame has no request".into())),
    }
}

/// Encode a response frame body in [`WIRE_VERSION`].
pub fn encode_response(resp: &Response) -> Vec<u8> {
    encode_response_as(resp, WireVersion::CURRENT)
}

/// Encode a response frame body in `version`, dropping what that version cannot carry
/// (version 1: the write times of a [`GetReply`]; before version 4: a
/// [`RequestError::PlanChanged`], sent as `LayoutRefused` with its text). An older version's frame is never
/// longer than the current one's, so [`fit_response`] holds for it too.
pub fn encode_response_as(resp: &Response, version: WireVersion) -> Vec<u8> {
    if version < WireVersion::CLIENT_BATCHES && is_v6_client_answer(resp) {
        // Never asked for: client batches and replica reads come only in version-6 frames.
        let refusal = RequestError::Internal("this answer needs wire version 6".into());
        return encode_response_as(&Response::Client(ClientResponse::Error(refusal)), version);
    }
    if version < WireVersion::DECLINED {
        let declined = |e: &RequestError| {
            matches!(e, RequestError::Declined(_)).then_some(RequestError::ShuttingDown)
        };
        if let Some(older) = replace_error(resp, declined) {
            return encode_response_as(&older, version);
        }
    }
    if version < WireVersion::BATCHES {
        if let Response::Peer(PeerResponse::Batch(_)) = resp {
            // Never asked for: a batch comes only in a version-5 frame.
            let refusal = RequestError::Internal("a batch answer needs wire version 5".into());
            return encode_response_as(&Response::Peer(PeerResponse::Error(refusal)), version);
        }
    }
    if version < WireVersion::CLIENT_STAMPS {
        if let Response::Stamped { response, .. } = resp {
            return encode_response_as(&Response::Client(response.clone()), version);
        }
    }
    if version < WireVersion::PLAN_IDS {
        if let Some(older) = cluster::before_plan_ids(resp) {
            return encode_response_as(&older, version);
        }
    }
    if version < WireVersion::WRITE_TIMES {
        encode_as(version, &v1::Response::from(resp.clone()))
    } else if version < WireVersion::LAYOUTS {
        encode_as(
            version,
            &v2::Response::from(v1::before_layouts(resp.clone())),
        )
    } else {
        encode_as(version, resp)
    }
}

/// Decode a response frame body of any version this build speaks; any bytes give a value
/// or a typed error. A version-1 [`GetReply`] has empty `written_at`.
pub fn decode_response(bytes: &[u8]) -> Result<Response, CodecError> {
    let (version, body) = versioned_body(bytes)?;
    if version < WireVersion::WRITE_TIMES {
        Ok(take::<v1::Response>(body)?.into())
    } else if version < WireVersion::LAYOUTS {
        Ok(take::<v2::Response>(body)?.into())
    } else {
        let response: Response = take(body)?;
        if version < WireVersion::CLIENT_BATCHES && is_v6_client_answer(&response) {
            return Err(CodecError::Malformed(format!(
                "a client batch or replica answer in a version {version} frame (both came in version 6)"
            )));
        }
        if version < WireVersion::BATCHES {
            if let Response::Peer(PeerResponse::Batch(_)) = response {
                return Err(CodecError::Malformed(format!(
                    "a batch answer in a version {version} frame (batches came in version 5)"
                )));
            }
        }
        Ok(response)
    }
}

/// `resp` with its error replaced by `older(error)`, when it is an error (of a client
/// answer, stamped or not, of a peer answer, or of the node) that `older` replaces; else
/// `None`. For a requester of an older version that does not know the error.
fn replace_error(
    resp: &Response,
    older: impl Fn(&RequestError) -> Option<RequestError>,
) -> Option<Response> {
    let client = |c: &ClientResponse| match c {
        ClientResponse::Error(e) => older(e).map(ClientResponse::Error),
        _ => None,
    };
    match resp {
        Response::Client(c) => client(c).map(Response::Client),
        Response::Peer(PeerResponse::Client(c)) => {
            client(c).map(|c| Response::Peer(PeerResponse::Client(c)))
        }
        Response::Peer(PeerResponse::Error(e)) => {
            older(e).map(|e| Response::Peer(PeerResponse::Error(e)))
        }
        Response::Error(e) => older(e).map(Response::Error),
        Response::Stamped {
            layout_version,
            response,
        } => client(response).map(|response| Response::Stamped {
            layout_version: *layout_version,
            response,
        }),
        Response::Peer(_) => None,
    }
}

/// Whether `resp` is the answer to a [`ClientRequest::Batch`] or a
/// [`ClientRequest::GetReplica`] (version 6).
fn is_v6_client_answer(resp: &Response) -> bool {
    matches!(
        resp,
        Response::Client(ClientResponse::Batch(_) | ClientResponse::Replica(_))
            | Response::Stamped {
                response: ClientResponse::Batch(_) | ClientResponse::Replica(_),
                ..
            }
            | Response::Peer(PeerResponse::Client(
                ClientResponse::Batch(_) | ClientResponse::Replica(_)
            ))
    )
}

/// The frame of a [`ClientRequest::Batch`] of `items`, each the frame of one
/// `Request::Client` (as [`encode_request`] makes it), in `version`: the items' encoded
/// bytes are copied behind the batch's envelope, not decoded and encoded again. `None`
/// when an item is not a client request's frame, or the version has no client batches.
pub fn encode_client_batch(items: &[&[u8]], version: WireVersion) -> Option<Vec<u8>> {
    if version < WireVersion::CLIENT_BATCHES || items.is_empty() {
        return None;
    }
    // `Request::Client(ClientRequest::Batch(vec![]))`: version, two variant indices and
    // the length 0; the length is replaced by the items' count.
    let mut out = encode_as(version, &Request::Client(ClientRequest::Batch(Vec::new())));
    out.pop();
    // A sequence's length is a varint usize in postcard, as a plain usize is.
    out.extend(postcard::to_stdvec(&items.len()).ok()?);
    let body: usize = items.iter().map(|i| i.len().saturating_sub(3)).sum();
    out.reserve(body);
    for item in items {
        // An item's frame: 2 version bytes, the `Request::Client` index 0, the request.
        match item.get(2) {
            Some(0) if item.len() > 3 => out.extend_from_slice(&item[3..]),
            _ => return None,
        }
    }
    Some(out)
}

/// Encode a causal context for a client to keep (version byte + postcard).
pub fn encode_context(ctx: &CausalContext) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend(postcard::to_stdvec(ctx).unwrap_or_default());
    out
}

/// Decode a context made by [`encode_context`].
pub fn decode_context(bytes: &[u8]) -> Result<CausalContext, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != 1 {
        return Err(CodecError::UnsupportedVersion {
            found: u16::from(version),
            supported: 1,
        });
    }
    let (mut ctx, rest): (CausalContext, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(
            "trailing bytes after the context".into(),
        ));
    }
    ctx.compact();
    Ok(ctx)
}
