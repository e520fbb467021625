//! Reads the engine's own counters during a run: a [`metrics`] recorder, installed for
//! the simulating thread only, that keeps the counters the report shows (hints stored
//! and delivered, read repairs, forwards, anti-entropy repairs, exchanges, split batches
//! and overdue starts, tombstones reaped, sibling-limit events, coordinated requests by
//! result, writes replicated before their local sync, replica writes sent again) and
//! ignores everything else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

use shoal_proto::metrics::{
    AAE_BATCHES_SPLIT_TOTAL, AAE_EXCHANGES_TOTAL, AAE_KEYS_REPAIRED_TOTAL,
    AAE_OVERDUE_STARTS_TOTAL, COORDINATOR_REQUESTS_TOTAL, FORWARDS_TOTAL, HINTS_TOTAL,
    MEMBER_STATE_CHANGES_TOTAL, READ_REPAIRS_TOTAL, REAPS_INCOMPLETE_TOTAL, REAP_RESENDS_TOTAL,
    REPLICA_READS_RESENT_TOTAL, REPLICA_WRITES_RESENT_TOTAL, SIBLING_LIMIT_TOTAL,
    TOMBSTONES_REAPED_TOTAL, TRANSFERS_DONE_TOTAL, TRANSFER_ERRORS_TOTAL, TRANSFER_KEYS_TOTAL,
    WRITES_REPLICATED_BEFORE_SYNC_TOTAL,
};

/// Counters the report keeps.
const KEPT: &[&str] = &[
    HINTS_TOTAL,
    READ_REPAIRS_TOTAL,
    FORWARDS_TOTAL,
    MEMBER_STATE_CHANGES_TOTAL,
    AAE_KEYS_REPAIRED_TOTAL,
    AAE_EXCHANGES_TOTAL,
    TOMBSTONES_REAPED_TOTAL,
    REAP_RESENDS_TOTAL,
    REAPS_INCOMPLETE_TOTAL,
    REPLICA_READS_RESENT_TOTAL,
    shoal_executor::metrics::REAPED_COPIES_DROPPED_TOTAL,
    shoal_executor::metrics::REAPED_READS_TOTAL,
    SIBLING_LIMIT_TOTAL,
    AAE_BATCHES_SPLIT_TOTAL,
    AAE_OVERDUE_STARTS_TOTAL,
    shoal_storage::metrics::DISK_FULL_REFUSALS_TOTAL,
    TRANSFERS_DONE_TOTAL,
    TRANSFER_KEYS_TOTAL,
    TRANSFER_ERRORS_TOTAL,
    COORDINATOR_REQUESTS_TOTAL,
    WRITES_REPLICATED_BEFORE_SYNC_TOTAL,
    REPLICA_WRITES_RESENT_TOTAL,
];

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Counts the kept counters, by `name{label=value,...}`.
#[derive(Debug, Default)]
pub(crate) struct CountingRecorder {
    counts: Counts,
}

struct Cell {
    counts: Counts,
    key: String,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *c.entry(self.key.clone()).or_insert(0) += value;
    }

    fn absolute(&self, value: u64) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let e = c.entry(self.key.clone()).or_insert(0);
        *e = (*e).max(value);
    }
}

impl CountingRecorder {
    /// The counts so far.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.reader().snapshot()
    }

    /// A handle that reads the counts while the recorder is installed.
    pub(crate) fn reader(&self) -> CounterReader {
        CounterReader {
            counts: Arc::clone(&self.counts),
        }
    }
}

/// Reads the counts of a [`CountingRecorder`] (the simulator samples them as it runs).
#[derive(Debug, Clone, Default)]
pub(crate) struct CounterReader {
    counts: Counts,
}

impl CounterReader {
    /// The counts so far.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The sum of every counter whose rendered name starts with `prefix` (all its label
    /// sets).
    pub(crate) fn sum(&self, prefix: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .sum()
    }
}

/// The key of counter `name` with `labels` in the counts, as the report shows it:
/// `name{label=value,...}` with the labels sorted, or `name` alone.
pub fn counter_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if labels.is_empty() {
        return name.to_owned();
    }
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// The key of a recorded counter in the counts.
fn render(key: &Key) -> String {
    let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
    counter_key(key.name(), &labels)
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if KEPT.contains(&key.name()) {
            Counter::from_arc(Arc::new(Cell {
                counts: Arc::clone(&self.counts),
                key: render(key),
            }))
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_counters_are_counted_with_their_labels() {
        let rec = CountingRecorder::default();
        metrics::with_local_recorder(&rec, || {
            metrics::counter!(HINTS_TOTAL, "event" => "stored").increment(2);
            metrics::counter!(HINTS_TOTAL, "event" => "stored").increment(1);
            metrics::counter!(shoal_storage::metrics::OPS_TOTAL).increment(5);
        });
        let snap = rec.snapshot();
        let stored = counter_key(HINTS_TOTAL, &[("event", "stored")]);
        assert_eq!(stored, format!("{HINTS_TOTAL}{{event=stored}}"));
        assert_eq!(snap.get(&stored), Some(&3));
        assert_eq!(snap.len(), 1);
    }
}
