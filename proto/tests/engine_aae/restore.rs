//! A node restored from a backup (restore mode, `engine/restore.rs`) ends with exactly its
//! peer's copies, partition by partition, and serves nothing until then: a value deleted
//! and reaped since the backup does not come back, a value overwritten since the backup
//! is replaced (not merged), a key written since is copied in.

use shoal_proto::wire::{ClientRequest, ClientResponse, PeerResponse, Response, WriteOptions};
use shoal_proto::{CausalContext, Command, Object, RequestError, StorageOp, StorageReply};
use shoal_ring::NodeId;

use crate::engine_harness::*;

/// Submit a write at `at`, deliver everything, and return its context.
fn write(c: &mut Cluster, at: &NodeId, req: ClientRequest) -> CausalContext {
    let (n, inbound) = c.submit(at, req);
    let asked = (n.clone(), inbound);
    c.pump(None, 0.0, |c| c.answers.contains_key(&asked));
    match &c.answers[&(n, inbound)] {
        Response::Client(ClientResponse::Put(r) | ClientResponse::Delete(r)) => r.context.clone(),
        other => panic!("the write failed: {other:?}"),
    }
}

/// Run `op` on `n`'s store directly.
fn execute(c: &mut Cluster, n: &NodeId, op: StorageOp) -> StorageReply {
    c.node(n).executor.execute(op).expect("the in-memory store")
}

fn values(object: Option<Object>) -> Vec<Vec<u8>> {
    object.map_or_else(Vec::new, |o| o.values().map(<[u8]>::to_vec).collect())
}

#[test]
fn a_restored_node_ends_with_exactly_its_peers_copies_and_serves_nothing_meanwhile() {
    let mut c = Cluster::new(3, 16, quiet_config(), 11);
    let (a, b, third) = (id("a"), id("b"), id("c"));
    let stale = b"stale".to_vec();
    let dead = b"dead".to_vec();
    let fresh = b"fresh".to_vec();
    let during = b"during".to_vec();
    let stale_ctx = write(&mut c, &b, put(&stale, "old", None));
    let dead_ctx = write(&mut c, &b, put(&dead, "doomed", None));
    // The backup: a's copies now.
    let backup: Vec<(Vec<u8>, Option<Object>)> = [&stale, &dead, &fresh]
        .into_iter()
        .map(|k| (k.clone(), c.stored(&a, k)))
        .collect();
    assert_eq!(values(backup[0].1.clone()), vec![b"old".to_vec()]);
    assert_eq!(values(backup[1].1.clone()), vec![b"doomed".to_vec()]);
    assert!(backup[2].1.is_none());

    // Since the backup: `stale` overwritten, `dead` deleted and its tombstone reaped on
    // every replica, `fresh` written.
    write(&mut c, &b, put(&stale, "new", Some(stale_ctx)));
    write(
        &mut c,
        &b,
        ClientRequest::Delete {
            key: dead.clone(),
            context: Some(dead_ctx),
            options: WriteOptions::default(),
        },
    );
    let partition = c.partition(&dead);
    for n in [&a, &b, &third] {
        let tombstone = c.stored(n, &dead).expect("the tombstone");
        assert!(tombstone.is_tombstoned());
        let reaped = execute(
            &mut c,
            n,
            StorageOp::Reap {
                partition,
                keys: vec![(dead.clone(), tombstone.digest())],
            },
        );
        assert_eq!(reaped, StorageReply::Reaped(1));
    }
    write(&mut c, &b, put(&fresh, "fresh", None));

    // a is restored from the backup, and starts in restore mode.
    for (key, object) in backup {
        let partition = c.partition(&key);
        execute(
            &mut c,
            &a,
            StorageOp::ReplaceMany {
                partition,
                objects: vec![(key, object)],
            },
        );
    }
    assert_eq!(values(c.stored(&a, &dead)), vec![b"doomed".to_vec()]);
    c.node(&a).engine.begin_restore();
    assert!(c.engine(&a).restoring());
    assert_eq!(c.engine(&a).restore_partitions_left(), 16);

    // Meanwhile it coordinates nothing: a client's read and write sent to it are handed
    // to another replica (a forward) and succeed there; and it refuses to be a replica
    // of a write.
    let forwarded_get = c.submit(&a, get(&stale));
    let routed = b"routed".to_vec();
    let forwarded_put = c.submit(&a, put(&routed, "through a", None));
    c.pump(None, 0.0, |c| {
        c.answers.contains_key(&forwarded_get) && c.answers.contains_key(&forwarded_put)
    });
    match &c.answers[&forwarded_get] {
        Response::Client(ClientResponse::Get(reply)) => {
            assert_eq!(reply.values, vec![b"new".to_vec()], "{reply:?}")
        }
        other => panic!("a read sent to the restoring node failed: {other:?}"),
    }
    assert!(
        matches!(
            c.answers[&forwarded_put],
            Response::Client(ClientResponse::Put(_))
        ),
        "a write sent to the restoring node failed: {:?}",
        c.answers[&forwarded_put]
    );
    let forwards = c
        .log
        .iter()
        .filter(|(_, n, cmd)| {
            *n == a
                && matches!(
                    cmd,
                    Command::Send {
                        request: shoal_proto::wire::PeerRequest::Forward(_),
                        ..
                    }
                )
        })
        .count();
    assert_eq!(forwards, 2, "the restoring node forwarded both requests");
    let during_put = c.submit(&b, put(&during, "meanwhile", None));
    c.pump(None, 0.0, |c| {
        !c.engine(&a).restoring() && c.answers.contains_key(&during_put)
    });
    assert!(
        matches!(
            c.answers[&during_put],
            Response::Client(ClientResponse::Put(_))
        ),
        "{:?}",
        c.answers[&during_put]
    );
    let refused_replica = c.log.iter().any(|(_, n, cmd)| {
        *n == a
            && matches!(
                cmd,
                Command::Respond {
                    response: Response::Peer(PeerResponse::Error(RequestError::ShuttingDown)),
                    ..
                }
            )
    });
    assert!(
        refused_replica,
        "a was asked to be a replica while restoring"
    );

    // Every key as its peers hold it: nothing deleted came back, nothing merged.
    assert_eq!(c.engine(&a).restore_partitions_left(), 0);
    for key in [&stale, &dead, &fresh] {
        assert_eq!(c.stored(&a, key), c.stored(&b, key), "{key:?}");
    }
    assert!(c.stored(&a, &dead).is_none());
    assert_eq!(values(c.stored(&a, &stale)), vec![b"new".to_vec()]);
    assert_eq!(values(c.stored(&a, &fresh)), vec![b"fresh".to_vec()]);

    // And then it serves.
    let served = c.submit(&a, get(&during));
    c.pump(None, 0.0, |c| c.answers.contains_key(&served));
    match &c.answers[&served] {
        Response::Client(ClientResponse::Get(r)) => {
            assert_eq!(r.values, vec![b"meanwhile".to_vec()]);
        }
        other => panic!("{other:?}"),
    }
}
