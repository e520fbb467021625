//! The tokio node: a driver task owns one [`Engine`](shoal_proto::Engine), feeds it requests, transport outcomes,
//! storage results and timeouts, and carries out the commands it emits.
//!
//! ```text
//!  QUIC streams ──► NodeHandler ──(bounded queue)──► driver task ──► Engine (proto)
//!                        ▲                              │  ▲
//!                        └──── oneshot answer ◄─────────┤  │ completions (responses,
//!                                                       │  │ storage results)
//!                     peer requests (tokio tasks) ◄─────┤  │
//!                     storage ops (worker threads) ◄────┘──┘
//! ```
//!
//! Bounds: the request queue (`limits.max_queued_requests`; when full a request is
//! answered `Overloaded` at once), the engine's in-flight limit, the transport's frame and
//! stream limits. Completions are not bounded separately: there is exactly one per
//! command, and commands are bounded by the admitted requests.
//!
//! The modules: [`startup`] opens storage, binds QUIC and spawns everything; [`driver`]
//! is the task that owns the engine (and the storage worker threads it feeds);
//! [`handler`] turns QUIC requests into queued [`Inbound`]s; [`background`] holds the
//! periodic tasks beside the engine (storage statistics, Merkle tree verification);
//! [`process_stats`] publishes the process's CPU, memory and descriptors;
//! [`health`] is the serving state behind the metrics listener's `GET /ready`;
//! [`replica_reads`] serves clients' replica reads and merges peers' replica writes in
//! the handler, from memory;
//! [`tls_reload`] loads the TLS files at start and again on SIGHUP.

use shoal_proto::wire::{PeerResponse, Request, Response};
use shoal_proto::{RequestId, SendError, Sender, StorageResult};
use tokio::sync::oneshot;

mod background;
pub(crate) mod backup;
mod driver;
mod group_commit;
mod handler;
pub mod health;
pub(crate) mod http;
mod peer_failures;
mod peer_versions;
mod process_stats;
mod replica_reads;
mod startup;
mod tls_reload;

pub use startup::{start, RunningNode};

/// A request on its way from the [`handler`] to the [`driver`], with where its answer goes.
struct Inbound {
    from: Sender,
    request: Request,
    reply: oneshot::Sender<Response>,
}

/// The outcome of a command the driver started: a peer's answer or a storage result.
enum Completion {
    Response {
        id: RequestId,
        result: Result<PeerResponse, SendError>,
    },
    Storage {
        id: RequestId,
        result: StorageResult,
    },
    /// With group commit: a coordinator's local write, applied but not synced yet
    /// ([`shoal_proto::Engine::handle_storage_applied`]); its `Storage` completion
    /// ([`shoal_proto::StorageReply::Synced`] or the failure) follows from the committer.
    Applied {
        id: RequestId,
        result: StorageResult,
    },
}
