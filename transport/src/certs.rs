//! Certificate authority and leaf certificates for development and small deployments
//! (`shoal cert`): a cluster CA, node certificates and client certificates, as PEM.
//!
//! Keys are ECDSA P-256. A leaf carries its role as a URI SAN (`shoal://node/<id>` or
//! `shoal://client/<name>`); node certificates also carry the DNS SAN
//! [`NODE_SERVER_NAME`], the TLS server name every dialer uses, and are valid for both
//! server and client authentication (a node dials other nodes). Client certificates are
//! valid for client authentication only. Files are never overwritten, and private keys
//! are written with mode 0600.

use std::{
    fmt,
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;

use shoal_ring::NodeId;

use crate::pem::{parse_certs_pem, read_text};
use crate::{
    error::{CertificateError, TransportError},
    role::{validate_client_name, PeerRole},
};

/// File name of the CA certificate in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of a node certificate.
pub const NODE_CERT_FILE: &str = "node.pem";
/// File name of a node private key.
pub const NODE_KEY_FILE: &str = "node.key";
/// File name of a client certificate.
pub const CLIENT_CERT_FILE: &str = "client.pem";
/// File name of a client private key.
pub const CLIENT_KEY_FILE: &str = "client.key";
pub use crate::pem::NODE_SERVER_NAME;
/// Validity of a generated CA certificate (10 years).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of an issued node or client certificate (2 years).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Certificates start being valid this long before issuance, to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A CA certificate and its private key, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    /// The self-signed CA certificate.
    pub cert_pem: String,
    /// The CA private key (PKCS#8). Keep it secret: it can mint any node identity.
    pub key_pem: String,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A leaf certificate (chain: the leaf only) and its private key, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct LeafPem {
    /// The leaf certificate, signed by the cluster CA.
    pub cert_chain_pem: String,
    /// The leaf private key (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for LeafPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafPem")
            .field("cert_chain_pem", &self.cert_chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Generates a new cluster CA in memory.
pub fn generate_ca_pem() -> Result<CaPem, CertificateError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Shoal");
    name.push(DnType::CommonName, "Shoal cluster CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    Ok(CaPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a node certificate for `id` in memory (SAN `shoal://node/<id>` and DNS
/// [`NODE_SERVER_NAME`]; server and client authentication).
pub fn issue_node_cert_pem(ca: &CaPem, id: &NodeId) -> Result<LeafPem, CertificateError> {
    issue_node_cert_pem_valid_for(ca, id, LEAF_VALIDITY)
}

/// [`issue_node_cert_pem`] valid for `validity` from now instead of [`LEAF_VALIDITY`]
/// (short-lived certificates rotated often, tests of expiry monitoring).
pub fn issue_node_cert_pem_valid_for(
    ca: &CaPem,
    id: &NodeId,
    validity: Duration,
) -> Result<LeafPem, CertificateError> {
    issue_leaf(ca, &PeerRole::Node(id.clone()), validity)
}

/// Issues a client certificate for `name` in memory (SAN `shoal://client/<name>`; client
/// authentication only). The name follows the same rules as a node id.
pub fn issue_client_cert_pem(ca: &CaPem, name: &str) -> Result<LeafPem, CertificateError> {
    validate_client_name(name).map_err(|reason| CertificateError::InvalidName {
        kind: "client",
        name: name.to_owned(),
        reason,
    })?;
    issue_leaf(ca, &PeerRole::Client(name.to_owned()), LEAF_VALIDITY)
}

/// Generates a cluster CA and writes `ca.pem` and `ca.key` (mode 0600) into `dir`,
/// creating the directory if needed. Existing files are never overwritten.
pub fn generate_ca(dir: &Path) -> Result<(), TransportError> {
    let ca = generate_ca_pem()?;
    write_pair(dir, CA_CERT_FILE, &ca.cert_pem, CA_KEY_FILE, &ca.key_pem)?;
    Ok(())
}

/// Issues a node certificate signed by the CA in `ca_dir` and writes `node.pem` and
/// `node.key` (mode 0600) into `out`. Existing files are never overwritten.
pub fn issue_node_cert(ca_dir: &Path, id: &NodeId, out: &Path) -> Result<(), TransportError> {
    issue_node_cert_valid_for(ca_dir, id, out, LEAF_VALIDITY)
}

/// [`issue_node_cert`] valid for `validity` from now instead of [`LEAF_VALIDITY`].
pub fn issue_node_cert_valid_for(
    ca_dir: &Path,
    id: &NodeId,
    out: &Path,
    validity: Duration,
) -> Result<(), TransportError> {
    let ca = read_ca(ca_dir)?;
    let leaf = issue_node_cert_pem_valid_for(&ca, id, validity)?;
    write_pair(
        out,
        NODE_CERT_FILE,
        &leaf.cert_chain_pem,
        NODE_KEY_FILE,
        &leaf.key_pem,
    )?;
    Ok(())
}

/// Issues a client certificate signed by the CA in `ca_dir` and writes `client.pem` and
/// `client.key` (mode 0600) into `out`. Existing files are never overwritten.
pub fn issue_client_cert(ca_dir: &Path, name: &str, out: &Path) -> Result<(), TransportError> {
    let ca = read_ca(ca_dir)?;
    let leaf = issue_client_cert_pem(&ca, name)?;
    write_pair(
        out,
        CLIENT_CERT_FILE,
        &leaf.cert_chain_pem,
        CLIENT_KEY_FILE,
        &leaf.key_pem,
    )?;
    Ok(())
}

/// Reads `ca.pem` and `ca.key` from a CA directory.
pub fn read_ca(ca_dir: &Path) -> Result<CaPem, CertificateError> {
    Ok(CaPem {
        cert_pem: read_text(&ca_dir.join(CA_CERT_FILE), "CA certificate")?,
        key_pem: read_text(&ca_dir.join(CA_KEY_FILE), "CA private key")?,
    })
}

/// Sets not_before (backdated for clock skew) and not_after on certificate params.
fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now + validity;
}

/// Signs a leaf certificate for `role` with the CA.
fn issue_leaf(
    ca: &CaPem,
    role: &PeerRole,
    validity: Duration,
) -> Result<LeafPem, CertificateError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| CertificateError::InvalidPem {
        what: "CA private key".to_owned(),
        reason: e.to_string(),
    })?;
    let ca_der = parse_certs_pem(&ca.cert_pem, "CA certificate")?
        .into_iter()
        .next()
        .ok_or_else(|| CertificateError::Empty {
            what: "CA certificate".to_owned(),
            item: "certificate",
        })?;
    check_ca(&ca_der, &ca_key)?;
    let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key)?;

    let uri = role.san_uri();
    let kind = role.kind();
    let name_error = |reason: String| CertificateError::InvalidName {
        kind,
        name: uri.clone(),
        reason,
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Shoal");
    dn.push(DnType::CommonName, format!("shoal {role}"));
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(
        uri.clone()
            .try_into()
            .map_err(|e: rcgen::Error| name_error(e.to_string()))?,
    )];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if let PeerRole::Node(_) = role {
        params.subject_alt_names.push(SanType::DnsName(
            NODE_SERVER_NAME
                .to_owned()
                .try_into()
                .map_err(|e: rcgen::Error| name_error(e.to_string()))?,
        ));
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity);

    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(LeafPem {
        cert_chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Refuses a CA certificate that is not a CA or does not belong to the CA key.
fn check_ca(ca_der: &CertificateDer<'_>, ca_key: &KeyPair) -> Result<(), CertificateError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(ca_der.as_ref()).map_err(|e| {
        CertificateError::InvalidCertificate {
            what: "CA certificate".to_owned(),
            reason: e.to_string(),
        }
    })?;
    if !parsed.is_ca() {
        return Err(CertificateError::InvalidCertificate {
            what: "CA certificate".to_owned(),
            reason: "basic constraints do not allow signing certificates".to_owned(),
        });
    }
    if parsed.public_key().raw != ca_key.subject_public_key_info().as_slice() {
        return Err(CertificateError::CaKeyMismatch);
    }
    Ok(())
}

/// Writes a certificate and its key into `dir` without overwriting anything; the key
/// file is created with mode 0600 on Unix.
fn write_pair(
    dir: &Path,
    cert_file: &str,
    cert_pem: &str,
    key_file: &str,
    key_pem: &str,
) -> Result<(), CertificateError> {
    fs::create_dir_all(dir).map_err(|source| CertificateError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(CertificateError::AlreadyExists { path: path.clone() });
        }
    }
    write_new_file(&key_path, key_pem, 0o600)?;
    write_new_file(&cert_path, cert_pem, 0o644)?;
    Ok(())
}

/// Creates `path` (failing if it exists) with the given Unix mode and writes `text`.
fn write_new_file(path: &Path, text: &str, mode: u32) -> Result<(), CertificateError> {
    let io_error = |source: io::Error| -> CertificateError {
        if source.kind() == io::ErrorKind::AlreadyExists {
            CertificateError::AlreadyExists {
                path: PathBuf::from(path),
            }
        } else {
            CertificateError::Write {
                path: PathBuf::from(path),
                source,
            }
        }
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(text.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn leaf_role(leaf: &LeafPem) -> PeerRole {
        let der = parse_certs_pem(&leaf.cert_chain_pem, "leaf").unwrap();
        PeerRole::from_certificate(&der[0]).unwrap()
    }

    #[test]
    fn issued_certificates_carry_their_role() {
        let ca = generate_ca_pem().unwrap();
        let n = issue_node_cert_pem(&ca, &node("n1")).unwrap();
        let c = issue_client_cert_pem(&ca, "cli").unwrap();
        assert_eq!(leaf_role(&n), PeerRole::Node(node("n1")));
        assert_eq!(leaf_role(&c), PeerRole::Client("cli".to_owned()));
    }

    #[test]
    fn node_certificate_has_server_name_and_client_certificate_has_not() {
        let ca = generate_ca_pem().unwrap();
        let dns = |leaf: &LeafPem| -> Vec<String> {
            let der = parse_certs_pem(&leaf.cert_chain_pem, "leaf").unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(der[0].as_ref()).unwrap();
            let san = cert.subject_alternative_name().unwrap().unwrap();
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        };
        let n = issue_node_cert_pem(&ca, &node("n1")).unwrap();
        let c = issue_client_cert_pem(&ca, "cli").unwrap();
        assert_eq!(dns(&n), vec![NODE_SERVER_NAME.to_owned()]);
        assert!(dns(&c).is_empty());
    }

    #[test]
    fn invalid_client_name_is_refused() {
        let ca = generate_ca_pem().unwrap();
        for bad in ["", "a/b", "has space"] {
            assert!(matches!(
                issue_client_cert_pem(&ca, bad),
                Err(CertificateError::InvalidName { kind: "client", .. })
            ));
        }
    }

    #[test]
    fn ca_key_of_another_ca_is_refused() {
        let ca = generate_ca_pem().unwrap();
        let other = generate_ca_pem().unwrap();
        let mixed = CaPem {
            cert_pem: ca.cert_pem,
            key_pem: other.key_pem,
        };
        assert!(matches!(
            issue_node_cert_pem(&mixed, &node("n1")),
            Err(CertificateError::CaKeyMismatch)
        ));
    }

    #[test]
    fn leaf_certificate_cannot_act_as_ca() {
        let ca = generate_ca_pem().unwrap();
        let leaf = issue_node_cert_pem(&ca, &node("n1")).unwrap();
        let fake = CaPem {
            cert_pem: leaf.cert_chain_pem,
            key_pem: leaf.key_pem,
        };
        assert!(matches!(
            issue_node_cert_pem(&fake, &node("n2")),
            Err(CertificateError::InvalidCertificate { .. })
        ));
    }

    #[test]
    fn garbage_pem_is_a_typed_error() {
        let bad = CaPem {
            cert_pem: "not pem".to_owned(),
            key_pem: "not pem either".to_owned(),
        };
        assert!(matches!(
            issue_node_cert_pem(&bad, &node("n1")),
            Err(CertificateError::InvalidPem { .. })
        ));
    }

    #[test]
    fn files_are_written_once_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        generate_ca(&ca_dir).unwrap();
        assert!(matches!(
            generate_ca(&ca_dir),
            Err(TransportError::Certificate(
                CertificateError::AlreadyExists { .. }
            ))
        ));
        let out = dir.path().join("n1");
        issue_node_cert(&ca_dir, &node("n1"), &out).unwrap();
        issue_client_cert(&ca_dir, "cli", &out).unwrap();
        for file in [
            NODE_CERT_FILE,
            NODE_KEY_FILE,
            CLIENT_CERT_FILE,
            CLIENT_KEY_FILE,
        ] {
            assert!(out.join(file).is_file(), "{file}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [ca_dir.join(CA_KEY_FILE), out.join(NODE_KEY_FILE)] {
                let mode = fs::metadata(&key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", key.display());
            }
        }
    }

    #[test]
    fn issuing_without_a_ca_reports_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue_node_cert(dir.path(), &node("n1"), &dir.path().join("out")).unwrap_err();
        match err {
            TransportError::Certificate(CertificateError::MissingFile { path, .. }) => {
                assert_eq!(path, dir.path().join(CA_CERT_FILE));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
