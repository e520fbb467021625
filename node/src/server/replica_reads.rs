//! Clients' replica reads ([`ClientRequest::GetReplica`], the SDK's direct reads) and
//! peers' replica writes ([`PeerRequest::Replicate`]) served by the request handler
//! itself, from memory, without queueing them for the driver.
//!
//! A replica read needs only this node's copy and the engine's rules for answering
//! one (a primary of the key in a settled layout, serving, the partition not being
//! dropped). The driver publishes those rules as a [`ReplicaReadGate`] built by the
//! engine (again whenever what it depends on changes, checked after every round of the
//! driver); the handler checks a read against the gate, reads the copy with
//! `Executor::try_execute` (memtables, the object cache and the block cache: never a
//! wait), checks that the gate was not replaced meanwhile, and answers, as the engine
//! would, under the gate's layout version. A read the store cannot answer from memory,
//! or whose gate changed, goes to the engine as before, which answers it the same way.
//! This saves a read the two task wake-ups between the handler and the driver.
//!
//! A peer's replica write the gate admits ([`ReplicaReadGate::admits_merge`]: stamped
//! with this node's layout version and settings, from a member, for a partition this
//! node holds as a primary of a settled layout and is not dropping, the node serving)
//! is merged here the same way (`Executor::try_execute`, never a wait; with a store
//! that buffers the WAL records of such writes, written out to the OS before the
//! acknowledgement, as the driver does for its own), and acknowledged as the engine
//! would ([`shoal_proto::replica_merge_answer`]). The gate's lock is held for reading
//! across the merge, and the driver publishes a new gate (taking it for writing) before
//! it runs a partition's drop: no merge admitted under an older gate lands in a
//! partition after its drop began. The sender is reported to the engine as alive at
//! the driver's next round ([`Engine::heard_from`]), as a request the engine serves
//! reports it. A write the gate does not admit, or the store cannot merge without
//! waiting, goes to the engine as before. This takes the replica's two task wake-ups
//! off every replicated write's path to its quorum.
//!
//! Metrics: `shoal_handler_replica_reads_total{outcome}` (`served`, `declined`,
//! `engine`), `shoal_handler_replica_merges_total{outcome}` (`served`, `engine`).
//!
//! [`ClientRequest::GetReplica`]: shoal_proto::wire::ClientRequest::GetReplica
//! [`PeerRequest::Replicate`]: shoal_proto::wire::PeerRequest::Replicate
//! [`Engine::heard_from`]: shoal_proto::Engine::heard_from

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use shoal_metric_handles::Handles;
use shoal_proto::wire::{
    ClientResponse, LayoutStamp, PeerRequest, PeerResponse, ReplicaReply, Response,
};
use shoal_proto::{
    get_reply, many_siblings, replica_merge_answer, LimitsConfig, ReplicaReadGate, RequestError,
    StorageFailure, StorageOp, StorageReply,
};
use shoal_ring::NodeId;

use super::driver::{write_out_timed, InlineOps, WalWriteOut, STORAGE_OP_DURATION};

static SERVED: Handles<metrics::Counter, 1> =
    Handles::counter(crate::metrics::HANDLER_REPLICA_READS_TOTAL, ["outcome"]);
static MERGES: Handles<metrics::Counter, 1> =
    Handles::counter(crate::metrics::HANDLER_REPLICA_MERGES_TOTAL, ["outcome"]);
static REPLICA_REQUESTS: Handles<metrics::Counter, 1> =
    Handles::counter(shoal_proto::metrics::REPLICA_REQUESTS_TOTAL, ["op"]);
static SIBLINGS: Handles<metrics::Histogram, 1> =
    Handles::histogram(shoal_proto::metrics::OBJECT_SIBLINGS, ["op"]);
static SIZES: Handles<metrics::Histogram, 1> =
    Handles::histogram(shoal_proto::metrics::OBJECT_SIZE_BYTES, ["op"]);

/// The gate the driver publishes and the in-memory reads and merges the handler serves
/// with it.
pub(super) struct ReplicaReads {
    gate: RwLock<Option<Arc<ReplicaReadGate>>>,
    read: InlineOps,
    /// Peers' replica writes merged here, when set.
    merges: Option<Merges>,
    /// The peers whose writes were merged here since the driver last took them: the
    /// engine's evidence that they are alive. At most one entry per member.
    heard: Mutex<Vec<NodeId>>,
}

/// How the handler merges peers' replica writes.
pub(super) struct Merges {
    /// `Executor::try_execute` for `StorageOp::Merge`.
    pub(super) run: InlineOps,
    /// With a store that buffers the WAL records of the writes run so: how to hand them
    /// to the OS before acknowledging (`Storage::write_out_wal`).
    pub(super) write_out: Option<WalWriteOut>,
    /// The node's limits (`max_object_bytes`, the sibling bounds the engine warns at).
    pub(super) limits: LimitsConfig,
}

/// What became of a peer's replica write offered to the handler.
pub(super) enum Merge {
    /// Merged here: the engine's answer, to be sent once the WAL is written out
    /// ([`ReplicaReads::write_out`]; also for a merge that changed nothing, whose copy
    /// may be another write's whose record is not written out yet).
    Done(PeerResponse),
    /// Given back, unchanged, for the engine.
    ToEngine(PeerRequest),
}

impl ReplicaReads {
    /// Reads served with `read` (`Executor::try_execute`), under no gate yet (every read
    /// goes to the engine until the driver publishes one).
    pub(super) fn new(read: InlineOps, merges: Option<Merges>) -> Arc<ReplicaReads> {
        Arc::new(ReplicaReads {
            gate: RwLock::new(None),
            read,
            merges,
            heard: Mutex::new(Vec::new()),
        })
    }

    /// Replaces the gate; waits for the merges running under the one it replaces.
    pub(super) fn publish(&self, gate: ReplicaReadGate) {
        *self.gate.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(gate));
    }

    /// The peers whose writes were merged here since the last call.
    pub(super) fn take_heard(&self) -> Vec<NodeId> {
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        if heard.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut *heard)
    }

    /// Merges a peer's replica write into this node's copy, if the gate admits it and
    /// the store can without waiting; otherwise gives the request back, unchanged, for
    /// the engine ([`Merge::ToEngine`]): also one whose merge failed (it wrote nothing;
    /// the engine runs it again on a storage thread and counts and answers its
    /// failure). The caller writes the WAL out ([`ReplicaReads::write_out`]) before
    /// sending the answer of a merge run here.
    pub(super) fn merge(&self, from: &NodeId, stamp: &LayoutStamp, request: PeerRequest) -> Merge {
        let Some(merges) = &self.merges else {
            return Merge::ToEngine(request);
        };
        let PeerRequest::Replicate {
            partition,
            key,
            hint_for: None,
            ..
        } = &request
        else {
            // A hint, or not a replica write: the engine's alone.
            return Merge::ToEngine(request);
        };
        // Held across the merge: a new gate (before a partition's drop) waits for it.
        let gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        if !gate
            .as_ref()
            .is_some_and(|g| g.admits_merge(from, stamp, *partition, key))
        {
            MERGES.get(["engine"]).increment(1);
            return Merge::ToEngine(request);
        }
        let PeerRequest::Replicate {
            partition,
            key,
            object,
            hint_for,
        } = request
        else {
            unreachable!("admitted above");
        };
        let op = StorageOp::Merge {
            partition,
            key,
            object,
            max_object_bytes: merges.limits.max_object_bytes,
        };
        let start = Instant::now();
        let result = (merges.run)(&op);
        drop(gate);
        let Some(Ok(reply)) = result else {
            MERGES.get(["engine"]).increment(1);
            let StorageOp::Merge {
                partition,
                key,
                object,
                ..
            } = op
            else {
                unreachable!("the op built above");
            };
            return Merge::ToEngine(PeerRequest::Replicate {
                partition,
                key,
                object,
                hint_for,
            });
        };
        STORAGE_OP_DURATION
            .get(["merge_in_handler"])
            .record(start.elapsed().as_secs_f64());
        MERGES.get(["served"]).increment(1);
        REPLICA_REQUESTS.get(["replicate"]).increment(1);
        self.note_heard(from);
        let (answer, merged) = replica_merge_answer(Ok(reply));
        if let Some(object) = merged {
            merges.observe(&object);
        }
        Merge::Done(answer)
    }

    /// Hands the WAL records of the merges run here to the OS (with a store that
    /// buffers them): done before their answers go out, as the driver does for its own
    /// writes. A failure fails the writes it covered.
    pub(super) fn write_out(&self) -> Result<(), StorageFailure> {
        let Some(write_out) = self.merges.as_ref().and_then(|m| m.write_out.as_ref()) else {
            return Ok(());
        };
        write_out_timed(write_out, "the merged replica writes")
    }

    fn note_heard(&self, from: &NodeId) {
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        if !heard.contains(from) {
            heard.push(from.clone());
        }
    }

    fn current(&self) -> Option<Arc<ReplicaReadGate>> {
        self.gate.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The answer to a client's replica read of `key`, or `None` when the engine must
    /// answer it (no gate yet, not in memory, an invalid key, the gate replaced during
    /// the read, a storage error).
    pub(super) fn serve(&self, key: &[u8]) -> Option<Response> {
        if key.is_empty() || key.len() > shoal_proto::MAX_KEY_BYTES {
            // The engine's typed refusal.
            return None;
        }
        let gate = self.current()?;
        let (partition, version) = match gate.check(key) {
            Ok(at) => at,
            Err(why) => {
                SERVED.get(["declined"]).increment(1);
                let declined = ClientResponse::Error(RequestError::Declined(why));
                return Some(stamped(gate.layout_version(), declined));
            }
        };
        let op = StorageOp::Read {
            partition,
            key: key.to_vec(),
        };
        let start = Instant::now();
        let read = (self.read)(&op);
        let object = match read {
            Some(Ok(StorageReply::Object(object))) => object,
            _ => {
                SERVED.get(["engine"]).increment(1);
                return None;
            }
        };
        STORAGE_OP_DURATION
            .get(["read_in_memory"])
            .record(start.elapsed().as_secs_f64());
        let unchanged = self.current().is_some_and(|now| Arc::ptr_eq(&now, &gate));
        if !unchanged {
            SERVED.get(["engine"]).increment(1);
            return None;
        }
        SERVED.get(["served"]).increment(1);
        let copy = ReplicaReply {
            layout_version: version,
            get: get_reply(&object.unwrap_or_default()),
        };
        Some(stamped(version, ClientResponse::Replica(copy)))
    }
}

/// A client answer with the layout version it was served under, as the driver stamps
/// the engine's.
fn stamped(layout_version: u64, response: ClientResponse) -> Response {
    Response::Stamped {
        layout_version,
        response,
    }
}

impl Merges {
    /// What the engine records of an object merged at a replica: its sibling and size
    /// histograms, and a count and warning past `limits.sibling_warn` (merges are never
    /// refused for their siblings).
    fn observe(&self, object: &shoal_proto::Object) {
        let siblings = object.siblings().len();
        SIBLINGS.get(["merge"]).record(siblings as f64);
        SIZES.get(["merge"]).record(object.data_bytes() as f64);
        if let Some(event) = many_siblings("merge", None, siblings, &self.limits) {
            metrics::counter!(shoal_proto::metrics::SIBLING_LIMIT_TOTAL, "event" => event)
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::mpsc::{channel, RecvTimeoutError};
    use std::time::Duration;

    use shoal_executor::Executor;
    use shoal_proto::{Engine, EngineConfig, Now, Object};
    use shoal_ring::{Member, PartitionId, Ring};
    use shoal_storage::MemStorage;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    /// The engine of node `a` in a cluster of `a` and `b` holding every partition.
    fn engine() -> Engine {
        let (a, b) = (id("a"), id("b"));
        let mut cfg = EngineConfig::default();
        (cfg.replication.n, cfg.replication.r, cfg.replication.w) = (2, 1, 1);
        cfg.aae.enabled = false;
        let ring = Ring::new(8, vec![Member::new(a.clone()), Member::new(b.clone())]).unwrap();
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let addresses = vec![(a, addr(7000)), (b, addr(7001))];
        Engine::new(
            cfg,
            id("a"),
            ring,
            addresses,
            1,
            Now::from_virtual(shoal_proto::Time::ZERO),
        )
        .unwrap()
    }

    fn merges(run: InlineOps) -> Option<Merges> {
        Some(Merges {
            run,
            write_out: None,
            limits: LimitsConfig::default(),
        })
    }

    fn done(merge: Merge) -> PeerResponse {
        match merge {
            Merge::Done(answer) => answer,
            Merge::ToEngine(request) => panic!("not merged here: {request:?}"),
        }
    }

    fn to_engine(merge: Merge) -> PeerRequest {
        match merge {
            Merge::ToEngine(request) => request,
            Merge::Done(answer) => panic!("merged here: {answer:?}"),
        }
    }

    fn no_reads() -> InlineOps {
        Arc::new(|_: &StorageOp| None)
    }

    fn replicate(engine: &Engine, key: &[u8]) -> PeerRequest {
        let mut object = Object::new();
        object
            .update(
                &Default::default(),
                shoal_proto::SiblingValue::Data(b"v".to_vec()),
                shoal_proto::Dot::new(shoal_proto::Actor(7), 1),
                shoal_proto::Time::ZERO,
            )
            .unwrap();
        PeerRequest::Replicate {
            partition: engine.ring().partition_of(key),
            key: key.to_vec(),
            object,
            hint_for: None,
        }
    }

    /// A replica write the gate admits is merged into the store and acknowledged, and
    /// its sender is reported heard once; one the gate does not admit (another layout
    /// version in its stamp, another partition than its key's) comes back unchanged
    /// for the engine, having stored nothing.
    #[test]
    fn an_admitted_replica_write_is_merged_and_the_others_go_to_the_engine() {
        let engine = engine();
        let executor = Arc::new(Executor::open(MemStorage::new(), || 9).unwrap());
        let exec = executor.clone();
        let reads = ReplicaReads::new(
            no_reads(),
            merges(Arc::new(move |op: &StorageOp| exec.try_execute(op))),
        );
        reads.publish(engine.replica_read_gate());
        let stamp = engine.stamp();
        let b = id("b");
        let stored = |key: &[u8]| {
            let p = engine.ring().partition_of(key);
            executor.stored_object(p, key).unwrap()
        };

        let merged = done(reads.merge(&b, &stamp, replicate(&engine, b"k1")));
        assert_eq!(merged, PeerResponse::Ack);
        assert!(stored(b"k1").is_some_and(|o| o.values().count() == 1));
        let again = done(reads.merge(&b, &stamp, replicate(&engine, b"k1")));
        assert_eq!(
            again,
            PeerResponse::Ack,
            "the same copy again is acknowledged"
        );
        assert_eq!(reads.take_heard(), vec![b.clone()]);
        assert!(reads.take_heard().is_empty());

        let newer = LayoutStamp {
            version: stamp.version + 1,
            ..stamp.clone()
        };
        let request = replicate(&engine, b"k2");
        assert_eq!(to_engine(reads.merge(&b, &newer, request.clone())), request);
        let PeerRequest::Replicate {
            partition,
            key,
            object,
            hint_for,
        } = replicate(&engine, b"k3")
        else {
            unreachable!()
        };
        let misfiled = PeerRequest::Replicate {
            partition: PartitionId((partition.0 + 1) % 8),
            key,
            object,
            hint_for,
        };
        assert_eq!(
            to_engine(reads.merge(&b, &stamp, misfiled.clone())),
            misfiled
        );
        assert!(stored(b"k2").is_none() && stored(b"k3").is_none());
        assert!(reads.take_heard().is_empty());
    }

    /// A merge that fails (a storage error) is given back for the engine, which runs it
    /// again on a storage thread and counts and answers the failure; the sender is not
    /// reported heard for it here (the engine does that).
    #[test]
    fn a_failed_merge_goes_to_the_engine() {
        let engine = engine();
        let reads = ReplicaReads::new(
            no_reads(),
            merges(Arc::new(|_: &StorageOp| {
                Some(Err(StorageFailure::Engine("the disk said no".into())))
            })),
        );
        reads.publish(engine.replica_read_gate());
        let request = replicate(&engine, b"k");
        let back = to_engine(reads.merge(&id("b"), &engine.stamp(), request.clone()));
        assert_eq!(back, request);
        assert!(reads.take_heard().is_empty());
    }

    /// A new gate (as the driver publishes one before a partition's drop) is in place
    /// only once the merges running under the gate it replaces are done, so none of them
    /// lands in a partition after its drop began.
    #[test]
    fn publishing_a_gate_waits_for_the_merges_running_under_the_one_it_replaces() {
        let engine = engine();
        let (started_tx, started) = channel();
        let (release, release_rx) = channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let reads = ReplicaReads::new(
            no_reads(),
            merges(Arc::new(move |_: &StorageOp| {
                started_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv_timeout(WAIT).unwrap();
                Some(Ok(StorageReply::Merged {
                    object: Object::new(),
                    changed: true,
                }))
            })),
        );
        reads.publish(engine.replica_read_gate());
        let (stamp, request) = (engine.stamp(), replicate(&engine, b"k"));
        let merging = {
            let reads = reads.clone();
            std::thread::spawn(move || {
                matches!(reads.merge(&id("b"), &stamp, request), Merge::Done(_))
            })
        };
        started.recv_timeout(WAIT).expect("the merge started");
        let (published_tx, published) = channel();
        let publishing = {
            let (reads, gate) = (reads.clone(), engine.replica_read_gate());
            std::thread::spawn(move || {
                reads.publish(gate);
                published_tx.send(()).unwrap();
            })
        };
        assert_eq!(
            published.recv_timeout(Duration::from_millis(200)),
            Err(RecvTimeoutError::Timeout),
            "the gate was replaced while a merge under the old one ran"
        );
        release.send(()).unwrap();
        published
            .recv_timeout(WAIT)
            .expect("published after the merge");
        assert!(merging.join().unwrap(), "the merge ran here");
        publishing.join().unwrap();
    }
}
