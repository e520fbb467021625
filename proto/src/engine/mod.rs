//! The replication engine: one node's coordinator, replica, handoff and membership logic
//! as a deterministic state machine.
//!
//! # Driving an engine
//!
//! The engine does no IO and reads no clock. Its driver (the tokio node, or the
//! simulator) feeds it inputs, each with the current time as a [`Now`]: wall-clock time
//! (stored in tombstones and hints) and monotonic time (every timer and the failure
//! detector; [`Engine::poll_timeout`] answers in it):
//!
//! - [`Engine::handle_request`]: a request arrived from a client or a peer;
//! - [`Engine::handle_response`]: the outcome of a [`Command::Send`];
//! - [`Engine::handle_storage`]: the outcome of a [`Command::Storage`];
//! - [`Engine::handle_timeout`]: the time given by [`Engine::poll_timeout`] has come.
//!
//! After each input the driver drains [`Engine::poll_command`] and carries the commands
//! out, in order: answer a request, send a node-to-node request, run a storage operation.
//! Every `Send` and `Storage` command gets exactly one matching input back (a failure or
//! timeout counts), so that no operation waits forever.

mod aae;
mod aae_peer;
mod cluster;
mod confirm;
mod direct;
mod forward;
mod handoff;
mod layout_sync;
mod meters;
mod placement;
mod quorum;
mod read;
mod reap;
mod replica;
mod restore;
mod write;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_ring::{NodeId, PartitionId, Ring};

use crate::config::{EngineConfig, MAX_KEY_BYTES};
use crate::error::RequestError;
use crate::layout::{ClusterSettings, Layout, LayoutHistory};
use crate::membership::{Membership, StateChange};
use crate::storage_ops::{HintTotals, StorageFailure, StorageOp, StorageReply, StorageResult};
use crate::time::{Monotonic, Now, Time};
use crate::wire::{
    ClientRequest, ClientResponse, ClusterInfo, MemberAddress, MemberState, MemberStatus,
    PeerRequest, PeerResponse, Request, Response, StatusReport, StorageHealth,
};

pub use aae::{AaeStats, AAE_SEGMENTS, AAE_SHAPE};
pub use direct::{get_reply, ReplicaReadGate, ReplicaReadGateKey};
pub use handoff::HandoffStats;
pub use layout_sync::{PersistedLayout, MAX_CANDIDATES, MAX_COMMIT_ROUNDS, MAX_HELLO_INTERVAL};
pub use placement::TransferStats;
pub use read::{MAX_UNSIZED_READS, RESERVE_SHARE, SMALL_READ_SHARE};
pub use reap::REAP_SENDS;
pub use replica::replica_merge_answer;
pub use write::many_siblings;

use aae::{Aae, AaePart, ExchangeId};
use reap::ReapPart;

use forward::ForwardOp;
use handoff::Handoff;
use read::ReadOp;
use write::WriteOp;

/// Names one request that arrived at this node (chosen by the driver, unique among the
/// requests it has not yet seen answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundId(pub u64);

/// Names one `Send` or `Storage` command of this engine (chosen by the engine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Who sent a request, as authenticated by the transport's certificate check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A client certificate with this name.
    Client(String),
    /// A node certificate with this id.
    Node(NodeId),
}

/// Why a `Send` produced no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The request certainly did not reach the peer's handler (no connection, TLS
    /// refused, refused before it was read): safe to send elsewhere.
    Unreachable(String),
    /// The request was sent but its connection or stream failed before an answer: the
    /// peer may have acted on it. A forwarded write that ends so is not sent to another
    /// coordinator (that could apply it twice, as two siblings).
    Lost(String),
    /// No response within the command's timeout.
    Timeout,
    /// The peer answered something that is not a valid response.
    Invalid(String),
}

impl SendError {
    /// The metric label of this error (the `result` of `shoal_peer_requests_total`).
    pub fn label(&self) -> &'static str {
        match self {
            SendError::Unreachable(_) => "unreachable",
            SendError::Lost(_) => "lost",
            SendError::Timeout => "timeout",
            SendError::Invalid(_) => "invalid",
        }
    }
}

/// What the engine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Answer the request `id`.
    Respond {
        /// The request being answered.
        id: InboundId,
        /// The answer.
        response: Response,
    },
    /// Send a request to a peer; feed the outcome back with [`Engine::handle_response`].
    Send {
        /// Echo this back.
        id: RequestId,
        /// The peer.
        to: NodeId,
        /// What to send.
        request: PeerRequest,
        /// Give up after this long and report [`SendError::Timeout`].
        timeout: Duration,
    },
    /// Run a storage operation; feed the outcome back with [`Engine::handle_storage`].
    Storage {
        /// Echo this back.
        id: RequestId,
        /// What to run.
        op: StorageOp,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Deadline(RequestId),
    RepairWindow(RequestId),
    Gossip,
    Probe,
    Handoff,
    Aae,
    AaeResume(ExchangeId),
    /// A candidate's next hello round.
    Hello,
    /// The deadline of a commit's Paxos round (the round's number).
    CommitRetry(u32),
    /// A read's speculative delay: ask one more replica if it is still waiting.
    Speculate(RequestId),
    /// Ask the peers again for their layout while it is not confirmed (`confirm.rs`).
    ConfirmLayout,
}

/// What a `Send` or `Storage` command is for.
#[derive(Clone, Debug)]
enum Waiter {
    WriteLocal(RequestId),
    WriteReplica {
        op: RequestId,
        slot: usize,
    },
    ReadLocal {
        op: RequestId,
        slot: usize,
    },
    ReadReplica {
        op: RequestId,
        slot: usize,
    },
    Forward(RequestId),
    /// A client's replica read (`direct.rs`).
    GetReplica(direct::ReplicaRead),
    Replica {
        inbound: InboundId,
        kind: replica::ReplicaKind,
    },
    Repair,
    LocalHint,
    Gossip,
    Probe,
    Status(InboundId),
    Handoff(handoff::HandoffStep),
    Aae {
        exchange: ExchangeId,
        part: AaePart,
    },
    Reap(ReapPart),
    AaeStatus(InboundId),
    /// A save of the layout state (`layout_sync.rs`).
    LayoutSave {
        why: layout_sync::LayoutSave,
        seq: u64,
    },
    /// A layout message to a peer.
    LayoutSend(layout_sync::LayoutSend),
    /// The tree summaries for a plan's bytes estimate.
    Plan {
        inbound: InboundId,
        report: Box<crate::wire::PlanReport>,
        copies: Vec<(PartitionId, u64)>,
    },
    /// The tree summaries for a status answer's bytes-left estimate.
    ClusterStatus(InboundId),
    /// A partition this node no longer holds in any kept layout version is deleted.
    DropPartition(PartitionId),
    /// This node's layout history pushed to a peer (`placement.rs`).
    LayoutPush,
    /// At start: which partitions it does not hold still have keys (`placement.rs`).
    LeftoverScan,
}

/// A pending `Send` or `Storage` command.
#[derive(Clone, Debug)]
struct Pending {
    to: Option<NodeId>,
    waiter: Waiter,
    /// For a storage op that changes a partition's data: the partition.
    writes: Option<PartitionId>,
}

/// One node's replication state machine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    me: NodeId,
    /// The layout versions in use (`crate::layout::LayoutHistory`); the current
    /// version's ring places keys.
    layout: LayoutHistory,
    membership: Membership,
    rng: ChaCha8Rng,
    next_id: u64,
    /// Wall-clock time of the latest input (never goes back).
    now: Time,
    /// Monotonic time of the latest input: timers and failure detection.
    mono: Monotonic,
    pending: BTreeMap<RequestId, Pending>,
    writes: BTreeMap<RequestId, WriteOp>,
    reads: BTreeMap<RequestId, ReadOp>,
    /// Bytes of replica copies the reads hold (see `read.rs`).
    read_bytes: usize,
    /// Bytes the small reads were charged when sized: the reserve's use (see `read.rs`).
    small_read_bytes: usize,
    /// Reads that asked the other replicas before knowing the object's size.
    unsized_reads: usize,
    forwards: BTreeMap<RequestId, ForwardOp>,
    /// `status` and `aae status` requests and clients' replica reads being answered:
    /// admitted against the same in-flight bound as data requests, so a flood of them is
    /// refused, not queued.
    admin: BTreeSet<InboundId>,
    timers: BTreeSet<(Monotonic, Timer)>,
    out: VecDeque<Command>,
    /// Probes in flight per peer (bounded by `probe_timeout / probe_interval + 1`).
    probing: BTreeMap<NodeId, u32>,
    handoff: Handoff,
    hint_totals: BTreeMap<NodeId, HintTotals>,
    aae: Aae,
    /// Partitions this node holds: a replica of in some kept layout version (see
    /// `placement.rs`; recomputed on every layout change).
    replica_partitions: Vec<PartitionId>,
    /// Partition transfers (syncs) of this node and partitions being dropped.
    placement: placement::Placement,
    /// Restore mode, while a node restored from a backup catches up (`restore.rs`).
    restore: Option<restore::Restore>,
    /// Layout agreement: Paxos, staged changes, candidates (`layout_sync.rs`).
    agree: layout_sync::Agreement,
    /// The per-request metrics' handles, resolved under the recorder the engine runs in.
    meters: meters::Meters,
}

/// Why an engine could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The local node is not in the ring.
    #[error("node {0} is not a member of the ring")]
    NotAMember(NodeId),
    /// A ring member has no address, or an address names a non-member.
    #[error("member addresses do not match the ring: {0}")]
    Addresses(String),
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl Engine {
    /// An engine for node `me` of `ring`, whose members listen at `addresses`: layout
    /// version 1 of a cluster with these members and settings derived from them
    /// ([`ClusterSettings::derived`]). `seed` decides every random choice (gossip
    /// peers); `now` is the start time.
    pub fn new(
        cfg: EngineConfig,
        me: NodeId,
        ring: Ring,
        addresses: Vec<(NodeId, SocketAddr)>,
        seed: u64,
        now: Now,
    ) -> Result<Engine, EngineError> {
        if let Some((id, _)) = addresses.iter().find(|(id, _)| ring.member(id).is_none()) {
            return Err(EngineError::Addresses(format!("{id} is not in the ring")));
        }
        let ids: Vec<NodeId> = ring.members().iter().map(|m| m.id.clone()).collect();
        let settings = ClusterSettings::derived(ring.partition_count(), cfg.replication.n, &ids);
        let layout = Layout::from_ring(settings, ring, &addresses)
            .map_err(|e| EngineError::Addresses(format!("{e}: it has no address")))?;
        Engine::with_layout(cfg, me, LayoutHistory::new(layout), seed, now)
    }

    /// An engine for node `me` serving from `layout` (as stored, or as learned from the
    /// cluster). `seed` decides every random choice; `now` is the start time.
    pub fn with_layout(
        cfg: EngineConfig,
        me: NodeId,
        layout: LayoutHistory,
        seed: u64,
        now: Now,
    ) -> Result<Engine, EngineError> {
        let ring = layout.current().ring();
        cfg.validate(ring.members().len())?;
        // A member in any state of a kept version (a leaving node restarted mid-change
        // still hands its partitions over).
        if !layout.versions().iter().any(|l| l.member(&me).is_some()) {
            return Err(EngineError::NotAMember(me));
        }
        let engine = Engine::build(cfg, me, layout, seed, now);
        engine.publish_layout_gauge();
        Ok(engine)
    }

    /// The engine, unchecked (see [`Engine::with_layout`] and [`Engine::candidate`]).
    fn build(cfg: EngineConfig, me: NodeId, layout: LayoutHistory, seed: u64, now: Now) -> Engine {
        let ring = layout.current().ring();
        let addresses: Vec<(NodeId, SocketAddr)> = layout
            .current()
            .owners()
            .map(|m| (m.id.clone(), m.addr))
            .collect();
        let membership = Membership::new(
            me.clone(),
            ring.version(),
            addresses,
            now.mono,
            &cfg.membership,
        );
        let replica_partitions: Vec<PartitionId> = layout
            .held_partitions(&me, usize::from(cfg.replication.n))
            .into_iter()
            .collect();
        let (keys_rate, bytes_rate) = (
            cfg.aae.repair_keys_per_second,
            cfg.aae.repair_bytes_per_second,
        );
        let mut engine = Engine {
            cfg,
            me,
            layout,
            membership,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_id: 1,
            now: now.wall,
            mono: now.mono,
            pending: BTreeMap::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_bytes: 0,
            small_read_bytes: 0,
            unsized_reads: 0,
            forwards: BTreeMap::new(),
            admin: BTreeSet::new(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            probing: BTreeMap::new(),
            handoff: Handoff::default(),
            hint_totals: BTreeMap::new(),
            aae: Aae::new(keys_rate, bytes_rate, now),
            replica_partitions,
            placement: placement::Placement::default(),
            restore: None,
            agree: layout_sync::Agreement::default(),
            meters: meters::Meters::new(),
        };
        // Spread the periodic work over its first interval so nodes started together
        // do not act in lock-step.
        let gossip_at = now.mono + engine.jitter(engine.cfg.membership.gossip_interval);
        let probe_at = now.mono + engine.jitter(engine.cfg.membership.probe_interval);
        let handoff_at = now.mono + engine.jitter(engine.cfg.handoff.interval);
        let aae_at = now.mono + engine.jitter(engine.cfg.aae.tick);
        engine.timers.insert((aae_at, Timer::Aae));
        engine.timers.insert((gossip_at, Timer::Gossip));
        engine.timers.insert((probe_at, Timer::Probe));
        engine.timers.insert((handoff_at, Timer::Handoff));
        engine.publish_member_gauges();
        metrics::gauge!(crate::metrics::LAYOUT_CONFIRMING).set(0.0);
        // A history with more than one version (a node restarted mid-change) resumes
        // its transfers and barriers. The transfer counters exist from the start.
        placement::register_metrics();
        engine.on_layout_changed();
        engine.scan_leftovers();
        // Every member's hint gauges exist from the start (at zero until hints are stored).
        let peers: Vec<NodeId> = engine.membership.peers().cloned().collect();
        for p in peers {
            metrics::gauge!(crate::metrics::HINTS_PENDING, "target" => p.to_string()).set(0.0);
            metrics::gauge!(crate::metrics::HINTS_PENDING_BYTES, "target" => p.to_string())
                .set(0.0);
            metrics::gauge!(crate::metrics::PEER_CONSECUTIVE_FAILURES, "peer" => p.to_string())
                .set(0.0);
        }
        engine
    }

    /// This node.
    pub fn id(&self) -> &NodeId {
        &self.me
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The ring in use: the current layout version's.
    pub fn ring(&self) -> &Ring {
        self.layout.current().ring()
    }

    /// The layout versions in use and the nodes' progress through them.
    pub fn layout(&self) -> &LayoutHistory {
        &self.layout
    }

    /// The membership view and failure detector.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Requests this node is coordinating or forwarding.
    pub fn inflight(&self) -> usize {
        self.writes.len() + self.reads.len() + self.forwards.len() + self.admin.len()
    }

    /// Commands not yet carried out plus operations waiting on them; zero when idle.
    pub fn pending_commands(&self) -> usize {
        self.pending.len()
    }

    /// Hint delivery statistics.
    pub fn handoff_stats(&self) -> HandoffStats {
        self.handoff.stats()
    }

    /// The hint totals per target as last read from storage.
    pub fn hint_totals(&self) -> &BTreeMap<NodeId, HintTotals> {
        &self.hint_totals
    }

    /// The next command to carry out.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    /// When [`Engine::handle_timeout`] should next be called, in monotonic time.
    pub fn poll_timeout(&self) -> Option<Monotonic> {
        self.timers.iter().next().map(|(t, _)| *t)
    }

    /// A request arrived.
    pub fn handle_request(&mut self, now: Now, id: InboundId, from: Sender, request: Request) {
        self.advance(now);
        match (request, from) {
            (Request::Client(req), _) => self.handle_client(id, req, false),
            (Request::Peer(_) | Request::Stamped(..), Sender::Client(name)) => {
                metrics::counter!(crate::metrics::REFUSED_REQUESTS_TOTAL, "reason" => "client_role_peer_message")
                    .increment(1);
                self.respond_error(
                    id,
                    RequestError::NotAllowed(format!(
                        "client certificate {name:?} may not send node-to-node messages"
                    )),
                )
            }
            (Request::Peer(req), Sender::Node(node)) => self.handle_node(id, node, None, req),
            (Request::Stamped(stamp, req), Sender::Node(node)) => {
                self.handle_node(id, node, Some(stamp), req)
            }
        }
    }

    /// A request from node `node`, with its layout stamp when it sent one (a node of a
    /// release before layouts does not).
    fn handle_node(
        &mut self,
        id: InboundId,
        node: NodeId,
        stamp: Option<crate::wire::LayoutStamp>,
        req: PeerRequest,
    ) {
        if let Some(stamp) = &stamp {
            if let Err(e) = self.check_stamp(&node, stamp, &req) {
                self.respond_peer(id, PeerResponse::Error(e));
                return;
            }
        }
        if !self.membership.contains(&node) {
            // A candidate, or a member this node's layout does not have yet, may still
            // learn and exchange the layout.
            if layout_sync::open_to_non_members(&req) {
                self.handle_layout_peer(id, node, req);
                return;
            }
            metrics::counter!(crate::metrics::REFUSED_REQUESTS_TOTAL, "reason" => "unknown_node")
                .increment(1);
            self.respond_error(id, RequestError::UnknownNode(node.to_string()));
            return;
        }
        // A request from a peer is direct evidence that it is alive.
        self.heard_member(&node);
        self.handle_peer(id, node, req);
    }

    /// The outcome of the `Send` command `id`.
    pub fn handle_response(
        &mut self,
        now: Now,
        id: RequestId,
        result: Result<PeerResponse, SendError>,
    ) {
        self.advance(now);
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(to) = &p.to {
            let mono = self.mono;
            let before = self.membership.failures(to);
            let change = match &result {
                Ok(_) | Err(SendError::Invalid(_)) => self.membership.report_success(to, mono),
                Err(_) => self.membership.report_failure(to, mono),
            };
            self.on_contact(to, before, change);
        }
        let to = p.to.clone();
        if let Some(to) = &to {
            self.check_answer(to, &result);
        }
        match p.waiter {
            Waiter::WriteReplica { op, slot } => self.on_write_replica(op, slot, result),
            Waiter::ReadReplica { op, slot } => self.on_read_replica(op, slot, result),
            Waiter::Forward(op) => self.on_forward(op, result),
            Waiter::Repair => {
                if !matches!(result, Ok(PeerResponse::Ack)) {
                    metrics::counter!(crate::metrics::READ_REPAIR_FAILURES_TOTAL).increment(1);
                }
            }
            Waiter::Gossip => {
                if let Ok(PeerResponse::Gossip(d)) = result {
                    self.membership.merge(&d, self.mono);
                }
            }
            Waiter::Probe => {
                if let Some(to) = to {
                    if let Some(n) = self.probing.get_mut(&to) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            self.probing.remove(&to);
                        }
                    }
                }
            }
            Waiter::Handoff(step) => self.on_handoff_send(step, result),
            Waiter::Aae { exchange, part } => self.on_aae_send(exchange, part, result),
            Waiter::Reap(part) => self.on_reap_send(part, result),
            Waiter::LayoutSend(what) => self.on_layout_send(what, to, result),
            Waiter::LayoutPush => self.on_layout_push_reply(result),
            other => {
                debug_assert!(false, "send result for a storage waiter {other:?}");
            }
        }
    }

    /// The result of the `Storage` command `id`, a coordinator's local write, applied
    /// (readable) but not durable yet: the driver syncs the write-ahead log for many
    /// writes at once (`durability = "sync"` with group commit) and hands a result for
    /// which [`StorageReply::replicates_before_durable`] holds over before that sync,
    /// then the sync's outcome through [`Engine::handle_storage`]
    /// ([`StorageReply::Synced`] or the failure). The write's copies go to the replicas
    /// now, while the local sync runs; the local copy counts towards W only once synced.
    /// Any other result is ignored here: a driver hands only such writes over applied.
    pub fn handle_storage_applied(&mut self, now: Now, id: RequestId, result: StorageResult) {
        self.advance(now);
        let Some(Waiter::WriteLocal(op)) = self.pending.get(&id).map(|p| &p.waiter) else {
            return;
        };
        let op = *op;
        self.on_write_applied(op, result);
    }

    /// The outcome of the `Storage` command `id`.
    pub fn handle_storage(&mut self, now: Now, id: RequestId, result: StorageResult) {
        self.advance(now);
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(partition) = p.writes {
            self.write_landed(partition);
        }
        if result.is_err() {
            metrics::counter!(crate::metrics::ENGINE_STORAGE_FAILURES_TOTAL).increment(1);
        }
        match p.waiter {
            Waiter::WriteLocal(op) => self.on_write_local(op, result),
            Waiter::ReadLocal { op, slot } => self.on_read_local(op, slot, result),
            Waiter::Replica { inbound, kind } => self.on_replica_storage(inbound, kind, result),
            Waiter::GetReplica(read) => self.on_get_replica_read(read, result),
            Waiter::Status(inbound) => {
                if let Ok(StorageReply::HintSummary(totals)) = &result {
                    self.set_hint_totals(totals);
                }
                let report = self.status_report();
                self.respond_client(inbound, ClientResponse::Status(report));
            }
            Waiter::Handoff(step) => self.on_handoff_storage(step, result),
            Waiter::LocalHint => {
                let label = match &result {
                    Ok(StorageReply::HintStored) => "stored",
                    _ => "dropped",
                };
                metrics::counter!(crate::metrics::HINTS_TOTAL, "event" => label).increment(1);
            }
            Waiter::Repair => {}
            Waiter::Aae { exchange, part } => self.on_aae_storage(exchange, part, result),
            Waiter::Reap(part) => self.on_reap_storage(part, result),
            Waiter::AaeStatus(inbound) => self.on_aae_status(inbound, result),
            Waiter::LayoutSave { why, seq } => self.on_layout_saved(why, seq, result),
            Waiter::Plan {
                inbound,
                report,
                copies,
            } => self.answer_plan(inbound, *report, &copies, result),
            Waiter::ClusterStatus(inbound) => {
                let summaries = match result {
                    Ok(crate::storage_ops::StorageReply::TreeSummaries(s)) => s,
                    // Without key counts the estimate uses the bytes pulled so far only.
                    _ => Vec::new(),
                };
                self.answer_status(inbound, &summaries);
            }
            Waiter::DropPartition(p) => self.on_partition_dropped(p, result),
            Waiter::LeftoverScan => self.on_leftover_scan(result),
            other => {
                debug_assert!(false, "storage result for a send waiter {other:?}");
            }
        }
    }

    /// Time has passed; run every timer due at `now.mono`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.advance(now);
        let now = self.mono;
        while let Some(&(at, timer)) = self.timers.iter().next() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, timer));
            match timer {
                Timer::Deadline(op) => self.on_deadline(op),
                Timer::RepairWindow(op) => self.on_repair_window(op),
                Timer::Gossip => {
                    self.gossip_round();
                    self.timers
                        .insert((now + self.cfg.membership.gossip_interval, Timer::Gossip));
                }
                Timer::Probe => {
                    self.probe_round();
                    self.timers
                        .insert((now + self.cfg.membership.probe_interval, Timer::Probe));
                }
                Timer::Handoff => {
                    self.handoff_round();
                    self.timers
                        .insert((now + self.cfg.handoff.interval, Timer::Handoff));
                }
                Timer::Aae => {
                    self.aae_tick();
                    self.placement_tick();
                    self.timers.insert((now + self.cfg.aae.tick, Timer::Aae));
                }
                Timer::AaeResume(exchange) => self.on_aae_resume(exchange),
                Timer::Hello => self.hello_round(),
                Timer::CommitRetry(round) => self.on_commit_timer(round),
                Timer::Speculate(op) => self.on_speculate(op),
                Timer::ConfirmLayout => self.confirm_round(),
            }
        }
    }

    // ---- plumbing shared by the sub-modules ----

    fn advance(&mut self, now: Now) {
        self.now = self.now.max(now.wall);
        self.mono = self.mono.max(now.mono);
    }

    fn next_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    fn jitter(&mut self, interval: Duration) -> Duration {
        let max = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_micros(self.rng.random_range(0..max))
    }

    fn send(&mut self, to: NodeId, request: PeerRequest, timeout: Duration, waiter: Waiter) {
        let id = self.next_request_id();
        self.meters.peer_sent.get([request.op_name()]).increment(1);
        self.pending.insert(
            id,
            Pending {
                to: Some(to.clone()),
                waiter,
                writes: None,
            },
        );
        self.out.push_back(Command::Send {
            id,
            to,
            request,
            timeout,
        });
    }

    fn storage(&mut self, op: StorageOp, waiter: Waiter) {
        let id = self.next_request_id();
        let writes = op.data_partition();
        if let Some(p) = writes {
            self.placement.write_issued(p);
        }
        self.pending.insert(
            id,
            Pending {
                to: None,
                waiter,
                writes,
            },
        );
        self.out.push_back(Command::Storage { id, op });
    }

    fn respond(&mut self, id: InboundId, response: Response) {
        self.out.push_back(Command::Respond { id, response });
    }

    fn respond_client(&mut self, id: InboundId, response: ClientResponse) {
        self.admin.remove(&id);
        self.respond(id, Response::Client(response));
    }

    fn respond_peer(&mut self, id: InboundId, response: PeerResponse) {
        self.respond(id, Response::Peer(response));
    }

    fn respond_error(&mut self, id: InboundId, err: RequestError) {
        self.respond(id, Response::Error(err));
    }

    /// A contact with `peer` was reported to the failure detector, which counted
    /// `before` failures in a row until then.
    /// A request from member `node` arrived: evidence that it is alive.
    fn heard_member(&mut self, node: &NodeId) {
        let before = self.membership.failures(node);
        let change = self.membership.report_success(node, self.mono);
        self.on_contact(node, before, change);
    }

    fn on_contact(&mut self, peer: &NodeId, before: u32, change: Option<StateChange>) {
        let failures = self.membership.failures(peer);
        if failures != before {
            metrics::gauge!(crate::metrics::PEER_CONSECUTIVE_FAILURES, "peer" => peer.to_string())
                .set(f64::from(failures));
        }
        if let Some(c) = change {
            metrics::counter!(crate::metrics::MEMBER_STATE_CHANGES_TOTAL, "state" => c.state.as_str())
                .increment(1);
            self.publish_member_gauges();
        }
    }

    fn publish_member_gauges(&self) {
        for state in [MemberState::Up, MemberState::Down] {
            metrics::gauge!(crate::metrics::MEMBERS, "state" => state.as_str())
                .set(self.membership.count(state) as f64);
        }
    }

    fn set_hint_totals(&mut self, totals: &[(NodeId, HintTotals)]) {
        // Targets that drained to zero disappear from the summary: report them as zero.
        for (id, _) in std::mem::take(&mut self.hint_totals) {
            metrics::gauge!(crate::metrics::HINTS_PENDING, "target" => id.to_string()).set(0.0);
        }
        for (id, t) in totals {
            metrics::gauge!(crate::metrics::HINTS_PENDING, "target" => id.to_string())
                .set(t.count as f64);
            metrics::gauge!(crate::metrics::HINTS_PENDING_BYTES, "target" => id.to_string())
                .set(t.bytes as f64);
            self.hint_totals.insert(id.clone(), *t);
        }
    }

    fn status_report(&self) -> StatusReport {
        let members = self
            .membership
            .iter()
            .map(|(id, view)| {
                let totals = self.hint_totals.get(id).copied().unwrap_or_default();
                MemberStatus {
                    id: id.clone(),
                    addr: view.addr,
                    state: if self.membership.is_up(id) {
                        MemberState::Up
                    } else {
                        MemberState::Down
                    },
                    partitions_owned: self.ring().owned_count(id),
                    pending_hints: totals.count,
                    pending_hint_bytes: totals.bytes,
                }
            })
            .collect();
        StatusReport {
            node: self.me.clone(),
            ring_version: self.ring().version(),
            members,
            // The engine does not see the disk; the driver fills this in.
            storage: StorageHealth::default(),
        }
    }

    fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            ring: self.ring().clone(),
            members: self
                .membership
                .iter()
                .map(|(id, v)| MemberAddress {
                    id: id.clone(),
                    addr: v.addr,
                })
                .collect(),
            n: self.cfg.replication.n,
            r: self.cfg.replication.r,
            w: self.cfg.replication.w,
            layout_version: self.layout.version(),
        }
    }

    /// The primaries of `partition` that reads use, in preference order: its replica
    /// set in the layout version reads use ([`LayoutHistory::read_set`]; the one
    /// version's outside a layout change).
    fn primaries(&self, partition: PartitionId) -> Vec<NodeId> {
        self.layout
            .read_set(partition, usize::from(self.cfg.replication.n))
    }

    /// The replica sets a write of `partition` must meet W in, each
    /// ([`LayoutHistory::write_sets`]).
    fn write_sets(&self, partition: PartitionId) -> Vec<Vec<NodeId>> {
        self.layout
            .write_sets(partition, usize::from(self.cfg.replication.n))
    }

    /// Every node of [`Engine::write_sets`], each once.
    fn write_union(&self, partition: PartitionId) -> Vec<NodeId> {
        self.layout
            .write_union(partition, usize::from(self.cfg.replication.n))
    }

    /// Whether `node` holds `partition` in some kept layout version.
    fn holds(&self, node: &NodeId, partition: PartitionId) -> bool {
        self.layout
            .holds(node, partition, usize::from(self.cfg.replication.n))
    }

    /// The fallbacks of `partition` that are up, in the current ring's walk order, less
    /// the replicas of every version in use (they get the write as primaries).
    fn live_fallbacks(&self, partition: PartitionId) -> VecDeque<NodeId> {
        let replicas = self.write_union(partition);
        self.ring()
            .fallbacks(partition, usize::from(self.cfg.replication.n))
            .into_iter()
            .filter(|n| *n != self.me && !replicas.contains(n) && self.membership.is_up(n))
            .collect()
    }

    // ---- client requests ----

    fn handle_client(&mut self, id: InboundId, req: ClientRequest, forwarded: bool) {
        self.meters.received.get([req.op_name()]).increment(1);
        match req {
            ClientRequest::ClusterInfo => {
                let info = self.cluster_info();
                self.respond_client(id, ClientResponse::ClusterInfo(info));
            }
            ClientRequest::Status | ClientRequest::AaeStatus
                if self.inflight() >= self.cfg.limits.max_inflight_requests =>
            {
                // Counted by the node as `shoal_requests_total{op, result="overloaded"}`.
                self.respond_client(id, ClientResponse::Error(RequestError::Overloaded));
            }
            ClientRequest::Status => {
                self.admin.insert(id);
                self.storage(StorageOp::HintSummary, Waiter::Status(id));
            }
            ClientRequest::AaeStatus => {
                self.admin.insert(id);
                self.aae_status(id);
            }
            // The node serves backups itself, before the engine; one that got here was
            // forwarded or sent by a driver that does not make them.
            ClientRequest::Backup { .. } => self.respond_client(
                id,
                ClientResponse::Error(RequestError::Backup(crate::error::BackupError::Failed(
                    "this node's engine does not make backups; send it to the node's own address"
                        .into(),
                ))),
            ),
            ClientRequest::Cluster(req) => self.handle_cluster(id, req),
            ClientRequest::GetReplica { key } => self.handle_get_replica(id, key),
            // The node unpacks a batch and hands the engine each request alone; one that
            // got here was forwarded or sent by a driver that does not unpack them.
            ClientRequest::Batch(_) => self.respond_client(
                id,
                ClientResponse::Error(RequestError::Malformed(
                    "a batch is unpacked by the node that receives it; it cannot be forwarded"
                        .into(),
                )),
            ),
            ClientRequest::Get { .. }
            | ClientRequest::Put { .. }
            | ClientRequest::Delete { .. }
                if self.is_candidate() =>
            {
                self.meters
                    .requests
                    .get([req.op_name(), "candidate"])
                    .increment(1);
                // A candidate holds no partitions: the client tries another node.
                let why = "a candidate holding no partition".to_string();
                self.respond_client(id, ClientResponse::Error(RequestError::Declined(why)));
            }
            ClientRequest::Get { .. }
            | ClientRequest::Put { .. }
            | ClientRequest::Delete { .. }
                if self.is_fenced() =>
            {
                self.meters
                    .requests
                    .get([req.op_name(), "fenced"])
                    .increment(1);
                let why = format!(
                    "node {} was removed from the cluster (layout version {}) and is fenced; \
                     send requests to a member",
                    self.me,
                    self.layout.version()
                );
                self.respond_client(id, ClientResponse::Error(RequestError::NotAllowed(why)));
            }
            ClientRequest::Get { .. }
            | ClientRequest::Put { .. }
            | ClientRequest::Delete { .. }
                if self.restoring() =>
            {
                // Forwarded to another primary in `handle_keyed` (see `restore.rs`).
                self.handle_keyed(id, req, forwarded);
            }
            ClientRequest::Get { .. }
            | ClientRequest::Put { .. }
            | ClientRequest::Delete { .. }
                if self.confirming_layout() =>
            {
                self.refuse_unconfirmed(id, &req);
            }
            req @ (ClientRequest::Get { .. }
            | ClientRequest::Put { .. }
            | ClientRequest::Delete { .. }) => self.handle_keyed(id, req, forwarded),
        }
    }

    fn handle_keyed(&mut self, id: InboundId, req: ClientRequest, forwarded: bool) {
        if let Err(e) = self.validate_keyed(&req) {
            self.meters
                .requests
                .get([req.op_name(), "invalid"])
                .increment(1);
            self.respond_client(id, ClientResponse::Error(e));
            return;
        }
        if self.inflight() >= self.cfg.limits.max_inflight_requests {
            self.meters
                .requests
                .get([req.op_name(), "overloaded"])
                .increment(1);
            self.respond_client(id, ClientResponse::Error(RequestError::Overloaded));
            return;
        }
        let Some(key) = req.key() else {
            return;
        };
        let partition = self.ring().partition_of(key);
        if self.placement.dropping.contains(&partition) {
            // Moved away and back while its old data is being deleted: a write taken
            // now could be deleted with it. The client tries another node, a write too.
            let why = format!("its copy of partition {partition} is being dropped");
            self.respond_client(id, ClientResponse::Error(RequestError::Declined(why)));
            return;
        }
        let primaries = self.primaries(partition);
        if self.restoring() {
            // It coordinates nothing (see `restore.rs`): another primary of the key takes
            // the request, as for a node that is not a replica, and the client's write
            // succeeds with this node counted down (a hint for it). One forwarded here is
            // refused before anything ran: no forwarding loops, and the forwarder tries
            // its next replica.
            self.meters
                .requests
                .get([req.op_name(), "restoring"])
                .increment(1);
            if forwarded {
                let why = "a restoring node coordinates nothing".to_string();
                self.respond_client(id, ClientResponse::Error(RequestError::Declined(why)));
            } else {
                let others = primaries.into_iter().filter(|p| *p != self.me).collect();
                self.start_forward(id, req, others);
            }
            return;
        }
        // A forward from a coordinator that reads from a newer layout version than this
        // node does yet (this node gains the partition in it): this node holds the
        // partition in a kept version, so it coordinates, with its own read set (safe:
        // that set drops the partition only after this node's reads moved on).
        let gaining = forwarded && self.holds(&self.me, partition);
        if !primaries.contains(&self.me) && !gaining {
            if forwarded {
                // The sender's ring says we are a replica and ours disagrees: refuse
                // rather than forward again (no forwarding loops).
                self.respond_client(
                    id,
                    ClientResponse::Error(RequestError::Internal(format!(
                        "node {} is not a replica of partition {partition}",
                        self.me
                    ))),
                );
                return;
            }
            self.start_forward(id, req, primaries);
            return;
        }
        match req {
            ClientRequest::Get { key, options } => {
                self.start_read(id, partition, primaries, key, options)
            }
            ClientRequest::Put {
                key,
                value,
                context,
                options,
            } => self.start_write(
                id,
                partition,
                primaries,
                key,
                crate::object::SiblingValue::Data(value),
                context.unwrap_or_default(),
                options,
            ),
            ClientRequest::Delete {
                key,
                context,
                options,
            } => self.start_write(
                id,
                partition,
                primaries,
                key,
                crate::object::SiblingValue::Tombstone,
                context.unwrap_or_default(),
                options,
            ),
            ClientRequest::ClusterInfo
            | ClientRequest::Status
            | ClientRequest::AaeStatus
            | ClientRequest::Backup { .. }
            | ClientRequest::Cluster(_)
            | ClientRequest::Batch(_)
            | ClientRequest::GetReplica { .. } => {}
        }
    }

    fn validate_keyed(&self, req: &ClientRequest) -> Result<(), RequestError> {
        let n = self.cfg.replication.n;
        let check = |what: &str, v: Option<u8>, lo: u8, hi: u8| -> Result<(), RequestError> {
            match v {
                Some(x) if x < lo || x > hi => Err(RequestError::InvalidOptions(format!(
                    "{what} must be in {lo}..={hi}, got {x}"
                ))),
                _ => Ok(()),
            }
        };
        let key = req.key().unwrap_or_default();
        if key.is_empty() {
            return Err(RequestError::EmptyKey);
        }
        if let Some(timeout) = req.timeout() {
            crate::wire::check_timeout(
                timeout,
                self.cfg.limits.min_request_timeout,
                self.cfg.limits.max_request_timeout,
            )?;
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(RequestError::KeyTooLarge {
                len: key.len(),
                max: MAX_KEY_BYTES,
            });
        }
        if let ClientRequest::Put {
            context: Some(ctx), ..
        }
        | ClientRequest::Delete {
            context: Some(ctx), ..
        } = req
        {
            if ctx.highest_counter() > crate::causality::MAX_DOT_COUNTER {
                return Err(RequestError::InvalidContext(
                    "a counter in the context is beyond any this cluster can mint".into(),
                ));
            }
        }
        match req {
            ClientRequest::Get { options, .. } => {
                check("r", options.r, 1, n)?;
                let r = options.r.unwrap_or(self.cfg.replication.r);
                check("pr", options.pr, 0, r)?;
            }
            ClientRequest::Put { options, value, .. } => {
                if value.len() > self.cfg.limits.max_value_bytes {
                    return Err(RequestError::ValueTooLarge {
                        len: value.len(),
                        max: self.cfg.limits.max_value_bytes,
                    });
                }
                check("w", options.w, 1, n)?;
                let w = options.w.unwrap_or(self.cfg.replication.w);
                check("pw", options.pw, 0, w)?;
            }
            ClientRequest::Delete { options, .. } => {
                check("w", options.w, 1, n)?;
                let w = options.w.unwrap_or(self.cfg.replication.w);
                check("pw", options.pw, 0, w)?;
            }
            ClientRequest::ClusterInfo
            | ClientRequest::Status
            | ClientRequest::AaeStatus
            | ClientRequest::Backup { .. }
            | ClientRequest::Cluster(_)
            | ClientRequest::Batch(_)
            | ClientRequest::GetReplica { .. } => {}
        }
        Ok(())
    }

    fn on_deadline(&mut self, op: RequestId) {
        if self.writes.contains_key(&op) {
            self.write_deadline(op);
        } else if self.reads.contains_key(&op) {
            self.read_deadline(op);
        } else if self.forwards.contains_key(&op) {
            self.forward_deadline(op);
        }
    }

    fn gossip_round(&mut self) {
        let digest = self.membership.next_round(self.mono);
        metrics::counter!(crate::metrics::GOSSIP_ROUNDS_TOTAL).increment(1);
        let peers: Vec<NodeId> = self.membership.peers().cloned().collect();
        if peers.is_empty() {
            return;
        }
        let to = peers[self.rng.random_range(0..peers.len())].clone();
        let timeout = self.cfg.membership.probe_timeout;
        self.send(
            to.clone(),
            PeerRequest::Gossip(digest),
            timeout,
            Waiter::Gossip,
        );
        self.push_trackers(to);
    }

    /// Probe every peer, also those whose earlier probes are still unanswered (up to
    /// the bound): a paused peer then fails a probe every `probe_interval` once the
    /// first has timed out, instead of one per `probe_timeout` round trip, which keeps
    /// its detection within a few seconds.
    fn probe_round(&mut self) {
        let m = &self.cfg.membership;
        let max_in_flight =
            u32::try_from(m.probe_timeout.as_micros() / m.probe_interval.as_micros().max(1) + 1)
                .unwrap_or(u32::MAX);
        let peers: Vec<NodeId> = self
            .membership
            .peers()
            .filter(|p| self.probing.get(*p).copied().unwrap_or(0) < max_in_flight)
            .cloned()
            .collect();
        let timeout = m.probe_timeout;
        for p in peers {
            *self.probing.entry(p.clone()).or_insert(0) += 1;
            self.send(p, PeerRequest::Ping, timeout, Waiter::Probe);
        }
    }
}

/// A failed storage op as the requester sees it (the engine's answers, and the node's
/// request handler's for what it serves itself).
pub fn storage_error(e: StorageFailure) -> RequestError {
    match e {
        StorageFailure::DiskFull => RequestError::DiskFull,
        other => RequestError::Storage(other.to_string()),
    }
}

fn outcome_label(result: &Result<(), RequestError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(e) => e.label(),
    }
}
