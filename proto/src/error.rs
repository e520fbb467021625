//! Errors of the wire codec and of requests, as clients and peers see them.

use serde::{Deserialize, Serialize};

use crate::wire::PlanId;

/// Why bytes could not be decoded. Decoders return this for any input; they never panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// No bytes at all.
    #[error("empty input")]
    Empty,
    /// The frame or object was written by a format version this build does not speak.
    #[error("unsupported format version {found} (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version found in the input.
        found: u16,
        /// Version this build speaks.
        supported: u16,
    },
    /// The bytes do not decode as the expected message.
    #[error("malformed input: {0}")]
    Malformed(String),
}

/// Why a request failed, as carried back to the client (or a forwarding node).
///
/// Every variant says what happened so that the client can decide: retry elsewhere, back
/// off, or fix its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    /// Keys must be at least one byte long.
    #[error("key is empty")]
    EmptyKey,
    /// The key is longer than the limit.
    #[error("key is {len} bytes, the limit is {max}")]
    KeyTooLarge {
        /// Key length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The value is larger than the node's configured maximum.
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge {
        /// Value length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Storing the write would make the key's object (all siblings) larger than the
    /// limit: read the key and write with its context to resolve the siblings.
    #[error("the key's object would be {len} bytes with its siblings, the limit is {max}; resolve siblings by writing with a read's context")]
    ObjectTooLarge {
        /// Resulting object size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A quorum option is out of range (e.g. R > N or R = 0).
    #[error("invalid request options: {0}")]
    InvalidOptions(String),
    /// The context is not one this cluster produced.
    #[error("invalid context: {0}")]
    InvalidContext(String),
    /// Too few nodes are reachable to meet the quorum; nothing was written (a write
    /// that lost its quorum after being stored answers [`RequestError::Incomplete`]).
    #[error("unavailable: {needed} replicas needed, {alive} reachable")]
    Unavailable {
        /// Replies needed (R, W, PR or PW).
        needed: usize,
        /// Replicas this coordinator believes reachable.
        alive: usize,
    },
    /// The quorum did not answer in time. For a write, it may still have landed on some
    /// replicas (and will spread from them): retry with the same context or read first.
    #[error("timeout: {acks} of {needed} replies arrived in time")]
    Timeout {
        /// Replies that did arrive.
        acks: usize,
        /// Replies needed.
        needed: usize,
    },
    /// The node is at its bound of in-flight requests; retry with back-off.
    #[error("node overloaded: too many requests in flight")]
    Overloaded,
    /// The peer's certificate role may not make this request (e.g. a client certificate
    /// sending node-to-node messages).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The request came from a node that is not a member of this cluster.
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// The node's storage failed; the node keeps serving other requests.
    #[error("storage error: {0}")]
    Storage(String),
    /// The request could not be decoded.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The request was written by a protocol version this node does not speak.
    #[error("unsupported protocol version {found} (node speaks {supported})")]
    UnsupportedVersion {
        /// Version of the request.
        found: u16,
        /// Version the node speaks.
        supported: u16,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// An internal invariant failed; the message says which.
    #[error("internal error: {0}")]
    Internal(String),
    /// The write would leave the key with more siblings than `limits.max_siblings`;
    /// nothing was written. Read the key and write with the read's context, which
    /// replaces the siblings it returned.
    #[error("the key would have {siblings} siblings, the limit is {limit}; resolve siblings by writing with a read's context")]
    TooManySiblings {
        /// Siblings the key would have had.
        siblings: usize,
        /// The limit.
        limit: usize,
    },
    /// The write was stored on `acks` replicas (the coordinator's own copy among them),
    /// then the quorum became impossible: too few of the other replicas could take it.
    /// Unlike [`RequestError::Unavailable`] something *was* written, and it spreads from
    /// those copies (read repair, anti-entropy), so the outcome is unknown, as after a
    /// timeout: read the key, or retry with the same context.
    #[error("incomplete: the write reached {acks} of {needed} replicas needed, then the quorum could not be met; it may still spread")]
    Incomplete {
        /// Replicas that stored the write.
        acks: usize,
        /// Replicas needed (W or PW).
        needed: usize,
    },
    /// A node-to-node message names a partition and carries a key of another one. Keys are
    /// stored and hashed into Merkle trees under the partition named, so such a key is
    /// refused rather than filed in the wrong place.
    #[error("a key in the message does not belong to partition {partition}")]
    WrongPartition {
        /// The partition the message names.
        partition: u32,
    },
    /// The answer is larger than a frame holds, so it was not sent; the request ran. The
    /// responder is alive: this is not a failure of the node.
    #[error("the response is {len} bytes, more than a frame holds ({max})")]
    ResponseTooLarge {
        /// Encoded response length.
        len: usize,
        /// Frame limit.
        max: usize,
    },
    /// The node's disk is full (or below its free-space reserve): it refused the write,
    /// which did not land there. Reads are still served; writes are accepted again once
    /// space is freed. Retry the write through another coordinator, or later.
    #[error("disk full: the node refuses writes until space is freed on its data directory")]
    DiskFull,
    /// A `backup` request the node refused or could not complete; nothing was left
    /// behind under the backup directory.
    #[error("backup: {0}")]
    Backup(BackupError),
    /// A cluster change (`shoal cluster join/leave/remove/replace/plan/commit`) the
    /// cluster refused; nothing changed. The text says why (the layout's own error).
    #[error("layout change refused: {0}")]
    LayoutRefused(String),
    /// The sender's layout is older than this node's: it refreshes its layout (this
    /// node's version is `current`) and tries again. A peer refuses requests of an older
    /// layout so that nothing coordinated under a superseded layout lands once a change
    /// is in progress.
    #[error("stale layout: this node is at layout version {current}")]
    StaleLayout {
        /// The receiver's layout version.
        current: u64,
    },
    /// The sender belongs to another cluster, or to one with other settings (partition
    /// count, N): the two refuse each other rather than silently disagree.
    #[error("cluster settings differ: {0}")]
    ClusterMismatch(String),
    /// A commit naming a plan ([`ClusterRequest::CommitPlan`](crate::wire::ClusterRequest::CommitPlan))
    /// found other changes staged on the node: another operator unstaged or restaged
    /// there since that plan was made. Nothing changed; plan again and review what is
    /// staged now (`staged`) before committing it.
    #[error("the changes staged now are plan {staged}, not plan {planned}: they changed since that plan (another operator unstaged or restaged on this node); nothing was committed, run `shoal cluster plan` again")]
    PlanChanged {
        /// The plan the commit named.
        planned: PlanId,
        /// The plan of the changes staged now (on the version the commit named).
        staged: PlanId,
    },
    /// The node did not run the request and another replica of the key may (wire version
    /// 6): it is a candidate holding no partition, a restoring node a request was
    /// forwarded to, or its copy of the key's partition is being dropped. Nothing was
    /// applied, so a write too can be sent to another node. A requester of version 5 or
    /// older gets [`ShuttingDown`](RequestError::ShuttingDown) in its place.
    #[error("this node did not run the request ({0}); another replica may")]
    Declined(String),
}

/// Why a node made no backup ([`RequestError::Backup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BackupError {
    /// The name is empty, absolute, or has components other than plain names (`..`):
    /// backups are written only under the node's `storage.backup_dir`.
    #[error("{name:?} is not a plain name under the node's backup directory {root}")]
    OutsideRoot {
        /// The name asked for.
        name: String,
        /// The node's backup directory.
        root: String,
    },
    /// A backup of that name exists already; backups are never overwritten.
    #[error("{path} already exists")]
    Exists {
        /// The existing path.
        path: String,
    },
    /// Another backup is being written on this node (one at a time).
    #[error("another backup is in progress on this node")]
    InProgress,
    /// The checkpoint or its manifest could not be written (the message says why; a
    /// partial directory is removed).
    #[error("failed: {0}")]
    Failed(String),
}

impl RequestError {
    /// The metric label of this error (the `result` of `shoal_requests_total`,
    /// `shoal_coordinator_requests_total`, `shoal_forwarded_requests_total`): what the
    /// caller can do about it, not which check failed.
    pub fn label(&self) -> &'static str {
        match self {
            RequestError::Unavailable { .. } => "unavailable",
            RequestError::Timeout { .. } => "timeout",
            RequestError::Incomplete { .. } => "incomplete",
            RequestError::Overloaded => "overloaded",
            RequestError::EmptyKey
            | RequestError::KeyTooLarge { .. }
            | RequestError::ValueTooLarge { .. }
            | RequestError::ObjectTooLarge { .. }
            | RequestError::TooManySiblings { .. }
            | RequestError::InvalidOptions(_)
            | RequestError::InvalidContext(_)
            | RequestError::Malformed(_)
            | RequestError::UnsupportedVersion { .. }
            | RequestError::WrongPartition { .. }
            | RequestError::ResponseTooLarge { .. } => "invalid",
            RequestError::NotAllowed(_) | RequestError::UnknownNode(_) => "refused",
            RequestError::Storage(_) => "storage_error",
            RequestError::ShuttingDown => "shutting_down",
            RequestError::Internal(_) => "internal_error",
            RequestError::DiskFull => "disk_full",
            RequestError::Backup(_) => "backup_refused",
            RequestError::LayoutRefused(_) => "layout_refused",
            RequestError::StaleLayout { .. } => "stale_layout",
            RequestError::ClusterMismatch(_) => "refused",
            RequestError::PlanChanged { .. } => "layout_refused",
            RequestError::Declined(_) => "declined",
        }
    }
}

impl From<CodecError> for RequestError {
    fn from(e: CodecError) -> RequestError {
        match e {
            CodecError::UnsupportedVersion { found, supported } => {
                RequestError::UnsupportedVersion { found, supported }
            }
            other => RequestError::Malformed(other.to_string()),
        }
    }
}
