//! Layout agreement under faults (issue 9: "at most one layout ever exists per version,
//! also under concurrent commits from two operators, partitions and crashes").
//!
//! A deterministic simulation of its own, beside the data-path simulator: five real
//! engines with the real executor on in-memory storage, one seeded RNG deciding every
//! delivery order, loss, partition, crash and restart, and two operators on different
//! nodes that keep staging a change and committing it against the version their node
//! shows, at the same moments. A crashed node loses its engine and everything in flight;
//! it restarts from its storage (the persisted history and Paxos acceptor state).
//!
//! The checker holds every layout any node ever held (live, or loaded from storage at a
//! restart) per version, and fails on a second, different one; a commit answered
//! `Committed { version }` must be the layout decided for that version.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_executor::Executor;
use shoal_proto::layout::{Layout, MemberState};
use shoal_proto::wire::{
    ClientRequest, ClientResponse, ClusterReply, ClusterRequest, PeerRequest, PeerResponse,
    Request, Response, StageRequest,
};
use shoal_proto::{
    AaeConfig, Command, Engine, EngineConfig, InboundId, Monotonic, Now, RequestError, RequestId,
    SendError, Sender, StorageOp, StorageReply, Time,
};
use shoal_ring::{Member, NodeId, Ring};
use shoal_storage::MemStorage;

const NODES: usize = 5;
const Q: u32 = 64;
const RUN: Duration = Duration::from_secs(90);
const T0: Time = Time::from_micros(1_700_000_000_000_000);

fn id(i: usize) -> NodeId {
    NodeId::new(char::from(b'a' + i as u8).to_string()).expect("id")
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

fn config() -> EngineConfig {
    let d = EngineConfig::default();
    EngineConfig {
        aae: AaeConfig {
            enabled: false,
            ..d.aae
        },
        ..d
    }
}

enum Msg {
    Request {
        from: usize,
        from_inc: u64,
        to: usize,
        id: RequestId,
        request: PeerRequest,
        stamp: shoal_proto::wire::LayoutStamp,
    },
    Response {
        to: usize,
        to_inc: u64,
        id: RequestId,
        result: Result<PeerResponse, SendError>,
    },
}

/// Who waits for a node's answer.
enum Origin {
    Operator,
    Peer {
        from: usize,
        from_inc: u64,
        id: RequestId,
    },
}

struct Node {
    data: MemStorage,
    running: Option<(Engine, Executor<MemStorage>)>,
    incarnation: u64,
    inbound: BTreeMap<u64, Origin>,
    next_inbound: u64,
}

/// An operator on one node: unstage, stage the leave of `target`, commit.
struct Operator {
    node: usize,
    target: usize,
    step: u8,
    waiting: Option<u64>,
    next_at: Time,
}

#[derive(Default, Debug)]
struct Counts {
    committed: u64,
    lost: u64,
    failed: u64,
    refused: u64,
    crashes: u64,
    partitions: u64,
    versions: u64,
}

struct Sim {
    rng: ChaCha8Rng,
    now: Time,
    nodes: Vec<Node>,
    queue: Vec<Msg>,
    /// Side of each node while a partition holds.
    side: Option<Vec<bool>>,
    decided: BTreeMap<u64, Layout>,
    operators: Vec<Operator>,
    counts: Counts,
    seed: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut s = Sim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: T0,
            nodes: (0..NODES)
                .map(|_| Node {
                    data: MemStorage::new(),
                    running: None,
                    incarnation: 0,
                    inbound: BTreeMap::new(),
                    next_inbound: 1,
                })
                .collect(),
            queue: Vec::new(),
            side: None,
            decided: BTreeMap::new(),
            operators: vec![
                Operator {
                    node: 0,
                    target: 3,
                    step: 0,
                    waiting: None,
                    next_at: T0,
                },
                Operator {
                    node: 1,
                    target: 4,
                    step: 0,
                    waiting: None,
                    next_at: T0,
                },
            ],
            counts: Counts::default(),
            seed,
        };
        for i in 0..NODES {
            s.start(i);
        }
        s
    }

    fn start(&mut self, i: usize) {
        let actor = self.rng.random::<u64>() | 1;
        let executor = Executor::open(self.nodes[i].data.reopen(), || actor).expect("opens");
        let now = Now::from_virtual(self.now);
        let engine = match executor.execute(StorageOp::LoadLayout) {
            Ok(StorageReply::Layout(Some(saved))) => {
                for l in saved.history.versions() {
                    self.check(i, l);
                }
                let mut e = Engine::with_layout(
                    config(),
                    id(i),
                    saved.history.clone(),
                    self.rng.random(),
                    now,
                )
                .expect("engine from the stored layout");
                e.restore_agreement(&saved);
                e
            }
            _ => {
                let ids: Vec<Member> = (0..NODES).map(|j| Member::new(id(j))).collect();
                let ring = Ring::new(Q, ids).expect("ring");
                let addresses = (0..NODES).map(|j| (id(j), addr(j))).collect();
                let mut e = Engine::new(config(), id(i), ring, addresses, self.rng.random(), now)
                    .expect("engine");
                let state = e.persisted_layout_state();
                executor
                    .execute(StorageOp::SaveLayout(Box::new(state)))
                    .expect("saved");
                e
            }
        };
        let n = &mut self.nodes[i];
        n.incarnation += 1;
        n.running = Some((engine, executor));
        self.absorb(i);
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some((_, executor)) = n.running.take() else {
            return;
        };
        executor.storage().kill();
        self.counts.crashes += 1;
        // Every request it was answering times out at its sender.
        for (_, origin) in std::mem::take(&mut n.inbound) {
            if let Origin::Peer { from, from_inc, id } = origin {
                self.queue.push(Msg::Response {
                    to: from,
                    to_inc: from_inc,
                    id,
                    result: Err(SendError::Timeout),
                });
            }
        }
        for op in &mut self.operators {
            if op.node == i {
                op.waiting = None;
                op.step = 0;
            }
        }
    }

    fn check(&mut self, node: usize, l: &Layout) {
        match self.decided.get(&l.version()) {
            Some(d) => assert!(
                d == l,
                "seed {}: node {} holds another layout for version {}",
                self.seed,
                id(node),
                l.version()
            ),
            None => {
                self.counts.versions += 1;
                self.decided.insert(l.version(), l.clone());
            }
        }
    }

    fn check_all(&mut self) {
        let held: Vec<(usize, Layout)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.running.as_ref().map(|(e, _)| (i, e)))
            .flat_map(|(i, e)| e.layout().versions().iter().map(move |l| (i, l.clone())))
            .collect();
        for (i, l) in held {
            self.check(i, &l);
        }
    }

    /// Carry out node `i`'s commands.
    fn absorb(&mut self, i: usize) {
        loop {
            let inc = self.nodes[i].incarnation;
            let Some((engine, executor)) = self.nodes[i].running.as_mut() else {
                return;
            };
            let Some(cmd) = engine.poll_command() else {
                return;
            };
            match cmd {
                Command::Storage { id, op } => {
                    let reply = executor.execute(op);
                    engine.handle_storage(Now::from_virtual(self.now), id, reply);
                }
                Command::Send {
                    id, to, request, ..
                } => {
                    let to = (0..NODES).find(|j| self::id(*j) == to).expect("a node");
                    let stamp = engine.stamp();
                    self.queue.push(Msg::Request {
                        from: i,
                        from_inc: inc,
                        to,
                        id,
                        request,
                        stamp,
                    });
                }
                Command::Respond { id, response } => match self.nodes[i].inbound.remove(&id.0) {
                    Some(Origin::Peer { from, from_inc, id }) => {
                        let result = Ok(response.into_peer());
                        self.queue.push(Msg::Response {
                            to: from,
                            to_inc: from_inc,
                            id,
                            result,
                        });
                    }
                    Some(Origin::Operator) => self.on_answer(i, id.0, response),
                    None => panic!("seed {}: unknown inbound {id:?}", self.seed),
                },
            }
        }
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.side.as_ref().is_some_and(|s| s[a] != s[b])
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Request {
                from,
                from_inc,
                to,
                id,
                request,
                stamp,
            } => {
                let lost = self.rng.random_bool(0.05);
                if lost || self.cut(from, to) || self.nodes[to].running.is_none() {
                    self.queue.push(Msg::Response {
                        to: from,
                        to_inc: from_inc,
                        id,
                        result: Err(SendError::Timeout),
                    });
                    return;
                }
                let n = &mut self.nodes[to];
                let inbound = n.next_inbound;
                n.next_inbound += 1;
                n.inbound
                    .insert(inbound, Origin::Peer { from, from_inc, id });
                let now = Now::from_virtual(self.now);
                if let Some((e, _)) = n.running.as_mut() {
                    e.handle_request(
                        now,
                        InboundId(inbound),
                        Sender::Node(self::id(from)),
                        Request::Stamped(stamp, request),
                    );
                }
                self.absorb(to);
            }
            Msg::Response {
                to,
                to_inc,
                id,
                result,
            } => {
                if self.nodes[to].incarnation != to_inc {
                    return;
                }
                let now = Now::from_virtual(self.now);
                if let Some((e, _)) = self.nodes[to].running.as_mut() {
                    e.handle_response(now, id, result);
                }
                self.absorb(to);
            }
        }
    }

    fn operate(&mut self) {
        for k in 0..self.operators.len() {
            let op = &self.operators[k];
            let i = op.node;
            if op.waiting.is_some() || op.next_at > self.now {
                continue;
            }
            let Some((engine, _)) = self.nodes[i].running.as_ref() else {
                continue;
            };
            let req = match op.step {
                0 => ClusterRequest::Unstage,
                1 => {
                    // Leave the target, or, once it left, any other non-operator node.
                    let current = engine.layout().current();
                    let target = [op.target, 2, 3, 4]
                        .into_iter()
                        .find(|t| {
                            current
                                .member(&id(*t))
                                .is_some_and(|m| m.state == MemberState::Active)
                        })
                        .unwrap_or(op.target);
                    ClusterRequest::Stage(StageRequest::Leave { id: id(target) })
                }
                _ => ClusterRequest::Commit {
                    version: engine.layout().version(),
                },
            };
            let n = &mut self.nodes[i];
            let inbound = n.next_inbound;
            n.next_inbound += 1;
            n.inbound.insert(inbound, Origin::Operator);
            self.operators[k].waiting = Some(inbound);
            let now = Now::from_virtual(self.now);
            if let Some((e, _)) = n.running.as_mut() {
                e.handle_request(
                    now,
                    InboundId(inbound),
                    Sender::Client("operator".into()),
                    Request::Client(ClientRequest::Cluster(req)),
                );
            }
            self.absorb(i);
        }
    }

    fn on_answer(&mut self, node: usize, inbound: u64, response: Response) {
        let Some(k) = self
            .operators
            .iter()
            .position(|o| o.node == node && o.waiting == Some(inbound))
        else {
            return;
        };
        let step = self.operators[k].step;
        let answer = match response {
            Response::Client(ClientResponse::Cluster(r)) => Ok(r),
            Response::Client(ClientResponse::Error(e)) => Err(e),
            other => panic!("seed {}: not a cluster answer: {other:?}", self.seed),
        };
        let next = match (step, &answer) {
            (0, _) => 1,
            (1, Ok(_)) => 2,
            (1, Err(_)) => {
                self.counts.refused += 1;
                0
            }
            (_, Ok(ClusterReply::Committed { version })) => {
                self.counts.committed += 1;
                self.check_all();
                assert!(
                    self.decided.contains_key(version),
                    "seed {}: version {version} committed but no node holds it",
                    self.seed
                );
                0
            }
            (_, Err(RequestError::LayoutRefused(why))) if why.contains("decided version") => {
                self.counts.lost += 1;
                0
            }
            (_, Err(RequestError::LayoutRefused(why))) if why.contains("no majority") => {
                self.counts.failed += 1;
                0
            }
            (_, Err(_)) => {
                self.counts.refused += 1;
                0
            }
            (_, Ok(other)) => panic!("seed {}: unexpected commit answer {other:?}", self.seed),
        };
        let pause = Duration::from_millis(self.rng.random_range(0..1500));
        let op = &mut self.operators[k];
        op.waiting = None;
        op.step = next;
        // Both operators commit at the same moments: the next step of a commit waits a
        // little, a new attempt waits for the next whole second.
        op.next_at = if next == 0 {
            let secs = (self.now.saturating_since(T0).as_secs()) + 1;
            T0 + Duration::from_secs(secs)
        } else {
            self.now + pause / 100
        };
    }

    fn next_timer(&self) -> Option<Time> {
        self.nodes
            .iter()
            .filter_map(|n| n.running.as_ref())
            .filter_map(|(e, _)| e.poll_timeout())
            .map(Monotonic::as_virtual)
            .min()
    }

    fn run(&mut self) {
        let end = T0 + RUN;
        let mut next_fault = T0 + Duration::from_secs(2);
        let mut restart_at: BTreeMap<usize, Time> = BTreeMap::new();
        while self.now < end {
            // Faults: a partition changes, a node crashes, crashed nodes restart.
            if self.now >= next_fault {
                next_fault = self.now + Duration::from_millis(self.rng.random_range(500..4000));
                match self.rng.random_range(0..4) {
                    0 => self.side = None,
                    1 => {
                        self.counts.partitions += 1;
                        self.side = Some((0..NODES).map(|_| self.rng.random_bool(0.5)).collect());
                    }
                    2 => {
                        let i = self.rng.random_range(0..NODES);
                        if self.nodes[i].running.is_some() {
                            self.crash(i);
                            let back =
                                self.now + Duration::from_millis(self.rng.random_range(200..3000));
                            restart_at.insert(i, back);
                        }
                    }
                    _ => {}
                }
            }
            let due: Vec<usize> = restart_at
                .iter()
                .filter(|(_, t)| **t <= self.now)
                .map(|(i, _)| *i)
                .collect();
            for i in due {
                restart_at.remove(&i);
                self.start(i);
            }
            self.operate();
            if !self.queue.is_empty() && self.rng.random_bool(0.95) {
                let k = self.rng.random_range(0..self.queue.len());
                let msg = self.queue.swap_remove(k);
                self.now = self.now + Duration::from_micros(self.rng.random_range(50..2000));
                self.deliver(msg);
            } else {
                let t = self
                    .next_timer()
                    .unwrap_or(self.now + Duration::from_millis(10))
                    .min(self.now + Duration::from_millis(50))
                    .max(self.now + Duration::from_micros(100));
                self.now = t;
            }
            let now = self.now;
            for i in 0..NODES {
                let due = self.nodes[i]
                    .running
                    .as_ref()
                    .and_then(|(e, _)| e.poll_timeout())
                    .is_some_and(|t| t.as_virtual() <= now);
                if due {
                    if let Some((e, _)) = self.nodes[i].running.as_mut() {
                        e.handle_timeout(Now::from_virtual(now));
                    }
                    self.absorb(i);
                }
            }
            self.check_all();
        }
        // Every node, restarted, reloads a history that agrees with what was decided.
        for i in 0..NODES {
            self.crash(i);
            self.start(i);
        }
        self.check_all();
    }
}

#[test]
fn concurrent_commits_under_crashes_and_partitions_decide_one_layout_per_version() {
    let seeds: u64 = std::env::var("SHOAL_LAYOUT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let mut total = Counts::default();
    for seed in 0..seeds {
        let mut sim = Sim::new(seed);
        sim.run();
        let c = &sim.counts;
        total.committed += c.committed;
        total.lost += c.lost;
        total.failed += c.failed;
        total.refused += c.refused;
        total.crashes += c.crashes;
        total.partitions += c.partitions;
        total.versions += c.versions;
    }
    eprintln!("{seeds} seeds: {total:?}");
    // The runs did contend: commits were decided, and some lost to a concurrent one.
    assert!(total.committed > 0, "{total:?}");
    assert!(total.lost > 0, "{total:?}");
    assert!(total.crashes > 0 && total.partitions > 0, "{total:?}");
}
