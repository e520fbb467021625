//! Driving the cluster: the load phase, the closed- and open-loop runs, the live progress
//! display and the fault schedule.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::args::{FaultPlan, Mode, Stop};
use crate::fault::{self, FaultError, ProcessInfo};
use crate::ops::Shared;
use crate::report::LoadSummary;
use crate::schedule::Schedule;
use crate::stats::{Outcome, Recorder, Results, BACKLOG_ERROR};

/// How often the progress display is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How often a progress line is printed when stderr is not a terminal.
const PLAIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Flips to `true` when the run should stop early (Ctrl-C).
pub type StopSignal = watch::Receiver<bool>;

fn stopped(stop: &StopSignal) -> bool {
    *stop.borrow()
}

/// Resolves once `signal` is `true` (never, if its sender is gone without setting it).
async fn flipped(mut signal: StopSignal) {
    if signal.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn bar(enabled: bool, len: u64, template: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Inserts keys `0..keys` with `--concurrency` workers (each key once), caching the
/// contexts so later updates replace these values.
pub async fn load(shared: &Arc<Shared>, stop: &StopSignal) -> LoadSummary {
    let cfg = &shared.config;
    let keys = cfg.keys;
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::default();
    let progress = bar(
        cfg.progress,
        keys,
        "load {spinner} {elapsed_precise} [{bar:30}] {pos}/{len} keys {per_sec} {msg}",
    );
    let mut workers = JoinSet::new();
    for worker in 0..cfg.load_concurrency {
        let (shared, next, done, errors) = (
            Arc::clone(shared),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&errors),
        );
        let stop = stop.clone();
        let progress = progress.clone();
        workers.spawn(async move {
            let mut planner = shared.planner(u64::MAX - worker as u64);
            while !stopped(&stop) {
                let key = next.fetch_add(1, Ordering::Relaxed);
                if key >= shared.config.keys {
                    break;
                }
                // Only the value comes from the planner: a load writes every key once and
                // reserves no insert numbers.
                let (len, offset) = planner.value();
                let value = shared.values.value(len, offset);
                let result = shared
                    .client
                    .put_with(shared.config.key(key), value)
                    .options(shared.config.write)
                    .send()
                    .await;
                match result {
                    Ok(ctx) => {
                        shared.contexts.observe(key, &ctx);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
                        *errors.entry(e.label()).or_insert(0) += 1;
                    }
                }
                progress.inc(1);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    progress.finish_and_clear();
    let errors = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    LoadSummary {
        keys: done.load(Ordering::Relaxed),
        errors,
        duration_s: started.elapsed().as_secs_f64(),
    }
}

/// What the measured run produced.
pub struct RunOutput {
    /// The numbers.
    pub results: Results,
    /// The node the fault mode restarted, still running.
    pub restarted: Option<(Child, PathBuf)>,
}

/// Runs the workload: warm-up, then the measurement, with the fault schedule and the
/// progress display alongside. Returns once every operation has finished.
pub async fn measure(shared: &Arc<Shared>, stop: &StopSignal) -> RunOutput {
    let cfg = &shared.config;
    let run_origin = Instant::now();
    let measure_start = run_origin + cfg.warmup;
    *shared.recorder() = Recorder::new(measure_start);

    let (progress_done_tx, progress_done) = watch::channel(false);
    let progress = tokio::spawn(show_progress(
        Arc::clone(shared),
        measure_start,
        progress_done,
    ));
    let (run_done_tx, run_done) = watch::channel(false);
    let fault = cfg.fault.clone().map(|plan| {
        tokio::spawn(run_fault(
            Arc::clone(shared),
            plan,
            measure_start,
            [stop.clone(), run_done],
        ))
    });

    match cfg.mode {
        Mode::Closed { concurrency } => closed_loop(shared, concurrency, measure_start, stop).await,
        Mode::Open {
            rate,
            max_outstanding,
        } => open_loop(shared, rate, max_outstanding, run_origin, stop).await,
    }
    let end = Instant::now();

    let _ = run_done_tx.send(true);
    let _ = progress_done_tx.send(true);
    let _ = progress.await;
    let restarted = match fault {
        // The fault task finishes by itself once the run has stopped (it restarts a killed
        // node right away rather than leave it down).
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let recorder = std::mem::replace(&mut *shared.recorder(), Recorder::new(end));
    RunOutput {
        results: recorder.finish(end),
        restarted,
    }
}

/// `concurrency` workers, each sending its next operation when the last one finished.
async fn closed_loop(
    shared: &Arc<Shared>,
    concurrency: usize,
    measure_start: Instant,
    stop: &StopSignal,
) {
    let (deadline, budget) = match shared.config.stop {
        Stop::After(d) => (Some(measure_start + d), None),
        Stop::Ops(n) => (None, Some(Arc::new(AtomicU64::new(n)))),
    };
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let shared = Arc::clone(shared);
        let stop = stop.clone();
        let budget = budget.clone();
        workers.spawn(async move {
            let mut planner = shared.planner(worker as u64);
            while !stopped(&stop) {
                let start = Instant::now();
                if deadline.is_some_and(|d| start >= d) {
                    break;
                }
                if let Some(budget) = &budget {
                    let measured = start >= measure_start;
                    if measured
                        && budget
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1))
                            .is_err()
                    {
                        break;
                    }
                }
                let op = planner.next(&shared.inserts);
                // An update of a key this run has no context for reads it first, untimed.
                shared.prepare(&op).await;
                let begun = Instant::now();
                let outcome = shared.execute(&op).await;
                shared.record(op.kind, begun, Instant::now(), outcome);
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Operations at fixed intended start times; latency counts from the intended start. At
/// most `max_outstanding` are in flight: one due beyond that is counted as a `backlog`
/// error and not sent.
async fn open_loop(
    shared: &Arc<Shared>,
    rate: f64,
    max_outstanding: usize,
    run_origin: Instant,
    stop: &StopSignal,
) {
    let schedule = Schedule::new(rate);
    let (_, end) = schedule.phases(shared.config.warmup, shared.config.stop);
    let permits = Arc::new(Semaphore::new(max_outstanding));
    let mut planner = shared.planner(0);
    for i in 0..end {
        let intended = run_origin + schedule.offset(i);
        if intended > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(intended)) => {}
                _ = flipped(stop.clone()) => {}
            }
        }
        if stopped(stop) {
            break;
        }
        let op = planner.next(&shared.inserts);
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let shared = Arc::clone(shared);
                tokio::spawn(async move {
                    // Open loop: latency counts from the intended start, so a context
                    // read first (see `Shared::prepare`) counts in it.
                    shared.prepare(&op).await;
                    let outcome = shared.execute(&op).await;
                    shared.record(op.kind, intended, Instant::now(), outcome);
                    drop(permit);
                });
            }
            Err(_) => {
                shared.abandon(&op);
                shared.record(
                    op.kind,
                    intended,
                    Instant::now(),
                    Outcome::Err(BACKLOG_ERROR),
                );
            }
        }
    }
    // Every operation holds a permit until it is recorded: having them all back means
    // every operation has finished.
    let all = u32::try_from(max_outstanding).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// Refreshes the progress bar (or prints a line every few seconds when stderr is not a
/// terminal) until `done` flips.
async fn show_progress(shared: Arc<Shared>, measure_start: Instant, done: StopSignal) {
    let cfg = &shared.config;
    let (len, unit) = match cfg.stop {
        Stop::After(d) => (d.as_millis().max(1) as u64, "ms"),
        Stop::Ops(n) => (n, "ops"),
    };
    let terminal = std::io::stderr().is_terminal();
    let progress = bar(
        cfg.progress && terminal,
        len,
        "{spinner} {elapsed_precise} [{bar:30}] {percent:>3}% {msg}",
    );
    let mut last_plain = Instant::now();
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = flipped(done.clone()) => break,
        }
        let now = Instant::now();
        let (ok, errors, warmup, rate) = {
            let mut r = shared.recorder();
            r.tick(now);
            let (ok, errors) = r.totals();
            (ok, errors, r.warmup_ops(), r.last_throughput())
        };
        let message = if now < measure_start {
            format!(
                "warm-up: {warmup} ops, {:.1} s left",
                (measure_start - now).as_secs_f64()
            )
        } else {
            let position = match unit {
                "ms" => now.saturating_duration_since(measure_start).as_millis() as u64,
                _ => ok + errors,
            };
            progress.set_position(position.min(len));
            format!(
                "{} ops/s, {ok} ok, {errors} errors",
                rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"))
            )
        };
        progress.set_message(message.clone());
        if cfg.progress && !terminal && now.duration_since(last_plain) >= PLAIN_PROGRESS_INTERVAL {
            last_plain = now;
            eprintln!(
                "[{:>6.1} s] {message}",
                now.saturating_duration_since(measure_start).as_secs_f64()
            );
        }
    }
    progress.finish_and_clear();
}

/// Kills the planned node at its time and restarts it at its time (or as soon as the run
/// ends, when that comes first: a benchmark does not leave a node down). `ends` are the
/// signals that end the run (Ctrl-C, the run finishing). Returns the restarted process.
async fn run_fault(
    shared: Arc<Shared>,
    plan: FaultPlan,
    measure_start: Instant,
    ends: [StopSignal; 2],
) -> Option<(Child, PathBuf)> {
    let at = |d: Duration| tokio::time::Instant::from_std(measure_start + d);
    let [stop, run_done] = ends;
    let ended = || {
        let (a, b) = (stop.clone(), run_done.clone());
        async move {
            tokio::select! {
                _ = flipped(a) => {}
                _ = flipped(b) => {}
            }
        }
    };
    tokio::select! {
        _ = tokio::time::sleep_until(at(plan.kill_at)) => {}
        _ = ended() => return None,
    }
    let event = |kind, pid, detail: String| {
        shared
            .recorder()
            .event(Instant::now(), kind, plan.node.clone(), pid, detail)
    };
    let victim = match target(&plan) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("fault: {e}");
            event("kill_failed", plan.pid, e.to_string());
            return None;
        }
    };
    let config = plan.node_config.clone().or_else(|| victim.node_config());
    if let Err(e) = fault::kill(victim.pid) {
        eprintln!("fault: {e}");
        event("kill_failed", Some(victim.pid), e.to_string());
        return None;
    }
    event(
        "kill",
        Some(victim.pid),
        format!("SIGKILL to pid {}", victim.pid),
    );
    if !fault::wait_for_death(victim.pid).await {
        eprintln!("fault: pid {} is still alive after SIGKILL", victim.pid);
    }
    let restart_at = plan.restart_at?;
    tokio::select! {
        _ = tokio::time::sleep_until(at(restart_at)) => {}
        _ = ended() => {}
    }
    let restarted = config
        .ok_or(FaultError::NoConfig(victim.pid))
        .and_then(|config| {
            let bin = plan
                .shoal_bin
                .clone()
                .or_else(fault::default_shoal_bin)
                .filter(|b| b.is_file())
                .or_else(|| victim.exe.clone().filter(|b| b.is_file()))
                .ok_or_else(|| {
                    FaultError::NoBinary(plan.shoal_bin.clone().unwrap_or_else(|| "shoal".into()))
                })?;
            fault::spawn_node(&bin, &config).map(|child| (child, config, bin))
        });
    match restarted {
        Ok((child, config, bin)) => {
            event(
                "restart",
                Some(child.id()),
                format!(
                    "{} node --config {} (pid {})",
                    bin.display(),
                    config.display(),
                    child.id()
                ),
            );
            let log = config
                .parent()
                .map(|d| d.join("node.log"))
                .unwrap_or_default();
            Some((child, log))
        }
        Err(e) => {
            eprintln!("fault: {e}");
            event("restart_failed", None, e.to_string());
            None
        }
    }
}

/// The process to kill: by pid, or found by the node's config.
pub fn target(plan: &FaultPlan) -> Result<ProcessInfo, FaultError> {
    match (plan.pid, &plan.node_config) {
        (Some(pid), _) => ProcessInfo::read(pid),
        (None, Some(config)) => fault::find_node_process(config),
        (None, None) => Err(FaultError::NotFound(PathBuf::from("(no node given)"))),
    }
}
