//! A test harness for [`Engine`]s: a cluster of engines, each running its storage ops on
//! the node's own executor (`shoal-executor`, the one the node runs) over an in-memory
//! store, driven by hand (a test feeds one input and asserts the exact commands that come
//! out) or pumped (messages delivered between engines in an order a seeded generator
//! picks).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_executor::Executor;
use shoal_proto::wire::{
    ClientRequest, PeerRequest, PeerResponse, ReadOptions, Request, Response, WriteOptions,
};
use shoal_proto::{
    AaeConfig, Actor, CausalContext, Command, Engine, EngineConfig, HandoffConfig, InboundId,
    LimitsConfig, MembershipConfig, Monotonic, Now, Object, PersistedLayout, ReplicationConfig,
    RequestId, SendError, Sender, StorageOp, StorageReply, Time,
};
use shoal_ring::{Member, NodeId, PartitionId, Ring};
use shoal_storage::MemStorage;

/// When the engines start.
pub const T0: Time = Time::from_micros(1_700_000_000_000_000);

/// The interval of gossip, probes and hint delivery in [`quiet_config`].
pub const PERIOD: Duration = Duration::from_secs(3600);

/// Replicas per key in the tests.
pub const N: usize = 3;

/// [`quiet_config`] whose reads ask every replica at once (a read repair chance of 100%),
/// for tests of what a read does with N replies.
pub fn read_all_config() -> EngineConfig {
    let mut cfg = quiet_config();
    cfg.replication.read_repair_chance_percent = 100;
    cfg
}

/// Settings whose periodic work (gossip, probes, handoff) runs only hourly, so that a test
/// sees it only when it fires those timers itself ([`Cluster::tick`]).
pub fn quiet_config() -> EngineConfig {
    let d = EngineConfig::default();
    EngineConfig {
        replication: ReplicationConfig {
            tombstone_grace: Duration::from_secs(2000 * 3600),
            // Reads ask R replicas, never a sampled all N: tests that need every replica
            // asked say so (`read_repair_chance_percent: 100`).
            read_repair_chance_percent: 0,
            ..d.replication
        },
        membership: MembershipConfig {
            gossip_interval: PERIOD,
            probe_interval: PERIOD,
            // Hand-driven tests mark a peer down with one failed probe round ([`Cluster::tick`]
            // with the peer in `down`): ticks are an hour apart, past `down_after`.
            // `failure_detection` tests the default threshold.
            failure_threshold: 1,
            ..d.membership
        },
        handoff: HandoffConfig {
            interval: PERIOD,
            // Ticks here are an hour apart: hints must outlive many of them.
            ttl: Duration::from_secs(1000 * 3600),
            ..d.handoff
        },
        aae: AaeConfig {
            enabled: false,
            tick: PERIOD,
            ..d.aae
        },
        limits: LimitsConfig {
            max_value_bytes: 1024,
            max_object_bytes: 64 * 1024,
            ..d.limits
        },
    }
}

pub fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid node id")
}

// ---------------------------------------------------------------------------------------
// Message and command builders
// ---------------------------------------------------------------------------------------

pub fn put(key: &[u8], value: &str, context: Option<CausalContext>) -> ClientRequest {
    ClientRequest::Put {
        key: key.to_vec(),
        value: value.as_bytes().to_vec(),
        context,
        options: WriteOptions::default(),
    }
}

pub fn put_w(key: &[u8], value: &str, w: u8) -> ClientRequest {
    ClientRequest::Put {
        key: key.to_vec(),
        value: value.as_bytes().to_vec(),
        context: None,
        options: WriteOptions {
            w: Some(w),
            ..WriteOptions::default()
        },
    }
}

pub fn get(key: &[u8]) -> ClientRequest {
    ClientRequest::Get {
        key: key.to_vec(),
        options: ReadOptions::default(),
    }
}

pub fn replicate(
    partition: PartitionId,
    key: &[u8],
    object: &Object,
    hint_for: Option<&NodeId>,
) -> PeerRequest {
    PeerRequest::Replicate {
        partition,
        key: key.to_vec(),
        object: object.clone(),
        hint_for: hint_for.cloned(),
    }
}

/// A `Send` command as [`without_ids`] shows it.
pub fn send(to: &NodeId, request: PeerRequest, timeout: Duration) -> Command {
    Command::Send {
        id: RequestId(0),
        to: to.clone(),
        request,
        timeout,
    }
}

/// A `Storage` command as [`without_ids`] shows it.
pub fn storage(op: StorageOp) -> Command {
    Command::Storage {
        id: RequestId(0),
        op,
    }
}

pub fn respond(inbound: u64, response: Response) -> Command {
    Command::Respond {
        id: InboundId(inbound),
        response,
    }
}

/// The commands with every engine-chosen id replaced by 0, to compare with expectations.
pub fn without_ids(cmds: &[Command]) -> Vec<Command> {
    cmds.iter()
        .cloned()
        .map(|c| match c {
            Command::Send {
                to,
                request,
                timeout,
                ..
            } => send(&to, request, timeout),
            Command::Storage { op, .. } => storage(op),
            other => other,
        })
        .collect()
}

/// The id of a `Send` or `Storage` command.
pub fn id_of(cmd: &Command) -> RequestId {
    match cmd {
        Command::Send { id, .. } | Command::Storage { id, .. } => *id,
        Command::Respond { .. } => panic!("a Respond has no request id: {cmd:?}"),
    }
}

/// How the driver hands a node's answer back to the node that sent the request.
pub fn as_peer_response(response: Response) -> PeerResponse {
    response.into_peer()
}

// ---------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------

pub struct TestNode {
    pub engine: Engine,
    pub executor: Executor<MemStorage>,
}

impl TestNode {
    /// Run one storage op, as the node's storage workers do.
    fn execute(&self, op: StorageOp) -> StorageReply {
        self.executor
            .execute(op)
            .expect("the in-memory store does not fail")
    }

    pub fn drain(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.engine.poll_command()).collect()
    }
}

/// Who is waiting for the answer to a request a node received (pump mode).
#[derive(Clone, Debug)]
enum Origin {
    Client,
    Peer { from: NodeId, id: RequestId },
}

/// A message in flight between engines (pump mode).
#[derive(Clone, Debug)]
enum Msg {
    Request {
        to: NodeId,
        from: NodeId,
        id: RequestId,
        request: PeerRequest,
    },
    Response {
        to: NodeId,
        id: RequestId,
        result: Result<PeerResponse, SendError>,
    },
}

/// Engines `a`, `b`, ... of one ring, with their stores and a virtual clock.
pub struct Cluster {
    pub cfg: EngineConfig,
    pub ring: Ring,
    pub nodes: BTreeMap<NodeId, TestNode>,
    pub now: Time,
    queue: VecDeque<Msg>,
    origins: BTreeMap<(NodeId, InboundId), Origin>,
    next_inbound: u64,
    /// Answers to client requests submitted with [`Cluster::submit`].
    pub answers: BTreeMap<(NodeId, InboundId), Response>,
    /// Every command every engine emitted in pump mode, in order.
    pub log: Vec<(Time, NodeId, Command)>,
    /// Nodes stopped with [`Cluster::stop`], with the layout state they had then.
    stopped: BTreeMap<NodeId, PersistedLayout>,
    /// In pump mode, requests this rule returns `true` for (given the receiver) are
    /// lost, as [`Cluster::pump`]'s random losses are: the sender sees `Unreachable`.
    pub lose: Option<LossRule>,
}

/// See [`Cluster::lose`].
pub type LossRule = Box<dyn FnMut(&NodeId, &PeerRequest) -> bool>;

impl Cluster {
    /// `nodes` engines on a ring of `q` partitions, all with `cfg` and engine seed `seed`,
    /// past their first round of periodic work (everyone up, nothing to hand off).
    pub fn new(nodes: usize, q: u32, cfg: EngineConfig, seed: u64) -> Cluster {
        Cluster::with_configs(nodes, q, |_| cfg.clone(), seed)
    }

    /// Like [`Cluster::new`], with a config per node.
    pub fn with_configs(
        nodes: usize,
        q: u32,
        cfg_of: impl Fn(&NodeId) -> EngineConfig,
        seed: u64,
    ) -> Cluster {
        let ids: Vec<NodeId> = (0..nodes)
            .map(|i| id(&char::from(b'a' + i as u8).to_string()))
            .collect();
        let ring = Ring::new(q, ids.iter().cloned().map(Member::new).collect()).expect("ring");
        let addresses: Vec<(NodeId, SocketAddr)> = ids
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.clone(),
                    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                )
            })
            .collect();
        let mut map = BTreeMap::new();
        for (i, n) in ids.iter().enumerate() {
            let engine = Engine::new(
                cfg_of(n),
                n.clone(),
                ring.clone(),
                addresses.clone(),
                seed.wrapping_add(i as u64),
                Now::from_virtual(T0),
            )
            .expect("engine");
            let executor =
                Executor::open(MemStorage::new(), || i as u64 + 1).expect("executor opens");
            map.insert(n.clone(), TestNode { engine, executor });
        }
        let mut c = Cluster {
            cfg: cfg_of(&ids[0]),
            ring,
            nodes: map,
            now: T0,
            queue: VecDeque::new(),
            origins: BTreeMap::new(),
            next_inbound: 1,
            answers: BTreeMap::new(),
            log: Vec::new(),
            stopped: BTreeMap::new(),
            lose: None,
        };
        // The first periodic timers are jittered within their first interval: fire them
        // all at once, so that the next ones are a whole interval away.
        c.now = T0 + PERIOD;
        for n in ids {
            let rest = c.tick(&n, &[]);
            for cmd in rest {
                if let Command::Send {
                    id, to, request, ..
                } = cmd
                {
                    // Anti-entropy's first exchanges, where it is enabled: into the
                    // network, delivered by the first pump.
                    c.queue.push_back(Msg::Request {
                        to,
                        from: n.clone(),
                        id,
                        request,
                    });
                    continue;
                }
                let more = c.run_storage(&n, &cmd);
                assert!(more.is_empty(), "nothing to hand off at start: {more:?}");
            }
        }
        c
    }

    /// `n` crashes, its store kept: requests to it fail as unreachable, answers to it are
    /// lost, and its timers do not fire until [`Cluster::restart`]. Only with nothing in
    /// flight (a request it took would never be answered).
    pub fn stop(&mut self, n: &NodeId) {
        assert!(
            self.queue.is_empty(),
            "stop a node only with the network idle"
        );
        let state = self.node(n).engine.persisted_layout_state();
        self.stopped.insert(n.clone(), state);
    }

    /// `n` starts again on its store, as a node does: a new engine (seed `seed`) on the
    /// layout state stored in it (or, if the engine never saved one, the state it had when
    /// it stopped), [`Engine::with_layout`] then [`Engine::restore_agreement`].
    pub fn restart(&mut self, n: &NodeId, seed: u64) {
        let at_stop = self.stopped.remove(n).expect("a stopped node");
        let saved = match self.nodes[n].execute(StorageOp::LoadLayout) {
            StorageReply::Layout(Some(saved)) if saved.seq >= at_stop.seq => *saved,
            _ => at_stop,
        };
        let mut engine = Engine::with_layout(
            self.cfg.clone(),
            n.clone(),
            saved.history.clone(),
            seed,
            Now::from_virtual(self.now),
        )
        .expect("the restarted engine");
        engine.restore_agreement(&saved);
        // Answers addressed to its previous incarnation would match the new one's ids.
        self.queue
            .retain(|m| !matches!(m, Msg::Response { to, .. } if to == n));
        self.node(n).engine = engine;
        self.absorb(n);
    }

    pub fn node(&mut self, n: &NodeId) -> &mut TestNode {
        self.nodes.get_mut(n).expect("a node of the cluster")
    }

    pub fn engine(&self, n: &NodeId) -> &Engine {
        &self.nodes[n].engine
    }

    pub fn actor(&self, n: &NodeId) -> Actor {
        self.nodes[n].executor.actor()
    }

    /// The preference list of `key`.
    pub fn prefs(&self, key: &[u8]) -> Vec<NodeId> {
        self.ring.preference_list_for_key(key, N).nodes
    }

    /// The fallbacks of `key`, in walk order.
    pub fn fallbacks(&self, key: &[u8]) -> Vec<NodeId> {
        self.ring.fallbacks(self.ring.partition_of(key), N)
    }

    pub fn partition(&self, key: &[u8]) -> PartitionId {
        self.ring.partition_of(key)
    }

    /// The first key `key-<i>` whose preference list satisfies `pred`.
    pub fn key_where(&self, pred: impl Fn(&[NodeId]) -> bool) -> Vec<u8> {
        (0..100_000)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|k| pred(&self.prefs(k)))
            .expect("some key matches")
    }

    /// The object `n` stores for `key`.
    pub fn stored(&self, n: &NodeId, key: &[u8]) -> Option<Object> {
        let partition = self.partition(key);
        self.nodes[n]
            .executor
            .stored_object(partition, key)
            .expect("the in-memory store does not fail")
    }

    /// Store `object` for `key` on `n` directly, bypassing its engine (a replica's state
    /// before a test). Merged into what `n` stores: on a fresh key, that is `object`.
    pub fn preload(&mut self, n: &NodeId, key: &[u8], object: &Object) {
        let op = StorageOp::Merge {
            partition: self.partition(key),
            key: key.to_vec(),
            object: object.clone(),
            max_object_bytes: usize::MAX,
        };
        let reply = self.nodes[n].execute(op);
        assert!(matches!(reply, StorageReply::Merged { .. }), "{reply:?}");
    }

    /// Reap `n`'s copy of `key` directly, bypassing its engine, as a reap of it ends on
    /// `n` (only if the copy is still the one read here).
    pub fn reap_stored(&mut self, n: &NodeId, key: &[u8]) {
        let partition = self.partition(key);
        let object = self.stored(n, key).expect("a stored copy to reap");
        let op = StorageOp::Reap {
            partition,
            keys: vec![(key.to_vec(), object.digest())],
        };
        let reply = self.nodes[n].execute(op);
        assert_eq!(reply, StorageReply::Reaped(1));
    }

    /// How many hints `n` keeps, for every target.
    pub fn hint_count(&self, n: &NodeId) -> u64 {
        match self.nodes[n].execute(StorageOp::HintSummary) {
            StorageReply::HintSummary(totals) => totals.iter().map(|(_, t)| t.count).sum(),
            other => panic!("a hint summary answers totals: {other:?}"),
        }
    }

    // ---- hand-driven ----

    /// A client request arrives at `n` as inbound `inbound`; the commands it emits.
    pub fn client(&mut self, n: &NodeId, inbound: u64, req: ClientRequest) -> Vec<Command> {
        let now = self.now;
        let node = self.node(n);
        node.engine.handle_request(
            Now::from_virtual(now),
            InboundId(inbound),
            Sender::Client("alice".into()),
            Request::Client(req),
        );
        node.drain()
    }

    /// A request from `from` (any sender) arrives at `n`; the commands it emits.
    pub fn request(
        &mut self,
        n: &NodeId,
        inbound: u64,
        from: Sender,
        req: Request,
    ) -> Vec<Command> {
        let now = self.now;
        let node = self.node(n);
        node.engine
            .handle_request(Now::from_virtual(now), InboundId(inbound), from, req);
        node.drain()
    }

    /// A peer request from node `from` arrives at `n`.
    pub fn peer(
        &mut self,
        n: &NodeId,
        inbound: u64,
        from: &NodeId,
        req: PeerRequest,
    ) -> Vec<Command> {
        self.request(n, inbound, Sender::Node(from.clone()), Request::Peer(req))
    }

    /// Run the `Storage` command `cmd` of `n` on its store and feed the reply back.
    pub fn run_storage(&mut self, n: &NodeId, cmd: &Command) -> Vec<Command> {
        self.run_storage_then(n, cmd, Engine::handle_storage)
    }

    /// Group commit: run the `Storage` command `cmd` of `n` (a coordinator's local write)
    /// on its store and hand the engine the result as applied, not yet synced
    /// ([`shoal_proto::Engine::handle_storage_applied`]); [`Cluster::synced`] ends it.
    pub fn run_storage_applied(&mut self, n: &NodeId, cmd: &Command) -> Vec<Command> {
        self.run_storage_then(n, cmd, Engine::handle_storage_applied)
    }

    /// Run the `Storage` command `cmd` of `n` on its store, hand the reply to `n`'s
    /// engine with `deliver`, and return the commands that follow.
    fn run_storage_then(
        &mut self,
        n: &NodeId,
        cmd: &Command,
        deliver: fn(&mut Engine, Now, RequestId, shoal_proto::StorageResult),
    ) -> Vec<Command> {
        let Command::Storage { id, op } = cmd else {
            panic!("not a storage command: {cmd:?}");
        };
        let now = self.now;
        let node = self.node(n);
        let reply = node.executor.execute(op.clone());
        deliver(&mut node.engine, Now::from_virtual(now), *id, reply);
        node.drain()
    }

    /// Group commit: the sync covering `n`'s write `cmd` (applied earlier) ended with
    /// `result` ([`shoal_proto::StorageReply::Synced`] or a failure).
    pub fn synced(
        &mut self,
        n: &NodeId,
        cmd: &Command,
        result: shoal_proto::StorageResult,
    ) -> Vec<Command> {
        let now = self.now;
        let node = self.node(n);
        node.engine
            .handle_storage(Now::from_virtual(now), id_of(cmd), result);
        node.drain()
    }

    /// The outcome of `n`'s `Send` command `cmd` arrives.
    pub fn reply(
        &mut self,
        n: &NodeId,
        cmd: &Command,
        result: Result<PeerResponse, SendError>,
    ) -> Vec<Command> {
        let now = self.now;
        let node = self.node(n);
        node.engine
            .handle_response(Now::from_virtual(now), id_of(cmd), result);
        node.drain()
    }

    /// Advance the clock to `at` and run `n`'s timers due then.
    pub fn timeout(&mut self, n: &NodeId, at: Time) -> Vec<Command> {
        self.now = at;
        let node = self.node(n);
        node.engine.handle_timeout(Now::from_virtual(at));
        node.drain()
    }

    /// Fire `n`'s next timers (its periodic work), answer its pings and gossip (nodes in
    /// `down` are unreachable, the others answer), and return its other commands.
    pub fn tick(&mut self, n: &NodeId, down: &[NodeId]) -> Vec<Command> {
        let at = Monotonic::as_virtual(
            self.engine(n)
                .poll_timeout()
                .expect("periodic timers are always armed"),
        );
        self.now = self.now.max(at);
        let now = self.now;
        self.node(n).engine.handle_timeout(Now::from_virtual(now));
        let cmds = self.node(n).drain();
        let mut rest = Vec::new();
        for cmd in cmds {
            let result = match &cmd {
                Command::Send {
                    to,
                    request: PeerRequest::Ping | PeerRequest::Gossip(_),
                    ..
                } if down.contains(to) => Err(SendError::Unreachable("connection refused".into())),
                Command::Send {
                    request: PeerRequest::Ping,
                    ..
                } => Ok(PeerResponse::Pong),
                Command::Send {
                    to,
                    request: PeerRequest::Gossip(_),
                    ..
                } => Ok(PeerResponse::Gossip(self.engine(to).membership().digest())),
                _ => {
                    rest.push(cmd);
                    continue;
                }
            };
            rest.extend(self.reply(n, &cmd, result));
        }
        rest
    }

    // ---- pumped ----

    /// Submit a client request at `n`; its answer lands in [`Cluster::answers`].
    pub fn submit(&mut self, n: &NodeId, req: ClientRequest) -> (NodeId, InboundId) {
        let inbound = InboundId(self.next_inbound);
        self.next_inbound += 1;
        self.origins.insert((n.clone(), inbound), Origin::Client);
        let now = self.now;
        self.node(n).engine.handle_request(
            Now::from_virtual(now),
            inbound,
            Sender::Client("alice".into()),
            Request::Client(req),
        );
        self.absorb(n);
        (n.clone(), inbound)
    }

    /// Carry out `n`'s commands: storage at once, sends into the network, answers back
    /// to whoever asked.
    fn absorb(&mut self, n: &NodeId) {
        loop {
            let cmds = self.node(n).drain();
            if cmds.is_empty() {
                return;
            }
            for cmd in cmds {
                self.log.push((self.now, n.clone(), cmd.clone()));
                match cmd {
                    Command::Storage { id, op } => {
                        let now = self.now;
                        let node = self.node(n);
                        let reply = node.executor.execute(op);
                        node.engine
                            .handle_storage(Now::from_virtual(now), id, reply);
                    }
                    Command::Send {
                        id, to, request, ..
                    } => self.queue.push_back(Msg::Request {
                        to,
                        from: n.clone(),
                        id,
                        request,
                    }),
                    Command::Respond { id, response } => {
                        match self.origins.remove(&(n.clone(), id)) {
                            Some(Origin::Client) => {
                                self.answers.insert((n.clone(), id), response);
                            }
                            Some(Origin::Peer { from, id }) => {
                                self.queue.push_back(Msg::Response {
                                    to: from,
                                    id,
                                    result: Ok(as_peer_response(response)),
                                })
                            }
                            None => panic!("{n} answered unknown request {id:?}"),
                        }
                    }
                }
            }
        }
    }

    /// Deliver messages until `done` holds and the network is empty. With `rng`, the next
    /// message is a random one in flight and a request is lost with probability
    /// `loss`; without, messages go in order. Idle time jumps to the next timer.
    pub fn pump(
        &mut self,
        mut rng: Option<&mut ChaCha8Rng>,
        loss: f64,
        done: impl Fn(&Cluster) -> bool,
    ) {
        for _ in 0..1_000_000 {
            if self.queue.is_empty() && done(self) {
                return;
            }
            self.step(rng.as_deref_mut(), loss);
        }
        panic!("the cluster did not settle");
    }

    /// Delivers messages in order until `done` holds, checked after every step (not only
    /// when the network is empty): to observe a state half way through.
    pub fn pump_until(&mut self, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..1_000_000 {
            if done(self) {
                return;
            }
            self.step(None, 0.0);
        }
        panic!("the condition never held");
    }

    /// One step: delivers the next message (see [`Cluster::pump`]), or with none in
    /// flight jumps to the next timer; then fires the timers due.
    fn step(&mut self, rng: Option<&mut ChaCha8Rng>, loss: f64) {
        if self.queue.is_empty() {
            let next = self
                .nodes
                .iter()
                .filter(|(id, _)| !self.stopped.contains_key(*id))
                .filter_map(|(_, n)| n.engine.poll_timeout())
                .min()
                .map(Monotonic::as_virtual)
                .expect("timers are always armed");
            self.now = self.now.max(next);
        } else {
            let (i, lost) = match rng {
                Some(r) => (r.random_range(0..self.queue.len()), r.random_bool(loss)),
                None => (0, false),
            };
            let msg = self.queue.remove(i).expect("index in range");
            let ruled = match (&msg, self.lose.as_mut()) {
                (Msg::Request { to, request, .. }, Some(rule)) => rule(to, request),
                _ => false,
            };
            self.now = self.now + Duration::from_micros(100);
            self.deliver(msg, lost || ruled);
        }
        let now = self.now;
        let due: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, n)| {
                !self.stopped.contains_key(*id)
                    && n.engine
                        .poll_timeout()
                        .is_some_and(|t| Monotonic::as_virtual(t) <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for n in due {
            self.node(&n).engine.handle_timeout(Now::from_virtual(now));
            self.absorb(&n);
        }
    }

    fn deliver(&mut self, msg: Msg, lost: bool) {
        let now = self.now;
        match msg {
            Msg::Request { to, from, id, .. } if lost => self.queue.push_back(Msg::Response {
                to: from,
                id,
                result: Err(SendError::Unreachable(format!("{to} lost the message"))),
            }),
            Msg::Request { to, from, id, .. } if self.stopped.contains_key(&to) => {
                self.queue.push_back(Msg::Response {
                    to: from,
                    id,
                    result: Err(SendError::Unreachable(format!("{to} is stopped"))),
                })
            }
            Msg::Response { to, .. } if self.stopped.contains_key(&to) => {}
            Msg::Request {
                to,
                from,
                id,
                request,
            } => {
                let inbound = InboundId(self.next_inbound);
                self.next_inbound += 1;
                self.origins.insert(
                    (to.clone(), inbound),
                    Origin::Peer {
                        from: from.clone(),
                        id,
                    },
                );
                self.node(&to).engine.handle_request(
                    Now::from_virtual(now),
                    inbound,
                    Sender::Node(from),
                    Request::Peer(request),
                );
                self.absorb(&to);
            }
            Msg::Response { to, id, result } => {
                self.node(&to)
                    .engine
                    .handle_response(Now::from_virtual(now), id, result);
                self.absorb(&to);
            }
        }
    }
}

/// A generator for [`Cluster::pump`].
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
