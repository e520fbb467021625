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
//! A turn after one that ran a backlog on the thread (more than [`BACKLOG_SEEN`] of
//! CPU) does not yield the CPU: the runtime is saturated and has more to do, and each
//! yield there only handed the CPU to another busy process early, a context switch per
//! turn that the kernel's time slices make unnecessary (BENCHMARKS.md: 5-6% of a
//! node's CPU under workload A at 64 went to `sched_yield`).
//!
//! Yielding suits processes that take the CPU for a packet and sleep again, not
//! CPU-bound ones (compactions, other programs): the kernel's scheduler (EEVDF) pushes a
//! yielding thread's deadline back, and a runnable thread gets no wake-up preemption
//! when its packets arrive, so beside busy loops the runtime went unscheduled for
//! 50-140 ms at a time (`perf sched timehist`), its windows never ended (the thread's
//! CPU time grew in every turn), and its peers' pings timed out. So a window lasts at
//! most [`MAX_WINDOW_FACTOR`] times `idle_poll`, and a turn that waited more than
//! [`CONTENDED_WAIT`] beyond the CPU time it used ends the window at once; wake-ups then
//! start no window for [`CONTENDED_REST`], doubling while windows keep ending so: the
//! runtime sleeps between events, and a woken thread is scheduled promptly. (Variants
//! that ended windows after waits of 100 or 500 µs halved throughput at concurrency 1 on
//! two cores, where three nodes' pollers and the load generator share the CPUs: nearly
//! every window ended so and the poller rested.)
//!
//! Bounds: a window lasts `idle_poll` after the last work, and the poller is one task.
//! Metrics: `shoal_idle_poll_windows_total` (windows started),
//! `shoal_idle_poll_seconds_total` (time spent polling with nothing to do),
//! `shoal_idle_poll_cpu_yields_total` (turns that yielded the CPU) and
//! `shoal_idle_poll_contended_total` (windows ended because another thread wanted the CPU).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::{
    IDLE_POLL_CONTENDED_TOTAL, IDLE_POLL_CPU_YIELDS_TOTAL, IDLE_POLL_SECONDS_TOTAL,
    IDLE_POLL_WINDOWS_TOTAL,
};

/// A turn of the poller whose thread used more CPU than this ran other work in between
/// (a turn with nothing to do is three syscalls), so the window starts again.
const WORK_SEEN: Duration = Duration::from_micros(15);

/// A turn whose thread used more CPU than this ran a backlog of work: the runtime is
/// saturated, and the next turn does not yield the CPU to other processes (they get it
/// at the end of the thread's time slice instead of after every turn). Workload A at
/// concurrency 64 ran faster in 5 of 5 pairs (by 0.2-8%, with 2-8% less of the nodes'
/// CPU per operation), write-only at 64 in 3 of 3 (by 2-12%), and
/// workloads at concurrency 1, whose turns each serve one request (tens of
/// microseconds), were unchanged (BENCHMARKS.md). A threshold of [`WORK_SEEN`] (no
/// yield after any work) cost a fifth of the throughput at concurrency 1 on two cores:
/// there the next process in a request's chain waits for the CPU this thread holds.
const BACKLOG_SEEN: Duration = Duration::from_micros(100);

/// A turn that waited this much longer than the CPU time its thread used gave the CPU
/// to a thread that kept it for several scheduler slices (a CPU-bound one), not to one
/// that handled a packet and slept again (tens of microseconds): the window ends.
const CONTENDED_WAIT: Duration = Duration::from_millis(2);

/// After a window that ended for contention, wake-ups start no window for this long,
/// doubled after each further contended window up to [`MAX_CONTENDED_REST`] and reset
/// by one that ends without: the runtime sleeps in `epoll_wait` between events, as
/// without the poller. A rare long wait costs little polling; a thread that stays
/// CPU-bound soon leaves the poller resting most of the time.
const CONTENDED_REST: Duration = Duration::from_millis(10);

/// The longest rest: beside a thread that stays CPU-bound, at most one window in this
/// long pays a yield's wait.
const MAX_CONTENDED_REST: Duration = Duration::from_millis(5120);

/// A window ends after this many times `idle_poll` whatever it sees: its turns can count
/// a busy neighbour's time as work done (as they did beside a busy loop, keeping one
/// window open for minutes). A runtime with more work does not sleep anyway, and the
/// next wake-up starts a new window.
const MAX_WINDOW_FACTOR: u32 = 20;

/// The poller's wake-up signal, shared between the runtime's unpark hook and the task.
#[derive(Clone, Debug)]
pub struct IdlePoll {
    woken: Arc<Notify>,
    window: Duration,
    /// [`CONTENDED_WAIT`] (tests of the window's other ends turn it off).
    contended_wait: Duration,
}

impl IdlePoll {
    /// A poller that keeps the runtime awake for `window` after each wake-up.
    pub fn new(window: Duration) -> Self {
        Self {
            woken: Arc::new(Notify::new()),
            window,
            contended_wait: CONTENDED_WAIT,
        }
    }

    /// For the runtime's `on_thread_unpark` hook: a worker woke from sleep.
    pub fn unparked(&self) {
        self.woken.notify_one();
    }

    /// The poller task; runs until the runtime shuts down.
    pub async fn run(self) {
        let mut rest_until: Option<Instant> = None;
        let mut rest = CONTENDED_REST;
        loop {
            self.woken.notified().await;
            if rest_until.is_some_and(|until| Instant::now() < until) {
                continue;
            }
            metrics::counter!(IDLE_POLL_WINDOWS_TOTAL).increment(1);
            let window = self.poll_window().await;
            metrics::gauge!(IDLE_POLL_SECONDS_TOTAL).increment(window.idle.as_secs_f64());
            metrics::counter!(IDLE_POLL_CPU_YIELDS_TOTAL).increment(window.cpu_yields);
            if window.contended {
                metrics::counter!(IDLE_POLL_CONTENDED_TOTAL).increment(1);
            }
            let (this_rest, next) = rests(window.contended, rest);
            rest_until = this_rest.map(|rest| Instant::now() + rest);
            rest = next;
        }
    }

    /// Polls until `window` has passed without other work; returns how the window went.
    async fn poll_window(&self) -> Window {
        let mut idle = Duration::ZERO;
        let mut turns = 0;
        let mut cpu_yields = 0;
        // The CPU the thread used in the previous turn: the runtime's work since the
        // poller's previous turn. The window starts after a wake-up, not a backlog.
        let mut last_used = Duration::ZERO;
        let started = Instant::now();
        let mut last_work = started;
        // The end of one turn's CPU reading is the start of the next one's.
        let mut cpu = thread_cpu_time();
        loop {
            let turn = Instant::now();
            if turn.duration_since(last_work) >= self.window
                || turn.duration_since(started) >= self.window * MAX_WINDOW_FACTOR
            {
                return Window {
                    idle,
                    contended: false,
                    turns,
                    cpu_yields,
                };
            }
            turns += 1;
            // Back of the runtime's queue: it polls its sockets and timers without
            // blocking and runs whatever became ready before this task again.
            tokio::task::yield_now().await;
            // Let another process have the CPU if one is waiting for it, unless the
            // runtime is working off a backlog.
            if last_used <= BACKLOG_SEEN {
                std::thread::yield_now();
                cpu_yields += 1;
            }
            // The thread's own CPU time tells work done on it from time spent waiting
            // for a CPU that another process had.
            let after = thread_cpu_time();
            let used = after.saturating_sub(cpu);
            if turn.elapsed().saturating_sub(used) > self.contended_wait {
                // The CPU went to a thread that kept it, not to one that answered a
                // packet and slept again: sleep until the next wake-up instead.
                return Window {
                    idle,
                    contended: true,
                    turns,
                    cpu_yields,
                };
            }
            if used > WORK_SEEN {
                last_work = Instant::now();
            } else {
                idle += turn.elapsed();
            }
            cpu = after;
            last_used = used;
        }
    }
}

/// After a window that ended `contended` (or not), with `rest` the rest a contended
/// window would take now: the rest to take (none after an uncontended window) and the
/// rest the next contended window would take.
fn rests(contended: bool, rest: Duration) -> (Option<Duration>, Duration) {
    if contended {
        (Some(rest), (rest * 2).min(MAX_CONTENDED_REST))
    } else {
        (None, CONTENDED_REST)
    }
}

/// How a polling window went.
struct Window {
    /// Time spent polling in turns that found nothing to do.
    idle: Duration,
    /// Whether it ended because another thread was waiting for the CPU.
    contended: bool,
    /// The poller's turns (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    turns: u64,
    /// Turns that yielded the CPU to other processes (all but those after a backlog).
    cpu_yields: u64,
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

    /// A poller that never ends a window for contention: other tests on the machine's
    /// CPUs must not cut short the windows these tests time.
    fn uncontended(window: Duration) -> IdlePoll {
        IdlePoll {
            contended_wait: Duration::MAX,
            ..IdlePoll::new(window)
        }
    }

    #[tokio::test]
    async fn a_window_ends_after_the_window_without_work() {
        let window = Duration::from_millis(5);
        let poll = uncontended(window);
        let started = Instant::now();
        let idle = poll.poll_window().await.idle;
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
        let poll = uncontended(window);
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

    #[tokio::test(flavor = "current_thread")]
    async fn turns_after_a_backlog_do_not_yield_the_cpu_and_idle_turns_do() {
        let window = Duration::from_millis(5);
        let poll = uncontended(window);
        // A backlog on the poller's thread: three turns of 2 ms of CPU time each (by the
        // thread's CPU clock, so that other processes taking the CPU cannot shorten
        // them below BACKLOG_SEEN), each run between two turns of the poller.
        const BACKLOG_TURNS: u64 = 3;
        let worker = tokio::spawn(async {
            for _ in 0..BACKLOG_TURNS {
                let start = thread_cpu_time();
                while thread_cpu_time().saturating_sub(start) < Duration::from_millis(2) {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
        });
        let outcome = poll.poll_window().await;
        worker.await.unwrap();
        // The turn after each backlog turn kept the CPU; the first turn (after a
        // wake-up) and the idle turns until the window ended yielded it. An idle turn
        // uses a few microseconds of CPU, but interrupts handled on the thread are
        // charged to it: on a loaded machine a few idle turns in tens of thousands
        // passed BACKLOG_SEEN too (8 of 89,408 in one CI run), and beside busy threads
        // each yield waits long enough that the window ends after two or three idle
        // turns. So: at least the backlog's turns kept the CPU, and besides the first
        // turn at least one idle turn after the backlog yielded it.
        let kept = outcome.turns - outcome.cpu_yields;
        assert!(
            kept >= BACKLOG_TURNS,
            "{kept} of {} turns kept the CPU after {BACKLOG_TURNS} backlog turns",
            outcome.turns
        );
        assert!(
            outcome.cpu_yields >= 2,
            "idle turns yielded the CPU {} times in {} turns",
            outcome.cpu_yields,
            outcome.turns
        );
    }

    /// Pins the calling thread to `cpu`.
    fn pin_to(cpu: usize) {
        // SAFETY: `set` is a zeroed, valid cpu_set_t for the duration of the calls.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            assert_eq!(
                rc,
                0,
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// A poller whose CPU a CPU-bound thread wants stops polling. Before, beside such a
    /// thread its windows never ended (a 2-s window lasted 310 s), and the kernel (EEVDF)
    /// left the yielding runtime unscheduled for 50-140 ms at a time, its packets unread
    /// (the hostile test beside two busy loops: the nodes' pings to each other timed out).
    #[test]
    fn a_window_ends_beside_a_cpu_bound_thread_on_its_cpu() {
        // SAFETY: no arguments; returns the CPU this thread runs on.
        let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).expect("sched_getcpu");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hog = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin_to(cpu);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        pin_to(cpu);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let window = Duration::from_secs(2);
        let started = Instant::now();
        let outcome = runtime.block_on(IdlePoll::new(window).poll_window());
        let took = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hog.join().unwrap();
        assert!(
            took < window / 2,
            "the poller kept polling for {took:?} beside a busy thread on its CPU"
        );
        assert!(
            outcome.contended,
            "the window's end was not put down to contention"
        );
    }

    #[test]
    fn rests_double_while_windows_keep_ending_for_contention_and_reset_after_one_that_does_not() {
        let mut rest = CONTENDED_REST;
        let mut taken = Vec::new();
        for _ in 0..12 {
            let (this, next) = rests(true, rest);
            taken.push(this.expect("a contended window rests"));
            rest = next;
        }
        assert_eq!(taken[0], CONTENDED_REST);
        assert_eq!(taken[1], CONTENDED_REST * 2);
        assert_eq!(taken[9], MAX_CONTENDED_REST);
        assert_eq!(taken[11], MAX_CONTENDED_REST, "capped");
        assert_eq!(rests(false, rest), (None, CONTENDED_REST));
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
