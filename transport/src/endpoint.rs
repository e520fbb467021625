//! [`Endpoint`]: one quinn endpoint that dials (always) and serves (when bound as a
//! server), with the outgoing connection cache.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use tokio::{sync::Semaphore, task::JoinHandle, time::Instant};
use tracing::{debug, warn};

use shoal_ring::NodeId;

use crate::{
    admission::Admission,
    cache::{Cached, ConnectionCache},
    config::TransportConfig,
    error::{StreamErrorCode, TransportError},
    frame::{read_frame, write_frame, ReadFrameError, WriteFrameError},
    identity::TlsIdentity,
    metrics::{self, OpenConnection},
    pem::NODE_SERVER_NAME,
    role::PeerRole,
    server::{
        accept_loop, frame_kind, handshake_reason, is_crypto, Handler, ServeContext, CLOSE_IDLE,
        CLOSE_LIMIT, CLOSE_PEER_ROLE, CLOSE_PROTOCOL,
    },
    socket, tls,
};

/// Application close code of an endpoint shutting down.
const CLOSE_SHUTDOWN: u32 = 0;
/// Longest wait in [`Endpoint::close`] for connections to finish closing. The close
/// frames go out at once; this only bounds the QUIC draining period (three probe
/// timeouts, seconds for a handshake that never got an answer), which carries on in the
/// background while the runtime lives.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// A QUIC endpoint speaking Shoal's framing over mutual TLS.
///
/// Cheap to clone (an `Arc` inside). One UDP socket serves incoming connections (when
/// created with [`Endpoint::server`] and [`Endpoint::serve`] is running) and carries
/// outgoing requests through a cache of connections, one per peer address. Serving stops
/// and every connection closes on [`Endpoint::close`] or when the last handle is dropped.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    config: TransportConfig,
    cache: ConnectionCache,
    serving: AtomicBool,
    connection_permits: Arc<Semaphore>,
    /// Connection and byte limits of the serving side.
    admission: Arc<Admission>,
    /// The TLS client configuration for new outgoing connections; replaced by
    /// [`Endpoint::reload`] (open connections keep the one they were made with).
    client_config: RwLock<quinn::ClientConfig>,
    /// Whether this endpoint accepts connections (its server configuration is replaced
    /// on reload too).
    is_server: bool,
    /// The role of the identity the endpoint was made with: a reload must keep it.
    role: PeerRole,
    /// The UDP socket's receive buffer and inode.
    socket: SocketInfo,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"endpoint dropped");
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.inner.local_addr)
            .field("open_connections", &self.inner.endpoint.open_connections())
            .finish()
    }
}

/// What the endpoint knows of its UDP socket once quinn owns it.
#[derive(Clone, Copy, Debug)]
struct SocketInfo {
    /// The receive buffer the kernel reports (Linux reports twice what it allocates
    /// for data; 0 where it could not be read).
    receive_buffer_bytes: usize,
    /// The socket's inode, which names it in `/proc/net/udp` (Linux).
    inode: Option<u64>,
}

/// A quinn endpoint on a UDP socket bound to `addr`, with `config`'s endpoint settings,
/// serving with `server` if given.
fn bind_quinn(
    addr: SocketAddr,
    config: &TransportConfig,
    identity: &TlsIdentity,
    server: Option<quinn::ServerConfig>,
    context: &'static str,
) -> Result<(quinn::Endpoint, SocketInfo), TransportError> {
    let io = |source| TransportError::Io { context, source };
    use socket2::{Domain, Protocol, Socket, Type};
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
    // As quinn's own constructors do: a wildcard IPv6 client socket also reaches IPv4.
    if addr.is_ipv6() && server.is_none() {
        if let Err(e) = socket.set_only_v6(false) {
            debug!(%e, "unable to make the socket dual-stack");
        }
    }
    let wanted = config.udp_receive_buffer_bytes;
    let sized = (wanted > 0).then(|| socket::size_receive_buffer(&socket, wanted));
    let receive_buffer_bytes = socket.recv_buffer_size().unwrap_or(0);
    match sized {
        Some(Err(e)) => warn!(%e, wanted, "unable to size the UDP socket's receive buffer"),
        Some(Ok(())) if receive_buffer_bytes < wanted => warn!(
            wanted,
            got = receive_buffer_bytes,
            "the UDP socket's receive buffer is smaller than \
             transport.udp_receive_buffer_bytes asks (capped by the net.core.rmem_max \
             sysctl): raise net.core.rmem_max, or datagrams arriving in bursts may be \
             dropped"
        ),
        _ => {}
    }
    let info = SocketInfo {
        receive_buffer_bytes,
        inode: socket::socket_inode(&socket),
    };
    socket.bind(&addr.into()).map_err(io)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let udp = quinn::Runtime::wrap_udp_socket(&*runtime, socket.into()).map_err(io)?;
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        config.quinn_endpoint(&identity.endpoint_secret())?,
        server,
        Arc::new(socket::BoundedBatches::new(
            udp,
            config.max_udp_payload_bytes,
        )),
        runtime,
    )
    .map_err(io)?;
    Ok((endpoint, info))
}

impl Endpoint {
    /// A server-and-client endpoint for a node, bound to `addr` (use port 0 for any).
    /// Call [`Endpoint::serve`] to start answering requests. The identity must be a node
    /// certificate, since every dialer refuses a server that is not a node.
    pub fn server(
        addr: SocketAddr,
        identity: &TlsIdentity,
        config: TransportConfig,
    ) -> Result<Endpoint, TransportError> {
        if !matches!(identity.role(), PeerRole::Node(_)) {
            return Err(TransportError::LocalRole {
                needed: "node",
                found: identity.role().clone(),
            });
        }
        Self::bind_server(addr, identity, config)
    }

    /// Builds a serving endpoint without checking the identity's role (tests of the
    /// dialer's role check need a server with a client certificate).
    pub(crate) fn bind_server(
        addr: SocketAddr,
        identity: &TlsIdentity,
        config: TransportConfig,
    ) -> Result<Endpoint, TransportError> {
        config.validate()?;
        let mut server_config = tls::server_config(identity, &config)?;
        server_config.max_incoming(config.max_incoming_connections);
        let client_config = tls::client_config(identity, &config)?;
        require_runtime()?;
        let endpoint = bind_quinn(
            addr,
            &config,
            identity,
            Some(server_config),
            "binding the server UDP socket",
        )?;
        Self::finish(
            endpoint,
            client_config,
            config,
            true,
            identity.role().clone(),
        )
    }

    /// A client-only endpoint (it serves nothing), bound to an ephemeral port on all
    /// interfaces: dual-stack `[::]:0` where IPv6 is available, else `0.0.0.0:0`.
    pub fn client(
        identity: &TlsIdentity,
        config: TransportConfig,
    ) -> Result<Endpoint, TransportError> {
        let any_v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        match Self::client_on(any_v6, identity, config.clone()) {
            Err(TransportError::Io { .. }) => Self::client_on(
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                identity,
                config,
            ),
            other => other,
        }
    }

    /// A client-only endpoint bound to `bind` (for example `127.0.0.1:0`).
    pub fn client_on(
        bind: SocketAddr,
        identity: &TlsIdentity,
        config: TransportConfig,
    ) -> Result<Endpoint, TransportError> {
        config.validate()?;
        let client_config = tls::client_config(identity, &config)?;
        require_runtime()?;
        let endpoint = bind_quinn(
            bind,
            &config,
            identity,
            None,
            "binding the client UDP socket",
        )?;
        Self::finish(
            endpoint,
            client_config,
            config,
            false,
            identity.role().clone(),
        )
    }

    fn finish(
        (endpoint, socket): (quinn::Endpoint, SocketInfo),
        client_config: quinn::ClientConfig,
        config: TransportConfig,
        is_server: bool,
        role: PeerRole,
    ) -> Result<Endpoint, TransportError> {
        let local_addr = endpoint.local_addr().map_err(|source| TransportError::Io {
            context: "reading the bound address",
            source,
        })?;
        Ok(Endpoint {
            inner: Arc::new(Inner {
                endpoint,
                local_addr,
                cache: ConnectionCache::new(config.max_cached_connections),
                connection_permits: Arc::new(Semaphore::new(config.max_incoming_connections)),
                admission: Arc::new(Admission::new(&config)),
                serving: AtomicBool::new(false),
                config,
                client_config: RwLock::new(client_config),
                is_server,
                role,
                socket,
            }),
        })
    }

    /// The receive buffer of the endpoint's UDP socket as the kernel reports it (on
    /// Linux twice the data it holds), in bytes; 0 where it could not be read.
    pub fn udp_receive_buffer_bytes(&self) -> usize {
        self.inner.socket.receive_buffer_bytes
    }

    /// Datagrams the kernel dropped for the endpoint's UDP socket because its receive
    /// buffer was full, since the socket was opened (Linux's `/proc/net/udp`; `None`
    /// elsewhere). Reads a `/proc` file: call it from a blocking context, once a scrape.
    pub fn udp_receive_drops(&self) -> Option<u64> {
        socket::receive_drops(self.inner.socket.inode?)
    }

    /// Replaces the endpoint's certificates (after a certificate rotation): connections
    /// accepted and dialled from now on use `identity`; open connections are left as
    /// they are, so no request in flight is dropped. `identity` must carry the same role
    /// as the one the endpoint was made with ([`TransportError::IdentityChanged`]), so a
    /// node can never start presenting another node's name. On an error nothing changes.
    pub fn reload(&self, identity: &TlsIdentity) -> Result<(), TransportError> {
        if identity.role() != &self.inner.role {
            return Err(TransportError::IdentityChanged {
                current: self.inner.role.clone(),
                new: identity.role().clone(),
            });
        }
        let config = &self.inner.config;
        let server_config = if self.inner.is_server {
            let mut server_config = tls::server_config(identity, config)?;
            server_config.max_incoming(config.max_incoming_connections);
            Some(server_config)
        } else {
            None
        };
        let client_config = tls::client_config(identity, config)?;
        if let Some(server_config) = server_config {
            self.inner.endpoint.set_server_config(Some(server_config));
        }
        *self
            .inner
            .client_config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = client_config;
        Ok(())
    }

    /// The client configuration new outgoing connections use.
    fn client_config(&self) -> quinn::ClientConfig {
        self.inner
            .client_config
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The bound socket address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The transport settings of this endpoint.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Starts serving incoming connections with `handler` until [`Endpoint::close`] (or
    /// the last handle is dropped). Each request stream runs in its own task that calls
    /// [`Handler::handle`] with the peer's authenticated role and writes the response.
    ///
    /// Only the first call serves; a second call logs a warning and returns a task that
    /// ends at once. On a client-only endpoint the task just waits for the close.
    pub fn serve<H: Handler>(&self, handler: Arc<H>) -> JoinHandle<()> {
        if self.inner.serving.swap(true, Ordering::AcqRel) {
            warn!("Endpoint::serve called twice; the second call does nothing");
            return tokio::spawn(async {});
        }
        let context = ServeContext {
            max_frame_bytes: self.inner.config.max_frame_bytes,
            handshake_timeout: self.inner.config.connect_timeout,
            connection_permits: self.inner.connection_permits.clone(),
            admission: self.inner.admission.clone(),
            handshaking: Arc::new(AtomicUsize::new(0)),
            retry_handshakes_above: self.inner.config.retry_handshakes_above,
            client_idle_timeout: self.inner.config.client_idle_timeout,
            request_read_timeout: self.inner.config.request_read_timeout,
            response_write_timeout: self.inner.config.response_write_timeout,
        };
        // The task holds the quinn endpoint, not `Inner`, so dropping every `Endpoint`
        // handle still closes it and ends the loop.
        tokio::spawn(accept_loop(self.inner.endpoint.clone(), context, handler))
    }

    /// Sends one request frame to the node at `addr` on a new stream and waits for its
    /// response frame.
    ///
    /// The whole call is bounded by `timeout`, and connecting also by the configured
    /// `connect_timeout`. A live cached connection to `addr` is reused, a closed one is
    /// replaced. The server must present a node certificate, for node `expected` when
    /// given. See [`TransportError`] for which errors mean "not delivered".
    pub async fn request(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        self.request_resending(addr, expected, payload, timeout, false)
            .await
    }

    /// [`request`](Endpoint::request) for a request that may run twice without harm (a
    /// read, or a write that merges): one whose connection turns out to belong to a
    /// previous process of the peer ([`TransportError::PeerRestarted`]) is sent again,
    /// once, to the new process on a new connection, within the same timeout.
    pub async fn request_idempotent(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        self.request_resending(addr, expected, payload, timeout, true)
            .await
    }

    async fn request_resending(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
        payload: Vec<u8>,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<Vec<u8>, TransportError> {
        let start = Instant::now();
        let deadline = deadline_after(start, timeout);
        let mut result = self
            .request_inner(addr, expected, &payload, deadline, timeout)
            .await;
        let again = match &result {
            // The server closed the cached connection as idle just as we used it; no
            // stream of ours was served, so sending once more on a new one is safe.
            Err(TransportError::IdleClosed { .. }) => true,
            Err(TransportError::PeerRestarted { .. }) => {
                metrics::peer_restarted(if idempotent { "resent" } else { "failed" });
                idempotent
            }
            _ => false,
        };
        if again {
            result = self
                .request_inner(addr, expected, &payload, deadline, timeout)
                .await;
        }
        metrics::request_duration(start.elapsed());
        match &result {
            Ok(_) => metrics::request("out", "ok"),
            Err(e) => metrics::request("out", e.label()),
        }
        result
    }

    /// Whether a live connection to the node at `addr` (to node `expected`, if given) is
    /// cached: then [`connect`](Endpoint::connect) would succeed at once. Lets a caller
    /// skip racing connections when the first node it would try is connected already.
    pub fn is_connected(&self, addr: SocketAddr, expected: Option<&NodeId>) -> bool {
        self.inner
            .cache
            .live_to(addr)
            .is_some_and(|cached| match (&cached.role, expected) {
                (PeerRole::Node(id), Some(want)) => id == want,
                (PeerRole::Node(_), None) => true,
                (PeerRole::Client(_), _) => false,
            })
    }

    /// Connects to the node at `addr` (or finds a live cached connection) without sending
    /// anything, within the configured `connect_timeout`; the next [`request`](Endpoint::request)
    /// to `addr` uses it. Lets a client race connections to several nodes and send its
    /// request once, to the first that connects.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
    ) -> Result<(), TransportError> {
        let deadline = deadline_after(Instant::now(), self.inner.config.connect_timeout);
        let cached = self.connection(addr, deadline).await?;
        check_expected(addr, &cached.role, expected)
    }

    async fn request_inner(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
        payload: &[u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let max = self.inner.config.max_frame_bytes;
        if payload.len() > max {
            return Err(TransportError::FrameTooLarge {
                len: payload.len() as u64,
                max,
            });
        }
        let cached = self.connection(addr, deadline).await?;
        check_expected(addr, &cached.role, expected)?;

        // A peer that was killed and restarted on the same address never answers on the
        // old connection (its stateless resets use another key), so a connection that
        // received nothing at all during a timed-out request is presumed dead and set
        // aside: the next request dials again. A slow but live peer still ACKs our
        // packets; one whose runtime stalled does not, but answers the requests in flight
        // once it runs again, so they keep waiting (until their own deadlines) and the
        // connection closes when the last of them ends.
        let received_before = cached.connection.stats().udp_rx.datagrams;
        let mut streams: Option<(quinn::SendStream, quinn::RecvStream)> = None;
        let exchange = async {
            let (send, recv) = streams.insert(
                cached
                    .connection
                    .open_bi()
                    .await
                    .map_err(|e| request_connection_error(addr, e))?,
            );
            write_frame(send, payload).await.map_err(|e| match e {
                WriteFrameError::Stopped(code) => TransportError::StreamAborted {
                    addr,
                    code: StreamErrorCode::from_code(code.into_inner()),
                },
                WriteFrameError::Connection(e) => request_connection_error(addr, e),
                WriteFrameError::Stream(reason) => TransportError::Closed { addr, reason },
            })?;
            metrics::bytes("out", payload.len());
            match read_frame(recv, max).await {
                Ok(response) => {
                    metrics::bytes("in", response.len());
                    Ok(response)
                }
                Err(e) => {
                    if let Some(code) = e.abort_code() {
                        let _ = recv.stop(code.varint());
                    }
                    Err(match e {
                        ReadFrameError::Frame(e) => {
                            metrics::frame_error(frame_kind(e.label()));
                            e
                        }
                        ReadFrameError::Reset(code) => TransportError::StreamAborted {
                            addr,
                            code: StreamErrorCode::from_code(code.into_inner()),
                        },
                        ReadFrameError::Connection(e) => request_connection_error(addr, e),
                        ReadFrameError::Stream(reason) => TransportError::Closed { addr, reason },
                    })
                }
            }
        };
        let outcome = tokio::time::timeout_at(deadline, exchange).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                if let Some((send, recv)) = streams.as_mut() {
                    let _ = send.reset(StreamErrorCode::Cancelled.varint());
                    let _ = recv.stop(StreamErrorCode::Cancelled.varint());
                }
                if cached.connection.stats().udp_rx.datagrams == received_before
                    && self.inner.cache.set_aside(addr, &cached)
                {
                    metrics::unresponsive_connection();
                }
                Err(TransportError::Timeout {
                    addr,
                    after: timeout,
                })
            }
        }
    }

    /// A live connection to `addr`: the cached one, or a new one dialed once for all the
    /// requests waiting for it.
    async fn connection(
        &self,
        addr: SocketAddr,
        deadline: Instant,
    ) -> Result<Cached, TransportError> {
        let slot = self.inner.cache.slot(addr);
        if let Some(cached) = slot.live() {
            return Ok(cached);
        }
        let failures_before = slot.failures();
        let dial_guard = tokio::time::timeout_at(deadline, slot.dial.lock())
            .await
            .map_err(|_| TransportError::Connect {
                addr,
                reason: "timed out waiting for a connection attempt in progress".to_owned(),
            })?;
        if let Some(cached) = slot.live() {
            return Ok(cached);
        }
        if slot.failures() != failures_before {
            // The dial this request waited for failed: share its error rather than
            // dialing again for every waiting request.
            if let Some(error) = slot.last_failure() {
                return Err(error);
            }
        }
        let dialed = self.dial(addr, deadline).await;
        match &dialed {
            Ok(cached) => slot.store(cached.clone()),
            Err(error) => slot.record_failure(error),
        }
        drop(dial_guard);
        dialed
    }

    /// Connects to `addr`, checks ALPN and that the server is a node.
    async fn dial(&self, addr: SocketAddr, deadline: Instant) -> Result<Cached, TransportError> {
        let connect_deadline = deadline.min(Instant::now() + self.inner.config.connect_timeout);
        let connecting = self
            .inner
            .endpoint
            .connect_with(self.client_config(), addr, NODE_SERVER_NAME)
            .map_err(|e| match e {
                quinn::ConnectError::EndpointStopping => TransportError::EndpointClosed,
                other => TransportError::Connect {
                    addr,
                    reason: other.to_string(),
                },
            })?;
        let connection = match tokio::time::timeout_at(connect_deadline, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                metrics::handshake_failure(handshake_reason(&e));
                return Err(connect_error(addr, e));
            }
            Err(_) => {
                metrics::handshake_failure("timeout");
                return Err(TransportError::Connect {
                    addr,
                    reason: "no connection established before the deadline".to_owned(),
                });
            }
        };
        if let Err(reason) = tls::check_alpn(&connection) {
            metrics::handshake_failure("alpn");
            connection.close(
                quinn::VarInt::from_u32(CLOSE_PROTOCOL),
                b"ALPN shoal/1 required",
            );
            return Err(TransportError::Handshake { addr, reason });
        }
        let role = match tls::peer_role(&connection) {
            Ok(role) => role,
            Err(reason) => {
                metrics::handshake_failure("peer_role");
                connection.close(quinn::VarInt::from_u32(CLOSE_PEER_ROLE), b"no Shoal role");
                return Err(TransportError::Handshake { addr, reason });
            }
        };
        if !matches!(role, PeerRole::Node(_)) {
            metrics::handshake_failure("peer_role");
            connection.close(
                quinn::VarInt::from_u32(CLOSE_PEER_ROLE),
                b"server certificate is not a node certificate",
            );
            return Err(TransportError::PeerRole {
                addr,
                expected: "a node".to_owned(),
                found: role,
            });
        }
        debug!(%addr, %role, "connected");
        // Count the connection as open until it closes (the cache closes it explicitly
        // when evicting it, and the endpoint closes all on shutdown).
        // Its losses are counted until then too.
        let watched = connection.clone();
        let kind = role.kind();
        tokio::spawn(async move {
            let _open = OpenConnection::new();
            metrics::count_losses(watched, kind).await;
        });
        Ok(Cached::new(connection, role))
    }

    /// Outgoing connections in the cache that are still open.
    pub fn cached_connections(&self) -> usize {
        self.inner.cache.live_connections()
    }

    /// All open QUIC connections of this endpoint, incoming and outgoing.
    pub fn open_connections(&self) -> usize {
        self.inner.endpoint.open_connections()
    }

    /// Closes every connection and the endpoint, and waits (at most half a second) for
    /// the connections to finish closing. Serving stops; later requests fail with
    /// [`TransportError::EndpointClosed`].
    pub async fn close(&self) {
        self.inner
            .endpoint
            .close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
        self.inner.cache.clear(CLOSE_SHUTDOWN, b"shutdown");
        if tokio::time::timeout(CLOSE_GRACE, self.inner.endpoint.wait_idle())
            .await
            .is_err()
        {
            debug!("connections still draining after {CLOSE_GRACE:?}; not waiting longer");
        }
    }

    /// A raw connection for tests that write malformed frames.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) async fn raw_connection(
        &self,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, TransportError> {
        let deadline = Instant::now() + self.inner.config.connect_timeout;
        Ok(self.connection(addr, deadline).await?.connection.clone())
    }

    /// Bytes of the in-flight budget of `role` (`"client"` or `"peer"`) held now, while
    /// serving (tests of the budget).
    #[cfg(test)]
    pub(crate) fn inflight_bytes_in_use(&self, role: &str) -> usize {
        self.inner.admission.bytes_in_use(role)
    }

    /// Connections this server asked to prove their address (tests of Retry).
    #[cfg(test)]
    pub(crate) fn retries(&self) -> u64 {
        self.inner.admission.retries()
    }

    /// Number of failed dials to `addr` (tests of single-flight dialing).
    #[cfg(test)]
    pub(crate) fn dial_failures(&self, addr: SocketAddr) -> u64 {
        self.inner.cache.slot(addr).failures()
    }

    /// Number of peer addresses in the cache (tests of eviction).
    #[cfg(test)]
    pub(crate) fn cache_len(&self) -> usize {
        self.inner.cache.len()
    }
}

/// Refuses a node whose id is not the one the caller expects.
fn check_expected(
    addr: SocketAddr,
    role: &PeerRole,
    expected: Option<&NodeId>,
) -> Result<(), TransportError> {
    match (role, expected) {
        (PeerRole::Node(id), Some(want)) if id != want => {
            metrics::handshake_failure("peer_role");
            Err(TransportError::PeerRole {
                addr,
                expected: format!("node {want}"),
                found: role.clone(),
            })
        }
        (PeerRole::Node(_), _) => Ok(()),
        (PeerRole::Client(_), _) => Err(TransportError::PeerRole {
            addr,
            expected: "a node".to_owned(),
            found: role.clone(),
        }),
    }
}

fn require_runtime() -> Result<(), TransportError> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| TransportError::NoRuntime)
}

/// The error for a server close that guarantees none of our streams was served: closed
/// for a limit right after the handshake, or as idle with no stream open.
fn unserved_close(
    addr: SocketAddr,
    close: &quinn::ApplicationClose,
    reason: &str,
) -> Option<TransportError> {
    let code = close.error_code.into_inner();
    if code == u64::from(CLOSE_IDLE) {
        Some(TransportError::IdleClosed { addr })
    } else if code == u64::from(CLOSE_LIMIT) {
        Some(TransportError::Refused {
            addr,
            reason: reason.to_owned(),
        })
    } else {
        None
    }
}

/// Maps a connection error while connecting: nothing was sent yet.
fn connect_error(addr: SocketAddr, error: quinn::ConnectionError) -> TransportError {
    use quinn::ConnectionError as E;
    let reason = error.to_string();
    if let E::ApplicationClosed(close) = &error {
        if let Some(unserved) = unserved_close(addr, close, &reason) {
            return unserved;
        }
    }
    match error {
        E::TransportError(e) if is_crypto(e.code) => TransportError::Handshake { addr, reason },
        E::ConnectionClosed(close) if is_crypto(close.error_code) => {
            TransportError::Handshake { addr, reason }
        }
        E::ApplicationClosed(close)
            if close.error_code.into_inner() == u64::from(CLOSE_PEER_ROLE) =>
        {
            TransportError::Handshake { addr, reason }
        }
        E::LocallyClosed => TransportError::EndpointClosed,
        _ => TransportError::Connect { addr, reason },
    }
}

/// Maps a connection error once the request may have been sent. A TLS failure still
/// means the server refused us before serving anything (TLS 1.3 lets the client finish
/// its handshake before the server has checked the client certificate).
fn request_connection_error(addr: SocketAddr, error: quinn::ConnectionError) -> TransportError {
    use quinn::ConnectionError as E;
    let reason = error.to_string();
    if let E::ApplicationClosed(close) = &error {
        if let Some(unserved) = unserved_close(addr, close, &reason) {
            return unserved;
        }
    }
    let mapped = match error {
        E::TransportError(e) if is_crypto(e.code) => TransportError::Handshake { addr, reason },
        E::ConnectionClosed(close) if is_crypto(close.error_code) => {
            TransportError::Handshake { addr, reason }
        }
        E::ApplicationClosed(close)
            if close.error_code.into_inner() == u64::from(CLOSE_PEER_ROLE)
                || close.error_code.into_inner() == u64::from(CLOSE_PROTOCOL) =>
        {
            TransportError::Handshake { addr, reason }
        }
        E::Reset => TransportError::PeerRestarted { addr },
        _ => TransportError::Closed { addr, reason },
    };
    if let TransportError::Handshake { .. } = mapped {
        metrics::handshake_failure("tls");
    }
    mapped
}

/// `start + timeout`, saturated at a deadline far beyond any request's life instead of
/// overflowing (`Instant + Duration` panics past the platform's range).
fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    /// About thirty years: as far as tokio itself schedules "never".
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    start.checked_add(timeout.min(FAR_FUTURE)).unwrap_or(start)
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn a_huge_timeout_saturates_instead_of_panicking() {
        let start = Instant::now();
        let far = deadline_after(start, Duration::MAX);
        assert!(far >= start + Duration::from_secs(86_400 * 365));
        assert_eq!(
            deadline_after(start, Duration::from_secs(2)),
            start + Duration::from_secs(2)
        );
    }
}
