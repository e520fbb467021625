//! Metric handles resolved once per combination of label values, for the per-request
//! paths. A `metrics::counter!(NAME, "op" => op)` builds its key (a label vector on the
//! heap) and looks it up in the recorder's registry on every call; the node's hot paths
//! (every request and storage operation) look their handle up here instead, in a short
//! list compared by `&'static str`.
//!
//! A handle is resolved against the recorder installed when it is first asked for, so
//! these caches serve a process whose recorder is installed before it serves (the node's
//! `serve_until_signal`); before that they resolve to no-op handles, like the macros.

use std::sync::RwLock;

use metrics::{Counter, Histogram, Key, Label, Level, Metadata};

/// The metadata of every handle resolved here.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// More label combinations than this are not cached (looked up each time, as the
/// macros do), so that a label with unexpected values cannot grow the list unbounded.
const MAX_CACHED: usize = 256;

/// The handles of one metric with `L` labels, by their values.
pub(crate) struct Handles<H, const L: usize> {
    name: &'static str,
    keys: [&'static str; L],
    resolve: fn(&'static str, Vec<Label>) -> H,
    cache: RwLock<Vec<([&'static str; L], H)>>,
}

impl<H: Clone, const L: usize> Handles<H, L> {
    const fn with(
        name: &'static str,
        keys: [&'static str; L],
        resolve: fn(&'static str, Vec<Label>) -> H,
    ) -> Self {
        Handles {
            name,
            keys,
            resolve,
            cache: RwLock::new(Vec::new()),
        }
    }

    /// The handle for these label values (in the order of the keys).
    pub(crate) fn get(&self, values: [&'static str; L]) -> H {
        if let Ok(cache) = self.cache.read() {
            if let Some((_, h)) = cache.iter().find(|(v, _)| *v == values) {
                return h.clone();
            }
        }
        let labels = self
            .keys
            .iter()
            .zip(values)
            .map(|(k, v)| Label::new(*k, v))
            .collect();
        let handle = (self.resolve)(self.name, labels);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() < MAX_CACHED && !cache.iter().any(|(v, _)| *v == values) {
                cache.push((values, handle.clone()));
            }
        }
        handle
    }
}

impl<const L: usize> Handles<Counter, L> {
    /// A cache of counter handles of metric `name` labelled by `keys`.
    pub(crate) const fn counter(name: &'static str, keys: [&'static str; L]) -> Self {
        Handles::with(name, keys, |name, labels| {
            let key = Key::from_parts(name, labels);
            metrics::with_recorder(|r| r.register_counter(&key, &METADATA))
        })
    }
}

impl<const L: usize> Handles<Histogram, L> {
    /// A cache of histogram handles of metric `name` labelled by `keys`.
    pub(crate) const fn histogram(name: &'static str, keys: [&'static str; L]) -> Self {
        Handles::with(name, keys, |name, labels| {
            let key = Key::from_parts(name, labels);
            metrics::with_recorder(|r| r.register_histogram(&key, &METADATA))
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
        Handles::counter(crate::metrics::PEER_REQUESTS_TOTAL, ["op", "result"]);

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
}
