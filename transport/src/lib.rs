//! Shoal's QUIC transport: quinn endpoints, mutual TLS with node and client roles,
//! request/response framing, and a bounded connection cache. Used by the node (serving
//! and node-to-node requests) and by the client SDK.
//!
//! # Roles
//!
//! Every connection is mutual TLS 1.3 under one cluster CA, the only trust anchor. A
//! certificate says who its holder is with exactly one URI subject alternative name:
//!
//! - `shoal://node/<node-id>`: a cluster member ([`PeerRole::Node`]); node certificates
//!   also carry the DNS SAN `shoal-node` ([`NODE_SERVER_NAME`]), the TLS server
//!   name every dialer uses, and are valid for server and client authentication;
//! - `shoal://client/<name>`: an SDK or CLI user ([`PeerRole::Client`]), valid for client
//!   authentication only. Names follow the node id rules.
//!
//! A certificate with no such URI, several, or an unknown kind is refused during the
//! handshake, on both sides. A server requires a client certificate chained to the CA
//! (rustls `WebPkiClientVerifier`), so a certificate from another CA never gets a stream.
//! The server hands the peer's role to its [`Handler`] with every request; the node layer
//! decides what each role may do (a client may never send node-to-node messages). A
//! dialer checks, on every connection, that the server is a node, and on every request
//! that it is the expected node when an id is given ([`TransportError::PeerRole`]).
//! Both sides offer and require the ALPN protocol `shoal/1` ([`ALPN`]).
//!
//! [`certs`] makes a development CA and issues node and client certificates (ECDSA P-256,
//! PEM files, keys mode 0600); [`TlsIdentity`] loads them.
//!
//! # Framing
//!
//! One bidirectional QUIC stream per request. Each direction carries exactly one frame,
//! a big-endian `u32` payload length then the payload, and then ends. A frame larger than
//! [`TransportConfig::max_frame_bytes`] (default 8 MiB + 64 KiB), a stream that ends early
//! and bytes after the frame are errors ([`TransportError::FrameTooLarge`],
//! [`TransportError::Truncated`], [`TransportError::TrailingData`]) that abort that stream
//! only, with a [`StreamErrorCode`] telling the peer why; the connection and the endpoint
//! go on serving. Payload memory grows as bytes arrive, never from the announced length.
//!
//! # Bounds
//!
//! Everything has a limit, set in [`TransportConfig`]: frame size, concurrent streams per
//! connection (the QUIC stream limit; more requests wait for credit), incoming
//! connections per server (more are refused), cached outgoing connections (least
//! recently used evicted), connect timeout, per-request timeout, QUIC idle timeout with
//! keep-alive. Incoming unidirectional streams and datagrams are not allowed. The request
//! payloads one connection can make a server hold are at most `max_concurrent_streams ×
//! max_frame_bytes`. [`Endpoint::request`]'s timeout bounds the whole call, connecting
//! included; connecting is also bounded by `connect_timeout`.
//!
//! # Errors
//!
//! [`TransportError`] separates requests that certainly did not reach the peer's handler
//! ([`Connect`](TransportError::Connect): could not reach;
//! [`Handshake`](TransportError::Handshake): TLS refused; [`PeerRole`](TransportError::PeerRole))
//! from those whose outcome is unknown ([`Timeout`](TransportError::Timeout): sent, no
//! answer in time; [`Closed`](TransportError::Closed);
//! [`PeerRestarted`](TransportError::PeerRestarted): the connection belonged to a
//! previous process of the peer, which may have run the request;
//! [`StreamAborted`](TransportError::StreamAborted)); see
//! [`TransportError::is_not_delivered`]. Certificate problems are [`CertificateError`]s.
//! Malformed input from a peer is logged at debug level and counted, never a panic.
//!
//! # Metrics
//!
//! `shoal_transport_requests_total{direction,result}`,
//! `shoal_transport_request_duration_seconds`, `shoal_transport_connections`,
//! `shoal_transport_handshake_failures_total{reason}`,
//! `shoal_transport_frame_errors_total{kind}`, `shoal_transport_bytes_total{direction}`;
//! see [`metrics`].

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod admission;
mod cache;
#[cfg(feature = "certs")]
pub mod certs;
mod config;
mod endpoint;
mod error;
mod frame;
mod identity;
pub mod metrics;
mod pem;
mod role;
mod server;
mod socket;
#[cfg(feature = "test-util")]
pub mod test_util;
mod tls;

pub use config::{TransportConfig, DEFAULT_MAX_FRAME_BYTES};
pub use endpoint::Endpoint;
pub use error::{CertificateError, StreamErrorCode, TransportError};
pub use frame::FrameDecoder;
pub use identity::{certificate_file_not_after, CertificateExpiry, TlsIdentity};
pub use pem::NODE_SERVER_NAME;
pub use role::{PeerRole, RoleError, CLIENT_URI_PREFIX, NODE_URI_PREFIX};
pub use server::Handler;
pub use tls::ALPN;

#[cfg(all(test, feature = "certs"))]
mod tests;
#[cfg(all(test, feature = "certs"))]
mod tests_hostile;
