//! Peer roles: who is at the other end of a connection, read from the certificate.
//!
//! A Shoal certificate carries exactly one URI subject alternative name with the `shoal`
//! scheme: `shoal://node/<node-id>` or `shoal://client/<name>`. The transport extracts it
//! from the peer's end-entity certificate on every connection, after the chain has been
//! verified against the cluster CA, so the role handed to the node layer is authentic.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use shoal_ring::NodeId;

/// URI prefix of a node certificate's role SAN; the node id follows.
pub const NODE_URI_PREFIX: &str = "shoal://node/";
/// URI prefix of a client certificate's role SAN; the client name follows.
pub const CLIENT_URI_PREFIX: &str = "shoal://client/";
/// Scheme that marks a URI SAN as a Shoal role (other URIs are ignored).
const ROLE_SCHEME: &str = "shoal://";

/// The authenticated role of a peer, taken from its certificate.
///
/// The transport guarantees the role is authentic (the certificate chains to the cluster
/// CA and the peer proved it holds the key); the node layer decides what each role may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// A cluster member, allowed (by the node layer) to send node-to-node messages.
    Node(NodeId),
    /// An SDK/CLI client identified by a name; never allowed node-to-node messages.
    Client(String),
}

impl PeerRole {
    /// The URI SAN that encodes this role in a certificate.
    pub fn san_uri(&self) -> String {
        match self {
            PeerRole::Node(id) => format!("{NODE_URI_PREFIX}{}", id.as_str()),
            PeerRole::Client(name) => format!("{CLIENT_URI_PREFIX}{name}"),
        }
    }

    /// The node id if this is a node role.
    pub fn node_id(&self) -> Option<&NodeId> {
        match self {
            PeerRole::Node(id) => Some(id),
            PeerRole::Client(_) => None,
        }
    }

    /// Short name of the role kind (`"node"` or `"client"`), for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerRole::Node(_) => "node",
            PeerRole::Client(_) => "client",
        }
    }

    /// Reads the role from a DER-encoded end-entity certificate.
    ///
    /// Exactly one `shoal://` URI SAN must be present and well formed; a certificate with
    /// none, with several, or with an unknown kind is refused.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<PeerRole, RoleError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| RoleError::Unparseable(e.to_string()))?;
        let san = parsed
            .subject_alternative_name()
            .map_err(|e| RoleError::Unparseable(e.to_string()))?;
        let mut role_uris = san
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(ROLE_SCHEME) => Some(*uri),
                _ => None,
            });
        let Some(uri) = role_uris.next() else {
            return Err(RoleError::Missing);
        };
        if role_uris.next().is_some() {
            return Err(RoleError::Ambiguous);
        }
        PeerRole::from_san_uri(uri)
    }

    /// Parses a role SAN URI (`shoal://node/<id>` or `shoal://client/<name>`).
    pub fn from_san_uri(uri: &str) -> Result<PeerRole, RoleError> {
        if let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) {
            let id = NodeId::new(id).map_err(|e| RoleError::InvalidName {
                uri: uri.to_owned(),
                reason: e.to_string(),
            })?;
            Ok(PeerRole::Node(id))
        } else if let Some(name) = uri.strip_prefix(CLIENT_URI_PREFIX) {
            validate_client_name(name).map_err(|reason| RoleError::InvalidName {
                uri: uri.to_owned(),
                reason,
            })?;
            Ok(PeerRole::Client(name.to_owned()))
        } else {
            Err(RoleError::UnknownKind(uri.to_owned()))
        }
    }
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRole::Node(id) => write!(f, "node {id}"),
            PeerRole::Client(name) => write!(f, "client {name}"),
        }
    }
}

/// Checks a client name with the same rules as a node id (it ends up in a URI SAN).
pub(crate) fn validate_client_name(name: &str) -> Result<(), String> {
    NodeId::new(name).map(|_| ()).map_err(|e| e.to_string())
}

/// Why a certificate does not carry a usable Shoal role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoleError {
    /// The certificate (or its SAN extension) could not be parsed as X.509.
    #[error("certificate cannot be parsed: {0}")]
    Unparseable(String),
    /// No `shoal://` URI SAN: the certificate was not issued for Shoal.
    #[error("certificate has no shoal:// role URI")]
    Missing,
    /// More than one `shoal://` URI SAN: a certificate must carry exactly one role.
    #[error("certificate has more than one shoal:// role URI")]
    Ambiguous,
    /// A `shoal://` URI whose kind is neither `node` nor `client`.
    #[error("unknown role URI {0:?}")]
    UnknownKind(String),
    /// The node id or client name in the role URI is not valid.
    #[error("invalid name in role URI {uri:?}: {reason}")]
    InvalidName {
        /// The offending URI.
        uri: String,
        /// Why the name is refused.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_uri_round_trips_for_both_roles() {
        let node = PeerRole::Node(NodeId::new("n1").unwrap());
        let client = PeerRole::Client("cli".to_owned());
        assert_eq!(node.san_uri(), "shoal://node/n1");
        assert_eq!(client.san_uri(), "shoal://client/cli");
        assert_eq!(PeerRole::from_san_uri(&node.san_uri()).unwrap(), node);
        assert_eq!(PeerRole::from_san_uri(&client.san_uri()).unwrap(), client);
    }

    #[test]
    fn unknown_kind_and_bad_names_are_refused() {
        assert!(matches!(
            PeerRole::from_san_uri("shoal://admin/x"),
            Err(RoleError::UnknownKind(_))
        ));
        assert!(matches!(
            PeerRole::from_san_uri("shoal://node/"),
            Err(RoleError::InvalidName { .. })
        ));
        assert!(matches!(
            PeerRole::from_san_uri("shoal://client/a/b"),
            Err(RoleError::InvalidName { .. })
        ));
    }

    #[test]
    fn garbage_certificate_is_unparseable() {
        let der = CertificateDer::from(vec![1, 2, 3]);
        assert!(matches!(
            PeerRole::from_certificate(&der),
            Err(RoleError::Unparseable(_))
        ));
    }
}
