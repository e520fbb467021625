//! Hint expiry on every access, conditional removal, and delivery that no single hint can
//! block: an expired hint is never read, merged into, or delivered (also while its target
//! is down), a hint stored after a listing is never removed by it, and a hint its target
//! keeps refusing does not hold up the ones behind it.

use std::time::Duration;

use shoal_proto::wire::{PeerRequest, PeerResponse, Response};
use shoal_proto::{
    CausalContext, Command, Dot, Object, RequestError, SiblingValue, StorageOp, StorageReply, Time,
};
use shoal_ring::{NodeId, PartitionId};

use super::super::a;
use super::super::engine_harness::*;

const TTL: Duration = Duration::from_secs(1800);

/// Hints expire after [`TTL`] (half of one of the harness's hourly ticks).
fn cluster() -> Cluster {
    let mut cfg = quiet_config();
    cfg.handoff.ttl = TTL;
    Cluster::new(5, 16, cfg, 7)
}

/// A fresh write of `value` by `dot`, stamped `at`.
pub(super) fn written_at(value: &str, dot: Dot, at: Time) -> Object {
    let mut o = Object::new();
    o.update(
        &CausalContext::new(),
        SiblingValue::Data(value.as_bytes().to_vec()),
        dot,
        at,
    )
    .expect("fresh dot");
    o
}

/// `from` asks `a` to keep `object` as a hint for `target`; the hint store runs.
fn store_hint(
    c: &mut Cluster,
    inbound: u64,
    from: &NodeId,
    target: &NodeId,
    key: &[u8],
    o: &Object,
) {
    let part = c.partition(key);
    let cmds = c.peer(&a(), inbound, from, replicate(part, key, o, Some(target)));
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let answer = c.run_storage(&a(), &cmds[0]);
    assert_eq!(
        answer,
        vec![respond(inbound, Response::Peer(PeerResponse::Ack))]
    );
}

/// The first key not held by `a`: its first primary asks `a` to keep a hint of `value`
/// (written now) for its second primary. Returns the key, its primaries and the object.
fn first_hint(c: &mut Cluster, value: &str) -> (Vec<u8>, Vec<NodeId>, Object) {
    let key = c.key_where(|p| !p.contains(&a()));
    let prefs = c.prefs(&key);
    let o = written_at(value, Dot::new(c.actor(&prefs[0]), 1), c.now);
    store_hint(c, 1, &prefs[0], &prefs[1], &key, &o);
    (key, prefs, o)
}

/// The hints `a` keeps for `target`, read straight from its store.
fn hints_of(c: &mut Cluster, target: &NodeId) -> Vec<(PartitionId, Vec<u8>, Object)> {
    let op = StorageOp::ListHints {
        target: target.clone(),
        limit: 100,
        after: None,
    };
    match c.node(&a()).executor.execute(op) {
        Ok(StorageReply::Hints(h)) => h
            .into_iter()
            .map(|h| (h.partition, h.key, h.object))
            .collect(),
        other => panic!("a listing answers hints: {other:?}"),
    }
}

/// Run every storage command of `cmds` (and those they lead to) at `a`; the other
/// commands, in order.
fn run_storage_all(c: &mut Cluster, cmds: Vec<Command>) -> Vec<Command> {
    let mut todo = std::collections::VecDeque::from(cmds);
    let mut rest = Vec::new();
    let mut steps = 0;
    while let Some(cmd) = todo.pop_front() {
        steps += 1;
        assert!(steps < 10_000, "storage commands never end");
        if matches!(cmd, Command::Storage { .. }) {
            todo.extend(c.run_storage(&a(), &cmd));
        } else {
            rest.push(cmd);
        }
    }
    rest
}

#[test]
fn a_stand_in_does_not_answer_a_read_with_an_expired_hint() {
    let mut c = cluster();
    let (key, prefs, o) = first_hint(&mut c, "v");
    let part = c.partition(&key);

    // Within the TTL the stand-in answers with the hint ...
    let read = PeerRequest::Read {
        partition: part,
        key: key.clone(),
        hint_for: Some(prefs[1].clone()),
    };
    let cmds = c.peer(&a(), 2, &prefs[0], read.clone());
    assert_eq!(
        c.run_storage(&a(), &cmds[0]),
        vec![respond(2, Response::Peer(PeerResponse::Object(Some(o))))]
    );
    // ... past it, as if it had none (even though no handoff round dropped it yet).
    c.now = c.now + TTL;
    let cmds = c.peer(&a(), 3, &prefs[0], read);
    assert_eq!(
        c.run_storage(&a(), &cmds[0]),
        vec![respond(3, Response::Peer(PeerResponse::Object(None)))]
    );
}

#[test]
fn a_new_hint_replaces_an_expired_one_instead_of_merging_into_it() {
    let mut c = cluster();
    let (key, prefs, _) = first_hint(&mut c, "old");
    c.now = c.now + TTL;
    // A blind put of a new value, concurrent with the expired one.
    let new = written_at("new", Dot::new(c.actor(&prefs[2]), 1), c.now);
    store_hint(&mut c, 2, &prefs[2], &prefs[1], &key, &new);
    let hints = hints_of(&mut c, &prefs[1]);
    assert_eq!(hints.len(), 1);
    assert_eq!(
        hints[0].2, new,
        "the expired value is not carried on in the new hint"
    );
}

#[test]
fn a_hint_stored_after_the_listing_is_not_removed_by_it() {
    let mut c = cluster();
    let (key, prefs, _) = first_hint(&mut c, "old");

    // The round after the TTL lists the expired hint ...
    c.now = c.now + TTL;
    let rest = c.tick(&a(), &[]);
    let list = c.run_storage(&a(), &rest[0]);
    let drop = c.run_storage(&a(), &list[0]);
    assert!(
        matches!(
            drop.as_slice(),
            [Command::Storage {
                op: StorageOp::DropHint { .. },
                ..
            }]
        ),
        "{drop:?}"
    );
    // ... and before its removal runs, a fresh write for the same key is hinted.
    let new = written_at("new", Dot::new(c.actor(&prefs[2]), 1), c.now);
    store_hint(&mut c, 2, &prefs[2], &prefs[1], &key, &new);
    c.run_storage(&a(), &drop[0]);
    let hints = hints_of(&mut c, &prefs[1]);
    assert_eq!(hints.len(), 1, "the fresh hint survives the removal");
    assert_eq!(hints[0].2, new);
}

#[test]
fn hints_for_a_target_that_stays_down_expire_too() {
    let mut c = cluster();
    let (_, prefs, _) = first_hint(&mut c, "v");
    c.now = c.now + TTL;
    let target = prefs[1].clone();
    let rest = c.tick(&a(), std::slice::from_ref(&target));
    assert!(!c.engine(&a()).membership().is_up(&target));
    let sends = run_storage_all(&mut c, rest);
    assert!(
        sends
            .iter()
            .all(|s| !matches!(s, Command::Send { to, .. } if *to == target)),
        "nothing is sent to a down target: {sends:?}"
    );
    assert_eq!(c.hint_count(&a()), 0, "the expired hint is gone");
    assert_eq!(c.engine(&a()).handoff_stats().expired, 1);
}

#[test]
fn a_hint_its_target_keeps_refusing_does_not_block_the_ones_behind_it() {
    // Hints outlive many ticks here; one hint per page.
    let mut cfg = quiet_config();
    cfg.handoff.batch = 1;
    let mut c = Cluster::new(5, 16, cfg, 7);
    hints_for_one_target(&mut c, 2);
    // The first hint sent is always refused (too large for the target); the other is
    // accepted. Within a few rounds the other is delivered.
    let refused = std::cell::RefCell::new(None::<Vec<u8>>);
    for _round in 0..6 {
        round(&mut c, |key| {
            let mut bad = refused.borrow_mut();
            if bad.get_or_insert_with(|| key.to_vec()) == key {
                PeerResponse::Error(RequestError::ObjectTooLarge { len: 100, max: 10 })
            } else {
                PeerResponse::Ack
            }
        });
        if c.engine(&a()).handoff_stats().delivered == 1 {
            break;
        }
    }
    assert_eq!(
        c.engine(&a()).handoff_stats().delivered,
        1,
        "the hint behind the refused one was delivered"
    );
    assert_eq!(
        c.hint_count(&a()),
        1,
        "the refused hint is kept (until its TTL)"
    );
}

/// Hints of `n` keys whose second primary is `target`, none held by `a`, stored at `a`.
/// Returns the target and the keys.
fn hints_for_one_target(c: &mut Cluster, n: usize) -> (NodeId, Vec<Vec<u8>>) {
    let first = c.key_where(|p| !p.contains(&a()));
    let target = c.prefs(&first)[1].clone();
    let keys: Vec<Vec<u8>> = (0..100_000)
        .map(|i| format!("key-{i}").into_bytes())
        .filter(|k| !c.prefs(k).contains(&a()) && c.prefs(k)[1] == target)
        .take(n)
        .collect();
    assert_eq!(keys.len(), n);
    for (i, k) in keys.iter().enumerate() {
        let from = c.prefs(k)[0].clone();
        let o = written_at("v", Dot::new(c.actor(&from), 1), c.now);
        store_hint(c, i as u64 + 1, &from, &target, k, &o);
    }
    (target, keys)
}

/// One handoff round at `a`: every delivery is answered by `answer`, every storage
/// command run, until nothing is left. Returns the keys delivered (sent) in the round.
fn round(c: &mut Cluster, answer: impl Fn(&[u8]) -> PeerResponse) -> Vec<Vec<u8>> {
    let rest = c.tick(&a(), &[]);
    let mut todo = run_storage_all(c, rest);
    let mut sent = Vec::new();
    while let Some(s) = todo.pop() {
        let Command::Send {
            request: PeerRequest::Replicate { key, .. },
            ..
        } = &s
        else {
            continue;
        };
        sent.push(key.clone());
        let more = c.reply(&a(), &s, Ok(answer(key)));
        todo.extend(run_storage_all(c, more));
    }
    sent
}

#[test]
fn a_hint_refused_again_and_again_is_parked_and_not_sent_any_more() {
    let mut cfg = quiet_config();
    cfg.handoff.batch = 1;
    let mut c = Cluster::new(5, 16, cfg, 7);
    let (target, keys) = hints_for_one_target(&mut c, 1);
    let refuse = |_: &[u8]| PeerResponse::Error(RequestError::ObjectTooLarge { len: 100, max: 10 });
    let mut attempts = 0;
    for _ in 0..20 {
        attempts += round(&mut c, refuse).len();
        if c.engine(&a()).handoff_stats().parked == 1 {
            break;
        }
    }
    assert_eq!(c.engine(&a()).handoff_stats().parked, 1, "parked");
    assert!(
        (2..=10).contains(&attempts),
        "a bounded number of attempts: {attempts}"
    );
    for _ in 0..3 {
        assert!(
            round(&mut c, refuse).is_empty(),
            "a parked hint is not sent"
        );
    }
    assert_eq!(c.hint_count(&a()), 1, "it stays until its TTL ...");
    // ... or until a new write for the key changes it: that hint is tried again.
    let from = c.prefs(&keys[0])[2].clone();
    let o = written_at("newer", Dot::new(c.actor(&from), 1), c.now);
    store_hint(&mut c, 9, &from, &target, &keys[0], &o);
    assert_eq!(round(&mut c, |_| PeerResponse::Ack), keys);
    assert_eq!(c.hint_count(&a()), 0);
}

/// A target that refuses deliveries for a reason of its own (its disk is full, it is
/// overloaded, shutting down, its storage failed) says nothing about the hint: however
/// often it does, the hint is not parked, and is delivered once the target takes it.
#[test]
fn a_target_refusing_for_its_own_reasons_never_parks_a_hint() {
    let mut cfg = quiet_config();
    cfg.handoff.batch = 1;
    let mut c = Cluster::new(5, 16, cfg, 7);
    let (_, keys) = hints_for_one_target(&mut c, 1);
    let transient = [
        RequestError::DiskFull,
        RequestError::Overloaded,
        RequestError::ShuttingDown,
        RequestError::Storage("io error".into()),
        RequestError::Timeout { acks: 0, needed: 1 },
    ];
    for err in &transient {
        // More refusals than park a hint refused for itself (at most 5 of 20 rounds'
        // attempts happen there: after a failure the next page waits for the interval).
        let attempts: usize = (0..40)
            .map(|_| round(&mut c, |_| PeerResponse::Error(err.clone())).len())
            .sum();
        assert!(
            attempts > 5,
            "only {attempts} deliveries refused with {err:?}"
        );
        assert_eq!(
            c.engine(&a()).handoff_stats().parked,
            0,
            "parked after {attempts} deliveries refused with {err:?}"
        );
    }
    assert_eq!(c.engine(&a()).handoff_stats().parked, 0, "nothing parked");
    assert_eq!(round(&mut c, |_| PeerResponse::Ack), keys);
    assert_eq!(c.hint_count(&a()), 0);
}

#[test]
fn pages_delivered_without_a_failure_are_followed_at_once_by_the_next() {
    let mut cfg = quiet_config();
    cfg.handoff.batch = 2;
    let mut c = Cluster::new(5, 16, cfg, 7);
    hints_for_one_target(&mut c, 7);
    let sent = round(&mut c, |_| PeerResponse::Ack);
    assert_eq!(sent.len(), 7, "four pages of at most two, in one round");
    assert_eq!(c.hint_count(&a()), 0);
    assert_eq!(c.engine(&a()).handoff_stats().delivered, 7);
}
