//! rustls and quinn crypto configuration: mutual TLS 1.3 under the cluster CA, ALPN
//! `shoal/1`, and verifiers that also demand a valid Shoal role in the peer certificate.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        WebPkiClientVerifier,
    },
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{
    config::TransportConfig, error::TransportError, identity::TlsIdentity, role::PeerRole,
};

/// The only application protocol spoken: Shoal framing version 1.
pub const ALPN: &[u8] = b"shoal/1";

/// The ring-based crypto provider (the only one compiled in).
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(e: impl std::fmt::Display) -> TransportError {
    TransportError::TlsConfig(e.to_string())
}

fn roots(identity: &TlsIdentity) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca_cert().clone()).map_err(tls_error)?;
    Ok(Arc::new(roots))
}

/// Server side: requires a client certificate chained to the cluster CA with a valid role.
pub(crate) fn server_config(
    identity: &TlsIdentity,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = crypto_provider();
    let inner = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider.clone())
        .build()
        .map_err(tls_error)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(Arc::new(RoleClientVerifier { inner }))
        .with_single_cert(identity.cert_chain().to_vec(), identity.key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(tls_error)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(config.quinn_transport()?);
    server.migration(false);
    Ok(server)
}

/// Client side: presents our certificate, requires a server certificate chained to the
/// cluster CA, valid for [`NODE_SERVER_NAME`](crate::certs::NODE_SERVER_NAME), with a valid role.
pub(crate) fn client_config(
    identity: &TlsIdentity,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, TransportError> {
    quic_client_config(client_tls(identity)?, config)
}

/// Wraps a rustls client configuration for quinn.
pub(crate) fn quic_client_config(
    tls: rustls::ClientConfig,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(config.quinn_transport()?);
    Ok(client)
}

/// A rustls client builder that requires a server certificate chained to the cluster
/// CA with a valid node role; what the client presents is for the caller to add.
fn client_tls_builder(
    identity: &TlsIdentity,
) -> Result<
    rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    TransportError,
> {
    let provider = crypto_provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots(identity)?, provider.clone())
        .build()
        .map_err(tls_error)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RoleServerVerifier { inner })))
}

/// The rustls side of [`client_config`].
pub(crate) fn client_tls(identity: &TlsIdentity) -> Result<rustls::ClientConfig, TransportError> {
    let mut tls = client_tls_builder(identity)?
        .with_client_auth_cert(identity.cert_chain().to_vec(), identity.key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    Ok(tls)
}

/// A rustls client that trusts the cluster CA but has no certificate of its own (tests
/// of servers refusing it).
#[cfg(feature = "test-util")]
pub(crate) fn client_tls_without_certificate(
    identity: &TlsIdentity,
) -> Result<rustls::ClientConfig, TransportError> {
    let mut tls = client_tls_builder(identity)?.with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    Ok(tls)
}

/// Refuses a certificate without exactly one valid Shoal role.
fn require_role(end_entity: &CertificateDer<'_>) -> Result<PeerRole, rustls::Error> {
    PeerRole::from_certificate(end_entity).map_err(|e| {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
    })
}

/// Reads the authenticated role from an established connection's peer certificate.
pub(crate) fn peer_role(connection: &quinn::Connection) -> Result<PeerRole, String> {
    let identity = connection
        .peer_identity()
        .ok_or_else(|| "peer presented no certificate".to_owned())?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "peer identity is not a certificate chain".to_owned())?;
    let leaf = chain
        .first()
        .ok_or_else(|| "peer certificate chain is empty".to_owned())?;
    PeerRole::from_certificate(leaf).map_err(|e| e.to_string())
}

/// Checks that the connection negotiated our ALPN protocol (rustls already refuses a
/// peer offering none of ours; this also refuses a peer that offered none at all).
pub(crate) fn check_alpn(connection: &quinn::Connection) -> Result<(), String> {
    let protocol = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match protocol {
        Some(p) if p == ALPN => Ok(()),
        Some(p) => Err(format!(
            "unexpected ALPN protocol {:?}",
            String::from_utf8_lossy(&p)
        )),
        None => Err("no ALPN protocol negotiated".to_owned()),
    }
}

/// WebPKI client verification (chain to the cluster CA) plus a valid role.
#[derive(Debug)]
struct RoleClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RoleClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        require_role(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// WebPKI server verification (chain to the cluster CA, server name) plus a valid role.
/// Which role is acceptable is decided after the handshake, per request.
#[derive(Debug)]
struct RoleServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for RoleServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        require_role(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}
