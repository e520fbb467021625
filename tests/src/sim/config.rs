//! How a simulated run is set up: what the caller fixes ([`SimConfig`]) and what the
//! seed decides ([`Setup`]), plus the virtual-time constants of the simulated world.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use shoal_proto::{EngineConfig, Time};

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
}

impl HandoffLimits {
    /// The usual limits: large enough never to be reached in a run.
    pub const ROOMY: HandoffLimits = HandoffLimits {
        batch: 64,
        max_hints: 1_000_000,
        ttl: Duration::from_secs(3600),
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
        }
    }
}

/// The engine settings every simulated node runs with: the defaults, with timeouts and
/// intervals scaled down so that a run covers many of them in a few virtual seconds.
pub fn engine_config(q: Quorum, handoff: HandoffLimits) -> EngineConfig {
    EngineConfig {
        n: q.n,
        r: q.r,
        w: q.w,
        request_timeout: Duration::from_secs(1),
        rpc_timeout: Duration::from_millis(300),
        read_repair_window: Duration::from_millis(50),
        gossip_interval: Duration::from_secs(1),
        probe_interval: Duration::from_millis(500),
        probe_timeout: Duration::from_millis(300),
        handoff_interval: Duration::from_millis(500),
        handoff_batch: handoff.batch,
        max_hints_per_target: handoff.max_hints,
        hint_ttl: handoff.ttl,
        max_value_bytes: 64 << 10,
        max_object_bytes: 1 << 20,
        ..EngineConfig::default()
    }
}

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

/// A scripted partition that cuts some nodes off from the rest for a long while, on top
/// of the random faults (for the hinted-handoff scenario).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedPartition {
    /// The nodes (by index) on one side.
    pub side: BTreeSet<usize>,
    /// Only messages leaving `side` are lost.
    pub one_way: bool,
    /// When it starts, from the beginning of the run.
    pub start: Duration,
    /// How long it lasts.
    pub length: Duration,
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
    /// An extra partition scripted on top of the random faults.
    pub scripted_partition: Option<ScriptedPartition>,
    /// Keep the event log's lines (the digest is computed either way).
    pub keep_log: bool,
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
            scripted_partition: None,
            keep_log: false,
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
    /// Hinted-handoff limits.
    pub handoff: HandoffLimits,
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
        let handoff = cfg.handoff.unwrap_or_else(|| HandoffLimits::draw(rng));
        Setup {
            nodes,
            quorum,
            faults,
            storage_timing,
            handoff,
        }
    }

    /// Whether read-your-writes must hold: no faults and R + W > N.
    pub fn read_your_writes(&self, cfg: &SimConfig) -> bool {
        !self.faults.any()
            && cfg.scripted_partition.is_none()
            && !cfg.vary_quorums
            && self.quorum.r + self.quorum.w > self.quorum.n
    }
}
