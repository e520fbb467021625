//! The simulator's tests of background work: anti-entropy alone converging replicas after
//! long partitions with hinted handoff off or its hints dropped, tombstones reaped under
//! partitions and crashes without any deleted value coming back (also when a hint older
//! than the reap is replayed, and when a node is restored from a backup older than the
//! reap), and admission control holding repairs back while
//! foreground load is high.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_proto::metrics::{
    AAE_BATCHES_SPLIT_TOTAL, AAE_KEYS_REPAIRED_TOTAL, AAE_OVERDUE_STARTS_TOTAL, HINTS_TOTAL,
};
use shoal_proto::AaeConfig;
use shoal_tests::sim::{
    self, replicas_of, Background, Burst, FaultMix, HandoffLimits, LargeValues, Liveness, Quorum,
    RunReport, ScriptedAction, ScriptedCrash, ScriptedOp, ScriptedPartition, ScriptedRestore,
    SimConfig,
};

fn run_ok(cfg: &SimConfig) -> RunReport {
    let report = sim::run(cfg).unwrap_or_else(|e| panic!("seed {} could not run: {e}", cfg.seed));
    if let Err(failure) = report.check() {
        panic!("{failure}\n{report}");
    }
    report
}

/// The sum of a counter over all its label sets.
fn counter_sum(report: &RunReport, name: &str) -> u64 {
    report
        .counters
        .iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

fn side(nodes: &[usize]) -> BTreeSet<usize> {
    nodes.iter().copied().collect()
}

/// Two long partitions one after the other, each cutting off a different part of a
/// 5-node cluster, with hinted handoff off: the replicas that missed writes get them
/// only from anti-entropy (the liveness phase reads nothing and waits for equal roots).
#[test]
fn long_partitions_without_hints_converge_by_anti_entropy_alone() {
    for seed in 0..4 {
        let cfg = SimConfig {
            nodes: Some(5),
            quorum: Some(Quorum { n: 3, r: 2, w: 2 }),
            ops: 300,
            faults: FaultMix::None,
            vary_quorums: false,
            delete_fraction: 0.3,
            handoff: Some(HandoffLimits::ROOMY),
            background: Background {
                hinted_handoff: false,
                ..Background::fast()
            },
            liveness: Liveness::AntiEntropyOnly {
                canary_reads: seed % 2 == 0,
            },
            scripted_partitions: vec![
                ScriptedPartition {
                    side: side(&[0]),
                    one_way: false,
                    start: Duration::from_millis(200),
                    length: Duration::from_secs(6),
                },
                ScriptedPartition {
                    side: side(&[1, 2]),
                    one_way: false,
                    start: Duration::from_millis(6_400),
                    length: Duration::from_secs(6),
                },
            ],
            min_safety_time: Duration::from_secs(13),
            ..SimConfig::from_seed(seed)
        };
        let report = run_ok(&cfg);
        assert_eq!(report.faults.partitions, 2, "{report}");
        assert_eq!(
            counter_sum(&report, HINTS_TOTAL),
            0,
            "handoff is off: no hint was stored or delivered\n{report}"
        );
        assert!(
            counter_sum(&report, AAE_KEYS_REPAIRED_TOTAL) > 0,
            "the cut-off replicas missed writes that anti-entropy repaired\n{report}"
        );
    }
}

/// Hinted handoff on, but with room for only two hints per target that expire within a
/// second: most writes for the cut-off node are dropped or expire, and anti-entropy
/// brings it level.
#[test]
fn dropped_and_expired_hints_are_made_up_by_anti_entropy() {
    let cfg = SimConfig {
        nodes: Some(4),
        quorum: Some(Quorum { n: 3, r: 2, w: 2 }),
        ops: 300,
        faults: FaultMix::None,
        vary_quorums: false,
        handoff: Some(HandoffLimits {
            batch: 1,
            max_hints: 2,
            ttl: Duration::from_secs(1),
            ..HandoffLimits::ROOMY
        }),
        background: Background::fast(),
        liveness: Liveness::AntiEntropyOnly {
            canary_reads: false,
        },
        scripted_partitions: vec![ScriptedPartition {
            side: side(&[3]),
            one_way: false,
            start: Duration::from_millis(200),
            length: Duration::from_secs(10),
        }],
        ..SimConfig::from_seed(21)
    };
    let report = run_ok(&cfg);
    let lost = report.counter_with(HINTS_TOTAL, &[("event", "dropped")])
        + report.counter_with(HINTS_TOTAL, &[("event", "expired")]);
    assert!(lost > 0, "some hints were dropped or expired\n{report}");
    assert!(
        counter_sum(&report, AAE_KEYS_REPAIRED_TOTAL) > 0,
        "anti-entropy repaired what the lost hints carried\n{report}"
    );
    assert!(
        report.final_state.pending_hints.values().all(|&n| n == 0),
        "{:?}",
        report.final_state.pending_hints
    );
}

/// A reap undone on one replica by an exchange that read the tombstone before the reap
/// and pushed it after (seed 40504 of [`SimConfig::sessions_reaping`], found by a sweep: `k21`'s
/// tombstone reaped on all three, then pushed back to n1, whose final read's repair
/// rightly did not spread it): the liveness phase lets reaping and anti-entropy finish
/// such tombstones before convergence is required, and every checker holds.
#[test]
fn a_tombstone_an_exchange_brought_back_after_its_reap_is_reaped_again() {
    let report = run_ok(&SimConfig::sessions_reaping(40_504, 3));
    assert!(
        report.partly_reaped > 0,
        "no key was left partly reaped\n{report}"
    );
}

/// A copy of a deleted value that reaches a replica after the tombstone's reap there is
/// dropped (seed 200040 of [`SimConfig::sessions_reaping`], found by a sweep: without the
/// reaped tombstones' clocks the copy was stored and `no_resurrection` failed), and every
/// checker holds.
#[test]
fn a_copy_of_a_deleted_value_arriving_after_its_reap_is_dropped() {
    use shoal_executor::metrics::REAPED_COPIES_DROPPED_TOTAL;
    let report = run_ok(&SimConfig::sessions_reaping(200_040, 3));
    assert!(
        report.counter_with(REAPED_COPIES_DROPPED_TOTAL, &[]) >= 1,
        "no late copy was dropped\n{report}"
    );
}

/// A reap counts only tombstones on disk (seed 342500 of [`SimConfig::sessions_reaping`]
/// on 4 nodes with every get direct and power cuts in every faulty seed, found by a
/// sweep): a replica confirmed a tombstone that was still in its unsynced tail, the
/// three replicas reaped it, and a power cut 0.16 s later took that replica back to the
/// value the tombstone had deleted, which a read then returned (`no_resurrection`).
/// Replicas now sync the digests they confirm, and every replica syncs before it
/// deletes; every checker holds and the run reaps and cuts power.
#[test]
fn a_tombstone_confirmed_for_a_reap_survives_a_power_cut_after_it() {
    let report = run_ok(&SimConfig {
        direct_reads: 1.0,
        power_cuts: sim::PowerCutMix::FromSeed { share: 1.0 },
        ..SimConfig::sessions_reaping(342_500, 4)
    });
    assert!(
        !report.history.reaps.is_empty(),
        "nothing was reaped\n{report}"
    );
    assert!(report.faults.power_cuts > 0, "no power was cut\n{report}");
}

/// Sessions under deletes, reaping and faults: a session answers a read that finds
/// nothing for a key it deleted (or read as deleted) whatever the read's context, and its
/// next write of the key carries what it deleted. Across the seeds tombstones are reaped,
/// more session reads of reaped keys are answered not found than fail `NotCovered` (15
/// and 0 now that replicas read a key they reaped as its tombstone's clock and keep
/// those clocks across restarts; 17 and 2 just before; 7 and 7 before sessions knew
/// deleted keys as absent), and the session checker (read your writes, monotonic reads,
/// by values) holds with every other checker.
#[test]
fn sessions_read_reaped_keys_as_gone_and_keep_their_guarantees() {
    let (mut reaped, mut gone_after_reap, mut not_covered_after_reap) = (0, 0, 0);
    for seed in 0..24u64 {
        let report = run_ok(&SimConfig::sessions_reaping(
            7_000 + seed,
            3 + (seed % 2) as usize,
        ));
        let h = &report.history;
        reaped += h.reaps.len();
        // Session reads of a key invoked after a reap of it, with their role.
        let after_reap = || {
            h.sessions.reads.iter().filter_map(|(op, role)| {
                let op = &h.ops[*op];
                h.reaps
                    .iter()
                    .any(|r| r.key == op.key && r.at < op.invoked)
                    .then_some((op, *role))
            })
        };
        not_covered_after_reap += after_reap()
            .filter(|(_, role)| *role == shoal_tests::history::SessionRead::NotCovered)
            .count();
        gone_after_reap += after_reap()
            .filter(|(op, role)| {
                *role == shoal_tests::history::SessionRead::Answered
                    && matches!(
                        op.outcome,
                        shoal_tests::history::Outcome::Read { found: false, .. }
                    )
            })
            .count();
    }
    assert!(reaped > 0, "no run reaped a tombstone");
    assert!(
        gone_after_reap > not_covered_after_reap,
        "{gone_after_reap} session reads of reaped keys answered, {not_covered_after_reap} not covered"
    );
    eprintln!("{reaped} tombstones reaped; {gone_after_reap} session reads of reaped keys answered not found, {not_covered_after_reap} not covered");
}

/// Deletes under random partitions, crashes, drops and slow storage, with tombstones
/// reaped a few seconds after they are everywhere: across the seeds tombstones are
/// reaped, and every checker — no lost write, no phantom, no resurrection (also of
/// reads made after a reap), convergence — holds. Half the runs have handoff off and
/// converge by anti-entropy alone; the others skew the nodes' clocks by up to 1.9 s
/// (with the 6 s grace period, hint TTLs then sit between the skew and the margin
/// `grace - 2 × skew`, the tightest the engine allows).
#[test]
fn reaping_under_faults_never_resurrects_a_deleted_value() {
    let mut reaped = 0;
    for seed in 0..40u64 {
        let aae_only = seed % 2 == 1;
        let clock_skew = if aae_only {
            Duration::ZERO
        } else {
            Duration::from_millis(1_000 + seed.wrapping_mul(7_919) % 900)
        };
        let cfg = SimConfig {
            clock_skew,
            nodes: Some(3 + (seed % 3) as usize),
            ops: 200,
            delete_fraction: 0.4,
            background: Background {
                hinted_handoff: !aae_only,
                ..Background::fast()
            },
            liveness: if aae_only {
                Liveness::AntiEntropyOnly { canary_reads: true }
            } else {
                Liveness::ReadRepair
            },
            // Faults go on after the workload, so that tombstones are reaped while
            // nodes crash and partitions come and go.
            min_safety_time: Duration::from_secs(15),
            ..SimConfig::from_seed(1_000 + seed)
        };
        let report = run_ok(&cfg);
        reaped += report.history.reaps.len();
    }
    assert!(reaped > 0, "no run reaped a tombstone");
}

/// A 5-node run with no workload and no random faults, in which the scripted client
/// alone works on key `k0` (fast background: a 6 s grace period): the base of the
/// scripted hint-and-reap scenarios. Returns it with `k0`'s primaries and fallbacks.
fn k0_script() -> (SimConfig, Vec<usize>, Vec<usize>) {
    let nodes = 5;
    let q = Quorum { n: 3, r: 2, w: 2 };
    let (primaries, fallbacks) = replicas_of(nodes, "k0", q.n).expect("ring");
    let cfg = SimConfig {
        nodes: Some(nodes),
        quorum: Some(q),
        clients: 1,
        ops: 0,
        keys: 1,
        set_keys: 0,
        delete_fraction: 0.0,
        faults: FaultMix::None,
        vary_quorums: false,
        handoff: Some(HandoffLimits::ROOMY),
        background: Background::fast(),
        keep_log: true,
        ..SimConfig::from_seed(7)
    };
    (cfg, primaries, fallbacks)
}

/// A scripted operation of the scripted client on `k0`, sent to `node` at `at_ms`.
fn k0_op(node: usize, at_ms: u64, action: ScriptedAction) -> ScriptedOp {
    ScriptedOp {
        at: Duration::from_millis(at_ms),
        node,
        key: "k0".to_owned(),
        action,
    }
}

/// At node `a`: a blind put of `k0` at 0.5 s, a read at 1.1 s, a delete with the read's
/// context at 1.4 s.
fn put_read_delete(a: usize) -> Vec<ScriptedOp> {
    let put = ScriptedAction::Put {
        with_context: false,
    };
    vec![
        k0_op(a, 500, put),
        k0_op(a, 1_100, ScriptedAction::Get { r: None }),
        k0_op(a, 1_400, ScriptedAction::Delete { with_context: true }),
    ]
}

/// `base` with primary `c` cut off from 0.3 s to 2.3 s (so that a put at 0.5 s leaves a
/// hint for it on fallback `d`) and `d` crashed at 1 s for `away` (so that it keeps the
/// hint undelivered while the key is deleted and, once `c` is back, reaped).
fn hint_holder_away(base: SimConfig, c: usize, d: usize, away: Duration) -> SimConfig {
    SimConfig {
        scripted_partitions: vec![ScriptedPartition {
            side: side(&[c]),
            one_way: false,
            start: Duration::from_millis(300),
            length: Duration::from_secs(2),
        }],
        scripted_crashes: vec![ScriptedCrash {
            node: d,
            at: Duration::from_millis(1_000),
            length: away,
        }],
        ..base
    }
}

/// The hint-replay-after-reap case, scripted: key `k0` is put while one primary is cut
/// off, so the first fallback keeps a hint of the put for it; that fallback crashes
/// before delivering it, and the key is deleted (the tombstone's hint goes to the next
/// fallback). The fallback stays down while the cut-off primary heals, the tombstone
/// reaches every primary and every primary reaps it. When the fallback comes back, its
/// hint of the put is older than the grace period and is dropped, not replayed: the
/// deleted value does not come back (replaying it would hand the put to one primary with
/// no tombstone left to cover it, and anti-entropy would spread it).
#[test]
fn a_hint_older_than_the_reap_does_not_bring_the_key_back() {
    let (base, primaries, fallbacks) = k0_script();
    let (a, c, d) = (primaries[0], primaries[2], fallbacks[0]);
    let crash_at = Duration::from_millis(1_000);
    let crash_length = Duration::from_secs(16);
    let cfg = SimConfig {
        scripted_ops: put_read_delete(a),
        min_safety_time: crash_at + crash_length + Duration::from_secs(4),
        ..hint_holder_away(base, c, d, crash_length)
    };
    let report = run_ok(&cfg);
    let hint_log: Vec<&str> = report
        .log
        .iter()
        .filter(|l| l.to_lowercase().contains("hint"))
        .map(String::as_str)
        .collect();
    let hint_log = hint_log.join("\n");
    let restart = crash_at + crash_length;
    let reaped_before: BTreeSet<&str> = report
        .history
        .reaps_of("k0")
        .filter(|r| r.at.saturating_since(sim::EPOCH) < restart)
        .map(|r| r.node.as_str())
        .collect();
    let primary_ids: BTreeSet<String> = primaries.iter().map(|i| format!("n{i}")).collect();
    for p in &primary_ids {
        assert!(
            reaped_before.contains(p.as_str()),
            "primary {p} reaped k0 before the fallback came back (reaped on {reaped_before:?})\n{report}"
        );
    }
    assert!(
        report.counter_with(HINTS_TOTAL, &[("event", "stored")]) >= 2,
        "the put and the delete left hints for the cut-off primary\n{report}\n{hint_log}"
    );
    assert!(
        report.counter_with(HINTS_TOTAL, &[("event", "expired")]) >= 1,
        "the stale hint was dropped when the fallback came back\n{report}\n{hint_log}"
    );
    if let Some(k0) = report.final_state.keys.get("k0") {
        for s in k0.merged().siblings() {
            assert!(s.is_tombstone(), "k0 stays deleted\n{report}");
        }
    }
}

/// Every primary of `k0` reaped it before `before` (from the start of the run), when
/// `what` happened.
fn assert_reaped_everywhere_before(
    report: &RunReport,
    primaries: &[usize],
    before: Duration,
    what: &str,
) {
    let reaped_before: BTreeSet<&str> = report
        .history
        .reaps_of("k0")
        .filter(|r| r.at.saturating_since(sim::EPOCH) < before)
        .map(|r| r.node.as_str())
        .collect();
    for p in primaries {
        let p = format!("n{p}");
        assert!(
            reaped_before.contains(p.as_str()),
            "primary {p} reaped k0 before {what} (reaped on {reaped_before:?})\n{report}"
        );
    }
}

/// A restore from a backup older than the reap, scripted: key `k0` is put, primary `c`'s
/// backup is taken, the key is deleted and its tombstone reaped on every primary, and then
/// `c` is restored from the backup (which still holds the put). In restore mode `c` serves
/// nothing until each of its partitions had a peer-wins exchange, which deletes its copy
/// of `k0` (its peer holds none): reads at R = N after the restore, and the final state,
/// find no value (merging instead would keep the put on `c` and spread it again).
#[test]
fn a_node_restored_from_a_backup_older_than_the_reap_does_not_bring_the_key_back() {
    let (base, primaries, _) = k0_script();
    let (a, c) = (primaries[0], primaries[2]);
    let restore_at = Duration::from_secs(18);
    let mut ops = put_read_delete(a);
    for at_ms in [22_000, 26_000, 30_000] {
        ops.push(k0_op(a, at_ms, ScriptedAction::Get { r: Some(3) }));
    }
    let cfg = SimConfig {
        scripted_ops: ops,
        scripted_restores: vec![ScriptedRestore {
            node: c,
            backup_at: Duration::from_millis(1_200),
            restore_at,
        }],
        min_safety_time: Duration::from_secs(32),
        ..base
    };
    let report = run_ok(&cfg);
    assert_reaped_everywhere_before(&report, &primaries, restore_at, "the restore");
    assert!(
        report.log.iter().any(|l| l.contains("RESTORE from backup")),
        "n{c} was restored\n{report}"
    );
    if let Some(k0) = report.final_state.keys.get("k0") {
        for s in k0.merged().siblings() {
            assert!(s.is_tombstone(), "k0 stays deleted\n{report}");
        }
    }
}

/// A 4-node cluster (N = 3, R = W = 2, hinted handoff off, storage a queue of 2 ms
/// operations) whose node 0 is cut off until `heal` while the workload runs, then, for
/// `burst` if given, 16 clients loading keys of their own; anti-entropy alone converges
/// the replicas (`aae` settings).
fn heal_then_burst(
    seed: u64,
    heal: Duration,
    burst: Option<Duration>,
    aae: AaeConfig,
) -> SimConfig {
    SimConfig {
        clients: 4,
        set_keys: 0,
        delete_fraction: 0.0,
        handoff: Some(HandoffLimits::ROOMY),
        background: Background {
            hinted_handoff: false,
            aae,
            ..Background::fast()
        },
        scripted_partitions: vec![ScriptedPartition {
            side: side(&[0]),
            one_way: false,
            start: Duration::from_millis(200),
            length: heal - Duration::from_millis(200),
        }],
        burst: burst.map(|length| Burst {
            start: heal,
            length,
            clients: 16,
            keys: 16,
            think_max: Duration::from_millis(5),
        }),
        storage_service_time: Duration::from_millis(2),
        liveness: Liveness::AntiEntropyOnly {
            canary_reads: false,
        },
        ..SimConfig::no_faults(seed, 4)
    }
}

/// Admission control: the same partition and heal, once with a burst of foreground load
/// (on keys of its own) right after the heal and once without. Under the burst the
/// coordinators' latency rises above the target, the repair budget is cut, and anti-entropy
/// repairs fewer keys during the burst than in the quiet run; once the burst is over it
/// catches up and the replicas converge.
#[test]
fn anti_entropy_yields_to_foreground_load() {
    let heal = Duration::from_secs(6);
    let burst = Duration::from_secs(3);
    let run = |load: bool| {
        let aae = AaeConfig {
            repair_keys_per_second: 20,
            batch: 4,
            latency_target: Duration::from_millis(20),
            ..Background::fast().aae
        };
        let mut cfg = SimConfig {
            ops: 200,
            keys: 120,
            min_safety_time: heal + burst + Duration::from_secs(2),
            ..heal_then_burst(3, heal, load.then_some(burst), aae)
        };
        // Reads ask R replicas, not N: twice the burst's clients keep the coordinators'
        // latency above the target through the window, as 16 did when reads asked N.
        if let Some(b) = cfg.burst.as_mut() {
            b.clients = 32;
        }
        run_ok(&cfg)
    };
    let quiet = run(false);
    let loaded = run(true);
    let (from, to) = (heal, heal + burst);
    let quiet_repaired = quiet.timeline.keys_repaired_between(from, to);
    let loaded_repaired = loaded.timeline.keys_repaired_between(from, to);
    let quiet_min = quiet.timeline.min_budget_multiplier_between(from, to);
    let loaded_min = loaded.timeline.min_budget_multiplier_between(from, to);
    let loaded_latency = loaded.timeline.max_foreground_latency_between(from, to);
    let summary = format!(
        "repaired during the burst window: quiet {quiet_repaired}, loaded {loaded_repaired}; \
         least budget multiplier: quiet {quiet_min:.3}, loaded {loaded_min:.3}; \
         loaded foreground latency up to {loaded_latency:?}"
    );
    println!("{summary}");
    assert!(quiet_repaired > 0, "{summary}\n{quiet}");
    assert!(
        loaded_latency > Duration::from_millis(20),
        "the burst pushed foreground latency above the target: {summary}"
    );
    assert!(
        loaded_min < 0.5 && quiet_min > loaded_min,
        "the burst cut the repair budget: {summary}"
    );
    assert!(
        loaded_repaired < quiet_repaired,
        "anti-entropy repaired less while the burst ran: {summary}"
    );
}

/// An expired hint read by a stand-in, scripted: key `k0` is put while one primary `c` is
/// cut off, so the first fallback `d` keeps a hint of the put for it. Then `d` is cut off
/// instead, for long enough that the key is deleted (with the put's context), the
/// tombstone reaches every primary and every primary reaps it. When `d` rejoins, `c` is
/// cut off again, so `d` still sees `c` down and never runs a delivery round for it. A
/// read with R = 3 at the first primary asks `d` to stand in for `c`: `d`'s hint of the
/// put is long past its TTL and must not be answered (a stand-in answering it would bring
/// the deleted value back through the read and its repair).
#[test]
fn a_stand_in_does_not_answer_a_read_with_a_hint_older_than_the_reap() {
    let (base, primaries, fallbacks) = k0_script();
    let (a, c, d) = (primaries[0], primaries[2], fallbacks[0]);
    let rejoin = Duration::from_secs(17);
    let cut = |nodes: &[usize], start: Duration, length: Duration| ScriptedPartition {
        side: side(nodes),
        one_way: false,
        start,
        length,
    };
    let cfg = SimConfig {
        scripted_partitions: vec![
            cut(&[c], Duration::from_millis(300), Duration::from_millis(700)),
            // Replaces the first: `c` rejoins, `d` is cut off.
            cut(
                &[d],
                Duration::from_millis(1_000),
                rejoin - Duration::from_millis(1_000),
            ),
            // Replaces the second: `d` rejoins, `c` is cut off again.
            cut(&[c], rejoin, Duration::from_secs(4)),
        ],
        scripted_ops: [
            put_read_delete(a),
            vec![k0_op(a, 18_500, ScriptedAction::Get { r: Some(3) })],
        ]
        .concat(),
        min_safety_time: rejoin + Duration::from_secs(6),
        ..base
    };
    let report = run_ok(&cfg);
    assert_reaped_everywhere_before(&report, &primaries, rejoin, "the fallback rejoined");
    let stand_in = format!("n{d}");
    assert!(
        report
            .log
            .iter()
            .any(|l| l.contains(&stand_in) && l.contains("read_hint")),
        "the read asked the fallback for its hint\n{report}"
    );
    assert!(
        report.counter_with(HINTS_TOTAL, &[("event", "stored")]) >= 1,
        "the put left a hint for the cut-off primary\n{report}"
    );
}

/// The clock-skew margin matters, shown by breaking it: the hint-replay case with the
/// engines told their clocks agree (`max_clock_skew` 0, so a hint TTL of 5.9 s under the
/// 6 s grace period is allowed) while the fallback holding the put's hint runs 5 s
/// behind. The tombstone is reaped on every primary by their clocks (at 10.23 s); when
/// the fallback comes back (10.5 s), the put is only about 5 s old on its slow clock, so
/// its hint is not expired and is delivered. The primary it is for remembers the reaped
/// tombstone's clock and drops it (`shoal_reaped_copies_dropped_total`): every checker
/// holds, also with that primary restarted between its reap and the delivery, as the
/// reaped clocks are kept on disk (when they were in memory only, that restart brought
/// the deleted value back: `no_resurrection`). With the clocks in agreement the hint is
/// expired when the fallback comes back. (With the clocks' real spread configured,
/// validation refuses this TTL: the grace period must exceed it by twice the skew.)
#[test]
fn clocks_further_apart_than_configured_deliver_a_late_hint_only_the_reaped_clocks_stop() {
    use shoal_executor::metrics::REAPED_COPIES_DROPPED_TOTAL;
    let (base, primaries, fallbacks) = k0_script();
    let (a, c, d) = (primaries[0], primaries[2], fallbacks[0]);
    let mut offsets = vec![0; 5];
    offsets[d] = -5_000;
    let cfg = SimConfig {
        handoff: Some(HandoffLimits {
            ttl: Duration::from_millis(5_900),
            ..HandoffLimits::ROOMY
        }),
        clock_offsets_ms: offsets,
        scripted_ops: put_read_delete(a),
        min_safety_time: Duration::from_secs(14),
        ..hint_holder_away(base, c, d, Duration::from_millis(9_500))
    };
    let report = run_ok(&cfg);
    assert_reaped_everywhere_before(
        &report,
        &primaries,
        Duration::from_millis(10_300),
        "c's restart",
    );
    assert!(
        report.counter_with(REAPED_COPIES_DROPPED_TOTAL, &[]) >= 1,
        "the primary dropped the late hint of the reaped put\n{report}"
    );
    // The hint's primary restarts after the reap and before the delivery: it still
    // remembers the reaped clock.
    let mut restarted = cfg.clone();
    restarted.scripted_crashes.push(ScriptedCrash {
        node: c,
        at: Duration::from_millis(10_300),
        length: Duration::from_millis(100),
    });
    let report = run_ok(&restarted);
    assert!(
        report.counter_with(REAPED_COPIES_DROPPED_TOTAL, &[]) >= 1,
        "the restarted primary dropped the late hint of the reaped put\n{report}"
    );
    // The same run with the clocks in agreement: the hint is expired when the fallback
    // comes back, and nothing comes back.
    let report = run_ok(&SimConfig {
        clock_offsets_ms: Vec::new(),
        ..restarted
    });
    assert!(
        report.counter_with(HINTS_TOTAL, &[("event", "expired")]) >= 1,
        "the hint expired\n{report}"
    );
}

/// The run's ring, as [`sim::replicas_of`] builds it: the partition of `key`.
fn partition_of(nodes: usize, key: &str) -> shoal_ring::PartitionId {
    let members = (0..nodes)
        .map(|i| shoal_ring::Member::new(shoal_ring::NodeId::new(format!("n{i}")).expect("id")))
        .collect();
    let ring = shoal_ring::Ring::new(sim::PARTITIONS, members).expect("ring");
    ring.partition_of(key.as_bytes())
}

/// A partition full of large values: six keys of one partition get values of 3 to 4 MiB
/// while one of their replicas is cut off (hinted handoff off), so that one exchange has to
/// move about 20 MiB, more than a frame (one 16 MiB object and its envelope) holds. The
/// exchange moves them in batches that fit, no message is ever over the frame limit, and
/// the cut-off replica converges by anti-entropy alone.
#[test]
fn a_partition_of_large_values_converges_by_anti_entropy() {
    let nodes = 3;
    let keys = 512;
    let target = partition_of(nodes, "k0");
    let same: Vec<String> = (0..keys)
        .map(|i| format!("k{i}"))
        .filter(|k| partition_of(nodes, k) == target)
        .take(6)
        .collect();
    assert_eq!(same.len(), 6, "six keys of one partition among {keys}");
    // Each replica in turn is the one cut off: it fetches the values, or is pushed them.
    for seed in 5..8u64 {
        let cut_off = (seed % 3) as usize;
        let scripted_ops = same
            .iter()
            .enumerate()
            .map(|(i, key)| ScriptedOp {
                at: Duration::from_millis(400 + 100 * i as u64),
                node: (cut_off + 1) % nodes,
                key: key.clone(),
                action: ScriptedAction::Put {
                    with_context: false,
                },
            })
            .collect();
        let cfg = SimConfig {
            clients: 1,
            ops: 0,
            keys,
            set_keys: 0,
            delete_fraction: 0.0,
            handoff: Some(HandoffLimits::ROOMY),
            background: Background {
                hinted_handoff: false,
                ..Background::fast()
            },
            liveness: Liveness::AntiEntropyOnly {
                canary_reads: false,
            },
            scripted_partitions: vec![ScriptedPartition {
                side: side(&[cut_off]),
                one_way: false,
                start: Duration::from_millis(200),
                length: Duration::from_secs(2),
            }],
            scripted_ops,
            min_safety_time: Duration::from_secs(3),
            large_values: Some(LargeValues {
                min: 3 << 20,
                max: 4 << 20,
            }),
            ..SimConfig::no_faults(seed, nodes)
        };
        let report = run_ok(&cfg);
        assert_eq!(
            report.faults.frames_too_large, 0,
            "no message exceeded the frame limit\n{report}"
        );
        assert!(
            counter_sum(&report, AAE_KEYS_REPAIRED_TOTAL) >= same.len() as u64,
            "anti-entropy copied the large values to the cut-off replica\n{report}"
        );
        assert!(
            counter_sum(&report, AAE_BATCHES_SPLIT_TOTAL) > 0,
            "repair reads were cut at their byte bound\n{report}"
        );
    }
}

/// A busy cluster: foreground load keeps every coordinator's latency above the target for
/// far longer than the anti-entropy interval, right after a partition healed. Background
/// work backs off but keeps a minimum rate, so the replicas still converge while the load
/// goes on, within a bounded number of intervals.
#[test]
fn anti_entropy_converges_under_sustained_foreground_load() {
    let heal = Duration::from_secs(4);
    let load = Duration::from_secs(16);
    let interval = Background::fast().aae.interval;
    let aae = AaeConfig {
        latency_target: Duration::from_millis(10),
        ..Background::fast().aae
    };
    let cfg = SimConfig {
        ops: 120,
        keys: 60,
        min_safety_time: heal + load,
        ..heal_then_burst(4, heal, Some(load), aae)
    };
    let report = run_ok(&cfg);
    let (from, to) = (heal, heal + load);
    let least = report.timeline.min_budget_multiplier_between(from, to);
    let latency = report.timeline.max_foreground_latency_between(from, to);
    // The burst's own keys are written all along: their partitions differ now and then
    // while writes are in flight. Every other partition must come to agree.
    let busy: BTreeSet<shoal_ring::PartitionId> =
        (0..16).map(|i| partition_of(4, &Burst::key(i))).collect();
    let agreed = report.timeline.first_agreement_between(from, to, &busy);
    let overdue = report.counter_with(AAE_OVERDUE_STARTS_TOTAL, &[("kind", "exchange")]);
    let overdue_reaps = report.counter_with(AAE_OVERDUE_STARTS_TOTAL, &[("kind", "reap")]);
    let summary = format!(
        "least budget multiplier {least:.3}, foreground latency up to {latency:?}, \
         replicas agreed at {agreed:?} (load from {from:?} to {to:?}), \
         {overdue} overdue exchanges and {overdue_reaps} overdue reap scans started"
    );
    println!("{summary}");
    assert!(
        latency > Duration::from_millis(10) && least < 0.25,
        "the load starved background work of its normal budget: {summary}"
    );
    assert!(
        overdue > 0 && overdue_reaps > 0,
        "exchanges and reap scans started at the minimum rate: {summary}"
    );
    let bound = from + interval * 5;
    assert!(
        agreed.is_some_and(|t| t <= bound),
        "the replicas converged under load within {bound:?}: {summary}\n{report}"
    );
}
