//! The TLS identity of an endpoint: the cluster CA it trusts, and its own certificate and
//! key.

use std::{fmt, path::Path, sync::Arc};

use rustls::{server::WebPkiClientVerifier, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, UnixTime};

use crate::{
    error::CertificateError,
    pem::{parse_certs_pem, read_text},
    role::PeerRole,
    tls::crypto_provider,
};

/// What an endpoint needs for mutual TLS: the cluster CA certificate (the only trust
/// anchor), its own certificate chain (leaf first) and the leaf's private key.
///
/// Loading checks that the leaf chains to the CA, is currently valid and carries exactly
/// one Shoal role.
pub struct TlsIdentity {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    role: PeerRole,
    expiry: CertificateExpiry,
}

/// When an identity's certificates stop being valid (their notAfter), in seconds since
/// the Unix epoch: exported by nodes so that an alert fires before a certificate expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// notAfter of the leaf (the endpoint's own certificate).
    pub leaf: i64,
    /// notAfter of the cluster CA certificate.
    pub ca: i64,
}

impl TlsIdentity {
    /// Loads an identity from PEM files: the CA certificate, the certificate chain (leaf
    /// first) and the private key.
    pub fn load(
        ca_path: &Path,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<TlsIdentity, CertificateError> {
        let ca_pem = read_text(ca_path, "CA certificate")?;
        let chain_pem = read_text(cert_path, "certificate")?;
        let key_pem = read_text(key_path, "private key")?;
        Self::from_pem_described(
            &ca_pem,
            &ca_path.display().to_string(),
            &chain_pem,
            &cert_path.display().to_string(),
            &key_pem,
            &key_path.display().to_string(),
        )
    }

    /// Builds an identity from PEM text (see [`TlsIdentity::load`]).
    pub fn from_pem(
        ca_pem: &str,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> Result<TlsIdentity, CertificateError> {
        Self::from_pem_described(
            ca_pem,
            "CA certificate",
            cert_chain_pem,
            "certificate chain",
            key_pem,
            "private key",
        )
    }

    fn from_pem_described(
        ca_pem: &str,
        ca_what: &str,
        chain_pem: &str,
        chain_what: &str,
        key_pem: &str,
        key_what: &str,
    ) -> Result<TlsIdentity, CertificateError> {
        let mut cas = parse_certs_pem(ca_pem, ca_what)?;
        if cas.len() != 1 {
            return Err(CertificateError::InvalidCertificate {
                what: ca_what.to_owned(),
                reason: format!("expected exactly one CA certificate, found {}", cas.len()),
            });
        }
        let ca = cas.remove(0);
        let chain = parse_certs_pem(chain_pem, chain_what)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => CertificateError::Empty {
                what: key_what.to_owned(),
                item: "private key",
            },
            other => CertificateError::InvalidPem {
                what: key_what.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let role = PeerRole::from_certificate(&chain[0])?;
        verify_chain(&ca, ca_what, &chain, chain_what)?;
        let expiry = CertificateExpiry {
            leaf: not_after(&chain[0], chain_what)?,
            ca: not_after(&ca, ca_what)?,
        };
        Ok(TlsIdentity {
            ca,
            chain,
            key,
            role,
            expiry,
        })
    }

    /// Builds an identity without checking that the leaf chains to the CA, for tests of
    /// what a peer does with such a certificate.
    #[cfg(test)]
    pub(crate) fn from_pem_unchecked(ca_pem: &str, cert_chain_pem: &str, key_pem: &str) -> Self {
        let ca = parse_certs_pem(ca_pem, "CA").unwrap().remove(0);
        let chain = parse_certs_pem(cert_chain_pem, "chain").unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let role = PeerRole::from_certificate(&chain[0]).unwrap();
        let expiry = CertificateExpiry {
            leaf: not_after(&chain[0], "chain").unwrap(),
            ca: not_after(&ca, "CA").unwrap(),
        };
        TlsIdentity {
            ca,
            chain,
            key,
            role,
            expiry,
        }
    }

    /// The role this identity's certificate carries.
    pub fn role(&self) -> &PeerRole {
        &self.role
    }

    /// When the leaf and the CA certificate expire.
    pub fn expiry(&self) -> CertificateExpiry {
        self.expiry
    }

    /// The cluster CA certificate (DER).
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The certificate chain, leaf first (DER).
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The secret the endpoint's QUIC stateless resets (RFC 9000 §10.3) and connection
    /// ids are made with, derived from the private key: an endpoint restarted with its
    /// key (a node's restart) recognises the connection ids of its previous process and
    /// answers their packets with resets those connections accept, so that its peers
    /// drop them at their next packet instead of sending into them until a timeout.
    /// Knowing the secret forges those resets; the private key impersonates the
    /// endpoint anyway.
    pub(crate) fn endpoint_secret(&self) -> [u8; 32] {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(b"shoal quic endpoint secret v1\0");
        digest.update(self.key.secret_der());
        let mut secret = [0; 32];
        secret.copy_from_slice(digest.finish().as_ref());
        secret
    }

    /// A copy of the private key, for building TLS configurations.
    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            role: self.role.clone(),
            expiry: self.expiry,
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("role", &self.role)
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The notAfter (seconds since the Unix epoch) of the first certificate of a PEM file,
/// for tools that report what they issued.
pub fn certificate_file_not_after(path: &Path) -> Result<i64, CertificateError> {
    let what = path.display().to_string();
    let pem = read_text(path, "certificate")?;
    let certs = parse_certs_pem(&pem, &what)?;
    not_after(&certs[0], &what)
}

/// A certificate's notAfter, in seconds since the Unix epoch.
fn not_after(cert: &CertificateDer<'_>, what: &str) -> Result<i64, CertificateError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
        CertificateError::InvalidCertificate {
            what: what.to_owned(),
            reason: e.to_string(),
        }
    })?;
    Ok(parsed.validity().not_after.timestamp())
}

/// Checks that the leaf chains to the CA and is valid now, as a peer would.
fn verify_chain(
    ca: &CertificateDer<'static>,
    ca_what: &str,
    chain: &[CertificateDer<'static>],
    chain_what: &str,
) -> Result<(), CertificateError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| CertificateError::InvalidCertificate {
            what: ca_what.to_owned(),
            reason: e.to_string(),
        })?;
    // Every Shoal leaf is valid for client authentication, so the client verifier checks
    // the chain, validity period and key usage of both roles.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .map_err(|e| CertificateError::InvalidCertificate {
            what: ca_what.to_owned(),
            reason: e.to_string(),
        })?;
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map_err(|e| CertificateError::InvalidCertificate {
            what: chain_what.to_owned(),
            reason: format!("not valid under the cluster CA: {e}"),
        })?;
    Ok(())
}

#[cfg(all(test, feature = "certs"))]
mod tests {
    use super::*;
    use crate::certs;
    use shoal_ring::NodeId;

    #[test]
    fn identity_from_pem_knows_its_role() {
        let ca = certs::generate_ca_pem().unwrap();
        let leaf = certs::issue_node_cert_pem(&ca, &NodeId::new("n1").unwrap()).unwrap();
        let id = TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.key_pem).unwrap();
        assert_eq!(id.role(), &PeerRole::Node(NodeId::new("n1").unwrap()));
        assert!(!format!("{id:?}").contains("PRIVATE"));
        // Issued now: the leaf for LEAF_VALIDITY, the CA for CA_VALIDITY (a few seconds
        // of slack for the time between issuing and this check).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let expiry = id.expiry();
        let leaf = certs::LEAF_VALIDITY.as_secs() as i64;
        let ca_validity = certs::CA_VALIDITY.as_secs() as i64;
        assert!((expiry.leaf - (now + leaf)).abs() < 60, "{expiry:?}");
        assert!((expiry.ca - (now + ca_validity)).abs() < 60, "{expiry:?}");
        let month = std::time::Duration::from_secs(30 * 24 * 3600);
        let short =
            certs::issue_node_cert_pem_valid_for(&ca, &NodeId::new("n1").unwrap(), month).unwrap();
        let id =
            TlsIdentity::from_pem(&ca.cert_pem, &short.cert_chain_pem, &short.key_pem).unwrap();
        let leaf = id.expiry().leaf;
        assert!((leaf - (now + month.as_secs() as i64)).abs() < 60, "{leaf}");
    }

    #[test]
    fn leaf_from_another_ca_is_refused_at_load() {
        let ca = certs::generate_ca_pem().unwrap();
        let other = certs::generate_ca_pem().unwrap();
        let leaf = certs::issue_client_cert_pem(&other, "cli").unwrap();
        assert!(matches!(
            TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.key_pem),
            Err(CertificateError::InvalidCertificate { .. })
        ));
    }

    #[test]
    fn missing_key_is_a_typed_error() {
        let ca = certs::generate_ca_pem().unwrap();
        let leaf = certs::issue_client_cert_pem(&ca, "cli").unwrap();
        assert!(matches!(
            TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.cert_chain_pem),
            Err(CertificateError::Empty {
                item: "private key",
                ..
            })
        ));
    }

    #[test]
    fn load_reads_files_written_by_certs() {
        let dir = tempfile::tempdir().unwrap();
        certs::generate_ca(dir.path()).unwrap();
        certs::issue_client_cert(dir.path(), "cli", dir.path()).unwrap();
        let id = TlsIdentity::load(
            &dir.path().join(certs::CA_CERT_FILE),
            &dir.path().join(certs::CLIENT_CERT_FILE),
            &dir.path().join(certs::CLIENT_KEY_FILE),
        )
        .unwrap();
        assert_eq!(id.role(), &PeerRole::Client("cli".to_owned()));
        assert!(matches!(
            TlsIdentity::load(
                &dir.path().join("nope.pem"),
                &dir.path().join(certs::CLIENT_CERT_FILE),
                &dir.path().join(certs::CLIENT_KEY_FILE),
            ),
            Err(CertificateError::MissingFile { .. })
        ));
    }
}
