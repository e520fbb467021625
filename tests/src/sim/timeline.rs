//! A run's timeline: every [`SAMPLE_INTERVAL`] of virtual time, the simulator samples the
//! anti-entropy counters and each engine's admission-control state, so that a test can
//! ask how fast repair went over a window and whether background work backed off.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_ring::PartitionId;

use shoal_proto::metrics::{AAE_KEYS_REPAIRED_TOTAL, TOMBSTONES_REAPED_TOTAL};

use super::Sim;

/// How often the timeline is sampled, in virtual time.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// Most samples a run keeps (a run is bounded in time, this only caps memory).
const MAX_SAMPLES: usize = 10_000;

/// One node's anti-entropy state at a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeSample {
    /// Whether the node was running.
    pub up: bool,
    /// Its background budget multiplier (1.0 = full budget); 0 when down.
    pub budget_multiplier: f64,
    /// Its moving average of foreground coordinator latency, in seconds.
    pub foreground_latency_seconds: f64,
    /// Exchanges it was running.
    pub exchanges_running: usize,
}

/// The state of the run at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// Keys repaired by anti-entropy so far, over all nodes (fetched and pushed).
    pub aae_keys_repaired: u64,
    /// Tombstones reaped so far, counted once per replica.
    pub tombstones_reaped: u64,
    /// Each node's state, by index.
    pub nodes: Vec<NodeSample>,
    /// Partitions whose running primaries' Merkle trees differ (or that have a primary
    /// down).
    pub differing_partitions: Vec<PartitionId>,
}

/// The samples of a run, in time order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// The samples.
    pub samples: Vec<Sample>,
}

impl Timeline {
    /// The last sample taken at or before `at`.
    pub fn at(&self, at: Duration) -> Option<&Sample> {
        self.samples.iter().take_while(|s| s.at <= at).last()
    }

    /// The samples taken in `from..=to`.
    pub fn between(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Sample> + '_ {
        self.samples
            .iter()
            .filter(move |s| s.at >= from && s.at <= to)
    }

    /// Keys repaired by anti-entropy between the samples at `from` and at `to`.
    pub fn keys_repaired_between(&self, from: Duration, to: Duration) -> u64 {
        let count = |t| self.at(t).map(|s| s.aae_keys_repaired).unwrap_or(0);
        count(to).saturating_sub(count(from))
    }

    /// The lowest budget multiplier of any running node over `from..=to` (1.0 if no
    /// sample falls in it).
    pub fn min_budget_multiplier_between(&self, from: Duration, to: Duration) -> f64 {
        self.between(from, to)
            .flat_map(|s| s.nodes.iter())
            .filter(|n| n.up)
            .map(|n| n.budget_multiplier)
            .fold(1.0, f64::min)
    }

    /// The first sample in `from..=to` at which the primaries of every partition but
    /// those in `ignore` (say, partitions that keep being written) agreed.
    pub fn first_agreement_between(
        &self,
        from: Duration,
        to: Duration,
        ignore: &BTreeSet<PartitionId>,
    ) -> Option<Duration> {
        self.between(from, to)
            .find(|s| s.differing_partitions.iter().all(|p| ignore.contains(p)))
            .map(|s| s.at)
    }

    /// The highest foreground latency average of any running node over `from..=to`.
    pub fn max_foreground_latency_between(&self, from: Duration, to: Duration) -> Duration {
        let secs = self
            .between(from, to)
            .flat_map(|s| s.nodes.iter())
            .filter(|n| n.up)
            .map(|n| n.foreground_latency_seconds)
            .fold(0.0, f64::max);
        Duration::from_secs_f64(secs)
    }
}

impl Sim {
    /// Take every sample due by now.
    pub(super) fn sample_if_due(&mut self) {
        while self.next_sample <= self.now {
            let at = self.next_sample.saturating_since(super::EPOCH);
            self.next_sample = self.next_sample + SAMPLE_INTERVAL;
            if self.timeline.samples.len() >= MAX_SAMPLES {
                continue;
            }
            let nodes = self
                .nodes
                .iter()
                .map(|n| match &n.running {
                    Some(r) => {
                        let stats = r.engine.aae_stats();
                        NodeSample {
                            up: true,
                            budget_multiplier: stats.budget_multiplier,
                            foreground_latency_seconds: stats.foreground_latency_seconds,
                            exchanges_running: stats.running,
                        }
                    }
                    None => NodeSample {
                        up: false,
                        budget_multiplier: 0.0,
                        foreground_latency_seconds: 0.0,
                        exchanges_running: 0,
                    },
                })
                .collect();
            self.timeline.samples.push(Sample {
                at,
                aae_keys_repaired: self.counters.sum(AAE_KEYS_REPAIRED_TOTAL),
                tombstones_reaped: self.counters.sum(TOMBSTONES_REAPED_TOTAL),
                nodes,
                differing_partitions: self.differing_partitions(),
            });
        }
    }
}
