//! The simulated network: message delays (with a slow tail that reorders and outlives
//! timeouts), drops, duplicates, and partitions; and the table of RPCs in flight, which
//! guarantees each `Send` exactly one outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use shoal_proto::RequestId;

use super::config::Faults;

/// Names one `Send` of one node incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RpcKey {
    /// The sending node.
    pub from: usize,
    /// Its incarnation when it sent.
    pub incarnation: u32,
    /// The engine's id of the command.
    pub id: RequestId,
}

/// The current partition.
#[derive(Clone, Debug)]
pub(crate) struct Partition {
    /// Its number (to match its heal event).
    pub id: u64,
    /// The nodes on one side; the rest are on the other.
    pub side: BTreeSet<usize>,
    /// Only messages leaving `side` are lost; messages into it still arrive (requests
    /// land, their answers do not come back).
    pub one_way: bool,
}

/// Link behaviour and the RPCs in flight.
#[derive(Debug)]
pub(crate) struct Network {
    /// The faults in force (none once the liveness phase starts).
    pub faults: Faults,
    /// The partition in force, if any.
    pub partition: Option<Partition>,
    /// Partitions started so far (numbers them).
    pub partitions_started: u64,
    /// RPCs whose sender has not been given their outcome yet, with their target
    /// (`None`: a node the simulator does not know).
    pub rpcs: BTreeMap<RpcKey, Option<usize>>,
}

/// The usual one-way delay of a message: 0.1 to 2 ms.
const HOP_MIN_US: u64 = 100;
const HOP_MAX_US: u64 = 2_000;
/// Even a clean network has jitter: one message in ten takes up to 30 ms more (well
/// within every timeout), so that replicas lag and messages overtake each other.
const JITTER_PROBABILITY: f64 = 0.1;
const JITTER_MAX_US: u64 = 30_000;

/// How a message fares on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It arrives after this delay.
    Deliver(Duration),
    /// It is lost.
    Drop,
}

impl Network {
    /// A network with `faults` and nothing in flight.
    pub(crate) fn new(faults: Faults) -> Network {
        Network {
            faults,
            partition: None,
            partitions_started: 0,
            rpcs: BTreeMap::new(),
        }
    }

    /// Whether a message from node `from` reaches node `to` now.
    pub(crate) fn connected(&self, from: usize, to: usize) -> bool {
        match &self.partition {
            Some(p) if p.one_way => !p.side.contains(&from) || p.side.contains(&to),
            Some(p) => p.side.contains(&from) == p.side.contains(&to),
            None => true,
        }
    }

    /// Decide the fate of one message. `slow` counts slow messages for the report.
    pub(crate) fn fate(&self, rng: &mut ChaCha8Rng) -> (Fate, bool) {
        if self.faults.drop > 0.0 && rng.random_bool(self.faults.drop) {
            return (Fate::Drop, false);
        }
        let mut delay = Duration::from_micros(rng.random_range(HOP_MIN_US..=HOP_MAX_US));
        if rng.random_bool(JITTER_PROBABILITY) {
            delay += Duration::from_micros(rng.random_range(0..=JITTER_MAX_US));
        }
        let mut slow = false;
        if self.faults.slow > 0.0 && rng.random_bool(self.faults.slow) {
            let max = u64::try_from(self.faults.slow_max.as_micros()).unwrap_or(u64::MAX);
            delay += Duration::from_micros(rng.random_range(0..=max));
            slow = true;
        }
        (Fate::Deliver(delay), slow)
    }

    /// Whether a node-to-node request is delivered a second time.
    pub(crate) fn duplicates(&self, rng: &mut ChaCha8Rng) -> bool {
        self.faults.duplicate > 0.0 && rng.random_bool(self.faults.duplicate)
    }

    /// The RPCs in flight to `node`.
    pub(crate) fn sent_to(&self, node: usize) -> Vec<RpcKey> {
        self.rpcs
            .iter()
            .filter(|(_, to)| **to == Some(node))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Forget every RPC sent by `node` (it crashed: no outcome is owed to it any more).
    pub(crate) fn forget_sender(&mut self, node: usize) {
        self.rpcs.retain(|k, _| k.from != node);
    }
}

/// How long a storage operation takes: mostly well under a millisecond, sometimes up to
/// 20 ms (so that completions overtake each other); with probability `stall` (a fault),
/// up to 1.5 s, past the coordinator's own deadline.
pub(crate) fn storage_delay(rng: &mut ChaCha8Rng, stall: f64) -> Duration {
    if stall > 0.0 && rng.random_bool(stall) {
        Duration::from_micros(rng.random_range(20_000..=1_500_000))
    } else if rng.random_bool(0.05) {
        Duration::from_micros(rng.random_range(1_000..=20_000))
    } else {
        Duration::from_micros(rng.random_range(20..=800))
    }
}

/// How long a refused connection takes to be reported.
pub(crate) fn refusal_delay(rng: &mut ChaCha8Rng) -> Duration {
    Duration::from_micros(rng.random_range(100..=2_000))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn partition_separates_the_two_sides_only() {
        let mut net = Network::new(Faults::NONE);
        net.partition = Some(Partition {
            id: 1,
            side: [0, 1].into_iter().collect(),
            one_way: false,
        });
        assert!(net.connected(0, 1));
        assert!(net.connected(2, 3));
        assert!(!net.connected(1, 2));
        assert!(!net.connected(3, 0));
    }

    #[test]
    fn one_way_partition_loses_only_what_leaves_its_side() {
        let mut net = Network::new(Faults::NONE);
        net.partition = Some(Partition {
            id: 1,
            side: [0].into_iter().collect(),
            one_way: true,
        });
        assert!(!net.connected(0, 1));
        assert!(net.connected(1, 0));
        assert!(net.connected(1, 2));
    }

    #[test]
    fn a_clean_network_never_drops_or_slows() {
        let net = Network::new(Faults::NONE);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let (fate, slow) = net.fate(&mut rng);
            assert!(!slow);
            match fate {
                Fate::Deliver(d) => {
                    assert!(d <= Duration::from_micros(HOP_MAX_US + JITTER_MAX_US))
                }
                Fate::Drop => panic!("dropped on a clean network"),
            }
        }
    }
}
