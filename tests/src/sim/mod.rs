//! The deterministic simulator: K nodes of the real [`shoal_proto::Engine`] and the real
//! storage executor of `shoal-node` on in-memory storage, in one thread, on a virtual
//! clock, over a simulated network that drops, delays, duplicates, reorders and
//! partitions, with nodes that crash and restart from their storage.
//!
//! One seed decides everything: [`run`] seeds one `ChaCha8Rng` with it and draws every
//! random choice from it — the cluster size, quorums and fault mix (unless fixed by the
//! [`SimConfig`]), each engine's seed and each node's actor id, every delay, drop,
//! crash and client operation. Nothing iterates a hash map, reads a clock or spawns a
//! thread, so the same seed gives the same event log, byte for byte.
//!
//! A run has two phases:
//!
//! 1. **Safety**: concurrent clients run a workload (puts, gets and deletes with and
//!    without contexts, and add-only sets built by read-modify-write) while faults are
//!    injected. Reads are checked as they complete ([`crate::checkers::check_completed`]).
//! 2. **Liveness**: every fault is removed (partitions healed, crashed nodes restarted, a
//!    clean network); the run waits until every node sees every peer up, nothing is in
//!    flight and every hint is delivered or expired. Then, per [`Liveness`]:
//!    - [`Liveness::ReadRepair`]: it reads every key with R = N (which repairs the
//!      replicas) and waits again; where tombstones are reaped within the run, a key
//!      whose reapable tombstone some primaries hold and others do not (a reap that
//!      missed a replica, or a copy read before a reap and written after it) is left
//!      to reaping and anti-entropy to finish, within bounded virtual time;
//!    - [`Liveness::AntiEntropyOnly`]: no client touches the workload's keys (at most a
//!      canary reads keys nothing writes); virtual time passes (a few anti-entropy
//!      intervals, and long enough for the run's tombstones to be reaped) until
//!      anti-entropy alone has made every partition's Merkle roots equal on all its
//!      primaries, with nothing in flight.
//!
//!    It then requires convergence (equal objects and Merkle trees on every primary, no
//!    hints) and checks every invariant over the whole history and every replica's stored
//!    state ([`crate::checkers::check_final`]).
//!
//! Tests can script partitions, crashes, pauses (a node stopped, not crashed: every event
//! it would handle waits until it resumes) and client operations at fixed instants
//! ([`scenario`]), add a burst of foreground load, make storage a queue, and read the
//! run's anti-entropy [`Timeline`].
//!
//! # Storage timing
//!
//! Each run applies storage operations either when the engine issues them or when they
//! complete ([`StorageTiming`], drawn from the seed); completions arrive after a small
//! random delay, so they reorder (and, when applied at completion, so do the writes). A
//! node that crashes loses its pending completions; what was applied stays applied, as
//! an acknowledged RocksDB write survives a killed process.
//!
//! # Clocks
//!
//! Every engine input carries [`shoal_proto::Now`]: the virtual clock as both
//! monotonic time (timers, failure detection) and wall-clock time ([`Sim::clocks`]).
//! The run records every change of a node's failure-detector verdict
//! ([`RunReport::member_changes`]).
//! # Power cuts
//!
//! Half of the runs with faults drawn from the seed (all of them with
//! [`PowerCutMix::FromSeed`] `{ share: 1.0 }`, `sim --power-cuts`) also cut nodes'
//! power: storage writes become durable only at each node's periodic sync, and a cut
//! loses a random suffix of the rest, never a write's last stored copy (`power.rs`).
//! These draws come from a stream of the seed's RNG of their own, so a run without cuts
//! draws nothing more from the main stream than it did before cuts were modelled.
//!
//! # RPCs
//!
//! Every `Command::Send` gets exactly one `handle_response`: the peer's response, or
//! `SendError::Timeout` at the send's timeout (request or response lost, slow, or cut by a
//! partition), or `SendError::Unreachable` after a short delay when the target is down,
//! or `SendError::Lost` when the target crashes with the request in flight (it may have
//! acted on it). A duplicated request is processed twice; its second response is ignored. A forwarded
//! client request's answer (`Response::Client`) reaches the forwarding node as
//! `PeerResponse::Client`, the form the engine's forwarding expects.
//!
//! Frames are as large as the engine's limits allow (`limits.max_frame_bytes()`), as on a
//! node: a request over it fails as `SendError::Lost` (the transport refuses it and the
//! driver cannot tell that from a lost stream), a response over it is replaced by the
//! `ResponseTooLarge` error the node's handler sends instead (`wire::fit_response`).
//! [`FaultCounts::frames_too_large`] counts the oversized ones, and a run with any fails
//! (the `frame_limit` violation): the engine must size every message to fit. With
//! [`SimConfig::large_values`] puts carry values of megabytes under the node's own
//! limits (16 MiB objects).

mod client;
mod clock;
mod config;
mod copies;
mod counters;
mod dispatch;
mod event;
pub mod layout;
mod liveness;
mod log;
mod network;
mod node;
pub mod operator;
mod power;
mod report;
pub mod scenario;
mod timeline;
mod versions;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shoal_proto::session::SessionState;
use shoal_proto::{EngineConfig, StorageOp, StorageReply, Time};
use shoal_ring::{Member, NodeId, Ring, RingError};

pub use config::{
    engine_config, Background, FaultMix, Faults, HandoffLimits, LargeValues, Liveness, PowerCutMix,
    PowerCuts, Quorum, SessionMode, Setup, SimConfig, StorageTiming,
    ANTI_ENTROPY_CONVERGENCE_INTERVALS, ANTI_ENTROPY_MIN_INTERVALS, CLIENT_TIMEOUT, EPOCH,
    PARTITIONS, SIM_DIRECT_READS,
};
pub use counters::counter_key;
pub use node::StartError;
pub use report::{replay_command, FaultCounts, MemberChange, RunFailure, RunReport};
pub use scenario::{
    replicas_of, Burst, ScriptedAction, ScriptedCrash, ScriptedOp, ScriptedPartition,
    ScriptedPause, ScriptedRestore,
};
pub use timeline::{NodeSample, Sample, Timeline, SAMPLE_INTERVAL};

use crate::checkers::{self, FinalState, KeyState, ReplicaCopy, TreeCopy, Violation};
use crate::history::{History, Sessions};
use client::Client;
use config::{MAX_EVENTS, MAX_QUEUED_EVENTS, MAX_SAFETY_TIME};
use counters::CounterReader;
use event::{Event, EventQueue};
use log::EventLog;
use network::Network;
use node::SimNode;
use power::PowerState;

/// Why a run could not be carried out at all (as opposed to a run that broke an
/// invariant, which is a [`RunReport`] with violations).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration cannot be simulated.
    #[error("invalid simulation config: {0}")]
    Config(String),
    /// The ring could not be built.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// A node could not start.
    #[error("node {node} could not start: {source}")]
    Start {
        /// The node.
        node: String,
        /// Why.
        source: StartError,
    },
    /// A bound on the run's size was reached (a livelock or a runaway queue).
    #[error("seed {seed}: {what}")]
    Bound {
        /// The seed.
        seed: u64,
        /// Which bound.
        what: String,
    },
}

/// Run one simulation. Returns the report, with any violations in it; see
/// [`RunReport::check`].
pub fn run(cfg: &SimConfig) -> Result<RunReport, SimError> {
    let recorder = counters::CountingRecorder::default();
    let reader = recorder.reader();
    let mut report = metrics::with_local_recorder(&recorder, || Sim::new(cfg, reader)?.run())?;
    report.counters = recorder.snapshot();
    Ok(report)
}

/// The phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness,
}

/// The simulated world.
pub(crate) struct Sim {
    cfg: SimConfig,
    setup: Setup,
    engine_cfg: EngineConfig,
    rng: ChaCha8Rng,
    now: Time,
    queue: EventQueue,
    /// The current layout version's ring (updated by scripted layout changes).
    ring: Ring,
    /// Every layout version decided so far (never pruned; trackers untouched): what a
    /// node starting or restarting learns.
    decided: shoal_proto::layout::LayoutHistory,
    index: BTreeMap<NodeId, usize>,
    nodes: Vec<SimNode>,
    net: Network,
    clients: Vec<Client>,
    keys: Vec<String>,
    history: History,
    log: EventLog,
    faults: FaultCounts,
    /// Keys the liveness phase found partly reaped after the final reads (see
    /// `Sim::finish_partly_reaped`).
    partly_reaped: usize,
    /// Direct reads answered by the copy that included the others (`judge_copies`).
    superseding_reads: u64,
    phase: Phase,
    ops_issued: usize,
    ryw: bool,
    violations: Vec<Violation>,
    events: u64,
    /// Scripted client operations started so far.
    scripted_issued: usize,
    /// Reads the engines' counters while the run goes on.
    counters: CounterReader,
    timeline: Timeline,
    next_sample: Time,
    member_changes: Vec<MemberChange>,
    /// Each node's wall clock (what its engine is handed as `now`).
    clocks: clock::Clocks,
    /// Power cuts: their RNG stream and the nodes' sync schedules.
    power: PowerState,
    /// The operators of layout changes through the agreement.
    operators: Vec<operator::Operator>,
    /// Every layout version any node held (the "one layout per version" checker).
    versions: versions::Versions,
    /// The operators' counts.
    layout_stats: operator::LayoutStats,
    /// Every partition drop a node carried out: the node, the partition, when.
    drops: Vec<(String, shoal_ring::PartitionId, Time)>,
    /// Which nodes stored each dot, and which lost it to a power cut or a drop.
    copies: copies::Copies,
}

/// Most violations a run keeps (the first ones are the interesting ones).
const MAX_VIOLATIONS: usize = 100;

impl Sim {
    fn new(cfg: &SimConfig, counters: CounterReader) -> Result<Sim, SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let setup = Setup::draw(cfg, &mut rng);
        if !(3..=7).contains(&setup.nodes) {
            return Err(SimError::Config(format!(
                "nodes must be 3 to 7, got {}",
                setup.nodes
            )));
        }
        if cfg.clients == 0 || cfg.keys + cfg.set_keys == 0 {
            return Err(SimError::Config(
                "at least one client and one key are needed".into(),
            ));
        }
        if !(0.0..=0.6).contains(&cfg.delete_fraction) {
            return Err(SimError::Config(format!(
                "delete_fraction must be in 0..=0.6, got {}",
                cfg.delete_fraction
            )));
        }
        if cfg.min_safety_time >= MAX_SAFETY_TIME {
            return Err(SimError::Config(format!(
                "min_safety_time must be under {MAX_SAFETY_TIME:?}"
            )));
        }
        let scripted_nodes = cfg
            .scripted_partitions
            .iter()
            .flat_map(|p| p.side.iter().copied())
            .chain(cfg.scripted_crashes.iter().map(|c| c.node))
            .chain(cfg.scripted_pauses.iter().map(|p| p.node))
            .chain(cfg.scripted_restores.iter().map(|r| r.node))
            .chain(cfg.scripted_power_cuts.iter().map(|c| c.node))
            .chain(cfg.scripted_ops.iter().map(|o| o.node));
        if let Some(bad) = scripted_nodes.filter(|&i| i >= setup.nodes).max() {
            return Err(SimError::Config(format!(
                "a scripted event names node {bad} of a {}-node cluster",
                setup.nodes
            )));
        }
        if cfg
            .scripted_restores
            .iter()
            .any(|r| r.restore_at <= r.backup_at)
        {
            return Err(SimError::Config(
                "a scripted restore must come after its backup".into(),
            ));
        }
        if !cfg.scripted_power_cuts.is_empty() && !setup.power_cuts.tracked() {
            return Err(SimError::Config(
                "scripted power cuts need a sync interval (PowerCutMix::Fixed)".into(),
            ));
        }
        let q = setup.quorum;
        let mut engine_cfg = engine_config(q, setup.handoff, &setup.background);
        if let Some(max) = cfg.max_siblings {
            let limits = &mut engine_cfg.limits;
            limits.max_siblings = max;
            limits.sibling_warn = limits.sibling_warn.min(max);
        }
        engine_cfg.replication.max_clock_skew = setup.clock_skew;
        // Spare nodes (joiners) get clocks and power schedules like members.
        let hosted = setup.nodes + cfg.spare_nodes;
        layout::validate(cfg, setup.nodes)?;
        let clocks = if cfg.clock_offsets_ms.is_empty() {
            clock::Clocks::draw(cfg.seed, hosted, setup.clock_skew)
        } else {
            clock::Clocks::fixed(&cfg.clock_offsets_ms, hosted)
        };
        if let Some(large) = cfg.large_values {
            engine_cfg.limits = large.limits();
        }
        engine_cfg
            .validate(setup.nodes)
            .map_err(|e| SimError::Config(e.to_string()))?;
        let ids: Vec<NodeId> = (0..hosted)
            .map(|i| NodeId::new(format!("n{i}")))
            .collect::<Result<_, _>>()?;
        let members_count = setup.nodes;
        let members = &ids[..members_count];
        let ring = Ring::new(
            PARTITIONS,
            members.iter().cloned().map(Member::new).collect(),
        )?;
        let addresses: Vec<(NodeId, SocketAddr)> = members
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), node::address(i)))
            .collect();
        // Version 1 as `Engine::new` builds it from the member list.
        let decided = shoal_proto::layout::LayoutHistory::new(
            shoal_proto::layout::Layout::from_ring(
                shoal_proto::layout::ClusterSettings::derived(PARTITIONS, q.n, members),
                ring.clone(),
                &addresses,
            )
            .map_err(|e| SimError::Config(e.to_string()))?,
        );
        let index = ids
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let burst_keys = cfg.burst.as_ref().map(|b| b.keys).unwrap_or(0);
        let keys: Vec<String> = (0..cfg.keys)
            .map(|i| format!("k{i}"))
            .chain((0..cfg.set_keys).map(|i| format!("s{i}")))
            .chain((0..burst_keys).map(scenario::Burst::key))
            .collect();
        if let Some(bad) = cfg.scripted_ops.iter().find(|o| !keys.contains(&o.key)) {
            return Err(SimError::Config(format!(
                "scripted operation on {:?}, which is not one of the run's keys",
                bad.key
            )));
        }
        let burst_clients = cfg.burst.as_ref().map(|b| b.clients).unwrap_or(0);
        let ryw = setup.read_your_writes(cfg);
        let power = PowerState::new(cfg.seed, setup.power_cuts, hosted);
        let track_syncs = setup.power_cuts.tracked();
        Ok(Sim {
            net: Network::new(setup.faults),
            cfg: cfg.clone(),
            setup,
            engine_cfg,
            rng,
            now: EPOCH,
            queue: EventQueue::default(),
            ring,
            decided,
            index,
            nodes: ids
                .into_iter()
                .enumerate()
                .map(|(i, id)| {
                    let mut node = SimNode::new(id, track_syncs);
                    node.dormant = i >= members_count;
                    node
                })
                .collect(),
            // After the workload's clients: the liveness phase's reader, the scripted
            // client, then the burst's clients.
            clients: (0..cfg.clients + 2 + burst_clients)
                .map(|c| Client {
                    session: (c < cfg.clients && cfg.sessions != SessionMode::Off)
                        .then(SessionState::default),
                    ..Client::default()
                })
                .collect(),
            keys,
            history: History {
                sessions: Sessions {
                    clients: (0..cfg.clients)
                        .filter(|_| cfg.sessions != SessionMode::Off)
                        .collect(),
                    ..Sessions::default()
                },
                ..History::new()
            },
            log: EventLog::new(cfg.keep_log),
            faults: FaultCounts::default(),
            partly_reaped: 0,
            superseding_reads: 0,
            phase: Phase::Safety,
            ops_issued: 0,
            ryw,
            violations: Vec::new(),
            events: 0,
            scripted_issued: 0,
            counters,
            timeline: Timeline::default(),
            next_sample: EPOCH,
            member_changes: Vec::new(),
            clocks,
            power,
            operators: Vec::new(),
            versions: versions::Versions::default(),
            layout_stats: operator::LayoutStats::default(),
            drops: Vec::new(),
            copies: copies::Copies::default(),
        })
    }

    /// The client that reads every key in the [`Liveness::ReadRepair`] phase (or the
    /// canary keys in the [`Liveness::AntiEntropyOnly`] one).
    fn reader(&self) -> usize {
        self.cfg.clients
    }

    /// The client that runs the scripted operations.
    fn scripted_client(&self) -> usize {
        self.cfg.clients + 1
    }

    /// Whether client `c` is one of the burst's.
    fn is_burst_client(&self, c: usize) -> bool {
        c >= self.cfg.clients + 2
    }

    /// When the burst ends, if there is one.
    fn burst_end(&self) -> Option<Time> {
        self.cfg.burst.as_ref().map(|b| EPOCH + b.start + b.length)
    }

    fn run(mut self) -> Result<RunReport, SimError> {
        self.boot()?;
        let deadline = EPOCH + MAX_SAFETY_TIME;
        while !self.safety_done() && self.now < deadline {
            let until = self.now + Duration::from_millis(100);
            self.step_until(until)?;
        }
        let safety_duration = self.now.saturating_since(EPOCH);
        self.begin_liveness()?;
        match self.cfg.liveness {
            Liveness::ReadRepair => self.read_repair_liveness()?,
            Liveness::AntiEntropyOnly { canary_reads } => {
                self.anti_entropy_liveness(canary_reads)?
            }
        }
        let state = self.final_state();
        if !self.cfg.layout_changes.is_empty() {
            self.layout_stats.stranded = self.forget_stranded_writes(&state) as u64;
        }
        let mut found = checkers::check_final(&self.history, &state, self.ryw);
        if !self.cfg.layout_changes.is_empty() {
            found.extend(self.check_dropped());
            found.extend(self.check_commits());
        }
        // A duplicated request can be applied by one copy and refused by the other, and
        // its client hears one of the answers: a refusal then describes an attempt, not
        // the request. The real transport never delivers a request twice.
        if self.setup.faults.duplicate == 0.0 {
            found.extend(checkers::refused_writes::check(&self.history, &state));
        }
        self.add_violations(found);
        // A message over the frame limit is one the transport would not carry: the engine
        // must size every message to fit (anti-entropy batches are cut by bytes).
        if self.faults.frames_too_large > 0 {
            let detail = format!(
                "{} messages exceeded the frame limit of {} bytes (log lines TOO LARGE)",
                self.faults.frames_too_large,
                self.engine_cfg.limits.max_frame_bytes()
            );
            self.add_violations(vec![Violation::new("frame_limit", "*", detail)]);
        }
        Ok(self.report(state, safety_duration))
    }

    /// Start every node and client, and the fault injector.
    fn boot(&mut self) -> Result<(), SimError> {
        let line = format!(
            "boot seed={} nodes={} n/r/w={}/{}/{} storage {:?} {:?} faults: {}",
            self.cfg.seed,
            self.setup.nodes,
            self.setup.quorum.n,
            self.setup.quorum.r,
            self.setup.quorum.w,
            self.setup.storage_timing,
            self.setup.handoff,
            self.setup.faults
        );
        self.log.line(self.now, "sim", &line);
        // Runs with the engine's own background settings log exactly what they always
        // did, so that their digests stay comparable.
        if self.setup.background != Background::engine_defaults()
            || self.setup.liveness != Liveness::ReadRepair
        {
            let line = format!(
                "background: {}; liveness {:?}",
                self.setup.background, self.setup.liveness
            );
            self.log.line(self.now, "sim", &line);
        }
        if self.clocks.skewed() {
            let offsets: Vec<String> = (0..self.nodes.len())
                .map(|i| format!("n{i} {:+}ms", self.clocks.offset(i, self.now) / 1000))
                .collect();
            let line = format!(
                "clocks: skew at most {:?}; offsets {}",
                self.setup.clock_skew,
                offsets.join(", ")
            );
            self.log.line(self.now, "sim", &line);
        }
        // Runs without power cuts log what they always did.
        if self.setup.power_cuts.tracked() {
            let line = format!("power cuts: {}", self.setup.power_cuts);
            self.log.line(self.now, "sim", &line);
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].dormant {
                self.start_node(i)?;
            }
        }
        self.sync_all();
        for c in 0..self.cfg.clients {
            let at = self.now + client::think_time(&mut self.rng);
            self.queue.push(at, Event::ClientWake { client: c });
        }
        if self.setup.faults.crash > 0.0
            || self.setup.faults.partition > 0.0
            || self.setup.power_cuts.per_tick > 0.0
        {
            self.queue
                .push(self.now + config::FAULT_TICK, Event::FaultTick);
        }
        for p in self.cfg.scripted_partitions.clone() {
            self.queue.push(
                EPOCH + p.start,
                Event::Partition {
                    side: p.side,
                    one_way: p.one_way,
                    length: p.length,
                },
            );
        }
        for c in self.cfg.scripted_crashes.clone() {
            self.queue.push(
                EPOCH + c.at,
                Event::Crash {
                    node: c.node,
                    length: c.length,
                },
            );
        }
        for r in self.cfg.scripted_restores.clone() {
            self.queue
                .push(EPOCH + r.backup_at, Event::Backup { node: r.node });
            self.queue
                .push(EPOCH + r.restore_at, Event::Restore { node: r.node });
        }
        for p in self.cfg.scripted_pauses.clone() {
            self.queue.push(
                EPOCH + p.at,
                Event::Pause {
                    node: p.node,
                    length: p.length,
                },
            );
        }
        for c in self.cfg.scripted_power_cuts.clone() {
            self.queue.push(
                EPOCH + c.at,
                Event::PowerCut {
                    node: c.node,
                    length: c.length,
                },
            );
        }
        for (index, c) in self.cfg.layout_changes.iter().enumerate() {
            self.queue.push(EPOCH + c.at, Event::LayoutChange { index });
        }
        for (index, op) in self.cfg.scripted_ops.iter().enumerate() {
            self.queue.push(EPOCH + op.at, Event::ScriptedOp { index });
        }
        if let Some(b) = &self.cfg.burst {
            let first = self.cfg.clients + 2;
            for (i, c) in (first..first + b.clients).enumerate() {
                // Spread the burst's first operations over its first milliseconds.
                let at = EPOCH + b.start + Duration::from_micros(100 * i as u64);
                self.queue.push(at, Event::ClientWake { client: c });
            }
        }
        Ok(())
    }

    /// Process every event due up to `until`, then move the clock there.
    fn step_until(&mut self, until: Time) -> Result<(), SimError> {
        while let Some((at, event)) = self.queue.pop_until(until) {
            self.now = self.now.max(at);
            self.events += 1;
            if self.events > MAX_EVENTS {
                return Err(SimError::Bound {
                    seed: self.cfg.seed,
                    what: format!("more than {MAX_EVENTS} events"),
                });
            }
            self.handle(event)?;
            if self.queue.len() > MAX_QUEUED_EVENTS {
                return Err(SimError::Bound {
                    seed: self.cfg.seed,
                    what: format!("more than {MAX_QUEUED_EVENTS} queued events"),
                });
            }
        }
        self.now = self.now.max(until);
        self.sample_if_due();
        Ok(())
    }

    /// The workload and the scripted operations are done and answered, the burst is
    /// over, and the safety phase has lasted its minimum.
    fn safety_done(&self) -> bool {
        self.ops_issued >= self.cfg.ops
            && self.scripted_issued >= self.cfg.scripted_ops.len()
            && self.clients.iter().all(|c| c.current.is_none())
            && self.now >= EPOCH + self.cfg.min_safety_time
            && self.burst_end().is_none_or(|end| self.now >= end)
            && self.layout_changes_done()
    }

    fn add_violations(&mut self, found: Vec<Violation>) {
        for v in found {
            // The final check sees again what the checks during the run saw.
            if self.violations.len() < MAX_VIOLATIONS && !self.violations.contains(&v) {
                self.log.line(self.now, "chk", &format!("VIOLATION {v}"));
                self.violations.push(v);
            }
        }
    }

    /// Every node's copy of every key, and its hints.
    fn final_state(&self) -> FinalState {
        let mut state = FinalState::default();
        let n = usize::from(self.setup.quorum.n);
        for key in &self.keys {
            let partition = self.ring.partition_of(key.as_bytes());
            let primaries = self.ring.preference_list(partition, n).nodes;
            let mut order: Vec<usize> = primaries
                .iter()
                .filter_map(|p| self.index.get(p).copied())
                .collect();
            let others: Vec<usize> = (0..self.nodes.len())
                .filter(|i| !order.contains(i))
                .collect();
            order.extend(others);
            let replicas = order
                .into_iter()
                .map(|i| {
                    let node = &self.nodes[i];
                    let object = node.running.as_ref().and_then(|r| {
                        r.executor
                            .stored_object(partition, key.as_bytes())
                            .ok()
                            .flatten()
                    });
                    ReplicaCopy {
                        node: node.id.to_string(),
                        primary: primaries.contains(&node.id),
                        object,
                    }
                })
                .collect();
            state.keys.insert(key.clone(), KeyState { replicas });
        }
        for node in &self.nodes {
            let count = node.running.as_ref().map(hint_count).unwrap_or(0);
            state.pending_hints.insert(node.id.to_string(), count);
        }
        for p in self.ring.partitions() {
            let trees = self
                .ring
                .preference_list(p, n)
                .nodes
                .iter()
                .filter_map(|id| self.index.get(id).map(|&i| &self.nodes[i]))
                .filter_map(|node| {
                    let (root, keys) = node.running.as_ref()?.executor.tree_summary(p);
                    Some(TreeCopy {
                        node: node.id.to_string(),
                        root,
                        keys,
                    })
                })
                .collect();
            state.trees.insert(p.0, trees);
        }
        for node in &self.nodes {
            let Some(r) = &node.running else { continue };
            match r.executor.verify_trees() {
                Ok(mismatches) => state
                    .tree_mismatches
                    .extend(mismatches.into_iter().map(|m| {
                        format!(
                            "node {} partition {}: incremental root {:016x}, rebuilt {:016x}",
                            node.id, m.partition, m.incremental_root, m.rebuilt_root
                        )
                    })),
                Err(e) => state.tree_mismatches.push(format!(
                    "node {}: trees could not be verified: {e}",
                    node.id
                )),
            }
        }
        state
    }

    fn report(mut self, state: FinalState, safety_duration: Duration) -> RunReport {
        let mut ops = BTreeMap::new();
        let reader = self.reader();
        for op in self.history.ops.iter().filter(|o| o.client != reader) {
            *ops.entry((op.kind.name().to_owned(), op.outcome.name().to_owned()))
                .or_insert(0) += 1;
        }
        let keys_found = state
            .keys
            .values()
            .filter(|k| k.merged().is_found())
            .count();
        let line = format!(
            "end: {} violations, {} of {} keys found",
            self.violations.len(),
            keys_found,
            state.keys.len()
        );
        self.log.line(self.now, "sim", &line);
        RunReport {
            seed: self.cfg.seed,
            replay: replay_command(&self.cfg),
            setup: self.setup.clone(),
            faults: self.faults,
            ops,
            counters: BTreeMap::new(),
            keys: state.keys.len(),
            keys_found,
            keys_tombstoned: state
                .keys
                .values()
                .filter(|k| k.merged().is_tombstoned())
                .count(),
            partly_reaped: self.partly_reaped,
            superseding_reads: self.superseding_reads,
            events: self.events,
            duration: self.now.saturating_since(EPOCH),
            safety_duration,
            digest: self.log.digest(),
            log: self.log.take_lines(),
            violations: self.violations,
            history: self.history,
            final_state: state,
            timeline: self.timeline,
            member_changes: self.member_changes,
            layout: operator::LayoutStats {
                versions: self.versions.seen.keys().next_back().copied().unwrap_or(0),
                ..self.layout_stats
            },
        }
    }
}

/// Hints a running node stores, over all targets.
fn hint_count(r: &node::Running) -> u64 {
    match r.executor.execute(StorageOp::HintSummary) {
        Ok(StorageReply::HintSummary(totals)) => totals.iter().map(|(_, t)| t.count).sum(),
        _ => 0,
    }
}
