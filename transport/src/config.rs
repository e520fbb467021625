//! Transport settings and the bounds they put on every connection.

use std::{sync::Arc, time::Duration};

use crate::error::TransportError;

/// Default frame limit: an 8 MiB value plus 64 KiB for the key, context and envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024 + 64 * 1024;

/// Settings of an [`Endpoint`](crate::Endpoint). Every field is a bound; see
/// [`TransportConfig::validate`] for the rules between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Largest frame payload accepted or sent, in bytes (the 4-byte length prefix is not
    /// counted). Must be at least 1 and at most `u32::MAX`.
    pub max_frame_bytes: usize,
    /// A connection with no traffic for this long is closed (QUIC idle timeout).
    pub idle_timeout: Duration,
    /// Interval of QUIC keep-alive pings, so idle cached connections stay open while the
    /// peer lives; must be shorter than `idle_timeout`.
    pub keep_alive: Duration,
    /// Longest wait for a new outgoing connection (QUIC + TLS handshake).
    pub connect_timeout: Duration,
    /// Concurrent request streams a peer may open on one connection; further streams wait
    /// for flow-control credit.
    pub max_concurrent_streams: u32,
    /// Outgoing connections kept in the cache (one per peer address); the least recently
    /// used is closed when a new address needs room.
    pub max_cached_connections: usize,
    /// Incoming connections a server accepts at once; more are refused.
    pub max_incoming_connections: usize,
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
        if self.max_concurrent_streams == 0 {
            return fail("max_concurrent_streams must be at least 1");
        }
        if self.max_cached_connections == 0 {
            return fail("max_cached_connections must be at least 1");
        }
        if self.max_incoming_connections == 0 {
            return fail("max_incoming_connections must be at least 1");
        }
        Ok(())
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
            .datagram_receive_buffer_size(None);
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
    fn keep_alive_not_shorter_than_idle_timeout_is_refused() {
        let config = TransportConfig {
            keep_alive: Duration::from_secs(30),
            ..TransportConfig::default()
        };
        assert!(matches!(config.validate(), Err(TransportError::Config(_))));
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
        ] {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
