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
//!    flight and every hint is delivered; reads every key with R = N (which repairs the
//!    replicas), waits again, and then requires convergence and checks every invariant
//!    over the whole history and every replica's stored state
//!    ([`crate::checkers::check_final`]).
//!
//! # Storage timing
//!
//! Each run applies storage operations either when the engine issues them or when they
//! complete ([`StorageTiming`], drawn from the seed); completions arrive after a small
//! random delay, so they reorder (and, when applied at completion, so do the writes). A
//! node that crashes loses its pending completions; what was applied stays applied, as
//! an acknowledged RocksDB write survives a killed process.
//!
//! # RPCs
//!
//! Every `Command::Send` gets exactly one `handle_response`: the peer's response, or
//! `SendError::Timeout` at the send's timeout (request or response lost, slow, or cut by a
//! partition), or `SendError::Unreachable` after a short delay when the target is down.
//! A duplicated request is processed twice; its second response is ignored. A forwarded
//! client request's answer (`Response::Client`) reaches the forwarding node as
//! `PeerResponse::Client`, the form the engine's forwarding expects.

mod client;
mod config;
mod counters;
mod dispatch;
mod event;
mod log;
mod network;
mod node;
mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shoal_proto::{EngineConfig, StorageOp, StorageReply, Time};
use shoal_ring::{Member, NodeId, Ring, RingError};

pub use config::{
    engine_config, FaultMix, Faults, HandoffLimits, Quorum, ScriptedPartition, Setup, SimConfig,
    StorageTiming, CLIENT_TIMEOUT, EPOCH, PARTITIONS,
};
pub use node::StartError;
pub use report::{replay_command, FaultCounts, RunFailure, RunReport};

use crate::checkers::{self, FinalState, KeyState, ReplicaCopy, Violation};
use crate::history::History;
use client::Client;
use config::{MAX_EVENTS, MAX_QUEUED_EVENTS, MAX_QUIESCE_TIME, MAX_SAFETY_TIME};
use event::{Event, EventQueue};
use log::EventLog;
use network::Network;
use node::SimNode;

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
    let mut report = metrics::with_local_recorder(&recorder, || Sim::new(cfg)?.run())?;
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
    ring: Ring,
    addresses: Vec<(NodeId, SocketAddr)>,
    index: BTreeMap<NodeId, usize>,
    nodes: Vec<SimNode>,
    net: Network,
    clients: Vec<Client>,
    keys: Vec<String>,
    history: History,
    log: EventLog,
    faults: FaultCounts,
    phase: Phase,
    ops_issued: usize,
    ryw: bool,
    violations: Vec<Violation>,
    events: u64,
}

/// Most violations a run keeps (the first ones are the interesting ones).
const MAX_VIOLATIONS: usize = 100;

impl Sim {
    fn new(cfg: &SimConfig) -> Result<Sim, SimError> {
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
        let q = setup.quorum;
        let engine_cfg = engine_config(q, setup.handoff);
        engine_cfg
            .validate(setup.nodes)
            .map_err(|e| SimError::Config(e.to_string()))?;
        let ids: Vec<NodeId> = (0..setup.nodes)
            .map(|i| NodeId::new(format!("n{i}")))
            .collect::<Result<_, _>>()?;
        let ring = Ring::new(PARTITIONS, ids.iter().cloned().map(Member::new).collect())?;
        let addresses: Vec<(NodeId, SocketAddr)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), node::address(i)))
            .collect();
        let index = ids
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let keys = (0..cfg.keys)
            .map(|i| format!("k{i}"))
            .chain((0..cfg.set_keys).map(|i| format!("s{i}")))
            .collect();
        let ryw = setup.read_your_writes(cfg);
        Ok(Sim {
            net: Network::new(setup.faults),
            cfg: cfg.clone(),
            setup,
            engine_cfg,
            rng,
            now: EPOCH,
            queue: EventQueue::default(),
            ring,
            addresses,
            index,
            nodes: ids.into_iter().map(SimNode::new).collect(),
            // One more client than the workload's: the liveness phase's reader.
            clients: (0..=cfg.clients).map(|_| Client::default()).collect(),
            keys,
            history: History::new(),
            log: EventLog::new(cfg.keep_log),
            faults: FaultCounts::default(),
            phase: Phase::Safety,
            ops_issued: 0,
            ryw,
            violations: Vec::new(),
            events: 0,
        })
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
        if self.quiesce()? {
            self.final_reads()?;
            if !self.quiesce()? {
                self.liveness_failure("after the final reads");
            }
        } else {
            self.liveness_failure("after the faults stopped");
        }
        let state = self.final_state();
        let found = checkers::check_final(&self.history, &state, self.ryw);
        self.add_violations(found);
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
        for i in 0..self.nodes.len() {
            self.start_node(i)?;
        }
        for c in 0..self.cfg.clients {
            let at = self.now + client::think_time(&mut self.rng);
            self.queue.push(at, Event::ClientWake { client: c });
        }
        if self.setup.faults.crash > 0.0 || self.setup.faults.partition > 0.0 {
            self.queue
                .push(self.now + config::FAULT_TICK, Event::FaultTick);
        }
        if let Some(p) = self.cfg.scripted_partition.clone() {
            self.queue.push(
                EPOCH + p.start,
                Event::Partition {
                    side: p.side,
                    one_way: p.one_way,
                    length: p.length,
                },
            );
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
        Ok(())
    }

    fn safety_done(&self) -> bool {
        self.ops_issued >= self.cfg.ops && self.clients.iter().all(|c| c.current.is_none())
    }

    /// Remove every fault: clean network, partitions healed, crashed nodes restarted.
    fn begin_liveness(&mut self) -> Result<(), SimError> {
        self.phase = Phase::Liveness;
        self.net.faults = Faults::NONE;
        self.net.partition = None;
        self.log
            .line(self.now, "sim", "liveness: faults off, partitions healed");
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_up() {
                self.start_node(i)?;
                self.faults.restarts += 1;
            }
        }
        Ok(())
    }

    /// Let time pass until the cluster is quiet (see [`Sim::quiet`]); `false` if it is
    /// not within the bound.
    fn quiesce(&mut self) -> Result<bool, SimError> {
        let deadline = self.now + MAX_QUIESCE_TIME;
        loop {
            let until = self.now + Duration::from_millis(100);
            self.step_until(until)?;
            if self.quiet() {
                // Let the last read repairs and acknowledgements land.
                let until = self.now + self.engine_cfg.request_timeout;
                self.step_until(until)?;
                return Ok(true);
            }
            if self.now >= deadline {
                return Ok(false);
            }
        }
    }

    /// Every node up and seeing every peer up, nothing coordinated in flight, no client
    /// operation pending, and no hints stored anywhere.
    fn quiet(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none())
            && self.nodes.iter().all(|n| {
                let Some(r) = &n.running else { return false };
                r.engine.inflight() == 0
                    && r.engine
                        .membership()
                        .iter()
                        .all(|(id, _)| r.engine.membership().is_up(id))
                    && hint_count(r) == 0
            })
    }

    fn liveness_failure(&mut self, when: &str) {
        let mut why = Vec::new();
        for n in &self.nodes {
            let Some(r) = &n.running else {
                why.push(format!("{} is down", n.id));
                continue;
            };
            let down: Vec<String> = r
                .engine
                .membership()
                .iter()
                .filter(|(id, _)| !r.engine.membership().is_up(id))
                .map(|(id, _)| id.to_string())
                .collect();
            if !down.is_empty() {
                why.push(format!("{} sees {down:?} down", n.id));
            }
            if r.engine.inflight() > 0 {
                why.push(format!(
                    "{} has {} requests in flight",
                    n.id,
                    r.engine.inflight()
                ));
            }
            let hints = hint_count(r);
            if hints > 0 {
                why.push(format!("{} holds {hints} hints", n.id));
            }
        }
        let busy = self.clients.iter().filter(|c| c.current.is_some()).count();
        if busy > 0 {
            why.push(format!("{busy} client operations pending"));
        }
        self.add_violations(vec![Violation::new(
            "liveness",
            "*",
            format!(
                "the cluster did not become quiet within {MAX_QUIESCE_TIME:?} {when}: {}",
                why.join("; ")
            ),
        )]);
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
                        match r.executor.execute(StorageOp::Read {
                            partition,
                            key: key.as_bytes().to_vec(),
                        }) {
                            Ok(StorageReply::Object(o)) => o,
                            _ => None,
                        }
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
        state
    }

    fn report(mut self, state: FinalState, safety_duration: Duration) -> RunReport {
        let mut ops = BTreeMap::new();
        for op in self
            .history
            .ops
            .iter()
            .filter(|o| o.client < self.cfg.clients)
        {
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
            events: self.events,
            duration: self.now.saturating_since(EPOCH),
            safety_duration,
            digest: self.log.digest(),
            log: self.log.take_lines(),
            violations: self.violations,
            history: self.history,
            final_state: state,
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
