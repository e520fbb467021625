//! Placement under the layout history (issue 9). Branch i9-data owns this file; this
//! minimal version (branch i9-agree) only recomputes the partitions this node
//! replicates in the current version, which is all a single-version history needs. The
//! lead replaces it with i9-data's at merge (write/read sets over versions, syncs,
//! pruning, dropping).

use super::Engine;

impl Engine {
    /// Called by whoever changed `self.layout` (a new version, a merge from a peer).
    pub(super) fn on_layout_changed(&mut self) {
        self.replica_partitions = if self.is_candidate() {
            Vec::new()
        } else {
            self.ring()
                .replica_partitions(&self.me, usize::from(self.cfg.replication.n))
        };
    }
}
