//! A read-modify-write workload on shared sets: client tasks each add elements of their
//! own to a few shared keys, each add a read (siblings and context), a union of the
//! siblings plus the new element, and a put with the read's context.
//!
//! Every element is unique, and the ledger records what became of each put: acknowledged
//! (the put answered OK), certainly not written (the SDK says the request was delivered
//! nowhere or refused before any write), or unknown (a timeout or a transport failure:
//! it may have landed). At the end, read at R = N: every acknowledged element must be in
//! the union of the siblings (none lost), and every element found must have been put
//! with an acknowledged or unknown outcome (none invented, none resurrected from a put
//! that certainly failed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_client::{Client, ClientError, ReadOptions, WriteOptions};
use tokio::task::JoinSet;

/// Adds per second per client task at most: the sets grow by this, and every add reads
/// and writes the whole set, so the rate bounds the values' size.
const ADDS_PER_SECOND: u64 = 15;
/// Adds per client task at most (the workload also stops when asked).
const MAX_ADDS_PER_TASK: u64 = 10_000;
/// Timeout of each read and write of the workload.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of one put, by what the SDK said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The put answered OK.
    Acked,
    /// The put may or may not have landed (timeout, transport failure, server error).
    Unknown,
    /// The put was certainly not written (unreachable, overloaded).
    NotWritten,
    /// The put was answered `Unavailable`: certainly not written, as the SDK documents
    /// (a put stored before its quorum failed answers `Incomplete`, of unknown outcome;
    /// `a_put_answered_unavailable_wrote_nothing` checks it). Counted apart from
    /// [`Outcome::NotWritten`] to show how often the partitions made quorums impossible.
    Unavailable,
}

impl Outcome {
    /// Whether the put certainly wrote nothing.
    fn not_written(self) -> bool {
        match self {
            Outcome::NotWritten | Outcome::Unavailable => true,
            Outcome::Acked | Outcome::Unknown => false,
        }
    }
}

/// Everything the workload did, by phase (the test names the phases).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Each element put: its key and outcome.
    pub elements: BTreeMap<String, (String, Outcome)>,
    /// Per phase: outcome counts, and read failures.
    pub phases: BTreeMap<String, PhaseCounts>,
    /// Errors seen, by the SDK's label.
    pub errors: BTreeMap<&'static str, u64>,
    /// Whether each task had an acknowledged put since the last [`SetWorkload::mark`].
    pub acked_since_mark: Vec<bool>,
}

/// What the workload did in one phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseCounts {
    /// Puts acknowledged.
    pub acked: u64,
    /// Puts with unknown outcome.
    pub unknown: u64,
    /// Puts certainly not written.
    pub not_written: u64,
    /// Puts answered `Unavailable`.
    pub unavailable: u64,
    /// Reads that failed (the add was skipped).
    pub read_failed: u64,
    /// Reads that returned siblings (concurrent adds), which the union resolved.
    pub read_siblings: u64,
}

struct State {
    ledger: Mutex<Ledger>,
    phase: Mutex<String>,
    stop: AtomicBool,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The running workload.
pub struct SetWorkload {
    state: Arc<State>,
    tasks: JoinSet<()>,
    clients: Vec<Client>,
    keys: Vec<String>,
}

/// Encodes a set of elements as a value.
fn encode(set: &BTreeSet<String>) -> Vec<u8> {
    set.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

/// The union of the elements of `values` (the siblings of a read).
pub fn union(values: &[Vec<u8>]) -> BTreeSet<String> {
    values
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

fn classify(e: &ClientError) -> Outcome {
    match e {
        ClientError::Unavailable { .. } => Outcome::Unavailable,
        ClientError::Unreachable { .. } | ClientError::Overloaded => Outcome::NotWritten,
        _ => Outcome::Unknown,
    }
}

impl SetWorkload {
    /// Starts one task per client of `clients`, adding to the keys `keys` (chosen in
    /// turn, starting at the task's index) from phase `phase` on.
    pub fn start(clients: Vec<Client>, keys: Vec<String>, phase: &str) -> SetWorkload {
        let state = Arc::new(State {
            ledger: Mutex::new(Ledger {
                acked_since_mark: vec![false; clients.len()],
                ..Ledger::default()
            }),
            phase: Mutex::new(phase.to_owned()),
            stop: AtomicBool::new(false),
        });
        let mut tasks = JoinSet::new();
        for (t, client) in clients.iter().enumerate() {
            tasks.spawn(add_loop(t, client.clone(), keys.clone(), state.clone()));
        }
        SetWorkload {
            state,
            tasks,
            clients,
            keys,
        }
    }

    /// Counts what follows under phase `name`.
    pub fn set_phase(&self, name: &str) {
        *self.state.phase.lock().unwrap_or_else(|e| e.into_inner()) = name.to_owned();
    }

    /// Forgets which tasks had an acknowledged put, to see each task succeed again.
    pub fn mark(&self) {
        let mut ledger = self.state.lock();
        ledger.acked_since_mark.iter_mut().for_each(|a| *a = false);
    }

    /// The tasks that had no acknowledged put since the last [`SetWorkload::mark`].
    pub fn tasks_without_ack(&self) -> Vec<usize> {
        let ledger = self.state.lock();
        (0..ledger.acked_since_mark.len())
            .filter(|&t| !ledger.acked_since_mark[t])
            .collect()
    }

    /// The counts of phase `name` so far.
    pub fn phase_counts(&self, name: &str) -> PhaseCounts {
        self.state
            .lock()
            .phases
            .get(name)
            .copied()
            .unwrap_or_default()
    }

    /// The workload's clients (one per task).
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// The shared keys.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Stops the tasks (each finishes its add in progress, bounded by its timeouts)
    /// and returns the ledger.
    pub async fn stop(mut self) -> Ledger {
        self.state.stop.store(true, Ordering::Relaxed);
        while let Some(done) = self.tasks.join_next().await {
            done.expect("a workload task panicked");
        }
        std::mem::take(&mut *self.state.lock())
    }
}

/// One client task: adds `t-<n>` elements until stopped.
async fn add_loop(t: usize, client: Client, keys: Vec<String>, state: Arc<State>) {
    let mut pace = tokio::time::interval(Duration::from_millis(1000 / ADDS_PER_SECOND));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0..MAX_ADDS_PER_TASK {
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
        pace.tick().await;
        let key = &keys[(t + usize::try_from(n).unwrap_or(0)) % keys.len()];
        let read = client
            .get_with(key)
            .options(ReadOptions::default().timeout(OP_TIMEOUT))
            .send()
            .await;
        let phase = state.phase();
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                let mut ledger = state.lock();
                *ledger.errors.entry(e.label()).or_default() += 1;
                ledger.phases.entry(phase).or_default().read_failed += 1;
                continue;
            }
        };
        if read.values.len() > 1 {
            state.lock().phases.entry(phase).or_default().read_siblings += 1;
        }
        let element = format!("c{t}-{n}");
        let mut set = union(&read.values);
        set.insert(element.clone());
        let put = client
            .put_with(key, encode(&set))
            .context(Some(&read.context))
            .options(WriteOptions::default().timeout(OP_TIMEOUT))
            .send()
            .await;
        let phase = state.phase();
        let mut ledger = state.lock();
        let outcome = match &put {
            Ok(_) => Outcome::Acked,
            Err(e) => {
                *ledger.errors.entry(e.label()).or_default() += 1;
                classify(e)
            }
        };
        ledger.elements.insert(element, (key.clone(), outcome));
        let counts = ledger.phases.entry(phase).or_default();
        match outcome {
            Outcome::Acked => counts.acked += 1,
            Outcome::Unknown => counts.unknown += 1,
            Outcome::NotWritten => counts.not_written += 1,
            Outcome::Unavailable => counts.unavailable += 1,
        }
        if outcome == Outcome::Acked {
            ledger.acked_since_mark[t] = true;
        }
    }
}

/// The result of checking the final sets against the ledger.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Acknowledged elements.
    pub acked: usize,
    /// Acknowledged elements missing from the final read.
    pub lost: Vec<String>,
    /// Elements of unknown outcome found (they landed) and not found.
    pub unknown_found: usize,
    /// Elements of unknown outcome not found.
    pub unknown_missing: usize,
    /// Elements found that were never put, or put with a certain failure.
    pub invented: Vec<String>,
}

/// Checks the final contents of each key (`finals`: key, union of its siblings).
pub fn verify(ledger: &Ledger, finals: &BTreeMap<String, BTreeSet<String>>) -> Verdict {
    let mut verdict = Verdict::default();
    for (element, (key, outcome)) in &ledger.elements {
        let found = finals.get(key).is_some_and(|s| s.contains(element));
        match outcome {
            Outcome::Acked => {
                verdict.acked += 1;
                if !found {
                    verdict.lost.push(format!("{element} in {key}"));
                }
            }
            _ if found && outcome.not_written() => verdict
                .invented
                .push(format!("{element} in {key} (put certainly failed)")),
            Outcome::Unknown if found => verdict.unknown_found += 1,
            Outcome::Unknown => verdict.unknown_missing += 1,
            Outcome::NotWritten | Outcome::Unavailable => {}
        }
    }
    for (key, set) in finals {
        for element in set {
            match ledger.elements.get(element) {
                None => verdict
                    .invented
                    .push(format!("{element} in {key} (never put)")),
                Some((k, _)) if k != key => verdict
                    .invented
                    .push(format!("{element} in {key} (put to {k})")),
                Some(_) => {}
            }
        }
    }
    verdict
}

#[cfg(test)]
mod verify_tests {
    use super::*;

    fn ledger(elements: &[(&str, &str, Outcome)]) -> Ledger {
        Ledger {
            elements: elements
                .iter()
                .map(|&(e, k, o)| (e.to_owned(), (k.to_owned(), o)))
                .collect(),
            ..Ledger::default()
        }
    }

    fn finals(sets: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        sets.iter()
            .map(|&(k, s)| (k.to_owned(), s.iter().map(|e| (*e).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn the_check_finds_lost_and_invented_elements() {
        let ledger = ledger(&[
            ("c0-0", "a", Outcome::Acked),
            ("c0-1", "a", Outcome::Acked),
            ("c1-0", "b", Outcome::Unknown),
            ("c1-1", "b", Outcome::NotWritten),
            ("c1-2", "b", Outcome::Acked),
            ("c1-3", "b", Outcome::Unavailable),
        ]);
        let verdict = verify(
            &ledger,
            &finals(&[
                ("a", &["c0-0", "c1-2", "x"]),
                ("b", &["c1-0", "c1-1", "c1-3"]),
            ]),
        );
        assert_eq!(verdict.acked, 3);
        assert_eq!(verdict.lost, ["c0-1 in a", "c1-2 in b"]);
        assert_eq!((verdict.unknown_found, verdict.unknown_missing), (1, 0));
        assert_eq!(
            verdict.invented,
            [
                "c1-1 in b (put certainly failed)",
                "c1-3 in b (put certainly failed)",
                "c1-2 in a (put to b)",
                "x in a (never put)",
            ]
        );
    }

    #[test]
    fn siblings_are_united_and_a_set_round_trips() {
        let set: BTreeSet<String> = ["c0-1", "c1-0"].map(str::to_owned).into();
        let values = vec![encode(&set), b"c2-5".to_vec(), Vec::new()];
        let united = union(&values);
        assert_eq!(united.len(), 3);
        assert!(united.contains("c2-5") && united.is_superset(&set));
    }
}
