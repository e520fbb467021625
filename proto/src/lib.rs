//! Shoal's sans-IO core.
//!
//! Everything that decides what Shoal does lives here, free of IO: causality (dotted
//! version vectors), objects and siblings, wire messages, and the replication
//! [`Engine`] — coordinators for puts, gets and deletes, the replica side, read repair,
//! hinted handoff, membership and failure detection.
//!
//! Nothing in this crate opens a socket, touches a disk, reads a clock or draws an
//! unseeded random number. Time arrives as an argument ([`Now`]: wall-clock [`Time`] and [`Monotonic`]), randomness from a seed,
//! and the engine answers with [`Command`]s for its driver to carry out — the tokio node
//! in `shoal-node`, or the deterministic simulator in `shoal-tests`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod causality;
mod config;
mod copies;
mod engine;
mod error;
pub mod layout;
mod membership;
pub mod merkle;
pub mod metrics;
mod object;
pub mod paxos;
pub mod session;
mod storage_ops;
mod time;
pub mod wire;

pub use causality::{Actor, CausalContext, Dot, VersionVector, MAX_DOT_COUNTER};
pub use config::{
    AaeConfig, ConfigError, EngineConfig, HandoffConfig, LimitsConfig, MembershipConfig,
    ReplicationConfig, FRAME_OVERHEAD_BYTES, MAX_FRAME_BYTES, MAX_KEY_BYTES, MAX_OBJECT_BYTES,
};
pub use copies::{judge_copies, CopiesVerdict};
pub use engine::{
    get_reply, many_siblings, replica_merge_answer, storage_error, ReplicaReadGate,
    ReplicaReadGateKey,
};
pub use engine::{
    AaeStats, Command, Engine, EngineError, HandoffStats, InboundId, RequestId, SendError, Sender,
    TransferStats, AAE_SEGMENTS, AAE_SHAPE, MAX_UNSIZED_READS, REAP_SENDS, RESERVE_SHARE,
    SMALL_READ_SHARE,
};
pub use engine::{PersistedLayout, MAX_CANDIDATES, MAX_COMMIT_ROUNDS, MAX_HELLO_INTERVAL};
pub use error::{BackupError, CodecError, RequestError};
pub use membership::{GossipDigest, GossipEntry, MemberView, Membership, StateChange};
pub use merkle::{
    diff_segment, MerkleError, MerkleShape, MerkleTree, SegmentDiff, DEFAULT_FANOUT,
    DEFAULT_SEGMENTS, MAX_SEGMENTS, PAIR_HASH_SEED, SEGMENT_HASH_SEED,
};
pub use object::{
    Object, Sibling, SiblingValue, UpdateError, OBJECT_FORMAT_VERSION, REPLACED_DOTS_KEPT,
};
pub use storage_ops::{
    split_at_sync, HintRecord, HintRejection, HintTotals, StorageFailure, StorageOp, StorageReply,
    StorageResult, SEGMENT_ENTRY_OVERHEAD,
};
pub use time::{Monotonic, Now, Time};
