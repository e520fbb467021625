//! The wire version to send each peer: the configured one, or a lower one for a peer
//! that refused it.
//!
//! A build of the previous release refuses a frame of a version it does not speak with
//! `UnsupportedVersion { found, supported }`, answered in its own version, before it
//! decodes anything: nothing ran, so the request can be sent again in `supported`. The
//! sender remembers that peer's version, so its next requests go in it directly, and
//! tries the configured version again after `recheck_after` (the peer may have been
//! upgraded meanwhile; the cost is one refused frame per peer per interval). Nodes keep
//! one per member (by node id), the SDK one per node address.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::WireVersion;

/// The version to send each peer. Holds an entry only for a peer that refused a frame
/// within the last `recheck_after` (older entries are dropped when one is added).
#[derive(Debug)]
pub struct VersionMemory<K> {
    configured: WireVersion,
    recheck_after: Duration,
    lowered: Mutex<HashMap<K, (WireVersion, Instant)>>,
}

impl<K: Eq + Hash + Clone> VersionMemory<K> {
    /// Every peer is sent `configured` until one refuses it; a refusing peer is sent its
    /// own version for `recheck_after`.
    pub fn new(configured: WireVersion, recheck_after: Duration) -> VersionMemory<K> {
        VersionMemory {
            configured,
            recheck_after,
            lowered: Mutex::new(HashMap::new()),
        }
    }

    /// The version to send `peer` at `now`.
    pub fn for_peer(&self, peer: &K, now: Instant) -> WireVersion {
        let mut lowered = self.lowered.lock().unwrap_or_else(|e| e.into_inner());
        if lowered.is_empty() {
            return self.configured;
        }
        match lowered.get(peer) {
            Some((v, since)) if now.saturating_duration_since(*since) < self.recheck_after => {
                (*v).min(self.configured)
            }
            Some(_) => {
                lowered.remove(peer);
                self.configured
            }
            None => self.configured,
        }
    }

    /// `peer` refused a frame of version `sent` at `now`, saying it speaks up to
    /// `supported`: the version to send it again in, remembered for its next requests,
    /// or `None` when there is none lower that this build speaks (the refusal is then
    /// the answer).
    pub fn refused(
        &self,
        peer: &K,
        sent: WireVersion,
        supported: u16,
        now: Instant,
    ) -> Option<WireVersion> {
        let lower = WireVersion::new(supported).ok().filter(|v| *v < sent)?;
        let mut lowered = self.lowered.lock().unwrap_or_else(|e| e.into_inner());
        let recheck_after = self.recheck_after;
        lowered.retain(|_, (_, since)| now.saturating_duration_since(*since) < recheck_after);
        lowered.insert(peer.clone(), (lower, now));
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_peer_is_sent_its_version_until_the_recheck() {
        let (old, new) = ("old", "new");
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let versions = VersionMemory::new(WireVersion::CURRENT, minute);
        assert_eq!(versions.for_peer(&old, t0), WireVersion::CURRENT);
        assert_eq!(
            versions.refused(&old, WireVersion::CURRENT, 1, t0),
            Some(WireVersion::OLDEST)
        );
        assert_eq!(versions.for_peer(&old, t0), WireVersion::OLDEST);
        assert_eq!(versions.for_peer(&new, t0), WireVersion::CURRENT);
        // Nothing lower to offer, or a claim of a version this build does not speak.
        assert_eq!(versions.refused(&old, WireVersion::OLDEST, 1, t0), None);
        assert_eq!(versions.refused(&new, WireVersion::CURRENT, 0, t0), None);
        assert_eq!(versions.for_peer(&new, t0), WireVersion::CURRENT);

        // After the recheck interval the configured version is tried again, and an
        // expired entry goes when another peer refuses.
        let later = t0 + minute;
        assert_eq!(
            versions.for_peer(&old, later - Duration::from_secs(1)),
            WireVersion::OLDEST
        );
        versions.refused(&new, WireVersion::CURRENT, 5, later);
        assert_eq!(versions.lowered.lock().unwrap().len(), 1);
        assert_eq!(versions.for_peer(&old, later), WireVersion::CURRENT);
        assert_eq!(versions.for_peer(&new, later).get(), 5);
        // A pin below what the peer speaks stays the ceiling.
        let pinned = VersionMemory::new(WireVersion::OLDEST, minute);
        pinned.refused(&old, WireVersion::CURRENT, 5, t0);
        assert_eq!(pinned.for_peer(&old, t0), WireVersion::OLDEST);
    }
}
