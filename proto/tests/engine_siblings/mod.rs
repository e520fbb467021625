//! Deletes without a context, the per-key sibling limit: what a coordinator does before
//! and instead of writing.

use shoal_proto::wire::{
    ClientRequest, ClientResponse, GetReply, PeerResponse, ReadOptions, Response, WriteOptions,
    WriteReply,
};
use shoal_proto::{
    Actor, CausalContext, Command, Dot, Object, RequestError, SiblingValue, StorageOp,
};
use shoal_ring::NodeId;

use super::engine_harness::*;
use super::{a, five};

fn delete(key: &[u8], context: Option<CausalContext>) -> ClientRequest {
    ClientRequest::Delete {
        key: key.to_vec(),
        context,
        options: WriteOptions::default(),
    }
}

/// Submit `req` at `at`, pump in order until it is answered, and return the answer.
fn call(c: &mut Cluster, at: &NodeId, req: ClientRequest) -> Response {
    let asked = c.submit(at, req);
    c.pump(None, 0.0, |c| c.answers.contains_key(&asked));
    c.answers[&asked].clone()
}

fn read(c: &mut Cluster, at: &NodeId, key: &[u8]) -> GetReply {
    match call(c, at, get(key)) {
        Response::Client(ClientResponse::Get(reply)) => reply,
        other => panic!("a get answers a reply: {other:?}"),
    }
}

#[test]
fn a_delete_without_a_context_removes_the_value_that_exists() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let first = call(&mut c, &a(), put(&key, "v1", None));
    assert!(
        matches!(first, Response::Client(ClientResponse::Put(_))),
        "{first:?}"
    );
    let deleted = call(&mut c, &a(), delete(&key, None));
    assert!(
        matches!(deleted, Response::Client(ClientResponse::Delete(_))),
        "{deleted:?}"
    );
    let after = read(&mut c, &id("b"), &key);
    assert!(!after.found, "the value survived the delete: {after:?}");
    for p in c.prefs(&key) {
        let stored = c.stored(&p, &key).expect("every primary has the tombstone");
        assert!(stored.is_tombstoned(), "{p}: {stored:?}");
    }
}

#[test]
fn the_write_that_would_make_a_sibling_past_the_limit_is_refused() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let limit = 100;
    for i in 0..limit {
        let answer = call(&mut c, &a(), put(&key, &format!("v{i}"), None));
        assert!(
            matches!(answer, Response::Client(ClientResponse::Put(_))),
            "put {i}: {answer:?}"
        );
    }
    let refused = call(&mut c, &a(), put(&key, "one too many", None));
    assert_eq!(
        refused,
        Response::Client(ClientResponse::Error(RequestError::TooManySiblings {
            siblings: limit + 1,
            limit
        }))
    );
    // Nothing of the refused write anywhere; every acknowledged one everywhere.
    let mut acknowledged: Vec<Vec<u8>> = (0..limit).map(|i| format!("v{i}").into_bytes()).collect();
    acknowledged.sort();
    for p in c.prefs(&key) {
        let stored = c.stored(&p, &key).expect("stored");
        let mut values: Vec<Vec<u8>> = stored.values().map(<[u8]>::to_vec).collect();
        values.sort();
        assert_eq!(values, acknowledged, "{p}");
    }
    // The way out: a write with a read's context replaces every sibling it read.
    let seen = read(&mut c, &a(), &key);
    assert_eq!(seen.values.len(), limit);
    let resolved = call(&mut c, &a(), put(&key, "resolved", Some(seen.context)));
    assert!(
        matches!(resolved, Response::Client(ClientResponse::Put(_))),
        "{resolved:?}"
    );
    assert_eq!(
        read(&mut c, &id("b"), &key).values,
        vec![b"resolved".to_vec()]
    );
}

#[test]
fn a_replica_merges_an_object_past_the_sibling_limit_instead_of_dropping_data() {
    // Concurrent writes coordinated by different primaries can together pass the limit
    // that each coordinator checked: the merge carries accepted writes, so a replica
    // stores all of it.
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let prefs = c.prefs(&key);
    let limit = c.cfg.limits.max_siblings;
    let object = concurrent(1000, limit as u64 + 1, 2);
    assert_eq!(object.siblings().len(), limit + 1);
    let cmds = c.peer(
        &prefs[1],
        1,
        &a(),
        replicate(c.partition(&key), &key, &object, None),
    );
    let answer = c.run_storage(&prefs[1], &cmds[0]);
    assert_eq!(
        answer,
        vec![respond(1, Response::Peer(PeerResponse::Ack))],
        "a replica acks the merge"
    );
    assert_eq!(c.stored(&prefs[1], &key), Some(object));
}

#[test]
fn a_delete_without_a_context_of_a_missing_key_writes_nothing() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let deleted = call(&mut c, &a(), delete(&key, None));
    assert_eq!(
        deleted,
        Response::Client(ClientResponse::Delete(WriteReply {
            context: CausalContext::new()
        }))
    );
    for p in c.prefs(&key) {
        assert_eq!(c.stored(&p, &key), None, "{p}");
    }
}

#[test]
fn a_delete_without_a_context_whose_read_fails_answers_the_error_and_writes_nothing() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let first = call(&mut c, &a(), put(&key, "v1", None));
    assert!(
        matches!(first, Response::Client(ClientResponse::Put(_))),
        "{first:?}"
    );
    let before = c.stored(&a(), &key);
    // Everyone else is down as `a` sees it: R = 2 cannot be met.
    let others: Vec<NodeId> = c.nodes.keys().filter(|n| **n != a()).cloned().collect();
    let rest = c.tick(&a(), &others);
    for cmd in &rest {
        c.run_storage(&a(), cmd);
    }
    let cmds = c.client(&a(), 1, delete(&key, None));
    assert_eq!(
        cmds,
        vec![respond(
            1,
            Response::Client(ClientResponse::Error(RequestError::Unavailable {
                needed: 2,
                alive: 1
            }))
        )]
    );
    assert_eq!(c.stored(&a(), &key), before, "nothing written");
}

#[test]
fn a_put_racing_the_read_of_a_delete_stays_as_a_sibling_of_the_tombstone() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let prefs = c.prefs(&key);
    let first = call(&mut c, &a(), put(&key, "v1", None));
    assert!(
        matches!(first, Response::Client(ClientResponse::Put(_))),
        "{first:?}"
    );
    // The delete's read: the local copy and one peer's make R = 2.
    let cmds = c.client(&a(), 1, delete(&key, None));
    let local = cmds
        .iter()
        .find(|cmd| matches!(cmd, Command::Storage { .. }))
        .expect("a local read")
        .clone();
    let peer_read = cmds
        .iter()
        .find(|cmd| matches!(cmd, Command::Send { to, .. } if *to == prefs[1]))
        .expect("a read of the second primary")
        .clone();
    assert!(c.run_storage(&a(), &local).is_empty());
    let copy = c.stored(&prefs[1], &key);
    let tombstone = c.reply(&a(), &peer_read, Ok(PeerResponse::Object(copy)));
    let [write @ Command::Storage {
        op: StorageOp::Coordinate { context, .. },
        ..
    }] = tombstone.as_slice()
    else {
        panic!("the read met its quorum and the tombstone is written: {tombstone:?}");
    };
    assert!(
        !context.is_empty(),
        "the tombstone carries the read's context"
    );
    let write = write.clone();
    // A put without a context lands between the read and the tombstone.
    let racing = c.client(&a(), 2, put(&key, "v2", None));
    c.run_storage(&a(), &racing[0]);
    c.run_storage(&a(), &write);
    let stored = c.stored(&a(), &key).expect("stored");
    assert_eq!(stored.values().collect::<Vec<_>>(), vec![b"v2".as_slice()]);
    assert_eq!(
        stored.siblings().len(),
        2,
        "v2 and the tombstone: {stored:?}"
    );
    assert!(stored.is_found());
}

/// An object of `n` concurrent siblings of `bytes` bytes each, by actors from `first`.
fn concurrent(first: u64, n: u64, bytes: usize) -> Object {
    let mut object = Object::new();
    for i in 0..n {
        let value = SiblingValue::Data(vec![b'x'; bytes]);
        object
            .update(
                &CausalContext::new(),
                value,
                Dot::new(Actor(first + i), 1),
                T0,
            )
            .expect("fresh dot");
    }
    object
}

#[test]
fn copies_that_merge_past_the_object_limit_are_refused_with_a_typed_error_and_r1_reads_one() {
    // Each replica's copy is within the limit; together they are not.
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let prefs = c.prefs(&key);
    let max = c.cfg.limits.max_object_bytes;
    let (left, right) = (concurrent(1000, 40, 1000), concurrent(2000, 40, 1000));
    assert!(left.encoded_len() <= max && right.encoded_len() <= max);
    assert!(Object::merged(&left, &right).encoded_len() > max);
    c.preload(&a(), &key, &left);
    c.preload(&prefs[1], &key, &right);
    c.preload(&prefs[2], &key, &right);
    match call(&mut c, &a(), get(&key)) {
        Response::Client(ClientResponse::Error(RequestError::ObjectTooLarge { len, max: m })) => {
            assert_eq!(m, max);
            assert_eq!(len, Object::merged(&left, &right).encoded_len());
        }
        Response::Client(ClientResponse::Get(reply)) => {
            panic!("expected ObjectTooLarge, got {} values", reply.values.len())
        }
        other => panic!("expected ObjectTooLarge: {other:?}"),
    }
    let one = ClientRequest::Get {
        key: key.clone(),
        options: ReadOptions {
            r: Some(1),
            ..ReadOptions::default()
        },
    };
    match call(&mut c, &a(), one) {
        Response::Client(ClientResponse::Get(reply)) => assert_eq!(reply.values.len(), 40),
        other => panic!("one replica's copy is readable: {other:?}"),
    }
}
