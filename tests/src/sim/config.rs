//! How a simulated run is set up: what the caller fixes ([`SimConfig`]) and what the
//! seed decides ([`Setup`]), plus the virtual-time constants of the simulated world.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use shoal_proto::{
    AaeConfig, EngineConfig, HandoffConfig, LimitsConfig, MembershipConfig, ReplicationConfig, Time,
};

use super::scenario::{
    Burst, ScriptedCrash, ScriptedOp, ScriptedPartition, ScriptedPause, ScriptedRestore,
};

/// When every run starts on the virtual clock (2023-11-14, an arbitrary fixed instant).
pub const EPOCH: Time = Time::from_micros(1_700_000_000_000_000);

/// Partitions of the simulated ring: small, so a run touches many partitions.
pub const PARTITIONS: u32 = 64;

/// How long a client waits for an answer: past the coordinator's request timeout plus a
/// forwarding hop, so that a timeout here means the answer was really lost.
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(2_500);

/// How often the fault injector considers crashing a node or cutting the network.
pub const FAULT_TICK: Duration = Duration::from_millis(250);

/// The longest the safety phase may last, however slow the ops are.
pub const MAX_SAFETY_TIME: Duration = Duration::from_secs(120);

/// How long the liveness phase may take to reach quiet (every node up in every view,
/// nothing in flight, no hints) before the run fails for lack of liveness.
pub const MAX_QUIESCE_TIME: Duration = Duration::from_secs(60);

/// Most events a run may process: a bound that turns a livelock into a failure.
pub const MAX_EVENTS: u64 = 20_000_000;

/// Most events waiting in the queue at once.
pub const MAX_QUEUED_EVENTS: usize = 1_000_000;

/// Hinted-handoff limits, which a run may shrink so that batching, full hint stores and
/// expired hints happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandoffLimits {
    /// Hints delivered per target per round.
    pub batch: usize,
    /// Hints kept per target.
    pub max_hints: u64,
    /// Age after which a hint is dropped instead of delivered.
    pub ttl: Duration,
    /// Time between delivery rounds (`handoff.interval`).
    pub interval: Duration,
}

impl HandoffLimits {
    /// The usual limits: large enough never to be reached in a run.
    pub const ROOMY: HandoffLimits = HandoffLimits {
        batch: 64,
        max_hints: 1_000_000,
        ttl: Duration::from_secs(3600),
        interval: Duration::from_millis(500),
    };

    /// Roomy limits half the time, otherwise tight ones (small batches, a few hints per
    /// target, a TTL of seconds).
    pub fn draw(rng: &mut ChaCha8Rng) -> HandoffLimits {
        if rng.random_bool(0.5) {
            return HandoffLimits::ROOMY;
        }
        HandoffLimits {
            batch: rng.random_range(1..=4),
            max_hints: rng.random_range(2..=8),
            ttl: Duration::from_millis(rng.random_range(1_000..=6_000)),
            interval: HandoffLimits::ROOMY.interval,
        }
    }
}

/// The engine's background work in a run: hinted handoff, anti-entropy and tombstone
/// reaping. [`Background::engine_defaults`] is what a node runs with out of the box (its
/// intervals are minutes and hours, so a run sees one exchange round at start and no
/// reaping); [`Background::fast`] scales them to a run of seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Background {
    /// Whether writes for unreachable primaries are kept as hints on fallbacks
    /// (`handoff.enabled`).
    pub hinted_handoff: bool,
    /// Anti-entropy and reaping: the engine's `[aae]` section as is.
    pub aae: AaeConfig,
    /// Tombstones are kept at least this long before they may be reaped
    /// (`replication.tombstone_grace`).
    pub tombstone_grace: Duration,
}

impl Background {
    /// The engine's own defaults ([`EngineConfig::default`]).
    pub fn engine_defaults() -> Background {
        let d = EngineConfig::default();
        Background {
            hinted_handoff: d.handoff.enabled,
            aae: d.aae,
            tombstone_grace: d.replication.tombstone_grace,
        }
    }

    /// Intervals scaled to virtual seconds, so that a run sees many exchange rounds and
    /// reaps tombstones: exchanges every 3 s (scheduler tick 100 ms), reaping scans every
    /// 3 s, a 6 s tombstone grace period. Budgets and bounds stay the engine's.
    ///
    /// A node starts at most one reap scan per tick and takes its partitions round robin,
    /// so with 64 partitions, 3 nodes and a 100 ms tick each is scanned about every 2.2 s
    /// at the most: within the reap interval.
    pub fn fast() -> Background {
        let d = Background::engine_defaults();
        Background {
            aae: AaeConfig {
                interval: Duration::from_secs(3),
                tick: Duration::from_millis(100),
                reap_interval: Duration::from_secs(3),
                ..d.aae
            },
            tombstone_grace: Duration::from_secs(6),
            ..d
        }
    }
}

impl fmt::Display for Background {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.aae;
        write!(
            f,
            "handoff {}, aae {} every {:?} (tick {:?}, {} at once, {} keys/s, batch {}, latency target {:?}), reap every {:?}, grace {:?}",
            if self.hinted_handoff { "on" } else { "off" },
            if a.enabled { "on" } else { "off" },
            a.interval,
            a.tick,
            a.max_concurrent_exchanges,
            a.repair_keys_per_second,
            a.batch,
            a.latency_target,
            a.reap_interval,
            self.tombstone_grace
        )
    }
}

/// The engine settings every simulated node runs with: the defaults, with timeouts and
/// intervals scaled down so that a run covers many of them in a few virtual seconds, and
/// the run's handoff limits and background work.
pub fn engine_config(q: Quorum, handoff: HandoffLimits, bg: &Background) -> EngineConfig {
    let d = EngineConfig::default();
    EngineConfig {
        replication: ReplicationConfig {
            n: q.n,
            r: q.r,
            w: q.w,
            request_timeout: Duration::from_secs(1),
            rpc_timeout: Duration::from_millis(300),
            read_repair_window: Duration::from_millis(50),
            tombstone_grace: bg.tombstone_grace,
            ..d.replication
        },
        membership: MembershipConfig {
            gossip_interval: Duration::from_secs(1),
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(300),
            ..d.membership
        },
        handoff: HandoffConfig {
            enabled: bg.hinted_handoff,
            interval: handoff.interval,
            batch: handoff.batch,
            max_hints_per_target: handoff.max_hints,
            ttl: handoff.ttl,
            ..d.handoff
        },
        aae: bg.aae,
        limits: LimitsConfig {
            max_value_bytes: 64 << 10,
            max_object_bytes: 1 << 20,
            ..d.limits
        },
    }
}

/// How the liveness phase brings the replicas together before convergence is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Read every key once with R = N (read repair fixes the replicas), then require
    /// convergence.
    ReadRepair,
    /// No client touches the workload's keys: let virtual time pass (at least
    /// [`ANTI_ENTROPY_MIN_INTERVALS`] anti-entropy intervals, and long enough for the
    /// tombstones of the run to become reapable) until anti-entropy alone has made every
    /// partition's Merkle roots equal on all its primaries, then require convergence.
    AntiEntropyOnly {
        /// Keep a trickle of foreground traffic that repairs nothing: every 100 ms a
        /// canary client reads a key that nothing writes, coordinated by each node in
        /// turn — as a live cluster always has some traffic. Without it the phase has no
        /// client request at all.
        canary_reads: bool,
    },
}

/// The least anti-entropy intervals an [`Liveness::AntiEntropyOnly`] phase lasts.
pub const ANTI_ENTROPY_MIN_INTERVALS: u32 = 3;

/// Anti-entropy intervals within which, after the cluster is quiet, an
/// [`Liveness::AntiEntropyOnly`] phase must converge (past its minimum length).
pub const ANTI_ENTROPY_CONVERGENCE_INTERVALS: u32 = 10;

/// The faults a run injects during its safety phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// Probability that a message (request or response, node or client) is dropped.
    pub drop: f64,
    /// Probability that a node-to-node request is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is slow: delayed by up to [`Faults::slow_max`], often
    /// past the sender's timeout (and reordered with the messages around it); also the
    /// probability that a storage operation stalls for up to 1.5 s.
    pub slow: f64,
    /// The longest delay of a slow message.
    pub slow_max: Duration,
    /// Probability, at each fault tick, of crashing a node (restarted after a while).
    pub crash: f64,
    /// Probability, at each fault tick, of cutting the network in two for a while (a
    /// quarter of the cuts are one-way).
    pub partition: f64,
    /// Probability that a storage operation fails (and is not applied).
    pub storage_failure: f64,
}

impl Faults {
    /// No faults at all.
    pub const NONE: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        slow: 0.0,
        slow_max: Duration::ZERO,
        crash: 0.0,
        partition: 0.0,
        storage_failure: 0.0,
    };

    /// Whether any fault can happen.
    pub fn any(&self) -> bool {
        self.drop > 0.0
            || self.duplicate > 0.0
            || self.slow > 0.0
            || self.crash > 0.0
            || self.partition > 0.0
            || self.storage_failure > 0.0
    }

    /// A mix drawn from the seed: each kind of fault is on with probability 1/2 (so some
    /// runs have none and some have all), at a strength scaled by `intensity` (0 to 1).
    pub fn draw(rng: &mut ChaCha8Rng, intensity: f64) -> Faults {
        let k = intensity.clamp(0.0, 1.0);
        let mut pick = |max: f64| -> f64 {
            if rng.random_bool(0.5) {
                rng.random_range(0.0..=max) * k
            } else {
                0.0
            }
        };
        let drop = pick(0.08);
        let duplicate = pick(0.05);
        let slow = pick(0.05);
        let crash = pick(0.2);
        let partition = pick(0.2);
        let storage_failure = pick(0.02);
        Faults {
            drop,
            duplicate,
            slow,
            slow_max: Duration::from_millis(800),
            crash,
            partition,
            storage_failure,
        }
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.any() {
            return write!(f, "none");
        }
        write!(
            f,
            "drop {:.3}, duplicate {:.3}, slow {:.3} (max {:?}), crash {:.3}/tick, partition {:.3}/tick, storage failure {:.3}",
            self.drop,
            self.duplicate,
            self.slow,
            self.slow_max,
            self.crash,
            self.partition,
            self.storage_failure
        )
    }
}

/// Which faults a run injects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultMix {
    /// None: a clean network, no crashes.
    None,
    /// Drawn from the seed ([`Faults::draw`]) at this intensity (0 to 1).
    FromSeed {
        /// Scales every fault probability.
        intensity: f64,
    },
    /// Exactly these.
    Fixed(Faults),
}

/// Power cuts: a node's storage runs with `buffered` durability, so its writes reach the
/// disk only at its next periodic sync (or when the executor syncs); a power cut loses a
/// suffix of the writes not synced yet, as the end of a RocksDB WAL still in the page
/// cache. A cut never takes the last copy of a write: see `power.rs`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerCuts {
    /// Probability, at each fault tick, of cutting the power of one running node
    /// (restarted after a while).
    pub per_tick: f64,
    /// How often each node's storage syncs: a write is durable at the first sync after
    /// it. Each node syncs at its own phase.
    pub sync_interval: Duration,
}

impl PowerCuts {
    /// No power cuts: every acknowledged storage write is durable.
    pub const NONE: PowerCuts = PowerCuts {
        per_tick: 0.0,
        sync_interval: Duration::ZERO,
    };

    /// Whether the run tracks which writes are synced (random or scripted cuts).
    pub fn tracked(&self) -> bool {
        !self.sync_interval.is_zero()
    }

    /// Drawn from the power-cut stream: in a share `share` of runs, cuts at up to
    /// 0.2 per tick scaled by `intensity`, syncs every 0.2 to 2 s.
    fn draw(rng: &mut ChaCha8Rng, share: f64, intensity: f64) -> PowerCuts {
        if !rng.random_bool(share.clamp(0.0, 1.0)) {
            return PowerCuts::NONE;
        }
        PowerCuts {
            per_tick: rng.random_range(0.02..=0.2) * intensity.clamp(0.0, 1.0),
            sync_interval: Duration::from_millis(rng.random_range(200..=2_000)),
        }
    }
}

impl fmt::Display for PowerCuts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.tracked() {
            return write!(f, "none");
        }
        write!(
            f,
            "{:.3}/tick, sync every {:?}",
            self.per_tick, self.sync_interval
        )
    }
}

/// Which power cuts a run injects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PowerCutMix {
    /// None (every storage write is durable).
    None,
    /// When the run's faults are [`FaultMix::FromSeed`]: in this share of the runs,
    /// drawn from the seed (a stream of its own, so that runs without cuts are the runs
    /// they were before power cuts were modelled). Otherwise none.
    FromSeed {
        /// Share of the runs with power cuts (0 to 1).
        share: f64,
    },
    /// Exactly these (`per_tick` 0 with a sync interval: only scripted cuts).
    Fixed(PowerCuts),
}

/// The streams of a run's RNG that power cuts draw from: whether and how often
/// ([`PowerCuts`]), then which node, when it syncs and what a cut loses.
pub(crate) const POWER_CUT_SETUP_STREAM: u64 = 0x0070_6375_7400;
pub(crate) const POWER_CUT_STREAM: u64 = 0x0070_6375_7401;
/// The stream a group-commit run draws its sync interval from.
pub(crate) const GROUP_COMMIT_STREAM: u64 = 0x0070_6375_7402;

/// The RNG of a run's power cuts: seeded by the run's seed, on `stream`.
pub(crate) fn power_cut_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Quorum settings: replicas per key and default read and write quorums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// Replicas per key.
    pub n: u8,
    /// Read quorum.
    pub r: u8,
    /// Write quorum.
    pub w: u8,
}

/// When a storage operation takes effect. The engine must not depend on either: the real
/// node runs storage ops on worker threads, where an op may land long before its
/// completion is seen, or ops issued in one order may land in another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageTiming {
    /// Applied when the engine issues it; a crash loses only the completion.
    AtIssue,
    /// Applied when it completes (after a random delay, so ops land out of issue
    /// order); a crash before then loses the op.
    AtCompletion,
}

/// What a caller fixes about a run. Everything left `None` is drawn from the seed.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Decides every random choice of the run.
    pub seed: u64,
    /// Cluster size (3 to 7); `None`: drawn from the seed.
    pub nodes: Option<usize>,
    /// Quorums; `None`: drawn from the seed (N = 3, R and W in 1..=3).
    pub quorum: Option<Quorum>,
    /// Concurrent clients.
    pub clients: usize,
    /// Client operations in the safety phase (a set-add counts its get and its put).
    pub ops: usize,
    /// Plain keys (put / get / delete).
    pub keys: usize,
    /// Add-only set keys (read-modify-write through contexts).
    pub set_keys: usize,
    /// Faults of the safety phase.
    pub faults: FaultMix,
    /// When storage ops take effect; `None`: drawn from the seed.
    pub storage_timing: Option<StorageTiming>,
    /// Hinted-handoff limits; `None`: drawn from the seed.
    pub handoff: Option<HandoffLimits>,
    /// Whether clients vary R and W per request (off keeps the defaults everywhere).
    pub vary_quorums: bool,
    /// Of the gets at R of 2 or more that pick their node, the share that first ask R
    /// primaries for their own copies at once, as the SDK's direct reads do
    /// (`ClientRequest::GetReplica`), and answer with equal copies; otherwise the get goes
    /// to a coordinator as a plain one.
    pub direct_reads: f64,
    /// Of the workload's operations on plain keys, the share that are deletes (the rest
    /// splits into 40% gets and puts).
    pub delete_fraction: f64,
    /// Hinted handoff, anti-entropy and reaping settings of the engines.
    pub background: Background,
    /// How the liveness phase brings the replicas together.
    pub liveness: Liveness,
    /// The safety phase lasts at least this long (faults go on after the workload ends).
    pub min_safety_time: Duration,
    /// Partitions scripted on top of the random faults.
    pub scripted_partitions: Vec<ScriptedPartition>,
    /// Crashes scripted on top of the random faults.
    pub scripted_crashes: Vec<ScriptedCrash>,
    /// Client operations scripted on top of the workload.
    pub scripted_ops: Vec<ScriptedOp>,
    /// A burst of foreground load on keys of its own.
    pub burst: Option<Burst>,
    /// Each node's storage serves one operation at a time, each taking this long (on top
    /// of the random completion delay), so that load queues up; zero: no queueing.
    pub storage_service_time: Duration,
    /// Keep the event log's lines (the digest is computed either way).
    pub keep_log: bool,
    /// The engines' `limits.max_siblings` (and `sibling_warn`, at most it); `None`: the
    /// default (100), which the workload never reaches.
    pub max_siblings: Option<usize>,
    /// Pauses scripted on top of the random faults.
    pub scripted_pauses: Vec<ScriptedPause>,
    /// Restores from a backup, scripted.
    pub scripted_restores: Vec<ScriptedRestore>,
    /// Clock skew: each node's clock gets a seeded offset and drift, any two differing by
    /// at most this much (zero: every node's clock is the virtual time). The engines are
    /// configured with it as `replication.max_clock_skew`.
    pub clock_skew: Duration,
    /// Fixed clock offsets in milliseconds, node by node (nodes past the list: none), no
    /// drift, instead of offsets drawn within `clock_skew`. The engines are still told
    /// `clock_skew`, so a test can give them less than the offsets' spread (a cluster
    /// whose clocks are further apart than it is configured for).
    pub clock_offsets_ms: Vec<i64>,
    /// Power cuts of the safety phase.
    pub power_cuts: PowerCutMix,
    /// Storage as `durability = "sync"` with group commit: a write's completion reaches
    /// the engine only after a sync that covers it (each node syncs what waits every 1 to
    /// 10 ms, drawn), and a coordinator's own write is handed over applied first, so that
    /// it replicates while the sync runs (`Engine::handle_storage_applied`). A sync fails
    /// with the run's storage-failure probability: the writes it covered are then
    /// reported failed (though on the disk, they are not known durable).
    pub group_commit: bool,
    /// Power cuts scripted on top of the random ones, each losing every write its node
    /// has not synced (they need a sync interval: a [`PowerCutMix::Fixed`] one, or one
    /// drawn). Like random ones, a cut that would take a write's last copy is vetoed.
    pub scripted_power_cuts: Vec<ScriptedCrash>,
    /// Puts carry values of this many bytes, with the engine's own size limits (a 16 MiB
    /// object, frames of one object plus its envelope); `None`: short values and small
    /// limits.
    pub large_values: Option<LargeValues>,
    /// Whether the workload's clients run as sessions (`shoal_proto::session`).
    pub sessions: SessionMode,
    /// Nodes hosted by the simulator but in no layout at the start (indices after the
    /// cluster's): they start when a scripted join or replacement names them.
    pub spare_nodes: usize,
    /// Layout changes (joins, leaves, removals, replacements), each installed on every
    /// running node at its instant (see `sim/layout.rs`).
    pub layout_changes: Vec<super::layout::ScriptedLayoutChange>,
    /// Whether the layout changes go through the agreement: an operator stages and
    /// commits each at a live member, whose Paxos decides it, and the engines spread it
    /// (`sim/operator.rs`); spares start as candidates. Otherwise each is installed on
    /// every running node at its instant (exact timing, no agreement).
    pub layout_agreement: bool,
}

/// The `sim` binary's default share of direct reads ([`SimConfig::direct_reads`]), which
/// its replay lines leave out; [`SimConfig::from_seed`] has none.
pub const SIM_DIRECT_READS: f64 = 0.5;

/// How the workload's clients use sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionMode {
    /// Plain clients.
    #[default]
    Off,
    /// Every workload client is a session: a get whose reply does not cover what the
    /// client wrote and read of the key asks one more replica at a time up to N, then
    /// fails `NotCovered`. The `session_guarantees` checker judges every answered read.
    On,
    /// Sessions that remember contexts but never escalate: they accept every reply. For
    /// showing that the checker catches the stale reads escalation prevents.
    NoEscalation,
}

/// Value sizes of a run with large values: each put's value is padded to a size drawn
/// from `min..=max` bytes. Keep the counts of such puts small: every byte is simulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LargeValues {
    /// Smallest value, in bytes.
    pub min: usize,
    /// Largest value, in bytes (at most the engine's default `max_value_bytes`).
    pub max: usize,
}

impl LargeValues {
    /// The engine's limits with room for values of up to `max` bytes: the node defaults
    /// (4 MiB values, 16 MiB objects), raised if `max` is larger.
    pub fn limits(&self) -> LimitsConfig {
        let d = LimitsConfig::default();
        let max_value_bytes = d.max_value_bytes.max(self.max);
        LimitsConfig {
            max_value_bytes,
            max_object_bytes: d
                .max_object_bytes
                .max(max_value_bytes + shoal_proto::MAX_KEY_BYTES),
            ..d
        }
    }
}

impl SimConfig {
    /// The default run for `seed`: size, quorums and fault mix all drawn from the seed.
    pub fn from_seed(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: None,
            quorum: None,
            clients: 4,
            ops: 200,
            keys: 6,
            set_keys: 2,
            faults: FaultMix::FromSeed { intensity: 1.0 },
            storage_timing: None,
            handoff: None,
            vary_quorums: true,
            // Off by default, so that a seed pinned before direct reads existed draws
            // the same schedule; the sweeps turn them on.
            direct_reads: 0.0,
            delete_fraction: 0.15,
            background: Background::engine_defaults(),
            liveness: Liveness::ReadRepair,
            min_safety_time: Duration::ZERO,
            scripted_partitions: Vec::new(),
            scripted_crashes: Vec::new(),
            scripted_ops: Vec::new(),
            burst: None,
            storage_service_time: Duration::ZERO,
            keep_log: false,
            max_siblings: None,
            scripted_pauses: Vec::new(),
            scripted_restores: Vec::new(),
            clock_skew: Duration::ZERO,
            clock_offsets_ms: Vec::new(),
            power_cuts: PowerCutMix::FromSeed { share: 0.5 },
            group_commit: false,
            scripted_power_cuts: Vec::new(),
            large_values: None,
            sessions: SessionMode::Off,
            spare_nodes: 0,
            layout_changes: Vec::new(),
            layout_agreement: false,
        }
    }

    /// Sessions under deletes and faults on 40 keys, with tombstones reapable a few
    /// seconds after they are everywhere, during a safety phase of at least 15 s: the
    /// configuration of `sessions_read_reaped_keys_as_gone_and_keep_their_guarantees`
    /// (`tests/tests/sim_aae.rs`), whose long sweeps found the partly reaped tombstones.
    pub fn sessions_reaping(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            nodes: Some(nodes),
            ops: 300,
            keys: 40,
            delete_fraction: 0.5,
            sessions: SessionMode::On,
            background: Background::fast(),
            min_safety_time: Duration::from_secs(15),
            ..SimConfig::from_seed(seed)
        }
    }

    /// A run without faults, default quorums (N = 3, R = W = 2) on `nodes` nodes.
    pub fn no_faults(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            nodes: Some(nodes),
            quorum: Some(Quorum { n: 3, r: 2, w: 2 }),
            faults: FaultMix::None,
            vary_quorums: false,
            ..SimConfig::from_seed(seed)
        }
    }
}

/// What the seed decided for a run (with what the caller fixed).
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    /// Cluster size.
    pub nodes: usize,
    /// Quorums.
    pub quorum: Quorum,
    /// Faults of the safety phase.
    pub faults: Faults,
    /// When storage ops take effect.
    pub storage_timing: StorageTiming,
    /// Hinted-handoff limits (the TTL cut below the tombstone grace period if needed).
    pub handoff: HandoffLimits,
    /// Hinted handoff, anti-entropy and reaping settings.
    pub background: Background,
    /// How the liveness phase brings the replicas together.
    pub liveness: Liveness,
    /// The largest difference between two nodes' clocks.
    pub clock_skew: Duration,
    /// Power cuts of the safety phase. With group commit its sync interval is the
    /// time a sync takes (every node syncs whenever writes wait for one).
    pub power_cuts: PowerCuts,
    /// Storage as `durability = "sync"` with group commit ([`SimConfig::group_commit`]).
    pub group_commit: bool,
}

impl Setup {
    /// Draw what `cfg` leaves open, from the run's RNG (before anything else uses it).
    pub fn draw(cfg: &SimConfig, rng: &mut ChaCha8Rng) -> Setup {
        let nodes = cfg.nodes.unwrap_or_else(|| rng.random_range(3..=7));
        let quorum = cfg.quorum.unwrap_or_else(|| Quorum {
            n: 3,
            r: rng.random_range(1..=3),
            w: rng.random_range(1..=3),
        });
        let faults = match cfg.faults {
            FaultMix::None => Faults::NONE,
            FaultMix::FromSeed { intensity } => Faults::draw(rng, intensity),
            FaultMix::Fixed(f) => f,
        };
        let storage_timing = cfg.storage_timing.unwrap_or_else(|| {
            if rng.random_bool(0.5) {
                StorageTiming::AtIssue
            } else {
                StorageTiming::AtCompletion
            }
        });
        let mut handoff = cfg.handoff.unwrap_or_else(|| HandoffLimits::draw(rng));
        // The engine requires hints to expire before tombstones may be reaped.
        if handoff.ttl >= cfg.background.tombstone_grace {
            handoff.ttl = cfg.background.tombstone_grace / 2;
        }
        // ... with a margin for clock skew: skew < TTL < grace - 2 × skew.
        let skew = cfg.clock_skew;
        let grace = cfg.background.tombstone_grace;
        let slack = Duration::from_millis(1);
        let highest = grace.saturating_sub(skew * 2).saturating_sub(slack);
        if handoff.ttl > highest {
            handoff.ttl = highest;
        }
        if handoff.ttl <= skew {
            handoff.ttl = (skew + slack).min(highest);
        }
        let power_cuts = match (cfg.power_cuts, cfg.faults) {
            (PowerCutMix::Fixed(p), _) => p,
            (PowerCutMix::FromSeed { share }, FaultMix::FromSeed { intensity }) => PowerCuts::draw(
                &mut power_cut_rng(cfg.seed, POWER_CUT_SETUP_STREAM),
                share,
                intensity,
            ),
            _ => PowerCuts::NONE,
        };
        let mut power_cuts = power_cuts;
        if cfg.group_commit {
            let mut rng = power_cut_rng(cfg.seed, GROUP_COMMIT_STREAM);
            power_cuts.sync_interval = Duration::from_millis(rng.random_range(1..=10));
        }
        Setup {
            nodes,
            quorum,
            faults,
            storage_timing,
            handoff,
            background: cfg.background,
            liveness: cfg.liveness,
            clock_skew: skew,
            power_cuts,
            group_commit: cfg.group_commit,
        }
    }

    /// Whether read-your-writes must hold: no faults (random or scripted), no storage
    /// queueing (slow storage makes replicas miss timeouts, so writes go sloppy) and
    /// R + W > N. (Clock skew does not matter: no read or write rule uses a clock.)
    pub fn read_your_writes(&self, cfg: &SimConfig) -> bool {
        // Group commit tracks syncs without cutting power unless told to.
        let cuts = self.power_cuts.tracked() && !self.group_commit
            || self.power_cuts.per_tick > 0.0
            || !cfg.scripted_power_cuts.is_empty();
        !self.faults.any()
            && !cuts
            && cfg.scripted_partitions.is_empty()
            && cfg.scripted_crashes.is_empty()
            && cfg.scripted_pauses.is_empty()
            && cfg.scripted_restores.is_empty()
            && cfg.storage_service_time.is_zero()
            && !cfg.vary_quorums
            && self.quorum.r + self.quorum.w > self.quorum.n
    }
}
