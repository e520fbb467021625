//! The driver task: it owns the [`Engine`], feeds it requests, completions and
//! timeouts, and carries out the commands it emits — peer requests as tokio tasks,
//! storage operations on the worker threads.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_proto::wire::{
    decode_response, encode_request_as, peer_request_len, PeerRequest, PeerResponse, Request,
    Response, WireVersion, MAX_BATCH_BYTES, MAX_PEER_BATCH,
};
use shoal_proto::{
    split_at_sync, Command, Engine, InboundId, Monotonic, Now, ReplicaReadGateKey, RequestError,
    RequestId, SendError, StorageFailure, StorageOp, StorageResult, Time,
};
use shoal_ring::NodeId;
use shoal_storage::Storage;
use shoal_transport::{Endpoint, TransportError};
use tokio::sync::{mpsc, oneshot, watch};

use super::handler;
use super::peer_failures::PeerFailures;
use super::peer_versions::PeerVersions;
use super::{Completion, Inbound};
use shoal_executor::Executor;
use shoal_metric_handles::Handles;

pub(super) static STORAGE_OP_DURATION: Handles<metrics::Histogram, 1> =
    Handles::histogram(crate::metrics::EXECUTOR_OP_DURATION_SECONDS, ["op"]);
static STORAGE_OP_ERRORS: Handles<metrics::Counter, 1> =
    Handles::counter(crate::metrics::EXECUTOR_ERRORS_TOTAL, ["op"]);
static PEER_REQUESTS: Handles<metrics::Counter, 2> =
    Handles::counter(crate::metrics::PEER_REQUESTS_TOTAL, ["op", "result"]);

/// The engine's two clocks: wall-clock time (never going backwards) for what is stored,
/// and the process's monotonic clock (counted from the clock's creation) for timers and
/// failure detection, which a wall-clock step must neither fire early nor stall.
#[derive(Debug)]
pub(super) struct Clock {
    last: Time,
    origin: Instant,
}

impl Clock {
    /// A clock that has not been read yet.
    pub(super) fn new() -> Clock {
        Clock {
            last: Time::ZERO,
            origin: Instant::now(),
        }
    }

    /// The current time: the wall clock (or the last wall time returned if the wall
    /// clock went back) and the monotonic clock.
    pub(super) fn now(&mut self) -> Now {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let t = Time::from_duration(wall);
        if t > self.last {
            self.last = t;
        }
        Now::new(self.last, self.mono())
    }

    /// The monotonic clock alone.
    fn mono(&self) -> Monotonic {
        Monotonic::from_duration(self.origin.elapsed())
    }
}

/// Runs a storage op on the driver's thread when it can without blocking
/// (`Executor::try_execute`: a replica read from memory; with `storage.inline_writes`, a
/// coordinator's write or a replica's merge whose key, object and write need no wait);
/// `None` when it would block, and for every other op.
pub(super) type InlineOps = Arc<dyn Fn(&StorageOp) -> Option<StorageResult> + Send + Sync>;

/// What `shoal_executor_op_duration_seconds` calls an op run on the driver's thread;
/// `None` for the ops that always go to a storage thread.
fn inline_label(op: &StorageOp) -> Option<&'static str> {
    match op {
        StorageOp::Read { .. } => Some("read_in_memory"),
        StorageOp::Coordinate { .. } => Some("coordinate_inline"),
        StorageOp::Merge { .. } => Some("merge_inline"),
        _ => None,
    }
}

/// Hands the WAL records of the writes run on the driver's thread to the OS
/// (`Storage::write_out_wal`); see [`Driver::with_wal_write_out`].
pub(super) type WalWriteOut = Arc<dyn Fn() -> Result<(), StorageFailure> + Send + Sync>;

static WAL_WRITE_OUT_SECONDS: Handles<metrics::Histogram, 0> =
    Handles::histogram(crate::metrics::WAL_WRITE_OUT_SECONDS, []);
static WAL_WRITE_OUT_WRITES: Handles<metrics::Histogram, 0> =
    Handles::histogram(crate::metrics::WAL_WRITE_OUT_WRITES, []);
static WAL_WRITE_OUT_FAILURES: Handles<metrics::Counter, 0> =
    Handles::counter(crate::metrics::WAL_WRITE_OUT_FAILURES_TOTAL, []);

/// Runs `write_out`, timed (`shoal_wal_write_out_seconds`), a failure counted
/// (`shoal_wal_write_out_failures_total`) and logged with `what` it covered: the driver's
/// write-out of a round and the request handler's of the replica writes it merged.
pub(super) fn write_out_timed(write_out: &WalWriteOut, what: &str) -> Result<(), StorageFailure> {
    let start = Instant::now();
    let written = write_out();
    WAL_WRITE_OUT_SECONDS
        .one()
        .record(start.elapsed().as_secs_f64());
    if let Err(e) = &written {
        tracing::error!(error = %e, "writing out the write-ahead log failed: {what} it covered are reported failed");
        WAL_WRITE_OUT_FAILURES.one().increment(1);
    }
    written
}

static INLINE_DECLINED: Handles<metrics::Counter, 1> =
    Handles::counter(crate::metrics::STORAGE_INLINE_DECLINED_TOTAL, ["op"]);

/// A storage worker thread: runs the operations the driver queues, one at a time, until
/// the queue closes or the driver is gone. With `commit` (group commit, see
/// `group_commit.rs`), the completion of an op that wrote goes through the committer,
/// which releases it once the WAL is synced.
pub(super) fn storage_worker<S: Storage>(
    exec: Arc<Executor<S>>,
    rx: crossbeam::channel::Receiver<(RequestId, StorageOp)>,
    done: mpsc::UnboundedSender<Completion>,
    commit: Option<crossbeam::channel::Sender<Completion>>,
) {
    while let Ok((id, op)) = rx.recv() {
        let name = op.op_name();
        let writes = op.writes();
        let start = Instant::now();
        let result = exec.execute(op);
        STORAGE_OP_DURATION
            .get([name])
            .record(start.elapsed().as_secs_f64());
        if result.is_err() {
            STORAGE_OP_ERRORS.get([name]).increment(1);
        }
        let sent = match &commit {
            Some(commit) if writes => {
                let (applied, synced) = split_at_sync(result);
                applied.is_none_or(|result| done.send(Completion::Applied { id, result }).is_ok())
                    && commit
                        .send(Completion::Storage { id, result: synced })
                        .is_ok()
            }
            _ => done.send(Completion::Storage { id, result }).is_ok(),
        };
        if !sent {
            return;
        }
    }
}

/// At most this many inputs (completions and requests) are handled per wake-up of the
/// driver before their commands are carried out.
const MAX_INPUTS_PER_WAKE: usize = 32;

/// The engine and what it needs to carry out its commands.
pub(super) struct Driver {
    engine: Engine,
    clock: Clock,
    /// Who waits for each request's answer, and whether it is a client's keyed request
    /// (its answer carries the layout version, so that the client learns a newer one).
    inbound: HashMap<u64, (oneshot::Sender<Response>, bool)>,
    next_inbound: u64,
    endpoint: Endpoint,
    addrs: HashMap<NodeId, SocketAddr>,
    storage_tx: crossbeam::channel::Sender<(RequestId, StorageOp)>,
    done_tx: mpsc::UnboundedSender<Completion>,
    /// Where the engine's replica-read rules are published for the request handler
    /// ([`Driver::with_replica_reads`]), and what the last published gate was built
    /// from.
    replica_reads: Option<(
        Arc<super::replica_reads::ReplicaReads>,
        Option<ReplicaReadGateKey>,
    )>,
    /// Ops run on this thread when they need no wait ([`Driver::with_inline_ops`]);
    /// without it every op goes to a storage thread.
    inline_ops: Option<InlineOps>,
    /// With group commit: where a write run on this thread sends its completion, to be
    /// released once the WAL is synced, and how many storage threads also send there
    /// ([`Driver::with_group_commit`]).
    commit: Option<(crossbeam::channel::Sender<Completion>, usize)>,
    /// With a store that buffers the WAL records of the writes run here: how to hand them
    /// to the OS ([`Driver::with_wal_write_out`]), and the results of the writes not yet
    /// handed, which reach the engine only once they are.
    wal_write_out: Option<WalWriteOut>,
    unwritten: Vec<(RequestId, StorageResult)>,
    /// The version of the frames sent to each peer (`[cluster] wire_version`, or lower
    /// for a peer of an older release).
    peer_versions: Arc<PeerVersions>,
    /// Warnings for failed peer requests, rate-limited per peer.
    peer_failures: Arc<PeerFailures>,
    /// The restore marker of a node started from a backup, removed once the engine
    /// leaves restore mode ([`Driver::with_restore`]).
    restore_marker: Option<PathBuf>,
    /// The driver's gauges, set after every wake-up.
    inflight_gauge: metrics::Gauge,
    pending_gauge: metrics::Gauge,
    storage_queue_gauge: metrics::Gauge,
}

impl Driver {
    /// A driver for `engine`, sending to peers over `endpoint` at `addrs`, storage
    /// operations to the workers through `storage_tx`, and completions to itself through
    /// `done_tx`.
    pub(super) fn new(
        engine: Engine,
        clock: Clock,
        endpoint: Endpoint,
        addrs: HashMap<NodeId, SocketAddr>,
        storage_tx: crossbeam::channel::Sender<(RequestId, StorageOp)>,
        done_tx: mpsc::UnboundedSender<Completion>,
    ) -> Driver {
        Driver {
            engine,
            clock,
            inbound: HashMap::new(),
            next_inbound: 1,
            endpoint,
            addrs,
            storage_tx,
            done_tx,
            inline_ops: None,
            replica_reads: None,
            commit: None,
            wal_write_out: None,
            unwritten: Vec::new(),
            peer_versions: Arc::new(PeerVersions::new(WireVersion::CURRENT)),
            peer_failures: Arc::new(PeerFailures::default()),
            restore_marker: None,
            inflight_gauge: metrics::gauge!(crate::metrics::DRIVER_INFLIGHT_REQUESTS),
            pending_gauge: metrics::gauge!(crate::metrics::DRIVER_PENDING_COMMANDS),
            storage_queue_gauge: metrics::gauge!(crate::metrics::DRIVER_QUEUE_DEPTH, "queue" => "storage"),
        }
    }

    /// Runs the engine in restore mode (see `shoal_proto`'s `engine/restore.rs`) and
    /// removes `marker` once it is through: until then the node is not ready, and a node
    /// stopped mid-restore starts the whole restore again, which is safe.
    pub(super) fn with_restore(mut self, marker: PathBuf) -> Driver {
        self.engine.begin_restore();
        super::health::set_restoring(true);
        self.restore_marker = Some(marker);
        self
    }

    /// Once the engine has left restore mode: remove the marker, report ready.
    fn check_restore(&mut self) {
        if self.engine.restoring() {
            return;
        }
        let Some(marker) = self.restore_marker.take() else {
            return;
        };
        match std::fs::remove_file(&marker) {
            Ok(()) => tracing::info!("restore complete: every partition matches a peer; serving"),
            // The node serves anyway; its next start repeats the restore (safe).
            Err(e) => tracing::warn!(
                marker = %marker.display(),
                "restore complete, but removing its marker failed: {e}"
            ),
        }
        super::health::set_restoring(false);
    }

    /// Runs each op `ops` can run without blocking on the driver's own thread, at once,
    /// instead of handing it to a storage thread and waiting for its completion: two
    /// thread switches (and a sleeping thread's wake-up) fewer per op. Replica reads are
    /// tried always, and so are writes, except under group commit, where a write is
    /// tried only while the storage queue is empty (see [`Driver::with_group_commit`]).
    /// Ops that would wait (a disk read, a held key, a write stall), and every other op,
    /// still go to the storage threads. Storage threads already run ops in any order (the
    /// key's lock orders two ops on one key, not the queue), so the engine sees nothing
    /// new. Writes once waited for an empty queue too; taking them here whenever they
    /// need no wait measured 4% more throughput at concurrency 64 (BENCHMARKS.md).
    pub(super) fn with_inline_ops(mut self, ops: InlineOps) -> Driver {
        self.inline_ops = Some(ops);
        self
    }

    /// Publishes the engine's replica-read rules ([`shoal_proto::ReplicaReadGate`]) for the request
    /// handler after every round in which what they depend on changed, so that it
    /// serves clients' replica reads from memory itself (`replica_reads.rs`).
    pub(super) fn with_replica_reads(
        mut self,
        reads: Arc<super::replica_reads::ReplicaReads>,
    ) -> Driver {
        self.replica_reads = Some((reads, None));
        self.publish_replica_read_gate();
        self
    }

    /// Publishes a new replica-read gate if the engine's rules changed since the last.
    fn publish_replica_read_gate(&mut self) {
        let Some((reads, built_from)) = &mut self.replica_reads else {
            return;
        };
        if let Some(gate) = self
            .engine
            .replica_read_gate_if_changed(built_from.as_ref())
        {
            *built_from = Some(gate.key().clone());
            reads.publish(gate);
        }
    }

    /// With group commit (`durability = "sync"`): a write run on this thread (see
    /// [`Driver::with_inline_ops`]; the store then writes without syncing) hands its
    /// completion to the committer on `commit`, as the storage threads do, so that it is
    /// acknowledged only once the WAL is synced. `storage_threads` also send there.
    pub(super) fn with_group_commit(
        mut self,
        commit: crossbeam::channel::Sender<Completion>,
        storage_threads: usize,
    ) -> Driver {
        self.commit = Some((commit, storage_threads));
        self
    }

    /// With a store whose writes on this thread leave their WAL records in the process
    /// (`RocksOptions::buffer_try_writes`): the result of a write run here reaches the
    /// engine only after `write_out` handed its record to the OS, once for all the writes
    /// of a round (one system call instead of one per write), and every answer of the
    /// round goes out after that, so that nothing a write wrote, or a read read of it,
    /// is answered before it is as durable as `buffered` promises. A coordinator's write
    /// reaches the engine applied at once ([`Engine::handle_storage_applied`], as under
    /// group commit), so that its copies go to the replicas while the record is written
    /// out; its own copy counts towards W only after. Ops of the storage
    /// threads write their records out themselves (`Storage::write`), and their
    /// completions reach the engine in a later round. A failed write-out fails the writes
    /// it covered. Not with group commit, whose committer syncs instead.
    pub(super) fn with_wal_write_out(mut self, write_out: WalWriteOut) -> Driver {
        self.wal_write_out = Some(write_out);
        self
    }

    /// Sends peers frames of `version` (pinned during a rolling upgrade) instead of the
    /// newest this build speaks.
    pub(super) fn with_wire_version(mut self, version: WireVersion) -> Driver {
        self.peer_versions = Arc::new(PeerVersions::new(version));
        self
    }

    /// Run until shutdown: admit queued requests, feed completions and timeouts to the
    /// engine, and carry out its commands after each.
    ///
    /// Every iteration handles one input and first serves the timers that are due, so
    /// that timers (request deadlines, probes, the failure detector) keep their time even
    /// when the queues never empty: the `select!` is biased towards completions and
    /// requests, and its sleep branch alone would never be taken under such load.
    pub(super) async fn run(
        mut self,
        mut input: mpsc::Receiver<Inbound>,
        mut done: mpsc::UnboundedReceiver<Completion>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // Commands the engine emitted before the loop (a restore's first exchanges).
        self.drain();
        loop {
            self.note_heard();
            self.serve_due_timers();
            let wait = match self.engine.poll_timeout() {
                Some(at) => at.saturating_since(self.clock.mono()),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(c) = done.recv() => self.complete(c),
                Some(i) = input.recv() => self.admit(i),
                _ = tokio::time::sleep(wait) => self.serve_due_timers(),
            }
            // Whatever else is already queued is handled before the commands are carried
            // out (bounded, so that timers and the gauges below keep their time): one
            // wake-up of this task serves many inputs under load.
            for _ in 1..MAX_INPUTS_PER_WAKE {
                if let Ok(c) = done.try_recv() {
                    self.complete(c);
                } else if let Ok(i) = input.try_recv() {
                    self.admit(i);
                } else {
                    break;
                }
            }
            self.drain();
            self.check_restore();
            self.publish_replica_read_gate();
            self.inflight_gauge.set(self.engine.inflight() as f64);
            self.pending_gauge
                .set(self.engine.pending_commands() as f64);
            self.storage_queue_gauge.set(self.storage_tx.len() as f64);
            super::health::set_confirming_layout(self.engine.confirming_layout());
            let members = self.engine.membership();
            super::health::set_membership(
                members.contains(members.me()),
                members.count(shoal_proto::wire::MemberState::Up),
            );
        }
    }

    /// Reports to the engine the peers whose replica writes the request handler merged
    /// since the last round (`replica_reads.rs`): the evidence that they are alive that
    /// the engine takes from every request it serves.
    fn note_heard(&mut self) {
        let Some((reads, _)) = &self.replica_reads else {
            return;
        };
        let heard = reads.take_heard();
        if heard.is_empty() {
            return;
        }
        let now = self.clock.now();
        for peer in &heard {
            self.engine.heard_from(now, peer);
        }
    }

    /// Run the engine's timers that are due now, and carry out what they emit.
    fn serve_due_timers(&mut self) {
        let now = self.clock.now();
        if self.engine.poll_timeout().is_some_and(|at| at <= now.mono) {
            self.engine.handle_timeout(now);
            self.drain();
        }
    }

    fn admit(&mut self, i: Inbound) {
        let id = self.next_inbound;
        self.next_inbound += 1;
        let keyed = matches!(&i.request, Request::Client(c) if c.key().is_some());
        self.inbound.insert(id, (i.reply, keyed));
        let now = self.clock.now();
        self.engine
            .handle_request(now, InboundId(id), i.from, i.request);
    }

    fn complete(&mut self, c: Completion) {
        let now = self.clock.now();
        match c {
            Completion::Response { id, result } => self.engine.handle_response(now, id, result),
            Completion::Storage { id, result } => self.engine.handle_storage(now, id, result),
            Completion::Applied { id, result } => {
                self.engine.handle_storage_applied(now, id, result)
            }
        }
    }

    /// Runs `op` here if it can without blocking (see [`Driver::with_inline_ops`]), and
    /// hands its result to the engine at once (the commands that follow from it are
    /// drained in the same round); gives back every other op.
    fn run_inline(&mut self, id: RequestId, op: StorageOp) -> Option<StorageOp> {
        let (Some(ops), Some(label)) = (&self.inline_ops, inline_label(&op)) else {
            return Some(op);
        };
        let write = !matches!(op, StorageOp::Read { .. });
        if write && self.commit.is_some() && !self.storage_tx.is_empty() {
            return Some(op);
        }
        // With group commit the completion must fit the committer's queue without
        // waiting: only the storage threads send there too, each at most the one op it
        // runs (the storage queue is empty), so this room is still there at the send.
        if let (true, Some((commit, threads))) = (write, &self.commit) {
            let room = commit.capacity().unwrap_or(usize::MAX);
            if commit.len() + threads >= room {
                INLINE_DECLINED.get([label]).increment(1);
                return Some(op);
            }
        }
        let start = Instant::now();
        let Some(result) = ops(&op) else {
            if write {
                INLINE_DECLINED.get([label]).increment(1);
            }
            return Some(op);
        };
        STORAGE_OP_DURATION
            .get([label])
            .record(start.elapsed().as_secs_f64());
        if result.is_err() {
            STORAGE_OP_ERRORS.get([label]).increment(1);
        }
        if let (true, Some((commit, _))) = (write, &self.commit) {
            let (applied, synced) = split_at_sync(result);
            let completion = Completion::Storage { id, result: synced };
            if let Err(crossbeam::channel::TrySendError::Full(completion)) =
                commit.try_send(completion)
            {
                // Not expected (the room was checked above); waiting for the committer's
                // next sync is still correct.
                let _ = commit.send(completion);
            }
            if let Some(result) = applied {
                // Its replica requests go out in this round, while the committer syncs;
                // the sync's completion reaches the engine through `done`, after this.
                let now = self.clock.now();
                self.engine.handle_storage_applied(now, id, result);
            }
            return None;
        }
        if write && self.wal_write_out.is_some() {
            // A coordinator's write goes to the engine applied at once, as under group
            // commit: its copies go to the replicas while its record is written out
            // (`drain`), and its own copy counts towards W only once written out.
            let (applied, written) = split_at_sync(result);
            if let Some(applied) = applied {
                let now = self.clock.now();
                self.engine.handle_storage_applied(now, id, applied);
            }
            self.unwritten.push((id, written));
            return None;
        }
        let now = self.clock.now();
        self.engine.handle_storage(now, id, result);
        None
    }

    /// Hands the WAL records of the writes run on this thread to the OS, then their
    /// results to the engine (as failures if that failed: they may not survive the
    /// process). See [`Driver::with_wal_write_out`].
    fn write_out_wal(&mut self) {
        let Some(write_out) = &self.wal_write_out else {
            return;
        };
        let writes = self.unwritten.len();
        WAL_WRITE_OUT_WRITES.one().record(writes as f64);
        let written = write_out_timed(write_out, &format!("the {writes} writes"));
        let now = self.clock.now();
        for (id, result) in std::mem::take(&mut self.unwritten) {
            let result = match (&written, result) {
                (Err(e), Ok(_)) => Err(e.clone()),
                (_, result) => result,
            };
            self.engine.handle_storage(now, id, result);
        }
    }

    /// Sends `response` to whoever waits for request `id`.
    fn answer(&mut self, id: InboundId, response: Response) {
        if let Response::Peer(PeerResponse::Error(RequestError::ClusterMismatch(why))) = &response {
            tracing::debug!("refused a node of another cluster: {why}");
        }
        if let Some((tx, keyed)) = self.inbound.remove(&id.0) {
            let response = match response {
                Response::Client(response) if keyed => Response::Stamped {
                    layout_version: self.engine.layout().version(),
                    response,
                },
                other => other,
            };
            let _ = tx.send(response);
        }
    }

    fn drain(&mut self) {
        // Requests to peers, collected per peer and sent in batches (`flush`), and the
        // answers, sent only once the writes run on this thread are written out
        // (`write_out_wal`), whose results may bring more commands. The requests
        // collected before a write-out go out before it: the copies of the round's
        // coordinated writes travel while their records are written out. A copy may
        // leave the node before its coordinator's record is in the OS, as under group
        // commit before the sync: the write is not acknowledged until it is, and a
        // restart mints a new actor, so a copy that outlives its coordinator's record
        // is a write in flight whose outcome the client did not learn, nothing more.
        let mut outbox: BTreeMap<NodeId, Vec<Outgoing>> = BTreeMap::new();
        let mut answers = Vec::new();
        loop {
            self.poll_commands(&mut outbox, &mut answers);
            if self.unwritten.is_empty() {
                break;
            }
            self.flush(std::mem::take(&mut outbox));
            self.write_out_wal();
        }
        for (id, response) in answers {
            self.answer(id, response);
        }
        self.flush(outbox);
    }

    /// Carries out the engine's commands until it has none: runs or queues storage ops,
    /// and collects answers and requests to peers.
    fn poll_commands(
        &mut self,
        outbox: &mut BTreeMap<NodeId, Vec<Outgoing>>,
        answers: &mut Vec<(InboundId, Response)>,
    ) {
        while let Some(cmd) = self.engine.poll_command() {
            match cmd {
                Command::Respond { id, response } => answers.push((id, response)),
                Command::Storage { id, op } => {
                    if let StorageOp::DropPartition { .. } = op {
                        // The gate without the partition, published before its drop runs:
                        // publishing waits for the merges the request handler runs under
                        // the gate it replaces (`replica_reads.rs`), and none starts in
                        // the partition after it.
                        self.publish_replica_read_gate();
                    }
                    let Some(op) = self.run_inline(id, op) else {
                        continue;
                    };
                    // The queue is bounded and the driver never blocks on it: an op that
                    // finds it full fails at once, like a storage error.
                    let refused = match self.storage_tx.try_send((id, op)) {
                        Ok(()) => None,
                        Err(crossbeam::channel::TrySendError::Full((id, _))) => {
                            Some((id, "storage queue full"))
                        }
                        Err(crossbeam::channel::TrySendError::Disconnected((id, _))) => {
                            Some((id, "storage workers stopped"))
                        }
                    };
                    if let Some((id, why)) = refused {
                        let _ = self.done_tx.send(Completion::Storage {
                            id,
                            result: Err(StorageFailure::Engine(why.into())),
                        });
                    }
                }
                Command::Send {
                    id,
                    to,
                    request,
                    timeout,
                } => {
                    // The engine knows the members of every layout version in use and the
                    // candidates that said hello; the config's seeds are the fallback.
                    let addr = self
                        .engine
                        .peer_addr(&to)
                        .or_else(|| self.addrs.get(&to).copied());
                    let Some(addr) = addr else {
                        let _ = self.done_tx.send(Completion::Response {
                            id,
                            result: Err(SendError::Unreachable(format!("no address for {to}"))),
                        });
                        continue;
                    };
                    outbox.entry(to).or_default().push(Outgoing {
                        id,
                        addr,
                        request,
                        timeout,
                    });
                }
            }
        }
    }

    /// Sends what `drain` collected, per peer: data-path requests (replica writes and
    /// reads) due to the same peer go in batches of up to [`MAX_PEER_BATCH`] requests
    /// and [`MAX_BATCH_BYTES`] when it speaks wire version 5 (one stream instead of one
    /// each), everything else on a stream of its own. Each request is stamped with this
    /// node's settings and layout version; a peer older than wire version 3 gets the
    /// plain request (`encode_request_as`).
    fn flush(&mut self, outbox: BTreeMap<NodeId, Vec<Outgoing>>) {
        for (to, items) in outbox {
            let stamp = self.engine.stamp();
            let sender = PeerSender {
                endpoint: self.endpoint.clone(),
                done: self.done_tx.clone(),
                versions: self.peer_versions.clone(),
                failures: self.peer_failures.clone(),
                to,
                stamp,
            };
            let batches = sender.versions.for_peer(&sender.to) >= WireVersion::BATCHES;
            let (batchable, alone): (Vec<Outgoing>, Vec<Outgoing>) = if batches {
                items.into_iter().partition(|o| {
                    matches!(
                        o.request,
                        PeerRequest::Replicate { .. } | PeerRequest::Read { .. }
                    )
                })
            } else {
                (Vec::new(), items)
            };
            for o in alone {
                tokio::spawn(sender.clone().send_one(o));
            }
            let mut batch: Vec<Outgoing> = Vec::new();
            let mut bytes = 0;
            for o in batchable {
                let len = peer_request_len(&o.request);
                if !batch.is_empty()
                    && (batch.len() == MAX_PEER_BATCH || bytes + len > MAX_BATCH_BYTES)
                {
                    sender.clone().spawn_batch(std::mem::take(&mut batch));
                    bytes = 0;
                }
                bytes += len;
                batch.push(o);
            }
            sender.spawn_batch(batch);
        }
    }
}

/// A request the engine asked to send, waiting for the end of `drain`.
struct Outgoing {
    id: RequestId,
    addr: SocketAddr,
    request: PeerRequest,
    timeout: Duration,
}

/// What a task sending to one peer needs.
#[derive(Clone)]
struct PeerSender {
    endpoint: Endpoint,
    done: mpsc::UnboundedSender<Completion>,
    versions: Arc<PeerVersions>,
    failures: Arc<PeerFailures>,
    to: NodeId,
    stamp: shoal_proto::wire::LayoutStamp,
}

impl PeerSender {
    /// Reports the outcome of request `id` (`op`) to the driver.
    fn complete(&self, id: RequestId, op: &'static str, result: Result<PeerResponse, SendError>) {
        let label = result.as_ref().map_or_else(SendError::label, |_| "ok");
        PEER_REQUESTS.get([op, label]).increment(1);
        if let Err(e) = &result {
            self.failures.warn(&self.to, op, &FailedSend(e));
        }
        let _ = self.done.send(Completion::Response { id, result });
    }

    /// Sends `batch` as one frame (a single request alone), on a task of its own.
    fn spawn_batch(self, mut batch: Vec<Outgoing>) {
        match batch.len() {
            0 => {}
            1 => {
                if let Some(o) = batch.pop() {
                    tokio::spawn(self.send_one(o));
                }
            }
            _ => {
                tokio::spawn(self.send_batch(batch));
            }
        }
    }

    /// Sends one frame to the peer; an idempotent one is sent again, once, when its
    /// connection belonged to the peer's previous process (it restarted).
    async fn send(
        &self,
        addr: SocketAddr,
        payload: Vec<u8>,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<Vec<u8>, TransportError> {
        if idempotent {
            self.endpoint
                .request_idempotent(addr, Some(&self.to), payload, timeout)
                .await
        } else {
            self.endpoint
                .request(addr, Some(&self.to), payload, timeout)
                .await
        }
    }

    /// One request on a stream of its own. A peer of an older release that refuses the
    /// frame's version gets it again in the version it speaks.
    async fn send_one(self, o: Outgoing) {
        let op = o.request.op_name();
        let idempotent = o.request.is_idempotent();
        let request = Request::Stamped(self.stamp.clone(), o.request);
        let mut version = self.versions.for_peer(&self.to);
        let mut payload = encode_request_as(&request, version);
        let result = loop {
            let answer = self.send(o.addr, payload, o.timeout, idempotent).await;
            break match answer {
                Ok(bytes) => match decode_response(&bytes) {
                    // A peer of an older release refused the version before running
                    // anything: send it again in the peer's. Each retry is in a strictly
                    // lower version, so this loops at most once per version this build
                    // speaks.
                    Ok(Response::Error(RequestError::UnsupportedVersion { found, supported }))
                        if found == version.get() =>
                    {
                        match self.versions.refused(&self.to, version, supported) {
                            Some(lower) => {
                                version = lower;
                                payload = encode_request_as(&request, lower);
                                continue;
                            }
                            None => Ok(PeerResponse::Error(RequestError::UnsupportedVersion {
                                found,
                                supported,
                            })),
                        }
                    }
                    // Refused by the peer's server before its engine saw it
                    // (overloaded, shutting down, the stamp refused).
                    Ok(Response::Error(e)) => {
                        self.failures
                            .warn(&self.to, op, &format_args!("refused: {e}"));
                        Ok(PeerResponse::Error(e))
                    }
                    // The answer to a forwarded client request is a client answer.
                    Ok(response) => Ok(response.into_peer()),
                    Err(e) => Err(SendError::Invalid(e.to_string())),
                },
                Err(e) => Err(send_error(e)),
            };
        };
        self.complete(o.id, op, result);
    }

    /// Several requests in one [`PeerRequest::Batch`] frame; each outcome reported on its
    /// own. A peer that refuses version 5 gets each request alone in the version it
    /// speaks; a read whose answer did not fit in the batch's frame is asked again alone.
    async fn send_batch(self, batch: Vec<Outgoing>) {
        handler::PEER_BATCH_REQUESTS
            .get(["sent"])
            .record(batch.len() as f64);
        let addr = batch[0].addr;
        let timeout = batch.iter().map(|o| o.timeout).max().unwrap_or_default();
        let mut meta = Vec::with_capacity(batch.len());
        let mut requests = Vec::with_capacity(batch.len());
        for o in batch {
            meta.push((o.id, o.addr, o.timeout));
            requests.push(o.request);
        }
        let version = self.versions.for_peer(&self.to);
        let request = Request::Stamped(self.stamp.clone(), PeerRequest::Batch(requests));
        let idempotent = matches!(&request, Request::Stamped(_, batch) if batch.is_idempotent());
        let payload = encode_request_as(&request, version);
        let answer = self.send(addr, payload, timeout, idempotent).await;
        let Request::Stamped(_, PeerRequest::Batch(requests)) = request else {
            return;
        };
        let items = meta
            .into_iter()
            .zip(requests)
            .map(|((id, addr, timeout), request)| Outgoing {
                id,
                addr,
                request,
                timeout,
            });
        let answers = match answer {
            Err(e) => Err(send_error(e)),
            Ok(bytes) => match decode_response(&bytes) {
                Ok(Response::Peer(PeerResponse::Batch(answers)))
                    if answers.len() == items.len() =>
                {
                    Ok(answers)
                }
                Ok(Response::Error(RequestError::UnsupportedVersion { found, supported }))
                    if found == version.get() =>
                {
                    // An older release: it ran none of them.
                    let _ = self.versions.refused(&self.to, version, supported);
                    for o in items {
                        tokio::spawn(self.clone().send_one(o));
                    }
                    return;
                }
                Ok(Response::Peer(PeerResponse::Batch(answers))) => Err(SendError::Invalid(
                    format!("{} answers to a batch of {}", answers.len(), items.len()),
                )),
                Ok(Response::Peer(PeerResponse::Error(e)) | Response::Error(e)) => {
                    self.failures
                        .warn(&self.to, "batch", &format_args!("refused: {e}"));
                    for o in items {
                        let op = o.request.op_name();
                        self.complete(o.id, op, Ok(PeerResponse::Error(e.clone())));
                    }
                    return;
                }
                Ok(other) => Err(SendError::Invalid(format!(
                    "a batch answered with {}",
                    response_kind(&other)
                ))),
                Err(e) => Err(SendError::Invalid(e.to_string())),
            },
        };
        match answers {
            Ok(answers) => {
                for (o, answer) in items.zip(answers) {
                    let retry_alone = matches!(o.request, PeerRequest::Read { .. })
                        && matches!(
                            answer,
                            PeerResponse::Error(RequestError::ResponseTooLarge { .. })
                        );
                    if retry_alone {
                        tokio::spawn(self.clone().send_one(o));
                    } else {
                        let op = o.request.op_name();
                        self.complete(o.id, op, Ok(answer));
                    }
                }
            }
            Err(e) => {
                for o in items {
                    let op = o.request.op_name();
                    self.complete(o.id, op, Err(e.clone()));
                }
            }
        }
    }
}

/// A [`SendError`] for a log line.
struct FailedSend<'a>(&'a SendError);

impl std::fmt::Display for FailedSend<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            SendError::Unreachable(why) => write!(f, "unreachable: {why}"),
            SendError::Lost(why) => write!(f, "lost: {why}"),
            SendError::Timeout => f.write_str("no answer within the request's timeout"),
            SendError::Invalid(why) => write!(f, "an invalid answer: {why}"),
        }
    }
}

/// The engine's view of a transport failure.
fn send_error(e: TransportError) -> SendError {
    match e {
        TransportError::Timeout { .. } => SendError::Timeout,
        e if e.is_not_delivered() => SendError::Unreachable(e.to_string()),
        e => SendError::Lost(e.to_string()),
    }
}

/// What kind of answer a response is, for an error message.
fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::Client(_) | Response::Stamped { .. } => "a client answer",
        Response::Peer(_) => "another peer answer",
        Response::Error(_) => "an error",
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use shoal_proto::wire::{
        decode_request, encode_response_as, ClientRequest, ClientResponse, GetReply, PeerRequest,
        ReadOptions, WIRE_VERSION,
    };
    use shoal_proto::{CausalContext, EngineConfig, RequestError, Sender};
    use shoal_ring::{Member, Ring};
    use shoal_transport::certs::{generate_ca_pem, issue_node_cert_pem};
    use shoal_transport::{Handler, PeerRole};
    use shoal_transport::{TlsIdentity, TransportConfig};

    use super::*;

    /// A client request from `alice`, and where its answer arrives.
    pub(super) fn client(request: ClientRequest) -> (Inbound, oneshot::Receiver<Response>) {
        let (reply, rx) = oneshot::channel();
        let inbound = Inbound {
            from: Sender::Client("alice".into()),
            request: Request::Client(request),
            reply,
        };
        (inbound, rx)
    }

    /// Endpoints of nodes `a` and `b` on localhost, with certificates of one CA.
    pub(super) fn two_endpoints() -> ((NodeId, Endpoint), (NodeId, Endpoint)) {
        let ca = generate_ca_pem().unwrap();
        let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let node = |name: &str| {
            let id = NodeId::new(name).unwrap();
            let leaf = issue_node_cert_pem(&ca, &id).unwrap();
            let identity =
                TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.key_pem).unwrap();
            let endpoint = Endpoint::server(localhost, &identity, TransportConfig::default())
                .expect("endpoint");
            (id, endpoint)
        };
        (node("a"), node("b"))
    }

    /// A one-node cluster's driver (N = R = W = 1) and what surrounds it: its endpoint,
    /// the storage queue (no thread takes from it unless a test does), the completion
    /// channel and the request queue (room for `inputs`).
    struct Harness {
        driver: Driver,
        endpoint: Endpoint,
        storage_tx: crossbeam::channel::Sender<(RequestId, StorageOp)>,
        storage_rx: crossbeam::channel::Receiver<(RequestId, StorageOp)>,
        done_tx: mpsc::UnboundedSender<Completion>,
        done_rx: mpsc::UnboundedReceiver<Completion>,
        input_tx: mpsc::Sender<Inbound>,
        input_rx: mpsc::Receiver<Inbound>,
    }

    /// An engine config with the given `(n, r, w)` and no anti-entropy or reaping: their
    /// scans and exchanges would join the storage queue and the peer frames these tests
    /// inspect (a reap is due at the first tick, one second after the start, which a slow
    /// machine reaches within a test).
    pub(super) fn quiet_config((n, r, w): (u8, u8, u8)) -> EngineConfig {
        let mut cfg = EngineConfig::default();
        (cfg.replication.n, cfg.replication.r, cfg.replication.w) = (n, r, w);
        cfg.aae.enabled = false;
        cfg
    }

    fn single_node(inputs: usize) -> Harness {
        let me = NodeId::new("a").unwrap();
        let ca = generate_ca_pem().unwrap();
        let leaf = issue_node_cert_pem(&ca, &me).unwrap();
        let identity = TlsIdentity::from_pem(&ca.cert_pem, &leaf.cert_chain_pem, &leaf.key_pem)
            .expect("identity");
        let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let endpoint =
            Endpoint::server(localhost, &identity, TransportConfig::default()).expect("endpoint");
        let cfg = quiet_config((1, 1, 1));
        let ring = Ring::new(8, vec![Member::new(me.clone())]).unwrap();
        let mut clock = Clock::new();
        let engine = Engine::new(
            cfg,
            me.clone(),
            ring,
            vec![(me, endpoint.local_addr())],
            1,
            clock.now(),
        )
        .unwrap();
        let (storage_tx, storage_rx) = crossbeam::channel::bounded(64);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (input_tx, input_rx) = mpsc::channel(inputs);
        let driver = Driver::new(
            engine,
            clock,
            endpoint.clone(),
            HashMap::new(),
            storage_tx.clone(),
            done_tx.clone(),
        );
        Harness {
            driver,
            endpoint,
            storage_tx,
            storage_rx,
            done_tx,
            done_rx,
            input_tx,
            input_rx,
        }
    }

    /// Inline ops that run on an in-memory store.
    fn in_memory_ops() -> InlineOps {
        let exec =
            Arc::new(Executor::open(shoal_storage::MemStorage::new(), || 7).expect("executor"));
        Arc::new(move |op| exec.try_execute(op))
    }

    /// A client put of `k` with `options`, and the receiver of its answer.
    fn put_k(options: shoal_proto::wire::WriteOptions) -> (Inbound, oneshot::Receiver<Response>) {
        client(ClientRequest::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            context: None,
            options,
        })
    }

    /// With group commit, a write run on the driver's thread answers its client only once
    /// the committer has released its completion (after syncing the WAL): the driver
    /// hands the applied write to the engine (which replicates it) and its completion to
    /// the committer's queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inline_write_under_group_commit_waits_for_the_committer() {
        let h = single_node(4);
        let (commit_tx, commit_rx) = crossbeam::channel::bounded(8);
        let (put, mut answer) = put_k(Default::default());
        h.input_tx.try_send(put).unwrap();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let driver = h
            .driver
            .with_inline_ops(in_memory_ops())
            .with_group_commit(commit_tx, 1);
        let driver = tokio::spawn(driver.run(h.input_rx, h.done_rx, shutdown_rx));
        let completion =
            tokio::task::spawn_blocking(move || commit_rx.recv_timeout(Duration::from_secs(60)))
                .await
                .unwrap()
                .expect("no completion reached the committer within 60 s");
        // The engine had the applied write at once (to replicate it, had there been
        // replicas); what waits for the sync is only its durability.
        match &completion {
            Completion::Storage { result, .. } => assert!(
                matches!(result, Ok(shoal_proto::StorageReply::Synced)),
                "{result:?}"
            ),
            Completion::Response { .. } | Completion::Applied { .. } => {
                panic!("not a storage completion reached the committer")
            }
        }
        assert!(
            h.storage_rx.is_empty(),
            "the write went to the storage threads"
        );
        assert!(
            answer.try_recv().is_err(),
            "answered before the committer released it"
        );
        // The committer releases it (after its sync): now the client has its answer.
        h.done_tx.send(completion).unwrap();
        let answered = stop_after_answer(answer, shutdown_tx, driver, &h.endpoint).await;
        assert!(
            matches!(answered, Ok(Response::Client(ClientResponse::Put(_)))),
            "{answered:?}"
        );
    }

    /// With a store that buffers the WAL records of inline writes, a write run on the
    /// driver's thread is answered only after the driver wrote the records out, and a
    /// failed write-out fails the write: the answer claims what `buffered` promises. The
    /// write was applied (and its copies, had there been replicas, sent) before the
    /// write-out, so a failed one is answered `Incomplete` (its outcome unknown), not
    /// as if nothing had been written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inline_write_is_answered_only_after_its_wal_record_is_written_out() {
        for fails in [false, true] {
            let h = single_node(4);
            // The write-out says when it starts and waits for the test's word.
            let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            let release_rx = std::sync::Mutex::new(release_rx);
            let write_out: WalWriteOut = Arc::new(move || {
                let _ = entered_tx.send(());
                let _ = release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(60));
                if fails {
                    Err(StorageFailure::Engine("the disk said no".into()))
                } else {
                    Ok(())
                }
            });
            let (put, mut answer) = put_k(Default::default());
            h.input_tx.try_send(put).unwrap();
            let driver = h
                .driver
                .with_inline_ops(in_memory_ops())
                .with_wal_write_out(write_out);
            let (shutdown_tx, shutdown_rx) = watch::channel(false);
            let driver = tokio::spawn(driver.run(h.input_rx, h.done_rx, shutdown_rx));
            tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(60)))
                .await
                .unwrap()
                .expect("the driver never wrote the WAL out");
            assert!(
                answer.try_recv().is_err(),
                "answered before the write-out returned"
            );
            release_tx.send(()).unwrap();
            let answered = stop_after_answer(answer, shutdown_tx, driver, &h.endpoint).await;
            assert!(
                h.storage_rx.is_empty(),
                "the write went to the storage threads"
            );
            if fails {
                assert!(
                    matches!(
                        &answered,
                        Ok(Response::Client(ClientResponse::Error(
                            RequestError::Incomplete { acks: 0, needed: 1 }
                        )))
                    ),
                    "{answered:?}"
                );
            } else {
                assert!(
                    matches!(answered, Ok(Response::Client(ClientResponse::Put(_)))),
                    "{answered:?}"
                );
            }
        }
    }

    /// Waits for the client's `answer` (at most 60 s), then stops the driver task and
    /// the endpoint; gives the answer without its layout stamp.
    async fn stop_after_answer(
        answer: oneshot::Receiver<Response>,
        shutdown_tx: watch::Sender<bool>,
        driver: tokio::task::JoinHandle<()>,
        endpoint: &Endpoint,
    ) -> Result<Response, oneshot::error::RecvError> {
        let answered = tokio::time::timeout(Duration::from_secs(60), answer)
            .await
            .expect("no answer within 60 s")
            .map(Response::unstamped);
        let _ = shutdown_tx.send(true);
        let _ = driver.await;
        endpoint.close().await;
        answered
    }

    impl Harness {
        /// Runs the driver, set up by `configure`, until the client's `answer` comes (at
        /// most 60 s), stops it and the endpoint, and gives the answer with the ops left
        /// in the storage queue.
        async fn answer_and_queue(
            self,
            configure: impl FnOnce(Driver) -> Driver,
            answer: oneshot::Receiver<Response>,
        ) -> (Result<Response, oneshot::error::RecvError>, Vec<StorageOp>) {
            let (shutdown_tx, shutdown_rx) = watch::channel(false);
            let driver = configure(self.driver);
            let driver = tokio::spawn(driver.run(self.input_rx, self.done_rx, shutdown_rx));
            let answered = stop_after_answer(answer, shutdown_tx, driver, &self.endpoint).await;
            let queued = self.storage_rx.try_iter().map(|(_, op)| op).collect();
            (answered, queued)
        }
    }

    /// A write that needs no wait runs on the driver's thread even while the storage
    /// queue holds other ops (the key's lock, not the queue, orders ops on one key);
    /// under group commit it joins the queue then, as the committer's room is counted
    /// only for an empty queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_runs_inline_beside_a_busy_storage_queue_unless_under_group_commit() {
        for group_commit in [false, true] {
            let h = single_node(4);
            // An op no storage thread ever takes: the queue is not empty.
            h.storage_tx
                .try_send((
                    RequestId(u64::MAX),
                    StorageOp::Read {
                        partition: shoal_ring::PartitionId(0),
                        key: b"other".to_vec(),
                    },
                ))
                .unwrap();
            let (commit_tx, _commit_rx) = crossbeam::channel::bounded(8);
            let (put, answer) = put_k(shoal_proto::wire::WriteOptions {
                timeout: Some(Duration::from_millis(200)),
                ..Default::default()
            });
            h.input_tx.try_send(put).unwrap();
            let configure = |driver: Driver| {
                let driver = driver.with_inline_ops(in_memory_ops());
                if group_commit {
                    driver.with_group_commit(commit_tx, 1)
                } else {
                    driver
                }
            };
            let (answered, queued) = h.answer_and_queue(configure, answer).await;
            if group_commit {
                // Nobody runs the queue here: the write waits there until its deadline.
                assert!(
                    matches!(
                        answered,
                        Ok(Response::Client(ClientResponse::Error(
                            RequestError::Timeout { .. }
                        )))
                    ),
                    "{answered:?}"
                );
                assert!(
                    matches!(
                        queued.as_slice(),
                        [StorageOp::Read { .. }, StorageOp::Coordinate { .. }]
                    ),
                    "the write did not join the queue: {queued:?}"
                );
            } else {
                assert!(
                    matches!(answered, Ok(Response::Client(ClientResponse::Put(_)))),
                    "{answered:?}"
                );
                assert!(
                    matches!(queued.as_slice(), [StorageOp::Read { .. }]),
                    "the write went to the storage threads: {queued:?}"
                );
            }
        }
    }

    /// A read the store can answer from memory is answered on the driver's thread and
    /// no op reaches the storage threads; a read it cannot answer so goes to them (here
    /// they never run it, so the read times out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_from_memory_skip_the_storage_threads_and_the_others_do_not() {
        for in_memory in [true, false] {
            let h = single_node(4);
            let (get, answer) = client(ClientRequest::Get {
                key: b"k".to_vec(),
                options: ReadOptions {
                    timeout: Some(Duration::from_millis(200)),
                    ..ReadOptions::default()
                },
            });
            h.input_tx.try_send(get).unwrap();
            let reads: InlineOps = Arc::new(move |op| {
                (in_memory && matches!(op, StorageOp::Read { .. }))
                    .then_some(Ok(shoal_proto::StorageReply::Object(None)))
            });
            let (answered, queued) = h
                .answer_and_queue(|driver| driver.with_inline_ops(reads), answer)
                .await;
            if in_memory {
                match answered {
                    Ok(Response::Client(ClientResponse::Get(reply))) => assert!(!reply.found),
                    other => panic!("expected a not-found answer, got {other:?}"),
                }
                assert!(
                    queued.is_empty(),
                    "ops went to the storage threads: {queued:?}"
                );
            } else {
                match answered {
                    Ok(Response::Client(ClientResponse::Error(RequestError::Timeout {
                        ..
                    }))) => {}
                    other => panic!("expected a Timeout answer, got {other:?}"),
                }
                assert!(
                    matches!(queued.as_slice(), [StorageOp::Read { .. }]),
                    "the read did not go to the storage threads: {queued:?}"
                );
            }
        }
    }

    /// A request whose storage never completes is answered `Timeout` at its deadline
    /// while the request queue never empties: the driver serves due timers whatever
    /// waits in its queues.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timers_fire_while_the_request_queue_never_empties() {
        // Storage workers that never run anything: the read waits for its deadline.
        // The read first, then more requests than the driver can admit before the
        // read's deadline (the engine answers each at once).
        const QUEUED: usize = 100_000;
        let h = single_node(QUEUED + 1);
        let (get, answer) = client(ClientRequest::Get {
            key: b"k".to_vec(),
            options: ReadOptions {
                timeout: Some(Duration::from_millis(20)),
                ..ReadOptions::default()
            },
        });
        h.input_tx.try_send(get).unwrap();
        for _ in 0..QUEUED {
            let (i, _) = client(ClientRequest::ClusterInfo);
            h.input_tx.try_send(i).unwrap();
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let driver = tokio::spawn(h.driver.run(h.input_rx, h.done_rx, shutdown_rx));
        let answered = tokio::time::timeout(Duration::from_secs(60), answer).await;
        let still_queued = h.input_tx.max_capacity() - h.input_tx.capacity();
        let _ = shutdown_tx.send(true);
        let _ = driver.await;
        h.endpoint.close().await;
        match answered.map(|a| a.map(Response::unstamped)) {
            Ok(Ok(Response::Client(ClientResponse::Error(RequestError::Timeout { .. })))) => {}
            Ok(other) => panic!("expected a Timeout answer, got {other:?}"),
            Err(_) => panic!("the read's deadline did not fire within 60 s"),
        }
        assert!(
            still_queued > 0,
            "the deadline fired only once the request queue had emptied"
        );
    }

    /// A node of the previous release: it speaks wire version 1 only, refusing any other
    /// version as that release did, and answers a forwarded read with a value of its own.
    #[derive(Default)]
    struct PreviousRelease {
        versions_seen: std::sync::Mutex<Vec<u16>>,
    }

    impl Handler for PreviousRelease {
        async fn handle(&self, _peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
            let version = u16::from_be_bytes([request[0], request[1]]);
            self.versions_seen.lock().unwrap().push(version);
            let v1 = WireVersion::OLDEST;
            if version != 1 {
                let refusal = RequestError::UnsupportedVersion {
                    found: version,
                    supported: 1,
                };
                return encode_response_as(&Response::Error(refusal), v1);
            }
            let answer = match decode_request(&request) {
                Ok(Request::Peer(PeerRequest::Forward(ClientRequest::Get { .. }))) => {
                    Response::Peer(PeerResponse::Client(ClientResponse::Get(GetReply {
                        found: true,
                        values: vec![b"old".to_vec()],
                        context: CausalContext::new(),
                        written_at: Vec::new(),
                    })))
                }
                Ok(Request::Peer(PeerRequest::Ping)) => Response::Peer(PeerResponse::Pong),
                _ => Response::Error(RequestError::Overloaded),
            };
            encode_response_as(&answer, v1)
        }
    }

    /// An unpinned node next to a node of the previous release: its first frame is
    /// refused for its version, sent again in version 1 and answered; the next requests
    /// go in version 1 at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_of_the_previous_release_is_sent_the_version_it_speaks() {
        let ((a, endpoint), (b, old)) = two_endpoints();
        let previous = Arc::new(PreviousRelease::default());
        let serving = old.serve(previous.clone());
        let cfg = quiet_config((1, 1, 1));
        let ring = Ring::new(8, vec![Member::new(a.clone()), Member::new(b.clone())]).unwrap();
        // A key whose only replica is the old node: the engine forwards its reads there.
        let key = (0..1000)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| ring.preference_list_for_key(k, 1).nodes == [b.clone()])
            .expect("a key of b");
        let addrs = vec![
            (a.clone(), endpoint.local_addr()),
            (b.clone(), old.local_addr()),
        ];
        let mut clock = Clock::new();
        let engine = Engine::new(cfg, a.clone(), ring, addrs.clone(), 1, clock.now()).unwrap();
        let (storage_tx, _storage_rx) = crossbeam::channel::bounded(64);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (input_tx, input_rx) = mpsc::channel(16);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let driver = Driver::new(
            engine,
            clock,
            endpoint.clone(),
            addrs.into_iter().collect(),
            storage_tx,
            done_tx,
        );
        let driver = tokio::spawn(driver.run(input_rx, done_rx, shutdown_rx));
        let count = |v: u16| {
            let seen = previous.versions_seen.lock().unwrap();
            seen.iter().filter(|&&s| s == v).count()
        };
        let mut counts = Vec::new();
        for _ in 0..2 {
            let (get, answer) = client(ClientRequest::Get {
                key: key.clone(),
                options: ReadOptions::default(),
            });
            input_tx.try_send(get).unwrap();
            match tokio::time::timeout(Duration::from_secs(30), answer).await {
                Ok(Ok(Response::Stamped {
                    response: ClientResponse::Get(reply),
                    ..
                })) => {
                    assert_eq!(reply.values, vec![b"old".to_vec()]);
                    assert!(reply.written_at.is_empty(), "version 1 has no write times");
                }
                other => panic!("a read through the old node answered {other:?}"),
            }
            counts.push((count(WIRE_VERSION), count(1)));
        }
        let _ = shutdown_tx.send(true);
        let _ = driver.await;
        serving.abort();
        endpoint.close().await;
        old.close().await;
        let ((now_first, v1_first), (now_second, v1_second)) = (counts[0], counts[1]);
        assert!(
            now_first >= 1,
            "the first frame was of this build's version"
        );
        assert!(v1_first >= 1, "and it was sent again in version 1");
        assert_eq!(
            now_second, now_first,
            "the next read went in version 1 at once"
        );
        assert!(v1_second > v1_first);
    }
}

#[cfg(test)]
mod batch_tests {
    use std::sync::Mutex;

    use shoal_proto::wire::{
        decode_request_versioned, encode_response_as, ClientRequest, ClientResponse, PeerRequest,
        ReadOptions,
    };
    use shoal_proto::RequestError;
    use shoal_ring::{Member, Ring};
    use shoal_storage::MemStorage;
    use shoal_transport::{Handler, PeerRole};

    use super::*;

    /// One frame a [`Peer`] received: its version, its requests (a batch's one by one),
    /// and whether the peer refused it for its version.
    #[derive(Clone, Debug)]
    struct Frame {
        version: u16,
        ops: Vec<&'static str>,
        refused: bool,
    }

    /// A peer that records every frame and answers replica reads with "nothing here".
    /// With `speaks` below 5 it refuses newer frames, as a node of an older release does.
    struct Peer {
        speaks: u16,
        frames: Mutex<Vec<Frame>>,
    }

    impl Peer {
        fn answer(request: &PeerRequest) -> PeerResponse {
            match request {
                PeerRequest::Read { .. } => PeerResponse::Object(None),
                PeerRequest::Replicate { .. } => PeerResponse::Ack,
                PeerRequest::Ping => PeerResponse::Pong,
                _ => PeerResponse::Error(RequestError::Overloaded),
            }
        }
    }

    impl Handler for Peer {
        async fn handle(&self, _peer: PeerRole, request: Vec<u8>) -> Vec<u8> {
            let version = u16::from_be_bytes([request[0], request[1]]);
            let answer_in = WireVersion::new(version.min(self.speaks)).unwrap();
            let refused = version > self.speaks;
            let (ops, response) = match decode_request_versioned(&request) {
                Ok((_, Request::Stamped(_, PeerRequest::Batch(items)))) => (
                    items.iter().map(PeerRequest::op_name).collect(),
                    Response::Peer(PeerResponse::Batch(
                        items.iter().map(Peer::answer).collect(),
                    )),
                ),
                Ok((_, Request::Stamped(_, item) | Request::Peer(item))) => {
                    (vec![item.op_name()], Response::Peer(Peer::answer(&item)))
                }
                other => panic!("unexpected request {other:?}"),
            };
            self.frames.lock().unwrap().push(Frame {
                version,
                ops,
                refused,
            });
            let response = if refused {
                Response::Error(RequestError::UnsupportedVersion {
                    found: version,
                    supported: self.speaks,
                })
            } else {
                response
            };
            encode_response_as(&response, answer_in)
        }
    }

    /// Node a's endpoint beside the fake peer b, which serves.
    struct BesidePeer {
        endpoint: Endpoint,
        other: Endpoint,
        peer: Arc<Peer>,
        serving: tokio::task::JoinHandle<()>,
    }

    /// The fake peer b (speaking `speaks`) serving, and node a's driver of a two-node
    /// cluster with `(n, r, w)`, sending storage ops to `storage_tx` and completions to
    /// `done_tx`.
    fn beside_peer(
        speaks: u16,
        nrw: (u8, u8, u8),
        storage_tx: crossbeam::channel::Sender<(RequestId, StorageOp)>,
        done_tx: mpsc::UnboundedSender<Completion>,
    ) -> (BesidePeer, Driver) {
        let ((a, endpoint), (b, other)) = super::tests::two_endpoints();
        let peer = Arc::new(Peer {
            speaks,
            frames: Mutex::new(Vec::new()),
        });
        let serving = other.serve(peer.clone());
        let cfg = super::tests::quiet_config(nrw);
        let ring = Ring::new(8, vec![Member::new(a.clone()), Member::new(b.clone())]).unwrap();
        let addrs = vec![
            (a.clone(), endpoint.local_addr()),
            (b.clone(), other.local_addr()),
        ];
        let mut clock = Clock::new();
        let engine = Engine::new(cfg, a, ring, addrs.clone(), 1, clock.now()).unwrap();
        let driver = Driver::new(
            engine,
            clock,
            endpoint.clone(),
            addrs.into_iter().collect(),
            storage_tx,
            done_tx,
        );
        let pair = BesidePeer {
            endpoint,
            other,
            peer,
            serving,
        };
        (pair, driver)
    }

    impl BesidePeer {
        /// Stops the peer and both endpoints; returns the frames the peer saw.
        async fn stop(self) -> Vec<Frame> {
            self.serving.abort();
            self.endpoint.close().await;
            self.other.close().await;
            let frames = self.peer.frames.lock().unwrap().clone();
            frames
        }
    }

    /// Node a (a driver with in-memory storage) and the fake peer b, N = R = 2: every
    /// read at a reads its own copy and asks b. `reads` gets are queued before the driver
    /// starts, so that it takes them in one wake-up. Returns what b saw and each answer.
    async fn reads_through(speaks: u16, reads: usize) -> (Vec<Frame>, Vec<Response>) {
        let exec = Arc::new(Executor::open(MemStorage::new(), || 1).expect("executor"));
        let (storage_tx, storage_rx) = crossbeam::channel::bounded(1024);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let worker = {
            let done = done_tx.clone();
            std::thread::spawn(move || storage_worker(exec, storage_rx, done, None))
        };
        let (pair, driver) = beside_peer(speaks, (2, 2, 1), storage_tx, done_tx);
        let (input_tx, input_rx) = mpsc::channel(reads + 1);
        let mut answers = Vec::new();
        for i in 0..reads {
            let (get, rx) = super::tests::client(ClientRequest::Get {
                key: format!("key-{i}").into_bytes(),
                options: ReadOptions::default(),
            });
            input_tx.try_send(get).unwrap();
            answers.push(rx);
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let driver = tokio::spawn(driver.run(input_rx, done_rx, shutdown_rx));
        let mut got = Vec::new();
        for rx in answers {
            match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(Ok(answer)) => got.push(answer.unstamped()),
                other => panic!("no answer to a read: {other:?}"),
            }
        }
        let _ = shutdown_tx.send(true);
        let _ = driver.await;
        let _ = worker.join();
        (pair.stop().await, got)
    }

    /// Replica reads in the frames the peer answered.
    fn reads_answered(frames: &[Frame]) -> usize {
        frames
            .iter()
            .filter(|f| !f.refused)
            .flat_map(|f| &f.ops)
            .filter(|op| **op == "read")
            .count()
    }

    /// Ten reads taken in one wake-up send their ten replica reads to b in one batch
    /// frame, and each read gets its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replica_requests_due_to_one_peer_go_in_one_batch() {
        let (frames, answers) = reads_through(WireVersion::CURRENT.get(), 10).await;
        for answer in &answers {
            assert!(
                matches!(answer, Response::Client(ClientResponse::Get(r)) if !r.found),
                "{answer:?}"
            );
        }
        let batches: Vec<_> = frames.iter().filter(|f| f.ops.len() > 1).collect();
        assert_eq!(batches.len(), 1, "one batch: {frames:?}");
        assert_eq!(batches[0].ops, vec!["read"; 10], "{frames:?}");
        assert!(frames.iter().all(|f| !f.refused), "{frames:?}");
        assert_eq!(
            reads_answered(&frames),
            10,
            "each read asked once: {frames:?}"
        );
    }

    /// A peer of the previous release (wire version 4) refuses the batch's version; each
    /// of its reads is sent again alone in version 4 and answered, and the next sends go
    /// alone at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_without_batches_gets_each_request_alone() {
        let (frames, answers) = reads_through(4, 10).await;
        for answer in &answers {
            assert!(
                matches!(answer, Response::Client(ClientResponse::Get(r)) if !r.found),
                "{answer:?}"
            );
        }
        let refused_batches: Vec<_> = frames
            .iter()
            .filter(|f| f.refused && f.ops.len() > 1)
            .collect();
        assert_eq!(refused_batches.len(), 1, "one batch refused: {frames:?}");
        assert_eq!(refused_batches[0].ops, vec!["read"; 10], "{frames:?}");
        assert!(
            frames
                .iter()
                .filter(|f| !f.refused)
                .all(|f| f.version == 4 && f.ops.len() == 1),
            "answered frames are version 4, one request each: {frames:?}"
        );
        assert_eq!(
            reads_answered(&frames),
            10,
            "each read asked once: {frames:?}"
        );
    }

    /// With a store that buffers the WAL records of inline writes, a coordinator's write
    /// goes to its replica on its applied result, while its record is written out: the
    /// copy reaches the peer even when that write-out fails, and the client is told the
    /// write failed (the coordinator's own copy never counted towards W = 2).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_coordinated_writes_copy_goes_out_while_its_record_is_written_out() {
        let exec = Arc::new(Executor::open(MemStorage::new(), || 1).expect("executor"));
        let (storage_tx, _storage_rx) = crossbeam::channel::bounded(64);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (pair, driver) =
            beside_peer(WireVersion::CURRENT.get(), (2, 1, 2), storage_tx, done_tx);
        let (input_tx, input_rx) = mpsc::channel(4);
        let (put, answer) = super::tests::client(ClientRequest::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            context: None,
            options: Default::default(),
        });
        input_tx.try_send(put).unwrap();
        let write_outs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = write_outs.clone();
        let write_out: WalWriteOut = Arc::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(StorageFailure::Engine("the disk said no".into()))
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let driver = driver
            .with_inline_ops(Arc::new(move |op: &StorageOp| exec.try_execute(op)))
            .with_wal_write_out(write_out);
        let driver = tokio::spawn(driver.run(input_rx, done_rx, shutdown_rx));
        let answered = tokio::time::timeout(Duration::from_secs(30), answer)
            .await
            .expect("no answer within 30 s")
            .expect("an answer");
        // The answer does not wait for the copy's: wait (bounded) for the peer to have it.
        let replicated = |frames: &[Frame]| {
            frames
                .iter()
                .flat_map(|f| &f.ops)
                .any(|op| *op == "replicate")
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !replicated(&pair.peer.frames.lock().unwrap())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = shutdown_tx.send(true);
        let _ = driver.await;
        let frames = pair.stop().await;
        let answered = answered.unstamped();
        assert!(
            matches!(
                &answered,
                Response::Client(ClientResponse::Error(RequestError::Incomplete {
                    needed: 2,
                    ..
                }))
            ),
            "the write is reported incomplete (its copy may spread), not unwritten: {answered:?}"
        );
        assert!(write_outs.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        assert!(
            replicated(&frames),
            "the copy went to the replica: {frames:?}"
        );
    }
}
