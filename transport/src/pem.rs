//! PEM reading shared by loading identities (always compiled) and generating
//! certificates (the `certs` feature).

use std::{fs, io, path::Path};

use rustls_pki_types::{pem::PemObject, CertificateDer};

use crate::error::CertificateError;

/// DNS SAN of every node certificate; dialers use it as the TLS server name.
pub const NODE_SERVER_NAME: &str = "shoal-node";

/// Reads a whole text file, telling a missing file apart from other read errors.
pub(crate) fn read_text(path: &Path, what: &'static str) -> Result<String, CertificateError> {
    fs::read_to_string(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            CertificateError::MissingFile {
                what,
                path: path.to_owned(),
            }
        } else {
            CertificateError::Read {
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// Parses every certificate of a PEM text (and refuses text without any).
pub(crate) fn parse_certs_pem(
    pem: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::InvalidPem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertificateError::Empty {
            what: what.to_owned(),
            item: "certificate",
        });
    }
    Ok(certs)
}
