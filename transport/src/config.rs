//! Transport settings and the bounds they put on every connection.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use crate::error::TransportError;

/// Default frame limit: an 8 MiB value plus 64 KiB for the key, context and envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024 + 64 * 1024;

/// Bytes a connection may have received and not yet read, over all its streams.
const RECEIVE_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// The largest UDP payload QUIC allows (IPv6's; an IPv4 path carries at most 65507,
/// which MTU discovery finds).
pub const MAX_UDP_PAYLOAD_BYTES: u16 = 65527;
/// Default: jumbo frames' (see [`TransportConfig::max_udp_payload_bytes`]); path MTU
/// discovery finds less where the path carries less.
pub const DEFAULT_UDP_PAYLOAD_BYTES: u16 = 9000;
/// The smallest: QUIC's minimum.
const MIN_UDP_PAYLOAD_BYTES: u16 = 1200;

/// Default socket receive buffer asked of the kernel (see
/// [`TransportConfig::udp_receive_buffer_bytes`]).
pub const DEFAULT_UDP_RECEIVE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// The largest receive buffer accepted in a config: the kernel takes an `int` and
/// doubles it.
const MAX_UDP_RECEIVE_BUFFER_BYTES: usize = 1 << 30;

/// The largest in-flight byte budget: what a tokio semaphore can count, with room.
pub const MAX_INFLIGHT_BYTES: usize = 1 << 40;
/// The longest server-side timeout accepted in a config (a day): larger values are
/// certainly mistakes, and keep deadline arithmetic far from overflow.
const MAX_SERVER_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Settings of an [`Endpoint`](crate::Endpoint). Every field is a bound; see
/// [`TransportConfig::validate`] for the rules between them.
///
/// It is also the node config's `[transport]` section (durations as `"5s"`, `"300ms"`);
/// `max_frame_bytes` is not in the file: the node derives it from its object limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Largest frame payload accepted or sent, in bytes (the 4-byte length prefix is not
    /// counted). Must be at least 1 and at most `u32::MAX`.
    #[serde(skip)]
    pub max_frame_bytes: usize,
    /// A connection with no traffic for this long is closed (QUIC idle timeout).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Interval of QUIC keep-alive pings, so idle cached connections stay open while the
    /// peer lives; must be shorter than `idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Longest wait for a new outgoing connection (QUIC + TLS handshake).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Concurrent request streams a peer may open on one connection; further streams wait
    /// for flow-control credit.
    pub max_concurrent_streams: u32,
    /// Outgoing connections kept in the cache (one per peer address); the least recently
    /// used is closed when a new address needs room.
    pub max_cached_connections: usize,
    /// Incoming connections a server accepts at once (handshaking or established, both
    /// roles); more are refused.
    pub max_incoming_connections: usize,
    /// Established connections from clients a server keeps at once; more are closed
    /// after the handshake. Peers have their own allowance, so clients can never lock
    /// out a member.
    pub max_client_connections: usize,
    /// Established connections from nodes a server keeps at once.
    pub max_peer_connections: usize,
    /// Established connections one client certificate name may hold on one server.
    pub max_connections_per_client: usize,
    /// Incoming connections (handshaking or established) from one IP address.
    pub max_connections_per_address: usize,
    /// Handshakes in progress above which a new connection must first prove its address
    /// (a QUIC Retry round trip), so that a flood of spoofed handshakes costs one packet
    /// each instead of a TLS handshake.
    pub retry_handshakes_above: usize,
    /// A client connection with no request in progress for this long is closed. Peers'
    /// connections are kept (they are cached for reuse and kept alive on purpose).
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Duration,
    /// Bytes of client requests and responses a server holds at once (frames read or
    /// being written), across all connections. A request whose announced length does not
    /// fit is refused with [`StreamErrorCode::Overloaded`](crate::StreamErrorCode) before
    /// its body is read. At least `max_frame_bytes`.
    pub max_client_inflight_bytes: usize,
    /// The part of `max_client_inflight_bytes` one client certificate name may hold, over
    /// all its connections, so that one client cannot starve the others. At least
    /// `max_frame_bytes`.
    pub max_inflight_bytes_per_client: usize,
    /// The same budget for requests from nodes, kept apart so that clients cannot starve
    /// replication. At least `max_frame_bytes`.
    pub max_peer_inflight_bytes: usize,
    /// Longest time a request frame may take to arrive once its stream is open; a
    /// request that stops arriving is aborted and its memory released.
    #[serde(with = "humantime_serde")]
    pub request_read_timeout: Duration,
    /// Longest time a response may take to be written (the peer must read it); a peer
    /// that stops reading gets its stream aborted.
    #[serde(with = "humantime_serde")]
    pub response_write_timeout: Duration,
    /// Ack-eliciting packets a peer may receive before it must send an acknowledgement
    /// (asked of the peer through the QUIC ACK frequency extension); 0 keeps QUIC's
    /// default, an acknowledgement for every other packet. Default 8. Each acknowledgement that
    /// cannot ride on a response is a datagram of its own: a system call and a packet's
    /// crypto on both sides.
    pub ack_eliciting_threshold: u32,
    /// How long a peer asked to acknowledge less often may hold an acknowledgement back
    /// (QUIC clamps it to at least the peer's minimum and at most the larger of the path
    /// RTT and 25 ms). Only used with a positive `ack_eliciting_threshold`.
    #[serde(with = "humantime_serde")]
    pub max_ack_delay: Duration,
    /// Largest UDP payload, in bytes, this endpoint accepts and searches for with QUIC's
    /// path MTU discovery (both ends' limits apply; every connection starts at 1200
    /// bytes and grows to what the path carries, so a high bound is safe on any
    /// network: on Ethernet the probes above its 1,500 bytes are lost and the datagrams
    /// stay at about 1,450). On loopback and jumbo-frame networks larger datagrams carry
    /// several requests or responses each: fewer system calls and packets per
    /// operation, and multi-megabyte values move faster (BENCHMARKS.md).
    /// 1200..=65527; default 9000.
    pub max_udp_payload_bytes: u16,
    /// Receive buffer asked of the kernel for the endpoint's UDP socket, in bytes (0: the
    /// system's default, `net.core.rmem_default`, 208 KiB on most Linux systems). A
    /// datagram that arrives while the buffer is full is dropped, and QUIC resends it
    /// after a loss timeout and with a smaller congestion window: bursts of replica
    /// messages and multi-megabyte values need more than the default. Above
    /// `net.core.rmem_max` only a process with `CAP_NET_ADMIN` gets what it asks; others
    /// are given `rmem_max`, with a warning at start. Default 4 MiB; at most 1 GiB.
    /// The kernel's count of dropped datagrams is `shoal_udp_receive_drops_total`.
    pub udp_receive_buffer_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            // A dead peer (killed, stopped, partitioned) sends no acknowledgements: its
            // connection closes after `idle_timeout`, failing the requests waiting on it
            // and letting the next request dial again. Keep-alives keep a live idle
            // connection open.
            idle_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            max_concurrent_streams: 1024,
            max_cached_connections: 1024,
            max_incoming_connections: 4096,
            max_client_connections: 2048,
            max_peer_connections: 512,
            max_connections_per_client: 256,
            max_connections_per_address: 1024,
            retry_handshakes_above: 64,
            client_idle_timeout: Duration::from_secs(60),
            max_client_inflight_bytes: 256 * 1024 * 1024,
            max_inflight_bytes_per_client: 64 * 1024 * 1024,
            max_peer_inflight_bytes: 256 * 1024 * 1024,
            request_read_timeout: Duration::from_secs(10),
            response_write_timeout: Duration::from_secs(10),
            // Measured (BENCHMARKS.md, "Fewer acknowledgements"): 8 and 10 ms cut the
            // nodes' CPU per operation by about a tenth under load; 32 and 25 ms did not
            // do better.
            ack_eliciting_threshold: 8,
            max_ack_delay: Duration::from_millis(10),
            max_udp_payload_bytes: DEFAULT_UDP_PAYLOAD_BYTES,
            udp_receive_buffer_bytes: DEFAULT_UDP_RECEIVE_BUFFER_BYTES,
        }
    }
}

impl TransportConfig {
    /// Checks each bound and the rules between them.
    pub fn validate(&self) -> Result<(), TransportError> {
        let fail = |msg: &str| Err(TransportError::Config(msg.to_owned()));
        if self.max_frame_bytes == 0 || u32::try_from(self.max_frame_bytes).is_err() {
            return fail("max_frame_bytes must be in 1..=u32::MAX");
        }
        if self.idle_timeout.is_zero() {
            return fail("idle_timeout must be positive");
        }
        if quinn::IdleTimeout::try_from(self.idle_timeout).is_err() {
            return fail("idle_timeout is too large for QUIC");
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return fail("keep_alive must be positive and shorter than idle_timeout");
        }
        if self.connect_timeout.is_zero() {
            return fail("connect_timeout must be positive");
        }
        if self.max_ack_delay.is_zero() || self.max_ack_delay > Duration::from_secs(1) {
            return fail("max_ack_delay must be positive and at most 1s");
        }
        if !(MIN_UDP_PAYLOAD_BYTES..=MAX_UDP_PAYLOAD_BYTES).contains(&self.max_udp_payload_bytes) {
            return fail("max_udp_payload_bytes must be in 1200..=65527");
        }
        if self.udp_receive_buffer_bytes > MAX_UDP_RECEIVE_BUFFER_BYTES {
            return fail("udp_receive_buffer_bytes must be at most 1 GiB (1073741824)");
        }
        if self.max_concurrent_streams == 0 {
            return fail("max_concurrent_streams must be at least 1");
        }
        if self.max_cached_connections == 0 {
            return fail("max_cached_connections must be at least 1");
        }
        for (name, value) in [
            ("max_incoming_connections", self.max_incoming_connections),
            ("max_client_connections", self.max_client_connections),
            ("max_peer_connections", self.max_peer_connections),
            (
                "max_connections_per_client",
                self.max_connections_per_client,
            ),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
            ),
        ] {
            if value == 0 {
                return Err(TransportError::Config(format!("{name} must be at least 1")));
            }
        }
        for (name, value) in [
            ("max_client_inflight_bytes", self.max_client_inflight_bytes),
            (
                "max_inflight_bytes_per_client",
                self.max_inflight_bytes_per_client,
            ),
            ("max_peer_inflight_bytes", self.max_peer_inflight_bytes),
        ] {
            // A frame of the largest allowed size must fit, or it could never be served.
            if value < self.max_frame_bytes || value > MAX_INFLIGHT_BYTES {
                return Err(TransportError::Config(format!(
                    "{name} must be in max_frame_bytes ({})..={MAX_INFLIGHT_BYTES}",
                    self.max_frame_bytes
                )));
            }
        }
        for (name, value) in [
            ("client_idle_timeout", self.client_idle_timeout),
            ("request_read_timeout", self.request_read_timeout),
            ("response_write_timeout", self.response_write_timeout),
        ] {
            if value.is_zero() || value > MAX_SERVER_TIMEOUT {
                return Err(TransportError::Config(format!(
                    "{name} must be positive and at most {MAX_SERVER_TIMEOUT:?}"
                )));
            }
        }
        Ok(())
    }

    /// The quinn endpoint settings derived from this config (call after `validate`): the
    /// largest datagram accepted from peers, and the stateless reset and connection id
    /// keys made from `secret` (see `TlsIdentity::endpoint_secret`; quinn's defaults are
    /// random per process, so a restarted node neither recognised the connection ids of
    /// its previous process nor could reset their connections).
    pub(crate) fn quinn_endpoint(
        &self,
        secret: &[u8; 32],
    ) -> Result<quinn::EndpointConfig, TransportError> {
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&reset_key, b"connection id key");
        let mut cid_key = [0; 8];
        cid_key.copy_from_slice(&tag.as_ref()[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        let mut endpoint = quinn::EndpointConfig::new(Arc::new(reset_key));
        endpoint.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        endpoint
            .max_udp_payload_size(self.max_udp_payload_bytes)
            .map_err(|e| TransportError::Config(format!("max_udp_payload_bytes: {e}")))?;
        Ok(endpoint)
    }

    /// The quinn transport settings derived from this config (call after `validate`).
    pub(crate) fn quinn_transport(&self) -> Result<Arc<quinn::TransportConfig>, TransportError> {
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| TransportError::Config("idle_timeout is too large for QUIC".into()))?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(self.max_concurrent_streams))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
            // quinn's default connection receive window is unlimited: bytes a peer sends
            // on many streams at once would all be buffered. Bound it (streams keep their
            // own, smaller windows; a larger frame still arrives, paced by flow control).
            .receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW_BYTES))
            .datagram_receive_buffer_size(None);
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_udp_payload_bytes);
        transport.mtu_discovery_config(Some(mtu));
        if self.ack_eliciting_threshold > 0 {
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.ack_eliciting_threshold(quinn::VarInt::from_u32(self.ack_eliciting_threshold))
                .max_ack_delay(Some(self.max_ack_delay));
            transport.ack_frequency_config(Some(ack));
        }
        Ok(Arc::new(transport))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        TransportConfig::default().validate().unwrap();
    }

    #[test]
    fn max_ack_delay_out_of_range_is_refused_and_a_threshold_builds() {
        for delay in [Duration::ZERO, Duration::from_secs(2)] {
            let config = TransportConfig {
                max_ack_delay: delay,
                ..TransportConfig::default()
            };
            assert!(config.validate().is_err(), "{delay:?} accepted");
        }
        let config = TransportConfig {
            ack_eliciting_threshold: 8,
            ..TransportConfig::default()
        };
        config.validate().unwrap();
        config.quinn_transport().unwrap();
    }

    #[test]
    fn keep_alive_not_shorter_than_idle_timeout_is_refused() {
        let config = TransportConfig {
            keep_alive: Duration::from_secs(30),
            ..TransportConfig::default()
        };
        assert!(matches!(config.validate(), Err(TransportError::Config(_))));
    }

    /// `config` fails validation with a message naming `field`.
    fn assert_refused(config: &TransportConfig, field: &str, what: &str) {
        assert!(
            matches!(config.validate(), Err(TransportError::Config(m)) if m.contains(field)),
            "{what} accepted"
        );
    }

    #[test]
    fn udp_bounds_outside_their_ranges_are_refused() {
        for bad in [1199u16, 65528] {
            let config = TransportConfig {
                max_udp_payload_bytes: bad,
                ..TransportConfig::default()
            };
            assert_refused(&config, "max_udp_payload_bytes", &bad.to_string());
        }
        let too_large = TransportConfig {
            udp_receive_buffer_bytes: (1 << 30) + 1,
            ..TransportConfig::default()
        };
        assert_refused(
            &too_large,
            "udp_receive_buffer_bytes",
            "a receive buffer past 1 GiB",
        );
    }

    #[test]
    fn an_inflight_budget_smaller_than_one_frame_is_refused() {
        let config = TransportConfig {
            max_frame_bytes: 1024,
            max_client_inflight_bytes: 1023,
            ..TransportConfig::default()
        };
        assert_refused(
            &config,
            "max_client_inflight_bytes",
            "a budget under one frame",
        );
        let config = TransportConfig {
            max_frame_bytes: 1024,
            max_client_inflight_bytes: 1024,
            max_inflight_bytes_per_client: 1024,
            max_peer_inflight_bytes: 1024,
            ..TransportConfig::default()
        };
        config.validate().unwrap();
    }

    #[test]
    fn zero_bounds_are_refused() {
        for config in [
            TransportConfig {
                max_frame_bytes: 0,
                ..TransportConfig::default()
            },
            TransportConfig {
                max_concurrent_streams: 0,
                ..TransportConfig::default()
            },
            TransportConfig {
                max_cached_connections: 0,
                ..TransportConfig::default()
            },
            TransportConfig {
                connect_timeout: Duration::ZERO,
                ..TransportConfig::default()
            },
            TransportConfig {
                max_connections_per_client: 0,
                ..TransportConfig::default()
            },
            TransportConfig {
                request_read_timeout: Duration::ZERO,
                ..TransportConfig::default()
            },
            TransportConfig {
                client_idle_timeout: Duration::MAX,
                ..TransportConfig::default()
            },
        ] {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
