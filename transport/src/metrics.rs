//! Transport metrics, recorded through the `metrics` facade (a no-op until the binary
//! installs a recorder).

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use shoal_metric_handles::Handles;

// The per-request metrics' handles, resolved once per label set (the node installs its
// recorder before it serves; see `shoal_metric_handles`).
static REQUESTS: Handles<Counter, 2> = Handles::counter(REQUESTS_TOTAL, ["direction", "result"]);
static DURATION: Handles<Histogram, 0> = Handles::histogram(REQUEST_DURATION_SECONDS, []);
static BYTES: Handles<Counter, 1> = Handles::counter(BYTES_TOTAL, ["direction"]);
static INFLIGHT: Handles<Gauge, 1> = Handles::gauge(INFLIGHT_BYTES, ["role"]);

/// Requests, by `direction` (`out`: sent by us, `in`: served) and `result` (`ok` or an
/// error label).
pub const REQUESTS_TOTAL: &str = "shoal_transport_requests_total";
/// Duration of outgoing requests, connect included, in seconds.
pub const REQUEST_DURATION_SECONDS: &str = "shoal_transport_request_duration_seconds";
/// Open QUIC connections, both directions.
pub const CONNECTIONS: &str = "shoal_transport_connections";
/// Failed handshakes, by `reason` (`tls`, `timeout`, `peer_role`, `alpn`, `refused`,
/// `other`).
pub const HANDSHAKE_FAILURES_TOTAL: &str = "shoal_transport_handshake_failures_total";
/// Invalid frames, by `kind` (`too_large`, `truncated`, `trailing_data`).
pub const FRAME_ERRORS_TOTAL: &str = "shoal_transport_frame_errors_total";
/// Cached connections closed because the peer sent nothing during a timed-out request
/// (killed, stopped or partitioned away); the next request dials again.
pub const UNRESPONSIVE_CONNECTIONS_TOTAL: &str = "shoal_transport_unresponsive_connections_total";
/// Requests whose connection the peer reset as unknown (a node restarted with its key),
/// by `outcome` (`resent`: sent again to the new process, the request being idempotent;
/// `failed`: answered `peer_restarted`).
pub const PEER_RESTARTS_TOTAL: &str = "shoal_transport_peer_restarts_total";
/// Frame bytes (prefix included), by `direction` (`out`: written, `in`: read).
pub const BYTES_TOTAL: &str = "shoal_transport_bytes_total";

/// Bytes of requests and responses a server holds in flight, by `role` (`client`,
/// `peer`); bounded by the transport's `max_{client,peer}_inflight_bytes`.
pub const INFLIGHT_BYTES: &str = "shoal_transport_inflight_bytes";
/// Requests refused by a server before their body was read, by `reason`
/// (`memory`: the in-flight byte budget is spent).
pub const REQUESTS_REFUSED_TOTAL: &str = "shoal_transport_requests_refused_total";
/// Connections a server refused or closed for a limit, by `reason` (`address_limit`,
/// `client_limit`, `client_name_limit`, `peer_limit`, `idle`).
pub const CONNECTIONS_REFUSED_TOTAL: &str = "shoal_transport_connections_refused_total";
/// Streams a server aborted because the peer was too slow, by `phase` (`read`: the
/// request stopped arriving; `write`: the peer stopped reading the response).
pub const STREAM_TIMEOUTS_TOTAL: &str = "shoal_transport_stream_timeouts_total";
/// Incoming connections asked to prove their address (QUIC Retry) during a handshake flood.
pub const RETRIES_TOTAL: &str = "shoal_transport_retries_total";
/// Datagrams QUIC declared lost on this endpoint's connections (what they carried is
/// sent again), by the peer's kind.
pub const LOST_DATAGRAMS_TOTAL: &str = "shoal_transport_lost_datagrams_total";

/// How often an open connection's losses are read into [`LOST_DATAGRAMS_TOTAL`] (and once
/// more when it closes).
const LOSS_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Registers descriptions of the transport metrics with the installed recorder; call
/// once at startup, after installing the recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "Transport requests by direction (out = sent, in = served) and result"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Duration of outgoing transport requests, connection setup included"
    );
    metrics::describe_gauge!(CONNECTIONS, "Open QUIC connections, both directions");
    metrics::describe_counter!(
        HANDSHAKE_FAILURES_TOTAL,
        "Failed QUIC/TLS handshakes and refused peers by reason"
    );
    metrics::describe_counter!(FRAME_ERRORS_TOTAL, "Invalid frames received by kind");
    metrics::describe_counter!(
        LOST_DATAGRAMS_TOTAL,
        "Datagrams QUIC declared lost on this endpoint's connections (their contents \
         resent), by the peer's kind"
    );
    metrics::describe_counter!(
        UNRESPONSIVE_CONNECTIONS_TOTAL,
        "Cached connections closed because the peer sent nothing during a timed-out request"
    );
    metrics::describe_counter!(
        PEER_RESTARTS_TOTAL,
        "Requests whose connection a restarted peer reset, by outcome (resent or failed)"
    );
    metrics::describe_gauge!(
        INFLIGHT_BYTES,
        metrics::Unit::Bytes,
        "Bytes of requests and responses held in flight by role"
    );
    metrics::describe_counter!(
        REQUESTS_REFUSED_TOTAL,
        "Requests refused before their body was read, by reason"
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "Connections refused or closed for a limit, by reason"
    );
    metrics::describe_counter!(
        STREAM_TIMEOUTS_TOTAL,
        "Streams aborted because the peer was too slow, by phase"
    );
    metrics::describe_counter!(
        RETRIES_TOTAL,
        "Incoming connections asked to prove their address during a handshake flood"
    );
    metrics::describe_counter!(
        BYTES_TOTAL,
        metrics::Unit::Bytes,
        "Frame bytes written (out) and read (in)"
    );
}

pub(crate) fn request(direction: &'static str, result: &'static str) {
    REQUESTS.get([direction, result]).increment(1);
}

pub(crate) fn request_duration(elapsed: Duration) {
    DURATION.one().record(elapsed.as_secs_f64());
}

pub(crate) fn connection_opened() {
    metrics::gauge!(CONNECTIONS).increment(1.0);
}

pub(crate) fn connection_closed() {
    metrics::gauge!(CONNECTIONS).decrement(1.0);
}

pub(crate) fn handshake_failure(reason: &'static str) {
    metrics::counter!(HANDSHAKE_FAILURES_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn unresponsive_connection() {
    metrics::counter!(UNRESPONSIVE_CONNECTIONS_TOTAL).increment(1);
}

pub(crate) fn peer_restarted(outcome: &'static str) {
    metrics::counter!(PEER_RESTARTS_TOTAL, "outcome" => outcome).increment(1);
}

pub(crate) fn frame_error(kind: &'static str) {
    metrics::counter!(FRAME_ERRORS_TOTAL, "kind" => kind).increment(1);
}

pub(crate) fn bytes(direction: &'static str, frame_payload_len: usize) {
    let total = (frame_payload_len + crate::frame::PREFIX_BYTES) as u64;
    BYTES.get([direction]).increment(total);
}

/// Counts the datagrams QUIC declares lost on `connection` into [`LOST_DATAGRAMS_TOTAL`]
/// (read every [`LOSS_SAMPLE_INTERVAL`] and when the connection closes), until it closes.
/// `peer` is the peer's kind ([`crate::PeerRole::kind`]).
pub(crate) async fn count_losses(connection: quinn::Connection, peer: &'static str) {
    let lost = metrics::counter!(LOST_DATAGRAMS_TOTAL, "peer" => peer);
    let mut counted = 0;
    let mut sample = tokio::time::interval(LOSS_SAMPLE_INTERVAL);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let closed = tokio::select! {
            _ = connection.closed() => true,
            _ = sample.tick() => false,
        };
        let now = connection.stats().path.lost_packets;
        lost.increment(now.saturating_sub(counted));
        counted = counted.max(now);
        if closed {
            return;
        }
    }
}

/// Guard that keeps a connection counted in [`CONNECTIONS`] until dropped.
pub(crate) struct OpenConnection(());

impl OpenConnection {
    pub(crate) fn new() -> Self {
        connection_opened();
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        connection_closed();
    }
}

pub(crate) fn inflight_bytes(role: &'static str, bytes: f64) {
    INFLIGHT.get([role]).set(bytes);
}

pub(crate) fn request_refused(reason: &'static str) {
    metrics::counter!(REQUESTS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn connection_refused(reason: &'static str) {
    metrics::counter!(CONNECTIONS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn stream_timeout(phase: &'static str) {
    metrics::counter!(STREAM_TIMEOUTS_TOTAL, "phase" => phase).increment(1);
}

pub(crate) fn retry() {
    metrics::counter!(RETRIES_TOTAL).increment(1);
}
