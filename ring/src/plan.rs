//! Rebalance plans.

use serde::{Deserialize, Serialize};

use crate::node_id::NodeId;
use crate::partition::PartitionId;

/// One partition changing owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMove {
    /// The partition that moves.
    pub partition: PartitionId,
    /// Its owner in the old ring (possibly a member that left).
    pub from: NodeId,
    /// Its owner in the new ring.
    pub to: NodeId,
}

/// The ownership changes between two rings: the transfers a join, leave or reweight needs.
/// The data of each moved partition must reach its new owner before ownership flips.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalancePlan {
    /// The moves, by partition number.
    pub moves: Vec<PartitionMove>,
}

impl RebalancePlan {
    /// How many partitions change owner.
    pub fn moved_count(&self) -> usize {
        self.moves.len()
    }

    /// Whether nothing moves.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    /// The moves that `node` receives.
    pub fn incoming<'a>(
        &'a self,
        node: &'a NodeId,
    ) -> impl Iterator<Item = &'a PartitionMove> + 'a {
        self.moves.iter().filter(move |m| &m.to == node)
    }

    /// The moves that `node` gives away.
    pub fn outgoing<'a>(
        &'a self,
        node: &'a NodeId,
    ) -> impl Iterator<Item = &'a PartitionMove> + 'a {
        self.moves.iter().filter(move |m| &m.from == node)
    }
}
