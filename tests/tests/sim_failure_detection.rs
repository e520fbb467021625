//! The failure detector in the simulator: a paused node (stopped, not crashed: SIGSTOP,
//! a long GC pause, a hung disk) is marked down by every peer within a few seconds while
//! the rest keep serving writes, and up again once it resumes; live nodes under load on a
//! lossy network are never marked down.

use std::time::Duration;

use shoal_proto::wire::MemberState;
use shoal_tests::sim::{
    self, Burst, FaultMix, Faults, MemberChange, Quorum, RunReport, ScriptedPause, SimConfig, EPOCH,
};

fn run_ok(cfg: &SimConfig) -> RunReport {
    let report = sim::run(cfg).unwrap_or_else(|e| panic!("seed {} could not run: {e}", cfg.seed));
    if let Err(failure) = report.check() {
        panic!("{failure}\n{report}");
    }
    report
}

/// Foreground load on keys of its own for the whole of `length` from `start`.
fn load(start: Duration, length: Duration) -> Burst {
    Burst {
        start,
        length,
        clients: 8,
        keys: 16,
        think_max: Duration::from_millis(20),
    }
}

fn changes_about<'a>(
    report: &'a RunReport,
    peer: &'a str,
) -> impl Iterator<Item = &'a MemberChange> {
    report.member_changes.iter().filter(move |c| c.peer == peer)
}

/// Five nodes, N=3 R=2 W=2, no random faults, with foreground load for `length` from
/// 500 ms and the safety phase lasting `safety`, and `pauses`.
fn five_under_load(
    seed: u64,
    length: Duration,
    safety: Duration,
    pauses: Vec<ScriptedPause>,
) -> SimConfig {
    SimConfig {
        nodes: Some(5),
        quorum: Some(Quorum { n: 3, r: 2, w: 2 }),
        faults: FaultMix::None,
        vary_quorums: false,
        ops: 300,
        burst: Some(load(Duration::from_millis(500), length)),
        min_safety_time: safety,
        scripted_pauses: pauses,
        ..SimConfig::from_seed(seed)
    }
}

#[test]
fn a_paused_node_is_marked_down_within_five_seconds_and_up_once_it_resumes() {
    let pause_at = Duration::from_secs(2);
    let pause = Duration::from_secs(8);
    for seed in 0..4 {
        let cfg = five_under_load(
            seed,
            pause_at + pause,
            pause_at + pause + Duration::from_secs(3),
            vec![ScriptedPause {
                node: 0,
                at: pause_at,
                length: pause,
            }],
        );
        let report = run_ok(&cfg);
        let (start, end) = (EPOCH + pause_at, EPOCH + pause_at + pause);
        for observer in 1..5 {
            let observer = format!("n{observer}");
            let seen: Vec<&MemberChange> = changes_about(&report, "n0")
                .filter(|c| c.observer == observer)
                .collect();
            let down = seen
                .iter()
                .find(|c| c.state == MemberState::Down)
                .unwrap_or_else(|| panic!("seed {seed}: {observer} never saw n0 down: {seen:?}"));
            assert!(
                down.at >= start && down.at.saturating_since(start) <= Duration::from_secs(5),
                "seed {seed}: {observer} saw n0 down at {:?}, the pause began at {start:?}",
                down.at
            );
            let up = seen.last().expect("a change was seen");
            assert!(
                up.state == MemberState::Up && up.at >= end,
                "seed {seed}: {observer} sees n0 up again after it resumed: {seen:?}"
            );
        }
        let others: Vec<&MemberChange> = report
            .member_changes
            .iter()
            .filter(|c| c.peer != "n0" && c.observer != "n0")
            .collect();
        assert!(
            others.is_empty(),
            "seed {seed}: live nodes were marked down: {others:?}"
        );
        // Writes kept succeeding at W=2 while n0 was stopped (the burst's and the
        // workload's clients send to every node, n0 included, where they time out).
        let acked_during = report
            .history
            .ops
            .iter()
            .filter(|o| o.node != "n0" && o.invoked >= start + Duration::from_secs(5))
            .filter(|o| o.completed.is_some_and(|c| c < end) && o.outcome.name() == "ok")
            .filter(|o| o.kind.name() == "put")
            .count();
        assert!(
            acked_during >= 5,
            "seed {seed}: only {acked_during} puts acknowledged while n0 was paused\n{report}"
        );
    }
}

#[test]
fn live_nodes_under_load_on_a_lossy_network_are_never_marked_down() {
    for seed in 0..4 {
        let cfg = SimConfig {
            nodes: Some(5),
            quorum: Some(Quorum { n: 3, r: 2, w: 2 }),
            faults: FaultMix::Fixed(Faults {
                drop: 0.05,
                ..Faults::NONE
            }),
            ops: 300,
            burst: Some(load(Duration::from_millis(500), Duration::from_secs(8))),
            min_safety_time: Duration::from_secs(10),
            storage_service_time: Duration::from_micros(500),
            ..SimConfig::from_seed(seed)
        };
        let report = run_ok(&cfg);
        assert!(report.faults.dropped > 100, "the network lost messages");
        assert!(
            report.member_changes.is_empty(),
            "seed {seed}: live nodes flapped {} times, first: {:?}",
            report.member_changes.len(),
            report.member_changes.iter().take(5).collect::<Vec<_>>()
        );
    }
}

/// Pauses on top of the seed's random faults (crashes, partitions, drops, duplicates,
/// slow messages and storage): a paused node handles late everything that waited for it
/// (replicates, answers, timers), and every invariant still holds.
#[test]
fn pauses_among_random_faults_hold_every_invariant() {
    const SEEDS: u64 = 24;
    let mut detected = 0;
    for seed in 0..SEEDS {
        let nodes = 3 + (seed % 5) as usize;
        let cfg = SimConfig {
            nodes: Some(nodes),
            ops: 150,
            min_safety_time: Duration::from_secs(6),
            scripted_pauses: vec![
                ScriptedPause {
                    node: seed as usize % nodes,
                    at: Duration::from_millis(300 + 97 * seed),
                    length: Duration::from_millis(500 + 211 * seed),
                },
                ScriptedPause {
                    node: (seed as usize + 1) % nodes,
                    at: Duration::from_millis(2_500 + 53 * seed),
                    length: Duration::from_secs(3),
                },
            ],
            ..SimConfig::from_seed(seed)
        };
        let report = run_ok(&cfg);
        // The second pause lasts past the detection bound: its node is seen down
        // during it (unless a random crash took it down first).
        let second = &cfg.scripted_pauses[1];
        let (start, end) = (EPOCH + second.at, EPOCH + second.at + second.length);
        let peer = format!("n{}", second.node);
        if changes_about(&report, &peer)
            .any(|c| c.state == MemberState::Down && c.at >= start && c.at <= end)
        {
            detected += 1;
        }
    }
    eprintln!("{detected} of {SEEDS} runs saw the 3 s pause detected");
    assert!(
        detected >= SEEDS / 2,
        "only {detected} of {SEEDS} runs saw a 3 s pause detected"
    );
}

#[test]
fn a_run_with_a_pause_is_deterministic() {
    let cfg = SimConfig {
        keep_log: true,
        scripted_pauses: vec![ScriptedPause {
            node: 1,
            at: Duration::from_millis(400),
            length: Duration::from_secs(3),
        }],
        ..SimConfig::from_seed(5)
    };
    let (a, b) = (run_ok(&cfg), run_ok(&cfg));
    assert!(
        a.log.iter().any(|l| l.contains("PAUSE")),
        "the pause happened"
    );
    assert_eq!(a.log, b.log);
    assert_eq!(a.member_changes, b.member_changes);
}

/// A slow node, not a dead one: stopped for 400 ms of every second for 8 s (a node
/// thrashing in GC or on a saturated disk; longer than the simulated probe and request
/// timeouts of 300 ms, so some contacts fail) answers late but answers, and is never
/// marked down.
#[test]
fn a_slow_node_that_keeps_answering_late_is_never_marked_down() {
    for seed in 0..2 {
        let slow = (0..8)
            .map(|i| ScriptedPause {
                node: 0,
                at: Duration::from_millis(1_000 + 1_000 * i),
                length: Duration::from_millis(400),
            })
            .collect();
        let cfg = five_under_load(seed, Duration::from_secs(9), Duration::from_secs(10), slow);
        let report = run_ok(&cfg);
        assert!(
            report.member_changes.is_empty(),
            "seed {seed}: a slow node flapped {} times, first: {:?}",
            report.member_changes.len(),
            report.member_changes.iter().take(5).collect::<Vec<_>>()
        );
    }
}
