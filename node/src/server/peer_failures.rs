//! Warnings for requests to peers that failed (no connection, a connection or stream
//! lost, no answer in time, a batch refused as a whole): at most one line per peer per
//! [`WARN_EVERY`], saying how many more failed since the last one, so that a node whose
//! peer is down or flapping logs what happened without a line per request. Each failure
//! is also counted in `shoal_peer_requests_total` by its outcome.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use shoal_ring::NodeId;

/// At most one warning per peer this often.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(10);
/// Peers remembered; beyond, the memory starts over (the driver sends only to members,
/// so this is reached only by a cluster of more members than this).
const MAX_PEERS: usize = 1024;

/// When each peer's last warning was logged and how many failures were not.
#[derive(Debug, Default)]
pub(super) struct PeerFailures {
    peers: Mutex<HashMap<NodeId, Last>>,
}

#[derive(Debug)]
struct Last {
    logged: Instant,
    unlogged: u64,
}

impl PeerFailures {
    /// Records a failed request to `peer` at `now`. `Some(n)` when this one is to be
    /// logged, `n` being the failures to that peer not logged since the last warning.
    pub(super) fn record(&self, peer: &NodeId, now: Instant) -> Option<u64> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = peers.get_mut(peer) {
            if now.saturating_duration_since(last.logged) < WARN_EVERY {
                last.unlogged += 1;
                return None;
            }
            let unlogged = last.unlogged;
            *last = Last {
                logged: now,
                unlogged: 0,
            };
            return Some(unlogged);
        }
        if peers.len() >= MAX_PEERS {
            peers.clear();
        }
        peers.insert(
            peer.clone(),
            Last {
                logged: now,
                unlogged: 0,
            },
        );
        Some(0)
    }

    /// Records a failure of `op` to `peer` for `why`, and logs it if its turn has come.
    pub(super) fn warn(&self, peer: &NodeId, op: &str, why: &dyn std::fmt::Display) {
        if let Some(unlogged) = self.record(peer, Instant::now()) {
            tracing::warn!(
                %peer,
                op,
                "a request to a peer failed: {why} ({unlogged} more to it failed since the last such warning)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_peer_per_interval_counting_the_rest() {
        let log = PeerFailures::default();
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
        let t0 = Instant::now();
        assert_eq!(log.record(&a, t0), Some(0), "the first failure is logged");
        assert_eq!(log.record(&a, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.record(&a, t0 + WARN_EVERY / 2), None);
        assert_eq!(
            log.record(&b, t0 + Duration::from_secs(1)),
            Some(0),
            "another peer has its own turn"
        );
        assert_eq!(
            log.record(&a, t0 + WARN_EVERY),
            Some(2),
            "the next warning counts the two not logged"
        );
        assert_eq!(
            log.record(&a, t0 + WARN_EVERY + Duration::from_secs(1)),
            None
        );
        assert_eq!(log.record(&a, t0 + WARN_EVERY * 3), Some(1));
    }

    #[test]
    fn the_memory_of_peers_is_bounded() {
        let log = PeerFailures::default();
        let t0 = Instant::now();
        for i in 0..=MAX_PEERS {
            let peer = NodeId::new(format!("n{i}")).unwrap();
            assert_eq!(log.record(&peer, t0), Some(0));
        }
        assert!(log.peers.lock().unwrap().len() <= MAX_PEERS);
    }
}
