//! Sloppy quorum and hinted handoff: writes and reads routed around down primaries, and
//! hints delivered to their primary once it is back.

use std::time::Duration;

use shoal_proto::wire::{ClientResponse, PeerRequest, PeerResponse, Response, WriteReply};
use shoal_proto::{CausalContext, Command, Dot, Object, RequestError, SendError, StorageOp};

mod expiry;

use super::engine_harness::*;
use super::{a, client_answer, client_error, expect_storage, five, unreachable, written};

#[test]
fn a_put_with_a_primary_down_goes_to_the_first_fallback_with_a_hint() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let (part, prefs, fallbacks) = (c.partition(&key), c.prefs(&key), c.fallbacks(&key));
    let rest = c.tick(&a(), &[prefs[1].clone()]);
    assert_eq!(without_ids(&rest), vec![storage(StorageOp::HintSummary)]);
    assert_eq!(c.run_storage(&a(), &rest[0]), vec![]);
    assert!(!c.engine(&a()).membership().is_up(&prefs[1]));

    let cmds = c.client(&a(), 1, put(&key, "v", None));
    let sends = c.run_storage(&a(), &cmds[0]);
    let object = c.stored(&a(), &key).unwrap();
    let rpc = c.cfg.replication.rpc_timeout;
    assert_eq!(
        without_ids(&sends),
        vec![
            send(
                &fallbacks[0],
                replicate(part, &key, &object, Some(&prefs[1])),
                rpc
            ),
            send(&prefs[2], replicate(part, &key, &object, None), rpc),
        ]
    );
    // The fallback's ack counts towards W (sloppy quorum).
    let answer = c.reply(&a(), &sends[0], Ok(PeerResponse::Ack));
    assert!(matches!(
        answer.as_slice(),
        [Command::Respond {
            response: Response::Client(ClientResponse::Put(_)),
            ..
        }]
    ));
}

#[test]
fn a_replicate_that_fails_is_resent_to_the_first_fallback_with_a_hint() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let (part, prefs, fallbacks) = (c.partition(&key), c.prefs(&key), c.fallbacks(&key));
    let cmds = c.client(&a(), 1, put_w(&key, "v", 3));
    let sends = c.run_storage(&a(), &cmds[0]);
    let object = c.stored(&a(), &key).unwrap();

    let resend = c.reply(&a(), &sends[0], unreachable());
    assert_eq!(
        without_ids(&resend),
        vec![send(
            &fallbacks[0],
            replicate(part, &key, &object, Some(&prefs[1])),
            c.cfg.replication.rpc_timeout
        )]
    );
    assert!(
        c.engine(&a()).membership().is_up(&prefs[1]),
        "one failed send routes this request around the peer, not every request"
    );
    assert_eq!(c.reply(&a(), &sends[1], Ok(PeerResponse::Ack)), vec![]);
    let answer = c.reply(&a(), &resend[0], Ok(PeerResponse::Ack));
    assert!(matches!(
        answer.as_slice(),
        [Command::Respond {
            response: Response::Client(ClientResponse::Put(_)),
            ..
        }]
    ));
}

fn without_handoff() -> Cluster {
    let mut cfg = quiet_config();
    cfg.handoff.enabled = false;
    Cluster::new(5, 16, cfg, 7)
}

#[test]
fn without_hinted_handoff_a_put_skips_the_down_primary() {
    let mut c = without_handoff();
    let key = c.key_where(|p| p[0] == a());
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    c.tick(&a(), &[prefs[1].clone()]);

    let cmds = c.client(&a(), 1, put(&key, "v", None));
    let sends = c.run_storage(&a(), &cmds[0]);
    let object = c.stored(&a(), &key).unwrap();
    assert_eq!(
        without_ids(&sends),
        vec![send(
            &prefs[2],
            replicate(part, &key, &object, None),
            c.cfg.replication.rpc_timeout
        )]
    );
    let answer = c.reply(&a(), &sends[0], Ok(PeerResponse::Ack));
    assert_eq!(answer.len(), 1);
}

#[test]
fn without_hinted_handoff_w3_with_a_primary_down_is_unavailable_before_writing() {
    let mut c = without_handoff();
    let key = c.key_where(|p| p[0] == a());
    let prefs = c.prefs(&key);
    c.tick(&a(), &[prefs[1].clone()]);
    let cmds = c.client(&a(), 1, put_w(&key, "v", 3));
    assert_eq!(
        cmds,
        vec![client_error(
            1,
            RequestError::Unavailable {
                needed: 3,
                alive: 2
            }
        )]
    );
    assert_eq!(c.stored(&a(), &key), None, "nothing was written");
}

/// A write whose quorum becomes impossible after the coordinator stored its own copy
/// must not answer `Unavailable` ("nothing was written"): the copy stays and spreads, so
/// the answer is `Incomplete` (outcome unknown), which no client retries as unwritten.
#[test]
fn a_quorum_lost_after_the_local_write_answers_incomplete_not_unavailable() {
    let mut c = without_handoff();
    let key = c.key_where(|p| p[0] == a());
    let prefs = c.prefs(&key);
    let cmds = c.client(&a(), 1, put_w(&key, "v", 3));
    let sends = c.run_storage(&a(), &cmds[0]);
    assert!(
        c.stored(&a(), &key).is_some(),
        "the coordinator wrote first"
    );
    assert_eq!(sends.len(), 2, "{sends:?}");
    let to = |cmd: &Command| match cmd {
        Command::Send { to, .. } => to.clone(),
        other => panic!("not a send: {other:?}"),
    };
    let (ok, lost) = if to(&sends[0]) == prefs[1] {
        (&sends[0], &sends[1])
    } else {
        (&sends[1], &sends[0])
    };
    assert_eq!(c.reply(&a(), ok, Ok(PeerResponse::Ack)), vec![]);
    let answer = c.reply(&a(), lost, unreachable());
    assert_eq!(
        answer,
        vec![client_error(
            1,
            RequestError::Incomplete { acks: 2, needed: 3 }
        )]
    );
}

#[test]
fn with_no_fallback_left_the_coordinator_keeps_the_hint_itself() {
    let mut c = Cluster::new(3, 8, quiet_config(), 7);
    let key = c.key_where(|p| p[0] == a());
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    assert!(c.fallbacks(&key).is_empty());
    c.tick(&a(), &[prefs[1].clone()]);

    let cmds = c.client(&a(), 1, put(&key, "v", None));
    let sends = c.run_storage(&a(), &cmds[0]);
    let object = c.stored(&a(), &key).unwrap();
    assert_eq!(
        without_ids(&sends),
        vec![send(
            &prefs[2],
            replicate(part, &key, &object, None),
            c.cfg.replication.rpc_timeout
        )]
    );
    let done = c.reply(&a(), &sends[0], Ok(PeerResponse::Ack));
    let mut context = CausalContext::new();
    context.insert(Dot::new(c.actor(&a()), 1));
    assert_eq!(
        without_ids(&done),
        vec![
            client_answer(1, ClientResponse::Put(WriteReply { context })),
            storage(StorageOp::StoreHint {
                target: prefs[1].clone(),
                partition: part,
                key: key.clone(),
                object,
                now: c.now,
                max_hints: c.cfg.handoff.max_hints_per_target,
                max_bytes: c.cfg.handoff.max_hint_bytes_per_target,
                ttl: c.cfg.handoff.ttl,
            }),
        ]
    );
    assert_eq!(c.run_storage(&a(), &done[1]), vec![]);
    assert_eq!(c.hint_count(&a()), 1);
}

#[test]
fn a_get_with_a_primary_down_asks_a_fallback_for_its_hint() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let (part, prefs, fallbacks) = (c.partition(&key), c.prefs(&key), c.fallbacks(&key));
    c.tick(&a(), &[prefs[2].clone()]);
    let cmds = c.client(&a(), 1, get(&key));
    let rpc = c.cfg.replication.rpc_timeout;
    // R = 2: the local store and the primary that is up; the fallback standing in for
    // the down one is asked when the read needs it (here: that primary fails).
    assert_eq!(
        without_ids(&cmds),
        vec![
            storage(StorageOp::Read {
                partition: part,
                key: key.clone()
            }),
            send(
                &prefs[1],
                PeerRequest::Read {
                    partition: part,
                    key: key.clone(),
                    hint_for: None
                },
                rpc
            ),
        ]
    );
    assert_eq!(
        without_ids(&c.reply(&a(), &cmds[1], unreachable())),
        vec![send(
            &fallbacks[0],
            PeerRequest::Read {
                partition: part,
                key: key.clone(),
                hint_for: Some(prefs[2].clone())
            },
            rpc
        )]
    );
}

#[test]
fn hints_older_than_the_ttl_are_dropped_instead_of_delivered() {
    let mut cfg = quiet_config();
    cfg.handoff.ttl = Duration::from_secs(1800);
    let mut c = Cluster::new(5, 16, cfg, 7);
    let key = c.key_where(|p| !p.contains(&a()));
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let object = expiry::written_at("v", Dot::new(c.actor(&prefs[0]), 1), c.now);
    let cmds = c.peer(
        &a(),
        1,
        &prefs[0],
        replicate(part, &key, &object, Some(&prefs[1])),
    );
    c.run_storage(&a(), &cmds[0]);

    // An hour later the hint is past its 30-minute TTL.
    let rest = c.tick(&a(), &[]);
    let list = c.run_storage(&a(), &rest[0]);
    let drop = c.run_storage(&a(), &list[0]);
    assert!(
        matches!(
            without_ids(&drop).as_slice(),
            [Command::Storage { op: StorageOp::DropHint { target, partition, key: k, .. }, .. }]
                if *target == prefs[1] && *partition == part && *k == key
        ),
        "{drop:?}"
    );
    assert_eq!(c.run_storage(&a(), &drop[0]), vec![]);
    assert_eq!(c.hint_count(&a()), 0);
    assert_eq!(c.engine(&a()).handoff_stats().expired, 1);
    assert_eq!(c.engine(&a()).handoff_stats().delivered, 0);
}

#[test]
fn hints_are_handed_to_their_primary_once_it_is_back_and_then_deleted() {
    let mut c = five();
    let key = c.key_where(|p| !p.contains(&a()));
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let (coordinator, target) = (prefs[0].clone(), prefs[1].clone());
    let cfg = c.cfg.clone();
    let object = written(
        &Object::new(),
        &CausalContext::new(),
        "v",
        Dot::new(c.actor(&coordinator), 1),
    );

    // A sloppy write leaves a hint for `target` here.
    let cmds = c.peer(
        &a(),
        1,
        &coordinator,
        replicate(part, &key, &object, Some(&target)),
    );
    let store = expect_storage(
        &cmds,
        StorageOp::StoreHint {
            target: target.clone(),
            partition: part,
            key: key.clone(),
            object: object.clone(),
            now: c.now,
            max_hints: cfg.handoff.max_hints_per_target,
            max_bytes: cfg.handoff.max_hint_bytes_per_target,
            ttl: cfg.handoff.ttl,
        },
    );
    assert_eq!(
        c.run_storage(&a(), &store),
        vec![respond(1, Response::Peer(PeerResponse::Ack))]
    );

    // While the target is down, the handoff round only looks for expired hints (there
    // are none) and sends nothing.
    let rest = c.tick(&a(), std::slice::from_ref(&target));
    let summary = expect_storage(&rest, StorageOp::HintSummary);
    let list = c.run_storage(&a(), &summary);
    let list = expect_storage(
        &list,
        StorageOp::ListHints {
            target: target.clone(),
            limit: cfg.handoff.batch,
            after: None,
        },
    );
    assert_eq!(c.run_storage(&a(), &list), vec![]);
    assert_eq!(c.engine(&a()).hint_totals()[&target].count, 1);

    // A successful probe brings it back; the next round lists its hints ...
    let rest = c.tick(&a(), &[]);
    assert!(c.engine(&a()).membership().is_up(&target));
    let summary = expect_storage(&rest, StorageOp::HintSummary);
    let list = c.run_storage(&a(), &summary);
    let list = expect_storage(
        &list,
        StorageOp::ListHints {
            target: target.clone(),
            limit: cfg.handoff.batch,
            after: None,
        },
    );
    // ... delivers each as a plain replicate ...
    let deliver = c.run_storage(&a(), &list);
    assert_eq!(
        without_ids(&deliver),
        vec![send(
            &target,
            replicate(part, &key, &object, None),
            cfg.replication.rpc_timeout
        )]
    );
    // ... and deletes it once acknowledged.
    let delete = c.reply(&a(), &deliver[0], Ok(PeerResponse::Ack));
    let delete = expect_storage(
        &delete,
        StorageOp::DeleteHint {
            target: target.clone(),
            partition: part,
            key: key.clone(),
            delivered: object,
        },
    );
    assert_eq!(c.run_storage(&a(), &delete), vec![]);
    assert_eq!(c.hint_count(&a()), 0);
    assert_eq!(c.engine(&a()).handoff_stats().delivered, 1);
}

#[test]
fn a_failed_hint_delivery_keeps_the_hint() {
    let mut c = five();
    let key = c.key_where(|p| !p.contains(&a()));
    let (part, prefs) = (c.partition(&key), c.prefs(&key));
    let object = written(
        &Object::new(),
        &CausalContext::new(),
        "v",
        Dot::new(c.actor(&prefs[0]), 1),
    );
    let cmds = c.peer(
        &a(),
        1,
        &prefs[0],
        replicate(part, &key, &object, Some(&prefs[1])),
    );
    c.run_storage(&a(), &cmds[0]);

    let rest = c.tick(&a(), &[]);
    let list = c.run_storage(&a(), &rest[0]);
    let deliver = c.run_storage(&a(), &list[0]);
    assert_eq!(c.reply(&a(), &deliver[0], Err(SendError::Timeout)), vec![]);
    assert_eq!(c.hint_count(&a()), 1);
    assert_eq!(c.engine(&a()).handoff_stats().failed, 1);
}
