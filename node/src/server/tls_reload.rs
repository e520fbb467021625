//! The node's TLS files: loaded and checked at start, reloaded on SIGHUP (certificate
//! rotation without a restart), and the expiry of what is in use exported as gauges.
//!
//! A reload reads the CA, certificate and key files named in the config again, checks
//! them as start-up does (chain to the CA, valid now, the certificate names this node),
//! and only then swaps them into the endpoint: connections accepted or dialled from then
//! on use them, open connections keep theirs. Anything wrong and nothing changes: the
//! node keeps serving on its previous certificates, logs why and counts the error.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use shoal_ring::NodeId;
use shoal_transport::{Endpoint, PeerRole, TlsIdentity};
use tracing::{error, info};

use crate::config::NodeConfig;
use crate::metrics::{TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS, TLS_RELOADS_TOTAL};

/// Where a node's TLS files are, resolved against its config file's directory.
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    id: NodeId,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFiles {
    pub(crate) fn new(cfg: &NodeConfig) -> TlsFiles {
        TlsFiles {
            id: cfg.id.clone(),
            ca: cfg.resolve(&cfg.tls.ca),
            cert: cfg.resolve(&cfg.tls.cert),
            key: cfg.resolve(&cfg.tls.key),
        }
    }

    /// Loads and checks the files: they must chain to the CA, be valid now, and the
    /// certificate must name this node.
    pub(crate) fn load(&self) -> anyhow::Result<TlsIdentity> {
        let identity =
            TlsIdentity::load(&self.ca, &self.cert, &self.key).context("loading TLS files")?;
        match identity.role() {
            PeerRole::Node(id) if *id == self.id => Ok(identity),
            other => bail!(
                "tls.cert is for {other:?}, but this node is {}: issue it with `shoal cert node --id {}`",
                self.id,
                self.id
            ),
        }
    }

    /// Reloads the files into `endpoint`; on any error the endpoint keeps its current
    /// certificates. Counted in `shoal_tls_reloads_total{result}`.
    pub(crate) fn reload(&self, endpoint: &Endpoint) -> anyhow::Result<()> {
        let result = self.load().and_then(|identity| {
            endpoint
                .reload(&identity)
                .context("installing the new certificates")?;
            Ok(identity)
        });
        match result {
            Ok(identity) => {
                record_expiry(&identity);
                metrics::counter!(TLS_RELOADS_TOTAL, "result" => "ok").increment(1);
                info!(node = %self.id, "TLS certificates reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!(TLS_RELOADS_TOTAL, "result" => "error").increment(1);
                error!(node = %self.id, "TLS reload refused, keeping the current certificates: {e:#}");
                Err(e)
            }
        }
    }
}

/// Exports the notAfter of the certificates in use.
pub(crate) fn record_expiry(identity: &TlsIdentity) {
    let expiry = identity.expiry();
    metrics::gauge!(TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS, "cert" => "node")
        .set(expiry.leaf as f64);
    metrics::gauge!(TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS, "cert" => "ca").set(expiry.ca as f64);
}
