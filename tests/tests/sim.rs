//! The deterministic simulator's tests: many seeds under faults, determinism, read your
//! writes without faults, hinted handoff across a long partition, and regressions.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_proto::metrics::{HINTS_TOTAL, READ_REPAIRS_TOTAL};
use shoal_tests::sim::{
    self, FaultMix, Faults, HandoffLimits, Quorum, RunReport, ScriptedPartition, SimConfig,
};

fn run(cfg: &SimConfig) -> RunReport {
    sim::run(cfg).unwrap_or_else(|e| panic!("seed {} could not run: {e}", cfg.seed))
}

fn run_ok(cfg: &SimConfig) -> RunReport {
    let report = run(cfg);
    if let Err(failure) = report.check() {
        panic!("{failure}\n{report}");
    }
    report
}

/// The config of the many-seeds tests: every cluster size in turn, the rest (quorums,
/// fault mix) drawn from the seed; smaller than the default run to keep debug builds fast.
fn many_seeds_config(seed: u64) -> SimConfig {
    SimConfig {
        nodes: Some(3 + (seed % 5) as usize),
        ops: 150,
        ..SimConfig::from_seed(seed)
    }
}

fn run_seeds(seeds: std::ops::Range<u64>) {
    let mut faulty = 0;
    for seed in seeds {
        let report = run_ok(&many_seeds_config(seed));
        if report.setup.faults.any() {
            faulty += 1;
        }
    }
    assert!(faulty > 0, "no seed of the range injected faults");
}

// 400 seeds in eight tests, so that the test harness spreads them over the cores.

#[test]
fn seeds_0_to_50_hold_every_invariant_under_faults() {
    run_seeds(0..50);
}

#[test]
fn seeds_50_to_100_hold_every_invariant_under_faults() {
    run_seeds(50..100);
}

#[test]
fn seeds_100_to_150_hold_every_invariant_under_faults() {
    run_seeds(100..150);
}

#[test]
fn seeds_150_to_200_hold_every_invariant_under_faults() {
    run_seeds(150..200);
}

#[test]
fn seeds_200_to_250_hold_every_invariant_under_faults() {
    run_seeds(200..250);
}

#[test]
fn seeds_250_to_300_hold_every_invariant_under_faults() {
    run_seeds(250..300);
}

#[test]
fn seeds_300_to_350_hold_every_invariant_under_faults() {
    run_seeds(300..350);
}

#[test]
fn seeds_350_to_400_hold_every_invariant_under_faults() {
    run_seeds(350..400);
}

#[test]
fn same_seed_gives_identical_event_log_and_different_seeds_differ() {
    let cfg = SimConfig {
        keep_log: true,
        ..SimConfig::from_seed(7)
    };
    let a = run(&cfg);
    let b = run(&cfg);
    assert!(a.log.len() > 100, "a run logs its events");
    assert_eq!(a.log, b.log, "same seed, same event log");
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.to_string(), b.to_string(), "same seed, same summary");
    let other = run(&SimConfig {
        keep_log: true,
        ..SimConfig::from_seed(8)
    });
    assert_ne!(a.digest, other.digest, "different seeds, different runs");
}

#[test]
fn the_digest_does_not_depend_on_keeping_the_log() {
    let kept = run(&SimConfig {
        keep_log: true,
        ..SimConfig::from_seed(3)
    });
    let not_kept = run(&SimConfig::from_seed(3));
    assert!(not_kept.log.is_empty());
    assert_eq!(kept.digest, not_kept.digest);
}

#[test]
fn without_faults_and_with_overlapping_quorums_reads_see_acknowledged_writes() {
    for seed in 0..20 {
        let cfg = SimConfig::no_faults(seed, 3 + (seed % 5) as usize);
        let report = run_ok(&cfg);
        assert!(report.setup.read_your_writes(&cfg), "the check applies");
        // The check had something to check: gets that started after an acknowledged put
        // of their key.
        let h = &report.history;
        let pairs = h
            .ops
            .iter()
            .filter(|g| g.kind.name() == "get" && g.outcome.name() == "ok")
            .filter(|g| {
                h.ops_on(&g.key)
                    .any(|p| p.is_acked_put() && p.completed.is_some_and(|c| c < g.invoked))
            })
            .count();
        assert!(
            pairs > 10,
            "seed {seed}: only {pairs} reads after acknowledged puts"
        );
        assert_eq!(
            report.faults,
            sim::FaultCounts::default(),
            "no faults injected"
        );
        let failed: u64 = report
            .ops
            .iter()
            .filter(|((_, o), _)| o != "ok")
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            failed, 0,
            "seed {seed}: no operation fails without faults\n{report}"
        );
    }
}

#[test]
fn a_long_partition_stores_hints_that_are_all_delivered_afterwards() {
    let side: BTreeSet<usize> = [0].into_iter().collect();
    let cfg = SimConfig {
        nodes: Some(5),
        quorum: Some(Quorum { n: 3, r: 2, w: 2 }),
        ops: 300,
        faults: FaultMix::None,
        handoff: Some(HandoffLimits::ROOMY),
        vary_quorums: false,
        scripted_partitions: vec![ScriptedPartition {
            side,
            one_way: false,
            start: Duration::from_millis(300),
            length: Duration::from_secs(8),
        }],
        ..SimConfig::from_seed(11)
    };
    let report = run_ok(&cfg);
    assert_eq!(report.faults.partitions, 1);
    let stored = report.counter_with(HINTS_TOTAL, &[("event", "stored")]);
    let delivered = report.counter_with(HINTS_TOTAL, &[("event", "delivered")]);
    assert!(
        stored > 0,
        "writes during the partition left hints\n{report}"
    );
    assert!(
        delivered > 0,
        "hints were delivered after it healed\n{report}"
    );
    assert!(
        report.final_state.pending_hints.values().all(|&n| n == 0),
        "every hint drained: {:?}",
        report.final_state.pending_hints
    );
}

#[test]
fn the_strongest_fault_mix_injects_every_kind_of_fault() {
    let faults = Faults {
        drop: 0.05,
        duplicate: 0.05,
        slow: 0.05,
        slow_max: Duration::from_millis(800),
        crash: 0.2,
        partition: 0.2,
        storage_failure: 0.01,
    };
    let cfg = SimConfig {
        nodes: Some(5),
        faults: FaultMix::Fixed(faults),
        ..SimConfig::from_seed(5)
    };
    let report = run_ok(&cfg);
    let f = report.faults;
    assert!(f.crashes > 0 && f.restarts > 0, "{report}");
    assert!(f.partitions > 0, "{report}");
    assert!(
        f.dropped > 0 && f.duplicated > 0 && f.slowed > 0 && f.storage_failures > 0,
        "{report}"
    );
    assert!(report.counter_with(READ_REPAIRS_TOTAL, &[]) > 0, "{report}");
}

/// Full disks (injected storage failures on data writes start a spell during which the
/// node's storage refuses every write with `DiskFull` through the real executor and
/// serves reads): every invariant holds, so no acknowledged write is lost.
#[test]
fn full_disks_refuse_writes_and_every_invariant_holds() {
    let (mut spells, mut refusals) = (0usize, 0u64);
    for seed in 0..20u64 {
        let faults = Faults {
            storage_failure: 0.02,
            ..Faults::NONE
        };
        let cfg = SimConfig {
            nodes: Some(3 + (seed % 3) as usize),
            ops: 150,
            faults: FaultMix::Fixed(faults),
            keep_log: true,
            ..SimConfig::from_seed(seed)
        };
        let report = run_ok(&cfg);
        spells += report
            .log
            .iter()
            .filter(|l| l.contains("disk FULL"))
            .count();
        refusals += report.counter_with(shoal_storage::metrics::DISK_FULL_REFUSALS_TOTAL, &[]);
    }
    assert!(spells > 0, "no full disk was injected in 20 seeds");
    assert!(
        refusals >= spells as u64,
        "{spells} full disks refused only {refusals} writes"
    );
    eprintln!("20 seeds: {spells} full-disk spells, {refusals} writes refused with DiskFull");
}
