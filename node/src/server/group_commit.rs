//! Group commit for `durability = "sync"`: many writes, one fsync.
//!
//! With per-write syncing every write holds a storage thread through its own fsync, so at
//! most `limits.storage_threads` writes share one (RocksDB groups the writers it finds
//! waiting). Instead the storage threads write to the WAL without syncing and hand the
//! completions of writing ops to the committer, which syncs the WAL once for everything
//! that arrived since its last sync and only then releases their completions to the
//! driver: nothing is acknowledged before it is on disk, and one fsync covers as many
//! writes as arrived while the previous one ran.
//!
//! Ordering: a completion reaches the committer after its write returned (the WAL record is
//! in the log file); the committer takes completions first and syncs after, so each sync
//! covers every completion it releases.
//!
//! The window: when at least `storage.group_commit_window_min_waiting` (4 by default)
//! completions are already waiting (the node has concurrent writers), the committer
//! gathers for up to `window` after the first of them arrived before it syncs, so that
//! one fsync covers more writes. Under load that halves the fsyncs per write and with
//! them the CPU they cost (write-only at concurrency 64: 6-7 writes per fsync without the
//! window, 11-13 with 400 µs, and 6-8% more writes with 1 ms, the default;
//! BENCHMARKS.md). A lone write, or a few, sync at once: no
//! added latency at low concurrency.

use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvError};
use shoal_proto::StorageFailure;
use shoal_storage::Storage;
use tokio::sync::mpsc;

use super::Completion;
#[cfg(test)]
use crate::config::DEFAULT_GROUP_COMMIT_WINDOW_MIN_WAITING;

/// The most completions one sync releases; what arrives beyond waits for the next.
/// Bounded so that one sync's batch, and the latency of its first write, stay bounded.
pub(super) const MAX_GROUP: usize = 4096;

/// When the committer gathers more completions before it syncs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    /// How long after the first completion (`storage.group_commit_window`; zero: never).
    pub(super) length: Duration,
    /// Only when at least this many were already waiting as the sync fell due
    /// (`storage.group_commit_window_min_waiting`).
    pub(super) min_waiting: usize,
    /// The window also ends once no completion arrived for this long
    /// (`storage.group_commit_window_quiet`; zero: it runs its full length).
    pub(super) quiet: Duration,
}

impl Window {
    /// A window of `length` opened by the default number of waiting completions
    /// ([`DEFAULT_GROUP_COMMIT_WINDOW_MIN_WAITING`]).
    #[cfg(test)]
    fn of(length: Duration) -> Window {
        Window {
            length,
            min_waiting: DEFAULT_GROUP_COMMIT_WINDOW_MIN_WAITING,
            quiet: Duration::ZERO,
        }
    }
}

/// Runs until every sender of `rx` is gone or the driver is: takes the completions that
/// are waiting (at least one, at most [`MAX_GROUP`]), and when `window.min_waiting` or
/// more were, those arriving within `window.length` of the first too; syncs `storage`'s
/// WAL, and sends them on to `done` — as failures if the sync failed, since their writes
/// may not be durable.
pub(super) fn committer<S: Storage>(
    storage: S,
    rx: Receiver<Completion>,
    done: mpsc::UnboundedSender<Completion>,
    window: Window,
) {
    let mut group = Vec::new();
    loop {
        match rx.recv() {
            Ok(c) => group.push(c),
            Err(RecvError) => return,
        }
        let first = Instant::now();
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        if group.len() >= window.min_waiting && !window.length.is_zero() {
            let until = first + window.length;
            // The clock is read per arrival only when a quiet time can end the window.
            let quiet = (!window.quiet.is_zero()).then_some(window.quiet);
            let mut deadline = quiet.map_or(until, |q| until.min(Instant::now() + q));
            while group.len() < MAX_GROUP {
                match rx.recv_deadline(deadline) {
                    Ok(c) => {
                        group.push(c);
                        if let Some(q) = quiet {
                            deadline = until.min(Instant::now() + q);
                        }
                    }
                    // The window ended (or fell quiet), or every sender is gone: sync
                    // what there is.
                    Err(_) => break,
                }
            }
            metrics::histogram!(crate::metrics::GROUP_COMMIT_WINDOW_SECONDS)
                .record(first.elapsed().as_secs_f64());
        }
        let start = Instant::now();
        let synced = storage.sync_wal();
        metrics::histogram!(crate::metrics::GROUP_COMMIT_SYNC_SECONDS)
            .record(start.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::GROUP_COMMIT_WRITES).record(group.len() as f64);
        if let Err(e) = &synced {
            tracing::error!(error = %e, writes = group.len(), "syncing the write-ahead log failed: the writes it covered are reported failed");
            metrics::counter!(crate::metrics::GROUP_COMMIT_FAILURES_TOTAL).increment(1);
        }
        for c in group.drain(..) {
            let c = match (&synced, c) {
                (Err(e), Completion::Storage { id, .. }) => Completion::Storage {
                    id,
                    result: Err(match e {
                        shoal_storage::StorageError::DiskFull => StorageFailure::DiskFull,
                        other => StorageFailure::Engine(format!(
                            "the write is not durable: syncing the write-ahead log failed: {other}"
                        )),
                    }),
                },
                (_, c) => c,
            };
            if done.send(c).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::RequestId;
    use shoal_proto::StorageReply;
    use shoal_storage::MemStorage;

    fn completion(id: u64) -> Completion {
        Completion::Storage {
            id: RequestId(id),
            result: Ok(StorageReply::HintStored),
        }
    }

    /// Every completion comes out after a sync that followed its write: with sync
    /// tracking, nothing written before a completion was released is still unsynced
    /// when the driver sees it; and writes that queued together share one sync.
    #[test]
    fn completions_are_released_only_after_a_sync_that_covers_their_writes() {
        let storage = MemStorage::with_sync_tracking();
        let (tx, rx) = crossbeam::channel::unbounded();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for i in 0..100u64 {
            storage.put_meta(&format!("k{i}"), b"v").unwrap();
            tx.send(completion(i)).unwrap();
        }
        assert_eq!(storage.unsynced_writes(), 100);
        let s = storage.clone();
        let worker =
            std::thread::spawn(move || committer(s, rx, done_tx, Window::of(Duration::ZERO)));
        // Released only once synced: the 100 writes are all durable by then.
        let seen = released(&mut done_rx, &storage, 100);
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        drop(tx);
        worker.join().unwrap();
    }

    /// How long a test waits for the committer (never reached when it works).
    const DEADLINE: Duration = Duration::from_secs(20);

    /// Receives `n` completions (panicking after [`DEADLINE`]), checking that each is a
    /// success and that every write made so far was synced when it came out; returns
    /// their ids in the order released.
    fn released(
        done_rx: &mut mpsc::UnboundedReceiver<Completion>,
        storage: &MemStorage,
        n: usize,
    ) -> Vec<u64> {
        let deadline = Instant::now() + DEADLINE;
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            loop {
                match done_rx.try_recv() {
                    Ok(Completion::Storage { id, result }) => {
                        assert!(result.is_ok(), "{result:?}");
                        assert_eq!(storage.unsynced_writes(), 0, "completion {id:?}");
                        ids.push(id.0);
                        break;
                    }
                    Ok(_) => panic!("not a storage completion"),
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        panic!("the committer stopped after {i} of {n} completions")
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        assert!(Instant::now() < deadline, "{i} of {n} completions released");
                        std::thread::yield_now();
                    }
                }
            }
        }
        ids
    }

    /// With enough writes waiting, the ones arriving during the window share their sync:
    /// the writes queued after the committer took the first ones come out of one fsync
    /// with them (without the window the first ones are synced at once, and the later ones
    /// need a second fsync).
    #[test]
    fn writes_arriving_within_the_window_share_the_sync_of_those_waiting() {
        share_one_sync(Window::of(WINDOW_FOREVER));
    }

    /// `storage.group_commit_window_min_waiting` sets how many waiting writes open the
    /// window: two, when it is 2.
    #[test]
    fn two_waiting_writes_open_the_window_when_configured_so() {
        share_one_sync(Window {
            length: WINDOW_FOREVER,
            min_waiting: 2,
            quiet: Duration::ZERO,
        });
    }

    /// A window that falls quiet ends then, long before its length: the waiting writes
    /// are released although the window (far longer than the test) and its senders
    /// remain.
    #[test]
    fn a_window_ends_once_no_write_arrived_for_its_quiet_time() {
        let storage = MemStorage::with_sync_tracking();
        let (tx, rx) = crossbeam::channel::unbounded();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let window = Window {
            length: WINDOW_FOREVER,
            min_waiting: 2,
            quiet: Duration::from_millis(1),
        };
        for i in 0..3 {
            storage.put_meta(&format!("k{i}"), b"v").unwrap();
            tx.send(completion(i)).unwrap();
        }
        let s = storage.clone();
        let worker = std::thread::spawn(move || committer(s, rx, done_tx, window));
        // `tx` stays open: only the quiet time can end the window.
        released(&mut done_rx, &storage, 3);
        assert_eq!(storage.syncs(), 1);
        drop(tx);
        worker.join().unwrap();
    }

    /// A window far longer than a test: only the senders' end closes it.
    const WINDOW_FOREVER: Duration = Duration::from_secs(3600);

    /// `window.min_waiting` writes wait, the committer takes them, five more arrive: all
    /// are released after one fsync.
    fn share_one_sync(window: Window) {
        let storage = MemStorage::with_sync_tracking();
        let (tx, rx) = crossbeam::channel::unbounded();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let waiting = window.min_waiting as u64;
        for i in 0..waiting {
            storage.put_meta(&format!("k{i}"), b"v").unwrap();
            tx.send(completion(i)).unwrap();
        }
        let s = storage.clone();
        let worker = std::thread::spawn(move || committer(s, rx, done_tx, window));
        // The committer took the waiting ones; now more arrive.
        let deadline = Instant::now() + DEADLINE;
        while !tx.is_empty() {
            assert!(Instant::now() < deadline, "the committer took nothing");
            std::thread::yield_now();
        }
        for i in waiting..waiting + 5 {
            storage.put_meta(&format!("k{i}"), b"v").unwrap();
            tx.send(completion(i)).unwrap();
        }
        drop(tx);
        released(&mut done_rx, &storage, window.min_waiting + 5);
        worker.join().unwrap();
        assert_eq!(
            storage.syncs(),
            1,
            "one fsync for every write of the window"
        );
    }

    /// Fewer writes waiting than open the window: they are synced and released at
    /// once, whatever the window (here far longer than the test may take).
    #[test]
    fn a_lone_write_is_synced_at_once_whatever_the_window() {
        let storage = MemStorage::with_sync_tracking();
        let (tx, rx) = crossbeam::channel::unbounded();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        storage.put_meta("k", b"v").unwrap();
        tx.send(completion(1)).unwrap();
        let s = storage.clone();
        let worker =
            std::thread::spawn(move || committer(s, rx, done_tx, Window::of(WINDOW_FOREVER)));
        released(&mut done_rx, &storage, 1);
        assert_eq!(storage.syncs(), 1);
        drop(tx);
        worker.join().unwrap();
    }

    /// A failed sync fails the writes it covered: their success would claim durability.
    #[test]
    fn a_failed_sync_reports_the_writes_it_covered_as_failed() {
        let storage = MemStorage::with_sync_tracking();
        storage.put_meta("k", b"v").unwrap();
        storage.kill();
        let (tx, rx) = crossbeam::channel::unbounded();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        tx.send(completion(7)).unwrap();
        drop(tx);
        committer(storage, rx, done_tx, Window::of(Duration::ZERO));
        match done_rx.blocking_recv() {
            Some(Completion::Storage { id, result }) => {
                assert_eq!(id, RequestId(7));
                assert!(
                    matches!(&result, Err(StorageFailure::Engine(m)) if m.contains("not durable")),
                    "{result:?}"
                );
            }
            _ => panic!("the committer sent nothing"),
        }
    }
}
