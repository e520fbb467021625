//! Bounded busy-polling of the node's runtime after it did some work
//! (`limits.idle_poll`), so that the next packet is picked up without a wake-up from
//! sleep.
//!
//! A request between nodes costs a round trip of wake-ups: the receiving node's runtime
//! thread sleeps in `epoll_wait`, and on a virtual machine waking an idle CPU from a
//! halt costs tens of microseconds, more than the node's own work on a replica read.
//! With light load every hop pays it (BENCHMARKS.md: at concurrency 1 a peer request
//! took 142 µs at the coordinator for 31 µs of work at the peer). So after the runtime
//! thread wakes, a poller task keeps it awake for at most `idle_poll`: it yields to the
//! runtime in a loop, which then polls its sockets without blocking, and yields the CPU
//! to the other processes on each turn, so that a busy machine loses little to it. Each
//! turn that finds the runtime did other work in between starts the window again; a
//! window with nothing to do ends and the thread sleeps until the next wake-up.
//! ScyllaDB's Seastar does the same (`--idle-poll-time-us`, 200 µs by default).
//!
//! Bounds: a window lasts `idle_poll` after the last work, and the poller is one task.
//! Metrics: `shoal_idle_poll_windows_total` (windows started) and
//! `shoal_idle_poll_seconds_total` (time spent polling with nothing to do).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::{IDLE_POLL_SECONDS_TOTAL, IDLE_POLL_WINDOWS_TOTAL};

/// A turn of the poller whose thread used more CPU than this ran other work in between
/// (a turn with nothing to do is three syscalls), so the window starts again.
const WORK_SEEN: Duration = Duration::from_micros(15);

/// The poller's wake-up signal, shared between the runtime's unpark hook and the task.
#[derive(Clone, Debug)]
pub struct IdlePoll {
    woken: Arc<Notify>,
    window: Duration,
}

impl IdlePoll {
    /// A poller that keeps the runtime awake for `window` after each wake-up.
    pub fn new(window: Duration) -> Self {
        Self {
            woken: Arc::new(Notify::new()),
            window,
        }
    }

    /// For the runtime's `on_thread_unpark` hook: a worker woke from sleep.
    pub fn unparked(&self) {
        self.woken.notify_one();
    }

    /// The poller task; runs until the runtime shuts down.
    pub async fn run(self) {
        loop {
            self.woken.notified().await;
            metrics::counter!(IDLE_POLL_WINDOWS_TOTAL).increment(1);
            let idle = self.poll_window().await;
            metrics::gauge!(IDLE_POLL_SECONDS_TOTAL).increment(idle.as_secs_f64());
        }
    }

    /// Polls until `window` has passed without other work; returns the time spent
    /// polling in turns that found nothing to do.
    async fn poll_window(&self) -> Duration {
        let mut idle = Duration::ZERO;
        let mut last_work = Instant::now();
        // The end of one turn's CPU reading is the start of the next one's.
        let mut cpu = thread_cpu_time();
        loop {
            let turn = Instant::now();
            if turn.duration_since(last_work) >= self.window {
                return idle;
            }
            // Back of the runtime's queue: it polls its sockets and timers without
            // blocking and runs whatever became ready before this task again.
            tokio::task::yield_now().await;
            // Let another process have the CPU if one is waiting for it.
            std::thread::yield_now();
            // The thread's own CPU time tells work done on it from time spent waiting
            // for a CPU that another process had.
            let after = thread_cpu_time();
            if after.saturating_sub(cpu) > WORK_SEEN {
                last_work = Instant::now();
            } else {
                idle += turn.elapsed();
            }
            cpu = after;
        }
    }
}

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`); zero where it cannot be
/// read, which ends every window after `window` as if nothing else ran.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_window_ends_after_the_window_without_work() {
        let window = Duration::from_millis(5);
        let poll = IdlePoll::new(window);
        let started = Instant::now();
        let idle = poll.poll_window().await;
        let took = started.elapsed();
        assert!(took >= window, "the window ended after {took:?}");
        assert!(
            idle <= took,
            "idle {idle:?} is more than the window's {took:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn work_during_a_window_starts_it_again() {
        let window = Duration::from_millis(5);
        let poll = IdlePoll::new(window);
        // Work that runs on the same thread during the window: three turns of 2 ms
        // each, every one longer than WORK_SEEN, so the window lasts past their end.
        let worker = tokio::spawn(async {
            for _ in 0..3 {
                let turn = Instant::now();
                while turn.elapsed() < Duration::from_millis(2) {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
            Instant::now()
        });
        let started = Instant::now();
        poll.poll_window().await;
        let ended = Instant::now();
        let work_done = worker.await.unwrap();
        assert!(work_done > started);
        assert!(
            ended.duration_since(work_done) >= window - WORK_SEEN,
            "the window ended {:?} after the last work",
            ended.duration_since(work_done)
        );
    }

    #[tokio::test]
    async fn each_unpark_starts_one_window() {
        let poll = IdlePoll::new(Duration::from_micros(100));
        poll.unparked();
        // The permit stored by the unpark lets the task start a window at once.
        tokio::time::timeout(Duration::from_secs(5), poll.woken.notified())
            .await
            .expect("an unpark wakes the poller");
    }
}
