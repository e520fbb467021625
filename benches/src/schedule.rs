//! Open-loop scheduling: operation `i` is due at `i / rate` seconds after the run's origin,
//! whatever happened to the operations before it. Latency is measured from that intended
//! start, so when the cluster stalls, the operations that should have been sent meanwhile
//! carry the stall in their latency (no coordinated omission).

use std::time::Duration;

use crate::args::Stop;

/// A fixed-rate schedule of intended start times.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    rate: f64,
}

impl Schedule {
    /// A schedule of `rate` operations per second (a positive, finite number).
    pub fn new(rate: f64) -> Schedule {
        Schedule { rate }
    }

    /// When operation `i` is due, from the origin.
    pub fn offset(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// The first operation due at or after `t`.
    pub fn first_at_or_after(&self, t: Duration) -> u64 {
        let mut i = (t.as_secs_f64() * self.rate).ceil() as u64;
        // Correct any floating-point rounding so the definition holds exactly.
        while self.offset(i) < t {
            i += 1;
        }
        while i > 0 && self.offset(i - 1) >= t {
            i -= 1;
        }
        i
    }

    /// The operations of a run: those before the first index are the warm-up (sent, not
    /// recorded), the measured ones run from it up to the second index (exclusive).
    pub fn phases(&self, warmup: Duration, stop: Stop) -> (u64, u64) {
        let first = self.first_at_or_after(warmup);
        let end = match stop {
            Stop::After(d) => self.first_at_or_after(warmup.saturating_add(d)),
            Stop::Ops(n) => first.saturating_add(n),
        };
        (first, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_evenly_spaced_from_the_origin() {
        let s = Schedule::new(5000.0);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_micros(200));
        assert_eq!(s.offset(5000), Duration::from_secs(1));
        // No drift: the millionth operation is exactly 200 s in.
        assert_eq!(s.offset(1_000_000), Duration::from_secs(200));
    }

    #[test]
    fn fractional_rates_space_operations_by_their_reciprocal() {
        let s = Schedule::new(0.5);
        assert_eq!(s.offset(3), Duration::from_secs(6));
        assert_eq!(s.first_at_or_after(Duration::from_secs(5)), 3);
    }

    #[test]
    fn the_first_operation_at_or_after_a_time_is_exact() {
        let s = Schedule::new(1000.0);
        assert_eq!(s.first_at_or_after(Duration::ZERO), 0);
        assert_eq!(s.first_at_or_after(Duration::from_micros(1)), 1);
        assert_eq!(s.first_at_or_after(Duration::from_millis(1)), 1);
        assert_eq!(s.first_at_or_after(Duration::from_secs(1)), 1000);
        for i in [0u64, 1, 7, 999, 123_456] {
            let t = s.offset(i);
            assert_eq!(s.first_at_or_after(t), i);
            assert_eq!(s.first_at_or_after(t + Duration::from_nanos(1)), i + 1);
        }
    }

    #[test]
    fn warmup_and_measured_phases_split_the_schedule() {
        let s = Schedule::new(100.0);
        let (first, end) = s.phases(Duration::from_secs(5), Stop::After(Duration::from_secs(10)));
        assert_eq!((first, end), (500, 1500));
        assert_eq!(end - first, 1000, "rate × duration operations are measured");
        let (first, end) = s.phases(Duration::ZERO, Stop::Ops(42));
        assert_eq!((first, end), (0, 42));
        let (first, end) = s.phases(Duration::from_millis(15), Stop::Ops(3));
        assert_eq!(
            (first, end),
            (2, 5),
            "op 2 at 20 ms is the first after 15 ms"
        );
    }
}
