//! What a run reports: its setup, what happened, what the checkers found, and the digest
//! of its event log. Nothing in it depends on the machine or the wall clock, so the same
//! seed prints the same report.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use shoal_proto::metrics::{
    AAE_EXCHANGES_TOTAL, AAE_KEYS_REPAIRED_TOTAL, FORWARDS_TOTAL, HINTS_TOTAL, READ_REPAIRS_TOTAL,
    REAPS_INCOMPLETE_TOTAL, REAP_RESENDS_TOTAL, REPLICA_READS_RESENT_TOTAL,
    REPLICA_WRITES_RESENT_TOTAL, TOMBSTONES_REAPED_TOTAL,
};

use shoal_proto::wire::MemberState;
use shoal_proto::Time;

use super::config::{
    Background, FaultMix, Liveness, PowerCutMix, SessionMode, Setup, SimConfig, SIM_DIRECT_READS,
};
use super::counters::counter_key;
use super::timeline::Timeline;
use crate::checkers::{FinalState, Violation};
use crate::history::History;

/// Faults the simulator injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Node crashes.
    pub crashes: u64,
    /// Node restarts (after a crash).
    pub restarts: u64,
    /// Network partitions started.
    pub partitions: u64,
    /// Messages dropped (randomly, or by a partition).
    pub dropped: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
    /// Messages slowed down.
    pub slowed: u64,
    /// Sends refused because the target was down.
    pub refused: u64,
    /// Storage operations failed on purpose.
    pub storage_failures: u64,
    /// Power cuts (each also counted as a crash).
    pub power_cuts: u64,
    /// Power cuts not made because they would have taken the last copy of a write.
    pub power_cuts_vetoed: u64,
    /// Unsynced storage writes the power cuts lost.
    pub writes_lost_to_power_cuts: u64,
    /// Messages larger than the frame limit: a request fails as the transport fails it
    /// (refused before it is sent), a response is replaced by the `ResponseTooLarge`
    /// error the node's handler sends instead.
    pub frames_too_large: u64,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The command that replays this run.
    pub replay: String,
    /// What the seed decided (cluster size, quorums, faults).
    pub setup: Setup,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Client operations by `(kind, outcome)`.
    pub ops: BTreeMap<(String, String), u64>,
    /// The engine's counters (hints, read repairs, forwards), by name and labels.
    pub counters: BTreeMap<String, u64>,
    /// Keys the workload used, and how many are found at the end.
    pub keys: usize,
    /// Keys found (some data sibling) at the end.
    pub keys_found: usize,
    /// Keys whose tombstone is still stored at the end (not reaped).
    pub keys_tombstoned: usize,
    /// Keys found after the final reads with a reapable tombstone on some primaries and
    /// nothing on the others, left to reaping and anti-entropy to finish.
    pub partly_reaped: usize,
    /// Direct reads answered by the copy whose context included the others'
    /// (`judge_copies`), each followed by the client's repairing read.
    pub superseding_reads: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time the run took.
    pub duration: Duration,
    /// Virtual time the safety phase took.
    pub safety_duration: Duration,
    /// xxh3 of the event log.
    pub digest: u64,
    /// The event log's lines, when kept.
    pub log: Vec<String>,
    /// Every broken invariant.
    pub violations: Vec<Violation>,
    /// The operations and coordinated writes.
    pub history: History,
    /// Every replica's state at the end.
    pub final_state: FinalState,
    /// Anti-entropy counters and admission-control state, sampled over the run.
    pub timeline: Timeline,
    /// Every change of a member's state as some node's failure detector saw it, in order.
    pub member_changes: Vec<MemberChange>,
    /// Layout changes through the agreement: the operators' counts and the newest
    /// version decided.
    pub layout: super::operator::LayoutStats,
}

/// One node's failure detector changed its verdict on a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberChange {
    /// When (virtual time).
    pub at: Time,
    /// The node whose view changed.
    pub observer: String,
    /// The peer it changed its mind about.
    pub peer: String,
    /// The new state.
    pub state: MemberState,
}

/// A run that broke an invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFailure {
    /// The seed that found it.
    pub seed: u64,
    /// What broke.
    pub violations: Vec<Violation>,
    /// The command that replays the run.
    pub replay: String,
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seed = self.seed;
        write!(
            f,
            "seed {seed} failed with {} violation(s):",
            self.violations.len()
        )?;
        for v in self.violations.iter().take(10) {
            write!(f, "\n  seed {seed}: {v}")?;
        }
        if self.violations.len() > 10 {
            write!(f, "\n  ... and {} more", self.violations.len() - 10)?;
        }
        write!(f, "\nreplay: {}", self.replay)
    }
}

impl std::error::Error for RunFailure {}

/// The `sim` command-line flags that give `bg` and `liveness`, if flags can express them:
/// `--no-handoff`, `--aae-only-liveness` (with `--canary-reads`), `--tombstone-grace S`
/// and `--aae-interval S` on top of [`Background::engine_defaults`] or, when any of the
/// last three is given, [`Background::fast`].
pub fn background_flags(bg: &Background, liveness: Liveness) -> Option<String> {
    let (aae_only, canary) = match liveness {
        Liveness::ReadRepair => (false, false),
        Liveness::AntiEntropyOnly { canary_reads } => (true, canary_reads),
    };
    for fast in [false, true] {
        let base = if fast {
            Background::fast()
        } else {
            Background::engine_defaults()
        };
        let mut flags = String::new();
        let mut rebuilt = base;
        if !bg.hinted_handoff {
            flags.push_str(" --no-handoff");
            rebuilt.hinted_handoff = false;
        }
        if aae_only {
            flags.push_str(" --aae-only-liveness");
        }
        if canary {
            flags.push_str(" --canary-reads");
        }
        // The fast base needs a flag that selects it; the grace period says it plainly.
        if bg.tombstone_grace != base.tombstone_grace || (fast && !aae_only) {
            flags.push_str(&format!(
                " --tombstone-grace {}",
                bg.tombstone_grace.as_secs_f64()
            ));
            rebuilt.tombstone_grace = bg.tombstone_grace;
        }
        if bg.aae.interval != base.aae.interval {
            flags.push_str(&format!(
                " --aae-interval {}",
                bg.aae.interval.as_secs_f64()
            ));
            rebuilt.aae.interval = bg.aae.interval;
        }
        let selects_fast = flags.contains("--aae-only-liveness")
            || flags.contains("--tombstone-grace")
            || flags.contains("--aae-interval");
        if rebuilt == *bg && selects_fast == fast {
            return Some(flags);
        }
    }
    None
}

/// The `sim` command that replays the run of `cfg`. Settings the command line cannot
/// express (scripted events, fixed fault mixes, storage timing or handoff limits, ...)
/// are named, so that the failure is replayed through the test that set them.
pub fn replay_command(cfg: &SimConfig) -> String {
    let mut cmd = format!("cargo run -p shoal-tests --bin sim -- --seed {}", cfg.seed);
    let base = SimConfig::from_seed(cfg.seed);
    if let Some(n) = cfg.nodes {
        cmd.push_str(&format!(" --nodes {n}"));
    }
    if let Some(q) = cfg.quorum {
        cmd.push_str(&format!(" --quorum {}/{}/{}", q.n, q.r, q.w));
    }
    if cfg.ops != base.ops {
        cmd.push_str(&format!(" --ops {}", cfg.ops));
    }
    if cfg.clients != base.clients {
        cmd.push_str(&format!(" --clients {}", cfg.clients));
    }
    if cfg.keys != base.keys {
        cmd.push_str(&format!(" --keys {}", cfg.keys));
    }
    if cfg.delete_fraction != base.delete_fraction {
        cmd.push_str(&format!(" --deletes {}", cfg.delete_fraction));
    }
    let mut inexpressible = Vec::new();
    match background_flags(&cfg.background, cfg.liveness) {
        Some(flags) => cmd.push_str(&flags),
        None => inexpressible.push("background settings"),
    }
    // A run with the seed's own layout changes (`--layout-changes`), which fix the
    // cluster size and, for removals and replacements, the quorums and power cuts.
    let seeded_layout = cfg.layout_agreement
        && !cfg.layout_changes.is_empty()
        && super::layout::with_seeded_changes(cfg.clone()).layout_changes == cfg.layout_changes;
    match (cfg.faults, cfg.vary_quorums) {
        (FaultMix::None, false) => cmd.push_str(" --faults 0"),
        (FaultMix::FromSeed { intensity }, false) if seeded_layout => {
            if intensity != 1.0 {
                cmd.push_str(&format!(" --faults {intensity}"));
            }
        }
        (FaultMix::FromSeed { intensity }, true) => {
            if intensity != 1.0 {
                cmd.push_str(&format!(" --faults {intensity}"));
            }
        }
        _ => inexpressible.push("fault mix"),
    }
    if !cfg.clock_skew.is_zero() {
        cmd.push_str(&format!(" --clock-skew {}", cfg.clock_skew.as_secs_f64()));
    }
    if !cfg.clock_offsets_ms.is_empty() {
        inexpressible.push("fixed clock offsets");
    }
    match cfg.power_cuts {
        PowerCutMix::FromSeed { share: 0.5 } => {}
        PowerCutMix::FromSeed { share: 1.0 } => cmd.push_str(" --power-cuts"),
        PowerCutMix::None => cmd.push_str(" --no-power-cuts"),
        _ => inexpressible.push("power cuts"),
    }
    if cfg.direct_reads != SIM_DIRECT_READS {
        cmd.push_str(&format!(" --direct-reads {}", cfg.direct_reads));
    }
    if cfg.group_commit {
        cmd.push_str(" --group-commit");
    }
    match cfg.sessions {
        SessionMode::Off => {}
        SessionMode::On => cmd.push_str(" --sessions"),
        SessionMode::NoEscalation => cmd.push_str(" --sessions-without-escalation"),
    }
    if cfg.set_keys != base.set_keys {
        inexpressible.push("set key count");
    }
    if cfg.storage_timing.is_some() {
        inexpressible.push("storage timing");
    }
    // `--layout-changes` sets the handoff limits of the runs that kill a member itself.
    if cfg.handoff.is_some() && !seeded_layout {
        inexpressible.push("handoff limits");
    }
    if !cfg.scripted_partitions.is_empty()
        || !cfg.scripted_crashes.is_empty()
        || !cfg.scripted_power_cuts.is_empty()
        || !cfg.scripted_ops.is_empty()
        || !cfg.scripted_pauses.is_empty()
        || !cfg.scripted_restores.is_empty()
        || (!cfg.layout_changes.is_empty() && !seeded_layout)
    {
        inexpressible.push("scripted events");
    }
    if seeded_layout {
        cmd.push_str(" --layout-changes");
    }
    if cfg.burst.is_some() {
        inexpressible.push("load burst");
    }
    if cfg.min_safety_time != base.min_safety_time {
        cmd.push_str(&format!(
            " --min-safety-time {}",
            cfg.min_safety_time.as_secs_f64()
        ));
    }
    if cfg.storage_service_time != base.storage_service_time {
        inexpressible.push("storage service time");
    }
    if !inexpressible.is_empty() {
        cmd.push_str(&format!(
            " (approximately: the run also fixed its {}; rerun its test)",
            inexpressible.join(", ")
        ));
    }
    cmd
}

impl RunReport {
    /// `Ok` if no invariant broke, otherwise the violations with the seed.
    pub fn check(&self) -> Result<(), RunFailure> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(RunFailure {
                seed: self.seed,
                violations: self.violations.clone(),
                replay: self.replay.clone(),
            })
        }
    }

    /// A counter of the engine by its key ([`counter_key`]), 0 if it never moved.
    pub fn counter(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    /// The counter `name` (a constant of [`shoal_proto::metrics`]) with exactly `labels`,
    /// 0 if it never moved.
    pub fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counter(&counter_key(name, labels))
    }

    /// Operations of `kind` (any outcome).
    pub fn ops_of(&self, kind: &str) -> u64 {
        self.ops
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// One line: seed, size, ops, faults, result, digest (and power cuts, when the run
    /// has them).
    pub fn one_line(&self) -> String {
        let ok: u64 = self
            .ops
            .iter()
            .filter(|((_, o), _)| o == "ok")
            .map(|(_, n)| n)
            .sum();
        let total: u64 = self.ops.values().sum();
        format!(
            "seed {:>6}  nodes {}  n/r/w {}/{}/{}  ops {ok}/{total} ok  crashes {}  partitions {}  dropped {}  hints {}  aae repaired {}  reaped {}  {}  digest {:016x}",
            self.seed,
            self.setup.nodes,
            self.setup.quorum.n,
            self.setup.quorum.r,
            self.setup.quorum.w,
            self.faults.crashes,
            self.faults.partitions,
            self.faults.dropped,
            self.counter_with(HINTS_TOTAL, &[("event", "stored")]),
            self.counter_with(AAE_KEYS_REPAIRED_TOTAL, &[("direction", "fetched")])
                + self.counter_with(AAE_KEYS_REPAIRED_TOTAL, &[("direction", "pushed")]),
            self.counter_with(TOMBSTONES_REAPED_TOTAL, &[]),
            if self.violations.is_empty() { "ok" } else { "FAILED" },
            self.digest
        ) + &if self.setup.power_cuts.tracked() {
            let c = &self.faults;
            format!(
                "  power cuts {} vetoed {} writes lost {}",
                c.power_cuts, c.power_cuts_vetoed, c.writes_lost_to_power_cuts
            )
        } else {
            String::new()
        } + &match self.counter_with(shoal_executor::metrics::REAPED_COPIES_DROPPED_TOTAL, &[]) {
            0 => String::new(),
            n => format!("  late copies of deleted values dropped {n}"),
        } + &match self.counter_with(shoal_executor::metrics::REAPED_READS_TOTAL, &[]) {
            0 => String::new(),
            n => format!("  reaped keys read as their clock {n}"),
        } + &if self.layout.versions > 1 || self.layout.committed > 0 {
            let l = &self.layout;
            format!(
                "  layout v{} committed {} lost {} refused {} plan changed {} unanswered {} gave up {} stranded {}",
                l.versions, l.committed, l.lost, l.refused, l.plan_changed, l.unanswered, l.gave_up, l.stranded
            )
        } else {
            String::new()
        }
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = self.setup.quorum;
        writeln!(f, "seed        {}", self.seed)?;
        writeln!(
            f,
            "nodes       {} (N={} R={} W={})",
            self.setup.nodes, q.n, q.r, q.w
        )?;
        writeln!(f, "fault mix   {}", self.setup.faults)?;
        writeln!(f, "storage     applied {:?}", self.setup.storage_timing)?;
        let h = self.setup.handoff;
        writeln!(
            f,
            "handoff     batch {} max hints {} ttl {:?}",
            h.batch, h.max_hints, h.ttl
        )?;
        writeln!(f, "background  {}", self.setup.background)?;
        writeln!(f, "liveness    {:?}", self.setup.liveness)?;
        writeln!(
            f,
            "virtual     {:?} total, {:?} safety phase, {} events",
            self.duration, self.safety_duration, self.events
        )?;
        writeln!(f, "operations")?;
        for ((kind, outcome), n) in &self.ops {
            writeln!(f, "  {kind:<8} {outcome:<8} {n}")?;
        }
        let sessions = &self.history.sessions;
        if !sessions.clients.is_empty() {
            use crate::history::SessionRead;
            writeln!(
                f,
                "sessions    {} clients: reads answered {} escalated {} not covered {}",
                sessions.clients.len(),
                sessions.count(SessionRead::Answered),
                sessions.count(SessionRead::Escalated),
                sessions.count(SessionRead::NotCovered)
            )?;
        }
        let c = &self.faults;
        writeln!(
            f,
            "faults      crashes {} restarts {} partitions {} dropped {} duplicated {} slowed {} refused {} storage failures {} frames too large {}",
            c.crashes,
            c.restarts,
            c.partitions,
            c.dropped,
            c.duplicated,
            c.slowed,
            c.refused,
            c.storage_failures,
            c.frames_too_large
        )?;
        if self.setup.power_cuts.tracked() {
            writeln!(
                f,
                "power cuts  {}: {} made, {} vetoed, {} unsynced writes lost",
                self.setup.power_cuts,
                c.power_cuts,
                c.power_cuts_vetoed,
                c.writes_lost_to_power_cuts
            )?;
        }
        writeln!(
            f,
            "hints       stored {} delivered {} dropped {} delivery failures {}",
            self.counter_with(HINTS_TOTAL, &[("event", "stored")]),
            self.counter_with(HINTS_TOTAL, &[("event", "delivered")]),
            self.counter_with(HINTS_TOTAL, &[("event", "dropped")]),
            self.counter_with(HINTS_TOTAL, &[("event", "delivery_failed")])
        )?;
        writeln!(
            f,
            "read repair sent {} (ok {} failed {})",
            self.counter_with(READ_REPAIRS_TOTAL, &[]),
            self.counter_with(READ_REPAIRS_TOTAL, &[("result", "ok")]),
            self.counter_with(READ_REPAIRS_TOTAL, &[("result", "failed")])
        )?;
        writeln!(f, "forwards    {}", self.counter_with(FORWARDS_TOTAL, &[]))?;
        let resent = |reason| self.counter_with(REPLICA_WRITES_RESENT_TOTAL, &[("reason", reason)]);
        writeln!(
            f,
            "resent      replica writes after a timeout {} a lost connection {} a layout refusal {}; replica reads after a timeout {} a lost connection {}",
            resent("timeout"),
            resent("lost"),
            resent("stale_layout"),
            self.counter_with(REPLICA_READS_RESENT_TOTAL, &[("reason", "timeout")]),
            self.counter_with(REPLICA_READS_RESENT_TOTAL, &[("reason", "lost")])
        )?;
        writeln!(
            f,
            "anti-entropy exchanges ok {} failed {}, keys repaired {} (fetched {} pushed {}), tombstones reaped {} ({} keys; deletes sent again {}, pages left incomplete {}; late copies of deleted values dropped {})",
            self.counter_with(AAE_EXCHANGES_TOTAL, &[("result", "ok")]),
            self.counter_with(AAE_EXCHANGES_TOTAL, &[("result", "failed")]),
            self.counter_with(AAE_KEYS_REPAIRED_TOTAL, &[("direction", "fetched")])
                + self.counter_with(AAE_KEYS_REPAIRED_TOTAL, &[("direction", "pushed")]),
            self.counter_with(AAE_KEYS_REPAIRED_TOTAL, &[("direction", "fetched")]),
            self.counter_with(AAE_KEYS_REPAIRED_TOTAL, &[("direction", "pushed")]),
            self.counter_with(TOMBSTONES_REAPED_TOTAL, &[]),
            self.history.reaps.len(),
            self.counter_with(REAP_RESENDS_TOTAL, &[]),
            self.counter_with(REAPS_INCOMPLETE_TOTAL, &[]),
            self.counter_with(shoal_executor::metrics::REAPED_COPIES_DROPPED_TOTAL, &[])
        )?;
        writeln!(
            f,
            "final keys  {} of {} found, {} tombstoned ({} partly reaped after the final reads)",
            self.keys_found, self.keys, self.keys_tombstoned, self.partly_reaped
        )?;
        writeln!(
            f,
            "direct reads answered by a superseding copy {}",
            self.superseding_reads
        )?;
        if self.violations.is_empty() {
            writeln!(f, "result      ok")?;
        } else {
            writeln!(f, "result      FAILED")?;
            for v in &self.violations {
                writeln!(f, "  {v}")?;
            }
            writeln!(f, "replay      {}", self.replay)?;
        }
        write!(f, "digest      {:016x}", self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 2500335's replay line left out `--group-commit`, without which the seed
    /// passed.
    #[test]
    fn the_replay_command_names_group_commit_and_a_non_default_share_of_direct_reads() {
        let cfg = SimConfig {
            group_commit: true,
            direct_reads: SIM_DIRECT_READS,
            ..SimConfig::from_seed(7)
        };
        let cmd = replay_command(&cfg);
        assert!(cmd.contains(" --group-commit"), "{cmd}");
        assert!(!cmd.contains("--direct-reads"), "{cmd}");
        let cmd = replay_command(&SimConfig::from_seed(7));
        assert!(!cmd.contains("--group-commit"), "{cmd}");
        assert!(cmd.contains(" --direct-reads 0"), "{cmd}");
    }

    /// The session reaping test's configuration (seed 7464 failed in a sweep of it) is
    /// replayable exactly: its minimum safety time has a flag.
    #[test]
    fn the_replay_command_names_the_minimum_safety_time() {
        let cmd = replay_command(&SimConfig::sessions_reaping(7464, 3));
        assert!(cmd.contains(" --min-safety-time 15"), "{cmd}");
        assert!(!cmd.contains("approximately"), "{cmd}");
    }
}
