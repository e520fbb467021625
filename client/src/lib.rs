//! The Rust SDK of Shoal, a Dynamo-style leaderless replicated key-value store.
//!
//! A [`Client`] connects to any member of a cluster (the seeds of its [`ClientConfig`]),
//! learns the ring from it, and sends each request to a replica of its key. Keys and
//! values are bytes. Reads return every concurrent value (*siblings*) and a [`Context`];
//! hand the context back on the next write of the key so that the write replaces what the
//! read saw instead of adding another sibling.
//!
//! ```no_run
//! use shoal_client::{Client, ClientConfig};
//!
//! # async fn example() -> Result<(), shoal_client::ClientError> {
//! let config = ClientConfig::load("shoal-dev/client.toml".as_ref())?;
//! let client = Client::connect(config).await?;
//!
//! // A first write, without a context, with the cluster's default quorum.
//! client.put("user:42", "Ada").await?;
//!
//! // Read it back (here with R = 2): the values and the context to write with next.
//! let read = client.get_with("user:42").r(2).send().await?;
//! assert!(read.found);
//! for value in &read.values {
//!     println!("{}", String::from_utf8_lossy(value));
//! }
//!
//! // Replace what the read saw (resolving any siblings) ...
//! let ctx = client
//!     .put_with("user:42", "Ada Lovelace")
//!     .context(&read.context)
//!     .w(2)
//!     .send()
//!     .await?;
//! // ... and delete it with the context of that write.
//! client.delete_with("user:42").context(&ctx).send().await?;
//!
//! // Contexts travel as strings, for example through a web form or a CLI.
//! let text = ctx.to_string();
//! let _same: shoal_client::Context = text.parse()?;
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Client::builder`] configures a client in code instead: seeds given as host names
//! (resolved by DNS when connecting and at each refresh, so that a Kubernetes Service
//! works) and certificates as PEM text from memory.
//!
//! # Helpers
//!
//! - [`Client::update`]: read-modify-write that resolves siblings with a function (see
//!   [`resolve`] for set union and last-writer-wins) and detects concurrent writes by
//!   reading back (the [`update`] module says exactly what a success guarantees).
//! - [`Client::get_many`] / [`Client::put_many`]: batches grouped by coordinator.
//! - [`Client::session`]: a [`Session`] that reads its own writes and never reads older
//!   data than it read before, key by key, even under sloppy quorums (asking more
//!   replicas, up to N, or failing with [`ClientError::NotCovered`]).
//! - With the `serde` feature: [`Client::get_json`], [`Client::put_json`] and
//!   [`Client::update_json`] store values as JSON.
//! - With the `certs` feature: `shoal_client::certs` makes a development CA and
//!   certificates (otherwise no certificate-generation code is compiled in).
//!
//! `client/examples/` has runnable examples: `hello`, `shopping_cart` (siblings),
//! `typed`, `retry` and `session`; the process tests run each against a cluster.
//!
//! # Routing and retries
//!
//! A write goes to the first node of its key's preference list; a read rotates over the
//! key's N replicas, spreading the load. Connections are raced: when the first candidate
//! has not connected within [`ClientConfig::race_delay`] (50 ms), the client also
//! connects to the next (at most [`MAX_RACING`] at once) and sends the request once, to
//! whichever connects first, so a dead node costs tens of milliseconds rather than the
//! connect timeout.
//!
//! When a node cannot be reached (the request certainly had no effect there) it is
//! marked down for two seconds (tried only after the others) and the next node is tried: the
//! rest of the preference list, then every other member (any node forwards). When every
//! known node fails, the client re-reads the cluster info once, from members and seeds,
//! and tries the nodes it has not tried yet. A write whose outcome is unknown (sent,
//! then no answer in time, or the connection lost) is never sent elsewhere — it may have
//! landed — and is returned as [`ClientError::Transport`].
//!
//! Calls that fail with a transient error ([`ClientError::is_retryable`]) are tried again
//! after an exponential, jittered wait, as [`ClientConfig::retry`] (a [`RetryPolicy`])
//! says: reads on `Overloaded`, `Unavailable`, `Timeout` and `Unreachable`; writes only
//! when the error says the write certainly was not applied
//! ([`ClientError::is_not_applied`]: `Overloaded`, `Unreachable`, `Unavailable`,
//! `DiskFull`), unless the policy is told writes are idempotent. See [`RetryPolicy`] for
//! which answers leave a write's outcome unknown.
//!
//! # Timeouts
//!
//! The nodes answer [`ClientError::Timeout`] when the quorum does not answer within the
//! request's timeout ([`ReadOptions::timeout`], [`WriteOptions::timeout`], or the nodes'
//! default). The client waits that long plus [`RESPONSE_MARGIN`] (or
//! [`ClientConfig::request_timeout`] plus the margin, when the request sets none), so the
//! nodes' answer, which says how many replicas did reply, normally arrives first.
//!
//! # Deletes, siblings and sizes
//!
//! - A delete without a context makes its coordinator read the key first and delete
//!   exactly the values that read found (see [`Client::delete_with`]).
//! - A key holds at most the nodes' `limits.max_siblings` siblings (100 by default): a
//!   write that would leave more is refused with [`ClientError::TooManySiblings`] and
//!   stored nowhere. Writing with a read's context resolves siblings and is never refused.
//! - Values are at most the nodes' `limits.max_value_bytes` ([`ClientError::ValueTooLarge`]),
//!   a key's object with all its siblings at most `limits.max_object_bytes`
//!   ([`ClientError::ObjectTooLarge`]). Nodes refuse an object limit above
//!   [`MAX_OBJECT_BYTES`], and this client receives frames of [`MAX_FRAME_BYTES`]: any
//!   object a node stores can be read.
//!
//! # Metrics
//!
//! `shoal_client_requests_total{op,result}` counts calls by operation (`get`, `put`,
//! `delete`, `status`, `cluster_info`) and outcome (`ok` or [`ClientError::label`]);
//! `shoal_client_request_duration_seconds{op}` is their latency (retries included);
//! `shoal_client_retries_total{op,reason}` counts the retries the [`RetryPolicy`] made;
//! `shoal_client_session_escalations_total`, `shoal_client_session_not_covered_total`,
//! `shoal_client_session_absent_answers_total` and `shoal_client_session_evictions_total`
//! count [`Session`] reads asked again of more replicas, session reads that failed
//! `NotCovered`, reads that found nothing answered for a key the session knows deleted
//! although their context did not include the session's, and keys sessions forgot;
//! `shoal_client_layout_refreshes_total{result}` counts the cluster-info fetches started
//! because a node showed a newer layout (see below). They go to whatever recorder the
//! application installs with the `metrics` crate.
//!
//! # A living cluster
//!
//! [`Client::cluster_status`], [`Client::stage_join`], [`Client::stage_leave`],
//! [`Client::stage_remove`], [`Client::stage_replace`], [`Client::unstage`],
//! [`Client::plan`], [`Client::commit_plan`] and [`Client::commit`] are what `shoal
//! cluster ...` runs; a refused change is [`ClientError::LayoutRefused`] with the node's
//! reason, and a commit naming a plan ([`PlanReport::id`]) that is no longer what is
//! staged is [`ClientError::PlanChanged`]. The client routes by
//! the layout version of its [`ClusterInfo`] ([`Client::layout_version`]); an answer that
//! shows a newer one ([`ClientError::StaleLayout`], a cluster reply) makes it fetch the
//! cluster info again, at most one fetch at a time and one per
//! [`LAYOUT_REFRESH_INTERVAL`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod batch;
mod builder;
mod client;
mod config;
mod context;
mod error;
mod options;
mod request;
mod retry;
mod routing;
mod session;
#[cfg(feature = "serde")]
mod typed;
pub mod update;

pub use batch::{BATCH_PER_NODE, MAX_BATCH_KEYS};
pub use builder::ClientBuilder;
pub use client::{
    Client, GetResult, Sibling, DIRECT_READ_WAIT, LAYOUT_REFRESH_INTERVAL, MAX_ATTEMPTS_PER_CALL,
    MAX_BATCH_BYTES, MAX_RACING, RESPONSE_MARGIN,
};
pub use config::{
    ClientConfig, ConfigError, Seed, TlsFiles, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FRAMES_PER_NODE,
    DEFAULT_RACE_DELAY, DEFAULT_REQUEST_TIMEOUT, MAX_FRAMES_PER_NODE, MAX_SEEDS,
};
pub use context::{Context, MAX_CONTEXT_CHARS};
pub use error::ClientError;
pub use options::{ReadOptions, WriteOptions};
pub use request::{Delete, Get, Put};
pub use retry::{
    RetryPolicy, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BASE, DEFAULT_RETRY_CAP, MAX_RETRY_ATTEMPTS,
};
pub use session::{Session, DEFAULT_SESSION_KEYS};
#[cfg(feature = "serde")]
pub use typed::TypedGet;
pub use update::{
    resolve, BySiblings, ByValues, ResolveRead, Resolver, SiblingResolver, Update,
    DEFAULT_UPDATE_ATTEMPTS, MAX_UPDATE_ATTEMPTS,
};

pub use shoal_proto::layout::{Change, MemberState as LayoutMemberState};
pub use shoal_proto::wire::{
    AaeExchangeStatus, AaePartitionStatus, AaeReport, ClusterInfo, ClusterStatus, MemberAddress,
    MemberReport, MemberRole, MemberState, MemberStatus, PlanId, PlanIdError, PlanReport,
    StatusReport, StorageHealth, TransferSummary,
};
pub use shoal_proto::{RequestError, MAX_FRAME_BYTES, MAX_KEY_BYTES, MAX_OBJECT_BYTES};
pub use shoal_ring::NodeId;
pub use shoal_transport::{CertificateError, TransportError};

/// Certificate generation (a development CA, node and client certificates), with the
/// `certs` feature.
#[cfg(feature = "certs")]
pub use shoal_transport::certs;
