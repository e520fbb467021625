//! Metric handles resolved once per combination of label values, for Shoal's per-request
//! paths. A `metrics::counter!(NAME, "op" => op)` builds its key (a label vector on the
//! heap) and looks it up in the recorder's registry on every call; the hot paths (every
//! request, every storage operation) look their handle up in a [`Handles`] instead, a
//! short list compared by `&'static str`.
//!
//! A handle is resolved against the recorder in effect when it is first asked for. A
//! `static` [`Handles`] therefore serves a process whose global recorder is installed
//! before it serves (the node); code that runs under `metrics::with_local_recorder` (the
//! simulator, the engine's tests) keeps its [`Handles`] in the object that records
//! (one per engine), created and used under that recorder.

use std::fmt;
use std::sync::RwLock;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata};

/// The metadata of every handle resolved here.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// More label combinations than this are not cached (looked up each time, as the
/// macros do), so that a label with unexpected values cannot grow the list unbounded.
pub const MAX_CACHED: usize = 256;

/// The handles of one metric with `L` labels, by their values.
pub struct Handles<H, const L: usize> {
    name: &'static str,
    keys: [&'static str; L],
    resolve: fn(&Key) -> H,
    cache: RwLock<Vec<([&'static str; L], H)>>,
}

impl<H, const L: usize> fmt::Debug for Handles<H, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.cache.read().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("Handles")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("cached", &cached)
            .finish()
    }
}

impl<H: Clone, const L: usize> Handles<H, L> {
    const fn with(name: &'static str, keys: [&'static str; L], resolve: fn(&Key) -> H) -> Self {
        Handles {
            name,
            keys,
            resolve,
            cache: RwLock::new(Vec::new()),
        }
    }

    /// The handle for these label values (in the order of the keys).
    pub fn get(&self, values: [&'static str; L]) -> H {
        if let Ok(cache) = self.cache.read() {
            if let Some((_, h)) = cache.iter().find(|(v, _)| *v == values) {
                return h.clone();
            }
        }
        let labels: Vec<Label> = self
            .keys
            .iter()
            .zip(values)
            .map(|(k, v)| Label::new(*k, v))
            .collect();
        let handle = (self.resolve)(&Key::from_parts(self.name, labels));
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() < MAX_CACHED && !cache.iter().any(|(v, _)| *v == values) {
                cache.push((values, handle.clone()));
            }
        }
        handle
    }
}

impl<H: Clone> Handles<H, 0> {
    /// The handle of a metric without labels.
    pub fn one(&self) -> H {
        self.get([])
    }
}

impl<const L: usize> Handles<Counter, L> {
    /// A cache of counter handles of metric `name` labelled by `keys`.
    pub const fn counter(name: &'static str, keys: [&'static str; L]) -> Self {
        Handles::with(name, keys, |key| {
            metrics::with_recorder(|r| r.register_counter(key, &METADATA))
        })
    }
}

impl<const L: usize> Handles<Gauge, L> {
    /// A cache of gauge handles of metric `name` labelled by `keys`.
    pub const fn gauge(name: &'static str, keys: [&'static str; L]) -> Self {
        Handles::with(name, keys, |key| {
            metrics::with_recorder(|r| r.register_gauge(key, &METADATA))
        })
    }
}

impl<const L: usize> Handles<Histogram, L> {
    /// A cache of histogram handles of metric `name` labelled by `keys`.
    pub const fn histogram(name: &'static str, keys: [&'static str; L]) -> Self {
        Handles::with(name, keys, |key| {
            metrics::with_recorder(|r| r.register_histogram(key, &METADATA))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{Gauge, Key, KeyName, Metadata, Recorder, SharedString, Unit};

    use super::*;

    /// Counters by their key's text, and how often a key was registered.
    #[derive(Default)]
    struct Counting {
        counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
        registrations: AtomicU64,
    }

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.registrations.fetch_add(1, Ordering::Relaxed);
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let text = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut counters = self.counters.lock().unwrap();
            Counter::from_arc(counters.entry(text).or_default().clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    static OPS: Handles<Counter, 2> =
        Handles::counter("shoal_peer_requests_total", ["op", "result"]);

    /// Each combination of values counts under its own labels, and looking one up again
    /// reuses its handle instead of registering it again.
    #[test]
    fn handles_count_under_their_labels_and_are_resolved_once() {
        let recorder = Counting::default();
        metrics::with_local_recorder(&recorder, || {
            OPS.get(["get", "ok"]).increment(2);
            OPS.get(["get", "ok"]).increment(1);
            OPS.get(["put", "timeout"]).increment(5);
        });
        let counts: BTreeMap<String, u64> = recorder
            .counters
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect();
        assert_eq!(
            counts,
            BTreeMap::from([
                ("shoal_peer_requests_total{op=get,result=ok}".to_string(), 3),
                (
                    "shoal_peer_requests_total{op=put,result=timeout}".to_string(),
                    5
                ),
            ])
        );
        assert_eq!(recorder.registrations.load(Ordering::Relaxed), 2);
    }

    /// Handles kept in an object rather than a static belong to the recorder in effect
    /// when that object first asked for them: two objects, each used under a recorder
    /// of its own, count apart (the simulator's nodes, each engine's tests).
    #[test]
    fn handles_kept_per_object_count_into_the_recorder_they_were_resolved_under() {
        let first = Counting::default();
        let second = Counting::default();
        let a: Handles<Counter, 1> = Handles::counter("shoal_test_total", ["op"]);
        let b: Handles<Counter, 1> = Handles::counter("shoal_test_total", ["op"]);
        metrics::with_local_recorder(&first, || a.get(["get"]).increment(1));
        metrics::with_local_recorder(&second, || b.get(["get"]).increment(4));
        // Used again under the other recorder, each still counts into its own.
        metrics::with_local_recorder(&second, || a.get(["get"]).increment(10));
        let count = |r: &Counting| -> u64 {
            r.counters
                .lock()
                .unwrap()
                .values()
                .map(|v| v.load(Ordering::Relaxed))
                .sum()
        };
        assert_eq!(count(&first), 11);
        assert_eq!(count(&second), 4);
    }

    /// A metric without labels is resolved once too.
    #[test]
    fn a_metric_without_labels_is_resolved_once() {
        let recorder = Counting::default();
        let h: Handles<Counter, 0> = Handles::counter("shoal_plain_total", []);
        metrics::with_local_recorder(&recorder, || {
            h.one().increment(1);
            h.one().increment(2);
        });
        assert_eq!(recorder.registrations.load(Ordering::Relaxed), 1);
        let counters = recorder.counters.lock().unwrap();
        assert_eq!(counters["shoal_plain_total{}"].load(Ordering::Relaxed), 3);
    }
}
