//! Replication lag: a coordinator that answered a write at W keeps delivering it and
//! records the time to its last primary's acknowledgement (or counts it unfinished); a
//! hint holder records the time from a hint's first store to its delivery.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use shoal_proto::metrics::{
    HINT_DELIVERY_LAG_SECONDS, REPLICATION_LAG_SECONDS, REPLICATION_LAG_UNFINISHED_TOTAL,
};
use shoal_proto::wire::{ClientResponse, PeerResponse, Response};
use shoal_proto::{CausalContext, Command, Dot, Object, StorageOp};

use super::engine_harness::*;
use super::{a, five, unreachable, written};

/// Keeps every counter total and every histogram sample, by metric name (labels
/// ignored), for the thread it is installed on.
#[derive(Default)]
pub(super) struct Recorded {
    counters: Arc<Mutex<BTreeMap<String, u64>>>,
    samples: Arc<Mutex<BTreeMap<String, Vec<f64>>>>,
}

struct Cell {
    name: String,
    counters: Arc<Mutex<BTreeMap<String, u64>>>,
    samples: Arc<Mutex<BTreeMap<String, Vec<f64>>>>,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self
            .counters
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default() += value;
    }

    fn absolute(&self, value: u64) {
        self.counters
            .lock()
            .unwrap()
            .insert(self.name.clone(), value);
    }
}

impl HistogramFn for Cell {
    fn record(&self, value: f64) {
        self.samples
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default()
            .push(value);
    }
}

impl Recorded {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        Arc::new(Cell {
            name: key.name().to_owned(),
            counters: Arc::clone(&self.counters),
            samples: Arc::clone(&self.samples),
        })
    }

    pub(super) fn counter(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn samples(&self, name: &str) -> Vec<f64> {
        self.samples
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

fn is_put_answer(cmds: &[Command]) -> bool {
    matches!(
        cmds,
        [Command::Respond {
            response: Response::Client(ClientResponse::Put(_)),
            ..
        }]
    )
}

#[test]
fn a_write_answered_at_w2_records_the_lag_to_its_third_replicas_ack() {
    let rec = Recorded::default();
    metrics::with_local_recorder(&rec, || {
        let mut c = five();
        let key = c.key_where(|p| p[0] == a());
        let cmds = c.client(&a(), 1, put(&key, "v", None));
        let sends = c.run_storage(&a(), &cmds[0]);
        assert_eq!(sends.len(), 2, "{sends:?}");
        c.now = c.now + Duration::from_millis(20);
        assert!(is_put_answer(&c.reply(
            &a(),
            &sends[0],
            Ok(PeerResponse::Ack)
        )));
        // Answered: nothing recorded until the third replica acknowledges.
        assert!(rec.samples(REPLICATION_LAG_SECONDS).is_empty());
        c.now = c.now + Duration::from_millis(300);
        assert_eq!(c.reply(&a(), &sends[1], Ok(PeerResponse::Ack)), vec![]);
        assert_eq!(rec.samples(REPLICATION_LAG_SECONDS), vec![0.3]);
        assert_eq!(rec.counter(REPLICATION_LAG_UNFINISHED_TOTAL), 0);
        // W = 3: every replica had acknowledged by the answer, a lag of 0.
        let cmds = c.client(&a(), 2, put_w(&key, "w", 3));
        let sends = c.run_storage(&a(), &cmds[0]);
        c.now = c.now + Duration::from_millis(50);
        assert_eq!(c.reply(&a(), &sends[0], Ok(PeerResponse::Ack)), vec![]);
        assert!(is_put_answer(&c.reply(
            &a(),
            &sends[1],
            Ok(PeerResponse::Ack)
        )));
        assert_eq!(rec.samples(REPLICATION_LAG_SECONDS), vec![0.3, 0.0]);
    });
}

#[test]
fn a_write_whose_third_replica_never_acks_counts_as_unfinished() {
    let rec = Recorded::default();
    metrics::with_local_recorder(&rec, || {
        let mut c = five();
        let key = c.key_where(|p| p[0] == a());
        let fallbacks = c.fallbacks(&key);
        let cmds = c.client(&a(), 1, put(&key, "v", None));
        let sends = c.run_storage(&a(), &cmds[0]);
        assert!(is_put_answer(&c.reply(
            &a(),
            &sends[0],
            Ok(PeerResponse::Ack)
        )));
        // The third replica fails: its copy goes to a fallback as a hint, which acks.
        let resend = c.reply(&a(), &sends[1], unreachable());
        assert_eq!(resend.len(), 1, "{resend:?}");
        assert!(
            matches!(&resend[0], Command::Send { to, .. } if *to == fallbacks[0]),
            "{resend:?}"
        );
        assert_eq!(c.reply(&a(), &resend[0], Ok(PeerResponse::Ack)), vec![]);
        assert_eq!(c.engine(&a()).inflight(), 0, "delivery ended");
        assert!(rec.samples(REPLICATION_LAG_SECONDS).is_empty());
        assert_eq!(rec.counter(REPLICATION_LAG_UNFINISHED_TOTAL), 1);
        // A write that failed is not a lag at all.
        let cmds = c.client(&a(), 2, put_w(&key, "w", 3));
        let mut sends = c.run_storage(&a(), &cmds[0]);
        while let Some(send) = sends.pop() {
            let next = c.reply(&a(), &send, unreachable());
            sends.extend(
                next.into_iter()
                    .filter(|cmd| matches!(cmd, Command::Send { .. })),
            );
        }
        assert_eq!(c.engine(&a()).inflight(), 0, "delivery ended");
        assert_eq!(rec.counter(REPLICATION_LAG_UNFINISHED_TOTAL), 1);
        assert!(rec.samples(REPLICATION_LAG_SECONDS).is_empty());
    });
}

#[test]
fn a_delivered_hint_records_the_time_since_it_was_stored() {
    let rec = Recorded::default();
    metrics::with_local_recorder(&rec, || {
        let mut c = five();
        let key = c.key_where(|p| !p.contains(&a()));
        let (part, prefs) = (c.partition(&key), c.prefs(&key));
        let (coordinator, target) = (prefs[0].clone(), prefs[1].clone());
        let object = written(
            &Object::new(),
            &CausalContext::new(),
            "v",
            Dot::new(c.actor(&coordinator), 1),
        );
        let stored_at = c.now;
        let cmds = c.peer(
            &a(),
            1,
            &coordinator,
            replicate(part, &key, &object, Some(&target)),
        );
        c.run_storage(&a(), &cmds[0]);
        // Delivery passes run until the hint is delivered and deleted.
        let mut delivered = false;
        for _ in 0..4 {
            let mut work = c.tick(&a(), &[]);
            while let Some(cmd) = work.pop() {
                let next = match &cmd {
                    Command::Storage { op, .. } => {
                        let is_delete = matches!(op, StorageOp::DeleteHint { .. });
                        let next = c.run_storage(&a(), &cmd);
                        delivered |= is_delete;
                        next
                    }
                    Command::Send { .. } => c.reply(&a(), &cmd, Ok(PeerResponse::Ack)),
                    _ => vec![],
                };
                work.extend(next);
            }
            if delivered {
                break;
            }
        }
        assert!(delivered, "the hint was never delivered");
        assert_eq!(c.hint_count(&a()), 0);
        let lag = c.now.saturating_since(stored_at).as_secs_f64();
        assert!(lag > 0.0);
        assert_eq!(rec.samples(HINT_DELIVERY_LAG_SECONDS), vec![lag]);
    });
}
