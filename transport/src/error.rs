//! Error types of the transport: one enum for certificate material, one for endpoints.

use std::{io, net::SocketAddr, path::PathBuf, time::Duration};

use crate::role::{PeerRole, RoleError};

/// Errors creating, issuing or loading certificates and keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// A file that must exist is missing (for example `ca.pem` when issuing a certificate).
    #[error("missing {what} file {}", path.display())]
    MissingFile {
        /// What the file should hold (`"CA certificate"`, `"private key"`, ...).
        what: &'static str,
        /// The path that does not exist.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file or directory could not be created or written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The output file already exists; key material is never silently overwritten.
    #[error("{} already exists; refusing to overwrite certificate or key material", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The text is not valid PEM.
    #[error("{what} is not valid PEM: {reason}")]
    InvalidPem {
        /// Which input (a path or a description).
        what: String,
        /// The parser's message.
        reason: String,
    },
    /// The PEM is valid but holds no item of the needed kind.
    #[error("{what} contains no {item}")]
    Empty {
        /// Which input.
        what: String,
        /// The kind of item missing (`"certificate"`, `"private key"`).
        item: &'static str,
    },
    /// A certificate cannot be parsed as X.509, or is unusable for its purpose.
    #[error("{what} is not a usable certificate: {reason}")]
    InvalidCertificate {
        /// Which input.
        what: String,
        /// Why.
        reason: String,
    },
    /// The certificate carries no valid Shoal role (see [`PeerRole`]).
    #[error("certificate has no valid Shoal role: {0}")]
    Role(#[from] RoleError),
    /// A node id or client name cannot be used in a certificate.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// `"node"` or `"client"`.
        kind: &'static str,
        /// The refused name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The CA private key does not belong to the CA certificate.
    #[error("the CA private key does not match the CA certificate")]
    CaKeyMismatch,
    /// rcgen failed to generate a key or sign a certificate.
    #[cfg(feature = "certs")]
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
}

/// Abort codes a Shoal endpoint puts on a stream it refuses (QUIC `RESET_STREAM` /
/// `STOP_SENDING`), so the other side knows why its request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamErrorCode {
    /// A frame was larger than the receiver's `max_frame_bytes`.
    FrameTooLarge,
    /// The stream ended before a complete frame arrived.
    Truncated,
    /// Bytes followed the single frame a stream direction may carry.
    TrailingData,
    /// The sender gave up on the request (timeout or shutdown).
    Cancelled,
    /// The server failed while handling the request (its handler panicked).
    Internal,
    /// The server refused the request before reading its body: its in-flight byte budget
    /// is spent. Nothing ran; retry later or elsewhere.
    Overloaded,
    /// The server gave up on a stream that was too slow: the request stopped arriving or
    /// the response was not read in time.
    TimedOut,
    /// The server ran the request but dropped its response, for lack of room in its
    /// in-flight byte budget: the outcome is unknown to the client (a write may have
    /// landed).
    ResponseDropped,
    /// A code this version does not know (from a newer peer, or quinn's implicit 0).
    Unknown(u64),
}

impl StreamErrorCode {
    /// The numeric QUIC application error code.
    pub fn code(self) -> u64 {
        match self {
            StreamErrorCode::FrameTooLarge => 1,
            StreamErrorCode::Truncated => 2,
            StreamErrorCode::TrailingData => 3,
            StreamErrorCode::Cancelled => 4,
            StreamErrorCode::Internal => 5,
            StreamErrorCode::Overloaded => 6,
            StreamErrorCode::TimedOut => 7,
            StreamErrorCode::ResponseDropped => 8,
            StreamErrorCode::Unknown(code) => code,
        }
    }

    /// Decodes a numeric code.
    pub fn from_code(code: u64) -> StreamErrorCode {
        match code {
            1 => StreamErrorCode::FrameTooLarge,
            2 => StreamErrorCode::Truncated,
            3 => StreamErrorCode::TrailingData,
            4 => StreamErrorCode::Cancelled,
            5 => StreamErrorCode::Internal,
            6 => StreamErrorCode::Overloaded,
            7 => StreamErrorCode::TimedOut,
            8 => StreamErrorCode::ResponseDropped,
            other => StreamErrorCode::Unknown(other),
        }
    }

    /// The code as a quinn `VarInt` (all our codes are small).
    pub(crate) fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u64(self.code()).unwrap_or(quinn::VarInt::from_u32(0))
    }
}

impl std::fmt::Display for StreamErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamErrorCode::FrameTooLarge => f.write_str("frame too large"),
            StreamErrorCode::Truncated => f.write_str("truncated frame"),
            StreamErrorCode::TrailingData => f.write_str("trailing data after frame"),
            StreamErrorCode::Cancelled => f.write_str("cancelled"),
            StreamErrorCode::Internal => f.write_str("internal error while handling the request"),
            StreamErrorCode::Overloaded => {
                f.write_str("overloaded: the request was refused before it was read")
            }
            StreamErrorCode::TimedOut => f.write_str("the stream was too slow"),
            StreamErrorCode::ResponseDropped => {
                f.write_str("the response was dropped for lack of memory; the outcome is unknown")
            }
            StreamErrorCode::Unknown(code) => write!(f, "unknown code {code}"),
        }
    }
}

/// Errors of endpoints, connections and requests.
///
/// For a request, the variants split in two groups that the replication layer treats
/// differently:
/// - *not delivered*: [`Connect`](Self::Connect), [`Handshake`](Self::Handshake),
///   [`PeerRole`](Self::PeerRole), [`EndpointClosed`](Self::EndpointClosed): the request
///   never reached the peer's handler (see [`TransportError::is_not_delivered`]);
/// - *outcome unknown*: [`Timeout`](Self::Timeout), [`Closed`](Self::Closed),
///   [`StreamAborted`](Self::StreamAborted) and frame errors: the handler may or may not
///   have run. (An oversized request is refused before sending, but `FrameTooLarge` is
///   also what an oversized response gives, so it is conservatively in this group.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The [`TransportConfig`](crate::TransportConfig) is inconsistent.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// An endpoint was created outside a tokio runtime.
    #[error("no tokio runtime: endpoints must be created inside a tokio runtime")]
    NoRuntime,
    /// A socket operation failed (binding the UDP socket, reading its address).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Certificate or key material is missing or invalid.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// rustls or quinn refused the TLS configuration built from the identity (for example
    /// a private key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The local identity has the wrong role for this endpoint: a server must present a
    /// node certificate, because every dialer checks that it talks to a node.
    #[error("this endpoint needs a {needed} certificate but the identity is {found}")]
    LocalRole {
        /// The role kind needed.
        needed: &'static str,
        /// The role of the identity given.
        found: PeerRole,
    },
    /// The peer could not be reached: no connection within the connect timeout, nothing
    /// answering, or the address is unusable. The request was not sent.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The peer address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The peer answered but mutual TLS failed: a certificate from another CA, an expired or
    /// role-less certificate, or no common ALPN protocol. The request was not processed.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake {
        /// The peer address.
        addr: SocketAddr,
        /// The TLS or QUIC error.
        reason: String,
    },
    /// The peer authenticated with a valid certificate whose role is not the one needed
    /// (a client certificate where a node was expected, or another node id). The request
    /// was not sent.
    #[error("peer {addr} is {found}, expected {expected}")]
    PeerRole {
        /// The peer address.
        addr: SocketAddr,
        /// What was expected (`"a node"` or `"node <id>"`).
        expected: String,
        /// The role the peer's certificate carries.
        found: PeerRole,
    },
    /// The request was sent (at least partly) but no complete response came back within
    /// the request timeout. The handler may have run.
    #[error("no response from {addr} within {after:?}")]
    Timeout {
        /// The peer address.
        addr: SocketAddr,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The connection was lost while the request was in flight (peer closed it, idle
    /// timeout, stateless reset). The handler may have run.
    #[error("connection to {addr} closed during the request: {reason}")]
    Closed {
        /// The peer address.
        addr: SocketAddr,
        /// Why the connection ended.
        reason: String,
    },
    /// The peer has no state for the connection any more: it answered with a stateless
    /// reset made with its key, as a node restarted with its key does for connections
    /// to its previous process. The request never reached the new process; the
    /// previous one may have run it before it stopped.
    #[error("{addr} no longer knows the connection (a stateless reset: the node restarted)")]
    PeerRestarted {
        /// The peer address.
        addr: SocketAddr,
    },
    /// The peer aborted the request's stream with a Shoal error code, for example
    /// because our request frame exceeded its frame limit.
    #[error("peer {addr} aborted the stream: {code}")]
    StreamAborted {
        /// The peer address.
        addr: SocketAddr,
        /// The reason code the peer sent.
        code: StreamErrorCode,
    },
    /// A frame is larger than the configured `max_frame_bytes` (an outgoing request is
    /// checked before anything is sent; an incoming frame is refused after its length
    /// prefix).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced or actual length of the frame payload.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// The stream ended before a complete frame (length prefix and payload) arrived.
    #[error("truncated frame: expected {expected} bytes, got {received}")]
    Truncated {
        /// Bytes expected (4 for the prefix, or prefix + payload).
        expected: u64,
        /// Bytes received before the end of the stream.
        received: u64,
    },
    /// More bytes followed the one frame a stream direction may carry.
    #[error("unexpected data after the frame")]
    TrailingData,
    /// The server refused the connection for a limit (too many connections from this
    /// client, address or role). The request was not served; retry later.
    #[error("{addr} refused the connection: {reason}")]
    Refused {
        /// The peer address.
        addr: SocketAddr,
        /// The server's reason.
        reason: String,
    },
    /// The server closed the connection as idle while the request was being sent; the
    /// request was not served ([`Endpoint::request`](crate::Endpoint::request) retries
    /// once on a new connection).
    #[error("{addr} closed the connection as idle")]
    IdleClosed {
        /// The peer address.
        addr: SocketAddr,
    },
    /// The local endpoint is closed (or closing); no new request can start.
    #[error("endpoint is closed")]
    EndpointClosed,
    /// [`Endpoint::reload`](crate::Endpoint::reload) was given certificates of another
    /// role or name than the endpoint's; the old ones stay in use.
    #[error("new certificate is for {new}, but this endpoint is {current}")]
    IdentityChanged {
        /// The role the endpoint was made with.
        current: PeerRole,
        /// The role of the new certificate.
        new: PeerRole,
    },
}

impl TransportError {
    /// True when the request certainly did not reach the peer's handler, so retrying it
    /// elsewhere cannot duplicate its effect.
    pub fn is_not_delivered(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. }
                | TransportError::Handshake { .. }
                | TransportError::PeerRole { .. }
                | TransportError::EndpointClosed
                | TransportError::Config(_)
                | TransportError::NoRuntime
                | TransportError::Io { .. }
                | TransportError::Certificate(_)
                | TransportError::TlsConfig(_)
                | TransportError::LocalRole { .. }
                | TransportError::IdentityChanged { .. }
                | TransportError::Refused { .. }
                | TransportError::IdleClosed { .. }
                | TransportError::StreamAborted {
                    code: StreamErrorCode::Overloaded,
                    ..
                }
        )
    }

    /// The same error again, for each request one failed frame carried (a client
    /// batch): the same variant and details, so that each request's caller reads the
    /// same [`is_not_delivered`](Self::is_not_delivered) and [`label`](Self::label).
    /// Errors of local set-up that hold a non-cloneable source keep its text (a
    /// certificate error becomes [`TlsConfig`](Self::TlsConfig), also not delivered).
    pub fn duplicate(&self) -> TransportError {
        use TransportError as E;
        match self {
            E::Config(m) => E::Config(m.clone()),
            E::NoRuntime => E::NoRuntime,
            E::Io { context, source } => E::Io {
                context,
                source: io::Error::new(source.kind(), source.to_string()),
            },
            E::Certificate(e) => E::TlsConfig(e.to_string()),
            E::TlsConfig(m) => E::TlsConfig(m.clone()),
            E::LocalRole { needed, found } => E::LocalRole {
                needed,
                found: found.clone(),
            },
            E::Connect { addr, reason } => E::Connect {
                addr: *addr,
                reason: reason.clone(),
            },
            E::Handshake { addr, reason } => E::Handshake {
                addr: *addr,
                reason: reason.clone(),
            },
            E::PeerRole {
                addr,
                expected,
                found,
            } => E::PeerRole {
                addr: *addr,
                expected: expected.clone(),
                found: found.clone(),
            },
            E::Timeout { addr, after } => E::Timeout {
                addr: *addr,
                after: *after,
            },
            E::Closed { addr, reason } => E::Closed {
                addr: *addr,
                reason: reason.clone(),
            },
            E::PeerRestarted { addr } => E::PeerRestarted { addr: *addr },
            E::StreamAborted { addr, code } => E::StreamAborted {
                addr: *addr,
                code: *code,
            },
            E::FrameTooLarge { len, max } => E::FrameTooLarge {
                len: *len,
                max: *max,
            },
            E::Truncated { expected, received } => E::Truncated {
                expected: *expected,
                received: *received,
            },
            E::TrailingData => E::TrailingData,
            E::Refused { addr, reason } => E::Refused {
                addr: *addr,
                reason: reason.clone(),
            },
            E::IdleClosed { addr } => E::IdleClosed { addr: *addr },
            E::EndpointClosed => E::EndpointClosed,
            E::IdentityChanged { current, new } => E::IdentityChanged {
                current: current.clone(),
                new: new.clone(),
            },
        }
    }

    /// True when the peer refused the request for lack of capacity (before running it).
    pub fn is_overloaded(&self) -> bool {
        matches!(
            self,
            TransportError::StreamAborted {
                code: StreamErrorCode::Overloaded,
                ..
            }
        )
    }

    /// A short stable label for metrics (`result` and `reason` labels).
    pub fn label(&self) -> &'static str {
        match self {
            TransportError::Config(_) => "config",
            TransportError::NoRuntime => "no_runtime",
            TransportError::Io { .. } => "io",
            TransportError::Certificate(_) => "certificate",
            TransportError::TlsConfig(_) => "tls_config",
            TransportError::LocalRole { .. } => "local_role",
            TransportError::IdentityChanged { .. } => "identity_changed",
            TransportError::Connect { .. } => "connect",
            TransportError::Handshake { .. } => "handshake",
            TransportError::PeerRole { .. } => "peer_role",
            TransportError::Timeout { .. } => "timeout",
            TransportError::Closed { .. } => "closed",
            TransportError::PeerRestarted { .. } => "peer_restarted",
            TransportError::StreamAborted { .. } => "stream_aborted",
            TransportError::FrameTooLarge { .. } => "frame_too_large",
            TransportError::Truncated { .. } => "truncated",
            TransportError::TrailingData => "trailing_data",
            TransportError::EndpointClosed => "endpoint_closed",
            TransportError::Refused { .. } => "refused",
            TransportError::IdleClosed { .. } => "idle_closed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_reads_as_the_original() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let errors = [
            TransportError::Connect {
                addr,
                reason: "refused".into(),
            },
            TransportError::Timeout {
                addr,
                after: Duration::from_secs(2),
            },
            TransportError::Closed {
                addr,
                reason: "reset".into(),
            },
            TransportError::StreamAborted {
                addr,
                code: StreamErrorCode::Overloaded,
            },
            TransportError::Io {
                context: "binding",
                source: io::Error::new(io::ErrorKind::AddrInUse, "in use"),
            },
            TransportError::IdleClosed { addr },
            TransportError::PeerRestarted { addr },
            TransportError::EndpointClosed,
        ];
        for e in &errors {
            let copy = e.duplicate();
            assert_eq!(copy.to_string(), e.to_string());
            assert_eq!(copy.label(), e.label());
            assert_eq!(copy.is_not_delivered(), e.is_not_delivered());
            assert_eq!(copy.is_overloaded(), e.is_overloaded());
        }
    }
}
