//! Per-node wall clocks: each node's engine is handed its own time, the run's virtual
//! time plus an offset that drifts, so that timestamps written by one node are compared
//! with another node's clock as they are in production (tombstone grace, hint TTL).
//!
//! A node's offset starts at a seeded value in `±max/2` and drifts at a seeded rate of
//! up to ±[`MAX_DRIFT_PPM`], clamped to `±max/2` (as NTP keeps a drifting clock within a
//! bound), so any two nodes' clocks differ by at most `max`, the run's maximum skew, and
//! every clock still only moves forward. The offsets are drawn from an RNG of their own
//! (seeded from the run's seed), so a run without skew draws exactly what it drew before
//! clocks existed, and its event log is unchanged. A scripted run may instead fix each
//! node's offset ([`Clocks::fixed`]), e.g. further apart than the engines are told.

use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shoal_proto::Time;

use super::config::EPOCH;

/// The fastest a simulated clock drifts, in parts per million (2%: far above real clocks,
/// so that a run of seconds sees offsets move across their whole range).
pub const MAX_DRIFT_PPM: i64 = 20_000;

/// Mixed into the run's seed for the clocks' own RNG.
const CLOCK_SEED_SALT: u64 = 0x636c_6f63_6b73_6b77;

/// One node's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct NodeClock {
    /// Offset at the start of the run, in µs.
    offset: i64,
    /// Drift, in µs per second of virtual time.
    drift_ppm: i64,
}

/// Every node's clock in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Clocks {
    nodes: Vec<NodeClock>,
    /// The largest offset from virtual time, in µs (half the run's maximum skew).
    half: i64,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Clocks {
    /// Clocks for `nodes` nodes, skewed by at most `max` between any two (zero: every
    /// clock is the virtual time).
    pub(crate) fn draw(seed: u64, nodes: usize, max: Duration) -> Clocks {
        let half = micros(max) / 2;
        if half == 0 {
            return Clocks {
                nodes: vec![NodeClock::default(); nodes],
                half: 0,
            };
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ CLOCK_SEED_SALT);
        let nodes = (0..nodes)
            .map(|_| NodeClock {
                offset: rng.random_range(-half..=half),
                drift_ppm: rng.random_range(-MAX_DRIFT_PPM..=MAX_DRIFT_PPM),
            })
            .collect();
        Clocks { nodes, half }
    }

    /// Clocks with these fixed offsets (ms) from virtual time and no drift; nodes past
    /// the list have none.
    pub(crate) fn fixed(offsets_ms: &[i64], nodes: usize) -> Clocks {
        let nodes: Vec<NodeClock> = (0..nodes)
            .map(|i| NodeClock {
                offset: offsets_ms
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_mul(1_000),
                drift_ppm: 0,
            })
            .collect();
        let half = nodes.iter().map(|c| c.offset.abs()).max().unwrap_or(0);
        Clocks { nodes, half }
    }

    /// Whether any clock differs from virtual time.
    pub(crate) fn skewed(&self) -> bool {
        self.half != 0
    }

    /// Node `i`'s offset from virtual time at virtual time `at`, in µs.
    pub(crate) fn offset(&self, i: usize, at: Time) -> i64 {
        let Some(c) = self.nodes.get(i) else {
            return 0;
        };
        if self.half == 0 {
            return 0;
        }
        let elapsed = i64::try_from(at.saturating_since(EPOCH).as_micros()).unwrap_or(i64::MAX);
        let drifted = c
            .offset
            .saturating_add(elapsed.saturating_mul(c.drift_ppm) / 1_000_000);
        drifted.clamp(-self.half, self.half)
    }

    /// Node `i`'s clock at virtual time `at`.
    pub(crate) fn local(&self, i: usize, at: Time) -> Time {
        let off = self.offset(i, at);
        Time::from_micros(at.as_micros().saturating_add_signed(off))
    }

    /// The earliest virtual time, not before `not_before`, at which node `i`'s clock reads
    /// at least `t` (when a timer the engine set for `t` on its own clock fires).
    pub(crate) fn virtual_at(&self, i: usize, t: Time, not_before: Time) -> Time {
        if self.local(i, not_before) >= t {
            return not_before;
        }
        // The clock is never behind virtual time by more than `half`, and only moves
        // forward: search between the two bounds.
        let half = u64::try_from(self.half).unwrap_or(0);
        let (mut lo, mut hi) = (
            not_before.as_micros(),
            t.as_micros()
                .saturating_add(half)
                .max(not_before.as_micros()),
        );
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if self.local(i, Time::from_micros(mid)) >= t {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Time::from_micros(hi)
    }

    /// The largest difference between two nodes' clocks at virtual time `at`, in µs.
    #[cfg(test)]
    pub(crate) fn spread(&self, at: Time) -> u64 {
        let offs = (0..self.nodes.len()).map(|i| self.offset(i, at));
        let (lo, hi) = offs.fold((i64::MAX, i64::MIN), |(lo, hi), o| (lo.min(o), hi.max(o)));
        if lo > hi {
            return 0;
        }
        hi.abs_diff(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_stay_within_the_skew_move_forward_and_timers_fire_on_time() {
        let max = Duration::from_millis(800);
        for seed in 0..50 {
            let c = Clocks::draw(seed, 5, max);
            let mut last = [Time::ZERO; 5];
            for step in 0..2_000u64 {
                let at = EPOCH + Duration::from_millis(step * 37);
                assert!(c.spread(at) <= micros(max) as u64, "seed {seed} at {step}");
                for (i, prev) in last.iter_mut().enumerate() {
                    let t = c.local(i, at);
                    assert!(t >= *prev, "clock {i} of seed {seed} went back");
                    *prev = t;
                    let want = t + Duration::from_millis(250);
                    let fire = c.virtual_at(i, want, at);
                    assert!(c.local(i, fire) >= want);
                    assert!(
                        fire == at || c.local(i, Time::from_micros(fire.as_micros() - 1)) < want
                    );
                }
            }
        }
    }

    #[test]
    fn without_skew_every_clock_is_virtual_time() {
        let c = Clocks::draw(3, 4, Duration::ZERO);
        let at = EPOCH + Duration::from_secs(7);
        for i in 0..4 {
            assert_eq!(c.local(i, at), at);
            assert_eq!(
                c.virtual_at(i, at + Duration::from_secs(1), at),
                at + Duration::from_secs(1)
            );
        }
    }
}
