//! Hinted handoff delivery throughput to one target: a fallback holding `HINTS` hints for
//! a primary that is back delivers them all.
//!
//! Two real engines and executors (over `MemStorage`) on a two-node ring (N = 2, so the
//! target is a primary of every key), the engine's default `[handoff]` settings (interval
//! 1 s, batch 256), driven by an in-process pump on a virtual clock: every message takes
//! [`ONE_WAY`] each way, storage ops complete at once, timers fire when the clock
//! reaches them. Two figures:
//!
//! - **hints per virtual second per target**: the rate the protocol allows (printed once;
//!   it does not depend on the machine or the build);
//! - criterion's wall time for delivering all of them: the CPU cost of the delivery path
//!   (engine, executor, object merge) on this machine.
//!
//! The hints are stored through the engine (a `Replicate` with `hint_for`), so the bench
//! uses nothing but the engine's and executor's public entry points.
//!
//! ```text
//! cargo bench -p shoal-bench --bench handoff
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shoal_executor::Executor;
use shoal_proto::wire::{PeerRequest, PeerResponse, Request};
use shoal_proto::{
    CausalContext, Command, Dot, Engine, EngineConfig, InboundId, Monotonic, Now, Object,
    RequestId, SendError, Sender, SiblingValue, Time,
};
use shoal_ring::{Member, NodeId, Ring};
use shoal_storage::MemStorage;

/// Hints the fallback holds for the target.
const HINTS: usize = 4_096;
/// Bytes per hinted value.
const VALUE_BYTES: usize = 256;
/// One-way network delay of every message (a LAN: 0.5 ms round trip).
const ONE_WAY: Duration = Duration::from_micros(250);
/// Most events one run may carry out (a bound that turns a livelock into a panic).
const MAX_EVENTS: u64 = 10_000_000;
/// When the run starts on the virtual clock.
const T0: Time = Time::from_micros(1_700_000_000_000_000);

struct Node {
    id: NodeId,
    engine: Engine,
    executor: Executor<MemStorage>,
    /// Requests received and not answered: who sent them, under which id.
    inbound: BTreeMap<u64, (usize, RequestId)>,
    next_inbound: u64,
}

enum Msg {
    Request {
        from: usize,
        to: usize,
        id: RequestId,
        request: PeerRequest,
    },
    Response {
        to: usize,
        id: RequestId,
        result: Result<PeerResponse, SendError>,
    },
}

struct Cluster {
    nodes: Vec<Node>,
    now: Time,
    /// Messages in flight, by arrival time (then sending order).
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    msgs: BTreeMap<u64, Msg>,
    seq: u64,
    events: u64,
    /// When the first delivery was sent (the fallback's first handoff round, whose start
    /// is jittered within the first interval).
    first_delivery: Option<Time>,
}

impl Cluster {
    /// The fallback (`f`, node 0) holding [`HINTS`] hints for the target (`t`, node 1).
    fn with_hints() -> Cluster {
        let ids: Vec<NodeId> = ["f", "t"]
            .iter()
            .map(|s| NodeId::new(*s).expect("valid id"))
            .collect();
        let ring = Ring::new(64, ids.iter().cloned().map(Member::new).collect()).expect("ring");
        let addresses: Vec<(NodeId, SocketAddr)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 7001 + i).parse().expect("addr");
                (id.clone(), addr)
            })
            .collect();
        let mut cfg = EngineConfig::default();
        cfg.replication.n = 2;
        cfg.replication.r = 1;
        cfg.replication.w = 1;
        cfg.aae.enabled = false;
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Node {
                id: id.clone(),
                engine: Engine::new(
                    cfg.clone(),
                    id.clone(),
                    ring.clone(),
                    addresses.clone(),
                    i as u64 + 1,
                    Now::from_virtual(T0),
                )
                .expect("engine"),
                executor: Executor::open(MemStorage::new(), || 0xF0 + i as u64).expect("open"),
                inbound: BTreeMap::new(),
                next_inbound: 1,
            })
            .collect();
        let mut c = Cluster {
            nodes,
            now: T0,
            queue: BinaryHeap::new(),
            msgs: BTreeMap::new(),
            seq: 0,
            events: 0,
            first_delivery: None,
        };
        let target = c.nodes[1].id.clone();
        let value = vec![0x5a; VALUE_BYTES];
        for i in 0..HINTS {
            let key = format!("hint-{i:06}").into_bytes();
            let mut object = Object::new();
            object
                .update(
                    &CausalContext::new(),
                    SiblingValue::Data(value.clone()),
                    Dot::new(shoal_proto::Actor(0xAB), i as u64 + 1),
                    T0,
                )
                .expect("fresh dot");
            let request = PeerRequest::Replicate {
                partition: ring.partition_of(&key),
                key,
                object,
                hint_for: Some(target.clone()),
            };
            // Stored as the target would have sent it: an inbound peer request.
            c.nodes[0].engine.handle_request(
                Now::from_virtual(T0),
                InboundId(u64::MAX - i as u64),
                Sender::Node(target.clone()),
                Request::Peer(request),
            );
            c.drain_storage_only(0);
        }
        c
    }

    /// Carry out node `i`'s storage commands only (while storing the hints; the answers to
    /// the hint stores go nowhere).
    fn drain_storage_only(&mut self, i: usize) {
        while let Some(cmd) = self.nodes[i].engine.poll_command() {
            if let Command::Storage { id, op } = cmd {
                let result = self.nodes[i].executor.execute(op);
                self.nodes[i]
                    .engine
                    .handle_storage(Now::from_virtual(self.now), id, result);
            }
        }
    }

    fn push(&mut self, msg: Msg) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + ONE_WAY, self.seq)));
        self.msgs.insert(self.seq, msg);
    }

    /// Carry out every command node `i` has queued.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(cmd) = self.nodes[i].engine.poll_command() {
            self.events += 1;
            assert!(self.events < MAX_EVENTS, "the run does not settle");
            match cmd {
                Command::Storage { id, op } => {
                    let result = self.nodes[i].executor.execute(op);
                    self.nodes[i]
                        .engine
                        .handle_storage(Now::from_virtual(now), id, result);
                }
                Command::Send {
                    id, to, request, ..
                } => {
                    let to = self.nodes.iter().position(|n| n.id == to).expect("member");
                    if i == 0 && matches!(request, PeerRequest::Replicate { .. }) {
                        self.first_delivery.get_or_insert(now);
                    }
                    self.push(Msg::Request {
                        from: i,
                        to,
                        id,
                        request,
                    });
                }
                Command::Respond { id, response } => {
                    let Some((to, rid)) = self.nodes[i].inbound.remove(&id.0) else {
                        continue;
                    };
                    let result = Ok(response.into_peer());
                    self.push(Msg::Response {
                        to,
                        id: rid,
                        result,
                    });
                }
            }
        }
    }

    /// Run until the fallback has delivered every hint; the virtual time it took from the
    /// first delivery.
    fn deliver_all(&mut self) -> Duration {
        while self.nodes[0].engine.handoff_stats().delivered < HINTS as u64 {
            let timer = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.poll_timeout().map(Monotonic::as_virtual))
                .min();
            let msg = self.queue.peek().map(|Reverse((at, _))| *at);
            let next = match (timer, msg) {
                (Some(t), Some(m)) => t.min(m),
                (Some(t), None) => t,
                (None, Some(m)) => m,
                (None, None) => panic!("nothing left to do"),
            };
            self.now = self.now.max(next);
            let now = self.now;
            if msg == Some(next) {
                let Some(Reverse((_, seq))) = self.queue.pop() else {
                    continue;
                };
                match self.msgs.remove(&seq).expect("queued message") {
                    Msg::Request {
                        from,
                        to,
                        id,
                        request,
                    } => {
                        let node = &mut self.nodes[to];
                        let inbound = node.next_inbound;
                        node.next_inbound += 1;
                        node.inbound.insert(inbound, (from, id));
                        let sender = Sender::Node(self.nodes[from].id.clone());
                        self.nodes[to].engine.handle_request(
                            Now::from_virtual(now),
                            InboundId(inbound),
                            sender,
                            Request::Peer(request),
                        );
                        self.drain(to);
                    }
                    Msg::Response { to, id, result } => {
                        self.nodes[to]
                            .engine
                            .handle_response(Now::from_virtual(now), id, result);
                        self.drain(to);
                    }
                }
            } else {
                for i in 0..self.nodes.len() {
                    if self.nodes[i]
                        .engine
                        .poll_timeout()
                        .map(Monotonic::as_virtual)
                        .is_some_and(|t| t <= now)
                    {
                        self.nodes[i].engine.handle_timeout(Now::from_virtual(now));
                        self.drain(i);
                    }
                }
            }
        }
        self.now.saturating_since(self.first_delivery.unwrap_or(T0))
    }
}

fn handoff(c: &mut Criterion) {
    let took = Cluster::with_hints().deliver_all();
    println!(
        "handoff: {HINTS} hints of {VALUE_BYTES} B delivered to one target in {:.4} virtual s \
         from the first delivery ({:.0} hints per virtual second per target; one-way delay \
         {ONE_WAY:?})",
        took.as_secs_f64(),
        HINTS as f64 / took.as_secs_f64()
    );
    let mut g = c.benchmark_group("handoff");
    g.sample_size(10);
    g.throughput(Throughput::Elements(HINTS as u64));
    g.bench_function("deliver_4096_hints_to_one_target", |b| {
        b.iter_batched(
            Cluster::with_hints,
            |mut cluster| cluster.deliver_all(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
