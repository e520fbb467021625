//! The wire version a node sends each peer: the configured one (`[cluster]
//! wire_version`), or a lower one for a peer that refused it.
//!
//! A node of the previous release refuses a frame of a version it does not speak with
//! `UnsupportedVersion { found, supported }`, answered in its own version, before it
//! decodes anything: nothing ran, so the request can be sent again in `supported`. The
//! node remembers that peer's version, so the next requests go in it directly, and tries
//! its configured version again after [`RECHECK_AFTER`] (the peer may have been upgraded
//! meanwhile; the cost is one refused frame per peer per interval). So a cluster stays
//! whole during a rolling upgrade even if no node was pinned; pinning all nodes first
//! (docs/ARCHITECTURE.md, "Rolling upgrades") avoids the refused frames altogether.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_proto::wire::WireVersion;
use shoal_ring::NodeId;

/// How long a peer's lower version is used before the configured one is tried again.
pub(super) const RECHECK_AFTER: Duration = Duration::from_secs(60);

/// The version to send each peer. Holds at most one entry per member that refused a
/// frame (the driver sends only to members).
#[derive(Debug)]
pub(super) struct PeerVersions {
    configured: WireVersion,
    recheck_after: Duration,
    lowered: Mutex<HashMap<NodeId, (WireVersion, Instant)>>,
}

impl PeerVersions {
    /// Every peer is sent `configured` until one refuses it.
    pub(super) fn new(configured: WireVersion) -> PeerVersions {
        PeerVersions::with_recheck(configured, RECHECK_AFTER)
    }

    fn with_recheck(configured: WireVersion, recheck_after: Duration) -> PeerVersions {
        PeerVersions {
            configured,
            recheck_after,
            lowered: Mutex::new(HashMap::new()),
        }
    }

    /// The version to send `peer` now.
    pub(super) fn for_peer(&self, peer: &NodeId) -> WireVersion {
        let mut lowered = self.lowered.lock().unwrap_or_else(|e| e.into_inner());
        match lowered.get(peer) {
            Some((v, since)) if since.elapsed() < self.recheck_after => (*v).min(self.configured),
            Some(_) => {
                lowered.remove(peer);
                self.configured
            }
            None => self.configured,
        }
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
        let lower = WireVersion::new(supported).ok().filter(|v| *v < sent)?;
        let mut lowered = self.lowered.lock().unwrap_or_else(|e| e.into_inner());
        lowered.insert(peer.clone(), (lower, Instant::now()));
        metrics::counter!(crate::metrics::WIRE_VERSION_FALLBACKS_TOTAL, "version" => lower.to_string())
            .increment(1);
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_peer_is_sent_its_version_until_the_recheck() {
        let (old, new) = (NodeId::new("old").unwrap(), NodeId::new("new").unwrap());
        let versions = PeerVersions::new(WireVersion::CURRENT);
        assert_eq!(versions.for_peer(&old), WireVersion::CURRENT);
        assert_eq!(
            versions.refused(&old, WireVersion::CURRENT, 1),
            Some(WireVersion::OLDEST)
        );
        assert_eq!(versions.for_peer(&old), WireVersion::OLDEST);
        assert_eq!(versions.for_peer(&new), WireVersion::CURRENT);
        // Nothing lower to offer, or a claim of a version this build does not speak.
        assert_eq!(versions.refused(&old, WireVersion::OLDEST, 1), None);
        assert_eq!(versions.refused(&new, WireVersion::CURRENT, 0), None);
        assert_eq!(versions.for_peer(&new), WireVersion::CURRENT);

        // After the recheck interval the configured version is tried again.
        let versions = PeerVersions::with_recheck(WireVersion::CURRENT, Duration::ZERO);
        versions.refused(&old, WireVersion::CURRENT, 1);
        assert_eq!(versions.for_peer(&old), WireVersion::CURRENT);
        // A pin below what the peer speaks stays the ceiling.
        let pinned = PeerVersions::new(WireVersion::OLDEST);
        assert_eq!(pinned.for_peer(&old), WireVersion::OLDEST);
    }
}
