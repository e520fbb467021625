//! The serving side: accept connections, authenticate the peer's role, and run one task
//! per request stream that calls the [`Handler`].

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{sync::Semaphore, task::JoinSet};
use tracing::{debug, warn};

use crate::{
    error::StreamErrorCode,
    frame::{read_frame, write_frame, ReadFrameError, WriteFrameError},
    metrics::{self, OpenConnection},
    role::PeerRole,
    tls,
};

/// Application close code: the peer's certificate has no usable role.
pub(crate) const CLOSE_PEER_ROLE: u32 = 1;
/// Application close code: the peer did not negotiate ALPN `shoal/1`.
pub(crate) const CLOSE_PROTOCOL: u32 = 2;

/// Serves requests. The node layer implements it and decides what each role may do; the
/// transport guarantees that `peer` is authentic.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request frame from `peer` with one response frame. A response larger
    /// than the endpoint's `max_frame_bytes` is not sent: the stream is aborted with
    /// [`StreamErrorCode::FrameTooLarge`].
    fn handle(&self, peer: PeerRole, request: Vec<u8>) -> impl Future<Output = Vec<u8>> + Send;
}

/// What a serving loop needs, cloned into each connection task.
#[derive(Clone)]
pub(crate) struct ServeContext {
    pub(crate) max_frame_bytes: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) connection_permits: Arc<Semaphore>,
}

/// Accepts connections until the endpoint closes; connection tasks are aborted when the
/// loop ends.
pub(crate) async fn accept_loop<H: Handler>(
    endpoint: quinn::Endpoint,
    context: ServeContext,
    handler: Arc<H>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = context.connection_permits.clone().try_acquire_owned() else {
                    metrics::handshake_failure("refused");
                    debug!(remote = %incoming.remote_address(), "too many connections; refusing");
                    incoming.refuse();
                    continue;
                };
                let context = context.clone();
                let handler = handler.clone();
                connections.spawn(async move {
                    serve_connection(incoming, context, handler).await;
                    drop(permit);
                });
            }
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        warn!("connection task panicked: {e}");
                    }
                }
            }
        }
    }
    connections.shutdown().await;
}

/// Completes the handshake, reads the peer's role, and serves its streams.
async fn serve_connection<H: Handler>(
    incoming: quinn::Incoming,
    context: ServeContext,
    handler: Arc<H>,
) {
    let remote = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            metrics::handshake_failure(handshake_reason(&e));
            debug!(%remote, "incoming connection failed: {e}");
            return;
        }
    };
    let connection = match tokio::time::timeout(context.handshake_timeout, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            metrics::handshake_failure(handshake_reason(&e));
            debug!(%remote, "handshake failed: {e}");
            return;
        }
        Err(_) => {
            metrics::handshake_failure("timeout");
            debug!(%remote, "handshake timed out");
            return;
        }
    };
    if let Err(reason) = tls::check_alpn(&connection) {
        metrics::handshake_failure("alpn");
        connection.close(
            quinn::VarInt::from_u32(CLOSE_PROTOCOL),
            b"ALPN shoal/1 required",
        );
        debug!(%remote, "refused: {reason}");
        return;
    }
    let peer = match tls::peer_role(&connection) {
        Ok(peer) => peer,
        Err(reason) => {
            metrics::handshake_failure("peer_role");
            connection.close(
                quinn::VarInt::from_u32(CLOSE_PEER_ROLE),
                b"certificate has no Shoal role",
            );
            debug!(%remote, "refused: {reason}");
            return;
        }
    };
    let _open = OpenConnection::new();
    debug!(%remote, %peer, "connection accepted");
    // Streams are bounded by the QUIC concurrent stream limit the peer was granted.
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let peer = peer.clone();
                    let handler = handler.clone();
                    let max = context.max_frame_bytes;
                    streams.spawn(serve_stream(send, recv, peer, handler, max));
                }
                Err(e) => {
                    debug!(%remote, "connection ended: {e}");
                    break;
                }
            },
            Some(done) = streams.join_next(), if !streams.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        warn!(%remote, "request handler panicked: {e}");
                        metrics::request("in", "panic");
                    }
                }
            }
        }
    }
    streams.shutdown().await;
}

/// Reads one request frame, calls the handler, writes one response frame.
async fn serve_stream<H: Handler>(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: PeerRole,
    handler: Arc<H>,
    max: usize,
) {
    // Until the response is written, leaving this function (a handler panic included)
    // aborts the stream with a code instead of finishing it as if it were complete.
    let mut send = ResetOnDrop(Some(send));
    let request = match read_frame(&mut recv, max).await {
        Ok(request) => request,
        Err(e) => {
            let result = refuse_request(send.stream(), &mut recv, &e);
            metrics::request("in", result);
            return;
        }
    };
    metrics::bytes("in", request.len());
    let response = handler.handle(peer, request).await;
    let Some(mut send) = send.0.take() else {
        return;
    };
    if response.len() > max {
        warn!(
            len = response.len(),
            max, "handler response exceeds the frame limit; aborting the stream"
        );
        metrics::frame_error("too_large");
        let _ = send.reset(StreamErrorCode::FrameTooLarge.varint());
        metrics::request("in", "response_too_large");
        return;
    }
    let result = match write_frame(&mut send, &response).await {
        Ok(()) => {
            metrics::bytes("out", response.len());
            "ok"
        }
        Err(WriteFrameError::Stopped(_)) => "cancelled",
        Err(WriteFrameError::Connection(_)) | Err(WriteFrameError::Stream(_)) => "closed",
    };
    metrics::request("in", result);
}

/// Owns a send stream and resets it with [`StreamErrorCode::Internal`] if dropped while
/// still holding it (quinn would otherwise finish a dropped stream cleanly).
struct ResetOnDrop(Option<quinn::SendStream>);

impl ResetOnDrop {
    /// The stream, while still held.
    fn stream(&mut self) -> Option<&mut quinn::SendStream> {
        self.0.as_mut()
    }
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if let Some(mut send) = self.0.take() {
            let _ = send.reset(StreamErrorCode::Internal.varint());
        }
    }
}

/// Aborts both directions of a stream whose request frame is invalid, with a code that
/// tells the peer why; returns the metrics label.
fn refuse_request(
    send: Option<&mut quinn::SendStream>,
    recv: &mut quinn::RecvStream,
    error: &ReadFrameError,
) -> &'static str {
    let code = error.abort_code().unwrap_or(StreamErrorCode::Cancelled);
    if let Some(send) = send {
        let _ = send.reset(code.varint());
    }
    match error {
        ReadFrameError::Frame(e) => {
            let label = e.label();
            metrics::frame_error(frame_kind(label));
            debug!("refusing request stream: {e}");
            let _ = recv.stop(code.varint());
            label
        }
        ReadFrameError::Reset(_) => "cancelled",
        ReadFrameError::Connection(_) | ReadFrameError::Stream(_) => "closed",
    }
}

/// The `kind` label of a frame error from an error label.
pub(crate) fn frame_kind(label: &'static str) -> &'static str {
    match label {
        "frame_too_large" => "too_large",
        other => other,
    }
}

/// The `reason` label of a failed handshake.
pub(crate) fn handshake_reason(error: &quinn::ConnectionError) -> &'static str {
    match error {
        quinn::ConnectionError::TransportError(e) if is_crypto(e.code) => "tls",
        quinn::ConnectionError::ConnectionClosed(close) if is_crypto(close.error_code) => "tls",
        quinn::ConnectionError::TimedOut => "timeout",
        _ => "other",
    }
}

/// QUIC maps TLS alerts to transport error codes 0x100..=0x1ff.
pub(crate) fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..=0x1ff).contains(&u64::from(code))
}
