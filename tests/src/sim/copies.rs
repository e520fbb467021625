//! Which nodes stored each write's dot in their objects, and which of those copies a
//! recorded cause took away (a power cut that lost the dot, a drop of its partition):
//! what the stranded-write rule (`layout.rs`, `forget_stranded_writes`) needs to tell a
//! write whose every copy was lost for a reason from one that vanished unexplained.
//! Hints are not copies (they expire by design), as for power cuts' vetoes.

use std::collections::BTreeMap;

use shoal_proto::{Dot, Time};
use shoal_ring::PartitionId;

/// How a node's copy of a dot was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loss {
    /// A power cut lost the unsynced write that held it.
    PowerCut,
    /// The node dropped the partition.
    Drop,
}

/// The copies of every dot (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Copies {
    /// (dot, node): the partition, and when the node last stored an object holding it.
    held: BTreeMap<(Dot, String), (PartitionId, Time)>,
    /// (dot, node): when and how the node last lost its copy.
    lost: BTreeMap<(Dot, String), (Time, Loss)>,
}

impl Copies {
    /// `node` stored, at `at`, an object of `partition` holding `dots`.
    pub(crate) fn stored(
        &mut self,
        node: &str,
        partition: PartitionId,
        dots: impl IntoIterator<Item = Dot>,
        at: Time,
    ) {
        for d in dots {
            self.held.insert((d, node.to_string()), (partition, at));
        }
    }

    /// A power cut at `at` took `node`'s copies of `dots`.
    pub(crate) fn power_cut(&mut self, node: &str, dots: impl IntoIterator<Item = Dot>, at: Time) {
        for d in dots {
            self.lost
                .insert((d, node.to_string()), (at, Loss::PowerCut));
        }
    }

    /// `node` dropped `partition` at `at`: every copy it held there is gone.
    pub(crate) fn dropped(&mut self, node: &str, partition: PartitionId, at: Time) {
        let gone: Vec<Dot> = self
            .held
            .iter()
            .filter(|((_, n), (p, _))| n == node && *p == partition)
            .map(|((d, _), _)| *d)
            .collect();
        for d in gone {
            self.lost.insert((d, node.to_string()), (at, Loss::Drop));
        }
    }

    /// Every node that stored `dot`, with how it lost its copy since it last stored it
    /// (`None`: not lost for a recorded cause).
    pub(crate) fn holders(&self, dot: Dot) -> Vec<(String, Option<Loss>)> {
        self.held
            .range((dot, String::new())..)
            .take_while(|((d, _), _)| *d == dot)
            .map(|((_, node), (_, stored))| {
                let loss = self
                    .lost
                    .get(&(dot, node.clone()))
                    .filter(|(at, _)| at >= stored)
                    .map(|(_, how)| *how);
                (node.clone(), loss)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use shoal_proto::Dot;

    use super::*;

    fn t(ms: u64) -> Time {
        Time::from_micros(ms * 1000)
    }

    #[test]
    fn a_copy_is_lost_only_by_a_cause_after_it_was_last_stored() {
        let mut c = Copies::default();
        let d = Dot::new(shoal_proto::Actor(7), 1);
        let p = PartitionId(3);
        c.stored("n0", p, [d], t(10));
        c.stored("n1", p, [d], t(11));
        c.power_cut("n0", [d], t(20));
        c.dropped("n1", p, t(30));
        assert_eq!(
            c.holders(d),
            vec![
                ("n0".to_string(), Some(Loss::PowerCut)),
                ("n1".to_string(), Some(Loss::Drop))
            ]
        );
        // Stored again after the cut (a repair): that copy is not lost.
        c.stored("n0", p, [d], t(40));
        assert_eq!(c.holders(d)[0], ("n0".to_string(), None));
        // A drop of another partition takes nothing.
        c.dropped("n0", PartitionId(4), t(50));
        assert_eq!(c.holders(d)[0], ("n0".to_string(), None));
    }
}
