//! Recording results: a latency histogram per operation kind, error counts by label, and a
//! per-second timeline of throughput and p99 for the plot.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::OpKind;

/// Smallest latency the histograms tell apart, in microseconds.
pub const LATENCY_LOWEST_US: u64 = 1;
/// Largest latency recorded, in microseconds (60 s); longer ones are recorded as 60 s.
pub const LATENCY_HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept by the histograms.
pub const LATENCY_SIGFIG: u8 = 3;
/// Most one-second points kept in the timeline (a day); a longer run keeps the first day.
pub const MAX_TIMELINE_POINTS: usize = 86_400;
/// Most fault events recorded.
pub const MAX_EVENTS: usize = 16;
/// The error label of an open-loop operation that was never sent because
/// `--max-outstanding` operations were already in flight.
pub const BACKLOG_ERROR: &str = "backlog";

/// An empty latency histogram: 1 µs to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_LOWEST_US, LATENCY_HIGHEST_US, LATENCY_SIGFIG)
        .expect("the constant histogram bounds are valid")
}

/// Microseconds in `d`, at least 1 (the histograms' lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .max(LATENCY_LOWEST_US)
}

/// How one operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded; `found` is whether a read found its key (`None` for writes).
    Ok {
        /// Whether the read found the key.
        found: Option<bool>,
    },
    /// It failed with this error label (`ClientError::label()` or [`BACKLOG_ERROR`]).
    Err(&'static str),
}

/// One second of the measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Start of the second, from the start of the measurement.
    pub t_s: f64,
    /// Length of the bucket in seconds (1, or less for the last, partial one).
    pub seconds: f64,
    /// Operations that succeeded in it.
    pub ok: u64,
    /// Operations that failed in it.
    pub errors: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// 99th percentile latency of its successful operations (none if there were none).
    pub p99_us: Option<u64>,
}

/// Something the fault mode did, at a time from the start of the measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Seconds from the start of the measurement.
    pub at_s: f64,
    /// `kill`, `restart`, or `kill_failed` / `restart_failed`.
    pub kind: &'static str,
    /// The node id, when known.
    pub node: Option<String>,
    /// The process killed or started.
    pub pid: Option<u32>,
    /// What happened, for people.
    pub detail: String,
}

/// Completions per second, bucketed by completion time.
#[derive(Debug)]
struct Timeline {
    current: u64,
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    points: Vec<TimelinePoint>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            current: 0,
            hist: latency_histogram(),
            ok: 0,
            errors: 0,
            points: Vec::new(),
        }
    }

    /// Closes every full second before `t`.
    fn roll(&mut self, t: Duration) {
        let index = t.as_secs();
        while self.current < index {
            self.close(1.0);
            self.current += 1;
        }
    }

    fn close(&mut self, seconds: f64) {
        if self.points.len() < MAX_TIMELINE_POINTS {
            self.points.push(TimelinePoint {
                t_s: self.current as f64,
                seconds,
                ok: self.ok,
                errors: self.errors,
                throughput: if seconds > 0.0 {
                    self.ok as f64 / seconds
                } else {
                    0.0
                },
                p99_us: (self.ok > 0).then(|| self.hist.value_at_quantile(0.99)),
            });
        }
        self.hist.reset();
        self.ok = 0;
        self.errors = 0;
    }
}

/// Everything recorded during the measurement, shared by the workers behind a mutex.
///
/// Operations whose intended start is before `origin` (the warm-up) are counted but not
/// recorded. Latency is `done - intended`: for the open loop, the intended start on the
/// schedule; for the closed loop, the moment the worker started the operation.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    ops: Vec<(OpKind, Histogram<u64>, u64)>,
    errors: BTreeMap<&'static str, u64>,
    not_found: u64,
    ok_total: u64,
    error_total: u64,
    warmup_ops: u64,
    timeline: Timeline,
    events: Vec<Event>,
}

/// The final numbers of a run.
#[derive(Debug)]
pub struct Results {
    /// From the start of the measurement until the last operation finished.
    pub elapsed: Duration,
    /// Per kind that was issued: its successful latencies and its error count.
    pub ops: Vec<(OpKind, Histogram<u64>, u64)>,
    /// Errors by label.
    pub errors: BTreeMap<&'static str, u64>,
    /// Reads that found no value.
    pub not_found: u64,
    /// Operations of the warm-up (not recorded).
    pub warmup_ops: u64,
    /// One point per second.
    pub timeline: Vec<TimelinePoint>,
    /// What the fault mode did.
    pub events: Vec<Event>,
}

impl Recorder {
    /// A recorder whose measurement starts at `origin`.
    pub fn new(origin: Instant) -> Recorder {
        Recorder {
            origin,
            ops: OpKind::ALL
                .iter()
                .map(|&k| (k, latency_histogram(), 0))
                .collect(),
            errors: BTreeMap::new(),
            not_found: 0,
            ok_total: 0,
            error_total: 0,
            warmup_ops: 0,
            timeline: Timeline::new(),
            events: Vec::new(),
        }
    }

    /// Records an operation intended to start at `intended` that ended at `done`.
    pub fn record(&mut self, kind: OpKind, intended: Instant, done: Instant, outcome: Outcome) {
        if intended < self.origin {
            self.warmup_ops += 1;
            return;
        }
        self.timeline
            .roll(done.saturating_duration_since(self.origin));
        let (_, hist, errors) = &mut self.ops[kind.index()];
        match outcome {
            Outcome::Ok { found } => {
                let latency = micros(done.saturating_duration_since(intended));
                hist.saturating_record(latency);
                self.timeline.hist.saturating_record(latency);
                self.timeline.ok += 1;
                self.ok_total += 1;
                if found == Some(false) {
                    self.not_found += 1;
                }
            }
            Outcome::Err(label) => {
                *errors += 1;
                *self.errors.entry(label).or_insert(0) += 1;
                self.timeline.errors += 1;
                self.error_total += 1;
            }
        }
    }

    /// Closes the timeline's seconds up to `now`, so that quiet seconds show as zero.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.origin {
            self.timeline
                .roll(now.saturating_duration_since(self.origin));
        }
    }

    /// Notes a fault event that happened at `at` (at most [`MAX_EVENTS`] are kept).
    pub fn event(
        &mut self,
        at: Instant,
        kind: &'static str,
        node: Option<String>,
        pid: Option<u32>,
        detail: String,
    ) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(Event {
                at_s: at.saturating_duration_since(self.origin).as_secs_f64(),
                kind,
                node,
                pid,
                detail,
            });
        }
    }

    /// Successful and failed operations recorded so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.ok_total, self.error_total)
    }

    /// Operations finished during the warm-up so far.
    pub fn warmup_ops(&self) -> u64 {
        self.warmup_ops
    }

    /// Throughput of the last complete second, if there is one.
    pub fn last_throughput(&self) -> Option<f64> {
        self.timeline.points.last().map(|p| p.throughput)
    }

    /// Ends the measurement at `end` (the last operation's completion): closes the last,
    /// partial second and hands over the numbers.
    pub fn finish(mut self, end: Instant) -> Results {
        let elapsed = end.saturating_duration_since(self.origin);
        self.timeline.roll(elapsed);
        let partial = elapsed.as_secs_f64() - self.timeline.current as f64;
        if partial > 1e-3 || self.timeline.ok + self.timeline.errors > 0 {
            self.timeline.close(partial.max(1e-3));
        }
        Results {
            elapsed,
            ops: self
                .ops
                .into_iter()
                .filter(|(_, h, e)| h.len() + e > 0)
                .collect(),
            errors: self.errors,
            not_found: self.not_found,
            warmup_ops: self.warmup_ops,
            timeline: self.timeline.points,
            events: self.events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const OK: Outcome = Outcome::Ok { found: Some(true) };

    #[test]
    fn latency_is_measured_from_the_intended_start() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        // Due at 10 ms, sent late (the schedule was stalled), answered at 31 ms.
        r.record(OpKind::Read, origin + ms(10), origin + ms(31), OK);
        let res = r.finish(origin + ms(40));
        let (kind, hist, _) = &res.ops[0];
        assert_eq!(*kind, OpKind::Read);
        assert_eq!(hist.len(), 1);
        assert!(hist.equivalent(hist.max(), 21_000), "{}", hist.max());
    }

    #[test]
    fn warmup_operations_are_counted_but_not_recorded() {
        let origin = Instant::now() + ms(1000);
        let mut r = Recorder::new(origin);
        r.record(OpKind::Read, origin - ms(5), origin + ms(1), OK);
        r.record(OpKind::Read, origin, origin + ms(1), OK);
        assert_eq!(r.warmup_ops(), 1);
        assert_eq!(r.totals(), (1, 0));
    }

    #[test]
    fn errors_are_counted_by_label_and_kind_without_latency() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        r.record(
            OpKind::Update,
            origin,
            origin + ms(5),
            Outcome::Err("timeout"),
        );
        r.record(
            OpKind::Update,
            origin,
            origin + ms(5),
            Outcome::Err("timeout"),
        );
        r.record(OpKind::Read, origin, origin, Outcome::Err(BACKLOG_ERROR));
        r.record(
            OpKind::Read,
            origin,
            origin + ms(1),
            Outcome::Ok { found: Some(false) },
        );
        let res = r.finish(origin + ms(10));
        assert_eq!(res.errors.get("timeout"), Some(&2));
        assert_eq!(res.errors.get(BACKLOG_ERROR), Some(&1));
        assert_eq!(res.not_found, 1);
        let update = res.ops.iter().find(|o| o.0 == OpKind::Update).unwrap();
        assert_eq!((update.1.len(), update.2), (0, 2));
        assert!(
            res.ops.iter().all(|o| o.0 != OpKind::Insert),
            "kinds never issued are left out"
        );
    }

    #[test]
    fn timeline_has_one_point_per_second_including_quiet_ones() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        for i in 0..10 {
            r.record(
                OpKind::Read,
                origin + ms(i * 10),
                origin + ms(i * 10 + 2),
                OK,
            );
        }
        r.record(OpKind::Read, origin + ms(2500), origin + ms(2600), OK);
        r.record(
            OpKind::Read,
            origin + ms(2600),
            origin + ms(2700),
            Outcome::Err("timeout"),
        );
        r.tick(origin + ms(3100));
        assert_eq!(r.last_throughput(), Some(1.0));
        let res = r.finish(origin + ms(3500));
        let ok: Vec<u64> = res.timeline.iter().map(|p| p.ok).collect();
        assert_eq!(ok, vec![10, 0, 1, 0]);
        assert_eq!(res.timeline[1].p99_us, None, "a quiet second has no p99");
        assert_eq!(res.timeline[2].errors, 1);
        assert!(res.timeline[0]
            .p99_us
            .is_some_and(|p| (1990..=2010).contains(&p)));
        let last = &res.timeline[3];
        assert!((last.seconds - 0.5).abs() < 1e-9, "{last:?}");
        assert!((res.elapsed.as_secs_f64() - 3.5).abs() < 1e-9);
    }

    #[test]
    fn latencies_beyond_the_range_saturate_at_sixty_seconds() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        r.record(OpKind::Read, origin, origin + Duration::from_secs(120), OK);
        let res = r.finish(origin + Duration::from_secs(120));
        assert!(res.ops[0]
            .1
            .equivalent(res.ops[0].1.max(), LATENCY_HIGHEST_US));
        assert!(res.timeline.len() <= 121);
    }

    #[test]
    fn events_are_timed_from_the_origin_and_bounded() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        for i in 0..(MAX_EVENTS as u64 + 5) {
            r.event(
                origin + ms(i * 1000),
                "kill",
                Some("n2".into()),
                Some(7),
                String::new(),
            );
        }
        let res = r.finish(origin + ms(100));
        assert_eq!(res.events.len(), MAX_EVENTS);
        assert_eq!(res.events[2].at_s, 2.0);
    }
}
