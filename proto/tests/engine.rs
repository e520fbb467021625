//! The replication engine driven by hand: each test feeds inputs one at a time and asserts
//! the exact commands the engine emits (as openraft's engine tests do), or pumps messages
//! between several engines and checks the outcome.

mod engine_aae;
mod engine_failure_detection;
mod engine_handoff;
mod engine_harness;
mod engine_lag;
mod engine_layout;
mod engine_read_budget;
mod engine_reads;
mod engine_siblings;

use std::time::Duration;

use engine_harness::*;
use shoal_proto::wire::{
    ClientRequest, ClientResponse, GetReply, PeerRequest, PeerResponse, ReadOptions, Request,
    Response, WriteOptions, WriteReply,
};
use shoal_proto::{
    CausalContext, Command, Dot, Object, RequestError, SendError, Sender, SiblingValue,
    StorageFailure, StorageOp, StorageReply, Time, MAX_KEY_BYTES,
};
use shoal_ring::NodeId;

fn a() -> NodeId {
    id("a")
}

fn five() -> Cluster {
    Cluster::new(5, 16, quiet_config(), 7)
}

/// [`five`] whose reads ask every replica at once.
fn five_reading_all() -> Cluster {
    Cluster::new(5, 16, read_all_config(), 7)
}

fn unreachable() -> Result<PeerResponse, SendError> {
    Err(SendError::Unreachable("connection refused".into()))
}

fn client_answer(inbound: u64, response: ClientResponse) -> Command {
    respond(inbound, Response::Client(response))
}

fn client_error(inbound: u64, err: RequestError) -> Command {
    client_answer(inbound, ClientResponse::Error(err))
}

/// An object holding `value` written by `actor`'s `counter`-th write, with `ctx`.
fn written(base: &Object, ctx: &CausalContext, value: &str, dot: Dot) -> Object {
    let mut o = base.clone();
    o.update(ctx, SiblingValue::Data(value.as_bytes().to_vec()), dot, T0)
        .expect("fresh dot");
    o
}

/// A key first-owned by `a`, and the object `x` (one write by `a`) preloaded on `a`.
fn key_on_a(c: &mut Cluster) -> (Vec<u8>, Object) {
    let key = c.key_where(|p| p[0] == a());
    let x = written(
        &Object::new(),
        &CausalContext::new(),
        "x",
        Dot::new(c.actor(&a()), 1),
    );
    c.preload(&a(), &key, &x);
    (key, x)
}

/// The single `Storage` command of `cmds`, checked to run `expected`.
fn expect_storage(cmds: &[Command], expected: StorageOp) -> Command {
    assert_eq!(without_ids(cmds), vec![storage(expected)]);
    cmds[0].clone()
}

// ---------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------

#[test]
fn a_put_at_a_primary_stores_locally_replicates_and_answers_after_w_acks() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let cfg = c.cfg.clone();

    // 1. The coordinator stores the write locally first, minting the dot there.
    let cmds = c.client(&a(), 1, put(&key, "v1", None));
    let local = expect_storage(
        &cmds,
        StorageOp::Coordinate {
            partition: part,
            key: key.clone(),
            context: CausalContext::new(),
            value: SiblingValue::Data(b"v1".to_vec()),
            now: c.now,
            max_object_bytes: cfg.limits.max_object_bytes,
            max_siblings: cfg.limits.max_siblings,
        },
    );

    // 2. Then it sends the stored object to the other N-1 primaries, in preference order.
    let sends = c.run_storage(&a(), &local);
    let object = c.stored(&a(), &key).expect("stored locally");
    assert_eq!(
        without_ids(&sends),
        vec![
            send(
                &prefs[1],
                replicate(part, &key, &object, None),
                cfg.replication.rpc_timeout
            ),
            send(
                &prefs[2],
                replicate(part, &key, &object, None),
                cfg.replication.rpc_timeout
            ),
        ]
    );

    // 3. W=2: the local store plus one peer ack answers; the context names the new dot.
    let answer = c.reply(&a(), &sends[1], Ok(PeerResponse::Ack));
    let mut context = CausalContext::new();
    context.insert(Dot::new(c.actor(&a()), 1));
    assert_eq!(
        answer,
        vec![client_answer(
            1,
            ClientResponse::Put(WriteReply { context })
        )]
    );

    // 4. The last ack finishes the write without a second answer.
    assert_eq!(c.reply(&a(), &sends[0], Ok(PeerResponse::Ack)), vec![]);
    assert_eq!(c.engine(&a()).inflight(), 0);
    assert_eq!(c.engine(&a()).pending_commands(), 0);
}

#[test]
fn a_put_with_w3_waits_for_both_peers() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let cmds = c.client(&a(), 1, put_w(&key, "v1", 3));
    let sends = c.run_storage(&a(), &cmds[0]);
    assert_eq!(sends.len(), 2);
    assert_eq!(c.reply(&a(), &sends[0], Ok(PeerResponse::Ack)), vec![]);
    let answer = c.reply(&a(), &sends[1], Ok(PeerResponse::Ack));
    assert!(
        matches!(
            answer.as_slice(),
            [Command::Respond {
                response: Response::Client(ClientResponse::Put(_)),
                ..
            }]
        ),
        "{answer:?}"
    );
}

#[test]
fn a_put_with_w1_answers_as_soon_as_it_is_stored_locally() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let cmds = c.client(&a(), 1, put_w(&key, "v", 1));
    let after_local = c.run_storage(&a(), &cmds[0]);
    assert!(
        matches!(
            after_local.as_slice(),
            [
                Command::Send { .. },
                Command::Send { .. },
                Command::Respond {
                    response: Response::Client(ClientResponse::Put(_)),
                    ..
                }
            ]
        ),
        "{after_local:?}"
    );
}

/// Whether `cmds` are exactly two replicate sends (and nothing else: no answer).
fn only_two_replicates(cmds: &[Command]) -> bool {
    matches!(
        cmds,
        [
            Command::Send {
                request: PeerRequest::Replicate { .. },
                ..
            },
            Command::Send {
                request: PeerRequest::Replicate { .. },
                ..
            },
        ]
    )
}

/// Whether `cmds` are exactly a put's success answer.
fn put_answered(cmds: &[Command]) -> bool {
    matches!(
        cmds,
        [Command::Respond {
            response: Response::Client(ClientResponse::Put(_)),
            ..
        }]
    )
}

/// Group commit: the coordinator sends its copies to the replicas as soon as its local
/// write is applied, while the sync runs, but counts its own copy towards W only once the
/// sync covered it; at W = 1 the put is not answered before that (nor before a replica's
/// ack, which is durable).
#[test]
fn under_group_commit_a_put_replicates_before_its_local_sync_and_counts_it_only_once_synced() {
    for w in [1, 2] {
        let mut c = five();
        let key = c.key_where(|p| p[0] == a());
        let cmds = c.client(&a(), 1, put_w(&key, "v", w));
        let sends = c.run_storage_applied(&a(), &cmds[0]);
        assert!(only_two_replicates(&sends), "W = {w}: {sends:?}");
        if w == 2 {
            // One replica's ack and the unsynced local copy are not two durable copies.
            assert_eq!(c.reply(&a(), &sends[0], Ok(PeerResponse::Ack)), vec![]);
        }
        let answer = c.synced(&a(), &cmds[0], Ok(StorageReply::Synced));
        assert!(put_answered(&answer), "W = {w}: {answer:?}");
        let last = if w == 2 { &sends[1..] } else { &sends[..] };
        for send in last {
            assert_eq!(c.reply(&a(), send, Ok(PeerResponse::Ack)), vec![]);
        }
        assert_eq!(c.engine(&a()).inflight(), 0, "W = {w}");
    }
}

/// Group commit: two replicas' acks are W = 2 durable copies, so the put is answered
/// while the coordinator's own sync still runs; that sync then ends the write.
#[test]
fn under_group_commit_two_replica_acks_answer_before_the_local_sync() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let cmds = c.client(&a(), 1, put_w(&key, "v", 2));
    let sends = c.run_storage_applied(&a(), &cmds[0]);
    assert!(only_two_replicates(&sends), "{sends:?}");
    assert_eq!(c.reply(&a(), &sends[0], Ok(PeerResponse::Ack)), vec![]);
    let answer = c.reply(&a(), &sends[1], Ok(PeerResponse::Ack));
    assert!(put_answered(&answer), "{answer:?}");
    assert_eq!(
        c.engine(&a()).inflight(),
        1,
        "the local sync is still pending"
    );
    assert_eq!(c.synced(&a(), &cmds[0], Ok(StorageReply::Synced)), vec![]);
    assert_eq!(c.engine(&a()).inflight(), 0);
}

/// Group commit: a local sync that fails after the copies went out leaves the write's
/// fate to its other copies. The failed local copy is handled as a failed replica's
/// (sloppy quorum: the next fallback gets a copy with a hint for the coordinator); with W
/// acks the write succeeds, durable on them. Short of W the answer is `Incomplete` (the
/// copies sent may well survive), not the disk's error, which would claim that nothing
/// was written.
#[test]
fn under_group_commit_a_failed_local_sync_leaves_the_answer_to_the_other_copies() {
    // Five nodes, W = 3: a fallback stands in for the local copy.
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let (part, fallback) = (c.partition(&key), c.fallbacks(&key)[0].clone());
    let cmds = c.client(&a(), 1, put_w(&key, "v", 3));
    let sends = c.run_storage_applied(&a(), &cmds[0]);
    assert!(only_two_replicates(&sends), "{sends:?}");
    let object = c.stored(&a(), &key).expect("applied locally");
    let stand_in = c.synced(&a(), &cmds[0], Err(StorageFailure::DiskFull));
    assert_eq!(
        without_ids(&stand_in),
        vec![send(
            &fallback,
            replicate(part, &key, &object, Some(&a())),
            c.cfg.replication.rpc_timeout
        )]
    );
    assert_eq!(c.reply(&a(), &sends[0], Ok(PeerResponse::Ack)), vec![]);
    assert_eq!(c.reply(&a(), &sends[1], Ok(PeerResponse::Ack)), vec![]);
    let answer = c.reply(&a(), &stand_in[0], Ok(PeerResponse::Ack));
    assert!(put_answered(&answer), "{answer:?}");
    assert_eq!(c.engine(&a()).inflight(), 0);

    // Three nodes (no fallback), W = 3: one replica acked, the local copy cannot count.
    let mut c = Cluster::new(3, 16, quiet_config(), 7);
    let key = c.key_where(|p| p[0] == a());
    let cmds = c.client(&a(), 2, put_w(&key, "v", 3));
    let sends = c.run_storage_applied(&a(), &cmds[0]);
    assert!(only_two_replicates(&sends), "{sends:?}");
    assert_eq!(c.reply(&a(), &sends[0], Ok(PeerResponse::Ack)), vec![]);
    let answer = c.synced(&a(), &cmds[0], Err(StorageFailure::DiskFull));
    assert_eq!(
        answer,
        vec![client_error(
            2,
            RequestError::Incomplete { acks: 1, needed: 3 }
        )]
    );
    assert_eq!(c.reply(&a(), &sends[1], Ok(PeerResponse::Ack)), vec![]);
    assert_eq!(c.engine(&a()).inflight(), 0);
}

#[test]
fn a_delete_writes_a_tombstone_with_the_context() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let mut ctx = CausalContext::new();
    ctx.insert(Dot::new(c.actor(&id("b")), 4));
    let req = ClientRequest::Delete {
        key: key.clone(),
        context: Some(ctx.clone()),
        options: WriteOptions::default(),
    };
    let cmds = c.client(&a(), 1, req);
    expect_storage(
        &cmds,
        StorageOp::Coordinate {
            partition: c.partition(&key),
            key: key.clone(),
            context: ctx,
            value: SiblingValue::Tombstone,
            now: c.now,
            max_object_bytes: c.cfg.limits.max_object_bytes,
            max_siblings: c.cfg.limits.max_siblings,
        },
    );
    let sends = c.run_storage(&a(), &cmds[0]);
    let answer = c.reply(&a(), &sends[0], Ok(PeerResponse::Ack));
    assert!(
        matches!(
            answer.as_slice(),
            [Command::Respond {
                response: Response::Client(ClientResponse::Delete(_)),
                ..
            }]
        ),
        "{answer:?}"
    );
    assert!(c.stored(&a(), &key).unwrap().is_tombstoned());
}

#[test]
fn a_replica_merges_a_replicate_and_acks() {
    let mut c = five();
    let key = c.key_where(|p| p[1] == a());
    let part = c.partition(&key);
    let object = written(
        &Object::new(),
        &CausalContext::new(),
        "v",
        Dot::new(c.actor(&id("b")), 1),
    );
    let cmds = c.peer(&a(), 9, &id("b"), replicate(part, &key, &object, None));
    let merge = expect_storage(
        &cmds,
        StorageOp::Merge {
            partition: part,
            key: key.clone(),
            object: object.clone(),
            max_object_bytes: c.cfg.limits.max_object_bytes,
        },
    );
    assert_eq!(
        c.run_storage(&a(), &merge),
        vec![respond(9, Response::Peer(PeerResponse::Ack))]
    );
    assert_eq!(c.stored(&a(), &key), Some(object));
}

#[test]
fn a_replicate_for_the_wrong_partition_is_refused() {
    let mut c = five();
    let key = c.key_where(|p| p[1] == a());
    let wrong = shoal_ring::PartitionId((c.partition(&key).0 + 1) % 16);
    let cmds = c.peer(
        &a(),
        9,
        &id("b"),
        replicate(wrong, &key, &Object::new(), None),
    );
    assert!(
        matches!(
            cmds.as_slice(),
            [Command::Respond {
                response: Response::Peer(PeerResponse::Error(RequestError::WrongPartition { .. })),
                ..
            }]
        ),
        "{cmds:?}"
    );
}

#[test]
fn the_object_limit_counts_the_stored_object_not_only_its_values() {
    // Concurrent writes of the largest value pile up siblings until the stored object
    // would pass `max_object_bytes`. The limit is on the object as stored (clock, dots and
    // timestamps included), so the write that is refused is one whose values alone would
    // still fit.
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let value = "v".repeat(c.cfg.limits.max_value_bytes);
    let mut inbound = 0;
    let (len, max) = loop {
        inbound += 1;
        assert!(inbound <= 100, "a write was refused before the 100th");
        let cmds = c.client(&a(), inbound, put(&key, &value, None));
        let cmds = c.run_storage(&a(), &cmds[0]);
        if let [Command::Respond {
            response:
                Response::Client(ClientResponse::Error(RequestError::ObjectTooLarge { len, max })),
            ..
        }] = cmds.as_slice()
        {
            break (*len, *max);
        }
    };
    assert_eq!(max, c.cfg.limits.max_object_bytes);
    assert!(len > max, "{len} > {max}");
    let stored = c.stored(&a(), &key).expect("the earlier writes are stored");
    assert_eq!(
        stored.siblings().len() as u64,
        inbound - 1,
        "nothing of the refused one"
    );
    assert!(stored.data_bytes() + value.len() <= max);
}

// ---------------------------------------------------------------------------------------
// Reads and read repair
// ---------------------------------------------------------------------------------------

#[test]
fn a_get_answers_after_r_replies_and_repairs_a_stale_replica_afterwards() {
    let mut c = five_reading_all();
    let key = c.key_where(|p| p[0] == a());
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let dot = |n: u64| Dot::new(c.actor(&a()), n);
    let old = written(&Object::new(), &CausalContext::new(), "old", dot(1));
    let new = written(&old, &old.context(), "new", dot(2));
    c.preload(&a(), &key, &new);

    // The coordinator reads locally and asks the other primaries.
    let cmds = c.client(&a(), 1, get(&key));
    let rpc = c.cfg.replication.rpc_timeout;
    let read = |to: &NodeId| replica_read(to, part, &key, rpc);
    assert_eq!(
        without_ids(&cmds),
        vec![
            storage(StorageOp::Read {
                partition: part,
                key: key.clone()
            }),
            read(&prefs[1]),
            read(&prefs[2]),
        ]
    );
    assert_eq!(
        c.run_storage(&a(), &cmds[0]),
        vec![],
        "R=2: one reply is not enough"
    );

    // The second reply (up to date) answers the client.
    let answer = c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(Some(new.clone()))));
    let reply = GetReply {
        found: true,
        values: vec![b"new".to_vec()],
        context: new.context(),
        written_at: new.value_times().collect(),
    };
    assert_eq!(answer, vec![client_answer(1, ClientResponse::Get(reply))]);

    // The stale replica's later reply earns it the merged object, and only it.
    let repair = c.reply(&a(), &cmds[2], Ok(PeerResponse::Object(Some(old))));
    assert_eq!(
        without_ids(&repair),
        vec![send(&prefs[2], replicate(part, &key, &new, None), rpc)]
    );
    assert_eq!(c.engine(&a()).inflight(), 0);
}

#[test]
fn a_get_merges_concurrent_siblings_and_repairs_every_replica_missing_some() {
    let mut c = five_reading_all();
    let key = c.key_where(|p| p[0] == a());
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let none = CausalContext::new();
    let x = written(&Object::new(), &none, "x", Dot::new(c.actor(&a()), 1));
    let y = written(&Object::new(), &none, "y", Dot::new(c.actor(&prefs[1]), 1));
    let merged = Object::merged(&x, &y);
    c.preload(&a(), &key, &x);

    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
    let answer = c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(Some(y))));
    let reply = GetReply {
        found: true,
        values: vec![b"x".to_vec(), b"y".to_vec()],
        context: merged.context(),
        written_at: merged.value_times().collect(),
    };
    assert_eq!(answer, vec![client_answer(1, ClientResponse::Get(reply))]);

    // The third primary has nothing: everyone lacks something of the merge.
    let repair = c.reply(&a(), &cmds[2], Ok(PeerResponse::Object(None)));
    let rpc = c.cfg.replication.rpc_timeout;
    assert_eq!(
        without_ids(&repair),
        vec![
            storage(StorageOp::Merge {
                partition: part,
                key: key.clone(),
                object: merged.clone(),
                max_object_bytes: c.cfg.limits.max_object_bytes,
            }),
            send(&prefs[1], replicate(part, &key, &merged, None), rpc),
            send(&prefs[2], replicate(part, &key, &merged, None), rpc),
        ]
    );
}

/// A value `a` coordinated, and the tombstone of a delete `a` coordinated after it.
fn value_and_its_tombstone(c: &Cluster) -> (Object, Object) {
    let dot = |n: u64| Dot::new(c.actor(&a()), n);
    let value = written(&Object::new(), &CausalContext::new(), "v", dot(1));
    let mut tomb = value.clone();
    tomb.update(&value.context(), SiblingValue::Tombstone, dot(2), T0)
        .expect("fresh dot");
    (value, tomb)
}

/// A read whose merge is a tombstone old enough to be reaped does not copy it to a
/// replica that answered with no copy: that replica may have reaped it while the read
/// ran (a reap needs the same tombstone on every primary, and deletes it on each), and
/// writing it back left the replicas differing, the tombstone unreapable, until an
/// exchange copied it everywhere again (the simulator's convergence checker, seed 7350
/// of `sessions_read_reaped_keys_as_gone_and_keep_their_guarantees`' configuration). A
/// replica holding an older value still gets it, and a younger tombstone is copied as
/// before.
#[test]
fn read_repair_does_not_write_back_a_reapable_tombstone_to_a_replica_without_the_key() {
    let grace = five_reading_all().cfg.replication.tombstone_grace;
    let skew = five_reading_all().cfg.replication.max_clock_skew;
    // (age of the tombstone, the third primary's copy is the older value, repaired)
    let cases = [
        (Duration::from_secs(1), false, true),
        (grace - skew - Duration::from_secs(1), false, true),
        (grace - skew, false, false),
        (grace + Duration::from_secs(60), false, false),
        (grace + Duration::from_secs(60), true, true),
    ];
    for (age, holds_value, repaired) in cases {
        let mut c = five_reading_all();
        let key = c.key_where(|p| p[0] == a());
        let (part, prefs) = (c.partition(&key), c.prefs(&key));
        let (value, tomb) = value_and_its_tombstone(&c);
        c.preload(&a(), &key, &tomb);
        c.now = T0 + age;

        let cmds = c.client(&a(), 1, get(&key));
        assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
        let answer = c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(Some(tomb.clone()))));
        assert!(
            matches!(&answer[..], [Command::Respond { .. }]),
            "answered: {answer:?}"
        );
        let third = holds_value.then(|| value.clone());
        let repair = c.reply(&a(), &cmds[2], Ok(PeerResponse::Object(third)));
        let rpc = c.cfg.replication.rpc_timeout;
        let expected = if repaired {
            vec![send(&prefs[2], replicate(part, &key, &tomb, None), rpc)]
        } else {
            vec![]
        };
        assert_eq!(
            without_ids(&repair),
            expected,
            "tombstone {age:?} old, the third primary holding the value: {holds_value}"
        );
        assert_eq!(c.engine(&a()).inflight(), 0);
    }
}

/// A node that reaped a key's tombstone lately reads its own copy as the tombstone's
/// clock alone (no value). A get it coordinates answers not found with that clock as
/// its context (what a read of the tombstone answered: a session that saw a value the
/// delete replaced is answered), and repairs no replica: a copy without siblings holds
/// nothing to store, and the replicas that answered nothing may have reaped the key too.
/// Its answer to a peer's read is no copy: a coordinator of an older build would repair
/// with the clock, and its replicas would store an object nothing ever reaps.
#[test]
fn a_get_of_a_reaped_key_answers_its_tombstones_clock_and_repairs_nothing() {
    let mut c = five_reading_all();
    let key = c.key_where(|p| p[0] == a());
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let (value, tomb) = value_and_its_tombstone(&c);
    c.preload(&a(), &key, &tomb);
    c.reap_stored(&a(), &key);

    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
    let answer = c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(None)));
    let reply = GetReply {
        found: false,
        values: vec![],
        context: tomb.context(),
        written_at: vec![],
    };
    assert_eq!(answer, vec![client_answer(1, ClientResponse::Get(reply))]);
    assert!(tomb.context().includes(&value.context()));
    let repair = c.reply(&a(), &cmds[2], Ok(PeerResponse::Object(None)));
    assert_eq!(without_ids(&repair), vec![], "nothing to repair");
    assert_eq!(c.engine(&a()).inflight(), 0);

    let from = prefs[1].clone();
    let read = PeerRequest::Read {
        partition: part,
        key: key.clone(),
        hint_for: None,
    };
    let cmds = c.peer(&a(), 7, &from, read);
    let answer = c.run_storage(&a(), &cmds[0]);
    assert_eq!(
        answer,
        vec![respond(7, Response::Peer(PeerResponse::Object(None)))]
    );
}

#[test]
fn read_repair_stops_waiting_at_the_end_of_the_repair_window() {
    let mut c = five_reading_all();
    let (key, x) = key_on_a(&mut c);
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let cmds = c.client(&a(), 1, get(&key));
    c.run_storage(&a(), &cmds[0]);
    let answer = c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(None)));
    assert_eq!(answer.len(), 1, "answered: {answer:?}");

    let window_end = c.now + c.cfg.replication.read_repair_window;
    assert_eq!(
        c.timeout(&a(), window_end - Duration::from_micros(1)),
        vec![]
    );
    let repair = c.timeout(&a(), window_end);
    assert_eq!(
        without_ids(&repair),
        vec![send(
            &prefs[1],
            replicate(part, &key, &x, None),
            c.cfg.replication.rpc_timeout
        )]
    );
    // The silent replica's late reply changes nothing.
    assert_eq!(
        c.reply(&a(), &cmds[2], Ok(PeerResponse::Object(None))),
        vec![]
    );
}

// ---------------------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------------------

#[test]
fn a_put_whose_replicas_never_answer_times_out_at_its_deadline() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let cmds = c.client(&a(), 1, put(&key, "v", None));
    let sends = c.run_storage(&a(), &cmds[0]);
    let deadline = c.now + c.cfg.replication.request_timeout;

    assert_eq!(c.timeout(&a(), deadline - Duration::from_micros(1)), vec![]);
    assert_eq!(
        c.timeout(&a(), deadline),
        vec![client_error(
            1,
            RequestError::Timeout { acks: 1, needed: 2 }
        )]
    );
    // A late ack does not answer twice; the copy that timed out still goes to a
    // fallback after the answer, and the write ends when every copy is placed.
    assert_eq!(c.reply(&a(), &sends[0], Ok(PeerResponse::Ack)), vec![]);
    let resend = c.reply(&a(), &sends[1], Err(SendError::Timeout));
    let (part, prefs, fallbacks) = (c.partition(&key), c.prefs(&key), c.fallbacks(&key));
    let object = c.stored(&a(), &key).unwrap();
    assert_eq!(
        without_ids(&resend),
        vec![send(
            &fallbacks[0],
            replicate(part, &key, &object, Some(&prefs[2])),
            c.cfg.replication.rpc_timeout
        )]
    );
    assert_eq!(c.reply(&a(), &resend[0], Ok(PeerResponse::Ack)), vec![]);
    assert_eq!(c.engine(&a()).inflight(), 0);
}

/// Three nodes, each key's three primaries: no fallback stands in for a replica. A
/// replica write that timed out (or whose connection was lost) is sent once more to the
/// same replica while the deadline leaves room for a whole `rpc_timeout`, so that a replica
/// that only stalled (a starved runtime) still makes W; each copy is sent again at most
/// once, and the resends are counted.
#[test]
fn a_replica_write_that_timed_out_with_no_fallback_left_is_sent_once_more() {
    use shoal_proto::metrics::REPLICA_WRITES_RESENT_TOTAL;
    let rec = engine_lag::Recorded::default();
    metrics::with_local_recorder(&rec, || {
        let mut c = Cluster::new(3, 16, quiet_config(), 7);
        let key = c.key_where(|p| p[0] == a());
        let (part, prefs) = (c.partition(&key), c.prefs(&key));
        let rpc = c.cfg.replication.rpc_timeout;
        let cmds = c.client(&a(), 1, put(&key, "v", None));
        let sends = c.run_storage(&a(), &cmds[0]);
        let object = c.stored(&a(), &key).unwrap();
        assert_eq!(sends.len(), 2);
        let started = c.now;

        // Both copies time out at rpc_timeout (of the 5 s deadline): each is sent again.
        assert_eq!(c.timeout(&a(), started + rpc), vec![]);
        let again1 = c.reply(&a(), &sends[0], Err(SendError::Timeout));
        assert_eq!(
            without_ids(&again1),
            vec![send(&prefs[1], replicate(part, &key, &object, None), rpc)]
        );
        let again2 = c.reply(&a(), &sends[1], Err(SendError::Lost("reset".into())));
        assert_eq!(
            without_ids(&again2),
            vec![send(&prefs[2], replicate(part, &key, &object, None), rpc)]
        );
        assert_eq!(rec.counter(REPLICA_WRITES_RESENT_TOTAL), 2);

        // The second copy to the first replica times out too: not sent a third time.
        assert_eq!(c.timeout(&a(), started + rpc * 2), vec![]);
        assert_eq!(c.reply(&a(), &again1[0], Err(SendError::Timeout)), vec![]);
        // The other replica answers its second copy: W = 2 is met, and the copy that
        // failed twice is hinted locally for its replica.
        let answer = c.reply(&a(), &again2[0], Ok(PeerResponse::Ack));
        assert!(put_answered(&answer[..1]), "{answer:?}");
        assert!(hinted_for(&answer[1..], &prefs[1]), "{answer:?}");
        assert_eq!(rec.counter(REPLICA_WRITES_RESENT_TOTAL), 2);
    });
}

/// The request a coordinator sends `to` a primary for its copy of `key`.
fn replica_read(
    to: &NodeId,
    partition: shoal_ring::PartitionId,
    key: &[u8],
    rpc: Duration,
) -> Command {
    send(
        to,
        PeerRequest::Read {
            partition,
            key: key.to_vec(),
            hint_for: None,
        },
        rpc,
    )
}

/// A get of `key` at R = `r`.
fn get_r(key: &[u8], r: u8) -> ClientRequest {
    ClientRequest::Get {
        key: key.to_vec(),
        options: ReadOptions {
            r: Some(r),
            ..ReadOptions::default()
        },
    }
}

/// Three nodes, a read at R = 3: no replica is left to ask and no fallback stands in.
/// A replica read that timed out (or whose connection was lost) is sent once more to the
/// same replica while the deadline leaves room for a whole `rpc_timeout`, as a replica
/// write is, so that one lost message or a replica that only stalled does not fail the
/// read; each replica is asked again at most once, and the resends are counted.
#[test]
fn a_replica_read_that_timed_out_with_no_replica_left_is_sent_once_more() {
    use shoal_proto::metrics::REPLICA_READS_RESENT_TOTAL;
    let rec = engine_lag::Recorded::default();
    metrics::with_local_recorder(&rec, || {
        let mut c = Cluster::new(3, 16, quiet_config(), 7);
        let key = c.key_where(|p| p[0] == a());
        let (part, prefs) = (c.partition(&key), c.prefs(&key));
        let value = written(
            &Object::new(),
            &CausalContext::new(),
            "v",
            Dot::new(c.actor(&a()), 1),
        );
        for n in &prefs {
            c.preload(n, &key, &value);
        }
        let rpc = c.cfg.replication.rpc_timeout;
        let read = |to: &NodeId| replica_read(to, part, &key, rpc);
        let cmds = c.client(&a(), 1, get_r(&key, 3));
        assert_eq!(
            without_ids(&cmds[1..]),
            vec![read(&prefs[1]), read(&prefs[2])]
        );
        assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
        let started = c.now;

        // Both time out at rpc_timeout (of the 5 s deadline): each is asked again.
        assert_eq!(c.timeout(&a(), started + rpc), vec![]);
        let again1 = c.reply(&a(), &cmds[1], Err(SendError::Timeout));
        assert_eq!(without_ids(&again1), vec![read(&prefs[1])]);
        let again2 = c.reply(&a(), &cmds[2], Err(SendError::Lost("reset".into())));
        assert_eq!(without_ids(&again2), vec![read(&prefs[2])]);
        assert_eq!(rec.counter(REPLICA_READS_RESENT_TOTAL), 2);

        // The second ask of the first replica is answered: one left.
        let ok = Ok(PeerResponse::Object(Some(value.clone())));
        assert_eq!(c.reply(&a(), &again1[0], ok.clone()), vec![]);
        // The second ask of the other times out too: not sent a third time, and R = 3
        // cannot be met.
        assert_eq!(c.timeout(&a(), started + rpc * 2), vec![]);
        let failed = c.reply(&a(), &again2[0], Err(SendError::Timeout));
        assert_eq!(
            failed,
            vec![client_error(
                1,
                RequestError::Unavailable {
                    needed: 3,
                    alive: 2
                }
            )]
        );
        assert_eq!(rec.counter(REPLICA_READS_RESENT_TOTAL), 2);
    });
}

/// A replica read that fails too late for another `rpc_timeout` before the deadline is
/// not sent again: the read fails as before.
#[test]
fn a_replica_read_that_times_out_too_close_to_the_deadline_is_not_sent_again() {
    let mut c = Cluster::new(3, 16, quiet_config(), 7);
    let key = c.key_where(|p| p[0] == a());
    let cmds = c.client(&a(), 1, get_r(&key, 3));
    assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
    assert_eq!(
        c.reply(&a(), &cmds[1], Ok(PeerResponse::Object(None))),
        vec![]
    );
    let deadline = c.now + c.cfg.replication.request_timeout;
    let late = deadline - c.cfg.replication.rpc_timeout + Duration::from_millis(1);
    assert_eq!(c.timeout(&a(), late), vec![]);
    let answer = c.reply(&a(), &cmds[2], Err(SendError::Timeout));
    assert_eq!(
        answer,
        vec![client_error(
            1,
            RequestError::Unavailable {
                needed: 3,
                alive: 2
            }
        )]
    );
}

/// Whether `cmds` are exactly one local hint for `target`.
fn hinted_for(cmds: &[Command], target: &NodeId) -> bool {
    matches!(cmds, [Command::Storage { op: StorageOp::StoreHint { target: t, .. }, .. }] if t == target)
}

/// A copy that fails too late for another `rpc_timeout` before the deadline is not sent
/// again: the write fails as before, and its unplaced replica gets a local hint.
#[test]
fn a_replica_write_that_times_out_too_close_to_the_deadline_is_not_sent_again() {
    let mut c = Cluster::new(3, 16, quiet_config(), 7);
    let key = c.key_where(|p| p[0] == a());
    let cmds = c.client(&a(), 1, put_w(&key, "v", 3));
    let sends = c.run_storage(&a(), &cmds[0]);
    assert_eq!(c.reply(&a(), &sends[0], Ok(PeerResponse::Ack)), vec![]);
    let deadline = c.now + c.cfg.replication.request_timeout;
    let late = deadline - c.cfg.replication.rpc_timeout + Duration::from_millis(1);
    assert_eq!(c.timeout(&a(), late), vec![]);
    let answer = c.reply(&a(), &sends[1], Err(SendError::Timeout));
    assert_eq!(
        answer[..1],
        [client_error(
            1,
            RequestError::Incomplete { acks: 2, needed: 3 }
        )]
    );
    assert!(hinted_for(&answer[1..], &c.prefs(&key)[2]), "{answer:?}");
}

#[test]
fn a_get_whose_replicas_never_answer_times_out_at_its_deadline() {
    let mut c = five_reading_all();
    let key = c.key_where(|p| p[0] == a());
    let options = ReadOptions {
        timeout: Some(Duration::from_millis(300)),
        ..ReadOptions::default()
    };
    let cmds = c.client(&a(), 1, ClientRequest::Get { key, options });
    assert_eq!(c.run_storage(&a(), &cmds[0]), vec![]);
    let deadline = c.now + Duration::from_millis(300);
    assert_eq!(
        c.timeout(&a(), deadline),
        vec![client_error(
            1,
            RequestError::Timeout { acks: 1, needed: 2 }
        )]
    );
}

// ---------------------------------------------------------------------------------------
// Forwarding
// ---------------------------------------------------------------------------------------

#[test]
fn a_non_replica_forwards_to_the_first_primary_and_relays_its_answer() {
    let mut c = five();
    let key = c.key_where(|p| !p.contains(&a()));
    let prefs = c.prefs(&key);
    let hop = c.cfg.replication.request_timeout + c.cfg.replication.rpc_timeout;
    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(
        without_ids(&cmds),
        vec![send(&prefs[0], PeerRequest::Forward(get(&key)), hop)]
    );
    let reply = ClientResponse::Get(GetReply {
        found: false,
        values: vec![],
        context: CausalContext::new(),
        written_at: vec![],
    });
    let relayed = c.reply(&a(), &cmds[0], Ok(PeerResponse::Client(reply.clone())));
    assert_eq!(relayed, vec![client_answer(1, reply)]);
    assert_eq!(c.engine(&a()).inflight(), 0);
}

#[test]
fn a_forward_to_an_unreachable_primary_tries_the_next_one() {
    let mut c = five();
    let key = c.key_where(|p| !p.contains(&a()));
    let prefs = c.prefs(&key);
    let hop = c.cfg.replication.request_timeout + c.cfg.replication.rpc_timeout;
    let cmds = c.client(&a(), 1, put(&key, "v", None));
    let next = c.reply(&a(), &cmds[0], unreachable());
    assert_eq!(
        without_ids(&next),
        vec![send(
            &prefs[1],
            PeerRequest::Forward(put(&key, "v", None)),
            hop
        )]
    );
    let err = ClientResponse::Error(RequestError::Overloaded);
    assert_eq!(
        c.reply(&a(), &next[0], Ok(PeerResponse::Client(err.clone()))),
        vec![client_answer(1, err)]
    );
}

#[test]
fn a_forwarded_write_whose_connection_is_lost_times_out_instead_of_going_elsewhere() {
    let mut c = five();
    let key = c.key_where(|p| !p.contains(&a()));
    let cmds = c.client(&a(), 1, put(&key, "v", None));
    // The first primary may have coordinated the write before its connection failed:
    // sending it to the next one could apply it twice (two siblings of one put).
    let lost = c.reply(
        &a(),
        &cmds[0],
        Err(SendError::Lost("connection lost".into())),
    );
    assert_eq!(
        lost,
        vec![client_error(
            1,
            RequestError::Timeout { acks: 0, needed: 2 }
        )]
    );
    assert_eq!(c.engine(&a()).inflight(), 0);
}

#[test]
fn a_forward_that_never_hears_back_times_out_at_its_own_deadline() {
    let mut c = five();
    let key = c.key_where(|p| !p.contains(&a()));
    let cmds = c.client(&a(), 1, get(&key));
    assert_eq!(cmds.len(), 1);
    let deadline = c.now + c.cfg.replication.request_timeout + c.cfg.replication.rpc_timeout;
    assert_eq!(c.timeout(&a(), deadline - Duration::from_micros(1)), vec![]);
    assert_eq!(
        c.timeout(&a(), deadline),
        vec![client_error(
            1,
            RequestError::Timeout { acks: 0, needed: 2 }
        )]
    );
    assert_eq!(c.engine(&a()).inflight(), 0);
    // The send's own late result changes nothing.
    assert_eq!(c.reply(&a(), &cmds[0], Err(SendError::Timeout)), vec![]);
}

#[test]
fn request_timeouts_outside_the_configured_bounds_are_invalid_options() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let limits = c.cfg.limits;
    let too_long = [
        limits.max_request_timeout + Duration::from_micros(1),
        Duration::from_secs(u64::MAX / 2),
        Duration::MAX,
    ];
    let too_short = [
        Duration::ZERO,
        limits.min_request_timeout - Duration::from_nanos(1),
    ];
    for (i, timeout) in too_long.into_iter().chain(too_short).enumerate() {
        let get = ClientRequest::Get {
            key: key.clone(),
            options: ReadOptions {
                timeout: Some(timeout),
                ..ReadOptions::default()
            },
        };
        let put = ClientRequest::Put {
            key: key.clone(),
            value: b"v".to_vec(),
            context: None,
            options: WriteOptions {
                timeout: Some(timeout),
                ..WriteOptions::default()
            },
        };
        for (j, req) in [get, put].into_iter().enumerate() {
            let inbound = (i * 2 + j) as u64;
            let cmds = c.client(&a(), inbound, req);
            assert!(
                matches!(
                    cmds.as_slice(),
                    [Command::Respond {
                        response: Response::Client(ClientResponse::Error(
                            RequestError::InvalidOptions(m)
                        )),
                        ..
                    }] if m.contains("timeout")
                ),
                "{timeout:?}: {cmds:?}"
            );
        }
    }
    assert_eq!(c.engine(&a()).inflight(), 0);
    // The bounds themselves are accepted.
    for timeout in [limits.min_request_timeout, limits.max_request_timeout] {
        let cmds = c.client(
            &a(),
            100,
            ClientRequest::Get {
                key: key.clone(),
                options: ReadOptions {
                    timeout: Some(timeout),
                    ..ReadOptions::default()
                },
            },
        );
        assert!(
            matches!(cmds.first(), Some(Command::Storage { .. })),
            "{cmds:?}"
        );
    }
}

#[test]
fn a_forwarded_request_at_a_non_replica_is_refused_not_forwarded_again() {
    let mut c = five();
    let key = c.key_where(|p| !p.contains(&a()));
    let cmds = c.peer(&a(), 3, &id("b"), PeerRequest::Forward(get(&key)));
    assert!(
        matches!(
            cmds.as_slice(),
            [Command::Respond {
                response: Response::Client(ClientResponse::Error(RequestError::Internal(_))),
                ..
            }]
        ),
        "{cmds:?}"
    );
}

#[test]
fn a_put_and_a_get_through_non_replicas_reach_the_replicas() {
    let mut c = five();
    let key = c.key_where(|p| !p.contains(&a()) && !p.contains(&id("b")));
    let prefs = c.prefs(&key);
    let put_at = c.submit(&a(), put(&key, "hello", None));
    c.pump(None, 0.0, |c| c.answers.contains_key(&put_at));
    assert!(
        matches!(c.answers[&put_at], Response::Client(ClientResponse::Put(_))),
        "{:?}",
        c.answers[&put_at]
    );
    let get_at = c.submit(&id("b"), get(&key));
    c.pump(None, 0.0, |c| c.answers.contains_key(&get_at));
    match &c.answers[&get_at] {
        Response::Client(ClientResponse::Get(reply)) => {
            assert!(reply.found);
            assert_eq!(reply.values, vec![b"hello".to_vec()]);
        }
        other => panic!("unexpected answer {other:?}"),
    }
    for p in &prefs {
        let o = c.stored(p, &key).expect("every primary has the write");
        assert_eq!(o.values().collect::<Vec<_>>(), vec![b"hello".as_slice()]);
    }
}

// ---------------------------------------------------------------------------------------
// Who may ask what
// ---------------------------------------------------------------------------------------

#[test]
fn a_peer_message_from_a_client_certificate_is_not_allowed() {
    let mut c = five();
    let cmds = c.request(
        &a(),
        1,
        Sender::Client("mallory".into()),
        Request::Peer(PeerRequest::Ping),
    );
    assert!(
        matches!(
            cmds.as_slice(),
            [Command::Respond {
                response: Response::Error(RequestError::NotAllowed(_)),
                ..
            }]
        ),
        "{cmds:?}"
    );
}

#[test]
fn a_peer_message_from_an_unknown_node_is_refused() {
    let mut c = five();
    let cmds = c.peer(&a(), 1, &id("zz"), PeerRequest::Ping);
    assert_eq!(
        cmds,
        vec![respond(
            1,
            Response::Error(RequestError::UnknownNode("zz".into()))
        )]
    );
}

#[test]
fn a_ping_from_a_member_is_answered() {
    let mut c = five();
    assert_eq!(
        c.peer(&a(), 1, &id("b"), PeerRequest::Ping),
        vec![respond(1, Response::Peer(PeerResponse::Pong))]
    );
}

// ---------------------------------------------------------------------------------------
// Request validation and limits
// ---------------------------------------------------------------------------------------

#[test]
fn keys_must_be_non_empty_and_at_most_the_limit() {
    let mut c = five();
    let long = vec![b'k'; MAX_KEY_BYTES + 1];
    let too_large = RequestError::KeyTooLarge {
        len: MAX_KEY_BYTES + 1,
        max: MAX_KEY_BYTES,
    };
    assert_eq!(
        c.client(&a(), 1, get(&long)),
        vec![client_error(1, too_large.clone())]
    );
    assert_eq!(
        c.client(&a(), 2, put(&long, "v", None)),
        vec![client_error(2, too_large)]
    );
    assert_eq!(
        c.client(&a(), 3, get(b"")),
        vec![client_error(3, RequestError::EmptyKey)]
    );
    let delete = ClientRequest::Delete {
        key: vec![],
        context: None,
        options: WriteOptions::default(),
    };
    assert_eq!(
        c.client(&a(), 4, delete),
        vec![client_error(4, RequestError::EmptyKey)]
    );
}

#[test]
fn values_larger_than_the_limit_are_refused() {
    let mut c = five();
    let max = c.cfg.limits.max_value_bytes;
    let key = c.key_where(|p| p[0] == a());
    let value = "v".repeat(max + 1);
    assert_eq!(
        c.client(&a(), 1, put(&key, &value, None)),
        vec![client_error(
            1,
            RequestError::ValueTooLarge { len: max + 1, max }
        )]
    );
    // Exactly the limit is fine.
    let cmds = c.client(&a(), 2, put(&key, &"v".repeat(max), None));
    assert!(
        matches!(cmds.as_slice(), [Command::Storage { .. }]),
        "{cmds:?}"
    );
}

#[test]
fn quorums_outside_one_to_n_are_invalid_options() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let bad_reads = [
        ReadOptions {
            r: Some(4),
            ..ReadOptions::default()
        },
        ReadOptions {
            r: Some(0),
            ..ReadOptions::default()
        },
        ReadOptions {
            r: Some(2),
            pr: Some(3),
            ..ReadOptions::default()
        },
    ];
    for (i, options) in bad_reads.into_iter().enumerate() {
        let cmds = c.client(
            &a(),
            i as u64,
            ClientRequest::Get {
                key: key.clone(),
                options,
            },
        );
        assert!(
            matches!(
                cmds.as_slice(),
                [Command::Respond {
                    response: Response::Client(ClientResponse::Error(
                        RequestError::InvalidOptions(_)
                    )),
                    ..
                }]
            ),
            "{cmds:?}"
        );
    }
    for w in [0, 4] {
        let cmds = c.client(&a(), 10, put_w(&key, "v", w));
        assert!(
            matches!(
                cmds.as_slice(),
                [Command::Respond {
                    response: Response::Client(ClientResponse::Error(
                        RequestError::InvalidOptions(_)
                    )),
                    ..
                }]
            ),
            "w={w}: {cmds:?}"
        );
    }
}

#[test]
fn requests_beyond_the_inflight_bound_are_refused_as_overloaded() {
    let mut cfg = quiet_config();
    cfg.limits.max_inflight_requests = 1;
    let mut c = Cluster::new(5, 16, cfg, 7);
    let key = c.key_where(|p| p[0] == a());
    let first = c.client(&a(), 1, put(&key, "v", None));
    assert!(matches!(first.as_slice(), [Command::Storage { .. }]));
    assert_eq!(
        c.client(&a(), 2, get(&key)),
        vec![client_error(2, RequestError::Overloaded)]
    );
}

#[test]
fn status_requests_share_the_inflight_bound_with_data_requests() {
    let mut cfg = quiet_config();
    cfg.limits.max_inflight_requests = 2;
    let mut c = Cluster::new(5, 16, cfg, 7);
    let key = c.key_where(|p| p[0] == a());
    let status = c.client(&a(), 1, ClientRequest::Status);
    assert!(
        matches!(status.as_slice(), [Command::Storage { .. }]),
        "{status:?}"
    );
    let aae = c.client(&a(), 2, ClientRequest::AaeStatus);
    assert!(
        matches!(aae.as_slice(), [Command::Storage { .. }]),
        "{aae:?}"
    );
    assert_eq!(c.engine(&a()).inflight(), 2);
    // Both slots are held by the two status requests: data and status are refused.
    assert_eq!(
        c.client(&a(), 3, get(&key)),
        vec![client_error(3, RequestError::Overloaded)]
    );
    assert_eq!(
        c.client(&a(), 4, ClientRequest::Status),
        vec![client_error(4, RequestError::Overloaded)]
    );
    // Answering a status frees its slot.
    let answered = c.run_storage(&a(), &status[0]);
    assert!(
        matches!(
            answered.as_slice(),
            [Command::Respond {
                response: Response::Client(ClientResponse::Status(_)),
                ..
            }]
        ),
        "{answered:?}"
    );
    assert_eq!(c.engine(&a()).inflight(), 1);
    let next = c.client(&a(), 5, get(&key));
    assert!(
        matches!(next.first(), Some(Command::Storage { .. })),
        "{next:?}"
    );
}

#[test]
fn cluster_info_and_status_describe_the_cluster() {
    let mut c = five();
    let cmds = c.client(&a(), 1, ClientRequest::ClusterInfo);
    match cmds.as_slice() {
        [Command::Respond {
            response: Response::Client(ClientResponse::ClusterInfo(info)),
            ..
        }] => {
            assert_eq!(info.ring, c.ring);
            assert_eq!(info.members.len(), 5);
            assert_eq!((info.n, info.r, info.w), (3, 2, 2));
            assert_eq!(info.layout_version, 1);
        }
        other => panic!("{other:?}"),
    }
    let cmds = c.client(&a(), 2, ClientRequest::Status);
    let summary = expect_storage(&cmds, StorageOp::HintSummary);
    match c.run_storage(&a(), &summary).as_slice() {
        [Command::Respond {
            response: Response::Client(ClientResponse::Status(report)),
            ..
        }] => {
            assert_eq!(report.node, a());
            assert_eq!(report.members.len(), 5);
            assert!(report.members.iter().all(|m| m.pending_hints == 0));
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Untrusted contexts
// ---------------------------------------------------------------------------------------

#[test]
fn a_forged_context_cannot_block_a_coordinator_for_a_key() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a() && p[1] == id("b"));
    // A (buggy or hostile) client sends a context claiming node a's counter is at its end.
    let mut forged = CausalContext::new();
    forged.raise(c.actor(&a()), u64::MAX);
    let first = c.submit(&id("b"), put(&key, "x", Some(forged)));
    c.pump(None, 0.0, |c| c.answers.contains_key(&first));
    let later = c.submit(&a(), put(&key, "y", None));
    c.pump(None, 0.0, |c| c.answers.contains_key(&later));
    let refused = matches!(
        c.answers[&first],
        Response::Client(ClientResponse::Error(RequestError::InvalidContext(_)))
    );
    let written = matches!(c.answers[&later], Response::Client(ClientResponse::Put(_)));
    assert!(
        refused || written,
        "the forged context was accepted ({:?}) and now a cannot write the key: {:?}",
        c.answers[&first],
        c.answers[&later]
    );
}

// ---------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------

/// Puts then gets on random keys at random nodes, messages delivered in a random order
/// with 10% lost, all decided by `seed`. Returns every command emitted and every answer.
fn scenario(seed: u64) -> (Vec<(Time, NodeId, Command)>, Vec<Response>) {
    let mut c = Cluster::new(5, 16, quiet_config(), seed);
    let mut r = rng(seed);
    let nodes: Vec<NodeId> = c.nodes.keys().cloned().collect();
    let mut submitted = Vec::new();
    for i in 0..8 {
        let at = nodes[i % nodes.len()].clone();
        submitted.push(c.submit(
            &at,
            put(format!("k{}", i % 3).as_bytes(), &format!("v{i}"), None),
        ));
    }
    let all = submitted.clone();
    c.pump(Some(&mut r), 0.1, move |c| {
        all.iter().all(|k| c.answers.contains_key(k))
    });
    for i in 0..3 {
        let at = nodes[(i + 2) % nodes.len()].clone();
        submitted.push(c.submit(&at, get(format!("k{i}").as_bytes())));
    }
    let all = submitted.clone();
    c.pump(Some(&mut r), 0.1, move |c| {
        all.iter().all(|k| c.answers.contains_key(k))
    });
    let answers = submitted.iter().map(|k| c.answers[k].clone()).collect();
    (c.log, answers)
}

#[test]
fn the_same_seed_gives_the_same_commands() {
    for seed in [1, 2, 3] {
        let (log1, answers1) = scenario(seed);
        let (log2, answers2) = scenario(seed);
        assert!(
            log1.len() > 50,
            "the scenario did something: {} commands",
            log1.len()
        );
        assert_eq!(answers1.len(), 11);
        assert_eq!(log1, log2, "seed {seed}");
        assert_eq!(answers1, answers2, "seed {seed}");
    }
    assert_ne!(scenario(1).0, scenario(2).0, "the seed decides the run");
}
