//! The wire version a node sends each peer: the configured one (`[cluster]
//! wire_version`), or a lower one for a peer that refused it.
//!
//! The memory itself is [`VersionMemory`] (shared with the SDK). A node of the previous release refuses a frame of a version it does not speak with
//! `UnsupportedVersion { found, supported }`, answered in its own version, before it
//! decodes anything: nothing ran, so the request can be sent again in `supported`. The
//! node remembers that peer's version, so the next requests go in it directly, and tries
//! its configured version again after [`RECHECK_AFTER`] (the peer may have been upgraded
//! meanwhile; the cost is one refused frame per peer per interval). So a cluster stays
//! whole during a rolling upgrade even if no node was pinned; pinning all nodes first
//! (docs/ARCHITECTURE.md, "Rolling upgrades") avoids the refused frames altogether.

use std::time::{Duration, Instant};

use shoal_proto::wire::{VersionMemory, WireVersion};
use shoal_ring::NodeId;

/// How long a peer's lower version is used before the configured one is tried again.
pub(super) const RECHECK_AFTER: Duration = Duration::from_secs(60);

/// The version to send each peer ([`VersionMemory`] by node id, with its metric). Holds
/// at most one entry per member that refused a frame (the driver sends only to members).
#[derive(Debug)]
pub(super) struct PeerVersions(VersionMemory<NodeId>);

impl PeerVersions {
    /// Every peer is sent `configured` until one refuses it.
    pub(super) fn new(configured: WireVersion) -> PeerVersions {
        PeerVersions(VersionMemory::new(configured, RECHECK_AFTER))
    }

    /// The version to send `peer` now.
    pub(super) fn for_peer(&self, peer: &NodeId) -> WireVersion {
        self.0.for_peer(peer, Instant::now())
    }

    /// `peer` refused a frame of version `sent`, saying it speaks up to `supported`: the
    /// version to send it again in, remembered for its next requests, or `None` when
    /// there is none lower that this build speaks (the refusal is then the answer).
    pub(super) fn refused(
        &self,
        peer: &NodeId,
        sent: WireVersion,
        supported: u16,
    ) -> Option<WireVersion> {
        let lower = self.0.refused(peer, sent, supported, Instant::now())?;
        metrics::counter!(crate::metrics::WIRE_VERSION_FALLBACKS_TOTAL, "version" => lower.to_string())
            .increment(1);
        Some(lower)
    }
}
