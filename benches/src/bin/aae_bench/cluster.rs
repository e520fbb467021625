//! Two replicas in one process: real [`Engine`]s, real [`Executor`]s on RocksDB, and a
//! synchronous message pump on a virtual clock that counts every byte it carries.
//!
//! The pump encodes each node-to-node request and response with the wire codec and
//! decodes it on the other side, as the transport would, so that the measured time
//! includes (de)serialisation and the byte counts are exact frame bodies. Storage ops run
//! inline through the executor of the node that asked. Nothing else runs: no network
//! latency, no parallelism between the two nodes (their work is added up).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;
use shoal_executor::Executor;
use shoal_proto::wire::{
    decode_request, decode_response, encode_request, encode_response, AaeRequest, PeerRequest,
    Request,
};
use shoal_proto::{
    AaeConfig, Command, Engine, EngineConfig, HandoffConfig, InboundId, MembershipConfig,
    Monotonic, Now, ReplicationConfig, RequestId, SendError, Sender, StorageOp, StorageReply, Time,
};
use shoal_ring::{Member, NodeId, PartitionId, Ring};
use shoal_storage::{RocksOptions, RocksStorage};

/// Most commands one [`Cluster::pump`] carries out before it gives up: far above any
/// round of this benchmark (about 10 per differing segment), low enough to stop a loop.
const MAX_COMMANDS_PER_PUMP: u64 = 200_000_000;
/// Most timer steps one round or the warm-up may take.
const MAX_TIMER_STEPS: u64 = 1_000_000;
/// The virtual clock's start: any fixed wall-clock-like time.
const EPOCH: Duration = Duration::from_secs(1_700_000_000);

/// Bytes and round trips of one kind of node-to-node request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpTraffic {
    /// Requests sent (each gets one response).
    pub rpcs: u64,
    /// Encoded request bytes.
    pub request_bytes: u64,
    /// Encoded response bytes.
    pub response_bytes: u64,
}

impl OpTraffic {
    /// Both directions.
    pub fn bytes(&self) -> u64 {
        self.request_bytes + self.response_bytes
    }
}

/// Node-to-node traffic by request kind (`PeerRequest::op_name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Per request kind.
    pub ops: BTreeMap<String, OpTraffic>,
}

/// Whether a request kind is an anti-entropy exchange step (what this benchmark counts).
pub fn is_exchange_op(op: &str) -> bool {
    matches!(op, "aae_nodes" | "aae_segments" | "aae_fetch" | "aae_push")
}

/// Whether a request kind carries objects (the repair itself) rather than hashes.
pub fn is_object_op(op: &str) -> bool {
    matches!(op, "aae_fetch" | "aae_push")
}

impl Traffic {
    /// A request of kind `op`, `bytes` long, was sent.
    pub fn record_request(&mut self, op: &str, bytes: usize) {
        let t = self.ops.entry(op.to_string()).or_default();
        t.rpcs += 1;
        t.request_bytes += bytes as u64;
    }

    /// The response to a request of kind `op` was `bytes` long.
    pub fn record_response(&mut self, op: &str, bytes: usize) {
        self.ops.entry(op.to_string()).or_default().response_bytes += bytes as u64;
    }

    /// The sum over the request kinds `keep` selects.
    pub fn total(&self, keep: impl Fn(&str) -> bool) -> OpTraffic {
        self.ops
            .iter()
            .filter(|(op, _)| keep(op))
            .fold(OpTraffic::default(), |acc, (_, t)| OpTraffic {
                rpcs: acc.rpcs + t.rpcs,
                request_bytes: acc.request_bytes + t.request_bytes,
                response_bytes: acc.response_bytes + t.response_bytes,
            })
    }
}

/// Storage ops of one kind that the pump ran, and the wall time they took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StorageTime {
    /// Ops run.
    pub ops: u64,
    /// Their total wall time.
    pub seconds: f64,
}

/// What the pump saw during one anti-entropy round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundOutcome {
    /// Wall time from firing the round's timer to both engines idle.
    pub elapsed: Duration,
    /// Exchanges started (one per partition and round).
    pub exchanges: u64,
    /// Objects that changed a replica's copy when merged (fetched or pushed).
    pub keys_repaired: u64,
    /// Node-to-node traffic.
    pub traffic: Traffic,
    /// Storage ops by kind (`StorageOp::op_name`), both nodes.
    pub storage: BTreeMap<String, StorageTime>,
    /// Wall time spent encoding and decoding messages.
    pub codec: Duration,
}

/// Who waits for the answer to a request a node received.
#[derive(Clone, Copy, Debug)]
struct Origin {
    from: usize,
    id: RequestId,
    op: &'static str,
}

/// One replica: its engine, its executor on its own RocksDB directory, and the peer
/// requests it received and has not answered yet.
pub struct BenchNode {
    /// The node's id.
    pub id: NodeId,
    /// The replication engine.
    pub engine: Engine,
    /// The storage executor.
    pub executor: Executor<RocksStorage>,
    inbound: BTreeMap<u64, Origin>,
    next_inbound: u64,
}

/// The engine settings of the benchmark: only anti-entropy runs. Gossip, probes and
/// handoff are a day apart, reaping once a year (after the warm-up has scanned every
/// partition once), one exchange at a time, and repair budgets so large that they never
/// make an exchange wait.
pub fn engine_config(n: u8, aae_interval: Duration) -> EngineConfig {
    let day = Duration::from_secs(24 * 3600);
    let d = EngineConfig::default();
    EngineConfig {
        replication: ReplicationConfig {
            n,
            r: 1,
            w: 1,
            ..d.replication
        },
        membership: MembershipConfig {
            gossip_interval: day,
            probe_interval: day,
            ..d.membership
        },
        handoff: HandoffConfig {
            enabled: false,
            interval: day,
            ..d.handoff
        },
        aae: AaeConfig {
            enabled: true,
            interval: aae_interval,
            tick: Duration::from_secs(1),
            max_concurrent_exchanges: 1,
            repair_keys_per_second: 1_000_000_000_000,
            repair_bytes_per_second: 1_000_000_000_000_000,
            reap_interval: 365 * day,
            ..d.aae
        },
        limits: d.limits,
    }
}

/// The in-process cluster.
pub struct Cluster {
    /// The replicas, in id order (`n0` < `n1` < ...): `n0` starts every exchange.
    pub nodes: Vec<BenchNode>,
    ring: Ring,
    cfg: EngineConfig,
    now: Time,
    traffic: Traffic,
    exchanges: u64,
    keys_repaired: u64,
    reap_scans: u64,
    storage: BTreeMap<String, StorageTime>,
    codec: Duration,
}

impl Cluster {
    /// `nodes` replicas of a ring of `partitions` partitions, every partition on all of
    /// them, each with a fresh RocksDB store under `dir`.
    pub fn open(dir: &Path, nodes: usize, partitions: u32) -> anyhow::Result<Cluster> {
        let ids: Vec<NodeId> = (0..nodes)
            .map(|i| NodeId::new(format!("n{i}")))
            .collect::<Result<_, _>>()?;
        let ring = Ring::new(partitions, ids.iter().cloned().map(Member::new).collect())?;
        let n = u8::try_from(nodes).context("too many nodes")?;
        // Longer than any round and the warm-up: every round starts with all partitions
        // due and none becomes due again during it.
        let cfg = engine_config(n, Duration::from_secs(3600));
        let addresses: Vec<(NodeId, SocketAddr)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let port = u16::try_from(7000 + i).unwrap_or(u16::MAX);
                (id.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            })
            .collect();
        let now = Time::from_duration(EPOCH);
        let mut out = Vec::with_capacity(nodes);
        for (i, id) in ids.into_iter().enumerate() {
            let path = dir.join(id.as_str());
            let storage = RocksStorage::open(&path, RocksOptions::default())
                .with_context(|| format!("open RocksDB at {}", path.display()))?;
            let actor = 0xA0 + i as u64;
            let executor = Executor::open(storage, || actor)?;
            let engine = Engine::new(
                cfg.clone(),
                id.clone(),
                ring.clone(),
                addresses.clone(),
                i as u64 + 1,
                Now::from_virtual(now),
            )?;
            out.push(BenchNode {
                id,
                engine,
                executor,
                inbound: BTreeMap::new(),
                next_inbound: 1,
            });
        }
        Ok(Cluster {
            nodes: out,
            ring,
            cfg,
            now,
            traffic: Traffic::default(),
            exchanges: 0,
            keys_repaired: 0,
            reap_scans: 0,
            storage: BTreeMap::new(),
            codec: Duration::ZERO,
        })
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Partitions whose Merkle roots (or key counts) differ between replica 0 and any
    /// other replica.
    pub fn differing_partitions(&self) -> Vec<PartitionId> {
        self.ring
            .partitions()
            .filter(|&p| {
                let first = self.nodes[0].executor.tree_summary(p);
                self.nodes[1..]
                    .iter()
                    .any(|n| n.executor.tree_summary(p) != first)
            })
            .collect()
    }

    /// Run timers until the first exchange round is over and the reaper has made its
    /// one pass over every partition (it scans objects, which would otherwise land in
    /// the measured rounds). Returns the wall time it took.
    pub fn warm_up(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let partitions = u64::from(self.ring.partition_count());
        let quiet_for = self.cfg.aae.tick * 3;
        let mut last_scan = self.now;
        let mut scans = self.reap_scans;
        for _ in 0..MAX_TIMER_STEPS {
            let next = self
                .next_timer()
                .ok_or_else(|| anyhow!("no timer is set"))?;
            self.advance_to(next);
            self.pump()?;
            if self.reap_scans != scans {
                scans = self.reap_scans;
                last_scan = self.now;
            }
            if self.idle()
                && self.exchanges >= partitions
                && self.now.saturating_since(last_scan) >= quiet_for
            {
                return Ok(started.elapsed());
            }
        }
        bail!("the warm-up did not settle within {MAX_TIMER_STEPS} timer steps")
    }

    /// One anti-entropy round: move the clock past `aae_interval` so that every
    /// partition is due, fire the timers, and carry out everything the engines ask until
    /// both are idle (repair waits, if any, are run on the virtual clock).
    pub fn round(&mut self) -> anyhow::Result<RoundOutcome> {
        self.traffic = Traffic::default();
        self.exchanges = 0;
        self.keys_repaired = 0;
        self.storage = BTreeMap::new();
        self.codec = Duration::ZERO;
        let scans = self.reap_scans;
        let start_at = self.now + self.cfg.aae.interval + self.cfg.aae.tick;
        let started = Instant::now();
        self.advance_to(start_at);
        self.pump()?;
        let mut steps = 0;
        while !self.idle() {
            let next = self
                .next_timer()
                .ok_or_else(|| anyhow!("engines are busy but no timer is set"))?;
            self.advance_to(next);
            self.pump()?;
            steps += 1;
            if steps > MAX_TIMER_STEPS {
                bail!("the round did not finish within {MAX_TIMER_STEPS} timer steps");
            }
        }
        let elapsed = started.elapsed();
        if self.reap_scans != scans {
            bail!("a reaper scan ran during the measured round (warm-up too short)");
        }
        Ok(RoundOutcome {
            elapsed,
            exchanges: self.exchanges,
            keys_repaired: self.keys_repaired,
            traffic: std::mem::take(&mut self.traffic),
            storage: std::mem::take(&mut self.storage),
            codec: self.codec,
        })
    }

    fn next_timer(&self) -> Option<Time> {
        self.nodes
            .iter()
            .filter_map(|n| n.engine.poll_timeout())
            .min()
            .map(Monotonic::as_virtual)
    }

    fn advance_to(&mut self, t: Time) {
        if t > self.now {
            self.now = t;
        }
        let now = self.now;
        for n in &mut self.nodes {
            if n.engine
                .poll_timeout()
                .is_some_and(|at| at.as_virtual() <= now)
            {
                n.engine.handle_timeout(Now::from_virtual(now));
            }
        }
    }

    /// No exchange running and no command outstanding on any node.
    fn idle(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.engine.pending_commands() == 0 && n.engine.aae_stats().running == 0)
    }

    /// Carry out every command of every engine, and those they cause, until none is left.
    pub fn pump(&mut self) -> anyhow::Result<()> {
        let mut carried = 0u64;
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                while let Some(cmd) = self.nodes[i].engine.poll_command() {
                    progressed = true;
                    carried += 1;
                    if carried > MAX_COMMANDS_PER_PUMP {
                        bail!("more than {MAX_COMMANDS_PER_PUMP} commands without settling");
                    }
                    self.carry_out(i, cmd)?;
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    fn carry_out(&mut self, i: usize, cmd: Command) -> anyhow::Result<()> {
        let now = self.now;
        match cmd {
            Command::Storage { id, op } => {
                if matches!(op, StorageOp::ReapCandidates { .. }) {
                    self.reap_scans += 1;
                }
                let name = op.op_name();
                let started = Instant::now();
                let result = self.nodes[i].executor.execute(op);
                let spent = self.storage.entry(name.to_string()).or_default();
                spent.ops += 1;
                spent.seconds += started.elapsed().as_secs_f64();
                if let Ok(StorageReply::MergedMany { changed, .. }) = &result {
                    self.keys_repaired += changed;
                }
                self.nodes[i]
                    .engine
                    .handle_storage(Now::from_virtual(now), id, result);
            }
            Command::Send {
                id, to, request, ..
            } => {
                let op = request.op_name();
                if matches!(
                    request,
                    PeerRequest::Aae(AaeRequest::Nodes { level: 0, .. })
                ) {
                    self.exchanges += 1;
                }
                let started = Instant::now();
                let bytes = encode_request(&Request::Peer(request));
                self.codec += started.elapsed();
                self.traffic.record_request(op, bytes.len());
                let Some(j) = self.nodes.iter().position(|n| n.id == to) else {
                    let err = SendError::Unreachable(format!("no node {to}"));
                    self.nodes[i]
                        .engine
                        .handle_response(Now::from_virtual(now), id, Err(err));
                    return Ok(());
                };
                let started = Instant::now();
                let request = decode_request(&bytes).context("decode a request")?;
                self.codec += started.elapsed();
                let target = &mut self.nodes[j];
                let inbound = target.next_inbound;
                target.next_inbound += 1;
                target.inbound.insert(inbound, Origin { from: i, id, op });
                let from = self.nodes[i].id.clone();
                self.nodes[j].engine.handle_request(
                    Now::from_virtual(now),
                    InboundId(inbound),
                    Sender::Node(from),
                    request,
                );
            }
            Command::Respond { id, response } => {
                // Only peers send requests here; an unknown id has nobody waiting.
                let Some(origin) = self.nodes[i].inbound.remove(&id.0) else {
                    return Ok(());
                };
                let started = Instant::now();
                let bytes = encode_response(&response);
                let decoded = decode_response(&bytes).context("decode a response")?;
                self.codec += started.elapsed();
                self.traffic.record_response(origin.op, bytes.len());
                let result = Ok(decoded.into_peer());
                self.nodes[origin.from].engine.handle_response(
                    Now::from_virtual(now),
                    origin.id,
                    result,
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_adds_requests_and_responses_per_kind() {
        let mut t = Traffic::default();
        t.record_request("aae_nodes", 10);
        t.record_response("aae_nodes", 30);
        t.record_request("aae_nodes", 12);
        t.record_response("aae_nodes", 8);
        t.record_request("aae_fetch", 100);
        t.record_response("aae_fetch", 1000);
        t.record_request("ping", 3);
        t.record_response("ping", 3);
        assert_eq!(
            t.ops["aae_nodes"],
            OpTraffic {
                rpcs: 2,
                request_bytes: 22,
                response_bytes: 38
            }
        );
        let exchange = t.total(is_exchange_op);
        assert_eq!(exchange.rpcs, 3);
        assert_eq!(exchange.bytes(), 22 + 38 + 100 + 1000);
        assert_eq!(t.total(is_object_op).bytes(), 1100);
        assert_eq!(t.total(|_| true).rpcs, 4);
    }

    #[test]
    fn only_exchange_steps_count_as_exchange_traffic() {
        for op in ["aae_nodes", "aae_segments", "aae_fetch", "aae_push"] {
            assert!(is_exchange_op(op), "{op}");
        }
        for op in ["aae_digests", "aae_reap", "gossip", "ping", "replicate"] {
            assert!(!is_exchange_op(op), "{op}");
        }
    }

    #[test]
    fn benchmark_engine_config_is_valid() {
        engine_config(2, Duration::from_secs(3600))
            .validate(2)
            .unwrap();
    }
}
