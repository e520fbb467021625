//! Hooks for hostile-client tests and benchmarks (feature `test-util`): raw QUIC
//! connections with an endpoint's identity, on which a test can send half frames or leave
//! responses unread, and handshakes without a client certificate. Nothing in a node or
//! the SDK uses them.

use std::{net::SocketAddr, time::Duration};

use crate::{certs::NODE_SERVER_NAME, tls, Endpoint, TlsIdentity, TransportConfig, TransportError};

/// A raw connection to `addr` with `endpoint`'s identity (its cached one, dialled if
/// needed): open streams on it and write whatever bytes the test wants.
pub async fn raw_connection(
    endpoint: &Endpoint,
    addr: SocketAddr,
) -> Result<quinn::Connection, TransportError> {
    endpoint.raw_connection(addr).await
}

/// Dials with a TLS client that trusts the cluster CA but presents no certificate, as
/// anyone who can send UDP to a node can. Every handshake must fail.
pub struct CertlessDialer {
    endpoint: quinn::Endpoint,
}

impl CertlessDialer {
    /// A dialer trusting `identity`'s CA, bound to an ephemeral port on 127.0.0.1.
    pub fn new(identity: &TlsIdentity) -> Result<CertlessDialer, TransportError> {
        let tls = tls::client_tls_without_certificate(identity)?;
        let config = tls::quic_client_config(tls, &TransportConfig::default())?;
        let mut endpoint =
            quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(|source| {
                TransportError::Io {
                    context: "binding the certless dialer",
                    source,
                }
            })?;
        endpoint.set_default_client_config(config);
        Ok(CertlessDialer { endpoint })
    }

    /// Attempts one handshake and one request stream; returns what refused it.
    /// `Ok(())` would mean a node served a connection without a client certificate.
    pub async fn try_connect(&self, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
        let attempt = async {
            let connection = self
                .endpoint
                .connect(addr, NODE_SERVER_NAME)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            // TLS 1.3 lets the client finish before the server has checked it: the
            // refusal may only show on first use.
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(&[0, 0, 0, 0])
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            recv.read_to_end(64).await.map_err(|e| e.to_string())?;
            Ok(())
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err("timed out".to_owned()),
        }
    }

    /// Closes the dialer's endpoint.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"done");
    }
}
