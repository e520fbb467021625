//! [`ClientError`]: everything that can go wrong in a client call, typed so that the
//! caller can decide to retry, back off, resolve siblings or fix its request.

use std::net::SocketAddr;

use shoal_proto::wire::PlanId;
use shoal_proto::RequestError;
use shoal_ring::NodeId;
use shoal_transport::{CertificateError, TransportError};

use crate::config::ConfigError;

/// Why a client call failed.
///
/// The first group mirrors the node's [`RequestError`]s that a caller acts on; the rest
/// ([`ClientError::Server`]) carry the node's error unchanged. The second group is the
/// client's own: no node reachable, transport failures whose outcome is unknown, answers
/// that make no sense, and configuration problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Too few replicas of the key are reachable to meet the quorum (R, W, PR or PW);
    /// nothing was written. Retry later or with a smaller quorum.
    #[error("unavailable: {needed} replicas needed, {alive} reachable")]
    Unavailable {
        /// Replies the quorum needs.
        needed: usize,
        /// Replicas the coordinator believed reachable.
        alive: usize,
    },
    /// The quorum did not answer within the request's timeout. For a put or delete the
    /// write **may still have landed** on some replicas (and will spread from them). Read
    /// the key before writing again: a retry with the same context is concurrent with the
    /// first attempt, so if both landed they come back as two siblings.
    #[error("timeout: {acks} of {needed} replies arrived in time")]
    Timeout {
        /// Replies that arrived in time.
        acks: usize,
        /// Replies needed.
        needed: usize,
    },
    /// The key is longer than [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES) bytes.
    #[error("key is {len} bytes, the limit is {max}")]
    KeyTooLarge {
        /// Key length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Keys must be at least one byte long.
    #[error("key is empty")]
    EmptyKey,
    /// The value is larger than the cluster accepts (the nodes' `max_value_bytes`, or what
    /// fits in one frame with this key and context).
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge {
        /// Value length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The write would make the key's object (all its siblings together) larger than the
    /// nodes allow: read the key and write with the read's context to resolve siblings.
    ///
    /// A get answers it when the replicas' copies, each within the limit, merge into an
    /// object past it (large concurrent writes coordinated by different nodes): read with
    /// `r = 1`, which answers one replica's copy, and write with that read's context.
    #[error("the key's object would be {len} bytes with its siblings, the limit is {max}; resolve siblings by writing with a read's context")]
    ObjectTooLarge {
        /// The resulting object size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The write would leave the key with more siblings than the nodes allow
    /// (`limits.max_siblings`, 100 by default); nothing was written. Siblings pile up when
    /// writes carry no context (or an old one): read the key and write with the read's
    /// context, which replaces every sibling the read returned.
    #[error("the key would have {siblings} siblings, the limit is {limit}; resolve siblings by writing with a read's context")]
    TooManySiblings {
        /// Siblings the key would have had.
        siblings: usize,
        /// The limit.
        limit: usize,
    },
    /// A request option is out of range (for example R greater than N, or R = 0).
    #[error("invalid request options: {0}")]
    InvalidOptions(String),
    /// A context string does not decode, or the cluster did not produce it.
    #[error("invalid context: {0}")]
    InvalidContext(String),
    /// The node is at its bound of requests in flight; retry with back-off.
    #[error("node overloaded: too many requests in flight")]
    Overloaded,
    /// The cluster refused this client's certificate for the request.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// [`Client::status`](crate::Client::status) was asked about a node that is not a member
    /// of the cluster as this client knows it (even after a refresh).
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// Any other error a node answered (storage failure, shutting down, protocol version
    /// mismatch, internal error).
    #[error("server error: {0}")]
    Server(RequestError),
    /// No node could be reached: every address tried refused or never answered the
    /// connection. The request was delivered nowhere, so nothing was written.
    #[error("no node reachable (tried {}): {last}", fmt_addrs(tried))]
    Unreachable {
        /// The addresses tried, in order.
        tried: Vec<SocketAddr>,
        /// The last transport error.
        last: String,
    },
    /// The transport failed after the request may have been sent (no answer in time, the
    /// connection closed or the stream was aborted). The outcome is unknown: a write may
    /// have landed. It is never retried automatically.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// A node answered something this client cannot decode, or an answer of the wrong kind.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The client configuration is missing, unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// [`Client::update`](crate::Client::update) found a concurrent write next to its own
    /// on each of its read-backs. Every write it made was applied (the key holds them as
    /// siblings); calling it again resolves them.
    #[error("update: a concurrent write raced each of {attempts} attempts")]
    UpdateConflict {
        /// Writes made.
        attempts: u32,
    },
    /// A typed value (the `serde` feature) could not be encoded, or a stored value does
    /// not decode as the requested type.
    #[error("codec: {0}")]
    Codec(String),
    /// The TLS files named in the configuration could not be loaded (missing file, bad
    /// PEM, a certificate not issued by the CA).
    #[error("TLS: {0}")]
    Tls(#[from] CertificateError),
    /// The coordinating node's disk is full (or below its free-space reserve): it refused
    /// the write, which did not land there. Reads are still served, and the node accepts
    /// writes again by itself once space is freed; retry later or through another node.
    #[error("disk full: the node refuses writes until space is freed on its data directory")]
    DiskFull,
    /// A [`Session`](crate::Session) read found no answer that includes what the session
    /// wrote and read of the key, after asking up to `r` of the key's `n` replicas: the
    /// replicas holding the session's writes were not reached (under a sloppy quorum a
    /// write acknowledged by fallbacks is on no primary until its hints are delivered).
    /// Nothing older was returned. Retrying later may succeed (hints are delivered,
    /// partitions heal), so it is [retryable](ClientError::is_retryable).
    #[error("session: no read of the key up to R = {r} of N = {n} replicas covered the session's writes and reads{}", last_error.as_ref().map(|e| format!(" (last read: {e})")).unwrap_or_default())]
    NotCovered {
        /// The key read.
        key: Vec<u8>,
        /// The largest R asked.
        r: u8,
        /// Replicas per key.
        n: u8,
        /// The error of the last read, when an escalated read failed.
        last_error: Option<String>,
    },
    /// The cluster refused a layout change (`stage_*`, `plan`, `commit`): the change is
    /// not allowed (fewer than N members would remain, an id already a member, nothing
    /// staged, a commit planned on another version...). Nothing changed. The text is the
    /// node's; it names the current layout version when that was the reason. Trying
    /// again unchanged fails the same way: it is not retryable.
    #[error("layout change refused: {0}")]
    LayoutRefused(String),
    /// A node refused a request made under an older layout than its own (it is at
    /// version `current`). Nothing was done there; the client fetches the newer layout
    /// before it routes again, so the call is [retryable](ClientError::is_retryable).
    #[error("stale layout: this node is at layout version {current}")]
    StaleLayout {
        /// The refusing node's layout version.
        current: u64,
    },
    /// The node belongs to another cluster, or to one with other settings (cluster id,
    /// partition count, N): check the client's seeds. Not retryable.
    #[error("cluster settings differ: {0}")]
    ClusterMismatch(String),
    /// A commit naming its plan ([`Client::commit_plan`](crate::Client::commit_plan))
    /// found other changes staged on the node: another operator unstaged or restaged
    /// there since the plan was made. Nothing changed; [`plan`](crate::Client::plan)
    /// again, review the changes staged now (plan `staged`) and commit that plan. Not
    /// retryable.
    #[error("the changes staged now are plan {staged}, not plan {planned}: they changed since that plan (another operator unstaged or restaged on this node); nothing was committed, run `shoal cluster plan` again")]
    PlanChanged {
        /// The plan the commit named.
        planned: PlanId,
        /// The plan of the changes staged now.
        staged: PlanId,
    },
}

fn fmt_addrs(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "no address".to_owned();
    }
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ClientError {
    /// A short stable label for the `result` label of the client metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ClientError::Unavailable { .. } => "unavailable",
            ClientError::Timeout { .. } => "timeout",
            ClientError::KeyTooLarge { .. }
            | ClientError::EmptyKey
            | ClientError::ValueTooLarge { .. }
            | ClientError::ObjectTooLarge { .. }
            | ClientError::TooManySiblings { .. }
            | ClientError::InvalidOptions(_)
            | ClientError::InvalidContext(_)
            | ClientError::UnknownNode(_) => "invalid",
            ClientError::Overloaded => "overloaded",
            ClientError::NotAllowed(_) => "refused",
            ClientError::Server(_) => "server_error",
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Transport(_) => "transport_error",
            ClientError::Protocol(_) => "protocol_error",
            ClientError::Config(_) | ClientError::Tls(_) => "config",
            ClientError::DiskFull => "disk_full",
            ClientError::UpdateConflict { .. } => "conflict",
            ClientError::Codec(_) => "codec",
            ClientError::NotCovered { .. } => "not_covered",
            ClientError::LayoutRefused(_) => "layout_refused",
            ClientError::StaleLayout { .. } => "stale_layout",
            ClientError::ClusterMismatch(_) => "cluster_mismatch",
            ClientError::PlanChanged { .. } => "plan_changed",
        }
    }

    /// Whether trying the same call again later may succeed: the cluster was busy
    /// ([`Overloaded`](ClientError::Overloaded)), too few replicas or nodes were reachable
    /// ([`Unavailable`](ClientError::Unavailable), [`Unreachable`](ClientError::Unreachable)),
    /// or the answer did not come in time ([`Timeout`](ClientError::Timeout),
    /// [`Transport`](ClientError::Transport)), or a session read was not covered yet
    /// ([`NotCovered`](ClientError::NotCovered)), or a node was at a newer layout
    /// ([`StaleLayout`](ClientError::StaleLayout): the client refreshed its routing). Whether a *write* may be sent again also
    /// depends on [`is_not_applied`](ClientError::is_not_applied); the
    /// [`RetryPolicy`](crate::RetryPolicy) checks both.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Overloaded
                | ClientError::Unavailable { .. }
                | ClientError::Unreachable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Transport(_)
                | ClientError::DiskFull
                | ClientError::Server(RequestError::Incomplete { .. })
                | ClientError::NotCovered { .. }
                | ClientError::StaleLayout { .. }
        )
    }

    /// Whether the failed call certainly changed nothing, so that a write can be sent
    /// again without risk of applying it twice.
    ///
    /// True for [`Overloaded`](ClientError::Overloaded) (refused at admission, before
    /// coordinating), [`Unreachable`](ClientError::Unreachable) (delivered nowhere),
    /// [`Unavailable`](ClientError::Unavailable) (the coordinator found too few replicas
    /// before writing anything; a write whose replicas fail after the coordinator stored
    /// it answers `Incomplete` instead, see below), [`DiskFull`](ClientError::DiskFull)
    /// (the coordinator's store refused it), [`StaleLayout`](ClientError::StaleLayout)
    /// and [`ClusterMismatch`](ClientError::ClusterMismatch) (refused before anything
    /// was done), [`LayoutRefused`](ClientError::LayoutRefused) and
    /// [`PlanChanged`](ClientError::PlanChanged) (nothing changed) and
    /// requests refused as invalid before anything was done. **False** for [`Timeout`](ClientError::Timeout),
    /// [`Transport`](ClientError::Transport) and the server's `Incomplete` (the write
    /// reached fewer replicas than it needed and spreads from them), whose outcome is
    /// unknown.
    pub fn is_not_applied(&self) -> bool {
        matches!(
            self,
            ClientError::Overloaded
                | ClientError::Unreachable { .. }
                | ClientError::Unavailable { .. }
                | ClientError::DiskFull
                | ClientError::KeyTooLarge { .. }
                | ClientError::EmptyKey
                | ClientError::ValueTooLarge { .. }
                | ClientError::TooManySiblings { .. }
                | ClientError::InvalidOptions(_)
                | ClientError::InvalidContext(_)
                | ClientError::NotAllowed(_)
                | ClientError::UnknownNode(_)
                | ClientError::Config(_)
                | ClientError::Tls(_)
                | ClientError::LayoutRefused(_)
                | ClientError::StaleLayout { .. }
                | ClientError::ClusterMismatch(_)
                | ClientError::PlanChanged { .. }
        )
    }

    /// True for errors of the client's own configuration (config file, TLS files), as
    /// opposed to a request that failed.
    pub fn is_config(&self) -> bool {
        matches!(self, ClientError::Config(_) | ClientError::Tls(_))
    }
}

impl From<RequestError> for ClientError {
    fn from(e: RequestError) -> ClientError {
        match e {
            RequestError::Unavailable { needed, alive } => {
                ClientError::Unavailable { needed, alive }
            }
            RequestError::Timeout { acks, needed } => ClientError::Timeout { acks, needed },
            RequestError::KeyTooLarge { len, max } => ClientError::KeyTooLarge { len, max },
            RequestError::EmptyKey => ClientError::EmptyKey,
            RequestError::ValueTooLarge { len, max } => ClientError::ValueTooLarge { len, max },
            RequestError::ObjectTooLarge { len, max } => ClientError::ObjectTooLarge { len, max },
            RequestError::TooManySiblings { siblings, limit } => {
                ClientError::TooManySiblings { siblings, limit }
            }
            RequestError::InvalidOptions(m) => ClientError::InvalidOptions(m),
            RequestError::InvalidContext(m) => ClientError::InvalidContext(m),
            RequestError::Overloaded => ClientError::Overloaded,
            RequestError::NotAllowed(m) => ClientError::NotAllowed(m),
            RequestError::DiskFull => ClientError::DiskFull,
            RequestError::LayoutRefused(m) => ClientError::LayoutRefused(m),
            RequestError::StaleLayout { current } => ClientError::StaleLayout { current },
            RequestError::ClusterMismatch(m) => ClientError::ClusterMismatch(m),
            RequestError::PlanChanged { planned, staged } => {
                ClientError::PlanChanged { planned, staged }
            }
            other => ClientError::Server(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors_map_to_specific_variants_with_the_same_text() {
        let cases = [
            RequestError::Unavailable {
                needed: 2,
                alive: 1,
            },
            RequestError::Timeout { acks: 1, needed: 2 },
            RequestError::KeyTooLarge {
                len: 5000,
                max: 4096,
            },
            RequestError::EmptyKey,
            RequestError::ValueTooLarge { len: 10, max: 5 },
            RequestError::ObjectTooLarge { len: 10, max: 5 },
            RequestError::TooManySiblings {
                siblings: 101,
                limit: 100,
            },
            RequestError::InvalidOptions("r must be in 1..=3, got 4".into()),
            RequestError::InvalidContext("bad".into()),
            RequestError::Overloaded,
            RequestError::NotAllowed("client".into()),
            RequestError::DiskFull,
            RequestError::LayoutRefused("nothing is staged".into()),
            RequestError::StaleLayout { current: 7 },
            RequestError::ClusterMismatch("n 3 != 5".into()),
            RequestError::PlanChanged {
                planned: PlanId(1),
                staged: PlanId(2),
            },
        ];
        for e in cases {
            let text = e.to_string();
            let mapped = ClientError::from(e);
            assert!(!matches!(mapped, ClientError::Server(_)), "{mapped:?}");
            assert_eq!(mapped.to_string(), text);
        }
        assert_eq!(
            ClientError::from(RequestError::Unavailable {
                needed: 2,
                alive: 1
            })
            .to_string(),
            "unavailable: 2 replicas needed, 1 reachable"
        );
    }

    #[test]
    fn other_request_errors_are_server_errors() {
        assert!(matches!(
            ClientError::from(RequestError::ShuttingDown),
            ClientError::Server(RequestError::ShuttingDown)
        ));
        assert!(matches!(
            ClientError::from(RequestError::Storage("disk".into())),
            ClientError::Server(RequestError::Storage(_))
        ));
    }

    #[test]
    fn layout_errors_keep_the_server_text_and_only_a_stale_layout_is_retried() {
        let refused = ClientError::from(RequestError::LayoutRefused(
            "the layout is at version 3, not 99: plan again".into(),
        ));
        assert!(matches!(&refused, ClientError::LayoutRefused(m) if m.contains("version 3")));
        assert_eq!(
            refused.to_string(),
            "layout change refused: the layout is at version 3, not 99: plan again"
        );
        assert!(!refused.is_retryable());
        assert!(refused.is_not_applied());
        assert_eq!(refused.label(), "layout_refused");

        let stale = ClientError::from(RequestError::StaleLayout { current: 4 });
        assert!(matches!(stale, ClientError::StaleLayout { current: 4 }));
        assert!(stale.is_retryable());
        assert!(stale.is_not_applied());
        let policy = crate::RetryPolicy::default();
        assert!(
            policy.should_retry(&stale, 1, true),
            "nothing was written: a write may go again"
        );

        let mismatch = ClientError::from(RequestError::ClusterMismatch("n 3 != 5".into()));
        assert!(matches!(&mismatch, ClientError::ClusterMismatch(m) if m == "n 3 != 5"));
        assert!(!mismatch.is_retryable());
        assert!(!policy.should_retry(&mismatch, 1, false));
        assert_eq!(mismatch.label(), "cluster_mismatch");

        let changed = ClientError::from(RequestError::PlanChanged {
            planned: PlanId(0xab),
            staged: PlanId(0xcd),
        });
        assert!(matches!(
            changed,
            ClientError::PlanChanged {
                planned: PlanId(0xab),
                staged: PlanId(0xcd)
            }
        ));
        assert!(
            changed.to_string().contains("plan 00000000000000cd"),
            "{changed}"
        );
        assert!(!changed.is_retryable());
        assert!(changed.is_not_applied());
        assert!(!policy.should_retry(&changed, 1, true));
        assert_eq!(changed.label(), "plan_changed");
    }

    #[test]
    fn unreachable_lists_the_addresses_tried() {
        let e = ClientError::Unreachable {
            tried: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            last: "refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "no node reachable (tried 127.0.0.1:1, 127.0.0.1:2): refused"
        );
    }
}
