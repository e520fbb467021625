//! The serving side: accept connections, authenticate the peer's role, and run one task
//! per request stream that calls the [`Handler`].

use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tracing::{debug, warn};

use crate::{
    admission::{Admission, ConnectionBudget, HeldBytes},
    error::StreamErrorCode,
    frame::{write_frame, FrameDecoder, ReadFrameError, WriteFrameError, READ_CHUNK_BYTES},
    metrics::{self, OpenConnection},
    role::PeerRole,
    tls,
};

/// Application close code: the peer's certificate has no usable role.
pub(crate) const CLOSE_PEER_ROLE: u32 = 1;
/// Application close code: the peer did not negotiate ALPN `shoal/1`.
pub(crate) const CLOSE_PROTOCOL: u32 = 2;
/// Application close code: a connection limit (per role, client name or address) is
/// reached; try again later.
pub(crate) const CLOSE_LIMIT: u32 = 3;
/// Application close code: a client connection stayed idle past `client_idle_timeout`.
pub(crate) const CLOSE_IDLE: u32 = 4;

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
    pub(crate) admission: Arc<Admission>,
    /// Handshakes in progress, to decide when to ask for address validation.
    pub(crate) handshaking: Arc<AtomicUsize>,
    pub(crate) retry_handshakes_above: usize,
    pub(crate) client_idle_timeout: Duration,
    pub(crate) request_read_timeout: Duration,
    pub(crate) response_write_timeout: Duration,
}

/// Counts one handshake in progress while alive.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Handshaking(count.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
                let remote = incoming.remote_address();
                // Under a flood of handshakes, a client must first show it receives at its
                // address (one Retry round trip) before it costs a TLS handshake.
                if !incoming.remote_address_validated()
                    && context.handshaking.load(Ordering::Relaxed) >= context.retry_handshakes_above
                    && incoming.may_retry()
                {
                    context.admission.note_retry();
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().ignore();
                    }
                    continue;
                }
                let Ok(permit) = context.connection_permits.clone().try_acquire_owned() else {
                    metrics::handshake_failure("refused");
                    debug!(%remote, "too many connections; refusing");
                    incoming.refuse();
                    continue;
                };
                let address = match context.admission.admit_address(remote.ip()) {
                    Ok(guard) => guard,
                    Err(refusal) => {
                        metrics::connection_refused(refusal.label());
                        debug!(%remote, "too many connections from this address; refusing");
                        incoming.refuse();
                        continue;
                    }
                };
                let context = context.clone();
                let handler = handler.clone();
                connections.spawn(async move {
                    serve_connection(incoming, context, handler).await;
                    drop(address);
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
    let handshaking = Handshaking::new(&context.handshaking);
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
    drop(handshaking);
    let admitted = match context.admission.admit_role(&peer) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            metrics::connection_refused(refusal.label());
            connection.close(
                quinn::VarInt::from_u32(CLOSE_LIMIT),
                b"too many connections",
            );
            debug!(%remote, %peer, "refused: {}", refusal.label());
            return;
        }
    };
    let _open = OpenConnection::new();
    // Ends when the connection closes (every way out of the loop below closes it).
    tokio::spawn(metrics::count_losses(connection.clone(), peer.kind()));
    debug!(%remote, %peer, "connection accepted");
    // Clients' connections close when idle; peers' are cached by the dialer on purpose.
    let idle_timeout = match peer {
        PeerRole::Client(_) => Some(context.client_idle_timeout),
        PeerRole::Node(_) => None,
    };
    let mut idle_since = Instant::now();
    // Streams are bounded by the QUIC concurrent stream limit the peer was granted.
    let mut streams = JoinSet::new();
    loop {
        let idle_deadline = match idle_timeout {
            Some(timeout) if streams.is_empty() => Some(idle_since + timeout),
            _ => None,
        };
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let stream = StreamContext {
                        peer: peer.clone(),
                        max: context.max_frame_bytes,
                        read_timeout: context.request_read_timeout,
                        write_timeout: context.response_write_timeout,
                        budget: admitted.budget().clone(),
                    };
                    streams.spawn(serve_stream(send, recv, stream, handler.clone()));
                }
                Err(e) => {
                    debug!(%remote, "connection ended: {e}");
                    break;
                }
            },
            Some(done) = streams.join_next(), if !streams.is_empty() => {
                idle_since = Instant::now();
                if let Err(e) = done {
                    if e.is_panic() {
                        warn!(%remote, "request handler panicked: {e}");
                        metrics::request("in", "panic");
                    }
                }
            }
            () = sleep_until_some(idle_deadline) => {
                metrics::connection_refused("idle");
                debug!(%remote, %peer, "closing an idle client connection");
                connection.close(quinn::VarInt::from_u32(CLOSE_IDLE), b"idle");
                break;
            }
        }
    }
    streams.shutdown().await;
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What one request stream needs.
struct StreamContext {
    peer: PeerRole,
    max: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    budget: ConnectionBudget,
}

/// Reads one request frame, calls the handler, writes one response frame. The request's
/// bytes are held from the role's budget until the handler answers, the response's while
/// it is written; each direction has a deadline.
async fn serve_stream<H: Handler>(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    stream: StreamContext,
    handler: Arc<H>,
) {
    // Until the response is written, leaving this function (a handler panic included)
    // aborts the stream with a code instead of finishing it as if it were complete.
    let mut send = ResetOnDrop(Some(send));
    let budget = &stream.budget;
    let read = read_request(&mut recv, stream.max, budget);
    let (request, held) = match tokio::time::timeout(stream.read_timeout, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => {
            let result = refuse_request(send.stream(), &mut recv, &e);
            metrics::request("in", result);
            return;
        }
        Err(_) => {
            metrics::stream_timeout("read");
            let error = RequestReadError::TimedOut;
            let result = refuse_request(send.stream(), &mut recv, &error);
            metrics::request("in", result);
            return;
        }
    };
    metrics::bytes("in", request.len());
    let response = handler.handle(stream.peer, request).await;
    drop(held);
    let Some(mut send) = send.0.take() else {
        return;
    };
    let max = stream.max;
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
    // The response is held until the peer has read it. When it does not fit in the
    // budget now (a peer leaving responses unread, or far too many at once), it is
    // dropped at once rather than held while waiting, so that memory stays bounded; the
    // code says the request ran.
    let Some(_held) = budget.try_take(response.len()) else {
        metrics::request_refused("response_memory");
        let _ = send.reset(StreamErrorCode::ResponseDropped.varint());
        metrics::request("in", "response_dropped");
        return;
    };
    let write = write_frame(&mut send, &response);
    let result = match tokio::time::timeout(stream.write_timeout, write).await {
        Ok(Ok(())) => {
            metrics::bytes("out", response.len());
            "ok"
        }
        Ok(Err(WriteFrameError::Stopped(_))) => "cancelled",
        Ok(Err(WriteFrameError::Connection(_))) | Ok(Err(WriteFrameError::Stream(_))) => "closed",
        Err(_) => {
            metrics::stream_timeout("write");
            let _ = send.reset(StreamErrorCode::TimedOut.varint());
            "stream_timeout"
        }
    };
    metrics::request("in", result);
}

/// Reads one request frame, taking its announced length from `budget` as soon as the
/// prefix arrives: a request that does not fit is refused before its body is read.
async fn read_request(
    recv: &mut quinn::RecvStream,
    max: usize,
    budget: &ConnectionBudget,
) -> Result<(Vec<u8>, Option<HeldBytes>), RequestReadError> {
    let mut decoder = FrameDecoder::new(max);
    let mut held = None;
    loop {
        let want = decoder.wanted().clamp(1, READ_CHUNK_BYTES);
        let chunk = recv
            .read_chunk(want, true)
            .await
            .map_err(|e| RequestReadError::Stream(e.into()))?;
        let frame = |e| RequestReadError::Stream(ReadFrameError::Frame(e));
        match chunk {
            Some(chunk) => decoder.push(&chunk.bytes).map_err(frame)?,
            None => return Ok((decoder.finish().map_err(frame)?, held)),
        }
        if held.is_none() {
            if let Some(len) = decoder.announced_len() {
                match budget.try_take(len) {
                    Some(permit) => held = Some(permit),
                    None => return Err(RequestReadError::Overloaded),
                }
            }
        }
    }
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

/// Why a server did not get a request: the stream or frame failed, or the server
/// refused it (budget) or gave up on it (deadline).
#[derive(Debug)]
enum RequestReadError {
    Stream(ReadFrameError),
    /// The role's budget of bytes in flight has no room for the announced frame.
    Overloaded,
    /// The frame did not arrive within `request_read_timeout`.
    TimedOut,
}

/// Aborts both directions of a stream whose request could not be read, with a code that
/// tells the peer why; returns the metrics label.
fn refuse_request(
    send: Option<&mut quinn::SendStream>,
    recv: &mut quinn::RecvStream,
    error: &RequestReadError,
) -> &'static str {
    let code = match error {
        RequestReadError::Stream(e) => e.abort_code().unwrap_or(StreamErrorCode::Cancelled),
        RequestReadError::Overloaded => StreamErrorCode::Overloaded,
        RequestReadError::TimedOut => StreamErrorCode::TimedOut,
    };
    if let Some(send) = send {
        let _ = send.reset(code.varint());
    }
    match error {
        RequestReadError::Overloaded => {
            metrics::request_refused("memory");
            let _ = recv.stop(code.varint());
            "overloaded"
        }
        RequestReadError::TimedOut => {
            let _ = recv.stop(code.varint());
            "stream_timeout"
        }
        RequestReadError::Stream(ReadFrameError::Frame(e)) => {
            let label = e.label();
            metrics::frame_error(frame_kind(label));
            debug!("refusing request stream: {e}");
            let _ = recv.stop(code.varint());
            label
        }
        RequestReadError::Stream(ReadFrameError::Reset(_)) => "cancelled",
        RequestReadError::Stream(ReadFrameError::Connection(_))
        | RequestReadError::Stream(ReadFrameError::Stream(_)) => "closed",
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
